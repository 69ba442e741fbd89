#include "affinity_kernels.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <pthread.h>
#include <time.h>


#if defined(__x86_64__) || defined(__i386__)
#define AFFINITY_X86 1
#include <immintrin.h>
#endif

// ------------------------------------------------------------------------------ dispatch
static int detected_level = -1;
// Per thread, so that a test forcing one path does not change the kernels other threads run;
// Parallelism hands the caller's setting to its workers for the duration of each chunk.
static _Thread_local int forced_level = -1;

static int detect(void) {
#if AFFINITY_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
    return 0;
}

int affinity_simd_level(void) {
    if (detected_level < 0) detected_level = detect();
    if (forced_level >= 0 && forced_level < detected_level) return forced_level;
    return detected_level;
}

void affinity_force_level(int level) { forced_level = level; }

// The calling thread's cap on the threads a parallel kernel may use (0 = none): set while two
// parts of a step run side by side, so that the kernels inside each keep to their share.
static _Thread_local int thread_cap = 0;
void affinity_set_thread_cap(int cap) { thread_cap = cap; }
int affinity_thread_cap(void) { return thread_cap; }

int affinity_forced_level(void) { return forced_level; }

// ------------------------------------------------------------------------------ vectors
static float dot_c(const float *a, const float *b, long n) {
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    long i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i]; s1 += a[i + 1] * b[i + 1]; s2 += a[i + 2] * b[i + 2]; s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; i++) s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

static float l2_c(const float *a, const float *b, long n) {
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    long i = 0;
    for (; i + 4 <= n; i += 4) {
        float d0 = a[i] - b[i], d1 = a[i + 1] - b[i + 1], d2 = a[i + 2] - b[i + 2], d3 = a[i + 3] - b[i + 3];
        s0 += d0 * d0; s1 += d1 * d1; s2 += d2 * d2; s3 += d3 * d3;
    }
    for (; i < n; i++) { float d = a[i] - b[i]; s0 += d * d; }
    return (s0 + s1) + (s2 + s3);
}

#if AFFINITY_X86
__attribute__((target("avx2,fma"))) static inline float hsum256(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

__attribute__((target("avx2,fma"))) static float dot_avx2(const float *a, const float *b, long n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    long i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

__attribute__((target("avx2,fma"))) static float l2_avx2(const float *a, const float *b, long n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    long i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
        __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8));
        s0 = _mm256_fmadd_ps(d0, d0, s0);
        s1 = _mm256_fmadd_ps(d1, d1, s1);
    }
    for (; i + 8 <= n; i += 8) {
        __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
        s0 = _mm256_fmadd_ps(d0, d0, s0);
    }
    float s = hsum256(_mm256_add_ps(s0, s1));
    for (; i < n; i++) { float d = a[i] - b[i]; s += d * d; }
    return s;
}

__attribute__((target("avx512f"))) static float dot_avx512(const float *a, const float *b, long n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    long i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
    }
    for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

__attribute__((target("avx512f"))) static float l2_avx512(const float *a, const float *b, long n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    long i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
        __m512 d1 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16));
        s0 = _mm512_fmadd_ps(d0, d0, s0);
        s1 = _mm512_fmadd_ps(d1, d1, s1);
    }
    for (; i + 16 <= n; i += 16) {
        __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
        s0 = _mm512_fmadd_ps(d0, d0, s0);
    }
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        __m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i));
        s1 = _mm512_fmadd_ps(d, d, s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}
#endif

float affinity_dot(const float *a, const float *b, long n) {
#if AFFINITY_X86
    switch (affinity_simd_level()) {
    case 2: return dot_avx512(a, b, n);
    case 1: return dot_avx2(a, b, n);
    }
#endif
    return dot_c(a, b, n);
}

float affinity_l2sq(const float *a, const float *b, long n) {
#if AFFINITY_X86
    switch (affinity_simd_level()) {
    case 2: return l2_avx512(a, b, n);
    case 1: return l2_avx2(a, b, n);
    }
#endif
    return l2_c(a, b, n);
}

void affinity_dot_rows(const float *q, const float *X, long rows, long dim, float *out) {
    int level = affinity_simd_level();
    for (long r = 0; r < rows; r++) {
        const float *x = X + r * dim;
#if AFFINITY_X86
        out[r] = level == 2 ? dot_avx512(q, x, dim) : level == 1 ? dot_avx2(q, x, dim) : dot_c(q, x, dim);
#else
        (void)level;
        out[r] = dot_c(q, x, dim);
#endif
    }
}

void affinity_l2sq_rows(const float *q, const float *X, long rows, long dim, float *out) {
    int level = affinity_simd_level();
    for (long r = 0; r < rows; r++) {
        const float *x = X + r * dim;
#if AFFINITY_X86
        out[r] = level == 2 ? l2_avx512(q, x, dim) : level == 1 ? l2_avx2(q, x, dim) : l2_c(q, x, dim);
#else
        (void)level;
        out[r] = l2_c(q, x, dim);
#endif
    }
}

// ------------------------------------------------------------------------------ GEMM
// Blocking after BLIS's Skylake-X parameters, transposed to row-major C (our micro-kernel loads
// vectors along N from B and broadcasts A): ic (MB rows of A, packed once per KC step, L3) ->
// pc (KC of K) -> jc (NB columns of B, packed: the L2-resident block) -> ir (MR rows: the A
// micro-panel, MR x KC, stays in L1) -> jr (NR columns: B micro-panels stream from L2) ->
// micro-kernel on an MR x NR register tile. The earlier order (B's 3072-column block in L3, a
// 96-row A block, the 32-column B micro-panel in L1) filled L1 with the streamed operand and
// reached 93 % of OpenBLAS's SkylakeX kernels on one core.

enum { KC = 384, MB_ROWS = 3072, NB = 480 };

typedef void (*micro_kernel)(long kc, const float *a, const float *b, float *c, long ldc, float alpha, float beta);

// Portable micro-kernel, MR x NR = 4 x 16.
static void kernel_c(long kc, const float *a, const float *b, float *c, long ldc, float alpha, float beta) {
    float acc[4][16];
    memset(acc, 0, sizeof acc);
    for (long p = 0; p < kc; p++) {
        for (int i = 0; i < 4; i++) {
            float ai = a[p * 4 + i];
            for (int j = 0; j < 16; j++) acc[i][j] += ai * b[p * 16 + j];
        }
    }
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 16; j++)
            c[i * ldc + j] = beta == 0 ? alpha * acc[i][j] : fmaf(beta, c[i * ldc + j], alpha * acc[i][j]);   // as the edges
}

#if AFFINITY_X86
// Asks for the C tile's cache lines (for writing) before the k loop, so that they arrive while
// the tile is computed: C is read (beta != 0) and written once per KC step, and past L2 (large
// C, or the retrieval shape's 10,000 x 4,096 block) the misses at the end of every tile were
// otherwise waited for one after another. First and last float of each row cover its lines.
static inline void prefetch_c_tile(const float *c, long ldc, int rows, int cols) {
    for (int i = 0; i < rows; i++) {
        __builtin_prefetch(c + i * ldc, 1, 3);
        __builtin_prefetch(c + i * ldc + cols / 2, 1, 3);
        __builtin_prefetch(c + i * ldc + cols - 1, 1, 3);
    }
}

// AVX2 + FMA micro-kernel, 6 x 16: 12 accumulators, 2 B vectors, 1 broadcast (15 of 16 ymm).
__attribute__((target("avx2,fma")))
static void kernel_avx2(long kc, const float *a, const float *b, float *c, long ldc, float alpha, float beta) {
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps(), c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps(), c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps(), c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    prefetch_c_tile(c, ldc, 6, 16);
    for (long p = 0; p < kc; p++) {
        __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
        __m256 x;
        x = _mm256_broadcast_ss(a + 0); c00 = _mm256_fmadd_ps(x, b0, c00); c01 = _mm256_fmadd_ps(x, b1, c01);
        x = _mm256_broadcast_ss(a + 1); c10 = _mm256_fmadd_ps(x, b0, c10); c11 = _mm256_fmadd_ps(x, b1, c11);
        x = _mm256_broadcast_ss(a + 2); c20 = _mm256_fmadd_ps(x, b0, c20); c21 = _mm256_fmadd_ps(x, b1, c21);
        x = _mm256_broadcast_ss(a + 3); c30 = _mm256_fmadd_ps(x, b0, c30); c31 = _mm256_fmadd_ps(x, b1, c31);
        x = _mm256_broadcast_ss(a + 4); c40 = _mm256_fmadd_ps(x, b0, c40); c41 = _mm256_fmadd_ps(x, b1, c41);
        x = _mm256_broadcast_ss(a + 5); c50 = _mm256_fmadd_ps(x, b0, c50); c51 = _mm256_fmadd_ps(x, b1, c51);
        a += 6;
        b += 16;
    }
    __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
#define STORE_ROW(i, r0, r1)                                                                   \
    do {                                                                                       \
        float *ci = c + (i) * ldc;                                                             \
        __m256 o0 = _mm256_mul_ps(va, r0), o1 = _mm256_mul_ps(va, r1);                         \
        if (beta != 0) {                                                                       \
            o0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci), o0);                                 \
            o1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci + 8), o1);                             \
        }                                                                                      \
        _mm256_storeu_ps(ci, o0);                                                              \
        _mm256_storeu_ps(ci + 8, o1);                                                          \
    } while (0)
    STORE_ROW(0, c00, c01); STORE_ROW(1, c10, c11); STORE_ROW(2, c20, c21);
    STORE_ROW(3, c30, c31); STORE_ROW(4, c40, c41); STORE_ROW(5, c50, c51);
#undef STORE_ROW
}

// AVX-512 micro-kernel, 12 x 32: 24 accumulators, 2 B vectors, 1 broadcast (27 of 32 zmm).
__attribute__((target("avx512f")))
static void kernel_avx512(long kc, const float *a, const float *b, float *c, long ldc, float alpha, float beta) {
    __m512 c00 = _mm512_setzero_ps(), c01 = _mm512_setzero_ps(), c10 = _mm512_setzero_ps(), c11 = _mm512_setzero_ps();
    __m512 c20 = _mm512_setzero_ps(), c21 = _mm512_setzero_ps(), c30 = _mm512_setzero_ps(), c31 = _mm512_setzero_ps();
    __m512 c40 = _mm512_setzero_ps(), c41 = _mm512_setzero_ps(), c50 = _mm512_setzero_ps(), c51 = _mm512_setzero_ps();
    __m512 c60 = _mm512_setzero_ps(), c61 = _mm512_setzero_ps(), c70 = _mm512_setzero_ps(), c71 = _mm512_setzero_ps();
    __m512 c80 = _mm512_setzero_ps(), c81 = _mm512_setzero_ps(), c90 = _mm512_setzero_ps(), c91 = _mm512_setzero_ps();
    __m512 ca0 = _mm512_setzero_ps(), ca1 = _mm512_setzero_ps(), cb0 = _mm512_setzero_ps(), cb1 = _mm512_setzero_ps();
    prefetch_c_tile(c, ldc, 12, 32);
    for (long p = 0; p < kc; p++) {
        __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
        _mm_prefetch((const char *)(b + 32 * 8), _MM_HINT_T0);
        _mm_prefetch((const char *)(b + 32 * 8 + 16), _MM_HINT_T0);
        __m512 x;
        x = _mm512_set1_ps(a[0]);  c00 = _mm512_fmadd_ps(x, b0, c00); c01 = _mm512_fmadd_ps(x, b1, c01);
        x = _mm512_set1_ps(a[1]);  c10 = _mm512_fmadd_ps(x, b0, c10); c11 = _mm512_fmadd_ps(x, b1, c11);
        x = _mm512_set1_ps(a[2]);  c20 = _mm512_fmadd_ps(x, b0, c20); c21 = _mm512_fmadd_ps(x, b1, c21);
        x = _mm512_set1_ps(a[3]);  c30 = _mm512_fmadd_ps(x, b0, c30); c31 = _mm512_fmadd_ps(x, b1, c31);
        x = _mm512_set1_ps(a[4]);  c40 = _mm512_fmadd_ps(x, b0, c40); c41 = _mm512_fmadd_ps(x, b1, c41);
        x = _mm512_set1_ps(a[5]);  c50 = _mm512_fmadd_ps(x, b0, c50); c51 = _mm512_fmadd_ps(x, b1, c51);
        x = _mm512_set1_ps(a[6]);  c60 = _mm512_fmadd_ps(x, b0, c60); c61 = _mm512_fmadd_ps(x, b1, c61);
        x = _mm512_set1_ps(a[7]);  c70 = _mm512_fmadd_ps(x, b0, c70); c71 = _mm512_fmadd_ps(x, b1, c71);
        x = _mm512_set1_ps(a[8]);  c80 = _mm512_fmadd_ps(x, b0, c80); c81 = _mm512_fmadd_ps(x, b1, c81);
        x = _mm512_set1_ps(a[9]);  c90 = _mm512_fmadd_ps(x, b0, c90); c91 = _mm512_fmadd_ps(x, b1, c91);
        x = _mm512_set1_ps(a[10]); ca0 = _mm512_fmadd_ps(x, b0, ca0); ca1 = _mm512_fmadd_ps(x, b1, ca1);
        x = _mm512_set1_ps(a[11]); cb0 = _mm512_fmadd_ps(x, b0, cb0); cb1 = _mm512_fmadd_ps(x, b1, cb1);
        a += 12;
        b += 32;
    }
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#define STORE_ROW(i, r0, r1)                                                                   \
    do {                                                                                       \
        float *ci = c + (i) * ldc;                                                             \
        __m512 o0 = _mm512_mul_ps(va, r0), o1 = _mm512_mul_ps(va, r1);                         \
        if (beta != 0) {                                                                       \
            o0 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci), o0);                                 \
            o1 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci + 16), o1);                            \
        }                                                                                      \
        _mm512_storeu_ps(ci, o0);                                                              \
        _mm512_storeu_ps(ci + 16, o1);                                                         \
    } while (0)
    STORE_ROW(0, c00, c01); STORE_ROW(1, c10, c11); STORE_ROW(2, c20, c21); STORE_ROW(3, c30, c31);
    STORE_ROW(4, c40, c41); STORE_ROW(5, c50, c51); STORE_ROW(6, c60, c61); STORE_ROW(7, c70, c71);
    STORE_ROW(8, c80, c81); STORE_ROW(9, c90, c91); STORE_ROW(10, ca0, ca1); STORE_ROW(11, cb0, cb1);
#undef STORE_ROW
}
#endif

typedef struct { int mr, nr; micro_kernel kernel; } kernel_choice;

// ---- GEMM micro-kernel chosen by measurement
// Where AVX-512 runs as two 256-bit halves (AMD Zen 4), the 512-bit kernel need not be the
// faster one; so when the CPU has AVX-512 and no level is forced, the first GEMM times both
// micro-kernels on cache-resident panels (four 40-MFLOP rounds each, about 2 ms at the rates here) and keeps the 256-bit one only if it is at
// least 10 % faster. AFFINITY_GEMM_KERNEL=avx512|avx2 pins the choice. The two kernels give the
// same bits (same k order and blocking, and edge tiles finish with the same fused multiply-add as
// full ones), so the choice never changes a result.
static double gemm_rates[3];            // GFLOP/s of the portable, AVX2 and AVX-512 kernels (0: not timed)
static int gemm_measured_level = -1;    // 1 or 2, once measured
static pthread_once_t gemm_once = PTHREAD_ONCE_INIT;

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

#if AFFINITY_X86
static double time_kernel(micro_kernel kernel, int mr, int nr) {
    enum { KT = 128 };
    float *a = 0, *b = 0, c[12 * 32];
    if (posix_memalign((void **)&a, 64, sizeof(float) * 12 * KT) != 0) return 0;
    if (posix_memalign((void **)&b, 64, sizeof(float) * 32 * KT) != 0) { free(a); return 0; }
    for (int i = 0; i < 12 * KT; i++) a[i] = 1e-3f * (float)(i % 7);
    for (int i = 0; i < 32 * KT; i++) b[i] = 1e-3f * (float)(i % 5);
    long calls = (long)(4e7 / (2.0 * mr * nr * KT));   // 40 MFLOP per round
    double best = 1e30;
    for (int round = 0; round < 4; round++) {   // the first warms the units (and the clock) up: not counted
        double t0 = now_seconds();
        for (long r = 0; r < calls; r++) kernel(KT, a, b, c, nr, 1.0f, r == 0 ? 0.0f : 1.0f);
        double t = now_seconds() - t0;
        if (round > 0 && t < best) best = t;
    }
    free(a);
    free(b);
    return best > 0 ? 4e7 / best / 1e9 : 0;
}
#endif

static void measure_gemm_kernels(void) {
    gemm_measured_level = 2;
#if AFFINITY_X86
    const char *pin = getenv("AFFINITY_GEMM_KERNEL");
    if (pin && strcmp(pin, "avx2") == 0) { gemm_measured_level = 1; return; }
    if (pin && strcmp(pin, "avx512") == 0) return;
    if (pin && *pin) fprintf(stderr, "AFFINITY_GEMM_KERNEL=%s is neither avx512 nor avx2: ignored, the kernels are timed\n", pin);
    gemm_rates[1] = time_kernel(kernel_avx2, 6, 16);
    gemm_rates[2] = time_kernel(kernel_avx512, 12, 32);
    if (gemm_rates[1] > 1.1 * gemm_rates[2]) gemm_measured_level = 1;
#endif
}

int affinity_gemm_kernel_level(void) {
    int level = affinity_simd_level();
    if (level == 2 && affinity_forced_level() < 0) {
        pthread_once(&gemm_once, measure_gemm_kernels);
        return gemm_measured_level;
    }
    return level;
}

static kernel_choice choose_kernel(void) {
    kernel_choice k = {4, 16, kernel_c};
#if AFFINITY_X86
    switch (affinity_gemm_kernel_level()) {
    case 2: k.mr = 12; k.nr = 32; k.kernel = kernel_avx512; break;
    case 1: k.mr = 6; k.nr = 16; k.kernel = kernel_avx2; break;
    }
#endif
    return k;
}

double affinity_gemm_kernel_rate(int level) {
    if (level < 0 || level > 2) return 0;
    if (affinity_simd_level() == 2) pthread_once(&gemm_once, measure_gemm_kernels);
    return gemm_rates[level];
}

int affinity_gemm_mr(void) { return choose_kernel().mr; }
int affinity_gemm_nr(void) { return choose_kernel().nr; }

// Thread-local packing buffers, grown on demand and kept for the thread's life: A's block (up to
// MB_ROWS x KC, 4.7 MB), B's block, and the op(B) a parallel product shares (up to 64 MB). A key
// with a destructor frees them when the thread exits (dispatch's workers come and go).
static __thread float *pack_a_buffer = 0, *pack_b_buffer = 0, *shared_b_buffer = 0;
static __thread long pack_a_size = 0, pack_b_size = 0, shared_b_size = 0;
static pthread_key_t buffers_key;
static int buffers_key_made = 0;
static pthread_once_t buffers_once = PTHREAD_ONCE_INIT;

static void free_thread_buffers(void *unused) {
    (void)unused;
    free(pack_a_buffer); free(pack_b_buffer); free(shared_b_buffer);
    pack_a_buffer = pack_b_buffer = shared_b_buffer = 0;
    pack_a_size = pack_b_size = shared_b_size = 0;
}

static void make_buffers_key(void) { buffers_key_made = pthread_key_create(&buffers_key, free_thread_buffers) == 0; }

static float *grow(float **buffer, long *size, long need) {
    if (*size < need) {
        pthread_once(&buffers_once, make_buffers_key);
        if (buffers_key_made) pthread_setspecific(buffers_key, (void *)1);   // non-null: the destructor runs at thread exit
        free(*buffer);
        void *p = 0;
        if (posix_memalign(&p, 64, (size_t)need * sizeof(float)) != 0) abort();
        *buffer = p;
        *size = need;
    }
    return *buffer;
}

#if AFFINITY_X86
// dst[c * dst_ld + r] = src[r * ld + c] for r < rows (at most 8), c < 8: an 8 x 8 transpose in
// registers (rows past `rows` read as zero and are not stored). Packing a row-major A (or a
// transposed B, a weight matrix stored out x in) reads rows and writes columns; one element at a
// time that was most of the packing cost.
__attribute__((target("avx2,fma")))
static inline void transpose8_avx2(const float *src, long ld, long rows, float *dst, long dst_ld) {
    __m256 r[8];
    for (int i = 0; i < 8; i++) r[i] = i < rows ? _mm256_loadu_ps(src + i * ld) : _mm256_setzero_ps();
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0)), s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0)), s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0)), s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0)), s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 c[8];
    c[0] = _mm256_permute2f128_ps(s0, s4, 0x20); c[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    c[2] = _mm256_permute2f128_ps(s2, s6, 0x20); c[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    c[4] = _mm256_permute2f128_ps(s0, s4, 0x31); c[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    c[6] = _mm256_permute2f128_ps(s2, s6, 0x31); c[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
    if (rows == 8) {
        for (int i = 0; i < 8; i++) _mm256_storeu_ps(dst + i * dst_ld, c[i]);
    } else {
        __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)rows), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        for (int i = 0; i < 8; i++) _mm256_maskstore_ps(dst + i * dst_ld, mask, c[i]);
    }
}

// out[p * width + i] = src[i * ld + p] for i < count (<= width), p < kc, through 8 x 8 transposes;
// the k tail element by element. Lanes count..<width are left to the caller.
__attribute__((target("avx2,fma")))
static void transpose_panel_avx2(const float *src, long ld, long count, long kc, int width, float *out) {
    long p = 0;
    for (; p + 8 <= kc; p += 8)
        for (long g = 0; g < count; g += 8)
            transpose8_avx2(src + g * ld + p, ld, count - g < 8 ? count - g : 8, out + p * width + g, width);
    for (; p < kc; p++)
        for (long i = 0; i < count; i++) out[p * width + i] = src[i * ld + p];
}
#endif

// Packs op(A)[i0 ..< i0+mc, p0 ..< p0+kc] into MR-row panels, each stored k-major, zero padded.
static void pack_a(int transA, const float *A, long lda, long i0, long p0, long mc, long kc, int mr, float *out) {
    for (long ir = 0; ir < mc; ir += mr) {
        long rows = mc - ir < mr ? mc - ir : mr;
#if AFFINITY_X86
        if (!transA && affinity_simd_level() >= 1) {
            transpose_panel_avx2(A + (i0 + ir) * lda + p0, lda, rows, kc, mr, out);
            if (rows < mr)
                for (long p = 0; p < kc; p++)
                    for (long i = rows; i < mr; i++) out[p * mr + i] = 0;
            out += kc * mr;
            continue;
        }
#endif
        if (!transA) {
            for (long p = 0; p < kc; p++) {
                for (long i = 0; i < rows; i++) out[p * mr + i] = A[(i0 + ir + i) * lda + p0 + p];
                for (long i = rows; i < mr; i++) out[p * mr + i] = 0;
            }
        } else {
            for (long p = 0; p < kc; p++) {
                const float *src = A + (p0 + p) * lda + i0 + ir;
                for (long i = 0; i < rows; i++) out[p * mr + i] = src[i];
                for (long i = rows; i < mr; i++) out[p * mr + i] = 0;
            }
        }
        out += kc * mr;
    }
}

// Packs op(B)[p0 ..< p0+kc, j0 ..< j0+nc] into NR-column panels, each stored k-major, zero padded.
static void pack_b(int transB, const float *B, long ldb, long p0, long j0, long kc, long nc, int nr, float *out) {
    for (long jr = 0; jr < nc; jr += nr) {
        long cols = nc - jr < nr ? nc - jr : nr;
        if (!transB) {
            for (long p = 0; p < kc; p++) {
                const float *src = B + (p0 + p) * ldb + j0 + jr;
                for (long j = 0; j < cols; j++) out[p * nr + j] = src[j];
                for (long j = cols; j < nr; j++) out[p * nr + j] = 0;
            }
        } else {
#if AFFINITY_X86
            if (affinity_simd_level() >= 1) {
                transpose_panel_avx2(B + (j0 + jr) * ldb + p0, ldb, cols, kc, nr, out);
            } else
#endif
            for (long j = 0; j < cols; j++) {
                const float *src = B + (j0 + jr + j) * ldb + p0;
                for (long p = 0; p < kc; p++) out[p * nr + j] = src[p];
            }
            for (long j = cols; j < nr; j++)
                for (long p = 0; p < kc; p++) out[p * nr + j] = 0;
        }
        out += kc * nr;
    }
}

// The blocked loops. op(B) comes packed in `prepacked` (affinity_sgemm_pack_b_slab's layout) or,
// when that is null, is packed here block by block into the thread's buffer.
static void sgemm_blocked(int transA, int transB, long M, long N, long K, float alpha, const float *A, long lda,
                          const float *B, long ldb, const float *prepacked, float beta, float *C, long ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0) {   // no product: C = beta·C
        for (long i = 0; i < M; i++)
            for (long j = 0; j < N; j++) C[i * ldc + j] = beta == 0 ? 0 : beta * C[i * ldc + j];
        return;
    }
    kernel_choice kc_ = choose_kernel();
    const int mr = kc_.mr, nr = kc_.nr;
    const long mb_max = (MB_ROWS / mr) * mr;
    const long mb_need = M < mb_max ? (M + mr - 1) / mr * mr : mb_max;
    float *pa = grow(&pack_a_buffer, &pack_a_size, mb_need * KC);
    float *pb = prepacked ? 0 : grow(&pack_b_buffer, &pack_b_size, (NB + nr) * KC);
    float edge[12 * 32];

    for (long ic = 0; ic < M; ic += mb_max) {
        long mb = M - ic < mb_max ? M - ic : mb_max;
        for (long pc = 0; pc < K; pc += KC) {
            long kc = K - pc < KC ? K - pc : KC;
            float tile_beta = pc == 0 ? beta : 1.0f;
            pack_a(transA, A, lda, ic, pc, mb, kc, mr, pa);
            for (long jc = 0; jc < N; jc += NB) {
                long nb = N - jc < NB ? N - jc : NB;
                if (prepacked) pb = (float *)prepacked + jc * K + pc * ((nb + nr - 1) / nr * nr);
                else pack_b(transB, B, ldb, pc, jc, kc, nb, nr, pb);
                for (long ir = 0; ir < mb; ir += mr) {
                    long rows = mb - ir < mr ? mb - ir : mr;
                    const float *ap = pa + (ir / mr) * kc * mr;
                    for (long jr = 0; jr < nb; jr += nr) {
                        long cols = nb - jr < nr ? nb - jr : nr;
                        const float *bp = pb + (jr / nr) * kc * nr;
                        float *cp = C + (ic + ir) * ldc + jc + jr;
                        if (rows == mr && cols == nr) {
                            kc_.kernel(kc, ap, bp, cp, ldc, alpha, tile_beta);
                        } else {
                            kc_.kernel(kc, ap, bp, edge, nr, alpha, 0);
                            // beta·c + v rounded once, as the vector kernels finish a full tile
                            // (c + v exactly that when beta is 1; fmaf is a libm call in this
                            // baseline-compiled loop): edges give the same bits whichever tile
                            // shape covers them.
                            for (long i = 0; i < rows; i++)
                                for (long j = 0; j < cols; j++) {
                                    float v = edge[i * nr + j];
                                    float c = cp[i * ldc + j];
                                    cp[i * ldc + j] = tile_beta == 0 ? v : tile_beta == 1 ? c + v : fmaf(tile_beta, c, v);
                                }
                        }
                    }
                }
            }
        }
    }
}

void affinity_sgemm(int transA, int transB, long M, long N, long K, float alpha,
                    const float *A, long lda, const float *B, long ldb, float beta, float *C, long ldc) {
    sgemm_blocked(transA, transB, M, N, K, alpha, A, lda, B, ldb, 0, beta, C, ldc);
}

// Packed layout: NB-column blocks one after another, each K x round_up(nb, nr) floats made of its
// KC-row slabs in order (NB is a multiple of every NR, so block jc starts at jc * K).
long affinity_sgemm_packed_b_floats(long N, long K) {
    int nr = choose_kernel().nr;
    return (N + nr - 1) / nr * nr * K;
}

long affinity_sgemm_slab_count(long N, long K) {
    return ((N + NB - 1) / NB) * ((K + KC - 1) / KC);
}

void affinity_sgemm_pack_b_slab(int transB, const float *B, long ldb, long N, long K, long slab, float *packed) {
    long ks = (K + KC - 1) / KC;
    long jc = (slab / ks) * NB, pc = (slab % ks) * KC;
    if (jc >= N || pc >= K) return;
    int nr = choose_kernel().nr;
    long nb = N - jc < NB ? N - jc : NB, kc = K - pc < KC ? K - pc : KC;
    long nbp = (nb + nr - 1) / nr * nr;
    pack_b(transB, B, ldb, pc, jc, kc, nb, nr, packed + jc * K + pc * nbp);
}

float *affinity_sgemm_shared_buffer(long floats) { return grow(&shared_b_buffer, &shared_b_size, floats); }

void affinity_sgemm_packed(int transA, long M, long N, long K, float alpha, const float *A, long lda,
                           const float *packedB, float beta, float *C, long ldc) {
    sgemm_blocked(transA, 0, M, N, K, alpha, A, lda, 0, 0, packedB, beta, C, ldc);
}

// ------------------------------------------------------------------------------ top-k
// Min-heap ordered so that the root is the worst kept entry: lower score, or equal score and
// larger id.
// NaN ranks after every number (as ScoredIndex.ranksBefore in Swift); affinity_topk_push never
// admits one, affinity_topk_select does when the heap is not yet full.
static inline int ranks_before(float sa, int64_t ia, float sb, int64_t ib) {
    if (sa == sb || (sa != sa && sb != sb)) return ia < ib;
    if (sa != sa) return 0;
    if (sb != sb) return 1;
    return sa > sb;
}

static inline int worse(float sa, int64_t ia, float sb, int64_t ib) {
    return ranks_before(sb, ib, sa, ia);
}

static void heap_replace_root(float *hs, int64_t *hi, long n, float s, int64_t id) {
    long i = 0;
    for (;;) {
        long l = 2 * i + 1, r = l + 1, w = i;
        float ws = s; int64_t wi = id;
        if (l < n && worse(hs[l], hi[l], ws, wi)) { w = l; ws = hs[l]; wi = hi[l]; }
        if (r < n && worse(hs[r], hi[r], ws, wi)) { w = r; }
        if (w == i) break;
        hs[i] = hs[w]; hi[i] = hi[w];
        i = w;
    }
    hs[i] = s; hi[i] = id;
}

static void heap_push(float *hs, int64_t *hi, long n, float s, int64_t id) {
    long i = n;
    while (i > 0) {
        long parent = (i - 1) / 2;
        if (worse(s, id, hs[parent], hi[parent])) { hs[i] = hs[parent]; hi[i] = hi[parent]; i = parent; }
        else break;
    }
    hs[i] = s; hi[i] = id;
}

static long offer(float s, int64_t id, float *hs, int64_t *hi, long k, long *count) {
    if (s != s) return 0;   // NaN never enters
    if (*count < k) { heap_push(hs, hi, *count, s, id); (*count)++; return 1; }
    if (s > hs[0]) { heap_replace_root(hs, hi, k, s, id); return 1; }
    return 0;
}

#if AFFINITY_X86
__attribute__((target("avx512f")))
static long topk_avx512(const float *scores, long n, int64_t id0, float *hs, int64_t *hi, long k, long *count) {
    long inserted = 0, i = 0;
    while (i < n && *count < k) { inserted += offer(scores[i], id0 + i, hs, hi, k, count); i++; }
    if (k == 0) return 0;
    __m512 threshold = _mm512_set1_ps(hs[0]);
    for (; i + 16 <= n; i += 16) {
        __mmask16 m = _mm512_cmp_ps_mask(_mm512_loadu_ps(scores + i), threshold, _CMP_GT_OQ);
        while (m) {
            int b = __builtin_ctz(m);
            m &= m - 1;
            if (scores[i + b] > hs[0]) { heap_replace_root(hs, hi, k, scores[i + b], id0 + i + b); inserted++; }
        }
        threshold = _mm512_set1_ps(hs[0]);
    }
    for (; i < n; i++) inserted += offer(scores[i], id0 + i, hs, hi, k, count);
    return inserted;
}

__attribute__((target("avx2,fma")))
static long topk_avx2(const float *scores, long n, int64_t id0, float *hs, int64_t *hi, long k, long *count) {
    long inserted = 0, i = 0;
    while (i < n && *count < k) { inserted += offer(scores[i], id0 + i, hs, hi, k, count); i++; }
    if (k == 0) return 0;
    __m256 threshold = _mm256_set1_ps(hs[0]);
    for (; i + 8 <= n; i += 8) {
        int m = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(scores + i), threshold, _CMP_GT_OQ));
        while (m) {
            int b = __builtin_ctz(m);
            m &= m - 1;
            if (scores[i + b] > hs[0]) { heap_replace_root(hs, hi, k, scores[i + b], id0 + i + b); inserted++; }
        }
        threshold = _mm256_set1_ps(hs[0]);
    }
    for (; i < n; i++) inserted += offer(scores[i], id0 + i, hs, hi, k, count);
    return inserted;
}
#endif

long affinity_topk_push(const float *scores, long n, int64_t id0, float *heap_scores, int64_t *heap_ids, long k, long *count) {
    if (k <= 0) return 0;
#if AFFINITY_X86
    switch (affinity_simd_level()) {
    case 2: return topk_avx512(scores, n, id0, heap_scores, heap_ids, k, count);
    case 1: return topk_avx2(scores, n, id0, heap_scores, heap_ids, k, count);
    }
#endif
    long inserted = 0;
    for (long i = 0; i < n; i++) inserted += offer(scores[i], id0 + i, heap_scores, heap_ids, k, count);
    return inserted;
}

// ------------------------------------------------------------------------------ BPR step
// The update of coordinates k0 ..< f with the old w (the SIMD variants' tail, the portable body).
// Top-k with an exclusion mask and any id order: the same heap as affinity_topk_push, with
// TopKSelector's rules (ties to the smaller id, NaN last). The vector pass keeps only scores >= the
// worst kept one (a tie may still win on its id) and checks the mask for those alone.
static inline long offer_masked(float s, int64_t id, float *hs, int64_t *hi, long k, long *count) {
    if (*count < k) { heap_push(hs, hi, *count, s, id); (*count)++; return 1; }
    if (ranks_before(s, id, hs[0], hi[0])) { heap_replace_root(hs, hi, k, s, id); return 1; }
    return 0;
}

// The scalar parts of the selection: `select_fill` offers entries from *i on until the heap is full
// (and its root is a number, so the vector comparison is meaningful); `select_rest` offers i..<n.
static long select_fill(const float *scores, const uint8_t *excluded, long n, long *i, int64_t id0,
                        float *hs, int64_t *hi, long k, long *count) {
    long inserted = 0;
    for (; *i < n && (*count < k || hs[0] != hs[0]); (*i)++)
        if (!(excluded && excluded[*i])) inserted += offer_masked(scores[*i], id0 + *i, hs, hi, k, count);
    return inserted;
}

static long select_rest(const float *scores, const uint8_t *excluded, long i, long n, int64_t id0,
                        float *hs, int64_t *hi, long k, long *count) {
    long inserted = 0;
    for (; i < n; i++) if (!(excluded && excluded[i])) inserted += offer_masked(scores[i], id0 + i, hs, hi, k, count);
    return inserted;
}

#if AFFINITY_X86
__attribute__((target("avx512f")))
static long select_avx512(const float *scores, const uint8_t *excluded, long n, int64_t id0,
                          float *hs, int64_t *hi, long k, long *count) {
    long i = 0;
    long inserted = select_fill(scores, excluded, n, &i, id0, hs, hi, k, count);
    for (; i + 16 <= n; i += 16) {
        __mmask16 m = _mm512_cmp_ps_mask(_mm512_loadu_ps(scores + i), _mm512_set1_ps(hs[0]), _CMP_GE_OQ);
        while (m) {
            int b = __builtin_ctz(m);
            m &= m - 1;
            if (excluded && excluded[i + b]) continue;
            inserted += offer_masked(scores[i + b], id0 + i + b, hs, hi, k, count);
        }
    }
    return inserted + select_rest(scores, excluded, i, n, id0, hs, hi, k, count);
}

__attribute__((target("avx2,fma")))
static long select_avx2(const float *scores, const uint8_t *excluded, long n, int64_t id0,
                        float *hs, int64_t *hi, long k, long *count) {
    long i = 0;
    long inserted = select_fill(scores, excluded, n, &i, id0, hs, hi, k, count);
    for (; i + 8 <= n; i += 8) {
        int m = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(scores + i), _mm256_set1_ps(hs[0]), _CMP_GE_OQ));
        while (m) {
            int b = __builtin_ctz(m);
            m &= m - 1;
            if (excluded && excluded[i + b]) continue;
            inserted += offer_masked(scores[i + b], id0 + i + b, hs, hi, k, count);
        }
    }
    return inserted + select_rest(scores, excluded, i, n, id0, hs, hi, k, count);
}
#endif

void affinity_topk_sort(float *hs, int64_t *hi, long n) {
    for (long end = n - 1; end > 0; end--) {
        float s = hs[end]; int64_t id = hi[end];
        hs[end] = hs[0]; hi[end] = hi[0];
        heap_replace_root(hs, hi, end, s, id);
    }
}

long affinity_topk_select(const float *scores, const uint8_t *excluded, long n, int64_t id0,
                          float *heap_scores, int64_t *heap_ids, long k, long *count) {
    if (k <= 0) return 0;
#if AFFINITY_X86
    switch (affinity_simd_level()) {
    case 2: return select_avx512(scores, excluded, n, id0, heap_scores, heap_ids, k, count);
    case 1: return select_avx2(scores, excluded, n, id0, heap_scores, heap_ids, k, count);
    }
#endif
    return select_rest(scores, excluded, 0, n, id0, heap_scores, heap_ids, k, count);
}

// ------------------------------------------------------------------------------ weighted row sums
// out[j] = Σ_r weights[r] · B[rows[r]·width + j], accumulated row after row in the given order with
// a separate multiply and add (no fused multiply-add), so the result is bit for bit that of the plain
// loop `for r { for j { out[j] += w[r] * B[r][j] } }`. Four rows per pass over `out`: each pass
// streams four rows from memory at once (a row of EASE's item-item matrix is a random jump, so one
// stream at a time leaves the memory system idle between them).
static void row_sum_c(const float *B, long width, const int32_t *rows, const float *weights, long count, float *out) {
#pragma clang fp contract(off)
    for (long r = 0; r < count; r++) {
        const float *src = B + (long)rows[r] * width;
        float w = weights ? weights[r] : 1.0f;
        for (long j = 0; j < width; j++) { float t = w * src[j]; out[j] = out[j] + t; }
    }
}

#if AFFINITY_X86
__attribute__((target("avx512f")))
static void row_sum_avx512(const float *B, long width, const int32_t *rows, const float *weights, long count, float *out) {
    long r = 0;
    for (; r + 4 <= count; r += 4) {
        const float *s0 = B + (long)rows[r] * width, *s1 = B + (long)rows[r + 1] * width;
        const float *s2 = B + (long)rows[r + 2] * width, *s3 = B + (long)rows[r + 3] * width;
        if (r + 8 <= count) {
            for (int q = 4; q < 8; q++) { const char *p = (const char *)(B + (long)rows[r + q] * width); __builtin_prefetch(p, 0, 3); __builtin_prefetch(p + 64, 0, 3); }
        }
        __m512 w0 = _mm512_set1_ps(weights ? weights[r] : 1.0f), w1 = _mm512_set1_ps(weights ? weights[r + 1] : 1.0f);
        __m512 w2 = _mm512_set1_ps(weights ? weights[r + 2] : 1.0f), w3 = _mm512_set1_ps(weights ? weights[r + 3] : 1.0f);
        long j = 0;
        for (; j + 16 <= width; j += 16) {
            __m512 o = _mm512_loadu_ps(out + j);
            o = _mm512_add_ps(o, _mm512_mul_ps(w0, _mm512_loadu_ps(s0 + j)));
            o = _mm512_add_ps(o, _mm512_mul_ps(w1, _mm512_loadu_ps(s1 + j)));
            o = _mm512_add_ps(o, _mm512_mul_ps(w2, _mm512_loadu_ps(s2 + j)));
            o = _mm512_add_ps(o, _mm512_mul_ps(w3, _mm512_loadu_ps(s3 + j)));
            _mm512_storeu_ps(out + j, o);
        }
        if (j < width) {
            __mmask16 m = (__mmask16)((1u << (width - j)) - 1);
            __m512 o = _mm512_maskz_loadu_ps(m, out + j);
            o = _mm512_add_ps(o, _mm512_mul_ps(w0, _mm512_maskz_loadu_ps(m, s0 + j)));
            o = _mm512_add_ps(o, _mm512_mul_ps(w1, _mm512_maskz_loadu_ps(m, s1 + j)));
            o = _mm512_add_ps(o, _mm512_mul_ps(w2, _mm512_maskz_loadu_ps(m, s2 + j)));
            o = _mm512_add_ps(o, _mm512_mul_ps(w3, _mm512_maskz_loadu_ps(m, s3 + j)));
            _mm512_mask_storeu_ps(out + j, m, o);
        }
    }
    row_sum_c(B, width, rows + r, weights ? weights + r : 0, count - r, out);
}

__attribute__((target("avx2,fma")))
static void row_sum_avx2(const float *B, long width, const int32_t *rows, const float *weights, long count, float *out) {
    long r = 0;
    for (; r + 4 <= count; r += 4) {
        const float *s0 = B + (long)rows[r] * width, *s1 = B + (long)rows[r + 1] * width;
        const float *s2 = B + (long)rows[r + 2] * width, *s3 = B + (long)rows[r + 3] * width;
        __m256 w0 = _mm256_set1_ps(weights ? weights[r] : 1.0f), w1 = _mm256_set1_ps(weights ? weights[r + 1] : 1.0f);
        __m256 w2 = _mm256_set1_ps(weights ? weights[r + 2] : 1.0f), w3 = _mm256_set1_ps(weights ? weights[r + 3] : 1.0f);
        long j = 0;
        for (; j + 8 <= width; j += 8) {
            __m256 o = _mm256_loadu_ps(out + j);
            o = _mm256_add_ps(o, _mm256_mul_ps(w0, _mm256_loadu_ps(s0 + j)));
            o = _mm256_add_ps(o, _mm256_mul_ps(w1, _mm256_loadu_ps(s1 + j)));
            o = _mm256_add_ps(o, _mm256_mul_ps(w2, _mm256_loadu_ps(s2 + j)));
            o = _mm256_add_ps(o, _mm256_mul_ps(w3, _mm256_loadu_ps(s3 + j)));
            _mm256_storeu_ps(out + j, o);
        }
        for (; j < width; j++) {
#pragma clang fp contract(off)
            float o = out[j];
            float w[4] = {weights ? weights[r] : 1.0f, weights ? weights[r + 1] : 1.0f, weights ? weights[r + 2] : 1.0f, weights ? weights[r + 3] : 1.0f};
            o = o + w[0] * s0[j]; o = o + w[1] * s1[j]; o = o + w[2] * s2[j]; o = o + w[3] * s3[j];
            out[j] = o;
        }
    }
    row_sum_c(B, width, rows + r, weights ? weights + r : 0, count - r, out);
}
#endif

void affinity_row_sum(const float *B, long width, const int32_t *rows, const float *weights, long count, float *out) {
    if (count <= 0 || width <= 0) return;
#if AFFINITY_X86
    switch (affinity_simd_level()) {
    case 2: row_sum_avx512(B, width, rows, weights, count, out); return;
    case 1: row_sum_avx2(B, width, rows, weights, count, out); return;
    }
#endif
    row_sum_c(B, width, rows, weights, count, out);
}

static inline void bpr_update_from(float *restrict w, float *restrict hi, float *restrict hj, long k0, long f,
                                   float z, float lr, float reg) {
    for (long k = k0; k < f; k++) {
        float wk = w[k], hik = hi[k], hjk = hj[k];
        w[k] = wk + lr * (z * (hik - hjk) - reg * wk);
        hi[k] = hik + lr * (z * wk - reg * hik);
        hj[k] = hjk + lr * (-z * wk - reg * hjk);
    }
}

static float bpr_step_c(float *restrict w, float *restrict hi, float *restrict hj, long f, float bias_diff, float lr, float reg) {
    float x = bias_diff;
    for (long k = 0; k < f; k++) x += w[k] * (hi[k] - hj[k]);
    float z = 1.0f / (1.0f + expf(x));
    bpr_update_from(w, hi, hj, 0, f, z, lr, reg);
    return z;
}

#if AFFINITY_X86
__attribute__((target("avx512f")))
static float bpr_step_avx512(float *restrict w, float *restrict hi, float *restrict hj, long f, float bias_diff, float lr, float reg) {
    __m512 acc = _mm512_setzero_ps();
    long k = 0;
    for (; k + 16 <= f; k += 16)
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(w + k), _mm512_sub_ps(_mm512_loadu_ps(hi + k), _mm512_loadu_ps(hj + k)), acc);
    float x = bias_diff + _mm512_reduce_add_ps(acc);
    for (long t = k; t < f; t++) x += w[t] * (hi[t] - hj[t]);
    float z = 1.0f / (1.0f + expf(x));
    __m512 vz = _mm512_set1_ps(z), vlr = _mm512_set1_ps(lr), vreg = _mm512_set1_ps(reg);
    for (k = 0; k + 16 <= f; k += 16) {
        __m512 wk = _mm512_loadu_ps(w + k), hik = _mm512_loadu_ps(hi + k), hjk = _mm512_loadu_ps(hj + k);
        __m512 gw = _mm512_fnmadd_ps(vreg, wk, _mm512_mul_ps(vz, _mm512_sub_ps(hik, hjk)));
        __m512 zw = _mm512_mul_ps(vz, wk);
        __m512 gi = _mm512_fnmadd_ps(vreg, hik, zw);
        __m512 gj = _mm512_fnmadd_ps(vreg, hjk, _mm512_sub_ps(_mm512_setzero_ps(), zw));
        _mm512_storeu_ps(w + k, _mm512_fmadd_ps(vlr, gw, wk));
        _mm512_storeu_ps(hi + k, _mm512_fmadd_ps(vlr, gi, hik));
        _mm512_storeu_ps(hj + k, _mm512_fmadd_ps(vlr, gj, hjk));
    }
    bpr_update_from(w, hi, hj, k, f, z, lr, reg);
    return z;
}

__attribute__((target("avx2,fma")))
static float bpr_step_avx2(float *restrict w, float *restrict hi, float *restrict hj, long f, float bias_diff, float lr, float reg) {
    __m256 acc = _mm256_setzero_ps();
    long k = 0;
    for (; k + 8 <= f; k += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_sub_ps(_mm256_loadu_ps(hi + k), _mm256_loadu_ps(hj + k)), acc);
    float x = bias_diff + hsum256(acc);
    for (long t = k; t < f; t++) x += w[t] * (hi[t] - hj[t]);
    float z = 1.0f / (1.0f + expf(x));
    __m256 vz = _mm256_set1_ps(z), vlr = _mm256_set1_ps(lr), vreg = _mm256_set1_ps(reg);
    for (k = 0; k + 8 <= f; k += 8) {
        __m256 wk = _mm256_loadu_ps(w + k), hik = _mm256_loadu_ps(hi + k), hjk = _mm256_loadu_ps(hj + k);
        __m256 gw = _mm256_fnmadd_ps(vreg, wk, _mm256_mul_ps(vz, _mm256_sub_ps(hik, hjk)));
        __m256 zw = _mm256_mul_ps(vz, wk);
        __m256 gi = _mm256_fnmadd_ps(vreg, hik, zw);
        __m256 gj = _mm256_fnmadd_ps(vreg, hjk, _mm256_sub_ps(_mm256_setzero_ps(), zw));
        _mm256_storeu_ps(w + k, _mm256_fmadd_ps(vlr, gw, wk));
        _mm256_storeu_ps(hi + k, _mm256_fmadd_ps(vlr, gi, hik));
        _mm256_storeu_ps(hj + k, _mm256_fmadd_ps(vlr, gj, hjk));
    }
    bpr_update_from(w, hi, hj, k, f, z, lr, reg);
    return z;
}
#endif

float affinity_bpr_step(float *w, float *hi, float *hj, long f, float bias_diff, float lr, float reg) {
#if AFFINITY_X86
    switch (affinity_simd_level()) {
    case 2: return bpr_step_avx512(w, hi, hj, f, bias_diff, lr, reg);
    case 1: return bpr_step_avx2(w, hi, hj, f, bias_diff, lr, reg);
    }
#endif
    return bpr_step_c(w, hi, hj, f, bias_diff, lr, reg);
}

// ------------------------------------------------------------------------------ skip-gram step
// word2vec's sigmoid, cut at ±6 as its table is.
static inline float sgns_sigmoid(float x) { return x > 6 ? 1.0f : x < -6 ? 0.0f : 1.0f / (1.0f + expf(-x)); }

static void sgns_step_c(float *w, float *out, const int32_t *targets, long count, long d, float alpha, float *e) {
    for (long k = 0; k < d; k++) e[k] = 0;
    for (long t = 0; t < count; t++) {
        float *o = out + (long)targets[t] * d;
        float g = ((t == 0 ? 1.0f : 0.0f) - sgns_sigmoid(dot_c(w, o, d))) * alpha;
        for (long k = 0; k < d; k++) {
            e[k] += g * o[k];
            o[k] += g * w[k];
        }
    }
    for (long k = 0; k < d; k++) w[k] += e[k];
}

#if AFFINITY_X86
#define AFFINITY_SGNS_KERNEL(W, L, TARGET, DOT)                                                                     \
    __attribute__((target(TARGET))) static void sgns_step_##W(float *w, float *out, const int32_t *targets,         \
                                                              long count, long d, float alpha, float *e) {          \
        long body = d / L * L, k;                                                                                  \
        for (k = 0; k < d; k++) e[k] = 0;                                                                          \
        for (long t = 0; t < count; t++) {                                                                         \
            float *o = out + (long)targets[t] * d;                                                                 \
            float g = ((t == 0 ? 1.0f : 0.0f) - sgns_sigmoid(DOT(w, o, d))) * alpha;                               \
            __m##W vg = _mm##W##_set1_ps(g);                                                                       \
            for (k = 0; k < body; k += L) {                                                                        \
                __m##W ok = _mm##W##_loadu_ps(o + k);                                                              \
                _mm##W##_storeu_ps(e + k, _mm##W##_fmadd_ps(vg, ok, _mm##W##_loadu_ps(e + k)));                    \
                _mm##W##_storeu_ps(o + k, _mm##W##_fmadd_ps(vg, _mm##W##_loadu_ps(w + k), ok));                    \
            }                                                                                                      \
            for (; k < d; k++) {                                                                                   \
                e[k] += g * o[k];                                                                                  \
                o[k] += g * w[k];                                                                                  \
            }                                                                                                      \
        }                                                                                                          \
        for (k = 0; k < body; k += L) _mm##W##_storeu_ps(w + k, _mm##W##_add_ps(_mm##W##_loadu_ps(w + k), _mm##W##_loadu_ps(e + k))); \
        for (; k < d; k++) w[k] += e[k];                                                                           \
    }

AFFINITY_SGNS_KERNEL(512, 16, "avx512f", dot_avx512)
AFFINITY_SGNS_KERNEL(256, 8, "avx2,fma", dot_avx2)
#endif

void affinity_sgns_step(float *w, float *out, const int32_t *targets, long count, long d, float alpha, float *e) {
#if AFFINITY_X86
    switch (affinity_simd_level()) {
    case 2: sgns_step_512(w, out, targets, count, d, alpha, e); return;
    case 1: sgns_step_256(w, out, targets, count, d, alpha, e); return;
    }
#endif
    sgns_step_c(w, out, targets, count, d, alpha, e);
}

// ------------------------------------------------------------------------------ scores by id
static inline void prefetch_row(const float *row, long dim) {
    const char *p = (const char *)row;
    for (long b = 0; b < dim * 4; b += 64) __builtin_prefetch(p + b, 0, 3);
}

void affinity_scores_by_id(int negated_l2, const float *q, const float *X, long dim, const int32_t *ids, long n, float *out) {
    if (n <= 0) return;
    int level = affinity_simd_level();
    prefetch_row(X + (long)ids[0] * dim, dim);
    if (n > 1) prefetch_row(X + (long)ids[1] * dim, dim);
    for (long i = 0; i < n; i++) {
        if (i + 2 < n) prefetch_row(X + (long)ids[i + 2] * dim, dim);
        const float *x = X + (long)ids[i] * dim;
        float v;
#if AFFINITY_X86
        if (level == 2) v = negated_l2 ? -l2_avx512(q, x, dim) : dot_avx512(q, x, dim);
        else if (level == 1) v = negated_l2 ? -l2_avx2(q, x, dim) : dot_avx2(q, x, dim);
        else
#endif
            v = negated_l2 ? -l2_c(q, x, dim) : dot_c(q, x, dim);
        out[i] = v;
    }
    (void)level;
}

// ------------------------------------------------------------------------------ PQ scan
static void pq_scan_c(const uint8_t *codes, long n, long m, const float *table, float bias, float *out) {
    for (long i = 0; i < n; i++) {
        const uint8_t *c = codes + i * m;
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        long j = 0;
        for (; j + 4 <= m; j += 4) {
            s0 += table[j * 256 + c[j]];
            s1 += table[(j + 1) * 256 + c[j + 1]];
            s2 += table[(j + 2) * 256 + c[j + 2]];
            s3 += table[(j + 3) * 256 + c[j + 3]];
        }
        for (; j < m; j++) s0 += table[j * 256 + c[j]];
        out[i] = bias + ((s0 + s1) + (s2 + s3));
    }
}

#if AFFINITY_X86
// 16 vectors at a time: for each sub-quantiser, gather 16 table entries (one per vector).
__attribute__((target("avx512f")))
static void pq_scan_avx512(const uint8_t *codes, long n, long m, const float *table, float bias, float *out) {
    long i = 0;
    const __m512i lane = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32((int)m));
    for (; i + 16 <= n; i += 16) {
        __m512 acc = _mm512_set1_ps(bias);
        const uint8_t *block = codes + i * m;
        for (long j = 0; j < m; j++) {
            __m512i idx = _mm512_i32gather_epi32(_mm512_add_epi32(lane, _mm512_set1_epi32((int)j)), (const void *)block, 1);
            idx = _mm512_and_si512(idx, _mm512_set1_epi32(0xFF));
            acc = _mm512_add_ps(acc, _mm512_i32gather_ps(idx, table + j * 256, 4));
        }
        _mm512_storeu_ps(out + i, acc);
    }
    if (i < n) pq_scan_c(codes + i * m, n - i, m, table, bias, out + i);
}
#endif

void affinity_pq_scan(const uint8_t *codes, long n, long m, const float *table, float bias, float *out) {
#if AFFINITY_X86
    if (affinity_simd_level() == 2) { pq_scan_avx512(codes, n, m, table, bias, out); return; }
#endif
    pq_scan_c(codes, n, m, table, bias, out);
}

// ------------------------------------------------------------------------------ exp (softmax)
// x[i] = exp(x[i] - shift), returning the sum. Range reduction x = n*ln2 + r (ln2 in two parts),
// a degree-6 polynomial for e^r (Cephes expf), 2^n built in the exponent bits. Relative error
// < 2e-7; arguments below -87.3 give 0 (so -inf, a masked logit, gives 0).

static float exp_shifted_c(float *x, long n, float shift) {
    float total = 0;
    for (long i = 0; i < n; i++) {
        float v = x[i] - shift;
        float e = v < -87.3f ? 0.0f : expf(v);
        x[i] = e;
        total += e;
    }
    return total;
}

#if AFFINITY_X86
#define EXP_POLY(FMADD, SET1, p, r) \
    p = SET1(1.9875691500e-4f); \
    p = FMADD(p, r, SET1(1.3981999507e-3f)); \
    p = FMADD(p, r, SET1(8.3334519073e-3f)); \
    p = FMADD(p, r, SET1(4.1665795894e-2f)); \
    p = FMADD(p, r, SET1(1.6666665459e-1f)); \
    p = FMADD(p, r, SET1(5.0000001201e-1f));

__attribute__((target("avx512f")))
static inline __m512 exp512(__m512 v) {
    __mmask16 under = _mm512_cmp_ps_mask(v, _mm512_set1_ps(-87.3f), _CMP_LT_OQ);
    v = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(v, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), v);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p;
    EXP_POLY(_mm512_fmadd_ps, _mm512_set1_ps, p, r)
    p = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
    __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_maskz_mov_ps((__mmask16)~under, _mm512_mul_ps(p, _mm512_castsi512_ps(bits)));
}

__attribute__((target("avx512f")))
static float exp_shifted_avx512(float *x, long n, float shift) {
    __m512 sum = _mm512_setzero_ps(), s = _mm512_set1_ps(shift);
    long i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(x + i), s));
        _mm512_storeu_ps(x + i, e);
        sum = _mm512_add_ps(sum, e);
    }
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        __m512 e = _mm512_maskz_mov_ps(m, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), s)));
        _mm512_mask_storeu_ps(x + i, m, e);
        sum = _mm512_add_ps(sum, e);
    }
    return _mm512_reduce_add_ps(sum);
}

__attribute__((target("avx2,fma")))
static inline __m256 exp256(__m256 v) {
    __m256 under = _mm256_cmp_ps(v, _mm256_set1_ps(-87.3f), _CMP_LT_OQ);
    v = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(v, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), v);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p;
    EXP_POLY(_mm256_fmadd_ps, _mm256_set1_ps, p, r)
    p = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
    __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(bits)));
}

__attribute__((target("avx2,fma")))
static float exp_shifted_avx2(float *x, long n, float shift) {
    __m256 sum = _mm256_setzero_ps(), s = _mm256_set1_ps(shift);
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), s));
        _mm256_storeu_ps(x + i, e);
        sum = _mm256_add_ps(sum, e);
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, sum);
    float total = lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] + lanes[6] + lanes[7];
    return total + exp_shifted_c(x + i, n - i, shift);
}
#endif

float affinity_exp_shifted(float *x, long n, float shift) {
#if AFFINITY_X86
    switch (affinity_simd_level()) {
    case 2: return exp_shifted_avx512(x, n, shift);
    case 1: return exp_shifted_avx2(x, n, shift);
    }
#endif
    return exp_shifted_c(x, n, shift);
}

// ------------------------------------------------------------------------------ GELU (exact, erf)
// x[i] = x[i] * Φ(x[i]) = 0.5 x (1 + erf(x / √2)), BERT's activation. The vector paths take erf
// from Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7, the formula PyTorch's vectorised erf uses),
// with exp(-z²) from the softmax's polynomial; the portable path calls libm's erff.

static void gelu_erf_c(float *x, long n) {
    for (long i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}

#define ERF_POLY(FMADD, SET1, p, t) \
    p = SET1(1.061405429f); \
    p = FMADD(p, t, SET1(-1.453152027f)); \
    p = FMADD(p, t, SET1(1.421413741f)); \
    p = FMADD(p, t, SET1(-0.284496736f)); \
    p = FMADD(p, t, SET1(0.254829592f));

#if AFFINITY_X86
__attribute__((target("avx512f")))
static inline __m512 gelu512(__m512 x) {
    __m512 z = _mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752f));
    __m512 a = _mm512_abs_ps(z);
    __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_fmadd_ps(a, _mm512_set1_ps(0.3275911f), _mm512_set1_ps(1.0f)));
    __m512 p;
    ERF_POLY(_mm512_fmadd_ps, _mm512_set1_ps, p, t)
    __m512 e = exp512(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), a), a));
    __m512 erfAbs = _mm512_fnmadd_ps(_mm512_mul_ps(p, t), e, _mm512_set1_ps(1.0f));
    // erf is odd: take the sign of z.
    __m512 signBit = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(z), _mm512_set1_epi32((int)0x80000000u)));
    __m512 erfZ = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(erfAbs), _mm512_castps_si512(signBit)));
    return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x), _mm512_add_ps(_mm512_set1_ps(1.0f), erfZ));
}

__attribute__((target("avx512f")))
static void gelu_erf_avx512(float *x, long n) {
    long i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, gelu512(_mm512_loadu_ps(x + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(x + i, m, gelu512(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

__attribute__((target("avx2,fma")))
static inline __m256 gelu256(__m256 x) {
    __m256 z = _mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752f));
    __m256 signMask = _mm256_set1_ps(-0.0f);
    __m256 a = _mm256_andnot_ps(signMask, z);
    __m256 t = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_fmadd_ps(a, _mm256_set1_ps(0.3275911f), _mm256_set1_ps(1.0f)));
    __m256 p;
    ERF_POLY(_mm256_fmadd_ps, _mm256_set1_ps, p, t)
    __m256 e = exp256(_mm256_mul_ps(_mm256_sub_ps(_mm256_setzero_ps(), a), a));
    __m256 erfAbs = _mm256_fnmadd_ps(_mm256_mul_ps(p, t), e, _mm256_set1_ps(1.0f));
    __m256 erfZ = _mm256_or_ps(erfAbs, _mm256_and_ps(z, signMask));
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), _mm256_add_ps(_mm256_set1_ps(1.0f), erfZ));
}

__attribute__((target("avx2,fma")))
static void gelu_erf_avx2(float *x, long n) {
    long i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, gelu256(_mm256_loadu_ps(x + i)));
    gelu_erf_c(x + i, n - i);
}
#endif

void affinity_gelu_erf(float *x, long n) {
#if AFFINITY_X86
    switch (affinity_simd_level()) {
    case 2: gelu_erf_avx512(x, n); return;
    case 1: gelu_erf_avx2(x, n); return;
    }
#endif
    gelu_erf_c(x, n);
}

// ------------------------------------------------------------------------------ training steps
// Elementwise loops of neural training that run every step over whole batches or tables: the
// softmax rows' max and scaling, Adam's update, ReLU's gradient. Swift compiles for the x86-64
// baseline (SSE2, and its max has NaN rules that keep the reduction scalar), so a two-tower step
// spent a third of its time in these loops; here they run at the widest width. NaN inputs:
// `affinity_max` ignores them unless every value is NaN (then -inf).

static float max_c(const float *x, long n) {
    float m = -INFINITY;
    for (long i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

static void add_scaled_c(float *y, const float *x, long n, float a) {
#pragma clang fp contract(off)
    for (long i = 0; i < n; i++) y[i] += a * x[i];
}

static void scale_c(float *x, long n, float s) {
    for (long i = 0; i < n; i++) x[i] *= s;
}

// Separate multiplies and adds (no fused multiply-add), in the order Swift evaluates the formula:
// every path gives the bits of the Swift reference, so models train exactly as before.
static void adam_c(float *w, const float *g, float *m, float *v, long n, float lr, float b1, float b2,
                   float c1, float c2, float eps, float wd) {
#pragma clang fp contract(off)
    for (long i = 0; i < n; i++) {
        m[i] = b1 * m[i] + (1 - b1) * g[i];
        v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
        float update = (m[i] / c1) / (sqrtf(v[i] / c2) + eps);
        w[i] -= lr * (update + wd * w[i]);
    }
}

static void relu_backward_c(float *d, const float *o, long n) {
    for (long i = 0; i < n; i++) d[i] = o[i] > 0 ? d[i] : 0;
}

#if AFFINITY_X86
__attribute__((target("avx512f")))
static float max_avx512(const float *x, long n) {
    __m512 m = _mm512_set1_ps(-INFINITY);
    long i = 0;
    // max_ps(a, b) returns b when either is NaN: the running max second keeps NaN out.
    for (; i + 16 <= n; i += 16) m = _mm512_max_ps(_mm512_loadu_ps(x + i), m);
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        m = _mm512_max_ps(_mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), k, x + i), m);
    }
    return _mm512_reduce_max_ps(m);
}

// add_scaled, scale and Adam at one vector width W (512 or 256 bits, L lanes), written once:
// separate multiplies and adds in the Swift reference's order, the tail through the C loop.
#define AFFINITY_TRAINING_KERNELS(W, L, TARGET)                                                                     \
    __attribute__((target(TARGET))) static void add_scaled_##W(float *y, const float *x, long n, float a) {        \
        __m##W va = _mm##W##_set1_ps(a);                                                                           \
        long i = 0;                                                                                                \
        for (; i + L <= n; i += L)                                                                                 \
            _mm##W##_storeu_ps(y + i, _mm##W##_add_ps(_mm##W##_loadu_ps(y + i), _mm##W##_mul_ps(va, _mm##W##_loadu_ps(x + i)))); \
        add_scaled_c(y + i, x + i, n - i, a);                                                                      \
    }                                                                                                              \
    __attribute__((target(TARGET))) static void scale_##W(float *x, long n, float s) {                             \
        __m##W vs = _mm##W##_set1_ps(s);                                                                           \
        long i = 0;                                                                                                \
        for (; i + L <= n; i += L) _mm##W##_storeu_ps(x + i, _mm##W##_mul_ps(_mm##W##_loadu_ps(x + i), vs));      \
        scale_c(x + i, n - i, s);                                                                                  \
    }                                                                                                              \
    __attribute__((target(TARGET))) static void adam_##W(float *w, const float *g, float *m, float *v, long n,    \
                                                         float lr, float b1, float b2, float c1, float c2,        \
                                                         float eps, float wd) {                                    \
        __m##W vb1 = _mm##W##_set1_ps(b1), vb2 = _mm##W##_set1_ps(b2);                                             \
        __m##W vb1c = _mm##W##_set1_ps(1 - b1), vb2c = _mm##W##_set1_ps(1 - b2);                                   \
        __m##W vc1 = _mm##W##_set1_ps(c1), vc2 = _mm##W##_set1_ps(c2), veps = _mm##W##_set1_ps(eps);               \
        __m##W vlr = _mm##W##_set1_ps(lr), vwd = _mm##W##_set1_ps(wd);                                             \
        long i = 0;                                                                                                \
        for (; i + L <= n; i += L) {                                                                               \
            __m##W gi = _mm##W##_loadu_ps(g + i), wi = _mm##W##_loadu_ps(w + i);                                   \
            __m##W mi = _mm##W##_add_ps(_mm##W##_mul_ps(vb1, _mm##W##_loadu_ps(m + i)), _mm##W##_mul_ps(vb1c, gi)); \
            __m##W vi = _mm##W##_add_ps(_mm##W##_mul_ps(vb2, _mm##W##_loadu_ps(v + i)),                            \
                                        _mm##W##_mul_ps(_mm##W##_mul_ps(vb2c, gi), gi));                           \
            __m##W u = _mm##W##_div_ps(_mm##W##_div_ps(mi, vc1),                                                   \
                                       _mm##W##_add_ps(_mm##W##_sqrt_ps(_mm##W##_div_ps(vi, vc2)), veps));         \
            _mm##W##_storeu_ps(m + i, mi);                                                                         \
            _mm##W##_storeu_ps(v + i, vi);                                                                         \
            _mm##W##_storeu_ps(w + i, _mm##W##_sub_ps(wi, _mm##W##_mul_ps(vlr, _mm##W##_add_ps(u, _mm##W##_mul_ps(vwd, wi))))); \
        }                                                                                                          \
        adam_c(w + i, g + i, m + i, v + i, n - i, lr, b1, b2, c1, c2, eps, wd);                                    \
    }

AFFINITY_TRAINING_KERNELS(512, 16, "avx512f")
AFFINITY_TRAINING_KERNELS(256, 8, "avx2,fma")

__attribute__((target("avx512f")))
static void relu_backward_avx512(float *d, const float *o, long n) {
    long i = 0;
    for (; i + 16 <= n; i += 16) {
        __mmask16 k = _mm512_cmp_ps_mask(_mm512_loadu_ps(o + i), _mm512_setzero_ps(), _CMP_GT_OQ);
        _mm512_storeu_ps(d + i, _mm512_maskz_mov_ps(k, _mm512_loadu_ps(d + i)));
    }
    relu_backward_c(d + i, o + i, n - i);
}

__attribute__((target("avx2,fma")))
static float max_avx2(const float *x, long n) {
    __m256 m = _mm256_set1_ps(-INFINITY);
    long i = 0;
    for (; i + 8 <= n; i += 8) m = _mm256_max_ps(_mm256_loadu_ps(x + i), m);
    float lanes[8];
    _mm256_storeu_ps(lanes, m);
    float r = max_c(lanes, 8), tail = max_c(x + i, n - i);
    return tail > r ? tail : r;
}

__attribute__((target("avx2,fma")))
static void relu_backward_avx2(float *d, const float *o, long n) {
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 keep = _mm256_cmp_ps(_mm256_loadu_ps(o + i), _mm256_setzero_ps(), _CMP_GT_OQ);
        _mm256_storeu_ps(d + i, _mm256_and_ps(keep, _mm256_loadu_ps(d + i)));
    }
    relu_backward_c(d + i, o + i, n - i);
}
#endif

float affinity_max(const float *x, long n) {
#if AFFINITY_X86
    switch (affinity_simd_level()) {
    case 2: return max_avx512(x, n);
    case 1: return max_avx2(x, n);
    }
#endif
    return max_c(x, n);
}

void affinity_add_scaled(float *y, const float *x, long n, float a) {
#if AFFINITY_X86
    switch (affinity_simd_level()) {
    case 2: add_scaled_512(y, x, n, a); return;
    case 1: add_scaled_256(y, x, n, a); return;
    }
#endif
    add_scaled_c(y, x, n, a);
}

void affinity_scale(float *x, long n, float s) {
#if AFFINITY_X86
    switch (affinity_simd_level()) {
    case 2: scale_512(x, n, s); return;
    case 1: scale_256(x, n, s); return;
    }
#endif
    scale_c(x, n, s);
}

void affinity_adam(float *w, const float *g, float *m, float *v, long n, float lr, float b1, float b2,
                   float c1, float c2, float eps, float wd) {
#if AFFINITY_X86
    switch (affinity_simd_level()) {
    case 2: adam_512(w, g, m, v, n, lr, b1, b2, c1, c2, eps, wd); return;
    case 1: adam_256(w, g, m, v, n, lr, b1, b2, c1, c2, eps, wd); return;
    }
#endif
    adam_c(w, g, m, v, n, lr, b1, b2, c1, c2, eps, wd);
}

void affinity_relu_backward(float *d, const float *o, long n) {
#if AFFINITY_X86
    switch (affinity_simd_level()) {
    case 2: relu_backward_avx512(d, o, n); return;
    case 1: relu_backward_avx2(d, o, n); return;
    }
#endif
    relu_backward_c(d, o, n);
}

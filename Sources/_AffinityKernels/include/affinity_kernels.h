// Implementation detail of AffinityLinalg: the few hot loops that need wide SIMD.
//
// The package is built for the default target (baseline SSE2 on x86-64) and must not use
// unsafeFlags, so each kernel has AVX-512 and AVX2+FMA variants compiled with
// __attribute__((target(...))) and chosen once at start-up by CPU detection, plus a portable C
// variant used elsewhere (and on ARM, where the compiler vectorises it). Swift twins in
// AffinityLinalg are the test oracles for every function here.
#ifndef AFFINITY_KERNELS_H
#define AFFINITY_KERNELS_H

#include <stdint.h>
#include <sched.h>

#ifdef __cplusplus
extern "C" {
#endif

/// 2 = AVX-512F, 1 = AVX2 + FMA, 0 = portable C. `affinity_force_level` caps it on the calling
/// thread (for tests of every path on one machine); pass -1 to restore automatic detection.
int affinity_simd_level(void);
void affinity_force_level(int level);
/// The calling thread's cap (-1 = none).
int affinity_forced_level(void);
/// The calling thread's cap on parallel kernels' threads (0 = none); Parallelism.resolve applies it.
void affinity_set_thread_cap(int cap);
int affinity_thread_cap(void);

/// The GEMM micro-kernel's SIMD level (2 AVX-512, 1 AVX2, 0 portable): with AVX-512 and no level
/// forced, the faster of the two vector kernels as measured at first use (AFFINITY_GEMM_KERNEL
/// pins it). `affinity_gemm_kernel_rate(level)`: that measurement in GFLOP/s (0 when not timed).
int affinity_gemm_kernel_level(void);
double affinity_gemm_kernel_rate(int level);
/// Register tile of the GEMM micro-kernel in use (rows x columns).
int affinity_gemm_mr(void);
int affinity_gemm_nr(void);

/// Single-threaded row-major SGEMM: C = alpha * op(A) * op(B) + beta * C, where op(A) is M x K
/// (A stored K x M when transA), op(B) is K x N (B stored N x K when transB). Blocked for cache
/// with packed panels (Goto & van de Geijn 2008); packing buffers are thread-local and reused.
void affinity_sgemm(int transA, int transB, long M, long N, long K, float alpha,
                    const float *A, long lda, const float *B, long ldb, float beta, float *C, long ldc);

/// op(B) packed once for several `affinity_sgemm_packed` calls (the row blocks of a parallel
/// SGEMM share it instead of each packing all of B again). The packing is cut into
/// `affinity_sgemm_slab_count(N, K)` independent slabs (one per NB-column x KC block), which may be
/// packed in parallel into a buffer of `affinity_sgemm_packed_b_floats(N, K)` floats, 64-byte
/// aligned. The layout depends on the micro-kernel in use: pack and multiply under one SIMD level.
long affinity_sgemm_packed_b_floats(long N, long K);
long affinity_sgemm_slab_count(long N, long K);
void affinity_sgemm_pack_b_slab(int transB, const float *B, long ldb, long N, long K, long slab, float *packed);
/// The calling thread's reusable 64-byte-aligned buffer of at least `floats` floats (grown on demand,
/// kept for the thread's life); for the packed B of one SGEMM at a time.
float *affinity_sgemm_shared_buffer(long floats);
/// `affinity_sgemm` with op(B) already packed by `affinity_sgemm_pack_b_slab` for these N and K.
void affinity_sgemm_packed(int transA, long M, long N, long K, float alpha, const float *A, long lda,
                           const float *packedB, float beta, float *C, long ldc);

/// Dot product, squared Euclidean distance of two n-vectors.
float affinity_dot(const float *a, const float *b, long n);
/// x[i] = exp(x[i] - shift) in place; returns the sum (softmax). Relative error < 2e-7, 0 below -87.3.
float affinity_exp_shifted(float *x, long n, float shift);
/// x[i] = x[i] * Φ(x[i]) in place (GELU with erf, not the tanh approximation); |error| < 2e-7 |x|.
void affinity_gelu_erf(float *x, long n);
float affinity_l2sq(const float *a, const float *b, long n);

/// out[r] = dot(q, X[r*dim ..< (r+1)*dim]) for r in 0..<rows (one query against a block of rows).
void affinity_dot_rows(const float *q, const float *X, long rows, long dim, float *out);
/// out[r] = |q - X_r|^2.
void affinity_l2sq_rows(const float *q, const float *X, long rows, long dim, float *out);

/// Offers scores[0..<n] with ids id0..<id0+n to a bounded top-k min-heap (`heap_scores`,
/// `heap_ids`, `*count` entries, capacity k; root = worst kept). Ids must arrive in ascending
/// order across calls, so a score equal to the current worst never enters (it would lose the
/// smaller-id tie-break). Returns the number of insertions.
long affinity_topk_push(const float *scores, long n, int64_t id0, float *heap_scores, int64_t *heap_ids,
                        long k, long *count);

/// Offers scores[0..<n] (ids id0..<id0+n) not marked in `excluded` (NULL: none) to the same heap
/// as affinity_topk_push, in any id order, with TopKSelector's rules: ties go to the smaller id and
/// NaN ranks after every number (it enters only while the heap is not full). Returns insertions.
long affinity_topk_select(const float *scores, const uint8_t *excluded, long n, int64_t id0,
                          float *heap_scores, int64_t *heap_ids, long k, long *count);

/// Sorts a heap of `n` entries as left by affinity_topk_select/_push into best-first order, in
/// place (heap sort: the worst root goes to the back, n-1 times).
void affinity_topk_sort(float *heap_scores, int64_t *heap_ids, long n);

/// out[j] += Σ_r weights[r] · B[rows[r]·width + j] for j < width, r < count (weights NULL: all 1),
/// rows added one after another with separate multiply and add: bit for bit the plain loop.
void affinity_row_sum(const float *B, long width, const int32_t *rows, const float *weights, long count, float *out);

/// out[i] = score of row ids[i] of X (rows of length dim) against q, for i < n: the inner product,
/// or minus the squared distance when `negated_l2` is non-zero. Prefetches the next rows while
/// scoring (graph search reads rows in random order, so it is bound by memory latency).
void affinity_scores_by_id(int negated_l2, const float *q, const float *X, long dim, const int32_t *ids, long n, float *out);

/// Product-quantisation table scan: out[i] = bias + Σ_j table[j·256 + codes[i·m + j]] for i < n,
/// with m sub-quantiser codes of one byte per vector (asymmetric distance computation, Jégou et al. 2011).
/// The AVX-512 path gathers 4 bytes per code: `codes` must stay readable for 3 bytes past its end.
void affinity_pq_scan(const uint8_t *codes, long n, long m, const float *table, float bias, float *out);

/// One BPR stochastic-gradient step on user vector w, positive item h_i and negative item h_j
/// (length f): x = bias_diff + w·(h_i − h_j), z = σ(−x), then
/// w += lr(z(h_i − h_j) − reg·w), h_i += lr(z·w − reg·h_i), h_j += lr(−z·w − reg·h_j), all with the
/// old w. Returns z, for the caller's bias update. The three vectors must not overlap.
float affinity_bpr_step(float *w, float *hi, float *hj, long f, float bias_diff, float lr, float reg);

/// One skip-gram-with-negative-sampling step for one context word's input vector w (length d):
/// for each target t in order (targets[0] the true word, label 1; the rest sampled negatives,
/// label 0), g = (label − σ(w·o_t))·alpha with o_t = out + targets[t]·d and σ cut at ±6 as
/// word2vec's table, e += g·o_t, o_t += g·w; then w += e. `e` is scratch of d floats; w, e and the
/// rows of `out` must not overlap, and every target must be a row of `out` (not checked). A target
/// repeated sees its own earlier update.
void affinity_sgns_step(float *w, float *out, const int32_t *targets, long count, long d, float alpha, float *e);

/// Largest of x[0..<n], NaN ignored (-inf when n == 0 or all are NaN).
float affinity_max(const float *x, long n);
/// y[i] += a * x[i].
void affinity_add_scaled(float *y, const float *x, long n, float a);
/// x[i] *= s.
void affinity_scale(float *x, long n, float s);
/// One Adam step over n weights: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g²;
/// w -= lr ((m / c1) / (sqrt(v / c2) + eps) + wd w), c1, c2 the bias corrections.
void affinity_adam(float *w, const float *g, float *m, float *v, long n, float lr, float b1, float b2,
                   float c1, float c2, float eps, float wd);
/// ReLU's gradient in place: d[i] = o[i] > 0 ? d[i] : 0 (o the layer's output).
void affinity_relu_backward(float *d, const float *o, long n);

/// A one-byte spin lock, inlined into Swift: HNSW's per-node locks (a pthread mutex's lock and
/// unlock were 9 % of a two-thread build). Mostly held to copy a link list; pruning a full list
/// holds it for up to 2M + 1 scores, a sort and the heuristic's pairwise scores. Yields after a few thousand spins, should the
/// holder have lost its core.
static inline void affinity_spin_lock(uint8_t *lock) {
    while (__atomic_exchange_n(lock, 1, __ATOMIC_ACQUIRE)) {
        unsigned spins = 0;
        while (__atomic_load_n(lock, __ATOMIC_RELAXED)) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
            if (++spins == 4096) { sched_yield(); spins = 0; }
        }
    }
}
static inline void affinity_spin_unlock(uint8_t *lock) { __atomic_store_n(lock, 0, __ATOMIC_RELEASE); }

#ifdef __cplusplus
}
#endif
#endif

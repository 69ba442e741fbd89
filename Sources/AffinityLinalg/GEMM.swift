import _AffinityKernels

/// Single-precision matrix multiplication C = alpha·op(A)·op(B) + beta·C on row-major storage.
///
/// The work is split into row blocks (or column blocks when C has few rows) across at most
/// `threads` threads (0 = all cores; pass 1 from code that is already parallel). Each block runs
/// the blocked, packed C kernel with the widest SIMD micro-kernel the CPU offers; row blocks share
/// one packed copy of op(B) (up to 64 MB of it).
/// - Parameters: `m`, `n`, `k`: op(A) is m x k, op(B) is k x n, C is m x n. `transposeA`: A is
///   stored k x m (leading dimension `lda`). `transposeB`: B is stored n x k.
public func sgemm(transposeA: Bool = false, transposeB: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
                  a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                  beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int, threads: Int = 0) {
    guard m > 0 && n > 0 else { return }
    let workers = Parallelism.resolve(threads)
    let flops = 2.0 * Double(m) * Double(n) * Double(k)
    let ta: Int32 = transposeA ? 1 : 0, tb: Int32 = transposeB ? 1 : 0
    if workers <= 1 || flops < 4e6 {
        affinity_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
        return
    }
    let aa = UncheckedPointer(a), bb = UncheckedPointer(b), cc = UncheckedMutablePointer(c)
    let mr = Int(affinity_gemm_mr()), nr = Int(affinity_gemm_nr())
    if m >= workers * mr * 4 {
        // Row blocks of whole micro-panels, their panel counts differing by at most one (264-row
        // blocks of a 1024-row product left one worker 528 rows and the other 496); two per
        // worker once blocks keep 512+ rows (a slow core then hands over half its share), one
        // below that (each block packs its own A, per KC step: 1024³ on 2 threads, the same blocks
        // driven from a throwaway C harness, ran 360 GFLOP/s with four blocks and 365-370 with two,
        // best of 60).
        let blocks = workers * (m >= workers * 1024 ? 2 : 1)
        let rows = GEMMBlocks(count: m, tile: mr, blocks: blocks)
        let packedFloats = affinity_sgemm_packed_b_floats(n, k)
        // op(B) packed once, slabs in parallel, for all row blocks: each block packing all of B
        // again was 8 % of a 4096³ product on 2 threads (perf), and it grows with the blocks.
        let shared = k > 0 && alpha != 0 && packedFloats <= sharedPackedBLimit
        let packed = shared ? UncheckedMutablePointer(affinity_sgemm_shared_buffer(packedFloats)) : nil
        if let packed {
            Parallelism.forEachChunk(affinity_sgemm_slab_count(n, k), threads: workers) { slab in
                affinity_sgemm_pack_b_slab(tb, bb.base, ldb, n, k, slab, packed.base)
            }
        }
        Parallelism.forEachChunk(rows.blocks, threads: workers) { block in
            let r = rows[block]
            let a = aa.base + (transposeA ? r.lowerBound : r.lowerBound * lda), c = cc.base + r.lowerBound * ldc
            if let packed {
                affinity_sgemm_packed(ta, r.count, n, k, alpha, a, lda, packed.base, beta, c, ldc)
            } else {
                affinity_sgemm(ta, tb, r.count, n, k, alpha, a, lda, bb.base, ldb, beta, c, ldc)
            }
        }
    } else {
        let cols = GEMMBlocks(count: n, tile: nr, blocks: workers)
        Parallelism.forEachChunk(cols.blocks, threads: workers) { block in
            let r = cols[block]
            let bOffset = transposeB ? r.lowerBound * ldb : r.lowerBound
            affinity_sgemm(ta, tb, m, r.count, k, alpha, aa.base, lda, bb.base + bOffset, ldb, beta, cc.base + r.lowerBound, ldc)
        }
    }
}

/// `count` rows (or columns) cut into `blocks` ranges of whole `tile`-wide micro-panels whose
/// panel counts differ by at most one; only the last range ends on a partial panel.
struct GEMMBlocks {
    let count: Int, tile: Int, blocks: Int
    private let panels: Int

    init(count: Int, tile: Int, blocks: Int) {
        self.count = count
        self.tile = tile
        panels = (count + tile - 1) / tile
        self.blocks = max(1, min(blocks, panels))
    }

    subscript(block: Int) -> Range<Int> {
        let start = block * panels / blocks * tile
        let end = min(count, (block + 1) * panels / blocks * tile)
        return start..<end
    }
}

/// Largest shared packed B (floats, 64 MB): the calling thread keeps that buffer for later calls;
/// a larger op(B) is packed by each row block on its own, as a single-threaded call does.
private let sharedPackedBLimit = 1 << 24

/// Plain triple-loop GEMM with Double accumulation: the oracle of `sgemm`.
public func referenceSGEMM(transposeA: Bool = false, transposeB: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
                           a: [Float], lda: Int, b: [Float], ldb: Int, beta: Float = 0, c: inout [Float], ldc: Int) {
    for i in 0..<m {
        for j in 0..<n {
            var s = 0.0
            for p in 0..<k {
                let av = transposeA ? a[p * lda + i] : a[i * lda + p]
                let bv = transposeB ? b[j * ldb + p] : b[p * ldb + j]
                s += Double(av) * Double(bv)
            }
            let old = beta == 0 ? 0 : Double(beta) * Double(c[i * ldc + j])
            c[i * ldc + j] = Float(Double(alpha) * s + old)
        }
    }
}

extension Matrix {
    /// op(self) · op(other), computed with `sgemm`.
    public func multiplied(by other: Matrix, transposeSelf: Bool = false, transposeOther: Bool = false, threads: Int = 0) -> Matrix {
        let m = transposeSelf ? columns : rows, k = transposeSelf ? rows : columns
        let k2 = transposeOther ? other.columns : other.rows, n = transposeOther ? other.rows : other.columns
        precondition(k == k2, "inner dimensions differ: \(k) vs \(k2)")
        var out = Matrix(rows: m, columns: n)
        values.withUnsafeBufferPointer { a in
            other.values.withUnsafeBufferPointer { b in
                out.values.withUnsafeMutableBufferPointer { c in
                    sgemm(transposeA: transposeSelf, transposeB: transposeOther, m: m, n: n, k: k,
                          a: a.baseAddress!, lda: columns, b: b.baseAddress!, ldb: other.columns,
                          c: c.baseAddress!, ldc: n, threads: threads)
                }
            }
        }
        return out
    }
}

/// Raw pointers that cross into parallel regions; each task touches only its own block.
public struct UncheckedPointer: @unchecked Sendable {
    public let base: UnsafePointer<Float>
    public init(_ base: UnsafePointer<Float>) { self.base = base }
}

public struct UncheckedMutablePointer: @unchecked Sendable {
    public let base: UnsafeMutablePointer<Float>
    public init(_ base: UnsafeMutablePointer<Float>) { self.base = base }
}

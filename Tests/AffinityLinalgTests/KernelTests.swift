import Foundation
import Testing
@testable import AffinityLinalg

/// SIMD paths available on this machine (portable always; AVX2 and AVX-512 when the CPU has them).
let simdLevels: [Int] = {
    switch Kernels.simdLevel {
    case "avx512": return [0, 1, 2]
    case "avx2": return [0, 1]
    default: return [0]
    }
}()

func randomVector(_ n: Int, seed: UInt64) -> [Float] {
    var g = SeededGenerator(seed: seed)
    return (0..<n).map { _ in Float(g.nextGaussian()) }
}

func close(_ a: Float, _ b: Float, relative: Float = 1e-4, absolute: Float = 1e-4) -> Bool {
    abs(a - b) <= absolute + relative * max(abs(a), abs(b))
}

/// Every test that changes the SIMD path runs in this serialized suite.
@Suite(.serialized) struct SIMDPathTests {
    /// The vector top-k pass at every SIMD level against the full sort: ties (few distinct values),
    /// NaN (ranks last, enters only while the heap has room), exclusions, and single pushes with
    /// indices in any order before a whole vector.
    @Test func topKSelectionMatchesTheSortAtEveryLevel() {
        for level in simdLevels {
            Kernels.forceSIMDLevel(level)
            defer { Kernels.forceSIMDLevel(-1) }
            for seed in 0..<300 {
                var g = SeededGenerator(seed: UInt64(seed) + 77)
                let n = [1, 16, 17, 40, 100, 333][seed % 6]
                let scores = (0..<n).map { _ in g.next(below: 17) == 0 ? Float.nan : Float(g.next(below: 7)) }
                let excluded = Set((0..<n).filter { _ in g.next(below: 5) == 0 })
                let k = [1, 3, 10, n, n + 2][seed % 5]
                var selector = TopKSelector(k: k)
                let mask = (0..<n).map { excluded.contains($0) }
                scores.withUnsafeBufferPointer { s in mask.withUnsafeBufferPointer { selector.push(scores: s, excluded: $0) } }
                #expect(selector.sortedResults().map(\.index) == referenceTopK(scores, k: k, excluded: excluded).map(\.index),
                        "level \(level) seed \(seed)")
                // Single pushes first (descending indices), then the vector: the same as one sort of all.
                selector.reset(k: k)
                let extra = (0..<5).map { _ in Float(g.next(below: 7)) }
                for (j, s) in extra.enumerated().reversed() { selector.push(index: n + j, score: s) }
                scores.withUnsafeBufferPointer { selector.push(scores: $0) }
                #expect(selector.sortedResults().map(\.index) == referenceTopK(scores + extra, k: k).map(\.index), "level \(level) seed \(seed) mixed")
            }
        }
    }

    /// EASE's history score (`Kernels.addRows` through `SparseMatrix.multiplyRow`) equals the plain
    /// loop bit for bit at every level, for widths around the vector lengths and weighted rows.
    @Test(arguments: [1, 7, 8, 15, 16, 17, 100, 515])
    func rowSumsMatchThePlainLoopBitForBit(width: Int) throws {
        for level in simdLevels {
            Kernels.forceSIMDLevel(level)
            defer { Kernels.forceSIMDLevel(-1) }
            var g = SeededGenerator(seed: UInt64(width))
            let inner = 23
            let b = randomVector(inner * width, seed: UInt64(width) + 5)
            var rowPointers = [0], columns: [Int32] = [], values: [Float] = []
            for r in 0..<6 {
                let cols = Array(Set((0..<(r * 3)).map { _ in g.next(below: inner) })).sorted()
                columns += cols.map { Int32($0) }
                values += cols.map { _ in r % 2 == 0 ? 1 : Float(g.nextGaussian()) }
                rowPointers.append(columns.count)
            }
            let x = try SparseMatrix(rowCount: 6, columnCount: inner, rowPointers: rowPointers, columns: columns, values: values)
            var fast = [Float](repeating: .nan, count: width), plain = [Float](repeating: .nan, count: width)
            for r in 0..<6 {
                b.withUnsafeBufferPointer { bp in
                    x.multiplyRow(r, by: bp.baseAddress!, columns: width, into: &fast)
                    x.referenceMultiplyRow(r, by: bp.baseAddress!, columns: width, into: &plain)
                }
                #expect(fast.map(\.bitPattern) == plain.map(\.bitPattern), "level \(level) width \(width) row \(r)")
            }
        }
    }

    @Test(arguments: [1, 2, 7, 15, 16, 17, 31, 33, 64, 100, 1000])
    func vectorKernelsMatchReference(n: Int) {
        for level in simdLevels {
            Kernels.forceSIMDLevel(level)
            defer { Kernels.forceSIMDLevel(-1) }
            let a = randomVector(n, seed: UInt64(n)), b = randomVector(n, seed: UInt64(n) + 99)
            #expect(close(Kernels.dot(a, b), Kernels.referenceDot(a, b)), "level \(level) n \(n)")
            #expect(close(Kernels.squaredL2(a, b), Kernels.referenceSquaredL2(a, b)), "level \(level) n \(n)")
            // Rows variant on a block of 5 rows.
            let rows = (0..<5).flatMap { randomVector(n, seed: UInt64($0) + 1000) }
            var out = [Float](repeating: 0, count: 5)
            a.withUnsafeBufferPointer { q in rows.withUnsafeBufferPointer { x in
                Kernels.dotRows(query: q.baseAddress!, rows: x.baseAddress!, rowCount: 5, dimension: n, into: &out)
            } }
            for r in 0..<5 { #expect(close(out[r], Kernels.referenceDot(a, Array(rows[(r * n)..<((r + 1) * n)])))) }
        }
    }

    /// The softmax exponential on every path, on awkward lengths, with −∞ (masked) entries and
    /// arguments across the float range.
    @Test(arguments: [1, 7, 8, 15, 16, 17, 33, 1000])
    func expShiftedMatchesReference(n: Int) {
        for level in simdLevels {
            Kernels.forceSIMDLevel(level)
            defer { Kernels.forceSIMDLevel(-1) }
            var x = randomVector(n, seed: UInt64(n)).enumerated().map { i, v in i % 5 == 3 ? -Float.infinity : v * 30 - Float(i % 3) * 40 }
            var reference = x
            let shift = x.max()!
            let sum = x.withUnsafeMutableBufferPointer { Kernels.expShifted($0.baseAddress!, count: n, shift: shift) }
            let want = Kernels.referenceExpShifted(&reference, shift: shift)
            #expect(close(sum, want, relative: 1e-5), "level \(level) n \(n): \(sum) vs \(want)")
            for i in 0..<n {
                #expect(close(x[i], reference[i], relative: 1e-5, absolute: 1e-30), "level \(level) n \(n) i \(i): \(x[i]) vs \(reference[i])")
            }
        }
    }

    /// The training-step kernels on every path and awkward lengths, bit for bit against their plain
    /// twins (the same operations in the same order: training results do not depend on the path).
    @Test(arguments: [1, 7, 8, 15, 16, 17, 33, 1000])
    func trainingStepKernelsMatchReferenceBitForBit(n: Int) {
        for level in simdLevels {
            Kernels.forceSIMDLevel(level)
            defer { Kernels.forceSIMDLevel(-1) }
            // Maximum, NaN ignored; a NaN in the vector part and in the tail.
            var x = randomVector(n, seed: UInt64(n) &+ 11)
            x[n / 2] = .nan
            if n > 16 { x[n - 1] = .nan }
            let m = x.withUnsafeBufferPointer { Kernels.maximum($0.baseAddress!, count: n) }
            #expect(m == Kernels.referenceMaximum(x), "level \(level) n \(n): max \(m)")
            let allNaN = [Float](repeating: .nan, count: n)
            #expect(allNaN.withUnsafeBufferPointer { Kernels.maximum($0.baseAddress!, count: n) } == -.infinity)
            // y += a·x and x *= s.
            let a = randomVector(n, seed: UInt64(n) &+ 12), b = randomVector(n, seed: UInt64(n) &+ 13)
            var y = a
            b.withUnsafeBufferPointer { bp in y.withUnsafeMutableBufferPointer { Kernels.addScaled($0.baseAddress!, bp.baseAddress!, count: n, by: -0.37) } }
            var ry = a
            Kernels.referenceAddScaled(&ry, b, by: -0.37)
            #expect(y == ry, "level \(level) n \(n): addScaled")
            var z = a, rz = a
            z.withUnsafeMutableBufferPointer { Kernels.scale($0.baseAddress!, count: n, by: 1.7) }
            Kernels.referenceScale(&rz, by: 1.7)
            #expect(z == rz, "level \(level) n \(n): scale")
            // Adam, three steps with weight decay.
            var w = a, m1 = [Float](repeating: 0, count: n), v1 = m1
            var rw = a, rm = m1, rv = m1
            for t in 1...3 {
                let g = randomVector(n, seed: UInt64(n * 10 + t))
                let step = Kernels.AdamStep(learningRate: 0.01, beta1: 0.9, beta2: 0.999, correction1: 1 - pow(0.9, Float(t)),
                                            correction2: 1 - pow(0.999, Float(t)), epsilon: 1e-8, weightDecay: 0.05)
                w.withUnsafeMutableBufferPointer { wp in m1.withUnsafeMutableBufferPointer { mp in v1.withUnsafeMutableBufferPointer { vp in
                    g.withUnsafeBufferPointer { gp in
                        Kernels.adam(weights: wp.baseAddress!, gradients: gp.baseAddress!, m: mp.baseAddress!, v: vp.baseAddress!, count: n, step: step)
                    }
                } } }
                Kernels.referenceAdam(weights: &rw, gradients: g, m: &rm, v: &rv, step: step)
            }
            #expect(w == rw && m1 == rm && v1 == rv, "level \(level) n \(n): adam")
            // ReLU's gradient.
            var d = b
            a.withUnsafeBufferPointer { o in d.withUnsafeMutableBufferPointer { Kernels.reluBackward($0.baseAddress!, output: o.baseAddress!, count: n) } }
            var rd = b
            Kernels.referenceReluBackward(&rd, output: a)
            #expect(d == rd, "level \(level) n \(n): relu")
        }
    }

    /// Exact (erf) GELU on every path, on awkward lengths, across the range where erf bends and
    /// out to where it saturates.
    @Test(arguments: [1, 7, 8, 15, 16, 17, 33, 1000])
    func geluErfMatchesReference(n: Int) {
        for level in simdLevels {
            Kernels.forceSIMDLevel(level)
            defer { Kernels.forceSIMDLevel(-1) }
            var x = randomVector(n, seed: UInt64(n) &+ 7).enumerated().map { i, v in (v * 2 - 1) * (i % 4 == 0 ? 12 : 4) }
            let input = x
            var reference = x
            x.withUnsafeMutableBufferPointer { Kernels.geluErf($0.baseAddress!, count: n) }
            Kernels.referenceGELUErf(&reference)
            // erf's absolute error (< 1.5e-7, plus rounding of 1 + erf) scaled by x/2.
            for i in 0..<n {
                #expect(abs(x[i] - reference[i]) <= 2e-7 * max(1, abs(input[i])), "level \(level) n \(n) i \(i): \(x[i]) vs \(reference[i])")
            }
        }
    }

    @Test func sgemmMatchesReferenceOnAwkwardShapes() {
        let shapes: [(Int, Int, Int)] = [(1, 1, 1), (1, 17, 3), (15, 17, 13), (17, 15, 1000), (13, 33, 31), (25, 70, 300), (100, 1, 17), (3, 200, 5)]
        for level in simdLevels {
            Kernels.forceSIMDLevel(level)
            defer { Kernels.forceSIMDLevel(-1) }
            for (shapeIndex, (m, n, k)) in shapes.enumerated() {
                for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                    for (alpha, beta) in [(Float(1), Float(0)), (Float(-0.5), Float(2))] {
                        // Leading dimensions larger than the logical shape: sub-matrix views.
                        let lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 2, ldc = n + 1
                        let a = randomVector((ta ? k : m) * lda, seed: UInt64(shapeIndex * 10 + 1))
                        let b = randomVector((tb ? n : k) * ldb, seed: UInt64(shapeIndex * 10 + 2))
                        let c0 = randomVector(m * ldc, seed: UInt64(shapeIndex * 10 + 3))
                        var expected = c0, got = c0
                        referenceSGEMM(transposeA: ta, transposeB: tb, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: &expected, ldc: ldc)
                        a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in got.withUnsafeMutableBufferPointer { cp in
                            sgemm(transposeA: ta, transposeB: tb, m: m, n: n, k: k, alpha: alpha, a: ap.baseAddress!, lda: lda,
                                  b: bp.baseAddress!, ldb: ldb, beta: beta, c: cp.baseAddress!, ldc: ldc, threads: 2)
                        } } }
                        let tolerance = 1e-5 * Float(k).squareRoot() * 10
                        var worst: Float = 0
                        for i in 0..<m { for j in 0..<n { worst = max(worst, abs(got[i * ldc + j] - expected[i * ldc + j])) } }
                        #expect(worst <= tolerance, "level \(level) \(m)x\(n)x\(k) tA \(ta) tB \(tb) alpha \(alpha) beta \(beta): error \(worst)")
                        // Padding columns beyond n are untouched.
                        for i in 0..<m { #expect(got[i * ldc + n] == c0[i * ldc + n]) }
                    }
                }
            }
        }
    }

    /// Shapes large enough for the parallel row blocks, which share one packed op(B) (several
    /// NB-column blocks and KC slabs, edges in both), against the reference: every transposition
    /// on every SIMD path.
    @Test func parallelSGEMMWithSharedPackedBMatchesReference() {
        let (m, n, k) = (100, 1000, 450)
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let lda = (ta ? m : k) + 1, ldb = (tb ? k : n) + 3, ldc = n + 2
            let a = randomVector((ta ? k : m) * lda, seed: 71), b = randomVector((tb ? n : k) * ldb, seed: 72)
            let c0 = randomVector(m * ldc, seed: 73)
            var expected = c0
            referenceSGEMM(transposeA: ta, transposeB: tb, m: m, n: n, k: k, alpha: 0.75, a: a, lda: lda, b: b, ldb: ldb,
                           beta: -1, c: &expected, ldc: ldc)
            for level in simdLevels {
                Kernels.forceSIMDLevel(level)
                defer { Kernels.forceSIMDLevel(-1) }
                var got = c0
                a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in got.withUnsafeMutableBufferPointer { cp in
                    sgemm(transposeA: ta, transposeB: tb, m: m, n: n, k: k, alpha: 0.75, a: ap.baseAddress!, lda: lda,
                          b: bp.baseAddress!, ldb: ldb, beta: -1, c: cp.baseAddress!, ldc: ldc, threads: 2)
                } } }
                var worst: Float = 0
                for i in 0..<m { for j in 0..<n { worst = max(worst, abs(got[i * ldc + j] - expected[i * ldc + j])) } }
                #expect(worst <= 1e-4 * Float(k).squareRoot(), "level \(level) tA \(ta) tB \(tb): error \(worst)")
                for i in 0..<m { for j in n..<ldc { #expect(got[i * ldc + j] == c0[i * ldc + j]) } }
            }
        }
    }

    /// The thread count never changes a product's bits (row blocks sharing a packed B, column
    /// blocks): what lets models train the same on one thread and several.
    @Test func sgemmGivesTheSameBitsOnOneAndTwoThreads() {
        for (m, n, k) in [(200, 600, 500), (30, 2000, 500)] {   // row blocks; column blocks (few rows)
            for (ta, tb) in [(false, false), (true, true)] {
                let a = randomVector(m * k, seed: 91), b = randomVector(k * n, seed: 92), c0 = randomVector(m * n, seed: 93)
                var out: [[Float]] = []
                for threads in [1, 2] {
                    var c = c0
                    a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
                        sgemm(transposeA: ta, transposeB: tb, m: m, n: n, k: k, alpha: 0.7, a: ap.baseAddress!, lda: ta ? m : k,
                              b: bp.baseAddress!, ldb: tb ? k : n, beta: 0.3, c: cp.baseAddress!, ldc: n, threads: threads)
                    } } }
                    out.append(c)
                }
                #expect(out[0] == out[1], "\(m)x\(n)x\(k) tA \(ta) tB \(tb)")
            }
        }
    }

    /// Parallel SGEMM's blocks: contiguous, covering every row, cut at micro-panel boundaries,
    /// panel counts differing by at most one (the old rounding up gave 264, 264, 264, 232).
    @Test func gemmBlocksAreBalancedWholePanels() {
        for (count, tile, blocks) in [(1024, 12, 4), (1024, 12, 2), (1000, 32, 3), (5, 12, 4), (96, 12, 8), (97, 6, 2)] {
            let split = GEMMBlocks(count: count, tile: tile, blocks: blocks)
            let ranges = (0..<split.blocks).map { split[$0] }
            #expect(ranges.first?.lowerBound == 0 && ranges.last?.upperBound == count, "\(count) \(tile) \(blocks)")
            #expect(zip(ranges, ranges.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })
            #expect(ranges.allSatisfy { !$0.isEmpty && $0.lowerBound % tile == 0 })
            let panels = ranges.map { ($0.count + tile - 1) / tile }
            #expect(panels.max()! - panels.min()! <= 1, "\(count) \(tile) \(blocks): \(panels)")
        }
        #expect(GEMMBlocks(count: 5, tile: 12, blocks: 4).blocks == 1)
        #expect((0..<4).map { GEMMBlocks(count: 1024, tile: 12, blocks: 4)[$0].count } == [252, 264, 252, 256])
    }

    /// The 256- and 512-bit SGEMM micro-kernels give the same bits (same k order and blocking,
    /// edges finished with the same fused multiply-add), so choosing between them by speed
    /// never changes a result. The shapes put elements in full 6 x 16 tiles that are edges of the
    /// 12 x 32 tiling (10 x 20, 18 x 48); beta 0.3 (not a power of two: its product rounds); one
    /// and two KC blocks.
    @Test func sgemmKernelsAgreeBitForBit() {
        guard simdLevels.contains(2) else { print("skipped: no AVX-512 on this machine"); return }
        for (m, n, k) in [(10, 20, 7), (18, 48, 400), (100, 47, 390), (7, 500, 33)] {
            for (ta, tb) in [(false, false), (true, true), (false, true)] {
                for beta: Float in [0, 0.3] {
                    let a = randomVector(m * k, seed: 81), b = randomVector(k * n, seed: 82), c0 = randomVector(m * n, seed: 83)
                    var out: [[Float]] = []
                    for level in [1, 2] {
                        Kernels.forceSIMDLevel(level)
                        defer { Kernels.forceSIMDLevel(-1) }
                        var c = c0
                        a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
                            sgemm(transposeA: ta, transposeB: tb, m: m, n: n, k: k, alpha: 1.25, a: ap.baseAddress!, lda: ta ? m : k,
                                  b: bp.baseAddress!, ldb: tb ? k : n, beta: beta, c: cp.baseAddress!, ldc: n, threads: 1)
                        } } }
                        out.append(c)
                    }
                    #expect(out[0] == out[1], "\(m)x\(n)x\(k) tA \(ta) tB \(tb) beta \(beta)")
                }
            }
        }
        #expect(["avx512", "avx2"].contains(Kernels.gemmKernel.path))
    }

    @Test func exactSearchMatchesReferenceOnEveryPath() {
        let base = Matrix.random(rows: 1500, columns: 17, seed: 5), queries = Matrix.random(rows: 250, columns: 17, seed: 6)
        for level in simdLevels {
            Kernels.forceSIMDLevel(level)
            defer { Kernels.forceSIMDLevel(-1) }
            for metric in Metric.allCases {
                let got = ExactSearch.search(queries: queries, base: base, k: 10, metric: metric, threads: 2)
                let want = ExactSearch.referenceSearch(queries: queries, base: base, k: 10, metric: metric)
                var mismatches = 0
                for q in 0..<queries.rows {
                    // Ids must agree except where float rounding reorders near-equal scores.
                    if got[q].map(\.index) != want[q].map(\.index) {
                        let agree = zip(got[q], want[q]).allSatisfy { close($0.score, $1.score, relative: 1e-4, absolute: 1e-4) }
                        if !agree { mismatches += 1 }
                    }
                    #expect(zip(got[q], want[q]).allSatisfy { close($0.score, $1.score, relative: 1e-4, absolute: 1e-3) }, "level \(level) \(metric) query \(q)")
                }
                #expect(mismatches == 0, "level \(level) \(metric)")
            }
        }
    }
}

@Suite struct ExactSearchTests {
    @Test func tiesGoToTheSmallerIdAndResultsAreNeverPadded() {
        // Integer vectors: many exact ties.
        var g = SeededGenerator(seed: 3)
        let base = Matrix(rows: 1300, columns: 4, values: (0..<5200).map { _ in Float(g.next(below: 3)) })
        let queries = Matrix(rows: 30, columns: 4, values: (0..<120).map { _ in Float(g.next(below: 3)) })
        for metric in [Metric.innerProduct, .l2] {
            let got = ExactSearch.search(queries: queries, base: base, k: 25, metric: metric, threads: 1)
            let want = ExactSearch.referenceSearch(queries: queries, base: base, k: 25, metric: metric)
            #expect(got.map { $0.map(\.index) } == want.map { $0.map(\.index) }, "\(metric)")
        }
        let small = Matrix.random(rows: 3, columns: 4, seed: 1)
        let all = ExactSearch.search(queries: queries, base: small, k: 10, metric: .innerProduct)
        #expect(all.allSatisfy { $0.count == 3 })
    }
}

@Suite struct CholeskyTests {
    /// A random SPD matrix BᵀB + shift·I.
    func spd(_ n: Int, seed: UInt64, shift: Float = 1) -> Matrix {
        let b = Matrix.random(rows: n + 5, columns: n, seed: seed)
        var a = b.multiplied(by: b, transposeSelf: true)
        a.addToDiagonal(shift)
        return a
    }

    @Test(arguments: [1, 2, 15, 17, 64, 65, 130, 200])
    func factorMatchesReference(n: Int) throws {
        let a = spd(n, seed: UInt64(n))
        let l = try Cholesky(a, threads: 2).lower
        let ref = ReferenceLinalg.cholesky(a)!
        var worst = 0.0
        for i in 0..<n { for j in 0..<n { worst = max(worst, abs(Double(l[i, j]) - ref[i * n + j])) } }
        #expect(worst < 1e-3 * Double(n).squareRoot(), "n \(n): \(worst)")
    }

    @Test(arguments: [3, 17, 100, 150])
    func inverseMatchesGaussJordan(n: Int) throws {
        let a = spd(n, seed: UInt64(n) + 7, shift: Float(n))
        let inv = try a.inverseSPD(threads: 2)
        let ref = ReferenceLinalg.inverse(a)!
        var worst = 0.0, scale = 0.0
        for i in 0..<(n * n) { worst = max(worst, abs(Double(inv.values[i]) - ref[i])); scale = max(scale, abs(ref[i])) }
        #expect(worst <= 1e-4 * scale, "n \(n): \(worst) of \(scale)")
    }

    @Test func largeInverseTimesMatrixIsIdentity() throws {
        // 600 exercises every level of the recursion, including the recursive rank update.
        let n = 600
        var a = spd(n, seed: 11)
        a.addToDiagonal(50)
        let product = a.multiplied(by: try a.inverseSPD())
        #expect(product.maxAbsDifference(.identity(n)) < 2e-3)
    }

    @Test func solveAndConjugateGradient() throws {
        let n = 90
        let a = spd(n, seed: 4, shift: 5)
        let x = randomVector(n, seed: 8)
        var b = [Float](repeating: 0, count: n)
        x.withUnsafeBufferPointer { a.multiply(vector: $0.baseAddress!, into: &b) }
        let direct = try Cholesky(a).solve(b)
        #expect(zip(direct, x).allSatisfy { close($0, $1, relative: 1e-3, absolute: 1e-3) })
        let cg = ConjugateGradient.solve(b: b, maxIterations: 500, tolerance: 1e-6) { v, out in a.multiply(vector: v, into: out) }
        #expect(cg.iterations > 0 && cg.iterations < 500)
        #expect(zip(cg.solution, x).allSatisfy { close($0, $1, relative: 1e-2, absolute: 1e-2) })
        // A warm start at the answer stops at once.
        let warm = ConjugateGradient.solve(b: b, initial: cg.solution, maxIterations: 10, tolerance: 1e-3) { v, out in a.multiply(vector: v, into: out) }
        #expect(warm.iterations <= 1)
    }

    @Test func notPositiveDefiniteIsAClearError() {
        var a = Matrix.identity(100)
        a[70, 70] = -1
        #expect(throws: LinalgError.notPositiveDefinite(column: 70, pivot: -1)) { try Cholesky(a) }
        // Exactly rank one: v·vᵀ with small integers.
        let v: [Float] = [1, 2, 3, 4, 5]
        var r = Matrix(rows: 5, columns: 5)
        for i in 0..<5 { for j in 0..<5 { r[i, j] = v[i] * v[j] } }
        do {
            _ = try Cholesky(r)
            Issue.record("a rank-one matrix was factored")
        } catch let LinalgError.notPositiveDefinite(column, _) {
            #expect(column == 1)
        } catch { Issue.record("unexpected \(error)") }
        var nan = Matrix.identity(3)
        nan[1, 1] = .nan
        #expect(throws: LinalgError.self) { try Cholesky(nan) }
        #expect(throws: LinalgError.self) { try Cholesky(Matrix(rows: 2, columns: 3)) }
    }
}

@Suite struct ShuffleTests {
    /// The array fast path draws and swaps exactly as the generic shuffle (its reference).
    @Test func arrayShuffleEqualsGeneric() {
        for n in [0, 1, 2, 17, 1000] {
            var fast = Array(0..<n), generic = ContiguousArray(0..<n)
            var a = SeededGenerator(seed: 9), b = SeededGenerator(seed: 9)
            a.shuffle(&fast)
            b.shuffle(&generic)
            #expect(fast == Array(generic), "n \(n)")
            #expect(a.next() == b.next())
        }
    }
}

@Suite struct SparseProductTests {
    @Test func gramAndProductsMatchDense() {
        var g = SeededGenerator(seed: 2)
        let rows = (0..<600).map { _ in Int32(g.next(below: 50)) }, cols = (0..<600).map { _ in Int32(g.next(below: 37)) }
        let x = SparseMatrix(rowCount: 50, columnCount: 37, rows: rows, cols: cols)   // counts, not only ones
        let dense = x.dense()
        let want = dense.multiplied(by: dense, transposeSelf: true, threads: 1)
        #expect(x.gram(threads: 2).maxAbsDifference(want) < 1e-4)
        // The pruned Gram: the diagonal, and each row's `keep` off-diagonal entries farthest from
        // independence among the co-occurring and the `keep` + 1 largest columns (ties: smaller column
        // first), with their exact values, for 1 and 2 threads.
        let sums = (0..<37).map { c in (0..<50).reduce(Float(0)) { $0 + dense[$1, c] } }
        for keep in [0, 3, 40] {
            let popular = Set((0..<37).sorted { sums[$0] != sums[$1] ? sums[$0] > sums[$1] : $0 < $1 }.prefix(keep + 1))
            for threads in [1, 2] {
                let pruned = x.prunedGram(keep: keep, threads: threads)
                for i in 0..<37 {
                    #expect(pruned.diagonal[i] == want[i, i])
                    let deviation = { (c: Int) in abs(want[i, c] - sums[i] / 50 * sums[c]) }
                    let expected = (0..<37).filter { $0 != i && (want[i, $0] != 0 || popular.contains($0)) }
                        .sorted { deviation($0) != deviation($1) ? deviation($0) > deviation($1) : $0 < $1 }.prefix(keep)
                    let got = pruned.rowPointers[i]..<pruned.rowPointers[i + 1]
                    #expect(pruned.columns[got].map { Int($0) } == Array(expected), "row \(i), keep \(keep)")
                    #expect(pruned.values[got].map { $0 } == expected.map { want[i, $0] })
                }
            }
        }
        let b = Matrix.random(rows: 37, columns: 9, seed: 1)
        #expect(x.multiplied(by: b, threads: 2).maxAbsDifference(dense.multiplied(by: b, threads: 1)) < 1e-4)
    }
}

@Suite struct KMeansTests {
    /// Four well-separated blobs in 8 dimensions.
    func blobs(perBlob: Int = 100) -> (Matrix, [Int]) {
        var g = SeededGenerator(seed: 21)
        var values: [Float] = [], labels: [Int] = []
        for b in 0..<4 {
            for _ in 0..<perBlob {
                for j in 0..<8 { values.append(Float(j == b ? 20 : 0) + Float(g.nextGaussian())) }
                labels.append(b)
            }
        }
        return (Matrix(rows: 4 * perBlob, columns: 8, values: values), labels)
    }

    @Test func recoversSeparatedClustersDeterministically() throws {
        let (data, labels) = blobs()
        let a = try KMeans.fit(data, settings: KMeansSettings(clusters: 4, iterations: 10, seed: 1, threads: 1))
        let b = try KMeans.fit(data, settings: KMeansSettings(clusters: 4, iterations: 10, seed: 1, threads: 2))
        #expect(a.assignments == b.assignments && a.centroids == b.centroids)
        // Each true blob maps to exactly one cluster.
        for blob in 0..<4 {
            let assigned = Set((0..<labels.count).filter { labels[$0] == blob }.map { a.assignments[$0] })
            #expect(assigned.count == 1)
        }
        #expect(Set(a.assignments).count == 4)
        #expect(a.inertia / Double(data.rows) < 10)   // about d = 8 per point for unit noise
    }

    /// The parallel seeding over blocks draws what the plain sequential one draws (integer data:
    /// every distance and sum is exact), for any thread count, across several blocks.
    @Test func parallelSeedingMatchesThePlainOne() {
        var g = SeededGenerator(seed: 5)
        let n = 2 * KMeans.plusPlusBlock + 1_234, d = 4
        let data = Matrix(rows: n, columns: d, values: (0..<(n * d)).map { _ in Float(g.next(below: 50)) })
        var r0 = SeededGenerator(seed: 9), r1 = r0, r2 = r0
        let reference = KMeans.referencePlusPlusInit(data, k: 24, rng: &r0)
        #expect(KMeans.plusPlusInit(data, k: 24, rng: &r1, threads: 1) == reference)
        #expect(KMeans.plusPlusInit(data, k: 24, rng: &r2, threads: 2) == reference)
    }

    @Test func emptyClustersAreRepairedAndBadKRejected() throws {
        // 3 distinct points repeated; k = 5 must leave no NaN centroid.
        let values: [Float] = (0..<30).flatMap { i -> [Float] in [Float(i % 3), Float(i % 3) * 2] }
        let r = try KMeans.fit(Matrix(rows: 30, columns: 2, values: values), settings: KMeansSettings(clusters: 5, iterations: 5))
        #expect(r.centroids.values.allSatisfy { $0.isFinite })
        #expect(r.inertia < 1e-3)
        #expect(throws: LinalgError.self) { try KMeans.fit(Matrix(rows: 3, columns: 2), settings: KMeansSettings(clusters: 4)) }
    }
}

@Suite(.serialized) struct SGNSStepTests {
    /// The skip-gram step against its plain twin on every SIMD path: lengths around the vector
    /// widths, a negative drawn twice (it must see its own first update), dot products past ±6
    /// (the cut sigmoid).
    @Test(arguments: [1, 7, 16, 17, 64, 100])
    func matchesReferenceOnEveryPath(d: Int) {
        let rows = 5
        let targets = [2, 0, 4, 0, 3]
        for scale: Float in [0.3, 3] {
            for level in simdLevels {
                Kernels.forceSIMDLevel(level)
                defer { Kernels.forceSIMDLevel(-1) }
                var w = randomVector(d, seed: 11).map { $0 * scale }, out = randomVector(rows * d, seed: 12).map { $0 * scale }
                var rw = w, rout = out
                let untouched = Array(out[d..<(2 * d)])
                let t32 = targets.map { Int32($0) }
                var scratch = [Float](repeating: .nan, count: d)
                w.withUnsafeMutableBufferPointer { wp in out.withUnsafeMutableBufferPointer { op in scratch.withUnsafeMutableBufferPointer { sp in
                    t32.withUnsafeBufferPointer { tp in
                        Kernels.sgnsStep(input: wp.baseAddress!, output: op.baseAddress!, targets: tp.baseAddress!, count: targets.count,
                                         dimension: d, learningRate: 0.05, scratch: sp.baseAddress!)
                    }
                } } }
                Kernels.referenceSGNSStep(input: &rw, output: &rout, targets: targets, learningRate: 0.05)
                #expect(zip(w, rw).allSatisfy { close($0, $1, relative: 1e-4, absolute: 1e-5) }, "level \(level) d \(d) scale \(scale)")
                #expect(zip(out, rout).allSatisfy { close($0, $1, relative: 1e-4, absolute: 1e-5) }, "level \(level) d \(d) scale \(scale)")
                #expect(Array(out[d..<(2 * d)]) == untouched)   // row 1 is no target: untouched
            }
        }
    }
}

@Suite(.serialized) struct BPRStepTests {
    @Test(arguments: [1, 7, 16, 17, 64, 100])
    func matchesReferenceOnEveryPath(f: Int) {
        for level in simdLevels {
            Kernels.forceSIMDLevel(level)
            defer { Kernels.forceSIMDLevel(-1) }
            var w = randomVector(f, seed: 1), hi = randomVector(f, seed: 2), hj = randomVector(f, seed: 3)
            var rw = w, rhi = hi, rhj = hj
            let z = w.withUnsafeMutableBufferPointer { wp in hi.withUnsafeMutableBufferPointer { ip in hj.withUnsafeMutableBufferPointer { jp in
                Kernels.bprStep(user: wp.baseAddress!, positive: ip.baseAddress!, negative: jp.baseAddress!, count: f,
                                biasDifference: 0.3, learningRate: 0.05, regularization: 0.01)
            } } }
            let rz = Kernels.referenceBPRStep(user: &rw, positive: &rhi, negative: &rhj, biasDifference: 0.3, learningRate: 0.05, regularization: 0.01)
            #expect(close(z, rz, relative: 1e-4, absolute: 1e-5), "level \(level) f \(f)")
            for k in 0..<f {
                #expect(close(w[k], rw[k], relative: 1e-4, absolute: 1e-5) && close(hi[k], rhi[k], relative: 1e-4, absolute: 1e-5)
                        && close(hj[k], rhj[k], relative: 1e-4, absolute: 1e-5), "level \(level) f \(f) k \(k)")
            }
        }
    }
}

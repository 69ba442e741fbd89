import Foundation
import Testing
@testable import AffinityANN
import AffinityLinalg
import AffinityTestScratch

@Suite(.serialized) struct PQTests {
    @Test func scanMatchesReferenceOnEveryPath() throws {
        var g = SeededGenerator(seed: 4)
        let x = clustered(rows: 600, dimension: 16, seed: 9)
        let pq = try ProductQuantizer.train(x, subspaces: 8, iterations: 4)
        for n in [1, 15, 16, 17, 100] {
            var codes = (0..<(n * 8)).map { _ in UInt8(g.next(below: 256)) }
            let table = (0..<(8 * 256)).map { _ in Float(g.nextGaussian()) }
            let want = pq.referenceScan(codes: codes, table: table, bias: 0.5)
            codes.append(contentsOf: [0, 0, 0, 0])   // the gather kernel's read-ahead
            for level in [0, 1, 2] {
                Kernels.forceSIMDLevel(level)
                defer { Kernels.forceSIMDLevel(-1) }
                var got = [Float](repeating: 0, count: n)
                codes.withUnsafeBufferPointer { c in table.withUnsafeBufferPointer { t in got.withUnsafeMutableBufferPointer { o in
                    pq.scan(codes: c.baseAddress!, count: n, table: t.baseAddress!, bias: 0.5, into: o.baseAddress!)
                } } }
                #expect(zip(got, want).allSatisfy { abs($0 - $1) < 1e-4 }, "n \(n) level \(level)")
            }
        }
    }

    @Test func codesReconstructVectorsAndTablesScoreThem() throws {
        let x = clustered(rows: 2000, dimension: 16, seed: 5)
        let pq = try ProductQuantizer.train(x, subspaces: 4, iterations: 8)
        let codes = pq.encode(x)
        var error = 0.0, energy = 0.0
        for r in 0..<x.rows {
            let back = pq.decode(codes[(r * 4)..<((r + 1) * 4)])
            for c in 0..<16 { error += Double(back[c] - x[r, c]) * Double(back[c] - x[r, c]); energy += Double(x[r, c] * x[r, c]) }
        }
        #expect(error / energy < 0.1, "relative reconstruction error \(error / energy)")   // observed about 0.03
        // The table score of a code equals the inner product with its reconstruction.
        let q = Array(x.row(7))
        let table = pq.table(q, negatedL2: false)
        let scored = pq.referenceScan(codes: Array(codes[0..<4]), table: table, bias: 0)[0]
        #expect(abs(scored - Kernels.referenceDot(q, pq.decode(codes[0..<4]))) < 1e-3)
        #expect(throws: LinalgError.self) { try ProductQuantizer.train(x, subspaces: 5) }
    }

    @Test(arguments: [Metric.innerProduct, .l2])
    func ivfpqIsExactWithEverythingProbedAndRefined(metric: Metric) throws {
        let index = try IVFPQIndex(vectors: base, metric: metric, settings: IVFPQSettings(ivf: IVFSettings(lists: 8, iterations: 5), subspaces: 4, keepVectorsForRefine: true))
        let want = ExactSearch.referenceSearch(queries: queries, base: base, k: 10, metric: metric)
        let all = try index.search(queries: queries, k: 10, parameters: SearchParameters(nprobe: index.quantizer.cells, refine: 300))
        #expect(recallAt(all, want, k: 10) == 1.0)
        let approx = try index.search(queries: queries, k: 10, parameters: SearchParameters(nprobe: 4, refine: 10))   // half the cells
        #expect(recallAt(approx, want, k: 10) >= 0.8, "recall \(recallAt(approx, want, k: 10))")   // observed 0.9+
        let noVectors = try IVFPQIndex(vectors: base, metric: metric, settings: IVFPQSettings(ivf: IVFSettings(lists: 8, iterations: 5), subspaces: 8))
        let coarse = recallAt(try noVectors.search(queries: queries, k: 10, parameters: SearchParameters(nprobe: noVectors.quantizer.cells)), want, k: 10)
        #expect(coarse >= 0.4, "PQ-only recall \(coarse)")
    }

    @Test func specsAndPersistence() throws {
        #expect(try IndexFactory.parse("IVF64,PQ8") == .ivfpq(lists: 64, subspaces: 8, mipsReduction: false, refine: false, opq: false))
        #expect(try IndexFactory.parse("MIPS,IVF64,PQ8,Refine") == .ivfpq(lists: 64, subspaces: 8, mipsReduction: true, refine: true, opq: false))
        #expect(throws: IndexError.self) { try IndexFactory.parse("IVF64,PQ8,Extra") }
        let index = try IndexFactory.build(spec: "MIPS,IVF8,PQ4,Refine", vectors: base, metric: .innerProduct, settings: ["iterations": "4"])
        let path = TestScratch.path("affinity-ivfpq", suffix: ".idx")
        try IndexFile.save(index, to: path)
        let loaded = try IndexFile.load(path)
        let p = SearchParameters(nprobe: 3, refine: 4)
        #expect(try loaded.search(queries: queries, k: 10, parameters: p) == index.search(queries: queries, k: 10, parameters: p))
    }
}

@Suite struct OPQTests {
    @Test func polarFactorIsOrthogonalAndSolvesProcrustes() throws {
        // A random orthogonal Q recovered from X and Y = X·Q.
        let x = Matrix.random(rows: 200, columns: 8, seed: 1)
        let q = SymmetricEigen.orthogonalPolarFactor(Matrix.random(rows: 8, columns: 8, seed: 2))
        #expect(q.multiplied(by: q, transposeSelf: true).maxAbsDifference(.identity(8)) < 1e-4)
        let y = x.multiplied(by: q)
        let r = SymmetricEigen.orthogonalPolarFactor(x.multiplied(by: y, transposeSelf: true))
        #expect(r.maxAbsDifference(q) < 1e-3)
        // Eigen-decomposition reconstructs a symmetric matrix.
        let s = x.multiplied(by: x, transposeSelf: true)
        let (values, vectors) = SymmetricEigen.decompose(s)
        for i in 0..<8 { for j in 0..<8 {
            let back = (0..<8).reduce(0.0) { $0 + vectors[i * 8 + $1] * values[$1] * vectors[j * 8 + $1] }
            #expect(abs(back - Double(s[i, j])) < 1e-2 * max(1, abs(Double(s[i, j]))))
        } }
    }

    /// Data whose variance is concentrated in a few mixed directions: plain PQ splits them badly,
    /// the OPQ rotation redistributes them and quantises with less error.
    @Test func rotationLowersQuantisationError() throws {
        var g = SeededGenerator(seed: 3)
        let mix = SymmetricEigen.orthogonalPolarFactor(Matrix.random(rows: 16, columns: 16, seed: 4))
        var raw = Matrix(rows: 3000, columns: 16)
        for r in 0..<3000 { for c in 0..<16 { raw.values[r * 16 + c] = Float(g.nextGaussian()) * (c < 4 ? 4 : 0.3) } }
        let x = raw.multiplied(by: mix)
        func error(_ data: Matrix) throws -> Double {
            let pq = try ProductQuantizer.train(data, subspaces: 4, iterations: 6)
            let codes = pq.encode(data)
            var e = 0.0
            for r in 0..<data.rows {
                let y = pq.decode(codes[(r * 4)..<((r + 1) * 4)])
                for c in 0..<16 { e += Double(y[c] - data[r, c]) * Double(y[c] - data[r, c]) }
            }
            return e
        }
        let rotation = try OPQ.train(x, subspaces: 4, iterations: 4)
        #expect(rotation.multiplied(by: rotation, transposeSelf: true).maxAbsDifference(.identity(16)) < 1e-3)
        let plain = try error(x), rotated = try error(x.multiplied(by: rotation))
        #expect(rotated < plain, "OPQ error \(rotated), PQ error \(plain)")
    }

    @Test func opqIndexIsExactWithEverythingProbedAndPersists() throws {
        let index = try IndexFactory.build(spec: "OPQ4,IVF8,PQ4,Refine", vectors: base, metric: .innerProduct, settings: ["iterations": "4"])
        let want = ExactSearch.referenceSearch(queries: queries, base: base, k: 10, metric: .innerProduct)
        let cells = try #require(index as? IVFPQIndex).quantizer.cells   // 8 cells (x norm bands: nprobe counts cells)
        #expect(recallAt(try index.search(queries: queries, k: 10, parameters: SearchParameters(nprobe: cells, refine: 300)), want, k: 10) == 1.0)
        let path = TestScratch.path("affinity-opq", suffix: ".idx")
        try IndexFile.save(index, to: path)
        let p = SearchParameters(nprobe: 3, refine: 4)
        #expect(try IndexFile.load(path).search(queries: queries, k: 10, parameters: p) == index.search(queries: queries, k: 10, parameters: p))
        #expect(try IndexFactory.parse("OPQ8,MIPS,IVF16,PQ8,Refine") == .ivfpq(lists: 16, subspaces: 8, mipsReduction: true, refine: true, opq: true))
        func message(_ spec: String) -> String? { do { _ = try IndexFactory.parse(spec); return nil } catch { return "\(error)" } }
        #expect(message("OPQ8,IVF16,PQ4")?.contains("must have as many subspaces as PQ4") == true)
        #expect(message("OPQ8,Flat")?.contains("must be followed by an IVF-PQ index") == true)
        #expect(message("IVF16,OPQ8")?.contains("must come first") == true)
        #expect(message("OPQ8,IVF16,Flat")?.contains("is not a known IVF storage") == true)
    }
}

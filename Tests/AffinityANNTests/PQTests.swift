import Foundation
import Testing
@testable import AffinityANN
import AffinityLinalg

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
        #expect(throws: IndexError.self) { try ProductQuantizer.train(x, subspaces: 5) }
    }

    @Test(arguments: [Metric.innerProduct, .l2])
    func ivfpqIsExactWithEverythingProbedAndRefined(metric: Metric) throws {
        let index = try IVFPQIndex(vectors: base, metric: metric, settings: IVFPQSettings(ivf: IVFSettings(lists: 8, iterations: 5), subspaces: 4, keepVectorsForRefine: true))
        let want = ExactSearch.referenceSearch(queries: queries, base: base, k: 10, metric: metric)
        let all = try index.search(queries: queries, k: 10, parameters: SearchParameters(nprobe: 8, refine: 300))
        #expect(recallAt(all, want, k: 10) == 1.0)
        let approx = try index.search(queries: queries, k: 10, parameters: SearchParameters(nprobe: 4, refine: 10))
        #expect(recallAt(approx, want, k: 10) >= 0.8, "recall \(recallAt(approx, want, k: 10))")   // observed 0.9+
        let noVectors = try IVFPQIndex(vectors: base, metric: metric, settings: IVFPQSettings(ivf: IVFSettings(lists: 8, iterations: 5), subspaces: 8))
        let coarse = recallAt(try noVectors.search(queries: queries, k: 10, parameters: SearchParameters(nprobe: 8)), want, k: 10)
        #expect(coarse >= 0.4, "PQ-only recall \(coarse)")
    }

    @Test func specsAndPersistence() throws {
        #expect(try IndexFactory.parse("IVF64,PQ8") == .ivfpq(lists: 64, subspaces: 8, mipsReduction: false, refine: false))
        #expect(try IndexFactory.parse("MIPS,IVF64,PQ8,Refine") == .ivfpq(lists: 64, subspaces: 8, mipsReduction: true, refine: true))
        #expect(throws: IndexError.self) { try IndexFactory.parse("IVF64,PQ8,Extra") }
        #expect(throws: IndexError.self) { try IndexFactory.parse("OPQ8,IVF64,PQ8") }
        let index = try IndexFactory.build(spec: "MIPS,IVF8,PQ4,Refine", vectors: base, metric: .innerProduct, settings: ["iterations": "4"])
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("affinity-ivfpq-\(UInt32.random(in: 0...UInt32.max)).idx").path
        try IndexFile.save(index, to: path)
        let loaded = try IndexFile.load(path)
        let p = SearchParameters(nprobe: 3, refine: 4)
        #expect(try loaded.search(queries: queries, k: 10, parameters: p) == index.search(queries: queries, k: 10, parameters: p))
    }
}

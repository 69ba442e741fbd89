import Foundation
import Testing
@testable import AffinityLinalg

@Suite struct RandomTests {
    @Test func sameSeedSameSequence() {
        var a = SeededGenerator(seed: 42), b = SeededGenerator(seed: 42), c = SeededGenerator(seed: 43)
        let xa = (0..<100).map { _ in a.next() }, xb = (0..<100).map { _ in b.next() }, xc = (0..<100).map { _ in c.next() }
        #expect(xa == xb)
        #expect(xa != xc)
    }

    @Test func goldenFirstValues() {
        // SplitMix64 reference values for seed 0 (Vigna's splitmix64.c).
        var g = SeededGenerator(seed: 0)
        #expect(g.next() == 0xE220_A839_7B1D_CDAF)
        #expect(g.next() == 0x6E78_9E6A_A1B9_65F4)
    }

    @Test func boundedDrawsAreInRangeAndRoughlyUniform() {
        var g = SeededGenerator(seed: 1)
        var counts = [Int](repeating: 0, count: 7)
        for _ in 0..<70_000 { counts[g.next(below: 7)] += 1 }
        // Each bucket expects 10,000; 5 standard deviations is about 475.
        #expect(counts.allSatisfy { abs($0 - 10_000) < 500 }, "\(counts)")
    }

    @Test func permutationIsAPermutationAndStreamsDiffer() {
        var g = SeededGenerator(seed: 9)
        for n in [0, 1, 2, 17, 100] { #expect(g.permutation(n).sorted() == Array(0..<n)) }
        var s1 = SeededGenerator(seed: 5, stream: 1), s2 = SeededGenerator(seed: 5, stream: 2)
        #expect(s1.next() != s2.next())
        var d = SeededGenerator(seed: 3)
        let values = (0..<1000).map { _ in d.nextDouble() }
        #expect(values.allSatisfy { $0 >= 0 && $0 < 1 })
    }
}

@Suite struct TopKTests {
    @Test func matchesSortedReferenceOverManySeeds() {
        for seed in 0..<2000 {
            var g = SeededGenerator(seed: UInt64(seed))
            let n = [1, 2, 15, 17, 64, 100][seed % 6]
            // Few distinct values, so ties are frequent and the index tie-break is exercised.
            let scores = (0..<n).map { _ in Float(g.next(below: 5)) }
            let excluded = Set((0..<n).filter { _ in g.next(below: 4) == 0 })
            let k = [0, 1, 3, n, n + 3][seed % 5]
            var selector = TopKSelector(k: k)
            let mask = (0..<n).map { excluded.contains($0) }
            scores.withUnsafeBufferPointer { s in mask.withUnsafeBufferPointer { selector.push(scores: s, excluded: $0) } }
            #expect(selector.sortedResults() == referenceTopK(scores, k: k, excluded: excluded), "seed \(seed)")
        }
    }

    /// `MaskedTopK`, reused across calls as the recommenders and the evaluator reuse it: each call
    /// equals the full-sort reference, and no exclusion leaks into the next call.
    @Test func maskedTopKMatchesTheReferenceAndClearsItsMask() {
        var g = SeededGenerator(seed: 9)
        let n = 50
        var top = MaskedTopK(count: n)
        for call in 0..<500 {
            let scores = (0..<n).map { _ in Float(g.next(below: 6)) }
            // Duplicates and out-of-range entries are allowed and ignored.
            let excluded = (0..<g.next(below: 20)).map { _ in g.next(below: n + 10) - 5 }
            let k = [1, 5, n, n + 2][call % 4]
            #expect(top.select(scores, k: k, excluding: excluded) == referenceTopK(scores, k: k, excluded: Set(excluded)), "call \(call)")
        }
        #expect(top.select([Float](repeating: 1, count: n), k: n, excluding: [Int]()).count == n)
    }

    @Test func nanRanksLastAndResetReuses() {
        var s = TopKSelector(k: 2)
        s.push(index: 0, score: .nan)
        s.push(index: 1, score: -1)
        s.push(index: 2, score: 5)
        #expect(s.sortedResults().map(\.index) == [2, 1])
        s.reset(k: 1)
        s.push(index: 4, score: 1)
        s.push(index: 3, score: 1)
        #expect(s.sortedResults() == [ScoredIndex(index: 3, score: 1)])
    }
}

@Suite struct SparseMatrixTests {
    @Test func duplicatesAreMergedAndCounted() throws {
        let m = SparseMatrix(rowCount: 2, columnCount: 3, rows: [0, 0, 1, 0], cols: [2, 0, 1, 2])
        #expect(m.rowPointers == [0, 2, 3])
        #expect(m.columns == [0, 2, 1])
        #expect(m.values == [1, 2, 1])
        #expect(m.binarized().values == [1, 1, 1])
        #expect(m.contains(row: 0, column: 2) && !m.contains(row: 1, column: 2))
    }

    @Test func patternLookupBitmapAgreesWithTheSearch() {
        var g = SeededGenerator(seed: 9)
        let rows = (0..<400).map { _ in Int32(g.next(below: 37)) }, cols = (0..<400).map { _ in Int32(g.next(below: 53)) }
        let m = SparseMatrix(rowCount: 37, columnCount: 53, rows: rows, cols: cols)
        let bitmap = PatternLookup(m), search = PatternLookup(m, maxBytes: 0)
        #expect(bitmap.isBitmap && !search.isBitmap)
        for r in 0..<37 { for c in 0..<53 { #expect(bitmap.contains(row: r, column: c) == m.contains(row: r, column: c) && search.contains(row: r, column: c) == m.contains(row: r, column: c)) } }
    }

    @Test func transposeTwiceIsIdentity() {
        var g = SeededGenerator(seed: 4)
        let rows = (0..<500).map { _ in Int32(g.next(below: 37)) }, cols = (0..<500).map { _ in Int32(g.next(below: 23)) }
        let m = SparseMatrix(rowCount: 37, columnCount: 23, rows: rows, cols: cols)
        let t = m.transposed()
        #expect(t.rowCount == 23 && t.columnCount == 37 && t.nonZeroCount == m.nonZeroCount)
        #expect(t.transposed() == m)
        #expect(m.columnCounts() == (0..<23).map { t.rowLength($0) })
    }

    @Test func invalidArraysAreRejected() {
        #expect(throws: SparseMatrixError.self) {
            try SparseMatrix(rowCount: 1, columnCount: 2, rowPointers: [0, 2], columns: [1, 0], values: [1, 1])
        }
        #expect(throws: SparseMatrixError.self) {
            try SparseMatrix(rowCount: 1, columnCount: 2, rowPointers: [0, 1], columns: [5], values: [1])
        }
    }
}

@Suite struct SafeTensorsTests {
    let file = SafeTensorsFile(
        tensors: ["w": .float32([1.5, -2, 3, 4], shape: [2, 2]), "ids": .int32([7, 8, 9]), "ptr": .int64([0, 3])],
        metadata: ["format_version": "1", "model_type": "test"])

    @Test func roundTrip() throws {
        let bytes = try file.encoded()
        let back = try SafeTensorsFile.decode(bytes, path: "t.safetensors")
        #expect(back.tensors == file.tensors)
        #expect(back.metadata == file.metadata)
        // Header length is little-endian u64 and the data starts 8-aligned.
        var headerLength = 0
        for i in 0..<8 { headerLength |= Int(bytes[i]) << (8 * i) }
        #expect((8 + headerLength) % 8 == 0)
        #expect(bytes.count == 8 + headerLength + 16 + 12 + 16)
    }

    @Test func readsAHandWrittenFile() throws {
        // Built by hand from the format's specification, as numpy-based writers do.
        let header = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#
        var bytes = withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { Array($0) } + Array(header.utf8)
        bytes += withUnsafeBytes(of: Float(1).bitPattern.littleEndian) { Array($0) }
        bytes += withUnsafeBytes(of: Float(-0.5).bitPattern.littleEndian) { Array($0) }
        let f = try SafeTensorsFile.decode(bytes, path: "x")
        #expect(try f.float32("a", path: "x") == [1, -0.5])
    }

    @Test func corruptFilesAreRejectedWithAReason() throws {
        let bytes = try file.encoded()
        let truncated = Array(bytes.dropLast(5))
        #expect(throws: SafeTensorsError.self) { try SafeTensorsFile.decode(truncated, path: "t") }
        do {
            _ = try SafeTensorsFile.decode(truncated, path: "model.safetensors")
        } catch let e as SafeTensorsError {
            #expect("\(e)".contains("model.safetensors"))
        }
        #expect(throws: SafeTensorsError.self) { try SafeTensorsFile.decode([1, 2, 3], path: "t") }
        var badLength = bytes
        badLength[0] = 0xFF
        badLength[5] = 0x7F
        #expect(throws: SafeTensorsError.self) { try SafeTensorsFile.decode(badLength, path: "t") }
        var badJSON = bytes
        badJSON[8] = UInt8(ascii: "x")
        #expect(throws: SafeTensorsError.self) { try SafeTensorsFile.decode(badJSON, path: "t") }
        let f = try SafeTensorsFile.decode(bytes, path: "t")
        #expect(throws: SafeTensorsError.wrongType(path: "t", name: "ids", expected: "F32", found: "I32")) { try f.float32("ids", path: "t") }
        #expect(throws: SafeTensorsError.missingTensor(path: "t", name: "nope")) { try f.int32("nope", path: "t") }
    }

    @Test func sparseMatrixThroughTensors() throws {
        let m = SparseMatrix(rowCount: 3, columnCount: 4, rows: [0, 2, 2], cols: [3, 0, 1])
        let f = try SafeTensorsFile.decode(SafeTensorsFile(tensors: m.tensors(prefix: "x"), metadata: [:]).encoded(), path: "p")
        #expect(try SparseMatrix(file: f, prefix: "x", path: "p") == m)
    }
}

@Suite struct ParallelTests {
    @Test func everyIndexVisitedOnce() {
        for threads in [1, 2, 3] {
            var hits = [Int](repeating: 0, count: 1001)
            hits.withUnsafeMutableBufferPointer { buffer in
                let out = SharedMutableBuffer(buffer)
                Parallelism.forEachRange(1001, grain: 7, threads: threads) { range in for i in range { out[i] += 1 } }
            }
            #expect(hits.allSatisfy { $0 == 1 })
        }
    }
}

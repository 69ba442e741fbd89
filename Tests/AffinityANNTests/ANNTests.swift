import Foundation
import Testing
@testable import AffinityANN
import AffinityLinalg
import AffinityTestScratch

/// Clustered vectors with varied norms (like item embeddings: popularity shows in the norm).
func clustered(rows: Int, dimension: Int = 16, clusters: Int = 20, seed: UInt64) -> Matrix {
    var g = SeededGenerator(seed: seed)
    let centres = Matrix.random(rows: clusters, columns: dimension, seed: seed &+ 1, scale: 3)
    var m = Matrix(rows: rows, columns: dimension)
    for r in 0..<rows {
        let c = g.next(below: clusters)
        let norm = Float(exp(0.5 * g.nextGaussian()))
        for j in 0..<dimension { m.values[r * dimension + j] = (centres[c, j] + Float(g.nextGaussian())) * norm }
    }
    return m
}

func recallAt(_ got: [[Neighbor]], _ want: [[ScoredIndex]], k: Int) -> Double {
    var hits = 0
    for (g, w) in zip(got, want) { hits += Set(g.prefix(k).map(\.id)).intersection(w.prefix(k).map(\.index)).count }
    return Double(hits) / Double(k * got.count)
}

let base = clustered(rows: 3000, seed: 1)
let queries = clustered(rows: 100, seed: 2)

@Suite struct FlatTests {
    @Test(arguments: Metric.allCases)
    func exactAgainstReference(metric: Metric) throws {
        let index = FlatIndex(dimension: 16, metric: metric)
        try index.add(base)
        let want = ExactSearch.referenceSearch(queries: queries, base: base, k: 10, metric: metric)
        let single = try (0..<queries.rows).map { try index.search(Array(queries.row($0)), k: 10) }
        #expect(recallAt(single, want, k: 10) == 1.0)
        #expect(recallAt(try index.search(queries: queries, k: 10), want, k: 10) == 1.0)
        #expect(try index.search(Array(queries.row(0)), k: 5000).count == 3000)   // never padded
        #expect(throws: IndexError.dimensionMismatch(expected: 16, got: 3)) { try index.search([1, 2, 3], k: 1) }
    }
}

@Suite struct HNSWTests {
    @Test(arguments: Metric.allCases)
    func recallFloorAgainstFlat(metric: Metric) throws {
        let index = try HNSWIndex(dimension: 16, metric: metric, settings: HNSWSettings(neighborsPerNode: 12, efConstruction: 100, threads: 2))
        try index.add(base)
        let want = ExactSearch.referenceSearch(queries: queries, base: base, k: 10, metric: metric)
        let got = try index.search(queries: queries, k: 10, parameters: SearchParameters(ef: 64))
        let r = recallAt(got, want, k: 10)
        #expect(r >= 0.95, "\(metric): recall \(r)")   // observed 0.99-1.00
        for list in got { #expect(zip(list, list.dropFirst()).allSatisfy { ScoredIndex.ranksBefore($0.score, $0.id, $1.score, $1.id) }) }
    }

    @Test func singleThreadBuildIsDeterministic() throws {
        func build() throws -> [[Neighbor]] {
            let index = try HNSWIndex(dimension: 16, metric: .innerProduct, settings: HNSWSettings(neighborsPerNode: 8, efConstruction: 40, threads: 1))
            try index.add(base)
            return try index.search(queries: queries, k: 5, parameters: SearchParameters(ef: 20))
        }
        #expect(try build() == build())
    }

    /// Filtered search returns k allowed results whenever k exist. Its quality is tested on L2: with
    /// raw inner product, small-norm vectors are pruned from every neighbour list (large norms win
    /// every comparison), so a restrictive filter can need nodes the graph cannot reach.
    @Test(arguments: [Metric.l2, .innerProduct])
    func filteredSearchNeverComesBackShort(metric: Metric) throws {
        let index = try HNSWIndex(dimension: 16, metric: metric, settings: HNSWSettings(neighborsPerNode: 8, efConstruction: 60, threads: 1))
        try index.add(base)
        // Only 2% of the ids are allowed (as when a user has seen most items).
        let allowed: (Int) -> Bool = { $0 % 50 == 7 }
        let flat = FlatIndex(dimension: 16, metric: metric)
        try flat.add(base)
        var agreeNarrow = 0, agreeWide = 0
        for q in 0..<queries.rows {
            let query = Array(queries.row(q))
            let exact = Set(try flat.search(query, k: 10, parameters: SearchParameters(), filter: allowed).map(\.id))
            let narrow = try index.search(query, k: 10, parameters: SearchParameters(ef: 16), filter: allowed)
            #expect(narrow.count == 10 && narrow.allSatisfy { allowed($0.id) })
            agreeNarrow += exact.intersection(narrow.map(\.id)).count
            let wide = try index.search(query, k: 10, parameters: SearchParameters(ef: 400), filter: allowed)
            #expect(wide.count == 10 && wide.allSatisfy { allowed($0.id) })
            agreeWide += exact.intersection(wide.map(\.id)).count
        }
        if metric == .l2 {
            #expect(Double(agreeWide) / 1000 >= 0.95, "filtered recall with ef 400: \(Double(agreeWide) / 1000)")   // observed 1.0
            #expect(agreeWide >= agreeNarrow)
        }
        // Fewer allowed than k: every allowed vector, nothing padded.
        #expect(try index.search(Array(queries.row(0)), k: 10, parameters: SearchParameters(), filter: { $0 < 3 }).map(\.id).sorted() == [0, 1, 2])
    }

    @Test func deletedVectorsNeverReturnAndSlotsAreReused() throws {
        let index = try HNSWIndex(dimension: 16, metric: .l2, settings: HNSWSettings(neighborsPerNode: 8, efConstruction: 60, threads: 1))
        try index.add(base)
        let query = Array(base.row(42))
        #expect(try index.search(query, k: 1).first?.id == 42)
        try index.markDeleted(42)
        #expect(try !index.search(query, k: 10).contains { $0.id == 42 })
        #expect(throws: IndexError.unknownID(5000)) { try index.markDeleted(5000) }
        // The slot is reused for a new vector, which is then found.
        var fresh = Matrix(rows: 1, columns: 16)
        for j in 0..<16 { fresh.values[j] = 50 + Float(j) }
        #expect(try index.add(fresh, replaceDeleted: true) == [42])
        #expect(index.count == 3000 && index.deletedCount == 0)
        #expect(try index.search(Array(fresh.row(0)), k: 1).first?.id == 42)
        // Appending continues after the last id.
        #expect(try index.add(fresh) == [3000])
    }

    /// The online trainer's publish: a copy answers as the original does and changes alone; an
    /// updated vector is found where it now is (relinked, or moved in place), and the copy keeps a
    /// recall floor against exact search after a tenth of its vectors moved.
    @Test func copiesChangeAloneAndUpdatesMoveVectors() throws {
        let index = try HNSWIndex(dimension: 16, metric: .innerProduct, settings: HNSWSettings(neighborsPerNode: 8, efConstruction: 60, threads: 1))
        try index.add(base)
        let copy = try index.copy()
        for q in 0..<20 { #expect(try copy.search(Array(queries.row(q)), k: 10) == index.search(Array(queries.row(q)), k: 10)) }
        var moved = base
        var g = SeededGenerator(seed: 9)
        // Every tenth vector moves: half far (to a random point, relinked), half a little (10 %
        // noise, in place), as the online trainer decides by its relink threshold.
        for n in stride(from: 0, to: 3000, by: 10) {
            let far = n % 20 == 0
            let v = (0..<16).map { j in far ? Float(g.nextGaussian()) * 3 : base[n, j] * (1 + 0.1 * Float(g.nextGaussian())) }
            for j in 0..<16 { moved[n, j] = v[j] }
            try copy.update(n, vector: v, relink: far)
        }
        try copy.markDeleted(7)
        #expect(!index.isDeleted(7) && copy.isDeleted(7))
        try copy.restore(7)
        #expect(!copy.isDeleted(7))
        // The original still answers with the old vectors: exactly as before.
        let flatOld = try FlatIndex(dimension: 16, metric: .innerProduct)
        try flatOld.add(base)
        let flatNew = try FlatIndex(dimension: 16, metric: .innerProduct)
        try flatNew.add(moved)
        let qs = (0..<100).map { Array(queries.row($0)) }
        let oldRecall = recallAt(try qs.map { try index.search($0, k: 10) }, try qs.map { try flatOld.search($0, k: 10).map { ScoredIndex(index: $0.id, score: $0.score) } }, k: 10)
        let newRecall = recallAt(try qs.map { try copy.search($0, k: 10, parameters: SearchParameters(ef: 128)) },
                                 try qs.map { try flatNew.search($0, k: 10).map { ScoredIndex(index: $0.id, score: $0.score) } }, k: 10)
        // Against an index built afresh on the moved vectors with the same settings.
        let fresh = try HNSWIndex(dimension: 16, metric: .innerProduct, settings: HNSWSettings(neighborsPerNode: 8, efConstruction: 60, threads: 1))
        try fresh.add(moved)
        let freshRecall = recallAt(try qs.map { try fresh.search($0, k: 10, parameters: SearchParameters(ef: 128)) },
                                   try qs.map { try flatNew.search($0, k: 10).map { ScoredIndex(index: $0.id, score: $0.score) } }, k: 10)
        // Observed: original 0.977; rebuilt 0.972; updated copy 0.946 (0.968 when the small moves are
        // relinked too; 0.895 with every move relinked before relinking repaired the old neighbourhood).
        #expect(oldRecall >= 0.95, "original index recall \(oldRecall)")
        #expect(newRecall >= freshRecall - 0.04, "updated copy recall \(newRecall), rebuilt \(freshRecall)")
        #expect(throws: IndexError.unknownID(3000)) { try copy.update(3000, vector: [Float](repeating: 0, count: 16), relink: false) }
        #expect(throws: IndexError.dimensionMismatch(expected: 16, got: 3)) { try copy.update(1, vector: [1, 2, 3], relink: true) }
    }
}

@Suite struct IVFTests {
    @Test func allListsIsExactAndFewListsKeepsAFloor() throws {
        let index = try IVFIndex(vectors: base, metric: .innerProduct, settings: IVFSettings(lists: 30, iterations: 8, threads: 2))
        let want = ExactSearch.referenceSearch(queries: queries, base: base, k: 10, metric: .innerProduct)
        #expect(recallAt(try index.search(queries: queries, k: 10, parameters: SearchParameters(nprobe: index.quantizer.cells)), want, k: 10) == 1.0)   // nprobe counts cells
        let l2 = try IVFIndex(vectors: base, metric: .l2, settings: IVFSettings(lists: 30, iterations: 8))
        let wantL2 = ExactSearch.referenceSearch(queries: queries, base: base, k: 10, metric: .l2)
        let r = recallAt(try l2.search(queries: queries, k: 10, parameters: SearchParameters(nprobe: 5)), wantL2, k: 10)
        #expect(r >= 0.7, "recall \(r)")   // observed 0.9
    }

    /// The reduction changes which cells vectors land in, never the ranking inside them: with every
    /// list probed it is exact. (Whether it helps is data-dependent: measured by `affinity index bench`.)
    @Test func mipsReductionIsExactWithAllListsAndKeepsAFloor() throws {
        let want = ExactSearch.referenceSearch(queries: queries, base: base, k: 10, metric: .innerProduct)
        let reduced = try IVFIndex(vectors: base, metric: .innerProduct, settings: IVFSettings(lists: 40, mipsReduction: true, iterations: 8))
        #expect(recallAt(try reduced.search(queries: queries, k: 10, parameters: SearchParameters(nprobe: 40)), want, k: 10) == 1.0)
        let m = recallAt(try reduced.search(queries: queries, k: 10, parameters: SearchParameters(nprobe: 4)), want, k: 10)
        #expect(m >= 0.7, "recall \(m)")   // observed 0.81
        #expect(throws: IndexError.self) { try IVFIndex(vectors: base, metric: .l2, settings: IVFSettings(lists: 4, mipsReduction: true)) }
    }

    /// Inner product: spherical cells split into norm bands. The band count follows the data (one
    /// when every norm is equal), every list probed is exact, and the norm-aware ranking finds the
    /// answers in fewer scanned vectors than the cells of the older inner-product quantiser.
    @Test func normBandsFollowTheDataAndScanLess() throws {
        let want = ExactSearch.referenceSearch(queries: queries, base: base, k: 10, metric: .innerProduct)
        let banded = try IVFIndex(vectors: base, metric: .innerProduct, settings: IVFSettings(lists: 12, iterations: 8, threads: 1))
        // Norms log-normal (sigma 0.5): 8 bands, split at the norm quantiles 1/2, 3/4, 7/8, ...
        #expect(banded.quantizer.bands == 8 && banded.quantizer.lists == 96 && banded.listSizes.count == 96)
        let sortedNorms = (0..<base.rows).map { Kernels.dot(Array(base.row($0)), Array(base.row($0))).squareRoot() }.sorted()
        #expect(banded.quantizer.bandEdges == [1500, 2250, 2625, 2812, 2906, 2953, 2976].map { sortedNorms[$0] })   // of 3,000
        #expect(recallAt(try banded.search(queries: queries, k: 10, parameters: SearchParameters(nprobe: 12)), want, k: 10) == 1.0)   // 12 cells: all 96 lists
        // Unit directions: one band, and spherical centroids.
        let unit = try IVFIndex(vectors: ExactSearch.normalizedRows(base), metric: .innerProduct, settings: IVFSettings(lists: 12, iterations: 4, threads: 1))
        #expect(unit.quantizer.bands == 1)
        for c in 0..<12 { #expect(abs(Kernels.dot(Array(unit.quantizer.centroids.row(c)), Array(unit.quantizer.centroids.row(c))) - 1) < 1e-4) }
        // An explicit band count is kept; empty lists are never probed.
        let four = try IVFIndex(vectors: base, metric: .innerProduct, settings: IVFSettings(lists: 12, iterations: 8, threads: 1, normBands: 4))
        #expect(four.quantizer.bands == 4)
        let nonEmpty = four.listSizes.filter { $0 > 0 }.count
        let ranked = four.quantizer.rankLists(Array(queries.row(0)), nprobe: 1000)
        #expect(ranked.count == nonEmpty && ranked.allSatisfy { four.listSizes[$0] > 0 })
        #expect(throws: IndexError.self) { try IVFIndex(vectors: base, metric: .innerProduct, settings: IVFSettings(lists: 12, normBands: 65)) }
        #expect(throws: IndexError.self) { try IVFIndex(vectors: base, metric: .l2, settings: IVFSettings(lists: 12, normBands: 2)) }
        #expect(throws: IndexError.self) { try IVFIndex(vectors: base, metric: .innerProduct, settings: IVFSettings(lists: 12, mipsReduction: true, normBands: 2)) }
        // Ranked with the spread, a list of one vector has that vector's angle as its spread: |q|·score
        // bounds q·x from above (the triangle inequality of angles), within rounding.
        let spread = banded.quantizer.ranking(usesSpread: true)
        var singles = 0
        for q in 0..<20 {
            let query = Array(queries.row(q)), qNorm = Kernels.dot(query, query).squareRoot()
            let scores = spread.listScores(query)
            for list in 0..<banded.quantizer.lists where banded.listIDs[list].count == 1 {
                let x = Array(base.row(Int(banded.listIDs[list][0])))
                #expect(qNorm * scores[list] >= Kernels.dot(query, x) - 1e-3 * (1 + abs(Kernels.dot(query, x))))
                singles += 1
            }
        }
        #expect(singles > 0)
        // Vectors scanned until recall@10 reaches 0.9, against the pre-band quantiser (L2 cells ranked by q·c).
        func scannedFor90(_ index: IVFIndex) throws -> Double {
            for nprobe in 1...index.quantizer.lists {
                let got = try index.search(queries: queries, k: 10, parameters: SearchParameters(nprobe: nprobe))
                if recallAt(got, want, k: 10) >= 0.9 {
                    var scanned = 0
                    for q in 0..<queries.rows { scanned += index.quantizer.rankLists(Array(queries.row(q)), nprobe: nprobe).map { index.listSizes[$0] }.reduce(0, +) }
                    return Double(scanned) / Double(queries.rows)
                }
            }
            return .infinity
        }
        let legacy = try IVFIndex.legacyInnerProduct(vectors: base, lists: 12)
        let bandedScan = try scannedFor90(banded), legacyScan = try scannedFor90(legacy)
        #expect(bandedScan < 0.5 * legacyScan, "scanned for recall 0.9: banded \(bandedScan), legacy \(legacyScan)")
    }
}

extension IVFIndex {
    /// An index as built before norm bands: L2 k-means on the raw vectors, each vector in the cell of
    /// its largest q·c.
    static func legacyInnerProduct(vectors: Matrix, lists: Int) throws -> IVFIndex {
        let km = try KMeans.fit(vectors, settings: KMeansSettings(clusters: lists, iterations: 8, threads: 1))
        let quantizer = CoarseQuantizer(centroids: km.centroids, mipsReduction: false, maxNorm: 0, metric: .innerProduct)
        let cells = ExactSearch.search(queries: vectors, base: km.centroids, k: 1, metric: .innerProduct, threads: 1).map { $0[0].index }
        var ids = [[Int32]](repeating: [], count: lists), vecs = [[Float]](repeating: [], count: lists)
        for r in 0..<vectors.rows {
            ids[cells[r]].append(Int32(r))
            vecs[cells[r]].append(contentsOf: vectors.row(r))
        }
        return IVFIndex(dimension: vectors.columns, metric: .innerProduct, settings: IVFSettings(lists: lists), quantizer: quantizer,
                        listIDs: ids, listVectors: vecs, count: vectors.rows)
    }
}

@Suite struct LSHTests {
    @Test func recallFloorOnCosine() throws {
        let index = try LSHIndex(vectors: base, metric: .cosine, settings: LSHSettings(tables: 16, bits: 8))
        let want = ExactSearch.referenceSearch(queries: queries, base: base, k: 10, metric: .cosine)
        let none = recallAt(try index.search(queries: queries, k: 10), want, k: 10)
        let probed = recallAt(try index.search(queries: queries, k: 10, parameters: SearchParameters(probes: 4)), want, k: 10)
        #expect(none >= 0.5, "recall \(none)")   // observed 0.59
        #expect(probed >= none)
    }
}

@Suite struct FactoryAndFileTests {
    @Test func specsAndTheirErrors() throws {
        #expect(try IndexFactory.parse("Flat") == .flat)
        #expect(try IndexFactory.parse("HNSW32") == .hnsw(neighborsPerNode: 32))
        #expect(try IndexFactory.parse("IVF1024,Flat") == .ivf(lists: 1024, mipsReduction: false))
        #expect(try IndexFactory.parse("MIPS,IVF64,Flat") == .ivf(lists: 64, mipsReduction: true))
        #expect(try IndexFactory.parse("LSH16x8") == .lsh(tables: 16, bits: 8))
        func message(_ spec: String) -> String? { do { _ = try IndexFactory.parse(spec); return nil } catch { return "\(error)" } }
        #expect(message("HNSWx") == "index spec 'HNSWx': part 'HNSWx' needs a positive number after HNSW")
        #expect(message("IVF64,Bogus") == "index spec 'IVF64,Bogus': part 'Bogus' is not a known IVF storage (Flat, PQ<m>)")
        #expect(message("Tree") == "index spec 'Tree': part 'Tree' is not a known index (Flat, HNSW<M>, IVF<n>,Flat, IVF<n>,PQ<m>, LSH<t>x<b>)")
        #expect(message("LSH4x99")?.contains("1...64 bits") == true)
        #expect(message("MIPS,HNSW16")?.contains("applies to IVF indexes only") == true)
        #expect(throws: IndexError.self) { try IndexFactory.build(spec: "Flat", vectors: base, metric: .l2, settings: ["ef": "3"]) }
    }

    @Test(arguments: ["Flat", "HNSW8", "IVF20,Flat", "MIPS,IVF20,Flat", "LSH8x8"])
    func saveAndLoadGiveTheSameResults(spec: String) throws {
        let metric: Metric = spec == "LSH8x8" ? .cosine : .innerProduct
        let index = try IndexFactory.build(spec: spec, vectors: base, metric: metric, settings: ["threads": "1"])
        let path = TestScratch.path("affinity-index", suffix: ".idx")
        try IndexFile.save(index, to: path)
        let loaded = try IndexFile.load(path)
        #expect(loaded.count == index.count && loaded.dimension == 16 && loaded.metric == metric)
        let p = SearchParameters(ef: 32, nprobe: 4)
        #expect(try loaded.search(queries: queries, k: 10, parameters: p) == index.search(queries: queries, k: 10, parameters: p))
    }

    @Test func corruptFilesAreRejected() throws {
        let index = try IndexFactory.build(spec: "HNSW8", vectors: base, metric: .l2, settings: ["threads": "1"])
        let path = TestScratch.path("affinity-index-bad", suffix: ".idx")
        try IndexFile.save(index, to: path)
        let good = try Data(contentsOf: URL(fileURLWithPath: path))
        func message() -> String? { do { _ = try IndexFile.load(path); return nil } catch { return "\(error)" } }
        try good.prefix(good.count - 100).write(to: URL(fileURLWithPath: path))
        #expect(message()?.contains("truncated") == true || message()?.contains("does not match") == true)
        var bytes = [UInt8](good)
        bytes[0] = UInt8(ascii: "X")
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        #expect(message() == "\(path): not an Affinity index (bad magic)")
        bytes = [UInt8](good)
        bytes[8] = 9
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        #expect(message() == "\(path): index format version 9; this build reads versions 1 to 2")
        #expect(throws: IndexError.self) { try IndexFile.load(path + ".missing") }
    }

    @Test func npyRoundTrip() throws {
        let path = TestScratch.path("affinity", suffix: ".npy")
        let m = Matrix.random(rows: 7, columns: 5, seed: 3)
        try NPY.write(m, to: path)
        #expect(try NPY.read(path) == m)
        try Data("not numpy".utf8).write(to: URL(fileURLWithPath: path))
        #expect(throws: VectorFileError.self) { try NPY.read(path) }
    }
}

@Suite struct ReviewRegressionTests {
    @Test func reusingTheEntryPointSlotWorks() throws {
        let index = try HNSWIndex(dimension: 16, metric: .l2, settings: HNSWSettings(neighborsPerNode: 4, efConstruction: 20, threads: 1))
        try index.add(base)
        let entry = Int(index.entryPoint)
        try index.markDeleted(entry)
        var fresh = Matrix(rows: 1, columns: 16)
        for j in 0..<16 { fresh.values[j] = 40 - Float(j) }
        #expect(try index.add(fresh, replaceDeleted: true) == [entry])
        #expect(try index.search(Array(fresh.row(0)), k: 1).first?.id == entry)
    }

    @Test func corruptGraphsAreRejectedNotCrashed() throws {
        let index = try HNSWIndex(dimension: 16, metric: .l2, settings: HNSWSettings(neighborsPerNode: 4, efConstruction: 20, seed: UInt64.max, threads: 1))
        try index.add(base)
        let path = TestScratch.path("affinity-graph", suffix: ".idx")
        defer { try? FileManager.default.removeItem(atPath: path) }
        try IndexFile.save(index, to: path)
        // A seed above 2^63 survives the round trip.
        #expect((try IndexFile.load(path) as! HNSWIndex).settings.seed == UInt64.max)
        let good = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        func message(_ bytes: [UInt8]) throws -> String? {
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            do { _ = try IndexFile.load(path); return nil } catch { return "\(error)" }
        }
        // The layer-0 section follows the vectors (both 64-byte aligned): point node 0's first link outside the graph.
        let jsonLength = good[32..<40].enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        let vectorsStart = (40 + jsonLength + 63) / 64 * 64
        let level0Start = (vectorsStart + 3000 * 16 * 4 + 63) / 64 * 64
        var bytes = good
        bytes[level0Start + 4] = 0xFF; bytes[level0Start + 5] = 0xFF; bytes[level0Start + 6] = 0xFF; bytes[level0Start + 7] = 0x7F
        #expect(try message(bytes)?.contains("links to") == true)
        // A link count beyond the list's capacity.
        bytes = good
        bytes[level0Start] = 200
        #expect(try message(bytes)?.contains("links on level 0") == true)
        #expect(try message(good) == nil)
    }
}

@Suite struct ScoreHeapTests {
    /// Both heaps against a plain reference (the top by their order, ties by id), with pushes and
    /// pops interleaved, then drained in order.
    @Test func heapsPopInTheirOrder() {
        var g = SeededGenerator(seed: 4)
        var best = BestHeap(), worst = WorstHeap()
        var bestRef: [(Float, Int32)] = [], worstRef: [(Float, Int32)] = []
        func top(_ entries: [(Float, Int32)], _ above: (Float, Int32, Float, Int32) -> Bool) -> Int {
            var t = 0
            for k in entries.indices where above(entries[k].0, entries[k].1, entries[t].0, entries[t].1) { t = k }
            return t
        }
        for round in 0..<600 {
            let s = Float(g.next(below: 50)), id = Int32(g.next(below: 1000))
            best.push(s, id); bestRef.append((s, id))
            worst.push(s, id); worstRef.append((s, id))
            if round % 3 == 2 {
                let b = best.pop()!, w = worst.pop()!
                let tb = bestRef.remove(at: top(bestRef, BestFirst.above)), tw = worstRef.remove(at: top(worstRef, WorstFirst.above))
                #expect(b == tb && w == tw, "round \(round)")
            }
        }
        #expect(best.count == bestRef.count && worst.count == worstRef.count)
        while let b = best.pop() {
            #expect(b == bestRef.remove(at: top(bestRef, BestFirst.above)))
        }
        #expect(bestRef.isEmpty)
    }
}

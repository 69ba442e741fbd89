import AffinityLinalg
import AffinityTestSupport
import Foundation
import Testing

@testable import AffinityNN

/// Random distinct-enough 64-bit IDs (duplicates, vanishingly rare, are counted by the caller).
private func randomIDs(_ n: Int, seed: UInt64) -> [UInt64] {
    var g = SeededGenerator(seed: seed)
    return (0..<n).map { _ in g.next() }
}

private func settings(dimension: Int = 4, admission: EmbeddingTableSettings.Admission = .always, expireAfter: Int64? = nil,
                      maxRows: Int = 1_000_000, accumulators: Bool = true) -> EmbeddingTableSettings {
    EmbeddingTableSettings(dimension: dimension, admission: admission, expireAfter: expireAfter, maxRows: maxRows, accumulators: accumulators)
}

@Suite struct CollisionlessEmbeddingTableTests {
    /// Every ID gets a row of its own: rows are distinct, and every lookup finds the ID's row after
    /// all the growth the insertions caused. Debug builds check 1 million IDs; with
    /// AFFINITY_TABLE_IDS=10000000 (release: `swift test -c release --filter CollisionlessEmbeddingTableTests`)
    /// the same test checks 10 million.
    @Test func noCollisionAmongRandomIDs() throws {
        let n = Int(ProcessInfo.processInfo.environment["AFFINITY_TABLE_IDS"] ?? "") ?? 1_000_000
        let ids = randomIDs(n, seed: 7)
        let distinct = Set(ids).count
        let table = try CollisionlessEmbeddingTable<UInt64>(settings: settings(dimension: 1, maxRows: n, accumulators: false))
        var rows = [Int32](repeating: -1, count: n)
        for (i, id) in ids.enumerated() { rows[i] = Int32(try #require(try table.trainingRow(for: id, time: 0))) }
        #expect(table.stats.ids == distinct)
        #expect(table.stats.rows == distinct)
        // Distinct IDs, distinct rows: the rows handed out are exactly 0..<distinct, each once.
        var owner = [UInt64?](repeating: nil, count: distinct)
        var shared = 0
        for (i, id) in ids.enumerated() {
            let r = Int(rows[i])
            if let o = owner[r], o != id { shared += 1 }
            owner[r] = id
            if table.row(of: id) != r { shared += 1 }
        }
        #expect(shared == 0)
        #expect(owner.allSatisfy { $0 != nil })
    }

    /// Readers look up IDs already admitted while the writer keeps admitting (and the map keeps
    /// growing): every lookup finds its ID, with the row's contents the writer put there.
    @Test func readersDuringGrowth() throws {
        let n = 200_000
        let ids = randomIDs(n, seed: 11)
        let table = try CollisionlessEmbeddingTable<UInt64>(settings: settings(dimension: 2, maxRows: n))
        let published = SharedCounter()
        let results = onThreads(3) { t -> (lookups: Int, misses: Int) in
            if t == 0 {
                for (i, id) in ids.enumerated() {
                    let r = try! table.trainingRow(for: id, time: 0)!
                    table.vector(r)[0] = Float(i)
                    published.set(i + 1)
                }
                return (0, 0)
            }
            var g = SeededGenerator(seed: UInt64(t))
            var lookups = 0, misses = 0
            while true {
                let upTo = published.get()
                if upTo == n && lookups > 100_000 { break }
                guard upTo > 0 else { continue }
                let i = g.next(below: upTo)
                lookups += 1
                if let r = table.row(of: ids[i]), table.vector(r)[0] == Float(i) {} else { misses += 1 }
            }
            return (lookups, misses)
        }
        #expect(results[1].lookups > 0 && results[2].lookups > 0)
        #expect(results[1].misses == 0 && results[2].misses == 0)
        #expect(table.stats.ids == n)
    }

    @Test func admissionByCount() throws {
        let table = try CollisionlessEmbeddingTable<String>(settings: settings(admission: .minCount(3)))
        #expect(try table.trainingRow(for: "a", time: 0) == nil)
        #expect(try table.trainingRow(for: "a", time: 1) == nil)
        #expect(table.row(of: "a") == nil)
        let r = try table.trainingRow(for: "a", time: 2)
        #expect(r != nil)
        #expect(table.row(of: "a") == r)
        #expect(try table.trainingRow(for: "b", time: 2) == nil)
        // 10,000 IDs seen twice each: none admitted (the sketch never under-counts, and here, with
        // 20,000 increments over 2^20 columns, does not over-count either).
        for k in 0..<10_000 { for _ in 0..<2 { _ = try table.trainingRow(for: "id\(k)", time: 3) } }
        #expect(table.stats.ids == 1)
        #expect(table.stats.filtered == 2 + 1 + 20_000)
    }

    @Test func admissionByProbability() throws {
        let table = try CollisionlessEmbeddingTable<UInt64>(settings: settings(admission: .probability(0.25)))
        for id in 0..<UInt64(10_000) { _ = try table.trainingRow(for: id, time: 0) }
        // Binomial(10,000, 0.25): mean 2,500, sd 43.
        #expect((2_300...2_700).contains(table.stats.ids))
        let again = try CollisionlessEmbeddingTable<UInt64>(settings: settings(admission: .probability(0.25)))
        for id in 0..<UInt64(10_000) { _ = try again.trainingRow(for: id, time: 0) }
        #expect(again.stats.ids == table.stats.ids, "the same seed admits the same IDs")
    }

    @Test func expiryFreesAndReusesRows() throws {
        let table = try CollisionlessEmbeddingTable<String>(settings: settings(expireAfter: 100))
        for k in 0..<10 { _ = try table.trainingRow(for: "u\(k)", time: 0) }
        for k in 0..<5 { _ = try table.trainingRow(for: "u\(k)", time: 150) }
        #expect(table.expire(now: 160) == 5)
        for k in 0..<5 { #expect(table.row(of: "u\(k)") != nil) }
        for k in 5..<10 { #expect(table.row(of: "u\(k)") == nil) }
        #expect(table.stats.ids == 5 && table.stats.expired == 5)
        // New IDs take the freed rows before any new one is allocated, and start from their own vector.
        let fresh = try #require(try table.trainingRow(for: "new", time: 170))
        #expect(fresh < 10 && table.stats.rows == 10)
        let reference = try CollisionlessEmbeddingTable<String>(settings: settings(expireAfter: 100))
        let r = try #require(try reference.trainingRow(for: "new", time: 0))
        #expect(Array(UnsafeBufferPointer(start: table.vector(fresh), count: 4)) == Array(UnsafeBufferPointer(start: reference.vector(r), count: 4)))
        #expect(table.accumulator(fresh)[0] == 0)
        // An expired ID that comes back is admitted again.
        #expect(try table.trainingRow(for: "u7", time: 180) != nil)
    }

    @Test func memoryBoundIsAClearErrorAndKeepsTheTable() throws {
        let table = try CollisionlessEmbeddingTable<String>(settings: settings(maxRows: 10))
        for k in 0..<10 { _ = try table.trainingRow(for: "i\(k)", time: 0) }
        #expect(throws: EmbeddingTableError.memoryBound(rows: 10, bytesPerRow: 32, maxRows: 10)) {
            try table.trainingRow(for: "one too many", time: 0)
        }
        #expect(try table.trainingRow(for: "i3", time: 1) != nil)
        #expect(table.stats.ids == 10)
        #expect(EmbeddingTableError.memoryBound(rows: 10, bytesPerRow: 32, maxRows: 10).description.contains("maxRows"))
    }

    @Test func saveAndReload() throws {
        let table = try CollisionlessEmbeddingTable<String>(settings: settings(admission: .minCount(2), expireAfter: 1_000))
        for k in 0..<3_000 { for _ in 0..<(k % 3) { _ = try table.trainingRow(for: "item-\(k)", time: Int64(k)) } }
        table.accumulator(table.row(of: "item-2")!)[1] = 7
        let data = table.encoded()
        let back = try #require(try EmbeddingTables.decode(data, as: String.self) as? CollisionlessEmbeddingTable<String>)
        #expect(back.settings == table.settings)
        #expect(back.stats.ids == table.stats.ids && back.stats.admitted == table.stats.admitted && back.stats.filtered == table.stats.filtered)
        for (key, row) in table.entries() {
            let r = try #require(back.row(of: key))
            #expect(Array(UnsafeBufferPointer(start: back.vector(r), count: 8)) == Array(UnsafeBufferPointer(start: table.vector(row), count: 8)))
            #expect(back.lastSeen(of: key) == table.lastSeen(of: key))
        }
        // The sketch came back too: an ID seen once before saving is admitted on its second occurrence
        // after; one never seen is not admitted on its first.
        #expect(back.row(of: "item-1") == nil && back.row(of: "item-2") != nil)
        #expect(try back.trainingRow(for: "item-1", time: 5) != nil)
        #expect(try back.trainingRow(for: "item-0", time: 5) == nil)
        // Truncated or altered bytes are an error, never a crash.
        for cut in [0, 5, 9, 20, data.count / 2, data.count - 1] {
            #expect(throws: EmbeddingTableError.self) { try EmbeddingTables.decode(data.prefix(cut), as: String.self) }
        }
        var extra = data
        extra.append(0)
        #expect(throws: EmbeddingTableError.self) { try EmbeddingTables.decode(extra, as: String.self) }
    }
}

@Suite struct HashedEmbeddingTableTests {
    @Test func collidesByConstructionAndRoundTrips() throws {
        let table = try HashedEmbeddingTable<String>(rows: 100, settings: settings())
        var used = Set<Int>()
        for k in 0..<1_000 {
            let r = try #require(try table.trainingRow(for: "u\(k)", time: 0))
            #expect(r == table.row(of: "u\(k)"))
            used.insert(r)
        }
        // 1,000 IDs into 100 rows: every row shared (expected empty rows: 100·e^-10 ≈ 0.005).
        #expect(used.count == 100)
        #expect(table.stats.ids == 1_000 && table.stats.rows == 100)
        let back = try #require(try EmbeddingTables.decode(table.encoded(), as: String.self) as? HashedEmbeddingTable<String>)
        #expect(back.rowCount == 100 && back.stats.ids == 1_000)
        // A file that claims more rows than its bytes hold (500,000, within maxRows) is refused before
        // anything is allocated.
        var data = table.encoded()
        // Layout: magic (8), kind (1), settings length (4), settings, then the row count.
        let jsonLength = data[9..<13].enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        let rowsAt = 13 + jsonLength
        #expect(data[rowsAt..<(rowsAt + 8)] == withUnsafeBytes(of: UInt64(100).littleEndian) { Data($0) })
        data.replaceSubrange(rowsAt..<(rowsAt + 8), with: withUnsafeBytes(of: UInt64(500_000).littleEndian) { Data($0) })
        #expect { try EmbeddingTables.decode(data, as: String.self) } throws: { "\($0)".contains("out of range") }
        #expect(Array(UnsafeBufferPointer(start: back.vector(42), count: 8)) == Array(UnsafeBufferPointer(start: table.vector(42), count: 8)))
        // A row that is not finite is refused on reading.
        back.vector(3)[1] = .nan
        #expect { try EmbeddingTables.decode(back.encoded(), as: String.self) } throws: { "\($0)".contains("not finite") }
    }
}

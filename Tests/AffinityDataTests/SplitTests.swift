import Foundation
import Testing
@testable import AffinityData

@Suite struct SplitTests {
    /// 30 users with 1..30 positives each over 50 items, plus low ratings that must be dropped.
    func sampleLog() -> InteractionLog {
        var rows: [(user: String, item: String, rating: Float?, timestamp: Int64?)] = []
        var t: Int64 = 0
        for u in 0..<30 {
            for k in 0...u {
                t += 1
                rows.append(("u\(u)", "i\((u * 7 + k * 3) % 50)", 4 + Float(k % 2), (t * 7919) % 1000))
            }
            rows.append(("u\(u)", "i\(u % 50)", 2, t))
        }
        return InteractionLog(source: "sample", rows: rows)
    }

    @Test func holdoutCountsAndDisjointness() throws {
        let log = sampleLog()
        let split = try Splitter.split(log, settings: SplitSettings(strategy: .holdout, minUserPositives: 5))
        let p = split.positives
        #expect(p.ratings!.allSatisfy { $0 >= 4 })
        #expect(split.facts["users_kept"] == p.userCount)
        var perUserTrain = [Int](repeating: 0, count: p.userCount), perUserTest = [Int](repeating: 0, count: p.userCount)
        for r in split.trainRows { perUserTrain[Int(p.userIndices[r])] += 1 }
        let allTest = split.testRows.count + split.facts["test_rows_removed_item_not_in_train"]!
        #expect(Set(split.trainRows).isDisjoint(with: split.testRows))
        #expect(split.trainRows.count + allTest == p.count)
        // Every kept test item appears in train.
        let trainItems = Set(split.trainRows.map { p.itemIndices[$0] })
        #expect(split.testRows.allSatisfy { trainItems.contains(p.itemIndices[$0]) })
        for r in split.testRows { perUserTest[Int(p.userIndices[r])] += 1 }
        // Users with no removed rows hold exactly max(1, round(0.2 n)) test rows.
        if split.facts["test_rows_removed_item_not_in_train"] == 0 {
            for u in 0..<p.userCount {
                let n = perUserTrain[u] + perUserTest[u]
                #expect(perUserTest[u] == max(1, Int((0.2 * Double(n)).rounded(.toNearestOrEven))), "user \(u)")
            }
        }
    }

    @Test func holdoutIsSeeded() throws {
        let log = sampleLog()
        let a = try Splitter.split(log, settings: SplitSettings(seed: 1))
        let b = try Splitter.split(log, settings: SplitSettings(seed: 1))
        let c = try Splitter.split(log, settings: SplitSettings(seed: 2))
        #expect(a.testRows == b.testRows)
        #expect(a.testRows != c.testRows)
    }

    @Test func leaveLastOutByTimestampTiesByFileOrder() throws {
        let log = try parse("""
        u\ta\t5\t30
        u\tb\t5\t10
        u\tc\t5\t30
        u\td\t5\t20
        u\te\t5\t5
        v\ta\t5\t1
        v\tc\t5\t2
        v\tb\t5\t3
        w\tc\t5\t1
        w\ta\t5\t2
        w\tb\t5\t3
        w\td\t5\t4
        w\te\t5\t5
        w\tf\t5\t6
        """)
        let split = try Splitter.split(log, settings: SplitSettings(strategy: .leaveLastOut, minUserPositives: 3))
        let test = split.test, valid = split.valid!
        // u: order e(5) b(10) d(20) a(30) c(30): a and c tie, file order puts c last.
        #expect(zip(test.userIndices, test.itemIndices).map { "\(test.users[Int($0)])\(test.items[Int($1)])" } == ["uc", "vb"])
        #expect(zip(valid.userIndices, valid.itemIndices).map { "\(valid.users[Int($0)])\(valid.items[Int($1)])" } == ["ua", "vc", "we"])
        #expect(split.train.count == 8)
        // w's test item f never appears in train, so it cannot be ranked and is removed.
        #expect(split.facts["test_rows_removed_item_not_in_train"] == 1)
    }

    @Test func temporalCutKeepsTestAfterTrain() throws {
        let log = sampleLog()
        let split = try Splitter.split(log, settings: SplitSettings(strategy: .temporal, testFraction: 0.25, minUserPositives: 1))
        let times = split.positives.timestamps!
        let lastTrain = split.trainRows.map { times[$0] }.max()!
        #expect(split.testRows.allSatisfy { times[$0] >= lastTrain })
        #expect(!split.testRows.isEmpty)
    }

    @Test func badSettingsAndMissingTimestamps() {
        let noTimes = try! parse("a\tb\t5\na\tc\t5\n")
        #expect(message { _ = try Splitter.split(noTimes, settings: SplitSettings(strategy: .leaveLastOut, minUserPositives: 1)) }?
            .contains("leave-last-out needs timestamps") == true)
        #expect(message { _ = try Splitter.split(noTimes, settings: SplitSettings(testFraction: 1.5)) } == "test-fraction: must be strictly between 0 and 1, got 1.5")
        #expect(message { _ = try Splitter.split(noTimes, settings: SplitSettings(minUserPositives: 5)) }?.contains("no interactions left") == true)
    }

    @Test func folderRoundTripAndAtomicity() throws {
        let dir = temporaryFolder()
        let out = dir + "/split"
        let split = try Splitter.split(sampleLog(), settings: SplitSettings(strategy: .leaveLastOut, minUserPositives: 3))
        let catalog = ItemCatalog(titles: ["i0": "Zero"], genres: ["i0": ["Drama"]])
        try SplitFolder.write(split, to: out, source: "sample", catalog: catalog)
        let back = try SplitFolder.read(out)
        #expect(back.train.count == split.trainRows.count && back.test.count == split.testRows.count)
        #expect(back.valid?.count == split.validRows?.count)
        #expect(back.meta?["kind"] == "leave-last-out")
        #expect(back.catalog?.titles["i0"] == "Zero")
        #expect(back.train.users.ids == split.train.users.ids)
        // An existing folder is not replaced without overwrite.
        #expect(message { try SplitFolder.write(split, to: out, source: "x") }?.contains("already exists") == true)
        // A failing writer leaves the earlier folder as it was and no temporary folder behind.
        #expect(throws: (any Error).self) { try AtomicWrite.folder(out, overwrite: true) { _ in throw DataError.unsupported("boom") } }
        #expect(try SplitFolder.read(out).train.count == split.trainRows.count)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["split"])
        // A folder without test.tsv is not a split.
        try FileManager.default.removeItem(atPath: out + "/test.tsv")
        #expect(message { _ = try SplitFolder.read(out) } == "\(out): not a split folder: test.tsv is missing")
    }
}

@Suite struct CatalogTests {
    @Test func movieLensMetadataLayouts() throws {
        let dir = temporaryFolder()
        // u.item and movies.dat are ISO-8859-1: byte 0xE9 is é.
        var uitem = Array("1|Caf".utf8) + [0xE9] + Array(" (1995)|01-Jan-1995||http://x|0|1|0|0|0|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n".utf8)
        try Data(uitem).write(to: URL(fileURLWithPath: dir + "/u.item"))
        let a = try ItemCatalog.read(path: dir + "/u.item")
        #expect(a.titles["1"] == "Café (1995)")
        #expect(a.genres["1"] == ["Action", "Comedy"])
        uitem = Array("2::Am".utf8) + [0xE9] + Array("lie (2001)::Comedy|Romance\n".utf8)
        try Data(uitem).write(to: URL(fileURLWithPath: dir + "/movies.dat"))
        let b = try ItemCatalog.read(path: dir + "/movies.dat")
        #expect(b.titles["2"] == "Amélie (2001)" && b.genres["2"] == ["Comedy", "Romance"])
        _ = write("movieId,title,genres\n3,\"Good, the Bad (1966)\",Western\n4,X,(no genres listed)\n", to: dir, "movies.csv")
        let c = try ItemCatalog.read(path: dir + "/movies.csv")
        #expect(c.titles["3"] == "Good, the Bad (1966)" && c.genres["4"] == [])
        let tsv = c.tsv()
        _ = write(tsv, to: dir, "items.tsv")
        #expect(try ItemCatalog.read(path: dir + "/items.tsv") == c)
        _ = write("1::only two\n", to: dir, "bad/movies.dat".replacingOccurrences(of: "bad/", with: ""))
        #expect(message { _ = try ItemCatalog.read(path: dir + "/movies.dat") }?.hasSuffix("movies.dat:1: expected MovieID::Title::Genres, found 2 fields") == true)
    }
}

@Suite struct SyntheticTests {
    /// `interactions`: exactly that many rows when the catalogue has room, each user at least 1
    /// and at most items/2, the same rows as the in-memory generator streams, and refusals.
    @Test func totalInteractionsAreExact() throws {
        var settings = SyntheticSettings()
        settings.users = 500
        settings.items = 2_000
        settings.substitutePairs = 5
        for total in [500, 3_000, 20_000] {
            settings.interactions = total
            let counts = SyntheticGenerator.userCounts(total: total, settings: settings)
            #expect(counts.reduce(0, +) == total && counts.allSatisfy { (1...1_000).contains($0) })
            let data = try SyntheticGenerator.generate(settings)
            #expect(data.log.count == total, "total \(total)")
            var streamed: [(Int, Int)] = []
            try SyntheticGenerator.stream(settings) { _, _ in } row: { u, i, _, _ in streamed.append((u, i)) }
            #expect(streamed.map { "u\($0.0 + 1)" } == (0..<data.log.count).map { data.log.users[Int(data.log.userIndices[$0])] })
            #expect(streamed.map { "i\($0.1 + 1)" } == (0..<data.log.count).map { data.log.items[Int(data.log.itemIndices[$0])] })
        }
        // Skewed lengths survive the scaling: the longest user has several times the median.
        let counts = SyntheticGenerator.userCounts(total: 20_000, settings: settings).sorted()
        #expect(counts.last! > 3 * counts[counts.count / 2])
        settings.interactions = 499
        #expect(message { try settings.validate() }?.contains("interactions") == true)
        settings.interactions = 500 * 1_000 + 1
        #expect(message { try settings.validate() }?.contains("at most 1000 items each") == true)
    }

    @Test func deterministicWithPlantedStructure() throws {
        var settings = SyntheticSettings()
        settings.users = 400
        settings.items = 300
        settings.substitutePairs = 10
        let a = try SyntheticGenerator.generate(settings)
        let b = try SyntheticGenerator.generate(settings)
        #expect(a.log.userIndices == b.log.userIndices && a.log.itemIndices == b.log.itemIndices && a.log.timestamps == b.log.timestamps)
        settings.seed = 7
        #expect(try SyntheticGenerator.generate(settings).log.itemIndices != a.log.itemIndices)

        // Substitutes are never consumed by the same user.
        var itemsOf: [String: Set<String>] = [:]
        for r in 0..<a.log.count { itemsOf[a.log.users[Int(a.log.userIndices[r])], default: []].insert(a.log.items[Int(a.log.itemIndices[r])]) }
        #expect(a.substitutes.count == 10)
        for (x, y) in a.substitutes {
            #expect(!itemsOf.values.contains { $0.contains(x) && $0.contains(y) }, "\(x) and \(y) co-consumed")
        }
        // Liked items mostly come from the user's own cluster.
        let liked = (0..<a.log.count).filter { a.log.ratings![$0] >= 4 }
        let own = liked.filter { a.userCluster[a.log.users[Int(a.log.userIndices[$0])]] == a.itemCluster[a.log.items[Int(a.log.itemIndices[$0])]] }
        #expect(Double(own.count) / Double(liked.count) > 0.7)   // 1/8 by chance; observed 0.79
        // Power-law popularity: the top 10% of items take far more than 10% of interactions.
        let counts = a.log.matrix().columnCounts().sorted(by: >)
        let top = counts.prefix(counts.count / 10).reduce(0, +)
        #expect(Double(top) / Double(counts.reduce(0, +)) > 0.2)   // 0.1 if uniform; observed 0.27
        #expect(a.catalog.titles.count == 300 && a.catalog.genres["i1"]?.count == 1)
        // Timestamps increase within each user.
        var last: [Int32: Int64] = [:]
        for r in 0..<a.log.count {
            let u = a.log.userIndices[r]
            #expect(a.log.timestamps![r] > (last[u] ?? 0))
            last[u] = a.log.timestamps![r]
        }
    }
}

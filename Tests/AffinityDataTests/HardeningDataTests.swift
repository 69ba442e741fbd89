import Foundation
import Testing
@testable import AffinityData
import AffinityTestScratch

/// Regression tests of the issue "Hardening" for logs and splits.
@Suite struct HardeningDataTests {
    @Test func aByteOrderMarkBeforeTheHeaderIsIgnored() throws {
        // Before the fix the BOM made the header a data row ("\u{FEFF}user" became a user).
        let log = try InteractionReader.parse([0xEF, 0xBB, 0xBF] + Array("user\titem\trating\nu1\ti1\t5\nu2\ti2\t4\n".utf8), name: "bom.tsv", dialect: .protocolTSV)
        #expect(log.count == 2)
        #expect(log.users.ids == ["u1", "u2"])
    }

    @Test func aSplitRefusesIDsThatTSVCannotHold() throws {
        // A CSV field may hold a tab; before the fix the split was written and its own reader rejected it.
        let log = try InteractionReader.parse(Array("user,item,rating\n\"a\tb\",i1,5\n\"a\tb\",i2,5\nu2,i1,5\nu2,i2,5\n".utf8), name: "t.csv", dialect: .csv)
        let split = try Splitter.split(log, settings: SplitSettings(minRating: nil, minUserPositives: 1))
        let out = temporaryFolder() + "/split"
        let error = message { try SplitFolder.write(split, to: out, source: "t.csv") }
        #expect(error?.contains("contains a tab or line break") == true, "\(error ?? "no error")")
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    /// Issue "As a newcomer would use it", item 1 (in part): an empty result names the filter and its flag.
    @Test func emptyFiltersNameTheFlagThatChangesThem() throws {
        let rated = try parse("u1\ti1\t2\nu1\ti2\t3\nu2\ti1\t1\n")
        let low = message { _ = try Splitter.split(rated, settings: SplitSettings()) }
        #expect(low?.contains("rating >= 4 kept 0 of 3 rows (--min-rating sets the threshold, --all-ratings keeps every row)") == true, "\(low ?? "")")
        let implicit = try parse("u1\ti1\nu1\ti2\nu2\ti1\n")
        let few = message { _ = try Splitter.split(implicit, settings: SplitSettings()) }
        #expect(few?.contains("users with >= 5 distinct positives kept 0 of 2 users (--min-user-positives)") == true, "\(few ?? "")")
        #expect(few?.contains("rating") == false)
    }

    /// Issue "As a newcomer would use it", item 1 (in part): a header's names say what each column is.
    @Test func headerNamesPlaceTheColumns() throws {
        // Before: the third column was taken as a rating (1.7e9) and timestamps were missing.
        let csv = try parse("user,item,timestamp\nu1,i1,1700000000\nu1,i2,1700000100\nu2,i1,1700000200\n", .csv, name: "t.csv")
        #expect(csv.ratings == nil)
        #expect(csv.timestamps == [1_700_000_000, 1_700_000_100, 1_700_000_200])
        // Any order, any case, common aliases, extra columns ignored, ISO-8601 dates.
        let shop = try parse("""
            order_id,TS,Product_ID,price,customer_id
            o1,2024-03-01,p9,3.50,c1
            o2,2024-03-01T12:30:00Z,p8,1.00,c1
            o3,2024-03-01 12:30:00+01:00,p9,2.00,c2
            """, .csv, name: "shop.csv")
        #expect(shop.users.ids == ["c1", "c2"] && shop.items.ids == ["p9", "p8"])
        #expect(shop.timestamps == [1_709_251_200, 1_709_296_200, 1_709_292_600])
        #expect(shop.ratings == nil)
        let tsv = try parse("rating\tuserId\tmovieId\n4.5\tu1\tm1\n", .protocolTSV)
        #expect(tsv.users.ids == ["u1"] && tsv.items.ids == ["m1"] && tsv.ratings == [4.5])
        // A line with another number of fields than the header names is an error naming the line.
        let short = message { _ = try parse("customer_id,product_id,ts\nc1,p1\n", .csv, name: "s.csv") }
        #expect(short == "s.csv:2: has 2 comma-separated fields but the header names 3", "\(short ?? "")")
        let badDate = message { _ = try parse("user,item,date\nu1,i1,2024-13-01\n", .csv, name: "d.csv") }
        #expect(badDate?.contains("neither Unix seconds nor an ISO-8601 date") == true, "\(badDate ?? "")")
        // Without a header, columns stay positional (docs/formats.md).
        let plain = try parse("u1\ti1\t5\t10\n")
        #expect(plain.ratings == [5] && plain.timestamps == [10])
    }

    /// A file written over an existing one is replaced whole, every time, and no temporary is left;
    /// a folder in the way is an error naming the path.
    @Test func atomicFileWritesReplaceExistingFiles() throws {
        let dir = TestScratch.path("affinity-atomic")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for n in 0..<20 { try AtomicWrite.file(Data("version \(n)\n".utf8), to: dir + "/recs.tsv") }
        #expect(try String(contentsOfFile: dir + "/recs.tsv", encoding: .utf8) == "version 19\n")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["recs.tsv"])
        try FileManager.default.createDirectory(atPath: dir + "/folder", withIntermediateDirectories: true)
        #expect { try AtomicWrite.file(Data("x".utf8), to: dir + "/folder") } throws: { "\($0)".contains(dir + "/folder") }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted() == ["folder", "recs.tsv"])
    }

    @Test func forceReplacesOnlyASplitFolder() throws {
        let log = try parse((1...6).flatMap { u in (1...5).map { i in "u\(u)\ti\(i)\n" } }.joined())
        let split = try Splitter.split(log, settings: SplitSettings(minRating: nil, minUserPositives: 1))
        let dir = temporaryFolder()
        _ = write("precious", to: dir, "thesis.tex")
        let error = message { try SplitFolder.write(split, to: dir, source: "x", overwrite: true) }
        #expect(error?.contains("not a folder this command wrote") == true)
        #expect(try String(contentsOfFile: dir + "/thesis.tex", encoding: .utf8) == "precious")
        try SplitFolder.write(split, to: dir + "/s", source: "x")
        #expect(SplitFolder.isSplitFolder(dir + "/s"))
        try SplitFolder.write(split, to: dir + "/s", source: "y", overwrite: true)
        #expect(try SplitFolder.read(dir + "/s").meta?["source"] == "y")
    }
}

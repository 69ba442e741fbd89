import Foundation
import Testing
@testable import AffinityData

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

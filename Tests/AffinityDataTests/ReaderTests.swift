import Foundation
import Testing
@testable import AffinityData

@Suite struct ReaderTests {
    /// The chunked file reader (what `read(path:)` uses for plain files) against the in-memory
    /// scan, its reference: same lines, same numbers, at chunk sizes that split lines, CR-LF pairs
    /// and a byte-order mark, with and without a final newline, and a line longer than the chunk.
    @Test func chunkedFileLinesMatchInMemoryLines() throws {
        let folder = temporaryFolder()
        let long = String(repeating: "x", count: 100)
        let texts = ["\u{FEFF}user\titem\r\na\tb\r\n\n c\td\ne\t\(long)\nlast\tline",
                     "a\tb\n", "", "\n\n", "only", "\u{FEFF}a\tb"]
        for (t, text) in texts.enumerated() {
            let path = write(text, to: folder, "t\(t).tsv")
            var expected: [(Int, [UInt8])] = []
            let bytes = Array(text.utf8)
            try InteractionReader.LineSource.bytes(bytes).forEachLine { expected.append(($0, Array($1))); return true }
            for chunk in [1, 2, 3, 7, 64, 1 << 20] {
                var got: [(Int, [UInt8])] = []
                try TextScanner.forEachLine(inFile: path, chunkBytes: chunk) { got.append(($0, Array($1))); return true }
                if bytes.starts(with: [0xEF, 0xBB, 0xBF]), !got.isEmpty { got[0].1.removeFirst(3) }
                #expect(got.map(\.0) == expected.map(\.0), "text \(t), chunk \(chunk)")
                #expect(got.map(\.1) == expected.map(\.1), "text \(t), chunk \(chunk)")
            }
            // Stopping early stops the file reader too.
            var seen = 0
            try TextScanner.forEachLine(inFile: path, chunkBytes: 2) { _, _ in seen += 1; return false }
            #expect(seen == min(1, expected.count))
        }
        // Read from a file: same log as parsed from memory, and errors name the streamed line.
        let text = "user\titem\trating\n" + (1...5000).map { "u\($0 % 97)\ti\($0 % 301)\t\($0 % 5 + 1)" }.joined(separator: "\n")
        let path = write(text, to: folder, "big.tsv")
        let fromFile = try InteractionReader.read(path: path)
        let fromMemory = try parse(text, name: path)
        #expect(fromFile.userIndices == fromMemory.userIndices && fromFile.itemIndices == fromMemory.itemIndices)
        #expect(fromFile.ratings == fromMemory.ratings && fromFile.count == 5000)
        let bad = write(text + "\nu1\ti1\tfive\n", to: folder, "bad.tsv")
        #expect(message { _ = try InteractionReader.read(path: bad) }?.contains("bad.tsv:5002: rating field is not a number") == true)
    }

    @Test func protocolTSVWithHeaderBlankLinesAndCRLF() throws {
        let log = try parse("user\titem\trating\ttimestamp\r\nb\tx\t5\t100\r\n\n  \na\ty\t3.5\t90\nb\ty\t4\t80\n")
        #expect(log.count == 3)
        #expect(log.users.ids == ["b", "a"])           // first appearance
        #expect(log.items.ids == ["x", "y"])
        #expect(log.ratings == [5, 3.5, 4])
        #expect(log.timestamps == [100, 90, 80])
        #expect(log.userIndices == [0, 1, 0])
    }

    @Test func idsAreStringsNotNumbers() throws {
        let log = try parse("1\t01\n01\t1\n1\t1\n")
        #expect(log.users.ids == ["1", "01"])
        #expect(log.items.ids == ["01", "1"])
        #expect(log.ratings == nil && log.timestamps == nil)
    }

    @Test func malformedLinesNameFileLineAndReason() {
        #expect(message { _ = try parse("a\tb\t5\nc\n", name: "r.tsv") } == "r.tsv:2: expected 2 to 4 tab-separated fields, found 1 (--delimiter sets the separator)")
        #expect(message { _ = try parse("a\tb\tfive\n") }?.contains("f.tsv:1: rating field is not a number: 'five'") == true)
        #expect(message { _ = try parse("a\tb\t5\t12.5\n") }?.contains("f.tsv:1: timestamp field is neither Unix seconds nor an ISO-8601 date") == true)
        #expect(message { _ = try parse("a\tb\t5\nc\td\n") } == "f.tsv:2: has 2 fields but earlier lines have 3; every line must have the same columns")
        #expect(message { _ = try parse("\tb\n") } == "f.tsv:1: user field is empty")
        #expect(message { _ = try parse("a\tb\tc\td\te\n") } == "f.tsv:1: expected 2 to 4 tab-separated fields, found 5 (--columns says which columns hold user, item, rating and timestamp)")
        #expect(message { _ = try parse("") } == "f.tsv: no interactions (the file is empty or holds only a header)")
        #expect(message { _ = try parse("user\titem\n\n") } == "f.tsv: no interactions (the file is empty or holds only a header)")
    }

    @Test func movieLensLayouts() throws {
        let dat = try parse("1::1193::5::978300760\n1::661::3::978302109\n", .movieLensDat, name: "ratings.dat")
        #expect(dat.count == 2 && dat.items.ids == ["1193", "661"] && dat.timestamps == [978300760, 978302109])
        let udata = try parse("196\t242\t3\t881250949\n", .movieLens100K, name: "u.data")
        #expect(udata.ratings == [3])
        let csv = try parse("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,0.5,964981247\n", .movieLensCSV, name: "ratings.csv")
        #expect(csv.count == 2 && csv.ratings == [4, 0.5])
        #expect(message { _ = try parse("1::2::3\n", .movieLensDat, name: "ratings.dat") } == "ratings.dat:1: expected 4 '::'-separated fields, found 3")
    }

    @Test func genericCSVWithQuotes() throws {
        let log = try parse("user,item\n\"smith, j\",\"a \"\"b\"\"\"\nx,y\n", .csv, name: "l.csv")
        #expect(log.users.ids == ["smith, j", "x"])
        #expect(log.items.ids == ["a \"b\"", "y"])
        #expect(message { _ = try parse("\"open,x\n", .csv, name: "l.csv") } == "l.csv:1: unterminated quoted field")
    }

    @Test func resolvesFilesAndFolders() throws {
        let dir = temporaryFolder()
        _ = write("1::2::5::10\n", to: dir, "ratings.dat")
        let (file, dialect) = try InteractionReader.resolve(path: dir, format: .movielens)
        #expect(file.hasSuffix("ratings.dat") && dialect == .movieLensDat)
        #expect(try InteractionReader.read(path: dir, format: .movielens).count == 1)
        #expect(message { _ = try InteractionReader.read(path: dir + "/missing.tsv") } == "\(dir)/missing.tsv: no such file or folder")
        let empty = temporaryFolder()
        #expect(message { _ = try InteractionReader.read(path: empty, format: .movielens) }?.contains("not a MovieLens folder") == true)
    }
}

@Suite struct LogTests {
    let log = try! parse("""
    u1\ta\t5\t1
    u2\ta\t2\t2
    u1\tb\t4\t3
    u3\tc\t4\t4
    u1\ta\t5\t5
    u2\tb\t4\t6
    u2\tc\t5\t7
    """)

    @Test func implicitPositivesDropLowRatingsAndReindex() {
        let p = log.implicitPositives(minRating: 4)
        #expect(p.count == 6)
        #expect(p.users.ids == ["u1", "u3", "u2"])
        #expect(p.items.ids == ["a", "b", "c"])
    }

    @Test func duplicatesMergedAndCounted() {
        let m = log.matrix(binary: false)
        #expect(m.nonZeroCount == 6)
        #expect(m.rowValues(0).sorted() == [1, 2])   // u1: a twice, b once
        #expect(log.matrix().values.allSatisfy { $0 == 1 })
    }

    @Test func minimumCountFilters() {
        let users = log.droppingUsers(withFewerThan: 2)
        #expect(users.users.ids == ["u1", "u2"])
        #expect(log.droppingItems(withFewerThan: 3).count == 0)
        let items = log.implicitPositives(minRating: 4).droppingItems(withFewerThan: 2)
        #expect(items.items.ids == ["b", "c"] && items.users.ids == ["u1", "u3", "u2"])
    }

    @Test func statistics() {
        let s = LogStatistics(log, positiveThreshold: 4)
        #expect(s.rows == 7 && s.users == 3 && s.items == 3 && s.distinctPairs == 6)
        #expect(s.positives == 6)
        #expect(s.ratingCounts == ["5": 3, "4": 3, "2": 1])
        #expect(s.firstTimestamp == 1 && s.lastTimestamp == 7)
        #expect(s.itemsPerUser.max == 3 && s.itemsPerUser.min == 1)
    }
}

@Suite struct VocabularyTests {
    @Test func insertionOrderAndCodable() throws {
        var v = IDVocabulary()
        #expect(v.insert("z") == 0 && v.insert("a") == 1 && v.insert("z") == 0)
        #expect(v.index(of: "a") == 1 && v.index(of: "q") == nil && v[1] == "a")
        let data = try JSONEncoder().encode(v)
        #expect(String(decoding: data, as: UTF8.self) == #"["z","a"]"#)
        #expect(try JSONDecoder().decode(IDVocabulary.self, from: data) == v)
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(IDVocabulary.self, from: Data(#"["a","a"]"#.utf8)) }
    }
}

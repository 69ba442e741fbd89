import Foundation
import Testing
import AffinityLinalg
@testable import AffinityData

/// Issue "As a newcomer would use it", item 1: logs in any common layout.
@Suite struct ReaderOptionsTests {
    func parse(_ text: String, _ dialect: InteractionReader.Dialect, _ options: InteractionReadOptions, name: String = "f") throws -> InteractionLog {
        try InteractionReader.parse(Array(text.utf8), name: name, dialect: dialect, options: options)
    }

    @Test func columnsByNameOverrideAndCompleteTheAliases() throws {
        let options = InteractionReadOptions(columns: try ColumnSelection(parsing: "user=buyer,item=thing"))
        let log = try parse("buyer,thing,ts,stars\nb1,t1,5,4\nb2,t2,6,5\n", .csv, options)
        #expect(log.users.ids == ["b1", "b2"] && log.items.ids == ["t1", "t2"])
        // The roles --columns leaves out are still found by their names.
        #expect(log.timestamps == [5, 6] && log.ratings == [4, 5])
        let missing = message { _ = try parse("buyer,thing\nb1,t1\n", .csv, InteractionReadOptions(columns: try ColumnSelection(parsing: "user=customer,item=thing")), name: "m.csv") }
        #expect(missing == "m.csv:1: --columns names user=customer but the header has no such column (it has: buyer, thing)", "\(missing ?? "")")
    }

    @Test func noHeaderWithPositions() throws {
        let options = InteractionReadOptions(columns: try ColumnSelection(parsing: "user=3,item=1,timestamp=2"), header: .absent)
        let log = try parse("i1\t100\tu1\ni2\t200\tu1\n", .protocolTSV, options)
        #expect(log.users.ids == ["u1"] && log.items.ids == ["i1", "i2"] && log.timestamps == [100, 200] && log.ratings == nil)
        // Without --columns, --no-header reads a first line that looks like a header as data.
        let plain = try parse("user\titem\n", .protocolTSV, InteractionReadOptions(header: .absent))
        #expect(plain.users.ids == ["user"])
        let named = message { _ = try parse("a\tb\n", .protocolTSV, InteractionReadOptions(columns: try ColumnSelection(parsing: "user=a,item=b"), header: .absent), name: "n.tsv") }
        #expect(named?.contains("names a header column, but n.tsv has no header") == true, "\(named ?? "")")
        let short = message { _ = try parse("i1\tu1\n", .protocolTSV, options, name: "s.tsv") }
        #expect(short == "s.tsv:1: has 2 tab-separated fields but --columns reads column 3", "\(short ?? "")")
    }

    @Test func headerFlagForcesUnknownNames() throws {
        let options = InteractionReadOptions(columns: try ColumnSelection(parsing: "user=1,item=2"), header: .present)
        let log = try parse("a;b\nu1;i1\n", .csv, InteractionReadOptions(columns: options.columns, header: .present, delimiter: try FieldDelimiter(parsing: "semicolon")))
        #expect(log.count == 1 && log.users.ids == ["u1"])
        let unknown = message { _ = try parse("a,b\nu1,i1\n", .csv, InteractionReadOptions(header: .present), name: "h.csv") }
        #expect(unknown?.contains("the header (a, b) names no user column; --columns user=NAME,item=NAME") == true, "\(unknown ?? "")")
    }

    @Test func delimitersIncludingQuotedFields() throws {
        let semicolon = InteractionReadOptions(delimiter: try FieldDelimiter(parsing: ";"))
        let log = try parse("user;item;rating\n\"a;b\";i1;4.5\nu2;\"i;2\";3\n", .csv, semicolon)
        #expect(log.users.ids == ["a;b", "u2"] && log.items.ids == ["i1", "i;2"])
        #expect(log.ratings == [4.5, 3])
        let pipe = try parse("u1|i1\nu2|i2\n", .protocolTSV, InteractionReadOptions(delimiter: try FieldDelimiter(parsing: "pipe")))
        #expect(pipe.count == 2)
        let wrong = message { _ = try parse("u1;i1\n", .csv, InteractionReadOptions(), name: "w.csv") }
        #expect(wrong?.contains("(--delimiter sets the separator)") == true, "\(wrong ?? "")")
        #expect(message { _ = try FieldDelimiter(parsing: "ab") }?.contains("delimiter: expected tab, comma") == true)
        #expect(message { _ = try ColumnSelection(parsing: "owner=1") }?.contains("unknown role 'owner'") == true)
        #expect(message { _ = try ColumnSelection(parsing: "user=0") }?.contains("positions count from 1") == true)
    }

    @Test func ratingsWithADecimalCommaAreRefusedByLine() throws {
        let bad = message { _ = try parse("user;item;rating\nu1;i1;4,5\n", .csv, InteractionReadOptions(delimiter: try FieldDelimiter(parsing: ";")), name: "r.csv") }
        #expect(bad == "r.csv:2: rating field is not a number: '4,5'", "\(bad ?? "")")
    }

    @Test func jsonLines() throws {
        let text = """
            {"customer_id": "c1", "sku": 17, "rating": 4.5, "time": "2024-03-01T00:00:00Z"}

            {"customer_id": "c2", "sku": "17", "rating": "3", "time": 1709251300}
            """
        let log = try parse(text, .jsonLines, InteractionReadOptions(), name: "e.jsonl")
        #expect(log.users.ids == ["c1", "c2"] && log.items.ids == ["17"])
        #expect(log.ratings == [4.5, 3] && log.timestamps == [1_709_251_200, 1_709_251_300])
        let chosen = try parse("{\"who\": 1, \"what\": 2}\n", .jsonLines, InteractionReadOptions(columns: try ColumnSelection(parsing: "user=who,item=what")))
        #expect(chosen.users.ids == ["1"] && chosen.items.ids == ["2"])
        let missingKey = message { _ = try parse("{\"user\": 1, \"item\": 2, \"ts\": 3}\n{\"user\": 1, \"item\": 3}\n", .jsonLines, InteractionReadOptions(), name: "k.jsonl") }
        #expect(missingKey == "k.jsonl:2: has no 'ts' (earlier lines have it)", "\(missingKey ?? "")")
        let broken = message { _ = try parse("{\"user\": 1, \"item\": 2}\n{\"user\": 1,\n", .jsonLines, InteractionReadOptions(), name: "b.jsonl") }
        #expect(broken == "b.jsonl:2: is not valid JSON", "\(broken ?? "")")
        let noRoles = message { _ = try parse("{\"a\": 1}\n", .jsonLines, InteractionReadOptions(), name: "r.jsonl") }
        #expect(noRoles?.contains("names no user and item key (keys: a)") == true, "\(noRoles ?? "")")
        let array = message { _ = try parse("[1, 2]\n", .jsonLines, InteractionReadOptions(), name: "a.jsonl") }
        #expect(array == "a.jsonl:1: is not a JSON object", "\(array ?? "")")
    }

    /// Two gzip members (`cat a.gz b.gz`), written by Python's gzip with mtime 0.
    static let twoMembers = Array(Data(base64Encoded: "H4sIAAAAAAACAystTi3SySxJzeUqNdTJNOQCACyL3fAQAAAAH4sIAAAAAAACAys10sk04gIAcYuLkQYAAAA=")!)

    @Test func gzipInputEveryMember() throws {
        let text = try InteractionReader.gunzip(Self.twoMembers, name: "x.gz")
        #expect(String(decoding: text, as: UTF8.self) == "user,item\nu1,i1\nu2,i2\n")
        let folder = temporaryFolder()
        let path = (folder as NSString).appendingPathComponent("log.csv.gz")
        try Data(Self.twoMembers).write(to: URL(fileURLWithPath: path))
        let log = try InteractionReader.read(path: path)
        #expect(log.count == 2 && log.users.ids == ["u1", "u2"])
    }

    @Test func gzipFaultsAreNamedNotCrashed() throws {
        let truncated = message { _ = try InteractionReader.gunzip(Array(Self.twoMembers.prefix(20)), name: "t.gz") }
        #expect(truncated == "t.gz: gzip: truncated gzip file (ends inside the compressed data)", "\(truncated ?? "")")
        var corrupt = Self.twoMembers
        corrupt[12] ^= 0xFF
        let bad = message { _ = try InteractionReader.gunzip(corrupt, name: "c.gz") }
        #expect(bad?.hasPrefix("c.gz: gzip: ") == true, "\(bad ?? "")")
        // A decompression bomb stops at the memory limit.
        let bomb = message { _ = try InteractionReader.gunzip(Self.twoMembers, name: "b.gz", limit: 8) }
        #expect(bomb == "b.gz: gzip: decompressed size exceeds the memory budget", "\(bomb ?? "")")
        let header = message { _ = try InteractionReader.gunzip([0x1F, 0x8B], name: "h.gz") }
        #expect(header?.hasPrefix("h.gz: gzip: ") == true)
    }

    /// The streaming decoder against the in-memory one: same lines at every chunk size (lines cut
    /// across chunks and members), and the same faults by name.
    @Test func gzipStreamingMatchesInMemory() throws {
        let folder = temporaryFolder()
        // Many members of many lines, so small chunks cut lines and members everywhere.
        var members: [UInt8] = []
        for _ in 0..<5 { members += Self.twoMembers }
        let path = (folder as NSString).appendingPathComponent("many.gz")
        try Data(members).write(to: URL(fileURLWithPath: path))
        var want: [[UInt8]] = []
        try InteractionReader.gunzip(members, name: path).withUnsafeBufferPointer { b in
            TextScanner.forEachLine(b) { _, line in want.append(Array(line)); return true }
        }
        #expect(want.count == 15)
        for chunk in [16, 17, 31, 64, 1 << 20] {   // the loop's smallest buffer is 16 bytes
            var got: [[UInt8]] = [], numbers: [Int] = []
            try TextScanner.forEachLine(inGzipFile: path, limit: 1 << 30, chunkBytes: chunk) { n, line in
                got.append(Array(line)); numbers.append(n); return true
            }
            #expect(got == want && numbers == Array(1...15), "chunk \(chunk)")
        }
        func streamed(_ bytes: [UInt8], limit: Int = 1 << 30) -> String? {
            let file = (folder as NSString).appendingPathComponent("fault.gz")
            try? Data(bytes).write(to: URL(fileURLWithPath: file))
            return message { try TextScanner.forEachLine(inGzipFile: file, limit: limit) { _, _ in true } }?
                .replacingOccurrences(of: file, with: "f.gz")
        }
        #expect(streamed(Array(Self.twoMembers.prefix(20))) == "f.gz: gzip: truncated gzip file (ends inside the compressed data)")
        var corrupt = Self.twoMembers
        corrupt[12] ^= 0xFF
        #expect(streamed(corrupt)?.hasPrefix("f.gz: gzip: ") == true)
        #expect(streamed(Self.twoMembers, limit: 8) == "f.gz: gzip: decompressed size exceeds the memory budget")
        #expect(streamed([0x1F, 0x8B])?.hasPrefix("f.gz: gzip: ") == true)
        // The reader's source: a gzip file is streamed, sized from its trailer or 3x the compressed bytes.
        if case .gzip(_, let size) = try InteractionReader.LineSource.open(path) { #expect(size == 3 * members.count) } else { Issue.record("not read as gzip") }
    }

    /// Over a megabyte of compressed input (the decoder refills its input 1 MiB at a time): two
    /// members, the boundary inside the first, zero padding after the last.
    @Test func gzipStreamingAcrossItsInputBuffer() throws {
        var text: [UInt8] = []
        for i in 0..<70_000 { text += Array("user\(i)\titem\(i % 997)\t4\t\(1_600_000_000 + i)\n".utf8) }
        #expect(text.count > 1_500_000)
        let cut = text.count / 2 + 3   // inside a line: the line spans the members
        let file = Self.storedGzip(Array(text[..<cut])) + Self.storedGzip(Array(text[cut...])) + [UInt8](repeating: 0, count: 100)
        let path = (temporaryFolder() as NSString).appendingPathComponent("big.tsv.gz")
        try Data(file).write(to: URL(fileURLWithPath: path))
        #expect(try InteractionReader.gunzip(file, name: path) == text)
        var streamed: [UInt8] = []
        var count = 0
        try TextScanner.forEachLine(inGzipFile: path, limit: 1 << 30, chunkBytes: 4096) { _, line in
            streamed += line; streamed.append(0x0A); count += 1; return true
        }
        #expect(streamed == text && count == 70_000)
        let log = try InteractionReader.read(path: path, options: InteractionReadOptions(header: .absent))
        #expect(log.count == 70_000, "\(log.count) rows, \(log.users.count) users")
    }

    /// A gzip member of stored (uncompressed) deflate blocks: larger than its text, so a test can
    /// cross the decoder's 1 MiB input buffer without a compressor.
    static func storedGzip(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 255]
        var start = 0
        repeat {
            let end = min(data.count, start + 65_535), n = end - start
            out.append(end == data.count ? 1 : 0)   // BFINAL, BTYPE 00 (stored)
            out += [UInt8(n & 0xFF), UInt8(n >> 8), UInt8(~n & 0xFF), UInt8((~n >> 8) & 0xFF)]
            out += data[start..<end]
            start = end
        } while start < data.count
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in data {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
        }
        crc = ~crc
        for v in [crc, UInt32(truncatingIfNeeded: data.count)] { out += [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF), UInt8((v >> 16) & 0xFF), UInt8(v >> 24)] }
        return out
    }

    /// The in-place scanner of flat objects against Foundation's parser on every line.
    @Test func jsonLinesFastPathMatchesFoundation() throws {
        var g = SeededGenerator(seed: 11)
        var lines: [String] = []
        for n in 0..<400 {
            let user = ["\"u\(g.next(below: 50))\"", "\(g.next(below: 50))", "\"\(g.next(below: 50))\"", "\"\\u0075\(g.next(below: 9))\""][g.next(below: 4)]
            let item = ["\"i\(g.next(below: 80))\"", "\(g.next(below: 80))", "\(g.next(below: 80)).0", "\"a\\\"b\""][g.next(below: 4)]
            let rating = ["4", "3.5", "\"5\"", "1e0"][g.next(below: 4)]
            let time = ["\(1_700_000_000 + n)", "\"2024-03-0\(1 + g.next(below: 9))T10:00:00Z\""][g.next(below: 2)]
            var fields = ["\"user\": \(user)", "\"item\":\(item)", "\"rating\" : \(rating)", "\"ts\": \(time)"]
            if g.next(below: 3) == 0 { fields.append(["\"extra\": {\"nested\": [1, 2]}", "\"flag\": true", "\"note\": null"][g.next(below: 3)]) }
            g.shuffle(&fields)
            lines.append("{" + fields.joined(separator: g.next(below: 2) == 0 ? ", " : ",") + "}")
        }
        let bytes = Array(lines.joined(separator: "\n").utf8)
        let fast = try InteractionReader.parseJSONLines(.bytes(bytes), name: "p.jsonl", columns: nil)
        let reference = try InteractionReader.parseJSONLines(.bytes(bytes), name: "p.jsonl", columns: nil, referenceOnly: true)
        #expect(fast.users.ids == reference.users.ids && fast.items.ids == reference.items.ids)
        #expect(fast.userIndices == reference.userIndices && fast.itemIndices == reference.itemIndices)
        #expect(fast.ratings == reference.ratings && fast.timestamps == reference.timestamps)
        #expect(fast.items.ids.contains("a\"b") && fast.users.ids.contains("u1"))

        var flat = FlatJSONObject()
        let cases: [(String, Bool)] = [("{}", true), ("{\"a\": 1}", true), ("{\"a\": 01}", false), ("{\"a\": \"x\\ny\"}", false),
                                       ("{\"a\": [1]}", false), ("{\"a\": 1,}", false), ("{\"a\": 1} x", false), ("[1]", false),
                                       ("{\"a\": -3, \"b\": false}", true), ("{\"a\": 1.5}", false), ("{\"a\": -0}", false), ("{ \"a\" : \"\" }", true)]
        for (text, flatOK) in cases {
            var copy = text
            let ok = copy.withUTF8 { flat.scan($0) }
            #expect(ok == flatOK, "\(text)")
        }
    }
}

import Foundation
import _AffinityZlib
import AffinityLinalg

/// The interaction file layouts Affinity reads. Any of them may be gzip-compressed (`.gz`, or the
/// gzip magic bytes): the reader decompresses as it reads, never holding the text.
public enum InteractionFormat: String, CaseIterable, Sendable, Codable {
    /// Tab-separated `user<TAB>item[<TAB>rating[<TAB>timestamp]]` (docs/formats.md), or any columns a
    /// header names.
    case tsv
    /// Comma-separated, RFC 4180 quoting; columns as for tsv.
    case csv
    /// JSON Lines (`.jsonl`, `.ndjson`): one object per line, keys named as a header's columns are.
    case jsonl
    /// A MovieLens file chosen by name: `u.data` (100K, tab), `ratings.dat` (1M/10M, `::`),
    /// `ratings.csv` (20M/25M/latest, header); a MovieLens folder is searched for one of them.
    case movielens
}

/// Which column of a file holds a role: by the header's name, or by 1-based position.
public enum ColumnReference: Sendable, Codable, Equatable, CustomStringConvertible {
    case name(String)
    case position(Int)

    public var description: String {
        switch self {
        case .name(let n): return n
        case .position(let p): return String(p)
        }
    }
}

/// The columns a user names with `--columns user=customer_id,item=sku,timestamp=ts` (names of the
/// header, or 1-based positions). Roles left out are found by the header's names as usual.
public struct ColumnSelection: Sendable, Codable, Equatable {
    public var user: ColumnReference?
    public var item: ColumnReference?
    public var rating: ColumnReference?
    public var timestamp: ColumnReference?

    public init(user: ColumnReference? = nil, item: ColumnReference? = nil,
                rating: ColumnReference? = nil, timestamp: ColumnReference? = nil) {
        self.user = user
        self.item = item
        self.rating = rating
        self.timestamp = timestamp
    }

    /// Parses `role=column,...`; roles are user, item, rating and timestamp, a column is a header
    /// name or a 1-based position.
    public init(parsing text: String) throws {
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let pair = part.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard pair.count == 2, !pair[1].isEmpty else {
                throw DataError.invalidSetting(name: "columns", reason: "expected role=column pairs such as user=customer_id,item=3; got '\(part)'")
            }
            let reference: ColumnReference
            if let n = Int(pair[1]) {
                guard n >= 1 && n <= 4096 else { throw DataError.invalidSetting(name: "columns", reason: "positions count from 1; got \(n) for \(pair[0])") }
                reference = .position(n)
            } else {
                reference = .name(pair[1])
            }
            switch pair[0].lowercased() {
            case "user": user = reference
            case "item": item = reference
            case "rating": rating = reference
            case "timestamp", "time": timestamp = reference
            default:
                throw DataError.invalidSetting(name: "columns", reason: "unknown role '\(pair[0])'; roles are user, item, rating, timestamp")
            }
        }
    }

    var roles: [(String, ColumnReference?)] { [("user", user), ("item", item), ("rating", rating), ("timestamp", timestamp)] }
    var namesAny: Bool { roles.contains { if case .name = $0.1 { return true } else { return false } } }
}

/// The field separator of a text log (`--delimiter`).
public struct FieldDelimiter: Sendable, Codable, Equatable, CustomStringConvertible {
    /// One or two bytes (`::` of MovieLens 1M).
    public var bytes: [UInt8]

    public static let tab = FieldDelimiter(bytes: [0x09])
    public static let comma = FieldDelimiter(bytes: [UInt8(ascii: ",")])

    public init(bytes: [UInt8]) { self.bytes = bytes }

    /// `tab`, `comma`, `semicolon`, `pipe`, `space`, `::`, or any single ASCII character.
    public init(parsing text: String) throws {
        switch text.lowercased() {
        case "tab", "\\t", "\t": bytes = [0x09]
        case "comma", ",": bytes = [UInt8(ascii: ",")]
        case "semicolon", ";": bytes = [UInt8(ascii: ";")]
        case "pipe", "|": bytes = [UInt8(ascii: "|")]
        case "space", " ": bytes = [0x20]
        case "::": bytes = [UInt8(ascii: ":"), UInt8(ascii: ":")]
        default:
            let utf8 = Array(text.utf8)
            guard utf8.count == 1, utf8[0] < 0x80, utf8[0] != 0x0A, utf8[0] != 0x0D, utf8[0] != UInt8(ascii: "\"") else {
                throw DataError.invalidSetting(name: "delimiter", reason: "expected tab, comma, semicolon, pipe, space, :: or one ASCII character; got '\(text)'")
            }
            bytes = utf8
        }
    }

    public var description: String {
        switch bytes {
        case [0x09]: return "tab"
        case [UInt8(ascii: ",")]: return "comma"
        case [UInt8(ascii: ";")]: return "semicolon"
        case [UInt8(ascii: "|")]: return "pipe"
        case [0x20]: return "space"
        default: return "'" + String(decoding: bytes, as: UTF8.self) + "'"
        }
    }
}

/// How to read a log beyond what its name tells. The defaults read docs/formats.md files, MovieLens
/// and most exports as they are.
public struct InteractionReadOptions: Sendable, Codable, Equatable {
    /// Whether the first line names the columns.
    public enum Header: String, Sendable, Codable, CaseIterable {
        /// A first line is a header when it names a user and an item column (aliases, or the names
        /// `columns` gives) or starts with `user`.
        case auto
        /// The first line is a header whatever it holds (`--header`).
        case present
        /// Every line is data (`--no-header`); columns are positional.
        case absent
    }

    /// nil: from the file name (`.tsv`, `.csv`, `.jsonl`/`.ndjson`, MovieLens names, each optionally `.gz`).
    public var format: InteractionFormat?
    public var columns: ColumnSelection?
    public var header: Header
    /// Replaces the format's separator (tsv and csv only).
    public var delimiter: FieldDelimiter?

    public init(format: InteractionFormat? = nil, columns: ColumnSelection? = nil, header: Header = .auto, delimiter: FieldDelimiter? = nil) {
        self.format = format
        self.columns = columns
        self.header = header
        self.delimiter = delimiter
    }
}

/// Streaming parser of interaction files. It reads the file's bytes once, splits fields in place
/// and looks decimal IDs up by value, so ml-1m's 1,000,209 lines load in a fraction of a second.
public enum InteractionReader {
    /// The concrete dialect of one file.
    public enum Dialect: String, Sendable {
        case protocolTSV, csv, jsonLines, movieLens100K, movieLensDat, movieLensCSV

        var delimiter: [UInt8] {
            switch self {
            case .protocolTSV, .movieLens100K, .jsonLines: return [0x09]
            case .csv, .movieLensCSV: return [UInt8(ascii: ",")]
            case .movieLensDat: return [UInt8(ascii: ":"), UInt8(ascii: ":")]
            }
        }
        var fieldRange: ClosedRange<Int> {
            switch self {
            case .protocolTSV, .csv, .jsonLines: return 2...4
            case .movieLens100K, .movieLensDat, .movieLensCSV: return 4...4
            }
        }
        var quoted: Bool { self == .csv || self == .movieLensCSV }
        /// MovieLens 100K and 1M files have no header and fixed columns.
        var fixedLayout: Bool { self == .movieLens100K || self == .movieLensDat }
    }

    /// Reads interactions from `path` (a file, or with `.movielens` a MovieLens folder).
    /// With no format, it is guessed from the name: `.tsv` -> tsv, `.csv` -> csv unless it is
    /// `ratings.csv`, `.jsonl`/`.ndjson` -> jsonl, and MovieLens names -> movielens; a `.gz`
    /// ending is looked through.
    public static func read(path: String, format: InteractionFormat? = nil) throws -> InteractionLog {
        try read(path: path, options: InteractionReadOptions(format: format))
    }

    /// Reads interactions from `path` with `options`.
    public static func read(path: String, options: InteractionReadOptions) throws -> InteractionLog {
        let (file, dialect) = try resolve(path: path, format: options.format)
        return try parse(try LineSource.open(file), name: file, dialect: dialect, options: options)
    }

    /// Where a reader's lines come from: a file read in chunks (plain, or gzip decompressed as it is
    /// read: its text is never held whole), or bytes in memory (a test's text).
    public enum LineSource {
        case bytes([UInt8])
        case file(path: String, size: Int)
        /// `size`: an estimate of the decompressed size for sizing: the gzip trailer's (its last
        /// member's, modulo 4 GiB; capped at deflate's largest ratio, 1,032:1, against a crafted
        /// trailer), or 3x the compressed size when that is larger.
        case gzip(path: String, size: Int)

        /// The file at `path`, told plain from gzip by its first two bytes.
        public static func open(_ path: String) throws -> LineSource {
            try TextScanner.checkFile(path)
            guard let handle = FileHandle(forReadingAtPath: path) else {
                throw DataError.unreadable(path: path, reason: "cannot be read (permissions?)")
            }
            defer { try? handle.close() }
            // stat(2) follows a symbolic link to the file it names (attributesOfItem would size the link).
            var info = stat()
            let size = stat(path, &info) == 0 ? Int(info.st_size) : 0
            let head = [UInt8]((try? handle.read(upToCount: 2)) ?? Data())
            guard head == [0x1F, 0x8B] else { return .file(path: path, size: size) }
            var trailer = 0
            if size >= 22, (try? handle.seek(toOffset: UInt64(size - 4))) != nil, let last = try? handle.read(upToCount: 4), last.count == 4 {
                trailer = last.reversed().reduce(0) { $0 << 8 | Int($1) }
            }
            return .gzip(path: path, size: max(min(trailer, 1032 * size), 3 * size))
        }

        /// Bytes of text (for sizing the columns).
        var byteCount: Int {
            switch self {
            case .bytes(let b): return b.count
            case .file(_, let size), .gzip(_, let size): return size
            }
        }

        /// Each line with its 1-based number; a UTF-8 byte-order mark (spreadsheet exports) is
        /// removed from the first. Return false from `body` to stop.
        func forEachLine(_ body: (Int, UnsafeBufferPointer<UInt8>) throws -> Bool) throws {
            let bom: [UInt8] = [0xEF, 0xBB, 0xBF]
            func strip(_ number: Int, _ line: UnsafeBufferPointer<UInt8>) throws -> Bool {
                if number == 1, line.count >= 3, line[0] == bom[0], line[1] == bom[1], line[2] == bom[2] {
                    return try body(number, UnsafeBufferPointer(rebasing: line[3...]))
                }
                return try body(number, line)
            }
            switch self {
            case .bytes(let bytes): try bytes.withUnsafeBufferPointer { try TextScanner.forEachLine($0, strip) }
            case .file(let path, _): try TextScanner.forEachLine(inFile: path, strip)
            // More text than the columns made of it would fit in is refused by name.
            case .gzip(let path, _):
                try TextScanner.forEachLine(inGzipFile: path, limit: Int(Double(MemoryBudget.bytes) / InteractionReader.bytesPerTextByte), strip)
            }
        }
    }

    /// Finds the file and dialect for a path and an optional format.
    public static func resolve(path: String, format: InteractionFormat?) throws -> (file: String, dialect: Dialect) {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw DataError.unreadable(path: path, reason: "no such file or folder")
        }
        if isDirectory.boolValue {
            guard format == nil || format == .movielens else {
                throw DataError.unreadable(path: path, reason: "is a folder; give a file, or --format movielens for a MovieLens folder")
            }
            for name in ["ratings.dat", "u.data", "ratings.csv"] {
                let candidate = (path as NSString).appendingPathComponent(name)
                if FileManager.default.fileExists(atPath: candidate) {
                    return (candidate, movieLensDialect(name: name))
                }
            }
            throw DataError.unreadable(path: path, reason: "folder holds none of ratings.dat, u.data, ratings.csv (not a MovieLens folder)")
        }
        var name = (path as NSString).lastPathComponent.lowercased()
        if name.hasSuffix(".gz") { name.removeLast(3) }
        switch format {
        case .tsv: return (path, .protocolTSV)
        case .csv: return (path, .csv)
        case .jsonl: return (path, .jsonLines)
        case .movielens:
            if ["ratings.dat", "u.data", "ratings.csv"].contains(name) { return (path, movieLensDialect(name: name)) }
            return (path, try sniffMovieLens(path))
        case nil:
            if ["ratings.dat", "u.data", "ratings.csv"].contains(name) { return (path, movieLensDialect(name: name)) }
            if name.hasSuffix(".csv") { return (path, .csv) }
            if name.hasSuffix(".jsonl") || name.hasSuffix(".ndjson") { return (path, .jsonLines) }
            if name.hasSuffix(".dat") { return (path, .movieLensDat) }
            return (path, .protocolTSV)
        }
    }

    /// Decodes gzip bytes held in memory (all members); the plain twin of the streaming decoder the
    /// readers use (`TextScanner.forEachLine(inGzipFile:)`). `name` is used in messages.
    public static func gunzip(_ bytes: [UInt8], name: String, limit: Int = MemoryBudget.bytes) throws -> [UInt8] {
        var out: UnsafeMutablePointer<UInt8>? = nil
        var count = 0
        var message = [CChar](repeating: 0, count: 160)
        let status = bytes.withUnsafeBufferPointer { input in
            affinity_gunzip(input.baseAddress, input.count, limit, &out, &count, &message, message.count)
        }
        guard status == 0, let out else {
            throw TextScanner.gzipError(name, message)
        }
        defer { free(out) }
        return Array(UnsafeBufferPointer(start: out, count: count))
    }

    private static func movieLensDialect(name: String) -> Dialect {
        switch name {
        case "ratings.dat": return .movieLensDat
        case "u.data": return .movieLens100K
        default: return .movieLensCSV
        }
    }

    /// Guesses the MovieLens layout of a renamed file from its first line.
    private static func sniffMovieLens(_ path: String) throws -> Dialect {
        var text = ""
        try LineSource.open(path).forEachLine { _, line in
            text = String(decoding: line, as: UTF8.self)
            return false
        }
        if text.contains("::") { return .movieLensDat }
        if text.contains("\t") { return .movieLens100K }
        if text.contains(",") { return .movieLensCSV }
        throw DataError.malformedLine(file: path, line: 1, reason: "not a MovieLens rating line (expected '::', tab or comma separators)")
    }

    /// Parses a file's bytes. `name` is used in messages.
    public static func parse(_ bytes: [UInt8], name: String, dialect: Dialect, options: InteractionReadOptions = .init()) throws -> InteractionLog {
        try parse(.bytes(bytes), name: name, dialect: dialect, options: options)
    }

    /// Memory the columns, vocabularies and the CSR built from a log take per byte of its text
    /// (measured: 1.9 GB peak for a 1.3 GB, 50M-line file; files of very short lines need more
    /// per byte).
    static let bytesPerTextByte = 1.5

    /// Parses the lines of `source`. `name` is used in messages.
    public static func parse(_ source: LineSource, name: String, dialect: Dialect, options: InteractionReadOptions = .init()) throws -> InteractionLog {
        // Refuse before reading what would not fit (`bytesPerTextByte`); text held in memory counts too.
        let held: Double = if case .bytes = source { 1 } else { 0 }
        try MemoryBudget.check(bytes: Double(source.byteCount) * (bytesPerTextByte + held),
                               for: "reading \(name) (\(MemoryBudget.describe(Double(source.byteCount))) of text)")
        if dialect.fixedLayout, options.columns != nil || options.header != .auto || options.delimiter != nil {
            throw DataError.invalidSetting(name: "columns", reason: "\(name) is a MovieLens \(dialect == .movieLensDat ? "ratings.dat" : "u.data") file with fixed columns; --columns, --header, --no-header and --delimiter do not apply")
        }
        if dialect == .jsonLines {
            guard options.delimiter == nil, options.header == .auto else {
                throw DataError.invalidSetting(name: "delimiter", reason: "\(name) is JSON Lines: --delimiter, --header and --no-header do not apply (keys name the columns)")
            }
            return try parseJSONLines(source, name: name, columns: options.columns)
        }
        var builder = LogBuilder(estimate: source.byteCount / 20)
        var expectedFields: Int?
        var sawFirstLine = false
        var fields: [Range<Int>] = []
        let delimiter = options.delimiter?.bytes ?? dialect.delimiter
        let quoted = dialect.quoted
        // Columns by position (docs/formats.md), by the header's names, or as --columns says.
        var layout = ColumnLayout.positional(range: dialect.fieldRange)

        func names(of line: UnsafeBufferPointer<UInt8>) -> [String] {
            if quoted { return TextScanner.splitCSV(line, delimiter: delimiter[0]) ?? [] }
            _ = TextScanner.split(line, delimiter: delimiter, into: &fields, limit: 4096)
            return fields.map { String(decoding: UnsafeBufferPointer(rebasing: line[$0]), as: UTF8.self) }
        }

        do {
            try source.forEachLine { lineNumber, line in
                if TextScanner.isBlank(line) { return true }
                if !sawFirstLine {
                    sawFirstLine = true
                    if !dialect.fixedLayout,
                       let resolved = try ColumnLayout.resolve(firstLine: names(of: line), startsWithUser: startsWithUser(line),
                                                               options: options, range: dialect.fieldRange, file: name) {
                        layout = resolved.layout
                        if resolved.isHeader { return true }
                    }
                }
                var fieldCount: Int
                var csvFields: [String]? = nil
                if quoted && line.contains(UInt8(ascii: "\"")) {
                    guard let parsed = TextScanner.splitCSV(line, delimiter: delimiter[0]) else {
                        throw DataError.malformedLine(file: name, line: lineNumber, reason: "unterminated quoted field")
                    }
                    csvFields = parsed
                    fieldCount = parsed.count
                } else {
                    fieldCount = TextScanner.split(line, delimiter: delimiter, into: &fields, limit: max(5, layout.neededFields))
                }
                let separator = dialect == .movieLensDat ? "'::'" : FieldDelimiter(bytes: delimiter).description
                try layout.check(fieldCount: fieldCount, separator: separator, file: name, line: lineNumber)
                if let expected = expectedFields, expected != fieldCount {
                    throw DataError.malformedLine(file: name, line: lineNumber,
                        reason: "has \(fieldCount) fields but earlier lines have \(expected); every line must have the same columns")
                }
                expectedFields = fieldCount

                func withField<T>(_ k: Int, _ body: (UnsafeBufferPointer<UInt8>) throws -> T) rethrows -> T {
                    if let csvFields {
                        var s = csvFields[k]
                        return try s.withUTF8 { try body($0) }
                    }
                    return try body(UnsafeBufferPointer(rebasing: line[fields[k]]))
                }
                try withField(layout.user) { try builder.addUser($0, file: name, line: lineNumber) }
                try withField(layout.item) { try builder.addItem($0, file: name, line: lineNumber) }
                if let column = layout.rating(fieldCount) {
                    try withField(column) { try builder.addRating($0, file: name, line: lineNumber) }
                }
                if let column = layout.timestamp(fieldCount) {
                    try withField(column) { try builder.addTimestamp($0, file: name, line: lineNumber) }
                }
                return true
            }
        }
        return try builder.finish(source: name)
    }

    /// JSON Lines: each non-blank line one object. User and item values may be strings or integers
    /// (the same ID either way); a rating is a number or a numeric string; a timestamp is Unix
    /// seconds or an ISO-8601 string. The first object fixes which keys are read. Flat objects
    /// without escapes are scanned in place (`FlatJSONObject`); any other line goes through
    /// Foundation's JSON parser, with the same results.
    /// `referenceOnly` sends every line through Foundation (the tests' reference for the fast path).
    static func parseJSONLines(_ source: LineSource, name: String, columns: ColumnSelection?, referenceOnly: Bool = false) throws -> InteractionLog {
        var builder = LogBuilder(estimate: source.byteCount / 60)
        if let columns, let positional = columns.roles.first(where: { if case .position = $0.1 { return true } else { return false } }) {
            throw DataError.invalidSetting(name: "columns", reason: "\(name) is JSON Lines: name the key of \(positional.0), not a position")
        }
        // The keys of the four roles (user, item, rating, timestamp), fixed by the first object.
        var keys: [String?]? = nil
        var keyBytes: [[UInt8]?] = []
        var flat = FlatJSONObject()
        do {
            try source.forEachLine { lineNumber, line in
                if TextScanner.isBlank(line) { return true }
                let fast = !referenceOnly && flat.scan(line)
                var object: [String: Any]? = nil
                if !fast {
                    do {
                        guard let parsed = try JSONSerialization.jsonObject(with: Data(line), options: [.fragmentsAllowed]) as? [String: Any] else {
                            throw DataError.malformedLine(file: name, line: lineNumber, reason: "is not a JSON object")
                        }
                        object = parsed
                    } catch let error as DataError {
                        throw error
                    } catch {
                        throw DataError.malformedLine(file: name, line: lineNumber, reason: "is not valid JSON")
                    }
                }
                if keys == nil {
                    let present = object.map { Array($0.keys) } ?? flat.keys(in: line)
                    keys = try Self.jsonKeys(present, columns: columns, file: name, line: lineNumber)
                    keyBytes = keys!.map { $0.map { Array($0.utf8) } }
                }
                for (r, key) in keys!.enumerated() {
                    guard let key else { continue }
                    func add(_ f: UnsafeBufferPointer<UInt8>) throws {
                        switch r {
                        case 0: try builder.addUser(f, file: name, line: lineNumber)
                        case 1: try builder.addItem(f, file: name, line: lineNumber)
                        case 2: try builder.addRating(f, file: name, line: lineNumber)
                        default: try builder.addTimestamp(f, file: name, line: lineNumber)
                        }
                    }
                    if fast, let value = flat.value(of: keyBytes[r]!, in: line) {
                        switch value {
                        case .text(let range), .number(let range): try add(UnsafeBufferPointer(rebasing: line[range]))
                        case .null: throw DataError.malformedLine(file: name, line: lineNumber, reason: "has no '\(key)' (earlier lines have it)")
                        case .other: throw DataError.malformedLine(file: name, line: lineNumber, reason: "'\(key)' is neither a string nor a number")
                        }
                        continue
                    }
                    if fast { throw DataError.malformedLine(file: name, line: lineNumber, reason: "has no '\(key)' (earlier lines have it)") }
                    var text: String
                    switch object![key] {
                    case let s as String: text = s
                    case let n as NSNumber:
                        text = Int64(exactly: n.doubleValue).map { String($0) } ?? n.stringValue
                    case nil, is NSNull:
                        throw DataError.malformedLine(file: name, line: lineNumber, reason: "has no '\(key)' (earlier lines have it)")
                    default:
                        throw DataError.malformedLine(file: name, line: lineNumber, reason: "'\(key)' is neither a string nor a number")
                    }
                    try text.withUTF8 { try add($0) }
                }
                return true
            }
        }
        return try builder.finish(source: name)
    }

    /// The keys of user, item, rating and timestamp among a first object's keys: as `columns`
    /// names them, else by the header aliases.
    static func jsonKeys(_ present: [String], columns: ColumnSelection?, file: String, line: Int) throws -> [String?] {
        func key(_ role: String, _ reference: ColumnReference?) throws -> String? {
            if case .name(let wanted)? = reference {
                guard let k = present.first(where: { $0.lowercased() == wanted.lowercased() }) else {
                    throw DataError.malformedLine(file: file, line: line, reason: "--columns names \(role)=\(wanted) but the first object has no such key (keys: \(present.sorted().joined(separator: ", ")))")
                }
                return k
            }
            return present.first { ColumnLayout.aliases[role]!.contains($0.lowercased()) }
        }
        guard let user = try key("user", columns?.user), let item = try key("item", columns?.item) else {
            throw DataError.malformedLine(file: file, line: line, reason: "the first object names no user and item key (keys: \(present.sorted().joined(separator: ", "))); --columns user=KEY,item=KEY says which")
        }
        return [user, item, try key("rating", columns?.rating), try key("timestamp", columns?.timestamp)]
    }

    /// A header line starts with `user` (docs/formats.md), in any case (`userId` in MovieLens CSV).
    private static func startsWithUser(_ line: UnsafeBufferPointer<UInt8>) -> Bool {
        let word: [UInt8] = Array("user".utf8)
        guard line.count >= 4 else { return false }
        for k in 0..<4 where (line[k] | 0x20) != word[k] { return false }
        return true
    }
}

/// The columns of a log under construction, with the checks every reader applies to a field.
struct LogBuilder {
    var userVocab = VocabularyBuilder()
    var itemVocab = VocabularyBuilder()
    var users = [Int32](), items = [Int32](), ratings = [Float](), timestamps = [Int64]()

    init(estimate: Int) {
        users.reserveCapacity(estimate)
        items.reserveCapacity(estimate)
    }

    mutating func addUser(_ f: UnsafeBufferPointer<UInt8>, file: String, line: Int) throws {
        guard !f.isEmpty else { throw DataError.malformedLine(file: file, line: line, reason: "user field is empty") }
        users.append(userVocab.index(f))
    }

    mutating func addItem(_ f: UnsafeBufferPointer<UInt8>, file: String, line: Int) throws {
        guard !f.isEmpty else { throw DataError.malformedLine(file: file, line: line, reason: "item field is empty") }
        items.append(itemVocab.index(f))
    }

    mutating func addRating(_ f: UnsafeBufferPointer<UInt8>, file: String, line: Int) throws {
        guard let v = TextScanner.parseFloat(f) else {
            throw DataError.malformedLine(file: file, line: line, reason: "rating field is not a number: \(TextScanner.quoted(f))")
        }
        ratings.append(v)
    }

    mutating func addTimestamp(_ f: UnsafeBufferPointer<UInt8>, file: String, line: Int) throws {
        guard let v = TextScanner.parseInt(f) ?? TextScanner.parseISODate(f) else {
            throw DataError.malformedLine(file: file, line: line, reason: "timestamp field is neither Unix seconds nor an ISO-8601 date: \(TextScanner.quoted(f))")
        }
        timestamps.append(v)
    }

    func finish(source: String) throws -> InteractionLog {
        guard !users.isEmpty else { throw DataError.emptyFile(file: source) }
        return InteractionLog(source: source, users: userVocab.vocabulary, items: itemVocab.vocabulary,
                              userIndices: users, itemIndices: items,
                              ratings: ratings.isEmpty ? nil : ratings,
                              timestamps: timestamps.isEmpty ? nil : timestamps)
    }
}

/// Which column holds what. By position (docs/formats.md: user, item, rating, timestamp, as many as
/// a line has), by a header's names in any order and case with common aliases (columns a header
/// names otherwise are ignored), or as `--columns` says.
struct ColumnLayout {
    var user = 0, item = 1
    var namedRating: Int?, namedTimestamp: Int?
    /// The column count a header fixed (nil: no header).
    var columns: Int?
    /// Positional by count (rating third, timestamp fourth when present), within this range.
    var positionalRange: ClosedRange<Int>?

    static func positional(range: ClosedRange<Int>) -> ColumnLayout {
        var layout = ColumnLayout()
        layout.positionalRange = range
        return layout
    }

    static let aliases: [String: Set<String>] = [
        "user": ["user", "userid", "user_id", "uid", "customer", "customerid", "customer_id", "visitorid", "visitor_id",
                 "reviewerid", "reviewer_id", "member_id", "account_id", "session_id", "client_id"],
        "item": ["item", "itemid", "item_id", "iid", "movieid", "movie_id", "productid", "product_id", "asin", "sku",
                 "song_id", "track_id", "article_id", "book_id", "isbn"],
        "rating": ["rating", "score", "stars", "overall", "rating_value", "value"],
        "timestamp": ["timestamp", "ts", "time", "date", "datetime", "unixreviewtime", "event_time", "created_at"],
    ]

    private init() {}

    /// Fields a line needs so that every chosen column exists.
    var neededFields: Int { [user, item, namedRating ?? 0, namedTimestamp ?? 0].max()! + 1 }

    func rating(_ fieldCount: Int) -> Int? {
        positionalRange != nil ? (fieldCount >= 3 ? 2 : nil) : namedRating
    }

    func timestamp(_ fieldCount: Int) -> Int? {
        positionalRange != nil ? (fieldCount >= 4 ? 3 : nil) : namedTimestamp
    }

    func check(fieldCount: Int, separator: String, file: String, line: Int) throws {
        if let columns {
            guard fieldCount == columns else {
                throw DataError.malformedLine(file: file, line: line, reason: "has \(fieldCount) \(separator)-separated fields but the header names \(columns)")
            }
        } else if let range = positionalRange {
            guard range.contains(fieldCount) else {
                throw DataError.malformedLine(file: file, line: line,
                    reason: "expected \(range.lowerBound == range.upperBound ? "\(range.lowerBound)" : "\(range.lowerBound) to \(range.upperBound)") \(separator)-separated fields, found \(fieldCount)"
                        + (fieldCount == 1 ? " (--delimiter sets the separator)" : "")
                        + (fieldCount > range.upperBound ? " (--columns says which columns hold user, item, rating and timestamp)" : ""))
            }
        } else if fieldCount < neededFields {
            throw DataError.malformedLine(file: file, line: line, reason: "has \(fieldCount) \(separator)-separated fields but --columns reads column \(neededFields)")
        }
    }

    /// Decides from the first non-blank line (split into `names`) whether it is a header and which
    /// columns hold what. Nil keeps the positional layout and reads the line as data.
    static func resolve(firstLine names: [String], startsWithUser: Bool, options: InteractionReadOptions,
                        range: ClosedRange<Int>, file: String) throws -> (layout: ColumnLayout, isHeader: Bool)? {
        let clean = names.map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "\" \t\r")) }
        let lowered = clean.map { $0.lowercased() }
        let selection = options.columns
        var isHeader: Bool
        switch options.header {
        case .present: isHeader = true
        case .absent: isHeader = false
        case .auto:
            let aliased = { (role: String) in lowered.contains { aliases[role]!.contains($0) } }
            isHeader = (selection?.namesAny ?? false) || (aliased("user") && aliased("item")) || startsWithUser
        }
        if !isHeader {
            guard let selection else { return nil }
            var layout = ColumnLayout()
            for (role, reference) in selection.roles {
                guard let reference else { continue }
                guard case .position(let p) = reference else {
                    throw DataError.invalidSetting(name: "columns", reason: "\(role)=\(reference) names a header column, but \(file) has no header (--no-header); give a 1-based position")
                }
                layout.set(role, p - 1)
            }
            guard selection.user != nil, selection.item != nil else {
                throw DataError.invalidSetting(name: "columns", reason: "without a header, --columns must give the positions of both user and item")
            }
            return (layout, false)
        }
        // A header: names from --columns first, then aliases.
        var layout = ColumnLayout()
        layout.columns = clean.count
        var found: [String: Int] = [:]
        for (role, reference) in selection?.roles ?? [] {
            switch reference {
            case .name(let wanted)?:
                guard let k = lowered.firstIndex(of: wanted.lowercased()) else {
                    throw DataError.malformedLine(file: file, line: 1, reason: "--columns names \(role)=\(wanted) but the header has no such column (it has: \(clean.joined(separator: ", ")))")
                }
                found[role] = k
            case .position(let p)?:
                guard p <= clean.count else {
                    throw DataError.malformedLine(file: file, line: 1, reason: "--columns puts \(role) in column \(p) but the header has \(clean.count)")
                }
                found[role] = p - 1
            case nil: break
            }
        }
        for (k, name) in lowered.enumerated() {
            for (role, words) in aliases where found[role] == nil && words.contains(name) && !found.values.contains(k) { found[role] = k }
        }
        guard let user = found["user"], let item = found["item"] else {
            // A header in the docs/formats.md order whose names we do not know: positional, as before.
            if selection == nil, startsWithUser, range.contains(clean.count) {
                return (.positional(range: range), true)
            }
            throw DataError.malformedLine(file: file, line: 1, reason: "the header (\(clean.joined(separator: ", "))) names no \(found["user"] == nil ? "user" : "item") column; --columns user=NAME,item=NAME says which (or --no-header when the first line is data)")
        }
        layout.user = user
        layout.item = item
        layout.namedRating = found["rating"]
        layout.namedTimestamp = found["timestamp"]
        return (layout, true)
    }

    private mutating func set(_ role: String, _ column: Int) {
        switch role {
        case "user": user = column
        case "item": item = column
        case "rating": namedRating = column
        default: namedTimestamp = column
        }
    }
}

/// Writes interaction rows as docs/formats.md TSV.
public enum InteractionWriter {
    /// The TSV text of `rows` of `log` (header `user\titem[\trating[\ttimestamp]]`).
    public static func tsv(_ log: InteractionLog, rows: [Int]) -> String {
        var out = "user\titem"
        if log.ratings != nil { out += "\trating" }
        if log.timestamps != nil { out += "\ttimestamp" }
        out += "\n"
        out.reserveCapacity(rows.count * 24)
        for r in rows {
            out += log.users[Int(log.userIndices[r])]
            out += "\t"
            out += log.items[Int(log.itemIndices[r])]
            if let ratings = log.ratings { out += "\t" + formatRating(ratings[r]) }
            if let timestamps = log.timestamps {
                out += "\t"
                out += String(timestamps[r])
            }
            out += "\n"
        }
        return out
    }

    /// Integral ratings print without a decimal point (`5`, not `5.0`), as in the shared splits.
    public static func formatRating(_ v: Float) -> String {
        if v == v.rounded() && abs(v) < 1e9 { return String(Int(v)) }
        return String(v)
    }
}

/// A one-line JSON object whose values are strings without escapes, numbers, booleans or null,
/// scanned in place: the fast path of JSON Lines. `scan` says false for anything else (nesting,
/// escapes, malformed text), and the reader hands that line to Foundation's parser.
struct FlatJSONObject {
    enum Value: Equatable {
        /// The bytes between the quotes.
        case text(Range<Int>)
        /// An integer in canonical form (digits, no leading zero, optional minus); other numbers
        /// take the slow path, so `17.0` becomes the ID `17` in both.
        case number(Range<Int>)
        case null
        /// true or false.
        case other
    }

    private(set) var fields: [(key: Range<Int>, value: Value)] = []

    mutating func scan(_ line: UnsafeBufferPointer<UInt8>) -> Bool {
        fields.removeAll(keepingCapacity: true)
        var c = Cursor(line: line)
        c.skipSpace()
        guard c.take(UInt8(ascii: "{")) else { return false }
        c.skipSpace()
        if !c.take(UInt8(ascii: "}")) {
            while true {
                c.skipSpace()
                guard let key = c.string() else { return false }
                c.skipSpace()
                guard c.take(UInt8(ascii: ":")) else { return false }
                c.skipSpace()
                guard let value = c.value() else { return false }
                fields.append((key, value))
                c.skipSpace()
                if c.take(UInt8(ascii: ",")) { continue }
                guard c.take(UInt8(ascii: "}")) else { return false }
                break
            }
        }
        c.skipSpace()
        return c.i == line.count
    }

    /// A position in one line; methods advance it on success.
    private struct Cursor {
        let line: UnsafeBufferPointer<UInt8>
        var i = 0

        init(line: UnsafeBufferPointer<UInt8>) { self.line = line }

        mutating func skipSpace() {
            while i < line.count, line[i] == 0x20 || line[i] == 0x09 || line[i] == 0x0D { i += 1 }
        }

        mutating func take(_ byte: UInt8) -> Bool {
            guard i < line.count, line[i] == byte else { return false }
            i += 1
            return true
        }

        /// A string without escapes or control characters: the range between the quotes.
        mutating func string() -> Range<Int>? {
            guard i < line.count, line[i] == UInt8(ascii: "\"") else { return nil }
            let start = i + 1
            var j = start
            while j < line.count, line[j] != UInt8(ascii: "\"") {
                if line[j] == UInt8(ascii: "\\") || line[j] < 0x20 { return nil }
                j += 1
            }
            guard j < line.count else { return nil }
            i = j + 1
            return start..<j
        }

        mutating func value() -> Value? {
            guard i < line.count else { return nil }
            switch line[i] {
            case UInt8(ascii: "\""):
                return string().map { .text($0) }
            case UInt8(ascii: "-"), 0x30...0x39:
                let start = i
                var j = i
                if line[j] == UInt8(ascii: "-") { j += 1 }
                let first = j
                while j < line.count, line[j] >= 0x30 && line[j] <= 0x39 { j += 1 }
                // Only canonical integers here: a fraction or exponent takes the slow path.
                guard j > first, j - first == 1 || line[first] != 0x30 else { return nil }
                if first > start, line[first] == 0x30 { return nil }   // -0 is the ID 0 through Foundation
                if j < line.count, line[j] == UInt8(ascii: ".") || line[j] == UInt8(ascii: "e") || line[j] == UInt8(ascii: "E") { return nil }
                i = j
                return .number(start..<j)
            case UInt8(ascii: "n"): return word("null") ? .null : nil
            case UInt8(ascii: "t"): return word("true") ? .other : nil
            case UInt8(ascii: "f"): return word("false") ? .other : nil
            default: return nil
            }
        }

        mutating func word(_ text: StaticString) -> Bool {
            let count = text.utf8CodeUnitCount
            guard i + count <= line.count else { return false }
            for k in 0..<count where line[i + k] != text.utf8Start[k] { return false }
            i += count
            return true
        }
    }

    /// The keys of the last scanned object.
    func keys(in line: UnsafeBufferPointer<UInt8>) -> [String] {
        fields.map { String(decoding: UnsafeBufferPointer(rebasing: line[$0.key]), as: UTF8.self) }
    }

    /// The value of `key` (exact bytes) in the last scanned object; nil when absent.
    func value(of key: [UInt8], in line: UnsafeBufferPointer<UInt8>) -> Value? {
        for f in fields where f.key.count == key.count && line[f.key].elementsEqual(key) { return f.value }
        return nil
    }
}

import Foundation

/// The interaction file layouts Affinity reads.
public enum InteractionFormat: String, CaseIterable, Sendable, Codable {
    /// PROTOCOL.md TSV: `user<TAB>item[<TAB>rating[<TAB>timestamp]]`, optional header starting with `user`.
    case tsv
    /// Comma-separated `user,item[,rating[,timestamp]]`, RFC 4180 quoting, optional header starting with `user`.
    case csv
    /// A MovieLens file chosen by name: `u.data` (100K, tab), `ratings.dat` (1M/10M, `::`),
    /// `ratings.csv` (20M/25M/latest, header); a MovieLens folder is searched for one of them.
    case movielens
}

/// Streaming parser of interaction files. It reads the file's bytes once, splits fields in place
/// and looks decimal IDs up by value, so ml-1m's 1,000,209 lines load in a fraction of a second.
public enum InteractionReader {
    /// The concrete dialect of one file.
    public enum Dialect: String, Sendable {
        case protocolTSV, csv, movieLens100K, movieLensDat, movieLensCSV

        var delimiter: [UInt8] {
            switch self {
            case .protocolTSV, .movieLens100K: return [0x09]
            case .csv, .movieLensCSV: return [UInt8(ascii: ",")]
            case .movieLensDat: return [UInt8(ascii: ":"), UInt8(ascii: ":")]
            }
        }
        var fieldRange: ClosedRange<Int> {
            switch self {
            case .protocolTSV, .csv: return 2...4
            case .movieLens100K, .movieLensDat, .movieLensCSV: return 4...4
            }
        }
        var quoted: Bool { self == .csv || self == .movieLensCSV }
    }

    /// Reads interactions from `path` (a file, or with `.movielens` a MovieLens folder).
    /// With no format, it is guessed from the name: `.tsv` -> tsv, `.csv` -> csv unless it is
    /// `ratings.csv`, and MovieLens names -> movielens.
    public static func read(path: String, format: InteractionFormat? = nil) throws -> InteractionLog {
        let (file, dialect) = try resolve(path: path, format: format)
        let bytes = try TextScanner.readBytes(file)
        return try parse(bytes, name: file, dialect: dialect)
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
        let name = (path as NSString).lastPathComponent.lowercased()
        switch format {
        case .tsv: return (path, .protocolTSV)
        case .csv: return (path, .csv)
        case .movielens:
            if ["ratings.dat", "u.data", "ratings.csv"].contains(name) { return (path, movieLensDialect(name: name)) }
            return (path, try sniffMovieLens(path))
        case nil:
            if ["ratings.dat", "u.data", "ratings.csv"].contains(name) { return (path, movieLensDialect(name: name)) }
            if name.hasSuffix(".csv") { return (path, .csv) }
            if name.hasSuffix(".dat") { return (path, .movieLensDat) }
            return (path, .protocolTSV)
        }
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
        let bytes = try TextScanner.readBytes(path)
        let firstLine = bytes.prefix { $0 != 0x0A }
        let text = String(decoding: firstLine, as: UTF8.self)
        if text.contains("::") { return .movieLensDat }
        if text.contains("\t") { return .movieLens100K }
        if text.contains(",") { return .movieLensCSV }
        throw DataError.malformedLine(file: path, line: 1, reason: "not a MovieLens rating line (expected '::', tab or comma separators)")
    }

    /// Parses a file's bytes. `name` is used in messages.
    public static func parse(_ bytes: [UInt8], name: String, dialect: Dialect) throws -> InteractionLog {
        var userVocab = VocabularyBuilder()
        var itemVocab = VocabularyBuilder()
        var users = [Int32](), items = [Int32](), ratings = [Float](), timestamps = [Int64]()
        let estimate = bytes.count / 20
        users.reserveCapacity(estimate)
        items.reserveCapacity(estimate)
        var expectedFields: Int?
        var sawData = false
        var fields: [Range<Int>] = []
        let delimiter = dialect.delimiter
        let range = dialect.fieldRange
        // Columns by position (PROTOCOL.md), or by the header's names when it has them.
        var layout = ColumnLayout.positional

        // A UTF-8 byte-order mark (spreadsheet exports) is not part of the first field.
        let bom = bytes.starts(with: [0xEF, 0xBB, 0xBF]) ? 3 : 0
        try bytes.withUnsafeBufferPointer { whole in
            let all = UnsafeBufferPointer(rebasing: whole[bom...])
            try TextScanner.forEachLine(all) { lineNumber, line in
                if TextScanner.isBlank(line) { return true }
                if !sawData, dialect != .movieLensDat, dialect != .movieLens100K {
                    let names = dialect.quoted ? (TextScanner.splitCSV(line) ?? []) : {
                        _ = TextScanner.split(line, delimiter: delimiter, into: &fields, limit: 64)
                        return fields.map { String(decoding: UnsafeBufferPointer(rebasing: line[$0]), as: UTF8.self) }
                    }()
                    if let named = ColumnLayout(header: names) {
                        layout = named
                        sawData = true
                        return true
                    }
                }
                if !sawData && startsWithUser(line) {
                    sawData = true
                    return true
                }
                sawData = true
                var fieldCount: Int
                var csvFields: [String]? = nil
                if dialect.quoted && line.contains(UInt8(ascii: "\"")) {
                    guard let parsed = TextScanner.splitCSV(line) else {
                        throw DataError.malformedLine(file: name, line: lineNumber, reason: "unterminated quoted field")
                    }
                    csvFields = parsed
                    fieldCount = parsed.count
                } else {
                    fieldCount = TextScanner.split(line, delimiter: delimiter, into: &fields, limit: max(5, layout.columns ?? 0))
                }
                let separator = dialect == .movieLensDat ? "'::'" : (delimiter == [0x09] ? "tab" : "comma")
                if let columns = layout.columns {
                    guard fieldCount == columns else {
                        throw DataError.malformedLine(file: name, line: lineNumber, reason: "has \(fieldCount) \(separator)-separated fields but the header names \(columns)")
                    }
                } else if !range.contains(fieldCount) {
                    throw DataError.malformedLine(file: name, line: lineNumber,
                        reason: "expected \(range.lowerBound == range.upperBound ? "\(range.lowerBound)" : "\(range.lowerBound) to \(range.upperBound)") \(separator)-separated fields, found \(fieldCount)")
                }
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
                let user: Int32 = try withField(layout.user) { f in
                    guard !f.isEmpty else { throw DataError.malformedLine(file: name, line: lineNumber, reason: "user field is empty") }
                    return userVocab.index(f)
                }
                let item: Int32 = try withField(layout.item) { f in
                    guard !f.isEmpty else { throw DataError.malformedLine(file: name, line: lineNumber, reason: "item field is empty") }
                    return itemVocab.index(f)
                }
                users.append(user)
                items.append(item)
                if let column = layout.rating(fieldCount) {
                    let rating: Float = try withField(column) { f in
                        guard let v = TextScanner.parseFloat(f) else {
                            throw DataError.malformedLine(file: name, line: lineNumber, reason: "rating field is not a number: \(TextScanner.quoted(f))")
                        }
                        return v
                    }
                    ratings.append(rating)
                }
                if let column = layout.timestamp(fieldCount) {
                    let time: Int64 = try withField(column) { f in
                        guard let v = TextScanner.parseInt(f) ?? TextScanner.parseISODate(f) else {
                            throw DataError.malformedLine(file: name, line: lineNumber, reason: "timestamp field is neither Unix seconds nor an ISO-8601 date: \(TextScanner.quoted(f))")
                        }
                        return v
                    }
                    timestamps.append(time)
                }
                return true
            }
        }
        guard !users.isEmpty else { throw DataError.emptyFile(file: name) }
        return InteractionLog(source: name, users: userVocab.vocabulary, items: itemVocab.vocabulary,
                              userIndices: users, itemIndices: items,
                              ratings: ratings.isEmpty ? nil : ratings,
                              timestamps: timestamps.isEmpty ? nil : timestamps)
    }

    /// A header line starts with `user` (PROTOCOL.md), in any case (`userId` in MovieLens CSV).
    private static func startsWithUser(_ line: UnsafeBufferPointer<UInt8>) -> Bool {
        let word: [UInt8] = Array("user".utf8)
        guard line.count >= 4 else { return false }
        for k in 0..<4 where (line[k] | 0x20) != word[k] { return false }
        return true
    }
}

/// Which column holds what. By position (PROTOCOL.md: user, item, rating, timestamp, as many as
/// a line has), or by a header's names, in any order and case, with common aliases; columns a
/// header names otherwise are ignored.
struct ColumnLayout {
    var user = 0, item = 1
    var namedRating: Int?, namedTimestamp: Int?
    /// The column count a header fixed (nil: positional).
    var columns: Int?

    static let positional = ColumnLayout()

    static let aliases: [String: Set<String>] = [
        "user": ["user", "userid", "user_id", "uid", "customer", "customerid", "customer_id", "visitorid", "visitor_id",
                 "reviewerid", "reviewer_id", "member_id", "account_id", "session_id"],
        "item": ["item", "itemid", "item_id", "iid", "movieid", "movie_id", "productid", "product_id", "asin", "sku",
                 "song_id", "track_id", "article_id"],
        "rating": ["rating", "score", "stars", "overall", "rating_value"],
        "timestamp": ["timestamp", "ts", "time", "date", "datetime", "unixreviewtime", "event_time", "created_at"],
    ]

    /// The layout a header's names give, or nil when they do not name both a user and an item column.
    init?(header names: [String]) {
        var found: [String: Int] = [:]
        for (k, raw) in names.enumerated() {
            let name = raw.trimmingCharacters(in: CharacterSet(charactersIn: "\" \t\r")).lowercased()
            for (role, words) in Self.aliases where words.contains(name) && found[role] == nil { found[role] = k }
        }
        guard let user = found["user"], let item = found["item"] else { return nil }
        self.user = user
        self.item = item
        namedRating = found["rating"]
        namedTimestamp = found["timestamp"]
        columns = names.count
    }

    private init() {}

    func rating(_ fieldCount: Int) -> Int? { columns == nil ? (fieldCount >= 3 ? 2 : nil) : namedRating }
    func timestamp(_ fieldCount: Int) -> Int? { columns == nil ? (fieldCount >= 4 ? 3 : nil) : namedTimestamp }
}

/// Writes interaction rows as PROTOCOL.md TSV.
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

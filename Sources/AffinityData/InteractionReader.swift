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

        // A UTF-8 byte-order mark (spreadsheet exports) is not part of the first field.
        let bom = bytes.starts(with: [0xEF, 0xBB, 0xBF]) ? 3 : 0
        try bytes.withUnsafeBufferPointer { whole in
            let all = UnsafeBufferPointer(rebasing: whole[bom...])
            try TextScanner.forEachLine(all) { lineNumber, line in
                if TextScanner.isBlank(line) { return true }
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
                    fieldCount = TextScanner.split(line, delimiter: delimiter, into: &fields, limit: 5)
                }
                let separator = dialect == .movieLensDat ? "'::'" : (delimiter == [0x09] ? "tab" : "comma")
                guard range.contains(fieldCount) else {
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
                let user: Int32 = try withField(0) { f in
                    guard !f.isEmpty else { throw DataError.malformedLine(file: name, line: lineNumber, reason: "user field is empty") }
                    return userVocab.index(f)
                }
                let item: Int32 = try withField(1) { f in
                    guard !f.isEmpty else { throw DataError.malformedLine(file: name, line: lineNumber, reason: "item field is empty") }
                    return itemVocab.index(f)
                }
                users.append(user)
                items.append(item)
                if fieldCount >= 3 {
                    let rating: Float = try withField(2) { f in
                        guard let v = TextScanner.parseFloat(f) else {
                            throw DataError.malformedLine(file: name, line: lineNumber, reason: "rating field is not a number: \(TextScanner.quoted(f))")
                        }
                        return v
                    }
                    ratings.append(rating)
                }
                if fieldCount >= 4 {
                    let time: Int64 = try withField(3) { f in
                        guard let v = TextScanner.parseInt(f) else {
                            throw DataError.malformedLine(file: name, line: lineNumber, reason: "timestamp field is not an integer: \(TextScanner.quoted(f))")
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

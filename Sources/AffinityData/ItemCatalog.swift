import Foundation

/// Item metadata: titles and genres by raw item ID.
///
/// Read from MovieLens `u.item` (100K), `movies.dat` (1M/10M; both ISO-8859-1, not UTF-8),
/// `movies.csv` (20M/latest; UTF-8 CSV), or Affinity's own `items.tsv`
/// (`item<TAB>title<TAB>genre|genre`, header `item\ttitle\tgenres`).
public struct ItemCatalog: Sendable, Codable, Equatable {
    public var titles: [String: String]
    public var genres: [String: [String]]
    /// The latest training interaction with each item (Unix seconds), when the training log had
    /// times: what the freshness re-ranker reads. Written by `affinity train` into a model's
    /// `items.json`; nil in catalogs read from metadata files.
    public var lastSeen: [String: Int64]?

    public init(titles: [String: String] = [:], genres: [String: [String]] = [:], lastSeen: [String: Int64]? = nil) {
        self.titles = titles
        self.genres = genres
        self.lastSeen = lastSeen
    }

    public var isEmpty: Bool { titles.isEmpty && genres.isEmpty && (lastSeen?.isEmpty ?? true) }

    /// This catalog with the titles and genres it lacks taken from `other` (a model trained on a
    /// log with times but no metadata keeps only `lastSeen`; the split's items.tsv has the rest).
    public func filling(from other: ItemCatalog?) -> ItemCatalog {
        guard let other else { return self }
        var out = self
        out.titles.merge(other.titles) { mine, _ in mine }
        out.genres.merge(other.genres) { mine, _ in mine }
        return out
    }

    /// Each item's latest interaction time in `log` (positive timestamps only; 0 marks an unknown
    /// time in MovieLens 1M), or nil when the log has no times.
    public static func lastSeen(in log: InteractionLog) -> [String: Int64]? {
        guard let times = log.timestamps else { return nil }
        var latest: [Int: Int64] = [:]
        for r in 0..<log.count where times[r] > 0 {
            let i = Int(log.itemIndices[r])
            latest[i] = max(latest[i] ?? 0, times[r])
        }
        guard !latest.isEmpty else { return nil }
        return Dictionary(uniqueKeysWithValues: latest.map { (log.items[$0.key], $0.value) })
    }
    public var count: Int { Set(titles.keys).union(genres.keys).count }

    /// The title of an item, or its ID when unknown.
    public func title(_ item: String) -> String { titles[item] ?? item }

    /// Genre names in MovieLens 100K order, used when `u.genre` is not beside `u.item`.
    static let movieLens100KGenres = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                                      "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                                      "Romance", "Sci-Fi", "Thriller", "War", "Western"]

    /// Reads metadata, choosing the layout by file name.
    public static func read(path: String) throws -> ItemCatalog {
        let name = (path as NSString).lastPathComponent.lowercased()
        let bytes = try TextScanner.readBytes(path)
        switch name {
        case "u.item": return try parseUItem(bytes, name: path)
        case "movies.dat": return try parseMoviesDat(bytes, name: path)
        case "movies.csv": return try parseMoviesCSV(bytes, name: path)
        default: return try parseItemsTSV(bytes, name: path)
        }
    }

    /// Looks for metadata beside an interaction file or in a MovieLens folder.
    public static func find(near path: String) -> String? {
        var isDirectory: ObjCBool = false
        _ = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
        let folder = isDirectory.boolValue ? path : (path as NSString).deletingLastPathComponent
        for name in ["u.item", "movies.dat", "movies.csv", "items.tsv"] {
            let candidate = (folder as NSString).appendingPathComponent(name)
            if FileManager.default.fileExists(atPath: candidate) { return candidate }
        }
        return nil
    }

    static func parseUItem(_ bytes: [UInt8], name: String) throws -> ItemCatalog {
        var genreNames = movieLens100KGenres
        let genreFile = ((name as NSString).deletingLastPathComponent as NSString).appendingPathComponent("u.genre")
        if let g = try? TextScanner.readBytes(genreFile) {
            let names = TextScanner.latin1(g).split(separator: "\n").compactMap { line -> (Int, String)? in
                let parts = line.split(separator: "|")
                guard parts.count == 2, let i = Int(parts[1].trimmingCharacters(in: .whitespaces)) else { return nil }
                return (i, String(parts[0]))
            }.sorted { $0.0 < $1.0 }.map(\.1)
            if !names.isEmpty { genreNames = names }
        }
        var catalog = ItemCatalog()
        try forEachLatin1Line(bytes) { lineNumber, line in
            let parts = line.split(separator: "|", omittingEmptySubsequences: false)
            guard parts.count >= 5 + genreNames.count else {
                throw DataError.malformedLine(file: name, line: lineNumber, reason: "expected \(5 + genreNames.count) '|'-separated fields, found \(parts.count)")
            }
            let id = String(parts[0])
            catalog.titles[id] = String(parts[1])
            let flags = parts[5..<(5 + genreNames.count)]
            catalog.genres[id] = zip(flags, genreNames).filter { $0.0 == "1" }.map(\.1)
        }
        return catalog
    }

    static func parseMoviesDat(_ bytes: [UInt8], name: String) throws -> ItemCatalog {
        var catalog = ItemCatalog()
        try forEachLatin1Line(bytes) { lineNumber, line in
            let parts = line.components(separatedBy: "::")
            guard parts.count == 3 else {
                throw DataError.malformedLine(file: name, line: lineNumber, reason: "expected MovieID::Title::Genres, found \(parts.count) fields")
            }
            catalog.titles[parts[0]] = parts[1]
            catalog.genres[parts[0]] = parts[2].split(separator: "|").map(String.init)
        }
        return catalog
    }

    static func parseMoviesCSV(_ bytes: [UInt8], name: String) throws -> ItemCatalog {
        var catalog = ItemCatalog()
        try bytes.withUnsafeBufferPointer { all in
            try TextScanner.forEachLine(all) { lineNumber, line in
                if TextScanner.isBlank(line) { return true }
                guard let fields = TextScanner.splitCSV(line) else {
                    throw DataError.malformedLine(file: name, line: lineNumber, reason: "unterminated quoted field")
                }
                if lineNumber == 1 && fields.first == "movieId" { return true }
                guard fields.count == 3 else {
                    throw DataError.malformedLine(file: name, line: lineNumber, reason: "expected movieId,title,genres, found \(fields.count) fields")
                }
                catalog.titles[fields[0]] = fields[1]
                catalog.genres[fields[0]] = fields[2] == "(no genres listed)" ? [] : fields[2].split(separator: "|").map(String.init)
                return true
            }
        }
        return catalog
    }

    static func parseItemsTSV(_ bytes: [UInt8], name: String) throws -> ItemCatalog {
        var catalog = ItemCatalog()
        let text = String(decoding: bytes, as: UTF8.self)
        var lineNumber = 0
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            let trimmed = line.hasSuffix("\r") ? line.dropLast() : line
            if trimmed.allSatisfy({ $0 == " " || $0 == "\t" }) { continue }
            if lineNumber == 1 && trimmed.hasPrefix("item") { continue }
            let parts = trimmed.split(separator: "\t", omittingEmptySubsequences: false)
            guard parts.count >= 2 && parts.count <= 3 else {
                throw DataError.malformedLine(file: name, line: lineNumber, reason: "expected item<TAB>title[<TAB>genres], found \(parts.count) fields")
            }
            catalog.titles[String(parts[0])] = String(parts[1])
            if parts.count == 3 { catalog.genres[String(parts[0])] = parts[2].split(separator: "|").map(String.init) }
        }
        return catalog
    }

    private static func forEachLatin1Line(_ bytes: [UInt8], _ body: (Int, String) throws -> Void) throws {
        try bytes.withUnsafeBufferPointer { all in
            try TextScanner.forEachLine(all) { lineNumber, line in
                if TextScanner.isBlank(line) { return true }
                try body(lineNumber, TextScanner.latin1(line))
                return true
            }
        }
    }

    /// Affinity's `items.tsv` text for the given items (all known items when nil), sorted by ID.
    public func tsv(items: [String]? = nil) -> String {
        var out = Self.tsvHeader
        let ids = items ?? Array(Set(titles.keys).union(genres.keys)).sorted()
        for id in ids where titles[id] != nil || genres[id] != nil {
            out += Self.tsvLine(item: id, title: titles[id] ?? "", genres: genres[id] ?? [])
        }
        return out
    }

    /// The header line of `items.tsv`.
    public static let tsvHeader = "item\ttitle\tgenres\n"

    /// One `items.tsv` line (tabs in the title become spaces; genres joined by `|`), for writers
    /// that stream the file instead of building a catalogue.
    public static func tsvLine(item: String, title: String, genres: [String]) -> String {
        "\(item)\t\(title.replacingOccurrences(of: "\t", with: " "))\t\(genres.joined(separator: "|"))\n"
    }

    /// The metadata of the listed items only.
    public func restricted(to items: [String]) -> ItemCatalog {
        var out = ItemCatalog()
        for id in items {
            if let t = titles[id] { out.titles[id] = t }
            if let g = genres[id] { out.genres[id] = g }
            if let t = lastSeen?[id] { out.lastSeen = out.lastSeen ?? [:]; out.lastSeen![id] = t }
        }
        return out
    }
}

import Foundation

/// The text of each item, for the sentence encoder.
///
/// - `id<TAB>text` files (`affinity text embed --texts`, and the UniSRec/VQ-Rec `.text` files with
///   their `item_id:token<TAB>text:token_seq` header): each text exactly as given.
/// - Item metadata (`movies.dat`, `u.item`, `movies.csv`, `items.tsv`): "Title. Genre, Genre", the
///   title and the genres (the only text MovieLens has), in ID order.
public struct ItemText: Sendable, Equatable {
    /// A text on one line for a TSV cell: tabs and line breaks become spaces, ends trimmed.
    static func oneLine(_ s: some StringProtocol) -> String {
        s.replacingOccurrences(of: "\t", with: " ").replacingOccurrences(of: "\n", with: " ").trimmingCharacters(in: .whitespaces)
    }

    public var ids: [String]
    public var texts: [String]

    public init(ids: [String], texts: [String]) {
        precondition(ids.count == texts.count, "one text per ID")
        self.ids = ids
        self.texts = texts
    }

    public var count: Int { ids.count }

    /// IDs whose text is empty (after trimming whitespace): embedded as an empty text, but worth a warning.
    public var emptyTextIDs: [String] {
        zip(ids, texts).filter { $0.1.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty }.map(\.0)
    }

    /// Reads `id<TAB>text` lines: UTF-8 required (a line that is not names its item ID), a
    /// UniSRec header skipped, a line without a tab refused, a repeated ID refused.
    public static func readTexts(path: String) throws -> ItemText {
        let bytes = try TextScanner.readBytes(path)
        var ids: [String] = [], texts: [String] = [], seen: [String: Int] = [:]
        try bytes.withUnsafeBufferPointer { all in
            try TextScanner.forEachLine(all) { lineNumber, line in
                if TextScanner.isBlank(line) { return true }
                guard let tab = line.firstIndex(of: 9) else {
                    throw DataError.malformedLine(file: path, line: lineNumber, reason: "expected ID<TAB>text")
                }
                let id = String(decoding: line[line.startIndex..<tab], as: UTF8.self)
                guard let text = String(validatingUTF8Bytes: line[(tab + 1)...]) else {
                    throw DataError.malformedLine(file: path, line: lineNumber, reason: "the text of item \(id) is not UTF-8")
                }
                if lineNumber == 1 && id == "item_id:token" { return true }
                if let earlier = seen[id] {
                    throw DataError.malformedLine(file: path, line: lineNumber, reason: "item \(id) already has a text (line \(earlier))")
                }
                seen[id] = lineNumber
                ids.append(id)
                texts.append(text.hasSuffix("\r") ? String(text.dropLast()) : text)
                return true
            }
        }
        guard !ids.isEmpty else { throw DataError.emptyFile(file: path) }
        return ItemText(ids: ids, texts: texts)
    }

    /// "Title. Genre, Genre" of every item of a catalogue, in ID order (numeric IDs numerically).
    public init(catalog: ItemCatalog) {
        let all = Array(Set(catalog.titles.keys).union(catalog.genres.keys))
        let sorted = all.sorted { a, b in
            if let x = Int(a), let y = Int(b) { return x < y }
            return a < b
        }
        self.init(ids: sorted, texts: sorted.map { id in
            let genres = (catalog.genres[id] ?? []).joined(separator: ", ")
            let title = catalog.titles[id] ?? ""
            return genres.isEmpty ? title : title + ". " + genres
        })
    }

    /// Item text from any supported file: `.text` files and files whose first line is a UniSRec
    /// header or `id<TAB>text` with a single tab are read as texts; `movies.dat`, `u.item`,
    /// `movies.csv` and `items.tsv` as metadata.
    public static func read(path: String) throws -> ItemText {
        let name = (path as NSString).lastPathComponent.lowercased()
        if name.hasSuffix(".text") || name.hasSuffix(".texts") { return try readTexts(path: path) }
        return ItemText(catalog: try ItemCatalog.read(path: path))
    }

    /// The text of each item of `ids`, in that order (empty where an item has none), and the
    /// IDs that had none.
    public func aligned(to ids: [String]) -> (texts: [String], missing: [String]) {
        let index = Dictionary(zip(self.ids, texts), uniquingKeysWith: { a, _ in a })
        var missing: [String] = []
        let out = ids.map { id -> String in
            if let t = index[id] { return t }
            missing.append(id)
            return ""
        }
        return (out, missing)
    }
}

extension String {
    /// The bytes as a String when they are valid UTF-8, else nil (no replacement characters).
    init?<C: Collection>(validatingUTF8Bytes bytes: C) where C.Element == UInt8 {
        var iterator = bytes.makeIterator()
        var decoder = UTF8()
        var scalars = String.UnicodeScalarView()
        loop: while true {
            switch decoder.decode(&iterator) {
            case .scalarValue(let s): scalars.append(s)
            case .emptyInput: break loop
            case .error: return nil
            }
        }
        self = String(scalars)
    }
}

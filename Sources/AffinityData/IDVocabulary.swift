/// A two-way map between raw external IDs (strings, never assumed to be integers) and dense
/// internal indexes `0..<count`, assigned in order of first insertion (docs/protocol.md: first
/// appearance in `train.tsv`).
public struct IDVocabulary: Sendable, Equatable, Codable {
    public private(set) var ids: [String] = []
    private var lookup: [String: Int] = [:]

    public init() {}

    /// A vocabulary over `ids` in the given order; duplicates keep their first position.
    public init<S: Sequence>(_ ids: S) where S.Element == String {
        for id in ids { insert(id) }
    }

    public var count: Int { ids.count }

    /// The index of `id`, inserting it at the end when it is new.
    @discardableResult
    public mutating func insert(_ id: String) -> Int {
        if let i = lookup[id] { return i }
        let i = ids.count
        ids.append(id)
        lookup[id] = i
        return i
    }

    /// The index of `id`, or nil when it was never inserted.
    public func index(of id: String) -> Int? { lookup[id] }

    /// The raw ID at `index`.
    public subscript(index: Int) -> String { ids[index] }

    public static func == (a: IDVocabulary, b: IDVocabulary) -> Bool { a.ids == b.ids }

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        let raw = try c.decode([String].self)
        self.init(raw)
        if count != raw.count {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "vocabulary holds duplicate IDs")
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(ids)
    }
}

/// Builds a vocabulary from raw bytes of a file without creating a `String` per occurrence:
/// canonical decimal IDs (the MovieLens case) are looked up by their integer value first.
struct VocabularyBuilder {
    var vocabulary = IDVocabulary()
    private var numeric: [Int: Int32] = [:]

    mutating func index(_ field: UnsafeBufferPointer<UInt8>) -> Int32 {
        if let n = canonicalDecimal(field) {
            if let i = numeric[n] { return i }
            let i = Int32(vocabulary.insert(String(n)))
            numeric[n] = i
            return i
        }
        return Int32(vocabulary.insert(String(decoding: field, as: UTF8.self)))
    }

    /// The value of a decimal numeral with no sign and no leading zero (so that its string form is
    /// unique), or nil.
    private func canonicalDecimal(_ field: UnsafeBufferPointer<UInt8>) -> Int? {
        let n = field.count
        guard n > 0, n <= 18 else { return nil }
        if n > 1 && field[0] == UInt8(ascii: "0") { return nil }
        var value = 0
        for b in field {
            let d = Int(b) &- 48
            guard d >= 0 && d <= 9 else { return nil }
            value = value &* 10 &+ d
        }
        return value
    }
}

import Foundation

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

/// Builds a vocabulary from the raw bytes of a file's ID fields without creating a `String` per
/// occurrence: an open-addressing table over the IDs' bytes. Each slot holds an ID's first 8
/// bytes, its length and hash bits, so one probe settles a lookup of an ID of up to 8 bytes
/// (longer ones are confirmed against the bytes kept in an arena). IDs of up to 8 bytes are hashed
/// by a seeded multiply-fold of their one word (one-to-one among IDs of one length); longer ones
/// by Swift's per-process seeded SipHash over the bytes, so that no file can be made to collide on
/// purpose (a multiply-fold over several words has seed-independent collisions). A `String` is
/// made once per distinct ID. Swift's `Dictionary` (a `String` and a SipHash per field) was about
/// a third of reading a 10M-line log (`perf`).
struct VocabularyBuilder {
    private(set) var vocabulary = IDVocabulary()
    /// One table slot: the ID's first 8 bytes (zero padded), hash bits and length, and its entry
    /// (-1: empty).
    private struct Slot {
        var word: UInt64 = 0
        var meta: UInt32 = 0
        var entry: Int32 = -1
    }
    // Entry e: bytes arena[starts[e] ..< starts[e + 1]], vocabulary index values[e].
    // Entries and indexes differ only where two byte strings are one String (invalid UTF-8 decodes
    // to U+FFFD; String equality is canonical, so NFC and NFD spellings are equal): they share the
    // index, as they did when the String was the key.
    private var arena: [UInt8] = []
    private var starts: [Int] = [0]
    private var values: [Int32] = []
    private var slots = [Slot](repeating: Slot(), count: 1024)   // a power of two, at most 3/4 full
    private static let seed = UInt64.random(in: 1...UInt64.max)

    /// The index of the ID spelled by `field`, added at the end when it is new.
    mutating func index(_ field: UnsafeBufferPointer<UInt8>) -> Int32 {
        let n = field.count
        let word = Self.firstWord(field)
        let h = Self.hash(field, firstWord: word)
        let meta = UInt32(truncatingIfNeeded: h >> 40) << 8 | UInt32(min(n, 255))
        let mask = slots.count - 1
        var slot = Int(truncatingIfNeeded: h) & mask
        while true {
            let s = slots[slot]
            if s.entry < 0 { break }
            if s.meta == meta && s.word == word {
                let e = Int(s.entry)
                if n <= 8 { return values[e] }
                if starts[e + 1] - starts[e] == n,
                   arena.withUnsafeBufferPointer({ memcmp($0.baseAddress! + starts[e], field.baseAddress!, n) == 0 }) {
                    return values[e]
                }
            }
            slot = (slot + 1) & mask
        }
        let i = Int32(vocabulary.insert(String(decoding: field, as: UTF8.self)))
        slots[slot] = Slot(word: word, meta: meta, entry: Int32(values.count))
        arena.append(contentsOf: field)
        starts.append(arena.count)
        values.append(i)
        if values.count * 4 > slots.count * 3 { grow() }
        return i
    }

    /// Doubles the table and places every entry again (hashes computed again from the arena).
    private mutating func grow() {
        var bigger = [Slot](repeating: Slot(), count: slots.count * 2)
        let mask = bigger.count - 1, starts = self.starts
        arena.withUnsafeBufferPointer { bytes in
            for s in slots where s.entry >= 0 {
                let e = Int(s.entry)
                let field = UnsafeBufferPointer(rebasing: bytes[starts[e]..<starts[e + 1]])
                var slot = Int(truncatingIfNeeded: Self.hash(field, firstWord: s.word)) & mask
                while bigger[slot].entry >= 0 { slot = (slot + 1) & mask }
                bigger[slot] = s
            }
        }
        slots = bigger
    }

    /// The first (up to) 8 bytes of `field`, little-endian, zero padded.
    @inline(__always)
    static func firstWord(_ field: UnsafeBufferPointer<UInt8>) -> UInt64 {
        if field.count >= 8, let base = field.baseAddress {
            return UnsafeRawPointer(base).loadUnaligned(as: UInt64.self)
        }
        var word: UInt64 = 0
        for j in 0..<field.count { word |= UInt64(field[j]) << (8 * UInt64(j)) }
        return word
    }

    /// An ID of up to 8 bytes: its word (zero padded) with the length, xor-multiply-folded with a
    /// per-process seed and avalanched. Longer: SipHash (`Hasher`, seeded per process) of the bytes.
    @inline(__always)
    static func hash(_ field: UnsafeBufferPointer<UInt8>, firstWord: UInt64) -> UInt64 {
        if field.count > 8 {
            var hasher = Hasher()
            hasher.combine(bytes: UnsafeRawBufferPointer(field))
            return UInt64(UInt(bitPattern: hasher.finalize()))
        }
        let k: UInt64 = 0x9E37_79B9_7F4A_7C15
        var h = seed ^ (UInt64(field.count) &* k)
        h = (h ^ firstWord) &* k
        h ^= h >> 29
        h ^= h >> 32
        h = h &* 0xD6E8_FEB8_6659_FD93
        return h ^ (h >> 32)
    }
}

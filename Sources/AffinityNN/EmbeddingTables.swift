import AffinityLinalg
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Embedding tables keyed by external IDs, for models that learn while IDs arrive (online training).
//
// `CollisionlessEmbeddingTable` is Monolith's table (Liu et al. 2022, "Monolith: Real Time
// Recommendation System With Collisionless Embedding Table"): a cuckoo hash map from each ID to its
// own row, so no two IDs ever share a vector; rows are admitted by a frequency or probability filter,
// expire when their ID has not been seen for a while, and the table grows without moving rows or
// stopping readers. `HashedEmbeddingTable` is the fixed-size baseline it replaces: row = hash(ID) mod
// rows, so IDs collide, and the more IDs per row the more they do.

/// A key of an embedding table: an external ID with a 64-bit hash that is the same in every process
/// (unlike `Hasher`, which Swift seeds per process), so a saved table finds its rows again.
public protocol EmbeddingTableKey: Hashable, Sendable {
    /// A well-mixed 64-bit hash of the key under `seed`.
    func tableHash(seed: UInt64) -> UInt64
    /// Appends the key's bytes to a table file.
    func encode(into data: inout Data)
    /// Reads a key written by `encode` at `offset`, advancing it; throws when the bytes run out.
    static func decode(_ bytes: UnsafeRawBufferPointer, at offset: inout Int) throws -> Self
}

/// SplitMix64's finaliser: a bijection of 64-bit words with good avalanche.
@inline(__always) func mix64(_ x: UInt64) -> UInt64 {
    var z = x &+ 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}

extension UInt64: EmbeddingTableKey {
    public func tableHash(seed: UInt64) -> UInt64 { mix64(self ^ mix64(seed)) }
    public func encode(into data: inout Data) { withUnsafeBytes(of: littleEndian) { data.append(contentsOf: $0) } }
    public static func decode(_ bytes: UnsafeRawBufferPointer, at offset: inout Int) throws -> UInt64 {
        try TableReader.read(UInt64.self, bytes, &offset)
    }
}

extension String: EmbeddingTableKey {
    /// FNV-1a over the UTF-8 bytes from a seeded basis, then mixed.
    public func tableHash(seed: UInt64) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325 ^ mix64(seed)
        var copy = self
        copy.withUTF8 { bytes in
            for b in bytes { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        }
        return mix64(h)
    }
    public func encode(into data: inout Data) {
        var copy = self
        copy.withUTF8 { bytes in
            UInt32(bytes.count).encode(into: &data)
            data.append(contentsOf: bytes)
        }
    }
    public static func decode(_ bytes: UnsafeRawBufferPointer, at offset: inout Int) throws -> String {
        let length = Int(try TableReader.read(UInt32.self, bytes, &offset))
        guard length <= bytes.count - offset else { throw EmbeddingTableError.corrupt("a key runs past the end of the data") }
        let s = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + length)]), as: UTF8.self)
        offset += length
        return s
    }
}

extension UInt32 {
    func encode(into data: inout Data) { withUnsafeBytes(of: littleEndian) { data.append(contentsOf: $0) } }
}

/// Bounds-checked little-endian reads of a table file.
enum TableReader {
    static func read<T: FixedWidthInteger>(_: T.Type, _ bytes: UnsafeRawBufferPointer, _ offset: inout Int) throws -> T {
        guard MemoryLayout<T>.size <= bytes.count - offset else { throw EmbeddingTableError.corrupt("the data ends early") }
        var v: T = 0
        withUnsafeMutableBytes(of: &v) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + MemoryLayout<T>.size)])) }
        offset += MemoryLayout<T>.size
        return T(littleEndian: v)
    }

    /// `count` floats into `p`; every one must be finite.
    static func floats(_ count: Int, _ bytes: UnsafeRawBufferPointer, _ offset: inout Int, into p: UnsafeMutablePointer<Float>) throws {
        guard count <= (bytes.count - offset) / 4 else { throw EmbeddingTableError.corrupt("the data ends early") }
        UnsafeMutableRawPointer(p).copyMemory(from: bytes.baseAddress! + offset, byteCount: count * 4)
        offset += count * 4
        guard firstNonFinite(UnsafeBufferPointer(start: p, count: count)) == nil else { throw EmbeddingTableError.corrupt("a row holds a value that is not finite") }
    }
}

public enum EmbeddingTableError: Error, CustomStringConvertible, Equatable {
    /// Admitting one more ID would pass the table's memory bound.
    case memoryBound(rows: Int, bytesPerRow: Int, maxRows: Int)
    case invalidSetting(String)
    case corrupt(String)
    /// An ID whose two buckets cannot be freed however the map grows (many IDs share its hash).
    case unplaceable

    public var description: String {
        switch self {
        case let .memoryBound(rows, bytesPerRow, maxRows):
            return "embedding table is full: \(rows) rows of \(bytesPerRow) bytes each reach its bound of \(maxRows) rows "
                + "(\(MemoryBudget.describe(Double(maxRows) * Double(bytesPerRow)))); raise maxRows, expire IDs sooner (expireAfter), or admit fewer (admission)"
        case let .invalidSetting(s): return "embedding table: \(s)"
        case .unplaceable: return "embedding table: an ID cannot be placed (too many IDs share its hash); the table is unchanged"
        case let .corrupt(s): return "embedding table file is corrupt: \(s)"
        }
    }
}

/// How an embedding table is built: its width, which IDs get a row, how long an unseen ID keeps it.
public struct EmbeddingTableSettings: Codable, Sendable, Equatable {
    /// Which IDs get a row (Monolith's "feature filtering"): rare IDs are mostly noise and cost memory.
    public enum Admission: Codable, Sendable, Equatable {
        /// Every ID on its first occurrence.
        case always
        /// On its n-th occurrence, counted in a count-min sketch (Cormode & Muthukrishnan 2005) of
        /// fixed size: an estimate never below the true count, so an ID is never admitted late,
        /// and now and then (when the sketch is crowded) a little early.
        case minCount(Int)
        /// With probability p on each occurrence (so after 1/p occurrences on average).
        case probability(Double)
    }

    /// Width of each row.
    public var dimension: Int = 32
    public var admission: Admission = .always
    /// Seconds (of event time, as passed to `trainingRow`) after which an ID not seen again loses its
    /// row, which is reused; nil keeps every ID.
    public var expireAfter: Int64? = nil
    /// The memory bound, in rows: admitting past it throws `EmbeddingTableError.memoryBound`.
    public var maxRows: Int = 10_000_000
    /// Standard deviation of a new row's entries (Gaussian, seeded by the ID: the same ID starts
    /// from the same vector whatever the order of arrival).
    public var initialScale: Float = 0.05
    /// Keeps an Adagrad accumulator per entry beside each row (the optimiser state grows with the table).
    public var accumulators: Bool = true
    /// Columns of the count-min sketch behind `.minCount` (rounded up to a power of two; 4 rows of bytes).
    public var sketchWidth: Int = 1 << 20
    public var seed: UInt64 = 42

    public init(dimension: Int = 32, admission: Admission = .always, expireAfter: Int64? = nil, maxRows: Int = 10_000_000,
                initialScale: Float = 0.05, accumulators: Bool = true, seed: UInt64 = 42) {
        self.dimension = dimension
        self.admission = admission
        self.expireAfter = expireAfter
        self.maxRows = maxRows
        self.initialScale = initialScale
        self.accumulators = accumulators
        self.seed = seed
    }

    public func validate() throws {
        guard (1...65_536).contains(dimension) else { throw EmbeddingTableError.invalidSetting("dimension must be in 1...65536, got \(dimension)") }
        guard maxRows >= 1, maxRows <= Int(Int32.max) else { throw EmbeddingTableError.invalidSetting("maxRows must be in 1...\(Int32.max), got \(maxRows)") }
        guard initialScale.isFinite, initialScale >= 0 else { throw EmbeddingTableError.invalidSetting("initialScale must be finite and non-negative") }
        if let e = expireAfter, e <= 0 { throw EmbeddingTableError.invalidSetting("expireAfter must be positive seconds, got \(e)") }
        guard (64...(1 << 28)).contains(sketchWidth) else { throw EmbeddingTableError.invalidSetting("sketchWidth must be in 64...2^28") }
        switch admission {
        case .always: break
        case .minCount(let n): guard n >= 1 else { throw EmbeddingTableError.invalidSetting("admission minCount must be at least 1, got \(n)") }
        case .probability(let p): guard p > 0, p <= 1 else { throw EmbeddingTableError.invalidSetting("admission probability must be in (0, 1], got \(p)") }
        }
    }

    /// Floats per row: the vector, then its accumulator.
    var stride: Int { accumulators ? 2 * dimension : dimension }
}

/// Counters of a table, for `/metrics` and benchmarks.
public struct EmbeddingTableStats: Sendable, Equatable {
    /// IDs holding a row now.
    public var ids: Int
    /// Rows allocated (held + free for reuse); for a hashed table, its fixed row count.
    public var rows: Int
    /// IDs given a row since the table was created, and rows taken back by expiry.
    public var admitted: Int
    public var expired: Int
    /// Occurrences of IDs the admission filter has not (yet) let in.
    public var filtered: Int
    public var memoryBytes: Int
}

/// A table of trainable rows addressed by external IDs. Readers (`row(of:)`, `vector`) may run on any
/// thread while one writer trains; a row's pointer stays valid for the table's life (rows never move).
public protocol EmbeddingTable<Key>: AnyObject, Sendable {
    associatedtype Key: EmbeddingTableKey
    var settings: EmbeddingTableSettings { get }
    /// The row of `key`, nil when it has none (never admitted, or expired). Never admits.
    func row(of key: Key) -> Int?
    /// The row `key` trains: admits it when the admission rule says so and records it as seen at
    /// `time` (seconds). Nil while the ID is filtered out. One writer at a time.
    func trainingRow(for key: Key, time: Int64) throws -> Int?
    /// The row's `dimension` floats.
    func vector(_ row: Int) -> UnsafeMutablePointer<Float>
    /// The row's Adagrad accumulator (`dimension` floats); only when `settings.accumulators`.
    func accumulator(_ row: Int) -> UnsafeMutablePointer<Float>
    /// Frees the rows of IDs not seen since `now - expireAfter`; returns how many. No-op without expiry.
    @discardableResult func expire(now: Int64) -> Int
    /// Every ID with a row (in no particular order).
    func entries() -> [(key: Key, row: Int)]
    var stats: EmbeddingTableStats { get }
    /// The whole table as bytes (`EmbeddingTables.decode` reads it back).
    func encoded() -> Data
}

extension EmbeddingTable {
    public var dimension: Int { settings.dimension }

    /// Copies the rows of `keys` into a matrix (keys without a row give zeros).
    public func matrix(_ keys: [Key]) -> Matrix {
        let d = dimension
        var m = Matrix(rows: keys.count, columns: d)
        m.values.withUnsafeMutableBufferPointer { out in
            for (i, key) in keys.enumerated() {
                if let r = row(of: key) { (out.baseAddress! + i * d).update(from: vector(r), count: d) }
            }
        }
        return m
    }
}

/// Writes the row of a freshly admitted ID: Gaussian from a generator seeded by the ID's hash.
@inline(__always) func initialiseRow(_ p: UnsafeMutablePointer<Float>, settings: EmbeddingTableSettings, keyHash: UInt64) {
    var g = SeededGenerator(seed: settings.seed, stream: keyHash)
    for j in 0..<settings.dimension { p[j] = Float(g.nextGaussian()) * settings.initialScale }
    if settings.accumulators { (p + settings.dimension).update(repeating: 0, count: settings.dimension) }
}

// MARK: - cuckoo map

/// A bucketised cuckoo hash map (Pagh & Rodler 2004; 4 slots per bucket, two candidate buckets per
/// key, as in libcuckoo): key -> row with every key in one of its two buckets, so a lookup reads at
/// most 8 slots. An insertion that finds both buckets full moves keys to their other bucket along a
/// random walk; when the walk is too long the caller grows the map. A failed walk is undone, so the
/// map never loses a key.
struct CuckooMap<Key: EmbeddingTableKey> {
    static var slotsPerBucket: Int { 4 }
    static var maxKicks: Int { 256 }
    /// Power of two.
    let bucketCount: Int
    var keys: [Key?]
    var rows: [Int32]
    var hashes: [UInt64]
    private(set) var count = 0

    init(bucketCount: Int) {
        self.bucketCount = bucketCount
        keys = Array(repeating: nil, count: bucketCount * Self.slotsPerBucket)
        rows = Array(repeating: -1, count: bucketCount * Self.slotsPerBucket)
        hashes = Array(repeating: 0, count: bucketCount * Self.slotsPerBucket)
    }

    /// The two buckets of a hash: the low bits, and the high bits mixed (distinct when possible).
    @inline(__always) func buckets(_ h: UInt64) -> (Int, Int) {
        let mask = UInt64(bucketCount - 1)
        let b1 = Int(h & mask)
        var b2 = Int(mix64(h >> 32 ^ 0x5bd1_e995) & mask)
        if b2 == b1 && bucketCount > 1 { b2 = (b1 + 1) & Int(mask) }
        return (b1, b2)
    }

    @_specialize(where Key == String) @_specialize(where Key == UInt64)
    func find(_ key: Key, hash h: UInt64) -> Int32? {
        slot(of: key, hash: h).map { rows[$0] }
    }

    /// The slot holding `key`, nil when absent.
    @_specialize(where Key == String) @_specialize(where Key == UInt64)
    @inline(__always) func slot(of key: Key, hash h: UInt64) -> Int? {
        let (b1, b2) = buckets(h)
        var base = b1 * Self.slotsPerBucket
        for s in base..<(base + Self.slotsPerBucket) where rows[s] >= 0 && hashes[s] == h && keys[s] == key { return s }
        base = b2 * Self.slotsPerBucket
        for s in base..<(base + Self.slotsPerBucket) where rows[s] >= 0 && hashes[s] == h && keys[s] == key { return s }
        return nil
    }

    private func freeSlot(in b: Int) -> Int? {
        let base = b * Self.slotsPerBucket
        for s in base..<(base + Self.slotsPerBucket) where rows[s] < 0 { return s }
        return nil
    }

    /// Inserts a key that is not in the map. False (and the map unchanged) when the walk fails.
    @_specialize(where Key == String) @_specialize(where Key == UInt64)
    mutating func insert(_ key: Key, hash h: UInt64, row: Int32, generator: inout SeededGenerator) -> Bool {
        let (b1, b2) = buckets(h)
        if let s = freeSlot(in: b1) ?? freeSlot(in: b2) { put(s, key, h, row); count += 1; return true }
        // Random walk: put the key in a slot of one of its buckets, move the displaced key to its
        // other bucket, and so on. Each displacement is logged so a failure can be rolled back.
        var log: [(slot: Int, key: Key?, hash: UInt64, row: Int32)] = []
        var carryKey = key, carryHash = h, carryRow = row
        var bucket = generator.next(below: 2) == 0 ? b1 : b2
        for _ in 0..<Self.maxKicks {
            let s = bucket * Self.slotsPerBucket + generator.next(below: Self.slotsPerBucket)
            log.append((s, keys[s], hashes[s], rows[s]))
            let (outKey, outHash, outRow) = (keys[s]!, hashes[s], rows[s])
            put(s, carryKey, carryHash, carryRow)
            (carryKey, carryHash, carryRow) = (outKey, outHash, outRow)
            let (c1, c2) = buckets(carryHash)
            let other = c1 == bucket ? c2 : c1
            if let free = freeSlot(in: other) { put(free, carryKey, carryHash, carryRow); count += 1; return true }
            bucket = other
        }
        for entry in log.reversed() { put(entry.slot, entry.key, entry.hash, entry.row) }
        return false
    }

    @inline(__always) private mutating func put(_ s: Int, _ key: Key?, _ h: UInt64, _ row: Int32) {
        keys[s] = key
        hashes[s] = h
        rows[s] = key == nil ? -1 : row
    }

    mutating func remove(_ key: Key, hash h: UInt64) -> Int32? {
        guard let s = slot(of: key, hash: h) else { return nil }
        let r = rows[s]
        put(s, nil, 0, -1)
        count -= 1
        return r
    }

    func forEach(_ body: (Key, UInt64, Int32) -> Void) {
        for s in 0..<rows.count where rows[s] >= 0 { body(keys[s]!, hashes[s], rows[s]) }
    }
}

/// A reader-writer lock (readers share it; a writer has it alone). On Linux it prefers the writer:
/// glibc's default lets a steady stream of readers starve it (growth then stalls).
final class ReadWriteLock: @unchecked Sendable {
    private var lock = pthread_rwlock_t()
    init() {
        #if os(Linux)
        var attributes = pthread_rwlockattr_t()
        pthread_rwlockattr_init(&attributes)
        pthread_rwlockattr_setkind_np(&attributes, Int32(PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP))
        pthread_rwlock_init(&lock, &attributes)
        pthread_rwlockattr_destroy(&attributes)
        #else
        pthread_rwlock_init(&lock, nil)
        #endif
    }
    deinit { pthread_rwlock_destroy(&lock) }
    func reading<T>(_ body: () throws -> T) rethrows -> T {
        pthread_rwlock_rdlock(&lock)
        defer { pthread_rwlock_unlock(&lock) }
        return try body()
    }
    func writing<T>(_ body: () throws -> T) rethrows -> T {
        pthread_rwlock_wrlock(&lock)
        defer { pthread_rwlock_unlock(&lock) }
        return try body()
    }
}

// MARK: - collisionless table

/// Monolith's collisionless embedding table: every admitted ID has a row of its own.
///
/// - Rows live in chunks of `chunkRows` that are never moved or freed while the table lives, so a
///   row pointer stays valid as the table grows; expired rows go to a free list and are reused.
/// - The ID -> row map is a `CuckooMap`. Lookups share a reader-writer lock; an insertion holds it
///   alone for the few slot moves it makes. When the map must grow, the writer builds the larger map
///   beside the old one while readers go on reading the old one, then swaps it in under the lock.
/// - One writer at a time (`trainingRow`, `expire`); any number of readers.
/// - Complexity: lookup O(1) worst case (8 slots); insertion O(1) expected, amortised over growth.
public final class CollisionlessEmbeddingTable<Key: EmbeddingTableKey>: EmbeddingTable, @unchecked Sendable {
    public let settings: EmbeddingTableSettings
    /// Rows per chunk: 4096, fewer for wide rows (a chunk stays within about 4 MiB).
    let chunkRows: Int

    private let mapLock = ReadWriteLock()
    private let writerLock = NSLock()
    private var map: CuckooMap<Key>
    private var generator: SeededGenerator
    /// Chunk directory: allocated once for the largest table `maxRows` allows, so it never moves.
    private let directory: UnsafeMutablePointer<UnsafeMutablePointer<Float>?>
    private let directorySize: Int
    /// Rows handed out so far (held or free); per row, its key's hash and key (writer side only).
    private var allocatedRows = 0
    private var rowKey: [Key?] = []
    private var lastSeen: [Int64] = []
    private var freeRows: [Int32] = []
    private var admittedTotal = 0, expiredTotal = 0, filteredTotal = 0
    /// Count-min sketch for `.minCount` (4 rows x width, saturating bytes).
    private var sketch: [UInt8] = []
    private var probabilityDraws: UInt64 = 0

    public init(settings: EmbeddingTableSettings) throws {
        try settings.validate()
        self.settings = settings
        map = CuckooMap(bucketCount: 16)
        generator = SeededGenerator(seed: settings.seed, stream: 0xC0C0)
        chunkRows = max(1, min(4096, (1 << 20) / settings.stride))
        directorySize = (settings.maxRows + chunkRows - 1) / chunkRows
        directory = .allocate(capacity: directorySize)
        directory.initialize(repeating: nil, count: directorySize)
        sketch = Array(repeating: 0, count: Self.sketchBytes(settings))
    }

    /// Bytes of the count-min sketch `settings` call for: 4 rows of `sketchWidth` rounded up to a
    /// power of two (none without `.minCount`).
    static func sketchBytes(_ settings: EmbeddingTableSettings) -> Int {
        guard case .minCount = settings.admission else { return 0 }
        return 4 * (1 << Int(ceil(log2(Double(settings.sketchWidth)))))
    }

    deinit {
        for c in 0..<directorySize { directory[c]?.deallocate() }
        directory.deallocate()
    }

    @_specialize(where Key == String) @_specialize(where Key == UInt64)
    public func row(of key: Key) -> Int? {
        let h = key.tableHash(seed: settings.seed)
        return mapLock.reading { map.find(key, hash: h) }.map(Int.init)
    }

    @inline(__always) public func vector(_ row: Int) -> UnsafeMutablePointer<Float> {
        directory[row / chunkRows]! + (row % chunkRows) * settings.stride
    }

    @inline(__always) public func accumulator(_ row: Int) -> UnsafeMutablePointer<Float> {
        precondition(settings.accumulators, "this table keeps no accumulators")
        return vector(row) + settings.dimension
    }

    @_specialize(where Key == String) @_specialize(where Key == UInt64)
    public func trainingRow(for key: Key, time: Int64) throws -> Int? {
        try writerLock.locked {
            let h = key.tableHash(seed: settings.seed)
            // The writer is the only mutator, so it reads the map without the reader lock.
            if let r = map.find(key, hash: h) {
                lastSeen[Int(r)] = max(lastSeen[Int(r)], time)
                return Int(r)
            }
            guard admits(hash: h) else { filteredTotal += 1; return nil }
            let r = try takeRow()
            do {
                try insert(key, hash: h, row: r)
            } catch {
                freeRows.append(r)
                throw error
            }
            initialiseRow(vector(Int(r)), settings: settings, keyHash: h)
            rowKey[Int(r)] = key
            lastSeen[Int(r)] = time
            admittedTotal += 1
            return Int(r)
        }
    }

    /// Puts key -> row into the map, growing it (beside the old one, readers undisturbed) when needed.
    /// Throws when the map would have to grow past 16 slots per row of `maxRows` to place it: only
    /// keys that share their 64-bit hash by the dozen (built on purpose) get there.
    @_specialize(where Key == String) @_specialize(where Key == UInt64)
    private func insert(_ key: Key, hash h: UInt64, row r: Int32) throws {
        // Grow before the map is 90 % full: bucketised cuckoo tables fill to ~95 % before walks fail.
        if map.count + 1 > map.rows.count * 9 / 10 { try grow() }
        while true {
            let done = mapLock.writing { map.insert(key, hash: h, row: r, generator: &generator) }
            if done { return }
            try grow()
        }
    }

    @_specialize(where Key == String) @_specialize(where Key == UInt64)
    private func grow() throws {
        var buckets = map.bucketCount * 2
        let limit = max(1 << 10, 4 * settings.maxRows)
        while buckets <= limit {
            var bigger = CuckooMap<Key>(bucketCount: buckets)
            var ok = true
            map.forEach { key, h, r in if ok { ok = bigger.insert(key, hash: h, row: r, generator: &generator) } }
            if ok {
                mapLock.writing { map = bigger }
                return
            }
            buckets *= 2
        }
        throw EmbeddingTableError.unplaceable
    }

    private func takeRow() throws -> Int32 {
        if let r = freeRows.popLast() { return r }
        guard allocatedRows < settings.maxRows else {
            throw EmbeddingTableError.memoryBound(rows: allocatedRows, bytesPerRow: settings.stride * 4, maxRows: settings.maxRows)
        }
        let chunk = allocatedRows / chunkRows
        if directory[chunk] == nil {
            let rows = min(chunkRows, settings.maxRows - chunk * chunkRows)
            let p = UnsafeMutablePointer<Float>.allocate(capacity: rows * settings.stride)
            p.initialize(repeating: 0, count: rows * settings.stride)
            directory[chunk] = p
        }
        allocatedRows += 1
        rowKey.append(nil)
        lastSeen.append(0)
        return Int32(allocatedRows - 1)
    }

    /// The admission filter: true when this occurrence of an ID without a row gives it one.
    private func admits(hash h: UInt64) -> Bool {
        switch settings.admission {
        case .always:
            return true
        case .probability(let p):
            probabilityDraws &+= 1
            let u = Double(mix64(settings.seed ^ probabilityDraws &* 0x9E37_79B9_7F4A_7C15) >> 11) * 0x1.0p-53
            return u < p
        case .minCount(let n):
            let width = sketch.count / 4
            var estimate = Int.max
            for d in 0..<4 {
                let c = d * width + Int(mix64(h &+ UInt64(d) &* 0x9E37_79B9_7F4A_7C15) & UInt64(width - 1))
                if sketch[c] < 255 { sketch[c] += 1 }
                estimate = min(estimate, Int(sketch[c]))
            }
            return estimate >= min(n, 255)
        }
    }

    @discardableResult public func expire(now: Int64) -> Int {
        guard let ttl = settings.expireAfter else { return 0 }
        return writerLock.locked {
            var removed = 0
            for r in 0..<allocatedRows where rowKey[r] != nil && lastSeen[r] < now - ttl {
                let key = rowKey[r]!
                let h = key.tableHash(seed: settings.seed)
                _ = mapLock.writing { map.remove(key, hash: h) }
                rowKey[r] = nil
                freeRows.append(Int32(r))
                removed += 1
            }
            expiredTotal += removed
            return removed
        }
    }

    public func entries() -> [(key: Key, row: Int)] {
        mapLock.reading {
            var out: [(key: Key, row: Int)] = []
            out.reserveCapacity(map.count)
            map.forEach { key, _, r in out.append((key, Int(r))) }
            return out
        }
    }

    /// When `key` was last seen (nil without a row).
    public func lastSeen(of key: Key) -> Int64? {
        writerLock.locked { map.find(key, hash: key.tableHash(seed: settings.seed)).map { lastSeen[Int($0)] } }
    }

    public var stats: EmbeddingTableStats {
        writerLock.locked {
            EmbeddingTableStats(ids: map.count, rows: allocatedRows, admitted: admittedTotal, expired: expiredTotal,
                                filtered: filteredTotal,
                                memoryBytes: allocatedRows * (settings.stride * 4 + 16) + map.rows.count * 16 + sketch.count)
        }
    }

    // MARK: persistence

    static var magic: [UInt8] { Array("AFFTABL1".utf8) }

    /// The start of every table file: magic, kind (0 collisionless, 1 hashed), settings as JSON.
    static func header(kind: UInt8, settings: EmbeddingTableSettings) -> Data {
        var data = Data(magic)
        data.append(kind)
        let json = (try? JSONEncoder().encode(settings)) ?? Data()
        UInt32(json.count).encode(into: &data)
        data.append(json)
        return data
    }

    /// Header (magic, settings as JSON, counters), the sketch, then each held ID: key, last seen, row
    /// floats (vector and accumulator). Rows are renumbered on reading; only keys address them.
    public func encoded() -> Data {
        writerLock.locked {
            var data = Self.header(kind: 0, settings: settings)
            for v in [UInt64(admittedTotal), UInt64(expiredTotal), UInt64(filteredTotal), probabilityDraws, UInt64(sketch.count), UInt64(map.count)] {
                v.encode(into: &data)
            }
            data.append(contentsOf: sketch)
            let stride = settings.stride
            map.forEach { key, _, r in
                key.encode(into: &data)
                UInt64(bitPattern: lastSeen[Int(r)]).encode(into: &data)
                data.append(UnsafeBufferPointer(start: vector(Int(r)), count: stride))
            }
            return data
        }
    }

    /// Reads `encoded()` output (after the magic and kind byte).
    static func decode(_ bytes: UnsafeRawBufferPointer, at offset: inout Int, settings: EmbeddingTableSettings) throws -> CollisionlessEmbeddingTable {
        let admitted = try TableReader.read(UInt64.self, bytes, &offset)
        let expired = try TableReader.read(UInt64.self, bytes, &offset)
        let filtered = try TableReader.read(UInt64.self, bytes, &offset)
        let draws = try TableReader.read(UInt64.self, bytes, &offset)
        let sketchCount = try TableReader.read(UInt64.self, bytes, &offset)
        let count = try TableReader.read(UInt64.self, bytes, &offset)
        // Sizes against the bytes that are there, before anything is allocated from them.
        let remaining = UInt64(bytes.count - offset)
        guard sketchCount <= remaining, count <= (remaining - sketchCount) / UInt64(settings.stride * 4 + 8 + 1) else {
            throw EmbeddingTableError.corrupt("it claims more IDs or sketch than its \(bytes.count) bytes hold")
        }
        guard sketchCount == UInt64(sketchBytes(settings)) else { throw EmbeddingTableError.corrupt("its admission sketch does not match its settings") }
        let table = try CollisionlessEmbeddingTable(settings: settings)
        table.probabilityDraws = draws
        table.sketch = Array(UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + Int(sketchCount))]))
        offset += Int(sketchCount)
        guard count <= UInt64(settings.maxRows) else { throw EmbeddingTableError.corrupt("\(count) IDs exceed its bound of \(settings.maxRows) rows") }
        for _ in 0..<Int(count) {
            let key = try Key.decode(bytes, at: &offset)
            let seen = Int64(bitPattern: try TableReader.read(UInt64.self, bytes, &offset))
            let h = key.tableHash(seed: settings.seed)
            guard table.map.find(key, hash: h) == nil else { throw EmbeddingTableError.corrupt("ID \(key) appears twice") }
            let r = try table.takeRow()
            try TableReader.floats(settings.stride, bytes, &offset, into: table.vector(Int(r)))
            table.rowKey[Int(r)] = key
            table.lastSeen[Int(r)] = seen
            try table.insert(key, hash: h, row: r)
        }
        (table.admittedTotal, table.expiredTotal, table.filteredTotal) = (Int(clamping: admitted), Int(clamping: expired), Int(clamping: filtered))
        return table
    }
}

// MARK: - hashed table

/// The fixed-size baseline: `rows` rows, ID -> row by hash modulo `rows`. IDs that hash alike share a
/// row (and its gradient), which is the collision `CollisionlessEmbeddingTable` removes. Every ID
/// "has" a row, so `row(of:)` never returns nil and nothing is admitted or expired.
public final class HashedEmbeddingTable<Key: EmbeddingTableKey>: EmbeddingTable, @unchecked Sendable {
    public let settings: EmbeddingTableSettings
    public let rowCount: Int
    private let storage: UnsafeMutablePointer<Float>
    private let lock = NSLock()
    private var seenIDs = Set<Key>()

    /// `rows` rows, each initialised as a collisionless table would initialise the ID-less row `r`.
    public convenience init(rows: Int, settings: EmbeddingTableSettings) throws {
        try self.init(rows: rows, settings: settings, initialise: true)
    }

    /// `initialise: false` leaves the rows zero (a reader fills them).
    private init(rows: Int, settings: EmbeddingTableSettings, initialise: Bool) throws {
        try settings.validate()
        guard rows >= 1, rows <= settings.maxRows else {
            throw rows < 1 ? EmbeddingTableError.invalidSetting("a hashed table needs at least one row")
                : EmbeddingTableError.memoryBound(rows: rows, bytesPerRow: settings.stride * 4, maxRows: settings.maxRows)
        }
        self.settings = settings
        rowCount = rows
        storage = .allocate(capacity: rows * settings.stride)
        storage.initialize(repeating: 0, count: rows * settings.stride)
        if initialise { for r in 0..<rows { initialiseRow(storage + r * settings.stride, settings: settings, keyHash: UInt64(r)) } }
    }

    deinit { storage.deallocate() }

    @inline(__always) public func row(of key: Key) -> Int? { Int(key.tableHash(seed: settings.seed) % UInt64(rowCount)) }

    public func trainingRow(for key: Key, time: Int64) throws -> Int? {
        lock.locked { _ = seenIDs.insert(key) }
        return row(of: key)
    }

    @inline(__always) public func vector(_ row: Int) -> UnsafeMutablePointer<Float> { storage + row * settings.stride }

    @inline(__always) public func accumulator(_ row: Int) -> UnsafeMutablePointer<Float> {
        precondition(settings.accumulators, "this table keeps no accumulators")
        return storage + row * settings.stride + settings.dimension
    }

    public func expire(now: Int64) -> Int { 0 }

    /// Every ID trained so far, with the row it hashes to (several IDs may share one).
    public func entries() -> [(key: Key, row: Int)] {
        lock.locked { seenIDs.map { ($0, row(of: $0)!) } }
    }

    public var stats: EmbeddingTableStats {
        let ids = lock.locked { seenIDs.count }
        return EmbeddingTableStats(ids: ids, rows: rowCount, admitted: ids, expired: 0, filtered: 0, memoryBytes: rowCount * settings.stride * 4)
    }

    public func encoded() -> Data {
        lock.locked {
            var data = CollisionlessEmbeddingTable<Key>.header(kind: 1, settings: settings)
            UInt64(rowCount).encode(into: &data)
            UInt64(seenIDs.count).encode(into: &data)
            for key in seenIDs { key.encode(into: &data) }
            data.append(UnsafeBufferPointer(start: storage, count: rowCount * settings.stride))
            return data
        }
    }

    static func decode(_ bytes: UnsafeRawBufferPointer, at offset: inout Int, settings: EmbeddingTableSettings) throws -> HashedEmbeddingTable {
        let rows = try TableReader.read(UInt64.self, bytes, &offset)
        guard rows >= 1, rows <= UInt64(settings.maxRows), rows <= UInt64(bytes.count - offset) / UInt64(settings.stride * 4) else {
            throw EmbeddingTableError.corrupt("row count \(rows) is out of range for its \(bytes.count) bytes")
        }
        let table = try HashedEmbeddingTable(rows: Int(rows), settings: settings, initialise: false)
        let ids = try TableReader.read(UInt64.self, bytes, &offset)
        guard ids <= UInt64(bytes.count - offset) else { throw EmbeddingTableError.corrupt("the data ends early") }
        for _ in 0..<Int(ids) { table.seenIDs.insert(try Key.decode(bytes, at: &offset)) }
        try TableReader.floats(Int(rows) * settings.stride, bytes, &offset, into: table.storage)
        return table
    }
}

/// Reading tables back from `encoded()` bytes.
public enum EmbeddingTables {
    /// The table `data` holds (collisionless or hashed, with its settings and counters).
    public static func decode<Key: EmbeddingTableKey>(_ data: Data, as _: Key.Type = Key.self) throws -> any EmbeddingTable<Key> {
        try data.withUnsafeBytes { bytes -> any EmbeddingTable<Key> in
            let magic = CollisionlessEmbeddingTable<Key>.magic
            guard bytes.count > magic.count, Array(bytes[0..<magic.count]) == magic else {
                throw EmbeddingTableError.corrupt("it does not start with \(String(decoding: magic, as: UTF8.self))")
            }
            var offset = magic.count
            let kind = bytes[offset]
            offset += 1
            let jsonLength = Int(try TableReader.read(UInt32.self, bytes, &offset))
            guard jsonLength <= bytes.count - offset else { throw EmbeddingTableError.corrupt("the data ends early") }
            let settings: EmbeddingTableSettings
            do {
                settings = try JSONDecoder().decode(EmbeddingTableSettings.self, from: Data(bytes[offset..<(offset + jsonLength)]))
                try settings.validate()
            } catch {
                throw EmbeddingTableError.corrupt("its settings do not read: \(error)")
            }
            offset += jsonLength
            let table: any EmbeddingTable<Key>
            switch kind {
            case 0: table = try CollisionlessEmbeddingTable<Key>.decode(bytes, at: &offset, settings: settings)
            case 1: table = try HashedEmbeddingTable<Key>.decode(bytes, at: &offset, settings: settings)
            default: throw EmbeddingTableError.corrupt("unknown table kind \(kind)")
            }
            guard offset == bytes.count else { throw EmbeddingTableError.corrupt("\(bytes.count - offset) bytes follow the last row") }
            return table
        }
    }
}

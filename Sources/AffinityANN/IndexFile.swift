import AffinityLinalg
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Saved indexes: a fixed header, a JSON block, then 64-byte-aligned binary sections.
///
///     magic "AFFANNIX" | u32 format version | u32 kind | u32 metric | u32 dimension | u64 count
///     | u64 JSON length | JSON (settings, entry point, section sizes) | sections...
///
/// HNSW loads by memory map: the vectors and layer-0 links are used in place in the mapping
/// (private, copy-on-write), so loading a 1M-vector index copies no vector. A wrong magic, version,
/// kind or a size that does not match the header is rejected with the reason.
public enum IndexFile {
    /// The newest format this build writes and reads. Version 2 adds the norm bands of inner-product
    /// IVF (written only by such indexes); every other index is still written as version 1.
    public static let formatVersion: UInt32 = 2
    static let magic = Array("AFFANNIX".utf8)

    enum KindCode: UInt32 { case flat = 1, hnsw = 2, ivf = 3, lsh = 4, ivfpq = 5 }

    static func metricCode(_ m: Metric) -> UInt32 { m == .innerProduct ? 0 : m == .l2 ? 1 : 2 }
    static func metric(_ code: UInt32) -> Metric? { [0: Metric.innerProduct, 1: .l2, 2: .cosine][code] }

    // MARK: writing

    struct Writer {
        var data = Data()
        mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { data.append(contentsOf: $0) } }
        mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { data.append(contentsOf: $0) } }
        mutating func align() { while data.count % 64 != 0 { data.append(0) } }
        mutating func raw(_ p: UnsafeRawPointer, _ bytes: Int) {
            align()
            data.append(p.assumingMemoryBound(to: UInt8.self), count: bytes)
        }
    }

    static func header(kind: KindCode, metric: Metric, dimension: Int, count: Int, json: [String: Any], version: UInt32 = 1) throws -> Writer {
        var w = Writer()
        w.data.append(contentsOf: magic)
        w.u32(version)
        w.u32(kind.rawValue)
        w.u32(metricCode(metric))
        w.u32(UInt32(dimension))
        w.u64(UInt64(count))
        let j = try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys])
        w.u64(UInt64(j.count))
        w.data.append(j)
        return w
    }

    /// Saves any index of this module (atomically: temporary file, then rename).
    public static func save(_ index: any VectorIndex, to path: String) throws {
        let w: Writer
        switch index {
        case let flat as FlatIndex:
            var x = try header(kind: .flat, metric: flat.metric, dimension: flat.dimension, count: flat.count, json: [:])
            flat.vectors.values.withUnsafeBytes { x.raw($0.baseAddress!, $0.count) }
            w = x
        case let hnsw as HNSWIndex: w = try hnsw.serialized()
        case let ivf as IVFIndex: w = try ivf.serialized()
        case let lsh as LSHIndex: w = try lsh.serialized()
        case let ivfpq as IVFPQIndex: w = try ivfpq.serialized()
        default: throw IndexError.file(path: path, reason: "this index type cannot be saved")
        }
        let tmp = path + ".tmp-\(ProcessInfo.processInfo.processIdentifier)-\(UInt32.random(in: 0...UInt32.max))"
        do {
            try w.data.write(to: URL(fileURLWithPath: tmp))
        } catch {
            try? FileManager.default.removeItem(atPath: tmp)
            throw IndexError.file(path: path, reason: "cannot write: \(error.localizedDescription)")
        }
        // rename(2) replaces an existing file atomically: the old index survives any failure before it.
        guard rename(tmp, path) == 0 else {
            try? FileManager.default.removeItem(atPath: tmp)
            throw IndexError.file(path: path, reason: "cannot move the written index into place (errno \(errno))")
        }
    }

    // MARK: reading

    /// A read-only view of a mapped file with a cursor.
    struct Reader {
        let path: String
        let base: UnsafeMutableRawPointer
        let length: Int
        var offset = 0

        mutating func u32() throws -> UInt32 {
            try need(4)
            defer { offset += 4 }
            return UInt32(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
        }
        mutating func u64() throws -> UInt64 {
            try need(8)
            defer { offset += 8 }
            return UInt64(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
        }
        func need(_ bytes: Int) throws {
            guard bytes >= 0, bytes <= length - offset else {
                throw IndexError.file(path: path, reason: "truncated: needs \(offset + bytes) bytes, the file has \(length)")
            }
        }
        mutating func align() { offset = (offset + 63) / 64 * 64 }
        /// A pointer to `count` elements in place (aligned section).
        mutating func section<T>(_ count: Int, of: T.Type) throws -> UnsafeMutablePointer<T> {
            align()
            let (bytes, overflow) = count.multipliedReportingOverflow(by: MemoryLayout<T>.stride)
            guard count >= 0, !overflow else { throw IndexError.file(path: path, reason: "a section size overflows") }
            try need(bytes)
            defer { offset += count * MemoryLayout<T>.stride }
            return (base + offset).assumingMemoryBound(to: T.self)
        }
        mutating func array<T>(_ count: Int, of: T.Type) throws -> [T] {
            let p = try section(count, of: T.self)
            return Array(UnsafeBufferPointer(start: p, count: count))
        }
        /// `rows` x `columns` floats, the size checked for overflow and every value for being finite.
        mutating func floats(rows: Int, columns: Int, name: String) throws -> [Float] {
            let count = try product(rows, columns, name)
            let p = try section(count, of: Float.self)
            try finite(p, count: count, name: name)
            return Array(UnsafeBufferPointer(start: p, count: count))
        }
        /// The product of two sizes from the file, or an error naming the section when it overflows.
        func product(_ a: Int, _ b: Int, _ name: String) throws -> Int {
            guard let n = checkedProduct(a, b) else { throw IndexError.file(path: path, reason: "the size of \(name) (\(a) x \(b)) overflows") }
            return n
        }
        /// Refuses NaN and infinity in a float section (a corrupt file would otherwise score as NaN).
        func finite(_ p: UnsafePointer<Float>, count: Int, name: String) throws {
            if let bad = firstNonFinite(UnsafeBufferPointer(start: p, count: count)) {
                throw IndexError.file(path: path, reason: "\(name) value \(bad) is NaN or infinite")
            }
        }
    }

    /// Loads an index saved by `save`.
    public static func load(_ path: String) throws -> any VectorIndex {
        // Without blocking (a FIFO would wait for a writer), and regular files only.
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw IndexError.file(path: path, reason: "cannot open (no such file?)") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw IndexError.file(path: path, reason: "cannot stat") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw IndexError.file(path: path, reason: "is not a regular file") }
        let length = Int(st.st_size)
        guard length >= 40 else { throw IndexError.file(path: path, reason: "is \(length) bytes, too short for an index header") }
        guard let mapped = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0), mapped != MAP_FAILED else {
            throw IndexError.file(path: path, reason: "cannot map into memory")
        }
        var keepMapping = false
        defer { if !keepMapping { munmap(mapped, length) } }
        var r = Reader(path: path, base: mapped, length: length)
        guard Array(UnsafeRawBufferPointer(start: mapped, count: 8)) == magic else {
            throw IndexError.file(path: path, reason: "not an Affinity index (bad magic)")
        }
        r.offset = 8
        let version = try r.u32()
        guard version >= 1 && version <= formatVersion else {
            throw IndexError.file(path: path, reason: "index format version \(version); this build reads versions 1 to \(formatVersion)")
        }
        let kindRaw = try r.u32(), metricRaw = try r.u32()
        guard let kind = KindCode(rawValue: kindRaw) else { throw IndexError.file(path: path, reason: "unknown index kind \(kindRaw)") }
        guard let metric = metric(metricRaw) else { throw IndexError.file(path: path, reason: "unknown metric code \(metricRaw)") }
        let dimension = Int(try r.u32())
        guard let count = Int(exactly: try r.u64()), let jsonLength = Int(exactly: try r.u64()), count <= length, dimension <= 1 << 20 else {
            throw IndexError.file(path: path, reason: "header sizes are implausible for a \(length)-byte file")
        }
        try r.need(jsonLength)
        let jsonData = Data(bytes: mapped + r.offset, count: jsonLength)
        r.offset += jsonLength
        guard let json = try? JSONSerialization.jsonObject(with: jsonData) as? [String: Any] else {
            throw IndexError.file(path: path, reason: "header JSON is corrupt")
        }
        guard dimension > 0, count >= 0 else { throw IndexError.file(path: path, reason: "bad dimension \(dimension) or count \(count)") }
        switch kind {
        case .flat:
            let values = try r.floats(rows: count, columns: dimension, name: "vectors")
            let index = FlatIndex(dimension: dimension, metric: metric)
            try index.addRaw(Matrix(rows: count, columns: dimension, values: values))   // saved rows are already normalised
            return index
        case .hnsw:
            let index = try HNSWIndex.deserialize(&r, metric: metric, dimension: dimension, count: count, json: json)
            keepMapping = true   // the index owns the mapping now
            return index
        case .ivf:
            return try IVFIndex.deserialize(&r, metric: metric, dimension: dimension, count: count, json: json)
        case .lsh:
            return try LSHIndex.deserialize(&r, metric: metric, dimension: dimension, count: count, json: json)
        case .ivfpq:
            return try IVFPQIndex.deserialize(&r, metric: metric, dimension: dimension, count: count, json: json)
        }
    }
}

extension HNSWIndex {
    func serialized() throws -> IndexFile.Writer {
        var upperCount = 0
        for n in 0..<count { upperCount += Int(levels[n]) * (maxM + 1) }
        let json: [String: Any] = [
            "neighborsPerNode": settings.neighborsPerNode, "efConstruction": settings.efConstruction, "seed": Int64(bitPattern: settings.seed),
            "entryPoint": Int(entryPoint), "maxLevel": Int(maxLevel), "upperInts": upperCount, "deletedCount": deletedCount,
        ]
        var w = try IndexFile.header(kind: .hnsw, metric: metric, dimension: dimension, count: count, json: json)
        w.raw(vectors, count * dimension * 4)
        w.raw(level0, count * (maxM0 + 1) * 4)
        w.raw(levels, count * 4)
        w.raw(deleted, count)
        w.align()
        for n in 0..<count where levels[n] > 0 { w.data.append(UnsafeRawPointer(upper[n]!).assumingMemoryBound(to: UInt8.self), count: Int(levels[n]) * (maxM + 1) * 4) }
        return w
    }

    /// Reads an HNSW index in place from the mapping. Every check runs on the raw sections before the
    /// index adopts them, so a corrupt file is rejected without touching the index's memory; on
    /// success the index owns the mapping (`load` must not unmap it).
    static func deserialize(_ r: inout IndexFile.Reader, metric: Metric, dimension: Int, count: Int, json: [String: Any]) throws -> HNSWIndex {
        func int(_ k: String) throws -> Int {
            guard let v = json[k] as? Int else { throw IndexError.file(path: r.path, reason: "header lacks \(k)") }
            return v
        }
        let m = try int("neighborsPerNode")
        guard m >= 2 && m <= 256 else { throw IndexError.file(path: r.path, reason: "neighborsPerNode \(m) is out of range") }
        let maxM = m, maxM0 = 2 * m
        let vectorCount = try r.product(count, dimension, "vectors")
        let vectors = try r.section(vectorCount, of: Float.self)
        try r.finite(vectors, count: vectorCount, name: "vectors")
        let level0 = try r.section(try r.product(count, maxM0 + 1, "layer-0 links"), of: Int32.self)
        let levels = try r.array(count, of: Int32.self)
        let deletedFlags = try r.array(count, of: UInt8.self)
        r.align()
        var upperInts = 0
        for n in 0..<count {
            guard levels[n] >= 0 && levels[n] <= 32 else { throw IndexError.file(path: r.path, reason: "node \(n) has level \(levels[n])") }
            upperInts += Int(levels[n]) * (maxM + 1)
        }
        guard (try? int("upperInts")) == upperInts else {
            throw IndexError.file(path: r.path, reason: "upper-layer size does not match the node levels")
        }
        try r.need(upperInts * 4)
        guard r.offset + upperInts * 4 == r.length else {
            throw IndexError.file(path: r.path, reason: "size \(r.length) does not match the header (expected \(r.offset + upperInts * 4) bytes)")
        }
        let upperBase = (r.base + r.offset).assumingMemoryBound(to: Int32.self)
        // Links: counts within capacity, targets existing nodes that have the layer.
        func check(_ list: UnsafePointer<Int32>, node n: Int, level l: Int) throws {
            let c = Int(list[0])
            guard c >= 0 && c <= (l == 0 ? maxM0 : maxM) else { throw IndexError.file(path: r.path, reason: "node \(n) has \(c) links on level \(l)") }
            for k in 0..<c {
                let t = list[k + 1]
                guard t >= 0 && Int(t) < count && Int(levels[Int(t)]) >= l else {
                    throw IndexError.file(path: r.path, reason: "node \(n) links to \(t) on level \(l), which is not a node of that layer")
                }
            }
        }
        var upperOffset = 0
        for n in 0..<count {
            try check(level0 + n * (maxM0 + 1), node: n, level: 0)
            for l in stride(from: 1, through: Int(levels[n]), by: 1) {
                try check(upperBase + upperOffset, node: n, level: l)
                upperOffset += maxM + 1
            }
        }
        guard let entry = Int32(exactly: try int("entryPoint")), let top = Int32(exactly: try int("maxLevel")) else {
            throw IndexError.file(path: r.path, reason: "entry point or top level is out of range")
        }
        if count == 0 {
            guard entry == -1 else { throw IndexError.file(path: r.path, reason: "an empty index has entry point \(entry)") }
        } else {
            guard entry >= 0 && Int(entry) < count, levels[Int(entry)] == top else {
                throw IndexError.file(path: r.path, reason: "entry point \(entry) with top level \(top) does not match the nodes")
            }
        }
        let settings = HNSWSettings(neighborsPerNode: m, efConstruction: max(1, try int("efConstruction")),
                                    seed: UInt64(bitPattern: Int64(try int("seed"))), threads: 0)
        let index = try HNSWIndex(dimension: dimension, metric: metric, settings: settings)
        index.adoptMapped(vectors: vectors, level0: level0, count: count)
        index.mapping = (r.base, r.length)
        upperOffset = 0
        var deletedCount = 0
        for n in 0..<count {
            index.levels[n] = levels[n]
            index.deleted[n] = deletedFlags[n] != 0
            if deletedFlags[n] != 0 { deletedCount += 1 }
            if levels[n] > 0 {
                let ints = Int(levels[n]) * (maxM + 1)
                let p = UnsafeMutablePointer<Int32>.allocate(capacity: ints)
                p.initialize(from: upperBase + upperOffset, count: ints)
                upperOffset += ints
                index.upper[n] = p
            }
        }
        index.deletedCount = deletedCount   // from the flags, not trusted from the header
        index.entryPoint = count == 0 ? -1 : entry
        index.maxLevel = count == 0 ? -1 : top
        return index
    }
}

import AffinityLinalg
import Foundation

/// Build settings of random-hyperplane LSH.
public struct LSHSettings: Sendable, Codable, Equatable {
    /// Number of hash tables L.
    public var tables: Int
    /// Bits (hyperplanes) per table, 1...64.
    public var bits: Int
    public var seed: UInt64 = 42

    public init(tables: Int, bits: Int, seed: UInt64 = 42) {
        self.tables = tables
        self.bits = bits
        self.seed = seed
    }
}

/// SimHash LSH (Charikar, STOC 2002): each table hashes a vector to the signs of its dot products
/// with `bits` random Gaussian hyperplanes; vectors sharing a bucket with the query in any table
/// (or, with `probes`, a bucket one bit away) are candidates, ranked exactly. Angular by nature:
/// best for cosine; with inner product it finds the candidates by angle and ranks them by score.
public final class LSHIndex: VectorIndex, @unchecked Sendable {
    public let dimension: Int
    public let metric: Metric
    public let settings: LSHSettings
    /// (tables·bits) x d hyperplanes.
    let planes: Matrix
    let vectors: Matrix
    let buckets: [[UInt64: [Int32]]]
    public var count: Int { vectors.rows }

    /// Most hash tables an index may have (each holds every vector once).
    public static let maxTables = 1024

    public convenience init(vectors m: Matrix, metric: Metric, settings: LSHSettings) throws {
        guard (1...Self.maxTables).contains(settings.tables), settings.bits > 0, settings.bits <= 64 else {
            throw IndexError.invalidParameter("LSH needs 1...\(Self.maxTables) tables and 1...64 bits per table")
        }
        let x = metric == .cosine ? ExactSearch.normalizedRows(m) : m
        let planes = Matrix.random(rows: settings.tables * settings.bits, columns: x.columns, seed: settings.seed)
        let projections = x.multiplied(by: planes, transposeOther: true)
        var buckets = [[UInt64: [Int32]]](repeating: [:], count: settings.tables)
        for r in 0..<x.rows {
            for t in 0..<settings.tables {
                buckets[t][LSHIndex.code(projections.values, offset: r * planes.rows + t * settings.bits, bits: settings.bits), default: []].append(Int32(r))
            }
        }
        self.init(dimension: x.columns, metric: metric, settings: settings, planes: planes, vectors: x, buckets: buckets)
    }

    init(dimension: Int, metric: Metric, settings: LSHSettings, planes: Matrix, vectors: Matrix, buckets: [[UInt64: [Int32]]]) {
        self.dimension = dimension
        self.metric = metric
        self.settings = settings
        self.planes = planes
        self.vectors = vectors
        self.buckets = buckets
    }

    static func code(_ values: [Float], offset: Int, bits: Int) -> UInt64 {
        var c: UInt64 = 0
        for b in 0..<bits where values[offset + b] >= 0 { c |= 1 << UInt64(b) }
        return c
    }

    public func search(_ query: [Float], k: Int, parameters: SearchParameters, filter: ((Int) -> Bool)?) throws -> [Neighbor] {
        try check(query)
        guard k > 0, count > 0 else { return [] }
        let q = metric == .cosine ? normalized(query) : query
        var projection = [Float](repeating: 0, count: planes.rows)
        q.withUnsafeBufferPointer { qp in
            planes.values.withUnsafeBufferPointer { p in
                Kernels.dotRows(query: qp.baseAddress!, rows: p.baseAddress!, rowCount: planes.rows, dimension: dimension, into: &projection)
            }
        }
        var candidates = Set<Int32>()
        for t in 0..<settings.tables {
            let offset = t * settings.bits
            let code = LSHIndex.code(projection, offset: offset, bits: settings.bits)
            candidates.formUnion(buckets[t][code] ?? [])
            if parameters.probes > 0 {
                // Flip the least certain bits first (smallest |projection|).
                let order = (0..<settings.bits).sorted { abs(projection[offset + $0]) < abs(projection[offset + $1]) }
                for b in order.prefix(parameters.probes) { candidates.formUnion(buckets[t][code ^ (1 << UInt64(b))] ?? []) }
            }
        }
        var selector = TopKSelector(k: k)
        q.withUnsafeBufferPointer { qp in
            vectors.values.withUnsafeBufferPointer { v in
                for id in candidates where filter?(Int(id)) ?? true {
                    selector.push(index: Int(id), score: similarity(metric, qp.baseAddress!, v.baseAddress! + Int(id) * dimension, dimension))
                }
            }
        }
        return selector.sortedResults().map { Neighbor(id: $0.index, score: $0.score) }
    }

    func serialized() throws -> IndexFile.Writer {
        var w = try IndexFile.header(kind: .lsh, metric: metric, dimension: dimension, count: count,
                                     json: ["tables": settings.tables, "bits": settings.bits, "seed": Int64(bitPattern: settings.seed)])
        vectors.values.withUnsafeBytes { w.raw($0.baseAddress!, $0.count) }
        return w
    }

    /// Hyperplanes are re-drawn from the seed and the buckets rebuilt, so the file holds only vectors.
    static func deserialize(_ r: inout IndexFile.Reader, metric: Metric, dimension: Int, count: Int, json: [String: Any]) throws -> LSHIndex {
        guard let t = json["tables"] as? Int, let b = json["bits"] as? Int, let seed = json["seed"] as? Int else {
            throw IndexError.file(path: r.path, reason: "LSH header is incomplete")
        }
        // The hyperplanes (tables·bits x dimension) and buckets (tables x count) are rebuilt from
        // these numbers: bound them before anything is allocated.
        guard (1...LSHIndex.maxTables).contains(t), (1...64).contains(b) else {
            throw IndexError.file(path: r.path, reason: "LSH has \(t) tables of \(b) bits; a file may hold 1...\(LSHIndex.maxTables) tables of 1...64 bits")
        }
        // Rebuilding allocates the hyperplanes (tables·bits x dimension) and every vector's
        // projections (count x tables·bits).
        let rebuildBytes = Double(t) * Double(b) * (Double(dimension) + Double(count)) * 4
        guard rebuildBytes <= Double(MemoryBudget.bytes) else {
            throw IndexError.file(path: r.path, reason: "rebuilding LSH (\(t) tables x \(b) bits over \(count) vectors of \(dimension) dimensions) would need \(MemoryBudget.describe(rebuildBytes))")
        }
        let x = Matrix(rows: count, columns: dimension, values: try r.floats(rows: count, columns: dimension, name: "vectors"))
        return try LSHIndex(vectors: x, metric: metric == .cosine ? .innerProduct : metric, settings: LSHSettings(tables: t, bits: b, seed: UInt64(bitPattern: Int64(seed))))
            .withMetric(metric)
    }

    func withMetric(_ m: Metric) -> LSHIndex {
        LSHIndex(dimension: dimension, metric: m, settings: settings, planes: planes, vectors: vectors, buckets: buckets)
    }
}

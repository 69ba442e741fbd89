import AffinityLinalg

/// Exact search over every stored vector: the oracle of every other index.
///
/// Batch search runs the blocked GEMM + heap kernel of `ExactSearch`; a single query scans with the
/// SIMD dot kernel.
public final class FlatIndex: VectorIndex, @unchecked Sendable {
    public let dimension: Int
    public let metric: Metric
    /// count x dimension, normalised rows for cosine.
    public private(set) var vectors: Matrix

    public var count: Int { vectors.rows }

    public init(dimension: Int, metric: Metric) {
        self.dimension = dimension
        self.metric = metric
        vectors = Matrix(rows: 0, columns: dimension)
    }

    /// Appends vectors; their ids continue from `count`. Not safe while other threads search.
    public func add(_ m: Matrix) throws {
        guard m.columns == dimension else { throw IndexError.dimensionMismatch(expected: dimension, got: m.columns) }
        let rows = metric == .cosine ? ExactSearch.normalizedRows(m) : m
        vectors = Matrix(rows: vectors.rows + rows.rows, columns: dimension, values: vectors.values + rows.values)
    }

    /// Appends rows as they are (already normalised when the metric is cosine).
    func addRaw(_ m: Matrix) throws {
        guard m.columns == dimension else { throw IndexError.dimensionMismatch(expected: dimension, got: m.columns) }
        vectors = Matrix(rows: vectors.rows + m.rows, columns: dimension, values: vectors.values + m.values)
    }

    public func search(_ query: [Float], k: Int, parameters: SearchParameters, filter: ((Int) -> Bool)?) throws -> [Neighbor] {
        try check(query)
        guard k > 0, count > 0 else { return [] }
        let q = metric == .cosine ? normalized(query) : query
        var scores = [Float](repeating: 0, count: count)
        q.withUnsafeBufferPointer { qp in
            vectors.values.withUnsafeBufferPointer { x in
                if metric == .l2 {
                    Kernels.squaredL2Rows(query: qp.baseAddress!, rows: x.baseAddress!, rowCount: count, dimension: dimension, into: &scores)
                } else {
                    Kernels.dotRows(query: qp.baseAddress!, rows: x.baseAddress!, rowCount: count, dimension: dimension, into: &scores)
                }
            }
        }
        var selector = TopKSelector(k: k)
        for i in 0..<count where filter?(i) ?? true {
            selector.push(index: i, score: metric == .l2 ? -scores[i] : scores[i])
        }
        return selector.sortedResults().map { Neighbor(id: $0.index, score: $0.score) }
    }

    /// Exact batch search through blocked GEMM (no filter).
    public func search(queries: Matrix, k: Int, threads: Int = 0) throws -> [[Neighbor]] {
        guard queries.columns == dimension else { throw IndexError.dimensionMismatch(expected: dimension, got: queries.columns) }
        let q = metric == .cosine ? ExactSearch.normalizedRows(queries) : queries
        return ExactSearch.search(queries: q, base: vectors, k: k, metric: metric == .cosine ? .innerProduct : metric, threads: threads)
            .map { $0.map { Neighbor(id: $0.index, score: $0.score) } }
    }
}

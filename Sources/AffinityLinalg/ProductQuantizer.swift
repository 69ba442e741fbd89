import _AffinityKernels

/// A product quantiser (Jégou, Douze & Schmid, TPAMI 2011): the vector is cut into `subspaces`
/// equal parts and each part is replaced by the nearest of 256 centroids learned by k-means on that
/// part, so a vector is stored in `subspaces` bytes. A query scores codes through per-subspace
/// tables (asymmetric distance computation), scanned by a gather-based AVX-512 kernel.
public struct ProductQuantizer: Sendable, Equatable {
    public let dimension: Int
    public let subspaces: Int
    public var subDimension: Int { dimension / subspaces }
    /// subspaces x 256 x subDimension.
    public let codebooks: [Float]

    public init(dimension: Int, subspaces: Int, codebooks: [Float]) throws {
        guard subspaces > 0, dimension % subspaces == 0 else {
            throw LinalgError.invalidArgument("PQ: dimension \(dimension) is not a multiple of \(subspaces) subspaces")
        }
        guard codebooks.count == subspaces * 256 * (dimension / subspaces) else {
            throw LinalgError.invalidArgument("PQ: codebooks have \(codebooks.count) floats, expected \(subspaces * 256 * (dimension / subspaces))")
        }
        self.dimension = dimension
        self.subspaces = subspaces
        self.codebooks = codebooks
    }

    /// Learns the codebooks on (at most `maxTrainingPoints` of) the rows of `x`.
    public static func train(_ x: Matrix, subspaces: Int, iterations: Int = 15, seed: UInt64 = 42, threads: Int = 0,
                             maxTrainingPoints: Int = 65_536) throws -> ProductQuantizer {
        guard subspaces > 0, x.columns % subspaces == 0 else {
            throw LinalgError.invalidArgument("PQ: dimension \(x.columns) is not a multiple of \(subspaces) subspaces")
        }
        guard x.rows >= 256 else { throw LinalgError.invalidArgument("PQ needs at least 256 training vectors, got \(x.rows)") }
        var g = SeededGenerator(seed: seed)
        let rows = Array(g.permutation(x.rows).prefix(maxTrainingPoints)).sorted()
        let ds = x.columns / subspaces
        var books = [Float](repeating: 0, count: subspaces * 256 * ds)
        for j in 0..<subspaces {
            let part = slice(x, rows: rows, subspace: j, width: ds)
            let km = try KMeans.fit(part, settings: KMeansSettings(clusters: 256, iterations: iterations, seed: seed &+ UInt64(j), threads: threads))
            for i in 0..<(256 * ds) { books[j * 256 * ds + i] = km.centroids.values[i] }
        }
        return try ProductQuantizer(dimension: x.columns, subspaces: subspaces, codebooks: books)
    }

    static func slice(_ x: Matrix, rows: [Int]? = nil, subspace j: Int, width ds: Int) -> Matrix {
        let list = rows ?? Array(0..<x.rows)
        var out = Matrix(rows: list.count, columns: ds)
        for (k, r) in list.enumerated() {
            for c in 0..<ds { out.values[k * ds + c] = x.values[r * x.columns + j * ds + c] }
        }
        return out
    }

    /// Codes of every row (rows x subspaces bytes): the nearest centroid of each part.
    public func encode(_ x: Matrix, threads: Int = 0) -> [UInt8] {
        let ds = subDimension
        var codes = [UInt8](repeating: 0, count: x.rows * subspaces)
        var assignment = [Int32](repeating: 0, count: x.rows)
        for j in 0..<subspaces {
            let part = ProductQuantizer.slice(x, subspace: j, width: ds)
            let book = Matrix(rows: 256, columns: ds, values: Array(codebooks[(j * 256 * ds)..<((j + 1) * 256 * ds)]))
            _ = KMeans.assign(part, centroids: book, into: &assignment, threads: threads)
            for r in 0..<x.rows { codes[r * subspaces + j] = UInt8(assignment[r]) }
        }
        return codes
    }

    /// The vector a code stands for.
    public func decode(_ code: ArraySlice<UInt8>) -> [Float] {
        let ds = subDimension
        var out = [Float](repeating: 0, count: dimension)
        for (j, c) in code.enumerated() {
            for k in 0..<ds { out[j * ds + k] = codebooks[(j * 256 + Int(c)) * ds + k] }
        }
        return out
    }

    /// The asymmetric table of a query: entry [j·256 + c] is the score of centroid c of part j
    /// (its inner product with the query part, or minus their squared distance).
    public func table(_ q: [Float], negatedL2: Bool) -> [Float] {
        let ds = subDimension
        var t = [Float](repeating: 0, count: subspaces * 256)
        q.withUnsafeBufferPointer { qp in
            codebooks.withUnsafeBufferPointer { b in
                t.withUnsafeMutableBufferPointer { out in
                    for j in 0..<subspaces {
                        let rows = b.baseAddress! + j * 256 * ds, dst = out.baseAddress! + j * 256
                        if negatedL2 {
                            Kernels.squaredL2Rows(query: qp.baseAddress! + j * ds, rows: rows, rowCount: 256, dimension: ds, into: dst)
                            for c in 0..<256 { dst[c] = -dst[c] }
                        } else {
                            Kernels.dotRows(query: qp.baseAddress! + j * ds, rows: rows, rowCount: 256, dimension: ds, into: dst)
                        }
                    }
                }
            }
        }
        return t
    }

    /// out[i] = bias + Σ_j table[j·256 + code_i[j]] for `count` codes.
    public func scan(codes: UnsafePointer<UInt8>, count: Int, table: UnsafePointer<Float>, bias: Float, into out: UnsafeMutablePointer<Float>) {
        affinity_pq_scan(codes, count, subspaces, table, bias, out)
    }

    /// Reference twin of `scan`.
    public func referenceScan(codes: [UInt8], table: [Float], bias: Float) -> [Float] {
        stride(from: 0, to: codes.count, by: subspaces).map { start in
            var s = Double(bias)
            for j in 0..<subspaces { s += Double(table[j * 256 + Int(codes[start + j])]) }
            return Float(s)
        }
    }
}

import AffinityLinalg
import Foundation

/// One search result: a vector's id (its row at insertion, 0-based) and its score (higher is better;
/// for L2 the negated squared distance).
public struct Neighbor: Sendable, Hashable, Codable {
    public var id: Int
    public var score: Float
    public init(id: Int, score: Float) {
        self.id = id
        self.score = score
    }
}

/// Per-query settings, passed with every call so one immutable index can serve differently tuned
/// queries at once. Each index reads the fields that concern it.
public struct SearchParameters: Sendable, Equatable, Codable {
    /// HNSW: size of the dynamic candidate list (raised to k when smaller).
    public var ef: Int = 64
    /// IVF: number of cells scanned (with norm bands: the best nprobe × bands of all cells' lists,
    /// so about as many vectors as nprobe cells hold).
    public var nprobe: Int = 16
    /// LSH: extra buckets probed per table (those whose hash differs in one bit), 0 = exact bucket only.
    public var probes: Int = 0
    /// IVF-PQ with kept vectors: re-rank the best refine·k PQ candidates exactly.
    public var refine: Int = 1

    public init(ef: Int = 64, nprobe: Int = 16, probes: Int = 0, refine: Int = 1) {
        self.ef = ef
        self.nprobe = nprobe
        self.probes = probes
        self.refine = refine
    }

    /// Applies `name=value` settings (the CLI's `--set ef=64`); an unknown name is an error.
    public func applying(_ settings: [String: String]) throws -> SearchParameters {
        var p = self
        for (key, raw) in settings {
            guard let v = Int(raw), v > 0 else { throw IndexError.invalidParameter("\(key)=\(raw): expected a positive integer") }
            switch key {
            case "ef": p.ef = v
            case "nprobe": p.nprobe = v
            case "probes": p.probes = v
            case "refine": p.refine = v
            default: throw IndexError.invalidParameter("unknown search parameter '\(key)' (known: ef, nprobe, probes, refine)")
            }
        }
        return p
    }
}

/// Errors of the index family; each says what was wrong and where.
public enum IndexError: Error, CustomStringConvertible, Equatable {
    case dimensionMismatch(expected: Int, got: Int)
    case invalidParameter(String)
    case badSpec(spec: String, part: String, reason: String)
    case notTrained(String)
    case unknownID(Int)
    case file(path: String, reason: String)

    public var description: String {
        switch self {
        case .dimensionMismatch(let e, let g): return "vector has dimension \(g), the index has \(e)"
        case .invalidParameter(let s): return s
        case .badSpec(let spec, let part, let reason): return "index spec '\(spec)': part '\(part)' \(reason)"
        case .notTrained(let s): return "\(s) must be trained before vectors are added"
        case .unknownID(let id): return "no vector with id \(id)"
        case .file(let path, let reason): return "\(path): \(reason)"
        }
    }
}

/// The interface of every nearest-neighbour index (FAISS's `Index`, hnswlib's `AlgorithmInterface`).
///
/// Results are best first (higher score is better), ties go to the smaller id, and lists are never
/// padded: fewer than k results only when fewer than k vectors (that pass the filter) exist.
/// Searching an index that is not being modified is safe from any number of threads.
public protocol VectorIndex: AnyObject, Sendable {
    var dimension: Int { get }
    /// Number of vectors stored (deleted ones included, where deletion exists).
    var count: Int { get }
    var metric: Metric { get }

    /// The k best vectors for `query` among those for which `filter` (when given) returns true.
    func search(_ query: [Float], k: Int, parameters: SearchParameters, filter: ((Int) -> Bool)?) throws -> [Neighbor]
}

extension VectorIndex {
    public func search(_ query: [Float], k: Int, parameters: SearchParameters = SearchParameters()) throws -> [Neighbor] {
        try search(query, k: k, parameters: parameters, filter: nil)
    }

    /// Searches every row of `queries`, in parallel on `threads` threads (0 = all cores).
    public func search(queries: Matrix, k: Int, parameters: SearchParameters = SearchParameters(), threads: Int = 0) throws -> [[Neighbor]] {
        guard queries.columns == dimension else { throw IndexError.dimensionMismatch(expected: dimension, got: queries.columns) }
        var out = [[Neighbor]](repeating: [], count: queries.rows)
        let failure = FirstError()
        out.withUnsafeMutableBufferPointer { buffer in
            let results = SharedMutableBuffer(buffer)
            Parallelism.forEachRange(queries.rows, grain: 64, threads: threads) { range in
                for q in range {
                    do { results[q] = try self.search(Array(queries.row(q)), k: k, parameters: parameters, filter: nil) } catch { failure.set(error) }
                }
            }
        }
        if let e = failure.error { throw e }
        return out
    }

    func check(_ query: [Float]) throws {
        guard query.count == dimension else { throw IndexError.dimensionMismatch(expected: dimension, got: query.count) }
    }
}

/// Orders neighbours best first, ties to the smaller id.
func sortNeighbors(_ list: inout [Neighbor]) {
    list.sort { ScoredIndex.ranksBefore($0.score, $0.id, $1.score, $1.id) }
}

/// The score of the project's metrics on raw pointers (cosine vectors are stored normalised, so it
/// is an inner product there).
@inline(__always)
func similarity(_ metric: Metric, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ d: Int) -> Float {
    metric == .l2 ? -Kernels.squaredL2(a, b, count: d) : Kernels.dot(a, b, count: d)
}

/// A copy of `v` scaled to unit length (zero stays zero).
func normalized(_ v: [Float]) -> [Float] {
    let n = Kernels.dot(v, v).squareRoot()
    return n > 0 ? v.map { $0 / n } : v
}

import AffinityLinalg
import Foundation

/// Build settings of an inverted-file index. Every field has a default except the list count.
public struct IVFSettings: Sendable, Codable, Equatable {
    /// Number of k-means cells (inverted lists; with norm bands each cell holds one list per band).
    public var lists: Int
    /// Apply the MIPS-to-nearest-neighbour reduction of Bachrach et al. (RecSys 2014) before
    /// clustering (inner product only): x -> [x, sqrt(M² − |x|²)], q -> [q, 0], so that L2
    /// cells partition the data by what inner-product queries will ask for.
    public var mipsReduction: Bool = false
    /// k-means iterations of the coarse quantiser.
    public var iterations: Int = 10
    /// At most this many training points per list (FAISS uses 256).
    public var trainingPointsPerList: Int = 256
    public var seed: UInt64 = 42
    public var threads: Int = 0
    /// Inner product without the reduction: norm bands per direction cell (one inverted list per
    /// cell and band; see `CoarseQuantizer`). 0 = chosen from the data: 1 when norms hardly vary,
    /// else up to 8.
    public var normBands: Int = 0

    public init(lists: Int, mipsReduction: Bool = false, iterations: Int = 10, trainingPointsPerList: Int = 256, seed: UInt64 = 42, threads: Int = 0,
                normBands: Int = 0) {
        self.lists = lists
        self.normBands = normBands
        self.mipsReduction = mipsReduction
        self.iterations = iterations
        self.trainingPointsPerList = trainingPointsPerList
        self.seed = seed
        self.threads = threads
    }
}

/// IVF-Flat (Sivic & Zisserman 2003; Jégou et al. 2011): a k-means coarse quantiser assigns each
/// vector to an inverted list; a query scans the `nprobe` lists that promise most and ranks their
/// vectors exactly.
///
/// With inner product, lists are direction cells split by norm (`CoarseQuantizer`): items whose
/// norms vary (popularity shows in the norm) would otherwise collapse onto a few large-norm
/// centroids. `mipsReduction` is the older alternative (measured against it in the README).
public final class IVFIndex: VectorIndex, @unchecked Sendable {
    public let dimension: Int
    public let metric: Metric
    public let settings: IVFSettings
    let quantizer: CoarseQuantizer
    /// Per list: ids, and their vectors contiguous (original space, normalised for cosine).
    let listIDs: [[Int32]]
    let listVectors: [[Float]]
    public let count: Int

    /// Trains the coarse quantiser on (a sample of) `vectors` and fills the lists.
    public convenience init(vectors: Matrix, metric: Metric, settings: IVFSettings) throws {
        let x = metric == .cosine ? ExactSearch.normalizedRows(vectors) : vectors
        let (quantizer, assignment) = try CoarseQuantizer.train(x, metric: metric, settings: settings)
        var ids = [[Int32]](repeating: [], count: quantizer.lists)
        var vecs = [[Float]](repeating: [], count: quantizer.lists)
        for r in 0..<x.rows {
            let l = Int(assignment[r])
            ids[l].append(Int32(r))
            vecs[l].append(contentsOf: x.row(r))
        }
        self.init(dimension: x.columns, metric: metric, settings: settings, quantizer: quantizer, listIDs: ids, listVectors: vecs, count: x.rows)
    }

    init(dimension: Int, metric: Metric, settings: IVFSettings, quantizer: CoarseQuantizer, listIDs: [[Int32]], listVectors: [[Float]], count: Int) {
        self.dimension = dimension
        self.metric = metric
        self.settings = settings
        self.quantizer = quantizer
        self.listIDs = listIDs
        self.listVectors = listVectors
        self.count = count
    }

    /// Sizes of the inverted lists (how balanced they are): cell-major, one per band with bands.
    public var listSizes: [Int] { listIDs.map(\.count) }

    public func search(_ query: [Float], k: Int, parameters: SearchParameters, filter: ((Int) -> Bool)?) throws -> [Neighbor] {
        try check(query)
        guard k > 0, count > 0 else { return [] }
        let q = metric == .cosine ? normalized(query) : query
        var selector = TopKSelector(k: k)
        var scores: [Float] = []
        q.withUnsafeBufferPointer { qp in
            for cell in quantizer.rankLists(q, nprobe: parameters.nprobe) {
                let ids = listIDs[cell]
                if ids.isEmpty { continue }
                if scores.count < ids.count { scores = [Float](repeating: 0, count: ids.count) }
                listVectors[cell].withUnsafeBufferPointer { v in
                    if metric == .l2 {
                        Kernels.squaredL2Rows(query: qp.baseAddress!, rows: v.baseAddress!, rowCount: ids.count, dimension: dimension, into: &scores)
                    } else {
                        Kernels.dotRows(query: qp.baseAddress!, rows: v.baseAddress!, rowCount: ids.count, dimension: dimension, into: &scores)
                    }
                }
                for (k, id) in ids.enumerated() where filter?(Int(id)) ?? true {
                    selector.push(index: Int(id), score: metric == .l2 ? -scores[k] : scores[k])
                }
            }
        }
        return selector.sortedResults().map { Neighbor(id: $0.index, score: $0.score) }
    }

    func serialized() throws -> IndexFile.Writer {
        var json = quantizer.json
        json["iterations"] = settings.iterations
        json["seed"] = Int64(bitPattern: settings.seed)
        var w = try IndexFile.header(kind: .ivf, metric: metric, dimension: dimension, count: count, json: json, version: quantizer.fileVersion)
        quantizer.write(&w)
        let sizes = listIDs.map { Int64($0.count) }
        sizes.withUnsafeBytes { w.raw($0.baseAddress!, $0.count) }
        let ids = listIDs.flatMap { $0 }
        ids.withUnsafeBytes { w.raw($0.baseAddress!, $0.count) }
        let vecs = listVectors.flatMap { $0 }
        vecs.withUnsafeBytes { w.raw($0.baseAddress!, $0.count) }
        return w
    }

    static func deserialize(_ r: inout IndexFile.Reader, metric: Metric, dimension: Int, count: Int, json: [String: Any]) throws -> IVFIndex {
        let quantizer = try CoarseQuantizer.read(&r, json: json, metric: metric, dimension: dimension, kind: "IVF")
        let sizes = try IVFIndex.readListSizes(&r, lists: quantizer.lists, count: count)
        try quantizer.check(sizes: sizes, path: r.path)
        let allIDs = try IVFIndex.readIDs(&r, count: count)
        let allVectors = try r.floats(rows: count, columns: dimension, name: "vectors")
        var ids: [[Int32]] = [], vecs: [[Float]] = []
        var start = 0
        for s in sizes {
            ids.append(Array(allIDs[start..<(start + s)]))
            vecs.append(Array(allVectors[(start * dimension)..<((start + s) * dimension)]))
            start += s
        }
        return IVFIndex(dimension: dimension, metric: metric, settings: IVFSettings(json: json, quantizer: quantizer),
                        quantizer: quantizer, listIDs: ids, listVectors: vecs, count: count)
    }

    /// The inverted lists' sizes: each non-negative, adding up to `count` without overflow.
    static func readListSizes(_ r: inout IndexFile.Reader, lists: Int, count: Int) throws -> [Int] {
        let sizes = try r.array(lists, of: Int64.self)
        var total = 0
        for s in sizes {
            guard s >= 0, s <= count else { throw IndexError.file(path: r.path, reason: "a list size \(s) is out of range for \(count) vectors") }
            total += Int(s)
        }
        guard total == count else { throw IndexError.file(path: r.path, reason: "list sizes add up to \(total), not \(count) vectors") }
        return sizes.map { Int($0) }
    }

    /// The vector ids of all lists: each in 0..<count and each exactly once (a duplicate would be
    /// returned several times by one search).
    static func readIDs(_ r: inout IndexFile.Reader, count: Int) throws -> [Int32] {
        let ids = try r.array(count, of: Int32.self)
        var seen = [Bool](repeating: false, count: count)
        for id in ids {
            guard id >= 0 && Int(id) < count else { throw IndexError.file(path: r.path, reason: "id \(id) is out of range 0..<\(count)") }
            guard !seen[Int(id)] else { throw IndexError.file(path: r.path, reason: "id \(id) appears more than once") }
            seen[Int(id)] = true
        }
        return ids
    }
}

extension IVFSettings {
    /// The settings a saved index was built with, from its JSON block and quantiser.
    init(json: [String: Any], quantizer: CoarseQuantizer) {
        self.init(lists: quantizer.cells, mipsReduction: quantizer.mipsReduction, iterations: json["iterations"] as? Int ?? 10,
                  seed: UInt64(bitPattern: Int64(json["seed"] as? Int ?? 42)), normBands: quantizer.bands)
    }
}

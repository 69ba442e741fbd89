import AffinityLinalg
import Foundation

/// Build settings of IVF-PQ.
public struct IVFPQSettings: Sendable, Codable, Equatable {
    /// Coarse cells (as in `IVFSettings`).
    public var ivf: IVFSettings
    /// Bytes per vector: the number of PQ subspaces (must divide the dimension).
    public var subspaces: Int
    /// Keep the raw vectors to re-rank the best `refine`·k PQ candidates exactly (FAISS's `Refine`).
    public var keepVectorsForRefine: Bool = false
    /// Learn an OPQ rotation first and index the rotated vectors.
    public var opq: Bool = false

    public init(ivf: IVFSettings, subspaces: Int, keepVectorsForRefine: Bool = false, opq: Bool = false) {
        self.ivf = ivf
        self.subspaces = subspaces
        self.keepVectorsForRefine = keepVectorsForRefine
        self.opq = opq
    }
}

/// IVF-PQ (Jégou et al. 2011): coarse k-means cells, and in each cell the residual x − c encoded by
/// a product quantiser trained on residuals. For inner product the score splits exactly as
/// q·x = q·c + q·(x − c), so one table per query serves every cell; for L2 each probed cell gets its
/// own table of −|(q − c) − r̂|². With `keepVectorsForRefine`, the best `refine`·k candidates by PQ
/// score are re-ranked with the exact vectors.
public final class IVFPQIndex: VectorIndex, @unchecked Sendable {
    public let dimension: Int
    public let metric: Metric
    public let settings: IVFPQSettings
    let quantizer: CoarseQuantizer
    public let pq: ProductQuantizer
    let listIDs: [[Int32]]
    /// Per list: codes (count x subspaces), padded by 4 bytes for the gather kernel.
    let listCodes: [[UInt8]]
    /// Raw vectors for refine (count x d, by id; rotated with OPQ), empty otherwise.
    let vectors: [Float]
    /// OPQ rotation R (d x d): the index holds x·R and rotates queries alike; nil without OPQ.
    let rotation: Matrix?
    public let count: Int

    public convenience init(vectors m: Matrix, metric: Metric, settings: IVFPQSettings) throws {
        var x = metric == .cosine ? ExactSearch.normalizedRows(m) : m
        var rotation: Matrix? = nil
        if settings.opq {
            let r = try OPQ.train(x, subspaces: settings.subspaces, seed: settings.ivf.seed, threads: settings.ivf.threads)
            x = x.multiplied(by: r, threads: settings.ivf.threads)
            rotation = r
        }
        let (quantizer, assignment) = try CoarseQuantizer.train(x, metric: metric, settings: settings.ivf)
        let centres = (0..<quantizer.lists).map { quantizer.centre(ofList: $0, dimension: x.columns) }
        var residuals = x
        for r in 0..<x.rows {
            let c = centres[Int(assignment[r])]
            for k in 0..<x.columns { residuals.values[r * x.columns + k] -= c[k] }
        }
        let pq = try ProductQuantizer.train(residuals, subspaces: settings.subspaces, seed: settings.ivf.seed, threads: settings.ivf.threads)
        let codes = pq.encode(residuals, threads: settings.ivf.threads)
        var ids = [[Int32]](repeating: [], count: quantizer.lists)
        var lists = [[UInt8]](repeating: [], count: quantizer.lists)
        for r in 0..<x.rows {
            let l = Int(assignment[r])
            ids[l].append(Int32(r))
            lists[l].append(contentsOf: codes[(r * pq.subspaces)..<((r + 1) * pq.subspaces)])
        }
        for l in 0..<lists.count { lists[l].append(contentsOf: [0, 0, 0, 0]) }
        self.init(dimension: x.columns, metric: metric, settings: settings, quantizer: quantizer, pq: pq, listIDs: ids, listCodes: lists,
                  vectors: settings.keepVectorsForRefine ? x.values : [], rotation: rotation, count: x.rows)
    }

    init(dimension: Int, metric: Metric, settings: IVFPQSettings, quantizer: CoarseQuantizer, pq: ProductQuantizer, listIDs: [[Int32]],
         listCodes: [[UInt8]], vectors: [Float], rotation: Matrix?, count: Int) {
        self.rotation = rotation
        self.dimension = dimension
        self.metric = metric
        self.settings = settings
        self.quantizer = quantizer
        self.pq = pq
        self.listIDs = listIDs
        self.listCodes = listCodes
        self.vectors = vectors
        self.count = count
    }

    /// Bytes per stored vector in the lists (codes and id), not counting refine vectors.
    public var bytesPerVector: Int { pq.subspaces + 4 }

    public func search(_ query: [Float], k: Int, parameters: SearchParameters, filter: ((Int) -> Bool)?) throws -> [Neighbor] {
        try check(query)
        guard k > 0, count > 0 else { return [] }
        var q = metric == .cosine ? normalized(query) : query
        if let rotation { q = Matrix(rows: 1, columns: dimension, values: q).multiplied(by: rotation, threads: 1).values }
        let refine = vectors.isEmpty ? 1 : max(1, parameters.refine)
        var selector = TopKSelector(k: k * refine)
        let isL2 = metric == .l2
        var sharedTable = isL2 ? [] : pq.table(q, negatedL2: false)
        var scores: [Float] = [], cellDots: [Float] = []
        for cell in quantizer.rankLists(q, nprobe: parameters.nprobe, cellDots: &cellDots) {
            let ids = listIDs[cell]
            if ids.isEmpty { continue }
            var bias: Float = 0
            if isL2 {
                // Table of −|(q − c)_j − r̂_j|², per cell.
                sharedTable = pq.table(zip(q, quantizer.centre(ofList: cell, dimension: dimension)).map { $0 - $1 }, negatedL2: true)
            } else {
                bias = quantizer.dotCentre(cellDots: cellDots, list: cell)
            }
            if scores.count < ids.count { scores = [Float](repeating: 0, count: ids.count) }
            listCodes[cell].withUnsafeBufferPointer { codes in
                sharedTable.withUnsafeBufferPointer { t in
                    scores.withUnsafeMutableBufferPointer { out in
                        pq.scan(codes: codes.baseAddress!, count: ids.count, table: t.baseAddress!, bias: bias, into: out.baseAddress!)
                    }
                }
            }
            for (n, id) in ids.enumerated() where filter?(Int(id)) ?? true { selector.push(index: Int(id), score: scores[n]) }
        }
        let candidates = selector.sortedResults()
        if vectors.isEmpty { return candidates.prefix(k).map { Neighbor(id: $0.index, score: $0.score) } }
        // Exact re-ranking of the PQ candidates.
        var exact = TopKSelector(k: k)
        q.withUnsafeBufferPointer { qp in
            vectors.withUnsafeBufferPointer { v in
                for cnd in candidates { exact.push(index: cnd.index, score: similarity(metric, qp.baseAddress!, v.baseAddress! + cnd.index * dimension, dimension)) }
            }
        }
        return exact.sortedResults().map { Neighbor(id: $0.index, score: $0.score) }
    }
}

extension IVFPQIndex {
    func serialized() throws -> IndexFile.Writer {
        var json = quantizer.json
        json.merge(["subspaces": pq.subspaces, "refine": !vectors.isEmpty, "seed": Int64(bitPattern: settings.ivf.seed),
                    "iterations": settings.ivf.iterations, "opq": rotation != nil]) { $1 }
        var w = try IndexFile.header(kind: .ivfpq, metric: metric, dimension: dimension, count: count, json: json, version: quantizer.fileVersion)
        quantizer.write(&w)
        pq.codebooks.withUnsafeBytes { w.raw($0.baseAddress!, $0.count) }
        let sizes = listIDs.map { Int64($0.count) }
        sizes.withUnsafeBytes { w.raw($0.baseAddress!, $0.count) }
        let ids = listIDs.flatMap { $0 }
        ids.withUnsafeBytes { w.raw($0.baseAddress!, $0.count) }
        let codes = listCodes.flatMap { $0.dropLast(4) }
        codes.withUnsafeBytes { w.raw($0.baseAddress!, $0.count) }
        if !vectors.isEmpty { vectors.withUnsafeBytes { w.raw($0.baseAddress!, $0.count) } }
        if let rotation { rotation.values.withUnsafeBytes { w.raw($0.baseAddress!, $0.count) } }
        return w
    }

    static func deserialize(_ r: inout IndexFile.Reader, metric: Metric, dimension: Int, count: Int, json: [String: Any]) throws -> IVFPQIndex {
        guard let m = json["subspaces"] as? Int, let refine = json["refine"] as? Bool, m > 0 else {
            throw IndexError.file(path: r.path, reason: "IVF-PQ header is incomplete")
        }
        guard m <= dimension, dimension % m == 0 else {
            throw IndexError.file(path: r.path, reason: "\(m) subspaces do not divide dimension \(dimension)")
        }
        let quantizer = try CoarseQuantizer.read(&r, json: json, metric: metric, dimension: dimension, kind: "IVF-PQ")
        let pq = try ProductQuantizer(dimension: dimension, subspaces: m, codebooks: try r.floats(rows: 256, columns: dimension, name: "codebooks"))
        let sizes = try IVFIndex.readListSizes(&r, lists: quantizer.lists, count: count)
        try quantizer.check(sizes: sizes, path: r.path)
        let allIDs = try IVFIndex.readIDs(&r, count: count)
        let allCodes = try r.array(try r.product(count, m, "codes"), of: UInt8.self)
        let vectors = refine ? try r.floats(rows: count, columns: dimension, name: "vectors") : []
        let opq = json["opq"] as? Bool ?? false
        let rotation = opq ? Matrix(rows: dimension, columns: dimension, values: try r.floats(rows: dimension, columns: dimension, name: "rotation")) : nil
        var ids: [[Int32]] = [], codes: [[UInt8]] = []
        var start = 0
        for s in sizes {
            ids.append(Array(allIDs[start..<(start + s)]))
            codes.append(Array(allCodes[(start * m)..<((start + s) * m)]) + [0, 0, 0, 0])
            start += s
        }
        let settings = IVFPQSettings(ivf: IVFSettings(json: json, quantizer: quantizer), subspaces: m, keepVectorsForRefine: refine, opq: opq)
        return IVFPQIndex(dimension: dimension, metric: metric, settings: settings, quantizer: quantizer,
                          pq: pq, listIDs: ids, listCodes: codes, vectors: vectors, rotation: rotation, count: count)
    }
}

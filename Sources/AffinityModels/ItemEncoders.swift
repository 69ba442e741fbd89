import AffinityLinalg
import AffinityNN

/// What a sequential model's item vectors are made of (`SASRec`'s `items` setting): the vector
/// that enters the Transformer for an item, and (tied) the one its output is scored against.
public enum ItemInput: String, Codable, Sendable, CaseIterable, SettingChoice {
    /// A learned row per item (SASRec): an item never trained on has an untrained row.
    case id
    /// The item's text vector through a learned linear map (UniSRec-like, without its mixture of
    /// adaptors): the representation is a function of the text, so an item seen only as text has one.
    case text
    /// The mean of learned code embeddings, one table per sub-space, looked up by the item's OPQ
    /// code (VQ-Rec, Hou et al. 2023): text -> code -> representation.
    case codes
}

/// Turns item indexes into the items x d table a sequential network reads its input rows from
/// and scores its outputs against. Training computes the table from the parameters once per
/// step (`table(training: true)`, which may keep what `backward` needs), the losses add
/// dL/d(table), and `backward` turns that into the parameters' gradients. `table(training: false)`
/// keeps nothing.
public protocol ItemEncoder: AnyObject, Sendable {
    var parameters: [Parameter] { get }
    var itemCount: Int { get }
    var dimension: Int { get }
    func table(training: Bool) -> Matrix
    func backward(_ dTable: Matrix)
}

/// `ItemInput.id`: the table is a parameter.
public final class IDItemEncoder: ItemEncoder, @unchecked Sendable {
    public let items: Parameter
    public init(items: Parameter) { self.items = items }
    public var parameters: [Parameter] { [items] }
    public var itemCount: Int { items.value.rows }
    public var dimension: Int { items.value.columns }
    public func table(training: Bool) -> Matrix { items.value }
    public func backward(_ dTable: Matrix) {
        dTable.values.withUnsafeBufferPointer { g in
            items.grad.values.withUnsafeMutableBufferPointer { dst in for k in 0..<g.count { dst[k] += g[k] } }
        }
    }
}

/// `ItemInput.text`: row i is `vectors[i] · W + b`; the text vectors stay fixed.
public final class TextItemEncoder: ItemEncoder, @unchecked Sendable {
    /// items x t, e.g. sentence vectors of each item's text (zero for an item without text).
    public let vectors: Matrix
    public let projection: Linear
    public init(vectors: Matrix, dimension: Int, seed: UInt64, threads: Int) {
        self.vectors = vectors
        projection = Linear(vectors.columns, dimension, seed: seed, name: "text_projection", threads: threads)
    }
    public var parameters: [Parameter] { projection.parameters }
    public var itemCount: Int { vectors.rows }
    public var dimension: Int { projection.weight.value.rows }
    public func table(training: Bool) -> Matrix { training ? projection.forward(vectors, training: true) : projection.infer(vectors) }
    public func backward(_ dTable: Matrix) { _ = projection.backward(dTable) }
}

/// `ItemInput.codes`: row i is the mean over sub-spaces j of `tables[j][code[i][j]]`, all D tables
/// of `centroids` rows stacked in one embedding (row j·centroids + c). Codes come from
/// `ItemCodes` (an OPQ of the item text vectors).
public final class CodeItemEncoder: ItemEncoder, @unchecked Sendable {
    public let codes: ItemCodes
    public let embedding: Embedding
    public init(codes: ItemCodes, dimension: Int, seed: UInt64, scale: Float) {
        self.codes = codes
        embedding = Embedding(count: codes.subspaces * codes.centroids, dimension: dimension, seed: seed, scale: scale, name: "code_embedding")
    }
    public var parameters: [Parameter] { [embedding.table] }
    public var itemCount: Int { codes.count }
    public var dimension: Int { embedding.dimension }
    public func table(training: Bool) -> Matrix { table(training: training, extra: []) }
    /// The table with `extra` code vectors' rows after the items' (VQ-Rec's semi-synthetic items).
    public func table(training: Bool, extra: [[UInt8]]) -> Matrix {
        let bags = (0..<codes.count).map { codes.bag(of: $0) } + extra.map { codes.bag(of: $0) }
        return training ? embedding.bag(bags) : embedding.pooled(bags)
    }
    /// `dTable` may have the extra rows of the last `table(training: true, extra:)`.
    public func backward(_ dTable: Matrix) { embedding.bagBackward(dTable) }
}

/// Each item's code: one centroid index per sub-space of a product quantiser of its text vector
/// (after the OPQ rotation), made unique: VQ-Rec's items are told apart only by their codes, so
/// two items with the same code would be one item to the model. `collisions` counts the items
/// whose nearest code was already taken; each got the free code that costs the least extra
/// quantisation error among those that change one sub-space's centroid (the cheapest change
/// first), or, when more than 255·m items crowd one code, the next free code counting up from
/// it. The reference implementation leaves collisions as they are. Items without text (a zero vector) get a code
/// too, the quantiser's code of the zero vector made unique like any other: they are told apart
/// by their code alone and learn from their interactions only.
public struct ItemCodes: Sendable, Equatable {
    public let subspaces: Int
    public let centroids: Int
    /// items x subspaces.
    public let values: [UInt8]
    public let collisions: Int

    public init(subspaces: Int, centroids: Int = 256, values: [UInt8], collisions: Int = 0) {
        precondition(subspaces > 0 && values.count % subspaces == 0, "codes must hold items x subspaces values")
        self.subspaces = subspaces
        self.centroids = centroids
        self.values = values
        self.collisions = collisions
    }

    public var count: Int { values.count / subspaces }
    public func code(of item: Int) -> [UInt8] { Array(values[(item * subspaces)..<((item + 1) * subspaces)]) }
    func bag(of item: Int) -> [Int] { (0..<subspaces).map { $0 * centroids + Int(values[item * subspaces + $0]) } }
    func bag(of code: [UInt8]) -> [Int] { code.enumerated().map { $0.offset * centroids + Int($0.element) } }

    /// The codes of `vectors` (items x d, rotated by the quantiser's OPQ rotation first), unique.
    public static func encode(_ vectors: Matrix, quantizer: ItemQuantizer, threads: Int = 0) -> ItemCodes {
        let rotated = vectors.multiplied(by: quantizer.rotation, threads: threads)
        let pq = quantizer.pq, m = pq.subspaces, ds = pq.subDimension
        var codes = pq.encode(rotated, threads: threads)
        var taken = Set<[UInt8]>()
        var collisions = 0
        for i in 0..<vectors.rows {
            let code = Array(codes[(i * m)..<((i + 1) * m)])
            if taken.insert(code).inserted { continue }
            collisions += 1
            // Extra error of moving sub-space j to centroid c: |x_j − c|² − |x_j − c_now|².
            var changes: [(cost: Float, j: Int, c: UInt8)] = []
            for j in 0..<m {
                let x = (0..<ds).map { rotated.values[i * vectors.columns + j * ds + $0] }
                func distance(_ c: Int) -> Float {
                    var s: Float = 0
                    for k in 0..<ds { let t = x[k] - pq.codebooks[(j * 256 + c) * ds + k]; s += t * t }
                    return s
                }
                let now = distance(Int(code[j]))
                for c in 0..<256 where c != Int(code[j]) {
                    let cost = distance(c) - now
                    changes.append((cost.isNaN ? .infinity : cost, j, UInt8(c)))
                }
            }
            changes.sort { ($0.cost, $0.j, $0.c) < ($1.cost, $1.j, $1.c) }
            var chosen: [UInt8]? = nil
            for change in changes {
                var candidate = code
                candidate[change.j] = change.c
                if !taken.contains(candidate) { chosen = candidate; break }
            }
            if chosen == nil {
                // Every single change is taken (more than 255·m items crowd one code): count up
                // from the code as a base-256 number until a free one; there are 256^m of them.
                var candidate = code
                repeat {
                    var j = m - 1
                    while j >= 0 {
                        candidate[j] = candidate[j] &+ 1
                        if candidate[j] != 0 { break }
                        j -= 1
                    }
                } while taken.contains(candidate)
                chosen = candidate
            }
            let unique = chosen!
            taken.insert(unique)
            for j in 0..<m { codes[i * m + j] = unique[j] }
        }
        return ItemCodes(subspaces: m, centroids: 256, values: codes, collisions: collisions)
    }

    /// How many items share their code with an earlier item (0 for codes from `encode`).
    public var duplicates: Int {
        var seen = Set<ArraySlice<UInt8>>()
        var n = 0
        for i in 0..<count where !seen.insert(values[(i * subspaces)..<((i + 1) * subspaces)]).inserted { n += 1 }
        return n
    }
}

/// The quantiser behind item codes: an OPQ rotation and a product quantiser of the rotated text
/// vectors (AffinityLinalg's `OPQ` and `ProductQuantizer`, the ones `IVF-PQ` indexes use).
public struct ItemQuantizer: Sendable, Equatable {
    public let rotation: Matrix
    public let pq: ProductQuantizer
    public var dimension: Int { rotation.rows }

    public init(rotation: Matrix, pq: ProductQuantizer) throws {
        guard rotation.rows == rotation.columns, rotation.rows == pq.dimension else {
            throw ModelError.invalidSetting(name: "quantizer", reason: "rotation \(rotation.rows)x\(rotation.columns) does not match a \(pq.dimension)-dimensional quantiser")
        }
        self.rotation = rotation
        self.pq = pq
    }

    /// OPQ with `subspaces` sub-spaces of 256 centroids, trained on the rows of `vectors` that are
    /// not zero (items without text take no part).
    public static func train(_ vectors: Matrix, subspaces: Int, seed: UInt64, threads: Int = 0) throws -> ItemQuantizer {
        let rows = vectors.nonZeroRows()
        guard rows.count >= 256 else {
            throw ModelError.invalidSetting(name: "itemVectors", reason: "the item-code quantiser needs at least 256 items with text, got \(rows.count)")
        }
        guard vectors.columns % subspaces == 0 else {
            throw ModelError.invalidSetting(name: "subspaces", reason: "text vectors of \(vectors.columns) dimensions do not split into \(subspaces) sub-spaces")
        }
        let x = vectors.rows(at: rows)
        let rotation = try OPQ.train(x, subspaces: subspaces, seed: seed, threads: threads)
        let pq = try ProductQuantizer.train(x.multiplied(by: rotation, threads: threads), subspaces: subspaces, seed: seed, threads: threads)
        return try ItemQuantizer(rotation: rotation, pq: pq)
    }
}

import AffinityLinalg

/// User and item embeddings whose dot product is the score: the shared scoring half of matrix
/// factorisation models (iALS, BPR).
public struct FactorModel: Sendable {
    /// users x factors.
    public var userFactors: Matrix
    /// items x factors.
    public var itemFactors: Matrix
    /// Optional per-item bias added to every score (BPR's item bias); empty when unused.
    public var itemBias: [Float]

    public var factors: Int { itemFactors.columns }

    public init(userFactors: Matrix, itemFactors: Matrix, itemBias: [Float] = []) {
        precondition(userFactors.columns == itemFactors.columns, "factor counts differ")
        precondition(itemBias.isEmpty || itemBias.count == itemFactors.rows, "bias length differs from the item count")
        self.userFactors = userFactors
        self.itemFactors = itemFactors
        self.itemBias = itemBias
    }

    /// scores[i] = vector · item_i (+ bias_i).
    public func scores(userVector: UnsafePointer<Float>, into scores: UnsafeMutableBufferPointer<Float>) {
        itemFactors.values.withUnsafeBufferPointer { v in
            Kernels.dotRows(query: userVector, rows: v.baseAddress!, rowCount: itemFactors.rows, dimension: factors, into: scores.baseAddress!)
        }
        if !itemBias.isEmpty { for i in 0..<itemBias.count { scores[i] += itemBias[i] } }
    }

    public func scores(user: Int, into scores: UnsafeMutableBufferPointer<Float>) {
        userFactors.values.withUnsafeBufferPointer { u in self.scores(userVector: u.baseAddress! + user * factors, into: scores) }
    }

    /// Scores of several known users, row after row (`users.count` x items), each row identical to
    /// `scores(user:into:)` (the same kernel on each item), but reading the item vectors once per
    /// tile of about 256 KB for the whole block instead of once per user: evaluation over a large
    /// catalogue stops being bound by memory bandwidth.
    public func scores(users: [Int], into out: UnsafeMutableBufferPointer<Float>) {
        let n = itemFactors.rows, f = factors
        precondition(out.count >= users.count * n, "the output holds \(out.count) scores, need \(users.count) x \(n)")
        let tile = max(64, (256 << 10) / max(1, f * 4) / 64 * 64)
        userFactors.values.withUnsafeBufferPointer { u in
            itemFactors.values.withUnsafeBufferPointer { v in
                for start in stride(from: 0, to: n, by: tile) {
                    let count = min(tile, n - start)
                    for (r, user) in users.enumerated() {
                        Kernels.dotRows(query: u.baseAddress! + user * f, rows: v.baseAddress! + start * f, rowCount: count,
                                        dimension: f, into: out.baseAddress! + r * n + start)
                    }
                }
            }
        }
        if !itemBias.isEmpty {
            for r in 0..<users.count { for i in 0..<n { out[r * n + i] += itemBias[i] } }
        }
    }

    public func scores(userVector: [Float]) -> [Float] {
        var out = [Float](repeating: 0, count: itemFactors.rows)
        userVector.withUnsafeBufferPointer { u in out.withUnsafeMutableBufferPointer { scores(userVector: u.baseAddress!, into: $0) } }
        return out
    }

    /// Items by cosine similarity of their factors (as implicit's `similar_items`), `item` excluded.
    public func similarItems(to item: Int, k: Int) -> [ScoredItem] {
        let n = itemFactors.rows
        var dots = [Float](repeating: 0, count: n)
        itemFactors.values.withUnsafeBufferPointer { v in
            Kernels.dotRows(query: v.baseAddress! + item * factors, rows: v.baseAddress!, rowCount: n, dimension: factors, into: &dots)
        }
        let norms = (0..<n).map { i -> Float in
            itemFactors.values.withUnsafeBufferPointer { v in Kernels.dot(v.baseAddress! + i * factors, v.baseAddress! + i * factors, count: factors).squareRoot() }
        }
        let cosine = (0..<n).map { i -> Float in
            let d = norms[i] * norms[item]
            return d > 0 ? dots[i] / d : 0
        }
        return topK(cosine, k: k, excluded: [item])
    }

    func tensors() -> [String: Tensor] {
        var t: [String: Tensor] = [
            "user_factors": .float32(userFactors.values, shape: [userFactors.rows, factors]),
            "item_factors": .float32(itemFactors.values, shape: [itemFactors.rows, factors]),
        ]
        if !itemBias.isEmpty { t["item_bias"] = .float32(itemBias) }
        return t
    }

    init(file: SafeTensorsFile, path: String, users: Int, items: Int) throws {
        func matrix(_ name: String, rows: Int) throws -> Matrix {
            guard let t = file.tensors[name], t.shape.count == 2, t.shape[0] == rows else {
                throw SafeTensorsError.corrupt(path: path, reason: "\(name) must be a [\(rows), factors] tensor")
            }
            return Matrix(rows: rows, columns: t.shape[1], values: try file.float32(name, path: path))
        }
        let u = try matrix("user_factors", rows: users), v = try matrix("item_factors", rows: items)
        guard u.columns == v.columns else { throw SafeTensorsError.corrupt(path: path, reason: "user and item factors differ in width") }
        // The width sizes f x f systems at load (iALS's YᵀY): with no rows it is not backed by data.
        guard u.columns >= 1, (users + items > 0 || u.columns <= 1), Double(u.columns) * Double(u.columns) * 8 <= Double(MemoryBudget.bytes) else {
            throw SafeTensorsError.corrupt(path: path, reason: "factor width \(u.columns) is out of range")
        }
        let bias = file.tensors["item_bias"] != nil ? try file.float32("item_bias", path: path) : []
        guard bias.isEmpty || bias.count == items else { throw SafeTensorsError.corrupt(path: path, reason: "item_bias has \(bias.count) entries, expected \(items)") }
        self.init(userFactors: u, itemFactors: v, itemBias: bias)
    }
}

/// A recommender whose score is the dot product of a user vector and an item vector, so that the
/// item vectors can be put in a nearest-neighbour index and searched with the user vector (the
/// serving path of two-tower and matrix-factorisation models).
public protocol EmbeddingRecommender: Recommender {
    /// items x d: score(user, item) = userEmbedding · itemEmbeddings[item], exactly the model's score.
    /// May be computed on each call; read it once.
    var itemEmbeddings: Matrix { get }
    /// The vector of a known user (length d).
    func userEmbedding(user: Int) -> [Float]
    /// The fold-in vector of a history the model never saw (length d); items outside the model are ignored.
    func userEmbedding(history: [Int]) -> [Float]
}

extension EmbeddingRecommender {
    /// users x d: every known user's vector (`userEmbedding(user:)`), row by row.
    public var userEmbeddings: Matrix {
        let d = itemEmbeddings.columns
        var m = Matrix(rows: userCount, columns: d)
        for u in 0..<userCount {
            let v = userEmbedding(user: u)
            for k in 0..<d { m[u, k] = v[k] }
        }
        return m
    }
}

/// A neural embedding model whose trained users and items are a `FactorModel` (two-tower,
/// SASRec): a known user's score, a history's score (through the model's own
/// `userEmbedding(history:)`), similar items and the item embeddings come from here.
public protocol FactorScoredRecommender: EmbeddingRecommender {
    /// Known users' vectors and the item embeddings.
    var scoring: FactorModel { get }
}

extension FactorScoredRecommender {
    public var itemEmbeddings: Matrix { scoring.itemFactors }

    public func userEmbedding(user: Int) -> [Float] { Array(scoring.userFactors.row(user)) }

    public func scores(forUser user: Int, into scores: UnsafeMutableBufferPointer<Float>) {
        scoring.scores(user: user, into: scores)
    }

    public func scores(forUsers users: [Int], into scores: UnsafeMutableBufferPointer<Float>) {
        scoring.scores(users: users, into: scores)
    }

    public func scores(forHistory history: [Int]) -> [Float] {
        scoring.scores(userVector: userEmbedding(history: history))
    }

    /// Items by cosine similarity of their embeddings.
    public func similarItems(to item: Int, k: Int) throws -> [ScoredItem] {
        guard item >= 0 && item < itemCount else { throw ModelError.itemOutOfRange(item, count: itemCount) }
        guard k > 0 else { throw ModelError.invalidK(k) }
        return scoring.similarItems(to: item, k: k)
    }
}

/// A recommender whose scores are the dot products of a `FactorModel` (iALS, BPR): scoring,
/// similar items, embeddings and persistence come from here; a model adds its training and fold-in.
public protocol FactorizationRecommender: PersistableRecommender, EmbeddingRecommender {
    var factors: FactorModel { get }
    init(configuration: Configuration, interactions: SparseMatrix, factors: FactorModel)
    /// Fold-in: the user factors fitted to a history with the item factors fixed.
    func userFactors(history: [Int]) -> [Float]
}

extension FactorizationRecommender {
    /// The item factors, with the item bias as one more column when the model has one (the user
    /// side then carries a constant 1 there), so that the dot product is the full score.
    public var itemEmbeddings: Matrix {
        let y = factors.itemFactors, b = factors.itemBias
        guard !b.isEmpty else { return y }
        var out = Matrix(rows: y.rows, columns: y.columns + 1)
        for i in 0..<y.rows {
            for k in 0..<y.columns { out[i, k] = y[i, k] }
            out[i, y.columns] = b[i]
        }
        return out
    }

    public func userEmbedding(user: Int) -> [Float] {
        let f = factors.factors
        return withBiasSlot(Array(factors.userFactors.values[(user * f)..<((user + 1) * f)]))
    }

    public func userEmbedding(history: [Int]) -> [Float] { withBiasSlot(userFactors(history: history)) }

    /// Fold-in scores: the fitted user factors against every item.
    public func scores(forHistory history: [Int]) -> [Float] {
        factors.scores(userVector: userFactors(history: history))
    }

    private func withBiasSlot(_ v: [Float]) -> [Float] { factors.itemBias.isEmpty ? v : v + [1] }
}

extension FactorizationRecommender {
    public func scores(forUser user: Int, into scores: UnsafeMutableBufferPointer<Float>) {
        factors.scores(user: user, into: scores)
    }

    public func scores(forUsers users: [Int], into scores: UnsafeMutableBufferPointer<Float>) {
        factors.scores(users: users, into: scores)
    }

    /// Items by cosine similarity of their factors.
    public func similarItems(to item: Int, k: Int) throws -> [ScoredItem] {
        guard item >= 0 && item < itemCount else { throw ModelError.itemOutOfRange(item, count: itemCount) }
        guard k > 0 else { throw ModelError.invalidK(k) }
        return factors.similarItems(to: item, k: k)
    }

    public func tensors() -> [String: Tensor] {
        interactions.tensors(prefix: "interactions").merging(factors.tensors()) { a, _ in a }
    }

    public init(configuration: Configuration, file: SafeTensorsFile, path: String) throws {
        let x = try SparseMatrix(file: file, prefix: "interactions", path: path)
        self.init(configuration: configuration, interactions: x,
                  factors: try FactorModel(file: file, path: path, users: x.rowCount, items: x.columnCount))
    }
}

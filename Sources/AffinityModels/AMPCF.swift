import AffinityData
import AffinityEval
import AffinityLinalg
import AffinityNN
import Foundation

/// A model that places a user at several points of the item-embedding space, so that retrieval
/// runs one nearest-neighbour search per point (query), merges the candidates and scores them
/// exactly (AMP-CF's personas). `itemEmbeddings · query` bounds the model's score from above
/// for at least one query, which is what makes the per-query search find its best items.
public protocol MultiQueryRecommender: Recommender {
    /// items x d: the vectors the index holds.
    var itemEmbeddings: Matrix { get }
    /// A known user's queries (rows, width d).
    func queries(user: Int) -> Matrix
    /// A history's queries (fold-in), for a user the model never saw.
    func queries(history: [Int]) -> Matrix
    /// The exact scores of `items` for the user whose queries (from `queries(user:)` or
    /// `queries(history:)`) are given: a fold-in is computed once per request.
    func scores(ofItems items: [Int], queries: Matrix) -> [Float]
}

/// Which of a user's personas an item's score comes from, and which history items characterise
/// that persona.
public struct PersonaAttribution: Sendable, Equatable, Codable {
    /// 0-based persona index.
    public var persona: Int
    /// The persona's attention weight in the item's score (0…1).
    public var attention: Float
    /// History items this persona serves most (their own attention on it), largest first.
    public var characteristic: [Contribution]
}

/// A model whose users are several personas and that can say which one serves an item.
public protocol PersonaRecommender: MultiQueryRecommender {
    var personaCount: Int { get }
    /// The persona behind each item's score for a known user, with up to `size` characteristic history items.
    func attributions(of items: [Int], user: Int, size: Int) -> [PersonaAttribution]
    /// The same for a history, given its `queries(history:)` (the fold-in the serving path made
    /// already; it is not repeated here).
    func attributions(of items: [Int], queries: Matrix, history: [Int], size: Int) -> [PersonaAttribution]
    /// Per persona, the history items it serves (each history item goes to the persona with its
    /// largest attention), strongest first.
    func personas(user: Int) -> [[Contribution]]
}

/// AMP-CF, attentive multi-persona collaborative filtering (Barkan, Fuchs, Caciularu &
/// Koenigstein, RecSys 2020). Each user u is P persona vectors p_u1…p_uP; for a candidate item j
/// the personas are weighted by attention with the item as the query,
///
///     α_k(u, j) = softmax_k( cos(W_u p_uk + b_u, W_v q_j + b_v) / τ ),
///     score(u, j) = Σ_k α_k(u, j) · (p_uk · q_j) + b_j,
///
/// so the user's representation depends on the candidate and each recommendation is served by
/// the persona with the largest α. P = 1 is matrix factorisation with an item bias.
///
/// Objective (`objective`): by default the softmax over every item, one row per user with the
/// user's positives as its targets (the multinomial likelihood of Mult-VAE): −Σ_{i∈H_u} log
/// softmax(s_u)_i, summed over a batch of users and divided by its positives. It is the full
/// softmax the paper's sampled one estimates (with the user's other positives in the
/// denominator, where the sampled one masks seen items) and, on a catalogue the size of MovieLens, cheaper: one
/// score row per user instead of one per positive (ml-1m, P = 4: about 2 s an epoch on 2 cores). With
/// `sampled-softmax`, the paper's form: a softmax over each positive and `negatives` items drawn
/// by `sampling` and shared by the batch (logits corrected by −log(N·Q(j)), negatives the user
/// has seen masked) — for catalogues too large for a full row. Both add the persona-entropy
/// terms: +λ₊·H(α) on positives (an item the user chose should be served by one persona) and
/// −λ₋·H(α) on the other items (the sampled form counts λ₋ once per positive, the full form once
/// per user row: the same λ₋ weighs less there).
///
/// AdamW decays every user's centre and offsets at every step (dense Adam, as PyTorch's), while
/// a user's gradient comes once an epoch: the effective decay between two visits grows with
/// users / `batchSize`, so the decays tuned on ml-1m are a starting point for larger data.
///
/// Parametrisation: persona k of user u is p_uk = c_u + o_uk, a centre and an offset, with the
/// offsets decayed harder (`personaWeightDecay`) than everything else (`weightDecay`, AdamW).
/// Free personas from the start split a user's few positives P ways and overfit (in a prototype,
/// P = 4 stayed 28 % below P = 1 on ml-1m validation); as offsets from a shared centre the model starts as
/// matrix factorisation and grows personas where the data supports them. The saved model
/// keeps only p_uk. Adam through the shared
/// `TrainingLoop`; early stopping on validation Recall@20 (`validationUsers` lend 20 % of their
/// positives, or a split's valid.tsv), then, with `refit`, training again on every positive for
/// the chosen number of epochs. Either objective's scores are matrix products per batch (the
/// sampled one shares its negatives across the batch rather than drawing per row).
///
/// Serving: one ANN search per persona over [q_j, b_j] with the query [p_uk, 1] (the score is a
/// convex combination of the personas' dot products, so an item scores at most its best
/// persona's dot product plus its bias), candidates merged and scored exactly, the searches widened
/// until the k-th exact score reaches that bound for every item they did not return. A new user
/// (fold-in) gets personas fitted to the history with the items fixed: seeded k-means of the
/// history's item vectors, then `foldInSteps` Adam steps of the softmax over every item.
public struct AMPCF: TrainingDataRecommender, MultiQueryRecommender, PersonaRecommender {
    /// What AMP-CF's training minimises.
    public enum Objective: String, Codable, Sendable, CaseIterable, SettingChoice {
        /// Softmax over every item, one row per user (exact; default).
        case softmax
        /// Softmax over each positive and `negatives` sampled items shared by the batch (logQ-corrected).
        case sampledSoftmax = "sampled-softmax"
    }

    public struct Configuration: ModelConfiguration {
        public static let settingHelp: [String: String] = [
            "personas": "persona vectors per user (P)",
            "dimension": "embedding width",
            "attentionDimension": "width of the attention projections",
            "temperature": "attention softmax temperature (cosine / tau)",
            "objective": "softmax over all items, or sampled-softmax",
            "negatives": "sampled-softmax: negatives per batch",
            "sampling": "sampled-softmax: draws",
            "positiveEntropy": "lambda+: persona entropy on positives",
            "negativeEntropy": "lambda-: minus entropy on negatives",
            "epochs": "most passes over the positives",
            "batchSize": "users (softmax) or positives per step",
            "learningRate": "Adam step size",
            "weightDecay": "AdamW decoupled decay",
            "personaWeightDecay": "AdamW decay of persona offsets",
            "validationUsers": "users lending 20% to validation",
            "patience": "epochs without better validation",
            "refit": "retrain on all positives for the chosen epochs",
            "foldInSteps": "Adam steps fitting a new user's personas",
            "seed": "initialisation, order and negatives",
            "threads": "worker threads (0 = all cores)",
        ]

        public var personas: Int = 4
        public var dimension: Int = 64
        public var attentionDimension: Int = 32
        public var temperature: Double = 0.1
        public var objective: Objective = .softmax
        public var negatives: Int = 128
        public var sampling: NegativeSampling = .popularity
        public var positiveEntropy: Double = 0
        public var negativeEntropy: Double = 0
        public var epochs: Int = 50
        public var batchSize: Int = 256
        public var learningRate: Double = 0.01
        public var weightDecay: Double = 1
        public var personaWeightDecay: Double = 5
        public var validationUsers: Int = 1000
        public var patience: Int = 5
        public var refit: Bool = true
        public var foldInSteps: Int = 30
        public var seed: UInt64 = 42
        public var threads: Int = 0

        public init() {}

        public func validate() throws {
            for (name, v) in [("personas", personas), ("dimension", dimension), ("attentionDimension", attentionDimension),
                              ("negatives", negatives), ("batchSize", batchSize)] where v < 1 {
                throw ModelError.invalidSetting(name: name, reason: "must be at least 1, got \(v)")
            }
            guard personas <= 64 else { throw ModelError.invalidSetting(name: "personas", reason: "at most 64, got \(personas)") }
            guard dimension <= 4096, attentionDimension <= 4096 else { throw ModelError.invalidSetting(name: "dimension", reason: "dimensions at most 4096") }
            guard negatives <= 65_536 else { throw ModelError.invalidSetting(name: "negatives", reason: "at most 65536, got \(negatives)") }
            guard temperature > 0 && temperature.isFinite else { throw ModelError.invalidSetting(name: "temperature", reason: "must be positive, got \(temperature)") }
            for (name, v) in [("positiveEntropy", positiveEntropy), ("negativeEntropy", negativeEntropy), ("weightDecay", weightDecay),
                              ("personaWeightDecay", personaWeightDecay)] where !(v >= 0 && v.isFinite) {
                throw ModelError.invalidSetting(name: name, reason: "must not be negative, got \(v)")
            }
            guard learningRate > 0 && learningRate.isFinite else { throw ModelError.invalidSetting(name: "learningRate", reason: "must be positive, got \(learningRate)") }
            try checkAdamWDecay(learningRate: learningRate, [("weightDecay", weightDecay), ("personaWeightDecay", personaWeightDecay)])
            for (name, v) in [("epochs", epochs), ("validationUsers", validationUsers), ("patience", patience), ("foldInSteps", foldInSteps), ("threads", threads)] where v < 0 {
                throw ModelError.invalidSetting(name: name, reason: "must not be negative, got \(v)")
            }
        }
    }

    /// The learned arrays. Personas: row u·P + k is persona k of user u.
    public struct Weights: Sendable {
        public var personas: Matrix      // (users·P) x d
        public var items: Matrix         // items x d
        public var itemBias: [Float]     // items
        public var userProjection: Matrix, userProjectionBias: Matrix   // d x a, 1 x a
        public var itemProjection: Matrix, itemProjectionBias: Matrix   // d x a, 1 x a
    }

    public static let modelType = "amp-cf"
    public let configuration: Configuration
    public let interactions: SparseMatrix
    public let weights: Weights
    /// What training did (nil for a loaded model).
    public let outcome: TrainingLoop.Outcome?
    /// Unit-length attention keys: of every item (items x a) and of every persona ((users·P) x a).
    let itemKeys: Matrix, trainedPersonaKeys: Matrix
    /// The mean length of the trained personas: the scale a fold-in starts at.
    let meanPersonaNorm: Float

    public var personaCount: Int { configuration.personas }

    init(configuration: Configuration, interactions: SparseMatrix, weights: Weights, outcome: TrainingLoop.Outcome?) {
        self.configuration = configuration
        self.interactions = interactions
        self.weights = weights
        self.outcome = outcome
        itemKeys = Self.keys(weights.items, weights.itemProjection, weights.itemProjectionBias)
        trainedPersonaKeys = Self.keys(weights.personas, weights.userProjection, weights.userProjectionBias)
        let all = weights.personas, d = all.columns
        var total: Float = 0
        for r in 0..<all.rows { var sq: Float = 0; for k in 0..<d { sq += all.values[r * d + k] * all.values[r * d + k] }; total += sq.squareRoot() }
        meanPersonaNorm = total / Float(max(1, all.rows))
    }

    /// normalize(X W + b), row by row.
    static func keys(_ x: Matrix, _ w: Matrix, _ b: Matrix) -> Matrix {
        var z = x.multiplied(by: w)
        normalizeRows(&z, bias: b)
        return z
    }

    /// Adds `bias` to every row and scales each row to unit length; returns the norms before scaling.
    @discardableResult
    static func normalizeRows(_ z: inout Matrix, bias: Matrix) -> [Float] {
        let a = z.columns
        var norms = [Float](repeating: 0, count: z.rows)
        for r in 0..<z.rows {
            var sq: Float = 0
            for k in 0..<a { z.values[r * a + k] += bias.values[k]; sq += z.values[r * a + k] * z.values[r * a + k] }
            let n = max(sq.squareRoot(), 1e-12)
            norms[r] = n
            for k in 0..<a { z.values[r * a + k] /= n }
        }
        return norms
    }

    // MARK: Scoring

    /// Scores of `items` for personas `q` (P x d) with keys `qk` (P x a); with `attention`, the
    /// P x items attention weights too (column-major by item: [item][persona]).
    func score(personas q: Matrix, keys qk: Matrix, items: [Int]?, attention: UnsafeMutablePointer<Float>? = nil) -> [Float] {
        let p = q.rows, d = q.columns, a = qk.columns
        let ids = items ?? Array(0..<itemCount)
        let n = ids.count
        var dots = [Float](repeating: 0, count: p * n), cosines = [Float](repeating: 0, count: p * n)
        weights.items.values.withUnsafeBufferPointer { v in
            itemKeys.values.withUnsafeBufferPointer { ik in
                for k in 0..<p {
                    q.values.withUnsafeBufferPointer { qp in
                        qk.values.withUnsafeBufferPointer { kp in
                            if items == nil {
                                Kernels.dotRows(query: qp.baseAddress! + k * d, rows: v.baseAddress!, rowCount: n, dimension: d, into: &dots[k * n])
                                Kernels.dotRows(query: kp.baseAddress! + k * a, rows: ik.baseAddress!, rowCount: n, dimension: a, into: &cosines[k * n])
                            } else {
                                for (c, j) in ids.enumerated() {
                                    dots[k * n + c] = Kernels.dot(qp.baseAddress! + k * d, v.baseAddress! + j * d, count: d)
                                    cosines[k * n + c] = Kernels.dot(kp.baseAddress! + k * a, ik.baseAddress! + j * a, count: a)
                                }
                            }
                        }
                    }
                }
            }
        }
        let invT = Float(1 / configuration.temperature)
        var out = [Float](repeating: 0, count: n)
        var alpha = [Float](repeating: 0, count: p)
        for c in 0..<n {
            out[c] = attentionForward(cosines: cosines, dots: dots, at: c, stride: n, personas: p, invT: invT, bias: weights.itemBias[ids[c]],
                                      alpha: &alpha, at: 0)
            if let attention { for k in 0..<p { attention[c * p + k] = alpha[k] } }
        }
        return out
    }

    func personaRows(user: Int) -> (Matrix, Matrix) {
        let p = configuration.personas
        return (weights.personas.rows((user * p)..<((user + 1) * p)), trainedPersonaKeys.rows((user * p)..<((user + 1) * p)))
    }

    public func scores(forUser user: Int, into scores: UnsafeMutableBufferPointer<Float>) {
        let (q, k) = personaRows(user: user)
        let s = score(personas: q, keys: k, items: nil)
        for i in 0..<s.count { scores[i] = s[i] }
    }

    public func scores(forHistory history: [Int]) -> [Float] {
        let q = foldIn(history)
        return score(personas: q, keys: personaKeys(q), items: nil)
    }

    public func scores(ofItems items: [Int], queries: Matrix) -> [Float] {
        let q = withoutBiasSlot(queries)
        return score(personas: q, keys: personaKeys(q), items: items)
    }

    /// The queries without their bias slot are the personas.
    func withoutBiasSlot(_ queries: Matrix) -> Matrix {
        let d = weights.items.columns
        var q = Matrix(rows: queries.rows, columns: d)
        for r in 0..<q.rows { for k in 0..<d { q.values[r * d + k] = queries.values[r * (d + 1) + k] } }
        return q
    }

    func personaKeys(_ q: Matrix) -> Matrix { Self.keys(q, weights.userProjection, weights.userProjectionBias) }

    /// Items by cosine similarity of their item vectors.
    public func similarItems(to item: Int, k: Int) throws -> [ScoredItem] {
        guard item >= 0 && item < itemCount else { throw ModelError.itemOutOfRange(item, count: itemCount) }
        guard k > 0 else { throw ModelError.invalidK(k) }
        return FactorModel(userFactors: Matrix(rows: 0, columns: weights.items.columns), itemFactors: weights.items).similarItems(to: item, k: k)
    }

    // MARK: Multi-query serving

    /// [q_j, b_j] per item.
    public var itemEmbeddings: Matrix {
        let d = weights.items.columns
        var out = Matrix(rows: itemCount, columns: d + 1)
        for i in 0..<itemCount {
            for k in 0..<d { out.values[i * (d + 1) + k] = weights.items.values[i * d + k] }
            out.values[i * (d + 1) + d] = weights.itemBias[i]
        }
        return out
    }

    private func withBiasSlot(_ q: Matrix) -> Matrix {
        let d = q.columns
        var out = Matrix(rows: q.rows, columns: d + 1)
        for r in 0..<q.rows {
            for k in 0..<d { out.values[r * (d + 1) + k] = q.values[r * d + k] }
            out.values[r * (d + 1) + d] = 1
        }
        return out
    }

    public func queries(user: Int) -> Matrix { withBiasSlot(personaRows(user: user).0) }
    public func queries(history: [Int]) -> Matrix { withBiasSlot(foldIn(history)) }

    // MARK: Personas and explanations

    public func attributions(of items: [Int], user: Int, size: Int) -> [PersonaAttribution] {
        let (q, k) = personaRows(user: user)
        return attributions(of: items, personas: q, keys: k, history: seenItems(ofUser: user), size: size)
    }

    public func attributions(of items: [Int], queries: Matrix, history: [Int], size: Int) -> [PersonaAttribution] {
        let known = history.filter { $0 >= 0 && $0 < itemCount }
        let q = withoutBiasSlot(queries)
        return attributions(of: items, personas: q, keys: personaKeys(q), history: known, size: size)
    }

    public func personas(user: Int) -> [[Contribution]] {
        let (q, k) = personaRows(user: user)
        let seen = seenItems(ofUser: user)
        return groups(attention(personas: q, keys: k, items: seen), history: seen, personas: q.rows)
    }

    /// The attention weights of `items` (row per item, column per persona).
    func attention(personas q: Matrix, keys qk: Matrix, items: [Int]) -> [Float] {
        var out = [Float](repeating: 0, count: items.count * q.rows)
        _ = out.withUnsafeMutableBufferPointer { score(personas: q, keys: qk, items: items, attention: $0.baseAddress!) }
        return out
    }

    /// Per persona, the history items whose largest attention is on it, by that attention.
    func groups(_ attention: [Float], history: [Int], personas p: Int) -> [[Contribution]] {
        var out = [[Contribution]](repeating: [], count: p)
        for (c, h) in history.enumerated() {
            let best = Self.strongest(attention, row: c, personas: p)
            out[best].append(Contribution(item: h, weight: attention[c * p + best]))
        }
        return out.map(Self.byWeight)
    }

    static func strongest(_ attention: [Float], row: Int, personas p: Int) -> Int {
        var best = 0
        for k in 1..<p where attention[row * p + k] > attention[row * p + best] { best = k }
        return best
    }

    static func byWeight(_ list: [Contribution]) -> [Contribution] {
        list.sorted { $0.weight != $1.weight ? $0.weight > $1.weight : $0.item < $1.item }
    }

    /// The history's attention is computed once for all the items.
    func attributions(of items: [Int], personas q: Matrix, keys qk: Matrix, history: [Int], size: Int) -> [PersonaAttribution] {
        let p = q.rows
        let alpha = attention(personas: q, keys: qk, items: items)
        let historyAttention = size > 0 ? attention(personas: q, keys: qk, items: history) : []
        let members = size > 0 ? groups(historyAttention, history: history, personas: p) : []
        return items.indices.map { n in
            let best = Self.strongest(alpha, row: n, personas: p)
            var characteristic: [Contribution] = []
            if size > 0 {
                characteristic = members[best]
                if characteristic.isEmpty {
                    // No history item has this persona as its strongest: its most attentive ones.
                    characteristic = Self.byWeight(history.enumerated().map { Contribution(item: $0.element, weight: historyAttention[$0.offset * p + best]) })
                }
            }
            return PersonaAttribution(persona: best, attention: alpha[n * p + best], characteristic: Array(characteristic.prefix(size)))
        }
    }

    // MARK: Persistence

    public func tensors() -> [String: Tensor] {
        func t(_ m: Matrix) -> Tensor { .float32(m.values, shape: [m.rows, m.columns]) }
        return interactions.tensors(prefix: "interactions").merging([
            "personas": t(weights.personas), "item_factors": t(weights.items), "item_bias": .float32(weights.itemBias),
            "user_projection": t(weights.userProjection), "user_projection_bias": t(weights.userProjectionBias),
            "item_projection": t(weights.itemProjection), "item_projection_bias": t(weights.itemProjectionBias),
        ]) { a, _ in a }
    }

    public init(configuration c: Configuration, file: SafeTensorsFile, path: String) throws {
        try c.validate()
        let x = try SparseMatrix(file: file, prefix: "interactions", path: path)
        let d = c.dimension, a = c.attentionDimension
        func matrix(_ name: String, _ rows: Int, _ columns: Int) throws -> Matrix {
            guard let t = file.tensors[name], t.shape == [rows, columns] else {
                throw SafeTensorsError.corrupt(path: path, reason: "\(name) must be a [\(rows), \(columns)] tensor")
            }
            return Matrix(rows: rows, columns: columns, values: try file.float32(name, path: path))
        }
        let bias = try file.float32("item_bias", path: path)
        guard bias.count == x.columnCount else { throw SafeTensorsError.corrupt(path: path, reason: "item_bias has \(bias.count) entries, expected \(x.columnCount)") }
        let weights = Weights(personas: try matrix("personas", x.rowCount * c.personas, d), items: try matrix("item_factors", x.columnCount, d),
                              itemBias: bias, userProjection: try matrix("user_projection", d, a), userProjectionBias: try matrix("user_projection_bias", 1, a),
                              itemProjection: try matrix("item_projection", d, a), itemProjectionBias: try matrix("item_projection_bias", 1, a))
        self.init(configuration: c, interactions: x, weights: weights, outcome: nil)
    }

    // MARK: Fold-in

    /// Personas for a history with the items fixed: seeded k-means of the history's item vectors
    /// (P clusters, fewer items than P: repeats), scaled to the mean persona norm, then
    /// `foldInSteps` Adam steps (rate 0.01) of the mean softmax loss of the history items over every item.
    public func foldIn(_ history: [Int]) -> Matrix {
        let p = configuration.personas, d = weights.items.columns
        let known = Array(Set(history.filter { $0 >= 0 && $0 < itemCount })).sorted()
        guard !known.isEmpty else { return Matrix(rows: p, columns: d) }
        var g = SeededGenerator(seed: configuration.seed ^ SeededGenerator.fingerprint(known))
        var rows = Matrix(rows: known.count, columns: d)
        for (r, i) in known.enumerated() { for k in 0..<d { rows.values[r * d + k] = weights.items.values[i * d + k] } }
        var q: Matrix
        if known.count > p, let fitted = try? KMeans.fit(rows, settings: KMeansSettings(clusters: p, iterations: 10, seed: g.next(), threads: 1)) {
            q = fitted.centroids
        } else {
            q = Matrix(rows: p, columns: d)
            for k in 0..<p { let r = k % known.count; for j in 0..<d { q.values[k * d + j] = rows.values[r * d + j] } }
        }
        // The mean trained persona norm sets the scale the item biases were learned against.
        let meanNorm = meanPersonaNorm
        for k in 0..<p {
            var s: Float = 0
            for j in 0..<d { s += q.values[k * d + j] * q.values[k * d + j] }
            let scale = s > 0 ? meanNorm / s.squareRoot() : 0
            for j in 0..<d { q.values[k * d + j] *= scale }
        }
        guard configuration.foldInSteps > 0 else { return q }
        let parameter = Parameter("personas", value: q)
        let adam = Adam(learningRate: 0.01, lazy: false)
        let n = itemCount, invT = Float(1 / configuration.temperature), a = weights.userProjection.columns
        for _ in 0..<configuration.foldInSteps {
            parameter.zeroGrad()
            let q = parameter.value
            var z = q.multiplied(by: weights.userProjection)
            let norms = Self.normalizeRows(&z, bias: weights.userProjectionBias)
            var alpha = [Float](repeating: 0, count: n * p)
            let s = alpha.withUnsafeMutableBufferPointer { score(personas: q, keys: z, items: nil, attention: $0.baseAddress!) }
            // Softmax over every item; targets: the history, each 1/|H|.
            let m = s.max()!
            var e = s.map { exp($0 - m) }
            let total = e.reduce(0, +)
            for j in 0..<n { e[j] /= total }
            for i in known { e[i] -= 1 / Float(known.count) }
            // dL/dq_k = Σ_j g_j (α_jk q_j + (p_k·q_j) dα/dq_k): the attention term through the keys.
            // Persona-item dot products, p x n, in one product.
            let dots = q.multiplied(by: weights.items, transposeOther: true, threads: 1)
            var dq = Matrix(rows: p, columns: d), dz = Matrix(rows: p, columns: a)
            for j in 0..<n where e[j] != 0 {
                let gj = e[j]
                var mean: Float = 0
                for k in 0..<p { mean += alpha[j * p + k] * dots.values[k * n + j] }
                for k in 0..<p {
                    let ak = alpha[j * p + k]
                    for t in 0..<d { dq.values[k * d + t] += gj * ak * weights.items.values[j * d + t] }
                    let dc = gj * ak * (dots.values[k * n + j] - mean) * invT   // d score / d cosine_k
                    for t in 0..<a { dz.values[k * a + t] += dc * itemKeys.values[j * a + t] }
                }
            }
            // Through the normalisation and the projection.
            for k in 0..<p {
                var dot: Float = 0
                for t in 0..<a { dot += z.values[k * a + t] * dz.values[k * a + t] }
                for t in 0..<a { dz.values[k * a + t] = (dz.values[k * a + t] - z.values[k * a + t] * dot) / norms[k] }
            }
            let back = dz.multiplied(by: weights.userProjection, transposeOther: true)
            for k in 0..<(p * d) { parameter.grad.values[k] = dq.values[k] + back.values[k] }
            adam.step([parameter])
        }
        return parameter.value
    }
}

// MARK: Training

extension AMPCF {
    public static func fit(_ data: TrainingData, configuration c: Configuration, progress: TrainingProgress.Handler?) throws -> AMPCF {
        try c.validate()
        let x = data.interactions.binarized()
        // Tables with their gradients and Adam moments, plus the batch's (rows·P) x candidates arrays.
        let rows = Double(c.batchSize) * Double(c.personas)
        let candidates = c.objective == .softmax ? Double(x.columnCount) : Double(c.negatives)
        let what = c.objective == .softmax ? "batchSize=\(c.batchSize) (users; the softmax covers every item)"
                                           : "negatives=\(c.negatives), batchSize=\(c.batchSize)"
        try MemoryBudget.check(bytes: Double(x.rowCount * (c.personas + 1) + x.columnCount) * Double(c.dimension) * 4 * 4 + rows * candidates * 4 * 5,
                               for: "AMP-CF with personas=\(c.personas), dimension=\(c.dimension), \(what) on \(x.rowCount) users x \(x.columnCount) items")
        let (network, outcome) = try TrainingLoop.trainWithValidation(data, matrix: x, validationUsers: c.validationUsers, seed: c.seed,
                                                                      refit: c.refit, epochs: c.epochs) { matrix, validation, epochs in
            try train(matrix, configuration: c, validation: validation, epochs: epochs, progress: progress)
        }
        return AMPCF(configuration: c, interactions: x, weights: network.weights, outcome: outcome)
    }

    static func train(_ x: SparseMatrix, configuration c: Configuration, validation: EvaluationData?, epochs: Int,
                      progress: TrainingProgress.Handler?) throws -> (AMPCFNetwork, TrainingLoop.Outcome) {
        let network = AMPCFNetwork(users: x.rowCount, items: x.columnCount, configuration: c)
        var pairUsers = [Int32](), pairItems = [Int32]()
        if c.objective == .sampledSoftmax {
            for u in 0..<x.rowCount { for i in x.row(u) { pairUsers.append(Int32(u)); pairItems.append(i) } }
        }
        let activeUsers = (0..<x.rowCount).filter { x.rowLength($0) > 0 }
        let sampler = NegativeSampler(counts: x.columnCounts(), kind: c.sampling)
        let threads = Parallelism.resolve(c.threads)
        let optimizer = Adam(learningRate: Float(c.learningRate), weightDecay: Float(c.weightDecay), lazy: false)
        let loop = TrainingLoop(settings: .init(epochs: epochs, batchSize: c.batchSize, seed: c.seed, patience: c.patience),
                                parameters: network.parameters, optimizer: optimizer)
        let evaluator = try Evaluator(cutoffs: [20], threads: threads)
        let softmax = c.objective == .softmax
        let outcome = try loop.run(examples: softmax ? activeUsers.count : pairUsers.count, model: modelType,
                                   exampleName: softmax ? "users" : "positives", progress: progress,
                                   validationName: "Recall@20", step: { batch, generator in
            if softmax { return network.softmaxStep(users: batch.map { activeUsers[$0] }, interactions: x, threads: threads) }
            let negatives = (0..<c.negatives).map { _ in sampler.draw(&generator) }
            return network.step(users: batch.map { Int(pairUsers[$0]) }, positives: batch.map { Int(pairItems[$0]) }, negatives: negatives,
                                correction: negatives.map { sampler.logProbability($0) + Float(log(Double(c.negatives))) },
                                positiveCorrection: batch.map { sampler.logProbability(Int(pairItems[$0])) + Float(log(Double(c.negatives))) },
                                seen: x, threads: threads)
        }, validate: validation.map { v in {
            let model = AMPCF(configuration: c, interactions: x, weights: network.weights, outcome: nil)
            return evaluator.evaluate(v) { user, scores in model.scores(forUser: user, into: scores) }.metrics(at: 20)?.recall ?? 0
        } })
        return (network, outcome)
    }
}

/// AMP-CF's parameters and its batch steps (forward and backward of either objective with the
/// persona-entropy terms). Training state only; the trained model keeps plain `AMPCF.Weights`.
final class AMPCFNetwork: @unchecked Sendable {
    /// Persona k of user u is centres[u] + offsets[u·P + k].
    let centres: Parameter, offsets: Parameter
    let items: Parameter, bias: Parameter
    let wu: Parameter, bu: Parameter, wv: Parameter, bv: Parameter
    let p: Int, d: Int, a: Int
    let temperature: Float, positiveEntropy: Float, negativeEntropy: Float

    init(users: Int, items n: Int, configuration c: AMPCF.Configuration) {
        p = c.personas; d = c.dimension; a = c.attentionDimension
        temperature = Float(c.temperature); positiveEntropy = Float(c.positiveEntropy); negativeEntropy = Float(c.negativeEntropy)
        var g = SeededGenerator(seed: c.seed, stream: 1)
        func gaussian(_ rows: Int, _ columns: Int, _ std: Double) -> Matrix {
            Matrix(rows: rows, columns: columns, values: (0..<(rows * columns)).map { _ in Float(g.nextGaussian() * std) })
        }
        centres = Parameter("persona_centres", value: gaussian(users, d, 0.1))
        offsets = Parameter("persona_offsets", value: gaussian(users * p, d, 0.01))
        offsets.weightDecay = Float(c.personaWeightDecay)
        items = Parameter("items", value: gaussian(n, d, 0.1))
        bias = Parameter("item_bias", value: Matrix(rows: n, columns: 1))
        let xavier = (2 / Double(d + a)).squareRoot()
        wu = Parameter("user_projection", value: gaussian(d, a, xavier))
        bu = Parameter("user_projection_bias", value: Matrix(rows: 1, columns: a))
        wv = Parameter("item_projection", value: gaussian(d, a, xavier))
        bv = Parameter("item_projection_bias", value: Matrix(rows: 1, columns: a))
    }

    var parameters: [Parameter] { [centres, offsets, items, bias, wu, bu, wv, bv] }

    var weights: AMPCF.Weights {
        AMPCF.Weights(personas: personas(of: Array(0..<centres.value.rows)), items: items.value, itemBias: bias.value.values,
                      userProjection: wu.value, userProjectionBias: bu.value, itemProjection: wv.value, itemProjectionBias: bv.value)
    }

    /// The personas of `users`, (users·P) x d: centre plus offset.
    func personas(of users: [Int]) -> Matrix {
        var out = Matrix(rows: users.count * p, columns: d)
        for (r, u) in users.enumerated() {
            for k in 0..<p {
                for t in 0..<d { out.values[(r * p + k) * d + t] = centres.value.values[u * d + t] + offsets.value.values[(u * p + k) * d + t] }
            }
        }
        return out
    }

    /// Adds dL/d(personas of `users`) into the centres' and offsets' gradients.
    private func addPersonaGradient(_ dQ: Matrix, users: [Int]) {
        for (r, u) in users.enumerated() {
            for k in 0..<p {
                for t in 0..<d {
                    let g = dQ.values[(r * p + k) * d + t]
                    offsets.grad.values[(u * p + k) * d + t] += g
                    centres.grad.values[u * d + t] += g
                }
            }
        }
    }

    private func gather(_ table: Matrix, _ rows: [Int]) -> Matrix {
        let w = table.columns
        var out = Matrix(rows: rows.count, columns: w)
        for (r, i) in rows.enumerated() { for k in 0..<w { out.values[r * w + k] = table.values[i * w + k] } }
        return out
    }

    /// dZ of normalize(Z) given dY (Y the unit rows, norms of Z), in place.
    private func normalizeBackward(_ dy: inout Matrix, y: Matrix, norms: [Float]) {
        let w = y.columns
        for r in 0..<y.rows {
            var dot: Float = 0
            for k in 0..<w { dot += y.values[r * w + k] * dy.values[r * w + k] }
            for k in 0..<w { dy.values[r * w + k] = (dy.values[r * w + k] - y.values[r * w + k] * dot) / norms[r] }
        }
    }

    /// The back half both objectives share: from dL/d(dots) and dL/d(cosines) of the batch's
    /// persona rows against `candidates` (nil: every item, in order), plus what the rows already
    /// have in `dQ` and `dPsi`, to the gradients of the personas, the candidates' vectors and biases
    /// (`dBias`, rows x candidates, summed by column) and both projections.
    private func backward(users: [Int], q: Matrix, psi: Matrix, psiNorms: [Float], candidates: [Int]?, vc: Matrix, phiC: Matrix,
                          phiCNorms: [Float], dDots: Matrix, dCos: Matrix, dBias: Matrix, dQ: Matrix, dPsi: Matrix, threads: Int) {
        var dQ = dQ + dDots.multiplied(by: vc, threads: threads)
        var dVc = dDots.multiplied(by: q, transposeSelf: true, threads: threads)
        var dPsi = dPsi + dCos.multiplied(by: phiC, threads: threads)
        var dPhiC = dCos.multiplied(by: psi, transposeSelf: true, threads: threads)
        normalizeBackward(&dPsi, y: psi, norms: psiNorms)
        normalizeBackward(&dPhiC, y: phiC, norms: phiCNorms)
        wu.grad = wu.grad + q.multiplied(by: dPsi, transposeSelf: true, threads: threads)
        wv.grad = wv.grad + vc.multiplied(by: dPhiC, transposeSelf: true, threads: threads)
        for r in 0..<dPsi.rows { for t in 0..<a { bu.grad.values[t] += dPsi.values[r * a + t] } }
        for r in 0..<dPhiC.rows { for t in 0..<a { bv.grad.values[t] += dPhiC.values[r * a + t] } }
        dQ = dQ + dPsi.multiplied(by: wu.value, transposeOther: true, threads: threads)
        dVc = dVc + dPhiC.multiplied(by: wv.value, transposeOther: true, threads: threads)
        addPersonaGradient(dQ, users: users)
        let n = vc.rows
        for r in 0..<n {
            let i = candidates?[r] ?? r
            for t in 0..<d { items.grad.values[i * d + t] += dVc.values[r * d + t] }
        }
        for r in 0..<dBias.rows { for j in 0..<n { bias.grad.values[candidates?[j] ?? j] += dBias.values[r * n + j] } }
    }

    /// One batch of the full softmax: each user's row of scores over every item, the user's
    /// positives its targets. Adds the gradients of the loss summed over rows and divided by the
    /// batch's positives; returns the summed loss.
    func softmaxStep(users: [Int], interactions x: SparseMatrix, threads: Int) -> Double {
        let b = users.count, n = items.value.rows, p = self.p, a = self.a
        let invT = 1 / temperature, lp = positiveEntropy, ln = negativeEntropy
        let q = personas(of: users)                                             // (b·p) x d
        var psi = q.multiplied(by: wu.value, threads: threads)
        let psiNorms = AMPCF.normalizeRows(&psi, bias: bu.value)
        let v = items.value
        var phi = v.multiplied(by: wv.value, threads: threads)
        let phiNorms = AMPCF.normalizeRows(&phi, bias: bv.value)
        let dots = q.multiplied(by: v, transposeOther: true, threads: threads)          // (b·p) x n
        let cosines = psi.multiplied(by: phi, transposeOther: true, threads: threads)   // (b·p) x n
        let itemBias = bias.value.values
        let positives = users.reduce(0) { $0 + x.rowLength($1) }
        let scale = 1 / Float(max(1, positives))
        var dDots = Matrix(rows: b * p, columns: n), dCos = Matrix(rows: b * p, columns: n), dBias = Matrix(rows: b, columns: n)
        var losses = [Double](repeating: 0, count: b)
        dDots.values.withUnsafeMutableBufferPointer { dd in
        dCos.values.withUnsafeMutableBufferPointer { dc in
        dBias.values.withUnsafeMutableBufferPointer { db in
        losses.withUnsafeMutableBufferPointer { lossBuffer in
            let dd = SharedMutableBuffer(dd), dc = SharedMutableBuffer(dc), db = SharedMutableBuffer(db), lb = SharedMutableBuffer(lossBuffer)
            Parallelism.forEachRange(b, grain: 8, threads: threads) { range in
                var alpha = [Float](repeating: 0, count: n * p), s = [Float](repeating: 0, count: n)
                var target = [Bool](repeating: false, count: n)
                for r in range {
                    let row = x.row(users[r])
                    for i in row { target[Int(i)] = true }
                    let h = Float(row.count), others = Float(n - row.count)
                    var m = -Float.infinity
                    for j in 0..<n {
                        s[j] = attentionForward(cosines: cosines.values, dots: dots.values, at: r * p * n + j, stride: n, personas: p, invT: invT,
                                                bias: itemBias[j], alpha: &alpha, at: j * p)
                        m = max(m, s[j])
                    }
                    var total: Float = 0
                    for j in 0..<n { total += exp(s[j] - m) }
                    let lse = m + log(total)
                    var loss = 0.0, hPos: Float = 0, hNeg: Float = 0
                    for i in row { loss += Double(lse - s[Int(i)]) }
                    if lp > 0 || ln > 0 {
                        for j in 0..<n {
                            var e: Float = 0
                            for k in 0..<p where alpha[j * p + k] > 0 { e -= alpha[j * p + k] * log(alpha[j * p + k]) }
                            if target[j] { hPos += e } else { hNeg += e }
                        }
                    }
                    let negativeWeight = others > 0 ? ln / others : 0
                    loss += Double(lp * hPos) - Double(negativeWeight * hNeg)
                    lb[r] = loss
                    // Backward: dL/ds_j = (|H|·softmax_j − y_j)·scale, then through α and the dots.
                    for j in 0..<n {
                        let y: Float = target[j] ? 1 : 0
                        let g = (h * exp(s[j] - lse) - y) * scale
                        db[r * n + j] = g
                        let entropy = target[j] ? -lp * scale : negativeWeight * scale   // d(±λH)/dα = ∓λ(log α + 1)
                        attentionBackward(g, entropy: entropy, alpha: alpha, at: j * p, dots: dots.values, dd: dd, dc: dc,
                                          at: r * p * n + j, stride: n, personas: p, invT: invT)
                    }
                    for i in row { target[Int(i)] = false }
                }
            }
        } } } }
        backward(users: users, q: q, psi: psi, psiNorms: psiNorms, candidates: nil, vc: v, phiC: phi, phiCNorms: phiNorms,
                 dDots: dDots, dCos: dCos, dBias: dBias, dQ: Matrix(rows: b * p, columns: self.d), dPsi: Matrix(rows: b * p, columns: a),
                 threads: threads)
        return losses.reduce(0, +)
    }

    /// One batch of the sampled softmax: rows (users[b], positives[b]) against the shared
    /// `negatives`; logits minus `correction` (log N·Q of each sampled item; `positiveCorrection`
    /// for each row's positive). Adds the gradients of the batch's mean loss; returns the summed loss.
    func step(users: [Int], positives: [Int], negatives: [Int], correction: [Float], positiveCorrection: [Float],
              seen: SparseMatrix, threads: Int) -> Double {
        let b = users.count, n = negatives.count, p = self.p, d = self.d, a = self.a
        let invT = 1 / temperature, lp = positiveEntropy, ln = negativeEntropy
        let q = personas(of: users)                                  // (b·p) x d
        var psi = q.multiplied(by: wu.value, threads: threads)
        let psiNorms = AMPCF.normalizeRows(&psi, bias: bu.value)
        let vn = gather(items.value, negatives), vp = gather(items.value, positives)
        var phiN = vn.multiplied(by: wv.value, threads: threads), phiP = vp.multiplied(by: wv.value, threads: threads)
        let phiNNorms = AMPCF.normalizeRows(&phiN, bias: bv.value), phiPNorms = AMPCF.normalizeRows(&phiP, bias: bv.value)
        let dots = q.multiplied(by: vn, transposeOther: true, threads: threads)          // (b·p) x n
        let cosines = psi.multiplied(by: phiN, transposeOther: true, threads: threads)   // (b·p) x n
        let itemBias = bias.value.values
        let psiRows = psi, phiPRows = phiP   // immutable copies for the parallel rows

        var dDots = Matrix(rows: b * p, columns: n), dCos = Matrix(rows: b * p, columns: n)
        var dQ = Matrix(rows: b * p, columns: d), dPsi = Matrix(rows: b * p, columns: a)
        var dVp = Matrix(rows: b, columns: d), dPhiP = Matrix(rows: b, columns: a)
        var gNeg = Matrix(rows: b, columns: n)           // dL/ds of each row's negatives (bias gradient)
        var gPos = [Float](repeating: 0, count: b), losses = [Double](repeating: 0, count: b)
        let scale = 1 / Float(b)
        withUnsafeMutableBuffers(&dDots.values, &dCos.values, &dQ.values, &dPsi.values) { dd, dc, dq, dpsi in
        withUnsafeMutableBuffers(&dVp.values, &dPhiP.values, &gNeg.values, &gPos) { dvp, dphip, gn, gp in
        losses.withUnsafeMutableBufferPointer { lossBuffer in
            let dd = SharedMutableBuffer(dd), dc = SharedMutableBuffer(dc), dq = SharedMutableBuffer(dq), dpsi = SharedMutableBuffer(dpsi)
            let dvp = SharedMutableBuffer(dvp), dphip = SharedMutableBuffer(dphip), gn = SharedMutableBuffer(gn), gp = SharedMutableBuffer(gp)
            let lb = SharedMutableBuffer(lossBuffer)
            Parallelism.forEachRange(b, grain: 16, threads: threads) { range in
                var alpha = [Float](repeating: 0, count: n * p), logits = [Float](repeating: 0, count: n)
                var masked = [Bool](repeating: false, count: n)
                var aPos = [Float](repeating: 0, count: p), dotPos = [Float](repeating: 0, count: p), daPos = [Float](repeating: 0, count: p)
                for r in range {
                    let u = users[r], i = positives[r]
                    // The positive.
                    for k in 0..<p {
                        var s: Float = 0, c: Float = 0
                        for t in 0..<d { s += q.values[(r * p + k) * d + t] * vp.values[r * d + t] }
                        for t in 0..<a { c += psiRows.values[(r * p + k) * a + t] * phiPRows.values[r * a + t] }
                        dotPos[k] = s; aPos[k] = c * invT
                    }
                    softmaxInPlace(&aPos)
                    var positiveScore = itemBias[i]
                    for k in 0..<p { positiveScore += aPos[k] * dotPos[k] }
                    let logit0 = positiveScore - positiveCorrection[r]
                    // The negatives.
                    var m = logit0, count = 0
                    for j in 0..<n {
                        masked[j] = negatives[j] == i || seen.contains(row: u, column: negatives[j])
                        logits[j] = attentionForward(cosines: cosines.values, dots: dots.values, at: r * p * n + j, stride: n, personas: p,
                                                     invT: invT, bias: itemBias[negatives[j]], alpha: &alpha, at: j * p) - correction[j]
                        if !masked[j] { m = max(m, logits[j]); count += 1 }
                    }
                    var total = exp(logit0 - m)
                    for j in 0..<n where !masked[j] { total += exp(logits[j] - m) }
                    let lse = m + log(total)
                    var loss = Double(lse - logit0)
                    // Entropies.
                    var hPos: Float = 0
                    for k in 0..<p where aPos[k] > 0 { hPos -= aPos[k] * log(aPos[k]) }
                    loss += Double(lp * hPos)
                    var hNeg: Float = 0
                    if ln > 0 && count > 0 {
                        for j in 0..<n where !masked[j] { for k in 0..<p where alpha[j * p + k] > 0 { hNeg -= alpha[j * p + k] * log(alpha[j * p + k]) } }
                        hNeg /= Float(count)
                        loss -= Double(ln * hNeg)
                    }
                    lb[r] = loss
                    // Backward: the positive.
                    let g0 = (exp(logit0 - lse) - 1) * scale
                    gp[r] = g0
                    var mean: Float = 0
                    for k in 0..<p {
                        daPos[k] = g0 * dotPos[k] + (aPos[k] > 0 ? -lp * scale * (log(aPos[k]) + 1) : 0)
                        mean += aPos[k] * daPos[k]
                    }
                    for k in 0..<p {
                        let dDot = g0 * aPos[k], dc0 = aPos[k] * (daPos[k] - mean) * invT
                        let row = r * p + k
                        for t in 0..<d {
                            dq[row * d + t] += dDot * vp.values[r * d + t]
                            dvp[r * d + t] += dDot * q.values[row * d + t]
                        }
                        for t in 0..<a {
                            dpsi[row * a + t] += dc0 * phiPRows.values[r * a + t]
                            dphip[r * a + t] += dc0 * psiRows.values[row * a + t]
                        }
                    }
                    // Backward: the negatives (into dDots and dCos; the products come after).
                    let entropyWeight = count > 0 ? ln * scale / Float(count) : 0
                    for j in 0..<n where !masked[j] {
                        let g = exp(logits[j] - lse) * scale
                        gn[r * n + j] = g
                        attentionBackward(g, entropy: entropyWeight, alpha: alpha, at: j * p, dots: dots.values, dd: dd, dc: dc,
                                          at: r * p * n + j, stride: n, personas: p, invT: invT)
                    }
                }
            }
        } } }
        backward(users: users, q: q, psi: psi, psiNorms: psiNorms, candidates: negatives, vc: vn, phiC: phiN, phiCNorms: phiNNorms,
                 dDots: dDots, dCos: dCos, dBias: gNeg, dQ: dQ, dPsi: dPsi, threads: threads)
        // The rows' own positives.
        normalizeBackward(&dPhiP, y: phiP, norms: phiPNorms)
        wv.grad = wv.grad + vp.multiplied(by: dPhiP, transposeSelf: true, threads: threads)
        for r in 0..<b { for t in 0..<a { bv.grad.values[t] += dPhiP.values[r * a + t] } }
        dVp = dVp + dPhiP.multiplied(by: wv.value, transposeOther: true, threads: threads)
        for (r, i) in positives.enumerated() {
            for t in 0..<d { items.grad.values[i * d + t] += dVp.values[r * d + t] }
            bias.grad.values[i] += gPos[r]
        }
        return losses.reduce(0, +)
    }
}

/// One candidate's attention mixture: α = softmax over the P personas of cosₖ/τ, written to
/// `alpha[a0 + k]`, and `bias + Σₖ αₖ·dotₖ` returned, with persona k's cosine and dot product at
/// `base + k·stride` (scoring, both training steps and fold-in share it).
@inline(__always) func attentionForward(cosines: [Float], dots: [Float], at base: Int, stride n: Int, personas p: Int, invT: Float,
                                        bias: Float, alpha: inout [Float], at a0: Int) -> Float {
    var mx = -Float.infinity
    for k in 0..<p { mx = max(mx, cosines[base + k * n] * invT) }
    var z: Float = 0
    for k in 0..<p { let e = exp(cosines[base + k * n] * invT - mx); alpha[a0 + k] = e; z += e }
    var s = bias
    for k in 0..<p { alpha[a0 + k] /= z; s += alpha[a0 + k] * dots[base + k * n] }
    return s
}

/// Backward through one candidate's attention mixture s = Σₖ αₖ·dotₖ with α = softmax(cosₖ/τ):
/// given dL/ds (`g`) and an entropy term's coefficient `c` (dL/dαₖ gains c·(log αₖ + 1)), writes
/// dL/d dotₖ into `dd` and dL/d cosₖ into `dc` at `base + k·stride` (persona k's row of the
/// batch's persona x candidate arrays). `alpha[a0 + k]` are the candidate's attention weights.
@inline(__always) func attentionBackward(_ g: Float, entropy c: Float, alpha: [Float], at a0: Int, dots: [Float],
                                         dd: SharedMutableBuffer<Float>, dc: SharedMutableBuffer<Float>, at base: Int,
                                         stride n: Int, personas p: Int, invT: Float) {
    var mean: Float = 0
    for k in 0..<p {
        let al = alpha[a0 + k]
        let dAlpha = g * dots[base + k * n] + (al > 0 && c != 0 ? c * (log(al) + 1) : 0)
        dd[base + k * n] = dAlpha   // dα for now; dDot below
        mean += al * dAlpha
    }
    for k in 0..<p {
        let al = alpha[a0 + k]
        dc[base + k * n] = al * (dd[base + k * n] - mean) * invT
        dd[base + k * n] = g * al
    }
}

/// In-place softmax of a short vector.
@inline(__always) func softmaxInPlace(_ x: inout [Float]) {
    var m = -Float.infinity
    for v in x { m = max(m, v) }
    var z: Float = 0
    for k in x.indices { x[k] = exp(x[k] - m); z += x[k] }
    for k in x.indices { x[k] /= z }
}

/// Four arrays' mutable buffers at once.
@inline(__always) func withUnsafeMutableBuffers<R>(_ a: inout [Float], _ b: inout [Float], _ c: inout [Float], _ d: inout [Float],
                                                   _ body: (UnsafeMutableBufferPointer<Float>, UnsafeMutableBufferPointer<Float>,
                                                            UnsafeMutableBufferPointer<Float>, UnsafeMutableBufferPointer<Float>) throws -> R) rethrows -> R {
    try a.withUnsafeMutableBufferPointer { a in try b.withUnsafeMutableBufferPointer { b in
        try c.withUnsafeMutableBufferPointer { c in try d.withUnsafeMutableBufferPointer { d in try body(a, b, c, d) } } } }
}

import AffinityData
import AffinityEval
import AffinityLinalg
import AffinityNN
import Foundation

/// LightGCN (He et al., SIGIR 2020): graph collaborative filtering without weights or
/// non-linearities. Users and items are the nodes of one bipartite graph with the symmetric
/// normalised adjacency Â = D^-½ A D^-½; the only parameters are the ego embeddings E⁽⁰⁾, and
///
///     E⁽ᵏ⁺¹⁾ = Â E⁽ᵏ⁾,   E = Σₖ wₖ E⁽ᵏ⁾   (k = 0…K; wₖ = 1/(K+1) unless `layerWeights` says otherwise)
///
/// scores a user-item pair by the dot product of their rows of E. Two losses (`loss`): the
/// paper's BPR (uniform negatives the user has not seen, `negatives` per positive, plus L2 on the
/// ego embeddings of each batch's rows), and, by default, the softmax over every item with each
/// user's positives as targets, regularised by AdamW's decoupled `weightDecay`. The default was
/// chosen on validation Recall@20 on ml-100k (softmax 0.3301, BPR 0.3242): it reaches EASE's
/// accuracy there, which BPR does not, and trains faster (one score row per user, a few steps an
/// epoch). For BPR as the paper trains it: `loss=bpr batchSize=4096 weightDecay=0 patience=10`.
/// Adam through the shared `TrainingLoop`. Every step propagates the whole
/// graph forward and its gradient backward (Â is symmetric, so the backward pass is the same
/// propagation of dL/dE), on `SparseMatrix`'s row-parallel product: each output row is summed by
/// one thread in CSR order, so the model depends on the seed alone, not on the thread count.
///
/// Validation: a leave-last-out split's `valid.tsv` targets when the training data has them;
/// otherwise `validationUsers` users each lend 20 % of their positives (at least one), which leave
/// the graph and the positives while training and return for the final propagation. Training
/// stops after `patience` epochs without a better validation Recall@20 and keeps the best epoch.
///
/// Known users are scored by their propagated vectors (saved); the item vectors are served through
/// an ANN index like any `EmbeddingRecommender`. Fold-in of a new user is LightGCN's own
/// propagation applied to a node added to the trained graph: its ego embedding is zero and the
/// items' layers are those of training, so e⁽ᵏ⁾ = Σᵢ∈H eᵢ⁽ᵏ⁻¹⁾ / √(|H| dᵢ) and the vector is
/// Σₖ≥₁ wₖ e⁽ᵏ⁾ (items' degrees dᵢ as trained; the new node does not change them).
public struct LightGCN: TrainingDataRecommender, FactorScoredRecommender {
    /// What LightGCN's training minimises.
    public enum Loss: String, Codable, Sendable, CaseIterable, SettingChoice {
        /// BPR with `negatives` uniform unseen negatives per positive and L2 (`regularization`) on
        /// the batch's ego embeddings (the paper's). `batchSize` and `weightDecay` keep their
        /// values: the paper's settings are `batchSize=4096 weightDecay=0` (and `patience=10`).
        case bpr
        /// Softmax over every item, one row per user with the user's positives as targets (as
        /// AMP-CF's); regularised by `weightDecay`.
        case softmax
    }

    public struct Configuration: ModelConfiguration {
        public static let settingHelp: [String: String] = [
            "layers": "propagation layers K (0 = matrix factorisation)",
            "dimension": "embedding width",
            "layerWeights": "w0,...,wK (empty: mean 1/(K+1))",
            "epochs": "most passes over the positives",
            "loss": "bpr (the paper's) or softmax over all items",
            "batchSize": "positives (bpr) or users (softmax) per step",
            "learningRate": "Adam step size",
            "regularization": "bpr: L2 on the batch's ego rows",
            "weightDecay": "AdamW decoupled decay",
            "negatives": "bpr: uniform negatives per positive",
            "validationUsers": "users lending 20% to validation",
            "patience": "epochs without better validation (0: never stop)",
            "refit": "retrain on all positives for the chosen epochs",
            "seed": "initialisation, order and negatives",
            "threads": "worker threads (0 = all cores)",
        ]

        /// Propagation layers K.
        public var layers: Int = 3
        public var dimension: Int = 64
        /// Weights w₀…w_K of the layer combination; empty for the paper's mean, 1/(K+1) each.
        public var layerWeights: [Double] = []
        public var epochs: Int = 400
        public var loss: Loss = .softmax
        public var batchSize: Int = 256
        public var learningRate: Double = 5e-3
        /// λ of λ/2 · (|e⁽⁰⁾_u|² + |e⁽⁰⁾_i|² + |e⁽⁰⁾_j|²) per example, as LightGCN's code.
        public var regularization: Double = 1e-3
        public var negatives: Int = 1
        public var weightDecay: Double = 0.5
        public var validationUsers: Int = 1000
        public var patience: Int = 30
        /// After early stopping on lent positives, train again on every positive for the chosen
        /// number of epochs (the lent positives then shape the model too).
        public var refit: Bool = true
        public var seed: UInt64 = 42
        public var threads: Int = 0

        public init() {}

        public func validate() throws {
            guard layers >= 0 && layers <= 64 else { throw ModelError.invalidSetting(name: "layers", reason: "must be in 0...64, got \(layers)") }
            for (name, v) in [("dimension", dimension), ("batchSize", batchSize), ("negatives", negatives)] where v <= 0 {
                throw ModelError.invalidSetting(name: name, reason: "must be positive, got \(v)")
            }
            guard dimension <= 65_536 else { throw ModelError.invalidSetting(name: "dimension", reason: "at most 65536, got \(dimension)") }
            guard negatives <= 1024 else { throw ModelError.invalidSetting(name: "negatives", reason: "at most 1024, got \(negatives)") }
            guard layerWeights.isEmpty || layerWeights.count == layers + 1 else {
                throw ModelError.invalidSetting(name: "layerWeights", reason: "needs layers + 1 = \(layers + 1) weights (layer 0 first), got \(layerWeights.count)")
            }
            guard layerWeights.allSatisfy({ $0.isFinite }) else { throw ModelError.invalidSetting(name: "layerWeights", reason: "must be finite numbers") }
            guard epochs >= 0, patience >= 0, validationUsers >= 0, threads >= 0 else {
                throw ModelError.invalidSetting(name: epochs < 0 ? "epochs" : patience < 0 ? "patience" : validationUsers < 0 ? "validationUsers" : "threads",
                                                reason: "must not be negative")
            }
            guard learningRate > 0 && learningRate.isFinite else { throw ModelError.invalidSetting(name: "learningRate", reason: "must be positive, got \(learningRate)") }
            guard regularization >= 0 && regularization.isFinite else { throw ModelError.invalidSetting(name: "regularization", reason: "must not be negative") }
            guard weightDecay >= 0 && weightDecay.isFinite else { throw ModelError.invalidSetting(name: "weightDecay", reason: "must not be negative") }
            try checkAdamWDecay(learningRate: learningRate, [("weightDecay", weightDecay)])
        }

        /// w₀…w_K.
        var weights: [Float] {
            layerWeights.isEmpty ? [Float](repeating: 1 / Float(layers + 1), count: layers + 1) : layerWeights.map { Float($0) }
        }
    }

    public static let modelType = "lightgcn"
    public let configuration: Configuration
    public let interactions: SparseMatrix
    /// Propagated user and item vectors (E's rows), over the whole training graph.
    public let factors: FactorModel
    /// Trains ego embeddings on the positives of `x` (its graph) for at most `epochs` epochs.
    static func train(_ x: SparseMatrix, configuration c: Configuration, validation: EvaluationData?, epochs: Int,
                      progress: TrainingProgress.Handler?) throws -> (Matrix, TrainingLoop.Outcome) {
        let nUsers = x.rowCount, nItems = x.columnCount, d = c.dimension
        let threads = Parallelism.resolve(c.threads), weights = c.weights
        let graph = Graph(x)
        var g = SeededGenerator(seed: c.seed, stream: 1)
        let ego = Parameter("ego", value: Matrix(rows: nUsers + nItems, columns: d,
                                                  values: (0..<((nUsers + nItems) * d)).map { _ in Float(g.nextGaussian() * 0.1) }))
        // The positives as (user, item) pairs in CSR order: the items are the matrix's columns.
        let pairItems = x.columns
        var pairUsers = [Int32]()
        pairUsers.reserveCapacity(x.nonZeroCount)
        for u in 0..<nUsers { pairUsers.append(contentsOf: repeatElement(Int32(u), count: x.rowLength(u))) }

        let optimizer = Adam(learningRate: Float(c.learningRate), weightDecay: Float(c.weightDecay), lazy: false)
        let activeUsers = (0..<nUsers).filter { x.rowLength($0) > 0 }
        let softmax = c.loss == .softmax
        let loop = TrainingLoop(settings: .init(epochs: epochs, batchSize: c.batchSize, seed: c.seed, patience: c.patience),
                                parameters: [ego], optimizer: optimizer)
        let evaluator = try Evaluator(cutoffs: [20], threads: threads)
        let seen = softmax ? nil : PatternLookup(x)   // BPR's negative sampling asks it
        // Buffers every step reuses: E, dL/dE, its propagation, and the propagation's two scratch matrices.
        var e = Matrix(rows: nUsers + nItems, columns: d), dE = e, back = e, scratchA = e, scratchB = e
        let outcome = try loop.run(examples: softmax ? activeUsers.count : pairUsers.count, model: modelType,
                                   exampleName: softmax ? "users" : "positives", progress: progress,
                                   validationName: "Recall@20", step: { batch, generator in
            graph.propagate(ego.value, weights: weights, threads: threads, into: &e, scratch: &scratchA, &scratchB)
            dE.values.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
            let loss = softmax ? softmaxBatch(users: batch.map { activeUsers[$0] }, interactions: x, e: e, dE: &dE, threads: threads) : bprBatch(batch: batch, pairUsers: pairUsers, pairItems: pairItems, seen: seen!, items: nItems, users: nUsers, e: e, ego: ego.value,
                                negatives: c.negatives, regularization: Float(c.regularization), dE: &dE, dEgo: &ego.grad, generator: &generator,
                                threads: threads)
            graph.propagate(dE, weights: weights, threads: threads, into: &back, scratch: &scratchA, &scratchB)
            ego.grad.values.withUnsafeMutableBufferPointer { g in
                back.values.withUnsafeBufferPointer { b in for k in 0..<b.count { g[k] += b[k] } }
            }
            return loss
        }, validate: validation.map { v in {
            let e = graph.propagate(ego.value, weights: weights, threads: threads)
            let report = evaluator.evaluate(v) { user, scores in
                e.values.withUnsafeBufferPointer { p in
                    Kernels.dotRows(query: p.baseAddress! + user * d, rows: p.baseAddress! + nUsers * d, rowCount: nItems, dimension: d,
                                    into: scores.baseAddress!)
                }
            }
            return report.metrics(at: 20)?.recall ?? 0
        } })
        return (ego.value, outcome)
    }

    /// Per item, Σₖ≥₁ wₖ eᵢ⁽ᵏ⁻¹⁾ / √dᵢ: a new user's vector is (1/√|H|) Σᵢ∈H of these rows.
    public let foldInRows: Matrix
    /// What training did (nil for a loaded model).
    public let outcome: TrainingLoop.Outcome?

    public var scoring: FactorModel { factors }

    init(configuration: Configuration, interactions: SparseMatrix, factors: FactorModel, foldInRows: Matrix, outcome: TrainingLoop.Outcome?) {
        self.configuration = configuration
        self.interactions = interactions
        self.factors = factors
        self.foldInRows = foldInRows
        self.outcome = outcome
    }

    /// Bytes training needs: the graph (both directions, value and column each), the ego
    /// embeddings with gradient and Adam's two moments, a step's five buffers (E, dL/dE, its
    /// propagation, two scratch), the validation's propagation (three more), and, by loss, the
    /// seen-item bitmap (BPR, at most 64 MiB) or the batch's score rows with the item block and
    /// its gradient (softmax).
    static func trainingBytes(users: Int, items: Int, positives: Int, configuration c: Configuration) -> Double {
        let nodes = Double(users + items), d = Double(c.dimension)
        let lossBytes: Double
        switch c.loss {
        case .bpr: lossBytes = Double(users) * Double(items) / 8 <= Double(64 << 20) ? Double(users) * Double(items) / 8 : 0
        case .softmax: lossBytes = Double(min(c.batchSize, users)) * Double(items) * 4 + 2 * Double(items) * d * 4
        }
        return 2 * Double(positives) * 8 + nodes * 8 + nodes * d * 4 * Double(4 + 5 + 3) + lossBytes
    }

    public static func fit(_ data: TrainingData, configuration c: Configuration, progress: TrainingProgress.Handler?) throws -> LightGCN {
        try c.validate()
        let x = data.interactions.binarized()
        let nUsers = x.rowCount, nItems = x.columnCount, d = c.dimension
        let bytes = trainingBytes(users: nUsers, items: nItems, positives: x.nonZeroCount, configuration: c)
        try MemoryBudget.check(bytes: bytes, for: "LightGCN with dimension=\(d), layers=\(c.layers) on a graph of \(nUsers) users + \(nItems) items and \(x.nonZeroCount) positives")
        let threads = Parallelism.resolve(c.threads)
        let weights = c.weights

        let (ego, outcome) = try TrainingLoop.trainWithValidation(data, matrix: x, validationUsers: c.validationUsers, seed: c.seed,
                                                                  refit: c.refit, epochs: c.epochs) { matrix, validation, epochs in
            try train(matrix, configuration: c, validation: validation, epochs: epochs, progress: progress)
        }
        // The final propagation runs over the whole training graph (lent positives included).
        let layers = Graph(x).layers(ego, count: c.layers, threads: threads)
        let e = Graph.combine(layers, weights: weights)
        let factors = FactorModel(userFactors: e.rows(0..<nUsers), itemFactors: e.rows(nUsers..<(nUsers + nItems)))
        return LightGCN(configuration: c, interactions: x, factors: factors,
                        foldInRows: foldInRows(layers: layers, weights: weights, x: x), outcome: outcome)
    }

    /// Per item, Σₖ≥₁ wₖ eᵢ⁽ᵏ⁻¹⁾ / √dᵢ (zero for an item with no positive).
    static func foldInRows(layers: [Matrix], weights: [Float], x: SparseMatrix) -> Matrix {
        let nUsers = x.rowCount, nItems = x.columnCount, d = layers[0].columns
        let degree = x.columnCounts()
        var out = Matrix(rows: nItems, columns: d)
        for k in 1..<max(1, weights.count) {
            let w = weights[k]
            for i in 0..<nItems where degree[i] > 0 {
                let s = w / Float(degree[i]).squareRoot()
                for j in 0..<d { out.values[i * d + j] += s * layers[k - 1].values[(nUsers + i) * d + j] }
            }
        }
        return out
    }

    /// One BPR batch: adds dL/dE (propagated vectors) into `dE` and the L2 term's gradient into
    /// `dEgo`; returns the batch's summed loss (per positive: the mean over its negatives, plus
    /// the L2 term). The gradients are of the batch's mean loss.
    ///
    /// Three phases: the negatives are drawn in batch order from the one generator; the margins
    /// are computed in parallel; the gradients are scattered in parallel by destination row (each
    /// thread owns a range of rows and walks the whole batch), so every row sums its terms in batch
    /// order and the result is the same for any thread count.
    static func bprBatch(batch: ArraySlice<Int>, pairUsers: [Int32], pairItems: [Int32], seen: PatternLookup, items nItems: Int, users nUsers: Int,
                         e: Matrix, ego: Matrix, negatives: Int, regularization reg: Float, dE: inout Matrix, dEgo: inout Matrix,
                         generator g: inout SeededGenerator, threads: Int = 1) -> Double {
        let d = e.columns, b = batch.count, pairs = b * negatives
        let scale = 1 / Float(b), perNegative = scale / Float(negatives)
        let positives = Array(batch)
        // 1. Negatives: rejection sampling of an unseen item (a user with nearly every item keeps the last draw).
        var drawn = [Int32](repeating: 0, count: pairs)
        for (r, p) in positives.enumerated() {
            let u = Int(pairUsers[p])
            for n in 0..<negatives {
                var j = g.next(below: nItems)
                for _ in 0..<50 where seen.contains(row: u, column: j) { j = g.next(below: nItems) }
                drawn[r * negatives + n] = Int32(j)
            }
        }
        let negativeItems = drawn
        // 2. Margins: σ(−m)/(batch·negatives) per pair, and the loss.
        var coefficient = [Float](repeating: 0, count: pairs), pairLoss = [Double](repeating: 0, count: pairs)
        e.values.withUnsafeBufferPointer { ep in
            coefficient.withUnsafeMutableBufferPointer { cb in
                pairLoss.withUnsafeMutableBufferPointer { lb in
                    let co = SharedMutableBuffer(cb), lo = SharedMutableBuffer(lb), base = UncheckedPointer(ep.baseAddress!)
                    Parallelism.forEachRange(b, grain: 256, threads: threads) { range in
                        for r in range {
                            let p = positives[r], u = Int(pairUsers[p]), i = Int(pairItems[p])
                            let eu = base.base + u * d
                            let positive = Kernels.dot(eu, base.base + (nUsers + i) * d, count: d)
                            for n in 0..<negatives {
                                let j = Int(negativeItems[r * negatives + n])
                                let margin = positive - Kernels.dot(eu, base.base + (nUsers + j) * d, count: d)
                                // -log σ(m) = softplus(-m), computed without overflow.
                                lo[r * negatives + n] = Double(margin > 0 ? log1p(exp(-margin)) : -margin + log1p(exp(margin))) / Double(negatives)
                                co[r * negatives + n] = perNegative / (1 + exp(margin))
                            }
                        }
                    }
                }
            }
        }
        // 3. Scatter by destination row: dE[u] −= s(e_i − e_j), dE[i] −= s·e_u, dE[j] += s·e_u, and
        // the L2 term λ·w·e⁽⁰⁾·scale on u, i (w = 1) and each j (w = 1/negatives).
        let regNegative = 1 / Float(negatives), coefficients = coefficient
        e.values.withUnsafeBufferPointer { ep in
            ego.values.withUnsafeBufferPointer { e0 in
                dE.values.withUnsafeMutableBufferPointer { deb in
                    dEgo.values.withUnsafeMutableBufferPointer { dgb in
                        let de = SharedMutableBuffer(deb), dg = SharedMutableBuffer(dgb)
                        let ev = UncheckedPointer(ep.baseAddress!), e0v = UncheckedPointer(e0.baseAddress!)
                        let rows = nUsers + nItems
                        let parts = max(1, min(Parallelism.resolve(threads), rows / 64))
                        Parallelism.forEachRange(parts, grain: 1, threads: threads) { partRange in
                            for part in partRange {
                                let lo = rows * part / parts, hi = rows * (part + 1) / parts
                                let out = de.base.baseAddress!, reg0 = dg.base.baseAddress!
                                @inline(__always) func add(_ row: Int, _ s: Float, _ v: UnsafePointer<Float>) {
                                    let o = out + row * d
                                    for k in 0..<d { o[k] += s * v[k] }
                                }
                                @inline(__always) func regularize(_ row: Int, _ w: Float) {
                                    let o = reg0 + row * d, v = e0v.base + row * d, s = reg * w * scale
                                    for k in 0..<d { o[k] += s * v[k] }
                                }
                                for r in 0..<b {
                                    let p = positives[r], u = Int(pairUsers[p]), iRow = nUsers + Int(pairItems[p])
                                    let eu = ev.base + u * d
                                    if u >= lo && u < hi { regularize(u, 1) }
                                    if iRow >= lo && iRow < hi { regularize(iRow, 1) }
                                    for n in 0..<negatives {
                                        let jRow = nUsers + Int(negativeItems[r * negatives + n]), s = coefficients[r * negatives + n]
                                        if u >= lo && u < hi { add(u, -s, ev.base + iRow * d); add(u, s, ev.base + jRow * d) }
                                        if iRow >= lo && iRow < hi { add(iRow, -s, eu) }
                                        if jRow >= lo && jRow < hi { add(jRow, s, eu); regularize(jRow, regNegative) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        // The loss in batch order.
        var total = 0.0
        for r in 0..<b {
            let p = positives[r], u = Int(pairUsers[p]), iRow = nUsers + Int(pairItems[p])
            total += l2(u) + l2(iRow)
            for n in 0..<negatives { total += pairLoss[r * negatives + n] + l2(nUsers + Int(drawn[r * negatives + n])) / Double(negatives) }
        }
        func l2(_ row: Int) -> Double {
            var sq: Float = 0
            for k in 0..<d { let v = ego.values[row * d + k]; sq += v * v }
            return Double(0.5 * reg * sq)
        }
        return total
    }

    /// One softmax batch: each user's scores over every item (propagated vectors), the user's
    /// positives as targets; adds dL/dE into `dE` for the loss summed over the rows and divided by
    /// the batch's positives; returns the summed loss.
    static func softmaxBatch(users: [Int], interactions x: SparseMatrix, e: Matrix, dE: inout Matrix, threads: Int) -> Double {
        let d = e.columns, nUsers = x.rowCount, nItems = x.columnCount, b = users.count
        var ub = Matrix(rows: b, columns: d)
        for (r, u) in users.enumerated() { for k in 0..<d { ub.values[r * d + k] = e.values[u * d + k] } }
        let items = e.rows(nUsers..<(nUsers + nItems))
        var g = ub.multiplied(by: items, transposeOther: true, threads: threads)   // scores, then dL/dscores
        let scale = 1 / Float(max(1, users.reduce(0) { $0 + x.rowLength($1) }))
        var losses = [Double](repeating: 0, count: b)
        g.values.withUnsafeMutableBufferPointer { gb in
            losses.withUnsafeMutableBufferPointer { lb in
                let gs = SharedMutableBuffer(gb), ls = SharedMutableBuffer(lb)
                Parallelism.forEachRange(b, grain: 8, threads: threads) { range in
                    for r in range {
                        let row = gs.base.baseAddress! + r * nItems, positives = x.row(users[r])
                        let m = Kernels.maximum(row, count: nItems)
                        var targets = 0.0
                        for i in positives { targets += Double(row[Int(i)]) }
                        let total = Kernels.expShifted(row, count: nItems, shift: m)   // row[j] = exp(s_j − m)
                        let lse = m + log(total), h = Float(positives.count)
                        ls[r] = Double(h) * Double(lse) - targets   // Σ_{i∈H} (lse − s_i)
                        for j in 0..<nItems { row[j] = h * row[j] / total * scale }
                        for i in positives { row[Int(i)] -= scale }
                    }
                }
            }
        }
        let dU = g.multiplied(by: items, threads: threads), dI = g.multiplied(by: ub, transposeSelf: true, threads: threads)
        for (r, u) in users.enumerated() { for k in 0..<d { dE.values[u * d + k] += dU.values[r * d + k] } }
        for k in 0..<(nItems * d) { dE.values[nUsers * d + k] += dI.values[k] }
        return losses.reduce(0, +)
    }

    // MARK: The graph

    /// The symmetric normalised adjacency of the user-item graph: nodes 0..<users are the users,
    /// users..<users+items the items, Â[u, users+i] = Â[users+i, u] = 1/√(d_u d_i).
    struct Graph: Sendable {
        let adjacency: SparseMatrix

        init(_ x: SparseMatrix) {
            let nUsers = x.rowCount, nItems = x.columnCount
            let userDegree = (0..<nUsers).map { x.rowLength($0) }, itemDegree = x.columnCounts()
            let t = x.transposed()
            var pointers = [Int](repeating: 0, count: nUsers + nItems + 1)
            var columns = [Int32](), values = [Float]()
            columns.reserveCapacity(2 * x.nonZeroCount)
            values.reserveCapacity(2 * x.nonZeroCount)
            for u in 0..<nUsers {
                for i in x.row(u) {
                    columns.append(Int32(nUsers) + i)
                    values.append(1 / (Float(userDegree[u]) * Float(itemDegree[Int(i)])).squareRoot())
                }
                pointers[u + 1] = columns.count
            }
            for i in 0..<nItems {
                for u in t.row(i) {
                    columns.append(u)
                    values.append(1 / (Float(userDegree[Int(u)]) * Float(itemDegree[i])).squareRoot())
                }
                pointers[nUsers + i + 1] = columns.count
            }
            // Built from a valid matrix: sorted, in range.
            adjacency = try! SparseMatrix(rowCount: nUsers + nItems, columnCount: nUsers + nItems, rowPointers: pointers, columns: columns, values: values)
        }

        /// E⁽⁰⁾…E⁽ᴷ⁾.
        func layers(_ e0: Matrix, count: Int, threads: Int) -> [Matrix] {
            var out = [e0]
            for _ in 0..<count { out.append(adjacency.multiplied(by: out.last!, threads: threads)) }
            return out
        }

        /// Σₖ wₖ Âᵏ X (forward: X = E⁽⁰⁾; backward: X = dL/dE, as Â is symmetric).
        func propagate(_ x: Matrix, weights: [Float], threads: Int) -> Matrix {
            var out = Matrix(rows: x.rows, columns: x.columns), a = out, b = out
            propagate(x, weights: weights, threads: threads, into: &out, scratch: &a, &b)
            return out
        }

        /// The same into `out`, with two scratch matrices of X's shape (a training step reuses
        /// them instead of allocating K + 1 matrices). Each layer's rows are computed in parallel
        /// and added into `out` by the thread that computed them, in the order of the plain loop.
        func propagate(_ x: Matrix, weights: [Float], threads: Int, into out: inout Matrix, scratch a: inout Matrix, _ b: inout Matrix) {
            let n = x.rows, d = x.columns, w0 = weights[0]
            precondition(out.rows == n && out.columns == d && a.values.count == n * d && b.values.count == n * d)
            x.values.withUnsafeBufferPointer { xp in
                out.values.withUnsafeMutableBufferPointer { op in
                    a.values.withUnsafeMutableBufferPointer { ap in
                        b.values.withUnsafeMutableBufferPointer { bp in
                            let o = SharedMutableBuffer(op)
                            for k in 0..<(n * d) { op[k] = xp[k] * w0 }
                            var current = UncheckedPointer(xp.baseAddress!)
                            let buffers = [SharedMutableBuffer(ap), SharedMutableBuffer(bp)]
                            for (layer, w) in weights.dropFirst().enumerated() {
                                let next = buffers[layer % 2], source = current
                                Parallelism.forEachRange(n, grain: 64, threads: threads) { range in
                                    for r in range {
                                        let row = next.base.baseAddress! + r * d
                                        adjacency.multiplyRow(r, by: source.base, columns: d, into: row)
                                        let target = o.base.baseAddress! + r * d
                                        for k in 0..<d { target[k] += w * row[k] }
                                    }
                                }
                                current = UncheckedPointer(UnsafePointer(next.base.baseAddress!))
                            }
                        }
                    }
                }
            }
        }

        static func combine(_ layers: [Matrix], weights: [Float]) -> Matrix {
            var out = Matrix(rows: layers[0].rows, columns: layers[0].columns)
            for (layer, w) in zip(layers, weights) { for k in out.values.indices { out.values[k] += w * layer.values[k] } }
            return out
        }
    }

    // MARK: Serving

    /// A new user: the propagation of a node joined to the history's items (see the type's comment).
    public func userEmbedding(history: [Int]) -> [Float] {
        let known = Array(Set(history.filter { $0 >= 0 && $0 < itemCount })).sorted()
        let d = factors.factors
        var v = [Float](repeating: 0, count: d)
        guard !known.isEmpty else { return v }
        for i in known { for k in 0..<d { v[k] += foldInRows.values[i * d + k] } }
        let s = 1 / Float(known.count).squareRoot()
        for k in 0..<d { v[k] *= s }
        return v
    }

    public func tensors() -> [String: Tensor] {
        var t = interactions.tensors(prefix: "interactions").merging(factors.tensors()) { a, _ in a }
        t["fold_in_rows"] = .float32(foldInRows.values, shape: [foldInRows.rows, foldInRows.columns])
        return t
    }

    public init(configuration: Configuration, file: SafeTensorsFile, path: String) throws {
        let x = try SparseMatrix(file: file, prefix: "interactions", path: path)
        let factors = try FactorModel(file: file, path: path, users: x.rowCount, items: x.columnCount)
        guard let t = file.tensors["fold_in_rows"], t.shape == [x.columnCount, factors.factors] else {
            throw SafeTensorsError.corrupt(path: path, reason: "fold_in_rows must be a [\(x.columnCount), \(factors.factors)] tensor")
        }
        self.init(configuration: configuration, interactions: x, factors: factors,
                  foldInRows: Matrix(rows: x.columnCount, columns: factors.factors, values: try file.float32("fold_in_rows", path: path)), outcome: nil)
    }
}

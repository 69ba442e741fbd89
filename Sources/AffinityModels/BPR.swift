import AffinityLinalg
import Foundation

/// Bayesian personalised ranking for matrix factorisation (Rendle et al., UAI 2009).
///
/// For sampled triples (u, i, j) of a user, a positive item and a uniformly drawn item the user
/// has not interacted with, ascends ln σ(x_ui − x_uj) − reg·(|w_u|² + |h_i|² + |h_j|² + b²) with
/// x_ui = w_u·h_i + b_i, by SGD or Adagrad (Duchi et al. 2011). An epoch visits every positive
/// once in a seeded random order.
///
/// Parallel and still deterministic: with T threads, users and items are split into T blocks and an
/// epoch runs T sub-epochs; in sub-epoch s thread t takes the positives of user block t and item
/// block (t + s) mod T, and draws its negatives from that item block (stratified SGD, Gemulla et
/// al., KDD 2011). No two threads touch the same parameters, so the same seed and thread count
/// give the same model.
public struct BPR: FactorizationRecommender {
    public enum Optimizer: String, Codable, Sendable, CaseIterable, SettingChoice { case sgd, adagrad }

    public struct Configuration: ModelConfiguration {
        /// One line per setting for `affinity train --help`.
        public static let settingHelp: [String: String] = [
            "factors": "latent dimension",
            "learningRate": "step size",
            "regularization": "L2 on the parameters each step touches",
            "epochs": "passes over the positives",
            "optimizer": "sgd or adagrad",
            "seed": "initialisation and sampling",
            "threads": "0 = all cores (changes the result)",
        ]

        /// Latent dimension.
        public var factors: Int = 64
        /// Step size.
        public var learningRate: Double = 0.05
        /// L2 regularisation of the parameters touched by each update.
        public var regularization: Double = 0.002
        /// Passes over the positives.
        public var epochs: Int = 60
        /// `sgd` or `adagrad`.
        public var optimizer: Optimizer = .sgd
        /// Seed of the initialisation and of the sampling.
        public var seed: UInt64 = 42
        /// Threads (0 = all cores); the model depends on the thread count through the blocks.
        public var threads: Int = 0

        public init() {}
        public func validate() throws {
            guard factors > 0 else { throw ModelError.invalidSetting(name: "factors", reason: "must be positive, got \(factors)") }
            guard learningRate > 0 else { throw ModelError.invalidSetting(name: "learningRate", reason: "must be positive") }
            guard regularization >= 0 else { throw ModelError.invalidSetting(name: "regularization", reason: "must not be negative") }
            guard epochs >= 0 else { throw ModelError.invalidSetting(name: "epochs", reason: "must not be negative") }
        }
    }

    public static let modelType = "bpr"
    public let configuration: Configuration
    public let interactions: SparseMatrix
    public let factors: FactorModel

    public typealias Progress = @Sendable (_ epoch: Int, _ seconds: Double) -> Void

    public static func fit(_ interactions: SparseMatrix, configuration: Configuration = Configuration()) throws -> BPR {
        try fit(interactions, configuration: configuration, progress: nil)
    }

    /// Reports after each block round of an epoch; an example is a positive (with its sampled negative).
    public static func fit(_ interactions: SparseMatrix, configuration c: Configuration, progress: TrainingProgress.Handler?) throws -> BPR {
        try c.validate()
        // Factors and optimiser state of users and items.
        try MemoryBudget.check(bytes: Double(interactions.rowCount + interactions.columnCount) * Double(c.factors) * 4 * 3,
                               for: "BPR with factors=\(c.factors) on \(interactions.rowCount) users x \(interactions.columnCount) items")
        let x = interactions.binarized()
        let nUsers = x.rowCount, nItems = x.columnCount, f = c.factors
        let blocks = max(1, min(Parallelism.resolve(c.threads), nUsers, nItems))
        var rng = SeededGenerator(seed: c.seed)
        var users = (0..<(nUsers * f)).map { _ in Float(rng.nextGaussian() * 0.1) }
        var items = (0..<(nItems * f)).map { _ in Float(rng.nextGaussian() * 0.1) }
        var bias = [Float](repeating: 0, count: nItems)
        // Adagrad accumulators (unused with SGD).
        var userSquares = [Float](repeating: 0, count: c.optimizer == .adagrad ? nUsers * f : 0)
        var itemSquares = [Float](repeating: 0, count: c.optimizer == .adagrad ? nItems * f : 0)
        var biasSquares = [Float](repeating: 0, count: c.optimizer == .adagrad ? nItems : 0)

        // Positives of each (user block, item block) cell, and each item block's items.
        var cellLists = [[Int]](repeating: [], count: blocks * blocks)   // indices into x.columns
        for u in 0..<nUsers {
            for p in x.rowPointers[u]..<x.rowPointers[u + 1] {
                cellLists[(u % blocks) * blocks + Int(x.columns[p]) % blocks].append(p)
            }
        }
        let cells = cellLists
        let blockItems = (0..<blocks).map { b in Array(stride(from: b, to: nItems, by: blocks)) }
        let rowOf = (0..<nUsers).flatMap { u in [Int32](repeating: Int32(u), count: x.rowLength(u)) }

        let lr = Float(c.learningRate), reg = Float(c.regularization), adagrad = c.optimizer == .adagrad
        var reporter = ProgressReporter(progress, model: modelType, epochs: c.epochs, exampleName: "positives")
        let positives = x.nonZeroCount
        for epoch in 0..<c.epochs {
            for sub in 0..<blocks {
                if sub > 0 {
                    reporter.during(epoch: epoch + 1, fraction: Double(sub) / Double(blocks), examples: epoch * positives + positives * sub / blocks)
                }
                users.withUnsafeMutableBufferPointer { ub in items.withUnsafeMutableBufferPointer { ib in bias.withUnsafeMutableBufferPointer { bb in
                userSquares.withUnsafeMutableBufferPointer { usq in itemSquares.withUnsafeMutableBufferPointer { isq in biasSquares.withUnsafeMutableBufferPointer { bsq in
                    let w = SharedMutableBuffer(ub), h = SharedMutableBuffer(ib), b = SharedMutableBuffer(bb)
                    let wsq = SharedMutableBuffer(usq), hsq = SharedMutableBuffer(isq), bs = SharedMutableBuffer(bsq)
                    Parallelism.forEachChunk(blocks, threads: blocks) { t in
                        let itemBlock = (t + sub) % blocks
                        var order = cells[t * blocks + itemBlock]
                        var g = SeededGenerator(seed: c.seed, stream: UInt64(epoch * blocks * blocks + sub * blocks + t + 1))
                        g.shuffle(&order)
                        let candidates = blockItems[itemBlock]
                        guard candidates.count > 1 else { return }
                        for p in order {
                            let u = Int(rowOf[p]), i = Int(x.columns[p])
                            var j = -1
                            for _ in 0..<16 {
                                let candidate = candidates[g.next(below: candidates.count)]
                                if !x.contains(row: u, column: candidate) { j = candidate; break }
                            }
                            if j < 0 { continue }   // the user has nearly every item of this block
                            let wu = w.base.baseAddress! + u * f, hi = h.base.baseAddress! + i * f, hj = h.base.baseAddress! + j * f
                            if adagrad {
                                let z = 1 / (1 + exp(b[i] - b[j] + Kernels.dot(wu, hi, count: f) - Kernels.dot(wu, hj, count: f)))
                                let gsq = wsq.base.baseAddress! + u * f, isqI = hsq.base.baseAddress! + i * f, isqJ = hsq.base.baseAddress! + j * f
                                for k in 0..<f {
                                    let wk = wu[k], hik = hi[k], hjk = hj[k]
                                    let gw = z * (hik - hjk) - reg * wk, gi = z * wk - reg * hik, gj = -z * wk - reg * hjk
                                    gsq[k] += gw * gw; isqI[k] += gi * gi; isqJ[k] += gj * gj
                                    wu[k] += lr * gw / (gsq[k].squareRoot() + 1e-8)
                                    hi[k] += lr * gi / (isqI[k].squareRoot() + 1e-8)
                                    hj[k] += lr * gj / (isqJ[k].squareRoot() + 1e-8)
                                }
                                let gbi = z - reg * b[i], gbj = -z - reg * b[j]
                                bs[i] += gbi * gbi; bs[j] += gbj * gbj
                                b[i] += lr * gbi / (bs[i].squareRoot() + 1e-8)
                                b[j] += lr * gbj / (bs[j].squareRoot() + 1e-8)
                            } else {
                                let z = Kernels.bprStep(user: wu, positive: hi, negative: hj, count: f, biasDifference: b[i] - b[j],
                                                        learningRate: lr, regularization: reg)
                                b[i] += lr * (z - reg * b[i])
                                b[j] += lr * (-z - reg * b[j])
                            }
                        }
                    }
                } } } } } }
            }
            reporter.endOfEpoch(epoch + 1, examples: (epoch + 1) * positives)
        }
        let model = FactorModel(userFactors: Matrix(rows: nUsers, columns: f, values: users),
                                itemFactors: Matrix(rows: nItems, columns: f, values: items), itemBias: bias)
        return BPR(configuration: c, interactions: x, factors: model)
    }

    public init(configuration: Configuration, interactions: SparseMatrix, factors: FactorModel) {
        self.configuration = configuration
        self.interactions = interactions
        self.factors = factors
    }


    /// Fold-in: a user vector fitted to the history by the same BPR updates with the item
    /// parameters fixed (200 passes, seeded by the configuration's seed and the history's items,
    /// so the same history gives the same vector in every process). Items outside the model are ignored.
    public func userFactors(history: [Int]) -> [Float] {
        let f = configuration.factors
        let positives = Array(Set(history.filter { $0 >= 0 && $0 < itemCount })).sorted()
        var w = [Float](repeating: 0, count: f)
        let seen = Set(positives)
        var g = SeededGenerator(seed: configuration.seed ^ SeededGenerator.fingerprint(positives))
        let lr = Float(configuration.learningRate), reg = Float(configuration.regularization)
        let h = factors.itemFactors, b = factors.itemBias
        if !positives.isEmpty && seen.count < itemCount {
            for _ in 0..<200 {
                for i in positives {
                    var j = g.next(below: itemCount)
                    while seen.contains(j) { j = g.next(below: itemCount) }
                    var diff = b[i] - b[j]
                    for k in 0..<f { diff += w[k] * (h[i, k] - h[j, k]) }
                    let z = 1 / (1 + exp(diff))
                    for k in 0..<f { w[k] += lr * (z * (h[i, k] - h[j, k]) - reg * w[k]) }
                }
            }
        }
        return w
    }
}

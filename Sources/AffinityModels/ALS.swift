import AffinityLinalg
import Foundation

/// Implicit alternating least squares (Hu, Koren & Volinsky, ICDM 2008), the model of implicit's
/// `AlternatingLeastSquares`.
///
/// Minimises Σ_{u,i} c_ui (p_ui − x_uᵀy_i)² + λ_u|x_u|² + λ_i|y_i|² with preference p_ui = 1 for
/// observed pairs (0 otherwise) and confidence c_ui = 1 + α·r_ui (1 for unobserved pairs; r_ui is
/// the interaction count, 1 for binary data). Each half-step solves every user's (then every
/// item's) f x f system
///
///     (YᵀY + Σ_{i∈u} α r_ui y_i y_iᵀ + λ_u I) x_u = Σ_{i∈u} (1 + α r_ui) y_i
///
/// exactly by Cholesky, or approximately by a few conjugate-gradient steps warm-started from the
/// previous value (Takács, Pilászy & Tikk 2011), in parallel over users (items).
/// Training ends with a final, exact user half-step, so a trained user's vector equals the fold-in
/// of their own history whichever solver ran the iterations.
/// `regularizationExponent` ν > 0 scales λ by (|I_u| + |I|/(1+α))^ν, the frequency-scaled
/// regularisation of Rendle et al. ("Revisiting the performance of iALS", 2021).
public struct ALS: FactorizationRecommender, ExplainableRecommender {
    public enum Solver: String, Codable, Sendable, CaseIterable, SettingChoice { case cholesky, cg }

    public struct Configuration: ModelConfiguration {
        /// One line per setting for `affinity train --help`.
        public static let settingHelp: [String: String] = [
            "factors": "latent dimension",
            "regularization": "L2 regularisation",
            "alpha": "confidence c = 1 + alpha * count",
            "iterations": "alternating passes (users, then items)",
            "solver": "cg (fast) or cholesky (exact)",
            "cgSteps": "conjugate-gradient steps per solve",
            "regularizationExponent": "frequency-scaled regularisation (0 = off)",
            "seed": "initial factors",
            "threads": "0 = all cores",
        ]

        /// Latent dimension f.
        public var factors: Int = 64
        /// Regularisation λ.
        public var regularization: Double = 10
        /// Confidence weight α of observed pairs: c = 1 + α·r.
        public var alpha: Double = 4
        /// Alternating iterations (each updates all users, then all items).
        public var iterations: Int = 15
        /// `cg` (a few warm-started conjugate-gradient steps; implicit's default too) or `cholesky`
        /// (exact). The final user step is always exact.
        public var solver: Solver = .cg
        /// Conjugate-gradient steps per solve when `solver` is `cg`.
        public var cgSteps: Int = 3
        /// ν of the frequency-scaled regularisation; 0 keeps a constant λ.
        public var regularizationExponent: Double = 0
        /// Seed of the initial factors (normal, standard deviation 0.01).
        public var seed: UInt64 = 42
        /// Threads (0 = all cores).
        public var threads: Int = 0

        public init() {}
        public func validate() throws {
            guard factors > 0 else { throw ModelError.invalidSetting(name: "factors", reason: "must be positive, got \(factors)") }
            guard regularization >= 0 else { throw ModelError.invalidSetting(name: "regularization", reason: "must not be negative") }
            guard alpha >= 0 else { throw ModelError.invalidSetting(name: "alpha", reason: "must not be negative") }
            guard iterations >= 0 else { throw ModelError.invalidSetting(name: "iterations", reason: "must not be negative") }
            guard cgSteps > 0 else { throw ModelError.invalidSetting(name: "cgSteps", reason: "must be positive") }
            guard regularizationExponent >= 0 else { throw ModelError.invalidSetting(name: "regularizationExponent", reason: "must not be negative") }
        }
    }

    public static let modelType = "ials"
    public let configuration: Configuration
    public let interactions: SparseMatrix
    public let factors: FactorModel
    /// YᵀY of the item factors, shared by every fold-in and explanation (derived at init).
    let itemGram: Matrix

    public static func fit(_ interactions: SparseMatrix, configuration: Configuration = Configuration()) throws -> ALS {
        try fit(interactions, configuration: configuration, progress: nil)
    }

    /// Reports after each half-iteration (users solved, items solved); an example is a row solved.
    public static func fit(_ interactions: SparseMatrix, configuration c: Configuration, progress: TrainingProgress.Handler?) throws -> ALS {
        try c.validate()
        // Factors of users and items, plus per thread a f x f system and its factor.
        try MemoryBudget.check(bytes: (Double(interactions.rowCount + interactions.columnCount) + 4 * Double(Parallelism.resolve(c.threads)) * Double(c.factors)) * Double(c.factors) * 4,
                               for: "iALS with factors=\(c.factors) on \(interactions.rowCount) users x \(interactions.columnCount) items")
        let x = interactions   // values are the counts r_ui
        let xt = x.transposed()
        let f = c.factors
        var rng = SeededGenerator(seed: c.seed)
        var users = Matrix(rows: x.rowCount, columns: f, values: (0..<(x.rowCount * f)).map { _ in Float(rng.nextGaussian() * 0.01) })
        var items = Matrix(rows: x.columnCount, columns: f, values: (0..<(x.columnCount * f)).map { _ in Float(rng.nextGaussian() * 0.01) })
        var reporter = ProgressReporter(progress, model: modelType, epochs: c.iterations, exampleName: "rows")
        let perIteration = x.rowCount + x.columnCount
        for iteration in 0..<c.iterations {
            try solveAll(&users, fixed: items, ratings: x, otherCount: x.columnCount, c)
            reporter.during(epoch: iteration + 1, fraction: Double(x.rowCount) / Double(max(1, perIteration)),
                            examples: iteration * perIteration + x.rowCount)
            try solveAll(&items, fixed: users, ratings: xt, otherCount: x.rowCount, c)
            reporter.endOfEpoch(iteration + 1, examples: (iteration + 1) * perIteration)
        }
        // End on a user half-step, so each stored user vector is the least-squares solution for the
        // final item factors: exactly what `recalculateUser` computes from the same history.
        if c.iterations > 0 {
            var exact = c
            exact.solver = .cholesky
            try solveAll(&users, fixed: items, ratings: x, otherCount: x.columnCount, exact)
        }
        return ALS(configuration: c, interactions: x, factors: FactorModel(userFactors: users, itemFactors: items))
    }

    public init(configuration: Configuration, interactions: SparseMatrix, factors: FactorModel) {
        self.configuration = configuration
        self.interactions = interactions
        self.factors = factors
        itemGram = factors.itemFactors.multiplied(by: factors.itemFactors, transposeSelf: true, threads: 1)
    }

    /// A history as a one-row count matrix (repeated items count as repeated interactions).
    func historyRow(_ history: [Int]) throws -> SparseMatrix {
        var counts: [Int: Float] = [:]
        for i in history {
            guard i >= 0 && i < itemCount else { throw ModelError.itemOutOfRange(i, count: itemCount) }
            counts[i, default: 0] += 1
        }
        let sorted = counts.keys.sorted()
        return try SparseMatrix(rowCount: 1, columnCount: itemCount, rowPointers: [0, sorted.count],
                                columns: sorted.map { Int32($0) }, values: sorted.map { counts[$0]! })
    }

    /// λ for a row with `count` interactions.
    static func lambda(_ c: Configuration, count: Int, otherCount: Int) -> Float {
        guard c.regularizationExponent > 0 else { return Float(c.regularization) }
        return Float(c.regularization * pow(Double(count) + Double(otherCount) / (1 + c.alpha), c.regularizationExponent))
    }

    /// Updates every row of `target` given the fixed factors of the other side.
    static func solveAll(_ target: inout Matrix, fixed: Matrix, ratings: SparseMatrix, otherCount: Int, _ c: Configuration) throws {
        let f = c.factors
        let gram = fixed.multiplied(by: fixed, transposeSelf: true, threads: c.threads)   // YᵀY
        let failure = FirstError()
        target.values.withUnsafeMutableBufferPointer { tb in
            let out = SharedMutableBuffer(tb)
            fixed.values.withUnsafeBufferPointer { yb in
                let y = UncheckedPointer(yb.baseAddress!)
                Parallelism.forEachRange(ratings.rowCount, grain: 64, threads: c.threads) { range in
                    var scratch = ALSScratch(factors: f)
                    for r in range {
                        let x = out.base.baseAddress! + r * f
                        let lambda = lambda(c, count: ratings.rowLength(r), otherCount: otherCount)
                        do {
                            if c.solver == .cholesky {
                                try scratch.solveExact(row: r, ratings: ratings, y: y.base, gram: gram, lambda: lambda, alpha: Float(c.alpha), into: x)
                            } else {
                                scratch.solveCG(row: r, ratings: ratings, y: y.base, gram: gram, lambda: lambda, alpha: Float(c.alpha), steps: c.cgSteps, x: x)
                            }
                        } catch {
                            failure.set(error)
                        }
                    }
                }
            }
        }
        if let error = failure.error { throw error }
    }

    /// Fold-in: the exact least-squares vector of a user with this history, the item factors
    /// fixed (implicit's `recalculate_user`). Repeated items count as repeated interactions.
    public func recalculateUser(history: [Int]) throws -> [Float] {
        let row = try historyRow(history)
        var x = [Float](repeating: 0, count: configuration.factors)
        var scratch = ALSScratch(factors: configuration.factors)
        try factors.itemFactors.values.withUnsafeBufferPointer { y in
            try x.withUnsafeMutableBufferPointer { xb in
                try scratch.solveExact(row: 0, ratings: row, y: y.baseAddress!, gram: itemGram,
                                       lambda: ALS.lambda(configuration, count: row.nonZeroCount, otherCount: userCount),
                                       alpha: Float(configuration.alpha), into: xb.baseAddress!)
            }
        }
        return x
    }

    public func scores(forHistory history: [Int]) -> [Float] {
        guard let vector = try? recalculateUser(history: history) else { return [Float](repeating: 0, count: itemCount) }
        return factors.scores(userVector: vector)
    }

    /// Fold-in for serving: `recalculateUser`, with items outside the model ignored.
    public func userFactors(history: [Int]) -> [Float] {
        (try? recalculateUser(history: history.filter { $0 >= 0 && $0 < itemCount }))
            ?? [Float](repeating: 0, count: configuration.factors)
    }


    /// Why `item` is recommended to a history (Hu et al. 2008, §5): with W = (YᵀC·Y + λI)⁻¹, the
    /// fold-in score is Σ_j s_ij·c_j over history items j with s_ij = y_iᵀ·W·y_j. Returns each
    /// history item's term s_ij·c_j, largest first; the terms sum to the fold-in score.
    public func explain(history: [Int], item: Int) throws -> [Contribution] {
        guard item >= 0 && item < itemCount else { throw ModelError.itemOutOfRange(item, count: itemCount) }
        let row = try historyRow(history)
        let f = configuration.factors, alpha = Float(configuration.alpha)
        // w = A⁻¹·y_item with A = YᵀY + Σ α r y yᵀ + λI: the same system as the fold-in, right-hand side y_item.
        var scratch = ALSScratch(factors: f)
        let y = factors.itemFactors
        var w = [Float](repeating: 0, count: f)
        try y.values.withUnsafeBufferPointer { yb in
            try w.withUnsafeMutableBufferPointer { wb in
                try scratch.solveExact(row: 0, ratings: row, y: yb.baseAddress!, gram: itemGram,
                                       lambda: ALS.lambda(configuration, count: row.nonZeroCount, otherCount: userCount),
                                       alpha: alpha, rightHandSide: Array(y.row(item)), into: wb.baseAddress!)
            }
        }
        return zip(row.columns, row.values).map { j, r in
            Contribution(item: Int(j), weight: Kernels.dot(w, Array(y.row(Int(j)))) * (1 + alpha * r))
        }.sorted { $0.weight != $1.weight ? $0.weight > $1.weight : $0.item < $1.item }
    }

    public func explain(user: Int, item: Int) throws -> [Contribution] {
        guard user >= 0 && user < userCount else { throw ModelError.userOutOfRange(user, count: userCount) }
        let row = interactions.row(user)
        let values = interactions.rowValues(user)
        var history: [Int] = []
        for (i, v) in zip(row, values) { for _ in 0..<max(1, Int(v)) { history.append(Int(i)) } }
        return try explain(history: history, item: item)
    }


}

/// Per-thread buffers of the ALS solves.
struct ALSScratch {
    let f: Int
    var a: [Float]
    var b: [Float]
    var gathered: [Float]
    var r: [Float], p: [Float], ap: [Float]

    init(factors: Int) {
        f = factors
        a = [Float](repeating: 0, count: factors * factors)
        b = [Float](repeating: 0, count: factors)
        gathered = []
        r = [Float](repeating: 0, count: factors)
        p = r
        ap = r
    }

    /// x = (YᵀY + Σ α r y yᵀ + λI)⁻¹ Σ (1 + α r) y, for one row of `ratings` (or the inverse applied to
    /// `rightHandSide` when given: explanations solve the same system for another vector).
    mutating func solveExact(row: Int, ratings: SparseMatrix, y: UnsafePointer<Float>, gram: Matrix, lambda: Float, alpha: Float,
                             rightHandSide: [Float]? = nil, into x: UnsafeMutablePointer<Float>) throws {
        let lo = ratings.rowPointers[row], hi = ratings.rowPointers[row + 1], n = hi - lo
        let f = self.f
        // Gather √(α r)·y_i rows and add their Gram in one small GEMM.
        if gathered.count < n * f { gathered = [Float](repeating: 0, count: n * f) }
        for k in 0..<f { b[k] = 0 }
        for (t, p) in (lo..<hi).enumerated() {
            let item = Int(ratings.columns[p]), rating = ratings.values[p]
            let scale = (alpha * rating).squareRoot(), confidence = 1 + alpha * rating
            let src = y + item * f
            for k in 0..<f {
                gathered[t * f + k] = scale * src[k]
                b[k] += confidence * src[k]
            }
        }
        for k in 0..<(f * f) { a[k] = gram.values[k] }
        if n > 0 {
            gathered.withUnsafeBufferPointer { g in
                a.withUnsafeMutableBufferPointer { ab in
                    sgemm(transposeA: true, m: f, n: f, k: n, a: g.baseAddress!, lda: f, b: g.baseAddress!, ldb: f, beta: 1,
                          c: ab.baseAddress!, ldc: f, threads: 1)
                }
            }
        }
        for k in 0..<f { a[k * f + k] += lambda }
        if let rightHandSide { for k in 0..<f { b[k] = rightHandSide[k] } }
        try a.withUnsafeMutableBufferPointer { ab in
            try b.withUnsafeMutableBufferPointer { bb in try Cholesky.solveInPlace(ab.baseAddress!, n: f, b: bb.baseAddress!) }
        }
        for k in 0..<f { x[k] = b[k] }
    }

    /// A few conjugate-gradient steps on the same system, warm-started from x, never forming the
    /// f x f matrix: A·v = YᵀY·v + λv + Σ α r (y·v) y.
    mutating func solveCG(row: Int, ratings: SparseMatrix, y: UnsafePointer<Float>, gram: Matrix, lambda: Float, alpha: Float,
                          steps: Int, x: UnsafeMutablePointer<Float>) {
        let lo = ratings.rowPointers[row], hi = ratings.rowPointers[row + 1]
        let f = self.f
        func multiply(_ v: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>) {
            gram.multiply(vector: v, into: out)
            for k in 0..<f { out[k] += lambda * v[k] }
            for p in lo..<hi {
                let src = y + Int(ratings.columns[p]) * f
                let w = alpha * ratings.values[p] * Kernels.dot(src, v, count: f)
                for k in 0..<f { out[k] += w * src[k] }
            }
        }
        // r = b − A·x
        r.withUnsafeMutableBufferPointer { rb in multiply(UnsafePointer(x), rb.baseAddress!) }
        for k in 0..<f { r[k] = -r[k] }
        for p in lo..<hi {
            let src = y + Int(ratings.columns[p]) * f
            let confidence = 1 + alpha * ratings.values[p]
            for k in 0..<f { r[k] += confidence * src[k] }
        }
        r.withUnsafeMutableBufferPointer { rb in
            p.withUnsafeMutableBufferPointer { pb in
                ap.withUnsafeMutableBufferPointer { apb in
                    _ = ConjugateGradient.iterate(n: f, x: x, residual: rb.baseAddress!, direction: pb.baseAddress!, product: apb.baseAddress!,
                                                  maxIterations: steps, stopBelow: 1e-20, multiply: multiply)
                }
            }
        }
    }
}

import AffinityLinalg
import Foundation

/// A model that can say which history items made a recommendation.
public protocol ExplainableRecommender: Recommender {
    /// Each history item's share of `item`'s score for a known user, largest first.
    func explain(user: Int, item: Int) throws -> [Contribution]
    /// Each history item's share of `item`'s fold-in score for a history the model never saw.
    func explain(history: [Int], item: Int) throws -> [Contribution]
}

/// An item-item model: an item's score for a history is the sum of the history items' weights
/// toward it (EASE, sparse-ease). Its explanations come from those weights.
public protocol ItemWeightRecommender: ExplainableRecommender {
    /// B[i, j]: how much having item `i` raises (or, negative, lowers) the score of item `j`.
    func weight(from i: Int, to j: Int) -> Float
}

extension ItemWeightRecommender {
    /// Why `item` scores as it does for a history: each history item's weight B[h, item], largest
    /// first (positive weights pull the item up, negative ones push it down). The weights sum to
    /// the item's score.
    public func explain(history: [Int], item: Int) throws -> [Contribution] {
        guard item >= 0 && item < itemCount else { throw ModelError.itemOutOfRange(item, count: itemCount) }
        for h in history where h < 0 || h >= itemCount { throw ModelError.itemOutOfRange(h, count: itemCount) }
        return Set(history).map { Contribution(item: $0, weight: weight(from: $0, to: item)) }
            .sorted { $0.weight != $1.weight ? $0.weight > $1.weight : $0.item < $1.item }
    }

    /// The explanation for a known user (their training history).
    public func explain(user: Int, item: Int) throws -> [Contribution] {
        guard user >= 0 && user < userCount else { throw ModelError.userOutOfRange(user, count: userCount) }
        return try explain(history: seenItems(ofUser: user), item: item)
    }
}

/// A model with anti-affinity signal: items that one item makes less likely.
public protocol AntiAffinityRecommender: Recommender {
    /// The items whose score `item` lowers most, most negative first.
    func antiAffinities(of item: Int, k: Int) throws -> [Contribution]
}

/// One item's contribution to an explanation: the item and its weight in the score.
public struct Contribution: Sendable, Equatable, Codable {
    public var item: Int
    public var weight: Float
    public init(item: Int, weight: Float) {
        self.item = item
        self.weight = weight
    }
}

/// EASE, the embarrassingly shallow autoencoder (Steck, WWW 2019): an item-item weight matrix B
/// with a zero diagonal, learned in closed form:
///
///     P = (XᵀX + λI)⁻¹,   B = I − P·diag(1/diag(P))   (so B[i,j] = −P[i,j] / P[j,j], B[j,j] = 0).
///
/// A user's score for item j is Σ_{i in history} B[i,j]. B's negative entries are signal in their
/// own right: B[i,j] < 0 means that having item i lowers the score of j ("people who pick i
/// rarely pick j": anti-affinity), which `antiAffinities(of:)` exposes.
///
/// Memory: the Gram matrix, its inverse and B are items² floats each (4 bytes); fit needs about
/// 3·items²·4 bytes at its peak (ml-1m's 3,706 items: 165 MB; 50,000 items: 30 GB). `fit` refuses
/// item counts whose need exceeds `maxMemoryGB` with a clear error rather than thrashing.
/// - Complexity: fit O(Σ_u |u|² + items³); scoring O(|history|·items).
public struct EASE: PersistableRecommender, ItemWeightRecommender, AntiAffinityRecommender {
    public struct Configuration: ModelConfiguration {
        /// One line per setting for `affinity train --help`.
        public static let settingHelp: [String: String] = [
            "lambda": "L2 regularisation added to the Gram diagonal",
            "threads": "0 = all cores",
            "maxMemoryGB": "refuse beyond this (0 = half the RAM)",
        ]

        /// L2 regularisation λ added to the Gram diagonal. 500 is the tuned value for ml-1m.
        public var lambda: Double = 500
        /// Threads for the Gram matrix and the inverse (0 = all cores).
        public var threads: Int = 0
        /// Refuse to fit when the dense matrices would need more than this many GB (0 = half of the
        /// machine's physical memory).
        public var maxMemoryGB: Double = 0

        public init() {}
        public func validate() throws {
            guard lambda > 0, lambda.isFinite else { throw ModelError.invalidSetting(name: "lambda", reason: "must be positive, got \(lambda)") }
            guard maxMemoryGB >= 0 else { throw ModelError.invalidSetting(name: "maxMemoryGB", reason: "must not be negative") }
        }
    }

    public static let modelType = "ease"
    public let configuration: Configuration
    public let interactions: SparseMatrix
    /// items x items weights, zero diagonal.
    public let weights: Matrix

    public static func fit(_ interactions: SparseMatrix, configuration: Configuration = Configuration()) throws -> EASE {
        try configuration.validate()
        let x = interactions.binarized()
        let n = x.columnCount
        let need = 3.0 * Double(n) * Double(n) * 4 / 1e9
        let limit = configuration.maxMemoryGB > 0 ? configuration.maxMemoryGB : Double(ProcessInfo.processInfo.physicalMemory) / 2e9
        guard need <= limit else {
            throw ModelError.tooLarge(String(format: "EASE on %d items needs about %.1f GB (3 dense %dx%d float matrices); the limit is %.1f GB. Use the sparse-ease model (train --model sparse-ease; each column restricted to its most informative co-occurrences), filter rare items, or raise maxMemoryGB.", n, need, n, n, limit))
        }
        var gram = x.gram(threads: configuration.threads)
        gram.addToDiagonal(Float(configuration.lambda))
        var p = try gram.inverseSPD(threads: configuration.threads)
        // B = I − P·diag(1/diag(P)), computed in place on P.
        let diagonal = (0..<n).map { p.values[$0 * n + $0] }
        for i in 0..<n {
            for j in 0..<n { p.values[i * n + j] = -p.values[i * n + j] / diagonal[j] }
            p.values[i * n + i] = 0
        }
        return EASE(configuration: configuration, interactions: x, weights: p)
    }

    init(configuration: Configuration, interactions: SparseMatrix, weights: Matrix) {
        self.configuration = configuration
        self.interactions = interactions
        self.weights = weights
    }

    public func scores(forUser user: Int, into scores: UnsafeMutableBufferPointer<Float>) {
        weights.values.withUnsafeBufferPointer { b in
            interactions.multiplyRow(user, by: b.baseAddress!, columns: itemCount, into: scores.baseAddress!)
        }
    }

    public func scores(forHistory history: [Int]) -> [Float] {
        // Same order and arithmetic as the trained path, so a trained user's own history scores identically.
        var out = [Float](repeating: 0, count: itemCount)
        let rows = Set(history).sorted().map { Int32($0) }
        weights.values.withUnsafeBufferPointer { b in
            out.withUnsafeMutableBufferPointer { o in
                Kernels.addRows(ids: rows, weights: nil, count: rows.count, of: b.baseAddress!, width: itemCount, into: o.baseAddress!)
            }
        }
        return out
    }

    /// Items whose score rises most when `item` is in a history: the largest entries of B's row.
    public func similarItems(to item: Int, k: Int) throws -> [ScoredItem] {
        guard item >= 0 && item < itemCount else { throw ModelError.itemOutOfRange(item, count: itemCount) }
        guard k > 0 else { throw ModelError.invalidK(k) }
        return topK(Array(weights.row(item)), k: k, excluded: [item])
    }

    public func weight(from i: Int, to j: Int) -> Float { weights[i, j] }

    /// Anti-affinity: the items whose score `item` lowers most (the most negative entries of B's
    /// row), most negative first. "People who picked `item` rarely pick these."
    public func antiAffinities(of item: Int, k: Int) throws -> [Contribution] {
        guard item >= 0 && item < itemCount else { throw ModelError.itemOutOfRange(item, count: itemCount) }
        guard k > 0 else { throw ModelError.invalidK(k) }
        let negated = weights.row(item).map { -$0 }
        return topK(Array(negated), k: k, excluded: [item]).filter { $0.score > 0 }.map { Contribution(item: $0.index, weight: -$0.score) }
    }

    public func tensors() -> [String: Tensor] {
        var t = interactions.tensors(prefix: "interactions")
        t["weights"] = .float32(weights.values, shape: [itemCount, itemCount])
        return t
    }

    public init(configuration: Configuration, file: SafeTensorsFile, path: String) throws {
        let x = try SparseMatrix(file: file, prefix: "interactions", path: path)
        let w = try file.float32("weights", path: path)
        guard w.count == checkedProduct(x.columnCount, x.columnCount) else {
            throw SafeTensorsError.corrupt(path: path, reason: "weights have \(w.count) entries, expected \(x.columnCount)²")
        }
        self.init(configuration: configuration, interactions: x, weights: Matrix(rows: x.columnCount, columns: x.columnCount, values: w))
    }
}

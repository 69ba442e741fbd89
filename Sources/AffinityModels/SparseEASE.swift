import AffinityLinalg
import Foundation

/// EASE for catalogues where the dense n x n inverse does not fit: each column of B is EASE's
/// regression restricted to that item's strongest co-occurrence neighbours.
///
/// Exact EASE's column j solves `min ‖X_j − X·b‖² + λ‖b‖²` with `b_j = 0` (the zero diagonal); its
/// closed form over all items is `B = I − P·diag(1/diag(P))`, `P = (XᵀX + λI)⁻¹`. Here the support
/// of column j is restricted to N(j), the `neighbors` items that co-occur with j most often, and the
/// same regression is solved on it:
///
///     b_N(j) = (G[N,N] + λI)⁻¹ · G[N, j],   G = XᵀX,
///
/// one `neighbors`-sized Cholesky per item (the approach of feature-selection SLIM, Ning & Karypis
/// 2012, with EASE's closed-form objective). j is never in N(j), so the diagonal stays zero, and
/// the weights keep their sign: negative entries are EASE's anti-affinities. With N(j) = every
/// other item and no pruning this is exact EASE (tested).
///
/// N(j) is not "the items seen most with j" (that would be the most popular items, and never
/// j's substitutes, which are never seen with it): it is the items whose co-occurrence with j
/// deviates most from what independence predicts (s_i·s_j/U, s: item counts, U: users), in either
/// direction — see `PrunedGram`.
///
/// Why this and not SANSA (Spišák et al. 2023, a sparse LDLᵀ of the Gram and a sparse approximate
/// inverse): it needs nothing beyond the row-wise sparse Gram and small dense solves we already
/// have (no fill-reducing ordering, no sparse Cholesky), each column is independent (parallel,
/// deterministic), and its memory is set by two numbers a user can reason about.
///
/// The Gram itself is never held whole: each item's row is accumulated densely and only its
/// `gramKeep` most deviating entries are kept, exactly. G[N,N] reads those rows; an entry kept in
/// neither row reads as its independence expectation (the approximation beyond the restricted
/// support: G ≈ s·sᵀ/U + sparse deviations). When that makes G[N,N] + λI lose positive
/// definiteness, the column's ridge is doubled until it factors (`repairedColumns` counts them).
///
/// Memory: items · (2·gramKeep + 3·neighbors) · 8 bytes at the peak, plus per thread items · 12 bytes and
/// neighbors² · 4; `fit` refuses beyond `MemoryBudget` with the estimate.
/// - Complexity: fit O(Σ_u |u|² + items·(neighbors·gramKeep + neighbors³/3)); scoring
///   O(|history|·neighbors).
public struct SparseEASE: PersistableRecommender, ItemWeightRecommender, AntiAffinityRecommender {
    public struct Configuration: ModelConfiguration {
        public static let settingHelp: [String: String] = [
            "lambda": "L2 regularisation added to the Gram diagonal (as ease)",
            "neighbors": "support of each column (farthest from independence)",
            "gramKeep": "Gram entries kept exactly per item (>= neighbors)",
            "threads": "0 = all cores",
        ]
        /// L2 regularisation λ, as in `ease` (500 is ml-1m's tuned value).
        public var lambda: Double = 500
        /// Size of each column's support N(j).
        public var neighbors: Int = 256
        /// Off-diagonal Gram entries kept per item; G[N,N] reads these.
        public var gramKeep: Int = 1024
        /// Threads for the Gram rows and the column solves (0 = all cores).
        public var threads: Int = 0

        public init() {}
        public func validate() throws {
            guard lambda > 0, lambda.isFinite else { throw ModelError.invalidSetting(name: "lambda", reason: "must be positive, got \(lambda)") }
            guard neighbors >= 1, neighbors <= 4096 else { throw ModelError.invalidSetting(name: "neighbors", reason: "must be in 1...4096, got \(neighbors)") }
            guard gramKeep >= neighbors, gramKeep <= 1 << 20 else {
                throw ModelError.invalidSetting(name: "gramKeep", reason: "must be in neighbors...\(1 << 20) (neighbors is \(neighbors)), got \(gramKeep)")
            }
        }
    }

    public static let modelType = "sparse-ease"
    public let configuration: Configuration
    public let interactions: SparseMatrix
    /// B as a sparse items x items matrix: row i holds the items whose score i raises or lowers,
    /// with the weights B[i, j]; the diagonal is absent (zero).
    public let weights: SparseMatrix
    /// Columns whose ridge had to be raised to factor (pruned Gram entries); 0 when nothing was pruned.
    public let repairedColumns: Int

    /// Bytes `fit` plans to hold for `items` items.
    public static func fitMemoryBytes(items: Int, configuration c: Configuration) -> Double {
        let n = Double(items)
        let keep = min(Double(c.gramKeep), n), k = min(Double(c.neighbors), n)
        return n * (2 * keep + 3 * k) * 8 + Double(Parallelism.resolve(c.threads)) * (n * 12 + k * k * 4 + keep * 16)
    }

    public static func fit(_ interactions: SparseMatrix, configuration: Configuration = Configuration()) throws -> SparseEASE {
        try configuration.validate()
        let x = interactions.binarized()
        let n = x.columnCount
        try MemoryBudget.check(bytes: fitMemoryBytes(items: n, configuration: configuration) + Double(x.nonZeroCount) * 8,
                               for: "sparse-ease on \(n) items with neighbors=\(configuration.neighbors), gramKeep=\(configuration.gramKeep)")
        let threads = configuration.threads
        let gram = x.prunedGram(keep: configuration.gramKeep, threads: threads)
        let k = min(configuration.neighbors, max(0, n - 1))
        let lambda = Float(configuration.lambda)

        // Column j: its support (the first k of its pruned row, strongest first) and weights.
        var supports = [[Int32]](repeating: [], count: n)
        var columnWeights = [[Float]](repeating: [], count: n)
        let repaired = SharedCounter()
        supports.withUnsafeMutableBufferPointer { sBuffer in
            columnWeights.withUnsafeMutableBufferPointer { wBuffer in
                let s = SharedMutableBuffer(sBuffer), w = SharedMutableBuffer(wBuffer)
                // One scratch per thread, not per range (`position` is items long).
                let scratches = ScratchPool(count: Parallelism.resolve(threads)) { ColumnSolveScratch(items: n, support: k) }
                Parallelism.forEachRange(n, grain: 64, threads: threads) { range in
                  scratches.with { scratch in
                    let position = scratch.position
                    // Moved out and back (not copied: a shared buffer would be copied on the first write).
                    var a: [Float] = [], rhs: [Float] = [], base: [Float] = []
                    swap(&a, &scratch.a); swap(&rhs, &scratch.rhs); swap(&base, &scratch.base)
                    defer { swap(&a, &scratch.a); swap(&rhs, &scratch.rhs); swap(&base, &scratch.base) }
                    var fixes = 0
                    for j in range {
                        let row = gram.rowPointers[j]..<gram.rowPointers[j + 1]
                        let m = min(k, row.count)
                        guard m > 0 else { continue }
                        let support = Array(gram.columns[row.lowerBound..<(row.lowerBound + m)])
                        for p in 0..<m { position[Int(support[p])] = Int32(p) }
                        // G[N,N]: independence everywhere, then the kept entries of the support's rows
                        // (symmetric: either row may hold an entry, with the same exact value).
                        for p in 0..<m {
                            for q in 0..<m { base[p * m + q] = gram.expected(Int(support[p]), Int(support[q])) }
                        }
                        for p in 0..<m {
                            let item = Int(support[p])
                            base[p * m + p] = Float(gram.diagonal[item])
                            for e in gram.rowPointers[item]..<gram.rowPointers[item + 1] {
                                let q = Int(position[Int(gram.columns[e])])
                                if q >= 0 {
                                    base[p * m + q] = gram.values[e]
                                    base[q * m + p] = gram.values[e]
                                }
                            }
                        }
                        for p in 0..<m { position[Int(support[p])] = -1 }
                        var ridge = lambda
                        var solved = false
                        while !solved {
                            for q in 0..<(m * m) { a[q] = base[q] }
                            for p in 0..<m {
                                a[p * m + p] += ridge
                                rhs[p] = gram.values[row.lowerBound + p]
                            }
                            do {
                                try a.withUnsafeMutableBufferPointer { ap in
                                    try rhs.withUnsafeMutableBufferPointer { bp in
                                        try Cholesky.solveInPlace(ap.baseAddress!, n: m, b: bp.baseAddress!)
                                    }
                                }
                                solved = true
                            } catch {
                                if ridge == lambda { fixes += 1 }
                                ridge *= 2
                                // A finite Gram always factors long before this; never loop on a broken one.
                                if !(ridge < 1e30) { for p in 0..<m { rhs[p] = 0 }; solved = true }
                            }
                        }
                        s.base[j] = support
                        w.base[j] = Array(rhs[0..<m])
                    }
                    if fixes > 0 { repaired.add(fixes) }
                  }
                }
            }
        }
        // Columns -> rows: row i of B lists (j, B[i, j]) for every column j whose support holds i.
        var rows = [Int32](), cols = [Int32](), values = [Float]()
        let total = supports.reduce(0) { $0 + $1.count }
        rows.reserveCapacity(total); cols.reserveCapacity(total); values.reserveCapacity(total)
        for j in 0..<n {
            for (p, i) in supports[j].enumerated() {
                rows.append(i)
                cols.append(Int32(j))
                values.append(columnWeights[j][p])
            }
        }
        supports = []
        columnWeights = []
        let b = SparseMatrix(rowCount: n, columnCount: n, rows: rows, cols: cols, values: values)
        return SparseEASE(configuration: configuration, interactions: x, weights: b, repairedColumns: repaired.get())
    }

    init(configuration: Configuration, interactions: SparseMatrix, weights: SparseMatrix, repairedColumns: Int) {
        self.configuration = configuration
        self.interactions = interactions
        self.weights = weights
        self.repairedColumns = repairedColumns
    }

    public func scores(forUser user: Int, into scores: UnsafeMutableBufferPointer<Float>) {
        weights.sumRows(interactions.row(user), into: scores)
    }

    public func scores(forHistory history: [Int]) -> [Float] {
        // Same order as the trained path (rows are sorted and distinct), so a trained user's own history scores identically.
        var out = [Float](repeating: 0, count: itemCount)
        out.withUnsafeMutableBufferPointer { weights.sumRows(Set(history).sorted().map { Int32($0) }, into: $0) }
        return out
    }

    /// B[i, j] (0 when j is outside i's row).
    public func weight(from i: Int, to j: Int) -> Float {
        for p in weights.rowPointers[i]..<weights.rowPointers[i + 1] where Int(weights.columns[p]) == j { return weights.values[p] }
        return 0
    }

    /// Items whose score rises most when `item` is in a history: the largest entries of B's row.
    public func similarItems(to item: Int, k: Int) throws -> [ScoredItem] {
        guard item >= 0 && item < itemCount else { throw ModelError.itemOutOfRange(item, count: itemCount) }
        guard k > 0 else { throw ModelError.invalidK(k) }
        return rowEntries(item).filter { $0.weight > 0 }.prefix(k).map { ScoredItem(index: $0.item, score: $0.weight) }
    }

    /// B's row `item` as contributions, largest weight first (ties by item).
    private func rowEntries(_ item: Int) -> [Contribution] {
        (weights.rowPointers[item]..<weights.rowPointers[item + 1])
            .map { Contribution(item: Int(weights.columns[$0]), weight: weights.values[$0]) }
            .sorted { $0.weight != $1.weight ? $0.weight > $1.weight : $0.item < $1.item }
    }

    /// The items whose score `item` lowers most (B's most negative entries in its row), most negative first.
    public func antiAffinities(of item: Int, k: Int) throws -> [Contribution] {
        guard item >= 0 && item < itemCount else { throw ModelError.itemOutOfRange(item, count: itemCount) }
        guard k > 0 else { throw ModelError.invalidK(k) }
        return Array(rowEntries(item).filter { $0.weight < 0 }.reversed().prefix(k))
    }

    public func tensors() -> [String: Tensor] {
        var t = interactions.tensors(prefix: "interactions")
        t.merge(weights.tensors(prefix: "weights")) { a, _ in a }
        t["repaired_columns"] = .int64([Int64(repairedColumns)])
        return t
    }

    public init(configuration: Configuration, file: SafeTensorsFile, path: String) throws {
        let x = try SparseMatrix(file: file, prefix: "interactions", path: path)
        let b = try SparseMatrix(file: file, prefix: "weights", path: path)
        guard b.rowCount == x.columnCount, b.columnCount == x.columnCount else {
            throw SafeTensorsError.corrupt(path: path, reason: "weights are \(b.rowCount)x\(b.columnCount), expected \(x.columnCount)x\(x.columnCount)")
        }
        guard b.values.allSatisfy(\.isFinite) else { throw SafeTensorsError.corrupt(path: path, reason: "weights hold a non-finite value") }
        let repaired = (try? file.int64("repaired_columns", path: path))?.first ?? 0
        self.init(configuration: configuration, interactions: x, weights: b, repairedColumns: Int(repaired))
    }
}

/// One thread's buffers for the column solves: each item's position in the current support (-1
/// outside it, restored after every column) and the k x k system.
final class ColumnSolveScratch {
    let position: UnsafeMutablePointer<Int32>
    var a: [Float], rhs: [Float], base: [Float]

    init(items n: Int, support k: Int) {
        position = .allocate(capacity: max(1, n))
        position.initialize(repeating: -1, count: max(1, n))
        a = [Float](repeating: 0, count: k * k)
        rhs = [Float](repeating: 0, count: k)
        base = [Float](repeating: 0, count: k * k)
    }

    deinit { position.deallocate() }
}

import AffinityLinalg

/// Item-based k-nearest-neighbour collaborative filtering (Sarwar et al., WWW 2001; Deshpande &
/// Karypis, TOIS 2004) with cosine similarity on the binary interaction matrix.
///
/// sim(i, j) = |U_i ∩ U_j| / (sqrt(|U_i|)·sqrt(|U_j|) + shrink). Each item keeps its `neighbors`
/// most similar other items (ties to the smaller index), giving a sparse items x items matrix W;
/// a user's score for item j is Σ_{i in history} W[i, j]. This is the model of implicit's
/// `CosineRecommender` and of the shared peer script.
///
/// - Complexity: fit O(Σ_u |u|²) time and O(items) scratch per thread; scoring O(|history| · neighbors).
public struct ItemKNN: PersistableRecommender, ExplainableRecommender {
    public struct Configuration: ModelConfiguration {
        /// One line per setting for `affinity train --help`.
        public static let settingHelp: [String: String] = [
            "neighbors": "neighbours kept per item",
            "shrink": "added to the cosine denominator",
            "threads": "0 = all cores",
        ]

        /// Neighbours kept per item (k). 50 reaches the shared ml-1m reference figures.
        public var neighbors: Int = 50
        /// Shrinkage added to the cosine denominator; damps similarities of rarely seen items.
        public var shrink: Double = 0
        /// Threads used by `fit` (0 = all cores).
        public var threads: Int = 0

        public init() {}
        public func validate() throws {
            guard neighbors > 0 else { throw ModelError.invalidSetting(name: "neighbors", reason: "must be positive, got \(neighbors)") }
            guard shrink >= 0 else { throw ModelError.invalidSetting(name: "shrink", reason: "must not be negative, got \(shrink)") }
        }
    }

    public static let modelType = "itemknn"
    public let configuration: Configuration
    public let interactions: SparseMatrix
    /// items x items: row i holds i's nearest neighbours and their similarities.
    public let neighbors: SparseMatrix

    public static func fit(_ interactions: SparseMatrix, configuration: Configuration = Configuration()) throws -> ItemKNN {
        try configuration.validate()
        let x = interactions.binarized()
        let xt = x.transposed()
        let nItems = x.columnCount
        let norms = (0..<nItems).map { Double(xt.rowLength($0)).squareRoot() }
        let k = min(configuration.neighbors, max(nItems - 1, 0))
        var rowColumns = [[Int32]](repeating: [], count: nItems)
        var rowValues = [[Float]](repeating: [], count: nItems)
        rowColumns.withUnsafeMutableBufferPointer { colsBuffer in
            rowValues.withUnsafeMutableBufferPointer { valsBuffer in
                let colsOut = SharedMutableBuffer(colsBuffer), valsOut = SharedMutableBuffer(valsBuffer)
                Parallelism.forEachRange(nItems, grain: 64, threads: configuration.threads) { range in
                    var co = [Int32](repeating: 0, count: nItems)
                    var touched: [Int32] = []
                    var selector = TopKSelector(k: k)
                    for i in range {
                        touched.removeAll(keepingCapacity: true)
                        for u in xt.row(i) {
                            for j in x.row(Int(u)) where Int(j) != i {
                                if co[Int(j)] == 0 { touched.append(j) }
                                co[Int(j)] += 1
                            }
                        }
                        selector.reset(k: k)
                        for j in touched {
                            let denominator = norms[i] * norms[Int(j)] + configuration.shrink
                            let s = denominator > 0 ? Double(co[Int(j)]) / denominator : 0
                            selector.push(index: Int(j), score: Float(s))
                            co[Int(j)] = 0
                        }
                        let best = selector.sortedResults().sorted { $0.index < $1.index }
                        colsOut[i] = best.map { Int32($0.index) }
                        valsOut[i] = best.map(\.score)
                    }
                }
            }
        }
        var pointers = [0]
        pointers.reserveCapacity(nItems + 1)
        for r in rowColumns { pointers.append(pointers.last! + r.count) }
        let w = try SparseMatrix(rowCount: nItems, columnCount: nItems, rowPointers: pointers,
                                 columns: rowColumns.flatMap { $0 }, values: rowValues.flatMap { $0 })
        return ItemKNN(configuration: configuration, interactions: x, neighbors: w)
    }

    init(configuration: Configuration, interactions: SparseMatrix, neighbors: SparseMatrix) {
        self.configuration = configuration
        self.interactions = interactions
        self.neighbors = neighbors
    }

    public func scores(forUser user: Int, into scores: UnsafeMutableBufferPointer<Float>) {
        accumulate(history: interactions.row(user), into: scores)
    }

    public func scores(forHistory history: [Int]) -> [Float] {
        var out = [Float](repeating: 0, count: itemCount)
        let sorted = Array(Set(history)).sorted().map { Int32($0) }
        out.withUnsafeMutableBufferPointer { accumulate(history: sorted[...], into: $0) }
        return out
    }

    private func accumulate(history: ArraySlice<Int32>, into scores: UnsafeMutableBufferPointer<Float>) {
        neighbors.sumRows(history, into: scores)
    }

    public func similarItems(to item: Int, k: Int) throws -> [ScoredItem] {
        guard item >= 0 && item < itemCount else { throw ModelError.itemOutOfRange(item, count: itemCount) }
        guard k > 0 else { throw ModelError.invalidK(k) }
        let row = zip(neighbors.row(item), neighbors.rowValues(item)).map { ScoredItem(index: Int($0.0), score: $0.1) }
        return Array(row.sorted { ScoredIndex.ranksBefore($0.score, $0.index, $1.score, $1.index) }.prefix(k))
    }

    /// Each history item's similarity to `item` (zero when `item` is not among its neighbours);
    /// the weights sum to the item's fold-in score.
    public func explain(history: [Int], item: Int) throws -> [Contribution] {
        guard item >= 0 && item < itemCount else { throw ModelError.itemOutOfRange(item, count: itemCount) }
        for j in history where j < 0 || j >= itemCount { throw ModelError.itemOutOfRange(j, count: itemCount) }
        return Set(history).map { j in
            let row = neighbors.row(j)
            let position = row.firstIndex(of: Int32(item))
            return Contribution(item: j, weight: position.map { neighbors.values[$0] } ?? 0)
        }.sorted { $0.weight != $1.weight ? $0.weight > $1.weight : $0.item < $1.item }
    }

    /// The explanation for a known user (their training history).
    public func explain(user: Int, item: Int) throws -> [Contribution] {
        guard user >= 0 && user < userCount else { throw ModelError.userOutOfRange(user, count: userCount) }
        return try explain(history: seenItems(ofUser: user), item: item)
    }

    public func tensors() -> [String: Tensor] {
        interactions.tensors(prefix: "interactions").merging(neighbors.tensors(prefix: "neighbors")) { a, _ in a }
    }

    public init(configuration: Configuration, file: SafeTensorsFile, path: String) throws {
        let x = try SparseMatrix(file: file, prefix: "interactions", path: path)
        let w = try SparseMatrix(file: file, prefix: "neighbors", path: path)
        guard w.rowCount == x.columnCount, w.columnCount == x.columnCount else {
            throw SafeTensorsError.corrupt(path: path, reason: "neighbour matrix is \(w.rowCount)x\(w.columnCount), expected \(x.columnCount)x\(x.columnCount)")
        }
        self.init(configuration: configuration, interactions: x, neighbors: w)
    }
}

import AffinityData
import AffinityLinalg

/// Item-kNN on item *text*: each item keeps its `neighbors` most similar other items by cosine
/// similarity of their text vectors (sentence vectors of title and genres, or of a description),
/// and a user's score for item j is Σ_{i in history} sim(i, j), as `ItemKNN` scores, with the
/// co-occurrence cosine replaced by the text cosine. Interactions play no part in the
/// similarities: this is the pure "looks alike" recommender, the baseline that asks whether
/// semantic similarity is what a person wants next (`affinity analyze semantic-vs-task`).
///
/// Items without text (a zero vector) have no neighbours and are no one's neighbour. Fit is an
/// exact all-pairs search (blocked SGEMM, O(items² · d)); scoring is O(|history| · neighbors).
public struct TextKNN: PersistableRecommender, ExplainableRecommender, ItemContentRecommender {
    public struct Configuration: ModelConfiguration {
        public static let settingHelp: [String: String] = [
            "neighbors": "text neighbours kept per item",
            "threads": "0 = all cores",
        ]
        /// Neighbours kept per item (as `itemknn`'s default).
        public var neighbors: Int = 50
        /// Threads used by `fit` (0 = all cores).
        public var threads: Int = 0

        public init() {}
        public func validate() throws {
            guard neighbors > 0 else { throw ModelError.invalidSetting(name: "neighbors", reason: "must be positive, got \(neighbors)") }
            guard threads >= 0 else { throw ModelError.invalidSetting(name: "threads", reason: "must be 0 (all cores) or more, got \(threads)") }
        }
    }

    public static let modelType = "text-knn"
    public let configuration: Configuration
    /// The scoring: an `ItemKNN` whose neighbour matrix holds text similarities.
    let knn: ItemKNN

    public var interactions: SparseMatrix { knn.interactions }
    /// items x items: row i holds i's nearest items by text and their cosine similarities.
    public var neighbors: SparseMatrix { knn.neighbors }

    public static func fit(_ data: TrainingData, configuration: Configuration, progress: TrainingProgress.Handler?) throws -> TextKNN {
        try configuration.validate()
        guard let vectors = data.itemVectors else {
            throw ModelError.invalidSetting(name: "itemVectors", reason: "text-knn needs item text vectors: train --items FILE (with --text-model DIR or AFFINITY_TEXT_MODEL) or --item-vectors FILE")
        }
        var reporter = ProgressReporter(progress, model: modelType, epochs: 1, exampleName: "items")
        let model = try fit(data.interactions, itemVectors: vectors, configuration: configuration)
        reporter.endOfEpoch(1, examples: data.itemCount)
        return model
    }

    /// Refused: text-knn needs item vectors (`fit(_:itemVectors:configuration:)`, or `TrainingData.itemVectors`).
    public static func fit(_ interactions: SparseMatrix, configuration: Configuration) throws -> TextKNN {
        throw ModelError.invalidSetting(name: "itemVectors", reason: "text-knn needs item text vectors")
    }

    /// Fits on the interactions (for seen items and history) and item vectors (items x d).
    public static func fit(_ interactions: SparseMatrix, itemVectors: Matrix, configuration: Configuration = Configuration()) throws -> TextKNN {
        try configuration.validate()
        let n = interactions.columnCount
        guard itemVectors.rows == n else {
            throw ModelError.invalidSetting(name: "itemVectors", reason: "\(itemVectors.rows) vectors for \(n) items")
        }
        let withText = itemVectors.nonZeroRows()
        var rows = [[ScoredIndex]](repeating: [], count: n)
        if withText.count > 1 {
            var base = Matrix(rows: withText.count, columns: itemVectors.columns)
            for (r, i) in withText.enumerated() { for k in 0..<itemVectors.columns { base[r, k] = itemVectors[i, k] } }
            let k = min(configuration.neighbors, withText.count - 1)
            // k + 1: the item itself comes back (cosine 1) and is dropped.
            let found = ExactSearch.search(queries: base, base: base, k: k + 1, metric: .cosine, threads: configuration.threads)
            for (r, i) in withText.enumerated() {
                rows[i] = found[r].filter { $0.index != r }.prefix(k).map { ScoredIndex(index: withText[$0.index], score: $0.score) }
                    .sorted { $0.index < $1.index }
            }
        }
        var pointers = [0]
        pointers.reserveCapacity(n + 1)
        for r in rows { pointers.append(pointers.last! + r.count) }
        let w = try SparseMatrix(rowCount: n, columnCount: n, rowPointers: pointers,
                                 columns: rows.flatMap { $0.map { Int32($0.index) } }, values: rows.flatMap { $0.map(\.score) })
        var knnConfiguration = ItemKNN.Configuration()
        knnConfiguration.neighbors = configuration.neighbors
        return TextKNN(configuration: configuration, knn: ItemKNN(configuration: knnConfiguration, interactions: interactions.binarized(), neighbors: w))
    }

    init(configuration: Configuration, knn: ItemKNN) {
        self.configuration = configuration
        self.knn = knn
    }

    public func scores(forUser user: Int, into scores: UnsafeMutableBufferPointer<Float>) { knn.scores(forUser: user, into: scores) }
    public func scores(forHistory history: [Int]) -> [Float] { knn.scores(forHistory: history) }
    public func similarItems(to item: Int, k: Int) throws -> [ScoredItem] { try knn.similarItems(to: item, k: k) }
    /// Each history item's text similarity to `item` (zero when `item` is not among its neighbours).
    public func explain(history: [Int], item: Int) throws -> [Contribution] { try knn.explain(history: history, item: item) }
    public func explain(user: Int, item: Int) throws -> [Contribution] { try knn.explain(user: user, item: item) }

    public func tensors() -> [String: Tensor] { knn.tensors() }

    public init(configuration: Configuration, file: SafeTensorsFile, path: String) throws {
        var knnConfiguration = ItemKNN.Configuration()
        knnConfiguration.neighbors = configuration.neighbors
        self.init(configuration: configuration, knn: try ItemKNN(configuration: knnConfiguration, file: file, path: path))
    }
}

import AffinityLinalg

/// Recommends the items most users interacted with: every user gets the same ranking, minus
/// what they have seen. The baseline every model must beat (docs/protocol.md's tie-break matters here:
/// equal counts rank by the smaller item index).
public struct Popularity: PersistableRecommender {
    /// Popularity has no hyperparameters.
    public struct Configuration: ModelConfiguration {
        public init() {}
        public func validate() throws {}
    }

    public static let modelType = "popularity"
    public let configuration: Configuration
    public let interactions: SparseMatrix
    /// Distinct users per item.
    public let counts: [Float]

    public static func fit(_ interactions: SparseMatrix, configuration: Configuration = Configuration()) throws -> Popularity {
        Popularity(configuration: configuration, interactions: interactions)
    }

    init(configuration: Configuration, interactions: SparseMatrix) {
        self.configuration = configuration
        self.interactions = interactions
        counts = interactions.columnCounts().map { Float($0) }
    }

    public func scores(forUser user: Int, into scores: UnsafeMutableBufferPointer<Float>) {
        _ = scores.initialize(from: counts)
    }

    public func scores(forHistory history: [Int]) -> [Float] { counts }

    /// The most popular other items: popularity carries no item-to-item signal, so this is the
    /// popularity ranking without `item`.
    public func similarItems(to item: Int, k: Int) throws -> [ScoredItem] {
        guard item >= 0 && item < itemCount else { throw ModelError.itemOutOfRange(item, count: itemCount) }
        guard k > 0 else { throw ModelError.invalidK(k) }
        return topK(counts, k: k, excluded: [item])
    }

    public func tensors() -> [String: Tensor] { interactions.tensors(prefix: "interactions") }

    public init(configuration: Configuration, file: SafeTensorsFile, path: String) throws {
        self.init(configuration: configuration, interactions: try SparseMatrix(file: file, prefix: "interactions", path: path))
    }
}

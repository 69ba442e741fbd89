import AffinityANN
import AffinityData
import AffinityLinalg
import AffinityModels
import Foundation

/// Who recommendations are for.
public enum RecommendationSubject: Sendable, Equatable {
    /// A user of the model's training data, as trained.
    case user(Int)
    /// A history in item indexes (fold-in): a new or anonymous user, or a known user whose training
    /// history has grown since the model was trained.
    case history([Int])
}

/// How a recommendation list was produced.
public enum RetrievalPath: String, Sendable, Codable {
    /// Nearest-neighbour search of the item embeddings with the user's vector.
    case ann
    /// Every item scored by the model.
    case exact
    /// Most popular items in the training data (a user the model cannot place).
    case popular
    /// Several retrievers merged, then ranked (a pipeline file).
    case pipeline
}

/// One recommended item with its score and, when asked for, why: a pipeline's `Candidate`.
public typealias Recommendation = Candidate

/// Errors of assembling a serving model; each names the file and what is wrong.
public enum ServingError: Error, CustomStringConvertible, Equatable {
    case indexMismatch(path: String, reason: String)
    case notEmbeddingModel(modelType: String)

    public var description: String {
        switch self {
        case .indexMismatch(let path, let reason): return "\(path): index does not belong to the model: \(reason)"
        case .notEmbeddingModel(let t): return "model type '\(t)' has no item embeddings to index (it is served by exact scoring)"
        }
    }
}

/// Why an item is on a list (`ServingModel.explanations`): history items behind its score and,
/// for multi-persona models, the persona that serves it.
public struct ItemExplanation: Sendable, Equatable {
    public var because: [Contribution]?
    public var persona: Int?
    public init(because: [Contribution]? = nil, persona: Int? = nil) {
        self.because = because
        self.persona = persona
    }
}

/// A trained model ready to answer queries: the model, its vocabularies, and (for embedding models)
/// the nearest-neighbour index over its item embeddings. The serving path is
/// retrieve (ANN over item embeddings, or exact scoring) -> exclude (seen, requested, business
/// filters) -> top-k -> explain.
///
/// Immutable once built, so any number of requests may use it at once, and a server swaps models
/// by swapping the reference: requests that hold the old one finish on it.
public final class ServingModel: Sendable {
    public let trained: TrainedModel
    /// The index over `itemEmbeddings` (ids = item indexes), when the model has embeddings.
    public let index: (any VectorIndex)?
    /// Search settings for `index` (HNSW's `ef`, IVF's `nprobe`, ...).
    public let searchParameters: SearchParameters
    /// Items by training popularity, most popular first (the fallback list).
    public let popularItems: [Int]
    private let itemCounts: [Int]
    private let embeddings: (any EmbeddingRecommender)?
    /// Models with several queries per user (AMP-CF's personas): one search per query, merged, scored exactly.
    private let multiQuery: (any MultiQueryRecommender)?
    /// Multi-query fold-ins by history (the queries' rows, flattened), and the queries' width.
    private let multiQueryFoldIns = FoldInCache(limit: 10_000)
    private let multiQueryWidth: Int
    /// Fold-in vectors by history: a user whose history has not changed since the last request is
    /// not folded in again (an iALS fold-in is a 64x64 solve per request otherwise).
    private let foldIns = FoldInCache(limit: 100_000)

    public var modelType: String { trained.modelType }
    public var retrievalPath: RetrievalPath { index != nil ? .ann : .exact }

    /// Wraps `trained`. For embedding models (iALS, BPR, two-tower) `index` is used when given (it must
    /// hold the model's item embeddings: same count and dimension), else an HNSW index is built
    /// over them when `buildIndex` is set; other models are served by exact scoring.
    public init(trained: TrainedModel, index: (any VectorIndex)? = nil, indexPath: String = "index",
                buildIndex: Bool = true, hnsw: HNSWSettings = HNSWSettings(neighborsPerNode: 16, efConstruction: 200),
                searchParameters: SearchParameters = SearchParameters(ef: 64)) throws {
        self.trained = trained
        self.searchParameters = searchParameters
        let model = trained.model
        let embeddingModel = model as? any EmbeddingRecommender
        embeddings = embeddingModel
        multiQuery = model as? any MultiQueryRecommender
        // The vectors an index holds: an embedding model's, or a multi-query model's.
        let indexed: Matrix? = embeddingModel?.itemEmbeddings ?? multiQuery?.itemEmbeddings
        multiQueryWidth = multiQuery != nil ? indexed?.columns ?? 0 : 0
        if let index {
            guard let indexed else { throw ServingError.notEmbeddingModel(modelType: trained.modelType) }
            let d = indexed.columns
            guard index.count == model.itemCount else {
                throw ServingError.indexMismatch(path: indexPath, reason: "it holds \(index.count) vectors, the model has \(model.itemCount) items")
            }
            guard index.dimension == d else {
                throw ServingError.indexMismatch(path: indexPath, reason: "dimension \(index.dimension), the model's embeddings have \(d)")
            }
            guard index.metric == .innerProduct else {
                throw ServingError.indexMismatch(path: indexPath, reason: "metric \(index.metric); the model scores by inner product")
            }
            self.index = index
        } else if let indexed, buildIndex {
            let built = try HNSWIndex(dimension: indexed.columns, metric: .innerProduct, settings: hnsw)
            _ = try built.add(indexed)
            self.index = built
        } else {
            self.index = nil
        }
        let counts = model.interactions.columnCounts()
        itemCounts = counts
        popularItems = counts.indices.sorted { counts[$0] != counts[$1] ? counts[$0] > counts[$1] : $0 < $1 }
    }

    /// The item indexes of a known user's training history (a sequential model's: in time order).
    public func trainingHistory(ofUser user: Int) -> [Int] {
        (trained.model as? any SequentialRecommender)?.trainingSequence(ofUser: user) ?? trained.model.seenItems(ofUser: user)
    }

    /// What a sequential model does with a history longer than it reads, as answers say it (nil: it
    /// reads all of it). The server's `note` and the CLI's note.
    public func truncationNote(history: [Int]) -> String? {
        guard let sequential = trained.model as? any SequentialRecommender, history.count > sequential.maxLength else { return nil }
        return "history of \(history.count) items: the model reads the \(sequential.maxLength) most recent"
    }

    /// The top `k` items for `subject`, none of them in `excluded` (item indexes; out-of-range
    /// entries are ignored), best first. The caller puts the seen items in `excluded` when they
    /// must not come back. With `explain`, explainable models (EASE, item-kNN, iALS) say which
    /// history items weigh most (`explanationSize` of them).
    public func recommend(_ subject: RecommendationSubject, k: Int, excluded: [Int], explain: Bool = false,
                          explanationSize: Int = 3) throws -> (items: [Recommendation], path: RetrievalPath) {
        guard k > 0 else { throw ModelError.invalidK(k) }
        let model = trained.model
        if case .user(let u) = subject, u < 0 || u >= model.userCount { throw ModelError.userOutOfRange(u, count: model.userCount) }
        var mask = [Bool](repeating: false, count: model.itemCount)
        for i in excluded where i >= 0 && i < mask.count { mask[i] = true }
        let found: [ScoredItem]
        if let index, let multiQuery {
            found = try multiQueryCandidates(multiQuery, index: index, subject: subject, k: k, excluded: excluded, mask: mask)
        } else if let index, let embeddings {
            let query: [Float]
            switch subject {
            case .user(let u): query = embeddings.userEmbedding(user: u)
            case .history(let h): query = foldIns.vector(for: h) { embeddings.userEmbedding(history: h) }
            }
            // HNSW raises ef to k itself.
            found = try mask.withUnsafeBufferPointer { m in
                try index.search(query, k: k, parameters: searchParameters, filter: excluded.isEmpty ? nil : { !m[$0] })
            }.map { ScoredItem(index: $0.id, score: $0.score) }
        } else {
            let scores: [Float]
            switch subject {
            case .user(let u): scores = model.scores(forUser: u)
            case .history(let h): scores = model.scores(forHistory: h)
            }
            var top = MaskedTopK(count: scores.count)
            found = top.select(scores, k: k, excluding: excluded)
        }
        let out = found.map { Recommendation(item: $0.index, score: $0.score, because: nil) }
        return (explain ? try explanations(of: out.map(\.item), for: subject, size: explanationSize).enumerated().map { n, e in
            Recommendation(item: out[n].item, score: out[n].score, because: e.because, persona: e.persona)
        } : out, index != nil ? .ann : .exact)
    }

    /// A history's queries, folded in once and cached: the index search and the explanations share
    /// them (exact scoring without an index folds in through the model's `scores(forHistory:)`).
    private func historyQueries(_ model: any MultiQueryRecommender, _ history: [Int]) -> Matrix {
        let flat = multiQueryFoldIns.vector(for: history) { model.queries(history: history).values }
        return Matrix(rows: flat.count / max(1, multiQueryWidth), columns: multiQueryWidth, values: flat)
    }

    /// One search per query, the union scored exactly by the model, the best `k` kept: the
    /// pipeline's path for models that place a user at several points (AMP-CF's personas).
    private func multiQueryCandidates(_ model: any MultiQueryRecommender, index: any VectorIndex, subject: RecommendationSubject,
                                      k: Int, excluded: [Int], mask: [Bool]) throws -> [ScoredItem] {
        let queries: Matrix
        switch subject {
        case .user(let u): queries = model.queries(user: u)
        case .history(let h): queries = historyQueries(model, h)
        }
        // The score is a convex combination of the queries' dot products, so an item no search
        // returned scores at most the largest of the searches' last (lowest) scores. Searches widen
        // (k, 2k, 4k, ...) until the k-th exact score reaches that bound (Fagin's threshold rule):
        // the list is then what exact scoring over the index's answers gives.
        var breadth = k
        var scored: [Int: Float] = [:]   // exact scores of earlier rounds: a wider search scores only what is new
        while true {
            var union = Set<Int>()
            var bound = -Float.infinity
            try mask.withUnsafeBufferPointer { m in
                for r in 0..<queries.rows {
                    let hits = try index.search(Array(queries.row(r)), k: breadth, parameters: searchParameters,
                                                filter: excluded.isEmpty ? nil : { !m[$0] })
                    for hit in hits { union.insert(hit.id) }
                    if hits.count == breadth, let last = hits.last { bound = max(bound, last.score) }
                }
            }
            let fresh = union.filter { scored[$0] == nil }.sorted()
            for (item, score) in zip(fresh, model.scores(ofItems: fresh, queries: queries)) { scored[item] = score }
            let ranked = union.map { ScoredItem(index: $0, score: scored[$0]!) }
                .sorted { ScoredIndex.ranksBefore($0.score, $0.index, $1.score, $1.index) }
            if ranked.count < k && bound == -.infinity || ranked.count >= k && ranked[k - 1].score >= bound || breadth >= index.count {
                return Array(ranked.prefix(k))
            }
            breadth = min(index.count, breadth * 2)
        }
    }

    /// Why each item is on the list: for explainable models (EASE, item-kNN, iALS) the `size` history
    /// items that weigh most in its score for `subject`, largest first; for multi-persona models
    /// (AMP-CF) the persona that serves it and the history items that characterise that persona;
    /// nothing for other models.
    public func explanations(of items: [Int], for subject: RecommendationSubject, size: Int = 3) throws -> [ItemExplanation] {
        if let personas = trained.model as? any PersonaRecommender {
            let attributions: [PersonaAttribution]
            switch subject {
            case .user(let u): attributions = personas.attributions(of: items, user: u, size: size)
            case .history(let h): attributions = personas.attributions(of: items, queries: historyQueries(personas, h), history: h, size: size)
            }
            return attributions.map { ItemExplanation(because: $0.characteristic, persona: $0.persona) }
        }
        guard let explainable = trained.model as? any ExplainableRecommender else { return items.map { _ in ItemExplanation() } }
        return try items.map { item in
            let contributions: [Contribution]
            switch subject {
            case .user(let u): contributions = try explainable.explain(user: u, item: item)
            case .history(let h): contributions = try explainable.explain(history: h, item: item)
            }
            return ItemExplanation(because: Array(contributions.filter { $0.weight > 0 }.prefix(size)))
        }
    }

    /// The most popular items not in `excluded`, scored by their training count.
    public func popular(k: Int, excluded: [Int]) throws -> [Recommendation] {
        guard k > 0 else { throw ModelError.invalidK(k) }
        let skip = Set(excluded)
        return popularItems.lazy.filter { !skip.contains($0) }.prefix(k).map {
            Recommendation(item: $0, score: Float(self.itemCounts[$0]), because: nil)
        }
    }

    /// The items most similar to `item` by the model's own similarity.
    public func similar(item: Int, k: Int) throws -> [ScoredItem] {
        try trained.model.similarItems(to: item, k: k)
    }
}

/// An interaction that arrived after the model was trained (an event): the item's raw ID and, for
/// a rating event, the rating.
public struct UserEvent: Sendable, Equatable {
    public var item: String
    /// The rating of a rating event; nil for every other event type.
    public var rating: Double?
    /// When it happened (Unix seconds); nil: unknown, placed after the timed ones in arrival order.
    public var timestamp: Int64?

    public init(item: String, rating: Double? = nil, timestamp: Int64? = nil) {
        self.item = item
        self.rating = rating
        self.timestamp = timestamp
    }

    /// Every non-rating event is a positive; a rating is one at or above the model's threshold
    /// (docs/protocol.md: the split's `--min-rating`), as in training; every rating when the model
    /// kept every row (nil).
    public func isPositive(threshold: Float?) -> Bool {
        guard let rating, let threshold else { return true }
        return rating >= Double(threshold)
    }
}

/// Where a user stands for a model: how the retrievers place them, their positive items, and the
/// items not to recommend again.
public struct UserPlacement: Sendable, Equatable {
    /// The trained user as is, or a fold-in history; nil when the model cannot place the user
    /// (unknown and no usable events).
    public var subject: RecommendationSubject?
    /// Positive items: training history, then positive events (re-rankers and rankers read it).
    public var history: [Int]
    /// `history` plus items the user rated below the threshold (not positives, but seen).
    public var seen: [Int]

    /// The pipeline's context, leaving out the seen items (unless `excludeSeen` is false) and
    /// `requested`; nil when the user cannot be placed.
    public func context(excluding requested: [Int], excludeSeen: Bool = true) -> UserContext? {
        subject.map { UserContext(subject: $0, history: history, excluded: excludeSeen ? seen + requested : requested) }
    }
}

extension ServingModel {
    /// Who `user` is for this model, given their events since training (in timestamp order): the trained user as is,
    /// or (with positive events on items the model knows) a fold-in history of training items and
    /// event items; a user the model never saw is placed by their events alone. The server and
    /// the CLI both ask this, so they place a user the same way.
    public func place(user: String, events: [UserEvent]) -> UserPlacement {
        let threshold = trained.positiveThreshold
        let known = trained.users.index(of: user)
        var history = known.map { trainingHistory(ofUser: $0) } ?? []
        var inHistory = Set(history)
        var added = false
        var disliked: [Int] = []
        // Events in time order (stable: ties and untimed events keep their arrival order), after the
        // training history: a sequential model reads the history as a sequence.
        let ordered = events.enumerated().sorted { a, b in
            (a.element.timestamp ?? .max, a.offset) < (b.element.timestamp ?? .max, b.offset)
        }.map(\.element)
        for event in ordered {
            guard let i = trained.items.index(of: event.item) else { continue }
            if event.isPositive(threshold: threshold) {
                if inHistory.insert(i).inserted { history.append(i); added = true }
            } else {
                disliked.append(i)
            }
        }
        var seen = history
        for i in disliked where inHistory.insert(i).inserted { seen.append(i) }
        // A model that learns online learns a known user's new events itself within its publish
        // interval: its vector stands, and the events only leave their items out.
        if let u = known, !added || trained.learnsOnline { return UserPlacement(subject: .user(u), history: history, seen: seen) }
        return UserPlacement(subject: history.isEmpty ? nil : .history(history), history: history, seen: seen)
    }
}

/// A bounded map from a history to its fold-in vector, safe to share between requests. When it holds
/// `limit` histories or `itemLimit` history items in all it starts over (histories still asked for
/// come back at the cost of one fold-in each).
final class FoldInCache: @unchecked Sendable {
    private let lock = NSLock()
    private var vectors: [[Int]: [Float]] = [:]
    private var items = 0
    let limit: Int
    let itemLimit: Int

    init(limit: Int, itemLimit: Int = 20_000_000) {
        self.limit = limit
        self.itemLimit = itemLimit
    }

    func vector(for history: [Int], compute: () -> [Float]) -> [Float] {
        if let v = lock.locked({ vectors[history] }) { return v }
        let v = compute()
        lock.locked {
            if vectors.count >= limit || items + history.count > itemLimit {
                vectors.removeAll(keepingCapacity: true)
                items = 0
            }
            vectors[history] = v
            items += history.count
        }
        return v
    }
}

import AffinityANN
import AffinityData
import AffinityLinalg
import AffinityModels
import Foundation

/// Who a list is for, as every stage of the pipeline sees it.
public struct UserContext: Sendable {
    /// How the retrievers place the user: as trained, or by a history (fold-in).
    public var subject: RecommendationSubject
    /// The user's items (internal indexes), which re-rankers such as calibration read.
    public var history: [Int]
    /// Items that must not come back (seen, or asked to leave out).
    public var excluded: [Int]

    public init(subject: RecommendationSubject, history: [Int], excluded: [Int]) {
        self.subject = subject
        self.history = history
        self.excluded = excluded
    }
}

/// The first stage: a cheap source of candidates with scores.
public protocol Retriever: Sendable {
    /// The name in explanations and pipeline files.
    var name: String { get }
    /// At most `k` items for `context`, best first, none of them excluded.
    func retrieve(_ context: UserContext, k: Int) throws -> [ScoredIndex]
}

/// A trained model as a retriever, through its serving path (ANN over item embeddings, or exact
/// scoring).
public struct ModelRetriever: Retriever {
    public let name: String
    public let model: ServingModel

    public init(name: String, model: ServingModel) {
        self.name = name
        self.model = model
    }

    public func retrieve(_ context: UserContext, k: Int) throws -> [ScoredIndex] {
        try model.recommend(context.subject, k: k, excluded: context.excluded).items.map { ScoredIndex(index: $0.item, score: $0.score) }
    }
}

/// A candidate from the union of the retrievers: what each retriever said of it (nil: not among
/// its candidates).
public struct RetrievedCandidate: Sendable, Equatable {
    public var item: Int
    /// Per retriever, in pipeline order: the score and 0-based rank, or nil.
    public var sources: [(score: Float, rank: Int)?]

    public static func == (a: Self, b: Self) -> Bool {
        a.item == b.item && a.sources.count == b.sources.count
            && zip(a.sources, b.sources).allSatisfy { $0?.score == $1?.score && $0?.rank == $1?.rank }
    }
}

/// The second stage: scores the union of the retrievers' candidates.
public protocol Ranker: Sendable {
    var name: String { get }
    func rank(_ candidates: [RetrievedCandidate], context: UserContext) -> [Candidate]
}

/// Reciprocal rank fusion (Cormack, Clarke & Büttcher 2009): score = Σ weight_r / (k0 + rank_r + 1)
/// over the retrievers that found the item. Needs no training and no comparable scores, so it is
/// the default way to merge retrievers of different kinds; with one retriever it keeps its order.
public struct ReciprocalRankFusion: Ranker {
    public let name = "rrf"
    public let k0: Double
    public let weights: [Double]

    public init(k0: Double = 60, weights: [Double]) {
        self.k0 = k0
        self.weights = weights
    }

    public func rank(_ candidates: [RetrievedCandidate], context: UserContext) -> [Candidate] {
        var out = candidates.map { c -> Candidate in
            var score = 0.0
            for (r, source) in c.sources.enumerated() {
                if let source { score += weights[r] / (k0 + Double(source.rank) + 1) }
            }
            return Candidate(item: c.item, score: Float(score))
        }
        out.sort { ScoredIndex.ranksBefore($0.score, $0.item, $1.score, $1.item) }
        return out
    }
}

/// The one-retriever ranking: the retriever's own order and scores, unchanged (a model served
/// through the pipeline answers exactly as the model does).
public struct RetrieverOrder: Ranker {
    public let name = "retriever"
    public init() {}

    public func rank(_ candidates: [RetrievedCandidate], context: UserContext) -> [Candidate] {
        candidates.compactMap { c in c.sources.first!.map { (c.item, $0) } }
            .sorted { $0.1.rank < $1.1.rank }
            .map { Candidate(item: $0.0, score: $0.1.score) }
    }
}

/// Retrieve -> rank -> re-rank. Several retrievers, each with its own quota of candidates, are
/// merged into one union (an item found by several keeps what each said); a ranker scores the
/// union; the re-rankers shape the final list. Immutable, so requests share one instance and a
/// server swaps pipelines by swapping the reference.
public final class Pipeline: Sendable {
    public let retrievers: [(retriever: any Retriever, quota: Int)]
    public let ranker: any Ranker
    public let rerankers: ReRankChain
    /// The items every retriever knows, in index order (the first retriever's vocabulary).
    public let items: IDVocabulary
    /// What the pipeline is, for registries and logs: the model type for one model, else "pipeline".
    public let kind: String

    /// Retrievers must share one item vocabulary (the same IDs in the same order): their indexes
    /// are merged as they are.
    public init(retrievers: [(retriever: any Retriever, quota: Int)], ranker: any Ranker, rerankers: ReRankChain, items: IDVocabulary,
                kind: String = "pipeline") {
        precondition(!retrievers.isEmpty, "a pipeline needs a retriever")
        precondition(retrievers[0].retriever is ModelRetriever, "a pipeline's first retriever must be a ModelRetriever: vocabularies, fallback and explanations come from its model")
        self.retrievers = retrievers
        self.ranker = ranker
        self.rerankers = rerankers
        self.items = items
        self.kind = kind
    }

    /// One model as a pipeline: its serving path, its order and scores, no re-ranking. This is how
    /// `affinity serve --model` answers, so a model and a pipeline file take one path.
    /// With `rerankers`, they choose the list out of the model's best `quota` items.
    /// Without re-rankers it retrieves exactly the k items asked for (quota 1: "at least k"), so
    /// an ANN search runs with the model's own breadth, as `ServingModel.recommend` does.
    public static func single(_ model: ServingModel, quota: Int = 1, rerankers: ReRankChain = ReRankChain([])) -> Pipeline {
        Pipeline(retrievers: [(ModelRetriever(name: "\(model.modelType)#0", model: model), quota)],
                 ranker: RetrieverOrder(), rerankers: rerankers, items: model.trained.items, kind: model.modelType)
    }

    /// The first retriever's model: the vocabularies, the popular fallback, similar items and
    /// explanations come from it.
    public var primary: ServingModel { (retrievers[0].retriever as! ModelRetriever).model }

    /// How the lists are made: the model's own path when one retriever's list is ranked without a
    /// learned ranker, else `.pipeline`.
    public var retrievalPath: RetrievalPath { retrievers.count == 1 && !(ranker is LearnedRanker) ? primary.retrievalPath : .pipeline }

    /// The merged candidates of every retriever; each contributes its quota, and at least `k`.
    public func retrieve(_ context: UserContext, atLeast k: Int = 0) throws -> [RetrievedCandidate] {
        var position: [Int: Int] = [:]
        var out: [RetrievedCandidate] = []
        for (r, stage) in retrievers.enumerated() {
            for (rank, found) in try stage.retriever.retrieve(context, k: max(stage.quota, k)).enumerated() {
                if let p = position[found.index] {
                    out[p].sources[r] = (found.score, rank)
                } else {
                    position[found.index] = out.count
                    var sources = [(score: Float, rank: Int)?](repeating: nil, count: retrievers.count)
                    sources[r] = (found.score, rank)
                    out.append(RetrievedCandidate(item: found.index, sources: sources))
                }
            }
        }
        return out
    }

    /// The final `k` items for `context`, best first. With `explain`, explainable primary models
    /// (EASE, item-kNN, iALS) say which history items weigh most in each item's score.
    public func recommend(_ context: UserContext, k: Int, explain: Bool = false, explanationSize: Int = 3) throws -> [Candidate] {
        guard k > 0 else { throw ModelError.invalidK(k) }
        let ranked = ranker.rank(try retrieve(context, atLeast: k), context: context)
        var out = rerankers.isEmpty ? Array(ranked.prefix(k)) : rerankers.apply(ranked, history: context.history, k: k)
        if explain {
            for (n, e) in try primary.explanations(of: out.map(\.item), for: context.subject, size: explanationSize).enumerated() {
                out[n].because = e.because
                out[n].persona = e.persona
            }
        }
        return out
    }
}

/// A pipeline as a JSON file (docs/pipeline.md):
///
/// ```json
/// {"retrievers": [{"model": "models/ease", "k": 100}, {"model": "models/ials", "k": 100}],
///  "ranker": {"type": "rrf", "k0": 60, "weights": [1, 1]},
///  "rerank": ["mmr:lambda=0.8", "popularity-cap:maxHeadShare=0.6"]}
/// ```
///
/// Model paths are relative to the file's folder unless absolute.
public struct PipelineFile: Codable, Sendable, Equatable {
    public struct RetrieverEntry: Codable, Sendable, Equatable {
        public var model: String
        /// Candidates this retriever contributes.
        public var k: Int?
        /// An index file over the model's item embeddings (else built, as the server does).
        public var index: String?
        /// HNSW search breadth for this retriever (default: the server's `--ef`, 64).
        public var ef: Int?
        /// Score every item instead of searching an index (default: the server's `--exact`).
        public var exact: Bool?
        public init(model: String, k: Int? = nil, index: String? = nil, ef: Int? = nil, exact: Bool? = nil) {
            self.model = model
            self.k = k
            self.index = index
            self.ef = ef
            self.exact = exact
        }
    }

    /// The ranking stage: reciprocal rank fusion, or a learned ranker (`affinity pipeline tune`).
    public enum RankerType: String, Codable, Sendable, CaseIterable {
        case rrf, neural
    }

    public struct RankerEntry: Codable, Sendable, Equatable {
        public var type: RankerType
        /// rrf: the constant of 1 / (k0 + rank).
        public var k0: Double?
        /// rrf: one weight per retriever.
        public var weights: [Double]?
        /// neural: the ranker file (`NeuralRanker.save`), relative to the pipeline file's folder.
        public var model: String?
        /// neural: several ranker files, an ensemble (instead of `model`).
        public var models: [String]?
        public init(type: RankerType, k0: Double? = nil, weights: [Double]? = nil, model: String? = nil, models: [String]? = nil) {
            self.type = type
            self.k0 = k0
            self.weights = weights
            self.model = model
            self.models = models
        }
    }

    public var retrievers: [RetrieverEntry]
    public var ranker: RankerEntry?
    public var rerank: [String]?

    public init(retrievers: [RetrieverEntry], ranker: RankerEntry? = nil, rerank: [String]? = nil) {
        self.retrievers = retrievers
        self.ranker = ranker
        self.rerank = rerank
    }

    public static let defaultQuota = 100

    /// Reads and checks a pipeline file: every error names the file and the field.
    public static func read(_ path: String) throws -> PipelineFile {
        guard case .success(let data) = RegularFile.contents(atPath: path) else {
            throw PipelineError.invalid(path: path, field: "", reason: "cannot be read (no such regular file)")
        }
        do {
            return try JSONDecoder().decode(PipelineFile.self, from: data)
        } catch let DecodingError.keyNotFound(key, context) {
            throw PipelineError.invalid(path: path, field: fieldName(context.codingPath + [key]), reason: "missing")
        } catch let DecodingError.typeMismatch(_, context) {
            throw PipelineError.invalid(path: path, field: fieldName(context.codingPath), reason: "has the wrong type")
        } catch let DecodingError.valueNotFound(_, context) {
            throw PipelineError.invalid(path: path, field: fieldName(context.codingPath), reason: "is null")
        } catch let DecodingError.dataCorrupted(context) where !context.codingPath.isEmpty {
            // An enum's unknown value (ranker.type).
            let known = context.codingPath.last?.stringValue == "type" ? "; known: \(RankerType.allCases.map(\.rawValue).joined(separator: ", "))" : ""
            throw PipelineError.invalid(path: path, field: fieldName(context.codingPath), reason: "has an unknown value\(known)")
        } catch {
            throw PipelineError.invalid(path: path, field: "", reason: "is not a pipeline JSON object (\(error))")
        }
    }

    /// `retrievers[0].model` from a decoder's coding path.
    static func fieldName(_ path: [any CodingKey]) -> String {
        var out = ""
        for key in path {
            if let i = key.intValue { out += "[\(i)]" } else { out += (out.isEmpty ? "" : ".") + key.stringValue }
        }
        return out
    }

    /// Loads the models and builds the pipeline. `catalog` gives re-rankers categories when the
    /// first model has none.
    public func build(relativeTo folder: String, path: String, catalog: ItemCatalog? = nil,
                      load: (RetrieverEntry) throws -> ServingModel = PipelineFile.serve) throws -> Pipeline {
        guard !retrievers.isEmpty else { throw PipelineError.invalid(path: path, field: "retrievers", reason: "lists no retriever") }
        func resolve(_ p: String) -> String { p.hasPrefix("/") ? p : (folder as NSString).appendingPathComponent(p) }
        var stages: [(retriever: any Retriever, quota: Int)] = []
        var first: ServingModel?
        for (n, entry) in retrievers.enumerated() {
            let quota = entry.k ?? Self.defaultQuota
            guard quota > 0 && quota <= 100_000 else {
                throw PipelineError.invalid(path: path, field: "retrievers[\(n)].k", reason: "must be in 1...100000, got \(quota)")
            }
            if let ef = entry.ef, !(1...100_000).contains(ef) {
                throw PipelineError.invalid(path: path, field: "retrievers[\(n)].ef", reason: "must be in 1...100000, got \(ef)")
            }
            let model: ServingModel
            do {
                model = try load(RetrieverEntry(model: resolve(entry.model), k: entry.k, index: entry.index.map(resolve), ef: entry.ef, exact: entry.exact))
            } catch {
                throw PipelineError.invalid(path: path, field: "retrievers[\(n)].model", reason: "\(error)")
            }
            if let first, first.trained.items.ids != model.trained.items.ids || first.trained.users.ids != model.trained.users.ids {
                throw PipelineError.invalid(path: path, field: "retrievers[\(n)].model",
                                            reason: "its users or items differ from retrievers[0]'s (\(model.trained.users.count) x \(model.trained.items.count) vs \(first.trained.users.count) x \(first.trained.items.count)): retrievers must be trained on the same split")
            }
            first = first ?? model
            stages.append((ModelRetriever(name: "\(model.modelType)#\(n)", model: model), quota))
        }
        let trained = first!.trained
        let merged = trained.catalog.map { $0.filling(from: catalog) } ?? catalog
        let profile = ItemProfile(items: trained.items, genres: merged?.genres, history: trained.model.interactions,
                                  vectors: (trained.model as? any EmbeddingRecommender)?.itemEmbeddings,
                                  lastSeen: merged?.lastSeen)
        let rankerEntry = ranker ?? RankerEntry(type: .rrf)
        let rankStage: any Ranker
        switch rankerEntry.type {
        case .rrf:
            let weights = rankerEntry.weights ?? [Double](repeating: 1, count: stages.count)
            guard weights.count == stages.count, weights.allSatisfy({ $0.isFinite && $0 >= 0 }) else {
                throw PipelineError.invalid(path: path, field: "ranker.weights", reason: "needs one non-negative weight per retriever (\(stages.count))")
            }
            let k0 = rankerEntry.k0 ?? 60
            guard k0.isFinite && k0 >= 0 else { throw PipelineError.invalid(path: path, field: "ranker.k0", reason: "must be a non-negative number") }
            rankStage = ReciprocalRankFusion(k0: k0, weights: weights)
        case .neural:
            let field = rankerEntry.model == nil && rankerEntry.models != nil ? "ranker.models" : "ranker.model"
            let files = rankerEntry.model.map { [$0] } ?? rankerEntry.models ?? []
            guard !files.isEmpty, rankerEntry.model == nil || rankerEntry.models == nil else {
                throw PipelineError.invalid(path: path, field: field, reason: "missing (the ranker file a neural ranker reads: model, or models for an ensemble)")
            }
            do {
                let models = try files.map { file -> NeuralRanker in
                    let model = try NeuralRanker.load(from: resolve(file))
                    guard model.itemCount == trained.items.count else {
                        throw ModelError.invalidSetting(name: "ranker", reason: "\(file) knows \(model.itemCount) items, the retrievers \(trained.items.count)")
                    }
                    return model
                }
                rankStage = try LearnedRanker(models: models, features: CandidateFeatures(retrievers: stages.map(\.retriever.name), profile: profile))
            } catch {
                throw PipelineError.invalid(path: path, field: field, reason: "\(error)")
            }
        }
        var chain: [any ReRanker] = []
        for (n, spec) in (rerank ?? []).enumerated() {
            do {
                chain.append(try ReRankerSpec(parsing: spec).make(profile: profile, items: trained.items))
            } catch {
                throw PipelineError.invalid(path: path, field: "rerank[\(n)]", reason: "\(error)")
            }
        }
        return Pipeline(retrievers: stages, ranker: rankStage, rerankers: ReRankChain(chain), items: trained.items, kind: "pipeline")
    }

    /// A retriever's model as `affinity serve` serves it: its index file, or HNSW built over its
    /// item embeddings (searched with `ef`), or exact scoring.
    public static func serve(_ entry: RetrieverEntry) throws -> ServingModel {
        let exact = entry.exact ?? false
        return try ServingModel(trained: try TrainedModel.load(from: entry.model), index: exact ? nil : try entry.index.map { try IndexFile.load($0) },
                                indexPath: entry.index ?? "index", buildIndex: !exact, searchParameters: SearchParameters(ef: entry.ef ?? 64))
    }

    /// Reads and builds the pipeline in `path`; `load` serves each retriever's model folder (and
    /// index file), by default as `affinity serve` does.
    public static func load(_ path: String, catalog: ItemCatalog? = nil,
                            load: ((RetrieverEntry) throws -> ServingModel)? = nil) throws -> Pipeline {
        let folder = (path as NSString).deletingLastPathComponent
        let file = try read(path)
        if let load { return try file.build(relativeTo: folder.isEmpty ? "." : folder, path: path, catalog: catalog, load: load) }
        return try file.build(relativeTo: folder.isEmpty ? "." : folder, path: path, catalog: catalog)
    }
}

/// A pipeline file that cannot be used: the file, the field and why.
public enum PipelineError: Error, CustomStringConvertible, Equatable {
    case invalid(path: String, field: String, reason: String)

    public var description: String {
        switch self {
        case .invalid(let path, let field, let reason): return field.isEmpty ? "\(path): \(reason)" : "\(path): \(field): \(reason)"
        }
    }
}

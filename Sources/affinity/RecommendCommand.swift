import AffinityData
import AffinityLinalg
import AffinityModels
import AffinityPipeline
import ArgumentParser
import Foundation

/// What happens when `recommend` is asked about a user the model never saw.
enum ColdStart: String, ExpressibleByArgument, CaseIterable {
    case error, popular
}

struct RecommendedItem: Encodable {
    var rank: Int
    var item: String
    var score: Float
    var title: String?
    var genres: [String]?
    /// What the re-rankers did to this item (with --rerank).
    var notes: [String]?
}

/// The list with raw IDs and titles. A score that is NaN or infinite is an error, never a printed
/// `nan` with exit code 0 (model files with such weights are refused on load; this guards the rest).
func describe(_ list: [ScoredItem], model: TrainedModel) throws -> [RecommendedItem] {
    if let bad = list.first(where: { !$0.score.isFinite }) {
        throw CommandError("the model scored item '\(model.items[bad.index])' as \(bad.score): its weights are not usable")
    }
    return list.enumerated().map { r, s in
        let id = model.items[s.index]
        return RecommendedItem(rank: r + 1, item: id, score: s.score, title: model.catalog?.titles[id], genres: model.catalog?.genres[id])
    }
}

/// The list as a table: rank, item, score, title, genres (`-` where the model has no catalog), the
/// same columns whatever the model, so a script can cut them.
func printList(_ items: [RecommendedItem]) {
    let withNotes = items.contains { $0.notes != nil }
    var table = TextTable([.init(name: "rank", rightAligned: true), .init(name: "item"), .init(name: "score", rightAligned: true),
                           .init(name: "title"), .init(name: "genres")] + (withNotes ? [.init(name: "re-ranking")] : []))
    table.rows = items.map { it in
        [String(it.rank), it.item, String(format: "%.4f", it.score), it.title ?? "-",
         it.genres.flatMap { $0.isEmpty ? nil : $0.joined(separator: "|") } ?? "-"]
            + (withNotes ? [it.notes.flatMap { $0.isEmpty ? nil : $0.joined(separator: "; ") } ?? "-"] : [])
    }
    print(table.render())
    if items.isEmpty { print("(no items)") }
}

struct RecommendCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "recommend",
        abstract: "Top-k items for a user of a saved model, or for a history of items (fold-in); seen items excluded."
    )

    @Option(name: .long, help: "Model folder.") var model: String?
    @Option(name: .long, help: "A pipeline file (docs/pipeline.md) instead of one model.") var pipeline: String?
    @Option(name: .long, help: "Raw user ID.") var user: String?
    @Option(name: .long, help: "Item IDs a user interacted with, comma-separated (a user the model never saw; as POST /v1/recommendations).")
    var history: String?
    @Option(name: .shortAndLong, parsing: .unconditional, help: "Number of items.") var k = 10
    @Option(name: .long, help: "Item IDs to leave out, comma-separated.") var exclude: String?
    @Option(name: .long, help: "Unknown user: error | popular (recommend popular items and say so).") var coldStart: ColdStart = .error
    @Option(name: .long, help: ArgumentHelp("A re-ranking stage, applied in order (repeatable): \(ReRankerSpec.names.joined(separator: ", ")), e.g. mmr:lambda=0.5.",
                                            valueName: "NAME[:key=value,...]")) var rerank: [String] = []
    @Option(name: .long, help: "Candidates handed to the re-rankers.") var pool = 100
    @Flag(name: .long, help: "Print JSON on stdout.") var json = false

    func validate() throws {
        guard k > 0 else { throw ValidationError("-k must be positive, got \(k)") }
        guard (user == nil) != (history == nil) else { throw ValidationError("give exactly one of --user ID or --history ID,ID,...") }
        guard pool > 0 else { throw ValidationError("--pool must be positive, got \(pool)") }
        guard (model == nil) != (pipeline == nil) else { throw ValidationError("give exactly one of --model MODEL or --pipeline FILE") }
        if pipeline != nil && !rerank.isEmpty { throw ValidationError("--rerank applies to a model; a pipeline file lists its own re-rankers") }
    }

    /// A model and a pipeline file take one path: a model is a one-model pipeline (exact scoring,
    /// as `evaluate` ranks), with the --rerank stages after it.
    func run() throws {
        let built: Pipeline
        if let pipeline {
            built = try PipelineFile.load(pipeline)
        } else {
            let trained = try TrainedModel.load(from: model!)
            let stages = try rerank.map { try ReRankerSpec(parsing: $0).make(profile: itemProfile(trained, catalog: trained.catalog), items: trained.items) }
            // With re-rankers, they choose the k items out of a larger pool.
            built = .single(try ServingModel(trained: trained, buildIndex: false), quota: stages.isEmpty ? k : max(k, pool),
                            rerankers: ReRankChain(stages))
        }
        let serving = built.primary, trained = serving.trained
        let whose = pipeline == nil ? "the model" : "the pipeline's models"
        // Exclusions the model does not know are ignored, as the HTTP API ignores them; say so.
        let requested = exclude.map { $0.split(separator: ",").map(String.init) } ?? []
        let unknown = requested.filter { trained.items.index(of: $0) == nil }
        if !unknown.isEmpty { Console.note("note: ignoring exclude IDs \(whose) \(pipeline == nil ? "does" : "do") not know: \(unknown.prefix(10).joined(separator: ", "))") }
        let excluded = requested.compactMap { trained.items.index(of: $0) }
        var context: UserContext?
        if let user {
            // Placed as the server places a user without events.
            context = serving.place(user: user, events: []).context(excluding: excluded)
            if context == nil && coldStart != .popular {
                throw CommandError("unknown user '\(user)' (not in \(whose)); --cold-start popular recommends popular items instead, --history ID,ID folds a history in")
            }
        } else {
            let ids = history!.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            let items = try ids.map { id in
                guard let i = trained.items.index(of: id) else { throw CommandError("--history: unknown item '\(id)' (not in \(whose))") }
                return i
            }
            // As for an unknown user: popular items only when asked for.
            if items.isEmpty && coldStart != .popular {
                throw CommandError("--history is empty; add --cold-start popular for the most popular items")
            }
            context = items.isEmpty ? nil : UserContext(subject: .history(items), history: items, excluded: items + excluded)
        }
        let list: [Candidate]
        if let context {
            list = try built.recommend(context, k: k)
        } else {
            if let user { Console.note("note: user '\(user)' is not in \(whose); recommending the most popular items instead") }
            // The popular items go through the re-rankers as a model's list would.
            let pool = built.rerankers.isEmpty ? k : max(k, built.retrievers[0].quota)
            let popular = try serving.popular(k: pool, excluded: excluded)
            list = built.rerankers.isEmpty ? popular : built.rerankers.apply(popular, history: [], k: k)
        }
        // A sequential model reads at most maxLength items of a history: say so when it was cut.
        var note: String? = nil
        if case .history(let h)? = context?.subject, let said = serving.truncationNote(history: h) {
            note = said
            if !json { Console.note("note: " + said) }
        }
        var described = try describe(list.map { ScoredItem(index: $0.item, score: $0.score) }, model: trained)
        for n in described.indices where !built.rerankers.isEmpty { described[n].notes = list[n].notes }
        if json {
            struct Output: Encodable {
                var user: String?; var history: [String]?; var model: String?; var pipeline: String?; var fallback: String?; var note: String?
                var items: [RecommendedItem]
            }
            try printJSON(Output(user: user, history: history.map { $0.split(separator: ",").map(String.init) },
                                 model: pipeline == nil ? trained.modelType : nil, pipeline: pipeline,
                                 fallback: context == nil ? "popular" : nil, note: note, items: described))
        } else {
            printList(described)
        }
    }
}

struct SimilarCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "similar",
        abstract: "Items most similar to an item, according to a saved model."
    )

    /// What "similar" means.
    enum Similarity: String, ExpressibleByArgument, CaseIterable {
        /// The model's own item similarity (its item vectors, or its neighbour lists).
        case model
        /// Cosine similarity of the items' text vectors (the sentence encoder on the model's item
        /// text, or --item-vectors): what "looks alike" means.
        case text
    }

    @Option(name: .long, help: "Model folder.") var model: String
    @Option(name: .long, help: "Raw item ID.") var item: String
    @Option(name: .shortAndLong, parsing: .unconditional, help: "Number of items.") var k = 10
    @Option(name: .long, help: "model (the model's similarity) or text (cosine of item text vectors).") var by: Similarity = .model
    @Option(name: .long, help: "With --by text: item metadata or text (default: the model's catalog).") var items: String?
    @Option(name: .long, help: "With --by text: item vectors (.npy with PATH.ids, or TSV) instead of embedding the text.") var itemVectors: String?
    @Option(name: .long, help: "With --by text: the sentence encoder's folder (default: $AFFINITY_TEXT_MODEL).") var textModel: String?
    @Flag(name: .long, help: "Print JSON on stdout.") var json = false

    func validate() throws {
        guard k > 0 else { throw ValidationError("-k must be positive, got \(k)") }
        if by == .model && (items != nil || itemVectors != nil || textModel != nil) {
            throw ValidationError("--items, --item-vectors and --text-model go with --by text")
        }
    }

    func run() throws {
        let trained = try TrainedModel.load(from: model)
        let found: [ScoredItem]
        switch by {
        case .model:
            found = try trained.similar(item: item, k: k)
        case .text:
            guard let index = trained.items.index(of: item) else { throw CommandError("unknown item \(item)") }
            let vectors = try itemVectors.map { try readItemVectors($0, items: trained.items) }
                ?? embedItemTexts(try items.map { try ItemCatalog.read(path: $0) } ?? trained.catalog, items: trained.items, textModel: textModel)
            let query = Matrix(rows: 1, columns: vectors.columns, values: (0..<vectors.columns).map { vectors[index, $0] })
            guard query.values.contains(where: { $0 != 0 }) else { throw CommandError("item \(item) has no text to compare (no title in the item file, or no row in the vectors)") }
            found = ExactSearch.search(queries: query, base: vectors, k: k + 1, metric: .cosine)[0]
                .filter { $0.index != index }.prefix(k).map { ScoredItem(index: $0.index, score: $0.score) }
        }
        let list = try describe(found, model: trained)
        let source = by == .text ? "text similarity" : trained.modelType
        if json {
            struct Output: Encodable { var item: String; var title: String?; var model: String; var by: String; var similar: [RecommendedItem] }
            try printJSON(Output(item: item, title: trained.catalog?.titles[item], model: trained.modelType, by: by.rawValue, similar: list))
        } else {
            print("items similar to \(item)" + (trained.catalog?.titles[item].map { " (\($0))" } ?? "") + ", by \(source):")
            printList(list)
        }
    }
}

import AffinityData
import AffinityEval
import AffinityLinalg
import AffinityModels
import AffinityNN
import AffinityPipeline
import ArgumentParser
import Foundation

struct PipelineCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pipeline",
        abstract: "Build retrieve -> rank pipelines (docs/pipeline.md).",
        subcommands: [PipelineTuneCommand.self]
    )
}

/// `affinity pipeline tune`: the default pipeline end to end from a split alone. Every choice is made
/// on a validation split carved from train; test is not read.
struct PipelineTuneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tune",
        abstract: "Train retrievers and a learned ranker on a validation split carved from train; write DIR/pipeline.json.",
        discussion: """
        Each user's train positives are split again (holdout, --validation-fraction,
        --seed). The retrievers are fitted on the rest; their candidates for each
        user (-k per retriever, merged) are labelled by the held-out items. A
        retriever setting given as a grid (ease:lambda=200|500) is chosen first,
        each point scored alone on those items. The users are divided once more:
        the ranker trains on the lists of most of them and is scored (NDCG@20 of
        the lists, per docs/protocol.md) on the others after each epoch (the best
        epoch is kept). One ranker per --losses entry; the best of them, the rank
        fusion and each retriever alone compete on that score. The retrievers are
        then refitted on the full train and saved in DIR with the chosen ranker
        and DIR/pipeline.json. test.tsv is never read: evaluate the result once
        with affinity evaluate --pipeline DIR/pipeline.json --split SPLIT.
        """
    )

    @Option(name: .long, help: "Split folder.") var split: String
    @Option(name: .long, help: "Output folder.") var out: String
    @Option(name: .long, help: ArgumentHelp("A retriever, NAME[:key=value,...] (repeatable; default ease:lambda=200|500|1000 and ials:factors=64|128); key=v1|v2|... is a grid, chosen on validation.", valueName: "NAME[:k=v,...]"))
    var retriever: [String] = []
    @Option(name: .long, help: "Item metadata (genres for the ranker's features and the re-rankers; default: the split's items.tsv).") var items: String?
    @Option(name: .shortAndLong, help: "Candidates per retriever.") var k = 100
    @Option(name: .long, help: "Ranker losses to train, comma-separated (\(RankingLoss.allCases.map(\.rawValue).joined(separator: ", "))), or all.")
    var losses = "all"
    @Option(name: .customLong("set"), help: "A ranker setting, key=value (repeatable; `affinity pipeline tune --help` lists none: see docs/pipeline.md).")
    var settings: [String] = []
    @Option(name: .long, help: "Share of each user's train positives held out to label the candidates.") var validationFraction = 0.2
    @Option(name: .long, help: "Share of those users whose lists score the ranker (never trained on).") var rankerValidation = 0.2
    @Option(name: .long, help: "Seed of the carved split and of the user division.") var seed: UInt64 = 7
    @Option(name: .long, help: "Also write the candidate features as TSV here (ranker-train.tsv, ranker-valid.tsv) for other learners.")
    var writeFeatures: String?
    @Flag(name: .long, help: "Also write a pipeline file per alternative (pipeline-LOSS.json, pipeline-rrf.json, pipeline-NAME.json).")
    var keepAll = false
    @Flag(name: .long, help: "Replace DIR's files if they exist.") var force = false

    /// Catalogues up to this many items are retrieved by exact scoring, larger ones by HNSW.
    static let exactScoringLimit = 20_000

    /// EASE and iALS, each with a small grid chosen on validation.
    static let defaultRetrievers = ["ease:lambda=200|500|1000", "ials:factors=64|128"]

    struct RetrieverSpec {
        var name: String
        var settings: [String: String]
    }

    func retrieverSpecs() throws -> [RetrieverSpec] {
        try (retriever.isEmpty ? Self.defaultRetrievers : retriever).map { text in
            let parts = text.split(separator: ":", maxSplits: 1)
            guard let first = parts.first else { throw ValidationError("--retriever needs a model name, e.g. ease or ease:lambda=200|500") }
            let name = String(first)
            guard ModelRegistry.type(named: name) != nil else {
                throw ValidationError("--retriever \(text): unknown model '\(name)'; known: \(ModelRegistry.names.joined(separator: ", "))")
            }
            let settings = parts.count > 1 ? try parseSettings(parts[1].split(separator: ",").map(String.init)) : [:]
            for (key, value) in settings where value.split(separator: "|", omittingEmptySubsequences: false).contains(where: \.isEmpty) {
                throw ValidationError("--retriever \(text): '\(key)' needs a value (v or v1|v2|...), got '\(value)'")
            }
            return RetrieverSpec(name: name, settings: settings)
        }
    }

    func lossList() throws -> [RankingLoss] {
        if losses == "all" { return RankingLoss.allCases }
        return try losses.split(separator: ",").map { name in
            guard let loss = RankingLoss(rawValue: String(name)) else {
                throw ValidationError("--losses: unknown loss '\(name)'; known: \(RankingLoss.allCases.map(\.rawValue).joined(separator: ", ")), all")
            }
            return loss
        }
    }

    func validate() throws {
        _ = try retrieverSpecs()
        _ = try lossList()
        guard k > 0 && k <= 100_000 else { throw ValidationError("-k must be in 1...100000, got \(k)") }
        guard validationFraction > 0 && validationFraction < 1 else { throw ValidationError("--validation-fraction must be in (0, 1)") }
        guard rankerValidation > 0 && rankerValidation < 1 else { throw ValidationError("--ranker-validation must be in (0, 1)") }
        _ = try NeuralRanker.Configuration().applying(try parseSettings(settings))
    }

    func run() throws {
        var specs = try retrieverSpecs()
        let rankerSettings = try NeuralRanker.Configuration().applying(try parseSettings(settings))
        if FileManager.default.fileExists(atPath: (out as NSString).appendingPathComponent("pipeline.json")) && !force {
            throw CommandError("\(out)/pipeline.json already exists (pass --force to replace it)")
        }
        let folder = try SplitFolder.read(split)
        // Small catalogues are scored exactly, so the candidates, hence the ranker's training lists,
        // are the same in every run (at 3,706 items exact scoring served as fast as HNSW; the
        // 20,000 bound is a choice, not a measurement).
        let exact = folder.train.items.count <= Self.exactScoringLimit
        let catalog = try items.map { try ItemCatalog.read(path: $0) } ?? folder.catalog
        let clock = Stopwatch()

        // 1. The carved split: retrievers fitted on its train, candidates labelled by its test.
        let inner = try Splitter.split(folder.train, settings: SplitSettings(strategy: .holdout, testFraction: validationFraction,
                                                                             seed: seed, minRating: nil, minUserPositives: 0))
        let carve = SplitFolder(path: folder.path + " (validation carved from train)", train: inner.train, test: inner.test)
        print("pipeline tune on \(folder.name): validation = \(Int(validationFraction * 100))% of each user's train positives (seed \(seed)), \(inner.test.count) rows")
        var stages: [(retriever: any Retriever, quota: Int)] = []
        var carveModels: [TrainedModel] = []
        for (n, spec) in specs.enumerated() {
            // A grid (key=v1|v2): each point fitted on the carved train and scored alone (NDCG@20 on
            // the held-out items); the best point is the retriever's setting from here on.
            var points: [[String: String]] = [[:]]
            for (key, value) in spec.settings.sorted(by: { $0.key < $1.key }) {
                points = points.flatMap { p in value.split(separator: "|").map { p.merging([key: String($0)]) { _, b in b } } }
            }
            var best: (trained: TrainedModel, settings: [String: String], ndcg: Double)?
            for point in points {
                let (trained, seconds) = try trainOnSplit(carve, model: spec.name, settings: point, catalog: catalog)
                var line = "  retriever \(n): \(spec.name) \(settingsLabel(point)) fitted in \(String(format: "%.2f", seconds)) s"
                var ndcg = 0.0
                if points.count > 1 {
                    ndcg = try evaluate(trained, on: carve, evaluator: try Evaluator(cutoffs: [20]), target: .test).0.metrics(at: 20)!.ndcg
                    line += String(format: ", validation NDCG@20 %.4f", ndcg)
                }
                print(line)
                if best == nil || ndcg > best!.ndcg { best = (trained, point, ndcg) }
            }
            let trained = best!.trained
            specs[n].settings = best!.settings
            if points.count > 1 { print("  retriever \(n): chose \(settingsLabel(best!.settings))") }
            carveModels.append(trained)
            stages.append((ModelRetriever(name: "\(spec.name)#\(n)", model: try ServingModel(trained: trained, buildIndex: !exact)), k))
        }
        let carveTrained = carveModels[0]
        let carvePipeline = Pipeline(retrievers: stages, ranker: ReciprocalRankFusion(weights: [Double](repeating: 1, count: stages.count)),
                                     rerankers: ReRankChain([]), items: carveTrained.items)
        let data = try EvaluationData(split: carve, users: carveTrained.users, items: carveTrained.items, target: .test)
        let carveProfile = itemProfile(carveTrained, catalog: carveTrained.catalog ?? catalog)
        let features = CandidateFeatures(retrievers: stages.map(\.retriever.name), profile: carveProfile)

        // Candidate lists in the index space of the full train (the ranker's item embeddings are
        // those of the final pipeline).
        let fullIndex = (0..<carveTrained.items.count).map { folder.train.items.index(of: carveTrained.items[$0])! }
        let users = data.evaluatedUsers.count
        Console.progress("retrieving candidates for \(users) users...")
        let results = FirstError()
        let collected = LockedArray<(RankingList, [RetrievedCandidate])>(count: users)
        Parallelism.forEachChunk((users + 63) / 64) { c in
            for p in (c * 64)..<min(users, (c + 1) * 64) {
                let user = data.evaluatedUsers[p]
                let history = data.history.row(user).map { Int($0) }
                do {
                    let candidates = try carvePipeline.retrieve(UserContext(subject: .user(user), history: history, excluded: history))
                    var list = features.list(candidates, history: history, relevant: Set(data.testItems[p].map { Int($0) }))
                    list.items = list.items.map { fullIndex[$0] }
                    list.history = list.history.map { fullIndex[$0] }
                    collected.set(p, (list, candidates))
                } catch { results.set(error) }
            }
        }
        Console.clearProgress()
        if let error = results.error { throw error }
        let lists = collected.values.map { $0!.0 }, candidates = collected.values.map { $0!.1 }
        let found = lists.reduce(0) { $0 + $1.labels.filter { $0 > 0 }.count }, relevant = lists.reduce(0) { $0 + $1.relevant }
        print("  \(users) users, \(lists.reduce(0) { $0 + $1.items.count }) candidates; the retrievers found \(found) of \(relevant) held-out items (\(String(format: "%.1f", 100 * Double(found) / Double(max(1, relevant))))%)")

        // 2. Users whose lists train the ranker, and users whose lists score every alternative.
        var g = SeededGenerator(seed: seed, stream: 31)
        let order = g.permutation(users)
        let validCount = max(1, Int((Double(users) * rankerValidation).rounded()))
        let validPositions = Array(order.prefix(validCount)).sorted(), trainPositions = Array(order.dropFirst(validCount)).sorted()
        let isValid = Set(validPositions)
        let evaluator = try Evaluator(cutoffs: [10, 20], keepPerUser: true)
        /// NDCG@20 (and Recall@20) of lists for the validation users, by the project's evaluator.
        func score(_ list: @escaping @Sendable (Int) -> [Int]) -> (ndcg: Double, recall: Double) {
            let report = evaluator.evaluate(data) { user in list(user) }
            let perUser = report.perUser!
            let n = Double(validPositions.count)
            return (validPositions.reduce(0) { $0 + perUser[$1].ndcg[1] } / n, validPositions.reduce(0) { $0 + perUser[$1].recall[1] } / n)
        }
        let positionOf = Dictionary(uniqueKeysWithValues: data.evaluatedUsers.enumerated().map { ($1, $0) })
        let carveOf = Dictionary(uniqueKeysWithValues: fullIndex.enumerated().map { ($1, $0) })
        func listsFor(_ ranked: @escaping @Sendable (Int) -> [Int]) -> @Sendable (Int) -> [Int] {
            { user in
                guard let p = positionOf[user], isValid.contains(p) else { return [] }
                return ranked(p)
            }
        }

        struct Alternative { var name: String; var ndcg: Double; var recall: Double; var rankers: [NeuralRanker]; var file: PipelineFile.RankerEntry?; var only: Int? }
        var alternatives: [Alternative] = []
        for r in stages.indices {
            let s = score(listsFor { p in candidates[p].filter { $0.sources[r] != nil }.sorted { $0.sources[r]!.rank < $1.sources[r]!.rank }.map(\.item) })
            alternatives.append(Alternative(name: "\(specs[r].name) alone", ndcg: s.ndcg, recall: s.recall, rankers: [], file: nil, only: r))
        }
        let fusion = ReciprocalRankFusion(weights: [Double](repeating: 1, count: stages.count))
        let rrf = score(listsFor { p in fusion.rank(candidates[p], context: UserContext(subject: .history([]), history: [], excluded: [])).map(\.item) })
        alternatives.append(Alternative(name: "rank fusion (rrf)", ndcg: rrf.ndcg, recall: rrf.recall, rankers: [], file: .init(type: .rrf), only: nil))

        let trainLists = trainPositions.map { lists[$0] }
        /// The candidates of list p ordered by rankers, in the carved split's item indexes.
        func ranked(_ rankers: [NeuralRanker]) -> @Sendable (Int) -> [Int] {
            { p in
                let s = LearnedRanker.scores(rankers, lists[p])
                return s.indices.sorted { ScoredIndex.ranksBefore(s[$0], $0, s[$1], $1) }.map { carveOf[lists[p].items[$0]]! }
            }
        }
        for loss in try lossList() {
            var c = rankerSettings
            c.loss = loss
            let ranker = NeuralRanker(configuration: c, itemCount: folder.train.items.count, featureNames: features.names)
            let lossClock = Stopwatch()
            let outcome = try ranker.fit(trainLists, validate: { score(listsFor(ranked([ranker]))).ndcg }, progress: Console.training)
            let s = score(listsFor(ranked([ranker])))
            print("  ranker loss=\(loss.rawValue): epoch \(outcome.keptEpoch) of \(outcome.validation.count) kept, validation NDCG@20 \(String(format: "%.4f", s.ndcg)) (\(String(format: "%.1f", lossClock.seconds)) s)")
            alternatives.append(Alternative(name: "ranker, loss=\(loss.rawValue)", ndcg: s.ndcg, recall: s.recall, rankers: [ranker],
                                            file: .init(type: .neural, model: "ranker-\(loss.rawValue).safetensors"), only: nil))
        }
        // The rankers of every loss together: their list-standardised scores averaged.
        let single = alternatives.filter { $0.rankers.count == 1 }
        if single.count > 1 {
            let s = score(listsFor(ranked(single.flatMap(\.rankers))))
            alternatives.append(Alternative(name: "ranker ensemble (every loss)", ndcg: s.ndcg, recall: s.recall, rankers: single.flatMap(\.rankers),
                                            file: .init(type: .neural, models: single.map { $0.file!.model! }), only: nil))
        }
        print("\nvalidation (\(validPositions.count) users never trained on by the ranker), @20:")
        var table = TextTable([.init(name: "alternative"), .init(name: "NDCG", rightAligned: true), .init(name: "Recall", rightAligned: true)])
        for a in alternatives { table.rows.append([a.name, String(format: "%.4f", a.ndcg), String(format: "%.4f", a.recall)]) }
        print(table.render())
        let best = alternatives.max { $0.ndcg < $1.ndcg }!
        print("chosen: \(best.name)")

        // 3. The retrievers refitted on the full train, the ranker beside them, the pipeline files.
        if let writeFeatures {
            try writeFeatureTable(lists: trainPositions.map { (data.users[data.evaluatedUsers[$0]], lists[$0]) }, names: features.names,
                                  items: folder.train.items, to: (writeFeatures as NSString).appendingPathComponent("ranker-train.tsv"))
            try writeFeatureTable(lists: validPositions.map { (data.users[data.evaluatedUsers[$0]], lists[$0]) }, names: features.names,
                                  items: folder.train.items, to: (writeFeatures as NSString).appendingPathComponent("ranker-valid.tsv"))
            print("features written to \(writeFeatures)/ranker-train.tsv and ranker-valid.tsv")
        }
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        var entries: [PipelineFile.RetrieverEntry] = []
        for (n, spec) in specs.enumerated() {
            let (trained, _) = try trainOnSplit(folder, model: spec.name, settings: spec.settings, catalog: catalog)
            let name = "\(spec.name)-\(n)"
            try trained.save(to: (out as NSString).appendingPathComponent(name), overwrite: force)
            entries.append(.init(model: name, k: k, exact: exact ? true : nil))
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        func write(_ file: PipelineFile, _ name: String) throws {
            try AtomicWrite.file(try encoder.encode(file), to: (out as NSString).appendingPathComponent(name))
        }
        // Ranker files: every single-loss ranker with --keep-all, else those the chosen pipeline reads.
        var saved = Set<String>()
        for a in alternatives where keepAll || a.name == best.name {
            for (ranker, file) in zip(a.rankers, a.file?.model.map { [$0] } ?? a.file?.models ?? []) where saved.insert(file).inserted {
                try ranker.save(to: (out as NSString).appendingPathComponent(file))
            }
            let file = a.only.map { PipelineFile(retrievers: [entries[$0]]) } ?? PipelineFile(retrievers: entries, ranker: a.file)
            if a.name == best.name { try write(file, "pipeline.json") }
            if keepAll {
                let suffix = a.only.map { specs[$0].name } ?? a.file.map { entry in
                    entry.type == .rrf ? "rrf" : entry.models != nil ? "ensemble"
                        : entry.model!.replacingOccurrences(of: "ranker-", with: "").replacingOccurrences(of: ".safetensors", with: "")
                }!
                try write(file, "pipeline-\(suffix).json")
            }
        }
        // What was chosen and why, for whoever reads DIR later.
        struct Summary: Encodable {
            struct Row: Encodable { var alternative: String; var validationNDCG20: Double; var validationRecall20: Double }
            var split: String; var validationFraction: Double; var rankerValidation: Double; var seed: UInt64
            var retrievers: [String]; var ranker: String; var alternatives: [Row]; var chosen: String
        }
        let summary = Summary(split: split, validationFraction: validationFraction, rankerValidation: rankerValidation, seed: seed,
                              retrievers: specs.map { "\($0.name) \(settingsLabel($0.settings))" }, ranker: rankerSettings.jsonString(),
                              alternatives: alternatives.map { .init(alternative: $0.name, validationNDCG20: $0.ndcg, validationRecall20: $0.recall) },
                              chosen: best.name)
        try AtomicWrite.file(try encoder.encode(summary), to: (out as NSString).appendingPathComponent("tune.json"))
        print("wrote \(out)/pipeline.json (\(best.name)) in \(String(format: "%.0f", clock.seconds)) s; evaluate it once with: affinity evaluate --pipeline \(out)/pipeline.json --split \(split)")
    }

    func settingsLabel(_ s: [String: String]) -> String {
        s.isEmpty ? "(defaults)" : s.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
    }
}

/// Candidate features as TSV, one row per (user, candidate): `user item label f1 f2 ...`, users in
/// blocks (LightGBM's query groups). A label of -1 means unknown (lists to be scored, not learned).
func writeFeatureTable(lists: [(user: String, list: RankingList)], names: [String], items: IDVocabulary, to path: String) throws {
    var text = "user\titem\tlabel\t" + names.joined(separator: "\t") + "\n"
    for (user, list) in lists {
        let f = list.features.columns
        for (r, item) in list.items.enumerated() {
            text += "\(user)\t\(items[item])\t\(list.labels.isEmpty ? -1 : Int(list.labels[r]))"
            for j in 0..<f { text += "\t\(list.features.values[r * f + j])" }
            text += "\n"
        }
    }
    try AtomicWrite.file(Data(text.utf8), to: path)
}

/// Each evaluated user's merged candidates with the features a learned ranker reads (labels -1:
/// these are the lists to score, and test labels stay with the evaluator).
func writeCandidateFeatures(_ pipeline: Pipeline, trained: TrainedModel, data: EvaluationData, catalog: ItemCatalog?, to path: String) throws {
    let features = CandidateFeatures(retrievers: pipeline.retrievers.map(\.retriever.name), profile: itemProfile(trained, catalog: catalog))
    var lists: [(user: String, list: RankingList)] = []
    for user in data.evaluatedUsers {
        let history = data.history.row(user).map { Int($0) }
        let candidates = try pipeline.retrieve(UserContext(subject: .user(user), history: history, excluded: history))
        lists.append((data.users[user], features.list(candidates, history: history)))
    }
    try writeFeatureTable(lists: lists, names: features.names, items: trained.items, to: path)
}

/// Results of parallel work, one slot each.
final class LockedArray<T>: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var values: [T?]
    init(count: Int) { values = [T?](repeating: nil, count: count) }
    func set(_ i: Int, _ v: T) { lock.locked { values[i] = v } }
}

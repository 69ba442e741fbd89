import AffinityData
import AffinityEval
import AffinityModels
import AffinityPipeline
import ArgumentParser
import Foundation

struct EvaluateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "evaluate",
        abstract: "Full-ranking evaluation (docs/protocol.md): HR, Recall, NDCG, MRR and Coverage at each cutoff.",
        discussion: """
        Either evaluate a saved model (--model MODEL) or train one on the split's
        train.tsv and evaluate it in one go (--model-type NAME [--set key=value ...]).
        Every item of train is a candidate, each user's own train items are excluded,
        ties go to the smaller item index (docs/protocol.md).
        """
    )

    @Option(name: .long, help: "Saved model folder.") var model: String?
    @Option(name: .long, help: "A pipeline file (docs/pipeline.md): its retrievers, ranker and re-rankers make the lists.") var pipeline: String?
    @Option(name: .long, help: "Train this model type on the split first: \(ModelRegistry.names.joined(separator: "|")).") var modelType: String?
    @Option(name: .customLong("set"), help: "A setting for --model-type, key=value (repeatable).") var settings: [String] = []
    @Option(name: .long, help: "Split folder.") var split: String
    @Option(name: .long, help: "With --model-type: item metadata or text (default: the split's items.tsv); text-knn embeds it.") var items: String?
    @Option(name: .long, help: "With --model-type: item vectors (.npy with PATH.ids, or TSV) for text-knn or two-tower.") var itemVectors: String?
    @Option(name: .long, help: "The sentence encoder's folder (default: $AFFINITY_TEXT_MODEL).") var textModel: String?
    @Option(name: .long, help: "With --model-type vq-rec: pre-train on these split folders (comma-separated) first; their items.tsv text is embedded with --text-model (vectors from --item-vectors must come from the same encoder: only the width is checked).") var pretrain: String?
    @Option(name: .long, help: "Cutoffs K, comma-separated.") var cutoffs = "10,20,50"
    @Option(name: .long, help: "test (valid.tsv joins the history when present) or valid.") var target: EvaluationTarget = .test
    @Option(name: .long, help: "Threads (0 = all cores).") var threads = 0
    @Option(name: .long, help: "Evaluate this many users drawn at random (seed 42) instead of all: for timing and quick checks on millions of users.") var sampleUsers: Int?
    @Option(name: .long, help: "Also write each user's metrics to this TSV file.") var perUser: String?
    @Option(name: .long, help: "Also write each user's top-K list (largest cutoff) as user<TAB>item<TAB>rank TSV.") var writeRecs: String?
    @Option(name: .long, help: ArgumentHelp("A re-ranking stage after the model, applied in order (repeatable): \(ReRankerSpec.names.joined(separator: ", ")), with settings, e.g. mmr:lambda=0.5.",
                                            valueName: "NAME[:key=value,...]")) var rerank: [String] = []
    @Option(name: .long, help: "Candidates per user handed to the re-rankers.") var pool = 100
    @Option(name: .long, help: "With --pipeline: also write each evaluated user's candidates and their ranker features as TSV (user, item, label -1, features), for other learners.")
    var writeFeatures: String?
    @Flag(name: .long, help: "Print JSON on stdout.") var json = false
    @Flag(name: .long, help: "Evaluate a saved model on a split whose test rows it was trained on (the overlap is printed; metrics are then inflated).")
    var allowForeignSplit = false

    func validate() throws {
        guard [model, modelType, pipeline].compactMap({ $0 }).count == 1 else {
            throw ValidationError("give exactly one of --model MODEL, --model-type NAME or --pipeline FILE")
        }
        if pipeline != nil && !rerank.isEmpty { throw ValidationError("--rerank applies to a model; a pipeline file lists its own re-rankers") }
        if pipeline == nil && writeFeatures != nil { throw ValidationError("--write-features needs --pipeline") }
        if let sampleUsers, sampleUsers < 1 { throw ValidationError("--sample-users must be at least 1, got \(sampleUsers)") }
        if let modelType, ModelRegistry.type(named: modelType) == nil {
            throw ValidationError("unknown model type '\(modelType)'; known: \(ModelRegistry.names.joined(separator: ", "))")
        }
        if model != nil && !settings.isEmpty { throw ValidationError("--set applies to --model-type only") }
        if pretrain != nil && modelType != VQRec.modelType { throw ValidationError("--pretrain goes with --model-type vq-rec") }
        _ = try parseCutoffs(cutoffs)
        guard pool > 0 else { throw ValidationError("--pool must be positive, got \(pool)") }
    }

    func run() throws {
        let folder = try SplitFolder.read(split)
        let trained: TrainedModel
        var trainSeconds: Double? = nil
        var built: Pipeline? = nil
        if let pipeline {
            built = try PipelineFile.load(pipeline, catalog: folder.catalog)
            trained = (built!.retrievers[0].retriever as! ModelRetriever).model.trained
            try checkSplitMatches(trained, folder, target: target, allowForeignSplit: allowForeignSplit)
        } else if let model {
            trained = try TrainedModel.load(from: model)
            try checkSplitMatches(trained, folder, target: target, allowForeignSplit: allowForeignSplit)
        } else {
            (trained, trainSeconds) = try trainOnSplit(folder, model: modelType!, settings: try parseSettings(settings),
                                                       catalog: try items.map { try ItemCatalog.read(path: $0) },
                                                       itemVectorsPath: itemVectors, textModel: textModel, pretrain: try pretrainFolders(pretrain))
        }
        let evaluator = try Evaluator(cutoffs: try parseCutoffs(cutoffs), threads: threads,
                                      keepPerUser: perUser != nil, keepRankings: writeRecs != nil)
        let stages = try rerank.map { try ReRankerSpec(parsing: $0) }
        let (report, data) = if let built {
            try evaluate(built, trained: trained, on: folder, evaluator: evaluator, target: target, sample: sampleUsers)
        } else {
            try evaluate(trained, on: folder, evaluator: evaluator, target: target, rerank: stages, pool: pool, sample: sampleUsers)
        }
        if let writeFeatures, let built {
            try writeCandidateFeatures(built, trained: trained, data: data, catalog: trained.catalog.map { $0.filling(from: folder.catalog) } ?? folder.catalog, to: writeFeatures)
        }
        if let perUser, let tsv = report.perUserTSV() {
            try AtomicWrite.file(Data(tsv.utf8), to: perUser)
        }
        if let writeRecs, let tsv = report.recommendationsTSV(data) {
            try AtomicWrite.file(Data(tsv.utf8), to: writeRecs)
        }
        if json {
            var r = report
            r.perUser = nil
            try printJSON(SavedEvaluation(model: pipeline.map { "pipeline " + $0 } ?? trained.modelType, split: folder.name, target: target.rawValue, trainSeconds: trainSeconds, report: r))
        } else {
            var title = "\(pipeline.map { "pipeline \($0)" } ?? trained.modelType) on \(folder.name) (\(target.rawValue))"
            if let trainSeconds { title += ", trained in \(String(format: "%.2f", trainSeconds)) s" }
            title += ", evaluated in \(String(format: "%.2f", report.seconds)) s"
            print(report.table(title: title), terminator: "")
        }
    }
}

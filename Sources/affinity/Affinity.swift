import AffinityANN
import AffinityModels
import ArgumentParser

/// The `affinity` command-line tool: from a raw interaction log to an evaluated, saved,
/// queryable model.
@main
struct Affinity: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "affinity",
        abstract: "Embedding-based recommender: data, splits, training, full-ranking evaluation, recommendations.",
        discussion: """
        Start with `affinity demo` (synthetic data, no files needed), or
        `affinity demo --data PATH/ml-1m` with MovieLens. README.md has a quick start;
        docs/formats.md the files, docs/protocol.md how models are measured.
        """,
        version: "affinity 0.3.0 (model format \(TrainedModel.formatVersion), index format \(IndexFile.formatVersion))",
        subcommands: [DataCommand.self, SplitCommand.self, TrainCommand.self, EvaluateCommand.self,
                      RecommendCommand.self, SimilarCommand.self, DemoCommand.self, ExplainCommand.self, TuneCommand.self, PipelineCommand.self, IndexCommand.self, BenchCommand.self, SweepCommand.self, TradeoffCommand.self,
                      ServeCommand.self, ExportCommand.self, ModelCommand.self, TextCommand.self, AnalyzeCommand.self, ReportCommand.self, FuzzCommand.self]
    )
}

import AffinityData
import AffinityEval
import AffinityModels
import ArgumentParser
import Foundation

struct TuneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tune",
        abstract: "Grid search on a validation split carved from train; the best setting is refitted on the full train.",
        discussion: """
        The split's test.tsv is not used to choose: each user's train positives are
        split again (holdout, --validation-fraction, --seed), every grid point is
        fitted on the rest and scored on the held-out part, and the best by --metric
        is refitted on the full train.tsv, then evaluated once on test.tsv.
        Example: affinity tune --split DIR --model ease --grid lambda=100,200,500,1000
        """
    )

    @Option(name: .long, help: "Split folder.") var split: String
    @Option(name: .long, help: "Model: \(ModelRegistry.names.joined(separator: "|")).") var model: String
    @Option(name: .long, help: "A grid axis, key=v1,v2,... (repeatable; the grid is their product).") var grid: [String] = []
    @Option(name: .customLong("set"), help: "A fixed setting, key=value (repeatable).") var settings: [String] = []
    @Option(name: .long, help: "Metric to maximise: hr|recall|ndcg|mrr @K.") var metric = "ndcg@20"
    @Option(name: .long, help: "Share of each user's train positives held out for validation.") var validationFraction = 0.2
    @Option(name: .long, help: "Seed of the validation split.") var seed: UInt64 = 7
    @Option(name: .long, help: "Save the refitted best model here.") var out: String?
    @Flag(name: .long, help: "Replace OUT if it exists.") var force = false
    @Flag(name: .long, help: "Print JSON on stdout.") var json = false

    func validate() throws {
        guard ModelRegistry.type(named: model) != nil else {
            throw ValidationError("unknown model '\(model)'; known models: \(ModelRegistry.names.joined(separator: ", "))")
        }
        guard !grid.isEmpty else { throw ValidationError("give at least one --grid key=v1,v2,...") }
        _ = try parseMetric()
    }

    func parseMetric() throws -> (name: String, k: Int) {
        let parts = metric.lowercased().split(separator: "@")
        guard parts.count == 2, let k = Int(parts[1]), k > 0, ["hr", "recall", "ndcg", "mrr"].contains(String(parts[0])) else {
            throw ValidationError("--metric must look like ndcg@20 (hr, recall, ndcg or mrr at a cutoff), got '\(metric)'")
        }
        return (String(parts[0]), k)
    }

    func run() throws {
        let (metricName, metricK) = try parseMetric()
        let fixed = try parseSettings(settings)
        var axes: [(String, [String])] = []
        for g in grid {
            guard let eq = g.firstIndex(of: "=") else { throw CommandError("--grid expects key=v1,v2,..., got '\(g)'") }
            axes.append((String(g[..<eq]), g[g.index(after: eq)...].split(separator: ",").map(String.init)))
        }
        var points: [[String: String]] = [fixed]
        for (key, values) in axes { points = points.flatMap { p in values.map { p.merging([key: $0]) { _, b in b } } } }

        let folder = try SplitFolder.read(split)
        let inner = try Splitter.split(folder.train, settings: SplitSettings(strategy: .holdout, testFraction: validationFraction,
                                                                             seed: seed, minRating: nil, minUserPositives: 0))
        let innerFolder = SplitFolder(path: folder.path + " (validation carved from train)", train: inner.train, test: inner.test)
        let evaluator = try Evaluator(cutoffs: Array(Set([10, 20, metricK])).sorted())
        func value(_ r: EvaluationReport) -> Double {
            guard let m = r.metrics(at: metricK) else { return 0 }
            switch metricName {
            case "hr": return m.hitRate
            case "recall": return m.recall
            case "mrr": return m.mrr
            default: return m.ndcg
            }
        }
        struct Point: Encodable { var settings: [String: String]; var validation: Double; var trainSeconds: Double }
        var results: [Point] = []
        if !json { print("\(model) on \(folder.name): validation = \(String(format: "%.0f", validationFraction * 100))% of each user's train positives (seed \(seed)), \(inner.test.count) rows") }
        for point in points {
            let (trained, seconds) = try trainOnSplit(innerFolder, model: model, settings: point, catalog: nil)
            let (report, _) = try evaluate(trained, on: innerFolder, evaluator: evaluator, target: .test)
            results.append(Point(settings: point, validation: value(report), trainSeconds: seconds))
            if !json {
                let label = point.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
                print("  \(label.padding(toLength: 40, withPad: " ", startingAt: 0))  \(metric) \(String(format: "%.4f", value(report)))  (\(String(format: "%.2f", seconds)) s)")
            }
        }
        let best = results.max { $0.validation < $1.validation }!
        let (final, seconds) = try trainOnSplit(folder, model: model, settings: best.settings, catalog: nil)
        let (testReport, _) = try evaluate(final, on: folder, evaluator: evaluator, target: .test)
        if let out { try final.save(to: out, overwrite: force) }
        if json {
            struct Output: Encodable { var model: String; var metric: String; var grid: [Point]; var best: [String: String]; var test: EvaluationReport }
            try printJSON(Output(model: model, metric: metric, grid: results, best: best.settings, test: testReport))
            return
        }
        let bestLabel = best.settings.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        print("best: \(bestLabel) (validation \(metric) \(String(format: "%.4f", best.validation))); refitted on the full train in \(String(format: "%.2f", seconds)) s")
        print(testReport.table(title: "test, once, with the chosen setting:"), terminator: "")
        if let out { print("saved to \(out)") }
    }
}

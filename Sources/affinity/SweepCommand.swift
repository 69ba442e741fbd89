import AffinityData
import AffinityEval
import AffinityModels
import AffinityPlot
import ArgumentParser
import Foundation

/// `affinity sweep`: one setting varied, every value trained and evaluated on the split's test target,
/// a table of metrics per value and an SVG plot of HR@10 against the value.
struct SweepCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sweep",
        abstract: "Train and evaluate a model for each value of one setting; print a table, plot HR@10 against the value.",
        discussion: """
        Example: affinity sweep --split DIR --model two-tower \\
                   --param temperature=0.01,0.05,0.1,0.2,0.5,1.0 \\
                   --series logQ=true,false --svg temperature.svg
        Each (series, value) point is trained on train.tsv and evaluated on test.tsv
        (full ranking, docs/protocol.md): a sweep describes how a setting acts; to
        choose a setting without looking at test, use `affinity tune`.
        """
    )

    @Option(name: .long, help: "The setting to vary, key=v1,v2,...") var param: String
    @Option(name: .long, help: "Split folder.") var split: String
    @Option(name: .long, help: "Model: \(ModelRegistry.names.joined(separator: "|")).") var model: String
    @Option(name: .long, help: "A second setting drawn as one line per value, key=v1,v2,... (e.g. logQ=true,false).") var series: String?
    @Option(name: .customLong("set"), help: "A fixed setting, key=value (repeatable).") var settings: [String] = []
    @Option(name: .long, help: "Write the plot of HR@10 against the setting here (SVG).") var svg: String?
    @Flag(name: .long, help: "Print JSON on stdout.") var json = false

    static func axis(_ text: String, option: String) throws -> (key: String, values: [String]) {
        guard let eq = text.firstIndex(of: "="), eq != text.startIndex else { throw ValidationError("\(option) expects key=v1,v2,..., got '\(text)'") }
        let values = text[text.index(after: eq)...].split(separator: ",").map(String.init)
        guard !values.isEmpty else { throw ValidationError("\(option) lists no values: '\(text)'") }
        return (String(text[..<eq]), values)
    }

    func validate() throws {
        guard ModelRegistry.type(named: model) != nil else {
            throw ValidationError("unknown model '\(model)'; known models: \(ModelRegistry.names.joined(separator: ", "))")
        }
        _ = try Self.axis(param, option: "--param")
        if let series { _ = try Self.axis(series, option: "--series") }
    }

    struct Point: Encodable {
        var settings: [String: String]
        var hr10: Double, recall20: Double, ndcg20: Double
        var trainSeconds: Double
    }

    func run() throws {
        let (key, values) = try Self.axis(param, option: "--param")
        let lines = try series.map { try Self.axis($0, option: "--series") }
        let fixed = try parseSettings(settings)
        let folder = try SplitFolder.read(split)
        let evaluator = try Evaluator(cutoffs: [10, 20])
        var points: [Point] = []
        var plotted: [PlotSeries] = []
        if !json {
            print("\(model) on \(folder.name), test target; \(key) swept" + (lines.map { ", one line per \($0.key)" } ?? ""))
            print("\((lines?.key ?? "").padding(toLength: 8, withPad: " ", startingAt: 0))\(key.padding(toLength: 12, withPad: " ", startingAt: 0))   HR@10  Recall@20  NDCG@20  train s")
        }
        for lineValue in lines?.values ?? [""] {
            var line = PlotSeries(name: lines.map { "\($0.key)=\(lineValue)" } ?? model, points: [])
            for value in values {
                var s = fixed.merging([key: value]) { _, b in b }
                if let lines { s[lines.key] = lineValue }
                let (trained, seconds) = try trainOnSplit(folder, model: model, settings: s, catalog: nil)
                let (report, _) = try evaluate(trained, on: folder, evaluator: evaluator, target: .test)
                let m10 = report.metrics(at: 10)!, m20 = report.metrics(at: 20)!
                let p = Point(settings: s, hr10: m10.hitRate, recall20: m20.recall, ndcg20: m20.ndcg, trainSeconds: seconds)
                points.append(p)
                if let x = Double(value) { line.points.append((x, p.hr10, "")) }
                if !json {
                    print(String(format: "%@%@ %7.4f  %9.4f  %7.4f  %7.1f", lineValue.padding(toLength: 8, withPad: " ", startingAt: 0),
                                 value.padding(toLength: 12, withPad: " ", startingAt: 0), p.hr10, p.recall20, p.ndcg20, seconds))
                }
            }
            plotted.append(line)
        }
        if let svg {
            let xs = plotted.flatMap { $0.points.map(\.x) }
            let logX = (xs.min() ?? 0) > 0 && (xs.max() ?? 1) / (xs.min() ?? 1) >= 20
            let text = linePlot(plotted, title: "\(model) on \(folder.name): HR@10 against \(key)", xTitle: key + (logX ? " (log)" : ""),
                                yTitle: "HR@10", xLog: logX)
            try AtomicWrite.file(Data(text.utf8), to: svg)
            if !json { print("plot: \(svg)") }
        }
        if json {
            struct Output: Encodable { var model: String; var split: String; var param: String; var points: [Point] }
            try printJSON(Output(model: model, split: folder.name, param: key, points: points))
        }
    }
}

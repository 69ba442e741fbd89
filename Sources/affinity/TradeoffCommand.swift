import AffinityData
import AffinityEval
import AffinityModels
import AffinityPlot
import AffinityPipeline
import ArgumentParser
import Foundation

/// `affinity tradeoff`: what each re-ranker buys and costs. One saved model, one split; each
/// re-ranker evaluated at several strengths; accuracy against diversity, coverage and calibration
/// in a table and three SVG plots.
struct TradeoffCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tradeoff",
        abstract: "Accuracy against diversity, coverage and calibration as re-rankers grow stronger.",
        discussion: """
        Each --curve is one re-ranker and one setting with several values, e.g.
          --curve mmr:lambda=1,0.9,0.7,0.5,0.3
          --curve calibration:lambda=0,0.5,0.9,0.99
          --curve popularity-cap:maxHeadShare=1,0.6,0.3,0
        Every point re-ranks the model's best --pool items per user and is
        evaluated on the split's test target (full ranking, docs/protocol.md). With
        --svg PREFIX it writes PREFIX-diversity.svg, PREFIX-coverage.svg and
        PREFIX-calibration.svg (NDCG@K against each).
        """
    )

    @Option(name: .long, help: "Saved model folder.") var model: String
    @Option(name: .long, help: "Split folder the model was trained on.") var split: String
    @Option(name: .long, help: ArgumentHelp("A re-ranker and one setting's values (repeatable).", valueName: "NAME:key=v1,v2,...")) var curve: [String]
    @Option(name: .long, help: "Other settings of every curve's re-ranker, NAME:key=value,... (repeatable).") var fixed: [String] = []
    @Option(name: .shortAndLong, help: "The cutoff K of every metric.") var k = 20
    @Option(name: .long, help: "Candidates per user handed to the re-rankers.") var pool = 100
    @Option(name: .long, help: "Write three SVG plots with this path prefix.") var svg: String?
    @Flag(name: .long, help: "Print JSON on stdout.") var json = false

    struct Point: Encodable {
        var reranker: String
        var setting: String
        var value: String
        var ndcg: Double
        var recall: Double
        var coverage: Double
        var intraListDiversity: Double?
        var novelty: Double
        var exposureGini: Double
        var calibrationKL: Double?
    }

    /// "mmr:lambda=1,0.5" -> ("mmr", "lambda", ["1", "0.5"]).
    static func parseCurve(_ text: String) throws -> (name: String, key: String, values: [String]) {
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        guard parts.count == 2, let eq = parts[1].firstIndex(of: "="), eq != parts[1].startIndex else {
            throw ValidationError("--curve expects NAME:key=v1,v2,..., got '\(text)'")
        }
        let values = parts[1][parts[1].index(after: eq)...].split(separator: ",").map(String.init)
        guard !values.isEmpty else { throw ValidationError("--curve lists no values: '\(text)'") }
        return (parts[0], String(parts[1][..<eq]), values)
    }

    func validate() throws {
        guard k > 0 else { throw ValidationError("-k must be positive, got \(k)") }
        guard pool >= k else { throw ValidationError("--pool (\(pool)) must be at least -k (\(k))") }
        for c in curve { _ = try Self.parseCurve(c) }
    }

    func run() throws {
        let trained = try TrainedModel.load(from: model)
        let folder = try SplitFolder.read(split)
        try checkSplitMatches(trained, folder, target: .test, allowForeignSplit: false)
        let evaluator = try Evaluator(cutoffs: [k])
        var points: [Point] = []
        for c in curve {
            let (name, key, values) = try Self.parseCurve(c)
            let others = fixed.filter { $0.hasPrefix(name + ":") }.map { String($0.dropFirst(name.count + 1)) }
            for value in values {
                let spec = try ReRankerSpec(parsing: "\(name):" + ([key + "=" + value] + others).joined(separator: ","))
                Console.progress("\(name) \(key)=\(value)...")
                let (report, _) = try evaluate(trained, on: folder, evaluator: evaluator, target: .test, rerank: [spec], pool: pool)
                let m = report.metrics[0], b = report.beyondAccuracy![0]
                points.append(Point(reranker: name, setting: key, value: value, ndcg: m.ndcg, recall: m.recall, coverage: m.coverage,
                                    intraListDiversity: b.intraListDiversity, novelty: b.novelty, exposureGini: b.exposureGini,
                                    calibrationKL: b.calibrationKL))
            }
        }
        Console.clearProgress()
        if let svg {
            func plot(_ x: (Point) -> Double?, _ xTitle: String, _ suffix: String) throws {
                let series = curve.map { try! Self.parseCurve($0) }.map { c in
                    PlotSeries(name: "\(c.name) (\(c.key))", points: points.filter { $0.reranker == c.name }.compactMap { p in
                        x(p).map { (x: $0, y: p.ndcg, label: p.value) }
                    })
                }
                try AtomicWrite.file(Data(linePlot(series, title: "\(trained.modelType) on \(folder.name): re-ranking trade-off",
                                                   xTitle: xTitle, yTitle: "NDCG@\(k)").utf8), to: "\(svg)-\(suffix).svg")
            }
            try plot({ $0.intraListDiversity }, "intra-list diversity@\(k) (genres)", "diversity")
            try plot({ $0.coverage }, "coverage@\(k)", "coverage")
            try plot({ $0.calibrationKL }, "miscalibration KL@\(k) (lower is better)", "calibration")
        }
        if json {
            try printJSON(points)
            return
        }
        var table = TextTable([.init(name: "re-ranker"), .init(name: "setting"), .init(name: "NDCG@\(k)", rightAligned: true),
                               .init(name: "Recall@\(k)", rightAligned: true), .init(name: "ILD", rightAligned: true),
                               .init(name: "Coverage", rightAligned: true), .init(name: "Novelty", rightAligned: true),
                               .init(name: "Gini", rightAligned: true), .init(name: "CalibKL", rightAligned: true)])
        table.rows = points.map { p in
            [p.reranker, "\(p.setting)=\(p.value)", String(format: "%.4f", p.ndcg), String(format: "%.4f", p.recall),
             p.intraListDiversity.map { String(format: "%.4f", $0) } ?? "-", String(format: "%.4f", p.coverage),
             String(format: "%.3f", p.novelty), String(format: "%.4f", p.exposureGini), p.calibrationKL.map { String(format: "%.4f", $0) } ?? "-"]
        }
        print("\(trained.modelType) on \(folder.name), \(pool) candidates re-ranked to \(k):")
        print(table.render())
    }
}

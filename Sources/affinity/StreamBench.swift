import AffinityData
import AffinityLinalg
import AffinityModels
import AffinityPlot
import ArgumentParser
import Foundation

/// `affinity bench stream`: the prequential replay of `StreamReplay` over a log, for the frozen,
/// periodically retrained and online variants, with collisionless and hashed tables.
struct StreamBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stream",
        abstract: "Replay a log in time order: predict each next positive before learning it (prequential HR@k / NDCG@k).",
        discussion: """
        The first --train-fraction of the positives (by time) trains; the rest streams
        in --windows windows. Variants: frozen (iALS, users by fold-in), retrain (iALS
        retrained at each window), frozen-online (online-mf after its batch passes,
        never updated), online (online-mf learning each event after predicting it,
        collisionless tables), hashed-N (the same with hashed tables of 1/N of the
        users' and items' counts in rows, so several IDs share a row).
        """
    )

    @Option(name: .long, help: "Interaction log with timestamps (MovieLens ratings.dat, TSV, CSV, ...).") var input: String
    @Option(name: .long, help: "Variants, comma-separated: frozen, retrain, frozen-online, online, hashed-N.")
    var variants = "frozen,retrain,frozen-online,online,hashed-2,hashed-8,hashed-32"
    @Option(name: .long, help: "Share of the positives (by time) that trains the batch models.") var trainFraction = 0.8
    @Option(name: .long, help: "Windows of the stream (a retrain at the start of each).") var windows = 10
    @Option(name: .long, help: "Passes of online-mf over the training part before the stream.") var batchEpochs = 5
    @Option(name: .long, help: "Ratings at or above are positives.") var minRating: Float = 4
    @Option(name: .customShort("k"), help: "Cutoff of HR and NDCG.") var k = 10
    @Option(name: .customLong("set"), help: "An online-mf setting, key=value (repeatable).") var settings: [String] = []
    @Option(name: .long, help: "Write the HR@k-per-window plot here (SVG).") var svg: String?
    @Flag(name: .long, help: "Print JSON on stdout.") var json = false

    func run() throws {
        var s = StreamReplay.Settings()
        s.trainFraction = trainFraction
        s.windows = windows
        s.batchEpochs = batchEpochs
        s.minRating = minRating
        s.k = k
        let log = try InteractionReader.read(path: input)
        let stream = try StreamReplay.Stream(log: log, settings: s)
        let online = try OnlineMF.Configuration().applying(try parseSettings(settings))
        let names = variants.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        let users = Set(stream.userIndices).count, items = Set(stream.itemIndices).count
        let say: (String) -> Void = { line in FileHandle.standardError.write(Data((line + "\n").utf8)) }
        if !json {
            print("CPU: \(cpuModel())")
            print("\(input): \(stream.count) positives (rating >= \(minRating)) of \(users) users and \(items) items; "
                  + "\(stream.trainCount) train, \(stream.streamCount) streamed in \(windows) windows of ~\(stream.streamCount / windows)")
        }
        var results: [(name: String, outcome: StreamReplay.Outcome)] = []
        for name in names {
            let variant: StreamReplay.Variant
            switch name {
            case "frozen": variant = .frozen(ALS.Configuration())
            case "retrain": variant = .retrain(ALS.Configuration())
            case "frozen-online": variant = .frozenOnline(online)
            case "online": variant = .online(online)
            case let h where h.hasPrefix("hashed-"):
                guard let divisor = Int(h.dropFirst(7)), divisor >= 1 else { throw ValidationError("--variants: '\(h)' needs hashed-N with N a positive integer") }
                var c = online
                c.table = .hashed
                c.userRows = max(1, users / divisor)
                c.itemRows = max(1, items / divisor)
                variant = .online(c)
            default:
                throw ValidationError("--variants: unknown variant '\(name)'; choose from frozen, retrain, frozen-online, online, hashed-N")
            }
            say("\(name)...")
            let outcome = try StreamReplay.run(variant, on: stream, settings: s, progress: { say("  \(name) \($0)") })
            results.append((name, outcome))
        }
        if json {
            try printJSON(results.map { r in
                ["variant": AnyEncodable(r.name), "hr": AnyEncodable(r.outcome.overall.hitRate), "ndcg": AnyEncodable(r.outcome.overall.meanNDCG),
                 "windows": AnyEncodable(r.outcome.windows.map(\.hitRate)), "item_tiers": AnyEncodable(r.outcome.byItemTier.map(\.hitRate)),
                 "user_tiers": AnyEncodable(r.outcome.byUserTier.map(\.hitRate)), "unknown_targets": AnyEncodable(r.outcome.unknownTargets),
                 "learn_seconds": AnyEncodable(r.outcome.learnSeconds), "seconds": AnyEncodable(r.outcome.seconds)]
            })
        } else {
            printTable(results, stream: stream)
        }
        if let svg {
            let series = results.map { r in
                PlotSeries(name: r.name, points: r.outcome.windows.enumerated().map { (Double($0.offset + 1), $0.element.hitRate, "") })
            }
            let text = linePlot(series, title: "Prequential HR@\(k) on \((input as NSString).lastPathComponent), by window of the stream",
                                xTitle: "window (time order)", yTitle: "HR@\(k)")
            try AtomicWrite.file(Data(text.utf8), to: svg)
            if !json { print("plot: \(svg)") }
        }
    }

    private func printTable(_ results: [(name: String, outcome: StreamReplay.Outcome)], stream: StreamReplay.Stream) {
        func f(_ v: Double) -> String { String(format: "%.4f", v) }
        var rows: [[String]] = []
        for r in results {
            let o = r.outcome
            rows.append([r.name, f(o.overall.hitRate), f(o.overall.meanNDCG)] + o.byItemTier.map { f($0.hitRate) } + o.byUserTier.map { f($0.hitRate) }
                        + ["\(o.unknownTargets)", String(format: "%.1f", o.learnSeconds), String(format: "%.1f", o.seconds)])
        }
        let first = results.first?.outcome
        let tierCounts = (first?.byItemTier.map { "\($0.events)" } ?? []) + (first?.byUserTier.map { "\($0.events)" } ?? [])
        let header = ["variant", "HR@\(k)", "NDCG@\(k)"] + StreamReplay.itemTiers.map { "item \($0)" } + StreamReplay.userTiers.map { "user \($0)" }
            + ["unknown", "learn s", "total s"]
        var table = TextTable(header.enumerated().map { TextTable.Column(name: $0.element, rightAligned: $0.offset > 0) })
        table.rows = rows
        print(table.render())
        print("events per tier: items \(StreamReplay.itemTiers.joined(separator: "/")) \(tierCounts.prefix(3).joined(separator: "/")), "
              + "users \(StreamReplay.userTiers.joined(separator: "/")) \(tierCounts.dropFirst(3).joined(separator: "/"))")
        print("HR@\(k) per window: " + results.map { r in "\(r.name) " + r.outcome.windows.map { f($0.hitRate) }.joined(separator: " ") }.joined(separator: "; "))
        for r in results { if let t = r.outcome.tableSummary { print("\(r.name): \(t)") } }
    }
}

import AffinityData
import AffinityEval
import AffinityLinalg
import AffinityModels
import ArgumentParser
import Foundation

struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "End to end in one command: data -> split -> every model -> side-by-side evaluation -> recommendations.",
        discussion: """
        With no argument it generates the synthetic data set (planted taste
        clusters, power-law popularity, substitute pairs), so it needs no files.
        --data PATH runs the same on a MovieLens folder or a log (ratings >= 4 as
        positives, users with >= 5 positives, holdout 20%, seed 42).
        """
    )

    @Option(name: .long, help: "A MovieLens folder or interaction file instead of synthetic data.") var data: String?
    @Option(name: .long, help: "Layout of --data (default: from the name).") var format: InteractionFormat?
    @Option(name: .long, help: "Seed of the data generator and the split.") var seed: UInt64 = 42
    @Option(name: .long, help: "Users to show recommendations for.") var show = 3
    @Option(name: .long, help: "Cutoffs K, comma-separated.") var cutoffs = "10,20"
    @Option(name: .long, help: "Models to run, comma-separated (default: all but the sequential ones; known: \(ModelRegistry.names.joined(separator: ","))).") var models: String?

    func validate() throws {
        for name in modelNames where ModelRegistry.type(named: name) == nil {
            throw ValidationError("--models: unknown model '\(name)'; known models: \(ModelRegistry.names.joined(separator: ", "))")
        }
    }

    /// By default every model but the sequential ones: the demo's split is a random holdout, and
    /// SASRec is measured on leave-last-out splits (`affinity evaluate --model-type sasrec --split S`).
    var modelNames: [String] {
        models.map { $0.split(separator: ",").map(String.init) }
            ?? ModelRegistry.names.filter {
                !(ModelRegistry.type(named: $0) is any SequentialRecommender.Type) && !(ModelRegistry.type(named: $0) is any ItemContentRecommender.Type)
            }
    }

    func run() throws {
        let ks = try parseCutoffs(cutoffs)
        let log: InteractionLog
        var catalog: ItemCatalog?
        var planted: SyntheticDataset?
        if let data {
            let (l, seconds) = try timed { try InteractionReader.read(path: data, format: format) }
            log = l
            catalog = try ItemCatalog.find(near: data).map { try ItemCatalog.read(path: $0) }
            print("Data: \(data): \(log.count) interactions, \(log.userCount) users, \(log.itemCount) items (read in \(String(format: "%.2f", seconds)) s)")
        } else {
            var settings = SyntheticSettings()
            settings.seed = seed
            let generated = try SyntheticGenerator.generate(settings)
            log = generated.log
            catalog = generated.catalog
            planted = generated
            print("Data: synthetic, seed \(seed): \(log.count) rated interactions, \(log.userCount) users, \(log.itemCount) items,")
            print("      \(generated.clusterNames.count) taste clusters (\(generated.clusterNames.joined(separator: ", "))), \(generated.substitutes.count) planted substitute pairs")
        }

        let split = try Splitter.split(log, settings: SplitSettings(strategy: .holdout, testFraction: 0.2, seed: seed))
        let folderPath = FileManager.default.temporaryDirectory.appendingPathComponent("affinity-demo-\(ProcessInfo.processInfo.processIdentifier)").path
        defer { try? FileManager.default.removeItem(atPath: folderPath) }
        try SplitFolder.write(split, to: folderPath, source: data ?? "synthetic", catalog: catalog, overwrite: true)
        let folder = try SplitFolder.read(folderPath)
        print("Split: holdout 20%, seed \(seed): train \(split.trainRows.count), test \(split.testRows.count) positives (rating >= 4) of \(folder.train.userCount) users\n")

        let evaluator = try Evaluator(cutoffs: ks)
        var rows: [(name: String, report: EvaluationReport, trainSeconds: Double)] = []
        var models: [TrainedModel] = []
        for name in modelNames {
            let (trained, seconds) = try trainOnSplit(folder, model: name, settings: [:], catalog: catalog)
            let (report, _) = try evaluate(trained, on: folder, evaluator: evaluator, target: .test)
            rows.append((name, report, seconds))
            // Each model's result as soon as it is known (the table follows at the end).
            if let m = report.metrics(at: ks[0]) {
                Console.note("\(name): trained in \(String(format: "%.1f", seconds)) s; HR@\(ks[0]) \(String(format: "%.4f", m.hitRate)), NDCG@\(ks[0]) \(String(format: "%.4f", m.ndcg))")
            }
            models.append(trained)
        }
        print("Full-ranking evaluation (docs/protocol.md), \(rows.first?.report.evaluatedUsers ?? 0) users, \(folder.train.itemCount) candidate items:")
        print(comparisonTable(rows, cutoffs: ks))

        // A few users: their history and what the best model recommends, with titles.
        let best = zip(rows, models).max { ($0.0.report.metrics(at: ks[0])?.ndcg ?? 0) < ($1.0.report.metrics(at: ks[0])?.ndcg ?? 0) }!.1
        print("Recommendations of \(best.modelType) (the best NDCG@\(ks[0])):")
        var rng = SeededGenerator(seed: seed)
        for _ in 0..<min(show, best.users.count) {
            let u = rng.next(below: best.users.count)
            let userID = best.users[u]
            let history = best.model.seenItems(ofUser: u)
            var header = "\nuser \(userID)"
            if let planted, let c = planted.userCluster[userID] { header += " (planted taste: \(planted.clusterNames[c]))" }
            print(header + ", \(history.count) items in train, e.g.:")
            for i in history.prefix(3) { print("      \(best.title(ofItem: i))") }
            print("   recommended:")
            printList(try describe(try best.model.recommend(user: u, k: 5), model: best))
        }
        if planted == nil { return }
        print("\nPlanted structure check: share of the top-10 that matches each user's taste cluster, by model:")
        for trained in models {
            let share = tasteMatch(trained, planted: planted!)
            print("  \(trained.modelType.padding(toLength: 12, withPad: " ", startingAt: 0)) \(String(format: "%.3f", share))")
        }
        try antiAffinityCheck(models, planted: planted!)
    }

    /// How many planted substitute pairs EASE's anti-affinity recovers (partner among the 10 most
    /// negative weights), with one example.
    private func antiAffinityCheck(_ models: [TrainedModel], planted: SyntheticDataset) throws {
        guard let trained = models.first(where: { $0.model is EASE }), let ease = trained.model as? EASE else { return }
        var found = 0, total = 0
        var example: String?
        for (a, b) in planted.substitutes {
            guard let ia = trained.items.index(of: a), let ib = trained.items.index(of: b) else { continue }
            total += 1
            let anti = try ease.antiAffinities(of: ia, k: 10)
            if let rank = anti.firstIndex(where: { $0.item == ib }) {
                found += 1
                if example == nil {
                    example = "e.g. people who picked \(trained.title(ofItem: ia)) rarely pick \(trained.title(ofItem: ib)) "
                        + "(weight \(String(format: "%.4f", anti[rank].weight)), rank \(rank + 1) of its anti-affinities)"
                }
            }
        }
        print("\nPlanted anti-affinity: EASE lists the substitute among an item's 10 most negative weights for \(found) of \(total) pairs")
        if let example { print("  \(example)") }
    }

    /// Share of recommended items (top 10) in the user's planted cluster.
    private func tasteMatch(_ trained: TrainedModel, planted: SyntheticDataset) -> Double {
        guard let lists = try? trained.model.recommend(users: Array(0..<trained.users.count), k: 10) else { return 0 }
        var match = 0, total = 0
        for (u, list) in lists.enumerated() {
            let cluster = planted.userCluster[trained.users[u]]
            for s in list {
                total += 1
                if planted.itemCluster[trained.items[s.index]] == cluster { match += 1 }
            }
        }
        return total > 0 ? Double(match) / Double(total) : 0
    }
}

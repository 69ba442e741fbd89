import AffinityData
import AffinityEval
import AffinityLinalg
import AffinityModels
import AffinityPlot
import ArgumentParser
import Foundation

extension TSNE.Method: ExpressibleByArgument {}

/// `affinity analyze`: experiments about what the embeddings mean.
struct AnalyzeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "analyze",
        abstract: "Experiments on what embeddings mean.",
        subcommands: [SemanticVsTask.self, ColdStart.self, Personas.self, TSNEMap.self]
    )

    struct SemanticVsTask: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "semantic-vs-task",
            abstract: "Does \"looks alike\" predict \"wanted next\"? Text similarity against interaction models on one split.",
            discussion: """
            1. Full-ranking accuracy (docs/protocol.md) of text-knn (items scored by the text cosine to the
               user's history) beside models trained on the interactions (--models, defaults each).
            2. For every item, the overlap of its top-K text neighbours with its top-K co-interaction
               neighbours (item-kNN cosine on the training interactions), overall and by popularity decile.
            3. "Close but wrong": text-neighbour pairs with the most negative EASE weights (substitutes:
               having one lowers the other's score), with titles.
            Item text: --items (default: the split's items.tsv) through the sentence encoder, or --item-vectors.
            """
        )
        @Option(name: .long, help: "Split folder.") var split: String
        @Option(name: .long, help: "Interaction models, comma-separated model types trained with defaults.") var models = "ease,ials,two-tower"
        @Option(name: .long, help: "Item metadata or text: movies.dat, u.item, items.tsv or a .text file.") var items: String?
        @Option(name: .long, help: "Item vectors (.npy with PATH.ids, or TSV) instead of embedding the text.") var itemVectors: String?
        @Option(name: .long, help: "The sentence encoder's folder (default: $AFFINITY_TEXT_MODEL).") var textModel: String?
        @Option(name: .shortAndLong, parsing: .unconditional, help: "Neighbours compared per item; metrics at this cutoff too.") var k = 20
        @Option(name: .long, help: "Close-but-wrong pairs to list.") var pairs = 10
        @Option(name: .long, help: "Write the overlap-by-popularity plot here (SVG).") var svg: String?
        @Flag(name: .long, help: "Print JSON on stdout.") var json = false

        func validate() throws {
            guard k > 0 else { throw ValidationError("-k must be positive, got \(k)") }
            guard pairs >= 0 else { throw ValidationError("--pairs must not be negative, got \(pairs)") }
            for name in modelNames where ModelRegistry.type(named: name) == nil {
                throw ValidationError("--models: unknown model '\(name)'; known models: \(ModelRegistry.names.joined(separator: ", "))")
            }
        }

        var modelNames: [String] { models.split(separator: ",").map(String.init).filter { !$0.isEmpty } }

        struct Row: Encodable { var model: String; var recall: Double; var ndcg: Double; var hitRate: Double; var trainSeconds: Double }
        struct Output: Encodable {
            var split: String
            var k: Int
            var accuracy: [Row]
            var meanOverlap: Double
            var itemsWithoutOverlap: Double
            var overlapByPopularityDecile: [Double]
            var negativeShareTextNeighbours: Double
            var negativeShareTaskNeighbours: Double
            var closeButWrong: [PairOut]
        }
        struct PairOut: Encodable { var item: String; var title: String; var neighbour: String; var neighbourTitle: String; var textSimilarity: Float; var easeWeight: Float }

        func run() throws {
            let folder = try SplitFolder.read(split)
            let catalog = try items.map { try ItemCatalog.read(path: $0) } ?? folder.catalog
            let itemIDs = folder.train.items
            let vectors = try itemVectors.map { try readItemVectors($0, items: itemIDs) }
                ?? embedItemTexts(catalog, items: itemIDs, textModel: textModel)
            let evaluator = try Evaluator(cutoffs: [k], threads: 0)

            // 1. Accuracy.
            var rows: [Row] = []
            var ease: EASE?
            for name in modelNames + [TextKNN.modelType] {
                let (trained, seconds) = try trainOnSplit(folder, model: name, settings: [:], catalog: catalog, itemVectors: vectors)
                let (report, _) = try evaluate(trained, on: folder, evaluator: evaluator, target: .test)
                let m = report.metrics(at: k)!
                rows.append(Row(model: name, recall: m.recall, ndcg: m.ndcg, hitRate: m.hitRate, trainSeconds: seconds))
                if let e = trained.model as? EASE { ease = e }
                Console.note(String(format: "%@: Recall@%d %.4f, NDCG@%d %.4f", name, k, m.recall, k, m.ndcg))
            }
            let interactions = folder.train.matrix()
            if ease == nil { ease = try EASE.fit(interactions) }

            // 2. Neighbour overlap: text (cosine of the vectors) against co-interaction (item-kNN).
            let n = itemIDs.count
            // Text neighbours are text-knn's neighbour lists with K neighbours.
            var textSettings = TextKNN.Configuration()
            textSettings.neighbors = k
            let textNeighbours = try TextKNN.fit(interactions, itemVectors: vectors, configuration: textSettings).neighbors
            let text: [[(index: Int, similarity: Float)]] = (0..<n).map { i in
                zip(textNeighbours.row(i), textNeighbours.rowValues(i)).map { (index: Int($0.0), similarity: $0.1) }
            }
            var knnSettings = ItemKNN.Configuration()
            knnSettings.neighbors = k
            let knn = try ItemKNN.fit(interactions, configuration: knnSettings)
            let task = (0..<n).map { i in knn.neighbors.row(i).map { Int($0) } }
            let overlap = SemanticAnalysis.overlap(textNeighbours: text.map { $0.map(\.index) }, taskNeighbours: task)
            let known = overlap.compactMap { $0 }
            let mean = known.reduce(0, +) / Double(max(known.count, 1))
            let none = Double(known.filter { $0 == 0 }.count) / Double(max(known.count, 1))
            let byItem = interactions.transposed()
            let popularity = (0..<n).map { byItem.rowLength($0) }
            let deciles = SemanticAnalysis.byPopularityDecile(overlap, popularity: popularity)

            // 3. Close but wrong.
            let weights = ease!.weights
            let textPairs = text.enumerated().flatMap { i, list in list.map { (i, $0.index) } }
            let taskPairs = task.enumerated().flatMap { i, list in list.map { (i, $0) } }
            let closeButWrong = SemanticAnalysis.closeButWrong(textNeighbours: text, weights: weights, count: pairs)
            func title(_ i: Int) -> String { catalog?.titles[itemIDs.ids[i]] ?? itemIDs.ids[i] }
            let pairRows = closeButWrong.map {
                PairOut(item: itemIDs.ids[$0.item], title: title($0.item), neighbour: itemIDs.ids[$0.neighbour], neighbourTitle: title($0.neighbour),
                        textSimilarity: $0.textSimilarity, easeWeight: $0.weight)
            }
            let output = Output(split: folder.name, k: k, accuracy: rows, meanOverlap: mean, itemsWithoutOverlap: none,
                                overlapByPopularityDecile: deciles,
                                negativeShareTextNeighbours: SemanticAnalysis.negativeShare(textPairs, weights: weights),
                                negativeShareTaskNeighbours: SemanticAnalysis.negativeShare(taskPairs, weights: weights),
                                closeButWrong: pairRows)
            if let svg {
                let series = PlotSeries(name: "top-\(k) text ∩ co-interaction neighbours",
                                        points: deciles.enumerated().map { (x: Double($0.offset + 1), y: $0.element, label: String(format: "%.3f", $0.element)) })
                let plot = linePlot([series], title: "Text neighbours that are also interaction neighbours, \(folder.name)",
                                    xTitle: "popularity decile (1 = least popular)", yTitle: "mean overlap")
                try AtomicWrite.file(Data(plot.utf8), to: svg)
            }
            if json { try printJSON(output); return }
            print("semantic vs task on \(folder.name), full ranking, K = \(k)")
            var accuracy = TextTable([.init(name: "model"), .init(name: "Recall@\(k)", rightAligned: true), .init(name: "NDCG@\(k)", rightAligned: true),
                                      .init(name: "HR@\(k)", rightAligned: true), .init(name: "train s", rightAligned: true)])
            accuracy.rows = rows.map { [$0.model, String(format: "%.4f", $0.recall), String(format: "%.4f", $0.ndcg),
                                        String(format: "%.4f", $0.hitRate), String(format: "%.1f", $0.trainSeconds)] }
            print(accuracy.render())
            print(String(format: "top-%d text neighbours among the top-%d co-interaction neighbours: mean %.3f; %.1f%% of %d items share none",
                         k, k, mean, none * 100, known.count))
            print("by popularity decile (least to most popular): " + deciles.map { String(format: "%.3f", $0) }.joined(separator: " "))
            print(String(format: "EASE weight negative for %.1f%% of text-neighbour pairs, %.1f%% of co-interaction-neighbour pairs",
                         output.negativeShareTextNeighbours * 100, output.negativeShareTaskNeighbours * 100))
            print("\nclose but wrong (text neighbours with the most negative EASE weights):")
            var table = TextTable([.init(name: "item"), .init(name: "text neighbour"), .init(name: "cosine", rightAligned: true), .init(name: "EASE B", rightAligned: true)])
            func short(_ t: String) -> String { t.count > 60 ? String(t.prefix(57)) + "..." : t }
            table.rows = pairRows.map { ["\(short($0.title)) [\($0.item)]", "\(short($0.neighbourTitle)) [\($0.neighbour)]",
                                         String(format: "%.3f", $0.textSimilarity), String(format: "%.4f", $0.easeWeight)] }
            print(table.render())
            if let svg { print("plot: \(svg)") }
        }
    }

    struct ColdStart: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "cold-start",
            abstract: "Items no one has interacted with yet: can their text place them? A seeded share of the items is held out of training.",
            discussion: """
            A seeded --fraction of the train items that have text loses every train interaction; the models are
            trained on the rest with those items added back as cold items (no interaction, content only):
            --models from two-tower (item vectors from text, --set idDropout, genres when the item file has them),
            text-knn, vq-rec (the cold items' codes from their text), sasrec with items=text, and popularity
            (which cannot rank them: the floor). For each test user with a test item
            among the cold items: Recall@K of those items in the full ranking (every item, seen ones excluded)
            and among the cold items alone, beside the expected recall of a random order of the cold items.
            """
        )
        @Option(name: .long, help: "Split folder.") var split: String
        @Option(name: .long, help: "Item metadata or text: movies.dat, u.item, items.tsv or a .text file.") var items: String?
        @Option(name: .long, help: "Item vectors (.npy with PATH.ids, or TSV) instead of embedding the text.") var itemVectors: String?
        @Option(name: .long, help: "The sentence encoder's folder (default: $AFFINITY_TEXT_MODEL).") var textModel: String?
        @Option(name: .long, help: "Share of the train items made cold.") var fraction = 0.1
        @Option(name: .long, help: "Seed of the choice of cold items.") var seed: UInt64 = 42
        @Option(name: .customLong("set"), help: "A setting, key=value for the two-tower (defaults here: itemVectors=true, idDropout=0.5) or MODEL.key=value for another model (repeatable).") var settings: [String] = []
        @Option(name: .long, help: "Models, comma-separated: two-tower, text-knn, vq-rec, sasrec (items=text), popularity.") var models = "two-tower,text-knn,popularity"
        @Option(name: .shortAndLong, parsing: .unconditional, help: "Cutoff K.") var k = 20
        @Flag(name: .long, help: "Print JSON on stdout.") var json = false

        func validate() throws {
            guard fraction > 0 && fraction < 1 else { throw ValidationError("--fraction must be in (0, 1), got \(fraction)") }
            guard k > 0 else { throw ValidationError("-k must be positive, got \(k)") }
        }

        struct Row: Encodable { var model: String; var recallFull: Double; var recallAmongCold: Double; var trainSeconds: Double }
        struct Output: Encodable { var split: String; var coldItems: Int; var users: Int; var k: Int; var randomAmongCold: Double; var rows: [Row] }

        func run() throws {
            let folder = try SplitFolder.read(split)
            let catalog = try items.map { try ItemCatalog.read(path: $0) } ?? folder.catalog
            let trainItems = folder.train.items
            let vectors = try itemVectors.map { try readItemVectors($0, items: trainItems) }
                ?? embedItemTexts(catalog, items: trainItems, textModel: textModel)
            // The cold items: a seeded share of the train items that have text.
            var candidates = vectors.nonZeroRows()
            var g = SeededGenerator(seed: seed)
            g.shuffle(&candidates)
            let coldIndexes = Array(candidates.prefix(max(1, Int((Double(trainItems.count) * fraction).rounded()))))
            let cold = coldIndexes.map { trainItems[$0] }
            let coldSet = Set(cold)
            // Train without any interaction of theirs; test is unchanged.
            var rows: [(user: String, item: String, rating: Float?, timestamp: Int64?)] = []
            let train = folder.train
            for r in 0..<train.count where !coldSet.contains(train.items[Int(train.itemIndices[r])]) {
                rows.append((user: train.users[Int(train.userIndices[r])], item: train.items[Int(train.itemIndices[r])],
                             rating: train.ratings?[r], timestamp: train.timestamps?[r]))
            }
            let reduced = SplitFolder(path: folder.path, train: InteractionLog(source: train.source, rows: rows), test: folder.test,
                                      valid: folder.valid, meta: folder.meta, catalog: folder.catalog)
            var coldVectors = Matrix(rows: reduced.train.items.count + cold.count, columns: vectors.columns)
            let allItems = IDVocabulary(reduced.train.items.ids + cold)
            for (r, id) in allItems.ids.enumerated() {
                let i = trainItems.index(of: id)!
                for c in 0..<vectors.columns { coldVectors[r, c] = vectors[i, c] }
            }
            Console.note("\(cold.count) cold items (of \(trainItems.count)); \(train.count - rows.count) train rows removed")
            // Settings: "MODEL.key=value" for that model, "key=value" for the two-tower.
            var byModel: [String: [String: String]] = [:]
            for (key, value) in try parseSettings(settings) {
                let known = [TwoTower.modelType, TextKNN.modelType, VQRec.modelType, SASRec.modelType, Popularity.modelType]
                if let model = known.first(where: { key.hasPrefix($0 + ".") }) {
                    byModel[model, default: [:]][String(key.dropFirst(model.count + 1))] = value
                } else {
                    byModel[TwoTower.modelType, default: [:]][key] = value
                }
            }
            byModel[TwoTower.modelType, default: [:]]["itemVectors"] = byModel[TwoTower.modelType]?["itemVectors"] ?? "true"
            byModel[TwoTower.modelType, default: [:]]["idDropout"] = byModel[TwoTower.modelType]?["idDropout"] ?? "0.5"
            byModel[SASRec.modelType, default: [:]]["items"] = "text"
            let names = models.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            for name in names where ![TwoTower.modelType, TextKNN.modelType, VQRec.modelType, SASRec.modelType, Popularity.modelType].contains(name) {
                throw ValidationError("--models: '\(name)' cannot place cold items (two-tower, text-knn, vq-rec, sasrec, popularity)")
            }
            var out: [Row] = []
            var users = 0
            for name in names {
                let modelSettings = byModel[name] ?? [:]
                let (trained, seconds) = try trainOnSplit(reduced, model: name, settings: modelSettings, catalog: catalog,
                                                          itemVectors: name == Popularity.modelType ? nil : coldVectors,
                                                          coldItems: name == Popularity.modelType ? [] : cold)
                let (full, amongCold, evaluated) = coldRecall(trained, test: folder.test, cold: cold)
                users = max(users, evaluated)
                let label = name == SASRec.modelType ? "sasrec items=text" : name
                out.append(Row(model: label, recallFull: full, recallAmongCold: amongCold, trainSeconds: seconds))
                Console.note(String(format: "%@: cold Recall@%d %.4f full ranking, %.4f among cold items", label, k, full, amongCold))
            }
            let random = Double(min(k, cold.count)) / Double(cold.count)
            let output = Output(split: folder.name, coldItems: cold.count, users: users, k: k, randomAmongCold: random, rows: out)
            if json { try printJSON(output); return }
            print("cold start on \(folder.name): \(cold.count) items held out of training (seed \(seed)), \(users) test users with a cold test item")
            var table = TextTable([.init(name: "model"), .init(name: "Recall@\(k) full", rightAligned: true),
                                   .init(name: "Recall@\(k) among cold", rightAligned: true), .init(name: "train s", rightAligned: true)])
            table.rows = out.map { [$0.model, String(format: "%.4f", $0.recallFull), String(format: "%.4f", $0.recallAmongCold), String(format: "%.1f", $0.trainSeconds)] }
            table.rows.append(["random order of the cold items", "-", String(format: "%.4f", random), "-"])
            print(table.render())
        }

        /// Recall@k of each test user's cold test items: in the full ranking (seen items excluded) and
        /// among the cold items alone; the mean over users known to the model with a cold test item.
        func coldRecall(_ trained: TrainedModel, test: InteractionLog, cold: [String]) -> (full: Double, amongCold: Double, users: Int) {
            let coldIndexes = cold.compactMap { trained.items.index(of: $0) }
            let coldSet = Set(coldIndexes)
            var targets: [Int: Set<Int>] = [:]
            for r in 0..<test.count {
                guard let u = trained.users.index(of: test.users[Int(test.userIndices[r])]),
                      let i = trained.items.index(of: test.items[Int(test.itemIndices[r])]), coldSet.contains(i) else { continue }
                targets[u, default: []].insert(i)
            }
            var full = 0.0, among = 0.0
            let model = trained.model
            var everything = MaskedTopK(count: model.itemCount), amongCold = MaskedTopK(count: coldIndexes.count)
            for (u, t) in targets {
                let scores = model.scores(forUser: u)
                let denominator = Double(min(k, t.count))
                let top = everything.select(scores, k: k, excluding: model.seenItems(ofUser: u))
                full += Double(top.filter { t.contains($0.index) }.count) / denominator
                let topCold = amongCold.select(coldIndexes.map { scores[$0] }, k: k, excluding: [Int]()).map { coldIndexes[$0.index] }
                among += Double(topCold.filter { t.contains($0) }.count) / denominator
            }
            let n = Double(max(targets.count, 1))
            return (full / n, among / n, targets.count)
        }
    }

    struct Personas: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "personas",
            abstract: "Are a persona model's personas real? Usage, attribution and genre coherence over its users.",
            discussion: """
            For every known user of an amp-cf model (or --users of them, a seeded sample): how many personas the
            history uses (each history item goes to the persona with its largest attention) and their effective
            number; the serving persona's attention over the top -k and how many personas serve one list; and,
            with genres (the model's catalog or --items), the mean genre Jaccard similarity of history items
            inside one persona against the same histories cut at random into groups of the same sizes.
            """
        )
        @Option(name: .long, help: "A saved amp-cf model folder.") var model: String
        @Option(name: .long, help: "Item metadata with genres (default: the model's own catalog).") var items: String?
        @Option(name: .long, help: "Users to measure, a seeded sample (default: all).") var users: Int?
        @Option(name: .shortAndLong, parsing: .unconditional, help: "Length of the recommendation lists.") var k = 10
        @Option(name: .long, help: "Seed of the sample and the random groups.") var seed: UInt64 = 42
        @Flag(name: .long, help: "Print JSON on stdout.") var json = false

        func validate() throws {
            guard k > 0 else { throw ValidationError("-k must be positive, got \(k)") }
            if let users, users < 1 { throw ValidationError("--users must be positive, got \(users)") }
        }

        func run() throws {
            let trained = try TrainedModel.load(from: model)
            guard let personaModel = trained.model as? any PersonaRecommender else {
                throw CommandError("model type '\(trained.modelType)' has one vector per user, no personas (train an amp-cf model)")
            }
            let catalog = try items.map { try ItemCatalog.read(path: $0) } ?? trained.catalog
            let profile = itemProfile(trained, catalog: catalog)
            var chosen: [Int]?
            if let users, users < trained.users.count {
                var g = SeededGenerator(seed: seed)
                chosen = Array(g.permutation(trained.users.count).prefix(users)).sorted()
            }
            let result = try PersonaAnalysis.measure(personaModel, users: chosen, k: k, categories: profile.hasCategories ? profile.categories : nil, seed: seed)
            if json { try printJSON(result); return }
            print("\(result.users) users, \(result.personas) personas, top-\(result.k) lists")
            print(String(format: "personas holding history items: %.2f of %d (effective number %.2f)", result.meanUsedPersonas, result.personas, result.meanEffectivePersonas))
            print(String(format: "serving persona's attention: %.3f (1/P = %.3f); personas serving one list: %.2f",
                         result.meanServingAttention, 1 / Double(result.personas), result.meanServingPersonas))
            if let within = result.withinPersonaGenreSimilarity, let random = result.randomGroupGenreSimilarity {
                print(String(format: "genre similarity of history pairs within a persona: %.4f; random groups of the same sizes: %.4f", within, random)
                      + (random > 0 ? String(format: " (%+.1f%%)", (within / random - 1) * 100) : ""))
            } else {
                Console.note("note: no genres (give --items, or train with --items), so no genre coherence")
            }
        }
    }

    /// `affinity analyze tsne`: a 2-D map of any vectors (the benchmark against scikit-learn runs it).
    struct TSNEMap: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "tsne",
            abstract: "t-SNE map of vectors (.npy or .fvecs): Barnes-Hut or exact, with its trustworthiness.",
            discussion: """
            Settings and schedule as scikit-learn's TSNE (perplexity 30, early exaggeration 12 for 250
            iterations, learning rate max(n/48, 50), 1,000 iterations, PCA start). Writes the map as an
            n x 2 .npy. Benchmarks/peers/tsne.py runs scikit-learn on the same vectors beside it.
            """
        )
        @Option(name: .long, help: "Input vectors: .npy (float32, 2-D) or .fvecs.") var vectors: String
        @Option(name: .long, help: "Write the n x 2 map here (.npy).") var out: String?
        @Option(name: .long, help: "barnes-hut or exact (O(n²): small inputs).") var method: TSNE.Method = .barnesHut
        @Option(name: .long, help: "Perplexity.") var perplexity = 30.0
        @Option(name: .long, help: "Iterations.") var iterations = 1_000
        @Option(name: .long, help: "Barnes-Hut's θ.") var angle = 0.5
        @Flag(name: .long, help: "L2-normalise the rows first (Euclidean distance then ranks as cosine).") var normalize = false
        @Option(name: .long, help: "Seed.") var seed: UInt64 = 42
        @Option(name: .long, help: "Threads (0 = all cores).") var threads = 0
        @Flag(name: .long, help: "Print JSON on stdout.") var json = false

        func validate() throws {
            guard perplexity > 1 else { throw ValidationError("--perplexity must be above 1, got \(perplexity)") }
            guard iterations >= 250 else { throw ValidationError("--iterations must be at least 250 (the early exaggeration's length), got \(iterations)") }
            guard angle >= 0 && angle < 1 else { throw ValidationError("--angle must be in [0, 1), got \(angle)") }
        }

        func run() throws {
            var x = vectors.hasSuffix(".fvecs") ? try VectorFiles.readFvecs(vectors) : try NPY.read(vectors)
            if normalize { x = ExactSearch.normalizedRows(x) }
            var c = TSNE.Configuration()
            (c.method, c.perplexity, c.iterations, c.angle, c.seed, c.threads) = (method, perplexity, iterations, angle, seed, threads)
            let clock = Stopwatch()
            let map: Matrix
            do {
                map = try TSNE(configuration: c).embed(x) { iteration, kl in
                    Console.progress("t-SNE iteration \(iteration) of \(c.iterations), KL \(String(format: "%.3f", kl))")
                }
            } catch { throw CommandError("\(vectors): \(error)") }
            Console.clearProgress()
            let seconds = clock.seconds
            let trust: Double? = x.rows > 30 ? trustworthiness(input: x, map: map, k: 10, threads: threads) : nil
            if let out { try NPY.write(map, to: out) }
            struct Output: Encodable { var items: Int; var dimension: Int; var method: String; var seconds: Double; var trustworthiness: Double?; var threads: Int }
            let result = Output(items: x.rows, dimension: x.columns, method: method.rawValue, seconds: seconds, trustworthiness: trust,
                                threads: Parallelism.resolve(threads))
            if json { try printJSON(result) } else {
                print("t-SNE (\(method.rawValue)) of \(x.rows) vectors of \(x.columns) dimensions: \(String(format: "%.2f", seconds)) s on \(result.threads) threads, trustworthiness(k=10) \(trust.map { String(format: "%.4f", $0) } ?? "not measured (30 vectors or fewer)")")
            }
        }
    }
}

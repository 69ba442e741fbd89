import AffinityData
import AffinityEval
import AffinityLinalg
import AffinityModels
import AffinityPlot
import ArgumentParser
import Foundation

/// `affinity report`: one self-contained HTML file that shows what several models learned on one
/// split: accuracy and beyond-accuracy side by side, t-SNE maps of the item embeddings coloured by
/// genre, nearest neighbours of well-known items, genre similarity, popularity bias and per-user
/// metric distributions.
struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "An HTML report comparing models on a split: metrics, t-SNE maps, neighbours, genre similarity, popularity bias.",
        discussion: """
        Each --models entry is a saved model folder, or a model type trained on the split's train.tsv
        with its defaults. Models are aligned by item ID on the split's training items; a model that
        lacks some of them is reported with the count. A model without item embeddings (EASE,
        item-kNN, popularity) gets every section but the map and genre similarity, with a note.
        The page is one file: inline SVG and CSS, no network, no JavaScript.

        Example:
          affinity report --split splits/ml1m-h --models ease,ials,two-tower,item2vec --out report.html
        """
    )

    @Option(name: .long, help: "Split folder.") var split: String
    @Option(name: .long, help: "Comma-separated saved model folders or model types (trained with defaults).") var models: String
    @Option(name: .long, help: "The HTML file to write.") var out: String
    @Option(name: .long, help: "Also compare these saved evaluations (`affinity evaluate --json` output), comma-separated.") var evaluations: String?
    @Option(name: .long, help: "Item metadata for titles and genres (default: the split's items.tsv, or the model's catalog).") var items: String?
    @Option(name: .long, help: "Items whose neighbours are listed, comma-separated IDs (default: the 5 most popular).") var probe: String?
    @Option(name: .long, help: "Also write the report's numbers as JSON here.") var json: String?
    @Option(name: .shortAndLong, parsing: .unconditional, help: "List length for popularity bias and neighbour tables.") var k = 10
    @Option(name: .long, help: "Most items in a t-SNE map (a seeded sample above it).") var mapItems = 20_000
    @Option(name: .long, help: "t-SNE perplexity.") var perplexity = 30.0
    @Option(name: .long, help: "Seed of every sample, permutation and map.") var seed: UInt64 = 42
    @Option(name: .long, help: "test (valid.tsv joins the history when present) or valid.") var target: EvaluationTarget = .test
    @Option(name: .long, help: "Threads (0 = all cores).") var threads = 0

    func validate() throws {
        guard k > 0 else { throw ValidationError("-k must be positive, got \(k)") }
        guard mapItems >= 10 else { throw ValidationError("--map-items must be at least 10, got \(mapItems)") }
        guard perplexity >= 2 else { throw ValidationError("--perplexity must be at least 2, got \(perplexity)") }
        guard !entries.isEmpty else { throw ValidationError("--models: give at least one model folder or model type") }
        for entry in entries where ModelRegistry.type(named: entry) == nil {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: entry, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw ValidationError("--models: '\(entry)' is neither a model folder nor a model type (\(ModelRegistry.names.joined(separator: ", ")))")
            }
        }
    }

    var entries: [String] { models.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }

    func run() throws {
        let clock = Stopwatch()
        let folder = try SplitFolder.read(split)
        let given = try items.map { try ItemCatalog.read(path: $0) }
        let data = try ReportBuilder(folder: folder, catalog: given, k: k, mapItems: mapItems, perplexity: perplexity, seed: seed,
                                     target: target, threads: threads)
            .build(entries: entries, evaluations: evaluations.map { $0.split(separator: ",").map(String.init) } ?? [],
                   probe: probe.map { $0.split(separator: ",").map(String.init) })
        let page = ReportPage(data).render()
        try AtomicWrite.file(Data(page.utf8), to: out)
        if let json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
            try AtomicWrite.file(try encoder.encode(data), to: json)
        }
        print("report: \(out) (\(ByteCountFormatter.string(fromByteCount: Int64(page.utf8.count), countStyle: .file)), \(data.models.count) models, made in \(Console.duration(clock.seconds)))")
    }
}

/// Everything the report shows, computed once (and written as JSON with `--json`).
struct ReportData: Encodable {
    struct Model: Encodable {
        var name: String
        /// "trained with defaults" or the folder it was loaded from.
        var source: String
        var trainSeconds: Double?
        var report: EvaluationReport
        /// Training items the model does not know (aligned by ID).
        var itemsMissing: Int
        var hasEmbeddings: Bool
        var map: Map?
        var genreSimilarity: EmbeddingAnalysis.GenreSimilarity?
        var popularity: EmbeddingAnalysis.PopularityBias
        /// Per-user NDCG@k and Recall@k of the evaluated users.
        var userNDCG: [Double]
        var userRecall: [Double]
        /// For each probe item: its neighbours' IDs, best first (empty when the model does not know it).
        var neighbours: [[String]]
        var notes: [String]
    }
    struct Map: Encodable {
        var items: [String]
        var x: [Float]
        var y: [Float]
        /// nil for 30 items or fewer.
        var trustworthiness: Double?
        var sampledFrom: Int?
        var seconds: Double
        /// The perplexity used: --perplexity, lowered to (items − 1) / 3 for a small model.
        var perplexity: Double
    }
    var split: String
    var target: String
    var users: Int
    var items: Int
    var k: Int
    var created: String
    var models: [Model]
    var saved: [SavedEvaluation]
    var savedFiles: [String]
    var probe: [String]
    var titles: [String: String]
    var genres: [String: [String]]
    var mapGenres: [String]
    var trainingPopularityShare: [Double]
    var seconds: Double
}

/// Computes `ReportData`, reporting each step on stderr.
struct ReportBuilder {
    var folder: SplitFolder
    var catalog: ItemCatalog?
    var k: Int
    var mapItems: Int
    var perplexity: Double
    var seed: UInt64
    var target: EvaluationTarget
    var threads: Int

    func build(entries: [String], evaluations: [String], probe given: [String]?) throws -> ReportData {
        let clock = Stopwatch()
        let universe = folder.train.items
        let trainMatrix = folder.train.matrix()
        let counts = trainMatrix.columnCounts()
        // Probe items: given, else the k most popular (at most 5).
        let probe: [String]
        if let given {
            for id in given where universe.index(of: id) == nil {
                throw CommandError("--probe: item '\(id)' is not among the split's \(universe.count) training items")
            }
            probe = given
        } else {
            probe = (0..<universe.count).sorted { counts[$0] != counts[$1] ? counts[$0] > counts[$1] : $0 < $1 }.prefix(5).map { universe[$0] }
        }
        var models: [ReportData.Model] = []
        var catalogs: [ItemCatalog] = []
        for (n, entry) in entries.enumerated() {
            let step = "model \(n + 1) of \(entries.count), \(entry)"
            let trained: TrainedModel, trainSeconds: Double?, source: String
            if ModelRegistry.type(named: entry) != nil {
                Console.note("report: \(step): training with defaults...")
                (trained, trainSeconds) = try trainOnSplit(folder, model: entry, settings: [:], catalog: catalog)
                source = "trained on the split with defaults"
            } else {
                Console.note("report: \(step): loading...")
                trained = try TrainedModel.load(from: entry)
                try checkSplitMatches(trained, folder, target: target, allowForeignSplit: false)
                (trainSeconds, source) = (trained.info["train_seconds"].flatMap(Double.init), "loaded from \(entry)")
            }
            if let c = trained.catalog { catalogs.append(c) }
            Console.note("report: \(step): evaluating...")
            let evaluator = try Evaluator(cutoffs: Set([k, 20]).sorted(), threads: threads, keepPerUser: true, keepRankings: true)
            let (report, _) = try evaluate(trained, on: folder, evaluator: evaluator, target: target)
            models.append(try analyse(trained, name: trained.modelType, source: source, trainSeconds: trainSeconds, report: report,
                                      probe: probe, counts: counts, step: step))
        }
        var merged = catalog ?? folder.catalog ?? ItemCatalog()
        for c in catalogs { merged = merged.filling(from: c) }
        let saved = try evaluations.map { try SavedEvaluation.read($0) }
        let names = Set(universe.ids)
        return ReportData(split: folder.name, target: target.rawValue, users: folder.train.users.count, items: universe.count, k: k,
                          created: ISO8601DateFormatter().string(from: Date()), models: models, saved: saved, savedFiles: evaluations,
                          probe: probe, titles: merged.titles.filter { names.contains($0.key) },
                          genres: merged.genres.filter { names.contains($0.key) }, mapGenres: Self.mapGenres(merged, items: universe),
                          trainingPopularityShare: models.first?.popularity.trainingShare ?? [], seconds: clock.seconds)
    }

    /// The genres that get a colour in the maps: the seven most frequent (the rest are "other").
    static func mapGenres(_ catalog: ItemCatalog, items: IDVocabulary) -> [String] {
        var frequency: [String: Int] = [:]
        for id in items.ids { for g in catalog.genres[id] ?? [] { frequency[g, default: 0] += 1 } }
        return frequency.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.prefix(7).map(\.key)
    }

    func analyse(_ trained: TrainedModel, name: String, source: String, trainSeconds: Double?, report: EvaluationReport,
                 probe: [String], counts: [Int], step: String) throws -> ReportData.Model {
        let universe = folder.train.items
        let model = trained.model
        var notes: [String] = []
        let missing = universe.ids.filter { trained.items.index(of: $0) == nil }.count
        if missing > 0 { notes.append("\(missing) of the split's \(universe.count) training items are unknown to this model and left out of its sections.") }
        // Lists in the split's item space, for popularity bias.
        let lists = (report.rankings ?? []).map { list in list.prefix(k).compactMap { universe.index(of: trained.items[$0]) } }
        let bias = EmbeddingAnalysis.popularityBias(lists: lists, popularity: counts)
        let cutoff = report.metrics.firstIndex { $0.k == k } ?? 0
        let perUser = report.perUser ?? []
        let neighbours = try probe.map { id -> [String] in
            guard let i = trained.items.index(of: id) else { return [] }
            return try model.similarItems(to: i, k: k).map { trained.items[$0.index] }
        }
        let embeddings = (model as? any EmbeddingRecommender)?.itemEmbeddings ?? (model as? any MultiQueryRecommender)?.itemEmbeddings
        var map: ReportData.Map? = nil
        var similarity: EmbeddingAnalysis.GenreSimilarity? = nil
        if let embeddings {
            // Rows of the split's training items this model knows, L2-normalised (cosine geometry).
            var known = (0..<universe.count).compactMap { i in trained.items.index(of: universe[i]).map { (universe[i], $0) } }
            var sampledFrom: Int? = nil
            if known.count > mapItems {
                var random = SeededGenerator(seed: seed)
                random.shuffle(&known)
                sampledFrom = known.count
                known = Array(known.prefix(mapItems))
            }
            var x = Matrix(rows: known.count, columns: embeddings.columns)
            for (r, (_, i)) in known.enumerated() {
                for c in 0..<embeddings.columns { x.values[r * embeddings.columns + c] = embeddings[i, c] }
            }
            x = ExactSearch.normalizedRows(x)
            var configuration = TSNE.Configuration()
            configuration.perplexity = min(perplexity, Double(known.count - 1) / 3)
            configuration.seed = seed
            configuration.threads = threads
            Console.note("report: \(step): t-SNE of \(known.count) items...")
            let clock = Stopwatch()
            let y = try TSNE(configuration: configuration).embed(x) { iteration, kl in
                Console.progress("t-SNE iteration \(iteration) of \(configuration.iterations), KL \(String(format: "%.3f", kl))")
            }
            Console.clearProgress()
            let seconds = clock.seconds
            let trust = known.count > 30 ? trustworthiness(input: x, map: y, k: 10, threads: threads) : nil
            map = ReportData.Map(items: known.map(\.0), x: (0..<y.rows).map { y[$0, 0] }, y: (0..<y.rows).map { y[$0, 1] },
                                 trustworthiness: trust, sampledFrom: sampledFrom, seconds: seconds, perplexity: configuration.perplexity)
            // Genre similarity over the model's items.
            let genresByID = ((catalog ?? folder.catalog)?.genres ?? [:]).merging(trained.catalog?.genres ?? [:]) { mine, _ in mine }
            var names: [String] = []
            var index: [String: Int] = [:]
            for id in trained.items.ids { for g in genresByID[id] ?? [] where index[g] == nil && names.count < 64 { index[g] = names.count; names.append(g) } }
            if names.count >= 2 {
                Console.note("report: \(step): genre similarity...")
                let genres = trained.items.ids.map { id in (genresByID[id] ?? []).compactMap { index[$0] } }
                similarity = EmbeddingAnalysis.genreSimilarity(vectors: embeddings, genres: genres, names: names, seed: seed, threads: threads)
            } else {
                notes.append("No genres for this model's items: no genre similarity.")
            }
        } else {
            notes.append("\(name) has no item embeddings: no map and no genre similarity; its neighbours come from its own item-item similarity.")
        }
        return ReportData.Model(name: name, source: source, trainSeconds: trainSeconds, report: report, itemsMissing: missing,
                                hasEmbeddings: embeddings != nil, map: map, genreSimilarity: similarity, popularity: bias,
                                userNDCG: perUser.map { $0.ndcg[cutoff] }, userRecall: perUser.map { $0.recall[cutoff] },
                                neighbours: neighbours, notes: notes)
    }
}

/// The report as one HTML page.
struct ReportPage {
    var data: ReportData
    init(_ data: ReportData) { self.data = data }

    func title(_ id: String) -> String { data.titles[id] ?? id }
    func f(_ v: Double?, _ digits: Int = 4) -> String { v.map { $0.isFinite ? String(format: "%.\(digits)f", $0) : "–" } ?? "–" }

    func render() -> String {
        var b = "<h1>Affinity report: \(HTML.escape(data.split))</h1>\n"
        b += "<p class=\"note\">\(data.users) users, \(data.items) training items; evaluated on \(HTML.escape(data.target)) with full ranking "
        b += "(every training item a candidate, each user's training items excluded). Made \(HTML.escape(data.created)) in \(Console.duration(data.seconds)).</p>\n"
        b += "<ul class=\"note\">" + data.models.map { "<li><b>\(HTML.escape($0.name))</b>: \(HTML.escape($0.source))\($0.trainSeconds.map { String(format: ", trained in %.1f s", $0) } ?? "")</li>" }.joined() + "</ul>\n"
        b += comparison() + distributions() + popularity() + maps() + neighbours() + genreSimilarity()
        let notes = data.models.flatMap { m in m.notes.map { "\(m.name): \($0)" } }
        if !notes.isEmpty { b += "<h2>Notes</h2>\n<ul class=\"warn\">" + notes.map { "<li>\(HTML.escape($0))</li>" }.joined() + "</ul>\n" }
        return HTML.page(title: "Affinity report: \(data.split)", body: b)
    }

    func comparison() -> String {
        let k = data.k
        var rows: [[String]] = []
        func row(_ name: String, _ report: EvaluationReport, _ seconds: Double?) -> [String] {
            let m = report.metrics(at: k), m20 = report.metrics(at: 20)
            let beyond = report.beyondAccuracy?.first { $0.k == k }
            return [name, f(m?.recall), f(m?.ndcg), f(m20?.recall), f(m20?.ndcg), f(m?.hitRate), f(m?.mrr), f(m?.coverage),
                    f(beyond?.intraListDiversity), f(beyond?.novelty, 2), f(beyond?.exposureGini), f(beyond?.calibrationKL), f(seconds, 1)]
        }
        for m in data.models { rows.append(row(m.name, m.report, m.trainSeconds)) }
        for (s, file) in zip(data.saved, data.savedFiles) { rows.append(row("\(s.model) (saved: \((file as NSString).lastPathComponent), \(s.split))", s.report, s.trainSeconds)) }
        let columns: [HTML.Column] = [.init("model"), .init("Recall@\(k)", numeric: true), .init("NDCG@\(k)", numeric: true),
                                      .init("Recall@20", numeric: true), .init("NDCG@20", numeric: true), .init("HR@\(k)", numeric: true),
                                      .init("MRR@\(k)", numeric: true), .init("Coverage@\(k)", numeric: true), .init("ILD@\(k)", numeric: true),
                                      .init("novelty@\(k) (bits)", numeric: true), .init("exposure Gini@\(k)", numeric: true),
                                      .init("miscalibration KL@\(k)", numeric: true), .init("train s", numeric: true)]
        var s = "<h2>Comparison</h2>\n" + HTML.table(columns, rows, id: "comparison")
        s += "<p class=\"note\">ILD: 1 − genre Jaccard over list pairs; novelty: mean self-information of recommended items; "
        s += "Gini of exposure over all candidates (0 = every item recommended equally); KL between the genre mix of history and list.</p>\n"
        return s
    }

    func distributions() -> String {
        let k = data.k
        var s = "<h2>Per-user metrics</h2>\n<div class=\"grid\">"
        s += "<div>" + histogramPlot(data.models.map { ($0.name, $0.userNDCG) }, bins: 10, range: 0...1,
                                     title: "NDCG@\(k) per user", xTitle: "NDCG@\(k)", size: (560, 340)) + "</div>"
        s += "<div>" + histogramPlot(data.models.map { ($0.name, $0.userRecall) }, bins: 10, range: 0...1,
                                     title: "Recall@\(k) per user", xTitle: "Recall@\(k)", size: (560, 340)) + "</div></div>\n"
        let zero = data.models.map { m in [m.name, String(m.userNDCG.count), f(Double(m.userNDCG.filter { $0 == 0 }.count) / Double(max(m.userNDCG.count, 1)), 3)] }
        s += HTML.table([.init("model"), .init("users", numeric: true), .init("share with no hit in the top \(k)", numeric: true)], zero)
        return s
    }

    func popularity() -> String {
        let groups = (0..<data.trainingPopularityShare.count).map { d in
            BarGroup(label: String(d + 1), values: [data.trainingPopularityShare[d]] + data.models.map { $0.popularity.recommendationShare[d] })
        }
        var s = "<h2>Popularity bias</h2>\n<p class=\"note\">Items split into ten equal groups by training interactions (decile 1 = the most popular tenth). "
        s += "Bars: each group's share of training interactions and of each model's top-\(data.k) slots.</p>\n"
        s += barChart(groups, series: ["training interactions"] + data.models.map(\.name), title: "Share by popularity decile",
                      xTitle: "popularity decile (1 = most popular)", yTitle: "share", size: (820, 420))
        return s
    }

    func maps() -> String {
        var s = "<h2>Item maps (t-SNE)</h2>\n<p class=\"note\">Barnes-Hut t-SNE of each model's L2-normalised item vectors (1,000 iterations, PCA start, seeded; perplexity under each map); "
        s += "colour: of the item's genres among the seven most frequent, the least frequent one (the most specific). Hover a dot for its title. Trustworthiness (k = 10) says how well the map keeps neighbourhoods (1 = perfectly).</p>\n<div class=\"grid\">"
        let colourOf = Dictionary(uniqueKeysWithValues: data.mapGenres.enumerated().map { ($1, $0) })
        for m in data.models {
            guard let map = m.map else {
                s += "<div><h3>\(HTML.escape(m.name))</h3><p class=\"note\">No item embeddings: no map.</p></div>"
                continue
            }
            let points = map.items.indices.map { n -> ScatterPoint in
                let id = map.items[n]
                let genres = data.genres[id] ?? []
                let category = genres.compactMap { colourOf[$0] }.max()
                return ScatterPoint(x: Double(map.x[n]), y: Double(map.y[n]), category: category,
                                    label: "\(title(id))\(genres.isEmpty ? "" : " — " + genres.joined(separator: ", "))")
            }
            var caption = "\(map.items.count) items, perplexity \(String(format: "%g", map.perplexity)), trustworthiness \(f(map.trustworthiness, 3)), \(String(format: "%.1f", map.seconds)) s"
            if let from = map.sampledFrom { caption += "; a seeded sample of \(map.items.count) of \(from) items" }
            s += "<div><h3>\(HTML.escape(m.name))</h3>" + scatterPlot(points, categories: data.mapGenres, title: "",
                                                                     size: (560, 480), radius: 2.2)
            s += "<p class=\"note\">\(HTML.escape(caption))</p></div>"
        }
        return s + "</div>\n"
    }

    func neighbours() -> String {
        var s = "<h2>Nearest neighbours</h2>\n<p class=\"note\">Each model's \(data.k) most similar items (its own item-item similarity: cosine of embeddings, or EASE's and item-kNN's weights).</p>\n"
        for (p, id) in data.probe.enumerated() {
            s += "<h3>\(HTML.escape(title(id)))</h3>\n"
            let rank = data.models.map { $0.neighbours[p].count }.max() ?? 0
            let rows = (0..<rank).map { r in [String(r + 1)] + data.models.map { m in r < m.neighbours[p].count ? title(m.neighbours[p][r]) : "" } }
            s += HTML.table([.init("#", numeric: true)] + data.models.map { .init($0.name) }, rows)
        }
        return s
    }

    func genreSimilarity() -> String {
        var s = "<h2>Genre similarity</h2>\n<p class=\"note\">Mean cosine between item vectors over pairs sharing a genre (intra) and sharing none (inter); "
        s += "the baseline shuffles genre sets among items (sizes kept) and measures the same difference.</p>\n"
        let rows = data.models.compactMap { m -> [String]? in
            guard let g = m.genreSimilarity else { return nil }
            return [m.name, String(g.items), f(g.intra), f(g.inter), f(g.difference), f(g.permutationMean) + " ± " + f(g.permutationStandardDeviation),
                    "\(g.permutationsAtLeastObserved) of \(g.permutations)"]
        }
        s += HTML.table([.init("model"), .init("items", numeric: true), .init("intra", numeric: true), .init("inter", numeric: true),
                         .init("intra − inter", numeric: true), .init("shuffled: mean ± sd", numeric: true), .init("shuffled ≥ observed", numeric: true)], rows)
        s += "<div class=\"grid\">"
        for m in data.models {
            guard let g = m.genreSimilarity else { continue }
            s += "<div><h3>\(HTML.escape(m.name))</h3>" + heatMap(g.matrix, rowLabels: g.genres, columnLabels: g.genres,
                                                                 title: "mean cosine, genre x genre (centre: inter-genre mean)",
                                                                 centre: g.inter, cellSize: 30) + "</div>"
        }
        return s + "</div>\n"
    }
}

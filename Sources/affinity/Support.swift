import AffinityData
import AffinityEval
import AffinityLinalg
import AffinityModels
import AffinityPipeline
import AffinityText
import ArgumentParser
import Foundation

/// Messages for people on stderr. Progress rewrites one line on a terminal; in logs and CI (stderr
/// not a terminal) it prints a plain line at most every `logInterval` seconds, so long steps show
/// they are alive without flooding the log.
enum Console {
    static let isTerminal = isatty(2) != 0
    /// Seconds between progress lines when stderr is not a terminal.
    static let logInterval = 5.0
    private static let lock = NSLock()
    nonisolated(unsafe) private static var lastLogged = Date.distantPast

    static func progress(_ message: String) {
        guard isTerminal else {
            let due = lock.locked { () -> Bool in
                guard Date().timeIntervalSince(lastLogged) >= logInterval else { return false }
                lastLogged = Date()
                return true
            }
            if due { FileHandle.standardError.write(Data("\(message)\n".utf8)) }
            return
        }
        FileHandle.standardError.write(Data("\u{1B}[2K\r\(message)".utf8))
    }

    static func clearProgress() {
        guard isTerminal else { return }
        FileHandle.standardError.write(Data("\u{1B}[2K\r".utf8))
    }

    static func note(_ message: String) {
        clearProgress()
        FileHandle.standardError.write(Data("\(message)\n".utf8))
    }

    /// Training progress of any model as one line: epoch, share done, examples per second, time
    /// elapsed and left, and the loss and validation HR@10 when the model computes them. Epoch
    /// ends with a loss or validation figure are always printed (they are the learning curve);
    /// the rest go through `progress` (a live line on a terminal, a line every 5 s in a log).
    static let training: TrainingProgress.Handler = { r in
        // A model fitted in one step (EASE, item-kNN, popularity) reports once: "ease done".
        var line = r.epochs == 1 && r.isEpochEnd ? "\(r.model) done" : "\(r.model) epoch \(r.epoch)/\(r.epochs)"
        if r.epochs > 1 || !r.isEpochEnd { line += r.isEpochEnd ? " done" : String(format: " %2.0f%%", r.epochFraction * 100) }
        line += ": " + rate(r.examplesPerSecond) + " \(r.exampleName)/s, " + duration(r.seconds) + " elapsed"
        if let left = r.remainingSeconds, r.fractionDone < 1 { line += ", about " + duration(left) + " left" }
        if let loss = r.loss { line += String(format: ", loss %.4f", loss) }
        if let hr = r.validationHitRate { line += String(format: ", validation \(r.validationName) %.4f", hr) }
        if r.isEpochEnd && (r.loss != nil || r.validationHitRate != nil || r.epoch == r.epochs) {
            note(line)
        } else {
            progress(line)
        }
    }

    /// 1234567 -> "1.23M".
    static func rate(_ value: Double) -> String {
        switch value {
        case 1e9...: return String(format: "%.2fG", value / 1e9)
        case 1e6...: return String(format: "%.2fM", value / 1e6)
        case 1e3...: return String(format: "%.1fk", value / 1e3)
        default: return String(format: "%.0f", value)
        }
    }

    /// Seconds as "42.0 s", "3 min 05 s" or "1 h 02 min".
    static func duration(_ seconds: Double) -> String {
        if seconds < 10 { return String(format: "%.2f s", seconds) }
        if seconds < 60 { return String(format: "%.1f s", seconds) }
        let s = Int(seconds.rounded())
        if s < 3600 { return String(format: "%d min %02d s", s / 60, s % 60) }
        return String(format: "%d h %02d min", s / 3600, (s % 3600) / 60)
    }
}

/// A failure found while running a command (after argument validation): printed as
/// "Error: ..." with exit code 1, without the usage banner.
struct CommandError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Prints `value` as JSON: indented, or on one line (`oneLine`) for harnesses that read a JSON line.
func printJSON<T: Encodable>(_ value: T, oneLine: Bool = false) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = oneLine ? [.sortedKeys, .withoutEscapingSlashes] : [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

/// Parses `--set key=value` options (`option` names them in errors).
func parseSettings(_ raw: [String], option: String = "--set") throws -> [String: String] {
    var out: [String: String] = [:]
    for item in raw {
        guard let eq = item.firstIndex(of: "="), eq != item.startIndex else {
            throw ValidationError("\(option) expects key=value, got '\(item)'")
        }
        out[String(item[..<eq])] = String(item[item.index(after: eq)...])
    }
    return out
}

/// Parses a comma-separated list of positive cutoffs such as `10,20,50`.
func parseCutoffs(_ raw: String) throws -> [Int] {
    let parts = raw.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
    let values = parts.compactMap { Int($0) }
    guard !parts.isEmpty, values.count == parts.count, values.allSatisfy({ $0 > 0 }) else {
        throw ValidationError("--cutoffs expects positive integers separated by commas, got '\(raw)'")
    }
    return values
}

/// Seconds elapsed while running `body`.
func timed<T>(_ body: () throws -> T) rethrows -> (T, Double) {
    let clock = Stopwatch()
    let value = try body()
    return (value, clock.seconds)
}

extension InteractionFormat: ExpressibleByArgument {}
extension SplitStrategy: ExpressibleByArgument {}
extension EvaluationTarget: ExpressibleByArgument {}

/// Options shared by commands that read an interaction file (docs/formats.md).
struct InputOptions: ParsableArguments {
    @Option(name: .long, help: "Interaction file: tsv, csv, jsonl or MovieLens, optionally .gz (docs/formats.md), or a MovieLens folder.")
    var input: String

    @Option(name: .long, help: "File layout: \(InteractionFormat.allCases.map(\.rawValue).joined(separator: "|")) (default: from the file name).")
    var format: InteractionFormat?

    @Option(name: .long, help: ArgumentHelp("Which columns hold what: role=column pairs, a header name or a 1-based position (default: the header's names, else user, item, rating, timestamp in that order).",
                                            valueName: "user=NAME,item=NAME,..."))
    var columns: String?

    @Flag(name: .long, help: "The first line is data, not a header.")
    var noHeader = false

    @Flag(name: .long, help: "The first line is a header even if its names are not recognised.")
    var header = false

    @Option(name: .long, help: "Field separator: tab, comma, semicolon, pipe, space, :: or one character (default: from the format).")
    var delimiter: String?

    func validate() throws {
        if noHeader && header { throw ValidationError("--header and --no-header contradict each other") }
    }

    /// The reader's options; errors name the flag.
    func readOptions() throws -> InteractionReadOptions {
        InteractionReadOptions(format: format, columns: try columns.map { try ColumnSelection(parsing: $0) },
                               header: noHeader ? .absent : (header ? .present : .auto),
                               delimiter: try delimiter.map { try FieldDelimiter(parsing: $0) })
    }

    /// Reads the log these options describe.
    func read() throws -> InteractionLog {
        try InteractionReader.read(path: input, options: readOptions())
    }
}

/// Fits a model on a split's train file and packages it with vocabularies and metadata.
func trainOnSplit(_ split: SplitFolder, model name: String, settings: [String: String], catalog: ItemCatalog?,
                  itemVectorsPath: String? = nil, userFeaturesPath: String? = nil, textModel: String? = nil,
                  itemVectors given: Matrix? = nil, coldItems: [String] = [], pretrain: [SplitFolder] = []) throws -> (TrainedModel, Double) {
    let textSASRec = try name == SASRec.modelType && SASRec.Configuration().applying(settings).items == .text
    // Cold items: known by their content only, added to the vocabulary with no interaction (the
    // two-tower places them by genres and text; text-knn, sasrec items=text and vq-rec by text).
    var itemVocabulary = split.train.items
    var interactions = split.train.matrix()
    if !pretrain.isEmpty && name != VQRec.modelType { throw CommandError("--pretrain is vq-rec's (pre-training on other domains' sequences and text), not \(name)'s") }
    if !coldItems.isEmpty {
        guard name == TwoTower.modelType || name == TextKNN.modelType || name == VQRec.modelType || textSASRec else {
            throw CommandError("cold items are placed by content: two-tower (with itemVectors or itemGenres), text-knn, sasrec with items=text and vq-rec only, not \(name)")
        }
        itemVocabulary = IDVocabulary(itemVocabulary.ids + coldItems.filter { itemVocabulary.index(of: $0) == nil })
        interactions = try SparseMatrix(rowCount: interactions.rowCount, columnCount: itemVocabulary.count, rowPointers: interactions.rowPointers,
                                        columns: interactions.columns, values: interactions.values)
    }
    // Item vectors: given (in the split's item order), from a file, else item text through the
    // sentence encoder for the models that need them (text-knn; two-tower with --set itemVectors=true).
    var itemVectors = try given ?? itemVectorsPath.map { try readItemVectors($0, items: itemVocabulary) }
    let twoTowerWantsVectors = try name == TwoTower.modelType && TwoTower.Configuration().applying(settings).itemVectors
    if itemVectors == nil && (name == TextKNN.modelType || twoTowerWantsVectors || name == VQRec.modelType || textSASRec) {
        itemVectors = try embedItemTexts(catalog ?? split.catalog, items: itemVocabulary, textModel: textModel)
    }
    Console.progress("training \(name) on \(interactions.rowCount) users x \(interactions.columnCount) items...")
    let (model, seconds) = try timed { () -> any PersistableRecommender in
        if name == TwoTower.modelType {
            // Per-epoch progress on stderr: loss, time and (with validationUsers) the validation HR@10.
            let configuration = try TwoTower.Configuration().applying(settings)
            // Item genres from the split's items.tsv (or the catalog given), as genre indexes.
            var side = TwoTower.SideInformation()
            if let genresByID = (catalog ?? split.catalog)?.genres, !genresByID.isEmpty {
                side.itemGenres = categoryIndexes(count: interactions.columnCount) { genresByID[itemVocabulary[$0]] ?? [] }
            }
            side.itemVectors = itemVectors
            if let path = userFeaturesPath {
                let byUser = try readUserFeatures(path)
                side.userCategories = categoryIndexes(count: interactions.rowCount) { byUser[split.train.users[$0]] ?? [] }
            }
            return try TwoTower.fit(interactions, configuration: configuration, sideInformation: side, progress: Console.training)
        }
        // Each user's items in time order (ties: file order); a leave-last-out split's valid.tsv
        // gives sequential models their validation targets.
        var data = TrainingData(log: split.train)
        if !coldItems.isEmpty { data = TrainingData(interactions: interactions, sequences: data.sequences, timeOrdered: data.timeOrdered) }
        if let valid = split.valid { data = data.withValidation(valid, users: split.train.users, items: itemVocabulary) }
        data.itemVectors = itemVectors
        if name == VQRec.modelType && !pretrain.isEmpty {
            let domains = try pretrain.map { folder -> TrainingData in
                var d = TrainingData(log: folder.train)
                Console.note("pre-training domain \(folder.name): \(d.userCount) users, \(d.itemCount) items")
                d.itemVectors = try embedItemTexts(folder.catalog, items: folder.train.items, textModel: textModel)
                return d
            }
            return try VQRec.fit(data, pretraining: domains, configuration: try VQRec.Configuration().applying(settings), progress: Console.training)
        }
        return try ModelRegistry.fit(name, data: data, settings: settings, progress: Console.training)
    }
    Console.clearProgress()
    var info = ["trained_on": split.path, "train_seconds": String(format: "%.3f", seconds)]
    if !pretrain.isEmpty { info["pretrained_on"] = pretrain.map(\.path).joined(separator: ",") }
    if let vq = model as? VQRec {
        Console.note("item codes: \(vq.codes.count) items x \(vq.codes.subspaces) sub-spaces; \(vq.collisions) code collisions resolved; \(vq.itemsWithoutText) items without text (coded from a zero vector, known by their interactions)")
        info["code_collisions"] = String(vq.collisions)
        info["items_without_text"] = String(vq.itemsWithoutText)
    }
    // The split's positive rule travels with the model: the server counts a rating event as a
    // positive by the same threshold.
    if let threshold = split.positiveThreshold { info[TrainedModel.positiveThresholdKey] = TrainedModel.positiveThresholdValue(threshold) }
    // Each item's latest training interaction rides in the catalog (items.json): freshness reads it.
    var itemCatalog = catalog ?? split.catalog
    if let lastSeen = ItemCatalog.lastSeen(in: split.train) {
        itemCatalog = itemCatalog ?? ItemCatalog()
        itemCatalog!.lastSeen = lastSeen
    }
    let trained = TrainedModel(model: model, users: split.train.users, items: itemVocabulary,
                               catalog: itemCatalog, info: info)
    return (trained, seconds)
}

/// The split folders of `--pretrain a,b`.
func pretrainFolders(_ list: String?) throws -> [SplitFolder] {
    guard let list else { return [] }
    let paths = list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    guard !paths.isEmpty else { throw CommandError("--pretrain: no split folder given") }
    return try paths.map { try SplitFolder.read($0) }
}

/// Category names per entity turned into dense category indexes, numbered in order of first appearance.
func categoryIndexes(count: Int, _ names: (Int) -> [String]) -> [[Int]] {
    var index: [String: Int] = [:]
    return (0..<count).map { e in
        names(e).map { name in
            if let n = index[name] { return n }
            index[name] = index.count
            return index.count - 1
        }
    }
}

/// Dense item vectors in the vocabulary's order, from a `.npy` file with its IDs in `PATH.ids`
/// (what `affinity text embed` and `affinity model export` write) or a TSV
/// `item<TAB>v1<TAB>v2...` (no header); items the file does not list get a zero vector.
func readItemVectors(_ path: String, items: IDVocabulary) throws -> Matrix {
    if path.hasSuffix(".npy") {
        let vectors = try NPY.read(path)
        guard FileManager.default.fileExists(atPath: path + ".ids") else {
            throw CommandError("\(path).ids is missing: the IDs of the rows of \(path), one per line (text embed and model export write it)")
        }
        let rowIDs = try readRowIDs(path + ".ids", expected: vectors.rows, what: "row")
        var m = Matrix(rows: items.count, columns: vectors.columns)
        for (r, id) in rowIDs.enumerated() {
            guard let i = items.index(of: id) else { continue }
            for k in 0..<vectors.columns { m[i, k] = vectors[r, k] }
        }
        return m
    }
    let text = try String(contentsOfFile: path, encoding: .utf8)
    var width = -1
    var rows: [Int: [Float]] = [:]
    for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() where !line.isEmpty {
        let fields = line.split(separator: "\t", omittingEmptySubsequences: false)
        guard fields.count >= 2 else { throw CommandError("\(path):\(n + 1): expected an item ID and at least one value") }
        let values = try fields.dropFirst().map { f -> Float in
            guard let v = Float(f), v.isFinite else { throw CommandError("\(path):\(n + 1): '\(f)' is not a number") }
            return v
        }
        if width < 0 { width = values.count }
        guard values.count == width else { throw CommandError("\(path):\(n + 1): \(values.count) values, earlier lines have \(width)") }
        if let i = items.index(of: String(fields[0])) { rows[i] = values }
    }
    guard width > 0 else { throw CommandError("\(path): no vectors") }
    var m = Matrix(rows: items.count, columns: width)
    for (i, v) in rows { for k in 0..<width { m[i, k] = v[k] } }
    return m
}

/// User features: MovieLens `users.dat` (`UserID::Gender::Age::Occupation::Zip`, read as gender, age
/// band and occupation) or a TSV `user<TAB>feature|feature`.
func readUserFeatures(_ path: String) throws -> [String: [String]] {
    let text = try String(contentsOfFile: path, encoding: .isoLatin1)
    var out: [String: [String]] = [:]
    for (n, line) in text.split(separator: "\n").enumerated() where !line.isEmpty {
        if line.contains("::") {
            let f = line.components(separatedBy: "::")
            guard f.count >= 4 else { throw CommandError("\(path):\(n + 1): expected UserID::Gender::Age::Occupation::Zip") }
            out[f[0]] = ["gender=\(f[1])", "age=\(f[2])", "occupation=\(f[3])"]
        } else {
            let f = line.split(separator: "\t", omittingEmptySubsequences: false)
            guard f.count == 2 else { throw CommandError("\(path):\(n + 1): expected user<TAB>feature|feature") }
            if n == 0 && f[0] == "user" { continue }
            out[String(f[0])] = f[1].split(separator: "|").map(String.init)
        }
    }
    return out
}

/// Evaluates a trained model on a split with the project's evaluator.
/// `sample`: evaluate that many of the users, drawn with `EvaluationData.sampling` (seed 42).
func evaluate(_ trained: TrainedModel, on split: SplitFolder, evaluator: Evaluator, target: EvaluationTarget,
              rerank: [ReRankerSpec] = [], pool: Int = 100, sample: Int? = nil) throws -> (EvaluationReport, EvaluationData) {
    let all = try EvaluationData(split: split, users: trained.users, items: trained.items, target: target)
    let data = sample.map { all.sampling(users: $0, seed: 42) } ?? all
    guard !data.evaluatedUsers.isEmpty else {
        throw CommandError("\(split.path): no user of its \(target.rawValue) file is known to the model with a test item it can rank (\(trained.users.count) users, \(trained.items.count) items): nothing to evaluate. Was the model trained on this split?")
    }
    let model = trained.model
    Console.progress("evaluating \(data.evaluatedUsers.count) users over \(data.candidateCount) items...")
    defer { Console.clearProgress() }
    // Beyond-accuracy metrics come with every evaluation: categories from the model's catalog or
    // the split's items.tsv (diversity and calibration need them), popularity from train.
    let profile = itemProfile(trained, catalog: trained.catalog.map { $0.filling(from: split.catalog) } ?? split.catalog, history: data.history)
    var reorder: Evaluator.Reorder? = nil
    if !rerank.isEmpty {
        // Re-ranking as in serving: the model's best `pool` items, then each stage in order.
        let chain = ReRankChain(try rerank.map { try $0.make(profile: profile, items: trained.items) })
        // The list is re-ranked for the largest cutoff; smaller cutoffs read its prefix.
        reorder = { user, ranked, k in
            chain.apply(ranked.map { Candidate(item: $0.index, score: $0.score) }, history: data.history.row(user).map { Int($0) },
                        k: k).map(\.item)
        }
    }
    // Leave-last-out, test target: a sequential model reads the validation item after the training
    // sequence (docs/protocol.md); every other model scores the trained user.
    let next = target == .test && model is any SequentialRecommender
        ? split.valid?.itemsByUser(users: trained.users, items: trained.items) : nil
    // Without a next item to read, users are scored in blocks (the same scores: an embedding model
    // reads its item vectors once per block instead of once per user).
    let block: Evaluator.BlockScorer? = next == nil ? { @Sendable users, scores in model.scores(forUsers: users, into: scores) } : nil
    return (evaluator.evaluate(data, profile: profile, reorder: reorder, pool: pool, blockScorer: block) { user, scores in
        if let nextItems = next, !nextItems[user].isEmpty, let sequential = model as? any SequentialRecommender {
            let s = model.scores(forHistory: sequential.trainingSequence(ofUser: user) + nextItems[user])
            for i in 0..<scores.count { scores[i] = s[i] }
        } else {
            model.scores(forUser: user, into: scores)
        }
    }, data)
}

/// Evaluates a pipeline's lists: each evaluated user as trained (the retrievers' shared users),
/// their history excluded and handed to the re-rankers.
func evaluate(_ pipeline: Pipeline, trained: TrainedModel, on split: SplitFolder, evaluator: Evaluator,
              target: EvaluationTarget, sample: Int? = nil) throws -> (EvaluationReport, EvaluationData) {
    let all = try EvaluationData(split: split, users: trained.users, items: trained.items, target: target)
    let data = sample.map { all.sampling(users: $0, seed: 42) } ?? all
    guard !data.evaluatedUsers.isEmpty else {
        throw CommandError("\(split.path): no user of its \(target.rawValue) file is known to the pipeline's models: nothing to evaluate")
    }
    let profile = itemProfile(trained, catalog: trained.catalog.map { $0.filling(from: split.catalog) } ?? split.catalog, history: data.history)
    let k = evaluator.cutoffs.last!
    Console.progress("evaluating a pipeline on \(data.evaluatedUsers.count) users...")
    defer { Console.clearProgress() }
    return (evaluator.evaluate(data, profile: profile) { user in
        let history = data.history.row(user).map { Int($0) }
        let context = UserContext(subject: .user(user), history: history, excluded: history)
        return ((try? pipeline.recommend(context, k: k)) ?? []).map(\.item)
    }, data)
}

/// What metrics and re-rankers know of a model's items: genres from the catalog, popularity from
/// `history` (default: the model's training matrix), item vectors for embedding models.
func itemProfile(_ trained: TrainedModel, catalog: ItemCatalog?, history: SparseMatrix? = nil) -> ItemProfile {
    ItemProfile(items: trained.items, genres: catalog?.genres, history: history ?? trained.model.interactions,
                vectors: (trained.model as? any EmbeddingRecommender)?.itemEmbeddings, lastSeen: catalog?.lastSeen)
}

/// Rows under a header line, each column as wide as its widest cell; numeric columns right-aligned.
/// The CLI's lists (recommend, similar, explain) print through it, so they read the same.
struct TextTable {
    struct Column {
        var name: String
        var rightAligned = false
    }
    var columns: [Column]
    var rows: [[String]] = []

    init(_ columns: [Column]) { self.columns = columns }

    func render() -> String {
        var widths = columns.map { $0.name.count }
        for row in rows { for (c, cell) in row.enumerated() where c < widths.count { widths[c] = max(widths[c], cell.count) } }
        func line(_ cells: [String]) -> String {
            var parts: [String] = []
            for (c, cell) in cells.enumerated() {
                let pad = String(repeating: " ", count: max(0, widths[c] - cell.count))
                // The last column is not padded on the right (no trailing spaces).
                parts.append(columns[c].rightAligned ? pad + cell : (c == cells.count - 1 ? cell : cell + pad))
            }
            return parts.joined(separator: "  ")
        }
        return ([line(columns.map(\.name))] + rows.map(line)).joined(separator: "\n")
    }
}

/// A saved model evaluated on a split whose test rows it saw in training has the answers:
/// refuse (a newcomer got HR@10 0.209 instead of the honest 0.144 that way) unless
/// `--allow-foreign-split`, which prints the overlap.
func checkSplitMatches(_ trained: TrainedModel, _ folder: SplitFolder, target: EvaluationTarget, allowForeignSplit: Bool) throws {
    guard let truth = target == .test ? folder.test : folder.valid else { return }
    let x = trained.model.interactions
    var seen = 0
    for r in 0..<truth.count {
        let user = truth.users[Int(truth.userIndices[r])], item = truth.items[Int(truth.itemIndices[r])]
        if let u = trained.users.index(of: user), let i = trained.items.index(of: item), x.contains(row: u, column: i) { seen += 1 }
    }
    guard seen > 0 else { return }
    let overlap = "\(seen) of the \(truth.count) \(target.rawValue) rows of \(folder.path) are in the model's training data"
        + (trained.info["trained_on"].map { " (the model was trained on \($0))" } ?? "")
    guard allowForeignSplit else {
        throw CommandError("\(overlap): the model has seen the answers and its metrics would be inflated. Evaluate it on the split it was trained on, or pass --allow-foreign-split to evaluate anyway.")
    }
    Console.note("warning: \(overlap); metrics are inflated")
}

/// The IDs of a vector file's rows, one per line (`OUT.ids` beside `OUT.npy` or `.fvecs`);
/// `expected` rows when given.
func readRowIDs(_ file: String, expected: Int? = nil, what: String) throws -> [String] {
    guard case .success(let data) = RegularFile.contents(atPath: file) else { throw CommandError("\(file): cannot read the \(what) IDs") }
    var lines = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    if lines.last == "" { lines.removeLast() }
    if let expected, lines.count != expected {
        throw CommandError("\(file): \(lines.count) \(what) IDs for \(expected) rows")
    }
    return lines
}

/// Writes `OUT.ids`: the IDs of the rows of the vector file `out`, one per line.
func writeRowIDs(_ ids: [String], besides out: String) throws {
    try AtomicWrite.file(Data((ids.joined(separator: "\n") + "\n").utf8), to: out + ".ids")
}

/// Sentence vectors of the items of `items` from their text in `catalog` ("Title. Genre, Genre", or
/// a `.text` file's text), by the encoder at `textModel` (or AFFINITY_TEXT_MODEL). Items without
/// text get a zero row (models that use text vectors treat them as having none).
func embedItemTexts(_ catalog: ItemCatalog?, items: IDVocabulary, textModel: String?) throws -> Matrix {
    guard let catalog, !catalog.titles.isEmpty else {
        throw CommandError("no item text: pass --items FILE (movies.dat, u.item, movies.csv, items.tsv or a .text file), or --item-vectors FILE")
    }
    let encoder = try SentenceEncoder(directory: try TextModelLocation.resolve(textModel))
    let (texts, missing) = ItemText(catalog: catalog).aligned(to: items.ids)
    if !missing.isEmpty {
        Console.note("warning: \(missing.count) of \(items.count) items have no text (zero vectors): \(missing.prefix(10).joined(separator: ", "))\(missing.count > 10 ? ", ..." : "")")
    }
    let lacking = Set(missing)
    let have = texts.indices.filter { !lacking.contains(items.ids[$0]) }
    let clock = Stopwatch()
    let result = encoder.embed(have.map { texts[$0] }) { done in
        Console.progress("embedding item text: \(done)/\(have.count) texts, \(String(format: "%.0f", Double(done) / max(clock.seconds, 1e-9))) texts/s")
    }
    Console.clearProgress()
    var out = Matrix(rows: items.count, columns: encoder.dimension)
    for (r, i) in have.enumerated() { for k in 0..<encoder.dimension { out[i, k] = result.vectors[r, k] } }
    Console.note("embedded \(have.count) item texts in \(String(format: "%.1f", clock.seconds)) s (\(result.truncated) truncated at \(encoder.configuration.maxLength) tokens)")
    return out
}

import AffinityData
import AffinityLinalg
import Foundation

/// A recommender that can be fitted from a configuration and saved as named tensors.
public protocol PersistableRecommender: Recommender {
    associatedtype Configuration: ModelConfiguration
    /// The CLI name and the `model_type` written in the file (`popularity`, `itemknn`, ...).
    static var modelType: String { get }
    var configuration: Configuration { get }
    /// Fits the model on a binary users x items matrix.
    static func fit(_ interactions: SparseMatrix, configuration: Configuration) throws -> Self
    /// Fits, reporting progress (iterative models during their epochs; the others once, at the end).
    static func fit(_ interactions: SparseMatrix, configuration: Configuration, progress: TrainingProgress.Handler?) throws -> Self
    /// Fits on training data: the matrix, time-ordered sequences and validation targets. The
    /// default reads the matrix alone; sequential models (Item2Vec, SASRec) read the sequences.
    static func fit(_ data: TrainingData, configuration: Configuration, progress: TrainingProgress.Handler?) throws -> Self
    /// Every learned array, by name (the training interactions included).
    func tensors() -> [String: Tensor]
    /// Rebuilds the model from its tensors; `path` is for error messages.
    init(configuration: Configuration, file: SafeTensorsFile, path: String) throws
}

extension PersistableRecommender {
    /// Fits with the default configuration changed by `key=value` settings.
    public static func fit(_ interactions: SparseMatrix, settings: [String: String]) throws -> Self {
        try fit(interactions, configuration: Configuration().applying(settings))
    }

    public static func fit(_ data: TrainingData, configuration: Configuration, progress: TrainingProgress.Handler?) throws -> Self {
        try fit(data.interactions, configuration: configuration, progress: progress)
    }

    /// Models fitted in one step report once, when done.
    public static func fit(_ interactions: SparseMatrix, configuration: Configuration, progress: TrainingProgress.Handler?) throws -> Self {
        var reporter = ProgressReporter(progress, model: modelType, epochs: 1, exampleName: "positives")
        let model = try fit(interactions, configuration: configuration)
        reporter.endOfEpoch(1, examples: interactions.nonZeroCount)
        return model
    }
}

/// Errors of model files: each names the file and what is wrong with it.
public enum ModelFileError: Error, CustomStringConvertible, Equatable {
    case notAModel(path: String, reason: String)
    case wrongVersion(path: String, found: String, supported: Int)
    case corrupt(path: String, reason: String)

    public var description: String {
        switch self {
        case .notAModel(let path, let reason): return "\(path): not an Affinity model: \(reason)"
        case .wrongVersion(let path, let found, let supported):
            return "\(path): model format version \(found); this build of affinity reads version \(supported) (retrain or convert the model)"
        case .corrupt(let path, let reason): return "\(path): corrupt model: \(reason)"
        }
    }
}

/// A fitted model with what it takes to answer in raw IDs: the user and item vocabularies of its
/// training data and, when known, item titles and genres.
///
/// On disk a model is a folder:
/// - `model.safetensors`: the tensors; `__metadata__` holds `format` = `affinity-model`,
///   `format_version`, `model_type` and `config` (the configuration as JSON);
/// - `vocabulary.json`: `{"format_version": 1, "users": [...], "items": [...]}` in index order;
/// - `items.json` (optional): the item catalog.
/// The folder is written under a temporary name and renamed when complete.
public struct TrainedModel: Sendable {
    public static let formatVersion = 1

    public var model: any PersistableRecommender
    public var users: IDVocabulary
    public var items: IDVocabulary
    public var catalog: ItemCatalog?
    /// Free-form facts about the training run (split, seconds), saved with the model.
    public var info: [String: String]

    public init(model: any PersistableRecommender, users: IDVocabulary, items: IDVocabulary,
                catalog: ItemCatalog? = nil, info: [String: String] = [:]) {
        precondition(users.count == model.userCount && items.count == model.itemCount, "vocabularies do not match the model's shape")
        self.model = model
        self.users = users
        self.items = items
        self.catalog = catalog
        self.info = info
    }

    public var modelType: String { type(of: model).modelType }

    /// PROTOCOL's positive rule when a model does not record its own: ratings >= 4.
    public static let defaultPositiveThreshold: Float = 4

    /// The rating at or above which a rating is a positive for this model, as in its training split
    /// (`info["positive_threshold"]`, written by `affinity train`): nil when the split kept every
    /// row, `defaultPositiveThreshold` when the model does not say.
    public var positiveThreshold: Float? {
        switch info[Self.positiveThresholdKey] {
        case nil: return Self.defaultPositiveThreshold
        case "none": return nil
        case let text?: return Float(text) ?? Self.defaultPositiveThreshold
        }
    }

    /// The `info` entry of a positive threshold as `positiveThreshold` reads it back ("none": every rating).
    public static let positiveThresholdKey = "positive_threshold"
    public static func positiveThresholdValue(_ threshold: Float?) -> String {
        threshold.map { InteractionWriter.formatRating($0) } ?? "none"
    }

    /// True for a model that goes on learning while it serves (`affinity serve --online` publishes
    /// such snapshots): a known user's new events are learned into their own vector, not folded in.
    public var learnsOnline: Bool { info[Self.learnsOnlineKey] == "true" }
    public static let learnsOnlineKey = "learns_online"

    /// Writes the model folder atomically.
    public func save(to path: String, overwrite: Bool = true) throws {
        var metadata = info
        metadata["format"] = "affinity-model"
        metadata["format_version"] = String(Self.formatVersion)
        metadata["model_type"] = modelType
        metadata["config"] = configurationJSON(model)
        let bytes = try SafeTensorsFile(tensors: model.tensors(), metadata: metadata).encoded()
        let vocab = VocabularyFile(formatVersion: Self.formatVersion, users: users.ids, items: items.ids)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let vocabData = try encoder.encode(vocab)
        let catalogData = try catalog.map { try encoder.encode($0.restricted(to: items.ids)) }
        try AtomicWrite.folder(path, overwrite: overwrite, replaceable: Self.isModelFolder) { tmp in
            try Data(bytes).write(to: URL(fileURLWithPath: tmp).appendingPathComponent("model.safetensors"))
            try vocabData.write(to: URL(fileURLWithPath: tmp).appendingPathComponent("vocabulary.json"))
            if let catalogData { try catalogData.write(to: URL(fileURLWithPath: tmp).appendingPathComponent("items.json")) }
        }
    }

    /// Whether `path` holds a model this project wrote (`model.safetensors` whose metadata says
    /// `format` = `affinity-model`, and `vocabulary.json`): the only folders `save` replaces.
    public static func isModelFolder(_ path: String) -> Bool {
        let tensors = (path as NSString).appendingPathComponent("model.safetensors")
        guard FileManager.default.fileExists(atPath: (path as NSString).appendingPathComponent("vocabulary.json")),
              case .success(let data) = RegularFile.contents(atPath: tensors),
              let file = try? SafeTensorsFile.decode(Array(data), path: tensors) else { return false }
        return file.metadata["format"] == "affinity-model"
    }

    /// Reads a model folder, checking format, version, type and shapes.
    public static func load(from path: String) throws -> TrainedModel {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw ModelFileError.notAModel(path: path, reason: "no such model folder")
        }
        guard isDirectory.boolValue else {
            throw ModelFileError.notAModel(path: path, reason: "is a file; a model is a folder holding model.safetensors and vocabulary.json")
        }
        let tensorPath = (path as NSString).appendingPathComponent("model.safetensors")
        let vocabPath = (path as NSString).appendingPathComponent("vocabulary.json")
        guard FileManager.default.fileExists(atPath: tensorPath) else {
            throw ModelFileError.notAModel(path: path, reason: "model.safetensors is missing")
        }
        let file: SafeTensorsFile
        do {
            file = try SafeTensorsFile.read(path: tensorPath)
        } catch let error as SafeTensorsError {
            throw ModelFileError.corrupt(path: tensorPath, reason: "\(error)")
        }
        guard file.metadata["format"] == "affinity-model" else {
            throw ModelFileError.notAModel(path: tensorPath, reason: "metadata has no format=affinity-model")
        }
        guard let version = file.metadata["format_version"], version == String(formatVersion) else {
            throw ModelFileError.wrongVersion(path: tensorPath, found: file.metadata["format_version"] ?? "(none)", supported: formatVersion)
        }
        guard let typeName = file.metadata["model_type"] else {
            throw ModelFileError.corrupt(path: tensorPath, reason: "metadata has no model_type")
        }
        guard let modelType = ModelRegistry.type(named: typeName) else {
            throw ModelFileError.corrupt(path: tensorPath, reason: "model_type '\(typeName)' is not known to this build (known: \(ModelRegistry.names.joined(separator: ", ")))")
        }
        // A NaN or infinity in any weight would make every score NaN: refuse the file by name.
        for (name, tensor) in file.tensors.sorted(by: { $0.key < $1.key }) {
            let bad: Int?
            switch tensor.storage {
            case .float32(let v): bad = firstNonFinite(v)
            case .float64(let v): bad = firstNonFinite(v)
            default: bad = nil
            }
            if let bad { throw ModelFileError.corrupt(path: tensorPath, reason: "tensor '\(name)' holds NaN or infinity (element \(bad))") }
        }
        let vocabData: Data
        switch RegularFile.contents(atPath: vocabPath) {
        case .success(let data): vocabData = data
        case .failure(.missing): throw ModelFileError.notAModel(path: path, reason: "vocabulary.json is missing")
        case .failure(let error): throw ModelFileError.corrupt(path: vocabPath, reason: error.description)
        }
        let vocab: VocabularyFile
        do {
            vocab = try JSONDecoder().decode(VocabularyFile.self, from: vocabData)
        } catch {
            throw ModelFileError.corrupt(path: vocabPath, reason: "not a vocabulary file (\(error))")
        }
        guard vocab.formatVersion == formatVersion else {
            throw ModelFileError.wrongVersion(path: vocabPath, found: String(vocab.formatVersion), supported: formatVersion)
        }
        let users = IDVocabulary(vocab.users), items = IDVocabulary(vocab.items)
        guard users.count == vocab.users.count, items.count == vocab.items.count else {
            throw ModelFileError.corrupt(path: vocabPath, reason: "duplicate IDs")
        }
        // The vocabulary's size bounds every table a model builds from its configuration: the saved
        // training matrix must have exactly its shape before any model allocates anything.
        guard let shape = try? file.int64("interactions.shape", path: tensorPath), shape.count == 2,
              shape[0] == Int64(users.count), shape[1] == Int64(items.count) else {
            throw ModelFileError.corrupt(path: tensorPath, reason: "interactions.shape does not match the \(users.count) users and \(items.count) items of vocabulary.json")
        }
        let model = try loadModel(modelType, file: file, path: tensorPath)
        guard users.count == model.userCount, items.count == model.itemCount else {
            throw ModelFileError.corrupt(path: vocabPath, reason: "\(users.count) users and \(items.count) items, but the model has \(model.userCount) and \(model.itemCount)")
        }
        var catalog: ItemCatalog? = nil
        let catalogPath = (path as NSString).appendingPathComponent("items.json")
        if FileManager.default.fileExists(atPath: catalogPath) {
            let data: Data
            switch RegularFile.contents(atPath: catalogPath) {
            case .success(let d): data = d
            case .failure(let error): throw ModelFileError.corrupt(path: catalogPath, reason: error.description)
            }
            do {
                catalog = try JSONDecoder().decode(ItemCatalog.self, from: data)
            } catch {
                throw ModelFileError.corrupt(path: catalogPath, reason: "not an item catalog (\(error))")
            }
        }
        var info = file.metadata
        for key in ["format", "format_version", "model_type", "config"] { info[key] = nil }
        return TrainedModel(model: model, users: users, items: items, catalog: catalog, info: info)
    }

    /// A saved configuration, its settings written over the defaults: a model saved before a
    /// setting existed loads, the new setting taking its default (settings only a newer version
    /// knows are ignored).
    static func decodeConfiguration<C: ModelConfiguration>(_ type: C.Type, json: String) throws -> C {
        let saved = try JSONSerialization.jsonObject(with: Data(json.utf8))
        guard let settings = saved as? [String: Any],
              var object = try JSONSerialization.jsonObject(with: JSONEncoder().encode(C())) as? [String: Any] else {
            return try JSONDecoder().decode(C.self, from: Data(json.utf8))
        }
        for (key, value) in settings { object[key] = value }
        return try JSONDecoder().decode(C.self, from: JSONSerialization.data(withJSONObject: object))
    }

    private static func loadModel<M: PersistableRecommender>(_ type: M.Type, file: SafeTensorsFile, path: String) throws -> M {
        let configuration: M.Configuration
        guard let saved = file.metadata["config"] else { throw ModelFileError.corrupt(path: path, reason: "metadata 'config' is missing") }
        do {
            configuration = try decodeConfiguration(M.Configuration.self, json: saved)
            try configuration.validate()
        } catch {
            throw ModelFileError.corrupt(path: path, reason: "configuration is invalid: \(error)")
        }
        do {
            return try M(configuration: configuration, file: file, path: path)
        } catch let error as SafeTensorsError {
            throw ModelFileError.corrupt(path: path, reason: "\(error)")
        }
    }

    /// Raw-ID recommendations for a known user, with `--cold-start popular` behaviour on request:
    /// an unknown user then gets the most popular items, and `usedFallback` says so.
    public func recommend(user: String, k: Int, excluding: [String] = [], fallbackToPopular: Bool = false) throws -> (items: [ScoredItem], usedFallback: Bool) {
        let excluded = try Set(excluding.map { id -> Int in
            guard let i = items.index(of: id) else { throw ModelError.unknownItem(id) }
            return i
        })
        guard let u = users.index(of: user) else {
            guard fallbackToPopular else { throw ModelError.unknownUser(user) }
            return (try popular(k: k, excluding: excluded), true)
        }
        return (try model.recommend(user: u, k: k, excluding: excluded), false)
    }

    /// The `k` items most users of the training data have, leaving out `excluding` (item indexes).
    public func popular(k: Int, excluding: Set<Int> = []) throws -> [ScoredItem] {
        guard k > 0 else { throw ModelError.invalidK(k) }
        let counts = model.interactions.columnCounts().map { Float($0) }
        return topK(counts, k: k, excluded: excluding)
    }

    /// Raw-ID similar items.
    public func similar(item: String, k: Int) throws -> [ScoredItem] {
        guard let i = items.index(of: item) else { throw ModelError.unknownItem(item) }
        guard k > 0 else { throw ModelError.invalidK(k) }
        return try model.similarItems(to: i, k: k)
    }

    /// The display name of an item: its title when known, else its ID.
    public func title(ofItem index: Int) -> String {
        catalog?.titles[items[index]] ?? items[index]
    }
}

private func configurationJSON(_ model: any PersistableRecommender) -> String {
    func json<M: PersistableRecommender>(_ m: M) -> String { m.configuration.jsonString() }
    return json(model)
}

/// Top-k of a score vector with excluded positions removed, best first, ties to the smaller index.
func topK(_ scores: [Float], k: Int, excluded: Set<Int>) -> [ScoredItem] {
    var top = MaskedTopK(count: scores.count)
    return top.select(scores, k: k, excluding: excluded)
}

struct VocabularyFile: Codable {
    var formatVersion: Int
    var users: [String]
    var items: [String]
    enum CodingKeys: String, CodingKey { case formatVersion = "format_version", users, items }
}

/// A model whose training reads `TrainingData` (time-ordered sequences, validation targets), not
/// the matrix alone: fitting it on a matrix wraps the matrix (sequences in item-index order, no time).
public protocol TrainingDataRecommender: PersistableRecommender {}

extension TrainingDataRecommender {
    public static func fit(_ interactions: SparseMatrix, configuration: Configuration) throws -> Self {
        try fit(TrainingData(interactions: interactions), configuration: configuration, progress: nil)
    }

    public static func fit(_ interactions: SparseMatrix, configuration: Configuration, progress: TrainingProgress.Handler?) throws -> Self {
        try fit(TrainingData(interactions: interactions), configuration: configuration, progress: progress)
    }
}

/// A model that needs item content (`TrainingData.itemVectors`: text vectors) to be fitted; the
/// demo, which has no item text, leaves these out.
public protocol ItemContentRecommender {}

/// The models this build knows, by CLI name.
public enum ModelRegistry {
    public static let types: [any PersistableRecommender.Type] = [Popularity.self, ItemKNN.self, EASE.self, SparseEASE.self, ALS.self, BPR.self, TwoTower.self, Item2Vec.self, SASRec.self, VQRec.self, LightGCN.self, AMPCF.self, TextKNN.self, OnlineMF.self]
    public static var names: [String] { types.map { $0.modelType } }
    public static func type(named name: String) -> (any PersistableRecommender.Type)? {
        types.first { $0.modelType == name }
    }

    /// Fits the model called `name` with `key=value` settings, reporting progress to `progress`.
    public static func fit(_ name: String, interactions: SparseMatrix, settings: [String: String],
                           progress: TrainingProgress.Handler? = nil) throws -> any PersistableRecommender {
        try fit(name, data: TrainingData(interactions: interactions), settings: settings, progress: progress)
    }

    /// Fits the model called `name` on training data (matrix, time-ordered sequences, validation).
    public static func fit(_ name: String, data: TrainingData, settings: [String: String],
                           progress: TrainingProgress.Handler? = nil) throws -> any PersistableRecommender {
        guard let type = type(named: name) else { throw ModelError.unknownModelType(name, known: names) }
        func fit<M: PersistableRecommender>(_ t: M.Type) throws -> M {
            try M.fit(data, configuration: try M.Configuration().applying(settings), progress: progress)
        }
        return try fit(type)
    }

    /// The settings of a model as a help table: key, default, description (lines under 80 columns).
    public static func settingsHelp(of name: String) -> String? {
        guard let type = type(named: name) else { return nil }
        func rows<M: PersistableRecommender>(_ t: M.Type) -> [(key: String, defaultValue: String, help: String)] { M.Configuration.settingsTable() }
        let table = rows(type)
        guard !table.isEmpty else { return "  (no settings)" }
        let keyWidth = table.map(\.key.count).max()!, valueWidth = max(7, table.map(\.defaultValue.count).max()!)
        return table.map { row in
            "  " + row.key.padding(toLength: keyWidth, withPad: " ", startingAt: 0) + "  "
                + row.defaultValue.padding(toLength: valueWidth, withPad: " ", startingAt: 0) + "  " + row.help
        }.joined(separator: "\n")
    }

    /// The default configuration of a model as JSON, for help texts.
    public static func defaults(of name: String) -> String? {
        guard let type = type(named: name) else { return nil }
        func json<M: PersistableRecommender>(_ t: M.Type) -> String { M.Configuration().jsonString() }
        return json(type)
    }
}

import AffinityLinalg
import AffinityNN
import Foundation

/// The two-tower (dual-encoder) retrieval model: a user tower and an item tower, each
/// ID embedding (and/or the mean of the user's history item embeddings) -> Linear -> ReLU -> Linear
/// -> LayerNorm (-> L2 normalisation for the cosine score), trained with in-batch sampled softmax
/// (InfoNCE) at a temperature, optionally with the logQ correction, masking of accidental hits, and
/// hard negatives; or with a triplet loss (metric learning). Scores are dot products of the
/// towers' outputs, so the item vectors can be put in an ANN index (`EmbeddingRecommender`).
public struct TwoTower: PersistableRecommender, FactorScoredRecommender {
    public enum UserInput: String, Codable, Sendable, CaseIterable, SettingChoice { case id, history, idHistory = "id+history" }
    public enum Score: String, Codable, Sendable, CaseIterable, SettingChoice { case cosine, dot }
    public enum Loss: String, Codable, Sendable, CaseIterable, SettingChoice { case softmax, triplet }

    public struct Configuration: ModelConfiguration {
        /// One line per setting for `affinity train --help`.
        public static let settingHelp: [String: String] = [
            "dimension": "embedding and output width",
            "hidden": "hidden layer width",
            "temperature": "softmax temperature (logits / tau)",
            "logQ": "subtract log item frequency",
            "maskAccidentalHits": "mask copies of the positive",
            "negatives": "in-batch[+static|+dynamic|+semi-hard|+random]",
            "itemGenres": "add genre embeddings (needs genres)",
            "itemVectors": "add dense item vectors (--item-vectors)",
            "idDropout": "items trained without their ID (cold start)",
            "userFeatures": "add user features (--user-features)",
            "refreshEvery": "steps between hard-negative refreshes",
            "hardNegativePool": "dynamic negatives drawn from this top",
            "loss": "softmax (InfoNCE) or triplet",
            "margin": "triplet margin (cosine)",
            "userInput": "id, history or id+history",
            "maxHistory": "history items per user at most",
            "score": "cosine or dot",
            "batchSize": "examples per step",
            "learningRate": "Adam step size",
            "weightDecay": "AdamW decoupled decay",
            "lazyAdam": "update only the rows a batch touches",
            "epochs": "passes over the positives",
            "validationUsers": "users held out for HR@10 per epoch",
            "patience": "stop after this many epochs w/o gain",
            "seed": "initialisation and batches",
            "threads": "0 = all cores",
        ]

        /// Width of the ID embeddings and of the towers' outputs.
        public var dimension: Int = 64
        /// Width of the hidden layer.
        public var hidden: Int = 128
        /// Softmax temperature τ (logits = score / τ).
        public var temperature: Double = 0.2
        /// Subtract log(item frequency) from each candidate's logit (Yi et al. 2019).
        public var logQ: Bool = true
        /// Mask candidates that carry the same item as the row's positive.
        public var maskAccidentalHits: Bool = true
        /// Negatives besides the batch's own positives: `in-batch`, `in-batch+static` (a random item
        /// sharing a genre with the positive; needs item genres), `in-batch+dynamic` (each row's
        /// top-scored non-positive among item vectors refreshed every `refreshEvery` steps),
        /// `in-batch+semi-hard` (the best-scoring non-positive that scores below the positive), or
        /// `in-batch+random` (uniform items, a control).
        public var negatives: String = "in-batch"
        /// Add the mean of the item's genre embeddings to the item tower's input (needs item genres).
        public var itemGenres: Bool = false
        /// Add a learned linear projection of each item's dense vector (e.g. a text embedding) to the
        /// item tower's input (needs item vectors).
        public var itemVectors: Bool = false
        /// The probability that a training item's ID embedding is left out of the item tower's
        /// input (DropoutNet, Volkovs et al. 2017), so that the tower learns to place an item from
        /// its genres and dense vector alone. Items without training interactions (cold items
        /// added to the vocabulary, `train --cold-items`) never use their ID embedding, in training
        /// or serving: they are placed by their content. Needs `itemGenres` or `itemVectors`.
        public var idDropout: Double = 0
        /// Add the mean of the user's categorical feature embeddings (e.g. gender, age band,
        /// occupation) to the user tower's input (needs user features; users the model never saw
        /// are folded in without them).
        public var userFeatures: Bool = false
        /// Steps between refreshes of the item vectors used to mine hard negatives.
        public var refreshEvery: Int = 50
        /// Dynamic negatives are drawn uniformly from each row's top `hardNegativePool` non-positives
        /// (1 = always the top one, which is often an unlabelled positive).
        public var hardNegativePool: Int = 50
        /// `softmax` (InfoNCE) or `triplet` (margin loss against a semi-hard in-batch negative).
        public var loss: Loss = .softmax
        /// Margin of the triplet loss (on cosine scores).
        public var margin: Double = 0.2
        /// `id`, `history` (mean of the user's training items, the positive left out), or `id+history`.
        public var userInput: UserInput = .id
        /// At most this many history items per user (a seeded sample) when the input has a history.
        public var maxHistory: Int = 50
        /// `cosine` (L2-normalised outputs) or `dot`.
        public var score: Score = .cosine
        public var batchSize: Int = 1024
        public var learningRate: Double = 0.001
        public var weightDecay: Double = 0
        /// Adam updates only the embedding rows a batch touches (false: every row, as PyTorch's Adam).
        public var lazyAdam: Bool = false
        public var epochs: Int = 10
        /// Users whose one random positive is held out of training to measure HR@10 after each epoch
        /// (0 = no validation); with `patience` > 0 training stops when it has not improved for that
        /// many epochs and keeps the best epoch's parameters.
        public var validationUsers: Int = 0
        public var patience: Int = 0
        public var seed: UInt64 = 42
        public var threads: Int = 0

        public init() {}

        var negativeKind: String { negatives.replacingOccurrences(of: "in-batch", with: "").trimmingCharacters(in: CharacterSet(charactersIn: "+")) }

        public func validate() throws {
            func positive(_ v: Int, _ name: String) throws { guard v > 0 else { throw ModelError.invalidSetting(name: name, reason: "must be positive, got \(v)") } }
            try positive(dimension, "dimension"); try positive(hidden, "hidden"); try positive(batchSize, "batchSize")
            try positive(refreshEvery, "refreshEvery"); try positive(maxHistory, "maxHistory"); try positive(hardNegativePool, "hardNegativePool")
            guard epochs >= 0 else { throw ModelError.invalidSetting(name: "epochs", reason: "must not be negative") }
            guard temperature > 0 else { throw ModelError.invalidSetting(name: "temperature", reason: "must be positive, got \(temperature)") }
            guard learningRate > 0 else { throw ModelError.invalidSetting(name: "learningRate", reason: "must be positive") }
            guard ["", "static", "dynamic", "semi-hard", "random"].contains(negativeKind) else {
                throw ModelError.invalidSetting(name: "negatives", reason: "one of in-batch, in-batch+static, in-batch+dynamic, in-batch+semi-hard, in-batch+random; got '\(negatives)'")
            }
            guard idDropout >= 0 && idDropout < 1 else { throw ModelError.invalidSetting(name: "idDropout", reason: "must be in [0, 1), got \(idDropout)") }
            guard idDropout == 0 || itemGenres || itemVectors else {
                throw ModelError.invalidSetting(name: "idDropout", reason: "needs content to place items by: itemGenres=true or itemVectors=true")
            }
            guard validationUsers >= 0, patience >= 0 else { throw ModelError.invalidSetting(name: "validationUsers", reason: "must not be negative") }
        }
    }

    public static let modelType = "two-tower"
    public let configuration: Configuration
    public let interactions: SparseMatrix
    /// The towers' outputs for every user and item.
    public let embeddings: FactorModel
    /// The trained network (needed to fold in histories when the user tower reads one).
    let network: TwoTowerNetwork

    public static func fit(_ interactions: SparseMatrix, configuration: Configuration) throws -> TwoTower {
        try fit(interactions, configuration: configuration, progress: nil)
    }

    public static func fit(_ interactions: SparseMatrix, configuration: Configuration, progress: TrainingProgress.Handler?) throws -> TwoTower {
        try fit(interactions, configuration: configuration, sideInformation: nil, progress: progress)
    }

    /// What the model may know besides interactions, indexed like the interaction matrix: each
    /// item's genres (genre indexes; `itemGenres` features and `in-batch+static` negatives), each
    /// item's dense vector (`itemVectors`), each user's categorical features (`userFeatures`).
    public struct SideInformation: Sendable {
        public var itemGenres: [[Int]]
        public var itemVectors: Matrix?
        public var userCategories: [[Int]]?
        public init(itemGenres: [[Int]] = [], itemVectors: Matrix? = nil, userCategories: [[Int]]? = nil) {
            self.itemGenres = itemGenres
            self.itemVectors = itemVectors
            self.userCategories = userCategories
        }
    }

    /// Reports about once a second inside an epoch and at its end with the mean loss and (with
    /// `validationUsers`) the validation HR@10; an example is a (user, positive) pair.
    public static func fit(_ interactions: SparseMatrix, configuration c: Configuration, sideInformation: SideInformation?,
                           progress: TrainingProgress.Handler?) throws -> TwoTower {
        try c.validate()
        // Embedding tables with gradient and two Adam moments, the towers' hidden layers, and
        // the batch x batch logits of in-batch softmax.
        let tableFloats = Double(interactions.rowCount + interactions.columnCount) * Double(max(c.dimension, c.hidden)) * 4
        let batchFloats = Double(c.batchSize) * Double(max(c.batchSize, c.hidden)) * 8
        try MemoryBudget.check(bytes: (tableFloats + batchFloats) * 4,
                               for: "two-tower with dimension=\(c.dimension), hidden=\(c.hidden), batchSize=\(c.batchSize) on \(interactions.rowCount) users x \(interactions.columnCount) items")
        if c.itemVectors {
            guard let v = sideInformation?.itemVectors else {
                throw ModelError.invalidSetting(name: "itemVectors", reason: "needs item vectors (train --item-vectors FILE)")
            }
            guard v.rows == interactions.columnCount else {
                throw ModelError.invalidSetting(name: "itemVectors", reason: "\(v.rows) vectors for \(interactions.columnCount) items")
            }
        }
        if c.userFeatures {
            guard let u = sideInformation?.userCategories, u.contains(where: { !$0.isEmpty }) else {
                throw ModelError.invalidSetting(name: "userFeatures", reason: "needs user features (train --user-features FILE)")
            }
            guard u.count == interactions.rowCount else {
                throw ModelError.invalidSetting(name: "userFeatures", reason: "\(u.count) feature lists for \(interactions.rowCount) users")
            }
        }
        if let genres = sideInformation?.itemGenres, !genres.isEmpty, genres.count != interactions.columnCount {
            throw ModelError.invalidSetting(name: "itemGenres", reason: "\(genres.count) genre lists for \(interactions.columnCount) items")
        }
        if (c.itemGenres || c.negativeKind == "static") && (sideInformation?.itemGenres.allSatisfy(\.isEmpty) ?? true) {
            throw ModelError.invalidSetting(name: c.itemGenres ? "itemGenres" : "negatives",
                                            reason: "needs item genres (an items.tsv with genres in the split folder)")
        }
        let trainer = TwoTowerTrainer(interactions: interactions, configuration: c, side: sideInformation)
        try trainer.run(progress: progress)
        return TwoTower(configuration: c, interactions: interactions, network: trainer.network)
    }

    init(configuration: Configuration, interactions: SparseMatrix, network: TwoTowerNetwork) {
        self.configuration = configuration
        self.interactions = interactions
        self.network = network
        let items = network.itemVectors(Array(0..<interactions.columnCount))
        let users = network.userVectors(Array(0..<interactions.rowCount), bags: network.needsHistory
            ? (0..<interactions.rowCount).map { network.historyBag(interactions.row($0).map { Int($0) }, leaveOut: nil) } : nil)
        embeddings = FactorModel(userFactors: users, itemFactors: items)
    }

    public var scoring: FactorModel { embeddings }

    /// A user the model never saw: the user tower on the history when it reads one; otherwise the
    /// mean of the history items' vectors (normalised for the cosine score).
    public func userEmbedding(history: [Int]) -> [Float] {
        let known = history.filter { $0 >= 0 && $0 < itemCount }
        let d = embeddings.factors
        if network.needsHistory {
            // An unknown user has no ID row: the history part alone (the ID part is zero).
            return Array(network.userVectors(nil, bags: [network.historyBag(known, leaveOut: nil)]).values)
        }
        var v = [Float](repeating: 0, count: d)
        for i in known { for k in 0..<d { v[k] += embeddings.itemFactors[i, k] } }
        if configuration.score == .cosine {
            let n = max(v.reduce(0) { $0 + $1 * $1 }.squareRoot(), 1e-12)
            for k in 0..<d { v[k] /= n }
        } else if !known.isEmpty {
            for k in 0..<d { v[k] /= Float(known.count) }
        }
        return v
    }

    public func tensors() -> [String: Tensor] {
        var t = interactions.tensors(prefix: "interactions").merging(embeddings.tensors()) { a, _ in a }
        for p in network.parameters { t["net." + p.name] = .float32(p.value.values, shape: [p.value.rows, p.value.columns]) }
        if let genres = network.genres, network.genreEmbedding != nil {
            let matrix = SparseMatrix(rowCount: genres.count, columnCount: (genres.flatMap { $0 }.max() ?? -1) + 1,
                                      rows: genres.enumerated().flatMap { i, g in g.map { _ in Int32(i) } },
                                      cols: genres.flatMap { $0.map(Int32.init) })
            t.merge(matrix.tensors(prefix: "item_genres")) { a, _ in a }
        }
        if let v = network.itemVectorMatrix, network.itemProjection != nil {
            t["item_vectors"] = .float32(v.values, shape: [v.rows, v.columns])
        }
        if let u = network.userCategories, network.userFeatureEmbedding != nil {
            let matrix = SparseMatrix(rowCount: u.count, columnCount: (u.flatMap { $0 }.max() ?? -1) + 1,
                                      rows: u.enumerated().flatMap { i, g in g.map { _ in Int32(i) } },
                                      cols: u.flatMap { $0.map(Int32.init) })
            t.merge(matrix.tensors(prefix: "user_features")) { a, _ in a }
        }
        return t
    }

    public init(configuration: Configuration, file: SafeTensorsFile, path: String) throws {
        let x = try SparseMatrix(file: file, prefix: "interactions", path: path)
        var genres: [[Int]]?
        if configuration.itemGenres {
            let g = try SparseMatrix(file: file, prefix: "item_genres", path: path)
            guard g.rowCount == x.columnCount else {
                throw SafeTensorsError.corrupt(path: path, reason: "item_genres has \(g.rowCount) rows for \(x.columnCount) items")
            }
            genres = (0..<g.rowCount).map { g.row($0).map { Int($0) } }
        }
        var side = TwoTower.SideInformation(itemGenres: genres ?? [])
        if configuration.itemVectors {
            guard let t = file.tensors["item_vectors"], t.shape.count == 2, t.shape[0] == x.columnCount else {
                throw SafeTensorsError.corrupt(path: path, reason: "item_vectors must be a [\(x.columnCount), f] tensor")
            }
            side.itemVectors = Matrix(rows: t.shape[0], columns: t.shape[1], values: try file.float32("item_vectors", path: path))
        }
        if configuration.userFeatures {
            let u = try SparseMatrix(file: file, prefix: "user_features", path: path)
            guard u.rowCount == x.rowCount else {
                throw SafeTensorsError.corrupt(path: path, reason: "user_features has \(u.rowCount) rows for \(x.rowCount) users")
            }
            side.userCategories = (0..<u.rowCount).map { u.row($0).map { Int($0) } }
        }
        // The configuration sizes the network before its tensors are read: the file must hold at
        // least the weights the network will allocate (user IDs, history items, item IDs, genre and
        // feature tables sized by the largest id in the file, the item-vector projection, both
        // towers), so a crafted dimension cannot make the allocation larger than the file.
        let stored = file.tensors.filter { $0.key.hasPrefix("net.") }.reduce(0) { $0 + $1.value.shape.reduce(1, *) }
        let d = Double(configuration.dimension), h = Double(configuration.hidden)
        let genreRows = Double((side.itemGenres.flatMap { $0 }.max() ?? -1) + 1)
        let featureRows = Double(((side.userCategories ?? []).flatMap { $0 }.max() ?? -1) + 1)
        let userRows = Double(configuration.userInput == .history ? 0 : x.rowCount)
        let historyRows = Double(configuration.userInput == .id ? 0 : x.columnCount)
        let projection = Double(side.itemVectors?.columns ?? 0) * d + (side.itemVectors == nil ? 0 : d)
        let needed = (userRows + historyRows + Double(x.columnCount) + genreRows + featureRows) * d + projection
            + 2 * (2 * d * h + h + 3 * d)
        guard needed <= Double(stored) else {
            throw SafeTensorsError.corrupt(path: path, reason: "dimension \(configuration.dimension) and hidden \(configuration.hidden) need \(Int(min(needed, 9e18))) weights; the file holds \(stored)")
        }
        let network = TwoTowerNetwork(configuration: configuration, users: x.rowCount, items: x.columnCount, side: side,
                                      coldItems: TwoTowerNetwork.coldItems(x))
        for p in network.parameters {
            let values = try file.float32("net." + p.name, path: path)
            guard values.count == p.value.values.count else {
                throw SafeTensorsError.corrupt(path: path, reason: "net.\(p.name) has \(values.count) values, expected \(p.value.values.count)")
            }
            p.value = Matrix(rows: p.value.rows, columns: p.value.columns, values: values)
        }
        self.init(configuration: configuration, interactions: x, network: network)
    }
}

/// The two towers' layers and parameters.
final class TwoTowerNetwork: @unchecked Sendable {
    let configuration: TwoTower.Configuration
    let userIDs: Embedding?
    let historyItems: Embedding?
    let userMLP: Sequential
    let itemIDs: Embedding
    let itemMLP: Sequential
    /// Genres of each item and their embedding (when `itemGenres` is set).
    let genres: [[Int]]?
    let genreEmbedding: Embedding?

    var needsHistory: Bool { historyItems != nil }

    /// Dense item vectors and their projection (when `itemVectors` is set).
    let itemVectorMatrix: Matrix?
    let itemProjection: Linear?
    /// Categorical user features and their embedding (when `userFeatures` is set).
    let userCategories: [[Int]]?
    let userFeatureEmbedding: Embedding?

    /// Items placed by content alone: those without a training interaction.
    let coldItems: [Bool]
    /// Rows of the last training forward whose ID embedding was left out (for backward).
    private var droppedRows: [Bool] = []

    /// Items without a training interaction (no column entry).
    static func coldItems(_ x: SparseMatrix) -> [Bool] {
        let t = x.transposed()
        return (0..<x.columnCount).map { t.rowLength($0) == 0 }
    }

    init(configuration c: TwoTower.Configuration, users: Int, items: Int, side: TwoTower.SideInformation? = nil, coldItems: [Bool] = []) {
        configuration = c
        // Only a model with content can place an item without its ID.
        self.coldItems = c.itemGenres || c.itemVectors ? coldItems : []
        // Each list as a set (duplicates would be merged by the saved sparse matrix anyway).
        let genres = side.flatMap { $0.itemGenres.isEmpty ? nil : $0.itemGenres.map { Array(Set($0)).sorted() } }
        self.genres = genres
        itemVectorMatrix = c.itemVectors ? side?.itemVectors : nil
        itemProjection = itemVectorMatrix.map { Linear($0.columns, c.dimension, seed: c.seed &+ 8, name: "item.vectors", threads: c.threads) }
        userCategories = c.userFeatures ? side?.userCategories?.map { Array(Set($0)).sorted() } : nil
        let categoryCount = (userCategories?.flatMap { $0 }.max() ?? -1) + 1
        userFeatureEmbedding = userCategories != nil && categoryCount > 0
            ? Embedding(count: categoryCount, dimension: c.dimension, seed: c.seed &+ 9, name: "user.features") : nil
        let genreCount = (genres?.flatMap { $0 }.max() ?? -1) + 1
        genreEmbedding = c.itemGenres && genreCount > 0
            ? Embedding(count: genreCount, dimension: c.dimension, seed: c.seed &+ 7, name: "item.genres") : nil
        let d = c.dimension, h = c.hidden, t = c.threads
        func tower(_ seed: UInt64, _ name: String) -> Sequential {
            var layers: [any Layer] = [Linear(d, h, seed: seed, name: name + ".0", threads: t), ReLU(),
                                       Linear(h, d, seed: seed &+ 1, name: name + ".2", threads: t), LayerNorm(d, name: name + ".3")]
            if c.score == .cosine { layers.append(L2Normalize()) }
            return Sequential(layers)
        }
        userIDs = c.userInput == .history ? nil : Embedding(count: users, dimension: d, seed: c.seed &+ 1, name: "user.embedding")
        historyItems = c.userInput == .id ? nil : Embedding(count: items, dimension: d, seed: c.seed &+ 2, name: "user.history")
        userMLP = tower(c.seed &+ 3, "user.mlp")
        itemIDs = Embedding(count: items, dimension: d, seed: c.seed &+ 5, name: "item.embedding")
        itemMLP = tower(c.seed &+ 6, "item.mlp")
    }

    var parameters: [Parameter] {
        [userIDs?.table, historyItems?.table, userFeatureEmbedding?.table].compactMap { $0 } + userMLP.parameters + [itemIDs.table]
            + [genreEmbedding?.table].compactMap { $0 } + (itemProjection?.parameters ?? []) + itemMLP.parameters
    }

    /// A user's history bag: at most `maxHistory` items (an evenly spaced subset, so it is
    /// deterministic), the positive being predicted left out.
    func historyBag(_ items: [Int], leaveOut: Int?) -> [Int] {
        var bag = leaveOut.map { l in items.filter { $0 != l } } ?? items
        let cap = configuration.maxHistory
        if bag.count > cap {
            let step = Double(bag.count) / Double(cap)
            bag = (0..<cap).map { bag[Int(Double($0) * step)] }
        }
        return bag
    }

    /// The user tower's input: ID embedding, history mean, or their sum. `training` keeps what
    /// the backward pass needs in the embeddings; inference keeps nothing (many threads at once).
    private func userInput(_ users: [Int]?, bags: [[Int]]?, training: Bool) -> Matrix {
        var x: Matrix?
        if let userIDs, let users { x = training ? userIDs.forward(users) : userIDs.lookup(users) }
        if let historyItems, let bags {
            let pooled = training ? historyItems.bag(bags) : historyItems.pooled(bags)
            if var sum = x {
                for i in sum.values.indices { sum.values[i] += pooled.values[i] }
                x = sum
            } else {
                x = pooled
            }
        }
        if let userFeatureEmbedding, let userCategories, let users, var sum = x {
            let categories = users.map { userCategories[$0] }
            let pooled = training ? userFeatureEmbedding.bag(categories) : userFeatureEmbedding.pooled(categories)
            for i in sum.values.indices { sum.values[i] += pooled.values[i] }
            x = sum
        }
        return x ?? Matrix(rows: bags?.count ?? 0, columns: configuration.dimension)
    }

    func userForward(_ users: [Int], bags: [[Int]]?) -> Matrix { userMLP.forward(userInput(users, bags: bags, training: true), training: true) }

    func userBackward(_ dy: Matrix) {
        let dx = userMLP.backward(dy)
        userIDs?.backward(dx)
        historyItems?.bagBackward(dx)
        userFeatureEmbedding?.bagBackward(dx)
    }

    /// The item tower's input: ID embedding (left out for the rows of `withoutID`: cold items and,
    /// in training, ID dropout), plus the mean genre embedding with `itemGenres` and the projected
    /// dense vector with `itemVectors`.
    private func itemInput(_ items: [Int], training: Bool, withoutID: [Bool]) -> Matrix {
        var x = training ? itemIDs.forward(items) : itemIDs.lookup(items)
        let d = x.columns
        for (r, drop) in withoutID.enumerated() where drop {
            for k in 0..<d { x.values[r * d + k] = 0 }
        }
        if let genreEmbedding, let genres {
            let itemGenres = items.map { genres[$0] }
            let pooled = training ? genreEmbedding.bag(itemGenres) : genreEmbedding.pooled(itemGenres)
            for i in x.values.indices { x.values[i] += pooled.values[i] }
        }
        if let itemProjection, let v = itemVectorMatrix {
            var rows = Matrix(rows: items.count, columns: v.columns)
            for (r, i) in items.enumerated() { for k in 0..<v.columns { rows.values[r * v.columns + k] = v.values[i * v.columns + k] } }
            let projected = training ? itemProjection.forward(rows, training: true) : itemProjection.infer(rows)
            for i in x.values.indices { x.values[i] += projected.values[i] }
        }
        return x
    }

    /// Which rows go without their ID embedding: cold items always; the others when `dropped()`
    /// says so (ID dropout in training; never in inference). Empty when no row can.
    private func withoutID(_ items: [Int], dropped: () -> Bool) -> [Bool] {
        guard !coldItems.isEmpty || configuration.idDropout > 0 else { return [] }
        return items.map { i in (!coldItems.isEmpty && coldItems[i]) || dropped() }
    }

    /// The training forward pass of the item tower; `generator` draws the ID dropout.
    func itemForward(_ items: [Int], generator: inout SeededGenerator) -> Matrix {
        let p = configuration.idDropout
        droppedRows = withoutID(items) { p > 0 && generator.nextDouble() < p }
        return itemMLP.forward(itemInput(items, training: true, withoutID: droppedRows), training: true)
    }

    func itemBackward(_ dy: Matrix) {
        let dx = itemMLP.backward(dy)
        let idGrad: Matrix
        if droppedRows.contains(true) {
            // Left-out ID rows get no gradient (the genre and vector paths do).
            var masked = dx
            let d = dx.columns
            for (r, drop) in droppedRows.enumerated() where drop { for k in 0..<d { masked.values[r * d + k] = 0 } }
            idGrad = masked
        } else {
            idGrad = dx
        }
        itemIDs.backward(idGrad)
        genreEmbedding?.bagBackward(dx)
        _ = itemProjection?.backward(dx)
    }

    /// Inference: item vectors, in chunks (no state kept: safe from many threads).
    func itemVectors(_ items: [Int]) -> Matrix {
        chunked(items.count) { range in
            let part = Array(items[range])
            return itemMLP.infer(itemInput(part, training: false, withoutID: withoutID(part) { false }))
        }
    }

    /// Inference: user vectors (`users` nil: history only).
    func userVectors(_ users: [Int]?, bags: [[Int]]?) -> Matrix {
        let n = users?.count ?? bags?.count ?? 0
        return chunked(n) { range in
            userMLP.infer(userInput(users.map { Array($0[range]) }, bags: bags.map { Array($0[range]) }, training: false))
        }
    }

    private func chunked(_ n: Int, _ body: (Range<Int>) -> Matrix) -> Matrix {
        var out = Matrix(rows: n, columns: configuration.dimension)
        var start = 0
        while start < n {
            let range = start..<min(n, start + 4096)
            let part = body(range)
            for (r, row) in range.enumerated() {
                for k in 0..<configuration.dimension { out.values[row * configuration.dimension + k] = part.values[r * configuration.dimension + k] }
            }
            start = range.upperBound
        }
        return out
    }
}

/// The training loop: seeded shuffling of (user, item) pairs each epoch, mini-batches whose matrix
/// products run on all cores (deterministic: each output element is summed by one thread in a
/// fixed order), hard-negative mining, per-epoch validation and early stopping.
final class TwoTowerTrainer: @unchecked Sendable {
    let x: SparseMatrix
    let c: TwoTower.Configuration
    let network: TwoTowerNetwork
    private(set) var users: [Int32] = []
    private(set) var items: [Int32] = []
    private var validation: [(user: Int, item: Int)] = []
    /// The held-out validation item of each validation user (kept out of history bags too).
    private var heldOut: [Int: Int] = [:]
    /// log(count / pairs) per item: the in-batch sampling probability of the logQ correction.
    private var logFrequency: [Float] = []

    /// Items of each genre (static negatives).
    private var itemsOfGenre: [[Int]] = []

    init(interactions: SparseMatrix, configuration: TwoTower.Configuration, side: TwoTower.SideInformation? = nil) {
        x = interactions
        c = configuration
        network = TwoTowerNetwork(configuration: configuration, users: interactions.rowCount, items: interactions.columnCount, side: side,
                                  coldItems: TwoTowerNetwork.coldItems(interactions))
        if let genres = network.genres {
            itemsOfGenre = [[Int]](repeating: [], count: (genres.flatMap { $0 }.max() ?? -1) + 1)
            for (i, gs) in genres.enumerated() { for g in gs { itemsOfGenre[g].append(i) } }
        }
        var held = Set<Int64>()
        if c.validationUsers > 0 {
            var g = SeededGenerator(seed: c.seed, stream: 99)
            let candidates = (0..<x.rowCount).filter { x.row($0).count >= 2 }
            var order = candidates
            g.shuffle(&order)
            for u in order.prefix(c.validationUsers) {
                let row = x.row(u)
                let item = Int(row[row.startIndex + g.next(below: row.count)])
                validation.append((u, item))
                heldOut[u] = item
                held.insert(Int64(u) << 32 | Int64(item))
            }
        }
        for u in 0..<x.rowCount {
            for i in x.row(u) where !held.contains(Int64(u) << 32 | Int64(i)) {
                users.append(Int32(u))
                items.append(i)
            }
        }
        var counts = [Int](repeating: 0, count: x.columnCount)
        for i in items { counts[Int(i)] += 1 }
        // An item without training pairs counts as one, so its correction stays on the scale of the others.
        logFrequency = counts.map { log(Float(max($0, 1)) / Float(max(1, items.count))) }
    }

    /// A user's training items without their held-out validation item.
    private func trainingItems(of user: Int) -> [Int] {
        let row = x.row(user).map { Int($0) }
        guard let held = heldOut[user] else { return row }
        return row.filter { $0 != held }
    }

    func run(progress: TrainingProgress.Handler?) throws {
        let n = users.count
        guard n > 0 else { return }
        let parameters = network.parameters
        let optimizer = Adam(learningRate: Float(c.learningRate), weightDecay: Float(c.weightDecay), lazy: c.lazyAdam, threads: c.threads)
        let kind = c.negativeKind
        var itemCache: Matrix?
        var step = 0
        // The best epoch is restored only under early stopping (patience > 0), as before the shared loop.
        let loop = TrainingLoop(settings: .init(epochs: c.epochs, batchSize: c.batchSize, seed: c.seed, patience: c.patience),
                                parameters: parameters, optimizer: optimizer)
        loop.run(examples: n, model: TwoTower.modelType, exampleName: "pairs", progress: progress, restoreBest: c.patience > 0,
                 step: { batch, g in
            let bu = batch.map { Int(users[$0]) }, bi = batch.map { Int(items[$0]) }
            let bags = network.needsHistory ? zip(bu, bi).map { network.historyBag(trainingItems(of: $0.0), leaveOut: $0.1) } : nil
            // The towers share no state: with two or more threads they run side by side, forward
            // and backward, each on half the threads (same results: every product sums in the same order).
            var u = Matrix(rows: 0, columns: 0), v = u
            var candidates = bi
            if kind.isEmpty {
                var itemGenerator = g   // only the item tower draws (ID dropout)
                Parallelism.sideBySide(threads: c.threads, { u = network.userForward(bu, bags: bags) },
                                       { v = network.itemForward(candidates, generator: &itemGenerator) })
                g = itemGenerator
            } else {
                // Mined negatives need the user vectors first.
                u = network.userForward(bu, bags: bags)
                if kind != "random" && kind != "static" && (itemCache == nil || step % c.refreshEvery == 0) {
                    itemCache = network.itemVectors(Array(0..<x.columnCount))
                }
                candidates += mineNegatives(kind: kind, u: u, users: bu, positives: bi, cache: itemCache, generator: &g)
                v = network.itemForward(candidates, generator: &g)
            }
            let (loss, du, dv) = c.loss == .softmax
                ? softmaxStep(u: u, v: v, positives: bi, candidates: candidates)
                : tripletStep(u: u, v: v, positives: bi, candidates: candidates)
            Parallelism.sideBySide(threads: c.threads, { network.userBackward(du) }, { network.itemBackward(dv) })
            step += 1
            return Double(loss) * Double(batch.count)
        }, validate: validation.isEmpty ? nil : { self.validationHitRate() })
    }

    private func softmaxStep(u: Matrix, v: Matrix, positives: [Int], candidates: [Int]) -> (Float, Matrix, Matrix) {
        let r = Losses.sampledSoftmax(queries: u, candidates: v, positives: Array(positives.indices), temperature: Float(c.temperature),
                                      logQ: c.logQ ? candidates.map { logFrequency[$0] } : nil,
                                      candidateIDs: c.maskAccidentalHits ? candidates : nil, threads: c.threads)
        return (r.loss, r.gradients[0], r.gradients[1])
    }

    /// Triplet loss against each row's semi-hard in-batch candidate (FaceNet, Schroff et al. 2015):
    /// the best-scoring other item that still scores below the positive, or, when every other item
    /// scores above it, the lowest-scoring one (the hardest negative makes the towers collapse).
    private func tripletStep(u: Matrix, v: Matrix, positives: [Int], candidates: [Int]) -> (Float, Matrix, Matrix) {
        let b = u.rows, m = v.rows, d = u.columns
        let s = u.multiplied(by: v, transposeOther: true, threads: c.threads)
        var positive = [Float](repeating: 0, count: b), negative = positive
        var hardest = [Int](repeating: 0, count: b)
        for i in 0..<b {
            positive[i] = s[i, i]
            var below = -1, lowest = -1
            for j in 0..<m where candidates[j] != positives[i] {
                if s[i, j] < positive[i] && (below < 0 || s[i, j] > s[i, below]) { below = j }
                if lowest < 0 || s[i, j] < s[i, lowest] { lowest = j }
            }
            let j = below >= 0 ? below : lowest
            hardest[i] = max(0, j)
            negative[i] = j >= 0 ? s[i, j] : positive[i] - Float(c.margin) - 1
        }
        let t = Losses.triplet(positive: positive, negative: negative, margin: Float(c.margin))
        var du = Matrix(rows: b, columns: d), dv = Matrix(rows: m, columns: d)
        for i in 0..<b {
            let j = hardest[i]
            for k in 0..<d {
                du.values[i * d + k] += t.dPositive[i] * v[i, k] + t.dNegative[i] * v[j, k]
                dv.values[i * d + k] += t.dPositive[i] * u[i, k]
                dv.values[j * d + k] += t.dNegative[i] * u[i, k]
            }
        }
        return (t.loss, du, dv)
    }

    /// One extra negative item per row, mined from `cache` (item vectors of a recent step).
    private func mineNegatives(kind: String, u: Matrix, users: [Int], positives: [Int], cache: Matrix?,
                               generator g: inout SeededGenerator) -> [Int] {
        let itemCount = x.columnCount
        if kind == "static", let genres = network.genres {
            // A random item sharing a random genre of the positive, not one of the user's items.
            return users.indices.map { i in
                let own = genres[positives[i]]
                for _ in 0..<8 where !own.isEmpty {
                    let pool = itemsOfGenre[own[g.next(below: own.count)]]
                    let j = pool[g.next(below: pool.count)]
                    if j != positives[i] && !x.contains(row: users[i], column: j) { return j }
                }
                return g.next(below: itemCount)
            }
        }
        if kind == "random" {
            return users.indices.map { i in
                var j = g.next(below: itemCount)
                while x.contains(row: users[i], column: j) && x.row(users[i]).count < itemCount { j = g.next(below: itemCount) }
                return j
            }
        }
        guard let cache else { return [] }
        let s = u.multiplied(by: cache, transposeOther: true, threads: c.threads)
        let pool = kind == "dynamic" ? c.hardNegativePool : 1
        // One draw per row, made here so that the parallel part below is deterministic.
        let draws = users.indices.map { _ in g.next(below: pool) }
        var out = [Int](repeating: 0, count: users.count)
        let semiHard = kind == "semi-hard"
        out.withUnsafeMutableBufferPointer { buffer in
            let shared = SharedMutableBuffer(buffer)
            Parallelism.forEachRange(users.count, grain: 64, threads: c.threads) { range in
                // Per thread: the user's items (and the positive) masked out, the top `pool` of the
                // rest by the SIMD top-k kernel; semi-hard also masks everything scoring at or above
                // the positive.
                var top = MaskedTopK(count: itemCount)
                var row = [Float](repeating: 0, count: itemCount)
                for i in range {
                    let seen = self.x.row(users[i])
                    for j in 0..<itemCount { row[j] = s.values[i * itemCount + j] }
                    if semiHard {
                        let limit = row[positives[i]]
                        for j in 0..<itemCount where row[j] >= limit { row[j] = -.infinity }
                    }
                    let found = top.select(row, k: pool, excluding: seen.map { Int($0) } + [positives[i]])
                    let ranked = found.filter { $0.score > -.infinity }
                    shared[i] = ranked.isEmpty ? (positives[i] + 1) % itemCount : ranked[min(draws[i], ranked.count - 1)].index
                }
            }
        }
        return out
    }

    /// HR@10 of the held-out items, every item ranked, the user's training items excluded.
    private func validationHitRate() -> Double {
        let itemVectors = network.itemVectors(Array(0..<x.columnCount))
        let vu = validation.map(\.user)
        let bags = network.needsHistory ? vu.map { network.historyBag(trainingItems(of: $0), leaveOut: nil) } : nil
        let userVectors = network.userVectors(network.userIDs == nil ? nil : vu, bags: bags)
        let scores = userVectors.multiplied(by: itemVectors, transposeOther: true, threads: c.threads)
        var hits = 0
        for (n, v) in validation.enumerated() {
            let target = scores[n, v.item]
            var better = 0
            for j in 0..<x.columnCount where j != v.item && !x.contains(row: v.user, column: j) {
                if scores[n, j] > target || (scores[n, j] == target && j < v.item) { better += 1 }
            }
            if better < 10 { hits += 1 }
        }
        return Double(hits) / Double(validation.count)
    }
}

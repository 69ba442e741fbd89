import AffinityData
import AffinityLinalg
import AffinityNN
import Foundation

extension RankingLoss: SettingChoice {}

/// One user's candidate list, as a ranker sees it: the items (internal indexes), one row of
/// features per item, the user's history, and for training the labels.
public struct RankingList: Sendable {
    public var items: [Int]
    /// n x F raw features (the ranker standardises them).
    public var features: Matrix
    public var history: [Int]
    /// 1 for an item the user went on to choose, else 0 (training and validation only).
    public var labels: [Float]
    /// Relevant items the user has in all, also those no retriever found (NDCG's ideal).
    public var relevant: Int

    public init(items: [Int], features: Matrix, history: [Int], labels: [Float] = [], relevant: Int = 0) {
        precondition(features.rows == items.count, "one feature row per item")
        self.items = items
        self.features = features
        self.history = history
        self.labels = labels
        self.relevant = relevant
    }
}

/// A learned ranker in the NCF family (He et al. 2017, "Neural Collaborative Filtering"): the
/// NeuMF fusion of a generalised matrix factorisation (GMF) branch and an MLP branch, extended
/// with side features, scoring each candidate of a list.
///
/// For a user u with history H and a candidate i with features x (F, standardised):
///
///     p_u = mean_{h in H} Q[h]         (d; FISM-style, so new users are folded in by their history)
///     gmf = p_u ⊙ P[i]                 (d)
///     mlp = ReLU(W2 · ReLU(W1 · [x, p_u, P[i]]))   (hidden/2)
///     score = w · [gmf, mlp] + b
///
/// With `dimension = 0` it is an MLP over the features alone. Trained on candidate lists with one
/// of `RankingLoss`'s objectives through `TrainingLoop`. Inference keeps nothing in the instance,
/// so one ranker scores many requests at once.
public final class NeuralRanker: @unchecked Sendable {
    public struct Configuration: ModelConfiguration {
        public static let settingHelp: [String: String] = [
            "dimension": "GMF / history embedding width (0: features only)",
            "hidden": "first MLP layer width (the second is half)",
            "loss": "training objective",
            "epochs": "passes over the training lists",
            "batchSize": "lists per step",
            "learningRate": "Adam step size",
            "weightDecay": "AdamW decoupled decay",
            "cutoff": "K of NDCG in the lambda and policy losses",
            "samples": "sampled rankings per list (policy loss)",
            "patience": "stop after this many epochs without a better validation score",
            "seed": "initialisation, order and samples",
            "threads": "threads of the layers' matrix products (0 = all cores)",
        ]
        public var dimension: Int = 16
        public var hidden: Int = 64
        public var loss: RankingLoss = .softmax
        public var epochs: Int = 20
        public var batchSize: Int = 32
        public var learningRate: Double = 0.001
        public var weightDecay: Double = 0
        public var cutoff: Int = 20
        public var samples: Int = 16
        public var patience: Int = 3
        public var seed: UInt64 = 1
        /// 1: lists are small, and evaluation already scores users in parallel.
        public var threads: Int = 1

        public init() {}

        public func validate() throws {
            guard (0...256).contains(dimension) else { throw ModelError.invalidSetting(name: "dimension", reason: "must be in 0...256, got \(dimension)") }
            guard (2...4096).contains(hidden) else { throw ModelError.invalidSetting(name: "hidden", reason: "must be in 2...4096, got \(hidden)") }
            guard (0...10_000).contains(epochs) else { throw ModelError.invalidSetting(name: "epochs", reason: "must be in 0...10000, got \(epochs)") }
            guard batchSize > 0 else { throw ModelError.invalidSetting(name: "batchSize", reason: "must be positive") }
            guard learningRate > 0 && learningRate.isFinite else { throw ModelError.invalidSetting(name: "learningRate", reason: "must be positive") }
            guard weightDecay >= 0 && weightDecay.isFinite else { throw ModelError.invalidSetting(name: "weightDecay", reason: "must not be negative") }
            guard cutoff > 0 else { throw ModelError.invalidSetting(name: "cutoff", reason: "must be positive") }
            guard (2...1024).contains(samples) else { throw ModelError.invalidSetting(name: "samples", reason: "must be in 2...1024, got \(samples)") }
            guard patience >= 0 else { throw ModelError.invalidSetting(name: "patience", reason: "must not be negative") }
        }
    }

    public let configuration: Configuration
    public let itemCount: Int
    /// The names of the feature columns, in order (checked against the pipeline that uses the ranker).
    public let featureNames: [String]
    /// Standardisation of each feature: (x − mean) · scale.
    public private(set) var featureMean: [Float]
    public private(set) var featureScale: [Float]

    let itemEmbedding: Embedding?
    let historyEmbedding: Embedding?
    let mlp: Sequential
    let head: Linear

    public var featureCount: Int { featureNames.count }

    public init(configuration c: Configuration, itemCount: Int, featureNames: [String]) {
        configuration = c
        self.itemCount = itemCount
        self.featureNames = featureNames
        featureMean = [Float](repeating: 0, count: featureNames.count)
        featureScale = [Float](repeating: 1, count: featureNames.count)
        let d = c.dimension, f = featureNames.count
        itemEmbedding = d > 0 ? Embedding(count: itemCount, dimension: d, seed: c.seed &+ 1, scale: 0.01, name: "item_embedding") : nil
        historyEmbedding = d > 0 ? Embedding(count: itemCount, dimension: d, seed: c.seed &+ 2, scale: 0.01, name: "history_embedding") : nil
        mlp = Sequential([Linear(f + 2 * d, c.hidden, seed: c.seed &+ 3, name: "mlp.0", threads: c.threads), ReLU(),
                          Linear(c.hidden, c.hidden / 2, seed: c.seed &+ 4, name: "mlp.2", threads: c.threads), ReLU()])
        head = Linear(d + c.hidden / 2, 1, seed: c.seed &+ 5, name: "head", threads: c.threads)
    }

    public var parameters: [Parameter] {
        [itemEmbedding?.table, historyEmbedding?.table].compactMap { $0 } + mlp.parameters + head.parameters
    }

    // MARK: Inference

    /// The score of each item of `list` (higher is better). Keeps nothing in the instance.
    ///
    /// The same function as `referenceScores`, computed the way serving wants it: the user's
    /// history vector is one per list, so its part of the first layer is folded into that layer's
    /// bias once, and the head's GMF half is one dot product per item with `w_gmf ⊙ p_u`, instead
    /// of repeating the user vector on every row and concatenating.
    public func scores(_ list: RankingList) -> [Float] {
        guard !list.items.isEmpty else { return [] }
        guard let itemEmbedding, let historyEmbedding,
              let first = mlp.layers.first as? Linear, mlp.layers.count == 4, let second = mlp.layers[2] as? Linear else {
            return referenceScores(list)
        }
        let n = list.items.count, f = featureCount, d = configuration.dimension
        let hidden = first.weight.value.rows, width = f + 2 * d
        let w1 = first.weight.value.values
        let p = historyEmbedding.pooled([list.history]).values
        // First layer: b1 + W1[:, user] · p once per list, then x and e against their own column
        // blocks of W1 (two products into one output, no concatenated input, no weight copy).
        var bias = first.bias.value.values
        for o in 0..<hidden { for j in 0..<d { bias[o] += w1[o * width + f + j] * p[j] } }
        let x = standardized(list.features), e = itemEmbedding.lookup(list.items)
        var h1 = Matrix(rows: n, columns: hidden)
        h1.values.withUnsafeMutableBufferPointer { hp in
            for r in 0..<n { for o in 0..<hidden { hp[r * hidden + o] = bias[o] } }
            w1.withUnsafeBufferPointer { wp in
                for (input, k, column) in [(x, f, 0), (e, d, f + d)] {
                    input.values.withUnsafeBufferPointer { ap in
                        sgemm(transposeB: true, m: n, n: hidden, k: k, a: ap.baseAddress!, lda: k, b: wp.baseAddress! + column, ldb: width,
                              beta: 1, c: hp.baseAddress!, ldc: hidden, threads: 1)
                    }
                }
            }
            for k in 0..<hp.count { hp[k] = max(hp[k], 0) }
        }
        let h2 = second.infer(h1)
        // Head: (w_gmf ⊙ p) · e_r + w_mlp · ReLU(h2_r) + b.
        let wh = head.weight.value.values, b = head.bias.value.values[0], m = h2.columns
        let q = (0..<d).map { wh[$0] * p[$0] }
        var out = [Float](repeating: b, count: n)
        e.values.withUnsafeBufferPointer { ep in
            h2.values.withUnsafeBufferPointer { hp in
                wh.withUnsafeBufferPointer { w in
                    for r in 0..<n {
                        var score: Float = 0
                        for j in 0..<d { score += q[j] * ep[r * d + j] }
                        for j in 0..<m { score += w[d + j] * max(hp[r * m + j], 0) }
                        out[r] += score
                    }
                }
            }
        }
        return out
    }

    /// The network as written: features standardised, GMF and MLP branches, head (the test
    /// oracle of `scores`, and its path for a features-only ranker).
    public func referenceScores(_ list: RankingList) -> [Float] {
        guard !list.items.isEmpty else { return [] }
        let x = standardized(list.features)
        guard let itemEmbedding, let historyEmbedding else {
            return head.infer(mlp.infer(x)).values
        }
        let e = itemEmbedding.lookup(list.items)
        let p = repeatRows(historyEmbedding.pooled([list.history]), counts: [list.items.count])
        let gmf = hadamard(p, e)
        return head.infer(hconcat([gmf, mlp.infer(hconcat([x, p, e]))])).values
    }

    // MARK: Training

    /// Fits the standardisation on `lists`' features, then trains on them with the configured loss.
    /// `validate` scores the current parameters (higher is better; e.g. NDCG@20 of held-out
    /// users' lists); with it the best epoch is kept and `patience` stops early.
    @discardableResult
    public func fit(_ lists: [RankingList], validate: (() throws -> Double)? = nil, validationName: String = "NDCG@20",
                    progress: TrainingProgress.Handler? = nil) throws -> TrainingLoop.Outcome {
        try configuration.validate()
        for list in lists {
            guard list.features.columns == featureCount, list.labels.count == list.items.count else {
                throw ModelError.invalidSetting(name: "lists", reason: "each list needs \(featureCount) features and one label per item")
            }
            guard list.items.allSatisfy({ $0 >= 0 && $0 < itemCount }), list.history.allSatisfy({ $0 >= 0 && $0 < itemCount }) else {
                throw ModelError.invalidSetting(name: "lists", reason: "item index outside 0..<\(itemCount)")
            }
        }
        fitStandardization(lists)
        let c = configuration
        let optimizer = Adam(learningRate: Float(c.learningRate), weightDecay: Float(c.weightDecay), lazy: false)
        let loop = TrainingLoop(settings: .init(epochs: c.epochs, batchSize: c.batchSize, seed: c.seed, patience: c.patience),
                                parameters: parameters, optimizer: optimizer)
        return try loop.run(examples: lists.count, model: "ranker", exampleName: "lists", progress: progress, validationName: validationName,
                            step: { batch, generator in self.trainStep(batch.map { lists[$0] }, generator: &generator) },
                            validate: validate)
    }

    func fitStandardization(_ lists: [RankingList]) {
        let f = featureCount
        var sum = [Double](repeating: 0, count: f), squares = sum
        var n = 0.0
        for list in lists {
            for r in 0..<list.features.rows {
                for j in 0..<f {
                    let v = Double(list.features.values[r * f + j])
                    sum[j] += v
                    squares[j] += v * v
                }
            }
            n += Double(list.features.rows)
        }
        guard n > 0 else { return }
        for j in 0..<f {
            let mean = sum[j] / n
            let variance = max(0, squares[j] / n - mean * mean)
            featureMean[j] = Float(mean)
            featureScale[j] = variance > 1e-12 ? Float(1 / variance.squareRoot()) : 1
        }
    }

    /// One batch of lists: forward, each list's loss gradient, backward. Returns the summed loss.
    func trainStep(_ lists: [RankingList], generator: inout SeededGenerator) -> Double {
        let counts = lists.map(\.items.count)
        let x = standardized(vconcat(lists.map(\.features)))
        let scores: [Float]
        var p = Matrix(rows: 0, columns: 0), e = p
        if let itemEmbedding, let historyEmbedding {
            e = itemEmbedding.forward(lists.flatMap(\.items))
            p = repeatRows(historyEmbedding.bag(lists.map(\.history)), counts: counts)
            scores = head.forward(hconcat([hadamard(p, e), mlp.forward(hconcat([x, p, e]), training: true)]), training: true).values
        } else {
            scores = head.forward(mlp.forward(x, training: true), training: true).values
        }
        var dScores = [Float](repeating: 0, count: scores.count)
        var total = 0.0
        var start = 0
        for list in lists {
            let n = list.items.count
            let (loss, gradient) = RankingLosses.evaluate(configuration.loss, scores: Array(scores[start..<(start + n)]), labels: list.labels,
                                                          relevant: list.relevant, cutoff: configuration.cutoff,
                                                          samples: configuration.samples, generator: &generator)
            total += Double(loss)
            // Mean over the batch's lists.
            for j in 0..<n { dScores[start + j] = gradient[j] / Float(lists.count) }
            start += n
        }
        let dZ = head.backward(Matrix(rows: scores.count, columns: 1, values: dScores))
        guard let itemEmbedding, let historyEmbedding else {
            _ = mlp.backward(dZ)
            return total
        }
        let d = configuration.dimension
        let parts = hsplit(dZ, widths: [d, dZ.columns - d])
        let dIn = hsplit(mlp.backward(parts[1]), widths: [featureCount, d, d])
        var dP = dIn[1], dE = dIn[2]
        for k in 0..<dP.values.count {
            dP.values[k] += parts[0].values[k] * e.values[k]
            dE.values[k] += parts[0].values[k] * p.values[k]
        }
        itemEmbedding.backward(dE)
        historyEmbedding.bagBackward(sumRows(dP, counts: counts))
        return total
    }

    func standardized(_ x: Matrix) -> Matrix {
        var y = x
        let f = featureCount
        featureMean.withUnsafeBufferPointer { mean in
            featureScale.withUnsafeBufferPointer { scale in
                y.values.withUnsafeMutableBufferPointer { v in
                    for r in 0..<x.rows { for j in 0..<f { v[r * f + j] = (v[r * f + j] - mean[j]) * scale[j] } }
                }
            }
        }
        return y
    }

    // MARK: Files

    public static let format = "affinity-ranker"
    public static let formatVersion = 1

    /// The ranker as one safetensors file: weights as tensors, configuration, feature names and
    /// standardisation in the metadata.
    public func save(to path: String) throws {
        var tensors: [String: Tensor] = [
            "feature_mean": .float32(featureMean), "feature_scale": .float32(featureScale),
        ]
        for p in parameters { tensors[p.name] = .float32(p.value.values, shape: [p.value.rows, p.value.columns]) }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let metadata = [
            "format": Self.format, "format_version": String(Self.formatVersion),
            "config": String(decoding: try encoder.encode(configuration), as: UTF8.self),
            "features": featureNames.joined(separator: ","), "items": String(itemCount),
        ]
        try AtomicWrite.file(Data(try SafeTensorsFile(tensors: tensors, metadata: metadata).encoded()), to: path)
    }

    /// Reads a ranker file, checking its format, version and every tensor's shape.
    public static func load(from path: String) throws -> NeuralRanker {
        let file = try SafeTensorsFile.read(path: path)
        func bad(_ reason: String) -> ModelFileError { .corrupt(path: path, reason: reason) }
        guard file.metadata["format"] == format else { throw bad("not a ranker file (format '\(file.metadata["format"] ?? "none")', expected '\(format)')") }
        guard file.metadata["format_version"] == String(formatVersion) else {
            throw bad("format version \(file.metadata["format_version"] ?? "none"); this build reads \(formatVersion)")
        }
        guard let configText = file.metadata["config"], let configuration = try? TrainedModel.decodeConfiguration(Configuration.self, json: configText) else {
            throw bad("metadata 'config' is missing or not a ranker configuration")
        }
        do { try configuration.validate() } catch { throw bad("config: \(error)") }
        guard let itemText = file.metadata["items"], let items = Int(itemText), (1...100_000_000).contains(items) else {
            throw bad("metadata 'items' is missing or out of range")
        }
        let names = (file.metadata["features"] ?? "").split(separator: ",").map(String.init)
        guard !names.isEmpty, names.count <= 10_000 else { throw bad("metadata 'features' is missing") }
        // Every shape the configuration implies must be in the file before anything is allocated:
        // the file's own bytes bound what building the ranker costs.
        let d = configuration.dimension, h = configuration.hidden
        var expected: [(String, [Int])] = [("mlp.0.weight", [h, names.count + 2 * d]), ("mlp.2.weight", [h / 2, h]), ("head.weight", [1, d + h / 2])]
        if d > 0 { expected += [("item_embedding", [items, d]), ("history_embedding", [items, d])] }
        for (name, shape) in expected where file.tensors[name]?.shape != shape {
            throw bad("tensor '\(name)' is missing or not \(shape.map(String.init).joined(separator: " x "))")
        }
        let ranker = NeuralRanker(configuration: configuration, itemCount: items, featureNames: names)
        for p in ranker.parameters {
            guard let t = file.tensors[p.name], t.shape == [p.value.rows, p.value.columns] else {
                throw bad("tensor '\(p.name)' is missing or not \(p.value.rows) x \(p.value.columns)")
            }
            let values = try file.float32(p.name, path: path)
            guard values.allSatisfy(\.isFinite) else { throw bad("tensor '\(p.name)' holds a value that is not finite") }
            p.value.values = values
        }
        let mean = try file.float32("feature_mean", path: path), scale = try file.float32("feature_scale", path: path)
        guard mean.count == names.count, scale.count == names.count, (mean + scale).allSatisfy(\.isFinite) else {
            throw bad("feature_mean / feature_scale must hold \(names.count) finite values")
        }
        ranker.featureMean = mean
        ranker.featureScale = scale
        return ranker
    }
}

// MARK: Row and column plumbing of the ranker's network.

/// [a | b | ...]: matrices with the same rows side by side.
func hconcat(_ parts: [Matrix]) -> Matrix {
    let rows = parts[0].rows, width = parts.reduce(0) { $0 + $1.columns }
    precondition(parts.allSatisfy { $0.rows == rows }, "hconcat: rows differ")
    var values: [Float] = []
    values.reserveCapacity(rows * width)
    for r in 0..<rows {
        for m in parts { values.append(contentsOf: m.values[(r * m.columns)..<((r + 1) * m.columns)]) }
    }
    return Matrix(rows: rows, columns: width, values: values)
}

/// The inverse of `hconcat`: column blocks of the given widths.
func hsplit(_ m: Matrix, widths: [Int]) -> [Matrix] {
    var offset = 0
    return widths.map { w in
        var values: [Float] = []
        values.reserveCapacity(m.rows * w)
        for r in 0..<m.rows { values.append(contentsOf: m.values[(r * m.columns + offset)..<(r * m.columns + offset + w)]) }
        offset += w
        return Matrix(rows: m.rows, columns: w, values: values)
    }
}

/// Matrices with the same columns stacked.
func vconcat(_ parts: [Matrix]) -> Matrix {
    let columns = parts.first?.columns ?? 0
    return Matrix(rows: parts.reduce(0) { $0 + $1.rows }, columns: columns, values: parts.flatMap(\.values))
}

/// Row r of `m` repeated counts[r] times.
func repeatRows(_ m: Matrix, counts: [Int]) -> Matrix {
    var values: [Float] = []
    values.reserveCapacity(counts.reduce(0, +) * m.columns)
    for (r, n) in counts.enumerated() { for _ in 0..<n { values.append(contentsOf: m.row(r)) } }
    return Matrix(rows: counts.reduce(0, +), columns: m.columns, values: values)
}

/// The inverse of `repeatRows` for gradients: each group of counts[r] rows summed.
func sumRows(_ m: Matrix, counts: [Int]) -> Matrix {
    var out = Matrix(rows: counts.count, columns: m.columns)
    var row = 0
    for (r, n) in counts.enumerated() {
        for _ in 0..<n {
            for c in 0..<m.columns { out.values[r * m.columns + c] += m.values[row * m.columns + c] }
            row += 1
        }
    }
    return out
}

func hadamard(_ a: Matrix, _ b: Matrix) -> Matrix {
    var out = a
    for k in 0..<out.values.count { out.values[k] *= b.values[k] }
    return out
}

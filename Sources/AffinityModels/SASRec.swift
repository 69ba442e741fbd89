import AffinityData
import AffinityEval
import AffinityLinalg
import AffinityNN
import Foundation

/// A model that reads a user's items in time order: its scores depend on the order, and a known
/// user's input is their training sequence (not their set of items).
public protocol SequentialRecommender: Recommender {
    /// A known user's training items in time order.
    func trainingSequence(ofUser user: Int) -> [Int]
    /// The longest input the model reads; a longer history is cut to its most recent items.
    var maxLength: Int { get }
}

/// SASRec's training objective.
public enum SequenceLoss: String, Codable, Sendable, CaseIterable, SettingChoice {
    /// Cross-entropy of a softmax over the whole catalogue (Klenitskiy & Vasilev 2023: the strongest).
    case softmax
    /// Softmax over the batch's distinct targets and `negatives` sampled items (`sampling`), logits
    /// corrected by −log Q of the sampling distribution (Yi et al. 2019).
    case sampledSoftmax = "sampled-softmax"
    /// Binary cross-entropy with one negative per position, drawn uniformly from the items the user
    /// has not seen (Kang & McAuley 2018).
    case bce
    /// gBCE (Petrov & Macdonald 2023): BCE with `negatives` items per position, drawn uniformly
    /// from those the user has not seen, the positive's
    /// probability raised to β = α(t(1 − 1/α) + 1/α), α = negatives / (items − 1), to undo the
    /// overconfidence that negative sampling causes.
    case gbce
}

/// How sampled losses draw their negatives.
public enum NegativeSampling: String, Codable, Sendable, CaseIterable, SettingChoice {
    case uniform, popularity
}

extension BlockLayout: SettingChoice {}
extension Activation: SettingChoice {}

/// The network of SASRec: item vectors (from its `ItemEncoder`: an ID table, projected text
/// vectors or code embeddings) and position embeddings, Transformer blocks, a final layer norm; the
/// item vectors are also the output layer (tied), so an item's score after a sequence is its
/// vector's dot product with the last position's output.
///
/// Every pass takes the item table (items x d) the caller computed from the encoder for this step
/// (`encoder.table(training:)`), so one table serves the input rows and the scores, and `backward`
/// adds dL/d(input rows) into the table's gradient, which the caller hands to the encoder.
/// Sendable: after training only `lastOutputs` runs, which writes nothing into the layers.
public final class SASRecNetwork: @unchecked Sendable {
    public let encoder: any ItemEncoder
    public let positions: Parameter    // maxLength x d
    public let blocks: [TransformerBlock]
    public let finalNorm: LayerNorm
    /// `ItemInput.text` and `.codes`: the input row is LayerNorm(item + position) (RecBole's
    /// SASRec, as UniSRec and VQ-Rec use it); `.id`: √d · item + position (the SASRec paper).
    public let inputNorm: LayerNorm?
    let inputDropout: Dropout
    let dimension: Int, maxLength: Int
    // Forward state.
    private var tokens: [Int] = [], positionIDs: [Int] = []

    public init(items: Int, configuration c: SASRec.Configuration, itemVectors: Matrix? = nil, codes: ItemCodes? = nil) throws {
        let d = c.dimension
        dimension = d
        maxLength = c.maxLength
        var g = SeededGenerator(seed: c.seed, stream: 1)
        // Xavier-normal initialisation of every matrix, as the reference (pmixer/SASRec.pytorch).
        func xavier(_ rows: Int, _ columns: Int) -> Matrix {
            let std = (2 / Double(rows + columns)).squareRoot()
            return Matrix(rows: rows, columns: columns, values: (0..<(rows * columns)).map { _ in Float(g.nextGaussian() * std) })
        }
        let threads = Parallelism.resolve(c.threads)
        switch c.items {
        case .id:
            encoder = IDItemEncoder(items: Parameter("items", value: xavier(items, d)))
        case .text:
            guard let itemVectors, itemVectors.rows == items else {
                throw ModelError.invalidSetting(name: "itemVectors", reason: "items=text needs a text vector per item (\(items) items, \(itemVectors?.rows ?? 0) vectors): --items FILE or --item-vectors FILE")
            }
            encoder = TextItemEncoder(vectors: itemVectors, dimension: d, seed: c.seed &+ 3, threads: threads)
        case .codes:
            guard let codes, codes.count == items else {
                throw ModelError.invalidSetting(name: "items", reason: "items=codes needs a code per item (\(items) items, \(codes?.count ?? 0) codes)")
            }
            encoder = CodeItemEncoder(codes: codes, dimension: d, seed: c.seed &+ 3, scale: 0.02)
        }
        positions = Parameter("positions", value: xavier(c.maxLength, d))
        blocks = (0..<c.blocks).map { b in
            TransformerBlock(dimension: d, heads: c.heads, hidden: c.hidden > 0 ? c.hidden : nil, dropout: Float(c.dropout), activation: c.activation,
                             layout: c.layout, epsilon: 1e-8, seed: c.seed &+ UInt64(100 * (b + 1)), name: "block\(b)", threads: threads)
        }
        finalNorm = LayerNorm(d, epsilon: 1e-8, name: "final_norm")
        inputNorm = c.items == .id ? nil : LayerNorm(d, epsilon: 1e-8, name: "input_norm")
        inputDropout = Dropout(Float(c.dropout), seed: c.seed &+ 7)
        for block in blocks {
            for p in block.parameters where p.value.rows > 1 { p.value = xavier(p.value.rows, p.value.columns) }
            // nn.MultiheadAttention starts its projection biases at zero.
            let a = block.attention
            for p in [a.query.bias, a.key.bias, a.value.bias, a.output.bias] { p.value = Matrix(rows: 1, columns: d) }
        }
    }

    public var parameters: [Parameter] { encoder.parameters + (inputNorm?.parameters ?? []) + sequenceParameters }
    /// The sequence encoder: positions, blocks, final norm. VQ-Rec's fine-tuning keeps these
    /// fixed and learns the rest (the item encoder and the input norm, as the reference's `fix_enc`).
    public var sequenceParameters: [Parameter] { [positions] + blocks.flatMap(\.parameters) + finalNorm.parameters }
    /// What learns when the sequence encoder is fixed.
    public var itemParameters: [Parameter] { encoder.parameters + (inputNorm?.parameters ?? []) }
    var scale: Float { inputNorm == nil ? Float(dimension).squareRoot() : 1 }

    /// The input rows: scale · item vector + position embedding (before the input norm).
    private func embed(_ tokens: [Int], _ positionIDs: [Int], table: Matrix) -> Matrix {
        let d = dimension, scale = scale
        var x = Matrix(rows: tokens.count, columns: d)
        table.values.withUnsafeBufferPointer { e in
            positions.value.values.withUnsafeBufferPointer { p in
                x.values.withUnsafeMutableBufferPointer { xp in
                    for (r, (t, q)) in zip(tokens, positionIDs).enumerated() {
                        for k in 0..<d { xp[r * d + k] = e[t * d + k] * scale + p[q * d + k] }
                    }
                }
            }
        }
        return x
    }

    /// The output of every position of a packed batch (training: keeps what backward needs);
    /// `table` is the step's item table (rows beyond the items' may be extra items the tokens name).
    public func forward(tokens: [Int], positions: [Int], layout: SequenceLayout, table: Matrix) -> Matrix {
        self.tokens = tokens
        positionIDs = positions
        var x = embed(tokens, positions, table: table)
        if let inputNorm { x = inputNorm.forward(x, training: true) }
        x = inputDropout.forward(x, training: true)
        for block in blocks { x = block.forward(x, layout: layout, training: true) }
        return finalNorm.forward(x, training: true)
    }

    /// Adds the parameters' gradients for dL/d(output), and the input rows' into `tableGradient`
    /// (the encoder's parameters get theirs from the caller's `encoder.backward`).
    public func backward(_ dOutput: Matrix, tableGradient: inout Matrix) {
        var dx = finalNorm.backward(dOutput)
        for block in blocks.reversed() { dx = block.backward(dx) }
        dx = inputDropout.backward(dx)
        if let inputNorm { dx = inputNorm.backward(dx) }
        let d = dimension, scale = scale
        dx.values.withUnsafeBufferPointer { g in
            tableGradient.values.withUnsafeMutableBufferPointer { ge in
                positions.grad.values.withUnsafeMutableBufferPointer { gp in
                    for (r, (t, q)) in zip(tokens, positionIDs).enumerated() {
                        for k in 0..<d {
                            ge[t * d + k] += g[r * d + k] * scale
                            gp[q * d + k] += g[r * d + k]
                        }
                    }
                }
            }
        }
    }

    /// The last position's output for each sequence (inference: nothing kept, safe from many
    /// threads); sequences are cut to their `maxLength` most recent items; an empty one gives a
    /// zero row. `table` is the trained item table (`encoder.table(training: false)`).
    public func lastOutputs(_ sequences: [[Int]], table: Matrix) -> Matrix {
        let (tokens, positions, layout) = SequenceBatcher.packed(sequences, maxLength: maxLength)
        var out = Matrix(rows: sequences.count, columns: dimension)
        guard layout.rows > 0 else { return out }
        var x = embed(tokens, positions, table: table)
        if let inputNorm { x = inputNorm.infer(x) }
        for block in blocks { x = block.infer(x, layout: layout) }
        let h = finalNorm.infer(x)
        for s in 0..<layout.count where layout.length(s) > 0 {
            let r = layout.offsets[s + 1] - 1
            for k in 0..<dimension { out.values[s * dimension + k] = h.values[r * dimension + k] }
        }
        return out
    }
}

/// SASRec (Kang & McAuley 2018): self-attentive sequential recommendation. A user's items in time
/// order go through causal Transformer blocks; the output at the last position, dotted with each
/// item's embedding, scores what comes next. Trained to predict every next item of each training
/// sequence, with the loss `loss` selects, through the shared `TrainingLoop` (validation NDCG@10 on
/// the split's `valid.tsv` targets each epoch when given, early stopping, best epoch restored).
///
/// Known users are scored from their training sequence (their final vectors are computed once,
/// after training, and saved), so the item embeddings serve through an ANN index like any
/// `EmbeddingRecommender`; a history (fold-in) runs the network on it.
public struct SASRec: TrainingDataRecommender, FactorScoredRecommender, SequentialRecommender {
    public struct Configuration: ModelConfiguration {
        public static let settingHelp: [String: String] = [
            "blocks": "Transformer blocks",
            "heads": "attention heads (divide dimension)",
            "dimension": "embedding and hidden width",
            "maxLength": "longest input (most recent items kept)",
            "dropout": "dropout: embeddings, attention, feed-forward",
            "loss": "training objective",
            "negatives": "negatives per batch (sampled-softmax, gbce)",
            "sampling": "negatives of sampled-softmax",
            "gbceT": "gBCE calibration t in [0, 1]",
            "epochs": "most passes over the users",
            "patience": "epochs without better validation (0: never stop)",
            "batchSize": "sequences per step",
            "learningRate": "Adam step size (betas 0.9, 0.98)",
            "layout": "layer norm placement",
            "activation": "feed-forward non-linearity",
            "seed": "initialisation, order, dropout and negatives",
            "threads": "worker threads (0 = all cores)",
            "items": "item vectors: id table or projected text vector",
            "hidden": "feed-forward width (0 = dimension)",
            "temperature": "0: dot products; > 0: cosine / temperature",
        ]

        public var blocks: Int = 2
        public var heads: Int = 1
        public var dimension: Int = 64
        public var maxLength: Int = 200
        public var dropout: Double = 0.2
        public var loss: SequenceLoss = .softmax
        public var negatives: Int = 256
        public var sampling: NegativeSampling = .uniform
        public var gbceT: Double = 0.75
        /// With validation targets (a leave-last-out split's valid.tsv) training stops after
        /// `patience` epochs without a better validation NDCG@10; without them every epoch runs.
        public var epochs: Int = 100
        public var patience: Int = 10
        public var batchSize: Int = 128
        public var learningRate: Double = 1e-3
        public var layout: BlockLayout = .sasrec
        public var activation: Activation = .relu
        public var seed: UInt64 = 42
        public var threads: Int = 0
        /// `.text` needs item text vectors (`TrainingData.itemVectors`); `.codes` is VQ-Rec's
        /// (`affinity train --model-type vq-rec`), which makes the codes.
        public var items: ItemInput = .id
        /// Width of each block's feed-forward layer; 0 keeps it at `dimension`.
        public var hidden: Int = 0
        /// 0: an item's score is its vector's dot product with the sequence's output (SASRec);
        /// above 0: their cosine divided by it (UniSRec, VQ-Rec), with the softmax loss.
        public var temperature: Double = 0

        public init() {}

        public func validate() throws {
            for (name, v) in [("blocks", blocks), ("heads", heads), ("dimension", dimension), ("maxLength", maxLength),
                              ("negatives", negatives), ("batchSize", batchSize)] where v <= 0 {
                throw ModelError.invalidSetting(name: name, reason: "must be positive, got \(v)")
            }
            guard dimension % heads == 0 else { throw ModelError.invalidSetting(name: "heads", reason: "dimension \(dimension) is not a multiple of \(heads) heads") }
            guard dimension <= 4096, maxLength <= 4096, blocks <= 64 else {
                throw ModelError.invalidSetting(name: "dimension", reason: "dimension and maxLength at most 4096, blocks at most 64")
            }
            guard dropout >= 0 && dropout < 1 else { throw ModelError.invalidSetting(name: "dropout", reason: "must be in [0, 1), got \(dropout)") }
            guard gbceT >= 0 && gbceT <= 1 else { throw ModelError.invalidSetting(name: "gbceT", reason: "must be in [0, 1], got \(gbceT)") }
            guard epochs >= 0, patience >= 0, threads >= 0 else { throw ModelError.invalidSetting(name: "epochs", reason: "epochs, patience and threads must not be negative") }
            guard learningRate > 0 && learningRate.isFinite else { throw ModelError.invalidSetting(name: "learningRate", reason: "must be positive") }
            guard hidden >= 0 && hidden <= 16_384 else { throw ModelError.invalidSetting(name: "hidden", reason: "must be in 0...16384, got \(hidden)") }
            guard temperature >= 0 && temperature.isFinite else { throw ModelError.invalidSetting(name: "temperature", reason: "must be 0 or positive, got \(temperature)") }
            if temperature > 0 && loss != .softmax {
                throw ModelError.invalidSetting(name: "temperature", reason: "cosine scores (temperature > 0) go with loss=softmax, not \(loss.rawValue)")
            }
        }
    }

    public static let modelType = "sasrec"
    public let configuration: Configuration
    public let interactions: SparseMatrix
    public let network: SASRecNetwork
    /// Each known user's training sequence (time order).
    public let sequences: [[Int]]
    /// Known users' vectors (the last output after their training sequence) and the item vectors
    /// (the encoder's table; both L2-normalised when `temperature` > 0, so dot products rank as
    /// the cosines the model was trained on).
    public let factors: FactorModel
    /// The encoder's item table after training (before any normalisation): the input rows of a
    /// history's pass (computed once: a code or text encoder's table costs items x d work).
    public let itemTable: Matrix
    /// What training did: epochs run, kept epoch, validation NDCG@10 per epoch.
    public let outcome: TrainingLoop.Outcome?

    public var maxLength: Int { configuration.maxLength }
    public func trainingSequence(ofUser user: Int) -> [Int] { sequences[user] }

    init(configuration: Configuration, interactions: SparseMatrix, network: SASRecNetwork, sequences: [[Int]], outcome: TrainingLoop.Outcome?) {
        self.configuration = configuration
        self.interactions = interactions
        self.network = network
        self.sequences = sequences
        self.outcome = outcome
        itemTable = network.encoder.table(training: false)
        factors = FactorModel(userFactors: Self.userVectors(network, sequences, table: itemTable, configuration),
                              itemFactors: Self.scoringTable(itemTable, configuration))
    }

    /// The item vectors scores are taken against (normalised for cosine scores).
    static func scoringTable(_ table: Matrix, _ c: Configuration) -> Matrix {
        c.temperature > 0 ? ExactSearch.normalizedRows(table) : table
    }

    /// The last output after each sequence (normalised for cosine scores); `table` is the
    /// encoder's trained table.
    static func userVectors(_ network: SASRecNetwork, _ sequences: [[Int]], table: Matrix, _ c: Configuration) -> Matrix {
        let d = table.columns
        var out = Matrix(rows: sequences.count, columns: d)
        let chunk = 256
        var start = 0
        while start < sequences.count {
            let end = min(sequences.count, start + chunk)
            let h = network.lastOutputs(Array(sequences[start..<end]), table: table)
            for k in 0..<h.values.count { out.values[start * d + k] = h.values[k] }
            start = end
        }
        return c.temperature > 0 ? ExactSearch.normalizedRows(out) : out
    }

    // MARK: Training

    /// What a training run starts from and changes, beyond the configuration (VQ-Rec's stages).
    struct Run {
        /// `ItemInput.codes`: each item's code.
        var codes: ItemCodes? = nil
        /// Start from this network (its parameters are trained further) instead of a new one.
        var network: SASRecNetwork? = nil
        /// Train the item encoder and the input norm only (VQ-Rec's fine-tuning with the sequence
        /// encoder fixed).
        var itemEncoderOnly = false
        /// VQ-Rec's semi-synthetic negatives: per position, one fake item (the position's target's
        /// code with each index replaced by a random centroid with this probability) joins the
        /// softmax's candidates, shared by the batch (the reference scores a row against its own
        /// fake only; here every row also meets the others').
        var semiSynthetic: Double = 0
        /// Name in progress lines.
        var name = SASRec.modelType
    }

    /// Trains on `data.sequences`, which must be in time order (a log with timestamps), unless
    /// `requireTimeOrder` is false (tests with synthetic sequences).
    public static func fit(_ data: TrainingData, configuration c: Configuration, progress: TrainingProgress.Handler?) throws -> SASRec {
        try fit(data, configuration: c, progress: progress, requireTimeOrder: true)
    }

    public static func fit(_ data: TrainingData, configuration c: Configuration, progress: TrainingProgress.Handler?,
                           requireTimeOrder: Bool) throws -> SASRec {
        if c.items == .codes {
            throw ModelError.invalidSetting(name: "items", reason: "items=codes is VQ-Rec's item representation: --model-type vq-rec makes the codes from the item text")
        }
        return try fit(data, configuration: c, progress: progress, requireTimeOrder: requireTimeOrder, run: Run())
    }

    static func fit(_ data: TrainingData, configuration c: Configuration, progress: TrainingProgress.Handler?,
                    requireTimeOrder: Bool, run: Run) throws -> SASRec {
        try c.validate()
        if requireTimeOrder && !data.timeOrdered {
            throw ModelError.invalidSetting(name: "data", reason: "sasrec learns from the order of each user's items, and these interactions have no timestamps (give a log or split with a timestamp column)")
        }
        let n = data.itemCount, d = c.dimension
        try MemoryBudget.check(bytes: Double(n + c.maxLength) * Double(d) * 4 * 4 + Double(c.batchSize) * Double(c.maxLength) * Double(c.maxLength) * Double(c.heads) * Double(c.blocks) * 4 * 3
                                   + Double(c.items == .text ? n * (data.itemVectors?.columns ?? 0) * 4 : 0),
                               for: "SASRec with dimension=\(d), maxLength=\(c.maxLength), batchSize=\(c.batchSize) on \(n) items")
        let network = try run.network ?? SASRecNetwork(items: n, configuration: c, itemVectors: c.items == .text ? data.itemVectors : nil, codes: run.codes)
        guard network.encoder.itemCount == n else {
            throw ModelError.invalidSetting(name: "items", reason: "the network has \(network.encoder.itemCount) items, the data \(n)")
        }
        // Examples: users with at least two items (an input and a target).
        let users = (0..<data.userCount).filter { data.sequences[$0].count >= 2 }
        let threads = Parallelism.resolve(c.threads)
        let counts = data.interactions.columnCounts()
        let sampler = NegativeSampler(counts: counts, kind: c.loss == .sampledSoftmax ? c.sampling : .uniform)
        let optimizer = Adam(learningRate: Float(c.learningRate), beta1: 0.9, beta2: 0.98)
        let loop = TrainingLoop(settings: .init(epochs: c.epochs, batchSize: c.batchSize, seed: c.seed, patience: c.patience),
                                parameters: run.itemEncoderOnly ? network.itemParameters : network.parameters, optimizer: optimizer)
        var validation: EvaluationData? = nil
        if let targets = data.validationTargets {
            let v = EvaluationData(history: data.interactions, targets: targets)
            if !v.evaluatedUsers.isEmpty { validation = v }
        }
        let codeEncoder = network.encoder as? CodeItemEncoder
        let evaluator = try Evaluator(cutoffs: [10], threads: threads)
        let outcome = try loop.run(examples: users.count, model: run.name, exampleName: "sequences", progress: progress,
                                   validationName: "NDCG@10", step: { batch, generator in
            let sequences = batch.map { data.sequences[users[$0]] }
            let inputs = sequences.map { Array($0.dropLast()) }, targetsOf = sequences.map { Array($0.dropFirst()) }
            let (tokens, positions, layout) = SequenceBatcher.packed(inputs, maxLength: c.maxLength)
            let targets = SequenceBatcher.packed(targetsOf, maxLength: c.maxLength).tokens
            var table: Matrix
            if run.semiSynthetic > 0, let codeEncoder {
                let fakes = targets.map { t in
                    codeEncoder.codes.code(of: t).map { generator.nextDouble() < run.semiSynthetic ? UInt8(generator.next(below: codeEncoder.codes.centroids)) : $0 }
                }
                table = codeEncoder.table(training: true, extra: fakes)
            } else {
                table = network.encoder.table(training: true)
            }
            var dTable = Matrix(rows: table.rows, columns: d)
            let h = network.forward(tokens: tokens, positions: positions, layout: layout, table: table)
            let (loss, dH) = Self.loss(c, hidden: h, targets: targets, layout: layout, sequences: sequences, table: table, tableGradient: &dTable,
                                       sampler: sampler, generator: &generator, threads: threads)
            network.backward(dH, tableGradient: &dTable)
            network.encoder.backward(dTable)
            return loss
        }, validate: validation.map { v in {
            let table = network.encoder.table(training: false)
            let items = Self.scoringTable(table, c)
            let vectors = Self.userVectors(network, data.sequences, table: table, c)
            let report = evaluator.evaluate(v) { user, scores in
                vectors.values.withUnsafeBufferPointer { u in
                    items.values.withUnsafeBufferPointer { e in
                        Kernels.dotRows(query: u.baseAddress! + user * d, rows: e.baseAddress!, rowCount: n, dimension: d, into: scores.baseAddress!)
                    }
                }
            }
            return report.metrics(at: 10)?.ndcg ?? 0
        } })
        return SASRec(configuration: c, interactions: data.interactions, network: network, sequences: data.sequences, outcome: outcome)
    }

    /// The batch's summed loss over its positions and dL/d(hidden) of the mean loss; adds the item
    /// table's gradient into `tableGradient`. Every row of `table` is a candidate of the full
    /// softmax (rows beyond the items' are extra negatives).
    static func loss(_ c: Configuration, hidden h: Matrix, targets: [Int], layout: SequenceLayout, sequences: [[Int]],
                     table: Matrix, tableGradient: inout Matrix, sampler: NegativeSampler, generator: inout SeededGenerator,
                     threads: Int) -> (Double, Matrix) {
        let rows = h.rows, d = h.columns, n = sampler.count
        switch c.loss {
        case .softmax:
            // Cosine scores: both sides through an L2 normalisation, whose backward comes last.
            let queryNorm = L2Normalize(), tableNorm = L2Normalize()
            let cosine = c.temperature > 0
            let queries = cosine ? queryNorm.forward(h, training: true) : h
            let candidates = cosine ? tableNorm.forward(table, training: true) : table
            let temperature = cosine ? Float(c.temperature) : 1
            // In chunks of rows, so the logits stay small; each chunk's mean is rescaled to the batch's.
            var dH = Matrix(rows: rows, columns: d)
            var dCandidates = Matrix(rows: table.rows, columns: d)
            var total = 0.0
            let chunk = 1024
            var start = 0
            while start < rows {
                let end = min(rows, start + chunk), share = Float(end - start) / Float(rows)
                let part = Matrix(rows: end - start, columns: d, values: Array(queries.values[(start * d)..<(end * d)]))
                let r = Losses.sampledSoftmax(queries: part, candidates: candidates, positives: Array(targets[start..<end]),
                                              temperature: temperature, threads: threads)
                total += Double(r.loss) * Double(end - start)
                for k in 0..<r.gradients[0].values.count { dH.values[start * d + k] = r.gradients[0].values[k] * share }
                dCandidates.values.withUnsafeMutableBufferPointer { g in
                    r.gradients[1].values.withUnsafeBufferPointer { src in for k in 0..<g.count { g[k] += src[k] * share } }
                }
                start = end
            }
            if cosine {
                dH = queryNorm.backward(dH)
                dCandidates = tableNorm.backward(dCandidates)
            }
            tableGradient.values.withUnsafeMutableBufferPointer { g in
                dCandidates.values.withUnsafeBufferPointer { src in for k in 0..<g.count { g[k] += src[k] } }
            }
            return (total, dH)
        case .sampledSoftmax:
            // Candidates: the batch's distinct targets and `negatives` sampled items; logQ from the sampler.
            var candidates: [Int] = [], slot: [Int: Int] = [:]
            for t in targets where slot[t] == nil { slot[t] = candidates.count; candidates.append(t) }
            for _ in 0..<c.negatives {
                let i = sampler.draw(&generator)
                if slot[i] == nil { slot[i] = candidates.count; candidates.append(i) }
            }
            let e = rowsOf(table, candidates)
            let r = Losses.sampledSoftmax(queries: h, candidates: e, positives: targets.map { slot[$0]! }, temperature: 1,
                                          logQ: candidates.map { sampler.logProbability($0) }, threads: threads)
            scatterAdd(r.gradients[1], into: &tableGradient, rows: candidates)
            return (Double(r.loss) * Double(rows), r.gradients[0])
        case .bce, .gbce:
            // BCE over the positive and, per position, negatives the user has not seen: one (bce, the
            // original paper) or `negatives` (gbce, with the positive's term weighted by β; bce is β = 1).
            let k = c.loss == .bce ? 1 : c.negatives
            let alpha = Double(k) / Double(max(1, n - 1))
            let beta = c.loss == .bce ? 1 : Float(alpha * (c.gbceT * (1 - 1 / alpha) + 1 / alpha))
            var negatives = [Int32](repeating: 0, count: rows * k)
            for s in 0..<layout.count {
                let seen = Set(sequences[s])
                for r in layout.offsets[s]..<layout.offsets[s + 1] {
                    for j in 0..<k {
                        var item = sampler.draw(&generator)
                        var tries = 0
                        while seen.contains(item) && tries < 100 { item = sampler.draw(&generator); tries += 1 }
                        negatives[r * k + j] = Int32(item)
                    }
                }
            }
            let positives = rowsOf(table, targets)
            let sPos = RowDot.forward(h, positives)
            var dPos = [Float](repeating: 0, count: rows)
            var logits = [Float](repeating: 0, count: rows * k)
            h.values.withUnsafeBufferPointer { hp in table.values.withUnsafeBufferPointer { ep in
                negatives.withUnsafeBufferPointer { ids in logits.withUnsafeMutableBufferPointer { lp in
                    for r in 0..<rows {
                        Kernels.scores(ids: ids.baseAddress! + r * k, count: k, query: hp.baseAddress! + r * d, rows: ep.baseAddress!,
                                       dimension: d, negatedL2: false, into: lp.baseAddress! + r * k)
                    }
                } }
            } }
            var total = 0.0
            let inv = 1 / Float(rows)
            var dH = Matrix(rows: rows, columns: d)
            h.values.withUnsafeBufferPointer { hp in table.values.withUnsafeBufferPointer { ep in
                dH.values.withUnsafeMutableBufferPointer { dhp in tableGradient.values.withUnsafeMutableBufferPointer { ge in
                    for r in 0..<rows {
                        total += Double(beta * softplus(-sPos[r]))
                        dPos[r] = -beta * (1 - sigmoid(sPos[r])) * inv
                        for j in 0..<k {
                            let item = Int(negatives[r * k + j])
                            guard item != targets[r] else { continue }   // an accidental hit is no negative
                            let s = logits[r * k + j]
                            total += Double(softplus(s))
                            let g = sigmoid(s) * inv
                            for t in 0..<d {
                                dhp[r * d + t] += g * ep[item * d + t]
                                ge[item * d + t] += g * hp[r * d + t]
                            }
                        }
                    }
                } }
            } }
            let (dh1, de1) = RowDot.backward(h, positives, dPos)
            scatterAdd(de1, into: &tableGradient, rows: targets)
            return (total, dH + dh1)
        }
    }

    @inline(__always) static func sigmoid(_ x: Float) -> Float { 1 / (1 + exp(-x)) }
    /// log(1 + eˣ), without overflow.
    @inline(__always) static func softplus(_ x: Float) -> Float { x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)) }

    static func rowsOf(_ m: Matrix, _ ids: [Int]) -> Matrix {
        let d = m.columns
        var out = Matrix(rows: ids.count, columns: d)
        m.values.withUnsafeBufferPointer { src in out.values.withUnsafeMutableBufferPointer { dst in
            for (r, i) in ids.enumerated() { for k in 0..<d { dst[r * d + k] = src[i * d + k] } }
        } }
        return out
    }

    static func scatterAdd(_ g: Matrix, into target: inout Matrix, rows ids: [Int]) {
        let d = g.columns
        g.values.withUnsafeBufferPointer { src in target.values.withUnsafeMutableBufferPointer { dst in
            for (r, i) in ids.enumerated() { for k in 0..<d { dst[i * d + k] += src[r * d + k] } }
        } }
    }

    // MARK: Scoring

    public var scoring: FactorModel { factors }

    /// The last output after `history` (in time order; items outside the model are ignored),
    /// normalised for cosine scores.
    public func userEmbedding(history: [Int]) -> [Float] {
        Self.userVectors(network, [history.filter { $0 >= 0 && $0 < itemCount }], table: itemTable, configuration).values
    }

    // MARK: Persistence

    public func tensors() -> [String: Tensor] {
        var t = interactions.tensors(prefix: "interactions")
        for p in network.parameters { t["net." + p.name] = .float32(p.value.values, shape: [p.value.rows, p.value.columns]) }
        t["user_vectors"] = .float32(factors.userFactors.values, shape: [factors.userFactors.rows, factors.factors])
        // Sequences as one flat list of items and each user's end offset.
        var ends: [Int32] = [], flat: [Int32] = []
        for s in sequences { flat += s.map { Int32($0) }; ends.append(Int32(flat.count)) }
        t["sequence_items"] = .int32(flat, shape: [flat.count])
        t["sequence_ends"] = .int32(ends, shape: [ends.count])
        if let text = network.encoder as? TextItemEncoder {
            t["item_text_vectors"] = .float32(text.vectors.values, shape: [text.vectors.rows, text.vectors.columns])
        }
        if let codes = (network.encoder as? CodeItemEncoder)?.codes {
            t["item_codes"] = .int32(codes.values.map { Int32($0) }, shape: [codes.count, codes.subspaces])
        }
        return t
    }

    public init(configuration: Configuration, file: SafeTensorsFile, path: String) throws {
        try configuration.validate()
        let x = try SparseMatrix(file: file, prefix: "interactions", path: path)
        // The file must hold the weights the configuration sizes before the network is built.
        let stored = file.tensors.filter { $0.key.hasPrefix("net.") }.reduce(0) { $0 + $1.value.shape.reduce(1, *) }
        let d = Double(configuration.dimension), h = Double(configuration.hidden > 0 ? configuration.hidden : configuration.dimension)
        let needed = Double(configuration.items == .id ? x.columnCount : 0) * d + Double(configuration.maxLength) * d
            + Double(configuration.blocks) * (4 * d * d + 2 * d * h)
        guard needed <= Double(stored) else {
            throw SafeTensorsError.corrupt(path: path, reason: "the configuration needs at least \(Int(min(needed, 9e18))) weights; the file holds \(stored)")
        }
        var itemVectors: Matrix? = nil, codes: ItemCodes? = nil
        switch configuration.items {
        case .id: break
        case .text:
            guard let t = file.tensors["item_text_vectors"], t.shape.count == 2, t.shape[0] == x.columnCount, t.shape[1] > 0, t.shape[1] <= 65_536 else {
                throw SafeTensorsError.corrupt(path: path, reason: "item_text_vectors must be a [\(x.columnCount), t] tensor")
            }
            // The projection the vectors' width sizes must be in the file before it is allocated.
            guard Double(t.shape[1]) * d <= Double(stored) else {
                throw SafeTensorsError.corrupt(path: path, reason: "item_text_vectors' width \(t.shape[1]) needs a larger text projection than the file holds")
            }
            itemVectors = Matrix(rows: t.shape[0], columns: t.shape[1], values: try file.float32("item_text_vectors", path: path))
        case .codes:
            guard let t = file.tensors["item_codes"], t.shape.count == 2, t.shape[0] == x.columnCount, t.shape[1] > 0, t.shape[1] <= 4096 else {
                throw SafeTensorsError.corrupt(path: path, reason: "item_codes must be a [\(x.columnCount), subspaces] tensor")
            }
            guard Double(t.shape[1]) * 256 * d <= Double(stored) else {
                throw SafeTensorsError.corrupt(path: path, reason: "item_codes' \(t.shape[1]) sub-spaces need a larger code embedding than the file holds")
            }
            let raw = try file.int32("item_codes", path: path)
            guard raw.allSatisfy({ $0 >= 0 && $0 < 256 }) else { throw SafeTensorsError.corrupt(path: path, reason: "item_codes holds a value outside 0..<256") }
            codes = ItemCodes(subspaces: t.shape[1], values: raw.map { UInt8($0) })
        }
        // Text and code items derive their table (items x d) at load: bounded like any allocation.
        try MemoryBudget.check(bytes: Double(x.columnCount) * d * 4 * 2, for: "the item table of \(path)")
        let network = try SASRecNetwork(items: x.columnCount, configuration: configuration, itemVectors: itemVectors, codes: codes)
        for p in network.parameters {
            let name = "net." + p.name
            guard let t = file.tensors[name], t.shape == [p.value.rows, p.value.columns] else {
                throw SafeTensorsError.corrupt(path: path, reason: "\(name) must be a [\(p.value.rows), \(p.value.columns)] tensor")
            }
            p.value = Matrix(rows: p.value.rows, columns: p.value.columns, values: try file.float32(name, path: path))
        }
        let ends = try file.int32("sequence_ends", path: path), flat = try file.int32("sequence_items", path: path)
        guard ends.count == x.rowCount else { throw SafeTensorsError.corrupt(path: path, reason: "sequence_ends has \(ends.count) entries for \(x.rowCount) users") }
        var sequences: [[Int]] = []
        var start = 0
        for e in ends {
            let end = Int(e)
            guard end >= start && end <= flat.count else { throw SafeTensorsError.corrupt(path: path, reason: "sequence_ends is not ascending within sequence_items") }
            let s = flat[start..<end].map { Int($0) }
            guard s.allSatisfy({ $0 >= 0 && $0 < x.columnCount }) else { throw SafeTensorsError.corrupt(path: path, reason: "sequence_items holds an item outside 0..<\(x.columnCount)") }
            sequences.append(s)
            start = end
        }
        guard let u = file.tensors["user_vectors"], u.shape == [x.rowCount, configuration.dimension] else {
            throw SafeTensorsError.corrupt(path: path, reason: "user_vectors must be a [\(x.rowCount), \(configuration.dimension)] tensor")
        }
        self.configuration = configuration
        interactions = x
        self.network = network
        self.sequences = sequences
        outcome = nil
        itemTable = network.encoder.table(training: false)
        factors = FactorModel(userFactors: Matrix(rows: x.rowCount, columns: configuration.dimension, values: try file.float32("user_vectors", path: path)),
                              itemFactors: Self.scoringTable(itemTable, configuration))
    }
}

/// Negatives for sampled losses: uniform over the items, or in proportion to their training counts.
struct NegativeSampler: Sendable {
    let cumulative: [Double]   // empty: uniform
    let logQ: [Float]
    let count: Int

    init(counts: [Int], kind: NegativeSampling) {
        count = counts.count
        let total = Double(counts.reduce(0, +))
        if kind == .popularity && total > 0 {
            var c = 0.0
            cumulative = counts.map { c += Double($0) / total; return c }
            logQ = counts.map { Float(log(max(Double($0), 0.5) / total)) }
        } else {
            cumulative = []
            logQ = [Float](repeating: Float(-log(Double(max(1, counts.count)))), count: counts.count)
        }
    }

    func draw(_ g: inout SeededGenerator) -> Int {
        guard !cumulative.isEmpty else { return g.next(below: count) }
        let u = g.nextDouble()
        var lo = 0, hi = cumulative.count - 1
        while lo < hi { let mid = (lo + hi) / 2; if cumulative[mid] < u { lo = mid + 1 } else { hi = mid } }
        return lo
    }

    func logProbability(_ item: Int) -> Float { logQ[item] }
}

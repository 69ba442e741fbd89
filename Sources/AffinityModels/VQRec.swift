import AffinityData
import AffinityLinalg
import AffinityNN
import Foundation

/// VQ-Rec (Hou, He, McAuley, Wen & Zhao, WSDM 2023): item text -> frozen sentence vector -> OPQ
/// code (one of 256 centroids in each of `subspaces` sub-spaces) -> the mean of one learned
/// embedding per code index -> SASRec's Transformer over the user's items. Text chooses the code;
/// the representation is learned, so it can adapt to a domain by changing the code embeddings
/// alone, and an item never trained on is still represented, by its code (inductive).
///
/// Training, as the reference implementation (RUCAIBox/VQ-Rec) where it says: scores are cosines
/// over a temperature (0.07), the input row is LayerNorm(item + position), post-LN blocks with
/// GELU, dimension 300, feed-forward 256, dropout 0.5; ours adds SASRec's final layer norm and
/// trains batches of 256 sequences, every position predicting its next item.
/// - Target only (`fit`): the quantiser is trained on the target's item vectors; full softmax
///   over the target's items, every position of every training sequence predicting the next.
/// - With pre-training (`fit(_:pretraining:...)`): the quantiser is trained on the items of the
///   pre-training domains and codes the target's items too. Pre-training runs on the domains'
///   sequences mixed in one item space, the softmax over all their items (the negatives of the
///   other domains: VQ-Rec's mixed-domain negatives) plus one semi-synthetic item per sequence (a
///   target's code with each index replaced by a random one with probability `semiSynthetic`:
///   VQ-Rec's hard negatives). Fine-tuning then trains on the target with the sequence encoder
///   fixed and the code embeddings learned (`fineTune = codes`, the reference's `fix_enc`) or
///   everything (`all`).
///
/// Not done: the reference's permutation-based code-embedding alignment (Gumbel-Sinkhorn); its
/// fine-tuning without pre-training codes the target with the target's own OPQ and realigns the
/// code embeddings, where ours codes the target with the pre-training quantiser so that the code
/// embeddings keep their meaning. The reference's in-batch sequence-item loss is replaced by the
/// full softmax over the mixed catalogue, which holds every in-batch negative. A sequence-sequence
/// contrastive task (UniSRec's) is in neither the reference code nor here.
public struct VQRec: TrainingDataRecommender, FactorScoredRecommender, SequentialRecommender, ItemContentRecommender {
    public enum FineTune: String, Codable, Sendable, CaseIterable, SettingChoice {
        /// The sequence encoder (Transformer, positions, norms) fixed; the code embeddings learned.
        case codes
        /// Every parameter learned further.
        case all
    }

    public struct Configuration: ModelConfiguration {
        public static let settingHelp: [String: String] = [
            "subspaces": "OPQ sub-spaces (code length)",
            "blocks": "Transformer blocks",
            "heads": "attention heads (divide dimension)",
            "dimension": "code embedding and hidden width",
            "hidden": "feed-forward width",
            "maxLength": "longest input (most recent items kept)",
            "dropout": "dropout: input, attention, feed-forward",
            "temperature": "cosine scores divided by it",
            "epochs": "most passes over the target's users",
            "patience": "epochs without better validation (0: never stop)",
            "batchSize": "sequences per step",
            "learningRate": "Adam step size",
            "pretrainEpochs": "passes over the pre-training sequences",
            "semiSynthetic": "share of a fake item's code replaced",
            "fineTune": "after pre-training: what learns",
            "seed": "quantiser, initialisation, order, dropout, fakes",
            "threads": "worker threads (0 = all cores)",
        ]
        public var subspaces: Int = 32
        public var blocks: Int = 2
        public var heads: Int = 2
        public var dimension: Int = 300
        public var hidden: Int = 256
        public var maxLength: Int = 50
        public var dropout: Double = 0.5
        public var temperature: Double = 0.07
        public var epochs: Int = 100
        public var patience: Int = 10
        public var batchSize: Int = 256
        public var learningRate: Double = 1e-3
        public var pretrainEpochs: Int = 30
        public var semiSynthetic: Double = 0.75
        public var fineTune: FineTune = .codes
        public var seed: UInt64 = 42
        public var threads: Int = 0

        public init() {}

        public func validate() throws {
            guard subspaces > 0 && subspaces <= 256 else { throw ModelError.invalidSetting(name: "subspaces", reason: "must be in 1...256, got \(subspaces)") }
            guard semiSynthetic >= 0 && semiSynthetic <= 1 else { throw ModelError.invalidSetting(name: "semiSynthetic", reason: "must be in [0, 1], got \(semiSynthetic)") }
            guard temperature > 0 else { throw ModelError.invalidSetting(name: "temperature", reason: "must be positive, got \(temperature)") }
            guard pretrainEpochs >= 0 else { throw ModelError.invalidSetting(name: "pretrainEpochs", reason: "must not be negative") }
            try backbone.validate()
        }

        /// The SASRec configuration of the sequence encoder.
        public var backbone: SASRec.Configuration {
            var c = SASRec.Configuration()
            c.items = .codes
            c.blocks = blocks
            c.heads = heads
            c.dimension = dimension
            c.hidden = hidden
            c.maxLength = maxLength
            c.dropout = dropout
            c.temperature = temperature
            c.loss = .softmax
            c.layout = .postLN
            c.activation = .gelu
            c.epochs = epochs
            c.patience = patience
            c.batchSize = batchSize
            c.learningRate = learningRate
            c.seed = seed
            c.threads = threads
            return c
        }
    }

    public static let modelType = "vq-rec"
    public let configuration: Configuration
    /// The sequence model over code-embedding item vectors.
    public let sasrec: SASRec
    /// The quantiser that made the codes (saved with the model; nothing codes new items with it yet).
    public let quantizer: ItemQuantizer
    /// Items whose nearest code was taken by an earlier item and moved to a free one.
    public let collisions: Int
    /// Items without a text vector (zero): coded like any other, known by interactions alone.
    public let itemsWithoutText: Int
    /// What pre-training ran (nil: trained on the target alone).
    public let pretraining: TrainingLoop.Outcome?

    public var interactions: SparseMatrix { sasrec.interactions }
    public var scoring: FactorModel { sasrec.factors }
    public var maxLength: Int { sasrec.maxLength }
    public var codes: ItemCodes { (sasrec.network.encoder as! CodeItemEncoder).codes }
    public var outcome: TrainingLoop.Outcome? { sasrec.outcome }
    public func trainingSequence(ofUser user: Int) -> [Int] { sasrec.trainingSequence(ofUser: user) }
    public func userEmbedding(history: [Int]) -> [Float] { sasrec.userEmbedding(history: history) }

    // MARK: Training

    /// Trains on the target alone: the quantiser on its item vectors, then the model.
    public static func fit(_ data: TrainingData, configuration c: Configuration, progress: TrainingProgress.Handler?) throws -> VQRec {
        try fit(data, configuration: c, progress: progress, requireTimeOrder: true)
    }

    /// `requireTimeOrder` false: sequences in any order are taken (tests with synthetic data).
    public static func fit(_ data: TrainingData, configuration c: Configuration, progress: TrainingProgress.Handler?,
                           requireTimeOrder: Bool) throws -> VQRec {
        try c.validate()
        let vectors = try textVectors(data, domain: "the training data")
        let quantizer = try ItemQuantizer.train(vectors, subspaces: c.subspaces, seed: c.seed, threads: c.threads)
        let codes = ItemCodes.encode(vectors, quantizer: quantizer, threads: c.threads)
        let model = try SASRec.fit(data, configuration: c.backbone, progress: progress, requireTimeOrder: requireTimeOrder,
                                   run: .init(codes: codes, name: modelType))
        return VQRec(configuration: c, sasrec: model, quantizer: quantizer, collisions: codes.collisions,
                     itemsWithoutText: countZeroRows(vectors), pretraining: nil)
    }

    /// Pre-trains on `pretraining` (other domains' sequences and item vectors, mixed into one item
    /// space), then fine-tunes on `data`. The quantiser is trained on the pre-training items and
    /// codes the target's items.
    public static func fit(_ data: TrainingData, pretraining domains: [TrainingData], configuration c: Configuration,
                           progress: TrainingProgress.Handler?, requireTimeOrder: Bool = true) throws -> VQRec {
        try c.validate()
        guard !domains.isEmpty else { return try fit(data, configuration: c, progress: progress, requireTimeOrder: requireTimeOrder) }
        let target = try textVectors(data, domain: "the target")
        let mixed = try mix(domains)
        let mixedVectors = mixed.itemVectors!
        guard mixedVectors.columns == target.columns else {
            throw ModelError.invalidSetting(name: "itemVectors", reason: "the pre-training domains' text vectors have \(mixedVectors.columns) dimensions, the target's \(target.columns): one sentence encoder for all")
        }
        let quantizer = try ItemQuantizer.train(mixedVectors, subspaces: c.subspaces, seed: c.seed, threads: c.threads)
        let mixedCodes = ItemCodes.encode(mixedVectors, quantizer: quantizer, threads: c.threads)
        var pre = c.backbone
        pre.epochs = c.pretrainEpochs
        pre.patience = 0
        let pretrained = try SASRec.fit(mixed, configuration: pre, progress: progress, requireTimeOrder: false,
                                        run: .init(codes: mixedCodes, semiSynthetic: c.semiSynthetic, name: modelType + " pre-training"))
        let targetCodes = ItemCodes.encode(target, quantizer: quantizer, threads: c.threads)
        let network = try SASRecNetwork(items: data.itemCount, configuration: c.backbone, codes: targetCodes)
        try copyParameters(from: pretrained.network, to: network)
        let model = try SASRec.fit(data, configuration: c.backbone, progress: progress, requireTimeOrder: requireTimeOrder,
                                   run: .init(codes: targetCodes, network: network, itemEncoderOnly: c.fineTune == .codes, name: modelType))
        return VQRec(configuration: c, sasrec: model, quantizer: quantizer, collisions: targetCodes.collisions,
                     itemsWithoutText: countZeroRows(target), pretraining: pretrained.outcome)
    }

    /// The domains' sequences in one item space (domain k's items after those of domains before
    /// it; users likewise), with their item vectors stacked.
    static func mix(_ domains: [TrainingData]) throws -> TrainingData {
        var sequences: [[Int]] = [], pointers = [0], columns: [Int32] = []
        var vectorRows: [Float] = []
        var width: Int? = nil, offset = 0
        for (k, d) in domains.enumerated() {
            let v = try textVectors(d, domain: "pre-training domain \(k + 1)")
            if let width, width != v.columns {
                throw ModelError.invalidSetting(name: "itemVectors", reason: "pre-training domain \(k + 1) has \(v.columns)-dimensional text vectors, domain 1 \(width)")
            }
            width = v.columns
            vectorRows += v.values
            for u in 0..<d.userCount {
                sequences.append(d.sequences[u].map { $0 + offset })
                let row = d.interactions.row(u).map { $0 + Int32(offset) }
                columns += row
                pointers.append(columns.count)
            }
            offset += d.itemCount
        }
        let matrix = try SparseMatrix(rowCount: sequences.count, columnCount: offset, rowPointers: pointers, columns: columns,
                                      values: [Float](repeating: 1, count: columns.count))
        var mixed = TrainingData(interactions: matrix, sequences: sequences, timeOrdered: domains.allSatisfy(\.timeOrdered))
        mixed.itemVectors = Matrix(rows: offset, columns: width ?? 0, values: vectorRows)
        return mixed
    }

    static func textVectors(_ data: TrainingData, domain: String) throws -> Matrix {
        guard let v = data.itemVectors, v.rows == data.itemCount, v.columns > 0 else {
            throw ModelError.invalidSetting(name: "itemVectors", reason: "vq-rec codes items by their text: \(domain) needs a text vector per item (--items FILE, or the split's items.tsv, with --text-model DIR or AFFINITY_TEXT_MODEL; or --item-vectors FILE)")
        }
        return v
    }

    static func countZeroRows(_ m: Matrix) -> Int { m.rows - m.nonZeroRows().count }

    /// Copies every parameter of `source` into the same-named, same-shaped parameter of `target`.
    static func copyParameters(from source: SASRecNetwork, to target: SASRecNetwork) throws {
        let byName = Dictionary(source.parameters.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        for p in target.parameters {
            guard let s = byName[p.name], s.value.rows == p.value.rows, s.value.columns == p.value.columns else {
                throw ModelError.invalidSetting(name: "pretraining", reason: "the pre-trained network has no [\(p.value.rows), \(p.value.columns)] \(p.name)")
            }
            p.value = s.value
        }
    }

    init(configuration: Configuration, sasrec: SASRec, quantizer: ItemQuantizer, collisions: Int, itemsWithoutText: Int, pretraining: TrainingLoop.Outcome?) {
        self.configuration = configuration
        self.sasrec = sasrec
        self.quantizer = quantizer
        self.collisions = collisions
        self.itemsWithoutText = itemsWithoutText
        self.pretraining = pretraining
    }

    // MARK: Persistence

    public func tensors() -> [String: Tensor] {
        var t = sasrec.tensors()
        t["opq_rotation"] = .float32(quantizer.rotation.values, shape: [quantizer.rotation.rows, quantizer.rotation.columns])
        t["pq_codebooks"] = .float32(quantizer.pq.codebooks, shape: [quantizer.pq.subspaces, 256, quantizer.pq.subDimension])
        t["code_counts"] = .int32([Int32(clamping: collisions), Int32(clamping: itemsWithoutText)], shape: [2])
        return t
    }

    public init(configuration: Configuration, file: SafeTensorsFile, path: String) throws {
        try configuration.validate()
        sasrec = try SASRec(configuration: configuration.backbone, file: file, path: path)
        guard let r = file.tensors["opq_rotation"], r.shape.count == 2, r.shape[0] == r.shape[1], r.shape[0] > 0, r.shape[0] <= 65_536,
              let b = file.tensors["pq_codebooks"], b.shape.count == 3, b.shape[0] == configuration.subspaces, b.shape[1] == 256,
              b.shape[0] * b.shape[2] == r.shape[0] else {
            throw SafeTensorsError.corrupt(path: path, reason: "opq_rotation must be [d, d] and pq_codebooks [\(configuration.subspaces), 256, d / \(configuration.subspaces)]")
        }
        let pq = try ProductQuantizer(dimension: r.shape[0], subspaces: b.shape[0], codebooks: try file.float32("pq_codebooks", path: path))
        quantizer = try ItemQuantizer(rotation: Matrix(rows: r.shape[0], columns: r.shape[1], values: try file.float32("opq_rotation", path: path)), pq: pq)
        guard (sasrec.network.encoder as? CodeItemEncoder)?.codes.subspaces == configuration.subspaces else {
            throw SafeTensorsError.corrupt(path: path, reason: "item_codes must have \(configuration.subspaces) columns")
        }
        let counts = (try? file.int32("code_counts", path: path)) ?? [0, 0]
        collisions = Int(counts.first ?? 0)
        itemsWithoutText = Int(counts.count > 1 ? counts[1] : 0)
        self.configuration = configuration
        pretraining = nil
    }
}

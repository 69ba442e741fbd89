import AffinityLinalg
import AffinityNN
import Foundation

/// The shape of a BERT encoder (a model folder's `config.json`, Hugging Face's names).
public struct EncoderConfiguration: Codable, Sendable, Equatable {
    public var vocabularySize: Int
    public var hidden: Int
    public var layers: Int
    public var heads: Int
    public var intermediate: Int
    public var maxPositions: Int
    public var typeVocabularySize: Int
    public var layerNormEpsilon: Float
    /// The feed-forward non-linearity (BERT's `"gelu"` is the exact, erf form).
    public var activation: Activation
    /// Tokens per text, `[CLS]` and `[SEP]` included (sentence-transformers' `max_seq_length`).
    public var maxLength: Int

    public init(vocabularySize: Int, hidden: Int, layers: Int, heads: Int, intermediate: Int, maxPositions: Int = 512,
                typeVocabularySize: Int = 2, layerNormEpsilon: Float = 1e-12, activation: Activation = .geluExact, maxLength: Int = 256) {
        self.vocabularySize = vocabularySize
        self.hidden = hidden
        self.layers = layers
        self.heads = heads
        self.intermediate = intermediate
        self.maxPositions = maxPositions
        self.typeVocabularySize = typeVocabularySize
        self.layerNormEpsilon = layerNormEpsilon
        self.activation = activation
        self.maxLength = maxLength
    }

    /// Reads `config.json` (and `sentence_bert_config.json`'s `max_seq_length`, 256 when absent).
    public static func read(directory: String) throws -> EncoderConfiguration {
        let path = (directory as NSString).appendingPathComponent("config.json")
        guard let data = FileManager.default.contents(atPath: path) else {
            throw TextModelError.missingFile(directory: directory, name: "config.json")
        }
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw TextModelError.invalid(path: path, reason: "not a JSON object")
        }
        func int(_ key: String, default value: Int? = nil) throws -> Int {
            if let v = object[key] as? Int { return v }
            if let value { return value }
            throw TextModelError.invalid(path: path, reason: "\(key) is missing or not an integer")
        }
        let act = object["hidden_act"] as? String ?? "gelu"
        let activation: Activation
        switch act {
        case "gelu": activation = .geluExact
        case "gelu_new", "gelu_pytorch_tanh": activation = .gelu
        case "relu": activation = .relu
        default: throw TextModelError.invalid(path: path, reason: "hidden_act \(act) is not supported (gelu, gelu_new, relu)")
        }
        var maxLength = 256
        let sbert = (directory as NSString).appendingPathComponent("sentence_bert_config.json")
        if let d = FileManager.default.contents(atPath: sbert),
           let o = try? JSONSerialization.jsonObject(with: d) as? [String: Any], let m = o["max_seq_length"] as? Int {
            maxLength = m
        }
        let c = EncoderConfiguration(
            vocabularySize: try int("vocab_size"), hidden: try int("hidden_size"), layers: try int("num_hidden_layers"),
            heads: try int("num_attention_heads"), intermediate: try int("intermediate_size"),
            maxPositions: try int("max_position_embeddings", default: 512), typeVocabularySize: try int("type_vocab_size", default: 2),
            layerNormEpsilon: Float(object["layer_norm_eps"] as? Double ?? 1e-12), activation: activation,
            maxLength: min(maxLength, try int("max_position_embeddings", default: 512)))
        try c.validate(path: path)
        return c
    }

    func validate(path: String) throws {
        for (name, v) in [("vocab_size", vocabularySize), ("hidden_size", hidden), ("num_hidden_layers", layers),
                          ("num_attention_heads", heads), ("intermediate_size", intermediate), ("max_position_embeddings", maxPositions)]
        where v <= 0 {
            throw TextModelError.invalid(path: path, reason: "\(name) is \(v); it must be positive")
        }
        guard hidden % heads == 0 else {
            throw TextModelError.invalid(path: path, reason: "hidden_size \(hidden) is not a multiple of num_attention_heads \(heads)")
        }
        guard maxLength >= 2 else { throw TextModelError.invalid(path: path, reason: "max_seq_length \(maxLength) leaves no room for text") }
        guard maxLength <= maxPositions else {
            throw TextModelError.invalid(path: path, reason: "max_seq_length \(maxLength) exceeds max_position_embeddings \(maxPositions)")
        }
    }
}

/// Why a text model could not be used; each case names the file, tensor or setting.
public enum TextModelError: Error, CustomStringConvertible, Equatable {
    case notInstalled(String)
    case missingFile(directory: String, name: String)
    case invalid(path: String, reason: String)
    case missingTensor(path: String, name: String)
    case wrongShape(path: String, name: String, expected: [Int], found: [Int])

    public var description: String {
        switch self {
        case .notInstalled(let how): return how
        case .missingFile(let directory, let name): return "\(directory): \(name) is missing (is this a sentence-transformers model folder?)"
        case .invalid(let path, let reason): return "\(path): \(reason)"
        case .missingTensor(let path, let name): return "\(path): tensor \(name) is missing"
        case .wrongShape(let path, let name, let expected, let found):
            return "\(path): tensor \(name) has shape \(found), expected \(expected)"
        }
    }
}

/// A sentence encoder: a BERT-style Transformer (inference only) with mean pooling and L2
/// normalisation, as sentence-transformers' `all-MiniLM-L6-v2` (BertModel → Pooling(mean) →
/// Normalize). Reads a model folder (`config.json`, `model.safetensors`, `vocab.txt`).
///
/// Texts are batched *packed* (`SequenceLayout`): no padding and no attention mask, each text
/// attends to its own tokens only, which is what a padded batch with an attention mask computes.
/// A text's vector does not depend on the other texts of its batch, on the batch size or on the
/// number of threads (tested bit for bit). `embed` runs batches on several threads; nothing is
/// written into the encoder, so one encoder serves many threads at once.
public final class SentenceEncoder: @unchecked Sendable {
    public let configuration: EncoderConfiguration
    public let tokenizer: WordPieceTokenizer
    let wordEmbeddings: Matrix
    let positionEmbeddings: Matrix
    let tokenTypeEmbeddings: Matrix
    let embeddingNorm: LayerNorm
    let blocks: [TransformerBlock]

    /// Loads a model folder. Missing tensors and wrong shapes are named.
    public convenience init(directory: String) throws {
        let configuration = try EncoderConfiguration.read(directory: directory)
        let tokenizer: WordPieceTokenizer
        do {
            tokenizer = try WordPieceTokenizer(directory: directory)
        } catch let failure as WordPieceTokenizer.Failure {
            throw TextModelError.invalid(path: directory, reason: failure.description)
        }
        let path = (directory as NSString).appendingPathComponent("model.safetensors")
        guard FileManager.default.fileExists(atPath: path) else {
            throw TextModelError.missingFile(directory: directory, name: "model.safetensors")
        }
        let file = try SafeTensorsFile.read(path: path)
        try self.init(configuration: configuration, tokenizer: tokenizer, tensors: file.tensors, path: path)
    }

    /// An encoder from named tensors in Hugging Face's BertModel names (optionally under `bert.`).
    public init(configuration c: EncoderConfiguration, tokenizer: WordPieceTokenizer, tensors: [String: Tensor], path: String) throws {
        try c.validate(path: path)
        guard tokenizer.vocabularySize <= c.vocabularySize else {
            throw TextModelError.invalid(path: path, reason: "the vocabulary has \(tokenizer.vocabularySize) tokens, the model \(c.vocabularySize)")
        }
        let prefix = tensors["embeddings.word_embeddings.weight"] == nil && tensors["bert.embeddings.word_embeddings.weight"] != nil ? "bert." : ""
        func matrix(_ name: String, _ shape: [Int]) throws -> Matrix {
            guard let t = tensors[prefix + name] else { throw TextModelError.missingTensor(path: path, name: prefix + name) }
            let expected = shape.count == 2 && shape[0] == 1 ? [shape[1]] : shape
            guard t.shape == expected else {
                throw TextModelError.wrongShape(path: path, name: prefix + name, expected: expected, found: t.shape)
            }
            guard case .float32(let values) = t.storage else {
                throw TextModelError.invalid(path: path, reason: "tensor \(prefix + name) has dtype \(t.dtype); F32 is supported")
            }
            return Matrix(rows: shape[0], columns: shape.count > 1 ? shape[1] : 1, values: values)
        }
        func linear(_ layer: Linear, _ name: String, out: Int, in inputs: Int) throws {
            layer.weight.value = try matrix(name + ".weight", [out, inputs])
            layer.bias.value = try matrix(name + ".bias", [1, out])
        }
        func norm(_ layer: LayerNorm, _ name: String) throws {
            layer.gamma.value = try matrix(name + ".weight", [1, c.hidden])
            layer.beta.value = try matrix(name + ".bias", [1, c.hidden])
        }
        configuration = c
        self.tokenizer = tokenizer
        wordEmbeddings = try matrix("embeddings.word_embeddings.weight", [c.vocabularySize, c.hidden])
        positionEmbeddings = try matrix("embeddings.position_embeddings.weight", [c.maxPositions, c.hidden])
        tokenTypeEmbeddings = try matrix("embeddings.token_type_embeddings.weight", [c.typeVocabularySize, c.hidden])
        embeddingNorm = LayerNorm(c.hidden, epsilon: c.layerNormEpsilon)
        try norm(embeddingNorm, "embeddings.LayerNorm")
        var blocks: [TransformerBlock] = []
        for l in 0..<c.layers {
            let b = TransformerBlock(dimension: c.hidden, heads: c.heads, hidden: c.intermediate, dropout: 0, activation: c.activation,
                                     layout: .postLN, causal: false, epsilon: c.layerNormEpsilon, seed: 0, threads: 1)
            let p = "encoder.layer.\(l)."
            try linear(b.attention.query, p + "attention.self.query", out: c.hidden, in: c.hidden)
            try linear(b.attention.key, p + "attention.self.key", out: c.hidden, in: c.hidden)
            try linear(b.attention.value, p + "attention.self.value", out: c.hidden, in: c.hidden)
            try linear(b.attention.output, p + "attention.output.dense", out: c.hidden, in: c.hidden)
            try norm(b.norm1, p + "attention.output.LayerNorm")
            try linear(b.feedForward.layers[0] as! Linear, p + "intermediate.dense", out: c.intermediate, in: c.hidden)
            try linear(b.feedForward.layers[3] as! Linear, p + "output.dense", out: c.hidden, in: c.intermediate)
            try norm(b.norm2, p + "output.LayerNorm")
            blocks.append(b)
        }
        self.blocks = blocks
    }

    /// The vector dimension.
    public var dimension: Int { configuration.hidden }

    /// Token IDs of each text (`[CLS]` … `[SEP]`, truncated to `maxLength`).
    public func encode(_ text: String) -> WordPieceTokenizer.Encoding {
        tokenizer.encode(text, maxLength: configuration.maxLength)
    }

    /// Sentence vectors of already tokenised texts (one packed batch, on the calling thread):
    /// one L2-normalised row per text.
    public func embed(tokenized: [[Int32]]) -> Matrix {
        let c = configuration
        let layout = SequenceLayout(lengths: tokenized.map(\.count))
        var x = Matrix(rows: layout.rows, columns: c.hidden)
        x.values.withUnsafeMutableBufferPointer { xp in
            wordEmbeddings.values.withUnsafeBufferPointer { w in
                positionEmbeddings.values.withUnsafeBufferPointer { pe in
                    tokenTypeEmbeddings.values.withUnsafeBufferPointer { te in
                        var r = 0
                        for ids in tokenized {
                            for (position, id) in ids.enumerated() {
                                let word = Int(id) * c.hidden, pos = position * c.hidden, out = r * c.hidden
                                for k in 0..<c.hidden { xp[out + k] = w[word + k] + pe[pos + k] + te[k] }
                                r += 1
                            }
                        }
                    }
                }
            }
        }
        x = embeddingNorm.infer(x)
        for b in blocks { x = b.infer(x, layout: layout) }
        // Mean over each text's tokens, then L2 normalisation (eps 1e-12, as F.normalize).
        var means = Matrix(rows: tokenized.count, columns: c.hidden)
        for s in 0..<layout.count where layout.length(s) > 0 {
            let out = s * c.hidden
            for r in layout.offsets[s]..<layout.offsets[s + 1] {
                for k in 0..<c.hidden { means.values[out + k] += x.values[r * c.hidden + k] }
            }
            for k in 0..<c.hidden { means.values[out + k] /= Float(layout.length(s)) }
        }
        return L2Normalize().infer(means)
    }

    /// What `embed` returns: one L2-normalised row per text, in input order, and how many texts
    /// lost word pieces to the `maxLength` limit.
    public struct Embedded: Sendable {
        public var vectors: Matrix
        public var truncated: Int
    }

    /// Sentence vectors of `texts`, in order. Texts are tokenised and run in packed batches of at
    /// most `batchSize`, each batch split across `threads` threads (0 = all cores); `progress` is
    /// called with the number of texts done (from worker threads).
    public func embed(_ texts: [String], batchSize: Int = 64, threads: Int = 0, progress: (@Sendable (Int) -> Void)? = nil) -> Embedded {
        precondition(batchSize > 0, "batchSize must be positive")
        let workers = Parallelism.resolve(threads)
        let unit = max(1, (batchSize + workers - 1) / workers)
        let units = (texts.count + unit - 1) / unit
        var out = Matrix(rows: texts.count, columns: dimension)
        let done = Counter()
        let truncated = Counter()
        out.values.withUnsafeMutableBufferPointer { ob in
            let o = SharedMutableBuffer(ob)
            Parallelism.forEachChunk(units, threads: workers) { u in
                let range = (u * unit)..<min(texts.count, (u + 1) * unit)
                var ids: [[Int32]] = []
                ids.reserveCapacity(range.count)
                var cut = 0
                for i in range {
                    let e = encode(texts[i])
                    if e.truncated { cut += 1 }
                    ids.append(e.ids)
                }
                let v = embed(tokenized: ids)
                let d = dimension
                for (r, i) in range.enumerated() {
                    for k in 0..<d { o[i * d + k] = v.values[r * d + k] }
                }
                truncated.add(cut)
                let total = done.add(range.count)
                progress?(total)
            }
        }
        return Embedded(vectors: out, truncated: truncated.value)
    }
}

/// A thread-safe running total.
final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var total = 0
    @discardableResult func add(_ n: Int) -> Int { lock.locked { total += n; return total } }
    var value: Int { lock.locked { total } }
}

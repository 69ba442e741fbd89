import AffinityLinalg
import AffinityNN
import Foundation

extension SentenceEncoder {
    /// The plain twin of `embed(tokenized:)`: the same BERT forward pass one text at a time, in
    /// Double, with naive loops (no SGEMM, no packing, no vector kernels) and the textbook
    /// formulas, on the same weights. Tests hold the fast path to it.
    public func referenceEmbed(tokenized: [[Int32]]) -> [[Double]] {
        let c = configuration, d = c.hidden, heads = c.heads, dh = d / heads
        let eps = Double(c.layerNormEpsilon)
        func values(_ m: Matrix) -> [Double] { m.values.map(Double.init) }
        func linear(_ x: [[Double]], _ layer: Linear) -> [[Double]] {
            let w = values(layer.weight.value), b = values(layer.bias.value)
            let inputs = layer.weight.value.columns, outputs = layer.weight.value.rows
            return x.map { row in
                (0..<outputs).map { o in
                    var s = b[o]
                    for i in 0..<inputs { s += row[i] * w[o * inputs + i] }
                    return s
                }
            }
        }
        func layerNorm(_ x: [[Double]], _ n: LayerNorm) -> [[Double]] {
            let g = values(n.gamma.value), b = values(n.beta.value)
            return x.map { row in
                let mean = row.reduce(0, +) / Double(row.count)
                let variance = row.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(row.count)
                return row.indices.map { (row[$0] - mean) / (variance + eps).squareRoot() * g[$0] + b[$0] }
            }
        }
        func activation(_ v: Double) -> Double {
            switch c.activation {
            case .relu: return max(v, 0)
            case .gelu: return 0.5 * v * (1 + tanh((2 / Double.pi).squareRoot() * (v + 0.044715 * v * v * v)))
            case .geluExact: return 0.5 * v * (1 + erf(v / 2.0.squareRoot()))
            }
        }
        func add(_ a: [[Double]], _ b: [[Double]]) -> [[Double]] { zip(a, b).map { zip($0, $1).map(+) } }
        let words = values(wordEmbeddings), positions = values(positionEmbeddings), types = values(tokenTypeEmbeddings)
        return tokenized.map { ids in
            var x = ids.enumerated().map { (p, id) in (0..<d).map { words[Int(id) * d + $0] + positions[p * d + $0] + types[$0] } }
            x = layerNorm(x, embeddingNorm)
            for block in blocks {
                let a = block.attention
                let q = linear(x, a.query), k = linear(x, a.key), v = linear(x, a.value)
                var attended = [[Double]](repeating: [Double](repeating: 0, count: d), count: x.count)
                for h in 0..<heads {
                    for i in x.indices {
                        var logits = x.indices.map { j in
                            (0..<dh).reduce(0.0) { $0 + q[i][h * dh + $1] * k[j][h * dh + $1] } / Double(dh).squareRoot()
                        }
                        let top = logits.max()!
                        logits = logits.map { exp($0 - top) }
                        let total = logits.reduce(0, +)
                        for j in x.indices {
                            for e in 0..<dh { attended[i][h * dh + e] += logits[j] / total * v[j][h * dh + e] }
                        }
                    }
                }
                let h1 = layerNorm(add(x, linear(attended, a.output)), block.norm1)
                let up = linear(h1, block.feedForward.layers[0] as! Linear).map { $0.map(activation) }
                x = layerNorm(add(h1, linear(up, block.feedForward.layers[3] as! Linear)), block.norm2)
            }
            var mean = [Double](repeating: 0, count: d)
            for row in x { for k in 0..<d { mean[k] += row[k] / Double(x.count) } }
            let norm = max(mean.map { $0 * $0 }.reduce(0, +).squareRoot(), 1e-12)
            return mean.map { $0 / norm }
        }
    }

    /// A small encoder with random weights (for tests and examples without a model folder):
    /// every tensor a real model has, drawn from `seed`.
    public static func random(configuration c: EncoderConfiguration, tokenizer: WordPieceTokenizer, seed: UInt64) throws -> SentenceEncoder {
        var g = SeededGenerator(seed: seed)
        var tensors: [String: Tensor] = [:]
        func put(_ name: String, _ shape: [Int], scale: Double, offset: Double = 0) {
            let n = shape.reduce(1, *)
            tensors[name] = .float32((0..<n).map { _ in Float(offset + (g.nextDouble() * 2 - 1) * scale) }, shape: shape)
        }
        put("embeddings.word_embeddings.weight", [c.vocabularySize, c.hidden], scale: 1)
        put("embeddings.position_embeddings.weight", [c.maxPositions, c.hidden], scale: 0.5)
        put("embeddings.token_type_embeddings.weight", [c.typeVocabularySize, c.hidden], scale: 0.5)
        func norm(_ name: String) {
            put(name + ".weight", [c.hidden], scale: 0.2, offset: 1)
            put(name + ".bias", [c.hidden], scale: 0.1)
        }
        norm("embeddings.LayerNorm")
        for l in 0..<c.layers {
            let p = "encoder.layer.\(l)."
            for name in ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"] {
                put(p + name + ".weight", [c.hidden, c.hidden], scale: 1 / Double(c.hidden).squareRoot())
                put(p + name + ".bias", [c.hidden], scale: 0.1)
            }
            norm(p + "attention.output.LayerNorm")
            put(p + "intermediate.dense.weight", [c.intermediate, c.hidden], scale: 1 / Double(c.hidden).squareRoot())
            put(p + "intermediate.dense.bias", [c.intermediate], scale: 0.1)
            put(p + "output.dense.weight", [c.hidden, c.intermediate], scale: 1 / Double(c.intermediate).squareRoot())
            put(p + "output.dense.bias", [c.hidden], scale: 0.1)
            norm(p + "output.LayerNorm")
        }
        return try SentenceEncoder(configuration: c, tokenizer: tokenizer, tensors: tensors, path: "random(seed: \(seed))")
    }
}

import AffinityLinalg
import Foundation
import AffinityTestSupport
import Testing

@testable import AffinityNN

/// The Transformer pieces: finite-difference gradients of every new layer, the packed attention
/// against a plain left-padded reference with causal and key-padding masks, the batcher, and
/// inference from many threads.
@Suite struct SequenceTests {
    static let layout = SequenceLayout(lengths: [3, 1, 4, 2])

    /// L = Σ r ⊙ f(x) for a fixed random r: checks dL/dx (through `backward`) and every parameter.
    func check(parameters: [Parameter], input x: Matrix, what: String, forward: (Matrix) -> Matrix, backward: (Matrix) -> Matrix,
               sourceLocation: SourceLocation = #_sourceLocation) {
        let y = forward(x)
        let r = Matrix.random(rows: y.rows, columns: y.columns, seed: 77)
        func loss(_ input: Matrix) -> Float { zip(forward(input).values, r.values).reduce(0) { $0 + $1.0 * $1.1 } }
        for p in parameters { p.zeroGrad() }
        _ = forward(x)
        let dx = backward(r)
        let idx = sample(x.values.count, 30)
        expectClose(idx.map { dx.values[$0] }, numericGradient(x.values, at: idx) { loss(Matrix(rows: x.rows, columns: x.columns, values: $0)) },
                    "\(what) dx", sourceLocation: sourceLocation)
        for p in parameters {
            let analytic = p.grad.values, saved = p.value
            let pi = sample(p.value.values.count, 12)
            let numeric = numericGradient(saved.values, at: pi) { v in
                p.value = Matrix(rows: saved.rows, columns: saved.columns, values: v)
                return loss(x)
            }
            p.value = saved
            expectClose(pi.map { analytic[$0] }, numeric, "\(what) d\(p.name)", sourceLocation: sourceLocation)
        }
    }

    /// Causal (SASRec) and bidirectional (BERT) attention.
    @Test(arguments: [true, false])
    func attentionGradientsMatchFiniteDifferences(causal: Bool) {
        let attention = MultiHeadAttention(dimension: 4, heads: 2, causal: causal, seed: 3)
        let layout = Self.layout
        let kv = Matrix.random(rows: layout.rows, columns: 4, seed: 9, scale: 1)
        // Through the query input, then through the key-value input.
        check(parameters: attention.parameters, input: Matrix.random(rows: layout.rows, columns: 4, seed: 8, scale: 1), what: "attention(query)",
              forward: { attention.forward(query: $0, keyValue: kv, layout: layout, training: false) },
              backward: { attention.backward($0).query })
        let q = Matrix.random(rows: layout.rows, columns: 4, seed: 10, scale: 1)
        check(parameters: [], input: kv, what: "attention(key-value)",
              forward: { attention.forward(query: q, keyValue: $0, layout: layout, training: false) },
              backward: { attention.backward($0).keyValue })
    }

    /// Every layout with GELU (smooth, so central differences hold everywhere); ReLU with SASRec's
    /// layout, where this input crosses no kink within the step (ReLU alone has its own check).
    @Test(arguments: BlockLayout.allCases)
    func blockGradientsMatchFiniteDifferences(layout kind: BlockLayout) {
        for activation in kind == .sasrec ? Activation.allCases : [.gelu, .geluExact] {
            // ReLU has a kink that the bidirectional block's inputs cross within the step: causal only.
            for causal in activation == .relu ? [true] : [true, false] {
                let block = TransformerBlock(dimension: 4, heads: 2, hidden: 6, dropout: 0, activation: activation, layout: kind, causal: causal, seed: 4)
                let layout = Self.layout
                check(parameters: block.parameters, input: Matrix.random(rows: layout.rows, columns: 4, seed: 12, scale: 1), what: "\(kind) \(activation) causal \(causal)",
                      forward: { block.forward($0, layout: layout, training: false) }, backward: { block.backward($0) })
            }
        }
    }

    /// Dropout in attention: the gradient is that of the network with the same masks (the layer
    /// draws them per call, so the check fixes them by replaying the seed).
    @Test func attentionDropoutBackwardUsesTheForwardMasks() {
        let layout = Self.layout
        let x = Matrix.random(rows: layout.rows, columns: 4, seed: 2, scale: 1)
        let r = Matrix.random(rows: layout.rows, columns: 4, seed: 3)
        func make() -> MultiHeadAttention { MultiHeadAttention(dimension: 4, heads: 1, dropout: 0.3, seed: 6) }
        let a = make()
        _ = a.forward(query: x, keyValue: x, layout: layout, training: true)
        let dx = a.backward(r)
        let idx = sample(x.values.count, 16)
        let numeric = numericGradient(x.values, at: idx) { v in
            let fresh = make()   // the same seed draws the same first masks
            let m = Matrix(rows: x.rows, columns: x.columns, values: v)
            return zip(fresh.forward(query: m, keyValue: m, layout: layout, training: true).values, r.values).reduce(0) { $0 + $1.0 * $1.1 }
        }
        expectClose(idx.map { dx.query.values[$0] + dx.keyValue.values[$0] }, numeric, "dropout attention dx")
    }

    /// The plain reference: each sequence left-padded to `width`, every (query, key) pair scored
    /// with scalar loops, pad keys and later keys masked, softmax, weighted values; then the rows
    /// of the real tokens. The packed layer must agree.
    @Test func packedAttentionEqualsTheLeftPaddedReference() {
        let attention = MultiHeadAttention(dimension: 6, heads: 3, seed: 5)
        let lengths = [5, 1, 3, 0, 4], width = 6, c = 6, heads = 3, dh = 2
        let layout = SequenceLayout(lengths: lengths)
        let x = Matrix.random(rows: layout.rows, columns: c, seed: 1, scale: 1)
        let fast = attention.infer(query: x, keyValue: x, layout: layout)
        let q = attention.query.infer(x), k = attention.key.infer(x), v = attention.value.infer(x)
        var reference = Matrix(rows: layout.rows, columns: c)
        for (s, l) in lengths.enumerated() {
            let pad = width - l
            // Padded position p holds token row offsets[s] + p - pad, or nothing (pad).
            func row(_ p: Int) -> Int? { p >= pad ? layout.offsets[s] + p - pad : nil }
            for p in 0..<width {
                guard let qi = row(p) else { continue }
                var o = [Float](repeating: 0, count: c)
                for h in 0..<heads {
                    var scores: [Double] = []
                    var keys: [Int] = []
                    for j in 0..<width {
                        guard let kj = row(j), j <= p else { continue }   // key padding, causal
                        var dot = 0.0
                        for t in 0..<dh { dot += Double(q[qi, h * dh + t]) * Double(k[kj, h * dh + t]) }
                        scores.append(dot / Double(dh).squareRoot())
                        keys.append(kj)
                    }
                    let top = scores.max()!, e = scores.map { exp($0 - top) }, z = e.reduce(0, +)
                    for (w, kj) in zip(e, keys) { for t in 0..<dh { o[h * dh + t] += Float(w / z) * v[kj, h * dh + t] } }
                }
                for t in 0..<c { reference[qi, t] = o[t] }
            }
        }
        let expected = attention.output.infer(reference)
        for i in expected.values.indices { #expect(abs(fast.values[i] - expected.values[i]) < 1e-5, "\(i)") }
        // The batcher's two forms describe the same tokens.
        let sequences = [[1, 2, 3, 4, 5, 6, 7], [8], [], [9, 10]]
        let (tokens, positions, packed) = SequenceBatcher.packed(sequences, maxLength: 4)
        #expect(tokens == [4, 5, 6, 7, 8, 9, 10] && positions == [0, 1, 2, 3, 3, 2, 3] && packed.offsets == [0, 4, 5, 5, 7])
        #expect(SequenceBatcher.leftPadded(sequences, maxLength: 4) == [[4, 5, 6, 7], [-1, -1, -1, 8], [-1, -1, -1, -1], [-1, -1, 9, 10]])
    }

    /// Inference keeps nothing in the layers: 8 threads at once give the sequential answers.
    @Test func concurrentInferenceEqualsSequential() {
        let block = TransformerBlock(dimension: 8, heads: 2, dropout: 0.2, layout: .sasrec, seed: 9, threads: 1)
        let inputs = (0..<16).map { i -> (Matrix, SequenceLayout) in
            let layout = SequenceLayout(lengths: [1 + i % 5, 3, 2 + i % 3])
            return (Matrix.random(rows: layout.rows, columns: 8, seed: UInt64(i), scale: 1), layout)
        }
        let sequential = inputs.map { block.infer($0.0, layout: $0.1).values }
        let results = onThreads(8) { t in inputs.indices.map { n in block.infer(inputs[(n + t) % inputs.count].0, layout: inputs[(n + t) % inputs.count].1).values } }
        for (t, lists) in results.enumerated() {
            for n in inputs.indices { #expect(lists[n] == sequential[(n + t) % inputs.count], "thread \(t) input \(n)") }
        }
    }
}

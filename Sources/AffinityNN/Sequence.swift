import AffinityLinalg
import Foundation

// Transformer pieces over batches of variable-length sequences (SASRec, and the sequence models
// after it). A batch of shape (batch, time, channels) is held *packed*: the rows of one (rows x
// channels) `Matrix` are the tokens of sequence 0, then those of sequence 1, and so on, with a
// `SequenceLayout` saying where each sequence starts. Every row-wise layer (Linear, LayerNorm,
// ReLU, GELU, Dropout) works on it unchanged, and no work is spent on padding. Attention reads
// the layout: a token attends to the earlier tokens of its own sequence (causal), never to another
// sequence's, which is exactly a left-padded batch with a causal mask and key padding, minus the
// padded rows (`SequenceBatcher.leftPadded` gives that form; the reference attention in the tests
// computes on it and agrees).

/// Where each sequence of a packed batch lies: sequence `s` is rows `offsets[s]..<offsets[s + 1]`.
public struct SequenceLayout: Sendable, Equatable {
    public let offsets: [Int]

    public init(lengths: [Int]) {
        precondition(lengths.allSatisfy { $0 >= 0 }, "sequence lengths must not be negative")
        var o = [0]
        o.reserveCapacity(lengths.count + 1)
        for l in lengths { o.append(o.last! + l) }
        offsets = o
    }

    public var count: Int { offsets.count - 1 }
    public var rows: Int { offsets.last! }
    @inline(__always) public func length(_ s: Int) -> Int { offsets[s + 1] - offsets[s] }
    /// Σ length², the size of the attention matrices of one head.
    public var squaredLengths: Int { (0..<count).reduce(0) { $0 + length($1) * length($1) } }
}

/// Turns item sequences into model input: each sequence truncated to its `maxLength` most recent
/// items, with the positions a left-padded batch of width `maxLength` gives them (the last item is
/// always at position `maxLength − 1`, as in SASRec).
public enum SequenceBatcher {
    /// The packed form: tokens and positions of every kept item, and the layout.
    public static func packed(_ sequences: [[Int]], maxLength: Int) -> (tokens: [Int], positions: [Int], layout: SequenceLayout) {
        precondition(maxLength > 0, "maxLength must be positive")
        var tokens: [Int] = [], positions: [Int] = [], lengths: [Int] = []
        for s in sequences {
            let kept = s.suffix(maxLength)
            lengths.append(kept.count)
            tokens += kept
            positions += (maxLength - kept.count)..<maxLength
        }
        return (tokens, positions, SequenceLayout(lengths: lengths))
    }

    /// The left-padded form: `batch x maxLength` ids, `pad` before each (truncated) sequence.
    public static func leftPadded(_ sequences: [[Int]], maxLength: Int, pad: Int = -1) -> [[Int]] {
        sequences.map { s in
            let kept = Array(s.suffix(maxLength))
            return [Int](repeating: pad, count: maxLength - kept.count) + kept
        }
    }
}

/// A layer over packed sequences: like `Layer`, with the batch's layout beside the rows.
public protocol SequenceLayer: AnyObject {
    var parameters: [Parameter] { get }
    func forward(_ x: Matrix, layout: SequenceLayout, training: Bool) -> Matrix
    func backward(_ dy: Matrix) -> Matrix
    /// The inference pass: nothing is kept in the instance (safe from many threads at once).
    func infer(_ x: Matrix, layout: SequenceLayout) -> Matrix
}

/// Multi-head scaled dot-product attention (PyTorch's nn.MultiheadAttention with in- and
/// out-projections): queries from one input, keys and values from another (the same for ordinary
/// self-attention; SASRec takes queries from the normalised input and keys and values from the
/// input itself), dropout on the attention weights in training. `causal` (SASRec): a token sees
/// the earlier tokens of its sequence; otherwise (BERT) every token of its sequence.
public final class MultiHeadAttention {
    public let heads: Int
    public let dimension: Int
    public let dropout: Float
    public let causal: Bool
    public let query: Linear, key: Linear, value: Linear, output: Linear
    public let threads: Int
    private var generator: SeededGenerator
    // Forward state for backward.
    private var layout = SequenceLayout(lengths: [])
    private var q = Matrix(rows: 0, columns: 0), k = Matrix(rows: 0, columns: 0), v = Matrix(rows: 0, columns: 0)
    private var weights: [Float] = []     // softmax P per (sequence, head), ℓ x ℓ each
    private var kept: [Float] = []        // dropout multipliers of P (empty: no dropout)

    public init(dimension: Int, heads: Int, dropout: Float = 0, causal: Bool = true, seed: UInt64, name: String = "attention", threads: Int = 1) {
        precondition(dimension > 0 && heads > 0 && dimension % heads == 0, "dimension \(dimension) must be a positive multiple of heads \(heads)")
        precondition(dropout >= 0 && dropout < 1, "dropout must be in [0, 1)")
        self.heads = heads
        self.dimension = dimension
        self.dropout = dropout
        self.causal = causal
        self.threads = threads
        query = Linear(dimension, dimension, seed: seed &+ 1, name: name + ".query", threads: threads)
        key = Linear(dimension, dimension, seed: seed &+ 2, name: name + ".key", threads: threads)
        value = Linear(dimension, dimension, seed: seed &+ 3, name: name + ".value", threads: threads)
        output = Linear(dimension, dimension, seed: seed &+ 4, name: name + ".output", threads: threads)
        generator = SeededGenerator(seed: seed, stream: 99)
    }

    public var parameters: [Parameter] { [query, key, value, output].flatMap(\.parameters) }

    public func forward(query x: Matrix, keyValue y: Matrix, layout: SequenceLayout, training: Bool) -> Matrix {
        self.layout = layout
        q = query.forward(x, training: training)
        k = key.forward(y, training: training)
        v = value.forward(y, training: training)
        let p = training ? dropout : 0
        let seed = p > 0 ? generator.next() : 0
        let (o, w, m) = Self.attend(q: q, k: k, v: v, layout: layout, heads: heads, causal: causal, dropout: p, seed: seed, keep: true, threads: threads)
        weights = w
        kept = m
        return output.forward(o, training: training)
    }

    public func infer(query x: Matrix, keyValue y: Matrix, layout: SequenceLayout) -> Matrix {
        let o = Self.attend(q: query.infer(x), k: key.infer(y), v: value.infer(y), layout: layout, heads: heads,
                            causal: causal, dropout: 0, seed: 0, keep: false, threads: threads).output
        return output.infer(o)
    }

    /// dL/d(query input) and dL/d(key-value input).
    public func backward(_ dy: Matrix) -> (query: Matrix, keyValue: Matrix) {
        let dO = output.backward(dy)
        let c = dimension, dh = c / heads, scale = 1 / Float(dh).squareRoot()
        var dq = Matrix(rows: q.rows, columns: c), dk = Matrix(rows: k.rows, columns: c), dv = Matrix(rows: v.rows, columns: c)
        let layout = self.layout, heads = self.heads, hasDropout = !kept.isEmpty, causal = self.causal
        let starts = Self.weightOffsets(layout, heads: heads)
        q.values.withUnsafeBufferPointer { qp in k.values.withUnsafeBufferPointer { kp in v.values.withUnsafeBufferPointer { vp in
        dO.values.withUnsafeBufferPointer { op in weights.withUnsafeBufferPointer { wp in kept.withUnsafeBufferPointer { mp in
        dq.values.withUnsafeMutableBufferPointer { dqb in dk.values.withUnsafeMutableBufferPointer { dkb in dv.values.withUnsafeMutableBufferPointer { dvb in
            let Q = UncheckedPointer(qp.baseAddress!), K = UncheckedPointer(kp.baseAddress!), V = UncheckedPointer(vp.baseAddress!)
            let dO = UncheckedPointer(op.baseAddress!), W = UncheckedPointer(wp.baseAddress!)
            let M = mp.isEmpty ? nil : UncheckedPointer(mp.baseAddress!)
            let dQ = UncheckedMutablePointer(dqb.baseAddress!), dK = UncheckedMutablePointer(dkb.baseAddress!), dV = UncheckedMutablePointer(dvb.baseAddress!)
            Parallelism.forEachRange(layout.count, grain: 1, threads: threads) { range in
                var dP = [Float](), dropped = [Float]()
                for s in range {
                    let l = layout.length(s), o = layout.offsets[s]
                    guard l > 0 else { continue }
                    if dP.count < l * l { dP = [Float](repeating: 0, count: l * l); dropped = dP }
                    dP.withUnsafeMutableBufferPointer { dpb in dropped.withUnsafeMutableBufferPointer { pd in
                        let g = dpb.baseAddress!, pdp = pd.baseAddress!
                        for h in 0..<heads {
                            let w = W.base + starts[s] + h * l * l, col = o * c + h * dh
                            let weightsUsed: UnsafePointer<Float>
                            if hasDropout {
                                for i in 0..<(l * l) { pdp[i] = w[i] * M!.base[starts[s] + h * l * l + i] }
                                weightsUsed = UnsafePointer(pdp)
                            } else {
                                weightsUsed = w
                            }
                            // dV = Pᵀ·dO, dP = dO·Vᵀ.
                            sgemm(transposeA: true, m: l, n: dh, k: l, a: weightsUsed, lda: l, b: dO.base + col, ldb: c,
                                  c: dV.base + col, ldc: c, threads: 1)
                            sgemm(transposeB: true, m: l, n: l, k: dh, a: dO.base + col, lda: c, b: V.base + col, ldb: c,
                                  c: g, ldc: l, threads: 1)
                            // Through dropout, then softmax: dS = P ⊙ (dP − Σ_j P·dP) · scale (visible entries only).
                            for i in 0..<l {
                                let row = i * l, last = causal ? i : l - 1
                                var sum: Float = 0
                                for j in 0...last {
                                    if hasDropout { g[row + j] *= M!.base[starts[s] + h * l * l + row + j] }
                                    sum += w[row + j] * g[row + j]
                                }
                                for j in 0...last { g[row + j] = w[row + j] * (g[row + j] - sum) * scale }
                                for j in (last + 1)..<l { g[row + j] = 0 }
                            }
                            // dQ = dS·K, dK = dSᵀ·Q.
                            sgemm(m: l, n: dh, k: l, a: g, lda: l, b: K.base + col, ldb: c, c: dQ.base + col, ldc: c, threads: 1)
                            sgemm(transposeA: true, m: l, n: dh, k: l, a: g, lda: l, b: Q.base + col, ldb: c, c: dK.base + col, ldc: c, threads: 1)
                        }
                    } }
                }
            }
        } } } } } } } } }
        let dx = query.backward(dq)
        var dyKV = key.backward(dk)
        let fromValue = value.backward(dv)
        for i in dyKV.values.indices { dyKV.values[i] += fromValue.values[i] }
        return (dx, dyKV)
    }

    static func weightOffsets(_ layout: SequenceLayout, heads: Int) -> [Int] {
        var out = [Int](repeating: 0, count: layout.count + 1)
        for s in 0..<layout.count { out[s + 1] = out[s] + heads * layout.length(s) * layout.length(s) }
        return out
    }

    /// softmax(Q_h·K_hᵀ/√d_h [+ causal mask])·V_h per sequence and head, heads side by side in the
    /// columns. With `keep`, also the attention weights and dropout multipliers (for backward).
    /// Dropout draws from stream `s` of `seed` for sequence `s`, so it does not depend on threads.
    static func attend(q: Matrix, k: Matrix, v: Matrix, layout: SequenceLayout, heads: Int, causal: Bool = true, dropout: Float, seed: UInt64,
                       keep: Bool, threads: Int) -> (output: Matrix, weights: [Float], kept: [Float]) {
        let c = q.columns, dh = c / heads, scale = 1 / Float(dh).squareRoot()
        precondition(q.rows == layout.rows && k.rows == layout.rows && v.rows == layout.rows, "attention inputs do not match the layout")
        var out = Matrix(rows: q.rows, columns: c)
        let starts = weightOffsets(layout, heads: heads)
        var weights = [Float](repeating: 0, count: keep ? starts.last! : 0)
        var kept = [Float](repeating: 0, count: keep && dropout > 0 ? starts.last! : 0)
        q.values.withUnsafeBufferPointer { qp in k.values.withUnsafeBufferPointer { kp in v.values.withUnsafeBufferPointer { vp in
        out.values.withUnsafeMutableBufferPointer { ob in weights.withUnsafeMutableBufferPointer { wb in kept.withUnsafeMutableBufferPointer { mb in
            let Q = UncheckedPointer(qp.baseAddress!), K = UncheckedPointer(kp.baseAddress!), V = UncheckedPointer(vp.baseAddress!)
            let O = UncheckedMutablePointer(ob.baseAddress!)
            // (An empty array may still have a base address: test the counts, not the pointers.)
            let W = wb.isEmpty ? nil : UncheckedMutablePointer(wb.baseAddress!), M = mb.isEmpty ? nil : UncheckedMutablePointer(mb.baseAddress!)
            Parallelism.forEachRange(layout.count, grain: 1, threads: threads) { range in
                var scratch = [Float]()
                for s in range {
                    let l = layout.length(s), o = layout.offsets[s]
                    guard l > 0 else { continue }
                    var g = SeededGenerator(seed: seed, stream: UInt64(s))
                    if scratch.count < l * l { scratch = [Float](repeating: 0, count: l * l) }
                    scratch.withUnsafeMutableBufferPointer { sb in
                        for h in 0..<heads {
                            let p = W.map { $0.base + starts[s] + h * l * l } ?? sb.baseAddress!
                            let col = o * c + h * dh
                            sgemm(transposeB: true, m: l, n: l, k: dh, alpha: scale, a: Q.base + col, lda: c, b: K.base + col, ldb: c,
                                  c: p, ldc: l, threads: 1)
                            for i in 0..<l {
                                let row = p + i * l, visible = causal ? i + 1 : l
                                let top = Kernels.maximum(row, count: visible)
                                let inv = 1 / Kernels.expShifted(row, count: visible, shift: top)
                                Kernels.scale(row, count: visible, by: inv)
                                for j in visible..<l { row[j] = 0 }
                            }
                            var used = UnsafePointer(p)
                            if dropout > 0 {
                                // P ⊙ mask into the scratch (P itself is kept for backward).
                                let keepScale = 1 / (1 - dropout)
                                let dst = W == nil ? p : sb.baseAddress!
                                for i in 0..<(l * l) {
                                    let m: Float = g.nextDouble() < Double(dropout) ? 0 : keepScale
                                    if let M { M.base[starts[s] + h * l * l + i] = m }
                                    dst[i] = p[i] * m
                                }
                                used = UnsafePointer(dst)
                            }
                            sgemm(m: l, n: dh, k: l, a: used, lda: l, b: V.base + col, ldb: c, c: O.base + col, ldc: c, threads: 1)
                        }
                    }
                }
            }
        } } } } } }
        return (out, weights, kept)
    }
}

/// Where a Transformer block puts its layer normalisation.
public enum BlockLayout: String, Codable, Sendable, CaseIterable {
    /// SASRec's (Kang & McAuley 2018, as pmixer/SASRec.pytorch): q = LN₁(x), h = q + Attn(q, x),
    /// z = LN₂(h), y = z + FFN(z).
    case sasrec
    /// Pre-LN (GPT-2): h = x + Attn(LN₁(x)), y = h + FFN(LN₂(h)).
    case preLN = "pre"
    /// Post-LN (the original Transformer): h = LN₁(x + Attn(x)), y = LN₂(h + FFN(h)).
    case postLN = "post"
}

/// The feed-forward network's non-linearity.
public enum Activation: String, Codable, Sendable, CaseIterable {
    /// max(0, x).
    case relu
    /// GELU, tanh approximation.
    case gelu
    /// GELU with erf (BERT's `"gelu"`).
    case geluExact = "gelu-exact"

    /// The layer that computes it.
    public func layer() -> any Layer {
        switch self {
        case .relu: return ReLU()
        case .gelu: return GELU(approximation: .tanh)
        case .geluExact: return GELU(approximation: .none)
        }
    }
}

/// One Transformer block: multi-head self-attention (causal unless told) and a position-wise feed-forward
/// network (Linear, activation, dropout, Linear, dropout), with residual connections and layer
/// normalisation placed as `BlockLayout` says.
public final class TransformerBlock: SequenceLayer {
    public let layoutKind: BlockLayout
    public let attention: MultiHeadAttention
    public let norm1: LayerNorm, norm2: LayerNorm
    public let feedForward: Sequential
    private var qNormed = Matrix(rows: 0, columns: 0)

    public init(dimension: Int, heads: Int, hidden: Int? = nil, dropout: Float, activation: Activation = .relu,
                layout: BlockLayout = .sasrec, causal: Bool = true, epsilon: Float = 1e-5, seed: UInt64, name: String = "block", threads: Int = 1) {
        layoutKind = layout
        attention = MultiHeadAttention(dimension: dimension, heads: heads, dropout: dropout, causal: causal, seed: seed, name: name + ".attention", threads: threads)
        norm1 = LayerNorm(dimension, epsilon: epsilon, name: name + ".norm1")
        norm2 = LayerNorm(dimension, epsilon: epsilon, name: name + ".norm2")
        let h = hidden ?? dimension
        feedForward = Sequential([
            Linear(dimension, h, seed: seed &+ 11, name: name + ".ff1", threads: threads),
            activation.layer(),
            Dropout(dropout, seed: seed &+ 12),
            Linear(h, dimension, seed: seed &+ 13, name: name + ".ff2", threads: threads),
            Dropout(dropout, seed: seed &+ 14),
        ])
    }

    public var parameters: [Parameter] { attention.parameters + norm1.parameters + norm2.parameters + feedForward.parameters }

    public func forward(_ x: Matrix, layout: SequenceLayout, training: Bool) -> Matrix {
        switch layoutKind {
        case .sasrec:
            let q = norm1.forward(x, training: training)
            let h = q + attention.forward(query: q, keyValue: x, layout: layout, training: training)
            let z = norm2.forward(h, training: training)
            return z + feedForward.forward(z, training: training)
        case .preLN:
            let n = norm1.forward(x, training: training)
            let h = x + attention.forward(query: n, keyValue: n, layout: layout, training: training)
            return h + feedForward.forward(norm2.forward(h, training: training), training: training)
        case .postLN:
            let h = norm1.forward(x + attention.forward(query: x, keyValue: x, layout: layout, training: training), training: training)
            return norm2.forward(h + feedForward.forward(h, training: training), training: training)
        }
    }

    public func infer(_ x: Matrix, layout: SequenceLayout) -> Matrix {
        switch layoutKind {
        case .sasrec:
            let q = norm1.infer(x)
            let z = norm2.infer(q + attention.infer(query: q, keyValue: x, layout: layout))
            return z + feedForward.infer(z)
        case .preLN:
            let n = norm1.infer(x)
            let h = x + attention.infer(query: n, keyValue: n, layout: layout)
            return h + feedForward.infer(norm2.infer(h))
        case .postLN:
            let h = norm1.infer(x + attention.infer(query: x, keyValue: x, layout: layout))
            return norm2.infer(h + feedForward.infer(h))
        }
    }

    public func backward(_ dy: Matrix) -> Matrix {
        switch layoutKind {
        case .sasrec:
            let dz = dy + feedForward.backward(dy)
            let dh = norm2.backward(dz)
            let (dq, dkv) = attention.backward(dh)
            return norm1.backward(dh + dq) + dkv
        case .preLN:
            let dh = dy + norm2.backward(feedForward.backward(dy))
            let (dq, dkv) = attention.backward(dh)
            return dh + norm1.backward(dq + dkv)
        case .postLN:
            let dz2 = norm2.backward(dy)
            let dh = dz2 + feedForward.backward(dz2)
            let dz1 = norm1.backward(dh)
            let (dq, dkv) = attention.backward(dz1)
            return dz1 + dq + dkv
        }
    }
}

import AffinityLinalg
import Foundation

/// A learned array and the gradient accumulated into it by `backward` calls.
///
/// Embedding tables keep their gradient row-sparse: `touchedRows` lists the rows with a gradient
/// this step, and optimisers update only those rows (lazy updates), so a step costs what the batch
/// touches, not the size of the table.
public final class Parameter: @unchecked Sendable {
    public let name: String
    public var value: Matrix
    public var grad: Matrix
    /// Row-sparse parameters: only rows in `touchedRows` carry gradient.
    public let rowSparse: Bool
    public private(set) var touchedRows: [Int] = []
    private var touchedMark: [Bool]
    /// This parameter's decoupled weight decay, in place of the optimiser's (nil: the optimiser's).
    public var weightDecay: Float?

    public init(_ name: String, value: Matrix, rowSparse: Bool = false) {
        self.name = name
        self.value = value
        self.grad = Matrix(rows: value.rows, columns: value.columns)
        self.rowSparse = rowSparse
        touchedMark = rowSparse ? [Bool](repeating: false, count: value.rows) : []
    }

    /// Marks `row` as carrying gradient this step (row-sparse parameters).
    @inline(__always) public func touch(_ row: Int) {
        if !touchedMark[row] {
            touchedMark[row] = true
            touchedRows.append(row)
        }
    }

    /// Clears the gradient (only the touched rows, for row-sparse parameters).
    public func zeroGrad() {
        if rowSparse {
            let c = value.columns
            grad.values.withUnsafeMutableBufferPointer { g in
                for r in touchedRows {
                    for k in 0..<c { g[r * c + k] = 0 }
                    touchedMark[r] = false
                }
            }
            touchedRows.removeAll(keepingCapacity: true)
        } else {
            grad.values.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
        }
    }
}

/// A layer of explicit forward and backward passes (the llm.c style): `forward` keeps what
/// `backward` needs; `backward` takes dL/d(output), adds dL/d(parameters) into the parameters'
/// gradients and returns dL/d(input). One forward, then at most one backward.
///
/// `infer` is the inference pass: the output of `forward(x, training: false)`, computed without
/// writing anything into the instance, so one trained layer answers many threads at once (the
/// server folds in histories concurrently). Training is single-threaded per layer instance.
public protocol Layer: AnyObject {
    var parameters: [Parameter] { get }
    func forward(_ x: Matrix, training: Bool) -> Matrix
    func backward(_ dy: Matrix) -> Matrix
    func infer(_ x: Matrix) -> Matrix
}

/// y = x·Wᵀ + b, W is out x in (PyTorch's layout), initialised U(−1/√in, 1/√in) as PyTorch does.
public final class Linear: Layer {
    public let weight: Parameter
    public let bias: Parameter
    public let threads: Int
    private var input = Matrix(rows: 0, columns: 0)

    public init(_ inFeatures: Int, _ outFeatures: Int, seed: UInt64, name: String = "linear", threads: Int = 0) {
        var g = SeededGenerator(seed: seed)
        let bound = 1 / Float(inFeatures).squareRoot()
        let w = (0..<(inFeatures * outFeatures)).map { _ in Float(g.nextDouble() * 2 - 1) * bound }
        let b = (0..<outFeatures).map { _ in Float(g.nextDouble() * 2 - 1) * bound }
        weight = Parameter(name + ".weight", value: Matrix(rows: outFeatures, columns: inFeatures, values: w))
        bias = Parameter(name + ".bias", value: Matrix(rows: 1, columns: outFeatures, values: b))
        self.threads = threads
    }

    public var parameters: [Parameter] { [weight, bias] }

    public func forward(_ x: Matrix, training: Bool) -> Matrix {
        input = x
        return infer(x)
    }

    public func infer(_ x: Matrix) -> Matrix {
        precondition(x.columns == weight.value.columns, "Linear expects \(weight.value.columns) inputs, got \(x.columns)")
        let n = x.rows, o = weight.value.rows, i = weight.value.columns
        // Every row starts as the bias (written once, no zero fill first), then += x·Wᵀ.
        let rows = bias.value.values.withUnsafeBufferPointer { b in
            [Float](unsafeUninitializedCapacity: n * o) { buffer, count in
                for r in 0..<n { (buffer.baseAddress! + r * o).initialize(from: b.baseAddress!, count: o) }
                count = n * o
            }
        }
        var y = Matrix(rows: n, columns: o, values: rows)
        y.values.withUnsafeMutableBufferPointer { yp in
            x.values.withUnsafeBufferPointer { xp in
                weight.value.values.withUnsafeBufferPointer { wp in
                    sgemm(transposeB: true, m: n, n: o, k: i, a: xp.baseAddress!, lda: i, b: wp.baseAddress!, ldb: i,
                          beta: 1, c: yp.baseAddress!, ldc: o, threads: threads)
                }
            }
        }
        return y
    }

    public func backward(_ dy: Matrix) -> Matrix {
        let n = dy.rows, o = weight.value.rows, i = weight.value.columns
        // dW += dYᵀ·X, db += Σ rows of dY, dX = dY·W.
        dy.values.withUnsafeBufferPointer { dp in
            input.values.withUnsafeBufferPointer { xp in
                weight.grad.values.withUnsafeMutableBufferPointer { gw in
                    sgemm(transposeA: true, m: o, n: i, k: n, a: dp.baseAddress!, lda: o, b: xp.baseAddress!, ldb: i,
                          beta: 1, c: gw.baseAddress!, ldc: i, threads: threads)
                }
            }
            bias.grad.values.withUnsafeMutableBufferPointer { gb in
                for r in 0..<n { for c in 0..<o { gb[c] += dp[r * o + c] } }
            }
        }
        var dx = Matrix(rows: n, columns: i)
        dy.values.withUnsafeBufferPointer { dp in
            weight.value.values.withUnsafeBufferPointer { wp in
                dx.values.withUnsafeMutableBufferPointer { xp in
                    sgemm(m: n, n: i, k: o, a: dp.baseAddress!, lda: o, b: wp.baseAddress!, ldb: i, c: xp.baseAddress!, ldc: i, threads: threads)
                }
            }
        }
        return dx
    }
}

/// max(0, x).
public final class ReLU: Layer {
    private var output = Matrix(rows: 0, columns: 0)
    public init() {}
    public var parameters: [Parameter] { [] }
    public func forward(_ x: Matrix, training: Bool) -> Matrix {
        output = infer(x)
        return output
    }
    public func infer(_ x: Matrix) -> Matrix {
        var y = x
        y.values.withUnsafeMutableBufferPointer { v in
            for i in v.indices { v[i] = max(v[i], 0) }
        }
        return y
    }
    public func backward(_ dy: Matrix) -> Matrix {
        var dx = dy
        precondition(dx.values.count == output.values.count, "ReLU backward: \(dx.rows) x \(dx.columns) gradient for a \(output.rows) x \(output.columns) output")
        guard !dx.values.isEmpty else { return dx }
        dx.values.withUnsafeMutableBufferPointer { d in
            output.values.withUnsafeBufferPointer { o in Kernels.reluBackward(d.baseAddress!, output: o.baseAddress!, count: d.count) }
        }
        return dx
    }
}

/// GELU: x·Φ(x), with the tanh approximation (GPT-2, llm.c; the default) or exact erf (BERT).
public final class GELU: Layer {
    /// How Φ is computed (PyTorch's `approximate` argument).
    public enum Approximation: String, Codable, Sendable {
        /// 0.5x(1 + tanh(√(2/π)(x + 0.044715x³))): GPT-2's, and ours before BERT.
        case tanh
        /// x·Φ(x) with erf: BERT's and PyTorch's default (`Kernels.geluErf`).
        case none
    }
    public let approximation: Approximation
    private var input = Matrix(rows: 0, columns: 0)
    public init(approximation: Approximation = .tanh) { self.approximation = approximation }
    public var parameters: [Parameter] { [] }
    private static let c = Float((2 / Double.pi).squareRoot())
    public func forward(_ x: Matrix, training: Bool) -> Matrix {
        input = x
        return infer(x)
    }
    public func infer(_ x: Matrix) -> Matrix {
        var y = x
        switch approximation {
        case .none:
            y.values.withUnsafeMutableBufferPointer { Kernels.geluErf($0.baseAddress!, count: $0.count) }
        case .tanh:
            for i in y.values.indices {
                let v = x.values[i]
                y.values[i] = 0.5 * v * (1 + tanh(Self.c * (v + 0.044715 * v * v * v)))
            }
        }
        return y
    }
    public func backward(_ dy: Matrix) -> Matrix {
        var dx = dy
        switch approximation {
        case .none:
            // d/dx xΦ(x) = Φ(x) + xφ(x).
            for i in dx.values.indices {
                let v = input.values[i]
                let phi = 0.5 * (1 + erf(v / Float(2).squareRoot()))
                let density = exp(-0.5 * v * v) / Float(2 * Double.pi).squareRoot()
                dx.values[i] *= phi + v * density
            }
        case .tanh:
            for i in dx.values.indices {
                let v = input.values[i]
                let u = Self.c * (v + 0.044715 * v * v * v)
                let t = tanh(u)
                let du = Self.c * (1 + 3 * 0.044715 * v * v)
                dx.values[i] *= 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * du
            }
        }
        return dx
    }
}

public final class LayerNorm: Layer {
    public let gamma: Parameter
    public let beta: Parameter
    public let eps: Float
    private var normalized = Matrix(rows: 0, columns: 0)
    private var rstd: [Float] = []

    /// `epsilon`: added to the variance (PyTorch's default 1e-5; SASRec uses 1e-8).
    public init(_ features: Int, epsilon: Float = 1e-5, name: String = "layernorm") {
        eps = epsilon
        gamma = Parameter(name + ".weight", value: Matrix(rows: 1, columns: features, values: [Float](repeating: 1, count: features)))
        beta = Parameter(name + ".bias", value: Matrix(rows: 1, columns: features))
    }

    public var parameters: [Parameter] { [gamma, beta] }

    public func forward(_ x: Matrix, training: Bool) -> Matrix {
        let (y, xh, rstd) = normalize(x)
        self.rstd = rstd
        normalized = xh
        return y
    }

    /// The output alone (no x̂ kept: one pass over each row less, one matrix less).
    public func infer(_ x: Matrix) -> Matrix {
        let n = x.rows, d = x.columns
        var y = x
        let eps = self.eps
        gamma.value.values.withUnsafeBufferPointer { g in
            beta.value.values.withUnsafeBufferPointer { b in
                y.values.withUnsafeMutableBufferPointer { yp in
                    for r in 0..<n {
                        let row = yp.baseAddress! + r * d
                        let (mean, s) = Self.moments(UnsafePointer(row), d, epsilon: eps)
                        for k in 0..<d { row[k] = (row[k] - mean) * s * g[k] + b[k] }
                    }
                }
            }
        }
        return y
    }

    /// A row's mean and 1/√(variance + ε) (the same arithmetic for `infer` and `forward`).
    @inline(__always) private static func moments(_ row: UnsafePointer<Float>, _ d: Int, epsilon: Float) -> (mean: Float, rstd: Float) {
        var mean: Float = 0
        for k in 0..<d { mean += row[k] }
        mean /= Float(d)
        var variance: Float = 0
        for k in 0..<d { let v = row[k] - mean; variance += v * v }
        variance /= Float(d)
        return (mean, 1 / (variance + epsilon).squareRoot())
    }

    /// The output, x̂ and 1/σ of each row (what `backward` needs).
    private func normalize(_ x: Matrix) -> (y: Matrix, xh: Matrix, rstd: [Float]) {
        let n = x.rows, d = x.columns
        var xh = x
        var y = x
        var rstd = [Float](repeating: 0, count: n)
        let eps = self.eps
        gamma.value.values.withUnsafeBufferPointer { g in
            beta.value.values.withUnsafeBufferPointer { b in
                x.values.withUnsafeBufferPointer { xp in
                    xh.values.withUnsafeMutableBufferPointer { hp in
                        y.values.withUnsafeMutableBufferPointer { yp in
                            for r in 0..<n {
                                let row = xp.baseAddress! + r * d
                                let (mean, s) = Self.moments(row, d, epsilon: eps)
                                rstd[r] = s
                                for k in 0..<d {
                                    let h = (row[k] - mean) * s
                                    hp[r * d + k] = h
                                    yp[r * d + k] = h * g[k] + b[k]
                                }
                            }
                        }
                    }
                }
            }
        }
        return (y, xh, rstd)
    }

    public func backward(_ dy: Matrix) -> Matrix {
        let n = dy.rows, d = dy.columns
        var dx = dy
        var dGamma = [Float](repeating: 0, count: d), dBeta = [Float](repeating: 0, count: d)
        gamma.value.values.withUnsafeBufferPointer { g in
            normalized.values.withUnsafeBufferPointer { h in
                dy.values.withUnsafeBufferPointer { dp in
                    dx.values.withUnsafeMutableBufferPointer { xp in
                        for r in 0..<n {
                            // dx̂ = dy·γ; dx = rstd·(dx̂ − mean(dx̂) − x̂·mean(dx̂·x̂)).
                            var meanD: Float = 0, meanDX: Float = 0
                            for k in 0..<d {
                                let dv = dp[r * d + k], hv = h[r * d + k]
                                let dh = dv * g[k]
                                meanD += dh
                                meanDX += dh * hv
                                dGamma[k] += dv * hv
                                dBeta[k] += dv
                            }
                            meanD /= Float(d)
                            meanDX /= Float(d)
                            let s = rstd[r]
                            for k in 0..<d {
                                xp[r * d + k] = s * (dp[r * d + k] * g[k] - meanD - h[r * d + k] * meanDX)
                            }
                        }
                    }
                }
            }
        }
        for k in 0..<d {
            gamma.grad.values[k] += dGamma[k]
            beta.grad.values[k] += dBeta[k]
        }
        return dx
    }
}

/// Inverted dropout: in training, each element is zeroed with probability `p` and the rest scaled
/// by 1/(1−p); the identity at inference. Seeded: the n-th call draws from stream n.
public final class Dropout: Layer {
    public let p: Float
    private var generator: SeededGenerator
    private var mask: [Float] = []
    public init(_ p: Float, seed: UInt64) {
        precondition(p >= 0 && p < 1, "dropout probability must be in [0, 1)")
        self.p = p
        generator = SeededGenerator(seed: seed)
    }
    public var parameters: [Parameter] { [] }
    public func infer(_ x: Matrix) -> Matrix { x }
    public func forward(_ x: Matrix, training: Bool) -> Matrix {
        guard training && p > 0 else { mask = []; return x }
        let scale = 1 / (1 - p)
        mask = (0..<x.values.count).map { _ in generator.nextDouble() < Double(p) ? 0 : scale }
        var y = x
        for i in y.values.indices { y.values[i] *= mask[i] }
        return y
    }
    public func backward(_ dy: Matrix) -> Matrix {
        guard !mask.isEmpty else { return dy }
        var dx = dy
        for i in dx.values.indices { dx.values[i] *= mask[i] }
        return dx
    }
}

/// Each row scaled to unit L2 norm (PyTorch's F.normalize, eps 1e-12).
public final class L2Normalize: Layer {
    private var output = Matrix(rows: 0, columns: 0)
    private var norms: [Float] = []
    public init() {}
    public var parameters: [Parameter] { [] }
    public func forward(_ x: Matrix, training: Bool) -> Matrix {
        let (y, norms) = normalize(x)
        self.norms = norms
        output = y
        return y
    }
    public func infer(_ x: Matrix) -> Matrix { normalize(x).y }
    private func normalize(_ x: Matrix) -> (y: Matrix, norms: [Float]) {
        let n = x.rows, d = x.columns
        var y = x
        var norms = [Float](repeating: 0, count: n)
        y.values.withUnsafeMutableBufferPointer { yp in
            for r in 0..<n {
                let row = yp.baseAddress! + r * d
                var s: Float = 0
                for k in 0..<d { s += row[k] * row[k] }
                let norm = max(s.squareRoot(), 1e-12)
                norms[r] = norm
                let inv = 1 / norm
                for k in 0..<d { row[k] *= inv }
            }
        }
        return (y, norms)
    }
    public func backward(_ dy: Matrix) -> Matrix {
        let n = dy.rows, d = dy.columns
        var dx = dy
        output.values.withUnsafeBufferPointer { o in
            dx.values.withUnsafeMutableBufferPointer { xp in
                for r in 0..<n {
                    let row = xp.baseAddress! + r * d, out = o.baseAddress! + r * d
                    var dot: Float = 0
                    for k in 0..<d { dot += out[k] * row[k] }
                    let inv = 1 / norms[r]
                    for k in 0..<d { row[k] = (row[k] - out[k] * dot) * inv }
                }
            }
        }
        return dx
    }
}

/// Layers applied in order.
public final class Sequential: Layer {
    public let layers: [any Layer]
    public init(_ layers: [any Layer]) { self.layers = layers }
    public var parameters: [Parameter] { layers.flatMap(\.parameters) }
    public func forward(_ x: Matrix, training: Bool) -> Matrix {
        layers.reduce(x) { $1.forward($0, training: training) }
    }
    public func backward(_ dy: Matrix) -> Matrix {
        layers.reversed().reduce(dy) { $1.backward($0) }
    }
    public func infer(_ x: Matrix) -> Matrix {
        layers.reduce(x) { $1.infer($0) }
    }
}

/// A lookup table: row `id` of an n x d matrix per input, initialised N(0, `scale`²). The gradient
/// is row-sparse; `bag` mean-pools variable-length lists of ids (a user's history) instead.
public final class Embedding {
    public let table: Parameter
    private var ids: [Int] = []
    private var bags: [[Int]] = []

    public init(count: Int, dimension: Int, seed: UInt64, scale: Float = 0.1, name: String = "embedding") {
        table = Parameter(name, value: Matrix.random(rows: count, columns: dimension, seed: seed, scale: scale), rowSparse: true)
    }

    public var dimension: Int { table.value.columns }
    public var count: Int { table.value.rows }

    /// Rows `ids` of the table, one per input; remembers `ids` for `backward`.
    public func forward(_ ids: [Int]) -> Matrix {
        self.ids = ids
        return lookup(ids)
    }

    /// Rows `ids` of the table, keeping nothing (inference, safe from many threads).
    public func lookup(_ ids: [Int]) -> Matrix {
        let d = dimension
        var y = Matrix(rows: ids.count, columns: d)
        table.value.values.withUnsafeBufferPointer { t in
            y.values.withUnsafeMutableBufferPointer { yp in
                for (r, id) in ids.enumerated() {
                    precondition(id >= 0 && id < count, "embedding id \(id) outside 0..<\(count)")
                    for k in 0..<d { yp[r * d + k] = t[id * d + k] }
                }
            }
        }
        return y
    }

    public func backward(_ dy: Matrix) {
        let d = dimension
        dy.values.withUnsafeBufferPointer { dp in
            table.grad.values.withUnsafeMutableBufferPointer { g in
                for (r, id) in ids.enumerated() {
                    table.touch(id)
                    for k in 0..<d { g[id * d + k] += dp[r * d + k] }
                }
            }
        }
    }

    /// The mean of the rows of each bag (a zero row for an empty bag); remembers the bags for
    /// `bagBackward`.
    public func bag(_ bags: [[Int]]) -> Matrix {
        self.bags = bags
        return pooled(bags)
    }

    /// The mean of the rows of each bag, keeping nothing (inference, safe from many threads).
    public func pooled(_ bags: [[Int]]) -> Matrix {
        let d = dimension, n = count
        var y = Matrix(rows: bags.count, columns: d)
        table.value.values.withUnsafeBufferPointer { t in
            y.values.withUnsafeMutableBufferPointer { yp in
                for (r, bag) in bags.enumerated() where !bag.isEmpty {
                    let w = 1 / Float(bag.count), out = yp.baseAddress! + r * d
                    for id in bag {
                        precondition(id >= 0 && id < n, "embedding id \(id) outside 0..<\(n)")
                        let row = t.baseAddress! + id * d
                        for k in 0..<d { out[k] += w * row[k] }
                    }
                }
            }
        }
        return y
    }

    public func bagBackward(_ dy: Matrix) {
        let d = dimension
        for bag in bags { for id in bag { table.touch(id) } }
        dy.values.withUnsafeBufferPointer { dp in
            table.grad.values.withUnsafeMutableBufferPointer { g in
                for (r, bag) in bags.enumerated() where !bag.isEmpty {
                    let w = 1 / Float(bag.count), src = dp.baseAddress! + r * d
                    for id in bag {
                        let dst = g.baseAddress! + id * d
                        for k in 0..<d { dst[k] += w * src[k] }
                    }
                }
            }
        }
    }
}

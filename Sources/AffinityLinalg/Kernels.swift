import _AffinityKernels
import Foundation

/// Vector kernels on contiguous `Float` buffers. Each forwards to the runtime-dispatched C kernel
/// (AVX-512, AVX2+FMA or portable) and has a plain Swift reference twin used by the tests.
public enum Kernels {
    /// The SIMD path in use: "avx512", "avx2" or "portable".
    public static var simdLevel: String {
        switch affinity_simd_level() {
        case 2: return "avx512"
        case 1: return "avx2"
        default: return "portable"
        }
    }

    /// The SGEMM micro-kernel in use: on AVX-512 machines the faster of the 512- and 256-bit
    /// kernels as timed at first use (they give the same bits), with the two rates in GFLOP/s
    /// (nil when they were not timed: no AVX-512, AFFINITY_GEMM_KERNEL set, or a level below
    /// AVX-512 forced before the first product; forcing a level afterwards changes the path only).
    public static var gemmKernel: (path: String, avx512: Double?, avx2: Double?) {
        let path = ["portable", "avx2", "avx512"][Int(affinity_gemm_kernel_level())]
        let r2 = affinity_gemm_kernel_rate(2), r1 = affinity_gemm_kernel_rate(1)
        return (path, r2 > 0 ? r2 : nil, r1 > 0 ? r1 : nil)
    }

    /// Caps the SIMD path (0 portable, 1 AVX2, 2 AVX-512; -1 automatic), so tests can check every
    /// path on one machine. The cap holds on the calling thread and in the parallel work it starts
    /// through `Parallelism`; other threads keep their own.
    public static func forceSIMDLevel(_ level: Int) { affinity_force_level(Int32(level)) }

    @inline(__always)
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
        affinity_dot(a, b, count)
    }

    @inline(__always)
    public static func squaredL2(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
        affinity_l2sq(a, b, count)
    }

    /// Cosine similarity; 0 when either vector is zero.
    public static func cosine(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
        let ab = affinity_dot(a, b, count), aa = affinity_dot(a, a, count), bb = affinity_dot(b, b, count)
        let d = (aa * bb).squareRoot()
        return d > 0 ? ab / d : 0
    }

    public static func dot(_ a: [Float], _ b: [Float]) -> Float {
        precondition(a.count == b.count, "vector lengths differ")
        return a.withUnsafeBufferPointer { pa in b.withUnsafeBufferPointer { pb in affinity_dot(pa.baseAddress!, pb.baseAddress!, a.count) } }
    }

    public static func squaredL2(_ a: [Float], _ b: [Float]) -> Float {
        precondition(a.count == b.count, "vector lengths differ")
        return a.withUnsafeBufferPointer { pa in b.withUnsafeBufferPointer { pb in affinity_l2sq(pa.baseAddress!, pb.baseAddress!, a.count) } }
    }

    /// `out[r] = dot(query, rows[r])` for a block of `rowCount` rows of length `dimension`.
    public static func dotRows(query: UnsafePointer<Float>, rows: UnsafePointer<Float>, rowCount: Int, dimension: Int, into out: UnsafeMutablePointer<Float>) {
        affinity_dot_rows(query, rows, rowCount, dimension, out)
    }

    /// `out[i]` = score of row `ids[i]` against the query (inner product, or −|q − x|² when
    /// `negatedL2`), prefetching upcoming rows: the inner step of graph search.
    @inline(__always)
    public static func scores(ids: UnsafePointer<Int32>, count: Int, query: UnsafePointer<Float>, rows: UnsafePointer<Float>, dimension: Int,
                              negatedL2: Bool, into out: UnsafeMutablePointer<Float>) {
        affinity_scores_by_id(negatedL2 ? 1 : 0, query, rows, dimension, ids, count, out)
    }

    /// out[j] += Σ_r weights[r] · rows[ids[r]][j] (weights nil: 1) for a row-major matrix of
    /// `width` columns, rows added in the given order with separate multiply and add: bit for bit
    /// the plain loop (EASE's score of a history; `SparseMatrix.multiplyRow`).
    public static func addRows(ids: UnsafePointer<Int32>, weights: UnsafePointer<Float>?, count: Int,
                               of matrix: UnsafePointer<Float>, width: Int, into out: UnsafeMutablePointer<Float>) {
        affinity_row_sum(matrix, width, ids, weights, count, out)
    }

    /// `out[r] = |query - rows[r]|²`.
    public static func squaredL2Rows(query: UnsafePointer<Float>, rows: UnsafePointer<Float>, rowCount: Int, dimension: Int, into out: UnsafeMutablePointer<Float>) {
        affinity_l2sq_rows(query, rows, rowCount, dimension, out)
    }

    /// One BPR SGD step (see `affinity_bpr_step`): updates w, h_i, h_j in place and returns
    /// z = σ(−(biasDiff + w·(h_i − h_j))). The three vectors must not overlap.
    @inline(__always)
    public static func bprStep(user w: UnsafeMutablePointer<Float>, positive hi: UnsafeMutablePointer<Float>, negative hj: UnsafeMutablePointer<Float>,
                               count: Int, biasDifference: Float, learningRate: Float, regularization: Float) -> Float {
        affinity_bpr_step(w, hi, hj, count, biasDifference, learningRate, regularization)
    }

    /// Reference twin of `bprStep` in plain Swift.
    public static func referenceBPRStep(user w: inout [Float], positive hi: inout [Float], negative hj: inout [Float],
                                        biasDifference: Float, learningRate lr: Float, regularization reg: Float) -> Float {
        var x = Double(biasDifference)
        for k in 0..<w.count { x += Double(w[k]) * Double(hi[k] - hj[k]) }
        let z = Float(1 / (1 + exp(x)))
        for k in 0..<w.count {
            let wk = w[k], hik = hi[k], hjk = hj[k]
            w[k] = wk + lr * (z * (hik - hjk) - reg * wk)
            hi[k] = hik + lr * (z * wk - reg * hik)
            hj[k] = hjk + lr * (-z * wk - reg * hjk)
        }
        return z
    }

    /// One skip-gram step with negative sampling (see `affinity_sgns_step`): trains the input
    /// vector `w` (length `dimension`) against the output rows `targets` of `output` (the first the
    /// true word, the rest negatives), updating both in place. `scratch` holds `dimension` floats;
    /// the targets must be rows of `output` and none of the three may overlap (not checked).
    @inline(__always)
    public static func sgnsStep(input w: UnsafeMutablePointer<Float>, output: UnsafeMutablePointer<Float>, targets: UnsafePointer<Int32>,
                                count: Int, dimension: Int, learningRate: Float, scratch: UnsafeMutablePointer<Float>) {
        affinity_sgns_step(w, output, targets, count, dimension, learningRate, scratch)
    }

    /// Reference twin of `sgnsStep` in plain Swift (Double dot products).
    public static func referenceSGNSStep(input w: inout [Float], output: inout [Float], targets: [Int], learningRate: Float) {
        let d = w.count
        var e = [Float](repeating: 0, count: d)
        for (t, target) in targets.enumerated() {
            var f = 0.0
            for k in 0..<d { f += Double(w[k]) * Double(output[target * d + k]) }
            let sigma: Float = f > 6 ? 1 : f < -6 ? 0 : Float(1 / (1 + exp(-f)))
            let g = ((t == 0 ? 1 : 0) - sigma) * learningRate
            for k in 0..<d {
                e[k] += g * output[target * d + k]
                output[target * d + k] += g * w[k]
            }
        }
        for k in 0..<d { w[k] += e[k] }
    }

    // Reference twins: plain loops with Double accumulation.

    public static func referenceDot(_ a: [Float], _ b: [Float]) -> Float {
        var s = 0.0
        for i in 0..<a.count { s += Double(a[i]) * Double(b[i]) }
        return Float(s)
    }

    public static func referenceSquaredL2(_ a: [Float], _ b: [Float]) -> Float {
        var s = 0.0
        for i in 0..<a.count { let d = Double(a[i]) - Double(b[i]); s += d * d }
        return Float(s)
    }
}

extension Kernels {
    /// x[i] = exp(x[i] − shift) in place, returning Σ x[i] (the softmax denominator): the C kernel
    /// (AVX-512 / AVX2 polynomial, relative error below 2e-7; arguments below −87.3 give 0, so a
    /// masked −∞ logit gives 0).
    public static func expShifted(_ x: UnsafeMutablePointer<Float>, count: Int, shift: Float) -> Float {
        affinity_exp_shifted(x, count, shift)
    }

    /// The plain twin of `expShifted`.
    public static func referenceExpShifted(_ x: inout [Float], shift: Float) -> Float {
        var total: Float = 0
        for i in x.indices {
            x[i] = x[i] - shift < -87.3 ? 0 : Float(Foundation.exp(Double(x[i] - shift)))
            total += x[i]
        }
        return total
    }

    /// x[i] = x[i]·Φ(x[i]) = ½x(1 + erf(x/√2)) in place: GELU without the tanh approximation
    /// (BERT's, PyTorch's `nn.GELU()` default). The C kernel (AVX-512 / AVX2: Abramowitz & Stegun
    /// 7.1.26 erf, absolute error of erf below 1.5e-7; portable: libm's erff).
    public static func geluErf(_ x: UnsafeMutablePointer<Float>, count: Int) {
        affinity_gelu_erf(x, count)
    }

    /// The plain twin of `geluErf` (Double erf).
    public static func referenceGELUErf(_ x: inout [Float]) {
        for i in x.indices {
            let v = Double(x[i])
            x[i] = Float(0.5 * v * (1 + Foundation.erf(v / 2.0.squareRoot())))
        }
    }
}

/// The elementwise loops of a training step (softmax rows, Adam, ReLU's gradient) as C kernels at
/// the widest SIMD width; each has its plain twin here, and the tests hold one to the other.
extension Kernels {
    /// The largest of `count` values, NaN ignored (−∞ when there is none). When the largest is a
    /// zero, +0 or −0 may come back (lanes are reduced in another order than a scan's).
    public static func maximum(_ x: UnsafePointer<Float>, count: Int) -> Float { affinity_max(x, count) }

    /// The plain twin of `maximum`.
    public static func referenceMaximum(_ x: [Float]) -> Float {
        var m = -Float.infinity
        for v in x where v > m { m = v }
        return m
    }

    /// y[i] += a·x[i].
    public static func addScaled(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, count: Int, by a: Float) {
        affinity_add_scaled(y, x, count, a)
    }

    /// The plain twin of `addScaled`.
    public static func referenceAddScaled(_ y: inout [Float], _ x: [Float], by a: Float) {
        for i in y.indices { y[i] += a * x[i] }
    }

    /// x[i] *= s.
    public static func scale(_ x: UnsafeMutablePointer<Float>, count: Int, by s: Float) { affinity_scale(x, count, s) }

    /// The plain twin of `scale`.
    public static func referenceScale(_ x: inout [Float], by s: Float) {
        for i in x.indices { x[i] *= s }
    }

    /// The constants of one Adam step: learning rate, moment decays, the step's bias corrections
    /// 1 − β₁ᵗ and 1 − β₂ᵗ, ε and decoupled weight decay.
    public struct AdamStep: Sendable {
        public var learningRate: Float, beta1: Float, beta2: Float, correction1: Float, correction2: Float, epsilon: Float, weightDecay: Float
        public init(learningRate: Float, beta1: Float, beta2: Float, correction1: Float, correction2: Float, epsilon: Float, weightDecay: Float) {
            self.learningRate = learningRate; self.beta1 = beta1; self.beta2 = beta2
            self.correction1 = correction1; self.correction2 = correction2; self.epsilon = epsilon; self.weightDecay = weightDecay
        }
    }

    /// Adam over `count` weights: m = β₁m + (1−β₁)g, v = β₂v + (1−β₂)g², w −= lr((m/c₁)/(√(v/c₂) + ε) + λw).
    public static func adam(weights w: UnsafeMutablePointer<Float>, gradients g: UnsafePointer<Float>, m: UnsafeMutablePointer<Float>,
                            v: UnsafeMutablePointer<Float>, count: Int, step s: AdamStep) {
        affinity_adam(w, g, m, v, count, s.learningRate, s.beta1, s.beta2, s.correction1, s.correction2, s.epsilon, s.weightDecay)
    }

    /// The plain twin of `adam`.
    public static func referenceAdam(weights w: inout [Float], gradients g: [Float], m: inout [Float], v: inout [Float], step s: AdamStep) {
        for i in w.indices {
            m[i] = s.beta1 * m[i] + (1 - s.beta1) * g[i]
            v[i] = s.beta2 * v[i] + (1 - s.beta2) * g[i] * g[i]
            let update = (m[i] / s.correction1) / ((v[i] / s.correction2).squareRoot() + s.epsilon)
            w[i] -= s.learningRate * (update + s.weightDecay * w[i])
        }
    }

    /// ReLU's gradient in place: d[i] = 0 where the layer's output o[i] is not positive.
    public static func reluBackward(_ d: UnsafeMutablePointer<Float>, output o: UnsafePointer<Float>, count: Int) {
        affinity_relu_backward(d, o, count)
    }

    /// The plain twin of `reluBackward`.
    public static func referenceReluBackward(_ d: inout [Float], output o: [Float]) {
        for i in d.indices where !(o[i] > 0) { d[i] = 0 }
    }
}

import AffinityLinalg
import Foundation

/// Updates parameters from their gradients. Row-sparse parameters (embedding tables) are updated
/// lazily: only the rows touched this step.
public protocol Optimizer: AnyObject {
    /// The learning rate of the next step (schedules change it between steps).
    var learningRate: Float { get set }
    func step(_ parameters: [Parameter])
}

/// The flat index ranges an optimiser updates: the touched rows of a row-sparse parameter (lazy),
/// else the whole array. Read before the parameter's storage is borrowed for writing.
private func updatedRanges(_ p: Parameter, lazy: Bool = true) -> [Range<Int>] {
    if p.rowSparse && lazy {
        let c = p.value.columns
        return p.touchedRows.map { ($0 * c)..<(($0 + 1) * c) }
    }
    return [0..<p.value.values.count]
}

/// Adam (Kingma & Ba 2015) with decoupled weight decay when `weightDecay` > 0 (AdamW, Loshchilov &
/// Hutter 2019). Row-sparse parameters get lazy updates when `lazy` is set: moments of untouched
/// rows stay as they are (TensorFlow's LazyAdam), with bias correction from the global step;
/// otherwise every row is updated every step, as PyTorch's dense Adam does. A parameter's own
/// `weightDecay` replaces the optimiser's for that parameter (PyTorch's parameter groups).
public final class Adam: Optimizer {
    public var learningRate: Float
    public let beta1: Float, beta2: Float, epsilon: Float, weightDecay: Float
    public let lazy: Bool
    /// Threads for the dense update of a large parameter (0 = all cores; 1 from code already parallel).
    public let threads: Int
    private var moments: [ObjectIdentifier: (m: [Float], v: [Float])] = [:]
    public private(set) var stepCount = 0

    public init(learningRate: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8, weightDecay: Float = 0,
                lazy: Bool = true, threads: Int = 1) {
        self.lazy = lazy
        self.threads = threads
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = weightDecay
    }

    public func step(_ parameters: [Parameter]) {
        stepCount += 1
        let c1 = 1 - pow(beta1, Float(stepCount)), c2 = 1 - pow(beta2, Float(stepCount))
        for p in parameters {
            let key = ObjectIdentifier(p), ranges = updatedRanges(p, lazy: lazy)
            let constants = Kernels.AdamStep(learningRate: learningRate, beta1: beta1, beta2: beta2, correction1: c1, correction2: c2,
                                             epsilon: epsilon, weightDecay: p.weightDecay ?? weightDecay)
            var state = moments[key] ?? ([Float](repeating: 0, count: p.value.values.count), [Float](repeating: 0, count: p.value.values.count))
            moments[key] = nil   // keep the arrays uniquely referenced while they are updated
            guard !state.m.isEmpty else { moments[key] = state; continue }
            state.m.withUnsafeMutableBufferPointer { m in
                state.v.withUnsafeMutableBufferPointer { v in
                    p.value.values.withUnsafeMutableBufferPointer { w in
                        p.grad.values.withUnsafeBufferPointer { g in
                            let wp = UncheckedMutablePointer(w.baseAddress!), gp = UncheckedPointer(g.baseAddress!)
                            let mp = UncheckedMutablePointer(m.baseAddress!), vp = UncheckedMutablePointer(v.baseAddress!)
                            @Sendable func update(_ r: Range<Int>) {
                                Kernels.adam(weights: wp.base + r.lowerBound, gradients: gp.base + r.lowerBound, m: mp.base + r.lowerBound,
                                             v: vp.base + r.lowerBound, count: r.count, step: constants)
                            }
                            let workers = Parallelism.resolve(threads)
                            if ranges.count == 1 && ranges[0].count >= 1 << 16 && workers > 1 {
                                // A dense table: contiguous slices, one per thread and a few more.
                                let all = ranges[0]
                                Parallelism.forEachRange(all.count, grain: (all.count + 4 * workers - 1) / (4 * workers), threads: workers) { r in
                                    update((all.lowerBound + r.lowerBound)..<(all.lowerBound + r.upperBound))
                                }
                            } else {
                                for range in ranges { update(range) }
                            }
                        }
                    }
                }
            }
            moments[key] = state
        }
    }
}

/// Adagrad (Duchi et al. 2011).
public final class Adagrad: Optimizer {
    public var learningRate: Float
    public let epsilon: Float
    private var sums: [ObjectIdentifier: [Float]] = [:]

    public init(learningRate: Float = 0.01, epsilon: Float = 1e-10) {
        self.learningRate = learningRate
        self.epsilon = epsilon
    }

    public func step(_ parameters: [Parameter]) {
        let lr = learningRate, eps = epsilon
        for p in parameters {
            let key = ObjectIdentifier(p), ranges = updatedRanges(p)
            var s = sums[key] ?? [Float](repeating: 0, count: p.value.values.count)
            sums[key] = nil
            s.withUnsafeMutableBufferPointer { s in
                p.value.values.withUnsafeMutableBufferPointer { w in
                    p.grad.values.withUnsafeBufferPointer { g in
                        for range in ranges {
                            for i in range {
                                s[i] += g[i] * g[i]
                                w[i] -= lr * g[i] / (s[i].squareRoot() + eps)
                            }
                        }
                    }
                }
            }
            sums[key] = s
        }
    }
}

/// Stochastic gradient descent, with optional momentum.
public final class SGD: Optimizer {
    public var learningRate: Float
    public let momentum: Float
    private var velocity: [ObjectIdentifier: [Float]] = [:]

    public init(learningRate: Float = 0.01, momentum: Float = 0) {
        self.learningRate = learningRate
        self.momentum = momentum
    }

    public func step(_ parameters: [Parameter]) {
        let lr = learningRate, mu = momentum
        for p in parameters {
            let key = ObjectIdentifier(p), ranges = updatedRanges(p)
            var vel = mu > 0 ? (velocity[key] ?? [Float](repeating: 0, count: p.value.values.count)) : []
            velocity[key] = nil
            p.value.values.withUnsafeMutableBufferPointer { w in
                p.grad.values.withUnsafeBufferPointer { g in
                    for range in ranges {
                        for i in range {
                            if mu > 0 {
                                vel[i] = mu * vel[i] + g[i]
                                w[i] -= lr * vel[i]
                            } else {
                                w[i] -= lr * g[i]
                            }
                        }
                    }
                }
            }
            if mu > 0 { velocity[key] = vel }
        }
    }
}

/// Scales all gradients so that their global L2 norm is at most `maxNorm`; returns the norm before.
@discardableResult
public func clipGradientNorm(_ parameters: [Parameter], maxNorm: Float) -> Float {
    var total: Double = 0
    for p in parameters {
        if p.rowSparse {
            let c = p.value.columns
            for r in p.touchedRows { for k in 0..<c { total += Double(p.grad.values[r * c + k] * p.grad.values[r * c + k]) } }
        } else {
            for g in p.grad.values { total += Double(g * g) }
        }
    }
    let norm = Float(total.squareRoot())
    guard norm > maxNorm, norm > 0 else { return norm }
    let scale = maxNorm / norm
    for p in parameters {
        if p.rowSparse {
            let c = p.value.columns
            for r in p.touchedRows { for k in 0..<c { p.grad.values[r * c + k] *= scale } }
        } else {
            for i in p.grad.values.indices { p.grad.values[i] *= scale }
        }
    }
    return norm
}

/// Learning rate as a function of the step (0-based).
public enum LearningRateSchedule: Sendable, Equatable {
    case constant
    /// Linear warm-up over `warmup` steps, then cosine decay to `floor`·base at `total`.
    case warmupCosine(warmup: Int, total: Int, floor: Float)
    /// Linear decay from the base rate to 0 at `total`.
    case linearDecay(total: Int)

    public func rate(base: Float, step: Int) -> Float {
        switch self {
        case .constant:
            return base
        case .warmupCosine(let warmup, let total, let floor):
            if step < warmup { return base * Float(step + 1) / Float(max(1, warmup)) }
            let progress = min(1, Float(step - warmup) / Float(max(1, total - warmup)))
            return base * (floor + (1 - floor) * 0.5 * (1 + cos(Float.pi * progress)))
        case .linearDecay(let total):
            return base * max(0, 1 - Float(step) / Float(max(1, total)))
        }
    }
}

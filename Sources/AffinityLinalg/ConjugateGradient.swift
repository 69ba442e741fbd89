/// Conjugate gradient for a symmetric positive-definite system A·x = b (Hestenes & Stiefel 1952),
/// with A given only through its product with a vector.
public enum ConjugateGradient {
    public struct Result: Sendable {
        public var solution: [Float]
        public var iterations: Int
        /// |b − A·x| at the end.
        public var residualNorm: Float
    }

    /// Runs at most `maxIterations` steps from `initial` (zeros when nil), stopping when the
    /// residual norm falls below `tolerance · |b|`. `multiply(v, out)` must write A·v into out.
    public static func solve(b: [Float], initial: [Float]? = nil, maxIterations: Int, tolerance: Float = 1e-6,
                             multiply: (_ v: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>) -> Void) -> Result {
        let n = b.count
        var x = initial ?? [Float](repeating: 0, count: n)
        precondition(x.count == n, "initial guess has \(x.count) entries, expected \(n)")
        var ax = [Float](repeating: 0, count: n)
        x.withUnsafeBufferPointer { xp in ax.withUnsafeMutableBufferPointer { multiply(xp.baseAddress!, $0.baseAddress!) } }
        var r = (0..<n).map { b[$0] - ax[$0] }
        var p = [Float](repeating: 0, count: n)
        let stop = tolerance * tolerance * max(Kernels.dot(b, b), .leastNormalMagnitude)
        let (iterations, rr) = x.withUnsafeMutableBufferPointer { xb in
            r.withUnsafeMutableBufferPointer { rb in
                p.withUnsafeMutableBufferPointer { pb in
                    ax.withUnsafeMutableBufferPointer { apb in
                        iterate(n: n, x: xb.baseAddress!, residual: rb.baseAddress!, direction: pb.baseAddress!, product: apb.baseAddress!,
                                maxIterations: maxIterations, stopBelow: stop, multiply: multiply)
                    }
                }
            }
        }
        return Result(solution: x, iterations: iterations, residualNorm: rr.squareRoot())
    }
}

extension ConjugateGradient {
    /// The iterations, in place and allocation-free: `x` holds the start and receives the solution,
    /// `r` must hold the residual b − A·x on entry; `p` and `ap` are scratch of `n` floats. Stops
    /// after `maxIterations` steps, when |r|² ≤ `stopBelow`, or when A is not positive definite
    /// along the search direction. Returns the steps taken and the final |r|².
    public static func iterate(n: Int, x: UnsafeMutablePointer<Float>, residual r: UnsafeMutablePointer<Float>,
                               direction p: UnsafeMutablePointer<Float>, product ap: UnsafeMutablePointer<Float>,
                               maxIterations: Int, stopBelow stop: Float,
                               multiply: (_ v: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>) -> Void) -> (iterations: Int, rr: Float) {
        p.update(from: r, count: n)
        var rr = Kernels.dot(r, r, count: n)
        var iterations = 0
        while iterations < maxIterations && rr > stop {
            multiply(p, ap)
            let pap = Kernels.dot(p, ap, count: n)
            guard pap > 0 else { break }   // A is not positive definite along p (or p is zero)
            let alpha = rr / pap
            for i in 0..<n {
                x[i] += alpha * p[i]
                r[i] -= alpha * ap[i]
            }
            let rrNew = Kernels.dot(r, r, count: n)
            let beta = rrNew / rr
            for i in 0..<n { p[i] = r[i] + beta * p[i] }
            rr = rrNew
            iterations += 1
        }
        return (iterations, rr)
    }
}

extension Matrix {
    /// out = self · v (matrix-vector product, one thread).
    public func multiply(vector v: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        values.withUnsafeBufferPointer { a in
            Kernels.dotRows(query: v, rows: a.baseAddress!, rowCount: rows, dimension: columns, into: out)
        }
    }
}

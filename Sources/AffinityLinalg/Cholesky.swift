/// Cholesky factorisation A = L·Lᵀ of a symmetric positive-definite matrix, with solves and the
/// inverse.
///
/// Recursive blocked algorithms (Gustavson 1997; Elmroth et al., SIAM Review 2004): each level
/// splits the matrix in two and hands the off-diagonal work to `sgemm`, so nearly all of the
/// n³/3 flops run in the GEMM micro-kernel. Only the lower triangle of A is read.
public struct Cholesky: Sendable {
    /// The factor L (row-major, n x n); entries above the diagonal are zero.
    public let lower: Matrix
    public var dimension: Int { lower.rows }

    /// Below this size the recursion switches to plain loops.
    static let leafSize = 64

    /// Factors `a`. Throws `LinalgError.notPositiveDefinite` naming the column where a pivot was
    /// not positive (or not finite).
    /// - Complexity: n³/3 flops.
    public init(_ a: Matrix, threads: Int = 0) throws {
        guard a.rows == a.columns else { throw LinalgError.shapeMismatch("Cholesky needs a square matrix, got \(a.rows)x\(a.columns)") }
        var l = a
        let n = a.rows
        try l.values.withUnsafeMutableBufferPointer { buffer in
            try Cholesky.factor(buffer.baseAddress!, n: n, ld: n, offset: 0, threads: threads)
        }
        for i in 0..<n { for j in (i + 1)..<max(i + 1, n) { l.values[i * n + j] = 0 } }
        lower = l
    }

    /// Factors in place the lower triangle of the n x n block at `a` (leading dimension `ld`).
    static func factor(_ a: UnsafeMutablePointer<Float>, n: Int, ld: Int, offset: Int, threads: Int) throws {
        if n <= leafSize {
            // Left-looking: each entry subtracts a dot product of two contiguous row prefixes.
            for j in 0..<n {
                let rowJ = UnsafePointer(a + j * ld)
                let d = Double(a[j * ld + j]) - Double(j > 0 ? Kernels.dot(rowJ, rowJ, count: j) : 0)
                guard d > 0, d.isFinite else { throw LinalgError.notPositiveDefinite(column: offset + j, pivot: d) }
                let ljj = Float(d.squareRoot())
                a[j * ld + j] = ljj
                for i in (j + 1)..<max(j + 1, n) {
                    let s = a[i * ld + j] - (j > 0 ? Kernels.dot(UnsafePointer(a + i * ld), rowJ, count: j) : 0)
                    a[i * ld + j] = s / ljj
                }
            }
            return
        }
        let n1 = (n / 2 + 15) / 16 * 16, n2 = n - n1
        let a11 = a, a21 = a + n1 * ld, a22 = a + n1 * ld + n1
        try factor(a11, n: n1, ld: ld, offset: offset, threads: threads)
        // A21 <- A21 · L11⁻ᵀ
        solveRightLowerTransposed(l: UnsafePointer(a11), ldl: ld, n: n1, b: a21, ldb: ld, m: n2, threads: threads)
        // A22 <- A22 - A21 · A21ᵀ (lower triangle)
        symmetricRankUpdate(c: a22, ldc: ld, n: n2, a: UnsafePointer(a21), lda: ld, k: n1, threads: threads)
        try factor(a22, n: n2, ld: ld, offset: offset + n1, threads: threads)
    }

    /// Solves X·Lᵀ = B in place (B is m x n, L lower n x n): the right-side triangular solve.
    static func solveRightLowerTransposed(l: UnsafePointer<Float>, ldl: Int, n: Int, b: UnsafeMutablePointer<Float>, ldb: Int, m: Int, threads: Int) {
        guard m > 0 && n > 0 else { return }
        if n <= leafSize {
            let rows = SharedMutableBuffer(UnsafeMutableBufferPointer(start: b, count: (m - 1) * ldb + n))
            let lp = UncheckedPointer(l)
            Parallelism.forEachRange(m, grain: 256, threads: m * n * n > 1 << 20 ? threads : 1) { range in
                for i in range {
                    let row = rows.base.baseAddress! + i * ldb
                    for j in 0..<n {
                        var s = row[j]
                        if j > 0 { s -= Kernels.dot(UnsafePointer(row), lp.base + j * ldl, count: j) }
                        row[j] = s / lp.base[j * ldl + j]
                    }
                }
            }
            return
        }
        let n1 = (n / 2 + 15) / 16 * 16, n2 = n - n1
        // [X1 X2]·[L11ᵀ L21ᵀ; 0 L22ᵀ] = [B1 B2]
        solveRightLowerTransposed(l: l, ldl: ldl, n: n1, b: b, ldb: ldb, m: m, threads: threads)
        sgemm(transposeB: true, m: m, n: n2, k: n1, alpha: -1, a: UnsafePointer(b), lda: ldb, b: l + n1 * ldl, ldb: ldl,
              beta: 1, c: b + n1, ldc: ldb, threads: threads)
        solveRightLowerTransposed(l: l + n1 * ldl + n1, ldl: ldl, n: n2, b: b + n1, ldb: ldb, m: m, threads: threads)
    }

    /// C <- C - A·Aᵀ on the lower triangle of the n x n block C (A is n x k); recursive so that
    /// only about half of the full product is computed.
    static func symmetricRankUpdate(c: UnsafeMutablePointer<Float>, ldc: Int, n: Int, a: UnsafePointer<Float>, lda: Int, k: Int, threads: Int) {
        if n <= 256 {
            sgemm(transposeB: true, m: n, n: n, k: k, alpha: -1, a: a, lda: lda, b: a, ldb: lda, beta: 1, c: c, ldc: ldc, threads: threads)
            return
        }
        let n1 = (n / 2 + 15) / 16 * 16, n2 = n - n1
        symmetricRankUpdate(c: c, ldc: ldc, n: n1, a: a, lda: lda, k: k, threads: threads)
        sgemm(transposeB: true, m: n2, n: n1, k: k, alpha: -1, a: a + n1 * lda, lda: lda, b: a, ldb: lda, beta: 1,
              c: c + n1 * ldc, ldc: ldc, threads: threads)
        symmetricRankUpdate(c: c + n1 * ldc + n1, ldc: ldc, n: n2, a: a + n1 * lda, lda: lda, k: k, threads: threads)
    }

    /// Solves A·x = b.
    public func solve(_ b: [Float]) -> [Float] {
        precondition(b.count == dimension, "right-hand side has \(b.count) entries, expected \(dimension)")
        let n = dimension
        var y = [Double](repeating: 0, count: n)
        for i in 0..<n {   // L·y = b
            var s = Double(b[i])
            for p in 0..<i { s -= Double(lower.values[i * n + p]) * y[p] }
            y[i] = s / Double(lower.values[i * n + i])
        }
        var x = [Double](repeating: 0, count: n)
        for i in stride(from: n - 1, through: 0, by: -1) {   // Lᵀ·x = y
            var s = y[i]
            for p in (i + 1)..<max(i + 1, n) { s -= Double(lower.values[p * n + i]) * x[p] }
            x[i] = s / Double(lower.values[i * n + i])
        }
        return x.map { Float($0) }
    }

    /// L⁻¹, lower triangular, by the recursive formula
    /// [L11 0; L21 L22]⁻¹ = [L11⁻¹ 0; −L22⁻¹·L21·L11⁻¹ L22⁻¹].
    public func lowerInverse(threads: Int = 0) -> Matrix {
        var m = lower
        let n = dimension
        var scratch = [Float](repeating: 0, count: n * n)
        m.values.withUnsafeMutableBufferPointer { mb in
            scratch.withUnsafeMutableBufferPointer { sb in
                Cholesky.invertLower(mb.baseAddress!, n: n, ld: n, scratch: sb.baseAddress!, threads: threads)
            }
        }
        return m
    }

    static func invertLower(_ l: UnsafeMutablePointer<Float>, n: Int, ld: Int, scratch: UnsafeMutablePointer<Float>, threads: Int) {
        if n <= leafSize {
            // Column by column: solve L·x = e_j, in Double.
            var inv = [Double](repeating: 0, count: n * n)
            for j in 0..<n {
                inv[j * n + j] = 1 / Double(l[j * ld + j])
                for i in (j + 1)..<max(j + 1, n) {
                    var s = 0.0
                    for p in j..<i { s -= Double(l[i * ld + p]) * inv[p * n + j] }
                    inv[i * n + j] = s / Double(l[i * ld + i])
                }
            }
            for i in 0..<n { for j in 0...i { l[i * ld + j] = Float(inv[i * n + j]) } }
            return
        }
        let n1 = (n / 2 + 15) / 16 * 16, n2 = n - n1
        let l11 = l, l21 = l + n1 * ld, l22 = l + n1 * ld + n1
        invertLower(l11, n: n1, ld: ld, scratch: scratch, threads: threads)
        invertLower(l22, n: n2, ld: ld, scratch: scratch, threads: threads)
        // W = L21 · L11⁻¹ (n2 x n1) in scratch; the upper triangle of L11⁻¹ holds zeros.
        sgemm(m: n2, n: n1, k: n1, a: UnsafePointer(l21), lda: ld, b: UnsafePointer(l11), ldb: ld, c: scratch, ldc: n1, threads: threads)
        // L21 <- −L22⁻¹ · W
        sgemm(m: n2, n: n1, k: n2, alpha: -1, a: UnsafePointer(l22), lda: ld, b: UnsafePointer(scratch), ldb: n1, c: l21, ldc: ld, threads: threads)
    }

    /// A⁻¹ = L⁻ᵀ·L⁻¹ (symmetric, both triangles filled).
    /// - Complexity: about n³ flops after the factorisation, nearly all in GEMM.
    public func inverse(threads: Int = 0) -> Matrix {
        let m = lowerInverse(threads: threads)
        return m.multiplied(by: m, transposeSelf: true, threads: threads)
    }
}

extension Matrix {
    /// The inverse of a symmetric positive-definite matrix through its Cholesky factor.
    public func inverseSPD(threads: Int = 0) throws -> Matrix {
        try Cholesky(self, threads: threads).inverse(threads: threads)
    }

    /// Adds `value` to every diagonal entry.
    public mutating func addToDiagonal(_ value: Float) {
        for i in 0..<min(rows, columns) { values[i * columns + i] += value }
    }
}

/// Reference twins in Double with plain loops: the oracles of `Cholesky`.
public enum ReferenceLinalg {
    /// Unblocked Cholesky in Double; nil when a pivot is not positive.
    public static func cholesky(_ a: Matrix) -> [Double]? {
        let n = a.rows
        var l = [Double](repeating: 0, count: n * n)
        for j in 0..<n {
            var d = Double(a[j, j])
            for p in 0..<j { d -= l[j * n + p] * l[j * n + p] }
            guard d > 0 else { return nil }
            l[j * n + j] = d.squareRoot()
            for i in (j + 1)..<max(j + 1, n) {
                var s = Double(a[i, j])
                for p in 0..<j { s -= l[i * n + p] * l[j * n + p] }
                l[i * n + j] = s / l[j * n + j]
            }
        }
        return l
    }

    /// Gauss-Jordan inverse with partial pivoting, in Double.
    public static func inverse(_ a: Matrix) -> [Double]? {
        let n = a.rows
        var m = a.values.map { Double($0) }
        var inv = [Double](repeating: 0, count: n * n)
        for i in 0..<n { inv[i * n + i] = 1 }
        for col in 0..<n {
            var pivot = col
            for r in col..<n where abs(m[r * n + col]) > abs(m[pivot * n + col]) { pivot = r }
            guard m[pivot * n + col] != 0 else { return nil }
            if pivot != col {
                for c in 0..<n { m.swapAt(pivot * n + c, col * n + c); inv.swapAt(pivot * n + c, col * n + c) }
            }
            let d = m[col * n + col]
            for c in 0..<n { m[col * n + c] /= d; inv[col * n + c] /= d }
            for r in 0..<n where r != col {
                let f = m[r * n + col]
                if f == 0 { continue }
                for c in 0..<n { m[r * n + c] -= f * m[col * n + c]; inv[r * n + c] -= f * inv[col * n + c] }
            }
        }
        return inv
    }
}

extension Cholesky {
    /// Solves the small SPD system A·x = b in place without allocating: A (n x n, row-major,
    /// lower triangle read) is overwritten by its factor and b by x. For the many f x f systems of
    /// alternating least squares. Throws when A is not positive definite.
    /// - Complexity: n³/3 + 2n² flops, in Double accumulation.
    public static func solveInPlace(_ a: UnsafeMutablePointer<Float>, n: Int, b: UnsafeMutablePointer<Float>) throws {
        try factor(a, n: n, ld: n, offset: 0, threads: 1)
        for i in 0..<n {   // L·y = b
            var s = Double(b[i])
            for p in 0..<i { s -= Double(a[i * n + p]) * Double(b[p]) }
            b[i] = Float(s / Double(a[i * n + i]))
        }
        for i in stride(from: n - 1, through: 0, by: -1) {   // Lᵀ·x = y
            var s = Double(b[i])
            for p in (i + 1)..<max(i + 1, n) { s -= Double(a[p * n + i]) * Double(b[p]) }
            b[i] = Float(s / Double(a[i * n + i]))
        }
    }
}

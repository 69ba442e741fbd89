/// Eigen-decomposition of a small symmetric matrix by cyclic Jacobi rotations (Golub & Van Loan,
/// §8.5), in Double: the basis of orthogonal Procrustes for OPQ. O(n³) per sweep; for n ≤ a few hundred.
public enum SymmetricEigen {
    /// Eigenvalues (unsorted) and eigenvectors as the columns of an n x n matrix, so that
    /// A = V·diag(λ)·Vᵀ. Only the symmetric part of `a` is used.
    public static func decompose(_ a: Matrix, sweeps: Int = 60) -> (values: [Double], vectors: [Double]) {
        decomposeDouble(a.values.map { Double($0) }, n: a.rows, sweeps: sweeps)
    }

    static func decomposeDouble(_ a: [Double], n: Int, sweeps: Int = 60) -> (values: [Double], vectors: [Double]) {
        var m = a
        for i in 0..<n { for j in (i + 1)..<max(i + 1, n) { let s = (m[i * n + j] + m[j * n + i]) / 2; m[i * n + j] = s; m[j * n + i] = s } }
        var v = [Double](repeating: 0, count: n * n)
        for i in 0..<n { v[i * n + i] = 1 }
        for _ in 0..<sweeps {
            var off = 0.0
            for i in 0..<n { for j in 0..<n where i != j { off += m[i * n + j] * m[i * n + j] } }
            var diagonal = 0.0
            for i in 0..<n { diagonal += m[i * n + i] * m[i * n + i] }
            if off <= 1e-24 * max(diagonal, 1e-300) { break }
            for p in 0..<n {
                for q in (p + 1)..<max(p + 1, n) where m[p * n + q] != 0 {
                    let theta = (m[q * n + q] - m[p * n + p]) / (2 * m[p * n + q])
                    let t = (theta >= 0 ? 1.0 : -1.0) / (abs(theta) + (theta * theta + 1).squareRoot())
                    let c = 1 / (t * t + 1).squareRoot(), s = t * c
                    for k in 0..<n {   // columns p, q of M
                        let mkp = m[k * n + p], mkq = m[k * n + q]
                        m[k * n + p] = c * mkp - s * mkq
                        m[k * n + q] = s * mkp + c * mkq
                    }
                    for k in 0..<n {   // rows p, q of M
                        let mpk = m[p * n + k], mqk = m[q * n + k]
                        m[p * n + k] = c * mpk - s * mqk
                        m[q * n + k] = s * mpk + c * mqk
                    }
                    for k in 0..<n {
                        let vkp = v[k * n + p], vkq = v[k * n + q]
                        v[k * n + p] = c * vkp - s * vkq
                        v[k * n + q] = s * vkp + c * vkq
                    }
                }
            }
        }
        return ((0..<n).map { m[$0 * n + $0] }, v)
    }

    /// The orthogonal matrix R nearest to M (polar factor): R = M·(MᵀM)^(-1/2) = U·Vᵀ for M = U·Σ·Vᵀ.
    /// It solves orthogonal Procrustes: for M = XᵀY, R minimises |X·R − Y|.
    public static func orthogonalPolarFactor(_ m: Matrix) -> Matrix {
        // All in Double: MᵀM squares M's condition number, which single precision cannot carry.
        let n = m.rows
        let md = m.values.map { Double($0) }
        var mtm = [Double](repeating: 0, count: n * n)
        for i in 0..<n { for j in 0..<n {
            var s = 0.0
            for k in 0..<m.rows { s += md[k * n + i] * md[k * n + j] }
            mtm[i * n + j] = s
        } }
        let (values, vectors) = decomposeDouble(mtm, n: n)
        let largest = values.max() ?? 1
        // (MᵀM)^(-1/2) = V·diag(1/√λ)·Vᵀ, tiny eigenvalues clamped.
        var inverseRoot = [Double](repeating: 0, count: n * n)
        for i in 0..<n { for j in 0..<n {
            var s = 0.0
            for k in 0..<n { s += vectors[i * n + k] / max(values[k], largest * 1e-14).squareRoot() * vectors[j * n + k] }
            inverseRoot[i * n + j] = s
        } }
        var r = Matrix(rows: n, columns: n)
        for i in 0..<n { for j in 0..<n {
            var s = 0.0
            for k in 0..<n { s += md[i * n + k] * inverseRoot[k * n + j] }
            r.values[i * n + j] = Float(s)
        } }
        return r
    }
}

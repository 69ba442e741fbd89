/// Optimized product quantisation, non-parametric (Ge, He, Ke & Sun, CVPR 2013 / TPAMI 2014): an
/// orthogonal rotation R learned so that the rotated vectors x·R quantise better, by alternating
/// (1) training and applying a product quantiser on X·R and (2) the orthogonal Procrustes step
/// R = argmin |X·R − Ŷ| over orthogonal R (Ŷ the reconstructions). A rotation preserves inner
/// products and distances, so an index on rotated vectors ranks exactly as on the originals.
public enum OPQ {
    /// Learns R (d x d) on at most `maxTrainingPoints` rows of `x`.
    public static func train(_ x: Matrix, subspaces: Int, iterations: Int = 6, pqIterations: Int = 4, seed: UInt64 = 42,
                             threads: Int = 0, maxTrainingPoints: Int = 32_768) throws -> Matrix {
        var g = SeededGenerator(seed: seed)
        let rows = Array(g.permutation(x.rows).prefix(maxTrainingPoints)).sorted()
        let sample = x.rows(at: rows)
        var rotation = Matrix.identity(x.columns)
        for it in 0..<iterations {
            let rotated = sample.multiplied(by: rotation, threads: threads)
            let pq = try ProductQuantizer.train(rotated, subspaces: subspaces, iterations: pqIterations, seed: seed &+ UInt64(it), threads: threads,
                                                maxTrainingPoints: maxTrainingPoints)
            let codes = pq.encode(rotated, threads: threads)
            var reconstructed = Matrix(rows: rotated.rows, columns: rotated.columns)
            for r in 0..<rotated.rows {
                let y = pq.decode(codes[(r * subspaces)..<((r + 1) * subspaces)])
                for c in 0..<rotated.columns { reconstructed.values[r * rotated.columns + c] = y[c] }
            }
            rotation = SymmetricEigen.orthogonalPolarFactor(sample.multiplied(by: reconstructed, transposeSelf: true, threads: threads))
        }
        return rotation
    }
}

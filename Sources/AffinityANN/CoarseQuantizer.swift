import AffinityLinalg

/// The k-means cells of an inverted-file index: trains the centroids, assigns vectors to cells and
/// ranks cells for a query. Shared by IVF-Flat and IVF-PQ.
///
/// With `mipsReduction` (inner product only) it clusters x' = [x, sqrt(M² − |x|²)] by L2 and ranks
/// cells for q' = [q, 0] by L2 (Bachrach et al., RecSys 2014); without it, inner-product cells are
/// assigned and ranked by inner product with the centroid (what FAISS does), L2/cosine by L2.
struct CoarseQuantizer: Sendable {
    /// lists x d' (d' = d + 1 with the reduction).
    let centroids: Matrix
    let centroidNorms: [Float]
    let mipsReduction: Bool
    /// M of the reduction (the largest norm), 0 without it.
    let maxNorm: Float
    let metric: Metric

    init(centroids: Matrix, mipsReduction: Bool, maxNorm: Float, metric: Metric) {
        self.centroids = centroids
        self.mipsReduction = mipsReduction
        self.maxNorm = maxNorm
        self.metric = metric
        centroidNorms = (0..<centroids.rows).map { Kernels.dot(Array(centroids.row($0)), Array(centroids.row($0))) }
    }

    /// Trains on `x` (already normalised for cosine) and returns the quantiser and each row's cell.
    static func train(_ x: Matrix, metric: Metric, settings: IVFSettings) throws -> (CoarseQuantizer, [Int32]) {
        guard settings.lists > 0, settings.lists <= max(1, x.rows) else {
            throw IndexError.invalidParameter("IVF needs 1...\(x.rows) lists for \(x.rows) vectors, got \(settings.lists)")
        }
        guard !settings.mipsReduction || metric == .innerProduct else {
            throw IndexError.invalidParameter("the MIPS reduction applies to inner-product indexes only")
        }
        let d = x.columns
        var maxNorm: Float = 0
        var space = x
        if settings.mipsReduction {
            let norms = (0..<x.rows).map { Kernels.dot(Array(x.row($0)), Array(x.row($0))) }
            maxNorm = norms.max().map { $0.squareRoot() } ?? 0
            space = Matrix(rows: x.rows, columns: d + 1)
            for r in 0..<x.rows {
                for c in 0..<d { space.values[r * (d + 1) + c] = x.values[r * d + c] }
                space.values[r * (d + 1) + d] = max(0, maxNorm * maxNorm - norms[r]).squareRoot()
            }
        }
        var g = SeededGenerator(seed: settings.seed)
        let sampleSize = min(x.rows, settings.lists * settings.trainingPointsPerList)
        let sampleRows = Array(g.permutation(x.rows).prefix(sampleSize)).sorted()
        var sample = Matrix(rows: sampleSize, columns: space.columns)
        for (k, r) in sampleRows.enumerated() {
            for c in 0..<space.columns { sample.values[k * space.columns + c] = space.values[r * space.columns + c] }
        }
        let km = try KMeans.fit(sample, settings: KMeansSettings(clusters: settings.lists, iterations: settings.iterations, seed: settings.seed, threads: settings.threads))
        let quantizer = CoarseQuantizer(centroids: km.centroids, mipsReduction: settings.mipsReduction, maxNorm: maxNorm, metric: metric)
        var assignment = [Int32](repeating: 0, count: x.rows)
        if quantizer.byL2 {
            _ = KMeans.assign(space, centroids: km.centroids, into: &assignment, threads: settings.threads)
        } else {
            assignment = ExactSearch.search(queries: x, base: km.centroids, k: 1, metric: .innerProduct, threads: settings.threads)
                .map { Int32($0.first?.index ?? 0) }
        }
        return (quantizer, assignment)
    }

    /// Whether cells are formed and ranked by L2 (reduction, L2 or cosine) rather than inner product.
    var byL2: Bool { mipsReduction || metric != .innerProduct }

    var lists: Int { centroids.rows }

    /// The `nprobe` best cells for a query (already normalised for cosine), best first.
    func rankCells(_ q: [Float], nprobe: Int) -> [Int] {
        var qc = q
        if mipsReduction { qc.append(0) }
        var scores = [Float](repeating: 0, count: centroids.rows)
        qc.withUnsafeBufferPointer { qp in
            centroids.values.withUnsafeBufferPointer { c in
                Kernels.dotRows(query: qp.baseAddress!, rows: c.baseAddress!, rowCount: centroids.rows, dimension: centroids.columns, into: &scores)
            }
        }
        var cells = TopKSelector(k: min(nprobe, centroids.rows))
        for c in 0..<centroids.rows { cells.push(index: c, score: byL2 ? 2 * scores[c] - centroidNorms[c] : scores[c]) }
        return cells.sortedResults().map(\.index)
    }

    /// Centroid c's coordinates in the original space (without the reduction's extra one).
    func centroid(_ c: Int, dimension: Int) -> ArraySlice<Float> {
        centroids.values[(c * centroids.columns)..<(c * centroids.columns + dimension)]
    }
}

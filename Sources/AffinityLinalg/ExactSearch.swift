import _AffinityKernels

/// The similarity a search ranks by; every score is "higher is better".
public enum Metric: String, Sendable, Codable, CaseIterable {
    /// Inner product q·x.
    case innerProduct = "ip"
    /// Negated squared Euclidean distance −|q − x|².
    case l2
    /// Cosine similarity (vectors normalised to unit length).
    case cosine = "cos"
}

/// Exact (brute-force) k-nearest-neighbour search: scores whole blocks of queries against blocks of
/// base rows with `sgemm` and feeds per-query bounded heaps through a SIMD threshold filter, as
/// FAISS's `IndexFlat` does above its GEMM threshold. Results are best first, ties to the smaller
/// id, never padded.
///
/// For L2 the GEMM runs on augmented vectors ([q, −½]·[x, |x|²] = q·x − |x|²/2, which ranks like
/// −|q − x|²), so no extra pass over the scores is needed; reported scores are the exact −|q − x|².
public enum ExactSearch {
    /// Queries per block (a multiple of every micro-kernel height) and base rows per block.
    static let queryBlock = 240, baseBlock = 1024

    public static func search(queries: Matrix, base: Matrix, k: Int, metric: Metric, threads: Int = 0) -> [[ScoredIndex]] {
        precondition(queries.columns == base.columns, "queries have dimension \(queries.columns), base \(base.columns)")
        guard k > 0, queries.rows > 0 else { return [[ScoredIndex]](repeating: [], count: queries.rows) }
        var q = queries, x = base
        switch metric {
        case .innerProduct: break
        case .cosine:
            q = normalizedRows(queries)
            x = normalizedRows(base)
        case .l2:
            q = augmented(queries) { _ in -0.5 }
            x = augmented(base) { row in Kernels.dot(Array(row), Array(row)) }
        }
        let dim = q.columns, nBase = x.rows, nQueries = q.rows
        let keep = min(k, nBase)
        var results = [[ScoredIndex]](repeating: [], count: nQueries)
        results.withUnsafeMutableBufferPointer { resultBuffer in
            let out = SharedMutableBuffer(resultBuffer)
            q.values.withUnsafeBufferPointer { qp in
                x.values.withUnsafeBufferPointer { xp in
                    let qb = UncheckedPointer(qp.baseAddress!), xb = UncheckedPointer(xp.baseAddress!)
                    Parallelism.forEachRange(nQueries, grain: queryBlock, threads: threads) { range in
                        var tile = [Float](repeating: 0, count: range.count * baseBlock)
                        var heapScores = [Float](repeating: 0, count: range.count * keep)
                        var heapIds = [Int64](repeating: 0, count: range.count * keep)
                        var counts = [Int](repeating: 0, count: range.count)
                        tile.withUnsafeMutableBufferPointer { t in
                            heapScores.withUnsafeMutableBufferPointer { hs in
                                heapIds.withUnsafeMutableBufferPointer { hi in
                                    counts.withUnsafeMutableBufferPointer { cn in
                                        var start = 0
                                        while start < nBase {
                                            let rows = min(baseBlock, nBase - start)
                                            sgemm(transposeB: true, m: range.count, n: rows, k: dim,
                                                  a: qb.base + range.lowerBound * dim, lda: dim, b: xb.base + start * dim, ldb: dim,
                                                  c: t.baseAddress!, ldc: rows, threads: 1)
                                            for r in 0..<range.count {
                                                _ = affinity_topk_push(t.baseAddress! + r * rows, rows, Int64(start),
                                                                       hs.baseAddress! + r * keep, hi.baseAddress! + r * keep, keep, cn.baseAddress! + r)
                                            }
                                            start += rows
                                        }
                                    }
                                }
                            }
                        }
                        for r in 0..<range.count {
                            var list = (0..<counts[r]).map { ScoredIndex(index: Int(heapIds[r * keep + $0]), score: heapScores[r * keep + $0]) }
                            list.sort { ScoredIndex.ranksBefore($0.score, $0.index, $1.score, $1.index) }
                            if metric == .l2 {
                                let query = queries.row(range.lowerBound + r)
                                let qq = Kernels.dot(Array(query), Array(query))
                                list = list.map { ScoredIndex(index: $0.index, score: -max(0, qq - 2 * $0.score)) }
                            }
                            out[range.lowerBound + r] = list
                        }
                    }
                }
            }
        }
        return results
    }

    /// Reference: score every pair with the plain kernels and sort (the oracle of `search`).
    public static func referenceSearch(queries: Matrix, base: Matrix, k: Int, metric: Metric) -> [[ScoredIndex]] {
        (0..<queries.rows).map { qi in
            let q = Array(queries.row(qi))
            let scores: [Float] = (0..<base.rows).map { bi in
                let x = Array(base.row(bi))
                switch metric {
                case .innerProduct: return Kernels.referenceDot(q, x)
                case .l2: return -Kernels.referenceSquaredL2(q, x)
                case .cosine:
                    let d = (Double(Kernels.referenceDot(q, q)) * Double(Kernels.referenceDot(x, x))).squareRoot()
                    return d > 0 ? Float(Double(Kernels.referenceDot(q, x)) / d) : 0
                }
            }
            return referenceTopK(scores, k: k)
        }
    }

    /// Rows scaled to unit length (zero rows stay zero).
    public static func normalizedRows(_ m: Matrix) -> Matrix {
        var out = m
        for r in 0..<m.rows {
            let row = Array(m.row(r))
            let norm = Kernels.dot(row, row).squareRoot()
            if norm > 0 { for c in 0..<m.columns { out.values[r * m.columns + c] = row[c] / norm } }
        }
        return out
    }

    static func augmented(_ m: Matrix, extra: (ArraySlice<Float>) -> Float) -> Matrix {
        var out = Matrix(rows: m.rows, columns: m.columns + 1)
        for r in 0..<m.rows {
            let row = m.row(r)
            for c in 0..<m.columns { out.values[r * (m.columns + 1) + c] = row[row.startIndex + c] }
            out.values[r * (m.columns + 1) + m.columns] = extra(row)
        }
        return out
    }
}

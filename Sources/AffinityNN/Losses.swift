import AffinityLinalg
import Foundation

/// A loss value with the gradients of its inputs.
public struct LossResult {
    public var loss: Float
    /// dL/d(first input), dL/d(second input), same shapes as the inputs.
    public var gradients: [Matrix]
}

/// Losses of retrieval training, each returning the mean loss over the batch and its gradients.
public enum Losses {
    /// Sampled softmax (InfoNCE) of queries against candidates: row i's positive is candidate
    /// `positives[i]`, every other candidate is a negative (in-batch: the candidates are the
    /// batch's own positives; extra rows act as further negatives).
    ///
    /// logit(i, j) = q_i·c_j / temperature − logQ[j]. With `logQ` (the log of each candidate's
    /// sampling probability, Yi et al. 2019) popular items, which appear as negatives more often,
    /// are penalised less, so probability moves toward rarer positives. With `candidateIDs`, a
    /// candidate carrying the same item as row i's positive (an accidental hit) is masked out.
    public static func sampledSoftmax(queries: Matrix, candidates: Matrix, positives: [Int], temperature: Float,
                                      logQ: [Float]? = nil, candidateIDs: [Int]? = nil, threads: Int = 0) -> LossResult {
        let b = queries.rows, c = candidates.rows, d = queries.columns
        precondition(candidates.columns == d && positives.count == b, "shapes differ")
        var logits = Matrix(rows: b, columns: c)
        queries.values.withUnsafeBufferPointer { q in
            candidates.values.withUnsafeBufferPointer { v in
                logits.values.withUnsafeMutableBufferPointer { l in
                    sgemm(transposeB: true, m: b, n: c, k: d, alpha: 1 / temperature, a: q.baseAddress!, lda: d,
                          b: v.baseAddress!, ldb: d, c: l.baseAddress!, ldc: c, threads: threads)
                }
            }
        }
        // Row-wise softmax and cross-entropy, rows in parallel (each row is written by one task).
        var rowLoss = [Float](repeating: 0, count: b)
        let logQValues = logQ ?? [], ids = candidateIDs ?? []
        let useLogQ = logQ != nil, mask = candidateIDs != nil
        precondition(logQ.map { $0.count == c } ?? true, "logQ has \(logQ?.count ?? 0) entries for \(c) candidates")
        precondition(candidateIDs.map { $0.count == c } ?? true, "\(candidateIDs?.count ?? 0) candidate IDs for \(c) candidates")
        logits.values.withUnsafeMutableBufferPointer { lp in
            rowLoss.withUnsafeMutableBufferPointer { rl in
                let l = SharedMutableBuffer(lp), losses = SharedMutableBuffer(rl)
                Parallelism.forEachRange(b, grain: 64, threads: threads) { range in
                    logQValues.withUnsafeBufferPointer { q in
                        ids.withUnsafeBufferPointer { idv in
                            for i in range {
                                let row = l.base.baseAddress! + i * c
                                let positive = positives[i]
                                if useLogQ { Kernels.addScaled(row, q.baseAddress!, count: c, by: -1) }
                                if mask {
                                    let positiveID = idv[positive]
                                    for j in 0..<c where j != positive && idv[j] == positiveID { row[j] = -.infinity }
                                }
                                let maxLogit = Kernels.maximum(row, count: c)
                                let positiveLogit = row[positive] - maxLogit
                                let sum = Kernels.expShifted(row, count: c, shift: maxLogit)
                                losses[i] = log(sum) - positiveLogit
                                // Gradient of the mean loss w.r.t. the logits: (softmax − onehot) / b.
                                let scale = 1 / (sum * Float(b))
                                Kernels.scale(row, count: c, by: scale)
                                row[positive] -= 1 / Float(b)
                            }
                        }
                    }
                }
            }
        }
        // dQ = dLogits·C / τ, dC = dLogitsᵀ·Q / τ.
        var dq = Matrix(rows: b, columns: d), dc = Matrix(rows: c, columns: d)
        logits.values.withUnsafeBufferPointer { g in
            candidates.values.withUnsafeBufferPointer { v in
                dq.values.withUnsafeMutableBufferPointer { out in
                    sgemm(m: b, n: d, k: c, alpha: 1 / temperature, a: g.baseAddress!, lda: c, b: v.baseAddress!, ldb: d,
                          c: out.baseAddress!, ldc: d, threads: threads)
                }
            }
            queries.values.withUnsafeBufferPointer { q in
                dc.values.withUnsafeMutableBufferPointer { out in
                    sgemm(transposeA: true, m: c, n: d, k: b, alpha: 1 / temperature, a: g.baseAddress!, lda: c,
                          b: q.baseAddress!, ldb: d, c: out.baseAddress!, ldc: d, threads: threads)
                }
            }
        }
        return LossResult(loss: rowLoss.reduce(0, +) / Float(b), gradients: [dq, dc])
    }

    /// BPR (Rendle et al. 2009): mean of −log σ(positive − negative) over pairs of scores.
    public static func bpr(positive: [Float], negative: [Float]) -> (loss: Float, dPositive: [Float], dNegative: [Float]) {
        let n = Float(positive.count)
        var loss: Float = 0
        var dp = [Float](repeating: 0, count: positive.count), dn = dp
        for i in positive.indices {
            let x = positive[i] - negative[i]
            loss += softplus(-x)
            let g = -sigmoid(-x) / n
            dp[i] = g
            dn[i] = -g
        }
        return (loss / n, dp, dn)
    }

    /// Triplet loss with a margin on similarity scores: mean of max(0, margin − positive + negative).
    public static func triplet(positive: [Float], negative: [Float], margin: Float) -> (loss: Float, dPositive: [Float], dNegative: [Float]) {
        let n = Float(positive.count)
        var loss: Float = 0
        var dp = [Float](repeating: 0, count: positive.count), dn = dp
        for i in positive.indices {
            let v = margin - positive[i] + negative[i]
            if v > 0 {
                loss += v
                dp[i] = -1 / n
                dn[i] = 1 / n
            }
        }
        return (loss / n, dp, dn)
    }

    /// Binary cross-entropy on logits: mean of softplus(x) − y·x; gradient (σ(x) − y)/n.
    public static func binaryCrossEntropy(logits: [Float], labels: [Float]) -> (loss: Float, dLogits: [Float]) {
        let n = Float(logits.count)
        var loss: Float = 0
        var d = [Float](repeating: 0, count: logits.count)
        for i in logits.indices {
            loss += softplus(logits[i]) - labels[i] * logits[i]
            d[i] = (sigmoid(logits[i]) - labels[i]) / n
        }
        return (loss / n, d)
    }

    @inline(__always) static func sigmoid(_ x: Float) -> Float { x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x)) }
    @inline(__always) static func softplus(_ x: Float) -> Float { x > 20 ? x : log1p(exp(x)) }
}

/// Row-wise dot products of two equally shaped matrices, and their gradients.
public enum RowDot {
    public static func forward(_ a: Matrix, _ b: Matrix) -> [Float] {
        precondition(a.rows == b.rows && a.columns == b.columns, "shapes differ")
        let d = a.columns
        return (0..<a.rows).map { r in
            var s: Float = 0
            for k in 0..<d { s += a.values[r * d + k] * b.values[r * d + k] }
            return s
        }
    }

    /// Given dL/d(score) per row: (dL/da, dL/db).
    public static func backward(_ a: Matrix, _ b: Matrix, _ dScore: [Float]) -> (Matrix, Matrix) {
        let d = a.columns
        var da = a, db = b
        for r in 0..<a.rows {
            for k in 0..<d {
                da.values[r * d + k] = dScore[r] * b.values[r * d + k]
                db.values[r * d + k] = dScore[r] * a.values[r * d + k]
            }
        }
        return (da, db)
    }
}

import AffinityLinalg
import Foundation
import Testing

@testable import AffinityNN

@Suite struct LossBehaviourTests {
    /// The logQ sign: in a batch where one popular item is most rows' positive, the correction must
    /// move probability toward the rarer positives (their log q is more negative, so subtracting it
    /// raises their logits), never away.
    @Test func logQCorrectionFavoursLessPopularPositives() {
        // Six rows: items 0 (popular, 4 rows) and 1, 2 (rare, one row each). Identical queries and
        // candidates make the logits equal, so only the correction separates the items.
        let q = Matrix(rows: 6, columns: 2, values: [Float](repeating: 0.5, count: 12))
        let c = q
        let ids = [0, 0, 0, 0, 1, 2]
        let frequency: [Float] = [0.8, 0.1, 0.1]
        let logQ = ids.map { log(frequency[$0]) }
        // The softmax probability of a row's own positive, with or without the correction.
        func positiveProbability(row: Int, corrected: Bool) -> Float {
            var logits = (0..<6).map { j -> Float in (0..<2).reduce(Float(0)) { $0 + q[row, $1] * c[j, $1] } }
            if corrected { for j in 0..<6 { logits[j] -= logQ[j] } }
            let m = logits.max()!
            let e = logits.map { exp($0 - m) }
            return e[row] / e.reduce(0, +)
        }
        // Row 4's positive is the rare item 1 (1/6 without the correction): the correction raises it;
        // row 0's positive is the popular item 0: the correction lowers it.
        #expect(positiveProbability(row: 4, corrected: true) > positiveProbability(row: 4, corrected: false))
        #expect(positiveProbability(row: 0, corrected: true) < positiveProbability(row: 0, corrected: false))
        // The loss function applies the same sign: a batch whose positives are all the rare item gets
        // an easier (lower) loss with the correction, one whose positives are all the popular item a harder one.
        let rare = [Int](repeating: 4, count: 6), popular = [Int](repeating: 0, count: 6)
        func loss(_ positives: [Int], _ correct: Bool) -> Float {
            Losses.sampledSoftmax(queries: q, candidates: c, positives: positives, temperature: 1, logQ: correct ? logQ : nil, threads: 1).loss
        }
        #expect(loss(rare, true) < loss(rare, false))
        #expect(loss(popular, true) > loss(popular, false))
    }

    /// What the correction does to the learned scores. In-batch negatives are drawn in proportion to
    /// popularity, so without the correction a popular item is pushed down far more often than the
    /// full softmax would push it. With logQ the training logits of rare positives already carry
    /// +|log q|, so their raw scores need to rise less: after training, the raw (inference) score
    /// margin of a rare positive over the popular item is smaller with the correction, i.e. the
    /// popularity bias of in-batch sampling is undone rather than baked in.
    @Test func logQTrainingPushesTowardRarePositives() {
        func train(logQ: Bool) -> Float {
            let users = Embedding(count: 8, dimension: 4, seed: 1)
            let items = Embedding(count: 3, dimension: 4, seed: 2)
            let frequency: [Float] = [0.75, 0.125, 0.125]
            let opt = Adam(learningRate: 0.05)
            for _ in 0..<60 {
                let batchUsers = Array(0..<8)
                let batchItems = batchUsers.map { $0 < 6 ? 0 : $0 - 5 }   // six rows of item 0, then items 1 and 2
                users.table.zeroGrad(); items.table.zeroGrad()
                let u = users.forward(batchUsers), v = items.forward(batchItems)
                let r = Losses.sampledSoftmax(queries: u, candidates: v, positives: Array(0..<8), temperature: 1,
                                              logQ: logQ ? batchItems.map { log(frequency[$0]) } : nil,
                                              candidateIDs: batchItems, threads: 1)
                users.backward(r.gradients[0]); items.backward(r.gradients[1])
                opt.step([users.table, items.table])
            }
            // Probability of user 6's own (rare) item among the three items.
            let u6 = users.forward([6]), all = items.forward([0, 1, 2])
            let s = (0..<3).map { j in (0..<4).reduce(Float(0)) { $0 + u6[0, $1] * all[j, $1] } }
            let e = s.map { exp($0 - s.max()!) }
            return e[1] / e.reduce(0, +)
        }
        let corrected = train(logQ: true), plain = train(logQ: false)
        #expect(corrected < plain, "P(rare positive) with logQ \(corrected), without \(plain)")
    }

    @Test func accidentalHitsAreMasked() {
        // Rows 0 and 1 share item 7: without masking, row 0's loss counts its own item as a negative.
        let q = Matrix.random(rows: 3, columns: 4, seed: 1)
        let c = Matrix(rows: 3, columns: 4, values: Array(q.values[0..<4]) + Array(q.values[0..<4]) + Array(q.values[8..<12]))
        let masked = Losses.sampledSoftmax(queries: q, candidates: c, positives: [0, 1, 2], temperature: 0.1, candidateIDs: [7, 7, 9], threads: 1)
        let unmasked = Losses.sampledSoftmax(queries: q, candidates: c, positives: [0, 1, 2], temperature: 0.1, threads: 1)
        #expect(masked.loss < unmasked.loss)
    }
}

@Suite struct OptimizerTests {
    /// Each optimiser drives a small quadratic to its minimum.
    @Test func optimisersMinimiseAQuadratic() {
        let target: [Float] = [1, -2, 0.5, 3]
        let optimisers: [any Optimizer] = [Adam(learningRate: 0.1), Adam(learningRate: 0.1, weightDecay: 0.001), Adagrad(learningRate: 0.5), SGD(learningRate: 0.1), SGD(learningRate: 0.05, momentum: 0.9)]
        for opt in optimisers {
            let p = Parameter("w", value: Matrix(rows: 1, columns: 4))
            for _ in 0..<500 {
                p.zeroGrad()
                for i in 0..<4 { p.grad.values[i] = 2 * (p.value.values[i] - target[i]) }
                opt.step([p])
            }
            for i in 0..<4 { #expect(abs(p.value.values[i] - target[i]) < 0.05, "\(type(of: opt)) \(p.value.values)") }
        }
    }

    @Test func lazyUpdatesTouchOnlyTheBatchRows() {
        let table = Parameter("table", value: Matrix.random(rows: 5, columns: 2, seed: 1), rowSparse: true)
        let before = table.value
        let opt = Adam(learningRate: 0.1, weightDecay: 0.01)
        table.touch(3)
        table.grad.values[6] = 1
        table.grad.values[7] = -1
        opt.step([table])
        for r in 0..<5 {
            let changed = table.value.row(r) != before.row(r)
            #expect(changed == (r == 3), "row \(r)")
        }
        table.zeroGrad()
        #expect(table.touchedRows.isEmpty && table.grad.values.allSatisfy { $0 == 0 })
    }

    @Test func clippingAndSchedules() {
        let p = Parameter("w", value: Matrix(rows: 1, columns: 2))
        p.grad.values = [3, 4]
        #expect(clipGradientNorm([p], maxNorm: 1) == 5)
        #expect(abs(p.grad.values[0] - 0.6) < 1e-6 && abs(p.grad.values[1] - 0.8) < 1e-6)
        #expect(clipGradientNorm([p], maxNorm: 10) == 1)
        let s = LearningRateSchedule.warmupCosine(warmup: 10, total: 110, floor: 0.1)
        #expect(abs(s.rate(base: 1, step: 0) - 0.1) < 1e-6)
        #expect(abs(s.rate(base: 1, step: 9) - 1) < 1e-6)
        #expect(abs(s.rate(base: 1, step: 60) - 0.55) < 1e-3)
        #expect(abs(s.rate(base: 1, step: 110) - 0.1) < 1e-6)
        #expect(LearningRateSchedule.linearDecay(total: 4).rate(base: 2, step: 1) == 1.5)
        #expect(LearningRateSchedule.constant.rate(base: 0.3, step: 99) == 0.3)
    }
}

@Suite struct ParallelAdamTests {
    /// A dense table large enough for the parallel update (≥ 65,536 weights) gets the same bits on
    /// one thread and two, with the Swift twin of the step as the oracle.
    @Test func denseUpdateIsTheSameOnOneAndTwoThreads() {
        let rows = 300, columns = 256
        func run(threads: Int) -> [Float] {
            let p = Parameter("w", value: Matrix.random(rows: rows, columns: columns, seed: 5))
            let adam = Adam(learningRate: 0.01, weightDecay: 0.02, lazy: false, threads: threads)
            for step in 1...3 {
                p.grad = Matrix.random(rows: rows, columns: columns, seed: UInt64(10 + step))
                adam.step([p])
            }
            return p.value.values
        }
        var w = Matrix.random(rows: rows, columns: columns, seed: 5).values
        var m = [Float](repeating: 0, count: w.count), v = m
        for step in 1...3 {
            let s = Kernels.AdamStep(learningRate: 0.01, beta1: 0.9, beta2: 0.999, correction1: 1 - pow(0.9, Float(step)),
                                     correction2: 1 - pow(0.999, Float(step)), epsilon: 1e-8, weightDecay: 0.02)
            Kernels.referenceAdam(weights: &w, gradients: Matrix.random(rows: rows, columns: columns, seed: UInt64(10 + step)).values,
                                  m: &m, v: &v, step: s)
        }
        let one = run(threads: 1), two = run(threads: 2)
        #expect(one == two)
        #expect(one == w)
    }
}

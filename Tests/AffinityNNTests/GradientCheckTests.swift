import AffinityLinalg
import Testing

@testable import AffinityNN

/// Central finite differences: (f(x + h) − f(x − h)) / 2h for selected coordinates of `values`.
/// `f` evaluates the loss at the values it is given.
func numericGradient(_ values: [Float], at indices: [Int], h: Float = 1e-2, _ f: ([Float]) -> Float) -> [Float] {
    indices.map { i in
        var v = values
        v[i] = values[i] + h
        let plus = f(v)
        v[i] = values[i] - h
        let minus = f(v)
        return (plus - minus) / (2 * h)
    }
}

func expectClose(_ analytic: [Float], _ numeric: [Float], _ what: String, tolerance: Float = 2e-2,
                 sourceLocation: SourceLocation = #_sourceLocation) {
    for (a, n) in zip(analytic, numeric) {
        #expect(abs(a - n) <= tolerance * max(abs(a), abs(n)) + 2e-3, "\(what): analytic \(a) vs numeric \(n)", sourceLocation: sourceLocation)
    }
}

/// Some coordinates of an array of `count` values (all when small).
func sample(_ count: Int, _ n: Int = 24, seed: UInt64 = 5) -> [Int] {
    if count <= n { return Array(0..<count) }
    var g = SeededGenerator(seed: seed)
    return (0..<n).map { _ in g.next(below: count) }
}

/// Checks dL/dx and dL/dθ of a layer for L = Σ r ⊙ layer(x), r fixed and random.
func checkLayer(_ layer: any Layer, input: Matrix, what: String, sourceLocation: SourceLocation = #_sourceLocation) {
    let x = input
    let y = layer.forward(x, training: false)
    let r = Matrix.random(rows: y.rows, columns: y.columns, seed: 77)
    func loss(_ input: Matrix) -> Float {
        let out = layer.forward(input, training: false)
        return zip(out.values, r.values).reduce(0) { $0 + $1.0 * $1.1 }
    }
    for p in layer.parameters { p.zeroGrad() }
    _ = layer.forward(x, training: false)
    let dx = layer.backward(r)
    let idx = sample(x.values.count)
    let numericX = numericGradient(x.values, at: idx) { loss(Matrix(rows: x.rows, columns: x.columns, values: $0)) }
    expectClose(idx.map { dx.values[$0] }, numericX, "\(what) dx", sourceLocation: sourceLocation)
    for p in layer.parameters {
        let analytic = p.grad.values, saved = p.value
        let pi = sample(p.value.values.count)
        let numeric = numericGradient(saved.values, at: pi) { v in
            p.value = Matrix(rows: saved.rows, columns: saved.columns, values: v)
            return loss(x)
        }
        p.value = saved
        expectClose(pi.map { analytic[$0] }, numeric, "\(what) d\(p.name)", sourceLocation: sourceLocation)
    }
}

@Suite struct GradientCheckTests {
    let x = Matrix.random(rows: 5, columns: 6, seed: 1)

    @Test func linear() { checkLayer(Linear(6, 4, seed: 3, threads: 1), input: x, what: "Linear") }

    @Test func relu() {
        // Inputs away from the kink at 0.
        var away = x
        for i in away.values.indices { away.values[i] += away.values[i] >= 0 ? 0.2 : -0.2 }
        checkLayer(ReLU(), input: away, what: "ReLU")
    }

    @Test func gelu() { checkLayer(GELU(), input: x, what: "GELU") }

    @Test func layerNorm() {
        let ln = LayerNorm(6)
        ln.gamma.value = Matrix.random(rows: 1, columns: 6, seed: 4)
        ln.beta.value = Matrix.random(rows: 1, columns: 6, seed: 5)
        checkLayer(ln, input: x, what: "LayerNorm")
    }

    @Test func l2Normalize() { checkLayer(L2Normalize(), input: x, what: "L2Normalize") }

    @Test func towerStack() {
        let tower = Sequential([Linear(6, 8, seed: 1, threads: 1), ReLU(), Linear(8, 4, seed: 2, threads: 1), LayerNorm(4), L2Normalize()])
        checkLayer(tower, input: x, what: "Linear-ReLU-Linear-LayerNorm-L2")
    }

    @Test func dropoutScalesKeptUnitsAndPassesGradientThroughThem() {
        let d = Dropout(0.5, seed: 1)
        let y = d.forward(x, training: true)
        let dy = Matrix.random(rows: x.rows, columns: x.columns, seed: 2)
        let dx = d.backward(dy)
        var dropped = 0
        for i in x.values.indices {
            if y.values[i] == 0 { dropped += 1; #expect(dx.values[i] == 0) } else {
                #expect(abs(y.values[i] - 2 * x.values[i]) < 1e-6)
                #expect(abs(dx.values[i] - 2 * dy.values[i]) < 1e-6)
            }
        }
        #expect(dropped > 5 && dropped < 25)
        #expect(d.forward(x, training: false) == x)
    }

    @Test func embeddingAndMeanPooling() {
        let e = Embedding(count: 7, dimension: 3, seed: 1)
        let ids = [2, 5, 2, 0]
        let r = Matrix.random(rows: ids.count, columns: 3, seed: 8)
        let saved = e.table.value
        func withTable(_ v: [Float], _ f: () -> Matrix, _ weights: Matrix) -> Float {
            e.table.value = Matrix(rows: 7, columns: 3, values: v)
            defer { e.table.value = saved }
            return zip(f().values, weights.values).reduce(0) { $0 + $1.0 * $1.1 }
        }
        e.table.zeroGrad()
        _ = e.forward(ids)
        e.backward(r)
        #expect(Set(e.table.touchedRows) == [0, 2, 5])
        let all = Array(0..<21)
        expectClose(e.table.grad.values, numericGradient(saved.values, at: all) { withTable($0, { e.forward(ids) }, r) }, "Embedding")

        let bags = [[1, 3], [6], [], [3, 3, 4]]
        let rb = Matrix.random(rows: bags.count, columns: 3, seed: 9)
        e.table.zeroGrad()
        _ = e.bag(bags)
        e.bagBackward(rb)
        expectClose(e.table.grad.values, numericGradient(saved.values, at: all) { withTable($0, { e.bag(bags) }, rb) }, "mean pooling")
        #expect(e.bag([[]]).values == [0, 0, 0])
    }

    @Test(arguments: [false, true])
    func sampledSoftmaxWithLogQAndMasking(withExtras: Bool) {
        let q = Matrix.random(rows: 4, columns: 3, seed: 1)
        let c = Matrix.random(rows: withExtras ? 6 : 4, columns: 3, seed: 2)
        let positives = [0, 1, 2, 3]
        let ids = withExtras ? [10, 11, 10, 12, 13, 11] : [10, 11, 10, 12]   // rows 0 and 2 share item 10
        let logQ: [Float] = withExtras ? [-1, -2, -1, -3, -0.5, -2] : [-1, -2, -1, -3]
        func loss(_ q: Matrix, _ c: Matrix) -> Float {
            Losses.sampledSoftmax(queries: q, candidates: c, positives: positives, temperature: 0.5, logQ: logQ, candidateIDs: ids, threads: 1).loss
        }
        let r = Losses.sampledSoftmax(queries: q, candidates: c, positives: positives, temperature: 0.5, logQ: logQ, candidateIDs: ids, threads: 1)
        let qi = Array(q.values.indices), ci = Array(c.values.indices)
        expectClose(r.gradients[0].values, numericGradient(q.values, at: qi) { loss(Matrix(rows: q.rows, columns: 3, values: $0), c) }, "InfoNCE dQ")
        expectClose(r.gradients[1].values, numericGradient(c.values, at: ci) { loss(q, Matrix(rows: c.rows, columns: 3, values: $0)) }, "InfoNCE dC")
    }

    @Test func pairwiseLosses() {
        let p: [Float] = [0.3, -0.2, 1.1, 0.05], n: [Float] = [0.1, 0.4, -0.5, 0.9]
        let four = [0, 1, 2, 3]
        let bpr = Losses.bpr(positive: p, negative: n)
        expectClose(bpr.dPositive, numericGradient(p, at: four) { Losses.bpr(positive: $0, negative: n).loss }, "BPR dPos")
        expectClose(bpr.dNegative, numericGradient(n, at: four) { Losses.bpr(positive: p, negative: $0).loss }, "BPR dNeg")
        // Triplet: margin 0.5; pairs chosen away from the hinge.
        let t = Losses.triplet(positive: p, negative: n, margin: 0.5)
        expectClose(t.dPositive, numericGradient(p, at: four, h: 1e-3) { Losses.triplet(positive: $0, negative: n, margin: 0.5).loss }, "triplet dPos")
        expectClose(t.dNegative, numericGradient(n, at: four, h: 1e-3) { Losses.triplet(positive: p, negative: $0, margin: 0.5).loss }, "triplet dNeg")
        let logits: [Float] = [0.3, -2, 4, 0]
        let labels: [Float] = [1, 0, 0, 1]
        let bce = Losses.binaryCrossEntropy(logits: logits, labels: labels)
        expectClose(bce.dLogits, numericGradient(logits, at: four) { Losses.binaryCrossEntropy(logits: $0, labels: labels).loss }, "BCE")
        let a = Matrix.random(rows: 3, columns: 4, seed: 1), b = Matrix.random(rows: 3, columns: 4, seed: 2)
        let ds: [Float] = [0.5, -1, 2]
        let (da, db) = RowDot.backward(a, b, ds)
        func dotLoss(_ a: Matrix, _ b: Matrix) -> Float { zip(RowDot.forward(a, b), ds).reduce(0) { $0 + $1.0 * $1.1 } }
        expectClose(da.values, numericGradient(a.values, at: Array(0..<12)) { dotLoss(Matrix(rows: 3, columns: 4, values: $0), b) }, "RowDot da")
        expectClose(db.values, numericGradient(b.values, at: Array(0..<12)) { dotLoss(a, Matrix(rows: 3, columns: 4, values: $0)) }, "RowDot db")
    }
}

import AffinityLinalg
import Foundation
import Testing
@testable import AffinityNN

/// `infer` computes what `forward(training: false)` does and leaves the layer as it was, so a
/// trained network answers many threads at once (issue "Hardening", defect 11).
@Suite struct StatelessInferenceTests {
    func layers() -> [any Layer] {
        [Linear(6, 5, seed: 1), ReLU(), GELU(), LayerNorm(6), Dropout(0.3, seed: 2), L2Normalize(),
         Sequential([Linear(6, 8, seed: 3), ReLU(), Linear(8, 6, seed: 4), LayerNorm(6)])]
    }

    @Test func inferEqualsForwardAtInference() {
        let x = Matrix.random(rows: 4, columns: 6, seed: 9)
        for layer in layers() {
            #expect(layer.infer(x).values == layer.forward(x, training: false).values, "\(type(of: layer))")
        }
    }

    /// A backward pass after an `infer` on other inputs is the backward pass of the training
    /// forward: `infer` did not overwrite the caches.
    @Test func inferLeavesTheTrainingCachesAlone() {
        let x = Matrix.random(rows: 4, columns: 6, seed: 9), other = Matrix.random(rows: 7, columns: 6, seed: 10)
        for (a, b) in zip(layers(), layers()) {
            let ya = a.forward(x, training: true), yb = b.forward(x, training: true)
            let dy = Matrix.random(rows: ya.rows, columns: ya.columns, seed: 11)
            _ = a.infer(other)
            #expect(a.backward(dy).values == b.backward(dy).values, "\(type(of: a))")
            #expect(ya.values == yb.values)
        }
    }

    @Test func embeddingLookupsKeepNothing() {
        let a = Embedding(count: 10, dimension: 4, seed: 1), b = Embedding(count: 10, dimension: 4, seed: 1)
        _ = a.forward([1, 2]); _ = b.forward([1, 2])
        _ = a.bag([[3, 4]]); _ = b.bag([[3, 4]])
        #expect(a.lookup([7, 8]).values == b.forward([7, 8]).values)
        #expect(a.pooled([[5, 6, 9]]).values == b.bag([[5, 6, 9]]).values)
        _ = b.forward([1, 2]); _ = b.bag([[3, 4]])
        let dy = Matrix.random(rows: 2, columns: 4, seed: 5)
        a.backward(dy); b.backward(dy)
        a.bagBackward(Matrix.random(rows: 1, columns: 4, seed: 6)); b.bagBackward(Matrix.random(rows: 1, columns: 4, seed: 6))
        #expect(a.table.grad.values == b.table.grad.values)
    }
}

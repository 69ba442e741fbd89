import AffinityLinalg
import Foundation
import Testing

@testable import AffinityNN

/// The ranker's objectives: finite differences for the deterministic ones, and for the policy
/// gradient the property it exists for (following it puts the relevant items on top).
@Suite struct RankingLossTests {
    let scores: [Float] = [0.3, -1.2, 0.8, 2.1, -0.4, 0.05, 1.3, -2.0]
    let labels: [Float] = [1, 0, 0, 1, 0, 1, 0, 0]

    func check(_ loss: RankingLoss) {
        var g = SeededGenerator(seed: 1)
        let analytic = RankingLosses.evaluate(loss, scores: scores, labels: labels, relevant: 4, cutoff: 5, generator: &g).gradient
        let numeric = numericGradient(scores, at: Array(scores.indices), h: 1e-3) { s in
            var g = SeededGenerator(seed: 1)
            return RankingLosses.evaluate(loss, scores: s, labels: labels, relevant: 4, cutoff: 5, generator: &g).loss
        }
        expectClose(analytic, numeric, loss.rawValue)
    }

    @Test func bceGradientMatchesFiniteDifferences() { check(.bce) }
    @Test func bprGradientMatchesFiniteDifferences() { check(.bpr) }
    @Test func softmaxGradientMatchesFiniteDifferences() { check(.softmax) }
    /// The ΔNDCG weights are constant while the order holds (h = 1e-3 keeps it here).
    @Test func lambdaGradientMatchesFiniteDifferences() { check(.lambda) }

    @Test func lambdaWeighsPairsByTheirNDCGChange() {
        // K = 2, the one positive at rank 4: swapping it with the negatives at ranks 1 and 2 would
        // change NDCG@2, swapping it with the one at rank 3 would not (both stay past K).
        let r = RankingLosses.lambda(scores: [3, 2, 1, 0], labels: [0, 0, 0, 1], relevant: 1, cutoff: 2)
        #expect(r.gradient[2] == 0)
        #expect(r.gradient[0] > r.gradient[1] && r.gradient[1] > 0)   // rank 1 weighs 1, rank 2 weighs 1/log2(3)
        #expect(r.gradient[3] < 0)                                     // the positive is pushed up
    }

    @Test func listsWithoutAPositiveOrANegativeTeachNothing() {
        var g = SeededGenerator(seed: 2)
        for loss in RankingLoss.allCases where loss != .bce {
            for y in [[Float](repeating: 0, count: 4), [Float](repeating: 1, count: 4)] {
                let r = RankingLosses.evaluate(loss, scores: [1, 2, 3, 4], labels: y, relevant: 4, cutoff: 3, generator: &g)
                #expect(r.loss == 0 && r.gradient.allSatisfy { $0 == 0 }, "\(loss)")
            }
        }
    }

    /// REINFORCE with NDCG@3 as the reward: gradient steps on the scores alone bring the two
    /// relevant items from the bottom to the top two places.
    @Test func thePolicyGradientRaisesTheMetric() {
        var s: [Float] = [2, 1.5, 1, 0.5, 0, -0.5, -1, -1.5]
        let y: [Float] = [0, 0, 0, 0, 0, 0, 1, 1]
        var g = SeededGenerator(seed: 3)
        for _ in 0..<300 {
            let r = RankingLosses.policy(scores: s, labels: y, relevant: 2, cutoff: 3, samples: 16, generator: &g)
            for i in s.indices { s[i] -= 0.5 * r.gradient[i] }
        }
        let top = s.indices.sorted { s[$0] > s[$1] }.prefix(2)
        #expect(Set(top) == [6, 7], "scores \(s)")
    }

    /// Its expected gradient is that of the expected NDCG: averaged over many seeds it points the
    /// same way as the finite-difference gradient of the exact expected reward of a 3-item list.
    @Test func thePolicyGradientIsUnbiasedOnASmallList() {
        let s: [Float] = [0.4, -0.2, 0.1]
        let y: [Float] = [0, 1, 0]
        // Exact expected NDCG@1 = P(item 1 first) = softmax(s)[1].
        func expected(_ s: [Float]) -> Float {
            let e = s.map { Foundation.exp(Double($0)) }
            return Float(e[1] / e.reduce(0, +))
        }
        let numeric = numericGradient(s, at: [0, 1, 2], h: 1e-3) { -expected($0) }
        var mean = [Float](repeating: 0, count: 3)
        var g = SeededGenerator(seed: 4)
        let runs = 4000
        for _ in 0..<runs {
            let r = RankingLosses.policy(scores: s, labels: y, relevant: 1, cutoff: 1, samples: 8, generator: &g)
            for i in 0..<3 { mean[i] += r.gradient[i] / Float(runs) }
        }
        for i in 0..<3 { #expect(abs(mean[i] - numeric[i]) < 0.02, "coordinate \(i): \(mean[i]) vs \(numeric[i])") }
    }
}

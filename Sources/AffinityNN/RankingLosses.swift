import AffinityLinalg
import Foundation

/// The objective a ranker is trained with, over one list of candidates at a time.
public enum RankingLoss: String, Codable, Sendable, CaseIterable {
    /// Pointwise binary cross-entropy of each candidate's logit against its label.
    case bce
    /// Pairwise BPR (Rendle et al. 2009): −log σ(s⁺ − s⁻) over every (positive, negative) pair of the list.
    case bpr
    /// Listwise softmax cross-entropy (ListNet's top-one form, Cao et al. 2007) with the target
    /// spread evenly over the list's positives.
    case softmax
    /// Pairs weighted by the NDCG change of swapping them in the current order (LambdaRank,
    /// Burges 2010; the NDCG-weighted pairwise logistic loss of LambdaLoss, Wang et al. 2018).
    case lambda
    /// The metric as the reward: a Plackett-Luce policy over the list (softmax without replacement),
    /// trained by REINFORCE (Williams 1992) with NDCG@K of sampled rankings as the reward and the
    /// mean reward of the other samples as the baseline. Rec-R1's idea: optimise the task metric
    /// itself, not a surrogate.
    case policy
}

/// One candidate list's loss and the gradient of that loss with respect to each candidate's score.
///
/// Every loss is for one user's list: `scores` (n) and binary `labels` (n), plus `relevant`, the
/// number of relevant items the user has in all (at least the positives of the list: items the
/// retrievers missed still count in NDCG's ideal), and the cutoff K that NDCG-based losses use.
/// For the pairwise and listwise losses, lists without a positive or without a negative give 0 and
/// a zero gradient (nothing to learn); BCE still pushes every label's logit its way.
public enum RankingLosses {
    public static func evaluate(_ loss: RankingLoss, scores: [Float], labels: [Float], relevant: Int, cutoff: Int,
                                samples: Int = 16, generator: inout SeededGenerator) -> (loss: Float, gradient: [Float]) {
        precondition(scores.count == labels.count, "scores and labels differ in length")
        switch loss {
        case .bce:
            guard !scores.isEmpty else { return (0, []) }
            let r = Losses.binaryCrossEntropy(logits: scores, labels: labels)
            return (r.loss, r.dLogits)
        case .bpr: return bpr(scores: scores, labels: labels)
        case .softmax: return softmax(scores: scores, labels: labels)
        case .lambda: return lambda(scores: scores, labels: labels, relevant: relevant, cutoff: cutoff)
        case .policy: return policy(scores: scores, labels: labels, relevant: relevant, cutoff: cutoff, samples: samples, generator: &generator)
        }
    }

    /// Mean over positive-negative pairs of softplus(s⁻ − s⁺).
    public static func bpr(scores: [Float], labels: [Float]) -> (loss: Float, gradient: [Float]) {
        let positives = scores.indices.filter { labels[$0] > 0 }, negatives = scores.indices.filter { labels[$0] <= 0 }
        var gradient = [Float](repeating: 0, count: scores.count)
        guard !positives.isEmpty && !negatives.isEmpty else { return (0, gradient) }
        let pairs = Float(positives.count * negatives.count)
        var loss: Float = 0
        for p in positives {
            for n in negatives {
                let x = scores[n] - scores[p]
                loss += Losses.softplus(x)
                let g = Losses.sigmoid(x) / pairs
                gradient[n] += g
                gradient[p] -= g
            }
        }
        return (loss / pairs, gradient)
    }

    /// −Σ_p (1/|P|) log softmax(s)_p; gradient softmax(s) − target.
    public static func softmax(scores: [Float], labels: [Float]) -> (loss: Float, gradient: [Float]) {
        let positives = scores.indices.filter { labels[$0] > 0 }
        var gradient = [Float](repeating: 0, count: scores.count)
        guard !positives.isEmpty && positives.count < scores.count else { return (0, gradient) }
        let top = scores.max()!
        var sum: Double = 0
        for s in scores { sum += Foundation.exp(Double(s - top)) }
        let logSum = Double(top) + Foundation.log(sum)
        let target = 1 / Double(positives.count)
        var loss = 0.0
        for p in positives { loss -= target * (Double(scores[p]) - logSum) }
        for i in scores.indices { gradient[i] = Float(Foundation.exp(Double(scores[i]) - logSum)) }
        for p in positives { gradient[p] -= Float(target) }
        return (Float(loss), gradient)
    }

    /// Σ over (positive i, negative j) of |ΔNDCG@K(i, j)| · softplus(s_j − s_i), divided by the number
    /// of pairs; ΔNDCG is that of swapping i and j in the order of the current scores (ties to the
    /// smaller index), with the ideal DCG of `relevant` items. A pair that both lies beyond K weighs
    /// 0: swapping it changes nothing in the list that is shown.
    public static func lambda(scores: [Float], labels: [Float], relevant: Int, cutoff: Int) -> (loss: Float, gradient: [Float]) {
        let n = scores.count
        var gradient = [Float](repeating: 0, count: n)
        let positives = scores.indices.filter { labels[$0] > 0 }, negatives = scores.indices.filter { labels[$0] <= 0 }
        guard !positives.isEmpty && !negatives.isEmpty else { return (0, gradient) }
        let order = scores.indices.sorted { ScoredIndex.ranksBefore(scores[$0], $0, scores[$1], $1) }
        var rank = [Int](repeating: 0, count: n)
        for (r, i) in order.enumerated() { rank[i] = r }
        let ideal = idealDCG(relevant: max(relevant, positives.count), cutoff: cutoff)
        func gain(_ r: Int) -> Double { r < cutoff ? 1 / log2(Double(r) + 2) : 0 }
        let pairs = Float(positives.count * negatives.count)
        var loss: Float = 0
        for p in positives {
            for q in negatives {
                // Swapping a relevant item at rank a with an irrelevant one at rank b changes DCG by gain(b) − gain(a).
                let weight = Float(abs(gain(rank[p]) - gain(rank[q])) / ideal)
                guard weight > 0 else { continue }
                let x = scores[q] - scores[p]
                loss += weight * Losses.softplus(x)
                let g = weight * Losses.sigmoid(x) / pairs
                gradient[q] += g
                gradient[p] -= g
            }
        }
        return (loss / pairs, gradient)
    }

    /// REINFORCE over Plackett-Luce rankings: `samples` rankings of the top K are drawn from the
    /// scores (Gumbel-max: the order of s + Gumbel noise is a Plackett-Luce sample), each rewarded
    /// with its NDCG@K; the loss is −mean((R − b) · log P(ranking)) with b the mean reward of the
    /// other samples. The gradient of log P with respect to s_j, summed over the K positions t,
    /// is 1[j = π_t] − P(j at t | items still free).
    public static func policy(scores: [Float], labels: [Float], relevant: Int, cutoff: Int, samples: Int,
                              generator: inout SeededGenerator) -> (loss: Float, gradient: [Float]) {
        let n = scores.count
        var gradient = [Float](repeating: 0, count: n)
        let positives = labels.filter { $0 > 0 }.count
        guard positives > 0 && positives < n && samples >= 2 else { return (0, gradient) }
        let k = min(cutoff, n)
        let ideal = idealDCG(relevant: max(relevant, positives), cutoff: cutoff)
        var rankings: [[Int]] = []
        var rewards: [Double] = []
        for _ in 0..<samples {
            var keyed = (0..<n).map { i -> (key: Double, item: Int) in
                let u = max(generator.nextDouble(), 1e-300)
                return (Double(scores[i]) - Foundation.log(-Foundation.log(u)), i)
            }
            keyed.sort { $0.key > $1.key }
            let ranking = keyed.prefix(k).map(\.item)
            var dcg = 0.0
            for (r, i) in ranking.enumerated() where labels[i] > 0 { dcg += 1 / log2(Double(r) + 2) }
            rankings.append(ranking)
            rewards.append(dcg / ideal)
        }
        let total = rewards.reduce(0, +)
        let top = Double(scores.max()!)
        let weights = scores.map { Foundation.exp(Double($0) - top) }
        var loss = 0.0
        for (ranking, reward) in zip(rankings, rewards) {
            let advantage = reward - (total - reward) / Double(samples - 1)
            guard advantage != 0 else { continue }
            // log P(π) = Σ_t [s_π_t − log Σ_{j free at t} exp(s_j)].
            var free = [Bool](repeating: true, count: n)
            var logP = 0.0
            var dLogP = [Double](repeating: 0, count: n)
            for chosen in ranking {
                // Summed afresh each step: a running difference would cancel to noise.
                var freeSum = 0.0
                for j in 0..<n where free[j] { freeSum += weights[j] }
                guard freeSum > 0 else { break }
                logP += Foundation.log(max(weights[chosen], .leastNormalMagnitude) / freeSum)
                for j in 0..<n where free[j] { dLogP[j] -= weights[j] / freeSum }
                dLogP[chosen] += 1
                free[chosen] = false
            }
            loss -= advantage * logP / Double(samples)
            for j in 0..<n { gradient[j] -= Float(advantage * dLogP[j] / Double(samples)) }
        }
        return (Float(loss), gradient)
    }

    /// Σ_{r < min(K, relevant)} 1 / log2(r + 2).
    public static func idealDCG(relevant: Int, cutoff: Int) -> Double {
        var ideal = 0.0
        for r in 0..<max(1, min(cutoff, relevant)) { ideal += 1 / log2(Double(r) + 2) }
        return ideal
    }
}

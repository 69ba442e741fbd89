import AffinityData
import AffinityLinalg
import Foundation

/// Metrics of one cutoff K (docs/protocol.md): means over evaluated users, except coverage.
public struct CutoffMetrics: Sendable, Codable, Equatable {
    public var k: Int
    /// HR@K: share of users with at least one test item in their top K.
    public var hitRate: Double
    /// Recall@K = |T ∩ L| / min(K, |T|).
    public var recall: Double
    /// NDCG@K with binary gains, IDCG over min(K, |T|) positions.
    public var ndcg: Double
    /// MRR@K: 1 / rank of the first hit, 0 without a hit.
    public var mrr: Double
    /// Coverage@K: distinct items recommended to evaluated users / candidate items.
    public var coverage: Double

    enum CodingKeys: String, CodingKey {
        case k, hitRate = "hr", recall, ndcg, mrr, coverage
    }
}

/// One user's metrics at every cutoff, for `--per-user` output.
public struct UserMetrics: Sendable, Codable {
    public var user: String
    public var testItems: Int
    /// Parallel to the report's cutoffs.
    public var hitRate: [Double]
    public var recall: [Double]
    public var ndcg: [Double]
    public var mrr: [Double]
}

/// The result of a full-ranking evaluation.
public struct EvaluationReport: Sendable, Codable {
    public var evaluatedUsers: Int
    public var candidateItems: Int
    public var metrics: [CutoffMetrics]
    /// Why some users or rows were not evaluated (counts by reason).
    public var skipped: [String: Int]
    public var seconds: Double
    public var perUser: [UserMetrics]?
    /// Each evaluated user's ranked list (internal item indexes, at most the largest cutoff),
    /// when asked for with `keepRankings`; parallel to `EvaluationData.evaluatedUsers`.
    public var rankings: [[Int]]?
    /// Diversity, novelty, exposure and calibration at each cutoff, when the evaluation was given
    /// an `ItemProfile`.
    public var beyondAccuracy: [BeyondAccuracyMetrics]?

    enum CodingKeys: String, CodingKey {
        case evaluatedUsers, candidateItems, metrics, skipped, seconds, perUser, beyondAccuracy
    }

    public func metrics(at k: Int) -> CutoffMetrics? { metrics.first { $0.k == k } }
}

/// Full-ranking evaluator of docs/protocol.md: every candidate scored, the user's history excluded,
/// ties broken by the smaller item index, no sampled negatives.
///
/// Users are evaluated in parallel; each thread keeps its own score buffer, exclusion mask and
/// top-k selector, and results are reduced in user order, so the figures do not depend on the
/// thread count.
public struct Evaluator: Sendable {
    /// Cutoffs K, ascending and unique.
    public var cutoffs: [Int]
    /// Threads (0 = all cores).
    public var threads: Int
    /// Keep each user's metrics in the report.
    public var keepPerUser: Bool
    /// Keep each user's ranked list in the report (for `--write-recs`).
    public var keepRankings: Bool

    public init(cutoffs: [Int] = [10, 20, 50], threads: Int = 0, keepPerUser: Bool = false, keepRankings: Bool = false) throws {
        guard !cutoffs.isEmpty, cutoffs.allSatisfy({ $0 > 0 }) else {
            throw DataError.invalidSetting(name: "cutoffs", reason: "need one or more positive cutoffs, got \(cutoffs)")
        }
        self.cutoffs = Array(Set(cutoffs)).sorted()
        self.threads = threads
        self.keepPerUser = keepPerUser
        self.keepRankings = keepRankings
    }

    /// Evaluates a scorer that writes the score of every candidate item for internal user `u`
    /// into the buffer (length = candidate count; higher is better).
    /// A re-ranking stage for evaluation: the user (internal index), their best `pool` candidates
    /// (best first) and the length of the final list in; that list (item indexes, best first) out.
    public typealias Reorder = @Sendable (_ user: Int, _ candidates: [ScoredIndex], _ k: Int) -> [Int]

    /// With a `profile`, the report also holds the beyond-accuracy metrics of the same lists. With
    /// `reorder`, each user's best `pool` items (at least the largest cutoff) go through it, and
    /// the metrics are those of its lists.
    ///
    /// With `blockScorer` (and no `reorder`), users are scored `blockSize` at a time, row after row,
    /// each row as `scorer` would write it (`Recommender.scores(forUsers:into:)`: an embedding model
    /// reads its item vectors once per block): the same lists, fewer passes over a large catalogue.
    public func evaluate(_ data: EvaluationData, profile: ItemProfile? = nil, reorder: Reorder? = nil, pool: Int = 100,
                         blockScorer: BlockScorer? = nil,
                         scorer: @Sendable (_ user: Int, _ scores: UnsafeMutableBufferPointer<Float>) -> Void) -> EvaluationReport {
        let kMax = max(1, min(cutoffs.last!, data.candidateCount))
        let depth = reorder == nil ? kMax : min(data.candidateCount, max(kMax, pool))
        if let blockScorer, reorder == nil {
            let nItems = data.candidateCount
            // At most 64 MB of block scores across all threads.
            let block = max(1, min(Self.blockSize, (64 << 20) / max(1, nItems * 4 * Parallelism.resolve(threads))))
            let perThread = ScratchPool(count: Parallelism.resolve(threads)) { RankingScratch(items: nItems, k: kMax, rows: block) }
            return evaluate(data, profile: profile) { positions in
                let scratch = perThread.take()
                defer { perThread.give(back: scratch) }
                var lists: [[Int]] = []
                for start in stride(from: positions.lowerBound, to: positions.upperBound, by: block) {
                    let users = Array(data.evaluatedUsers[start..<min(positions.upperBound, start + block)])
                    scratch.scores.withUnsafeMutableBufferPointer { all in
                        blockScorer(users, UnsafeMutableBufferPointer(rebasing: all[0..<(users.count * nItems)]))
                        for (r, user) in users.enumerated() {
                            let row = UnsafeBufferPointer(rebasing: all[(r * nItems)..<((r + 1) * nItems)])
                            lists.append(scratch.top.select(row, k: kMax, excluding: data.history.row(user)).map(\.index))
                        }
                    }
                }
                return lists
            }
        }
        let perThread = ScratchPool(count: Parallelism.resolve(threads)) { RankingScratch(items: data.candidateCount, k: depth) }
        return evaluate(data, profile: profile) { user in
            let scratch = perThread.take()
            defer { perThread.give(back: scratch) }
            if let reorder {
                return reorder(user, scratch.scored(user: user, data: data, k: depth, scorer: scorer), kMax)
            }
            return scratch.rank(user: user, data: data, k: kMax, scorer: scorer)
        }
    }

    /// Evaluates lists made elsewhere (a pipeline's): `lists` gives each evaluated user's items,
    /// best first; entries beyond the largest cutoff, out of range or in the user's history are
    /// dropped, so a list cannot earn what the protocol excludes.
    public func evaluate(_ data: EvaluationData, profile: ItemProfile? = nil,
                         lists: @Sendable (_ user: Int) -> [Int]) -> EvaluationReport {
        evaluate(data, profile: profile) { positions in positions.map { lists(data.evaluatedUsers[$0]) } }
    }

    /// Scores of a block of users, row after row (`users.count` x candidates).
    public typealias BlockScorer = @Sendable (_ users: [Int], _ scores: UnsafeMutableBufferPointer<Float>) -> Void
    /// Users scored together by a `BlockScorer` (fewer when the threads' blocks would exceed 64 MB of scores).
    static let blockSize = 16

    /// The core: `chunkLists(positions)` gives the lists of the evaluated users at those positions
    /// of `data.evaluatedUsers`, in order.
    func evaluate(_ data: EvaluationData, profile: ItemProfile?,
                  chunkLists: @Sendable (_ positions: Range<Int>) -> [[Int]]) -> EvaluationReport {
        let start = Date()
        let nUsers = data.evaluatedUsers.count
        let nItems = data.candidateCount
        // A list never holds more than the candidates, whatever the cutoff (a cutoff of 10⁹ must
        // not allocate 10⁹ slots per user); metrics at larger cutoffs are those of the full ranking.
        let kMax = max(1, min(cutoffs.last!, nItems))
        let nK = cutoffs.count
        // Per user: ranked list (kMax slots, -1 where fewer candidates) and metrics per cutoff.
        var ranked = [Int32](repeating: -1, count: nUsers * kMax)
        var values = [Double](repeating: 0, count: nUsers * nK * 4)
        let cutoffs = self.cutoffs
        let discount = (0..<kMax).map { 1.0 / log2(Double($0) + 2) }
        ranked.withUnsafeMutableBufferPointer { rankedBuffer in
            values.withUnsafeMutableBufferPointer { valueBuffer in
                let rankedOut = SharedMutableBuffer(rankedBuffer)
                let valueOut = SharedMutableBuffer(valueBuffer)
                let chunk = 64
                let chunks = (nUsers + chunk - 1) / chunk
                Parallelism.forEachChunk(chunks, threads: threads) { c in
                    let positions = (c * chunk)..<min(nUsers, (c + 1) * chunk)
                    let chunkLists = chunkLists(positions)
                    for position in positions {
                        let user = data.evaluatedUsers[position]
                        var kept = Set<Int>(), list: [Int] = []
                        for i in chunkLists[position - positions.lowerBound] where list.count < kMax {
                            if i >= 0 && i < nItems && !data.history.contains(row: user, column: i) && kept.insert(i).inserted { list.append(i) }
                        }
                        for (r, item) in list.enumerated() { rankedOut[position * kMax + r] = Int32(item) }
                        let truth = data.testItems[position]
                        let m = Evaluator.userMetrics(ranked: list, truth: truth, cutoffs: cutoffs, discount: discount)
                        for (j, v) in m.enumerated() { valueOut[position * nK * 4 + j] = v }
                    }
                }
            }
        }
        // Deterministic reduction in user order.
        var metrics: [CutoffMetrics] = []
        for (j, k) in cutoffs.enumerated() {
            var sums = [0.0, 0.0, 0.0, 0.0]
            for p in 0..<nUsers { for m in 0..<4 { sums[m] += values[p * nK * 4 + j * 4 + m] } }
            var recommended = [Bool](repeating: false, count: nItems)
            for p in 0..<nUsers {
                for r in 0..<min(k, kMax) where ranked[p * kMax + r] >= 0 { recommended[Int(ranked[p * kMax + r])] = true }
            }
            let n = Double(max(nUsers, 1))
            metrics.append(CutoffMetrics(k: k, hitRate: sums[0] / n, recall: sums[1] / n, ndcg: sums[2] / n, mrr: sums[3] / n,
                                         coverage: nItems > 0 ? Double(recommended.filter { $0 }.count) / Double(nItems) : 0))
        }
        var perUser: [UserMetrics]? = nil
        if keepPerUser {
            perUser = (0..<nUsers).map { p in
                func column(_ m: Int) -> [Double] { (0..<nK).map { values[p * nK * 4 + $0 * 4 + m] } }
                return UserMetrics(user: data.users[data.evaluatedUsers[p]], testItems: data.testItems[p].count,
                                   hitRate: column(0), recall: column(1), ndcg: column(2), mrr: column(3))
            }
        }
        let lists = keepRankings || profile != nil
            ? (0..<nUsers).map { p in ranked[(p * kMax)..<((p + 1) * kMax)].prefix { $0 >= 0 }.map { Int($0) } } : nil
        let beyond = profile.map { profile in
            BeyondAccuracy.measure(lists: lists!, histories: data.evaluatedUsers.map { data.history.row($0).map { Int($0) } },
                                   profile: profile, cutoffs: cutoffs, candidates: nItems)
        }
        return EvaluationReport(evaluatedUsers: nUsers, candidateItems: nItems, metrics: metrics, skipped: data.skipped,
                                seconds: Date().timeIntervalSince(start), perUser: perUser, rankings: keepRankings ? lists : nil,
                                beyondAccuracy: beyond)
    }

    /// HR, Recall, NDCG and MRR of one ranked list at each cutoff, flattened as
    /// `[hr, recall, ndcg, mrr]` per cutoff. `truth` is sorted and unique.
    static func userMetrics(ranked: [Int], truth: [Int32], cutoffs: [Int], discount: [Double]) -> [Double] {
        var out: [Double] = []
        out.reserveCapacity(cutoffs.count * 4)
        var isHit = [Bool](repeating: false, count: ranked.count)
        for (r, item) in ranked.enumerated() {
            isHit[r] = binarySearch(truth, Int32(item))
        }
        for k in cutoffs {
            var hits = 0, dcg = 0.0, firstHit = 0
            for r in 0..<min(k, ranked.count) where isHit[r] {
                hits += 1
                dcg += discount[r]
                if firstHit == 0 { firstHit = r + 1 }
            }
            let ideal = min(k, truth.count)
            var idcg = 0.0
            for r in 0..<ideal { idcg += discount[r] }
            out.append(hits > 0 ? 1 : 0)
            out.append(Double(hits) / Double(ideal))
            out.append(idcg > 0 ? dcg / idcg : 0)
            out.append(firstHit > 0 ? 1 / Double(firstHit) : 0)
        }
        return out
    }

    private static func binarySearch(_ sorted: [Int32], _ value: Int32) -> Bool {
        var lo = 0, hi = sorted.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if sorted[mid] < value { lo = mid + 1 } else { hi = mid }
        }
        return lo < sorted.count && sorted[lo] == value
    }
}

/// Per-thread buffers of the evaluator: scores and the masked top-k.
final class RankingScratch: @unchecked Sendable {
    var scores: [Float]
    var top: MaskedTopK

    /// Scores for `rows` users of `items` candidates each, one mask over the candidates.
    init(items: Int, k: Int, rows: Int = 1) {
        scores = [Float](repeating: 0, count: items * rows)
        top = MaskedTopK(count: items, k: k)
    }

    func rank(user: Int, data: EvaluationData, k: Int,
              scorer: (Int, UnsafeMutableBufferPointer<Float>) -> Void) -> [Int] {
        scored(user: user, data: data, k: k, scorer: scorer).map(\.index)
    }

    func scored(user: Int, data: EvaluationData, k: Int,
                scorer: (Int, UnsafeMutableBufferPointer<Float>) -> Void) -> [ScoredIndex] {
        scores.withUnsafeMutableBufferPointer { scorer(user, $0) }
        return top.select(scores, k: k, excluding: data.history.row(user))
    }
}


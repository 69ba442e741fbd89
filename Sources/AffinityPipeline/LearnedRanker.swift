import AffinityData
import AffinityLinalg
import AffinityModels
import Foundation

/// The features a learned ranker reads of each candidate: what each retriever said of it, how
/// popular it is, how active the user is and how well its genres match the user's history.
///
/// Per retriever r (in pipeline order), 4 columns:
/// - `r.found`: 1 when r proposed the item, else 0;
/// - `r.reciprocalRank`: 1 / (rank + 1) in r's list, 0 when not found;
/// - `r.zscore`: r's score standardised over r's list for this user, 0 when not found;
/// - `r.relative`: r's score divided by the largest magnitude in r's list, 0 when not found.
///
/// Then 6 columns: `foundBy` (share of retrievers that proposed it), `popularity`
/// (log(1 + training users) / log(1 + most training users)), `itemAge` (log(1 + days from the item's
/// latest training interaction to the data's latest; the oldest age for an item without a time,
/// 0 for all when the model keeps no times), `historyLength` (log(1 + |history|)), `genreAffinity`
/// (the mean, over the item's genres, of the genre's share of the history) and `genreAffinityMax`
/// (the largest such share). Per-list scalings keep the features comparable
/// between the retrievers fitted for training the ranker and those refitted on all of train.
public struct CandidateFeatures: Sendable {
    public let retrievers: [String]
    let popularity: [Float]
    let age: [Float]
    let categories: [[Int]]

    public init(retrievers: [String], profile: ItemProfile) {
        self.retrievers = retrievers
        let top = Float(log1p(Double(profile.popularity.max() ?? 0)))
        popularity = profile.popularity.map { top > 0 ? Float(log1p(Double($0))) / top : 0 }
        if let times = profile.lastSeen, let now = times.compactMap({ $0 }).max(), let oldest = times.compactMap({ $0 }).min() {
            // In Double: times come from a file (items.json), and Int64 differences can overflow.
            age = times.map { Float(log1p(max(0, Double(now) - Double($0 ?? oldest)) / 86_400)) }
        } else {
            age = []
        }
        categories = profile.categories
    }

    public static let perRetriever = ["found", "reciprocalRank", "zscore", "relative"]
    public static let shared = ["foundBy", "popularity", "itemAge", "historyLength", "genreAffinity", "genreAffinityMax"]

    /// Column names, in order: `ease#0.found`, ..., `genreAffinityMax`.
    public var names: [String] {
        retrievers.flatMap { r in Self.perRetriever.map { "\(r).\($0)" } } + Self.shared
    }

    /// One row per candidate (n x F).
    public func matrix(_ candidates: [RetrievedCandidate], history: [Int]) -> Matrix {
        let nr = retrievers.count, f = names.count
        var x = Matrix(rows: candidates.count, columns: f)
        let genreShare = ItemProfile.categoryShares(history, categories: categories)
        let activity = Float(log1p(Double(history.count)))
        x.values.withUnsafeMutableBufferPointer { v in
            for r in 0..<nr {
                let scores = candidates.compactMap { $0.sources[r]?.score }
                guard !scores.isEmpty else { continue }
                let (mean, sd) = meanAndDeviation(scores)
                let largest = scores.map(abs).max()!
                for (row, c) in candidates.enumerated() {
                    guard let s = c.sources[r] else { continue }
                    let base = row * f + r * 4
                    v[base] = 1
                    v[base + 1] = 1 / Float(s.rank + 1)
                    v[base + 2] = (s.score - mean) / sd
                    v[base + 3] = largest > 0 ? s.score / largest : 0
                }
            }
            for (row, c) in candidates.enumerated() {
                let base = row * f + nr * 4
                v[base] = Float(c.sources.reduce(0) { $0 + ($1 == nil ? 0 : 1) }) / Float(max(1, nr))
                v[base + 1] = c.item < popularity.count ? popularity[c.item] : 0
                v[base + 2] = c.item < age.count ? age[c.item] : 0
                v[base + 3] = activity
                var sum: Float = 0, largest: Float = 0, n = 0
                if c.item < categories.count {
                    for g in categories[c.item] {
                        let share = Float(g < genreShare.count ? genreShare[g] : 0)
                        sum += share
                        largest = n == 0 ? share : max(largest, share)
                        n += 1
                    }
                }
                v[base + 4] = n == 0 ? 0 : sum / Float(n)
                v[base + 5] = largest
            }
        }
        return x
    }

    /// The ranker's view of one user's candidates; `relevant` (the items the user went on to
    /// choose) labels them for training.
    public func list(_ candidates: [RetrievedCandidate], history: [Int], relevant: Set<Int>? = nil) -> RankingList {
        RankingList(items: candidates.map(\.item), features: matrix(candidates, history: history), history: history,
                    labels: relevant.map { r in candidates.map { r.contains($0.item) ? 1 : 0 } } ?? [],
                    relevant: relevant?.count ?? 0)
    }
}

/// Trained `NeuralRanker`s as the pipeline's ranking stage: scores the union of the retrievers'
/// candidates from their features, best first. With several rankers (an ensemble, e.g. one per
/// loss) the score is the mean of each ranker's scores standardised over the list.
public struct LearnedRanker: Ranker {
    public let name = "neural"
    public let models: [NeuralRanker]
    public let features: CandidateFeatures

    public init(models: [NeuralRanker], features: CandidateFeatures) throws {
        guard !models.isEmpty else { throw ModelError.invalidSetting(name: "ranker", reason: "needs at least one ranker") }
        for model in models where model.featureNames != features.names {
            throw ModelError.invalidSetting(name: "ranker", reason: "it was trained on the features \(model.featureNames.joined(separator: ",")); this pipeline's retrievers give \(features.names.joined(separator: ","))")
        }
        self.models = models
        self.features = features
    }

    /// The ranker's score of each item of `list`; for several rankers the mean of their scores,
    /// each standardised over the list (their scales differ: a BCE logit, a softmax logit, ...).
    public static func scores(_ models: [NeuralRanker], _ list: RankingList) -> [Float] {
        if models.count == 1 { return models[0].scores(list) }
        var total = [Float](repeating: 0, count: list.items.count)
        for model in models {
            let s = model.scores(list)
            let (mean, sd) = meanAndDeviation(s)
            for j in s.indices { total[j] += (s[j] - mean) / sd / Float(models.count) }
        }
        return total
    }

    public func rank(_ candidates: [RetrievedCandidate], context: UserContext) -> [Candidate] {
        let scores = Self.scores(models, features.list(candidates, history: context.history))
        var out = zip(candidates, scores).map { Candidate(item: $0.item, score: $1) }
        out.sort { ScoredIndex.ranksBefore($0.score, $0.item, $1.score, $1.item) }
        return out
    }
}

/// Mean and standard deviation of `values` (a deviation of 1 when they are all equal, so that
/// standardising leaves them at 0).
func meanAndDeviation(_ values: [Float]) -> (mean: Float, deviation: Float) {
    let mean = values.reduce(0, +) / Float(max(1, values.count))
    let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Float(max(1, values.count))
    return (mean, variance > 1e-12 ? variance.squareRoot() : 1)
}

import AffinityData
import AffinityEval
import AffinityLinalg
import Foundation

/// Are a persona model's personas real? Measures, over a set of known users:
///
/// - how many personas a user's history actually uses (each history item goes to the persona
///   with its largest attention) and their effective number, exp(entropy of the shares);
/// - how decisively the top-k recommendations are attributed: the serving persona's attention
///   (1/P would mean no persona stands out) and how many distinct personas serve one list;
/// - with item categories (genres), whether a persona's history items belong together: the mean
///   genre Jaccard similarity of item pairs inside one persona, against the same history cut at
///   random into groups of the same sizes (seeded). Personas that group by taste score above
///   that baseline; personas that split a history arbitrarily score the same.
public struct PersonaAnalysis: Sendable, Equatable, Codable {
    public var users: Int
    public var personas: Int
    public var k: Int
    public var meanUsedPersonas: Double
    public var meanEffectivePersonas: Double
    public var meanServingAttention: Double
    public var meanServingPersonas: Double
    /// Mean genre similarity of history-item pairs within a persona (nil without categories).
    public var withinPersonaGenreSimilarity: Double?
    /// The same for random groups of the same sizes.
    public var randomGroupGenreSimilarity: Double?

    /// Measures `users` (model indexes; all users when nil) with top-`k` lists. `categories[i]`
    /// lists item i's categories (empty: unknown); nil skips the genre part.
    public static func measure(_ model: any PersonaRecommender, users: [Int]? = nil, k: Int = 10, categories: [[Int]]?,
                               seed: UInt64 = 42, threads: Int = 0) throws -> PersonaAnalysis {
        guard k > 0 else { throw ModelError.invalidK(k) }
        let ids = (users ?? Array(0..<model.userCount)).filter { $0 >= 0 && $0 < model.userCount && !model.seenItems(ofUser: $0).isEmpty }
        let p = model.personaCount
        // Per user: used, effective, serving attention sum, serving count, distinct serving,
        // within-persona pair similarity sum and pairs, random-group sum and pairs.
        let fields = 9
        var stats = [Double](repeating: 0, count: ids.count * fields)
        stats.withUnsafeMutableBufferPointer { buffer in
            let out = SharedMutableBuffer(buffer)
            Parallelism.forEachRange(ids.count, grain: 16, threads: threads) { range in
                for r in range {
                    let u = ids[r]
                    let groups = model.personas(user: u)
                    let total = Double(groups.reduce(0) { $0 + $1.count })
                    var entropy = 0.0
                    for g in groups where !g.isEmpty { let s = Double(g.count) / total; entropy -= s * log(s) }
                    out[r * fields] = Double(groups.filter { !$0.isEmpty }.count)
                    out[r * fields + 1] = exp(entropy)
                    let list = (try? model.recommend(user: u, k: k)) ?? []
                    let served = model.attributions(of: list.map(\.index), user: u, size: 0)
                    out[r * fields + 2] = served.reduce(0) { $0 + Double($1.attention) }
                    out[r * fields + 3] = Double(served.count)
                    out[r * fields + 4] = Double(Set(served.map(\.persona)).count)
                    guard let categories else { continue }
                    let (sum, pairs) = pairSimilarity(groups.map { $0.map(\.item) }, categories)
                    var g = SeededGenerator(seed: seed, stream: UInt64(u))
                    let flat = groups.flatMap { $0.map(\.item) }
                    let shuffled = g.permutation(flat.count).map { flat[$0] }
                    var random = [[Int]](), start = 0
                    for group in groups { random.append(Array(shuffled[start..<(start + group.count)])); start += group.count }
                    let (randomSum, randomPairs) = pairSimilarity(random, categories)
                    out[r * fields + 5] = sum; out[r * fields + 6] = pairs
                    out[r * fields + 7] = randomSum; out[r * fields + 8] = randomPairs
                }
            }
        }
        func column(_ f: Int) -> Double { stride(from: f, to: stats.count, by: fields).reduce(0) { $0 + stats[$1] } }
        let n = Double(max(1, ids.count)), servedCount = max(1, column(3))
        let pairs = column(6), randomPairs = column(8)
        return PersonaAnalysis(users: ids.count, personas: p, k: k,
                               meanUsedPersonas: column(0) / n, meanEffectivePersonas: column(1) / n,
                               meanServingAttention: column(2) / servedCount, meanServingPersonas: column(4) / n,
                               withinPersonaGenreSimilarity: categories != nil && pairs > 0 ? column(5) / pairs : nil,
                               randomGroupGenreSimilarity: categories != nil && randomPairs > 0 ? column(7) / randomPairs : nil)
    }

    /// Σ over item pairs inside each group of their category Jaccard similarity (pairs where both
    /// items have categories), and the number of such pairs.
    static func pairSimilarity(_ groups: [[Int]], _ categories: [[Int]]) -> (Double, Double) {
        var sum = 0.0, pairs = 0.0
        for group in groups {
            let known = group.filter { $0 < categories.count && !categories[$0].isEmpty }
            guard known.count > 1 else { continue }
            // intraListDiversity is the mean of (1 − Jaccard) over the pairs.
            if let d = BeyondAccuracy.intraListDiversity(known, categories) {
                let m = Double(known.count * (known.count - 1) / 2)
                sum += (1 - d) * m
                pairs += m
            }
        }
        return (sum, pairs)
    }
}

import AffinityData
import AffinityLinalg
import Foundation

/// Beyond-accuracy metrics of the top-K lists (means over evaluated users unless said otherwise).
public struct BeyondAccuracyMetrics: Sendable, Codable, Equatable {
    public var k: Int
    /// Intra-list diversity: mean over pairs of a list of 1 - Jaccard(categories); nil without categories.
    public var intraListDiversity: Double?
    /// Novelty: mean self-information -log2(popularity / users) of the recommended items, in bits.
    public var novelty: Double
    /// Gini coefficient of how often each candidate item is recommended, over all users
    /// (0: every item equally often; near 1: a few items take all exposure).
    public var exposureGini: Double
    /// Miscalibration (Steck 2018): KL(p || (1 - 0.01) q + 0.01 p) of the history's category
    /// distribution p against the list's q; nil without categories. 0 is perfectly calibrated.
    public var calibrationKL: Double?

    enum CodingKeys: String, CodingKey {
        case k, intraListDiversity = "intra_list_diversity", novelty, exposureGini = "exposure_gini", calibrationKL = "calibration_kl"
    }
}

public enum BeyondAccuracy {
    /// Steck's smoothing of the list distribution, so that KL stays finite.
    public static let calibrationAlpha = 0.01

    /// The metrics at each cutoff of `lists` (each user's ranked items, best first) with
    /// `histories` (each user's training items, for calibration) over `candidates` items.
    public static func measure(lists: [[Int]], histories: [[Int]], profile: ItemProfile, cutoffs: [Int], candidates: Int) -> [BeyondAccuracyMetrics] {
        let withCategories = profile.hasCategories
        return cutoffs.map { k in
            var ildSum = 0.0, ildUsers = 0, noveltySum = 0.0, noveltyUsers = 0, klSum = 0.0, klUsers = 0
            var exposure = [Int](repeating: 0, count: candidates)
            for (u, full) in lists.enumerated() {
                let list = Array(full.prefix(k))
                guard !list.isEmpty else { continue }
                for i in list where i < candidates { exposure[i] += 1 }
                noveltySum += list.map { selfInformation(profile.popularity[$0], users: profile.userCount) }.reduce(0, +) / Double(list.count)
                noveltyUsers += 1
                if withCategories {
                    if let d = intraListDiversity(list, profile.categories) { ildSum += d; ildUsers += 1 }
                    if let kl = miscalibration(history: histories[u], list: list, profile.categories) { klSum += kl; klUsers += 1 }
                }
            }
            return BeyondAccuracyMetrics(k: k, intraListDiversity: withCategories && ildUsers > 0 ? ildSum / Double(ildUsers) : nil,
                                         novelty: noveltyUsers > 0 ? noveltySum / Double(noveltyUsers) : 0,
                                         exposureGini: gini(exposure),
                                         calibrationKL: withCategories && klUsers > 0 ? klSum / Double(klUsers) : nil)
        }
    }

    /// -log2(popularity / users); an item nobody has counts as held by one user.
    public static func selfInformation(_ popularity: Int, users: Int) -> Double {
        -log2(Double(max(popularity, 1)) / Double(max(users, 1)))
    }

    /// Mean over item pairs of 1 - |A ∩ B| / |A ∪ B| (pairs where both items have categories);
    /// nil when no pair has.
    public static func intraListDiversity(_ list: [Int], _ categories: [[Int]]) -> Double? {
        var sum = 0.0, pairs = 0
        for a in 0..<list.count {
            let ca = categories[list[a]]
            guard !ca.isEmpty else { continue }
            for b in (a + 1)..<list.count {
                let cb = categories[list[b]]
                guard !cb.isEmpty else { continue }
                sum += 1 - jaccard(ca, cb)
                pairs += 1
            }
        }
        return pairs > 0 ? sum / Double(pairs) : nil
    }

    static func jaccard(_ a: [Int], _ b: [Int]) -> Double {
        let sa = Set(a), sb = Set(b)
        let union = sa.union(sb).count
        return union > 0 ? Double(sa.intersection(sb).count) / Double(union) : 0
    }

    /// KL(p || q~) with q~ = (1 - alpha) q + alpha p (Steck 2018); nil when the history has no categories.
    public static func miscalibration(history: [Int], list: [Int], _ categories: [[Int]]) -> Double? {
        ItemProfile.miscalibration(history: history, list: list, categories: categories, alpha: calibrationAlpha)
    }

    /// Gini coefficient of non-negative counts (0 when all are equal or all zero).
    public static func gini(_ counts: [Int]) -> Double {
        let sorted = counts.sorted()
        let n = Double(sorted.count)
        let total = sorted.reduce(0, +)
        guard total > 0, sorted.count > 1 else { return 0 }
        var weighted = 0.0
        for (i, x) in sorted.enumerated() { weighted += (2 * Double(i + 1) - n - 1) * Double(x) }
        return weighted / (n * Double(total))
    }
}

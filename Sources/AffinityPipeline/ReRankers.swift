import AffinityData
import AffinityLinalg
import AffinityModels
import Foundation

/// One item on its way through the pipeline: its score and what each stage did to it.
public struct Candidate: Sendable, Equatable {
    /// Internal item index.
    public var item: Int
    /// The score the list is ordered by (the retriever's, until a stage changes it).
    public var score: Float
    /// What each re-ranker changed for this item, in order ("mmr: rank 4 -> 2").
    public var notes: [String]
    /// The history items behind the score (explainable models, when asked for).
    public var because: [Contribution]?
    /// The user's persona that serves this item (multi-persona models, when explanations are asked for).
    public var persona: Int?

    public init(item: Int, score: Float, notes: [String] = [], because: [Contribution]? = nil, persona: Int? = nil) {
        self.item = item
        self.score = score
        self.notes = notes
        self.because = because
        self.persona = persona
    }
}

/// The stage after ranking: reorders or filters a scored list (best first) into at most `k`
/// items, and says in each moved item's notes what it did. Re-rankers keep no state between
/// calls, so one instance serves every request.
public protocol ReRanker: Sendable {
    /// The name in `--rerank` specs and notes.
    var name: String { get }
    /// `history`: the user's items (internal indexes), which calibration reads.
    func rerank(_ candidates: [Candidate], history: [Int], k: Int) -> [Candidate]
}

extension ReRanker {
    /// Adds "NAME: rank A -> B" to the items whose rank changed, and "NAME: new in the list" to
    /// items that were below the first `k`.
    func annotate(before: [Candidate], after: [Candidate], k: Int) -> [Candidate] {
        var position: [Int: Int] = [:]
        for (r, c) in before.enumerated() where position[c.item] == nil { position[c.item] = r }
        return after.enumerated().map { r, c in
            var c = c
            if let old = position[c.item], old != r {
                c.notes.append(old < k ? "\(name): rank \(old + 1) -> \(r + 1)" : "\(name): up from rank \(old + 1) to \(r + 1)")
            }
            return c
        }
    }
}

/// Scores of a candidate list mapped to 0...1 (min-max; all equal -> all 1), so that relevance
/// and a diversity or calibration term are on one scale.
func normalizedScores(_ candidates: [Candidate]) -> [Double] {
    guard let lo = candidates.map(\.score).min(), let hi = candidates.map(\.score).max(), hi > lo else {
        return [Double](repeating: 1, count: candidates.count)
    }
    return candidates.map { Double(($0.score - lo) / (hi - lo)) }
}

/// Maximal marginal relevance (Carbonell & Goldstein 1998): picks, one at a time, the candidate
/// with the best `lambda * relevance - (1 - lambda) * (largest similarity to an item already
/// picked)`. Similarity is the cosine of item vectors when the model has them, else the Jaccard
/// overlap of categories. lambda = 1 keeps the ranking; lower values trade relevance for variety.
public struct MMR: ReRanker {
    public enum Similarity: String, Codable, Sendable, CaseIterable, SettingChoice {
        /// Item vectors when the model has them, else categories.
        case auto, vectors, categories
    }

    public struct Settings: ModelConfiguration {
        public static let settingHelp: [String: String] = [
            "lambda": "weight of relevance against similarity (0...1)",
            "similarity": "auto, vectors or categories",
        ]
        public var lambda: Double = 0.7
        public var similarity: Similarity = .auto
        public init() {}
        public func validate() throws {
            guard (0...1).contains(lambda) else { throw ModelError.invalidSetting(name: "lambda", reason: "must be in 0...1, got \(lambda)") }
        }
    }

    public let name = "mmr"
    public let settings: Settings
    let profile: ItemProfile
    let useVectors: Bool
    /// Norms of the item vectors, for cosines.
    let norms: [Float]
    /// Each item's categories, sorted and unique, for Jaccard similarity.
    let sortedCategories: [[Int]]
    /// The same as bit sets when every category id is below 64 (MovieLens has 18 genres): Jaccard
    /// is then two popcounts (tested against the sorted-list merge).
    let categoryBits: [UInt64]?

    public init(settings: Settings, profile: ItemProfile) throws {
        try settings.validate()
        self.settings = settings
        self.profile = profile
        switch settings.similarity {
        case .vectors:
            guard profile.vectors != nil else { throw ModelError.invalidSetting(name: "similarity", reason: "vectors: this model has no item vectors (use categories)") }
            useVectors = true
        case .categories:
            guard profile.hasCategories else { throw ModelError.invalidSetting(name: "similarity", reason: "categories: the items have no categories (genres)") }
            useVectors = false
        case .auto:
            guard profile.vectors != nil || profile.hasCategories else {
                throw ModelError.invalidSetting(name: "similarity", reason: "the model has no item vectors and the items no categories: MMR has nothing to compare")
            }
            useVectors = profile.vectors != nil
        }
        if useVectors, let v = profile.vectors {
            norms = (0..<v.rows).map { r in v.row(r).reduce(0) { $0 + $1 * $1 }.squareRoot() }
            sortedCategories = []
            categoryBits = nil
        } else {
            norms = []
            sortedCategories = profile.categories.map { Array(Set($0)).sorted() }
            categoryBits = sortedCategories.allSatisfy({ $0.allSatisfy { $0 >= 0 && $0 < 64 } })
                ? sortedCategories.map { $0.reduce(UInt64(0)) { $0 | (1 << UInt64($1)) } } : nil
        }
    }

    /// Similarity of two items in 0...1 for categories, -1...1 for vectors.
    public func similarity(_ a: Int, _ b: Int) -> Double {
        if useVectors, let v = profile.vectors {
            let n = norms[a] * norms[b]
            guard n > 0 else { return 0 }
            var dot: Float = 0
            for c in 0..<v.columns { dot += v.values[a * v.columns + c] * v.values[b * v.columns + c] }
            return Double(dot / n)
        }
        if let bits = categoryBits {
            let common = (bits[a] & bits[b]).nonzeroBitCount, union = (bits[a] | bits[b]).nonzeroBitCount
            return union > 0 ? Double(common) / Double(union) : 0
        }
        return Self.jaccard(sortedCategories[a], sortedCategories[b])
    }

    /// |A ∩ B| / |A ∪ B| of two sorted, duplicate-free lists, by one merge (no allocation: MMR
    /// calls it k x candidates times per request).
    static func jaccard(_ a: [Int], _ b: [Int]) -> Double {
        var i = 0, j = 0, common = 0
        while i < a.count && j < b.count {
            if a[i] == b[j] { common += 1; i += 1; j += 1 } else if a[i] < b[j] { i += 1 } else { j += 1 }
        }
        let union = a.count + b.count - common
        return union > 0 ? Double(common) / Double(union) : 0
    }

    public func rerank(_ candidates: [Candidate], history: [Int], k: Int) -> [Candidate] {
        let relevance = normalizedScores(candidates)
        var chosen: [Int] = []
        var taken = [Bool](repeating: false, count: candidates.count)
        // The largest similarity of each candidate to the picked ones, updated after each pick.
        var closest = [Double](repeating: -.infinity, count: candidates.count)
        let lambda = settings.lambda
        while chosen.count < min(k, candidates.count) {
            var best = -1, bestValue = -Double.infinity
            for c in candidates.indices where !taken[c] {
                let penalty = chosen.isEmpty ? 0 : closest[c]
                let value = lambda * relevance[c] - (1 - lambda) * penalty
                if value > bestValue { best = c; bestValue = value }   // ties: the earlier candidate
            }
            taken[best] = true
            chosen.append(best)
            for c in candidates.indices where !taken[c] {
                closest[c] = max(closest[c], similarity(candidates[c].item, candidates[best].item))
            }
        }
        return annotate(before: candidates, after: chosen.map { candidates[$0] }, k: k)
    }
}

/// Calibration (Steck 2018): builds the list greedily to maximise
/// `(1 - lambda) * sum of relevance - lambda * KL(p || q~)`, where p is the category distribution
/// of the user's history and q~ that of the list (smoothed by alpha = 0.01), so that a user who
/// watches 70% drama and 30% comedy gets about that mix rather than only drama.
public struct Calibration: ReRanker {
    public struct Settings: ModelConfiguration {
        public static let settingHelp: [String: String] = ["lambda": "weight of calibration against relevance (0...1)"]
        public var lambda: Double = 0.5
        public init() {}
        public func validate() throws {
            guard (0...1).contains(lambda) else { throw ModelError.invalidSetting(name: "lambda", reason: "must be in 0...1, got \(lambda)") }
        }
    }

    public static let alpha = 0.01
    public let name = "calibration"
    public let settings: Settings
    let profile: ItemProfile

    public init(settings: Settings, profile: ItemProfile) throws {
        try settings.validate()
        guard profile.hasCategories else {
            throw ModelError.invalidSetting(name: "calibration", reason: "the items have no categories (genres) to calibrate to")
        }
        self.settings = settings
        self.profile = profile
    }

    public func rerank(_ candidates: [Candidate], history: [Int], k: Int) -> [Candidate] {
        let p = ItemProfile.categoryDistribution(history, categories: profile.categories)
        guard !p.isEmpty else { return Array(candidates.prefix(k)) }   // nothing to calibrate to
        let relevance = normalizedScores(candidates)
        var chosen: [Int] = [], relevanceSum = 0.0
        var taken = [Bool](repeating: false, count: candidates.count)
        while chosen.count < min(k, candidates.count) {
            var best = -1, bestValue = -Double.infinity
            for c in candidates.indices where !taken[c] {
                let list = (chosen + [c]).map { candidates[$0].item }
                let kl = ItemProfile.miscalibration(p: p, list: list, categories: profile.categories, alpha: Self.alpha)
                let value = (1 - settings.lambda) * (relevanceSum + relevance[c]) - settings.lambda * kl
                if value > bestValue { best = c; bestValue = value }
            }
            taken[best] = true
            chosen.append(best)
            relevanceSum += relevance[best]
        }
        return annotate(before: candidates, after: chosen.map { candidates[$0] }, k: k)
    }
}

/// Exposure fairness: at most `maxHeadShare` of a list may come from the head of the catalogue
/// (the `headFraction` most popular items); the rest are the best-scored other candidates. When
/// too few other candidates exist, the best remaining head items fill the end of the list.
public struct PopularityCap: ReRanker {
    public struct Settings: ModelConfiguration {
        public static let settingHelp: [String: String] = [
            "headFraction": "share of items (most popular first) that are the head",
            "maxHeadShare": "largest share of a list from the head (0...1)",
        ]
        public var headFraction: Double = 0.2
        public var maxHeadShare: Double = 0.5
        public init() {}
        public func validate() throws {
            guard headFraction > 0 && headFraction <= 1 else { throw ModelError.invalidSetting(name: "headFraction", reason: "must be in (0, 1], got \(headFraction)") }
            guard (0...1).contains(maxHeadShare) else { throw ModelError.invalidSetting(name: "maxHeadShare", reason: "must be in 0...1, got \(maxHeadShare)") }
        }
    }

    public let name = "popularity-cap"
    public let settings: Settings
    /// Whether each item is in the head.
    let isHead: [Bool]

    public init(settings: Settings, profile: ItemProfile) throws {
        try settings.validate()
        self.settings = settings
        let order = profile.popularity.indices.sorted { profile.popularity[$0] != profile.popularity[$1] ? profile.popularity[$0] > profile.popularity[$1] : $0 < $1 }
        var head = [Bool](repeating: false, count: profile.popularity.count)
        for i in order.prefix(Int((settings.headFraction * Double(order.count)).rounded(.up))) { head[i] = true }
        isHead = head
    }

    public func rerank(_ candidates: [Candidate], history: [Int], k: Int) -> [Candidate] {
        let n = min(k, candidates.count)
        let quota = Int((settings.maxHeadShare * Double(n)).rounded(.down))
        var out: [Candidate] = [], skipped: [Candidate] = [], heads = 0
        for c in candidates where out.count < n {
            if isHead[c.item] {
                if heads < quota { out.append(c); heads += 1 } else { skipped.append(c) }
            } else {
                out.append(c)
            }
        }
        // Not enough other items: the best skipped head items fill the end of the list.
        if out.count < n { out += skipped.prefix(n - out.count) }
        return annotate(before: candidates, after: out, k: k)
    }
}

/// Freshness: relevance blended with how recently anyone interacted with the item,
/// `(1 - weight) * relevance + weight * 2^(-age / halfLife)`, where relevance is the list's scores
/// mapped to 0...1 and an item's age is the time from its latest training interaction to the latest
/// interaction in the training data (so offline evaluation and serving of one model agree). Items
/// without a time count as old. Needs interaction times (a model trained on a log with timestamps).
public struct Freshness: ReRanker {
    public struct Settings: ModelConfiguration {
        public static let settingHelp: [String: String] = [
            "weight": "weight of freshness against relevance (0...1)",
            "halfLifeDays": "age in days at which an item's freshness halves",
        ]
        public var weight: Double = 0.2
        public var halfLifeDays: Double = 90
        public init() {}
        public func validate() throws {
            guard (0...1).contains(weight) else { throw ModelError.invalidSetting(name: "weight", reason: "must be in 0...1, got \(weight)") }
            guard halfLifeDays > 0 && halfLifeDays.isFinite else {
                throw ModelError.invalidSetting(name: "halfLifeDays", reason: "must be a positive number of days, got \(halfLifeDays)")
            }
        }
    }

    public let name = "freshness"
    public let settings: Settings
    /// 2^(-age / halfLife) of each item, 0 for an item without a time.
    let freshness: [Double]

    public init(settings: Settings, profile: ItemProfile) throws {
        try settings.validate()
        guard let times = profile.lastSeen, let now = times.compactMap({ $0 }).max() else {
            throw ModelError.invalidSetting(name: "freshness", reason: "the model has no interaction times (train it with this version on a log with timestamps)")
        }
        self.settings = settings
        let halfLife = settings.halfLifeDays * 86_400
        // In Double: times come from a file (items.json), and Int64 differences can overflow.
        freshness = times.map { t in t.map { exp2(-max(0, Double(now) - Double($0)) / halfLife) } ?? 0 }
    }

    /// How fresh `item` is, 0...1 (1: interacted with at the data's latest time).
    public func freshness(of item: Int) -> Double { item >= 0 && item < freshness.count ? freshness[item] : 0 }

    public func rerank(_ candidates: [Candidate], history: [Int], k: Int) -> [Candidate] {
        let relevance = normalizedScores(candidates)
        let w = settings.weight
        let value = candidates.indices.map { (1 - w) * relevance[$0] + w * freshness(of: candidates[$0].item) }
        // Stable: equal values keep the incoming order.
        let order = candidates.indices.sorted { value[$0] != value[$1] ? value[$0] > value[$1] : $0 < $1 }
        return annotate(before: candidates, after: order.prefix(k).map { candidates[$0] }, k: k)
    }
}

/// Business rules: items of excluded categories never appear, pinned items go first (when they
/// are candidates), and at most `maxPerCategory` items share a category (0 = no limit).
/// Lists in settings are separated by `|` (`excludeCategories=Horror|Musical`).
public struct BusinessRules: ReRanker {
    public struct Settings: ModelConfiguration {
        public static let settingHelp: [String: String] = [
            "excludeCategories": "categories never shown, A|B",
            "pinItems": "item IDs put first when they are candidates, A|B",
            "maxPerCategory": "items of one category per list at most (0 = any)",
        ]
        public var excludeCategories: String = ""
        public var pinItems: String = ""
        public var maxPerCategory: Int = 0
        public init() {}
        public func validate() throws {
            guard maxPerCategory >= 0 else { throw ModelError.invalidSetting(name: "maxPerCategory", reason: "must not be negative, got \(maxPerCategory)") }
        }
    }

    public let name = "rules"
    public let settings: Settings
    let profile: ItemProfile
    let excluded: Set<Int>
    let pinned: [Int]

    /// `items` resolves pinned item IDs; unknown IDs and category names are errors naming them.
    public init(settings: Settings, profile: ItemProfile, items: IDVocabulary) throws {
        try settings.validate()
        self.settings = settings
        self.profile = profile
        let names = settings.excludeCategories.split(separator: "|").map { String($0).trimmingCharacters(in: .whitespaces) }
        var excluded = Set<Int>()
        for name in names {
            guard let c = profile.categoryNames.firstIndex(of: name) else {
                throw ModelError.invalidSetting(name: "excludeCategories", reason: "no category '\(name)'; the categories are \(profile.categoryNames.prefix(30).joined(separator: ", "))")
            }
            excluded.insert(c)
        }
        self.excluded = excluded
        pinned = try settings.pinItems.split(separator: "|").map { id in
            guard let i = items.index(of: String(id)) else { throw ModelError.invalidSetting(name: "pinItems", reason: "unknown item '\(id)'") }
            return i
        }
    }

    public func rerank(_ candidates: [Candidate], history: [Int], k: Int) -> [Candidate] {
        var pool = candidates.filter { c in !profile.categories[c.item].contains { excluded.contains($0) } }
        // Pinned candidates first, in the order given.
        let pinnedHere = pinned.compactMap { p in pool.first { $0.item == p } }
        pool.removeAll { c in pinnedHere.contains { $0.item == c.item } }
        pool = pinnedHere + pool
        var out: [Candidate] = [], perCategory: [Int: Int] = [:]
        for c in pool where out.count < k {
            let categories = profile.categories[c.item]
            if settings.maxPerCategory > 0, categories.contains(where: { perCategory[$0, default: 0] >= settings.maxPerCategory }) { continue }
            for g in categories { perCategory[g, default: 0] += 1 }
            out.append(c)
        }
        var annotated = annotate(before: candidates, after: out, k: k)
        for n in annotated.indices where pinned.contains(annotated[n].item) { annotated[n].notes.append("rules: pinned") }
        return annotated
    }
}

/// A re-ranking stage as `--rerank` and pipeline files name it: `mmr`, `calibration`,
/// `popularity-cap` or `rules`, with `key=value` settings (`mmr:lambda=0.5`).
public enum ReRankerSpec: Sendable, Equatable, CustomStringConvertible {
    case mmr(MMR.Settings)
    case calibration(Calibration.Settings)
    case popularityCap(PopularityCap.Settings)
    case rules(BusinessRules.Settings)
    case freshness(Freshness.Settings)

    public static let names = ["mmr", "calibration", "popularity-cap", "rules", "freshness"]

    /// Parses `NAME[:key=value,key=value]`; `|` separates list values inside a setting.
    public init(parsing text: String) throws {
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        var settings: [String: String] = [:]
        if parts.count == 2 {
            for pair in parts[1].split(separator: ",") {
                let kv = pair.split(separator: "=", maxSplits: 1).map(String.init)
                guard kv.count == 2 else { throw ModelError.invalidSetting(name: "rerank", reason: "expected key=value in '\(text)', got '\(pair)'") }
                settings[kv[0]] = kv[1]
            }
        }
        switch parts.first ?? "" {
        case "mmr": self = .mmr(try MMR.Settings().applying(settings))
        case "calibration": self = .calibration(try Calibration.Settings().applying(settings))
        case "popularity-cap": self = .popularityCap(try PopularityCap.Settings().applying(settings))
        case "rules": self = .rules(try BusinessRules.Settings().applying(settings))
        case "freshness": self = .freshness(try Freshness.Settings().applying(settings))
        default:
            throw ModelError.invalidSetting(name: "rerank", reason: "unknown re-ranker '\(parts.first ?? "")'; known: \(Self.names.joined(separator: ", "))")
        }
    }

    public var description: String {
        switch self {
        case .mmr(let s): return "mmr:lambda=\(s.lambda),similarity=\(s.similarity.rawValue)"
        case .calibration(let s): return "calibration:lambda=\(s.lambda)"
        case .popularityCap(let s): return "popularity-cap:headFraction=\(s.headFraction),maxHeadShare=\(s.maxHeadShare)"
        case .rules(let s): return "rules:excludeCategories=\(s.excludeCategories),pinItems=\(s.pinItems),maxPerCategory=\(s.maxPerCategory)"
        case .freshness(let s): return "freshness:weight=\(s.weight),halfLifeDays=\(s.halfLifeDays)"
        }
    }

    /// The stage for a model's items.
    public func make(profile: ItemProfile, items: IDVocabulary) throws -> any ReRanker {
        switch self {
        case .mmr(let s): return try MMR(settings: s, profile: profile)
        case .calibration(let s): return try Calibration(settings: s, profile: profile)
        case .popularityCap(let s): return try PopularityCap(settings: s, profile: profile)
        case .rules(let s): return try BusinessRules(settings: s, profile: profile, items: items)
        case .freshness(let s): return try Freshness(settings: s, profile: profile)
        }
    }
}

/// Re-rankers applied in order to a scored list: each gets the previous one's output.
public struct ReRankChain: Sendable {
    public let stages: [any ReRanker]

    public init(_ stages: [any ReRanker]) { self.stages = stages }

    public var isEmpty: Bool { stages.isEmpty }

    /// The final `k` items of `candidates` (best first) for a user with `history`. Every stage but
    /// the last reorders the whole list, so that later stages still have candidates to choose
    /// from; a quota (popularity-cap, maxPerCategory) therefore belongs in the last stage.
    public func apply(_ candidates: [Candidate], history: [Int], k: Int) -> [Candidate] {
        var list = candidates
        for (n, stage) in stages.enumerated() {
            list = stage.rerank(list, history: history, k: n == stages.count - 1 ? k : list.count)
        }
        return Array(list.prefix(k))
    }
}

import AffinityLinalg
import Foundation

/// What evaluation metrics and re-rankers need to know of each item of a model: its categories
/// (genres), how many training users have it and, when known, its item vectors.
public struct ItemProfile: Sendable {
    /// Category indexes of each item (empty when unknown), indexed like the model's items.
    public var categories: [[Int]]
    /// Training users of each item.
    public var popularity: [Int]
    public var userCount: Int
    /// Item vectors (rows indexed like the items), for similarity between items; nil when the
    /// model has none.
    public var vectors: Matrix?
    /// The name of each category index (genre names).
    public var categoryNames: [String]
    /// Each item's latest training interaction (Unix seconds; nil for an item without one), or nil
    /// when the training log had no times.
    public var lastSeen: [Int64?]?

    public init(categories: [[Int]], popularity: [Int], userCount: Int, vectors: Matrix? = nil, categoryNames: [String]? = nil) {
        self.categories = categories
        self.popularity = popularity
        self.userCount = userCount
        self.vectors = vectors
        self.categoryNames = categoryNames ?? (0..<((categories.flatMap { $0 }.max() ?? -1) + 1)).map { String($0) }
    }

    /// From a catalog's genres (by raw item ID; nil: no categories), the training history and,
    /// when known, each item's latest interaction time (by raw item ID).
    public init(items: IDVocabulary, genres: [String: [String]]?, history: SparseMatrix, vectors: Matrix? = nil,
                lastSeen: [String: Int64]? = nil) {
        var index: [String: Int] = [:]
        var names: [String] = []
        categories = (0..<items.count).map { i in
            (genres?[items[i]] ?? []).map { name in
                if let n = index[name] { return n }
                index[name] = names.count
                names.append(name)
                return names.count - 1
            }
        }
        categoryNames = names
        popularity = history.columnCounts().map { Int($0) }
        userCount = history.rowCount
        self.vectors = vectors
        self.lastSeen = lastSeen.map { times in (0..<items.count).map { times[items[$0]] } }
    }

    public var hasCategories: Bool { categories.contains { !$0.isEmpty } }

    /// Category distribution of items: each item spreads one unit evenly over its categories.
    public static func categoryDistribution(_ items: [Int], categories: [[Int]]) -> [Int: Double] {
        var p: [Int: Double] = [:]
        for (g, share) in categoryShares(items, categories: categories).enumerated() where share > 0 { p[g] = share }
        return p
    }

    /// `categoryDistribution` as a dense array indexed by category (length: the largest category
    /// of `items` + 1; empty when they have none): the per-request form, without hashing.
    public static func categoryShares(_ items: [Int], categories: [[Int]]) -> [Double] {
        var top = -1
        for i in items { for g in categories[i] where g > top { top = g } }
        guard top >= 0 else { return [] }
        var p = [Double](repeating: 0, count: top + 1)
        var total = 0.0
        for i in items where !categories[i].isEmpty {
            let share = 1 / Double(categories[i].count)
            for g in categories[i] { p[g] += share }
            total += 1
        }
        for g in p.indices { p[g] /= total }
        return p
    }

    /// Steck's (2018) miscalibration of a list against a history: KL(p || q~) with
    /// q~ = (1 - alpha) q + alpha p, p and q the category distributions of the history and the
    /// list; nil when the history has no categories.
    public static func miscalibration(history: [Int], list: [Int], categories: [[Int]], alpha: Double) -> Double? {
        let p = categoryDistribution(history, categories: categories)
        guard !p.isEmpty else { return nil }
        return miscalibration(p: p, list: list, categories: categories, alpha: alpha)
    }

    /// The same with the history's distribution `p` already computed.
    public static func miscalibration(p: [Int: Double], list: [Int], categories: [[Int]], alpha: Double) -> Double {
        let q = categoryDistribution(list, categories: categories)
        var kl = 0.0
        for (g, pg) in p where pg > 0 {
            let qg = (1 - alpha) * (q[g] ?? 0) + alpha * pg
            kl += pg * log(pg / qg)
        }
        return kl
    }
}

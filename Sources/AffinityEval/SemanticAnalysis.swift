import AffinityLinalg

/// "Similar is not relevant", measured: how an item's neighbours by text compare with its
/// neighbours by interactions, and which text-alike pairs the interactions say are substitutes.
public enum SemanticAnalysis {
    /// The share of each item's `textNeighbours` that are among its `taskNeighbours` (|A ∩ B| / |A|;
    /// nil for an item without text neighbours).
    public static func overlap(textNeighbours: [[Int]], taskNeighbours: [[Int]]) -> [Double?] {
        precondition(textNeighbours.count == taskNeighbours.count, "one list per item on both sides")
        return zip(textNeighbours, taskNeighbours).map { a, b in
            guard !a.isEmpty else { return nil }
            let other = Set(b)
            return Double(a.filter(other.contains).count) / Double(a.count)
        }
    }

    /// Mean overlap per popularity decile (decile 0: the least popular tenth of the items that
    /// have a value; ties by item index), for the plot.
    public static func byPopularityDecile(_ values: [Double?], popularity: [Int]) -> [Double] {
        let items = values.indices.filter { values[$0] != nil }
        guard !items.isEmpty else { return [] }
        return popularitySlices(items, popularity: popularity, parts: 10, mostPopularFirst: false).map { slice in
            slice.isEmpty ? 0 : slice.map { values[$0]! }.reduce(0, +) / Double(slice.count)
        }
    }

    /// A pair of items that look alike and that the interactions treat as substitutes.
    public struct Pair: Sendable, Equatable, Codable {
        public var item: Int
        public var neighbour: Int
        /// Cosine similarity of their text vectors.
        public var textSimilarity: Float
        /// EASE's weight B[item, neighbour] (negative: having `item` lowers `neighbour`'s score).
        public var weight: Float
    }

    /// Among the text-neighbour pairs (i, j) (j in i's `textNeighbours`), the `count` with the
    /// most negative `weights[i, j]` (EASE's B), one per unordered pair, most negative first.
    public static func closeButWrong(textNeighbours: [[(index: Int, similarity: Float)]], weights: Matrix, count: Int) -> [Pair] {
        var pairs: [Pair] = []
        for (i, list) in textNeighbours.enumerated() {
            for (j, s) in list where weights[i, j] < 0 {
                pairs.append(Pair(item: i, neighbour: j, textSimilarity: s, weight: weights[i, j]))
            }
        }
        pairs.sort { $0.weight != $1.weight ? $0.weight < $1.weight : ($0.item, $0.neighbour) < ($1.item, $1.neighbour) }
        var seen = Set<[Int]>(), out: [Pair] = []
        for p in pairs where out.count < count {
            let key = [min(p.item, p.neighbour), max(p.item, p.neighbour)]
            if seen.insert(key).inserted { out.append(p) }
        }
        return out
    }

    /// The share of negative `weights[i, j]` among the given pairs (j ≠ i).
    public static func negativeShare(_ pairs: [(Int, Int)], weights: Matrix) -> Double {
        guard !pairs.isEmpty else { return 0 }
        return Double(pairs.filter { weights[$0.0, $0.1] < 0 }.count) / Double(pairs.count)
    }
}

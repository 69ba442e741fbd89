/// One scored entry of a ranking: an internal index and its score (higher is better).
public struct ScoredIndex: Sendable, Hashable, Codable {
    public var index: Int
    public var score: Float
    public init(index: Int, score: Float) {
        self.index = index
        self.score = score
    }

    /// The ranking order of the whole project: higher score first, ties to the smaller index.
    /// NaN ranks below every number so a broken score can never win.
    @inline(__always)
    public static func ranksBefore(_ aScore: Float, _ aIndex: Int, _ bScore: Float, _ bIndex: Int) -> Bool {
        if aScore == bScore { return aIndex < bIndex }
        if aScore.isNaN { return false }
        if bScore.isNaN { return true }
        return aScore > bScore
    }
}

/// Bounded top-k selection over a stream of (index, score), best first, ties to the smaller index.
///
/// A binary heap with the *worst* kept entry at the root, so each candidate costs one comparison
/// unless it enters the top k. Reuse one selector per thread with `reset(k:)`: after the first use
/// a selection allocates nothing.
/// - Complexity: O(n log k) for n pushes, O(k log k) for `sortedResults`.
public struct TopKSelector: Sendable {
    public private(set) var k: Int
    private var scores: [Float] = []
    private var indices: [Int32] = []

    public init(k: Int) {
        precondition(k >= 0, "k must not be negative")
        self.k = k
        scores.reserveCapacity(k)
        indices.reserveCapacity(k)
    }

    /// Empties the selector and sets a new bound, keeping the storage.
    public mutating func reset(k: Int) {
        precondition(k >= 0, "k must not be negative")
        self.k = k
        scores.removeAll(keepingCapacity: true)
        indices.removeAll(keepingCapacity: true)
    }

    public var count: Int { scores.count }

    /// Offers one candidate.
    @inline(__always)
    public mutating func push(index: Int, score: Float) {
        if scores.count < k {
            scores.append(score)
            indices.append(Int32(truncatingIfNeeded: index))
            siftUp(scores.count - 1)
        } else if k > 0 && ScoredIndex.ranksBefore(score, index, scores[0], Int(indices[0])) {
            scores[0] = score
            indices[0] = Int32(truncatingIfNeeded: index)
            siftDown(0)
        }
    }

    /// Offers every entry of `scores` whose position is not excluded.
    /// `excluded` marks positions that must not be returned (seen or filtered items).
    public mutating func push(scores values: UnsafeBufferPointer<Float>, excluded: UnsafeBufferPointer<Bool>? = nil) {
        if let excluded {
            precondition(excluded.count == values.count, "exclusion mask and scores differ in length")
            for i in 0..<values.count where !excluded[i] { push(index: i, score: values[i]) }
        } else {
            for i in 0..<values.count { push(index: i, score: values[i]) }
        }
    }

    /// The kept entries, best first. The selector is left unchanged.
    public func sortedResults() -> [ScoredIndex] {
        var out = (0..<scores.count).map { ScoredIndex(index: Int(indices[$0]), score: scores[$0]) }
        out.sort { ScoredIndex.ranksBefore($0.score, $0.index, $1.score, $1.index) }
        return out
    }

    // The root is the entry that ranks last.
    @inline(__always)
    private func worse(_ a: Int, _ b: Int) -> Bool {
        ScoredIndex.ranksBefore(scores[b], Int(indices[b]), scores[a], Int(indices[a]))
    }

    private mutating func siftUp(_ start: Int) {
        var child = start
        while child > 0 {
            let parent = (child - 1) / 2
            if worse(child, parent) {
                scores.swapAt(child, parent)
                indices.swapAt(child, parent)
                child = parent
            } else { return }
        }
    }

    private mutating func siftDown(_ start: Int) {
        var parent = start
        let n = scores.count
        while true {
            let left = 2 * parent + 1
            if left >= n { return }
            var target = left
            let right = left + 1
            if right < n && worse(right, left) { target = right }
            if worse(target, parent) {
                scores.swapAt(target, parent)
                indices.swapAt(target, parent)
                parent = target
            } else { return }
        }
    }
}

/// The project's one "mask, score, top-k, unmask": the top `k` of a score vector with some
/// positions excluded, using a mask that is set for the call and cleared after it, so one
/// instance per thread serves every user without allocating. The recommenders, the serving path
/// and the evaluator all rank through it.
public struct MaskedTopK: Sendable {
    private var mask: [Bool]
    private var selector: TopKSelector

    /// For score vectors of `count` entries.
    public init(count: Int, k: Int = 0) {
        mask = [Bool](repeating: false, count: count)
        selector = TopKSelector(k: k)
    }

    /// The best `k` positions of `scores` not in `excluded` (out-of-range entries are ignored),
    /// best first, ties to the smaller index.
    public mutating func select<S: Sequence>(_ scores: UnsafeBufferPointer<Float>, k: Int, excluding excluded: S) -> [ScoredIndex]
    where S.Element: BinaryInteger {
        precondition(scores.count == mask.count, "scores and mask differ in length")
        var set: [Int] = []
        for e in excluded {
            let i = Int(e)
            if i >= 0 && i < mask.count && !mask[i] { mask[i] = true; set.append(i) }
        }
        selector.reset(k: k)
        mask.withUnsafeBufferPointer { selector.push(scores: scores, excluded: set.isEmpty ? nil : $0) }
        for i in set { mask[i] = false }
        return selector.sortedResults()
    }

    /// `select` over an array.
    public mutating func select<S: Sequence>(_ scores: [Float], k: Int, excluding excluded: S) -> [ScoredIndex] where S.Element: BinaryInteger {
        scores.withUnsafeBufferPointer { select($0, k: k, excluding: excluded) }
    }
}

/// Reference top-k by a full sort: the test oracle for `TopKSelector` and `MaskedTopK`.
public func referenceTopK(_ scores: [Float], k: Int, excluded: Set<Int> = []) -> [ScoredIndex] {
    let all = scores.indices.filter { !excluded.contains($0) }.map { ScoredIndex(index: $0, score: scores[$0]) }
    let sorted = all.sorted { ScoredIndex.ranksBefore($0.score, $0.index, $1.score, $1.index) }
    return Array(sorted.prefix(max(0, k)))
}

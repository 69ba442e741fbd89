import _AffinityKernels

/// One scored entry of a ranking: an internal index and its score (higher is better).
public struct ScoredIndex: Sendable, Hashable, Codable {
    public var index: Int
    public var score: Float
    public init(index: Int, score: Float) {
        self.index = index
        self.score = score
    }

    /// The ranking order of the whole project: higher score first, ties to the smaller index.
    /// NaN ranks below every number so a broken score can never win (NaNs among themselves: by index).
    @inline(__always)
    public static func ranksBefore(_ aScore: Float, _ aIndex: Int, _ bScore: Float, _ bIndex: Int) -> Bool {
        if aScore == bScore || (aScore.isNaN && bScore.isNaN) { return aIndex < bIndex }
        if aScore.isNaN { return false }
        if bScore.isNaN { return true }
        return aScore > bScore
    }
}

/// Bounded top-k selection over a stream of (index, score), best first, ties to the smaller index.
///
/// A binary heap with the *worst* kept entry at the root, so each candidate costs one comparison
/// unless it enters the top k. The heap lives in C (`affinity_topk_select`, the same heap as the
/// exact search's tiles): a whole score vector is offered in one call, its vector pass comparing 16
/// scores at a time against the root. Reuse one selector per thread with `reset(k:)`: after the
/// first use a selection allocates nothing. `referenceTopK` (a full sort) is its test oracle.
/// - Complexity: O(n log k) for n pushes, O(k log k) for `sortedResults`.
public struct TopKSelector: Sendable {
    public private(set) var k: Int
    private var scores: [Float]
    private var indices: [Int64]
    private var filled = 0

    public init(k: Int) {
        precondition(k >= 0, "k must not be negative")
        self.k = k
        scores = [Float](repeating: 0, count: k)
        indices = [Int64](repeating: 0, count: k)
    }

    /// Empties the selector and sets a new bound, keeping the storage.
    public mutating func reset(k: Int) {
        precondition(k >= 0, "k must not be negative")
        self.k = k
        filled = 0
        if scores.count < k {
            scores = [Float](repeating: 0, count: k)
            indices = [Int64](repeating: 0, count: k)
        }
    }

    public var count: Int { filled }

    /// Offers one candidate.
    @inline(__always)
    public mutating func push(index: Int, score: Float) {
        if filled == k && (k == 0 || score < scores[0]) { return }   // the common case, without a call
        var s = score
        offer(&s, excluded: nil, count: 1, firstIndex: index)
    }

    /// Offers every entry of `scores` whose position is not excluded.
    /// `excluded` marks positions that must not be returned (seen or filtered items).
    public mutating func push(scores values: UnsafeBufferPointer<Float>, excluded: UnsafeBufferPointer<Bool>? = nil) {
        guard let base = values.baseAddress, values.count > 0 else { return }
        if let excluded {
            precondition(excluded.count == values.count, "exclusion mask and scores differ in length")
            excluded.withMemoryRebound(to: UInt8.self) { offer(base, excluded: $0.baseAddress, count: values.count, firstIndex: 0) }
        } else {
            offer(base, excluded: nil, count: values.count, firstIndex: 0)
        }
    }

    private mutating func offer(_ values: UnsafePointer<Float>, excluded: UnsafePointer<UInt8>?, count n: Int, firstIndex: Int) {
        guard k > 0 else { return }
        var c = filled
        let k = self.k
        scores.withUnsafeMutableBufferPointer { hs in
            indices.withUnsafeMutableBufferPointer { hi in
                _ = affinity_topk_select(values, excluded, n, Int64(firstIndex), hs.baseAddress!, hi.baseAddress!, k, &c)
            }
        }
        filled = c
    }

    /// The kept entries, best first. The selector is left unchanged.
    public func sortedResults() -> [ScoredIndex] {
        var s = Array(scores[0..<filled]), i = Array(indices[0..<filled])
        affinity_topk_sort(&s, &i, filled)
        return (0..<filled).map { ScoredIndex(index: Int(i[$0]), score: s[$0]) }
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

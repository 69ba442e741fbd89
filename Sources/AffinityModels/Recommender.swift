import AffinityLinalg

/// One recommended or similar item: internal item index and score (higher is better).
public typealias ScoredItem = ScoredIndex

/// Errors of querying or configuring a model; each says what was wrong and with which value.
public enum ModelError: Error, CustomStringConvertible, Equatable {
    case unknownUser(String)
    case unknownItem(String)
    case userOutOfRange(Int, count: Int)
    case itemOutOfRange(Int, count: Int)
    case invalidK(Int)
    case invalidSetting(name: String, reason: String)
    case unknownModelType(String, known: [String])
    case tooLarge(String)

    public var description: String {
        switch self {
        case .unknownUser(let id): return "unknown user '\(id)' (not in the model's training data; --cold-start popular recommends popular items instead)"
        case .unknownItem(let id): return "unknown item '\(id)' (not in the model's training data)"
        case .userOutOfRange(let u, let n): return "user index \(u) is outside 0..<\(n)"
        case .itemOutOfRange(let i, let n): return "item index \(i) is outside 0..<\(n)"
        case .invalidK(let k): return "k must be a positive number of items, got \(k)"
        case .invalidSetting(let name, let reason): return "setting '\(name)': \(reason)"
        case .unknownModelType(let t, let known): return "unknown model '\(t)'; known models: \(known.joined(separator: ", "))"
        case .tooLarge(let why): return why
        }
    }
}

/// The interface every recommender implements (implicit's `RecommenderBase` is the model).
///
/// Everything is in internal index space: users `0..<userCount`, items `0..<itemCount`, as assigned
/// by the training data's vocabularies (`TrainedModel` maps raw IDs). Results are best first, ties
/// go to the smaller item index, and lists are never padded: a `k` larger than what is allowed
/// returns every allowed item once.
public protocol Recommender: Sendable {
    /// The binary users x items matrix the model was fitted on: each user's seen items.
    var interactions: SparseMatrix { get }

    /// Writes the score of every item for a known user into `scores` (length `itemCount`).
    func scores(forUser user: Int, into scores: UnsafeMutableBufferPointer<Float>)

    /// Scores of several known users, row after row (`users.count` x `itemCount`), each row equal
    /// to `scores(forUser:into:)`. The default scores one user at a time; embedding models read
    /// their item vectors once for the whole block (the evaluator's fast path).
    func scores(forUsers users: [Int], into scores: UnsafeMutableBufferPointer<Float>)

    /// Scores of every item for a history the model never saw (fold-in): a new or anonymous user.
    func scores(forHistory history: [Int]) -> [Float]

    /// The items most similar to `item`, best first, `item` itself excluded.
    func similarItems(to item: Int, k: Int) throws -> [ScoredItem]
}

extension Recommender {
    public func scores(forUsers users: [Int], into scores: UnsafeMutableBufferPointer<Float>) {
        let n = itemCount
        precondition(scores.count >= users.count * n, "the output holds \(scores.count) scores, need \(users.count) x \(n)")
        for (r, user) in users.enumerated() {
            self.scores(forUser: user, into: UnsafeMutableBufferPointer(rebasing: scores[(r * n)..<((r + 1) * n)]))
        }
    }

    public var userCount: Int { interactions.rowCount }
    public var itemCount: Int { interactions.columnCount }

    /// The items a user was trained on.
    public func seenItems(ofUser user: Int) -> [Int] { interactions.row(user).map { Int($0) } }

    /// Scores of every item for a known user.
    public func scores(forUser user: Int) -> [Float] {
        var out = [Float](repeating: 0, count: itemCount)
        out.withUnsafeMutableBufferPointer { scores(forUser: user, into: $0) }
        return out
    }

    /// The top `k` items for a known user, excluding the user's seen items and `excluding`.
    public func recommend(user: Int, k: Int, excluding: Set<Int> = []) throws -> [ScoredItem] {
        guard user >= 0 && user < userCount else { throw ModelError.userOutOfRange(user, count: userCount) }
        guard k > 0 else { throw ModelError.invalidK(k) }
        let s = scores(forUser: user)
        return topK(s, k: k, excluded: excluding.union(seenItems(ofUser: user)))
    }

    /// The top `k` items for a history the model never saw, excluding the history and `excluding`.
    public func recommend(history: [Int], k: Int, excluding: Set<Int> = []) throws -> [ScoredItem] {
        guard k > 0 else { throw ModelError.invalidK(k) }
        for i in history where i < 0 || i >= itemCount { throw ModelError.itemOutOfRange(i, count: itemCount) }
        return topK(scores(forHistory: history), k: k, excluded: excluding.union(history))
    }

    /// Recommendations for many users at once, in parallel; element `n` equals
    /// `recommend(user: users[n], k: k)`.
    public func recommend(users: [Int], k: Int, threads: Int = 0) throws -> [[ScoredItem]] {
        guard k > 0 else { throw ModelError.invalidK(k) }
        for u in users where u < 0 || u >= userCount { throw ModelError.userOutOfRange(u, count: userCount) }
        var out = [[ScoredItem]](repeating: [], count: users.count)
        out.withUnsafeMutableBufferPointer { buffer in
            let shared = SharedMutableBuffer(buffer)
            Parallelism.forEachRange(users.count, grain: 32, threads: threads) { range in
                var s = [Float](repeating: 0, count: itemCount)
                var top = MaskedTopK(count: itemCount)
                for n in range {
                    let u = users[n]
                    s.withUnsafeMutableBufferPointer { scores(forUser: u, into: $0) }
                    shared[n] = top.select(s, k: k, excluding: interactions.row(u))
                }
            }
        }
        return out
    }
}

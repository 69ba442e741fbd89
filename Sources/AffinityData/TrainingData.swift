import AffinityLinalg

/// What every model's `fit` takes: the binary users x items matrix, each user's items in time
/// order, and (optionally) held-out next items for validation during training.
///
/// The matrix is what the collaborative-filtering models read; sequential models (Item2Vec,
/// SASRec) read `sequences`. Built from a log, a sequence is the user's rows ordered by timestamp,
/// ties (and logs without timestamps) by file order; an item the user has several times keeps each
/// occurrence. `timeOrdered` says whether the order came from timestamps, so that a model that
/// needs time (SASRec) can refuse a log without it and say why.
public struct TrainingData: Sendable {
    public let interactions: SparseMatrix
    /// Per user (internal index), their items in time order.
    public let sequences: [[Int]]
    /// True when `sequences` are ordered by timestamps, false when by file or index order only.
    public let timeOrdered: Bool
    /// Per user, the items held out as the next ones after their sequence (a leave-last-out
    /// split's `valid.tsv`), for validation and early stopping; nil when there are none.
    public var validationTargets: [[Int]]?
    /// Dense item vectors (items x d, vocabulary order), e.g. sentence vectors of item text; zero
    /// rows for items without one. Read by the models that use item content (`text-knn`).
    public var itemVectors: Matrix?

    /// From a matrix alone: sequences in item-index order, not time-ordered.
    public init(interactions: SparseMatrix) {
        self.interactions = interactions
        sequences = (0..<interactions.rowCount).map { interactions.row($0).map { Int($0) } }
        timeOrdered = false
        validationTargets = nil
    }

    /// From a matrix and each user's items in order (`timeOrdered`: the order is time's).
    public init(interactions: SparseMatrix, sequences: [[Int]], timeOrdered: Bool) {
        precondition(sequences.count == interactions.rowCount, "one sequence per user")
        self.interactions = interactions
        self.sequences = sequences
        self.timeOrdered = timeOrdered
        validationTargets = nil
    }

    /// From a log: the binary matrix and each user's rows in timestamp order (stable: ties keep
    /// file order).
    public init(log: InteractionLog) {
        interactions = log.matrix()
        var rows = [[Int]](repeating: [], count: log.userCount)
        for r in 0..<log.count { rows[Int(log.userIndices[r])].append(r) }
        let ordered: [[Int]]
        if let t = log.timestamps {
            ordered = rows.map { rs in rs.sorted { (t[$0], $0) < (t[$1], $1) } }
        } else {
            ordered = rows
        }
        sequences = ordered.map { rs in rs.map { Int(log.itemIndices[$0]) } }
        timeOrdered = log.timestamps != nil
        validationTargets = nil
    }

    /// This data with `valid` (a log of held-out next items, in any vocabulary) as validation
    /// targets, mapped into the index space of `users` and `items` (those of the training log);
    /// rows of unknown users or items are left out.
    public func withValidation(_ valid: InteractionLog, users: IDVocabulary, items: IDVocabulary) -> TrainingData {
        precondition(users.count == interactions.rowCount, "the users vocabulary does not match the matrix")
        var out = self
        out.validationTargets = valid.itemsByUser(users: users, items: items)
        return out
    }

    public var userCount: Int { interactions.rowCount }
    public var itemCount: Int { interactions.columnCount }
}

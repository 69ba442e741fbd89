import AffinityData
import AffinityLinalg

/// Which held-out target of a split is evaluated.
public enum EvaluationTarget: String, Sendable, Codable, CaseIterable {
    /// `test.tsv`; for a leave-last-out split the validation item joins the history (docs/protocol.md).
    case test
    /// `valid.tsv`, with train alone as history.
    case valid
}

/// Ground truth and exclusions of one evaluation, in a model's index space (docs/protocol.md "Metrics").
///
/// Candidates are every item of `items` (a model trained on the split's `train.tsv` has exactly the
/// items seen in train, indexed by first appearance). `history` holds what each user already has
/// (train, plus validation for a leave-last-out test target): it is excluded from the ranking and
/// test items found in it are ignored.
public struct EvaluationData: Sendable {
    public let users: IDVocabulary
    public let items: IDVocabulary
    /// users x items, binary: excluded from each user's ranking.
    public let history: SparseMatrix
    /// Internal indexes of evaluated users (those with at least one usable test item), ascending.
    public private(set) var evaluatedUsers: [Int]
    /// Test items of each evaluated user, sorted and unique (parallel to `evaluatedUsers`).
    public private(set) var testItems: [[Int32]]
    /// Rows and users that could not be evaluated, with the reason as key.
    public let skipped: [String: Int]

    public var candidateCount: Int { items.count }

    /// An evaluation built in memory, in index space: `history` (users x items, excluded from each
    /// ranking) and each user's held-out items (`targets[u]`, empty: not evaluated). A model's
    /// validation during training uses it (SASRec's next-item targets). IDs are the indexes.
    public init(history: SparseMatrix, targets: [[Int]]) {
        precondition(targets.count == history.rowCount, "one target list per user")
        users = IDVocabulary((0..<history.rowCount).map(String.init))
        items = IDVocabulary((0..<history.columnCount).map(String.init))
        self.history = history
        var evaluated: [Int] = [], truth: [[Int32]] = []
        var inHistory = 0
        for (u, t) in targets.enumerated() {
            let kept = Set(t.filter { $0 >= 0 && $0 < history.columnCount && !history.contains(row: u, column: $0) })
            inHistory += t.count - kept.count
            if !kept.isEmpty { evaluated.append(u); truth.append(kept.sorted().map { Int32($0) }) }
        }
        evaluatedUsers = evaluated
        testItems = truth
        skipped = inHistory > 0 ? ["test_rows_in_history": inHistory] : [:]
    }

    /// This evaluation on `count` of its users drawn at random (seeded; every user when there are
    /// no more than `count`), still in ascending order: for timing and quick checks on data sets
    /// with millions of users. Metrics of a sample estimate those of all users.
    public func sampling(users count: Int, seed: UInt64) -> EvaluationData {
        guard count >= 0, count < evaluatedUsers.count else { return self }
        var rng = SeededGenerator(seed: seed)
        let chosen = rng.permutation(evaluatedUsers.count).prefix(count).sorted()
        var out = self
        out.evaluatedUsers = chosen.map { evaluatedUsers[$0] }
        out.testItems = chosen.map { testItems[$0] }
        return out
    }

    /// Builds the evaluation of `split` in the index space of `users` and `items` (a trained
    /// model's vocabularies; by default those of the split's own `train.tsv`).
    public init(split: SplitFolder, users: IDVocabulary? = nil, items: IDVocabulary? = nil, target: EvaluationTarget = .test) throws {
        let users = users ?? split.train.users
        let items = items ?? split.train.items
        guard let truth = target == .test ? split.test : split.valid else {
            throw DataError.invalidSetting(name: "target valid", reason: "\(split.path) has no validation part (valid.tsv): a holdout split has none; use --target test, or a leave-last-out split")
        }
        var skipped: [String: Int] = [:]
        var historyLogs = [split.train]
        if target == .test, let valid = split.valid { historyLogs.append(valid) }
        var hu: [Int32] = [], hi: [Int32] = []
        for (k, log) in historyLogs.enumerated() {
            let mapped = log.mapped(users: users, items: items)
            hu += mapped.users
            hi += mapped.items
            if mapped.skipped > 0 { skipped[k == 0 ? "train_rows_not_in_model" : "valid_rows_not_in_model"] = mapped.skipped }
        }
        let history = SparseMatrix(rowCount: users.count, columnCount: items.count, rows: hu, cols: hi).binarized()

        var perUser: [Int: Set<Int32>] = [:]
        var coldUsers = Set<String>()
        var notCandidate = 0, inHistory = 0
        for r in 0..<truth.count {
            let userID = truth.users[Int(truth.userIndices[r])]
            let itemID = truth.items[Int(truth.itemIndices[r])]
            guard let u = users.index(of: userID) else { coldUsers.insert(userID); continue }
            guard let i = items.index(of: itemID) else { notCandidate += 1; continue }
            if history.contains(row: u, column: i) { inHistory += 1; continue }
            perUser[u, default: []].insert(Int32(i))
        }
        if !coldUsers.isEmpty { skipped["cold_test_users"] = coldUsers.count }
        if notCandidate > 0 { skipped["test_rows_item_not_candidate"] = notCandidate }
        if inHistory > 0 { skipped["test_rows_in_history"] = inHistory }
        self.users = users
        self.items = items
        self.history = history
        self.evaluatedUsers = perUser.keys.sorted()
        self.testItems = evaluatedUsers.map { perUser[$0]!.sorted() }
        self.skipped = skipped
    }
}

import AffinityLinalg
import Foundation

/// How a log is divided into train and test (docs/protocol.md "Splits").
public enum SplitStrategy: String, CaseIterable, Sendable, Codable {
    /// Per user, a seeded random `round(testFraction * n)` (at least 1) of the positives go to test.
    case holdout
    /// Per user, by timestamp: last -> test, the one before -> validation, the rest -> train.
    case leaveLastOut = "leave-last-out"
    /// One global time cut: the latest `testFraction` of all interactions go to test.
    case temporal
}

/// Everything that determines a split. Every field has a default; `validate()` checks ranges.
public struct SplitSettings: Sendable, Codable, Equatable {
    /// Which split to make.
    public var strategy: SplitStrategy = .holdout
    /// Share of each user's positives (holdout) or of all positives (temporal) put into test.
    public var testFraction: Double = 0.2
    /// Seed of the holdout shuffle.
    public var seed: UInt64 = 42
    /// Ratings at or above this are implicit positives; lower ones are dropped. nil keeps every row.
    public var minRating: Float? = 4
    /// Users with fewer distinct positives are dropped before splitting.
    public var minUserPositives: Int = 5

    public init(strategy: SplitStrategy = .holdout, testFraction: Double = 0.2, seed: UInt64 = 42,
                minRating: Float? = 4, minUserPositives: Int = 5) {
        self.strategy = strategy
        self.testFraction = testFraction
        self.seed = seed
        self.minRating = minRating
        self.minUserPositives = minUserPositives
    }

    public func validate() throws {
        guard testFraction > 0 && testFraction < 1 else {
            throw DataError.invalidSetting(name: "test-fraction", reason: "must be strictly between 0 and 1, got \(testFraction)")
        }
        guard minUserPositives >= 0 else {
            throw DataError.invalidSetting(name: "min-user-positives", reason: "must not be negative, got \(minUserPositives)")
        }
    }
}

/// A split: row lists into one positives log, plus how it was made.
public struct DatasetSplit: Sendable {
    /// The positives after rating and user filters, in source order; the rows below index it.
    public var positives: InteractionLog
    public var trainRows: [Int]
    public var testRows: [Int]
    public var validRows: [Int]?
    public var settings: SplitSettings
    /// Counts for meta.json: filters, rows removed, sizes.
    public var facts: [String: Int]

    public var train: InteractionLog { positives.selecting(rows: trainRows) }
    public var test: InteractionLog { positives.selecting(rows: testRows) }
    public var valid: InteractionLog? { validRows.map { positives.selecting(rows: $0) } }
}

public enum Splitter {
    /// Applies the implicit-feedback and user filters of docs/protocol.md, then splits.
    public static func split(_ log: InteractionLog, settings: SplitSettings) throws -> DatasetSplit {
        try settings.validate()
        var facts: [String: Int] = ["source_rows": log.count]
        var positives = log
        if let minRating = settings.minRating { positives = positives.implicitPositives(minRating: minRating) }
        facts["positives"] = positives.count
        facts["users_with_positives"] = positives.userCount
        positives = positives.droppingUsers(withFewerThan: settings.minUserPositives)
        facts["users_kept"] = positives.userCount
        facts["positives_kept"] = positives.count
        guard positives.count > 0 else {
            // Name the filter that emptied the log and the flag that changes it.
            let ratingStep = settings.minRating.flatMap { minimum in
                log.ratings == nil ? nil : "rating >= \(InteractionWriter.formatRating(minimum)) kept \(facts["positives"] ?? 0) of \(log.count) rows (--min-rating sets the threshold, --all-ratings keeps every row)"
            }
            let userStep = "users with >= \(settings.minUserPositives) distinct positives kept \(facts["users_kept"] ?? 0) of \(facts["users_with_positives"] ?? 0) users (--min-user-positives)"
            throw DataError.unsupported("\(log.source): no interactions left after the filters: " + [ratingStep, userStep].compactMap { $0 }.joined(separator: "; "))
        }
        var split: DatasetSplit
        switch settings.strategy {
        case .holdout: split = holdout(positives, settings: settings)
        case .leaveLastOut: split = try leaveLastOut(positives, settings: settings)
        case .temporal: split = try temporal(positives, settings: settings)
        }
        split.facts.merge(facts) { a, _ in a }
        return split
    }

    static func holdout(_ log: InteractionLog, settings: SplitSettings) -> DatasetSplit {
        var rng = SeededGenerator(seed: settings.seed)
        var train: [Int] = [], test: [Int] = []
        for rows in log.rowsByUser() {
            let n = rows.count
            guard n > 0 else { continue }
            let perm = rng.permutation(n)
            // Python's round() rounds half to even; so do we, to match the shared splits' counts.
            let nTest = max(1, Int((settings.testFraction * Double(n)).rounded(.toNearestOrEven)))
            var isTest = [Bool](repeating: false, count: n)
            for k in perm.prefix(nTest) { isTest[k] = true }
            for k in 0..<n { if isTest[k] { test.append(rows[k]) } else { train.append(rows[k]) } }
        }
        return finish(log, train: train, test: test, valid: nil, settings: settings)
    }

    static func leaveLastOut(_ log: InteractionLog, settings: SplitSettings) throws -> DatasetSplit {
        guard let times = log.timestamps else {
            throw DataError.unsupported("\(log.source): leave-last-out needs timestamps, and this file has none")
        }
        var train: [Int] = [], test: [Int] = [], valid: [Int] = []
        for rows in log.rowsByUser() {
            // Stable by timestamp, ties by file order.
            let ordered = rows.enumerated().sorted { a, b in
                times[a.element] != times[b.element] ? times[a.element] < times[b.element] : a.offset < b.offset
            }.map(\.element)
            switch ordered.count {
            case 0: continue
            case 1: train.append(ordered[0])
            case 2:
                train.append(ordered[0])
                test.append(ordered[1])
            default:
                train.append(contentsOf: ordered.dropLast(2).sorted())
                valid.append(ordered[ordered.count - 2])
                test.append(ordered[ordered.count - 1])
            }
        }
        return finish(log, train: train.sorted(), test: test, valid: valid, settings: settings)
    }

    static func temporal(_ log: InteractionLog, settings: SplitSettings) throws -> DatasetSplit {
        guard let times = log.timestamps else {
            throw DataError.unsupported("\(log.source): a temporal split needs timestamps, and this file has none")
        }
        let ordered = (0..<log.count).sorted { times[$0] != times[$1] ? times[$0] < times[$1] : $0 < $1 }
        let cut = Int(((1 - settings.testFraction) * Double(ordered.count)).rounded(.toNearestOrEven))
        let train = ordered.prefix(cut).sorted()
        let trainUsers = Set(train.map { log.userIndices[$0] })
        // Test users who never appear in train cannot be ranked; they are removed like unseen items.
        let test = ordered.dropFirst(cut).filter { trainUsers.contains(log.userIndices[$0]) }.sorted()
        var split = finish(log, train: Array(train), test: test, valid: nil, settings: settings)
        split.facts["test_rows_removed_user_not_in_train"] = ordered.count - cut - test.count
        return split
    }

    /// Removes test/validation rows whose item never appears in train (they cannot be ranked).
    static func finish(_ log: InteractionLog, train: [Int], test: [Int], valid: [Int]?, settings: SplitSettings) -> DatasetSplit {
        var inTrain = [Bool](repeating: false, count: log.itemCount)
        for r in train { inTrain[Int(log.itemIndices[r])] = true }
        let keptTest = test.filter { inTrain[Int(log.itemIndices[$0])] }
        let keptValid = valid?.filter { inTrain[Int(log.itemIndices[$0])] }
        var facts = ["test_rows_removed_item_not_in_train": test.count - keptTest.count]
        if let valid, let keptValid { facts["valid_rows_removed_item_not_in_train"] = valid.count - keptValid.count }
        return DatasetSplit(positives: log, trainRows: train, testRows: keptTest, validRows: keptValid, settings: settings, facts: facts)
    }
}

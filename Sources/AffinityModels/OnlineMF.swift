import AffinityData
import AffinityLinalg
import AffinityNN
import Foundation

// Online matrix factorisation: user and item vectors in embedding tables keyed by external IDs,
// learned one event batch at a time.
//
// Why matrix factorisation and not a two-tower with features: the event stream carries IDs only, and
// a two-tower whose towers see only IDs is matrix factorisation; per event it costs one user row, one
// item row and the sampled negatives' rows, so a trainer keeps up with thousands of events per second
// on one core beside the request path, and its dot-product vectors go straight into the serving
// path's HNSW index. The loss is the two-tower one: sampled softmax with negatives from a reservoir
// of recent item occurrences (so drawn about as often as items occur) and the logQ correction of
// their sampling probability (Yi et al., RecSys 2019), which makes the softmax estimate the full
// one. Tables are `CollisionlessEmbeddingTable`s (Monolith) or, as the baseline, `HashedEmbeddingTable`s.

/// One interaction as the online learner sees it: every event is a positive.
public struct OnlineEvent: Sendable, Equatable {
    public var user: String
    public var item: String
    /// Seconds (the event's timestamp, or when it arrived): ages IDs for expiry.
    public var time: Int64
    public init(user: String, item: String, time: Int64) {
        self.user = user
        self.item = item
        self.time = time
    }
}

public enum OnlineError: Error, CustomStringConvertible, Equatable {
    /// The loss or a vector went NaN or infinite: the learner stops (its tables may hold the bad values).
    case nonFinite(eventsLearned: Int)
    case incompatible(String)
    case corruptState(path: String, reason: String)

    public var description: String {
        switch self {
        case .nonFinite(let n): return "online training diverged (non-finite loss after \(n) events); lower learningRate"
        case .incompatible(let s): return s
        case let .corruptState(path, reason): return "\(path): online state does not read: \(reason)"
        }
    }
}

/// Matrix factorisation learned online (see the file comment): the published, servable form.
/// `affinity train --model-type online-mf` fits it in batch (epochs over the positives in a seeded
/// random order, with the same update the online learner makes per event); `affinity serve --online`
/// goes on learning it from the event stream (`OnlineLearner`).
public struct OnlineMF: FactorizationRecommender {
    public enum TableKind: String, Codable, Sendable, CaseIterable, SettingChoice { case collisionless, hashed }

    public struct Configuration: ModelConfiguration {
        public static let settingHelp: [String: String] = [
            "dimension": "vector width",
            "learningRate": "Adagrad step size",
            "regularization": "L2 on the rows each event touches",
            "negatives": "negatives per event (from the reservoir)",
            "reservoir": "recent item occurrences to sample from",
            "logQ": "logit minus log sampling probability",
            "epochs": "passes over the positives (train)",
            "table": "collisionless (a row per ID) or hashed",
            "userRows": "rows of the hashed user table",
            "itemRows": "rows of the hashed item table",
            "minCount": "occurrences before an ID gets a row",
            "expireAfterDays": "days unseen before a row is freed (0: never)",
            "maxRows": "memory bound of each table, in rows",
            "maxHistory": "recent items kept per user",
            "foldInEpochs": "passes to place a user without a row",
            "seed": "initialisation and sampling",
        ]
        public var dimension: Int = 64
        public var learningRate: Double = 0.05
        public var regularization: Double = 0
        public var negatives: Int = 64
        public var reservoir: Int = 50_000
        public var logQ: Bool = true
        public var epochs: Int = 10
        public var table: TableKind = .collisionless
        public var userRows: Int = 100_000
        public var itemRows: Int = 100_000
        public var minCount: Int = 1
        public var expireAfterDays: Double = 0
        public var maxRows: Int = 10_000_000
        public var maxHistory: Int = 500
        public var foldInEpochs: Int = 20
        public var seed: UInt64 = 42
        public init() {}

        public func validate() throws {
            func check(_ ok: Bool, _ name: String, _ reason: String) throws {
                guard ok else { throw ModelError.invalidSetting(name: name, reason: reason) }
            }
            try check((1...4096).contains(dimension), "dimension", "must be in 1...4096, got \(dimension)")
            try check(learningRate > 0 && learningRate.isFinite, "learningRate", "must be positive")
            try check(regularization >= 0 && regularization.isFinite, "regularization", "must not be negative")
            try check((1...10_000).contains(negatives), "negatives", "must be in 1...10000, got \(negatives)")
            try check((1...100_000_000).contains(reservoir), "reservoir", "must be in 1...100000000, got \(reservoir)")
            try check(epochs >= 0, "epochs", "must not be negative")
            try check(userRows >= 1 && itemRows >= 1, "userRows", "hashed tables need at least one row")
            try check(minCount >= 1, "minCount", "must be at least 1")
            try check(expireAfterDays >= 0 && expireAfterDays <= 36_500, "expireAfterDays", "must be in 0...36500 (days), got \(expireAfterDays)")
            try check((1...Int(Int32.max)).contains(maxRows), "maxRows", "must be in 1...\(Int32.max)")
            try check(maxHistory >= 1, "maxHistory", "must be at least 1")
            try check(foldInEpochs >= 0, "foldInEpochs", "must not be negative")
        }

        /// The settings of one of this model's tables.
        func tableSettings(seed: UInt64) -> EmbeddingTableSettings {
            var s = EmbeddingTableSettings(dimension: dimension, admission: minCount > 1 ? .minCount(minCount) : .always,
                                           expireAfter: expireAfterDays > 0 ? Int64(expireAfterDays * 86_400) : nil,
                                           maxRows: maxRows, initialScale: 0.05, accumulators: true, seed: seed)
            if table == .hashed { s.maxRows = max(maxRows, userRows, itemRows) }
            return s
        }
    }

    public static let modelType = "online-mf"
    public let configuration: Configuration
    public let interactions: SparseMatrix
    public let factors: FactorModel

    public init(configuration: Configuration, interactions: SparseMatrix, factors: FactorModel) {
        self.configuration = configuration
        self.interactions = interactions
        self.factors = factors
    }

    public static func fit(_ interactions: SparseMatrix, configuration: Configuration = Configuration()) throws -> OnlineMF {
        try fit(interactions, configuration: configuration, progress: nil)
    }

    /// Batch training: `epochs` passes over the positives, each in a seeded random order, through
    /// `OnlineLearner.learn` (user and item keys are their indexes).
    public static func fit(_ interactions: SparseMatrix, configuration c: Configuration, progress: TrainingProgress.Handler?) throws -> OnlineMF {
        try c.validate()
        let x = interactions.binarized()
        try MemoryBudget.check(bytes: Double(x.rowCount + x.columnCount) * Double(c.dimension) * 8 + Double(x.nonZeroCount) * 48,
                               for: "online-mf with dimension=\(c.dimension) on \(x.rowCount) users x \(x.columnCount) items")
        let learner = try OnlineLearner(configuration: c)
        var events: [OnlineEvent] = []
        events.reserveCapacity(x.nonZeroCount)
        for u in 0..<x.rowCount { for i in x.row(u) { events.append(OnlineEvent(user: String(u), item: String(i), time: 0)) } }
        var reporter = ProgressReporter(progress, model: modelType, epochs: c.epochs, exampleName: "positives")
        try learner.learn(epochs: c.epochs, of: events, seed: c.seed) { epoch, loss in
            reporter.endOfEpoch(epoch, examples: epoch * events.count, loss: loss)
        }
        return learner.model(users: (0..<x.rowCount).map(String.init), items: (0..<x.columnCount).map(String.init), interactions: x)
    }

    /// Fold-in: a fresh vector for the history's user, trained as the online learner trains a new
    /// user (`foldInEpochs` passes of the softmax update, negatives uniform over the items, items fixed).
    public func userFactors(history: [Int]) -> [Float] {
        let d = factors.factors, n = itemCount
        let positives = Array(Set(history.filter { $0 >= 0 && $0 < n })).sorted()
        var w = [Float](repeating: 0, count: d)
        guard !positives.isEmpty, n > 1 else { return w }
        var g = SeededGenerator(seed: configuration.seed ^ SeededGenerator.fingerprint(positives))
        for k in 0..<d { w[k] = Float(g.nextGaussian()) * 0.05 }
        var acc = [Float](repeating: 0, count: d)
        let negatives = min(configuration.negatives, n - 1)
        var rows = [Int](repeating: 0, count: negatives + 1)
        var step = SoftmaxStep(configuration)
        factors.itemFactors.values.withUnsafeBufferPointer { v in
            w.withUnsafeMutableBufferPointer { wp in
                acc.withUnsafeMutableBufferPointer { ap in
                    for _ in 0..<configuration.foldInEpochs {
                        for i in positives {
                            rows[0] = i
                            for k in 1...negatives {
                                var j = g.next(below: n)
                                while j == i { j = g.next(below: n) }
                                rows[k] = j
                            }
                            _ = step.step(user: wp.baseAddress!, accumulator: ap.baseAddress!, count: negatives + 1,
                                          // Items fixed (no accumulators): never written through.
                                          row: { UnsafeMutablePointer(mutating: v.baseAddress! + rows[$0] * d) }, offset: { _ in 0 },
                                          itemAccumulator: nil)
                        }
                    }
                }
            }
        }
        return w
    }
}

/// One Adagrad step of the sampled softmax for one user row: logits u·v_k − offset_k over item rows
/// k (the positive first), cross-entropy on the positive, the user row stepped and, when item
/// accumulators are given, every item row too (gradients from the values before the step). The
/// online learner's per-event update and the fold-in's (items fixed) are this one step.
struct SoftmaxStep {
    let dimension: Int, learningRate: Float, regularization: Float
    private var logits: [Float] = []
    private var userGrad: [Float], userCopy: [Float]

    init(_ c: OnlineMF.Configuration) {
        dimension = c.dimension
        learningRate = Float(c.learningRate)
        regularization = Float(c.regularization)
        logits.reserveCapacity(c.negatives + 1)
        userGrad = [Float](repeating: 0, count: c.dimension)
        userCopy = [Float](repeating: 0, count: c.dimension)
    }

    /// The loss (−log p of row 0) before the step; nil, with nothing changed, when it is not finite.
    @inline(__always)
    mutating func step(user up: UnsafeMutablePointer<Float>, accumulator ua: UnsafeMutablePointer<Float>, count: Int,
                       row: (Int) -> UnsafeMutablePointer<Float>, offset: (Int) -> Float,
                       itemAccumulator: ((Int) -> UnsafeMutablePointer<Float>)?) -> Float? {
        let d = dimension, lr = learningRate, reg = regularization
        logits.removeAll(keepingCapacity: true)
        for k in 0..<count { logits.append(Kernels.dot(up, row(k), count: d) - offset(k)) }
        softmaxInPlace(&logits)
        let loss = -log(max(logits[0], 1e-30))
        guard loss.isFinite, logits[0].isFinite else { return nil }
        for j in 0..<d { userCopy[j] = up[j]; userGrad[j] = reg * up[j] }
        for k in 0..<count {
            let coefficient = logits[k] - (k == 0 ? 1 : 0)
            let vp = row(k)
            for j in 0..<d { userGrad[j] += coefficient * vp[j] }
            // Item row k: gradient coefficient · u (+ L2).
            if let ap = itemAccumulator?(k) {
                for j in 0..<d {
                    let gj = coefficient * userCopy[j] + reg * vp[j]
                    ap[j] += gj * gj
                    vp[j] -= lr * gj / (ap[j].squareRoot() + 1e-8)
                }
            }
        }
        for j in 0..<d {
            ua[j] += userGrad[j] * userGrad[j]
            up[j] -= lr * userGrad[j] / (ua[j].squareRoot() + 1e-8)
        }
        return loss
    }
}

/// The online trainer of `OnlineMF`: learns from event batches, one writer at a time, and publishes
/// a servable `OnlineMF` snapshot on request. Its tables may be read (`userVector`) while it learns.
///
/// Per event (u, i): logits u·v_j − log q_j over the positive and `negatives` items drawn from the
/// reservoir of recent item occurrences (q_j: item j's share of the reservoir), cross-entropy on the
/// positive, Adagrad on the rows touched. An ID the admission filter holds back is not trained (its
/// event still enters the reservoir and the user's history). Deterministic: the negatives of the
/// n-th event learned come from sub-stream n of the seed, so a resumed learner draws what an
/// uninterrupted one would.
public final class OnlineLearner: @unchecked Sendable {
    public let configuration: OnlineMF.Configuration
    public let users: any EmbeddingTable<String>
    public let items: any EmbeddingTable<String>
    private let lock = NSLock()
    /// Every item in order of first occurrence; an item's position there is its ordinal, which the
    /// learner's own arrays use (so the hot loop hashes no strings).
    private var itemOrder: [String] = []
    private var itemOrdinal: [String: Int32] = [:]
    /// Each ordinal's table row as last looked up (-1: look it up); valid until rows expire.
    private var rowCache: [Int32] = []
    /// Ring buffer of recent item occurrences (ordinals) and each ordinal's count in it (the sampling distribution).
    private var recent: [Int32] = []
    private var recentNext = 0
    private var recentCounts: [Int32] = []
    /// Each user's most recent items (ordinals, at most `maxHistory`), users in order of first occurrence.
    private var histories: [String: [Int32]] = [:]
    private var userOrder: [String] = []
    public private(set) var eventsLearned = 0
    /// Mean loss of the last `learn` call.
    public private(set) var lastLoss = 0.0
    /// The newest event time seen (expiry's clock).
    public private(set) var clock: Int64 = 0

    public init(configuration c: OnlineMF.Configuration) throws {
        try c.validate()
        configuration = c
        switch c.table {
        case .collisionless:
            users = try CollisionlessEmbeddingTable<String>(settings: c.tableSettings(seed: c.seed))
            items = try CollisionlessEmbeddingTable<String>(settings: c.tableSettings(seed: c.seed &+ 1))
        case .hashed:
            users = try HashedEmbeddingTable<String>(rows: c.userRows, settings: c.tableSettings(seed: c.seed))
            items = try HashedEmbeddingTable<String>(rows: c.itemRows, settings: c.tableSettings(seed: c.seed &+ 1))
        }
    }

    init(configuration: OnlineMF.Configuration, users: any EmbeddingTable<String>, items: any EmbeddingTable<String>) {
        self.configuration = configuration
        self.users = users
        self.items = items
    }

    /// A learner that starts from a batch-trained embedding model (iALS, BPR, online-mf, two-tower...):
    /// each of its users and items gets a row holding its vector, the training interactions become
    /// the histories and fill the reservoir. Collisionless tables only (a hashed table has no row of
    /// its own to put an ID's vector in).
    public static func starting(from trained: TrainedModel, configuration c: OnlineMF.Configuration,
                                now: Int64 = Int64(Date().timeIntervalSince1970)) throws -> OnlineLearner {
        guard let model = trained.model as? any EmbeddingRecommender else {
            throw OnlineError.incompatible("online learning starts from an embedding model (iALS, BPR, online-mf, two-tower); \(trained.modelType) has no user and item vectors")
        }
        guard c.table == .collisionless else { throw OnlineError.incompatible("starting from a trained model needs table=collisionless") }
        let itemVectors = model.itemEmbeddings
        var config = c
        config.dimension = itemVectors.columns
        config.minCount = 1
        let learner = try OnlineLearner(configuration: config)
        learner.clock = now
        let d = itemVectors.columns
        func put(_ table: any EmbeddingTable<String>, _ key: String, _ vector: UnsafePointer<Float>) throws {
            guard let r = try table.trainingRow(for: key, time: now) else { return }
            table.vector(r).update(from: vector, count: d)
        }
        try itemVectors.values.withUnsafeBufferPointer { v in
            for i in 0..<model.itemCount {
                try put(learner.items, trained.items[i], v.baseAddress! + i * d)
                _ = learner.ordinal(of: trained.items[i])
            }
        }
        for u in 0..<model.userCount {
            let vector = model.userEmbedding(user: u)
            try vector.withUnsafeBufferPointer { try put(learner.users, trained.users[u], $0.baseAddress!) }
            let user = trained.users[u]
            for i in model.seenItems(ofUser: u) {
                let o = learner.ordinal(of: trained.items[i])
                learner.remember(user: user, item: o)
                learner.pushRecent(o)
            }
        }
        return learner
    }

    // MARK: learning

    /// Batch training: `epochs` passes over `events`, each in its own seeded random order;
    /// `epochDone(epoch, loss)` after each (1-based).
    public func learn(epochs: Int, of events: [OnlineEvent], seed: UInt64, epochDone: (Int, Double) -> Void = { _, _ in }) throws {
        var order = events
        for epoch in 0..<epochs {
            var g = SeededGenerator(seed: seed, stream: UInt64(epoch) &+ 0x5EED)
            g.shuffle(&order)
            epochDone(epoch + 1, try learn(order))
        }
    }

    /// Learns `events` in order; returns their mean loss (events whose user or item the admission
    /// filter holds back count as learned, with no loss). Throws `OnlineError.nonFinite` when the
    /// loss diverges and `EmbeddingTableError.memoryBound` when a table is full: the events before
    /// the failing one are learned, the failing one only recorded (history, reservoir), not trained.
    @discardableResult
    public func learn(_ events: [OnlineEvent]) throws -> Double {
        try lock.locked {
            let c = configuration
            var rows = [Int](repeating: 0, count: c.negatives + 1)
            var logQ: [Float] = []
            logQ.reserveCapacity(c.negatives + 1)
            var step = SoftmaxStep(c)
            var total = 0.0, counted = 0
            for event in events {
                clock = max(clock, event.time)
                let o = ordinal(of: event.item)
                defer {
                    remember(user: event.user, item: o)
                    pushRecent(o)
                    eventsLearned += 1
                }
                // Both IDs count this occurrence (admission, last seen) even when the other is held back.
                let userRow = try users.trainingRow(for: event.user, time: event.time)
                let itemRow = try items.trainingRow(for: event.item, time: event.time)
                guard let u = userRow, let i = itemRow else { continue }
                rowCache[Int(o)] = Int32(i)
                var g = SeededGenerator(seed: c.seed, stream: UInt64(eventsLearned))
                rows[0] = i
                var used = 1
                logQ.removeAll(keepingCapacity: true)
                if c.logQ { logQ.append(logProbability(o)) }
                if !recent.isEmpty {
                    for _ in 0..<c.negatives {
                        let negative = recent[g.next(below: recent.count)]
                        guard negative != o, let j = row(ofOrdinal: negative), j != i else { continue }
                        rows[used] = j
                        if c.logQ { logQ.append(logProbability(negative)) }
                        used += 1
                    }
                }
                guard used > 1 else { continue }
                guard let loss = step.step(user: users.vector(u), accumulator: users.accumulator(u), count: used,
                                           row: { self.items.vector(rows[$0]) }, offset: { c.logQ ? logQ[$0] : 0 },
                                           itemAccumulator: { self.items.accumulator(rows[$0]) }) else {
                    throw OnlineError.nonFinite(eventsLearned: eventsLearned)
                }
                total += Double(loss)
                counted += 1
            }
            lastLoss = counted > 0 ? total / Double(counted) : 0
            return lastLoss
        }
    }

    @inline(__always) private func logProbability(_ item: Int32) -> Float {
        let count = max(recentCounts[Int(item)], 1)
        return Float(log(Double(count) / Double(max(recent.count, 1))))
    }

    /// The item's ordinal, giving it the next one on its first occurrence.
    private func ordinal(of item: String) -> Int32 {
        if let o = itemOrdinal[item] { return o }
        let o = Int32(itemOrder.count)
        itemOrder.append(item)
        itemOrdinal[item] = o
        rowCache.append(-1)
        recentCounts.append(0)
        return o
    }

    /// The table row of an item by ordinal (nil without one), through the cache.
    @inline(__always) private func row(ofOrdinal o: Int32) -> Int? {
        let cached = rowCache[Int(o)]
        if cached >= 0 { return Int(cached) }
        guard let r = items.row(of: itemOrder[Int(o)]) else { return nil }
        rowCache[Int(o)] = Int32(r)
        return r
    }

    private func pushRecent(_ item: Int32) {
        if recent.count < configuration.reservoir {
            recent.append(item)
        } else {
            recentCounts[Int(recent[recentNext])] -= 1
            recent[recentNext] = item
            recentNext = (recentNext + 1) % configuration.reservoir
        }
        recentCounts[Int(item)] += 1
    }

    private func remember(user: String, item: Int32) {
        if histories[user] == nil { userOrder.append(user) }
        histories[user, default: []].removeAll { $0 == item }
        histories[user]!.append(item)
        let extra = histories[user]!.count - configuration.maxHistory
        if extra > 0 { histories[user]!.removeFirst(extra) }
    }

    /// Frees rows of IDs not seen for `expireAfterDays` (by event time); returns users and items expired.
    @discardableResult
    public func expire() -> (users: Int, items: Int) {
        lock.locked {
            let expired = (users.expire(now: clock), items.expire(now: clock))
            // Freed rows go to other IDs: look every item's row up again.
            if expired.1 > 0 { for k in rowCache.indices { rowCache[k] = -1 } }
            return expired
        }
    }

    // MARK: reading

    /// The user's vector now (nil without a row: not yet admitted, expired, or never seen).
    public func userVector(_ user: String) -> [Float]? {
        guard let r = users.row(of: user) else { return nil }
        return Array(UnsafeBufferPointer(start: users.vector(r), count: configuration.dimension))
    }

    /// Items seen so far, in order of first occurrence (an item's position is its ordinal).
    public var knownItems: [String] { lock.locked { itemOrder } }

    /// Items seen so far from ordinal `start` on.
    public func knownItems(from start: Int) -> [String] { lock.locked { Array(itemOrder[min(start, itemOrder.count)...]) } }

    /// Every known item's score for `vector` (length `dimension`), by ordinal; -infinity for
    /// items without a row. O(items · dimension).
    public func itemScores(for vector: [Float]) -> [Float] {
        lock.locked {
            let d = configuration.dimension
            var out = [Float](repeating: -.infinity, count: itemOrder.count)
            vector.withUnsafeBufferPointer { q in
                for o in 0..<itemOrder.count {
                    if let r = row(ofOrdinal: Int32(o)) { out[o] = Kernels.dot(q.baseAddress!, items.vector(r), count: d) }
                }
            }
            return out
        }
    }

    /// Every known item's count among the recent occurrences (the reservoir), by ordinal: the
    /// fallback ranking for a user without a vector.
    public func recentPopularity() -> [Float] { lock.locked { recentCounts.map(Float.init) } }

    /// The user's most recent items (at most `maxHistory`), oldest first.
    public func history(ofUser user: String) -> [String] { lock.locked { (histories[user] ?? []).map { itemOrder[Int($0)] } } }

    /// A servable snapshot: every user seen that has a row, their vectors now, and the users'
    /// recent items as the interactions. Items: those with a row, or with `keepItemsWithoutRows`
    /// every item seen, in order of first occurrence (an append-only vocabulary, so that an index
    /// over it only ever grows), rows-less ones with zero vectors and listed in `itemsWithoutRows`.
    public func snapshot(keepItemsWithoutRows: Bool = false) -> (model: OnlineMF, users: IDVocabulary, items: IDVocabulary, itemsWithoutRows: [Int]) {
        let (userIDs, allItems) = lock.locked { (userOrder.filter { users.row(of: $0) != nil }, itemOrder) }
        let hasRow = allItems.map { items.row(of: $0) != nil }
        let itemIDs = keepItemsWithoutRows ? allItems : zip(allItems, hasRow).filter(\.1).map(\.0)
        let withoutRows = keepItemsWithoutRows ? hasRow.indices.filter { !hasRow[$0] } : []
        let itemIndex = Dictionary(uniqueKeysWithValues: itemIDs.enumerated().map { ($1, $0) })
        var rows: [Int32] = [], cols: [Int32] = []
        lock.locked {
            for (u, user) in userIDs.enumerated() {
                for item in histories[user] ?? [] {
                    if let i = itemIndex[itemOrder[Int(item)]] { rows.append(Int32(u)); cols.append(Int32(i)) }
                }
            }
        }
        let x = SparseMatrix(rowCount: userIDs.count, columnCount: itemIDs.count, rows: rows, cols: cols)
        return (model(users: userIDs, items: itemIDs, interactions: x), IDVocabulary(userIDs), IDVocabulary(itemIDs), withoutRows)
    }

    /// The model over the given keys (which must have rows), with `interactions` as its training data.
    func model(users userIDs: [String], items itemIDs: [String], interactions: SparseMatrix) -> OnlineMF {
        OnlineMF(configuration: configuration, interactions: interactions,
                        factors: FactorModel(userFactors: users.matrix(userIDs), itemFactors: items.matrix(itemIDs)))
    }

    /// Events learned, the last batch's mean loss, and both tables' counters.
    public var counters: (eventsLearned: Int, loss: Double, users: EmbeddingTableStats, items: EmbeddingTableStats) {
        let (n, loss) = lock.locked { (eventsLearned, lastLoss) }
        return (n, loss, users.stats, items.stats)
    }

    // MARK: persistence

    private struct State: Codable {
        var configuration: OnlineMF.Configuration
        var eventsLearned: Int
        var clock: Int64
        var lastLoss: Double
        var recent: [Int32]
        var recentNext: Int
        var userOrder: [String]
        var itemOrder: [String]
        var histories: [[Int32]]
        /// The caller's own position (the server's last event sequence number learned).
        var position: Int64
    }

    /// Writes the learner (both tables and the learner's state) into the folder `path`, replacing it
    /// whole; `position` is stored with it (the server's last event sequence learned).
    public func save(to path: String, position: Int64) throws {
        let (state, userData, itemData): (State, Data, Data) = lock.locked {
            (State(configuration: configuration, eventsLearned: eventsLearned, clock: clock, lastLoss: lastLoss, recent: recent,
                   recentNext: recentNext, userOrder: userOrder, itemOrder: itemOrder,
                   histories: userOrder.map { histories[$0] ?? [] }, position: position),
             users.encoded(), items.encoded())
        }
        let json = try JSONEncoder().encode(state)
        try AtomicWrite.folder(path, overwrite: true, replaceable: { FileManager.default.fileExists(atPath: $0 + "/learner.json") }) { tmp in
            try AtomicWrite.file(json, to: tmp + "/learner.json")
            try AtomicWrite.file(userData, to: tmp + "/users.table")
            try AtomicWrite.file(itemData, to: tmp + "/items.table")
        }
    }

    /// Reads a folder written by `save`; returns the learner and the stored position.
    public static func load(from path: String) throws -> (learner: OnlineLearner, position: Int64) {
        func read(_ name: String) throws -> Data {
            do { return try Data(contentsOf: URL(fileURLWithPath: path + "/" + name)) } catch {
                throw OnlineError.corruptState(path: path, reason: "cannot read \(name): \(error.localizedDescription)")
            }
        }
        let state: State
        do { state = try JSONDecoder().decode(State.self, from: try read("learner.json")); try state.configuration.validate() } catch let e as OnlineError {
            throw e
        } catch {
            throw OnlineError.corruptState(path: path, reason: "learner.json: \(error)")
        }
        let users: any EmbeddingTable<String>, items: any EmbeddingTable<String>
        do {
            users = try EmbeddingTables.decode(try read("users.table"), as: String.self)
            items = try EmbeddingTables.decode(try read("items.table"), as: String.self)
        } catch let e as OnlineError {
            throw e
        } catch {
            throw OnlineError.corruptState(path: path, reason: "\(error)")
        }
        guard users.dimension == state.configuration.dimension, items.dimension == state.configuration.dimension,
              users.settings.accumulators, items.settings.accumulators, state.eventsLearned >= 0,
              Set(state.userOrder).count == state.userOrder.count,
              state.userOrder.count == state.histories.count, state.recentNext >= 0,
              state.recentNext < max(state.configuration.reservoir, 1), state.recent.count <= state.configuration.reservoir else {
            throw OnlineError.corruptState(path: path, reason: "its tables and learner.json disagree")
        }
        let learner = OnlineLearner(configuration: state.configuration, users: users, items: items)
        learner.eventsLearned = state.eventsLearned
        learner.clock = state.clock
        learner.lastLoss = state.lastLoss
        learner.recent = state.recent
        learner.recentNext = state.recentNext
        for item in state.itemOrder { _ = learner.ordinal(of: item) }
        let itemCount = Int32(learner.itemOrder.count)
        guard learner.itemOrder.count == state.itemOrder.count,
              (state.recent + state.histories.joined()).allSatisfy({ $0 >= 0 && $0 < itemCount }) else {
            throw OnlineError.corruptState(path: path, reason: "learner.json names items it does not list")
        }
        for item in state.recent { learner.recentCounts[Int(item)] += 1 }
        learner.userOrder = state.userOrder
        learner.histories = Dictionary(zip(state.userOrder, state.histories)) { a, _ in a }
        return (learner, state.position)
    }
}

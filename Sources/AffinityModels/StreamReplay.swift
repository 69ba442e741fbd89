import AffinityData
import AffinityLinalg
import Foundation

/// Prequential ("test, then train") evaluation of models over a time-ordered interaction stream:
/// the first part of the log (by time) trains a batch model; then, event by event in time order,
/// each user's next positive is predicted before any model may learn from it (Gama et al. 2013,
/// "On evaluating stream learning algorithms"). `affinity bench stream` runs it on ml-1m.
///
/// Per event (user u, item i): every item the variant can score is ranked for u, the items u
/// interacted with before (training part and stream so far) left out; HR@k counts i in the top k,
/// NDCG@k adds 1/log2(rank + 2) (ties go to the smaller item index, as everywhere in Affinity). An
/// item the variant does not know (first seen after it last learned) is a miss. Scores are kept per
/// time window (equal numbers of events) and per tier of the target item's and the user's activity
/// in the training part.
public enum StreamReplay {
    public struct Settings: Codable, Sendable, Equatable {
        /// Share of the positives (in time order) that trains the batch models.
        public var trainFraction = 0.8
        /// Windows the stream is cut into (equal numbers of events); a periodic retrain runs at the start of each.
        public var windows = 10
        public var k = 10
        /// Passes of the online learner over the training part before the stream.
        public var batchEpochs = 5
        /// Ratings at or above are positives (nil: every row).
        public var minRating: Float? = 4
        public var seed: UInt64 = 42
        public init() {}
    }

    /// What is replayed.
    public enum Variant: Sendable {
        /// iALS trained on the training part, never again; a user is placed by fold-in of everything
        /// they did before the event (as `affinity serve` places users with new events).
        case frozen(ALS.Configuration)
        /// iALS retrained from scratch at the start of every window on everything before it; users by fold-in.
        case retrain(ALS.Configuration)
        /// online-mf after its batch passes over the training part, never updated (users: their vector, or popularity).
        case frozenOnline(OnlineMF.Configuration)
        /// online-mf learning each event after predicting it (its `table` says collisionless or hashed).
        case online(OnlineMF.Configuration)
    }

    /// The positives in time order, cut into a training part and the stream's windows.
    public struct Stream: Sendable {
        public let users: IDVocabulary
        public let items: IDVocabulary
        public let userIndices: [Int32]
        public let itemIndices: [Int32]
        public let times: [Int64]
        /// Events before this index train; the rest stream.
        public let trainCount: Int
        /// Start of each window (stream indexes), then the end.
        public let windowBounds: [Int]
        public var count: Int { userIndices.count }
        public var streamCount: Int { count - trainCount }

        /// From a log with timestamps: positives (rating ≥ minRating), sorted by time (stable).
        public init(log: InteractionLog, settings: Settings) throws {
            guard let t = log.timestamps else { throw ModelError.invalidSetting(name: "input", reason: "a stream replay needs timestamps") }
            guard settings.trainFraction > 0, settings.trainFraction < 1 else {
                throw ModelError.invalidSetting(name: "trainFraction", reason: "must be in (0, 1)")
            }
            guard settings.windows >= 1, settings.k >= 1 else { throw ModelError.invalidSetting(name: "windows", reason: "windows and k must be positive") }
            var rows = Array(0..<log.count)
            if let minRating = settings.minRating, let r = log.ratings { rows = rows.filter { r[$0] >= minRating } }
            rows.sort { (t[$0], $0) < (t[$1], $1) }
            users = log.users
            items = log.items
            userIndices = rows.map { log.userIndices[$0] }
            itemIndices = rows.map { log.itemIndices[$0] }
            times = rows.map { t[$0] }
            let cut = Int(Double(rows.count) * settings.trainFraction)
            let streamed = rows.count - cut
            guard streamed >= settings.windows else { throw ModelError.invalidSetting(name: "windows", reason: "\(settings.windows) windows for \(streamed) streamed events") }
            trainCount = cut
            windowBounds = (0...settings.windows).map { cut + streamed * $0 / settings.windows }
        }
    }

    public struct Score: Sendable, Equatable, Codable {
        public var events = 0
        public var hits = 0
        public var ndcg = 0.0
        public var hitRate: Double { events > 0 ? Double(hits) / Double(events) : 0 }
        public var meanNDCG: Double { events > 0 ? ndcg / Double(events) : 0 }
        mutating func add(rank: Int?, k: Int) {
            events += 1
            if let rank, rank < k { hits += 1; ndcg += 1 / log2(Double(rank) + 2) }
        }
    }

    /// Tiers by activity in the training part: items by their count (head: the top 10 % of items,
    /// torso: the next 40 %, tail: the rest and items unseen in training); users likewise (heavy:
    /// top 10 %, light: the rest with training events, new: none).
    public static let itemTiers = ["head", "torso", "tail"]
    public static let userTiers = ["heavy", "light", "new"]

    public struct Outcome: Sendable {
        public var windows: [Score]
        public var overall: Score
        public var byItemTier: [Score]
        public var byUserTier: [Score]
        /// Stream events whose item the variant could not score (unknown to it then).
        public var unknownTargets: Int
        /// Seconds spent learning (batch passes, retrains, online updates) and in all.
        public var learnSeconds: Double
        public var seconds: Double
        /// Online variants: users and items with a row, and rows, at the end.
        public var tableSummary: String?
    }

    /// Replays `stream` through `variant`. `progress` gets a line now and then.
    public static func run(_ variant: Variant, on stream: Stream, settings: Settings, progress: ((String) -> Void)? = nil) throws -> Outcome {
        let clock = Stopwatch()
        var learnSeconds = 0.0
        let nItems = stream.items.count, nUsers = stream.users.count
        // Seen items per user (global indexes), and training activity for the tiers.
        var seen = [Set<Int32>](repeating: [], count: nUsers)
        var itemTrainCount = [Int](repeating: 0, count: nItems), userTrainCount = [Int](repeating: 0, count: nUsers)
        for e in 0..<stream.trainCount {
            seen[Int(stream.userIndices[e])].insert(stream.itemIndices[e])
            itemTrainCount[Int(stream.itemIndices[e])] += 1
            userTrainCount[Int(stream.userIndices[e])] += 1
        }
        let itemTier = tiers(itemTrainCount, zeroTier: 2)
        let userTier = tiers(userTrainCount, zeroTier: 2)

        var scorer: any StreamScorer
        let learnClock = Stopwatch()
        switch variant {
        case .frozen(let c), .retrain(let c):
            scorer = try ALSScorer(configuration: c, stream: stream, upTo: stream.trainCount)
        case .frozenOnline(let c), .online(let c):
            scorer = try OnlineScorer(configuration: c, stream: stream, settings: settings, learns: { if case .online = variant { return true } else { return false } }())
        }
        learnSeconds += learnClock.seconds

        var outcome = Outcome(windows: Array(repeating: Score(), count: settings.windows), overall: Score(),
                              byItemTier: Array(repeating: Score(), count: 3), byUserTier: Array(repeating: Score(), count: 3),
                              unknownTargets: 0, learnSeconds: 0, seconds: 0, tableSummary: nil)
        for w in 0..<settings.windows {
            if w > 0, case .retrain(let c) = variant {
                let retrain = Stopwatch()
                scorer = try ALSScorer(configuration: c, stream: stream, upTo: stream.windowBounds[w])
                learnSeconds += retrain.seconds
            }
            for e in stream.windowBounds[w]..<stream.windowBounds[w + 1] {
                let u = Int(stream.userIndices[e]), i = Int(stream.itemIndices[e])
                var scores = scorer.scores(user: u, history: seen[u])
                let rank: Int?
                if scores[i] == -.infinity {
                    rank = nil
                    outcome.unknownTargets += 1
                } else {
                    for j in seen[u] { scores[Int(j)] = -.infinity }
                    let target = scores[i]
                    var above = 0
                    for j in 0..<nItems where scores[j] > target || (scores[j] == target && j < i) { above += 1 }
                    rank = above
                }
                outcome.windows[w].add(rank: rank, k: settings.k)
                outcome.overall.add(rank: rank, k: settings.k)
                outcome.byItemTier[itemTier[i]].add(rank: rank, k: settings.k)
                outcome.byUserTier[userTier[u]].add(rank: rank, k: settings.k)
                let learn = Stopwatch()
                try scorer.learn(event: e)
                learnSeconds += learn.seconds
                seen[u].insert(Int32(i))
            }
            progress?("window \(w + 1)/\(settings.windows): HR@\(settings.k) \(String(format: "%.4f", outcome.windows[w].hitRate)), \(String(format: "%.0f", clock.seconds)) s")
        }
        outcome.learnSeconds = learnSeconds
        outcome.seconds = clock.seconds
        outcome.tableSummary = scorer.summary
        return outcome
    }

    /// 0 for the top 10 % by count, 1 for the next 40 %, 2 for the rest; `zeroTier` for count 0.
    static func tiers(_ counts: [Int], zeroTier: Int) -> [Int] {
        let order = counts.indices.sorted { (counts[$0], -$0) > (counts[$1], -$1) }
        var tier = [Int](repeating: 2, count: counts.count)
        for (rank, j) in order.enumerated() {
            tier[j] = counts[j] == 0 ? zeroTier : rank < counts.count / 10 ? 0 : rank < counts.count / 2 ? 1 : 2
        }
        return tier
    }
}

/// A replayed model: scores every item (global indexes; -infinity where it cannot) and learns an event.
protocol StreamScorer {
    func scores(user: Int, history: Set<Int32>) -> [Float]
    mutating func learn(event: Int) throws
    var summary: String? { get }
}

/// iALS over the global index space, trained on events [0, upTo); users placed by fold-in.
struct ALSScorer: StreamScorer {
    let model: ALS
    let known: [Bool]
    /// Training counts: the ranking of a user with no history yet.
    let popularity: [Float]

    init(configuration: ALS.Configuration, stream: StreamReplay.Stream, upTo: Int) throws {
        let x = SparseMatrix(rowCount: stream.users.count, columnCount: stream.items.count,
                             rows: Array(stream.userIndices[0..<upTo]), cols: Array(stream.itemIndices[0..<upTo]))
        model = try ALS.fit(x, configuration: configuration)
        let counts = x.columnCounts()
        known = counts.map { $0 > 0 }
        popularity = counts.map(Float.init)
    }

    func scores(user: Int, history: Set<Int32>) -> [Float] {
        var s = history.isEmpty ? popularity
            : model.factors.scores(userVector: model.userFactors(history: history.map(Int.init).sorted()))
        for j in s.indices where !known[j] { s[j] = -.infinity }
        return s
    }

    mutating func learn(event: Int) throws {}
    var summary: String? { nil }
}

/// online-mf: batch passes over the training part, then (when `learns`) each streamed event.
struct OnlineScorer: StreamScorer {
    let learner: OnlineLearner
    let stream: StreamReplay.Stream
    let learns: Bool
    /// Global item index of each learner ordinal.
    var globalOfOrdinal: [Int] = []

    init(configuration: OnlineMF.Configuration, stream: StreamReplay.Stream, settings: StreamReplay.Settings, learns: Bool) throws {
        learner = try OnlineLearner(configuration: configuration)
        self.stream = stream
        self.learns = learns
        let events = (0..<stream.trainCount).map { e in
            OnlineEvent(user: stream.users[Int(stream.userIndices[e])], item: stream.items[Int(stream.itemIndices[e])], time: stream.times[e])
        }
        try learner.learn(epochs: settings.batchEpochs, of: events, seed: settings.seed)
        refreshOrdinals()
    }

    mutating func refreshOrdinals() {
        for item in learner.knownItems(from: globalOfOrdinal.count) { globalOfOrdinal.append(stream.items.index(of: item)!) }
    }

    func scores(user: Int, history: Set<Int32>) -> [Float] {
        var out = [Float](repeating: -.infinity, count: stream.items.count)
        let byOrdinal = learner.userVector(stream.users[user]).map { learner.itemScores(for: $0) } ?? learner.recentPopularity()
        for (o, s) in byOrdinal.enumerated() where o < globalOfOrdinal.count { out[globalOfOrdinal[o]] = s }
        return out
    }

    mutating func learn(event e: Int) throws {
        guard learns else { return }
        try learner.learn([OnlineEvent(user: stream.users[Int(stream.userIndices[e])], item: stream.items[Int(stream.itemIndices[e])],
                                       time: stream.times[e])])
        refreshOrdinals()
    }

    var summary: String? {
        let c = learner.counters
        return "users \(c.users.ids) IDs in \(c.users.rows) rows, items \(c.items.ids) IDs in \(c.items.rows) rows"
    }
}

import AffinityData
import AffinityLinalg
import AffinityNN
import Foundation
import Testing

@testable import AffinityModels
import AffinityTestScratch

/// Two planted groups: users g0-* like items a*, users g1-* like items b*.
private func plantedEvents(users: Int = 40, items: Int = 20, perUser: Int = 8, seed: UInt64 = 3) -> [OnlineEvent] {
    var g = SeededGenerator(seed: seed)
    var out: [OnlineEvent] = []
    for t in 0..<perUser {
        for u in 0..<users {
            let group = u % 2
            out.append(OnlineEvent(user: "g\(group)-\(u)", item: "\(group == 0 ? "a" : "b")\(g.next(below: items))", time: Int64(t)))
        }
    }
    return out
}

private func small(_ edit: (inout OnlineMF.Configuration) -> Void = { _ in }) -> OnlineMF.Configuration {
    var c = OnlineMF.Configuration()
    c.dimension = 8
    c.negatives = 8
    c.learningRate = 0.1
    edit(&c)
    return c
}

@Suite struct OnlineMFTests {
    /// The groups are learned, and an item that only streams in (20 events of group 0) ranks among
    /// group 0's items for another group-0 user right after it is learned.
    @Test func learnsGroupsAndANewItemOnline() throws {
        let learner = try OnlineLearner(configuration: small())
        let events = plantedEvents()
        for _ in 0..<10 { try learner.learn(events) }
        let items = learner.knownItems
        let scores = learner.itemScores(for: try #require(learner.userVector("g0-0")))
        let meanA = zip(items, scores).filter { $0.0.hasPrefix("a") }.map { Double($0.1) }.reduce(0, +) / 20
        let meanB = zip(items, scores).filter { $0.0.hasPrefix("b") }.map { Double($0.1) }.reduce(0, +) / 20
        #expect(meanA > meanB + 1, "group 0's user scores a* above b*: \(meanA) vs \(meanB)")
        #expect(learner.userVector("never-seen") == nil)
        // A new item, liked by 10 group-0 users (a few times each, as a stream would repeat it).
        for _ in 0..<5 {
            try learner.learn((0..<10).map { OnlineEvent(user: "g0-\(2 * $0)", item: "new", time: 20) })
        }
        let after = learner.itemScores(for: try #require(learner.userVector("g0-30")))
        let ordinal = try #require(learner.knownItems.firstIndex(of: "new"))
        let bScores = zip(learner.knownItems, after).filter { $0.0.hasPrefix("b") }.map(\.1)
        #expect(after[ordinal] > bScores.max()!, "the new item ranks above every b* item for another group-0 user")
    }

    /// A learner saved halfway and reloaded ends where an uninterrupted one does, bit for bit.
    @Test func resumingFromASavedStateIsExact() throws {
        let events = plantedEvents()
        let whole = try OnlineLearner(configuration: small { $0.minCount = 2 })
        try whole.learn(events)
        let first = try OnlineLearner(configuration: small { $0.minCount = 2 })
        try first.learn(Array(events[..<150]))
        let folder = TestScratch.path("affinity-online")
        try first.save(to: folder, position: 150)
        let (resumed, position) = try OnlineLearner.load(from: folder)
        #expect(position == 150)
        try resumed.learn(Array(events[150...]))
        #expect(resumed.eventsLearned == whole.eventsLearned)
        for u in 0..<40 {
            let user = "g\(u % 2)-\(u)"
            #expect(resumed.userVector(user) == whole.userVector(user))
        }
        #expect(resumed.knownItems == whole.knownItems)
        #expect(resumed.itemScores(for: [Float](repeating: 1, count: 8)) == whole.itemScores(for: [Float](repeating: 1, count: 8)))
        #expect(resumed.history(ofUser: "g0-0") == whole.history(ofUser: "g0-0"))
        // A damaged state is an error naming the folder, not a crash.
        try Data("{".utf8).write(to: URL(fileURLWithPath: folder + "/learner.json"))
        #expect { try OnlineLearner.load(from: folder) } throws: { ($0 as? OnlineError).map { "\($0)".contains(folder) } ?? false }
    }

    @Test func hashedTablesShareRows() throws {
        let learner = try OnlineLearner(configuration: small { $0.table = .hashed; $0.userRows = 1; $0.itemRows = 7 })
        try learner.learn(plantedEvents())
        // One user row: every user has the same vector.
        #expect(learner.userVector("g0-0") == learner.userVector("g1-1"))
        #expect(learner.users.stats.rows == 1 && learner.users.stats.ids == 40)
        #expect(Set(learner.itemScores(for: [Float](repeating: 1, count: 8))).count <= 7)
    }

    @Test func divergenceIsAnError() throws {
        let learner = try OnlineLearner(configuration: small { $0.learningRate = 1e37 })
        #expect(throws: OnlineError.self) { for _ in 0..<5 { try learner.learn(plantedEvents()) } }
    }

    @Test func startsFromABatchModel() throws {
        let log = InteractionLog(source: "t", rows: plantedEvents().map { ($0.user, $0.item, nil, nil) })
        let als = try ALS.fit(log.matrix(), settings: ["factors": "6", "iterations": "5"])
        let trained = TrainedModel(model: als, users: log.users, items: log.items)
        let learner = try OnlineLearner.starting(from: trained, configuration: small())
        #expect(learner.configuration.dimension == 6)
        for u in [0, 7, 39] { #expect(learner.userVector(log.users[u]) == als.userEmbedding(user: u)) }
        let snapshot = learner.snapshot()
        #expect(snapshot.items.count == log.items.count && snapshot.users.count == log.users.count)
        #expect(snapshot.model.interactions.nonZeroCount == log.matrix().nonZeroCount)
        #expect(throws: OnlineError.self) {
            try OnlineLearner.starting(from: TrainedModel(model: try Popularity.fit(log.matrix()), users: log.users, items: log.items),
                                       configuration: small())
        }
    }

    /// Batch fit through `affinity train`'s path: the model ranks each group's items first.
    @Test func batchFitRanksTheGroups() throws {
        let log = InteractionLog(source: "t", rows: plantedEvents().map { ($0.user, $0.item, nil, nil) })
        let model = try OnlineMF.fit(log.matrix(), settings: ["dimension": "8", "negatives": "8", "epochs": "20", "learningRate": "0.1"])
        let u = try #require(log.users.index(of: "g1-1"))
        let top = try model.recommend(user: u, k: 5, excluding: []).map { log.items[$0.index] }
        #expect(top.allSatisfy { $0.hasPrefix("b") }, "\(top)")
        // Fold-in of a history of a* items ranks a* items first.
        let history = ["a1", "a2", "a3"].compactMap { log.items.index(of: $0) }
        let folded = model.scores(forHistory: history)
        let best = folded.indices.filter { !history.contains($0) }.max { folded[$0] < folded[$1] }!
        #expect(log.items[best].hasPrefix("a"))
    }
}

@Suite struct StreamReplayTests {
    /// Items that appear only in the stream: a frozen model cannot rank them (they count as unknown),
    /// an online learner can after their first occurrence.
    @Test func onlineScoresItemsTheFrozenModelNeverSaw() throws {
        var rows: [(user: String, item: String, rating: Float?, timestamp: Int64?)] = []
        for (n, e) in plantedEvents(perUser: 6).enumerated() { rows.append((e.user, e.item, 5, Int64(n))) }
        for n in 0..<120 { rows.append(("g0-\(2 * (n % 20))", "late\(n / 20)", 5, Int64(10_000 + n))) }
        let log = InteractionLog(source: "t", rows: rows)
        var s = StreamReplay.Settings()
        s.trainFraction = 240.0 / 360.0
        s.windows = 2
        s.batchEpochs = 3
        let stream = try StreamReplay.Stream(log: log, settings: s)
        #expect(stream.trainCount == 240 && stream.streamCount == 120)
        let frozen = try StreamReplay.run(.frozen(try ALS.Configuration().applying(["factors": "4", "iterations": "3"])), on: stream, settings: s)
        let online = try StreamReplay.run(.online(small()), on: stream, settings: s)
        #expect(frozen.unknownTargets == 120)
        #expect(online.unknownTargets == 6, "each late item is unknown only at its first occurrence")
        #expect(frozen.overall.events == 120 && frozen.overall.hits == 0)
        #expect(online.overall.hits > 30)
        #expect(online.byUserTier.map(\.events).reduce(0, +) == 120)
    }

    @Test func tiers() {
        // 20 items: the top 2 by count are head, the next 8 torso, the rest tail; zero counts to the zero tier.
        let counts = (0..<20).map { 20 - $0 } + [0]
        let t = StreamReplay.tiers(counts, zeroTier: 2)
        #expect(t[0] == 0 && t[1] == 0 && t[2] == 1 && t[9] == 1 && t[10] == 2 && t[20] == 2)
    }
}

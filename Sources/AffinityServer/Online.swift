import AffinityANN
import AffinityData
import AffinityLinalg
import AffinityModels
import AffinityNN
import AffinityPipeline
import Foundation

/// Settings of `affinity serve --online`.
public struct OnlineSettings: Sendable {
    /// Folder of the learner's state (tables, reservoir, histories, the last event learned).
    public var statePath: String
    /// Seconds between publishes of the learner's vectors to the serving model.
    public var publishInterval: Double = 2
    /// Publishes between two saves of the state (a save also happens at shutdown). A restart
    /// resumes from the last save and learns the events stored after it again.
    public var saveEvery: Int = 5
    /// The model's settings when it starts from nothing (no state, no active embedding model).
    public var model = OnlineMF.Configuration()
    /// Events read from the store per learning step.
    public var batchSize = 2_000
    /// An item whose vector moved by more than this share of its length since it was linked into
    /// the HNSW index is linked again at the next publish; smaller moves only update its vector.
    public var relinkThreshold: Float = 0.1
    /// Search settings of the published model's index.
    public var searchParameters = SearchParameters(ef: 64)

    public init(statePath: String) { self.statePath = statePath }
}

/// The online trainer beside the request path (`affinity serve --online`): learns every stored
/// event, in sequence order, into an `OnlineLearner`, and every `publishInterval` seconds publishes
/// its vectors as the serving model (a new `ServingModel` whose HNSW index is a copy of the last one
/// with new items added and moved vectors updated, swapped in by reference: requests never wait).
///
/// The store is the source of truth: the trainer reads events after the last one it learned, so an
/// acknowledged event is learned exactly once whatever the order requests commit in, and after a
/// restart (even kill -9) it resumes from the last saved state and reads the events stored after it.
/// That needs sequence numbers in commit order, which SQLite gives (one writer); PostgreSQL does not
/// (concurrent transactions, even of one replica, can commit a lower number after a higher one was
/// read), so `AffinityService.startOnline` refuses a PostgreSQL store.
///
/// A failure of the learner (non-finite loss, a table at its memory bound, an ID that cannot be
/// placed) or of saving its state stops learning and publishing; the last published model keeps
/// answering and `/health` and `/metrics` say so. A failed store read is retried (every second).
public final class OnlineTrainer: @unchecked Sendable {
    public let settings: OnlineSettings
    let learner: OnlineLearner
    private weak var service: AffinityService?
    private let store: any AffinityStore
    /// Rating events count as positives at or above this (the starting model's threshold).
    let positiveThreshold: Float?
    private let condition = NSCondition()
    private var stopping = false
    private var thread: Thread?
    private var finished = DispatchSemaphore(value: 0)

    // Guarded by `condition`.
    private var learnedPosition: Int64
    private var acknowledgedPosition: Int64
    private var failure: String?
    private var lastPublish: Date?
    private var publishes = 0
    private var lastPublishSeconds = 0.0
    /// Items the last publish relinked, updated in place, and added.
    private var lastPublishChanges = (relinked: 0, moved: 0, added: 0)
    private var eventsSkipped = 0
    /// The learner's counters as of its last batch (status never waits for the learner or its tables).
    private var counters: (eventsLearned: Int, loss: Double, users: EmbeddingTableStats, items: EmbeddingTableStats)
    /// True until the first read that finds no event after the last one learned (a restart's catch-up).
    private var catchingUp = true

    // Trainer thread only.
    private var index: HNSWIndex?
    /// Each item's vector as it was when last linked into the index (item ordinal x d): moves are
    /// measured from there, so slow drift is relinked once it adds up.
    private var linked: [Float] = []
    private var publishedPosition: Int64 = -1
    private var publishesSinceSave = 0

    /// Opens the learner: from `settings.statePath` when it holds a state, else from the service's
    /// active embedding model, else empty. Nothing runs until `start`.
    public init(settings: OnlineSettings, service: AffinityService) throws {
        self.settings = settings
        self.service = service
        store = service.store
        let active = service.activeModel?.model.primary
        positiveThreshold = active.map { $0.trained.positiveThreshold } ?? TrainedModel.defaultPositiveThreshold
        if FileManager.default.fileExists(atPath: settings.statePath + "/learner.json") {
            let (learner, position) = try OnlineLearner.load(from: settings.statePath)
            self.learner = learner
            learnedPosition = position
        } else if let active, active.trained.model is any EmbeddingRecommender {
            learner = try OnlineLearner.starting(from: active.trained, configuration: settings.model)
            learnedPosition = 0
        } else {
            learner = try OnlineLearner(configuration: settings.model)
            learnedPosition = 0
        }
        acknowledgedPosition = learnedPosition
        counters = learner.counters
    }

    /// Publishes the starting model, then learns on a thread of its own until `stop`.
    public func start() throws {
        try publish()
        let thread = Thread { [self] in run() }
        thread.name = "affinity-online-trainer"
        self.thread = thread
        thread.start()
    }

    /// Stops learning, saves the state, and waits for the thread (at most 30 s: a trainer waiting on
    /// a store read that cannot run while this thread waits is left to fail; the state on disk is
    /// then the last one saved, and a restart learns the rest again).
    public func stop() {
        condition.lock()
        stopping = true
        condition.broadcast()
        condition.unlock()
        if thread != nil { _ = finished.wait(timeout: .now() + 30) }
        thread = nil
    }

    /// An acknowledged batch: wakes the trainer (which reads the events from the store).
    func notify(stored seqs: [Int64]) {
        guard let top = seqs.max() else { return }
        condition.lock()
        acknowledgedPosition = max(acknowledgedPosition, top)
        condition.signal()
        condition.unlock()
    }

    private func run() {
        defer { finished.signal() }
        var nextPublish = Date().addingTimeInterval(settings.publishInterval)
        while true {
            condition.lock()
            while !stopping && !catchingUp && learnedPosition >= acknowledgedPosition && Date() < nextPublish && failure == nil {
                condition.wait(until: nextPublish)
            }
            let (stop, failed) = (stopping, failure != nil)
            condition.unlock()
            if stop {
                if !failed { try? save() }
                return
            }
            if failed {
                // Waits for shutdown; the last good model goes on answering.
                condition.lock()
                while !stopping { condition.wait() }
                condition.unlock()
                continue
            }
            do {
                try learnPending(until: nextPublish)
                if Date() >= nextPublish {
                    // Nothing learned since the last publish: nothing to publish or save.
                    if condition.withLock({ learnedPosition }) != publishedPosition {
                        if learner.configuration.expireAfterDays > 0 { learner.expire() }
                        try publish()
                    }
                    nextPublish = Date().addingTimeInterval(settings.publishInterval)
                }
            } catch {
                condition.lock()
                failure = "\(error)"
                condition.unlock()
                service?.logOnlineFailure("\(error)")
            }
        }
    }

    /// Reads and learns stored events after the last one learned, in batches, until none is left
    /// or the publish time comes.
    private func learnPending(until deadline: Date) throws {
        while Date() < deadline {
            let from = condition.withLock { learnedPosition }
            let page: [StoredEvent]
            do {
                page = try blocking { try await self.store.events(after: from, limit: self.settings.batchSize) }
            } catch {
                // The store is away (a timeout, an outage): try again later; nothing is lost.
                service?.logOnlineStoreError("\(error)")
                Thread.sleep(forTimeInterval: 1)
                return
            }
            guard let last = page.last else {
                condition.withLock {
                    acknowledgedPosition = max(acknowledgedPosition, from)
                    catchingUp = false
                }
                return
            }
            var events: [OnlineEvent] = []
            events.reserveCapacity(page.count)
            for stored in page where UserEvent(stored.event).isPositive(threshold: positiveThreshold) {
                events.append(OnlineEvent(user: stored.event.user, item: stored.event.item, time: stored.event.timestamp))
            }
            try learner.learn(events)
            let now = learner.counters
            condition.withLock {
                counters = now
                learnedPosition = last.seq
                acknowledgedPosition = max(acknowledgedPosition, last.seq)
                eventsSkipped += page.count - events.count
            }
        }
    }

    /// Runs an async store call from the trainer's thread.
    private func blocking<T: Sendable>(_ work: @escaping @Sendable () async throws -> T) throws -> T {
        let box = ResultBox<T>()
        let done = DispatchSemaphore(value: 0)
        Task {
            do { box.result = .success(try await work()) } catch { box.result = .failure(error) }
            done.signal()
        }
        done.wait()
        return try box.result!.get()
    }

    /// Builds the serving model from the learner's vectors and swaps it in.
    func publish() throws {
        let clock = Date()
        let position = condition.withLock { learnedPosition }
        let (model, users, items, rowless) = learner.snapshot(keepItemsWithoutRows: true)
        let d = model.factors.factors
        let vectors = model.factors.itemFactors
        let withoutRow = Set(rowless)
        // The index: a copy of the last one, changed where the items changed (built afresh the first time).
        let next: HNSWIndex
        var changes = (relinked: 0, moved: 0, added: 0)
        if let index {
            next = try index.copy()
            let old = index.count
            for i in 0..<min(old, items.count) {
                if withoutRow.contains(i) {
                    if !next.isDeleted(i) { try next.markDeleted(i) }
                    continue
                }
                // The squared move since the vector was last linked, against its squared length then.
                var moved: Float = 0, length: Float = 0
                for k in 0..<d {
                    let now = vectors.values[i * d + k], then = linked[i * d + k]
                    moved += (now - then) * (now - then)
                    length += then * then
                }
                let wasDeleted = next.isDeleted(i)
                guard moved > 0 || wasDeleted else { continue }
                let relink = wasDeleted || moved > settings.relinkThreshold * settings.relinkThreshold * max(length, 1e-12)
                let v = Array(vectors.row(i))
                try next.update(i, vector: v, relink: relink)
                if wasDeleted { try next.restore(i) }
                if relink {
                    linked.replaceSubrange((i * d)..<((i + 1) * d), with: v)
                    changes.relinked += 1
                } else {
                    changes.moved += 1
                }
            }
            if items.count > old {
                let fresh = vectors.rows(old..<items.count)
                try next.add(fresh)
                for i in old..<items.count where withoutRow.contains(i) { try next.markDeleted(i) }
                linked += fresh.values
                changes.added = fresh.rows
            }
        } else {
            next = try HNSWIndex(dimension: d, metric: .innerProduct, settings: HNSWSettings(neighborsPerNode: 16, efConstruction: 200))
            if items.count > 0 { try next.add(vectors) }
            for i in 0..<items.count where withoutRow.contains(i) { try next.markDeleted(i) }
            linked = vectors.values
        }
        index = next
        let info = [TrainedModel.learnsOnlineKey: "true", "published_position": "\(position)",
                    TrainedModel.positiveThresholdKey: TrainedModel.positiveThresholdValue(positiveThreshold)]
        let trained = TrainedModel(model: model, users: users, items: items, info: info)
        let serving = try ServingModel(trained: trained, index: items.count > 0 ? next : nil, buildIndex: false,
                                       searchParameters: settings.searchParameters)
        service?.swapInOnline(serving, statePath: settings.statePath)
        publishedPosition = position
        publishesSinceSave += 1
        if publishesSinceSave >= settings.saveEvery { try save() }
        condition.withLock {
            lastPublish = Date()
            publishes += 1
            lastPublishSeconds = Date().timeIntervalSince(clock)
            lastPublishChanges = changes
        }
    }

    /// Writes the learner with the position of the last event it learned.
    private func save() throws {
        let position = condition.withLock { learnedPosition }
        try learner.save(to: settings.statePath, position: position)
        publishesSinceSave = 0
    }

    /// What `/health` and `/metrics` show.
    struct Status {
        var failure: String?
        var catchingUp: Bool
        var learnedPosition: Int64
        var lag: Int64
        var lastPublish: Date?
        var publishes: Int
        var lastPublishSeconds: Double
        var lastPublishChanges: (relinked: Int, moved: Int, added: Int)
        var eventsLearned: Int
        var eventsSkipped: Int
        var users: EmbeddingTableStats
        var items: EmbeddingTableStats
        var loss: Double
    }

    var status: Status {
        condition.withLock {
            Status(failure: failure, catchingUp: catchingUp, learnedPosition: learnedPosition, lag: max(0, acknowledgedPosition - learnedPosition),
                   lastPublish: lastPublish, publishes: publishes, lastPublishSeconds: lastPublishSeconds,
                   lastPublishChanges: lastPublishChanges,
                   eventsLearned: counters.eventsLearned, eventsSkipped: eventsSkipped, users: counters.users, items: counters.items,
                   loss: counters.loss)
        }
    }

    func metricsText() -> String {
        let s = status
        var out = ""
        func family(_ name: String, _ type: String, _ help: String, _ samples: [(String, String)]) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
            for (labels, value) in samples { out += labels.isEmpty ? "\(name) \(value)\n" : "\(name){\(labels)} \(value)\n" }
        }
        let tables = [("table=\"users\"", s.users), ("table=\"items\"", s.items)]
        family("affinity_online_table_ids", "gauge", "IDs holding a row of the online model's embedding tables.", tables.map { ($0.0, "\($0.1.ids)") })
        family("affinity_online_table_rows", "gauge", "Rows allocated in the online model's embedding tables.", tables.map { ($0.0, "\($0.1.rows)") })
        family("affinity_online_table_bytes", "gauge", "Memory of the online model's embedding tables.", tables.map { ($0.0, "\($0.1.memoryBytes)") })
        family("affinity_online_admitted_total", "counter", "IDs given a row by the admission filter.", tables.map { ($0.0, "\($0.1.admitted)") })
        family("affinity_online_expired_total", "counter", "IDs whose rows expired.", tables.map { ($0.0, "\($0.1.expired)") })
        family("affinity_online_filtered_total", "counter", "Occurrences of IDs the admission filter held back.", tables.map { ($0.0, "\($0.1.filtered)") })
        family("affinity_online_events_learned_total", "counter", "Events the online learner has learned (its whole life, across restarts).", [("", "\(s.eventsLearned)")])
        family("affinity_online_events_skipped_total", "counter", "Stored events read but not learned (ratings below the threshold), since start.", [("", "\(s.eventsSkipped)")])
        family("affinity_online_position", "gauge", "Sequence number of the last stored event learned.", [("", "\(s.learnedPosition)")])
        family("affinity_online_lag_events", "gauge", "Acknowledged events not yet learned (in sequence numbers; see affinity_online_catching_up).", [("", "\(s.lag)")])
        family("affinity_online_catching_up", "gauge", "1 until the trainer has read every event stored before it started (a restart's catch-up).",
               [("", s.catchingUp ? "1" : "0")])
        family("affinity_online_publishes_total", "counter", "Models published to serving since start.", [("", "\(s.publishes)")])
        family("affinity_online_last_publish_timestamp_seconds", "gauge", "Unix time of the last publish.",
               [("", s.lastPublish.map { String(format: "%.3f", $0.timeIntervalSince1970) } ?? "0")])
        family("affinity_online_last_publish_duration_seconds", "gauge", "Time the last publish took (snapshot, index update, swap).", [("", "\(s.lastPublishSeconds)")])
        family("affinity_online_last_publish_items", "gauge", "Items the last publish relinked in the index, moved in place, and added.",
               [("change=\"relinked\"", "\(s.lastPublishChanges.relinked)"), ("change=\"moved\"", "\(s.lastPublishChanges.moved)"),
                ("change=\"added\"", "\(s.lastPublishChanges.added)")])
        family("affinity_online_loss", "gauge", "Mean loss of the last batch learned.", [("", "\(s.loss)")])
        family("affinity_online_failed", "gauge", "1 when online training stopped on a failure (the last good model keeps serving).", [("", s.failure == nil ? "0" : "1")])
        return out
    }
}

private final class ResultBox<T>: @unchecked Sendable { var result: Result<T, any Error>? }

extension NSCondition {
    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        lock()
        defer { unlock() }
        return try body()
    }
}

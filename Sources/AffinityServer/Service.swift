import AffinityANN
import AffinityLinalg
import AffinityModels
import AffinityPipeline
import Foundation
import Hummingbird
import Logging

/// Limits that turn oversized or out-of-range requests into 4xx answers instead of work.
public struct ServiceLimits: Sendable {
    /// Largest request body accepted (413 above it).
    public var maxBodyBytes = 1 << 20
    /// Most events in one `POST /v1/events` (400 above it; the bytes limit is 413).
    public var maxEventsPerBatch = 1_000
    /// Largest `k` (400 above it).
    public var maxK = 1_000
    /// Longest history in `POST /v1/recommendations` (400 above it).
    public var maxHistory = 10_000
    /// Longest user or item ID and event type, in Unicode characters (400 above it).
    public var maxIDLength = 256
    /// Model loads (registration, activation) running at once (429 above it).
    public var maxConcurrentLoads = 2
    /// Seconds a request waits for a model load (503 after it; the load goes on in the background).
    public var loadTimeoutSeconds: Double = 300
    /// How far in the future an event's timestamp may lie (clock skew), in seconds (400 beyond it).
    public var maxFutureSeconds: Int64 = 86_400
    /// Events of user histories kept in memory in front of the store (least recently used
    /// histories are dropped beyond it and read again when asked for).
    public var historyCacheEvents = 2_000_000
    public init() {}
}

/// What the service answers with, and its registry record: a pipeline, which for a registered
/// model folder is that one model (`Pipeline.single`) and for a pipeline file its retrievers,
/// ranker and re-rankers. Every recommendation goes through `Pipeline.recommend`.
struct ActiveModel: Sendable {
    var record: ModelRecord
    var model: Pipeline
}

/// The recommendation service: the state behind every route (the store, the active model, each
/// user's event history, metrics) and the router that exposes it. Routes are listed in
/// `openapi.yaml`; `router()` builds them.
///
/// Consistency: an event batch is committed to the store before it is merged into the cached
/// histories and before it is acknowledged, so a request that starts after the acknowledgement
/// sees it (seen-item exclusion and fold-in). Histories are read from the store per user on first
/// use (`HistoryCache`). With a store that other processes write too (replicas on PostgreSQL), the
/// store's change feed merges their events and follows their activations (`followRegistry`). A
/// model swap replaces one reference under a lock: requests that already took the old model
/// finish on it.
public final class AffinityService: @unchecked Sendable {
    /// Event types accepted by `POST /v1/events`; every type counts as a positive interaction.
    public static let eventTypes = ["view", "click", "add_to_cart", "purchase", "like", "rating", "play"]

    public let store: any AffinityStore
    public let metrics = ServiceMetrics()
    public let limits: ServiceLimits
    public let access: AccessPolicy
    let logger: Logger
    let loads: ModelLoader
    /// Builds the pipeline of a registry record; the default loads the model folder and its index
    /// file (or builds an HNSW index over the item embeddings), or the pipeline file.
    let loader: @Sendable (ModelRecord) throws -> Pipeline

    private let lock = NSLock()
    /// Serialises registry changes (activation, deletion, following another replica's activation).
    private let activationLock = AsyncMutex()
    private var active: ActiveModel?
    /// The model most recently replaced, kept loaded so that swapping back is instant. No other
    /// model stays in memory: registration loads a model to validate it and then lets it go.
    private var rollback: ActiveModel?
    /// Users' events in arrival order, read from the store on first use and kept current.
    let histories: HistoryCache
    /// Follows the store's change feed (other processes' events and registry changes).
    private var watchTask: Task<Void, Never>?
    /// Set while `followRegistry` runs; a change seen meanwhile asks for one more round.
    private var following = false, followAgain = false
    /// The last failure to follow another process's activation, for /health (nil when in step).
    private var followError: String?
    /// The online trainer (`affinity serve --online`), when one runs.
    private var onlineTrainer: OnlineTrainer?

    /// Opens the service on `store` and, when the registry has an active model, loads it. An active
    /// model that no longer loads (deleted, moved, corrupt) is reported with a warning and the
    /// service starts without one: `activateLastGoodModel()` or a new registration brings one back.
    /// Histories are read from the store per user when first asked for; with a shared store the
    /// service follows its change feed until `close()`.
    public init(store: any AffinityStore, limits: ServiceLimits = ServiceLimits(), access: AccessPolicy = .open,
                logger: Logger = Logger(label: "affinity"),
                loader: (@Sendable (ModelRecord) throws -> Pipeline)? = nil) async throws {
        self.store = store
        self.limits = limits
        self.access = access
        self.logger = logger
        self.loader = loader ?? { try AffinityService.loadPipeline($0) }
        histories = HistoryCache(capacity: limits.historyCacheEvents)
        loads = ModelLoader(maxConcurrent: limits.maxConcurrentLoads, timeout: limits.loadTimeoutSeconds)
        if let record = try await store.activeModel() {
            do {
                active = ActiveModel(record: record, model: try self.loader(record))
                metrics.recordActivation(id: record.id, type: record.modelType)
            } catch {
                logger.warning("the active model no longer loads; starting without it",
                               metadata: ["id": "\(record.id)", "path": "\(record.path)", "error": "\(error)"])
            }
        }
        let counts = store.counts
        logger.info("store opened", metadata: ["store": "\(store.location)", "events": "\(counts.events)", "users": "\(counts.users)",
                                                "active_model": "\(active.map { "\($0.record.id)" } ?? "none")"])
        if let changes = store.changes() {
            watchTask = Task { [weak self] in
                for await change in changes {
                    guard let self else { return }
                    switch change {
                    case .events(let events): self.histories.merge(events)
                    case .registry: self.scheduleFollow()
                    }
                }
            }
            // Another replica may have activated a model while this one was loading its own.
            scheduleFollow()
        }
    }

    /// Runs `followRegistry` unless it is running already (then it runs once more afterwards).
    private func scheduleFollow() {
        let start = lock.locked { () -> Bool in
            if following { followAgain = true; return false }
            following = true
            return true
        }
        guard start else { return }
        Task {
            var wait = 1.0
            while true {
                if await !self.followRegistry() {
                    // Failed (the store down, too many loads, a load timed out): try again later
                    // rather than stay behind until the next registry change.
                    try? await Task.sleep(for: .seconds(wait))
                    wait = min(wait * 2, 30)
                    if self.watchTask?.isCancelled ?? true { return }
                    continue
                }
                let again = self.lock.locked { () -> Bool in
                    if followAgain { followAgain = false; return true }
                    following = false
                    return false
                }
                if !again { return }
            }
        }
    }

    /// Another process changed the registry: when its active model is not the one answering here,
    /// loads it and swaps it in (without writing to the store). A model that does not load here
    /// (its files are not at the same path on this machine) leaves the current one answering;
    /// /health says so until the replicas agree again.
    @discardableResult
    func followRegistry() async -> Bool {
        do {
            try await activationLock.withLock {
                let records = try await store.models()
                guard let target = records.first(where: \.active) else { return }
                if activeRecord?.id == target.id {
                    lock.locked { followError = nil }
                    return
                }
                let loaded = lock.locked { rollback?.record.id == target.id ? rollback?.model : nil }
                let model: Pipeline
                if let loaded { model = loaded } else { model = try await loads.load("model \(target.id)") { try self.loader(target) } }
                swapIn(target, model: model)
                lock.locked { followError = nil }
                logger.info("followed another replica's activation", metadata: ["id": "\(target.id)", "path": "\(target.path)"])
            }
            return true
        } catch {
            lock.locked { followError = "\(error)" }
            logger.error("cannot follow the registry's active model; the current one keeps answering", metadata: ["error": "\(error)"])
            return false
        }
    }

    /// Without an active model, activates the newest registered model that loads (the previous
    /// good one when the active one was deleted). Returns its record, or nil when none loads.
    @discardableResult
    public func activateLastGoodModel() async throws -> ModelRecord? {
        guard activeModel == nil else { return activeModel?.record }
        for record in try await store.models().reversed() {
            do {
                let model = try await loads.load("model \(record.id)") { try self.loader(record) }
                let activated = try await commitActivation(record, model: model)
                logger.warning("fell back to an earlier model", metadata: ["id": "\(record.id)", "path": "\(record.path)"])
                return activated
            } catch {
                logger.warning("registered model does not load", metadata: ["id": "\(record.id)", "error": "\(error)"])
            }
        }
        return nil
    }

    /// Loads a model folder and its index (or builds HNSW over the item embeddings); with `exact`
    /// every item is scored instead and no index is used.
    public static func loadServingModel(path: String, index indexPath: String?, exact: Bool = false,
                                        searchParameters: SearchParameters = SearchParameters(ef: 64)) throws -> ServingModel {
        let trained = try TrainedModel.load(from: path)
        let index = exact ? nil : try indexPath.map { try IndexFile.load($0) }
        return try ServingModel(trained: trained, index: index, indexPath: indexPath ?? "index",
                                buildIndex: !exact, searchParameters: searchParameters)
    }

    /// The pipeline of a registry record: a pipeline file (docs/pipeline.md) when the path is a
    /// file, its retrievers served as models are; else the model folder as a one-model pipeline.
    public static func loadPipeline(_ record: ModelRecord, exact: Bool = false,
                                    searchParameters: SearchParameters = SearchParameters(ef: 64)) throws -> Pipeline {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: record.path, isDirectory: &isDirectory), !isDirectory.boolValue {
            // The file's own ef / exact per retriever, else the server's.
            return try PipelineFile.load(record.path) { entry in
                try loadServingModel(path: entry.model, index: entry.index, exact: entry.exact ?? exact,
                                     searchParameters: entry.ef.map { SearchParameters(ef: $0) } ?? searchParameters)
            }
        }
        return .single(try loadServingModel(path: record.path, index: record.index, exact: exact, searchParameters: searchParameters))
    }

    /// A pipeline file names more files (its retrievers' models and indexes, its rankers): each
    /// must lie inside the model directories too, refused with the same 403 as any other path,
    /// so a pipeline file cannot load, or tell about, files outside them.
    static func checkPipelinePaths(_ path: String, policy: AccessPolicy) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue,
              let file = try? PipelineFile.read(path) else { return }   // not a pipeline file: the load says what is wrong
        let folder = (path as NSString).deletingLastPathComponent
        func resolved(_ p: String) -> String { p.hasPrefix("/") ? p : (folder as NSString).appendingPathComponent(p) }
        for (n, retriever) in file.retrievers.enumerated() {
            _ = try policy.resolve(resolved(retriever.model), field: "retrievers[\(n)].model")
            if let index = retriever.index { _ = try policy.resolve(resolved(index), field: "retrievers[\(n)].index") }
        }
        for ranker in (file.ranker?.model.map { [$0] } ?? []) + (file.ranker?.models ?? []) {
            _ = try policy.resolve(resolved(ranker), field: "ranker.model")
        }
    }

    public func close() {
        watchTask?.cancel()
        // The trainer saves its state before the store closes under it.
        lock.locked { onlineTrainer }?.stop()
        store.close()
    }

    var activeModel: ActiveModel? { lock.locked { active } }

    /// The registry record of the model that answers, or nil when none is active.
    public var activeRecord: ModelRecord? { lock.locked { active?.record } }

    // MARK: - Registry

    /// Registers a model folder (validated by loading it, index included; canonical absolute paths
    /// are stored) and, with `activate`, makes it the active model. `checkAccess` applies the access
    /// policy's model directories (HTTP); the operator's own `--model` skips it.
    @discardableResult
    public func register(path: String, index: String?, activate: Bool = false, checkAccess: Bool = true) async throws -> ModelRecord {
        guard !path.isEmpty else { throw APIError(.badRequest, "path: must name a model folder") }
        let policy = checkAccess ? access : AccessPolicy.open
        let modelPath = try policy.resolve(path, field: "path")
        let indexPath = try index.map { try policy.resolve($0, field: "index") }
        try Self.checkPipelinePaths(modelPath, policy: policy)
        let probe = ModelRecord(id: 0, path: modelPath, index: indexPath, modelType: "", registeredAt: 0, active: false)
        let model: Pipeline
        do {
            model = try await loads.load("the model") { try self.loader(probe) }
        } catch let error as APIError {
            throw error
        } catch {
            throw APIError(.unprocessableContent, "cannot load model: \(error)")
        }
        var record = try await store.registerModel(path: modelPath, index: indexPath, modelType: model.kind)
        logger.info("model registered", metadata: ["id": "\(record.id)", "path": "\(modelPath)", "type": "\(model.kind)"])
        if activate { record = try await commitActivation(record, model: model) }
        return record
    }

    /// What `serve --model PATH` does: the active model when it is PATH with this index already,
    /// else the registered record of PATH and index activated (the newest, when several), else a
    /// new registration. Restarting with the same `--model` never registers a duplicate.
    public func activateOrRegister(path: String, index: String?) async throws -> ModelRecord {
        if let current = activeRecord, current.path == path, current.index == index { return current }
        if let known = try await store.models().last(where: { $0.path == path && $0.index == index }) {
            return try await activate(id: known.id)
        }
        return try await register(path: path, index: index, activate: true, checkAccess: false)
    }

    /// Makes model `id` the one that answers: loads it unless it is the active or the previous one,
    /// records it in the store, then swaps the reference (requests in flight keep the old model).
    @discardableResult
    public func activate(id: Int) async throws -> ModelRecord {
        guard let record = try await store.models().first(where: { $0.id == id }) else {
            throw APIError(.notFound, "no model with id \(id); GET /v1/models lists them")
        }
        let loaded = lock.locked { () -> Pipeline? in
            if let current = active, current.record.id == id { return current.model }
            if let previous = rollback, previous.record.id == id { return previous.model }
            return nil
        }
        let model: Pipeline
        if let loaded {
            model = loaded
        } else {
            do {
                model = try await loads.load("model \(id)") { try self.loader(record) }
            } catch let error as APIError {
                throw error
            } catch {
                throw APIError(.unprocessableContent, "cannot load model \(id): \(error)")
            }
        }
        return try await commitActivation(record, model: model)
    }

    /// Records `record` as active in the store and swaps it in; the replaced model becomes the
    /// rollback, and any older one is released.
    private func commitActivation(_ record: ModelRecord, model: Pipeline) async throws -> ModelRecord {
        if lock.locked({ onlineTrainer }) != nil {
            throw APIError(.conflict, "the server learns online (--online): its trainer's model answers, and an activation would be overwritten at the next publish; restart with --model instead")
        }
        var record = record
        record.active = true
        try await activationLock.withLock {
            guard try await store.models().contains(where: { $0.id == record.id }) else {
                throw APIError(.notFound, "model \(record.id) was deleted while it was loading")
            }
            try await store.setActiveModel(id: record.id)
            swapIn(record, model: model)
        }
        logger.info("model activated", metadata: ["id": "\(record.id)", "type": "\(record.modelType)", "retrieval": "\(model.retrievalPath.rawValue)"])
        return record
    }

    /// Makes `record` the model that answers here; the replaced one becomes the rollback.
    private func swapIn(_ record: ModelRecord, model: Pipeline) {
        var record = record
        record.active = true
        lock.locked {
            if let previous = active, previous.record.id != record.id { rollback = previous }
            if rollback?.record.id == record.id { rollback = nil }
            active = ActiveModel(record: record, model: model)
        }
        metrics.recordActivation(id: record.id, type: record.modelType)
    }

    /// Removes an inactive model from the registry (its files are left alone) and releases it.
    public func deleteModel(id: Int) async throws {
        try await activationLock.withLock {
            guard let record = try await store.models().first(where: { $0.id == id }) else {
                throw APIError(.notFound, "no model with id \(id); GET /v1/models lists them")
            }
            guard !record.active else {
                throw APIError(.conflict, "model \(id) is active; activate another model before deleting it")
            }
            try await store.deleteModel(id: id)
            lock.locked { if rollback?.record.id == id { rollback = nil } }
        }
        logger.info("model deleted", metadata: ["id": "\(id)"])
    }

    /// The models held in memory (the active one and the previous one), for tests and metrics.
    var loadedModelIDs: [Int] { lock.locked { [active?.record.id, rollback?.record.id].compactMap { $0 } } }

    // MARK: - Events

    /// Validates a batch (all or nothing), stores it durably, then makes it visible.
    func ingest(_ batch: [EventIn]) async throws -> EventsOut {
        guard !batch.isEmpty else { throw APIError(.badRequest, "events: the batch is empty") }
        guard batch.count <= limits.maxEventsPerBatch else {
            throw APIError(.badRequest, "events: \(batch.count) events in one batch; at most \(limits.maxEventsPerBatch)")
        }
        let now = Int64(Date().timeIntervalSince1970)
        var events: [Event] = []
        events.reserveCapacity(batch.count)
        for (n, e) in batch.enumerated() {
            try checkID(e.user, field: "events[\(n)].user")
            try checkID(e.item, field: "events[\(n)].item")
            guard Self.eventTypes.contains(e.type) else {
                throw APIError(.badRequest, "events[\(n)].type: '\(e.type.prefix(64))' is not one of \(Self.eventTypes.joined(separator: ", "))")
            }
            if let t = e.timestamp, t < 0 { throw APIError(.badRequest, "events[\(n)].timestamp: must be Unix seconds >= 0, got \(t)") }
            if let t = e.timestamp, t > now + limits.maxFutureSeconds {
                throw APIError(.badRequest, "events[\(n)].timestamp: \(t) is more than \(limits.maxFutureSeconds) s in the future (now \(now)); timestamps are Unix seconds")
            }
            if e.type == "rating" {
                guard let v = e.value else { throw APIError(.badRequest, "events[\(n)].value: a rating event needs its rating, e.g. \"value\": 4.5") }
                guard v.isFinite else { throw APIError(.badRequest, "events[\(n)].value: must be a finite number") }
            } else if e.value != nil {
                throw APIError(.badRequest, "events[\(n)].value: only rating events carry a value (this one is '\(e.type)')")
            }
            events.append(Event(user: e.user, item: e.item, type: e.type, timestamp: e.timestamp ?? now, value: e.value))
        }
        let seqs: [Int64]
        do {
            seqs = try await store.append(events)
        } catch {
            let reference = Self.errorReference()
            logger.error("event store append failed", metadata: ["error": "\(error)", "reference": "\(reference)"])
            // Not acknowledged: none of the events was stored, except that after a timeout the
            // database may still have committed the batch (a retry then stores it twice).
            throw APIError(.serviceUnavailable, "events were not stored (the store failed; reference \(reference) in the server log); retry")
        }
        histories.merge(zip(seqs, events).map { StoredEvent(seq: $0, event: $1) })
        lock.locked { onlineTrainer }?.notify(stored: seqs)
        let model = lock.locked { active?.model.primary }
        // A shared store counts through its change feed, which may not have seen this batch yet.
        let total = max(store.counts.events, seqs.count)
        metrics.recordEvents(types: events.map(\.type))
        let unknown = model.map { m in events.filter { m.trained.items.index(of: $0.item) == nil }.count } ?? events.count
        let threshold = model.map(\.trained.positiveThreshold) ?? TrainedModel.defaultPositiveThreshold
        let below = events.filter { !UserEvent($0).isPositive(threshold: threshold) }.count
        return EventsOut(accepted: events.count, unknownItems: unknown, belowThreshold: below, storedTotal: total)
    }

    /// IDs are stored and returned as given, so they must survive a round trip through the store
    /// and TSV files unchanged: control characters (NUL, tab, newline, ...) are refused.
    func checkID(_ id: String, field: String) throws {
        guard !id.isEmpty else { throw APIError(.badRequest, "\(field): must not be empty") }
        guard id.unicodeScalars.count <= limits.maxIDLength else {
            throw APIError(.badRequest, "\(field): longer than \(limits.maxIDLength) characters")
        }
        if let bad = id.unicodeScalars.first(where: { $0.properties.generalCategory == .control }) {
            throw APIError(.badRequest, "\(field): contains the control character U+\(String(format: "%04X", bad.value)); IDs may not hold control characters")
        }
    }

    /// A short random reference that ties an opaque error answer to its full record in the log.
    static func errorReference() -> String { String(format: "%08x", UInt32.random(in: 0...UInt32.max)) }

    /// The items of a user's events, in arrival order (empty when none).
    public func eventHistory(ofUser user: String) async -> [String] { await userEvents(user).map(\.item) }

    /// A user's events: from the cache, else read from the store and cached. When the store
    /// cannot answer (a database connection lost), the recommendation goes on without the events
    /// since training (logged and counted in `affinity_store_read_errors_total`).
    func userEvents(_ user: String) async -> [UserEvent] {
        if let cached = histories.get(user) { return cached }
        do {
            return histories.fill(user, history: try await store.history(ofUser: user))
        } catch {
            metrics.recordStoreReadError()
            logger.warning("cannot read a history from the store; answering without it", metadata: ["error": "\(error)"])
            return []
        }
    }

    // MARK: - Recommendations

    /// Where `user` stands for `model`, with their events since training (`ServingModel.place`).
    func placement(ofUser user: String, model: ServingModel) async -> UserPlacement {
        model.place(user: user, events: await userEvents(user))
    }

    func itemsOut(_ list: [Recommendation], model: ServingModel) -> [ItemOut] {
        let vocabulary = model.trained.items, titles = model.trained.catalog?.titles
        return list.map { r in
            let id = vocabulary[r.item]
            return ItemOut(item: id, score: r.score, title: titles?[id],
                           because: r.because.map { $0.map { c in
                               let cid = vocabulary[c.item]
                               return ContributionOut(item: cid, title: titles?[cid], weight: c.weight)
                           } }, persona: r.persona)
        }
    }

    func requireModel() throws -> ActiveModel {
        guard let current = activeModel else {
            throw APIError(.serviceUnavailable, "no active model; POST /v1/models registers one and POST /v1/models/{id}/activate activates it")
        }
        return current
    }

    /// The pipeline's list as the API returns it.
    func listOut(_ pipeline: Pipeline, _ context: UserContext, k: Int, explain: Bool) throws -> [ItemOut] {
        itemsOut(try pipeline.recommend(context, k: k, explain: explain), model: pipeline.primary)
    }

    func recommendForUser(_ user: String, k: Int, excludeSeen: Bool, exclude: [String], explain: Bool,
                          fallbackPopular: Bool) async throws -> RecommendationsOut {
        let current = try requireModel()
        let pipeline = current.model, model = pipeline.primary
        let ref = ModelRef(id: current.record.id, type: current.record.modelType)
        let requested = exclude.compactMap { model.trained.items.index(of: $0) }
        let placement = await placement(ofUser: user, model: model)
        guard let context = placement.context(excluding: requested, excludeSeen: excludeSeen) else {
            guard fallbackPopular else {
                throw APIError(.notFound, "unknown user '\(user)': not in model \(current.record.id)'s training data and no events; add fallback=popular for popular items")
            }
            let items = try model.popular(k: k, excluded: excludeSeen ? placement.seen + requested : requested)
            return RecommendationsOut(user: user, model: ref, retrieval: RetrievalPath.popular.rawValue, items: itemsOut(items, model: model))
        }
        let items = try listOut(pipeline, context, k: k, explain: explain)
        var note: String? = nil
        if case .history(let h) = context.subject { note = model.truncationNote(history: h) }
        return RecommendationsOut(user: user, model: ref, retrieval: pipeline.retrievalPath.rawValue, items: items, note: note)
    }


    func recommendForHistory(_ body: HistoryRequest) throws -> RecommendationsOut {
        let current = try requireModel()
        let pipeline = current.model, model = pipeline.primary
        let k = body.k ?? 10
        guard k >= 1 && k <= limits.maxK else { throw APIError(.badRequest, "k: must be between 1 and \(limits.maxK), got \(k)") }
        guard body.history.count <= limits.maxHistory else {
            throw APIError(.badRequest, "history: \(body.history.count) items; at most \(limits.maxHistory)")
        }
        var history: [Int] = []
        for (n, id) in body.history.enumerated() {
            guard let i = model.trained.items.index(of: id) else {
                throw APIError(.badRequest, "history[\(n)]: unknown item '\(id.prefix(limits.maxIDLength))' (not in model \(current.record.id))")
            }
            history.append(i)
        }
        let requested = (body.exclude ?? []).compactMap { model.trained.items.index(of: $0) }
        let ref = ModelRef(id: current.record.id, type: current.record.modelType)
        if history.isEmpty {
            let items = try model.popular(k: k, excluded: requested)
            return RecommendationsOut(user: nil, model: ref, retrieval: RetrievalPath.popular.rawValue, items: itemsOut(items, model: model))
        }
        let items = try listOut(pipeline, UserContext(subject: .history(history), history: history, excluded: history + requested),
                                k: k, explain: body.explain ?? false)
        return RecommendationsOut(user: nil, model: ref, retrieval: pipeline.retrievalPath.rawValue, items: items,
                                  note: model.truncationNote(history: history))
    }

    func similar(toItem item: String, k: Int) throws -> SimilarOut {
        let current = try requireModel()
        let model = current.model.primary
        guard let i = model.trained.items.index(of: item) else {
            throw APIError(.notFound, "unknown item '\(item.prefix(limits.maxIDLength))' (not in model \(current.record.id))")
        }
        let list = try model.similar(item: i, k: k).map { Recommendation(item: $0.index, score: $0.score, because: nil) }
        return SimilarOut(item: item, model: ModelRef(id: current.record.id, type: current.record.modelType),
                          items: itemsOut(list, model: model))
    }

    func health() -> (HealthOut, HTTPResponse.Status) {
        let (current, followFailure, trainer) = lock.locked { (active, followError, onlineTrainer) }
        var behind = followFailure
        if let failure = trainer?.status.failure {
            behind = "online training stopped, serving the last published model: \(failure)" + (behind.map { "; \($0)" } ?? "")
        }
        let events = store.counts.events
        guard let current else { return (HealthOut(status: "no active model", model: nil, events: events), .serviceUnavailable) }
        let ref = ModelRef(id: current.record.id, type: current.record.modelType)
        // Still answering, with the model it has: 200, and the status says what is wrong.
        if let behind {
            let what = trainer?.status.failure != nil ? String(behind.prefix(300)) : "not following the registry's active model (\(behind.prefix(300)))"
            return (HealthOut(status: "degraded: \(what)", model: ref, events: events), .ok)
        }
        return (HealthOut(status: "ok", model: ref, events: events), .ok)
    }

    /// The active model, stored events, users with events and the `sampleUsers` smallest user IDs
    /// (the same in every process), for the dashboard.
    func dashboardState(sampleUsers: Int) async -> (ActiveModel?, Int, Int, [String]) {
        let smallest = sampleUsers > 0 ? ((try? await store.sampleUsers(limit: sampleUsers)) ?? []) : []
        let counts = store.counts
        return (activeModel, counts.events, counts.users, smallest)
    }

    func metricsText() -> String {
        let counts = store.counts, cached = histories.size
        return metrics.render(storedEvents: counts.events, usersWithEvents: counts.users,
                              cachedHistories: cached.users, cachedHistoryEvents: cached.events)
            + (lock.locked { onlineTrainer }?.metricsText() ?? "")
    }

    // MARK: - Online learning

    /// Starts learning from the event stream (`affinity serve --online`): the trainer starts from its
    /// saved state, else the active embedding model, else nothing; publishes at once, then learns
    /// every stored event and publishes every `publishInterval` seconds. Stopped by `close()`.
    public func startOnline(_ settings: OnlineSettings) throws {
        guard store is SQLiteStore else {
            throw APIError(.badRequest, "online training needs the SQLite store: on PostgreSQL concurrent transactions commit sequence numbers out of order, and the trainer, which reads events after the last one it learned, could skip some")
        }
        let trainer = try OnlineTrainer(settings: settings, service: self)
        lock.locked { onlineTrainer = trainer }
        try trainer.start()
        logger.info("online training started", metadata: ["state": "\(settings.statePath)", "position": "\(trainer.status.learnedPosition)",
                                                          "publish_interval_s": "\(settings.publishInterval)"])
    }

    /// The online trainer's model replaces the served one (the registry is not changed: the record
    /// stays the active model's, or a record of the online state when there is none).
    func swapInOnline(_ model: ServingModel, statePath: String) {
        let first = lock.locked { () -> Bool in
            let record = active?.record ?? ModelRecord(id: 0, path: statePath, index: nil, modelType: OnlineMF.modelType,
                                                       registeredAt: Int64(Date().timeIntervalSince1970), active: true)
            let first = active == nil
            active = ActiveModel(record: record, model: .single(model))
            return first
        }
        if first { metrics.recordActivation(id: 0, type: OnlineMF.modelType) }
    }

    func logOnlineFailure(_ message: String) {
        logger.error("online training stopped; the last published model keeps serving", metadata: ["error": "\(message)"])
    }

    func logOnlineStoreError(_ message: String) {
        logger.warning("online training could not read the store; retrying in 1 s", metadata: ["error": "\(message)"])
    }
}

extension UserEvent {
    /// A stored event as a user's history holds it: the item, and the rating of a rating event.
    init(_ event: Event) {
        self.init(item: event.item, rating: event.type == "rating" ? (event.value ?? .nan) : nil, timestamp: event.timestamp)
    }
}

import Foundation
import Logging
import NIOCore
import PostgresNIO

/// Where a PostgreSQL store is: `postgres://USER@HOST:PORT/DATABASE` (`postgresql://` too; port
/// 5432 and user `postgres` when left out). The password never appears in the URL: it comes from
/// the environment (`AFFINITY_PG_PASSWORD`, else libpq's `PGPASSWORD`), so it is in no command
/// line, process list, message or log.
public struct PostgresLocation: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var user: String
    public var database: String

    public init(host: String, port: Int = 5432, user: String = "postgres", database: String) {
        self.host = host
        self.port = port
        self.user = user
        self.database = database
    }

    /// True when `text` names a PostgreSQL store rather than a SQLite file.
    public static func isURL(_ text: String) -> Bool { text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") }

    public init(url text: String) throws {
        // The text is never echoed: it might hold a password in a form that does not parse.
        if let scheme = text.range(of: "://"), let at = text[scheme.upperBound...].lastIndex(of: "@"),
           text[scheme.upperBound..<at].contains(":") {
            throw PostgresStoreError("the store URL holds a password; remove it and set AFFINITY_PG_PASSWORD (or PGPASSWORD) instead, so that it is in no command line or log")
        }
        guard Self.isURL(text), let url = URLComponents(string: text) else {
            throw PostgresStoreError("the store is not a postgres://USER@HOST:PORT/DATABASE URL")
        }
        guard url.password == nil else {
            throw PostgresStoreError("the store URL holds a password; remove it and set AFFINITY_PG_PASSWORD (or PGPASSWORD) instead, so that it is in no command line or log")
        }
        guard let host = url.host, !host.isEmpty else { throw PostgresStoreError("the store URL names no host: postgres://USER@HOST:PORT/DATABASE") }
        let database = String(url.path.drop(while: { $0 == "/" }))
        guard !database.isEmpty, !database.contains("/") else {
            throw PostgresStoreError("the store URL names no database: postgres://USER@HOST:PORT/DATABASE")
        }
        let port = url.port ?? 5432
        guard (1...65535).contains(port) else { throw PostgresStoreError("the store URL's port \(port) is out of range") }
        self.init(host: host, port: port, user: url.user ?? "postgres", database: database)
    }

    public var description: String { "postgres://\(user)@\(host):\(port)/\(database)" }

    /// The password from `AFFINITY_PG_PASSWORD`, else `PGPASSWORD`; nil when neither is set.
    public static func passwordFromEnvironment() -> String? {
        let environment = ProcessInfo.processInfo.environment
        return environment["AFFINITY_PG_PASSWORD"].flatMap { $0.isEmpty ? nil : $0 }
            ?? environment["PGPASSWORD"].flatMap { $0.isEmpty ? nil : $0 }
    }
}

/// An error of the PostgreSQL store, with what failed and where (never a password).
public struct PostgresStoreError: Error, CustomStringConvertible {
    public var message: String
    /// The server gave no answer in time.
    public var timedOut = false
    public init(_ message: String, timedOut: Bool = false) {
        self.message = message
        self.timedOut = timedOut
    }
    public var description: String { message }
}

/// The PostgreSQL store: several `affinity serve` replicas share one database. Events go in with
/// one statement per batch (durable at commit: `synchronous_commit` as the server sets it, `on` by
/// default); histories are read per user; the registry and the active model live in the database,
/// and every change to them is announced with NOTIFY on `affinity_registry`. A watcher started at
/// open follows what every process commits: events by polling (`pollInterval`; sequence numbers
/// are tracked with their gaps, since concurrent transactions commit out of order, and a gap older
/// than 30 s is taken as a rolled-back insert), the registry by LISTEN and, as the fallback, by
/// polling its version. Connections come from a `PostgresClient` pool; every operation gives up
/// after `timeout` with an error naming the server, so an unreachable database turns into 503s
/// for writes, never into hung requests, and the pool reconnects by itself.
public final class PostgresStore: AffinityStore, @unchecked Sendable {
    /// Schema migrations in order, each a list of statements run in one transaction;
    /// `affinity_schema.version` is the number applied. Never edit a released one: append a new step.
    static let migrations: [[String]] = [
        [
            """
            CREATE TABLE events (
                seq BIGSERIAL PRIMARY KEY,
                user_id TEXT NOT NULL,
                item TEXT NOT NULL,
                type TEXT NOT NULL,
                ts BIGINT NOT NULL,
                value DOUBLE PRECISION,
                received_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )
            """,
            "CREATE INDEX events_by_user ON events(user_id, seq)",
            "CREATE TABLE users (user_id TEXT PRIMARY KEY, first_seq BIGINT NOT NULL)",
            """
            CREATE TABLE models (
                id BIGSERIAL PRIMARY KEY,
                path TEXT NOT NULL,
                index_path TEXT,
                model_type TEXT NOT NULL,
                registered_at BIGINT NOT NULL,
                active BOOLEAN NOT NULL DEFAULT false
            )
            """,
            "CREATE TABLE registry_version (one BOOLEAN PRIMARY KEY DEFAULT true CHECK (one), version BIGINT NOT NULL)",
            "INSERT INTO registry_version VALUES (true, 0)",
        ],
    ]
    /// The advisory lock that serialises migrations of replicas starting together.
    static let migrationLock: Int64 = 0x4166_6669_6E69_7479

    public let server: PostgresLocation
    public var location: String { server.description }
    /// The pool in use; replaced by a fresh one when the server comes back after an outage (the
    /// pool's own reconnection backs off up to a minute).
    private var pool: PostgresClient
    private let configuration: PostgresClient.Configuration
    /// Since when the server has been unreachable (nil: reachable). While it is, every operation
    /// fails at once instead of waiting for its timeout, and a probe reconnects every 250 ms.
    private var downSince: ContinuousClock.Instant?
    private var recoveryTask: Task<Void, Never>?
    let logger: Logger
    let timeout: Duration
    let pollInterval: Duration
    private var runTask: Task<Void, Never>?
    private var watchTask: Task<Void, Never>?
    private var listenTask: Task<Void, Never>?

    private let lock = NSLock()
    private var stored = StoreCounts(events: 0, users: 0)
    private var closed = false
    private var consumer: AsyncStream<StoreChange>.Continuation?
    // The event feed: every sequence number up to `contiguous` has been seen (or given up on as a
    // rolled-back insert); `seenAbove` holds those seen beyond it.
    private var contiguous: Int64 = 0
    private var seenAbove: Set<Int64> = []
    private var gapSince: ContinuousClock.Instant?
    /// The `contiguous` at which the open gap was first seen.
    private var gapAt: Int64 = -1
    private var registryVersion: Int64 = 0

    public var counts: StoreCounts { lock.locked { stored } }

    /// Connects (failing fast with the server's address when it cannot), migrates the schema under
    /// an advisory lock (refusing a database whose schema is newer than this build), reads the
    /// counts and starts the watcher.
    public static func open(_ server: PostgresLocation, password: String? = PostgresLocation.passwordFromEnvironment(),
                            logger: Logger = Logger(label: "affinity.postgres"), timeout: Duration = .seconds(5),
                            pollInterval: Duration = .milliseconds(250), maxConnections: Int = 16) async throws -> PostgresStore {
        // One direct connection first: an unreachable server or a refused login is said at once,
        // with the address (the pool would retry quietly).
        let probe = try await connect(server, password: password, logger: logger, timeout: timeout)
        try? await probe.close()
        var configuration = PostgresClient.Configuration(host: server.host, port: server.port, username: server.user,
                                                         password: password, database: server.database, tls: .disable)
        configuration.options.maximumConnections = max(2, maxConnections)
        configuration.options.minimumConnections = 1
        configuration.options.connectTimeout = timeout
        // The server gives up on a statement at the timeout, so an operation the client abandoned
        // cannot commit later (the client waits one second more for the server's own error).
        configuration.options.additionalStartupParameters = [("statement_timeout", "\(Int(timeout.seconds * 1000))")]
        let store = PostgresStore(server: server, configuration: configuration, password: password,
                                  logger: logger, timeout: timeout, pollInterval: pollInterval)
        do {
            try await store.migrate()
            try await store.readCounts()
        } catch {
            store.close()
            throw error
        }
        store.startWatching()
        return store
    }

    private let password: String?
    /// A direct connection (not from the pool) to `server`, failing within `timeout` with an error
    /// that names host, port, database and user, never the password.
    public static func connect(_ server: PostgresLocation, password: String? = PostgresLocation.passwordFromEnvironment(),
                               logger: Logger, timeout: Duration = .seconds(10)) async throws -> PostgresConnection {
        let configuration = PostgresConnection.Configuration(host: server.host, port: server.port, username: server.user,
                                                             password: password, database: server.database, tls: .disable)
        do {
            return try await withDeadline(timeout, "connecting to PostgreSQL at \(server.host):\(server.port)") {
                try await PostgresConnection.connect(configuration: configuration, id: 0, logger: logger)
            }
        } catch {
            throw PostgresStoreError("cannot connect to PostgreSQL at \(server.host):\(server.port) (database \(server.database), user \(server.user)): \(describe(error))")
        }
    }

    /// Whether the server takes a direct connection now (closed again at once).
    private func probe(timeout: Duration = .seconds(2)) async throws {
        let connection = try await Self.connect(server, password: password, logger: logger, timeout: timeout)
        try? await connection.close()
    }

    private init(server: PostgresLocation, configuration: PostgresClient.Configuration, password: String?,
                 logger: Logger, timeout: Duration, pollInterval: Duration) {
        self.server = server
        self.configuration = configuration
        self.password = password
        let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        pool = client
        self.logger = logger
        self.timeout = timeout
        self.pollInterval = pollInterval
        runTask = Task { await client.run() }
    }

    deinit { close() }

    public func close() {
        let tasks = lock.locked { () -> [Task<Void, Never>?] in
            closed = true
            consumer?.finish()
            consumer = nil
            defer { watchTask = nil; listenTask = nil; runTask = nil; recoveryTask = nil }
            return [watchTask, listenTask, runTask, recoveryTask]
        }
        for t in tasks { t?.cancel() }
    }

    private func checkOpen() throws {
        if lock.locked({ closed }) { throw PostgresStoreError("\(location): store is closed") }
    }

    /// Runs `body` against the pool, giving up after the store's timeout with an error naming the
    /// server and what was being done.
    private func run<T: Sendable>(_ what: String, timeout: Duration? = nil,
                                  _ body: @escaping @Sendable (PostgresClient) async throws -> T) async throws -> T {
        try checkOpen()
        let timeout = timeout ?? (self.timeout + .seconds(1))
        let (client, down) = lock.locked { (pool, downSince) }
        if let down {
            throw PostgresStoreError("\(what): PostgreSQL at \(server.host):\(server.port) is unreachable (for \(String(format: "%.1f", (ContinuousClock.now - down).seconds)) s; reconnecting)")
        }
        do {
            // An operation still waiting after a second may be waiting for a pool that cannot connect
            // (the server gone): a direct connection attempt then tells at once.
            return try await Self.withDeadline(timeout, "\(what) on \(location)", probeAfter: .seconds(1),
                                               probe: { try await self.probe() }) { try await body(client) }
        } catch let error as PostgresStoreError {
            if error.timedOut { markDown(client) }
            throw error
        } catch {
            if Self.isConnectionProblem(error) { markDown(client) }
            throw PostgresStoreError("\(what) on \(location) failed: \(Self.describe(error))")
        }
    }


    /// An error of the connection rather than of the statement: no answer from the server. A
    /// server's error (a statement timeout included) carries its message and is not one; neither is a
    /// row that does not decode. Anything else (a closed connection, a pool error) is; a pool already
    /// replaced by a swap is told apart by `markDown`, which only marks the current pool down.
    static func isConnectionProblem(_ error: any Error) -> Bool {
        if let e = error as? PSQLError { return e.serverInfo == nil }
        if let e = error as? PostgresTransactionError {
            return [e.beginError, e.closureError, e.commitError].contains { $0.map(isConnectionProblem) ?? false }
        }
        return !(error is PostgresStoreError) && !(error is CancellationError) && !(error is PostgresDecodingError)
            && !(error is APIError)
    }

    /// The server stopped answering: operations fail fast from now on, and a probe connects every
    /// 250 ms; once one gets through, a fresh pool replaces the old one.
    private func markDown(_ failed: PostgresClient) {
        let start = lock.locked { () -> Bool in
            // A failure of a pool already replaced says nothing about the current one.
            guard downSince == nil, !closed, failed === pool else { return false }
            downSince = .now
            return true
        }
        guard start else { return }
        logger.error("PostgreSQL is unreachable; writes fail until it answers again", metadata: ["server": "\(server.host):\(server.port)"])
        let task = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(250))
                guard let self else { return }
                guard (try? await self.probe()) != nil else { continue }
                let fresh = PostgresClient(configuration: self.configuration, backgroundLogger: self.logger)
                let run = Task { await fresh.run() }
                let (old, since) = self.lock.locked { () -> (Task<Void, Never>?, ContinuousClock.Instant?) in
                    if self.closed { return (run, nil) }   // closed meanwhile: the fresh pool goes at once
                    defer {
                        self.pool = fresh
                        self.runTask = run
                        self.downSince = nil
                        self.recoveryTask = nil
                    }
                    return (self.runTask, self.downSince)
                }
                old?.cancel()
                self.logger.notice("PostgreSQL answers again", metadata: ["server": "\(self.server.host):\(self.server.port)",
                                                                          "down_seconds": "\(since.map { String(format: "%.1f", (ContinuousClock.now - $0).seconds) } ?? "?")"])
                return
            }
        }
        lock.locked { recoveryTask = task }
    }

    /// `body`, or an error once `limit` has passed. The caller is resumed at the deadline even when
    /// the body does not react to cancellation (a pool lease waiting for a server that is gone):
    /// the body is cancelled and left to finish on its own.
    ///
    /// With `probe`: when the body has not finished after `probeAfter`, the probe runs once, and if it
    /// fails the caller gets that failure at once (as a timeout: the server is not there).
    static func withDeadline<T: Sendable>(_ limit: Duration, _ what: String, probeAfter: Duration = .zero,
                                          probe: (@Sendable () async throws -> Void)? = nil,
                                          _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let once = ResumeOnce<T>()
        let helpers = HelperTasks()
        return try await withCheckedThrowingContinuation { continuation in
            once.set(continuation)
            let work = Task {
                let result: Result<T, any Error>
                do { result = .success(try await body()) } catch { result = .failure(error) }
                helpers.finish()
                once.resume(with: result)
            }
            // Answering for the body also cancels it, so that a body that has not sent its statement
            // yet (a lease still waiting) never sends it (`append` checks before sending).
            helpers.add(Task {
                try? await Task.sleep(for: limit)
                guard !Task.isCancelled else { return }
                once.resume(with: .failure(PostgresStoreError("\(what): no answer within \(limit)", timedOut: true)))
                work.cancel()
            })
            if let probe {
                helpers.add(Task {
                    try? await Task.sleep(for: probeAfter)
                    guard !Task.isCancelled else { return }
                    do {
                        try await probe()
                    } catch {
                        once.resume(with: .failure(PostgresStoreError("\(what): the server does not accept connections (\(describe(error)))", timedOut: true)))
                        work.cancel()
                    }
                })
            }
        }
    }

    /// What went wrong, without the query text or connection secrets: the server's own message
    /// and SQLSTATE when it answered, else the connection error (refused, reset, closed).
    static func describe(_ error: any Error) -> String {
        if let e = error as? PSQLError {
            if let message = e.serverInfo?[.message] {
                return "\(message)" + (e.serverInfo?[.sqlState].map { " (SQLSTATE \($0))" } ?? "")
            }
            if let underlying = e.underlying { return "\(e.code): \(underlying)" }
            return "\(e.code)"
        }
        if let e = error as? PostgresTransactionError {
            return describe(e.closureError ?? e.commitError ?? e.beginError ?? e.rollbackError ?? error)
        }
        return "\(error)"
    }

    // MARK: - Schema

    private func migrate() async throws {
        let known = Self.migrations.count
        let logger = self.logger
        // At start the pool opens its first connection and replicas may wait for each other's
        // migration: more time than one operation gets.
        try await run("migrating the schema", timeout: max(timeout, .seconds(60))) { client in
            try await client.withTransaction(logger: logger) { connection in
                try await connection.query("SELECT pg_advisory_xact_lock(\(Self.migrationLock))", logger: logger)
                try await connection.query("CREATE TABLE IF NOT EXISTS affinity_schema (version INT NOT NULL)", logger: logger)
                var version = 0
                for try await v in try await connection.query("SELECT version FROM affinity_schema", logger: logger).decode(Int.self) { version = v }
                guard version <= known else {
                    throw PostgresStoreError("the database's schema version \(version) is newer than this build knows (\(known)); use a newer affinity")
                }
                if version == 0 {
                    try await connection.query("DELETE FROM affinity_schema", logger: logger)
                    try await connection.query("INSERT INTO affinity_schema VALUES (0)", logger: logger)
                }
                for step in version..<known {
                    for statement in Self.migrations[step] { try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger) }
                    try await connection.query("UPDATE affinity_schema SET version = \(step + 1)", logger: logger)
                }
            }
        }
    }

    private func readCounts() async throws {
        let row = try await run("reading the counts", timeout: max(timeout, .seconds(60))) { client in
            var out: (Int64, Int64, Int64, Int64) = (0, 0, 0, 0)
            let rows = try await client.query("""
                SELECT (SELECT count(*) FROM events), (SELECT coalesce(max(seq), 0) FROM events),
                       (SELECT count(*) FROM users), (SELECT version FROM registry_version)
                """)
            for try await r in rows.decode((Int64, Int64, Int64, Int64).self) { out = r }
            return out
        }
        lock.locked {
            stored = StoreCounts(events: Int(row.0), users: Int(row.2))
            contiguous = row.1
            registryVersion = row.3
        }
    }

    /// A server setting as a pooled connection of this store sees it (`current_setting`).
    func serverSetting(_ name: String) async throws -> String {
        try await run("reading a setting") { client in
            var value = ""
            for try await v in try await client.query("SELECT current_setting(\(name))").decode(String.self) { value = v }
            return value
        }
    }

    // MARK: - Events

    @discardableResult
    public func append(_ events: [Event]) async throws -> [Int64] {
        guard !events.isEmpty else { return [] }
        let users = events.map(\.user), items = events.map(\.item), types = events.map(\.type)
        let times = events.map(\.timestamp), values = events.map { $0.value ?? .nan }
        // One statement, so one implicit transaction: the events and their users' first rows
        // commit together or not at all. Users in sorted order, so that two batches inserting the
        // same new users take their locks in one order.
        return try await run("storing \(events.count) events") { client in
            try await client.withConnection { connection in
            // The caller may have been answered (503) while the lease waited: then nothing is sent.
            try Task.checkCancellation()
            var seqs: [Int64] = []
            let rows = try await connection.query("""
                WITH ins AS (
                    INSERT INTO events(user_id, item, type, ts, value)
                    SELECT u, i, t, ts, NULLIF(v, 'NaN'::float8)
                    FROM unnest(\(users)::text[], \(items)::text[], \(types)::text[], \(times)::bigint[], \(values)::float8[]) AS b(u, i, t, ts, v)
                    RETURNING seq, user_id),
                first AS (
                    INSERT INTO users(user_id, first_seq)
                    SELECT user_id, min(seq) FROM ins GROUP BY user_id ORDER BY user_id
                    ON CONFLICT (user_id) DO NOTHING)
                SELECT seq FROM ins ORDER BY seq
                """, logger: self.logger)
            for try await seq in rows.decode(Int64.self) { seqs.append(seq) }
            return seqs
            }
        }
    }

    public func history(ofUser user: String) async throws -> [StoredEvent] {
        try await run("reading a history") { client in
            var out: [StoredEvent] = []
            let rows = try await client.query("SELECT seq, item, type, ts, value FROM events WHERE user_id = \(user) ORDER BY seq")
            for try await (seq, item, type, ts, value) in rows.decode((Int64, String, String, Int64, Double?).self) {
                out.append(StoredEvent(seq: seq, event: Event(user: user, item: item, type: type, timestamp: ts, value: value)))
            }
            return out
        }
    }

    public func events(after seq: Int64, limit: Int) async throws -> [StoredEvent] {
        let limit = max(0, limit)
        return try await run("reading events") { client in
            var out: [StoredEvent] = []
            let rows = try await client.query("SELECT seq, user_id, item, type, ts, value FROM events WHERE seq > \(seq) ORDER BY seq LIMIT \(limit)")
            for try await (seq, user, item, type, ts, value) in rows.decode((Int64, String, String, String, Int64, Double?).self) {
                out.append(StoredEvent(seq: seq, event: Event(user: user, item: item, type: type, timestamp: ts, value: value)))
            }
            return out
        }
    }

    public func sampleUsers(limit: Int) async throws -> [String] {
        let limit = max(0, limit)
        return try await run("reading users") { client in
            var out: [String] = []
            for try await u in try await client.query("SELECT user_id FROM users ORDER BY user_id LIMIT \(limit)").decode(String.self) { out.append(u) }
            return out
        }
    }

    // MARK: - Registry

    public func registerModel(path: String, index: String?, modelType: String) async throws -> ModelRecord {
        let now = Int64(Date().timeIntervalSince1970)
        let logger = self.logger
        return try await run("registering a model") { client in
            try await client.withTransaction(logger: logger) { connection in
                var id: Int64 = 0
                let rows = try await connection.query("""
                    INSERT INTO models(path, index_path, model_type, registered_at) VALUES (\(path), \(index), \(modelType), \(now)) RETURNING id
                    """, logger: logger)
                for try await v in rows.decode(Int64.self) { id = v }
                try await Self.bumpRegistry(connection, logger: logger)
                return ModelRecord(id: Int(id), path: path, index: index, modelType: modelType, registeredAt: now, active: false)
            }
        }
    }

    public func models() async throws -> [ModelRecord] {
        try await run("reading the registry") { client in
            var out: [ModelRecord] = []
            let rows = try await client.query("SELECT id, path, index_path, model_type, registered_at, active FROM models ORDER BY id")
            for try await (id, path, index, type, at, active) in rows.decode((Int64, String, String?, String, Int64, Bool).self) {
                out.append(ModelRecord(id: Int(id), path: path, index: index, modelType: type, registeredAt: at, active: active))
            }
            return out
        }
    }

    public func setActiveModel(id: Int) async throws {
        let logger = self.logger, key = Int64(id), location = self.location
        try await run("activating a model") { client in
            try await client.withTransaction(logger: logger) { connection in
                var exists = false
                for try await _ in try await connection.query("SELECT 1 FROM models WHERE id = \(key) FOR UPDATE", logger: logger) { exists = true }
                guard exists else { throw PostgresStoreError("\(location): no model with id \(id)") }
                try await connection.query("UPDATE models SET active = (id = \(key)) WHERE active OR id = \(key)", logger: logger)
                try await Self.bumpRegistry(connection, logger: logger)
            }
        }
    }

    public func deleteModel(id: Int) async throws {
        let logger = self.logger, key = Int64(id)
        try await run("deleting a model") { client in
            try await client.withTransaction(logger: logger) { connection in
                // Never the active model, even when another replica activated it a moment ago.
                var active = false
                for try await _ in try await connection.query("SELECT 1 FROM models WHERE id = \(key) AND active FOR UPDATE", logger: logger) { active = true }
                guard !active else { throw APIError(.conflict, "model \(id) is active; activate another model before deleting it") }
                try await connection.query("DELETE FROM models WHERE id = \(key)", logger: logger)
                try await Self.bumpRegistry(connection, logger: logger)
            }
        }
    }

    /// Inside a registry transaction: a new registry version (the polling fallback compares it)
    /// and a NOTIFY, delivered to listeners at commit.
    private static func bumpRegistry(_ connection: PostgresConnection, logger: Logger) async throws {
        try await connection.query("UPDATE registry_version SET version = version + 1", logger: logger)
        try await connection.query("NOTIFY affinity_registry", logger: logger)
    }

    // MARK: - Watching other processes

    public func changes() -> AsyncStream<StoreChange>? {
        let (stream, continuation) = AsyncStream<StoreChange>.makeStream(bufferingPolicy: .bufferingNewest(4_096))
        lock.locked {
            consumer?.finish()
            consumer = closed ? nil : continuation
            if closed { continuation.finish() }
        }
        return stream
    }

    private func emit(_ change: StoreChange) {
        let c = lock.locked { consumer }
        c?.yield(change)
    }

    private func startWatching() {
        let interval = pollInterval
        let watch = Task { [weak self] in
            while !Task.isCancelled {
                guard let self else { return }
                do {
                    try await self.poll()
                } catch {
                    if !Task.isCancelled { self.logger.debug("store watch failed; retrying", metadata: ["error": "\(error)"]) }
                }
                try? await Task.sleep(for: interval)
            }
        }
        let logger = self.logger
        let listen = Task { [weak self] in
            while !Task.isCancelled {
                // No strong reference across the LISTEN: the store can go while it waits.
                guard let client = self.map({ s in s.lock.locked { s.pool } }) else { return }
                do {
                    try await client.withConnection { connection in
                        try await connection.listen(on: "affinity_registry") { [weak self] notifications in
                            for try await _ in notifications { self?.emit(.registry) }
                        }
                    }
                } catch {
                    if !Task.isCancelled { logger.debug("LISTEN failed; polling until it reconnects", metadata: ["error": "\(error)"]) }
                }
                try? await Task.sleep(for: .seconds(1))
            }
        }
        lock.locked {
            watchTask = watch
            listenTask = listen
        }
    }

    /// One round of the feed: new events since the last contiguous sequence number, and the
    /// registry version.
    private func poll() async throws {
        // New rows above the highest number seen, and the open gaps below it by number (at most
        // 1,000), so that a gap never holds back the events after it.
        let (after, missing) = lock.locked { () -> (Int64, [Int64]) in
            let top = seenAbove.max() ?? contiguous
            var missing: [Int64] = []
            if top > contiguous {
                var n = contiguous + 1
                while n < top && missing.count < 1_000 {
                    if !seenAbove.contains(n) { missing.append(n) }
                    n += 1
                }
            }
            return (top, missing)
        }
        let (rows, version) = try await run("watching for changes") { client in
            var rows: [(StoredEvent, Bool)] = []
            let q = try await client.query("""
                SELECT e.seq, e.user_id, e.item, e.type, e.ts, e.value, u.first_seq = e.seq
                FROM events e JOIN users u ON u.user_id = e.user_id
                WHERE e.seq > \(after) OR e.seq = ANY(\(missing)::bigint[]) ORDER BY e.seq LIMIT 5000
                """)
            for try await (seq, user, item, type, ts, value, first) in q.decode((Int64, String, String, String, Int64, Double?, Bool).self) {
                rows.append((StoredEvent(seq: seq, event: Event(user: user, item: item, type: type, timestamp: ts, value: value)), first))
            }
            var version: Int64 = 0
            for try await v in try await client.query("SELECT version FROM registry_version").decode(Int64.self) { version = v }
            return (rows, version)
        }
        let (fresh, registryChanged) = lock.locked { () -> ([StoredEvent], Bool) in
            var fresh: [StoredEvent] = []
            for (event, first) in rows where event.seq > contiguous && !seenAbove.contains(event.seq) {
                seenAbove.insert(event.seq)
                fresh.append(event)
                stored.events += 1
                if first { stored.users += 1 }
            }
            advance()
            let changed = version != registryVersion
            registryVersion = version
            return (fresh, changed)
        }
        if !fresh.isEmpty { emit(.events(fresh)) }
        if registryChanged { emit(.registry) }
    }

    /// Moves `contiguous` over every seen number; a gap still open after 30 s is a rolled-back
    /// insert (sequence numbers are not reused; the server's statement timeout ends any insert long
    /// before) and is skipped.
    private func advance() {
        while seenAbove.remove(contiguous + 1) != nil { contiguous += 1 }
        guard let lowest = seenAbove.min() else { gapSince = nil; return }
        let now = ContinuousClock.now
        if let since = gapSince, gapAt == contiguous {
            if now - since > .seconds(30) {
                contiguous = lowest - 1
                gapSince = nil
                advance()
            }
        } else {
            gapSince = now
            gapAt = contiguous
        }
    }
}

extension Duration {
    /// The duration in seconds.
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

/// The timer and probe tasks of one `withDeadline`, cancelled when the body finishes (also those
/// added after it did).
private final class HelperTasks: @unchecked Sendable {
    private let lock = NSLock()
    private var tasks: [Task<Void, Never>] = []
    private var done = false

    func add(_ task: Task<Void, Never>) {
        let cancel = lock.locked { () -> Bool in
            if done { return true }
            tasks.append(task)
            return false
        }
        if cancel { task.cancel() }
    }

    func finish() {
        let all = lock.locked { () -> [Task<Void, Never>] in
            done = true
            defer { tasks = [] }
            return tasks
        }
        for t in all { t.cancel() }
    }
}

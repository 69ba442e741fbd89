import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `close(2)`, callable from types that have a `close()` of their own.
func closeDescriptor(_ fd: Int32) { _ = close(fd) }

/// One interaction reported to the service: `user` did `type` to `item` at `timestamp` (Unix
/// seconds); a `rating` event carries its `value`.
public struct Event: Sendable, Codable, Equatable {
    public var user: String
    public var item: String
    public var type: String
    public var timestamp: Int64
    /// The rating of a `rating` event (nil for every other type).
    public var value: Double?

    public init(user: String, item: String, type: String, timestamp: Int64, value: Double? = nil) {
        self.user = user
        self.item = item
        self.type = type
        self.timestamp = timestamp
        self.value = value
    }
}

/// A model file known to the service, and the index file that belongs to it (if any).
public struct ModelRecord: Sendable, Codable, Equatable {
    public var id: Int
    public var path: String
    public var index: String?
    public var modelType: String
    /// Unix seconds.
    public var registeredAt: Int64
    public var active: Bool

    public init(id: Int, path: String, index: String?, modelType: String, registeredAt: Int64, active: Bool) {
        self.id = id
        self.path = path
        self.index = index
        self.modelType = modelType
        self.registeredAt = registeredAt
        self.active = active
    }

    enum CodingKeys: String, CodingKey {
        case id, path, index, active
        case modelType = "model_type"
        case registeredAt = "registered_at"
    }
}

/// An event as the store holds it: its sequence number (the store's arrival order, unique in
/// the store; increasing, with gaps) and the event.
public struct StoredEvent: Sendable, Equatable {
    public var seq: Int64
    public var event: Event
    public init(seq: Int64, event: Event) {
        self.seq = seq
        self.event = event
    }
}

/// How many events and distinct users the store holds, as this process knows them: exact for a
/// store only this process writes; with other writers (replicas on one PostgreSQL), up to the
/// last change it has seen (within the watch interval).
public struct StoreCounts: Sendable, Equatable {
    public var events: Int
    public var users: Int
    public init(events: Int, users: Int) {
        self.events = events
        self.users = users
    }
}

/// What another process changed in a shared store, as `AffinityStore.changes()` reports it.
public enum StoreChange: Sendable {
    /// Events committed to the store (by any process, this one included: merging is idempotent), in
    /// sequence order.
    case events([StoredEvent])
    /// The registry (models, the active one) changed.
    case registry
}

/// Where the service keeps what must survive a restart: events (and so every user's history) and
/// the model registry. SQLite (`SQLiteStore`) is the embedded default, one process per file;
/// PostgreSQL (`PostgresStore`) lets several service replicas share one database.
///
/// Contract (tested for every backend by one conformance suite, AffinityServerTests/StoreConformance):
/// `append` returns only once the events are durable (a crash of the process, or of the database
/// server, right after loses none of them) and returns their sequence numbers; a failed `append`
/// stores none of its events. `history(ofUser:)` returns that user's events in sequence order, read
/// from the store (the service keeps a bounded cache in front of it). The registry lives in the
/// store, so every process on it sees one active model; `changes()` tells a process what the
/// others did.
public protocol AffinityStore: Sendable {
    /// Where the store is, for messages and logs (a file path, or `postgres://user@host:port/db`:
    /// never a password).
    var location: String { get }
    /// Stores a batch of events atomically and durably; returns their sequence numbers in order.
    @discardableResult
    func append(_ events: [Event]) async throws -> [Int64]
    /// One user's events in sequence order (empty when none).
    func history(ofUser user: String) async throws -> [StoredEvent]
    /// Up to `limit` events with sequence numbers above `seq`, in sequence order (the online
    /// trainer's catch-up after a restart).
    func events(after seq: Int64, limit: Int) async throws -> [StoredEvent]
    /// Events and distinct users stored (kept in memory: no query).
    var counts: StoreCounts { get }
    /// Up to `limit` user IDs with events, the smallest first (the same in every process).
    func sampleUsers(limit: Int) async throws -> [String]
    /// Adds a model to the registry (inactive) and returns its record.
    func registerModel(path: String, index: String?, modelType: String) async throws -> ModelRecord
    func models() async throws -> [ModelRecord]
    /// Marks one model active and every other inactive.
    func setActiveModel(id: Int) async throws
    /// Removes a model from the registry.
    func deleteModel(id: Int) async throws
    /// What other processes change in the store, as it happens (PostgreSQL: LISTEN/NOTIFY for the
    /// registry, polling for events and as the registry's fallback); nil for a store that only this
    /// process can write (SQLite holds an exclusive lock). One consumer.
    func changes() -> AsyncStream<StoreChange>?
    /// Flushes and closes; later calls fail.
    func close()
}

extension AffinityStore {
    public func activeModel() async throws -> ModelRecord? { try await models().first { $0.active } }
    public func eventCount() -> Int { counts.events }
}

/// The SQLite store: one database file (WAL journal, `synchronous=FULL`), schema created and
/// migrated at open (`PRAGMA user_version`). All access goes through one serial queue; concurrent
/// `append` calls are committed together in one transaction (group commit), each caller resumed
/// after that commit.
public final class SQLiteStore: AffinityStore, @unchecked Sendable {
    /// Schema migrations in order; `user_version` is the number applied. Never edit a released one:
    /// append a new step.
    static let migrations: [String] = [
        """
        CREATE TABLE events (
            seq INTEGER PRIMARY KEY,
            user TEXT NOT NULL,
            item TEXT NOT NULL,
            type TEXT NOT NULL,
            timestamp INTEGER NOT NULL,
            received_at INTEGER NOT NULL
        );
        CREATE INDEX events_by_user ON events(user, seq);
        CREATE TABLE models (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL,
            index_path TEXT,
            model_type TEXT NOT NULL,
            registered_at INTEGER NOT NULL,
            active INTEGER NOT NULL DEFAULT 0
        );
        """,
        // 2: the value of rating events.
        "ALTER TABLE events ADD COLUMN value REAL;",
        // 3: each user once, with their first event (user counts without a scan, sample users).
        """
        CREATE TABLE users (user TEXT PRIMARY KEY, first_seq INTEGER NOT NULL) WITHOUT ROWID;
        INSERT INTO users(user, first_seq) SELECT user, MIN(seq) FROM events GROUP BY user;
        """,
    ]

    public let path: String
    private let connection: SQLiteConnection
    /// The descriptor holding the store's exclusive lock (closed after the connection).
    private let lockFile: Int32
    private let queue = DispatchQueue(label: "affinity.sqlite-store")
    private let lock = NSLock()
    private typealias Pending = (events: [Event], done: CheckedContinuation<[Int64], any Error>)
    private var pending: [Pending] = []
    private var drainScheduled = false
    private var closed = false
    private var stored = StoreCounts(events: 0, users: 0)

    public var location: String { path }
    public var counts: StoreCounts { lock.locked { stored } }
    /// Only this process writes the file (it holds the lock): nothing to watch.
    public func changes() -> AsyncStream<StoreChange>? { nil }

    /// Opens (creating when absent) the store at `path` and brings its schema up to date.
    ///
    /// One process at a time: the store takes an exclusive lock (`flock` on `PATH.lock`, released
    /// by the kernel when the process ends, however it ends), and a second opener is refused
    /// with a message instead of running with split state. Several servers on one store is the
    /// PostgreSQL store's job.
    public init(path: String) throws {
        self.path = path
        lockFile = try Self.lockExclusively(path)
        do {
            connection = try SQLiteConnection(path: path)
        } catch {
            closeDescriptor(lockFile)
            throw error
        }
        try connection.execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")
        var version: Int64 = 0
        try connection.run("PRAGMA user_version") { version = $0.int(0) }
        let known = Self.migrations.count
        guard version <= known else {
            throw SQLiteError(path: path, code: 0, message: "schema version \(version) is newer than this build knows (\(known)); use a newer affinity")
        }
        for step in Int(version)..<known {
            try connection.transaction {
                try connection.execute(Self.migrations[step])
                try connection.execute("PRAGMA user_version = \(step + 1)")
            }
        }
        var events: Int64 = 0, users: Int64 = 0
        try connection.run("SELECT COUNT(*) FROM events") { events = $0.int(0) }
        try connection.run("SELECT COUNT(*) FROM users") { users = $0.int(0) }
        stored = StoreCounts(events: Int(events), users: Int(users))
    }

    // Not `close()`: the last reference may be released on `queue` itself (by a drain), where
    // `queue.sync` would deadlock; nothing else can use the connection by then.
    deinit {
        connection.close()
        releaseLock()
    }

    public func close() {
        queue.sync {
            lock.locked { closed = true }
            connection.close()
            releaseLock()
        }
    }

    private var lockReleased = false
    private func releaseLock() {
        let release = lock.locked { () -> Bool in
            defer { lockReleased = true }
            return !lockReleased
        }
        if release { closeDescriptor(lockFile) }
    }

    /// Takes the exclusive lock of the store at `path` on `REAL.lock`, REAL being the file resolved
    /// (or, before it exists, its folder resolved), so every spelling of one store and every link to
    /// it meet on one lock; throws naming the store when another process holds it.
    static func lockExclusively(_ path: String) throws -> Int32 {
        let url = URL(fileURLWithPath: path)
        let folder = AccessPolicy.realPath(url.deletingLastPathComponent().path) ?? url.deletingLastPathComponent().path
        let lockPath = (AccessPolicy.realPath(path) ?? folder + "/" + url.lastPathComponent) + ".lock"
        let fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw SQLiteError(path: path, code: 0, message: "cannot create the lock file \(lockPath) (errno \(errno))")
        }
        // A lock just released in this process can stay held for a moment: a child process
        // spawned by another thread shares every open description from its fork until its exec
        // closes them (O_CLOEXEC). So a held lock is tried again for up to half a second before
        // the store is declared in use; an interrupted call is simply tried again.
        var attempts = 0
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let code = errno
            if code == EINTR { continue }
            if code == EWOULDBLOCK && attempts < 20 {
                attempts += 1
                usleep(25_000)
                continue
            }
            closeDescriptor(fd)
            guard code == EWOULDBLOCK else {
                throw SQLiteError(path: path, code: 0, message: "cannot lock \(lockPath): \(String(cString: strerror(code)))")
            }
            throw SQLiteError(path: path, code: 0, message: "the store is in use by another affinity process (lock \(lockPath)); stop it first, or give this one its own --store")
        }
        return fd
    }

    private func checkOpen() throws {
        if lock.locked({ closed }) { throw SQLiteError(path: path, code: 0, message: "store is closed") }
    }

    /// Runs `body` on the store's queue without blocking the caller's thread.
    private func onQueue<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (done: CheckedContinuation<T, any Error>) in
            queue.async {
                done.resume(with: Result {
                    try self.checkOpen()
                    return try body()
                })
            }
        }
    }

    @discardableResult
    public func append(_ events: [Event]) async throws -> [Int64] {
        guard !events.isEmpty else { return [] }
        try checkOpen()
        return try await withCheckedThrowingContinuation { (done: CheckedContinuation<[Int64], any Error>) in
            let schedule = lock.locked { () -> Bool in
                pending.append((events, done))
                if drainScheduled { return false }
                drainScheduled = true
                return true
            }
            if schedule { queue.async { self.drain() } }
        }
    }

    /// Commits every waiting batch in one transaction. When that fails, retries each batch in its
    /// own transaction so that one bad batch cannot fail the others.
    private func drain() {
        let batches = lock.locked { () -> [Pending] in
            let b = pending
            pending = []
            drainScheduled = false
            return b
        }
        guard !batches.isEmpty else { return }
        if lock.locked({ closed }) {
            for b in batches { b.done.resume(throwing: SQLiteError(path: path, code: 0, message: "store is closed")) }
            return
        }
        let now = Int64(Date().timeIntervalSince1970)
        do {
            let results = try connection.transaction { try batches.map { try insert($0.events, now: now) } }
            commit(results)
            for (b, r) in zip(batches, results) { b.done.resume(returning: r.seqs) }
        } catch {
            for b in batches {
                do {
                    let r = try connection.transaction { try insert(b.events, now: now) }
                    commit([r])
                    b.done.resume(returning: r.seqs)
                } catch {
                    b.done.resume(throwing: error)
                }
            }
        }
    }

    private func commit(_ results: [(seqs: [Int64], newUsers: Int)]) {
        lock.locked {
            for r in results {
                stored.events += r.seqs.count
                stored.users += r.newUsers
            }
        }
    }

    private func insert(_ events: [Event], now: Int64) throws -> (seqs: [Int64], newUsers: Int) {
        var seqs: [Int64] = []
        seqs.reserveCapacity(events.count)
        var newUsers = 0
        for e in events {
            try connection.run("INSERT INTO events(user, item, type, timestamp, received_at, value) VALUES (?, ?, ?, ?, ?, ?)",
                               [.text(e.user), .text(e.item), .text(e.type), .int(e.timestamp), .int(now), e.value.map { .double($0) } ?? .null])
            let seq = connection.lastInsertRowID
            seqs.append(seq)
            try connection.run("INSERT OR IGNORE INTO users(user, first_seq) VALUES (?, ?)", [.text(e.user), .int(seq)])
            newUsers += Int(connection.changes)
        }
        return (seqs, newUsers)
    }

    public func history(ofUser user: String) async throws -> [StoredEvent] {
        try await onQueue {
            var out: [StoredEvent] = []
            try self.connection.run("SELECT seq, item, type, timestamp, value FROM events WHERE user = ? ORDER BY seq", [.text(user)]) { row in
                out.append(StoredEvent(seq: row.int(0), event: Event(user: user, item: row.text(1) ?? "", type: row.text(2) ?? "",
                                                                     timestamp: row.int(3), value: row.double(4))))
            }
            return out
        }
    }

    public func events(after seq: Int64, limit: Int) async throws -> [StoredEvent] {
        try await onQueue {
            var out: [StoredEvent] = []
            try self.connection.run("SELECT seq, user, item, type, timestamp, value FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                                    [.int(seq), .int(Int64(max(0, limit)))]) { row in
                out.append(StoredEvent(seq: row.int(0), event: Event(user: row.text(1) ?? "", item: row.text(2) ?? "", type: row.text(3) ?? "",
                                                                     timestamp: row.int(4), value: row.double(5))))
            }
            return out
        }
    }

    public func sampleUsers(limit: Int) async throws -> [String] {
        try await onQueue {
            var out: [String] = []
            try self.connection.run("SELECT user FROM users ORDER BY user LIMIT ?", [.int(Int64(max(0, limit)))]) { out.append($0.text(0) ?? "") }
            return out
        }
    }

    /// Every stored event in sequence order (tests and exports; the service reads per user).
    public func allEvents() throws -> [Event] {
        try queue.sync {
            try checkOpen()
            var out: [Event] = []
            try connection.run("SELECT user, item, type, timestamp, value FROM events ORDER BY seq") { row in
                out.append(Event(user: row.text(0) ?? "", item: row.text(1) ?? "", type: row.text(2) ?? "", timestamp: row.int(3), value: row.double(4)))
            }
            return out
        }
    }

    public func registerModel(path modelPath: String, index: String?, modelType: String) async throws -> ModelRecord {
        try await onQueue { [connection] in
            let now = Int64(Date().timeIntervalSince1970)
            try connection.run("INSERT INTO models(path, index_path, model_type, registered_at, active) VALUES (?, ?, ?, ?, 0)",
                               [.text(modelPath), index.map { .text($0) } ?? .null, .text(modelType), .int(now)])
            return ModelRecord(id: Int(connection.lastInsertRowID), path: modelPath, index: index, modelType: modelType,
                               registeredAt: now, active: false)
        }
    }

    public func models() async throws -> [ModelRecord] {
        try await onQueue { [connection] in
            var out: [ModelRecord] = []
            try connection.run("SELECT id, path, index_path, model_type, registered_at, active FROM models ORDER BY id") { row in
                out.append(ModelRecord(id: Int(row.int(0)), path: row.text(1) ?? "", index: row.text(2), modelType: row.text(3) ?? "",
                                       registeredAt: row.int(4), active: row.int(5) != 0))
            }
            return out
        }
    }

    public func deleteModel(id: Int) async throws {
        try await onQueue { [connection] in
            var active = false
            try connection.run("SELECT 1 FROM models WHERE id = ? AND active", [.int(Int64(id))]) { _ in active = true }
            guard !active else { throw APIError(.conflict, "model \(id) is active; activate another model before deleting it") }
            try connection.run("DELETE FROM models WHERE id = ?", [.int(Int64(id))])
        }
    }

    public func setActiveModel(id: Int) async throws {
        try await onQueue { [connection, path] in
            try connection.transaction {
                var exists = false
                try connection.run("SELECT 1 FROM models WHERE id = ?", [.int(Int64(id))]) { _ in exists = true }
                guard exists else { throw SQLiteError(path: path, code: 0, message: "no model with id \(id)") }
                try connection.run("UPDATE models SET active = (id = ?)", [.int(Int64(id))])
            }
        }
    }
}

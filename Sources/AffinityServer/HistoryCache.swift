import AffinityPipeline
import Foundation

/// Users' event histories in front of the store, bounded by the events it holds.
///
/// A history is read from the store on first use and kept; every event this process stores, and
/// every event another process stores (the store's change feed), is merged into the cached
/// histories by sequence number: inserted in order when absent, ignored when present, so a merge
/// can arrive twice or out of order without harm. Events merged for a user who is not cached yet
/// wait in a short ring (`recentCapacity` events): a history read that raced with them (read
/// before their commit, stored after their merge) takes them from there, so a fill never loses an
/// event that committed while it was being read.
final class HistoryCache: @unchecked Sendable {
    private struct Entry {
        var seqs: [Int64] = []
        var events: [UserEvent] = []
        var lastUse: UInt64 = 0
        /// What the entry counts against the capacity (an empty history counts as one).
        var weight: Int { max(1, events.count) }
    }

    /// Events held before the least recently used histories are dropped.
    let capacity: Int
    let recentCapacity: Int
    private let lock = NSLock()
    private var entries: [String: Entry] = [:]
    private var held = 0
    private var clock: UInt64 = 0
    /// The ring of recent events, oldest first, and the same events by user.
    private var recent: [StoredEvent] = []
    private var recentNext = 0
    private var recentByUser: [String: [StoredEvent]] = [:]

    init(capacity: Int = 2_000_000, recentCapacity: Int = 65_536) {
        self.capacity = max(1, capacity)
        self.recentCapacity = max(1, recentCapacity)
    }

    /// The cached history of `user`, or nil when it must be read from the store.
    func get(_ user: String) -> [UserEvent]? {
        lock.locked {
            clock += 1
            guard entries[user] != nil else { return nil }
            entries[user]!.lastUse = clock
            return entries[user]!.events
        }
    }

    /// Caches `history` as read from the store, with any event of the ring it lacks; returns it.
    @discardableResult
    func fill(_ user: String, history: [StoredEvent]) -> [UserEvent] {
        lock.locked {
            var entry = Entry()
            for e in history { Self.insert(e.seq, UserEvent(e.event), into: &entry) }
            for e in recentByUser[user] ?? [] { Self.insert(e.seq, UserEvent(e.event), into: &entry) }
            if let old = entries[user] {
                // Filled twice at once: keep the union.
                for (seq, event) in zip(old.seqs, old.events) { Self.insert(seq, event, into: &entry) }
                held -= old.weight
            }
            clock += 1
            entry.lastUse = clock
            entries[user] = entry
            held += entry.weight
            if held > capacity { evict() }
            return entry.events
        }
    }

    /// Merges stored events into the cached histories (and the ring).
    func merge(_ events: [StoredEvent]) {
        guard !events.isEmpty else { return }
        lock.locked {
            for e in events {
                if recent.count < recentCapacity {
                    recent.append(e)
                } else {
                    // The oldest event leaves the ring, and its user's list (where it is first).
                    let old = recent[recentNext].event.user
                    if var list = recentByUser[old] {
                        list.removeFirst()
                        recentByUser[old] = list.isEmpty ? nil : list
                    }
                    recent[recentNext] = e
                }
                recentByUser[e.event.user, default: []].append(e)
                recentNext = (recentNext + 1) % recentCapacity
                guard var entry = entries[e.event.user] else { continue }
                held -= entry.weight
                Self.insert(e.seq, UserEvent(e.event), into: &entry)
                held += entry.weight
                entries[e.event.user] = entry
            }
            if held > capacity { evict() }
        }
    }

    /// Users and events held.
    var size: (users: Int, events: Int) { lock.locked { (entries.count, held) } }

    private static func insert(_ seq: Int64, _ event: UserEvent, into entry: inout Entry) {
        if entry.seqs.last.map({ $0 < seq }) ?? true {
            entry.seqs.append(seq)
            entry.events.append(event)
            return
        }
        var lo = 0, hi = entry.seqs.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if entry.seqs[mid] < seq { lo = mid + 1 } else { hi = mid }
        }
        guard lo == entry.seqs.count || entry.seqs[lo] != seq else { return }
        entry.seqs.insert(seq, at: lo)
        entry.events.insert(event, at: lo)
    }

    /// Drops the least recently used histories down to 90 % of the capacity.
    private func evict() {
        let target = capacity - capacity / 10
        for (user, entry) in entries.sorted(by: { $0.value.lastUse < $1.value.lastUse }) {
            guard held > target else { break }
            entries[user] = nil
            held -= entry.weight
        }
    }
}

/// A lock that async code can hold across suspension points (a registry change reads and writes
/// the store): waiters are resumed in arrival order.
final class AsyncMutex: @unchecked Sendable {
    private let lock = NSLock()
    private var held = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    func withLock<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        await acquire()
        defer { release() }
        return try await body()
    }

    private func acquire() async {
        let free = lock.locked { () -> Bool in
            if held { return false }
            held = true
            return true
        }
        if free { return }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = lock.locked { () -> Bool in
                if !held { held = true; return true }
                waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }

    private func release() {
        let next = lock.locked { () -> CheckedContinuation<Void, Never>? in
            if waiters.isEmpty { held = false; return nil }
            return waiters.removeFirst()   // stays held: ownership passes to the waiter
        }
        next?.resume()
    }
}

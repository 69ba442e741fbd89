import AffinityLinalg
import Foundation

/// The service's counters, rendered in the Prometheus text exposition format (version 0.0.4) at
/// `GET /metrics`. One lock guards everything: an update is a few dictionary operations.
public final class ServiceMetrics: @unchecked Sendable {
    /// Upper bounds (seconds) of the request-latency histogram buckets.
    public static let latencyBuckets: [Double] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]

    private struct RequestKey: Hashable { var route: String; var method: String; var status: Int }
    private struct RouteKey: Hashable { var route: String; var method: String }
    private struct Histogram {
        var buckets = [UInt64](repeating: 0, count: ServiceMetrics.latencyBuckets.count)
        var sum = 0.0
        var count: UInt64 = 0
    }

    private let lock = NSLock()
    private var requests: [RequestKey: UInt64] = [:]
    private var latency: [RouteKey: Histogram] = [:]
    private var events: [String: UInt64] = [:]
    private var activations: UInt64 = 0
    private var storeReadErrors: UInt64 = 0
    private var activeModel: (id: Int, type: String)?
    private let started = Date()
    /// The last hour, one slot per minute: requests, 5xx answers and summed latency.
    private var minutes = [MinuteSlot](repeating: MinuteSlot(), count: 60)
    private struct MinuteSlot { var minute = -1; var requests: UInt64 = 0; var serverErrors: UInt64 = 0; var latency = 0.0 }

    public init() {}

    /// Counts one answered request. `route` is the route pattern (`/v1/users/{id}/recommendations`),
    /// never the raw path, so the number of series stays bounded.
    public func recordRequest(route: String, method: String, status: Int, seconds: Double) {
        lock.locked {
            requests[RequestKey(route: route, method: method, status: status), default: 0] += 1
            let key = RouteKey(route: route, method: method)
            var h = latency[key] ?? Histogram()
            if let b = Self.latencyBuckets.firstIndex(where: { seconds <= $0 }) { h.buckets[b] += 1 }
            h.sum += seconds
            h.count += 1
            latency[key] = h
            let minute = Int(Date().timeIntervalSince1970 / 60)
            if minutes[minute % 60].minute != minute { minutes[minute % 60] = MinuteSlot(minute: minute) }
            minutes[minute % 60].requests += 1
            minutes[minute % 60].latency += seconds
            if status >= 500 { minutes[minute % 60].serverErrors += 1 }
        }
    }

    /// What the dashboard shows: totals since start, the latency histogram of every route together,
    /// and the last hour minute by minute.
    public struct Snapshot: Sendable {
        public var requests: UInt64 = 0
        public var clientErrors: UInt64 = 0
        public var serverErrors: UInt64 = 0
        /// Counts per `latencyBuckets` bound (not cumulative), every route together; the last slot is above 5 s.
        public var latencyBuckets: [UInt64] = []
        /// Requests per route pattern ("GET /v1/users/{id}/recommendations").
        public var byRoute: [(route: String, requests: UInt64, meanSeconds: Double)] = []
        public var eventsByType: [(type: String, count: UInt64)] = []
        public var activations: UInt64 = 0
        public var uptimeSeconds: Double = 0
        /// Minutes ago (59 ... 0) with requests, 5xx answers and mean latency in that minute.
        public var lastHour: [(minutesAgo: Int, requests: UInt64, serverErrors: UInt64, meanSeconds: Double)] = []

        /// The smallest bucket bound below which at least `q` of the requests fell (an upper estimate).
        public func latencyQuantile(_ q: Double) -> Double? {
            let total = latencyBuckets.reduce(0, +)
            guard total > 0 else { return nil }
            var seen: UInt64 = 0
            for (n, c) in latencyBuckets.enumerated() {
                seen += c
                if Double(seen) >= q * Double(total) { return n < ServiceMetrics.latencyBuckets.count ? ServiceMetrics.latencyBuckets[n] : .infinity }
            }
            return .infinity
        }
    }

    public func snapshot() -> Snapshot {
        lock.locked {
            var s = Snapshot()
            for (k, v) in requests {
                s.requests += v
                if k.status >= 500 { s.serverErrors += v } else if k.status >= 400 { s.clientErrors += v }
            }
            var buckets = [UInt64](repeating: 0, count: Self.latencyBuckets.count + 1)
            for (k, h) in latency {
                var inBuckets: UInt64 = 0
                for n in 0..<Self.latencyBuckets.count { buckets[n] += h.buckets[n]; inBuckets += h.buckets[n] }
                buckets[Self.latencyBuckets.count] += h.count - inBuckets
                s.byRoute.append(("\(k.method) \(k.route)", h.count, h.count > 0 ? h.sum / Double(h.count) : 0))
            }
            s.byRoute.sort { $0.requests != $1.requests ? $0.requests > $1.requests : $0.route < $1.route }
            s.latencyBuckets = buckets
            s.eventsByType = events.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
            s.activations = activations
            s.uptimeSeconds = Date().timeIntervalSince(started)
            let now = Int(Date().timeIntervalSince1970 / 60)
            s.lastHour = (0..<60).reversed().map { ago in
                let slot = minutes[(now - ago) % 60]
                guard slot.minute == now - ago else { return (ago, 0, 0, 0) }
                return (ago, slot.requests, slot.serverErrors, slot.requests > 0 ? slot.latency / Double(slot.requests) : 0)
            }
            return s
        }
    }

    public func recordEvents(types: [String]) {
        lock.locked { for t in types { events[t, default: 0] += 1 } }
    }

    /// A history the store could not read (the request went on without it).
    public func recordStoreReadError() { lock.locked { storeReadErrors += 1 } }

    public func recordActivation(id: Int, type: String) {
        lock.locked {
            activations += 1
            activeModel = (id, type)
        }
    }

    /// The exposition text. `storedEvents`, `users` and the history cache's size are gauges read
    /// from the service's state.
    public func render(storedEvents: Int, usersWithEvents: Int, cachedHistories: Int = 0, cachedHistoryEvents: Int = 0) -> String {
        lock.locked {
            var out = ""
            /// One metric family: its HELP and TYPE lines, then its samples (`labels` may be empty).
            func family(_ name: String, _ type: String, _ help: String, _ samples: [(labels: String, value: String)]) {
                out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
                for s in samples { out += s.labels.isEmpty ? "\(name) \(s.value)\n" : "\(name){\(s.labels)} \(s.value)\n" }
            }
            family("affinity_http_requests_total", "counter", "HTTP requests answered, by route pattern, method and status.",
                   requests.sorted(by: { ($0.key.route, $0.key.method, $0.key.status) < ($1.key.route, $1.key.method, $1.key.status) }).map { k, v in
                       ("route=\"\(escape(k.route))\",method=\"\(k.method)\",status=\"\(k.status)\"", "\(v)")
                   })
            out += "# HELP affinity_http_request_duration_seconds Time from receiving a request to its response, by route pattern and method.\n"
            out += "# TYPE affinity_http_request_duration_seconds histogram\n"
            for (k, h) in latency.sorted(by: { ($0.key.route, $0.key.method) < ($1.key.route, $1.key.method) }) {
                let labels = "route=\"\(escape(k.route))\",method=\"\(k.method)\""
                var cumulative: UInt64 = 0
                for (n, bound) in Self.latencyBuckets.enumerated() {
                    cumulative += h.buckets[n]
                    out += "affinity_http_request_duration_seconds_bucket{\(labels),le=\"\(bound)\"} \(cumulative)\n"
                }
                out += "affinity_http_request_duration_seconds_bucket{\(labels),le=\"+Inf\"} \(h.count)\n"
                out += "affinity_http_request_duration_seconds_sum{\(labels)} \(h.sum)\n"
                out += "affinity_http_request_duration_seconds_count{\(labels)} \(h.count)\n"
            }
            family("affinity_events_received_total", "counter", "Events accepted (stored) since the process started, by type.",
                   events.sorted(by: { $0.key < $1.key }).map { ("type=\"\(escape($0.key))\"", "\($0.value)") })
            family("affinity_events_stored", "gauge", "Events in the store.", [("", "\(storedEvents)")])
            family("affinity_users_with_events", "gauge", "Users with at least one stored event.", [("", "\(usersWithEvents)")])
            family("affinity_history_cache_users", "gauge", "User histories held in memory in front of the store.", [("", "\(cachedHistories)")])
            family("affinity_history_cache_events", "gauge", "Events of the histories held in memory.", [("", "\(cachedHistoryEvents)")])
            family("affinity_store_read_errors_total", "counter", "History reads the store failed (the request was answered without the history).",
                   [("", "\(storeReadErrors)")])
            family("affinity_model_activations_total", "counter", "Model activations (hot swaps included) since the process started.",
                   [("", "\(activations)")])
            family("affinity_active_model", "gauge", "The active model version (registry id) and type; the value is always 1.",
                   activeModel.map { [("id=\"\($0.id)\",type=\"\(escape($0.type))\"", "1")] } ?? [])
            family("affinity_uptime_seconds", "gauge", "Seconds since the process started.", [("", "\(Date().timeIntervalSince(started))")])
            return out
        }
    }

    private func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }
}

import AffinityLinalg
import Foundation
import Logging
import PostgresNIO

/// A model's embeddings in PostgreSQL with pgvector, so that the database itself answers
/// "what next for this user" (docs: README, "PostgreSQL and pgvector").
///
/// Tables (PREFIX defaults to `affinity_`):
/// - `PREFIXitems(item TEXT PRIMARY KEY, embedding vector(d))` with an HNSW index
///   (`vector_ip_ops`: `<#>` is the negated inner product, so ascending order is best first);
/// - `PREFIXusers(user_id TEXT PRIMARY KEY, embedding vector(d))` for models with user vectors;
/// - `PREFIXseen(user_id, item)`: the items each user was trained on (the ones
///   `affinity recommend` leaves out);
/// - `PREFIXmodel`: which model folder, type and dimension the tables hold.
/// An export replaces all four in one transaction: readers see the old tables or the new ones.
public enum Pgvector {
    public struct Settings: Sendable {
        public var prefix = "affinity_"
        /// HNSW graph degree and build breadth (pgvector's `m`, `ef_construction`).
        public var m = 16
        public var efConstruction = 64
        public init() {}
    }

    /// Rows of one export.
    public struct Written: Sendable, Equatable {
        public var items: Int
        public var users: Int
        public var seen: Int
    }

    /// A table prefix must be a plain lower-case SQL identifier (it is spliced into statements).
    public static func checkPrefix(_ prefix: String) throws {
        guard let first = prefix.unicodeScalars.first, (first >= "a" && first <= "z") || first == "_", prefix.count <= 40,
              prefix.unicodeScalars.allSatisfy({ ($0 >= "a" && $0 <= "z") || ($0 >= "0" && $0 <= "9") || $0 == "_" }) else {
            throw PostgresStoreError("--prefix: '\(prefix.prefix(64))' is not a lower-case SQL identifier (letters, digits, _; at most 40)")
        }
    }

    /// pgvector's text form of a vector: `[x1,x2,...]` (shortest round-trip decimal of each Float).
    static func literal(_ values: ArraySlice<Float>) -> String {
        "[" + values.map { "\($0)" }.joined(separator: ",") + "]"
    }

    /// The query that recommends `k` items for a user in the database: the user's vector, the
    /// HNSW index in inner-product order, the user's training items left out. Bind $1 = user ID,
    /// $2 = k. With `events: true` the service's stored events (the PostgreSQL store in the same
    /// database) are left out too. The index returns `hnsw.ef_search` candidates before the
    /// filter (pgvector 0.6 has no iterative scan), so set it above a user's seen count plus k.
    public static func recommendSQL(prefix: String = "affinity_", events: Bool = false) -> String {
        """
        SELECT i.item, -(i.embedding <#> (SELECT embedding FROM \(prefix)users WHERE user_id = $1)) AS score
        FROM \(prefix)items i
        WHERE NOT EXISTS (SELECT 1 FROM \(prefix)seen s WHERE s.user_id = $1 AND s.item = i.item)\(events ? "\n  AND NOT EXISTS (SELECT 1 FROM events e WHERE e.user_id = $1 AND e.item = i.item)" : "")
        ORDER BY i.embedding <#> (SELECT embedding FROM \(prefix)users WHERE user_id = $1)
        LIMIT $2
        """
    }

    /// Writes the tables (replacing earlier ones with this prefix) and builds the index.
    /// `userVectors` rows follow `users`; nil for a model without user vectors.
    public static func export(to connection: PostgresConnection, settings: Settings, modelPath: String, modelType: String,
                              items: [String], itemVectors: Matrix, users: [String], userVectors: Matrix?,
                              seen: [(user: String, items: [String])], logger: Logger) async throws -> Written {
        try checkPrefix(settings.prefix)
        precondition(items.count == itemVectors.rows && userVectors.map { $0.rows == users.count } ?? true)
        let p = settings.prefix, d = itemVectors.columns
        func sql(_ text: String) async throws { try await connection.query(PostgresQuery(unsafeSQL: text), logger: logger) }
        return try await connection.withTransaction(logger: logger) { connection in
            try await sql("CREATE EXTENSION IF NOT EXISTS vector")
            for table in ["items", "users", "seen", "model"] { try await sql("DROP TABLE IF EXISTS \(p)\(table)") }
            try await sql("CREATE TABLE \(p)items (item TEXT PRIMARY KEY, embedding vector(\(d)) NOT NULL)")
            try await sql("CREATE TABLE \(p)users (user_id TEXT PRIMARY KEY, embedding vector(\(d)) NOT NULL)")
            try await sql("CREATE TABLE \(p)seen (user_id TEXT NOT NULL, item TEXT NOT NULL, PRIMARY KEY (user_id, item))")
            try await sql("CREATE TABLE \(p)model (path TEXT NOT NULL, model_type TEXT NOT NULL, dimension INT NOT NULL, exported_at TIMESTAMPTZ NOT NULL DEFAULT now())")
            try await connection.query("INSERT INTO \(unescaped: p)model(path, model_type, dimension) VALUES (\(modelPath), \(modelType), \(d))", logger: logger)
            try await insertVectors(connection, table: "\(p)items", key: "item", ids: items, vectors: itemVectors, logger: logger)
            if let userVectors {
                try await insertVectors(connection, table: "\(p)users", key: "user_id", ids: users, vectors: userVectors, logger: logger)
            }
            var pairs: (users: [String], items: [String]) = ([], [])
            var seenRows = 0
            for (user, list) in seen {
                for item in list {
                    pairs.users.append(user)
                    pairs.items.append(item)
                }
                if pairs.users.count >= 50_000 {
                    seenRows += pairs.users.count
                    try await connection.query("INSERT INTO \(unescaped: p)seen SELECT * FROM unnest(\(pairs.users)::text[], \(pairs.items)::text[])", logger: logger)
                    pairs = ([], [])
                }
            }
            if !pairs.users.isEmpty {
                seenRows += pairs.users.count
                try await connection.query("INSERT INTO \(unescaped: p)seen SELECT * FROM unnest(\(pairs.users)::text[], \(pairs.items)::text[])", logger: logger)
            }
            try await sql("CREATE INDEX \(p)items_hnsw ON \(p)items USING hnsw (embedding vector_ip_ops) WITH (m = \(settings.m), ef_construction = \(settings.efConstruction))")
            try await sql("ANALYZE \(p)items")
            try await sql("ANALYZE \(p)users")
            try await sql("ANALYZE \(p)seen")
            return Written(items: items.count, users: userVectors == nil ? 0 : users.count, seen: seenRows)
        }
    }

    private static func insertVectors(_ connection: PostgresConnection, table: String, key: String, ids: [String], vectors: Matrix,
                                      logger: Logger) async throws {
        var start = 0
        while start < ids.count {
            let end = min(ids.count, start + 5_000)
            let texts: [String] = (start..<end).map { r in literal(vectors.row(r)) }
            let batch = Array(ids[start..<end])
            try await connection.query("INSERT INTO \(unescaped: table)(\(unescaped: key), embedding) SELECT k, v::vector FROM unnest(\(batch)::text[], \(texts)::text[]) AS b(k, v)", logger: logger)
            start = end
        }
    }

    /// Runs `recommendSQL` for one user with `efSearch` candidates (set on the connection first).
    public static func recommend(_ connection: PostgresConnection, prefix: String, user: String, k: Int,
                                 logger: Logger) async throws -> [(item: String, score: Float)] {
        var out: [(item: String, score: Float)] = []
        var query = PostgresQuery(unsafeSQL: recommendSQL(prefix: prefix))
        query.binds.append(user)
        query.binds.append(k)
        for try await (item, score) in try await connection.query(query, logger: logger).decode((String, Double).self) {
            out.append((item, Float(score)))
        }
        return out
    }

    /// Exports to `location` over a connection of its own.
    public static func export(to location: PostgresLocation, settings: Settings, modelPath: String, modelType: String,
                              items: [String], itemVectors: Matrix, users: [String], userVectors: Matrix?,
                              seen: [(user: String, items: [String])], logger: Logger) async throws -> Written {
        let connection = try await PostgresStore.connect(location, logger: logger)
        do {
            let written = try await export(to: connection, settings: settings, modelPath: modelPath, modelType: modelType, items: items,
                                           itemVectors: itemVectors, users: users, userVectors: userVectors, seen: seen, logger: logger)
            try? await connection.close()
            return written
        } catch {
            try? await connection.close()
            throw PostgresStoreError("exporting to \(location) failed: \(PostgresStore.describe(error))")
        }
    }

    /// How the SQL query's lists compare with exact ones, at one `hnsw.ef_search` (nil: the index
    /// switched off, every item scored by the database).
    public struct Check: Sendable {
        public var efSearch: Int?
        /// Mean over users of |SQL top-k ∩ exact top-k| / k.
        public var recall: Double
        /// Users whose SQL list was shorter than k (the index's candidates ran out in the filter).
        public var shortLists: Int
        public var queriesPerSecond: Double
        public var p50Milliseconds: Double
        public var p99Milliseconds: Double
    }

    /// Runs the recommendation SQL for every user of `exact` (user ID -> exact top-k IDs) over
    /// `connections` connections at once, for each `efSearch` (nil: exact scan in the database).
    public static func check(_ location: PostgresLocation, prefix: String, exact: [(user: String, items: [String])], k: Int,
                             efSearch: [Int?], connections: Int, logger: Logger) async throws -> [Check] {
        try checkPrefix(prefix)
        var out: [Check] = []
        for ef in efSearch {
            var pool: [PostgresConnection] = []
            for _ in 0..<max(1, connections) {
                let c = try await PostgresStore.connect(location, logger: logger)
                if let ef {
                    try await c.query(PostgresQuery(unsafeSQL: "SET hnsw.ef_search = \(ef)"), logger: logger)
                } else {
                    try await c.query("SET enable_indexscan = off", logger: logger)
                }
                pool.append(c)
            }
            // Warm up: every connection plans the query once.
            for c in pool { _ = try await recommend(c, prefix: prefix, user: exact[0].user, k: k, logger: logger) }
            let started = ContinuousClock.now
            let lanes = pool.count
            let results = try await withThrowingTaskGroup(of: [(Int, [String], Double)].self) { group in
                for (lane, c) in pool.enumerated() {
                    group.addTask {
                        var rows: [(Int, [String], Double)] = []
                        var n = lane
                        while n < exact.count {
                            let t0 = ContinuousClock.now
                            let list = try await recommend(c, prefix: prefix, user: exact[n].user, k: k, logger: logger).map(\.item)
                            let t = ContinuousClock.now - t0
                            rows.append((n, list, t.seconds * 1e3))
                            n += lanes
                        }
                        return rows
                    }
                }
                return try await group.reduce(into: [(Int, [String], Double)]()) { $0 += $1 }
            }
            let elapsed = ContinuousClock.now - started
            let seconds = elapsed.seconds
            for c in pool { try? await c.close() }
            var recall = 0.0, short = 0
            for (n, list, _) in results {
                let truth = Set(exact[n].items)
                recall += Double(list.filter { truth.contains($0) }.count) / Double(max(1, min(k, truth.count)))
                if list.count < k { short += 1 }
            }
            let times = results.map(\.2).sorted()
            out.append(Check(efSearch: ef, recall: recall / Double(max(1, results.count)), shortLists: short,
                             queriesPerSecond: Double(results.count) / seconds,
                             p50Milliseconds: times[times.count / 2], p99Milliseconds: times[min(times.count - 1, times.count * 99 / 100)]))
        }
        return out
    }
}

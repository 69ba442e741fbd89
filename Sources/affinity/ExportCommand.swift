import AffinityLinalg
import AffinityModels
import AffinityServer
import ArgumentParser
import Foundation
import Logging

/// `affinity export pgvector`: a model's embeddings into PostgreSQL with pgvector.
struct ExportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Export a model to another system (pgvector: PostgreSQL answers recommendations itself).",
        subcommands: [PgvectorExport.self]
    )

    struct PgvectorExport: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "pgvector",
            abstract: "Write a model's item (and user) embeddings into PostgreSQL tables with an HNSW index (vector_ip_ops).",
            discussion: """
            Tables PREFIXitems, PREFIXusers, PREFIXseen (training items per user) and
            PREFIXmodel, replaced in one transaction. The password comes from
            AFFINITY_PG_PASSWORD or PGPASSWORD. --print-sql prints the query that recommends
            in the database. --check N runs it for N sampled users at each --ef-search and
            compares with the model's exact top-k (what affinity recommend returns): recall,
            short lists, queries/s.
            """
        )
        @Option(name: .long, help: "Model folder (an embedding model: iALS, BPR, two-tower, Item2Vec...).") var model: String
        @Option(name: .long, help: "postgres://USER@HOST:PORT/DATABASE") var store: String
        @Option(name: .long, help: "Table name prefix.") var prefix = "affinity_"
        @Option(name: .long, help: "HNSW graph degree (pgvector m).") var m = 16
        @Option(name: .long, help: "HNSW build breadth (pgvector ef_construction).") var efConstruction = 64
        @Flag(name: .long, help: "Print the recommendation SQL and stop (nothing written).") var printSQL = false
        @Option(name: .long, help: "After writing, check the SQL for this many sampled users against the exact top-k (0: no check).") var check = 0
        @Option(name: .long, help: "k of the check.") var k = 10
        @Option(name: .long, help: "hnsw.ef_search values of the check, comma-separated; 'exact' scans without the index.") var efSearch = "40,100,400,1000,exact"
        @Option(name: .long, help: "Connections the check queries over at once.") var connections = 2
        @Option(name: .long, help: "Seed of the user sample.") var seed: UInt64 = 1
        @Flag(name: .long, help: "Skip writing (check tables written before).") var checkOnly = false

        func validate() throws {
            guard m >= 2 && m <= 100 else { throw ValidationError("--m must be in 2...100, got \(m)") }
            guard efConstruction >= 4 && efConstruction <= 1000 else { throw ValidationError("--ef-construction must be in 4...1000") }
            guard k >= 1 && k <= 1000 else { throw ValidationError("--k must be in 1...1000") }
            guard check >= 0, connections >= 1 && connections <= 64 else { throw ValidationError("--check must be >= 0 and --connections in 1...64") }
            _ = try efSearchValues()
        }

        func efSearchValues() throws -> [Int?] {
            try efSearch.split(separator: ",").map { part -> Int? in
                if part == "exact" { return nil }
                guard let v = Int(part), v >= 1 && v <= 1000 else {
                    throw ValidationError("--ef-search: '\(part)' is neither 1...1000 (pgvector's range) nor 'exact'")
                }
                return v
            }
        }

        func run() async throws {
            do {
                try Pgvector.checkPrefix(prefix)
            } catch let error as PostgresStoreError {
                throw CommandError(error.message)
            }
            if printSQL {
                print(Pgvector.recommendSQL(prefix: prefix))
                return
            }
            let location: PostgresLocation
            do { location = try PostgresLocation(url: store) } catch let error as PostgresStoreError { throw CommandError("--store: \(error.message)") }
            let trained = try TrainedModel.load(from: model)
            guard let embeddings = trained.model as? any EmbeddingRecommender else {
                throw CommandError("a \(trained.modelType) model has no embeddings to export (iALS, BPR, two-tower and Item2Vec do)")
            }
            var logger = Logger(label: "affinity.export")
            logger.logLevel = .warning
            let items = (0..<trained.items.count).map { trained.items[$0] }
            let users = (0..<trained.users.count).map { trained.users[$0] }
            do {
                if !checkOnly {
                    let itemVectors = embeddings.itemEmbeddings, userVectors = embeddings.userEmbeddings
                    let d = itemVectors.columns
                    let seen = (0..<users.count).map { u in (user: users[u], items: trained.model.seenItems(ofUser: u).map { items[$0] }) }
                    let clock = Stopwatch()
                    var settings = Pgvector.Settings()
                    settings.prefix = prefix
                    settings.m = m
                    settings.efConstruction = efConstruction
                    let written = try await Pgvector.export(to: location, settings: settings, modelPath: model, modelType: trained.modelType,
                                                            items: items, itemVectors: itemVectors, users: users,
                                                            userVectors: userVectors, seen: seen, logger: logger)
                    print("wrote \(written.items) items, \(written.users) users, \(written.seen) seen pairs (\(d) dimensions) to \(location) in \(String(format: "%.1f", clock.seconds)) s; HNSW m=\(m) ef_construction=\(efConstruction)")
                }
                guard check > 0 else { return }
                var g = SeededGenerator(seed: seed)
                var sample = Array(0..<users.count)
                sample.shuffle(using: &g)
                sample = Array(sample.prefix(check))
                let exact = try trained.model.recommend(users: sample, k: k)
                let pairs = zip(sample, exact).map { (user: users[$0], items: $1.map { items[$0.index] }) }
                let rows = try await Pgvector.check(location, prefix: prefix, exact: pairs, k: k, efSearch: try efSearchValues(),
                                                    connections: connections, logger: logger)
                print("check: \(pairs.count) users (seed \(seed)), SQL top-\(k) against the model's exact top-\(k), \(connections) connections, CPU \(cpuModel())")
                print("ef_search  recall@\(k)  short lists  queries/s  p50 ms  p99 ms")
                for r in rows {
                    let label = (r.efSearch.map(String.init) ?? "exact").padding(toLength: 9, withPad: " ", startingAt: 0)
                    print(label + String(format: "  %9.4f  %11d  %9.0f  %6.2f  %6.2f", r.recall, r.shortLists, r.queriesPerSecond,
                                         r.p50Milliseconds, r.p99Milliseconds))
                }
            } catch let error as PostgresStoreError {
                throw CommandError(error.message)
            }
        }
    }
}

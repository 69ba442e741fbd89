import AffinityANN
import AffinityModels
import AffinityPipeline
import AffinityServer
import ArgumentParser
import Foundation
import Logging

/// `affinity serve`: the HTTP recommendation service (routes: Sources/AffinityServer/openapi.yaml).
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve recommendations over HTTP, with event ingestion, model hot swap and Prometheus metrics.",
        discussion: """
        The store (SQLite) keeps events and the model registry across restarts. --model registers the model
        folder and activates it (unless it is already the active one); without --model the store's active
        model is served. Embedding models (ials, bpr) are served by HNSW search over their item embeddings
        (--index, or built at start); EASE, item-kNN and popularity by exact scoring.
        Routes: GET /v1/users/{id}/recommendations, POST /v1/recommendations, GET /v1/items/{id}/similar,
        POST /v1/events, GET|POST /v1/models, POST /v1/models/{id}/activate, GET /health, GET /metrics,
        GET /openapi.yaml. SIGTERM or SIGINT shuts down gracefully.
        """
    )

    @Option(name: .long, help: "Model folder to register and activate.") var model: String?
    @Option(name: .long, help: "Index file over the model's item embeddings (affinity index build); default: HNSW built at start.") var index: String?
    @Option(name: .long, help: "SQLite store for events and the model registry (created when absent).") var store = "affinity.sqlite"
    @Option(name: .long, help: "Address to listen on.") var host = "127.0.0.1"
    @Option(name: .long, help: "Port (0 picks a free one; the chosen port is printed).") var port = 8080
    @Option(name: .long, help: "HNSW search breadth (ef) for ANN retrieval.") var ef = 64
    @Flag(name: .long, help: "Score every item exactly instead of searching an index (also for embedding models).") var exact = false
    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.") var logLevel = "info"

    func validate() throws {
        guard port >= 0 && port <= 65535 else { throw ValidationError("--port must be in 0...65535, got \(port)") }
        guard ef >= 1 else { throw ValidationError("--ef must be positive, got \(ef)") }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical; got '\(logLevel)'")
        }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "affinity.serve")
        let parameters = SearchParameters(ef: ef)
        let exact = self.exact
        let store = try SQLiteStore(path: self.store)
        let service = try AffinityService(store: store, logger: logger, loader: { record in
            try AffinityService.loadServingModel(record, exact: exact, searchParameters: parameters)
        })
        if let model {
            let path = URL(fileURLWithPath: model).standardizedFileURL.path
            let indexPath = index.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
            if let current = try store.activeModel(), current.path == path, current.index == indexPath {
                logger.info("model already active", metadata: ["id": "\(current.id)", "path": "\(path)"])
            } else {
                do {
                    let record = try await service.register(path: path, index: indexPath)
                    try await service.activate(id: record.id)
                } catch let error as APIError {
                    service.close()
                    throw CommandError(error.message)
                }
            }
        } else if try store.activeModel() == nil {
            logger.warning("no active model: recommendation routes answer 503 until POST /v1/models registers one")
        }
        try await AffinityServer.run(service: service, host: host, port: port, logger: logger) { port in
            // Unbuffered, so that scripts and tests waiting for this line see it at once.
            FileHandle.standardOutput.write(Data("listening on http://\(host):\(port)\n".utf8))
        }
    }
}

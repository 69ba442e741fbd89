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
        The store keeps events and the model registry across restarts: a SQLite file
        (one server), or postgres://USER@HOST:PORT/DATABASE shared by several replicas
        (password from AFFINITY_PG_PASSWORD or PGPASSWORD), which follow each other's
        events and activations.
        --model activates the model folder (registering it the first time); --pipeline
        activates a pipeline file (docs/pipeline.md: retrievers, ranker, re-rankers)
        the same way; without either the store's active model is served. A pipeline
        file registered with POST /v1/models {"path": "p.json"} swaps in whole on
        activation. Embedding models (ials, bpr) are
        served by HNSW search over their item embeddings (--index, or built at start);
        EASE, item-kNN and popularity by exact scoring. Rating events count as
        positives at or above the model's threshold (its split's --min-rating).
        Routes: GET /v1/users/{id}/recommendations, POST /v1/recommendations,
        GET /v1/items/{id}/similar, POST /v1/events, GET|POST /v1/models,
        POST /v1/models/{id}/activate, DELETE /v1/models/{id}, GET /health,
        GET /metrics, GET /openapi.yaml. SIGTERM or SIGINT shuts down gracefully.
        """
    )

    @Option(name: .long, help: "Model folder to register and activate.") var model: String?
    @Option(name: .long, help: "Pipeline file (docs/pipeline.md) to register and activate instead of one model.") var pipeline: String?
    @Option(name: .long, help: "Index file over the model's item embeddings (affinity index build); default: HNSW built at start.") var index: String?
    @Option(name: .long, help: "Store for events and the model registry: a SQLite file (created when absent), or postgres://USER@HOST:PORT/DATABASE shared by replicas (password from AFFINITY_PG_PASSWORD or PGPASSWORD).") var store = "affinity.sqlite"
    @Option(name: .long, help: "Address to listen on.") var host = "127.0.0.1"
    @Option(name: .long, help: "Port (0 picks a free one; the chosen port is printed).") var port = 8080
    @Option(name: .long, help: "HNSW search breadth (ef) for ANN retrieval.") var ef = 64
    @Flag(name: .long, help: "Score every item exactly instead of searching an index (also for embedding models).") var exact = false
    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.") var logLevel = "info"
    @Option(name: .long, help: "File holding the admin key that POST/DELETE /v1/models and activation need (or AFFINITY_ADMIN_KEY). Required to listen on a non-loopback address.")
    var adminKeyFile: String?
    @Option(name: .long, help: "File holding a key that the recommendation and event routes then need (or AFFINITY_API_KEY).")
    var apiKeyFile: String?
    @Option(name: .long, help: "Folder under which models and indexes may be registered over HTTP (repeatable; default: the folder of --model, else the current folder).")
    var modelDir: [String] = []
    @Option(name: .long, help: "Seconds before an idle connection (or one stalled inside its request head) is closed.")
    var idleTimeout = 30
    @Flag(name: .long, help: "Learn from the event stream while serving (online-mf on collisionless embedding tables): every stored event is learned and the vectors are published to the serving model every --online-interval seconds.")
    var online = false
    @Option(name: .long, help: "Seconds between two publishes of the online model.") var onlineInterval: Double = 2
    @Option(name: .long, help: "Folder of the online learner's state (default: the SQLite store's path + .online, or ./affinity-online).")
    var onlineState: String?
    @Option(name: .long, help: "An online-mf setting, key=value (repeatable; affinity train --help lists them). A learner starting from the active model takes its width from it; one resumed from --online-state keeps its saved settings.")
    var onlineSet: [String] = []

    func validate() throws {
        if model != nil && pipeline != nil { throw ValidationError("give --model MODEL or --pipeline FILE, not both") }
        if pipeline != nil && index != nil { throw ValidationError("--index applies to --model; a pipeline file names each retriever's index") }
        guard port >= 0 && port <= 65535 else { throw ValidationError("--port must be in 0...65535, got \(port)") }
        guard ef >= 1 else { throw ValidationError("--ef must be positive, got \(ef)") }
        guard idleTimeout >= 1 else { throw ValidationError("--idle-timeout must be at least 1 second, got \(idleTimeout)") }
        guard onlineInterval >= 0.05, onlineInterval <= 86_400 else { throw ValidationError("--online-interval must be in 0.05...86400 seconds, got \(onlineInterval)") }
        if !online && (onlineState != nil || !onlineSet.isEmpty) { throw ValidationError("--online-state and --online-set apply with --online") }
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
        let adminKey = try Self.key(file: adminKeyFile, environment: "AFFINITY_ADMIN_KEY", option: "--admin-key-file")
        let apiKey = try Self.key(file: apiKeyFile, environment: "AFFINITY_API_KEY", option: "--api-key-file")
        guard adminKey != nil || Self.isLoopback(host) else {
            throw CommandError("--host \(host) is not a loopback address: the admin routes (model registration and activation) need a key there; give --admin-key-file FILE or set AFFINITY_ADMIN_KEY")
        }
        let model = self.model ?? self.pipeline
        let directories = modelDir.isEmpty ? [model.map { URL(fileURLWithPath: $0).standardizedFileURL.deletingLastPathComponent().path } ?? "."] : modelDir
        let access: AccessPolicy
        do {
            access = try AccessPolicy(adminKey: adminKey, apiKey: apiKey, modelDirectories: directories)
        } catch let error as APIError {
            throw CommandError("--model-dir: \(error.message)")
        }
        // The port first: a port in use must not be found only after the store was changed.
        try Self.checkPortFree(host: host, port: port)
        let store = try await Self.openStore(self.store, logger: logger)
        let service = try await AffinityService(store: store, access: access, logger: logger, loader: { record in
            try AffinityService.loadPipeline(record, exact: exact, searchParameters: parameters)
        })
        if let model {
            let path = AccessPolicy.realPath(model) ?? URL(fileURLWithPath: model).standardizedFileURL.path
            let indexPath = index.map { AccessPolicy.realPath($0) ?? URL(fileURLWithPath: $0).standardizedFileURL.path }
            do {
                let record = try await service.activateOrRegister(path: path, index: indexPath)
                logger.info("serving \(record.modelType == "pipeline" ? "pipeline" : "model")", metadata: ["id": "\(record.id)", "path": "\(path)"])
            } catch let error as APIError {
                service.close()
                throw CommandError(error.message)
            }
        } else if service.activeRecord == nil {
            // The store's active model is gone (deleted, moved, corrupt): fall back to the newest one that loads.
            if try await service.activateLastGoodModel() == nil {
                logger.warning("no active model: recommendation routes answer 503 until POST /v1/models registers one")
            }
        }
        if online {
            var settings = OnlineSettings(statePath: onlineState ?? (PostgresLocation.isURL(self.store) ? "affinity-online" : self.store + ".online"))
            settings.publishInterval = onlineInterval
            settings.searchParameters = parameters
            do {
                settings.model = try OnlineMF.Configuration().applying(try parseSettings(onlineSet, option: "--online-set"))
                try service.startOnline(settings)
            } catch let error as APIError {
                service.close()
                throw CommandError("--online: \(error.message)")
            } catch {
                service.close()
                throw CommandError("--online: \(error)")
            }
        }
        try await AffinityServer.run(service: service, host: host, port: port, logger: logger, idleTimeout: idleTimeout) { port in
            // Unbuffered, so that scripts and tests waiting for this line see it at once.
            FileHandle.standardOutput.write(Data("listening on http://\(host):\(port)\n".utf8))
        }
    }

    /// The store named by `--store`: PostgreSQL for a postgres:// URL, else a SQLite file.
    static func openStore(_ spec: String, logger: Logger) async throws -> any AffinityStore {
        do {
            if PostgresLocation.isURL(spec) {
                return try await PostgresStore.open(try PostgresLocation(url: spec), logger: logger)
            }
            return try SQLiteStore(path: spec)
        } catch let error as SQLiteError {
            throw CommandError(error.description)
        } catch let error as PostgresStoreError {
            throw CommandError("--store: \(error.message)")
        }
    }

    /// A key from a file (first line, trimmed) or an environment variable; nil when neither is given.
    static func key(file: String?, environment: String, option: String) throws -> String? {
        if let file {
            guard let data = FileManager.default.contents(atPath: file) else { throw CommandError("\(option): cannot read \(file)") }
            let key = String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline).first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
            guard key.count >= 16 else { throw CommandError("\(option): the key in \(file) is shorter than 16 characters") }
            return key
        }
        if let value = ProcessInfo.processInfo.environment[environment], !value.isEmpty {
            guard value.count >= 16 else { throw CommandError("\(environment) is shorter than 16 characters") }
            return value
        }
        return nil
    }

    /// `localhost`, `::1` or an IPv4 literal in 127.0.0.0/8 (not a name that merely starts with "127.").
    static func isLoopback(_ host: String) -> Bool {
        if host == "localhost" || host == "::1" { return true }
        var address = in_addr()
        return inet_pton(AF_INET, host, &address) == 1 && UInt32(bigEndian: address.s_addr) >> 24 == 127
    }

    /// Binds and releases `host:port` once, so that a port in use is reported before anything else.
    static func checkPortFree(host: String, port: Int) throws {
        guard port != 0 else { return }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &list) == 0, let info = list else {
            throw CommandError("--host \(host): not an address this machine can listen on")
        }
        defer { freeaddrinfo(list) }
        let fd = socket(info.pointee.ai_family, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        guard bind(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 else {
            throw CommandError("cannot listen on \(host):\(port): \(String(cString: strerror(errno))) (is another server using the port?)")
        }
    }
}

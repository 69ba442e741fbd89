import AffinityLinalg
import AffinityModels
import Foundation
import Hummingbird
import Logging
import NIOCore

extension AffinityService {
    /// The OpenAPI document of these routes (`Sources/AffinityServer/openapi.yaml`), served at `/openapi.yaml`.
    public static let openAPIDocument: String = {
        guard let url = Bundle.module.url(forResource: "openapi", withExtension: "yaml"),
              let text = try? String(contentsOf: url, encoding: .utf8) else {
            return "openapi: 3.0.3\ninfo: {title: Affinity, version: unknown}\npaths: {}\n# the bundled openapi.yaml was not found\n"
        }
        return text
    }()

    /// Every route of the service, behind one middleware that times requests, counts them by route
    /// pattern and status, and turns every error into a JSON error body.
    public func router() -> Router<AffinityRequestContext> {
        let router = Router(context: AffinityRequestContext.self)
        let table = RouteTable()
        router.add(middleware: ErrorAndMetricsMiddleware(metrics: metrics, logger: logger, routes: table))

        router.get("/") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"],
                     body: ResponseBody(byteBuffer: ByteBuffer(string: try await self.dashboardPage())))
        }
        router.get("/health") { _, _ in
            let (body, status) = self.health()
            return try JSON.response(body, status: status)
        }
        router.head("/health") { _, _ in
            Response(status: self.health().1, headers: [.contentType: "application/json"])
        }
        router.get("/metrics") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                     body: ResponseBody(byteBuffer: ByteBuffer(string: self.metricsText())))
        }
        router.get("/openapi.yaml") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/yaml"],
                     body: ResponseBody(byteBuffer: ByteBuffer(string: Self.openAPIDocument)))
        }

        router.get("/v1/users/:id/recommendations") { request, context in
            try self.access.requireReader(request)
            let user = try Self.pathParameter(context, "id")
            try self.checkID(user, field: "id")
            let k = try Self.intParameter(request, "k", default: 10, range: 1...self.limits.maxK)
            let excludeSeen = try Self.boolParameter(request, "exclude_seen", default: true)
            let explain = try Self.boolParameter(request, "explain", default: false)
            let exclude = Self.listParameter(request, "exclude")
            var fallbackPopular = false
            if let fallback = request.uri.queryParameters["fallback"] {
                guard fallback == "popular" else {
                    throw APIError(.badRequest, "fallback: the only fallback is 'popular', got '\(fallback.prefix(64))'")
                }
                fallbackPopular = true
            }
            return try JSON.response(try await self.recommendForUser(user, k: k, excludeSeen: excludeSeen, exclude: exclude,
                                                           explain: explain, fallbackPopular: fallbackPopular))
        }

        router.post("/v1/recommendations") { request, _ in
            try self.access.requireReader(request)
            let body = try await request.body.collect(upTo: self.limits.maxBodyBytes)
            return try JSON.response(try self.recommendForHistory(try JSON.decode(HistoryRequest.self, from: body)))
        }

        router.get("/v1/items/:id/similar") { request, context in
            try self.access.requireReader(request)
            let item = try Self.pathParameter(context, "id")
            try self.checkID(item, field: "id")
            let k = try Self.intParameter(request, "k", default: 10, range: 1...self.limits.maxK)
            return try JSON.response(try self.similar(toItem: item, k: k))
        }

        router.post("/v1/events") { request, _ in
            try self.access.requireReader(request)
            let body = try await request.body.collect(upTo: self.limits.maxBodyBytes)
            let batch = try JSON.decode(EventBatchIn.self, from: body)
            return try JSON.response(try await self.ingest(batch.events))
        }

        router.get("/v1/models") { request, _ in
            try self.access.requireAdmin(request)
            let models = try await self.store.models()
            return try JSON.response(ModelsOut(active: models.first(where: \.active)?.id, models: models))
        }

        router.post("/v1/models") { request, _ in
            try self.access.requireAdmin(request)
            let body = try await request.body.collect(upTo: self.limits.maxBodyBytes)
            let input = try JSON.decode(RegisterModelIn.self, from: body)
            let record = try await self.register(path: input.path, index: input.index, activate: input.activate == true)
            return try JSON.response(record, status: .created)
        }

        router.post("/v1/models/:id/activate") { request, context in
            try self.access.requireAdmin(request)
            return try JSON.response(try await self.activate(id: try Self.modelID(context)))
        }

        router.delete("/v1/models/:id") { request, context in
            try self.access.requireAdmin(request)
            try await self.deleteModel(id: try Self.modelID(context))
            return Response(status: .noContent)
        }
        table.fill(router.routes.map { ("\($0.path)", $0.method) })
        return router
    }

    // MARK: - Parameters

    static func modelID(_ context: AffinityRequestContext) throws -> Int {
        let raw = try pathParameter(context, "id")
        guard let id = Int(raw) else { throw APIError(.badRequest, "id: model ids are integers, got '\(raw.prefix(64))'") }
        return id
    }

    static func pathParameter(_ context: AffinityRequestContext, _ name: String) throws -> String {
        guard let raw = context.parameters.get(name) else { throw APIError(.badRequest, "\(name): missing") }
        return raw.removingPercentEncoding ?? raw
    }

    static func intParameter(_ request: Request, _ name: String, default value: Int, range: ClosedRange<Int>) throws -> Int {
        guard let raw = request.uri.queryParameters[Substring(name)] else { return value }
        guard let n = Int(raw), range.contains(n) else {
            throw APIError(.badRequest, "\(name): must be an integer from \(range.lowerBound) to \(range.upperBound), got '\(raw.prefix(64))'")
        }
        return n
    }

    static func boolParameter(_ request: Request, _ name: String, default value: Bool) throws -> Bool {
        guard let raw = request.uri.queryParameters[Substring(name)] else { return value }
        switch raw.lowercased() {
        case "true", "1", "yes": return true
        case "false", "0", "no": return false
        default: throw APIError(.badRequest, "\(name): must be true or false, got '\(raw.prefix(64))'")
        }
    }

    /// Comma-separated IDs (`exclude=1,2,3`), also accepted as repeated parameters.
    static func listParameter(_ request: Request, _ name: String) -> [String] {
        request.uri.queryParameters[values: Substring(name)].flatMap { $0.split(separator: ",").map(String.init) }
    }
}

/// Times each request, records it in the metrics by route pattern (`/v1/users/{id}/recommendations`)
/// and status, and answers every error as `{"error": {"status", "message"}}`: the service's own
/// `APIError`s, Hummingbird's (404 for unknown paths, 413 for oversized bodies), model errors
/// (400), and anything else (500, logged).
struct ErrorAndMetricsMiddleware: RouterMiddleware {
    typealias Context = AffinityRequestContext
    let metrics: ServiceMetrics
    let logger: Logger
    let routes: RouteTable

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let clock = Stopwatch()
        let response: Response
        do {
            response = try await next(request, context)
        } catch let error as APIError {
            response = JSON.error(error.status, error.message)
        } catch let error as HTTPError where error.status == .notFound && !routes.methods(for: request.uri.path).isEmpty {
            // A known path asked with a method it does not have: 405 and the methods it has.
            let allowed = routes.methods(for: request.uri.path)
            var r = JSON.error(.methodNotAllowed, "\(request.method) is not allowed on \(request.uri.path); allowed: \(allowed.joined(separator: ", "))")
            r.headers[.init("Allow")!] = allowed.joined(separator: ", ")
            response = r
        } catch let error as HTTPError {
            let message: String
            switch error.status {
            case .notFound: message = "no route for \(request.method) \(request.uri.path)"
            case .contentTooLarge: message = "request body is larger than the limit"
            default: message = error.body ?? error.status.reasonPhrase
            }
            response = JSON.error(error.status, message)
        } catch is NIOTooManyBytesError {
            response = JSON.error(.contentTooLarge, "request body is larger than the limit")
        } catch let error as ModelError {
            response = JSON.error(.badRequest, error.description)
        } catch let error as PostgresStoreError {
            // The database did not answer (or refused): 503, details in the log only.
            let reference = AffinityService.errorReference()
            logger.error("store unavailable", metadata: ["path": "\(request.uri.path)", "error": "\(error)", "reference": "\(reference)"])
            response = JSON.error(.serviceUnavailable, "the store is unavailable (reference \(reference) in the server log); retry")
        } catch {
            // Details (paths, SQL) stay in the log; the client gets a reference to find them.
            let reference = AffinityService.errorReference()
            logger.error("request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)", "reference": "\(reference)"])
            response = JSON.error(.internalServerError, "internal error (reference \(reference) in the server log)")
        }
        let route = context.endpointPath.map { $0 == "NotFound" ? "unmatched" : $0 } ?? "unmatched"
        metrics.recordRequest(route: route, method: request.method.rawValue, status: response.status.code, seconds: clock.seconds)
        return response
    }
}

/// The router's path patterns and their methods, to tell an unknown path (404) from a known path
/// asked with the wrong method (405).
final class RouteTable: @unchecked Sendable {
    private var patterns: [(segments: [Substring], method: String)] = []

    func fill(_ routes: [(path: String, method: HTTPRequest.Method)]) {
        patterns = routes.map { (route: (path: String, method: HTTPRequest.Method)) in
            (route.path.split(separator: "/"), route.method.rawValue)
        }
    }

    /// The methods of the patterns that match `path` (a `:name` segment matches any one segment).
    func methods(for path: String) -> [String] {
        let segments = path.split(separator: "/")
        var out: [String] = []
        for p in patterns where p.segments.count == segments.count
            && zip(p.segments, segments).allSatisfy({ $0.hasPrefix(":") || $0 == $1 }) && !out.contains(p.method) {
            out.append(p.method)
        }
        return out.sorted()
    }
}

/// Starts the HTTP server for a service and runs it until SIGTERM or SIGINT, then closes the store.
public enum AffinityServer {
    /// `idleTimeout`: seconds after which a connection that sends nothing (an idle keep-alive
    /// connection, or one that stopped halfway through its request head) is closed.
    public static func run(service: AffinityService, host: String, port: Int, logger: Logger, idleTimeout: Int = 30,
                           onListening: @escaping @Sendable (Int) -> Void = { _ in }) async throws {
        let app = Application(
            router: service.router(),
            server: .http1(configuration: .init(idleTimeout: .seconds(Int64(idleTimeout)))),
            configuration: ApplicationConfiguration(address: .hostname(host, port: port), serverName: "affinity"),
            onServerRunning: { channel in onListening(channel.localAddress?.port ?? port) },
            logger: logger
        )
        do {
            try await app.runService()
        } catch {
            service.close()
            throw error
        }
        logger.info("shutting down: store closed")
        service.close()
    }
}

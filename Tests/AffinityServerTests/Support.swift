import AffinityData
import AffinityLinalg
import AffinityModels
import Foundation
import AffinityTestScratch
import Hummingbird
import Logging
import Testing

@testable import AffinityServer

/// A response read back from the router.
struct TestResponse {
    var status: Int
    var contentType: String?
    var body: String
    var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any] ?? [:] }
    var errorMessage: String { ((json["error"] as? [String: Any])?["message"] as? String) ?? "" }
    var itemIDs: [String] { (json["items"] as? [[String: Any]] ?? []).compactMap { $0["item"] as? String } }
}

/// Sends requests through the service's router in-process: no socket, the same middleware and
/// handlers as the server.
struct RouterClient {
    let responder: any HTTPResponder<AffinityRequestContext>

    init(_ service: AffinityService) {
        responder = service.router().buildResponder()
    }

    final class Collector: ResponseBodyWriter {
        var bytes: [UInt8] = []
        func write(_ buffer: ByteBuffer) async throws { bytes += buffer.readableBytesView }
        func finish(_ trailingHeaders: HTTPFields?) async throws {}
    }

    func send(_ method: HTTPRequest.Method, _ uri: String, body: String? = nil, headers: HTTPFields = [:]) async throws -> TestResponse {
        let head = HTTPRequest(method: method, scheme: "http", authority: "localhost", path: uri, headerFields: headers)
        let request = Request(head: head, body: RequestBody(buffer: ByteBuffer(string: body ?? "")))
        let response = try await responder.respond(to: request, context: AffinityRequestContext(logger: Logger(label: "test")))
        let collector = Collector()
        try await response.body.write(collector)
        return TestResponse(status: response.status.code, contentType: response.headers[.contentType],
                            body: String(decoding: collector.bytes, as: UTF8.self))
    }

    func get(_ uri: String) async throws -> TestResponse { try await send(.get, uri) }
    func post(_ uri: String, _ body: String = "") async throws -> TestResponse { try await send(.post, uri, body: body) }
}

/// Tests log warnings and errors only.
let quietLogger: Logger = {
    var l = Logger(label: "affinity-test")
    l.logLevel = .warning
    return l
}()

func temporaryDirectory(_ name: String = "server") -> String { TestScratch.folder("affinity-\(name)") }

/// A small synthetic world: 120 users, 60 items (u0..., i0...), and iALS and EASE models trained on it
/// and saved as model folders.
struct Fixture {
    let directory: String
    let log: InteractionLog
    let matrix: SparseMatrix
    let alsPath: String
    let easePath: String
    let als: ALS

    static let shared: Fixture = try! Fixture()

    init() throws {
        directory = temporaryDirectory("fixture")
        var rows: [(user: String, item: String, rating: Float?, timestamp: Int64?)] = []
        var g = SeededGenerator(seed: 7)
        for u in 0..<120 {
            let cluster = u % 3
            for _ in 0..<8 {
                let item = cluster * 20 + g.next(below: 20)
                rows.append((user: "u\(u)", item: "i\(item)", rating: nil, timestamp: nil))
            }
        }
        log = InteractionLog(source: "fixture", rows: rows)
        matrix = log.matrix()
        als = try ALS.fit(matrix, settings: ["factors": "8", "iterations": "10"])
        let ease = try EASE.fit(matrix, settings: ["lambda": "10"])
        alsPath = directory + "/ials"
        easePath = directory + "/ease"
        try TrainedModel(model: als, users: log.users, items: log.items).save(to: alsPath)
        try TrainedModel(model: ease, users: log.users, items: log.items).save(to: easePath)
    }

    /// A fresh service on a new SQLite store, with `model` registered and active (when given).
    func service(model: String? = nil, store path: String? = nil, limits: ServiceLimits = ServiceLimits()) async throws -> (AffinityService, String) {
        let storePath = path ?? temporaryDirectory("store") + "/affinity.sqlite"
        let service = try await AffinityService(store: try SQLiteStore(path: storePath), limits: limits, logger: quietLogger)
        if let model {
            let record = try await service.register(path: model, index: nil)
            try await service.activate(id: record.id)
        }
        return (service, storePath)
    }
}

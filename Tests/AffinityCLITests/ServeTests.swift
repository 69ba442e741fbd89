import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A minimal blocking HTTP/1.1 client over a loopback socket (one request per connection), so the
/// tests need nothing but the toolchain.
enum HTTPClient {
    struct Response { var status: Int; var body: String }

    static func send(port: Int, _ method: String, _ path: String, body: String = "", headers: [String: String] = [:]) throws -> Response {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.ENOTSOCK) }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw POSIXError(.ECONNREFUSED) }
        let extra = headers.map { "\($0.key): \($0.value)\r\n" }.joined()
        let request = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\(extra)\r\n\(body)"
        var bytes = Array(request.utf8)
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress! + sent, $0.count - sent) }
            guard n > 0 else { throw POSIXError(.EPIPE) }
            sent += n
        }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        // Until the peer closes, or the body has its Content-Length (chromedriver answers
        // "Connection: close" and keeps the socket open).
        let separator: [UInt8] = Array("\r\n\r\n".utf8)
        var expected: Int?
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n <= 0 { break }
            received += buffer[0..<n]
            if expected == nil, let end = received.firstRange(of: separator) {
                let head = String(decoding: received[..<end.lowerBound], as: UTF8.self).lowercased()
                if let line = head.split(separator: "\r\n").first(where: { $0.hasPrefix("content-length:") }),
                   let length = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) {
                    expected = end.upperBound + length
                }
            }
            if let expected, received.count >= expected { break }
        }
        let text = String(decoding: received, as: UTF8.self)
        guard let headEnd = text.range(of: "\r\n\r\n") else { throw POSIXError(.EBADMSG) }
        let statusLine = text[..<headEnd.lowerBound].split(separator: "\r\n").first ?? ""
        let status = Int(statusLine.split(separator: " ").dropFirst().first ?? "") ?? 0
        return Response(status: status, body: String(text[headEnd.upperBound...]))
    }
}

/// An `affinity serve` process on a free loopback port.
final class ServerProcess {
    let process = Process()
    let port: Int
    let stderrPath: String

    init(arguments: [String], directory: String, environment: [String: String] = [:]) throws {
        let out = directory + "/serve-\(UInt32.random(in: 0...UInt32.max)).out"
        stderrPath = out + ".err"
        _ = FileManager.default.createFile(atPath: out, contents: nil)
        _ = FileManager.default.createFile(atPath: stderrPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: CLI.binary)
        process.arguments = ["serve", "--port", "0"] + arguments
        if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, b in b } }
        process.standardOutput = FileHandle(forWritingAtPath: out)
        process.standardError = FileHandle(forWritingAtPath: stderrPath)
        try process.run()
        // The server prints "listening on http://127.0.0.1:PORT" once it accepts connections.
        var found: Int?
        for _ in 0..<600 where found == nil {
            let text = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
            if let line = text.split(separator: "\n").first(where: { $0.hasPrefix("listening on") }) {
                found = Int(line.split(separator: ":").last ?? "")
            } else if !process.isRunning {
                break
            } else {
                usleep(100_000)
            }
        }
        guard let found else {
            process.terminate()
            throw CLIError("server did not start: \((try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "")")
        }
        port = found
    }

    func request(_ method: String, _ path: String, body: String = "", headers: [String: String] = [:]) throws -> HTTPClient.Response {
        try HTTPClient.send(port: port, method, path, body: body, headers: headers)
    }

    func signal(_ s: Int32) -> Int32 {
        kill(process.processIdentifier, s)
        process.waitUntilExit()
        return process.terminationStatus
    }

    var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }
}

struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// A small iALS model trained through the CLI, shared by the server tests.
let servedModel: (directory: String, model: String) = {
    let dir = tempDir()
    _ = try! CLI.run("data", "generate", "--out", dir + "/data", "--users", "200", "--items", "80")
    _ = try! CLI.run("split", "--input", dir + "/data/ratings.tsv", "--strategy", "holdout", "--out", dir + "/split")
    _ = try! CLI.run("train", "--split", dir + "/split", "--model", "ials", "--set", "factors=8", "--set", "iterations=5", "--out", dir + "/ials")
    return (dir, dir + "/ials")
}()

@Suite(.serialized) struct ServeTests {
    /// The real server on a loopback port: routes over HTTP, then a graceful shutdown on SIGTERM.
    @Test func liveServerAnswersOverHTTPAndStopsOnSIGTERM() throws {
        let (dir, model) = servedModel
        let server = try ServerProcess(arguments: ["--model", model, "--store", dir + "/live.sqlite"], directory: dir)
        let health = try server.request("GET", "/health")
        #expect(health.status == 200 && health.body.contains("\"ials\""), "\(health.body)")
        let recs = try server.request("GET", "/v1/users/u1/recommendations?k=3&explain=true")
        #expect(recs.status == 200 && recs.body.contains("\"retrieval\":\"ann\"") && recs.body.contains("\"because\""), "\(recs.body)")
        let events = try server.request("POST", "/v1/events", body: #"[{"user": "u1", "item": "i3", "type": "view"}]"#)
        #expect(events.status == 200, "\(events.body)")
        let bad = try server.request("POST", "/v1/events", body: "{not json")
        #expect(bad.status == 400 && bad.body.contains("malformed JSON"), "\(bad.body)")
        let metrics = try server.request("GET", "/metrics")
        #expect(metrics.body.contains("affinity_events_stored 1"), "\(metrics.body)")
        let spec = try server.request("GET", "/openapi.yaml")
        #expect(spec.status == 200 && spec.body.hasPrefix("openapi: 3"))
        #expect(server.signal(SIGTERM) == 0, "\(server.stderr)")
        #expect(server.stderr.contains("shutting down"), "\(server.stderr)")
    }

    /// A pipeline file served: two retrievers, the learned ranker and MMR answer over HTTP exactly
    /// as `affinity recommend --pipeline` does; hot swap to a model and back swaps the whole
    /// pipeline, and a bad pipeline file is refused while the running one keeps answering.
    @Test func aServedPipelineAnswersAsTheCLIAndSwapsWhole() throws {
        let (dir, _) = servedModel
        let tune = try CLI.run("pipeline", "tune", "--split", dir + "/split", "--out", dir + "/pipe", "--retriever", "ease:lambda=50",
                               "--retriever", "itemknn", "-k", "30", "--losses", "softmax", "--set", "epochs=2", "--keep-all")
        #expect(tune.status == 0, "\(tune.stderr)")
        // The tuned ranker with MMR after it (both retrievers score exactly, so the lists are deterministic).
        var file = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/pipe/pipeline-softmax.json"))) as! [String: Any]
        file["rerank"] = ["mmr:lambda=0.8"]
        try JSONSerialization.data(withJSONObject: file).write(to: URL(fileURLWithPath: dir + "/pipe/served.json"))
        try Data("{\"retrievers\": []}".utf8).write(to: URL(fileURLWithPath: dir + "/pipe/bad.json"))

        let server = try ServerProcess(arguments: ["--pipeline", dir + "/pipe/served.json", "--store", dir + "/pipe.sqlite"], directory: dir)
        defer { _ = server.signal(SIGTERM) }
        func served(_ user: String) throws -> (retrieval: String, items: [String]) {
            let r = try server.request("GET", "/v1/users/\(user)/recommendations?k=8")
            let json = try JSONSerialization.jsonObject(with: Data(r.body.utf8)) as! [String: Any]
            return (json["retrieval"] as! String, (json["items"] as! [[String: Any]]).map { $0["item"] as! String })
        }
        for user in ["u1", "u7", "u42"] {
            let cli = try CLI.run("recommend", "--pipeline", dir + "/pipe/served.json", "--user", user, "-k", "8", "--json")
            #expect(cli.status == 0, "\(cli.stderr)")
            let items = ((try JSONSerialization.jsonObject(with: Data(cli.stdout.utf8)) as! [String: Any])["items"] as! [[String: Any]]).map { $0["item"] as! String }
            let http = try served(user)
            #expect(http.retrieval == "pipeline" && http.items == items, "\(user): HTTP \(http.items) vs CLI \(items)")
        }
        let before = try served("u1").items
        // Registered and activated like a model; then back to the pipeline (id 1): the whole pipeline swaps.
        let registered = try server.request("POST", "/v1/models", body: #"{"path": "\#(dir)/pipe/ease-0", "activate": true}"#)
        #expect(registered.status == 201, "\(registered.body)")
        #expect(try served("u1").retrieval == "exact")
        #expect(try server.request("POST", "/v1/models/1/activate").status == 200)
        #expect(try served("u1") == ("pipeline", before))
        // A bad pipeline file is refused (422 names the field) and the running pipeline keeps answering.
        let bad = try server.request("POST", "/v1/models", body: #"{"path": "\#(dir)/pipe/bad.json", "activate": true}"#)
        #expect(bad.status == 422 && bad.body.contains("retrievers: lists no retriever"), "\(bad.body)")
        #expect(try served("u1") == ("pipeline", before))
        let health = try server.request("GET", "/health")
        #expect(health.body.contains("\"pipeline\""), "\(health.body)")
    }

    /// Every event acknowledged before `kill -9` is there after a restart: each acknowledged event
    /// makes a user known only through it, so a lost event would turn that user's 200 into 404.
    @Test func acknowledgedEventsSurviveSIGKILL() throws {
        let (dir, model) = servedModel
        let store = dir + "/kill.sqlite"
        let server = try ServerProcess(arguments: ["--model", model, "--store", store], directory: dir)
        var acknowledged: [String] = []
        for n in 0..<40 {
            let users = (0..<5).map { "killed-\(n)-\($0)" }
            let body = "[" + users.map { #"{"user": "\#($0)", "item": "i\#(n % 20 + 1)", "type": "purchase"}"# }.joined(separator: ",") + "]"
            let r = try server.request("POST", "/v1/events", body: body)
            #expect(r.status == 200, "\(r.body)")
            if r.status == 200 { acknowledged += users }
        }
        #expect(server.signal(SIGKILL) == SIGKILL)
        let restarted = try ServerProcess(arguments: ["--store", store], directory: dir)
        let health = try restarted.request("GET", "/health")
        #expect(health.body.contains("\"events\":\(acknowledged.count)"), "\(health.body)")
        var missing = 0
        for user in acknowledged where try restarted.request("GET", "/v1/users/\(user)/recommendations?k=2").status != 200 {
            missing += 1
        }
        #expect(missing == 0)
        #expect(acknowledged.count == 200)
        _ = restarted.signal(SIGTERM)
    }

    @Test func serveRefusesABadModelWithAClearError() throws {
        let dir = tempDir()
        let r = try CLI.run("serve", "--model", dir + "/missing", "--store", dir + "/s.sqlite", "--port", "0")
        #expect(r.status != 0)
        #expect(r.stderr.contains("missing") && r.stderr.contains("cannot load model"), "\(r.stderr)")
        let p = try CLI.run("serve", "--port", "70000")
        #expect(p.status != 0 && p.stderr.contains("--port must be in 0...65535"), "\(p.stderr)")
    }
}

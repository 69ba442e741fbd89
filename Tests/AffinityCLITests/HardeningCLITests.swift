import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Regression tests of the issue "Hardening" through the command line and a live server.
@Suite(.serialized) struct HardeningCLITests {
    @Test func serveNeedsAnAdminKeyOffLoopbackAndChecksItOverHTTP() throws {
        let (dir, model) = servedModel
        let open = try CLI.run("serve", "--model", model, "--store", dir + "/open.sqlite", "--host", "0.0.0.0", "--port", "0")
        #expect(open.status != 0 && open.stderr.contains("need a key"), "\(open.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/open.sqlite"))
        // A name that starts like a loopback address is not one.
        let named = try CLI.run("serve", "--model", model, "--store", dir + "/named.sqlite", "--host", "127.example.invalid", "--port", "0")
        #expect(named.status != 0 && named.stderr.contains("need a key"), "\(named.stderr)")
        let keyFile = dir + "/admin.key"
        try Data("0123456789abcdef-admin\n".utf8).write(to: URL(fileURLWithPath: keyFile))
        let short = dir + "/short.key"
        try Data("abc\n".utf8).write(to: URL(fileURLWithPath: short))
        let refused = try CLI.run("serve", "--model", model, "--store", dir + "/short.sqlite", "--admin-key-file", short, "--port", "0")
        #expect(refused.status != 0 && refused.stderr.contains("shorter than 16"), "\(refused.stderr)")
        let server = try ServerProcess(arguments: ["--model", model, "--store", dir + "/keyed.sqlite", "--admin-key-file", keyFile],
                                       directory: dir, environment: ["AFFINITY_API_KEY": "0123456789abcdef-reader"])
        defer { _ = server.signal(SIGTERM) }
        #expect(try server.request("GET", "/v1/models").status == 401)
        #expect(try server.request("GET", "/v1/models", headers: ["Authorization": "Bearer 0123456789abcdef-admin"]).status == 200)
        #expect(try server.request("GET", "/v1/users/u1/recommendations").status == 401)
        #expect(try server.request("GET", "/v1/users/u1/recommendations", headers: ["Authorization": "Bearer 0123456789abcdef-reader"]).status == 200)
        #expect(try server.request("HEAD", "/health").status == 200)
        // Registration over HTTP: only inside the model directories (default: the folder of --model).
        let outside = try server.request("POST", "/v1/models", body: #"{"path": "/etc"}"#, headers: ["Authorization": "Bearer 0123456789abcdef-admin"])
        #expect(outside.status == 403, "\(outside.body)")
    }

    @Test func aPortInUseIsReportedBeforeTheStoreIsTouched() throws {
        let (dir, model) = servedModel
        let first = try ServerProcess(arguments: ["--model", model, "--store", dir + "/port-a.sqlite"], directory: dir)
        defer { _ = first.signal(SIGTERM) }
        let second = try CLI.run("serve", "--model", model, "--store", dir + "/port-b.sqlite", "--port", String(first.port))
        #expect(second.status != 0 && second.stderr.contains("cannot listen on 127.0.0.1:\(first.port)"), "\(second.stderr)")
        // Before the fix the model was registered and activated in the store first.
        #expect(!FileManager.default.fileExists(atPath: dir + "/port-b.sqlite"))
    }

    @Test func anUnreachableDatabaseIsNamedAndThePasswordIsNot() throws {
        let r = try CLI.run(["serve", "--store", "postgres://app@127.0.0.1:9/recs", "--port", "0"],
                            environment: ["AFFINITY_PG_PASSWORD": "s3cret-not-to-print"])
        #expect(r.status != 0)
        #expect(r.stderr.contains("cannot connect to PostgreSQL at 127.0.0.1:9"), "\(r.stderr)")
        #expect(!r.stderr.contains("s3cret") && !r.stdout.contains("s3cret"))
        let withPassword = try CLI.run("serve", "--store", "postgres://app:s3cret@127.0.0.1:9/recs", "--port", "0")
        #expect(withPassword.status != 0 && withPassword.stderr.contains("AFFINITY_PG_PASSWORD") && !withPassword.stderr.contains("s3cret"))
    }

    @Test func aSecondServerOnTheSameStoreIsRefused() throws {
        let (dir, model) = servedModel
        let store = dir + "/shared.sqlite"
        let first = try ServerProcess(arguments: ["--model", model, "--store", store], directory: dir)
        defer { _ = first.signal(SIGTERM) }
        let second = try CLI.run("serve", "--store", store, "--port", "0")
        #expect(second.status != 0 && second.stderr.contains("in use by another affinity process"), "\(second.stderr)")
    }

    @Test func aStalledRequestHeadIsTimedOut() throws {
        let (dir, model) = servedModel
        let server = try ServerProcess(arguments: ["--model", model, "--store", dir + "/idle.sqlite", "--idle-timeout", "1"], directory: dir)
        defer { _ = server.signal(SIGTERM) }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(server.port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        #expect(connected == 0)
        let partial = Array("GET /health HTTP/1.1\r\nHost: 127".utf8)
        _ = partial.withUnsafeBytes { write(fd, $0.baseAddress!, $0.count) }
        // Give up after 10 s: before the fix the server kept such a connection forever.
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let started = Date()
        var buffer = [UInt8](repeating: 0, count: 1024)
        var n = 1
        while n > 0 { n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) } }
        #expect(n == 0, "the server should close the connection (read returned \(n), errno \(errno))")
        #expect(Date().timeIntervalSince(started) < 8)
    }

    @Test func badValuesGetMessagesNotBacktraces() throws {
        let (dir, model) = servedModel
        var r = try CLI.run("recommend", "--model", model, "--user", "u1", "-k", "-1")
        #expect(r.status != 0 && r.stderr.contains("-k must be positive, got -1"), "\(r.stderr)")
        r = try CLI.run("train", "--split", dir + "/split", "--model", "ials", "--set", "factors=100000", "--out", dir + "/huge")
        #expect(r.status != 0 && r.stderr.contains("would need about"), "\(r.stderr)")
        r = try CLI.run("train", "--split", dir + "/split", "--model", "ials", "--set", "seed=-1", "--out", dir + "/neg")
        #expect(r.status != 0 && r.stderr.contains("expects a whole number from 0"), "\(r.stderr)")
        r = try CLI.run("train", "--split", dir + "/split", "--model", "ials", "--set", "solver=qr", "--out", dir + "/qr")
        #expect(r.status != 0 && r.stderr.contains("'qr' is not one of cholesky, cg"), "\(r.stderr)")
        // A cutoff of 10^9 is the full ranking, not a 3.7 TB allocation.
        r = try CLI.run("evaluate", "--model", model, "--split", dir + "/split", "--cutoffs", "10,1000000000", "--json")
        #expect(r.status == 0, "\(r.stderr)")
    }

    @Test func evaluatingASplitThatMatchesNothingFails() throws {
        let (dir, model) = servedModel
        let other = tempDir()
        let text = (0..<30).map { "stranger\($0 / 5)\tthing\($0 % 5)\n" }.joined()
        try Data(text.utf8).write(to: URL(fileURLWithPath: other + "/ratings.tsv"))
        var r = try CLI.run("split", "--input", other + "/ratings.tsv", "--all-ratings", "--min-user-positives", "1", "--strategy", "holdout", "--out", other + "/split")
        #expect(r.status == 0, "\(r.stderr)")
        r = try CLI.run("evaluate", "--model", model, "--split", other + "/split")
        #expect(r.status != 0 && r.stderr.contains("nothing to evaluate"), "\(r.stdout)\(r.stderr)")
        #expect(FileManager.default.fileExists(atPath: dir + "/split/train.tsv"))
    }

    /// Issue "As a newcomer would use it", item 3: a saved model evaluated on another split of the
    /// same data has seen that split's test rows.
    @Test func evaluatingOnAForeignSplitIsRefusedUnlessAllowed() throws {
        let (dir, model) = servedModel
        let other = tempDir() + "/split-seed7"
        var r = try CLI.run("split", "--input", dir + "/data/ratings.tsv", "--strategy", "holdout", "--seed", "7", "--out", other)
        #expect(r.status == 0, "\(r.stderr)")
        r = try CLI.run("evaluate", "--model", model, "--split", other)
        #expect(r.status != 0 && r.stderr.contains("rows of \(other) are in the model's training data"), "\(r.stderr)")
        #expect(r.stderr.contains("--allow-foreign-split"))
        r = try CLI.run("evaluate", "--model", model, "--split", other, "--allow-foreign-split")
        #expect(r.status == 0 && r.stderr.contains("metrics are inflated"), "\(r.stderr)")
        // Its own split passes without a word.
        r = try CLI.run("evaluate", "--model", model, "--split", dir + "/split")
        #expect(r.status == 0 && !r.stderr.contains("inflated"), "\(r.stderr)")
        r = try CLI.run("evaluate", "--model", model, "--split", dir + "/split", "--target", "valid")
        #expect(r.status != 0 && r.stderr.contains("no validation part"), "\(r.stderr)")
    }

    /// Issue "As a newcomer would use it", item 2: a model you can look into and take elsewhere.
    @Test func modelInfoExportAndVersion() throws {
        let (dir, model) = servedModel
        var r = try CLI.run("--version")
        #expect(r.status == 0 && r.stdout.hasPrefix("affinity ") && r.stdout.contains("model format 1"), "\(r.stdout)")
        r = try CLI.run("model", "info", model, "--json")
        #expect(r.status == 0, "\(r.stderr)")
        let info = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] ?? [:]
        #expect(info["type"] as? String == "ials" && info["embeddingDimension"] as? Int == 8)
        #expect((info["info"] as? [String: String])?["trained_on"] == dir + "/split")
        #expect((info["users"] as? Int ?? 0) > 0 && (info["files"] as? [String: Int])?["model.safetensors"] != nil)
        let out = tempDir() + "/export"
        r = try CLI.run("model", "export", model, "--what", "item-embeddings", "--out", out + "/items.fvecs")
        #expect(r.status == 0, "\(r.stderr)")
        let ids = try String(contentsOfFile: out + "/items.fvecs.ids", encoding: .utf8).split(separator: "\n")
        #expect(ids.count == info["items"] as? Int)
        // The exported vectors feed `index build` directly.
        r = try CLI.run("index", "build", "--vectors", out + "/items.fvecs", "--metric", "ip", "--spec", "Flat", "--out", out + "/items.idx")
        #expect(r.status == 0, "\(r.stderr)")
        r = try CLI.run("model", "export", model, "--what", "item-embeddings", "--out", out + "/items.fvecs")
        #expect(r.status != 0 && r.stderr.contains("--force"), "\(r.stderr)")
        r = try CLI.run("model", "export", model, "--what", "user-embeddings", "--out", out + "/users.tsv")
        let rows = try String(contentsOfFile: out + "/users.tsv", encoding: .utf8).split(separator: "\n")
        #expect(r.status == 0 && rows.count == info["users"] as? Int && rows[0].split(separator: "\t").count == 9, "\(r.stderr)")
        let pop = tempDir() + "/pop"
        r = try CLI.run("train", "--split", dir + "/split", "--model", "popularity", "--out", pop)
        r = try CLI.run("model", "export", pop, "--what", "item-embeddings", "--out", out + "/pop.npy")
        #expect(r.status != 0 && r.stderr.contains("has no embeddings"), "\(r.stderr)")
    }

    /// Issue "As a newcomer would use it", item 5 (in part): the CLI answers a history as the API does.
    @Test func recommendForAHistory() throws {
        let (_, model) = servedModel
        var r = try CLI.run("recommend", "--model", model, "--history", "i1,i2", "-k", "3", "--json")
        #expect(r.status == 0, "\(r.stderr)")
        let out = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] ?? [:]
        let items = (out["items"] as? [[String: Any]] ?? []).compactMap { $0["item"] as? String }
        #expect(items.count == 3 && !items.contains("i1") && !items.contains("i2"), "\(r.stdout)")
        r = try CLI.run("recommend", "--model", model, "--history", "i1,nope")
        #expect(r.status != 0 && r.stderr.contains("unknown item 'nope'"), "\(r.stderr)")
        r = try CLI.run("recommend", "--model", model, "--history", "")
        #expect(r.status != 0 && r.stderr.contains("--cold-start popular"), "\(r.stderr)")
        r = try CLI.run("recommend", "--model", model, "--history", "", "--cold-start", "popular", "-k", "2")
        #expect(r.status == 0, "\(r.stderr)")
        r = try CLI.run("recommend", "--model", model, "--user", "u1", "--exclude", "i1,not-an-item")
        #expect(r.status == 0 && r.stderr.contains("ignoring exclude IDs the model does not know: not-an-item"), "\(r.stderr)")
        r = try CLI.run("recommend", "--model", model)
        #expect(r.status != 0 && r.stderr.contains("exactly one of --user"), "\(r.stderr)")
    }

    /// Issue "As a newcomer would use it", item 4 (in part): progress reaches a log too (stderr is a
    /// pipe here), at most a line every few seconds; the demo reports each model as it finishes.
    @Test func progressShowsInLogs() throws {
        let (dir, _) = servedModel
        var r = try CLI.run("train", "--split", dir + "/split", "--model", "item2vec", "--set", "epochs=2", "--set", "dimension=8", "--out", tempDir() + "/i2v")
        #expect(r.status == 0 && r.stderr.contains("training item2vec on"), "\(r.stderr)")
        #expect(r.stderr.split(separator: "\n").count <= 4, "\(r.stderr)")
        // The same line for every model: epoch, rate of examples, elapsed; the last epoch always.
        #expect(r.stderr.contains("item2vec epoch 2/2 done: ") && r.stderr.contains("tokens/s"), "\(r.stderr)")
        r = try CLI.run("train", "--split", dir + "/split", "--model", "ials", "--set", "iterations=3", "--set", "factors=4", "--out", tempDir() + "/als")
        #expect(r.stderr.contains("ials epoch 3/3 done: ") && r.stderr.contains("rows/s"), "\(r.stderr)")
        r = try CLI.run("train", "--split", dir + "/split", "--model", "ease", "--out", tempDir() + "/ease")
        #expect(r.stderr.contains("ease done: ") && r.stderr.contains("positives/s"), "\(r.stderr)")
        r = try CLI.run("demo", "--data", dir + "/data/ratings.tsv", "--models", "popularity")
        #expect(r.status == 0 && r.stderr.contains("popularity: trained in"), "\(r.stderr)")
    }

    /// Issue "Hardening", defect 12: the BPR fold-in was seeded from `Array.hashValue`, which Swift
    /// randomises per process, so two processes folded the same history in differently.
    @Test func bprFoldInIsTheSameInEveryProcess() throws {
        let (dir, _) = servedModel
        let bpr = tempDir() + "/bpr"
        var r = try CLI.run("train", "--split", dir + "/split", "--model", "bpr", "--set", "factors=8", "--set", "epochs=5", "--out", bpr)
        #expect(r.status == 0, "\(r.stderr)")
        r = try CLI.run("recommend", "--model", bpr, "--history", "i1,i2,i3", "-k", "20", "--json")
        let again = try CLI.run("recommend", "--model", bpr, "--history", "i3,i1,i2", "-k", "20", "--json")
        #expect(r.status == 0 && again.status == 0, "\(r.stderr)\(again.stderr)")
        func scores(_ out: String) -> [String] {
            let json = try? JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any]
            return (json?["items"] as? [[String: Any]] ?? []).map { "\($0["item"] ?? "") \($0["score"] ?? "")" }
        }
        #expect(scores(r.stdout).count == 20)
        #expect(scores(r.stdout) == scores(again.stdout))
    }

    @Test func forceDoesNotDeleteAForeignFolder() throws {
        let (dir, _) = servedModel
        let foreign = tempDir()
        try Data("keep".utf8).write(to: URL(fileURLWithPath: foreign + "/notes.txt"))
        let r = try CLI.run("train", "--split", dir + "/split", "--model", "popularity", "--out", foreign, "--force")
        #expect(r.status != 0 && r.stderr.contains("not a folder this command wrote"), "\(r.stderr)")
        #expect(try String(contentsOfFile: foreign + "/notes.txt", encoding: .utf8) == "keep")
        let s = try CLI.run("data", "generate", "--out", foreign, "--force", "--users", "50", "--items", "20")
        #expect(s.status != 0)
        #expect(FileManager.default.fileExists(atPath: foreign + "/notes.txt"))
    }
}

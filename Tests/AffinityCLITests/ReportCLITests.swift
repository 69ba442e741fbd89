import Foundation
import Testing

/// Issue "Seeing the embeddings": `affinity report` end to end on a small synthetic split.
@Suite struct ReportCLITests {
    @Test func reportIsOneSelfContainedPageWithEverySection() throws {
        let (dir, _) = servedModel
        let saved = try CLI.run("evaluate", "--split", dir + "/split", "--model-type", "itemknn", "--json")
        #expect(saved.status == 0, "\(saved.stderr)")
        try saved.stdout.write(toFile: dir + "/itemknn.json", atomically: true, encoding: .utf8)
        let r = try CLI.run("report", "--split", dir + "/split", "--models", "popularity," + dir + "/ials", "--items", dir + "/data/items.tsv",
                            "--evaluations", dir + "/itemknn.json", "--out", dir + "/report.html", "--json", dir + "/report.json",
                            "--map-items", "100", "--probe", "i1,i2")
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.hasPrefix("report: \(dir)/report.html ("), "\(r.stdout)")
        #expect(r.stderr.contains("report: model 1 of 2, popularity: training with defaults"), "progress on stderr")
        let page = try String(contentsOfFile: dir + "/report.html", encoding: .utf8)
        for section in ["<h2>Comparison</h2>", "<h2>Per-user metrics</h2>", "<h2>Popularity bias</h2>", "<h2>Item maps (t-SNE)</h2>",
                        "<h2>Nearest neighbours</h2>", "<h2>Genre similarity</h2>"] {
            #expect(page.contains(section), "missing \(section)")
        }
        #expect(page.contains("itemknn (saved: itemknn.json"), "the saved evaluation is a row of the comparison")
        #expect(page.contains("popularity has no item embeddings"), "a model without embeddings gets a note")
        // Self-contained: no script, nothing fetched (the SVG namespace is a name, not a fetch).
        #expect(!page.contains("<script"))
        #expect(page.replacingOccurrences(of: "http://www.w3.org/2000/svg", with: "").range(of: "http") == nil)
        // One map (iALS), with a dot per item and its title on hover.
        #expect(page.components(separatedBy: "<circle").count - 1 >= 80)
        let numbers = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/report.json"))) as! [String: Any]
        let models = numbers["models"] as! [[String: Any]]
        #expect(models.map { $0["name"] as! String } == ["popularity", "ials"])
        #expect(models[0]["map"] == nil && models[1]["map"] != nil)
        let map = models[1]["map"] as! [String: Any]
        #expect((map["trustworthiness"] as! Double) > 0.5)
    }

    @Test func aMapAboveItsLimitIsASeededSampleAndSaysSo() throws {
        let (dir, _) = servedModel
        func sampled(_ name: String) throws -> [String] {
            let r = try CLI.run("report", "--split", dir + "/split", "--models", dir + "/ials", "--out", dir + "/\(name).html",
                                "--json", dir + "/\(name).json", "--map-items", "50", "--perplexity", "5")
            #expect(r.status == 0, "\(r.stderr)")
            let page = try String(contentsOfFile: dir + "/\(name).html", encoding: .utf8)
            #expect(page.contains("a seeded sample of 50 of 80 items"))
            let numbers = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/\(name).json"))) as! [String: Any]
            let map = (numbers["models"] as! [[String: Any]])[0]["map"] as! [String: Any]
            #expect(map["sampledFrom"] as? Int == 80)
            return map["items"] as! [String]
        }
        let first = try sampled("sampled-a")
        #expect(first.count == 50)
        #expect(try sampled("sampled-b") == first, "the same seed draws the same sample")
        let bad = try CLI.run("report", "--split", dir + "/split", "--models", "no-such-model", "--out", dir + "/x.html")
        #expect(bad.status != 0 && bad.stderr.contains("'no-such-model' is neither a model folder nor a model type"), "\(bad.stderr)")
        let small = try CLI.run("report", "--split", dir + "/split", "--models", "ials", "--out", dir + "/x.html", "--map-items", "5")
        #expect(small.status != 0 && small.stderr.contains("--map-items must be at least 10"), "\(small.stderr)")
        let missing = try CLI.run("report", "--split", dir + "/split", "--models", "popularity", "--out", dir + "/x.html", "--probe", "no-such-item")
        #expect(missing.status != 0 && missing.stderr.contains("--probe: item 'no-such-item' is not among"), "\(missing.stderr)")
    }

    /// A model over fewer items than the split (trained on the split's train without one item) is
    /// aligned by item ID, and the report says how many of the split's items it left out.
    @Test func aModelOverFewerItemsIsAlignedAndTheReportSaysSo() throws {
        let (dir, _) = servedModel
        let reduced = dir + "/split-reduced"
        try? FileManager.default.removeItem(atPath: reduced)
        try FileManager.default.copyItem(atPath: dir + "/split", toPath: reduced)
        let lines = try String(contentsOfFile: reduced + "/train.tsv", encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
        let dropped = String(lines[1].split(separator: "\t")[1])
        let kept = lines.enumerated().filter { n, line in n == 0 || line.isEmpty || line.split(separator: "\t")[1] != Substring(dropped) }.map(\.element)
        try kept.joined(separator: "\n").write(toFile: reduced + "/train.tsv", atomically: true, encoding: .utf8)
        let trained = try CLI.run("train", "--split", reduced, "--model", "ials", "--set", "factors=8", "--set", "iterations=3", "--out", dir + "/ials-reduced")
        #expect(trained.status == 0, "\(trained.stderr)")
        let r = try CLI.run("report", "--split", dir + "/split", "--models", dir + "/ials-reduced", "--out", dir + "/aligned.html",
                            "--perplexity", "5")
        #expect(r.status == 0, "\(r.stderr)")
        let page = try String(contentsOfFile: dir + "/aligned.html", encoding: .utf8)
        #expect(page.contains("1 of the split&#39;s 80 training items are unknown to this model"), "item \(dropped)")
    }
}

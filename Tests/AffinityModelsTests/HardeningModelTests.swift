import AffinityData
import AffinityLinalg
import Foundation
import Testing

@testable import AffinityModels
import AffinityTestSupport
import AffinityTestScratch

/// Regression tests of the issue "Hardening" for models and model files.
@Suite struct HardeningModelTests {
    func folder() -> String {
        let path = TestScratch.path("affinity-hm")
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    func trained(_ model: any PersistableRecommender, _ x: SparseMatrix) -> TrainedModel {
        TrainedModel(model: model, users: IDVocabulary((0..<x.rowCount).map { "u\($0)" }), items: IDVocabulary((0..<x.columnCount).map { "i\($0)" }))
    }

    /// Rewrites a saved model's tensors and metadata.
    func rewrite(_ path: String, _ change: (inout SafeTensorsFile) -> Void) throws {
        let file = path + "/model.safetensors"
        var tensors = try SafeTensorsFile.read(path: file)
        change(&tensors)
        try Data(try tensors.encoded()).write(to: URL(fileURLWithPath: file))
    }

    /// Concurrent fold-ins of a history-input two-tower (what the server does for many requests at
    /// once) give exactly the sequential results. Before the fix, layers stored per-call caches in
    /// the instance: this raced (ThreadSanitizer reported it; without it, wrong rows or a crash).
    @Test func concurrentTwoTowerFoldInsMatchSequentialOnes() throws {
        let x = RecommenderConformance.randomInteractions()
        let model = try TwoTower.fit(x, settings: smallTower.merging(["userInput": "history", "epochs": "3"]) { _, b in b })
        let histories = (0..<64).map { u in model.seenItems(ofUser: u % x.rowCount) + [u % x.columnCount] }
        let sequential = histories.map { model.scores(forHistory: $0) }
        let runs = histories.count * 4
        let results = ResultBox(count: runs)
        DispatchQueue.concurrentPerform(iterations: runs) { n in
            results.set(n, model.scores(forHistory: histories[n % histories.count]))
        }
        for n in 0..<runs { #expect(results.get(n) == sequential[n % histories.count]) }
    }

    /// Each concurrent run's answer, by run.
    final class ResultBox: @unchecked Sendable {
        private let lock = NSLock()
        private var values: [[Float]]
        init(count: Int) { values = Array(repeating: [], count: count) }
        func set(_ i: Int, _ v: [Float]) { lock.lock(); defer { lock.unlock() }; values[i] = v }
        func get(_ i: Int) -> [Float] { lock.lock(); defer { lock.unlock() }; return values[i] }
    }

    @Test func bprFoldInIsSeededByTheItemsNotTheProcessHash() throws {
        let x = RecommenderConformance.randomInteractions()
        let model = try BPR.fit(x, settings: ["factors": "4", "epochs": "3", "threads": "1"])
        // The same history in any order gives the same vector (the items, sorted, seed it); that it
        // is the same in every process is checked across two processes in
        // `HardeningCLITests.bprFoldInIsTheSameInEveryProcess`.
        #expect(model.userFactors(history: [3, 1, 2]) == model.userFactors(history: [1, 2, 3, 3]))
        let rerun = try BPR.fit(x, settings: ["factors": "4", "epochs": "3", "threads": "1"])
        #expect(rerun.userFactors(history: [1, 2, 3]) == model.userFactors(history: [1, 2, 3]))
    }

    @Test func weightsWithNaNAreRefusedByTensorName() throws {
        let x = RecommenderConformance.randomInteractions()
        let path = folder() + "/ials"
        try trained(try ALS.fit(x, settings: ["factors": "4", "iterations": "2"]), x).save(to: path)
        try rewrite(path) { file in
            var t = file.tensors["item_factors"]!
            if case .float32(var v) = t.storage { v[3] = .nan; t.storage = .float32(v) }
            file.tensors["item_factors"] = t
        }
        #expect { try TrainedModel.load(from: path) } throws: { "\($0)".contains("tensor 'item_factors' holds NaN or infinity") }
    }

    @Test func aCraftedTwoTowerDimensionIsRefusedBeforeAllocating() throws {
        let x = RecommenderConformance.randomInteractions()
        let path = folder() + "/tt"
        try trained(try TwoTower.fit(x, settings: smallTower.merging(["epochs": "1"]) { _, b in b }), x).save(to: path)
        try rewrite(path) { file in
            file.metadata["config"] = file.metadata["config"]!.replacingOccurrences(of: "\"dimension\":8", with: "\"dimension\":1000000000000")
        }
        #expect { try TrainedModel.load(from: path) } throws: { "\($0)".contains("dimension 1000000000000") }
    }

    @Test func theTrainingMatrixMustMatchTheVocabularyBeforeAModelIsBuilt() throws {
        let x = RecommenderConformance.randomInteractions()
        let path = folder() + "/pop"
        try trained(try Popularity.fit(x), x).save(to: path)
        // An empty matrix claiming Int64.max items: before, popularity counted its columns (a trap).
        try rewrite(path) { file in
            file.tensors = SparseMatrix(rowCount: 0, columnCount: 0, rows: [], cols: []).tensors(prefix: "interactions")
            file.tensors["interactions.shape"] = .int64([0, Int64.max])
        }
        #expect { try TrainedModel.load(from: path) } throws: { "\($0)".contains("does not match") }
    }

    @Test func twoTowerSideTablesAreCheckedAgainstTheMatrix() throws {
        let x = RecommenderConformance.randomInteractions()
        var c = try TwoTower.Configuration().applying(smallTower.merging(["epochs": "1", "itemGenres": "true"]) { _, b in b })
        c.threads = 1
        let genres = (0..<x.columnCount).map { [$0 % 3] }
        let model = try TwoTower.fit(x, configuration: c, sideInformation: TwoTower.SideInformation(itemGenres: genres), progress: nil)
        let path = folder() + "/tt"
        try trained(model, x).save(to: path)
        #expect(try TrainedModel.load(from: path).modelType == "two-tower")
        // Fewer genre rows than items: before, inference indexed past them.
        try rewrite(path) { file in
            let short = SparseMatrix(rowCount: 1, columnCount: 3, rows: [0], cols: [1])
            for (k, v) in short.tensors(prefix: "item_genres") { file.tensors[k] = v }
        }
        #expect { try TrainedModel.load(from: path) } throws: { "\($0)".contains("item_genres has 1 rows") }
        // A genre id of 2^31 - 2 would size a table of 2^31 rows from a file of a few KB.
        try rewrite(path) { file in
            let huge = SparseMatrix(rowCount: x.columnCount, columnCount: Int(Int32.max), rows: (0..<Int32(x.columnCount)).map { $0 },
                                    cols: [Int32](repeating: Int32.max - 1, count: x.columnCount))
            for (k, v) in huge.tensors(prefix: "item_genres") { file.tensors[k] = v }
        }
        #expect { try TrainedModel.load(from: path) } throws: { "\($0)".contains("weights; the file holds") }
    }

    @Test func settingErrorsNameTheSettingAndWhatItTakes() throws {
        #expect(try ALS.Configuration().applying(["seed": "18446744073709551615"]).seed == UInt64.max)
        #expect(try ALS.Configuration().applying(["seed": "9007199254740993"]).seed == 9_007_199_254_740_993)
        #expect { try ALS.Configuration().applying(["seed": "-1"]) } throws: { "\($0)".contains("seed': expects a whole number from 0 to") }
        #expect { try ALS.Configuration().applying(["solver": "qr"]) } throws: { "\($0)".contains("solver': 'qr' is not one of cholesky, cg") }
        #expect { try ALS.Configuration().applying(["factors": "2.5"]) } throws: { "\($0)".contains("factors': expects a whole number, got '2.5'") }
        #expect { try TwoTower.Configuration().applying(["loss": "hinge"]) } throws: { "\($0)".contains("softmax, triplet") }
    }

    @Test func absurdSizesAreRefusedWithAnEstimateBeforeAllocating() throws {
        let x = RecommenderConformance.randomInteractions()
        // 10^5 factors: the f x f systems alone are 40 GB each. Before the fix: a crash while allocating.
        #expect { try ALS.fit(x, settings: ["factors": "100000"]) } throws: { "\($0)".contains("factors=100000") && "\($0)".contains("would need about") }
        #expect { try BPR.fit(x, settings: ["factors": "10000000000"]) } throws: { "\($0)".contains("would need about") }
        #expect { try TwoTower.fit(x, settings: ["dimension": "10000000000"]) } throws: { "\($0)".contains("would need about") }
        #expect { try Item2Vec.fit(x, configuration: try Item2Vec.Configuration().applying(["dimension": "100000000000"])) } throws: { "\($0)".contains("would need about") }
    }

    @Test func saveReplacesOnlyAModelFolder() throws {
        let x = RecommenderConformance.randomInteractions()
        let model = trained(try Popularity.fit(x), x)
        let dir = folder()
        // A folder of other files: --force (overwrite) must not delete it. Before the fix it did.
        try Data("keep me".utf8).write(to: URL(fileURLWithPath: dir + "/notes.txt"))
        #expect { try model.save(to: dir, overwrite: true) } throws: { "\($0)".contains("not a folder this command wrote") }
        #expect(try String(contentsOfFile: dir + "/notes.txt", encoding: .utf8) == "keep me")
        // A model folder is replaced (atomically), an empty one too.
        try model.save(to: dir + "/m")
        #expect(TrainedModel.isModelFolder(dir + "/m"))
        try trained(try ItemKNN.fit(x), x).save(to: dir + "/m", overwrite: true)
        #expect(try TrainedModel.load(from: dir + "/m").modelType == "itemknn")
        try FileManager.default.createDirectory(atPath: dir + "/empty", withIntermediateDirectories: false)
        try model.save(to: dir + "/empty", overwrite: true)
        #expect(TrainedModel.isModelFolder(dir + "/empty"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted() == ["empty", "m", "notes.txt"])
    }
}

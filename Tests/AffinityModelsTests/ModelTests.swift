import Foundation
import Testing
import AffinityData
import AffinityLinalg
@testable import AffinityModels
import AffinityTestSupport
import AffinityTestScratch

@Suite struct ConformanceTests {
    @Test func popularity() throws {
        try RecommenderConformance.check { try Popularity.fit($0) }
    }

    @Test func itemKNN() throws {
        try RecommenderConformance.check { try ItemKNN.fit($0) }
    }

    @Test func itemKNNWithFewNeighborsAndShrink() throws {
        try RecommenderConformance.check { try ItemKNN.fit($0, settings: ["neighbors": "3", "shrink": "2"]) }
    }
}

@Suite struct ItemKNNTests {
    /// Dense reference: cosine of binary columns, top-k per row (stable sort, self excluded), scores X·W.
    func reference(_ x: SparseMatrix, k: Int, shrink: Double) -> [[Double]] {
        let n = x.columnCount
        var dense = [[Double]](repeating: [Double](repeating: 0, count: n), count: x.rowCount)
        for u in 0..<x.rowCount { for i in x.row(u) { dense[u][Int(i)] = 1 } }
        var w = [[Double]](repeating: [Double](repeating: 0, count: n), count: n)
        for i in 0..<n {
            var sims = [Double](repeating: 0, count: n)
            for j in 0..<n where j != i {
                var co = 0.0, ni = 0.0, nj = 0.0
                for u in 0..<x.rowCount { co += dense[u][i] * dense[u][j]; ni += dense[u][i]; nj += dense[u][j] }
                let d = ni.squareRoot() * nj.squareRoot() + shrink
                sims[j] = d > 0 ? co / d : 0
            }
            let keep = (0..<n).filter { $0 != i }.sorted { sims[$0] != sims[$1] ? sims[$0] > sims[$1] : $0 < $1 }.prefix(k)
            for j in keep { w[i][j] = sims[j] }
        }
        return (0..<x.rowCount).map { u in (0..<n).map { j in (0..<n).reduce(0.0) { $0 + dense[u][$1] * w[$1][j] } } }
    }

    @Test func matchesDenseReference() throws {
        for (k, shrink) in [(3, 0.0), (5, 1.5), (100, 0.0)] {
            let x = RecommenderConformance.randomInteractions(users: 25, items: 17, perUser: 5, seed: UInt64(k))
            let model = try ItemKNN.fit(x, settings: ["neighbors": "\(k)", "shrink": "\(shrink)", "threads": "2"])
            let expected = reference(x, k: k, shrink: shrink)
            for u in 0..<x.rowCount {
                let ours = model.scores(forUser: u)
                for j in 0..<x.columnCount {
                    #expect(abs(Double(ours[j]) - expected[u][j]) < 1e-5, "k=\(k) user \(u) item \(j)")
                }
                #expect(model.scores(forHistory: model.seenItems(ofUser: u)) == ours)
            }
        }
    }

    @Test func similarItemsAreTheNeighbourRow() throws {
        let model = try ItemKNN.fit(RecommenderConformance.checkerboard())
        let similar = try model.similarItems(to: 1, k: 10)
        // Items 0..<6 co-occur only with each other.
        #expect(Set(similar.map(\.index)) == [0, 2, 3, 4, 5])
    }
}

@Suite struct PersistenceTests {
    func trained(_ name: String) throws -> TrainedModel {
        if name == VQRec.modelType {
            // The quantiser needs 256 items with text.
            let data = VQRecTests.ring(users: 30).0
            let model = try VQRec.fit(data, configuration: try VQRecTests.settings(["epochs": "2"]), progress: nil)
            return TrainedModel(model: model, users: IDVocabulary((0..<data.userCount).map { "user\($0)" }),
                                items: IDVocabulary((0..<data.itemCount).map { "item\($0)" }),
                                catalog: ItemCatalog(titles: ["item0": "Zero"]), info: ["note": "test"])
        }
        let x = RecommenderConformance.randomInteractions()
        let model = name == SASRec.modelType
            ? try SASRec.fit(TrainingData(interactions: x), configuration: SASRec.Configuration().applying(["epochs": "2", "dimension": "8", "maxLength": "6", "threads": "1"]),
                             progress: nil, requireTimeOrder: false)
            : try ModelRegistry.fit(name, data: withItemVectors(TrainingData(interactions: x)), settings: [:])
        return TrainedModel(model: model, users: IDVocabulary((0..<x.rowCount).map { "user\($0)" }),
                            items: IDVocabulary((0..<x.columnCount).map { "item\($0)" }),
                            catalog: ItemCatalog(titles: ["item0": "Zero"]), info: ["note": "test"])
    }

    func folder() -> String {
        TestScratch.path("affinity-model")
    }

    @Test(arguments: ModelRegistry.names)
    func roundTripGivesIdenticalScores(name: String) throws {
        let original = try trained(name)
        let path = folder()
        try original.save(to: path)
        let loaded = try TrainedModel.load(from: path)
        #expect(loaded.modelType == name)
        #expect(loaded.users == original.users && loaded.items == original.items)
        #expect(loaded.catalog?.titles["item0"] == "Zero" && loaded.info["note"] == "test")
        for u in 0..<original.users.count {
            #expect(loaded.model.scores(forUser: u) == original.model.scores(forUser: u))
        }
    }

    @Test func badFilesAreRejectedNamingFileAndReason() throws {
        let path = folder()
        try trained("itemknn").save(to: path)
        let tensorPath = path + "/model.safetensors"
        let good = try Data(contentsOf: URL(fileURLWithPath: tensorPath))

        // Another format version.
        var file = try SafeTensorsFile.read(path: tensorPath)
        file.metadata["format_version"] = "99"
        try Data(try file.encoded()).write(to: URL(fileURLWithPath: tensorPath))
        #expect(message { _ = try TrainedModel.load(from: path) } == "\(tensorPath): model format version 99; this build of affinity reads version 1 (retrain or convert the model)")

        // Truncated.
        try good.prefix(good.count - 3).write(to: URL(fileURLWithPath: tensorPath))
        #expect(message { _ = try TrainedModel.load(from: path) }?.hasPrefix("\(tensorPath): corrupt model:") == true)

        // A tensor removed.
        file.metadata["format_version"] = "1"
        file.tensors["neighbors.columns"] = nil
        try Data(try file.encoded()).write(to: URL(fileURLWithPath: tensorPath))
        #expect(message { _ = try TrainedModel.load(from: path) }?.contains("tensor 'neighbors.columns' is missing") == true)

        // Vocabulary of the wrong size.
        try good.write(to: URL(fileURLWithPath: tensorPath))
        try Data(#"{"format_version":1,"users":["a"],"items":["b"]}"#.utf8).write(to: URL(fileURLWithPath: path + "/vocabulary.json"))
        #expect(message { _ = try TrainedModel.load(from: path) }?.contains("does not match the 1 users and 1 items of vocabulary.json") == true)

        #expect(message { _ = try TrainedModel.load(from: path + "/nope") } == "\(path)/nope: not an Affinity model: no such model folder")
    }

    @Test func rawIDQueriesAndColdStart() throws {
        let model = try trained("itemknn")
        let (list, fallback) = try model.recommend(user: "user3", k: 4)
        #expect(list.count == 4 && !fallback)
        #expect(throws: ModelError.unknownUser("ghost")) { try model.recommend(user: "ghost", k: 3) }
        let (popular, used) = try model.recommend(user: "ghost", k: 3, excluding: ["item0"], fallbackToPopular: true)
        #expect(used && popular.count == 3 && !popular.contains { $0.index == 0 })
        let counts = model.model.interactions.columnCounts()
        #expect(popular.map { counts[$0.index] } == popular.map { counts[$0.index] }.sorted(by: >))
        #expect(throws: ModelError.unknownItem("x")) { try model.similar(item: "x", k: 3) }
        #expect(throws: ModelError.invalidK(0)) { try model.similar(item: "item1", k: 0) }
    }
}

@Suite struct ConfigurationTests {
    @Test func settingsAreAppliedAndChecked() throws {
        let c = try ItemKNN.Configuration().applying(["neighbors": "7", "shrink": "0.5"])
        #expect(c.neighbors == 7 && c.shrink == 0.5)
        #expect(message { _ = try ItemKNN.Configuration().applying(["k": "7"]) } == "setting 'k': unknown; known settings: neighbors, shrink, threads")
        #expect(message { _ = try ItemKNN.Configuration().applying(["neighbors": "0"]) } == "setting 'neighbors': must be positive, got 0")
        #expect(message { _ = try ItemKNN.Configuration().applying(["neighbors": "many"]) }?.contains("expected a number") == true)
        #expect(message { _ = try ItemKNN.Configuration().applying(["neighbors": "2.5"]) }?.contains("expects a whole number") == true)
        #expect(message { _ = try Popularity.Configuration().applying(["x": "1"]) } == "setting 'x': this model has no settings")
        #expect(throws: ModelError.self) { try ModelRegistry.fit("nope", interactions: RecommenderConformance.checkerboard(), settings: [:]) }
    }
}

func message(_ body: () throws -> Void) -> String? {
    do { try body(); return nil } catch { return "\(error)" }
}

/// Training data with random item vectors beside it, so that models needing item content
/// (text-knn) fit wherever every registered model is tried.
func withItemVectors(_ data: TrainingData, dimension: Int = 8, seed: UInt64 = 17) -> TrainingData {
    var d = data
    d.itemVectors = Matrix.random(rows: data.itemCount, columns: dimension, seed: seed)
    return d
}

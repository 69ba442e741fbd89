import AffinityData
import AffinityLinalg
import Foundation
import Testing

@testable import AffinityModels
import AffinityTestSupport
import AffinityTestScratch

/// Small settings so that debug-build tests stay fast.
let smallTower: [String: String] = ["dimension": "8", "hidden": "16", "batchSize": "16", "epochs": "40", "learningRate": "0.01", "threads": "1"]

@Suite struct TwoTowerTests {
    @Test func conformance() throws {
        try RecommenderConformance.check { try TwoTower.fit($0, settings: smallTower) }
    }

    @Test(arguments: ["in-batch+dynamic", "in-batch+semi-hard", "in-batch+random"])
    func hardNegativeModesTrain(negatives: String) throws {
        let x = RecommenderConformance.randomInteractions()
        let model = try TwoTower.fit(x, settings: smallTower.merging(["negatives": negatives, "refreshEvery": "3", "epochs": "5"]) { _, b in b })
        #expect(model.embeddings.itemFactors.values.allSatisfy { $0.isFinite })
        #expect(try model.recommend(user: 0, k: 5).count == 5)
    }

    @Test func tripletHistoryInputAndFoldIn() throws {
        let x = RecommenderConformance.randomInteractions()
        for settings in [["loss": "triplet", "margin": "0.3"], ["userInput": "history"], ["userInput": "id+history", "score": "dot"]] {
            let model = try TwoTower.fit(x, settings: smallTower.merging(settings.merging(["epochs": "5"]) { _, b in b }) { _, b in b })
            let history = model.seenItems(ofUser: 3)
            let folded = model.scores(forHistory: history)
            #expect(folded.count == model.itemCount && folded.allSatisfy { $0.isFinite }, "\(settings)")
            if settings["userInput"] != nil {
                // The history tower gives a known user's own history (nearly) the trained user's ranking;
                // with an ID part the unknown-user vector differs, so only check the history-only tower.
                if settings["userInput"] == "history" {
                    let trained = try model.recommend(user: 3, k: 5).map(\.index)
                    let viaHistory = try model.recommend(history: history, k: 5).map(\.index)
                    #expect(trained == viaHistory)
                }
            }
        }
    }

    @Test func embeddingsScoreAndPersist() throws {
        let x = RecommenderConformance.randomInteractions()
        let model = try TwoTower.fit(x, settings: smallTower.merging(["epochs": "3", "validationUsers": "10", "patience": "2"]) { _, b in b })
        let e = model.itemEmbeddings, u = model.userEmbedding(user: 2), s = model.scores(forUser: 2)
        for i in 0..<model.itemCount {
            let dot = (0..<e.columns).reduce(Float(0)) { $0 + u[$1] * e[i, $1] }
            #expect(abs(dot - s[i]) < 1e-5)
        }
        // Cosine score: unit-length outputs.
        let norm = (0..<e.columns).reduce(Float(0)) { $0 + e[0, $1] * e[0, $1] }.squareRoot()
        #expect(abs(norm - 1) < 1e-4)
        let dir = TestScratch.path("affinity-tt")
        let vocab = { (n: Int, p: String) in IDVocabulary((0..<n).map { "\(p)\($0)" }) }
        try TrainedModel(model: model, users: vocab(model.userCount, "u"), items: vocab(model.itemCount, "i")).save(to: dir)
        let loaded = try TrainedModel.load(from: dir).model as! TwoTower
        #expect(loaded.scores(forUser: 2) == s)
        #expect(loaded.configuration == model.configuration)
    }

    /// Side information: item genres, dense item vectors and user categories all reach the towers,
    /// survive a save and load, and are required when their settings ask for them.
    @Test func sideInformationFeaturesTrainAndPersist() throws {
        let x = RecommenderConformance.randomInteractions()
        let side = TwoTower.SideInformation(itemGenres: (0..<x.columnCount).map { [$0 % 3] },
                                            itemVectors: Matrix.random(rows: x.columnCount, columns: 5, seed: 4),
                                            userCategories: (0..<x.rowCount).map { [$0 % 2, 2 + $0 % 4] })
        let c = try TwoTower.Configuration().applying(smallTower.merging(["epochs": "3", "itemGenres": "true", "itemVectors": "true",
                                                                          "userFeatures": "true", "negatives": "in-batch+static"]) { _, b in b })
        let model = try TwoTower.fit(x, configuration: c, sideInformation: side, progress: nil)
        let names = Set(model.network.parameters.map(\.name))
        #expect(names.isSuperset(of: ["item.genres", "item.vectors.weight", "user.features"]))
        let dir = TestScratch.path("affinity-tt-side")
        let vocab = { (n: Int, p: String) in IDVocabulary((0..<n).map { "\(p)\($0)" }) }
        try TrainedModel(model: model, users: vocab(model.userCount, "u"), items: vocab(model.itemCount, "i")).save(to: dir)
        let loaded = try TrainedModel.load(from: dir).model as! TwoTower
        #expect(loaded.scores(forUser: 1) == model.scores(forUser: 1))
        #expect(loaded.itemEmbeddings == model.itemEmbeddings)
        for setting in ["itemVectors", "userFeatures", "itemGenres"] {
            let needs = try TwoTower.Configuration().applying([setting: "true"])
            #expect(throws: ModelError.self) { try TwoTower.fit(x, configuration: needs, progress: nil) }
        }
    }

    /// Cold start: an item with no training interaction is placed by its content alone (its ID
    /// embedding is never read, so changing it changes nothing), lands next to the warm item with
    /// the same content, and survives a save and load; ID dropout needs content to place items by.
    @Test func coldItemsArePlacedByContentAlone() throws {
        let warm = RecommenderConformance.randomInteractions()
        let n = warm.columnCount
        // One extra column with no interaction: item n, whose vector copies item 0's.
        let x = try SparseMatrix(rowCount: warm.rowCount, columnCount: n + 1, rowPointers: warm.rowPointers, columns: warm.columns, values: warm.values)
        var vectors = Matrix.random(rows: n + 1, columns: 5, seed: 4)
        for k in 0..<5 { vectors[n, k] = vectors[0, k] }
        let c = try TwoTower.Configuration().applying(smallTower.merging(["epochs": "5", "itemVectors": "true", "idDropout": "1e-9"]) { _, b in b })
        let model = try TwoTower.fit(x, configuration: c, sideInformation: TwoTower.SideInformation(itemVectors: vectors), progress: nil)
        #expect(model.network.coldItems == [Bool](repeating: false, count: n) + [true])
        let before = model.network.itemVectors([n])
        let table = model.network.itemIDs.table
        for k in 0..<table.value.columns { table.value[n, k] = 100 }
        #expect(model.network.itemVectors([n]) == before, "a cold item's ID embedding is not read")
        #expect(before.values.allSatisfy { $0.isFinite })
        let dir = TestScratch.path("affinity-tt-cold")
        let vocab = { (n: Int, p: String) in IDVocabulary((0..<n).map { "\(p)\($0)" }) }
        try TrainedModel(model: model, users: vocab(model.userCount, "u"), items: vocab(model.itemCount, "i")).save(to: dir)
        let loaded = try TrainedModel.load(from: dir).model as! TwoTower
        #expect(loaded.network.coldItems.last == true && loaded.itemEmbeddings == model.itemEmbeddings)
        #expect(throws: ModelError.self) { try TwoTower.Configuration().applying(["idDropout": "0.5"]).validate() }
        #expect(throws: ModelError.self) { try TwoTower.Configuration().applying(["idDropout": "1", "itemVectors": "true"]).validate() }
    }

    @Test func sameSeedSameModel() throws {
        let x = RecommenderConformance.randomInteractions()
        let settings = smallTower.merging(["epochs": "3", "threads": "2"]) { _, b in b }
        #expect(try TwoTower.fit(x, settings: settings).embeddings.itemFactors == TwoTower.fit(x, settings: settings).embeddings.itemFactors)
    }

    /// Two threads run the towers side by side: the model is the one a single thread trains, bit for
    /// bit, with the item tower's ID dropout drawing from the seed. (This model's products are too
    /// small to be split; `sgemmGivesTheSameBitsOnOneAndTwoThreads` covers split products.)
    @Test func twoThreadsTrainTheSingleThreadModel() throws {
        let x = RecommenderConformance.randomInteractions()
        let base = smallTower.merging(["epochs": "2", "idDropout": "0.2", "itemGenres": "true", "batchSize": "64"]) { _, b in b }
        let side = TwoTower.SideInformation(itemGenres: (0..<x.columnCount).map { [$0 % 3] })
        func fit(_ threads: String) throws -> TwoTower {
            try TwoTower.fit(x, configuration: TwoTower.Configuration().applying(base.merging(["threads": threads]) { _, b in b }),
                             sideInformation: side, progress: nil)
        }
        let one = try fit("1"), two = try fit("2"), four = try fit("4")   // four: each tower's kernels get two threads
        #expect(one.embeddings.itemFactors == two.embeddings.itemFactors && one.embeddings.userFactors == two.embeddings.userFactors)
        #expect(one.embeddings.itemFactors == four.embeddings.itemFactors && one.embeddings.userFactors == four.embeddings.userFactors)
    }

    @Test func badSettingsAreNamed() {
        #expect(throws: ModelError.self) { try TwoTower.fit(RecommenderConformance.checkerboard(), settings: ["negatives": "in-batch+psychic"]) }
        #expect(throws: ModelError.self) { try TwoTower.fit(RecommenderConformance.checkerboard(), settings: ["temperature": "0"]) }
    }
}

@Suite struct Item2VecTests {
    @Test func conformance() throws {
        try RecommenderConformance.check { try Item2Vec.fit($0, settings: ["dimension": "8", "epochs": "30", "window": "5", "negatives": "5", "subsample": "0"]) }
    }

    /// Several threads' output-vector copies merged: each copy's change since the last merge
    /// counted once, and every copy left equal to the merged vectors.
    @Test func mergeCountsEachCopysChangeOnce() {
        // Long enough to be split between two threads (the grain is at least 4,096).
        let count = 3 * 4096 + 5
        var shared = (0..<count).map { Float($0 % 7) }
        var copies = shared + shared
        copies[0] += 0.5; copies[count + 1] -= 1; copies[count + 2] += 0.25; copies[count - 1] += 2; copies[2 * count - 1] += 3
        var want = shared
        want[0] += 0.5; want[1] -= 1; want[2] += 0.25; want[count - 1] += 5
        shared.withUnsafeMutableBufferPointer { s in copies.withUnsafeMutableBufferPointer { c in
            Item2Vec.mergeCopies(shared: SharedMutableBuffer(s), copies: SharedMutableBuffer(c), count: count, threads: 2)
        } }
        #expect(shared == want)
        #expect(copies == want + want)
    }

    @Test func sameSeedSameModelAndClusteredNeighbours() throws {
        // Two groups of items that never co-occur: an item's nearest neighbours come from its own group.
        var rows: [Int32] = [], cols: [Int32] = []
        var g = SeededGenerator(seed: 1)
        for u in 0..<60 {
            let base = u % 2 == 0 ? 0 : 10
            for i in Set((0..<6).map { _ in base + g.next(below: 10) }) { rows.append(Int32(u)); cols.append(Int32(i)) }
        }
        let x = SparseMatrix(rowCount: 60, columnCount: 20, rows: rows, cols: cols)
        let settings = ["dimension": "16", "epochs": "20", "window": "5", "negatives": "5", "subsample": "0", "threads": "1"]
        let a = try Item2Vec.fit(x, settings: settings), b = try Item2Vec.fit(x, settings: settings)
        #expect(a.factors.itemFactors == b.factors.itemFactors)
        let similar = try a.similarItems(to: 3, k: 5).map(\.index)
        #expect(similar.allSatisfy { $0 < 10 }, "\(similar)")
        // Several threads (lock-free shards as word2vec, output-vector copies merged): not bit-reproducible, the same structure learned.
        for threads in ["2", "3"] {
            var parallel = settings
            parallel["threads"] = threads
            let m = try Item2Vec.fit(x, settings: parallel)
            for item in [3, 14] {
                let neighbours = try m.similarItems(to: item, k: 5).map(\.index)
                #expect(neighbours.allSatisfy { ($0 < 10) == (item < 10) }, "threads \(threads), item \(item): \(neighbours)")
            }
        }
    }
}

import AffinityANN
import AffinityData
import AffinityLinalg
import AffinityModels
import Foundation
import Testing
@testable import AffinityPipeline
import AffinityTestScratch

/// Issue "Retrieve -> rank -> re-rank" (in part): retrievers merged, ranked by fusion, re-ranked,
/// and a pipeline file that names what is wrong with it.
@Suite struct PipelineTests {
    let x = clusteredMatrix()

    func serving(_ model: any PersistableRecommender) throws -> ServingModel {
        try ServingModel(trained: trained(model), buildIndex: false)
    }

    @Test func oneRetrieverWithoutReRankersIsThatModelsList() throws {
        let ease = try serving(try EASE.fit(x, settings: ["lambda": "10"]))
        let pipeline = Pipeline(retrievers: [(ModelRetriever(name: "ease", model: ease), 30)],
                                ranker: ReciprocalRankFusion(weights: [1]), rerankers: ReRankChain([]), items: ease.trained.items)
        for u in [0, 5, 40] {
            let seen = ease.trainingHistory(ofUser: u)
            let direct = try ease.recommend(.user(u), k: 10, excluded: seen).items.map(\.item)
            let through = try pipeline.recommend(UserContext(subject: .user(u), history: seen, excluded: seen), k: 10).map(\.item)
            #expect(through == direct)
        }
    }

    /// A model served as a one-model pipeline answers exactly as the model's serving path, also
    /// through HNSW (it asks for k, not for the default quota of 100, so the search breadth is
    /// the model's own).
    @Test func aOneModelPipelineIsTheModelsServingPath() throws {
        let ials = try ServingModel(trained: trained(try ALS.fit(x, settings: ["factors": "8", "iterations": "3"])))
        #expect(ials.retrievalPath == .ann)
        let single = Pipeline.single(ials)
        #expect(single.retrievalPath == .ann)
        for u in [0, 7, 33] {
            let seen = ials.trainingHistory(ofUser: u)
            let direct = try ials.recommend(.user(u), k: 10, excluded: seen).items
            let through = try single.recommend(UserContext(subject: .user(u), history: seen, excluded: seen), k: 10)
            #expect(through.map(\.item) == direct.map(\.item) && through.map(\.score) == direct.map(\.score))
        }
    }

    /// Times from a file can be anything: extreme ones neither trap nor make NaN.
    @Test func extremeItemTimesDoNotTrap() throws {
        var profile = ItemProfile(categories: [[], []], popularity: [1, 1], userCount: 1)
        profile.lastSeen = [Int64.max - 1, Int64.min + 1]
        let fresh = try Freshness(settings: Freshness.Settings(), profile: profile)
        #expect(fresh.freshness(of: 0) == 1 && fresh.freshness(of: 1) == 0)
        let x = CandidateFeatures(retrievers: ["a"], profile: profile).matrix([RetrievedCandidate(item: 1, sources: [(1, 0)])], history: [])
        #expect(x.values.allSatisfy { $0.isFinite })
    }

    @Test func retrieversMergeAndFuseByRank() throws {
        let ease = try serving(try EASE.fit(x, settings: ["lambda": "10"]))
        let pop = try serving(try Popularity.fit(x, settings: [:]))
        let pipeline = Pipeline(retrievers: [(ModelRetriever(name: "ease", model: ease), 20), (ModelRetriever(name: "pop", model: pop), 20)],
                                ranker: ReciprocalRankFusion(k0: 60, weights: [1, 0.5]), rerankers: ReRankChain([]), items: ease.trained.items)
        let seen = ease.trainingHistory(ofUser: 3)
        let context = UserContext(subject: .user(3), history: seen, excluded: seen)
        let merged = try pipeline.retrieve(context)
        let a = try ease.recommend(.user(3), k: 20, excluded: seen).items.map(\.item)
        let b = try pop.recommend(.user(3), k: 20, excluded: seen).items.map(\.item)
        #expect(Set(merged.map(\.item)) == Set(a).union(b))
        // The fused score by hand: 1 / (60 + rank + 1) from ease, half that from popularity.
        let list = try pipeline.recommend(context, k: 5)
        for c in list {
            var expected = 0.0
            if let r = a.firstIndex(of: c.item) { expected += 1 / (61 + Double(r)) }
            if let r = b.firstIndex(of: c.item) { expected += 0.5 / (61 + Double(r)) }
            #expect(abs(Double(c.score) - expected) < 1e-6)
        }
        #expect(list.allSatisfy { !seen.contains($0.item) })
    }

    /// Every feature column of two candidates, computed by hand.
    @Test func candidateFeaturesByHand() {
        var profile = ItemProfile(categories: [[0], [0, 1], [1], []], popularity: [1, 3, 7, 0], userCount: 10)
        profile.lastSeen = [86_400 * 10, nil, 0, 86_400 * 12]
        let features = CandidateFeatures(retrievers: ["a", "b"], profile: profile)
        #expect(features.names == ["a.found", "a.reciprocalRank", "a.zscore", "a.relative", "b.found", "b.reciprocalRank", "b.zscore",
                                   "b.relative", "foundBy", "popularity", "itemAge", "historyLength", "genreAffinity", "genreAffinityMax"])
        // Item 1 found by a (rank 0, score 2) and b (rank 1, score -1); item 3 by a only (rank 1, score 1).
        let candidates = [RetrievedCandidate(item: 1, sources: [(2, 0), (-1, 1)]), RetrievedCandidate(item: 3, sources: [(1, 1), nil])]
        let x = features.matrix(candidates, history: [0, 2])   // history genres: 0 and 1, half each
        let row1: [Float] = [1, 1, 1, 1, 1, 0.5, 0, -1, 1, Float(log1p(3.0) / log1p(7.0)), Float(log1p(12.0)), Float(log1p(2.0)), 0.5, 0.5]
        let row3: [Float] = [1, 0.5, -1, 0.5, 0, 0, 0, 0, 0.5, 0, 0, Float(log1p(2.0)), 0, 0]
        for (j, expected) in row1.enumerated() { #expect(abs(x[0, j] - expected) < 1e-6, "item 1, \(features.names[j]): \(x[0, j])") }
        for (j, expected) in row3.enumerated() { #expect(abs(x[1, j] - expected) < 1e-6, "item 3, \(features.names[j]): \(x[1, j])") }
    }

    @Test func pipelineFilesAreCheckedFieldByField() throws {
        let folder = TestScratch.path("affinity-pipeline")
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try trained(try EASE.fit(x, settings: ["lambda": "10"])).save(to: folder + "/ease")
        try trained(try ALS.fit(x, settings: ["factors": "4", "iterations": "2"])).save(to: folder + "/ials")
        let other = clusteredMatrix(users: 30, items: 45)
        try trained(try EASE.fit(other, settings: ["lambda": "10"])).save(to: folder + "/small")
        func write(_ json: String) -> String {
            let path = folder + "/p\(UInt32.random(in: 0...UInt32.max)).json"
            try! Data(json.utf8).write(to: URL(fileURLWithPath: path))
            return path
        }
        let good = write(#"{"retrievers": [{"model": "ials", "k": 30}, {"model": "ease", "k": 30}], "rerank": ["mmr:lambda=0.8"]}"#)
        let pipeline = try PipelineFile.load(good)
        #expect(pipeline.retrievers.count == 2 && pipeline.rerankers.stages.count == 1)
        // A learned ranker is read with the features of its pipeline's retrievers, and refused for others.
        let names = CandidateFeatures(retrievers: ["ials#0", "ease#1"], profile: ItemProfile(categories: [], popularity: [], userCount: 0)).names
        try NeuralRanker(configuration: NeuralRanker.Configuration(), itemCount: x.columnCount, featureNames: names).save(to: folder + "/ranker.safetensors")
        try NeuralRanker(configuration: NeuralRanker.Configuration(), itemCount: x.columnCount, featureNames: ["a"]).save(to: folder + "/ranker2.safetensors")
        let neural = try PipelineFile.load(write(#"{"retrievers": [{"model": "ials", "k": 30}, {"model": "ease", "k": 30}], "ranker": {"type": "neural", "model": "ranker.safetensors"}}"#))
        #expect(neural.ranker is LearnedRanker && neural.retrievalPath == .pipeline)
        // An ensemble of two copies of one ranker orders as that ranker does.
        let twice = try PipelineFile.load(write(#"{"retrievers": [{"model": "ials", "k": 30}, {"model": "ease", "k": 30}], "ranker": {"type": "neural", "models": ["ranker.safetensors", "ranker.safetensors"]}}"#))
        #expect((twice.ranker as? LearnedRanker)?.models.count == 2)
        let someone = UserContext(subject: .user(4), history: [], excluded: [])
        #expect(try twice.recommend(someone, k: 10).map(\.item) == (try neural.recommend(someone, k: 10).map(\.item)))
        // Per-retriever search settings: iALS scored exactly, or searched by HNSW with its own ef.
        #expect(try PipelineFile.load(write(#"{"retrievers": [{"model": "ials", "exact": true}]}"#)).retrievalPath == .exact)
        let searched = try PipelineFile.load(write(#"{"retrievers": [{"model": "ials", "ef": 200}]}"#))
        #expect(searched.retrievalPath == .ann && searched.primary.searchParameters.ef == 200)
        #expect(try neural.recommend(UserContext(subject: .user(2), history: [], excluded: []), k: 7).count == 7)
        let cases: [(String, String)] = [
            (#"{"retrievers": []}"#, "retrievers: lists no retriever"),
            (#"{"retrievers": [{"k": 3}]}"#, "retrievers[0].model: missing"),
            (#"{"retrievers": [{"model": 5}]}"#, "retrievers[0].model: has the wrong type"),
            (#"{"retrievers": [{"model": "nope"}]}"#, "retrievers[0].model: "),
            (#"{"retrievers": [{"model": "ease"}, {"model": "small"}]}"#, "retrievers[1].model: its users or items differ"),
            (#"{"retrievers": [{"model": "ease", "k": 0}]}"#, "retrievers[0].k: must be in 1...100000"),
            (#"{"retrievers": [{"model": "ials", "ef": 0}]}"#, "retrievers[0].ef: must be in 1...100000"),
            (#"{"retrievers": [{"model": "ease"}], "ranker": {"type": "magic"}}"#, "ranker.type: has an unknown value; known: rrf, neural"),
            (#"{"retrievers": [{"model": "ease"}], "ranker": {"type": "neural"}}"#, "ranker.model: missing"),
            (#"{"retrievers": [{"model": "ease"}], "ranker": {"type": "neural", "models": []}}"#, "ranker.models: missing"),
            (#"{"retrievers": [{"model": "ease"}], "ranker": {"type": "neural", "model": "nope.safetensors"}}"#, "ranker.model: "),
            (#"{"retrievers": [{"model": "ease"}], "ranker": {"type": "neural", "model": "ranker2.safetensors"}}"#, "ranker.model: setting 'ranker': it was trained on the features"),
            (#"{"retrievers": [{"model": "ease"}], "ranker": {"type": "rrf", "weights": [1, 2]}}"#, "ranker.weights: needs one non-negative weight per retriever"),
            (#"{"retrievers": [{"model": "ease"}], "rerank": ["shuffle"]}"#, "rerank[0]: "),
            ("not json", "is not a pipeline JSON object"),
        ]
        for (json, message) in cases {
            let path = write(json)
            do {
                _ = try PipelineFile.load(path)
                Issue.record("accepted: \(json)")
            } catch {
                #expect("\(error)".hasPrefix(path) && "\(error)".contains(message), "\(error)")
            }
        }
    }
}

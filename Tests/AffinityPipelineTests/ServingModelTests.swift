import AffinityANN
import AffinityData
import AffinityLinalg
import AffinityModels
import AffinityPipeline
import Testing

/// A users x items matrix with three taste clusters.
func clusteredMatrix(users: Int = 90, items: Int = 45, perUser: Int = 8) -> SparseMatrix {
    var g = SeededGenerator(seed: 3)
    var rows: [(user: String, item: String, rating: Float?, timestamp: Int64?)] = []
    for u in 0..<users {
        for _ in 0..<perUser {
            rows.append((user: "u\(u)", item: "i\((u % 3) * (items / 3) + g.next(below: items / 3))", rating: nil, timestamp: nil))
        }
    }
    return InteractionLog(source: "test", rows: rows).matrix()
}

func trained(_ model: any PersistableRecommender) -> TrainedModel {
    TrainedModel(model: model, users: IDVocabulary((0..<model.userCount).map { "u\($0)" }),
                 items: IDVocabulary((0..<model.itemCount).map { "i\($0)" }))
}

@Suite struct ServingModelTests {
    /// AMP-CF through the serving path: one HNSW search per persona, merged and re-scored, equals
    /// the exact top-k; explanations carry the serving persona and history items of that persona.
    @Test func personasAreSearchedOneByOneAndReScored() throws {
        let x = clusteredMatrix()
        let model = try AMPCF.fit(x, settings: ["personas": "3", "dimension": "8", "attentionDimension": "4", "negatives": "16", "epochs": "10",
                                                "batchSize": "64", "learningRate": "0.02", "validationUsers": "0", "threads": "1", "foldInSteps": "5"])
        let serving = try ServingModel(trained: trained(model), searchParameters: SearchParameters(ef: 200))
        #expect(serving.retrievalPath == .ann)
        for u in [0, 1, 2, 40] {
            let seen = model.seenItems(ofUser: u)
            let viaIndex = try serving.recommend(.user(u), k: 5, excluded: seen).items.map(\.item)
            let exact = try model.recommend(user: u, k: 5).map(\.index)
            #expect(viaIndex == exact, "user \(u)")
        }
        let explained = try serving.recommend(.user(4), k: 3, excluded: model.seenItems(ofUser: 4), explain: true).items
        let history = Set(model.seenItems(ofUser: 4))
        for r in explained {
            #expect(r.persona.map { (0..<3).contains($0) } == true)
            #expect(r.because?.isEmpty == false && r.because!.allSatisfy { history.contains($0.item) })
        }
    }

    /// The embedding contract: userEmbedding · itemEmbeddings[i] is the model's score, bias included.
    @Test func embeddingsReproduceScores() throws {
        let x = clusteredMatrix()
        let models: [any EmbeddingRecommender] = [
            try ALS.fit(x, settings: ["factors": "6", "iterations": "5"]),
            try BPR.fit(x, settings: ["factors": "6", "epochs": "5"]),
        ]
        for model in models {
            let e = model.itemEmbeddings
            for u in [0, 7, 44] {
                let v = model.userEmbedding(user: u)
                let scores = model.scores(forUser: u)
                for i in 0..<model.itemCount {
                    var dot: Float = 0
                    for k in 0..<e.columns { dot += v[k] * e[i, k] }
                    #expect(abs(dot - scores[i]) < 1e-4)
                }
                let history = model.seenItems(ofUser: u)
                let folded = model.userEmbedding(history: history)
                let foldedScores = model.scores(forHistory: history)
                var dot0: Float = 0
                for k in 0..<e.columns { dot0 += folded[k] * e[0, k] }
                #expect(abs(dot0 - foldedScores[0]) < 1e-3)
            }
        }
    }

    /// ANN serving (HNSW built over the item embeddings) returns the exact top-k on a small catalogue,
    /// with exclusions applied; exact serving equals Recommender.recommend.
    @Test func annAndExactPathsAgreeWithTheModel() throws {
        let x = clusteredMatrix()
        let als = try ALS.fit(x, settings: ["factors": "6", "iterations": "8"])
        let ann = try ServingModel(trained: trained(als))
        #expect(ann.retrievalPath == .ann)
        let exact = try ServingModel(trained: trained(als), buildIndex: false)
        #expect(exact.retrievalPath == .exact)
        for u in 0..<20 {
            let seen = als.seenItems(ofUser: u)
            let expected = try als.recommend(user: u, k: 7).map(\.index)
            #expect(try ann.recommend(.user(u), k: 7, excluded: seen).items.map(\.item) == expected)
            #expect(try exact.recommend(.user(u), k: 7, excluded: seen).items.map(\.item) == expected)
            let folded = try ann.recommend(.history(seen), k: 7, excluded: seen).items.map(\.item)
            #expect(folded == expected)   // iALS fold-in of the training history reproduces the user
        }
        let ease = try ServingModel(trained: trained(try EASE.fit(x, settings: ["lambda": "5"])))
        #expect(ease.retrievalPath == .exact)
        let r = try ease.recommend(.user(3), k: 3, excluded: [], explain: true)
        #expect(r.items.count == 3 && r.items.allSatisfy { !($0.because ?? []).isEmpty })
        #expect(try ease.popular(k: 3, excluded: [ease.popularItems[0]]).map(\.item) == Array(ease.popularItems[1...3]))
        #expect(throws: ModelError.invalidK(0)) { try ease.recommend(.user(0), k: 0, excluded: []) }
        #expect(throws: ModelError.userOutOfRange(1000, count: 90)) { try ease.recommend(.user(1000), k: 2, excluded: []) }
    }

    @Test func aForeignIndexIsRefused() throws {
        let x = clusteredMatrix()
        let als = try ALS.fit(x, settings: ["factors": "6", "iterations": "3"])
        let wrongCount = FlatIndex(dimension: 6, metric: .innerProduct)
        try wrongCount.add(Matrix(rows: 3, columns: 6))
        #expect(throws: ServingError.self) { try ServingModel(trained: trained(als), index: wrongCount, indexPath: "w.idx") }
        let right = FlatIndex(dimension: 6, metric: .innerProduct)
        try right.add(als.itemEmbeddings)
        #expect(try ServingModel(trained: trained(als), index: right).retrievalPath == .ann)
        #expect(throws: ServingError.notEmbeddingModel(modelType: "ease")) {
            try ServingModel(trained: trained(try EASE.fit(x, settings: [:])), index: right)
        }
    }
}

/// A sequential model is served from the user's training sequence followed by their events in
/// timestamp order, through the same ANN path as the other embedding models.
@Suite struct SequentialServingTests {
    @Test func eventsFollowTheTrainingSequenceInTimestampOrder() throws {
        var rows: [(user: String, item: String, rating: Float?, timestamp: Int64?)] = []
        var g = SeededGenerator(seed: 2)
        for u in 0..<30 { for t in 0..<6 { rows.append((user: "u\(u)", item: "i\(g.next(below: 20))", rating: nil, timestamp: Int64(t))) } }
        let log = InteractionLog(source: "t", rows: rows)
        let configuration = try SASRec.Configuration().applying(["dimension": "8", "epochs": "1", "maxLength": "6", "threads": "1"])
        let model = try SASRec.fit(TrainingData(log: log), configuration: configuration, progress: nil)
        let serving = try ServingModel(trained: TrainedModel(model: model, users: log.users, items: log.items))
        let u = log.users.index(of: "u3")!
        #expect(serving.trainingHistory(ofUser: u) == model.trainingSequence(ofUser: u))
        let fresh = (0..<20).map { "i\($0)" }.filter { id in !model.trainingSequence(ofUser: u).contains(log.items.index(of: id) ?? -1) }
        let events = [UserEvent(item: fresh[0], timestamp: 300), UserEvent(item: fresh[1], timestamp: 100), UserEvent(item: fresh[2], timestamp: 200)]
        let placement = serving.place(user: "u3", events: events)
        let expected = model.trainingSequence(ofUser: u) + [fresh[1], fresh[2], fresh[0]].map { log.items.index(of: $0)! }
        #expect(placement.history == expected)
        guard case .history(let h)? = placement.subject else { Issue.record("expected a history"); return }
        #expect(h == expected)
        // Without events the trained user is served as trained (its stored vector).
        guard case .user(let v)? = serving.place(user: "u3", events: []).subject else { Issue.record("expected the trained user"); return }
        #expect(v == u)
    }
}

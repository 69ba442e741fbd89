import AffinityData
import AffinityLinalg
import AffinityNN
import Foundation
import AffinityTestSupport
import Testing

@testable import AffinityModels
import AffinityTestScratch

/// SASRec: it learns a planted order with each loss, its losses' gradients match finite
/// differences, a saved model reloads to the same scores, inference is safe from 8 threads, and
/// data without time is refused.
@Suite struct SASRecTests {
    /// 30 items in a ring; each user's sequence is a run i, i+1, ... of 5 to 9 items.
    static func plantedOrder(users: Int = 240, items: Int = 30) -> TrainingData {
        var g = SeededGenerator(seed: 11)
        var rows: [(user: String, item: String, rating: Float?, timestamp: Int64?)] = []
        // Every item appears in train early on, so the vocabulary is item i -> index i.
        for i in 0..<items { rows.append((user: "warm", item: "i\(i)", rating: nil, timestamp: Int64(i))) }
        for u in 0..<users {
            let start = g.next(below: items), length = 5 + g.next(below: 5)
            for t in 0..<length { rows.append((user: "u\(u)", item: "i\((start + t) % items)", rating: nil, timestamp: Int64(t))) }
        }
        return TrainingData(log: InteractionLog(source: "planted", rows: rows))
    }

    static func settings(_ loss: SequenceLoss) throws -> SASRec.Configuration {
        try SASRec.Configuration().applying(["dimension": "16", "blocks": "1", "maxLength": "8", "dropout": "0", "epochs": "40",
                                             "batchSize": "32", "learningRate": "0.01", "negatives": "8", "threads": "1",
                                             "loss": loss.rawValue])
    }

    @Test(arguments: SequenceLoss.allCases)
    func eachLossLearnsAPlantedOrder(loss: SequenceLoss) throws {
        let data = Self.plantedOrder()
        let model = try SASRec.fit(data, configuration: try Self.settings(loss), progress: nil)
        var right = 0
        for i in 0..<30 {
            let history = [(i + 28) % 30, (i + 29) % 30, i]
            if try model.recommend(history: history, k: 1).first?.index == (i + 1) % 30 { right += 1 }
        }
        #expect(right >= 27, "\(loss): \(right) of 30 next items right")
    }

    /// dL/d(hidden) and dL/d(item table) of each loss against central differences of the mean
    /// loss (sampled losses replay the same seed, so the same negatives).
    @Test(arguments: SequenceLoss.allCases)
    func lossGradientsMatchFiniteDifferences(loss: SequenceLoss) throws {
        var c = try Self.settings(loss)
        c.negatives = 5
        try Self.checkLossGradients(c, label: loss.rawValue)
    }

    /// The cosine scores of text and code items (temperature > 0): both normalisations' backward.
    @Test func cosineSoftmaxGradientsMatchFiniteDifferences() throws {
        var c = try Self.settings(.softmax)
        c.temperature = 0.5
        try Self.checkLossGradients(c, label: "cosine softmax")
    }

    static func checkLossGradients(_ c: SASRec.Configuration, label: String) throws {
        let n = 12, d = 4
        var table = Matrix.random(rows: n, columns: d, seed: 3, scale: 1)
        let layout = SequenceLayout(lengths: [3, 2])
        let hidden = Matrix.random(rows: 5, columns: d, seed: 4, scale: 1)
        let targets = [1, 5, 7, 2, 9], sequences = [[0, 1, 5, 7], [3, 2, 9]]
        let sampler = NegativeSampler(counts: (0..<n).map { $0 + 1 }, kind: .popularity)
        func mean(_ h: Matrix, _ t: Matrix) -> Float {
            var g = SeededGenerator(seed: 8)
            var unused = Matrix(rows: n, columns: d)
            let (total, _) = SASRec.loss(c, hidden: h, targets: targets, layout: layout, sequences: sequences, table: t,
                                         tableGradient: &unused, sampler: sampler, generator: &g, threads: 1)
            return Float(total / Double(h.rows))
        }
        var g = SeededGenerator(seed: 8)
        var analyticTable = Matrix(rows: n, columns: d)
        let (_, dH) = SASRec.loss(c, hidden: hidden, targets: targets, layout: layout, sequences: sequences, table: table,
                                  tableGradient: &analyticTable, sampler: sampler, generator: &g, threads: 1)
        let idx = Array(0..<hidden.values.count)
        let numericH = idx.map { i -> Float in
            var plus = hidden, minus = hidden
            plus.values[i] += 1e-2
            minus.values[i] -= 1e-2
            return (mean(plus, table) - mean(minus, table)) / 2e-2
        }
        for i in idx { #expect(abs(dH.values[i] - numericH[i]) <= 2e-2 * max(abs(dH.values[i]), abs(numericH[i])) + 2e-3, "\(label) dH[\(i)]") }
        let saved = table
        for i in stride(from: 0, to: saved.values.count, by: 3) {
            table.values[i] = saved.values[i] + 1e-2
            let plus = mean(hidden, table)
            table.values[i] = saved.values[i] - 1e-2
            let minus = mean(hidden, table)
            table = saved
            let numeric = (plus - minus) / 2e-2
            let analytic = analyticTable.values[i]
            #expect(abs(analytic - numeric) <= 2e-2 * max(abs(analytic), abs(numeric)) + 2e-3, "\(label) dTable[\(i)]")
        }
    }

    @Test func savedModelReloadsToIdenticalScores() throws {
        var c = try Self.settings(.softmax)
        c.epochs = 3
        let data = Self.plantedOrder(users: 40)
        let model = try SASRec.fit(data, configuration: c, progress: nil)
        let trained = TrainedModel(model: model, users: IDVocabulary((0..<data.userCount).map { "u\($0)" }),
                                   items: IDVocabulary((0..<data.itemCount).map { "i\($0)" }))
        let path = TestScratch.path("affinity-sasrec")
        try trained.save(to: path)
        let loaded = try TrainedModel.load(from: path)
        let reloaded = try #require(loaded.model as? SASRec)
        for u in 0..<data.userCount {
            #expect(reloaded.scores(forUser: u) == model.scores(forUser: u))
            #expect(reloaded.trainingSequence(ofUser: u) == data.sequences[u])
        }
        #expect(reloaded.scores(forHistory: [3, 4, 5]) == model.scores(forHistory: [3, 4, 5]))
        // A known user's stored vector is the network run on their training sequence.
        let u = 5
        #expect(zip(model.userEmbedding(user: u), model.userEmbedding(history: data.sequences[u])).allSatisfy { abs($0 - $1) < 1e-5 })
    }

    @Test func inferenceFromEightThreadsEqualsSequential() throws {
        var c = try Self.settings(.softmax)
        c.epochs = 2
        let model = try SASRec.fit(Self.plantedOrder(users: 40), configuration: c, progress: nil)
        let histories = (0..<12).map { i in (0..<(1 + i % 9)).map { (i + $0) % 30 } }
        let sequential = histories.map { model.scores(forHistory: $0) }
        let results = onThreads(8) { t in histories.indices.map { model.scores(forHistory: histories[($0 + t) % histories.count]) } }
        for (t, lists) in results.enumerated() {
            for n in histories.indices { #expect(lists[n] == sequential[(n + t) % histories.count], "thread \(t)") }
        }
    }

    @Test func longHistoriesAreCutToTheMostRecentItemsAndTimeIsRequired() throws {
        var c = try Self.settings(.bce)
        c.epochs = 1
        let data = Self.plantedOrder(users: 30)
        let model = try SASRec.fit(data, configuration: c, progress: nil)
        let long = (0..<20).map { $0 % 30 }
        #expect(model.scores(forHistory: long) == model.scores(forHistory: Array(long.suffix(8))))
        #expect(throws: ModelError.self) { try ModelRegistry.fit("sasrec", data: TrainingData(interactions: data.interactions), settings: [:]) }
        do {
            _ = try SASRec.fit(TrainingData(interactions: data.interactions), configuration: c, progress: nil)
        } catch {
            #expect("\(error)".contains("timestamps"), "\(error)")
        }
        #expect(throws: ModelError.self) { try SASRec.Configuration().applying(["heads": "3"]) }
    }
}

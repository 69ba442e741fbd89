import AffinityLinalg
import AffinityNN
import Foundation
import Testing

@testable import AffinityModels
import AffinityTestScratch

/// The learned ranker: it learns a planted rule with every loss, its GMF branch learns per-item
/// preference, it saves and loads exactly, refuses a damaged file, and the shared loop keeps the
/// best epoch.
@Suite struct NeuralRankerTests {
    /// Lists of 12 candidates over 30 items; feature 0 is a noisy copy of the label, feature 1 noise.
    func lists(_ count: Int, seed: UInt64) -> [RankingList] {
        var g = SeededGenerator(seed: seed)
        return (0..<count).map { _ in
            let items = Array(g.permutation(30).prefix(12))
            let labels: [Float] = items.map { _ in g.nextDouble() < 0.25 ? 1 : 0 }
            var x = Matrix(rows: 12, columns: 2)
            for r in 0..<12 {
                x.values[r * 2] = labels[r] + Float(g.nextGaussian()) * 0.6
                x.values[r * 2 + 1] = Float(g.nextGaussian())
            }
            return RankingList(items: items, features: x, history: Array(g.permutation(30).prefix(4)), labels: labels,
                               relevant: max(1, labels.filter { $0 > 0 }.count))
        }
    }

    /// Mean NDCG@5 of the ranker's order.
    func ndcg(_ ranker: NeuralRanker, _ lists: [RankingList]) -> Double {
        lists.reduce(0) { total, list in
            let s = ranker.scores(list)
            let order = s.indices.sorted { s[$0] > s[$1] }
            var dcg = 0.0
            for (r, i) in order.prefix(5).enumerated() where list.labels[i] > 0 { dcg += 1 / log2(Double(r) + 2) }
            return total + dcg / RankingLosses.idealDCG(relevant: list.relevant, cutoff: 5)
        } / Double(lists.count)
    }

    /// A small ranker's settings: no early stopping, NDCG@5.
    func settings(loss: RankingLoss = .softmax, dimension: Int, hidden: Int, epochs: Int, batchSize: Int = 32,
                  learningRate: Double = 0.001) -> NeuralRanker.Configuration {
        var c = NeuralRanker.Configuration()
        c.loss = loss
        c.dimension = dimension
        c.hidden = hidden
        c.epochs = epochs
        c.batchSize = batchSize
        c.learningRate = learningRate
        c.cutoff = 5
        c.patience = 0
        return c
    }

    @Test(arguments: RankingLoss.allCases)
    func everyLossLearnsAPlantedRule(loss: RankingLoss) throws {
        let c = settings(loss: loss, dimension: 4, hidden: 16, epochs: 15, batchSize: 8, learningRate: 0.01)
        let train = lists(160, seed: 1), test = lists(80, seed: 2)
        let ranker = NeuralRanker(configuration: c, itemCount: 30, featureNames: ["signal", "noise"])
        let before = ndcg(ranker, test)
        try ranker.fit(train)
        let after = ndcg(ranker, test)
        // Chance is about 0.35 here; sorting by the signal feature itself gives about 0.8.
        #expect(after > 0.7 && after > before + 0.15, "\(loss): NDCG@5 \(before) -> \(after)")
    }

    @Test func theGMFBranchLearnsWhichItemsAUserLikes() throws {
        // No useful feature: the label is "item is even" for users whose history is even items and
        // "item is odd" otherwise; only the embeddings can tell.
        var g = SeededGenerator(seed: 5)
        func make(_ n: Int) -> [RankingList] {
            (0..<n).map { _ in
                let parity = g.next(below: 2)
                let items = Array(g.permutation(20).prefix(10))
                let history = (0..<5).map { _ in 2 * g.next(below: 10) + parity }
                return RankingList(items: items, features: Matrix(rows: 10, columns: 1, values: items.map { _ in Float(g.nextGaussian()) }),
                                   history: history, labels: items.map { $0 % 2 == parity ? 1 : 0 },
                                   relevant: items.filter { $0 % 2 == parity }.count)
            }
        }
        let c = settings(dimension: 8, hidden: 16, epochs: 30, batchSize: 16, learningRate: 0.02)
        let ranker = NeuralRanker(configuration: c, itemCount: 20, featureNames: ["noise"])
        try ranker.fit(make(300))
        let test = make(60)
        #expect(ndcg(ranker, test) > 0.9, "NDCG@5 \(ndcg(ranker, test))")
    }

    /// The serving path (user part folded into the first layer's bias, GMF as one dot product)
    /// against the network as written, on trained weights and awkward widths.
    @Test func servingScoresMatchTheReference() throws {
        for (dimension, hidden) in [(4, 16), (1, 3), (7, 10)] {
            let ranker = NeuralRanker(configuration: settings(dimension: dimension, hidden: hidden, epochs: 2), itemCount: 30,
                                      featureNames: ["signal", "noise"])
            try ranker.fit(lists(30, seed: 11))
            for list in lists(8, seed: 12) + [RankingList(items: [3], features: Matrix(rows: 1, columns: 2, values: [0.5, -1]), history: [])] {
                let fast = ranker.scores(list), slow = ranker.referenceScores(list)
                #expect(fast.count == slow.count)
                for (a, b) in zip(fast, slow) { #expect(abs(a - b) <= 1e-4 * max(1, abs(b)), "\(dimension)/\(hidden): \(a) vs \(b)") }
            }
        }
    }

    /// The backward pass of a training step (head, MLP, the concatenation and split, the GMF
    /// product, the embedding rows and the history bags) against central finite differences of the
    /// batch's mean loss, for every parameter tensor.
    @Test(arguments: [RankingLoss.bce, .softmax, .bpr])
    func trainingGradientsMatchFiniteDifferences(loss: RankingLoss) throws {
        let ranker = NeuralRanker(configuration: settings(loss: loss, dimension: 3, hidden: 6, epochs: 1), itemCount: 30,
                                  featureNames: ["signal", "noise"])
        let batch = lists(4, seed: 21)
        ranker.fitStandardization(batch)
        func meanLoss() -> Float {
            var g = SeededGenerator(seed: 1)
            for p in ranker.parameters { p.zeroGrad() }
            return Float(ranker.trainStep(batch, generator: &g)) / Float(batch.count)
        }
        _ = meanLoss()
        for p in ranker.parameters {
            let analytic = p.grad.values
            // Coordinates that carry a gradient (embedding rows the batch touches), a few of each tensor.
            let touched = analytic.indices.filter { analytic[$0] != 0 }
            let coordinates = touched.isEmpty ? [0] : (0..<min(6, touched.count)).map { touched[$0 * touched.count / min(6, touched.count)] }
            let original = p.value.values
            // A step of 2e-3: a wider one (1e-2) crosses ReLU kinks of some rows and misleads.
            for k in coordinates {
                p.value.values[k] = original[k] + 2e-3
                let plus = meanLoss()
                p.value.values[k] = original[k] - 2e-3
                let minus = meanLoss()
                p.value.values = original
                let numeric = (plus - minus) / 4e-3
                #expect(abs(analytic[k] - numeric) <= 2e-2 * max(abs(analytic[k]), abs(numeric)) + 2e-3,
                        "\(loss) \(p.name)[\(k)]: analytic \(analytic[k]) vs numeric \(numeric)")
            }
        }
    }

    @Test func savedRankersScoreTheSameAndDamagedFilesAreRefused() throws {
        var c = NeuralRanker.Configuration()
        c.epochs = 2
        c.dimension = 3
        c.hidden = 8
        let ranker = NeuralRanker(configuration: c, itemCount: 30, featureNames: ["signal", "noise"])
        try ranker.fit(lists(20, seed: 3))
        let path = TestScratch.path("ranker", suffix: ".safetensors")
        defer { try? FileManager.default.removeItem(atPath: path) }
        try ranker.save(to: path)
        let loaded = try NeuralRanker.load(from: path)
        for list in lists(5, seed: 9) { #expect(loaded.scores(list) == ranker.scores(list)) }
        #expect(loaded.configuration == c && loaded.featureNames == ["signal", "noise"])

        // The same tensors under a configuration of another width: refused by tensor name.
        var file = try SafeTensorsFile.read(path: path)
        file.metadata["config"] = file.metadata["config"]!.replacingOccurrences(of: "\"hidden\":8", with: "\"hidden\":10")
        try Data(try file.encoded()).write(to: URL(fileURLWithPath: path))
        #expect { try NeuralRanker.load(from: path) } throws: { "\($0)".contains("tensor 'mlp.0.weight' is missing or not 10 x") }
        // A file that claims 10⁸ items is refused before two 10⁸-row tables are allocated.
        try ranker.save(to: path)
        var huge = try SafeTensorsFile.read(path: path)
        huge.metadata["items"] = "100000000"
        try Data(try huge.encoded()).write(to: URL(fileURLWithPath: path))
        #expect { try NeuralRanker.load(from: path) } throws: { "\($0)".contains("tensor 'item_embedding' is missing or not 100000000 x 3") }
        file.metadata["format"] = "affinity-model"
        try Data(try file.encoded()).write(to: URL(fileURLWithPath: path))
        #expect { try NeuralRanker.load(from: path) } throws: { "\($0)".contains("not a ranker file") }
    }

    @Test func theTrainingLoopKeepsTheBestEpochAndStopsOnPatience() throws {
        let p = Parameter("w", value: Matrix(rows: 1, columns: 1, values: [0]))
        let loop = TrainingLoop(settings: .init(epochs: 10, batchSize: 4, seed: 1, patience: 2), parameters: [p], optimizer: SGD(learningRate: 1))
        var epoch = 0
        let outcome = loop.run(examples: 8, model: "test", exampleName: "rows", progress: nil, step: { batch, _ in
            p.grad.values[0] = -1   // w grows by 1 per step, 2 steps per epoch
            return Double(batch.count)
        }, validate: {
            epoch += 1
            return [0.1, 0.5, 0.3, 0.2, 0.9][epoch - 1]
        })
        // Best at epoch 2, no better in 3 and 4: stops after epoch 4 and restores epoch 2's w = 4.
        #expect(outcome.validation == [0.1, 0.5, 0.3, 0.2])
        #expect(outcome.keptEpoch == 2)
        #expect(p.value.values[0] == 4)
    }

    /// A schedule sets the optimiser's rate before each step (here linear decay over 4 steps from 1:
    /// steps of 1, 0.75, 0.5, 0.25) and the base rate comes back after the run.
    @Test func theTrainingLoopFollowsItsLearningRateSchedule() {
        let p = Parameter("w", value: Matrix(rows: 1, columns: 1, values: [0]))
        let sgd = SGD(learningRate: 1)
        let loop = TrainingLoop(settings: .init(epochs: 2, batchSize: 4, seed: 1, schedule: .linearDecay(total: 4)), parameters: [p], optimizer: sgd)
        loop.run(examples: 8, model: "test", exampleName: "rows", progress: nil, step: { _, _ in
            p.grad.values[0] = -1
            return 0
        })
        #expect(abs(p.value.values[0] - 2.5) < 1e-6, "\(p.value.values[0])")
        #expect(sgd.learningRate == 1)
    }
}

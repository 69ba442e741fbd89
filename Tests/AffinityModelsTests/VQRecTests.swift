import AffinityData
import AffinityLinalg
import AffinityNN
import Foundation
import Testing

@testable import AffinityModels
import AffinityTestScratch

/// VQ-Rec and the item encoders of SASRec: codes are unique (collisions counted and moved), the
/// code table is the mean of its code rows, vq-rec learns a planted order from codes alone,
/// pre-training then fine-tuning keeps the sequence encoder fixed, an item never trained on is
/// placed by its code, saved models reload to the same scores, and bad input is refused.
@Suite struct VQRecTests {
    /// `items` items in a ring, each user's sequence a run of 5 to 9 of them; item text vectors
    /// (16 dimensions) random but for `twins`: item t's vector is item t−1's plus a little noise.
    static func ring(items: Int = 300, users: Int = 600, seed: UInt64 = 11, skip: Set<Int> = []) -> (TrainingData, Matrix) {
        var g = SeededGenerator(seed: seed)
        var sequences: [[Int]] = []
        for _ in 0..<users {
            let start = g.next(below: items), length = 5 + g.next(below: 5)
            sequences.append((0..<length).map { (start + $0) % items }.filter { !skip.contains($0) })
        }
        var pointers = [0], columns: [Int32] = []
        for s in sequences {
            columns += Set(s).sorted().map { Int32($0) }
            pointers.append(columns.count)
        }
        let matrix = try! SparseMatrix(rowCount: users, columnCount: items, rowPointers: pointers, columns: columns,
                                       values: [Float](repeating: 1, count: columns.count))
        var data = TrainingData(interactions: matrix, sequences: sequences, timeOrdered: true)
        data.itemVectors = Matrix.random(rows: items, columns: 16, seed: seed &+ 1, scale: 1)
        return (data, data.itemVectors!)
    }

    static func settings(_ extra: [String: String] = [:]) throws -> VQRec.Configuration {
        try VQRec.Configuration().applying(["subspaces": "4", "dimension": "16", "heads": "1", "hidden": "32", "blocks": "1", "maxLength": "8",
                                            "dropout": "0", "epochs": "25", "batchSize": "64", "learningRate": "0.01", "threads": "1",
                                            "pretrainEpochs": "3"].merging(extra) { _, b in b })
    }

    static func nextItemHits(_ model: some Recommender, items: Int, probes: Int = 30) throws -> Int {
        var right = 0
        for i in stride(from: 0, to: items, by: items / probes) {
            let history = [(i + items - 2) % items, (i + items - 1) % items, i]
            if try model.recommend(history: history, k: 1).first?.index == (i + 1) % items { right += 1 }
        }
        return right
    }

    @Test func codesAreUniqueAndCollisionsAreCounted() throws {
        var vectors = Matrix.random(rows: 400, columns: 16, seed: 5, scale: 1)
        // Ten copies of row 0: each must move to a free code.
        for r in 1...10 { for k in 0..<16 { vectors[r, k] = vectors[0, k] } }
        let quantizer = try ItemQuantizer.train(vectors, subspaces: 4, seed: 1, threads: 1)
        let codes = ItemCodes.encode(vectors, quantizer: quantizer, threads: 1)
        #expect(codes.count == 400 && codes.subspaces == 4)
        #expect(codes.duplicates == 0)
        #expect(codes.collisions >= 10, "\(codes.collisions) collisions")
        // A moved code differs from the original in the fewest places the free codes allow (one here).
        for r in 1...10 { #expect(zip(codes.code(of: r), codes.code(of: 0)).filter { $0 != $1 }.count == 1) }
        // Too few items with text for 256 centroids: a clear refusal.
        #expect(throws: ModelError.self) { try ItemQuantizer.train(Matrix.random(rows: 100, columns: 16, seed: 1, scale: 1), subspaces: 4, seed: 1) }
    }

    /// The code encoder's table against a plain mean of each item's code rows, and its backward
    /// against the same sum spread back.
    @Test func codeTableIsTheMeanOfItsCodeRows() throws {
        let codes = ItemCodes(subspaces: 3, centroids: 256, values: [0, 5, 9, 1, 5, 255, 7, 7, 7])
        let encoder = CodeItemEncoder(codes: codes, dimension: 4, seed: 2, scale: 1)
        let table = encoder.table(training: true)
        let e = encoder.embedding.table.value
        for i in 0..<3 {
            for k in 0..<4 {
                let expected = (0..<3).map { j in e[j * 256 + Int(codes.code(of: i)[j]), k] }.reduce(0, +) / 3
                #expect(abs(table[i, k] - expected) < 1e-6)
            }
        }
        encoder.embedding.table.zeroGrad()
        encoder.backward(Matrix(rows: 3, columns: 4, values: [Float](repeating: 3, count: 12)))
        // Row (sub-space 1, centroid 5) is in items 0 and 1: gradient 3/3 + 3/3.
        #expect(encoder.embedding.table.grad[1 * 256 + 5, 0] == 2)
        #expect(encoder.embedding.table.grad[2 * 256 + 255, 3] == 1)
    }

    @Test func learnsAPlantedOrderFromCodesAlone() throws {
        let (data, _) = Self.ring()
        let model = try VQRec.fit(data, configuration: try Self.settings(), progress: nil)
        let hits = try Self.nextItemHits(model, items: 300)
        #expect(hits >= 24, "\(hits) of 30 next items right")
        #expect(model.codes.duplicates == 0)
    }

    @Test func fineTuningAfterPreTrainingKeepsTheSequenceEncoderFixed() throws {
        let (source, _) = Self.ring(seed: 21)
        let (target, _) = Self.ring(seed: 31)
        let model = try VQRec.fit(target, pretraining: [source], configuration: try Self.settings(), progress: nil)
        #expect(model.pretraining?.losses.count == 3)
        // The pre-trained sequence encoder again, to compare: same seed, same data, same steps.
        var c = try Self.settings()
        c.epochs = 3
        let mixed = try VQRec.mix([source])
        let quantizer = try ItemQuantizer.train(mixed.itemVectors!, subspaces: 4, seed: c.seed, threads: 1)
        var pre = c.backbone
        pre.patience = 0
        let pretrained = try SASRec.fit(mixed, configuration: pre, progress: nil, requireTimeOrder: false,
                                        run: .init(codes: ItemCodes.encode(mixed.itemVectors!, quantizer: quantizer, threads: 1), semiSynthetic: c.semiSynthetic))
        for (a, b) in zip(model.sasrec.network.sequenceParameters, pretrained.network.sequenceParameters) {
            #expect(a.name == b.name && a.value == b.value, "\(a.name) changed in fine-tuning")
        }
        let hits = try Self.nextItemHits(model, items: 300)
        // Chance is 0.1 of 30; the fixed encoder leaves the code embeddings alone to fit the target.
        #expect(hits >= 8, "\(hits) of 30 next items right after fine-tuning the code embeddings alone")
        // Every parameter learns with fineTune=all.
        let all = try VQRec.fit(target, pretraining: [source], configuration: try Self.settings(["fineTune": "all", "epochs": "2"]), progress: nil)
        #expect(zip(all.sasrec.network.sequenceParameters, pretrained.network.sequenceParameters).contains { $0.value != $1.value })
    }

    /// Item 150 never occurs in training; its text is item 149's plus noise, so its code shares
    /// most indexes with 149's, and after ..., 148 it is ranked near where 149 is.
    @Test func anItemNeverTrainedOnIsPlacedByItsCode() throws {
        var (data, vectors) = Self.ring(skip: [150])
        for k in 0..<16 { vectors[150, k] = vectors[149, k] + 0.01 * Float(k % 3) }
        data.itemVectors = vectors
        #expect(data.interactions.columnCounts()[150] == 0)
        let model = try VQRec.fit(data, configuration: try Self.settings(), progress: nil)
        let shared = zip(model.codes.code(of: 150), model.codes.code(of: 149)).filter { $0 == $1 }.count
        #expect(shared >= 3, "\(shared) of 4 code indexes shared with its twin")
        let top = try model.recommend(history: [146, 147, 148], k: 10).map(\.index)
        #expect(top.contains(150), "cold item 150 not in \(top)")
    }

    @Test func savedModelsReloadToIdenticalScores() throws {
        let (data, _) = Self.ring(users: 120)
        let vq = try VQRec.fit(data, configuration: try Self.settings(["epochs": "2"]), progress: nil)
        var textSettings = try SASRec.Configuration().applying(["items": "text", "temperature": "0.1", "dimension": "16", "blocks": "1",
                                                                "maxLength": "8", "epochs": "2", "threads": "1"])
        textSettings.dropout = 0
        let text = try SASRec.fit(data, configuration: textSettings, progress: nil)
        for model in [vq, text] as [any PersistableRecommender] {
            let trained = TrainedModel(model: model, users: IDVocabulary((0..<data.userCount).map { "u\($0)" }),
                                       items: IDVocabulary((0..<data.itemCount).map { "i\($0)" }))
            let path = TestScratch.path("affinity-vq")
            defer { try? FileManager.default.removeItem(atPath: path) }
            try trained.save(to: path)
            let loaded = try TrainedModel.load(from: path).model
            #expect(type(of: loaded) == type(of: model))
            for u in stride(from: 0, to: data.userCount, by: 7) { #expect(loaded.scores(forUser: u) == model.scores(forUser: u)) }
            #expect(loaded.scores(forHistory: [3, 4, 5]) == model.scores(forHistory: [3, 4, 5]))
            if let reloaded = loaded as? VQRec { #expect(reloaded.quantizer == vq.quantizer && reloaded.codes == vq.codes) }
        }
    }

    /// Items without text (zero vectors) are counted and still get codes of their own.
    @Test func itemsWithoutTextAreCountedAndCodedApart() throws {
        var (data, vectors) = Self.ring(users: 60)
        for r in 0..<10 { for k in 0..<16 { vectors[r, k] = 0 } }
        data.itemVectors = vectors
        let model = try VQRec.fit(data, configuration: try Self.settings(["epochs": "1"]), progress: nil)
        #expect(model.itemsWithoutText == 10)
        #expect(model.codes.duplicates == 0 && model.collisions >= 9)
    }

    @Test func badInputIsRefusedWithReasons() throws {
        var (data, _) = Self.ring(users: 60)
        data.itemVectors = nil
        #expect { try VQRec.fit(data, configuration: try Self.settings(), progress: nil) } throws: { "\($0)".contains("text vector per item") }
        #expect { try SASRec.fit(data, configuration: try SASRec.Configuration().applying(["items": "text"]), progress: nil) } throws: {
            "\($0)".contains("items=text needs a text vector")
        }
        #expect { try SASRec.fit(data, configuration: try SASRec.Configuration().applying(["items": "codes"]), progress: nil) } throws: {
            "\($0)".contains("vq-rec")
        }
        #expect(throws: ModelError.self) { try SASRec.Configuration().applying(["temperature": "0.1", "loss": "bce"]) }
        // Pre-training domains with another encoder's vectors.
        let (target, _) = Self.ring(users: 60)
        var other = Self.ring(users: 60, seed: 3).0
        other.itemVectors = Matrix.random(rows: 300, columns: 8, seed: 1, scale: 1)
        #expect { try VQRec.fit(target, pretraining: [other], configuration: try Self.settings(), progress: nil) } throws: {
            "\($0)".contains("one sentence encoder")
        }
    }
}

import Foundation
import Testing
import AffinityData
import AffinityLinalg
@testable import AffinityModels
import AffinityTestSupport
import AffinityTestScratch

@Suite struct CFConformanceTests {
    @Test func ease() throws {
        try RecommenderConformance.check { try EASE.fit($0, settings: ["lambda": "1"]) }
    }

    @Test func alsCholesky() throws {
        try RecommenderConformance.check { try ALS.fit($0, settings: ["factors": "8", "iterations": "8", "regularization": "0.1"]) }
    }

    @Test func alsConjugateGradient() throws {
        try RecommenderConformance.check { try ALS.fit($0, settings: ["factors": "8", "iterations": "8", "regularization": "0.1", "solver": "cg"]) }
    }

    @Test func bpr() throws {
        try RecommenderConformance.check { try BPR.fit($0, settings: ["factors": "8", "epochs": "150", "learningRate": "0.1"]) }
    }
}

@Suite struct EASETests {
    /// B from the closed form in Double, by Gauss-Jordan: the oracle.
    @Test func matchesClosedFormReference() throws {
        let x = RecommenderConformance.randomInteractions(users: 40, items: 20, perUser: 6, seed: 3)
        let lambda = 2.0
        let model = try EASE.fit(x, settings: ["lambda": "\(lambda)"])
        var gram = x.dense().multiplied(by: x.dense(), transposeSelf: true, threads: 1)
        gram.addToDiagonal(Float(lambda))
        let p = ReferenceLinalg.inverse(gram)!
        let n = x.columnCount
        for i in 0..<n {
            for j in 0..<n {
                let expected = i == j ? 0 : -p[i * n + j] / p[j * n + j]
                #expect(abs(Double(model.weights[i, j]) - expected) < 1e-4, "B[\(i),\(j)]")
            }
        }
        for u in 0..<x.rowCount {
            #expect(model.scores(forHistory: model.seenItems(ofUser: u)) == model.scores(forUser: u))
        }
    }

    @Test func explanationsSumToTheScoreAndAntiAffinityIsNegative() throws {
        let x = RecommenderConformance.randomInteractions(users: 60, items: 25, perUser: 7, seed: 9)
        let model = try EASE.fit(x, settings: ["lambda": "3"])
        let scores = model.scores(forUser: 4)
        for item in 0..<x.columnCount {
            let parts = try model.explain(user: 4, item: item)
            #expect(abs(parts.reduce(0) { $0 + $1.weight } - scores[item]) < 1e-4)
            #expect(zip(parts, parts.dropFirst()).allSatisfy { $0.weight >= $1.weight })
        }
        let anti = try model.antiAffinities(of: 2, k: 5)
        #expect(!anti.isEmpty && anti.allSatisfy { $0.weight < 0 && $0.item != 2 })
        #expect(anti.map(\.weight) == anti.map(\.weight).sorted())
        let row = model.weights.row(2)
        #expect(anti[0].weight == row.min())
    }

    @Test func plantedSubstitutesShowAsAntiAffinity() throws {
        // Items 0 and 1 are substitutes: popular, similar audiences, never together.
        var rows: [Int32] = [], cols: [Int32] = []
        var g = SeededGenerator(seed: 5)
        for u in 0..<300 {
            let pick: Int32 = u % 2 == 0 ? 0 : 1
            rows.append(Int32(u)); cols.append(pick)
            for _ in 0..<4 { rows.append(Int32(u)); cols.append(Int32(2 + g.next(below: 10))) }
        }
        let x = SparseMatrix(rowCount: 300, columnCount: 12, rows: rows, cols: cols).binarized()
        let model = try EASE.fit(x, settings: ["lambda": "10"])
        #expect(try model.antiAffinities(of: 0, k: 1).first?.item == 1)
    }

    @Test func refusesMatricesThatDoNotFit() {
        let x = SparseMatrix(rowCount: 1, columnCount: 20_000, rows: [0], cols: [0])
        #expect(message { _ = try EASE.fit(x, settings: ["maxMemoryGB": "1"]) }?.contains("EASE on 20000 items needs about 4.8 GB") == true)
    }
}

@Suite struct BlockScoringTests {
    /// `scores(forUsers:into:)` equals `scores(forUser:into:)` row by row, bit for bit: factor models
    /// (item tiles of 64 rows at this width, so 150 items cross tiles; BPR adds its bias) and the
    /// default one-user-at-a-time path (EASE).
    @Test func blockRowsEqualSingleUserScores() throws {
        let x = RecommenderConformance.randomInteractions(users: 30, items: 150, perUser: 6, seed: 2)
        let models: [any Recommender] = [
            try ALS.fit(x, settings: ["factors": "1024", "iterations": "1"]),
            try BPR.fit(x, settings: ["factors": "8", "epochs": "2"]),
            try EASE.fit(x, settings: ["lambda": "5"]),
        ]
        for model in models {
            let users = [3, 0, 29, 3, 17]
            var block = [Float](repeating: .nan, count: users.count * 150)
            block.withUnsafeMutableBufferPointer { model.scores(forUsers: users, into: $0) }
            for (r, u) in users.enumerated() {
                #expect(Array(block[(r * 150)..<((r + 1) * 150)]) == model.scores(forUser: u), "\(type(of: model)) user \(u)")
            }
        }
    }
}

@Suite struct SparseEASETests {
    @Test func conformance() throws {
        try RecommenderConformance.check { try SparseEASE.fit($0, settings: ["lambda": "1", "neighbors": "6", "gramKeep": "10"]) }
    }

    /// With every other item in each support and nothing pruned, the restricted regressions are
    /// exact EASE: the dense model is the reference.
    @Test func fullSupportIsExactEASE() throws {
        let x = RecommenderConformance.randomInteractions(users: 50, items: 18, perUser: 6, seed: 11)
        let dense = try EASE.fit(x, settings: ["lambda": "2"])
        for threads in ["1", "2"] {
            let sparse = try SparseEASE.fit(x, settings: ["lambda": "2", "neighbors": "17", "gramKeep": "17", "threads": threads])
            #expect(sparse.repairedColumns == 0)
            for i in 0..<18 {
                #expect(sparse.weight(from: i, to: i) == 0)
                for j in 0..<18 where i != j {
                    #expect(abs(sparse.weight(from: i, to: j) - dense.weights[i, j]) < 1e-4, "B[\(i),\(j)]")
                }
            }
            for u in [0, 13, 41] {
                let a = sparse.scores(forUser: u), b = dense.scores(forUser: u)
                #expect(zip(a, b).allSatisfy { abs($0 - $1) < 1e-3 })
                #expect(sparse.scores(forHistory: sparse.seenItems(ofUser: u)) == a)
            }
        }
    }

    /// Restricted supports: each column holds its `neighbors` strongest co-occurrences, never
    /// itself; explanations sum to the score; the planted substitutes are anti-affine; a file
    /// round-trip keeps every weight; the same model for 1 and 2 threads.
    @Test func restrictedSupportsKeepEASEsShape() throws {
        var rows: [Int32] = [], cols: [Int32] = []
        var g = SeededGenerator(seed: 5)
        for u in 0..<300 {
            let pick: Int32 = u % 2 == 0 ? 0 : 1
            rows.append(Int32(u)); cols.append(pick)
            for _ in 0..<4 { rows.append(Int32(u)); cols.append(Int32(2 + g.next(below: 20))) }
        }
        let x = SparseMatrix(rowCount: 300, columnCount: 22, rows: rows, cols: cols).binarized()
        let model = try SparseEASE.fit(x, settings: ["lambda": "10", "neighbors": "8", "gramKeep": "12", "threads": "1"])
        let twin = try SparseEASE.fit(x, settings: ["lambda": "10", "neighbors": "8", "gramKeep": "12", "threads": "2"])
        #expect(model.weights == twin.weights)
        let columnSizes = model.weights.transposed().columnCounts()
        #expect(columnSizes.allSatisfy { $0 == 0 } == false)
        #expect((0..<22).allSatisfy { model.weights.transposed().rowLength($0) <= 8 && model.weight(from: $0, to: $0) == 0 })
        let scores = model.scores(forUser: 4)
        for item in 0..<22 {
            let parts = try model.explain(user: 4, item: item)
            #expect(abs(parts.reduce(0) { $0 + $1.weight } - scores[item]) < 1e-4)
        }
        #expect(try model.antiAffinities(of: 0, k: 1).first?.item == 1)
        let similar = try model.similarItems(to: 3, k: 5)
        #expect(!similar.isEmpty && similar.allSatisfy { $0.index != 3 && $0.score > 0 })
        let folder = TestScratch.path("sparse-ease")
        defer { try? FileManager.default.removeItem(atPath: folder) }
        try TrainedModel(model: model, users: IDVocabulary((0..<300).map { "u\($0)" }), items: IDVocabulary((0..<22).map { "i\($0)" }))
            .save(to: folder)
        let loaded = try TrainedModel.load(from: folder)
        #expect(loaded.model.scores(forUser: 4) == scores)
        #expect((loaded.model as? SparseEASE)?.weights == model.weights)
    }

    @Test func refusesWithTheEstimate() {
        let x = SparseMatrix(rowCount: 1, columnCount: 2_000_000, rows: [0], cols: [0])
        let text = message { _ = try SparseEASE.fit(x, settings: ["neighbors": "1024", "gramKeep": "4096"]) }
        #expect(text?.contains("sparse-ease on 2000000 items with neighbors=1024, gramKeep=4096 would need about") == true)
        #expect(message { _ = try SparseEASE.fit(x, settings: ["neighbors": "64", "gramKeep": "8"]) }?.contains("gramKeep") == true)
    }
}

@Suite struct ALSTests {
    /// The exact user solve against the normal equations written out densely in Double.
    @Test func userSolveMatchesNormalEquations() throws {
        let x = RecommenderConformance.randomInteractions(users: 30, items: 20, perUser: 5, seed: 4)
        let model = try ALS.fit(x, settings: ["factors": "5", "iterations": "3", "alpha": "2", "regularization": "0.5"])
        let y = model.factors.itemFactors
        let f = 5
        for u in [0, 7, 19] {
            var a = [Double](repeating: 0, count: f * f), b = [Double](repeating: 0, count: f)
            let history = Set(model.seenItems(ofUser: u))
            for i in 0..<x.columnCount {
                let c = history.contains(i) ? 3.0 : 1.0
                let p = history.contains(i) ? 1.0 : 0.0
                for r in 0..<f {
                    b[r] += c * p * Double(y[i, r])
                    for s in 0..<f { a[r * f + s] += c * Double(y[i, r]) * Double(y[i, s]) }
                }
            }
            for r in 0..<f { a[r * f + r] += 0.5 }
            let inverse = ReferenceLinalg.inverse(Matrix(rows: f, columns: f, values: a.map { Float($0) }))!
            let expected = (0..<f).map { r in (0..<f).reduce(0.0) { $0 + inverse[r * f + $1] * b[$1] } }
            let got = try model.recalculateUser(history: Array(history))
            for r in 0..<f { #expect(abs(Double(got[r]) - expected[r]) < 1e-3 * max(1, abs(expected[r])), "user \(u) factor \(r)") }
        }
    }

    @Test func conjugateGradientApproachesCholesky() throws {
        let x = RecommenderConformance.randomInteractions(users: 50, items: 30, perUser: 6, seed: 8)
        let exact = try ALS.fit(x, settings: ["factors": "6", "iterations": "10"])
        let cg = try ALS.fit(x, settings: ["factors": "6", "iterations": "10", "solver": "cg", "cgSteps": "6"])
        var agree = 0
        for u in 0..<x.rowCount {
            if try exact.recommend(user: u, k: 1).first?.index == cg.recommend(user: u, k: 1).first?.index { agree += 1 }
        }
        #expect(agree >= 40, "top-1 agreement \(agree) of 50")
    }

    @Test func foldInOfATrainedUserReproducesTheirRanking() throws {
        let x = RecommenderConformance.randomInteractions(users: 40, items: 30, perUser: 8, seed: 12)
        let model = try ALS.fit(x, settings: ["factors": "8", "iterations": "10"])
        var same = 0
        for u in 0..<x.rowCount {
            let folded = try model.recommend(history: model.seenItems(ofUser: u), k: 5).map(\.index)
            if folded == (try model.recommend(user: u, k: 5)).map(\.index) { same += 1 }
        }
        #expect(same >= 36, "\(same) of 40 identical top-5 lists")   // observed 40 of 40
    }

    @Test func explanationTermsSumToTheFoldInScore() throws {
        let x = RecommenderConformance.randomInteractions(users: 30, items: 20, perUser: 6, seed: 2)
        let model = try ALS.fit(x, settings: ["factors": "6", "iterations": "5"])
        let history = model.seenItems(ofUser: 3)
        let vector = try model.recalculateUser(history: history)
        let scores = model.factors.scores(userVector: vector)
        for item in [0, 5, 11] {
            let parts = try model.explain(history: history, item: item)
            #expect(Set(parts.map(\.item)) == Set(history))
            #expect(abs(parts.reduce(0) { $0 + $1.weight } - scores[item]) < 1e-3)
        }
    }

    @Test func frequencyScaledRegularisationRuns() throws {
        let x = RecommenderConformance.randomInteractions()
        let model = try ALS.fit(x, settings: ["factors": "4", "iterations": "3", "regularizationExponent": "1", "regularization": "0.01"])
        #expect(model.factors.userFactors.values.allSatisfy { $0.isFinite })
    }
}

@Suite struct BPRTests {
    @Test func sameSeedAndThreadsGiveTheSameModel() throws {
        let x = RecommenderConformance.randomInteractions(users: 50, items: 40, perUser: 6, seed: 1)
        for threads in ["1", "2"] {
            let a = try BPR.fit(x, settings: ["factors": "4", "epochs": "3", "threads": threads])
            let b = try BPR.fit(x, settings: ["factors": "4", "epochs": "3", "threads": threads])
            #expect(a.factors.userFactors == b.factors.userFactors && a.factors.itemBias == b.factors.itemBias)
        }
        let c = try BPR.fit(x, settings: ["factors": "4", "epochs": "3", "seed": "7", "threads": "1"])
        let d = try BPR.fit(x, settings: ["factors": "4", "epochs": "3", "threads": "1"])
        #expect(c.factors.userFactors != d.factors.userFactors)
    }

    @Test func learnsToRankPositivesFirst() throws {
        let x = RecommenderConformance.randomInteractions(users: 60, items: 30, perUser: 6, seed: 5)
        for optimizer in ["sgd", "adagrad"] {
            let model = try BPR.fit(x, settings: ["factors": "8", "epochs": "100", "optimizer": optimizer, "learningRate": optimizer == "sgd" ? "0.05" : "0.1"])
            // Training AUC: a positive outranks a non-positive for most pairs.
            var wins = 0, total = 0
            for u in 0..<x.rowCount {
                let s = model.scores(forUser: u)
                let positives = Set(model.seenItems(ofUser: u))
                for i in positives { for j in 0..<x.columnCount where !positives.contains(j) { total += 1; if s[i] > s[j] { wins += 1 } } }
            }
            #expect(Double(wins) / Double(total) > 0.85, "\(optimizer): AUC \(Double(wins) / Double(total))")
        }
    }
}

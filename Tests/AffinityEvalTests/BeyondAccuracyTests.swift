import AffinityData
import AffinityLinalg
import Foundation
import Testing
@testable import AffinityEval

/// Issue "Retrieve -> rank -> re-rank", beyond-accuracy metrics: each formula on a case worked by hand.
@Suite struct BeyondAccuracyTests {
    @Test func giniOfExposure() {
        #expect(BeyondAccuracy.gini([1, 1, 1, 1]) == 0)
        #expect(BeyondAccuracy.gini([0, 0, 0, 4]) == 0.75)   // (2*4 - 4 - 1) * 4 / (4 * 4)
        #expect(BeyondAccuracy.gini([0, 0]) == 0)
    }

    @Test func intraListDiversityIsOneMinusJaccardOverPairs() {
        let categories = [[0], [0, 1], [2], []]
        // Pairs: (0,1) 1 - 1/2, (0,2) 1, (1,2) 1; item 3 has no category and is left out.
        let d = BeyondAccuracy.intraListDiversity([0, 1, 2, 3], categories)!
        #expect(abs(d - 2.5 / 3) < 1e-12)
        #expect(BeyondAccuracy.intraListDiversity([3, 3], categories) == nil)
    }

    @Test func noveltyIsSelfInformation() {
        #expect(BeyondAccuracy.selfInformation(1, users: 8) == 3)
        #expect(BeyondAccuracy.selfInformation(0, users: 8) == 3)   // nobody's item counts as one user's
        #expect(BeyondAccuracy.selfInformation(8, users: 8) == 0)
    }

    @Test func calibrationIsStecksKL() {
        let categories = [[0], [1], [0]]
        // p = {0: .5, 1: .5}; q = {0: 1}; q~ = {0: .995, 1: .005}.
        let expected = 0.5 * log(0.5 / 0.995) + 0.5 * log(0.5 / 0.005)
        let kl = BeyondAccuracy.miscalibration(history: [0, 1], list: [0, 2], categories)!
        #expect(abs(kl - expected) < 1e-12)
        #expect(BeyondAccuracy.miscalibration(history: [0, 1], list: [0, 1], categories)! < 1e-12)
    }

    @Test func theEvaluatorReportsThemForTheSameLists() throws {
        // 3 users, 4 items; item 0 is everyone's; the scorer ranks by item index descending.
        let log = InteractionLog(source: "t", rows: [
            (user: "a", item: "0", rating: nil, timestamp: nil), (user: "a", item: "1", rating: nil, timestamp: nil),
            (user: "b", item: "0", rating: nil, timestamp: nil), (user: "b", item: "2", rating: nil, timestamp: nil),
            (user: "c", item: "0", rating: nil, timestamp: nil), (user: "c", item: "3", rating: nil, timestamp: nil),
        ])
        let test = InteractionLog(source: "t", rows: [(user: "a", item: "3", rating: nil, timestamp: nil),
                                                      (user: "b", item: "1", rating: nil, timestamp: nil)])
        let split = SplitFolder(path: "t", train: log, test: test)
        let data = try EvaluationData(split: split)
        let profile = ItemProfile(items: data.items, genres: ["0": ["x"], "1": ["x"], "2": ["y"], "3": ["y", "x"]], history: data.history)
        let report = try Evaluator(cutoffs: [2]).evaluate(data, profile: profile) { _, scores in
            for i in 0..<scores.count { scores[i] = Float(i) }
        }
        // Lists: a gets [3, 2], b gets [3, 1].
        let b = try #require(report.beyondAccuracy?.first)
        #expect(b.k == 2)
        let ildA = 1 - 0.5, ildB = 1 - 0.5
        #expect(abs(b.intraListDiversity! - (ildA + ildB) / 2) < 1e-12)
        let novelty = (BeyondAccuracy.selfInformation(1, users: 3) * 2 + BeyondAccuracy.selfInformation(1, users: 3) * 2) / 4
        #expect(abs(b.novelty - novelty) < 1e-12)
        #expect(abs(b.exposureGini - BeyondAccuracy.gini([0, 1, 1, 2])) < 1e-12)
        #expect(b.calibrationKL != nil)
        #expect(report.table().contains("ILD"))
    }
}

@Suite struct SemanticAnalysisTests {
    @Test func overlapDecilesAndCloseButWrongPairs() {
        let overlap = SemanticAnalysis.overlap(textNeighbours: [[1, 2], [0, 2], []], taskNeighbours: [[2, 3], [0, 2], [1]])
        #expect(overlap[0] == 0.5 && overlap[1] == 1 && overlap[2] == nil)
        let deciles = SemanticAnalysis.byPopularityDecile((0..<20).map { Double($0) }, popularity: (0..<20).map { 20 - $0 })
        #expect(deciles.count == 10 && deciles.first == 18.5 && deciles.last == 0.5)
        var w = Matrix(rows: 3, columns: 3)
        w[0, 1] = -0.5; w[1, 0] = -0.2; w[0, 2] = 0.3; w[2, 1] = -0.1
        let pairs = SemanticAnalysis.closeButWrong(textNeighbours: [[(1, 0.9), (2, 0.8)], [(0, 0.9)], [(1, 0.7)]], weights: w, count: 5)
        // (0, 1) and (1, 0) are one pair: the more negative direction is kept.
        #expect(pairs.map { [$0.item, $0.neighbour] } == [[0, 1], [2, 1]])
        #expect(SemanticAnalysis.negativeShare([(0, 1), (0, 2)], weights: w) == 0.5)
    }
}

import Foundation
import Testing
import AffinityData
import AffinityEval
import AffinityModels

/// Paths in ../shared/data, present on the team's machines and CI but not in a user's fresh clone.
enum SharedData {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../../shared/data").standardized.path
    static let ml1mHoldout = root + "/splits/ml-1m-holdout-s42"
    static var hasML1MHoldout: Bool {
        let ok = FileManager.default.fileExists(atPath: ml1mHoldout + "/train.tsv")
        if !ok { print("SKIPPED: \(ml1mHoldout) is absent (../shared/data is not beside this clone); shared-data tests skipped") }
        return ok
    }
}

@Suite struct SharedDataTests {
    /// Popularity on ml-1m-holdout-s42 equals the independent evaluator's values to 6 decimals.
    @Test(.enabled(if: SharedData.hasML1MHoldout, "needs ../shared/data/splits/ml-1m-holdout-s42"))
    func popularityMatchesReferenceEvaluator() throws {
        let split = try SplitFolder.read(SharedData.ml1mHoldout)
        let model = try Popularity.fit(split.train.matrix())
        let data = try EvaluationData(split: split)
        let report = try Evaluator(cutoffs: [10, 20, 50]).evaluate(data) { u, s in model.scores(forUser: u, into: s) }
        #expect(report.evaluatedUsers == 6034 && report.candidateItems == 3496)
        let reference: [Int: [Double]] = [   // HR, Recall, NDCG, MRR, Coverage (shared/bench/quality/evaluate.py)
            10: [0.611535, 0.153351, 0.156455, 0.309041, 0.016876],
            20: [0.736990, 0.170852, 0.158020, 0.317734, 0.025744],
            50: [0.856811, 0.240701, 0.181519, 0.321740, 0.054348],
        ]
        for (k, values) in reference {
            let m = report.metrics(at: k)!
            for (ours, theirs) in zip([m.hitRate, m.recall, m.ndcg, m.mrr, m.coverage], values) {
                #expect(abs(ours - theirs) < 5e-7, "K=\(k): \(ours) vs \(theirs)")
            }
        }
    }
}

import Foundation
import Testing
@testable import AffinityData
@testable import AffinityEval
import AffinityLinalg
import AffinityTestScratch

/// Writes a split folder from TSV texts and reads it back.
func makeSplit(train: String, test: String, valid: String? = nil) throws -> SplitFolder {
    let dir = TestScratch.path("affinity-eval")
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    try Data(train.utf8).write(to: URL(fileURLWithPath: dir + "/train.tsv"))
    try Data(test.utf8).write(to: URL(fileURLWithPath: dir + "/test.tsv"))
    if let valid { try Data(valid.utf8).write(to: URL(fileURLWithPath: dir + "/valid.tsv")) }
    return try SplitFolder.read(dir)
}

@Suite struct EvaluatorTests {
    /// The block path (users scored 16 at a time, row after row) gives the per-user path's report:
    /// metrics, rankings and per-user rows, for users across several chunks and blocks, 1 and 2 threads.
    @Test func blockScoringEqualsPerUserScoring() throws {
        var train = "", test = ""
        for u in 0..<150 {
            for k in 0..<4 { train += "u\(u)\ti\((u * 7 + k * 13) % 40)\n" }
            test += "u\(u)\ti\((u * 11 + 5) % 40)\n"
        }
        let data = try EvaluationData(split: try makeSplit(train: train, test: test))
        let n = data.candidateCount
        @Sendable func score(_ user: Int, _ item: Int) -> Float { Float((user * 31 + item * 17) % 23) + Float(item % 3) * 0.25 }
        for threads in [1, 2] {
            let evaluator = try Evaluator(cutoffs: [5, 10], threads: threads, keepPerUser: true, keepRankings: true)
            let single = evaluator.evaluate(data) { user, s in for i in 0..<n { s[i] = score(user, i) } }
            let blocked = evaluator.evaluate(data, blockScorer: { users, s in
                for (r, user) in users.enumerated() { for i in 0..<n { s[r * n + i] = score(user, i) } }
            }) { _, _ in Issue.record("the block path must not call the per-user scorer") }
            #expect(single.metrics == blocked.metrics && single.rankings == blocked.rankings)
            #expect(single.perUser?.map(\.recall) == blocked.perUser?.map(\.recall))
        }
    }

    /// A cutoff beyond the catalogue is the full ranking: same metrics as K = every candidate, and
    /// no K-sized allocation (issue "Hardening": `--cutoffs 1000000000` tried to allocate 3.7 TB).
    @Test func aHugeCutoffIsTheFullRanking() throws {
        let split = try makeSplit(train: "u1\ta\nu1\tb\nu2\tc\nu2\td\nu2\te\nu3\ta\n", test: "u1\tc\nu1\td\nu2\ta\nu3\tb\n")
        let data = try EvaluationData(split: split)
        let fixed: [Float] = [0.1, 0.2, 0.5, 0.9, 0.5]
        let huge = try Evaluator(cutoffs: [1_000_000_000], threads: 1, keepRankings: true).evaluate(data) { _, s in _ = s.initialize(from: fixed) }
        let full = try Evaluator(cutoffs: [5], threads: 1, keepRankings: true).evaluate(data) { _, s in _ = s.initialize(from: fixed) }
        let a = huge.metrics[0], b = full.metrics[0]
        #expect(a.k == 1_000_000_000)
        #expect([a.hitRate, a.recall, a.ndcg, a.mrr, a.coverage] == [b.hitRate, b.recall, b.ndcg, b.mrr, b.coverage])
        #expect(huge.rankings == full.rankings)
    }

    /// Hand-computed case. Items a..e (internal 0..4 by first appearance in train), scores fixed.
    /// u1 (history a,b; test c,d): ranks d(0.9) e(0.5) c(0.5->tie, c=2 < e=4 so c first).
    @Test func goldenValues() throws {
        let split = try makeSplit(
            train: "u1\ta\nu1\tb\nu2\tc\nu2\td\nu2\te\nu3\ta\n",
            test: "u1\tc\nu1\td\nu2\ta\nu3\tb\nu3\tzzz\nu9\ta\nu3\ta\n")
        let data = try EvaluationData(split: split)
        #expect(data.evaluatedUsers == [0, 1, 2])
        #expect(data.skipped == ["cold_test_users": 1, "test_rows_item_not_candidate": 1, "test_rows_in_history": 1])
        let fixed: [Float] = [0.1, 0.2, 0.5, 0.9, 0.5]   // a b c d e
        let report = try Evaluator(cutoffs: [1, 2], threads: 1, keepPerUser: true).evaluate(data) { _, s in
            _ = s.initialize(from: fixed)
        }
        // u1 ranks d, c, e: hits at 1 and 2.  u2 (history c,d,e) ranks b, a: hit at 2.  u3 (history a) ranks d, c, e, b: no hit in top 2.
        let k1 = report.metrics(at: 1)!, k2 = report.metrics(at: 2)!
        #expect(k1.hitRate == 1.0 / 3)
        #expect(k1.recall == 1.0 / 3)
        let u2ndcg = (1 / log2(3.0)) / 1.0
        #expect(abs(k2.ndcg - (1.0 + u2ndcg + 0) / 3) < 1e-12)
        #expect(abs(k2.mrr - (1.0 + 0.5 + 0) / 3) < 1e-12)
        #expect(abs(k2.recall - (2.0 / 2 + 1.0 / 1 + 0) / 3) < 1e-12)
        #expect(k2.hitRate == 2.0 / 3)
        // Coverage@2: u1 {d,c}, u2 {b,a}, u3 {d,c} -> 4 of 5 candidates.
        #expect(k2.coverage == 4.0 / 5)
        #expect(k1.coverage == 2.0 / 5)   // top-1: u1 d, u2 b, u3 d
        #expect(report.perUser?.map(\.user) == ["u1", "u2", "u3"])
        #expect(report.perUserTSV()?.split(separator: "\n").first == "user\ttest_items\thr@1\thr@2\trecall@1\trecall@2\tndcg@1\tndcg@2\tmrr@1\tmrr@2")
    }

    /// The evaluator against a direct transcription of docs/protocol.md, on random data and scores
    /// with many ties, at several thread counts.
    @Test func matchesProtocolTranscription() throws {
        var g = SeededGenerator(seed: 11)
        var train = "", test = ""
        for u in 0..<60 {
            for _ in 0..<8 { train += "u\(u)\ti\(g.next(below: 40))\n" }
            for _ in 0..<3 { test += "u\(u)\ti\(g.next(below: 45))\n" }
        }
        let split = try makeSplit(train: train, test: test)
        let data = try EvaluationData(split: split)
        let nItems = data.candidateCount
        let scoreTable = (0..<data.users.count).map { _ in (0..<nItems).map { _ in Float(g.next(below: 4)) } }
        let cutoffs = [1, 5, 10, 50]
        let reports = try [1, 2, 3].map { threads in
            try Evaluator(cutoffs: cutoffs, threads: threads).evaluate(data) { u, s in _ = s.initialize(from: scoreTable[u]) }
        }
        #expect(reports[0].metrics == reports[1].metrics && reports[1].metrics == reports[2].metrics)

        // Reference: sort all candidates not in history by (-score, index).
        for (j, k) in cutoffs.enumerated() {
            var hr = 0.0, recall = 0.0, ndcg = 0.0, mrr = 0.0
            var covered = Set<Int>()
            for (p, u) in data.evaluatedUsers.enumerated() {
                let history = Set(data.history.row(u).map { Int($0) })
                let ranked = (0..<nItems).filter { !history.contains($0) }
                    .sorted { scoreTable[u][$0] != scoreTable[u][$1] ? scoreTable[u][$0] > scoreTable[u][$1] : $0 < $1 }
                let top = Array(ranked.prefix(k))
                covered.formUnion(top)
                let truth = Set(data.testItems[p].map { Int($0) })
                let hits = top.enumerated().filter { truth.contains($0.element) }.map(\.offset)
                hr += hits.isEmpty ? 0 : 1
                recall += Double(hits.count) / Double(min(k, truth.count))
                let dcg = hits.reduce(0.0) { $0 + 1 / log2(Double($1) + 2) }
                let idcg = (0..<min(k, truth.count)).reduce(0.0) { $0 + 1 / log2(Double($1) + 2) }
                ndcg += dcg / idcg
                mrr += hits.first.map { 1 / Double($0 + 1) } ?? 0
            }
            let n = Double(data.evaluatedUsers.count)
            let m = reports[0].metrics[j]
            #expect(abs(m.hitRate - hr / n) < 1e-12 && abs(m.recall - recall / n) < 1e-12)
            #expect(abs(m.ndcg - ndcg / n) < 1e-12 && abs(m.mrr - mrr / n) < 1e-12)
            #expect(m.coverage == Double(covered.count) / Double(nItems))
        }
    }

    @Test func leaveLastOutTestAddsValidationToHistory() throws {
        let split = try makeSplit(train: "u\ta\nu\tb\nv\tc\nv\ta\n", test: "u\tc\n", valid: "u\td\nu\tc\n")
        let testData = try EvaluationData(split: split, target: .test)
        // valid item d is not a candidate (not in train); valid item c joins the history, so test c is in history.
        #expect(testData.history.contains(row: 0, column: 2))
        #expect(testData.evaluatedUsers.isEmpty && testData.skipped["test_rows_in_history"] == 1)
        let validData = try EvaluationData(split: split, target: .valid)
        #expect(validData.evaluatedUsers == [0] && validData.testItems == [[2]])
        let noValid = try makeSplit(train: "u\ta\n", test: "u\ta\n")
        #expect(throws: DataError.self) { try EvaluationData(split: noValid, target: .valid) }
    }

    @Test func badCutoffsAreRejected() {
        #expect(throws: DataError.self) { try Evaluator(cutoffs: []) }
        #expect(throws: DataError.self) { try Evaluator(cutoffs: [10, 0]) }
    }
}

import Foundation

extension EvaluationReport {
    /// A fixed-width table, metrics with 4 decimals (docs/protocol.md), one row per cutoff.
    public func table(title: String? = nil) -> String {
        var out = ""
        if let title { out += title + "\n" }
        out += "evaluated users: \(evaluatedUsers), candidate items: \(candidateItems)\n"
        out += "   K      HR  Recall    NDCG     MRR  Coverage\n"
        for m in metrics {
            out += pad(String(m.k), 4) + "  " + [m.hitRate, m.recall, m.ndcg, m.mrr].map { fmt($0) }.joined(separator: "  ")
                + "    " + fmt(m.coverage) + "\n"
        }
        if let beyond = beyondAccuracy {
            // Beyond accuracy (docs/protocol.md): diversity and calibration need item categories.
            out += "   K     ILD  Novelty    Gini  CalibKL\n"
            for b in beyond {
                out += pad(String(b.k), 4) + "  " + pad(b.intraListDiversity.map(fmt) ?? "-", 6) + "  " + pad(String(format: "%.3f", b.novelty), 7)
                    + "  " + fmt(b.exposureGini) + "  " + pad(b.calibrationKL.map(fmt) ?? "-", 7) + "\n"
            }
        }
        if !skipped.isEmpty {
            out += "not evaluated: " + skipped.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ") + "\n"
        }
        return out
    }

    /// Per-user metrics as TSV: `user, test_items, hr@K, recall@K, ndcg@K, mrr@K` for each K.
    public func perUserTSV() -> String? {
        guard let perUser else { return nil }
        let ks = metrics.map(\.k)
        var out = "user\ttest_items"
        for name in ["hr", "recall", "ndcg", "mrr"] { for k in ks { out += "\t\(name)@\(k)" } }
        out += "\n"
        for u in perUser {
            out += "\(u.user)\t\(u.testItems)"
            for column in [u.hitRate, u.recall, u.ndcg, u.mrr] { for v in column { out += "\t" + String(format: "%.6f", v) } }
            out += "\n"
        }
        return out
    }
}

func fmt(_ v: Double) -> String { String(format: "%.4f", v) }
func pad(_ s: String, _ width: Int) -> String { String(repeating: " ", count: max(0, width - s.count)) + s }

extension EvaluationReport {
    /// The kept rankings as `user<TAB>item<TAB>rank` TSV (rank 1 = best), the input format of
    /// `shared/bench/quality/evaluate.py --recs`, so any figure can be re-scored independently.
    public func recommendationsTSV(_ data: EvaluationData) -> String? {
        guard let rankings else { return nil }
        var out = "user\titem\trank\n"
        for (p, list) in rankings.enumerated() {
            let user = data.users[data.evaluatedUsers[p]]
            for (r, item) in list.enumerated() { out += "\(user)\t\(data.items[item])\t\(r + 1)\n" }
        }
        return out
    }
}

/// A side-by-side comparison of several models' reports at chosen cutoffs.
public func comparisonTable(_ rows: [(name: String, report: EvaluationReport, trainSeconds: Double)], cutoffs: [Int]) -> String {
    let nameWidth = max(10, rows.map(\.name.count).max() ?? 0)
    var header = "model".padding(toLength: nameWidth, withPad: " ", startingAt: 0)
    for k in cutoffs { header += "  " + ["HR@\(k)", "Rec@\(k)", "NDCG@\(k)", "MRR@\(k)", "Cov@\(k)"].map { pad($0, 8) }.joined(separator: " ") }
    header += "   train s   eval s"
    var out = header + "\n"
    for row in rows {
        var line = row.name.padding(toLength: nameWidth, withPad: " ", startingAt: 0)
        for k in cutoffs {
            guard let m = row.report.metrics(at: k) else { continue }
            line += "  " + [m.hitRate, m.recall, m.ndcg, m.mrr, m.coverage].map { pad(fmt($0), 8) }.joined(separator: " ")
        }
        line += pad(String(format: "%.2f", row.trainSeconds), 10) + pad(String(format: "%.2f", row.report.seconds), 9)
        out += line + "\n"
    }
    return out
}

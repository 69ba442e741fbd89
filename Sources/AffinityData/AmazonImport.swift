import Foundation

/// Amazon review data in the two layouts of `../shared/data/amazon` besides UniSRec's
/// (`UniSRecImport`): a ReChorus folder (Office) and a 5-core review file (Musical Instruments
/// 2014). Both give every review as an interaction (no rating threshold: a review is a purchase,
/// as UniSRec and VQ-Rec count them) with its time; `Splitter.split` then makes the
/// leave-last-out split.
public enum AmazonImport {
    /// A ReChorus folder NAME (`train.csv`, `dev.csv`, `test.csv`: `user_id<TAB>item_id<TAB>time[<TAB>negatives]`
    /// with a header, 1-based item indexes of `NAME.item2index`): every row of the three files,
    /// items named by their ASINs, users by their ReChorus IDs; the catalogue holds `NAME.text`
    /// (`ASIN<TAB>text`) as each item's title when the folder has it.
    public static func reChorus(directory: String) throws -> (log: InteractionLog, catalog: ItemCatalog) {
        let name = (directory as NSString).lastPathComponent
        func path(_ file: String) -> String { (directory as NSString).appendingPathComponent(file) }
        let asins = try UniSRecImport.readIndex(path(name + ".item2index"))
        var rows: [(user: String, item: String, rating: Float?, timestamp: Int64?)] = []
        for file in ["train.csv", "dev.csv", "test.csv"] {
            let p = path(file)
            let text = String(decoding: try TextScanner.readBytes(p), as: UTF8.self)
            for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() where !line.isEmpty {
                if n == 0 && line.hasPrefix("user_id") { continue }
                let f = line.split(separator: "\t", omittingEmptySubsequences: false)
                guard f.count >= 3, let i = Int(f[1]), let t = Int64(f[2]) else {
                    throw DataError.malformedLine(file: p, line: n + 1, reason: "expected user_id<TAB>item_id<TAB>time")
                }
                guard let asin = asins[i] else { throw DataError.malformedLine(file: p, line: n + 1, reason: "item \(i) is not in \(name).item2index") }
                rows.append((user: String(f[0]), item: asin, rating: nil, timestamp: t))
            }
        }
        guard !rows.isEmpty else { throw DataError.emptyFile(file: path("train.csv")) }
        var catalog = ItemCatalog()
        let textPath = path(name + ".text")
        if FileManager.default.fileExists(atPath: textPath) {
            let texts = try ItemText.readTexts(path: textPath)
            for (id, t) in zip(texts.ids, texts.texts) { catalog.titles[id] = ItemText.oneLine(t) }
        }
        return (InteractionLog(source: directory, rows: rows), catalog)
    }

    /// A review file (JSON lines, optionally gzip-compressed: `reviewerID`, `asin`, `overall`,
    /// `unixReviewTime`, `summary`). With `textFromReviews`, an item's text is its reviews'
    /// summaries joined in time order (up to `summaries` of them): a stand-in where the item
    /// metadata is missing, built from what reviewers wrote, so it must not describe an item of an
    /// evaluated domain (its test reviews would be in it); fine for a pre-training domain.
    public static func reviews(path: String, textFromReviews: Bool, summaries: Int = 10) throws -> (log: InteractionLog, catalog: ItemCatalog) {
        var rows: [(user: String, item: String, rating: Float?, timestamp: Int64?)] = []
        var summariesByItem: [String: [(Int64, String)]] = [:]
        // Streamed (plain or gzip): the file's text is never held whole.
        try InteractionReader.LineSource.open(path).forEachLine { n, line in
            guard !TextScanner.isBlank(line) else { return true }
            guard let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] else {
                throw DataError.malformedLine(file: path, line: n, reason: "not a JSON object")
            }
            guard let user = object["reviewerID"] as? String, !user.isEmpty, let item = object["asin"] as? String, !item.isEmpty else {
                throw DataError.malformedLine(file: path, line: n, reason: "reviewerID and asin must be non-empty strings")
            }
            guard let time = (object["unixReviewTime"] as? NSNumber)?.int64Value else {
                throw DataError.malformedLine(file: path, line: n, reason: "unixReviewTime must be a number")
            }
            let rating = (object["overall"] as? NSNumber)?.floatValue
            rows.append((user: user, item: item, rating: rating, timestamp: time))
            if textFromReviews, let s = object["summary"] as? String {
                let t = ItemText.oneLine(s)
                if !t.isEmpty { summariesByItem[item, default: []].append((time, t)) }
            }
            return true
        }
        guard !rows.isEmpty else { throw DataError.emptyFile(file: path) }
        var catalog = ItemCatalog()
        for (item, list) in summariesByItem {
            catalog.titles[item] = list.sorted { $0 < $1 }.prefix(summaries).map(\.1).joined(separator: ". ")
        }
        return (InteractionLog(source: path, rows: rows), catalog)
    }

    /// The leave-last-out split of an Amazon log: every interaction a positive, users with at
    /// least 3 (a train item, a validation item and a test item).
    public static func leaveLastOut(_ log: InteractionLog) throws -> DatasetSplit {
        try Splitter.split(log, settings: SplitSettings(strategy: .leaveLastOut, minRating: nil, minUserPositives: 3))
    }
}

import Foundation

/// The UniSRec / VQ-Rec data files (Hou et al.; `../shared/data/amazon/Scientific`): `NAME.train.inter`,
/// `NAME.valid.inter`, `NAME.test.inter` (`user_id:token<TAB>item_id_list:token_seq<TAB>item_id:token`,
/// items as indexes of `NAME.item2index`), `NAME.text` (`ASIN<TAB>text`), `NAME.item2index` and
/// `NAME.user2index` (`raw ID<TAB>index`).
///
/// Each user's whole sequence is their test line's history followed by its target (the train
/// lines are that sequence's prefixes, as UniSRec augments them); the split keeps the files'
/// leave-last-out: the last item is test, the one before validation, the rest train, in order
/// (timestamps are positions). Items are their ASINs, users their raw IDs; as the protocol says,
/// validation and test items never seen in train are removed. The catalogue holds each item's
/// text as its title.
public enum UniSRecImport {
    public static func read(directory: String) throws -> (split: DatasetSplit, catalog: ItemCatalog, dropped: Int) {
        let name = (directory as NSString).lastPathComponent
        func file(_ suffix: String) -> String { (directory as NSString).appendingPathComponent(name + suffix) }
        let items = try readIndex(file(".item2index")), users = try readIndex(file(".user2index"))
        // The test file: user, history, target.
        let testPath = file(".test.inter")
        let text = String(decoding: try TextScanner.readBytes(testPath), as: UTF8.self)
        var rows: [(user: String, item: String, rating: Float?, timestamp: Int64?)] = []
        var trainRows: [Int] = [], validRows: [Int] = [], testRows: [Int] = []
        var dropped = 0
        var trainItems = Set<String>()
        var pending: [(row: Int, isTest: Bool)] = []
        for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: true).enumerated() {
            if n == 0 && line.hasPrefix("user_id") { continue }
            let parts = line.split(separator: "\t", omittingEmptySubsequences: false)
            guard parts.count == 3, let u = Int(parts[0]), let target = Int(parts[2]) else {
                throw DataError.malformedLine(file: testPath, line: n + 1, reason: "expected user<TAB>item list<TAB>item")
            }
            var sequence: [Int] = []
            for token in parts[1].split(separator: " ") {
                guard let i = Int(token) else { throw DataError.malformedLine(file: testPath, line: n + 1, reason: "item index '\(token)' is not a number") }
                sequence.append(i)
            }
            sequence.append(target)
            guard let user = users[u] else { throw DataError.malformedLine(file: testPath, line: n + 1, reason: "user \(u) is not in \(name).user2index") }
            guard sequence.count >= 3 else { dropped += 1; continue }
            for (position, i) in sequence.enumerated() {
                guard let item = items[i] else { throw DataError.malformedLine(file: testPath, line: n + 1, reason: "item \(i) is not in \(name).item2index") }
                let r = rows.count
                rows.append((user: user, item: item, rating: nil, timestamp: Int64(position)))
                switch position {
                case sequence.count - 1: pending.append((r, true))
                case sequence.count - 2: pending.append((r, false))
                default: trainRows.append(r); trainItems.insert(item)
                }
            }
        }
        for (r, isTest) in pending {
            guard trainItems.contains(rows[r].item) else { dropped += 1; continue }
            if isTest { testRows.append(r) } else { validRows.append(r) }
        }
        guard !trainRows.isEmpty else { throw DataError.emptyFile(file: testPath) }
        let log = InteractionLog(source: testPath, rows: rows)
        let settings = SplitSettings(strategy: .leaveLastOut, minRating: nil, minUserPositives: 3)
        let split = DatasetSplit(positives: log, trainRows: trainRows, testRows: testRows, validRows: validRows, settings: settings,
                                 facts: ["unseen_items_removed": dropped])
        var catalog = ItemCatalog()
        let texts = try ItemText.readTexts(path: file(".text"))
        for (id, t) in zip(texts.ids, texts.texts) {
            catalog.titles[id] = ItemText.oneLine(t)
        }
        return (split, catalog, dropped)
    }

    /// A `raw ID<TAB>index` file (`NAME.item2index`, `NAME.user2index`) as index -> raw ID.
    static func readIndex(_ path: String) throws -> [Int: String] {
        var out: [Int: String] = [:]
        let text = String(decoding: try TextScanner.readBytes(path), as: UTF8.self)
        for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: true).enumerated() {
            let parts = line.split(separator: "\t")
            guard parts.count == 2, let i = Int(parts[1].trimmingCharacters(in: .whitespaces)) else {
                throw DataError.malformedLine(file: path, line: n + 1, reason: "expected raw ID<TAB>index")
            }
            out[i] = String(parts[0])
        }
        return out
    }
}

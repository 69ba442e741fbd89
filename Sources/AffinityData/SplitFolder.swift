import AffinityLinalg
import Foundation

/// A split as stored on disk: `train.tsv`, `test.tsv`, `valid.tsv` (where there is one) and
/// `meta.json` in one folder (docs/protocol.md). `items.tsv` holds item metadata when it was known.
public struct SplitFolder: Sendable {
    public var path: String
    public var train: InteractionLog
    public var test: InteractionLog
    public var valid: InteractionLog?
    /// The parsed `meta.json`, or nil when absent.
    public var meta: [String: String]?
    public var catalog: ItemCatalog?

    public init(path: String, train: InteractionLog, test: InteractionLog, valid: InteractionLog? = nil,
                meta: [String: String]? = nil, catalog: ItemCatalog? = nil) {
        self.path = path
        self.train = train
        self.test = test
        self.valid = valid
        self.meta = meta
        self.catalog = catalog
    }

    /// The rating threshold of the split's positives: `min_rating` in meta.json, else parsed from
    /// `positive_rule` ("rating >= 4 ..."; "every row" is nil); nil when the folder does not say.
    /// `.some(nil)` means every row was kept.
    public var positiveThreshold: Float?? {
        guard let meta else { return nil }
        if let raw = meta["min_rating"] { return .some(Float(raw)) }
        guard let rule = meta["positive_rule"] else { return nil }
        if rule.hasPrefix("every row") { return .some(nil) }
        let scanner = Scanner(string: rule)
        guard scanner.scanString("rating") != nil, scanner.scanString(">=") != nil, let v = scanner.scanFloat() else { return nil }
        return .some(v)
    }

    /// The folder's name, used as the split's name in reports.
    public var name: String { URL(fileURLWithPath: path).standardizedFileURL.lastPathComponent }

    /// Reads a split folder. A missing `train.tsv` or `test.tsv` is an error naming the folder.
    public static func read(_ path: String) throws -> SplitFolder {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw DataError.unreadable(path: path, reason: "no such split folder")
        }
        func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }
        for required in ["train.tsv", "test.tsv"] where !FileManager.default.fileExists(atPath: file(required)) {
            throw DataError.incompleteSplit(folder: path, missing: required)
        }
        let train = try InteractionReader.read(path: file("train.tsv"), format: .tsv)
        let test = try InteractionReader.read(path: file("test.tsv"), format: .tsv)
        let valid = FileManager.default.fileExists(atPath: file("valid.tsv"))
            ? try InteractionReader.read(path: file("valid.tsv"), format: .tsv) : nil
        var meta: [String: String]? = nil
        if let data = FileManager.default.contents(atPath: file("meta.json")) {
            guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw DataError.unreadable(path: file("meta.json"), reason: "is not a JSON object")
            }
            meta = object.mapValues { "\($0)" }
        }
        let catalog = FileManager.default.fileExists(atPath: file("items.tsv")) ? try ItemCatalog.read(path: file("items.tsv")) : nil
        return SplitFolder(path: path, train: train, test: test, valid: valid, meta: meta, catalog: catalog)
    }

    /// Writes a split into `path` atomically (built in a temporary folder, then renamed).
    public static func write(_ split: DatasetSplit, to path: String, source: String, catalog: ItemCatalog? = nil,
                             overwrite: Bool = false) throws {
        // TSV cannot hold a tab or line break inside a field: refuse such IDs (read from a CSV)
        // here, instead of writing a split that its own reader rejects.
        for (kind, vocabulary) in [("user", split.positives.users), ("item", split.positives.items)] {
            if let bad = vocabulary.ids.first(where: { $0.unicodeScalars.contains { $0 == "\t" || $0 == "\n" || $0 == "\r" } }) {
                throw DataError.invalidSetting(name: "\(kind) ID \(bad.debugDescription)",
                                               reason: "contains a tab or line break, which a TSV split cannot hold; clean the IDs in the input first")
            }
        }
        let train = InteractionWriter.tsv(split.positives, rows: split.trainRows)
        let test = InteractionWriter.tsv(split.positives, rows: split.testRows)
        let valid = split.validRows.map { InteractionWriter.tsv(split.positives, rows: $0) }
        var meta: [String: Any] = [
            "name": URL(fileURLWithPath: path).lastPathComponent,
            "protocol": "docs/protocol.md",
            "generator": "affinity split",
            "source": source,
            "kind": split.settings.strategy.rawValue,
            "seed": split.settings.seed,
            "test_fraction": split.settings.testFraction,
            "min_user_positives": split.settings.minUserPositives,
            "positive_rule": split.settings.minRating.map { "rating >= \(InteractionWriter.formatRating($0)) (lower ratings dropped)" } ?? "every row",
            "min_rating": split.settings.minRating.map { Double($0) as Any } ?? NSNull(),
            "train": counts(split.positives, split.trainRows),
            "test": counts(split.positives, split.testRows),
        ]
        if let v = split.validRows { meta["valid"] = counts(split.positives, v) }
        for (k, v) in split.facts { meta[k] = v }
        let metaData = try JSONSerialization.data(withJSONObject: meta, options: [.prettyPrinted, .sortedKeys])
        try AtomicWrite.folder(path, overwrite: overwrite, replaceable: isSplitFolder) { tmp in
            func put(_ name: String, _ text: String) throws {
                try Data(text.utf8).write(to: URL(fileURLWithPath: (tmp as NSString).appendingPathComponent(name)))
            }
            try put("train.tsv", train)
            try put("test.tsv", test)
            if let valid { try put("valid.tsv", valid) }
            try Data(metaData).write(to: URL(fileURLWithPath: (tmp as NSString).appendingPathComponent("meta.json")))
            if let catalog, !catalog.isEmpty {
                let items = split.positives.items.ids
                try put("items.tsv", catalog.tsv(items: items))
            }
        }
    }

    /// Whether `path` holds a split this project wrote (`meta.json` with `"protocol"`, and `train.tsv`).
    public static func isSplitFolder(_ path: String) -> Bool {
        let meta = (path as NSString).appendingPathComponent("meta.json")
        guard FileManager.default.fileExists(atPath: (path as NSString).appendingPathComponent("train.tsv")),
              case .success(let data) = RegularFile.contents(atPath: meta),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return false }
        return object["protocol"] != nil
    }

    private static func counts(_ log: InteractionLog, _ rows: [Int]) -> [String: Int] {
        ["rows": rows.count,
         "users": Set(rows.map { log.userIndices[$0] }).count,
         "items": Set(rows.map { log.itemIndices[$0] }).count]
    }
}

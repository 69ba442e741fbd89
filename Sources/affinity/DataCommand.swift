import AffinityData
import AffinityLinalg
import ArgumentParser
import Foundation

struct DataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "data",
        abstract: "Inspect interaction files and generate synthetic data.",
        subcommands: [Stats.self, Generate.self, Import.self]
    )

    struct Stats: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Counts, density, ratings and time range of an interaction file.")

        @OptionGroup var input: InputOptions
        @Option(name: .long, help: "Ratings at or above this count as positives in the summary.")
        var minRating: Float = 4
        @Flag(name: .long, help: "Print JSON on stdout.")
        var json = false

        func run() throws {
            let (log, seconds) = try timed { try input.read() }
            let stats = LogStatistics(log, positiveThreshold: minRating)
            if json {
                struct Output: Encodable { var stats: LogStatistics; var loadSeconds: Double; var peakResidentBytes: Int }
                try printJSON(Output(stats: stats, loadSeconds: seconds, peakResidentBytes: ProcessMemory.peakResidentBytes()))
                return
            }
            print("file:            \(stats.source)")
            print("rows:            \(stats.rows)   (loaded in \(String(format: "%.3f", seconds)) s, peak memory \(MemoryBudget.describe(Double(ProcessMemory.peakResidentBytes()))))")
            print("users:           \(stats.users)")
            print("items:           \(stats.items)")
            print("distinct pairs:  \(stats.distinctPairs)   (\(stats.rows - stats.distinctPairs) repeated rows merged)")
            print("density:         \(String(format: "%.5f", stats.density))")
            if let counts = stats.ratingCounts {
                let ordered = counts.sorted { (Double($0.key) ?? 0) < (Double($1.key) ?? 0) }
                print("ratings:         " + ordered.map { "\($0.key): \($0.value)" }.joined(separator: ", "))
                if let p = stats.positives { print("positives (>= \(InteractionWriter.formatRating(minRating))): \(p)") }
            }
            if let first = stats.firstTimestamp, let last = stats.lastTimestamp {
                let f = ISO8601DateFormatter()
                print("time range:      \(f.string(from: Date(timeIntervalSince1970: TimeInterval(first)))) .. \(f.string(from: Date(timeIntervalSince1970: TimeInterval(last))))")
            }
            for (name, s) in [("items per user", stats.itemsPerUser), ("users per item", stats.usersPerItem)] {
                print("\(name):  min \(s.min), median \(s.median), mean \(String(format: "%.1f", s.mean)), max \(s.max)")
            }
        }
    }

    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write the synthetic data set (planted clusters, power-law popularity, substitute pairs).",
            discussion: """
            Writes OUT/ratings.tsv (user, item, rating, timestamp), OUT/items.tsv and
            OUT/truth.json (the planted structure). Written as generated, user by user:
            memory grows with users and items, not with interactions (--interactions
            50000000 --users 1000000 --items 200000 holds about 80 MB). Refused up front,
            with the estimate, when the disk lacks room for the files.
            """
        )
        @Option(name: .long, help: "Output folder.") var out: String
        @Option(name: .long, help: "Number of users.") var users = 2_000
        @Option(name: .long, help: "Number of items.") var items = 1_000
        @Option(name: .long, help: "Total interactions (default: a median of 30 per user, log-normal).") var interactions: Int?
        @Option(name: .long, help: "Number of taste clusters (genres).") var clusters = 8
        @Option(name: .long, help: "Planted substitute pairs (default: 40, at most items/4).") var substitutePairs: Int?
        @Option(name: .long, help: "Random seed.") var seed: UInt64 = 42
        @Flag(name: .long, help: "Replace OUT if it exists.") var force = false

        func run() throws {
            var settings = SyntheticSettings()
            settings.users = users
            settings.items = items
            settings.clusters = clusters
            settings.seed = seed
            settings.interactions = interactions
            settings.substitutePairs = substitutePairs ?? min(settings.substitutePairs, items / 4)
            try settings.validate()
            try MemoryBudget.check(bytes: settings.streamingMemoryBytes, for: "generating \(users) users and \(items) items")
            // About 34 bytes per interaction line (u1000000, i200000, rating, timestamp) and 14 per user in truth.json.
            let expected = Double(interactions ?? users * settings.medianInteractionsPerUser * 6 / 5)
            let need = expected * 34 + Double(users) * 14 + Double(items) * 60
            let parent = (URL(fileURLWithPath: out).standardizedFileURL.deletingLastPathComponent()).path
            if let free = (try? FileManager.default.attributesOfFileSystem(forPath: parent))?[.systemFreeSize] as? NSNumber,
               need > free.doubleValue * 0.95 {
                throw ValidationError("\(out) would need about \(MemoryBudget.describe(need)) of disk; \(parent) has \(MemoryBudget.describe(free.doubleValue)) free")
            }
            // --force replaces only a folder this command wrote (ratings.tsv, items.tsv and truth.json).
            let generated: (String) -> Bool = { path in
                ["ratings.tsv", "items.tsv", "truth.json"].allSatisfy { FileManager.default.fileExists(atPath: (path as NSString).appendingPathComponent($0)) }
            }
            var written = 0, activeUsers = 0
            var firstSeen: [Int32] = []   // items in order of first appearance (items.tsv's order)
            let start = Date()
            try AtomicWrite.folder(out, overwrite: force, replaceable: generated) { tmp in
                let folder = URL(fileURLWithPath: tmp)
                let ratings = try BufferedTextWriter(path: folder.appendingPathComponent("ratings.tsv").path, name: out + "/ratings.tsv")
                let truth = try BufferedTextWriter(path: folder.appendingPathComponent("truth.json").path, name: out + "/truth.json")
                try ratings.write("user\titem\trating\ttimestamp\n")
                var seen = [Bool](repeating: false, count: items)
                var userHasRows = false
                try truth.write("{\"user_cluster\":{")
                let plan = try SyntheticGenerator.stream(settings) { u, cluster in
                    try truth.write((u == 0 ? "" : ",") + "\"\(SyntheticGenerator.ItemPlan.userID(u))\":\(cluster)")
                    userHasRows = false
                } row: { u, item, rating, time in
                    if !userHasRows { userHasRows = true; activeUsers += 1 }
                    if !seen[item] { seen[item] = true; firstSeen.append(Int32(item)) }
                    ratings.write(byte: UInt8(ascii: "u"))
                    try ratings.write(Int64(u + 1))
                    ratings.write(byte: 0x09)
                    ratings.write(byte: UInt8(ascii: "i"))
                    try ratings.write(Int64(item + 1))
                    ratings.write(byte: 0x09)
                    try ratings.write(Int64(rating))
                    ratings.write(byte: 0x09)
                    try ratings.write(time)
                    ratings.write(byte: 0x0A)
                    written += 1
                }
                try ratings.close()
                // The rest of truth.json: the planted structure of items (user_cluster came first, as users streamed;
                // the same JSON as before the streaming writer, in another key order).
                func json(_ value: Any) throws -> String {
                    String(decoding: try JSONSerialization.data(withJSONObject: value, options: [.sortedKeys]), as: UTF8.self)
                }
                try truth.write("}")
                try truth.write(",\"clusters\":" + (try json(plan.clusterNames)))
                try truth.write(",\"item_cluster\":{")
                for i in plan.cluster.indices {
                    try truth.write((i == 0 ? "" : ",") + "\"\(SyntheticGenerator.ItemPlan.id(i))\":\(plan.cluster[i])")
                }
                try truth.write("},\"substitute_pairs\":" + (try json(plan.substitutes.map { [SyntheticGenerator.ItemPlan.id($0.0), SyntheticGenerator.ItemPlan.id($0.1)] })) + "}\n")
                try truth.close()
                let catalog = try BufferedTextWriter(path: folder.appendingPathComponent("items.tsv").path, name: out + "/items.tsv")
                try catalog.write(ItemCatalog.tsvHeader)
                for i in firstSeen.map(Int.init) {
                    try catalog.write(ItemCatalog.tsvLine(item: SyntheticGenerator.ItemPlan.id(i), title: plan.titles[i],
                                                          genres: [plan.clusterNames[plan.cluster[i]]]))
                }
                try catalog.close()
            }
            print(String(format: "wrote %d interactions of %d users on %d items to %@ in %.1f s (peak memory %@)", written, activeUsers, firstSeen.count, out,
                         Date().timeIntervalSince(start), MemoryBudget.describe(Double(ProcessMemory.peakResidentBytes()))))
        }
    }

    struct Import: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Turn Amazon data (UniSRec/VQ-Rec files, a ReChorus folder, or a 5-core review file) into a split folder.",
            discussion: """
            --unisrec DIR: NAME.train/valid/test.inter, NAME.text, NAME.item2index, NAME.user2index; keeps the
            files' leave-last-out (each user's last item is test, the one before validation).
            --rechorus DIR: train.csv, dev.csv, test.csv and NAME.item2index (NAME.text when present): every row,
            then a leave-last-out split by time.
            --reviews FILE: a review file (JSON lines, .gz or not: reviewerID, asin, overall, unixReviewTime,
            summary): every review, then a leave-last-out split by time. The file has no item metadata:
            with --text-from-reviews an item's text is its reviews' summaries (up to 10, in time order),
            a stand-in for pre-training domains only (the test reviews' summaries are in it).
            Items are named by their ASINs; items.tsv holds each item's text as its title (what text embed,
            text-knn, sasrec items=text and vq-rec read). Validation and test items unseen in train are
            removed, as docs/protocol.md says; every review is a positive; users need 3 interactions.
            """
        )
        @Option(name: .long, help: "A UniSRec folder, e.g. ../shared/data/amazon/Scientific.") var unisrec: String?
        @Option(name: .long, help: "A ReChorus folder, e.g. ../shared/data/amazon/Office.") var rechorus: String?
        @Option(name: .long, help: "A review file, e.g. ../shared/data/amazon/Musical_Instruments_2014/reviews_Musical_Instruments_5.json.gz.") var reviews: String?
        @Flag(name: .long, help: "With --reviews: item text from the reviews' summaries.") var textFromReviews = false
        @Option(name: .long, help: "Output split folder.") var out: String
        @Flag(name: .long, help: "Replace OUT if it is a split folder.") var force = false

        func validate() throws {
            guard [unisrec, rechorus, reviews].compactMap({ $0 }).count == 1 else {
                throw ValidationError("give exactly one of --unisrec DIR, --rechorus DIR or --reviews FILE")
            }
            if textFromReviews && reviews == nil { throw ValidationError("--text-from-reviews goes with --reviews") }
        }

        func run() throws {
            let split: DatasetSplit, catalog: ItemCatalog, source: String
            var removed = ""
            if let unisrec {
                let dropped: Int
                (split, catalog, dropped) = try UniSRecImport.read(directory: unisrec)
                source = unisrec
                removed = " (\(dropped) rows removed: unseen in train, or users with fewer than 3 items)"
            } else {
                let log: InteractionLog
                if let rechorus {
                    (log, catalog) = try AmazonImport.reChorus(directory: rechorus)
                    source = rechorus
                } else {
                    (log, catalog) = try AmazonImport.reviews(path: reviews!, textFromReviews: textFromReviews)
                    source = reviews!
                }
                split = try AmazonImport.leaveLastOut(log)
            }
            try SplitFolder.write(split, to: out, source: source, catalog: catalog, overwrite: force)
            let items = Set(split.trainRows.map { split.positives.items[Int(split.positives.itemIndices[$0])] })
            let withText = items.filter { !(catalog.titles[$0] ?? "").isEmpty }.count
            print("wrote \(out): \(split.trainRows.count) train, \(split.validRows?.count ?? 0) valid, \(split.testRows.count) test rows of "
                  + "\(split.positives.userCount) users on \(split.positives.itemCount) items\(removed); \(withText) of \(items.count) train items have text")
        }
    }
}

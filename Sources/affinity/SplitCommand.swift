import AffinityData
import ArgumentParser
import Foundation

struct SplitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "split",
        abstract: "Turn an interaction log into a train/test split folder (docs/protocol.md).",
        discussion: """
        Ratings below --min-rating are dropped (not negatives), users with fewer
        than --min-user-positives positives are dropped, then:
          holdout         per user, a seeded random 20% (at least 1) of the
                          positives go to test;
          leave-last-out  per user by timestamp: last -> test.tsv, the one before
                          -> valid.tsv;
          temporal        one global time cut: the latest --test-fraction of
                          interactions go to test.
        Test items never seen in train are removed. Writes train.tsv, test.tsv,
        valid.tsv (leave-last-out), meta.json and, when item metadata is found beside
        the input or given by --items, items.tsv. docs/protocol.md has the details.
        """
    )

    @OptionGroup var input: InputOptions
    @Option(name: .long, help: "Ratings at or above this are positives; lower ones are dropped.")
    var minRating: Float = 4
    @Flag(name: .long, help: "Keep every row whatever its rating.")
    var allRatings = false
    @Option(name: .long, help: "Drop users with fewer positives than this.")
    var minUserPositives = 5
    @Option(name: .long, help: "holdout | leave-last-out | temporal")
    var strategy: SplitStrategy
    @Option(name: .long, help: "Share of positives put into test (holdout, temporal).")
    var testFraction = 0.2
    @Option(name: .long, help: "Seed of the holdout shuffle.")
    var seed: UInt64 = 42
    @Option(name: .long, help: "Item metadata (u.item, movies.dat, movies.csv or items.tsv); default: found beside the input.")
    var items: String?
    @Option(name: .long, help: "Output folder.")
    var out: String
    @Flag(name: .long, help: "Replace OUT if it exists.")
    var force = false
    @Flag(name: .long, help: "Print meta facts as JSON on stdout.")
    var json = false

    func validate() throws {
        guard testFraction > 0 && testFraction < 1 else { throw ValidationError("--test-fraction must be strictly between 0 and 1") }
        guard minUserPositives >= 0 else { throw ValidationError("--min-user-positives must not be negative") }
    }

    func run() throws {
        let (log, loadSeconds) = try timed { try input.read() }
        let settings = SplitSettings(strategy: strategy, testFraction: testFraction, seed: seed,
                                     minRating: allRatings ? nil : minRating, minUserPositives: minUserPositives)
        let split = try Splitter.split(log, settings: settings)
        let catalogPath = items ?? ItemCatalog.find(near: input.input)
        let catalog = try catalogPath.map { try ItemCatalog.read(path: $0) }
        try SplitFolder.write(split, to: out, source: input.input, catalog: catalog, overwrite: force)
        let summary: [String: Int] = [
            "train_rows": split.trainRows.count, "test_rows": split.testRows.count,
            "valid_rows": split.validRows?.count ?? 0,
        ].merging(split.facts) { a, _ in a }
        if json {
            try printJSON(summary)
        } else {
            print("read \(log.count) rows in \(String(format: "%.3f", loadSeconds)) s; \(split.facts["positives_kept"] ?? 0) positives of \(split.facts["users_kept"] ?? 0) users kept")
            print("wrote \(out): train \(split.trainRows.count), test \(split.testRows.count)" + (split.validRows.map { ", valid \($0.count)" } ?? "") + " rows"
                  + (catalog != nil ? ", items.tsv from \(catalogPath!)" : ""))
            let removed = split.facts.filter { $0.key.contains("removed") && $0.value > 0 }
            for (k, v) in removed.sorted(by: { $0.key < $1.key }) { print("  \(k): \(v)") }
        }
    }
}

import AffinityLinalg
import AffinityNN
import ArgumentParser
import Foundation

/// `affinity bench tables`: the collisionless embedding table at scale (no collision among N random
/// IDs, checked; admission and lookup rates; lookups during growth) and how many IDs share a row in
/// hashed tables of a fraction of N rows.
struct TableBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tables",
        abstract: "Collisionless vs hashed embedding tables: collisions, admission and lookup rates, memory.",
        discussion: """
        Admits --ids random 64-bit IDs into a CollisionlessEmbeddingTable and checks
        that every ID has a row of its own (exit status 1 if not); times lookups on 1
        and 2 threads, and lookups by a second thread while the first admits; then
        counts the IDs that share their row in HashedEmbeddingTables of 1/2, 1/8 and
        1/32 of the IDs in rows.
        """
    )

    @Option(name: .long, help: "Random IDs to admit.") var ids = 10_000_000
    @Option(name: .long, help: "Row width.") var dimension = 16
    @Option(name: .long, help: "Seed of the IDs.") var seed: UInt64 = 7

    func run() throws {
        print("CPU: \(cpuModel())")
        var g = SeededGenerator(seed: seed)
        let keys = (0..<ids).map { _ in g.next() }
        let distinct = Set(keys).count
        let settings = EmbeddingTableSettings(dimension: dimension, maxRows: ids, accumulators: false)
        let table = try CollisionlessEmbeddingTable<UInt64>(settings: settings)
        var clock = Stopwatch()
        var rows = [Int32](repeating: -1, count: ids)
        for (n, key) in keys.enumerated() { rows[n] = Int32(try table.trainingRow(for: key, time: 0)!) }
        let admitSeconds = clock.seconds
        // Distinct IDs, distinct rows; every lookup finds the row the ID was given.
        var owner = [UInt64?](repeating: nil, count: distinct)
        var shared = 0, lost = 0
        for (n, key) in keys.enumerated() {
            let r = Int(rows[n])
            if let o = owner[r], o != key { shared += 1 }
            owner[r] = key
            if table.row(of: key) != r { lost += 1 }
        }
        let stats = table.stats
        print(String(format: "collisionless: %d random IDs (%d distinct) admitted in %.2f s (%.2f M/s); rows %d; IDs sharing a row %d; lookups missing their row %d; memory %@",
                     ids, distinct, admitSeconds, Double(ids) / admitSeconds / 1e6, stats.rows, shared, lost,
                     MemoryBudget.describe(Double(stats.memoryBytes))))
        for threads in [1, 2] {
            clock = Stopwatch()
            let per = ids / threads
            let found = Parallelism.onOwnThreads(threads) { t -> Int in
                var hits = 0
                for n in (t * per)..<((t + 1) * per) where table.row(of: keys[n]) != nil { hits += 1 }
                return hits
            }.reduce(0, +)
            print(String(format: "lookups, %d thread(s): %.2f M/s (%d found)", threads, Double(per * threads) / clock.seconds / 1e6, found))
        }
        // A reader during growth: a fresh table admits while a second thread looks up admitted IDs.
        let growing = try CollisionlessEmbeddingTable<UInt64>(settings: settings)
        let progress = SharedCounter()
        clock = Stopwatch()
        let readerResult = Parallelism.onOwnThreads(2) { t -> (Int, Int) in
            if t == 0 {
                for (n, key) in keys.enumerated() {
                    _ = try? growing.trainingRow(for: key, time: 0)
                    if n % 1024 == 0 { progress.set(n) }
                }
                progress.set(keys.count)
                return (0, 0)
            }
            var r = SeededGenerator(seed: 1)
            var lookups = 0, misses = 0
            while true {
                let upTo = progress.get()
                if upTo >= keys.count { break }
                guard upTo > 0 else { continue }
                for _ in 0..<1024 {
                    lookups += 1
                    if growing.row(of: keys[r.next(below: upTo)]) == nil { misses += 1 }
                }
            }
            return (lookups, misses)
        }[1]
        print(String(format: "a second thread looking up admitted IDs while the table grew from 0 to %d IDs in %.2f s: %d lookups, %d missed",
                     ids, clock.seconds, readerResult.0, readerResult.1))
        for divisor in [2, 8, 32] {
            let hashed = try HashedEmbeddingTable<UInt64>(rows: max(1, distinct / divisor), settings: settings)
            var perRow = [Int32](repeating: 0, count: hashed.rowCount)
            for key in Set(keys) { perRow[hashed.row(of: key)!] += 1 }
            let sharing = perRow.filter { $0 > 1 }.reduce(0) { $0 + Int($1) }
            print(String(format: "hashed, 1/%d of the IDs in rows (%d rows): %.1f %% of IDs share their row; at most %d IDs in one row",
                         divisor, hashed.rowCount, 100 * Double(sharing) / Double(distinct), Int(perRow.max() ?? 0)))
        }
        if shared > 0 || lost > 0 || readerResult.1 > 0 { throw ExitCode(1) }
    }
}

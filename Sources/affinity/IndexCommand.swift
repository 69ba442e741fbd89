import AffinityANN
import AffinityData
import AffinityLinalg
import AffinityPlot
import ArgumentParser
import Foundation

extension Metric: ExpressibleByArgument {}

struct IndexCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "index",
        abstract: "Build, search and benchmark nearest-neighbour indexes (Flat, HNSW, IVF-Flat, IVF-PQ, LSH).",
        discussion: """
        Specs: Flat, HNSW<M>, IVF<lists>,Flat, IVF<lists>,PQ<bytes>[,Refine], an
        OPQ<bytes>, prefix on IVF-PQ specs, a MIPS, prefix on IVF specs (inner product
        through the MIPS-to-L2 reduction), LSH<tables>x<bits>.
        Search settings: ef, nprobe, probes, refine. Vectors: .fvecs or .npy
        (float32, 2-D). With --json, build and search print one JSON line
        (build_s and index_bytes, or search_s), as ANN benchmark harnesses expect
        (Benchmarks/ann).
        """,
        subcommands: [Build.self, Search.self, Bench.self]
    )

    static func readVectors(_ path: String, limit: Int? = nil) throws -> Matrix {
        path.lowercased().hasSuffix(".npy") ? try NPY.read(path) : try VectorFiles.readFvecs(path, limit: limit)
    }

    struct Build: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Build an index over a vector file and save it.")
        @Option(name: .long, help: "Vectors (.fvecs or .npy).") var vectors: String
        @Option(name: .long, help: "ip | l2 | cos") var metric: Metric = .innerProduct
        @Option(name: .long, help: "Index spec, e.g. HNSW32.") var spec: String
        @Option(name: .customLong("set"), help: "Build setting key=value: efConstruction, iterations, seed, normBands (IVF, inner product: norm bands per cell, 0 = from the data).") var settings: [String] = []
        @Option(name: .long, help: "Build threads (0 = all cores).") var threads = 0
        @Option(name: .long, help: "Output index file.") var out: String
        @Flag(name: .long, help: "Replace OUT if it exists.") var force = false
        @Flag(name: .long, help: "Print {build_s, index_bytes} as JSON on stdout.") var json = false

        func run() throws {
            if FileManager.default.fileExists(atPath: out) && !force {
                throw CommandError("\(out) already exists (pass --force to replace it)")
            }
            let x = try IndexCommand.readVectors(vectors)
            var s = try parseSettings(settings)
            s["threads"] = String(threads)
            let (index, seconds) = try timed { try IndexFactory.build(spec: spec, vectors: x, metric: metric, settings: s) }
            try IndexFile.save(index, to: out)
            let bytes = (try? FileManager.default.attributesOfItem(atPath: out)[.size] as? Int) ?? 0
            Console.note("built \(spec) over \(x.rows) x \(x.columns) in \(String(format: "%.2f", seconds)) s; \(bytes / 1_048_576) MiB written to \(out)")
            if json { print("{\"build_s\": \(seconds), \"index_bytes\": \(bytes)}") }
        }
    }

    struct Search: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Search a saved index with a query file; recall against ground truth, QPS, latency.")
        @Option(name: .long, help: "Index file.") var index: String
        @Option(name: .long, help: "Queries (.fvecs or .npy).") var queries: String
        @Option(name: .long, help: "Use only the first N queries.") var nq: Int?
        @Option(name: .shortAndLong, parsing: .unconditional, help: "Neighbours per query.") var k = 10
        @Option(name: .customLong("set"), help: "Search parameter: ef=64, nprobe=16, probes=0, refine=1.") var settings: [String] = []
        @Option(name: .long, help: "Threads (1 = per-query latency is measured).") var threads = 1
        @Option(name: .long, help: "Ground truth (.ivecs) for recall@k.") var groundTruth: String?
        @Option(name: .long, help: ArgumentHelp("Write the neighbours: OUT.ivecs holds row numbers (padded with -1 only if an index returned fewer than k); OUT.tsv holds query, rank, item ID and score.",
                                                valueName: "OUT.ivecs|OUT.tsv")) var out: String?
        @Option(name: .long, help: "IDs of the indexed rows, one per line in row order (the OUT.ids that affinity model export writes). Without it the TSV names rows by number.")
        var ids: String?
        @Option(name: .long, help: "IDs of the queries, one per line (default: QUERIES.ids when it exists, else row numbers).")
        var queryIds: String?
        @Flag(name: .long, help: "Print {search_s, qps, recall, ...} as JSON on stdout (the external-command protocol of Benchmarks/ann).") var json = false

        func validate() throws {
            guard k > 0 && k <= 100_000 else { throw ValidationError("-k must be in 1...100000, got \(k)") }
            guard threads >= 0 else { throw ValidationError("--threads must not be negative, got \(threads)") }
            if let nq, nq < 0 { throw ValidationError("--nq must not be negative, got \(nq)") }
        }

        func run() throws {
            let (loaded, loadSeconds) = try timed { try IndexFile.load(index) }
            let q = try IndexCommand.readVectors(queries, limit: nq)
            let parameters = try SearchParameters().applying(try parseSettings(settings))
            let (results, latencies, seconds) = try runQueries(loaded, q, k: k, parameters: parameters, threads: threads)
            var figures: [String: Double] = ["search_s": seconds, "qps": Double(q.rows) / seconds, "load_s": loadSeconds]
            if !latencies.isEmpty {
                let sorted = latencies.sorted()
                figures["latency_p50_ms"] = sorted[sorted.count / 2] * 1000
                figures["latency_p99_ms"] = sorted[min(sorted.count - 1, sorted.count * 99 / 100)] * 1000
            }
            var recallAt = k
            if let groundTruth {
                let truth = try VectorFiles.readIvecs(groundTruth, limit: q.rows)
                // recall@k needs k true neighbours per query: measure at what the file holds, and say so.
                let columns = truth.map(\.count).min() ?? 0
                if columns < k {
                    Console.note("warning: \(groundTruth) holds \(columns) neighbours per query, fewer than -k \(k); recall is measured at \(columns)")
                    recallAt = columns
                }
                if truth.count < results.count {
                    Console.note("warning: \(groundTruth) has \(truth.count) rows for \(results.count) queries; recall covers the first \(truth.count)")
                }
                figures["recall"] = recallAt > 0 ? recall(results, truth: truth, k: recallAt) : 0
                figures["recall_at"] = Double(recallAt)
            }
            if let out {
                if out.lowercased().hasSuffix(".tsv") {
                    try writeNeighbourTSV(results, to: out, queryCount: q.rows)
                } else {
                    try VectorFiles.writeIvecs(results.map { r in (0..<k).map { $0 < r.count ? Int32(r[$0].id) : -1 } }, to: out)
                }
            }
            if json {
                // One line: the harness (Benchmarks/ann, peers.py) reads search_s from a line starting with "{".
                try printJSON(figures, oneLine: true)
            } else {
                print("queries:   \(q.rows) (k \(k), \(threads == 1 ? "1 thread" : "\(threads == 0 ? "all" : String(threads)) threads"))")
                print(String(format: "search:    %.4f s, %.0f queries/s", seconds, Double(q.rows) / seconds))
                if let p50 = figures["latency_p50_ms"], let p99 = figures["latency_p99_ms"] { print(String(format: "latency:   p50 %.3f ms, p99 %.3f ms", p50, p99)) }
                if let r = figures["recall"] { print(String(format: "recall@%d: %.4f", recallAt, r)) }
                if let out { print("wrote:     \(out)") }
            }
        }

        /// Query, rank, item ID and score per neighbour, with the IDs from --ids / --query-ids.
        func writeNeighbourTSV(_ results: [[Neighbor]], to path: String, queryCount: Int) throws {
            let itemIDs = try ids.map { try readRowIDs($0, what: "item") }
            if ids == nil { Console.note("note: no --ids file: the TSV names rows by number") }
            let queryFile = queryIds ?? (FileManager.default.fileExists(atPath: queries + ".ids") ? queries + ".ids" : nil)
            let queryNames = try queryFile.map { try readRowIDs($0, what: "query") }
            if let queryNames, queryNames.count < queryCount {
                throw CommandError("\(queryFile!): \(queryNames.count) query IDs for \(queryCount) queries")
            }
            var text = "query\trank\titem\tscore\n"
            for (qi, list) in results.enumerated() {
                let name = queryNames?[qi] ?? String(qi)
                for (rank, n) in list.enumerated() {
                    guard let itemIDs else { text += "\(name)\t\(rank + 1)\t\(n.id)\t\(n.score)\n"; continue }
                    guard n.id < itemIDs.count else { throw CommandError("\(ids!): \(itemIDs.count) IDs, but the index returned row \(n.id); is it the .ids file of these vectors?") }
                    text += "\(name)\t\(rank + 1)\t\(itemIDs[n.id])\t\(n.score)\n"
                }
            }
            try AtomicWrite.file(Data(text.utf8), to: path)
        }
    }

    struct Bench: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Sweep one search parameter: recall@k and QPS per value (and an SVG plot).")
        @Option(name: .long, help: "Base vectors.") var vectors: String
        @Option(name: .long, help: "Queries.") var queries: String
        @Option(name: .long, help: "Ground truth (.ivecs).") var groundTruth: String
        @Option(name: .long, help: "ip | l2 | cos") var metric: Metric = .innerProduct
        @Option(name: .long, help: "Index spec.") var spec: String
        @Option(name: .customLong("set"), help: "Build setting key=value.") var settings: [String] = []
        @Option(name: .long, help: "Parameter sweep, name=v1,v2,... (ef, nprobe, probes or refine).") var sweep: String
        @Option(name: .long, help: "A fixed search parameter for every point, name=value (repeatable), e.g. refine=16.") var fixed: [String] = []
        @Option(name: .long, help: "Use only the first N queries.") var nq: Int?
        @Option(name: .shortAndLong, parsing: .unconditional) var k = 10
        @Option(name: .long, help: "Build threads.") var buildThreads = 0
        @Option(name: .long, help: "Write the recall/QPS curve as SVG here.") var svg: String?

        func validate() throws {
            guard k > 0 && k <= 100_000 else { throw ValidationError("-k must be in 1...100000, got \(k)") }
            if let nq, nq < 0 { throw ValidationError("--nq must not be negative, got \(nq)") }
        }

        func run() throws {
            let x = try IndexCommand.readVectors(vectors)
            let q = try IndexCommand.readVectors(queries, limit: nq)
            let truth = try VectorFiles.readIvecs(groundTruth, limit: q.rows)
            var s = try parseSettings(settings)
            s["threads"] = String(buildThreads)
            let (index, buildSeconds) = try timed { try IndexFactory.build(spec: spec, vectors: x, metric: metric, settings: s) }
            print("\(spec) over \(x.rows) x \(x.columns): built in \(String(format: "%.2f", buildSeconds)) s")
            guard let eq = sweep.firstIndex(of: "=") else { throw ValidationError("--sweep expects name=v1,v2,...") }
            let name = String(sweep[..<eq])
            var points: [(Double, Double, String)] = []
            print("\(name.padding(toLength: 8, withPad: " ", startingAt: 0))  recall@\(k)       QPS   p50 ms   p99 ms")
            for value in sweep[sweep.index(after: eq)...].split(separator: ",") {
                let parameters = try SearchParameters().applying(try parseSettings(fixed).merging([name: String(value)]) { _, b in b })
                let (results, latencies, seconds) = try runQueries(index, q, k: k, parameters: parameters, threads: 1)
                let r = recall(results, truth: truth, k: k)
                let sorted = latencies.sorted()
                print(String(format: "%@  %9.4f  %8.0f  %7.3f  %7.3f", String(value).padding(toLength: 8, withPad: " ", startingAt: 0), r,
                             Double(q.rows) / seconds, sorted[sorted.count / 2] * 1000, sorted[sorted.count * 99 / 100] * 1000))
                points.append((r, Double(q.rows) / seconds, "\(name)=\(value)"))
            }
            if let svg { try AtomicWrite.file(Data(recallQPSPlot(points, title: "\(spec), \(x.rows) vectors, 1 thread").utf8), to: svg) }
        }
    }
}

/// Runs every query; with one thread it also records each query's latency.
func runQueries(_ index: any VectorIndex, _ q: Matrix, k: Int, parameters: SearchParameters, threads: Int) throws -> ([[Neighbor]], [Double], Double) {
    if threads == 1 {
        var results: [[Neighbor]] = []
        var latencies: [Double] = []
        results.reserveCapacity(q.rows)
        let rows = (0..<q.rows).map { Array(q.row($0)) }
        let all = Stopwatch()
        for row in rows {
            let one = Stopwatch()
            results.append(try index.search(row, k: k, parameters: parameters))
            latencies.append(one.seconds)
        }
        return (results, latencies, all.seconds)
    }
    let (results, seconds) = try timed { try index.search(queries: q, k: k, parameters: parameters, threads: threads) }
    return (results, [], seconds)
}

/// recall@k = mean over queries of |returned top-k ∩ true top-k| / k (docs/protocol.md).
func recall(_ results: [[Neighbor]], truth: [[Int32]], k: Int) -> Double {
    var total = 0.0
    for (r, t) in zip(results, truth) {
        let want = Set(t.prefix(k).map { Int($0) })
        total += Double(r.prefix(k).filter { want.contains($0.id) }.count) / Double(k)
    }
    return results.isEmpty ? 0 : total / Double(min(results.count, truth.count))
}

/// A small SVG line plot of QPS (log scale) against recall.
func recallQPSPlot(_ points: [(recall: Double, qps: Double, label: String)], title: String) -> String {
    linePlot([PlotSeries(name: "", points: points.map { ($0.recall, $0.qps, $0.label) })], title: title,
             xTitle: "recall@10", yTitle: "queries per second (log)", yLog: true)
}

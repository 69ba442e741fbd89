import AffinityANN
import AffinityData
import AffinityLinalg
import ArgumentParser
import Foundation

extension Metric: ExpressibleByArgument {}

struct IndexCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "index",
        abstract: "Build, search and benchmark nearest-neighbour indexes (Flat, HNSW, IVF-Flat, IVF-PQ, LSH).",
        discussion: """
        Specs: Flat, HNSW<M>, IVF<lists>,Flat, IVF<lists>,PQ<bytes>[,Refine], an OPQ<bytes>, prefix on IVF-PQ specs,
        a MIPS, prefix on IVF specs (inner product through the MIPS-to-L2 reduction), LSH<tables>x<bits>. Search settings: ef, nprobe, probes, refine. Vectors: .fvecs or .npy (float32, 2-D). build and search also follow
        the external-command protocol of ../shared/bench/ann (one JSON line with build_s/index_bytes or search_s).
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
        @Option(name: .customLong("set"), help: "Build setting key=value: efConstruction, iterations, seed.") var settings: [String] = []
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
        @Option(name: .long, help: "Write the returned ids as .ivecs (rows padded with -1 only if an index returned fewer than k).") var out: String?
        @Flag(name: .long, help: "Print JSON on stdout.") var json = false

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
            if let groundTruth {
                figures["recall"] = recall(results, truth: try VectorFiles.readIvecs(groundTruth, limit: q.rows), k: k)
            }
            if let out {
                try VectorFiles.writeIvecs(results.map { r in (0..<k).map { $0 < r.count ? Int32(r[$0].id) : -1 } }, to: out)
            }
            if json {
                try printJSON(figures)
            } else {
                Console.note(figures.sorted { $0.key < $1.key }.map { "\($0.key)=\(String(format: "%.4f", $0.value))" }.joined(separator: " "))
                print("{\"search_s\": \(seconds)}")
            }
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

/// recall@k = mean over queries of |returned top-k ∩ true top-k| / k (PROTOCOL.md).
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

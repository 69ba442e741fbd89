import AffinityData
import AffinityLinalg
import AffinityModels
import ArgumentParser
import Foundation

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmarks that print figures (never asserted in tests).",
        subcommands: [KernelsBench.self, CFBench.self, SequenceBench.self, StreamBench.self, TableBench.self]
    )
}

/// One timed kernel run.
struct KernelFigure: Encodable {
    var name: String
    var threads: Int
    var seconds: Double
    var gflops: Double?
    var perSecond: Double?
    var unit: String?
}

struct KernelsBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernels",
        abstract: "GFLOP/s and times of the linear-algebra kernels (SGEMM, SPD inverse, exact top-k).",
        discussion: "Benchmarks/peers/kernels.py runs numpy and faiss on the same sizes\nand prints our/peer ratios."
    )

    @Option(name: .long, help: "Which benchmarks: comma-separated of gemm,retrieval-gemm,inverse,topk.") var only = "gemm,retrieval-gemm,inverse,topk"
    @Option(name: .long, help: "Square SGEMM sizes.") var sizes = "1024,2048,4096"
    @Option(name: .long, help: "Thread counts to measure.") var threads = "1,2"
    @Option(name: .long, help: "Repetitions; the best time is reported.") var repeats = 3
    @Option(name: .long, help: "Interaction file whose binary item Gram matrix is inverted (default: synthetic 3706 x 3706 SPD).") var gramInput: String?
    @Option(name: .long, help: "Regularisation added to the Gram diagonal.") var lambda: Float = 500
    @Option(name: .long, help: "Base vectors (.fvecs) for exact top-k (default: random 1,000,000 x 64).") var base: String?
    @Option(name: .long, help: "Query vectors (.fvecs) for exact top-k (default: random 10,000 x 64).") var queries: String?
    @Option(name: .long, help: "Rows of the random base when --base is not given.") var baseRows = 1_000_000
    @Option(name: .long, help: "Rows of the random queries when --queries is not given.") var queryRows = 10_000
    @Flag(name: .long, help: "Print JSON on stdout.") var json = false

    func run() throws {
        let parts = Set(only.split(separator: ",").map(String.init))
        let threadCounts = threads.split(separator: ",").compactMap { Int($0) }
        var figures: [KernelFigure] = []
        func report(_ f: KernelFigure) {
            figures.append(f)
            if !json {
                var line = "\(f.name.padding(toLength: 44, withPad: " ", startingAt: 0)) threads \(f.threads)  \(String(format: "%9.4f", f.seconds)) s"
                if let g = f.gflops { line += String(format: "  %7.1f GFLOP/s", g) }
                if let p = f.perSecond, let u = f.unit { line += String(format: "  %10.1f %@", p, u) }
                print(line)
            }
        }
        let gemmKernel = Kernels.gemmKernel
        let measured = [gemmKernel.avx512.map { String(format: "avx512 %.0f", $0) }, gemmKernel.avx2.map { String(format: "avx2 %.0f", $0) }]
            .compactMap { $0 }.joined(separator: ", ")
        let gemmLine = gemmKernel.path + (measured.isEmpty ? "" : " (micro-kernels timed at start: \(measured) GFLOP/s)")
        if !json { print("CPU: \(cpuModel()), SIMD path: \(Kernels.simdLevel), SGEMM kernel: \(gemmLine), cores: \(Parallelism.availableCores)") }

        if parts.contains("gemm") {
            for n in sizes.split(separator: ",").compactMap({ Int($0) }) {
                let a = Matrix.random(rows: n, columns: n, seed: 1), b = Matrix.random(rows: n, columns: n, seed: 2)
                var c = Matrix(rows: n, columns: n)
                for t in threadCounts {
                    let s = best(repeats) {
                        a.values.withUnsafeBufferPointer { pa in b.values.withUnsafeBufferPointer { pb in c.values.withUnsafeMutableBufferPointer { pc in
                            sgemm(m: n, n: n, k: n, a: pa.baseAddress!, lda: n, b: pb.baseAddress!, ldb: n, c: pc.baseAddress!, ldc: n, threads: t)
                        } } }
                    }
                    report(KernelFigure(name: "sgemm \(n)x\(n)x\(n)", threads: t, seconds: s, gflops: 2 * pow(Double(n), 3) / s / 1e9))
                }
            }
        }
        if parts.contains("retrieval-gemm") {
            // (Q x 64)·(64 x N) in base blocks, as a retrieval scorer would run it.
            let q = Matrix.random(rows: queryRows, columns: 64, seed: 3)
            let blockRows = 4096
            let x = Matrix.random(rows: blockRows, columns: 64, seed: 4)
            let blocks = max(1, baseRows / blockRows)
            var c = [Float](repeating: 0, count: queryRows * blockRows)
            for t in threadCounts {
                let s = best(repeats) {
                    q.values.withUnsafeBufferPointer { pq in x.values.withUnsafeBufferPointer { px in c.withUnsafeMutableBufferPointer { pc in
                        for _ in 0..<blocks {
                            sgemm(transposeB: true, m: queryRows, n: blockRows, k: 64, a: pq.baseAddress!, lda: 64,
                                  b: px.baseAddress!, ldb: 64, c: pc.baseAddress!, ldc: blockRows, threads: t)
                        }
                    } } }
                }
                let flops = 2.0 * Double(queryRows) * Double(blocks * blockRows) * 64
                report(KernelFigure(name: "sgemm retrieval \(queryRows)x64 . 64x\(blocks * blockRows)", threads: t, seconds: s, gflops: flops / s / 1e9))
            }
        }
        if parts.contains("inverse") {
            var gram: Matrix
            var label: String
            if let gramInput {
                let log = try InteractionReader.read(path: gramInput)
                let x = log.matrix()
                let (g, gs) = timed { x.gram() }
                gram = g
                label = "\(x.columnCount)x\(x.columnCount) item Gram of \((gramInput as NSString).lastPathComponent)"
                report(KernelFigure(name: "sparse Gram XᵀX (\(x.nonZeroCount) nnz)", threads: Parallelism.availableCores, seconds: gs))
            } else {
                let b = Matrix.random(rows: 4000, columns: 3706, seed: 5)
                gram = b.multiplied(by: b, transposeSelf: true)
                label = "3706x3706 random SPD"
            }
            gram.addToDiagonal(lambda)
            let n = Double(gram.rows)
            for t in threadCounts {
                var result = Matrix(rows: 0, columns: 0)
                let s = try best(repeats) { result = try gram.inverseSPD(threads: t) }
                // Flop count of the LAPACK-style path (potrf n³/3 + trtri n³/3 + lauum n³/3) for comparability.
                report(KernelFigure(name: "SPD inverse, \(label)", threads: t, seconds: s, gflops: n * n * n / s / 1e9))
                _ = result
            }
        }
        if parts.contains("topk") {
            let baseMatrix = try base.map { try VectorFiles.readFvecs($0) } ?? Matrix.random(rows: baseRows, columns: 64, seed: 6)
            let queryMatrix = try queries.map { try VectorFiles.readFvecs($0) } ?? Matrix.random(rows: queryRows, columns: 64, seed: 7)
            for t in threadCounts {
                let s = best(repeats) { _ = ExactSearch.search(queries: queryMatrix, base: baseMatrix, k: 10, metric: .innerProduct, threads: t) }
                let flops = 2.0 * Double(queryMatrix.rows) * Double(baseMatrix.rows) * Double(baseMatrix.columns)
                report(KernelFigure(name: "exact top-10 IP, \(queryMatrix.rows) q x \(baseMatrix.rows) x \(baseMatrix.columns)", threads: t, seconds: s,
                                    gflops: flops / s / 1e9, perSecond: Double(queryMatrix.rows) / s, unit: "queries/s"))
            }
        }
        if json {
            try printJSON(["cpu": AnyEncodable(cpuModel()), "simd": AnyEncodable(Kernels.simdLevel), "gemm_kernel": AnyEncodable(gemmLine),
                           "figures": AnyEncodable(figures)])
        }
    }
}

/// Best wall time of `repeats` runs.
func best(_ repeats: Int, _ body: () throws -> Void) rethrows -> Double {
    var bestTime = Double.infinity
    for _ in 0..<max(1, repeats) {
        let (_, s) = try timed(body)
        bestTime = min(bestTime, s)
    }
    return bestTime
}

/// The CPU as /proc/cpuinfo names it, with its family and model numbers and widest vector
/// extension ("Intel(R) Xeon(R) Processor (family 6 model 207, AVX-512)"): speed figures hold
/// only for the CPU they were measured on.
func cpuModel() -> String {
    guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return "unknown" }
    var name = "unknown", family = "?", model = "?", flags: Set<Substring> = []
    for line in text.split(separator: "\n") {
        let parts = line.split(separator: ":", maxSplits: 1)
        guard parts.count == 2 else {
            if line.trimmingCharacters(in: .whitespaces).isEmpty && name != "unknown" { break }
            continue
        }
        let key = parts[0].trimmingCharacters(in: .whitespaces), value = parts[1].trimmingCharacters(in: .whitespaces)
        switch key {
        case "model name": name = value
        case "cpu family": family = value
        case "model": model = value
        case "flags": flags = Set(value.split(separator: " "))
        default: break
        }
        if key == "flags" { break }
    }
    let vector = flags.contains("avx512f") ? "AVX-512" : flags.contains("avx2") ? "AVX2" : flags.isEmpty ? "?" : "no AVX2"
    return "\(name) (family \(family) model \(model), \(vector))"
}

struct AnyEncodable: Encodable {
    let encodeValue: (Encoder) throws -> Void
    init<T: Encodable>(_ value: T) { encodeValue = value.encode }
    func encode(to encoder: Encoder) throws { try encodeValue(encoder) }
}

/// Speed of the collaborative-filtering models and the iALS fold-in check (issue "CF models").
struct CFBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cf",
        abstract: "EASE fit time, iALS seconds per iteration, BPR seconds per epoch, iALS fold-in agreement.",
        discussion: "Benchmarks/peers/cf.py runs numpy EASE and implicit's ALS and BPR on the\nsame split and prints the ratios."
    )

    @Option(name: .long, help: "Split folder (train.tsv is used).") var split: String
    @Option(name: .long, help: "Threads for every model.") var threads = 1
    @Option(name: .long, help: "Which parts: comma-separated of ease,ials,bpr,foldin.") var only = "ease,ials,bpr,foldin"
    @Option(name: .long, help: "EASE lambda.") var lambda = 500.0
    @Option(name: .long, help: "iALS iterations timed.") var alsIterations = 15
    @Option(name: .long, help: "BPR epochs timed.") var bprEpochs = 20
    @Option(name: .long, help: "Repetitions of the EASE fit; the best is reported.") var repeats = 3
    @Flag(name: .long, help: "Print JSON on stdout.") var json = false

    func run() throws {
        let parts = Set(only.split(separator: ",").map(String.init))
        let folder = try SplitFolder.read(split)
        let x = folder.train.matrix()
        var out: [String: Double] = [:]
        func say(_ key: String, _ value: Double, _ text: String) {
            out[key] = value
            if !json { print(text) }
        }
        if !json { print("CPU: \(cpuModel()); \(x.rowCount) users x \(x.columnCount) items, \(x.nonZeroCount) positives; threads \(threads)") }
        if parts.contains("ease") {
            var c = EASE.Configuration()
            c.lambda = lambda
            c.threads = threads
            let s = try best(repeats) { _ = try EASE.fit(x, configuration: c) }
            say("ease_fit_seconds", s, String(format: "EASE fit (lambda %.0f): %.3f s", lambda, s))
        }
        if parts.contains("ials") {
            var c = ALS.Configuration()
            c.iterations = alsIterations
            c.threads = threads
            let times = TimeLog()
            _ = try ALS.fit(x, configuration: c, progress: times.epochEnds)
            let perIteration = times.median
            say("ials_seconds_per_iteration", perIteration, String(format: "iALS (%d factors, %@ solver): %.4f s per iteration (median of %d)", c.factors, c.solver.rawValue, perIteration, alsIterations))
        }
        if parts.contains("bpr") {
            var c = BPR.Configuration()
            c.epochs = bprEpochs
            c.threads = threads
            let times = TimeLog()
            _ = try BPR.fit(x, configuration: c, progress: times.epochEnds)
            say("bpr_seconds_per_epoch", times.median, String(format: "BPR (%d factors): %.4f s per epoch (median of %d)", c.factors, times.median, bprEpochs))
        }
        if parts.contains("foldin") {
            var c = ALS.Configuration()
            c.threads = threads
            let model = try ALS.fit(x, configuration: c)
            var same = 0
            for u in 0..<model.userCount {
                let trained = try model.recommend(user: u, k: 10).map(\.index)
                let folded = try model.recommend(history: model.seenItems(ofUser: u), k: 10).map(\.index)
                if trained == folded { same += 1 }
            }
            let share = Double(same) / Double(model.userCount)
            say("ials_foldin_same_top10", share, String(format: "iALS fold-in: recalculateUser(own history) gives the trained top-10 for %d of %d users (%.2f%%)", same, model.userCount, 100 * share))
        }
        if json { try printJSON(out) }
    }
}

/// Per-iteration times collected from a training callback.
final class TimeLog: @unchecked Sendable {
    private var values: [Double] = []
    private var lastEnd = 0.0
    private let lock = NSLock()
    func add(_ s: Double) { lock.locked { values.append(s) } }
    /// A progress handler that logs each epoch's duration (the time between epoch ends).
    var epochEnds: TrainingProgress.Handler {
        { [self] r in
            guard r.isEpochEnd else { return }
            lock.locked {
                values.append(r.seconds - lastEnd)
                lastEnd = r.seconds
            }
        }
    }
    var median: Double {
        lock.locked {
            let s = values.sorted()
            return s.isEmpty ? 0 : s[s.count / 2]
        }
    }
}

struct SequenceBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sasrec",
        abstract: "SASRec (or VQ-Rec) training throughput: sequences per second per epoch, without validation.",
        discussion: "Benchmarks/peers/sasrec.py runs PyTorch's SASRec (../shared/bench/quality/torch_models.py)\non the same split and prints the ratio. --model vq-rec times VQ-Rec's epochs (not its quantiser)."
    )

    enum Model: String, ExpressibleByArgument, CaseIterable { case sasrec, vqRec = "vq-rec" }

    @Option(name: .long, help: "Split folder (train.tsv, which needs timestamps).") var split: String
    @Option(name: .long, help: "Thread counts to measure, comma-separated.") var threads = "1,2"
    @Option(name: .long, help: "Epochs timed per thread count; the median epoch is reported.") var epochs = 1
    @Option(name: .customLong("set"), help: "A setting of the model, key=value (repeatable).") var settings: [String] = []
    @Option(name: .long, help: "sasrec or vq-rec.") var model: Model = .sasrec
    @Option(name: .long, help: "Item text vectors (.npy with PATH.ids, or TSV) for vq-rec and sasrec items=text.") var itemVectors: String?
    @Flag(name: .long, help: "Print JSON on stdout.") var json = false

    func run() throws {
        let folder = try SplitFolder.read(split)
        var data = TrainingData(log: folder.train)   // no validation targets: training alone is timed
        data.itemVectors = try itemVectors.map { try readItemVectors($0, items: folder.train.items) }
        let sequences = data.sequences.filter { $0.count >= 2 }.count
        var out: [[String: Double]] = []
        if !json { print("CPU: \(cpuModel()); \(sequences) training sequences, \(data.itemCount) items") }
        for t in threads.split(separator: ",").compactMap({ Int($0) }) where t > 0 {
            let times = TimeLog()
            let loss: String
            switch model {
            case .sasrec:
                var c = try SASRec.Configuration().applying(try parseSettings(settings))
                c.epochs = epochs
                c.threads = t
                loss = c.loss.rawValue
                _ = try SASRec.fit(data, configuration: c, progress: times.epochEnds)
            case .vqRec:
                var c = try VQRec.Configuration().applying(try parseSettings(settings))
                c.epochs = epochs
                c.threads = t
                loss = "cosine softmax"
                _ = try VQRec.fit(data, configuration: c, progress: times.epochEnds)
            }
            let perEpoch = times.median
            out.append(["threads": Double(t), "seconds_per_epoch": perEpoch, "sequences_per_second": Double(sequences) / perEpoch])
            if !json { print(String(format: "%@, threads %d: %.2f s per epoch, %.0f sequences/s (loss %@)", model.rawValue, t, perEpoch, Double(sequences) / perEpoch, loss)) }
        }
        if json { try printJSON(out) }
    }
}

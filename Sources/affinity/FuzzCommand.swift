import AffinityANN
import AffinityData
import AffinityEval
import AffinityLinalg
import AffinityModels
import AffinityPipeline
import AffinityServer
import ArgumentParser
import Foundation

/// The file loaders a fuzzing run can target.
enum FuzzLoader: String, CaseIterable, ExpressibleByArgument {
    case safetensors, model, npy, fvecs, ivecs, interactions, split
    case indexFlat = "index-flat", indexHNSW = "index-hnsw", indexIVF = "index-ivf", indexIVFPQ = "index-ivfpq", indexLSH = "index-lsh"
}

/// `affinity fuzz` (hidden; driven by `Benchmarks/fuzz/run.sh`): a seeded mutation loop over one
/// file loader. It writes valid seed files with the project's own writers, then repeatedly mutates
/// one (bit flips, interesting integers over 4 or 8 bytes, numbers in text replaced by extreme
/// ones, truncation, chunk deletion and duplication, inserted separators), writes the result under
/// `--work DIR/current` and loads it the way the CLI and the server do, using what loads (a search,
/// a recommendation). A loader must either accept or throw: a crash or a hang ends the process
/// with the offending input left in `current`, which the script keeps as a regression fixture.
/// `--replay PATH` loads one kept input instead (a file, or a folder for `model` and `split`).
struct FuzzCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fuzz",
        abstract: "Mutation-fuzz one file loader for a bounded time (used by Benchmarks/fuzz/run.sh).",
        shouldDisplay: false
    )

    @Option(name: .long, help: "Loader: \(FuzzLoader.allCases.map(\.rawValue).joined(separator: "|")).") var loader: FuzzLoader
    @Option(name: .long, help: "Seconds to run.") var seconds: Double = 10
    @Option(name: .long, help: "Seed of the mutations.") var seed: UInt64 = 1
    @Option(name: .long, help: "Working folder (seeds, the current input, the input count).") var work: String
    @Option(name: .long, help: "Load this kept input once instead of fuzzing.") var replay: String?

    func run() throws {
        let seeds = (work as NSString).appendingPathComponent("seeds")
        let current = (work as NSString).appendingPathComponent("current")
        if let replay {
            do {
                try FuzzHarness.load(loader, at: replay)
                print("accepted")
            } catch {
                print("rejected: \(error)")
            }
            return
        }
        let corpus = try FuzzHarness.seedInputs(for: loader, in: seeds)
        var generator = SeededGenerator(seed: seed)
        let clock = Stopwatch()
        var tried = 0, accepted = 0
        let countFile = (work as NSString).appendingPathComponent("count")
        while clock.seconds < seconds {
            let base = corpus[Int(generator.next() % UInt64(corpus.count))]
            try? FileManager.default.removeItem(atPath: current)
            try FileManager.default.createDirectory(atPath: current, withIntermediateDirectories: true)
            // Mutate one file of the seed input; copy the others as they are.
            let victim = Int(generator.next() % UInt64(base.files.count))
            for (n, file) in base.files.enumerated() {
                let bytes = n == victim ? FuzzHarness.mutateStructured(file.bytes, name: file.name, &generator) : file.bytes
                try Data(bytes).write(to: URL(fileURLWithPath: (current as NSString).appendingPathComponent(file.name)))
            }
            let target = base.isFolder ? current : (current as NSString).appendingPathComponent(base.files[0].name)
            if (try? FuzzHarness.load(loader, at: target)) != nil { accepted += 1 }
            tried += 1
            if tried % 64 == 0 { try? Data("\(tried)\n".utf8).write(to: URL(fileURLWithPath: countFile)) }
        }
        try? Data("\(tried)\n".utf8).write(to: URL(fileURLWithPath: countFile))
        print("{\"loader\": \"\(loader.rawValue)\", \"inputs\": \(tried), \"accepted\": \(accepted), \"seconds\": \(String(format: "%.1f", clock.seconds))}")
    }
}

/// Seed inputs, mutations and loaders of `affinity fuzz`.
enum FuzzHarness {
    struct Input {
        var files: [(name: String, bytes: [UInt8])]
        /// Loaded as a folder (model, split) rather than as its one file.
        var isFolder: Bool
    }

    // MARK: - Loading as the CLI and the server do

    static func load(_ loader: FuzzLoader, at path: String) throws {
        switch loader {
        case .safetensors:
            _ = try SafeTensorsFile.read(path: path)
        case .model:
            let model = try AffinityService.loadServingModel(path: path, index: nil)
            if model.trained.users.count > 0 {
                _ = try model.recommend(.user(0), k: 5, excluded: model.trainingHistory(ofUser: 0), explain: true)
            }
            if model.trained.items.count > 1 {
                _ = try model.recommend(.history([0, 1]), k: 5, excluded: [0, 1], explain: true)
                _ = try model.similar(item: 1, k: 5)
            }
        case .npy:
            _ = try NPY.read(path)
        case .fvecs:
            _ = try VectorFiles.readFvecs(path)
        case .ivecs:
            _ = try VectorFiles.readIvecs(path)
        case .interactions:
            let log = try InteractionReader.read(path: path, format: path.hasSuffix(".csv") ? .csv : .tsv)
            _ = log.matrix()
        case .split:
            let split = try SplitFolder.read(path)
            _ = try EvaluationData(split: split, target: .test)
        case .indexFlat, .indexHNSW, .indexIVF, .indexIVFPQ, .indexLSH:
            let index = try IndexFile.load(path)
            let query = (0..<index.dimension).map { Float($0 % 7) - 3 }
            _ = try index.search(query, k: 5, parameters: SearchParameters(ef: 16, nprobe: 2, probes: 1), filter: nil)
        }
    }

    // MARK: - Seeds, written by the project's own writers

    static func seedInputs(for loader: FuzzLoader, in folder: String) throws -> [Input] {
        try? FileManager.default.removeItem(atPath: folder)
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        func file(_ name: String) -> String { (folder as NSString).appendingPathComponent(name) }
        func read(_ path: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: path))) }
        func folderInput(_ path: String) throws -> Input {
            let names = try FileManager.default.contentsOfDirectory(atPath: path).sorted()
            return Input(files: try names.map { ($0, try read((path as NSString).appendingPathComponent($0))) }, isFolder: true)
        }
        var synthetic = SyntheticSettings()
        synthetic.users = 40
        synthetic.items = 24
        synthetic.clusters = 3
        synthetic.medianInteractionsPerUser = 8
        synthetic.substitutePairs = 2
        let data = try SyntheticGenerator.generate(synthetic)
        let split = try Splitter.split(data.log, settings: SplitSettings(minRating: nil, minUserPositives: 3))
        let vectors = Matrix.random(rows: 300, columns: 8, seed: 7)

        switch loader {
        case .safetensors, .model:
            let interactions = split.positives.matrix()
            var inputs: [Input] = []
            let settings: [String: [String: String]] = [
                "als": ["factors": "4", "iterations": "2"], "bpr": ["factors": "4", "epochs": "2"],
                "two-tower": ["dimension": "4", "hidden": "8", "epochs": "1", "batchSize": "16"],
                "item2vec": ["dimension": "4", "epochs": "1"], "itemknn": ["neighbors": "5"],
                "sasrec": ["dimension": "4", "epochs": "1", "maxLength": "8", "threads": "1"],
            ]
            // Besides each model with its defaults, a two-tower with every kind of side information,
            // so the fuzzer reaches the genre, feature and item-vector tables too.
            var withSide = try TwoTower.Configuration().applying(settings["two-tower"]!.merging(
                ["itemGenres": "true", "userFeatures": "true", "itemVectors": "true"]) { _, b in b })
            withSide.threads = 1
            let side = TwoTower.SideInformation(itemGenres: (0..<interactions.columnCount).map { [$0 % 3, 3 + $0 % 2] },
                                                itemVectors: Matrix.random(rows: interactions.columnCount, columns: 3, seed: 5),
                                                userCategories: (0..<interactions.rowCount).map { [$0 % 4] })
            let sideModel = try TwoTower.fit(interactions, configuration: withSide, sideInformation: side, progress: nil)
            // vq-rec's quantiser needs 256 items with text: its own 300-item data, in the log's vocabulary order.
            var vqRec: (any PersistableRecommender, IDVocabulary, IDVocabulary)? = nil
            if ModelRegistry.names.contains(VQRec.modelType) {
                var g = SeededGenerator(seed: 9)
                let sequences = (0..<30).map { _ in (0..<6).map { _ in g.next(below: 300) } }
                var pointers = [0], columns: [Int32] = []
                for s in sequences { columns += Set(s).sorted().map { Int32($0) }; pointers.append(columns.count) }
                var vqData = TrainingData(interactions: try SparseMatrix(rowCount: 30, columnCount: 300, rowPointers: pointers, columns: columns,
                                                                         values: [Float](repeating: 1, count: columns.count)),
                                          sequences: sequences, timeOrdered: true)
                vqData.itemVectors = Matrix.random(rows: 300, columns: 8, seed: 7)
                let model = try VQRec.fit(vqData, configuration: try VQRec.Configuration().applying(
                    ["subspaces": "2", "dimension": "4", "heads": "1", "hidden": "4", "epochs": "1", "maxLength": "8", "threads": "1"]), progress: nil)
                vqRec = (model, IDVocabulary((0..<30).map { "vu\($0)" }), IDVocabulary((0..<300).map { "vi\($0)" }))
            }
            let fitted: [(String, any PersistableRecommender)] = try ModelRegistry.names.filter { $0 != VQRec.modelType }.map { name -> (String, any PersistableRecommender) in
                guard name == SASRec.modelType else {
                    var data = TrainingData(interactions: interactions)
                    data.itemVectors = Matrix.random(rows: interactions.columnCount, columns: 3, seed: 6)
                    return (name, try ModelRegistry.fit(name, data: data, settings: settings[name] ?? [:]))
                }
                // SASRec wants time order; the seed log's file order stands in for it here.
                return (name, try SASRec.fit(TrainingData(log: split.positives), configuration: SASRec.Configuration().applying(settings[name]!),
                                             progress: nil, requireTimeOrder: false))
            } + [("two-tower-side", sideModel)]
            var models = fitted.map { ($0.0, $0.1, split.positives.users, split.positives.items) }
            if let vqRec { models.append((VQRec.modelType, vqRec.0, vqRec.1, vqRec.2)) }
            for (name, model, users, items) in models {
                let trained = TrainedModel(model: model, users: users, items: items, catalog: data.catalog)
                let out = file(name)
                try trained.save(to: out)
                if loader == .model {
                    inputs.append(try folderInput(out))
                } else {
                    inputs.append(Input(files: [("model.safetensors", try read((out as NSString).appendingPathComponent("model.safetensors")))], isFolder: false))
                }
            }
            return inputs
        case .npy:
            try NPY.write(Matrix.random(rows: 6, columns: 4, seed: 1), to: file("a.npy"))
            return [Input(files: [("a.npy", try read(file("a.npy")))], isFolder: false)]
        case .fvecs:
            try VectorFiles.writeFvecs(Matrix.random(rows: 6, columns: 4, seed: 1), to: file("a.fvecs"))
            return [Input(files: [("a.fvecs", try read(file("a.fvecs")))], isFolder: false)]
        case .ivecs:
            try VectorFiles.writeIvecs([[1, 2, 3], [4, 5, 6], [0, 7, 8]], to: file("a.ivecs"))
            return [Input(files: [("a.ivecs", try read(file("a.ivecs")))], isFolder: false)]
        case .interactions:
            let tsv = InteractionWriter.tsv(data.log, rows: Array(0..<min(60, data.log.count)))
            let csv = "userId,movieId,rating,timestamp\n" + tsv.split(separator: "\n").dropFirst()
                .map { $0.replacingOccurrences(of: "\t", with: ",") }.joined(separator: "\n") + "\n"
            return [Input(files: [("ratings.tsv", Array(tsv.utf8))], isFolder: false),
                    Input(files: [("ratings.csv", Array(csv.utf8))], isFolder: false)]
        case .split:
            try SplitFolder.write(split, to: file("split"), source: "synthetic", catalog: data.catalog)
            return [try folderInput(file("split"))]
        case .indexFlat, .indexHNSW, .indexIVF, .indexIVFPQ, .indexLSH:
            let specs: [String]
            switch loader {
            case .indexFlat: specs = ["Flat"]
            case .indexHNSW: specs = ["HNSW8"]
            case .indexIVF: specs = ["IVF4,Flat", "MIPS,IVF4,Flat"]
            case .indexIVFPQ: specs = ["IVF2,PQ4", "OPQ4,IVF2,PQ4,Refine"]
            default: specs = ["LSH4x8"]
            }
            var inputs: [Input] = []
            for (n, spec) in specs.enumerated() {
                for metric in [Metric.innerProduct, .l2, .cosine] where !(spec.hasPrefix("MIPS") && metric != .innerProduct) {
                    let index = try IndexFactory.build(spec: spec, vectors: vectors, metric: metric, settings: ["threads": "1", "iterations": "2"])
                    let name = "index-\(n)-\(metric).idx"
                    try IndexFile.save(index, to: file(name))
                    inputs.append(Input(files: [(name, try read(file(name)))], isFolder: false))
                }
            }
            return inputs
        }
    }

    // MARK: - Mutations

    static let interestingIntegers: [UInt64] = [0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF,
                                                0x1_0000_0000, 1 << 40, 0x7FFF_FFFF_FFFF_FFFF, 0x8000_0000_0000_0000, UInt64.max]
    static let interestingNumbers = ["0", "-1", "1", "2147483648", "4294967296", "9223372036854775807", "-9223372036854775808",
                                     "99999999999999999999999", "1e308", "-1e308", "1e-320", "NaN", "3.5", "65536", "1099511627776"]
    static let interestingBytes: [[UInt8]] = [[0], [9], [10], [13], [0x2C], [0x22], [0x5C], [0x7B], [0x5B], [0xEF, 0xBB, 0xBF], [0xFF, 0xFE], [0xC3]]

    /// Half the time, for files with a length-prefixed text header (safetensors, index files,
    /// `.npy`), mutates the header alone and writes its length back, so that the mutated sizes
    /// and shapes reach the loader's checks instead of failing at the header's length; otherwise
    /// mutates the bytes.
    static func mutateStructured(_ input: [UInt8], name: String, _ g: inout SeededGenerator) -> [UInt8] {
        guard g.next() % 2 == 0 else { return mutate(input, &g) }
        func le(_ bytes: ArraySlice<UInt8>) -> Int { bytes.reversed().reduce(0) { $0 << 8 | Int($1) } }
        func bytes(_ v: Int, _ width: Int) -> [UInt8] { (0..<width).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
        if name.hasSuffix(".safetensors"), input.count >= 8 {
            let length = le(input[0..<8])
            guard length <= input.count - 8 else { return mutate(input, &g) }
            var header = mutate(Array(input[8..<(8 + length)]), &g)
            while header.count % 8 != 0 { header.append(0x20) }
            return bytes(header.count, 8) + header + input[(8 + length)...]
        }
        if name.hasSuffix(".idx"), input.count >= 40 {
            let length = le(input[32..<40])
            let sections = (40 + length + 63) / 64 * 64
            guard sections <= input.count else { return mutate(input, &g) }
            var out = Array(input[0..<32])
            let header = mutate(Array(input[40..<(40 + length)]), &g)
            out += bytes(header.count, 8) + header
            while out.count % 64 != 0 { out.append(0) }
            return out + input[sections...]
        }
        if name.hasSuffix(".npy"), input.count >= 10, input[6] == 1 {
            let length = le(input[8..<10])
            guard 10 + length <= input.count else { return mutate(input, &g) }
            var header = mutate(Array(input[10..<(10 + length)]), &g)
            while (10 + header.count) % 64 != 0 { header.append(0x20) }
            guard header.count < 1 << 16 else { return mutate(input, &g) }
            return Array(input[0..<8]) + bytes(header.count, 2) + header + input[(10 + length)...]
        }
        return mutate(input, &g)
    }

    /// One to four random mutations of `input`.
    static func mutate(_ input: [UInt8], _ g: inout SeededGenerator) -> [UInt8] {
        var bytes = input
        func random(_ n: Int) -> Int { n <= 0 ? 0 : Int(g.next() % UInt64(n)) }
        for _ in 0..<(1 + random(4)) {
            switch random(9) {
            case 0 where !bytes.isEmpty:
                let p = random(bytes.count)
                bytes[p] ^= UInt8(1 << random(8))
            case 1 where !bytes.isEmpty:
                bytes[random(bytes.count)] = [0, 1, 0x7F, 0x80, 0xFF][random(5)]
            case 2 where bytes.count >= 8:
                let width = random(2) == 0 ? 4 : 8
                let p = random(bytes.count - width + 1)
                var v = interestingIntegers[random(interestingIntegers.count)]
                if random(4) == 0 { v = g.next() % 100_000 }
                if random(4) == 0 { v = ~v &+ 1 }   // negated
                for k in 0..<width { bytes[p + k] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(k))) }
            case 3:
                // A decimal number in text (JSON headers, TSV fields) replaced by an extreme one.
                let digits = bytes.indices.filter { bytes[$0] >= 0x30 && bytes[$0] <= 0x39 && ($0 == 0 || !(bytes[$0 - 1] >= 0x30 && bytes[$0 - 1] <= 0x39)) }
                guard !digits.isEmpty else { continue }
                let start = digits[random(digits.count)]
                var end = start
                while end < bytes.count && ((bytes[end] >= 0x30 && bytes[end] <= 0x39) || bytes[end] == 0x2E) { end += 1 }
                bytes.replaceSubrange(start..<end, with: Array(interestingNumbers[random(interestingNumbers.count)].utf8))
            case 4 where !bytes.isEmpty:
                bytes.removeSubrange(random(bytes.count)...)
            case 5 where bytes.count > 1:
                let a = random(bytes.count), len = 1 + random(min(64, bytes.count - a))
                bytes.removeSubrange(a..<(a + len))
            case 6 where !bytes.isEmpty && bytes.count < 1 << 20:
                let a = random(bytes.count), len = 1 + random(min(256, bytes.count - a))
                bytes.insert(contentsOf: bytes[a..<(a + len)], at: random(bytes.count + 1))
            case 7:
                bytes.insert(contentsOf: interestingBytes[random(interestingBytes.count)], at: random(bytes.count + 1))
            default:
                if !bytes.isEmpty { bytes[random(bytes.count)] = UInt8(truncatingIfNeeded: g.next()) }
            }
        }
        return bytes
    }
}

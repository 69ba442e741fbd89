import AffinityData
import AffinityLinalg
import AffinityModels
import ArgumentParser
import Foundation

/// `affinity model info|export`: what a saved model is, and its embeddings for other tools.
struct ModelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "model",
        abstract: "Inspect a saved model, or export its embeddings (npy, fvecs, tsv).",
        subcommands: [Info.self, Export.self]
    )

    struct Info: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Type, settings, training split and time, counts, files and tensors of a saved model."
        )
        @Argument(help: "Model folder.") var model: String
        @Flag(name: .long, help: "Print JSON on stdout.") var json = false

        struct Output: Encodable {
            struct TensorInfo: Encodable { var name: String; var dtype: String; var shape: [Int] }
            var path: String
            var type: String
            var formatVersion: Int
            var settings: String
            var info: [String: String]
            var users: Int
            var items: Int
            var trainingInteractions: Int
            var embeddingDimension: Int?
            var files: [String: Int]
            var tensors: [TensorInfo]
        }

        func run() throws {
            let trained = try TrainedModel.load(from: model)
            let file = try SafeTensorsFile.read(path: (model as NSString).appendingPathComponent("model.safetensors"))
            var files: [String: Int] = [:]
            for name in ["model.safetensors", "vocabulary.json", "items.json"] {
                let path = (model as NSString).appendingPathComponent(name)
                if let size = (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int { files[name] = size }
            }
            let output = Output(
                path: model, type: trained.modelType, formatVersion: TrainedModel.formatVersion,
                settings: file.metadata["config"] ?? "{}", info: trained.info,
                users: trained.users.count, items: trained.items.count,
                trainingInteractions: trained.model.interactions.nonZeroCount,
                embeddingDimension: (trained.model as? any EmbeddingRecommender)?.itemEmbeddings.columns,
                files: files,
                tensors: file.tensors.keys.sorted().map { .init(name: $0, dtype: file.tensors[$0]!.dtype, shape: file.tensors[$0]!.shape) })
            if json {
                try printJSON(output)
                return
            }
            var facts: [(String, String)] = [
                ("model", output.path),
                ("type", "\(output.type) (model format version \(output.formatVersion))"),
                ("settings", output.settings),
            ]
            facts += output.info.sorted { $0.key < $1.key }.map { ($0.key.replacingOccurrences(of: "_", with: " "), $0.value) }
            facts += [("users", "\(output.users)"), ("items", "\(output.items)"),
                      ("interactions", "\(output.trainingInteractions) (training)")]
            if let d = output.embeddingDimension { facts.append(("embeddings", "\(d) dimensions (affinity model export)")) }
            facts.append(("files", files.sorted { $0.key < $1.key }.map { "\($0.key) \(MemoryBudget.describe(Double($0.value)))" }.joined(separator: ", ")))
            let width = facts.map(\.0.count).max()! + 2
            for (key, value) in facts { print((key + ":").padding(toLength: width, withPad: " ", startingAt: 0) + value) }
            print("tensors:")
            for t in output.tensors { print("  \(t.name)  \(t.dtype) \(t.shape)") }
        }
    }

    enum What: String, CaseIterable, ExpressibleByArgument {
        case itemEmbeddings = "item-embeddings", userEmbeddings = "user-embeddings"
    }

    enum Format: String, CaseIterable, ExpressibleByArgument { case npy, fvecs, tsv }

    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a model's item or user embeddings for other tools.",
            discussion: """
            Rows follow the model's vocabulary. npy and fvecs hold the vectors only and
            get OUT.ids beside them (one raw ID per line, row order); tsv is
            ID<TAB>v1<TAB>v2... (no header; what train --item-vectors reads).
            Scores are dot products of these vectors: BPR's item bias is the last item
            coordinate and every user vector ends with a 1 there, exactly as the serving
            index uses them. iALS, BPR, two-tower and Item2Vec have embeddings; EASE,
            item-kNN and popularity do not.
            """
        )
        @Argument(help: "Model folder.") var model: String
        @Option(name: .long, help: "item-embeddings | user-embeddings.") var what: What
        @Option(name: .long, help: "npy | fvecs | tsv (default: from the name of --out).") var format: Format?
        @Option(name: .long, help: "Output file.") var out: String
        @Flag(name: .long, help: "Replace OUT if it exists.") var force = false

        func run() throws {
            let format = try self.format ?? {
                guard let f = Format(rawValue: URL(fileURLWithPath: out).pathExtension) else {
                    throw ValidationError("--format npy|fvecs|tsv is needed: the name \(out) does not say")
                }
                return f
            }()
            if FileManager.default.fileExists(atPath: out) && !force {
                throw CommandError("\(out) already exists (pass --force to replace it)")
            }
            let trained = try TrainedModel.load(from: model)
            let folder = URL(fileURLWithPath: out).deletingLastPathComponent().path
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            guard let embeddings = trained.model as? any EmbeddingRecommender else {
                throw CommandError("a \(trained.modelType) model has no embeddings (iALS, BPR, two-tower and Item2Vec do)")
            }
            let (vectors, ids): (Matrix, IDVocabulary)
            switch what {
            case .itemEmbeddings:
                (vectors, ids) = (embeddings.itemEmbeddings, trained.items)
            case .userEmbeddings:
                (vectors, ids) = (embeddings.userEmbeddings, trained.users)
            }
            switch format {
            case .npy:
                try NPY.write(vectors, to: out)
            case .fvecs:
                try VectorFiles.writeFvecs(vectors, to: out)
            case .tsv:
                var text = ""
                for r in 0..<vectors.rows {
                    text += ids[r]
                    for k in 0..<vectors.columns { text += "\t\(vectors[r, k])" }
                    text += "\n"
                }
                try AtomicWrite.file(Data(text.utf8), to: out)
            }
            if format != .tsv {   // the vectors alone: their IDs beside them, in row order
                try writeRowIDs(ids.ids, besides: out)
            }
            Console.note("wrote \(vectors.rows) \(what == .itemEmbeddings ? "item" : "user") vectors of \(vectors.columns) dimensions to \(out)"
                         + (format == .tsv ? "" : " (IDs in \(out).ids)"))
        }
    }
}

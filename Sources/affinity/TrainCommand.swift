import AffinityData
import AffinityModels
import ArgumentParser
import Foundation

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Fit a model on a split's train.tsv and save it as a model folder.",
        discussion: "Settings (--set key=value) of each model, with their defaults:\n\n"
            + ModelRegistry.names.map { "\($0)\n\(ModelRegistry.settingsHelp(of: $0) ?? "")" }.joined(separator: "\n\n")
            + "\n\nThe evaluation protocol and file formats: docs/protocol.md, docs/formats.md."
    )

    @Option(name: .long, help: "Split folder (train.tsv is used).") var split: String
    @Option(name: .long, help: "Model: \(ModelRegistry.names.joined(separator: "|")).") var model: String
    @Option(name: .customLong("set"), help: "A setting, key=value (repeatable).") var settings: [String] = []
    @Option(name: .long, help: "Item metadata file to store with the model (default: the split's items.tsv).") var items: String?
    @Option(name: .long, help: "Dense item vectors for text-knn and two-tower (--set itemVectors=true): .npy with PATH.ids (affinity text embed), or TSV item<TAB>v1<TAB>v2...; without it they are embedded from the item text.") var itemVectors: String?
    @Option(name: .long, help: "The sentence encoder's folder, for models that embed item text (default: $AFFINITY_TEXT_MODEL).") var textModel: String?
    @Option(name: .long, help: "two-tower: user features, MovieLens users.dat or TSV user<TAB>feature|feature; with --set userFeatures=true.") var userFeatures: String?
    @Flag(name: .long, help: "two-tower, text-knn, vq-rec, sasrec items=text: add every item of the item text (--items or --item-vectors) that has no training interaction, placed by its content (cold start).") var coldItems = false
    @Option(name: .long, help: "vq-rec: pre-train on these split folders (comma-separated; their train.tsv, and items.tsv text embedded with --text-model: --item-vectors must come from the same encoder, only the width is checked), then fine-tune on --split.") var pretrain: String?
    @Option(name: .long, help: "Output model folder.") var out: String
    @Flag(name: .long, help: "Replace OUT if it exists.") var force = false

    func validate() throws {
        guard ModelRegistry.type(named: model) != nil else {
            throw ValidationError("unknown model '\(model)'; known models: \(ModelRegistry.names.joined(separator: ", "))")
        }
    }

    func run() throws {
        let folder = try SplitFolder.read(split)
        let catalog = try items.map { try ItemCatalog.read(path: $0) }
        var cold: [String] = []
        if coldItems {
            let known = Set(folder.train.items.ids)
            var source = Set((catalog ?? folder.catalog)?.titles.keys.map { $0 } ?? [])
            if let itemVectors, itemVectors.hasSuffix(".npy"), FileManager.default.fileExists(atPath: itemVectors + ".ids") {
                source.formUnion(try readRowIDs(itemVectors + ".ids", what: "item"))
            }
            cold = source.subtracting(known).sorted()
            guard !cold.isEmpty else { throw CommandError("--cold-items: every item of the item text already has training interactions") }
        }
        let (trained, seconds) = try trainOnSplit(folder, model: model, settings: try parseSettings(settings), catalog: catalog,
                                                  itemVectorsPath: itemVectors, userFeaturesPath: userFeatures, textModel: textModel,
                                                  coldItems: cold, pretrain: try pretrainFolders(pretrain))
        try trained.save(to: out, overwrite: force)
        if !cold.isEmpty { Console.note("\(cold.count) cold items (no training interaction) placed by their content") }
        print("trained \(model) on \(trained.users.count) users x \(trained.items.count) items in \(String(format: "%.2f", seconds)) s; saved to \(out)")
    }
}

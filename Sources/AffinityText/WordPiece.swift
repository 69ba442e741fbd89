import Foundation

/// BERT's tokenizer: the "basic" pass (clean, isolate CJK characters, strip accents, lower-case,
/// split on whitespace and punctuation) and then WordPiece (greedy longest match against the
/// vocabulary, continuation pieces prefixed `##`), as Hugging Face's `BertTokenizerFast`
/// (tokenizers' `BertNormalizer`, `BertPreTokenizer`, `WordPiece`) does it, so that a text gets
/// the same token IDs here as under sentence-transformers.
///
/// Characters are Unicode scalars (Rust's `char`), and vocabulary lookups compare scalars exactly
/// (not Swift's canonical-equivalence `String ==`), as the reference does.
public struct WordPieceTokenizer: Sendable {
    /// A vocabulary entry's scalars, compared exactly.
    struct Key: Hashable, Sendable {
        var scalars: [UInt32]
    }

    /// Token strings by ID (the lines of `vocab.txt`).
    public let tokens: [String]
    private let ids: [Key: Int32]
    /// Lower-case and strip accents (uncased models such as MiniLM-L6 and bert-base-uncased).
    public let lowercase: Bool
    /// Words longer than this many characters become `[UNK]` whole (BERT's 100).
    public let maxInputCharactersPerWord: Int
    public let clsID: Int32, sepID: Int32, unknownID: Int32, padID: Int32

    /// Why a tokenizer could not be read.
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    public init(tokens: [String], lowercase: Bool = true, maxInputCharactersPerWord: Int = 100) throws {
        var ids: [Key: Int32] = [:]
        ids.reserveCapacity(tokens.count)
        for (i, t) in tokens.enumerated() where ids[Key(scalars: t.unicodeScalars.map(\.value))] == nil {
            ids[Key(scalars: t.unicodeScalars.map(\.value))] = Int32(i)
        }
        func special(_ name: String) throws -> Int32 {
            guard let id = ids[Key(scalars: name.unicodeScalars.map(\.value))] else {
                throw Failure(description: "the vocabulary has no \(name) token")
            }
            return id
        }
        self.tokens = tokens
        self.ids = ids
        self.lowercase = lowercase
        self.maxInputCharactersPerWord = maxInputCharactersPerWord
        clsID = try special("[CLS]")
        sepID = try special("[SEP]")
        unknownID = try special("[UNK]")
        padID = try special("[PAD]")
    }

    /// Reads a model folder's tokenizer: `vocab.txt` (one token per line, the line number is the
    /// ID), else the WordPiece vocabulary of `tokenizer.json`; lower-casing from
    /// `tokenizer_config.json`'s `do_lower_case` (true when absent).
    public init(directory: String) throws {
        let vocabPath = (directory as NSString).appendingPathComponent("vocab.txt")
        let jsonPath = (directory as NSString).appendingPathComponent("tokenizer.json")
        var tokens: [String]
        if let data = FileManager.default.contents(atPath: vocabPath) {
            guard let text = String(data: data, encoding: .utf8) else {
                throw Failure(description: "\(vocabPath): not UTF-8")
            }
            tokens = text.components(separatedBy: "\n")
            if tokens.last == "" { tokens.removeLast() }
            tokens = tokens.map { $0.hasSuffix("\r") ? String($0.dropLast()) : $0 }
        } else if let data = FileManager.default.contents(atPath: jsonPath) {
            guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let model = object["model"] as? [String: Any], let vocab = model["vocab"] as? [String: Int] else {
                throw Failure(description: "\(jsonPath): no WordPiece vocabulary (model.vocab) in it")
            }
            tokens = [String](repeating: "", count: (vocab.values.max() ?? -1) + 1)
            for (t, i) in vocab where i >= 0 { tokens[i] = t }
        } else {
            throw Failure(description: "\(directory): neither vocab.txt nor tokenizer.json is there")
        }
        var lowercase = true
        let configPath = (directory as NSString).appendingPathComponent("tokenizer_config.json")
        if let data = FileManager.default.contents(atPath: configPath),
           let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
           let flag = object["do_lower_case"] as? Bool {
            lowercase = flag
        }
        do {
            try self.init(tokens: tokens, lowercase: lowercase)
        } catch let failure as Failure {
            throw Failure(description: "\(directory): \(failure.description)")
        }
    }

    public var vocabularySize: Int { tokens.count }

    /// The token ID of a vocabulary entry, if present.
    public func id(of token: String) -> Int32? { ids[Key(scalars: token.unicodeScalars.map(\.value))] }

    // MARK: - The basic pass

    /// The words and punctuation marks of `text` after normalisation (before WordPiece).
    public func basicTokens(_ text: String) -> [String] {
        basicScalarTokens(text).map { String(String.UnicodeScalarView($0.compactMap(Unicode.Scalar.init))) }
    }

    func basicScalarTokens(_ text: String) -> [[UInt32]] {
        // Clean (drop NUL, U+FFFD and control characters; whitespace becomes a space) and put
        // spaces around CJK ideographs.
        var cleaned: [Unicode.Scalar] = []
        cleaned.reserveCapacity(text.unicodeScalars.count)
        for s in text.unicodeScalars {
            if s.value == 0 || s.value == 0xFFFD || Self.isControl(s) { continue }
            if Self.isWhitespace(s) {
                cleaned.append(" ")
            } else if Self.isCJK(s.value) {
                cleaned.append(" ")
                cleaned.append(s)
                cleaned.append(" ")
            } else {
                cleaned.append(s)
            }
        }
        var normalized: [Unicode.Scalar] = cleaned
        if lowercase {
            // Strip accents (NFD, then drop non-spacing marks), then lower-case each character.
            let decomposed = String(String.UnicodeScalarView(cleaned)).decomposedStringWithCanonicalMapping
            normalized = []
            normalized.reserveCapacity(cleaned.count)
            for s in decomposed.unicodeScalars where s.properties.generalCategory != .nonspacingMark {
                if s.isASCII {
                    normalized.append(s.value >= 65 && s.value <= 90 ? Unicode.Scalar(s.value + 32)! : s)
                } else {
                    normalized.append(contentsOf: s.properties.lowercaseMapping.unicodeScalars)
                }
            }
        }
        // Split on whitespace; every punctuation character is a token of its own.
        var out: [[UInt32]] = []
        var current: [UInt32] = []
        for s in normalized {
            if Self.isWhitespace(s) {
                if !current.isEmpty { out.append(current); current = [] }
            } else if Self.isPunctuation(s) {
                if !current.isEmpty { out.append(current); current = [] }
                out.append([s.value])
            } else {
                current.append(s.value)
            }
        }
        if !current.isEmpty { out.append(current) }
        return out
    }

    static func isWhitespace(_ s: Unicode.Scalar) -> Bool {
        switch s.value {
        case 0x20, 0x09, 0x0A, 0x0D: return true
        default: return s.properties.isWhitespace
        }
    }

    static func isControl(_ s: Unicode.Scalar) -> Bool {
        switch s.value {
        case 0x09, 0x0A, 0x0D: return false
        default:
            switch s.properties.generalCategory {
            case .control, .format, .surrogate, .privateUse, .unassigned: return true
            default: return false
            }
        }
    }

    static func isPunctuation(_ s: Unicode.Scalar) -> Bool {
        let v = s.value
        if (33...47).contains(v) || (58...64).contains(v) || (91...96).contains(v) || (123...126).contains(v) { return true }
        switch s.properties.generalCategory {
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation, .initialPunctuation,
             .finalPunctuation, .otherPunctuation:
            return true
        default:
            return false
        }
    }

    static func isCJK(_ v: UInt32) -> Bool {
        (0x4E00...0x9FFF).contains(v) || (0x3400...0x4DBF).contains(v) || (0x20000...0x2A6DF).contains(v)
            || (0x2A700...0x2B73F).contains(v) || (0x2B740...0x2B81F).contains(v) || (0x2B820...0x2CEAF).contains(v)
            || (0xF900...0xFAFF).contains(v) || (0x2F800...0x2FA1F).contains(v)
    }

    // MARK: - WordPiece

    /// The WordPiece IDs of one basic token: greedy longest match from the left, continuation
    /// pieces looked up with `##`; a word with a part no entry matches, or longer than
    /// `maxInputCharactersPerWord`, is `[UNK]` whole.
    func wordPieces(_ word: [UInt32], into out: inout [Int32]) {
        guard word.count <= maxInputCharactersPerWord else { out.append(unknownID); return }
        let hash: [UInt32] = [35, 35]
        var pieces: [Int32] = []
        var start = 0
        var key = Key(scalars: [])
        while start < word.count {
            var end = word.count
            var found: Int32?
            while start < end {
                key.scalars.removeAll(keepingCapacity: true)
                if start > 0 { key.scalars.append(contentsOf: hash) }
                key.scalars.append(contentsOf: word[start..<end])
                if let id = ids[key] { found = id; break }
                end -= 1
            }
            guard let id = found else { out.append(unknownID); return }
            pieces.append(id)
            start = end
        }
        out.append(contentsOf: pieces)
    }

    /// A text's token IDs: `[CLS]`, its word pieces (the first `maxLength − 2`), `[SEP]`.
    public struct Encoding: Sendable, Equatable {
        public var ids: [Int32]
        /// Word pieces dropped to fit `maxLength`.
        public var dropped: Int
        public var truncated: Bool { dropped > 0 }
    }

    /// Encodes one text as the model reads it (no padding: batches are packed, see `SentenceEncoder`).
    public func encode(_ text: String, maxLength: Int) -> Encoding {
        precondition(maxLength >= 2, "maxLength must leave room for [CLS] and [SEP]")
        var pieces: [Int32] = []
        for word in basicScalarTokens(text) { wordPieces(word, into: &pieces) }
        let kept = min(pieces.count, maxLength - 2)
        return Encoding(ids: [clsID] + pieces[0..<kept] + [sepID], dropped: pieces.count - kept)
    }

    /// The token strings of IDs (for display and tests).
    public func strings(_ ids: [Int32]) -> [String] { ids.map { tokens[Int($0)] } }
}

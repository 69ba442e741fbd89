import AffinityLinalg
import Foundation
import Testing
@testable import AffinityServer

/// The recommendation answer's hand-written JSON against `JSONEncoder` (same settings), byte for
/// byte: escapes, every control character, non-ASCII text, floats of every size, optional fields.
@Suite struct DirectJSONTests {
    static let pieces = ["plain", "quote\"d", "back\\slash", "a/b", "tab\there", "new\nline", "é ü 東京 🎬", "\u{7F}", "",
                         String(UnicodeScalar(0)), String(UnicodeScalar(0x1F)), "\u{08}\u{0C}\r"]

    static func text(_ g: inout SeededGenerator) -> String {
        (0..<g.next(below: 3)).map { _ in pieces[g.next(below: pieces.count)] }.joined()
            + (g.next(below: 3) == 0 ? (0..<32).map { String(UnicodeScalar(UInt8($0))) }.joined() : "")
    }

    static func number(_ g: inout SeededGenerator) -> Float {
        switch g.next(below: 6) {
        case 0: return [0, -0.0, 1, -1, 0.1, 1e-7, 3e10, 123456789, Float.leastNonzeroMagnitude, Float.greatestFiniteMagnitude][g.next(below: 10)]
        case 1: return Float(g.next(below: 1000))
        default: return Float(g.nextGaussian()) * Float([1e-6, 1, 1e6, 1e20][g.next(below: 4)])
        }
    }

    @Test func recommendationAnswersMatchJSONEncoder() throws {
        var g = SeededGenerator(seed: 12)
        for _ in 0..<300 {
            let items = (0..<g.next(below: 5)).map { _ in
                ItemOut(item: Self.text(&g), score: Self.number(&g), title: g.next(below: 2) == 0 ? nil : Self.text(&g),
                        because: g.next(below: 2) == 0 ? nil : (0..<g.next(below: 3)).map { _ in
                            ContributionOut(item: Self.text(&g), title: g.next(below: 2) == 0 ? nil : Self.text(&g), weight: Self.number(&g))
                        })
            }
            let value = RecommendationsOut(user: g.next(below: 2) == 0 ? nil : Self.text(&g),
                                           model: ModelRef(id: g.next(below: 100_000) - 50, type: Self.text(&g)),
                                           retrieval: Self.text(&g), items: items, note: g.next(below: 2) == 0 ? nil : Self.text(&g))
            var direct: [UInt8] = []
            try value.writeJSON(into: &direct)
            let expected = try JSON.encoded(value)
            #expect(direct == Array(expected), "\(String(decoding: direct, as: UTF8.self)) vs \(String(decoding: expected, as: UTF8.self))")
        }
    }

    @Test func nonFiniteScoresThrowAsJSONEncoderDoes() {
        for bad in [Float.nan, .infinity, -.infinity] {
            let value = RecommendationsOut(user: "u", model: ModelRef(id: 1, type: "ease"), retrieval: "exact",
                                           items: [ItemOut(item: "i", score: bad, title: nil, because: nil)])
            var out: [UInt8] = []
            #expect(throws: EncodingError.self) { try value.writeJSON(into: &out) }
            #expect(throws: EncodingError.self) { try JSON.encoded(value) }
        }
    }
}

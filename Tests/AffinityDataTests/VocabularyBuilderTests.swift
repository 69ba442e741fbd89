import Foundation
import Testing
@testable import AffinityData
import AffinityLinalg

@Suite struct VocabularyBuilderTests {
    /// The byte-keyed table gives the indexes a String-keyed vocabulary gives (first appearance),
    /// over IDs of every length around the hash's 8-byte words, numerals with and without leading
    /// zeros, repeats, enough distinct IDs to grow the table several times, and two invalid UTF-8
    /// spellings that decode to the same String (one index, as with String keys).
    @Test func matchesAStringKeyedVocabulary() {
        var g = SeededGenerator(seed: 5)
        var fields: [[UInt8]] = []
        for n in 0..<6000 {
            let id: String
            switch n % 4 {
            case 0: id = String(g.next(below: 3000))
            case 1: id = "0" + String(g.next(below: 50))
            case 2: id = "user-" + String(repeating: "x", count: g.next(below: 20)) + String(g.next(below: 900))
            default: id = "i" + String(g.next(below: 2000))
            }
            fields.append(Array(id.utf8))
        }
        fields += [[0xFF, 0x41], [0xFE, 0x41], [0xFF, 0x41], Array("12345678".utf8), Array("123456789".utf8), Array("1234567".utf8),
                   [0x61], [0x61, 0x00], [0x61], [0xC3, 0xA9], [0x65, 0xCC, 0x81],   // "a" vs "a\0"; é as NFC and NFD: one String
                   Array(repeating: 0x62, count: 255), Array(repeating: 0x62, count: 256), Array(repeating: 0x62, count: 254) + [0x63],
                   Array(repeating: 0x62, count: 300), Array(repeating: 0x62, count: 256)]
        var builder = VocabularyBuilder()
        var reference = IDVocabulary()
        for f in fields {
            let got = f.withUnsafeBufferPointer { builder.index($0) }
            let want = reference.insert(String(decoding: f, as: UTF8.self))
            #expect(Int(got) == want, "\(f)")
        }
        #expect(builder.vocabulary == reference)
        #expect(builder.vocabulary.count > 2000)   // the table grew past its first 1,024 slots
    }

    /// Long IDs built so that a multiply-fold over 8-byte words collides whatever its seed (flip
    /// bit 63 of one word and bits 63 and 34 of the next: the two states meet again) get distinct
    /// hashes: 64 such IDs once shared one hash, one probe run, quadratic loading.
    @Test func craftedLongIDsDoNotCollide() {
        var ids: [[UInt8]] = []
        for pattern in 0..<64 {
            var id = [UInt8](repeating: 0x30, count: 8 + 16 * 6)
            for block in 0..<6 where pattern >> block & 1 == 1 {
                id[15 + 16 * block] ^= 0x80
                id[23 + 16 * block] ^= 0x80
                id[20 + 16 * block] ^= 0x04
            }
            ids.append(id)
        }
        let hashes = Set(ids.map { id in id.withUnsafeBufferPointer { VocabularyBuilder.hash($0, firstWord: VocabularyBuilder.firstWord($0)) } })
        #expect(hashes.count == 64)
    }
}

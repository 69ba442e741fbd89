import AffinityData
import AffinityLinalg
import Foundation
import Testing
@testable import AffinityModels

@Suite struct TextKNNTests {
    /// Items 0-2 share one text direction, 3-5 another; item 6 has no text.
    static func vectors() -> Matrix {
        var m = Matrix(rows: 7, columns: 3)
        for i in 0..<3 { m[i, 0] = 1; m[i, 1] = Float(i) * 0.1 }
        for i in 3..<6 { m[i, 2] = 1; m[i, 1] = Float(i - 3) * 0.1 }
        return m
    }

    static func interactions() throws -> SparseMatrix {
        // User 0 saw item 0; user 1 saw items 3 and 6.
        try SparseMatrix(rowCount: 2, columnCount: 7, rowPointers: [0, 1, 3], columns: [0, 3, 6], values: [1, 1, 1])
    }

    @Test func neighboursAreTheTextCosineAndScoresSumThem() throws {
        var c = TextKNN.Configuration()
        c.neighbors = 2
        let model = try TextKNN.fit(try Self.interactions(), itemVectors: Self.vectors(), configuration: c)
        let v = Self.vectors()
        func cosine(_ a: Int, _ b: Int) -> Float {
            let x = (0..<3).map { v[a, $0] }, y = (0..<3).map { v[b, $0] }
            return Kernels.referenceDot(x, y) / (Kernels.referenceDot(x, x) * Kernels.referenceDot(y, y)).squareRoot()
        }
        #expect(try model.similarItems(to: 0, k: 5).map(\.index) == [1, 2])
        #expect(try model.similarItems(to: 6, k: 5).isEmpty, "no text, no neighbours")
        let scores = model.scores(forUser: 0)
        #expect(abs(scores[1] - cosine(0, 1)) < 1e-6 && abs(scores[2] - cosine(0, 2)) < 1e-6)
        #expect(scores[3] == 0 && scores[4] == 0 && scores[6] == 0)
        // Item 6 (no text) contributes nothing to user 1.
        let user1 = model.scores(forUser: 1)
        #expect(user1[4] > 0 && user1[0] == 0 && user1[6] == 0)
        let recs = try model.recommend(user: 1, k: 3).map(\.index)
        #expect(Set(recs.prefix(2)) == [4, 5])
    }

    @Test func withoutVectorsItSaysWhatItNeeds() throws {
        #expect { try ModelRegistry.fit("text-knn", interactions: try Self.interactions(), settings: [:]) } throws: {
            "\($0)".contains("text-knn needs item text vectors")
        }
        #expect { try TextKNN.fit(try Self.interactions(), itemVectors: Matrix(rows: 3, columns: 2)) } throws: {
            "\($0)".contains("3 vectors for 7 items")
        }
    }
}

import AffinityLinalg
import AffinityModels
import Testing

/// The conformance suite every recommender runs (after implicit's `recommender_base_test.py`).
///
/// Call `RecommenderConformance.check { interactions in try MyModel.fit(interactions, ...) }` from a
/// `@Test`; each property is recorded as its own expectation, with the failing user or item named.
public enum RecommenderConformance {
    /// A "checkerboard": users 0..<8 consumed all of items 0..<6 (group A), users 8..<12 all of
    /// items 6..<10 (group B), except that user 0 lacks item 0. Item 0 co-occurs only with group A
    /// and has 7 users while every group-B item has 4, so for collaborative models and for
    /// popularity alike item 0 is provably user 0's top-1 recommendation.
    public static func checkerboard() -> SparseMatrix {
        var rows: [Int32] = [], cols: [Int32] = []
        for u in 0..<8 { for i in 0..<6 where !(u == 0 && i == 0) { rows.append(Int32(u)); cols.append(Int32(i)) } }
        for u in 8..<12 { for i in 6..<10 { rows.append(Int32(u)); cols.append(Int32(i)) } }
        return SparseMatrix(rowCount: 12, columnCount: 10, rows: rows, cols: cols)
    }

    /// A seeded random binary matrix with a popularity skew (for the list properties).
    public static func randomInteractions(users: Int = 40, items: Int = 30, perUser: Int = 6, seed: UInt64 = 7) -> SparseMatrix {
        var rng = SeededGenerator(seed: seed)
        var rows: [Int32] = [], cols: [Int32] = []
        for u in 0..<users {
            for _ in 0..<perUser {
                let a = rng.next(below: items), b = rng.next(below: items)
                rows.append(Int32(u))
                cols.append(Int32(min(a, b)))   // smaller indexes more popular
            }
        }
        return SparseMatrix(rowCount: users, columnCount: items, rows: rows, cols: cols).binarized()
    }

    public static func check(sourceLocation: SourceLocation = #_sourceLocation,
                             fit: (SparseMatrix) throws -> any Recommender) throws {
        // 1. Checkerboard: the held-out item is top-1.
        let board = try fit(checkerboard())
        let top = try board.recommend(user: 0, k: 1)
        #expect(top.map(\.index) == [0], "checkerboard: user 0's top-1 should be item 0", sourceLocation: sourceLocation)

        let model = try fit(randomInteractions())
        let nItems = model.itemCount
        for user in 0..<model.userCount {
            let seen = Set(model.seenItems(ofUser: user))
            // 2. k larger than the catalogue: every allowed item exactly once, nothing padded.
            let all = try model.recommend(user: user, k: nItems + 5)
            #expect(all.count == nItems - seen.count, "user \(user): \(all.count) items for k > catalogue, expected \(nItems - seen.count)", sourceLocation: sourceLocation)
            #expect(Set(all.map(\.index)).count == all.count, "user \(user): duplicate items", sourceLocation: sourceLocation)
            // 3. Seen and excluded items never appear.
            let excluded: Set<Int> = [user % nItems, (user * 7 + 3) % nItems]
            let filtered = try model.recommend(user: user, k: nItems, excluding: excluded)
            let leaked = Set(filtered.map(\.index)).intersection(seen.union(excluded))
            #expect(leaked.isEmpty, "user \(user): seen or excluded items \(leaked.sorted()) were recommended", sourceLocation: sourceLocation)
            // 4. Best first, ties to the smaller index.
            let ordered = zip(all, all.dropFirst()).allSatisfy { ScoredIndex.ranksBefore($0.score, $0.index, $1.score, $1.index) }
            #expect(ordered, "user \(user): list is not best-first with ties to the smaller index", sourceLocation: sourceLocation)
            // 5. A prefix property: top-5 is the first 5 of the longer list.
            let five = try model.recommend(user: user, k: 5)
            #expect(five == Array(all.prefix(5)), "user \(user): top-5 differs from the head of the full list", sourceLocation: sourceLocation)
        }
        // 6. Batch equals single.
        let users = Array(0..<model.userCount)
        let batch = try model.recommend(users: users, k: 10, threads: 2)
        for u in users {
            #expect(batch[u] == (try model.recommend(user: u, k: 10)), "user \(u): batch result differs from single", sourceLocation: sourceLocation)
        }
        // 7. Bad arguments are errors, not crashes.
        #expect(throws: ModelError.self, "k = 0 must throw", sourceLocation: sourceLocation) { try model.recommend(user: 0, k: 0) }
        #expect(throws: ModelError.self, "unknown user must throw", sourceLocation: sourceLocation) { try model.recommend(user: model.userCount, k: 3) }
        #expect(throws: ModelError.self, "unknown item must throw", sourceLocation: sourceLocation) { try model.similarItems(to: nItems, k: 3) }
        // 8. Similar items: never the item itself, best first, at most k.
        for item in 0..<nItems {
            let similar = try model.similarItems(to: item, k: 5)
            #expect(similar.count <= 5 && !similar.contains { $0.index == item }, "item \(item): bad similar list", sourceLocation: sourceLocation)
        }
        // 9. Fold-in of a history returns scores for every item and never recommends the history.
        let history = model.seenItems(ofUser: 1)
        #expect(model.scores(forHistory: history).count == nItems, sourceLocation: sourceLocation)
        let folded = try model.recommend(history: history, k: nItems)
        #expect(Set(folded.map(\.index)).isDisjoint(with: history), "fold-in recommended history items", sourceLocation: sourceLocation)
    }
}

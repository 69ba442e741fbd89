import AffinityData
import AffinityLinalg
import AffinityModels
import Foundation
import Testing
@testable import AffinityPipeline

/// Issue "Retrieve -> rank -> re-rank": the re-rankers, each against a case worked by hand, MMR
/// against a plain recomputation.
@Suite struct ReRankerTests {
    /// 6 items: 0-2 in category 0 ("drama"), 3-4 in 1 ("comedy"), 5 in both; popularity falls with the index.
    let profile = ItemProfile(categories: [[0], [0], [0], [1], [1], [0, 1]], popularity: [60, 50, 40, 30, 20, 10], userCount: 100,
                              categoryNames: ["drama", "comedy"])
    /// Scored best first: the dramas lead.
    let list = [(0, 1.0), (1, 0.9), (2, 0.8), (3, 0.5), (4, 0.4), (5, 0.3)].map { Candidate(item: $0.0, score: Float($0.1)) }

    @Test func mmrWithLambdaOneKeepsTheRankingAndLowerLambdaMixesCategories() throws {
        let keep = try MMR(settings: try MMR.Settings().applying(["lambda": "1"]), profile: profile)
        #expect(keep.rerank(list, history: [], k: 4).map(\.item) == [0, 1, 2, 3])
        let mix = try MMR(settings: try MMR.Settings().applying(["lambda": "0.5"]), profile: profile)
        let out = mix.rerank(list, history: [], k: 3)
        // After drama 0, comedy 3 (relevance 0.286, similarity 0) beats drama 1 (0.857 - similarity 1).
        #expect(out.map(\.item) == [0, 3, 1], "\(out.map(\.item))")
        #expect(out[1].notes == ["mmr: up from rank 4 to 2"] || out[1].notes == ["mmr: rank 4 -> 2"], "\(out[1].notes)")
    }

    /// The merge-based Jaccard of MMR's category similarity against Swift's sets.
    @Test func categoryJaccardMatchesSets() {
        var g = SeededGenerator(seed: 8)
        for _ in 0..<500 {
            let a = Array(Set((0..<g.next(below: 5)).map { _ in g.next(below: 8) })).sorted()
            let b = Array(Set((0..<g.next(below: 5)).map { _ in g.next(below: 8) })).sorted()
            let union = Set(a).union(b).count
            let expected = union > 0 ? Double(Set(a).intersection(b).count) / Double(union) : 0
            #expect(MMR.jaccard(a, b) == expected, "\(a) \(b)")
        }
    }

    /// MMR's bit-set Jaccard (categories below 64) equals the sorted-list merge, and ids of 64 or
    /// more take the merge.
    @Test func categoryBitsMatchTheMerge() throws {
        var g = SeededGenerator(seed: 21)
        for top in [18, 64, 90] {
            let n = 30
            let categories = (0..<n).map { _ in (0..<g.next(below: 4)).map { _ in g.next(below: top) } }
            let profile = ItemProfile(categories: categories, popularity: Array(repeating: 1, count: n), userCount: 1)
            let mmr = try MMR(settings: try MMR.Settings().applying(["similarity": "categories"]), profile: profile)
            #expect((mmr.categoryBits != nil) == (top <= 64 && categories.allSatisfy { $0.allSatisfy { $0 < 64 } }))
            for a in 0..<n { for b in 0..<n {
                let expected = MMR.jaccard(Array(Set(categories[a])).sorted(), Array(Set(categories[b])).sorted())
                #expect(mmr.similarity(a, b) == expected, "top \(top) \(a) \(b)")
            } }
        }
    }

    @Test func mmrEqualsAPlainRecomputation() throws {
        var g = SeededGenerator(seed: 5)
        let n = 40, d = 6
        let vectors = Matrix(rows: n, columns: d, values: (0..<(n * d)).map { _ in Float(g.nextGaussian()) })
        let withVectors = ItemProfile(categories: (0..<n).map { [$0 % 3] }, popularity: Array(repeating: 1, count: n), userCount: 1, vectors: vectors)
        for similarity in ["vectors", "categories"] {
            for lambda in [0.0, 0.3, 0.7] {
                let mmr = try MMR(settings: try MMR.Settings().applying(["lambda": String(lambda), "similarity": similarity]), profile: withVectors)
                let candidates = (0..<n).map { Candidate(item: $0, score: Float(g.nextDouble())) }
                    .sorted { ScoredIndex.ranksBefore($0.score, $0.item, $1.score, $1.item) }
                // The plain version: the largest similarity to the chosen items, recomputed at every step.
                let relevance = normalizedScores(candidates)
                var chosen: [Int] = []
                while chosen.count < 10 {
                    var best = -1, bestValue = -Double.infinity
                    for c in candidates.indices where !chosen.contains(c) {
                        let penalty = chosen.map { mmr.similarity(candidates[c].item, candidates[$0].item) }.max() ?? 0
                        let value = lambda * relevance[c] - (1 - lambda) * penalty
                        if value > bestValue { best = c; bestValue = value }
                    }
                    chosen.append(best)
                }
                #expect(mmr.rerank(candidates, history: [], k: 10).map(\.item) == chosen.map { candidates[$0].item }, "\(similarity) \(lambda)")
            }
        }
    }

    @Test func calibrationFollowsTheHistorysMix() throws {
        // Half drama, half comedy in the history.
        let history = [0, 3]
        let none = try Calibration(settings: try Calibration.Settings().applying(["lambda": "0"]), profile: profile)
        #expect(none.rerank(list, history: history, k: 4).map(\.item) == [0, 1, 2, 3])
        let strong = try Calibration(settings: try Calibration.Settings().applying(["lambda": "0.9"]), profile: profile)
        let out = strong.rerank(list, history: history, k: 4).map(\.item)
        let comedies = out.filter { profile.categories[$0].contains(1) }.count
        #expect(comedies >= 2, "\(out)")
        // The list's miscalibration falls.
        let before = ItemProfile.miscalibration(history: history, list: [0, 1, 2, 3], categories: profile.categories, alpha: 0.01)!
        let after = ItemProfile.miscalibration(history: history, list: out, categories: profile.categories, alpha: 0.01)!
        #expect(after < before)
    }

    @Test func popularityCapKeepsTheHeadToItsShare() throws {
        // Head = the 2 most popular items (0, 1); at most half of a 4-item list from the head.
        let cap = try PopularityCap(settings: try PopularityCap.Settings().applying(["headFraction": "0.3", "maxHeadShare": "0.25"]), profile: profile)
        #expect(cap.rerank(list, history: [], k: 4).map(\.item) == [0, 2, 3, 4])
        // Too few other items: the best head items beyond the quota fill the end of the list.
        #expect(cap.rerank(Array(list.prefix(3)), history: [], k: 3).map(\.item) == [2, 0, 1])
    }

    @Test func businessRules() throws {
        let items = IDVocabulary(["a", "b", "c", "d", "e", "f"])
        let rules = try BusinessRules(settings: try BusinessRules.Settings().applying(["excludeCategories": "comedy", "pinItems": "c"]),
                                      profile: profile, items: items)
        let out = rules.rerank(list, history: [], k: 3)
        #expect(out.map(\.item) == [2, 0, 1])
        #expect(out[0].notes.contains("rules: pinned"))
        let capped = try BusinessRules(settings: try BusinessRules.Settings().applying(["maxPerCategory": "1"]), profile: profile, items: items)
        #expect(capped.rerank(list, history: [], k: 3).map(\.item) == [0, 3])
        #expect(throws: ModelError.invalidSetting(name: "excludeCategories", reason: "no category 'horror'; the categories are drama, comedy")) {
            try BusinessRules(settings: try BusinessRules.Settings().applying(["excludeCategories": "horror"]), profile: profile, items: items)
        }
    }

    @Test func freshnessBlendsRelevanceWithRecency() throws {
        var profile = ItemProfile(categories: Array(repeating: [], count: 6), popularity: Array(repeating: 1, count: 6), userCount: 1)
        let day: Int64 = 86_400
        // Item 5 was seen last at the data's latest time, item 0 a year before it, item 3 never.
        profile.lastSeen = [1000 * day - 365 * day, 1000 * day - 30 * day, 1000 * day - 90 * day, nil, 1000 * day - 180 * day, 1000 * day]
        let candidates = (0..<6).map { Candidate(item: $0, score: Float(6 - $0)) }   // relevance order 0, 1, ..., 5
        func order(_ weight: Double) throws -> [Int] {
            try Freshness(settings: try Freshness.Settings().applying(["weight": String(weight)]), profile: profile)
                .rerank(candidates, history: [], k: 6).map(\.item)
        }
        #expect(try order(0) == [0, 1, 2, 3, 4, 5])
        #expect(try order(1) == [5, 1, 2, 4, 0, 3])   // by age: 0, 30, 90, 180, 365 days, then the item with no time
        let fresh = try Freshness(settings: Freshness.Settings(), profile: profile)
        #expect(abs(fresh.freshness(of: 2) - 0.5) < 1e-12)   // 90 days at the default half-life of 90
        let reranked = fresh.rerank(candidates, history: [], k: 3)
        #expect(reranked.count == 3 && reranked.contains { $0.notes.contains { $0.hasPrefix("freshness: ") } } == (reranked.map(\.item) != [0, 1, 2]))
        var noTimes = profile
        noTimes.lastSeen = nil
        #expect { try Freshness(settings: Freshness.Settings(), profile: noTimes) } throws: { "\($0)".contains("no interaction times") }
        #expect(try ReRankerSpec(parsing: "freshness:weight=0.5,halfLifeDays=30") == .freshness(try Freshness.Settings().applying(["weight": "0.5", "halfLifeDays": "30"])))
        #expect(throws: (any Error).self) { try ReRankerSpec(parsing: "freshness:halfLifeDays=0") }
    }

    /// The catalog keeps each item's latest positive time (0 is an unknown time in MovieLens 1M).
    @Test func lastSeenIsEachItemsLatestKnownTime() {
        let log = InteractionLog(source: "t", rows: [("u1", "a", 5, 100), ("u2", "a", 4, 300), ("u1", "b", 4, 0), ("u3", "b", 5, 50), ("u3", "c", 5, 0)])
        #expect(ItemCatalog.lastSeen(in: log) == ["a": 300, "b": 50])
        #expect(ItemCatalog.lastSeen(in: InteractionLog(source: "t", rows: [("u1", "a", 5, nil)])) == nil)
    }

    @Test func specsParseAndRefuseByName() throws {
        #expect(try ReRankerSpec(parsing: "mmr:lambda=0.4") == .mmr(try MMR.Settings().applying(["lambda": "0.4"])))
        #expect(try ReRankerSpec(parsing: "calibration") == .calibration(Calibration.Settings()))
        #expect(throws: ModelError.self) { try ReRankerSpec(parsing: "shuffle") }
        do {
            _ = try ReRankerSpec(parsing: "mmr:lambda=2")
            Issue.record("lambda=2 accepted")
        } catch {
            #expect("\(error)".contains("lambda") && "\(error)".contains("0...1"), "\(error)")
        }
        let chain = ReRankChain([try ReRankerSpec(parsing: "mmr:lambda=0.5").make(profile: profile, items: IDVocabulary(["a", "b", "c", "d", "e", "f"])),
                                 try ReRankerSpec(parsing: "popularity-cap:headFraction=0.34,maxHeadShare=0.5").make(profile: profile, items: IDVocabulary(["a", "b", "c", "d", "e", "f"]))])
        let out = chain.apply(list, history: [], k: 4)
        #expect(out.count == 4 && out.filter { $0.item < 2 }.count <= 2)
    }
}

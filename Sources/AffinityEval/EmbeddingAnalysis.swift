import AffinityData
import AffinityLinalg
import Foundation

/// Questions asked of item embeddings and of recommendation lists, for `affinity report` and
/// anyone who wants the numbers without the page: do items of a genre sit together, and which
/// popularity do the lists favour.
public enum EmbeddingAnalysis {
    /// Intra- against inter-genre cosine similarity of item vectors.
    public struct GenreSimilarity: Sendable, Codable {
        /// Genre names, in the order of the matrix.
        public var genres: [String]
        /// Items per genre (among the items measured).
        public var genreSizes: [Int]
        /// mean cosine between items of genre g and items of genre h (pairs of distinct items).
        public var matrix: [[Double]]
        /// Mean cosine over pairs that share at least one genre, and over pairs that share none.
        public var intra: Double
        public var inter: Double
        /// The same difference (intra − inter) with genre sets shuffled among items: mean and
        /// standard deviation over the permutations, and how many permutations reached the observed one.
        public var permutationMean: Double
        public var permutationStandardDeviation: Double
        public var permutationsAtLeastObserved: Int
        public var permutations: Int
        /// Items measured, and items left out (no genre, or sampled out).
        public var items: Int
        public var itemsWithoutGenre: Int
        public var sampledOut: Int
        public var difference: Double { intra - inter }
    }

    /// Genre similarity of `vectors`' rows. `genres[i]` are item i's genre indexes into `names`;
    /// items without a genre are left out; above `maxItems` a seeded sample is measured. The
    /// permutation baseline shuffles whole genre sets among the measured items (sizes kept).
    public static func genreSimilarity(vectors: Matrix, genres: [[Int]], names: [String], permutations: Int = 20,
                                       maxItems: Int = 6_000, seed: UInt64 = 42, threads: Int = 0) -> GenreSimilarity {
        precondition(genres.count == vectors.rows, "one genre list per vector row")
        precondition(names.count <= 64, "at most 64 genres")
        var kept = (0..<vectors.rows).filter { !genres[$0].isEmpty }
        let withoutGenre = vectors.rows - kept.count
        var sampledOut = 0
        if kept.count > maxItems {
            var random = SeededGenerator(seed: seed)
            random.shuffle(&kept)
            sampledOut = kept.count - maxItems
            kept = Array(kept.prefix(maxItems)).sorted()
        }
        let n = kept.count
        let x = ExactSearch.normalizedRows(vectors.rows(at: kept))
        let cosine = x.multiplied(by: x, transposeOther: true, threads: threads)
        let masks = kept.map { i in genres[i].reduce(UInt64(0)) { $0 | (1 << UInt64($1)) } }
        // Genre x genre means: sums over item pairs (i ≠ j) by every genre pair they hold.
        let g = names.count
        var sums = [[Double]](repeating: [Double](repeating: 0, count: g), count: g)
        var counts = sums
        var rowSums = [[Double]](repeating: [Double](repeating: 0, count: g), count: n)   // Σ_j cos(i, j) over j in genre h
        for i in 0..<n {
            for j in 0..<n where j != i {
                let c = Double(cosine.values[i * n + j])
                var m = masks[j]
                while m != 0 { let h = m.trailingZeroBitCount; rowSums[i][h] += c; m &= m - 1 }
            }
        }
        var sizes = [Int](repeating: 0, count: g)
        for i in 0..<n {
            var m = masks[i]
            while m != 0 {
                let a = m.trailingZeroBitCount
                sizes[a] += 1
                for h in 0..<g { sums[a][h] += rowSums[i][h] }
                m &= m - 1
            }
        }
        for a in 0..<g {
            for h in 0..<g {
                // Ordered pairs (i in a, j in h, i ≠ j): |a||h| minus the items in both.
                let both = masks.reduce(0) { $0 + (($1 >> UInt64(a)) & 1 == 1 && ($1 >> UInt64(h)) & 1 == 1 ? 1 : 0) }
                counts[a][h] = Double(sizes[a] * sizes[h] - both)
            }
        }
        let matrix = (0..<g).map { a in (0..<g).map { h in counts[a][h] > 0 ? sums[a][h] / counts[a][h] : .nan } }
        func split(_ masks: [UInt64]) -> (intra: Double, inter: Double) {
            // A fixed number of parts, summed in order: the same figures for every thread count.
            let parts = 16
            var totals = [(Double, Int, Double, Int)](repeating: (0, 0, 0, 0), count: parts)
            totals.withUnsafeMutableBufferPointer { tb in
                let out = SharedMutableBuffer(tb)
                Parallelism.forEachChunk(parts, threads: threads) { part in
                    var s1 = 0.0, c1 = 0, s0 = 0.0, c0 = 0
                    for i in stride(from: part, to: n, by: parts) {
                        for j in (i + 1)..<max(i + 1, n) {
                            let c = Double(cosine.values[i * n + j])
                            if masks[i] & masks[j] != 0 { s1 += c; c1 += 1 } else { s0 += c; c0 += 1 }
                        }
                    }
                    out[part] = (s1, c1, s0, c0)
                }
            }
            let s1 = totals.reduce(0) { $0 + $1.0 }, c1 = totals.reduce(0) { $0 + $1.1 }
            let s0 = totals.reduce(0) { $0 + $1.2 }, c0 = totals.reduce(0) { $0 + $1.3 }
            return (c1 > 0 ? s1 / Double(c1) : .nan, c0 > 0 ? s0 / Double(c0) : .nan)
        }
        let observed = split(masks)
        var random = SeededGenerator(seed: seed &+ 1)
        var differences: [Double] = []
        for _ in 0..<permutations {
            var shuffled = masks
            random.shuffle(&shuffled)
            let r = split(shuffled)
            differences.append(r.intra - r.inter)
        }
        let mean = differences.isEmpty ? .nan : differences.reduce(0, +) / Double(differences.count)
        let sd = differences.count > 1
            ? (differences.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(differences.count - 1)).squareRoot() : .nan
        return GenreSimilarity(genres: names, genreSizes: sizes, matrix: matrix, intra: observed.intra, inter: observed.inter,
                               permutationMean: mean, permutationStandardDeviation: sd,
                               permutationsAtLeastObserved: differences.filter { $0 >= observed.intra - observed.inter }.count,
                               permutations: permutations, items: n, itemsWithoutGenre: withoutGenre, sampledOut: sampledOut)
    }

    /// How recommendation lists spread over training popularity.
    public struct PopularityBias: Sendable, Codable {
        /// Decile 1 holds the most popular tenth of the items (by training interactions), decile 10 the least.
        public var deciles: Int
        /// Share of all training interactions that fall on each decile's items.
        public var trainingShare: [Double]
        /// Share of all recommended slots that go to each decile's items.
        public var recommendationShare: [Double]
        /// Recommended slots per decile divided by training interactions per decile (1 = in proportion).
        public var lift: [Double] {
            zip(recommendationShare, trainingShare).map { $1 > 0 ? $0 / $1 : .nan }
        }
    }

    /// Popularity bias of `lists` (item indexes) against the training popularity `counts` per item.
    public static func popularityBias(lists: [[Int]], popularity counts: [Int], deciles: Int = 10) -> PopularityBias {
        let n = counts.count
        var decile = [Int](repeating: 0, count: n)
        for (d, slice) in popularitySlices(Array(0..<n), popularity: counts, parts: deciles, mostPopularFirst: true).enumerated() {
            for i in slice { decile[i] = d }
        }
        var training = [Double](repeating: 0, count: deciles), recommended = [Double](repeating: 0, count: deciles)
        for i in 0..<n { training[decile[i]] += Double(counts[i]) }
        var slots = 0.0
        for list in lists { for i in list where i >= 0 && i < n { recommended[decile[i]] += 1; slots += 1 } }
        let total = training.reduce(0, +)
        return PopularityBias(deciles: deciles, trainingShare: training.map { total > 0 ? $0 / total : 0 },
                              recommendationShare: recommended.map { slots > 0 ? $0 / slots : 0 })
    }
}

/// `items` sorted by `popularity` (ties: smaller item index first) and cut into `parts` slices of equal
/// size (slice d: positions d·n/parts ..< (d+1)·n/parts): popularity deciles, one convention for every
/// analysis.
public func popularitySlices(_ items: [Int], popularity: [Int], parts: Int, mostPopularFirst: Bool) -> [ArraySlice<Int>] {
    let order = items.sorted {
        popularity[$0] != popularity[$1] ? (popularity[$0] > popularity[$1]) == mostPopularFirst : $0 < $1
    }
    return (0..<parts).map { d in order[(d * order.count / parts)..<((d + 1) * order.count / parts)] }
}

/// `affinity evaluate --json`'s output: one saved evaluation, read back by `affinity report
/// --evaluations` to compare models measured elsewhere or earlier.
public struct SavedEvaluation: Codable, Sendable {
    public var model: String
    public var split: String
    public var target: String
    public var trainSeconds: Double?
    public var report: EvaluationReport
    public init(model: String, split: String, target: String, trainSeconds: Double?, report: EvaluationReport) {
        self.model = model
        self.split = split
        self.target = target
        self.trainSeconds = trainSeconds
        self.report = report
    }

    /// Reads one saved evaluation, naming the file in every error.
    public static func read(_ path: String) throws -> SavedEvaluation {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw DataError.unreadable(path: path, reason: error.localizedDescription)
        }
        do { return try JSONDecoder().decode(SavedEvaluation.self, from: data) } catch {
            throw DataError.unreadable(path: path, reason: "not the JSON of `affinity evaluate --json` (\(error))")
        }
    }
}

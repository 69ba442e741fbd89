import AffinityLinalg
import Foundation
import Testing
@testable import AffinityEval

/// Issue "Seeing the embeddings": t-SNE (Barnes-Hut against its exact twin), PCA, trustworthiness,
/// genre similarity and popularity bias on cases with known answers.
@Suite struct EmbeddingAnalysisTests {
    /// `clusters` Gaussian blobs of `perCluster` points in `d` dimensions, centres 10 apart.
    static func blobs(clusters: Int, perCluster: Int, d: Int, seed: UInt64) -> (Matrix, [Int]) {
        var random = SeededGenerator(seed: seed)
        var x = Matrix(rows: clusters * perCluster, columns: d)
        var labels: [Int] = []
        for c in 0..<clusters {
            for p in 0..<perCluster {
                let r = c * perCluster + p
                for j in 0..<d { x.values[r * d + j] = Float((j == c ? 10.0 : 0) + random.nextGaussian()) }
                labels.append(c)
            }
        }
        return (x, labels)
    }

    @Test func barnesHutAtThetaZeroIsTheExactGradient() {
        let (x, _) = Self.blobs(clusters: 3, perCluster: 20, d: 5, seed: 1)
        let p = TSNE.affinities(x, perplexity: 10, neighbours: 31)
        var random = SeededGenerator(seed: 2)
        let y = (0..<(2 * x.rows)).map { _ in random.nextGaussian() }
        var exact = [Double](repeating: 0, count: y.count), tree = exact, approximate = exact
        _ = TSNE.gradient(y, p: p, exaggeration: 12, angle: nil, threads: 1, into: &exact)
        _ = TSNE.gradient(y, p: p, exaggeration: 12, angle: 0, threads: 2, into: &tree)
        _ = TSNE.gradient(y, p: p, exaggeration: 12, angle: 0.5, threads: 2, into: &approximate)
        let scale = exact.map(abs).max()!
        #expect(zip(exact, tree).map { abs($0 - $1) }.max()! < 1e-9 * scale)
        // θ = 0.5 approximates: close, not equal.
        let error = zip(exact, approximate).map { abs($0 - $1) }.max()!
        #expect(error > 0 && error < 0.05 * scale)
    }

    @Test func affinitiesHitThePerplexityAndSumToOne() {
        let (x, _) = Self.blobs(clusters: 2, perCluster: 30, d: 4, seed: 3)
        let d = (1..<x.rows).map { j in (0..<4).reduce(0.0) { $0 + pow(Double(x[0, $1] - x[j, $1]), 2) } }
        let row = TSNE.conditionalRow(d, perplexity: 15)
        let entropy = -row.filter { $0 > 0 }.reduce(0) { $0 + $1 * log($1) }
        #expect(abs(entropy - log(15)) < 1e-4)
        let p = TSNE.affinities(x, perplexity: 15, neighbours: 45)
        #expect(abs(p.values.reduce(0, +) - 1) < 1e-9)
        // Symmetric: p_ij = p_ji.
        func value(_ i: Int, _ j: Int) -> Double {
            (p.rowPointers[i]..<p.rowPointers[i + 1]).first { Int(p.columns[$0]) == j }.map { p.values[$0] } ?? 0
        }
        #expect(abs(value(3, 7) - value(7, 3)) < 1e-15)
    }

    @Test func barnesHutAndExactMapsKeepTheClustersAlike() throws {
        let (x, labels) = Self.blobs(clusters: 3, perCluster: 40, d: 8, seed: 4)
        var c = TSNE.Configuration()
        c.perplexity = 10
        c.iterations = 400
        c.threads = 2
        let approximate = try TSNE(configuration: c).embed(x)
        c.method = .exact
        let exact = try TSNE(configuration: c).embed(x)
        let tBH = trustworthiness(input: x, map: approximate, k: 10), tExact = trustworthiness(input: x, map: exact, k: 10)
        #expect(tBH > 0.85 && tExact > 0.85)
        #expect(abs(tBH - tExact) < 0.03)
        // Every point's nearest map neighbour is in its own cluster.
        let nearest = ExactSearch.search(queries: approximate, base: approximate, k: 2, metric: .l2)
        let same = (0..<x.rows).filter { i in labels[nearest[i].first { $0.index != i }!.index] == labels[i] }.count
        #expect(same == x.rows)
    }

    @Test func theMapDoesNotDependOnTheThreadCount() throws {
        // 1,024 points: the repulsion runs in 4 chunks and the attraction in 4 ranges, so 1 and 3
        // threads really split the work differently.
        let (x, genres) = Self.blobs(clusters: 4, perCluster: 256, d: 4, seed: 5)
        var c = TSNE.Configuration()
        c.perplexity = 8
        c.iterations = 30
        c.threads = 1
        let one = try TSNE(configuration: c).embed(x)
        c.threads = 3
        #expect(try TSNE(configuration: c).embed(x) == one)
        // Genre similarity likewise.
        let g1 = EmbeddingAnalysis.genreSimilarity(vectors: x, genres: genres.map { [$0] }, names: ["a", "b", "c", "d"], permutations: 3, threads: 1)
        let g3 = EmbeddingAnalysis.genreSimilarity(vectors: x, genres: genres.map { [$0] }, names: ["a", "b", "c", "d"], permutations: 3, threads: 3)
        #expect(g1.intra == g3.intra && g1.inter == g3.inter && g1.permutationMean == g3.permutationMean)
    }

    @Test func tooFewPointsAndNaNAreNamed() {
        #expect(throws: TSNE.TSNEError.tooFewPoints(20, perplexity: 30)) { try TSNE().embed(Matrix(rows: 20, columns: 3)) }
        var x = Matrix.random(rows: 120, columns: 3, seed: 1)
        x.values[7 * 3 + 1] = .nan
        #expect(throws: TSNE.TSNEError.notFinite(row: 7)) { try TSNE().embed(x) }
    }

    @Test func trustworthinessIsOneForTheIdentityAndLowerForNoise() {
        let (x, _) = Self.blobs(clusters: 2, perCluster: 30, d: 2, seed: 6)
        #expect(abs(trustworthiness(input: x, map: x, k: 5) - 1) < 1e-12)
        let noise = Matrix.random(rows: x.rows, columns: 2, seed: 9)
        #expect(trustworthiness(input: x, map: noise, k: 5) < 0.8)
    }

    @Test func pcaFindsTheLineTheDataLieOn() {
        // Points on the line t·(3, 4) plus small noise in a third coordinate.
        var x = Matrix(rows: 50, columns: 3)
        var random = SeededGenerator(seed: 7)
        for i in 0..<50 {
            let t = Float(i) - 24.5
            x.values[i * 3] = 3 * t; x.values[i * 3 + 1] = 4 * t; x.values[i * 3 + 2] = Float(random.nextGaussian() * 0.01)
        }
        let p = PCA.project(x, components: 2)
        for i in 0..<50 { #expect(abs(abs(p[i, 0]) - 5 * abs(Float(i) - 24.5)) < 1e-2) }
    }

    @Test func genreSimilaritySeparatesGenresThatSitApart() {
        // Genre 0 items point along e0, genre 1 along e1, one item holds both (along e0 + e1).
        var x = Matrix(rows: 9, columns: 2)
        var genres: [[Int]] = []
        for i in 0..<4 { x.values[i * 2] = 1; genres.append([0]) }
        for i in 4..<8 { x.values[i * 2 + 1] = 1; genres.append([1]) }
        x.values[16] = 1; x.values[17] = 1; genres.append([0, 1])
        let r = EmbeddingAnalysis.genreSimilarity(vectors: x, genres: genres, names: ["a", "b"], permutations: 30, threads: 1)
        #expect(r.items == 9 && r.genreSizes == [5, 5])
        // Pairs sharing a genre: 6 + 6 inside each pure group (cos 1), 8 with the mixed item (cos √½);
        // pairs sharing none: 16 across groups (cos 0).
        #expect(abs(r.intra - (12 + 8 * 0.5.squareRoot()) / 20) < 1e-6)
        #expect(abs(r.inter) < 1e-6)
        // Genre a with itself: ordered pairs among its 5 items, 12 at 1 and 8 at √½.
        #expect(abs(r.matrix[0][0] - (12 + 8 * 0.5.squareRoot()) / 20) < 1e-6)
        #expect(abs(r.matrix[0][1] - r.matrix[1][0]) < 1e-9)
        #expect(r.permutationMean < r.difference)
    }

    @Test func popularityBiasSharesByDecile() {
        // Ten items, item i with 10 - i interactions: decile d holds item d.
        let counts = (0..<10).map { 10 - $0 }
        let r = EmbeddingAnalysis.popularityBias(lists: [[0, 1], [0, 9]], popularity: counts)
        #expect(r.trainingShare[0] == 10.0 / 55)
        #expect(r.recommendationShare == [0.5, 0.25, 0, 0, 0, 0, 0, 0, 0, 0.25])
        #expect(abs(r.lift[9] - 0.25 / (1.0 / 55)) < 1e-9)
    }
}


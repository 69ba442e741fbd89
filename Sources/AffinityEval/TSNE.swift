import AffinityLinalg
import Foundation

/// t-SNE (van der Maaten & Hinton 2008) with the Barnes-Hut approximation (van der Maaten 2014):
/// a 2-D map of vectors in which near neighbours stay near. The settings and the schedule are
/// scikit-learn's (`TSNE` since 1.2): perplexity 30, early exaggeration 12 for 250 iterations with
/// momentum 0.5, then momentum 0.8, learning rate max(n / 12 / 4, 50), 1,000 iterations, PCA
/// initialisation scaled to a standard deviation of 1e-4, delta-bar-delta gains.
///
/// - Barnes-Hut (`method = .barnesHut`): input affinities over each point's ⌊3·perplexity⌋ nearest
///   neighbours, repulsion through a quadtree (θ = `angle`); O(n log n) per iteration, the
///   repulsion parallel over points. The tree holds the map of the previous step, so every thread
///   reads the same numbers: the result does not depend on the thread count.
/// - Exact (`method = .exact`): affinities over all pairs and exact O(n²) repulsion, the reference
///   twin for small inputs (tests hold the two against each other).
///
/// Distances are Euclidean on the vectors as given; to map by cosine, pass L2-normalised rows
/// (`ExactSearch.normalizedRows`), as `affinity report` does.
public struct TSNE: Sendable {
    public enum Method: String, Sendable, Codable, CaseIterable { case barnesHut = "barnes-hut", exact }

    public struct Configuration: Sendable, Codable, Equatable {
        public var perplexity: Double = 30
        public var earlyExaggeration: Double = 12
        /// nil: scikit-learn's "auto", max(n / earlyExaggeration / 4, 50).
        public var learningRate: Double? = nil
        public var iterations = 1_000
        public var exaggerationIterations = 250
        /// Barnes-Hut's θ: a cell of width w at distance d is summarised when w / d < θ.
        public var angle: Double = 0.5
        public var method: Method = .barnesHut
        /// Seeds the jitter added to the PCA start (ties) and nothing else.
        public var seed: UInt64 = 42
        public var threads = 0
        public init() {}
    }

    public var configuration: Configuration
    public init(configuration: Configuration = Configuration()) { self.configuration = configuration }

    /// Errors of bad input, named.
    public enum TSNEError: Error, CustomStringConvertible, Equatable {
        case tooFewPoints(Int, perplexity: Double)
        case notFinite(row: Int)
        public var description: String {
            switch self {
            case .tooFewPoints(let n, let p):
                return "t-SNE needs more points than 3 x perplexity (\(p)): got \(n); lower the perplexity"
            case .notFinite(let row): return "t-SNE input row \(row) holds a NaN or infinite value"
            }
        }
    }

    /// The 2-D map of `vectors`' rows (n x 2, row i for input row i).
    public func embed(_ vectors: Matrix, progress: ((Int, Double) -> Void)? = nil) throws -> Matrix {
        let n = vectors.rows
        let c = configuration
        guard Double(n - 1) >= 3 * c.perplexity else { throw TSNEError.tooFewPoints(n, perplexity: c.perplexity) }
        for i in 0..<n where vectors.row(i).contains(where: { !$0.isFinite }) { throw TSNEError.notFinite(row: i) }
        let p = c.method == .exact
            ? Self.affinities(vectors, perplexity: c.perplexity, neighbours: n - 1, threads: c.threads)
            : Self.affinities(vectors, perplexity: c.perplexity, neighbours: min(n - 1, Int(3 * c.perplexity + 1)), threads: c.threads)
        var y = Self.pcaStart(vectors, seed: c.seed)
        let learningRate = c.learningRate ?? max(Double(n) / c.earlyExaggeration / 4, 50)
        var update = [Double](repeating: 0, count: 2 * n), gains = [Double](repeating: 1, count: 2 * n)
        var gradient = [Double](repeating: 0, count: 2 * n)
        for iteration in 0..<c.iterations {
            let exaggerating = iteration < c.exaggerationIterations
            let momentum = exaggerating ? 0.5 : 0.8
            let kl = Self.gradient(y, p: p, exaggeration: exaggerating ? c.earlyExaggeration : 1,
                                   angle: c.method == .exact ? nil : c.angle, threads: c.threads, into: &gradient,
                                   divergence: progress != nil && (iteration + 1) % 50 == 0)
            for j in 0..<(2 * n) {
                let g = gradient[j]
                if update[j] * g < 0 { gains[j] += 0.2 } else { gains[j] = max(gains[j] * 0.8, 0.01) }
                update[j] = momentum * update[j] - learningRate * gains[j] * g
                y[j] += update[j]
            }
            if let progress, (iteration + 1) % 50 == 0 { progress(iteration + 1, kl ?? .nan) }
        }
        return Matrix(rows: n, columns: 2, values: y.map { Float($0) })
    }

    // MARK: - Input affinities

    /// Symmetric input affinities P as rows of (neighbour, p), summing to 1 over all entries:
    /// each point's conditional distribution over its `neighbours` nearest points with the
    /// Gaussian width that gives `perplexity` (binary search on the precision), then (P + Pᵀ) / sum.
    public static func affinities(_ x: Matrix, perplexity: Double, neighbours k: Int, threads: Int = 0) -> SparseAffinities {
        let n = x.rows
        // Candidates from the blocked search on one thread (its float sums may depend on the blocking,
        // hence on the thread count; near-ties then cross the k-th place), a few spare, then
        // distances again in Double, one pair at a time.
        let found = ExactSearch.search(queries: x, base: x, k: min(n, k + 4), metric: .l2, threads: 1)
        var conditional = [[(Int, Double)]](repeating: [], count: n)
        conditional.withUnsafeMutableBufferPointer { buffer in
            let out = SharedMutableBuffer(buffer)
            Parallelism.forEachRange(n, grain: 64, threads: threads) { range in
                for i in range {
                    var row: [(index: Int, distance: Double)] = []
                    for c in found[i] where c.index != i {
                        var s = 0.0
                        for j in 0..<x.columns {
                            let t = Double(x.values[i * x.columns + j]) - Double(x.values[c.index * x.columns + j])
                            s += t * t
                        }
                        row.append((c.index, s))
                    }
                    row.sort { $0.distance != $1.distance ? $0.distance < $1.distance : $0.index < $1.index }
                    let kept = row.prefix(k)
                    let w = conditionalRow(kept.map(\.distance), perplexity: perplexity)
                    out[i] = zip(kept, w).map { ($0.index, $1) }
                }
            }
        }
        var symmetric = [[Int: Double]](repeating: [:], count: n)
        for i in 0..<n {
            for (j, v) in conditional[i] {
                symmetric[i][j, default: 0] += v
                symmetric[j][i, default: 0] += v
            }
        }
        // Rows in column order, summed in that order (a Dictionary's order changes from process to
        // process, and with it the last bits of a sum taken in that order).
        var pointers = [0], columns: [Int32] = [], values: [Double] = []
        for i in 0..<n {
            for (j, v) in symmetric[i].sorted(by: { $0.key < $1.key }) {
                columns.append(Int32(j))
                values.append(v)
            }
            pointers.append(columns.count)
        }
        let total = max(values.reduce(0, +), 1e-300)
        for e in values.indices { values[e] = max(values[e] / total, 1e-300) }
        return SparseAffinities(rowPointers: pointers, columns: columns, values: values)
    }

    /// One point's conditional probabilities over neighbours at squared distances `d`, with the
    /// precision β found by bisection so that the entropy is log(perplexity) (natural log, 100 steps
    /// at most, tolerance 1e-5: scikit-learn's `_binary_search_perplexity`).
    static func conditionalRow(_ d: [Double], perplexity: Double) -> [Double] {
        guard !d.isEmpty else { return [] }
        let target = Foundation.log(perplexity)
        var beta = 1.0, lo = -Double.infinity, hi = Double.infinity
        var p = [Double](repeating: 0, count: d.count)
        for _ in 0..<100 {
            var sum = 0.0
            for j in 0..<d.count { p[j] = exp(-d[j] * beta); sum += p[j] }
            if sum == 0 { sum = 1e-8 }
            var weighted = 0.0
            for j in 0..<d.count { p[j] /= sum; weighted += d[j] * p[j] }
            let entropy = Foundation.log(sum) + beta * weighted
            let diff = entropy - target
            if abs(diff) <= 1e-5 { break }
            if diff > 0 {
                lo = beta
                beta = hi == .infinity ? beta * 2 : (beta + hi) / 2
            } else {
                hi = beta
                beta = lo == -.infinity ? beta / 2 : (beta + lo) / 2
            }
        }
        return p
    }

    /// The start: the first two principal components, scaled so the first has standard deviation
    /// 1e-4 (scikit-learn's `init="pca"`), plus 1e-8 of seeded jitter so duplicate rows part.
    static func pcaStart(_ x: Matrix, seed: UInt64) -> [Double] {
        let pca = PCA.project(x, components: 2)
        let n = x.rows
        let first = (0..<n).map { Double(pca[$0, 0]) }
        let mean = first.reduce(0, +) / Double(n)
        let sd = (first.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(n)).squareRoot()
        let scale = sd > 0 ? 1e-4 / sd : 1
        var random = SeededGenerator(seed: seed)
        var y = [Double](repeating: 0, count: 2 * n)
        for i in 0..<n {
            y[2 * i] = first[i] * scale + (random.nextDouble() - 0.5) * 1e-8
            y[2 * i + 1] = Double(pca[i, 1]) * scale + (random.nextDouble() - 0.5) * 1e-8
        }
        return y
    }

    // MARK: - Gradient

    /// The KL gradient at map `y` (x0, y0, x1, y1, ...) into `gradient`: 4 · (exaggeration · attraction −
    /// repulsion / Z). `angle` nil computes the repulsion exactly over all pairs; otherwise through a
    /// quadtree with that θ. Returns KL(P‖Q) when `divergence` (one more pass).
    public static func gradient(_ y: [Double], p: SparseAffinities, exaggeration: Double, angle: Double?, threads: Int,
                                into gradient: inout [Double], divergence: Bool = false) -> Double? {
        let n = y.count / 2
        let tree = angle.map { _ in QuadTree(y) }
        let chunks = max(1, min(n / 256, 64))
        var partialZ = [Double](repeating: 0, count: chunks)
        var repulsion = [Double](repeating: 0, count: 2 * n)
        repulsion.withUnsafeMutableBufferPointer { rb in
            partialZ.withUnsafeMutableBufferPointer { zb in
                let rep = SharedMutableBuffer(rb), zs = SharedMutableBuffer(zb)
                Parallelism.forEachChunk(chunks, threads: threads) { chunk in
                    var z = 0.0
                    var stack = [Int](repeating: 0, count: QuadTree.stackCapacity)
                    for i in (chunk * n / chunks)..<((chunk + 1) * n / chunks) {
                        var fx = 0.0, fy = 0.0, zi = 0.0
                        if let tree, let angle {
                            tree.repulsion(of: i, x: y[2 * i], y: y[2 * i + 1], theta2: angle * angle, fx: &fx, fy: &fy, z: &zi, stack: &stack)
                        } else {
                            for j in 0..<n where j != i {
                                let dx = y[2 * i] - y[2 * j], dy = y[2 * i + 1] - y[2 * j + 1]
                                let q = 1 / (1 + dx * dx + dy * dy)
                                zi += q
                                fx += q * q * dx
                                fy += q * q * dy
                            }
                        }
                        rep[2 * i] = fx
                        rep[2 * i + 1] = fy
                        z += zi
                    }
                    zs[chunk] = z
                }
            }
        }
        let z = max(partialZ.reduce(0, +), 1e-300)
        let repulsive = repulsion
        gradient.withUnsafeMutableBufferPointer { gb in
            let g = SharedMutableBuffer(gb)
            Parallelism.forEachRange(n, grain: 256, threads: threads) { range in
                for i in range {
                    var ax = 0.0, ay = 0.0
                    for e in p.rowPointers[i]..<p.rowPointers[i + 1] {
                        let j = Int(p.columns[e])
                        let dx = y[2 * i] - y[2 * j], dy = y[2 * i + 1] - y[2 * j + 1]
                        let q = 1 / (1 + dx * dx + dy * dy)
                        ax += p.values[e] * q * dx
                        ay += p.values[e] * q * dy
                    }
                    g[2 * i] = 4 * (exaggeration * ax - repulsive[2 * i] / z)
                    g[2 * i + 1] = 4 * (exaggeration * ay - repulsive[2 * i + 1] / z)
                }
            }
        }
        guard divergence else { return nil }
        // KL over P's support (where P is zero the term is zero), with Z from this step.
        var kl = 0.0
        for i in 0..<n {
            for e in p.rowPointers[i]..<p.rowPointers[i + 1] {
                let j = Int(p.columns[e])
                let dx = y[2 * i] - y[2 * j], dy = y[2 * i + 1] - y[2 * j + 1]
                let q = max(1 / (1 + dx * dx + dy * dy) / z, 1e-300)
                kl += p.values[e] * Foundation.log(p.values[e] / q)
            }
        }
        return kl
    }
}

/// Symmetric sparse input affinities (CSR, Double): row i lists its neighbours and p_ij.
public struct SparseAffinities: Sendable {
    public var rowPointers: [Int]
    public var columns: [Int32]
    public var values: [Double]
}

/// A point-region quadtree over a 2-D map for Barnes-Hut: each node keeps its square, centre of mass
/// and point count; a leaf keeps its points (one, or several that coincide or sit below the
/// smallest cell).
final class QuadTree: @unchecked Sendable {
    struct Node {
        var cx: Double, cy: Double, half: Double
        var massX = 0.0, massY = 0.0
        var count = 0
        /// Index of the first of four children, or -1 for a leaf.
        var firstChild = -1
        /// A leaf's points: order[start..<end].
        var start = 0, end = 0
    }
    /// Points a leaf may hold before it splits: small leaves cost fewer visits than single-point
    /// ones; a leaf far enough away is summarised like any cell, a near one summed point by point.
    static let leafSize = 16
    /// Slots a traversal's stack needs at most: 3 siblings wait per level, depth ≤ 48, plus the 4 of the last.
    static let stackCapacity = 3 * 48 + 4
    private(set) var nodes: [Node] = []
    private var order: [Int]
    /// Scratch for partitioning `order` (one buffer for the whole build).
    private var scratch: [Int]
    private let points: [Double]

    init(_ y: [Double]) {
        points = y
        let n = y.count / 2
        order = Array(0..<n)
        scratch = order
        var minX = Double.infinity, maxX = -Double.infinity, minY = Double.infinity, maxY = -Double.infinity
        for i in 0..<n {
            minX = min(minX, y[2 * i]); maxX = max(maxX, y[2 * i])
            minY = min(minY, y[2 * i + 1]); maxY = max(maxY, y[2 * i + 1])
        }
        let half = max(maxX - minX, maxY - minY) / 2 * (1 + 1e-9) + 1e-12
        nodes.reserveCapacity(4 * n)
        nodes.append(Node(cx: (minX + maxX) / 2, cy: (minY + maxY) / 2, half: half))
        build(0, 0, n, depth: 0)
    }

    private func build(_ node: Int, _ start: Int, _ end: Int, depth: Int) {
        var mx = 0.0, my = 0.0
        for k in start..<end { mx += points[2 * order[k]]; my += points[2 * order[k] + 1] }
        let count = end - start
        nodes[node].count = count
        nodes[node].massX = mx / Double(max(count, 1))
        nodes[node].massY = my / Double(max(count, 1))
        nodes[node].start = start
        nodes[node].end = end
        guard count > Self.leafSize, depth < 48, nodes[node].half > 1e-12 else { return }
        // Partition order[start..<end] into the four quadrants: (x < cx, y < cy), (x ≥, y <), (x <, y ≥), (x ≥, y ≥).
        let cx = nodes[node].cx, cy = nodes[node].cy
        func quadrant(_ i: Int) -> Int { (points[2 * i] >= cx ? 1 : 0) + (points[2 * i + 1] >= cy ? 2 : 0) }
        var counts = (0, 0, 0, 0)
        for k in start..<end {
            scratch[k] = order[k]
            switch quadrant(order[k]) { case 0: counts.0 += 1; case 1: counts.1 += 1; case 2: counts.2 += 1; default: counts.3 += 1 }
        }
        let sizes = [counts.0, counts.1, counts.2, counts.3]
        if sizes.contains(count) && nodes[node].half < 1e-9 { return }
        let bounds = [start, start + sizes[0], start + sizes[0] + sizes[1], start + sizes[0] + sizes[1] + sizes[2]]
        var offsets = bounds
        for k in start..<end { let i = scratch[k]; let q = quadrant(i); order[offsets[q]] = i; offsets[q] += 1 }
        let first = nodes.count
        nodes[node].firstChild = first
        let h = nodes[node].half / 2
        for q in 0..<4 {
            nodes.append(Node(cx: cx + (q & 1 == 1 ? h : -h), cy: cy + (q & 2 == 2 ? h : -h), half: h))
        }
        for q in 0..<4 where sizes[q] > 0 {
            build(first + q, bounds[q], bounds[q] + sizes[q], depth: depth + 1)
        }
    }

    /// Adds the repulsion on point `i` at (x, y): Σ q² (y_i − y_j) into (fx, fy) and Σ q into z,
    /// summarising a cell by its centre of mass when its width / distance < θ.
    /// `stack` is scratch space the caller reuses across points.
    func repulsion(of i: Int, x: Double, y: Double, theta2: Double, fx: inout Double, fy: inout Double, z: inout Double, stack: inout [Int]) {
        // Depth-first with an explicit stack of `stackCapacity` slots.
        var sx = 0.0, sy = 0.0, sz = 0.0
        nodes.withUnsafeBufferPointer { nodes in
            order.withUnsafeBufferPointer { order in
                points.withUnsafeBufferPointer { points in
                    stack.withUnsafeMutableBufferPointer { stack in
                        var top = 1
                        stack[0] = 0
                        while top > 0 {
                            top -= 1
                            let c = nodes[stack[top]]
                            let dx = x - c.massX, dy = y - c.massY
                            let d2 = dx * dx + dy * dy
                            let width = 2 * c.half
                            // A cell holding the point itself is never summarised (possible only for θ > 1/√2).
                            let outside = abs(x - c.cx) > c.half || abs(y - c.cy) > c.half
                            let summarise = d2 > 0 && width * width < theta2 * d2 && outside
                            if c.firstChild >= 0 && !summarise {
                                for q in 0..<4 where nodes[c.firstChild + q].count > 0 { stack[top] = c.firstChild + q; top += 1 }
                            } else if c.firstChild < 0 && !(summarise && c.count > 1) && (c.count > 1 || order[c.start] == i) {
                                // A leaf: its points one by one (i itself excluded).
                                for k in c.start..<c.end where order[k] != i {
                                    let j = order[k]
                                    let ex = x - points[2 * j], ey = y - points[2 * j + 1]
                                    let q = 1 / (1 + ex * ex + ey * ey)
                                    sz += q
                                    sx += q * q * ex
                                    sy += q * q * ey
                                }
                            } else {
                                let q = 1 / (1 + d2)
                                let m = Double(c.count)
                                sz += m * q
                                sx += m * q * q * dx
                                sy += m * q * q * dy
                            }
                        }
                    }
                }
            }
        }
        fx += sx
        fy += sy
        z += sz
    }
}

/// Principal components by the eigenvectors of the covariance (Jacobi, `SymmetricEigen`).
public enum PCA {
    /// Rows of `x` projected on its `components` leading principal axes (centred), n x components.
    /// Each axis' sign is fixed so its largest-magnitude loading is positive.
    public static func project(_ x: Matrix, components: Int) -> Matrix {
        let n = x.rows, d = x.columns
        var mean = [Double](repeating: 0, count: d)
        for i in 0..<n { for j in 0..<d { mean[j] += Double(x[i, j]) } }
        for j in 0..<d { mean[j] /= Double(max(n, 1)) }
        var centred = Matrix(rows: n, columns: d)
        for i in 0..<n { for j in 0..<d { centred.values[i * d + j] = x[i, j] - Float(mean[j]) } }
        let covariance = centred.multiplied(by: centred, transposeSelf: true)
        let (values, vectors) = SymmetricEigen.decompose(covariance)
        let axes = Array(values.indices.sorted { values[$0] > values[$1] }.prefix(components))
        var out = Matrix(rows: n, columns: components)
        for (c, a) in axes.enumerated() {
            var loading = (0..<d).map { vectors[$0 * d + a] }
            if let big = loading.max(by: { abs($0) < abs($1) }), big < 0 { loading = loading.map { -$0 } }
            for i in 0..<n {
                var s = 0.0
                for j in 0..<d { s += Double(centred.values[i * d + j]) * loading[j] }
                out.values[i * components + c] = Float(s)
            }
        }
        return out
    }
}

/// How well a low-dimensional map keeps neighbourhoods (Venna & Kaski 2001; scikit-learn's
/// `trustworthiness`): 1 − 2 / (n k (2n − 3k − 1)) · Σ_i Σ_{j ∈ map's k-NN of i} max(0, r(i, j) − k),
/// r(i, j) the rank of j among i's neighbours in the input (1 = nearest). 1 is perfect.
public func trustworthiness(input x: Matrix, map y: Matrix, k: Int, threads: Int = 0) -> Double {
    let n = x.rows
    precondition(2 * k < n, "trustworthiness needs k < n / 2")
    // Map neighbours: candidates from the float search (a few spare), re-ranked by Double distances
    // (near-ties at the k-th place otherwise follow the search's rounding).
    let candidates = ExactSearch.search(queries: y, base: y, k: min(n, k + 5), metric: .l2, threads: 1)
    let mapNeighbours = (0..<n).map { i -> [Int] in
        let d = candidates[i].filter { $0.index != i }.map { c -> (Int, Double) in
            var s = 0.0
            for m in 0..<y.columns { let t = Double(y[i, m]) - Double(y[c.index, m]); s += t * t }
            return (c.index, s)
        }
        return d.sorted { $0.1 != $1.1 ? $0.1 < $1.1 : $0.0 < $1.0 }.prefix(k).map(\.0)
    }
    var penalties = [Double](repeating: 0, count: n)
    penalties.withUnsafeMutableBufferPointer { pb in
        let out = SharedMutableBuffer(pb)
        Parallelism.forEachRange(n, grain: 32, threads: threads) { range in
            var distances = [Double](repeating: 0, count: n)
            for i in range {
                for j in 0..<n {
                    var s = 0.0
                    for c in 0..<x.columns { let t = Double(x.values[i * x.columns + c]) - Double(x.values[j * x.columns + c]); s += t * t }
                    distances[j] = s
                }
                var penalty = 0.0
                for j in mapNeighbours[i] {
                    let dj = distances[j]
                    var rank = 1
                    for l in 0..<n where l != i && (distances[l] < dj || (distances[l] == dj && l < j)) { rank += 1 }
                    penalty += Double(max(0, rank - k))
                }
                out[i] = penalty
            }
        }
    }
    let total = penalties.reduce(0, +)
    return 1 - total * 2 / (Double(n) * Double(k) * (2 * Double(n) - 3 * Double(k) - 1))
}

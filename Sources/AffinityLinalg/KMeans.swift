/// Settings of k-means. Every field has a default.
public struct KMeansSettings: Sendable, Codable, Equatable {
    /// Number of clusters k.
    public var clusters: Int
    /// Lloyd iterations after the k-means++ initialisation.
    public var iterations: Int = 20
    /// Seed of the initialisation (and of empty-cluster repair).
    public var seed: UInt64 = 42
    /// Threads for the assignment step (0 = all cores).
    public var threads: Int = 0
    /// Spherical k-means (Dhillon & Modha 2001; FAISS's `spherical`): centroids are scaled to unit
    /// length after every update, so on unit-length data the nearest centroid is the one with the
    /// largest inner product and clusters are cones of directions.
    public var spherical: Bool = false

    public init(clusters: Int, iterations: Int = 20, seed: UInt64 = 42, threads: Int = 0, spherical: Bool = false) {
        self.clusters = clusters
        self.iterations = iterations
        self.seed = seed
        self.threads = threads
        self.spherical = spherical
    }
}

/// Lloyd's k-means (squared Euclidean) with k-means++ seeding (Arthur & Vassilvitskii 2007),
/// GEMM-based parallel assignment and repair of empty clusters by splitting the largest one
/// (as FAISS does). Same seed and data give the same result whatever the thread count.
public enum KMeans {
    public struct Result: Sendable {
        /// k x d centroids.
        public var centroids: Matrix
        /// Cluster of each point.
        public var assignments: [Int32]
        /// Sum of squared distances of points to their centroids.
        public var inertia: Double
        public var iterations: Int
    }

    public static func fit(_ data: Matrix, settings: KMeansSettings) throws -> Result {
        let n = data.rows, d = data.columns, k = settings.clusters
        guard k > 0 && k <= n else { throw LinalgError.invalidArgument("k-means: clusters must be in 1...\(n) (the number of points), got \(k)") }
        var rng = SeededGenerator(seed: settings.seed)
        var centroids = plusPlusInit(data, k: k, rng: &rng, threads: settings.threads)
        var assignments = [Int32](repeating: 0, count: n)
        var inertia = 0.0
        var iteration = 0
        while true {
            inertia = assign(data, centroids: centroids, into: &assignments, threads: settings.threads)
            if iteration == settings.iterations { break }
            iteration += 1
            // Update: means in Double, in point order (deterministic).
            var sums = [Double](repeating: 0, count: k * d)
            var sizes = [Int](repeating: 0, count: k)
            for i in 0..<n {
                let c = Int(assignments[i])
                sizes[c] += 1
                for j in 0..<d { sums[c * d + j] += Double(data.values[i * d + j]) }
            }
            for c in 0..<k where sizes[c] > 0 {
                for j in 0..<d { centroids.values[c * d + j] = Float(sums[c * d + j] / Double(sizes[c])) }
            }
            // Empty clusters: split the largest cluster's centroid in two, nudged apart.
            for c in 0..<k where sizes[c] == 0 {
                let largest = sizes.indices.max { sizes[$0] < sizes[$1] || (sizes[$0] == sizes[$1] && $0 > $1) }!
                for j in 0..<d {
                    let v = centroids.values[largest * d + j]
                    let eps: Float = 1.0 / 1024 * (rng.nextFloat() - 0.5)
                    centroids.values[c * d + j] = v * (1 + eps) + eps
                    centroids.values[largest * d + j] = v * (1 - eps) - eps
                }
                sizes[c] = sizes[largest] / 2
                sizes[largest] -= sizes[c]
            }
            if settings.spherical { centroids = ExactSearch.normalizedRows(centroids) }
        }
        return Result(centroids: centroids, assignments: assignments, inertia: inertia, iterations: iteration)
    }

    /// k-means++: each next centre is drawn with probability proportional to the squared distance
    /// to the nearest centre chosen so far.
    ///
    /// Parallel over fixed blocks of `plusPlusBlock` points (the running minimum and each block's
    /// sum), then one draw: the block by its sum, the point inside the block. Blocks do not depend on
    /// the thread count, so neither does the seeding. A point is skipped when the triangle
    /// inequality says the new centre cannot be nearer than its current one (|c_new − c_own|² ≥
    /// 4·nearest, with a margin for rounding), so later centres read 8 bytes of most points instead
    /// of their vectors: the seeding is bound by memory traffic, not arithmetic.
    static func plusPlusInit(_ data: Matrix, k: Int, rng: inout SeededGenerator, threads: Int = 0) -> Matrix {
        let n = data.rows, d = data.columns
        let blocks = (n + plusPlusBlock - 1) / plusPlusBlock
        var centroids = Matrix(rows: k, columns: d)
        var nearest = [Float](repeating: .infinity, count: n)
        var owner = [Int32](repeating: -1, count: n)
        var sums = [Double](repeating: 0, count: blocks)
        var centreDistances = [Float](repeating: 0, count: k)
        var chosen = rng.next(below: n)
        for c in 0..<k {
            for j in 0..<d { centroids.values[c * d + j] = data.values[chosen * d + j] }
            if c == k - 1 { break }
            let centre = Array(centroids.values[(c * d)..<((c + 1) * d)])
            // |c_new − c_j|² for every earlier centre j (the pruning bound).
            if c > 0 {
                centroids.values.withUnsafeBufferPointer { cp in
                    centre.withUnsafeBufferPointer { q in
                        Kernels.squaredL2Rows(query: q.baseAddress!, rows: cp.baseAddress!, rowCount: c, dimension: d, into: &centreDistances)
                    }
                }
            }
            let between = centreDistances
            nearest.withUnsafeMutableBufferPointer { nb in
                owner.withUnsafeMutableBufferPointer { ob in
                    sums.withUnsafeMutableBufferPointer { sb in
                        let near = SharedMutableBuffer(nb), own = SharedMutableBuffer(ob), total = SharedMutableBuffer(sb)
                        Parallelism.forEachChunk(blocks, threads: threads) { b in
                            let start = b * plusPlusBlock, end = min(n, start + plusPlusBlock)
                            data.values.withUnsafeBufferPointer { x in
                                centre.withUnsafeBufferPointer { q in
                                    for i in start..<end {
                                        let o = own[i]
                                        if o >= 0 && between[Int(o)] > 4.004 * near[i] { continue }
                                        let distance = Kernels.squaredL2(q.baseAddress!, x.baseAddress! + i * d, count: d)
                                        if distance < near[i] { near[i] = distance; own[i] = Int32(c) }
                                    }
                                }
                            }
                            var sum = 0.0
                            for i in start..<end { sum += Double(near[i]) }
                            total[b] = sum
                        }
                    }
                }
            }
            let total = sums.reduce(0, +)
            guard total > 0 else { chosen = rng.next(below: n); continue }
            var target = rng.nextDouble() * total
            var block = blocks - 1
            for b in 0..<blocks {
                if target < sums[b] { block = b; break }
                target -= sums[b]
            }
            let start = block * plusPlusBlock, end = min(n, start + plusPlusBlock)
            chosen = end - 1
            for i in start..<end {
                target -= Double(nearest[i])
                if target < 0 { chosen = i; break }
            }
        }
        return centroids
    }

    /// Points per block of the k-means++ seeding (fixed: the seeding must not depend on threads).
    static let plusPlusBlock = 8_192

    /// The plain sequential k-means++ (one running sum over all points), the reference twin of
    /// `plusPlusInit`: the same draws whenever the sums are exact.
    static func referencePlusPlusInit(_ data: Matrix, k: Int, rng: inout SeededGenerator) -> Matrix {
        let n = data.rows, d = data.columns
        var centroids = Matrix(rows: k, columns: d)
        var nearest = [Float](repeating: .infinity, count: n)
        var chosen = rng.next(below: n)
        for c in 0..<k {
            for j in 0..<d { centroids.values[c * d + j] = data.values[chosen * d + j] }
            if c == k - 1 { break }
            var total = 0.0
            for i in 0..<n {
                var s: Float = 0
                for j in 0..<d { let t = data.values[i * d + j] - centroids.values[c * d + j]; s += t * t }
                nearest[i] = min(nearest[i], s)
                total += Double(nearest[i])
            }
            guard total > 0 else { chosen = rng.next(below: n); continue }
            var target = rng.nextDouble() * total
            chosen = n - 1
            for i in 0..<n {
                target -= Double(nearest[i])
                if target < 0 { chosen = i; break }
            }
        }
        return centroids
    }

    /// Assigns each point to its nearest centroid (ties to the smaller index); returns the inertia.
    /// |x − c|² = |x|² − 2x·c + |c|², with x·c for a block of points by `sgemm`.
    public static func assign(_ data: Matrix, centroids: Matrix, into assignments: inout [Int32], threads: Int = 0) -> Double {
        let n = data.rows, d = data.columns, k = centroids.rows
        let centroidNorms = (0..<k).map { c in Kernels.dot(Array(centroids.row(c)), Array(centroids.row(c))) }
        let block = 512
        var perPoint = [Float](repeating: 0, count: n)
        assignments.withUnsafeMutableBufferPointer { ab in
            perPoint.withUnsafeMutableBufferPointer { pb in
                let aOut = SharedMutableBuffer(ab), dOut = SharedMutableBuffer(pb)
                data.values.withUnsafeBufferPointer { xp in
                    centroids.values.withUnsafeBufferPointer { cp in
                        let xb = UncheckedPointer(xp.baseAddress!), cb = UncheckedPointer(cp.baseAddress!)
                        Parallelism.forEachRange(n, grain: block, threads: threads) { range in
                            var dots = [Float](repeating: 0, count: range.count * k)
                            dots.withUnsafeMutableBufferPointer { t in
                                sgemm(transposeB: true, m: range.count, n: k, k: d, a: xb.base + range.lowerBound * d, lda: d,
                                      b: cb.base, ldb: d, c: t.baseAddress!, ldc: k, threads: 1)
                            }
                            for (r, i) in range.enumerated() {
                                var bestC = 0
                                var bestD = Float.infinity
                                for c in 0..<k {
                                    let dist = centroidNorms[c] - 2 * dots[r * k + c]
                                    if dist < bestD { bestD = dist; bestC = c }
                                }
                                let xx = Kernels.dot(xb.base + i * d, xb.base + i * d, count: d)
                                aOut[i] = Int32(bestC)
                                dOut[i] = max(0, bestD + xx)
                            }
                        }
                    }
                }
            }
        }
        return perPoint.reduce(0.0) { $0 + Double($1) }
    }
}

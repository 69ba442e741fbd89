import AffinityLinalg

/// The k-means cells of an inverted-file index: trains the centroids, assigns vectors to inverted
/// lists and ranks lists for a query. Shared by IVF-Flat and IVF-PQ.
///
/// Three ways of forming cells:
/// - **L2 and cosine**: Lloyd k-means cells, ranked by distance to the centroid.
/// - **Inner product (the default): direction cells × norm bands.** Spherical k-means on the unit
///   directions x/|x| forms `cells` cones; each cone's vectors are split into `bands` by their norm,
///   one inverted list per (cone, band). Band edges are the norm quantiles 1/2, 3/4, 7/8, ...: the
///   upper bands hold the heavy tail of long vectors, which is where top inner-product answers live
///   (the idea of norm-ranging LSH, Yan et al., NeurIPS 2018, applied to IVF). A query ranks lists
///   by an estimate of the score their vectors reach: with θ the query's angle to the cell's
///   centroid and θ_L the list's spread (the angle of its members' 90th-percentile cosine to the
///   centroid: most members lie outside it, so this is a heuristic, not a bound),
///   |q|·N·cos(max(0, θ − θ_L)), N the list's largest norm (its smallest when that cosine is
///   negative). Whether the spread is used (or θ_L = 0, the centroid's direction alone) is chosen
///   at build time on pseudo-queries, by which reaches mean recall 0.9 for less work. The number
///   of bands is chosen from the data (`IVFSettings.normBands`, 0 = automatic): one when norms
///   hardly vary, else 8 (fewer below 32 vectors per cell). `nprobe` counts cells: the best
///   nprobe × bands lists are scanned.
/// - **`mipsReduction`** (inner product, opt-in with `MIPS,`): clusters x' = [x, sqrt(M² − |x|²)] by
///   L2 and ranks cells for q' = [q, 0] by L2 (Bachrach et al., RecSys 2014). When norms spread
///   widely the extra coordinate dominates the assignment (measured in the README).
///
/// Files written before norm bands existed (inner product without the reduction: L2 k-means cells
/// ranked by q·c) still load and search as they did (`bands == 0`).
struct CoarseQuantizer: Sendable {
    /// cells x d' (d' = d + 1 with the reduction; unit rows with bands).
    let centroids: Matrix
    let centroidNorms: [Float]
    let mipsReduction: Bool
    /// M of the reduction (the largest norm), 0 without it.
    let maxNorm: Float
    let metric: Metric
    /// Norm bands per cell (inner product without the reduction); 0 = lists are the cells.
    let bands: Int
    /// bands − 1 ascending norm thresholds: a vector goes to the band of how many are <= its norm.
    let bandEdges: [Float]
    /// Per list (cell·bands + band): the largest and smallest norm in it (−1 for an empty list), the
    /// cosine of its spread θ_L, and the list's centre scale s (the mean of x·ĉ over its vectors:
    /// IVF-PQ encodes x − s·ĉ).
    let listMaxNorm: [Float]
    let listMinNorm: [Float]
    let listSpreadCos: [Float]
    let listScale: [Float]
    /// sin θ_L of each list (derived).
    let listSpreadSin: [Float]
    /// Whether lists are ranked with their spread θ_L, or by the centroid's direction alone (θ_L = 0):
    /// chosen at build time.
    let usesSpread: Bool

    /// The members' cosine to their centroid whose quantile sets a list's spread θ_L (measured on
    /// three generated sets: the 0th (the widest member, a true bound) probes more lists at equal
    /// recall; 0.5-0.97 differ little).
    static let spreadQuantile = 0.9

    init(centroids: Matrix, mipsReduction: Bool, maxNorm: Float, metric: Metric, bands: Int = 0, bandEdges: [Float] = [],
         listMaxNorm: [Float] = [], listMinNorm: [Float] = [], listSpreadCos: [Float] = [], listScale: [Float] = [], usesSpread: Bool = true) {
        self.centroids = centroids
        self.mipsReduction = mipsReduction
        self.maxNorm = maxNorm
        self.metric = metric
        self.bands = bands
        self.bandEdges = bandEdges
        self.listMaxNorm = listMaxNorm
        self.listMinNorm = listMinNorm
        self.listSpreadCos = listSpreadCos
        self.listSpreadSin = listSpreadCos.map { (1 - min(1, $0 * $0)).squareRoot() }
        self.usesSpread = usesSpread
        self.listScale = listScale
        centroidNorms = (0..<centroids.rows).map { Kernels.dot(Array(centroids.row($0)), Array(centroids.row($0))) }
    }

    /// Direction cells with norm bands: inner product without the reduction.
    static func usesBands(metric: Metric, settings: IVFSettings) -> Bool { metric == .innerProduct && !settings.mipsReduction }

    /// The automatic band count: 1 when the middle 98 % of norms lie within a factor 1.5, else 8
    /// (fewer when there are under 32 vectors per cell).
    static func automaticBands(sortedNorms sorted: [Float], cells: Int) -> Int {
        guard !sorted.isEmpty else { return 1 }
        let lo = sorted[min(sorted.count - 1, sorted.count / 100)], hi = sorted[max(0, sorted.count - 1 - sorted.count / 100)]
        if hi <= lo * 1.5 { return 1 }
        return max(1, min(8, sorted.count / max(1, cells * 4)))
    }

    /// The bands − 1 norm thresholds: the quantiles 1 − 2⁻ᵏ of `sortedNorms` (1/2, 3/4, 7/8, ...).
    static func bandEdges(sortedNorms: [Float], bands: Int) -> [Float] {
        (1..<max(1, bands)).map { k in
            let fraction = 1 - 1 / Double(1 << k)
            return sortedNorms[min(sortedNorms.count - 1, Int(fraction * Double(sortedNorms.count)))]
        }
    }

    /// Trains on `x` (already normalised for cosine) and returns the quantiser and each row's list.
    static func train(_ x: Matrix, metric: Metric, settings: IVFSettings) throws -> (CoarseQuantizer, [Int32]) {
        guard settings.lists > 0, settings.lists <= max(1, x.rows) else {
            throw IndexError.invalidParameter("IVF needs 1...\(x.rows) lists for \(x.rows) vectors, got \(settings.lists)")
        }
        guard !settings.mipsReduction || metric == .innerProduct else {
            throw IndexError.invalidParameter("the MIPS reduction applies to inner-product indexes only")
        }
        guard settings.normBands >= 0, settings.normBands <= 64 else {
            throw IndexError.invalidParameter("normBands=\(settings.normBands): expected 0 (automatic) to 64")
        }
        guard settings.normBands == 0 || usesBands(metric: metric, settings: settings) else {
            throw IndexError.invalidParameter("normBands applies to inner-product IVF without the MIPS reduction")
        }
        let d = x.columns
        let banded = usesBands(metric: metric, settings: settings)
        // Row norms: for the reduction's extra coordinate and the bands' edges only.
        let norms = banded || settings.mipsReduction
            ? x.values.withUnsafeBufferPointer { v in (0..<x.rows).map { Kernels.dot(v.baseAddress! + $0 * d, v.baseAddress! + $0 * d, count: d).squareRoot() } }
            : []
        var maxNorm: Float = 0
        var space = x
        if settings.mipsReduction {
            maxNorm = norms.max() ?? 0
            space = Matrix(rows: x.rows, columns: d + 1)
            for r in 0..<x.rows {
                for c in 0..<d { space.values[r * (d + 1) + c] = x.values[r * d + c] }
                space.values[r * (d + 1) + d] = max(0, maxNorm * maxNorm - norms[r] * norms[r]).squareRoot()
            }
        } else if banded {
            space = ExactSearch.normalizedRows(x)
        }
        var g = SeededGenerator(seed: settings.seed)
        let sampleSize = min(x.rows, settings.lists * settings.trainingPointsPerList)
        let sampleRows = Array(g.permutation(x.rows).prefix(sampleSize)).sorted()
        let sample = space.rows(at: sampleRows)
        let km = try KMeans.fit(sample, settings: KMeansSettings(clusters: settings.lists, iterations: settings.iterations, seed: settings.seed,
                                                                 threads: settings.threads, spherical: banded))
        var assignment = [Int32](repeating: 0, count: x.rows)
        if !banded {
            let quantizer = CoarseQuantizer(centroids: km.centroids, mipsReduction: settings.mipsReduction, maxNorm: maxNorm, metric: metric)
            if quantizer.byL2 {
                _ = KMeans.assign(space, centroids: km.centroids, into: &assignment, threads: settings.threads)
            } else {
                assignment = ExactSearch.search(queries: x, base: km.centroids, k: 1, metric: .innerProduct, threads: settings.threads)
                    .map { Int32($0.first?.index ?? 0) }
            }
            return (quantizer, assignment)
        }
        // Unit directions and unit centroids: the nearest centroid is the one of largest q·ĉ.
        _ = KMeans.assign(space, centroids: km.centroids, into: &assignment, threads: settings.threads)
        let cells = settings.lists
        let sortedNorms = norms.sorted()
        let bands = settings.normBands > 0 ? settings.normBands : automaticBands(sortedNorms: sortedNorms, cells: cells)
        let edges = bandEdges(sortedNorms: sortedNorms, bands: bands)
        let lists = cells * bands
        var maxs = [Float](repeating: -1, count: lists), mins = [Float](repeating: -1, count: lists)
        var sums = [Double](repeating: 0, count: lists), members = [[Float]](repeating: [], count: lists)
        x.values.withUnsafeBufferPointer { v in
            km.centroids.values.withUnsafeBufferPointer { c in
                for r in 0..<x.rows {
                    let cell = Int(assignment[r]), list = cell * bands + band(norms[r], edges: edges)
                    assignment[r] = Int32(list)
                    maxs[list] = members[list].isEmpty ? norms[r] : max(maxs[list], norms[r])
                    mins[list] = members[list].isEmpty ? norms[r] : min(mins[list], norms[r])
                    let projection = Kernels.dot(v.baseAddress! + r * d, c.baseAddress! + cell * d, count: d)
                    sums[list] += Double(projection)
                    members[list].append(norms[r] > 0 ? projection / norms[r] : 1)
                }
            }
        }
        let scales = (0..<lists).map { members[$0].isEmpty ? 0 : Float(sums[$0] / Double(members[$0].count)) }
        let spreads = members.map { cosines -> Float in
            guard !cosines.isEmpty else { return 1 }
            let sorted = cosines.sorted()
            return max(-1, min(1, sorted[min(sorted.count - 1, Int(spreadQuantile * Double(sorted.count - 1)))]))
        }
        var quantizer = CoarseQuantizer(centroids: km.centroids, mipsReduction: false, maxNorm: 0, metric: metric, bands: bands,
                                        bandEdges: edges, listMaxNorm: maxs, listMinNorm: mins, listSpreadCos: spreads, listScale: scales)
        // The spread widens a list's reach for queries off its centroid: it keeps recall where norms
        // are extreme and members stray far from their centroid, but probes more lists where they do
        // not. Chosen by the data: both rankings are tried on pseudo-queries (the directions of a
        // seeded sample of the vectors) and the one that reaches recall 0.9 for less work is kept.
        let flat = quantizer.ranking(usesSpread: false)
        let probeRows = Array(g.permutation(x.rows).prefix(min(x.rows, 256))).sorted()
        let probes = space.rows(at: probeRows)
        // A pseudo-query's own vector is left out of its truth (real queries are not base vectors).
        let truth = ExactSearch.search(queries: probes, base: x, k: 11, metric: .innerProduct, threads: settings.threads)
            .enumerated().map { k, found in Array(found.filter { $0.index != probeRows[k] }.prefix(10)) }
        var sizes = [Int](repeating: 0, count: lists)
        for list in assignment { sizes[Int(list)] += 1 }
        if flat.work(queries: probes, truth: truth, assignment: assignment, sizes: sizes)
            < quantizer.work(queries: probes, truth: truth, assignment: assignment, sizes: sizes) {
            quantizer = flat
        }
        return (quantizer, assignment)
    }

    /// The same lists ranked with or without their spread.
    func ranking(usesSpread: Bool) -> CoarseQuantizer {
        CoarseQuantizer(centroids: centroids, mipsReduction: mipsReduction, maxNorm: maxNorm, metric: metric, bands: bands, bandEdges: bandEdges,
                        listMaxNorm: listMaxNorm, listMinNorm: listMinNorm, listSpreadCos: listSpreadCos, listScale: listScale, usesSpread: usesSpread)
    }

    /// Cost of a list probed, in vectors scanned (the bias, the call, the candidates' pushes).
    static let costPerList = 16.0

    /// The work (mean vectors scanned + `costPerList` per list probed) at the smallest number of
    /// lists probed (on a geometric grid) whose mean recall of the 10 true neighbours reaches 0.9,
    /// when lists are probed in this quantiser's order: the measure the benchmarks use.
    func work(queries: Matrix, truth: [[ScoredIndex]], assignment: [Int32], sizes: [Int]) -> Double {
        var grid: [Int] = []
        var p = 1
        while p < lists { grid.append(p); p = max(p + 1, p * 5 / 4) }
        grid.append(lists)
        var found = [Double](repeating: 0, count: grid.count), scanned = [Double](repeating: 0, count: grid.count)
        var counted = 0
        for q in 0..<queries.rows where truth[q].count >= 10 {
            counted += 1
            let scores = listScores(Array(queries.row(q)))
            let order = (0..<lists).sorted { ScoredIndex.ranksBefore(scores[$0], $0, scores[$1], $1) }
            var rank = [Int](repeating: 0, count: lists)
            for (r, list) in order.enumerated() { rank[list] = r }
            let truthRanks = truth[q].prefix(10).map { rank[Int(assignment[$0.index])] }
            var prefix = 0, next = 0
            for (g, probes) in grid.enumerated() {
                while next < probes { prefix += sizes[order[next]]; next += 1 }
                scanned[g] += Double(prefix)
                found[g] += Double(truthRanks.filter { $0 < probes }.count) / 10
            }
        }
        guard counted > 0 else { return 0 }
        for (g, probes) in grid.enumerated() where found[g] / Double(counted) >= 0.9 {
            return scanned[g] / Double(counted) + Double(probes) * Self.costPerList
        }
        return .infinity
    }

    /// The band of a vector of norm `norm`: how many edges are <= it.
    static func band(_ norm: Float, edges: [Float]) -> Int {
        var b = 0
        while b < edges.count && edges[b] <= norm { b += 1 }
        return b
    }

    /// Whether cells are formed and ranked by L2 (reduction, L2 or cosine) rather than inner product.
    var byL2: Bool { mipsReduction || metric != .innerProduct }

    /// Number of k-means cells.
    var cells: Int { centroids.rows }

    /// Number of inverted lists: cells × bands with bands, else the cells.
    var lists: Int { centroids.rows * max(1, bands) }

    /// The lists to scan for a query (already normalised for cosine), most promising first: `nprobe`
    /// cells, or with bands the best nprobe × bands lists of all cells (about as many vectors as nprobe
    /// cells hold). With bands, empty lists are never returned.
    func rankLists(_ q: [Float], nprobe: Int) -> [Int] {
        var cellDots: [Float] = []
        return rankLists(q, nprobe: nprobe, cellDots: &cellDots)
    }

    /// `rankLists`, also leaving q·c of every cell in `cellDots` (the ranking computes them; an
    /// IVF-PQ scan's bias is one of them, scaled: `dotCentre(cellDots:list:)`).
    func rankLists(_ q: [Float], nprobe: Int, cellDots: inout [Float]) -> [Int] {
        let (wanted, overflow) = nprobe.multipliedReportingOverflow(by: max(1, bands))
        var selected = TopKSelector(k: min(overflow ? lists : wanted, lists))
        forEachListScore(q, cellDots: &cellDots) { list, score in selected.push(index: list, score: score) }   // no lists-long array per query
        return selected.sortedResults().map(\.index)
    }

    /// Each list's ranking score for `q` (higher is more promising; −∞ for an empty list with bands):
    /// 2q·c − |c|² (L2 cells, the reduction), q·c (pre-band inner-product cells), or with bands the
    /// score the list's vectors can reach divided by |q|.
    func listScores(_ q: [Float]) -> [Float] {
        var out = [Float](repeating: -.infinity, count: lists), cellDots: [Float] = []
        forEachListScore(q, cellDots: &cellDots) { list, score in out[list] = score }
        return out
    }

    /// Calls `body(list, score)` for every list that can hold vectors, with `listScores`'s score;
    /// `scores` is left holding q·c of every cell (the reduction's extra coordinate of q is 0).
    private func forEachListScore(_ q: [Float], cellDots scores: inout [Float], _ body: (Int, Float) -> Void) {
        var qc = q
        if mipsReduction { qc.append(0) }
        if scores.count != centroids.rows { scores = [Float](repeating: 0, count: centroids.rows) }
        qc.withUnsafeBufferPointer { qp in
            centroids.values.withUnsafeBufferPointer { c in
                Kernels.dotRows(query: qp.baseAddress!, rows: c.baseAddress!, rowCount: centroids.rows, dimension: centroids.columns, into: &scores)
            }
        }
        guard bands > 0 else {
            for c in 0..<centroids.rows { body(c, byL2 ? 2 * scores[c] - centroidNorms[c] : scores[c]) }
            return
        }
        // cos θ of the query to each centroid (unit rows), then cos(max(0, θ − θ_L)) per list
        // = cos θ·cos θ_L + sin θ·sin θ_L once θ > θ_L.
        let qNorm = Kernels.dot(q, q).squareRoot()
        let inverse: Float = qNorm > 0 ? 1 / qNorm : 0
        for c in 0..<centroids.rows {
            let cosine = max(-1, min(1, scores[c] * inverse)), sine = (1 - cosine * cosine).squareRoot()
            for b in 0..<bands {
                let list = c * bands + b
                if listMaxNorm[list] < 0 { continue }
                let reach = !usesSpread ? cosine : cosine >= listSpreadCos[list] ? 1 : cosine * listSpreadCos[list] + sine * listSpreadSin[list]
                body(list, reach * (reach >= 0 ? listMaxNorm[list] : listMinNorm[list]))
            }
        }
    }

    /// q · centre(ofList:) from q · c of the list's cell (`rankLists`'s `cellDots`), without
    /// building the centre.
    func dotCentre(cellDots: [Float], list: Int) -> Float {
        bands > 0 ? cellDots[list / bands] * listScale[list] : cellDots[list]
    }

    /// The centre of list `list` in the original space: the centroid (without the reduction's extra
    /// coordinate), or s·ĉ with bands. IVF-PQ encodes a vector's residual from it.
    func centre(ofList list: Int, dimension: Int) -> [Float] {
        let cell = bands > 0 ? list / bands : list
        let c = centroids.values[(cell * centroids.columns)..<(cell * centroids.columns + dimension)]
        return bands > 0 ? c.map { $0 * listScale[list] } : Array(c)
    }

    // MARK: files

    /// The file format version the quantiser needs (2 with norm bands).
    var fileVersion: UInt32 { bands > 0 ? 2 : 1 }

    /// Checks the per-list norms read from a file against the lists' sizes: a non-empty list has
    /// 0 <= smallest <= largest norm (a list marked empty would never be scanned), an empty one is
    /// marked empty.
    func check(sizes: [Int], path: String) throws {
        guard bands > 0 else { return }
        for (list, size) in sizes.enumerated() {
            let ok = size > 0 ? (listMinNorm[list] >= 0 && listMinNorm[list] <= listMaxNorm[list]) : listMaxNorm[list] < 0
            guard ok else { throw IndexError.file(path: path, reason: "list \(list) holds \(size) vectors but its norms say otherwise") }
        }
    }

    /// The quantiser's JSON keys (`lists` counts cells).
    var json: [String: Any] {
        ["lists": cells, "mipsReduction": mipsReduction, "maxNorm": Double(maxNorm), "centroidColumns": centroids.columns, "bands": bands,
         "spread": usesSpread]
    }

    /// Writes the centroids, then with bands the edges and the per-list norms and scales.
    func write(_ w: inout IndexFile.Writer) {
        centroids.values.withUnsafeBytes { w.raw($0.baseAddress!, $0.count) }
        guard bands > 0 else { return }
        for section in [bandEdges, listMaxNorm, listMinNorm, listSpreadCos, listScale] where !section.isEmpty {
            section.withUnsafeBytes { w.raw($0.baseAddress!, $0.count) }
        }
    }

    /// Reads what `write` wrote, checking every size and value against the header.
    static func read(_ r: inout IndexFile.Reader, json: [String: Any], metric: Metric, dimension: Int, kind: String) throws -> CoarseQuantizer {
        guard let cells = json["lists"] as? Int, let mips = json["mipsReduction"] as? Bool, let cols = json["centroidColumns"] as? Int,
              let maxNorm = json["maxNorm"] as? Double, cells > 0, Float(maxNorm).isFinite else {
            throw IndexError.file(path: r.path, reason: "\(kind) header is incomplete")
        }
        guard json["bands"] == nil || json["bands"] is Int, json["spread"] == nil || json["spread"] is Bool else {
            throw IndexError.file(path: r.path, reason: "\(kind) header has a 'bands' or 'spread' of the wrong type")
        }
        let bands = json["bands"] as? Int ?? 0
        guard bands >= 0, bands <= 64, bands == 0 || (metric == .innerProduct && !mips) else {
            throw IndexError.file(path: r.path, reason: "\(bands) norm bands do not fit this index (0...64, inner product without the reduction)")
        }
        guard cols == dimension || (mips && cols == dimension + 1) else {
            throw IndexError.file(path: r.path, reason: "centroids have \(cols) columns for \(dimension)-dimensional vectors")
        }
        let centroids = Matrix(rows: cells, columns: cols, values: try r.floats(rows: cells, columns: cols, name: "centroids"))
        guard bands > 0 else { return CoarseQuantizer(centroids: centroids, mipsReduction: mips, maxNorm: Float(maxNorm), metric: metric) }
        let lists = try r.product(cells, bands, "lists")
        let edges = bands > 1 ? try r.floats(rows: 1, columns: bands - 1, name: "band edges") : []
        guard zip(edges, edges.dropFirst()).allSatisfy({ $0 <= $1 }) else { throw IndexError.file(path: r.path, reason: "band edges are not ascending") }
        let maxs = try r.floats(rows: 1, columns: lists, name: "list norms"), mins = try r.floats(rows: 1, columns: lists, name: "list norms")
        let spreads = try r.floats(rows: 1, columns: lists, name: "list spreads")
        guard spreads.allSatisfy({ $0 >= -1 && $0 <= 1 }) else { throw IndexError.file(path: r.path, reason: "a list spread is not a cosine in -1...1") }
        let scales = try r.floats(rows: 1, columns: lists, name: "list scales")
        return CoarseQuantizer(centroids: centroids, mipsReduction: false, maxNorm: 0, metric: metric, bands: bands, bandEdges: edges,
                               listMaxNorm: maxs, listMinNorm: mins, listSpreadCos: spreads, listScale: scales, usesSpread: json["spread"] as? Bool ?? true)
    }
}

import AffinityLinalg
import Foundation
import _AffinityKernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Build settings of an HNSW graph. Every field has a default.
public struct HNSWSettings: Sendable, Codable, Equatable {
    /// M: links per node on the upper layers; layer 0 keeps up to 2·M.
    public var neighborsPerNode: Int = 16
    /// Size of the candidate list while inserting (efConstruction).
    public var efConstruction: Int = 200
    /// Seed of the level draws.
    public var seed: UInt64 = 42
    /// Threads used by `add` (0 = all cores). With 1 thread the graph is deterministic.
    public var threads: Int = 0

    public init(neighborsPerNode: Int = 16, efConstruction: Int = 200, seed: UInt64 = 42, threads: Int = 0) {
        self.neighborsPerNode = neighborsPerNode
        self.efConstruction = efConstruction
        self.seed = seed
        self.threads = threads
    }

    public func validate() throws {
        guard neighborsPerNode >= 2 && neighborsPerNode <= 256 else { throw IndexError.invalidParameter("HNSW neighborsPerNode must be in 2...256, got \(neighborsPerNode)") }
        guard efConstruction >= 1 else { throw IndexError.invalidParameter("HNSW efConstruction must be positive, got \(efConstruction)") }
    }
}

/// Hierarchical navigable small-world graph (Malkov & Yashunin, TPAMI 2018), as in hnswlib:
/// levels drawn with multiplier 1/ln M, greedy descent through the upper layers, beam search of
/// width ef on layer 0, and the neighbour-selection heuristic (a candidate is kept only if it is
/// closer to the new node than to every neighbour already kept) both for new links and when a full
/// neighbour list is pruned.
///
/// - Deletion marks a node: it still routes searches but never appears in results; `add` reuses
///   deleted slots first (the new vector is linked afresh from its slot, like hnswlib's
///   `replace_deleted`).
/// - Filtered search keeps expanding until it holds `ef` allowed results or runs out of candidates,
///   and retries with a larger `ef` (finally an exact scan) until k allowed results are found, so a
///   filtered result never comes back short while k allowed vectors exist. Restrictive filters need
///   a larger `ef` for the right results. With raw inner product the graph reaches only part of the
///   nodes (small-norm vectors lose every pruning comparison to large-norm ones), so a very
///   restrictive filter may return allowed but not the best allowed items; L2 and cosine graphs
///   reach every node.
/// - Inserts run in parallel with one lock per node (hnswlib's scheme); searches of an index that is
///   not being modified take no locks.
public final class HNSWIndex: VectorIndex, @unchecked Sendable {
    public let dimension: Int
    public let metric: Metric
    public let settings: HNSWSettings
    let maxM: Int, maxM0: Int
    let levelMultiplier: Double

    // Storage for `capacity` nodes; count ≤ capacity.
    var capacity = 0
    public internal(set) var count = 0
    var vectors: UnsafeMutablePointer<Float>
    /// Layer 0 links: node n's list at n·(maxM0+1): [count, ids...].
    var level0: UnsafeMutablePointer<Int32>
    /// Upper layers of node n: level·(maxM+1) Int32s for levels 1...level (nil when level 0).
    var upper: UnsafeMutablePointer<UnsafeMutablePointer<Int32>?>
    var levels: UnsafeMutablePointer<Int32>
    var deleted: UnsafeMutablePointer<Bool>
    public internal(set) var deletedCount = 0
    var entryPoint: Int32 = -1
    var maxLevel: Int32 = -1
    /// Memory maps backing vectors and layer 0 after `load` (nil when heap-allocated).
    var mapping: (UnsafeMutableRawPointer, Int)?

    private let globalLock = NSLock()
    /// One spin lock per node while a parallel insert runs (nil otherwise).
    private var nodeLocks: UnsafeMutablePointer<UInt8>?
    private let scratchPool: ScratchPool

    public init(dimension: Int, metric: Metric, settings: HNSWSettings = HNSWSettings()) throws {
        try settings.validate()
        guard dimension > 0 else { throw IndexError.invalidParameter("dimension must be positive") }
        self.dimension = dimension
        self.metric = metric
        self.settings = settings
        maxM = settings.neighborsPerNode
        maxM0 = 2 * settings.neighborsPerNode
        levelMultiplier = 1 / log(Double(settings.neighborsPerNode))
        vectors = .allocate(capacity: 1)
        level0 = .allocate(capacity: 1)
        upper = .allocate(capacity: 1)
        levels = .allocate(capacity: 1)
        deleted = .allocate(capacity: 1)
        scratchPool = ScratchPool()
    }

    deinit {
        for n in 0..<count { upper[n]?.deallocate() }
        if let (base, length) = mapping {
            munmap(base, length)
        } else {
            vectors.deallocate()
            level0.deallocate()
        }
        upper.deallocate()
        levels.deallocate()
        deleted.deallocate()
        nodeLocks?.deallocate()
    }

    /// Bytes of memory the index holds: vectors, links, levels and flags.
    public var memoryBytes: Int {
        var upperBytes = 0
        for n in 0..<count where levels[n] > 0 { upperBytes += Int(levels[n]) * (maxM + 1) * 4 }
        return count * (dimension * 4 + (maxM0 + 1) * 4 + 4 + 1 + 8) + upperBytes
    }

    // MARK: storage

    func reserve(_ newCapacity: Int) {
        guard newCapacity > capacity else { return }
        func grow<T>(_ p: UnsafeMutablePointer<T>, _ old: Int, _ new: Int, fill: T) -> UnsafeMutablePointer<T> {
            let q = UnsafeMutablePointer<T>.allocate(capacity: new)
            q.moveInitialize(from: p, count: old)
            (q + old).initialize(repeating: fill, count: new - old)
            p.deallocate()
            return q
        }
        if mapping != nil {
            // Leave the memory map: copy mapped arrays to the heap before growing.
            let v = UnsafeMutablePointer<Float>.allocate(capacity: max(capacity, 1) * dimension)
            v.initialize(from: vectors, count: capacity * dimension)
            let l = UnsafeMutablePointer<Int32>.allocate(capacity: max(capacity, 1) * (maxM0 + 1))
            l.initialize(from: level0, count: capacity * (maxM0 + 1))
            munmap(mapping!.0, mapping!.1)
            mapping = nil
            vectors = v
            level0 = l
        }
        vectors = grow(vectors, capacity * dimension, newCapacity * dimension, fill: 0)
        level0 = grow(level0, capacity * (maxM0 + 1), newCapacity * (maxM0 + 1), fill: 0)
        upper = grow(upper, capacity, newCapacity, fill: nil)
        levels = grow(levels, capacity, newCapacity, fill: 0)
        deleted = grow(deleted, capacity, newCapacity, fill: false)
        capacity = newCapacity
    }

    /// Uses arrays that live in a memory map (loading); small per-node arrays go to the heap.
    func adoptMapped(vectors mappedVectors: UnsafeMutablePointer<Float>, level0 mappedLinks: UnsafeMutablePointer<Int32>, count n: Int) {
        vectors.deallocate()
        level0.deallocate()
        upper.deallocate()
        levels.deallocate()
        deleted.deallocate()
        vectors = mappedVectors
        level0 = mappedLinks
        upper = .allocate(capacity: max(n, 1))
        upper.initialize(repeating: nil, count: max(n, 1))
        levels = .allocate(capacity: max(n, 1))
        levels.initialize(repeating: 0, count: max(n, 1))
        deleted = .allocate(capacity: max(n, 1))
        deleted.initialize(repeating: false, count: max(n, 1))
        capacity = n
        count = n
    }

    @inline(__always) func vector(_ n: Int32) -> UnsafeMutablePointer<Float> { vectors + Int(n) * dimension }

    /// The link list of node n on `level`: pointer to [count, ids...].
    @inline(__always) func links(_ n: Int32, _ level: Int) -> UnsafeMutablePointer<Int32> {
        level == 0 ? level0 + Int(n) * (maxM0 + 1) : upper[Int(n)]! + (level - 1) * (maxM + 1)
    }

    @inline(__always) func score(_ q: UnsafePointer<Float>, _ n: Int32) -> Float {
        similarity(metric, q, vector(n), dimension)
    }

    // MARK: adding

    /// Adds the rows of `m`; ids continue from the current count, except that deleted slots are
    /// reused first (`replaceDeleted`). Returns the id given to each row.
    @discardableResult
    public func add(_ m: Matrix, replaceDeleted: Bool = false) throws -> [Int] {
        guard m.columns == dimension else { throw IndexError.dimensionMismatch(expected: dimension, got: m.columns) }
        let rows = metric == .cosine ? ExactSearch.normalizedRows(m) : m
        var ids: [Int] = []
        var fresh: [Int] = []
        var reused: [(slot: Int, row: Int)] = []
        var free = replaceDeleted ? (0..<count).filter { deleted[$0] } : []
        for r in 0..<rows.rows {
            if let slot = free.popLast() { reused.append((slot, r)); ids.append(slot) } else { fresh.append(r); ids.append(count + fresh.count - 1) }
        }
        for (slot, r) in reused { try replace(slot: slot, with: Array(rows.row(r))) }
        guard !fresh.isEmpty else { return ids }
        let first = count
        if first + fresh.count > capacity { reserve(max(first + fresh.count, capacity * 2)) }
        var g = SeededGenerator(seed: settings.seed, stream: UInt64(first))
        for (k, r) in fresh.enumerated() {
            let n = first + k
            rows.values.withUnsafeBufferPointer { src in (vectors + n * dimension).update(from: src.baseAddress! + r * dimension, count: dimension) }
            let level = Int32(min(32, Int(-log(max(g.nextDouble(), 1e-300)) * levelMultiplier)))
            levels[n] = level
            level0[n * (maxM0 + 1)] = 0
            deleted[n] = false
            if level > 0 {
                let p = UnsafeMutablePointer<Int32>.allocate(capacity: Int(level) * (maxM + 1))
                p.initialize(repeating: 0, count: Int(level) * (maxM + 1))
                upper[n] = p
            }
        }
        count = first + fresh.count
        let workers = Parallelism.resolve(settings.threads)
        var start = first
        if entryPoint < 0 {
            let scratch = scratchPool.take()
            insert(Int32(first), scratch: scratch, locked: false)
            scratchPool.give(back: scratch)
            start += 1
        }
        if workers <= 1 || count - start < 1000 {
            let scratch = scratchPool.take()
            for n in start..<count { insert(Int32(n), scratch: scratch, locked: false) }
            scratchPool.give(back: scratch)
        } else {
            makeLocks()
            let end = count, origin = start
            Parallelism.forEachRange(end - origin, grain: 256, threads: workers) { range in
                let scratch = self.scratchPool.take()
                for k in range { self.insert(Int32(origin + k), scratch: scratch, locked: true) }
                self.scratchPool.give(back: scratch)
            }
            dropLocks()
        }
        return ids
    }

    private func makeLocks() {
        let locks = UnsafeMutablePointer<UInt8>.allocate(capacity: capacity)
        locks.initialize(repeating: 0, count: capacity)
        nodeLocks = locks
    }

    private func dropLocks() {
        guard let nodeLocks else { return }
        nodeLocks.deallocate()
        self.nodeLocks = nil
    }

    @inline(__always) private func lock(_ n: Int32, _ locked: Bool) { if locked { affinity_spin_lock(nodeLocks! + Int(n)) } }
    @inline(__always) private func unlock(_ n: Int32, _ locked: Bool) { if locked { affinity_spin_unlock(nodeLocks! + Int(n)) } }

    /// Links node n into the graph (its vector and level are set).
    func insert(_ n: Int32, scratch: SearchScratch, locked: Bool) {
        let level = Int(levels[Int(n)])
        let q = UnsafePointer(vector(n))
        var entry: Int32, top: Int
        if locked { globalLock.lock() }
        entry = entryPoint
        top = Int(maxLevel)
        let raisesTop = level > top
        if !raisesTop && locked { globalLock.unlock() }
        if entry < 0 {
            entryPoint = n
            maxLevel = Int32(level)
            if locked { globalLock.unlock() }
            return
        }
        var current = entry
        var currentScore = score(q, current)
        if level < top {
            for l in stride(from: top, to: level, by: -1) {
                greedy(q, &current, &currentScore, level: l, locked: locked, buffer: &scratch.linkBuffer)
            }
        }
        for l in stride(from: min(level, top), through: 0, by: -1) {
            searchLayer(q, entry: current, entryScore: currentScore, ef: settings.efConstruction, level: l, scratch: scratch,
                        filter: nil, skipDeleted: false, locked: locked)
            var candidates = scratch.results.drainSortedBestFirst()
            if let best = candidates.first { current = Int32(best.id); currentScore = best.score }
            candidates.removeAll { $0.id == Int(n) }
            let selected = selectNeighbors(candidates, limit: maxM)
            lock(n, locked)
            let own = links(n, l)
            own[0] = Int32(selected.count)
            for (k, s) in selected.enumerated() { own[k + 1] = Int32(s.id) }
            unlock(n, locked)
            for s in selected { connect(Int32(s.id), to: n, level: l, locked: locked) }
        }
        if raisesTop {
            entryPoint = n
            maxLevel = Int32(level)
            if locked { globalLock.unlock() }
        }
    }

    /// Adds the back link neighbour → n, pruning the neighbour's list with the heuristic when full.
    private func connect(_ neighbor: Int32, to n: Int32, level: Int, locked: Bool) {
        let cap = level == 0 ? maxM0 : maxM
        lock(neighbor, locked)
        defer { unlock(neighbor, locked) }
        let list = links(neighbor, level)
        let c = Int(list[0])
        for k in 0..<c where list[k + 1] == n { return }
        if c < cap {
            list[c + 1] = n
            list[0] = Int32(c + 1)
            return
        }
        let base = UnsafePointer(vector(neighbor))
        var candidates = [Neighbor(id: Int(n), score: score(base, n))]
        for k in 0..<c { candidates.append(Neighbor(id: Int(list[k + 1]), score: score(base, list[k + 1]))) }
        sortNeighbors(&candidates)
        let kept = selectNeighbors(candidates, limit: cap)
        list[0] = Int32(kept.count)
        for (k, s) in kept.enumerated() { list[k + 1] = Int32(s.id) }
    }

    /// The heuristic of Malkov & Yashunin (Alg. 4 without extension): candidates best first; keep one
    /// only if it is closer to the base than to every kept neighbour.
    func selectNeighbors(_ candidates: [Neighbor], limit: Int) -> [Neighbor] {
        if candidates.count <= limit { return candidates }
        var kept: [Neighbor] = []
        kept.reserveCapacity(limit)
        for c in candidates {
            if kept.count >= limit { break }
            let cv = UnsafePointer(vector(Int32(c.id)))
            var good = true
            for s in kept where score(cv, Int32(s.id)) > c.score { good = false; break }
            if good { kept.append(c) }
        }
        return kept
    }

    /// Greedy descent on one upper layer (ef = 1).
    private func greedy(_ q: UnsafePointer<Float>, _ current: inout Int32, _ currentScore: inout Float, level: Int, locked: Bool,
                        buffer: inout [Int32]) {
        var changed = true
        while changed {
            changed = false
            lock(current, locked)
            let list = links(current, level)
            let c = Int(list[0])
            if buffer.count < c { buffer = [Int32](repeating: 0, count: max(c, maxM0)) }
            for k in 0..<c { buffer[k] = list[k + 1] }
            unlock(current, locked)
            for k in 0..<c {
                let s = score(q, buffer[k])
                if s > currentScore || (s == currentScore && buffer[k] < current) {
                    currentScore = s
                    current = buffer[k]
                    changed = true
                }
            }
        }
    }

    /// Beam search of width ef on one layer; the best results end in `scratch.results`.
    /// The heaps are used through locals and the visited tags through a raw pointer, so the inner
    /// loop pays no per-access exclusivity checks.
    func searchLayer(_ q: UnsafePointer<Float>, entry: Int32, entryScore: Float, ef: Int, level: Int, scratch: SearchScratch,
                     filter: ((Int) -> Bool)?, skipDeleted: Bool, locked: Bool) {
        scratch.begin(capacity: capacity)
        // Locals sharing the scratch's storage (read once; written back, as a heap may have grown).
        var candidates = scratch.candidates, results = scratch.results
        defer {
            scratch.candidates = candidates
            scratch.results = results
        }
        candidates.clear()
        results.clear()
        let tags = scratch.tags, generation = scratch.generation
        tags[Int(entry)] = generation
        candidates.push(entryScore, entry)
        let checksDeleted = skipDeleted && deletedCount > 0
        let considersAll = filter == nil && !checksDeleted
        let deletedFlags = deleted
        @inline(__always) func allowed(_ n: Int32) -> Bool {
            if considersAll { return true }
            if checksDeleted && deletedFlags[Int(n)] { return false }
            return filter?(Int(n)) ?? true
        }
        var lowerBound = -Float.infinity
        if allowed(entry) {
            results.push(entryScore, entry)
            lowerBound = entryScore
        }
        var copy = locked ? scratch.linkBuffer : []
        if locked && copy.count < maxM0 { copy = [Int32](repeating: 0, count: maxM0) }
        defer { if locked { scratch.linkBuffer = copy } }
        // Locals: class-stored pointers would cost a dynamic access check on every read.
        let base = UnsafePointer(vectors), d = dimension, isL2 = metric == .l2
        let layer0 = UnsafePointer(level0), stride0 = maxM0 + 1
        let pending = scratch.pending, pendingScores = scratch.pendingScores
        while let (candidateScore, candidate) = candidates.pop() {
            if candidateScore < lowerBound && (results.count >= ef || considersAll) { break }
            var list = level == 0 ? layer0 + Int(candidate) * stride0 : UnsafePointer(links(candidate, level))
            var c: Int
            if locked {
                // Count and ids under the node's lock: another thread may be rewriting the list.
                lock(candidate, true)
                c = Int(list[0])
                for k in 0..<c { copy[k] = list[k + 1] }
                unlock(candidate, true)
            } else {
                c = Int(list[0])
            }
            list += 1
            // Unvisited neighbours first, then one batched, prefetching scoring call.
            var fresh = 0
            for k in 0..<c {
                let n = locked ? copy[k] : list[k]
                if tags[Int(n)] == generation { continue }
                tags[Int(n)] = generation
                pending[fresh] = n
                fresh += 1
            }
            Kernels.scores(ids: pending, count: fresh, query: q, rows: base, dimension: d, negatedL2: isL2, into: pendingScores)
            for k in 0..<fresh {
                let n = pending[k], s = pendingScores[k]
                if results.count < ef || s > lowerBound {
                    candidates.push(s, n)
                    if allowed(n) {
                        // Full: the new entry takes the worst one's place (what push then pop kept).
                        if results.count < ef { results.push(s, n) } else { results.replaceTop(s, n) }
                    }
                    if results.count > 0 { lowerBound = results.topScore }
                }
            }
        }
    }

    // MARK: searching

    public func search(_ query: [Float], k: Int, parameters: SearchParameters, filter: ((Int) -> Bool)?) throws -> [Neighbor] {
        try check(query)
        guard k > 0, entryPoint >= 0 else { return [] }
        let q = metric == .cosine ? normalized(query) : query
        let scratch = scratchPool.take()
        defer { scratchPool.give(back: scratch) }
        return q.withUnsafeBufferPointer { qp -> [Neighbor] in
            let qv = qp.baseAddress!
            var current = entryPoint
            var currentScore = score(qv, current)
            for l in stride(from: Int(maxLevel), to: 0, by: -1) {
                greedy(qv, &current, &currentScore, level: l, locked: false, buffer: &scratch.linkBuffer)
            }
            var ef = max(parameters.ef, k)
            let needsCheck = filter != nil || deletedCount > 0
            while true {
                searchLayer(qv, entry: current, entryScore: currentScore, ef: ef, level: 0, scratch: scratch,
                            filter: filter, skipDeleted: true, locked: false)
                var found = scratch.results.drainSortedBestFirst()
                if !needsCheck || found.count >= k || ef >= count {
                    if found.count < k && needsCheck { found = exactScan(qv, k: k, filter: filter) }
                    return Array(found.prefix(k))
                }
                ef = min(count, ef * 4)   // too few allowed results: widen the beam
            }
        }
    }

    /// Exact scan over allowed, non-deleted nodes (the last resort of a filtered search).
    func exactScan(_ q: UnsafePointer<Float>, k: Int, filter: ((Int) -> Bool)?) -> [Neighbor] {
        var selector = TopKSelector(k: k)
        for n in 0..<count where !deleted[n] && (filter?(n) ?? true) {
            selector.push(index: n, score: score(q, Int32(n)))
        }
        return selector.sortedResults().map { Neighbor(id: $0.index, score: $0.score) }
    }

    // MARK: deleting

    /// Marks a vector deleted: it keeps routing searches but never appears in results.
    public func markDeleted(_ id: Int) throws {
        guard id >= 0 && id < count else { throw IndexError.unknownID(id) }
        if !deleted[id] { deleted[id] = true; deletedCount += 1 }
    }

    public func isDeleted(_ id: Int) -> Bool { id >= 0 && id < count && deleted[id] }

    /// Brings back a deleted vector (it appears in results again), with its links as they are.
    public func restore(_ id: Int) throws {
        guard id >= 0 && id < count else { throw IndexError.unknownID(id) }
        if deleted[id] { deleted[id] = false; deletedCount -= 1 }
    }

    // MARK: updating (online learning)

    /// An independent copy (vectors, links, deletions): a server changes the copy while requests
    /// go on searching the original, then swaps. O(count · (dimension + links)) memory copies.
    public func copy() throws -> HNSWIndex {
        let other = try HNSWIndex(dimension: dimension, metric: metric, settings: settings)
        other.reserve(max(count, 1))
        other.vectors.update(from: vectors, count: count * dimension)
        other.level0.update(from: level0, count: count * (maxM0 + 1))
        other.levels.update(from: levels, count: count)
        other.deleted.update(from: deleted, count: count)
        for n in 0..<count {
            if let p = upper[n] {
                let size = Int(levels[n]) * (maxM + 1)
                let q = UnsafeMutablePointer<Int32>.allocate(capacity: size)
                q.initialize(from: p, count: size)
                other.upper[n] = q
            }
        }
        other.count = count
        other.deletedCount = deletedCount
        other.entryPoint = entryPoint
        other.maxLevel = maxLevel
        return other
    }

    /// Replaces the vector of `id`. With `relink` its links are rebuilt from a search for the new
    /// vector (as a fresh insertion would make them; hnswlib's updatePoint does the like); without,
    /// the vector changes in place and keeps its links, which is right while vectors move a little
    /// (scores are always computed from the current vectors). Not safe while other threads search
    /// this index: change a `copy()`.
    public func update(_ id: Int, vector newVector: [Float], relink: Bool) throws {
        guard id >= 0 && id < count else { throw IndexError.unknownID(id) }
        guard newVector.count == dimension else { throw IndexError.dimensionMismatch(expected: dimension, got: newVector.count) }
        let v = metric == .cosine ? normalized(newVector) : newVector
        if !relink {
            v.withUnsafeBufferPointer { (vectors + id * dimension).update(from: $0.baseAddress!, count: dimension) }
            return
        }
        let n = Int32(id), top = Int(levels[id])
        // Its old neighbourhood loses the paths through it: remembered, repaired below.
        let oldLinks: [[Int32]] = (0...top).map { l in
            let p = links(n, l)
            return (0..<Int(p[0])).map { p[$0 + 1] }
        }
        let wasDeleted = deleted[id]
        if !wasDeleted { deleted[id] = true; deletedCount += 1 }
        try replace(slot: id, with: v)
        if wasDeleted { deleted[id] = true; deletedCount += 1 }
        // Each old neighbour chooses its links again among its own and the moved node's old
        // neighbours (hnswlib's repairConnectionsForUpdate does the like with two hops).
        for l in 0...top {
            let cap = l == 0 ? maxM0 : maxM
            for m in oldLinks[l] where m != n {
                let list = links(m, l)
                var ids = Set((0..<Int(list[0])).map { list[$0 + 1] })
                ids.formUnion(oldLinks[l])
                ids.remove(m)
                let base = UnsafePointer(vector(m))
                var candidates = ids.map { Neighbor(id: Int($0), score: score(base, $0)) }
                sortNeighbors(&candidates)
                let kept = selectNeighbors(candidates, limit: cap)
                list[0] = Int32(kept.count)
                for (k, s) in kept.enumerated() { list[k + 1] = Int32(s.id) }
            }
        }
    }

    /// Puts a new vector into a deleted slot and links it afresh from there.
    private func replace(slot: Int, with vector: [Float]) throws {
        guard deleted[slot] else { throw IndexError.invalidParameter("slot \(slot) is not deleted") }
        vector.withUnsafeBufferPointer { (vectors + slot * dimension).update(from: $0.baseAddress!, count: dimension) }
        deleted[slot] = false
        deletedCount -= 1
        let n = Int32(slot)
        let scratch = scratchPool.take()
        defer { scratchPool.give(back: scratch) }
        let q = UnsafePointer(self.vector(n))
        for l in 0...Int(levels[slot]) {
            // New outgoing links from a search that starts at the entry point, or, when the slot is
            // the entry point itself, at one of its own neighbours on this layer (which has the layer).
            var current: Int32
            if entryPoint == n {
                let own = links(n, l)
                guard own[0] > 0 else { continue }
                current = own[1]
            } else {
                current = entryPoint
            }
            var currentScore = score(q, current)
            if entryPoint != n {
                for upperLevel in stride(from: Int(maxLevel), to: l, by: -1) {
                    greedy(q, &current, &currentScore, level: upperLevel, locked: false, buffer: &scratch.linkBuffer)
                }
            }
            searchLayer(q, entry: current, entryScore: currentScore, ef: settings.efConstruction, level: l, scratch: scratch,
                        filter: nil, skipDeleted: false, locked: false)
            var candidates = scratch.results.drainSortedBestFirst()
            candidates.removeAll { $0.id == slot }
            let selected = selectNeighbors(candidates, limit: maxM)
            let own = links(n, l)
            own[0] = Int32(selected.count)
            for (k, s) in selected.enumerated() { own[k + 1] = Int32(s.id) }
            for s in selected { connect(Int32(s.id), to: n, level: l, locked: false) }
        }
    }
}

// MARK: - search scratch

/// Per-thread buffers of a search: visited tags with a generation (never cleared per query) and the
/// two heaps.
final class SearchScratch {
    private(set) var tags: UnsafeMutablePointer<UInt32> = .allocate(capacity: 1)
    private var tagCapacity = 0
    private(set) var generation: UInt32 = 0
    var candidates = BestHeap()
    var results = WorstHeap()
    var linkBuffer: [Int32] = []
    /// Unvisited neighbours of the node being expanded, and their scores (at most 2·M).
    let pending: UnsafeMutablePointer<Int32> = .allocate(capacity: 512)
    let pendingScores: UnsafeMutablePointer<Float> = .allocate(capacity: 512)

    deinit {
        tags.deallocate()
        pending.deallocate()
        pendingScores.deallocate()
    }

    func begin(capacity: Int) {
        if tagCapacity < capacity {
            tags.deallocate()
            tags = .allocate(capacity: capacity)
            tags.initialize(repeating: 0, count: capacity)
            tagCapacity = capacity
            generation = 0
        }
        generation &+= 1
        if generation == 0 {
            tags.update(repeating: 0, count: tagCapacity)
            generation = 1
        }
    }
}

/// Reuses scratches across queries and threads.
final class ScratchPool: @unchecked Sendable {
    private var free: [SearchScratch] = []
    private let lock = NSLock()

    /// A scratch for one search or insertion (`searchLayer` sizes and resets it).
    func take() -> SearchScratch {
        lock.locked { free.popLast() } ?? SearchScratch()
    }

    func give(back s: SearchScratch) { lock.locked { free.append(s) } }
}

/// The order of a `ScoreHeap`: which of two (score, id) entries sits nearer the top.
protocol HeapOrder {
    static func above(_ s1: Float, _ i1: Int32, _ s2: Float, _ i2: Int32) -> Bool
}

/// Best on top (higher score, ties to the smaller id): the candidates to expand.
enum BestFirst: HeapOrder {
    @inline(__always) static func above(_ s1: Float, _ i1: Int32, _ s2: Float, _ i2: Int32) -> Bool {
        s1 > s2 || (s1 == s2 && i1 < i2)
    }
}

/// Worst on top (lower score, ties to the larger id): the best results so far, bounded by evicting the top.
enum WorstFirst: HeapOrder {
    @inline(__always) static func above(_ s1: Float, _ i1: Int32, _ s2: Float, _ i2: Int32) -> Bool {
        s1 < s2 || (s1 == s2 && i1 > i2)
    }
}

/// Storage of a `ScoreHeap`: two raw arrays freed with the object.
final class HeapStorage {
    let scores: UnsafeMutablePointer<Float>, ids: UnsafeMutablePointer<Int32>, capacity: Int
    init(capacity: Int) {
        self.capacity = capacity
        scores = .allocate(capacity: capacity)
        ids = .allocate(capacity: capacity)
    }
    deinit { scores.deallocate(); ids.deallocate() }
}

/// A binary heap of (score, id) pairs in two raw arrays, ordered by `Order`; entries move by
/// holes, not swaps. Not a value type: a copy shares the storage but not the count, so a copy must
/// be written back before the original is used again (the scratch's heaps are copied into a
/// search's locals and written back at its end; nothing else copies one). Raw pointers, not arrays: the
/// uniqueness checks and out-of-line `swapAt` of arrays took a fifth of an HNSW build (perf).
struct ScoreHeap<Order: HeapOrder> {
    private var storage: HeapStorage
    private var scores: UnsafeMutablePointer<Float>
    private var ids: UnsafeMutablePointer<Int32>
    private var capacity: Int
    private(set) var count = 0

    init(capacity: Int = 64) {
        storage = HeapStorage(capacity: max(1, capacity))
        scores = storage.scores
        ids = storage.ids
        self.capacity = storage.capacity
    }

    /// Score of the top entry (the worst result for `WorstFirst`).
    var topScore: Float { scores[0] }

    mutating func clear() { count = 0 }

    private mutating func grow() {
        let bigger = HeapStorage(capacity: capacity * 2)
        bigger.scores.update(from: scores, count: count)
        bigger.ids.update(from: ids, count: count)
        storage = bigger
        scores = bigger.scores
        ids = bigger.ids
        capacity = bigger.capacity
    }

    @inline(__always) mutating func push(_ s: Float, _ id: Int32) {
        if count == capacity { grow() }
        var c = count
        count += 1
        while c > 0 {
            let p = (c - 1) / 2
            guard Order.above(s, id, scores[p], ids[p]) else { break }
            scores[c] = scores[p]; ids[c] = ids[p]
            c = p
        }
        scores[c] = s; ids[c] = id
    }

    /// Removes the top entry and returns it.
    @inline(__always) mutating func pop() -> (Float, Int32)? {
        guard count > 0 else { return nil }
        let top = (scores[0], ids[0])
        count -= 1
        if count > 0 { siftDown(scores[count], ids[count]) }
        return top
    }

    /// Replaces the top entry by (s, id): a pop and a push in one pass (the bounded result heap
    /// taking a better candidate in place of its worst).
    @inline(__always) mutating func replaceTop(_ s: Float, _ id: Int32) {
        siftDown(s, id)
    }

    /// Places (s, id) from the root down into the hole at the top.
    @inline(__always) private mutating func siftDown(_ s: Float, _ id: Int32) {
        var p = 0
        let n = count
        while true {
            let l = 2 * p + 1
            if l >= n { break }
            var t = l
            if l + 1 < n && Order.above(scores[l + 1], ids[l + 1], scores[l], ids[l]) { t = l + 1 }
            guard Order.above(scores[t], ids[t], s, id) else { break }
            scores[p] = scores[t]; ids[p] = ids[t]
            p = t
        }
        scores[p] = s; ids[p] = id
    }
}

typealias BestHeap = ScoreHeap<BestFirst>
typealias WorstHeap = ScoreHeap<WorstFirst>

extension ScoreHeap where Order == WorstFirst {
    /// Empties the heap, returning its entries best first (ties to the smaller id).
    mutating func drainSortedBestFirst() -> [Neighbor] {
        var out = [Neighbor](repeating: Neighbor(id: 0, score: 0), count: count)
        var i = count - 1
        while let (s, id) = pop() {
            out[i] = Neighbor(id: Int(id), score: s)
            i -= 1
        }
        return out
    }
}

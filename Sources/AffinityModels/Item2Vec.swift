import AffinityData
import AffinityLinalg
import Foundation

/// Item2Vec (Barkan & Koenigstein 2016): word2vec's skip-gram with negative sampling over each
/// user's items in time order, as gensim trains it (frequent-item subsampling, a randomly shrunk
/// window per centre item, negatives from the unigram distribution to the power 0.75, a learning
/// rate decaying linearly to `minLearningRate`). A user is the mean of their items' normalised
/// vectors, so a score is the mean cosine similarity to the user's items.
///
/// Training runs on `threads` threads much as word2vec and gensim do it ("Hogwild"): the sequences
/// are cut into one contiguous shard per thread (equal token counts), each thread walks its shard
/// with its own seeded random stream and updates the shared input vectors without locks (a lost
/// update now and then is part of the method), and its learning rate decays with its own shard's
/// progress. The output vectors (which the popular items' rows make the contended ones) are a copy
/// per thread whose changes are summed into the shared ones `mergesPerEpoch` times an epoch. With
/// `threads=1` it is one seeded sequential pass per epoch: the same seed gives the same model, bit
/// for bit; with more threads the result varies slightly between runs. Each step is one C kernel
/// (`Kernels.sgnsStep`: the dot products, sigmoid and both updates for the true item and its
/// negatives).
public struct Item2Vec: FactorizationRecommender, TrainingDataRecommender {
    public struct Configuration: ModelConfiguration {
        /// One line per setting for `affinity train --help`.
        public static let settingHelp: [String: String] = [
            "dimension": "vector width",
            "window": "largest centre-context distance",
            "negatives": "negative samples per pair",
            "epochs": "passes over the sequences",
            "subsample": "frequent-item subsampling (0 = off)",
            "learningRate": "initial step size",
            "minLearningRate": "final step size (linear decay)",
            "seed": "initialisation and sampling",
            "threads": "1 = deterministic; more (0 = all) = lock-free",
        ]

        public var dimension: Int = 64
        /// Largest distance between a centre item and a context item.
        public var window: Int = 10
        /// Negative samples per (centre, context) pair.
        public var negatives: Int = 10
        /// 60: on ml-1m, 20 epochs (the gensim reference's count) reached only Recall@20 0.124, as gensim itself
        /// did in the same session; the validation split carved from train prefers 60 (README).
        public var epochs: Int = 60
        /// Subsampling threshold of frequent items (gensim's `sample`); 0 keeps every item.
        public var subsample: Double = 1e-3
        public var learningRate: Double = 0.025
        public var minLearningRate: Double = 0.0001
        public var seed: UInt64 = 42
        /// Training threads (0 = all cores). 1, the default, is the deterministic sequential pass:
        /// several threads are faster but not reproducible bit for bit (lock-free updates).
        public var threads: Int = 1

        public init() {}
        public func validate() throws {
            for (name, v) in [("dimension", dimension), ("window", window), ("negatives", negatives)] where v <= 0 {
                throw ModelError.invalidSetting(name: name, reason: "must be positive, got \(v)")
            }
            guard epochs >= 0 else { throw ModelError.invalidSetting(name: "epochs", reason: "must not be negative") }
            guard subsample >= 0 else { throw ModelError.invalidSetting(name: "subsample", reason: "must not be negative") }
            guard learningRate > 0, minLearningRate >= 0 else { throw ModelError.invalidSetting(name: "learningRate", reason: "must be positive") }
        }
    }

    public static let modelType = "item2vec"
    public let configuration: Configuration
    public let interactions: SparseMatrix
    public let factors: FactorModel

    public init(configuration: Configuration, interactions: SparseMatrix, factors: FactorModel) {
        self.configuration = configuration
        self.interactions = interactions
        self.factors = factors
    }

    /// Trains on `data.sequences` (time order when the data came from a log with timestamps).
    public static func fit(_ data: TrainingData, configuration: Configuration, progress: TrainingProgress.Handler?) throws -> Item2Vec {
        try fit(sequences: data.sequences, interactions: data.interactions, configuration: configuration, progress: progress)
    }

    /// Reports about once a second inside an epoch; an example is a token of a sequence.
    public static func fit(sequences: [[Int]], interactions: SparseMatrix, configuration c: Configuration,
                           progress: TrainingProgress.Handler? = nil) throws -> Item2Vec {
        try c.validate()
        try MemoryBudget.check(bytes: Double(interactions.columnCount) * Double(c.dimension) * 4 * 2,
                               for: "Item2Vec with dimension=\(c.dimension) on \(interactions.columnCount) items")
        let n = interactions.columnCount, d = c.dimension
        var g = SeededGenerator(seed: c.seed)
        // Input vectors uniform in ±0.5/d (gensim), output vectors zero.
        var input = (0..<(n * d)).map { _ in (g.nextFloat() - 0.5) / Float(d) }
        var output = [Float](repeating: 0, count: n * d)
        var counts = [Int](repeating: 0, count: n)
        for s in sequences { for i in s { counts[i] += 1 } }
        let total = Double(counts.reduce(0, +))
        // Keep probability of each item under subsampling (word2vec's formula as gensim applies it).
        let keep: [Double] = counts.map { count in
            guard c.subsample > 0, count > 0 else { return 1 }
            let threshold = c.subsample * total
            return min(1, ((Double(count) / threshold).squareRoot() + 1) * threshold / Double(count))
        }
        // Unigram^0.75 table for negatives.
        let tableSize = 1 << 20
        var table = [Int32](repeating: 0, count: tableSize)
        let powered = counts.map { pow(Double($0), 0.75) }, norm = powered.reduce(0, +)
        var item = 0, cumulative = norm > 0 ? powered[0] / norm : 1
        for t in 0..<tableSize {
            table[t] = Int32(item)
            if Double(t + 1) / Double(tableSize) > cumulative && item < n - 1 {
                item += 1
                cumulative += powered[item] / norm
            }
        }
        let totalSteps = Double(max(1, c.epochs)) * total
        let tokensPerEpoch = Int(total)
        // One contiguous shard of sequences per thread, with about equal token counts.
        let threads = max(1, min(Parallelism.resolve(c.threads), sequences.count))
        var shards: [Range<Int>] = []
        var shardStart = 0, cumulativeTokens = 0
        for (s, sequence) in sequences.enumerated() {
            cumulativeTokens += sequence.count
            if shards.count < threads - 1, cumulativeTokens * threads >= (shards.count + 1) * tokensPerEpoch {
                shards.append(shardStart..<(s + 1))
                shardStart = s + 1
            }
        }
        shards.append(shardStart..<sequences.count)
        let shardRanges = shards, unigramTable = table
        let shardTokenCounts = shards.map { shard in sequences[shard].reduce(0) { $0 + $1.count } }
        let reporter = ReporterBox(ProgressReporter(progress, model: modelType, epochs: c.epochs, exampleName: "tokens"))
        // With several threads each keeps its own copy of the output vectors and the copies' changes
        // are summed into the shared ones `mergesPerEpoch` times an epoch: the true word and the
        // negatives are drawn from the popular items, whose output rows both threads otherwise kept
        // writing (cache lines moving between cores at every step: on ml-1m two threads ran slower
        // than one; with a copy each, 1.7-1.9x one). The input vectors stay shared, lock-free. Copies
        // that would take more than a quarter of the memory budget are not made: the threads then
        // share the output vectors too, as word2vec does.
        let shardCount = shardRanges.count
        let copyBytes = Double(shardCount) * Double(n * d) * 4
        let replicate = shardCount > 1 && copyBytes <= Double(MemoryBudget.bytes) / 4
            && Double(n * d) * 4 * 2 + copyBytes <= Double(MemoryBudget.bytes)
        let rounds = replicate ? Self.mergesPerEpoch : 1
        var replicas: [Float] = replicate ? Array(repeatElement(output, count: shardCount).joined()) : []
        for epoch in 0..<c.epochs {
            // Each shard's random stream and token count run on across the epoch's rounds.
            var generators = (0..<shardCount).map { SeededGenerator(seed: c.seed, stream: UInt64(epoch + 1) &+ (UInt64($0) << 32)) }
            var tokensDone = [Int](repeating: 0, count: shardCount)
            for round in 0..<rounds {
                input.withUnsafeMutableBufferPointer { inputBuffer in
                output.withUnsafeMutableBufferPointer { outputBuffer in
                replicas.withUnsafeMutableBufferPointer { replicaBuffer in
                generators.withUnsafeMutableBufferPointer { generatorBuffer in
                tokensDone.withUnsafeMutableBufferPointer { doneBuffer in
                    let w = SharedMutableBuffer(inputBuffer), shared = SharedMutableBuffer(outputBuffer)
                    let threadCopies = SharedMutableBuffer(replicaBuffer), gens = SharedMutableBuffer(generatorBuffer), dones = SharedMutableBuffer(doneBuffer)
                    Parallelism.forEachChunk(shardCount, threads: shardCount) { worker in
                        let shard = shardRanges[worker]
                        let shardTokens = shardTokenCounts[worker]
                        // This round's part of the shard.
                        let part = (shard.lowerBound + shard.count * round / rounds)..<(shard.lowerBound + shard.count * (round + 1) / rounds)
                        let o = replicate ? threadCopies.base.baseAddress! + worker * n * d : shared.base.baseAddress!
                        var eg = gens[worker]
                        var done = dones[worker]
                        defer { gens[worker] = eg; dones[worker] = done }
                        var hidden = [Float](repeating: 0, count: d)
                        var targets = [Int32](repeating: 0, count: c.negatives + 1)
                        hidden.withUnsafeMutableBufferPointer { e in targets.withUnsafeMutableBufferPointer { tp in
                            for s in part {
                                let sequence = sequences[s]
                                done += sequence.count
                                if worker == 0 && (s - shard.lowerBound) & 255 == 0 {
                                    let fraction = Double(done) / Double(max(1, shardTokens))
                                    reporter.during(epoch: epoch + 1, fraction: fraction,
                                                    examples: epoch * tokensPerEpoch + Int(fraction * Double(tokensPerEpoch)))
                                }
                                // The learning rate follows this shard's progress (the whole pass when there is one shard).
                                let progressed = Double(epoch) * total
                                    + (shardCount == 1 ? Double(done) : Double(done) * total / Double(max(1, shardTokens)))
                                let alpha = Float(max(c.minLearningRate, c.learningRate - (c.learningRate - c.minLearningRate) * progressed / totalSteps))
                                let kept = sequence.filter { keep[$0] >= 1 || eg.nextDouble() < keep[$0] }
                                for (position, center) in kept.enumerated() {
                                    let reduced = eg.next(below: c.window)
                                    let lo = max(0, position - c.window + reduced), hi = min(kept.count - 1, position + c.window - reduced)
                                    guard lo <= hi else { continue }
                                    for p in lo...hi where p != position {
                                        // gensim's skip-gram trains the context word's input vector to predict the
                                        // centre: the centre, then the negatives drawn (one that is the centre skipped).
                                        tp[0] = Int32(center)
                                        var count = 1
                                        for _ in 0..<c.negatives {
                                            let target = unigramTable[eg.next(below: tableSize)]
                                            if Int(target) != center { tp[count] = target; count += 1 }
                                        }
                                        Kernels.sgnsStep(input: w.base.baseAddress! + kept[p] * d, output: o, targets: tp.baseAddress!,
                                                         count: count, dimension: d, learningRate: alpha, scratch: e.baseAddress!)
                                    }
                                }
                            }
                        } }
                    }
                    if replicate { Self.mergeCopies(shared: shared, copies: threadCopies, count: n * d, threads: shardCount) }
                } } } } }
            }
            reporter.endOfEpoch(epoch + 1, examples: (epoch + 1) * tokensPerEpoch)
        }
        // Normalised item vectors; items never seen keep a zero vector.
        var items = Matrix(rows: n, columns: d, values: input)
        for i in 0..<n {
            if counts[i] == 0 { for k in 0..<d { items[i, k] = 0 }; continue }
            var s: Float = 0
            for k in 0..<d { s += items[i, k] * items[i, k] }
            let norm = max(s.squareRoot(), 1e-12)
            for k in 0..<d { items[i, k] /= norm }
        }
        let users = meanVectors(of: (0..<interactions.rowCount).map { interactions.row($0).map { Int($0) } }, items: items)
        return Item2Vec(configuration: c, interactions: interactions, factors: FactorModel(userFactors: users, itemFactors: items))
    }

    /// The user vector of a history: the mean of its items' normalised vectors.
    public func userFactors(history: [Int]) -> [Float] {
        Array(Self.meanVectors(of: [history.filter { $0 >= 0 && $0 < itemCount }], items: factors.itemFactors).values)
    }

    static func meanVectors(of histories: [[Int]], items: Matrix) -> Matrix {
        let d = items.columns
        var out = Matrix(rows: histories.count, columns: d)
        for (u, h) in histories.enumerated() where !h.isEmpty {
            let w = 1 / Float(h.count)
            for i in h { for k in 0..<d { out.values[u * d + k] += w * items.values[i * d + k] } }
        }
        return out
    }

    /// How many times an epoch several threads' copies of the output vectors are summed into the
    /// shared ones (each thread sees the others' updates to them that late).
    static let mergesPerEpoch = 16

    /// shared += Σₜ (copyₜ − shared), element by element, then every copy = shared: the changes the
    /// threads made to their copies since the last merge, each counted once. `copies` holds the
    /// copies one after another, `count` floats each. Elements are split over `threads`; each sum
    /// runs in copy order, so the result does not depend on which thread merges it.
    static func mergeCopies(shared: SharedMutableBuffer<Float>, copies: SharedMutableBuffer<Float>, count: Int, threads: Int) {
        let copyCount = copies.base.count / max(1, count)
        let threads = max(1, threads)
        Parallelism.forEachRange(count, grain: max(4096, (count + threads - 1) / threads), threads: threads) { range in
            for i in range {
                let base = shared[i]
                var sum = base
                for t in 0..<copyCount { sum += copies[t * count + i] - base }
                shared[i] = sum
                for t in 0..<copyCount { copies[t * count + i] = sum }
            }
        }
    }

    /// The progress reporter shared by the training threads (thread 0 reports inside an epoch).
    private final class ReporterBox: @unchecked Sendable {
        private var reporter: ProgressReporter
        private let lock = NSLock()
        init(_ reporter: ProgressReporter) { self.reporter = reporter }
        func during(epoch: Int, fraction: Double, examples: Int) {
            lock.locked { reporter.during(epoch: epoch, fraction: fraction, examples: examples) }
        }
        func endOfEpoch(_ epoch: Int, examples: Int) { lock.locked { reporter.endOfEpoch(epoch, examples: examples) } }
    }

}

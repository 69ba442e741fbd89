import AffinityData
import AffinityLinalg
import Foundation

/// Item2Vec (Barkan & Koenigstein 2016): word2vec's skip-gram with negative sampling over each
/// user's items in time order, as gensim trains it (frequent-item subsampling, a randomly shrunk
/// window per centre item, negatives from the unigram distribution to the power 0.75, a learning
/// rate decaying linearly to `minLearningRate`). A user is the mean of their items' normalised
/// vectors, so a score is the mean cosine similarity to the user's items.
///
/// Training is one seeded sequential pass per epoch, so the same seed gives the same model.
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
        var processed = 0.0
        var hidden = [Float](repeating: 0, count: d)
        var reporter = ProgressReporter(progress, model: modelType, epochs: c.epochs, exampleName: "tokens")
        let tokensPerEpoch = Int(total)
        for epoch in 0..<c.epochs {
            var eg = SeededGenerator(seed: c.seed, stream: UInt64(epoch + 1))
            var done = 0
            input.withUnsafeMutableBufferPointer { w in
                output.withUnsafeMutableBufferPointer { o in
                    hidden.withUnsafeMutableBufferPointer { e in
                        for (s, sequence) in sequences.enumerated() {
                            processed += Double(sequence.count)
                            done += sequence.count
                            if s & 255 == 0 {
                                reporter.during(epoch: epoch + 1, fraction: Double(done) / Double(max(1, tokensPerEpoch)),
                                                examples: epoch * tokensPerEpoch + done)
                            }
                            let alpha = Float(max(c.minLearningRate, c.learningRate - (c.learningRate - c.minLearningRate) * processed / totalSteps))
                            let kept = sequence.filter { keep[$0] >= 1 || eg.nextDouble() < keep[$0] }
                            for (position, center) in kept.enumerated() {
                                let reduced = eg.next(below: c.window)
                                let lo = max(0, position - c.window + reduced), hi = min(kept.count - 1, position + c.window - reduced)
                                guard lo <= hi else { continue }
                                for p in lo...hi where p != position {
                                    // gensim's skip-gram trains the context word's input vector to predict the centre.
                                    let word = kept[p]
                                    let wv = w.baseAddress! + word * d
                                    for k in 0..<d { e[k] = 0 }
                                    for s in 0...c.negatives {
                                        let target: Int
                                        let label: Float
                                        if s == 0 {
                                            target = center
                                            label = 1
                                        } else {
                                            target = Int(table[eg.next(below: tableSize)])
                                            if target == center { continue }
                                            label = 0
                                        }
                                        let ov = o.baseAddress! + target * d
                                        var dot: Float = 0
                                        for k in 0..<d { dot += wv[k] * ov[k] }
                                        let gradient = (label - sigmoid(dot)) * alpha
                                        for k in 0..<d {
                                            e[k] += gradient * ov[k]
                                            ov[k] += gradient * wv[k]
                                        }
                                    }
                                    for k in 0..<d { wv[k] += e[k] }
                                }
                            }
                        }
                    }
                }
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

    @inline(__always) private static func sigmoid(_ x: Float) -> Float {
        x > 6 ? 1 : (x < -6 ? 0 : 1 / (1 + exp(-x)))
    }
}

import AffinityData
import AffinityEval
import AffinityLinalg
import AffinityNN
import Foundation

/// The one training loop of the neural models: epochs over `examples` in a seeded order (a new
/// permutation each epoch from stream `epoch` of the seed), mini-batches, gradients zeroed before
/// and the optimiser stepped after each batch at the schedule's learning rate, progress about once a second and at each epoch's end,
/// validation after each epoch, and early stopping that restores the best epoch's parameters.
///
/// The model supplies only what is its own: `step` runs the forward and backward pass of one batch
/// (example indexes in, the batch's summed loss out) and `validate` scores the current parameters
/// (higher is better).
public struct TrainingLoop {
    public struct Settings: Sendable, Equatable {
        public var epochs: Int
        public var batchSize: Int
        public var seed: UInt64
        /// Stop after this many epochs without a better validation score (0: run every epoch; the
        /// best epoch's parameters are still restored when `validate` is given).
        public var patience: Int
        /// The optimiser's learning rate at each step (0-based over the whole run), from the rate it
        /// had when the run began; `.constant` leaves it alone.
        public var schedule: LearningRateSchedule

        public init(epochs: Int, batchSize: Int, seed: UInt64, patience: Int = 0, schedule: LearningRateSchedule = .constant) {
            self.epochs = epochs
            self.batchSize = batchSize
            self.seed = seed
            self.patience = patience
            self.schedule = schedule
        }
    }

    /// What the loop did: the validation score of each epoch run, and the epoch whose parameters
    /// were kept (1-based; the last when nothing was validated).
    public struct Outcome: Sendable, Equatable {
        public var validation: [Double]
        public var keptEpoch: Int
        public var losses: [Double]
    }

    public let settings: Settings
    public let parameters: [Parameter]
    public let optimizer: any Optimizer

    public init(settings: Settings, parameters: [Parameter], optimizer: any Optimizer) {
        self.settings = settings
        self.parameters = parameters
        self.optimizer = optimizer
    }

    /// Runs the loop. `step(batch, generator)` returns the batch's summed loss; the generator is the
    /// epoch's, for any further random choice the step makes (negatives, samples). With
    /// `restoreBest`, the parameters of the best validated epoch are restored at the end.
    @discardableResult
    public func run(examples: Int, model: String, exampleName: String, progress: TrainingProgress.Handler?,
                    restoreBest: Bool = true, validationName: String = "HR@10",
                    step: (_ batch: ArraySlice<Int>, _ generator: inout SeededGenerator) throws -> Double,
                    validate: (() throws -> Double)? = nil) rethrows -> Outcome {
        var outcome = Outcome(validation: [], keptEpoch: max(0, settings.epochs), losses: [])
        guard examples > 0, settings.epochs > 0 else { return outcome }
        var reporter = ProgressReporter(progress, model: model, epochs: settings.epochs, exampleName: exampleName,
                                        validationName: validationName)
        var best: (score: Double, epoch: Int, values: [Matrix])?
        var sinceBest = 0
        let baseRate = optimizer.learningRate
        var stepIndex = 0
        defer { optimizer.learningRate = baseRate }
        for epoch in 1...settings.epochs {
            var generator = SeededGenerator(seed: settings.seed, stream: UInt64(epoch))
            let order = generator.permutation(examples)
            var total = 0.0
            var start = 0
            while start < examples {
                let batch = order[start..<min(examples, start + settings.batchSize)]
                start += settings.batchSize
                for p in parameters { p.zeroGrad() }
                total += try step(batch, &generator)
                optimizer.learningRate = settings.schedule.rate(base: baseRate, step: stepIndex)
                stepIndex += 1
                optimizer.step(parameters)
                reporter.during(epoch: epoch, fraction: Double(min(start, examples)) / Double(examples),
                                examples: (epoch - 1) * examples + min(start, examples))
            }
            let score = try validate?()
            outcome.losses.append(total / Double(examples))
            reporter.endOfEpoch(epoch, examples: epoch * examples, loss: total / Double(examples), validationHitRate: score)
            outcome.keptEpoch = epoch
            guard let score else { continue }
            outcome.validation.append(score)
            if best == nil || score > best!.score {
                best = (score, epoch, restoreBest ? parameters.map(\.value) : [])
                sinceBest = 0
            } else {
                sinceBest += 1
                if settings.patience > 0 && sinceBest >= settings.patience { break }
            }
        }
        if restoreBest, let best {
            for (p, v) in zip(parameters, best.values) { p.value = v }
            outcome.keptEpoch = best.epoch
        }
        return outcome
    }

    /// `users` users (seeded, among those with at least two positives) each lend round(20 %) of
    /// their positives, at least one: the matrix without them and the lent items per user.
    public static func lendPositives(_ x: SparseMatrix, users count: Int, seed: UInt64) -> (SparseMatrix, [[Int]]) {
        var g = SeededGenerator(seed: seed, stream: 99)
        var order = (0..<x.rowCount).filter { x.rowLength($0) >= 2 }
        g.shuffle(&order)
        var targets = [[Int]](repeating: [], count: x.rowCount)
        for u in order.prefix(count) {
            var row = x.row(u).map { Int($0) }
            g.shuffle(&row)
            let n = min(row.count - 1, max(1, Int((0.2 * Double(row.count)).rounded())))
            targets[u] = Array(row.prefix(n)).sorted()
        }
        var rows = [Int32](), cols = [Int32]()
        for u in 0..<x.rowCount {
            let lent = Set(targets[u])
            for i in x.row(u) where !lent.contains(Int(i)) { rows.append(Int32(u)); cols.append(i) }
        }
        return (SparseMatrix(rowCount: x.rowCount, columnCount: x.columnCount, rows: rows, cols: cols), targets)
    }


    /// Early stopping for models trained on a users x items matrix `x` (LightGCN, AMP-CF): validates
    /// on `data.validationTargets` when the split has them, else on positives lent by
    /// `validationUsers` users (`lendPositives`, trained without them); with `refit`, trains again on
    /// every positive for the epoch count the lent positives chose. `train(matrix, validation,
    /// epochs)` is one training run; the kept run and its outcome (`keptEpoch` the chosen epoch) come back.
    public static func trainWithValidation<Trained>(_ data: TrainingData, matrix x: SparseMatrix, validationUsers: Int, seed: UInt64,
                                                    refit: Bool, epochs: Int,
                                                    train: (_ x: SparseMatrix, _ validation: EvaluationData?, _ epochs: Int) throws -> (Trained, Outcome))
        rethrows -> (Trained, Outcome) {
        var training = x
        var validation: EvaluationData?
        if let targets = data.validationTargets {
            let v = EvaluationData(history: x, targets: targets)
            if !v.evaluatedUsers.isEmpty { validation = v }
        } else if validationUsers > 0 {
            let (kept, targets) = lendPositives(x, users: validationUsers, seed: seed)
            let v = EvaluationData(history: kept, targets: targets)
            if !v.evaluatedUsers.isEmpty {
                training = kept
                validation = v
            }
        }
        var (trained, outcome) = try train(training, validation, epochs)
        if validation != nil && training.nonZeroCount != x.nonZeroCount && refit {
            let chosen = outcome.keptEpoch
            (trained, _) = try train(x, nil, chosen)
            outcome.keptEpoch = chosen
        }
        return (trained, outcome)
    }
}

import AffinityLinalg
import Foundation

/// What a fit reports while it runs: at the end of each epoch and, inside long epochs, about once a
/// second, so that a log shows the run is alive (epoch, examples per second, time left). Every
/// model reports through this one type; the CLI turns it into lines on stderr.
public struct TrainingProgress: Sendable, Equatable {
    public typealias Handler = @Sendable (TrainingProgress) -> Void

    /// The model's CLI name.
    public var model: String
    /// The epoch (iteration) running or just finished, 1-based.
    public var epoch: Int
    public var epochs: Int
    /// The share of this epoch done, 0...1 (1 at its end).
    public var epochFraction: Double
    /// Examples processed since the fit started, and what an example is ("positives", "tokens", "rows").
    public var examples: Int
    public var exampleName: String
    /// Seconds since the fit started.
    public var seconds: Double
    /// The finished epoch's mean loss, for models that compute one.
    public var loss: Double?
    /// The finished epoch's validation score (HR@10 for most models), when the model holds
    /// validation items out; `validationName` says which metric it is.
    public var validationHitRate: Double?
    public var validationName: String = "HR@10"

    public var isEpochEnd: Bool { epochFraction >= 1 }

    /// The share of the whole run done, 0...1.
    public var fractionDone: Double {
        epochs > 0 ? min(1, (Double(epoch - 1) + epochFraction) / Double(epochs)) : 1
    }

    public var examplesPerSecond: Double { seconds > 0 ? Double(examples) / seconds : 0 }

    /// Seconds left at the rate so far (nil before any work is done).
    public var remainingSeconds: Double? {
        let done = fractionDone
        return done > 0 ? seconds * (1 - done) / done : nil
    }
}

/// Builds `TrainingProgress` reports inside a fit: one clock for the run, and a limit of about
/// one report per `interval` seconds inside an epoch (epoch ends are always reported).
public struct ProgressReporter: Sendable {
    let handler: TrainingProgress.Handler?
    let model: String
    let epochs: Int
    let exampleName: String
    let interval: Double
    let validationName: String
    private let clock = Stopwatch()
    private var lastReport = 0.0

    public init(_ handler: TrainingProgress.Handler?, model: String, epochs: Int, exampleName: String, interval: Double = 1,
                validationName: String = "HR@10") {
        self.handler = handler
        self.validationName = validationName
        self.model = model
        self.epochs = epochs
        self.exampleName = exampleName
        self.interval = interval
    }

    public var seconds: Double { clock.seconds }

    /// A report inside epoch `epoch` (1-based) when `interval` has passed since the last one.
    public mutating func during(epoch: Int, fraction: Double, examples: Int) {
        guard let handler else { return }
        let now = clock.seconds
        guard now - lastReport >= interval else { return }
        lastReport = now
        handler(report(epoch: epoch, fraction: min(fraction, 0.999), examples: examples, seconds: now))
    }

    /// The report at the end of epoch `epoch` (1-based).
    public mutating func endOfEpoch(_ epoch: Int, examples: Int, loss: Double? = nil, validationHitRate: Double? = nil) {
        guard let handler else { return }
        lastReport = clock.seconds
        var r = report(epoch: epoch, fraction: 1, examples: examples, seconds: lastReport)
        r.loss = loss
        r.validationHitRate = validationHitRate
        handler(r)
    }

    private func report(epoch: Int, fraction: Double, examples: Int, seconds: Double) -> TrainingProgress {
        TrainingProgress(model: model, epoch: epoch, epochs: epochs, epochFraction: fraction, examples: examples,
                         exampleName: exampleName, seconds: seconds, loss: nil, validationHitRate: nil, validationName: validationName)
    }
}

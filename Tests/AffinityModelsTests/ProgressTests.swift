import AffinityData
import AffinityLinalg
import Foundation
import Testing
@testable import AffinityModels

/// Issue "As a newcomer would use it", item 4: every model reports progress through one type.
@Suite struct ProgressTests {
    final class Log: @unchecked Sendable {
        private var reports: [TrainingProgress] = []
        private let lock = NSLock()
        var handler: TrainingProgress.Handler { { [self] r in lock.locked { reports.append(r) } } }
        var all: [TrainingProgress] { lock.locked { reports } }
    }

    @Test func fractionRateAndTimeLeft() {
        let r = TrainingProgress(model: "bpr", epoch: 2, epochs: 4, epochFraction: 0.5, examples: 300, exampleName: "positives",
                                 seconds: 3, loss: nil, validationHitRate: nil)
        #expect(r.fractionDone == 0.375)
        #expect(r.examplesPerSecond == 100)
        #expect(abs(r.remainingSeconds! - 5) < 1e-9)
        #expect(!r.isEpochEnd)
    }

    @Test func insideAnEpochAtMostOneReportPerInterval() {
        let log = Log()
        var reporter = ProgressReporter(log.handler, model: "m", epochs: 2, exampleName: "rows", interval: 3600)
        for k in 0..<100 { reporter.during(epoch: 1, fraction: Double(k) / 100, examples: k) }
        reporter.endOfEpoch(1, examples: 100)
        reporter.during(epoch: 2, fraction: 0.5, examples: 150)
        reporter.endOfEpoch(2, examples: 200, loss: 0.25)
        let reports = log.all
        // The first call inside epoch 1 comes after a full interval only: none here; both ends always.
        #expect(reports.map(\.epoch) == [1, 2] && reports.allSatisfy(\.isEpochEnd))
        #expect(reports.last?.loss == 0.25 && reports.last?.examples == 200)
    }

    @Test func everyRegisteredModelReportsItsEnd() throws {
        var rows: [(user: String, item: String, rating: Float?, timestamp: Int64?)] = []
        var g = SeededGenerator(seed: 3)
        for u in 0..<40 { for k in 0..<6 { rows.append((user: "u\(u)", item: "i\(g.next(below: 30))", rating: nil, timestamp: Int64(k))) } }
        let data = TrainingData(log: InteractionLog(source: "t", rows: rows))
        let settings: [String: [String: String]] = [
            "ials": ["iterations": "3", "factors": "4"], "bpr": ["epochs": "3", "factors": "4"],
            "two-tower": ["epochs": "2", "dimension": "8", "hidden": "8", "batchSize": "16"],
            "item2vec": ["epochs": "2", "dimension": "8"],
            "sasrec": ["epochs": "2", "dimension": "8", "maxLength": "5", "threads": "1"],
            "lightgcn": ["epochs": "2", "dimension": "8", "validationUsers": "0"],
            "amp-cf": ["epochs": "2", "dimension": "8", "personas": "2", "negatives": "8", "validationUsers": "0"],
            "vq-rec": ["epochs": "2", "dimension": "8", "heads": "1", "hidden": "8", "subspaces": "4", "maxLength": "5", "threads": "1"],
            "online-mf": ["epochs": "2", "dimension": "8", "negatives": "4"],
        ]
        for name in ModelRegistry.names {
            let log = Log()
            // vq-rec's quantiser needs 256 items with text.
            let input = name == VQRec.modelType ? VQRecTests.ring(users: 40).0 : withItemVectors(data)
            _ = try ModelRegistry.fit(name, data: input, settings: settings[name] ?? [:], progress: log.handler)
            let ends = log.all.filter(\.isEpochEnd)
            let epochs = Int(settings[name]?["iterations"] ?? settings[name]?["epochs"] ?? "1")!
            #expect(ends.map(\.epoch) == Array(1...epochs), "\(name): \(ends.map(\.epoch))")
            #expect(ends.allSatisfy { $0.model == name && $0.examples > 0 && $0.seconds >= 0 }, "\(name)")
            #expect(ends.last?.fractionDone == 1, "\(name)")
        }
    }
}

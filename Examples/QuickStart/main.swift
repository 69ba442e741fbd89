// Affinity from Swift, end to end: a log, a seeded split, a model, a full-ranking evaluation and
// recommendations in raw item IDs. Run it with `swift run affinity-quickstart [LOG]`; without a
// LOG it uses synthetic data with planted taste clusters. The README shows this file, and a test
// checks that both are the same and that the program runs.
import AffinityData
import AffinityEval
import AffinityModels
import Foundation

// 1. A log: yours, in any layout docs/formats.md lists (TSV, CSV, JSON Lines, MovieLens, .gz),
//    or generated.
let log: InteractionLog
if CommandLine.arguments.count > 1 {
    log = try InteractionReader.read(path: CommandLine.arguments[1])
} else {
    var synthetic = SyntheticSettings()
    synthetic.users = 600
    synthetic.items = 300
    log = try SyntheticGenerator.generate(synthetic).log
}

// 2. A seeded holdout split (docs/protocol.md): ratings >= 4 are positives, 20% of each user's
//    positives are held out for testing.
let split = try Splitter.split(log, settings: SplitSettings(strategy: .holdout, seed: 42))
let folder = SplitFolder(path: "quickstart", train: split.train, test: split.test)

// 3. Fit EASE on train; rank the whole catalogue for every test user.
let model = try EASE.fit(folder.train.matrix(), settings: ["lambda": "200"])
let evaluation = try EvaluationData(split: folder)
let report = try Evaluator(cutoffs: [10, 20]).evaluate(evaluation) { user, scores in
    model.scores(forUser: user, into: scores)
}
print(report.table(title: "EASE on \(log.source)"))

// 4. Recommendations and similar items in raw IDs, through the model's vocabularies.
let trained = TrainedModel(model: model, users: folder.train.users, items: folder.train.items)
let user = folder.train.users[0]
let (items, _) = try trained.recommend(user: user, k: 5)
print("top 5 for user \(user): " + items.map { trained.items[$0.index] }.joined(separator: ", "))
let item = folder.train.items[0]
print("similar to item \(item): " + (try trained.similar(item: item, k: 5)).map { trained.items[$0.index] }.joined(separator: ", "))

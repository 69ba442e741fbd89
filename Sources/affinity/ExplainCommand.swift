import AffinityModels
import ArgumentParser
import Foundation

struct ExplainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "explain",
        abstract: "Why a model recommends an item to a user, or which items an item pushes away (--anti).",
        discussion: """
        --user ID --item ID: the user's history items with their share of the item's score, largest first
          (EASE: weights B[h, item]; iALS: Hu et al. 2008 §5 terms; item-kNN: similarities).
        --item ID --anti: EASE's anti-affinity, the items whose score this item lowers most
          ("people who picked X rarely pick Y").
        """
    )

    @Option(name: .long, help: "Model folder.") var model: String
    @Option(name: .long, help: "Raw user ID.") var user: String?
    @Option(name: .long, help: "Raw item ID.") var item: String
    @Flag(name: .long, help: "List the item's anti-affinities instead.") var anti = false
    @Option(name: .shortAndLong, parsing: .unconditional, help: "Number of rows.") var k = 10
    @Flag(name: .long, help: "Print JSON on stdout.") var json = false

    func validate() throws {
        guard k > 0 else { throw ValidationError("-k must be positive, got \(k)") }
        guard anti != (user != nil) else { throw ValidationError("give --user ID (explain a recommendation) or --anti (anti-affinities), not both") }
    }

    func run() throws {
        let trained = try TrainedModel.load(from: model)
        guard let itemIndex = trained.items.index(of: item) else { throw ModelError.unknownItem(item) }
        struct Row: Encodable { var item: String; var title: String?; var weight: Float }
        func rows(_ list: [Contribution]) -> [Row] {
            list.map { Row(item: trained.items[$0.item], title: trained.catalog?.titles[trained.items[$0.item]], weight: $0.weight) }
        }
        let header = trained.catalog?.titles[item].map { "\(item) \($0)" } ?? item
        if anti {
            guard let model = trained.model as? any AntiAffinityRecommender else {
                throw CommandError("model type '\(trained.modelType)' has no anti-affinity weights (train an ease model)")
            }
            let list = rows(try model.antiAffinities(of: itemIndex, k: k))
            if json { try printJSON(["item": AnyEncodable(item), "anti_affinities": AnyEncodable(list)]); return }
            print("people who picked \(header) rarely pick:")
            for r in list { print(String(format: "  %9.4f  ", r.weight) + r.item + (r.title.map { "  \($0)" } ?? "")) }
            if list.isEmpty { print("  (no negative weights)") }
            return
        }
        guard let model = trained.model as? any ExplainableRecommender else {
            throw CommandError("model type '\(trained.modelType)' cannot explain its recommendations (use ease, ials or itemknn)")
        }
        guard let userIndex = trained.users.index(of: user!) else { throw ModelError.unknownUser(user!) }
        let parts = try model.explain(user: userIndex, item: itemIndex)
        let score = model.scores(forUser: userIndex)[itemIndex]
        let list = rows(Array(parts.prefix(k)))
        if json {
            try printJSON(["user": AnyEncodable(user!), "item": AnyEncodable(item), "score": AnyEncodable(score), "contributions": AnyEncodable(list)])
            return
        }
        print("\(trained.modelType) score of \(header) for user \(user!): \(String(format: "%.4f", score)); largest contributions of \(parts.count) history items:")
        for r in list { print(String(format: "  %9.4f  ", r.weight) + r.item + (r.title.map { "  \($0)" } ?? "")) }
    }
}

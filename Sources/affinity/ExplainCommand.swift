import AffinityModels
import ArgumentParser
import Foundation

struct ExplainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "explain",
        abstract: "Why a model recommends an item to a user, or which items an item pushes away (--anti).",
        discussion: """
        --user ID --item ID: the user's history items with their contribution to
          the item's score and, for a positive score, their share of it
          (contribution / score), largest first; the rows beyond -k are summed in
          one line (EASE: weights B[h, item]; iALS: Hu et al. 2008 section 5
          terms; item-kNN: similarities).
        --item ID --anti: EASE's anti-affinity, the items whose score this item
          lowers most ("people who picked X rarely pick Y").
        amp-cf, --user ID --item ID: the persona that serves the item, its attention,
          and the history items that characterise that persona.
        amp-cf, --user ID --personas: each persona with its history items (each
          history item goes to the persona with its largest attention on it),
          then the user's top -k recommendations, each traced to its persona.
        """
    )

    @Option(name: .long, help: "Model folder.") var model: String
    @Option(name: .long, help: "Raw user ID.") var user: String?
    @Option(name: .long, help: "Raw item ID.") var item: String?
    @Flag(name: .long, help: "List the item's anti-affinities instead.") var anti = false
    @Flag(name: .long, help: "amp-cf: the user's personas and recommendations by persona.") var personas = false
    @Option(name: .shortAndLong, parsing: .unconditional, help: "Number of rows.") var k = 10
    @Flag(name: .long, help: "Print JSON on stdout.") var json = false

    func validate() throws {
        guard k > 0 else { throw ValidationError("-k must be positive, got \(k)") }
        guard anti != (user != nil) else { throw ValidationError("give --user ID (explain a recommendation) or --anti (anti-affinities), not both") }
        guard personas || item != nil else { throw ValidationError("give --item ID (or --personas with an amp-cf model)") }
        guard !(personas && anti) else { throw ValidationError("--personas and --anti do not go together") }
    }

    func run() throws {
        let trained = try TrainedModel.load(from: model)
        // A persona model explains a user's recommendations by persona; --anti takes the usual path.
        if personas || (trained.model is any PersonaRecommender && !anti) {
            try explainPersonas(trained)
            return
        }
        let item = self.item!
        guard let itemIndex = trained.items.index(of: item) else { throw ModelError.unknownItem(item) }
        struct Row: Encodable { var item: String; var title: String?; var weight: Float; var share: Float? }
        func rows(_ list: [Contribution], score: Float? = nil) -> [Row] {
            list.map { c in
                Row(item: trained.items[c.item], title: trained.catalog?.titles[trained.items[c.item]], weight: c.weight,
                    share: score.flatMap { $0 > 0 ? c.weight / $0 : nil })
            }
        }
        func table(_ list: [Row], withShare: Bool) -> TextTable {
            var columns: [TextTable.Column] = [.init(name: "weight", rightAligned: true)]
            if withShare { columns.append(.init(name: "share", rightAligned: true)) }
            var t = TextTable(columns + [.init(name: "item"), .init(name: "title")])
            t.rows = list.map { r in
                [String(format: "%.4f", r.weight)] + (withShare ? [r.share.map { String(format: "%.1f%%", $0 * 100) } ?? "-"] : [])
                    + [r.item, r.title ?? "-"]
            }
            return t
        }
        let header = trained.catalog?.titles[item].map { "\(item) \($0)" } ?? item
        if anti {
            guard let model = trained.model as? any AntiAffinityRecommender else {
                throw CommandError("model type '\(trained.modelType)' has no anti-affinity weights (train an ease model)")
            }
            let list = rows(try model.antiAffinities(of: itemIndex, k: k))
            if json { try printJSON(["item": AnyEncodable(item), "anti_affinities": AnyEncodable(list)]); return }
            print("people who picked \(header) rarely pick (EASE weight, most negative first):")
            if list.isEmpty { print("(no negative weights)") } else { print(table(list, withShare: false).render()) }
            return
        }
        guard let model = trained.model as? any ExplainableRecommender else {
            throw CommandError("model type '\(trained.modelType)' cannot explain its recommendations (use ease, ials or itemknn)")
        }
        guard let userIndex = trained.users.index(of: user!) else { throw ModelError.unknownUser(user!) }
        let parts = try model.explain(user: userIndex, item: itemIndex)
        let score = model.scores(forUser: userIndex)[itemIndex]
        let list = rows(Array(parts.prefix(k)), score: score)
        let rest = parts.dropFirst(k).reduce(Float(0)) { $0 + $1.weight }
        let accounted = parts.reduce(Float(0)) { $0 + $1.weight }
        if json {
            try printJSON(["user": AnyEncodable(user!), "item": AnyEncodable(item), "score": AnyEncodable(score), "contributions": AnyEncodable(list),
                           "other_items": AnyEncodable(max(0, parts.count - k)), "other_weight": AnyEncodable(rest),
                           // What the contributions do not account for (iALS: none; a model with a bias: the bias).
                           "unexplained": AnyEncodable(score - accounted)])
            return
        }
        print("\(trained.modelType) score of \(header) for user \(user!): \(String(format: "%.4f", score)), from \(parts.count) history items:")
        var t = table(list, withShare: true)
        if parts.count > k {
            t.rows.append([String(format: "%.4f", rest), score > 0 ? String(format: "%.1f%%", rest / score * 100) : "-",
                           "(\(parts.count - k) other items)", "-"])
        }
        if abs(score - accounted) > 1e-4 * max(1, abs(score)) {
            t.rows.append([String(format: "%.4f", score - accounted), score > 0 ? String(format: "%.1f%%", (score - accounted) / score * 100) : "-",
                           "(not from history items)", "-"])
        }
        print(t.render())
        // A share of a score at or below zero has no meaning (items that push the score up and down
        // would both read as "shares" of a negative total): the weights alone are shown.
        if score <= 0 { Console.note("note: the score is not positive, so no shares are shown; the weights add up to it") }
    }

    /// amp-cf: the persona behind one item, or (--personas) every persona and the top -k by persona.
    func explainPersonas(_ trained: TrainedModel) throws {
        guard let model = trained.model as? any PersonaRecommender else {
            throw CommandError("model type '\(trained.modelType)' has one vector per user, no personas (train an amp-cf model)")
        }
        guard let userIndex = trained.users.index(of: user!) else { throw ModelError.unknownUser(user!) }
        func label(_ i: Int) -> String {
            let id = trained.items[i]
            return trained.catalog?.titles[id].map { "\(id) \($0)" } ?? id
        }
        struct Member: Encodable { var item: String; var title: String?; var attention: Float }
        func members(_ list: [Contribution]) -> [Member] {
            list.map { Member(item: trained.items[$0.item], title: trained.catalog?.titles[trained.items[$0.item]], attention: $0.weight) }
        }
        if let item, !personas {
            guard let itemIndex = trained.items.index(of: item) else { throw ModelError.unknownItem(item) }
            let a = model.attributions(of: [itemIndex], user: userIndex, size: k)[0]
            if json {
                try printJSON(["user": AnyEncodable(user!), "item": AnyEncodable(item), "persona": AnyEncodable(a.persona),
                               "attention": AnyEncodable(a.attention), "characteristic": AnyEncodable(members(a.characteristic))])
                return
            }
            print("\(label(itemIndex)) is served by persona \(a.persona + 1) of \(model.personaCount) (attention \(String(format: "%.2f", a.attention))), whose history items are:")
            for c in a.characteristic { print("  \(String(format: "%.2f", c.weight))  \(label(c.item))") }
            return
        }
        let groups = model.personas(user: userIndex)
        let recommended = try model.recommend(user: userIndex, k: k)
        let served = model.attributions(of: recommended.map(\.index), user: userIndex, size: 0).map(\.persona)
        if json {
            struct Persona: Encodable { var persona: Int; var history: [Member]; var recommendations: [String] }
            try printJSON(["user": AnyEncodable(user!), "personas": AnyEncodable(groups.enumerated().map { p, list in
                Persona(persona: p, history: members(list),
                        recommendations: zip(recommended, served).filter { $0.1 == p }.map { trained.items[$0.0.index] })
            })])
            return
        }
        print("user \(user!): \(model.personaCount) personas over \(groups.reduce(0) { $0 + $1.count }) history items")
        for (p, list) in groups.enumerated() {
            print("persona \(p + 1) (\(list.count) history items): " + list.prefix(5).map { label($0.item) }.joined(separator: "; "))
            let mine = zip(recommended, served).filter { $0.1 == p }
            for (r, _) in mine { print("   -> \(label(r.index))  (score \(String(format: "%.3f", r.score)))") }
        }
    }
}

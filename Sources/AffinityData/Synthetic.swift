import AffinityLinalg

/// Settings of the synthetic generator. Every field has a default; the defaults make the data set of
/// `affinity demo` (about 2,000 users, 1,000 items, 90,000 rated interactions).
public struct SyntheticSettings: Sendable, Codable, Equatable {
    /// Number of users.
    public var users: Int = 2_000
    /// Number of items.
    public var items: Int = 1_000
    /// Number of latent taste clusters; each item belongs to one and takes its genre name.
    public var clusters: Int = 8
    /// Median interactions per user (log-normal around it, clipped to [8, 8 x median]).
    public var medianInteractionsPerUser: Int = 30
    /// Exponent of the power-law (Zipf) item popularity: weight of the item of rank r is 1/(r+1)^s.
    public var popularityExponent: Double = 0.9
    /// Probability that an interaction is drawn from the user's own cluster rather than the whole catalogue.
    public var inClusterProbability: Double = 0.75
    /// Pairs of same-cluster substitutes: a user who consumes one of a pair never consumes the other
    /// (planted anti-affinity).
    public var substitutePairs: Int = 40
    /// Total interactions wanted (nil: each user draws about `medianInteractionsPerUser`). With a
    /// total, users' counts are drawn from the same log-normal shape, then scaled so that they add
    /// up to it (each user at least 1, at most items/2); a user whose draws keep hitting items they
    /// have (tiny catalogues) may end short, so the count written can be slightly below.
    public var interactions: Int? = nil
    /// First timestamp (seconds since 1970); interactions span about two years after it.
    public var startTimestamp: Int64 = 1_600_000_000
    /// Seed of every random choice.
    public var seed: UInt64 = 42

    public init() {}

    public func validate() throws {
        guard users > 0, items > 1 else { throw DataError.invalidSetting(name: "users/items", reason: "need at least 1 user and 2 items") }
        guard clusters > 0, clusters <= items else { throw DataError.invalidSetting(name: "clusters", reason: "must be in 1...items") }
        guard medianInteractionsPerUser > 0 else { throw DataError.invalidSetting(name: "medianInteractionsPerUser", reason: "must be positive") }
        guard (0...1).contains(inClusterProbability) else { throw DataError.invalidSetting(name: "inClusterProbability", reason: "must be in [0, 1]") }
        guard substitutePairs >= 0, substitutePairs * 2 <= items else { throw DataError.invalidSetting(name: "substitutePairs", reason: "needs 2 items per pair") }
        if let interactions {
            guard interactions >= users else { throw DataError.invalidSetting(name: "interactions", reason: "must be at least the number of users (\(users)): every user has one") }
            guard Double(interactions) <= Double(users) * Double(max(1, items / 2)) else {
                throw DataError.invalidSetting(name: "interactions", reason: "more than \(users) users can have with at most \(items / 2) items each")
            }
        }
    }

    /// Bytes the generator holds while it streams (items, samplers, per-user counts): what it
    /// needs whatever the number of interactions.
    public var streamingMemoryBytes: Double {
        // Per item: a title (~80 bytes), rank, weight, cluster, order, partner and two sampler entries;
        // per user: a count and its draw; one user's taken set.
        Double(items) * 200 + Double(users) * 16 + Double(items / 2) * 16
    }
}

/// A generated data set and the structure that was planted in it, so tests can check that a
/// model recovers it.
public struct SyntheticDataset: Sendable {
    /// Rated, timestamped interactions (ratings 1-5: in-cluster items are mostly rated 4-5).
    public var log: InteractionLog
    public var catalog: ItemCatalog
    /// Cluster of each user, by raw user ID.
    public var userCluster: [String: Int]
    /// Cluster of each item, by raw item ID.
    public var itemCluster: [String: Int]
    /// Planted substitute pairs (raw item IDs), never consumed by the same user.
    public var substitutes: [(String, String)]
    /// Genre name of each cluster.
    public var clusterNames: [String]
}

/// Generates interaction data with planted structure: latent taste clusters, power-law item
/// popularity, substitute pairs that no user consumes together, timestamps, titles and genres.
public enum SyntheticGenerator {
    static let genreNames = ["Drama", "Comedy", "Sci-Fi", "Thriller", "Romance", "Documentary", "Animation", "Horror",
                             "Western", "Musical", "Mystery", "War", "Fantasy", "Crime", "Adventure", "Family"]
    static let adjectives = ["Silent", "Crimson", "Hidden", "Last", "Golden", "Broken", "Midnight", "Distant", "Wild", "Frozen",
                             "Burning", "Quiet", "Electric", "Lonely", "Endless", "Secret", "Northern", "Paper", "Iron", "Velvet"]
    static let nouns = ["Harbor", "Garden", "Empire", "River", "Signal", "Mirror", "Orchard", "Station", "Frontier", "Lantern",
                        "Canyon", "Circus", "Archive", "Voyage", "Kingdom", "Machine", "Island", "Letter", "Storm", "Bridge"]

    /// The items of a generated data set: cluster, title and genre of each, the cluster names and
    /// the planted substitute pairs (item indices).
    public struct ItemPlan: Sendable {
        public var cluster: [Int]
        public var titles: [String]
        public var clusterNames: [String]
        public var substitutes: [(Int, Int)]
        /// Item `i`'s ID.
        public static func id(_ i: Int) -> String { "i\(i + 1)" }
        /// User `u`'s ID.
        public static func userID(_ u: Int) -> String { "u\(u + 1)" }
    }

    /// Generates the data set in memory (small sizes: tests, `affinity demo`).
    public static func generate(_ settings: SyntheticSettings = SyntheticSettings()) throws -> SyntheticDataset {
        var rows: [(user: String, item: String, rating: Float?, timestamp: Int64?)] = []
        var userCluster: [String: Int] = [:]
        let plan = try stream(settings) { user, cluster in
            userCluster[ItemPlan.userID(user)] = cluster
        } row: { user, item, rating, time in
            rows.append((ItemPlan.userID(user), ItemPlan.id(item), rating, time))
        }
        var catalog = ItemCatalog()
        for i in plan.cluster.indices {
            catalog.titles[ItemPlan.id(i)] = plan.titles[i]
            catalog.genres[ItemPlan.id(i)] = [plan.clusterNames[plan.cluster[i]]]
        }
        let log = InteractionLog(source: "synthetic(seed: \(settings.seed))", rows: rows)
        let itemClusterByID = Dictionary(uniqueKeysWithValues: plan.cluster.indices.map { (ItemPlan.id($0), plan.cluster[$0]) })
        return SyntheticDataset(log: log, catalog: catalog, userCluster: userCluster, itemCluster: itemClusterByID,
                                substitutes: plan.substitutes.map { (ItemPlan.id($0.0), ItemPlan.id($0.1)) }, clusterNames: plan.clusterNames)
    }

    /// Generates the data set user by user without holding the interactions: `user(u, cluster)`
    /// is called when user `u` starts, then `row(u, item, rating, timestamp)` for each of their
    /// interactions in time order. Memory is `settings.streamingMemoryBytes`, whatever the number
    /// of interactions. Returns the items' plan.
    @discardableResult
    public static func stream(_ settings: SyntheticSettings,
                              user startUser: (Int, Int) throws -> Void,
                              row: (Int, Int, Float, Int64) throws -> Void) throws -> ItemPlan {
        try settings.validate()
        var rng = SeededGenerator(seed: settings.seed)
        let nItems = settings.items, nUsers = settings.users, nClusters = settings.clusters

        // Items: cluster, popularity weight (Zipf over a random rank), title, genre.
        let itemCluster = (0..<nItems).map { $0 % nClusters }
        let rank = rng.permutation(nItems)
        let weight = (0..<nItems).map { 1.0 / pow(Double(rank[$0] + 1), settings.popularityExponent) }
        let clusterNames = (0..<nClusters).map { c in c < genreNames.count ? genreNames[c] : "Genre \(c + 1)" }
        let titles = (0..<nItems).map { i in
            let adjective = adjectives[i % adjectives.count]
            let noun = nouns[(i / adjectives.count) % nouns.count]
            let year = 1970 + (i * 7919) % 50
            let part = i / (adjectives.count * nouns.count)
            return "The \(adjective) \(noun)\(part > 0 ? " \(part + 1)" : "") (\(year))"
        }

        // Samplers: cumulative weights of the whole catalogue and of each cluster.
        let allItems = Array(0..<nItems)
        var clusterItems = [[Int]](repeating: [], count: nClusters)
        for i in allItems { clusterItems[itemCluster[i]].append(i) }
        let globalSampler = WeightedSampler(items: allItems, weights: weight)
        let clusterSamplers = clusterItems.map { WeightedSampler(items: $0, weights: $0.map { weight[$0] }) }

        // Substitute pairs: popular-ish items of the same cluster, each item in at most one pair.
        var partner = [Int](repeating: -1, count: nItems)
        var substitutes: [(Int, Int)] = []
        let byPopularity = allItems.sorted { rank[$0] < rank[$1] }
        var c = 0
        while substitutes.count < settings.substitutePairs {
            let cluster = c % nClusters
            let candidates = Array(byPopularity.lazy.filter { itemCluster[$0] == cluster && partner[$0] < 0 }.prefix(2))
            c += 1
            if candidates.count >= 2 {
                let a = candidates[0], b = candidates[1]
                partner[a] = b
                partner[b] = a
                substitutes.append((a, b))
            } else if c > nClusters * (settings.substitutePairs + 1) { break }
        }

        let counts = settings.interactions.map { userCounts(total: $0, settings: settings) }
        let twoYears: Int64 = 2 * 365 * 86_400
        var taken = Set<Int>()
        for u in 0..<nUsers {
            let cluster = rng.next(below: nClusters)
            try startUser(u, cluster)
            let sigma = 0.6
            let drawn = Double(settings.medianInteractionsPerUser) * exp(sigma * rng.nextGaussian())
            let n = counts?[u] ?? min(nItems / 2, max(8, min(8 * settings.medianInteractionsPerUser, Int(drawn.rounded()))))
            taken.removeAll(keepingCapacity: true)
            var time = settings.startTimestamp + Int64(rng.next(below: Int(twoYears / 2)))
            var attempts = 0
            while taken.count < n && attempts < n * 50 {
                attempts += 1
                let inCluster = rng.nextDouble() < settings.inClusterProbability
                let item = inCluster ? clusterSamplers[cluster].sample(&rng) : globalSampler.sample(&rng)
                if taken.contains(item) || (partner[item] >= 0 && taken.contains(partner[item])) { continue }
                taken.insert(item)
                let own = itemCluster[item] == cluster
                // In-taste items are liked (4-5) 90% of the time; others mostly get 1-3.
                let rating: Float = own ? (rng.nextDouble() < 0.9 ? Float(4 + rng.next(below: 2)) : Float(1 + rng.next(below: 3)))
                                        : (rng.nextDouble() < 0.3 ? Float(4 + rng.next(below: 2)) : Float(1 + rng.next(below: 3)))
                time += Int64(60 + rng.next(below: 3 * 86_400))
                try row(u, item, rating, time)
            }
        }
        return ItemPlan(cluster: itemCluster, titles: titles, clusterNames: clusterNames, substitutes: substitutes)
    }

    /// Each user's interaction count for a fixed total: log-normal draws (sigma 0.6, from their own
    /// random stream so the per-user draws of `stream` are unchanged), scaled to the total by
    /// cumulative rounding, then kept in [1, items/2] with the difference moved to users with room.
    static func userCounts(total: Int, settings: SyntheticSettings) -> [Int] {
        var rng = SeededGenerator(seed: settings.seed ^ 0x5CA1_E000_C0DE_0001)
        let raw = (0..<settings.users).map { _ in exp(0.6 * rng.nextGaussian()) }
        let scale = Double(total) / raw.reduce(0, +)
        let cap = max(1, settings.items / 2)
        var counts = [Int](repeating: 0, count: raw.count)
        var cumulative = 0.0, given = 0
        for u in raw.indices {
            cumulative += raw[u] * scale
            let upTo = Int(cumulative.rounded())
            counts[u] = min(cap, max(1, upTo - given))
            given += counts[u]
        }
        // Clipping moved the sum: add to (or take from) users with room, round-robin.
        var difference = total - counts.reduce(0, +)
        var u = 0
        while difference != 0 {
            if difference > 0, counts[u] < cap { counts[u] += 1; difference -= 1 }
            else if difference < 0, counts[u] > 1 { counts[u] -= 1; difference += 1 }
            u = (u + 1) % counts.count
        }
        return counts
    }
}

/// Draws items with probability proportional to their weight (binary search on cumulative sums).
struct WeightedSampler {
    let items: [Int]
    let cumulative: [Double]

    init(items: [Int], weights: [Double]) {
        self.items = items
        var sum = 0.0
        cumulative = weights.map { sum += $0; return sum }
    }

    func sample(_ rng: inout SeededGenerator) -> Int {
        let target = rng.nextDouble() * (cumulative.last ?? 0)
        var lo = 0, hi = cumulative.count - 1
        while lo < hi {
            let mid = (lo + hi) / 2
            if cumulative[mid] > target { hi = mid } else { lo = mid + 1 }
        }
        return items[lo]
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

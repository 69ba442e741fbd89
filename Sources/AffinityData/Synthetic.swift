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

    public static func generate(_ settings: SyntheticSettings = SyntheticSettings()) throws -> SyntheticDataset {
        try settings.validate()
        var rng = SeededGenerator(seed: settings.seed)
        let nItems = settings.items, nUsers = settings.users, nClusters = settings.clusters

        // Items: cluster, popularity weight (Zipf over a random rank), title, genre.
        let itemCluster = (0..<nItems).map { $0 % nClusters }
        let rank = rng.permutation(nItems)
        let weight = (0..<nItems).map { 1.0 / pow(Double(rank[$0] + 1), settings.popularityExponent) }
        let clusterNames = (0..<nClusters).map { c in c < genreNames.count ? genreNames[c] : "Genre \(c + 1)" }
        var catalog = ItemCatalog()
        var itemIDs: [String] = []
        for i in 0..<nItems {
            let id = "i\(i + 1)"
            itemIDs.append(id)
            let adjective = adjectives[i % adjectives.count]
            let noun = nouns[(i / adjectives.count) % nouns.count]
            let year = 1970 + (i * 7919) % 50
            let part = i / (adjectives.count * nouns.count)
            catalog.titles[id] = "The \(adjective) \(noun)\(part > 0 ? " \(part + 1)" : "") (\(year))"
            catalog.genres[id] = [clusterNames[itemCluster[i]]]
        }

        // Samplers: cumulative weights of the whole catalogue and of each cluster.
        let allItems = Array(0..<nItems)
        let clusterItems = (0..<nClusters).map { c in allItems.filter { itemCluster[$0] == c } }
        let globalSampler = WeightedSampler(items: allItems, weights: weight)
        let clusterSamplers = clusterItems.map { WeightedSampler(items: $0, weights: $0.map { weight[$0] }) }

        // Substitute pairs: popular-ish items of the same cluster, each item in at most one pair.
        var partner = [Int](repeating: -1, count: nItems)
        var substitutes: [(String, String)] = []
        let byPopularity = allItems.sorted { rank[$0] < rank[$1] }
        var c = 0
        while substitutes.count < settings.substitutePairs {
            let candidates = byPopularity.filter { itemCluster[$0] == c % nClusters && partner[$0] < 0 }
            c += 1
            if candidates.count >= 2 {
                let a = candidates[0], b = candidates[1]
                partner[a] = b
                partner[b] = a
                substitutes.append((itemIDs[a], itemIDs[b]))
            } else if c > nClusters * (settings.substitutePairs + 1) { break }
        }

        var rows: [(user: String, item: String, rating: Float?, timestamp: Int64?)] = []
        var userCluster: [String: Int] = [:]
        let twoYears: Int64 = 2 * 365 * 86_400
        for u in 0..<nUsers {
            let userID = "u\(u + 1)"
            let cluster = rng.next(below: nClusters)
            userCluster[userID] = cluster
            let sigma = 0.6
            let drawn = Double(settings.medianInteractionsPerUser) * exp(sigma * rng.nextGaussian())
            let n = min(nItems / 2, max(8, min(8 * settings.medianInteractionsPerUser, Int(drawn.rounded()))))
            var taken = Set<Int>()
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
                rows.append((userID, itemIDs[item], rating, time))
            }
        }
        let log = InteractionLog(source: "synthetic(seed: \(settings.seed))", rows: rows)
        let itemClusterByID = Dictionary(uniqueKeysWithValues: (0..<nItems).map { (itemIDs[$0], itemCluster[$0]) })
        return SyntheticDataset(log: log, catalog: catalog, userCluster: userCluster, itemCluster: itemClusterByID,
                                substitutes: substitutes, clusterNames: clusterNames)
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

/// Descriptive statistics of an interaction log (`affinity data stats`).
public struct LogStatistics: Sendable, Codable {
    public var source: String
    public var rows: Int
    public var users: Int
    public var items: Int
    /// Distinct (user, item) pairs; `rows - distinctPairs` repeated interactions were merged.
    public var distinctPairs: Int
    /// distinctPairs / (users x items).
    public var density: Double
    /// Count per rating value (as text, e.g. "4" or "3.5"), when the log has ratings.
    public var ratingCounts: [String: Int]?
    /// Rows with rating >= the threshold given, when the log has ratings.
    public var positives: Int?
    public var positiveThreshold: Float?
    public var firstTimestamp: Int64?
    public var lastTimestamp: Int64?
    /// Distinct items per user: minimum, median, mean, maximum.
    public var itemsPerUser: Summary
    /// Distinct users per item: minimum, median, mean, maximum.
    public var usersPerItem: Summary

    public struct Summary: Sendable, Codable {
        public var min: Int
        public var median: Double
        public var mean: Double
        public var max: Int

        init(_ values: [Int]) {
            let s = values.sorted()
            min = s.first ?? 0
            max = s.last ?? 0
            mean = s.isEmpty ? 0 : Double(s.reduce(0, +)) / Double(s.count)
            if s.isEmpty { median = 0 } else if s.count % 2 == 1 { median = Double(s[s.count / 2]) } else {
                median = Double(s[s.count / 2 - 1] + s[s.count / 2]) / 2
            }
        }
    }

    public init(_ log: InteractionLog, positiveThreshold: Float? = 4) {
        let m = log.matrix()
        source = log.source
        rows = log.count
        users = log.userCount
        items = log.itemCount
        distinctPairs = m.nonZeroCount
        density = users > 0 && items > 0 ? Double(distinctPairs) / (Double(users) * Double(items)) : 0
        if let ratings = log.ratings {
            var counts: [String: Int] = [:]
            for r in ratings { counts[InteractionWriter.formatRating(r), default: 0] += 1 }
            ratingCounts = counts
            if let t = positiveThreshold {
                self.positiveThreshold = t
                positives = ratings.filter { $0 >= t }.count
            }
        }
        if let times = log.timestamps {
            firstTimestamp = times.min()
            lastTimestamp = times.max()
        }
        itemsPerUser = Summary((0..<m.rowCount).map { m.rowLength($0) })
        usersPerItem = Summary(m.columnCounts())
    }
}

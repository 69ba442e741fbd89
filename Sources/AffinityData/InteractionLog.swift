import AffinityLinalg

/// Interactions in file order, columnar: row `r` is user `users[userIndices[r]]` with item
/// `items[itemIndices[r]]`, optionally a rating and a timestamp.
///
/// Vocabularies are in order of first appearance in the rows, which is what docs/protocol.md asks of
/// internal indexes. Every transformation keeps file order and re-derives the vocabularies, so a
/// filtered log is indexed exactly as if its rows had been read from a file.
public struct InteractionLog: Sendable {
    /// Where the rows came from (a path, or a description), for messages.
    public var source: String
    public private(set) var users: IDVocabulary
    public private(set) var items: IDVocabulary
    public private(set) var userIndices: [Int32]
    public private(set) var itemIndices: [Int32]
    /// Ratings per row, or nil when the source had none.
    public private(set) var ratings: [Float]?
    /// Timestamps per row (seconds), or nil when the source had none.
    public private(set) var timestamps: [Int64]?

    public var count: Int { userIndices.count }
    public var userCount: Int { users.count }
    public var itemCount: Int { items.count }

    public init(source: String, users: IDVocabulary, items: IDVocabulary, userIndices: [Int32], itemIndices: [Int32],
                ratings: [Float]? = nil, timestamps: [Int64]? = nil) {
        precondition(userIndices.count == itemIndices.count, "user and item columns differ in length")
        if let ratings { precondition(ratings.count == userIndices.count, "rating column differs in length") }
        if let timestamps { precondition(timestamps.count == userIndices.count, "timestamp column differs in length") }
        self.source = source
        self.users = users
        self.items = items
        self.userIndices = userIndices
        self.itemIndices = itemIndices
        self.ratings = ratings
        self.timestamps = timestamps
    }

    /// Builds a log from raw ID rows (user, item, rating, timestamp), in order.
    public init(source: String, rows: [(user: String, item: String, rating: Float?, timestamp: Int64?)]) {
        var users = IDVocabulary(), items = IDVocabulary()
        var u = [Int32](), i = [Int32](), r = [Float](), t = [Int64]()
        let hasRatings = rows.contains { $0.rating != nil }
        let hasTimes = rows.contains { $0.timestamp != nil }
        for row in rows {
            u.append(Int32(users.insert(row.user)))
            i.append(Int32(items.insert(row.item)))
            if hasRatings { r.append(row.rating ?? .nan) }
            if hasTimes { t.append(row.timestamp ?? 0) }
        }
        self.init(source: source, users: users, items: items, userIndices: u, itemIndices: i,
                  ratings: hasRatings ? r : nil, timestamps: hasTimes ? t : nil)
    }

    /// The rows whose positions are listed (in the order given), re-indexed by first appearance.
    public func selecting(rows: [Int]) -> InteractionLog {
        var newUsers = IDVocabulary(), newItems = IDVocabulary()
        var userMap = [Int32](repeating: -1, count: userCount)
        var itemMap = [Int32](repeating: -1, count: itemCount)
        var u = [Int32](), i = [Int32]()
        u.reserveCapacity(rows.count)
        i.reserveCapacity(rows.count)
        for r in rows {
            let ou = Int(userIndices[r]), oi = Int(itemIndices[r])
            if userMap[ou] < 0 { userMap[ou] = Int32(newUsers.insert(users[ou])) }
            if itemMap[oi] < 0 { itemMap[oi] = Int32(newItems.insert(items[oi])) }
            u.append(userMap[ou])
            i.append(itemMap[oi])
        }
        return InteractionLog(source: source, users: newUsers, items: newItems, userIndices: u, itemIndices: i,
                              ratings: ratings.map { rs in rows.map { rs[$0] } },
                              timestamps: timestamps.map { ts in rows.map { ts[$0] } })
    }

    /// The rows that satisfy `keep`, in file order, re-indexed.
    public func filter(_ keep: (Int) -> Bool) -> InteractionLog {
        selecting(rows: (0..<count).filter(keep))
    }

    /// Implicit positives (docs/protocol.md): rows with `rating >= minRating`; lower ratings are dropped,
    /// not treated as negatives. A log without ratings is returned unchanged (every row is positive).
    public func implicitPositives(minRating: Float) -> InteractionLog {
        guard let ratings else { return self }
        return filter { ratings[$0] >= minRating }
    }

    /// Drops users with fewer than `minimum` distinct items (docs/protocol.md: 5 positives).
    public func droppingUsers(withFewerThan minimum: Int) -> InteractionLog {
        guard minimum > 1 else { return self }
        let distinct = matrix().rowPointers
        return filter { r in
            let u = Int(userIndices[r])
            return distinct[u + 1] - distinct[u] >= minimum
        }
    }

    /// Drops items with fewer than `minimum` distinct users.
    public func droppingItems(withFewerThan minimum: Int) -> InteractionLog {
        guard minimum > 1 else { return self }
        let counts = matrix().columnCounts()
        return filter { counts[Int(itemIndices[$0])] >= minimum }
    }

    /// The users x items matrix. Repeated (user, item) rows are merged; with `binary` false each
    /// entry counts its repetitions, with `binary` true every entry is 1 (implicit feedback).
    public func matrix(binary: Bool = true) -> SparseMatrix {
        let m = SparseMatrix(rowCount: userCount, columnCount: itemCount, rows: userIndices, cols: itemIndices)
        return binary ? m.binarized() : m
    }

    /// Each user's rows, in file order.
    public func rowsByUser() -> [[Int]] {
        var out = [[Int]](repeating: [], count: userCount)
        for r in 0..<count { out[Int(userIndices[r])].append(r) }
        return out
    }

    /// Each user's items (in `users` / `items` index space, rows in file order); rows whose user or
    /// item is unknown there are left out. A leave-last-out `valid.tsv` read as each user's next items.
    public func itemsByUser(users target: IDVocabulary, items targetItems: IDVocabulary) -> [[Int]] {
        var out = [[Int]](repeating: [], count: target.count)
        let m = mapped(users: target, items: targetItems)
        for (u, i) in zip(m.users, m.items) { out[Int(u)].append(Int(i)) }
        return out
    }

    /// Re-expresses the rows in the index space of other vocabularies (for example a trained
    /// model's). Rows whose user or item is unknown there are skipped and counted.
    public func mapped(users target: IDVocabulary, items targetItems: IDVocabulary) -> (users: [Int32], items: [Int32], skipped: Int) {
        let userMap = users.ids.map { target.index(of: $0).map(Int32.init) ?? -1 }
        let itemMap = items.ids.map { targetItems.index(of: $0).map(Int32.init) ?? -1 }
        var u = [Int32](), i = [Int32]()
        var skipped = 0
        for r in 0..<count {
            let mu = userMap[Int(userIndices[r])], mi = itemMap[Int(itemIndices[r])]
            if mu < 0 || mi < 0 { skipped += 1; continue }
            u.append(mu)
            i.append(mi)
        }
        return (u, i, skipped)
    }
}

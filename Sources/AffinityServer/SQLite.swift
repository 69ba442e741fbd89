import Foundation
import VaporCSQLite

/// An error from SQLite, with the statement or step that failed and SQLite's own message.
public struct SQLiteError: Error, CustomStringConvertible {
    public var path: String
    public var code: Int32
    public var message: String
    public var description: String { "\(path): SQLite error \(code): \(message)" }
}

/// A value bound to a statement parameter.
enum SQLiteValue {
    case int(Int64)
    case double(Double)
    case text(String)
    case null
}

/// A minimal synchronous SQLite connection (the C API of the SQLite amalgamation that sqlite-nio
/// vendors). Not thread-safe: `SQLiteStore` serialises every use through one queue.
final class SQLiteConnection: @unchecked Sendable {
    private var handle: OpaquePointer?
    let path: String
    private var statements: [String: OpaquePointer] = [:]

    /// `sqlite3_initialize` once per process, through Swift's thread-safe lazy globals: SQLite
    /// would otherwise initialise itself inside the first concurrent opens, which ThreadSanitizer
    /// reports (its own double-checked start-up).
    private static let initialized: Int32 = sqlite_nio_sqlite3_initialize()

    init(path: String) throws {
        self.path = path
        _ = Self.initialized
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let rc = sqlite_nio_sqlite3_open_v2(path, &handle, flags, nil)
        guard rc == SQLITE_OK else {
            let message = handle.map { String(cString: sqlite_nio_sqlite3_errmsg($0)) } ?? "cannot open"
            sqlite_nio_sqlite3_close_v2(handle)
            handle = nil
            throw SQLiteError(path: path, code: rc, message: message)
        }
        sqlite_nio_sqlite3_busy_timeout(handle, 5_000)
    }

    deinit { close() }

    func close() {
        for (_, s) in statements { sqlite_nio_sqlite3_finalize(s) }
        statements = [:]
        if let h = handle { sqlite_nio_sqlite3_close_v2(h) }
        handle = nil
    }

    private func error(_ rc: Int32, _ what: String) -> SQLiteError {
        let message = handle.map { String(cString: sqlite_nio_sqlite3_errmsg($0)) } ?? "closed"
        return SQLiteError(path: path, code: rc, message: "\(message) (in: \(what))")
    }

    /// Runs one or more statements without results.
    func execute(_ sql: String) throws {
        var message: UnsafeMutablePointer<CChar>?
        let rc = sqlite_nio_sqlite3_exec(handle, sql, nil, nil, &message)
        if rc != SQLITE_OK {
            let text = message.map { String(cString: $0) } ?? "failed"
            sqlite_nio_sqlite3_free(message)
            throw SQLiteError(path: path, code: rc, message: "\(text) (in: \(sql.prefix(80)))")
        }
    }

    /// Runs a statement (cached by its text) with parameters, calling `row` for each result row.
    func run(_ sql: String, _ values: [SQLiteValue] = [], row: ((SQLiteRow) throws -> Void)? = nil) throws {
        let statement: OpaquePointer
        if let s = statements[sql] {
            statement = s
        } else {
            var s: OpaquePointer?
            let rc = sqlite_nio_sqlite3_prepare_v2(handle, sql, -1, &s, nil)
            guard rc == SQLITE_OK, let prepared = s else { throw error(rc, sql) }
            statements[sql] = prepared
            statement = prepared
        }
        defer {
            sqlite_nio_sqlite3_reset(statement)
            sqlite_nio_sqlite3_clear_bindings(statement)
        }
        for (n, value) in values.enumerated() {
            let position = Int32(n + 1)
            let rc: Int32
            switch value {
            case .int(let v): rc = sqlite_nio_sqlite3_bind_int64(statement, position, v)
            case .double(let v): rc = sqlite_nio_sqlite3_bind_double(statement, position, v)
            case .text(let t): rc = sqlite_nio_sqlite3_bind_text(statement, position, t, -1, transient)
            case .null: rc = sqlite_nio_sqlite3_bind_null(statement, position)
            }
            guard rc == SQLITE_OK else { throw error(rc, sql) }
        }
        while true {
            let rc = sqlite_nio_sqlite3_step(statement)
            if rc == SQLITE_DONE { return }
            guard rc == SQLITE_ROW else { throw error(rc, sql) }
            try row?(SQLiteRow(statement: statement))
        }
    }

    /// Rows changed by the last INSERT, UPDATE or DELETE.
    var changes: Int32 { sqlite_nio_sqlite3_changes(handle) }

    /// The rowid of the last insert.
    var lastInsertRowID: Int64 { sqlite_nio_sqlite3_last_insert_rowid(handle) }

    /// Runs `body` in one transaction: committed when it returns, rolled back when it throws.
    func transaction<T>(_ body: () throws -> T) throws -> T {
        try execute("BEGIN IMMEDIATE")
        do {
            let result = try body()
            try execute("COMMIT")
            return result
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
    }
}

/// Column access on the current result row.
struct SQLiteRow {
    let statement: OpaquePointer
    func int(_ column: Int32) -> Int64 { sqlite_nio_sqlite3_column_int64(statement, column) }
    /// A REAL column, nil when NULL.
    func double(_ column: Int32) -> Double? {
        sqlite_nio_sqlite3_column_type(statement, column) == SQLITE_NULL ? nil : sqlite_nio_sqlite3_column_double(statement, column)
    }
    func text(_ column: Int32) -> String? {
        guard let p = sqlite_nio_sqlite3_column_text(statement, column) else { return nil }
        return String(cString: p)
    }
}

/// SQLite's SQLITE_TRANSIENT: the library copies bound text before the call returns.
private let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

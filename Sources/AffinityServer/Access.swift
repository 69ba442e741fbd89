import Foundation
import Hummingbird
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Who may call which routes, and which files the service may be asked to read.
///
/// - Admin routes (`POST /v1/models`, `POST /v1/models/{id}/activate`, `DELETE /v1/models/{id}`,
///   `GET /v1/models`) need `Authorization: Bearer <adminKey>` when `adminKey` is set.
///   `affinity serve` refuses to listen on a non-loopback address without one.
/// - The read API (recommendations, similar items, events) needs `Authorization: Bearer <apiKey>`
///   (or the admin key) when `apiKey` is set.
/// - `/health`, `/metrics` and `/openapi.yaml` are open.
/// - Model folders and index files registered over HTTP must resolve (symbolic links followed)
///   inside one of `modelDirectories`; nil allows any path (library use, tests).
public struct AccessPolicy: Sendable {
    public var adminKey: String?
    public var apiKey: String?
    /// Canonical folders under which registrable models and indexes must lie (nil: anywhere).
    public private(set) var modelDirectories: [String]?

    public init(adminKey: String? = nil, apiKey: String? = nil, modelDirectories: [String]? = nil) throws {
        self.adminKey = adminKey
        self.apiKey = apiKey
        if let modelDirectories {
            self.modelDirectories = try modelDirectories.map { dir in
                guard let real = Self.realPath(dir) else {
                    throw APIError(.badRequest, "model directory '\(dir)' does not exist")
                }
                return real
            }
        }
    }

    /// An open policy: no keys, any path.
    public static let open = try! AccessPolicy()

    /// Compares a presented key with the expected one in time independent of where they differ.
    static func keyMatches(_ presented: String, _ expected: String) -> Bool {
        let a = Array(presented.utf8), b = Array(expected.utf8)
        var difference: UInt8 = a.count == b.count ? 0 : 1
        for i in 0..<b.count { difference |= (i < a.count ? a[i] : 0) ^ b[i] }
        return difference == 0
    }

    /// The bearer token of a request (`Authorization: Bearer KEY`), if any.
    static func bearer(_ request: Request) -> String? {
        guard let value = request.headers[.authorization] else { return nil }
        let parts = value.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        return String(parts[1]).trimmingCharacters(in: .whitespaces)
    }

    /// Throws 401 unless the request carries the admin key (when one is set).
    func requireAdmin(_ request: Request) throws {
        guard let adminKey else { return }
        guard let key = Self.bearer(request), Self.keyMatches(key, adminKey) else {
            throw APIError(.unauthorized, "this route needs the admin key: Authorization: Bearer <key>")
        }
    }

    /// Throws 401 unless the request carries the API key or the admin key (when an API key is set).
    func requireReader(_ request: Request) throws {
        guard let apiKey else { return }
        guard let key = Self.bearer(request), Self.keyMatches(key, apiKey) || (adminKey.map { Self.keyMatches(key, $0) } ?? false) else {
            throw APIError(.unauthorized, "this route needs an API key: Authorization: Bearer <key>")
        }
    }

    /// The absolute canonical path of a model folder or index file given over HTTP. A path outside
    /// the allowed folders, or one that does not exist, gets the same answer, so that a client
    /// learns nothing about files it may not use.
    func resolve(_ path: String, field: String) throws -> String {
        let refused = APIError(.forbidden, "\(field): not a model or index inside the service's model directories (affinity serve --model-dir)")
        guard !path.isEmpty, !path.utf8.contains(0) else { throw refused }
        guard let real = Self.realPath(path) else {
            if modelDirectories == nil { throw APIError(.unprocessableContent, "cannot load model: \(field) \(path): no such file or folder") }
            throw refused
        }
        if let modelDirectories {
            guard modelDirectories.contains(where: { real == $0 || real.hasPrefix($0.hasSuffix("/") ? $0 : $0 + "/") }) else { throw refused }
        }
        return real
    }

    /// `realpath(3)`: absolute, symbolic links resolved; nil when the path does not exist.
    public static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}

import Foundation
import Hummingbird
import Logging

/// The request context of every route: Hummingbird's core storage and nothing else.
public struct AffinityRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage

    public init(source: ApplicationRequestContextSource) {
        coreContext = CoreRequestContextStorage(source: source)
    }

    /// A context with no channel behind it, for in-process router tests.
    public init(logger: Logger) {
        coreContext = CoreRequestContextStorage(source: LoggerOnlySource(logger: logger))
    }

    struct LoggerOnlySource: RequestContextSource { var logger: Logger }
}

/// An error answered as `{"error": {"status": N, "message": "..."}}` with that HTTP status.
public struct APIError: Error, CustomStringConvertible {
    public var status: HTTPResponse.Status
    public var message: String
    public init(_ status: HTTPResponse.Status, _ message: String) {
        self.status = status
        self.message = message
    }
    public var description: String { "\(status.code) \(message)" }
}

// MARK: - Wire types (documented in openapi.yaml)

struct ItemOut: Encodable {
    var item: String
    var score: Float
    var title: String?
    var because: [ContributionOut]?
    /// The user's persona that serves the item (multi-persona models, with explain=true).
    var persona: Int?
}

struct ContributionOut: Encodable {
    var item: String
    var title: String?
    var weight: Float
}

struct ModelRef: Encodable {
    var id: Int
    var type: String
}

struct RecommendationsOut: Encodable {
    var user: String?
    var model: ModelRef
    /// "ann", "exact" or "popular".
    var retrieval: String
    var items: [ItemOut]
    /// Said when the model read less than it was given (a history cut to a sequential model's
    /// most recent items).
    var note: String? = nil
}

struct SimilarOut: Encodable {
    var item: String
    var model: ModelRef
    var items: [ItemOut]
}

struct HistoryRequest: Decodable {
    var history: [String]
    var k: Int?
    var exclude: [String]?
    var explain: Bool?
}

struct EventIn: Decodable {
    var user: String
    var item: String
    var type: String
    var timestamp: Int64?
    /// A `rating` event's rating (required there, refused elsewhere).
    var value: Double?
}

/// `POST /v1/events` takes `{"events": [...]}` or a bare array of events.
struct EventBatchIn: Decodable {
    var events: [EventIn]
    enum CodingKeys: String, CodingKey { case events }
    init(from decoder: any Decoder) throws {
        if var list = try? decoder.unkeyedContainer() {
            var out: [EventIn] = []
            while !list.isAtEnd { out.append(try list.decode(EventIn.self)) }
            events = out
        } else {
            events = try decoder.container(keyedBy: CodingKeys.self).decode([EventIn].self, forKey: .events)
        }
    }
}

struct EventsOut: Encodable {
    var accepted: Int
    /// Events whose item the active model does not know: stored, but not used until a model knows the item.
    var unknownItems: Int
    /// Rating events below the active model's positive threshold: stored, but not positives.
    var belowThreshold: Int
    var storedTotal: Int
    enum CodingKeys: String, CodingKey {
        case accepted
        case unknownItems = "unknown_items"
        case belowThreshold = "below_threshold"
        case storedTotal = "stored_total"
    }
}

struct RegisterModelIn: Decodable {
    var path: String
    var index: String?
    /// Activate right after registering.
    var activate: Bool?
}

struct ModelsOut: Encodable {
    var active: Int?
    var models: [ModelRecord]
}

struct HealthOut: Encodable {
    var status: String
    var model: ModelRef?
    var events: Int
}

struct ErrorOut: Encodable {
    struct Body: Encodable {
        var status: Int
        var message: String
    }
    var error: Body
}

// MARK: - Direct JSON for the answers of the hot routes

/// A wire type that writes its own JSON: byte for byte what `JSONEncoder` writes with sorted keys
/// and unescaped slashes (tested against it), without its boxing and key sorting, which cost about
/// a tenth of the server's time per recommendation answer under load. A NaN or infinite score
/// throws, as `JSONEncoder` does (the middleware answers 500).
protocol DirectJSON {
    func writeJSON(into out: inout [UInt8]) throws
}

enum DirectJSONWriter {
    static func string(_ s: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\""): out += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
            case UInt8(ascii: "\\"): out += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
            case 0x08: out += [UInt8(ascii: "\\"), UInt8(ascii: "b")]
            case 0x0C: out += [UInt8(ascii: "\\"), UInt8(ascii: "f")]
            case 0x0A: out += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
            case 0x0D: out += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
            case 0x09: out += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                out += Array("\\u00".utf8) + [hex[Int(b >> 4)], hex[Int(b & 15)]]
            default: out.append(b)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    static func number(_ x: Float, into out: inout [UInt8]) throws {
        guard x.isFinite else {
            throw EncodingError.invalidValue(x, .init(codingPath: [], debugDescription: "Unable to encode Float.\(x) directly in JSON."))
        }
        var text = x.description
        if text.hasSuffix(".0") { text.removeLast(2) }
        out += Array(text.utf8)
    }

    static func key(_ name: String, first: Bool, into out: inout [UInt8]) {
        if !first { out.append(UInt8(ascii: ",")) }
        string(name, into: &out)
        out.append(UInt8(ascii: ":"))
    }
}

extension ModelRef: DirectJSON {
    func writeJSON(into out: inout [UInt8]) throws {
        out.append(UInt8(ascii: "{"))
        DirectJSONWriter.key("id", first: true, into: &out)
        out += Array(String(id).utf8)
        DirectJSONWriter.key("type", first: false, into: &out)
        DirectJSONWriter.string(type, into: &out)
        out.append(UInt8(ascii: "}"))
    }
}

extension ContributionOut: DirectJSON {
    func writeJSON(into out: inout [UInt8]) throws {
        out.append(UInt8(ascii: "{"))
        DirectJSONWriter.key("item", first: true, into: &out)
        DirectJSONWriter.string(item, into: &out)
        if let title {
            DirectJSONWriter.key("title", first: false, into: &out)
            DirectJSONWriter.string(title, into: &out)
        }
        DirectJSONWriter.key("weight", first: false, into: &out)
        try DirectJSONWriter.number(weight, into: &out)
        out.append(UInt8(ascii: "}"))
    }
}

extension ItemOut: DirectJSON {
    func writeJSON(into out: inout [UInt8]) throws {
        out.append(UInt8(ascii: "{"))
        var first = true
        if let because {
            DirectJSONWriter.key("because", first: true, into: &out)
            try DirectJSONWriter.array(because, into: &out)
            first = false
        }
        DirectJSONWriter.key("item", first: first, into: &out)
        DirectJSONWriter.string(item, into: &out)
        if let persona {
            DirectJSONWriter.key("persona", first: false, into: &out)
            try DirectJSONWriter.number(Float(persona), into: &out)
        }
        DirectJSONWriter.key("score", first: false, into: &out)
        try DirectJSONWriter.number(score, into: &out)
        if let title {
            DirectJSONWriter.key("title", first: false, into: &out)
            DirectJSONWriter.string(title, into: &out)
        }
        out.append(UInt8(ascii: "}"))
    }
}

extension DirectJSONWriter {
    static func array<T: DirectJSON>(_ values: [T], into out: inout [UInt8]) throws {
        out.append(UInt8(ascii: "["))
        for (n, v) in values.enumerated() {
            if n > 0 { out.append(UInt8(ascii: ",")) }
            try v.writeJSON(into: &out)
        }
        out.append(UInt8(ascii: "]"))
    }
}

extension RecommendationsOut: DirectJSON {
    func writeJSON(into out: inout [UInt8]) throws {
        out.append(UInt8(ascii: "{"))
        DirectJSONWriter.key("items", first: true, into: &out)
        try DirectJSONWriter.array(items, into: &out)
        DirectJSONWriter.key("model", first: false, into: &out)
        try model.writeJSON(into: &out)
        if let note {
            DirectJSONWriter.key("note", first: false, into: &out)
            DirectJSONWriter.string(note, into: &out)
        }
        DirectJSONWriter.key("retrieval", first: false, into: &out)
        DirectJSONWriter.string(retrieval, into: &out)
        if let user {
            DirectJSONWriter.key("user", first: false, into: &out)
            DirectJSONWriter.string(user, into: &out)
        }
        out.append(UInt8(ascii: "}"))
    }
}

// MARK: - Encoding and decoding helpers

enum JSON {
    /// One encoder and decoder for every request (both are safe to share while unmodified).
    private static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }()
    private static let decoder = JSONDecoder()

    /// Encodes an answer. A value that cannot be encoded (a NaN score) throws, and the middleware
    /// answers 500: never a 2xx with a body other than the one the route meant.
    static func response<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
        let body: ByteBuffer
        if let fast = value as? any DirectJSON {
            var bytes: [UInt8] = []
            bytes.reserveCapacity(1024)
            try fast.writeJSON(into: &bytes)
            body = ByteBuffer(bytes: bytes)
        } else {
            body = ByteBuffer(bytes: try encoder.encode(value))
        }
        return Response(status: status, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: body))
    }

    /// What `JSONEncoder` with this file's settings writes for `value` (the oracle of `DirectJSON`).
    static func encoded<T: Encodable>(_ value: T) throws -> Data { try encoder.encode(value) }

    /// An error answer (its fields are plain strings and integers, so encoding cannot fail).
    static func error(_ status: HTTPResponse.Status, _ message: String) -> Response {
        let body = (try? response(ErrorOut(error: .init(status: status.code, message: message)), status: status))
        return body ?? Response(status: status)
    }

    /// The integer fields of the request bodies (`k`, `timestamp`).
    static let integerFields: Set<String> = ["k", "timestamp"]

    /// Decodes a request body, turning Codable's errors into messages that name the field.
    static func decode<T: Decodable>(_ type: T.Type, from buffer: ByteBuffer) throws -> T {
        guard buffer.readableBytes > 0 else { throw APIError(.badRequest, "request body is empty; expected JSON") }
        let data = Data(buffer.readableBytesView)
        if let number = nonIntegerNumber(in: data, keys: integerFields) {
            throw APIError(.badRequest, "\(number.field): expected an integer, got \(number.text.prefix(64))")
        }
        do {
            return try decoder.decode(T.self, from: data)
        } catch let error as DecodingError {
            if case .dataCorrupted(let context) = error, context.codingPath.isEmpty, let number = outOfRangeNumber(in: data) {
                throw APIError(.badRequest, "\(number.field): the number \(number.text.prefix(64)) is out of range")
            }
            throw APIError(.badRequest, describe(error))
        }
    }

    /// The first number in a JSON text that no Swift number type holds (1e400, or an integer
    /// beyond 64 bits), with the key it belongs to: Foundation reports those only as "not valid
    /// JSON", without the field.
    static func outOfRangeNumber(in data: Data) -> (field: String, text: String)? {
        firstNumber(in: data) { _, text in
            let isInteger = !text.contains(where: { ".eE".contains($0) })
            return !(isInteger ? (Int64(text) != nil || UInt64(text) != nil) : (Double(text)?.isFinite ?? false))
        }
    }

    /// The first number written with a fraction or exponent (`0.0`, `1e3`) under one of `keys`:
    /// Foundation decodes those into integer fields, but the document says integer.
    static func nonIntegerNumber(in data: Data, keys: Set<String>) -> (field: String, text: String)? {
        firstNumber(in: data) { key, text in keys.contains(key) && text.contains(where: { ".eE".contains($0) }) }
    }

    /// The first number token of a JSON text (with the key it belongs to) that `matches`.
    private static func firstNumber(in data: Data, where matches: (String, String) -> Bool) -> (field: String, text: String)? {
        let bytes = [UInt8](data)
        var i = 0, lastString = "", lastKey = "body"
        while i < bytes.count {
            let c = bytes[i]
            if c == UInt8(ascii: "\"") {
                var j = i + 1
                while j < bytes.count && bytes[j] != UInt8(ascii: "\"") { j += bytes[j] == UInt8(ascii: "\\") ? 2 : 1 }
                lastString = String(decoding: bytes[(i + 1)..<min(j, bytes.count)], as: UTF8.self)
                i = j + 1
            } else if c == UInt8(ascii: ":") {
                lastKey = lastString
                i += 1
            } else if c == UInt8(ascii: "-") || (c >= 0x30 && c <= 0x39) {
                var j = i
                while j < bytes.count, "+-.eE0123456789".utf8.contains(bytes[j]) { j += 1 }
                let text = String(decoding: bytes[i..<j], as: UTF8.self)
                if matches(lastKey, text) { return (lastKey, text) }
                i = j
            } else {
                i += 1
            }
        }
        return nil
    }

    static func describe(_ error: DecodingError) -> String {
        func path(_ codingPath: [any CodingKey]) -> String {
            var out = ""
            for key in codingPath {
                if let n = key.intValue { out += "[\(n)]" } else { out += out.isEmpty ? key.stringValue : ".\(key.stringValue)" }
            }
            return out.isEmpty ? "body" : out
        }
        switch error {
        case .keyNotFound(let key, let context):
            let parent = path(context.codingPath)
            return "missing field '\(key.stringValue)'" + (parent == "body" ? "" : " in \(parent)")
        case .typeMismatch(let type, let context):
            return "\(path(context.codingPath)): expected \(typeName(type))"
        case .valueNotFound(let type, let context):
            return "\(path(context.codingPath)): expected \(typeName(type)), found null"
        case .dataCorrupted(let context):
            if context.codingPath.isEmpty { return "malformed JSON: \(context.debugDescription)" }
            return "\(path(context.codingPath)): \(context.debugDescription)"
        @unknown default:
            return "malformed request body"
        }
    }

    private static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: return "a string"
        case is Int.Type, is Int64.Type: return "an integer"
        case is Bool.Type: return "true or false"
        default:
            let name = "\(type)"
            if name.hasPrefix("Array") { return "an array" }
            if name.hasPrefix("Dictionary") || name.contains("KeyedDecodingContainer") { return "an object" }
            return name
        }
    }
}

import Foundation

/// A model's hyperparameters: `Codable`, every field with a documented default (`init()`), and
/// a `validate()` that rejects values outside their range with the field's name.
public protocol ModelConfiguration: Codable, Sendable, Equatable {
    init()
    func validate() throws
}

extension ModelConfiguration {
    /// This configuration with `key=value` settings applied (the CLI's `--set`). Keys are the
    /// configuration's field names; an unknown key is an error that lists the known ones.
    public func applying(_ settings: [String: String]) throws -> Self {
        guard !settings.isEmpty else { return self }
        let encoded = try JSONEncoder().encode(self)
        guard var object = try JSONSerialization.jsonObject(with: encoded) as? [String: Any] else {
            throw ModelError.invalidSetting(name: "configuration", reason: "cannot be represented as key=value settings")
        }
        for (key, raw) in settings {
            guard let current = object[key] else {
                let known = object.keys.sorted()
                throw ModelError.invalidSetting(name: key, reason: known.isEmpty ? "this model has no settings" : "unknown; known settings: \(known.joined(separator: ", "))")
            }
            if current is String {
                object[key] = raw
            } else if let b = Bool(raw.lowercased()) {
                object[key] = b
            } else if let d = Double(raw), d.isFinite {
                object[key] = d == d.rounded() && abs(d) < 1e15 ? Int(d) as Any : d as Any
            } else {
                throw ModelError.invalidSetting(name: key, reason: "expected a number or true/false, got '\(raw)'")
            }
        }
        let data = try JSONSerialization.data(withJSONObject: object)
        let result: Self
        do {
            result = try JSONDecoder().decode(Self.self, from: data)
        } catch {
            throw ModelError.invalidSetting(name: settings.keys.sorted().joined(separator: ","), reason: "value of the wrong kind (an integer setting given a fraction?)")
        }
        try result.validate()
        return result
    }

    /// The configuration as compact, key-sorted JSON.
    public func jsonString() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: (try? encoder.encode(self)) ?? Data("{}".utf8), as: UTF8.self)
    }
}


import Foundation

/// A model's hyperparameters: `Codable`, every field with a documented default (`init()`), and
/// a `validate()` that rejects values outside their range with the field's name.
public protocol ModelConfiguration: Codable, Sendable, Equatable {
    init()
    func validate() throws
    /// A short description of each setting, by key, for help texts.
    static var settingHelp: [String: String] { get }
}

extension ModelConfiguration {
    public static var settingHelp: [String: String] { [:] }

    /// Each setting's key, default (as `--set` takes it) and description, in key order.
    public static func settingsTable() -> [(key: String, defaultValue: String, help: String)] {
        let defaults = Self()
        guard let data = try? JSONEncoder().encode(defaults),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return [] }
        let children = Dictionary(Mirror(reflecting: defaults).children.compactMap { c in c.label.map { ($0, c.value) } }) { a, _ in a }
        return object.keys.sorted().map { key in
            // The Swift value decides the kind (Foundation's numbers also cast to Bool on Linux).
            var value = "\(object[key]!)"
            switch children[key] {
            case let b as Bool: value = b ? "true" : "false"
            case let d as Double where d == d.rounded() && abs(d) < 1e15: value = String(Int(d))
            case let i as Int: value = String(i)
            case let u as UInt64: value = String(u)
            case let list as [Double]: value = list.isEmpty ? "\"\"" : list.map { String($0) }.joined(separator: ",")
            default: break
            }
            if let choice = children[key] as? any SettingChoice {
                let names = type(of: choice).choiceNames
                return (key, value, (settingHelp[key] ?? "") + (settingHelp[key]?.contains(names[0]) == true ? "" : " (\(names.joined(separator: "|")))"))
            }
            return (key, value, settingHelp[key] ?? "")
        }
    }
}

extension ModelConfiguration {
    /// This configuration with `key=value` settings applied (the CLI's `--set`). Keys are the
    /// configuration's field names; an unknown key is an error that lists the known ones.
    public func applying(_ settings: [String: String]) throws -> Self {
        guard !settings.isEmpty else { return self }
        let result: Self
        do {
            result = try JSONDecoder().decode(Self.self, from: try settingsJSON(settings))
        } catch let error as DecodingError {
            throw settingError(error, settings: settings)
        }
        try result.validate()
        return result
    }

    /// This configuration as JSON with the settings written over it (not yet decoded).
    private func settingsJSON(_ settings: [String: String]) throws -> Data {
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
            } else if current is [Any] {
                // A list setting: comma-separated numbers ("" for an empty list).
                let parts = raw.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
                if raw.trimmingCharacters(in: .whitespaces).isEmpty {
                    object[key] = [Any]()
                } else if let numbers = Optional(parts.compactMap { Double($0) }), numbers.count == parts.count, numbers.allSatisfy(\.isFinite) {
                    object[key] = numbers
                } else {
                    throw ModelError.invalidSetting(name: key, reason: "expected comma-separated numbers, got '\(raw)'")
                }
            } else if let b = Bool(raw.lowercased()) {
                object[key] = b
            } else if let i = Int(raw) {
                object[key] = i   // exactly, not through Double (seeds above 2^53)
            } else if let u = UInt64(raw) {
                object[key] = NSNumber(value: u)
            } else if let d = Double(raw), d.isFinite {
                object[key] = d == d.rounded() && abs(d) < 1e15 ? Int(d) as Any : d as Any
            } else {
                throw ModelError.invalidSetting(name: key, reason: "expected a number or true/false, got '\(raw)'")
            }
        }
        return try JSONSerialization.data(withJSONObject: object)
    }

    /// Names the setting a decoding failure is about and says what it accepts.
    private func settingError(_ error: DecodingError, settings: [String: String]) -> ModelError {
        let codingPath: [any CodingKey]
        switch error {
        case .typeMismatch(_, let c), .valueNotFound(_, let c), .dataCorrupted(let c): codingPath = c.codingPath
        case .keyNotFound(_, let c): codingPath = c.codingPath
        @unknown default: codingPath = []
        }
        // Foundation names the field for some failures only (an out-of-range number has no
        // path): then find it by applying the settings one at a time.
        let culprit = codingPath.first?.stringValue ?? settings.keys.sorted().first { key in
            (try? JSONDecoder().decode(Self.self, from: try settingsJSON([key: settings[key]!]))) == nil
        }
        guard let key = culprit, let raw = settings[key] else {
            return ModelError.invalidSetting(name: settings.keys.sorted().joined(separator: ","), reason: "a value of the wrong kind")
        }
        let current = Mirror(reflecting: self).children.first { $0.label == key }?.value
        if let choice = current as? any SettingChoice {
            return ModelError.invalidSetting(name: key, reason: "'\(raw)' is not one of \(type(of: choice).choiceNames.joined(separator: ", "))")
        }
        switch current {
        case is UInt64, is UInt, is UInt32:
            return ModelError.invalidSetting(name: key, reason: "expects a whole number from 0 to \(UInt64.max), got '\(raw)'")
        case is Int, is Int32, is Int64:
            return ModelError.invalidSetting(name: key, reason: "expects a whole number, got '\(raw)'")
        default:
            return ModelError.invalidSetting(name: key, reason: "cannot take '\(raw)'")
        }
    }

    /// The configuration as compact, key-sorted JSON.
    public func jsonString() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: (try? encoder.encode(self)) ?? Data("{}".utf8), as: UTF8.self)
    }
}


/// A setting whose values are named choices (an enum): its error messages list them.
public protocol SettingChoice {
    static var choiceNames: [String] { get }
}

extension SettingChoice where Self: CaseIterable & RawRepresentable, RawValue == String {
    public static var choiceNames: [String] { allCases.map(\.rawValue) }
}

/// AdamW multiplies every weight by 1 − learningRate·decay each step: a product of 1 or more would
/// flip or zero the weights. Refuses the first such decay by name (models with AdamW settings call it
/// from their `validate`).
func checkAdamWDecay(learningRate: Double, _ decays: [(name: String, value: Double)]) throws {
    for (name, v) in decays where learningRate * v >= 1 {
        throw ModelError.invalidSetting(name: name, reason: "learningRate x \(name) must be below 1, got \(learningRate * v)")
    }
}

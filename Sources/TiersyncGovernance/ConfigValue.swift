import Foundation

/// A governance value as compiled and signed: the tree HQ publishes, a country overlays
/// and a node applies. Plain JSON shapes, so a release means the same thing on every
/// node whatever version of Tiersync reads it. Numbers are doubles (JSON has one number
/// type; a priority of 1 and 1.0 are the same rule).
public enum ConfigValue: Sendable, Hashable, Codable, CustomStringConvertible {
    case string(String)
    case number(Double)
    case bool(Bool)
    case list([ConfigValue])
    case object([String: ConfigValue])

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let d = try? c.decode(Double.self) { self = .number(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let l = try? c.decode([ConfigValue].self) { self = .list(l) }
        else { self = .object(try c.decode([String: ConfigValue].self)) }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .string(let s): try c.encode(s)
        case .number(let d):
            if d == d.rounded(), abs(d) < 1e15 { try c.encode(Int64(d)) } else { try c.encode(d) }
        case .bool(let b): try c.encode(b)
        case .list(let l): try c.encode(l)
        case .object(let o): try c.encode(o)
        }
    }

    /// Compact, human-readable rendering (used in messages and tables).
    public var description: String {
        switch self {
        case .string(let s): return s
        case .number(let d): return d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : String(d)
        case .bool(let b): return b ? "true" : "false"
        case .list(let l): return "[" + l.map(\.description).joined(separator: ", ") + "]"
        case .object(let o): return "{" + o.keys.sorted().map { "\($0): \(o[$0]!.description)" }.joined(separator: ", ") + "}"
        }
    }

    public var stringValue: String? { if case .string(let s) = self { s } else { nil } }
    public var numberValue: Double? { if case .number(let d) = self { d } else { nil } }
    public var objectValue: [String: ConfigValue]? { if case .object(let o) = self { o } else { nil } }
    public var listValue: [ConfigValue]? { if case .list(let l) = self { l } else { nil } }

    /// What kind of value this is, for messages ("expected a duration, got a number").
    public var kindName: String {
        switch self {
        case .string: "a string"
        case .number: "a number"
        case .bool: "a boolean"
        case .list: "a list"
        case .object: "a mapping"
        }
    }

    /// The value at a dotted path of object keys (`allocation.key-accounts.then.sla`).
    public subscript(path path: String) -> ConfigValue? {
        var current: ConfigValue? = self
        for key in path.split(separator: ".", omittingEmptySubsequences: false) {
            guard case .object(let o)? = current else { return nil }
            current = o[String(key)]
        }
        return current
    }

    /// Replaces the value at an existing path; returns false (and changes nothing) when
    /// the path does not exist: overlays change fields, they never add any.
    @discardableResult
    public mutating func replace(path: String, with value: ConfigValue) -> Bool {
        let keys = path.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        return replace(keys[...], with: value)
    }

    private mutating func replace(_ keys: ArraySlice<String>, with value: ConfigValue) -> Bool {
        guard let key = keys.first, case .object(var o) = self, var child = o[key] else { return false }
        if keys.count == 1 {
            o[key] = value
        } else {
            guard child.replace(keys.dropFirst(), with: value) else { return false }
            o[key] = child
        }
        self = .object(o)
        return true
    }

    /// Every leaf path under this value with its value (objects descended, lists kept whole).
    public func leaves(prefix: String = "") -> [(path: String, value: ConfigValue)] {
        guard case .object(let o) = self, !o.isEmpty else { return [(prefix, self)] }
        return o.keys.sorted().flatMap { key in
            o[key]!.leaves(prefix: prefix.isEmpty ? key : prefix + "." + key)
        }
    }

    /// Deterministic JSON (sorted keys): what is signed and what digests are taken of.
    public func canonicalJSON() -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(self)) ?? Data()
    }
}

extension ConfigValue: ExpressibleByStringLiteral, ExpressibleByFloatLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(floatLiteral value: Double) { self = .number(value) }
    public init(integerLiteral value: Int) { self = .number(Double(value)) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
}

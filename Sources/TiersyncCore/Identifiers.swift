/// The identifier of a node (HQ, a country organisation or a dealer) within its tenant.
/// Node identifiers are stable: a node keeps its identifier when it moves in the tree, so
/// change origins and record routes never need rewriting.
public struct NodeID: Hashable, Comparable, Sendable, Codable, CustomStringConvertible, ExpressibleByStringLiteral {
    public let rawValue: String

    /// Creates an identifier, or throws when `rawValue` is not 1–64 characters of
    /// lower-case letters, digits, `-`, `_` or `.`.
    public init(validating rawValue: String) throws(IdentifierError) {
        guard Self.isValid(rawValue) else { throw IdentifierError(kind: "node", value: rawValue) }
        self.rawValue = rawValue
    }

    public init(stringLiteral value: String) { self.rawValue = value }
    public init(unchecked value: String) { self.rawValue = value }

    public static func isValid(_ s: String) -> Bool { isIdentifier(s) }
    public static func < (l: NodeID, r: NodeID) -> Bool { l.rawValue < r.rawValue }
    public var description: String { rawValue }

    public init(from decoder: Decoder) throws {
        let s = try decoder.singleValueContainer().decode(String.self)
        guard Self.isValid(s) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: IdentifierError(kind: "node", value: s).description))
        }
        rawValue = s
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
}

/// The identifier of a tenant (one company) on a hub.
public struct TenantID: Hashable, Comparable, Sendable, Codable, CustomStringConvertible, ExpressibleByStringLiteral {
    public let rawValue: String

    public init(validating rawValue: String) throws(IdentifierError) {
        guard isIdentifier(rawValue) else { throw IdentifierError(kind: "tenant", value: rawValue) }
        self.rawValue = rawValue
    }

    public init(stringLiteral value: String) { self.rawValue = value }
    public static func < (l: TenantID, r: TenantID) -> Bool { l.rawValue < r.rawValue }
    public var description: String { rawValue }

    public init(from decoder: Decoder) throws {
        let s = try decoder.singleValueContainer().decode(String.self)
        guard isIdentifier(s) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: IdentifierError(kind: "tenant", value: s).description))
        }
        rawValue = s
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
}

public struct IdentifierError: Error, Sendable, CustomStringConvertible {
    public let kind: String
    public let value: String
    public var description: String {
        "invalid \(kind) identifier '\(value)': use 1-64 characters of a-z, 0-9, '-', '_' or '.'"
    }
}

func isIdentifier(_ s: String) -> Bool {
    guard !s.isEmpty, s.utf8.count <= 64 else { return false }
    return s.utf8.allSatisfy { b in
        (b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z")) || (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9"))
            || b == UInt8(ascii: "-") || b == UInt8(ascii: "_") || b == UInt8(ascii: ".")
    }
}

/// Names given from now on (a tenant created, a node's enrollment token issued) may not
/// start with '.': "." and ".." are path segments (a node ".." made the console's
/// `/console/nodes/../revoke`, which a browser reads as `/console/revoke`), and a tenant ".x"
/// was a hidden file the backup's `tenants/*.sqlite` missed. Names already given are still
/// read everywhere (refused on the wire, such a node's changes would stop every pull naming it).
public enum NewName {
    /// Why `value` may not be given as a new `kind` name, or nil.
    public static func refusal(_ kind: String, _ value: String) -> String? {
        value.hasPrefix(".") ? "invalid \(kind) identifier '\(value)': a new name may not start with '.'" : nil
    }
}

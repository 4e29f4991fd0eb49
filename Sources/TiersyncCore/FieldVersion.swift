/// The version of one field's value: the hybrid timestamp of the write and the node that
/// made it. Versions are totally ordered by (timestamp, node), so every replica picks the
/// same winner without coordination; the node breaks ties between equal timestamps.
public struct FieldVersion: Hashable, Comparable, Sendable, Codable, CustomStringConvertible {
    public let hlc: HLCTimestamp
    public let node: NodeID

    public init(hlc: HLCTimestamp, node: NodeID) {
        self.hlc = hlc
        self.node = node
    }

    public static func < (l: FieldVersion, r: FieldVersion) -> Bool {
        l.hlc != r.hlc ? l.hlc < r.hlc : l.node < r.node
    }

    /// `"<hlc>@<node>"`: compact on the wire and readable in the database.
    public var description: String { "\(hlc.rawValue)@\(node.rawValue)" }

    public init?(parsing s: String) {
        guard let at = s.firstIndex(of: "@"), let raw = UInt64(s[..<at]) else { return nil }
        let node = String(s[s.index(after: at)...])
        guard NodeID.isValid(node) else { return nil }
        self.init(hlc: HLCTimestamp(rawValue: raw), node: NodeID(unchecked: node))
    }

    public init(from decoder: Decoder) throws {
        let s = try decoder.singleValueContainer().decode(String.self)
        guard let v = FieldVersion(parsing: s) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "invalid field version '\(s)': expected '<hlc>@<node>'"))
        }
        self = v
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

/// One write to one record, as it travels through the tree: made at `origin`, numbered
/// `originSeq` there, stamped `hlc`. (origin, originSeq) identifies a change everywhere,
/// which is what makes delivery idempotent: a receiver applies each identity once.
public struct Change: Hashable, Sendable, Codable {
    public enum Operation: String, Sendable, Codable, Hashable {
        /// Sets the listed fields; creates the record when it does not exist.
        case upsert
        /// Deletes the record: a tombstone that beats every older field write.
        case delete
    }

    public var origin: NodeID
    public var originSeq: Int64
    public var hlc: HLCTimestamp
    public var table: String
    public var recordID: String
    public var op: Operation
    /// The fields written (empty for a delete).
    public var fields: [String: FieldValue]
    /// For each written field, the version the writer overwrote locally. A receiver uses it
    /// to tell a causal overwrite (the writer had seen the current value) from a concurrent
    /// one, whose loser it keeps as a conflict.
    public var prior: [String: FieldVersion]
    /// The nodes that received this change on its way here, with when: lineage for
    /// operators ("why does HQ not see this yet?"). Not part of the change's identity.
    public var trail: [Hop]

    /// The sequence numbers a node may give its changes. The upper bound (2^53, exact in
    /// a JSON double) keeps every sum and difference of two sequences far from overflow.
    public static let sequenceRange: ClosedRange<Int64> = 1...(1 << 53)
    /// The most fields (and prior versions) one change may name on the wire: several times
    /// the widest table's (customers: 25).
    public static let maxFields = 128

    /// Hops a receiver keeps of a change's trail (the newest, its own last): one per level
    /// crossed, and a tree has few levels. Longer trails are cut, never refused — the trail
    /// is lineage, not content, and refusing at one level what the level below accepted
    /// would make them diverge.
    public static let maxTrailHops = 16

    /// The trail a receiver logs: the newest hops that fit beside its own `hop`.
    public func trail(receivedAt hop: Hop?) -> [Hop] {
        guard let hop else { return Array(trail.suffix(Self.maxTrailHops)) }
        return trail.suffix(Self.maxTrailHops - 1) + [hop]
    }

    public init(origin: NodeID, originSeq: Int64, hlc: HLCTimestamp, table: String, recordID: String,
                op: Operation, fields: [String: FieldValue] = [:], prior: [String: FieldVersion] = [:], trail: [Hop] = []) {
        self.trail = trail
        self.origin = origin
        self.originSeq = originSeq
        self.hlc = hlc
        self.table = table
        self.recordID = recordID
        self.op = op
        self.fields = fields
        self.prior = prior
    }

    /// The version every field of this change carries.
    public var version: FieldVersion { FieldVersion(hlc: hlc, node: origin) }

    enum CodingKeys: String, CodingKey {
        case origin, originSeq = "seq", hlc, table, recordID = "id", op, fields, prior, trail
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        origin = try c.decode(NodeID.self, forKey: .origin)
        originSeq = try c.decode(Int64.self, forKey: .originSeq)
        hlc = try c.decode(HLCTimestamp.self, forKey: .hlc)
        table = try c.decode(String.self, forKey: .table)
        recordID = try c.decode(String.self, forKey: .recordID)
        op = try c.decode(Operation.self, forKey: .op)
        fields = try c.decodeIfPresent([String: FieldValue].self, forKey: .fields) ?? [:]
        prior = try c.decodeIfPresent([String: FieldVersion].self, forKey: .prior) ?? [:]
        trail = try c.decodeIfPresent([Hop].self, forKey: .trail) ?? []
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(origin, forKey: .origin)
        try c.encode(originSeq, forKey: .originSeq)
        try c.encode(hlc, forKey: .hlc)
        try c.encode(table, forKey: .table)
        try c.encode(recordID, forKey: .recordID)
        try c.encode(op, forKey: .op)
        if !fields.isEmpty { try c.encode(fields, forKey: .fields) }
        if !prior.isEmpty { try c.encode(prior, forKey: .prior) }
        if !trail.isEmpty { try c.encode(trail, forKey: .trail) }
    }
}

/// One node a change passed through, and when it arrived there (ms since the epoch).
public struct Hop: Hashable, Sendable, Codable {
    public var node: NodeID
    public var atMillis: UInt64

    public init(node: NodeID, atMillis: UInt64) {
        self.node = node
        self.atMillis = atMillis
    }

    enum CodingKeys: String, CodingKey { case node, atMillis = "at" }
}

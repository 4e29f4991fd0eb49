import TiersyncCore

/// A signed governance document as stored: `body` is the envelope's JSON, byte for byte.
public struct StoredGovernanceDocument: Sendable, Equatable {
    public var kind: String
    public var key: String
    public var seq: Int
    public var body: String

    public init(kind: String, key: String, seq: Int, body: String) {
        self.kind = kind
        self.key = key
        self.seq = seq
        self.body = body
    }
}

/// One decision a node took about its governance (see `ts_gov_applied`).
public struct GovernanceApplication: Sendable, Equatable {
    public var release: Int?
    public var overlay: String?
    public var rollout: Int?
    /// applied, pending or refused.
    public var state: String
    public var message: String?
    /// The effective config's JSON (release ⊕ overlay), when applied.
    public var effective: String?
    public var appliedAtMillis: UInt64

    public init(release: Int?, overlay: String?, rollout: Int?, state: String, message: String?, effective: String?, appliedAtMillis: UInt64) {
        self.release = release
        self.overlay = overlay
        self.rollout = rollout
        self.state = state
        self.message = message
        self.effective = effective
        self.appliedAtMillis = appliedAtMillis
    }
}

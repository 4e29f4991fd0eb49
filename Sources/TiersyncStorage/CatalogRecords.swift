import TiersyncCore

// What the hub's catalog holds and answers, as plain values (either engine).

/// A node as the hub knows it.
public struct NodeRecord: Sendable, Equatable, Codable {
    public var tenant: TenantID
    public var node: NodeID
    public var parent: NodeID?
    public var role: String
    public var createdAtMillis: UInt64
    public var lastSeenMillis: UInt64?
    /// When the node was decommissioned (`admin decommission`): it keeps its place in the
    /// tree and its data, but has no credentials and can never enroll again. Its `role`
    /// then reads "dealer (decommissioned)", so every listing shows it.
    public var decommissionedAtMillis: UInt64? = nil

    public init(tenant: TenantID, node: NodeID, parent: NodeID?, role: String, createdAtMillis: UInt64,
                lastSeenMillis: UInt64? = nil, decommissionedAtMillis: UInt64? = nil) {
        self.tenant = tenant
        self.node = node
        self.parent = parent
        self.role = role
        self.createdAtMillis = createdAtMillis
        self.lastSeenMillis = lastSeenMillis
        self.decommissionedAtMillis = decommissionedAtMillis
    }
}

/// A tenant's settings in the catalog.
public struct TenantSettings: Sendable, Equatable {
    public var tenant: TenantID
    public var root: NodeID
    public var levels: Int
    /// Whether nodes below the root's children (dealers in a three-level tenant) may sync
    /// with HQ directly instead of through their parent.
    public var allowDirectSync: Bool
    public var releaseKey: String?

    public init(tenant: TenantID, root: NodeID, levels: Int, allowDirectSync: Bool, releaseKey: String?) {
        self.tenant = tenant
        self.root = root
        self.levels = levels
        self.allowDirectSync = allowDirectSync
        self.releaseKey = releaseKey
    }
}

/// What `revoke` / `decommission` took away from a node.
public struct Revocation: Sendable, Equatable {
    public var node: NodeID
    /// Credentials revoked (a node holds one; re-enrollment revokes the earlier ones).
    public var credentials: Int
    /// Unused enrollment tokens deleted.
    public var tokens: Int
    /// Set by `decommission`.
    public var decommissionedAtMillis: UInt64?

    public init(node: NodeID, credentials: Int, tokens: Int, decommissionedAtMillis: UInt64?) {
        self.node = node
        self.credentials = credentials
        self.tokens = tokens
        self.decommissionedAtMillis = decommissionedAtMillis
    }
}

/// Why a decommissioned node could not enroll (answered 409 `decommissioned`).
public struct NodeDecommissioned: Error, Sendable, Equatable, CustomStringConvertible {
    public var node: NodeID

    public init(node: NodeID) { self.node = node }
    public var description: String {
        "node '\(node)' was decommissioned and cannot enroll again; give a new node a new identifier"
    }
}

/// An authenticated caller.
public struct Principal: Sendable, Equatable {
    public var tenant: TenantID
    public var node: NodeID

    public init(tenant: TenantID, node: NodeID) {
        self.tenant = tenant
        self.node = node
    }
}

/// Why an enrollment token was not accepted.
public enum EnrollmentError: Error, Sendable, Equatable, CustomStringConvertible {
    case unknownToken, alreadyUsed, expired(atMillis: UInt64)
    case wrongParent(node: NodeID, parent: NodeID?, via: NodeID)
    /// The node enrolled under another parent since the token was issued: the token does
    /// not move it (`admin move-node` does).
    case enrolledElsewhere(node: NodeID)
    /// A store enrolling again (``EnrollRequest/expected``) brought a token for another node
    /// of its tenant: refused, and the token kept for the node it is for.
    case otherNode(token: NodeID, store: NodeID)

    /// Refuses a token that is not for `expecting`, a store enrolling again: another
    /// tenant's is unknown to it (as to a relaying country), another node's is named.
    public static func check(_ expecting: EnrollmentSubject?, tenant: String, node: String) throws {
        guard let expecting else { return }
        if expecting.tenant.rawValue != tenant { throw EnrollmentError.unknownToken }
        if expecting.node.rawValue != node { throw EnrollmentError.otherNode(token: NodeID(unchecked: node), store: expecting.node) }
    }

    public var description: String {
        switch self {
        case .otherNode(let token, let store):
            "this token enrolls '\(token)', but this store belongs to '\(store)': use a token issued for '\(store)' (`tiersync admin enroll-token --node \(store)`)"
        case .enrolledElsewhere(let node):
            "'\(node)' is enrolled under another parent than this token names; ask the hub admin for a new token"
        case .wrongParent(let node, let parent, let via):
            "this token enrolls '\(node)' under '\(parent?.rawValue ?? "the root")', not under '\(via)': enroll through that node's URL"
        case .unknownToken: "unknown enrollment token"
        case .alreadyUsed: "this enrollment token has already been used; ask the hub admin for a new one"
        case .expired: "this enrollment token has expired; ask the hub admin for a new one"
        }
    }
}

/// The last lag a node reported (``LagReport``), as the catalog keeps it.
public struct NodeLag: Sendable, Equatable {
    /// Changes waiting at the node to go upward.
    public var pending: Int64
    /// Age of the oldest of them when measured, in milliseconds.
    public var oldestPendingMillis: Int64
    /// When it was measured, on the receiving hub's clock (its receipt time less the
    /// report's own `measuredMillisAgo`).
    public var measuredAtMillis: UInt64
    /// The node's clock offset from its parent's, as it reported it (``LagReport/clockOffsetMillis``).
    public var clockOffsetMillis: Int64?

    public init(pending: Int64, oldestPendingMillis: Int64, measuredAtMillis: UInt64, clockOffsetMillis: Int64? = nil) {
        self.pending = pending
        self.oldestPendingMillis = oldestPendingMillis
        self.measuredAtMillis = measuredAtMillis
        self.clockOffsetMillis = clockOffsetMillis
    }

    /// The oldest pending change's age at `nowMillis`: it has kept ageing since it was
    /// measured, as long as anything was pending.
    public func oldestPendingMillis(at nowMillis: UInt64) -> Int64 {
        guard pending > 0 else { return 0 }
        return oldestPendingMillis &+ Int64(clamping: nowMillis &- min(nowMillis, measuredAtMillis))
    }
}

/// Why a node name cannot get an enrollment token under the parent asked for: it is
/// promised elsewhere in the tenant (a pending token under another parent), or nodes
/// already hold pending tokens under it at another level. The catalog says which; an
/// administrator scoped to a subtree is told only that the name is not theirs to issue
/// (it names what lies outside their subtree).
public struct EnrollmentClaimConflict: Error, Sendable, CustomStringConvertible {
    public var description: String

    public init(_ description: String) {
        self.description = description
    }
}

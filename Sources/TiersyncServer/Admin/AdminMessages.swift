import TiersyncCore
import TiersyncStorage

/// The admin API's request and response bodies (`openapi.yaml`, components `Admin…`).
public enum AdminMessages {
    public struct LoginRequest: Codable, Sendable {
        public var tenant: TenantID
        public var user: String
        public var password: String
        public init(tenant: TenantID, user: String, password: String) {
            self.tenant = tenant
            self.user = user
            self.password = password
        }
    }

    /// Who is logged in (login and `GET /admin/v1/me`).
    public struct Me: Codable, Sendable, Equatable {
        public var tenant: TenantID
        public var user: String
        public var roles: [AdminRole]
        public var scope: NodeID
        public var tenantWide: Bool
        /// The session's CSRF token (sessions only): send it as `X-CSRF-Token` with every change.
        public var csrfToken: String?
        public var expiresAtMillis: UInt64?
    }

    public struct TokenRequest: Codable, Sendable {
        public var name: String
        /// Signed, so a negative lifetime is answered as out of range (422), not as JSON
        /// that cannot be read (400).
        public var ttlSeconds: Int64
        public init(name: String, ttlSeconds: Int64) {
            self.name = name
            self.ttlSeconds = ttlSeconds
        }
    }

    public struct TokenResponse: Codable, Sendable {
        /// Shown once; the hub keeps its digest.
        public var token: String
        public var expiresAtMillis: UInt64
    }

    /// A live session or API token, as listed (never its secret).
    public struct TokenView: Codable, Sendable, Equatable {
        /// Names the token to revoke it (`POST …/tokens/{id}/revoke`).
        public var id: String
        public var kind: AdminTokenKind
        /// The API token's name (`console` for a session).
        public var name: String
        public var createdAtMillis: UInt64
        public var expiresAtMillis: UInt64
        /// The token this request came with.
        public var current: Bool
    }

    public struct TokensResponse: Codable, Sendable {
        public var user: String
        /// Oldest first.
        public var tokens: [TokenView]
    }

    public struct NodeLagView: Codable, Sendable, Equatable {
        public var pending: Int64
        /// The oldest waiting change's age now (it kept ageing since it was measured).
        public var oldestPendingMillis: Int64
        public var measuredAtMillis: UInt64
        /// How far the node's clock runs ahead of its parent's (negative: behind), as it
        /// measured at its last push within the hour; absent when none.
        public var clockOffsetMillis: Int64?
    }

    public struct NodeView: Codable, Sendable, Equatable {
        public var node: NodeID
        public var parent: NodeID?
        public var role: String
        /// From the root: `hq/de/de-1`.
        public var path: String
        public var depth: Int
        public var state: String
        public var lastSeenMillis: UInt64?
        public var lag: NodeLagView?
        /// The release the node reports running, its country's overlay, and the rollout
        /// state (`applied`, `pending`, `refused`, `unknown`).
        public var release: Int?
        public var overlay: String?
        public var governance: String?
    }

    public struct NodesResponse: Codable, Sendable {
        public var nodes: [NodeView]
        /// Pass as `after` for the next page; nil on the last.
        public var next: String?
        /// Nodes matching the filters in the caller's scope.
        public var total: Int
    }

    public struct RevocationResponse: Codable, Sendable {
        public var node: NodeID
        public var credentials: Int
        public var tokens: Int
        public var decommissionedAtMillis: UInt64?
    }

    public struct EnrollmentTokenRequest: Codable, Sendable {
        public var node: NodeID
        /// Default: the caller's scope node.
        public var parent: NodeID?
        /// Signed, as ``TokenRequest/ttlSeconds``.
        public var ttlSeconds: Int64?
        public init(node: NodeID, parent: NodeID? = nil, ttlSeconds: Int64? = nil) {
            self.node = node
            self.parent = parent
            self.ttlSeconds = ttlSeconds
        }
    }

    public struct EnrollmentTokenResponse: Codable, Sendable {
        public var node: NodeID
        public var parent: NodeID
        public var token: String
        public var expiresAtMillis: UInt64
    }

    public struct QuarantineResponse: Codable, Sendable {
        public var changes: [QuarantinedChange]
        /// Pass as `after` for the next page; nil on the last.
        public var next: Int64?
    }

    public struct DiscardRequest: Codable, Sendable {
        public var reason: String
        public init(reason: String) { self.reason = reason }
    }

    public struct ReplayResponse: Codable, Sendable {
        /// `applied`, `duplicate` (it was stored already) or `refused` (still: see `reason`).
        public var outcome: String
        public var code: String?
        public var reason: String?
    }

    public struct AuditResponse: Codable, Sendable {
        public var entries: [AuditEntry]
        /// Pass as `before` for the next (older) page; nil on the last.
        public var next: Int64?
    }

    public struct UsersResponse: Codable, Sendable {
        public var users: [AdminUser]
    }

    public struct CreateUserRequest: Codable, Sendable {
        public var name: String
        public var password: String
        public var roles: [AdminRole]
        /// Default: the tenant's root (an HQ admin).
        public var scope: NodeID?
        public init(name: String, password: String, roles: [AdminRole], scope: NodeID? = nil) {
            self.name = name
            self.password = password
            self.roles = roles
            self.scope = scope
        }
    }

    public struct UpdateUserRequest: Codable, Sendable {
        public var roles: [AdminRole]?
        public var disabled: Bool?
        public init(roles: [AdminRole]? = nil, disabled: Bool? = nil) {
            self.roles = roles
            self.disabled = disabled
        }
    }

    public struct ReleaseSources: Codable, Sendable {
        public var sources: [ReleaseRequest.Source]
        public var notes: String?
        /// Trial nodes; nil: every node.
        public var targets: [NodeID]?
        public init(sources: [ReleaseRequest.Source], notes: String? = nil, targets: [NodeID]? = nil) {
            self.sources = sources
            self.notes = notes
            self.targets = targets
        }
    }

    public struct Validation: Codable, Sendable {
        public var valid: Bool
        /// `file:line field: message`, one per issue.
        public var issues: [String]
        public var sourceDigest: String?
    }

    public struct PublishResponse: Codable, Sendable {
        /// The request waiting for a reviewer (four-eyes), or the one just approved.
        public var request: ReleaseRequest?
        /// The release published, when it was.
        public var version: Int?
        public var rollout: String?
    }

    public struct RolloutRequest: Codable, Sendable {
        public var release: Int
        public var targets: [NodeID]?
        public init(release: Int, targets: [NodeID]? = nil) {
            self.release = release
            self.targets = targets
        }
    }

    public struct RollbackRequest: Codable, Sendable {
        /// Default: the newest release older than the newest in force.
        public var to: Int?
        public var reason: String?
        public init(to: Int? = nil, reason: String? = nil) {
            self.to = to
            self.reason = reason
        }
    }

    public struct ReleasesResponse: Codable, Sendable {
        public struct ReleaseEntry: Codable, Sendable {
            public var version: Int
            public var publishedAtMillis: UInt64
            public var effectiveFromMillis: UInt64
            public var notes: String?
            public var sourceDigest: String
        }
        public struct RolloutEntry: Codable, Sendable {
            public var sequence: Int
            public var issuedAtMillis: UInt64
            public var summary: String
            public var reason: String
        }
        /// Whether releases wait for a reviewer.
        public var fourEyes: Bool
        public var releases: [ReleaseEntry]
        public var rollouts: [RolloutEntry]
        /// Requests without their sources, newest first.
        public var requests: [ReleaseRequest]
    }

    public struct ConflictsResponse: Codable, Sendable {
        public var conflicts: [Conflict]
        public var next: Int64?
    }

    /// One conflict as the caller may see it (``ConflictRecord``'s shape, the versions as
    /// `<hlc>@<node>` text): for a country's administrator a value written outside their
    /// subtree is ``hiddenValue``, and its node, unless above them, ``hiddenNode``.
    public struct Conflict: Codable, Sendable {
        public var id: Int64
        public var table: String
        public var recordID: String
        public var conflict: Sides
        public var detectedAtMillis: UInt64

        public struct Sides: Codable, Sendable {
            public var field: String
            public var winner: FieldValue
            public var winnerVersion: String
            public var loser: FieldValue
            public var loserVersion: String

            /// The node that wrote the winning value (or ``hiddenNode``).
            public var winnerNode: String { Self.node(of: winnerVersion) }
            /// The node that wrote the losing value (or ``hiddenNode``).
            public var loserNode: String { Self.node(of: loserVersion) }
            static func node(of version: String) -> String { version.firstIndex(of: "@").map { String(version[version.index(after: $0)...]) } ?? version }
        }
    }

    /// `GET /admin/v1/records/{table}/{id}/trace`: the record's changes as this node holds
    /// them, oldest first, each with the hops it took and where it stands upward.
    public struct TraceResponse: Codable, Sendable {
        public var table: String
        public var id: String
        public var changes: [TraceEntry]
        /// The log position to pass as `after` for the next page; nil on the last.
        public var next: Int64?
        /// True when the record is held but compaction folded its history (docs/OPERATIONS.md,
        /// retention): it has no changes left to show here; nil otherwise.
        public var compacted: Bool?
    }

    /// What a trace shows in place of a node outside the caller's view (their subtree and
    /// the nodes above it): a country admin learns nothing of other countries.
    public static let hiddenNode = "(outside your scope)"
    /// In place of a value written outside the caller's subtree (the conflicts inbox).
    public static let hiddenValue = "(written outside your scope)"

    /// `POST /admin/v1/erasures`: erase a customer and everything linked to it, everywhere.
    public struct ErasureRequest: Codable, Sendable {
        public var table: String
        public var id: String
        public init(table: String, id: String) { (self.table, self.id) = (table, id) }
    }

    /// One erasure request in the ledger, as the caller may see it.
    public struct ErasureLine: Codable, Sendable {
        public var erasureID: String
        public var table: String
        public var id: String
        public var requestedBy: String
        public var requestedAt: String
        /// The replicas that held the data (in the caller's view).
        public var replicas: [NodeID]
        public var acknowledgements: [ErasureAcknowledgement]
        /// The replicas that have not acknowledged yet (in the caller's view).
        public var outstanding: [NodeID]
    }

    public struct ErasuresResponse: Codable, Sendable {
        public var erasures: [ErasureLine]
    }

    public struct TraceEntry: Codable, Sendable, Equatable {
        public enum Upstream: String, Codable, Sendable {
            /// This node is the tenant's root.
            case atRoot = "at_root"
            case fromParent = "from_parent"
            case pending
            case acknowledged
            case refused
        }

        public struct HopView: Codable, Sendable, Equatable {
            public var node: String
            public var atMillis: UInt64
        }

        /// The change's position in this node's log.
        public var position: Int64
        public var origin: String
        public var originSeq: Int64
        public var op: Change.Operation
        /// The fields written, by name.
        public var fieldNames: [String]
        /// Their values; absent for a change written outside the caller's subtree.
        public var fields: [String: FieldValue]?
        /// When its writer wrote it (the writer's clock).
        public var writtenAtMillis: UInt64
        public var hops: [HopView]
        public var source: ChangeSource
        public var receivedFrom: String?
        public var receivedAtMillis: UInt64
        public var upstream: Upstream
        /// Why the parent refused it (`upstream` = refused), and when it is tried again.
        public var refusal: String?
        public var nextTryMillis: UInt64?
    }

    public struct ResolveRequest: Codable, Sendable {
        public enum Keep: String, Codable, Sendable {
            /// The value in force (written again, so the conflict closes everywhere).
            case winner
            /// The value that lost.
            case loser
            /// `value`, a new one.
            case value
        }
        public var keep: Keep
        public var value: FieldValue?
        public init(keep: Keep, value: FieldValue? = nil) {
            self.keep = keep
            self.value = value
        }
    }

    public struct ResolveResponse: Codable, Sendable {
        public var table: String
        public var recordID: String
        public var field: String
        public var value: FieldValue
    }
}

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
        public var ttlSeconds: UInt64
        public init(name: String, ttlSeconds: UInt64) {
            self.name = name
            self.ttlSeconds = ttlSeconds
        }
    }

    public struct TokenResponse: Codable, Sendable {
        /// Shown once; the hub keeps its digest.
        public var token: String
        public var expiresAtMillis: UInt64
    }

    public struct NodeLagView: Codable, Sendable, Equatable {
        public var pending: Int64
        /// The oldest waiting change's age now (it kept ageing since it was measured).
        public var oldestPendingMillis: Int64
        public var measuredAtMillis: UInt64
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
        public var ttlSeconds: UInt64?
        public init(node: NodeID, parent: NodeID? = nil, ttlSeconds: UInt64? = nil) {
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
}

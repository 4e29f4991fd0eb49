import Hummingbird
import TiersyncStorage

/// The administrators' HTTP API (`/admin/v1/…`), one line per route with the role it needs.
/// Like ``HubRoutes``, the router is built from this table and `openapi.yaml` is tested
/// against it; the isolation tests walk it.
public enum AdminRoutes {
    public struct Route: Sendable, Hashable {
        public let name: String
        public let method: String
        /// With `{name}` for a path parameter.
        public let path: String
        /// The role the caller needs; nil: no login needed (logging in).
        public let role: AdminRole?
        /// Only for administrators of the whole tenant (scope: its root).
        public let tenantWide: Bool

        init(_ name: String, _ method: String, _ path: String, role: AdminRole?, tenantWide: Bool = false) {
            self.name = name
            self.method = method
            self.path = path
            self.role = role
            self.tenantWide = tenantWide
        }

        /// Changes something: needs the CSRF token when the caller authenticates with the session cookie.
        var isStateChanging: Bool { method != "GET" }
    }

    public static let prefix = "/admin/v1"
    public static let login = Route("admin_login", "POST", "/admin/v1/login", role: nil)
    public static let logout = Route("admin_logout", "POST", "/admin/v1/logout", role: .viewer)
    public static let me = Route("admin_me", "GET", "/admin/v1/me", role: .viewer)
    public static let createToken = Route("admin_create_token", "POST", "/admin/v1/tokens", role: .viewer)
    public static let tokens = Route("admin_tokens", "GET", "/admin/v1/tokens", role: .viewer)
    public static let revokeToken = Route("admin_revoke_token", "POST", "/admin/v1/tokens/{id}/revoke", role: .viewer)
    public static let nodes = Route("admin_nodes", "GET", "/admin/v1/nodes", role: .viewer)
    public static let revokeNode = Route("admin_revoke_node", "POST", "/admin/v1/nodes/{node}/revoke", role: .operator)
    public static let decommissionNode = Route("admin_decommission_node", "POST", "/admin/v1/nodes/{node}/decommission", role: .operator)
    public static let enrollmentToken = Route("admin_enrollment_token", "POST", "/admin/v1/enrollment-tokens", role: .operator)
    public static let quarantine = Route("admin_quarantine", "GET", "/admin/v1/quarantine", role: .viewer)
    public static let discardQuarantined = Route("admin_discard_quarantined", "POST", "/admin/v1/quarantine/{id}/discard", role: .operator)
    public static let replayQuarantined = Route("admin_replay_quarantined", "POST", "/admin/v1/quarantine/{id}/replay", role: .operator)
    public static let audit = Route("admin_audit", "GET", "/admin/v1/audit", role: .viewer)
    public static let users = Route("admin_users", "GET", "/admin/v1/users", role: .viewer, tenantWide: true)
    public static let createUser = Route("admin_create_user", "POST", "/admin/v1/users", role: .operator, tenantWide: true)
    public static let updateUser = Route("admin_update_user", "POST", "/admin/v1/users/{name}", role: .operator, tenantWide: true)
    public static let userTokens = Route("admin_user_tokens", "GET", "/admin/v1/users/{name}/tokens", role: .operator, tenantWide: true)
    public static let revokeUserToken = Route("admin_revoke_user_token", "POST", "/admin/v1/users/{name}/tokens/{id}/revoke", role: .operator, tenantWide: true)

    public static let releases = Route("admin_releases", "GET", "/admin/v1/releases", role: .viewer)
    public static let validateRelease = Route("admin_validate_release", "POST", "/admin/v1/releases/validate", role: .viewer)
    public static let publishRelease = Route("admin_publish_release", "POST", "/admin/v1/releases", role: .publisher, tenantWide: true)
    public static let approveRelease = Route("admin_approve_release", "POST", "/admin/v1/release-requests/{id}/approve", role: .reviewer, tenantWide: true)
    public static let rejectRelease = Route("admin_reject_release", "POST", "/admin/v1/release-requests/{id}/reject", role: .reviewer, tenantWide: true)
    public static let rollout = Route("admin_rollout", "POST", "/admin/v1/rollouts", role: .publisher, tenantWide: true)
    public static let rollback = Route("admin_rollback", "POST", "/admin/v1/rollback", role: .publisher, tenantWide: true)

    public static let conflicts = Route("admin_conflicts", "GET", "/admin/v1/conflicts", role: .viewer)
    public static let resolveConflict = Route("admin_resolve_conflict", "POST", "/admin/v1/conflicts/{id}/resolve", role: .operator)

    public static let kpis = Route("admin_kpis", "GET", "/admin/v1/kpis", role: .viewer)
    public static let trace = Route("admin_trace", "GET", "/admin/v1/trace", role: .viewer)

    public static let erasures = Route("admin_erasures", "GET", "/admin/v1/erasures", role: .viewer)
    public static let requestErasure = Route("admin_request_erasure", "POST", "/admin/v1/erasures", role: .operator)

    public static let all: [Route] = [kpis, trace, erasures, requestErasure, conflicts, resolveConflict, login, logout, me, createToken, tokens, revokeToken, nodes, revokeNode, decommissionNode, enrollmentToken,
                                      quarantine, discardQuarantined, replayQuarantined, audit, users, createUser, updateUser, userTokens, revokeUserToken,
                                      releases, validateRelease, publishRelease, approveRelease, rejectRelease, rollout, rollback]

    /// The two ways to log in (the API's and the console's form): limited per address.
    static func isLogin(_ path: String) -> Bool {
        path == login.path || path == "/console/login"
    }

    /// Whether `path` belongs to the admin API or the console (their own authentication).
    static func isAdministrative(_ path: String) -> Bool {
        path == prefix || path.hasPrefix(prefix + "/") || path == "/console" || path.hasPrefix("/console/")
    }
}

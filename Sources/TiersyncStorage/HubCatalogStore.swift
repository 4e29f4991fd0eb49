import Foundation
import TiersyncCore

/// What a hub (and the admin CLI) needs of its catalog: tenants, their node trees,
/// enrollment tokens and node credentials. Every requirement is async, and an engine must
/// not block the caller's thread on I/O (the hub calls it from request handlers on the
/// cooperative pool).
///
/// Two engines implement it: the SQLite catalog (`hub.sqlite`, `HubCatalog` through its
/// `SQLiteCatalog` view in TiersyncStore) and `PostgresCatalog` (TiersyncPostgres), which
/// several hub processes share. Both keep secrets as SHA-256 digests only (``Secrets``), and
/// both throw the same errors: ``StoreError`` (`notFound`, `invalidArgument`),
/// ``EnrollmentError`` and ``NodeDecommissioned``.
///
/// **Freshness.** Credentials are looked up at every call, never cached, so a revocation
/// takes effect at the caller's next request in every process. Trees may be cached, but only
/// while a version the engine reads at every call is unchanged.
public protocol HubCatalogStore: AnyObject, Sendable {
    // MARK: Serving requests

    /// The node a bearer credential belongs to, or nil for an unknown or revoked one.
    func authenticate(credential: String) async throws -> Principal?

    /// Where `tenant` moved to, if `tiersync admin migrate-tenant` moved it out of this
    /// catalog (``TenantMove``); nil for a tenant served here. Read from memory.
    func movedAway(_ tenant: TenantID) -> TenantMove?

    /// The tenant's tree (empty for an unknown tenant), as of this call: a change made by
    /// any process (a move, an enrollment) is seen.
    func tree(of tenant: TenantID) async throws -> NodeTree

    /// One node as the catalog knows it, or nil.
    func node(_ id: NodeID, of tenant: TenantID) async throws -> NodeRecord?

    /// The tenant's nodes, ordered by id. A decommissioned node is listed with its role
    /// reading "… (decommissioned)".
    func nodes(of tenant: TenantID) async throws -> [NodeRecord]

    /// The parent `principal` must sync through, or nil when the tenant's root serves it
    /// directly: the root's children always, nodes deeper down only when the tenant allows
    /// direct sync (``setAllowDirectSync(_:for:)``).
    func requiredParent(of principal: Principal) async throws -> NodeID?

    /// What every authenticated request needs, as of one moment: the credential's node,
    /// its tenant's tree and the parent it must sync through (``requiredParent(of:)``), or
    /// nil for an unknown or revoked credential. The default asks ``authenticate(credential:)``,
    /// ``tree(of:)`` and ``requiredParent(of:)``; PostgreSQL answers in one round trip while
    /// the tenant's tree is cached.
    func admission(credential: String) async throws -> CatalogAdmission?

    /// The subtree of `principal` with the credential digests of the nodes below it (not
    /// its own): what a country's relay mirrors to serve its dealers.
    func directory(for principal: Principal) async throws -> DirectoryResponse

    /// Records when these nodes were seen, in one transaction. A sighting older than the one
    /// stored changes nothing.
    func touch(_ sightings: [(principal: Principal, atMillis: UInt64)]) async throws

    /// Keeps the lag these nodes of `tenant` reported, each unless the catalog holds a
    /// newer measurement of that node; nodes the catalog does not know are left out.
    /// Returns how many were kept.
    func recordLag(_ reports: [NodeID: NodeLag], of tenant: TenantID) async throws -> Int

    /// The last lag each node of `tenant` reported (nodes that never did are absent).
    func lags(of tenant: TenantID) async throws -> [NodeID: NodeLag]

    /// Throws unless the catalog can be written right now (readiness): the file or server
    /// is there, takes a write lock and is not read-only. Writes nothing.
    func probeWritable() async throws

    /// Redeems an enrollment token: registers the node (or keeps it, if it re-enrolls),
    /// revokes its earlier credentials and returns a new credential, all in one transaction.
    /// A token is redeemed at most once, however many processes try at once.
    ///
    /// `via`: the node that forwarded the request (a country, authenticated by its
    /// credential), or nil when the node came to the root directly; a token naming another
    /// parent is refused (``EnrollmentError/wrongParent(node:parent:via:)``) and kept, as is
    /// a token whose parent has not enrolled yet. A token of another tenant than `via`'s is
    /// unknown to it (``EnrollmentError/unknownToken``), and kept: a country relays no other
    /// tenant's enrollment and learns nothing of its tokens. Unknown, used and expired
    /// tokens throw ``EnrollmentError``; a decommissioned node or parent ``NodeDecommissioned``.
    ///
    /// `expecting`: the node a store enrolling again belongs to; a token of another tenant is
    /// unknown to it and one for another node refused (``EnrollmentError/otherNode(token:store:)``),
    /// both kept.
    func redeem(token: String, via: Principal?, expecting: EnrollmentSubject?, nowMillis: UInt64) async throws -> EnrollResponse
    /// Whether `error` means the engine cannot be reached right now (the default: never).
    func isUnavailable(_ error: any Error) -> Bool
    /// What the engine said of a failure, for the log, when its error's own description
    /// hides it (the default: nil).
    func failureDetail(_ error: any Error) -> String?

    /// The tenant's governance release key (base64 Ed25519 public key), if one was registered.
    func releaseKey(of tenant: TenantID) async throws -> String?

    /// Registers the tenant's governance release key (base64 Ed25519 public key), handed to
    /// nodes at enrollment. Throws ``StoreError/notFound(_:)`` for an unknown tenant.
    func setReleaseKey(_ key: String, for tenant: TenantID) async throws

    // MARK: Administration

    /// Creates a tenant with its root (HQ) node; returns false when it already exists.
    /// `levels` is the depth of the tenant's tree: 2 (HQ and its agents) or 3 (HQ, countries,
    /// dealers); any other throws ``StoreError/invalidArgument(_:)``. `allowDirectSync` lets
    /// nodes below the root's children sync with HQ directly.
    func createTenant(_ tenant: TenantID, root: NodeID, levels: Int, allowDirectSync: Bool, nowMillis: UInt64) async throws -> Bool

    /// Every tenant with its root, ordered by tenant id.
    func tenants() async throws -> [(tenant: TenantID, root: NodeID)]

    /// The tenant's settings; nil when there is no such tenant.
    func settings(of tenant: TenantID) async throws -> TenantSettings?

    /// Lets nodes below the root's children sync with HQ directly, or not. Every process
    /// sees the change at its next request. Throws ``StoreError/notFound(_:)`` for an unknown tenant.
    func setAllowDirectSync(_ allowed: Bool, for tenant: TenantID) async throws

    /// The tenant's root node (HQ), or nil when there is no such tenant.
    func root(of tenant: TenantID) async throws -> NodeID?

    /// Issues a one-time enrollment token for `node` under `parent` (nil: the root), valid
    /// for `ttlSeconds`. The token is returned once and stored only as a digest. The node's
    /// role follows from its depth (the deepest level holds dealers, the one between
    /// countries); `role`, when given, must agree. A parent that has not enrolled yet counts
    /// at the level its own pending token gives it. Refused (``StoreError``) for the root,
    /// an unknown parent, a level beyond the tenant's depth, a decommissioned node or parent,
    /// and a node that already exists under another parent (that is a move).
    func issueEnrollmentToken(tenant: TenantID, node: NodeID, parent: NodeID?, role: String?,
                              ttlSeconds: UInt64, nowMillis: UInt64) async throws -> String

    /// Revokes every credential of `node` and deletes its unused enrollment tokens, in one
    /// transaction; it is refused at its next request. The node keeps its place in the tree
    /// and its data; a new token lets it enroll again.
    func revoke(node: NodeID, of tenant: TenantID, nowMillis: UInt64) async throws -> Revocation

    /// Revokes `node` and marks it decommissioned: it never enrolls again (tokens for it, or
    /// naming it as parent, are deleted and refused). It keeps its place in the tree and its
    /// data. Refused while enrolled, not decommissioned nodes are below it.
    func decommission(node: NodeID, of tenant: TenantID, nowMillis: UInt64) async throws -> Revocation

    /// Moves `node` (and its subtree) under `parent`, on the level above it (a node keeps its
    /// level, and so its role). Unused tokens of the node are deleted: they would put it
    /// back under its old parent.
    func moveNode(_ node: NodeID, of tenant: TenantID, to parent: NodeID) async throws
}

/// A credential's node with its tenant's tree as the catalog held it when the credential was
/// checked (``HubCatalogStore/admission(credential:)``).
public struct CatalogAdmission: Sendable {
    public var principal: Principal
    public var tree: NodeTree
    /// The parent the node must sync through, or nil when the tenant's root serves it.
    public var requiredParent: NodeID?

    public init(principal: Principal, tree: NodeTree, requiredParent: NodeID?) {
        self.principal = principal
        self.tree = tree
        self.requiredParent = requiredParent
    }
}

/// Where a tenant went when `tiersync admin migrate-tenant` moved it out of this catalog's
/// engine: the catalog keeps the tenant's rows (a backup of what moved), and the hub answers
/// its nodes and administrators that it no longer serves it. Without the mark, a hub started
/// again on the old directory (a stale URL, a restart script) served the tenant beside its
/// new hub, and a one-time enrollment token enrolled a node at both (helper 99).
public struct TenantMove: Sendable, Equatable {
    /// Where it went, as the migration names it ("a hub on PostgreSQL"): never the database's
    /// address, which the answer would show to the tenant's nodes.
    public var target: String
    public var movedAtMillis: UInt64

    public init(target: String, movedAtMillis: UInt64) {
        self.target = target
        self.movedAtMillis = movedAtMillis
    }

    /// The refusal's words: "tenant 'acme' moved to … at …; this hub no longer serves it".
    public func refusal(_ tenant: TenantID) -> String {
        "tenant '\(tenant)' moved to \(target) at \(Date(timeIntervalSince1970: Double(movedAtMillis) / 1000).formatted(.iso8601)); this hub no longer serves it: point its nodes and administrators at the hub that does"
    }
}

/// Thrown where a moved tenant's request reaches its old catalog (``TenantMove``).
public struct TenantMovedAway: Error, CustomStringConvertible {
    public var tenant: TenantID
    public var move: TenantMove
    public init(tenant: TenantID, move: TenantMove) {
        self.tenant = tenant
        self.move = move
    }
    public var description: String { move.refusal(tenant) }
}

// The defaults HubCatalog's methods have, for callers of either engine.
extension HubCatalogStore {
    /// Where `tenant` moved to, if it moved out of this catalog's engine (``TenantMove``).
    /// Only the embedded engine's tenants move (to PostgreSQL); PostgreSQL's stay.
    public func movedAway(_ tenant: TenantID) -> TenantMove? { nil }

    /// Whether `error` means the engine cannot be reached right now (a database server down
    /// or restarting), not that the request was wrong: the hub answers 503 with Retry-After,
    /// not 500. An embedded engine is never unreachable.
    public func isUnavailable(_ error: any Error) -> Bool { false }
    public func failureDetail(_ error: any Error) -> String? { nil }
}

extension HubCatalogStore {
    public func admission(credential: String) async throws -> CatalogAdmission? {
        guard let principal = try await authenticate(credential: credential) else { return nil }
        return CatalogAdmission(principal: principal, tree: try await tree(of: principal.tenant),
                                requiredParent: try await requiredParent(of: principal))
    }

    /// ``redeem(token:via:expecting:nowMillis:)`` for a node enrolling for the first time.
    public func redeem(token: String, via: Principal?, nowMillis: UInt64) async throws -> EnrollResponse {
        try await redeem(token: token, via: via, expecting: nil, nowMillis: nowMillis)
    }

    /// ``redeem(token:via:expecting:nowMillis:)`` now.
    public func redeem(token: String, via: Principal? = nil, expecting: EnrollmentSubject? = nil) async throws -> EnrollResponse {
        try await redeem(token: token, via: via, expecting: expecting, nowMillis: WallClock.nowMillis())
    }

    /// ``createTenant(_:root:levels:allowDirectSync:nowMillis:)`` now, with HQ's usual root `hq`.
    @discardableResult
    public func createTenant(_ tenant: TenantID, root: NodeID = "hq", levels: Int = 2,
                             allowDirectSync: Bool = false) async throws -> Bool {
        try await createTenant(tenant, root: root, levels: levels, allowDirectSync: allowDirectSync, nowMillis: WallClock.nowMillis())
    }

    /// ``issueEnrollmentToken(tenant:node:parent:role:ttlSeconds:nowMillis:)`` now, valid a day by default.
    public func issueEnrollmentToken(tenant: TenantID, node: NodeID, parent: NodeID? = nil, role: String? = nil,
                                     ttlSeconds: UInt64 = 86_400) async throws -> String {
        try await issueEnrollmentToken(tenant: tenant, node: node, parent: parent, role: role, ttlSeconds: ttlSeconds,
                                       nowMillis: WallClock.nowMillis())
    }

    /// ``revoke(node:of:nowMillis:)`` now.
    public func revoke(node: NodeID, of tenant: TenantID) async throws -> Revocation {
        try await revoke(node: node, of: tenant, nowMillis: WallClock.nowMillis())
    }

    /// ``decommission(node:of:nowMillis:)`` now.
    public func decommission(node: NodeID, of tenant: TenantID) async throws -> Revocation {
        try await decommission(node: node, of: tenant, nowMillis: WallClock.nowMillis())
    }
}

// Rules both engines apply to what they read, kept here so they cannot drift apart.
extension NodeTree {
    /// The parent `node` must sync through, or nil when the root serves it directly: the
    /// root's children always, deeper nodes only with `allowDirectSync`; nil also for the
    /// root and for a node the tree does not hold.
    public func requiredParent(of node: NodeID, allowDirectSync: Bool) -> NodeID? {
        guard !allowDirectSync, let link = parents[node], let parent = link,
              let grandparent = parents[parent], grandparent != nil else { return nil }
        return parent
    }
}

extension NodeRecord {
    /// The role a listing shows: a decommissioned node's reads "dealer (decommissioned)", so
    /// every listing (the CLI's, a relay's directory) shows it without a column of its own.
    public static func listedRole(_ role: String, decommissioned: Bool) -> String {
        decommissioned ? "\(role) (decommissioned)" : role
    }
}

extension NodeRole {
    /// The level of a node of this role in a tenant of `levels` levels: the root is level 1,
    /// dealers the deepest, countries the one above them.
    public func level(inTenantOf levels: Int) -> Int {
        switch self {
        case .hq: 1
        case .dealer: levels
        case .country: levels - 1
        }
    }
}

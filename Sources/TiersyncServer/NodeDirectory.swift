import TiersyncCore
import TiersyncStore

/// What a hub needs to know about the nodes it serves. The HQ hub answers from its own
/// catalog (``CatalogDirectory``); a country node answers from the directory it mirrors
/// from HQ, so HQ stays the one authority for the tree and for credentials.
public protocol NodeDirectory: Sendable {
    func authenticate(credential: String) async throws -> Principal?
    /// What an authenticated request needs, as of one moment: the credential's node, its
    /// tenant's tree and whether this hub serves it (``refusal(for:)``); nil for an unknown
    /// or revoked credential. The default asks ``authenticate(credential:)``,
    /// ``refusal(for:)`` and ``tree(of:)`` in turn.
    func admit(credential: String) async throws -> Admission?
    func tree(of tenant: TenantID) async throws -> NodeTree
    func node(_ id: NodeID, of tenant: TenantID) async throws -> NodeRecord?
    /// Every node this hub knows of `tenant` (HQ: all; a country: its subtree).
    func nodes(of tenant: TenantID) async throws -> [NodeRecord]
    /// The tenant's governance release key (base64), as HQ registered it.
    func releaseKey(of tenant: TenantID) async throws -> String?
    /// Whether `error` means this hub's storage cannot be reached right now (503, not 500).
    func isStorageUnavailable(_ error: any Error) -> Bool
    /// What the storage engine said of a failure, for the log (nil: the error says it).
    func storageFailureDetail(_ error: any Error) -> String?
    /// Redeems an enrollment token (a country forwards it to HQ). `relayer`: the node that
    /// forwarded it, authenticated by its credential (the request's `via` names it).
    func enroll(_ request: EnrollRequest, relayer: Principal?) async throws -> EnrollResponse
    /// The subtree and credential digests below `principal` (HQ only).
    func directory(for principal: Principal) async throws -> DirectoryResponse
    /// The change store holding `tenant`'s records on this hub, behind the storage seam
    /// (opened on first use without blocking the caller's thread).
    func store(for tenant: TenantID) async throws -> any HubTenantStore
    func openTenants() -> [TenantID]
    /// Every tenant this hub serves (HQ: all in its catalog; a country: its own).
    func tenants() async throws -> [TenantID]
    func touch(_ principal: Principal) async
    /// What the 401 for a credential this hub does not know says (``unknownCredentialMessage``
    /// by default; a country adds that a dealer HQ moved away is unknown to it too).
    var unknownCredentialMessage: String { get }
    /// Keeps the lag these nodes of `tenant` reported (the caller checked they are in the
    /// reporter's subtree); a report older than the one held for its node is kept out.
    /// Returns how many were kept.
    func recordLag(_ reports: [NodeID: NodeLag], of tenant: TenantID) async throws -> Int
    /// The last lag each node of `tenant` reported to this hub or through its children.
    func lags(of tenant: TenantID) async throws -> [NodeID: NodeLag]
    /// Throws unless this hub can write its catalog and open stores right now (`/readyz`).
    func probeWritable() async throws
    /// The administrators this hub serves the admin API and the console to; nil: none.
    var administration: Administration? { get }
    /// Whether this hub serves the authenticated `principal` itself: nil, or why not
    /// (answered 403 before any route runs). The default serves every node it knows.
    func refusal(for principal: Principal) async throws -> AccessRefusal?
    /// The nodes above the root of ``tree(of:)``, parent first: empty at HQ, whose tree is
    /// the tenant's; a country's ancestors at a country node, whose tree is its mirrored
    /// subtree (``TiersyncCore/RouteReach`` lets its dealers route to them).
    func ancestorsAboveTree(of tenant: TenantID) async -> [NodeID]
    /// The node this hub is in `tenant`'s tree (HQ's root, or the country at a country
    /// node). A requirement, not only an extension's method: called through
    /// `any NodeDirectory`, the extension's default ran at a country too, found no root in its
    /// mirror, and the country counted itself `never_seen` in its own metrics (helper 106).
    func servingNode(of tenant: TenantID) async throws -> NodeID?
}

/// Where a hub finds its administrators: HQ in its catalog; a country in its mirror of HQ's
/// directory (the administrators of its subtree, which HQ sends with the directory).
public struct Administration: Sendable {
    public var catalog: any HubCatalogStore
    public var accounts: any AdminAccountStore
    /// A country node: what only HQ decides (nodes' access, administrators, releases) is
    /// refused here, to be done at HQ.
    public var isRelay: Bool

    public init(catalog: any HubCatalogStore, accounts: any AdminAccountStore, isRelay: Bool) {
        self.catalog = catalog
        self.accounts = accounts
        self.isRelay = isRelay
    }
}

/// Why a hub refuses an authenticated node (403 with this code and message).
public struct AccessRefusal: Sendable, Equatable {
    public var code: String
    public var message: String

    public init(code: String, message: String) {
        self.code = code
        self.message = message
    }
}

/// An authenticated caller as a hub sees it (``NodeDirectory/admit(credential:)``).
public struct Admission: Sendable {
    public var principal: Principal
    /// The caller's tenant's tree, read with the credential: the request's scope.
    public var tree: NodeTree
    /// Why this hub refuses the caller, or nil when it serves it.
    public var refusal: AccessRefusal?

    public init(principal: Principal, tree: NodeTree, refusal: AccessRefusal?) {
        self.principal = principal
        self.tree = tree
        self.refusal = refusal
    }
}

extension NodeDirectory {
    /// Whether `error` means this hub's storage cannot be reached right now (503, not 500).
    public func isStorageUnavailable(_ error: any Error) -> Bool { false }
    public func storageFailureDetail(_ error: any Error) -> String? { nil }
    public func refusal(for principal: Principal) async throws -> AccessRefusal? { nil }
    public func ancestorsAboveTree(of tenant: TenantID) async -> [NodeID] { [] }
    public var administration: Administration? { nil }
    public var unknownCredentialMessage: String { "unknown or revoked credential" }
    /// The node this hub is in `tenant`'s tree: HQ's hub is its root (the default), a
    /// country node is the country. It makes no requests to itself, so it is never "seen":
    /// its state is active while it answers (``NodeState``).
    public func servingNode(of tenant: TenantID) async throws -> NodeID? {
        try await nodes(of: tenant).first { $0.parent == nil }?.node
    }

    public func admit(credential: String) async throws -> Admission? {
        guard let principal = try await authenticate(credential: credential) else { return nil }
        if let refusal = try await refusal(for: principal) {
            // A refused caller's request ends here: no tree needed.
            return Admission(principal: principal, tree: NodeTree(parents: [:]), refusal: refusal)
        }
        return Admission(principal: principal, tree: try await tree(of: principal.tenant), refusal: nil)
    }
}

/// The HQ hub's directory: its catalog and the tenants' stores, on either engine (SQLite:
/// `hub.sqlite` and a database per tenant; PostgreSQL: one database for every process).
public struct CatalogDirectory: NodeDirectory {
    public let catalog: any HubCatalogStore
    private let tenantStore: @Sendable (TenantID) async throws -> any HubTenantStore
    private let open: @Sendable () -> [TenantID]
    let lastSeen = LastSeenRecorder()

    /// `stores` gives the store of a tenant (opened on first use, then kept), `openTenants`
    /// the tenants whose stores this process opened.
    public init(catalog: any HubCatalogStore, stores: @escaping @Sendable (TenantID) async throws -> any HubTenantStore,
                openTenants: @escaping @Sendable () -> [TenantID]) {
        self.catalog = catalog
        self.tenantStore = stores
        self.open = openTenants
    }

    /// The embedded hub: a SQLite catalog and a database per tenant.
    public init(stores: TenantStores) {
        self.init(catalog: SQLiteCatalog(stores.catalog), stores: { try await stores.openStore(for: $0) }, openTenants: { stores.openTenants() })
    }

    public func authenticate(credential: String) async throws -> Principal? {
        try await catalog.authenticate(credential: credential)
    }

    /// HQ's hub is the tenant's root: one look-up, not the list of every node.
    public func servingNode(of tenant: TenantID) async throws -> NodeID? {
        try await catalog.root(of: tenant)
    }

    public func isStorageUnavailable(_ error: any Error) -> Bool { catalog.isUnavailable(error) }
    public func storageFailureDetail(_ error: any Error) -> String? { catalog.failureDetail(error) }

    public func admit(credential: String) async throws -> Admission? {
        guard let admission = try await catalog.admission(credential: credential) else { return nil }
        if let move = catalog.movedAway(admission.principal.tenant) { throw move.answer(admission.principal.tenant) }
        return Admission(principal: admission.principal, tree: admission.tree,
                         refusal: admission.requiredParent.map { Self.wrongParent(admission.principal, parent: $0) })
    }

    public func tree(of tenant: TenantID) async throws -> NodeTree {
        try await catalog.tree(of: tenant)
    }

    public func node(_ id: NodeID, of tenant: TenantID) async throws -> NodeRecord? {
        try await catalog.node(id, of: tenant)
    }

    public func nodes(of tenant: TenantID) async throws -> [NodeRecord] {
        try await catalog.nodes(of: tenant)
    }

    public func releaseKey(of tenant: TenantID) async throws -> String? {
        try await catalog.releaseKey(of: tenant)
    }

    public func enroll(_ request: EnrollRequest, relayer: Principal?) async throws -> EnrollResponse {
        var response: EnrollResponse
        do {
            response = try await catalog.redeem(token: request.token, via: relayer, expecting: request.expected, nowMillis: WallClock.nowMillis())
        } catch let error as NodeDecommissioned {
            throw APIError(.conflict, "decommissioned", error.description)
        } catch let error as TenantMovedAway {
            throw error.move.answer(error.tenant)
        }
        response.highestSeq = try await store(for: response.tenant).highestSeq(of: response.node)
        return response
    }

    public var administration: Administration? {
        (catalog as? any AdminAccountStore).map { Administration(catalog: catalog, accounts: $0, isRelay: false) }
    }

    /// The subtree for a country's relay, with the administrators whose scope is in it.
    public func directory(for principal: Principal) async throws -> DirectoryResponse {
        var directory = try await catalog.directory(for: principal)
        if let accounts = catalog as? any AdminAccountStore {
            let subtree = Set(directory.nodes.map(\.id) + [principal.node])
            directory.admins = try await accounts.adminLogins(of: principal.tenant).filter { subtree.contains($0.user.scope) }.map {
                DirectoryResponse.Admin(name: $0.user.name, roles: $0.user.roles.sorted().map(\.rawValue), scope: $0.user.scope,
                                        passwordHash: $0.passwordHash, disabled: $0.user.isDisabled)
            }
        }
        return directory
    }

    public func store(for tenant: TenantID) async throws -> any HubTenantStore {
        try await tenantStore(tenant)
    }

    public func openTenants() -> [TenantID] {
        open()
    }

    /// The tenants served here: a moved one (``TenantMove``) is not, and its nodes would all
    /// read as silent on a hub started on the old directory.
    public func tenants() async throws -> [TenantID] {
        try await catalog.tenants().map(\.tenant).filter { catalog.movedAway($0) == nil }
    }

    public func touch(_ principal: Principal) async {
        await lastSeen.record(principal, in: catalog)
    }

    public func recordLag(_ reports: [NodeID: NodeLag], of tenant: TenantID) async throws -> Int {
        try await catalog.recordLag(reports, of: tenant)
    }

    public func lags(of tenant: TenantID) async throws -> [NodeID: NodeLag] {
        try await catalog.lags(of: tenant)
    }

    public func probeWritable() async throws {
        try await catalog.probeWritable()
        for tenant in openTenants() { try await store(for: tenant).probeWritable() }
    }

    /// HQ serves the root's children (countries of a three-level tenant, agents of a
    /// two-level one); a node deeper down syncs through its parent unless the tenant allows
    /// direct sync (`admin tenant-settings --allow-direct-sync true`).
    public func refusal(for principal: Principal) async throws -> AccessRefusal? {
        try await catalog.requiredParent(of: principal).map { Self.wrongParent(principal, parent: $0) }
    }

    private static func wrongParent(_ principal: Principal, parent: NodeID) -> AccessRefusal {
        AccessRefusal(code: "wrong_parent", message: """
            node '\(principal.node)' syncs through its parent '\(parent)', not with HQ directly: point its agent at '\(parent)'s URL \
            (tenant '\(principal.tenant)' does not allow direct sync; `tiersync admin tenant-settings --allow-direct-sync true` would)
            """)
    }
}

extension TenantMove {
    /// The answer to a moved tenant's request: 410, the tenant is gone from this hub.
    func answer(_ tenant: TenantID) -> APIError {
        APIError(.gone, "tenant_moved", refusal(tenant))
    }
}

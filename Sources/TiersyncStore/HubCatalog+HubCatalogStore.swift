import Dispatch
import TiersyncCore

/// The SQLite catalog (``HubCatalog``) behind the catalog seam
/// (``TiersyncStorage/HubCatalogStore``): what a hub or a command that may run on either
/// engine holds, `any HubCatalogStore`.
///
/// A view rather than a conformance of `HubCatalog` itself: `HubCatalog`'s administrative
/// methods are synchronous (the CLI, the benchmarks and the tests call them from async code
/// without `await`), and an async method of the same name on the same type — which a
/// conformance needs, for a witness that does not block — is what Swift picks in an async
/// context, so every one of those calls would stop compiling. Through this view the
/// requirements `HubCatalog` already answers asynchronously (authentication, trees, nodes,
/// the directory, sightings, enrollment) run on GRDB's own queues as before, and the
/// synchronous ones run on a Dispatch worker (``offCooperativePool(_:)``), so a request
/// handler never blocks a cooperative thread on SQLite.
public final class SQLiteCatalog: HubCatalogStore {
    /// The catalog itself, for what only the SQLite engine has (`tenantDatabasePath`,
    /// `replaceDirectory`, the synchronous API).
    public let catalog: HubCatalog

    public init(_ catalog: HubCatalog) {
        self.catalog = catalog
    }

    // MARK: Serving requests: HubCatalog's own async API.

    public func authenticate(credential: String) async throws -> Principal? {
        try await catalog.authenticate(credential: credential)
    }

    public func movedAway(_ tenant: TenantID) -> TenantMove? {
        catalog.movedAway(tenant)
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

    public func requiredParent(of principal: Principal) async throws -> NodeID? {
        try await catalog.requiredParent(of: principal)
    }

    public func directory(for principal: Principal) async throws -> DirectoryResponse {
        try await catalog.directory(for: principal)
    }

    public func touch(_ sightings: [(principal: Principal, atMillis: UInt64)]) async throws {
        try await catalog.touch(sightings)
    }

    public func recordLag(_ reports: [NodeID: NodeLag], of tenant: TenantID) async throws -> Int {
        try await catalog.recordLag(reports, of: tenant)
    }

    public func lags(of tenant: TenantID) async throws -> [NodeID: NodeLag] {
        try await catalog.lags(of: tenant)
    }

    public func probeWritable() async throws {
        try await catalog.probeWritable()
    }

    public func redeem(token: String, via: Principal?, expecting: EnrollmentSubject?, nowMillis: UInt64) async throws -> EnrollResponse {
        try await catalog.redeem(token: token, via: via, expecting: expecting, nowMillis: nowMillis)
    }

    // MARK: The synchronous API, off the cooperative pool.

    public func releaseKey(of tenant: TenantID) async throws -> String? {
        try await offCooperativePool { [catalog] in try catalog.releaseKey(of: tenant) }
    }

    public func setReleaseKey(_ key: String, for tenant: TenantID) async throws {
        try await offCooperativePool { [catalog] in try catalog.setReleaseKey(key, for: tenant) }
    }

    public func createTenant(_ tenant: TenantID, root: NodeID, levels: Int, allowDirectSync: Bool, nowMillis: UInt64) async throws -> Bool {
        try await offCooperativePool { [catalog] in
            try catalog.createTenant(tenant, root: root, levels: levels, allowDirectSync: allowDirectSync, nowMillis: nowMillis)
        }
    }

    public func tenants() async throws -> [(tenant: TenantID, root: NodeID)] {
        try await offCooperativePool { [catalog] in try catalog.tenants() }
    }

    public func settings(of tenant: TenantID) async throws -> TenantSettings? {
        try await offCooperativePool { [catalog] in try catalog.settings(of: tenant) }
    }

    public func setAllowDirectSync(_ allowed: Bool, for tenant: TenantID) async throws {
        try await offCooperativePool { [catalog] in try catalog.setAllowDirectSync(allowed, for: tenant) }
    }

    public func root(of tenant: TenantID) async throws -> NodeID? {
        try await offCooperativePool { [catalog] in try catalog.root(of: tenant) }
    }

    public func issueEnrollmentToken(tenant: TenantID, node: NodeID, parent: NodeID?, role: String?,
                                     ttlSeconds: UInt64, nowMillis: UInt64) async throws -> String {
        try await offCooperativePool { [catalog] in
            try catalog.issueEnrollmentToken(tenant: tenant, node: node, parent: parent, role: role,
                                             ttlSeconds: ttlSeconds, nowMillis: nowMillis)
        }
    }

    public func revoke(node: NodeID, of tenant: TenantID, nowMillis: UInt64) async throws -> Revocation {
        try await offCooperativePool { [catalog] in try catalog.revoke(node: node, of: tenant, nowMillis: nowMillis) }
    }

    public func decommission(node: NodeID, of tenant: TenantID, nowMillis: UInt64) async throws -> Revocation {
        try await offCooperativePool { [catalog] in try catalog.decommission(node: node, of: tenant, nowMillis: nowMillis) }
    }

    public func moveNode(_ node: NodeID, of tenant: TenantID, to parent: NodeID) async throws {
        try await offCooperativePool { [catalog] in try catalog.moveNode(node, of: tenant, to: parent) }
    }

    /// Runs a synchronous catalog call on a Dispatch worker and resumes the task with its
    /// result. The queue is the one the tenant stores' seam uses (`NodeStore.blockingQueue`),
    /// so every wait for SQLite in the hub happens on the same pool of threads.
    private func offCooperativePool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            NodeStore.blockingQueue.async { continuation.resume(with: Result { try body() }) }
        }
    }
}

extension HubCatalog {
    /// This catalog behind the catalog seam (a new view each time; views hold no state).
    public var store: SQLiteCatalog { SQLiteCatalog(self) }
}

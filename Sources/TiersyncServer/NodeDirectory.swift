import TiersyncCore
import TiersyncStore

/// What a hub needs to know about the nodes it serves. The HQ hub answers from its own
/// catalog (``CatalogDirectory``); a country node answers from the directory it mirrors
/// from HQ, so HQ stays the one authority for the tree and for credentials.
public protocol NodeDirectory: Sendable {
    func authenticate(credential: String) async throws -> Principal?
    func tree(of tenant: TenantID) async throws -> NodeTree
    func node(_ id: NodeID, of tenant: TenantID) async throws -> NodeRecord?
    /// Every node this hub knows of `tenant` (HQ: all; a country: its subtree).
    func nodes(of tenant: TenantID) async throws -> [NodeRecord]
    /// The tenant's governance release key (base64), as HQ registered it.
    func releaseKey(of tenant: TenantID) async throws -> String?
    /// Redeems an enrollment token (a country forwards it to HQ).
    func enroll(_ request: EnrollRequest) async throws -> EnrollResponse
    /// The subtree and credential digests below `principal` (HQ only).
    func directory(for principal: Principal) async throws -> DirectoryResponse
    /// The change store holding `tenant`'s records on this hub.
    func store(for tenant: TenantID) throws -> NodeStore
    func openTenants() -> [TenantID]
    func touch(_ principal: Principal) async
}

/// The HQ hub's directory: its catalog and one database per tenant.
public struct CatalogDirectory: NodeDirectory {
    public let stores: TenantStores
    let lastSeen = LastSeenRecorder()

    public init(stores: TenantStores) { self.stores = stores }

    public func authenticate(credential: String) async throws -> Principal? {
        try await stores.catalog.authenticate(credential: credential)
    }

    public func tree(of tenant: TenantID) async throws -> NodeTree {
        try await stores.catalog.tree(of: tenant)
    }

    public func node(_ id: NodeID, of tenant: TenantID) async throws -> NodeRecord? {
        try await stores.catalog.node(id, of: tenant)
    }

    public func nodes(of tenant: TenantID) async throws -> [NodeRecord] {
        try await stores.catalog.nodes(of: tenant)
    }

    public func releaseKey(of tenant: TenantID) async throws -> String? {
        try stores.catalog.releaseKey(of: tenant)
    }

    public func enroll(_ request: EnrollRequest) async throws -> EnrollResponse {
        var response = try await stores.catalog.redeem(token: request.token, via: request.via)
        response.highestSeq = try await stores.store(for: response.tenant).highestSeq(of: response.node)
        return response
    }

    public func directory(for principal: Principal) async throws -> DirectoryResponse {
        try await stores.catalog.directory(for: principal)
    }

    public func store(for tenant: TenantID) throws -> NodeStore {
        try stores.store(for: tenant)
    }

    public func openTenants() -> [TenantID] {
        stores.openTenants()
    }

    public func touch(_ principal: Principal) async {
        await lastSeen.record(principal, in: stores.catalog)
    }
}

import Foundation
import Logging
import Synchronization
import TiersyncAgent
import TiersyncCore
import TiersyncServer
import TiersyncStore

/// A country node's directory: its subtree and its dealers' credential digests, mirrored
/// from HQ into the node's own catalog. Dealers authenticate against the mirror, so the
/// country keeps serving them while HQ is unreachable; HQ stays the authority.
public final class RelayDirectory: NodeDirectory {
    let store: NodeStore
    let identity: NodeIdentity
    let mirror: HubCatalog
    let parent: ParentClient
    let logger: Logger
    private let lastMissRefresh = Mutex<UInt64>(0)
    private let newNodesHandler = Mutex<(@Sendable (Set<NodeID>) async -> Void)?>(nil)

    public init(store: NodeStore, identity: NodeIdentity, mirror: HubCatalog, parent: ParentClient, logger: Logger) {
        self.store = store
        self.identity = identity
        self.mirror = mirror
        self.parent = parent
        self.logger = logger
    }

    /// Called with the nodes a refresh found new in the subtree (moved in from elsewhere).
    func onNewNodes(_ handler: @escaping @Sendable (Set<NodeID>) async -> Void) {
        newNodesHandler.withLock { $0 = handler }
    }

    /// Fetches the subtree from HQ and replaces the mirror with it.
    public func refresh() async throws {
        let directory = try await parent.directory()
        let hadMirror = try await !mirror.nodes(of: identity.tenant).isEmpty
        let added = try mirror.replaceDirectory(directory).subtracting([identity.node])
        if hadMirror, !added.isEmpty, let handler = newNodesHandler.withLock({ $0 }) {
            logger.info("subtree gained nodes", metadata: ["nodes": "\(added.map(\.rawValue).sorted())"])
            await handler(added)
        }
    }

    public func authenticate(credential: String) async throws -> Principal? {
        if let principal = try await mirror.authenticate(credential: credential) { return principal }
        // Unknown here: maybe a dealer enrolled or moved in since the last refresh. Ask HQ,
        // at most once a second, so forged credentials cannot make us hammer it.
        let now = WallClock.nowMillis()
        let due = lastMissRefresh.withLock { last in
            guard now >= last + 1_000 else { return false }
            last = now
            return true
        }
        guard due else { return nil }
        do { try await refresh() } catch { logger.notice("directory refresh failed", metadata: ["error": "\(error)"]) }
        return try await mirror.authenticate(credential: credential)
    }

    public func tree(of tenant: TenantID) async throws -> NodeTree {
        try checkTenant(tenant)
        return try await mirror.tree(of: tenant)
    }

    public func node(_ id: NodeID, of tenant: TenantID) async throws -> NodeRecord? {
        try checkTenant(tenant)
        return try await mirror.node(id, of: tenant)
    }

    /// Dealers enroll through their country: the token is HQ's, so it is redeemed there.
    public func enroll(token: String) async throws -> EnrollResponse {
        do {
            let response = try await parent.enroll(token: token)
            try? await refresh()
            return response
        } catch AgentError.http(let status, let code, let message) {
            throw APIError(.init(code: status), code, message)
        } catch {
            throw APIError(.badGateway, "parent_unreachable", "enrollment goes through HQ, which could not be reached: \(error)")
        }
    }

    public func directory(for principal: Principal) async throws -> DirectoryResponse {
        try await mirror.directory(for: principal)
    }

    public func store(for tenant: TenantID) throws -> NodeStore {
        try checkTenant(tenant)
        return store
    }

    public func openTenants() -> [TenantID] { [identity.tenant] }

    public func touch(_ principal: Principal) async {
        try? await mirror.touch(principal)
    }

    private func checkTenant(_ tenant: TenantID) throws {
        guard tenant == identity.tenant else { throw StoreError.notFound("tenant '\(tenant)' on node '\(identity.node)'") }
    }
}

import PostgresNIO
import TiersyncCore
import TiersyncStorage

// Taking access away: revoking a node's credentials, decommissioning it.
extension PostgresCatalog {
    public func revoke(node: NodeID, of tenant: TenantID, nowMillis: UInt64) async throws -> Revocation {
        try await transaction(lockingTenant: tenant.rawValue) { db in
            try await db.revoke(node: node, tenant: tenant, now: Int64(clamping: nowMillis))
        }
    }

    public func decommission(node: NodeID, of tenant: TenantID, nowMillis: UInt64) async throws -> Revocation {
        let (t, n, now) = (tenant.rawValue, node.rawValue, Int64(clamping: nowMillis))
        return try await transaction(lockingTenant: t) { db in
            guard try await db.parentLink(t, n) != nil else {
                throw StoreError.notFound("node '\(node)' in tenant '\(tenant)' (a node that never enrolled has nothing to decommission; `admin revoke` deletes its tokens)")
            }
            let below = try await db.rows("""
                SELECT id FROM tiersync_catalog.nodes WHERE tenant = \(t) AND parent = \(n) AND decommissioned_at IS NULL ORDER BY id COLLATE "C"
                """).map { try $0.decode(String.self) }
            if !below.isEmpty {
                throw StoreError.invalidArgument("'\(node)' still has \(below.count) node(s) below it (\(below.prefix(10).joined(separator: ", "))\(below.count > 10 ? ", …" : "")): move them with `tiersync admin move-node` or decommission them first")
            }
            var revocation = try await db.revoke(node: node, tenant: tenant, now: now)
            // Tokens of nodes waiting to enroll under it would make them its children.
            revocation.tokens += try await db.count("""
                WITH gone AS (DELETE FROM tiersync_catalog.enrollment_tokens WHERE tenant = \(t) AND parent = \(n) AND used_at IS NULL RETURNING 1)
                SELECT count(*) FROM gone
                """)
            let at = try await db.rows("""
                UPDATE tiersync_catalog.nodes SET decommissioned_at = COALESCE(decommissioned_at, \(now)) WHERE tenant = \(t) AND id = \(n)
                RETURNING decommissioned_at
                """).first?.decode(Int64.self)
            revocation.decommissionedAtMillis = at.map { UInt64(clamping: $0) }
            try await db.bumpVersion(t)
            return revocation
        }
    }
}

extension CatalogConnection {
    /// Revokes `node`'s credentials and deletes its unused tokens (in the caller's transaction).
    func revoke(node: NodeID, tenant: TenantID, now: Int64) async throws -> Revocation {
        let (t, n) = (tenant.rawValue, node.rawValue)
        guard let root = try await rows("SELECT root FROM tiersync_catalog.tenants WHERE id = \(t)").first.map({ try $0.decode(String.self) }) else {
            throw StoreError.notFound("tenant '\(tenant)'")
        }
        if n == root { throw StoreError.invalidArgument("'\(node)' is the root of tenant '\(tenant)'; it has no credentials to revoke") }
        let known = try await parentLink(t, n) != nil
        let tokens = try await count("""
            WITH gone AS (DELETE FROM tiersync_catalog.enrollment_tokens WHERE tenant = \(t) AND node = \(n) AND used_at IS NULL RETURNING 1)
            SELECT count(*) FROM gone
            """)
        guard known || tokens > 0 else { throw StoreError.notFound("node '\(node)' in tenant '\(tenant)'") }
        let credentials = try await count("""
            WITH revoked AS (UPDATE tiersync_catalog.credentials SET revoked_at = \(now) WHERE tenant = \(t) AND node = \(n) AND revoked_at IS NULL RETURNING 1)
            SELECT count(*) FROM revoked
            """)
        return Revocation(node: node, credentials: credentials, tokens: tokens, decommissionedAtMillis: nil)
    }
}

import PostgresNIO
import TiersyncCore
import TiersyncStorage

extension PostgresCatalog {
    /// Writes a tenant moved from another engine (`admin migrate-tenant`), in one
    /// transaction: the tenant, its nodes, tokens and credential digests as they were, so
    /// its nodes keep their credentials. Refused when the tenant exists here.
    public func importTenant(_ moved: CatalogTenantExport) async throws {
        let t = moved.tenant
        try await transaction(lockingTenant: t.id.rawValue) { db in
            guard try await db.count("SELECT count(*) FROM tiersync_catalog.tenants WHERE id = \(t.id.rawValue)") == 0 else {
                throw StoreError.invalidArgument("tenant '\(t.id)' exists in PostgreSQL already: migrate-tenant moves a tenant only into a database without it")
            }
            try await db.execute("""
                INSERT INTO tiersync_catalog.tenants (id, root, levels, allow_direct_sync, release_key, created_at)
                VALUES (\(t.id.rawValue), \(t.root.rawValue), \(t.levels), \(t.allowDirectSync), \(t.releaseKey), \(t.createdAtMillis))
                """)
            try await db.execute("INSERT INTO tiersync_catalog.catalog_version (tenant, version) VALUES (\(t.id.rawValue), 1)")
            for n in moved.nodes {
                try await db.execute("""
                    INSERT INTO tiersync_catalog.nodes (tenant, id, parent, role, created_at, last_seen, decommissioned_at)
                    VALUES (\(t.id.rawValue), \(n.id.rawValue), \(n.parent?.rawValue), \(n.role), \(n.createdAtMillis), \(n.lastSeenMillis), \(n.decommissionedAtMillis))
                    """)
            }
            for k in moved.tokens {
                try await db.execute("""
                    INSERT INTO tiersync_catalog.enrollment_tokens (hash, tenant, node, parent, role, expires_at, used_at)
                    VALUES (\(k.hash), \(t.id.rawValue), \(k.node.rawValue), \(k.parent?.rawValue), \(k.role), \(k.expiresAtMillis), \(k.usedAtMillis))
                    """)
            }
            for c in moved.credentials {
                try await db.execute("""
                    INSERT INTO tiersync_catalog.credentials (hash, tenant, node, created_at, revoked_at)
                    VALUES (\(c.hash), \(t.id.rawValue), \(c.node.rawValue), \(c.createdAtMillis), \(c.revokedAtMillis))
                    """)
            }
        }
    }

    /// `tenant`'s entries as stored here (nil: none), to compare with what was moved.
    public func exportTenant(_ tenant: TenantID) async throws -> CatalogTenantExport? {
        try await transaction(readOnlySnapshot: true) { db in
            guard let row = try await db.rows("""
                SELECT root, levels, allow_direct_sync, release_key, created_at FROM tiersync_catalog.tenants WHERE id = \(tenant.rawValue)
                """).first else { return nil }
            let (root, levels, direct, key, created) = try row.decode((String, Int, Bool, String?, Int64).self)
            let nodes = try await db.rows("""
                SELECT id, parent, role, created_at, last_seen, decommissioned_at FROM tiersync_catalog.nodes
                WHERE tenant = \(tenant.rawValue) ORDER BY id COLLATE "C"
                """).map { row in
                let (id, parent, role, created, seen, gone) = try row.decode((String, String?, String, Int64, Int64?, Int64?).self)
                return CatalogTenantExport.Node(id: NodeID(unchecked: id), parent: parent.map(NodeID.init(unchecked:)), role: role,
                                                createdAtMillis: created, lastSeenMillis: seen, decommissionedAtMillis: gone)
            }
            let tokens = try await db.rows("""
                SELECT hash, node, parent, role, expires_at, used_at FROM tiersync_catalog.enrollment_tokens
                WHERE tenant = \(tenant.rawValue) ORDER BY hash COLLATE "C"
                """).map { row in
                let (hash, node, parent, role, expires, used) = try row.decode((String, String, String?, String, Int64, Int64?).self)
                return CatalogTenantExport.Token(hash: hash, node: NodeID(unchecked: node), parent: parent.map(NodeID.init(unchecked:)), role: role,
                                                 expiresAtMillis: expires, usedAtMillis: used)
            }
            let credentials = try await db.rows("""
                SELECT hash, node, created_at, revoked_at FROM tiersync_catalog.credentials WHERE tenant = \(tenant.rawValue) ORDER BY hash COLLATE "C"
                """).map { row in
                let (hash, node, created, revoked) = try row.decode((String, String, Int64, Int64?).self)
                return CatalogTenantExport.Credential(hash: hash, node: NodeID(unchecked: node), createdAtMillis: created, revokedAtMillis: revoked)
            }
            return CatalogTenantExport(tenant: .init(id: tenant, root: NodeID(unchecked: root), levels: levels, allowDirectSync: direct,
                                                     releaseKey: key, createdAtMillis: created),
                                       nodes: nodes, tokens: tokens, credentials: credentials)
        }
    }
}

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
            // Its administration: without it the tenant's administrators could not log in,
            // their API tokens were refused, and four-eyes releases were off.
            let admin = moved.administration
            for u in admin.users {
                try await db.execute("""
                    INSERT INTO tiersync_catalog.admin_users (tenant, name, roles, scope, password_hash, created_at, disabled_at, failed_logins, locked_until)
                    VALUES (\(t.id.rawValue), \(u.name), \(u.roles), \(u.scope), \(u.passwordHash), \(u.createdAtMillis), \(u.disabledAtMillis),
                            \(Int(u.failedLogins)), \(u.lockedUntilMillis))
                    """)
            }
            for k in admin.tokens {
                try await db.execute("""
                    INSERT INTO tiersync_catalog.admin_tokens (hash, tenant, "user", kind, name, created_at, expires_at, revoked_at)
                    VALUES (\(k.hash), \(t.id.rawValue), \(k.user), \(k.kind), \(k.name), \(k.createdAtMillis), \(k.expiresAtMillis), \(k.revokedAtMillis))
                    """)
            }
            for a in admin.audit {
                try await db.execute("""
                    INSERT INTO tiersync_catalog.admin_audit (tenant, actor, action, target, detail, address, scope, at)
                    VALUES (\(t.id.rawValue), \(a.actor), \(a.action), \(a.target), \(a.detail), \(a.address), \(a.scope), \(a.atMillis))
                    """)
            }
            for (key, value) in admin.settings.sorted(by: { $0.key < $1.key }) {
                try await db.execute("INSERT INTO tiersync_catalog.admin_settings (tenant, key, value) VALUES (\(t.id.rawValue), \(key), \(value))")
            }
            for r in admin.releaseRequests {
                try await db.execute("""
                    INSERT INTO tiersync_catalog.release_requests
                        (tenant, author, requested_at, notes, targets, source_digest, sources, state, reviewer, decided_at, reason, version)
                    VALUES (\(t.id.rawValue), \(r.author), \(r.requestedAtMillis), \(r.notes), \(r.targets), \(r.sourceDigest), \(r.sources),
                            \(r.state), \(r.reviewer), \(r.decidedAtMillis), \(r.reason), \(r.version))
                    """)
            }
        }
    }

    func exportAdministration(_ db: CatalogConnection, _ tenant: TenantID) async throws -> CatalogTenantExport.Administration {
        let users = try await db.rows("""
            SELECT name, roles, scope, password_hash, created_at, disabled_at, failed_logins, locked_until FROM tiersync_catalog.admin_users
            WHERE tenant = \(tenant.rawValue) ORDER BY name COLLATE "C"
            """).map { row in
            let (name, roles, scope, hash, created, disabled, failed, locked) = try row.decode((String, String, String, String, Int64, Int64?, Int, Int64).self)
            return CatalogTenantExport.AdminUser(name: name, roles: roles, scope: scope, passwordHash: hash, createdAtMillis: created,
                                                 disabledAtMillis: disabled, failedLogins: Int64(failed), lockedUntilMillis: locked)
        }
        let tokens = try await db.rows("""
            SELECT hash, "user", kind, name, created_at, expires_at, revoked_at FROM tiersync_catalog.admin_tokens
            WHERE tenant = \(tenant.rawValue) ORDER BY hash COLLATE "C"
            """).map { row in
            let (hash, user, kind, name, created, expires, revoked) = try row.decode((String, String, String, String, Int64, Int64, Int64?).self)
            return CatalogTenantExport.AdminToken(hash: hash, user: user, kind: kind, name: name, createdAtMillis: created, expiresAtMillis: expires,
                                                  revokedAtMillis: revoked)
        }
        let audit = try await db.rows("""
            SELECT actor, action, target, detail, address, scope, at FROM tiersync_catalog.admin_audit WHERE tenant = \(tenant.rawValue) ORDER BY id
            """).map { row in
            let (actor, action, target, detail, address, scope, at) = try row.decode((String, String, String, String, String, String, Int64).self)
            return CatalogTenantExport.AuditEntry(actor: actor, action: action, target: target, detail: detail, address: address, scope: scope, atMillis: at)
        }
        var settings: [String: String] = [:]
        for row in try await db.rows("SELECT key, value FROM tiersync_catalog.admin_settings WHERE tenant = \(tenant.rawValue)") {
            let (key, value) = try row.decode((String, String).self)
            settings[key] = value
        }
        let requests = try await db.rows("""
            SELECT author, requested_at, notes, targets, source_digest, sources, state, reviewer, decided_at, reason, version
            FROM tiersync_catalog.release_requests WHERE tenant = \(tenant.rawValue) ORDER BY id
            """).map { row in
            let (author, at, notes, targets, digest, sources, state, reviewer, decided, reason, version) =
                try row.decode((String, Int64, String, String?, String, String, String, String?, Int64?, String?, Int64?).self)
            return CatalogTenantExport.ReleaseRequest(author: author, requestedAtMillis: at, notes: notes, targets: targets, sourceDigest: digest,
                                                      sources: sources, state: state, reviewer: reviewer, decidedAtMillis: decided, reason: reason,
                                                      version: version)
        }
        return .init(users: users, tokens: tokens, audit: audit, settings: settings, releaseRequests: requests)
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
                                       nodes: nodes, tokens: tokens, credentials: credentials,
                                       administration: try await exportAdministration(db, tenant))
        }
    }
}

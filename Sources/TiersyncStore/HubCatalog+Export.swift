import GRDB
import TiersyncCore

extension HubCatalog {
    /// `tenant`'s catalog entries as stored (nil: no such tenant), for moving it to another
    /// engine (`admin migrate-tenant`).
    public func exportTenant(_ tenant: TenantID) throws -> CatalogTenantExport? {
        try writer.read { db in
            guard let t = try Row.fetchOne(db, sql: "SELECT id, root, levels, allow_direct_sync, release_key, created_at FROM tenants WHERE id = ?",
                                           arguments: [tenant.rawValue]) else { return nil }
            let nodes = try Row.fetchAll(db, sql: """
                SELECT id, parent, role, created_at, last_seen, decommissioned_at FROM nodes WHERE tenant = ? ORDER BY id
                """, arguments: [tenant.rawValue]).map {
                CatalogTenantExport.Node(id: NodeID(unchecked: $0[0]), parent: ($0[1] as String?).map(NodeID.init(unchecked:)), role: $0[2],
                                         createdAtMillis: $0[3], lastSeenMillis: $0[4], decommissionedAtMillis: $0[5])
            }
            let tokens = try Row.fetchAll(db, sql: """
                SELECT hash, node, parent, role, expires_at, used_at FROM enrollment_tokens WHERE tenant = ? ORDER BY hash
                """, arguments: [tenant.rawValue]).map {
                CatalogTenantExport.Token(hash: $0[0], node: NodeID(unchecked: $0[1]), parent: ($0[2] as String?).map(NodeID.init(unchecked:)),
                                          role: $0[3], expiresAtMillis: $0[4], usedAtMillis: $0[5])
            }
            let credentials = try Row.fetchAll(db, sql: """
                SELECT hash, node, created_at, revoked_at FROM credentials WHERE tenant = ? ORDER BY hash
                """, arguments: [tenant.rawValue]).map {
                CatalogTenantExport.Credential(hash: $0[0], node: NodeID(unchecked: $0[1]), createdAtMillis: $0[2], revokedAtMillis: $0[3])
            }
            return CatalogTenantExport(tenant: .init(id: tenant, root: NodeID(unchecked: t[1]), levels: t[2], allowDirectSync: (t[3] as Int) != 0,
                                                     releaseKey: t[4], createdAtMillis: t[5]),
                                       nodes: nodes, tokens: tokens, credentials: credentials, administration: try Self.exportAdministration(db, tenant))
        }
    }

    static func exportAdministration(_ db: Database, _ tenant: TenantID) throws -> CatalogTenantExport.Administration {
        let users = try Row.fetchAll(db, sql: """
            SELECT name, roles, scope, password_hash, created_at, disabled_at, failed_logins, locked_until FROM admin_users
            WHERE tenant = ? ORDER BY CAST(name AS BLOB)
            """, arguments: [tenant.rawValue]).map {
            CatalogTenantExport.AdminUser(name: $0[0], roles: $0[1], scope: $0[2], passwordHash: $0[3], createdAtMillis: $0[4],
                                          disabledAtMillis: $0[5], failedLogins: $0[6], lockedUntilMillis: $0[7])
        }
        let tokens = try Row.fetchAll(db, sql: """
            SELECT hash, user, kind, name, created_at, expires_at, revoked_at FROM admin_tokens WHERE tenant = ? ORDER BY hash
            """, arguments: [tenant.rawValue]).map {
            CatalogTenantExport.AdminToken(hash: $0[0], user: $0[1], kind: $0[2], name: $0[3], createdAtMillis: $0[4], expiresAtMillis: $0[5],
                                           revokedAtMillis: $0[6])
        }
        let audit = try Row.fetchAll(db, sql: """
            SELECT actor, action, target, detail, address, scope, at FROM admin_audit WHERE tenant = ? ORDER BY id
            """, arguments: [tenant.rawValue]).map {
            CatalogTenantExport.AuditEntry(actor: $0[0], action: $0[1], target: $0[2], detail: $0[3], address: $0[4], scope: $0[5], atMillis: $0[6])
        }
        var settings: [String: String] = [:]
        for row in try Row.fetchAll(db, sql: "SELECT key, value FROM admin_settings WHERE tenant = ?", arguments: [tenant.rawValue]) {
            settings[row[0]] = row[1]
        }
        let requests = try Row.fetchAll(db, sql: """
            SELECT author, requested_at, notes, targets, source_digest, sources, state, reviewer, decided_at, reason, version
            FROM release_requests WHERE tenant = ? ORDER BY id
            """, arguments: [tenant.rawValue]).map {
            CatalogTenantExport.ReleaseRequest(author: $0[0], requestedAtMillis: $0[1], notes: $0[2], targets: $0[3], sourceDigest: $0[4],
                                               sources: $0[5], state: $0[6], reviewer: $0[7], decidedAtMillis: $0[8], reason: $0[9], version: $0[10])
        }
        return .init(users: users, tokens: tokens, audit: audit, settings: settings, releaseRequests: requests)
    }
}

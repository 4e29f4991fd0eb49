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
                                       nodes: nodes, tokens: tokens, credentials: credentials)
        }
    }
}

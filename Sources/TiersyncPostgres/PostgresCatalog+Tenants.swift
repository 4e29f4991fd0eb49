import PostgresNIO
import TiersyncCore
import TiersyncStorage

// Tenants, their settings and moving nodes.
extension PostgresCatalog {
    @discardableResult
    public func createTenant(_ tenant: TenantID, root: NodeID, levels: Int, allowDirectSync: Bool, nowMillis: UInt64) async throws -> Bool {
        guard (2...3).contains(levels) else { throw StoreError.invalidArgument("a tenant has 2 or 3 levels, not \(levels)") }
        let now = Int64(clamping: nowMillis)
        return try await transaction(lockingTenant: tenant.rawValue) { db in
            // Refused for a new tenant only: an existing one is answered as before (not created again).
            if let refusal = NewName.refusal("tenant", tenant.rawValue) ?? NewName.refusal("node", root.rawValue),
               try await db.rows("SELECT 1 FROM tiersync_catalog.tenants WHERE id = \(tenant.rawValue)").isEmpty {
                throw StoreError.invalidArgument(refusal)
            }
            let inserted = try await db.rows("""
                INSERT INTO tiersync_catalog.tenants (id, root, levels, allow_direct_sync, created_at)
                VALUES (\(tenant.rawValue), \(root.rawValue), \(levels), \(allowDirectSync), \(now))
                ON CONFLICT (id) DO NOTHING RETURNING 1
                """)
            guard !inserted.isEmpty else { return false }
            try await db.execute("""
                INSERT INTO tiersync_catalog.nodes (tenant, id, parent, role, created_at)
                VALUES (\(tenant.rawValue), \(root.rawValue), NULL, \(NodeRole.hq.rawValue), \(now))
                """)
            try await db.execute("INSERT INTO tiersync_catalog.catalog_version (tenant, version) VALUES (\(tenant.rawValue), 1)")
            return true
        }
    }

    public func tenants() async throws -> [(tenant: TenantID, root: NodeID)] {
        try await read("SELECT id, root FROM tiersync_catalog.tenants ORDER BY id COLLATE \"C\"").map {
            let (id, root) = try $0.decode((String, String).self)
            return (TenantID(stringLiteral: id), NodeID(unchecked: root))
        }
    }

    public func settings(of tenant: TenantID) async throws -> TenantSettings? {
        try await read("""
            SELECT root, levels, allow_direct_sync, release_key FROM tiersync_catalog.tenants WHERE id = \(tenant.rawValue)
            """).first.map {
            let (root, levels, allow, key) = try $0.decode((String, Int, Bool, String?).self)
            return TenantSettings(tenant: tenant, root: NodeID(unchecked: root), levels: levels, allowDirectSync: allow, releaseKey: key)
        }
    }

    public func setAllowDirectSync(_ allowed: Bool, for tenant: TenantID) async throws {
        try await transaction { db in
            let updated = try await db.rows("""
                UPDATE tiersync_catalog.tenants SET allow_direct_sync = \(allowed) WHERE id = \(tenant.rawValue) RETURNING 1
                """)
            guard !updated.isEmpty else { throw StoreError.notFound("tenant '\(tenant)'") }
            try await db.bumpVersion(tenant.rawValue)
        }
    }

    public func root(of tenant: TenantID) async throws -> NodeID? {
        try await read("SELECT root FROM tiersync_catalog.tenants WHERE id = \(tenant.rawValue)")
            .first.map { NodeID(unchecked: try $0.decode(String.self)) }
    }

    public func moveNode(_ node: NodeID, of tenant: TenantID, to parent: NodeID) async throws {
        try await transaction(lockingTenant: tenant.rawValue) { db in
            let tree = try await db.tree(tenant.rawValue)
            guard tree.parents[node] != nil else { throw StoreError.notFound("node '\(node)' in tenant '\(tenant)'") }
            guard tree.parents[parent] != nil else { throw StoreError.notFound("node '\(parent)' in tenant '\(tenant)'") }
            if tree.isRoot(node) { throw StoreError.invalidArgument("'\(node)' is the root of tenant '\(tenant)' and cannot move") }
            if try await db.isDecommissioned(tenant.rawValue, parent.rawValue) {
                throw StoreError.invalidArgument("'\(parent)' was decommissioned; a node cannot move under it")
            }
            // Moved, a decommissioned node looked placed again, and is not (helper 83).
            if try await db.isDecommissioned(tenant.rawValue, node.rawValue) {
                throw StoreError.invalidArgument("'\(node)' was decommissioned; it does not move")
            }
            if tree.subtree(of: node).contains(parent) {
                throw StoreError.invalidArgument("cannot move '\(node)' under '\(parent)', which is inside its own subtree")
            }
            let newDepth = tree.depth(of: parent) + 1, depth = tree.depth(of: node)
            guard newDepth == depth else {
                throw StoreError.invalidArgument("moving '\(node)' under '\(parent)' would change its level from \(depth) to \(newDepth); a node moves only to a parent on the level above it")
            }
            try await db.execute("""
                UPDATE tiersync_catalog.nodes SET parent = \(parent.rawValue) WHERE tenant = \(tenant.rawValue) AND id = \(node.rawValue)
                """)
            try await db.bumpVersion(tenant.rawValue)
            // A token issued before the move would put the node back under its old parent.
            try await db.execute("""
                DELETE FROM tiersync_catalog.enrollment_tokens WHERE tenant = \(tenant.rawValue) AND node = \(node.rawValue) AND used_at IS NULL
                """)
        }
    }
}

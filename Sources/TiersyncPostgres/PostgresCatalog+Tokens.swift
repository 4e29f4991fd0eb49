import PostgresNIO
import TiersyncCore
import TiersyncStorage

// Enrollment: issuing tokens and redeeming them for credentials.
extension PostgresCatalog {
    public func issueEnrollmentToken(tenant: TenantID, node: NodeID, parent: NodeID?, role expectedRole: String?,
                                     ttlSeconds: UInt64, nowMillis: UInt64) async throws -> String {
        let now = Int64(clamping: nowMillis)
        let t = tenant.rawValue
        return try await transaction(lockingTenant: t) { db in
            guard let tenantRow = try await db.rows("SELECT root, levels FROM tiersync_catalog.tenants WHERE id = \(t)").first else {
                throw StoreError.notFound("tenant '\(tenant)'")
            }
            // A node already given its name (a dealer re-enrolling after its disk died) keeps it.
            if let refusal = NewName.refusal("node", node.rawValue), try await db.parentLink(t, node.rawValue) == nil,
               try await db.pendingLevel(t, node.rawValue, levels: 3, now: now) == nil {
                throw StoreError.invalidArgument(refusal)
            }
            let (root, levels) = try tenantRow.decode((String, Int).self)
            if node.rawValue == root { throw StoreError.invalidArgument("'\(node)' is the root of tenant '\(tenant)'; it runs on the hub and does not enroll") }
            let parentID = parent?.rawValue ?? root
            // A parent that has not enrolled yet but holds a pending token counts at the
            // level its token gives it (a country's dealers get their tokens with the
            // country's); the node itself is still refused until its parent has enrolled.
            let parentLevel: Int
            if try await db.parentLink(t, parentID) != nil {
                parentLevel = try await db.level(t, parentID)
            } else if let pending = try await db.pendingLevel(t, parentID, levels: levels, now: now) {
                parentLevel = pending
            } else {
                throw StoreError.notFound("parent node '\(parentID)' in tenant '\(tenant)'")
            }
            let depth = parentLevel + 1
            guard depth <= levels else {
                throw StoreError.invalidArgument("tenant '\(tenant)' has \(levels) levels; '\(node)' under '\(parentID)' would be level \(depth)")
            }
            if try await db.isDecommissioned(t, node.rawValue) {
                throw StoreError.invalidArgument("node '\(node)' was decommissioned and cannot enroll again; give a new node a new identifier")
            }
            if try await db.isDecommissioned(t, parentID) {
                throw StoreError.invalidArgument("parent node '\(parentID)' was decommissioned")
            }
            let existingLink = try await db.parentLink(t, node.rawValue)
            if let existing = existingLink, existing != parentID {
                throw StoreError.invalidArgument("node '\(node)' already exists under '\(existing ?? "-")'; move it with `tiersync admin move-node`")
            }
            // A name promised under another parent is not free: redeeming both would move
            // the node, with what the first holder wrote under its name, to the other parent.
            if let promised = try await db.rows("""
                SELECT parent FROM tiersync_catalog.enrollment_tokens
                WHERE tenant = \(t) AND node = \(node.rawValue) AND parent <> \(parentID) AND used_at IS NULL AND expires_at >= \(now) LIMIT 1
                """).first.map({ try $0.decode(String.self) }) {
                throw EnrollmentClaimConflict("node '\(node)' has a pending enrollment token under '\(promised)'; revoke it or let it expire first")
            }
            let role: NodeRole = depth == levels ? .dealer : .country
            if let expectedRole, expectedRole != role.rawValue {
                throw StoreError.invalidArgument("'\(node)' at level \(depth) of a \(levels)-level tenant is a \(role.rawValue), not a \(expectedRole)")
            }
            // Nodes already have tokens under this one, which has not enrolled: it must
            // enroll at the level they were issued for.
            if role == .dealer, existingLink == nil,
               let child = try await db.rows("""
                   SELECT node FROM tiersync_catalog.enrollment_tokens
                   WHERE tenant = \(t) AND parent = \(node.rawValue) AND used_at IS NULL AND expires_at >= \(now) LIMIT 1
                   """).first.map({ try $0.decode(String.self) }) {
                throw EnrollmentClaimConflict("'\(node)' under '\(parentID)' would be a dealer, but '\(child)' has a pending enrollment token under it")
            }
            let token = Secrets.new(.enrollmentToken)
            let expires = Int64(clamping: nowMillis.addingReportingOverflow(ttlSeconds.multipliedReportingOverflow(by: 1000).partialValue).partialValue)
            try await db.execute("""
                INSERT INTO tiersync_catalog.enrollment_tokens (hash, tenant, node, parent, role, expires_at)
                VALUES (\(Secrets.digest(token)), \(t), \(node.rawValue), \(parentID), \(role.rawValue), \(expires))
                """)
            return token
        }
    }

    public func redeem(token: String, via relayer: Principal?, expecting: EnrollmentSubject?, nowMillis: UInt64) async throws -> EnrollResponse {
        let hash = Secrets.digest(token), now = Int64(clamping: nowMillis)
        // The token's tenant first, without a lock (it never changes), to take the tenant's
        // lock before anything else: enrolling checks and changes the tree.
        guard let tenant = try await read("SELECT tenant FROM tiersync_catalog.enrollment_tokens WHERE hash = \(hash)")
            .first.map({ try $0.decode(String.self) }) else { throw EnrollmentError.unknownToken }
        // Another tenant's token, relayed by a country: unknown to it, and kept.
        if let relayer, relayer.tenant.rawValue != tenant { throw EnrollmentError.unknownToken }
        if let expecting, expecting.tenant.rawValue != tenant { throw EnrollmentError.unknownToken }
        let via = relayer?.node
        return try await transaction(lockingTenant: tenant) { db in
            // The single use: only an unused, unexpired token is claimed, whatever other
            // processes do at the same time (a second claim waits for the first to commit,
            // then finds the token used). Everything refused below rolls the claim back, so
            // the token stays usable, as the SQLite catalog keeps it.
            guard let claimed = try await db.rows("""
                UPDATE tiersync_catalog.enrollment_tokens SET used_at = \(now)
                WHERE hash = \(hash) AND used_at IS NULL AND expires_at >= \(now)
                RETURNING node, parent, role
                """).first else {
                guard let row = try await db.rows("SELECT used_at, expires_at FROM tiersync_catalog.enrollment_tokens WHERE hash = \(hash)").first else {
                    throw EnrollmentError.unknownToken // deleted meanwhile (revoked, moved)
                }
                let (usedAt, expiresAt) = try row.decode((Int64?, Int64).self)
                if usedAt != nil { throw EnrollmentError.alreadyUsed }
                throw EnrollmentError.expired(atMillis: UInt64(clamping: expiresAt))
            }
            let (node, parent, role) = try claimed.decode((String, String?, String).self)
            // Refused here, the claim rolls back: the token stays for the node it is for.
            try EnrollmentError.check(expecting, tenant: tenant, node: node)
            // Tokens are deleted when a node is decommissioned; this holds against any left.
            if try await db.isDecommissioned(tenant, node) { throw NodeDecommissioned(node: NodeID(unchecked: node)) }
            if let parent, try await db.isDecommissioned(tenant, parent) { throw NodeDecommissioned(node: NodeID(unchecked: parent)) }
            if let via, parent != via.rawValue {
                throw EnrollmentError.wrongParent(node: NodeID(unchecked: node), parent: parent.map(NodeID.init(unchecked:)), via: via)
            }
            if let parent, try await db.parentLink(tenant, parent) == nil {
                // Issued while the parent had only a token of its own; it has not enrolled
                // since, so nothing could have forwarded this request (`via` is enrolled).
                let root = try await db.rows("SELECT root FROM tiersync_catalog.tenants WHERE id = \(tenant)")
                    .first.map { try $0.decode(String.self) } ?? "hq"
                throw EnrollmentError.wrongParent(node: NodeID(unchecked: node), parent: NodeID(unchecked: parent),
                                                  via: via ?? NodeID(unchecked: root))
            }
            // Enrolled elsewhere since the token was issued (a move deletes the node's tokens;
            // this holds against any left): the token does not move it.
            if let existing = try await db.parentLink(tenant, node), existing != parent {
                throw EnrollmentError.enrolledElsewhere(node: NodeID(unchecked: node))
            }
            try await db.execute("""
                INSERT INTO tiersync_catalog.nodes (tenant, id, parent, role, created_at) VALUES (\(tenant), \(node), \(parent), \(role), \(now))
                ON CONFLICT (tenant, id) DO UPDATE SET parent = excluded.parent, role = excluded.role
                """)
            try await db.bumpVersion(tenant)
            try await db.execute("""
                UPDATE tiersync_catalog.credentials SET revoked_at = \(now) WHERE tenant = \(tenant) AND node = \(node) AND revoked_at IS NULL
                """)
            let credential = Secrets.new(.credential)
            try await db.execute("""
                INSERT INTO tiersync_catalog.credentials (hash, tenant, node, created_at) VALUES (\(Secrets.digest(credential)), \(tenant), \(node), \(now))
                """)
            let releaseKey = try await db.rows("SELECT release_key FROM tiersync_catalog.tenants WHERE id = \(tenant)")
                .first?.decode(String?.self) ?? nil
            return EnrollResponse(tenant: TenantID(stringLiteral: tenant), node: NodeID(unchecked: node),
                                  parent: parent.map(NodeID.init(unchecked:)), credential: credential, releaseKey: releaseKey)
        }
    }
}

extension CatalogConnection {
    /// The level of an existing node, 1 for the root, counting it and its ancestors (one
    /// recursive query; at most 64 steps up, against a cycle).
    func level(_ tenant: String, _ node: String) async throws -> Int {
        try await count("""
            WITH RECURSIVE up (id, parent, depth) AS (
                SELECT id, parent, 1 FROM tiersync_catalog.nodes WHERE tenant = \(tenant) AND id = \(node)
                UNION ALL
                SELECT n.id, n.parent, up.depth + 1 FROM tiersync_catalog.nodes n JOIN up ON n.tenant = \(tenant) AND n.id = up.parent
                WHERE up.depth < 64
            )
            SELECT max(depth)::bigint FROM up
            """)
    }

    /// The level a node that has not enrolled yet will have, from its unused, unexpired
    /// enrollment tokens (the deepest, if several); nil when it has none.
    func pendingLevel(_ tenant: String, _ node: String, levels: Int, now: Int64) async throws -> Int? {
        try await rows("""
            SELECT role FROM tiersync_catalog.enrollment_tokens WHERE tenant = \(tenant) AND node = \(node) AND used_at IS NULL AND expires_at >= \(now)
            """).map { (NodeRole(rawValue: try $0.decode(String.self)) ?? .country).level(inTenantOf: levels) }.max()
    }
}

import Crypto
import Foundation
import GRDB
import Synchronization
import TiersyncCore
import TiersyncStorage

/// The hub's catalog (`hub.sqlite`): tenants, their node trees, enrollment tokens and
/// node credentials. Secrets are stored as SHA-256 digests only. Each tenant's records
/// live in a database of their own (see ``TenantStores``).
public final class HubCatalog: Sendable {
    public let directory: String
    let writer: DatabasePool
    /// Trees (and who may sync with the root directly) by tenant, valid while
    /// `catalog_version` is unchanged. Never credentials: every request's credential is
    /// looked up in the database, so a revocation takes effect at the next request.
    private let trees = Mutex<[TenantID: TenantSnapshot]>([:])
    /// Tenants moved to another engine (``TenantMove``), read when the catalog opens: the
    /// migration runs with the hub stopped (it holds the directory's lock).
    private let moves = Mutex<[TenantID: TenantMove]>([:])

    struct TenantSnapshot {
        var version: Int64
        var tree: NodeTree
        var allowDirectSync: Bool
    }

    public init(directory: String) throws {
        self.directory = directory
        try FileManager.default.createDirectory(atPath: directory + "/tenants", withIntermediateDirectories: true)
        writer = try StoreConfiguration.openPool(path: directory + "/hub.sqlite")
        var m = DatabaseMigrator()
        m.registerMigration("v1-catalog") { db in
            try db.execute(sql: """
                CREATE TABLE tenants (id TEXT PRIMARY KEY NOT NULL, root TEXT NOT NULL, created_at INTEGER NOT NULL);
                CREATE TABLE nodes (
                    tenant TEXT NOT NULL REFERENCES tenants(id),
                    id TEXT NOT NULL,
                    parent TEXT,
                    role TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    last_seen INTEGER,
                    PRIMARY KEY (tenant, id)
                ) WITHOUT ROWID;
                CREATE TABLE enrollment_tokens (
                    hash TEXT PRIMARY KEY NOT NULL,
                    tenant TEXT NOT NULL,
                    node TEXT NOT NULL,
                    parent TEXT,
                    role TEXT NOT NULL,
                    expires_at INTEGER NOT NULL,
                    used_at INTEGER
                );
                CREATE TABLE credentials (
                    hash TEXT PRIMARY KEY NOT NULL,
                    tenant TEXT NOT NULL,
                    node TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    revoked_at INTEGER
                );
                """)
        }
        m.registerMigration("v2-levels") { db in
            // How deep a tenant's tree is: 2 (HQ → agents; every tenant before this
            // migration) or 3 (HQ → countries → dealers).
            try db.execute(sql: "ALTER TABLE tenants ADD COLUMN levels INTEGER NOT NULL DEFAULT 2")
        }
        m.registerMigration("v3-tree-version") { db in
            // Bumped by every write that changes a tree, so hub processes can cache trees
            // and still see changes made by another process (an admin's CLI).
            try db.execute(sql: "CREATE TABLE catalog_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)")
            try db.execute(sql: "INSERT INTO catalog_version (id, version) VALUES (1, 0)")
        }
        m.registerMigration("v4-release-key") { db in
            // The tenant's governance release key (Ed25519 public key, base64): handed to
            // nodes at enrollment so they can verify what HQ publishes.
            try db.execute(sql: "ALTER TABLE tenants ADD COLUMN release_key TEXT")
        }
        m.registerMigration("v5-pending-token-index") { db in
            // Tokens may name a parent that has not enrolled yet; issuing a token looks up
            // the unused ones by node and by parent (one point lookup each, not a scan).
            try db.execute(sql: """
                CREATE INDEX enrollment_tokens_node ON enrollment_tokens (tenant, node) WHERE used_at IS NULL;
                CREATE INDEX enrollment_tokens_parent ON enrollment_tokens (tenant, parent) WHERE used_at IS NULL;
                """)
        }
        m.registerMigration("v6-decommissioned") { db in
            // A decommissioned node keeps its row (its place in the tree, its data) but never
            // enrolls again (`admin decommission`).
            try db.execute(sql: "ALTER TABLE nodes ADD COLUMN decommissioned_at INTEGER")
        }
        m.registerMigration("v7-direct-sync") { db in
            // Whether nodes below the root's children may sync with HQ directly (default: no,
            // a dealer syncs through its country).
            try db.execute(sql: "ALTER TABLE tenants ADD COLUMN allow_direct_sync INTEGER NOT NULL DEFAULT 0")
        }
        m.registerMigration("v8-node-lag") { db in
            // The last lag each node reported (`POST /v1/status`): changes waiting there to go
            // upward and the oldest one's age, measured at `measured_at` (hub clock, ms).
            try db.execute(sql: """
                CREATE TABLE node_lag (
                    tenant TEXT NOT NULL,
                    node TEXT NOT NULL,
                    pending INTEGER NOT NULL,
                    oldest_pending_ms INTEGER NOT NULL,
                    measured_at INTEGER NOT NULL,
                    PRIMARY KEY (tenant, node)
                ) WITHOUT ROWID
                """)
        }
        m.registerMigration("v8b-node-clock") { db in
            // The clock offset a node last reported with its lag (null: none measured lately).
            try db.execute(sql: "ALTER TABLE node_lag ADD COLUMN clock_offset_ms INTEGER")
        }
        m.registerMigration("v9-admin") { db in
            try HubCatalog.createAdminTables(db)
        }
        m.registerMigration("v10-release-requests") { db in
            try HubCatalog.createReleaseRequestTables(db)
        }
        m.registerMigration("v11-admin-token-owner") { db in
            // Storing a token deletes its user's revoked and expired rows and counts the live
            // ones (``AdminAccountStore/storeAdminToken(digest:_:limit:nowMillis:)``): by key,
            // revoked rows included, which the partial index leaves out.
            try db.execute(sql: "CREATE INDEX admin_tokens_owner ON admin_tokens (tenant, user, kind)")
        }
        m.registerMigration("v12-moved-tenants") { db in
            try db.execute(sql: "CREATE TABLE moved_tenants (tenant TEXT PRIMARY KEY NOT NULL, target TEXT NOT NULL, moved_at INTEGER NOT NULL)")
        }
        m.registerMigration("v13-tenant-stores") { db in
            // The tenants whose database this hub made (``TenantStores/store(for:)``): such a
            // file found missing or empty was lost, and is not made again empty. Filled at
            // once with the tenants whose file is there, so an upgraded hub protects its idle
            // tenants too.
            try db.execute(sql: "CREATE TABLE tenant_stores (tenant TEXT PRIMARY KEY NOT NULL, made_at INTEGER NOT NULL)")
            let now = Int64(clamping: WallClock.nowMillis())
            for tenant in try String.fetchAll(db, sql: "SELECT id FROM tenants") {
                let path = HubCatalog.tenantDatabasePath(TenantID(stringLiteral: tenant), in: directory)
                let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.int64Value ?? 0
                if size > 0 { try db.execute(sql: "INSERT INTO tenant_stores (tenant, made_at) VALUES (?, ?)", arguments: [tenant, now]) }
            }
        }
        try m.migrate(writer)
        let held = try writer.read { db in
            try Row.fetchAll(db, sql: "SELECT tenant, target, moved_at FROM moved_tenants").map {
                (TenantID(stringLiteral: $0["tenant"]), TenantMove(target: $0["target"], movedAtMillis: UInt64(max(0, $0["moved_at"] as Int64))))
            }
        }
        moves.withLock { $0 = Dictionary(held, uniquingKeysWith: { a, _ in a }) }
    }

    /// Marks `tenant` as moved to `target` (``TenantMove``): from then on this catalog's hub
    /// refuses its nodes, enrollments and administrators, naming where it went.
    public func markMoved(_ tenant: TenantID, to target: String, nowMillis: UInt64 = WallClock.nowMillis()) throws {
        try writer.write { db in
            try db.execute(sql: "INSERT OR REPLACE INTO moved_tenants (tenant, target, moved_at) VALUES (?, ?, ?)",
                           arguments: [tenant.rawValue, target, Int64(clamping: nowMillis)])
        }
        moves.withLock { $0[tenant] = TenantMove(target: target, movedAtMillis: nowMillis) }
    }

    public func movedAway(_ tenant: TenantID) -> TenantMove? {
        moves.withLock { $0[tenant] }
    }

    /// Refuses a change to a moved tenant's entries (``TenantMove``): made here, it reached
    /// no hub that serves the tenant, and the command said it was done (helper 104).
    func refuseIfMoved(_ tenant: TenantID) throws {
        if let move = movedAway(tenant) { throw TenantMovedAway(tenant: tenant, move: move) }
    }

    /// Whether this hub made (or first opened) `tenant`'s database file.
    public func madeStore(of tenant: TenantID) throws -> Bool {
        try writer.read { db in try Bool.fetchOne(db, sql: "SELECT 1 FROM tenant_stores WHERE tenant = ?", arguments: [tenant.rawValue]) ?? false }
    }

    /// Records that `tenant`'s database file is made (``madeStore(of:)``).
    public func noteStoreMade(of tenant: TenantID, nowMillis: UInt64 = WallClock.nowMillis()) throws {
        try writer.write { db in
            try db.execute(sql: "INSERT OR IGNORE INTO tenant_stores (tenant, made_at) VALUES (?, ?)", arguments: [tenant.rawValue, Int64(clamping: nowMillis)])
        }
    }

    /// The SQLite file holding one tenant's records.
    public func tenantDatabasePath(_ tenant: TenantID) -> String {
        Self.tenantDatabasePath(tenant, in: directory)
    }

    /// The SQLite file holding one tenant's records, in the hub directory `directory`.
    static func tenantDatabasePath(_ tenant: TenantID, in directory: String) -> String {
        "\(directory)/tenants/\(tenant.rawValue).sqlite"
    }

    // MARK: Tenants and nodes

    /// Creates a tenant with its root (HQ) node; returns false when it already exists.
    /// `levels` is the depth of the tenant's tree: 2 (HQ and its agents) or 3 (HQ,
    /// countries, dealers).
    /// `allowDirectSync` lets nodes below the root's children sync with HQ directly.
    @discardableResult
    public func createTenant(_ tenant: TenantID, root: NodeID = "hq", levels: Int = 2, allowDirectSync: Bool = false,
                             nowMillis: UInt64 = WallClock.nowMillis()) throws -> Bool {
        guard (2...3).contains(levels) else { throw StoreError.invalidArgument("a tenant has 2 or 3 levels, not \(levels)") }
        return try writer.write { db in
            if try Bool.fetchOne(db, sql: "SELECT 1 FROM tenants WHERE id = ?", arguments: [tenant.rawValue]) ?? false { return false }
            if let refusal = NewName.refusal("tenant", tenant.rawValue) ?? NewName.refusal("node", root.rawValue) { throw StoreError.invalidArgument(refusal) }
            try db.execute(sql: "INSERT INTO tenants (id, root, created_at, levels, allow_direct_sync) VALUES (?, ?, ?, ?, ?)",
                           arguments: [tenant.rawValue, root.rawValue, Int64(nowMillis), levels, allowDirectSync])
            try db.execute(sql: "INSERT INTO nodes (tenant, id, parent, role, created_at) VALUES (?, ?, NULL, ?, ?)",
                           arguments: [tenant.rawValue, root.rawValue, NodeRole.hq.rawValue, Int64(nowMillis)])
            try Self.bumpVersion(db)
            return true
        }
    }

    public func tenants() throws -> [(tenant: TenantID, root: NodeID)] {
        try writer.read { db in
            try Row.fetchAll(db, sql: "SELECT id, root FROM tenants ORDER BY id").map {
                (TenantID(stringLiteral: $0["id"]), NodeID(unchecked: $0["root"]))
            }
        }
    }

    /// Tenants served here (not moved away) whose nodes hold live credentials but whose
    /// database file is missing, with how many credentials: a directory put back without
    /// them (their data is lost there). A tenant no node enrolled in has no file yet, rightly.
    /// A country node's mirror of its subtree (its root has a parent) keeps its records in
    /// the country's own store, never here: not counted (helper 102: its backup failed).
    public static func tenantsMissingData(directory: String) throws -> [(tenant: TenantID, credentials: Int)] {
        // Read only, never migrated: a backup stays what the source was (helper 104).
        var configuration = Configuration()
        configuration.readonly = true
        let queue = try DatabaseQueue(path: directory + "/hub.sqlite", configuration: configuration)
        let counted: [(tenant: TenantID, credentials: Int)] = try queue.read { db in
            let moved = try db.tableExists("moved_tenants") ? "AND c.tenant NOT IN (SELECT tenant FROM moved_tenants)" : ""
            let sql = """
                SELECT c.tenant, COUNT(*) AS n FROM credentials c JOIN tenants t ON t.id = c.tenant
                WHERE c.revoked_at IS NULL \(moved)
                  AND NOT EXISTS (SELECT 1 FROM nodes r WHERE r.tenant = t.id AND r.id = t.root AND r.parent IS NOT NULL)
                GROUP BY c.tenant ORDER BY c.tenant
                """
            return try Row.fetchAll(db, sql: sql).map { row -> (tenant: TenantID, credentials: Int) in
                (TenantID(stringLiteral: row["tenant"]), row["n"])
            }
        }
        // And the tenants whose file the hub made (``madeStore(of:)``), enrolled nodes or not.
        let made: [TenantID] = try queue.read { db in
            guard try db.tableExists("tenant_stores") else { return [] }
            let moved = try db.tableExists("moved_tenants") ? "WHERE tenant NOT IN (SELECT tenant FROM moved_tenants)" : ""
            return try String.fetchAll(db, sql: "SELECT tenant FROM tenant_stores \(moved) ORDER BY tenant").map { TenantID(stringLiteral: $0) }
        }
        let listed = Set(counted.map(\.tenant))
        let all = counted + made.filter { !listed.contains($0) }.map { (tenant: $0, credentials: 0) }
        return all.filter { !FileManager.default.fileExists(atPath: tenantDatabasePath($0.tenant, in: directory)) }.sorted { $0.tenant.rawValue < $1.tenant.rawValue }
    }

    /// The tenant's settings; nil when there is no such tenant.
    public func settings(of tenant: TenantID) throws -> TenantSettings? {
        try writer.read { db in
            try Row.fetchOne(db, sql: "SELECT root, levels, allow_direct_sync, release_key FROM tenants WHERE id = ?",
                             arguments: [tenant.rawValue]).map {
                TenantSettings(tenant: tenant, root: NodeID(unchecked: $0["root"]), levels: $0["levels"],
                               allowDirectSync: $0["allow_direct_sync"], releaseKey: $0["release_key"])
            }
        }
    }

    /// Lets nodes below the root's children (dealers of a three-level tenant) sync with HQ
    /// directly, or not. Hub processes see the change at their next request.
    public func setAllowDirectSync(_ allowed: Bool, for tenant: TenantID) throws {
        try writer.write { db in
            try db.execute(sql: "UPDATE tenants SET allow_direct_sync = ? WHERE id = ?", arguments: [allowed, tenant.rawValue])
            guard db.changesCount == 1 else { throw StoreError.notFound("tenant '\(tenant)'") }
            try Self.bumpVersion(db)
        }
    }

    /// The parent `principal` must sync through, or nil when this hub (the tenant's root)
    /// serves it directly: the root's children always, nodes deeper down only when the
    /// tenant allows direct sync. Answered from the tree cached per catalog version.
    public func requiredParent(of principal: Principal) async throws -> NodeID? {
        let snapshot = try await snapshot(of: principal.tenant)
        return snapshot.tree.requiredParent(of: principal.node, allowDirectSync: snapshot.allowDirectSync)
    }

    /// Registers the tenant's governance release key (base64 Ed25519 public key).
    public func setReleaseKey(_ key: String, for tenant: TenantID) throws {
        try refuseIfMoved(tenant)
        try writer.write { db in
            try db.execute(sql: "UPDATE tenants SET release_key = ? WHERE id = ?", arguments: [key, tenant.rawValue])
            guard db.changesCount == 1 else { throw StoreError.notFound("tenant '\(tenant)'") }
        }
    }

    /// The tenant's governance release key, if one was registered.
    public func releaseKey(of tenant: TenantID) throws -> String? {
        try writer.read { db in
            try String.fetchOne(db, sql: "SELECT release_key FROM tenants WHERE id = ?", arguments: [tenant.rawValue])
        }
    }

    public func root(of tenant: TenantID) throws -> NodeID? {
        try writer.read { db in
            try String.fetchOne(db, sql: "SELECT root FROM tenants WHERE id = ?", arguments: [tenant.rawValue]).map(NodeID.init(unchecked:))
        }
    }

    public func nodes(of tenant: TenantID) async throws -> [NodeRecord] {
        try await writer.readReleasingConnection { db in
            try Row.fetchAll(db, sql: "SELECT * FROM nodes WHERE tenant = ? ORDER BY id", arguments: [tenant.rawValue]).map(Self.nodeRecord)
        }
    }

    public func node(_ id: NodeID, of tenant: TenantID) async throws -> NodeRecord? {
        try await writer.readReleasingConnection { db in
            try Row.fetchOne(db, sql: "SELECT * FROM nodes WHERE tenant = ? AND id = ?", arguments: [tenant.rawValue, id.rawValue]).map(Self.nodeRecord)
        }
    }

    /// Moves `node` (and its subtree) under `parent`. A move keeps the node's level, and so
    /// its role: a dealer moves between countries; a country never becomes a dealer.
    public func moveNode(_ node: NodeID, of tenant: TenantID, to parent: NodeID) throws {
        try refuseIfMoved(tenant)
        try writer.write { db in
            let tree = try Self.tree(db, tenant)
            guard tree.parents[node] != nil else { throw StoreError.notFound("node '\(node)' in tenant '\(tenant)'") }
            guard tree.parents[parent] != nil else { throw StoreError.notFound("node '\(parent)' in tenant '\(tenant)'") }
            if tree.isRoot(node) { throw StoreError.invalidArgument("'\(node)' is the root of tenant '\(tenant)' and cannot move") }
            if try Self.isDecommissioned(db, tenant.rawValue, parent.rawValue) {
                throw StoreError.invalidArgument("'\(parent)' was decommissioned; a node cannot move under it")
            }
            // Moved, a decommissioned node looked placed again, and is not (helper 83).
            if try Self.isDecommissioned(db, tenant.rawValue, node.rawValue) {
                throw StoreError.invalidArgument("'\(node)' was decommissioned; it does not move")
            }
            if tree.subtree(of: node).contains(parent) {
                throw StoreError.invalidArgument("cannot move '\(node)' under '\(parent)', which is inside its own subtree")
            }
            let newDepth = tree.depth(of: parent) + 1, depth = tree.depth(of: node)
            guard newDepth == depth else {
                throw StoreError.invalidArgument("moving '\(node)' under '\(parent)' would change its level from \(depth) to \(newDepth); a node moves only to a parent on the level above it")
            }
            try db.execute(sql: "UPDATE nodes SET parent = ? WHERE tenant = ? AND id = ?",
                           arguments: [parent.rawValue, tenant.rawValue, node.rawValue])
            try Self.bumpVersion(db)
            // A token issued before the move would put the node back under its old parent.
            try db.execute(sql: "DELETE FROM enrollment_tokens WHERE tenant = ? AND node = ? AND used_at IS NULL",
                           arguments: [tenant.rawValue, node.rawValue])
        }
    }

    /// The subtree of `principal` with the credential digests of the nodes below it.
    public func directory(for principal: Principal) async throws -> DirectoryResponse {
        try await writer.readReleasingConnection { db in
            let tree = try Self.tree(db, principal.tenant)
            let subtree = tree.subtree(of: principal.node)
            let nodes = try Row.fetchAll(db, sql: "SELECT * FROM nodes WHERE tenant = ? ORDER BY id", arguments: [principal.tenant.rawValue])
                .map(Self.nodeRecord).filter { subtree.contains($0.node) }
                .map { DirectoryResponse.Node(id: $0.node, parent: $0.parent, role: $0.role) }
            let credentials = try Row.fetchAll(db, sql: "SELECT node, hash FROM credentials WHERE tenant = ? AND revoked_at IS NULL ORDER BY node, hash",
                                               arguments: [principal.tenant.rawValue])
                .map { DirectoryResponse.Credential(node: NodeID(unchecked: $0["node"]), sha256: $0["hash"]) }
                .filter { $0.node != principal.node && subtree.contains($0.node) }
            return DirectoryResponse(tenant: principal.tenant, root: principal.node, nodes: nodes, credentials: credentials)
        }
    }

    /// Replaces what this catalog knows of `directory.tenant` by a directory mirrored from
    /// the parent (a country node's view of its subtree), its administrators included when
    /// the directory carries them. Returns the nodes that were not in the previous mirror.
    @discardableResult
    public func replaceDirectory(_ directory: DirectoryResponse, nowMillis: UInt64 = WallClock.nowMillis()) throws -> Set<NodeID> {
        try writer.write { db in
            let tenant = directory.tenant.rawValue
            let before = Set(try String.fetchAll(db, sql: "SELECT id FROM nodes WHERE tenant = ?", arguments: [tenant]).map(NodeID.init(unchecked:)))
            // What the mirror knew of each node itself: when it was last seen here, and since when it is held.
            let held = Dictionary(uniqueKeysWithValues: try Row.fetchAll(db, sql: "SELECT id, last_seen, created_at FROM nodes WHERE tenant = ?", arguments: [tenant])
                .map { ($0["id"] as String, (lastSeen: $0["last_seen"] as Int64?, createdAt: $0["created_at"] as Int64)) })
            if try !(Bool.fetchOne(db, sql: "SELECT 1 FROM tenants WHERE id = ?", arguments: [tenant]) ?? false) {
                try db.execute(sql: "INSERT INTO tenants (id, root, created_at) VALUES (?, ?, ?)",
                               arguments: [tenant, directory.root.rawValue, Int64(nowMillis)])
            }
            try db.execute(sql: "DELETE FROM nodes WHERE tenant = ?", arguments: [tenant])
            try db.execute(sql: "DELETE FROM credentials WHERE tenant = ?", arguments: [tenant])
            for n in directory.nodes {
                try db.execute(sql: "INSERT INTO nodes (tenant, id, parent, role, created_at, last_seen) VALUES (?, ?, ?, ?, ?, ?)",
                               arguments: [tenant, n.id.rawValue, n.parent?.rawValue, n.role, held[n.id.rawValue]?.createdAt ?? Int64(nowMillis),
                                           held[n.id.rawValue]?.lastSeen ?? nil])
            }
            for c in directory.credentials {
                try db.execute(sql: "INSERT OR IGNORE INTO credentials (hash, tenant, node, created_at) VALUES (?, ?, ?, ?)",
                               arguments: [c.sha256, tenant, c.node.rawValue, Int64(nowMillis)])
            }
            // The country's administrators (an older HQ sends none: keep what is there).
            if let admins = directory.admins { try Self.replaceMirroredAdmins(db, admins, of: directory.tenant, nowMillis: nowMillis) }
            try Self.bumpVersion(db)
            return Set(directory.nodes.map(\.id)).subtracting(before)
        }
    }

    static func tree(_ db: Database, _ tenant: TenantID) throws -> NodeTree {
        let rows = try Row.fetchAll(db, sql: "SELECT id, parent FROM nodes WHERE tenant = ?", arguments: [tenant.rawValue])
        return NodeTree(parents: Dictionary(uniqueKeysWithValues: rows.map {
            (NodeID(unchecked: $0["id"]), ($0["parent"] as String?).map(NodeID.init(unchecked:)))
        }))
    }

    /// `node`'s parent link: nil when the tenant has no such node, `.some(nil)` for its root.
    static func parentLink(_ db: Database, _ tenant: String, _ node: String) throws -> String?? {
        guard let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT parent FROM nodes WHERE tenant = ? AND id = ?"),
                                         arguments: [tenant, node]) else { return nil }
        return .some(row[0])
    }

    /// The level of an existing node, 1 for the root, by walking up its parents.
    static func level(_ db: Database, _ tenant: String, _ node: String) throws -> Int {
        var (depth, current) = (1, node)
        while depth < 64, let link = try parentLink(db, tenant, current), let parent = link {
            depth += 1
            current = parent
        }
        return depth
    }

    /// The tenant's tree; cached, and re-read only after a tree change (by any process).
    public func tree(of tenant: TenantID) async throws -> NodeTree {
        try await snapshot(of: tenant).tree
    }

    /// The tenant's tree and direct-sync setting, as of the current catalog version.
    func snapshot(of tenant: TenantID) async throws -> TenantSnapshot {
        let cached = trees.withLock { $0[tenant] }
        return try await writer.readReleasingConnection { db in
            let version = try Int64.fetchOne(db.cachedStatement(sql: "SELECT version FROM catalog_version")) ?? 0
            if let cached, cached.version == version { return cached }
            let allow = try Bool.fetchOne(db, sql: "SELECT allow_direct_sync FROM tenants WHERE id = ?", arguments: [tenant.rawValue]) ?? false
            let snapshot = TenantSnapshot(version: version, tree: try Self.tree(db, tenant), allowDirectSync: allow)
            self.trees.withLock { $0[tenant] = snapshot }
            return snapshot
        }
    }

    static func isDecommissioned(_ db: Database, _ tenant: String, _ node: String) throws -> Bool {
        try Bool.fetchOne(db, sql: "SELECT decommissioned_at IS NOT NULL FROM nodes WHERE tenant = ? AND id = ?", arguments: [tenant, node]) ?? false
    }

    static func bumpVersion(_ db: Database) throws {
        try db.execute(sql: "UPDATE catalog_version SET version = version + 1")
    }

    /// Records when these nodes were seen (for per-node status), in one transaction. A
    /// sighting older than the one stored changes nothing.
    public func touch(_ sightings: [(principal: Principal, atMillis: UInt64)]) async throws {
        try await writer.write { db in
            let update = try db.cachedStatement(sql: """
                UPDATE nodes SET last_seen = ? WHERE tenant = ? AND id = ? AND (last_seen IS NULL OR last_seen < ?)
                """)
            for (principal, at) in sightings {
                try update.execute(arguments: [Int64(at), principal.tenant.rawValue, principal.node.rawValue, Int64(at)])
            }
        }
    }

    /// See ``HubCatalogStore/recordLag(_:of:)``.
    public func recordLag(_ reports: [NodeID: NodeLag], of tenant: TenantID) async throws -> Int {
        try await writer.write { db in
            let upsert = try db.cachedStatement(sql: """
                INSERT INTO node_lag (tenant, node, pending, oldest_pending_ms, measured_at, clock_offset_ms)
                SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE EXISTS (SELECT 1 FROM nodes WHERE tenant = ?1 AND id = ?2)
                ON CONFLICT (tenant, node) DO UPDATE SET pending = excluded.pending,
                    oldest_pending_ms = excluded.oldest_pending_ms, measured_at = excluded.measured_at,
                    clock_offset_ms = excluded.clock_offset_ms
                WHERE excluded.measured_at > node_lag.measured_at
                """)
            // A report measured by the node itself (relayed by its parent for a node behind
            // it) is a sighting too: HQ never sees a country's dealers, which its console and
            // metrics counted as never seen while they synced.
            let seen = try db.cachedStatement(sql: "UPDATE nodes SET last_seen = ?1 WHERE tenant = ?2 AND id = ?3 AND (last_seen IS NULL OR last_seen < ?1)")
            var kept = 0
            for (node, lag) in reports {
                try upsert.execute(arguments: [tenant.rawValue, node.rawValue, lag.pending, lag.oldestPendingMillis,
                                               Int64(clamping: lag.measuredAtMillis), lag.clockOffsetMillis])
                kept += db.changesCount
                try seen.execute(arguments: [Int64(clamping: lag.measuredAtMillis), tenant.rawValue, node.rawValue])
            }
            return kept
        }
    }

    /// See ``HubCatalogStore/lags(of:)``.
    public func lags(of tenant: TenantID) async throws -> [NodeID: NodeLag] {
        try await writer.read { db in
            var out: [NodeID: NodeLag] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT node, pending, oldest_pending_ms, measured_at, clock_offset_ms FROM node_lag WHERE tenant = ?",
                                        arguments: [tenant.rawValue]) {
                out[NodeID(unchecked: row[0])] = NodeLag(pending: row[1], oldestPendingMillis: row[2],
                                                         measuredAtMillis: UInt64(max(0, row[3] as Int64)), clockOffsetMillis: row[4])
            }
            return out
        }
    }

    /// See ``HubCatalogStore/probeWritable()``: takes the write lock and lets it go.
    public func probeWritable() async throws {
        try await writer.writeWithoutTransaction { db in
            try db.inTransaction(.immediate) { .rollback }
        }
    }

    // MARK: Enrollment and credentials

    /// Issues a one-time enrollment token for `node` under `parent` (default: the root).
    /// The token itself is returned once and stored only as a digest.
    /// The node's role follows from its depth: the deepest level holds dealers (agents),
    /// the one between holds countries. `role`, when given, must agree.
    public func issueEnrollmentToken(tenant: TenantID, node: NodeID, parent: NodeID? = nil, role expectedRole: String? = nil,
                                     ttlSeconds: UInt64 = 86_400, nowMillis: UInt64 = WallClock.nowMillis()) throws -> String {
        try refuseIfMoved(tenant)
        return try writer.write { db in
            guard let tenantRow = try Row.fetchOne(db, sql: "SELECT root, levels FROM tenants WHERE id = ?", arguments: [tenant.rawValue]) else {
                throw StoreError.notFound("tenant '\(tenant)'")
            }
            // A node already given its name (a dealer re-enrolling after its disk died) keeps it.
            if let refusal = NewName.refusal("node", node.rawValue), try Self.parentLink(db, tenant.rawValue, node.rawValue) == nil,
               try Self.pendingLevel(db, tenant.rawValue, node.rawValue, levels: 3, nowMillis: nowMillis) == nil {
                throw StoreError.invalidArgument(refusal)
            }
            let root: String = tenantRow["root"], levels: Int = tenantRow["levels"]
            if node.rawValue == root { throw StoreError.invalidArgument("'\(node)' is the root of tenant '\(tenant)'; it runs on the hub and does not enroll") }
            let parentID = parent?.rawValue ?? root
            // Point lookups up the parent chain, not the whole tree: issuing tokens for a
            // tenant's n dealers read n² rows (35 s of the 5,000-agent benchmark's set-up).
            // A parent that has not enrolled yet but holds a pending token counts at the
            // level its token gives it (a country's dealers get their tokens with the
            // country's); the node itself is still refused until its parent has enrolled.
            let parentLevel: Int
            if try Self.parentLink(db, tenant.rawValue, parentID) != nil {
                parentLevel = try Self.level(db, tenant.rawValue, parentID)
            } else if let pending = try Self.pendingLevel(db, tenant.rawValue, parentID, levels: levels, nowMillis: nowMillis) {
                parentLevel = pending
            } else {
                throw StoreError.notFound("parent node '\(parentID)' in tenant '\(tenant)'")
            }
            let depth = parentLevel + 1
            guard depth <= levels else {
                throw StoreError.invalidArgument("tenant '\(tenant)' has \(levels) levels; '\(node)' under '\(parentID)' would be level \(depth)")
            }
            if try Self.isDecommissioned(db, tenant.rawValue, node.rawValue) {
                throw StoreError.invalidArgument("node '\(node)' was decommissioned and cannot enroll again; give a new node a new identifier")
            }
            if try Self.isDecommissioned(db, tenant.rawValue, parentID) {
                throw StoreError.invalidArgument("parent node '\(parentID)' was decommissioned")
            }
            if let existing = try Self.parentLink(db, tenant.rawValue, node.rawValue), existing != parentID {
                throw StoreError.invalidArgument("node '\(node)' already exists under '\(existing ?? "-")'; move it with `tiersync admin move-node`")
            }
            // A name promised under another parent is not free: redeeming both would move
            // the node, with what the first holder wrote under its name, to the other parent.
            if let promised = try String.fetchOne(db, sql: """
                SELECT parent FROM enrollment_tokens WHERE tenant = ? AND node = ? AND parent != ? AND used_at IS NULL AND expires_at >= ? LIMIT 1
                """, arguments: [tenant.rawValue, node.rawValue, parentID, Int64(nowMillis)]) {
                throw EnrollmentClaimConflict("node '\(node)' has a pending enrollment token under '\(promised)'; revoke it or let it expire first")
            }
            let role: NodeRole = depth == levels ? .dealer : .country
            if let expectedRole, expectedRole != role.rawValue {
                throw StoreError.invalidArgument("'\(node)' at level \(depth) of a \(levels)-level tenant is a \(role.rawValue), not a \(expectedRole)")
            }
            // Nodes already have tokens under this one, which has not enrolled: it must
            // enroll at the level they were issued for.
            if role == .dealer, try Self.parentLink(db, tenant.rawValue, node.rawValue) == nil,
               let child = try String.fetchOne(db, sql: """
                   SELECT node FROM enrollment_tokens WHERE tenant = ? AND parent = ? AND used_at IS NULL AND expires_at >= ? LIMIT 1
                   """, arguments: [tenant.rawValue, node.rawValue, Int64(nowMillis)]) {
                throw EnrollmentClaimConflict("'\(node)' under '\(parentID)' would be a dealer, but '\(child)' has a pending enrollment token under it")
            }
            let token = Secrets.new(.enrollmentToken)
            try db.execute(sql: """
                INSERT INTO enrollment_tokens (hash, tenant, node, parent, role, expires_at) VALUES (?, ?, ?, ?, ?, ?)
                """, arguments: [Secrets.digest(token), tenant.rawValue, node.rawValue, parentID, role.rawValue,
                                 Int64(nowMillis + ttlSeconds * 1000)])
            return token
        }
    }

    /// The level a node that has not enrolled yet will have, from its unused, unexpired
    /// enrollment tokens (the deepest, if several); nil when it has none.
    static func pendingLevel(_ db: Database, _ tenant: String, _ node: String, levels: Int, nowMillis: UInt64) throws -> Int? {
        let roles = try String.fetchAll(db, sql: """
            SELECT role FROM enrollment_tokens WHERE tenant = ? AND node = ? AND used_at IS NULL AND expires_at >= ?
            """, arguments: [tenant, node, Int64(nowMillis)])
        return roles.map { (NodeRole(rawValue: $0) ?? .country).level(inTenantOf: levels) }.max()
    }

    /// Redeems an enrollment token: registers the node (or keeps it, if it re-enrolls),
    /// revokes its earlier credentials and returns a new one. All in one transaction. A
    /// token naming a parent that has not enrolled yet is refused (and kept): the node
    /// enrolls through its parent, once that runs.
    public func redeem(token: String, via relayer: Principal? = nil, expecting: EnrollmentSubject? = nil,
                       nowMillis: UInt64 = WallClock.nowMillis()) async throws -> EnrollResponse {
        try await writer.write { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM enrollment_tokens WHERE hash = ?", arguments: [Secrets.digest(token)]) else {
                throw EnrollmentError.unknownToken
            }
            let tenant: String = row["tenant"], node: String = row["node"], parent: String? = row["parent"]
            // Another tenant's token, relayed by a country: unknown to it (used or not), and kept.
            if let relayer, relayer.tenant.rawValue != tenant { throw EnrollmentError.unknownToken }
            if let expecting, expecting.tenant.rawValue != tenant { throw EnrollmentError.unknownToken }
            if let move = movedAway(TenantID(stringLiteral: tenant)) { throw TenantMovedAway(tenant: TenantID(stringLiteral: tenant), move: move) }
            if (row["used_at"] as Int64?) != nil { throw EnrollmentError.alreadyUsed }
            let expires = UInt64(row["expires_at"] as Int64)
            if expires < nowMillis { throw EnrollmentError.expired(atMillis: expires) }
            // Only a token that would enroll names its node (as on PostgreSQL, after its claim).
            try EnrollmentError.check(expecting, tenant: tenant, node: node)
            let via = relayer?.node
            // Tokens are deleted when a node is decommissioned; this holds against any left.
            if try Self.isDecommissioned(db, tenant, node) { throw NodeDecommissioned(node: NodeID(unchecked: node)) }
            if let parent, try Self.isDecommissioned(db, tenant, parent) { throw NodeDecommissioned(node: NodeID(unchecked: parent)) }
            if let via, parent != via.rawValue {
                throw EnrollmentError.wrongParent(node: NodeID(unchecked: node), parent: parent.map(NodeID.init(unchecked:)), via: via)
            }
            if let parent, try Self.parentLink(db, tenant, parent) == nil {
                // Issued while the parent had only a token of its own; it has not enrolled
                // since, so nothing could have forwarded this request (`via` is enrolled).
                let root = try String.fetchOne(db, sql: "SELECT root FROM tenants WHERE id = ?", arguments: [tenant]) ?? "hq"
                throw EnrollmentError.wrongParent(node: NodeID(unchecked: node), parent: NodeID(unchecked: parent),
                                                  via: via ?? NodeID(unchecked: root))
            }
            // Enrolled elsewhere since the token was issued (a move deletes the node's tokens;
            // this holds against any left): the token does not move it.
            if let existing = try Self.parentLink(db, tenant, node), existing != parent {
                throw EnrollmentError.enrolledElsewhere(node: NodeID(unchecked: node))
            }
            try db.execute(sql: "UPDATE enrollment_tokens SET used_at = ? WHERE hash = ?", arguments: [Int64(nowMillis), row["hash"] as String])
            try db.execute(sql: """
                INSERT INTO nodes (tenant, id, parent, role, created_at) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (tenant, id) DO UPDATE SET parent = excluded.parent, role = excluded.role
                """, arguments: [tenant, node, parent, row["role"] as String, Int64(nowMillis)])
            try Self.bumpVersion(db)
            try db.execute(sql: "UPDATE credentials SET revoked_at = ? WHERE tenant = ? AND node = ? AND revoked_at IS NULL",
                           arguments: [Int64(nowMillis), tenant, node])
            let credential = Secrets.new(.credential)
            try db.execute(sql: "INSERT INTO credentials (hash, tenant, node, created_at) VALUES (?, ?, ?, ?)",
                           arguments: [Secrets.digest(credential), tenant, node, Int64(nowMillis)])
            let releaseKey = try String.fetchOne(db, sql: "SELECT release_key FROM tenants WHERE id = ?", arguments: [tenant])
            return EnrollResponse(tenant: TenantID(stringLiteral: tenant), node: NodeID(unchecked: node),
                                  parent: parent.map(NodeID.init(unchecked:)), credential: credential, releaseKey: releaseKey)
        }
    }

    // MARK: Revocation

    /// Revokes every credential of `node` and deletes its unused enrollment tokens, in one
    /// transaction. HQ refuses the node at its next request; a country refuses it once its
    /// mirror of HQ's directory is refreshed (every 2 s). The node stays in the tree, with
    /// its data; a new enrollment token lets it enroll again.
    public func revoke(node: NodeID, of tenant: TenantID, nowMillis: UInt64 = WallClock.nowMillis()) throws -> Revocation {
        try refuseIfMoved(tenant)
        return try writer.write { db in try Self.revoke(db, node: node, tenant: tenant, nowMillis: nowMillis) }
    }

    /// Revokes `node` (as ``revoke(node:of:nowMillis:)``) and marks it decommissioned: it can
    /// never enroll again (tokens issued for it, or naming it as parent, are refused) and
    /// listings show it as decommissioned. It keeps its place in the tree and its data. A
    /// node with enrolled, not decommissioned nodes below it is refused: move them first.
    public func decommission(node: NodeID, of tenant: TenantID, nowMillis: UInt64 = WallClock.nowMillis()) throws -> Revocation {
        try refuseIfMoved(tenant)
        return try writer.write { db in
            guard try Self.parentLink(db, tenant.rawValue, node.rawValue) != nil else {
                throw StoreError.notFound("node '\(node)' in tenant '\(tenant)' (a node that never enrolled has nothing to decommission; `admin revoke` deletes its tokens)")
            }
            let below = try String.fetchAll(db, sql: """
                SELECT id FROM nodes WHERE tenant = ? AND parent = ? AND decommissioned_at IS NULL ORDER BY id
                """, arguments: [tenant.rawValue, node.rawValue])
            if !below.isEmpty {
                throw StoreError.invalidArgument("'\(node)' still has \(below.count) node(s) below it (\(below.prefix(10).joined(separator: ", "))\(below.count > 10 ? ", …" : "")): move them with `tiersync admin move-node` or decommission them first")
            }
            var revocation = try Self.revoke(db, node: node, tenant: tenant, nowMillis: nowMillis)
            // Tokens of nodes waiting to enroll under it would make them its children.
            revocation.tokens += try Self.deleteTokens(db, sql: "DELETE FROM enrollment_tokens WHERE tenant = ? AND parent = ? AND used_at IS NULL",
                                                       [tenant.rawValue, node.rawValue])
            try db.execute(sql: "UPDATE nodes SET decommissioned_at = COALESCE(decommissioned_at, ?) WHERE tenant = ? AND id = ?",
                           arguments: [Int64(nowMillis), tenant.rawValue, node.rawValue])
            revocation.decommissionedAtMillis = try Int64.fetchOne(db, sql: "SELECT decommissioned_at FROM nodes WHERE tenant = ? AND id = ?",
                                                                   arguments: [tenant.rawValue, node.rawValue]).map(UInt64.init)
            try Self.bumpVersion(db)
            return revocation
        }
    }

    static func revoke(_ db: Database, node: NodeID, tenant: TenantID, nowMillis: UInt64) throws -> Revocation {
        guard let root = try String.fetchOne(db, sql: "SELECT root FROM tenants WHERE id = ?", arguments: [tenant.rawValue]) else {
            throw StoreError.notFound("tenant '\(tenant)'")
        }
        if node.rawValue == root { throw StoreError.invalidArgument("'\(node)' is the root of tenant '\(tenant)'; it has no credentials to revoke") }
        let known = try Self.parentLink(db, tenant.rawValue, node.rawValue) != nil
        let tokens = try Self.deleteTokens(db, sql: "DELETE FROM enrollment_tokens WHERE tenant = ? AND node = ? AND used_at IS NULL",
                                           [tenant.rawValue, node.rawValue])
        guard known || tokens > 0 else { throw StoreError.notFound("node '\(node)' in tenant '\(tenant)'") }
        try db.execute(sql: "UPDATE credentials SET revoked_at = ? WHERE tenant = ? AND node = ? AND revoked_at IS NULL",
                       arguments: [Int64(nowMillis), tenant.rawValue, node.rawValue])
        return Revocation(node: node, credentials: db.changesCount, tokens: tokens, decommissionedAtMillis: nil)
    }

    private static func deleteTokens(_ db: Database, sql: String, _ arguments: [String]) throws -> Int {
        try db.execute(sql: sql, arguments: StatementArguments(arguments))
        return db.changesCount
    }

    /// The node a bearer credential belongs to, or nil for an unknown or revoked one.
    public func authenticate(credential: String) async throws -> Principal? {
        try await writer.readReleasingConnection { db in
            // Cached statements: every request runs these two; compiling them each time
            // (with GRDB's authorizer) was 4 % of the hub's CPU under 5,000 agents.
            try Row.fetchOne(db.cachedStatement(sql: "SELECT tenant, node FROM credentials WHERE hash = ? AND revoked_at IS NULL"),
                             arguments: [Secrets.digest(credential)]).map {
                Principal(tenant: TenantID(stringLiteral: $0["tenant"]), node: NodeID(unchecked: $0["node"]))
            }
        }
    }

    static func nodeRecord(_ row: Row) -> NodeRecord {
        let decommissioned = (row["decommissioned_at"] as Int64?).map(UInt64.init)
        let role: String = row["role"]
        return NodeRecord(tenant: TenantID(stringLiteral: row["tenant"]), node: NodeID(unchecked: row["id"]),
                          parent: (row["parent"] as String?).map(NodeID.init(unchecked:)),
                          role: NodeRecord.listedRole(role, decommissioned: decommissioned != nil),
                          createdAtMillis: UInt64(row["created_at"] as Int64),
                          lastSeenMillis: (row["last_seen"] as Int64?).map(UInt64.init), decommissionedAtMillis: decommissioned)
    }
}

extension Secrets {
    /// The SHA-256 of a secret as lower-case hex: what the catalog stores and compares.
    /// PostgresCatalog digests the same way (its own swift-crypto import; TiersyncStorage,
    /// where ``Secrets`` lives, does no crypto); CatalogEngineTests checks that a credential
    /// enrolled on PostgreSQL authenticates against a SQLite mirror of its directory.
    static func digest(_ secret: String) -> String {
        SHA256.hash(data: Array(secret.utf8)).hexString
    }
}

/// The open tenant databases of a hub, opened on first use and kept open.
public final class TenantStores: Sendable {
    public let catalog: HubCatalog
    public let schema: Schema
    public let clock: HybridLogicalClock
    /// Who checkpoints the tenant databases: a serving hub passes ``WALCheckpointing/byOwner``
    /// and runs the checkpoints itself; a CLI command leaves them to the writer.
    public let checkpointing: WALCheckpointing
    /// Installed on every tenant database opened here: the tenant root's own local writes
    /// (HQ's) pass through it, as a node's do (an `AllocationPolicy`, from TiersyncAgent).
    public let writePolicy: (any LocalWritePolicy)?
    /// The quarantine's bounds each tenant store is given when opened here (a serving hub's
    /// configuration); nil leaves what the store holds (a CLI command).
    public let quarantineQuota: QuarantineQuota?
    private let open = Mutex<[TenantID: TenantSlot]>([:])

    public init(catalog: HubCatalog, schema: Schema = DomainSchema.schema, clock: HybridLogicalClock = HybridLogicalClock(),
                checkpointing: WALCheckpointing = .byWriter, writePolicy: (any LocalWritePolicy)? = nil,
                quarantineQuota: QuarantineQuota? = nil) {
        self.catalog = catalog
        self.quarantineQuota = quarantineQuota
        self.schema = schema
        self.clock = clock
        self.checkpointing = checkpointing
        self.writePolicy = writePolicy
    }

    /// The tenants whose databases are open in this process.
    public func openTenants() -> [TenantID] {
        let slots = open.withLock { $0 }
        return slots.filter { $0.value.store.withLock { $0 != nil } }.map(\.key)
    }

    /// The store of `tenant`, whose node identity is the tenant's root, opened (and
    /// migrated) on first use. Only that tenant's first requests wait for the opening (its
    /// own lock; two migrations of one file at once would collide); lookups of the tenants
    /// already open, and the opening of others, go on meanwhile.
    public func store(for tenant: TenantID) throws -> NodeStore {
        let slot = open.withLock { slots in
            if let slot = slots[tenant] { return slot }
            let slot = TenantSlot()
            slots[tenant] = slot
            return slot
        }
        return try slot.store.withLock { opened in
            if let opened { return opened }
            guard let root = try catalog.root(of: tenant) else { throw StoreError.notFound("tenant '\(tenant)'") }
            let path = catalog.tenantDatabasePath(tenant)
            // Made here before and now missing or empty (truncated, a directory restored
            // without it): opening it would make an empty tenant, and its history would be
            // gone without a word (helper 113).
            let made = try catalog.madeStore(of: tenant)
            let missing = !FileManager.default.fileExists(atPath: path)
            let empty = !missing && (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.int64Value == 0
            if made, missing || empty {
                throw StoreError.unusable(path: path, reason: "the file is \(missing ? "missing" : "empty"), though this hub made it before: "
                                          + "restore it from a backup (docs/OPERATIONS.md, \"A tenant's database file the hub cannot open\")")
            }
            let store = try NodeStore(path: path, schema: schema, clock: clock, checkpointing: checkpointing)
            if let identity = try store.identity() {
                // Another tenant's file, or a node's store, in this one's place would serve its
                // records to this tenant's nodes and administrators.
                guard identity.tenant == tenant, identity.node == root, identity.parent == nil else {
                    throw StoreError.unusable(path: path, reason: "it is the store of node '\(identity.node)' of tenant '\(identity.tenant)', "
                                              + "not tenant '\(tenant)''s hub store (root '\(root)')")
                }
            } else {
                try store.setIdentity(NodeIdentity(tenant: tenant, node: root, parent: nil))
            }
            if !made { try catalog.noteStoreMade(of: tenant) }
            store.writePolicy = writePolicy
            if let quarantineQuota { try store.setQuarantineQuota(quarantineQuota) }
            opened = store
            return store
        }
    }

    /// ``store(for:)`` from async code: at once when the store is open, else opened on a
    /// Dispatch worker, so a request handler never waits for SQLite on a cooperative thread.
    public func openStore(for tenant: TenantID) async throws -> NodeStore {
        if let slot = open.withLock({ $0[tenant] }), let store = slot.store.withLock({ $0 }) { return store }
        return try await withCheckedThrowingContinuation { continuation in
            NodeStore.blockingQueue.async { continuation.resume(with: Result { try self.store(for: tenant) }) }
        }
    }

    /// The tenants whose database exists (one that never received anything holds nothing
    /// to evaluate or count), listed on a Dispatch worker: the catalog is a SQLite file.
    public func tenantsWithData() async throws -> [TenantID] {
        try await withCheckedThrowingContinuation { continuation in
            NodeStore.blockingQueue.async { [catalog] in
                continuation.resume(with: Result {
                    // Not a moved tenant's: its files are kept as they were (HQ's rules wrote
                    // escalations into them on a hub started on the old directory, helper 104).
                    try catalog.tenants().map(\.tenant).filter {
                        catalog.movedAway($0) == nil && FileManager.default.fileExists(atPath: catalog.tenantDatabasePath($0))
                    }
                })
            }
        }
    }

    /// One tenant's store, once opened.
    private final class TenantSlot: Sendable {
        let store = Mutex<NodeStore?>(nil)
    }
}

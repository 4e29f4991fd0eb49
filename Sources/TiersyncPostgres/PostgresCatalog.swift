import Crypto
import Logging
import PostgresNIO
import Synchronization
import TiersyncCore
import TiersyncStorage

/// The hub's catalog on PostgreSQL (issue 14): tenants, their node trees, enrollment tokens
/// and node credentials, in the schema `tiersync_catalog`, shared by every hub process (and
/// admin command) on the database. Same semantics and errors as the SQLite catalog
/// (`HubCatalog`); split by topic into `PostgresCatalog+Tenants` (tenants, settings, moves),
/// `+Tokens` (issuing and redeeming enrollment tokens) and `+Revocation`.
///
/// **Several processes.** Nothing relies on an in-process lock:
/// - A token is redeemed once by a conditional `UPDATE … WHERE used_at IS NULL`: of two
///   processes redeeming it at once, the second's update finds it used once the first commits.
/// - Writes that check the tree before changing it (issuing a token, enrolling, moving,
///   revoking, decommissioning) take a transaction-scoped advisory lock on their tenant
///   first, so they are serialised per tenant across processes as SQLite's single writer
///   serialises them; reads and sightings take none.
/// - Credentials are read at every call (a revocation is refused at the next request on
///   every process). Trees are cached per tenant with the tenant's row of `catalog_version`,
///   which every tree change bumps in its transaction and every call reads.
///
/// The client must be running (`PostgresClient.run()`, or ``withPostgresClient(_:backgroundLogger:_:)``)
/// for as long as the catalog is used.
public final class PostgresCatalog: HubCatalogStore {
    public let client: PostgresClient
    let logger: Logger
    /// Trees (and whether deeper nodes may sync with the root directly) by tenant, valid while
    /// the tenant's `catalog_version` is unchanged. Never credentials.
    private let snapshots = Mutex<[TenantID: TenantSnapshot]>([:])

    struct TenantSnapshot: Sendable {
        var version: Int64
        var tree: NodeTree
        var allowDirectSync: Bool
    }

    /// Opens the catalog on `client`'s database, creating or upgrading its schema first
    /// (``PostgresCatalogSchema``). Safe when several processes start at once.
    public init(client: PostgresClient, logger: Logger = Logger(label: "tiersync.postgres.catalog")) async throws {
        self.client = client
        self.logger = logger
        try await PostgresCatalogSchema.migrate(self)
    }

    // MARK: Serving requests

    public func authenticate(credential: String) async throws -> Principal? {
        let rows = try await read("""
            SELECT tenant, node FROM tiersync_catalog.credentials WHERE hash = \(Secrets.digest(credential)) AND revoked_at IS NULL
            """)
        return try rows.first.map {
            let (tenant, node) = try $0.decode((String, String).self)
            return Principal(tenant: TenantID(stringLiteral: tenant), node: NodeID(unchecked: node))
        }
    }

    public func tree(of tenant: TenantID) async throws -> NodeTree {
        try await snapshot(of: tenant).tree
    }

    public func admission(credential: String) async throws -> CatalogAdmission? {
        // The credential and its tenant's catalog version in one statement: while the
        // cached tree is of that version, the request costs this one round trip.
        // Prepared once per connection: every request asks it, and planning it cost more than running it.
        var found: AdmissionStatement.Row?
        for try await row in try await client.execute(AdmissionStatement(hash: Secrets.digest(credential)), logger: logger) {
            found = row
        }
        guard let (tenant, node, version) = found else { return nil }
        let principal = Principal(tenant: TenantID(stringLiteral: tenant), node: NodeID(unchecked: node))
        let snapshot = try await snapshot(of: principal.tenant, knownVersion: version)
        return CatalogAdmission(principal: principal, tree: snapshot.tree,
                                requiredParent: snapshot.tree.requiredParent(of: principal.node, allowDirectSync: snapshot.allowDirectSync))
    }

    public func node(_ id: NodeID, of tenant: TenantID) async throws -> NodeRecord? {
        try await read("""
            SELECT tenant, id, parent, role, created_at, last_seen, decommissioned_at FROM tiersync_catalog.nodes
            WHERE tenant = \(tenant.rawValue) AND id = \(id.rawValue)
            """).first.map(Self.nodeRecord)
    }

    public func nodes(of tenant: TenantID) async throws -> [NodeRecord] {
        // COLLATE "C": byte order, as SQLite sorts, whatever the database's collation.
        try await read("""
            SELECT tenant, id, parent, role, created_at, last_seen, decommissioned_at FROM tiersync_catalog.nodes
            WHERE tenant = \(tenant.rawValue) ORDER BY id COLLATE "C"
            """).map(Self.nodeRecord)
    }

    public func requiredParent(of principal: Principal) async throws -> NodeID? {
        let snapshot = try await snapshot(of: principal.tenant)
        return snapshot.tree.requiredParent(of: principal.node, allowDirectSync: snapshot.allowDirectSync)
    }

    public func directory(for principal: Principal) async throws -> DirectoryResponse {
        // One snapshot for the tree and the credentials: a node enrolling meanwhile is in
        // both or in neither.
        try await transaction(readOnlySnapshot: true) { db in
            let records = try await db.rows("""
                SELECT tenant, id, parent, role, created_at, last_seen, decommissioned_at FROM tiersync_catalog.nodes
                WHERE tenant = \(principal.tenant.rawValue) ORDER BY id COLLATE "C"
                """).map(Self.nodeRecord)
            let tree = NodeTree(parents: Dictionary(uniqueKeysWithValues: records.map { ($0.node, $0.parent) }))
            let subtree = tree.subtree(of: principal.node)
            let nodes = records.filter { subtree.contains($0.node) }.map { DirectoryResponse.Node(id: $0.node, parent: $0.parent, role: $0.role) }
            let credentials = try await db.rows("""
                SELECT node, hash FROM tiersync_catalog.credentials WHERE tenant = \(principal.tenant.rawValue) AND revoked_at IS NULL
                ORDER BY node COLLATE "C", hash COLLATE "C"
                """).map { row in
                let (node, hash) = try row.decode((String, String).self)
                return DirectoryResponse.Credential(node: NodeID(unchecked: node), sha256: hash)
            }.filter { $0.node != principal.node && subtree.contains($0.node) }
            return DirectoryResponse(tenant: principal.tenant, root: principal.node, nodes: nodes, credentials: credentials)
        }
    }

    public func touch(_ sightings: [(principal: Principal, atMillis: UInt64)]) async throws {
        guard !sightings.isEmpty else { return }
        // One statement for the batch (atomic, one round trip); the newest sighting per node,
        // since an UPDATE … FROM applies one joined row per target row, whichever it meets first.
        let tenants = sightings.map(\.principal.tenant.rawValue), nodes = sightings.map(\.principal.node.rawValue)
        let times = sightings.map { Int64(clamping: $0.atMillis) }
        try await execute("""
            UPDATE tiersync_catalog.nodes AS n SET last_seen = s.at
            FROM (SELECT tenant, node, max(at) AS at FROM unnest(\(tenants)::text[], \(nodes)::text[], \(times)::bigint[]) AS u(tenant, node, at)
                  GROUP BY tenant, node) AS s
            WHERE n.tenant = s.tenant AND n.id = s.node AND (n.last_seen IS NULL OR n.last_seen < s.at)
            """)
    }

    public func recordLag(_ reports: [NodeID: NodeLag], of tenant: TenantID) async throws -> Int {
        guard !reports.isEmpty else { return 0 }
        let nodes = reports.keys.map(\.rawValue)
        let pending = nodes.map { reports[NodeID(unchecked: $0)]!.pending }
        let oldest = nodes.map { reports[NodeID(unchecked: $0)]!.oldestPendingMillis }
        let measured = nodes.map { Int64(clamping: reports[NodeID(unchecked: $0)]!.measuredAtMillis) }
        // NULL for none: an empty array element cannot be NULL through unnest's bind, so
        // the absent offset travels as a flag beside it.
        let offsets = nodes.map { reports[NodeID(unchecked: $0)]!.clockOffsetMillis ?? 0 }
        let hasOffset = nodes.map { reports[NodeID(unchecked: $0)]!.clockOffsetMillis != nil }
        // A report measured by the node itself (relayed by its parent for a node behind it) is
        // a sighting too: HQ never sees a country's dealers, which its console and metrics
        // counted as never seen while they synced.
        _ = try await read("""
            UPDATE tiersync_catalog.nodes n SET last_seen = u.measured
            FROM unnest(\(nodes)::text[], \(measured)::bigint[]) AS u(node, measured)
            WHERE n.tenant = \(tenant.rawValue) AND n.id = u.node AND (n.last_seen IS NULL OR n.last_seen < u.measured)
            RETURNING 1
            """)
        // Nodes the catalog does not know are joined away (the foreign key would fail the batch).
        return try await read("""
            INSERT INTO tiersync_catalog.node_lag AS l (tenant, node, pending, oldest_pending_ms, measured_at, clock_offset_ms)
            SELECT \(tenant.rawValue), u.node, u.pending, u.oldest, u.measured, CASE WHEN u.has_offset THEN u.offset_ms END
            FROM unnest(\(nodes)::text[], \(pending)::bigint[], \(oldest)::bigint[], \(measured)::bigint[], \(offsets)::bigint[], \(hasOffset)::bool[])
              AS u(node, pending, oldest, measured, offset_ms, has_offset)
            JOIN tiersync_catalog.nodes n ON n.tenant = \(tenant.rawValue) AND n.id = u.node
            ON CONFLICT (tenant, node) DO UPDATE SET pending = excluded.pending, oldest_pending_ms = excluded.oldest_pending_ms,
                measured_at = excluded.measured_at, clock_offset_ms = excluded.clock_offset_ms
            WHERE excluded.measured_at > l.measured_at
            RETURNING 1
            """).count
    }

    public func lags(of tenant: TenantID) async throws -> [NodeID: NodeLag] {
        var out: [NodeID: NodeLag] = [:]
        for row in try await read("SELECT node, pending, oldest_pending_ms, measured_at, clock_offset_ms FROM tiersync_catalog.node_lag WHERE tenant = \(tenant.rawValue)") {
            let (node, pending, oldest, measured, offset) = try row.decode((String, Int64, Int64, Int64, Int64?).self)
            out[NodeID(unchecked: node)] = NodeLag(pending: pending, oldestPendingMillis: oldest, measuredAtMillis: UInt64(clamping: measured),
                                                   clockOffsetMillis: offset)
        }
        return out
    }

    /// Writable: connected, not a standby in recovery, and not set read-only.
    public func probeWritable() async throws {
        guard let row = try await read("SELECT pg_is_in_recovery(), current_setting('transaction_read_only')").first else {
            throw StoreError.invalidArgument("no answer from PostgreSQL")
        }
        let (recovering, readOnly) = try row.decode((Bool, String).self)
        if recovering { throw StoreError.invalidArgument("PostgreSQL is in recovery (a standby): the hub cannot write") }
        if readOnly == "on" { throw StoreError.invalidArgument("PostgreSQL sessions are read-only: the hub cannot write") }
    }

    public func releaseKey(of tenant: TenantID) async throws -> String? {
        try await read("SELECT release_key FROM tiersync_catalog.tenants WHERE id = \(tenant.rawValue)")
            .first?.decode(String?.self) ?? nil
    }

    public func setReleaseKey(_ key: String, for tenant: TenantID) async throws {
        let updated = try await read("UPDATE tiersync_catalog.tenants SET release_key = \(key) WHERE id = \(tenant.rawValue) RETURNING 1")
        guard !updated.isEmpty else { throw StoreError.notFound("tenant '\(tenant)'") }
    }

    // MARK: Trees

    /// The tenant's tree and direct-sync setting as of the tenant's current catalog version:
    /// one indexed read of the version per call, the tree re-read only when it moved.
    /// `knownVersion`: the version just read with something else (a credential), so the
    /// cached tree is checked against it without another read.
    func snapshot(of tenant: TenantID, knownVersion: Int64?? = nil) async throws -> TenantSnapshot {
        if let cached = snapshots.withLock({ $0[tenant] }) {
            let version: Int64?
            if let knownVersion {
                version = knownVersion
            } else {
                version = try await read("SELECT version FROM tiersync_catalog.catalog_version WHERE tenant = \(tenant.rawValue)")
                    .first?.decode(Int64.self)
            }
            if version == cached.version { return cached }
        }
        // Version, setting and nodes in one statement, so one snapshot: the tree cached is
        // never older than the version it is cached under.
        let rows = try await read("""
            SELECT v.version, t.allow_direct_sync, n.id, n.parent
            FROM tiersync_catalog.tenants t
            JOIN tiersync_catalog.catalog_version v ON v.tenant = t.id
            JOIN tiersync_catalog.nodes n ON n.tenant = t.id
            WHERE t.id = \(tenant.rawValue)
            """)
        var version: Int64 = -1, allow = false
        var parents: [NodeID: NodeID?] = [:]
        for row in rows {
            let (v, a, id, parent) = try row.decode((Int64, Bool, String, String?).self)
            (version, allow) = (v, a)
            // updateValue, not the subscript: assigning the root's nil parent would remove it.
            parents.updateValue(parent.map(NodeID.init(unchecked:)), forKey: NodeID(unchecked: id))
        }
        let snapshot = TenantSnapshot(version: version, tree: NodeTree(parents: parents), allowDirectSync: allow)
        // An unknown tenant (no rows) is not cached: it has no version to invalidate it.
        if !rows.isEmpty { snapshots.withLock { $0[tenant] = snapshot } }
        return snapshot
    }

    // MARK: Rows

    static func nodeRecord(_ row: PostgresRow) throws -> NodeRecord {
        let (tenant, id, parent, role, created, lastSeen, decommissioned) =
            try row.decode((String, String, String?, String, Int64, Int64?, Int64?).self)
        return NodeRecord(tenant: TenantID(stringLiteral: tenant), node: NodeID(unchecked: id),
                          parent: parent.map(NodeID.init(unchecked:)),
                          role: NodeRecord.listedRole(role, decommissioned: decommissioned != nil),
                          createdAtMillis: UInt64(clamping: created), lastSeenMillis: lastSeen.map { UInt64(clamping: $0) },
                          decommissionedAtMillis: decommissioned.map { UInt64(clamping: $0) })
    }

    // MARK: Statements

    /// Runs one statement outside a transaction (autocommit) and returns its rows.
    func read(_ query: PostgresQuery) async throws -> [PostgresRow] {
        try await client.query(query, logger: logger).collect()
    }

    /// Runs one statement outside a transaction, discarding any rows.
    func execute(_ query: PostgresQuery) async throws {
        _ = try await read(query)
    }

    /// Runs `body` in one transaction on a leased connection: committed when it returns,
    /// rolled back when it throws, and its own error rethrown as it was (postgres-nio wraps
    /// it in a `PostgresTransactionError`; callers match `EnrollmentError`, `StoreError`).
    /// `lockingTenant`: takes that tenant's advisory lock first (see the type's documentation).
    /// `readOnlySnapshot`: a read-only repeatable-read transaction, whose statements all see
    /// one snapshot.
    func transaction<T: Sendable>(lockingTenant tenant: String? = nil, readOnlySnapshot: Bool = false,
                                  _ body: (CatalogConnection) async throws -> T) async throws -> T {
        do {
            return try await client.withTransaction(logger: logger) { connection in
                let db = CatalogConnection(connection: connection, logger: logger)
                if readOnlySnapshot { try await db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY") }
                if let tenant { try await db.lockTenant(tenant) }
                return try await body(db)
            }
        } catch let error as PostgresTransactionError {
            if let closureError = error.closureError, error.rollbackError == nil { throw closureError }
            throw error
        }
    }
}

/// A connection inside one of the catalog's transactions.
struct CatalogConnection {
    let connection: PostgresConnection
    let logger: Logger

    /// Advisory-lock key space of the catalog: `(catalogLockClass, 0)` guards migrations,
    /// `(tenantLockClass, hashtext(tenant))` a tenant's checked writes. The two-int form keeps
    /// these apart from any lock taken with a single 64-bit key.
    static let catalogLockClass: Int32 = 0x5453_4341 // "TSCA"
    static let tenantLockClass: Int32 = 0x5453_4354 // "TSCT"

    func rows(_ query: PostgresQuery) async throws -> [PostgresRow] {
        try await connection.query(query, logger: logger).collect()
    }

    func execute(_ query: PostgresQuery) async throws {
        _ = try await rows(query)
    }

    /// The number a statement's rows decode to (a `count(*)`), 0 for no row.
    func count(_ query: PostgresQuery) async throws -> Int {
        try await rows(query).first.map { Int(try $0.decode(Int64.self)) } ?? 0
    }

    /// Serialises this transaction with every other checked write of `tenant`, in any
    /// process, until it ends. Tenants whose ids hash alike merely wait for each other.
    func lockTenant(_ tenant: String) async throws {
        try await execute("SELECT pg_advisory_xact_lock(\(Self.tenantLockClass), hashtext(\(tenant)))")
    }

    /// `node`'s parent link: nil when the tenant has no such node, `.some(nil)` for its root.
    func parentLink(_ tenant: String, _ node: String) async throws -> String?? {
        guard let row = try await rows("SELECT parent FROM tiersync_catalog.nodes WHERE tenant = \(tenant) AND id = \(node)").first
        else { return nil }
        return .some(try row.decode(String?.self))
    }

    func isDecommissioned(_ tenant: String, _ node: String) async throws -> Bool {
        try await rows("""
            SELECT 1 FROM tiersync_catalog.nodes WHERE tenant = \(tenant) AND id = \(node) AND decommissioned_at IS NOT NULL
            """).isEmpty == false
    }

    /// The tenant's whole tree, as of this transaction.
    func tree(_ tenant: String) async throws -> NodeTree {
        let rows = try await rows("SELECT id, parent FROM tiersync_catalog.nodes WHERE tenant = \(tenant)")
        return NodeTree(parents: Dictionary(uniqueKeysWithValues: try rows.map {
            let (id, parent) = try $0.decode((String, String?).self)
            return (NodeID(unchecked: id), parent.map(NodeID.init(unchecked:)))
        }))
    }

    /// Tells every process that `tenant`'s tree (or direct-sync setting) changed: their
    /// cached trees no longer match the version they read at their next call.
    func bumpVersion(_ tenant: String) async throws {
        try await execute("UPDATE tiersync_catalog.catalog_version SET version = version + 1 WHERE tenant = \(tenant)")
    }
}

extension Secrets {
    /// The SHA-256 of a secret as lower-case hex, as the SQLite catalog computes it (its
    /// digests and these are interchangeable: a country's SQLite mirror of a PostgreSQL hub's
    /// directory authenticates the same credentials; CatalogEngineTests checks it).
    static func digest(_ secret: String) -> String {
        SHA256.hash(data: Array(secret.utf8)).hexString
    }
}

/// A credential and its tenant's catalog version: the statement every request runs
/// first (``PostgresCatalog/admission(credential:)``), prepared once per connection.
struct AdmissionStatement: PostgresPreparedStatement {
    static let sql = """
        SELECT c.tenant, c.node, v.version FROM tiersync_catalog.credentials c
        LEFT JOIN tiersync_catalog.catalog_version v ON v.tenant = c.tenant
        WHERE c.hash = $1 AND c.revoked_at IS NULL
        """
    static let bindingDataTypes: [PostgresDataType] = [.text]
    typealias Row = (String, String, Int64?)

    /// The credential's digest (``Secrets/digest(_:)``).
    var hash: String

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 1)
        bindings.append(hash)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row {
        try row.decode(Row.self)
    }
}

import Foundation
import Logging
import PostgresNIO
import Synchronization
import TiersyncCore
import TiersyncKPI
import TiersyncStorage

/// One tenant's data on PostgreSQL, behind the hub's storage seam
/// (``TiersyncStorage/HubTenantStore``): the second engine beside SQLite's `NodeStore`.
///
/// Stateless between calls, so any number of hub processes can serve one tenant at once:
/// everything a request relies on is in the database. Exactly-once holds by constraint
/// (`changes (origin, origin_seq)` is unique); a push reads without a lock, then writes
/// through `ts_apply_push`, which locks the tenant's `head` row, checks that what the push
/// read still holds and numbers and writes its changes: pushes of one tenant commit one
/// after the other (as in SQLite, where a tenant has one writer), with no round trip to the
/// hub under the lock, and other tenants are not touched.
/// The tables are in the tenant's own schema (``PostgresTenantSchema``).
public final class PostgresTenantStore: HubTenantStore {
    public let tenant: TenantID
    public let tenantSchema: PostgresTenantSchema
    public let schema: Schema
    public let clock: HybridLogicalClock
    let client: PostgresClient
    let logger: Logger
    /// The tenant's root node (what the store's identity is), looked up when first needed.
    private let rootOf: @Sendable (TenantID) async throws -> NodeID?
    /// The quarantine's bounds this process writes into the schema when it prepares it (a
    /// serving hub's configuration); nil leaves what the schema holds.
    private let quarantineQuota: QuarantineQuota?
    /// Whether the schema is known to exist (then the root, for trails and identity), or
    /// being made ready by the one task every concurrent first use waits for.
    private let preparation = Mutex(Preparation.idle)
    /// The pulls noted since the last compaction, and the purge floor last read
    /// (PostgresTenantStore+Retention).
    let retention = Mutex(PostgresRetentionState())
    /// The root's own KPI totals as last counted, and the count running (``RootKPICounts``).
    let rootKPIs = Mutex(RootKPICounts())
    /// Whether this process has begun a log history of the tenant (PostgresTenantStore+LogHistory).
    let logHistoryBegun = Mutex(false)
    let logHistoryStandings = LogHistoryStandings()
    /// Two of the tenant's pushes at once in this process; the rest wait without a connection.
    let pushAdmission = PushAdmission(limit: 2)

    /// `rootOf` answers the tenant's root node from the catalog; the tenant's schema is
    /// created on first use.
    public init(client: PostgresClient, tenant: TenantID, schema: Schema = DomainSchema.schema,
                clock: HybridLogicalClock = HybridLogicalClock(), logger: Logger = Logger(label: "tiersync.postgres.store"),
                quarantineQuota: QuarantineQuota? = nil, rootOf: @escaping @Sendable (TenantID) async throws -> NodeID?) {
        self.client = client
        self.quarantineQuota = quarantineQuota
        self.tenant = tenant
        self.tenantSchema = PostgresTenantSchema(tenant: tenant)
        self.schema = schema
        self.clock = clock
        self.logger = logger
        self.rootOf = rootOf
    }

    /// The tenant's root, creating the schema on first use.
    ///
    /// Single-flight: the requests that arrive together at a process that has not used the
    /// tenant yet (agents reconnecting after a restart) all wait for one preparation. Each
    /// running its own would queue them on the schema's advisory lock, one migration after
    /// another, and each migration replaces the tenant's functions, which makes every
    /// connection plan them again (a fan-in of 5,000 agents ran 103 of them in its first seconds).
    @discardableResult
    func prepared() async throws -> NodeID {
        let step: PreparationStep = preparation.withLock { state in
            switch state {
            case .ready(let root):
                return .ready(root)
            case .running(let task):
                return .wait(task)
            case .idle:
                let task = Task { try await self.prepareSchema() }
                state = .running(task)
                return .wait(task)
            }
        }
        let task: Task<NodeID, any Error>
        switch step {
        case .ready(let root): return root
        case .wait(let running): task = running
        }
        let root: NodeID
        do {
            root = try await task.value
        } catch {
            // The next use tries again (the catalog or PostgreSQL may be back by then).
            preparation.withLock { state in
                if case .running(let running) = state, running == task { state = .idle }
            }
            throw error
        }
        let first = preparation.withLock { state in
            guard case .running(let running) = state, running == task else { return false }
            state = .ready(root)
            return true
        }
        if first {
            // An erasure whose acknowledgement a process did not get to write (it stopped
            // after the erasure committed) is acknowledged now (which uses the store: so
            // after it is marked ready).
            do {
                try await writeErasureAcknowledgements(wallMillis: WallClock.nowMillis())
            } catch {
                logger.warning("erasure acknowledgements not written; retried at the next erasure or start", metadata: ["tenant": "\(tenant)", "error": "\(error)"])
            }
        }
        return root
    }

    /// Creates or upgrades the schema: run once per process (``prepared()``).
    private func prepareSchema() async throws -> NodeID {
        guard let root = try await rootOf(tenant) else { throw PostgresStoreError("no tenant '\(tenant)' in the catalog") }
        try await tenantSchema.migrate(client, root: root, logger: logger)
        if let quarantineQuota {
            let meta = table(.meta)
            for (key, value) in [(QuarantineQuota.SettingKey.maxBytesPerSender, quarantineQuota.maxBytesPerSender), (.maxBytes, quarantineQuota.maxBytes)] {
                _ = try await client.query("""
                    INSERT INTO \(unescaped: meta) (key, value) VALUES (\(key.rawValue), \(String(value)))
                    ON CONFLICT (key) DO UPDATE SET value = excluded.value WHERE \(unescaped: meta).value <> excluded.value
                    """, logger: logger).collect()
            }
        }
        return root
    }

    /// What a use of the store does first: go on, or wait for the preparation.
    private enum PreparationStep {
        case ready(NodeID)
        case wait(Task<NodeID, any Error>)
    }

    /// Where a store stands in making its schema ready (``prepared()``).
    private enum Preparation {
        case idle
        case running(Task<NodeID, any Error>)
        case ready(NodeID)
    }

    func table(_ t: PostgresTenantSchema.Table) -> String { tenantSchema.qualified(t) }

    // MARK: Identity and settings

    public func storeIdentity() async throws -> NodeIdentity? {
        NodeIdentity(tenant: tenant, node: try await prepared(), parent: nil)
    }

    public func setting(_ key: String) async throws -> String? {
        try await prepared()
        return try await client.query("SELECT value FROM \(unescaped: table(.meta)) WHERE key = \(key)", logger: logger)
            .collect().first.map { try $0.decode(String.self) }
    }

    func setSetting(_ key: PostgresMetaKey, _ value: String, on connection: PostgresConnection) async throws {
        _ = try await connection.query("""
            INSERT INTO \(unescaped: table(.meta)) (key, value) VALUES (\(key.rawValue), \(value))
            ON CONFLICT (key) DO UPDATE SET value = excluded.value
            """, logger: logger).collect()
    }

    // MARK: Log positions

    public func feedHead() async throws -> Int64 {
        try await prepared()
        return try await client.query("SELECT seq FROM \(unescaped: table(.head)) WHERE id = 1", logger: logger)
            .collect().first.map { try $0.decode(Int64.self) } ?? 0
    }

    /// The highest sequence of `node`'s changes held here, applied (and perhaps purged since),
    /// quarantined or refused as erased (an enrolling node resumes after them, as on SQLite;
    /// a child never takes a purge or an erased refusal for a restore from an older backup).
    public func highestSeq(of node: NodeID) async throws -> Int64 {
        try await prepared()
        let (lo, hi) = (Change.sequenceRange.lowerBound, Change.sequenceRange.upperBound)
        return try await client.query("""
            SELECT GREATEST(
              (SELECT MAX(origin_seq) FROM \(unescaped: table(.changes)) WHERE origin = \(node.rawValue) AND origin_seq BETWEEN \(lo) AND \(hi)),
              (SELECT MAX(origin_seq) FROM \(unescaped: table(.quarantine)) WHERE origin = \(node.rawValue) AND origin_seq BETWEEN \(lo) AND \(hi)),
              (SELECT max_seq FROM \(unescaped: table(.quarantineUnkept)) WHERE origin = \(node.rawValue)),
              (SELECT MAX(origin_seq) FROM \(unescaped: table(.erasedRefusals)) WHERE origin = \(node.rawValue) AND origin_seq BETWEEN \(lo) AND \(hi)),
              (SELECT through_seq FROM \(unescaped: table(.purged)) WHERE origin = \(node.rawValue)))
            """, logger: logger).collect().first.flatMap { try $0.decode(Int64?.self) } ?? 0
    }

    /// One round trip for all of `nodes` (a country relays many dealers' changes per push).
    public func highestSeqs(of nodes: Set<NodeID>) async throws -> [NodeID: Int64] {
        try await prepared()
        guard !nodes.isEmpty else { return [:] }
        let (lo, hi) = (Change.sequenceRange.lowerBound, Change.sequenceRange.upperBound)
        let names = nodes.map(\.rawValue)
        var out = Dictionary(uniqueKeysWithValues: nodes.map { ($0, Int64(0)) })
        // A correlated max per origin: one backward step of the (origin, origin_seq) index
        // each, where a GROUP BY over `origin = ANY(…)` reads every entry of every origin.
        let rows = try await client.query("""
            SELECT o, GREATEST(
              (SELECT max(origin_seq) FROM \(unescaped: table(.changes)) WHERE origin = o AND origin_seq BETWEEN \(lo) AND \(hi)),
              (SELECT max(origin_seq) FROM \(unescaped: table(.quarantine)) WHERE origin = o AND origin_seq BETWEEN \(lo) AND \(hi)),
              (SELECT max_seq FROM \(unescaped: table(.quarantineUnkept)) WHERE origin = o),
              (SELECT max(origin_seq) FROM \(unescaped: table(.erasedRefusals)) WHERE origin = o AND origin_seq BETWEEN \(lo) AND \(hi)),
              (SELECT through_seq FROM \(unescaped: table(.purged)) WHERE origin = o))
            FROM unnest(\(names)::text[]) AS o
            """, logger: logger)
        for try await (origin, highest) in rows.decode((String, Int64?).self) { out[NodeID(unchecked: origin)] = highest ?? 0 }
        return out
    }

    // MARK: Records

    public func liveRecords(inTable name: String) async throws -> [(id: String, values: [String: FieldValue])] {
        try await prepared()
        var out: [(id: String, values: [String: FieldValue])] = []
        let rows = try await client.query("SELECT id, fields FROM \(unescaped: table(.records)) WHERE tbl = \(name) AND live ORDER BY id",
                                          logger: logger)
        for try await (id, fields) in rows.decode((String, String).self) {
            guard let values = CanonicalJSON.parseFields(fields) else { throw PostgresStoreError("corrupt fields for \(name)/\(id)") }
            out.append((id, values))
        }
        return out
    }

    /// The erasure markers and acknowledgements held (``ErasureLedgerEntry``), the hub's
    /// own among them (PostgresTenantStore+Erasure).
    public func erasureLedger() async throws -> [ErasureLedgerEntry] {
        try await prepared()
        var markers: [(id: String, values: [String: FieldValue], route: Set<NodeID>)] = []
        var acks: [[String: FieldValue]] = []
        let rows = try await client.query("""
            SELECT tbl, id, fields, route FROM \(unescaped: table(.records))
            WHERE tbl IN (\(DomainSchema.erasures.name), \(DomainSchema.erasureAcks.name)) AND live ORDER BY tbl, id
            """, logger: logger)
        for try await (tbl, id, fields, route) in rows.decode((String, String, String, String).self) {
            guard let values = CanonicalJSON.parseFields(fields) else { throw PostgresStoreError("corrupt fields for \(tbl)/\(id)") }
            if tbl == DomainSchema.erasures.name {
                markers.append((id, values, RecordMerge.parseRoute(route)))
            } else {
                acks.append(values)
            }
        }
        return ErasureLedgerEntry.build(markers: markers, acknowledgements: acks)
    }

    /// Every record of a table, live or deleted, with its replication state (for digests
    /// and for moving a tenant between engines).
    public func storedRecords(inTable name: String) async throws -> [StoredRecord] {
        try await prepared()
        var out: [StoredRecord] = []
        let rows = try await client.query("""
            SELECT id, fields, versions, tombstone, route FROM \(unescaped: table(.records)) WHERE tbl = \(name) ORDER BY id
            """, logger: logger)
        for try await (id, fields, versions, tombstone, route) in rows.decode((String, String, String, String?, String).self) {
            out.append(try Self.record(table: name, id: id, fields: fields, versions: versions, tombstone: tombstone, route: route))
        }
        return out
    }

    static func record(table: String, id: String, fields: String, versions: String, tombstone: String?, route: String) throws -> StoredRecord {
        guard let values = CanonicalJSON.parseFields(fields), let versions = CanonicalJSON.parseStoredVersions(versions) else {
            throw PostgresStoreError("corrupt replication state for \(table)/\(id)")
        }
        var all = values
        for field in versions.keys where all[field] == nil { all[field] = .null }
        return StoredRecord(table: table, id: id,
                            state: RecordState(values: all.filter { versions[$0.key] != nil }, versions: versions,
                                               tombstone: tombstone.flatMap(FieldVersion.init(parsing:))),
                            route: RecordMerge.parseRoute(route))
    }

    // MARK: Quarantine

    /// The changes refused on arrival, oldest first.
    public func quarantinedChanges(afterID: Int64, limit: Int) async throws -> [QuarantinedChange] {
        try await prepared()
        let rows = try await client.query("""
            SELECT id, origin, origin_seq, received_from, received_at, code, reason, change
            FROM \(unescaped: table(.quarantine)) WHERE id > \(afterID) ORDER BY id LIMIT \(max(0, limit))
            """, logger: logger).collect()
        return try rows.map(Self.quarantinedChange)
    }

    /// Under the tenant's lock (the `head` row), as a push writes the quarantine: a discard
    /// between a push's look at a kept entry and its write could leave the entry's bytes
    /// counted wrong, or deadlock with the push on the usage row.
    public func discardQuarantined(id: Int64) async throws -> QuarantinedChange? {
        try await prepared()
        return try await client.withTransaction(logger: logger) { connection in
            _ = try await connection.query("SELECT seq FROM \(unescaped: table(.head)) WHERE id = 1 FOR UPDATE", logger: logger).collect()
            let rows = try await connection.query("""
                DELETE FROM \(unescaped: table(.quarantine)) WHERE id = \(id)
                RETURNING id, origin, origin_seq, received_from, received_at, code, reason, change
                """, logger: logger).collect()
            return try rows.first.map(Self.quarantinedChange)
        }
    }

    static func quarantinedChange(_ row: PostgresRow) throws -> QuarantinedChange {
        let (id, origin, seq, from, at, code, reason, change) = try row.decode((Int64, String, Int64, String, Int64, String, String, String).self)
        return QuarantinedChange(id: id, origin: NodeID(unchecked: origin), originSeq: seq, receivedFrom: NodeID(unchecked: from),
                                 receivedAtMillis: UInt64(max(0, at)), code: code, reason: reason, change: change)
    }

    public func conflicts(afterID: Int64, limit: Int) async throws -> [(conflict: ConflictRecord, route: Set<NodeID>)] {
        try await prepared()
        let rows = try await client.query("""
            SELECT c.id, c.tbl, c.record_id, c.field, c.winner_value, c.winner_version, c.loser_value, c.loser_version, c.detected_at,
                   coalesce(r.route, '')
            FROM \(unescaped: table(.conflicts)) c LEFT JOIN \(unescaped: table(.records)) r ON r.tbl = c.tbl AND r.id = c.record_id
            WHERE c.id > \(afterID) ORDER BY c.id LIMIT \(max(0, limit))
            """, logger: logger).collect()
        return try rows.compactMap { row in
            let (id, tbl, record, field, winner, winnerVersion, loser, loserVersion, at, route) =
                try row.decode((Int64, String, String, String, String, String, String, String, Int64, String).self)
            guard let wv = FieldVersion(parsing: winnerVersion), let lv = FieldVersion(parsing: loserVersion) else { return nil }
            func value(_ s: String) -> FieldValue { (try? JSONDecoder().decode(FieldValue.self, from: Data(s.utf8))) ?? .null }
            let conflict = ConflictRecord(id: id, table: tbl, recordID: record,
                                          conflict: FieldConflict(field: field, winner: value(winner), winnerVersion: wv, loser: value(loser), loserVersion: lv),
                                          detectedAtMillis: UInt64(max(0, at)))
            return (conflict, Set(route.split(separator: ",").map { NodeID(unchecked: String($0)) }))
        }
    }


    public func attentionCounts() async throws -> AttentionCounts {
        try await prepared()
        let row = try await client.query("""
            SELECT (SELECT count(*) FROM \(unescaped: table(.quarantine))), (SELECT count(*) FROM \(unescaped: table(.conflicts))),
                   (SELECT COALESCE(sum(bytes), 0)::int8 FROM \(unescaped: table(.quarantineUsage))),
                   (SELECT COALESCE(max(value::int8), 0) FROM \(unescaped: table(.meta)) WHERE key = \(QuarantineQuota.SettingKey.unkept.rawValue))
            """, logger: logger).collect().first
        guard let row else { return AttentionCounts(quarantined: 0, conflicts: 0) }
        let (quarantined, conflicts, bytes, unkept) = try row.decode((Int64, Int64, Int64, Int64).self)
        return AttentionCounts(quarantined: Int(quarantined), conflicts: Int(conflicts), quarantineBytes: bytes, quarantineUnkept: unkept)
    }

    /// The catalog's database is this store's: the catalog's probe covers it
    /// (``PostgresCatalog/probeWritable()``); here only that the tenant's schema is ready.
    public func probeWritable() async throws {
        try await prepared()
    }

    public func quarantinedChanges(limit: Int = 1000) async throws -> [QuarantinedChange] {
        try await prepared()
        var out: [QuarantinedChange] = []
        let rows = try await client.query("""
            SELECT id, origin, origin_seq, received_from, received_at, code, reason, change
            FROM \(unescaped: table(.quarantine)) ORDER BY id LIMIT \(limit)
            """, logger: logger)
        for try await (id, origin, seq, from, at, code, reason, change) in rows.decode((Int64, String, Int64, String, Int64, String, String, String).self) {
            out.append(QuarantinedChange(id: id, origin: NodeID(unchecked: origin), originSeq: seq, receivedFrom: NodeID(unchecked: from),
                                         receivedAtMillis: UInt64(max(0, at)), code: code, reason: reason, change: change))
        }
        return out
    }
}

// Bounded storage on PostgreSQL (docs/PRIVACY.md, "Bounded storage"): the acknowledgement
// ledger of the children fed here (`notePulled`, kept in each process's memory and written
// at its next compaction), the compaction that purges superseded log entries and old
// tombstones (`compact`), and the floor below which a child's cursor must re-bootstrap.
//
// The rules are the SQLite engine's (NodeStore+Retention), for a hub (no parent, so nothing
// waits to go upward). What differs:
// - a folded entry's identity is kept in its record's row (`records.folded`, `folded_at`),
//   which the feed serves at that position (PostgresTenantStore+Feed);
// - which children an entry waits for comes from `changes.routed`, written with the entry;
// - several hub processes share a tenant: one pass runs at a time (a lease row in `meta`),
//   every process writes the pulls it noted, and a purged identity moves from the log to
//   `purged_ranges` in one transaction, which `ts_apply_push` counts as held.

import Logging
import PostgresNIO
import TiersyncCore
import TiersyncStorage

/// What one process keeps in memory for bounded storage.
struct PostgresRetentionState: Sendable {
    /// Pulls noted since the acknowledgements were last written.
    var pendingAcks: [NodeID: Int64] = [:]
    /// The highest purge floor this process has read (the floor only rises).
    var floor: Int64 = 0
}

extension PostgresTenantStore {
    /// How long a pass's lease holds if its process dies mid-pass.
    static let compactionLeaseMillis: UInt64 = 600_000

    // MARK: The acknowledgement ledger

    /// Notes that `node` holds everything of its scope through `cursor`. Kept in memory and
    /// written at this process's next compaction, so a pull never pays a write; a process
    /// that stops loses what it noted, which only delays a purge.
    public func notePulled(by node: NodeID, through cursor: Int64) async {
        guard cursor > 0 else { return }
        retention.withLock { $0.pendingAcks[node] = max($0.pendingAcks[node] ?? 0, cursor) }
    }

    /// How far each child has pulled, as written by every process of the hub.
    public func acknowledgements() async throws -> [NodeID: Int64] {
        try await prepared()
        try await flushAcknowledgements(nowMillis: WallClock.nowMillis())
        return try await writtenAcknowledgements()
    }

    /// The ledger as written, without this process's pending pulls.
    private func writtenAcknowledgements() async throws -> [NodeID: Int64] {
        var out: [NodeID: Int64] = [:]
        let rows = try await client.query("SELECT node, pulled_through FROM \(unescaped: table(.acks))", logger: logger)
        for try await (node, through) in rows.decode((String, Int64).self) { out[NodeID(unchecked: node)] = through }
        return out
    }

    private func flushAcknowledgements(nowMillis: UInt64) async throws {
        let pending = retention.withLock { state in
            defer { state.pendingAcks = [:] }
            return state.pendingAcks
        }
        guard !pending.isEmpty else { return }
        let acks = table(.acks)
        do {
            _ = try await client.query("""
                INSERT INTO \(unescaped: acks) (node, pulled_through, updated_at)
                SELECT n, t, \(Int64(clamping: nowMillis)) FROM unnest(\(pending.keys.map(\.rawValue))::text[], \(Array(pending.values))::int8[]) AS u(n, t)
                ON CONFLICT (node) DO UPDATE SET pulled_through = GREATEST(\(unescaped: acks).pulled_through, excluded.pulled_through),
                  updated_at = excluded.updated_at
                """, logger: logger).collect()
        } catch {
            // Kept for the next try.
            retention.withLock { state in state.pendingAcks.merge(pending, uniquingKeysWith: max) }
            throw error
        }
    }

    // MARK: The floor

    /// The log position a child's cursor must have reached to go on pulling incrementally,
    /// as this process last read it: an early answer for the pull route. The feed reads the
    /// floor in its own statement and refuses a cursor below it (``encodedFeed``), so a
    /// floor raised by another process is never missed.
    public func retentionFloor() async throws -> Int64 {
        retention.withLock { $0.floor }
    }

    /// The floor as stored (every process's purges).
    public func storedRetentionFloor() async throws -> Int64 {
        try await prepared()
        let floor = try await client.query("""
            SELECT value FROM \(unescaped: table(.meta)) WHERE key = \(PostgresMetaKey.purgeFloor.rawValue)
            """, logger: logger).collect().first.flatMap { Int64(try $0.decode(String.self)) } ?? 0
        noteFloor(floor)
        return floor
    }

    func noteFloor(_ floor: Int64) {
        retention.withLock { $0.floor = max($0.floor, floor) }
    }

    // MARK: Compaction

    /// Purges what no replica needs any more, in short transactions (the rules of the
    /// SQLite engine's `compact`, for a hub):
    ///
    /// - a change-log entry none of whose values is current any more, once every child this
    ///   hub feeds it to (by `changes.routed`) has pulled past it, or it is older than the
    ///   horizon; an entry that re-routed its record and the newest entry are kept;
    /// - a deleted record (tombstone and every log entry of it) once its delete is older
    ///   than the horizon. The delete's position becomes the floor.
    ///
    /// A purged change's identity is kept as a range per origin (`purged_ranges`), so a
    /// redelivery is still a duplicate. One pass runs at a time across the hub's processes;
    /// a call while another process's pass runs writes this process's acknowledgements and
    /// returns an empty report.
    public func compact(policy: RetentionPolicy, tree: NodeTree?, nowMillis: UInt64 = WallClock.nowMillis(),
                        batch: Int = 2_000) async throws -> CompactionReport {
        let root = try await prepared()
        try await flushAcknowledgements(nowMillis: nowMillis)
        var report = CompactionReport()
        let lease = String(nowMillis)
        guard try await takeCompactionLease(lease, nowMillis: nowMillis) else {
            report.floor = try await storedRetentionFloor()
            return report
        }
        do {
            let horizon = policy.horizonMillis
            let cutoff = Int64(clamping: nowMillis > horizon ? nowMillis - horizon : 0)
            try await purgeSuperseded(root: root, tree: tree, cutoff: cutoff, perTransaction: max(1, batch / 16), into: &report)
            try await purgeTombstones(cutoff: cutoff, perTransaction: max(1, batch / 16), into: &report)
        } catch {
            await releaseOutsideCancellation(lease)
            throw error
        }
        await releaseOutsideCancellation(lease)
        if report.supersededEntries + report.foldedEntries + report.tombstoneEntries >= Self.vacuumAfterPurging, !Task.isCancelled {
            await vacuumLog()
            report.releasedPages = await rewriteBloatedTables()
        }
        report.floor = try await storedRetentionFloor()
        return report
    }

    /// Releases the pass's lease even when the pass was cancelled (the hub stopping): a
    /// cancelled task leases no connection, and the lease was then kept until it expired
    /// (10 minutes without compaction for the tenant on every process). An unstructured
    /// task does not inherit the cancellation.
    private func releaseOutsideCancellation(_ lease: String) async {
        await Task { try? await self.releaseCompactionLease(lease) }.value
    }

    /// Purged log entries after which a pass vacuums the tables it purged from (and the
    /// records it folded into, and the purged ranges it rewrote): their space
    /// is then reused by the next pushes at once, rather than when autovacuum comes by
    /// (meanwhile the files grow). Plain `VACUUM` blocks no push.
    static var vacuumAfterPurging: Int { 1_000 }

    /// The tables a pass purges from or rewrites rows of: the log's, `records` (folds) and
    /// `purged_ranges` (noting purged identities rewrites its rows). Vacuumed after a large
    /// pass, and rewritten when left bloated.
    static var tablesAPassChurns: [PostgresTenantSchema.Table] { [.changes, .changeRoutes, .routeEntries, .purgedRanges, .records] }

    private func vacuumLog() async {
        let tables = Self.tablesAPassChurns.map { table($0) }.joined(separator: ", ")
        do {
            _ = try await client.query(PostgresQuery(unsafeSQL: "VACUUM \(tables)"), logger: logger).collect()
        } catch {
            // Autovacuum does it later: a failed vacuum loses nothing.
            logger.warning("vacuum after compaction failed", metadata: ["tenant": "\(tenant)", "error": "\(String(reflecting: error))"])
        }
    }

    /// The most row bytes a pass copies to rewrite one table (``rewriteBloatedTables()``):
    /// a rewrite locks the tenant's table for as long as the copy takes (5–10 ms per MiB
    /// on a 2-core test machine), so larger tables are left to plain `VACUUM`, whose freed
    /// space the next writes reuse.
    static var rewriteLimitBytes: Int64 { 16 << 20 }
    /// How long a rewrite waits for its table's lock before leaving it to the next pass: a
    /// waiting `VACUUM FULL` queues every later request of the tenant behind it.
    static var rewriteLockTimeout: String { "50ms" }
    /// A table is rewritten when it takes, with its indexes, more than this many times the
    /// bytes its rows need (each row with its header, as `pg_column_size` counts it). Packed,
    /// the tenant's tables take 1.1–1.4 times that.
    static var rewriteAboveRatio: Double { 1.5 }
    /// Smaller tables are never rewritten: a few pages of slack are not worth a lock.
    static var rewriteAboveBytes: Int64 { 512 << 10 }

    /// PostgreSQL gives a table's space back to the file system only by rewriting it: plain
    /// `VACUUM` makes dead rows' space reusable, but the heap and its indexes keep their
    /// high-water mark. After a pass that purged much, the log's tables hold a round's worth
    /// of pages for a few live rows, and `records` under churn holds a dead version of
    /// every row updated since the last vacuum (a fold rewrites the row too) and index pages
    /// that stay split (each fold moves a record in the `folded_at` index). So each of
    /// those tables that takes more than ``rewriteAboveRatio`` times its rows' bytes, and
    /// whose rows are under ``rewriteLimitBytes``, is rewritten with `VACUUM FULL` (heap and
    /// indexes rebuilt packed) if its lock comes within ``rewriteLockTimeout``; otherwise
    /// the next pass tries again. Only this tenant's schema is locked, never another
    /// tenant's. Returns the pages given back (8 KiB each).
    func rewriteBloatedTables() async -> Int {
        let logger = self.logger
        var released: Int64 = 0
        for table in Self.tablesAPassChurns {
            let name = self.table(table)
            do {
                released += try await client.withConnection { connection in
                    // Counting the rows' bytes reads the table: only where a rewrite could follow
                    // (a table over 8 times the limit has rows over it, or is bloated past what
                    // one pass should copy).
                    let sizes = try await connection.query(PostgresQuery(unsafeSQL: """
                        SELECT total, CASE WHEN total > \(Self.rewriteAboveBytes) AND total <= \(Self.rewriteLimitBytes * 8)
                                           THEN COALESCE((SELECT sum(pg_column_size(t.*)) FROM \(name) t), 0)::int8 END
                        FROM (SELECT pg_total_relation_size('\(name)')::int8 AS total) s
                        """), logger: logger).collect().first.map { try $0.decode((Int64, Int64?).self) }
                    guard let (total, counted) = sizes, let needed = counted, needed <= Self.rewriteLimitBytes,
                          Double(total) > Self.rewriteAboveRatio * Double(needed) else { return 0 }
                    // `VACUUM FULL` runs outside any transaction, so the timeout is the session's:
                    // reset before the connection goes back to the pool, whatever the rewrite did.
                    _ = try await connection.query(PostgresQuery(unsafeSQL: "SET lock_timeout = '\(Self.rewriteLockTimeout)'"), logger: logger).collect()
                    let rewrite: Result<Void, any Error>
                    do {
                        _ = try await connection.query(PostgresQuery(unsafeSQL: "VACUUM FULL \(name)"), logger: logger).collect()
                        rewrite = .success(())
                    } catch {
                        rewrite = .failure(error)
                    }
                    _ = try await connection.query("RESET lock_timeout", logger: logger).collect()
                    try rewrite.get()
                    let after = try await connection.query(PostgresQuery(unsafeSQL: "SELECT pg_total_relation_size('\(name)')::int8"), logger: logger)
                        .collect().first.map { try $0.decode(Int64.self) } ?? total
                    return max(0, total - after) / 8_192
                }
            } catch let error as PSQLError where error.serverInfo?[.sqlState] == PostgresTenantSchema.lockNotAvailableState {
                logger.debug("rewrite after compaction skipped: the table was busy", metadata: ["tenant": "\(tenant)", "table": "\(table.rawValue)"])
            } catch {
                // Plain vacuum already made the space reusable: a failed rewrite loses nothing.
                logger.warning("rewrite after compaction failed", metadata: ["tenant": "\(tenant)", "table": "\(table.rawValue)",
                                                                            "error": "\(String(reflecting: error))"])
            }
        }
        return Int(released)
    }

    /// Takes the pass's lease unless another process holds one younger than
    /// ``compactionLeaseMillis``.
    private func takeCompactionLease(_ lease: String, nowMillis: UInt64) async throws -> Bool {
        let stale = String(Int64(clamping: nowMillis) - Int64(Self.compactionLeaseMillis))
        let meta = table(.meta)
        return try await !client.query("""
            INSERT INTO \(unescaped: meta) (key, value) VALUES (\(PostgresMetaKey.compactTakenAt.rawValue), \(lease))
            ON CONFLICT (key) DO UPDATE SET value = excluded.value
              WHERE \(unescaped: meta).value = '0' OR \(unescaped: meta).value::int8 < \(stale)::int8
            RETURNING 1
            """, logger: logger).collect().isEmpty
    }

    /// Gives the pass's lease back (unless another process took it over meanwhile).
    private func releaseCompactionLease(_ lease: String) async throws {
        _ = try await client.query("""
            UPDATE \(unescaped: table(.meta)) SET value = '0' WHERE key = \(PostgresMetaKey.compactTakenAt.rawValue) AND value = \(lease)
            """, logger: logger).collect()
    }

    /// The superseded entries of the records written since the last pass and of those with
    /// entries held back then (`compact_pending`).
    private func purgeSuperseded(root: NodeID, tree: NodeTree?, cutoff: Int64, perTransaction: Int, into report: inout CompactionReport) async throws {
        let (changes, meta) = (table(.changes), table(.meta))
        let fromKey = PostgresMetaKey.compactFrom.rawValue
        var head: Int64 = 0
        var keys: [(table: String, id: String)] = []
        let rows = try await client.query("""
            SELECT 0, '', '', (SELECT seq FROM \(unescaped: table(.head)) WHERE id = 1)
            UNION ALL
            (SELECT 1, tbl, record_id, 0 FROM \(unescaped: changes)
               WHERE seq > COALESCE((SELECT value::int8 FROM \(unescaped: meta) WHERE key = \(fromKey)), 0)
             UNION SELECT 1, tbl, id, 0 FROM \(unescaped: table(.compactPending)))
            """, logger: logger)
        for try await (kind, tbl, id, seq) in rows.decode((Int32, String, String, Int64).self) {
            // Row 0 carries the head; the others are the records to look at.
            if kind == 0 { head = seq } else { keys.append((tbl, id)) }
        }
        report.examinedRecords += keys.count
        // Written by every process (this one's at the start of the pass).
        let acks = try await writtenAcknowledgements()
        var children: [NodeID: NodeID?] = [:]
        func child(toward node: NodeID) -> NodeID? {
            if let known = children[node] { return known }
            let found = tree?.child(of: root, toward: node)
            children[node] = found
            return found
        }
        for start in stride(from: 0, to: keys.count, by: perTransaction) {
            // Each transaction stands on its own: a pass cancelled (the hub shutting down)
            // ends between them and leaves the rest to the next.
            try Task.checkCancellation()
            let chunk = keys[start..<min(start + perTransaction, keys.count)]
            let (tables, ids) = (chunk.map(\.table), chunk.map(\.id))
            let logger = self.logger
            let chunkReport = try await client.withTransaction(logger: logger) { connection -> CompactionReport in
                var report = CompactionReport()
                // One compaction transaction at a time per tenant, should a pass outlive its
                // lease and meet another's.
                _ = try await connection.query("SELECT pg_advisory_xact_lock(hashtext(\(self.tenantSchema.name + "/compact")))", logger: logger).collect()
                _ = try await connection.query("""
                    DELETE FROM \(unescaped: self.table(.compactPending)) p USING unnest(\(tables)::text[], \(ids)::text[]) AS u(t, i)
                    WHERE p.tbl = u.t AND p.id = u.i
                    """, logger: logger).collect()
                // Probes by record (LATERAL), whatever the row estimates: right after a pass
                // and its vacuum they are near zero while pushes refill the log, and a join
                // was then planned as the whole log against each record asked.
                let rows = try await connection.query("""
                    SELECT c.tbl, c.record_id, c.seq, c.origin, c.origin_seq, c.hlc, c.received_at, c.routed, r.versions, r.tombstone,
                           EXISTS (SELECT 1 FROM \(unescaped: self.table(.routeEntries)) e
                                   WHERE e.node = ANY(string_to_array(c.routed, ',')) AND e.seq = c.seq),
                           r.folded, r.folded_at
                    FROM unnest(\(tables)::text[], \(ids)::text[]) AS u(t, i),
                      LATERAL (SELECT * FROM \(unescaped: changes) c
                               WHERE c.tbl = u.t AND c.record_id = u.i AND c.seq < \(head) AND c.op <> \(Self.erasedOp)) c,
                      LATERAL (SELECT * FROM \(unescaped: self.table(.records)) r WHERE r.tbl = u.t AND r.id = u.i) r
                    """, logger: logger)
                var current: [String: Set<FieldVersion>] = [:]
                var folds: [String: FoldedRecord] = [:]
                var purge = PurgedEntries()
                var held: [(String, String)] = []
                var floor: Int64 = 0
                for try await (tbl, id, seq, origin, originSeq, hlc, receivedAt, routed, versions, tombstone, reroutes, folded, foldedAt)
                    in rows.decode((String, String, Int64, String, Int64, Int64, Int64, String?, String, String?, Bool, String?, Int64?).self) {
                    let recordKey = tbl + "\u{0}" + id
                    if current[recordKey] == nil {
                        var set = Set((CanonicalJSON.parseStoredVersions(versions) ?? [:]).values)
                        if let tombstone, let version = FieldVersion(parsing: tombstone) { set.insert(version) }
                        current[recordKey] = set
                        // What was folded before, less what no field holds any more (and all of
                        // it for a deleted record, whose current entries stay in the log).
                        var identities = folded.flatMap(FoldedIdentities.init(parsing:)) ?? FoldedIdentities()
                        identities.keep(only: tombstone == nil ? set : [])
                        folds[recordKey] = FoldedRecord(table: tbl, id: id, identities: identities, position: foldedAt ?? 0,
                                                        wasFolded: foldedAt != nil, live: tombstone == nil)
                    }
                    let version = FieldVersion(hlc: HLCTimestamp(rawValue: UInt64(bitPattern: hlc)), node: NodeID(unchecked: origin))
                    let isCurrent = current[recordKey]?.contains(version) == true
                    // A deleted record's current entries stay until its tombstone goes, and an
                    // entry that re-routed its record stays (a new holder's snapshot).
                    if isCurrent, folds[recordKey]?.live != true { continue }
                    if reroutes { continue }
                    guard let routed else {
                        // Routed before the column was filled: kept, to be safe.
                        held.append((tbl, id))
                        continue
                    }
                    let nodes = routed.split(separator: ",").map { NodeID(unchecked: String($0)) }
                    let pulled = nodes.allSatisfy { node in child(toward: node).map { (acks[$0] ?? 0) >= seq } ?? true }
                    if !pulled {
                        guard receivedAt < cutoff else {
                            report.heldForChildren += 1
                            held.append((tbl, id))
                            continue
                        }
                        // A child away past the horizon never pulled this current value: its
                        // cursor is now below the floor, and it re-bootstraps.
                        if isCurrent { floor = max(floor, seq) }
                    }
                    purge.add(seq: seq, origin: origin, originSeq: originSeq, routed: nodes)
                    if isCurrent {
                        // Folded: the record stands for it in the feed, at its position or later.
                        if var record = folds[recordKey] {
                            record.identities.add(version, originSeq: originSeq, fromParent: false)
                            record.position = max(record.position, seq)
                            record.changed = true
                            folds[recordKey] = record
                        }
                        report.foldedEntries += 1
                    } else {
                        report.supersededEntries += 1
                    }
                }
                try await self.delete(purge, on: connection)
                try await self.storeFolded(folds.values.filter { $0.changed || ($0.wasFolded && $0.identities.isEmpty) }, on: connection)
                if floor > 0 { try await self.raiseFloor(to: floor, on: connection) }
                if !held.isEmpty {
                    _ = try await connection.query("""
                        INSERT INTO \(unescaped: self.table(.compactPending)) (tbl, id)
                        SELECT * FROM unnest(\(held.map(\.0))::text[], \(held.map(\.1))::text[]) ON CONFLICT DO NOTHING
                        """, logger: logger).collect()
                }
                return report
            }
            report.supersededEntries += chunkReport.supersededEntries
            report.foldedEntries += chunkReport.foldedEntries
            report.heldForChildren += chunkReport.heldForChildren
        }
        // The head was left alone: its record is looked at again next time.
        _ = try await client.query("""
            INSERT INTO \(unescaped: meta) (key, value) VALUES (\(fromKey), \(String(max(0, head - 1))))
            ON CONFLICT (key) DO UPDATE SET value = GREATEST(\(unescaped: meta).value::int8, excluded.value::int8)::text
            """, logger: logger).collect()
    }

    /// Deleted records whose delete is older than `cutoff`, with every log entry of them,
    /// under the tenant's lock (a push touching such a record waits, then finds it gone).
    private func purgeTombstones(cutoff: Int64, perTransaction: Int, into report: inout CompactionReport) async throws {
        var after = (table: "", id: "")
        while true {
            try Task.checkCancellation()
            let logger = self.logger
            let pass = try await client.withTransaction(logger: logger) { connection -> (last: (table: String, id: String)?, tombstones: Int, entries: Int) in
                // As the superseded pass's transactions: two passes never note purged
                // identities at once (a lease outlived by a slow pass).
                _ = try await connection.query("SELECT pg_advisory_xact_lock(hashtext(\(self.tenantSchema.name + "/compact")))", logger: logger).collect()
                let head = try await connection.query("SELECT seq FROM \(unescaped: self.table(.head)) WHERE id = 1 FOR UPDATE", logger: logger)
                    .collect().first.map { try $0.decode(Int64.self) } ?? 0
                var deleted: [(table: String, id: String, tombstone: FieldVersion?)] = []
                let records = try await connection.query("""
                    SELECT tbl, id, tombstone FROM \(unescaped: self.table(.records))
                    WHERE tombstone IS NOT NULL AND (tbl, id) > (\(after.table), \(after.id)) ORDER BY tbl, id LIMIT \(Int64(perTransaction))
                    """, logger: logger)
                for try await (tbl, id, tombstone) in records.decode((String, String, String).self) {
                    deleted.append((tbl, id, FieldVersion(parsing: tombstone)))
                }
                guard let last = deleted.last else { return (nil, 0, 0) }
                var entries: [String: [(seq: Int64, origin: String, originSeq: Int64, hlc: Int64, op: String, receivedAt: Int64, routed: String?)]] = [:]
                let log = try await connection.query("""
                    SELECT c.tbl, c.record_id, c.seq, c.origin, c.origin_seq, c.hlc, c.op, c.received_at, c.routed
                    FROM unnest(\(deleted.map(\.table))::text[], \(deleted.map(\.id))::text[]) AS u(t, i),
                      LATERAL (SELECT * FROM \(unescaped: self.table(.changes)) c WHERE c.tbl = u.t AND c.record_id = u.i) c
                    """, logger: logger)
                for try await (tbl, id, seq, origin, originSeq, hlc, op, receivedAt, routed)
                    in log.decode((String, String, Int64, String, Int64, Int64, String, Int64, String?).self) {
                    entries[tbl + "\u{0}" + id, default: []].append((seq, origin, originSeq, hlc, op, receivedAt, routed))
                }
                var purge = PurgedEntries()
                var gone: [(table: String, id: String)] = []
                var floor: Int64 = 0
                for record in deleted {
                    let log = entries[record.table + "\u{0}" + record.id] ?? []
                    guard let tombstone = record.tombstone,
                          let delete = log.first(where: {
                              $0.op == Change.Operation.delete.rawValue && $0.origin == tombstone.node.rawValue && UInt64(bitPattern: $0.hlc) == tombstone.hlc.rawValue
                          }),
                          delete.receivedAt < cutoff,
                          // The head stays; an erased record's value-less entries stay (they
                          // refuse late copies); an entry of unknown routes stays.
                          log.allSatisfy({ $0.seq < head && $0.op != Self.erasedOp && $0.routed != nil }) else { continue }
                    for entry in log {
                        purge.add(seq: entry.seq, origin: entry.origin, originSeq: entry.originSeq,
                                  routed: (entry.routed ?? "").split(separator: ",").map { NodeID(unchecked: String($0)) })
                    }
                    gone.append((record.table, record.id))
                    floor = max(floor, delete.seq)
                }
                try await self.delete(purge, on: connection)
                if !gone.isEmpty {
                    let (t, i) = (gone.map(\.table), gone.map(\.id))
                    for sql: PostgresQuery in [
                        "DELETE FROM \(unescaped: self.table(.records)) r USING unnest(\(t)::text[], \(i)::text[]) AS u(t, i) WHERE r.tbl = u.t AND r.id = u.i",
                        "DELETE FROM \(unescaped: self.table(.conflicts)) c USING unnest(\(t)::text[], \(i)::text[]) AS u(t, i) WHERE c.tbl = u.t AND c.record_id = u.i",
                        "DELETE FROM \(unescaped: self.table(.compactPending)) p USING unnest(\(t)::text[], \(i)::text[]) AS u(t, i) WHERE p.tbl = u.t AND p.id = u.i",
                    ] {
                        _ = try await connection.query(sql, logger: logger).collect()
                    }
                    try await self.raiseFloor(to: floor, on: connection)
                }
                return ((last.table, last.id), gone.count, purge.seqs.count)
            }
            report.tombstones += pass.tombstones
            report.tombstoneEntries += pass.entries
            guard let last = pass.last else { return }
            after = last
        }
    }

    /// Raises the purge floor to `floor` (it never goes down), in the caller's transaction.
    private func raiseFloor(to floor: Int64, on connection: PostgresConnection) async throws {
        _ = try await connection.query("""
            INSERT INTO \(unescaped: table(.meta)) (key, value) VALUES (\(PostgresMetaKey.purgeFloor.rawValue), \(String(floor)))
            ON CONFLICT (key) DO UPDATE SET value = GREATEST(\(unescaped: table(.meta)).value::int8, excluded.value::int8)::text
            """, logger: logger).collect()
    }

    /// Writes records' folded identities and feed positions (a position never goes down: a
    /// node bootstrapping may have walked up to it but not past it), or clears them where
    /// none is left, in the caller's transaction.
    private func storeFolded(_ records: [FoldedRecord], on connection: PostgresConnection) async throws {
        guard !records.isEmpty else { return }
        // An empty text clears (an array of optionals does not encode).
        let texts = records.map { $0.identities.isEmpty ? "" : $0.identities.text }
        _ = try await connection.query("""
            UPDATE \(unescaped: table(.records)) r SET folded = NULLIF(u.f, ''),
              folded_at = CASE WHEN u.f = '' THEN NULL ELSE GREATEST(COALESCE(r.folded_at, 0), u.p) END
            FROM unnest(\(records.map(\.table))::text[], \(records.map(\.id))::text[], \(texts)::text[], \(records.map(\.position))::int8[]) AS u(t, i, f, p)
            WHERE r.tbl = u.t AND r.id = u.i
            """, logger: logger).collect()
    }

    /// Deletes `purge`'s entries with their route rows (and route entries) and records their
    /// identities as purged, in the caller's transaction.
    private func delete(_ purge: PurgedEntries, on connection: PostgresConnection) async throws {
        guard !purge.seqs.isEmpty else { return }
        for sql: PostgresQuery in [
            """
            DELETE FROM \(unescaped: table(.changeRoutes)) r USING unnest(\(purge.routeNodes)::text[], \(purge.routeSeqs)::int8[]) AS u(n, s)
            WHERE r.node = u.n AND r.seq = u.s
            """,
            """
            DELETE FROM \(unescaped: table(.routeEntries)) e USING unnest(\(purge.routeNodes)::text[], \(purge.routeSeqs)::int8[]) AS u(n, s)
            WHERE e.node = u.n AND e.seq = u.s
            """,
            "DELETE FROM \(unescaped: table(.changes)) WHERE seq = ANY(\(purge.seqs)::int8[])",
            "SELECT \(unescaped: "\"\(tenantSchema.name)\".ts_note_purged")(\(purge.origins)::text[], \(purge.originSeqs)::int8[])",
        ] {
            _ = try await connection.query(sql, logger: logger).collect()
        }
    }
}

/// A record's folded entries as a compaction transaction finds and changes them.
private struct FoldedRecord {
    var table: String
    var id: String
    var identities: FoldedIdentities
    /// Its feed position: the highest position of an entry folded into it.
    var position: Int64
    var wasFolded: Bool
    var live: Bool
    var changed = false
}

/// Log entries one compaction transaction purges, column by column.
private struct PurgedEntries {
    var seqs: [Int64] = [], origins: [String] = [], originSeqs: [Int64] = []
    var routeNodes: [String] = [], routeSeqs: [Int64] = []

    mutating func add(seq: Int64, origin: String, originSeq: Int64, routed: [NodeID]) {
        seqs.append(seq)
        origins.append(origin)
        originSeqs.append(originSeq)
        for node in routed {
            routeNodes.append(node.rawValue)
            routeSeqs.append(seq)
        }
    }
}

extension PostgresTenantStore {
    /// What the tenant's schema holds on disk (``StorageFootprint``), for benchmarks and
    /// diagnostics: every table of the schema with its indexes and TOAST (`fileBytes`; the
    /// space of deleted rows is reused after vacuum, not given back), against a copy of
    /// `records` with its primary key (`liveBytes`: every record's values, versions and
    /// route; `liveWithFoldedBytes`: with the folded identities and their index), made in a
    /// transaction and dropped with it.
    public func footprint() async throws -> StorageFootprint {
        try await prepared()
        let name = tenantSchema.name
        let logger = self.logger
        return try await client.withTransaction(logger: logger) { connection in
            let total = try await connection.query("""
                SELECT COALESCE(sum(pg_total_relation_size(c.oid)), 0)::int8 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = \(name) AND c.relkind = 'r'
                """, logger: logger).collect().first.map { try $0.decode(Int64.self) } ?? 0
            // Without the folded identities, which count against the store (as the log
            // entries they stand for did), as the SQLite engine's figure; and with them.
            func copySize(_ columns: String, index: Bool) async throws -> Int64 {
                let copy = "\"\(name)\".footprint_live"
                var statements = ["CREATE TABLE \(copy) AS SELECT \(columns) FROM \(self.table(.records))", "ALTER TABLE \(copy) ADD PRIMARY KEY (tbl, id)"]
                if index { statements.append("CREATE INDEX ON \(copy) (folded_at) WHERE folded_at IS NOT NULL") }
                for sql in statements { _ = try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger).collect() }
                let size = try await connection.query(PostgresQuery(unsafeSQL: "SELECT pg_total_relation_size('\(copy)')::int8"), logger: logger)
                    .collect().first.map { try $0.decode(Int64.self) } ?? 0
                _ = try await connection.query(PostgresQuery(unsafeSQL: "DROP TABLE \(copy)"), logger: logger).collect()
                return size
            }
            let live = try await copySize("tbl, id, fields, versions, tombstone, route, live", index: false)
            let withFolded = try await copySize("*", index: true)
            return StorageFootprint(fileBytes: total, usedBytes: total, walBytes: 0, liveBytes: live, liveWithFoldedBytes: withFolded)
        }
    }
}

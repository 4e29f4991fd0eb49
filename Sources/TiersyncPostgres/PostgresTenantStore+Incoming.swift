// Received changes on PostgreSQL: the same judgement as the SQLite engine's `applyIncoming`
// (identity, validation, clock skew, the gate, the merge, quarantine), run as four statements
// per push whatever its size: the tenant's lock, one read of the identities, quarantine
// entries and records the batch touches, the merge in memory, and one write of every table
// (data-modifying CTEs over `unnest` of arrays), then the commit.

import Logging
import PostgresNIO
import TiersyncCore
import TiersyncStorage

extension PostgresTenantStore {
    private struct Identity: Hashable {
        let origin: String
        let seq: Int64
    }

    private struct RecordKey: Hashable {
        let table: String
        let id: String
    }

    /// A change made ready outside the transaction: its verdict and its log entry.
    private struct Ready {
        let verdict: Result<Change, ChangeRejection>
        let table: TableSchema?
        let log: EncodedLogEntry?
    }

    private struct QuarantineRow {
        var entry: ChangeIdentityVerdict.Quarantined
        var reason: String
        var change: String
    }

    public func applyIncoming(_ changes: [Change], from sender: NodeID, source: ChangeSource, checkSkew: Bool,
                              gate: ChangeGate?, cursor: (name: String, value: Int64)?, wallMillis: UInt64) async throws -> IncomingReport {
        let root = try await prepared()
        let hop = Hop(node: root, atMillis: wallMillis)
        let ready: [Ready] = changes.map { change in
            let valid: Change
            switch schema.validate(change) {
            case .failure(let r): return Ready(verdict: .failure(r), table: nil, log: nil)
            case .success(let v): valid = v
            }
            if checkSkew {
                do throws(ClockSkewError) { try clock.check(valid.hlc, wallMillis: wallMillis) } catch {
                    let r = ChangeRejection(.clockSkew, "change \(valid.origin)#\(valid.originSeq) to \(valid.table)/\(valid.recordID): \(error.description)",
                                            restampAtMillis: wallMillis)
                    return Ready(verdict: .failure(r), table: nil, log: nil)
                }
            }
            return Ready(verdict: .success(valid), table: schema.table(valid.table), log: EncodedLogEntry(valid, trail: valid.trail(receivedAt: hop)))
        }
        let (changesTable, recordsTable, quarantineTable) = (table(.changes), table(.records), table(.quarantine))
        let logger = self.logger
        let channel = PostgresNotifier.defaultChannel
        let tenant = self.tenant
        return try await client.withTransaction(logger: logger) { connection in
            // Numbering starts under the tenant's one lock (see PostgresTenantSchema).
            var head = try await connection.query("SELECT seq FROM \(unescaped: table(.head)) WHERE id = 1 FOR UPDATE", logger: logger)
                .collect().first.map { try $0.decode(Int64.self) } ?? 0

            // What the store holds of the batch's identities (applied, quarantined) and
            // records, in one statement (a fresh snapshot, taken now that the lock is held):
            // every statement here is spent holding the tenant's lock.
            let identities = changes.filter { Change.sequenceRange.contains($0.originSeq) }
            let keys = Array(Set(changes.map { RecordKey(table: $0.table, id: $0.recordID) }))
            var held: [Identity: UInt64] = [:]
            var storedQuarantine: [Identity: ChangeIdentityVerdict.Quarantined] = [:]
            var current: [RecordKey: StoredRecord] = [:]
            let (origins, seqs) = (identities.map(\.origin.rawValue), identities.map(\.originSeq))
            let rows = try await connection.query("""
                SELECT 0, c.origin, NULL, NULL, NULL, NULL, NULL, c.origin_seq, c.hlc FROM \(unescaped: changesTable) c
                  JOIN unnest(\(origins)::text[], \(seqs)::int8[]) AS u(o, s) ON c.origin = u.o AND c.origin_seq = u.s
                UNION ALL
                SELECT 1, q.origin, q.code, q.received_from, NULL, NULL, NULL, q.origin_seq, q.received_at FROM \(unescaped: quarantineTable) q
                  JOIN unnest(\(origins)::text[], \(seqs)::int8[]) AS u(o, s) ON q.origin = u.o AND q.origin_seq = u.s
                UNION ALL
                SELECT 2, r.tbl, r.id, r.fields, r.versions, r.tombstone, r.route, NULL, NULL FROM \(unescaped: recordsTable) r
                  JOIN unnest(\(keys.map(\.table))::text[], \(keys.map(\.id))::text[]) AS u(t, i) ON r.tbl = u.t AND r.id = u.i
                """, logger: logger)
            for try await (kind, a, b, c, d, e, f, n1, n2) in rows.decode((Int32, String, String?, String?, String?, String?, String?, Int64?, Int64?).self) {
                switch kind {
                case 0:
                    held[Identity(origin: a, seq: n1 ?? 0)] = UInt64(bitPattern: n2 ?? 0)
                case 1:
                    storedQuarantine[Identity(origin: a, seq: n1 ?? 0)] = .init(code: b ?? "", receivedAtMillis: n2 ?? 0, receivedFrom: c ?? "")
                default:
                    guard let id = b, let fields = c, let versions = d, let route = f else { throw PostgresStoreError("a record of \(a) read without its state") }
                    current[RecordKey(table: a, id: id)] = try Self.record(table: a, id: id, fields: fields, versions: versions, tombstone: e, route: route)
                }
            }

            // The batch, judged in order in memory.
            var report = IncomingReport()
            var quarantine: [Identity: QuarantineRow] = [:]
            // Refusals in the batch's order: the order an admin lists them in (ids follow it).
            var refusalOrder: [Identity] = []
            var unquarantine: Set<Identity> = []
            var dirty: [RecordKey] = []
            var dirtySet: Set<RecordKey> = []
            var log = LogRows(), routes = (nodes: [String](), seqs: [Int64]())
            var entries = EntryRows(), conflicts = ConflictRows()
            func refuse(_ change: Change, _ rejection: ChangeRejection) {
                let id = Identity(origin: change.origin.rawValue, seq: change.originSeq)
                var at = Int64(wallMillis)
                // A change refused for clock skew again keeps its first refusal time: the
                // origin re-stamps it to that time, so writes accepted since win over it.
                if let earlier = quarantine[id]?.entry ?? storedQuarantine[id], earlier.code == ChangeRejection.Code.clockSkew.rawValue,
                   rejection.code == .clockSkew {
                    at = min(at, earlier.receivedAtMillis)
                }
                if quarantine[id] == nil { refusalOrder.append(id) }
                quarantine[id] = QuarantineRow(entry: .init(code: rejection.code.rawValue, receivedAtMillis: at, receivedFrom: sender.rawValue),
                                               reason: rejection.message, change: QuarantineEncoding.json(change))
                unquarantine.remove(id)
                report.rejected.append(RejectedChange(change: change, rejection: rejection))
            }
            for (change, prepared) in zip(changes, ready) {
                let id = Identity(origin: change.origin.rawValue, seq: change.originSeq)
                let entry = unquarantine.contains(id) ? nil : quarantine[id]?.entry ?? storedQuarantine[id]
                let identity = ChangeIdentityVerdict.judge(change, heldStamp: held[id], quarantined: entry)
                if identity == .duplicate {
                    report.duplicates += 1
                    continue
                }
                if let refusal = identity.refusal(for: change) {
                    refuse(change, refusal)
                    continue
                }
                let valid: Change
                switch prepared.verdict {
                case .failure(let rejection):
                    refuse(change, rejection)
                    continue
                case .success(let v): valid = v
                }
                let table = prepared.table!
                let key = RecordKey(table: valid.table, id: valid.recordID)
                let stored = current[key]
                let merged = RecordMerge.merge(valid, into: stored, table: table)
                if let gate, let refusal = gate(GateContext(change: valid, sender: sender, routeBefore: stored?.route, routeAfter: merged.route)) {
                    refuse(change, refusal)
                    continue
                }
                head += 1
                let seq = head
                if merged.outcome.changedAnything || stored == nil {
                    current[key] = StoredRecord(table: valid.table, id: valid.recordID, state: merged.state, route: merged.route)
                    if dirtySet.insert(key).inserted { dirty.append(key) }
                }
                for c in merged.outcome.conflicts {
                    conflicts.append(table: valid.table, id: valid.recordID, c, at: Int64(wallMillis))
                }
                log.append(seq: seq, valid, prepared.log!, source: source, sender: sender, at: Int64(wallMillis))
                let reached = stored.map { merged.route.union($0.route) } ?? merged.route
                for node in reached {
                    routes.nodes.append(node.rawValue)
                    routes.seqs.append(seq)
                }
                if let stored, !merged.route.isSubset(of: stored.route) {
                    let before = stored.route.map(\.rawValue).sorted().joined(separator: ",")
                    for node in merged.route.subtracting(stored.route) {
                        entries.append(node: node.rawValue, seq: seq, table: valid.table, id: valid.recordID, before: before)
                    }
                }
                held[id] = valid.hlc.rawValue
                if entry != nil || quarantine[id] != nil {
                    quarantine[id] = nil
                    unquarantine.insert(id)
                }
                report.applied += 1
                report.conflicts += merged.outcome.conflicts.count
            }

            // The writes: one statement (data-modifying CTEs, each an insert from arrays;
            // an empty array writes nothing), so the lock is held for two statements and the
            // commit. The refused and the applied identities are disjoint, so deleting and
            // inserting quarantine entries in one statement never meets one row twice.
            var records = RecordRows()
            for key in dirty { records.append(current[key]!) }
            let (gone, refusedRows) = (Array(unquarantine), refusalOrder.compactMap { id in quarantine[id].map { (key: id, value: $0) } })
            try await connection.query("""
                WITH rec AS (
                  INSERT INTO \(unescaped: recordsTable) (tbl, id, fields, versions, tombstone, route, live)
                  SELECT t, i, f, v, NULLIF(d, ''), r, l
                  FROM unnest(\(records.tables)::text[], \(records.ids)::text[], \(records.fields)::text[], \(records.versions)::text[],
                              \(records.tombstones)::text[], \(records.routes)::text[], \(records.live)::bool[]) AS u(t, i, f, v, d, r, l)
                  ON CONFLICT (tbl, id) DO UPDATE SET fields = excluded.fields, versions = excluded.versions,
                    tombstone = excluded.tombstone, route = excluded.route, live = excluded.live),
                log AS (
                  INSERT INTO \(unescaped: changesTable) (seq, origin, origin_seq, hlc, tbl, record_id, op, fields, prior, source, received_from, received_at, trail)
                  SELECT s, o, os, h, t, i, op, f, NULLIF(p, ''), src, NULLIF(rf, ''), ra, NULLIF(tr, '')
                  FROM unnest(\(log.seqs)::int8[], \(log.origins)::text[], \(log.originSeqs)::int8[], \(log.hlcs)::int8[], \(log.tables)::text[],
                              \(log.ids)::text[], \(log.ops)::text[], \(log.fields)::text[], \(log.priors)::text[], \(log.sources)::text[],
                              \(log.senders)::text[], \(log.receivedAt)::int8[], \(log.trails)::text[])
                    AS u(s, o, os, h, t, i, op, f, p, src, rf, ra, tr)),
                routes AS (
                  INSERT INTO \(unescaped: table(.changeRoutes)) (node, seq) SELECT * FROM unnest(\(routes.nodes)::text[], \(routes.seqs)::int8[])),
                entries AS (
                  INSERT INTO \(unescaped: table(.routeEntries)) (node, seq, tbl, record_id, route_before)
                  SELECT * FROM unnest(\(entries.nodes)::text[], \(entries.seqs)::int8[], \(entries.tables)::text[], \(entries.ids)::text[], \(entries.before)::text[])
                  ON CONFLICT DO NOTHING),
                conflicts AS (
                  INSERT INTO \(unescaped: table(.conflicts)) (tbl, record_id, field, winner_value, winner_version, loser_value, loser_version, detected_at)
                  SELECT * FROM unnest(\(conflicts.tables)::text[], \(conflicts.ids)::text[], \(conflicts.fields)::text[], \(conflicts.winners)::text[],
                                       \(conflicts.winnerVersions)::text[], \(conflicts.losers)::text[], \(conflicts.loserVersions)::text[], \(conflicts.at)::int8[])
                  ON CONFLICT DO NOTHING),
                released AS (
                  DELETE FROM \(unescaped: quarantineTable) q USING unnest(\(gone.map(\.origin))::text[], \(gone.map(\.seq))::int8[]) AS u(o, s)
                  WHERE q.origin = u.o AND q.origin_seq = u.s),
                refused AS (
                  INSERT INTO \(unescaped: quarantineTable) (origin, origin_seq, received_from, received_at, code, reason, change)
                  SELECT * FROM unnest(\(refusedRows.map(\.key.origin))::text[], \(refusedRows.map(\.key.seq))::int8[],
                                       \(refusedRows.map(\.value.entry.receivedFrom))::text[], \(refusedRows.map(\.value.entry.receivedAtMillis))::int8[],
                                       \(refusedRows.map(\.value.entry.code))::text[], \(refusedRows.map(\.value.reason))::text[], \(refusedRows.map(\.value.change))::text[])
                  ON CONFLICT (origin, origin_seq) DO UPDATE SET received_from = excluded.received_from, received_at = excluded.received_at,
                    code = excluded.code, reason = excluded.reason, change = excluded.change),
                numbered AS (UPDATE \(unescaped: table(.head)) SET seq = \(head) WHERE id = 1)
                -- Every hub process listening on this database wakes its long-polls for the
                -- tenant once the transaction commits (PostgreSQL sends it at commit).
                SELECT pg_notify(\(channel), \(tenant.rawValue)) WHERE \(report.applied > 0)
                """, logger: logger)
            if let cursor {
                try await connection.query("""
                    INSERT INTO \(unescaped: table(.meta)) (key, value) VALUES (\("cursor." + cursor.name), \(String(cursor.value)))
                    ON CONFLICT (key) DO UPDATE SET value = excluded.value
                    """, logger: logger)
            }
            return report
        }
    }
}

/// Change-log rows of one push, column by column (what `unnest` takes).
private struct LogRows {
    var seqs: [Int64] = [], origins: [String] = [], originSeqs: [Int64] = [], hlcs: [Int64] = []
    var tables: [String] = [], ids: [String] = [], ops: [String] = [], fields: [String] = [], priors: [String] = []
    var sources: [String] = [], senders: [String] = [], receivedAt: [Int64] = [], trails: [String] = []

    mutating func append(seq: Int64, _ change: Change, _ log: EncodedLogEntry, source: ChangeSource, sender: NodeID, at: Int64) {
        seqs.append(seq)
        origins.append(change.origin.rawValue)
        originSeqs.append(change.originSeq)
        hlcs.append(Int64(bitPattern: change.hlc.rawValue))
        tables.append(change.table)
        ids.append(change.recordID)
        ops.append(change.op.rawValue)
        fields.append(log.fields)
        // Empty stands for NULL (NULLIF in the statement): prior and trail are JSON, a
        // sender is a node id, so none of them is ever empty.
        priors.append(log.prior ?? "")
        sources.append(source.rawValue)
        senders.append(sender.rawValue)
        receivedAt.append(at)
        trails.append(log.trail ?? "")
    }
}

/// Records' new states, column by column.
private struct RecordRows {
    var tables: [String] = [], ids: [String] = [], fields: [String] = [], versions: [String] = []
    var tombstones: [String] = [], routes: [String] = [], live: [Bool] = []

    mutating func append(_ record: StoredRecord) {
        tables.append(record.table)
        ids.append(record.id)
        fields.append(record.state.isLive ? CanonicalJSON.object(record.state.liveValues) : "{}")
        versions.append(CanonicalJSON.groupedVersions(record.state.versions))
        // Empty stands for NULL, as in the log's rows.
        tombstones.append(record.state.tombstone?.description ?? "")
        routes.append(RecordMerge.encodeRoute(record.route))
        live.append(record.state.isLive)
    }
}

private struct EntryRows {
    var nodes: [String] = [], seqs: [Int64] = [], tables: [String] = [], ids: [String] = [], before: [String] = []

    mutating func append(node: String, seq: Int64, table: String, id: String, before: String) {
        nodes.append(node)
        seqs.append(seq)
        tables.append(table)
        ids.append(id)
        self.before.append(before)
    }
}

private struct ConflictRows {
    var tables: [String] = [], ids: [String] = [], fields: [String] = [], winners: [String] = [], winnerVersions: [String] = []
    var losers: [String] = [], loserVersions: [String] = [], at: [Int64] = []

    mutating func append(table: String, id: String, _ c: FieldConflict, at: Int64) {
        tables.append(table)
        ids.append(id)
        fields.append(c.field)
        winners.append(c.winner.canonical)
        winnerVersions.append(c.winnerVersion.description)
        losers.append(c.loser.canonical)
        loserVersions.append(c.loserVersion.description)
        self.at.append(at)
    }
}

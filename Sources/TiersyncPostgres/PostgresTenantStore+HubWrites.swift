// The hub's own edits on PostgreSQL (an administrator's resolution of a conflict, an erasure
// request, the hub's acknowledgement of an erasure): each is a
// change of the tenant's root, numbered and stamped from one shared row (`hub_clock`), newer
// than every version of the record it writes, and stored through the same path as a push,
// so it is logged, routed and fed to every node holding the record like any other change.

import Foundation
import PostgresNIO
import TiersyncCore
import TiersyncStorage

extension PostgresTenantStore {
    /// The hub's own numbering (`hub_clock.seq`, shared by every hub process) goes on after
    /// `held` when a child holds more of the root's changes than this database (restored
    /// from an older backup), by at most ``HubSequence/maximumAdoptedJump`` above it.
    public func adoptOwnSequence(_ held: Int64, of node: NodeID) async throws {
        guard Change.sequenceRange.contains(held) else { return }
        let root = try await prepared()
        guard node == root else { return }
        var sql = PostgresSQL()
        let (origin, reported, jump) = (sql.bind(root.rawValue), sql.bind(held), sql.bind(HubSequence.maximumAdoptedJump))
        sql.append("""
            WITH own AS (SELECT \(ownHighest(origin)) AS highest)
            INSERT INTO \(table(.hubClock)) AS c (id, seq, hlc)
            SELECT 1, LEAST(\(reported), own.highest + \(jump)), 0 FROM own WHERE \(reported) > own.highest
            ON CONFLICT (id) DO UPDATE SET seq = GREATEST(c.seq, excluded.seq)
            """)
        _ = try await client.query(sql.query, logger: logger).collect()
    }

    /// SQL for the highest sequence of the root's own changes this database has seen, `origin`
    /// its bound parameter: logged, or purged by compaction (a superseded entry leaves the log
    /// but keeps its number). From the log alone, a tenant moved from SQLite (whose purged
    /// entries do not move) numbered HQ's next write as one it had already made, and every
    /// node refused it as a reused identity: an erasure requested there reached no one.
    private func ownHighest(_ origin: String) -> String {
        """
        COALESCE(GREATEST((SELECT max(origin_seq) FROM \(table(.changes)) WHERE origin = \(origin)),
                          (SELECT max(through_seq) FROM \(table(.purged)) WHERE origin = \(origin)),
                          (SELECT max(hi) FROM \(table(.purgedRanges)) WHERE origin = \(origin))), 0)
        """
    }

    public func writeAsHub(_ writes: [RecordWrite]) async throws -> [Change] {
        let root = try await prepared()
        var written: [Change] = []
        for write in writes {
            written.append(try await writeOne(write, as: root))
        }
        return written
    }

    /// `stampedAt`: stamped so, not newer than the record's versions
    /// (``RulesStore/createRuleRecord(_:stampedAtMillis:)``); the shared clock goes on past it.
    func writeOne(_ write: RecordWrite, as root: NodeID, stampedAt fixed: HLCTimestamp? = nil) async throws -> Change {
        var read = PostgresSQL()
        let (tbl, id, origin) = (read.bind(write.table), read.bind(write.id), read.bind(root.rawValue))
        read.append("""
            SELECT r.versions, r.tombstone, r.fields, r.route,
                   \(ownHighest(origin))
            FROM (SELECT 1) AS one LEFT JOIN \(table(.records)) r ON r.tbl = \(tbl) AND r.id = \(id)
            """)
        guard let row = try await client.query(read.query, logger: logger).collect().first else {
            throw PostgresStoreError("no answer reading \(write.table)/\(write.id)")
        }
        let (versions, tombstone, fields, route, loggedSeq) = try row.decode((String?, String?, String?, String?, Int64).self)
        let current = try versions.map {
            try Self.record(table: write.table, id: write.id, fields: fields ?? "{}", versions: $0, tombstone: tombstone, route: route ?? "")
        }
        // Newer than every version the record carries (a node's clock may run ahead of the
        // hub's), so the edit wins everywhere; its `prior` names what it overwrites, so no
        // replica keeps it as a concurrent edit.
        let now = WallClock.nowMillis()
        var floor = HLCTimestamp(wallMillis: now, counter: 0)
        for version in (current?.state.versions.values.map { $0 } ?? []) + [current?.state.tombstone].compactMap({ $0 }) where version.hlc >= floor {
            floor = HLCTimestamp(rawValue: version.hlc.rawValue + 1)
        }
        if let fixed { floor = fixed }
        var prior: [String: FieldVersion] = [:]
        for name in write.fields.keys { prior[name] = current?.state.versions[name] }
        // Checked first: a hub write that fails validation is refused, never quarantined.
        let draft = Change(origin: root, originSeq: 1, hlc: floor, table: write.table, recordID: write.id, op: write.op, fields: write.fields, prior: prior)
        if case .failure(let rejection) = schema.validate(draft) { throw StoreError.rejected(rejection) }
        // The sequence and the stamp, from one row every process updates under its row lock:
        // two hub processes writing at once never share a sequence or an HLC.
        var allocate = PostgresSQL()
        let (seqFloor, hlcFloor) = (allocate.bind(loggedSeq), allocate.bind(Int64(bitPattern: floor.rawValue)))
        allocate.append("""
            INSERT INTO \(table(.hubClock)) AS c (id, seq, hlc) VALUES (1, \(seqFloor) + 1, \(hlcFloor))
            ON CONFLICT (id) DO UPDATE SET seq = GREATEST(c.seq, \(seqFloor)) + 1, hlc = GREATEST(c.hlc + 1, \(hlcFloor))
            RETURNING seq, hlc
            """)
        guard let allocated = try await client.query(allocate.query, logger: logger).collect().first else {
            throw PostgresStoreError("no sequence allocated for the hub's write")
        }
        let (seq, allocatedHLC) = try allocated.decode((Int64, Int64).self)
        let hlc = fixed.map { Int64(bitPattern: $0.rawValue) } ?? allocatedHLC
        let change = Change(origin: root, originSeq: seq, hlc: HLCTimestamp(rawValue: UInt64(bitPattern: hlc)), table: write.table,
                            recordID: write.id, op: write.op, fields: write.fields, prior: prior)
        let report = try await applyIncoming([change], from: root, source: .local, checkSkew: false, gate: nil, cursor: nil, wallMillis: now)
        guard report.applied == 1 else {
            throw PostgresStoreError("the hub's write \(root)#\(seq) was not applied: \(report.rejected.first?.message ?? "a duplicate")")
        }
        return change
    }
}

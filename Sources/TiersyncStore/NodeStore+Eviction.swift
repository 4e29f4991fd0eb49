// Re-scoping (docs/PRIVACY.md, "Re-scoping"): a record whose route leaves this node's scope
// (its owner changed, a dealer moved to another country) is evicted here, with its log
// entries, unless it is still routed into the scope for another reason or the node has not
// yet sent its own changes of it. Should it come back, the feed's snapshot on route entry
// delivers it whole again (the entries are gone, not merely emptied, so they are not taken
// for duplicates).

import GRDB
import TiersyncCore

/// What an eviction did.
public struct EvictionReport: Sendable, Equatable {
    /// Records evicted (rows or tombstones), with their log entries.
    public var records = 0
    public var logEntries = 0
    /// Records outside the scope kept for now: changes of them made here (or received from a
    /// child) are not yet acknowledged by the parent.
    public var keptUnsent = 0
    /// Those records (table, id): to evict once their changes are acknowledged.
    public var kept: [RecordKey] = []
    /// Children's changes, refused above because their maker had left this node's subtree,
    /// let go here; their makers were told to send them again (``UpstreamRefusal``).
    public var sendAgainNotices = 0

    public init() {}
}

extension EvictionReport {
    /// Marks `store` as holding notices for children when this eviction kept any.
    func withNoticeFlag(on store: NodeStore) -> EvictionReport {
        if sendAgainNotices > 0 { store.hasUpstreamRefusals.store(true, ordering: .relaxed) }
        return self
    }
}

/// A record's table and id.
public struct RecordKey: Sendable, Hashable {
    public var table: String
    public var id: String
    public init(table: String, id: String) { (self.table, self.id) = (table, id) }
}

extension NodeStore {
    /// Evicts records held here whose route lies outside `scope`: those touched by
    /// `changes` in a route field (after a pulled page), or every record (`changes` nil: after
    /// the node's own scope changed). The tenant's root keeps everything; nothing unsent is
    /// evicted.
    @discardableResult
    public func evict(outside scope: Scope, touchedBy changes: [Change]? = nil) throws -> EvictionReport {
        guard let changes else { return try evict(outside: scope, records: nil) }
        var seen = Set<RecordKey>()
        let keys = changes.compactMap { change -> RecordKey? in
            guard let table = schema.table(change.table), !Set(table.routeFields).isDisjoint(with: change.fields.keys),
                  seen.insert(RecordKey(table: change.table, id: change.recordID)).inserted else { return nil }
            return RecordKey(table: change.table, id: change.recordID)
        }
        return keys.isEmpty ? EvictionReport() : try evict(outside: scope, records: keys)
    }

    /// Evicts `records` (nil: every record held) whose route lies outside `scope`.
    @discardableResult
    public func evict(outside scope: Scope, records keys: [RecordKey]?) throws -> EvictionReport {
        guard scope.nodes != nil else { return EvictionReport() }
        let candidates: [(table: TableSchema, id: String)]? = keys?.compactMap { key in schema.table(key.table).map { ($0, key.id) } }
        return try writer.write { db in
            guard let me = try Self.identity(db), me.parent != nil else { return EvictionReport() }
            var report = EvictionReport()
            var statements = LogStatements(db)
            if let nodes = scope.nodes {
                report.sendAgainNotices = try releaseChangesOfMakersGone(db, &statements, below: nodes, me: me.node)
            }
            var records: [(table: TableSchema, id: String, route: Set<NodeID>)] = []
            if let candidates {
                for (table, id) in candidates {
                    if let stored = try load(db, table: table, id: id) { records.append((table, id, stored.route)) }
                }
            } else {
                for table in schema.tables {
                    for row in try Row.fetchAll(db, sql: "SELECT id, \(DomainTables.routeColumn) FROM \(table.name.quotedDatabaseIdentifier)") {
                        records.append((table, row[0], Self.parseRoute(row[1])))
                    }
                    for row in try Row.fetchAll(db, sql: "SELECT id, route FROM ts_tombstones WHERE tbl = ?", arguments: [table.name]) {
                        records.append((table, row[0], Self.parseRoute(row[1])))
                    }
                }
            }
            let outside = records.filter { !$0.route.isEmpty && !scope.contains(route: $0.route) }
            guard !outside.isEmpty else { return report }
            let pushed = try Int64.fetchOne(db, sql: "SELECT value FROM ts_cursors WHERE name = ?", arguments: [Self.parentPushCursor]) ?? 0
            // Own sequence numbers never go back: the highest used so far becomes the floor
            // before any own entry is removed.
            try Self.raiseSeqFloor(db, node: me.node)
            for (table, id, _) in outside {
                // Unsent: not pushed yet, or refused for a reason that may pass and waiting to be
                // sent again (its retry would find its log entry gone). A change refused as
                // outside this node's scope never passes now that the record left it: its retry
                // goes with the record (kept for it, the record stayed here for good).
                try db.execute(sql: """
                    DELETE FROM ts_push_retries WHERE code = ? AND (origin, origin_seq) IN
                        (SELECT origin, origin_seq FROM ts_changes WHERE tbl = ? AND record_id = ?)
                    """, arguments: [ChangeRejection.Code.forbidden.rawValue, table.name, id])
                let unsent = try Bool.fetchOne(db, sql: """
                    SELECT EXISTS (SELECT 1 FROM ts_changes WHERE tbl = ? AND record_id = ? AND source != 'parent' AND seq > ?)
                        OR EXISTS (SELECT 1 FROM ts_changes c JOIN ts_push_retries r ON r.origin = c.origin AND r.origin_seq = c.origin_seq
                                   WHERE c.tbl = ? AND c.record_id = ?)
                    """, arguments: [table.name, id, pushed, table.name, id]) ?? false
                if unsent {
                    report.keptUnsent += 1
                    report.kept.append(RecordKey(table: table.name, id: id))
                    continue
                }
                // A country keeps the newest entry that reached a node below it (the change that
                // moved the record away): a dealer that has not pulled it yet learns from it to
                // evict its own copy. Everything else of the record goes.
                var keep: Int64 = -1
                if let below = scope.nodes?.subtracting([me.node]), !below.isEmpty {
                    keep = try Int64.fetchOne(db, sql: """
                        SELECT MAX(c.seq) FROM ts_changes c JOIN ts_change_routes r ON r.seq = c.seq
                        WHERE c.tbl = ? AND c.record_id = ? AND r.node IN (\(databaseQuestionMarks(count: below.count)))
                        """, arguments: StatementArguments([table.name, id] + below.map(\.rawValue))) ?? -1
                }
                report.logEntries += try removeRecord(db, &statements, table: table, id: id, keepingEntry: keep)
                report.records += 1
            }
            return report
        }.withNoticeFlag(on: self)
    }

    /// ``releaseChangesOfMakersGone(_:_:below:me:)`` in a transaction of its own, for
    /// `scope` (this node's, from the directory it mirrors): run when the parent refuses a
    /// child's change after the sweep that followed the move (the mirror learned of it
    /// first). Returns the notices kept.
    public func releaseChangesOfMakersGone(outside scope: Scope) throws -> Int {
        guard let nodes = scope.nodes else { return 0 }
        let kept = try writer.write { db -> Int in
            guard let me = try Self.identity(db), me.parent != nil else { return 0 }
            var statements = LogStatements(db)
            return try releaseChangesOfMakersGone(db, &statements, below: nodes, me: me.node)
        }
        if kept > 0 { hasUpstreamRefusals.store(true, ordering: .relaxed) }
        return kept
    }

    /// Withdraws children's changes the parent refused because their maker is no longer below
    /// this node (HQ moved it away after this node took them: retries of code `forbidden`
    /// whose origin is outside `nodes`), whatever their records' routes, and keeps a notice
    /// for the child they came from asking it to send them again, to whichever parent it has
    /// by then (``UpstreamRefusal`` with `outsideScopeOf` naming this node). Moved back before
    /// anything refused it, the maker took the changes for delivered, and they were lost
    /// (helper 80); kept, they were refused for ever. Withdrawn, not noted as purged: sent
    /// again, they are new here, not duplicates. One notice per child and origin, naming the
    /// lowest sequence let go: the child sends again from there on (its push goes back, as
    /// for a restored parent), so thousands let go at once cost one notice, not one each, of
    /// which only the newest ``maxUpstreamRefusalsPerChild`` were kept (helper 86: 1,400
    /// changes lost). Only records wholly outside the scope were looked at first, so a
    /// dialogue also routed to the country kept its refused change (helper 84). Returns the
    /// changes let go.
    func releaseChangesOfMakersGone(_ db: Database, _ statements: inout LogStatements, below nodes: Set<NodeID>, me: NodeID) throws -> Int {
        let refused = try Self.fetchLogged(db, sql: """
            SELECT \(Self.loggedColumns(of: "c")) FROM ts_push_retries p
            JOIN ts_changes c ON c.origin = p.origin AND c.origin_seq = p.origin_seq
            WHERE p.code = ? AND c.source = ? AND c.op != '\(Self.erasedOp)' ORDER BY c.seq
            """, arguments: [ChangeRejection.Code.forbidden.rawValue, ChangeSource.child.rawValue])
        var lowest: [String: (via: NodeID, change: Change)] = [:]
        var released = 0
        for entry in refused where !nodes.contains(entry.change.origin) {
            guard let via = entry.receivedFrom else { continue }
            try withdrawLogged(db, &statements, entry.change, seq: entry.seq)
            released += 1
            let key = "\(via)\u{0}\(entry.change.origin)"
            if lowest[key].map({ entry.change.originSeq < $0.change.originSeq }) ?? true { lowest[key] = (via, entry.change) }
        }
        let nowMillis = WallClock.nowMillis()
        for (via, change) in lowest.values.sorted(by: { $0.change.originSeq < $1.change.originSeq }) {
            let notice = RejectedChange(change: change, rejection: ChangeRejection(
                .forbidden, "change \(change.origin)#\(change.originSeq) (and any later one of \(change.origin) taken here) was refused above '\(me)', which no longer relays for its maker (moved away): send them again to the maker's parent",
                outsideScopeOf: me))
            try Self.keepUpstreamRefusal(db, via: via.rawValue, refusal: notice, nowMillis: nowMillis)
        }
        return released
    }

    /// Removes a record from this store: its row or tombstone (with its KPI counts), its log
    /// entries but `keepingEntry`, their routes and retries, its route entries and conflicts. Returns the
    /// log entries removed. Shared by eviction, the purge of old tombstones and the end of
    /// a re-bootstrap. The caller raises the sequence floor first if own entries may go.
    func removeRecord(_ db: Database, _ statements: inout LogStatements, table: TableSchema, id: String,
                      keepingEntry keep: Int64 = -1) throws -> Int {
        let stored = try load(db, table: table, id: id)
        try countKPIs(db, &statements, table: table, id: id, before: stored, after: RecordState())
        try db.execute(sql: """
            DELETE FROM ts_push_retries WHERE (origin, origin_seq) IN
                (SELECT origin, origin_seq FROM ts_changes WHERE tbl = ? AND record_id = ? AND seq != ?);
            DELETE FROM ts_change_routes WHERE seq IN (SELECT seq FROM ts_changes WHERE tbl = ? AND record_id = ? AND seq != ?);
            DELETE FROM ts_route_entries WHERE tbl = ? AND record_id = ?;
            DELETE FROM ts_conflicts WHERE tbl = ? AND record_id = ?;
            """, arguments: [table.name, id, keep, table.name, id, keep, table.name, id, table.name, id])
        try db.execute(sql: "DELETE FROM ts_changes WHERE tbl = ? AND record_id = ? AND seq != ?", arguments: [table.name, id, keep])
        let removed = db.changesCount
        try db.execute(sql: tableSQL[table.name]!.delete, arguments: [id])
        try db.execute(sql: "DELETE FROM ts_tombstones WHERE tbl = ? AND id = ?", arguments: [table.name, id])
        return removed
    }

    /// Raises the sequence floor to the highest own sequence logged: own numbers never go
    /// back, even when the entries holding the highest ones are removed.
    static func raiseSeqFloor(_ db: Database, node: NodeID) throws {
        let highest = try Int64.fetchOne(db, sql: "SELECT MAX(origin_seq) FROM ts_changes WHERE origin = ?", arguments: [node.rawValue]) ?? 0
        if highest > (try seqFloor(db)) { try setMeta(db, .seqFloor, String(highest)) }
    }
}

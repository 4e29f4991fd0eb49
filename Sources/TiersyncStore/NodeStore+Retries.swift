// Push retries (`ts_push_retries`): changes the parent refused for a reason that may pass,
// re-sent after a delay that doubles per attempt, and forgotten once accepted.

import GRDB
import TiersyncCore

extension NodeStore {
    /// Remembers changes the parent refused for a reason that may pass (clock skew, scope,
    /// schema version, size), to re-send after a delay that doubles per attempt (1 s … 1 h).
    public func scheduleRetries(_ rejected: [RejectedChange], nowMillis: UInt64 = WallClock.nowMillis()) throws {
        guard !rejected.isEmpty else { return }
        try writer.write { db in
            for r in rejected where !r.code.isFinal {
                let attempts = (try Int.fetchOne(db, sql: "SELECT attempts FROM ts_push_retries WHERE origin = ? AND origin_seq = ?",
                                                 arguments: [r.origin.rawValue, r.originSeq]) ?? 0) + 1
                let delay = min(UInt64(1_000) << UInt64(min(attempts - 1, 12)), 3_600_000)
                // Only for a change still logged: one withdrawn while its push was on the wire
                // (its record's refusal passed down meanwhile) could never be sent again.
                try db.execute(sql: """
                    INSERT INTO ts_push_retries (origin, origin_seq, code, reason, attempts, next_at)
                    SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE EXISTS (SELECT 1 FROM ts_changes WHERE origin = ?1 AND origin_seq = ?2)
                    ON CONFLICT (origin, origin_seq) DO UPDATE SET code = excluded.code, reason = excluded.reason,
                        attempts = excluded.attempts, next_at = excluded.next_at
                    """, arguments: [r.origin.rawValue, r.originSeq, r.code.rawValue, r.message, attempts, Int64(nowMillis + delay)])
            }
        }
    }

    /// Drops changes this node took from its children and relayed, which its parent refused
    /// as outside the scope of the node that made them (``RejectedChange/outsideScopeOf``),
    /// and rebuilds their records without them. The child could not know (a record id
    /// already used in another country, a record HQ had just given to another dealer); the
    /// parent, which holds more of the tenant's records, does. Kept merged here, the refused
    /// write went on deciding the record's fields and route at this node: when the record
    /// entered this node's scope later (its owner's dealer moved in), the parent's copy merged
    /// with it and went, whole, to the child that wrote under the same id.
    ///
    /// Each change's log entry, routes and retry go, and its sequence is noted as purged, so
    /// it still counts as held (the child does not take this node for one restored from a
    /// backup) and the child's copy of it is a duplicate. Its record keeps what the other
    /// entries still logged here wrote (``withdrawLogged(_:_:_:seq:)``). The child it came
    /// from is told (``UpstreamRefusal``, `GET /v1/refusals`) and drops its copy in turn
    /// (``takeUpstreamRefusals(_:from:nowMillis:)``). This node's own changes are never
    /// dropped, nor a change with an earlier one of its record waiting to be sent again (the
    /// parent judged it without that one). Changes are taken in `refused`'s order, the
    /// log's. Returns the changes dropped.
    public func dropRefusedRelays(_ refused: [(change: Change, refusal: RejectedChange)], nowMillis: UInt64 = WallClock.nowMillis()) throws -> Int {
        guard !refused.isEmpty else { return 0 }
        return try writer.write { db in
            guard let me = try Self.identity(db)?.node else { return 0 }
            var statements = LogStatements(db)
            var dropped = 0
            for (change, refusal) in refused where change.origin != me {
                if try dropRelayed(db, &statements, change, refusal: refusal, nowMillis: nowMillis) { dropped += 1 }
            }
            if dropped > 0 { hasUpstreamRefusals.store(true, ordering: .relaxed) }
            return dropped
        }
    }

    /// Drops one relayed change of a child (``dropRefusedRelays(_:nowMillis:)``) and keeps
    /// the notice for the child it came from; false when it is not logged here as taken from
    /// a child (or its entry is an erased one's, which stays), or, unless `evenBehindRetries`
    /// (the parent dropped it already: a notice), an earlier change of its record still
    /// waits to be sent again.
    func dropRelayed(_ db: Database, _ statements: inout LogStatements, _ change: Change, refusal: RejectedChange, nowMillis: UInt64,
                     evenBehindRetries: Bool = false) throws -> Bool {
        // An erased record's entries stay (emptied): they make a late copy a duplicate.
        guard let row = try Row.fetchOne(db, sql: """
            SELECT seq, received_from FROM ts_changes WHERE origin = ? AND origin_seq = ? AND source = ? AND op != '\(Self.erasedOp)'
            """, arguments: [change.origin.rawValue, change.originSeq, ChangeSource.child.rawValue]) else { return false }
        let seq: Int64 = row["seq"]
        // An earlier change of the record still waits to be sent again (refused for a
        // reason that passes): the parent judged this one without it. Kept, and tried
        // again after it.
        if !evenBehindRetries, try Bool.fetchOne(db, sql: """
            SELECT EXISTS (SELECT 1 FROM ts_changes c JOIN ts_push_retries p ON p.origin = c.origin AND p.origin_seq = c.origin_seq
                           WHERE c.tbl = ? AND c.record_id = ? AND c.seq < ?)
            """, arguments: [change.table, change.recordID, seq]) ?? false { return false }
        try withdrawLogged(db, &statements, change, seq: seq)
        try Self.notePurgedSeq(db, origin: change.origin, seq: change.originSeq)
        try Self.notePurged(db, [change.origin: change.originSeq])
        if let via = row["received_from"] as String? {
            try Self.keepUpstreamRefusal(db, via: via, refusal: refusal, nowMillis: nowMillis)
        }
        return true
    }

    /// Takes one logged change out of this store: its log entry, routes, route entries,
    /// retry and the conflicts naming its version go, and its record is rebuilt from the
    /// other entries still logged here: the fields the change won go, and each gets back the
    /// value of highest version another logged entry gives it (one compaction folded or
    /// purged is not known any more); a refused delete goes with the fields it hid; a record
    /// left with nothing is removed. The new route is not logged: a node it newly names gets
    /// the record with the record's next change. `seq` is the change's log position here.
    func withdrawLogged(_ db: Database, _ statements: inout LogStatements, _ change: Change, seq: Int64) throws {
        try db.execute(sql: """
            DELETE FROM ts_change_routes WHERE seq = ?;
            DELETE FROM ts_route_entries WHERE seq = ?;
            DELETE FROM ts_changes WHERE seq = ?;
            DELETE FROM ts_push_retries WHERE origin = ? AND origin_seq = ?;
            """, arguments: [seq, seq, seq, change.origin.rawValue, change.originSeq])
        let version = change.version.description
        try db.execute(sql: "DELETE FROM ts_conflicts WHERE tbl = ? AND record_id = ? AND (winner_version = ? OR loser_version = ?)",
                       arguments: [change.table, change.recordID, version, version])
        guard let table = schema.table(change.table), let stored = try load(db, table: table, id: change.recordID),
              var state = stored.state.withdrawing(change.version) else { return }
        // The other entries still logged, in log order: merged again, they give back
        // what the change overwrote, and replayed alone, the route they made.
        var replayed = RecordState(), replayedRoute: Set<NodeID>?
        for entry in try Self.fetchLogged(db, sql: """
            SELECT \(Self.loggedColumns(of: nil)) FROM ts_changes WHERE tbl = ? AND record_id = ? ORDER BY seq
            """, arguments: [table.name, change.recordID]) {
            state.apply(entry.change)
            replayed.apply(entry.change)
            replayedRoute = RecordMerge.route(of: replayed, table: table, previous: replayedRoute)
        }
        if state.isEmpty {
            try removeRecord(db, &statements, table: table, id: change.recordID)
            return
        }
        let route = RecordMerge.route(of: state, table: table, previous: replayedRoute ?? [])
        try save(db, &statements, table: table, id: change.recordID, row: EncodedRecord(state, route: route, table: table), replacing: stored)
        try countKPIs(db, &statements, table: table, id: change.recordID, before: stored, after: state)
    }

    /// Only retries whose change is still logged count: one whose entry left the log (its
    /// record evicted or erased) can never be sent, and an agent woken for it when it fell
    /// due found nothing to send and woke again at once, for ever.
    static let retryEntryJoin = "JOIN ts_changes c ON c.origin = p.origin AND c.origin_seq = p.origin_seq"

    /// Refused changes due for another try, oldest first.
    public func dueRetries(nowMillis: UInt64 = WallClock.nowMillis(), limit: Int) throws -> [Change] {
        try writer.read { db in
            try Self.fetchLogged(db, sql: """
                SELECT \(Self.loggedColumns(of: "c")) FROM ts_push_retries p \(Self.retryEntryJoin)
                WHERE p.next_at <= ? ORDER BY c.seq LIMIT ?
                """, arguments: [Int64(nowMillis), limit]).map(\.change)
        }
    }

    /// Forgets retries for changes the parent has now accepted.
    public func clearRetries(_ changes: [Change]) throws {
        try writer.write { db in
            for c in changes {
                try db.execute(sql: "DELETE FROM ts_push_retries WHERE origin = ? AND origin_seq = ?", arguments: [c.origin.rawValue, c.originSeq])
            }
        }
    }

    /// How many refused changes wait for another try.
    public func pendingRetries() throws -> Int {
        try writer.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM ts_push_retries p \(Self.retryEntryJoin)") ?? 0 }
    }

    /// The refused changes waiting for another try, counted by refusal code (most first).
    public func retriesByCode() throws -> [(code: String, count: Int)] {
        try writer.read { db in
            try Row.fetchAll(db, sql: "SELECT p.code, COUNT(*) FROM ts_push_retries p \(Self.retryEntryJoin) GROUP BY p.code ORDER BY 2 DESC, 1")
                .map { (code: $0[0], count: $0[1]) }
        }
    }

    /// When the next retry is due (ms since the epoch), if any.
    public func nextRetryMillis() throws -> UInt64? {
        try writer.read { db in try Int64.fetchOne(db, sql: "SELECT MIN(p.next_at) FROM ts_push_retries p \(Self.retryEntryJoin)").map(UInt64.init) }
    }
}

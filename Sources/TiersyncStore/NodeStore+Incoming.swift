// Received changes: `applyIncoming` and its two halves, `prepareIncoming` (validation,
// encoding and the merge of records new here, outside the write transaction) and
// `apply(_:cursor:)` (deduplication by identity, the gate, quarantine of refusals, the
// merge into stored records and the cursor, in one transaction); what a change's identity
// says about it here (``ChangeIdentityVerdict``, judged in `IncomingBatch`).

import GRDB
import TiersyncCore

extension NodeStore {
    /// Applies changes received from `sender` in one transaction: each is applied once
    /// (by origin and sequence), or quarantined with its reason; none blocks another.
    /// `cursor`, when given, is stored in the same transaction, so a crash can never
    /// separate "applied" from "remembered as applied".
    public func applyIncoming(_ changes: [Change], from sender: NodeID, source: ChangeSource,
                              checkSkew: Bool, gate: ChangeGate? = nil, cursor: (name: String, value: Int64)? = nil,
                              wallMillis: UInt64 = WallClock.nowMillis()) async throws -> IncomingReport {
        let batch = try await prepareIncoming(changes, from: sender, source: source, checkSkew: checkSkew, gate: gate, wallMillis: wallMillis)
        return try await apply(batch, cursor: cursor)
    }

    /// The first half of ``applyIncoming(_:from:source:checkSkew:gate:cursor:wallMillis:)``:
    /// validation, encoding and the merge of records new here, which need no store and run
    /// on the caller's core, outside the (serialized) write transaction. A catch-up
    /// prepares the next page while the current one is written.
    public func prepareIncoming(_ changes: [Change], from sender: NodeID, source: ChangeSource,
                                checkSkew: Bool, gate: ChangeGate? = nil,
                                wallMillis: UInt64 = WallClock.nowMillis()) async throws -> IncomingBatchPlan {
        let me = try await receiverNode()
        // A large batch is prepared on the push lane, off the cooperative pool that serves
        // every tenant's requests.
        let prepared = try await PushLane.run(changes: changes.count) { [schema, clock] in
            PreparedChange.prepare(changes, schema: schema, clock: clock, receiver: me, sender: sender,
                                   checkSkew: checkSkew, gate: gate, wallMillis: wallMillis)
        }
        return IncomingBatchPlan(changes: changes, sender: sender, source: source, gate: gate, wallMillis: wallMillis, prepared: prepared)
    }

    /// Merges a change the log already holds into its record again, when that changes it: a
    /// record evicted here keeps the log entries still routed to a child (a dealer learns
    /// from them that it left), and when the record comes back (a backfill after its dealer
    /// moved away and back, a re-route) those entries arrive as duplicates while the earlier
    /// ones arrive anew: the record came back without them, stale (a customer handed from d1
    /// to d2 was owned by d1 again at the country, and sent back to d1). The merge is
    /// idempotent, so a record that holds the change is left as it is; a record not held
    /// here is not made from a duplicate, nor one erased. When it does change the record, the
    /// entry is logged again at the head with the record's route now (and removed where it
    /// was): children that took the earlier entries anew get this one after them.
    /// Returns whether it did.
    func remerge(_ db: Database, _ statements: inout LogStatements, _ change: Change, _ ready: PreparedChange,
                 from sender: NodeID, nowMillis: UInt64) throws -> Bool {
        guard case .success(let valid) = ready.verdict, let table = ready.table, let log = ready.log,
              let stored = try load(db, table: table, id: valid.recordID),
              try erasureBlocking(db, &statements, table: valid.table, id: valid.recordID, fields: valid.fields) == nil else { return false }
        let merged = RecordMerge.merge(valid, into: stored, table: table)
        guard merged.outcome.changedAnything,
              let held = try Int64.fetchOne(db.cachedStatement(sql: "SELECT seq FROM ts_changes WHERE origin = ? AND origin_seq = ?"),
                                            arguments: [valid.origin.rawValue, valid.originSeq]) else { return false }
        try db.execute(sql: "DELETE FROM ts_change_routes WHERE seq = ?", arguments: [held])
        try db.execute(sql: "DELETE FROM ts_route_entries WHERE seq = ?", arguments: [held])
        try db.execute(sql: "DELETE FROM ts_changes WHERE seq = ?", arguments: [held])
        _ = try apply(db, &statements, valid, log: log, table: table, stored: stored, merged: merged, source: .parent, from: sender, nowMillis: nowMillis)
        return true
    }

    /// What erasure request `change` may erase, as `gate` judges it: a record whose route it
    /// lets through (nil: no gate, everything).
    static func erasureJudge(_ gate: ChangeGate?, _ change: Change, sender: NodeID) -> ((Set<NodeID>) -> Bool)? {
        gate.map { gate in { route in
            gate(GateContext(change: change, sender: sender, routeBefore: route, routeAfter: route, erasing: true)) == nil
        } }
    }

    /// The second half: applies a prepared batch in one transaction, storing `cursor` with it.
    public func apply(_ plan: IncomingBatchPlan, cursor: (name: String, value: Int64)? = nil) async throws -> IncomingReport {
        let (changes, prepared, sender, source, gate, wallMillis) = (plan.changes, plan.prepared, plan.sender, plan.source, plan.gate, plan.wallMillis)
        // Kept alive past the transaction so freeing it happens here, not on the writer.
        defer { withExtendedLifetime(plan) {} }
        let report = try await writer.write { db in
            var report = IncomingReport()
            // Only a push from a child is answered with what was held before it; a pulled
            // page (often many origins) does not pay for the look-ups.
            if source == .child { report.heldBefore = try Self.highestSeqs(db, of: Set(changes.map(\.origin))) }
            var last = try Self.lastHLC(db)
            var statements = LogStatements(db)
            var batch = try IncomingBatch(db, changes: changes, schema: self.schema)
            if source == .parent { try Self.confirmRebootstrap(db, changes) }
            // This node, and the highest of its own numbers a parent may give back (read once, when one comes).
            let receiver = source == .parent ? try Self.identity(db)?.node : nil
            var ownCeiling: Int64?
            // Whether anything was ever purged here (else no change pays the range look-up).
            let anyPurged = try Bool.fetchOne(db.cachedStatement(sql: "SELECT EXISTS (SELECT 1 FROM ts_purged)")) ?? false
            func refuse(_ change: Change, _ rejection: ChangeRejection) throws {
                try self.quarantine(db, change, rejection, from: sender, nowMillis: wallMillis)
                batch.quarantined()
                report.rejected.append(RejectedChange(change: change, rejection: rejection))
            }
            for (change, ready) in zip(changes, prepared) {
                let identity = try batch.known(db, change)
                if identity == .duplicate {
                    // Counted as applied when merged again: it is logged anew, which the node's
                    // children are woken for and its eviction looks at.
                    if source == .parent, try self.remerge(db, &statements, change, ready, from: sender, nowMillis: wallMillis) {
                        report.applied += 1
                    } else {
                        report.duplicates += 1
                    }
                    if source == .parent, change.table == DomainSchema.erasures.name {
                        try self.judgeRequestFromParent(db, erasureID: change.recordID, nowMillis: wallMillis,
                                                        allowed: Self.erasureJudge(gate, change, sender: sender))
                    }
                    continue
                }
                // A change neither logged nor quarantined whose entry was purged here (it was
                // applied, then superseded) is a redelivery: a duplicate, whatever the store
                // would say of it now. Only the sequences actually purged count: one below
                // them that never arrived (held back in a country's quarantine, released
                // later) is new.
                if identity == .new, source == .child, anyPurged, Change.sequenceRange.contains(change.originSeq),
                   try Self.wasPurged(db, origin: change.origin, seq: change.originSeq) {
                    report.duplicates += 1
                    continue
                }
                if let refusal = identity.refusal(for: change) {
                    try refuse(change, refusal)
                    continue
                }
                // A parent gives a node its own changes back (its store restored from a
                // backup), it never makes them: one numbered further past what this node
                // numbered than a restore can explain would become the base of its next
                // numbers (past the sequence range: every later write refused upward).
                // This node's report on itself comes from this node only, whoever relays it:
                // a country's forged one was refused at HQ and still delivered down, and the
                // dealer's own report said what the country wrote.
                if source == .parent, let me = receiver, change.origin != me,
                   SelfReport.owner(table: change.table, recordID: change.recordID) == me.rawValue[...] {
                    try refuse(change, ChangeRejection(.forbidden,
                        "change \(change.origin)#\(change.originSeq) writes \(change.table)/\(change.recordID), this node's report on itself, which only it writes"))
                    continue
                }
                if source == .parent, let me = receiver, change.origin == me {
                    if ownCeiling == nil {
                        // What it logged, as its next local write counts (not what it refused).
                        let logged = try Int64.fetchOne(db.cachedStatement(sql: "SELECT MAX(origin_seq) FROM ts_changes WHERE origin = ?"),
                                                        arguments: [me.rawValue]) ?? 0
                        ownCeiling = max(logged, try Self.seqFloor(db)) + HubSequence.maximumAdoptedJump
                    }
                    // Only far up the range: a restored store may get back more than a million of
                    // its changes (pulled back, or adopted at whoami), and refusing those lost them.
                    if let ceiling = ownCeiling, change.originSeq > ceiling, change.originSeq > Change.sequenceRange.upperBound / 2 {
                        try refuse(change, ChangeRejection(.invalidChange,
                            "change \(change.origin)#\(change.originSeq) is this node's own by its origin, numbered far past anything it made (more than \(HubSequence.maximumAdoptedJump) above, in the upper half of the sequence range): a parent returns a node's changes, it does not make them"))
                        continue
                    }
                }
                // Data erased here never comes back: a change of an erased record, or one
                // linking to it, is refused (after the sender's scope) and counted, never kept.
                if let blocked = try self.erasureBlocking(db, &statements, table: change.table, id: change.recordID, fields: change.fields) {
                    // The sender's scope is judged on the record it writes: the erased record's
                    // route when that is the record, its own when it only links to one (judged
                    // on the linked record's route, a dealer's new dialogue naming an erased
                    // customer of its sibling was refused as outside its scope, retried for ever).
                    // An erased record noted with no route (a request from an ancestor that
                    // reached here holding none of it) is judged as the change makes it, as a
                    // new record: on the empty route every sender was outside, and a dealer
                    // re-sending it was refused as forbidden, for ever, instead of erased.
                    var (before, after) = (Optional(blocked.route), blocked.route)
                    if blocked.linked != nil || blocked.route.isEmpty, let table = self.schema.table(change.table) {
                        let stored = try self.load(db, table: table, id: change.recordID)
                        (before, after) = (stored?.route, RecordMerge.merge(change, into: stored, table: table).route)
                    }
                    // A copied route field copies an erased record's route, which nothing holds
                    // any more: it is not judged (refused as erased, such a change is erased at
                    // its maker; refused as forbidden, it was kept in its quarantine).
                    if let gate, let refusal = gate(GateContext(change: change, sender: sender, routeBefore: before, routeAfter: after,
                                                                copiedFromRoute: RouteReach.copiedFrom[change.table] == nil ? nil : after)) {
                        // Refused for its sender's scope, and not quarantined either: its
                        // values are those of an erased record.
                        report.rejected.append(RejectedChange(change: change, rejection: refusal))
                        continue
                    }
                    guard try self.countErasedRefusal(db, change, erasureID: blocked.erasureID, nowMillis: wallMillis) else {
                        report.duplicates += 1
                        continue
                    }
                    report.rejected.append(RejectedChange(change: change, rejection: Self.erasedRejection(table: change.table, id: change.recordID, erasureID: blocked.erasureID,
                                                                                                     linked: blocked.linked)))
                    continue
                }
                let valid: Change
                switch ready.verdict {
                case .failure(let rejection):
                    try refuse(change, rejection)
                    continue
                case .success(let v): valid = v
                }
                let table = ready.table!
                let stored: StoredRecord?
                let merged: MergedRecord
                let row: EncodedRecord?
                if let fresh = ready.fresh, !batch.mayExist(table: valid.table, id: valid.recordID),
                   fresh.refusal == nil || gate == nil || RouteReach.copiedFrom[valid.table] == nil {
                    // Nothing stored for the record: the prepared merge is the merge (a refusal
                    // of a change copying another record's route is judged again below, with
                    // that record).
                    if let refusal = fresh.refusal { try refuse(change, refusal); continue }
                    (stored, merged, row) = (nil, fresh.merged, fresh.row)
                } else {
                    stored = try self.load(db, table: table, id: valid.recordID)
                    // Merged once: the gate judges the result, and the same result is written.
                    merged = RecordMerge.merge(valid, into: stored, table: table)
                    if let gate, let refusal = try self.gateRefusal(db, gate, valid, sender: sender, before: stored?.route, merged: merged) {
                        try refuse(change, refusal)
                        continue
                    }
                    if let refusal = RecordMerge.erasureSubjectRefusal(of: valid, merged: merged, over: stored) {
                        try refuse(change, refusal)
                        continue
                    }
                    row = nil
                    // From the parent, a change at or below the purged sequence may come again (a
                    // snapshot of a record entering this scope): a duplicate when it changes
                    // nothing, not a new entry to log and feed again (changing nothing here, it
                    // changes nothing below either).
                    if anyPurged, source == .parent, stored != nil, !merged.outcome.changedAnything,
                       valid.originSeq <= (try Self.purgedThrough(db, origin: valid.origin)) {
                        report.duplicates += 1
                        continue
                    }
                }
                let outcome = try self.apply(db, &statements, valid, log: ready.log!, table: table, stored: stored, merged: merged, row: row,
                                             source: source, from: sender, nowMillis: wallMillis,
                                             erasureAllowed: Self.erasureJudge(gate, valid, sender: sender))
                batch.applied(valid)
                // Refused earlier for its context, accepted now: no longer quarantined.
                if !batch.quarantineEmpty {
                    try db.cachedStatement(sql: "DELETE FROM ts_quarantine WHERE origin = ? AND origin_seq = ?")
                        .execute(arguments: [valid.origin.rawValue, valid.originSeq])
                }
                report.applied += 1
                report.conflicts += outcome.conflicts.count
                // Never adopt a time far in the future, even from a trusted parent: the
                // node would stamp its own writes there and have them refused.
                if valid.hlc.wallMillis <= wallMillis + self.clock.maxSkewMillis { last = max(last, valid.hlc) }
            }
            try Self.setMeta(db, .hlc, String(last.rawValue))
            if let cursor { try Self.setCursor(db, cursor.name, cursor.value) }
            return report
        }
        if erasureWork.withLock({ $0 }) { try await offCooperativePool { try self.finishErasures(wallMillis: wallMillis) } }
        return report
    }
}

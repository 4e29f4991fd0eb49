// Refusals passed down (`ts_upstream_refusals`). A country relays its dealers' changes; when
// HQ refuses one as outside the scope of the dealer that made it, the country drops it
// (NodeStore+Retries) and keeps a notice for the child it came from; when HQ refuses one as
// erased data, the country erases its copy and keeps a notice alike (NodeStore+Erasure).
// The child asks for its notices (`GET /v1/refusals`, when a pull's `Tiersync-Refusals`
// header names a newer one) and drops its copy in turn: the maker sets its write aside in its
// quarantine, with the reason (or erases it, for an erased one), and a node that only relayed
// it passes the notice on to its own child. Without
// this the maker kept a write that could never land: its copy of the record differed from
// every other copy for good, and `status` called the change acknowledged.

import Foundation
import GRDB
import TiersyncCore

extension NodeStore {
    /// The notices kept per child: the newest. A child that writes under many ids its
    /// country cannot judge (each one HQ refuses) would otherwise grow the country's file
    /// without bound; past the bound the oldest go, and their changes stay at the child.
    public static let maxUpstreamRefusalsPerChild = 1_000

    /// Keeps the notice of a dropped change for `via`, the child it came from (one per
    /// change, numbered anew when kept again for the same child: a change sent again and let
    /// go again must be told again; the newest ``maxUpstreamRefusalsPerChild`` per child).
    /// A notice kept for another child stays with it: moved to this one, it took the other
    /// child's highest number away, and that child's next notice reused a number it had taken.
    static func keepUpstreamRefusal(_ db: Database, via: String, refusal: RejectedChange, nowMillis: UInt64) throws {
        let json = String(decoding: try JSONEncoder().encode(refusal), as: UTF8.self)
        try db.execute(sql: """
            INSERT INTO ts_upstream_refusals (via, number, origin, origin_seq, refusal, refused_at)
            VALUES (?1, (SELECT COALESCE(MAX(number), 0) + 1 FROM ts_upstream_refusals WHERE via = ?1), ?2, ?3, ?4, ?5)
            ON CONFLICT (origin, origin_seq) DO UPDATE SET number = excluded.number, refusal = excluded.refusal, refused_at = excluded.refused_at
            WHERE ts_upstream_refusals.via = excluded.via
            """, arguments: [via, refusal.origin.rawValue, refusal.originSeq, json, Int64(clamping: nowMillis)])
        try db.execute(sql: """
            DELETE FROM ts_upstream_refusals
            WHERE via = ?1 AND number <= (SELECT number FROM ts_upstream_refusals WHERE via = ?1 ORDER BY number DESC LIMIT 1 OFFSET ?2)
            """, arguments: [via, maxUpstreamRefusalsPerChild])
    }

    /// The notices kept for `child` numbered after `after`, oldest first, at most `limit`
    /// (1 … ``UpstreamRefusalsResponse/maxPage``).
    public func refusalsKept(for child: NodeID, after: Int64, limit: Int) throws -> UpstreamRefusalsResponse {
        guard hasUpstreamRefusals.load(ordering: .relaxed) else { return UpstreamRefusalsResponse(refusals: [], more: false) }
        let limit = min(max(1, limit), UpstreamRefusalsResponse.maxPage)
        return try writer.read { db in
            let rows = try Row.fetchAll(db, sql: "SELECT number, refusal FROM ts_upstream_refusals WHERE via = ? AND number > ? ORDER BY number LIMIT ?",
                                        arguments: [child.rawValue, after, limit + 1])
            let refusals = rows.prefix(limit).compactMap { row -> UpstreamRefusal? in
                guard let refusal = try? JSONDecoder().decode(RejectedChange.self, from: Data((row["refusal"] as String).utf8)) else { return nil }
                return UpstreamRefusal(id: row["number"], refusal: refusal)
            }
            return UpstreamRefusalsResponse(refusals: refusals, more: rows.count > limit)
        }
    }

    /// The newest notice's number kept for `child`; nil without one (read only once this
    /// store has kept a notice for anyone).
    public func newestRefusalKept(for child: NodeID) throws -> Int64? {
        guard hasUpstreamRefusals.load(ordering: .relaxed) else { return nil }
        return try writer.read { db in
            try Int64.fetchOne(db.cachedStatement(sql: "SELECT MAX(number) FROM ts_upstream_refusals WHERE via = ?"), arguments: [child.rawValue])
        }
    }

    /// The highest notice number taken from `parent`: 0 before the first, and for a parent
    /// other than the one they were taken from (a node moved to another country; numbers
    /// are each parent's own).
    public func upstreamRefusalsTaken(from parent: NodeID) throws -> Int64 {
        try writer.read { db in try Self.upstreamRefusalsTaken(db, from: parent) }
    }

    static func upstreamRefusalsTaken(_ db: Database, from parent: NodeID) throws -> Int64 {
        guard let text = try meta(db, .upstreamRefusalsTaken) else { return 0 }
        let parts = text.split(separator: " ")
        guard parts.count == 2, parts[0] == parent.rawValue[...], let taken = Int64(parts[1]) else { return 0 }
        return taken
    }

    /// How many of this node's own changes sit in its quarantine: set aside when refused
    /// above its parent (``takeUpstreamRefusals(_:from:nowMillis:)``), until an operator
    /// discards them.
    public func ownChangesSetAside() throws -> Int {
        try writer.read { db in
            guard let me = try Self.identity(db)?.node else { return 0 }
            return try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM ts_quarantine WHERE origin = ?", arguments: [me.rawValue]) ?? 0
        }
    }

    /// Forgets how far the parent's notices were taken: they are asked for again from the
    /// first (a parent restored from an older backup may number new notices anew). Taking a
    /// notice twice changes nothing, but for one asking to send changes again: they are sent
    /// again, and taken for duplicates.
    public func resetUpstreamRefusalsTaken() throws {
        try writer.write { db in try db.execute(sql: "DELETE FROM ts_meta WHERE key = ?", arguments: [MetaKey.upstreamRefusalsTaken.rawValue]) }
    }

    /// ``takeUpstreamRefusals(_:from:nowMillis:)`` off the cooperative pool (an erasure it
    /// makes reads the log of every table linking to the record), then, when it erased
    /// anything, the files' cleaning (``finishErasures(wallMillis:)``).
    public func takeUpstreamRefusalsOffPool(_ notices: [UpstreamRefusal], from parent: NodeID) async throws -> UpstreamRefusalsTaken {
        try await offCooperativePool {
            let taken = try self.takeUpstreamRefusals(notices, from: parent)
            if !taken.toErase.isEmpty { try self.finishErasures() }
            return taken
        }
    }

    /// Takes notices `parent` passed down, in one transaction: each names a change this node
    /// sent up that a node above the parent refused for good, and the parent dropped. This
    /// node's own change is withdrawn from its record (``withdrawLogged(_:_:_:seq:)``) and set
    /// aside in its quarantine with the reason, so an operator sees it (`tiersync admin
    /// quarantine`) and can write it again under another id; its sequence number is not
    /// given out again. A change this node relayed from a child is dropped as the parent
    /// dropped it, and the notice kept for that child. A notice for a change no longer
    /// logged here (taken before, evicted, erased) changes nothing. Notices must come from
    /// this node's parent, oldest first; the highest number is remembered for it.
    public func takeUpstreamRefusals(_ notices: [UpstreamRefusal], from parent: NodeID,
                                     nowMillis: UInt64 = WallClock.nowMillis()) throws -> UpstreamRefusalsTaken {
        guard let highest = notices.map(\.id).max() else { return UpstreamRefusalsTaken() }
        return try writer.write { db in
            var statements = LogStatements(db)
            var taken = UpstreamRefusalsTaken()
            // A store without a node has nothing of its own to withdraw; the numbers are still
            // remembered as taken (else every pull named them as newer).
            let me = try Self.identity(db)?.node
            var acknowledged: Int64?
            for notice in notices {
                guard let me else { break }
                let refusal = notice.refusal
                // A change the parent let go of because it no longer relays for its maker (this
                // node, or the child it came from, was moved away after the parent took it),
                // with any later one of its origin: sent again from here, to whichever parent this
                // node has now. The push goes back to it below (``pushRewind(held:acknowledgedThrough:)``
                // finds it, logged or folded by compaction since); its entry stays.
                if refusal.code == .forbidden, refusal.outsideScopeOf == parent, refusal.origin != parent {
                    taken.sendAgain.append(refusal)
                    continue
                }
                // A change refused above as a change of erased data, or naming it: erased here
                // as a refusal of this node's own push is (``eraseRefused(_:_:fromNotice:nowMillis:)``,
                // which judges the notice against the change and passes it on to the child it
                // came from), in this transaction. Only a change this node sent up: its own
                // or one it relayed from a child, taken by the parent or waiting to be sent
                // again (a notice naming a change that came from above had a hostile parent
                // erase whatever it named).
                if refusal.code == .erased {
                    if acknowledged == nil {
                        acknowledged = try Int64.fetchOne(db, sql: "SELECT value FROM ts_cursors WHERE name = ?", arguments: [Self.parentPushCursor]) ?? 0
                    }
                    if let entry = try Self.fetchLogged(db, sql: """
                        SELECT \(Self.loggedColumns(of: nil)) FROM ts_changes c WHERE origin = ? AND origin_seq = ? AND op != '\(Self.erasedOp)'
                          AND ((source = '\(ChangeSource.local.rawValue)' AND origin = ?) OR source = '\(ChangeSource.child.rawValue)')
                          AND (seq <= ? OR EXISTS (SELECT 1 FROM ts_push_retries p WHERE p.origin = c.origin AND p.origin_seq = c.origin_seq))
                        """, arguments: [refusal.origin.rawValue, refusal.originSeq, me.rawValue, acknowledged ?? 0]).first,
                       entry.change.table == refusal.table, entry.change.recordID == refusal.recordID {
                        taken.toErase.append(UpstreamErasure(refusal: refusal, change: entry.change))
                    } else if try !(Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM ts_changes WHERE origin = ? AND origin_seq = ? AND op = '\(Self.erasedOp)')",
                                                  arguments: [refusal.origin.rawValue, refusal.originSeq]) ?? false) {
                        // Erased here already (a notice taken twice changes nothing); anything
                        // else is not this node's to act on.
                        taken.ignored.append(refusal)
                    }
                    continue
                }
                // Only what a parent passes down: a change refused as outside the scope of the
                // node that made it, naming the record its logged entry here is for. Anything
                // else (a faulty parent) withdraws nothing.
                guard refusal.code == .forbidden, refusal.outsideScopeOf == refusal.origin else {
                    taken.ignored.append(refusal)
                    continue
                }
                // An erased record's entries stay (emptied): they make a late copy a duplicate,
                // and the erasure's proof counts what is left of it here.
                guard let entry = try Self.fetchLogged(db, sql: """
                    SELECT \(Self.loggedColumns(of: nil)) FROM ts_changes WHERE origin = ? AND origin_seq = ? AND op != '\(Self.erasedOp)'
                    """, arguments: [refusal.origin.rawValue, refusal.originSeq]).first else { continue }
                let change = entry.change
                guard change.table == refusal.table, change.recordID == refusal.recordID else {
                    taken.ignored.append(refusal)
                    continue
                }
                if change.origin == me {
                    guard entry.source == .local else { continue }
                    var withdrawn = [(entry: entry, named: refusal, reason: "refused above '\(parent)': \(refusal.message)")]
                    // A record this node alone made: its later changes were made on top of a
                    // write that can never land, and the parent, which dropped the record,
                    // refuses each itself, for good (no route change ever reaches this node for
                    // a record it never had from above): kept, they made a copy no one else
                    // holds, and were sent again for ever. They go with it, those the parent
                    // has not taken (not sent yet, or refused and waiting to be sent again):
                    // one it took was judged on its own, and brings its own notice if refused.
                    if try madeHereAlone(db, table: change.table, id: change.recordID, by: me) {
                        let acknowledged = try Int64.fetchOne(db, sql: "SELECT value FROM ts_cursors WHERE name = ?", arguments: [Self.parentPushCursor]) ?? 0
                        for later in try Self.fetchLogged(db, sql: """
                            SELECT \(Self.loggedColumns(of: nil)) FROM ts_changes c
                            WHERE tbl = ? AND record_id = ? AND origin = ? AND origin_seq > ? AND source = ? AND op != '\(Self.erasedOp)'
                              AND (seq > ? OR EXISTS (SELECT 1 FROM ts_push_retries p WHERE p.origin = c.origin AND p.origin_seq = c.origin_seq))
                            ORDER BY seq
                            """, arguments: [change.table, change.recordID, me.rawValue, change.originSeq, ChangeSource.local.rawValue, acknowledged]) {
                            let reason = "made after \(me)#\(change.originSeq) of the same record, refused above '\(parent)': \(refusal.message)"
                            withdrawn.append((later, RejectedChange(change: later.change, rejection: ChangeRejection(refusal.code, reason, outsideScopeOf: me)), reason))
                        }
                    }
                    // Their numbers stay used: given out again, the parent would take a new
                    // change for a duplicate of one it dropped.
                    try Self.raiseSeqFloor(db, node: me)
                    for (logged, named, reason) in withdrawn {
                        try withdrawLogged(db, &statements, logged.change, seq: logged.seq)
                        try quarantine(db, logged.change, ChangeRejection(refusal.code, reason), from: parent, nowMillis: nowMillis)
                        // The quarantine's quota may skip it (full for this sender): withdrawn all the same.
                        if db.changesCount > 0 { taken.setAside.append(named) } else { taken.notKept.append(named) }
                    }
                } else if try dropRelayed(db, &statements, change, refusal: refusal, nowMillis: nowMillis, evenBehindRetries: true) {
                    taken.passedOn.append(refusal)
                }
            }
            // Changes to send again: the push goes back to the first of them, in this
            // transaction (a notice taken, and the process gone before the agent moved its push
            // back, lost them); the agent moves it back too, past a push that raced this take.
            if !taken.sendAgain.isEmpty {
                let acknowledged = try Int64.fetchOne(db, sql: "SELECT value FROM ts_cursors WHERE name = ?", arguments: [Self.parentPushCursor]) ?? 0
                if let from = try pushRewind(db, held: taken.sendAgainHeld, acknowledgedThrough: acknowledged) {
                    try db.execute(sql: "UPDATE ts_cursors SET value = ? WHERE name = ? AND value > ?", arguments: [from, Self.parentPushCursor, from])
                    taken.sendAgainFrom = from
                }
            }
            if !taken.passedOn.isEmpty { hasUpstreamRefusals.store(true, ordering: .relaxed) }
            // In this transaction, with the numbers taken: a failure takes nothing, and the
            // notices are asked for again (taken after, a crash between lost them for good).
            if !taken.toErase.isEmpty {
                taken.erasedRecords = try eraseRefused(db, taken.toErase.map { ($0.refusal, $0.change) }, fromNotice: true, nowMillis: nowMillis)
            }
            let before = try Self.upstreamRefusalsTaken(db, from: parent)
            try Self.setMeta(db, .upstreamRefusalsTaken, "\(parent.rawValue) \(max(before, highest))")
            return taken
        }
    }
}

extension NodeStore {
    /// Whether every logged entry of the record and every version it holds here is `node`'s.
    func madeHereAlone(_ db: Database, table: String, id: String, by node: NodeID) throws -> Bool {
        if try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM ts_changes WHERE tbl = ? AND record_id = ? AND origin != ?)",
                             arguments: [table, id, node.rawValue]) == true { return false }
        guard let tableSchema = schema.table(table), let stored = try load(db, table: tableSchema, id: id) else { return true }
        return stored.state.versions.values.allSatisfy { $0.node == node } && (stored.state.tombstone.map { $0.node == node } ?? true)
    }
}

/// A notice of a change refused above as erased, with the change as logged here: what
/// ``NodeStore/eraseRefused(_:nowMillis:)`` takes.
public struct UpstreamErasure: Sendable, Equatable {
    public var refusal: RejectedChange
    public var change: Change
}

/// What ``NodeStore/takeUpstreamRefusals(_:from:nowMillis:)`` did.
public struct UpstreamRefusalsTaken: Sendable, Equatable {
    /// Changes refused above as changes of erased data (or naming it), relayed or this
    /// node's own, erased here in the take's transaction (passing the notice on to the child
    /// a relayed one came from); ``NodeStore/takeUpstreamRefusalsOffPool(_:from:)`` then cleans the files.
    public var toErase: [UpstreamErasure] = []
    /// Records those erasures took.
    public var erasedRecords = 0
    /// This node's own changes withdrawn and set aside in its quarantine.
    public var setAside: [RejectedChange] = []
    /// This node's own changes withdrawn but not kept: its quarantine's quota was full.
    public var notKept: [RejectedChange] = []
    /// Changes relayed from children, dropped and passed on to them.
    public var passedOn: [RejectedChange] = []
    /// Changes the parent let go of because it no longer relays for their maker (moved away
    /// after the parent took them), each with the later ones of its origin: to send again
    /// (``sendAgainHeld``).
    public var sendAgain: [RejectedChange] = []

    /// The log position the push went back to for ``sendAgain`` (it resumes after it); nil
    /// when nothing named is held here unsent-again (erased, or never sent).
    public var sendAgainFrom: Int64?

    /// What the parent holds of each origin named by ``sendAgain``, as ``NodeStore/pushRewind(held:acknowledgedThrough:)``
    /// takes it: everything below the lowest sequence it let go.
    public var sendAgainHeld: [String: Int64] {
        var held: [String: Int64] = [:]
        for refusal in sendAgain {
            let below = max(0, refusal.originSeq - 1)
            held[refusal.origin.rawValue] = min(held[refusal.origin.rawValue] ?? below, below)
        }
        return held
    }
    /// Notices that were not what a parent passes down (another refusal, or naming another
    /// record than the change logged here): nothing done.
    public var ignored: [RejectedChange] = []

    public init() {}
}

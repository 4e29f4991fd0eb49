import GRDB
import TiersyncCore

/// How this node's wall clock compares with its parent's, as last measured by the agent.
public struct ClockOffset: Sendable, Equatable {
    /// Local wall clock minus the parent's (ms): positive when this node is ahead.
    public var offsetMillis: Int64
    /// When it was measured (local wall clock, ms since the epoch).
    public var measuredAtMillis: UInt64

    public init(offsetMillis: Int64, measuredAtMillis: UInt64) {
        self.offsetMillis = offsetMillis
        self.measuredAtMillis = measuredAtMillis
    }
}

/// How often this node's agent found its parent restored from an older backup (its log gone
/// back, or changes it had acknowledged no longer held), and when last: the agent logs each
/// time, and `status` shows it after the process that logged it has gone.
public struct ParentRestores: Sendable, Equatable {
    public var count: Int
    /// Local wall clock, ms since the epoch.
    public var lastAtMillis: UInt64
}

/// The agent's exchanges with its parent as it last noted them, so `status` can tell a node
/// syncing from one whose parent refuses it (a revoked credential, a wrong parent) or cannot
/// be reached: the agent retries those for ever, and its log is the only other place that says.
public struct ParentContact: Sendable, Equatable {
    /// The last exchange that worked (a push or pull answered), local wall clock.
    public var lastOKMillis: UInt64?
    /// Set while exchanges fail: since when, when last, how many times, the newest error.
    public var failure: Failure?

    public struct Failure: Sendable, Equatable {
        public var sinceMillis: UInt64
        public var lastAtMillis: UInt64
        public var count: Int
        public var error: String

        public init(sinceMillis: UInt64, lastAtMillis: UInt64, count: Int, error: String) {
            self.sinceMillis = sinceMillis
            self.lastAtMillis = lastAtMillis
            self.count = count
            self.error = error
        }
    }
}

extension NodeStore {
    /// Findings within this long of the last counted one are the same restore.
    public static let sameRestoreMillis: UInt64 = 10 * 60_000

    /// Counts one restore of the parent found by the agent, at `atMillis`; returns whether it
    /// counted. A finding within ``sameRestoreMillis`` of the last one is the same restore:
    /// the pull side and the push side each find it, and when the first side's recovery was
    /// over before the second found it, one restore counted twice (helper 99).
    @discardableResult
    public func recordParentRestore(atMillis: UInt64) throws -> Bool {
        try writer.write { db in
            let count = try Self.meta(db, .parentRestores).flatMap { Int($0) } ?? 0
            if count > 0, let last = try Self.meta(db, .parentRestoredAt).flatMap({ UInt64($0) }),
               atMillis >= last, atMillis - last < Self.sameRestoreMillis {
                return false
            }
            try Self.setMeta(db, .parentRestores, String(count + 1))
            try Self.setMeta(db, .parentRestoredAt, String(atMillis))
            return true
        }
    }

    /// The restores of the parent the agent found, if any.
    public func parentRestores() throws -> ParentRestores? {
        try writer.read { db in
            guard let count = try Self.meta(db, .parentRestores).flatMap({ Int($0) }),
                  let at = try Self.meta(db, .parentRestoredAt).flatMap({ UInt64($0) }) else { return nil }
            return ParentRestores(count: count, lastAtMillis: at)
        }
    }

    /// Notes an exchange with the parent that worked, at `atMillis`: the failures before it
    /// are over.
    public func noteParentContact(atMillis: UInt64) throws {
        try writer.write { db in
            try Self.setMeta(db, .parentContactOK, String(atMillis))
            try db.execute(sql: "DELETE FROM ts_meta WHERE key = ?", arguments: [MetaKey.parentContactFailure.rawValue])
        }
    }

    /// Notes that the agent's exchanges with its parent fail: since when, how many times,
    /// and the newest error (clipped).
    public func noteParentFailure(_ failure: ParentContact.Failure) throws {
        try writer.write { db in
            let text = "\(failure.sinceMillis) \(failure.lastAtMillis) \(failure.count) " + failure.error.clipped(toUTF8: 500)
            try Self.setMeta(db, .parentContactFailure, text)
        }
    }

    /// What the agent last noted of its exchanges with the parent.
    public func parentContact() throws -> ParentContact {
        try writer.read { db in
            let ok = try Self.meta(db, .parentContactOK).flatMap { UInt64($0) }
            var failure: ParentContact.Failure?
            if let text = try Self.meta(db, .parentContactFailure) {
                let parts = text.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false)
                if parts.count == 4, let since = UInt64(parts[0]), let last = UInt64(parts[1]), let count = Int(parts[2]) {
                    failure = .init(sinceMillis: since, lastAtMillis: last, count: count, error: String(parts[3]))
                }
            }
            return ParentContact(lastOKMillis: ok, failure: failure)
        }
    }

    /// Remembers the offset between this node's clock and its parent's (shown by `status`).
    public func recordClockOffset(_ offset: ClockOffset) throws {
        try writer.write { db in
            try Self.setMeta(db, .clockOffset, String(offset.offsetMillis))
            try Self.setMeta(db, .clockOffsetMeasuredAt, String(offset.measuredAtMillis))
        }
    }

    /// The last measured offset to the parent's clock, if any.
    public func clockOffset() throws -> ClockOffset? {
        try writer.read { db in
            guard let offset = try Self.meta(db, .clockOffset).flatMap({ Int64($0) }),
                  let at = try Self.meta(db, .clockOffsetMeasuredAt).flatMap({ UInt64($0) })
            else { return nil }
            return ClockOffset(offsetMillis: offset, measuredAtMillis: at)
        }
    }

    /// Re-stamps this node's own changes that its parent refused as stamped too far ahead
    /// (`clock_skew`), together with every own change not yet sent that is stamped after
    /// the parent's clock, to the parent's time of refusal — so that such a change, sent
    /// again, never wins over writes the parent accepted after refusing it. Records they
    /// touched are rebuilt from their log, so this node converges with the parent too (a
    /// newer write it pulled, which lost here against the future stamp, wins again).
    ///
    /// The new stamps follow the parent's clock (`parentTimeMillis`), never precede this
    /// node's own earlier changes that the parent holds, and keep the changes' order. The
    /// changes keep their identity (origin, sequence): the parent refused them, so it never
    /// stored them under their old stamp. Re-stamped refusals are due for retry at once.
    ///
    /// - Parameters:
    ///   - refused: sequence numbers of own changes the parent refused as `clock_skew`.
    ///   - parentTimeMillis: the parent's wall clock when it answered.
    ///   - acknowledgedThrough: the push cursor: own changes above it were not sent yet.
    /// - Returns: how many changes were re-stamped.
    @discardableResult
    public func restampAheadOfParent(refused: [Int64], parentTimeMillis: UInt64, acknowledgedThrough: Int64) throws -> Int {
        guard !refused.isEmpty else { return 0 }
        return try writer.write { db in
            guard let me = try Self.identity(db)?.node else { return 0 }
            let parentNow = HLCTimestamp(wallMillis: parentTimeMillis, counter: 0)
            // The refused changes, and the unsent ones stamped after the parent's clock.
            var seqs = Set(refused)
            let unsent = try Int64.fetchAll(db, sql: """
                SELECT origin_seq FROM ts_changes WHERE origin = ? AND seq > ? AND source != ? AND hlc > ?
                """, arguments: [me.rawValue, acknowledgedThrough, ChangeSource.parent.rawValue, Int64(bitPattern: parentNow.rawValue)])
            seqs.formUnion(unsent)
            let ordered = seqs.sorted()
            guard let first = ordered.first else { return 0 }
            // Never before an earlier own change the parent may hold (its order is the
            // order the node wrote them in).
            let earlier = try Int64.fetchOne(db, sql: """
                SELECT MAX(hlc) FROM ts_changes WHERE origin = ? AND origin_seq < ? AND hlc <= ?
                """, arguments: [me.rawValue, first, Int64(bitPattern: parentNow.rawValue)]).map { HLCTimestamp(rawValue: UInt64(bitPattern: $0)) }
            var stamp = max(parentNow, earlier.map(HybridLogicalClock.successor(of:)) ?? parentNow)
            var touched: [(table: String, id: String)] = []
            var seen: Set<String> = []
            for seq in ordered {
                guard let row = try Row.fetchOne(db, sql: "SELECT tbl, record_id FROM ts_changes WHERE origin = ? AND origin_seq = ?",
                                                 arguments: [me.rawValue, seq]) else { continue }
                try db.execute(sql: "UPDATE ts_changes SET hlc = ? WHERE origin = ? AND origin_seq = ?",
                               arguments: [Int64(bitPattern: stamp.rawValue), me.rawValue, seq])
                try db.execute(sql: "UPDATE ts_push_retries SET next_at = 0 WHERE origin = ? AND origin_seq = ?", arguments: [me.rawValue, seq])
                stamp = HybridLogicalClock.successor(of: stamp)
                let (table, id): (String, String) = (row[0], row[1])
                if seen.insert(table + "\u{0}" + id).inserted { touched.append((table, id)) }
            }
            for (table, id) in touched { try rebuild(db, table: table, id: id) }
            // The clock goes on from the newest stamp the store now holds: a node whose
            // clock was fixed stamps its next write at the real time, not after the old
            // future stamps.
            let newest = try Int64.fetchOne(db, sql: "SELECT MAX(hlc) FROM ts_changes").map { HLCTimestamp(rawValue: UInt64(bitPattern: $0)) } ?? .zero
            try Self.setMeta(db, .hlc, String(newest.rawValue))
            return ordered.count
        }
    }

    /// Recomputes a record from every logged change to it (the merge is order-independent,
    /// so this equals applying them as they came, with the stamps they have now), and its
    /// kept conflicts with it.
    func rebuild(_ db: Database, table name: String, id: String) throws {
        guard let table = schema.table(name) else { return }
        let stored = try load(db, table: table, id: id)
        let log = try Self.fetchLogged(db, sql: "SELECT \(Self.loggedColumns(of: nil)) FROM ts_changes WHERE tbl = ? AND record_id = ? ORDER BY seq",
                                       arguments: [name, id])
        var record: StoredRecord?
        var conflicts: [FieldConflict] = []
        for entry in log {
            let merged = Self.merge(entry.change, into: record, table: table)
            conflicts += merged.outcome.conflicts
            record = StoredRecord(table: name, id: id, state: merged.state, route: merged.route)
        }
        guard let record else { return }
        var statements = LogStatements(db)
        try save(db, &statements, table: table, id: id, row: EncodedRecord(record.state, route: record.route, table: table), replacing: stored)
        try countKPIs(db, &statements, table: table, id: id, before: stored, after: record.state)
        try db.execute(sql: "DELETE FROM ts_conflicts WHERE tbl = ? AND record_id = ?", arguments: [name, id])
        let now = Int64(WallClock.nowMillis())
        for c in conflicts {
            try db.execute(sql: """
                INSERT OR IGNORE INTO ts_conflicts (tbl, record_id, field, winner_value, winner_version, loser_value, loser_version, detected_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [name, id, c.field, c.winner.canonical, c.winnerVersion.description, c.loser.canonical, c.loserVersion.description, now])
        }
    }
}

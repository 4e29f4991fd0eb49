// Bounded storage (docs/PRIVACY.md, "Bounded storage"): the acknowledgement ledger of the
// children fed here (`notePulled`, written in batches), the compaction that purges superseded
// log entries and old tombstones (`compact`), the floor below which a child's cursor must
// re-bootstrap (`retentionFloor`), and a re-bootstrap's bookkeeping on the node doing it
// (`beginRebootstrap`, `finishRebootstrap`).

import Foundation
import GRDB
import Synchronization
import TiersyncCore

extension NodeStore {
    /// The log position a child's pull cursor must have passed to continue incrementally:
    /// the newest delete whose tombstone was purged.
    static let purgeFloorCursor = "purge.floor"

    // MARK: The acknowledgement ledger

    /// Notes that `node` (a child pulling from this store) holds everything of its scope
    /// through log position `cursor`: a pull's cursor is the position the child stored with
    /// the previous page. Kept in memory and written at the next compaction, so a pull never
    /// pays a write; after a crash the ledger is older, which only delays a purge.
    public func notePulled(by node: NodeID, through cursor: Int64) async {
        guard cursor > 0 else { return }
        pendingAcks.withLock { $0[node] = max($0[node] ?? 0, cursor) }
    }

    /// How far each child fed here has pulled, as last written (``notePulled(by:through:)``).
    public func acknowledgements() throws -> [NodeID: Int64] {
        try writer.write { db in
            try flushAcknowledgements(db, nowMillis: WallClock.nowMillis())
            return try Self.acknowledgements(db)
        }
    }

    static func acknowledgements(_ db: Database) throws -> [NodeID: Int64] {
        var out: [NodeID: Int64] = [:]
        for row in try Row.fetchAll(db, sql: "SELECT node, pulled_through FROM ts_acks") {
            out[NodeID(unchecked: row[0])] = row[1]
        }
        return out
    }

    private func flushAcknowledgements(_ db: Database, nowMillis: UInt64) throws {
        let pending = pendingAcks.withLock { acks in
            defer { acks = [:] }
            return acks
        }
        for (node, through) in pending {
            try db.execute(sql: """
                INSERT INTO ts_acks (node, pulled_through, updated_at) VALUES (?, ?, ?)
                ON CONFLICT(node) DO UPDATE SET pulled_through = MAX(pulled_through, excluded.pulled_through), updated_at = excluded.updated_at
                """, arguments: [node.rawValue, through, Int64(nowMillis)])
        }
    }

    /// The log position a child's cursor must have reached to go on pulling incrementally
    /// (0 while no tombstone was purged). A cursor of 0 is a fresh bootstrap and never
    /// below it.
    public func retentionFloor() async throws -> Int64 {
        try await writer.readReleasingConnection { db in try Self.purgeFloor(db) }
    }

    /// The purge floor as stored (0 when none): a cached statement, as every pull asks and
    /// preparing it cost more than running it.
    static func purgeFloor(_ db: Database) throws -> Int64 {
        try Int64.fetchOne(db.cachedStatement(sql: "SELECT value FROM ts_cursors WHERE name = ?"), arguments: [purgeFloorCursor]) ?? 0
    }

    /// The highest sequence of `origin` purged from this store's log (0 when none).
    static func purgedThrough(_ db: Database, origin: NodeID) throws -> Int64 {
        try Int64.fetchOne(db.cachedStatement(sql: "SELECT through_seq FROM ts_purged WHERE origin = ?"), arguments: [origin.rawValue]) ?? 0
    }

    /// Whether `origin`'s change `seq` was applied here and its entry purged since: a
    /// redelivery of it is a duplicate. Exact, not a watermark: a sequence below the highest
    /// purged that this store never applied (held back in a country's quarantine and
    /// released later, or sent out of order) is judged as new.
    static func wasPurged(_ db: Database, origin: NodeID, seq: Int64) throws -> Bool {
        guard let hi = try Int64.fetchOne(db.cachedStatement(sql: """
            SELECT hi FROM ts_purged_ranges WHERE origin = ? AND lo <= ? ORDER BY lo DESC LIMIT 1
            """), arguments: [origin.rawValue, seq]) else { return false }
        return seq <= hi
    }

    /// Records `seq` of `origin` as purged: a range of its own, joined with the ranges that
    /// end just below it and start just above it. Ranges stay few as an origin's entries are
    /// purged (a kept entry splits a range until it is purged in turn). Only for changes
    /// received from a child, which sends each of its origins' changes (dense sequences);
    /// from the parent a store receives only what is routed to it (sparse, so ranges would
    /// never join), and judges those against the highest purged sequence instead.
    static func notePurgedSeq(_ db: Database, origin: NodeID, seq: Int64) throws {
        let o = origin.rawValue
        guard try !wasPurged(db, origin: origin, seq: seq) else { return }
        let below = try Int64.fetchOne(db.cachedStatement(sql: "SELECT lo FROM ts_purged_ranges WHERE origin = ? AND hi = ?"), arguments: [o, seq &- 1])
        let above = try Int64.fetchOne(db.cachedStatement(sql: "SELECT hi FROM ts_purged_ranges WHERE origin = ? AND lo = ?"), arguments: [o, seq &+ 1])
        if above != nil {
            try db.cachedStatement(sql: "DELETE FROM ts_purged_ranges WHERE origin = ? AND lo = ?").execute(arguments: [o, seq &+ 1])
        }
        let hi = above ?? seq
        if let below {
            try db.cachedStatement(sql: "UPDATE ts_purged_ranges SET hi = ? WHERE origin = ? AND lo = ?").execute(arguments: [hi, o, below])
        } else {
            try db.cachedStatement(sql: "INSERT INTO ts_purged_ranges (origin, lo, hi) VALUES (?, ?, ?)").execute(arguments: [o, seq, hi])
        }
    }

    // MARK: Compaction

    /// Purges what no replica needs any more, in short transactions of `batch` entries:
    ///
    /// - a change-log entry none of whose values is current any more (superseded by a newer
    ///   version of every field it set, or by a delete), once the parent acknowledged it
    ///   (if it goes upward, and it waits in no retry), and every child of this store that
    ///   is fed it has pulled past it (``notePulled(by:through:)``) or has been away longer
    ///   than the horizon. An entry that re-routed its record (a route entry, which owes a
    ///   new holder a snapshot) and the newest entry (the feed's head) are kept;
    /// - a deleted record (tombstone and every log entry of it) once its delete is older
    ///   than the horizon and nothing of it waits to go upward. The delete's position
    ///   becomes the floor a child's cursor must have passed (``retentionFloor()``).
    ///
    /// Per origin, the highest sequence purged is kept (`ts_purged`), so a redelivery of a
    /// purged change is still a duplicate. `tree` places the children fed here (nil: none,
    /// as at a dealer); a route node outside this store's subtree is not fed from here.
    /// Value-less entries of erased records (`op = 'erased'`) stay: they are what makes a
    /// late copy of erased data a duplicate.
    public func compact(policy: RetentionPolicy, tree: NodeTree?, nowMillis: UInt64 = WallClock.nowMillis(),
                        batch: Int = 2_000) async throws -> CompactionReport {
        // The pass runs on a thread of its own, where the task's cancellation cannot reach:
        // a flag it checks between transactions ends it there (a hub shutting down waited
        // for the whole pass, serving meanwhile).
        let cancelled = Atomic<Bool>(false)
        return try await withTaskCancellationHandler {
            try await offCooperativePool {
                try self.compactNow(policy: policy, tree: tree, nowMillis: nowMillis, batch: max(1, batch), cancelled: { cancelled.load(ordering: .relaxed) })
            }
        } onCancel: {
            cancelled.store(true, ordering: .relaxed)
        }
    }

    /// Where the next pass starts (`ts_cursors`): an entry at or below it was looked at by
    /// an earlier pass and kept because it was current, so it can have become superseded
    /// only through a newer entry of its record, or because a reason that passes held it
    /// (not yet acknowledged upward, not yet pulled by a child), in which case its record is
    /// in `ts_compact_pending`. A pass therefore looks at the records with an entry after
    /// it and the pending ones (all of their entries), not the whole log: a child away for
    /// weeks costs a pass the records it holds back, not every record written since.
    static let compactFromCursor = "compact.from"

    private func compactNow(policy: RetentionPolicy, tree: NodeTree?, nowMillis: UInt64, batch: Int,
                            cancelled: () -> Bool = { false }) throws -> CompactionReport {
        let horizon = policy.horizonMillis
        let cutoff = Int64(clamping: nowMillis > horizon ? nowMillis - horizon : 0)
        var report = CompactionReport()
        let (headAtStart, touched) = try writer.write { db -> (Int64, [RecordKey]) in
            try flushAcknowledgements(db, nowMillis: nowMillis)
            let from = try Int64.fetchOne(db, sql: "SELECT value FROM ts_cursors WHERE name = ?", arguments: [Self.compactFromCursor]) ?? 0
            let head = try Int64.fetchOne(db, sql: "SELECT MAX(seq) FROM ts_changes") ?? 0
            let keys = try Row.fetchAll(db, sql: """
                SELECT tbl, record_id FROM ts_changes WHERE seq > ? UNION SELECT tbl, id FROM ts_compact_pending
                """, arguments: [from]).map { RecordKey(table: $0[0], id: $0[1]) }
            return (head, keys)
        }
        report.examinedRecords = touched.count
        // Short transactions (a record folded is a row deleted and one updated, each with
        // their index entries): a hub's pushes wait for the writer between them.
        let perTransaction = max(1, batch / 16)
        for start in stride(from: 0, to: touched.count, by: perTransaction) {
            // Each transaction stands on its own: a pass ended here leaves the rest to the next.
            if cancelled() { throw CancellationError() }
            let chunk = touched[start..<min(start + perTransaction, touched.count)]
            try writer.write { db in
                guard let me = try Self.identity(db) else { return }
                var context = try CompactionContext(db, me: me, tree: tree)
                try Self.raiseSeqFloor(db, node: me.node)
                var purged: [NodeID: Int64] = [:]
                var floor: Int64 = 0
                var indexed = Set(try self.foldedTables(db).map(\.name))
                for key in chunk {
                    // Looked at now; back in the pending set below if an entry is held again.
                    try db.cachedStatement(sql: "DELETE FROM ts_compact_pending WHERE tbl = ? AND id = ?").execute(arguments: [key.table, key.id])
                    // A record this store no longer holds keeps what is left of its log.
                    guard let table = schema.table(key.table), let stored = try load(db, table: table, id: key.id) else { continue }
                    var held = false
                    let current = Set(stored.state.versions.values).union(stored.state.tombstone.map { [$0] } ?? [])
                    // A live record's current entries fold into it (the feed serves them from
                    // its state); a deleted record's stay until its tombstone goes.
                    let foldable = stored.state.tombstone == nil
                    let previouslyFolded = try self.folded(db, table: key.table, id: key.id)
                    var folded = previouslyFolded?.identities ?? FoldedIdentities()
                    folded.keepCurrent(stored.state)
                    var foldedThrough: Int64 = 0
                    let rows = try Row.fetchAll(db.cachedStatement(sql: """
                        SELECT seq, origin, origin_seq, hlc, source, received_at FROM ts_changes
                        WHERE tbl = ? AND record_id = ? AND seq < ? AND op != '\(Self.erasedOp)'
                        """), arguments: [key.table, key.id, context.head])
                    for row in rows {
                        let seq: Int64 = row[0], originSeq: Int64 = row[2], receivedAt: Int64 = row[5]
                        let origin = NodeID(unchecked: row[1])
                        let version = FieldVersion(hlc: HLCTimestamp(rawValue: UInt64(bitPattern: row[3])), node: origin)
                        let isCurrent = current.contains(version)
                        if isCurrent, !foldable { continue }
                        guard try context.acknowledgedUpward(db, seq: seq, source: row[4], origin: origin, originSeq: originSeq) else {
                            held = true
                            continue
                        }
                        if try Bool.fetchOne(db.cachedStatement(sql: "SELECT EXISTS (SELECT 1 FROM ts_route_entries WHERE seq = ?)"), arguments: [seq]) ?? false {
                            continue
                        }
                        if try !context.pulledByEveryChild(db, seq: seq) {
                            guard receivedAt < cutoff else {
                                report.heldForChildren += 1
                                held = true
                                continue
                            }
                            // A child away past the horizon never pulled this current value:
                            // its cursor is now below the floor, and it re-bootstraps.
                            if isCurrent { floor = max(floor, seq) }
                        }
                        try db.cachedStatement(sql: "DELETE FROM ts_change_routes WHERE seq = ?").execute(arguments: [seq])
                        try db.cachedStatement(sql: "DELETE FROM ts_changes WHERE seq = ?").execute(arguments: [seq])
                        if (row[4] as String) == ChangeSource.child.rawValue { try Self.notePurgedSeq(db, origin: origin, seq: originSeq) }
                        purged[origin] = max(purged[origin] ?? 0, originSeq)
                        if isCurrent {
                            folded.add(version, originSeq: originSeq, fromParent: (row[4] as String) == ChangeSource.parent.rawValue)
                            foldedThrough = max(foldedThrough, seq)
                            report.foldedEntries += 1
                        } else {
                            report.supersededEntries += 1
                        }
                    }
                    if previouslyFolded != nil || foldedThrough > 0 {
                        try self.storeFolded(db, table: key.table, id: key.id, seq: foldedThrough, previous: previouslyFolded?.seq, folded, indexed: &indexed)
                    }
                    if held {
                        try db.cachedStatement(sql: "INSERT OR IGNORE INTO ts_compact_pending (tbl, id) VALUES (?, ?)").execute(arguments: [key.table, key.id])
                    }
                }
                try Self.notePurged(db, purged)
                if floor > 0 { try Self.raisePurgeFloor(db, to: floor) }
            }
        }
        // The head was left alone: its record is looked at again next time. Records with
        // entries still held are in the pending set.
        try setCursor(Self.compactFromCursor, max(0, headAtStart - 1))
        try purgeTombstones(cutoff: cutoff, batch: batch, into: &report, cancelled: cancelled)
        if cancelled() { throw CancellationError() }
        report.releasedPages = try releaseFreePages()
        report.floor = try writer.read { db in try Self.purgeFloor(db) }
        return report
    }

    /// Purges deleted records whose delete is older than `cutoff` (ms since the epoch, as
    /// this store received it), with all their log entries, and raises the floor.
    private func purgeTombstones(cutoff: Int64, batch: Int, into report: inout CompactionReport, cancelled: () -> Bool) throws {
        var afterKey = RecordKey(table: "", id: "")
        var done = false
        while !done {
            if cancelled() { throw CancellationError() }
            let pass = try writer.write { db -> (last: RecordKey?, tombstones: Int, entries: Int) in
                guard let me = try Self.identity(db) else { return (nil, 0, 0) }
                let context = try CompactionContext(db, me: me, tree: nil)
                let rows = try Row.fetchAll(db, sql: """
                    SELECT tbl, id, tombstone FROM ts_tombstones WHERE (tbl, id) > (?, ?) ORDER BY tbl, id LIMIT ?
                    """, arguments: [afterKey.table, afterKey.id, batch])
                guard let lastRow = rows.last else { return (nil, 0, 0) }
                try Self.raiseSeqFloor(db, node: me.node)
                var statements = LogStatements(db)
                var (tombstones, entries) = (0, 0)
                var floor: Int64 = 0
                var purged: [NodeID: Int64] = [:]
                for row in rows {
                    let (tbl, id): (String, String) = (row[0], row[1])
                    guard let table = schema.table(tbl), let version = FieldVersion(parsing: row[2]),
                          let delete = try Row.fetchOne(db, sql: """
                            SELECT seq, received_at FROM ts_changes WHERE tbl = ? AND record_id = ? AND op = 'delete' AND hlc = ? AND origin = ?
                            """, arguments: [tbl, id, Int64(bitPattern: version.hlc.rawValue), version.node.rawValue]),
                          (delete[1] as Int64) < cutoff else { continue }
                    let log = try Row.fetchAll(db, sql: "SELECT seq, origin, origin_seq, source FROM ts_changes WHERE tbl = ? AND record_id = ?",
                                               arguments: [tbl, id])
                    // Everything of the record must have gone upward, and the head stays.
                    let settled = try log.allSatisfy { entry in
                        try (entry[0] as Int64) < context.head && context.acknowledgedUpward(
                            db, seq: entry[0], source: entry[3], origin: NodeID(unchecked: entry[1]), originSeq: entry[2])
                    }
                    guard settled else { continue }
                    for entry in log {
                        let origin = NodeID(unchecked: entry[1])
                        purged[origin] = max(purged[origin] ?? 0, entry[2])
                        if (entry[3] as String) == ChangeSource.child.rawValue { try Self.notePurgedSeq(db, origin: origin, seq: entry[2]) }
                    }
                    entries += try removeRecord(db, &statements, table: table, id: id)
                    tombstones += 1
                    floor = max(floor, delete[0])
                }
                try Self.notePurged(db, purged)
                if floor > 0 { try Self.raisePurgeFloor(db, to: floor) }
                return (RecordKey(table: lastRow[0], id: lastRow[1]), tombstones, entries)
            }
            report.tombstones += pass.tombstones
            report.tombstoneEntries += pass.entries
            if let last = pass.last { afterKey = last } else { done = true }
        }
    }

    /// Raises the position a child's cursor must have passed (``retentionFloor()``).
    private static func raisePurgeFloor(_ db: Database, to floor: Int64) throws {
        try db.execute(sql: """
            INSERT INTO ts_cursors (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = MAX(value, excluded.value)
            """, arguments: [purgeFloorCursor, floor])
    }

    static func notePurged(_ db: Database, _ purged: [NodeID: Int64]) throws {
        for (origin, through) in purged {
            try db.cachedStatement(sql: """
                INSERT INTO ts_purged (origin, through_seq) VALUES (?, ?)
                ON CONFLICT(origin) DO UPDATE SET through_seq = MAX(through_seq, excluded.through_seq)
                """).execute(arguments: [origin.rawValue, through])
        }
    }

    // MARK: Footprint

    /// Gives free pages back to the file system once they are a sixteenth of the file (a
    /// store created with incremental auto-vacuum; others keep them for later writes): what
    /// compaction purged leaves the file, not only the tables. A passive checkpoint after it
    /// shrinks the file at once. Returns the pages released.
    func releaseFreePages() throws -> Int {
        let free = try writer.read { db -> Int in
            guard try Int.fetchOne(db, sql: "PRAGMA auto_vacuum") == 2 else { return 0 }
            let pages = try Int.fetchOne(db, sql: "PRAGMA page_count") ?? 0
            let free = try Int.fetchOne(db, sql: "PRAGMA freelist_count") ?? 0
            return free >= max(4, pages / 16) ? free : 0
        }
        guard free > 0 else { return 0 }
        // In steps of 256 pages (1 MiB), each its own write: moving pages holds the writer.
        for start in stride(from: 0, to: free, by: 256) {
            try writer.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA incremental_vacuum(\(min(256, free - start)))") }
        }
        // Copied into the file now, the file shrinks now (a hub's checkpoints would do it
        // within seconds; an agent's writer only after 1,000 pages of log).
        writer.writeWithoutTransaction { db in _ = try? db.checkpoint(.passive) }
        return free
    }

    /// What the store's files hold (``StorageFootprint``): the database file and its
    /// write-ahead log as they are on disk, and the size of a file holding only the live
    /// data (the domain tables, with each record's versions and route), made by copying the
    /// store (`VACUUM INTO` a file beside it) and dropping everything else from the copy.
    /// For benchmarks and diagnostics: the copy holds the writer while it is made.
    public func footprint() throws -> StorageFootprint {
        let copy = path + ".footprint-\(UInt64.random(in: 0...UInt64.max))"
        defer {
            for suffix in ["", "-wal", "-shm", "-journal"] { try? FileManager.default.removeItem(atPath: copy + suffix) }
        }
        let pages = try writer.read { db -> (Int64, Int64, Int64) in
            (try Int64.fetchOne(db, sql: "PRAGMA page_count") ?? 0, try Int64.fetchOne(db, sql: "PRAGMA freelist_count") ?? 0,
             try Int64.fetchOne(db, sql: "PRAGMA page_size") ?? 0)
        }
        try writer.writeWithoutTransaction { db in try db.execute(sql: "VACUUM INTO ?", arguments: [copy]) }
        let live = try DatabaseQueue(path: copy)
        let domain = Set(schema.tables.map(\.name))
        let (liveWithFolded, liveBytes) = try live.writeWithoutTransaction { db -> (Int64, Int64) in
            func size() throws -> Int64 {
                try db.execute(sql: "VACUUM")
                return (try Int64.fetchOne(db, sql: "PRAGMA page_count") ?? 0) * (try Int64.fetchOne(db, sql: "PRAGMA page_size") ?? 0)
            }
            let tables = try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
            for table in tables where !domain.contains(table) {
                try db.execute(sql: "DROP TABLE \(table.quotedDatabaseIdentifier)")
            }
            let withFolded = try size()
            for table in schema.tables {
                let name = table.name.quotedDatabaseIdentifier
                try db.execute(sql: "DROP INDEX IF EXISTS \("\(table.name)_ts_folded_at".quotedDatabaseIdentifier)")
                try db.execute(sql: "ALTER TABLE \(name) DROP COLUMN \(DomainTables.foldedColumn)")
                try db.execute(sql: "ALTER TABLE \(name) DROP COLUMN \(DomainTables.foldedAtColumn)")
            }
            return (withFolded, try size())
        }
        try live.close()
        let size = { (file: String) -> Int64 in
            ((try? FileManager.default.attributesOfItem(atPath: file))?[.size] as? NSNumber)?.int64Value ?? 0
        }
        return StorageFootprint(fileBytes: size(path), usedBytes: (pages.0 - pages.1) * pages.2, walBytes: size(path + "-wal"), liveBytes: liveBytes,
                                liveWithFoldedBytes: liveWithFolded)
    }

    // MARK: Re-bootstrap

    /// Starts fetching this node's scope again from the start (its parent purged deletes it
    /// has not seen): every record held is marked unconfirmed, the pull cursor goes to 0 and
    /// the node asks for its own changes too (`bootstrappedKey` cleared), in one
    /// transaction. Unsent changes are untouched: they go upward as before.
    public func beginRebootstrap(pullCursor: String, bootstrappedKey: String) throws {
        try writer.write { db in
            try db.execute(sql: "DELETE FROM ts_rebootstrap")
            for table in schema.tables {
                try db.execute(sql: """
                    INSERT OR IGNORE INTO ts_rebootstrap (tbl, id) SELECT ?, id FROM \(table.name.quotedDatabaseIdentifier) WHERE \(DomainTables.heldByStore)
                    """, arguments: [table.name])
            }
            try db.execute(sql: "INSERT OR IGNORE INTO ts_rebootstrap (tbl, id) SELECT tbl, id FROM ts_tombstones")
            try Self.setCursor(db, pullCursor, 0)
            try db.execute(sql: "DELETE FROM ts_meta WHERE key = ?", arguments: [bootstrappedKey])
        }
    }

    /// Marks the records `changes` (received from the parent) name as confirmed by the
    /// re-bootstrap under way, if any; in the caller's transaction.
    static func confirmRebootstrap(_ db: Database, _ changes: [Change]) throws {
        guard try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM ts_rebootstrap)") == true else { return }
        let statement = try db.cachedStatement(sql: "DELETE FROM ts_rebootstrap WHERE tbl = ? AND id = ?")
        for change in changes { try statement.execute(arguments: [change.table, change.recordID]) }
    }

    /// Ends a re-bootstrap once the pull has caught up: a record the parent did not deliver
    /// again was deleted (or left this node's scope) while the node was away, and goes,
    /// unless changes of it made here still wait to go upward. Returns what went and what
    /// was kept; nothing when no re-bootstrap is under way.
    public func finishRebootstrap() throws -> (dropped: Int, keptUnsent: Int) {
        try writer.write { db in
            let keys = try Row.fetchAll(db, sql: "SELECT tbl, id FROM ts_rebootstrap").map { RecordKey(table: $0[0], id: $0[1]) }
            guard !keys.isEmpty, let me = try Self.identity(db) else { return (0, 0) }
            let pushed = try Int64.fetchOne(db, sql: "SELECT value FROM ts_cursors WHERE name = ?", arguments: [Self.parentPushCursor]) ?? 0
            try Self.raiseSeqFloor(db, node: me.node)
            var statements = LogStatements(db)
            var (dropped, kept) = (0, 0)
            for key in keys {
                guard let table = schema.table(key.table) else { continue }
                let unsent = try Bool.fetchOne(db, sql: """
                    SELECT EXISTS (SELECT 1 FROM ts_changes WHERE tbl = ? AND record_id = ? AND source != 'parent' AND seq > ?)
                    """, arguments: [key.table, key.id, pushed]) ?? false
                if unsent {
                    kept += 1
                    continue
                }
                _ = try removeRecord(db, &statements, table: table, id: key.id)
                dropped += 1
            }
            try db.execute(sql: "DELETE FROM ts_rebootstrap")
            return (dropped, kept)
        }
    }

    /// True while a re-bootstrap waits for its pull to catch up.
    public func isRebootstrapping() throws -> Bool {
        try writer.read { db in try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM ts_rebootstrap)") ?? false }
    }
}

/// What a compaction transaction reads once: the store's node, the feed's head, how far
/// the parent acknowledged, and which child of this node each route node is fed through.
private struct CompactionContext {
    let me: NodeID
    let head: Int64
    let pushed: Int64
    let acks: [NodeID: Int64]
    let tree: NodeTree?
    private var children: [NodeID: NodeID?] = [:]

    init(_ db: Database, me identity: NodeIdentity, tree: NodeTree?) throws {
        me = identity.node
        head = try Int64.fetchOne(db, sql: "SELECT MAX(seq) FROM ts_changes") ?? 0
        pushed = identity.parent == nil ? .max
            : try Int64.fetchOne(db, sql: "SELECT value FROM ts_cursors WHERE name = ?", arguments: [NodeStore.parentPushCursor]) ?? 0
        acks = try NodeStore.acknowledgements(db)
        self.tree = tree
    }

    /// True when the entry needs nothing more upward: it came from the parent, or the parent
    /// acknowledged it and it waits in no retry.
    func acknowledgedUpward(_ db: Database, seq: Int64, source: String, origin: NodeID, originSeq: Int64) throws -> Bool {
        guard source != ChangeSource.parent.rawValue else { return true }
        guard seq <= pushed else { return false }
        return try !(Bool.fetchOne(db.cachedStatement(sql: "SELECT EXISTS (SELECT 1 FROM ts_push_retries WHERE origin = ? AND origin_seq = ?)"),
                                   arguments: [origin.rawValue, originSeq]) ?? false)
    }

    /// True when every child this store feeds the entry to has pulled past it.
    mutating func pulledByEveryChild(_ db: Database, seq: Int64) throws -> Bool {
        guard tree != nil else { return true }
        let nodes = try String.fetchAll(db.cachedStatement(sql: "SELECT node FROM ts_change_routes WHERE seq = ?"), arguments: [seq])
        for node in nodes {
            guard let child = child(toward: NodeID(unchecked: node)) else { continue }
            if (acks[child] ?? 0) < seq { return false }
        }
        return true
    }

    /// The child of this node whose subtree holds `node`; nil for this node itself and for
    /// nodes outside its subtree (fed by another store, or gone from the tree).
    private mutating func child(toward node: NodeID) -> NodeID? {
        if let known = children[node] { return known }
        let found = tree?.child(of: me, toward: node)
        children[node] = found
        return found
    }
}

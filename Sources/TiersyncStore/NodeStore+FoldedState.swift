// Folded log entries (docs/PRIVACY.md, "Bounded storage"): a change-log entry whose values
// are still current, once every replica that needs it has it, is folded into its record —
// its row goes, and the record's domain row keeps only the identities of the versions
// folded (`ts_folded`) and its position in the feed (`ts_folded_at`, indexed). The feed
// serves a folded record from its state at the record's position in the log, so a node
// that bootstraps, or a record entering a scope, still receives every field with the
// change identity and version that wrote it. `unfoldState` writes folded
// entries back into the log (for `admin migrate-tenant`).

import Foundation
import GRDB
import TiersyncCore

extension NodeStore {
    /// The record's folded identities and its position in the feed, if any were folded.
    func folded(_ db: Database, table: String, id: String) throws -> (seq: Int64, identities: FoldedIdentities)? {
        guard schema.table(table) != nil else { return nil }
        let name = table.quotedDatabaseIdentifier
        guard let row = try Row.fetchOne(db.cachedStatement(sql: """
            SELECT \(DomainTables.foldedAtColumn), \(DomainTables.foldedColumn) FROM \(name) WHERE id = ? AND \(DomainTables.foldedAtColumn) IS NOT NULL
            """), arguments: [id]) else { return nil }
        guard let identities = FoldedIdentities(parsing: row[1] ?? "") else {
            throw StoreError.invalidArgument("corrupt folded identities for \(table)/\(id)")
        }
        return (row[0], identities)
    }

    /// The tables with a record folded at some time (those with the partial index).
    func foldedTables(_ db: Database) throws -> [TableSchema] {
        let indexes = Set(try String.fetchAll(db.cachedStatement(sql: "SELECT name FROM sqlite_master WHERE type = 'index'")))
        return schema.tables.filter { indexes.contains(DomainTables.foldedIndex($0.name)) }
    }

    /// Stores a live record's folded identities at feed position `seq` (never lower than
    /// the position it had: a node bootstrapping may have walked up to it but not past it),
    /// or clears them when none is left. `indexed` holds the tables known to have the
    /// feed's index; the first fold of another table creates it.
    func storeFolded(_ db: Database, table: String, id: String, seq: Int64, previous: Int64?, _ identities: FoldedIdentities,
                     indexed: inout Set<String>) throws {
        let name = table.quotedDatabaseIdentifier
        if !identities.isEmpty, !indexed.contains(table) {
            try db.execute(sql: """
                CREATE INDEX IF NOT EXISTS \(DomainTables.foldedIndex(table).quotedDatabaseIdentifier) ON \(name)(\(DomainTables.foldedAtColumn))
                WHERE \(DomainTables.foldedAtColumn) IS NOT NULL
                """)
            indexed.insert(table)
        }
        let update = try db.cachedStatement(sql: """
            UPDATE \(name) SET \(DomainTables.foldedColumn) = ?, \(DomainTables.foldedAtColumn) = ? WHERE id = ?
            """)
        if identities.isEmpty {
            if previous != nil { try update.execute(arguments: [nil as String?, nil as Int64?, id]) }
        } else {
            try update.execute(arguments: [identities.text, max(seq, previous ?? 0), id])
        }
    }

    /// The changes a folded record stands for in a feed to `scope`: one per folded version
    /// that some field still holds, with that version's identity and the fields it holds,
    /// read from the record as it is now. None when the record is gone, deleted, or no
    /// longer routed to `scope` (it left it; the log says so).
    func foldedChanges(_ db: Database, _ key: RecordKey, scope: Scope) throws -> [Change] {
        guard let table = schema.table(key.table), let (_, identities) = try folded(db, table: key.table, id: key.id),
              let stored = try load(db, table: table, id: key.id), stored.state.tombstone == nil, scope.contains(route: stored.route) else { return [] }
        return identities.changes(table: key.table, id: key.id, state: stored.state)
    }

    /// Folded records at feed positions after `cursor` routed to `scope`, in position order,
    /// looking at no more than `scan` rows: the records found by position, and the last
    /// position looked at when the scan stopped short (nil when it reached the end).
    func foldedCandidates(_ db: Database, after cursor: Int64, scope: Scope, scan: Int) throws
        -> (records: [Int64: RecordKey], scannedThrough: Int64?) {
        // Per table, in position order through the partial index; merged, the positions up
        // to the lowest last one of a table that filled its scan are complete.
        var rows: [(seq: Int64, key: RecordKey, route: String?)] = []
        var bound = Int64.max
        for table in try foldedTables(db) {
            let name = table.name.quotedDatabaseIdentifier
            let found = try Row.fetchAll(db.cachedStatement(sql: """
                SELECT \(DomainTables.foldedAtColumn), id, \(DomainTables.routeColumn) FROM \(name)
                WHERE \(DomainTables.foldedAtColumn) > ? ORDER BY \(DomainTables.foldedAtColumn) LIMIT ?
                """), arguments: [cursor, scan])
            rows += found.map { ($0[0], RecordKey(table: table.name, id: $0[1]), $0[2]) }
            if found.count == scan, let last = found.last { bound = min(bound, last[0] as Int64) }
        }
        rows = rows.filter { $0.seq <= bound }.sorted { $0.seq < $1.seq }
        if rows.count > scan {
            rows = Array(rows.prefix(scan))
            bound = rows.last!.seq
        }
        var records: [Int64: RecordKey] = [:]
        for row in rows where scope.contains(route: Self.parseRoute(row.route)) { records[row.seq] = row.key }
        return (records, bound == .max ? nil : bound)
    }

    /// The highest feed position of a folded record (0 when none): a cursor at or past it
    /// needs no look at folded records.
    func highestFolded(_ db: Database) throws -> Int64 {
        try foldedTables(db).map { table in
            try Int64.fetchOne(db.cachedStatement(sql: """
                SELECT MAX(\(DomainTables.foldedAtColumn)) FROM \(table.name.quotedDatabaseIdentifier)
                """)) ?? 0
        }.max() ?? 0
    }

    /// Folded changes that go upward (made here or received from a child), at feed positions
    /// after `seq`, in position order, looking at no more than `limit` records: what a push
    /// resumed below the folded positions sends again (a parent restored from an older
    /// backup, ``pushRewind(held:acknowledgedThrough:)``). The last position looked at when
    /// the scan stopped short, nil when it reached the end.
    func foldedUpward(_ db: Database, after seq: Int64, limit: Int) throws -> (entries: [LoggedChange], scannedThrough: Int64?) {
        let scan = try foldedCandidates(db, after: seq, scope: .everything, scan: max(1, limit))
        var entries: [LoggedChange] = []
        let me = try Self.identity(db)?.node
        for (position, key) in scan.records.sorted(by: { $0.key < $1.key }) {
            guard let (_, identities) = try folded(db, table: key.table, id: key.id) else { continue }
            for change in try foldedChanges(db, key, scope: .everything) where !identities.fromParent.contains(change.version) {
                entries.append(LoggedChange(seq: position, change: change, source: change.origin == me ? .local : .child,
                                            receivedFrom: nil, receivedAtMillis: change.hlc.wallMillis))
            }
        }
        return (entries, scan.scannedThrough)
    }

    /// The lowest feed position of a folded record holding a change of one of `held`'s
    /// origins numbered above what the parent holds of it, and that goes upward; nil when
    /// none. Reads every folded record: only for a restored parent.
    func lowestFoldedUnheld(_ db: Database, held: [String: Int64]) throws -> Int64? {
        var lowest: Int64?
        for table in try foldedTables(db) {
            let rows = try Row.fetchAll(db, sql: """
                SELECT \(DomainTables.foldedAtColumn), \(DomainTables.foldedColumn) FROM \(table.name.quotedDatabaseIdentifier)
                WHERE \(DomainTables.foldedAtColumn) IS NOT NULL
                """)
            for row in rows {
                guard let identities = FoldedIdentities(parsing: row[1] ?? "") else { continue }
                let unheld = identities.originSeqs.contains { version, seq in
                    !identities.fromParent.contains(version) && held[version.node.rawValue].map { seq > $0 } == true
                }
                if unheld { lowest = min(lowest ?? .max, row[0] as Int64) }
            }
        }
        return lowest
    }

    /// Writes every folded entry back into the log, with the fields its version still
    /// holds and the record's route, and forgets the folding: the log then reads as if
    /// nothing had been folded (prior versions and trails were not kept). Each goes to a
    /// free position at or below its record's: every node fed before has pulled past it, so
    /// none receives it again. (Records are taken in position order, each taking the
    /// highest free positions below its own: the entries folded at or below a position
    /// freed at least as many.) `admin migrate-tenant` does this before moving a tenant,
    /// since a hub on PostgreSQL serves its feed from the log alone. Returns the entries
    /// written back.
    @discardableResult
    public func unfoldState() throws -> Int {
        try writer.write { db in
            guard let me = try Self.identity(db) else { return 0 }
            var records: [(seq: Int64, key: RecordKey)] = []
            for table in try foldedTables(db) {
                records += try Row.fetchAll(db, sql: """
                    SELECT \(DomainTables.foldedAtColumn), id FROM \(table.name.quotedDatabaseIdentifier) WHERE \(DomainTables.foldedAtColumn) IS NOT NULL
                    """).map { ($0[0], RecordKey(table: table.name, id: $0[1])) }
            }
            let taken = try db.cachedStatement(sql: "SELECT EXISTS (SELECT 1 FROM ts_changes WHERE seq = ?)")
            var written = 0
            for (position, key) in records.sorted(by: { $0.seq < $1.seq }) {
                guard let table = schema.table(key.table), let stored = try load(db, table: table, id: key.id) else { continue }
                var free = position
                for change in try foldedChanges(db, key, scope: .everything) {
                    while free > 0, try Bool.fetchOne(taken, arguments: [free]) == true { free -= 1 }
                    guard free > 0 else { throw StoreError.invalidArgument("no free log position for \(key.table)/\(key.id)") }
                    let source: ChangeSource = change.origin == me.node ? .local : (me.parent == nil ? .child : .parent)
                    try db.execute(sql: """
                        INSERT INTO ts_changes (seq, origin, origin_seq, hlc, tbl, record_id, op, fields, prior, source, received_from, received_at, trail)
                        VALUES (?, ?, ?, ?, ?, ?, 'upsert', ?, NULL, ?, NULL, ?, NULL)
                        """, arguments: [free, change.origin.rawValue, change.originSeq, Int64(bitPattern: change.hlc.rawValue), key.table, key.id,
                                         CanonicalJSON.object(change.fields), source.rawValue, Int64(clamping: change.hlc.wallMillis)])
                    for node in stored.route {
                        try db.execute(sql: "INSERT OR IGNORE INTO ts_change_routes (node, seq) VALUES (?, ?)", arguments: [node.rawValue, free])
                    }
                    written += 1
                }
            }
            for table in try foldedTables(db) {
                try db.execute(sql: """
                    UPDATE \(table.name.quotedDatabaseIdentifier) SET \(DomainTables.foldedColumn) = NULL, \(DomainTables.foldedAtColumn) = NULL
                    WHERE \(DomainTables.foldedAtColumn) IS NOT NULL
                    """)
            }
            return written
        }
    }

    /// How many records have folded entries, and how many entries they stand for.
    public func foldedCounts() throws -> (records: Int, entries: Int) {
        try writer.read { db in
            var texts: [String] = []
            for table in try foldedTables(db) {
                texts += try String.fetchAll(db, sql: """
                    SELECT \(DomainTables.foldedColumn) FROM \(table.name.quotedDatabaseIdentifier) WHERE \(DomainTables.foldedAtColumn) IS NOT NULL
                    """)
            }
            return (texts.count, texts.reduce(0) { $0 + (FoldedIdentities(parsing: $1)?.originSeqs.count ?? 0) })
        }
    }
}

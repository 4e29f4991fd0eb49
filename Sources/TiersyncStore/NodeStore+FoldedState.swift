// Folded log entries (docs/PRIVACY.md, "Bounded storage"): a change-log entry whose values
// are still current, once every replica that needs it has it, is folded into its record —
// its row goes, and the record keeps only the identities of the versions folded
// (`ts_state`). The feed serves a folded record from its state at the record's position in
// the log, so a node that bootstraps, or a record entering a scope, still receives every
// field with the change identity and version that wrote it. `unfoldState` writes folded
// entries back into the log (for `admin migrate-tenant`).

import Foundation
import GRDB
import TiersyncCore

/// The identities of a record's folded versions: for each version still current whose log
/// entry was folded, the change's sequence at its origin and the entry's log position.
/// Stored as `<hlc>@<node>:<originSeq>:<logSeq>` items joined by `;` (node ids hold
/// neither character).
struct FoldedIdentities: Equatable {
    struct Entry: Equatable {
        var originSeq: Int64
        var logSeq: Int64
    }

    var entries: [FieldVersion: Entry] = [:]

    init() {}

    init?(parsing text: String) {
        for item in text.split(separator: ";") {
            let parts = item.split(separator: ":")
            guard parts.count == 3, let version = FieldVersion(parsing: String(parts[0])),
                  let originSeq = Int64(parts[1]), let logSeq = Int64(parts[2]) else { return nil }
            entries[version] = Entry(originSeq: originSeq, logSeq: logSeq)
        }
    }

    var text: String {
        entries.sorted { $0.value.logSeq < $1.value.logSeq }
            .map { "\($0.key.description):\($0.value.originSeq):\($0.value.logSeq)" }.joined(separator: ";")
    }

    /// Only the versions `state` still holds for some field.
    mutating func keepCurrent(_ state: RecordState) {
        let current = Set(state.versions.values)
        entries = entries.filter { current.contains($0.key) }
    }
}

extension NodeStore {
    /// The record's folded identities and its position in the feed, if any were folded.
    static func folded(_ db: Database, table: String, id: String) throws -> (seq: Int64, identities: FoldedIdentities)? {
        guard let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT seq, ids FROM ts_state WHERE tbl = ? AND id = ?"),
                                         arguments: [table, id]) else { return nil }
        guard let identities = FoldedIdentities(parsing: row[1]) else {
            throw StoreError.invalidArgument("corrupt folded identities for \(table)/\(id)")
        }
        return (row[0], identities)
    }

    /// Stores a record's folded identities at feed position `seq` (never lower than the
    /// position it had: a node bootstrapping may have walked up to it but not past it),
    /// or removes the row when none is left.
    static func storeFolded(_ db: Database, table: String, id: String, seq: Int64, _ identities: FoldedIdentities) throws {
        let previous = try Int64.fetchOne(db.cachedStatement(sql: "SELECT seq FROM ts_state WHERE tbl = ? AND id = ?"), arguments: [table, id])
        guard !identities.entries.isEmpty else {
            if previous != nil { try db.cachedStatement(sql: "DELETE FROM ts_state WHERE tbl = ? AND id = ?").execute(arguments: [table, id]) }
            return
        }
        let position = max(seq, previous ?? 0)
        if let previous, previous != position {
            try db.cachedStatement(sql: "DELETE FROM ts_state WHERE tbl = ? AND id = ?").execute(arguments: [table, id])
        }
        try db.cachedStatement(sql: "INSERT OR REPLACE INTO ts_state (seq, tbl, id, ids) VALUES (?, ?, ?, ?)")
            .execute(arguments: [position, table, id, identities.text])
    }

    /// Forgets a record's folded identities (the record is removed or erased).
    static func dropFolded(_ db: Database, table: String, id: String) throws {
        try db.cachedStatement(sql: "DELETE FROM ts_state WHERE tbl = ? AND id = ?").execute(arguments: [table, id])
    }

    /// The changes a folded record stands for in a feed to `scope`: one per folded version
    /// that some field still holds, with that version's identity and the fields it holds,
    /// read from the record as it is now. None when the record is gone, deleted, or no
    /// longer routed to `scope` (it left it; the log says so).
    func foldedChanges(_ db: Database, table tableName: String, id: String, scope: Scope) throws -> [Change] {
        guard let table = schema.table(tableName), let (_, identities) = try Self.folded(db, table: tableName, id: id),
              let stored = try load(db, table: table, id: id), stored.state.tombstone == nil, scope.contains(route: stored.route) else { return [] }
        var fields: [FieldVersion: [String: FieldValue]] = [:]
        for (field, version) in stored.state.versions where identities.entries[version] != nil {
            fields[version, default: [:]][field] = stored.state.values[field] ?? .null
        }
        return fields.sorted { identities.entries[$0.key]!.logSeq < identities.entries[$1.key]!.logSeq }.map { version, values in
            Change(origin: version.node, originSeq: identities.entries[version]!.originSeq, hlc: version.hlc,
                   table: tableName, recordID: id, op: .upsert, fields: values)
        }
    }

    /// Folded records at feed positions after `cursor` routed to `scope`, in position order,
    /// looking at no more than `scan` rows: the positions found, and the last position
    /// looked at when the scan stopped short (nil when it reached the end).
    static func foldedCandidates(_ db: Database, schema: Schema, after cursor: Int64, scope: Scope, scan: Int) throws
        -> (positions: [Int64], scannedThrough: Int64?) {
        let rows = try Row.fetchAll(db.cachedStatement(sql: "SELECT seq, tbl, id FROM ts_state WHERE seq > ? ORDER BY seq LIMIT ?"),
                                    arguments: [cursor, scan])
        var positions: [Int64] = []
        for row in rows {
            let (seq, tbl, id): (Int64, String, String) = (row[0], row[1], row[2])
            guard scope.nodes != nil else { positions.append(seq); continue }
            guard schema.table(tbl) != nil else { continue }
            let route = try String.fetchOne(db.cachedStatement(sql: """
                SELECT \(DomainTables.routeColumn) FROM \(tbl.quotedDatabaseIdentifier) WHERE id = ?
                """), arguments: [id])
            if scope.contains(route: parseRoute(route)) { positions.append(seq) }
        }
        return (positions, rows.count == scan ? rows.last.map { $0[0] as Int64 } : nil)
    }

    /// The highest feed position of a folded record (0 when none): a cursor at or past it
    /// needs no look at folded records.
    static func highestFolded(_ db: Database) throws -> Int64 {
        try Int64.fetchOne(db.cachedStatement(sql: "SELECT MAX(seq) FROM ts_state")) ?? 0
    }

    /// The record a folded position belongs to.
    static func foldedRecord(_ db: Database, at seq: Int64) throws -> (table: String, id: String)? {
        try Row.fetchOne(db.cachedStatement(sql: "SELECT tbl, id FROM ts_state WHERE seq = ?"), arguments: [seq]).map { ($0[0], $0[1]) }
    }

    /// Writes every folded entry back into the log at its old position, with the fields
    /// its version still holds and the record's route, and forgets the folding. The log
    /// then reads as if nothing had been folded (prior versions and trails were not kept).
    /// `admin migrate-tenant` does this before moving a tenant, since a hub on PostgreSQL
    /// serves its feed from the log alone. Returns the entries written back.
    @discardableResult
    public func unfoldState() throws -> Int {
        try writer.write { db in
            guard let me = try Self.identity(db) else { return 0 }
            var written = 0
            let rows = try Row.fetchAll(db, sql: "SELECT tbl, id FROM ts_state ORDER BY seq")
            for row in rows {
                let (tbl, id): (String, String) = (row[0], row[1])
                guard let (_, identities) = try Self.folded(db, table: tbl, id: id), let table = schema.table(tbl),
                      let stored = try load(db, table: table, id: id) else { continue }
                let changes = try foldedChanges(db, table: tbl, id: id, scope: .everything)
                for change in changes {
                    guard let entry = identities.entries[change.version] else { continue }
                    let source: ChangeSource = change.origin == me.node ? .local : (me.parent == nil ? .child : .parent)
                    try db.execute(sql: """
                        INSERT INTO ts_changes (seq, origin, origin_seq, hlc, tbl, record_id, op, fields, prior, source, received_from, received_at, trail)
                        VALUES (?, ?, ?, ?, ?, ?, 'upsert', ?, NULL, ?, NULL, ?, NULL)
                        """, arguments: [entry.logSeq, change.origin.rawValue, change.originSeq, Int64(bitPattern: change.hlc.rawValue), tbl, id,
                                         CanonicalJSON.object(change.fields), source.rawValue, Int64(clamping: change.hlc.wallMillis)])
                    for node in stored.route {
                        try db.execute(sql: "INSERT OR IGNORE INTO ts_change_routes (node, seq) VALUES (?, ?)", arguments: [node.rawValue, entry.logSeq])
                    }
                    written += 1
                }
            }
            try db.execute(sql: "DELETE FROM ts_state")
            return written
        }
    }

    /// How many records have folded entries, and how many entries they stand for.
    public func foldedCounts() throws -> (records: Int, entries: Int) {
        try writer.read { db in
            let texts = try String.fetchAll(db, sql: "SELECT ids FROM ts_state")
            return (texts.count, texts.reduce(0) { $0 + (FoldedIdentities(parsing: $1)?.entries.count ?? 0) })
        }
    }
}

// Reading what the store holds: one record, a table's live records, kept conflicts, the
// counts `status` shows, and a digest of the live content in a scope (replicas holding the
// same records have the same one).

import Crypto
import Foundation
import GRDB
import TiersyncCore

extension NodeStore {
    public func record(table: String, id: String) throws -> StoredRecord? {
        guard let t = schema.table(table) else { throw StoreError.rejected(.init(.unknownTable, "unknown table '\(table)'")) }
        return try writer.read { db in try load(db, table: t, id: id) }
    }

    /// Live records of a table, ordered by id.
    public func liveRecords(table: String, limit: Int = Int.max) throws -> [(id: String, values: [String: FieldValue])] {
        guard let t = schema.table(table) else { throw StoreError.rejected(.init(.unknownTable, "unknown table '\(table)'")) }
        return try writer.read { db in
            try Row.fetchAll(db, sql: "SELECT \(tableSQL[t.name]!.columns) FROM \(t.name.quotedDatabaseIdentifier) WHERE \(DomainTables.heldByStore) ORDER BY id LIMIT ?",
                             arguments: [min(limit, Int(Int32.max))])
                .map { row in (row[0] as String, Self.values(of: row, table: t).filter { !$0.value.isNull }) }
        }
    }

    /// Kept conflicts, oldest first; all of them, or those of one record.
    public func conflicts(table: String? = nil, recordID: String? = nil, afterID: Int64 = 0, limit: Int = 1000) throws -> [ConflictRecord] {
        try writer.read { db in
            let filter = table == nil ? "WHERE id > ?" : "WHERE id > ? AND tbl = ? AND record_id = ?"
            let args: StatementArguments = table == nil ? [afterID, limit] : [afterID, table, recordID ?? "", limit]
            return try Row.fetchAll(db, sql: "SELECT * FROM ts_conflicts \(filter) ORDER BY id LIMIT ?", arguments: args).map { row in
                let decoder = JSONDecoder()
                func value(_ s: String) -> FieldValue { (try? decoder.decode(FieldValue.self, from: Data(s.utf8))) ?? .null }
                return ConflictRecord(
                    id: row["id"], table: row["tbl"], recordID: row["record_id"],
                    conflict: FieldConflict(field: row["field"],
                                            winner: value(row["winner_value"]), winnerVersion: FieldVersion(parsing: row["winner_version"])!,
                                            loser: value(row["loser_value"]), loserVersion: FieldVersion(parsing: row["loser_version"])!),
                    detectedAtMillis: UInt64(row["detected_at"] as Int64))
            }
        }
    }

    public func counts() throws -> StoreCounts {
        try writer.read { db in
            var records: [String: Int] = [:]
            for t in schema.tables {
                records[t.name] = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM \(t.name.quotedDatabaseIdentifier)") ?? 0
            }
            return StoreCounts(records: records,
                               changes: try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM ts_changes") ?? 0,
                               conflicts: try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM ts_conflicts") ?? 0,
                               quarantined: try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM ts_quarantine") ?? 0)
        }
    }

    /// SHA-256 over the live content of every table (ids and non-null values, canonical
    /// JSON, ordered), limited to records routed into `scope`. Two replicas holding the
    /// same records in a scope have the same digest.
    public func digest(scope: Scope = .everything) throws -> String {
        try writer.read { db in
            var hasher = SHA256()
            for t in schema.tables.sorted(by: { $0.name < $1.name }) {
                let sql = tableSQL[t.name]!
                let rows = try Row.fetchCursor(db, sql: "SELECT \(sql.columns) FROM \(t.name.quotedDatabaseIdentifier) WHERE \(DomainTables.heldByStore) ORDER BY id")
                while let row = try rows.next() {
                    if scope.nodes != nil, !scope.contains(route: Self.parseRoute(row[sql.routeIndex])) { continue }
                    let values = Self.values(of: row, table: t).filter { !$0.value.isNull }
                    hasher.update(data: Data("\(t.name)\t\(row[0] as String)\t\(CanonicalJSON.object(values))\n".utf8))
                }
            }
            return hasher.finalize().hexString
        }
    }
}

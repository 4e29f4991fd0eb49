// A tenant store's contents as the engine-neutral pages `admin migrate-tenant` moves and the
// tenant digest reads (``TiersyncStorage/TenantDataExport``).

import GRDB
import TiersyncCore

extension NodeStore: TenantDataExport {
    public func exportRows(_ table: MigrationTable, offset: Int, limit: Int) async throws -> [[MigrationValue]] {
        try await offCooperativePool {
            try self.writer.read { db in
                let columns = table.columns
                let rows = try Row.fetchAll(db, sql: """
                    SELECT \(columns.map(\.name).joined(separator: ", ")) FROM ts_\(table.rawValue)
                    ORDER BY \(table.orderKey.joined(separator: ", ")) LIMIT ? OFFSET ?
                    """, arguments: [limit, offset])
                return rows.map { row in
                    (0..<columns.count).map { i -> MigrationValue in
                        switch (row[i] as DatabaseValue).storage {
                        case .null: .null
                        case .int64(let n): .integer(n)
                        case .double(let d): .integer(Int64(d))
                        case .string(let s): .text(s)
                        case .blob(let data): .text(String(decoding: data, as: UTF8.self))
                        }
                    }
                }
            }
        }
    }

    public func exportRecords(offset: Int, limit: Int) async throws -> [StoredRecord] {
        try await offCooperativePool {
            try self.writer.read { db in
                // Every record with replication state: live rows of the domain tables, and
                // tombstones; by table, then id, in byte order (as PostgreSQL's COLLATE "C").
                var keys: [(table: String, id: String)] = []
                for table in self.schema.tables where try db.tableExists(table.name) {
                    for id in try String.fetchAll(db, sql: "SELECT id FROM \(table.name.quotedDatabaseIdentifier) WHERE \(DomainTables.heldByStore)") {
                        keys.append((table.name, id))
                    }
                }
                for row in try Row.fetchAll(db, sql: "SELECT tbl, id FROM ts_tombstones") { keys.append((row[0], row[1])) }
                keys.sort { ($0.table.utf8.lexicographicallyPrecedes($1.table.utf8)) || ($0.table == $1.table && $0.id.utf8.lexicographicallyPrecedes($1.id.utf8)) }
                return try keys.dropFirst(offset).prefix(limit).compactMap { key in
                    guard let table = self.schema.table(key.table) else { return nil }
                    return try self.load(db, table: table, id: key.id)
                }
            }
        }
    }

    public func exportSettings() async throws -> [String: String] {
        try await offCooperativePool {
            try self.writer.read { db in
                var settings: [String: String] = [:]
                for key in MigratedSetting.allCases {
                    // The purge floor is a cursor here, a setting on PostgreSQL.
                    let sql = key == .purgeFloor ? "SELECT CAST(value AS TEXT) FROM ts_cursors WHERE name = ?" : "SELECT value FROM ts_meta WHERE key = ?"
                    if let value = try String.fetchOne(db, sql: sql, arguments: [key.rawValue]) {
                        settings[key.rawValue] = value
                    }
                }
                return settings
            }
        }
    }
}

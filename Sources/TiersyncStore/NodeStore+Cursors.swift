// Sync cursors (`ts_cursors`): named log positions, such as how far a pull or a push has
// got, stored in the same transaction as what they remember when given to `apply`.

import GRDB
import TiersyncCore

extension NodeStore {
    public func cursor(_ name: String) throws -> Int64 {
        try writer.read { db in try Int64.fetchOne(db, sql: "SELECT value FROM ts_cursors WHERE name = ?", arguments: [name]) ?? 0 }
    }

    public func setCursor(_ name: String, _ value: Int64) throws {
        try writer.write { db in try Self.setCursor(db, name, value) }
    }

    static func setCursor(_ db: Database, _ name: String, _ value: Int64) throws {
        try db.execute(sql: "INSERT INTO ts_cursors (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                       arguments: [name, value])
    }
}

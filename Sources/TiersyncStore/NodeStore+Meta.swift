// The store's settings (`ts_meta`, one text value per key): the keys the store itself
// reads and writes (`MetaKey`), the public `meta`/`setMeta` other modules keep their own
// settings with, and the readers of the settings every write needs (the sequence floor and
// the hybrid clock's last stamp). Every key's spelling is what existing stores hold.

import GRDB
import TiersyncCore

extension NodeStore {
    public func meta(_ key: String) throws -> String? {
        try writer.read { db in try String.fetchOne(db, sql: "SELECT value FROM ts_meta WHERE key = ?", arguments: [key]) }
    }

    public func setMeta(_ key: String, _ value: String?) throws {
        try writer.write { db in
            if let value { try Self.setMeta(db, key, value) } else {
                try db.execute(sql: "DELETE FROM ts_meta WHERE key = ?", arguments: [key])
            }
        }
    }

    /// Sequence numbers at or below this were used by an earlier store of this node.
    static func seqFloor(_ db: Database) throws -> Int64 {
        Int64(try String.fetchOne(db, sql: "SELECT value FROM ts_meta WHERE key = 'seq_floor'") ?? "0") ?? 0
    }

    static func lastHLC(_ db: Database) throws -> HLCTimestamp {
        let s = try String.fetchOne(db, sql: "SELECT value FROM ts_meta WHERE key = 'hlc'")
        return HLCTimestamp(rawValue: s.flatMap { UInt64($0) } ?? 0)
    }

    static func setMeta(_ db: Database, _ key: String, _ value: String) throws {
        try db.execute(sql: "INSERT INTO ts_meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                       arguments: [key, value])
    }
}

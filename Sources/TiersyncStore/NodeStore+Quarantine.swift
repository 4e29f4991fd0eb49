// Quarantine (`ts_quarantine`): received changes refused with their reason, listed for
// the operator, and the write that keeps one (a clock-skew refusal keeps its first time).

import Foundation
import GRDB
import TiersyncCore
import TiersyncStorage

extension NodeStore {
    public func quarantined(limit: Int = 1000) throws -> [QuarantinedChange] {
        try writer.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM ts_quarantine ORDER BY id LIMIT ?", arguments: [limit]).map { row in
                QuarantinedChange(id: row["id"], origin: NodeID(unchecked: row["origin"]), originSeq: row["origin_seq"],
                                  receivedFrom: NodeID(unchecked: row["received_from"]),
                                  receivedAtMillis: UInt64(row["received_at"] as Int64), code: row["code"],
                                  reason: row["reason"], change: row["change"])
            }
        }
    }

    /// The quarantined changes of one record (of `table`, or of any table), oldest first, at
    /// most `limit`: what `tiersync trace` shows beside the record's logged changes.
    public func quarantined(recordID: String, table: String?, limit: Int = 100) throws -> [QuarantinedChange] {
        try writer.read { db in
            try Row.fetchAll(db, sql: """
                SELECT * FROM ts_quarantine WHERE json_extract(change, '$.id') = ? AND (? IS NULL OR json_extract(change, '$.table') = ?)
                ORDER BY id LIMIT ?
                """, arguments: [recordID, table, table, max(0, limit)]).map { Self.quarantinedChange($0) }
        }
    }

    /// A page of the quarantine: ids above `afterID`, oldest first.
    public func quarantined(afterID: Int64, limit: Int) throws -> [QuarantinedChange] {
        try writer.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM ts_quarantine WHERE id > ? ORDER BY id LIMIT ?", arguments: [afterID, max(0, limit)])
                .map(Self.quarantinedChange)
        }
    }

    /// Removes one quarantined change and returns it.
    public func discardQuarantined(_ id: Int64) throws -> QuarantinedChange? {
        try writer.write { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM ts_quarantine WHERE id = ?", arguments: [id]) else { return nil }
            try db.execute(sql: "DELETE FROM ts_quarantine WHERE id = ?", arguments: [id])
            return Self.quarantinedChange(row)
        }
    }

    /// Sets the quarantine's bounds this store enforces (``QuarantineQuota``; its triggers
    /// read them), writing only what differs.
    public func setQuarantineQuota(_ quota: QuarantineQuota) throws {
        let wanted: [(QuarantineQuota.SettingKey, Int64)] = [(.maxBytesPerSender, quota.maxBytesPerSender), (.maxBytes, quota.maxBytes)]
        let stored = try writer.read { db in
            try wanted.map { key, _ in try String.fetchOne(db, sql: "SELECT value FROM ts_meta WHERE key = ?", arguments: [key.rawValue]) }
        }
        guard zip(wanted, stored).contains(where: { String($0.0.1) != $0.1 }) else { return }
        try writer.write { db in
            for (key, value) in wanted { try Self.setMeta(db, key.rawValue, String(value)) }
        }
    }

    /// Bytes the quarantine keeps, and refusals not kept since the store began (``QuarantineQuota``).
    static func quarantineUsage(_ db: Database) throws -> (bytes: Int64, unkept: Int64) {
        let bytes = try Int64.fetchOne(db, sql: "SELECT COALESCE(SUM(bytes), 0) FROM ts_quarantine_usage") ?? 0
        let unkept = try String.fetchOne(db, sql: "SELECT value FROM ts_meta WHERE key = ?", arguments: [QuarantineQuota.SettingKey.unkept.rawValue])
        return (bytes, unkept.flatMap { Int64($0) } ?? 0)
    }

    static func quarantinedChange(_ row: Row) -> QuarantinedChange {
        QuarantinedChange(id: row["id"], origin: NodeID(unchecked: row["origin"]), originSeq: row["origin_seq"],
                          receivedFrom: NodeID(unchecked: row["received_from"]),
                          receivedAtMillis: UInt64(row["received_at"] as Int64), code: row["code"],
                          reason: row["reason"], change: row["change"])
    }

    func quarantine(_ db: Database, _ change: Change, _ rejection: ChangeRejection, from sender: NodeID, nowMillis: UInt64) throws {
        let json = QuarantineEncoding.json(change)
        // A change refused for clock skew again keeps its first refusal time: the origin
        // re-stamps it to that time, so writes accepted since win over it.
        try db.execute(sql: """
            INSERT INTO ts_quarantine (origin, origin_seq, received_from, received_at, code, reason, change)
            VALUES (?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (origin, origin_seq) DO UPDATE SET received_from = excluded.received_from,
                received_at = CASE WHEN code = '\(ChangeRejection.Code.clockSkew.rawValue)' AND excluded.code = '\(ChangeRejection.Code.clockSkew.rawValue)'
                                   THEN MIN(received_at, excluded.received_at)
                                   ELSE excluded.received_at END,
                code = excluded.code, reason = excluded.reason, change = excluded.change
            """, arguments: [change.origin.rawValue, change.originSeq, sender.rawValue, Int64(nowMillis),
                             rejection.code.rawValue, rejection.message.clipped(toUTF8: 1_000), json])
    }
}

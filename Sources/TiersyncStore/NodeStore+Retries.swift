// Push retries (`ts_push_retries`): changes the parent refused for a reason that may pass,
// re-sent after a delay that doubles per attempt, and forgotten once accepted.

import GRDB
import TiersyncCore

extension NodeStore {
    /// Remembers changes the parent refused for a reason that may pass (clock skew, scope,
    /// schema version, size), to re-send after a delay that doubles per attempt (1 s … 1 h).
    public func scheduleRetries(_ rejected: [RejectedChange], nowMillis: UInt64 = WallClock.nowMillis()) throws {
        guard !rejected.isEmpty else { return }
        try writer.write { db in
            for r in rejected where !r.code.isFinal {
                let attempts = (try Int.fetchOne(db, sql: "SELECT attempts FROM ts_push_retries WHERE origin = ? AND origin_seq = ?",
                                                 arguments: [r.origin.rawValue, r.originSeq]) ?? 0) + 1
                let delay = min(UInt64(1_000) << UInt64(min(attempts - 1, 12)), 3_600_000)
                try db.execute(sql: """
                    INSERT INTO ts_push_retries (origin, origin_seq, code, reason, attempts, next_at) VALUES (?, ?, ?, ?, ?, ?)
                    ON CONFLICT (origin, origin_seq) DO UPDATE SET code = excluded.code, reason = excluded.reason,
                        attempts = excluded.attempts, next_at = excluded.next_at
                    """, arguments: [r.origin.rawValue, r.originSeq, r.code.rawValue, r.message, attempts, Int64(nowMillis + delay)])
            }
        }
    }

    /// Refused changes due for another try, oldest first.
    public func dueRetries(nowMillis: UInt64 = WallClock.nowMillis(), limit: Int) throws -> [Change] {
        try writer.read { db in
            try Self.fetchLogged(db, sql: """
                SELECT \(Self.loggedColumns(of: "c")) FROM ts_push_retries p JOIN ts_changes c ON c.origin = p.origin AND c.origin_seq = p.origin_seq
                WHERE p.next_at <= ? ORDER BY c.seq LIMIT ?
                """, arguments: [Int64(nowMillis), limit]).map(\.change)
        }
    }

    /// Forgets retries for changes the parent has now accepted.
    public func clearRetries(_ changes: [Change]) throws {
        try writer.write { db in
            for c in changes {
                try db.execute(sql: "DELETE FROM ts_push_retries WHERE origin = ? AND origin_seq = ?", arguments: [c.origin.rawValue, c.originSeq])
            }
        }
    }

    /// How many refused changes wait for another try.
    public func pendingRetries() throws -> Int {
        try writer.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM ts_push_retries") ?? 0 }
    }

    /// The refused changes waiting for another try, counted by refusal code (most first).
    public func retriesByCode() throws -> [(code: String, count: Int)] {
        try writer.read { db in
            try Row.fetchAll(db, sql: "SELECT code, COUNT(*) FROM ts_push_retries GROUP BY code ORDER BY 2 DESC, 1").map { (code: $0[0], count: $0[1]) }
        }
    }

    /// When the next retry is due (ms since the epoch), if any.
    public func nextRetryMillis() throws -> UInt64? {
        try writer.read { db in try Int64.fetchOne(db, sql: "SELECT MIN(next_at) FROM ts_push_retries").map(UInt64.init) }
    }
}

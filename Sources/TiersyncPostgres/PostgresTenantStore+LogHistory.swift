// The tenant's log histories on PostgreSQL (TiersyncStorage's LogHistory.swift says why).
// Every hub process begins one before its first push or pull of the tenant, in a statement of its
// own, holding the head's row lock as a push does: its floor is the head as committed then,
// and no push commits a position above it before the history is committed, so a page read
// meanwhile (naming the history before) hands out no cursor above the floor. Processes restarted after a `pg_restore` begin new ones
// before numbering anything again, and the restored table cannot hold them. The feed
// functions read the newest history with each page, in the page's snapshot.

import PostgresNIO
import TiersyncCore
import TiersyncStorage

extension PostgresTenantStore {
    /// Begins this process's history of the tenant's log, once (two first pushes at once may
    /// both begin one: harmless, the later is the newest).
    func beginLogHistoryBeforeWriting() async throws {
        guard !logHistoryBegun.withLock({ $0 }) else { return }
        _ = try await client.query("""
            INSERT INTO \(unescaped: table(.logHistories)) (id, floor, begun_at)
            SELECT \(LogHistoryStanding.newIdentity()), h.seq, \(Int64(WallClock.nowMillis())) FROM \(unescaped: table(.head)) h WHERE h.id = 1
            FOR UPDATE
            """, logger: logger).collect()
        logHistoryBegun.withLock { $0 = true }
    }

    /// Begins this process's history first (as before a push): until then the newest
    /// history may be the backup's, found current, and a standing found so would be kept
    /// for a history that this process's own history supersedes.
    public func logHistoryStanding(_ history: String) async throws -> LogHistoryStanding {
        try await prepared()
        try await beginLogHistoryBeforeWriting()
        return try await logHistoryStandings.standing(of: history) { try await findLogHistoryStanding(history) }
    }

    private func findLogHistoryStanding(_ history: String) async throws -> LogHistoryStanding {
        try await prepared()
        let rows = try await client.query("""
            WITH named AS (SELECT n FROM \(unescaped: table(.logHistories)) WHERE id = \(history))
            SELECT named.n, (SELECT lh.floor FROM \(unescaped: table(.logHistories)) lh WHERE lh.n > named.n ORDER BY lh.n LIMIT 1)
            FROM named
            """, logger: logger).collect()
        guard let row = rows.first else { return .unknown }
        let (_, next) = try row.decode((Int64, Int64?).self)
        return next.map { .superseded(floor: $0) } ?? .current
    }

    /// Adds histories carried over from another engine (`migrate-tenant`), oldest first,
    /// after those held (none in a new schema).
    public func importLogHistories(_ histories: [(id: String, floor: Int64, begunAt: Int64)]) async throws {
        try await prepared()
        for history in histories {
            _ = try await client.query("""
                INSERT INTO \(unescaped: table(.logHistories)) (id, floor, begun_at) VALUES (\(history.id), \(history.floor), \(history.begunAt))
                ON CONFLICT (id) DO NOTHING
                """, logger: logger).collect()
        }
    }
}

// The log histories of a store that serves its change log to children (a hub's tenant,
// a country node): TiersyncStorage's LogHistory.swift says why. A store records them once
// it has served a pull (`MetaKey.logHistories`): from then on the first new log position
// each process writes is preceded, in the same transaction, by a new history whose floor
// is the log's highest position so far. A store restored from a backup is opened by a new
// process, so the first change it numbers again begins a history the backup cannot have.
// A dealer's store, which serves no pull, records none.

import Foundation
import GRDB
import Synchronization
import TiersyncCore
import TiersyncStorage

/// Whether this process has begun a log history of a store.
enum LogHistoryProgress: Sendable, Equatable {
    /// Not yet looked at by this process.
    case unchecked
    /// The store records no histories (it has served no pull).
    case off
    /// Begun in a transaction not yet committed.
    case pending
    /// Begun and committed.
    case begun
}

extension NodeStore {
    /// Called before a new log position is written, in its transaction: begins a history if
    /// the store records them. Settled when the transaction ends (a rollback leaves the
    /// next write to try again).
    func beginLogHistoryBeforeWriting(_ db: Database) throws {
        guard logHistory.withLock({ $0 == .unchecked }) else { return }
        guard try Self.meta(db, .logHistories) != nil else {
            logHistory.withLock { $0 = .off }
            return
        }
        try beginLogHistory(db)
    }

    /// Inserts a new history and marks it pending until the transaction ends.
    private func beginLogHistory(_ db: Database) throws {
        try db.execute(sql: "INSERT INTO ts_log_histories (id, floor, begun_at) VALUES (?, ?, ?)",
                       arguments: [LogHistoryStanding.newIdentity(), try Self.highestLogPosition(db), Int64(WallClock.nowMillis())])
        logHistory.withLock { $0 = .pending }
        db.afterNextTransaction(onCommit: { _ in self.logHistory.withLock { $0 = .begun } },
                                onRollback: { _ in self.logHistory.withLock { $0 = .unchecked } })
    }

    /// The highest position the log ever numbered (SQLite's `AUTOINCREMENT` counter: an
    /// entry deleted since still counts), at least the newest entry's.
    static func highestLogPosition(_ db: Database) throws -> Int64 {
        let counter = try Int64.fetchOne(db.cachedStatement(sql: "SELECT seq FROM sqlite_sequence WHERE name = 'ts_changes'")) ?? 0
        let newest = try Int64.fetchOne(db.cachedStatement(sql: "SELECT MAX(seq) FROM ts_changes")) ?? 0
        return max(counter, newest)
    }

    /// Starts recording histories when the store first serves its log (once per process):
    /// sets the store's mark and begins this process's history, unless it has one.
    func beginServingLogHistory() async throws {
        guard logHistory.withLock({ $0 != .begun }) else { return }
        try await offCooperativePool {
            try self.writer.write { db in
                if try Self.meta(db, .logHistories) == nil { try Self.setMeta(db, .logHistories, "1") }
                // Pending: another transaction of this connection began it and has not ended.
                if self.logHistory.withLock({ $0 == .unchecked || $0 == .off }) { try self.beginLogHistory(db) }
            }
        }
    }

    /// The newest history (nil before the first).
    static func newestLogHistory(_ db: Database) throws -> String? {
        try String.fetchOne(db.cachedStatement(sql: "SELECT id FROM ts_log_histories ORDER BY n DESC LIMIT 1"))
    }

    /// Where `history` stands in this store's log (``LogHistoryStanding``).
    /// Begins this process's history first: until then the newest history may be the
    /// backup's, found current, and a standing found so would be kept for a history that
    /// this process's own history supersedes.
    public func logHistoryStanding(_ history: String) async throws -> LogHistoryStanding {
        try await beginServingLogHistory()
        return try await logHistoryStandings.standing(of: history) {
            try await self.findLogHistoryStanding(history)
        }
    }

    private func findLogHistoryStanding(_ history: String) async throws -> LogHistoryStanding {
        try await writer.readReleasingConnection { db in
            guard let n = try Int64.fetchOne(db.cachedStatement(sql: "SELECT n FROM ts_log_histories WHERE id = ?"), arguments: [history]) else {
                return .unknown
            }
            let next = try Int64.fetchOne(db.cachedStatement(sql: "SELECT floor FROM ts_log_histories WHERE n > ? ORDER BY n LIMIT 1"), arguments: [n])
            return next.map { .superseded(floor: $0) } ?? .current
        }
    }

    /// The histories, oldest first (`migrate-tenant` carries them over).
    public func logHistories() throws -> [(id: String, floor: Int64, begunAt: Int64)] {
        try writer.read { db in
            try Row.fetchAll(db, sql: "SELECT id, floor, begun_at FROM ts_log_histories ORDER BY n").map { ($0[0], $0[1], $0[2]) }
        }
    }
}

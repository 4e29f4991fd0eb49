import Foundation
import GRDB
import TiersyncCore

/// Governance storage. The store knows documents only as kinds, keys and JSON: signing
/// and meaning live in TiersyncGovernance, so storage stays swappable and dumb.
extension NodeStore {
    public func governanceDocuments(kind: String? = nil) throws -> [StoredGovernanceDocument] {
        try writer.read { db in
            let rows = if let kind {
                try Row.fetchAll(db, sql: "SELECT kind, key, seq, body FROM ts_gov_documents WHERE kind = ? ORDER BY seq", arguments: [kind])
            } else {
                try Row.fetchAll(db, sql: "SELECT kind, key, seq, body FROM ts_gov_documents ORDER BY kind, seq")
            }
            return rows.map(Self.document)
        }
    }

    /// The document of `kind` with the highest sequence (the rollout in force).
    public func latestGovernanceDocument(kind: String) throws -> StoredGovernanceDocument? {
        try writer.read { db in
            try Row.fetchOne(db, sql: "SELECT kind, key, seq, body FROM ts_gov_documents WHERE kind = ? ORDER BY seq DESC LIMIT 1",
                             arguments: [kind])
                .map(Self.document)
        }
    }

    /// The documents of `kind` with these keys: what one node's bundle needs, without
    /// reading every release ever published.
    public func governanceDocuments(kind: String, keys: [String]) throws -> [StoredGovernanceDocument] {
        guard !keys.isEmpty else { return [] }
        return try writer.read { db in
            try Row.fetchAll(db, sql: "SELECT kind, key, seq, body FROM ts_gov_documents WHERE kind = ? AND key IN (\(databaseQuestionMarks(count: keys.count))) ORDER BY seq",
                             arguments: StatementArguments([kind] + keys))
                .map(Self.document)
        }
    }

    /// Stores (or replaces) one document.
    public func putGovernanceDocument(_ document: StoredGovernanceDocument, nowMillis: UInt64 = WallClock.nowMillis()) throws {
        try writer.write { db in try Self.put(db, document, nowMillis: nowMillis) }
    }

    /// Stores one document unless one of its kind and key is stored; false when one is.
    public func insertGovernanceDocument(_ d: StoredGovernanceDocument, nowMillis: UInt64 = WallClock.nowMillis()) throws -> Bool {
        try writer.write { db in
            try db.execute(sql: """
                INSERT INTO ts_gov_documents (kind, key, seq, body, stored_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (kind, key) DO NOTHING
                """, arguments: [d.kind, d.key, d.seq, d.body, Int64(nowMillis)])
            return db.changesCount == 1
        }
    }

    /// Replaces every stored document of `kinds` (except the one `keep` names: a kind and
    /// key) with `documents`, in one transaction: what a node mirrors from its parent.
    ///
    /// Only that one kind's key is kept. Kept for every kind, a node whose id is a number
    /// ("2") never stored release 2 or rollout 2 (their keys are their numbers).
    public func replaceGovernanceDocuments(kinds: [String], keeping keep: (kind: String, key: String)?, with documents: [StoredGovernanceDocument],
                                           nowMillis: UInt64 = WallClock.nowMillis()) throws {
        try writer.write { db in
            for kind in kinds {
                if let keep, keep.kind == kind {
                    try db.execute(sql: "DELETE FROM ts_gov_documents WHERE kind = ? AND key != ?", arguments: [kind, keep.key])
                } else {
                    try db.execute(sql: "DELETE FROM ts_gov_documents WHERE kind = ?", arguments: [kind])
                }
            }
            for d in documents where !(d.kind == keep?.kind && d.key == keep?.key && kinds.contains(d.kind)) {
                try Self.put(db, d, nowMillis: nowMillis)
            }
        }
    }

    /// Changes whenever a governance document is stored: the hub's watcher wakes
    /// long-polls on it (documents published by another process, the admin CLI).
    public func governanceStamp() throws -> String {
        try writer.read { db in
            let row = try Row.fetchOne(db, sql: "SELECT COUNT(*) AS n, COALESCE(MAX(stored_at), 0) AS t, COALESCE(SUM(seq), 0) AS s FROM ts_gov_documents")
            return "\(row?["n"] as Int? ?? 0)/\(row?["t"] as Int64? ?? 0)/\(row?["s"] as Int64? ?? 0)"
        }
    }

    public func recordGovernanceApplication(_ a: GovernanceApplication) throws {
        try writer.write { db in
            try db.execute(sql: """
                INSERT INTO ts_gov_applied (release, overlay, rollout, state, message, effective, applied_at) VALUES (?, ?, ?, ?, ?, ?, ?)
                """, arguments: [a.release, a.overlay, a.rollout, a.state, a.message, a.effective, Int64(a.appliedAtMillis)])
        }
    }

    /// Every decision, oldest first.
    public func governanceHistory() throws -> [GovernanceApplication] {
        try writer.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM ts_gov_applied ORDER BY id").map(Self.application)
        }
    }

    /// The newest decision, if any.
    public func currentGovernance() throws -> GovernanceApplication? {
        try writer.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM ts_gov_applied ORDER BY id DESC LIMIT 1").map(Self.application)
        }
    }

    /// The newest decision that names a release the node runs (what it runs, even while a
    /// newer one is pending or was refused): an applied one, or a pending or refused one that
    /// carries the release in force with it (a node enrolled while a release waits runs what
    /// the rollouts before give it, and has no applied decision yet).
    public func appliedGovernance() throws -> GovernanceApplication? {
        try writer.read { db in try Self.appliedGovernance(db) }
    }

    static func appliedGovernance(_ db: Database) throws -> GovernanceApplication? {
        try Row.fetchOne(db, sql: "SELECT * FROM ts_gov_applied WHERE effective IS NOT NULL AND release IS NOT NULL ORDER BY id DESC LIMIT 1")
            .map(Self.application)
    }

    private static func document(_ row: Row) -> StoredGovernanceDocument {
        StoredGovernanceDocument(kind: row["kind"], key: row["key"], seq: row["seq"], body: row["body"])
    }

    private static func application(_ row: Row) -> GovernanceApplication {
        GovernanceApplication(release: row["release"], overlay: row["overlay"], rollout: row["rollout"], state: row["state"],
                              message: row["message"], effective: row["effective"],
                              appliedAtMillis: UInt64(row["applied_at"] as Int64))
    }

    private static func put(_ db: Database, _ d: StoredGovernanceDocument, nowMillis: UInt64) throws {
        try db.execute(sql: """
            INSERT INTO ts_gov_documents (kind, key, seq, body, stored_at) VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (kind, key) DO UPDATE SET seq = excluded.seq, body = excluded.body, stored_at = excluded.stored_at
            """, arguments: [d.kind, d.key, d.seq, d.body, Int64(nowMillis)])
    }
}

// Sync cursors (`ts_cursors`): named log positions, such as how far a pull or a push has
// got, stored in the same transaction as what they remember when given to `apply`.

import GRDB
import TiersyncCore

extension NodeStore {
    public func cursor(_ name: String) throws -> Int64 {
        try writer.read { db in try Int64.fetchOne(db.cachedStatement(sql: "SELECT value FROM ts_cursors WHERE name = ?"), arguments: [name]) ?? 0 }
    }

    public func setCursor(_ name: String, _ value: Int64) throws {
        try writer.write { db in try Self.setCursor(db, name, value) }
    }

    /// Moves cursor `name` from `expected` to `value`, only if it still holds `expected`
    /// (nothing moved it meanwhile). A push's acknowledgement so never overwrites the cursor a
    /// notice moved back while the push was on the wire (``takeUpstreamRefusals(_:from:nowMillis:)``):
    /// overwritten, the changes to send again were lost if the process stopped before the
    /// agent moved it back once more (helper 88). Returns whether it moved.
    @discardableResult
    public func advanceCursor(_ name: String, from expected: Int64, to value: Int64) throws -> Bool {
        try writer.write { db in
            let current = try Int64.fetchOne(db.cachedStatement(sql: "SELECT value FROM ts_cursors WHERE name = ?"), arguments: [name]) ?? 0
            guard current == expected else { return false }
            try Self.setCursor(db, name, value)
            return true
        }
    }

    static func setCursor(_ db: Database, _ name: String, _ value: Int64) throws {
        try db.cachedStatement(sql: "INSERT INTO ts_cursors (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value")
            .execute(arguments: [name, value])
    }
}

extension NodeStore {
    /// The oldest change the parent acknowledged (log position at most `acknowledgedThrough`)
    /// that it no longer holds, by what it says it `held` of each origin (highest sequence):
    /// a parent restored from an older backup lost what it acknowledged after the backup.
    /// Changes waiting in the retry list are left out (the parent refused them; they are
    /// re-sent from there), as are origins the parent did not answer for. Returns the log
    /// position to resume pushing after (one before that change), or nil when the parent
    /// holds everything it acknowledged.
    public func pushRewind(held: [String: Int64], acknowledgedThrough: Int64) throws -> Int64? {
        guard acknowledgedThrough > 0, !held.isEmpty else { return nil }
        return try writer.read { db in try pushRewind(db, held: held, acknowledgedThrough: acknowledgedThrough) }
    }

    /// ``pushRewind(held:acknowledgedThrough:)`` in a transaction already open.
    func pushRewind(_ db: Database, held: [String: Int64], acknowledgedThrough: Int64) throws -> Int64? {
        guard acknowledgedThrough > 0, !held.isEmpty else { return nil }
        do {
            var first: Int64?
            // One indexed range per origin (ts_changes_identity): a country asks for each
            // node of its subtree, a dealer for itself.
            for (origin, highest) in held {
                let seq = try Int64.fetchOne(db, sql: """
                    SELECT MIN(c.seq) FROM ts_changes c
                    WHERE c.origin = ? AND c.origin_seq > ? AND c.seq <= ? AND c.source != ?
                      AND NOT EXISTS (SELECT 1 FROM ts_push_retries p WHERE p.origin = c.origin AND p.origin_seq = c.origin_seq)
                    """, arguments: [origin, highest, acknowledgedThrough, ChangeSource.parent.rawValue])
                if let seq { first = min(first ?? seq, seq) }
            }
            // Entries folded into their records once acknowledged (NodeStore+FoldedState).
            if let folded = try lowestFoldedUnheld(db, held: held), folded <= acknowledgedThrough { first = min(first ?? folded, folded) }
            return first.map { $0 - 1 }
        }
    }
}

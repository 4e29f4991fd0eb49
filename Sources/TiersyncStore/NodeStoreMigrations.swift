import GRDB
import TiersyncCore

/// The engine's own tables. Domain tables are derived from the ``Schema`` (see
/// ``DomainTables``); these hold what the engine needs to sync them.
enum NodeStoreMigrations {
    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1-engine") { db in
            // Node identity, clock and settings, as key/value pairs.
            try db.execute(sql: """
                CREATE TABLE ts_meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);

                -- The change log: every change this node made or accepted, in the order it
                -- was applied here. (origin, origin_seq) is a change's identity everywhere.
                CREATE TABLE ts_changes (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    origin TEXT NOT NULL,
                    origin_seq INTEGER NOT NULL,
                    hlc INTEGER NOT NULL,
                    tbl TEXT NOT NULL,
                    record_id TEXT NOT NULL,
                    op TEXT NOT NULL,
                    fields TEXT NOT NULL,
                    prior TEXT,
                    source TEXT NOT NULL,        -- local | child | parent
                    received_from TEXT,          -- the node that handed it to us
                    received_at INTEGER NOT NULL -- ms since the epoch
                );
                CREATE UNIQUE INDEX ts_changes_identity ON ts_changes(origin, origin_seq);
                CREATE INDEX ts_changes_record ON ts_changes(tbl, record_id);

                -- Which nodes each logged change is routed to (after it was applied), so a
                -- hub can page through one node's scope with an index.
                CREATE TABLE ts_change_routes (
                    node TEXT NOT NULL,
                    seq INTEGER NOT NULL,
                    PRIMARY KEY (node, seq)
                ) WITHOUT ROWID;

                -- Per-record replication state: field versions and tombstone. The values
                -- themselves live in the domain table's row.
                CREATE TABLE ts_records (
                    tbl TEXT NOT NULL,
                    id TEXT NOT NULL,
                    versions TEXT NOT NULL,
                    tombstone TEXT,
                    route TEXT NOT NULL,
                    live INTEGER NOT NULL,
                    PRIMARY KEY (tbl, id)
                ) WITHOUT ROWID;

                -- Concurrent edits that lost, with both values and versions (and origins).
                CREATE TABLE ts_conflicts (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    tbl TEXT NOT NULL,
                    record_id TEXT NOT NULL,
                    field TEXT NOT NULL,
                    winner_value TEXT NOT NULL,
                    winner_version TEXT NOT NULL,
                    loser_value TEXT NOT NULL,
                    loser_version TEXT NOT NULL,
                    detected_at INTEGER NOT NULL
                );
                CREATE UNIQUE INDEX ts_conflicts_identity ON ts_conflicts(tbl, record_id, field, loser_version);

                -- Changes refused on arrival, with the reason. Their identity is remembered
                -- so a retried batch does not quarantine them twice.
                CREATE TABLE ts_quarantine (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    origin TEXT NOT NULL,
                    origin_seq INTEGER NOT NULL,
                    received_from TEXT NOT NULL,
                    received_at INTEGER NOT NULL,
                    code TEXT NOT NULL,
                    reason TEXT NOT NULL,
                    change TEXT NOT NULL
                );
                CREATE UNIQUE INDEX ts_quarantine_identity ON ts_quarantine(origin, origin_seq);

                -- Sync positions: what the parent acknowledged, where pulling resumes.
                CREATE TABLE ts_cursors (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL);
                """)
        }
        m.registerMigration("v2-retries-and-route-index") { db in
            try db.execute(sql: """
                -- Changes the parent refused for a reason that may pass later (clock skew,
                -- scope, schema version): re-sent with growing delays until accepted.
                CREATE TABLE ts_push_retries (
                    origin TEXT NOT NULL,
                    origin_seq INTEGER NOT NULL,
                    code TEXT NOT NULL,
                    reason TEXT NOT NULL,
                    attempts INTEGER NOT NULL,
                    next_at INTEGER NOT NULL,
                    PRIMARY KEY (origin, origin_seq)
                ) WITHOUT ROWID;
                -- Lets a feed over many nodes walk the log in order and test membership.
                CREATE INDEX ts_change_routes_seq ON ts_change_routes(seq, node);
                """)
        }
        m.registerMigration("v3-trail") { db in
            // The hops a received change took to get here (JSON [{node, at}]), for tracing.
            try db.execute(sql: "ALTER TABLE ts_changes ADD COLUMN trail TEXT")
        }
        m.registerMigration("v4-governance") { db in
            try db.execute(sql: """
                -- Signed governance documents as received (or, at HQ, as published): releases
                -- by version, rollouts by sequence, overlays by country. `body` is the
                -- signed envelope's JSON, kept byte for byte.
                CREATE TABLE ts_gov_documents (
                    kind TEXT NOT NULL,
                    key TEXT NOT NULL,
                    seq INTEGER NOT NULL,
                    body TEXT NOT NULL,
                    stored_at INTEGER NOT NULL,
                    PRIMARY KEY (kind, key)
                ) WITHOUT ROWID;
                -- What this node applied, newest last: the audit trail of its governance.
                CREATE TABLE ts_gov_applied (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    release INTEGER,
                    overlay TEXT,
                    rollout INTEGER,
                    state TEXT NOT NULL,
                    message TEXT,
                    effective TEXT,
                    applied_at INTEGER NOT NULL
                );
                """)
        }
        return m
    }
}

/// Creates and widens the domain tables from the schema: a table or field added to the
/// schema appears on the next open; nothing is ever dropped.
enum DomainTables {
    static func ensure(_ schema: Schema, in db: Database) throws {
        for table in schema.tables {
            let name = table.name.quotedDatabaseIdentifier
            if try db.tableExists(table.name) {
                let existing = Set(try db.columns(in: table.name).map(\.name))
                for field in table.fields where !existing.contains(field.name) {
                    try db.execute(sql: "ALTER TABLE \(name) ADD COLUMN \(field.name.quotedDatabaseIdentifier) \(field.type.sqlType)")
                }
            } else {
                let columns = table.fields.map { "\($0.name.quotedDatabaseIdentifier) \($0.type.sqlType)" }
                try db.execute(sql: "CREATE TABLE \(name) (id TEXT PRIMARY KEY NOT NULL, \(columns.joined(separator: ", ")))")
            }
        }
    }
}

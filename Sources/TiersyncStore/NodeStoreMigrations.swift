import GRDB
import TiersyncStorage
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
        m.registerMigration("v5-tombstones") { db in
            // Replication state moved into the domain rows (see ``DomainTables``); deleted
            // records, which have no domain row, keep theirs here. The data moves when the
            // domain tables are next ensured, which knows the schema.
            try db.execute(sql: """
                CREATE TABLE ts_tombstones (
                    tbl TEXT NOT NULL,
                    id TEXT NOT NULL,
                    versions TEXT NOT NULL,
                    tombstone TEXT NOT NULL,
                    route TEXT NOT NULL,
                    PRIMARY KEY (tbl, id)
                ) WITHOUT ROWID;
                """)
        }
        m.registerMigration("v6-route-entries") { db in
            // Where a logged change routed a record held here to a node it was not routed to
            // before: that node's feed delivers the record's earlier changes with this one
            // (`route_before`: the nodes it was routed to until then, to tell whether a
            // subtree already had it). See ``NodeStore/feed(after:scope:excluding:limit:)``.
            try db.execute(sql: """
                CREATE TABLE ts_route_entries (
                    node TEXT NOT NULL,
                    seq INTEGER NOT NULL,
                    tbl TEXT NOT NULL,
                    record_id TEXT NOT NULL,
                    route_before TEXT NOT NULL,
                    PRIMARY KEY (node, seq)
                ) WITHOUT ROWID;
                """)
        }
        m.registerMigration("v7-governance-generation") { db in
            // A counter every change to what a write policy may derive from governance
            // moves on (documents, decisions, the release key, the highest rollout seen, the
            // parent), kept by triggers so no writer — this process, another, an older
            // build — can forget it: a policy's cache checks one row per commit
            // (``LocalWriteContext/governanceStamp()``) instead of aggregating the tables.
            try db.execute(sql: """
                CREATE TABLE ts_gov_generation (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL);
                INSERT INTO ts_gov_generation (id, n) VALUES (1, 0);
                CREATE TRIGGER ts_gov_documents_ins AFTER INSERT ON ts_gov_documents BEGIN UPDATE ts_gov_generation SET n = n + 1; END;
                CREATE TRIGGER ts_gov_documents_upd AFTER UPDATE ON ts_gov_documents BEGIN UPDATE ts_gov_generation SET n = n + 1; END;
                CREATE TRIGGER ts_gov_documents_del AFTER DELETE ON ts_gov_documents BEGIN UPDATE ts_gov_generation SET n = n + 1; END;
                CREATE TRIGGER ts_gov_applied_ins AFTER INSERT ON ts_gov_applied BEGIN UPDATE ts_gov_generation SET n = n + 1; END;
                CREATE TRIGGER ts_gov_applied_upd AFTER UPDATE ON ts_gov_applied BEGIN UPDATE ts_gov_generation SET n = n + 1; END;
                CREATE TRIGGER ts_gov_applied_del AFTER DELETE ON ts_gov_applied BEGIN UPDATE ts_gov_generation SET n = n + 1; END;
                CREATE TRIGGER ts_meta_gov_ins AFTER INSERT ON ts_meta WHEN NEW.key LIKE 'governance.%' OR NEW.key = 'parent'
                    BEGIN UPDATE ts_gov_generation SET n = n + 1; END;
                CREATE TRIGGER ts_meta_gov_upd AFTER UPDATE ON ts_meta
                    WHEN NEW.key LIKE 'governance.%' OR NEW.key = 'parent' OR OLD.key LIKE 'governance.%' OR OLD.key = 'parent'
                    BEGIN UPDATE ts_gov_generation SET n = n + 1; END;
                CREATE TRIGGER ts_meta_gov_del AFTER DELETE ON ts_meta WHEN OLD.key LIKE 'governance.%' OR OLD.key = 'parent'
                    BEGIN UPDATE ts_gov_generation SET n = n + 1; END;
                """)
        }
        m.registerMigration("v8-erasure") { db in
            // Erasure (docs/PRIVACY.md, `NodeStore+Erasure`): each request done here, with
            // what it erased and whether the files are clean yet; the records it erased (ids
            // and last route only: a later change of one is refused); the changes refused
            // since, by identity (never their values).
            try db.execute(sql: """
                CREATE TABLE ts_erasures (
                    erasure_id TEXT PRIMARY KEY NOT NULL,
                    subject_table TEXT NOT NULL,
                    subject_id TEXT NOT NULL,
                    erased_at INTEGER NOT NULL,
                    records INTEGER NOT NULL,
                    log_entries INTEGER NOT NULL,
                    unsent_dropped INTEGER NOT NULL,
                    digest TEXT NOT NULL,
                    files_clean_at INTEGER,
                    acked_refused INTEGER NOT NULL DEFAULT -1
                ) WITHOUT ROWID;
                CREATE TABLE ts_erased_records (
                    tbl TEXT NOT NULL,
                    id TEXT NOT NULL,
                    erasure_id TEXT NOT NULL,
                    route TEXT NOT NULL,
                    PRIMARY KEY (tbl, id)
                ) WITHOUT ROWID;
                CREATE TABLE ts_erased_refusals (
                    origin TEXT NOT NULL,
                    origin_seq INTEGER NOT NULL,
                    erasure_id TEXT NOT NULL,
                    refused_at INTEGER NOT NULL,
                    PRIMARY KEY (origin, origin_seq)
                ) WITHOUT ROWID;
                """)
            // With `secure_delete` on from a store's first write, deleted content never stays
            // in its pages; a store that held data before this version may, and is vacuumed
            // once at its first erasure (``NodeStore/finishErasures()``).
            if try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM ts_changes") == 0 {
                try db.execute(sql: "INSERT OR REPLACE INTO ts_meta (key, value) VALUES (?, '1')", arguments: [MetaKey.scrubbed.rawValue])
            }
        }
        m.registerMigration("v9-retention") { db in
            // Bounded storage (docs/PRIVACY.md, `NodeStore+Retention`): how far each child
            // fed here has pulled (its acknowledgement, written in batches); per origin the
            // highest sequence purged from the log (what the origin resumes after); the
            // records a re-bootstrapping node has not seen again yet (what is left when its
            // pull catches up was deleted upstream).
            try db.execute(sql: """
                CREATE TABLE ts_acks (
                    node TEXT PRIMARY KEY NOT NULL,
                    pulled_through INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL
                ) WITHOUT ROWID;
                CREATE TABLE ts_purged (
                    origin TEXT PRIMARY KEY NOT NULL,
                    through_seq INTEGER NOT NULL
                ) WITHOUT ROWID;

                CREATE TABLE ts_rebootstrap (
                    tbl TEXT NOT NULL,
                    id TEXT NOT NULL,
                    PRIMARY KEY (tbl, id)
                ) WITHOUT ROWID;
                """)
        }
        m.registerMigration("v10-purged-ranges") { db in
            // The sequences of each child origin purged from the log, as ranges: a redelivery
            // inside one is a duplicate; a sequence in a gap never arrived and is judged as new.
            // A store that purged before this knew only the highest sequence: that history is
            // taken as one range (as it was judged then).
            try db.execute(sql: """
                CREATE TABLE ts_purged_ranges (
                    origin TEXT NOT NULL,
                    lo INTEGER NOT NULL,
                    hi INTEGER NOT NULL,
                    PRIMARY KEY (origin, lo)
                ) WITHOUT ROWID;
                CREATE UNIQUE INDEX ts_purged_ranges_hi ON ts_purged_ranges (origin, hi);
                INSERT INTO ts_purged_ranges (origin, lo, hi) SELECT origin, 1, through_seq FROM ts_purged WHERE through_seq >= 1;
                """)
        }
        m.registerMigration("v11-compact-pending") { db in
            // Records with a log entry compaction kept for a reason that passes (not yet
            // acknowledged upward, not yet pulled by a child): the next pass looks at them
            // again, without rewinding to the oldest such entry (NodeStore+Retention).
            try db.execute(sql: """
                CREATE TABLE ts_compact_pending (
                    tbl TEXT NOT NULL,
                    id TEXT NOT NULL,
                    PRIMARY KEY (tbl, id)
                ) WITHOUT ROWID;
                INSERT INTO ts_cursors (name, value) VALUES ('compact.from', 0)
                  ON CONFLICT(name) DO UPDATE SET value = 0;
                """)
        }
        m.registerMigration("v12-folded-state") { db in
            // Log entries folded into their records (NodeStore+FoldedState; the domain
            // tables' `ts_folded` columns, added by `DomainTables.ensure`): the next pass
            // looks at every record once, to fold what it can.
            try db.execute(sql: "UPDATE ts_cursors SET value = 0 WHERE name = 'compact.from'")
        }
        m.registerMigration("v13-log-histories") { db in
            // The histories of the change log this store serves to its children, oldest
            // first (NodeStore+LogHistory): `floor` is the log's highest position when the
            // history began.
            try db.execute(sql: """
                CREATE TABLE ts_log_histories (
                    n INTEGER PRIMARY KEY AUTOINCREMENT,
                    id TEXT NOT NULL UNIQUE,
                    floor INTEGER NOT NULL,
                    begun_at INTEGER NOT NULL
                )
                """)
        }
        m.registerMigration("v14-quarantine-quota") { db in
            // The quarantine's bounds (``QuarantineQuota``), enforced by the database on every
            // path that quarantines: bytes kept per sender, kept by triggers, and a trigger
            // that skips (RAISE(IGNORE)) and counts a new entry past either bound.
            let size: (String) -> String = { row in "length(CAST(\(row).change AS BLOB)) + length(CAST(\(row).reason AS BLOB))" }
            let setting: (QuarantineQuota.SettingKey, Int64) -> String = { key, fallback in
                "COALESCE((SELECT CAST(value AS INTEGER) FROM ts_meta WHERE key = '\(key.rawValue)'), \(fallback))"
            }
            // An unkept refusal still counts as held (`highestSeqs`), as a kept one does: a
            // node whose newest change was refused and not kept would otherwise be told its
            // parent lost it, and send it again at every push. One row per origin.
            let (lo, hi) = (Change.sequenceRange.lowerBound, Change.sequenceRange.upperBound)
            let noteUnkept = """
                INSERT INTO ts_quarantine_unkept (origin, max_seq) SELECT NEW.origin, NEW.origin_seq WHERE NEW.origin_seq BETWEEN \(lo) AND \(hi)
                    ON CONFLICT (origin) DO UPDATE SET max_seq = MAX(max_seq, excluded.max_seq);
                """
            // What either quota trigger does past a bound: count it, note it as held, skip the row.
            let skipAndCount = """
                BEGIN
                  INSERT INTO ts_meta (key, value) VALUES ('\(QuarantineQuota.SettingKey.unkept.rawValue)', '1')
                    ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1;
                  \(noteUnkept)
                  SELECT RAISE(IGNORE);
                END;
                """
            try db.execute(sql: """
                CREATE TABLE ts_quarantine_unkept (origin TEXT PRIMARY KEY NOT NULL, max_seq INTEGER NOT NULL) WITHOUT ROWID;
                CREATE TABLE ts_quarantine_usage (
                    received_from TEXT PRIMARY KEY NOT NULL,
                    entries INTEGER NOT NULL,
                    bytes INTEGER NOT NULL
                ) WITHOUT ROWID;
                INSERT INTO ts_quarantine_usage (received_from, entries, bytes)
                  SELECT received_from, COUNT(*), SUM(\(size("ts_quarantine"))) FROM ts_quarantine GROUP BY received_from;
                CREATE TRIGGER ts_quarantine_quota BEFORE INSERT ON ts_quarantine
                WHEN NOT EXISTS (SELECT 1 FROM ts_quarantine WHERE origin = NEW.origin AND origin_seq = NEW.origin_seq)
                  AND (COALESCE((SELECT bytes FROM ts_quarantine_usage WHERE received_from = NEW.received_from), 0) + \(size("NEW"))
                         > \(setting(.maxBytesPerSender, QuarantineQuota.default.maxBytesPerSender))
                       OR COALESCE((SELECT SUM(bytes) FROM ts_quarantine_usage), 0) + \(size("NEW"))
                         > \(setting(.maxBytes, QuarantineQuota.default.maxBytes)))
                \(skipAndCount)
                -- A kept change replaced (a retried refusal, or one refused again for another
                -- reason) may not grow past the bounds either: else entries kept small could be
                -- replaced by large ones. Past them, the entry kept stays as it was.
                CREATE TRIGGER ts_quarantine_quota_update BEFORE UPDATE ON ts_quarantine
                WHEN (\(size("NEW")) > CASE WHEN OLD.received_from = NEW.received_from THEN \(size("OLD")) ELSE 0 END
                      AND COALESCE((SELECT bytes FROM ts_quarantine_usage WHERE received_from = NEW.received_from), 0) + \(size("NEW"))
                          - CASE WHEN OLD.received_from = NEW.received_from THEN \(size("OLD")) ELSE 0 END
                        > \(setting(.maxBytesPerSender, QuarantineQuota.default.maxBytesPerSender)))
                  OR (\(size("NEW")) > \(size("OLD"))
                      AND COALESCE((SELECT SUM(bytes) FROM ts_quarantine_usage), 0) + \(size("NEW")) - (\(size("OLD")))
                        > \(setting(.maxBytes, QuarantineQuota.default.maxBytes)))
                \(skipAndCount)
                CREATE TRIGGER ts_quarantine_usage_insert AFTER INSERT ON ts_quarantine BEGIN
                  INSERT INTO ts_quarantine_usage (received_from, entries, bytes) VALUES (NEW.received_from, 1, \(size("NEW")))
                    ON CONFLICT (received_from) DO UPDATE SET entries = entries + 1, bytes = bytes + excluded.bytes;
                END;
                CREATE TRIGGER ts_quarantine_usage_delete AFTER DELETE ON ts_quarantine BEGIN
                  UPDATE ts_quarantine_usage SET entries = entries - 1, bytes = bytes - (\(size("OLD"))) WHERE received_from = OLD.received_from;
                  DELETE FROM ts_quarantine_usage WHERE received_from = OLD.received_from AND entries <= 0;
                END;
                CREATE TRIGGER ts_quarantine_usage_update AFTER UPDATE ON ts_quarantine BEGIN
                  UPDATE ts_quarantine_usage SET entries = entries - 1, bytes = bytes - (\(size("OLD"))) WHERE received_from = OLD.received_from;
                  INSERT INTO ts_quarantine_usage (received_from, entries, bytes) VALUES (NEW.received_from, 1, \(size("NEW")))
                    ON CONFLICT (received_from) DO UPDATE SET entries = entries + 1, bytes = bytes + excluded.bytes;
                  DELETE FROM ts_quarantine_usage WHERE received_from = OLD.received_from AND entries <= 0;
                END;
                """)
        }
        m.registerMigration("v15-erasure-requested") { db in
            // 0: the records of changes the parent refused as erased, erased by this node
            // alone (``NodeStore/eraseRefused(_:nowMillis:)``): not acknowledged to HQ.
            try db.execute(sql: "ALTER TABLE ts_erasures ADD COLUMN requested INTEGER NOT NULL DEFAULT 1")
        }
        m.registerMigration("v16-upstream-refusals") { db in
            // Changes of children this node relayed and dropped when its parent refused them
            // as outside their maker's scope: each passed down to the child it came from
            // (`via`) when it asks (`GET /v1/refusals`, NodeStore+UpstreamRefusals). At the
            // maker, the notices it took are set aside in its quarantine instead. Numbered
            // per child (`number`): one numbering for all would tell a child how many its
            // siblings got.
            try db.execute(sql: """
                CREATE TABLE ts_upstream_refusals (
                  via TEXT NOT NULL,
                  number INTEGER NOT NULL,
                  origin TEXT NOT NULL,
                  origin_seq INTEGER NOT NULL,
                  refusal TEXT NOT NULL,
                  refused_at INTEGER NOT NULL,
                  PRIMARY KEY (via, number),
                  UNIQUE (origin, origin_seq)
                );
                """)
        }
        return m
    }
}

/// Creates and widens the domain tables from the schema: a table or field added to the
/// schema appears on the next open; nothing is ever dropped.
///
/// Each domain row also carries its record's replication state: `ts_versions` (the field
/// versions, canonical JSON grouped by version: `CanonicalJSON.groupedVersions`), `ts_tombstone` (the version of a delete it outlived, if any)
/// and `ts_route` (the nodes it is routed to). Keeping them in
/// the row instead of a table of their own saves a B-tree insert per change, about a
/// quarter of what SQLite spends on a new record (BENCHMARKS.md, "storage layout").
/// A deleted record has no domain row; its state is kept in `ts_tombstones`.
enum DomainTables {
    /// The engine's columns in every domain table. Schema fields may not use the prefix.
    static let versionsColumn = "ts_versions"
    static let tombstoneColumn = "ts_tombstone"
    static let routeColumn = "ts_route"
    /// The identities of the record's folded log entries (NodeStore+FoldedState), and its
    /// position in the feed (indexed where set).
    static let foldedColumn = "ts_folded"
    static let foldedAtColumn = "ts_folded_at"
    /// The partial index on `ts_folded_at` the feed walks, created when compaction first
    /// folds a record of the table (a table never folded costs a store no page for it).
    static func foldedIndex(_ table: String) -> String { "\(table)\(foldedIndexSuffix)" }
    static let foldedIndexSuffix = "_ts_folded_at"
    static let reservedPrefix = "ts_"
    /// True of a domain row the store wrote: a row written around it (plain SQL) has no
    /// versions, and the engine treats its record as not held.
    static let heldByStore = "\(versionsColumn) IS NOT NULL"

    static func ensure(_ schema: Schema, in db: Database) throws {
        for table in schema.tables {
            if let field = table.fields.first(where: { $0.name.hasPrefix(reservedPrefix) || $0.name == "id" }) {
                throw StoreError.invalidArgument("field '\(table.name).\(field.name)': 'id' and names starting with '\(reservedPrefix)' are the engine's")
            }
            let name = table.name.quotedDatabaseIdentifier
            if try db.tableExists(table.name) {
                let existing = Set(try db.columns(in: table.name).map(\.name))
                for field in table.fields where !existing.contains(field.name) {
                    try db.execute(sql: "ALTER TABLE \(name) ADD COLUMN \(field.name.quotedDatabaseIdentifier) \(field.type.sqlType)")
                }
                for column in [versionsColumn, tombstoneColumn, routeColumn, foldedColumn] where !existing.contains(column) {
                    try db.execute(sql: "ALTER TABLE \(name) ADD COLUMN \(column) TEXT")
                }
                if !existing.contains(foldedAtColumn) {
                    try db.execute(sql: "ALTER TABLE \(name) ADD COLUMN \(foldedAtColumn) INTEGER")
                }
            } else {
                let columns = table.fields.map { "\($0.name.quotedDatabaseIdentifier) \($0.type.sqlType)" }
                try db.execute(sql: """
                    CREATE TABLE \(name) (id TEXT PRIMARY KEY NOT NULL, \(columns.joined(separator: ", ")), \(versionsColumn) TEXT, \(tombstoneColumn) TEXT, \(routeColumn) TEXT, \(foldedColumn) TEXT, \(foldedAtColumn) INTEGER)
                    """)
            }

        }
        try foldReplicationRows(schema, in: db)
    }

    /// Stores written before v5 kept every record's replication state in `ts_records`:
    /// live records' state moves into their domain rows, deleted ones' into
    /// `ts_tombstones`, and the old table goes. Runs in the caller's transaction, so a
    /// store is either wholly converted or untouched.
    private static func foldReplicationRows(_ schema: Schema, in db: Database) throws {
        guard try db.tableExists("ts_records") else { return }
        // Correlated subqueries rather than UPDATE … FROM, which needs SQLite 3.33. Every
        // table a store ever had is in its schema (tables are never removed from it).
        for table in schema.tables {
            let name = table.name.quotedDatabaseIdentifier
            try db.execute(sql: """
                UPDATE \(name) SET (\(versionsColumn), \(tombstoneColumn), \(routeColumn)) =
                    (SELECT r.versions, r.tombstone, r.route FROM ts_records r WHERE r.tbl = ?1 AND r.id = \(name).id)
                WHERE id IN (SELECT id FROM ts_records WHERE tbl = ?1)
                """, arguments: [table.name])
        }
        try db.execute(sql: """
            INSERT OR REPLACE INTO ts_tombstones (tbl, id, versions, tombstone, route)
            SELECT tbl, id, versions, tombstone, route FROM ts_records WHERE live = 0 AND tombstone IS NOT NULL
            """)
        try db.execute(sql: "DROP TABLE ts_records")
    }
}

import Crypto
import Foundation
import Logging
import PostgresNIO
import TiersyncCore
import TiersyncStorage

/// Where one tenant's data lives in PostgreSQL: a schema of its own (`t_<tenant>`).
///
/// **Why a schema per tenant, not a tenant column with row-level security.** Every
/// statement a tenant store runs names its tenant's schema, fixed when the store is made
/// for the authenticated principal's tenant; no statement of the engine names two schemas,
/// so a request cannot reach another tenant's rows even through a bug in a `WHERE`
/// clause, which is what RLS would otherwise have to catch on every row. It also keeps
/// each tenant's indexes small (a large tenant does not slow a small one's lookups),
/// lets an operator dump, restore or drop one tenant (`pg_dump -n t_acme`), and mirrors
/// the SQLite engine's file per tenant, so `migrate-tenant` moves one unit to one unit.
/// The cost is one set of tables per tenant, fine for the hundreds of tenants a hub serves.
public struct PostgresTenantSchema: Sendable, Hashable {
    public let tenant: TenantID
    /// The schema's name: `t_` and the tenant id when that fits PostgreSQL's 63 bytes,
    /// else `t_`, the id's first 40 bytes, `#` and a digest of the whole id. No tenant id
    /// holds `#`, so no short id's name is a long id's: joined with `_`, a 57-byte id spelled
    /// as a longer one's shortened name shared its schema, and each tenant read the other's
    /// records.
    public let name: String
    /// For an id longer than 60 bytes, the name its schema had before `#` (joined with `_`),
    /// and the shorter tenant id that name also belonged to: ``migrate(_:root:logger:)``
    /// renames such a schema unless that other tenant exists.
    let legacy: (name: String, lookalike: String)?

    public static func == (l: PostgresTenantSchema, r: PostgresTenantSchema) -> Bool { l.tenant == r.tenant }
    public func hash(into hasher: inout Hasher) { hasher.combine(tenant) }

    public init(tenant: TenantID) {
        self.tenant = tenant
        let id = tenant.rawValue
        if id.utf8.count <= 60 {
            name = "t_" + id
            legacy = nil
        } else {
            let digest = SHA256.hash(data: Data(id.utf8)).map { String(format: "%02x", $0) }.joined()
            name = "t_" + id.prefix(40) + "#" + digest.prefix(16)
            let lookalike = id.prefix(40) + "_" + digest.prefix(16)
            legacy = (name: "t_" + lookalike, lookalike: String(lookalike))
        }
    }

    /// `table` qualified by the schema, quoted (tenant ids may hold `-` and `.`, never `"`).
    public func qualified(_ table: Table) -> String { "\"\(name)\".\(table.rawValue)" }

    /// The engine's tables in a tenant's schema.
    public enum Table: String, CaseIterable, Sendable {
        case meta, head, changes, changeRoutes = "change_routes", routeEntries = "route_entries", records, conflicts, quarantine
        case governanceDocuments = "gov_documents"
        case hubClock = "hub_clock"
        /// Erasure (docs/PRIVACY.md; PostgresTenantStore+Erasure): what each erasure did
        /// here, the records it erased (ids and last routes, no values: later changes of them
        /// are refused), and the refusals counted since, by identity.
        case erasures, erasedRecords = "erased_records", erasedRefusals = "erased_refusals"
        /// Bounded storage (docs/PRIVACY.md; PostgresTenantStore+Retention): how far each
        /// child has pulled, the highest purged sequence per origin and the exact purged
        /// sequences as ranges (a redelivery of a purged change is a duplicate), and the
        /// records a compaction pass held entries of.
        case acks, purged, purgedRanges = "purged_ranges", compactPending = "compact_pending"
        /// The log's histories, oldest first (PostgresTenantStore+LogHistory).
        case logHistories = "log_histories"
        /// Bytes of refused changes kept per sender, kept by triggers (``QuarantineQuota``),
        /// and per origin the highest sequence refused and not kept (it counts as held).
        case quarantineUsage = "quarantine_usage", quarantineUnkept = "quarantine_unkept"
    }

    /// The schema version this code writes; a schema newer than it is refused. 2: erasure
    /// (its tables, `head.erasures`, and a `ts_apply_push` that checks them): a process of
    /// version 1 would write around an erasure, so it is refused at start, and the old
    /// function is dropped, so one still running fails its pushes instead (its agents retry
    /// on the other processes). 3: bounded storage (the acknowledgement ledger, purged
    /// identities, `changes.routed`, and a `ts_apply_push` that counts purged identities as
    /// held): a process of version 2 would apply a redelivery of a purged change again. 4:
    /// folded entries (`records.folded`, `folded_at`): a process of version 3 would serve a
    /// feed from the log alone, without the entries folded into their records. 5: log
    /// histories (`log_histories`, and feed functions naming the newest): a process of
    /// version 4 would number changes without beginning a history and reinstall feed
    /// functions naming none, so agents could no longer tell a restored log.
    /// Upgrade every process of a hub together.
    static let version = 5

    /// A long tenant id's schema made under its old name (``legacy``) takes the new one, so its
    /// data is found again. Refused when the shorter tenant that old name also named exists:
    /// both tenants then wrote into that one schema, which only an operator can separate.
    private func adoptLegacySchema(_ connection: PostgresConnection, logger: Logger) async throws {
        guard let legacy else { return }
        let found = try await connection.query("""
            SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = \(legacy.name)), EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = \(name)),
                   to_regclass('tiersync_catalog.tenants') IS NOT NULL
            """, logger: logger).collect()
        guard let row = found.first else { return }
        let (legacyExists, currentExists, hasCatalog) = try row.decode((Bool, Bool, Bool).self)
        guard legacyExists, !currentExists else { return }
        if hasCatalog {
            let shared = try await connection.query("SELECT EXISTS (SELECT 1 FROM tiersync_catalog.tenants WHERE id = \(legacy.lookalike))", logger: logger).collect()
            if try shared.first?.decode(Bool.self) == true {
                throw PostgresStoreError("tenant '\(tenant)' and tenant '\(legacy.lookalike)' both used schema \(legacy.name) (a naming fault fixed on 2026-12-06): separate their rows by hand before serving either")
            }
        }
        logger.notice("renaming a long tenant id's schema to its new name", metadata: ["from": "\(legacy.name)", "to": "\(name)"])
        _ = try await connection.query(PostgresQuery(unsafeSQL: "ALTER SCHEMA \"\(legacy.name)\" RENAME TO \"\(name)\""), logger: logger).collect()
    }

    /// Creates the schema and its tables unless they exist. Several processes may start at
    /// once: a transaction-level advisory lock on the schema's name makes one create and the
    /// others find it done.
    func migrate(_ client: PostgresClient, root: NodeID, logger: Logger) async throws {
        let q = { (t: Table) in self.qualified(t) }
        try await client.withTransaction(logger: logger) { connection in
            _ = try await connection.query("SELECT pg_advisory_xact_lock(hashtext(\(name)))", logger: logger).collect()
            try await adoptLegacySchema(connection, logger: logger)
            _ = try await connection.query(PostgresQuery(unsafeSQL: "CREATE SCHEMA IF NOT EXISTS \"\(name)\""), logger: logger).collect()
            let statements = [
                // Settings and identity, as key/value pairs (as ts_meta in SQLite).
                "CREATE TABLE IF NOT EXISTS \(q(.meta)) (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
                // The newest log position. Every push locks this one row (FOR UPDATE) before
                // numbering its changes, so positions are handed out and committed in order,
                // across every hub process: a feed reader never sees position n+1 before n.
                // `erasures` counts the erasures done here: a push that read before one checks
                // under the lock that none happened since (a dialogue of a customer erased
                // meanwhile would otherwise slip in as a new record).
                "CREATE TABLE IF NOT EXISTS \(q(.head)) (id INTEGER PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL, erasures BIGINT NOT NULL DEFAULT 0)",
                "INSERT INTO \(q(.head)) (id, seq) VALUES (1, 0) ON CONFLICT DO NOTHING",
                // The change log. (origin, origin_seq) is a change's identity: the constraint,
                // not a process's memory, makes each change apply once.
                """
                CREATE TABLE IF NOT EXISTS \(q(.changes)) (
                    seq BIGINT PRIMARY KEY, origin TEXT NOT NULL, origin_seq BIGINT NOT NULL, hlc BIGINT NOT NULL,
                    tbl TEXT NOT NULL, record_id TEXT NOT NULL, op TEXT NOT NULL, fields TEXT NOT NULL, prior TEXT,
                    source TEXT NOT NULL, received_from TEXT, received_at BIGINT NOT NULL, trail TEXT,
                    UNIQUE (origin, origin_seq))
                """,
                // Checked first, as `records_tombstones` below: CREATE INDEX locks the table.
                """
                DO $do$ BEGIN
                  IF to_regclass('"\(name)".changes_record') IS NULL THEN
                    CREATE INDEX changes_record ON \(q(.changes)) (tbl, record_id, seq);
                  END IF;
                END $do$
                """,
                "CREATE TABLE IF NOT EXISTS \(q(.changeRoutes)) (node TEXT NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (node, seq))",
                // No (seq, node) index as SQLite has: a subtree's feed tests membership with
                // `node = ANY(…) AND seq = …`, which the primary key answers.
                """
                CREATE TABLE IF NOT EXISTS \(q(.routeEntries)) (
                    node TEXT NOT NULL, seq BIGINT NOT NULL, tbl TEXT NOT NULL, record_id TEXT NOT NULL, route_before TEXT NOT NULL,
                    PRIMARY KEY (node, seq, tbl, record_id))
                """,
                // Records: every table's in one, values as canonical JSON (the hub serves the
                // log, and reads records only to merge; nodes keep the queryable tables).
                """
                CREATE TABLE IF NOT EXISTS \(q(.records)) (
                    tbl TEXT NOT NULL, id TEXT NOT NULL, fields TEXT NOT NULL, versions TEXT NOT NULL, tombstone TEXT,
                    route TEXT NOT NULL, live BOOLEAN NOT NULL, PRIMARY KEY (tbl, id))
                """,
                """
                CREATE TABLE IF NOT EXISTS \(q(.conflicts)) (
                    id BIGSERIAL PRIMARY KEY, tbl TEXT NOT NULL, record_id TEXT NOT NULL, field TEXT NOT NULL,
                    winner_value TEXT NOT NULL, winner_version TEXT NOT NULL, loser_value TEXT NOT NULL, loser_version TEXT NOT NULL,
                    detected_at BIGINT NOT NULL, UNIQUE (tbl, record_id, field, loser_version))
                """,
                """
                CREATE TABLE IF NOT EXISTS \(q(.quarantine)) (
                    id BIGSERIAL PRIMARY KEY, origin TEXT NOT NULL, origin_seq BIGINT NOT NULL, received_from TEXT NOT NULL,
                    received_at BIGINT NOT NULL, code TEXT NOT NULL, reason TEXT NOT NULL, change TEXT NOT NULL,
                    UNIQUE (origin, origin_seq))
                """,
                """
                CREATE TABLE IF NOT EXISTS \(q(.governanceDocuments)) (
                    kind TEXT NOT NULL, key TEXT NOT NULL, seq BIGINT NOT NULL, body TEXT NOT NULL, stored_at BIGINT NOT NULL,
                    PRIMARY KEY (kind, key))
                """,
                // The hub's own writes (PostgresTenantStore+HubWrites): the last sequence and
                // HLC handed out, one row, so processes writing at once never share either.
                "CREATE TABLE IF NOT EXISTS \(q(.hubClock)) (id INTEGER PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL, hlc BIGINT NOT NULL)",
                // Erasures done here. `acked_refused` is the refusal count the hub's last
                // acknowledgement carried (-1: none written yet).
                """
                CREATE TABLE IF NOT EXISTS \(q(.erasures)) (
                    erasure_id TEXT PRIMARY KEY, subject_table TEXT NOT NULL, subject_id TEXT NOT NULL, erased_at BIGINT NOT NULL,
                    records INTEGER NOT NULL, log_entries INTEGER NOT NULL, digest TEXT NOT NULL, acked_refused INTEGER NOT NULL DEFAULT -1)
                """,
                "CREATE TABLE IF NOT EXISTS \(q(.erasedRecords)) (tbl TEXT NOT NULL, id TEXT NOT NULL, erasure_id TEXT NOT NULL, route TEXT NOT NULL, PRIMARY KEY (tbl, id))",
                """
                CREATE TABLE IF NOT EXISTS \(q(.erasedRefusals)) (
                    origin TEXT NOT NULL, origin_seq BIGINT NOT NULL, erasure_id TEXT NOT NULL, refused_at BIGINT NOT NULL, PRIMARY KEY (origin, origin_seq))
                """,
                // A schema made before erasure: the column added once. Checked first, since
                // ALTER TABLE locks the table even when it changes nothing, and every process
                // runs this at start while others push (a deadlock otherwise).
                """
                DO $do$ BEGIN
                  IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                                 WHERE table_schema = '\(name)' AND table_name = 'head' AND column_name = 'erasures') THEN
                    ALTER TABLE \(q(.head)) ADD COLUMN erasures BIGINT NOT NULL DEFAULT 0;
                  END IF;
                END $do$
                """,
                // Bounded storage (PostgresTenantStore+Retention).
                "CREATE TABLE IF NOT EXISTS \(q(.acks)) (node TEXT PRIMARY KEY, pulled_through BIGINT NOT NULL, updated_at BIGINT NOT NULL)",
                "CREATE TABLE IF NOT EXISTS \(q(.purged)) (origin TEXT PRIMARY KEY, through_seq BIGINT NOT NULL)",
                "CREATE TABLE IF NOT EXISTS \(q(.purgedRanges)) (origin TEXT NOT NULL, lo BIGINT NOT NULL, hi BIGINT NOT NULL, PRIMARY KEY (origin, lo))",
                "CREATE TABLE IF NOT EXISTS \(q(.compactPending)) (tbl TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY (tbl, id))",
                // Log histories: each hub process begins one before its first push of the tenant.
                "CREATE TABLE IF NOT EXISTS \(q(.logHistories)) (n BIGSERIAL PRIMARY KEY, id TEXT NOT NULL UNIQUE, floor BIGINT NOT NULL, begun_at BIGINT NOT NULL)",
                // Deleted records, which a compaction pass walks for tombstones past the horizon.
                // Checked first: CREATE INDEX locks the table even when the index exists, and
                // every process runs this at start while others push (a deadlock otherwise).
                """
                DO $do$ BEGIN
                  IF to_regclass('"\(name)".records_tombstones') IS NULL THEN
                    CREATE INDEX records_tombstones ON \(q(.records)) (tbl, id) WHERE tombstone IS NOT NULL;
                  END IF;
                END $do$
                """,
                // The nodes each entry was routed to (comma-separated): which children must
                // have pulled it before it may go, without an index on `change_routes (seq)`.
                // A schema made before it: the column added once, and filled from the routes.
                """
                DO $do$ BEGIN
                  IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                                 WHERE table_schema = '\(name)' AND table_name = 'changes' AND column_name = 'routed') THEN
                    ALTER TABLE \(q(.changes)) ADD COLUMN routed TEXT;
                    \(backfillRouted)
                  END IF;
                END $do$
                """,
                // Folded entries (PostgresTenantStore+Retention): a record's log entries whose
                // values are still current, once every child fed them pulled them, leave the log;
                // the record keeps their identities (`folded`, as the SQLite engine writes them)
                // and its position in the feed (`folded_at`, indexed for the feed's walk).
                // Checked first, as above: ALTER TABLE and CREATE INDEX lock the table.
                """
                DO $do$ BEGIN
                  IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                                 WHERE table_schema = '\(name)' AND table_name = 'records' AND column_name = 'folded_at') THEN
                    ALTER TABLE \(q(.records)) ADD COLUMN folded TEXT, ADD COLUMN folded_at BIGINT;
                  END IF;
                  IF to_regclass('"\(name)".records_folded_at') IS NULL THEN
                    CREATE INDEX records_folded_at ON \(q(.records)) (folded_at) WHERE folded_at IS NOT NULL;
                  END IF;
                END $do$
                """,
            ]
            for sql in statements { _ = try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger).collect() }
            try await installFunctions(on: connection, logger: logger)
            // After the functions: its triggers call two of them.
            _ = try await connection.query(PostgresQuery(unsafeSQL: quarantineQuotaTriggers), logger: logger).collect()
            let found = try await connection.query("SELECT value FROM \(unescaped: q(.meta)) WHERE key = 'schema_version'", logger: logger)
                .collect().first.map { try $0.decode(String.self) }
            if let found, let v = Int(found), v > Self.version {
                throw PostgresStoreError("tenant '\(tenant)' was written by a newer Tiersync (schema version \(v); this one knows \(Self.version))")
            }
            let identity: [(PostgresMetaKey, String)] = [(.schemaVersion, String(Self.version)), (.tenant, tenant.rawValue), (.node, root.rawValue)]
            for (key, value) in identity {
                _ = try await connection.query("""
                    INSERT INTO \(unescaped: q(.meta)) (key, value) VALUES (\(key.rawValue), \(value)) ON CONFLICT (key) DO NOTHING
                    """, logger: logger).collect()
            }
            // A schema written by an older version is this version's now.
            _ = try await connection.query("""
                UPDATE \(unescaped: q(.meta)) SET value = \(String(Self.version)) WHERE key = \(PostgresMetaKey.schemaVersion.rawValue)
                  AND value::int < \(Self.version)
                """, logger: logger).collect()
        }
    }
}

extension PostgresTenantSchema {
    /// The quarantine's bounds (``QuarantineQuota``), enforced by the database as SQLite's
    /// migration v14 does: a table of bytes kept per sender, and a trigger before each row
    /// written (`ts_quarantine_quota`) that skips (returns NULL) and counts a new entry, or a
    /// kept one growing, past either bound, and counts the row it admits; one after each
    /// delete (`ts_quarantine_released`). The functions are among ``functions`` (installed
    /// with the others when they change, replaced in place: the triggers depend on them).
    var quarantineQuotaFunctions: [String] {
        let q = { (t: Table) in self.qualified(t) }
        let size: (String) -> String = { row in "(octet_length(\(row).change) + octet_length(\(row).reason))" }
        let setting: (QuarantineQuota.SettingKey, Int64) -> String = { key, fallback in
            "COALESCE((SELECT value::bigint FROM \(q(.meta)) WHERE key = '\(key.rawValue)'), \(fallback))"
        }
        let perSender = setting(.maxBytesPerSender, QuarantineQuota.default.maxBytesPerSender)
        let total = setting(.maxBytes, QuarantineQuota.default.maxBytes)
        let senderBytes = "COALESCE((SELECT bytes FROM \(q(.quarantineUsage)) WHERE received_from = NEW.received_from), 0)"
        let allBytes = "COALESCE((SELECT sum(bytes) FROM \(q(.quarantineUsage))), 0)"
        return [
            // Counted as each row is written, in the trigger that admits it: an AFTER row
            // trigger runs at the end of its statement, so a push's many refusals (one INSERT)
            // would each have been judged against the usage before any of them. Without JIT:
            // a push runs with enable_seqscan off, which prices the sum over the (small) usage
            // table past jit_above_cost, and each refused row then paid ~0.25 s of compiling
            // while its tenant's pushes waited.
            """
            CREATE OR REPLACE FUNCTION "\(name)".ts_quarantine_quota() RETURNS trigger LANGUAGE plpgsql SET jit = off AS $fn$
            DECLARE
              kept_before BIGINT := 0;
              same_sender BOOLEAN := false;
            BEGIN
              IF TG_OP = 'INSERT' THEN
                -- An upsert of a kept identity goes on to its update, judged there.
                IF EXISTS (SELECT 1 FROM \(q(.quarantine)) WHERE origin = NEW.origin AND origin_seq = NEW.origin_seq) THEN
                  RETURN NEW;
                END IF;
              ELSE
                kept_before := \(size("OLD"));
                same_sender := OLD.received_from = NEW.received_from;
              END IF;
              IF (\(size("NEW")) > CASE WHEN same_sender THEN kept_before ELSE 0 END
                  AND \(senderBytes) + \(size("NEW")) - CASE WHEN same_sender THEN kept_before ELSE 0 END > \(perSender))
                 OR (\(size("NEW")) > kept_before AND \(allBytes) + \(size("NEW")) - kept_before > \(total)) THEN
                INSERT INTO \(q(.meta)) (key, value) VALUES ('\(QuarantineQuota.SettingKey.unkept.rawValue)', '1')
                  ON CONFLICT (key) DO UPDATE SET value = (\(q(.meta)).value::bigint + 1)::text;
                -- Still held (highestSeq counts it), as a kept refusal is: else a node whose newest
                -- change this was would be told its parent lost it, and send it at every push.
                IF NEW.origin_seq BETWEEN \(Change.sequenceRange.lowerBound) AND \(Change.sequenceRange.upperBound) THEN
                  INSERT INTO \(q(.quarantineUnkept)) AS k (origin, max_seq) VALUES (NEW.origin, NEW.origin_seq)
                    ON CONFLICT (origin) DO UPDATE SET max_seq = GREATEST(k.max_seq, excluded.max_seq);
                END IF;
                RETURN NULL;
              END IF;
              IF TG_OP = 'UPDATE' THEN
                UPDATE \(q(.quarantineUsage)) SET entries = entries - 1, bytes = bytes - kept_before WHERE received_from = OLD.received_from;
              END IF;
              INSERT INTO \(q(.quarantineUsage)) AS u (received_from, entries, bytes) VALUES (NEW.received_from, 1, \(size("NEW")))
                ON CONFLICT (received_from) DO UPDATE SET entries = u.entries + 1, bytes = u.bytes + excluded.bytes;
              DELETE FROM \(q(.quarantineUsage)) WHERE entries <= 0;
              RETURN NEW;
            END $fn$
            """,
            """
            CREATE OR REPLACE FUNCTION "\(name)".ts_quarantine_released() RETURNS trigger LANGUAGE plpgsql SET jit = off AS $fn$
            BEGIN
              UPDATE \(q(.quarantineUsage)) SET entries = entries - 1, bytes = bytes - \(size("OLD")) WHERE received_from = OLD.received_from;
              DELETE FROM \(q(.quarantineUsage)) WHERE received_from = OLD.received_from AND entries <= 0;
              RETURN NULL;
            END $fn$
            """,
        ]
    }

    /// The usage table and the triggers, made once. The triggers first, then the table filled
    /// from what the quarantine holds, in the migration's transaction: CREATE TRIGGER holds a
    /// lock on the quarantine until it commits, so no row written meanwhile (by a process of
    /// an older version) goes uncounted. Checked first, as the others: CREATE TRIGGER locks
    /// the table, and every process runs this at start while others push.
    var quarantineQuotaTriggers: String {
        let q = { (t: Table) in self.qualified(t) }
        return """
            DO $do$ BEGIN
              IF to_regclass('"\(name)".\(Table.quarantineUsage.rawValue)') IS NULL THEN
                CREATE TABLE \(q(.quarantineUsage)) (received_from TEXT PRIMARY KEY, entries BIGINT NOT NULL, bytes BIGINT NOT NULL);
                CREATE TABLE \(q(.quarantineUnkept)) (origin TEXT PRIMARY KEY, max_seq BIGINT NOT NULL);
                CREATE TRIGGER quarantine_quota BEFORE INSERT OR UPDATE ON \(q(.quarantine))
                  FOR EACH ROW EXECUTE FUNCTION "\(name)".ts_quarantine_quota();
                CREATE TRIGGER quarantine_released AFTER DELETE ON \(q(.quarantine))
                  FOR EACH ROW EXECUTE FUNCTION "\(name)".ts_quarantine_released();
                \(recountQuarantineUsage.joined(separator: ";\n"));
              END IF;
            END $do$
            """
    }

    /// Counts the usage table again from what the quarantine holds: two statements.
    var recountQuarantineUsage: [String] {
        let q = { (t: Table) in self.qualified(t) }
        return [
            "DELETE FROM \(q(.quarantineUsage))",
            """
            INSERT INTO \(q(.quarantineUsage)) (received_from, entries, bytes)
              SELECT received_from, count(*), sum(octet_length(change) + octet_length(reason)) FROM \(q(.quarantine)) GROUP BY received_from
            """,
        ]
    }
}

extension PostgresTenantSchema {
    /// Every function of the tenant's schema, as the `CREATE OR REPLACE FUNCTION` statements
    /// this version installs: the read and write halves of a push
    /// (`PostgresTenantSchema+PushFunction`), the feed's (`+FeedFunctions`) and compaction's.
    var functions: [String] {
        [notePurgedFunction, applyPushFunction, readPushFunction] + feedFunctions + quarantineQuotaFunctions
    }

    /// Which version of ``functions`` a schema holds: their text's SHA-256, kept in its meta.
    private static func digest(of functions: [String]) -> String {
        SHA256.hash(data: Data(functions.joined(separator: "\n;\n").utf8)).map { String(format: "%02x", $0) }.joined()
    }

    /// Installs this version's ``functions`` unless the schema holds them already (by
    /// ``digest(of:)``), inside the migration's transaction (under its lock).
    ///
    /// Not on every start: replacing a function makes every connection of every other hub
    /// process plan it again, so a restarted process would slow the others' pushes. When they
    /// differ, every `ts_` function of the schema is dropped first: `CREATE OR REPLACE` can
    /// change neither a function's result columns nor its parameters (a new parameter list
    /// adds a second function beside the old one, through which an older process could
    /// still write). Except the quarantine's trigger functions (`ts_quarantine_…`, always
    /// `() RETURNS trigger`), which triggers depend on: replaced in place.
    func installFunctions(on connection: PostgresConnection, logger: Logger) async throws {
        // The statements' text is built once here (each function's is long).
        let functions = self.functions
        let digest = Self.digest(of: functions)
        // The digest recorded, and how many `ts_` functions the schema holds: a schema restored
        // or edited without some of them is installed again, whatever its digest says.
        let row = try await connection.query("""
            SELECT (SELECT value FROM \(unescaped: qualified(.meta)) WHERE key = \(PostgresMetaKey.functionsDigest.rawValue)),
                   (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                    WHERE n.nspname = \(name) AND p.proname LIKE 'ts\\_%')
            """, logger: logger).collect().first
        let (installed, present): (String?, Int64) = try row?.decode((String?, Int64).self) ?? (nil, 0)
        guard installed != digest || present != Int64(functions.count) else { return }
        _ = try await connection.query(PostgresQuery(unsafeSQL: """
            DO $do$ DECLARE f regprocedure; BEGIN
              FOR f IN SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                       WHERE n.nspname = '\(name)' AND p.proname LIKE 'ts\\_%' AND p.proname NOT LIKE 'ts\\_quarantine\\_%' LOOP
                EXECUTE 'DROP FUNCTION ' || f;
              END LOOP;
            END $do$
            """), logger: logger).collect()
        for sql in functions { _ = try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger).collect() }
        _ = try await connection.query("""
            INSERT INTO \(unescaped: qualified(.meta)) (key, value) VALUES (\(PostgresMetaKey.functionsDigest.rawValue), \(digest))
            ON CONFLICT (key) DO UPDATE SET value = excluded.value
            """, logger: logger).collect()
        logger.info("tenant functions installed", metadata: ["schema": "\(name)", "digest": "\(digest.prefix(12))"])
    }
}

extension PostgresTenantSchema {
    /// Fills `changes.routed` where it is unknown (entries written before the column, or
    /// moved in by `migrate-tenant`) from `change_routes`; an entry routed nowhere gets ''.
    var backfillRouted: String {
        let q = { (t: Table) in self.qualified(t) }
        return """
            UPDATE \(q(.changes)) c SET routed = r.nodes
              FROM (SELECT seq, string_agg(node, ',') AS nodes FROM \(q(.changeRoutes)) GROUP BY seq) r
              WHERE c.seq = r.seq AND c.routed IS NULL;
            UPDATE \(q(.changes)) SET routed = '' WHERE routed IS NULL;
            """
    }

    /// `ts_note_purged(origins, seqs)`: records purged identities, each as a range of its
    /// own joined with the ranges just below and above it (as the SQLite engine's
    /// `notePurgedSeq`), and raises each origin's highest purged sequence. One round trip
    /// for a compaction transaction's entries. Its look-ups are by key, and its plans are
    /// cached for the session: planned while the table was a page (after a rewrite, or
    /// vacuum's truncation), they scanned it whole for every identity once a pass had
    /// split it into thousands of ranges (60 ms a call against 2), so sequential scans are
    /// off inside it.
    var notePurgedFunction: String {
        let q = { (t: Table) in self.qualified(t) }
        return """
            CREATE OR REPLACE FUNCTION "\(name)".ts_note_purged(po text[], ps int8[]) RETURNS void LANGUAGE plpgsql
              SET enable_seqscan = off AS $fn$
            DECLARE
              o text; s int8; blo int8; bhi int8; ahi int8; h int8;
            BEGIN
              FOR o, s IN SELECT u.o, u.s FROM unnest(po, ps) AS u(o, s) ORDER BY 1, 2 LOOP
                blo := NULL; bhi := NULL; ahi := NULL;
                SELECT r.lo, r.hi INTO blo, bhi FROM \(q(.purgedRanges)) r WHERE r.origin = o AND r.lo <= s ORDER BY r.lo DESC LIMIT 1;
                CONTINUE WHEN bhi IS NOT NULL AND bhi >= s;
                SELECT r.hi INTO ahi FROM \(q(.purgedRanges)) r WHERE r.origin = o AND r.lo = s + 1;
                IF ahi IS NOT NULL THEN
                  DELETE FROM \(q(.purgedRanges)) WHERE origin = o AND lo = s + 1;
                  h := ahi;
                ELSE
                  h := s;
                END IF;
                IF bhi IS NOT NULL AND bhi = s - 1 THEN
                  UPDATE \(q(.purgedRanges)) SET hi = h WHERE origin = o AND lo = blo;
                ELSE
                  INSERT INTO \(q(.purgedRanges)) (origin, lo, hi) VALUES (o, s, h);
                END IF;
              END LOOP;
              INSERT INTO \(q(.purged)) (origin, through_seq)
                SELECT u.o, max(u.s) FROM unnest(po, ps) AS u(o, s) GROUP BY u.o
                ON CONFLICT (origin) DO UPDATE SET through_seq = GREATEST(\(q(.purged)).through_seq, excluded.through_seq);
            END
            $fn$
            """
    }
}

/// Keys of a tenant schema's `meta` table.
enum PostgresMetaKey: String {
    case schemaVersion = "schema_version"
    /// Which version of the schema's functions is installed (``PostgresTenantSchema/installFunctions(on:logger:)``).
    case functionsDigest = "functions.digest"
    case tenant, node
    /// The KPIs the store counts (``TiersyncStorage/KPIAdoption`` as JSON), and where that came from.
    case kpiAdoption = "kpi.adoption"
    case kpiSource = "kpi.source"
    /// The log position a child's pull cursor must have passed (the newest purged delete).
    case purgeFloor = "purge.floor"
    /// Where the next compaction pass starts (the head it last saw, less one).
    case compactFrom = "compact.from"
    /// The running pass's lease: when a process took it, or '0' when none runs.
    case compactTakenAt = "compact.taken_at"
}

/// A failure of the PostgreSQL engine that is not PostgreSQL's own.
public struct PostgresStoreError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

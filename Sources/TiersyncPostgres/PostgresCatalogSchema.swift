import PostgresNIO

/// The catalog's tables in PostgreSQL (schema `tiersync_catalog`) and their migrations.
///
/// Versioned by the row of `schema_version`: each migration runs once, in order, in the
/// transaction that records it. Every process runs ``migrate(_:)`` as it opens the catalog;
/// the whole of it runs under a transaction-scoped advisory lock, so of several processes
/// starting at once on an empty database one creates the schema and the others then find it
/// (`CREATE SCHEMA IF NOT EXISTS` alone is not enough: two of them at once can both try to
/// create it, and one fails on the catalog's unique index). The statements are idempotent as
/// well (`IF NOT EXISTS`). Migrations only add, so a process older than the schema keeps working.
///
/// Tables (times are milliseconds since the epoch, `bigint`):
/// - `tenants`: id, root, levels (2 or 3), allow_direct_sync, release_key (base64 Ed25519), created_at.
/// - `nodes`: (tenant, id) → parent, role (`NodeRole`), created_at, last_seen, decommissioned_at.
/// - `enrollment_tokens`: SHA-256 hex of the token → tenant, node, parent, role, expires_at, used_at.
/// - `credentials`: SHA-256 hex of the credential → tenant, node, created_at, revoked_at.
/// - `node_lag`: (tenant, node) → pending, oldest_pending_ms, measured_at, clock_offset_ms (migration 5):
///   the last lag the node reported, with its clock offset when it measured one.
/// - `admin_users`, `admin_tokens`, `admin_audit`: administrators, their sessions and API tokens
///   (SHA-256 digests), the audit log (migration 3).
/// - `admin_settings`, `release_requests`: four-eyes releases (migration 4); the index of each
///   administrator's tokens by owner and kind (migration 6).
/// - `catalog_version`: per tenant, bumped by every change of its tree or direct-sync setting
///   (per tenant rather than one row, as SQLite has: enrollments of different tenants do not
///   queue on one row lock, and one tenant's change keeps other tenants' cached trees).
public enum PostgresCatalogSchema {
    /// The schema version this build writes and reads.
    public static var currentVersion: Int { migrations.count }

    /// Migration n (1-based) is `migrations[n - 1]`: statements run one by one (postgres-nio's
    /// extended protocol takes one statement per query).
    static let migrations: [[PostgresQuery]] = [
        [
            """
            CREATE TABLE IF NOT EXISTS tiersync_catalog.tenants (
                id text PRIMARY KEY,
                root text NOT NULL,
                levels integer NOT NULL CHECK (levels IN (2, 3)),
                allow_direct_sync boolean NOT NULL DEFAULT false,
                release_key text,
                created_at bigint NOT NULL
            )
            """,
            """
            CREATE TABLE IF NOT EXISTS tiersync_catalog.nodes (
                tenant text NOT NULL REFERENCES tiersync_catalog.tenants (id),
                id text NOT NULL,
                parent text,
                role text NOT NULL,
                created_at bigint NOT NULL,
                last_seen bigint,
                decommissioned_at bigint,
                PRIMARY KEY (tenant, id)
            )
            """,
            // Decommissioning looks up a node's children.
            "CREATE INDEX IF NOT EXISTS nodes_parent ON tiersync_catalog.nodes (tenant, parent)",
            """
            CREATE TABLE IF NOT EXISTS tiersync_catalog.enrollment_tokens (
                hash text PRIMARY KEY,
                tenant text NOT NULL REFERENCES tiersync_catalog.tenants (id),
                node text NOT NULL,
                parent text,
                role text NOT NULL,
                expires_at bigint NOT NULL,
                used_at bigint
            )
            """,
            // Issuing a token looks up the unused ones by node and by parent.
            "CREATE INDEX IF NOT EXISTS enrollment_tokens_node ON tiersync_catalog.enrollment_tokens (tenant, node) WHERE used_at IS NULL",
            "CREATE INDEX IF NOT EXISTS enrollment_tokens_parent ON tiersync_catalog.enrollment_tokens (tenant, parent) WHERE used_at IS NULL",
            """
            CREATE TABLE IF NOT EXISTS tiersync_catalog.credentials (
                hash text PRIMARY KEY,
                tenant text NOT NULL REFERENCES tiersync_catalog.tenants (id),
                node text NOT NULL,
                created_at bigint NOT NULL,
                revoked_at bigint
            )
            """,
            // Enrollment and revocation revoke a node's live credentials; the directory lists a tenant's.
            "CREATE INDEX IF NOT EXISTS credentials_node ON tiersync_catalog.credentials (tenant, node) WHERE revoked_at IS NULL",
            """
            CREATE TABLE IF NOT EXISTS tiersync_catalog.catalog_version (
                tenant text PRIMARY KEY REFERENCES tiersync_catalog.tenants (id),
                version bigint NOT NULL
            )
            """,
        ],
        [
            // The last lag each node reported (`POST /v1/status`), measured at `measured_at`
            // (hub clock).
            """
            CREATE TABLE IF NOT EXISTS tiersync_catalog.node_lag (
                tenant text NOT NULL,
                node text NOT NULL,
                pending bigint NOT NULL,
                oldest_pending_ms bigint NOT NULL,
                measured_at bigint NOT NULL,
                PRIMARY KEY (tenant, node),
                FOREIGN KEY (tenant, node) REFERENCES tiersync_catalog.nodes (tenant, id)
            )
            """,
        ],
        [
            // Administrators, their sessions and API tokens (SHA-256 digests), the audit log.
            """
            CREATE TABLE IF NOT EXISTS tiersync_catalog.admin_users (
                tenant text NOT NULL REFERENCES tiersync_catalog.tenants (id),
                name text NOT NULL,
                roles text NOT NULL,
                scope text NOT NULL,
                password_hash text NOT NULL,
                created_at bigint NOT NULL,
                disabled_at bigint,
                failed_logins integer NOT NULL DEFAULT 0,
                locked_until bigint NOT NULL DEFAULT 0,
                PRIMARY KEY (tenant, name),
                FOREIGN KEY (tenant, scope) REFERENCES tiersync_catalog.nodes (tenant, id)
            )
            """,
            """
            CREATE TABLE IF NOT EXISTS tiersync_catalog.admin_tokens (
                hash text PRIMARY KEY,
                tenant text NOT NULL,
                "user" text NOT NULL,
                kind text NOT NULL,
                name text NOT NULL,
                created_at bigint NOT NULL,
                expires_at bigint NOT NULL,
                revoked_at bigint,
                FOREIGN KEY (tenant, "user") REFERENCES tiersync_catalog.admin_users (tenant, name)
            )
            """,
            "CREATE INDEX IF NOT EXISTS admin_tokens_user ON tiersync_catalog.admin_tokens (tenant, \"user\") WHERE revoked_at IS NULL",
            """
            CREATE TABLE IF NOT EXISTS tiersync_catalog.admin_audit (
                id bigserial PRIMARY KEY,
                tenant text NOT NULL,
                actor text NOT NULL,
                action text NOT NULL,
                target text NOT NULL,
                detail text NOT NULL,
                address text NOT NULL,
                scope text NOT NULL,
                at bigint NOT NULL
            )
            """,
            "CREATE INDEX IF NOT EXISTS admin_audit_tenant ON tiersync_catalog.admin_audit (tenant, id)",
        ],
        [
            // Four-eyes releases: the tenant's setting and the requests waiting for a reviewer.
            """
            CREATE TABLE IF NOT EXISTS tiersync_catalog.admin_settings (
                tenant text NOT NULL REFERENCES tiersync_catalog.tenants (id),
                key text NOT NULL,
                value text NOT NULL,
                PRIMARY KEY (tenant, key)
            )
            """,
            """
            CREATE TABLE IF NOT EXISTS tiersync_catalog.release_requests (
                id bigserial PRIMARY KEY,
                tenant text NOT NULL REFERENCES tiersync_catalog.tenants (id),
                author text NOT NULL,
                requested_at bigint NOT NULL,
                notes text NOT NULL,
                targets text,
                source_digest text NOT NULL,
                sources text NOT NULL,
                state text NOT NULL,
                reviewer text,
                decided_at bigint,
                reason text,
                version integer
            )
            """,
            "CREATE INDEX IF NOT EXISTS release_requests_tenant ON tiersync_catalog.release_requests (tenant, id)",
        ],
        [
            // The clock offset a node last reported with its lag (null: none measured lately).
            "ALTER TABLE tiersync_catalog.node_lag ADD COLUMN IF NOT EXISTS clock_offset_ms bigint",
        ],
        [
            // Storing an administrator's token deletes their revoked and expired rows and
            // counts the live ones by key, revoked rows included (the partial index leaves
            // them out).
            "CREATE INDEX IF NOT EXISTS admin_tokens_owner ON tiersync_catalog.admin_tokens (tenant, \"user\", kind)",
        ],
    ]

    /// Creates the schema or brings it up to ``currentVersion``; see the type's documentation.
    static func migrate(_ catalog: PostgresCatalog) async throws {
        try await catalog.transaction { db in
            try await db.execute("SELECT pg_advisory_xact_lock(\(CatalogConnection.catalogLockClass), 0)")
            try await db.execute("CREATE SCHEMA IF NOT EXISTS tiersync_catalog")
            try await db.execute("""
                CREATE TABLE IF NOT EXISTS tiersync_catalog.schema_version (
                    id integer PRIMARY KEY CHECK (id = 1),
                    version integer NOT NULL
                )
                """)
            try await db.execute("INSERT INTO tiersync_catalog.schema_version (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING")
            let version = try await db.rows("SELECT version FROM tiersync_catalog.schema_version WHERE id = 1")
                .first.map { try $0.decode(Int.self) } ?? 0
            guard version < migrations.count else { return }
            for statements in migrations[version...] {
                for statement in statements { try await db.execute(statement) }
            }
            try await db.execute("UPDATE tiersync_catalog.schema_version SET version = \(migrations.count) WHERE id = 1")
        }
    }
}

import PostgresNIO
import TiersyncCore
import TiersyncStorage

/// ``AdminAccountStore`` on PostgreSQL: the same tables as the SQLite catalog's, in
/// `tiersync_catalog`, so a session made by one hub process is honoured by every other.
extension PostgresCatalog: AdminAccountStore {
    private static let userColumns = "tenant, name, roles, scope, created_at, disabled_at"

    private static func user(_ row: PostgresRow) throws -> AdminUser {
        let (tenant, name, roles, scope, created, disabled) = try row.decode((String, String, String, String, Int64, Int64?).self)
        return AdminUser(tenant: TenantID(stringLiteral: tenant), name: name, roles: AdminRole.parse(roles) ?? [.viewer],
                         scope: NodeID(unchecked: scope), createdAtMillis: UInt64(clamping: created),
                         disabledAtMillis: disabled.map { UInt64(clamping: $0) })
    }

    private static func rolesText(_ roles: Set<AdminRole>) -> String {
        roles.sorted().map(\.rawValue).joined(separator: ",")
    }

    public func createAdminUser(_ user: AdminUser, passwordHash: String) async throws {
        try await transaction { db in
            guard try await db.count("SELECT count(*) FROM tiersync_catalog.tenants WHERE id = \(user.tenant.rawValue)") == 1 else {
                throw StoreError.notFound("tenant '\(user.tenant)'")
            }
            guard try await db.count("SELECT count(*) FROM tiersync_catalog.nodes WHERE tenant = \(user.tenant.rawValue) AND id = \(user.scope.rawValue)") == 1 else {
                throw StoreError.notFound("node '\(user.scope)' of tenant '\(user.tenant)'")
            }
            // Taken in turn per name regardless of case: two requests at once (`PEER`, `peer`)
            // both passed the check below and both inserted.
            try await db.execute("SELECT pg_advisory_xact_lock(hashtext(\(user.tenant.rawValue) || '/' || lower(\(user.name))))")
            if let like = try await db.rows("""
                SELECT name FROM tiersync_catalog.admin_users WHERE tenant = \(user.tenant.rawValue) AND lower(name) = lower(\(user.name)) AND name <> \(user.name)
                """).first {
                throw StoreError.invalidArgument(AdminUser.caseOnlyRefusal(user.name, like: try like.decode(String.self), tenant: user.tenant))
            }
            let inserted = try await db.rows("""
                INSERT INTO tiersync_catalog.admin_users (tenant, name, roles, scope, password_hash, created_at, disabled_at)
                VALUES (\(user.tenant.rawValue), \(user.name), \(Self.rolesText(user.roles)), \(user.scope.rawValue), \(passwordHash),
                        \(Int64(clamping: user.createdAtMillis)), \(user.disabledAtMillis.map { Int64(clamping: $0) }))
                ON CONFLICT (tenant, name) DO NOTHING RETURNING 1
                """)
            guard !inserted.isEmpty else { throw StoreError.invalidArgument("tenant '\(user.tenant)' already has an administrator '\(user.name)'") }
        }
    }

    public func adminUsers(of tenant: TenantID) async throws -> [AdminUser] {
        try await read("SELECT \(unescaped: Self.userColumns) FROM tiersync_catalog.admin_users WHERE tenant = \(tenant.rawValue) ORDER BY name")
            .map(Self.user)
    }

    public func adminLogins(of tenant: TenantID) async throws -> [AdminLogin] {
        try await read("""
            SELECT \(unescaped: Self.userColumns), password_hash, failed_logins, locked_until FROM tiersync_catalog.admin_users
            WHERE tenant = \(tenant.rawValue) ORDER BY name
            """).map { row in
            let (_, _, _, _, _, _, hash, failures, locked) = try row.decode((String, String, String, String, Int64, Int64?, String, Int32, Int64).self)
            return AdminLogin(user: try Self.user(row), passwordHash: hash, failedLogins: Int(failures), lockedUntilMillis: UInt64(clamping: locked))
        }
    }

    public func adminLogin(_ name: String, of tenant: TenantID) async throws -> AdminLogin? {
        guard let row = try await read("""
            SELECT \(unescaped: Self.userColumns), password_hash, failed_logins, locked_until FROM tiersync_catalog.admin_users
            WHERE tenant = \(tenant.rawValue) AND name = \(name)
            """).first else { return nil }
        let (_, _, _, _, _, _, hash, failures, locked) = try row.decode((String, String, String, String, Int64, Int64?, String, Int32, Int64).self)
        return AdminLogin(user: try Self.user(row), passwordHash: hash, failedLogins: Int(failures), lockedUntilMillis: UInt64(clamping: locked))
    }

    public func updateAdminUser(_ name: String, of tenant: TenantID, roles: Set<AdminRole>?, disabledAtMillis: UInt64??,
                                passwordHash: String?) async throws {
        try await transaction { db in
            guard try await db.count("SELECT count(*) FROM tiersync_catalog.admin_users WHERE tenant = \(tenant.rawValue) AND name = \(name)") == 1 else {
                throw StoreError.notFound("administrator '\(name)' of tenant '\(tenant)'")
            }
            if let roles {
                try await db.execute("UPDATE tiersync_catalog.admin_users SET roles = \(Self.rolesText(roles)) WHERE tenant = \(tenant.rawValue) AND name = \(name)")
            }
            if let passwordHash {
                try await db.execute("""
                    UPDATE tiersync_catalog.admin_users SET password_hash = \(passwordHash), failed_logins = 0, locked_until = 0
                    WHERE tenant = \(tenant.rawValue) AND name = \(name)
                    """)
                // A new password ends every session and API token of the old one.
                try await db.execute("""
                    UPDATE tiersync_catalog.admin_tokens SET revoked_at = \(Int64(clamping: WallClock.nowMillis()))
                    WHERE tenant = \(tenant.rawValue) AND "user" = \(name) AND revoked_at IS NULL
                    """)
            }
            if let disabled = disabledAtMillis {
                let at = disabled.map { Int64(clamping: $0) }
                try await db.execute("UPDATE tiersync_catalog.admin_users SET disabled_at = \(at) WHERE tenant = \(tenant.rawValue) AND name = \(name)")
                if let at {
                    try await db.execute("""
                        UPDATE tiersync_catalog.admin_tokens SET revoked_at = \(at)
                        WHERE tenant = \(tenant.rawValue) AND "user" = \(name) AND revoked_at IS NULL
                        """)
                }
            }
        }
    }

    public func countLoginAttempt(_ name: String, of tenant: TenantID, nowMillis: UInt64) async throws -> LoginAttempt {
        try await transaction { db in
            // The row locked first: attempts at once on several hub processes count one after another.
            guard let held = try await db.rows("""
                SELECT locked_until FROM tiersync_catalog.admin_users WHERE tenant = \(tenant.rawValue) AND name = \(name) FOR UPDATE
                """).first else { return .counted(failures: 0) }
            let lockedUntil = try held.decode(Int64.self)
            if lockedUntil > Int64(clamping: nowMillis) { return .locked(untilMillis: UInt64(lockedUntil)) }
            guard let row = try await db.rows("""
                UPDATE tiersync_catalog.admin_users SET failed_logins = failed_logins + 1
                WHERE tenant = \(tenant.rawValue) AND name = \(name) RETURNING failed_logins
                """).first else { return .counted(failures: 0) }
            let failures = Int(try row.decode(Int32.self))
            let until = Int64(clamping: nowMillis &+ AdminLogin.lockMillis(afterFailures: failures))
            try await db.execute("UPDATE tiersync_catalog.admin_users SET locked_until = \(until) WHERE tenant = \(tenant.rawValue) AND name = \(name)")
            return .counted(failures: failures)
        }
    }

    public func recordLoginSuccess(_ name: String, of tenant: TenantID) async throws {
        try await execute("""
            UPDATE tiersync_catalog.admin_users SET failed_logins = 0, locked_until = 0
            WHERE tenant = \(tenant.rawValue) AND name = \(name) AND failed_logins > 0
            """)
    }

    public func storeAdminToken(digest: String, _ token: AdminToken, limit: AdminTokenLimit, nowMillis: UInt64) async throws {
        let (tenant, user, now) = (token.tenant.rawValue, token.user, Int64(clamping: nowMillis))
        try await transaction { db in
            // One user's tokens are stored one at a time, in any process: the count below
            // holds until this transaction ends.
            _ = try await db.rows("SELECT 1 FROM tiersync_catalog.admin_users WHERE tenant = \(tenant) AND name = \(user) FOR UPDATE")
            try await db.execute("""
                DELETE FROM tiersync_catalog.admin_tokens WHERE tenant = \(tenant) AND "user" = \(user) AND (revoked_at IS NOT NULL OR expires_at <= \(now))
                """)
            let live = try await db.rows("""
                SELECT hash FROM tiersync_catalog.admin_tokens WHERE tenant = \(tenant) AND "user" = \(user) AND kind = \(token.kind.rawValue)
                ORDER BY created_at, hash
                """).map { try $0.decode(String.self) }
            if live.count >= limit.most {
                switch limit.whenFull {
                case .refuse:
                    throw StoreError.limitReached(AdminTokenLimit.refusal(token, most: limit.most))
                case .revokeOldest:
                    let oldest = Array(live.prefix(live.count - limit.most + 1))
                    try await db.execute("UPDATE tiersync_catalog.admin_tokens SET revoked_at = \(now) WHERE hash = ANY(\(oldest)::text[])")
                }
            }
            try await db.execute("""
                INSERT INTO tiersync_catalog.admin_tokens (hash, tenant, "user", kind, name, created_at, expires_at)
                VALUES (\(digest), \(tenant), \(user), \(token.kind.rawValue), \(token.name),
                        \(Int64(clamping: token.createdAtMillis)), \(Int64(clamping: token.expiresAtMillis)))
                """)
        }
    }

    private static func tokenEntry(_ row: PostgresRow, tenant: TenantID, user: String) throws -> AdminTokenEntry {
        let (hash, kind, name, created, expires) = try row.decode((String, String, String, Int64, Int64).self)
        return AdminTokenEntry(id: AdminTokenEntry.id(ofDigest: hash),
                               token: AdminToken(tenant: tenant, user: user, kind: AdminTokenKind(rawValue: kind) ?? .api, name: name,
                                                 createdAtMillis: UInt64(clamping: created), expiresAtMillis: UInt64(clamping: expires)))
    }

    public func adminTokens(of user: String, in tenant: TenantID, nowMillis: UInt64) async throws -> [AdminTokenEntry] {
        try await read("""
            SELECT hash, kind, name, created_at, expires_at FROM tiersync_catalog.admin_tokens
            WHERE tenant = \(tenant.rawValue) AND "user" = \(user) AND revoked_at IS NULL AND expires_at > \(Int64(clamping: nowMillis))
            ORDER BY created_at, hash
            """).map { try Self.tokenEntry($0, tenant: tenant, user: user) }
    }

    public func revokeAdminToken(id: String, of user: String, in tenant: TenantID, nowMillis: UInt64) async throws -> AdminTokenEntry? {
        guard AdminTokenEntry.isValidID(id) else { return nil }
        return try await read("""
            UPDATE tiersync_catalog.admin_tokens SET revoked_at = \(Int64(clamping: nowMillis))
            WHERE tenant = \(tenant.rawValue) AND "user" = \(user) AND revoked_at IS NULL AND expires_at > \(Int64(clamping: nowMillis))
              AND left(hash, \(Int32(AdminTokenEntry.idLength))::int4) = \(id)
            RETURNING hash, kind, name, created_at, expires_at
            """).first.map { try Self.tokenEntry($0, tenant: tenant, user: user) }
    }

    public func adminToken(digest: String, nowMillis: UInt64) async throws -> (token: AdminToken, user: AdminUser)? {
        guard let row = try await read("""
            SELECT u.tenant, u.name, u.roles, u.scope, u.created_at, u.disabled_at, t.kind, t.name, t.created_at, t.expires_at
            FROM tiersync_catalog.admin_tokens t
            JOIN tiersync_catalog.admin_users u ON u.tenant = t.tenant AND u.name = t."user"
            WHERE t.hash = \(digest) AND t.revoked_at IS NULL AND t.expires_at > \(Int64(clamping: nowMillis)) AND u.disabled_at IS NULL
            """).first else { return nil }
        let (_, _, _, _, _, _, kind, name, created, expires) = try row.decode((String, String, String, String, Int64, Int64?, String, String, Int64, Int64).self)
        let user = try Self.user(row)
        return (AdminToken(tenant: user.tenant, user: user.name, kind: AdminTokenKind(rawValue: kind) ?? .api, name: name,
                           createdAtMillis: UInt64(clamping: created), expiresAtMillis: UInt64(clamping: expires)), user)
    }

    public func revokeAdminToken(digest: String) async throws {
        try await execute("""
            UPDATE tiersync_catalog.admin_tokens SET revoked_at = \(Int64(clamping: WallClock.nowMillis())) WHERE hash = \(digest) AND revoked_at IS NULL
            """)
    }

    @discardableResult
    public func appendAudit(_ entry: AuditEntry) async throws -> Int64 {
        let row = try await read("""
            INSERT INTO tiersync_catalog.admin_audit (tenant, actor, action, target, detail, address, scope, at)
            VALUES (\(entry.tenant.rawValue), \(entry.actor), \(entry.action), \(entry.target), \(entry.detail), \(entry.address),
                    \(entry.scope.rawValue), \(Int64(clamping: entry.atMillis)))
            RETURNING id
            """).first
        return try row?.decode(Int64.self) ?? 0
    }

    public func passwordChooser(of user: String, in tenant: TenantID) async throws -> String? {
        try await read("""
            SELECT actor FROM tiersync_catalog.admin_audit
            WHERE tenant = \(tenant.rawValue) AND target = \(user)
              AND (action = \(PasswordSetting.addAction) OR (action = \(PasswordSetting.updateAction) AND detail = \(PasswordSetting.setDetail)))
            ORDER BY id DESC LIMIT 1
            """).first.map { try $0.decode(String.self) }
    }

    public func audit(of tenant: TenantID, scopes: Set<NodeID>?, before: Int64?, limit: Int) async throws -> [AuditEntry] {
        let all = scopes == nil
        let list = scopes.map { $0.map(\.rawValue) } ?? []
        return try await read("""
            SELECT id, tenant, actor, action, target, detail, address, scope, at FROM tiersync_catalog.admin_audit
            WHERE tenant = \(tenant.rawValue) AND id < \(before ?? Int64.max) AND (\(all) OR scope = ANY(\(list)::text[]))
            ORDER BY id DESC LIMIT \(max(0, limit))
            """).map { row in
            let (id, tenant, actor, action, target, detail, address, scope, at) = try row.decode((Int64, String, String, String, String, String, String, String, Int64).self)
            return AuditEntry(id: id, tenant: TenantID(stringLiteral: tenant), actor: actor, action: action, target: target, detail: detail,
                              address: address, scope: NodeID(unchecked: scope), atMillis: UInt64(clamping: at))
        }
    }
}

// The hub's administrators (`admin_users`), their sessions and API tokens (`admin_tokens`,
// by SHA-256 digest) and the audit log (`admin_audit`): ``AdminAccountStore`` on SQLite.

import Foundation
import GRDB
import TiersyncCore

extension HubCatalog {
    static func createAdminTables(_ db: Database) throws {
        try db.execute(sql: """
            CREATE TABLE admin_users (
                tenant TEXT NOT NULL,
                name TEXT NOT NULL,
                roles TEXT NOT NULL,            -- comma-separated AdminRole values
                scope TEXT NOT NULL,            -- the node whose subtree they administer
                password_hash TEXT NOT NULL,    -- PasswordHash format (PBKDF2-SHA256)
                created_at INTEGER NOT NULL,
                disabled_at INTEGER,
                failed_logins INTEGER NOT NULL DEFAULT 0,
                locked_until INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (tenant, name)
            ) WITHOUT ROWID;
            CREATE TABLE admin_tokens (
                hash TEXT PRIMARY KEY NOT NULL,
                tenant TEXT NOT NULL,
                user TEXT NOT NULL,
                kind TEXT NOT NULL,             -- session | api
                name TEXT NOT NULL,
                created_at INTEGER NOT NULL,
                expires_at INTEGER NOT NULL,
                revoked_at INTEGER
            );
            CREATE INDEX admin_tokens_user ON admin_tokens (tenant, user) WHERE revoked_at IS NULL;
            CREATE TABLE admin_audit (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                tenant TEXT NOT NULL,
                actor TEXT NOT NULL,
                action TEXT NOT NULL,
                target TEXT NOT NULL,
                detail TEXT NOT NULL,
                address TEXT NOT NULL,
                scope TEXT NOT NULL,
                at INTEGER NOT NULL
            );
            CREATE INDEX admin_audit_tenant ON admin_audit (tenant, id);
            """)
    }

    static func adminUser(_ row: Row) -> AdminUser {
        AdminUser(tenant: TenantID(stringLiteral: row["tenant"]), name: row["name"],
                  roles: AdminRole.parse(row["roles"]) ?? [.viewer], scope: NodeID(unchecked: row["scope"]),
                  createdAtMillis: UInt64(max(0, row["created_at"] as Int64)),
                  disabledAtMillis: (row["disabled_at"] as Int64?).map { UInt64(max(0, $0)) })
    }

    static func rolesText(_ roles: Set<AdminRole>) -> String {
        roles.sorted().map(\.rawValue).joined(separator: ",")
    }
}

extension SQLiteCatalog: AdminAccountStore {
    public func createAdminUser(_ user: AdminUser, passwordHash: String) async throws {
        try await catalog.writer.write { db in
            guard try Bool.fetchOne(db, sql: "SELECT 1 FROM tenants WHERE id = ?", arguments: [user.tenant.rawValue]) == true else {
                throw StoreError.notFound("tenant '\(user.tenant)'")
            }
            guard try Bool.fetchOne(db, sql: "SELECT 1 FROM nodes WHERE tenant = ? AND id = ?", arguments: [user.tenant.rawValue, user.scope.rawValue]) == true else {
                throw StoreError.notFound("node '\(user.scope)' of tenant '\(user.tenant)'")
            }
            guard try Bool.fetchOne(db, sql: "SELECT 1 FROM admin_users WHERE tenant = ? AND name = ?", arguments: [user.tenant.rawValue, user.name]) != true else {
                throw StoreError.invalidArgument("tenant '\(user.tenant)' already has an administrator '\(user.name)'")
            }
            // Names are ASCII: `HQOP` beside `hqop` read as one account in the audit log (helper 98).
            if let like = try String.fetchOne(db, sql: "SELECT name FROM admin_users WHERE tenant = ? AND lower(name) = lower(?)",
                                              arguments: [user.tenant.rawValue, user.name]) {
                throw StoreError.invalidArgument(AdminUser.caseOnlyRefusal(user.name, like: like, tenant: user.tenant))
            }
            try db.execute(sql: """
                INSERT INTO admin_users (tenant, name, roles, scope, password_hash, created_at, disabled_at) VALUES (?, ?, ?, ?, ?, ?, ?)
                """, arguments: [user.tenant.rawValue, user.name, HubCatalog.rolesText(user.roles), user.scope.rawValue, passwordHash,
                                 Int64(clamping: user.createdAtMillis), user.disabledAtMillis.map { Int64(clamping: $0) }])
        }
    }

    public func adminUsers(of tenant: TenantID) async throws -> [AdminUser] {
        try await catalog.writer.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM admin_users WHERE tenant = ? ORDER BY name", arguments: [tenant.rawValue]).map(HubCatalog.adminUser)
        }
    }

    public func adminLogins(of tenant: TenantID) async throws -> [AdminLogin] {
        try await catalog.writer.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM admin_users WHERE tenant = ? ORDER BY name", arguments: [tenant.rawValue]).map {
                AdminLogin(user: HubCatalog.adminUser($0), passwordHash: $0["password_hash"], failedLogins: $0["failed_logins"],
                           lockedUntilMillis: UInt64(max(0, $0["locked_until"] as Int64)))
            }
        }
    }

    /// A country's mirror: makes its administrators those HQ sent (``DirectoryResponse/admins``).
    /// An administrator gone, disabled or with a new password loses their sessions and tokens
    /// here; failed-login counts of the others are kept.
    public func replaceMirroredAdmins(_ admins: [DirectoryResponse.Admin], of tenant: TenantID, nowMillis: UInt64 = WallClock.nowMillis()) async throws {
        try await catalog.writer.write { db in
            try HubCatalog.replaceMirroredAdmins(db, admins, of: tenant, nowMillis: nowMillis)
        }
    }

    public func adminLogin(_ name: String, of tenant: TenantID) async throws -> AdminLogin? {
        try await catalog.writer.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM admin_users WHERE tenant = ? AND name = ?", arguments: [tenant.rawValue, name]).map {
                AdminLogin(user: HubCatalog.adminUser($0), passwordHash: $0["password_hash"], failedLogins: $0["failed_logins"],
                           lockedUntilMillis: UInt64(max(0, $0["locked_until"] as Int64)))
            }
        }
    }

    public func updateAdminUser(_ name: String, of tenant: TenantID, roles: Set<AdminRole>?, disabledAtMillis: UInt64??,
                                passwordHash: String?) async throws {
        try await catalog.writer.write { db in
            guard try Bool.fetchOne(db, sql: "SELECT 1 FROM admin_users WHERE tenant = ? AND name = ?", arguments: [tenant.rawValue, name]) == true else {
                throw StoreError.notFound("administrator '\(name)' of tenant '\(tenant)'")
            }
            if let roles {
                try db.execute(sql: "UPDATE admin_users SET roles = ? WHERE tenant = ? AND name = ?",
                               arguments: [HubCatalog.rolesText(roles), tenant.rawValue, name])
            }
            if let passwordHash {
                try db.execute(sql: "UPDATE admin_users SET password_hash = ?, failed_logins = 0, locked_until = 0 WHERE tenant = ? AND name = ?",
                               arguments: [passwordHash, tenant.rawValue, name])
                // A new password (the step after a compromise) ends every session and API
                // token of the old one, as a country's mirror does.
                try db.execute(sql: "UPDATE admin_tokens SET revoked_at = ? WHERE tenant = ? AND user = ? AND revoked_at IS NULL",
                               arguments: [Int64(clamping: WallClock.nowMillis()), tenant.rawValue, name])
            }
            if let disabled = disabledAtMillis {
                try db.execute(sql: "UPDATE admin_users SET disabled_at = ? WHERE tenant = ? AND name = ?",
                               arguments: [disabled.map { Int64(clamping: $0) }, tenant.rawValue, name])
                if let at = disabled {
                    try db.execute(sql: "UPDATE admin_tokens SET revoked_at = ? WHERE tenant = ? AND user = ? AND revoked_at IS NULL",
                                   arguments: [Int64(clamping: at), tenant.rawValue, name])
                }
            }
        }
    }

    public func countLoginAttempt(_ name: String, of tenant: TenantID, nowMillis: UInt64) async throws -> LoginAttempt {
        try await catalog.writer.write { db in
            guard let lockedUntil = try Int64.fetchOne(db, sql: "SELECT locked_until FROM admin_users WHERE tenant = ? AND name = ?",
                                                       arguments: [tenant.rawValue, name]) else { return .counted(failures: 0) }
            if lockedUntil > Int64(clamping: nowMillis) { return .locked(untilMillis: UInt64(lockedUntil)) }
            let failures = try Int.fetchOne(db, sql: """
                UPDATE admin_users SET failed_logins = failed_logins + 1 WHERE tenant = ? AND name = ? RETURNING failed_logins
                """, arguments: [tenant.rawValue, name]) ?? 0
            let locked = AdminLogin.lockMillis(afterFailures: failures)
            try db.execute(sql: "UPDATE admin_users SET locked_until = ? WHERE tenant = ? AND name = ?",
                           arguments: [Int64(clamping: nowMillis &+ locked), tenant.rawValue, name])
            return .counted(failures: failures)
        }
    }

    public func recordLoginSuccess(_ name: String, of tenant: TenantID) async throws {
        try await catalog.writer.write { db in
            try db.execute(sql: "UPDATE admin_users SET failed_logins = 0, locked_until = 0 WHERE tenant = ? AND name = ? AND failed_logins > 0",
                           arguments: [tenant.rawValue, name])
        }
    }

    public func storeAdminToken(digest: String, _ token: AdminToken, limit: AdminTokenLimit, nowMillis: UInt64) async throws {
        try await catalog.writer.write { db in
            let owner: [any DatabaseValueConvertible] = [token.tenant.rawValue, token.user]
            try db.execute(sql: "DELETE FROM admin_tokens WHERE tenant = ? AND user = ? AND (revoked_at IS NOT NULL OR expires_at <= ?)",
                           arguments: StatementArguments(owner + [Int64(clamping: nowMillis)]))
            let live = try String.fetchAll(db, sql: """
                SELECT hash FROM admin_tokens WHERE tenant = ? AND user = ? AND kind = ? ORDER BY created_at, hash
                """, arguments: StatementArguments(owner + [token.kind.rawValue]))
            if live.count >= limit.most {
                switch limit.whenFull {
                case .refuse:
                    throw StoreError.limitReached(AdminTokenLimit.refusal(token, most: limit.most))
                case .revokeOldest:
                    for hash in live.prefix(live.count - limit.most + 1) {
                        try db.execute(sql: "UPDATE admin_tokens SET revoked_at = ? WHERE hash = ?", arguments: [Int64(clamping: nowMillis), hash])
                    }
                }
            }
            try db.execute(sql: """
                INSERT INTO admin_tokens (hash, tenant, user, kind, name, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)
                """, arguments: [digest, token.tenant.rawValue, token.user, token.kind.rawValue, token.name,
                                 Int64(clamping: token.createdAtMillis), Int64(clamping: token.expiresAtMillis)])
        }
    }

    public func adminTokens(of user: String, in tenant: TenantID, nowMillis: UInt64) async throws -> [AdminTokenEntry] {
        try await catalog.writer.read { db in
            try Row.fetchAll(db, sql: """
                SELECT hash, kind, name, created_at, expires_at FROM admin_tokens
                WHERE tenant = ? AND user = ? AND revoked_at IS NULL AND expires_at > ? ORDER BY created_at, hash
                """, arguments: [tenant.rawValue, user, Int64(clamping: nowMillis)]).map { Self.tokenEntry($0, tenant: tenant, user: user) }
        }
    }

    /// A token row (hash, kind, name, created_at, expires_at) as listed.
    private static func tokenEntry(_ row: Row, tenant: TenantID, user: String) -> AdminTokenEntry {
        AdminTokenEntry(id: AdminTokenEntry.id(ofDigest: row["hash"]),
                        token: AdminToken(tenant: tenant, user: user, kind: AdminTokenKind(rawValue: row["kind"]) ?? .api, name: row["name"],
                                          createdAtMillis: UInt64(max(0, row["created_at"] as Int64)),
                                          expiresAtMillis: UInt64(max(0, row["expires_at"] as Int64))))
    }

    public func revokeAdminToken(id: String, of user: String, in tenant: TenantID, nowMillis: UInt64) async throws -> AdminTokenEntry? {
        guard AdminTokenEntry.isValidID(id) else { return nil }
        return try await catalog.writer.write { db in
            // The id is a prefix of the digest: the user's live tokens are few (bounded), so
            // they are read and matched here rather than by a LIKE on the key.
            guard let row = try Row.fetchAll(db, sql: """
                SELECT hash, kind, name, created_at, expires_at FROM admin_tokens
                WHERE tenant = ? AND user = ? AND revoked_at IS NULL AND expires_at > ?
                """, arguments: [tenant.rawValue, user, Int64(clamping: nowMillis)]).first(where: { AdminTokenEntry.id(ofDigest: $0["hash"]) == id })
            else { return nil }
            try db.execute(sql: "UPDATE admin_tokens SET revoked_at = ? WHERE hash = ?", arguments: [Int64(clamping: nowMillis), row["hash"] as String])
            return Self.tokenEntry(row, tenant: tenant, user: user)
        }
    }

    public func adminToken(digest: String, nowMillis: UInt64) async throws -> (token: AdminToken, user: AdminUser)? {
        try await catalog.writer.read { db in
            guard let row = try Row.fetchOne(db, sql: """
                SELECT t.kind, t.name AS token_name, t.created_at AS token_created, t.expires_at, u.*
                FROM admin_tokens t JOIN admin_users u ON u.tenant = t.tenant AND u.name = t.user
                WHERE t.hash = ? AND t.revoked_at IS NULL AND t.expires_at > ? AND u.disabled_at IS NULL
                """, arguments: [digest, Int64(clamping: nowMillis)]) else { return nil }
            let user = HubCatalog.adminUser(row)
            let token = AdminToken(tenant: user.tenant, user: user.name, kind: AdminTokenKind(rawValue: row["kind"]) ?? .api,
                                   name: row["token_name"], createdAtMillis: UInt64(max(0, row["token_created"] as Int64)),
                                   expiresAtMillis: UInt64(max(0, row["expires_at"] as Int64)))
            return (token, user)
        }
    }

    public func revokeAdminToken(digest: String) async throws {
        try await catalog.writer.write { db in
            try db.execute(sql: "UPDATE admin_tokens SET revoked_at = ? WHERE hash = ? AND revoked_at IS NULL",
                           arguments: [Int64(clamping: WallClock.nowMillis()), digest])
        }
    }

    @discardableResult
    public func appendAudit(_ entry: AuditEntry) async throws -> Int64 {
        try await catalog.writer.write { db in
            try db.execute(sql: """
                INSERT INTO admin_audit (tenant, actor, action, target, detail, address, scope, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [entry.tenant.rawValue, entry.actor, entry.action, entry.target, entry.detail, entry.address,
                                 entry.scope.rawValue, Int64(clamping: entry.atMillis)])
            return db.lastInsertedRowID
        }
    }

    public func passwordChooser(of user: String, in tenant: TenantID) async throws -> String? {
        try await catalog.writer.read { db in
            try String.fetchOne(db, sql: """
                SELECT actor FROM admin_audit WHERE tenant = ? AND target = ? AND (action = ? OR (action = ? AND detail = ?))
                ORDER BY id DESC LIMIT 1
                """, arguments: [tenant.rawValue, user, PasswordSetting.addAction, PasswordSetting.updateAction, PasswordSetting.setDetail])
        }
    }

    public func audit(of tenant: TenantID, scopes: Set<NodeID>?, before: Int64?, limit: Int) async throws -> [AuditEntry] {
        try await catalog.writer.read { db in
            var sql = "SELECT * FROM admin_audit WHERE tenant = ? AND id < ?"
            var arguments: StatementArguments = [tenant.rawValue, before ?? Int64.max]
            if let scopes {
                sql += " AND scope IN (\(databaseQuestionMarks(count: max(1, scopes.count))))"
                arguments += StatementArguments(scopes.isEmpty ? [""] : scopes.map(\.rawValue))
            }
            sql += " ORDER BY id DESC LIMIT ?"
            arguments += [max(0, limit)]
            return try Row.fetchAll(db, sql: sql, arguments: arguments).map {
                AuditEntry(id: $0["id"], tenant: TenantID(stringLiteral: $0["tenant"]), actor: $0["actor"], action: $0["action"],
                           target: $0["target"], detail: $0["detail"], address: $0["address"], scope: NodeID(unchecked: $0["scope"]),
                           atMillis: UInt64(max(0, $0["at"] as Int64)))
            }
        }
    }
}

extension HubCatalog {
    /// ``SQLiteCatalog/replaceMirroredAdmins(_:of:nowMillis:)`` inside a transaction already
    /// open: ``replaceDirectory(_:nowMillis:)`` replaces the nodes and the administrators at
    /// once, so an older refresh cannot leave its administrators over a newer one's.
    static func replaceMirroredAdmins(_ db: Database, _ admins: [DirectoryResponse.Admin], of tenant: TenantID, nowMillis: UInt64) throws {
        let before = Dictionary(uniqueKeysWithValues: try Row.fetchAll(db, sql: "SELECT name, password_hash, disabled_at FROM admin_users WHERE tenant = ?",
                                                                        arguments: [tenant.rawValue]).map { ($0["name"] as String, $0) })
        let names = Set(admins.map(\.name))
        func revoke(_ name: String) throws {
            try db.execute(sql: "UPDATE admin_tokens SET revoked_at = ? WHERE tenant = ? AND user = ? AND revoked_at IS NULL",
                           arguments: [Int64(clamping: nowMillis), tenant.rawValue, name])
        }
        for (name, _) in before where !names.contains(name) {
            try revoke(name)
            try db.execute(sql: "DELETE FROM admin_users WHERE tenant = ? AND name = ?", arguments: [tenant.rawValue, name])
        }
        for admin in admins where AdminUser.isValidName(admin.name) {
            let roles = HubCatalog.rolesText(Set(admin.roles.compactMap(AdminRole.init(rawValue:))))
            let disabled: Int64? = admin.disabled ? Int64(clamping: nowMillis) : nil
            if let old = before[admin.name] {
                if old["password_hash"] as String != admin.passwordHash || admin.disabled { try revoke(admin.name) }
                try db.execute(sql: """
                    UPDATE admin_users SET roles = ?, scope = ?, password_hash = ?, disabled_at = CASE WHEN ? THEN coalesce(disabled_at, ?) ELSE NULL END
                    WHERE tenant = ? AND name = ?
                    """, arguments: [roles, admin.scope.rawValue, admin.passwordHash, admin.disabled, disabled, tenant.rawValue, admin.name])
            } else {
                try db.execute(sql: """
                    INSERT INTO admin_users (tenant, name, roles, scope, password_hash, created_at, disabled_at) VALUES (?, ?, ?, ?, ?, ?, ?)
                    """, arguments: [tenant.rawValue, admin.name, roles, admin.scope.rawValue, admin.passwordHash, Int64(clamping: nowMillis), disabled])
            }
        }
    }
}

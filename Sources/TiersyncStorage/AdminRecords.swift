import Foundation
import TiersyncCore

/// What an administrator may do. Every role may read what its scope holds (`viewer` may
/// only read); the others add acts.
public enum AdminRole: String, Codable, CaseIterable, Sendable, Comparable {
    /// Reads the node tree, lag, quarantine, conflicts, rollout status, KPIs, the audit log.
    case viewer
    /// Resolves conflicts, replays or discards quarantined changes, revokes and
    /// decommissions nodes, issues enrollment tokens.
    case `operator`
    /// Validates, publishes, rolls out and rolls back governance releases.
    case publisher
    /// Approves or rejects releases waiting for a second pair of eyes (never one's own).
    case reviewer

    public static func < (a: AdminRole, b: AdminRole) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }

    /// Roles from "operator,reviewer"; nil when one is unknown or none is given.
    public static func parse(_ text: String) -> Set<AdminRole>? {
        let parts = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        let roles = parts.compactMap(AdminRole.init(rawValue:))
        guard !roles.isEmpty, roles.count == parts.count else { return nil }
        return Set(roles)
    }
}

/// An administrator of one tenant. `scope` is the node whose subtree they administer: the
/// tenant's root for an HQ admin, a country for a country admin.
public struct AdminUser: Codable, Sendable, Equatable {
    public var tenant: TenantID
    public var name: String
    public var roles: Set<AdminRole>
    public var scope: NodeID
    public var createdAtMillis: UInt64
    public var disabledAtMillis: UInt64?

    public init(tenant: TenantID, name: String, roles: Set<AdminRole>, scope: NodeID, createdAtMillis: UInt64, disabledAtMillis: UInt64? = nil) {
        self.tenant = tenant
        self.name = name
        self.roles = roles
        self.scope = scope
        self.createdAtMillis = createdAtMillis
        self.disabledAtMillis = disabledAtMillis
    }

    public var isDisabled: Bool { disabledAtMillis != nil }

    /// Login names: 1–64 of letters, digits, `.`, `_`, `-`, `@`.
    /// Why `name` is refused beside an administrator named `like`, the same but for case: two
    /// accounts that look alike in the audit log (helper 98: `HQOP` beside `hqop`).
    public static func caseOnlyRefusal(_ name: String, like: String, tenant: TenantID) -> String {
        "tenant '\(tenant)' has an administrator '\(like)', which differs from '\(name)' only in case: choose a name that reads differently"
    }

    public static func isValidName(_ name: String) -> Bool {
        (1...64).contains(name.utf8.count) && name.utf8.allSatisfy {
            ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || [0x2E, 0x5F, 0x2D, 0x40].contains($0)
        }
    }
}

/// An administrator with what logging in needs.
public struct AdminLogin: Sendable, Equatable {
    public var user: AdminUser
    /// The password's slow hash (`PasswordHash`'s format).
    public var passwordHash: String
    /// Failed logins since the last success.
    public var failedLogins: Int
    /// No login is tried before this time (after failures).
    public var lockedUntilMillis: UInt64

    public init(user: AdminUser, passwordHash: String, failedLogins: Int, lockedUntilMillis: UInt64) {
        self.user = user
        self.passwordHash = passwordHash
        self.failedLogins = failedLogins
        self.lockedUntilMillis = lockedUntilMillis
    }

    /// How long a user is locked after `failures` failed logins in a row: none for the
    /// first 4, then 30 s doubling with each further failure, at most 15 minutes.
    public static func lockMillis(afterFailures failures: Int) -> UInt64 {
        guard failures >= 5 else { return 0 }
        return min(30_000 << UInt64(min(failures - 5, 20)), 15 * 60_000)
    }
}

/// What counting a login attempt found (``AdminAccountStore/countLoginAttempt(_:of:nowMillis:)``).
public enum LoginAttempt: Sendable, Equatable {
    /// Counted: the failures in a row, this attempt included (0: no such user any more).
    case counted(failures: Int)
    /// The user is locked until then; nothing was counted.
    case locked(untilMillis: UInt64)
}

/// How an admin token was made.
public enum AdminTokenKind: String, Codable, Sendable {
    /// A console session (a cookie), from a login.
    case session
    /// A script's bearer token, with a name and an expiry.
    case api
}

/// An admin session or API token as the catalog keeps it (by the SHA-256 of the secret).
public struct AdminToken: Codable, Sendable, Equatable {
    public var tenant: TenantID
    public var user: String
    public var kind: AdminTokenKind
    public var name: String
    public var createdAtMillis: UInt64
    public var expiresAtMillis: UInt64

    public init(tenant: TenantID, user: String, kind: AdminTokenKind, name: String, createdAtMillis: UInt64, expiresAtMillis: UInt64) {
        self.tenant = tenant
        self.user = user
        self.kind = kind
        self.name = name
        self.createdAtMillis = createdAtMillis
        self.expiresAtMillis = expiresAtMillis
    }
}

/// One administrative act: who, what, when, from where.
public struct AuditEntry: Codable, Sendable, Equatable {
    /// Assigned by the catalog, increasing.
    public var id: Int64
    public var tenant: TenantID
    /// The administrator (`cli:<account>` for a command on the hub machine).
    public var actor: String
    /// What was done (`login`, `login_failed`, `node.revoke`, `quarantine.discard`, …).
    public var action: String
    /// What it was done to (a node, a user, a quarantined change's id), or "".
    public var target: String
    /// Details: a reason, the roles set, the outcome.
    public var detail: String
    /// The caller's address (`cli` for the command line).
    public var address: String
    /// The scope node of the actor (a country admin's acts are theirs to see, and HQ's).
    public var scope: NodeID
    public var atMillis: UInt64

    public init(id: Int64 = 0, tenant: TenantID, actor: String, action: String, target: String, detail: String,
                address: String, scope: NodeID, atMillis: UInt64) {
        self.id = id
        self.tenant = tenant
        self.actor = actor
        self.action = action
        self.target = target
        self.detail = detail
        self.address = address
        self.scope = scope
        self.atMillis = atMillis
    }
}

/// A live session or API token as listed to its administrator (or a tenant-wide operator):
/// never its secret nor its digest, only an ``id`` to revoke it by.
public struct AdminTokenEntry: Codable, Sendable, Equatable {
    /// The first ``idLength`` hex digits of the secret's SHA-256 digest. They name the token
    /// among its user's and tell nothing of the secret.
    public var id: String
    public var token: AdminToken

    public init(id: String, token: AdminToken) {
        self.id = id
        self.token = token
    }

    public static let idLength = 16

    /// The id of the token kept under `digest`.
    public static func id(ofDigest digest: String) -> String { String(digest.prefix(idLength)) }

    /// Whether `id` could name a token: ``idLength`` lowercase hex digits.
    public static func isValidID(_ id: String) -> Bool {
        id.utf8.count == idLength && id.utf8.allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0) }
    }
}

/// How many live tokens of each kind one administrator may hold, and what storing one more does.
public struct AdminTokenLimit: Sendable, Equatable {
    /// What happens to a token stored when its user already holds ``most`` live ones of its kind.
    public enum WhenFull: Sendable, Equatable {
        /// Refused with ``StoreError/limitReached(_:)``: API tokens, which a script holds for
        /// months; the administrator lists and revokes one first.
        case refuse
        /// The oldest are revoked to make room: sessions. A login must work, and the browser
        /// holding the oldest session was most likely closed long ago.
        case revokeOldest
    }

    public var most: Int
    public var whenFull: WhenFull

    public init(most: Int, whenFull: WhenFull) {
        self.most = most
        self.whenFull = whenFull
    }

    /// API tokens: 50 live per administrator, the 51st refused.
    public static let apiTokens = AdminTokenLimit(most: 50, whenFull: .refuse)
    /// Sessions: 20 live per administrator, the oldest ended by the 21st login.
    public static let sessions = AdminTokenLimit(most: 20, whenFull: .revokeOldest)
    /// No limit: tests and tools that set tokens up directly.
    public static let none = AdminTokenLimit(most: .max, whenFull: .refuse)

    /// Why `token` is refused when its user holds `most` live tokens of its kind.
    public static func refusal(_ token: AdminToken, most: Int) -> String {
        "administrator '\(token.user)' already holds \(most) live \(token.kind == .api ? "API tokens" : "sessions"), the most allowed: revoke one first"
    }

    /// The default limit of `kind`.
    public static func `default`(for kind: AdminTokenKind) -> AdminTokenLimit {
        switch kind {
        case .api: apiTokens
        case .session: sessions
        }
    }
}

/// What the hub keeps of its administrators: accounts, sessions and API tokens, and the
/// audit log. Both catalogs implement it (SQLite `hub.sqlite`, PostgreSQL
/// `tiersync_catalog`), so every hub process sees the same sessions. Secrets (tokens) are
/// kept as SHA-256 digests, passwords as slow hashes made by the caller.
public protocol AdminAccountStore: AnyObject, Sendable {
    /// Adds an administrator; ``StoreError/invalidArgument(_:)`` when the name is taken in
    /// the tenant, ``StoreError/notFound(_:)`` for an unknown tenant or scope node.
    func createAdminUser(_ user: AdminUser, passwordHash: String) async throws
    /// The tenant's administrators, by name.
    func adminUsers(of tenant: TenantID) async throws -> [AdminUser]
    /// Every administrator of the tenant with what logging in needs (a country's mirror gets
    /// those of its subtree).
    func adminLogins(of tenant: TenantID) async throws -> [AdminLogin]
    /// One administrator with what logging in needs, or nil.
    func adminLogin(_ name: String, of tenant: TenantID) async throws -> AdminLogin?
    /// Changes an administrator's roles, disabled state or password (nil: unchanged).
    /// Disabling revokes every session and token of theirs in the same transaction.
    func updateAdminUser(_ name: String, of tenant: TenantID, roles: Set<AdminRole>?, disabledAtMillis: UInt64??,
                         passwordHash: String?) async throws
    /// Counts a login about to be checked as failed, locking the user for
    /// ``AdminLogin/lockMillis(afterFailures:)``; a success clears it (``recordLoginSuccess(_:of:)``).
    /// When the user is locked now, counts nothing and says until when. Counted before the
    /// password is checked, atomically: counted after, logins checked at once all passed the
    /// lock (helper 98: of 15 sent at once, 8 had their password checked).
    func countLoginAttempt(_ name: String, of tenant: TenantID, nowMillis: UInt64) async throws -> LoginAttempt
    /// Clears the failures after a successful login.
    func recordLoginSuccess(_ name: String, of tenant: TenantID) async throws
    /// Keeps a session or API token under the digest of its secret, within `limit`: when
    /// its user already holds `limit.most` live tokens of its kind, it is refused
    /// (``StoreError/limitReached(_:)``) or the oldest are revoked, as `limit` says. In the
    /// same transaction the user's revoked and expired token rows are deleted (a lookup of
    /// their digests fails as it did), so the rows a user has stay bounded. Tokens of one
    /// user are stored one at a time, across hub processes.
    func storeAdminToken(digest: String, _ token: AdminToken, limit: AdminTokenLimit, nowMillis: UInt64) async throws
    /// The live (neither revoked nor expired at `nowMillis`) sessions and API tokens of
    /// administrator `user`, oldest first.
    func adminTokens(of user: String, in tenant: TenantID, nowMillis: UInt64) async throws -> [AdminTokenEntry]
    /// Revokes the live token of administrator `user` whose id is `id`; returns it, or nil
    /// when `user` has no live token of that id.
    func revokeAdminToken(id: String, of user: String, in tenant: TenantID, nowMillis: UInt64) async throws -> AdminTokenEntry?
    /// The token of this digest with its user, when neither expired (at `nowMillis`), was
    /// revoked, nor belongs to a disabled user.
    func adminToken(digest: String, nowMillis: UInt64) async throws -> (token: AdminToken, user: AdminUser)?
    /// Revokes one token (a logout).
    func revokeAdminToken(digest: String) async throws
    /// Appends to the audit log; returns the entry's id.
    @discardableResult
    func appendAudit(_ entry: AuditEntry) async throws -> Int64
    /// The tenant's audit entries whose actor's scope is in `scopes` (nil: all), newest
    /// first, with ids below `before` (nil: from the newest), at most `limit`.
    func audit(of tenant: TenantID, scopes: Set<NodeID>?, before: Int64?, limit: Int) async throws -> [AuditEntry]
    /// Who last chose the password of administrator `user`, as the audit log tells: the
    /// actor of its newest `user.add` or `user.update` "password set" entry (nil: none kept).
    /// Whoever added an account through the API chose its password, and knows it.
    func passwordChooser(of user: String, in tenant: TenantID) async throws -> String?
}

extension AdminAccountStore {
    /// Keeps a token without a limit: for tests and tools that set tokens up directly.
    public func storeAdminToken(digest: String, _ token: AdminToken) async throws {
        try await storeAdminToken(digest: digest, token, limit: .none, nowMillis: token.createdAtMillis)
    }
}

/// The audit actions and details that set an administrator's password.
public enum PasswordSetting {
    public static let addAction = "user.add"
    public static let updateAction = "user.update"
    public static let setDetail = "password set"
}

/// A governance release asked for by one administrator, waiting for a second (four-eyes:
/// ``AdminAccountStore/requiresReleaseApproval(of:)``). It keeps the sources as sent; the
/// release is compiled, signed and rolled out only when a reviewer other than the author
/// approves it.
public struct ReleaseRequest: Codable, Sendable, Equatable {
    public enum State: String, Codable, Sendable {
        case pending, approved, rejected
    }

    /// One governance source file.
    public struct Source: Codable, Sendable, Equatable {
        public var name: String
        public var text: String
        public init(name: String, text: String) {
            self.name = name
            self.text = text
        }
    }

    public var id: Int64
    public var tenant: TenantID
    public var author: String
    public var requestedAtMillis: UInt64
    public var notes: String
    /// Trial nodes; nil: every node.
    public var targets: [NodeID]?
    public var sourceDigest: String
    public var sources: [Source]
    public var state: State
    public var reviewer: String?
    public var decidedAtMillis: UInt64?
    /// Why it was rejected.
    public var reason: String?
    /// The release it became, once approved and published.
    public var version: Int?

    public init(id: Int64 = 0, tenant: TenantID, author: String, requestedAtMillis: UInt64, notes: String, targets: [NodeID]?,
                sourceDigest: String, sources: [Source], state: State = .pending, reviewer: String? = nil, decidedAtMillis: UInt64? = nil,
                reason: String? = nil, version: Int? = nil) {
        self.id = id
        self.tenant = tenant
        self.author = author
        self.requestedAtMillis = requestedAtMillis
        self.notes = notes
        self.targets = targets
        self.sourceDigest = sourceDigest
        self.sources = sources
        self.state = state
        self.reviewer = reviewer
        self.decidedAtMillis = decidedAtMillis
        self.reason = reason
        self.version = version
    }
}

/// Four-eyes releases, kept in the catalog beside the administrators (both engines).
public protocol ReleaseApprovalStore: AnyObject, Sendable {
    /// Whether the tenant's releases wait for a reviewer's approval.
    func requiresReleaseApproval(of tenant: TenantID) async throws -> Bool
    func setRequiresReleaseApproval(_ required: Bool, for tenant: TenantID) async throws
    /// Stores a pending request; returns its id.
    func createReleaseRequest(_ request: ReleaseRequest) async throws -> Int64
    /// The tenant's requests, newest first.
    func releaseRequests(of tenant: TenantID, limit: Int) async throws -> [ReleaseRequest]
    func releaseRequest(_ id: Int64, of tenant: TenantID) async throws -> ReleaseRequest?
    /// Decides a pending request: true for the one caller that moved it out of `pending`
    /// (however many processes try at once), false when it was decided already.
    func decideReleaseRequest(_ id: Int64, of tenant: TenantID, state: ReleaseRequest.State, reviewer: String,
                              reason: String?, atMillis: UInt64) async throws -> Bool
    /// Records the release an approved request became (or, with nil, puts a request whose
    /// publication failed back to pending).
    func recordReleaseVersion(_ id: Int64, of tenant: TenantID, version: Int?) async throws
}

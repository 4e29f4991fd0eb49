import Foundation
import Testing
import TiersyncCore
import TiersyncGovernance
import TiersyncKPI
import TiersyncServer
import TiersyncStore
import TiersyncAgent
import TiersyncTestSupport

/// A hub with two tenants and administrators of every kind, for the admin API's tests.
///
/// acme (3 levels): HQ `acme-hq`, countries `germany` and `france` (enrolled), each with a
/// pending dealer token. Administrators: `hq-op` (operator, publisher, tenant-wide),
/// `hq-viewer` (viewer, tenant-wide), `germany-op` and `france-op` (operators of their
/// country). globex (2 levels): `gx-op` (operator, tenant-wide).
struct AdminFixture: Sendable {
    let hub: RunningHub
    let client: RawClient
    let accounts: any AdminAccountStore
    let germany: String
    let france: String
    /// The directory the hub was started in (`release-keys/` is where it reads release keys).
    let directory: String
    static let password = "correct horse battery staple"

    /// The automaker's governance sources, as acme's.
    static func governanceSources() throws -> [ReleaseRequest.Source] {
        let dir = repositoryRoot() + "/fixtures/governance/automaker"
        return try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".yaml") }.sorted().map {
            ReleaseRequest.Source(name: $0, text: try String(contentsOfFile: "\(dir)/\($0)", encoding: .utf8)
                .replacingOccurrences(of: "tenant: automaker", with: "tenant: acme"))
        }
    }

    /// Gives acme a release key the hub can sign with.
    func installReleaseKey() async throws {
        let key = GovernanceSigningKey()
        try FileManager.default.createDirectory(atPath: directory + "/release-keys", withIntermediateDirectories: true)
        try key.base64.write(toFile: directory + "/release-keys/acme.release.key", atomically: true, encoding: .utf8)
        try await hub.catalogStore.setReleaseKey(key.publicKey.base64, for: "acme")
    }

    static func make(hub: RunningHub, client: RawClient, directory: String) async throws -> AdminFixture {
        let catalog = hub.catalogStore
        try await catalog.createTenant("acme", root: "acme-hq", levels: 3)
        try await catalog.createTenant("globex", root: "gx-hq", levels: 2)
        let germany = try await enroll(hub, client, "acme", "germany")
        let france = try await enroll(hub, client, "acme", "france")
        _ = try await catalog.issueEnrollmentToken(tenant: "acme", node: "germany-d1", parent: "germany")
        _ = try await catalog.issueEnrollmentToken(tenant: "acme", node: "france-d1", parent: "france")
        guard let accounts = catalog as? any AdminAccountStore else { throw TestFailure("the catalog keeps no administrators") }
        let hash = try PasswordHash.make(password)
        let now = WallClock.nowMillis()
        for (tenant, name, roles, scope) in [("acme", "hq-op", [AdminRole.operator, .publisher, .reviewer], "acme-hq"), ("acme", "hq-viewer", [.viewer], "acme-hq"),
                                             ("acme", "hq-reviewer", [.reviewer], "acme-hq"),
                                             ("acme", "germany-op", [.operator], "germany"), ("acme", "france-op", [.operator], "france"),
                                             ("globex", "gx-op", [.operator, .publisher, .reviewer], "gx-hq")] as [(TenantID, String, [AdminRole], NodeID)] {
            try await accounts.createAdminUser(AdminUser(tenant: tenant, name: name, roles: Set(roles), scope: scope, createdAtMillis: now),
                                               passwordHash: hash)
        }
        return AdminFixture(hub: hub, client: client, accounts: accounts, germany: germany, france: france, directory: directory)
    }

    static func enroll(_ hub: RunningHub, _ client: RawClient, _ tenant: TenantID, _ node: NodeID) async throws -> String {
        let token = try await hub.catalogStore.issueEnrollmentToken(tenant: tenant, node: node)
        let reply = try await client.send("POST", "/v1/enroll", json: EnrollRequest(token: token))
        guard reply.status == 201 else { throw TestFailure("enroll \(node): \(reply.status) \(reply.text)") }
        return try reply.decode(EnrollResponse.self).credential
    }

    /// An API token of `user` (made in the catalog, as `admin user token` does).
    func token(_ tenant: TenantID, _ user: String, expiresInMillis: Int64 = 3_600_000) async throws -> String {
        let secret = Secrets.new(.adminToken)
        let now = WallClock.nowMillis()
        try await accounts.storeAdminToken(digest: AdminAuthenticator.digest(secret),
                                           AdminToken(tenant: tenant, user: user, kind: .api, name: "test", createdAtMillis: now,
                                                      expiresAtMillis: UInt64(Int64(now) + expiresInMillis)))
        return secret
    }

    func send(_ method: String, _ path: String, json: (any Encodable)? = nil, token: String?) async throws -> RawClient.Reply {
        try await client.send(method, path, body: try json.map { try JSONEncoder().encode($0) },
                              headers: token.map { [("Authorization", "Bearer \($0)")] } ?? [])
    }
}

func withAdminFixture<T: Sendable>(engine: StorageEngine = .sqlite, limits: HubConfiguration.Limits = .init(),
                                   _ body: (AdminFixture) async throws -> T) async throws -> T {
    let dir = try TempDir()
    var limits = limits
    // Dozens of admin requests from one address in a second, some refused on purpose.
    limits.anonymousRequestBurst = 1_000
    limits.anonymousRequestsPerSecond = 1_000
    return try await withRunningHub(engine: engine, directory: dir.path, limits: limits) { hub in
        try await withRawClient(hub) { client in try await body(try await AdminFixture.make(hub: hub, client: client, directory: dir.path)) }
    }
}

@Suite("Admin API: accounts, sessions, scope, audit", .serialized)
struct AdminAPITests {
    @Test("a new password (`admin user set-password`, the step after a compromise) ends the administrator's sessions and API tokens; they went on working",
          arguments: StorageEngine.testable)
    func newPasswordEndsSessions(engine: StorageEngine) async throws {
        try await withAdminFixture(engine: engine) { f in
            let login = try await f.client.send("POST", "/admin/v1/login", json: AdminMessages.LoginRequest(tenant: "acme", user: "hq-viewer", password: AdminFixture.password))
            let session = String(try #require(login.headers["set-cookie"]).split(separator: ";")[0])
            let apiToken = try await f.token("acme", "hq-viewer")
            let other = try await f.token("acme", "hq-op")
            #expect(try await f.client.send("GET", "/admin/v1/me", headers: [("Cookie", session)]).status == 200)
            #expect(try await f.send("GET", "/admin/v1/me", token: apiToken).status == 200)
            try await f.accounts.updateAdminUser("hq-viewer", of: "acme", roles: nil, disabledAtMillis: nil,
                                                 passwordHash: try PasswordHash.make("a new and long passphrase"))
            #expect(try await f.client.send("GET", "/admin/v1/me", headers: [("Cookie", session)]).status == 401)
            #expect(try await f.send("GET", "/admin/v1/me", token: apiToken).status == 401)
            #expect(try await f.send("GET", "/admin/v1/me", token: other).status == 200, "another administrator's token stays")
            let again = try await f.client.send("POST", "/admin/v1/login", json: AdminMessages.LoginRequest(tenant: "acme", user: "hq-viewer", password: "a new and long passphrase"))
            #expect(again.status == 200)
        }
    }

    @Test("""
    a flood of logins is checked a few at a time: past the line the rest are answered 429 logins_busy at once, \
    with Retry-After (each ran 210,000 rounds of PBKDF2 at once, from any number of addresses, and every tenant's sync waited)
    """)
    func loginFlood() async throws {
        var limits = HubConfiguration.Limits()
        limits.maxConcurrentAnonymousRequests = 200
        // One at a time and four in line, whatever the machine's cores (the default is half of them, 32 in line).
        limits.loginChecksAtOnce = 1
        limits.loginChecksWaiting = 4
        try await withAdminFixture(limits: limits) { f in
            // Ten clients of eight connections each: 80 logins at once.
            let clients = (0..<10).map { _ in RawClient(baseURL: f.hub.url, caFile: f.hub.caFile) }
            let replies = try await withTeardown({ for client in clients { await client.shutdown() } }) {
                try await withThrowingTaskGroup(of: RawClient.Reply.self) { group in
                    for i in 0..<80 {
                        group.addTask {
                            try await clients[i % clients.count].send("POST", "/admin/v1/login",
                                                                      json: AdminMessages.LoginRequest(tenant: "acme", user: "flood-\(i)", password: "wrong"))
                        }
                    }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
            }
            let busy = replies.filter { $0.status == 429 && $0.error?.code == "logins_busy" }
            let checked = replies.filter { $0.status == 401 && $0.error?.code == "invalid_login" }
            #expect(busy.count + checked.count == 80, "\(replies.map { "\($0.status) \($0.error?.code ?? "")" })")
            #expect(!busy.isEmpty && busy.allSatisfy { $0.headers["retry-after"] == "1" }, "busy: \(busy.count)")
            #expect(checked.count >= 2, "at least the running one and the one waiting (acme's quarter of the line) were checked: \(checked.count)")
            // The line drains: a login with the right password goes through afterwards.
            let login = try await f.client.send("POST", "/admin/v1/login", json: AdminMessages.LoginRequest(tenant: "acme", user: "hq-op", password: AdminFixture.password))
            #expect(login.status == 200, "\(login.text)")
            // An administrator retrying the right password through a full line is never locked:
            // a login turned away busy is no failed one (counted before the line, five busy
            // answers locked the account, helper 104).
            let others = (0..<10).map { _ in RawClient(baseURL: f.hub.url, caFile: f.hub.caFile) }
            let retries = try await withTeardown({ for client in others { await client.shutdown() } }) {
                try await withThrowingTaskGroup(of: RawClient.Reply.self) { group in
                    for i in 0..<40 {
                        group.addTask {
                            try await others[i % others.count].send("POST", "/admin/v1/login",
                                                                      json: AdminMessages.LoginRequest(tenant: "acme", user: "hq-viewer", password: AdminFixture.password))
                        }
                    }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
            }
            #expect(retries.contains { $0.status == 429 } && retries.allSatisfy { $0.status == 200 || $0.error?.code == "logins_busy" },
                    "\(retries.map { "\($0.status) \($0.error?.code ?? "")" })")
        }
    }

    @Test("""
    a flood of logins naming two tenants (one that exists, one that does not) takes only their shares of the line: another \
    tenant's administrator logs in meanwhile (the line was shared, and the flood answered every tenant's logins 429 logins_busy)
    """)
    func loginFloodLeavesOtherTenants() async throws {
        var limits = HubConfiguration.Limits()
        limits.maxConcurrentAnonymousRequests = 200
        // One address sends it all here: its own rate limit must not be what answers.
        limits.anonymousRequestsPerSecond = 1_000_000
        limits.anonymousRequestBurst = 1_000_000
        limits.loginChecksAtOnce = 1
        limits.loginChecksWaiting = 4
        try await withAdminFixture(limits: limits) { f in
            let clients = (0..<8).map { _ in RawClient(baseURL: f.hub.url, caFile: f.hub.caFile) }
            // The flood runs 3 s; the other tenant logs in 1 s into it.
            let floodEnds = ContinuousClock.now + .seconds(3)
            let (floodReplies, globex) = try await withTeardown({ for client in clients { await client.shutdown() } }) {
                try await withThrowingTaskGroup(of: [Int].self) { group in
                    // 32 callers sending acme's and a made-up tenant's logins back to back.
                    for i in 0..<32 {
                        group.addTask {
                            var statuses: [Int] = []
                            while ContinuousClock.now < floodEnds {
                                statuses.append(try await clients[i % clients.count].send("POST", "/admin/v1/login",
                                    json: AdminMessages.LoginRequest(tenant: i % 2 == 0 ? "acme" : "no-such-tenant", user: "flood-\(i)",
                                                                     password: "wrong")).status)
                            }
                            return statuses
                        }
                    }
                    // Once the flood fills the line (logins answered 429), globex's administrator logs in.
                    try await Task.sleep(for: .seconds(1))
                    var answers: [RawClient.Reply] = []
                    for _ in 0..<3 {
                        answers.append(try await f.client.send("POST", "/admin/v1/login",
                                                               json: AdminMessages.LoginRequest(tenant: "globex", user: "gx-op", password: AdminFixture.password)))
                    }
                    // A tenant that does not exist is answered as one that does (a line keyed by
                    // what the catalog holds put it behind the made-up tenant's flood: 429).
                    answers.append(try await f.client.send("POST", "/admin/v1/login",
                                                           json: AdminMessages.LoginRequest(tenant: "ghost", user: "gx-op", password: "wrong")))
                    answers.append(try await f.client.send("POST", "/admin/v1/login",
                                                           json: AdminMessages.LoginRequest(tenant: "globex", user: "gx-op", password: "wrong")))
                    let flood = try await group.reduce(into: []) { $0 += $1 }
                    return (flood, answers)
                }
            }
            #expect(floodReplies.contains(429), "the flood filled acme's share of the line: \(Set(floodReplies))")
            #expect(globex.map(\.status) == [200, 200, 200, 401, 401], "\(globex.map { "\($0.status) \($0.text)" })")
        }
    }

    @Test("""
    a name no account has is locked after five failed logins like an account (the sixth answer told which \
    administrators exist); an administrator's scope given through the API is the root or a country, as the CLI \
    allows (a dealer's was taken); a password is measured in bytes as a login measures it (600 × "é" could be set \
    and never used)
    """)
    func loginsAndAccountsAlike() async throws {
        try await withAdminFixture { f in
            for user in ["hq-viewer", "nobody"] {
                for _ in 0..<5 {
                    let failed = try await f.client.send("POST", "/admin/v1/login", json: AdminMessages.LoginRequest(tenant: "acme", user: user, password: "wrong"))
                    #expect(failed.status == 401)
                }
                let sixth = try await f.client.send("POST", "/admin/v1/login", json: AdminMessages.LoginRequest(tenant: "acme", user: user, password: "wrong"))
                #expect(sixth.status == 429 && sixth.error?.code == "login_locked", "\(user): \(sixth.status) \(sixth.text)")
            }
            let token = try await f.hub.catalogStore.issueEnrollmentToken(tenant: "acme", node: "germany-d9", parent: "germany")
            #expect(try await f.client.send("POST", "/v1/enroll", json: EnrollRequest(token: token)).status == 201)
            let op = try await f.token("acme", "hq-op")
            let dealerScope = try await f.send("POST", "/admin/v1/users", json: AdminMessages.CreateUserRequest(
                name: "dealer-admin", password: "another long password", roles: [.viewer], scope: "germany-d9"), token: op)
            #expect(dealerScope.status == 422 && dealerScope.error?.code == "invalid_scope", "\(dealerScope.text)")
            let countryScope = try await f.send("POST", "/admin/v1/users", json: AdminMessages.CreateUserRequest(
                name: "country-admin", password: "another long password", roles: [.viewer], scope: "germany"), token: op)
            #expect(countryScope.status == 201, "\(countryScope.text)")
            let long = try await f.send("POST", "/admin/v1/users", json: AdminMessages.CreateUserRequest(
                name: "long-password", password: String(repeating: "é", count: 600), roles: [.viewer]), token: op)
            #expect(long.status == 422 && long.error?.code == "weak_password" && long.text.contains("1024 bytes"), "\(long.text)")
            // Fifteen wrong passwords at once check at most five: the lock is taken before the
            // check (helper 98: eight of fifteen were checked, the count read before any was
            // recorded). The same for an account and for a name no account has.
            for user in ["hq-op", "nobody-else"] {
                let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                    for _ in 0..<15 {
                        group.addTask {
                            try await f.client.send("POST", "/admin/v1/login", json: AdminMessages.LoginRequest(tenant: "acme", user: user, password: "wrong")).status
                        }
                    }
                    return try await group.reduce(into: [Int]()) { $0.append($1) }
                }
                #expect(statuses.count == 15 && statuses.filter { $0 == 401 }.count <= 5 && statuses.allSatisfy { $0 == 401 || $0 == 429 },
                        "\(user): \(statuses.sorted())")
            }
            #expect(try await f.client.send("POST", "/admin/v1/login", json: AdminMessages.LoginRequest(tenant: "acme", user: "hq-op", password: AdminFixture.password)).status == 429,
                    "the right password is refused while locked")
        }
    }

    @Test("""
        sessions and API tokens: an administrator lists their own (ids, names, kinds, never a secret) and revokes one, which \
        ends it at once; a tenant-wide operator lists and revokes another administrator's, a viewer, a country operator and \
        another tenant's admin cannot; API tokens past the limit are refused (409), a login past the session limit ends the \
        oldest session; every revocation is in the audit log. Before, a leaked token could not be ended alone, and tokens \
        and sessions were minted without bound
        """, arguments: StorageEngine.testable)
    func tokensListedAndRevoked(engine: StorageEngine) async throws {
        var limits = HubConfiguration.Limits()
        limits.adminTokens = AdminTokenLimit(most: 3, whenFull: .refuse)
        limits.adminSessions = AdminTokenLimit(most: 2, whenFull: .revokeOldest)
        try await withAdminFixture(engine: engine, limits: limits) { f in
            let base = try await f.token("acme", "hq-viewer")
            func create(_ name: String, with token: String) async throws -> RawClient.Reply {
                try await f.send("POST", "/admin/v1/tokens", json: AdminMessages.TokenRequest(name: name, ttlSeconds: 600), token: token)
            }
            let a = try await create("a", with: base).decode(AdminMessages.TokenResponse.self).token
            let b = try await create("b", with: base).decode(AdminMessages.TokenResponse.self).token
            let refused = try await create("c", with: base)
            #expect(refused.status == 409 && refused.error?.code == "too_many_tokens", "\(refused.status) \(refused.text)")
            // A number its field cannot hold is said so, not "not valid JSON" (helper 108).
            for ttl in ["600.5", "1e30"] {
                let odd = try await f.client.send("POST", "/admin/v1/tokens", body: Data("{\"name\":\"x\",\"ttlSeconds\":\(ttl)}".utf8),
                                                  headers: [("Authorization", "Bearer \(base)")])
                #expect(odd.status == 400 && odd.text.contains("does not fit its field") && odd.text.contains("whole number"), "\(ttl): \(odd.status) \(odd.text)")
            }

            let listed = try await f.send("GET", "/admin/v1/tokens", token: base)
            #expect(listed.status == 200)
            let list = try listed.decode(AdminMessages.TokensResponse.self)
            #expect(list.user == "hq-viewer" && list.tokens.map(\.name) == ["test", "a", "b"] && list.tokens.allSatisfy { $0.kind == .api })
            #expect(list.tokens.map(\.current) == [true, false, false])
            #expect(Set(list.tokens.map(\.id)).count == 3 && list.tokens.allSatisfy { AdminTokenEntry.isValidID($0.id) })
            for secret in [base, a, b] {
                #expect(!listed.text.contains(secret) && !listed.text.contains(AdminAuthenticator.digest(secret)), "a listing shows a secret or its digest")
            }

            // Revoking one ends it at once and frees its place.
            let idA = try #require(list.tokens.first { $0.name == "a" }?.id)
            #expect(try await f.send("GET", "/admin/v1/me", token: a).status == 200)
            let revoked = try await f.send("POST", "/admin/v1/tokens/\(idA)/revoke", token: base)
            #expect(revoked.status == 200 && (try? revoked.decode(AdminMessages.TokenView.self).name) == "a", "\(revoked.text)")
            #expect(try await f.send("GET", "/admin/v1/me", token: a).status == 401)
            #expect(try await f.send("GET", "/admin/v1/me", token: b).status == 200, "only the one revoked ends")
            #expect(try await f.send("POST", "/admin/v1/tokens/\(idA)/revoke", token: base).error?.code == "unknown_token", "revoked twice")
            for id in ["0123456789abcdef", "xyz", String(repeating: "a", count: 5_000)] {
                #expect(try await f.send("POST", "/admin/v1/tokens/\(id)/revoke", token: base).status == 404)
            }
            let c = try await create("c", with: base)
            #expect(c.status == 201)

            // Another administrator's tokens: a tenant-wide operator only.
            let op = try await f.token("acme", "hq-op")
            let germany = try await f.token("acme", "germany-op")
            let globex = try await f.token("globex", "gx-op")
            for (token, who) in [(base, "a viewer"), (germany, "a country operator"), (globex, "another tenant's admin")] {
                let reply = try await f.send("GET", "/admin/v1/users/hq-viewer/tokens", token: token)
                #expect(reply.status == 403 && !reply.text.contains("\"test\""), "\(who): \(reply.status) \(reply.text)")
            }
            #expect(try await f.send("GET", "/admin/v1/users/nobody/tokens", token: op).error?.code == "out_of_scope")
            let theirs = try await f.send("GET", "/admin/v1/users/hq-viewer/tokens", token: op).decode(AdminMessages.TokensResponse.self)
            #expect(theirs.tokens.map(\.name) == ["test", "b", "c"] && theirs.tokens.allSatisfy { !$0.current })
            let idB = try #require(theirs.tokens.first { $0.name == "b" }?.id)
            #expect(try await f.send("POST", "/admin/v1/users/hq-viewer/tokens/\(idB)/revoke", token: germany).status == 403)
            #expect(try await f.send("GET", "/admin/v1/me", token: b).status == 200)
            #expect(try await f.send("POST", "/admin/v1/users/hq-viewer/tokens/\(idB)/revoke", token: op).status == 200)
            #expect(try await f.send("GET", "/admin/v1/me", token: b).status == 401)

            // Sessions: a third login ends the oldest of two.
            var sessions: [String] = []
            for _ in 0..<3 {
                let login = try await f.client.send("POST", "/admin/v1/login", json: AdminMessages.LoginRequest(tenant: "acme", user: "hq-viewer", password: AdminFixture.password))
                #expect(login.status == 200)
                sessions.append(String(try #require(login.headers["set-cookie"]).split(separator: ";")[0]))
            }
            var alive: [Int] = []
            for session in sessions { alive.append(try await f.client.send("GET", "/admin/v1/me", headers: [("Cookie", session)]).status) }
            #expect(alive == [401, 200, 200], "\(alive)")
            let kinds = try await f.send("GET", "/admin/v1/tokens", token: base).decode(AdminMessages.TokensResponse.self).tokens
            #expect(kinds.filter { $0.kind == .session }.count == 2 && kinds.filter { $0.kind == .api }.count == 2)

            // Revoking the token in hand ends it, as a logout does.
            let own = try #require(kinds.first { $0.current }?.id)
            #expect(try await f.send("POST", "/admin/v1/tokens/\(own)/revoke", token: base).status == 200)
            #expect(try await f.send("GET", "/admin/v1/me", token: base).status == 401)

            let audit = try await f.accounts.audit(of: "acme", scopes: nil, before: nil, limit: 100).filter { $0.action == "token.revoke" }
            #expect(audit.map(\.actor).sorted() == ["hq-op", "hq-viewer", "hq-viewer"] && audit.allSatisfy { $0.target == "hq-viewer" }, "\(audit)")
        }
    }

    @Test("login: one answer for an unknown tenant, an unknown user and a wrong password; after 5 failures the user is locked (429, Retry-After) even with the right password; the session cookie is HttpOnly, Secure, SameSite=Strict; a change without the CSRF token is refused; logout ends the session",
          arguments: StorageEngine.testable)
    func loginAndSession(engine: StorageEngine) async throws {
        try await withAdminFixture(engine: engine) { f in
            let wrong = try await f.client.send("POST", "/admin/v1/login", json: AdminMessages.LoginRequest(tenant: "acme", user: "hq-op", password: "not the password"))
            let unknownUser = try await f.client.send("POST", "/admin/v1/login", json: AdminMessages.LoginRequest(tenant: "acme", user: "nobody", password: "x"))
            let unknownTenant = try await f.client.send("POST", "/admin/v1/login", json: AdminMessages.LoginRequest(tenant: "nope", user: "hq-op", password: "x"))
            for reply in [wrong, unknownUser, unknownTenant] {
                #expect(reply.status == 401)
                #expect(reply.text == wrong.text)
            }

            // A session: cookie flags, CSRF, logout.
            let login = try await f.client.send("POST", "/admin/v1/login", json: AdminMessages.LoginRequest(tenant: "acme", user: "hq-op", password: AdminFixture.password))
            #expect(login.status == 200)
            let cookie = try #require(login.headers["set-cookie"])
            for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] { #expect(cookie.contains(flag), "\(cookie)") }
            let session = String(cookie.split(separator: ";")[0])
            let me = try login.decode(AdminMessages.Me.self)
            let csrf = try #require(me.csrfToken)
            #expect(me.user == "hq-op" && me.tenantWide && me.roles == [.operator, .publisher, .reviewer])
            let read = try await f.client.send("GET", "/admin/v1/me", headers: [("Cookie", session)])
            #expect(read.status == 200)
            let body = try JSONEncoder().encode(AdminMessages.TokenRequest(name: "ci", ttlSeconds: 600))
            let noCSRF = try await f.client.send("POST", "/admin/v1/tokens", body: body, headers: [("Cookie", session)])
            #expect(noCSRF.status == 403 && noCSRF.error?.code == "csrf")
            let badCSRF = try await f.client.send("POST", "/admin/v1/tokens", body: body, headers: [("Cookie", session), ("X-CSRF-Token", csrf + "x")])
            #expect(badCSRF.status == 403)
            let withCSRF = try await f.client.send("POST", "/admin/v1/tokens", body: body, headers: [("Cookie", session), ("X-CSRF-Token", csrf)])
            #expect(withCSRF.status == 201)
            // The API token made there works as a bearer token, without CSRF.
            let apiToken = try withCSRF.decode(AdminMessages.TokenResponse.self).token
            #expect(try await f.send("GET", "/admin/v1/me", token: apiToken).status == 200)
            // The session in Authorization (not a cookie) is refused: it is not an API token.
            #expect(try await f.send("GET", "/admin/v1/me", token: String(session.dropFirst("tiersync_session=".count))).status == 401)
            let logout = try await f.client.send("POST", "/admin/v1/logout", headers: [("Cookie", session), ("X-CSRF-Token", csrf)])
            #expect(logout.status == 200)
            #expect(try await f.client.send("GET", "/admin/v1/me", headers: [("Cookie", session)]).status == 401)

            // Backoff: five failures in a row are plain 401s, then the user is locked for 30 s.
            for _ in 0..<5 {
                #expect(try await f.client.send("POST", "/admin/v1/login", json: AdminMessages.LoginRequest(tenant: "acme", user: "hq-op", password: "wrong")).status == 401)
            }
            let locked = try await f.client.send("POST", "/admin/v1/login", json: AdminMessages.LoginRequest(tenant: "acme", user: "hq-op", password: AdminFixture.password))
            #expect(locked.status == 429 && locked.error?.code == "login_locked")
            #expect((25...30).contains(Int(locked.headers["retry-after"] ?? "") ?? 0))

            // Every login, failure and logout is in the audit log.
            let audit = try await f.accounts.audit(of: "acme", scopes: nil, before: nil, limit: 100)
            #expect(audit.filter { $0.action == "login" && $0.actor == "hq-op" }.count == 1)
            #expect(audit.filter { $0.action == "login_failed" }.count == 6)
            #expect(audit.contains { $0.action == "logout" } && audit.contains { $0.action == "token.create" && $0.target == "ci" })
            #expect(audit.allSatisfy { $0.address == "127.0.0.1" })
        }
    }

    /// A request for `route` that would succeed for an HQ operator of acme, naming things
    /// of `france` (outside germany's scope).
    static func sample(_ route: AdminRoutes.Route, quarantineID: Int64) -> (path: String, body: (any Encodable)?) {
        let path = route == AdminRoutes.trace ? route.path + "?table=customers&id=france-secret-customer"
            : route.path.replacingOccurrences(of: "{node}", with: "france").replacingOccurrences(of: "{id}", with: String(quarantineID))
            .replacingOccurrences(of: "{name}", with: "france-op")
        let body: (any Encodable)? = switch route {
        case AdminRoutes.createToken: AdminMessages.TokenRequest(name: "t", ttlSeconds: 600)
        case AdminRoutes.enrollmentToken: AdminMessages.EnrollmentTokenRequest(node: "france-d2", parent: "france")
        case AdminRoutes.discardQuarantined: AdminMessages.DiscardRequest(reason: "test")
        case AdminRoutes.createUser: AdminMessages.CreateUserRequest(name: "new-admin", password: "another long password", roles: [.viewer], scope: "france")
        case AdminRoutes.updateUser: AdminMessages.UpdateUserRequest(roles: [.viewer])
        case AdminRoutes.validateRelease, AdminRoutes.publishRelease: AdminMessages.ReleaseSources(sources: [.init(name: "governance.yaml", text: "x")])
        case AdminRoutes.rejectRelease: AdminMessages.DiscardRequest(reason: "test")
        case AdminRoutes.resolveConflict: AdminMessages.ResolveRequest(keep: .loser)
        case AdminRoutes.rollout: AdminMessages.RolloutRequest(release: 1)
        case AdminRoutes.rollback: AdminMessages.RollbackRequest(to: 1)
        case AdminRoutes.requestErasure: AdminMessages.ErasureRequest(table: "customers", id: "france-secret-customer")
        default: route.method == "POST" ? [String: String]() : nil
        }
        return (path, body)
    }

    @Test("""
        answers are kept by no cache and read as what they say (no-store, nosniff), CSV too; a CSV cell starting with a \
        tab or carriage return before a formula is neutralised like one starting with =; a login from another site's page \
        (Origin, Sec-Fetch-Site) is refused, one from the console's own origin or a script is not
        """)
    func headersCSVAndLoginOrigin() async throws {
        try await withAdminFixture { f in
            let op = try await f.token("acme", "hq-op")
            let created = try await f.send("POST", "/admin/v1/tokens", json: AdminMessages.TokenRequest(name: "=HYPERLINK(\"https://evil.example/\",\"open\")", ttlSeconds: 600), token: op)
            #expect(created.status == 201 && created.headers["cache-control"] == "no-store" && created.headers["x-content-type-options"] == "nosniff",
                    "an answer holding a new API token: \(created.headers)")
            // A token's name holds no control character any more; other text in the log may
            // start with a tab or a carriage return (written here as the library would).
            #expect(try await f.send("POST", "/admin/v1/tokens", json: AdminMessages.TokenRequest(name: "\r=1+1", ttlSeconds: 600), token: op).status == 422)
            // A lifetime out of range, negative included, is answered as such (a negative one
            // was JSON that could not be read, 400 malformed_json).
            for ttl: Int64 in [-600, 0, 59, 367 * 86_400] {
                let refused = try await f.send("POST", "/admin/v1/tokens", json: AdminMessages.TokenRequest(name: "ci", ttlSeconds: ttl), token: op)
                #expect(refused.status == 422 && refused.error?.code == "invalid_ttl", "\(ttl): \(refused.status) \(refused.text)")
            }
            let negativeEnrollment = try await f.send("POST", "/admin/v1/enrollment-tokens",
                                                      json: AdminMessages.EnrollmentTokenRequest(node: "germany-d9", parent: "germany", ttlSeconds: -1), token: op)
            #expect(negativeEnrollment.status == 422 && negativeEnrollment.error?.code == "invalid_ttl", "\(negativeEnrollment.text)")
            for target in ["\t=HYPERLINK(\"https://evil.example/\",\"open\")", "\r=1+1"] {
                try await f.accounts.appendAudit(AuditEntry(tenant: "acme", actor: "hq-op", action: "token.create", target: target, detail: "",
                                                            address: "127.0.0.1", scope: "acme-hq", atMillis: WallClock.nowMillis()))
            }
            let csv = try await f.send("GET", "/admin/v1/audit?format=csv", token: op)
            #expect(csv.headers["cache-control"] == "no-store" && csv.headers["x-content-type-options"] == "nosniff", "\(csv.headers)")
            #expect(csv.text.contains("\"'\t=HYPERLINK(\"\"https://evil.example/\"\",\"\"open\"\")\"") && csv.text.contains("\"'\r=1+1\""), "\(csv.text)")
            #expect(!csv.text.contains("\"\t=") && !csv.text.contains("\"\r="))
            #expect(csv.text.contains("\"'=HYPERLINK("), "a cell starting with = is neutralised: \(csv.text)")

            let login = try JSONEncoder().encode(AdminMessages.LoginRequest(tenant: "acme", user: "hq-viewer", password: AdminFixture.password))
            for headers in [[("Origin", "https://evil.example")], [("Sec-Fetch-Site", "cross-site")], [("Origin", "null")]] {
                let refused = try await f.client.send("POST", "/admin/v1/login", body: login, headers: headers)
                #expect(refused.status == 403 && refused.error?.code == "cross_site" && refused.headers["set-cookie"] == nil, "\(headers): \(refused.text)")
                let form = Data("tenant=acme&user=hq-viewer&password=\(AdminFixture.password.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)".utf8)
                let console = try await f.client.send("POST", "/console/login", body: form, headers: headers + [("Content-Type", "application/x-www-form-urlencoded")])
                #expect(console.status == 403 && console.headers["set-cookie"] == nil && console.text.contains("Log in from this console"), "\(headers): \(console.status)")
            }
            for headers in [[("Origin", f.client.baseURL), ("Sec-Fetch-Site", "same-origin")], []] {
                let allowed = try await f.client.send("POST", "/admin/v1/login", body: login, headers: headers)
                #expect(allowed.status == 200 && allowed.headers["set-cookie"] != nil, "\(headers): \(allowed.text)")
            }
        }
    }

    @Test("every admin route against no credential, an expired token, the wrong role, another tenant's admin and a country admin reaching outside their subtree: 401 or 403, and no foreign data in any body",
          arguments: StorageEngine.testable)
    func isolation(engine: StorageEngine) async throws {
        try await withAdminFixture(engine: engine) { f in
            // Something of france's in the quarantine and the audit log.
            let bad = Change(origin: "france", originSeq: 1, hlc: HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: 0),
                             table: "no_such_table", recordID: "france-secret-record", op: .upsert, fields: [:])
            #expect(try await f.client.send("POST", "/v1/push", json: PushRequest(through: 1, changes: [bad]), credential: f.france).status == 422)
            let quarantineID = try #require(try await f.hub.tenantStore(for: "acme").quarantinedChanges(limit: 10).first?.id)
            let secret = Change(origin: "france", originSeq: 2, hlc: HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: 0),
                                table: "customers", recordID: "france-secret-customer", op: .upsert, fields: ["owning_dealer": "france", "last_name": "france-secret-name"])
            #expect(try await f.client.send("POST", "/v1/push", json: PushRequest(through: 2, changes: [secret]), credential: f.france).status == 200)
            let franceToken = try await f.token("acme", "france-op")
            #expect(try await f.send("POST", "/admin/v1/tokens", json: AdminMessages.TokenRequest(name: "france-secret-token", ttlSeconds: 600), token: franceToken).status == 201)

            let expired = try await f.token("acme", "hq-op", expiresInMillis: -1_000)
            let viewer = try await f.token("acme", "hq-viewer")
            let globex = try await f.token("globex", "gx-op")
            let germany = try await f.token("acme", "germany-op")
            let foreignToGlobex = ["acme", "germany", "france"]
            let foreignToGermany = ["france"]
            for route in AdminRoutes.all where route != AdminRoutes.login && route != AdminRoutes.logout {
                let (path, body) = Self.sample(route, quarantineID: quarantineID)
                let what = "\(route.method) \(path)"
                // No credential, an expired token: 401.
                for token in [nil, expired] as [String?] {
                    let reply = try await f.send(route.method, path, json: body, token: token)
                    #expect(reply.status == 401, "\(what) without a valid credential: \(reply.status) \(reply.text)")
                    #expect(!foreignToGlobex.contains { reply.text.contains($0) }, "\(what): \(reply.text)")
                }
                // The wrong role: a viewer on a route that needs more.
                if route.role != .viewer {
                    let reply = try await f.send(route.method, path, json: body, token: viewer)
                    #expect(reply.status == 403, "\(what) as a viewer: \(reply.status) \(reply.text)")
                }
                // Another tenant's admin; a country admin outside their subtree.
                for (token, foreign, who, tenantWide) in [(globex, foreignToGlobex, "globex's admin", true), (germany, foreignToGermany, "germany's admin", false)] {
                    let reply = try await f.send(route.method, path, json: body, token: token)
                    // Routes that name something of france's, or are for tenant-wide admins only,
                    // are refused; the others answer with the caller's own view.
                    let names = path.contains("france") || path.contains("/quarantine/") || (route.tenantWide && !tenantWide)
                        || body is AdminMessages.EnrollmentTokenRequest || body is AdminMessages.CreateUserRequest
                    if names {
                        #expect([401, 403].contains(reply.status), "\(what) as \(who): \(reply.status) \(reply.text)")
                    } else {
                        // Their own tenant's view or act (which may fail on its own terms: no release key, bad sources).
                        #expect(![401, 500].contains(reply.status), "\(what) as \(who) is their own view: \(reply.status) \(reply.text)")
                    }
                    for marker in foreign + ["france-secret"] {
                        #expect(!reply.text.contains(marker), "\(what) as \(who) shows '\(marker)': \(reply.text.prefix(600))")
                    }
                }
            }
            // Nothing was changed by the refused requests: france is not revoked, no user was added.
            #expect(try await f.client.send("GET", "/v1/whoami", credential: f.france).status == 200)
            #expect(try await f.accounts.adminUsers(of: "acme").map(\.name).sorted() == ["france-op", "germany-op", "hq-op", "hq-reviewer", "hq-viewer"])
            #expect(try await f.hub.tenantStore(for: "acme").quarantinedChanges(limit: 10).count == 1)
        }
    }

    @Test("""
        a node's KPI snapshot with a target or value no chart can draw (-1e300, 1e300) is drawn at the chart's edge: converting it \
        to a pixel trapped and the hub died for every tenant at each view of the console's KPI page
        """, arguments: StorageEngine.testable)
    func kpiChartOfWildSnapshot(engine: StorageEngine) async throws {
        try await withAdminFixture(engine: engine) { f in
            let snapshot = Change(origin: "france", originSeq: 1, hlc: HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: 0),
                                  table: "kpi_snapshots", recordID: "france:kpix:month:2026-12-01", op: .upsert, fields: [
                                    "node": "france", "path": "acme-hq/france", "kpi": "kpix", "name": "X", "unit": "seconds", "period": "month",
                                    "period_start": "2026-12-01", "numerator": .int(1_000), "denominator": .int(1), "value": .double(1e300),
                                    "target_kind": "at_most", "target": .double(-1e300)])
            let pushed = try await f.client.send("POST", "/v1/push", json: PushRequest(through: 1, changes: [snapshot]), credential: f.france)
            #expect(pushed.status == 200, "\(pushed.text)")
            let hq = try await f.token("acme", "hq-op")
            let page = try await f.send("GET", "/console/kpis?period=month", token: hq)
            #expect(page.status == 200 && page.text.contains("data-kpi=\"kpix\""), "\(page.status) \(page.text.prefix(300))")
            #expect(try await f.client.send("GET", "/v1/whoami", credential: f.germany).status == 200, "the hub still serves")
        }
    }

    @Test("""
        the console's KPI page shows the current period by default, though a later one has values (dialogues dated ahead), \
        lists the periods with values and shows the one asked for; a period whose only values are 0/0 is neither listed nor \
        shown (helper 107: the latest period was the only one reachable, future or empty)
        """, arguments: StorageEngine.testable)
    func kpiPagePeriods(engine: StorageEngine) async throws {
        try await withAdminFixture(engine: engine) { f in
            let today = KPIDay.of(millis: Int64(WallClock.nowMillis()))
            let month = { (day: Int64) in KPIDay.label(KPIPeriodKind.month.start(ofDay: day)) }
            let (current, ahead, before, empty) = (month(today), month(today + 40), month(today - 40), month(today - 80))
            let snapshots = [(current, 3, 4), (ahead, 1, 1), (before, 1, 2), (empty, 0, 0)].enumerated().map { i, s in
                Change(origin: "france", originSeq: Int64(i + 1), hlc: HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: UInt16(i)),
                       table: "kpi_snapshots", recordID: "france:kpix:month:\(s.0)", op: .upsert, fields: [
                        "node": "france", "path": "acme-hq/france", "kpi": "kpix", "name": "X", "unit": "percent", "period": "month",
                        "period_start": .string(s.0), "numerator": .int(Int64(s.1)), "denominator": .int(Int64(s.2)),
                        "target_kind": "at_least", "target": .double(50)])
            }
            // Just under its target: written as the CLI writes it (it read 80.0 % beside a miss of 80 %).
            let close = Change(origin: "france", originSeq: 5, hlc: HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: 9),
                               table: "kpi_snapshots", recordID: "france:kpiy:month:\(current)", op: .upsert, fields: [
                                "node": "france", "path": "acme-hq/france", "kpi": "kpiy", "name": "Y", "unit": "percent", "period": "month",
                                "period_start": .string(current), "numerator": .int(19_999), "denominator": .int(25_000),
                                "target_kind": "at_least", "target": .double(80)])
            let pushed = try await f.client.send("POST", "/v1/push", json: PushRequest(through: 5, changes: snapshots + [close]), credential: f.france)
            #expect(pushed.status == 200, "\(pushed.text)")
            let hq = try await f.token("acme", "hq-op")
            let page = try await f.send("GET", "/console/kpis?period=month", token: hq)
            #expect(page.text.contains("acme-hq: 79.996 %"), "\(page.text)")
            #expect(page.status == 200)
            #expect(page.text.contains("this month from <span id=\"period-start\">\(current)</span>"), "\(page.text)")
            #expect(page.text.contains("acme-hq: 75 %"), "the current month’s 3/4")
            for listed in [current, ahead, before] { #expect(page.text.contains("<option value=\"\(listed)\""), "\(listed) listed") }
            #expect(!page.text.contains("<option value=\"\(empty)\""), "0/0 is no value")
            let earlier = try await f.send("GET", "/console/kpis?period=month&start=\(before)", token: hq)
            #expect(earlier.text.contains("in the month from <span id=\"period-start\">\(before)</span>") && earlier.text.contains("acme-hq: 50 %"),
                    "\(earlier.text)")
            // A day of a month without values: the nearest month before it with values.
            let within = try await f.send("GET", "/console/kpis?period=month&start=\(KPIDay.label(today + 40))", token: hq)
            #expect(within.text.contains("<span id=\"period-start\">\(ahead)</span>") && within.text.contains("acme-hq: 100 %"))
            let bogus = try await f.send("GET", "/console/kpis?period=month&start=%3Cb%3E", token: hq)
            #expect(bogus.status == 200 && bogus.text.contains("<span id=\"period-start\">\(current)</span>") && !bogus.text.contains("<b>"))
        }
    }

    @Test("""
        new node and tenant names starting with '.' are refused ("." and ".." are path segments: the console's revoke form of \
        a node ".." posted to /console/revoke; a tenant ".x" was a hidden file the backup's tenants/*.sqlite missed); names \
        already given are still read
        """, arguments: StorageEngine.testable)
    func dotNamesAreRefused(engine: StorageEngine) async throws {
        try await withAdminFixture(engine: engine) { f in
            let hq = try await f.token("acme", "hq-op")
            for name in ["..", ".", ".hidden"] {
                let reply = try await f.send("POST", "/admin/v1/enrollment-tokens", json: ["node": name, "parent": "germany"], token: hq)
                #expect([400, 422].contains(reply.status) && reply.text.contains("a new name may not start with '.'"), "\(name): \(reply.status) \(reply.text)")
            }
            await #expect(throws: StoreError.self) { try await f.hub.catalogStore.createTenant(".x", root: "hq", levels: 2, allowDirectSync: false, nowMillis: 1) }
            if engine == .sqlite {
                let dir = try TempDir()
                let tenant = try Child.capture(["admin", "create-tenant", "--data", dir.path, "--tenant", ".."])
                #expect(tenant.status != 0 && tenant.output.contains("a new name may not start with '.'"), "\(tenant)")
                #expect(!FileManager.default.fileExists(atPath: dir.path + "/tenants/...sqlite"))
            }
            #expect(NodeID.isValid("a.b") && NodeID.isValid("de-1") && NodeID.isValid(".de"), "read as before")
        }
    }

    @Test("""
        a node name promised under one country (a pending token) cannot be claimed under another: a country admin \
        gets the 403 an existing node's name gets, naming nothing; HQ's operator is told why; the name stays the first country's
        """, arguments: StorageEngine.testable)
    func promisedNames(engine: StorageEngine) async throws {
        try await withAdminFixture(engine: engine) { f in
            let promised = try await f.hub.catalogStore.issueEnrollmentToken(tenant: "acme", node: "france-c", parent: "france")
            let germany = try await f.token("acme", "germany-op")
            func claim(_ node: NodeID, as token: String) async throws -> (status: Int, text: String) {
                let reply = try await f.send("POST", "/admin/v1/enrollment-tokens",
                                             json: AdminMessages.EnrollmentTokenRequest(node: node, parent: "germany"), token: token)
                return (reply.status, reply.text)
            }
            let pending = try await claim("france-c", as: germany)
            let existing = try await claim("france", as: germany)
            #expect(pending.status == 403 && pending.status == existing.status && pending.text == existing.text, "\(pending) \(existing)")
            #expect(!pending.text.contains("france"), "\(pending.text)")
            let hq = try await claim("france-c", as: try await f.token("acme", "hq-op"))
            #expect(hq.status == 422 && hq.text.contains("node 'france-c' has a pending enrollment token under 'france'"), "\(hq)")
            // The first country's token still enrolls it there.
            let enrolled = try await f.hub.catalogStore.redeem(token: promised, via: Principal(tenant: "acme", node: "france"), nowMillis: WallClock.nowMillis())
            #expect(enrolled.parent == "france")
        }
    }

    @Test("""
        an administrator grants only roles they hold (viewer aside) and never changes their own: an operator cannot make \
        themselves, another or a new user publisher or reviewer; one who holds those roles can
        """, arguments: StorageEngine.testable)
    func rolesGrantedOnlyByHolders(engine: StorageEngine) async throws {
        try await withAdminFixture(engine: engine) { f in
            try await f.accounts.createAdminUser(AdminUser(tenant: "acme", name: "hq-ops-only", roles: [.operator], scope: "acme-hq",
                                                           createdAtMillis: WallClock.nowMillis()), passwordHash: try PasswordHash.make(AdminFixture.password))
            let op = try await f.token("acme", "hq-ops-only")
            let selfGrant = try await f.send("POST", "/admin/v1/users/hq-ops-only", json: AdminMessages.UpdateUserRequest(roles: [.operator, .publisher, .reviewer]), token: op)
            #expect(selfGrant.status == 403 && selfGrant.text.contains("cannot change their own roles"), "\(selfGrant.text)")
            let accomplice = try await f.send("POST", "/admin/v1/users", json: AdminMessages.CreateUserRequest(name: "accomplice", password: "another long password",
                                                                                                                roles: [.publisher, .reviewer]), token: op)
            #expect(accomplice.status == 403 && accomplice.error?.code == "role_not_held" && accomplice.text.contains("not publisher, reviewer"), "\(accomplice.text)")
            let raise = try await f.send("POST", "/admin/v1/users/hq-viewer", json: AdminMessages.UpdateUserRequest(roles: [.viewer, .reviewer]), token: op)
            #expect(raise.status == 403 && raise.error?.code == "role_not_held", "\(raise.text)")
            // Viewer and what the caller holds: granted.
            let peer = try await f.send("POST", "/admin/v1/users", json: AdminMessages.CreateUserRequest(name: "peer", password: "another long password",
                                                                                                          roles: [.viewer, .operator]), token: op)
            #expect(peer.status == 201, "\(peer.text)")
            // A name that differs from another's only in case is refused: the two read as one
            // account in the audit log (helper 98).
            let lookalike = try await f.send("POST", "/admin/v1/users", json: AdminMessages.CreateUserRequest(name: "PEER", password: "another long password",
                                                                                                               roles: [.viewer]), token: op)
            #expect(lookalike.status >= 400 && lookalike.status < 500 && lookalike.text.contains("differs from 'PEER' only in case"), "\(lookalike.status) \(lookalike.text)")
            // An administrator holding reviewer may grant it.
            let granted = try await f.send("POST", "/admin/v1/users/hq-viewer", json: AdminMessages.UpdateUserRequest(roles: [.viewer, .reviewer]),
                                           token: try await f.token("acme", "hq-op"))
            #expect(granted.status == 200, "\(granted.text)")
            let users = Dictionary(uniqueKeysWithValues: try await f.accounts.adminUsers(of: "acme").map { ($0.name, $0.roles) })
            #expect(users["accomplice"] == nil && users["hq-ops-only"] == [.operator] && users["peer"] == [.viewer, .operator]
                    && users["hq-viewer"] == [.viewer, .reviewer], "\(users)")
        }
    }

    @Test("an HQ operator sees the tree with state and lag, revokes a node (refused at its next request), issues an enrollment token, replays a quarantined change once its cause is fixed and discards another with a reason; each act is in the audit log, exportable as CSV",
          arguments: StorageEngine.testable)
    func operatorActs(engine: StorageEngine) async throws {
        try await withAdminFixture(engine: engine) { f in
            let op = try await f.token("acme", "hq-op")
            // germany reports a backlog.
            #expect(try await f.client.send("POST", "/v1/status", json: StatusRequest(reports: [LagReport(node: "germany", pending: 4, oldestPendingMillis: 90_000, clockOffsetMillis: -4_200)]),
                                            credential: f.germany).status == 200)
            let tree = try await f.send("GET", "/admin/v1/nodes", token: op)
            #expect(tree.status == 200)
            let nodes = try tree.decode(AdminMessages.NodesResponse.self)
            #expect(nodes.nodes.map(\.path) == ["acme-hq", "acme-hq/france", "acme-hq/germany"])
            let germany = try #require(nodes.nodes.first { $0.node == "germany" })
            #expect(germany.lag?.pending == 4 && (germany.lag?.oldestPendingMillis ?? 0) >= 90_000)
            #expect(germany.lag?.clockOffsetMillis == -4_200, "its clock runs 4.2 s behind, as it reported")
            // The node this hub is: active, seen now (it was never seen, for good).
            let root = try #require(nodes.nodes.first { $0.node == "acme-hq" })
            #expect(root.state == "active" && (root.lastSeenMillis ?? 0) >= WallClock.nowMillis() - 60_000, "\(root)")
            // Paging and filters.
            let page = try await f.send("GET", "/admin/v1/nodes?limit=2", token: op).decode(AdminMessages.NodesResponse.self)
            #expect(page.nodes.count == 2 && page.total == 3 && page.next == "acme-hq/france")
            let rest = try await f.send("GET", "/admin/v1/nodes?limit=2&after=acme-hq/france", token: op).decode(AdminMessages.NodesResponse.self)
            #expect(rest.nodes.map(\.node) == ["germany"] && rest.next == nil)
            #expect(try await f.send("GET", "/admin/v1/nodes?q=germ", token: op).decode(AdminMessages.NodesResponse.self).nodes.map(\.node) == ["germany"])
            #expect(try await f.send("GET", "/admin/v1/nodes?state=bogus", token: op).status == 400)
            // A country admin sees their own subtree only.
            let germanyView = try await f.send("GET", "/admin/v1/nodes", token: try await f.token("acme", "germany-op")).decode(AdminMessages.NodesResponse.self)
            #expect(germanyView.nodes.map(\.node) == ["germany"])

            // Quarantine: france writes a record it does not hold (routed to germany's dealer
            // line), refused as forbidden; HQ then routes that record to france too (the fix),
            // and the replay stores it.
            let owner = Change(origin: "germany", originSeq: 1, hlc: HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: 0),
                               table: "customers", recordID: "c-shared", op: .upsert, fields: ["owning_dealer": "germany", "last_name": "Alt"])
            #expect(try await f.client.send("POST", "/v1/push", json: PushRequest(through: 1, changes: [owner]), credential: f.germany).status == 200)
            let edit = Change(origin: "france", originSeq: 1, hlc: HLCTimestamp(wallMillis: WallClock.nowMillis() + 1, counter: 0),
                              table: "customers", recordID: "c-shared", op: .upsert, fields: ["last_name": "Neu"])
            let refused = try await f.client.send("POST", "/v1/push", json: PushRequest(through: 1, changes: [edit]), credential: f.france)
            #expect(refused.status == 422)
            let junk = Change(origin: "france", originSeq: 2, hlc: HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: 0),
                              table: "no_such_table", recordID: "x", op: .upsert, fields: [:])
            #expect(try await f.client.send("POST", "/v1/push", json: PushRequest(through: 2, changes: [junk]), credential: f.france).status == 422)
            let listed = try await f.send("GET", "/admin/v1/quarantine", token: op).decode(AdminMessages.QuarantineResponse.self)
            #expect(listed.changes.map(\.code) == ["forbidden", "unknown_table"])
            let (forbiddenID, junkID) = (listed.changes[0].id, listed.changes[1].id)
            let tooEarly = try await f.send("POST", "/admin/v1/quarantine/\(forbiddenID)/replay", token: op).decode(AdminMessages.ReplayResponse.self)
            #expect(tooEarly.outcome == "refused" && tooEarly.code == "forbidden")
            let reroute = Change(origin: "germany", originSeq: 2, hlc: HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: 1),
                                 table: "customers", recordID: "c-shared", op: .upsert, fields: ["servicing_dealer": "france"])
            #expect(try await f.client.send("POST", "/v1/push", json: PushRequest(through: 2, changes: [reroute]), credential: f.germany).status == 200)
            let replayed = try await f.send("POST", "/admin/v1/quarantine/\(forbiddenID)/replay", token: op)
            #expect(try replayed.decode(AdminMessages.ReplayResponse.self).outcome == "applied", "\(replayed.text)")
            let record = try await f.hub.tenantStore(for: "acme").liveRecords(inTable: "customers").first { $0.id == "c-shared" }
            #expect(record?.values["last_name"] == .string("Neu"))
            #expect(try await f.send("POST", "/admin/v1/quarantine/\(junkID)/discard", json: AdminMessages.DiscardRequest(reason: " "), token: op).status == 422)
            // A NUL failed the write on PostgreSQL (500) and cut the reason short on SQLite.
            let nulReason = try await f.send("POST", "/admin/v1/quarantine/\(junkID)/discard", json: AdminMessages.DiscardRequest(reason: "no\u{0}pe"), token: op)
            #expect(nulReason.status == 422 && nulReason.error?.code == "invalid_reason", "\(nulReason.status) \(nulReason.text)")
            let longReason = try await f.send("POST", "/admin/v1/quarantine/\(junkID)/discard", json: AdminMessages.DiscardRequest(reason: String(repeating: "x", count: 501)), token: op)
            #expect(longReason.status == 422 && longReason.error?.code == "invalid_reason", "\(longReason.status) \(longReason.text)")
            let nulToken = try await f.send("POST", "/admin/v1/tokens", json: AdminMessages.TokenRequest(name: "ci\u{0}bot", ttlSeconds: 3_600), token: op)
            #expect(nulToken.status == 422 && nulToken.error?.code == "invalid_name", "\(nulToken.status) \(nulToken.text)")
            #expect(try await f.send("POST", "/admin/v1/quarantine/\(junkID)/discard", json: AdminMessages.DiscardRequest(reason: "test data from a broken build"), token: op).status == 200)
            #expect(try await f.hub.tenantStore(for: "acme").quarantinedChanges(limit: 10).isEmpty)

            // Revoke: france's next request is refused.
            let revoked = try await f.send("POST", "/admin/v1/nodes/france/revoke", token: op)
            #expect(revoked.status == 200)
            #expect(try revoked.decode(AdminMessages.RevocationResponse.self).credentials == 1)
            #expect(try await f.client.send("GET", "/v1/whoami", credential: f.france).status == 401)
            #expect(try await f.send("POST", "/admin/v1/nodes/acme-hq/revoke", token: op).status == 403, "the root is not the admin's to revoke")
            // An enrollment token for a dealer under germany.
            let issued = try await f.send("POST", "/admin/v1/enrollment-tokens", json: AdminMessages.EnrollmentTokenRequest(node: "germany-d2", parent: "germany"), token: op)
            #expect(issued.status == 201)
            #expect(try issued.decode(AdminMessages.EnrollmentTokenResponse.self).token.hasPrefix("tse_"))

            // The audit log, newest first, and as CSV.
            let audit = try await f.send("GET", "/admin/v1/audit", token: op).decode(AdminMessages.AuditResponse.self)
            let actions = audit.entries.map(\.action)
            #expect(Array(actions.prefix(5)) == ["enrollment_token.issue", "node.revoke", "quarantine.discard", "quarantine.replay", "quarantine.replay"])
            #expect(audit.entries.first { $0.action == "quarantine.discard" }?.detail.contains("test data from a broken build") == true)
            #expect(audit.entries.allSatisfy { $0.actor == "hq-op" && $0.address == "127.0.0.1" })
            let csv = try await f.send("GET", "/admin/v1/audit?format=csv", token: op)
            #expect(csv.headers["content-type"]?.hasPrefix("text/csv") == true)
            let lines = csv.text.split(separator: "\n")
            #expect(lines.first == "id,at,actor,action,target,detail,address,scope" && lines.count == audit.entries.count + 1)
            // A germany admin sees neither HQ's acts nor france's.
            let germanyAudit = try await f.send("GET", "/admin/v1/audit", token: try await f.token("acme", "germany-op")).decode(AdminMessages.AuditResponse.self)
            #expect(germanyAudit.entries.isEmpty)
            // No one disables themselves: the tenant keeps an administrator who can undo it.
            let selfDisable = try await f.send("POST", "/admin/v1/users/hq-op", json: AdminMessages.UpdateUserRequest(disabled: true), token: op)
            #expect(selfDisable.status == 422 && selfDisable.error?.code == "refused", "\(selfDisable.text)")
            #expect(try await f.send("GET", "/admin/v1/me", token: op).status == 200)
        }
    }

    @Test("four-eyes releases: with the tenant setting on, a publisher's release waits; its author cannot approve it; a reviewer's approval signs and rolls it out once; a rejection keeps its reason; the history names who asked, who decided and when",
          arguments: StorageEngine.testable)
    func fourEyesReleases(engine: StorageEngine) async throws {
        try await withAdminFixture(engine: engine) { f in
            try await f.installReleaseKey()
            let author = try await f.token("acme", "hq-op"), reviewer = try await f.token("acme", "hq-reviewer")
            let sources = try AdminFixture.governanceSources()
            // Validation first: a broken file is reported with where it is.
            var broken = sources
            broken[0].text += "\n  nonsense: [unclosed"
            let invalid = try await f.send("POST", "/admin/v1/releases/validate", json: AdminMessages.ReleaseSources(sources: broken), token: reviewer)
            #expect(invalid.status == 200)
            #expect(try invalid.decode(AdminMessages.Validation.self).valid == false)
            #expect(try await f.send("POST", "/admin/v1/releases", json: AdminMessages.ReleaseSources(sources: broken), token: author).status == 422)

            try await (f.accounts as! any ReleaseApprovalStore).setRequiresReleaseApproval(true, for: "acme")
            let requested = try await f.send("POST", "/admin/v1/releases", json: AdminMessages.ReleaseSources(sources: sources, notes: "spring rules"), token: author)
            #expect(requested.status == 202, "\(requested.text)")
            let request = try #require(try requested.decode(AdminMessages.PublishResponse.self).request)
            #expect(request.state == .pending && request.author == "hq-op")
            // Nothing is published while it waits.
            #expect(try await f.hub.tenantStore(for: "acme").governanceDocuments(ofKind: "release", keys: nil).isEmpty)
            let own = try await f.send("POST", "/admin/v1/release-requests/\(request.id)/approve", token: author)
            #expect(own.status == 403 && own.error?.code == "own_release")
            let viewer = try await f.send("POST", "/admin/v1/release-requests/\(request.id)/approve", token: try await f.token("acme", "hq-viewer"))
            #expect(viewer.status == 403)
            // Nor with a reviewer account the author adds, choosing its password: one person's release (it was signed and rolled out).
            let sock = try await f.send("POST", "/admin/v1/users", json: AdminMessages.CreateUserRequest(name: "sock", password: "a long enough password", roles: [.reviewer]),
                                        token: author)
            #expect(sock.status == 201, "\(sock.text)")
            let bySock = try await f.send("POST", "/admin/v1/release-requests/\(request.id)/approve", token: try await f.token("acme", "sock"))
            #expect(bySock.status == 403 && bySock.error?.code == "own_release" && bySock.text.contains("chose the password of 'sock'"), "\(bySock.text)")
            #expect(try await f.hub.tenantStore(for: "acme").governanceDocuments(ofKind: "release", keys: nil).isEmpty)
            #expect(try await f.accounts.passwordChooser(of: "sock", in: "acme") == "hq-op")
            // Nor through an account it added that adds the reviewer: the author knows both passwords.
            #expect(try await f.send("POST", "/admin/v1/users", json: AdminMessages.CreateUserRequest(name: "proxy", password: "a long enough password",
                                                                                                      roles: [.operator, .reviewer]), token: author).status == 201)
            #expect(try await f.send("POST", "/admin/v1/users", json: AdminMessages.CreateUserRequest(name: "sock2", password: "a long enough password",
                                                                                                      roles: [.reviewer]), token: try await f.token("acme", "proxy")).status == 201)
            let bySock2 = try await f.send("POST", "/admin/v1/release-requests/\(request.id)/approve", token: try await f.token("acme", "sock2"))
            #expect(bySock2.status == 403 && bySock2.error?.code == "own_release" && bySock2.text.contains("which added 'sock2'"), "\(bySock2.text)")
            let approved = try await f.send("POST", "/admin/v1/release-requests/\(request.id)/approve", token: reviewer)
            #expect(approved.status == 200, "\(approved.text)")
            #expect(try approved.decode(AdminMessages.PublishResponse.self).version == 1)
            #expect(try await f.hub.tenantStore(for: "acme").governanceDocuments(ofKind: "release", keys: nil).count == 1)
            let again = try await f.send("POST", "/admin/v1/release-requests/\(request.id)/approve", token: reviewer)
            #expect(again.status == 409)
            // An id no request can have is a bad parameter (it was 403 out_of_scope); an unknown one is out of scope.
            for id in ["abc", "0", "99999999999999999999"] {
                let bad = try await f.send("POST", "/admin/v1/release-requests/\(id)/reject", json: AdminMessages.DiscardRequest(reason: "x"), token: reviewer)
                #expect(bad.status == 400 && bad.error?.code == "invalid_parameter", "\(id): \(bad.status) \(bad.text)")
            }
            #expect(try await f.send("POST", "/admin/v1/release-requests/987654/approve", token: reviewer).status == 403)
            #expect(try await f.hub.tenantStore(for: "acme").governanceDocuments(ofKind: "release", keys: nil).count == 1, "approved once, published once")
            // germany is served the release.
            let bundle = try await f.client.send("GET", "/v1/governance", credential: f.germany)
            #expect(bundle.status == 200 && bundle.text.contains("\"release\""))

            // A second request, rejected with a reason.
            let second = try #require(try await f.send("POST", "/admin/v1/releases", json: AdminMessages.ReleaseSources(sources: sources, notes: "try again"), token: author)
                .decode(AdminMessages.PublishResponse.self).request)
            #expect(try await f.send("POST", "/admin/v1/release-requests/\(second.id)/reject", json: AdminMessages.DiscardRequest(reason: "KPI targets too low"),
                                     token: reviewer).status == 200)
            let history = try await f.send("GET", "/admin/v1/releases", token: try await f.token("acme", "hq-viewer")).decode(AdminMessages.ReleasesResponse.self)
            #expect(history.fourEyes)
            #expect(history.releases.map(\.version) == [1])
            #expect(history.releases[0].notes?.contains("requested by hq-op, approved by hq-reviewer") == true)
            #expect(history.requests.map(\.state) == [.rejected, .approved])
            #expect(history.requests[0].reviewer == "hq-reviewer" && history.requests[0].reason == "KPI targets too low" && history.requests[0].decidedAtMillis != nil)
            #expect(history.requests[1].version == 1 && history.requests.allSatisfy { $0.sources.isEmpty })
            // A rollback needs a release to go back to; a rollout of v1 to germany works.
            #expect(try await f.send("POST", "/admin/v1/rollouts", json: AdminMessages.RolloutRequest(release: 1, targets: ["germany"]), token: author).status == 200)
            let audit = try await f.accounts.audit(of: "acme", scopes: nil, before: nil, limit: 50).map(\.action)
            for action in ["release.request", "release.approve", "release.reject", "release.rollout"] { #expect(audit.contains(action)) }

            // Nor the other way round: a reviewer approving a request of a publisher it added (it knows the author's
            // password; the release was signed and rolled out), nor one of two accounts the same operator added.
            #expect(try await f.send("POST", "/admin/v1/users", json: AdminMessages.CreateUserRequest(name: "erin", password: "a long enough password",
                                                                                                      roles: [.publisher]), token: author).status == 201)
            let byErin = try #require(try await f.send("POST", "/admin/v1/releases", json: AdminMessages.ReleaseSources(sources: sources, notes: "erin's"),
                                                       token: try await f.token("acme", "erin")).decode(AdminMessages.PublishResponse.self).request)
            let byErinsMaker = try await f.send("POST", "/admin/v1/release-requests/\(byErin.id)/approve", token: author)
            #expect(byErinsMaker.status == 403 && byErinsMaker.error?.code == "own_release"
                    && byErinsMaker.text.contains("'hq-op' chose the password of 'erin', who requested it"), "\(byErinsMaker.text)")
            let bySibling = try await f.send("POST", "/admin/v1/release-requests/\(byErin.id)/approve", token: try await f.token("acme", "sock"))
            #expect(bySibling.status == 403 && bySibling.error?.code == "own_release"
                    && bySibling.text.contains("'hq-op' chose the passwords of both 'erin', who requested it, and 'sock'"), "\(bySibling.text)")
            #expect(try await f.hub.tenantStore(for: "acme").governanceDocuments(ofKind: "release", keys: nil).count == 1, "nothing more was published")
            let byOther = try await f.send("POST", "/admin/v1/release-requests/\(byErin.id)/approve", token: reviewer)
            #expect(byOther.status == 200, "\(byOther.text)")
        }
    }

    @Test("release history: a country's administrator sees what reaches their country, not another country's trial (its notes and whom it targets), which that country is never sent")
    func releaseHistoryScope() async throws {
        try await withAdminFixture { f in
            try await f.installReleaseKey()
            let op = try await f.token("acme", "hq-op")
            let sources = try AdminFixture.governanceSources()
            #expect(try await f.send("POST", "/admin/v1/releases", json: AdminMessages.ReleaseSources(sources: sources, notes: "for everyone"), token: op).status == 201)
            let trial = try await f.send("POST", "/admin/v1/releases", json: AdminMessages.ReleaseSources(sources: sources, notes: "germany-only price trial", targets: ["germany"]), token: op)
            #expect(trial.status == 201, "\(trial.text)")
            let france = try await f.send("GET", "/admin/v1/releases", token: try await f.token("acme", "france-op")).decode(AdminMessages.ReleasesResponse.self)
            #expect(france.releases.map(\.version) == [1] && !france.releases.contains { $0.notes?.contains("germany") == true }, "\(france.releases)")
            #expect(!france.rollouts.contains { $0.summary.contains("germany") || $0.summary.contains("v2") }, "\(france.rollouts.map(\.summary))")
            // Nor in a rollout's reason, which named the trial's targets (helper 108).
            let franceRaw = try await f.send("GET", "/admin/v1/releases", token: try await f.token("acme", "france-op")).text
            #expect(!franceRaw.contains("germany"), "\(franceRaw)")
            let germany = try await f.send("GET", "/admin/v1/releases", token: try await f.token("acme", "germany-op")).decode(AdminMessages.ReleasesResponse.self)
            #expect(germany.releases.map(\.version) == [2, 1] && germany.rollouts.first?.summary.contains("v2 → germany") == true, "\(germany.rollouts.map(\.summary))")
            let hq = try await f.send("GET", "/admin/v1/releases", token: op).decode(AdminMessages.ReleasesResponse.self)
            #expect(hq.releases.map(\.version) == [2, 1])
            // Notes past 1,000 characters are refused, not cut short (helper 108); nothing is published.
            let long = try await f.send("POST", "/admin/v1/releases", json: AdminMessages.ReleaseSources(sources: sources, notes: String(repeating: "n", count: 1_001)), token: op)
            #expect(long.status == 422 && long.text.contains("invalid_notes") && long.text.contains("1001"), "\(long.status) \(long.text)")
            #expect(try await f.send("GET", "/admin/v1/releases", token: op).decode(AdminMessages.ReleasesResponse.self).releases.count == 2)
            // A trial of both countries: each reads only its own name in it, here and in the
            // rollout status a node reads.
            #expect(try await f.send("POST", "/admin/v1/releases", json: AdminMessages.ReleaseSources(sources: sources, notes: "both", targets: ["germany", "france"]), token: op).status == 201)
            let both = try await f.send("GET", "/admin/v1/releases", token: try await f.token("acme", "france-op")).decode(AdminMessages.ReleasesResponse.self)
            #expect(both.rollouts.first?.summary.hasPrefix("v3 → france;") == true && !both.rollouts.contains { $0.summary.contains("germany") }, "\(both.rollouts.map(\.summary))")
            let status = try await f.client.send("GET", "/v1/governance/status", credential: f.france).decode(RolloutStatusResponse.self)
            #expect(status.stages?.contains("germany") == false && status.stages?.contains("v3 → france") == true, "\(status.stages ?? "-")")
            // A request (four-eyes) for both countries: france reads itself as its target, and
            // not the author's notes, which name germany (helper 111).
            try await (f.accounts as! any ReleaseApprovalStore).setRequiresReleaseApproval(true, for: "acme")
            let asked = try await f.send("POST", "/admin/v1/releases", json: AdminMessages.ReleaseSources(sources: sources, notes: "germany and france pilot",
                                                                                                        targets: ["germany", "france"]), token: op)
            #expect(asked.status == 202, "\(asked.text)")
            let requests = try await f.send("GET", "/admin/v1/releases", token: try await f.token("acme", "france-op"))
            let shown = try #require(try requests.decode(AdminMessages.ReleasesResponse.self).requests.first)
            #expect(shown.targets == ["france"] && !requests.text.contains("germany"), "\(requests.text)")
            let atHQ = try await f.send("GET", "/admin/v1/releases", token: op).decode(AdminMessages.ReleasesResponse.self)
            #expect(atHQ.requests.first?.notes == "germany and france pilot" && atHQ.requests.first?.targets == ["germany", "france"])
        }
    }

    @Test("the conflicts inbox: a concurrent edit that lost is listed with both values (a country's administrator sees neither value nor node written outside their subtree); resolving it writes the chosen value as HQ's edit, which closes the conflict at HQ and reaches the nodes holding the record, on either engine",
          arguments: StorageEngine.testable)
    func conflictsInbox(engine: StorageEngine) async throws {
        try await withAdminFixture(engine: engine) { f in
            let op = try await f.token("acme", "hq-op")
            let now = WallClock.nowMillis()
            let won = Change(origin: "germany", originSeq: 1, hlc: HLCTimestamp(wallMillis: now, counter: 0), table: "customers", recordID: "c-1",
                             op: .upsert, fields: ["owning_dealer": "germany", "servicing_dealer": "france", "last_name": "Alt"])
            #expect(try await f.client.send("POST", "/v1/push", json: PushRequest(through: 1, changes: [won]), credential: f.germany).status == 200)
            let lost = Change(origin: "france", originSeq: 1, hlc: HLCTimestamp(wallMillis: now - 10_000, counter: 0), table: "customers", recordID: "c-1",
                              op: .upsert, fields: ["last_name": "Neu"])
            #expect(try await f.client.send("POST", "/v1/push", json: PushRequest(through: 1, changes: [lost]), credential: f.france).status == 200)
            let inbox = try await f.send("GET", "/admin/v1/conflicts", token: op).decode(AdminMessages.ConflictsResponse.self)
            let conflict = try #require(inbox.conflicts.first)
            #expect(inbox.conflicts.count == 1 && conflict.conflict.field == "last_name")
            #expect(conflict.conflict.winner == "Alt" && conflict.conflict.loser == "Neu" && conflict.conflict.loserNode == "france")
            // germany's administrator: the record is routed to germany too; france's losing
            // value and node are hidden from them (the trace hides them), and not theirs to keep.
            let germanyOp = try await f.token("acme", "germany-op")
            let seen = try await f.send("GET", "/admin/v1/conflicts", token: germanyOp).decode(AdminMessages.ConflictsResponse.self).conflicts
            #expect(seen.count == 1 && seen.first?.conflict.winner == "Alt" && seen.first?.conflict.winnerNode == "germany")
            #expect(seen.first?.conflict.loser == .string(AdminMessages.hiddenValue) && seen.first?.conflict.loserNode == AdminMessages.hiddenNode,
                    "\(seen)")
            let hidden = try await f.send("POST", "/admin/v1/conflicts/\(conflict.id)/resolve", json: AdminMessages.ResolveRequest(keep: .loser), token: germanyOp)
            #expect(hidden.status == 403 && hidden.error?.code == "hidden_value", "\(hidden.text)")
            #expect(try await f.send("POST", "/admin/v1/conflicts/\(conflict.id)/resolve", json: AdminMessages.ResolveRequest(keep: .value), token: op).status == 422)
            let resolved = try await f.send("POST", "/admin/v1/conflicts/\(conflict.id)/resolve", json: AdminMessages.ResolveRequest(keep: .loser), token: op)
            #expect(resolved.status == 200, "\(resolved.text)")
            #expect(try await f.send("GET", "/admin/v1/conflicts", token: op).decode(AdminMessages.ConflictsResponse.self).conflicts.isEmpty)
            let record = try await f.hub.tenantStore(for: "acme").liveRecords(inTable: "customers").first { $0.id == "c-1" }
            #expect(record?.values["last_name"] == "Neu")
            // france (and germany) are sent HQ's edit.
            let page = try await f.client.send("GET", "/v1/pull?cursor=0", credential: f.france).decode(PullResponse.self)
            let resolution = try #require(page.changes.first { $0.origin == "acme-hq" && $0.recordID == "c-1" })
            #expect(resolution.fields == ["last_name": "Neu"] && resolution.prior["last_name"]?.node == "germany",
                    "a causal overwrite of the value in force: \(resolution)")
            // A second resolution is numbered after the first (the hub's own sequence) and
            // stamped newer than a value written by a node whose clock runs 30 s ahead.
            let again = Change(origin: "germany", originSeq: 2, hlc: HLCTimestamp(wallMillis: now + 30_000, counter: 0), table: "customers", recordID: "c-1",
                               op: .upsert, fields: ["last_name": "Alt2"])
            let stale = Change(origin: "france", originSeq: 2, hlc: HLCTimestamp(wallMillis: now - 5_000, counter: 0), table: "customers", recordID: "c-1",
                               op: .upsert, fields: ["last_name": "Neu2"])
            #expect(try await f.client.send("POST", "/v1/push", json: PushRequest(through: 2, changes: [again]), credential: f.germany).status == 200)
            #expect(try await f.client.send("POST", "/v1/push", json: PushRequest(through: 2, changes: [stale]), credential: f.france).status == 200)
            let second = try #require(try await f.send("GET", "/admin/v1/conflicts", token: op).decode(AdminMessages.ConflictsResponse.self).conflicts.first)
            #expect(second.conflict.winner == "Alt2")
            #expect(try await f.send("POST", "/admin/v1/conflicts/\(second.id)/resolve", json: AdminMessages.ResolveRequest(keep: .winner), token: op).status == 200)
            let both = try await f.client.send("GET", "/v1/pull?cursor=0", credential: f.france).decode(PullResponse.self).changes
                .filter { $0.origin == "acme-hq" }
            #expect(both.map(\.originSeq) == [resolution.originSeq, resolution.originSeq + 1] && both.last?.fields["last_name"] == "Alt2")
            #expect(both.last.map { $0.hlc > again.hlc } == true, "\(both)")
            #expect(try await f.send("GET", "/admin/v1/conflicts", token: op).decode(AdminMessages.ConflictsResponse.self).conflicts.isEmpty)
            let audit = try await f.accounts.audit(of: "acme", scopes: nil, before: nil, limit: 10)
            #expect(audit.contains { $0.action == "conflict.resolve" && $0.target == "customers/c-1.last_name" })
        }
    }

    func store0(_ f: AdminFixture) async throws -> any HubTenantStore { try await f.hub.tenantStore(for: "acme") }

    @Test("erasure through the admin API: an HQ operator's request erases HQ's copy at once and sends the marker to the node that held the customer; the ledger shows HQ acknowledged and that node outstanding; a country admin is refused for another country's customer alike for none at all; a viewer cannot ask; on both engines",
          arguments: StorageEngine.testable)
    func erasureRequests(engine: StorageEngine) async throws {
        try await withAdminFixture(engine: engine) { f in
            let now = WallClock.nowMillis()
            #expect(try await f.client.send("POST", "/v1/push", json: PushRequest(through: 2, changes: [
                Change(origin: "germany", originSeq: 1, hlc: HLCTimestamp(wallMillis: now, counter: 0), table: "customers", recordID: "g-1",
                       op: .upsert, fields: ["owning_dealer": "germany", "last_name": "Erasable"]),
                Change(origin: "germany", originSeq: 2, hlc: HLCTimestamp(wallMillis: now, counter: 1), table: "interactions", recordID: "gi-1",
                       op: .upsert, fields: ["customer_id": "g-1", "summary": "Erasable called", "originating_node": "germany"]),
            ]), credential: f.germany).status == 200)
            // A refused dialogue of the customer, kept in quarantine with a string PostgreSQL's
            // JSON types refuse (U+0000): the erasure must find and remove it all the same.
            let refused = try await f.client.send("POST", "/v1/push", json: PushRequest(through: 3, changes: [
                Change(origin: "germany", originSeq: 3, hlc: HLCTimestamp(wallMillis: now, counter: 2), table: "interactions", recordID: "gi-2",
                       op: .upsert, fields: ["customer_id": "g-1", "summary": .string("Erasable \u{0} called")]),
            ]), credential: f.germany)
            #expect(try refused.decode(PushResponse.self).rejected.map(\.code) == [.wrongType], "\(refused.text)")
            let op = try await f.token("acme", "hq-op")
            let viewer = try await f.token("acme", "hq-viewer")
            let germanyOp = try await f.token("acme", "germany-op")
            let france = try await f.token("acme", "france-op")
            #expect(try await f.send("POST", "/admin/v1/erasures", json: AdminMessages.ErasureRequest(table: "customers", id: "g-1"), token: viewer).status == 403)
            let outside = try await f.send("POST", "/admin/v1/erasures", json: AdminMessages.ErasureRequest(table: "customers", id: "g-1"), token: france)
            let none = try await f.send("POST", "/admin/v1/erasures", json: AdminMessages.ErasureRequest(table: "customers", id: "no-such"), token: germanyOp)
            #expect(outside.status == 403 && none.status == 403 && outside.text == none.text, "one answer: \(outside.text) / \(none.text)")
            #expect(try await f.send("POST", "/admin/v1/erasures", json: AdminMessages.ErasureRequest(table: "interactions", id: "gi-1"), token: op).status == 422)
            // Bodies of the wrong shape are told in JSON's terms (an array was "expected Dictionary<String, Any>").
            for (body, expected) in [("[]", "the body has the wrong type: expected an object"), (#"{"table":"customers","id":5}"#, "'id' has the wrong type: expected a string")] {
                let wrong = try await f.client.send("POST", "/admin/v1/erasures", body: Data(body.utf8), headers: [("Authorization", "Bearer \(op)")])
                #expect(wrong.status == 400 && wrong.error?.message == expected, "\(body): \(wrong.text)")
            }
            // france asks for germany's customer: accepted (its answer never tells it the
            // customer exists) and it erases nothing; HQ's own request is then a new one, not
            // "asked before" with france's (which left the customer at HQ, unerasable here).
            let hostile = try await f.client.send("POST", "/v1/push", json: PushRequest(through: 1, changes: [
                Change(origin: "france", originSeq: 1, hlc: HLCTimestamp(wallMillis: now, counter: 3), table: "erasures", recordID: "era-hostile",
                       op: .upsert, fields: ["subject_table": "customers", "subject_id": "g-1", "requested_by": "france",
                                             "requested_at": .string(ISO8601DateFormatter().string(from: Date()))]),
            ]), credential: f.france)
            #expect(hostile.status == 200, "\(hostile.text)")
            #expect(try await store0(f).liveRecords(inTable: "customers").map(\.id) == ["g-1"], "france's request erased nothing")

            let reply = try await f.send("POST", "/admin/v1/erasures", json: AdminMessages.ErasureRequest(table: "customers", id: "g-1"), token: op)
            #expect(reply.status == 201, "\(reply.text)")
            let line = try reply.decode(AdminMessages.ErasureLine.self)
            #expect(line.id == "g-1" && line.requestedBy == "acme-hq" && line.replicas == ["acme-hq", "germany"])
            #expect(line.acknowledgements.map(\.node) == ["acme-hq"] && line.acknowledgements.first?.records == 2 && line.outstanding == ["germany"])
            // Asked again, by the same admin or germany's: the first request is the answer, no second one.
            for token in [op, germanyOp] {
                let again = try await f.send("POST", "/admin/v1/erasures", json: AdminMessages.ErasureRequest(table: "customers", id: "g-1"), token: token)
                #expect(again.status == 200 && (try? again.decode(AdminMessages.ErasureLine.self).erasureID) == line.erasureID, "\(again.status) \(again.text)")
            }
            // france is shown its own request (which erased nothing), not HQ's, outside its view.
            let francesOwn = try await f.send("POST", "/admin/v1/erasures", json: AdminMessages.ErasureRequest(table: "customers", id: "g-1"), token: france)
            #expect(francesOwn.status == 200 && (try? francesOwn.decode(AdminMessages.ErasureLine.self).erasureID) == "era-hostile", "\(francesOwn.text)")
            let store = try await f.hub.tenantStore(for: "acme")
            let customersLeft = try await store.liveRecords(inTable: "customers")
            let dialoguesLeft = try await store.liveRecords(inTable: "interactions")
            #expect(customersLeft.isEmpty && dialoguesLeft.isEmpty)
            let quarantined = try await store.quarantinedChanges(afterID: 0, limit: 100)
            #expect(quarantined.isEmpty, "the refused dialogue of the erased customer is gone: \(quarantined.map(\.change))")
            // The ledger, in full and outstanding only; a country admin sees their own country's.
            let ledger = try await f.send("GET", "/admin/v1/erasures?outstanding=true", token: viewer).decode(AdminMessages.ErasuresResponse.self)
            #expect(Set(ledger.erasures.map(\.erasureID)) == [line.erasureID, "era-hostile"])
            // A parameter the API does not know is refused, not read as "no" (both answered 200 before).
            let maybe = try await f.send("GET", "/admin/v1/erasures?outstanding=maybe", token: viewer)
            #expect(maybe.status == 400 && maybe.error?.code == "invalid_parameter", "\(maybe.text)")
            let byFoo = try await f.send("GET", "/admin/v1/kpis?by=foo", token: viewer)
            #expect(byFoo.status == 400 && byFoo.error?.code == "invalid_parameter", "\(byFoo.text)")
            #expect(try await f.send("GET", "/admin/v1/erasures", token: germanyOp).decode(AdminMessages.ErasuresResponse.self).erasures.count == 1)
            #expect(try await f.send("GET", "/admin/v1/erasures", token: france).decode(AdminMessages.ErasuresResponse.self).erasures.map(\.erasureID) == ["era-hostile"])
            // germany's feed carries the marker (no personal data), and nothing of the erased values.
            let pull = try await f.client.send("GET", "/v1/pull?after=0", credential: f.germany)
            #expect(pull.text.contains("\"erasures\"") && !pull.text.contains("Erasable"), "\(pull.text)")
            let audit = try await f.send("GET", "/admin/v1/audit", token: viewer)
            #expect(audit.text.contains("erasure.request") && !audit.text.contains("Erasable"))

            // A customer whose entries compaction folded into its record (only the row left):
            // asked for by its log entries alone, it was answered as not held (403).
            #expect(try await f.client.send("POST", "/v1/push", json: PushRequest(through: 5, changes: [
                Change(origin: "germany", originSeq: 4, hlc: HLCTimestamp(wallMillis: now + 10, counter: 0), table: "customers", recordID: "g-folded",
                       op: .upsert, fields: ["owning_dealer": "germany", "last_name": "Folded"]),
                Change(origin: "germany", originSeq: 5, hlc: HLCTimestamp(wallMillis: now + 11, counter: 0), table: "customers", recordID: "g-head",
                       op: .upsert, fields: ["owning_dealer": "germany", "last_name": "Head"]),
            ]), credential: f.germany).status == 200)
            _ = try await store.compact(policy: RetentionPolicy(), tree: nil, nowMillis: WallClock.nowMillis(), batch: 1_000)
            let folded = try await store.trace(recordID: "g-folded", table: "customers", after: 0, limit: 10)
            #expect(folded.changes.isEmpty && !folded.route.isEmpty, "folded: a row, no entries")
            // Its trace says so, where it answered 403 "no such record in your scope".
            let foldedTrace = try await f.send("GET", "/admin/v1/trace?table=customers&id=g-folded", token: op)
            #expect(foldedTrace.status == 200 && foldedTrace.text.contains("\"compacted\":true"), "\(foldedTrace.status) \(foldedTrace.text)")
            if engine == .sqlite {
                // `tiersync trace` on the tenant's file says so too (it said "no changes").
                let cli = try Child.capture(["trace", "--db", try f.hub.stores.store(for: "acme").path, "g-folded"])
                #expect(cli.status != 0 && cli.output.contains("customers/g-folded is held at acme-hq, but its changes were folded into it by compaction"), "\(cli.output)")
            }
            let foldedErasure = try await f.send("POST", "/admin/v1/erasures", json: AdminMessages.ErasureRequest(table: "customers", id: "g-folded"), token: op)
            #expect(foldedErasure.status == 201, "\(foldedErasure.text)")
            #expect(try await store.liveRecords(inTable: "customers").map(\.id) == ["g-head"])
        }
    }

    @Test("record trace: an HQ admin sees every change of a record with its origin, hops and values, paged; a country admin sees a record routed into their subtree, with another country's node and values hidden, and gets one 403 for a record outside it and for none at all; bad parameters are 400",
          arguments: StorageEngine.testable)
    func recordTrace(engine: StorageEngine) async throws {
        try await withAdminFixture(engine: engine) { f in
            let now = WallClock.nowMillis()
            func change(_ origin: NodeID, _ seq: Int64, _ id: String, _ fields: [String: FieldValue], at offset: UInt64 = 0) -> Change {
                Change(origin: origin, originSeq: seq, hlc: HLCTimestamp(wallMillis: now + offset, counter: 0), table: "customers", recordID: id,
                       op: .upsert, fields: fields, trail: [Hop(node: origin, atMillis: now + offset)])
            }
            // g-1: germany's customer, later serviced by france too, which edits it.
            #expect(try await f.client.send("POST", "/v1/push", json: PushRequest(through: 1, changes: [
                change("germany", 1, "g-1", ["owning_dealer": "germany", "last_name": "Alt"]),
            ]), credential: f.germany).status == 200)
            #expect(try await f.client.send("POST", "/v1/push", json: PushRequest(through: 2, changes: [
                change("germany", 2, "g-1", ["servicing_dealer": "france"], at: 1),
            ]), credential: f.germany).status == 200)
            #expect(try await f.client.send("POST", "/v1/push", json: PushRequest(through: 1, changes: [
                change("france", 1, "g-1", ["first_name": "Paul-france-value"], at: 2),
                change("france", 2, "f-only", ["owning_dealer": "france", "last_name": "Secret"], at: 2),
            ]), credential: f.france).status == 200)

            let hq = try await f.token("acme", "hq-viewer")
            let full = try await f.send("GET", "/admin/v1/trace?table=customers&id=g-1", token: hq)
            #expect(full.status == 200, "\(full.text)")
            let trace = try full.decode(AdminMessages.TraceResponse.self)
            #expect(trace.changes.map { "\($0.origin)#\($0.originSeq)" } == ["germany#1", "germany#2", "france#1"] && trace.next == nil)
            let first = try #require(trace.changes.first)
            #expect(first.fields?["last_name"] == "Alt" && first.fieldNames == ["last_name", "owning_dealer"])
            #expect(first.source == .child && first.receivedFrom == "germany" && first.upstream == .atRoot)
            #expect(first.hops.map(\.node) == ["germany", "acme-hq"] && first.hops[0].atMillis == now, "the trail, with HQ's own hop: \(first.hops)")
            #expect(trace.changes.last?.fields?["first_name"] == "Paul-france-value")

            // Paged: one change a page, in order.
            let page1 = try await f.send("GET", "/admin/v1/trace?table=customers&id=g-1&limit=2", token: hq).decode(AdminMessages.TraceResponse.self)
            let next = try #require(page1.next)
            let page2 = try await f.send("GET", "/admin/v1/trace?table=customers&id=g-1&limit=2&after=\(next)", token: hq).decode(AdminMessages.TraceResponse.self)
            #expect(page1.changes.count == 2 && page2.changes.map(\.origin) == ["france"] && page2.next == nil)

            // germany's admin: the record is germany's; france's node and value are hidden.
            let germany = try await f.token("acme", "germany-op")
            let seen = try await f.send("GET", "/admin/v1/trace?table=customers&id=g-1", token: germany)
            #expect(seen.status == 200, "\(seen.text)")
            let theirs = try seen.decode(AdminMessages.TraceResponse.self)
            #expect(theirs.changes.count == 3 && theirs.changes[0].fields?["last_name"] == "Alt")
            let foreign = theirs.changes[2]
            #expect(foreign.origin == AdminMessages.hiddenNode && foreign.fields == nil && foreign.fieldNames == ["first_name"]
                    && foreign.receivedFrom == AdminMessages.hiddenNode && foreign.hops.map(\.node) == [AdminMessages.hiddenNode, "acme-hq"])
            #expect(!seen.text.contains("Paul-france-value") && !theirs.changes.flatMap { [$0.origin, $0.receivedFrom ?? ""] + $0.hops.map(\.node) }.contains("france"),
                    "france appears only as a value germany wrote: \(seen.text)")

            // Outside germany's subtree, and a record that does not exist: one answer.
            let outside = try await f.send("GET", "/admin/v1/trace?table=customers&id=f-only", token: germany)
            let missing = try await f.send("GET", "/admin/v1/trace?table=customers&id=no-such-record", token: germany)
            #expect(outside.status == 403 && outside.error?.code == "out_of_scope" && !outside.text.contains("Secret"))
            #expect(missing.status == outside.status && missing.text == outside.text)
            #expect(try await f.send("GET", "/admin/v1/trace?table=customers&id=no-such-record", token: hq).status == 403)
            // A table no schema has is a bad parameter, as is one PostgreSQL cannot even read (a NUL: 500 there).
            for table in ["no_such_table", "custo%00mers"] {
                let reply = try await f.send("GET", "/admin/v1/trace?table=\(table)&id=g-1", token: hq)
                #expect(reply.status == 400 && reply.error?.code == "invalid_parameter", "\(table): \(reply.status) \(reply.text)")
            }

            // Bad parameters.
            for query in ["", "?table=customers", "?id=g-1", "?table=customers&id=g-1&limit=0", "?table=customers&id=g-1&limit=100000",
                          "?table=customers&id=g-1&after=-1", "?table=customers&id=g-1&after=99999999999999999999999"] {
                let reply = try await f.send("GET", "/admin/v1/trace\(query)", token: hq)
                #expect(reply.status == 400 && reply.error?.code == "invalid_parameter", "\(query): \(reply.status) \(reply.text)")
            }

            // A change whose record id, field name or table holds a NUL is refused like any invalid change, and the valid one
            // beside it applied: on PostgreSQL the NUL failed the whole push (500), which the agent then resent for ever.
            var badTable = change("france", 6, "f-table", ["owning_dealer": "france"], at: 3)
            badTable.table = "custo\u{0}mers"
            let nulPush = try await f.client.send("POST", "/v1/push", json: PushRequest(through: 6, changes: [
                change("france", 3, "f-nul-\u{0}", ["owning_dealer": "france", "last_name": "Nul"], at: 3),
                change("france", 4, "f-ok", ["owning_dealer": "france", "last_name": "Ok"], at: 3),
                change("france", 5, "f-field", ["owning_dealer": "france", "ci\u{0}ty": "Paris"], at: 3),
                badTable,
            ]), credential: f.france)
            #expect(nulPush.status == 422, "\(nulPush.status) \(nulPush.text)")
            let nulReport = try nulPush.decode(PushResponse.self)
            #expect(nulReport.applied == 1 && nulReport.rejected.count == 3, "\(nulPush.text)")
            #expect(try await f.send("GET", "/admin/v1/trace?table=customers&id=f-ok", token: hq).status == 200)

            // The console's page needs its session (the client follows the redirect to the login page).
            let consolePage = try await f.send("GET", "/console/trace?table=customers&id=g-1", token: nil)
            #expect(consolePage.text.contains("id=\"login\"") && !consolePage.text.contains("Alt"), "the console needs its session")
        }
    }

    @Test("a country node serves the admin API and the console to its own administrators (mirrored from HQ with its directory): its subtree with a dealer's lag, the quarantine of what the country refused, its own audit log; HQ's admins cannot log in there, and what HQ decides is refused",
          arguments: StorageEngine.testable)
    func countryServesItsAdmins(engine: StorageEngine) async throws {
        let dir = try TempDir()
        try await withHubDatabase(engine) { postgres in
            try await withRunning { running in
                let hub = try await running.hub(directory: dir.path, postgres: postgres)
                try await hub.catalogStore.createTenant("acme", root: "acme-hq", levels: 3)
                let de = try await running.country(hub: hub, tenant: "acme", node: "de", directory: dir.path)
                let accounts = try #require(hub.catalogStore as? any AdminAccountStore)
                let hash = try PasswordHash.make(AdminFixture.password)
                try await accounts.createAdminUser(AdminUser(tenant: "acme", name: "de-admin", roles: [.operator], scope: "de", createdAtMillis: WallClock.nowMillis()),
                                                   passwordHash: hash)
                try await accounts.createAdminUser(AdminUser(tenant: "acme", name: "hq-admin", roles: [.operator], scope: "acme-hq", createdAtMillis: WallClock.nowMillis()),
                                                   passwordHash: hash)
                // A dealer of de, with a backlog it reports and a change de refuses.
                let store = try NodeStore(path: "\(dir.path)/de-1.sqlite")
                let configuration = AgentConfiguration(parentURL: de.url, caFile: hub.caFile)
                try await SyncAgent.enroll(store: store, configuration: configuration,
                                           token: try await hub.catalogStore.issueEnrollmentToken(tenant: "acme", node: "de-1", parent: "de"))
                try store.commit((0..<5).map { .upsert("customers", id: "c\($0)", ["last_name": .string("N\($0)")]) })
                let agent = try SyncAgent(store: store, configuration: configuration)
                let client = running.client(baseURL: de.url, caFile: hub.caFile)
                try await withSyncAgents(agent) {
                    #expect(try await agent.reportStatus() == 1)
                    let bad = Change(origin: "de-1", originSeq: 100, hlc: HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: 0),
                                     table: "no_such_table", recordID: "x", op: .upsert, fields: [:])
                    _ = try await agent.parent.push(PushRequest(through: 100, changes: [bad]))
                    // The administrators reach de with its next directory refresh.
                    var session = ""
                    try await eventually(timeout: 20, "de-admin can log in at de") {
                        let login = try await client.send("POST", "/admin/v1/login", json: AdminMessages.LoginRequest(tenant: "acme", user: "de-admin", password: AdminFixture.password))
                        session = login.headers["set-cookie"].map { String($0.split(separator: ";")[0]) } ?? ""
                        return login.status == 200
                    }
                    let hqAtCountry = try await client.send("POST", "/admin/v1/login", json: AdminMessages.LoginRequest(tenant: "acme", user: "hq-admin", password: AdminFixture.password))
                    #expect(hqAtCountry.status == 401, "HQ's administrators are HQ's")
                    let nodes = try await client.send("GET", "/admin/v1/nodes", headers: [("Cookie", session)]).decode(AdminMessages.NodesResponse.self)
                    #expect(Set(nodes.nodes.map(\.node)) == ["de", "de-1"])
                    #expect(nodes.nodes.first { $0.node == "de-1" }?.lag?.pending == 5)
                    let quarantine = try await client.send("GET", "/admin/v1/quarantine", headers: [("Cookie", session)]).decode(AdminMessages.QuarantineResponse.self)
                    #expect(quarantine.changes.map(\.origin) == ["de-1"] && quarantine.changes.first?.code == "unknown_table")
                    let me = try await client.send("GET", "/admin/v1/me", headers: [("Cookie", session)]).decode(AdminMessages.Me.self)
                    let revoke = try await client.send("POST", "/admin/v1/nodes/de-1/revoke", headers: [("Cookie", session), ("X-CSRF-Token", me.csrfToken ?? "")])
                    #expect(revoke.status == 403 && revoke.error?.code == "at_hq")
                    let page = try await client.send("GET", "/console/quarantine", headers: [("Cookie", session)])
                    #expect(page.status == 200 && page.text.contains("unknown_table") && page.text.contains("de-admin"))
                    let audit = try await client.send("GET", "/admin/v1/audit", headers: [("Cookie", session)]).decode(AdminMessages.AuditResponse.self)
                    #expect(audit.entries.contains { $0.action == "login" && $0.actor == "de-admin" })
                    // A record's trace at the country: the dealer's change, and whether HQ has it yet.
                    #expect(try await agent.pushPending() == 5)
                    try await eventually(timeout: 20, "de's trace shows de-1's change acknowledged by HQ") {
                        let reply = try await client.send("GET", "/admin/v1/trace?table=customers&id=c0", headers: [("Cookie", session)])
                        guard reply.status == 200, let entry = try reply.decode(AdminMessages.TraceResponse.self).changes.first else { return false }
                        #expect(entry.origin == "de-1" && entry.source == .child && entry.hops.last?.node == "de", "\(entry.hops)")
                        return entry.upstream == .acknowledged
                    }
                    // Disabled at HQ: the country ends the session at its next refresh.
                    try await accounts.updateAdminUser("de-admin", of: "acme", roles: nil, disabledAtMillis: .some(WallClock.nowMillis()), passwordHash: nil)
                    try await eventually(timeout: 20, "de ends the disabled administrator's session") {
                        try await client.send("GET", "/admin/v1/me", headers: [("Cookie", session)]).status == 401
                    }
                }
            }
        }
    }

    @Test("tiersync admin user: add, list, set-role, token (that works against the running hub), tokens and revoke-token (which ends it at once), disable (which ends every token at once), audit; bad input is refused with a clear message")
    func userCommands() async throws {
        let dir = try TempDir()
        try await withRunningHub(directory: dir.path) { hub in
            try await withRawClient(hub) { client in
                let data = dir.path + "/hub"
                _ = try Child.run(["admin", "create-tenant", "--data", data, "--tenant", "acme", "--root", "acme-hq"])
                let passwordFile = dir.path + "/pw"
                try "a long enough password\n".write(toFile: passwordFile, atomically: true, encoding: .utf8)
                let added = try Child.run(["admin", "user", "add", "--data", data, "--tenant", "acme", "--name", "ops@acme", "--role", "viewer",
                                           "--password-file", passwordFile])
                #expect(added.contains("added ops@acme"))
                try "short\n".write(toFile: passwordFile + "2", atomically: true, encoding: .utf8)
                let weak = try Child.capture(["admin", "user", "add", "--data", data, "--tenant", "acme", "--name", "x", "--password-file", passwordFile + "2"])
                #expect(weak.status != 0 && weak.output.contains("at least 12 characters"))
                let badRole = try Child.capture(["admin", "user", "add", "--data", data, "--tenant", "acme", "--name", "y", "--role", "root", "--password-file", passwordFile])
                #expect(badRole.status != 0 && badRole.output.contains("unknown role"))
                // Repeated, every --role counts (it kept only the last one, silently).
                let repeated = try Child.run(["admin", "user", "add", "--data", data, "--tenant", "acme", "--name", "pub@acme", "--role", "viewer",
                                              "--role", "publisher,operator", "--password-file", passwordFile])
                #expect(repeated.contains("roles viewer,operator,publisher"), "\(repeated)")
                let noRole = try Child.capture(["admin", "user", "set-role", "--data", data, "--tenant", "acme", "--name", "ops@acme"])
                #expect(noRole.status != 0 && noRole.output.contains("--role"), "\(noRole)")
                _ = try Child.run(["admin", "user", "set-role", "--data", data, "--tenant", "acme", "--name", "ops@acme", "--role", "operator", "--role", "reviewer"])
                let list = try Child.run(["admin", "user", "list", "--data", data, "--tenant", "acme"])
                #expect(list.contains("ops@acme") && list.contains("operator,reviewer") && list.contains("active"))
                let token = try Child.run(["admin", "user", "token", "--data", data, "--tenant", "acme", "--name", "ops@acme", "--days", "1"])
                    .trimmingCharacters(in: .whitespacesAndNewlines)
                #expect(token.hasPrefix("tsa_"))
                let me = try await client.send("GET", "/admin/v1/me", headers: [("Authorization", "Bearer \(token)")])
                #expect(me.status == 200)
                #expect(try me.decode(AdminMessages.Me.self).roles == [.operator, .reviewer])
                // The console login works with the password set on the command line.
                let login = try await client.send("POST", "/admin/v1/login", json: AdminMessages.LoginRequest(tenant: "acme", user: "ops@acme", password: "a long enough password"))
                #expect(login.status == 200)
                // tokens lists the API token and the session; revoke-token ends the one named.
                let tokens = try Child.run(["admin", "user", "tokens", "--data", data, "--tenant", "acme", "--name", "ops@acme"])
                let apiLine = try #require(tokens.split(separator: "\n").first { $0.contains(" api ") }, "\(tokens)")
                #expect(tokens.contains(" session ") && tokens.contains("console") && !tokens.contains(token), "\(tokens)")
                let id = String(apiLine.split(separator: " ")[0])
                let revoked = try Child.run(["admin", "user", "revoke-token", "--data", data, "--tenant", "acme", "--name", "ops@acme", "--id", id])
                #expect(revoked.contains("revoked api 'script' (\(id)) of ops@acme"), "\(revoked)")
                #expect(try await client.send("GET", "/admin/v1/me", headers: [("Authorization", "Bearer \(token)")]).status == 401)
                let again = try Child.capture(["admin", "user", "revoke-token", "--data", data, "--tenant", "acme", "--name", "ops@acme", "--id", id])
                #expect(again.status != 0 && again.output.contains("holds no live session or API token"), "\(again)")
                let nobody = try Child.capture(["admin", "user", "revoke-token", "--data", data, "--tenant", "acme", "--name", "nobody", "--id", id])
                #expect(nobody.status != 0 && nobody.output.contains("no administrator 'nobody'"), "\(nobody)")
                let badID = try Child.capture(["admin", "user", "revoke-token", "--data", data, "--tenant", "acme", "--name", "ops@acme", "--id", "nope"])
                #expect(badID.status != 0 && badID.output.contains("16 hex digits"), "\(badID)")
                let second = try Child.run(["admin", "user", "token", "--data", data, "--tenant", "acme", "--name", "ops@acme", "--days", "1"])
                    .trimmingCharacters(in: .whitespacesAndNewlines)
                #expect(try await client.send("GET", "/admin/v1/me", headers: [("Authorization", "Bearer \(second)")]).status == 200)
                _ = try Child.run(["admin", "user", "disable", "--data", data, "--tenant", "acme", "--name", "ops@acme"])
                #expect(try await client.send("GET", "/admin/v1/me", headers: [("Authorization", "Bearer \(second)")]).status == 401)
                let none = try Child.run(["admin", "user", "tokens", "--data", data, "--tenant", "acme", "--name", "ops@acme"])
                #expect(none.contains("holds no live session or API token"), "disabling ended both: \(none)")
                let audit = try Child.run(["admin", "user", "audit", "--data", data, "--tenant", "acme", "--csv"])
                for action in ["user.add", "user.update", "token.create", "token.revoke", "login"] { #expect(audit.contains(action), "\(audit)") }
                #expect(audit.contains("cli:"))
            }
        }
    }
}

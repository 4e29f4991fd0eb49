import Foundation
import HTTPTypes
import Hummingbird
import Logging
import TiersyncCore
import TiersyncKPI
import TiersyncStorage

/// The admin API's handlers (``AdminRoutes``). Each route runs behind ``guarded(_:_:)``:
/// the caller authenticated (``AdminAuthenticator``), holding the route's role, and — for
/// anything naming a node, a change or an audit entry — only ever shown or allowed what lies
/// in their subtree. Outside it the answer is 403 `out_of_scope`, the same whether the thing
/// exists or not. Every change is written to the audit log.
struct AdminService: Sendable {
    let accounts: any AdminAccountStore
    let catalog: any HubCatalogStore
    let directory: any NodeDirectory
    let codec: BodyCodec
    /// Wakes long-polls of a tenant (a replayed change was stored).
    let signal: @Sendable (TenantID) async -> Void
    /// Wakes governance long-polls of a tenant (a release or rollout was stored).
    let governanceSignal: @Sendable (TenantID) async -> Void
    /// Where `<tenant>.release.key` files are, for publishing; nil: this hub cannot sign.
    let releaseKeyDirectory: String?
    /// A country node: HQ decides nodes' access, administrators and releases.
    let isRelay: Bool
    /// Failed logins of names no account has, locked as an account's are.
    let unknownLogins = UnknownLoginLedger()
    /// Passwords checked at once and waiting their turn (``HubConfiguration/Limits/loginChecksAtOnce``).
    /// Logins are anonymous: unbounded, a flood of them from a few addresses (each under its
    /// own rate limit) put every core into hashing, and every tenant's sync waited seconds
    /// behind it. Past the line: 429 at once. Fair between tenants (``AdmissionGate``): each
    /// tenant named has its own share of the line.
    let loginChecks: AdmissionGate
    /// Governance sources compiled at once (validate, publish): one, and four waiting, at
    /// most two of them one tenant's. A request's sources cost seconds of CPU at their limits.
    let compilations = AdmissionGate(running: 1, waiting: 4, waitingPerKey: 2)
    /// How many live API tokens and sessions one administrator may hold (``HubConfiguration/Limits``).
    var tokenLimit = AdminTokenLimit.apiTokens
    var sessionLimit = AdminTokenLimit.sessions
    static let decidedAtHQ: Set<AdminRoutes.Route> = [AdminRoutes.revokeNode, AdminRoutes.decommissionNode, AdminRoutes.enrollmentToken,
                                                      AdminRoutes.createUser, AdminRoutes.updateUser, AdminRoutes.userTokens, AdminRoutes.revokeUserToken,
                                                      AdminRoutes.publishRelease,
                                                      AdminRoutes.approveRelease, AdminRoutes.rejectRelease, AdminRoutes.rollout, AdminRoutes.rollback]
    var authenticator: AdminAuthenticator { AdminAuthenticator(accounts: accounts, catalog: catalog) }
    static let sessionTTLMillis: UInt64 = 12 * 3_600_000
    static let maxTokenTTLSeconds: Int64 = 366 * 86_400
    static let maxPage = 500

    typealias Handler = @Sendable (Request, HubRequestContext) async throws -> Response

    /// Authenticates the caller for `route` and checks its role, then runs `handler`.
    func guarded(_ route: AdminRoutes.Route, _ handler: @escaping @Sendable (Request, HubRequestContext, AdminCaller) async throws -> Response) -> Handler {
        { request, context in
            let caller = try await authenticator.authenticate(request, stateChanging: route.isStateChanging)
            try authorize(route, caller)
            var context = context
            context.admin = caller
            return try await handler(request, context, caller)
        }
    }

    /// What `route` asks of an authenticated caller: its role, being tenant-wide (at HQ),
    /// and not being something HQ decides when this is a country. The console's forms check
    /// the same through here.
    func authorize(_ route: AdminRoutes.Route, _ caller: AdminCaller) throws {
        if let role = route.role, !caller.has(role) {
            throw APIError(.forbidden, "forbidden", "this needs the \(role.rawValue) role; '\(caller.user.name)' has \(caller.user.roles.sorted().map(\.rawValue).joined(separator: ", "))")
        }
        if route.tenantWide, !caller.isTenantWide || isRelay {
            throw APIError(.forbidden, "forbidden", "only administrators of the whole tenant may do this, at HQ")
        }
        if isRelay, Self.decidedAtHQ.contains(route) {
            throw APIError(.forbidden, "at_hq", "HQ decides this: use HQ's console or admin API")
        }
    }

    func handlers() -> [AdminRoutes.Route: Handler] {
        [
            AdminRoutes.login: login,
            AdminRoutes.logout: guarded(AdminRoutes.logout, logout),
            AdminRoutes.me: guarded(AdminRoutes.me, me),
            AdminRoutes.createToken: guarded(AdminRoutes.createToken, createToken),
            AdminRoutes.tokens: guarded(AdminRoutes.tokens) { request, _, caller in
                try codec.encode(try await tokens(of: caller.user.name, caller), for: request)
            },
            AdminRoutes.revokeToken: guarded(AdminRoutes.revokeToken) { request, context, caller in
                try codec.encode(try await revokeToken(context.parameters.get("id") ?? "", of: caller.user.name, caller, context), for: request)
            },
            AdminRoutes.userTokens: guarded(AdminRoutes.userTokens) { request, context, caller in
                try codec.encode(try await tokens(of: try await knownUser(context.parameters.get("name") ?? "", caller), caller), for: request)
            },
            AdminRoutes.revokeUserToken: guarded(AdminRoutes.revokeUserToken) { request, context, caller in
                let user = try await knownUser(context.parameters.get("name") ?? "", caller)
                return try codec.encode(try await revokeToken(context.parameters.get("id") ?? "", of: user, caller, context), for: request)
            },
            AdminRoutes.nodes: guarded(AdminRoutes.nodes, nodes),
            AdminRoutes.revokeNode: guarded(AdminRoutes.revokeNode) { try await revoke($0, $1, $2, decommission: false) },
            AdminRoutes.decommissionNode: guarded(AdminRoutes.decommissionNode) { try await revoke($0, $1, $2, decommission: true) },
            AdminRoutes.enrollmentToken: guarded(AdminRoutes.enrollmentToken, enrollmentToken),
            AdminRoutes.quarantine: guarded(AdminRoutes.quarantine, quarantine),
            AdminRoutes.discardQuarantined: guarded(AdminRoutes.discardQuarantined, discard),
            AdminRoutes.replayQuarantined: guarded(AdminRoutes.replayQuarantined, replay),
            AdminRoutes.audit: guarded(AdminRoutes.audit, audit),
            AdminRoutes.users: guarded(AdminRoutes.users, users),
            AdminRoutes.createUser: guarded(AdminRoutes.createUser, createUser),
            AdminRoutes.updateUser: guarded(AdminRoutes.updateUser, updateUser),
            AdminRoutes.conflicts: guarded(AdminRoutes.conflicts, conflicts),
            AdminRoutes.trace: guarded(AdminRoutes.trace, trace),
            AdminRoutes.erasures: guarded(AdminRoutes.erasures, erasures),
            AdminRoutes.requestErasure: guarded(AdminRoutes.requestErasure, requestErasure),
            AdminRoutes.kpis: guarded(AdminRoutes.kpis) { request, _, caller in
                let query = request.uri.queryParameters
                guard let period = KPIPeriodKind(rawValue: query.get("period") ?? KPIPeriodKind.month.rawValue) else {
                    throw APIError(.badRequest, "invalid_parameter", "'period' must be day, week or month")
                }
                let by = query.get("by")
                guard by == nil || by == "node" else { throw APIError(.badRequest, "invalid_parameter", "'by' must be node or absent") }
                // The caller's scope node's view, as a node of it would see it at `/v1/kpis`.
                return try codec.encode(try await KPIViews.response(store: try await directory.store(for: caller.user.tenant), viewer: caller.user.scope,
                                                                    tree: caller.tree, period: period, byNode: by == "node"), for: request)
            },
            AdminRoutes.resolveConflict: guarded(AdminRoutes.resolveConflict, resolveConflict),
            AdminRoutes.releases: guarded(AdminRoutes.releases, releases),
            AdminRoutes.validateRelease: guarded(AdminRoutes.validateRelease, validate),
            AdminRoutes.publishRelease: guarded(AdminRoutes.publishRelease, publish),
            AdminRoutes.approveRelease: guarded(AdminRoutes.approveRelease, approve),
            AdminRoutes.rejectRelease: guarded(AdminRoutes.rejectRelease, reject),
            AdminRoutes.rollout: guarded(AdminRoutes.rollout, rollout),
            AdminRoutes.rollback: guarded(AdminRoutes.rollback, rollback),
        ]
    }

    // MARK: Sessions and tokens

    /// `POST /admin/v1/login`: a session cookie and the session's CSRF token. Unknown tenant,
    /// unknown user and wrong password get one answer, in about the same time (the password
    /// hash is checked against a decoy for unknown users). After 5 failures in a row the
    /// user is locked for 30 s, doubling to 15 minutes (429 with `Retry-After`).
    func login(_ request: Request, _ context: HubRequestContext) async throws -> Response {
        if let refusal = Self.crossSiteRefusal(request) { throw refusal }
        let body = try await codec.decode(AdminMessages.LoginRequest.self, from: request)
        let (secret, me) = try await startSession(tenant: body.tenant, user: body.user, password: body.password,
                                                  address: context.remoteAddress ?? "unknown")
        var response = try codec.encode(me, for: request)
        response.headers[.setCookie] = Self.sessionCookie(secret, maxAgeSeconds: Self.sessionTTLMillis / 1000)
        return response
    }

    /// Why a login is refused as coming from another site, if it is: a login has no CSRF
    /// token yet (there is no session), so a page elsewhere could otherwise log the
    /// administrator's browser into an account of the attacker's (login CSRF). Browsers say
    /// where a request comes from (`Sec-Fetch-Site`, `Origin`); scripts send neither.
    static func crossSiteRefusal(_ request: Request) -> APIError? {
        let refusal = APIError(.forbidden, "cross_site", "a login or form sent from another site's page is refused")
        if let site = request.headers[secFetchSite], site != "same-origin", site != "none" { return refusal }
        if let origin = request.headers[originHeader], let authority = request.head.authority,
           origin != "https://" + authority, origin != "http://" + authority {
            return refusal
        }
        return nil
    }

    static let secFetchSite = HTTPField.Name("Sec-Fetch-Site")!
    static let originHeader = HTTPField.Name("Origin")!

    /// Checks a login and opens a session: its secret (the cookie's value) and who it is for.
    func startSession(tenant: TenantID, user name: String, password: String, address: String) async throws -> (secret: String, me: AdminMessages.Me) {
        let now = WallClock.nowMillis()
        let invalid = APIError(.unauthorized, "invalid_login", "unknown user or wrong password")
        func locked(until: UInt64) -> APIError {
            var error = APIError(.tooManyRequests, "login_locked", "too many failed logins: try again later")
            error.headers[.retryAfter] = String(max(1, (until - now + 999) / 1000))
            return error
        }
        // Checked one password at a time or so: past the line, or the tenant's share of it,
        // every login (known name or not, the same) is told to come back. In line by the
        // tenant as named, whether it exists or not: a line keyed by what the catalog holds
        // answered an unknown tenant 429 where a real one got 401 (a tenant's existence would
        // show). So a flood naming many tenants still fills the line. In line before the
        // attempt is counted: counted first, a flood's `logins_busy` answers locked the
        // administrator who kept retrying the right password (helper 104).
        func admitted() async throws {
            guard await loginChecks.enter(for: tenant.rawValue) else {
                var busy = APIError(.tooManyRequests, "logins_busy", "too many logins are being checked at once; try again in a second")
                busy.headers[.retryAfter] = "1"
                throw busy
            }
        }
        // A name no account has is answered as an account would be, lock included.
        guard AdminUser.isValidName(name), password.utf8.count <= PasswordHash.maximumLength,
              let login = try await accounts.adminLogin(name, of: tenant) else {
            try await admitted()
            defer { loginChecks.leave() }
            // Only names an account could have are counted (at most 64 characters): one
            // that cannot be an account tells nothing by a plain 401, and the ledger stays small.
            if AdminUser.isValidName(name), case .locked(let until) = unknownLogins.countAttempt(name, of: tenant, nowMillis: now) {
                throw locked(until: until)
            }
            _ = await PasswordHash.verifyAsync(password, against: PasswordHash.decoy)
            throw invalid
        }
        if login.lockedUntilMillis > now { throw locked(until: login.lockedUntilMillis) }
        try await admitted()
        let failures: Int, verified: Bool
        do {
            defer { loginChecks.leave() }
            // Counted as failed before the check (a success clears it): counted after, logins
            // sent at once all passed the lock (helper 98: 8 of 15 checked).
            switch try await accounts.countLoginAttempt(name, of: tenant, nowMillis: now) {
            case .locked(let until): throw locked(until: until)
            case .counted(let counted): failures = counted
            }
            verified = await PasswordHash.verifyAsync(password, against: login.passwordHash)
        }
        guard verified else {
            try await accounts.appendAudit(AuditEntry(tenant: tenant, actor: name, action: "login_failed", target: "",
                                                      detail: "failure \(failures) in a row", address: address, scope: login.user.scope, atMillis: now))
            throw invalid
        }
        // The right password clears the attempt counted above, a disabled account's too.
        try await accounts.recordLoginSuccess(name, of: tenant)
        guard !login.user.isDisabled else { throw APIError(.forbidden, "account_disabled", "this account is disabled") }
        // Told only to whoever knows a password: answered before the check, the 410 told anyone
        // that the tenant exists (helper 104).
        if let move = catalog.movedAway(tenant) { throw move.answer(tenant) }
        let secret = Secrets.new(.adminSession)
        let expires = now + Self.sessionTTLMillis
        // At most `sessionLimit` live sessions: the oldest end, so a login always works and
        // logins without logouts (a script logging in each run) leave no growing pile.
        try await accounts.storeAdminToken(digest: AdminAuthenticator.digest(secret),
                                           AdminToken(tenant: tenant, user: name, kind: .session, name: "console",
                                                      createdAtMillis: now, expiresAtMillis: expires),
                                           limit: sessionLimit, nowMillis: now)
        try await accounts.appendAudit(AuditEntry(tenant: tenant, actor: name, action: "login", target: "", detail: "",
                                                  address: address, scope: login.user.scope, atMillis: now))
        let tree = try await catalog.tree(of: tenant)
        return (secret, AdminMessages.Me(tenant: tenant, user: name, roles: login.user.roles.sorted(), scope: login.user.scope,
                                         tenantWide: tree.isRoot(login.user.scope),
                                         csrfToken: AdminAuthenticator.csrfToken(forSession: secret), expiresAtMillis: expires))
    }

    static func sessionCookie(_ value: String, maxAgeSeconds: UInt64) -> String {
        "\(AdminAuthenticator.cookieName)=\(value); Path=/; Max-Age=\(maxAgeSeconds); HttpOnly; Secure; SameSite=Strict"
    }

    func logout(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller) async throws -> Response {
        try await accounts.revokeAdminToken(digest: caller.tokenDigest)
        try await audit(caller, context, "logout", target: "", detail: caller.kind.rawValue)
        var response = try codec.encode(["status": "logged_out"], for: request)
        response.headers[.setCookie] = Self.sessionCookie("", maxAgeSeconds: 0)
        return response
    }

    func me(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller) async throws -> Response {
        try codec.encode(AdminMessages.Me(tenant: caller.user.tenant, user: caller.user.name, roles: caller.user.roles.sorted(),
                                          scope: caller.user.scope, tenantWide: caller.isTenantWide, csrfToken: caller.csrfToken,
                                          expiresAtMillis: nil), for: request)
    }

    /// `POST /admin/v1/tokens`: an API token for the caller's scripts, with the caller's
    /// roles and scope, expiring after `ttlSeconds` (at most a year).
    func createToken(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller) async throws -> Response {
        let body = try await codec.decode(AdminMessages.TokenRequest.self, from: request)
        guard (60...Self.maxTokenTTLSeconds).contains(body.ttlSeconds) else {
            throw APIError(.unprocessableContent, "invalid_ttl", "ttlSeconds must be from 60 to \(Self.maxTokenTTLSeconds)")
        }
        guard (1...100).contains(body.name.count), body.name.utf8.count <= 400, !DisplayText.hasUnsafeCharacters(body.name, allowingLineBreaks: false) else {
            throw APIError(.unprocessableContent, "invalid_name", "a token's name has 1 to 100 characters, without line breaks or control characters")
        }
        let now = WallClock.nowMillis()
        let secret = Secrets.new(.adminToken)
        let expires = now + UInt64(body.ttlSeconds) * 1000
        do {
            try await accounts.storeAdminToken(digest: AdminAuthenticator.digest(secret),
                                               AdminToken(tenant: caller.user.tenant, user: caller.user.name, kind: .api, name: body.name,
                                                          createdAtMillis: now, expiresAtMillis: expires),
                                               limit: tokenLimit, nowMillis: now)
        } catch StoreError.limitReached(let message) {
            throw APIError(.conflict, "too_many_tokens", message + " (GET /admin/v1/tokens lists them)")
        }
        try await audit(caller, context, "token.create", target: body.name, detail: "expires \(expires)")
        return try codec.encode(AdminMessages.TokenResponse(token: secret, expiresAtMillis: expires), status: .created, for: request)
    }

    /// The live sessions and API tokens of administrator `user` (the caller's own, or, for
    /// a tenant-wide operator, anyone's of the tenant), oldest first.
    func tokens(of user: String, _ caller: AdminCaller) async throws -> AdminMessages.TokensResponse {
        let entries = try await accounts.adminTokens(of: user, in: caller.user.tenant, nowMillis: WallClock.nowMillis())
        return AdminMessages.TokensResponse(user: user, tokens: entries.map { Self.view($0, caller) })
    }

    /// `entry` as listed to `caller`, marked current when it is the token of their request.
    static func view(_ entry: AdminTokenEntry, _ caller: AdminCaller) -> AdminMessages.TokenView {
        AdminMessages.TokenView(id: entry.id, kind: entry.token.kind, name: entry.token.name, createdAtMillis: entry.token.createdAtMillis,
                                expiresAtMillis: entry.token.expiresAtMillis,
                                current: entry.token.user == caller.user.name && entry.id == AdminTokenEntry.id(ofDigest: caller.tokenDigest))
    }

    /// Revokes administrator `user`'s live token `id` at once (every hub process asks the
    /// catalog at each request); 404 `unknown_token` when they hold no live token of that id.
    func revokeToken(_ id: String, of user: String, _ caller: AdminCaller, _ context: HubRequestContext) async throws -> AdminMessages.TokenView {
        guard let revoked = try await accounts.revokeAdminToken(id: id, of: user, in: caller.user.tenant, nowMillis: WallClock.nowMillis()) else {
            throw APIError(.notFound, "unknown_token", "'\(user)' holds no live session or API token with that id (GET the token list for the ids)")
        }
        try await audit(caller, context, "token.revoke", target: user, detail: "\(revoked.token.kind.rawValue) '\(revoked.token.name)' \(revoked.id)")
        return Self.view(revoked, caller)
    }

    /// `name` when the caller's tenant has such an administrator; otherwise 403
    /// `out_of_scope`, as for anything else the caller cannot reach (no hint whether it exists).
    func knownUser(_ name: String, _ caller: AdminCaller) async throws -> String {
        guard AdminUser.isValidName(name), try await accounts.adminLogin(name, of: caller.user.tenant) != nil else { throw Self.outOfScope }
        return name
    }

    // MARK: Nodes

    /// `GET /admin/v1/nodes?state=&q=&under=&after=&limit=`: the caller's subtree in tree
    /// order (by path), a page at a time, with each node's state, last sighting and lag.
    func nodes(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller) async throws -> Response {
        let query = request.uri.queryParameters
        let limit = Int(try SyncService.integer(query, "limit", default: 100, range: 1...Int64(Self.maxPage)))
        return try codec.encode(try await nodePage(caller, state: query.get("state"), search: query.get("q"), under: query.get("under"),
                                                   after: query.get("after"), limit: limit), for: request)
    }

    /// One page of the caller's subtree in tree order, filtered.
    func nodePage(_ caller: AdminCaller, state rawState: String?, search: String?, under: String?, after: String?, limit: Int) async throws -> AdminMessages.NodesResponse {
        var state: NodeState?
        if let rawState, !rawState.isEmpty {
            guard let parsed = NodeState(rawValue: rawState) else {
                throw APIError(.badRequest, "invalid_parameter", "'state' must be one of \(NodeState.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            state = parsed
        }
        var within = caller.subtree
        if let under, !under.isEmpty { within = caller.tree.subtree(of: try scopedNode(under, caller)) }
        let needle = search.flatMap { $0.isEmpty ? nil : String($0.prefix(100)).lowercased() }
        let now = WallClock.nowMillis()
        var matching: [(record: NodeRecord, state: NodeState, path: String)] = []
        let serving = try await directory.servingNode(of: caller.user.tenant)
        for record in try await directory.nodes(of: caller.user.tenant) where within.contains(record.node) {
            let nodeState = NodeState(record, now: now, serving: serving)
            if let state, nodeState != state { continue }
            if let needle, !record.node.rawValue.lowercased().contains(needle) { continue }
            matching.append((record, nodeState, caller.tree.path(of: record.node)))
        }
        matching.sort { $0.path < $1.path }
        let total = matching.count
        if let after, !after.isEmpty { matching = Array(matching.drop { $0.path <= after }) }
        let page = Array(matching.prefix(limit))
        // Lag and rollout state for this page's nodes only.
        let lags = try await directory.lags(of: caller.user.tenant)
        let rollout = Dictionary(try await GovernanceStatusReport.rows(nodes: page.map(\.record), store: try await directory.store(for: caller.user.tenant))
            .map { ($0.node, $0) }, uniquingKeysWith: { a, _ in a })
        let views = page.map { entry in
            let governance = rollout[entry.record.node.rawValue]
            return AdminMessages.NodeView(
                node: entry.record.node, parent: entry.record.parent, role: entry.record.role, path: entry.path,
                depth: caller.tree.depth(of: entry.record.node), state: entry.state.rawValue,
                // The node this hub is: answering now.
                lastSeenMillis: entry.record.node == serving ? now : entry.record.lastSeenMillis,
                lag: lags[entry.record.node].map { .init(pending: $0.pending, oldestPendingMillis: $0.oldestPendingMillis(at: now), measuredAtMillis: $0.measuredAtMillis,
                                                          clockOffsetMillis: $0.clockOffsetMillis) },
                release: governance?.release, overlay: governance?.overlay, governance: governance?.state)
        }
        return AdminMessages.NodesResponse(nodes: views, next: matching.count > limit ? page.last?.path : nil, total: total)
    }

    /// Revokes (or decommissions) a node of the caller's subtree, not their own scope node.
    /// Effective at HQ at the node's next request; a country's mirror drops the node's
    /// credential at its next directory refresh (every 2 s).
    func revoke(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller, decommission: Bool) async throws -> Response {
        let node = try scopedNode(context.parameters.get("node") ?? "", caller)
        guard node != caller.user.scope else {
            throw APIError(.forbidden, "forbidden", "an administrator cannot revoke the node they administer from")
        }
        let now = WallClock.nowMillis()
        let revocation: Revocation
        do {
            revocation = decommission ? try await catalog.decommission(node: node, of: caller.user.tenant, nowMillis: now)
                                      : try await catalog.revoke(node: node, of: caller.user.tenant, nowMillis: now)
        } catch let error as StoreError {
            throw APIError(.conflict, "refused", error.description)
        }
        try await audit(caller, context, decommission ? "node.decommission" : "node.revoke", target: node.rawValue,
                        detail: "\(revocation.credentials) credentials, \(revocation.tokens) tokens")
        return try codec.encode(AdminMessages.RevocationResponse(node: node, credentials: revocation.credentials, tokens: revocation.tokens,
                                                                 decommissionedAtMillis: revocation.decommissionedAtMillis), for: request)
    }

    /// `POST /admin/v1/enrollment-tokens`: a one-time token for a node under a parent in the
    /// caller's subtree.
    func enrollmentToken(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller) async throws -> Response {
        let body = try await codec.decode(AdminMessages.EnrollmentTokenRequest.self, from: request)
        return try codec.encode(try await issueEnrollmentToken(body, caller, context), status: .created, for: request)
    }

    /// Issues the token (the API's and the console's form alike).
    func issueEnrollmentToken(_ body: AdminMessages.EnrollmentTokenRequest, _ caller: AdminCaller,
                              _ context: HubRequestContext) async throws -> AdminMessages.EnrollmentTokenResponse {
        let parent = try scopedNode((body.parent ?? caller.user.scope).rawValue, caller)
        let ttl = body.ttlSeconds ?? 86_400
        guard (60...30 * 86_400).contains(ttl) else { throw APIError(.unprocessableContent, "invalid_ttl", "ttlSeconds must be from 60 to 2592000") }
        // A node that exists elsewhere in the tenant is not the caller's to re-issue.
        if caller.tree.parents[body.node] != nil, !caller.subtree.contains(body.node) { throw Self.outOfScope }
        let now = WallClock.nowMillis()
        let token: String
        do {
            token = try await catalog.issueEnrollmentToken(tenant: caller.user.tenant, node: body.node,
                                                           parent: caller.tree.isRoot(parent) ? nil : parent, role: nil,
                                                           ttlSeconds: UInt64(ttl), nowMillis: now)
        } catch let error as StoreError {
            throw APIError(.unprocessableContent, "refused", error.description)
        } catch let error as EnrollmentClaimConflict {
            // The conflicting token may lie outside a scoped caller's subtree: such a caller
            // hears what a name existing elsewhere gets, and nothing of where.
            guard caller.isTenantWide else { throw Self.outOfScope }
            throw APIError(.unprocessableContent, "refused", error.description)
        }
        try await audit(caller, context, "enrollment_token.issue", target: body.node.rawValue, detail: "under \(parent), valid \(ttl) s")
        return AdminMessages.EnrollmentTokenResponse(node: body.node, parent: parent, token: token, expiresAtMillis: now + UInt64(ttl) * 1000)
    }

    // MARK: Quarantine

    /// Whether a quarantined change concerns the caller's subtree: made there, or sent by it.
    private func inScope(_ change: QuarantinedChange, _ caller: AdminCaller) -> Bool {
        caller.isTenantWide || caller.subtree.contains(change.origin) || caller.subtree.contains(change.receivedFrom)
    }

    /// `GET /admin/v1/quarantine?after=&limit=`: the changes this hub refused that concern
    /// the caller's subtree, oldest first.
    func quarantine(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller) async throws -> Response {
        let query = request.uri.queryParameters
        let limit = Int(try SyncService.integer(query, "limit", default: 100, range: 1...Int64(Self.maxPage)))
        let after = try SyncService.integer(query, "after", default: 0, range: 0...Int64.max)
        return try codec.encode(try await quarantinePage(caller, after: after, limit: limit), for: request)
    }

    /// One page of the quarantine as the caller may see it.
    func quarantinePage(_ caller: AdminCaller, after start: Int64, limit: Int) async throws -> AdminMessages.QuarantineResponse {
        var after = start
        let store = try await directory.store(for: caller.user.tenant)
        var out: [QuarantinedChange] = []
        var exhausted = false
        // Pages of the whole quarantine, filtered to the caller's scope: at most 20 reads.
        for _ in 0..<20 where out.count < limit {
            let page = try await store.quarantinedChanges(afterID: after, limit: Self.maxPage)
            out += page.filter { inScope($0, caller) }.prefix(limit - out.count)
            guard let last = page.last, page.count == Self.maxPage else { exhausted = true; break }
            after = out.count == limit ? out.last!.id : last.id
        }
        return AdminMessages.QuarantineResponse(changes: out, next: exhausted && out.count < limit ? nil : out.last?.id ?? after)
    }

    static func quarantineID(_ context: HubRequestContext) throws -> Int64 {
        guard let raw = context.parameters.get("id"), let id = Int64(raw), id > 0 else {
            throw APIError(.badRequest, "invalid_parameter", "the quarantined change's id is a positive integer")
        }
        return id
    }

    private func quarantinedChange(_ id: Int64, _ caller: AdminCaller) async throws -> (any HubTenantStore, QuarantinedChange) {
        let store = try await directory.store(for: caller.user.tenant)
        guard let change = try await store.quarantinedChanges(afterID: id - 1, limit: 1).first, change.id == id, inScope(change, caller) else {
            throw Self.outOfScope
        }
        return (store, change)
    }

    /// Discards a quarantined change, with a reason (kept in the audit log).
    func discard(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller) async throws -> Response {
        let id = try Self.quarantineID(context)
        let body = try await codec.decode(AdminMessages.DiscardRequest.self, from: request)
        try await discard(id, reason: body.reason, caller, address: context.remoteAddress ?? "unknown")
        return try codec.encode(["status": "discarded"], for: request)
    }

    func discard(_ id: Int64, reason raw: String, _ caller: AdminCaller, address: String) async throws {
        let (store, change) = try await quarantinedChange(id, caller)
        let reason = try Self.reason(raw)
        _ = try await store.discardQuarantined(id: change.id)
        try await audit(caller, address, "quarantine.discard", target: "\(change.id)", detail: "\(change.origin)#\(change.originSeq) \(change.code): \(reason)")
    }

    func replay(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller) async throws -> Response {
        try codec.encode(try await replay(try Self.quarantineID(context), caller, address: context.remoteAddress ?? "unknown"), for: request)
    }

    /// Judges a quarantined change again, as if its sender had just delivered it (with the
    /// sender's scope as the tree stands now). Stored, it leaves the quarantine.
    func replay(_ id: Int64, _ caller: AdminCaller, address: String) async throws -> AdminMessages.ReplayResponse {
        let (store, quarantined) = try await quarantinedChange(id, caller)
        guard let change = try? JSONDecoder().decode(Change.self, from: Data(quarantined.change.utf8)) else {
            throw APIError(.unprocessableContent, "unreadable", "the quarantined change cannot be read back; discard it")
        }
        let sender = quarantined.receivedFrom
        let scope = Scope(tree: caller.tree, node: sender)
        let report = try await store.applyIncoming([change], from: sender, source: .child, checkSkew: true,
                                                   gate: SyncService.scopeGate(pusher: sender, scope: scope, tree: caller.tree,
                                                                               above: await directory.ancestorsAboveTree(of: caller.user.tenant), changes: [change]),
                                                   cursor: nil,
                                                   wallMillis: WallClock.nowMillis())
        let outcome: AdminMessages.ReplayResponse
        if let refusal = report.rejected.first {
            outcome = .init(outcome: "refused", code: refusal.code.rawValue, reason: refusal.message)
        } else if report.applied > 0 {
            outcome = .init(outcome: "applied")
            _ = try await store.discardQuarantined(id: quarantined.id)
            await signal(caller.user.tenant)
        } else {
            outcome = .init(outcome: "duplicate")
            _ = try await store.discardQuarantined(id: quarantined.id)
        }
        try await audit(caller, address, "quarantine.replay", target: "\(quarantined.id)",
                        detail: "\(quarantined.origin)#\(quarantined.originSeq): \(outcome.outcome)\(outcome.code.map { " \($0)" } ?? "")")
        return outcome
    }

    // MARK: Audit

    /// `GET /admin/v1/audit?before=&limit=&format=json|csv`: newest first; a country admin
    /// sees the acts of administrators of their subtree.
    func audit(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller) async throws -> Response {
        let query = request.uri.queryParameters
        let limit = Int(try SyncService.integer(query, "limit", default: 100, range: 1...5_000))
        let before = query.get("before") == nil ? nil : try SyncService.integer(query, "before", default: 0, range: 1...Int64.max)
        let entries = try await auditPage(caller, before: before, limit: limit)
        let next = entries.count == limit ? entries.last?.id : nil
        switch query.get("format") ?? "json" {
        case "json":
            return try codec.encode(AdminMessages.AuditResponse(entries: entries, next: next), for: request)
        case "csv":
            let csv = AuditEntry.csv(entries)
            var headers: HTTPFields = [.contentType: "text/csv; charset=utf-8"]
            headers[.cacheControl] = "no-store"
            headers[BodyCodec.noSniff] = "nosniff"
            headers[.contentDisposition] = "attachment; filename=\"tiersync-audit-\(caller.user.tenant).csv\""
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: csv)))
        default:
            throw APIError(.badRequest, "invalid_parameter", "'format' must be json or csv")
        }
    }

    /// The audit entries the caller may see, newest first.
    func auditPage(_ caller: AdminCaller, before: Int64?, limit: Int) async throws -> [AuditEntry] {
        try await accounts.audit(of: caller.user.tenant, scopes: caller.isTenantWide ? nil : caller.subtree, before: before, limit: limit)
    }

    // MARK: Users

    func users(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller) async throws -> Response {
        try codec.encode(AdminMessages.UsersResponse(users: try await accounts.adminUsers(of: caller.user.tenant)), for: request)
    }

    func createUser(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller) async throws -> Response {
        let body = try await codec.decode(AdminMessages.CreateUserRequest.self, from: request)
        return try codec.encode(try await addUser(body, caller, context), status: .created, for: request)
    }

    /// Adds an administrator (the API's and the console's form alike).
    func addUser(_ body: AdminMessages.CreateUserRequest, _ caller: AdminCaller, _ context: HubRequestContext) async throws -> AdminUser {
        guard AdminUser.isValidName(body.name) else {
            throw APIError(.unprocessableContent, "invalid_name", "a user name has 1 to 64 letters, digits, '.', '_', '-' or '@'")
        }
        guard PasswordHash.isAcceptable(body.password) else {
            throw APIError(.unprocessableContent, "weak_password", PasswordHash.rule)
        }
        guard !body.roles.isEmpty else { throw APIError(.unprocessableContent, "invalid_roles", "give at least one role") }
        let scope = try scopedNode((body.scope ?? caller.user.scope).rawValue, caller)
        // HQ's administrators or a country's, as the CLI allows: a dealer's subtree is itself.
        let tree = caller.tree
        guard tree.isRoot(scope) || tree.parents[scope].flatMap({ $0 }).map(tree.isRoot) == true else {
            throw APIError(.unprocessableContent, "invalid_scope", "an administrator's scope is the tenant's root or a node directly below it (a country), got '\(scope)'")
        }
        try Self.checkGrant(Set(body.roles), over: [], by: caller)
        let user = AdminUser(tenant: caller.user.tenant, name: body.name, roles: Set(body.roles), scope: scope, createdAtMillis: WallClock.nowMillis())
        do {
            try await accounts.createAdminUser(user, passwordHash: try await PasswordHash.makeAsync(body.password))
        } catch let error as StoreError {
            throw APIError(.conflict, "refused", error.description)
        }
        try await audit(caller, context, "user.add", target: body.name, detail: "roles \(body.roles.map(\.rawValue).sorted().joined(separator: ",")), scope \(scope)")
        return user
    }

    func updateUser(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller) async throws -> Response {
        let body = try await codec.decode(AdminMessages.UpdateUserRequest.self, from: request)
        return try codec.encode(try await changeUser(context.parameters.get("name") ?? "", body, caller, context), for: request)
    }

    /// Changes an administrator's roles or disables/enables them (the API's and the console's form alike).
    func changeUser(_ name: String, _ body: AdminMessages.UpdateUserRequest, _ caller: AdminCaller, _ context: HubRequestContext) async throws -> AdminUser? {
        if let roles = body.roles, roles.isEmpty { throw APIError(.unprocessableContent, "invalid_roles", "give at least one role") }
        guard body.disabled != true || name != caller.user.name else {
            throw APIError(.unprocessableContent, "refused", "an administrator cannot disable themselves")
        }
        if let roles = body.roles {
            guard name != caller.user.name else {
                throw APIError(.forbidden, "refused", "an administrator cannot change their own roles; another administrator holding them can")
            }
            // As for anything else the caller cannot reach: no hint whether it exists.
            guard let held = try await accounts.adminUsers(of: caller.user.tenant).first(where: { $0.name == name }) else { throw Self.outOfScope }
            try Self.checkGrant(Set(roles), over: held.roles, by: caller)
        }
        let disabled: UInt64?? = body.disabled.map { $0 ? WallClock.nowMillis() : nil }
        do {
            try await accounts.updateAdminUser(name, of: caller.user.tenant, roles: body.roles.map(Set.init), disabledAtMillis: disabled, passwordHash: nil)
        } catch StoreError.notFound {
            // As for anything else the caller cannot reach: no hint whether it exists.
            throw Self.outOfScope
        }
        try await audit(caller, context, "user.update", target: name,
                        detail: [body.roles.map { "roles \($0.map(\.rawValue).sorted().joined(separator: ","))" },
                                 body.disabled.map { $0 ? "disabled" : "enabled" }].compactMap { $0 }.joined(separator: ", "))
        return try await accounts.adminUsers(of: caller.user.tenant).first { $0.name == name }
    }

    // MARK: Helpers

    /// Refuses `roles` given to someone who holds `current` unless the caller holds every
    /// role added (viewer excepted): otherwise an operator made themselves, or an accomplice,
    /// publisher and reviewer, and four eyes were two.
    static func checkGrant(_ roles: Set<AdminRole>, over current: Set<AdminRole>, by caller: AdminCaller) throws {
        let missing = roles.subtracting(current).subtracting([.viewer]).subtracting(caller.user.roles)
        guard missing.isEmpty else {
            throw APIError(.forbidden, "role_not_held", "you can grant only roles you hold yourself (not \(missing.sorted().map(\.rawValue).joined(separator: ", ")))")
        }
    }

    static let outOfScope = APIError(.forbidden, "out_of_scope", "not in your scope")

    /// The reason an administrator gives for a decision (a rejection, a discard, a rollback),
    /// trimmed: 1 to 500 characters, without control characters other than line breaks and
    /// tabs (a NUL failed the write on PostgreSQL, 500, and cut the text on SQLite).
    static func reason(_ raw: String) throws -> String {
        let reason = raw.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !reason.isEmpty else { throw APIError(.unprocessableContent, "reason_required", "say why (1 to 500 characters)") }
        guard reason.count <= 500, reason.utf8.count <= 2_000, !DisplayText.hasUnsafeCharacters(reason, allowingLineBreaks: true) else {
            throw APIError(.unprocessableContent, "invalid_reason", "a reason is 1 to 500 characters, without control characters (line breaks and tabs allowed)")
        }
        return reason
    }

    /// A node named by the caller, which must be in their subtree (403 `out_of_scope`
    /// otherwise, whether it exists or not).
    func scopedNode(_ raw: String, _ caller: AdminCaller) throws -> NodeID {
        guard NodeID.isValid(raw) else { throw APIError(.badRequest, "invalid_parameter", "not a node identifier") }
        let node = NodeID(unchecked: raw)
        guard caller.subtree.contains(node) else { throw Self.outOfScope }
        return node
    }

    func audit(_ caller: AdminCaller, _ context: HubRequestContext, _ action: String, target: String, detail: String) async throws {
        try await audit(caller, context.remoteAddress ?? "unknown", action, target: target, detail: detail)
    }

    func audit(_ caller: AdminCaller, _ address: String, _ action: String, target: String, detail: String) async throws {
        try await accounts.appendAudit(AuditEntry(tenant: caller.user.tenant, actor: caller.actor, action: action, target: target, detail: detail,
                                                  address: address, scope: caller.user.scope, atMillis: WallClock.nowMillis()))
    }
}

import Foundation
import HTTPTypes
import Hummingbird
import Mustache
import TiersyncCore
import TiersyncKPI
import TiersyncStorage

/// The web console at `/console`: server-rendered HTML (``ConsoleTemplates``) over the same
/// operations as the admin API (``AdminService``), so both answer alike and audit alike.
/// Authentication is the admin session cookie; every form that changes something carries the
/// session's CSRF token. Pages page: none loads a whole tenant.
struct ConsoleService: Sendable {
    let admin: AdminService
    static let library: MustacheLibrary = {
        var library = MustacheLibrary()
        for (name, text) in [("layout", ConsoleTemplates.layout), ("login", ConsoleTemplates.login), ("nodes", ConsoleTemplates.nodes),
                             ("quarantine", ConsoleTemplates.quarantine), ("audit", ConsoleTemplates.audit), ("users", ConsoleTemplates.users), ("releases", ConsoleTemplates.releases), ("conflicts", ConsoleTemplates.conflicts), ("kpis", ConsoleTemplates.kpis), ("trace", ConsoleTemplates.trace), ("token", ConsoleTemplates.token),
                             ("message", ConsoleTemplates.message)] {
            // Constant templates: a syntax error is a programming error the console tests catch.
            try! library.register(text, named: name)
        }
        return library
    }()
    static let pageSize = 100
    /// The periods with values the KPI page offers, newest first (three years of months).
    static let kpiPeriodsListed = 36
    static let maxFormBytes = 16 * 1024

    typealias Handler = @Sendable (Request, HubRequestContext) async throws -> Response

    func routes() -> [(method: HTTPRequest.Method, path: String, handler: Handler)] {
        [
            (.get, "/console", { _, _ in Self.redirect("/console/nodes") }),
            (.get, "/console/console.css", { _, _ in Self.stylesheet() }),
            (.get, "/console/login", loginPage),
            (.post, "/console/login", login),
            (.post, "/console/logout", page(stateChanging: true) { _, context, caller, _ in
                try await admin.accounts.revokeAdminToken(digest: caller.tokenDigest)
                try await admin.audit(caller, context, "logout", target: "", detail: "session")
                var response = Self.redirect("/console/login")
                response.headers[.setCookie] = AdminService.sessionCookie("", maxAgeSeconds: 0)
                return response
            }),
            (.get, "/console/nodes", page(stateChanging: false, nodes)),
            (.post, "/console/nodes/{node}/revoke", page(stateChanging: true, revoke)),
            (.get, "/console/quarantine", page(stateChanging: false, quarantine)),
            (.post, "/console/quarantine/{id}/replay", page(stateChanging: true, replay)),
            (.post, "/console/quarantine/{id}/discard", page(stateChanging: true, discard)),
            (.get, "/console/audit", page(stateChanging: false, audit)),
            (.get, "/console/releases", page(stateChanging: false, releases)),
            (.get, "/console/conflicts", page(stateChanging: false, conflicts)),
            (.get, "/console/kpis", page(stateChanging: false, kpis)),
            (.get, "/console/trace", page(stateChanging: false, trace)),
            (.post, "/console/conflicts/{id}/resolve", page(stateChanging: true, resolve)),
            (.post, "/console/release-requests/{id}/approve", page(stateChanging: true, approve)),
            (.post, "/console/release-requests/{id}/reject", page(stateChanging: true, reject)),
            (.get, "/console/users", page(stateChanging: false, users)),
            (.post, "/console/users", page(stateChanging: true, addUser)),
            (.post, "/console/users/{name}", page(stateChanging: true, toggleUser)),
            (.post, "/console/enrollment-tokens", page(stateChanging: true, enrollmentToken)),
        ]
    }

    // MARK: Authentication

    /// Runs `body` for a logged-in administrator; without a session, GETs go to the login
    /// page. A form's fields are read (bounded) before the CSRF check, which reads one.
    func page(stateChanging: Bool,
              _ body: @escaping @Sendable (Request, HubRequestContext, AdminCaller, [String: String]) async throws -> Response) -> Handler {
        { request, context in
            // A form from another site's page is refused before anything is read, as a login
            // is: the CSRF token and SameSite=Strict hold it already, and a browser that says
            // where a request comes from is believed (helper 98: Origin went unchecked).
            if stateChanging, let refusal = AdminService.crossSiteRefusal(request) {
                return try render("message", title: "Refused", me: nil, values: ["message": refusal.message, "back": "/console/nodes"], status: refusal.status)
            }
            let form: [String: String]
            do {
                form = stateChanging ? try await self.form(request) : [:]
            } catch let error as APIError {
                // A form refused for its size or its pace: the console's page, not the API's JSON.
                return try render("message", title: "Refused", me: nil, values: ["message": error.message, "back": "/console/nodes"], status: error.status)
            }
            let caller: AdminCaller
            do {
                caller = try await admin.authenticator.authenticate(request, stateChanging: stateChanging, formCSRF: form["csrf"])
            } catch let error as APIError where error.status == .unauthorized {
                return Self.redirect("/console/login")
            } catch let error as APIError {
                return try render("message", title: "Refused", me: nil, values: ["message": error.message, "back": "/console/nodes"],
                                  status: error.status)
            }
            do {
                return try await body(request, context, caller, form)
            } catch let error as APIError {
                return try render("message", title: "Refused", me: caller, values: ["message": error.message, "back": "/console/nodes"],
                                  status: error.status)
            }
        }
    }

    func loginPage(_ request: Request, _ context: HubRequestContext) async throws -> Response {
        try render("login", title: "Log in", me: nil, values: ["tenant": request.uri.queryParameters.get("tenant") ?? ""])
    }

    func login(_ request: Request, _ context: HubRequestContext) async throws -> Response {
        let form: [String: String]
        do {
            form = try await self.form(request)
        } catch let error as APIError {
            return try render("message", title: "Refused", me: nil, values: ["message": error.message, "back": "/console/login"], status: error.status)
        }
        let (tenant, user, password) = (form["tenant"] ?? "", form["user"] ?? "", form["password"] ?? "")
        do {
            if let refusal = AdminService.crossSiteRefusal(request) { throw refusal }
            guard let tenantID = try? TenantID(validating: tenant) else { throw APIError(.unauthorized, "invalid_login", "unknown user or wrong password") }
            let (secret, _) = try await admin.startSession(tenant: tenantID, user: user, password: password, address: context.remoteAddress ?? "unknown")
            var response = Self.redirect("/console/nodes")
            response.headers[.setCookie] = AdminService.sessionCookie(secret, maxAgeSeconds: AdminService.sessionTTLMillis / 1000)
            return response
        } catch let error as APIError {
            var response = try render("login", title: "Log in", me: nil,
                                      values: ["tenant": tenant, "user": user, "error": error.code == "logins_busy" ? "Too many logins at once: try again in a second."
                                                : error.status == .tooManyRequests ? "Too many failed logins: try again later."
                                                : error.code == "cross_site" ? "Log in from this console's own page." : "Unknown user or wrong password."],
                                      status: error.status)
            if let retry = error.headers[.retryAfter] { response.headers[.retryAfter] = retry }
            return response
        }
    }

    // MARK: Pages

    func nodes(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller, _ form: [String: String]) async throws -> Response {
        let query = request.uri.queryParameters
        let (q, state) = (query.get("q") ?? "", query.get("state") ?? "")
        let page = try await admin.nodePage(caller, state: state, search: q, under: nil, after: query.get("after"), limit: Self.pageSize)
        let now = WallClock.nowMillis()
        let canAct = caller.has(.operator) && !admin.isRelay
        let rows: [[String: Any]] = page.nodes.map { node in
            [
                "node": node.node.rawValue, "path": node.path, "depth": min(node.depth, 3), "role": node.role, "state": node.state,
                "lastSeen": node.lastSeenMillis.map { Self.ago(now, $0) } ?? "never",
                "pending": node.lag.map { String($0.pending) } ?? "–",
                "oldest": node.lag.map { $0.pending > 0 ? Self.duration($0.oldestPendingMillis) : "–" } ?? "–",
                "clock": node.lag?.clockOffsetMillis.map(Self.clockOffset) ?? "–",
                "release": node.release.map { "v\($0)" } ?? "–", "overlay": node.overlay ?? "–", "governance": node.governance ?? "–",
                "canAct": canAct, "revocable": node.node != caller.user.scope && node.state != "decommissioned", "csrf": caller.csrfToken ?? "",
            ]
        }
        return try render("nodes", title: "Nodes", me: caller, nav: "navNodes", values: [
            "nodes": rows, "total": page.total, "filtered": !q.isEmpty || !state.isEmpty, "q": q, "stateFilter": state,
            "states": NodeState.allCases.map { ["value": $0.rawValue, "selected": $0.rawValue == state] as [String: Any] },
            "next": page.next ?? false, "canAct": canAct, "flash": Self.flash(query) ?? false,
            "canEnroll": canAct, "scope": caller.user.scope.rawValue, "csrf": caller.csrfToken ?? "",
        ])
    }

    func revoke(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller, _ form: [String: String]) async throws -> Response {
        guard caller.has(.operator) else { throw APIError(.forbidden, "forbidden", "this needs the operator role") }
        guard !admin.isRelay else { throw APIError(.forbidden, "at_hq", "HQ decides nodes' access: revoke in HQ's console") }
        let node = try admin.scopedNode(context.parameters.get("node") ?? "", caller)
        guard node != caller.user.scope else { throw APIError(.forbidden, "forbidden", "an administrator cannot revoke the node they administer from") }
        let revocation = try await admin.catalog.revoke(node: node, of: caller.user.tenant, nowMillis: WallClock.nowMillis())
        try await admin.audit(caller, context, "node.revoke", target: node.rawValue, detail: "\(revocation.credentials) credentials, \(revocation.tokens) tokens")
        return Self.redirect("/console/nodes?done=revoked")
    }

    func quarantine(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller, _ form: [String: String]) async throws -> Response {
        let query = request.uri.queryParameters
        let after = Int64(query.get("after") ?? "") ?? 0
        let page = try await admin.quarantinePage(caller, after: max(0, after), limit: Self.pageSize)
        let canAct = caller.has(.operator)
        let rows: [[String: Any]] = page.changes.map {
            ["id": $0.id, "origin": $0.origin.rawValue, "originSeq": $0.originSeq, "receivedFrom": $0.receivedFrom.rawValue,
             "received": Self.timestamp($0.receivedAtMillis), "code": $0.code, "reason": $0.reason, "canAct": canAct, "csrf": caller.csrfToken ?? ""]
        }
        return try render("quarantine", title: "Quarantine", me: caller, nav: "navQuarantine", values: [
            "changes": rows, "count": rows.count, "more": page.next != nil, "next": page.next.map(String.init) ?? false, "canAct": canAct,
            "flash": Self.flash(query) ?? false,
        ])
    }

    func replay(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller, _ form: [String: String]) async throws -> Response {
        guard caller.has(.operator) else { throw APIError(.forbidden, "forbidden", "this needs the operator role") }
        let outcome = try await admin.replay(try AdminService.quarantineID(context), caller, address: context.remoteAddress ?? "unknown")
        switch outcome.outcome {
        case "applied": return Self.redirect("/console/quarantine?done=replay_applied")
        case "duplicate": return Self.redirect("/console/quarantine?done=replay_duplicate")
        default: return Self.redirect("/console/quarantine?done=replay_refused&code=\(Self.codeParameter(outcome.code))")
        }
    }

    func discard(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller, _ form: [String: String]) async throws -> Response {
        guard caller.has(.operator) else { throw APIError(.forbidden, "forbidden", "this needs the operator role") }
        try await admin.discard(try AdminService.quarantineID(context), reason: form["reason"] ?? "", caller, address: context.remoteAddress ?? "unknown")
        return Self.redirect("/console/quarantine?done=discarded")
    }

    func kpis(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller, _ form: [String: String]) async throws -> Response {
        let period = KPIPeriodKind(rawValue: request.uri.queryParameters.get("period") ?? "") ?? .month
        let report = try await KPIViews.response(store: try await admin.directory.store(for: caller.user.tenant), viewer: caller.user.scope,
                                                 tree: caller.tree, period: period, byNode: true)
        // The viewer's node and the nodes just below it, each as its subtree, in one period:
        // the one asked for (`start`), else the current one, else the latest before now
        // (dialogues dated ahead made a future period the only one shown; helper 107).
        let shown = Set([caller.user.scope.rawValue] + caller.tree.parents.filter { $0.value == caller.user.scope }.map(\.key.rawValue))
        let rows = report.rows.filter { $0.scope == .subtree && shown.contains($0.node) }
        let starts = Set(rows.map(\.periodStart)).sorted(by: >)
        let current = KPIDay.label(period.start(ofDay: KPIDay.of(millis: Int64(clamping: WallClock.nowMillis()))))
        // A day asked for (`YYYY-MM-DD`): the period with values holding it or the nearest
        // before it, so that switching from months to days keeps to the same time.
        let asked = request.uri.queryParameters.get("start").flatMap { (text: String) -> String? in KPIDay.parse(text).map(KPIDay.label) }
        let chosen = starts.first { $0 <= (asked ?? current) } ?? starts.last ?? ""
        var charts: [[String: Any]] = []
        for kpi in Array(Set(rows.map(\.kpi))).sorted() {
            let mine = rows.filter { $0.kpi == kpi && $0.periodStart == chosen }.sorted { ($0.node == caller.user.scope.rawValue ? "" : $0.node) < ($1.node == caller.user.scope.rawValue ? "" : $1.node) }
            guard let first = mine.first else { continue }
            let id = "kpi-\(charts.count)"
            charts.append(["id": id, "name": first.name, "svg": KPIChart.svg(kpi: kpi, name: first.name, unit: first.unit, rows: mine, id: id)])
        }
        return try render("kpis", title: "KPIs", me: caller, nav: "navKPIs", values: [
            "charts": charts, "period": period.rawValue, "periodStart": chosen, "overlay": !caller.isTenantWide,
            "current": chosen == current, "hasData": !starts.isEmpty,
            "periods": KPIPeriodKind.allCases.map { ["value": $0.rawValue, "selected": $0 == period] as [String: Any] },
            "starts": starts.prefix(Self.kpiPeriodsListed).map { ["value": $0, "selected": $0 == chosen] as [String: Any] },
        ])
    }

    func conflicts(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller, _ form: [String: String]) async throws -> Response {
        let query = request.uri.queryParameters
        let page = try await admin.conflictPage(caller, after: max(0, Int64(query.get("after") ?? "") ?? 0), limit: Self.pageSize)
        let canAct = caller.has(.operator)
        let rows: [[String: Any]] = page.conflicts.map {
            ["id": $0.id, "table": $0.table, "recordID": $0.recordID, "field": $0.conflict.field,
             "traceHref": Self.traceHref(table: $0.table, id: $0.recordID),
             "winner": $0.conflict.winner.description, "winnerNode": $0.conflict.winnerNode,
             "loser": $0.conflict.loser.description, "loserNode": $0.conflict.loserNode,
             "detected": Self.timestamp($0.detectedAtMillis), "canAct": canAct, "csrf": caller.csrfToken ?? ""]
        }
        return try render("conflicts", title: "Conflicts", me: caller, nav: "navConflicts", values: [
            "conflicts": rows, "count": rows.count, "more": page.next != nil, "next": page.next.map(String.init) ?? false, "canAct": canAct,
            "flash": Self.flash(query) ?? false,
        ])
    }

    func trace(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller, _ form: [String: String]) async throws -> Response {
        let query = request.uri.queryParameters
        let tables = DomainSchema.schema.tables.map(\.name)
        let table = query.get("table").flatMap { tables.contains($0) ? $0 : nil } ?? tables.first ?? ""
        let id = query.get("id") ?? ""
        var values: [String: Any] = [
            "tables": tables.map { ["value": $0, "selected": $0 == table] as [String: Any] }, "table": table, "id": id,
            "searched": !id.isEmpty,
        ]
        if !id.isEmpty {
            guard RecordID.isValid(id) else { throw APIError(.badRequest, "invalid_parameter", "a record id is 1–128 printable ASCII characters") }
            let after = max(0, Int64(query.get("after") ?? "") ?? 0)
            do {
                let page = try await admin.tracePage(caller, table: table, id: id, after: after, limit: Self.pageSize)
                values["found"] = true
                values["changes"] = page.changes.map { entry -> [String: Any] in
                    let what = entry.op == .delete ? "deleted the record"
                        : "set " + entry.fieldNames.map { name in entry.fields?[name].map { "\(name) = \($0.description.prefix(80))" } ?? name }.joined(separator: ", ")
                    return ["position": entry.position, "origin": entry.origin, "originSeq": entry.originSeq, "what": what,
                            "written": Self.timestamp(entry.writtenAtMillis),
                            "hops": entry.hops.map { ["node": $0.node, "at": Self.timestamp($0.atMillis),
                                                      "after": String(format: "%.3f s", (Double($0.atMillis) - Double(entry.writtenAtMillis)) / 1000)] },
                            "upstream": Self.upstreamText(entry)]
                }
                values["next"] = page.next.map { Self.traceHref(table: table, id: id) + "&after=\($0)" } ?? false
                values["compacted"] = page.compacted == true
            } catch let error as APIError where error.code == AdminService.traceNotFound.code {
                values["found"] = false
            }
        }
        return try render("trace", title: "Record trace", me: caller, nav: "navTrace", values: values)
    }

    static func upstreamText(_ entry: AdminMessages.TraceEntry) -> String {
        switch entry.upstream {
        case .atRoot: entry.source == .local ? "written here (HQ)" : "arrived here from \(entry.receivedFrom ?? "a child")"
        case .fromParent: "arrived here from \(entry.receivedFrom ?? "the parent")"
        case .acknowledged: "sent upward: acknowledged by the parent"
        case .pending: "not yet sent upward: waiting in the log"
        case .refused: "refused by the parent (\(entry.refusal ?? "")); next try \(entry.nextTryMillis.map(timestamp) ?? "soon")"
        }
    }

    /// The console's link to a record's trace (the id percent-encoded: ids may hold `&`, `/`, `?`).
    static func traceHref(table: String, id: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return "/console/trace?table=\(table.addingPercentEncoding(withAllowedCharacters: allowed) ?? "")&id=\(id.addingPercentEncoding(withAllowedCharacters: allowed) ?? "")"
    }

    func resolve(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller, _ form: [String: String]) async throws -> Response {
        guard caller.has(.operator) else { throw APIError(.forbidden, "forbidden", "this needs the operator role") }
        guard let raw = context.parameters.get("id"), let id = Int64(raw), id > 0,
              let keep = AdminMessages.ResolveRequest.Keep(rawValue: form["keep"] ?? "") else {
            throw APIError(.badRequest, "invalid_parameter", "choose what to keep")
        }
        // A typed value: a number or true/false as such, anything else as text.
        let typed = form["value"].map { text -> FieldValue in
            if let number = Int64(text) { return .int(number) }
            if text == "true" || text == "false" { return .bool(text == "true") }
            return .string(text)
        }
        _ = try await admin.resolve(id, .init(keep: keep, value: typed), caller, address: context.remoteAddress ?? "unknown")
        return Self.redirect("/console/conflicts?done=resolved")
    }

    func releases(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller, _ form: [String: String]) async throws -> Response {
        let history = try await admin.releaseHistory(caller)
        let canReview = caller.has(.reviewer) && caller.isTenantWide && !admin.isRelay
        let requests: [[String: Any]] = history.requests.map {
            ["id": $0.id, "author": $0.author, "requested": Self.timestamp($0.requestedAtMillis), "notes": $0.notes,
             "digest": String($0.sourceDigest.prefix(12)), "state": $0.state.rawValue, "reviewer": $0.reviewer ?? "",
             "decided": $0.decidedAtMillis.map(Self.timestamp) ?? false, "reason": $0.reason ?? false,
             "version": $0.version.map { "v\($0)" } ?? "", "pending": $0.state == .pending, "canReview": canReview, "csrf": caller.csrfToken ?? ""]
        }
        return try render("releases", title: "Releases", me: caller, nav: "navReleases", values: [
            "fourEyes": history.fourEyes ? "on" : "off", "fourEyesOn": history.fourEyes, "canReview": canReview, "requests": requests,
            "releases": history.releases.map { ["version": $0.version, "published": Self.timestamp($0.publishedAtMillis),
                                               "effective": Self.timestamp($0.effectiveFromMillis), "notes": $0.notes ?? ""] as [String: Any] },
            "rollouts": history.rollouts.map { ["sequence": $0.sequence, "issued": Self.timestamp($0.issuedAtMillis),
                                               "summary": $0.summary, "reason": $0.reason] as [String: Any] },
            "flash": Self.flash(request.uri.queryParameters) ?? false,
        ])
    }

    func releaseRequest(_ context: HubRequestContext, _ caller: AdminCaller) async throws -> ReleaseRequest {
        guard caller.has(.reviewer), caller.isTenantWide, !admin.isRelay else { throw APIError(.forbidden, "forbidden", "this needs the reviewer role, tenant-wide, at HQ") }
        guard let raw = context.parameters.get("id"), let id = Int64(raw),
              let pending = try await admin.approvals?.releaseRequest(id, of: caller.user.tenant) else { throw AdminService.outOfScope }
        return pending
    }

    func approve(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller, _ form: [String: String]) async throws -> Response {
        let decided = try await admin.approve(try await releaseRequest(context, caller), caller, address: context.remoteAddress ?? "unknown")
        return Self.redirect("/console/releases?done=approved&version=\(decided.version ?? 0)")
    }

    func reject(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller, _ form: [String: String]) async throws -> Response {
        try await admin.reject(try await releaseRequest(context, caller), reason: form["reason"] ?? "", caller, address: context.remoteAddress ?? "unknown")
        return Self.redirect("/console/releases?done=rejected")
    }

    func audit(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller, _ form: [String: String]) async throws -> Response {
        let before = request.uri.queryParameters.get("before").flatMap(Int64.init)
        let entries = try await admin.auditPage(caller, before: before, limit: Self.pageSize)
        let rows: [[String: Any]] = entries.map {
            ["at": Self.timestamp($0.atMillis), "actor": $0.actor, "action": $0.action, "target": $0.target, "detail": $0.detail, "address": $0.address]
        }
        return try render("audit", title: "Audit log", me: caller, nav: "navAudit", values: [
            "entries": rows, "next": (entries.count == Self.pageSize ? entries.last.map { String($0.id) as Any } : nil) ?? false,
        ])
    }

    func users(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller, _ form: [String: String]) async throws -> Response {
        guard caller.isTenantWide else { throw APIError(.forbidden, "forbidden", "only administrators of the whole tenant see its users") }
        let users = try await admin.accounts.adminUsers(of: caller.user.tenant)
        let canAct = caller.has(.operator) && !admin.isRelay
        let rows: [[String: Any]] = users.map {
            ["name": $0.name, "roles": $0.roles.sorted().map(\.rawValue).joined(separator: ", "), "scope": $0.scope.rawValue,
             "state": $0.isDisabled ? "disabled" : "active", "canAct": canAct, "self": $0.name == caller.user.name,
             "toggleTo": $0.isDisabled ? "false" : "true", "toggleLabel": $0.isDisabled ? "Enable" : "Disable", "csrf": caller.csrfToken ?? ""]
        }
        let root = caller.tree.parents.first { $0.value == nil }?.key.rawValue ?? caller.user.scope.rawValue
        return try render("users", title: "Users", me: caller, nav: "navUsers", values: [
            "users": rows, "tenant": caller.user.tenant.rawValue, "canAct": canAct, "csrf": caller.csrfToken ?? "", "root": root,
            "minimumPassword": PasswordHash.minimumLength, "roles": AdminRole.allCases.map { ["value": $0.rawValue] },
            "flash": Self.flash(request.uri.queryParameters) ?? false,
        ])
    }

    func addUser(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller, _ form: [String: String]) async throws -> Response {
        try admin.authorize(AdminRoutes.createUser, caller)
        guard let scope = try? NodeID(validating: form["scope"] ?? "") else { throw APIError(.badRequest, "invalid_parameter", "the scope is a node id") }
        let roles = AdminRole.allCases.filter { form["role-\($0.rawValue)"] == "on" }
        _ = try await admin.addUser(.init(name: form["name"] ?? "", password: form["password"] ?? "", roles: roles, scope: scope), caller, context)
        return Self.redirect("/console/users?done=user_added")
    }

    func toggleUser(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller, _ form: [String: String]) async throws -> Response {
        try admin.authorize(AdminRoutes.updateUser, caller)
        guard let disabled = form["disabled"].flatMap(Bool.init) else { throw APIError(.badRequest, "invalid_parameter", "disable or enable") }
        _ = try await admin.changeUser(context.parameters.get("name") ?? "", .init(disabled: disabled), caller, context)
        return Self.redirect("/console/users?done=\(disabled ? "user_disabled" : "user_enabled")")
    }

    func enrollmentToken(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller, _ form: [String: String]) async throws -> Response {
        try admin.authorize(AdminRoutes.enrollmentToken, caller)
        guard let node = try? NodeID(validating: form["node"] ?? ""), let parent = try? NodeID(validating: form["parent"] ?? "") else {
            throw APIError(.badRequest, "invalid_parameter", "the node and its parent are node ids")
        }
        let issued = try await admin.issueEnrollmentToken(.init(node: node, parent: parent), caller, context)
        return try render("token", title: "Enrollment token", me: caller, nav: "navNodes", values: [
            "node": issued.node.rawValue, "parent": issued.parent.rawValue, "token": issued.token, "expires": Self.timestamp(issued.expiresAtMillis),
        ], status: .created)
    }

    // MARK: Rendering

    func render(_ template: String, title: String, me caller: AdminCaller?, nav: String? = nil, values: [String: Any],
                status: HTTPResponse.Status = .ok) throws -> Response {
        let body = Self.library.render(values, withTemplate: template) ?? ""
        var page: [String: Any] = ["title": title, "body": body]
        if let error = values["error"] { page["error"] = error }
        if let flash = values["flash"] { page["flash"] = flash }
        if let caller {
            var me: [String: Any] = ["user": caller.user.name, "tenant": caller.user.tenant.rawValue, "scope": caller.user.scope.rawValue,
                                     "tenantWide": caller.isTenantWide, "csrf": caller.csrfToken ?? "",
                                     "roles": caller.user.roles.sorted().map(\.rawValue).joined(separator: ", ")]
            if let nav { me[nav] = true }
            page["me"] = me
        }
        let html = Self.library.render(page, withTemplate: "layout") ?? ""
        return Response(status: status, headers: Self.headers(contentType: "text/html; charset=utf-8"), body: .init(byteBuffer: ByteBuffer(string: html)))
    }

    /// Every console answer: no caching, no framing, no scripts, no foreign resources.
    static func headers(contentType: String) -> HTTPFields {
        var headers: HTTPFields = [.contentType: contentType]
        headers[.cacheControl] = "no-store"
        headers[.contentSecurityPolicy] = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        headers[HTTPField.Name("X-Frame-Options")!] = "DENY"
        headers[HTTPField.Name("X-Content-Type-Options")!] = "nosniff"
        headers[HTTPField.Name("Referrer-Policy")!] = "same-origin"
        return headers
    }

    static func redirect(_ location: String) -> Response {
        var headers = Self.headers(contentType: "text/plain; charset=utf-8")
        headers[.location] = location
        return Response(status: .seeOther, headers: headers)
    }

    static func stylesheet() -> Response {
        var headers = Self.headers(contentType: "text/css; charset=utf-8")
        headers[.cacheControl] = "max-age=300"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: ConsoleTemplates.css)))
    }

    /// What a redirect after a change says happened (codes, never text from the query).
    static func flash(_ query: Parameters) -> String? {
        switch query.get("done") {
        case "replay_applied": "Replayed: the change was stored and left the quarantine."
        case "replay_duplicate": "Replayed: the change was already stored; it left the quarantine."
        case "replay_refused": "Replayed, but refused again (\(codeParameter(query.get("code")))): fix the cause first."
        case "discarded": "Discarded; the reason is in the audit log."
        case "revoked": "Revoked: the node is refused from its next request."
        case "resolved": "Resolved: the value is written as a new edit; it reaches every node holding the record and closes the conflict there."
        case "approved": "Approved: release v\(Int(query.get("version") ?? "") ?? 0) is signed and rolling out."
        case "rejected": "Rejected; the reason is in the release history."
        case "user_added": "Administrator added."
        case "user_disabled": "Disabled: their sessions and tokens stop working at once."
        case "user_enabled": "Enabled."
        default: nil
        }
    }

    /// A refusal code as it may appear in a URL: letters and underscores only.
    static func codeParameter(_ code: String?) -> String {
        String((code ?? "unknown").prefix(40).filter { $0.isLetter || $0 == "_" })
    }

    /// A form body (`application/x-www-form-urlencoded`), at most ``maxFormBytes``, read as
    /// every body is (``BodyCodec/collect(_:upTo:)``): a larger declared length is answered 413
    /// at once and a slow body 408, where a form over the limit was a 500 `internal` logged
    /// as an error, and a large declared length waited for the body's time limit (helper 92).
    func form(_ request: Request) async throws -> [String: String] {
        let buffer = try await admin.codec.collect(request, upTo: Self.maxFormBytes)
        // Malformed is refused, not read as empty: `value=%FF%FE` resolved a conflict with ""
        // at HQ, which every holder then took (helper 98).
        let malformed = APIError(.badRequest, "malformed_form", "the form is not valid UTF-8 in percent-encoding")
        guard let body = String(validating: Array(buffer.readableBytesView), as: UTF8.self) else { throw malformed }
        var out: [String: String] = [:]
        for pair in body.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ s: Substring) throws -> String {
                guard let decoded = String(s).replacingOccurrences(of: "+", with: " ").removingPercentEncoding else { throw malformed }
                return decoded
            }
            guard let key = parts.first else { continue }
            out[try decode(key)] = parts.count > 1 ? try decode(parts[1]) : ""
        }
        return out
    }

    static func timestamp(_ millis: UInt64) -> String {
        Date(timeIntervalSince1970: Double(millis) / 1000).formatted(.iso8601.year().month().day().dateSeparator(.dash).time(includingFractionalSeconds: false).timeSeparator(.colon))
    }

    static func ago(_ now: UInt64, _ then: UInt64) -> String {
        duration(Int64(clamping: now &- min(now, then))) + " ago"
    }

    /// A node's clock offset from its parent: "12.0 s ahead", "3 min behind".
    static func clockOffset(_ millis: Int64) -> String {
        let magnitude = millis == .min ? Int64.max : abs(millis)
        let size = magnitude < 60_000 ? String(format: "%.1f s", Double(magnitude) / 1000) : duration(magnitude)
        return size + (millis >= 0 ? " ahead" : " behind")
    }

    static func duration(_ millis: Int64) -> String {
        let s = max(0, millis / 1000)
        if s < 60 { return "\(s) s" }
        if s < 3600 { return "\(s / 60) min" }
        if s < 86_400 { return "\(s / 3600) h \(s % 3600 / 60) min" }
        return "\(s / 86_400) d \(s % 86_400 / 3600) h"
    }
}

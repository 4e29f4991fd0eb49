import Foundation
import HTTPTypes
import Hummingbird
import Logging
import TiersyncCore
import TiersyncGovernance
import TiersyncKPI
import TiersyncStore

/// The route handlers: enrollment, push and pull, with tenant and scope checks.
struct SyncService: Sendable {
    let directory: any NodeDirectory
    let notifier: ChangeNotifier
    let governanceNotifier: ChangeNotifier
    let codec: BodyCodec
    let configuration: HubConfiguration
    let metrics: HubMetrics

    func health(_ request: Request, _ context: HubRequestContext) async throws -> Response {
        try codec.encode(["status": "ok"], for: request)
    }

    func enroll(_ request: Request, _ context: HubRequestContext) async throws -> Response {
        let body = try await codec.decode(EnrollRequest.self, from: request)
        // `via` says a country relays the enrollment: only that country, with its credential,
        // may say so. Taken from the body alone, anyone could claim any parent, and a country
        // could redeem (and see the credential of) another tenant's token.
        var relayer: Principal?
        if let via = body.via {
            guard let credential = BearerCredential.of(request),
                  let admission = try await directory.admit(credential: credential),
                  admission.refusal == nil, admission.principal.node == via else {
                throw APIError(.forbidden, "relay_unauthenticated",
                               "an enrollment naming 'via' is relayed by that node and carries its credential; a node enrolling directly names none")
            }
            relayer = admission.principal
        }
        do {
            let response = try await directory.enroll(body, relayer: relayer)
            context.logger.info("node enrolled", metadata: ["tenant": "\(response.tenant)", "node": "\(response.node)"])
            return try codec.encode(response, status: .created, for: request)
        } catch let error as EnrollmentError {
            switch error {
            case .unknownToken: throw APIError(.unauthorized, "invalid_token", error.description)
            case .alreadyUsed: throw APIError(.conflict, "token_used", error.description)
            case .expired: throw APIError(.gone, "token_expired", error.description)
            case .wrongParent: throw APIError(.conflict, "wrong_parent", error.description)
            case .enrolledElsewhere: throw APIError(.conflict, "enrolled_elsewhere", error.description)
            case .otherNode: throw APIError(.conflict, "token_for_other_node", error.description)
            }
        }
    }

    func whoami(_ request: Request, _ context: HubRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let node = try await directory.node(principal.node, of: principal.tenant)
        // A country's mirror holds its parent link to the root, so the path reaches the root there too.
        let tree = try await context.tenantTree(directory)
        let path = tree.path(of: principal.node).split(separator: "/").map { NodeID(unchecked: String($0)) }
        // Asked for by agents at start and after losing the hub, not on every call: one
        // indexed lookup per node of the caller's subtree.
        var held: [String: Int64]?
        if request.uri.queryParameters.get("held") == "true" {
            let store = try await directory.store(for: principal.tenant)
            held = Dictionary(uniqueKeysWithValues: try await store.highestSeqs(of: tree.subtree(of: principal.node)).map { ($0.key.rawValue, $0.value) })
            // What the caller holds of this node's own changes: above what this store holds,
            // it was restored from an older backup, and its next own change must not take a
            // number the caller holds (it would be refused there as a reused identity).
            if let reported = request.uri.queryParameters.get("parent_held").flatMap({ Int64($0) }), let parent = node?.parent,
               request.uri.queryParameters.get("parent_node") == parent.rawValue {
                try await store.adoptOwnSequence(reported, of: parent)
            }
        }
        return try codec.encode(WhoAmIResponse(tenant: principal.tenant, node: principal.node,
                                               parent: node?.parent, role: node?.role ?? "dealer",
                                               releaseKey: try await directory.releaseKey(of: principal.tenant), path: path, held: held),
                                for: request)
    }

    func push(_ request: Request, _ context: HubRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let (body, held) = try await codec.decodePush(from: request, tenant: principal.tenant)
        // A large body's memory stays reserved until the answer is made.
        defer { held?.release() }
        if let tenant = body.tenant, tenant != principal.tenant {
            throw APIError(.forbidden, "wrong_tenant", "this credential belongs to tenant '\(principal.tenant)', not '\(tenant)'")
        }
        guard body.changes.count <= configuration.limits.maxChangesPerPush else {
            throw APIError(.contentTooLarge, "too_many_changes",
                           "push carries \(body.changes.count) changes; the limit is \(configuration.limits.maxChangesPerPush) per request")
        }
        let store = try await directory.store(for: principal.tenant)
        let tree = try await context.tenantTree(directory)
        let scope = Scope(tree: tree, node: principal.node)
        // Scope before content: a change the pusher may not send (made outside its subtree)
        // is refused here, before the store judges, records or de-duplicates anything of it,
        // so it can neither poison the real origin's sequence nor learn whether it exists.
        let (entitledAsSent, foreign) = PushScope.partitionByOrigin(body.changes, pusher: principal.node, scope: scope)
        var entitled = entitledAsSent
        PushScope.dropForeignHops(&entitled, pusher: principal.node, tree: tree)
        // One reading of the clock judges the batch and is reported with it: a change
        // refused for skew is re-stamped by its origin to exactly this time.
        let now = WallClock.nowMillis()
        var report = try await store.applyIncoming(entitled, from: principal.node, source: .child, checkSkew: true,
                                                   gate: Self.scopeGate(pusher: principal.node, scope: scope, tree: tree,
                                                                        above: await directory.ancestorsAboveTree(of: principal.tenant), changes: entitled),
                                                   cursor: nil, wallMillis: now)
        if !foreign.isEmpty {
            // Listed in the batch's order, as the store lists its own refusals.
            let position = Dictionary(body.changes.enumerated().map { ("\($1.origin)#\($1.originSeq)", $0) }) { first, _ in first }
            report.rejected = (foreign + report.rejected).sorted {
                position["\($0.origin)#\($0.originSeq)", default: 0] < position["\($1.origin)#\($1.originSeq)", default: 0]
            }
        }
        if report.applied > 0 { await notifier.signal(principal.tenant) }
        metrics.recordPush(tenant: principal.tenant, applied: report.applied, duplicates: report.duplicates,
                           refusedByCode: Dictionary(report.rejected.map { ($0.code.rawValue, 1) }, uniquingKeysWith: +))
        if !report.rejected.isEmpty {
            context.logger.warning("changes quarantined", metadata: [
                "tenant": "\(principal.tenant)", "node": "\(principal.node)", "count": "\(report.rejected.count)",
                "first": "\(report.rejected[0].message.clipped(toUTF8: 300))",
            ])
        }
        let response = PushResponse(acknowledgedThrough: body.through, applied: report.applied, duplicates: report.duplicates,
                                    rejected: report.rejected, hubTimeMillis: now,
                                    // What was held of each origin before this batch: a pusher whose
                                    // earlier batches are missing learns that this hub was restored from
                                    // an older backup, even after newer changes of its have landed (which
                                    // hide the gap from `whoami`'s maximum).
                                    held: Dictionary(uniqueKeysWithValues: report.heldBefore.map { ($0.key.rawValue, $0.value) }))
        // 422 tells the pusher some changes were quarantined; the batch is acknowledged
        // either way, so a bad change never blocks the ones after it.
        return try codec.encode(response, status: report.rejected.isEmpty ? .ok : .unprocessableContent, for: request)
    }

    func pull(_ request: Request, _ context: HubRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let query = request.uri.queryParameters
        let limits = configuration.limits
        var cursor = try Self.integer(query, "cursor", default: 0, range: 0...Int64.max)
        let limit = Int(try Self.integer(query, "limit", default: Int64(limits.defaultPullLimit), range: 1...Int64(limits.maxPullLimit)))
        guard let wait = Double(query.get("wait") ?? "0"), wait >= 0, wait <= limits.maxPullWaitSeconds else {
            throw APIError(.badRequest, "invalid_parameter", "'wait' must be a number of seconds from 0 to \(limits.maxPullWaitSeconds)")
        }
        let excludeOwn = (query.get("exclude_own") ?? "true") != "false"
        // The log history the cursor was handed out under (`PullResponse.history`).
        let history = query.get("history")
        if let history, !PullResponse.isValidHistory(history) {
            throw APIError(.badRequest, "invalid_parameter", "'history' must be 1 to 32 lowercase hexadecimal digits, as a pull answered it")
        }
        let requested = cursor
        // The newest notice the caller took (`GET /v1/refusals`): a newer one answers at once.
        let refusalsTaken: Int64? = query.get("refusals_after") == nil ? nil
            : try Self.integer(query, "refusals_after", default: 0, range: 0...Int64.max)
        let store = try await directory.store(for: principal.tenant)
        let only = query.get("only")
        if only == nil {
            // A cursor counting positions of a log this hub lost (restored from an older
            // backup, then numbering new changes at those positions): the caller pulls again
            // from the start; served from here, it would skip what took those positions.
            if let history, cursor > 0, try await store.logHistoryStanding(history).loses(cursor: cursor) {
                throw APIError(.conflict, LogHistoryLost.code, LogHistoryLost(cursor: cursor, history: history).description)
            }
            // A cursor older than a purged delete may hide records deleted since: the caller
            // must fetch its scope again (0 is a fresh bootstrap and always served).
            let floor = try await store.retentionFloor()
            if cursor > 0, cursor < floor {
                throw APIError(.gone, RebootstrapRequired.code, RebootstrapRequired(cursor: cursor, floor: floor).description)
            }
            // The caller holds its scope through its cursor: the acknowledgement ledger.
            await store.notePulled(by: principal.node, through: cursor)
        }
        let deadline = ContinuousClock.now + .milliseconds(Int64(wait * 1000))
        // A notice newer than the caller took (or, from a caller that does not say, one kept
        // while it waits) answers the pull at once. Read only at a store that ever kept one: a
        // country that dropped a relayed change.
        let noticeAtStart = refusalsTaken == nil ? try await store.newestUpstreamRefusal(via: principal.node) : nil
        // The first reading is the tree read with the credential.
        var knownTree = context.tree
        while true {
            let generation = await notifier.generation(principal.tenant)
            // The scope is read again on every wake-up: a node that joined the caller's
            // subtree during a long-poll must not have its changes skipped by the cursor.
            let tree: NodeTree
            if let known = knownTree { tree = known } else { tree = try await directory.tree(of: principal.tenant) }
            knownTree = nil
            let scope = try scope(of: principal, in: tree, only: only)
            let page = try await store.encodedFeed(after: cursor, scope: scope, excluding: excludeOwn ? principal.node : nil, limit: limit)
            // An engine that reads the floor with the page (PostgreSQL: another hub process
            // may have purged since the check above). The caller's own cursor is judged, not
            // the one this long-poll moved on: a bootstrap from 0 stays a bootstrap.
            if only == nil, requested > 0, requested < page.floor {
                throw APIError(.gone, RebootstrapRequired.code, RebootstrapRequired(cursor: requested, floor: page.floor).description)
            }
            let remaining = deadline - ContinuousClock.now
            let closing = await notifier.isClosed
            // A cursor past the head answers at once: the caller's cursor is from before a
            // restore of this hub from an older backup, and it recovers on seeing the head.
            let notice = try await store.newestUpstreamRefusal(via: principal.node)
            let newNotice = refusalsTaken.map { (notice ?? 0) > $0 } ?? (notice != noticeAtStart)
            if page.count > 0 || remaining <= .zero || Task.isCancelled || closing || page.head < cursor || newNotice {
                var response = try codec.encode(json: page.json, for: request)
                // Changes the caller sent that a node above this one refused, and this one
                // dropped: the caller asks for them (`GET /v1/refusals`) when this is newer
                // than the last it took.
                if let notice { response.headers[Self.refusalsHeader] = String(notice) }
                return response
            }
            // Nothing for the caller in this stretch of the log (out of scope, or its own):
            // move past it and keep waiting, scanning on at once if the page was full.
            cursor = page.nextCursor
            if page.more { continue }
            await metrics.waiting(tenant: principal.tenant, feed: "changes") {
                await notifier.wait(principal.tenant, after: generation, timeout: remaining)
            }
        }
    }

    static let refusalsHeader = HTTPField.Name(UpstreamRefusal.pullHeader)!

    /// `GET /v1/refusals?after=<n>&limit=<m>`: changes the caller sent that a node above
    /// this one refused for good and this one dropped (``UpstreamRefusal``), numbered after
    /// `after`, oldest first. Each names a change the caller itself sent, and nothing else.
    func refusals(_ request: Request, _ context: HubRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let query = request.uri.queryParameters
        let after = try Self.integer(query, "after", default: 0, range: 0...Int64.max)
        let limit = try Self.integer(query, "limit", default: 100, range: 1...Int64(UpstreamRefusalsResponse.maxPage))
        let store = try await directory.store(for: principal.tenant)
        return try codec.encode(try await store.upstreamRefusals(via: principal.node, after: after, limit: Int(limit)), for: request)
    }

    /// The caller's scope, or for a backfill (`only`) one node of its subtree.
    private func scope(of principal: Principal, in tree: NodeTree, only: String?) throws -> Scope {
        guard let only else { return Scope(tree: tree, node: principal.node) }
        guard NodeID.isValid(only) else {
            throw APIError(.badRequest, "invalid_parameter", "'only' must be a node identifier, got '\(only.prefix(80))'")
        }
        guard tree.subtree(of: principal.node).contains(NodeID(unchecked: only)) else {
            throw APIError(.forbidden, "out_of_scope", "'only' must name a node in the subtree of '\(principal.node)', got '\(only)'")
        }
        return Scope(nodes: [NodeID(unchecked: only)])
    }

    func directory(_ request: Request, _ context: HubRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        return try codec.encode(try await directory.directory(for: principal), for: request)
    }

    /// `GET /v1/governance?known=<token>&wait=<s>`: the caller's governance bundle, at once
    /// when its content differs from `known`, else when it changes or `wait` runs out.
    func governance(_ request: Request, _ context: HubRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let query = request.uri.queryParameters
        let limits = configuration.limits
        guard let wait = Double(query.get("wait") ?? "0"), wait >= 0, wait <= limits.maxPullWaitSeconds else {
            throw APIError(.badRequest, "invalid_parameter", "'wait' must be a number of seconds from 0 to \(limits.maxPullWaitSeconds)")
        }
        let known = query.get("known")
        let store = try await directory.store(for: principal.tenant)
        let deadline = ContinuousClock.now + .milliseconds(Int64(wait * 1000))
        while true {
            let generation = await governanceNotifier.generation(principal.tenant)
            let bundle = try await GovernanceBundles.bundle(for: principal.node, tree: try await directory.tree(of: principal.tenant), store: store)
            let remaining = deadline - ContinuousClock.now
            let closing = await governanceNotifier.isClosed
            if bundle.token != known || remaining <= .zero || Task.isCancelled || closing {
                return try codec.encode(bundle, for: request)
            }
            await metrics.waiting(tenant: principal.tenant, feed: "governance") {
                await governanceNotifier.wait(principal.tenant, after: generation, timeout: remaining)
            }
        }
    }

    /// `GET /v1/governance/status`: the rollout-status table of the caller's subtree.
    func governanceStatus(_ request: Request, _ context: HubRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let tree = try await directory.tree(of: principal.tenant)
        let subtree = tree.subtree(of: principal.node)
        let nodes = try await directory.nodes(of: principal.tenant).filter { subtree.contains($0.node) }
        // Another branch's trial is not the caller's to read.
        let concerned = tree.isRoot(principal.node) ? nil : Set(subtree.union(tree.ancestors(of: principal.node)).map(\.rawValue))
        return try codec.encode(try await GovernanceStatusReport.response(tenant: principal.tenant, nodes: nodes,
                                                                    store: try await directory.store(for: principal.tenant),
                                                                    concerned: concerned), for: request)
    }

    /// `GET /v1/kpis?period=day|week|month&by=node`: the KPI table of the caller's subtree,
    /// from the answering hub's store (``KPIViews``).
    func kpis(_ request: Request, _ context: HubRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let query = request.uri.queryParameters
        guard let period = KPIPeriodKind(rawValue: query.get("period") ?? KPIPeriodKind.month.rawValue) else {
            throw APIError(.badRequest, "invalid_parameter", "'period' must be day, week or month")
        }
        let by = query.get("by")
        guard by == nil || by == "node" else { throw APIError(.badRequest, "invalid_parameter", "'by' must be node or absent") }
        let tree = try await directory.tree(of: principal.tenant)
        let store = try await directory.store(for: principal.tenant)
        return try codec.encode(try await KPIViews.response(store: store, viewer: principal.node, tree: tree, period: period, byNode: by == "node"),
                                for: request)
    }

    /// `POST /v1/status`: lag reports (``LagReport``) of the caller and nodes of its subtree.
    /// Scope before content: one report naming a node outside the caller's subtree refuses
    /// the request (403, the same answer whether that node exists or not) before any
    /// number is read. Several reports of one node: the freshest counts.
    func status(_ request: Request, _ context: HubRequestContext) async throws -> Response {
        let principal = try context.requirePrincipal()
        let body = try await codec.decode(StatusRequest.self, from: request, kind: .bulk)
        let limit = configuration.limits.maxLagReportsPerRequest
        guard body.reports.count <= limit else {
            throw APIError(.contentTooLarge, "too_many_reports", "a status request carries at most \(limit) reports, got \(body.reports.count)")
        }
        let subtree = try await context.tenantTree(directory).subtree(of: principal.node)
        if let outside = body.reports.first(where: { !subtree.contains($0.node) }) {
            throw APIError(.forbidden, "forbidden", "'\(outside.node)' is not in the subtree of '\(principal.node)': a node reports only itself and the nodes below it")
        }
        let freshest: [NodeID: LagReport]
        do throws(InvalidLagReport) {
            freshest = try body.freshestByNode()
        } catch {
            throw APIError(.unprocessableContent, "invalid_report",
                           "the report of '\(error.node)' has a number outside 0...\(LagReport.maxValue) (pending, oldestPendingMillis and measuredMillisAgo count changes and milliseconds) or a clockOffsetMillis outside ±\(LagReport.maxValue)")
        }
        let now = WallClock.nowMillis()
        let lags = freshest.mapValues {
            NodeLag(pending: $0.pending, oldestPendingMillis: $0.oldestPendingMillis, measuredAtMillis: $0.measuredAtMillis(receivedAtMillis: now),
                    clockOffsetMillis: $0.clockOffsetMillis)
        }
        let accepted = try await directory.recordLag(lags, of: principal.tenant)
        return try codec.encode(StatusResponse(accepted: accepted), for: request)
    }

    /// The push scope rule (``PushScope``) as the store's gate, for a push of `changes`.
    /// A change the pusher relays from a node below it is judged by the scope of that node,
    /// its origin (``PushScope/relayedRefusal(for:origins:pusher:scope:routeBefore:routeAfter:reach:)``),
    /// and so is the route each change makes (``RouteReach``; `above`: the nodes above the
    /// tree's root, at a country node).
    static func scopeGate(pusher: NodeID, scope: Scope, tree: NodeTree, above: [NodeID], changes: [Change]) -> ChangeGate {
        let origins = PushScope.originScopes(of: changes, pusher: pusher, tree: tree)
        let reach = RouteReach(tree: tree, above: above)
        return { context in
            PushScope.relayedRefusal(for: context.change, origins: origins, pusher: pusher, scope: scope,
                                     routeBefore: context.routeBefore, routeAfter: context.routeAfter, reach: reach,
                                     copiedFromRoute: context.copiedFromRoute)
        }
    }

    static func integer(_ query: Parameters, _ name: String, default value: Int64, range: ClosedRange<Int64>) throws -> Int64 {
        guard let raw = query.get(name) else { return value }
        guard let n = Int64(raw), range.contains(n) else {
            throw APIError(.badRequest, "invalid_parameter", "'\(name)' must be an integer from \(range.lowerBound) to \(range.upperBound), got '\(raw)'")
        }
        return n
    }
}

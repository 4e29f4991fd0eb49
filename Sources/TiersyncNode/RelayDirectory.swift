import Foundation
import HTTPTypes
import Logging
import Synchronization
import TiersyncAgent
import TiersyncCore
import TiersyncServer
import TiersyncStore

/// A country node's directory: its subtree and its dealers' credential digests, mirrored
/// from HQ into the node's own catalog. Dealers authenticate against the mirror, so the
/// country keeps serving them while HQ is unreachable (the mirror is a file, so it also
/// survives a restart; a credential revoked at HQ is refused from the refresh after the
/// revocation on, and stays refused while HQ is unreachable); HQ stays the authority.
public final class RelayDirectory: NodeDirectory {
    /// This country node itself.
    public func servingNode(of tenant: TenantID) async throws -> NodeID? { identity.node }

    let store: NodeStore
    let identity: NodeIdentity
    let mirror: HubCatalog
    /// The mirror behind the catalog seam (what the last-seen recorder writes to).
    private var mirrorCatalog: SQLiteCatalog { SQLiteCatalog(mirror) }
    let parent: ParentClient
    let logger: Logger
    private let lastMissRefresh = Mutex<UInt64>(0)
    /// When the last refresh failed to reach HQ (nil after a success): while HQ is
    /// unreachable, an unknown credential is refused at once from the mirror instead of
    /// waiting for HQ's connection attempts to time out (the refresh loop keeps trying).
    private let lastFailure = Mutex<UInt64?>(nil)
    static let unreachableMillis: UInt64 = 10_000
    /// Refreshes may overlap (the loop, an unknown credential, an enrollment): each takes
    /// a ticket before fetching, and a result older than the one applied is dropped.
    private let tickets = Mutex<(next: UInt64, applied: UInt64)>((0, 0))
    /// The directory last written to the mirror and when: an unchanged answer is not written
    /// again (every 2 s it rewrote the mirror and moved the catalog's version, 0.9 GB a day of
    /// writes for an idle country; helper 106), except once in ``rewriteMillis``.
    private let lastWritten = Mutex<(directory: DirectoryResponse, atMillis: UInt64)?>(nil)
    static let rewriteMillis: UInt64 = 300_000
    private let lastSeen = LastSeenRecorder()

    public init(store: NodeStore, identity: NodeIdentity, mirror: HubCatalog, parent: ParentClient, logger: Logger) {
        self.store = store
        self.identity = identity
        self.mirror = mirror
        self.parent = parent
        self.logger = logger
    }

    /// Fetches the subtree from HQ and replaces the mirror with it. If HQ no longer
    /// accepts this node's credential, the mirror is emptied: a revoked country serves no
    /// one.
    public func refresh() async throws {
        let ticket = tickets.withLock { t -> UInt64 in
            t.next += 1
            return t.next
        }
        let directory: DirectoryResponse
        do {
            directory = try await parent.directory()
            lastFailure.withLock { $0 = nil }
        } catch AgentError.http(let status, _, let message) where status == 401 || status == 403 {
            logger.critical("HQ refuses this node's credential; no longer serving dealers", metadata: ["reason": "\(message)"])
            // No administrators either: kept, their accounts went on logging in to this
            // country's admin API and console, frozen as they were.
            directory = DirectoryResponse(tenant: identity.tenant, root: identity.node, nodes: [], credentials: [], admins: [])
            lastFailure.withLock { $0 = nil }
        } catch {
            if !(error is CancellationError) { lastFailure.withLock { $0 = WallClock.nowMillis() } }
            throw error
        }
        // Nodes, credentials and administrators in one transaction, in ticket order: an older
        // result applied after a newer one would bring back what HQ had changed since.
        let now = WallClock.nowMillis()
        try tickets.withLock { t in
            guard ticket > t.applied else { return }
            t.applied = ticket
            if let last = lastWritten.withLock({ $0 }), last.directory == directory, now < last.atMillis + Self.rewriteMillis { return }
            try mirror.replaceDirectory(directory)
            lastWritten.withLock { $0 = (directory, now) }
        }
    }

    /// The nodes below this one in the mirror.
    func descendants() async throws -> Set<NodeID> {
        try await mirror.tree(of: identity.tenant).subtree(of: identity.node).subtracting([identity.node])
    }

    /// A dealer HQ moved to another country is unknown here from the next refresh on: its
    /// agent, still started towards this country, read "revoked" and was sent for a new
    /// enrollment token it did not need (helper 83).
    public var unknownCredentialMessage: String {
        // Without this country's id: the caller may hold a made-up credential.
        "unknown or revoked credential, or one of a node that is not (or no longer) below this country: a dealer HQ moved to another country syncs through that one (restart its agent with --parent)"
    }

    public func authenticate(credential: String) async throws -> Principal? {
        if let principal = try await mirror.authenticate(credential: credential) { return principal }
        // Unknown here: maybe a dealer enrolled or moved in since the last refresh. Ask HQ,
        // at most once a second, so forged credentials cannot make us hammer it.
        let now = WallClock.nowMillis()
        if let failed = lastFailure.withLock({ $0 }), now < failed + Self.unreachableMillis { return nil }
        let due = lastMissRefresh.withLock { last in
            guard now >= last + 1_000 else { return false }
            last = now
            return true
        }
        guard due else { return nil }
        await refreshWaiting(atMost: Self.missWait)
        return try await mirror.authenticate(credential: credential)
    }

    /// How long a request with an unknown credential waits for HQ's directory: a healthy
    /// HQ answers in milliseconds; one that just went away can take its connection timeout,
    /// which no request should wait out.
    static let missWait: Duration = .seconds(2)

    /// Refreshes the mirror, waiting at most `limit`; a refresh still running then finishes
    /// on its own and updates the mirror when it does.
    private func refreshWaiting(atMost limit: Duration) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let once = ResumeOnce(continuation)
            Task {
                do { try await self.refresh() } catch { self.logger.notice("directory refresh failed", metadata: ["error": "\(error)"]) }
                once.resume()
            }
            Task {
                try? await Task.sleep(for: limit)
                once.resume()
            }
        }
    }

    /// This country's ancestors (its path from the root, as its parent's `whoami` gave it),
    /// nearest first; empty until the agent has learned the path.
    public func ancestorsAboveTree(of tenant: TenantID) async -> [NodeID] {
        guard (try? checkTenant(tenant)) != nil, let path = try? store.meta(MetaKey.treePath.rawValue) else { return [] }
        let nodes = path.split(separator: "/").map { NodeID(unchecked: String($0)) }
        guard nodes.last == identity.node else { return [] }
        return nodes.dropLast().reversed()
    }

    public func tree(of tenant: TenantID) async throws -> NodeTree {
        try checkTenant(tenant)
        return try await mirror.tree(of: tenant)
    }

    public func node(_ id: NodeID, of tenant: TenantID) async throws -> NodeRecord? {
        try checkTenant(tenant)
        return try await mirror.node(id, of: tenant)
    }

    public func nodes(of tenant: TenantID) async throws -> [NodeRecord] {
        try checkTenant(tenant)
        return try await mirror.nodes(of: tenant)
    }

    /// HQ's release key as this node learned it at enrollment (dealers verify against it
    /// too: a country cannot sign releases).
    public func releaseKey(of tenant: TenantID) async throws -> String? {
        try checkTenant(tenant)
        return try store.meta(GovernanceFollower.keyMeta)
    }

    /// Dealers enroll through their country: the token is HQ's, so it is redeemed there,
    /// naming this node as the parent it must have. The sequence floor covers what this
    /// node holds from the dealer but has not forwarded yet.
    public func enroll(_ request: EnrollRequest, relayer: Principal?) async throws -> EnrollResponse {
        var response: EnrollResponse
        do {
            response = try await parent.enroll(token: request.token, via: identity.node, expecting: request.expected)
        } catch AgentError.http(let status, let code, let message) where (400..<500).contains(status) && code != "http_\(status)" {
            // HQ's own refusal (a bad or used token, a node already enrolled): the dealer
            // needs its words. Anything else (HQ failing, a proxy's page in front of it) is
            // the country's problem, handled below.
            throw APIError(.init(code: status), code, message)
        } catch AgentError.throttled(let retryAfter, let message) {
            // HQ limits enrollments from this country's address: the dealer waits as told.
            // HQ's words name this country's own address, which the caller need not learn.
            logger.notice("HQ throttles enrollments relayed from this country", metadata: ["hq": "\(message)"])
            var error = APIError(.tooManyRequests, "rate_limited", "enrollment goes through HQ, which asks to wait; retry after \(retryAfter.components.seconds) s")
            error.headers[.retryAfter] = String(retryAfter.components.seconds)
            throw error
        } catch AgentError.http(503, "storage_unavailable", _) {
            // HQ is up but its database is not (PostgreSQL restarting): a passing state the
            // dealer waits out as HQ's own callers do, not a gateway failing (502).
            var error = APIError(.serviceUnavailable, "parent_unavailable", "enrollment goes through HQ, which cannot store it right now; nothing was done. Retry later")
            error.headers[.retryAfter] = "5"
            throw error
        } catch {
            // Logged here with the cause; the caller (anyone, before enrolling) is not told
            // HQ's address or the connection's details.
            logger.error("enrollment could not be relayed to HQ", metadata: ["error": "\(error)"])
            throw APIError(.badGateway, "parent_unreachable", "enrollment goes through HQ, which could not be reached or failed; try again later")
        }
        response.highestSeq = max(response.highestSeq ?? 0, try await store.highestSeq(of: response.node))
        try? await refresh()
        return response
    }

    public func directory(for principal: Principal) async throws -> DirectoryResponse {
        try await mirror.directory(for: principal)
    }

    public func store(for tenant: TenantID) async throws -> any HubTenantStore {
        try checkTenant(tenant)
        return store
    }

    public func openTenants() -> [TenantID] { [identity.tenant] }

    public var administration: Administration? {
        Administration(catalog: mirrorCatalog, accounts: mirrorCatalog, isRelay: true)
    }

    public func tenants() async throws -> [TenantID] { [identity.tenant] }

    public func touch(_ principal: Principal) async {
        await lastSeen.record(principal, in: mirrorCatalog)
    }

    /// Dealers' reports are kept in the mirror (its own table, which a refresh leaves
    /// alone), from where the country's agent relays them to HQ (``relayedLag()``).
    public func recordLag(_ reports: [NodeID: NodeLag], of tenant: TenantID) async throws -> Int {
        try checkTenant(tenant)
        return try await mirror.recordLag(reports, of: tenant)
    }

    public func lags(of tenant: TenantID) async throws -> [NodeID: NodeLag] {
        try checkTenant(tenant)
        return try await mirror.lags(of: tenant)
    }

    public func probeWritable() async throws {
        try await mirror.probeWritable()
        try await store.probeWritable()
    }

    /// What the dealers below reported, as reports to pass upward: each says how long ago
    /// it was measured, so HQ places it in time on its own clock.
    public func relayedLag() async -> [LagReport] {
        guard let lags = try? await mirror.lags(of: identity.tenant), let present = try? await descendants() else { return [] }
        let now = WallClock.nowMillis()
        // Only the nodes below this one now: the last report of a dealer that moved to another
        // country stays in the mirror, and HQ refuses a status request naming a node outside
        // the sender's subtree whole, so this country's reports, and its dealers', stopped.
        return lags.filter { present.contains($0.key) }.sorted { $0.key < $1.key }.map { node, lag in
            LagReport(node: node, pending: lag.pending, oldestPendingMillis: lag.oldestPendingMillis,
                      measuredMillisAgo: Int64(clamping: now &- min(now, lag.measuredAtMillis)), clockOffsetMillis: lag.clockOffsetMillis)
        }
    }

    private func checkTenant(_ tenant: TenantID) throws {
        guard tenant == identity.tenant else { throw StoreError.notFound("tenant '\(tenant)' on node '\(identity.node)'") }
    }
}

/// Resumes a continuation once, whichever caller comes first.
private final class ResumeOnce: Sendable {
    private let continuation: Mutex<CheckedContinuation<Void, Never>?>

    init(_ continuation: CheckedContinuation<Void, Never>) { self.continuation = Mutex(continuation) }

    func resume() {
        continuation.withLock { c in
            c?.resume()
            c = nil
        }
    }
}

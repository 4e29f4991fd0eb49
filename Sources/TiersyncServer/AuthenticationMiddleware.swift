import Hummingbird
import Synchronization
import TiersyncCore
import TiersyncStore

/// Resolves `Authorization: Bearer <credential>` to a node of a tenant, looked up on every
/// request (nothing is cached, so a revoked credential fails at its next request), with its
/// tenant's tree as of the same moment (the request's scope), and whether this hub serves
/// that node (``NodeDirectory/refusal(for:)``:
/// 403 `wrong_parent` for a dealer bypassing its country). Only the routes marked public
/// in ``HubRoutes`` are reachable without a credential.
struct AuthenticationMiddleware: RouterMiddleware {
    typealias Context = HubRequestContext
    let directory: any NodeDirectory
    /// The per-node limiter of ``RateLimitMiddleware``: a node this hub does not serve is
    /// refused within its node's rate too (helper 92: a dealer's credential sent to HQ got
    /// 1,680 answers of 403 `wrong_parent` a second, never a 429).
    let refusedNodes: RequestRateLimiter<NodeKey>?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        // Public routes need nothing; the admin API and the console check administrators.
        if HubRoutes.isPublic(method: request.method, path: request.uri.path) || AdminRoutes.isAdministrative(request.uri.path) {
            return try await next(request, context)
        }
        guard let header = request.headers[.authorization] else {
            throw APIError(.unauthorized, "unauthenticated", "missing 'Authorization: Bearer <credential>' header; enroll the node to obtain a credential")
        }
        // The scheme is case-insensitive (RFC 9110); the parser drops the spaces that end a
        // header, so "Bearer " with no credential arrives as "Bearer" (helper 89: it was told
        // to use the Bearer scheme, which it had).
        let (isBearer, credential) = BearerCredential.parse(header)
        guard isBearer else {
            throw APIError(.unauthorized, "unauthenticated", "the Authorization header must use the Bearer scheme")
        }
        guard !credential.isEmpty else {
            throw APIError(.unauthorized, "unauthenticated", "the Bearer credential is empty; enroll the node to obtain a credential")
        }
        guard let admission = try await directory.admit(credential: String(credential)) else {
            throw APIError(.unauthorized, "unauthenticated", directory.unknownCredentialMessage)
        }
        // Known, but maybe not served here: a dealer syncs through its country.
        if let refusal = admission.refusal {
            if let refusedNodes {
                let key = NodeKey(admission.principal)
                if let limited = refusedNodes.admit(key) { throw limited.apiError(who: "node '\(admission.principal.node)'") }
                refusedNodes.finish(key)
            }
            throw APIError(.forbidden, refusal.code, refusal.message)
        }
        var context = context
        context.principal = admission.principal
        context.tree = admission.tree
        await directory.touch(admission.principal)
        return try await next(request, context)
    }
}

/// Records when each node was last seen, at most every 10 s per node, and writes what it
/// gathered to the catalog in one transaction at most once a second (a hub serving 5,000
/// agents otherwise ran ~500 one-row write transactions a second for it). Each sighting
/// keeps its own time; a write that fails is retried with the next. Sightings of the last
/// second before a shutdown may be lost.
public final class LastSeenRecorder: Sendable {
    private struct State {
        var noted: [String: UInt64] = [:]
        var pending: [(principal: Principal, atMillis: UInt64)] = []
        var lastWrite: UInt64 = 0
        var writeScheduled = false
    }
    private enum Action {
        case none
        case write([(principal: Principal, atMillis: UInt64)])
        case schedule(afterMillis: UInt64)
    }
    private let state = Mutex(State())
    private let now: @Sendable () -> UInt64
    private let sleep: @Sendable (UInt64) async -> Void
    static let intervalMillis: UInt64 = 10_000
    static let writeMillis: UInt64 = 1_000

    /// - Parameters:
    ///   - now: the wall clock in milliseconds;
    ///   - sleep: waits before a delayed write (milliseconds).
    ///   Tests pass a clock they move by hand and a sleep they end themselves, so "within the
    ///   second" does not depend on how loaded the machine is.
    public init(now: @escaping @Sendable () -> UInt64 = { WallClock.nowMillis() },
                sleep: @escaping @Sendable (UInt64) async -> Void = { try? await Task.sleep(for: .milliseconds(Int64($0))) }) {
        self.now = now
        self.sleep = sleep
    }

    /// Notes `principal` as seen now. Written at once when nothing was written in the last
    /// second, else by one delayed write that carries everything noted until then.
    public func record(_ principal: Principal, in catalog: any HubCatalogStore) async {
        let now = self.now()
        let key = "\(principal.tenant)/\(principal.node)"
        let action: Action = state.withLock { s in
            if now >= (s.noted[key] ?? 0) + Self.intervalMillis {
                s.noted[key] = now
                s.pending.append((principal, now))
            }
            guard !s.pending.isEmpty, !s.writeScheduled else { return .none }
            if now >= s.lastWrite + Self.writeMillis { return .write(Self.take(&s, at: now)) }
            s.writeScheduled = true
            return .schedule(afterMillis: s.lastWrite + Self.writeMillis - now)
        }
        switch action {
        case .none:
            return
        case .write(let sightings):
            await write(sightings, to: catalog)
        case .schedule(let delay):
            Task {
                await sleep(delay)
                let sightings = state.withLock { s in
                    s.writeScheduled = false
                    return Self.take(&s, at: self.now())
                }
                await write(sightings, to: catalog)
            }
        }
    }

    private static func take(_ s: inout State, at now: UInt64) -> [(principal: Principal, atMillis: UInt64)] {
        s.lastWrite = now
        defer { s.pending = [] }
        return s.pending
    }

    private func write(_ sightings: [(principal: Principal, atMillis: UInt64)], to catalog: any HubCatalogStore) async {
        guard !sightings.isEmpty else { return }
        do {
            try await catalog.touch(sightings)
        } catch {
            state.withLock { $0.pending.insert(contentsOf: sightings, at: 0) }
        }
    }
}

import Hummingbird
import Synchronization
import TiersyncCore
import TiersyncStore

/// Resolves `Authorization: Bearer <credential>` to a node of a tenant. Only the routes
/// marked public in ``HubRoutes`` are reachable without a credential.
struct AuthenticationMiddleware: RouterMiddleware {
    typealias Context = HubRequestContext
    let directory: any NodeDirectory

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if HubRoutes.isPublic(method: request.method, path: request.uri.path) {
            return try await next(request, context)
        }
        guard let header = request.headers[.authorization] else {
            throw APIError(.unauthorized, "unauthenticated", "missing 'Authorization: Bearer <credential>' header; enroll the node to obtain a credential")
        }
        let prefix = "Bearer "
        guard header.hasPrefix(prefix) else {
            throw APIError(.unauthorized, "unauthenticated", "the Authorization header must use the Bearer scheme")
        }
        guard let principal = try await directory.authenticate(credential: String(header.dropFirst(prefix.count))) else {
            throw APIError(.unauthorized, "unauthenticated", "unknown or revoked credential")
        }
        var context = context
        context.principal = principal
        await directory.touch(principal)
        return try await next(request, context)
    }
}

/// Records when each node was last seen, at most every 10 s per node, and writes what it
/// gathered to the catalog in one transaction at most once a second (a hub serving 5,000
/// agents otherwise ran ~500 one-row write transactions a second for it).
public final class LastSeenRecorder: Sendable {
    private struct State {
        var written: [String: UInt64] = [:]
        var pending: [Principal] = []
        var lastFlush: UInt64 = 0
    }
    private let state = Mutex(State())
    static let intervalMillis: UInt64 = 10_000
    static let flushMillis: UInt64 = 1_000

    public init() {}

    /// Notes `principal` as seen now; the request that finds a second passed since the
    /// last write carries everything noted since (its own sighting included).
    public func record(_ principal: Principal, in catalog: HubCatalog) async {
        let now = WallClock.nowMillis()
        let key = "\(principal.tenant)/\(principal.node)"
        let due: [Principal] = state.withLock { s in
            if now >= (s.written[key] ?? 0) + Self.intervalMillis {
                s.written[key] = now
                s.pending.append(principal)
            }
            guard !s.pending.isEmpty, now >= s.lastFlush + Self.flushMillis else { return [] }
            s.lastFlush = now
            defer { s.pending = [] }
            return s.pending
        }
        if !due.isEmpty { try? await catalog.touch(due, nowMillis: now) }
    }
}

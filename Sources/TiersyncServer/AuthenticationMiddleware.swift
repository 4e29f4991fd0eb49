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

/// Records when each node was last seen, writing to the catalog at most every 10 s per
/// node rather than on every request.
public final class LastSeenRecorder: Sendable {
    private let written = Mutex<[String: UInt64]>([:])
    static let intervalMillis: UInt64 = 10_000

    public init() {}

    public func record(_ principal: Principal, in catalog: HubCatalog) async {
        let now = WallClock.nowMillis()
        let key = "\(principal.tenant)/\(principal.node)"
        let due = written.withLock { seen in
            guard now >= (seen[key] ?? 0) + Self.intervalMillis else { return false }
            seen[key] = now
            return true
        }
        if due { try? await catalog.touch(principal, nowMillis: now) }
    }
}

import Hummingbird
import TiersyncStore

/// Resolves `Authorization: Bearer <credential>` to a node of a tenant. Only the routes
/// marked public in ``HubRoutes`` are reachable without a credential.
struct AuthenticationMiddleware: RouterMiddleware {
    typealias Context = HubRequestContext
    let catalog: HubCatalog

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
        guard let principal = try catalog.authenticate(credential: String(header.dropFirst(prefix.count))) else {
            throw APIError(.unauthorized, "unauthenticated", "unknown or revoked credential")
        }
        var context = context
        context.principal = principal
        try? catalog.touch(principal)
        return try await next(request, context)
    }
}

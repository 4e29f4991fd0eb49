import Hummingbird
import TiersyncStore

/// Per-request state: who is calling, once ``AuthenticationMiddleware`` has checked.
public struct HubRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public var principal: Principal?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        principal = nil
    }

    /// The authenticated caller; routes behind the middleware can rely on it.
    func requirePrincipal() throws -> Principal {
        guard let principal else { throw APIError(.unauthorized, "unauthenticated", "missing credential") }
        return principal
    }
}

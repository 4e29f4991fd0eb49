import Hummingbird
import TiersyncStore

/// Per-request state: who is calling, once ``AuthenticationMiddleware`` has checked.
public struct HubRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public var principal: Principal?
    /// The peer's IP address, for limiting what arrives without a credential.
    public let remoteAddress: String?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        principal = nil
        remoteAddress = source.channel.remoteAddress?.ipAddress
    }

    /// The authenticated caller; routes behind the middleware can rely on it.
    func requirePrincipal() throws -> Principal {
        guard let principal else { throw APIError(.unauthorized, "unauthenticated", "missing credential") }
        return principal
    }
}

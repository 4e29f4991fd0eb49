import Hummingbird
import NIOCore
import TiersyncCore
import TiersyncStore

/// Per-request state: who is calling, once ``AuthenticationMiddleware`` has checked.
public struct HubRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public var principal: Principal?
    /// The caller's tenant's tree, read with its credential: every route of the request
    /// scopes by this one reading.
    public var tree: NodeTree?
    /// The peer's IP address, for limiting what arrives without a credential.
    public let remoteAddress: String?
    /// The connection, closed after an answer that leaves much of a body unread
    /// (``UnreadBodyMiddleware``).
    let channel: any Channel
    /// The administrator calling an admin route, once ``AdminAuthenticator`` has checked.
    public var admin: AdminCaller?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        principal = nil
        tree = nil
        admin = nil
        remoteAddress = source.channel.remoteAddress?.ipAddress
        channel = source.channel
    }

    /// The authenticated caller; routes behind the middleware can rely on it.
    func requirePrincipal() throws -> Principal {
        guard let principal else { throw APIError(.unauthorized, "unauthenticated", "missing credential") }
        return principal
    }

    /// The caller's tenant's tree as the credential check read it (or, on a route that ran
    /// without the check, as `directory` holds it now).
    func tenantTree(_ directory: any NodeDirectory) async throws -> NodeTree {
        if let tree { return tree }
        return try await directory.tree(of: try requirePrincipal().tenant)
    }
}

import HTTPTypes
import Hummingbird

/// Answers 429 with `Retry-After` when an authenticated node exceeds its request rate or
/// its requests in flight (``RequestRateLimiter``). Runs after authentication.
///
/// Requests with a body (pushes) are also capped per node in flight by `bodies`: each may
/// hold up to the body limits in memory while it is read and inflated, and an agent sends
/// one push at a time.
struct RateLimitMiddleware: RouterMiddleware {
    typealias Context = HubRequestContext
    let limiter: RequestRateLimiter<NodeKey>
    let bodies: RequestRateLimiter<NodeKey>

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let principal = context.principal else { return try await next(request, context) }
        let key = NodeKey(principal)
        let who = "node '\(principal.node)'"
        if let refusal = limiter.admit(key) { throw refusal.apiError(who: who) }
        defer { limiter.finish(key) }
        guard request.method == .post else { return try await next(request, context) }
        if let refusal = bodies.admit(key) { throw refusal.apiError(who: who) }
        defer { bodies.finish(key) }
        return try await next(request, context)
    }
}

/// Limits what arrives without a credential, by remote address: the public routes
/// (enrollment, health) are admitted against the address's bucket, and every failed
/// authentication drains it further, so flooding enrollment or trying credentials slows
/// only that address's public requests and never crowds out syncing nodes. Requests with
/// a credential are never refused here: many agents may share one address behind a NAT,
/// and one of them failing must not lock the others out (they are limited per node).
struct AddressRateLimitMiddleware: RouterMiddleware {
    typealias Context = HubRequestContext
    let limiter: RequestRateLimiter<String>
    /// Enrollments a country relays for its dealers, per relaying node, once its address's
    /// bucket is spent (``relayingNode(_:)``).
    let relays: RequestRateLimiter<NodeKey>
    let directory: any NodeDirectory
    /// Tokens one failed authentication costs its address.
    static let failureCost = 4.0

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let address = context.remoteAddress ?? "unknown"
        // Logging in (API or console) is limited like the other routes without a credential.
        // Probes are not: a flood of them costs little (`/readyz` shares one check a second).
        let isPublic = (HubRoutes.isPublic(method: request.method, path: request.uri.path)
                        && !HubRoutes.isProbe(method: request.method, path: request.uri.path))
            || (request.method == .post && AdminRoutes.isLogin(request.uri.path))
        var relay: NodeKey?
        if isPublic, let refusal = limiter.admit(address) {
            // A country relays its dealers' enrollments from its own address. Anyone can
            // send it tokens that fail, and each failure drains that address here: its
            // dealers' enrollments then went with it. Past the address's bucket, an
            // enrollment bearing the credential of a node this hub serves counts against
            // that node instead (the country limits its own callers by their addresses).
            // Looked up only then: a flood without one costs no more than it did.
            guard let node = try await relayingNode(request) else { throw refusal.apiError(who: "address \(address)") }
            if let refused = relays.admit(node) { throw refused.apiError(who: "node '\(node.node)' relaying enrollments") }
            relay = node
        }
        defer {
            if let relay { relays.finish(relay) } else if isPublic { limiter.finish(address) }
        }
        do {
            let response = try await next(request, context)
            // The console answers a failed login with its page (401), not an error: charged
            // alike (it was not, and the console was a way around the throttle).
            if response.status == .unauthorized, relay == nil { limiter.charge(address, Self.failureCost) }
            return response
        } catch let error as APIError where error.status == .unauthorized {
            if relay == nil { limiter.charge(address, Self.failureCost) }
            throw error
        }
    }

    /// The node relaying `request`, an enrollment bearing the credential of a node this hub
    /// serves (a country), or nil.
    func relayingNode(_ request: Request) async throws -> NodeKey? {
        guard request.method == .post, request.uri.path == HubRoutes.enroll.path,
              let credential = BearerCredential.of(request),
              let admission = try await directory.admit(credential: credential),
              admission.refusal == nil else { return nil }
        return NodeKey(admission.principal)
    }
}

extension RequestRateLimiter.Refusal {
    /// The 429 answer, naming who is limited and when to come back.
    func apiError(who: String) -> APIError {
        var error: APIError
        let seconds: Int
        switch self {
        case .rate(let s):
            seconds = s
            error = APIError(.tooManyRequests, "rate_limited", "\(who) exceeds its request rate; retry after \(s) s")
        case .concurrency(let s):
            seconds = s
            error = APIError(.tooManyRequests, "too_many_in_flight", "\(who) has too many requests in flight; retry after \(s) s")
        }
        error.headers[.retryAfter] = String(seconds)
        return error
    }
}

import HTTPTypes
import Hummingbird

/// Answers 429 with `Retry-After` when an authenticated node exceeds its request rate or
/// its requests in flight (``RequestRateLimiter``). Runs after authentication: unknown
/// credentials never get a bucket.
struct RateLimitMiddleware: RouterMiddleware {
    typealias Context = HubRequestContext
    let limiter: RequestRateLimiter

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let principal = context.principal else { return try await next(request, context) }
        if let refusal = limiter.admit(principal) {
            var error: APIError
            let seconds: Int
            switch refusal {
            case .rate(let s):
                seconds = s
                error = APIError(.tooManyRequests, "rate_limited", "node '\(principal.node)' exceeds its request rate; retry after \(s) s")
            case .concurrency(let s):
                seconds = s
                error = APIError(.tooManyRequests, "too_many_in_flight", "node '\(principal.node)' has too many requests in flight; retry after \(s) s")
            }
            error.headers[.retryAfter] = String(seconds)
            throw error
        }
        defer { limiter.finish(principal) }
        return try await next(request, context)
    }
}

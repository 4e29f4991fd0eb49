import TiersyncCore

/// Why a sync step failed.
public enum AgentError: Error, Sendable, CustomStringConvertible {
    /// The parent answered with an error status and body.
    case http(status: Int, code: String, message: String)
    /// The parent refused the request for now (429: the node's request rate or requests
    /// in flight; 503 with `Retry-After`: the hub's memory for large pushes, or its storage,
    /// busy); try again no sooner than `retryAfter`.
    case throttled(retryAfter: Duration, message: String)
    case notEnrolled(String)
    case invalidConfiguration(String)
    case malformedResponse(String)
    /// The parent could not be reached or spoken to (connection, TLS), named with the cause.
    case unreachable(String)

    public var description: String {
        switch self {
        case .http(let status, let code, let message): "HTTP \(status) \(code): \(message)"
        case .throttled(let after, let message): "refused for now (retry after \(after)): \(message)"
        case .notEnrolled(let m), .invalidConfiguration(let m), .malformedResponse(let m), .unreachable(let m): m
        }
    }

    /// How long the parent asked the node to wait, if it did.
    public var retryAfter: Duration? {
        if case .throttled(let after, _) = self { return after }
        return nil
    }

    /// The delay before retrying after `error`: the backoff's, or longer if the parent
    /// asked for longer.
    static func delay(after error: any Error, backoff: Duration) -> Duration {
        max(backoff, (error as? AgentError)?.retryAfter ?? .zero)
    }
}

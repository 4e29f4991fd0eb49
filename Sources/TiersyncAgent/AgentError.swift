import TiersyncCore

/// Why a sync step failed.
public enum AgentError: Error, Sendable, CustomStringConvertible {
    /// The parent answered with an error status and body.
    case http(status: Int, code: String, message: String)
    case notEnrolled(String)
    case invalidConfiguration(String)
    case malformedResponse(String)

    public var description: String {
        switch self {
        case .http(let status, let code, let message): "HTTP \(status) \(code): \(message)"
        case .notEnrolled(let m), .invalidConfiguration(let m), .malformedResponse(let m): m
        }
    }
}

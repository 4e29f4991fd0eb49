import Hummingbird

/// The hub's HTTP API, one line per route. The router is built from this table and the
/// OpenAPI document (`openapi.yaml`) is tested against it, so the three cannot drift.
public enum HubRoutes {
    public struct Route: Sendable, Hashable {
        public let method: String
        public let path: String
        /// Reachable without a credential.
        public let isPublic: Bool
    }

    public static let health = Route(method: "GET", path: "/v1/health", isPublic: true)
    public static let enroll = Route(method: "POST", path: "/v1/enroll", isPublic: true)
    public static let whoami = Route(method: "GET", path: "/v1/whoami", isPublic: false)
    public static let push = Route(method: "POST", path: "/v1/push", isPublic: false)
    public static let pull = Route(method: "GET", path: "/v1/pull", isPublic: false)
    public static let directory = Route(method: "GET", path: "/v1/directory", isPublic: false)
    public static let governance = Route(method: "GET", path: "/v1/governance", isPublic: false)
    public static let governanceStatus = Route(method: "GET", path: "/v1/governance/status", isPublic: false)
    public static let kpis = Route(method: "GET", path: "/v1/kpis", isPublic: false)

    public static let all: [Route] = [health, enroll, whoami, push, pull, directory, governance, governanceStatus, kpis]

    static func isPublic(method: HTTPRequest.Method, path: String) -> Bool {
        all.contains { $0.isPublic && $0.path == path && $0.method == method.rawValue }
    }
}

import Hummingbird

/// The hub's HTTP API, one line per route. The router is built from this table and the
/// OpenAPI document (`openapi.yaml`) is tested against it, so the three cannot drift.
public enum HubRoutes {
    public struct Route: Sendable, Hashable {
        /// The route's label in metrics (`route="push"`).
        public let name: String
        public let method: String
        public let path: String
        /// Reachable without a node's credential (`/metrics` checks its own token).
        public let isPublic: Bool
    }

    public static let health = Route(name: "health", method: "GET", path: "/v1/health", isPublic: true)
    public static let enroll = Route(name: "enroll", method: "POST", path: "/v1/enroll", isPublic: true)
    public static let whoami = Route(name: "whoami", method: "GET", path: "/v1/whoami", isPublic: false)
    public static let push = Route(name: "push", method: "POST", path: "/v1/push", isPublic: false)
    public static let pull = Route(name: "pull", method: "GET", path: "/v1/pull", isPublic: false)
    public static let refusals = Route(name: "refusals", method: "GET", path: "/v1/refusals", isPublic: false)
    public static let directory = Route(name: "directory", method: "GET", path: "/v1/directory", isPublic: false)
    public static let governance = Route(name: "governance", method: "GET", path: "/v1/governance", isPublic: false)
    public static let governanceStatus = Route(name: "governance_status", method: "GET", path: "/v1/governance/status", isPublic: false)
    public static let kpis = Route(name: "kpis", method: "GET", path: "/v1/kpis", isPublic: false)
    public static let status = Route(name: "status", method: "POST", path: "/v1/status", isPublic: false)
    // Operations: probes for orchestrators and load balancers, metrics for Prometheus.
    public static let liveness = Route(name: "healthz", method: "GET", path: "/healthz", isPublic: true)
    public static let readiness = Route(name: "readyz", method: "GET", path: "/readyz", isPublic: true)
    public static let metrics = Route(name: "metrics", method: "GET", path: "/metrics", isPublic: true)

    public static let all: [Route] = [health, enroll, whoami, push, pull, refusals, directory, governance, governanceStatus, kpis, status,
                                      liveness, readiness, metrics]

    static func isPublic(method: HTTPRequest.Method, path: String) -> Bool {
        all.contains { $0.isPublic && $0.path == path && $0.method == method.rawValue }
    }

    /// The probes a load balancer or orchestrator asks, never rate limited: limited by the
    /// caller's address, like enrollment, they answered 429 to a balancer sharing its
    /// address with failed logins, which took the hub out of service (helper 108).
    static let probes: [Route] = [health, liveness, readiness]

    static func isProbe(method: HTTPRequest.Method, path: String) -> Bool {
        probes.contains { $0.path == path && $0.method == method.rawValue }
    }
}

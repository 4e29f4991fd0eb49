import TiersyncCore
import TiersyncStorage

/// Everything a hub needs to run. Defaults are the production defaults.
public struct HubConfiguration: Sendable {
    /// How the hub's listener is secured.
    public enum Transport: Sendable {
        /// TLS with this certificate chain and key (PEM files).
        case tls(certificatePath: String, privateKeyPath: String)
        /// Plain HTTP: development only, never on a network.
        case insecureDevelopmentHTTP
    }

    public var host: String
    /// 0 picks a free port (reported through `onReady`).
    public var port: Int
    /// Holds `hub.sqlite` and `tenants/<tenant>.sqlite`.
    public var dataDirectory: String
    public var transport: Transport
    /// Changes stamped further ahead of the hub's clock are refused.
    public var maxClockSkewMillis: UInt64 = 60_000
    public var limits = Limits()
    /// The bearer token Prometheus presents at `GET /metrics`; nil serves no metrics
    /// (they name tenants and nodes, so they are never public).
    public var metricsToken: String?
    /// A directory of `<tenant>.release.key` files (`tiersync admin release-key`): with it,
    /// administrators publish, approve and roll out releases through the admin API and the
    /// console; without it those answer 503 `no_release_key`.
    public var releaseKeyDirectory: String?
    /// How long the tenant stores keep what they could purge (superseded log entries,
    /// tombstones), and how often they are compacted; nil never compacts.
    public var retention: RetentionPolicy? = .default

    public init(host: String = "127.0.0.1", port: Int = 8443, dataDirectory: String, transport: Transport) {
        self.host = host
        self.port = port
        self.dataDirectory = dataDirectory
        self.transport = transport
    }

    /// Bounds on what one request may carry or ask for.
    public struct Limits: Sendable {
        /// Bytes of request body as sent (compressed or not).
        public var maxRequestBytes = 8 * 1024 * 1024
        /// Bytes of a push's body after decompression.
        public var maxDecompressedBytes = 64 * 1024 * 1024
        /// Bytes of any other body (enrollment, login, admin requests), as sent and once
        /// decompressed: anyone may send an enrollment or a login.
        public var maxSmallBodyBytes = 256 * 1024
        /// Bytes of a body carrying governance sources (a release, a validation: their own
        /// limit, JSON-escaped) or lag reports (``maxLagReportsPerRequest`` of them), as sent
        /// and once decompressed.
        public var maxBulkBodyBytes = 8 * 1024 * 1024
        /// Changes in one push.
        public var maxChangesPerPush = 10_000
        /// Changes in one pull page.
        public var maxPullLimit = 10_000
        public var defaultPullLimit = 1_000
        /// Longest long-poll a node may ask for, in seconds.
        public var maxPullWaitSeconds = 60.0
        /// Seconds a request body may take to arrive in full (a client trickling it holds
        /// a connection and a task): answered 408.
        public var bodyTimeoutSeconds = 30
        /// Seconds a connection may stay silent while the hub waits for a request or for the
        /// rest of one (a body shorter than its Content-Length, a chunk that never comes):
        /// the connection is closed. Long-polls being answered do not count as silence.
        public var idleTimeoutSeconds = 30
        /// Connections one remote address may hold open (nil: no limit); past it a new
        /// connection is closed as soon as it is accepted (``ConnectionLimiter``). An agent
        /// holds a few; a site's dealers behind one NAT address hold a few each.
        public var maxConnectionsPerAddress: Int? = 512
        /// Connections the process may hold open in all (nil: from its open-file limit,
        /// ``ConnectionLimiter/defaultTotal()``), so that connections alone never use up the
        /// descriptors its databases need.
        public var maxConnections: Int? = nil
        /// Addresses bounded by ``maxConnections`` alone, not per address: a load balancer
        /// or proxy that carries many clients' connections. By default the loopback host.
        public var unlimitedAddresses: Set<String> = ["127.0.0.1", "::1"]
        /// Requests per second one node may make, on average; a burst of
        /// ``requestBurst`` is allowed. Beyond it: 429 with `Retry-After`.
        public var requestsPerSecond = 50.0
        public var requestBurst = 200.0
        /// Requests one node may have in flight at once (an agent needs three: push, pull
        /// and governance long-polls; a country node relaying its dealers needs a few more).
        public var maxConcurrentRequestsPerNode = 16
        /// Pushes one node may have in flight: each may hold up to the body limits in
        /// memory (an agent sends one at a time).
        public var maxConcurrentPushesPerNode = 2
        /// Bytes of large push bodies, once inflated, the process decodes and applies at once
        /// (``PushMemoryBudget``; a decoded push takes about four and a half times its body),
        /// one tenant at most half of them; a push past it waits up to
        /// ``pushMemoryWaitSeconds``, then is answered 503 with `Retry-After`.
        public var pushMemoryBytes = 256 * 1024 * 1024
        public var pushMemoryWaitSeconds = 10
        /// Requests without a credential (enrollment, health) per remote address, per second
        /// on average, in a burst, and in flight; each failed authentication costs the
        /// address 4 requests' worth.
        public var anonymousRequestsPerSecond = 10.0
        public var anonymousRequestBurst = 50.0
        public var maxConcurrentAnonymousRequests = 8
        /// Administrators' passwords checked at once (PBKDF2, ~0.1 s of a core each), and
        /// logins waiting their turn; past that a login is answered 429 `logins_busy` at once.
        /// Nil: half the machine's cores, at least one.
        public var loginChecksAtOnce: Int? = nil
        public var loginChecksWaiting = 32
        /// Seconds a graceful stop (SIGTERM) may take: open long-polls end at once, requests
        /// in flight finish; past this, what still runs is cancelled.
        public var shutdownGraceSeconds = 20
        /// Live API tokens one administrator may hold; the next is refused (409 `too_many_tokens`).
        public var adminTokens = AdminTokenLimit.apiTokens
        /// Live console sessions one administrator may hold; a login past it ends the oldest.
        public var adminSessions = AdminTokenLimit.sessions
        /// Lag reports in one `POST /v1/status` (a country relays one per dealer).
        public var maxLagReportsPerRequest = 20_000
        /// How much of its refused changes each tenant keeps, per sending node and in all;
        /// past it a refusal is answered but not kept (``QuarantineQuota``).
        public var quarantine = QuarantineQuota.default

        public init() {}
    }
}

import TiersyncCore

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
        /// Bytes of request body after decompression.
        public var maxDecompressedBytes = 64 * 1024 * 1024
        /// Changes in one push.
        public var maxChangesPerPush = 10_000
        /// Changes in one pull page.
        public var maxPullLimit = 10_000
        public var defaultPullLimit = 1_000
        /// Longest long-poll a node may ask for, in seconds.
        public var maxPullWaitSeconds = 60.0

        public init() {}
    }
}

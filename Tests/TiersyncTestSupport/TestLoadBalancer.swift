import Foundation
import NIOCore
import NIOPosix
import NIOSSL

/// A real load balancer in front of servers on loopback ports: HAProxy (Debian `haproxy`) on a
/// loopback port picked for it, in TCP mode, so TLS passes through untouched and each client
/// talks TLS with a backend itself (certificates, client certificates and all). New
/// connections go to the backends in turn (`balance roundrobin`); a backend that refuses a
/// connection is retried and the connection given to another (`retries 3`, `option
/// redispatch`); there are no active health checks. Timeouts are 10 minutes, longer than any
/// long-poll. Its configuration and log (a line per connection, naming the backend) are in a
/// temporary directory. Without haproxy installed, tests that need it are skipped, visibly:
///
///     // Skipped, with this reason in the output, when haproxy is not installed.
///     @Test(.enabled(if: TestLoadBalancer.isAvailable, "haproxy is not installed"))
///
/// Prefer `withLoadBalancer(backends:)` or `Running.loadBalancer(backends:)`, which stop it
/// however the test ends.
public final class TestLoadBalancer {
    /// The port clients connect to, on 127.0.0.1.
    public let port: Int
    /// The backends' ports on 127.0.0.1, in the order HAProxy takes them.
    public let backends: [Int]
    private let child: Child
    private let directory: TempDir

    /// The `haproxy` executable, on PATH or in the sbin directories Debian puts it in.
    public static var executable: String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let directories = path.split(separator: ":").map(String.init) + ["/usr/sbin", "/usr/local/sbin", "/sbin"]
        return directories.map { $0 + "/haproxy" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    public static var isAvailable: Bool { executable != nil }

    /// Starts HAProxy in front of `backends` (ports on 127.0.0.1) and returns once it accepts
    /// connections.
    public static func start(backends: [Int]) async throws -> TestLoadBalancer {
        guard let haproxy = executable else { throw TestFailure("haproxy is not installed (Debian: apt-get install haproxy)") }
        guard !backends.isEmpty else { throw TestFailure("a load balancer needs at least one backend") }
        let directory = try TempDir()
        let configuration = directory.path + "/haproxy.cfg"
        var attempt = 0
        while true {
            attempt += 1
            let port = try await freeLoopbackPort()
            try configurationText(port: port, backends: backends).write(toFile: configuration, atomically: true, encoding: .utf8)
            // -db: stay in the foreground, so the child is HAProxy itself and stopping it stops it.
            let child = try Child(executable: haproxy, ["-db", "-f", configuration], log: directory.path + "/haproxy.log")
            if await acceptsConnections(port: port, while: child) {
                return TestLoadBalancer(port: port, backends: backends, child: child, directory: directory)
            }
            await child.stop(grace: 2)
            // The port picked may have been taken in the meantime: pick another, twice at most.
            if attempt < 3, child.output.contains("cannot bind") { continue }
            throw TestFailure("haproxy did not start (\(configuration)):\n\(child.output)")
        }
    }

    private init(port: Int, backends: [Int], child: Child, directory: TempDir) {
        self.port = port
        self.backends = backends
        self.child = child
        self.directory = directory
    }

    /// HAProxy's log so far: a line per finished connection, with the backend that served it.
    public var log: String { child.output }

    /// Stops HAProxy (SIGTERM: open connections are cut) and waits for it to exit.
    public func stop() async { await child.stop(grace: 5) }

    /// Freezes HAProxy (SIGSTOP): a network gone silent. Its connections stay open and carry
    /// nothing; new ones are still accepted by the kernel and then hear nothing.
    public func freeze() { child.send(signal: SIGSTOP) }

    /// Thaws a frozen HAProxy (SIGCONT).
    public func thaw() { child.send(signal: SIGCONT) }

    static func configurationText(port: Int, backends: [Int]) -> String {
        """
        # Written by TestLoadBalancer (Tests/TiersyncTestSupport) for one test.
        global
            log stderr format raw local0 info

        defaults
            mode tcp
            log global
            option tcplog
            timeout connect 2s
            timeout client 10m
            timeout server 10m
            retries 3
            option redispatch

        frontend tiersync
            bind 127.0.0.1:\(port)
            default_backend hubs

        backend hubs
            balance roundrobin
        \(backends.enumerated().map { "    server hub\($0.offset) 127.0.0.1:\($0.element)" }.joined(separator: "\n"))

        """
    }

    /// Whether a TCP connection to `port` succeeds within 10 s while `child` runs. (HAProxy hands
    /// this probe to a backend, which sees a connection closed before any TLS handshake.)
    private static func acceptsConnections(port: Int, while child: Child) async -> Bool {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline, child.process.isRunning {
            if let channel = try? await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.seconds(1)).connect(host: "127.0.0.1", port: port).get() {
                try? await channel.close()
                return true
            }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return false
    }
}

/// Runs `body` with HAProxy in front of `backends` (see `TestLoadBalancer`), given the port to
/// connect to, and stops it when `body` returns or throws.
public func withLoadBalancer<T>(backends: [Int], _ body: (Int) async throws -> T) async throws -> T {
    let balancer = try await TestLoadBalancer.start(backends: backends)
    return try await withTeardown({ await balancer.stop() }) { try await body(balancer.port) }
}

extension Running {
    /// Starts HAProxy in front of `backends`, stopped at the end of the scope.
    public func loadBalancer(backends: [Int]) async throws -> TestLoadBalancer {
        let balancer = try await TestLoadBalancer.start(backends: backends)
        add { await balancer.stop() }
        return balancer
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the system picked it for a listener
/// that is closed again), for a program that takes a port to listen on.
public func freeLoopbackPort() async throws -> Int {
    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
    let port = channel.localAddress?.port
    try await channel.close()
    guard let port else { throw TestFailure("no port for a loopback listener") }
    return port
}

/// What `httpsGet` got: the status, the body and the certificate the server presented.
public struct TLSReply: Sendable {
    public let status: Int
    public let body: String
    /// The DER bytes of the peer's leaf certificate.
    public let peerCertificate: [UInt8]
}

/// One `GET path` over a new TLS connection to 127.0.0.1:`port`, trusting only `caFile`
/// (the certificate must name 127.0.0.1), with the certificate the server presented: through
/// a TLS-passthrough load balancer, the certificate of the backend that served the connection.
public func httpsGet(port: Int, caFile: String, path: String, timeout: Duration = .seconds(10)) async throws -> TLSReply {
    var tls = TLSConfiguration.makeClientConfiguration()
    tls.trustRoots = .file(caFile)
    let context = try NIOSSLContext(configuration: tls)
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .connectTimeout(.seconds(5))
        .connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture {
                // No host name: NIOSSL verifies the certificate against the address connected to.
                try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: context, serverHostname: nil))
                return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
            }
        }
    return try await within(timeout, "a reply to GET \(path) from port \(port)") {
        try await channel.executeThenClose { inbound, outbound in
            // Keep-alive (no `Connection: close`): the connection stays open until the reply is
            // read and the certificate asked for; leaving this scope closes it.
            try await outbound.write(ByteBuffer(string: "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"))
            var received = ByteBuffer()
            var certificate: NIOSSLCertificate?
            for try await var chunk in inbound {
                // The handshake is done once data arrives.
                if certificate == nil { certificate = try await channel.channel.nioSSL_peerCertificate().get() }
                received.writeBuffer(&chunk)
                if let reply = try parseHTTPReply(received, certificate: certificate) { return reply }
            }
            throw TestFailure("connection to port \(port) closed before a complete reply: \(String(buffer: received))")
        }
    }
}

/// A complete `HTTP/1.1` reply with a Content-Length in `buffer`, or nil while incomplete.
private func parseHTTPReply(_ buffer: ByteBuffer, certificate: NIOSSLCertificate?) throws -> TLSReply? {
    let text = String(buffer: buffer)
    guard let headerEnd = text.range(of: "\r\n\r\n") else { return nil }
    let lines = text[..<headerEnd.lowerBound].components(separatedBy: "\r\n")
    let statusParts = lines[0].split(separator: " ")
    guard statusParts.count >= 2, statusParts[0].hasPrefix("HTTP/1."), let status = Int(statusParts[1]) else {
        throw TestFailure("not an HTTP reply: \(lines[0])")
    }
    let length = lines.dropFirst().compactMap { line -> Int? in
        let parts = line.split(separator: ":", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "content-length" else { return nil }
        return Int(parts[1].trimmingCharacters(in: .whitespaces))
    }.first
    guard let length else { throw TestFailure("reply without Content-Length: \(lines.joined(separator: " | "))") }
    let body = text[headerEnd.upperBound...]
    guard body.utf8.count >= length else { return nil }
    guard let certificate else { throw TestFailure("no peer certificate") }
    return TLSReply(status: status, body: String(body), peerCertificate: try certificate.toDERBytes())
}

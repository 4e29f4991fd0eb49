#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Testing
@testable import TiersyncServer
import TiersyncTestSupport

/// A plain TCP connection to the hub on loopback, held open until closed (no TLS: a
/// connection counts from the moment it is accepted).
private final class HeldConnection {
    let descriptor: Int32

    init(port: Int) throws {
        #if canImport(Glibc)
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        descriptor = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard descriptor >= 0 else { throw TestFailure("socket: \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(descriptor)
            throw TestFailure("connect: \(errno)")
        }
    }

    /// Whether the hub closed the connection within `seconds` (a read sees its end). The read
    /// blocks, so it runs on a thread of its own: blocking one of the two cooperative threads
    /// for seconds stalled every other test of the process (their timing bounds failed).
    func closedByHub(within seconds: Int) async -> Bool {
        let descriptor = self.descriptor
        return await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                var timeout = timeval(tv_sec: seconds, tv_usec: 0)
                setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                var byte: UInt8 = 0
                let read = recv(descriptor, &byte, 1, 0)
                continuation.resume(returning: read == 0 || (read < 0 && errno == ECONNRESET))
            }
        }
    }

    deinit { close(descriptor) }
}

@Suite("Connections bounded per address and in all")
struct ConnectionLimitTests {
    @Test("""
        a client address holding its limit of open connections has its next one closed at once, before TLS, and an HTTPS \
        request from it fails until one of them closes; the refusals are counted (tiersync_connections_refused_total) and \
        every connection's place is given back when it closes (nothing bounded them: one client could open connections until \
        the hub had no file descriptor left for any tenant's node or database)
        """)
    func perAddress() async throws {
        let dir = try TempDir()
        var limits = HubConfiguration.Limits()
        limits.maxConnectionsPerAddress = 3
        limits.unlimitedAddresses = []
        try await withRunningHub(directory: dir.path, limits: limits) { hub in
            let limiter = hub.server.connections
            var held = try (0..<3).map { _ in try HeldConnection(port: hub.port) }
            try await eventually(timeout: 10, "the hub holds the three connections") { limiter.open(from: "127.0.0.1") == (3, 3) }
            let refused = try HeldConnection(port: hub.port)
            #expect(await refused.closedByHub(within: 5), "the fourth connection from the address is closed at once")
            #expect(await !held[0].closedByHub(within: 1), "the first three stay open")
            await #expect(throws: (any Error).self) {
                try await withRawClient(hub) { client in _ = try await client.send("GET", "/healthz") }
            }
            let exposition = hub.server.metrics.exposition()
            #expect(exposition.contains(#"tiersync_connections_refused_total{reason="per_address"}"#), "\(exposition)")
            #expect(limiter.open(from: "127.0.0.1") == (3, 3))

            held.removeFirst()
            try await eventually(timeout: 10, "the closed connection's place is given back") { limiter.open().total == 2 }
            let reply = try await withRawClient(hub) { client in try await client.send("GET", "/healthz") }
            #expect(reply.status == 200)
            held.removeAll()
            try await eventually(timeout: 40, "every place is given back") { limiter.open().total == 0 }
        }
    }

    @Test("an address listed as unlimited (a load balancer in front) is held to the total alone, which bounds every address")
    func total() async throws {
        let dir = try TempDir()
        var limits = HubConfiguration.Limits()
        limits.maxConnectionsPerAddress = 1
        limits.maxConnections = 4
        limits.unlimitedAddresses = ["127.0.0.1"]
        try await withRunningHub(directory: dir.path, limits: limits) { hub in
            let held = try (0..<4).map { _ in try HeldConnection(port: hub.port) }
            try await eventually(timeout: 10, "the hub holds four connections from one address") { hub.server.connections.open().total == 4 }
            #expect(await !held[3].closedByHub(within: 1))
            #expect(await (try HeldConnection(port: hub.port)).closedByHub(within: 5), "the fifth is past the total")
            #expect(hub.server.metrics.exposition().contains(#"tiersync_connections_refused_total{reason="total"}"#))
        }
    }

    @Test("--unlimited-addresses is read as the hub writes addresses, and anything but an IP address is refused")
    func addresses() {
        #expect(ConnectionLimiter.address("::1") == "::1")
        #expect(ConnectionLimiter.address("0:0:0:0:0:0:0:1") == "::1")
        #expect(ConnectionLimiter.address("10.0.0.5") == "10.0.0.5")
        #expect(ConnectionLimiter.address("::ffff:10.0.0.5") == "10.0.0.5")
        #expect(ConnectionLimiter.address("lb.example") == nil)
        // IPv6 is counted by its /64 (a client rotating addresses in its /64 is one client);
        // IPv4-mapped addresses as IPv4, so the loopback default covers a dual-stack listener's.
        let limiter = ConnectionLimiter(perAddress: 2, total: 100, unlimited: ["127.0.0.1"])
        #expect(limiter.admit("2001:db8:1:2::10") == nil && limiter.admit("2001:db8:1:2:ffff::20") == nil)
        #expect(limiter.admit("2001:db8:1:2::30") == .perAddress)
        #expect(limiter.admit("2001:db8:1:3::10") == nil, "another /64")
        #expect(limiter.open(from: "2001:db8:1:2::99").fromAddress == 2)
        for _ in 0..<5 { #expect(limiter.admit("::ffff:127.0.0.1") == nil) }
        #expect(limiter.admit("::ffff:10.0.0.5") == nil && limiter.admit("10.0.0.5") == nil && limiter.admit("10.0.0.5") == .perAddress)
        limiter.release("2001:db8:1:2::10")
        #expect(limiter.admit("2001:db8:1:2::40") == nil, "a place given back to the /64")
        #expect(limiter.open().total == 10)
        #expect(ConnectionLimiter.address("") == nil)
        #expect(ConnectionLimiter.defaultTotal() >= 64)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import Synchronization

/// Counts a hub's open connections, per remote address and in all, and refuses those past
/// the limits.
///
/// Every connection holds a file descriptor from the moment it is accepted, before TLS and
/// before any credential: without a bound, one client (enrolled or not) opening
/// connections faster than the idle timeout closes them used up the process's descriptors,
/// and then no node of any tenant could connect and no database file could be opened.
/// The limits are checked when the connection is accepted; a refused one is closed at once,
/// without a TLS handshake or an answer (an agent retries it with backoff).
///
/// Addresses in ``unlimited`` (by default the loopback host: a load balancer or proxy on
/// the same machine, which carries many clients' connections) count toward the total only.
public final class ConnectionLimiter: Sendable {
    /// Why a connection was refused (the `reason` of `tiersync_connections_refused_total`).
    public enum Refusal: String, Sendable {
        /// Its address held ``ConnectionLimiter/perAddress`` connections already.
        case perAddress = "per_address"
        /// The hub held ``ConnectionLimiter/total`` connections already.
        case total
    }

    /// Connections one address may hold (nil: no limit).
    public let perAddress: Int?
    /// Connections the process may hold in all.
    public let total: Int
    /// Addresses limited by ``total`` alone.
    public let unlimited: Set<String>

    private struct Counts {
        var total = 0
        var byAddress: [String: Int] = [:]
    }
    private let counts = Mutex(Counts())

    public init(perAddress: Int?, total: Int, unlimited: Set<String>) {
        self.perAddress = perAddress.flatMap { $0 > 0 ? $0 : nil }
        self.total = max(1, total)
        self.unlimited = unlimited
    }

    /// What `address` is counted under, or nil when it is held to the total alone: an
    /// IPv4 address as itself (also when written IPv4-mapped, `::ffff:10.0.0.5`, as a
    /// dual-stack listener sees it), an IPv6 address by its /64 (one client commonly holds
    /// a whole /64, and rotating addresses within it would escape a per-address count).
    func limitKey(_ address: String?) -> String? {
        guard let address else { return nil }
        let (normalized, key) = Self.normalized(address)
        return unlimited.contains(normalized) || unlimited.contains(address) ? nil : key
    }

    /// `address` written as the limiter compares it, and the key it is counted under.
    static func normalized(_ address: String) -> (address: String, key: String) {
        guard address.contains(":") else { return (address, address) }
        var bytes = in6_addr()
        guard inet_pton(AF_INET6, address, &bytes) == 1 else { return (address, address) }
        let octets = withUnsafeBytes(of: &bytes) { Array($0) }
        if octets[0..<10].allSatisfy({ $0 == 0 }), octets[10] == 0xff, octets[11] == 0xff {
            let v4 = octets[12...].map(String.init).joined(separator: ".")
            return (v4, v4)
        }
        let prefix = stride(from: 0, to: 8, by: 2).map { String(UInt16(octets[$0]) << 8 | UInt16(octets[$0 + 1]), radix: 16) }
        return (address, prefix.joined(separator: ":") + "::/64")
    }

    /// A connection from `address` (nil: not an IP connection, counted in the total only):
    /// nil when it may stay (call ``release(_:)`` when it closes), else why not.
    public func admit(_ address: String?) -> Refusal? {
        let limited = limitKey(address)
        return counts.withLock { counts in
            if counts.total >= total { return .total }
            if let limited, let perAddress, counts.byAddress[limited, default: 0] >= perAddress { return .perAddress }
            counts.total += 1
            if let limited { counts.byAddress[limited, default: 0] += 1 }
            return nil
        }
    }

    /// A connection ``admit(_:)`` let in has closed.
    public func release(_ address: String?) {
        let limited = limitKey(address)
        counts.withLock { counts in
            counts.total -= 1
            if let limited, let held = counts.byAddress[limited] {
                if held <= 1 { counts.byAddress[limited] = nil } else { counts.byAddress[limited] = held - 1 }
            }
        }
    }

    /// Open connections, in all and counted under `address` (its /64 for IPv6).
    public func open(from address: String? = nil) -> (total: Int, fromAddress: Int) {
        let key = address.map { Self.normalized($0).key }
        return counts.withLock { counts in (counts.total, key.map { counts.byAddress[$0] ?? 0 } ?? 0) }
    }

    /// `text` as the hub writes a connection's remote address (IPv6 in its shortest form),
    /// or nil when it is not an IP address.
    public static func address(_ text: String) -> String? {
        (try? SocketAddress(ipAddress: text, port: 0))?.ipAddress.map { normalized($0).address }
    }

    /// Raises the process's open-file limit to what the system allows it (as a server
    /// does at start: the soft limit is often 1,024, the hard one far more), before
    /// ``defaultTotal()`` reads it. Returns the limit in force afterwards.
    @discardableResult
    public static func raiseOpenFileLimit() -> Int? {
        var limit = rlimit()
        guard getrlimit(resource, &limit) == 0 else { return nil }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = min(limit.rlim_max, 1_048_576)
            if setrlimit(resource, &raised) == 0 { limit = raised }
        }
        return limit.rlim_cur == rlim_t.max ? nil : Int(clamping: limit.rlim_cur)
    }

    #if os(Linux)
    private static let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
    #else
    private static let resource = RLIMIT_NOFILE
    #endif

    /// The default total: the process's open-file limit less what the hub needs besides
    /// connections (database files and their journals, PostgreSQL connections, certificates,
    /// logs): a tenth of it, at least 256, and never below 64 connections.
    public static func defaultTotal() -> Int {
        var limit = rlimit()
        guard getrlimit(resource, &limit) == 0 else { return 1_024 }
        // RLIM_INFINITY is all bits set, which Swift reads as a negative literal.
        let soft = limit.rlim_cur == rlim_t.max ? 1_048_576 : Int(clamping: limit.rlim_cur)
        return max(64, soft - max(256, soft / 10))
    }
}

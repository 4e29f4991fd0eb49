import Foundation
import Synchronization
import Logging
import NIOSSL
import PostgresNIO

/// Where a PostgreSQL database is and how to reach it, from a URL of the form
/// `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE` (`postgresql://` too; PORT defaults to
/// 5432; USER, PASSWORD and DATABASE may be percent-encoded; an IPv6 host in brackets).
///
/// **TLS.** A loopback host (`localhost`, `127.x.x.x`, `::1`) is reached without TLS: the
/// traffic never leaves the machine, and the test clusters (`ops/postgres/test-cluster.sh`)
/// have no certificate. Any other host requires TLS, verified against the system's trust
/// store with the host's name, and the connection fails rather than fall back to plain
/// text. The URL takes no query parameters (`?sslmode=…` and the like are refused, not ignored).
public struct PostgresEndpoint: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var username: String
    public var password: String?
    public var database: String

    public init(host: String, port: Int = 5432, username: String, password: String? = nil, database: String) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.database = database
    }

    public init(url: String) throws(PostgresEndpointError) {
        func fail(_ reason: String) -> PostgresEndpointError { PostgresEndpointError(url: url, reason: reason) }
        guard let schemeEnd = url.range(of: "://") else {
            throw fail("not a URL: write postgres://USER@HOST:PORT/DATABASE")
        }
        let scheme = url[..<schemeEnd.lowerBound].lowercased()
        guard scheme == "postgres" || scheme == "postgresql" else {
            throw fail("the scheme is '\(scheme)'; a PostgreSQL URL starts with postgres:// or postgresql://")
        }
        let rest = url[schemeEnd.upperBound...]
        if rest.contains("?") { throw fail("query parameters (after '?') are not supported") }
        if rest.contains("#") { throw fail("a fragment (after '#') is not supported") }
        guard let slash = rest.firstIndex(of: "/") else {
            throw fail("names no database: write postgres://USER@HOST:PORT/DATABASE")
        }
        let authority = rest[..<slash]
        let path = rest[rest.index(after: slash)...]
        guard let at = authority.lastIndex(of: "@") else {
            throw fail("names no user: write postgres://USER@HOST:PORT/DATABASE")
        }
        let userInfo = authority[..<at]
        let hostPort = authority[authority.index(after: at)...]

        let rawUser: Substring
        var password: String?
        if let colon = userInfo.firstIndex(of: ":") {
            rawUser = userInfo[..<colon]
            guard let decoded = String(userInfo[userInfo.index(after: colon)...]).removingPercentEncoding else {
                throw fail("the password is not valid percent-encoding")
            }
            password = decoded
        } else {
            rawUser = userInfo
        }
        guard let username = String(rawUser).removingPercentEncoding else { throw fail("the user name is not valid percent-encoding") }
        guard !username.isEmpty else { throw fail("names no user: write postgres://USER@HOST:PORT/DATABASE") }

        let host: String
        let portText: Substring?
        if hostPort.hasPrefix("[") {
            guard let close = hostPort.firstIndex(of: "]") else { throw fail("an IPv6 host is missing its closing ']'") }
            host = String(hostPort[hostPort.index(after: hostPort.startIndex)..<close])
            let after = hostPort[hostPort.index(after: close)...]
            if after.isEmpty {
                portText = nil
            } else if after.hasPrefix(":") {
                portText = after.dropFirst()
            } else {
                throw fail("unexpected '\(after)' after the IPv6 host")
            }
        } else {
            let parts = hostPort.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count <= 2 else { throw fail("the host has several ':'; write an IPv6 host in brackets, [::1]") }
            host = String(parts[0])
            portText = parts.count == 2 ? parts[1] : nil
        }
        guard !host.isEmpty else { throw fail("names no host") }

        var port = 5432
        if let portText {
            guard let value = Int(portText), (1...65535).contains(value), portText.allSatisfy(\.isASCII) else {
                throw fail("the port '\(portText)' is not a number from 1 to 65535")
            }
            port = value
        }

        guard let database = String(path).removingPercentEncoding else { throw fail("the database name is not valid percent-encoding") }
        guard !database.isEmpty else { throw fail("names no database: write postgres://USER@HOST:PORT/DATABASE") }
        guard !database.contains("/") else { throw fail("the path has several segments; it names one database") }

        self.init(host: host, port: port, username: username, password: password, database: database)
    }

    /// Whether the host is this machine's loopback interface, reached without TLS.
    public var isLoopback: Bool {
        if host == "localhost" || host == "::1" { return true }
        let octets = host.split(separator: ".", omittingEmptySubsequences: false)
        return octets.count == 4 && octets[0] == "127" && octets.allSatisfy { UInt8($0) != nil }
    }

    /// The same server and user, another database.
    public func with(database: String) -> PostgresEndpoint {
        var copy = self
        copy.database = database
        return copy
    }

    /// The endpoint as a URL (`PostgresEndpoint(url:)` reads it back), password included.
    public var url: String { url(password: password.map(Self.encode)) }

    /// The URL without its password, for messages and logs.
    public var description: String { url(password: password == nil ? nil : "***") }

    private func url(password: String?) -> String {
        let userInfo = Self.encode(username) + (password.map { ":" + $0 } ?? "")
        let hostPart = host.contains(":") ? "[\(host)]" : host
        return "postgres://\(userInfo)@\(hostPart):\(port)/\(Self.encode(database))"
    }

    /// A `PostgresClient` configuration: TCP to host and port, no TLS on loopback, TLS
    /// required and verified otherwise (see the type's documentation). `connections`: a pool
    /// of at most that many connections, opened on demand and kept for 10 minutes idle (no
    /// backend starts under steady load); nil: postgres-nio's default, up to 20.
    ///
    /// No minimum: with one (the pool was fixed, minimum = maximum), postgres-nio 1.33's pool
    /// trapped (`precondition(minimumConcurrentConnections <= stats.active)` in
    /// `createNewDemandConnectionIfPossible`) when a request came while PostgreSQL was
    /// unreachable and its connections were gone, and the hub died instead of waiting for it.
    public func clientConfiguration(connections: Int? = nil) -> PostgresClient.Configuration {
        var configuration = PostgresClient.Configuration(host: host, port: port, username: username, password: password, database: database,
                                                         tls: isLoopback ? .disable : .require(.makeClientConfiguration()))
        if let connections {
            configuration.options.maximumConnections = connections
            configuration.options.minimumConnections = 0
            configuration.options.connectionIdleTimeout = .seconds(600)
        }
        return configuration
    }

    /// The same as ``clientConfiguration(connections:)`` for one connection of its own
    /// (`PostgresConnection.connect`), which reports why it cannot connect at once instead of
    /// a pool's retrying.
    public func connectionConfiguration() throws -> PostgresConnection.Configuration {
        PostgresConnection.Configuration(host: host, port: port, username: username, password: password, database: database,
                                         tls: isLoopback ? .disable : .require(try NIOSSLContext(configuration: .makeClientConfiguration())))
    }

    private static func encode(_ s: String) -> String {
        s.addingPercentEncoding(withAllowedCharacters: .urlUnreservedCharacters) ?? s
    }
}

public struct PostgresEndpointError: Error, CustomStringConvertible, Equatable {
    /// The URL as given, with any password replaced by `***`.
    public let url: String
    public let reason: String

    init(url: String, reason: String) {
        self.url = PostgresEndpointError.redacted(url)
        self.reason = reason
    }

    public var description: String { "invalid PostgreSQL URL '\(url)': \(reason)" }

    /// `scheme://user:secret@host…` → `scheme://user:***@host…`: error messages end up in logs.
    static func redacted(_ url: String) -> String {
        guard let schemeEnd = url.range(of: "://") else { return url }
        let rest = url[schemeEnd.upperBound...]
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? rest.endIndex
        guard let at = rest[..<authorityEnd].lastIndex(of: "@"),
              let colon = rest[..<at].firstIndex(of: ":") else { return url }
        return String(url[..<rest.index(after: colon)]) + "***" + String(url[at...])
    }
}

extension CharacterSet {
    /// RFC 3986's unreserved characters: what a URL component may hold unescaped.
    fileprivate static let urlUnreservedCharacters = CharacterSet(charactersIn:
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
}

/// Runs `body` with a `PostgresClient` for `endpoint` whose `run()` goes on in a task of its
/// own for as long as `body` runs, and ends (closing its connections) when `body` returns or
/// throws. `backgroundLogger`: where the client's pool logs (none by default, as postgres-nio's
/// own default; it warns when `body` leases a connection before the task has started `run()`,
/// which is harmless: the lease waits for it). `connections`: a pool of at most that many
/// (``clientConfiguration(connections:)``).
///
/// The end waits at most `shutdownGrace` for `run()` to return after it is cancelled: a
/// fresh-clone CI run hung for good in that wait (every connection closed, the test
/// database dropped, `run()` never returning), so a client that does not stop in time is
/// left to end on its own rather than holding the caller up.
public func withPostgresClient<T: Sendable>(_ endpoint: PostgresEndpoint, connections: Int? = nil, backgroundLogger: Logger? = nil,
                                            shutdownGrace: Duration = .seconds(5),
                                            _ body: (PostgresClient) async throws -> T) async throws -> T {
    let configuration = endpoint.clientConfiguration(connections: connections)
    let client = if let backgroundLogger {
        PostgresClient(configuration: configuration, backgroundLogger: backgroundLogger)
    } else {
        PostgresClient(configuration: configuration)
    }
    let running = Task { await client.run() }
    let outcome: Result<T, any Error>
    do { outcome = .success(try await body(client)) } catch { outcome = .failure(error) }
    running.cancel()
    await awaitEnd(of: running, within: shutdownGrace)
    return try outcome.get()
}

/// Waits until `task` ends or `limit` passes, whichever comes first (the task is not waited
/// for after that).
public func awaitEnd(of task: Task<Void, Never>, within limit: Duration) async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let once = ResumeOnce(continuation)
        Task {
            await task.value
            once.resume()
        }
        Task {
            try? await Task.sleep(for: limit)
            once.resume()
        }
    }
}

/// Resumes a continuation the first time it is asked to, and ignores the rest.
private final class ResumeOnce: Sendable {
    private let continuation: Mutex<CheckedContinuation<Void, Never>?>

    init(_ continuation: CheckedContinuation<Void, Never>) { self.continuation = Mutex(continuation) }

    func resume() { continuation.withLock { $0.take() }?.resume() }
}

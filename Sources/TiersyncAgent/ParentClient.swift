import AsyncHTTPClient
import CompressNIO
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import TiersyncCore
import TiersyncGovernance

/// The HTTP side of an agent: typed calls to the parent's sync API over HTTPS, with gzip
/// both ways. Owns its `HTTPClient`; call ``shutdown()`` when done.
public final class ParentClient: Sendable {
    let http: HTTPClient
    let baseURL: String
    let configuration: AgentConfiguration
    let credential: String?
    static let maxResponseBytes = 256 * 1024 * 1024

    public init(configuration: AgentConfiguration, credential: String?) throws {
        // A scheme is read without regard to case (RFC 3986), as ``SyncAgent/sameParent(_:_:)`` reads it.
        guard let url = URL(string: configuration.parentURL), let scheme = url.scheme?.lowercased(), url.host != nil else {
            throw AgentError.invalidConfiguration("invalid parent URL '\(configuration.parentURL)': expected https://host:port")
        }
        if scheme == "http", !configuration.allowInsecureHTTP {
            throw AgentError.invalidConfiguration("refusing plain HTTP to \(configuration.parentURL): use https, or --insecure-dev-http for development")
        }
        guard scheme == "https" || scheme == "http" else {
            throw AgentError.invalidConfiguration("unsupported URL scheme '\(scheme)' in \(configuration.parentURL)")
        }
        // Foundation parses any number as a port; AsyncHTTPClient traps on one above 65535
        // (and wraps it when the host is a name): refused here, named.
        if let port = url.port, !(1...65535).contains(port) {
            throw AgentError.invalidConfiguration("invalid port \(port) in parent URL \(configuration.parentURL): expected 1…65535")
        }
        var tls = TLSConfiguration.makeClientConfiguration()
        // Don't hold a cancelled request for NIOSSL's default 5 s waiting on close_notify.
        tls.shutdownTimeout = .seconds(1)
        if let ca = configuration.caFile {
            guard FileManager.default.fileExists(atPath: ca) else {
                throw AgentError.invalidConfiguration("CA file \(ca) does not exist")
            }
            tls.trustRoots = .file(ca)
        }
        var config = HTTPClient.Configuration(tlsConfiguration: tls, decompression: .enabled(limit: .size(Self.maxResponseBytes)))
        config.timeout = .init(connect: .seconds(10))
        // The client's own retries of connection establishment stay on (helper 103 asked for a
        // closed port or a CA that does not vouch for the parent to fail at once; turned off,
        // one failed connect failed every queued request, a handshake cut short by a
        // restarting parent read as a certificate problem, and AsyncHTTPClient keeps the switch
        // for its own tests: helper 105).
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
        // Every '/' at the end goes (`https://h//` is the parent `https://h`, as sameParent reads it).
        var base = Substring(configuration.parentURL)
        while base.hasSuffix("/") { base = base.dropLast() }
        // And the scheme in lower case, as the HTTP client expects it.
        if let separator = base.range(of: "://") { base = Substring(scheme) + base[separator.lowerBound...] }
        baseURL = String(base)
        self.configuration = configuration
        self.credential = credential
    }

    /// ``AgentConfiguration/requestTimeout``.
    var requestTimeout: Duration { configuration.requestTimeout }

    /// A long-poll's wait as a duration (a negative or absurd one counts as none, or a day).
    static func longPoll(_ seconds: Double) -> Duration {
        seconds.isFinite ? .milliseconds(Int64(min(max(seconds, 0), 86_400) * 1_000)) : .zero
    }

    static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds.multipliedReportingOverflow(by: 1_000_000_000).overflow ? .max
            : (seconds * 1_000_000_000).addingReportingOverflow(attoseconds / 1_000_000_000).partialValue
    }

    public func shutdown() async throws {
        try await http.shutdown()
    }

    /// `expecting`: the node a store enrolling again belongs to (``EnrollRequest/expected``).
    public func enroll(token: String, via: NodeID? = nil, expecting: EnrollmentSubject? = nil) async throws -> EnrollResponse {
        let request = EnrollRequest(token: token, via: via, tenant: expecting?.tenant, node: expecting?.node)
        return try await send(.POST, "/v1/enroll", body: request, timeout: requestTimeout).decode(EnrollResponse.self)
    }

    /// `held`: also ask what the parent holds of this node's subtree (``WhoAmIResponse/held``),
    /// and tell it `parentHeld`, the highest of the parent's own changes this node holds (a
    /// parent restored from an older backup numbers its next changes after it).
    public func whoami(held: Bool = false, parentHeld: (node: NodeID, seq: Int64)? = nil) async throws -> WhoAmIResponse {
        var path = held ? "/v1/whoami?held=true" : "/v1/whoami"
        // Named with the node it is of: a node moved to another parent reports its old one's.
        if held, let parentHeld, parentHeld.seq > 0 { path += "&parent_held=\(parentHeld.seq)&parent_node=\(parentHeld.node.rawValue)" }
        return try await send(.GET, path, timeout: requestTimeout).decode(WhoAmIResponse.self)
    }

    /// Pushes a batch. A 422 still acknowledges the batch (some changes were quarantined),
    /// so it returns normally; other errors throw.
    public func push(_ request: PushRequest) async throws -> PushResponse {
        try await send(.POST, Self.pushPath, body: request, timeout: requestTimeout * 4, accept: [200, 422]).decode(PushResponse.self)
    }

    /// The path a push is posted to. Public, as ``pullPath(cursor:limit:waitSeconds:excludeOwn:only:history:refusalsAfter:)``,
    /// so the fan-in benchmark's simulated agents send exactly what agents send.
    public static let pushPath = "/v1/push"

    /// The path and query of a pull.
    /// `history` is the log history the cursor was handed out under (``PullResponse/history``).
    /// `refusalsAfter`: the newest notice of a change refused above the parent the node took
    /// (``UpstreamRefusal``); a newer one answers the pull at once.
    public static func pullPath(cursor: Int64, limit: Int, waitSeconds: Double, excludeOwn: Bool, only: NodeID? = nil,
                                history: String? = nil, refusalsAfter: Int64? = nil) -> String {
        var path = "/v1/pull?cursor=\(cursor)&limit=\(limit)&wait=\(waitSeconds)&exclude_own=\(excludeOwn)"
        if let only { path += "&only=\(only.rawValue)" }
        if let history, PullResponse.isValidHistory(history) { path += "&history=\(history)" }
        if let refusalsAfter { path += "&refusals_after=\(max(0, refusalsAfter))" }
        return path
    }

    /// Reports how far behind this node (and, from a country, its dealers) is.
    public func status(_ request: StatusRequest) async throws -> StatusResponse {
        try await send(.POST, "/v1/status", body: request, timeout: requestTimeout).decode(StatusResponse.self)
    }

    public func directory() async throws -> DirectoryResponse {
        try await send(.GET, "/v1/directory", timeout: requestTimeout).decode(DirectoryResponse.self)
    }

    public func pull(cursor: Int64, limit: Int, waitSeconds: Double, excludeOwn: Bool, only: NodeID? = nil,
                     history: String? = nil) async throws -> PullResponse {
        try await pullPage(cursor: cursor, limit: limit, waitSeconds: waitSeconds, excludeOwn: excludeOwn, only: only, history: history).page
    }

    /// A pull, with the newest notice the parent holds of this node's changes refused above
    /// it (``UpstreamRefusal/pullHeader``; nil when it names none).
    public func pullPage(cursor: Int64, limit: Int, waitSeconds: Double, excludeOwn: Bool, only: NodeID? = nil,
                         history: String? = nil, refusalsAfter: Int64? = nil) async throws -> (page: PullResponse, newestRefusal: Int64?) {
        let reply = try await send(.GET, Self.pullPath(cursor: cursor, limit: limit, waitSeconds: waitSeconds, excludeOwn: excludeOwn, only: only,
                                                       history: history, refusalsAfter: refusalsAfter),
                                   timeout: Self.longPoll(waitSeconds) + requestTimeout * 2)
        let newest = reply.headers.first(name: UpstreamRefusal.pullHeader).flatMap { Int64($0) }.flatMap { $0 > 0 ? $0 : nil }
        return (try reply.decode(PullResponse.self), newest)
    }

    /// The parent's notices of this node's changes refused above it, numbered after `after`.
    public func refusals(after: Int64, limit: Int = 100) async throws -> UpstreamRefusalsResponse {
        try await send(.GET, "/v1/refusals?after=\(after)&limit=\(limit)", timeout: requestTimeout).decode(UpstreamRefusalsResponse.self)
    }

    /// The node's governance bundle; with `known`, waits up to `waitSeconds` for a different one.
    public func governance(known: String?, waitSeconds: Double) async throws -> GovernanceBundle {
        var path = "/v1/governance?wait=\(waitSeconds)"
        if let known { path += "&known=\(known)" }
        return try await send(.GET, path, timeout: Self.longPoll(waitSeconds) + requestTimeout * 2).decode(GovernanceBundle.self)
    }

    /// A request body as it goes on the wire: JSON, gzipped above the threshold. Public so
    /// the wire benchmark measures exactly what agents send.
    public static func encodeBody(_ body: some Encodable, compressAboveBytes: Int) throws -> (bytes: ByteBuffer, gzipped: Bool) {
        // Push bodies, the big requests, are written directly (same JSON as `Codable`).
        var buffer = if let push = body as? PushRequest { ByteBuffer(bytes: WireEncoding.pushRequest(push)) }
            else { ByteBuffer(bytes: try JSONEncoder().encode(body)) }
        guard buffer.readableBytes > compressAboveBytes else { return (buffer, false) }
        return (try buffer.compress(with: .gzip), true)
    }

    struct Reply {
        let status: Int
        let body: ByteBuffer
        var headers: HTTPHeaders = [:]

        func decode<T: Decodable>(_ type: T.Type) throws -> T {
            if T.self == PullResponse.self, let page = WireDecoding.pullResponse(Array(body.readableBytesView)) {
                return page as! T
            }
            do {
                return try JSONDecoder().decode(T.self, from: Data(body.readableBytesView))
            } catch {
                throw AgentError.malformedResponse("parent sent an unreadable \(T.self) (HTTP \(status)): \(error)")
            }
        }
    }

    /// What failed on the way to the parent, in words that name the parent and the cause:
    /// NIOSSL's own descriptions carry BoringSSL's error stack with the build's source
    /// paths, and NIO's a bare errno without the address. Cancellation and the client's own
    /// errors (deadlines) stay as they are.
    static func transportError(_ error: any Error, url: String, caFile: String?) -> any Error {
        if error is CancellationError || error is HTTPClientError || error is AgentError { return error }
        let reasons = Self.opensslReasons(String(describing: error))
        let detail = reasons.isEmpty ? "" : " (\(reasons.joined(separator: ", ")))"
        // Loading the CA file (at the first connection) fails with BoringSSL's own error.
        if error is BoringSSLError {
            guard let caFile else { return AgentError.unreachable("TLS with \(url) failed\(detail)") }
            return AgentError.invalidConfiguration("cannot use the CA file \(caFile)\(detail): expected a PEM certificate")
        }
        if let ssl = error as? NIOSSLError {
            if case .handshakeFailed = ssl {
                let trusted = caFile.map { "the CA in \($0)" } ?? "the system's CAs"
                return AgentError.unreachable("TLS handshake with \(url) failed\(detail): its certificate is not signed by \(trusted), is not for that host name, or it does not speak TLS")
            }
            if let caFile {
                return AgentError.invalidConfiguration("cannot use the CA file \(caFile)\(detail): expected a PEM certificate")
            }
            return AgentError.unreachable("TLS with \(url) failed\(detail)")
        }
        return AgentError.unreachable("cannot reach the parent at \(url): \(Self.socketWords(error) ?? "\(error)")")
    }

    /// A socket error in words: NIO's own read "connection reset (error set): Connection
    /// refused) (errno: 111)" for a parent that was not listening (helper 103).
    static func socketWords(_ error: any Error) -> String? {
        // A parent named by host name: NIO tried each of its addresses and reports them all.
        if let connection = error as? NIOConnectionError {
            // Every address refusing says the most: a host name's IPv6 address can fail for
            // this machine's own reasons (no IPv6: "cannot assign requested address") while its
            // IPv4 address was refused.
            let errors = connection.connectionErrors.map(\.error)
            if let refused = errors.first(where: { ($0 as? IOError)?.errnoCode == ECONNREFUSED }) { return socketWords(refused) }
            if let first = errors.first { return socketWords(first) ?? "\(first)" }
            if connection.dnsAError != nil || connection.dnsAAAAError != nil {
                return "the host name \(connection.host) could not be resolved"
            }
            return "the host name \(connection.host) has no address"
        }
        guard let io = error as? IOError else { return nil }
        switch io.errnoCode {
        case ECONNREFUSED: return "nothing is listening there (connection refused): the parent is down, or the URL's port is wrong"
        case ECONNRESET: return "the connection was reset by the parent"
        case ETIMEDOUT: return "the connection timed out"
        case EHOSTUNREACH, ENETUNREACH: return "no route to that host"
        default: return "\(String(cString: strerror(io.errnoCode))) (errno \(io.errnoCode))"
        }
    }

    /// Whether `error` means the parent could not be reached or spoken to (a connection, TLS,
    /// the client's time limits): what an outage looks like, which the agent's other loop may
    /// end early (``SyncAgent``'s `parentBack`); not a refusal, nor a local error.
    static func isUnreachable(_ error: any Error) -> Bool {
        if case AgentError.unreachable = error { return true }
        return error is HTTPClientError
    }

    /// AsyncHTTPClient's own errors as an operator reads them (`status`, the agent's log):
    /// "HTTPClientError.remoteConnectionClosed" named nothing (helper 103).
    public static func describe(_ error: any Error) -> String {
        guard let client = error as? HTTPClientError else { return "\(error)" }
        switch client {
        case .remoteConnectionClosed: return "the parent closed the connection before answering (it stopped, or restarted)"
        case .getConnectionFromPoolTimeout: return "no connection to the parent within the time limit (it does not answer, or its TLS handshake fails)"
        case .connectTimeout: return "connecting to the parent timed out"
        case .deadlineExceeded: return "the parent did not answer within the time limit"
        case .readTimeout: return "the parent stopped sending its answer (read timed out)"
        default: return "\(client)"
        }
    }

    /// BoringSSL's reason codes in an error's description (`CERTIFICATE_VERIFY_FAILED`).
    static func opensslReasons(_ text: String) -> [String] {
        var reasons: [String] = []
        for part in text.components(separatedBy: "OPENSSL_internal:").dropFirst() {
            let reason = String(part.prefix { $0.isLetter || $0.isNumber || $0 == "_" })
            // Reason codes are upper case; the rest of the stack is prose and paths.
            if !reason.isEmpty, !reason.contains(where: \.isLowercase), !reasons.contains(reason) { reasons.append(reason) }
        }
        return reasons
    }

    /// The answer's body, or an error once `deadline` passes first (the read is cancelled,
    /// which closes the connection).
    static func collect(_ body: HTTPClientResponse.Body, before deadline: ContinuousClock.Instant, from url: String,
                        timeout: Duration) async throws -> ByteBuffer {
        try await withThrowingTaskGroup(of: ByteBuffer?.self) { group in
            group.addTask { try await body.collect(upTo: Self.maxResponseBytes) }
            group.addTask {
                // Cancelled (the agent stopping), this throws: a stop is not a timeout.
                try await Task.sleep(until: deadline)
                return nil
            }
            defer { group.cancelAll() }
            let first = try await group.next()
            // A body cut short by cancellation may come back as if complete.
            try Task.checkCancellation()
            guard let first, let bytes = first else {
                throw AgentError.unreachable("the parent at \(url) did not finish its answer within \(timeout)")
            }
            return bytes
        }
    }

    private func send(_ method: HTTPMethod, _ path: String, body: (some Encodable)? = nil as String?, timeout: Duration,
                      accept: Set<Int> = [200, 201]) async throws -> Reply {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        request.headers.add(name: "Accept-Encoding", value: "gzip")
        request.headers.add(name: "User-Agent", value: "tiersync-agent/1")
        if let credential { request.headers.add(name: "Authorization", value: "Bearer \(credential)") }
        if let body {
            let encoded = try Self.encodeBody(body, compressAboveBytes: configuration.compressAboveBytes)
            if encoded.gzipped { request.headers.add(name: "Content-Encoding", value: "gzip") }
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(encoded.bytes)
        }
        // One deadline for the whole exchange: AsyncHTTPClient's ends with the answer's head.
        let deadline = ContinuousClock.now + timeout
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, deadline: .now() + .nanoseconds(Self.nanoseconds(timeout)))
        } catch {
            throw Self.transportError(error, url: baseURL, caFile: configuration.caFile)
        }
        let bytes = try await Self.collect(response.body, before: deadline, from: baseURL, timeout: timeout)
        let status = Int(response.status.code)
        guard accept.contains(status) else {
            let error = try? JSONDecoder().decode(ErrorResponse.self, from: Data(bytes.readableBytesView))
            let retryAfter = response.headers.first(name: "Retry-After").flatMap { Int($0) }
            if status == 429 || (status == 503 && retryAfter != nil) {
                // Retry-After in seconds (bounded: a parent cannot park the node for long).
                let seconds = retryAfter.map { min(max($0, 1), 300) } ?? 1
                throw AgentError.throttled(retryAfter: .seconds(seconds), message: "HTTP \(status) \(error?.error.code ?? ""): \(error?.error.message ?? "too many requests")")
            }
            throw AgentError.http(status: status, code: error?.error.code ?? "http_\(status)",
                                  message: error?.error.message ?? String(buffer: bytes).prefix(300).description)
        }
        return Reply(status: status, body: bytes, headers: response.headers)
    }
}

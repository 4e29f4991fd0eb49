import ArgumentParser
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import TiersyncAgent
import TiersyncCore

/// How `fan-in` simulates its agents' HTTP side.
enum FanInClient: String, ExpressibleByArgument, CaseIterable, Sendable {
    /// The agent's own client (`ParentClient`): an AsyncHTTPClient per agent, each with its
    /// connection pool and, at its first connection, a TLS context of its own (the CA file
    /// read and parsed). Real agents pay this on their own machines; here it runs on the two
    /// cores the hub is measured on: 0.57 of them while 5,000 agents connect (2026-12-05).
    case agent
    /// One TLS connection per agent on NIO directly, as `ParentClient` opens it (TLS 1.3,
    /// the hub's certificate verified against the CA, HTTP/1.1 kept alive), sending the same
    /// push bodies (`ParentClient.encodeBody`) and pull requests, with one TLS context for
    /// every agent and no client object around the connection: what the hub receives is the
    /// same, the load generator's own CPU smaller. Responses are asked uncompressed (no
    /// `Accept-Encoding`); these are small enough that the hub sends them so anyway.
    case lean
}

/// One simulated agent's connection for ``FanInClient/lean``.
enum LeanAgent {
    typealias Connection = NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// The TLS context every lean agent shares: the hub's CA as the only trust root. The
    /// hub listens on an address, not a name, so the certificate chain is verified and the
    /// host name is not (no SNI for an IP address), as for `ParentClient` with an IP URL.
    static func tlsContext(caFile: String) throws -> NIOSSLContext {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .file(caFile)
        tls.certificateVerification = .noHostnameVerification
        return try NIOSSLContext(configuration: tls)
    }

    static func connect(host: String, port: Int, context: NIOSSLContext) async throws -> Connection {
        try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.seconds(10))
            .connect(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: nil))
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    return try Connection(wrappingChannelSynchronously: channel)
                }
            }
    }

    /// Sends one request and reads its whole response. The connection is closed when no
    /// answer came within `timeout` (the hub hung): the read then fails.
    static func exchange(_ channel: Channel, _ outbound: NIOAsyncChannelOutboundWriter<HTTPClientRequestPart>,
                         _ responses: inout NIOAsyncChannelInboundStream<HTTPClientResponsePart>.AsyncIterator,
                         method: HTTPMethod, path: String, host: String, credential: String, body: ByteBuffer?, gzipped: Bool = false,
                         timeout: TimeAmount = .seconds(120)) async throws -> (status: Int, body: ByteBuffer) {
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: path)
        head.headers.add(name: "Host", value: host)
        head.headers.add(name: "User-Agent", value: "tiersync-bench-lean/1")
        head.headers.add(name: "Authorization", value: "Bearer \(credential)")
        if let body {
            head.headers.add(name: "Content-Type", value: "application/json")
            head.headers.add(name: "Content-Length", value: "\(body.readableBytes)")
            if gzipped { head.headers.add(name: "Content-Encoding", value: "gzip") }
        }
        let watchdog = channel.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
        defer { watchdog.cancel() }
        var parts: [HTTPClientRequestPart] = [.head(head)]
        if let body { parts.append(.body(.byteBuffer(body))) }
        parts.append(.end(nil))
        try await outbound.write(contentsOf: parts)
        var status = 0
        var collected = ByteBuffer()
        while let part = try await responses.next() {
            switch part {
            case .head(let h): status = Int(h.status.code)
            case .body(var b): collected.writeBuffer(&b)
            case .end: return (status, collected)
            }
        }
        throw Failure(description: "the hub closed the connection before answering \(method) \(path)")
    }

    /// One agent's run: from `offset` after `started`, every `interval` until `deadline`, a
    /// push of one change and a pull, on one connection (re-opened after a failure); the
    /// first sync on a connection includes its opening (TCP and TLS), as with `ParentClient`.
    static func run(url: String, node: NodeID, credential: String, context: NIOSSLContext, offset: Duration,
                    started: ContinuousClock.Instant, deadline: ContinuousClock.Instant, interval: Double, recorder: Recorder) async {
        guard let parsed = URL(string: url), let host = parsed.host, let port = parsed.port else {
            recorder.errors.withLock { $0.append("lean agent: bad hub URL \(url)") }
            return
        }
        let authority = "\(host):\(port)"
        let compressAbove = AgentConfiguration(parentURL: url).compressAboveBytes
        try? await Task.sleep(for: offset)
        var seq: Int64 = 0, cursor: Int64 = 0, history: String?
        var begin = ContinuousClock.now
        while begin < deadline {
            do {
                let connection = try await connect(host: host, port: port, context: context)
                try await connection.executeThenClose { inbound, outbound in
                    var responses = inbound.makeAsyncIterator()
                    var opened = false
                    while begin < deadline {
                        // Closed while idle (the hub's idle timeout): opened again, as
                        // AsyncHTTPClient does, not counted as an error.
                        guard connection.channel.isActive else { return }
                        seq += 1
                        let change = makeChanges(origin: node, count: 1, firstSeq: seq, ids: { _ in "\(node)-c\(seq % 20)" },
                                                 fields: { _ in contactFields(Int(seq), owner: node) })
                        let body = try ParentClient.encodeBody(PushRequest(through: seq, changes: change), compressAboveBytes: compressAbove)
                        // The first sync on a connection is timed from before its opening.
                        let t0 = opened ? ContinuousClock.now : begin
                        let push = try await exchange(connection.channel, outbound, &responses, method: .POST, path: ParentClient.pushPath,
                                                      host: authority, credential: credential, body: body.bytes, gzipped: body.gzipped)
                        guard push.status == 200 || push.status == 422 else {
                            throw Failure(description: "push: HTTP \(push.status): \(String(buffer: push.body).prefix(200))")
                        }
                        let t1 = ContinuousClock.now
                        let pull = try await exchange(connection.channel, outbound, &responses, method: .GET,
                                                      path: ParentClient.pullPath(cursor: cursor, limit: 1_000, waitSeconds: 0, excludeOwn: true,
                                                                                  history: history),
                                                      host: authority, credential: credential, body: nil)
                        guard pull.status == 200 else {
                            throw Failure(description: "pull: HTTP \(pull.status): \(String(buffer: pull.body).prefix(200))")
                        }
                        let bytes = Array(pull.body.readableBytesView)
                        guard let page = WireDecoding.pullResponse(bytes) ?? (try? JSONDecoder().decode(PullResponse.self, from: Data(bytes))) else {
                            throw Failure(description: "pull: an unreadable page")
                        }
                        cursor = page.nextCursor
                        // Sent back with the cursor, as an agent does (the hub judges it).
                        history = page.history ?? history
                        let t2 = ContinuousClock.now
                        recorder.record(started: started, t0: t0, push: t1 - t0, pull: t2 - t1, interval: interval, connected: opened)
                        opened = true
                        begin = begin + .milliseconds(Int64(interval * 1000))
                        if begin > ContinuousClock.now { try? await Task.sleep(until: begin) }
                    }
                }
            } catch {
                recorder.errors.withLock { $0.append("\(error)") }
                begin = begin + .milliseconds(Int64(interval * 1000))
                if begin > ContinuousClock.now { try? await Task.sleep(until: begin) }
            }
        }
    }
}

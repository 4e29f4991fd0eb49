import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization
import TiersyncPKI

/// A parent that answers what a test scripts, over real TLS on a loopback port it picked:
/// what an agent meets when its parent is a hostile (or broken) country node rather than
/// a Tiersync hub. Every request it received is kept, in order.
public final class FakeParent: Sendable {
    /// One request as it arrived (the body as sent: gzipped when the agent compressed it).
    public struct Request: Sendable {
        public let method: String
        public let uri: String
        public let body: Data

        /// The path without its query.
        public var path: String { String(uri.prefix { $0 != "?" }) }
    }

    /// How to answer one request.
    public enum Reply: Sendable {
        /// A whole answer with a JSON body.
        case json(status: Int, Data)
        /// The head, announcing `contentLength` bytes, and then nothing, ever: the body never comes.
        case headThenSilence(status: Int, contentLength: Int)
        /// No answer at all; the connection stays open.
        case silence

        /// `value` encoded as the answer's JSON body.
        public static func encoding(_ value: some Encodable, status: Int = 200) -> Reply {
            .json(status: status, (try? JSONEncoder().encode(value)) ?? Data())
        }
    }

    public let url: String
    public let caFile: String
    private let channel: any Channel
    private let seen = Seen()

    /// What arrived: requests, in order, and connections (closed by ``stop()``).
    private final class Seen: Sendable {
        let requests = Mutex<[Request]>([])
        let connections = Mutex<[any Channel]>([])
    }

    /// Every request received so far, in order.
    public var requests: [Request] { seen.requests.withLock { $0 } }

    /// Listens on a free loopback port with a certificate from a development CA kept in
    /// `directory`, and answers each request with `answer(request)`.
    public init(directory: String, answer: @escaping @Sendable (Request) -> Reply) async throws {
        let pki = try DevelopmentPKI.ensure(in: directory + "/fake-parent-pki")
        let chain = try NIOSSLCertificate.fromPEMFile(pki.serverCertificate).map { NIOSSLCertificateSource.certificate($0) }
        let context = try NIOSSLContext(configuration: .makeServerConfiguration(certificateChain: chain, privateKey: .file(pki.serverKey)))
        let seen = seen
        channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                seen.connections.withLock { $0.append(channel) }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(ScriptedHandler(answer: answer) { request in
                        seen.requests.withLock { $0.append(request) }
                    })
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        url = "https://127.0.0.1:\(channel.localAddress?.port ?? 0)"
        caFile = pki.caCertificate
    }

    /// Stops listening and closes every connection, answered or not.
    public func stop() async {
        try? await channel.close()
        for connection in seen.connections.withLock({ $0 }) { try? await connection.close() }
    }
}

/// Reads one HTTP request at a time and writes the scripted reply.
private final class ScriptedHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let answer: @Sendable (FakeParent.Request) -> FakeParent.Reply
    let record: @Sendable (FakeParent.Request) -> Void
    var head: HTTPRequestHead?
    var body = Data()

    init(answer: @escaping @Sendable (FakeParent.Request) -> FakeParent.Reply, record: @escaping @Sendable (FakeParent.Request) -> Void) {
        self.answer = answer
        self.record = record
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            body = Data()
        case .body(var bytes):
            body.append(contentsOf: bytes.readBytes(length: bytes.readableBytes) ?? [])
        case .end:
            guard let head else { return }
            let request = FakeParent.Request(method: head.method.rawValue, uri: head.uri, body: body)
            record(request)
            switch answer(request) {
            case .json(let status, let data):
                var headers = HTTPHeaders([("Content-Type", "application/json"), ("Content-Length", "\(data.count)")])
                headers.add(name: "Connection", value: "keep-alive")
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .init(statusCode: status), headers: headers))), promise: nil)
                context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: data)))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            case .headThenSilence(let status, let length):
                let headers = HTTPHeaders([("Content-Type", "application/json"), ("Content-Length", "\(length)")])
                context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .init(statusCode: status), headers: headers))),
                                      promise: nil)
            case .silence:
                break
            }
            self.head = nil
        }
    }
}

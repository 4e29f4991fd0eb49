import Hummingbird
import NIOCore

/// Closes the connection after answering a request whose body the hub did not read in full,
/// instead of reading the rest to reuse the connection.
///
/// After a handler returns, Hummingbird reads whatever is left of the request body before it
/// reads the next request, without a bound on bytes or time. A client sending a push with a
/// declared length of 10 GB had it refused at once (401 without a credential, 413 over the
/// limit, 429), and the hub then went on decrypting and discarding everything it sent:
/// 4.2 GB in 8 s on one connection, a core's worth, with no credential at all. Now such an
/// answer says `Connection: close`, and the connection closes once it is written:
/// - an error answer (4xx, 5xx) to a request declaring more than ``drainedBytes`` of body, or
///   a chunked one (no declared end);
/// - any answer to a request no route reads a body of (GET, HEAD, DELETE) that declares one.
///
/// Small bodies are still read to the end, so an agent whose small push is refused keeps its
/// connection (a new one costs a TLS handshake); so does every request answered 2xx after its
/// handler read the body.
struct UnreadBodyMiddleware: RouterMiddleware {
    typealias Context = HubRequestContext

    /// The largest unread body read to its end so that the connection stays open.
    static let drainedBytes = 64 * 1024

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let declared = Self.declaredBody(request)
        guard declared != .none else { return try await next(request, context) }
        let bodiless = [.get, .head, .delete].contains(request.method)
        let response: Response
        do {
            response = try await next(request, context)
        } catch let error as HTTPResponseError {
            guard bodiless || Self.isLarge(declared) else { throw error }
            return Self.closing(try error.response(from: request, context: context), channel: context.channel)
        }
        guard bodiless || (response.status.code >= 400 && Self.isLarge(declared)) else { return response }
        return Self.closing(response, channel: context.channel)
    }

    enum DeclaredBody: Equatable {
        case none
        case length(UInt64)
        /// Chunked, or a Content-Length that is not one number (the parser refuses most).
        case unbounded
    }

    static func declaredBody(_ request: Request) -> DeclaredBody {
        if let length = request.headers[.contentLength] {
            guard let bytes = UInt64(length) else { return .unbounded }
            return bytes == 0 ? .none : .length(bytes)
        }
        return request.headers[.transferEncoding] == nil ? .none : .unbounded
    }

    static func isLarge(_ declared: DeclaredBody) -> Bool {
        switch declared {
        case .none: false
        case .length(let bytes): bytes > UInt64(drainedBytes)
        case .unbounded: true
        }
    }

    /// `response`, saying `Connection: close`, whose connection closes once it is written.
    static func closing(_ response: Response, channel: any Channel) -> Response {
        var closing = response
        closing.headers[.connection] = "close"
        let body = response.body
        closing.body = ResponseBody(contentLength: body.contentLength) { writer in
            do {
                try await body.write(writer)
            } catch {
                close(channel)
                throw error
            }
            close(channel)
        }
        return closing
    }

    /// Stops reading the connection (its first handler, ``ConnectionLimitHandler``, takes
    /// no more bytes in), then closes it.
    private static func close(_ channel: any Channel) {
        channel.pipeline.fireUserInboundEventTriggered(ConnectionLimitHandler.StopReading())
        channel.close(promise: nil)
    }
}

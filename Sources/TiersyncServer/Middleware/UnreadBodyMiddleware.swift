import HTTPTypes
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
/// - an error answer (4xx, 5xx) to a request declaring more than any route takes
///   (``maxBodyBytes``), or a chunked one (no declared end);
/// - an error answer to a request declaring more than ``drainedBytes``, unless it is 429 or
///   503: those tell a known client to come back, and a new connection costs it (and a busy
///   hub) a TLS handshake, more than reading a body within the limit;
/// - any answer to a request no route reads a body of (GET, HEAD, DELETE) that declares one.
///
/// Small bodies are still read to the end, so an agent whose small push is refused keeps its
/// connection; so does every request answered 2xx after its handler read the body.
struct UnreadBodyMiddleware: RouterMiddleware {
    typealias Context = HubRequestContext

    /// The largest unread body read to its end so that the connection stays open.
    static let drainedBytes = 64 * 1024
    /// The most any route takes (``HubConfiguration/Limits/maxRequestBytes``).
    let maxBodyBytes: Int

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let declared = Self.declaredBody(request)
        guard declared != .none else { return try await next(request, context) }
        let bodiless = [.get, .head, .delete].contains(request.method)
        let response: Response
        do {
            response = try await next(request, context)
        } catch let error as HTTPResponseError {
            guard bodiless || closes(error.status, declared) else { throw error }
            return Self.closing(try error.response(from: request, context: context), channel: context.channel)
        }
        guard bodiless || closes(response.status, declared) else { return response }
        return Self.closing(response, channel: context.channel)
    }

    /// Whether an answer of `status` to a request declaring `declared` closes the connection.
    func closes(_ status: HTTPResponse.Status, _ declared: DeclaredBody) -> Bool {
        guard status.code >= 400 else { return false }
        switch declared {
        case .none: return false
        case .unbounded: return true
        case .length(let bytes):
            if bytes > UInt64(maxBodyBytes) { return true }
            return bytes > UInt64(Self.drainedBytes) && status != .tooManyRequests && status != .serviceUnavailable
        }
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

import Foundation
import HTTPTypes
import Hummingbird
import TiersyncCore
import TiersyncStorage

/// An error answered with a JSON body `{"error": {"code", "message"}}`: a stable code for
/// programs, a message naming what is wrong for people.
public struct APIError: HTTPResponseError, CustomStringConvertible {
    public let status: HTTPResponse.Status
    public let code: String
    public let message: String
    public var headers: HTTPFields = [:]

    public init(_ status: HTTPResponse.Status, _ code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    public var description: String { "\(status.code) \(code): \(message)" }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var headers = self.headers
        headers[.contentType] = "application/json"
        // Sorted keys: the same error is the same bytes (no hint in how an answer is written).
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let body = try encoder.encode(ErrorResponse(code: code, message: message))
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
}

/// Turns errors that are not already ``APIError``s into the same JSON shape, so a client
/// never has to parse two error formats.
struct ErrorBodyMiddleware: RouterMiddleware {
    typealias Context = HubRequestContext
    let directory: any NodeDirectory

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            throw error
        } catch is CancellationError {
            // The client went away or the hub is stopping: nothing to report.
            throw CancellationError()
        } catch let error as HTTPError {
            throw APIError(error.status, error.status == .notFound ? "not_found" : "http_error",
                           error.body ?? "\(request.method) \(request.uri.path): \(error.status.reasonPhrase)")
        } catch where directory.isStorageUnavailable(error) {
            // PostgreSQL down or restarting: the caller retries, as told, rather than reading
            // "could not complete" of a request that never reached the database.
            context.logger.warning("storage unreachable", metadata: ["path": "\(request.uri.path)", "error": "\(directory.storageFailureDetail(error) ?? "\(error)")"])
            var unavailable = APIError(.serviceUnavailable, "storage_unavailable",
                                       "the hub's database cannot be reached right now; nothing was applied. Retry later")
            unavailable.headers[.retryAfter] = "5"
            throw unavailable
        } catch StoreError.unusable(let path, let reason) {
            // A tenant's database file the hub cannot open (damaged, missing or empty though
            // made, another tenant's, unreadable): that tenant's requests wait for its
            // operator, the others go on. The file is named in the log, never to the caller.
            context.logger.error("tenant store unusable", metadata: ["path": "\(request.uri.path)", "file": "\(path)", "reason": "\(reason)"])
            var unusable = APIError(.serviceUnavailable, "tenant_store_unusable",
                                    "the hub cannot open this tenant's data right now; nothing was applied. Its operator must repair it (the hub's log says why). Retry later")
            unusable.headers[.retryAfter] = "60"
            throw unusable
        } catch {
            context.logger.error("request failed", metadata: ["path": "\(request.uri.path)", "error": "\(directory.storageFailureDetail(error) ?? "\(error)")"])
            throw APIError(.internalServerError, "internal", "the hub could not complete the request; it was not applied. Retry later")
        }
    }
}

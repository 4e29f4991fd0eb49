import CompressNIO
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import TiersyncCore

/// Reads JSON request bodies (gzip or plain) within the hub's limits, and writes JSON
/// responses, gzip-compressed when the client accepts it.
struct BodyCodec: Sendable {
    let limits: HubConfiguration.Limits

    func decode<T: Decodable>(_ type: T.Type, from request: Request) async throws -> T {
        let raw = try await collect(request)
        var body = raw
        if let encoding = request.headers[.contentEncoding]?.lowercased(), encoding != "identity" {
            guard encoding == "gzip" else {
                throw APIError(.unsupportedMediaType, "unsupported_encoding", "Content-Encoding '\(encoding.prefix(40))' is not supported; use gzip or none")
            }
            do throws(GzipInflater.Failure) {
                body = try GzipInflater.inflate(raw, maxSize: limits.maxDecompressedBytes)
            } catch .tooLarge {
                throw APIError(.contentTooLarge, "too_large", "request body exceeds \(limits.maxDecompressedBytes) bytes once decompressed; send smaller batches")
            } catch .malformed(let reason) {
                throw APIError(.badRequest, "malformed_body", "request body is not valid gzip: \(reason)")
            }
        }
        if T.self == PushRequest.self {
            switch WireDecoding.decodePushRequest(Array(body.readableBytesView)) {
            case .decoded(let push): return push as! T
            case .tooDeep: throw Self.tooDeep
            case .tooManyFields:
                throw APIError(.contentTooLarge, "too_many_fields", "a change names more than \(Change.maxFields) fields; no table has that many")
            case .unrecognised:
                // JSONDecoder names the problem, but a body it reads is bounded only by its
                // size: a key given twice (which the fast decoder leaves to it) let 3,000,000
                // fields through, ~50 s of a shared thread. Small bodies only.
                guard body.readableBytes <= Self.describedPushBytes else {
                    throw APIError(.badRequest, "malformed_json",
                                   "request body is not a push request (a JSON object with 'through' and 'changes', each change with origin, seq, hlc, table, id, op and fields, no key given twice)")
                }
            }
        }
        do {
            return try JSONDecoder().decode(T.self, from: Data(body.readableBytesView))
        } catch let error as DecodingError {
            throw APIError(.badRequest, "malformed_json", Self.describe(error))
        }
    }

    /// The largest push body whose problem `JSONDecoder` is asked to name.
    static let describedPushBytes = 64 * 1024

    static let tooDeep = APIError(.badRequest, "malformed_json",
                                  "request body nests objects or arrays more than \(WireDecoding.nestingLimit) levels deep")

    /// The request body, within the byte limit and the time limit. A body the client stops
    /// sending (a shorter body than its Content-Length, a connection closed mid-body
    /// without TLS close_notify) is the client's failure: a 400 (or a 408 for a stall),
    /// never a 500, and not logged as an error.
    func collect(_ request: Request) async throws -> ByteBuffer {
        let (body, limit, seconds) = (request.body, limits.maxRequestBytes, limits.bodyTimeoutSeconds)
        do {
            return try await withThrowingTaskGroup(of: ByteBuffer?.self) { group in
                group.addTask { try await body.collect(upTo: limit) }
                group.addTask {
                    try await Task.sleep(for: .seconds(seconds))
                    return nil
                }
                defer { group.cancelAll() }
                guard let first = try await group.next(), let buffer = first else {
                    throw APIError(.requestTimeout, "body_timeout", "the request body did not arrive within \(seconds) s")
                }
                return buffer
            }
        } catch is NIOTooManyBytesError {
            throw APIError(.contentTooLarge, "too_large", "request body exceeds \(limit) bytes; send smaller batches")
        } catch let error as APIError {
            throw error
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            throw APIError(.badRequest, "incomplete_body", "the request body was cut off before its end")
        }
    }

    func encode(_ value: some Encodable, status: HTTPResponse.Status = .ok, for request: Request) throws -> Response {
        // Pull pages, the big answers, are written directly (same JSON as `Codable`).
        let json = if let page = value as? PullResponse { WireEncoding.pullResponse(page) } else { Array(try JSONEncoder().encode(value)) }
        return try encode(json: json, status: status, for: request)
    }

    /// A JSON body written already (a feed page from ``NodeStore/encodedFeed(after:scope:excluding:limit:)``).
    func encode(json: [UInt8], status: HTTPResponse.Status = .ok, for request: Request) throws -> Response {
        var buffer = ByteBuffer(bytes: json)
        // Every answer is a caller's own data (records, a new API token, a CSRF token): kept
        // by no cache, and read by browsers as JSON only.
        var headers: HTTPFields = [.contentType: "application/json", .cacheControl: "no-store", Self.noSniff: "nosniff"]
        if buffer.readableBytes > 512, request.headers[.acceptEncoding]?.lowercased().contains("gzip") == true {
            buffer = try buffer.compress(with: .gzip)
            headers[.contentEncoding] = "gzip"
        }
        return Response(status: status, headers: headers, body: .init(byteBuffer: buffer))
    }

    static let noSniff = HTTPField.Name("X-Content-Type-Options")!

    /// A decoding error as a sentence naming where in the body it happened.
    static func describe(_ error: DecodingError) -> String {
        func path(_ codingPath: [any CodingKey]) -> String {
            let p = codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
            return p.isEmpty ? "the body" : "'\(p.hasPrefix(".") ? String(p.dropFirst()) : p)'"
        }
        switch error {
        case .dataCorrupted(let c):
            if c.codingPath.isEmpty { return "request body is not valid JSON" }
            return "\(path(c.codingPath)): \(c.debugDescription)"
        case .keyNotFound(let key, let c):
            return "missing field '\(key.stringValue)' in \(path(c.codingPath))"
        case .typeMismatch(let type, let c):
            return "\(path(c.codingPath)) has the wrong type: expected \(type)"
        case .valueNotFound(let type, let c):
            return "\(path(c.codingPath)) must not be null: expected \(type)"
        @unknown default:
            return "request body could not be decoded"
        }
    }
}

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
    /// What large pushes being decoded and applied hold, across the process.
    let pushMemory: PushMemoryBudget

    init(limits: HubConfiguration.Limits, pushMemory: PushMemoryBudget) {
        self.limits = limits
        self.pushMemory = pushMemory
    }

    /// What a request body may hold, by what it carries.
    enum BodyKind: Sendable {
        /// A push: change batches, up to ``HubConfiguration/Limits/maxDecompressedBytes``.
        case push
        /// Governance sources (YAML files) for a release or its validation, or a status
        /// request (a country relays up to 20,000 lag reports): from authenticated callers.
        case bulk
        /// Everything else (enrollment, login, admin requests): small.
        case small
    }

    /// The largest body, once decompressed, of a request of `kind`.
    func maxBytes(_ kind: BodyKind) -> Int {
        switch kind {
        case .push: limits.maxDecompressedBytes
        case .bulk: limits.maxBulkBodyBytes
        case .small: limits.maxSmallBodyBytes
        }
    }

    /// Bodies larger than this, as sent or once inflated, are inflated and decoded on
    /// threads of their own (``CPUWork/bodies``), so a few large ones (a bulk push, or a
    /// client sending the largest body it may) never hold the threads every other request
    /// needs; smaller ones (nearly every push) are read where they arrive, as before.
    static let offPoolBytes = 256 * 1024

    /// Decodes a JSON body (gzip or plain) of `type`, within the limits of its kind: a push
    /// may be large, anything else is small (an enrollment or login, which anyone may send,
    /// was read up to the push's 64 MiB, which stalled every tenant for seconds).
    func decode<T: Decodable & Sendable>(_ type: T.Type, from request: Request, kind: BodyKind? = nil) async throws -> T {
        let kind = kind ?? (T.self == PushRequest.self ? .push : .small)
        let maxBytes = maxBytes(kind)
        let raw = try await collect(request, upTo: min(limits.maxRequestBytes, maxBytes))
        let encoding = request.headers[.contentEncoding]?.lowercased()
        guard raw.readableBytes <= Self.offPoolBytes else {
            return try await CPUWork.bodies.run { try Self.parse(type, raw: raw, encoding: encoding, maxBytes: maxBytes) }
        }
        // A small compressed body is inflated here up to the same bound (an agent's pushes,
        // nearly all); one that grows past it is inflated and read on the hub's threads.
        if encoding == "gzip", maxBytes > Self.offPoolBytes {
            let inflated: ByteBuffer
            do throws(GzipInflater.Failure) {
                inflated = try GzipInflater.inflate(raw, maxSize: Self.offPoolBytes)
            } catch .tooLarge {
                return try await CPUWork.bodies.run { try Self.parse(type, raw: raw, encoding: encoding, maxBytes: maxBytes) }
            } catch .malformed(let reason) {
                throw APIError(.badRequest, "malformed_body", "request body is not valid gzip: \(reason)")
            }
            return try Self.parse(type, raw: inflated, encoding: nil, maxBytes: maxBytes)
        }
        return try Self.parse(type, raw: raw, encoding: encoding, maxBytes: maxBytes)
    }

    /// Decodes a push within its limits. A large one (as sent or once inflated, more than
    /// ``offPoolBytes``) first reserves its inflated size in ``pushMemory``, read from its
    /// gzip trailer before anything is inflated, and is inflated no further than that; the
    /// caller holds the reservation until its answer is made. A body whose trailer declares
    /// more than the push limit reserves the limit, and is inflated up to it.
    func decodePush(from request: Request, tenant: TenantID) async throws -> (push: PushRequest, held: PushMemoryBudget.Reservation?) {
        let maxBytes = maxBytes(.push)
        let raw = try await collect(request, upTo: min(limits.maxRequestBytes, maxBytes))
        let encoding = request.headers[.contentEncoding]?.lowercased()
        let gzip = encoding == "gzip"
        // The size once inflated: a gzip member ends with it (modulo 2^32, which a body
        // within the limit cannot wrap; the inflater checks it against the data). A trailer
        // declaring more than the limit is no member's true length within it (a cut stream,
        // bytes after it) or too large: such a body is inflated up to the limit, which says
        // which (400 or 413), and reserves the limit meanwhile.
        var size = raw.readableBytes
        var declared = false
        if gzip {
            size = maxBytes
            if raw.readableBytes >= 18, let trailer = raw.getInteger(at: raw.readerIndex + raw.readableBytes - 4, endianness: .little, as: UInt32.self),
               Int(trailer) <= maxBytes {
                (size, declared) = (Int(trailer), true)
            }
        }
        if raw.readableBytes <= Self.offPoolBytes, size <= Self.offPoolBytes {
            return (try Self.parse(PushRequest.self, raw: raw, encoding: encoding, maxBytes: declared ? max(size, 1) : maxBytes, declared: declared), nil)
        }
        guard let held = await pushMemory.reserve(size, tenant: tenant.rawValue) else {
            var busy = APIError(.serviceUnavailable, "push_memory_busy",
                                "the hub is decoding as many large pushes as its memory allows (\(pushMemory.capacity / (1 << 20)) MiB, \(pushMemory.tenantShare / (1 << 20)) MiB per tenant); retry shortly, or send smaller batches")
            busy.headers[.retryAfter] = "5"
            throw busy
        }
        let (limit, trailerSays) = (declared ? max(size, 1) : maxBytes, declared)
        let push = try await CPUWork.bodies.run { try Self.parse(PushRequest.self, raw: raw, encoding: encoding, maxBytes: limit, declared: trailerSays) }
        return (push, held)
    }

    /// `declared`: `maxBytes` is the size the gzip trailer declares, not the push limit.
    private static func parse<T: Decodable>(_ type: T.Type, raw: ByteBuffer, encoding: String?, maxBytes: Int, declared: Bool = false) throws -> T {
        var body = raw
        if let encoding, encoding != "identity" {
            guard encoding == "gzip" else {
                throw APIError(.unsupportedMediaType, "unsupported_encoding", "Content-Encoding '\(encoding.prefix(40))' is not supported; use gzip or none")
            }
            do throws(GzipInflater.Failure) {
                body = try GzipInflater.inflate(raw, maxSize: maxBytes)
            } catch .tooLarge {
                if declared { throw APIError(.badRequest, "malformed_body", "request body is not valid gzip: it inflates past the \(maxBytes) bytes its trailer declares") }
                throw APIError(.contentTooLarge, "too_large", "request body exceeds \(maxBytes) bytes once decompressed\(T.self == PushRequest.self ? "; send smaller batches" : "")")
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
            case .duplicateKey(let key):
                throw APIError(.badRequest, "malformed_json", "key '\(key.clipped(toUTF8: 64))' is given twice in one object of the push request; each key once")
            case .unrecognised:
                // JSONDecoder names the problem, but a body it reads is bounded only by its
                // size: a key given twice (which the fast decoder leaves to it) let 3,000,000
                // fields through, ~50 s of a shared thread. Small bodies only.
                guard body.readableBytes <= Self.describedPushBytes else {
                    throw APIError(.badRequest, "malformed_json",
                                   "request body is not a push request (a JSON object with 'through' and 'changes', each change with origin, seq, hlc, table, id, op and fields, no key given twice)")
                }
                // Only to name the problem: a body the fast decoder cannot read is never
                // applied. JSONDecoder reads what it does not (`"through": 1.0`), and there it
                // kept one of a key given twice (helper 77: the last `origin`, the first value
                // of a field), so one body meant two things.
                do {
                    _ = try JSONDecoder().decode(PushRequest.self, from: Data(body.readableBytesView))
                } catch let error as DecodingError {
                    throw APIError(.badRequest, "malformed_json", Self.describe(error))
                }
                throw APIError(.badRequest, "malformed_json",
                               "request body is not a push request in the form this hub reads: integers without a fraction or exponent, each key once, strings as JSON writes them")
            }
        }
        do {
            return try JSONDecoder().decode(T.self, from: Data(body.readableBytesView))
        } catch let error as DecodingError {
            // Foundation calls a number its field cannot hold (600.5 or 1e30 for an integer)
            // "not valid JSON", without the field: said so when the body is JSON (helper 108).
            // Small bodies only, as a push's problem is named: the second parse holds the
            // whole body as Foundation objects.
            if case .dataCorrupted(let c) = error, c.codingPath.isEmpty, body.readableBytes <= Self.describedPushBytes,
               (try? JSONSerialization.jsonObject(with: Data(body.readableBytesView), options: [.fragmentsAllowed])) != nil {
                throw APIError(.badRequest, "malformed_json",
                               "the body is JSON, but a value in it does not fit its field: a number with a fraction, or out of range, where a whole number is expected")
            }
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
    func collect(_ request: Request, upTo limit: Int) async throws -> ByteBuffer {
        // A body declared larger than the limit is refused at once, not after waiting (up to
        // the body's time limit) for bytes that would be refused anyway (helper 73: a
        // Content-Length of 10 GB held the request until the timeout).
        // Digits only (a list or anything else is left to the streaming limit); beyond 64 bits is too large.
        if let declared = request.headers[.contentLength], !declared.isEmpty, declared.utf8.allSatisfy({ (0x30...0x39).contains($0) }),
           UInt64(declared).map({ $0 > UInt64(limit) }) ?? true {
            throw APIError(.contentTooLarge, "too_large", "request body exceeds \(limit) bytes (Content-Length \(declared.prefix(24)))")
        }
        let (body, seconds) = (request.body, limits.bodyTimeoutSeconds)
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
            throw APIError(.contentTooLarge, "too_large", "request body exceeds \(limit) bytes")
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

    /// The JSON a Swift type is read from, as a client knows it ("an object", not
    /// `Dictionary<String, Any>`, which named the hub's implementation to every caller).
    static func jsonKind(_ type: Any.Type) -> String {
        let name = String(describing: type)
        if name.hasPrefix("Dictionary") || name.hasPrefix("KeyedDecodingContainer") { return "an object" }
        if name.hasPrefix("Array") || name.hasPrefix("UnkeyedDecodingContainer") { return "an array" }
        if name == "String" || name.hasSuffix("ID") { return "a string" }
        if name == "Bool" { return "true or false" }
        if ["Int", "Int64", "Int32", "UInt64", "UInt32", "UInt16", "UInt8", "UInt"].contains(name) { return "an integer" }
        if name == "Double" || name == "Float" { return "a number" }
        return "another kind of value"
    }

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
            return "\(path(c.codingPath)) has the wrong type: expected \(jsonKind(type))"
        case .valueNotFound(let type, let c):
            return "\(path(c.codingPath)) must not be null: expected \(jsonKind(type))"
        @unknown default:
            return "request body could not be decoded"
        }
    }
}

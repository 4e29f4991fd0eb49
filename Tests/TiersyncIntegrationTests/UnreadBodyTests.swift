import Foundation
import Testing
@testable import TiersyncServer
import TiersyncTestSupport

/// What a client streaming a body the hub does not read saw (`stream` below).
private struct StreamOutcome: Decodable {
    /// Bytes of body the client got out before the hub closed the connection (or the time ran out).
    let sent: Int
    /// The answer's head, as far as it came.
    let head: String
    /// Whether the hub closed the connection within the time.
    let closed: Bool
}

/// Sends `head`, then the body's bytes as fast as the hub takes them for up to `seconds`,
/// then reads the answer, with Python's `ssl` (an HTTP client library stops at the answer).
private func stream(port: Int, caFile: String, head: String, bodyBytes: Int, seconds: Double) async throws -> StreamOutcome {
    let script = #"""
    import json, socket, ssl, sys, time
    port, ca, head, total, seconds = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
    ctx = ssl.create_default_context(cafile=ca)
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1")
    s.sendall(head.replace("\\r\\n", "\r\n").encode())
    s.settimeout(1)
    chunk, sent, start = b"0" * 65536, 0, time.monotonic()
    try:
        while sent < total and time.monotonic() - start < seconds:
            piece = chunk[:total - sent]
            s.sendall(piece)
            sent += len(piece)
    except (OSError, ssl.SSLError):
        pass
    data, closed = b"", False
    s.settimeout(3)
    try:
        while True:
            c = s.recv(65536)
            if not c:
                closed = True
                break
            data += c
    except (socket.timeout, ssl.SSLError, OSError) as e:
        closed = not isinstance(e, socket.timeout)
    print(json.dumps({"sent": sent, "head": data.split(b"\r\n\r\n")[0].decode(errors="replace"), "closed": closed}))
    """#
    let data = try await python(script, [String(port), caFile, head, String(bodyBytes), String(seconds)])
    return try JSONDecoder().decode(StreamOutcome.self, from: data)
}

@Suite("Bodies the hub does not read")
struct UnreadBodyTests {
    @Test("which answers close: errors to bodies past any route's limit or chunked; past 64 KiB unless 429 or 503; never 2xx")
    func whichAnswersClose() {
        let m = UnreadBodyMiddleware(maxBodyBytes: 8 * 1024 * 1024)
        #expect(m.closes(.unauthorized, .length(10_000_000_000)) && m.closes(.tooManyRequests, .length(10_000_000_000)))
        #expect(m.closes(.badRequest, .unbounded) && m.closes(.serviceUnavailable, .unbounded))
        #expect(m.closes(.unauthorized, .length(1_000_000)) && m.closes(.contentTooLarge, .length(1_000_000)))
        #expect(!m.closes(.tooManyRequests, .length(1_000_000)) && !m.closes(.serviceUnavailable, .length(1_000_000)),
                "a busy hub keeps a known client's connection: reading a body within the limit costs less than a handshake")
        #expect(!m.closes(.unauthorized, .length(1_000)) && !m.closes(.ok, .length(10_000_000_000)) && !m.closes(.ok, .unbounded))
    }

    @Test("""
        a push declaring 10 GB without a credential is answered 401 with Connection: close, and the hub reads no more of it \
        (it read and decrypted everything sent after the answer, 4.2 GB in 8 s on one connection, with no credential); a \
        small refused body is read to its end and the connection kept; a GET declaring a body is answered and closed
        """)
    func closedInsteadOfRead() async throws {
        let dir = try TempDir()
        try await withRunningHub(directory: dir.path) { hub in
            let huge = try await stream(port: hub.port, caFile: hub.caFile,
                                        head: "POST /v1/push HTTP/1.1\\r\\nHost: x\\r\\nContent-Type: application/json\\r\\nContent-Length: 10000000000\\r\\n\\r\\n",
                                        bodyBytes: Int.max, seconds: 6)
            #expect(huge.head.hasPrefix("HTTP/1.1 401") && huge.head.lowercased().contains("connection: close"), "\(huge.head)")
            #expect(huge.closed)
            // Kernel buffers and what arrived before the answer, not seconds of streaming.
            #expect(huge.sent < 64 * 1024 * 1024, "the hub took \(huge.sent) bytes")

            let small = try await stream(port: hub.port, caFile: hub.caFile,
                                         head: "POST /v1/push HTTP/1.1\\r\\nHost: x\\r\\nContent-Type: application/json\\r\\nContent-Length: 1000\\r\\n\\r\\n",
                                         bodyBytes: 1000, seconds: 6)
            #expect(small.head.hasPrefix("HTTP/1.1 401") && !small.head.lowercased().contains("connection: close"), "\(small.head)")
            #expect(!small.closed, "a small refused body keeps the connection")

            // The console's login form is read as every body is (helper 92: a form over 16 KiB was a 500
            // `internal`, logged as an error; a huge declared length waited 30 s for the body).
            for (declared, sent, closes) in [("10000000000", Int.max, true), ("20000", 20_000, false)] {
                let login = try await stream(port: hub.port, caFile: hub.caFile,
                                             head: "POST /console/login HTTP/1.1\\r\\nHost: x\\r\\nContent-Type: application/x-www-form-urlencoded\\r\\nContent-Length: \(declared)\\r\\n\\r\\n",
                                             bodyBytes: sent, seconds: 6)
                // A small body is read to its end (the connection kept); a huge one is not read at all.
                #expect(login.head.hasPrefix("HTTP/1.1 413") && login.closed == closes && login.sent < 64 * 1024 * 1024, "\(declared): \(login.head)")
                // The console's own page says so, not the API's JSON (helper 93).
                #expect(login.head.lowercased().contains("content-type: text/html"), "\(login.head)")
            }

            let get = try await stream(port: hub.port, caFile: hub.caFile,
                                       head: "GET /healthz HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 10\\r\\n\\r\\n", bodyBytes: 10, seconds: 6)
            #expect(get.head.hasPrefix("HTTP/1.1 200") && get.head.lowercased().contains("connection: close") && get.closed, "\(get.head)")
        }
    }
}

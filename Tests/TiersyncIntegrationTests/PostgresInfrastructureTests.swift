import Foundation
import NIOSSL
import PostgresNIO
import Testing
import TiersyncCore
import TiersyncPostgres
import TiersyncTestSupport

/// The infrastructure the hub's PostgreSQL engine and its several processes will be tested on
/// (issue 14): the test cluster, LISTEN/NOTIFY between connections, HAProxy in front of hubs.
@Suite("PostgreSQL and load-balancer test infrastructure")
struct PostgresInfrastructureTests {
    @Test("postgres:// URLs read into endpoints; a bad one is refused with the reason, its password never repeated")
    func endpointURLs() throws {
        let local = try PostgresEndpoint(url: "postgres://tiersync-ci@127.0.0.1:5433/tiersync_test")
        #expect(local == PostgresEndpoint(host: "127.0.0.1", port: 5433, username: "tiersync-ci", database: "tiersync_test"))
        #expect(local.isLoopback)
        #expect(local.url == "postgres://tiersync-ci@127.0.0.1:5433/tiersync_test")

        let remote = try PostgresEndpoint(url: "postgresql://app:p%40ss%2Fw@db.example.com/tiersync")
        #expect(remote == PostgresEndpoint(host: "db.example.com", port: 5432, username: "app", password: "p@ss/w", database: "tiersync"))
        #expect(!remote.isLoopback)
        #expect(try PostgresEndpoint(url: remote.url) == remote)
        #expect(remote.description == "postgres://app:***@db.example.com:5432/tiersync")

        let v6 = try PostgresEndpoint(url: "postgres://u@[::1]:6000/d")
        #expect(v6.host == "::1" && v6.port == 6000 && v6.isLoopback)
        #expect(v6.url == "postgres://u@[::1]:6000/d")
        #expect(try PostgresEndpoint(url: "postgres://u@localhost/d").isLoopback)
        #expect(try !PostgresEndpoint(url: "postgres://u@127.0.0.1.example.com/d").isLoopback)

        let refused: [(String, String)] = [
            ("localhost:5432/d", "not a URL"),
            ("http://u@h/d", "scheme is 'http'"),
            ("postgres://h:5432/d", "names no user"),
            ("postgres://:pw@h:5432/d", "names no user"),
            ("postgres://u@h:5432", "names no database"),
            ("postgres://u@h:5432/", "names no database"),
            ("postgres://u@h:5432/a/b", "several segments"),
            ("postgres://u@:5432/d", "names no host"),
            ("postgres://u@h:99999/d", "not a number from 1 to 65535"),
            ("postgres://u@h:x/d", "not a number from 1 to 65535"),
            ("postgres://u@::1:5432/d", "several ':'"),
            ("postgres://u@h/d?sslmode=require", "query parameters"),
            ("postgres://u:secret@h:0/d", "not a number from 1 to 65535"),
        ]
        for (url, reason) in refused {
            #expect {
                _ = try PostgresEndpoint(url: url)
            } throws: { error in
                let text = "\(error)"
                return text.contains(reason) && text.hasPrefix("invalid PostgreSQL URL") && !text.contains("secret")
            }
        }
    }

    // Skipped, with this reason in the output, when TIERSYNC_TEST_POSTGRES_URL is unset.
    @Test("connects to the test cluster and round-trips a query in a database of its own, dropped afterwards",
          .enabled(if: TestPostgres.isAvailable, "TIERSYNC_TEST_POSTGRES_URL is not set (ops/postgres/test-cluster.sh; README)"))
    func roundTrip() async throws {
        let database = try await TestPostgres.withFreshDatabase { endpoint in
            try await withPostgresClient(endpoint) { client in
                var answers: [Int] = []
                for try await (answer, name) in try await client.query("SELECT \(41) + 1, current_database()").decode((Int, String).self) {
                    answers.append(answer)
                    #expect(name == endpoint.database)
                }
                #expect(answers == [42])
                try await client.query("CREATE TABLE probe (id text PRIMARY KEY, n bigint NOT NULL)")
                try await client.query("INSERT INTO probe VALUES (\("a"), \(7)), (\("b"), \(8))")
                var sum = 0
                for try await n in try await client.query("SELECT sum(n)::bigint FROM probe").decode(Int.self) { sum = n }
                #expect(sum == 15)
            }
            return endpoint.database
        }
        #expect(database.hasPrefix("tiersync_t_"))
        let left = try await withPostgresClient(try TestPostgres.endpoint()) { client in
            var count = 0
            for try await n in try await client.query("SELECT count(*)::bigint FROM pg_database WHERE datname = \(database)").decode(Int.self) { count = n }
            return count
        }
        #expect(left == 0, "\(database) was not dropped")
    }

    // Skipped, with this reason in the output, when TIERSYNC_TEST_POSTGRES_URL is unset.
    @Test("""
        a connection PostgreSQL ends itself (57P01, as a stop ends every backend) counts as the database out of reach \
        (503 storage_unavailable with Retry-After, not a 500), and its log line names the SQLSTATE and PostgreSQL's \
        message, which postgres-nio's own description hides; a plain SQL error stays a failure of the request
        """, .enabled(if: TestPostgres.isAvailable, "TIERSYNC_TEST_POSTGRES_URL is not set (ops/postgres/test-cluster.sh; README)"))
    func serverEndedConnection() async throws {
        try await TestPostgres.withFreshDatabase { endpoint in
            try await withPostgresClient(endpoint) { client in
                let catalog = try await PostgresCatalog(client: client)
                // A plain SQL error first (the connection ended below is not used again).
                var failed: (any Error)?
                do {
                    for try await _ in try await client.query("SELECT 1 / 0") {}
                } catch {
                    failed = error
                }
                let plain = try #require(failed)
                #expect(!catalog.isUnavailable(plain))
                #expect(catalog.failureDetail(plain)?.contains("22012") == true, "\(String(describing: catalog.failureDetail(plain)))")
                var ended: (any Error)?
                do {
                    for try await _ in try await client.query("SELECT pg_terminate_backend(pg_backend_pid())") {}
                } catch {
                    ended = error
                }
                let error = try #require(ended, "the server ended the query's connection")
                #expect(catalog.isUnavailable(error), "\(String(reflecting: error))")
                let detail = try #require(catalog.failureDetail(error))
                #expect(detail.contains("57P01") && detail.contains("terminating connection"), "\(detail)")
            }
        }
    }

    // Skipped, with this reason in the output, when TIERSYNC_TEST_POSTGRES_URL is unset.
    @Test("a LISTEN on one connection is woken by a NOTIFY from another client within 1 s",
          .enabled(if: TestPostgres.isAvailable, "TIERSYNC_TEST_POSTGRES_URL is not set (ops/postgres/test-cluster.sh; README)"))
    func listenNotify() async throws {
        try await TestPostgres.withFreshDatabase { endpoint in
            // Two clients, two pools: as two hub processes would.
            try await withPostgresClient(endpoint) { listening in
                try await withPostgresClient(endpoint) { sending in
                    let listener = try PostgresNotifier(client: listening)
                    let sender = try PostgresNotifier(client: sending)
                    // Arrivals are timed on the listening connection's event loop, as they
                    // come: a full test run can hold the test's own task back for seconds.
                    let (arrivals, arrived) = AsyncStream<(TenantID, ContinuousClock.Instant)>.makeStream()
                    try await listener.listen(onSignal: { arrived.yield(($0, .now)) }) {
                        // The sender's connection open and idle first, so the NOTIFY goes out at once.
                        for try await _ in try await sending.query("SELECT 1") {}
                        let sent = ContinuousClock.now
                        try await sender.signal("acme")
                        let first = try await within(.seconds(10), "the notification for acme") {
                            var iterator = arrivals.makeAsyncIterator()
                            return await iterator.next()
                        }
                        #expect(first?.0 == "acme")
                        if let first { #expect(first.1 - sent < .seconds(1)) }
                    }
                }
            }
        }
    }

    // Skipped, with this reason in the output, when haproxy is not installed.
    @Test("HAProxy passes TLS through to two hubs, one new connection to each in turn",
          .enabled(if: TestLoadBalancer.isAvailable, "haproxy is not installed (Debian package haproxy)"))
    func loadBalancerRoundRobin() async throws {
        let dirA = try TempDir()
        let dirB = try TempDir()
        try await withRunning { running in
            let a = try await running.hub(directory: dirA.path)
            // Hub B gets a server certificate of its own from A's CA: a client trusting one CA
            // reaches either, and the certificate presented tells which one served it.
            try FileManager.default.createDirectory(atPath: dirB.path + "/pki", withIntermediateDirectories: true)
            for file in ["ca.pem", "ca-key.pem"] {
                try FileManager.default.copyItem(atPath: "\(dirA.path)/pki/\(file)", toPath: "\(dirB.path)/pki/\(file)")
            }
            let b = try await running.hub(directory: dirB.path)
            let certificates = try [dirA, dirB].map { try NIOSSLCertificate.fromPEMFile("\($0.path)/pki/server.pem")[0].toDERBytes() }
            #expect(certificates[0] != certificates[1])

            let balancer = try await running.loadBalancer(backends: [a.port, b.port])
            #expect(balancer.port != a.port && balancer.port != b.port)
            var served: [String] = []
            for _ in 0..<4 {
                let reply = try await httpsGet(port: balancer.port, caFile: a.caFile, path: "/v1/health")
                #expect(reply.status == 200 && reply.body.contains("ok"), "\(reply.status) \(reply.body)")
                served.append(reply.peerCertificate == certificates[0] ? "a" : reply.peerCertificate == certificates[1] ? "b" : "neither")
            }
            #expect(served.filter { $0 == "a" }.count == 2 && served.filter { $0 == "b" }.count == 2,
                    "served by \(served); HAProxy's log:\n\(balancer.log)")
            #expect(zip(served, served.dropFirst()).allSatisfy { $0 != $1 }, "not in turn: \(served)")
        }
    }
}

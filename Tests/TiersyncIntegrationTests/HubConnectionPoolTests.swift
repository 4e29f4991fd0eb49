import Foundation
import Logging
import PostgresNIO
import Synchronization
import Testing
import TiersyncCore
import TiersyncPostgres
import TiersyncTestSupport

/// `tiersync hub serve --postgres-connections`: how many PostgreSQL connections one hub
/// process opens (``HubConnectionPool``).
@Suite("A hub process's PostgreSQL connections")
struct HubConnectionPoolTests {
    static let dealers: [NodeID] = (1...16).map { NodeID(unchecked: "d\($0)") }

    @Test("""
        --postgres-connections 3 (the least): 16 dealers pushing at once, each with a long-poll open, with HQ's rules runner on a 0.2 s interval: \
        every push applied, every long-poll woken with its neighbour's record, and never more than 3 backends on the database besides the watch's own
        """,
          .enabled(if: TestPostgres.isAvailable, "needs TIERSYNC_TEST_POSTGRES_URL (ops/postgres/test-cluster.sh)"))
    func leastPoolServesConcurrentSyncs() async throws {
        try await TestPostgres.withFreshDatabase { endpoint in
            let dir = try TempDir()
            let tokens = try await TestPostgres.createTenant("acme", enrolling: Self.dealers, in: endpoint)
            try await withRunning { running in
                let pki = dir.path + "/pki", ca = pki + "/ca.pem"
                let port = try await freeLoopbackPort()
                _ = try running.child(["hub", "serve", "--postgres", endpoint.url, "--postgres-connections", "3", "--rules-interval", "0.2",
                                       "--dev-certs", pki, "--port", String(port), "--log-level", "warning"], log: dir.path + "/hub.log")
                try await eventually(timeout: 30, "the hub answers on \(port)") {
                    (try? await httpsGet(port: port, caFile: ca, path: "/v1/health", timeout: .seconds(2)))?.status == 200
                }
                // A client each, so the hub has as many requests in flight as dealers.
                let clients = Dictionary(uniqueKeysWithValues: Self.dealers.map { ($0, running.client(baseURL: "https://127.0.0.1:\(port)", caFile: ca)) })
                var enrolled: [NodeID: String] = [:]
                for node in Self.dealers {
                    let reply = try await clients[node]!.send("POST", "/v1/enroll", json: EnrollRequest(token: tokens[node]!))
                    guard reply.status == 201 else { throw TestFailure("enroll \(node): \(reply.status) \(reply.text)") }
                    enrolled[node] = try reply.decode(EnrollResponse.self).credential
                }
                let credentials = enrolled
                let database = endpoint.database
                let server = try TestPostgres.endpoint()
                // The hub's backends on its database, sampled while the load runs.
                let peak = Peak()
                try await withPostgresClient(server) { observer in
                    let sampler = Task {
                        while peak.sampling.withLock({ $0 }) {
                            let rows = try await observer.query("SELECT count(*)::int8 FROM pg_stat_activity WHERE datname = \(database) AND backend_type = 'client backend'").collect()
                            let count = Int(try rows.first?.decode(Int64.self) ?? 0)
                            peak.most.withLock { $0 = max($0, count) }
                            try await Task.sleep(for: .milliseconds(5))
                        }
                    }
                    defer { peak.sampling.withLock { $0 = false } }
                    // Every dealer long-polls, then pushes ten records its neighbour services
                    // (one per request), all at once: each long-poll wakes for the first of them.
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        for (i, node) in Self.dealers.enumerated() {
                            let previous = Self.dealers[(i + Self.dealers.count - 1) % Self.dealers.count]
                            let next = Self.dealers[(i + 1) % Self.dealers.count]
                            let poller = running.client(baseURL: "https://127.0.0.1:\(port)", caFile: ca)
                            group.addTask {
                                let reply = try await poller.send("GET", "/v1/pull?cursor=0&wait=20", credential: credentials[node]!)
                                #expect(reply.status == 200, "\(node)'s long-poll: \(reply.status) \(reply.text)")
                                let records = try reply.decode(PullResponse.self).changes.map(\.recordID)
                                #expect(!records.isEmpty && records.allSatisfy { $0.hasPrefix("\(previous)-") },
                                        "\(node)'s long-poll woke with its neighbour \(previous)'s records, got \(records)")
                            }
                            group.addTask {
                                try await Task.sleep(for: .milliseconds(300))
                                for k in 1...10 {
                                    let change = Change(origin: node, originSeq: Int64(k), hlc: HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: 0),
                                                        table: "customers", recordID: "\(node)-c\(k)", op: .upsert,
                                                        fields: ["last_name": .string("\(node) \(k)"), "owning_dealer": .string(node.rawValue),
                                                                 "servicing_dealer": .string(next.rawValue)])
                                    let reply = try await clients[node]!.send("POST", "/v1/push", json: PushRequest(through: Int64(k), changes: [change]),
                                                                               credential: credentials[node]!)
                                    #expect(reply.status == 200, "\(node)'s push \(k): \(reply.status) \(reply.text)")
                                    #expect(try reply.decode(PushResponse.self).applied == 1, "\(node)'s push \(k) applied")
                                }
                            }
                        }
                        try await group.waitForAll()
                    }
                    peak.sampling.withLock { $0 = false }
                    try await sampler.value
                }
                let observed = peak.most.withLock { $0 }
                #expect(observed >= 1 && observed <= 4, "backends of the hub on its database at most: \(observed) (--postgres-connections 3, and the watch's own)")
                // Every push reached HQ once.
                try await withPostgresClient(endpoint) { client in
                    let hq = PostgresTenantStores(client: client, catalog: try await PostgresCatalog(client: client)).store(for: "acme")
                    #expect(try await hq.feedHead() == Int64(Self.dealers.count * 10))
                }
            }
        }
    }

    @Test("""
        once the hub's watch finds PostgreSQL unreachable, requests are answered 503 storage_unavailable with Retry-After at \
        once, a long-poll's included (with PostgreSQL gone, the first requests waited over a minute in the pool); /healthz still answers
        """, .enabled(if: TestPostgres.isAvailable, "needs TIERSYNC_TEST_POSTGRES_URL (ops/postgres/test-cluster.sh)"))
    func requestsStopWaitingForADatabaseGone() async throws {
        try await TestPostgres.withFreshDatabase { endpoint in
            let dir = try TempDir()
            // The stores use the database; the watch looks at an address where nothing listens
            // (port 1 of the loopback: refused at once), as it would find a stopped server.
            let gone = try PostgresEndpoint(url: "postgres://nobody@127.0.0.1:1/none")
            let hub = try await RunningHub(directory: dir.path, postgres: endpoint, watchingPostgresAt: gone)
            let client = RawClient(baseURL: hub.url, caFile: hub.caFile)
            try await withTeardown({ await client.shutdown(); await hub.stop() }) {
                // Enrolled in the database directly: every request is refused once the watch has looked.
                _ = try await hub.catalogStore.createTenant("acme")
                let token = try await hub.catalogStore.issueEnrollmentToken(tenant: "acme", node: "d1")
                try await eventuallyAsync(timeout: 20, "requests are answered 503 once the watch finds the database gone") {
                    try await client.send("POST", "/v1/enroll", json: EnrollRequest(token: token)).status == 503
                }
                let started = ContinuousClock.now
                let reply = try await client.send("GET", "/v1/pull?cursor=0&wait=30", credential: "tsc_any")
                #expect(reply.status == 503 && reply.error?.code == "storage_unavailable" && reply.headers["retry-after"] == "5", "\(reply.status) \(reply.text)")
                #expect(ContinuousClock.now - started < .seconds(5), "a long-poll is not kept waiting")
                #expect(try await client.send("POST", "/v1/enroll", json: EnrollRequest(token: token)).status == 503, "nothing reached the database")
                #expect(try await client.send("GET", "/healthz").status == 200)
                // The hub's metrics are still served, and say what is wrong: the 503s above are
                // counted (they never reached authentication, so no tenant's request counter has them).
                let scrape = try await client.send("GET", "/metrics", headers: ObservabilityTests.bearer)
                #expect(scrape.status == 200, "\(scrape.status) \(scrape.text)")
                #expect(scrape.text.contains("\ntiersync_storage_reachable 0"), "\(scrape.text)")
                let answered = scrape.text.split(separator: "\n").first { $0.hasPrefix("tiersync_storage_unavailable_responses_total ") }
                    .flatMap { Double($0.split(separator: " ").last!) } ?? 0
                #expect(answered >= 3, "\(scrape.text)")
                if let problems = try promtoolCheck(scrape.text) { #expect(problems == "", "\(problems)\n\(scrape.text)") }
            }
        }
    }

    @Test("""
        the watch of PostgreSQL: an address that refuses counts as down within seconds, and whoever waits for that is told; \
        a reachable database counts as up and keeps nobody waiting
        """, .enabled(if: TestPostgres.isAvailable, "needs TIERSYNC_TEST_POSTGRES_URL (ops/postgres/test-cluster.sh)"))
    func livenessWatch() async throws {
        let gone = PostgresLiveness(endpoint: try PostgresEndpoint(url: "postgres://nobody@127.0.0.1:1/none"))
        let up = PostgresLiveness(endpoint: try TestPostgres.endpoint())
        // The server is there and refuses this login itself: not down (the pool's connections may serve).
        let refusedLogin = PostgresLiveness(endpoint: try TestPostgres.endpoint().with(database: "tiersync_no_such_database"))
        let watching = Task { await withTaskGroup(of: Void.self) { group in
            group.addTask { await gone.run() }
            group.addTask { await up.run() }
            group.addTask { await refusedLogin.run() }
        } }
        defer { watching.cancel() }
        let told = Task { try await gone.untilDown() }
        // Alone, at once; a full run on 2 loaded cores once took over 15 s (the suite's CLI
        // children and the other tests' hubs share the cooperative threads).
        try await eventually(timeout: 40, "the refusing address counts as down") { gone.isDown }
        try await told.value
        try await Task.sleep(for: .seconds(2))
        #expect(!up.isDown)
        #expect(!refusedLogin.isDown, "a refusal the server sends is not the database gone")
        let waiting = Task { try await up.untilDown() }
        try await Task.sleep(for: .milliseconds(300))
        waiting.cancel()
        await #expect(throws: CancellationError.self) { try await waiting.value }
    }

    @Test("""
        the watch of PostgreSQL notices a network gone silent (the way to the database frozen: nothing closed, nothing \
        answered) by its pings, and counts the database up again once it answers
        """, .enabled(if: TestPostgres.isAvailable && TestLoadBalancer.isAvailable, "needs TIERSYNC_TEST_POSTGRES_URL and haproxy"))
    func livenessWatchSilentNetwork() async throws {
        var endpoint = try TestPostgres.endpoint()
        let proxy = try await TestLoadBalancer.start(backends: [endpoint.port])
        endpoint.port = proxy.port
        let watch = PostgresLiveness(endpoint: endpoint, connectTimeout: .seconds(2), pingInterval: .milliseconds(500))
        let watching = Task { await watch.run() }
        try await withTeardown({ watching.cancel(); proxy.thaw(); await proxy.stop() }) {
            // The watch's connection opened and answered pings through the proxy.
            try await Task.sleep(for: .seconds(3))
            #expect(!watch.isDown)
            proxy.freeze()
            let frozen = ContinuousClock.now
            // Before the pings, the connection held stayed open and the watch never noticed.
            try await eventually(timeout: 20, "the watch finds the silent database gone") { watch.isDown }
            // Pings every 0.5 s and a 2 s connect timeout find it in 3–4 s alone; a full run on 2
            // loaded cores took 10.4 and 11.2 s (the suite's CLI children block cooperative threads).
            #expect(ContinuousClock.now - frozen < .seconds(15))
            proxy.thaw()
            try await eventually(timeout: 20, "the database counts as up once it answers again") { !watch.isDown }
        }
    }

    @Test("""
        a PostgreSQL that does not answer: hub serve tries again every second, logging why, and gives up after \
        --postgres-wait with the network's reason, the password left out
        """)
    func unreachableServer() async throws {
        let dir = try TempDir()
        // Nothing listens on port 1 of the loopback interface: refused at once, every time.
        let started = ContinuousClock.now
        let ran = try await tiersync(["hub", "serve", "--postgres", "postgres://nobody:secret@127.0.0.1:1/none", "--postgres-wait", "2",
                                      "--dev-certs", dir.path + "/pki", "--port", "0"], cwd: dir.path, timeout: 60)
        let took = ContinuousClock.now - started
        #expect(ran.status != 0, "\(ran)")
        #expect(ran.err.contains("no connection to PostgreSQL at postgres://nobody:***@127.0.0.1:1/none within 2 s (--postgres-wait): ")
                && ran.err.contains("Connection refused"), "\(ran)")
        #expect((ran.out + ran.err).contains("no connection to PostgreSQL yet; trying again in 1 s"),
                "each failed attempt is logged: \(ran)")
        #expect(!ran.out.contains("secret") && !ran.err.contains("secret"), "the password is never printed")
        #expect(took < .seconds(30), "gave up after about 2 s, took \(took)")
        #expect(try await tiersync(["hub", "serve", "--postgres", "postgres://nobody@127.0.0.1:1/none", "--postgres-wait", "4000",
                                    "--dev-certs", dir.path + "/pki", "--port", "0"], cwd: dir.path, timeout: 30)
                    .err.contains("--postgres-wait must be a number of seconds from 0 to 3600, got 4000.0"))
    }

    @Test("a database that does not exist: hub serve gives up after --postgres-wait, an admin command after 15 s, each with PostgreSQL's own message",
          .enabled(if: TestPostgres.isAvailable, "needs TIERSYNC_TEST_POSTGRES_URL (ops/postgres/test-cluster.sh)"))
    func missingDatabase() async throws {
        let dir = try TempDir()
        let missing = try TestPostgres.endpoint().with(database: "tiersync_missing_" + UUID().uuidString.prefix(8).lowercased())
        let ran = try await tiersync(["hub", "serve", "--postgres", missing.url, "--postgres-wait", "0",
                                      "--dev-certs", dir.path + "/pki", "--port", "0"], cwd: dir.path, timeout: 60)
        #expect(ran.status != 0 && ran.err.contains("within 0 s (--postgres-wait): database \"\(missing.database)\" does not exist"), "\(ran)")
        let admin = try await tiersync(["admin", "nodes", "--postgres", missing.url, "--tenant", "acme"], cwd: dir.path, timeout: 60)
        #expect(admin.status != 0 && admin.err.contains("within 15 s: database \"\(missing.database)\" does not exist"), "\(admin)")
    }

    @Test("""
        first contact tries only the connection again: a statement the server refuses is rethrown at once, with \
        PostgreSQL's error, on the one attempt
        """, .enabled(if: TestPostgres.isAvailable, "needs TIERSYNC_TEST_POSTGRES_URL (ops/postgres/test-cluster.sh)"))
    func firstContactRethrowsTheBodysError() async throws {
        let endpoint = try TestPostgres.endpoint()
        let attempts = Atomic(0)
        await #expect {
            _ = try await endpoint.firstContact(waiting: .seconds(20), logger: Logger(label: "test")) { connection in
                attempts.add(1, ordering: .relaxed)
                return try await connection.query("SELECT * FROM tiersync_no_such_table", logger: Logger(label: "test")).collect()
            }
        } throws: { error in
            (error as? PSQLError)?.serverInfo?[.message] == "relation \"tiersync_no_such_table\" does not exist"
        }
        // Before, the refusal counted as "no connection yet": the body ran every second for
        // the whole wait, then the refusal was reported as an unreachable server. (No bound on
        // the time: on a loaded machine the connection itself may take some tries.)
        #expect(attempts.load(ordering: .relaxed) == 1)
    }

    @Test("--postgres-connections is refused below 3, above 1,000, and without --postgres, before anything starts")
    func optionValidated() async throws {
        let dir = try TempDir()
        let cases: [([String], String)] = [
            (["--postgres", "postgres://nobody@127.0.0.1:1/none", "--postgres-connections", "2"],
             "--postgres-connections must be from 3 to 1000, got 2"),
            (["--postgres", "postgres://nobody@127.0.0.1:1/none", "--postgres-connections", "1001"],
             "--postgres-connections must be from 3 to 1000, got 1001"),
            (["--data", dir.path + "/hub", "--postgres-connections", "8"],
             "--postgres-connections applies to a hub on PostgreSQL (--postgres URL)"),
        ]
        for (arguments, message) in cases {
            let ran = try await tiersync(["hub", "serve"] + arguments + ["--dev-certs", dir.path + "/pki", "--port", "0"], cwd: dir.path, timeout: 30)
            #expect(ran.status != 0 && ran.err.contains(message), "\(ran)")
        }
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/hub"), "nothing created")
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/pki"), "no certificates made")
    }

    @Test("what PostgreSQL lets a user open: a non-superuser's limit leaves out the reserved slots; the role's and the database's own limits cap it")
    func serverLimit() {
        var limit = HubConnectionPool.ServerLimit(maxConnections: 100, reservedForSuperusers: 3, reserved: 0, isSuperuser: false,
                                                  roleLimit: -1, databaseLimit: -1, inUse: 10)
        #expect(limit.allowed == 97)
        #expect(limit.refusal(connections: 97) == nil)
        #expect(limit.refusal(connections: 98)
                == "--postgres-connections 98 is more than PostgreSQL lets this user open at all (97: max_connections 100, less superuser_reserved_connections 3); lower it, or raise the server's limit")
        limit.roleLimit = 20
        limit.databaseLimit = 30
        #expect(limit.allowed == 20)
        limit.isSuperuser = true
        limit.roleLimit = -1
        #expect(limit.allowed == 30, "a superuser may use the reserved slots, not more than the database allows")
    }

    @Test("a pool PostgreSQL can never fill is refused at start with the server's limit, and nothing is left open",
          .enabled(if: TestPostgres.isAvailable, "needs TIERSYNC_TEST_POSTGRES_URL (ops/postgres/test-cluster.sh)"))
    func poolBeyondTheServer() async throws {
        try await TestPostgres.withFreshDatabase { endpoint in
            let dir = try TempDir()
            let allowed = try await HubConnectionPool.serverLimit(of: endpoint, waiting: .seconds(10), logger: Logger(label: "test")).allowed
            let wanted = allowed + 1
            let ran = try await tiersync(["hub", "serve", "--postgres", endpoint.url, "--postgres-connections", String(wanted),
                                          "--dev-certs", dir.path + "/pki", "--port", "0"], cwd: dir.path, timeout: 60)
            #expect(ran.status != 0 && ran.err.contains("--postgres-connections \(wanted) is more than PostgreSQL lets this user open at all (\(allowed): "),
                    "\(ran)")
            let left = try await withPostgresClient(try TestPostgres.endpoint()) { client in
                try await client.query("SELECT count(*)::int8 FROM pg_stat_activity WHERE datname = \(endpoint.database)").collect().first?.decode(Int64.self)
            }
            #expect(left == 0, "no connection of the refused hub left on its database")
        }
    }
}

/// The most backends seen, and whether to go on looking.
private final class Peak: Sendable {
    let most = Mutex(0)
    let sampling = Mutex(true)
}

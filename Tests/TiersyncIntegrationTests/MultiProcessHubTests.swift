import Foundation
import PostgresNIO
import Testing
import TiersyncAgent
import TiersyncCore
import TiersyncPostgres
import TiersyncStore
import TiersyncTestSupport

/// Several `tiersync hub serve --postgres` processes on one database, behind HAProxy (TLS
/// passed through: each process serves the same certificate), as issue 14 runs the hub.
@Suite("Several hub processes on one PostgreSQL", .serialized)
struct MultiProcessHubTests {
    static let dealers: [NodeID] = ["d1", "d2", "d3", "d4"]

    @Test("""
        two hub processes behind HAProxy: a long-poll on A wakes within seconds (not its 20 s wait) for a push through B; agents spread over \
        both; A SIGKILLed mid-push and restarted; every change at HQ exactly once and every replica as HQ has it
        """,
          .enabled(if: TestPostgres.isAvailable && TestLoadBalancer.isAvailable,
                   "needs TIERSYNC_TEST_POSTGRES_URL (ops/postgres/test-cluster.sh) and haproxy (Debian package)"))
    func twoProcessesBehindALoadBalancer() async throws {
        try await TestPostgres.withFreshDatabase { endpoint in
            let dir = try TempDir()
            // The tenant and its nodes' tokens, straight into the catalog.
            let tokens = try await TestPostgres.createTenant("acme", enrolling: Self.dealers + ["w1", "w2"], in: endpoint)
            try await withRunning { running in
                let pki = dir.path + "/pki", ca = dir.path + "/pki/ca.pem"
                let ports = [try await freeLoopbackPort(), try await freeLoopbackPort()]
                func startHub(_ i: Int) async throws -> Child {
                    let hub = try running.child(["hub", "serve", "--postgres", endpoint.url, "--dev-certs", pki, "--port", String(ports[i]),
                                                 "--log-level", "warning"], log: "\(dir.path)/hub-\(i)-\(UUID().uuidString.prefix(4)).log")
                    try await eventually(timeout: 30, "hub \(i) answers on \(ports[i])") {
                        (try? await httpsGet(port: ports[i], caFile: ca, path: "/v1/health", timeout: .seconds(2)))?.status == 200
                    }
                    return hub
                }
                // One after the other: the first creates the development CA both serve from.
                var hubA = try await startHub(0)
                _ = try await startHub(1)
                let balancer = try await running.loadBalancer(backends: ports)
                let url = "https://127.0.0.1:\(balancer.port)"

                // A long-poll on A wakes for a push through B.
                let (a, b) = (running.client(baseURL: "https://127.0.0.1:\(ports[0])", caFile: ca),
                              running.client(baseURL: "https://127.0.0.1:\(ports[1])", caFile: ca))
                func credential(_ node: NodeID, via client: RawClient) async throws -> String {
                    let reply = try await client.send("POST", "/v1/enroll", json: EnrollRequest(token: tokens[node]!))
                    guard reply.status == 201 else { throw TestFailure("enroll \(node): \(reply.status) \(reply.text)") }
                    return try reply.decode(EnrollResponse.self).credential
                }
                let w1 = try await credential("w1", via: b), w2 = try await credential("w2", via: a)
                async let waiting = a.send("GET", "/v1/pull?cursor=0&wait=20", credential: w2)
                try await Task.sleep(for: .milliseconds(500))
                let wake = Change(origin: "w1", originSeq: 1, hlc: HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: 0), table: "customers",
                                  recordID: "wake-1", op: .upsert, fields: ["last_name": "Wake", "owning_dealer": "w1", "servicing_dealer": "w2"])
                let pushed = try await b.send("POST", "/v1/push", json: PushRequest(through: 1, changes: [wake]), credential: w1)
                let pushedAt = ContinuousClock.now
                #expect(pushed.status == 200, "\(pushed.text)")
                let woken = try await waiting
                let latency = ContinuousClock.now - pushedAt
                #expect(try woken.decode(PullResponse.self).changes.map(\.recordID) == ["wake-1"])
                #expect(latency < .seconds(5), "the long-poll on A answered \(latency) after the push through B, not at its 20 s wait (5 s: room for a loaded machine)")

                // Dealers' agents through the balancer; each writes records it owns and its
                // neighbour services, so every change goes up and one other dealer gets it back.
                var stores: [NodeID: NodeStore] = [:]
                for node in Self.dealers {
                    let store = try NodeStore(path: "\(dir.path)/\(node).sqlite")
                    var configuration = AgentConfiguration(parentURL: url, caFile: ca)
                    // Small pushes and quick retries: many requests in flight when A dies, and
                    // back soon after.
                    configuration.pushBatchSize = 5
                    configuration.localPollInterval = .milliseconds(50)
                    configuration.pullWaitSeconds = 5
                    configuration.retryMax = .seconds(2)
                    configuration.followGovernance = false
                    try await SyncAgent.enroll(store: store, configuration: configuration, token: tokens[node]!)
                    let agent = try SyncAgent(store: store, configuration: configuration)
                    let task = Task { try await agent.run() }
                    running.add {
                        task.cancel()
                        _ = await task.result
                    }
                    stores[node] = store
                }
                let perDealer = 300
                func write(_ range: Range<Int>) throws {
                    for (i, node) in Self.dealers.enumerated() {
                        let next = Self.dealers[(i + 1) % Self.dealers.count]
                        for chunk in stride(from: range.lowerBound, to: range.upperBound, by: 10) {
                            try stores[node]!.commit((chunk..<min(chunk + 10, range.upperBound)).map { k in
                                .upsert("customers", id: "\(node)-c\(k)", ["last_name": .string("\(node) \(k)"), "servicing_dealer": .string(next.rawValue)])
                            })
                        }
                    }
                }
                try write(0..<100)
                try await Task.sleep(for: .milliseconds(300))
                // A is killed while the agents are pushing, and comes back on its port. Killed
                // as soon as the writes are made, and HQ's count read right after, through a
                // store opened beforehand: what HQ holds then is at least what it held at the
                // kill. (Opening a client between the writes and the kill gave the agents time
                // to finish once pushes got faster.)
                let atKill = try await withPostgresClient(endpoint) { client in
                    let probe = PostgresTenantStores(client: client, catalog: try await PostgresCatalog(client: client)).store(for: "acme")
                    _ = try await probe.feedHead()
                    try write(100..<200)
                    hubA.kill(SIGKILL)
                    return try await probe.feedHead()
                }
                #expect(hubA.process.terminationReason == .uncaughtSignal)
                try await Task.sleep(for: .seconds(1))
                try write(200..<perDealer)
                hubA = try await startHub(0)

                // Everything reaches HQ once, and every dealer holds what HQ routes to it.
                try await withPostgresClient(endpoint) { client in
                    let catalog = try await PostgresCatalog(client: client)
                    let hq = PostgresTenantStores(client: client, catalog: catalog).store(for: "acme")
                    let expected = Int64(Self.dealers.count * perDealer + 1)
                    // Killed with part of what was written before still on its way (800 changes and w1's).
                    #expect(atKill < Int64(Self.dealers.count * 200 + 1), "A was killed mid-push (HQ had \(atKill) changes)")
                    try await eventually(timeout: 90, "HQ holds \(expected) changes") { try await hq.feedHead() == expected }
                    for node in Self.dealers {
                        #expect(try await hq.highestSeq(of: node) == Int64(perDealer), "\(node)'s changes, each once")
                    }
                    let held = try await hq.liveRecords(inTable: "customers")
                    #expect(held.count == Self.dealers.count * perDealer + 1)
                    for node in Self.dealers {
                        let routed = held.filter { $0.values["owning_dealer"]?.stringValue == node.rawValue || $0.values["servicing_dealer"]?.stringValue == node.rawValue }
                        let want = Dictionary(uniqueKeysWithValues: routed.map { ($0.id, $0.values["last_name"]?.stringValue ?? "") })
                        try await eventually(timeout: 60, "\(node) holds the \(want.count) records HQ routes to it") {
                            let have = try stores[node]!.liveRecords(table: "customers")
                            return Dictionary(uniqueKeysWithValues: have.map { ($0.id, $0.values["last_name"]?.stringValue ?? "") }) == want
                        }
                    }
                }
                let log = balancer.log
                #expect(log.contains("hubs/hub0") && log.contains("hubs/hub1"), "both processes served connections:\n\(log.suffix(2000))")
                _ = hubA
            }
        }
    }
}

import Foundation
import Logging
import Synchronization
import Testing
import TiersyncAgent
import TiersyncAgentCLI
import TiersyncCore
import TiersyncServer
import TiersyncStore
import TiersyncStorage
import TiersyncTestSupport

/// One sample of a scrape: `name{labels} value`.
struct MetricSample: Equatable {
    var name: String
    var labels: [String: String]
    var value: Double
}

/// The samples of a Prometheus text exposition (comments skipped).
func parseMetrics(_ text: String) -> [MetricSample] {
    var out: [MetricSample] = []
    for line in text.split(separator: "\n") where !line.hasPrefix("#") {
        guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
        let series = line[..<space]
        var labels: [String: String] = [:]
        var name = String(series)
        if let brace = series.firstIndex(of: "{") {
            name = String(series[..<brace])
            let inner = series[series.index(after: brace)..<series.index(before: series.endIndex)]
            for pair in inner.split(separator: ",") {
                let parts = pair.split(separator: "=", maxSplits: 1)
                guard parts.count == 2 else { continue }
                labels[String(parts[0])] = String(parts[1].dropFirst().dropLast())
            }
        }
        out.append(MetricSample(name: name, labels: labels, value: value))
    }
    return out
}

extension Array where Element == MetricSample {
    /// The value of the one series of `name` whose labels include `labels`; nil when none.
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        let matching = filter { sample in sample.name == name && labels.allSatisfy { sample.labels[$0.key] == $0.value } }
        return matching.isEmpty ? nil : matching.reduce(0) { $0 + $1.value }
    }
}

/// `promtool` from Debian's `prometheus` package: CI installs it and sets
/// TIERSYNC_TEST_REQUIRE_PROMTOOL=1, so there a missing one fails the test; elsewhere the
/// check is skipped with a note.
func promtoolCheck(_ exposition: String) throws -> String? {
    try promtool(["check", "metrics"], input: exposition)
}

/// Runs promtool with `arguments` (and `input` on its standard input): "" when it succeeds,
/// what it printed when it fails, nil when promtool is not installed (see ``promtoolCheck(_:)``).
func promtool(_ arguments: [String], input exposition: String = "", in directory: String? = nil) throws -> String? {
    let candidates = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
    guard let promtool = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
        if ProcessInfo.processInfo.environment["TIERSYNC_TEST_REQUIRE_PROMTOOL"] == "1" {
            throw TestFailure("promtool is required (TIERSYNC_TEST_REQUIRE_PROMTOOL=1) but not installed: apt-get install prometheus")
        }
        print("note: promtool not installed; `promtool \(arguments.prefix(2).joined(separator: " "))` skipped")
        return nil
    }
    let run = try SpawnedProcess.runToEnd(executable: promtool, arguments: arguments, input: Data(exposition.utf8), currentDirectory: directory)
    let text = String(decoding: run.output, as: UTF8.self)
    return run.status == 0 ? "" : "promtool exit \(run.status): \(text)"
}

@Suite("Observability: metrics, probes, lag reports, JSON logs", .serialized)
struct ObservabilityTests {
    static let bearer = [("Authorization", "Bearer \(RunningHub.metricsToken)")]

    @Test("""
        a node flooding refusals fills only its own share of its tenant's quarantine (the hub's configured quota): every refusal \
        is answered, the rest are counted as not kept, and another tenant's refusals are kept as before
        """, arguments: StorageEngine.testable)
    func quarantineQuota(engine: StorageEngine) async throws {
        var limits = HubConfiguration.Limits()
        limits.quarantine = QuarantineQuota(maxBytesPerSender: 5_000, maxBytes: 1 << 20)
        try await withHubFixture(engine: engine, limits: limits) { f in
            func shoes(_ origin: NodeID, _ seqs: ClosedRange<Int64>) -> [Change] {
                seqs.map { seq in
                    var change = customer(origin, seq, "s-\(seq)", ["note": .string(String(repeating: "x", count: 1_000))])
                    change.table = "shoes"
                    return change
                }
            }
            let flood = try await f.push(shoes("d1", 1...20), as: f.d1)
            #expect(flood.status == 422, "nothing in it could apply")
            #expect(try flood.decode(PushResponse.self).rejected.count == 20, "every refusal is answered with its reason")
            let other = try await f.push(shoes("g1", 1...1), as: f.other)
            #expect(try other.decode(PushResponse.self).rejected.count == 1)

            let acme = try await f.acmeStore().attentionCounts()
            #expect(acme.quarantined >= 3 && acme.quarantined <= 4, "about 1,100 bytes each, 5,000 for d1")
            #expect(acme.quarantineBytes <= 5_000)
            #expect(acme.quarantineUnkept == Int64(20 - acme.quarantined))
            let globex = try await f.hub.tenantStore(for: "globex").attentionCounts()
            #expect(globex.quarantined == 1 && globex.quarantineUnkept == 0, "another tenant's quarantine is its own")

            let samples = parseMetrics(try await f.client.send("GET", "/metrics", headers: Self.bearer).text)
            #expect(samples.value("tiersync_quarantine_unkept_changes", ["tenant": "acme"]) == Double(acme.quarantineUnkept))
            #expect(samples.value("tiersync_quarantine_bytes", ["tenant": "acme"]) == Double(acme.quarantineBytes))
            #expect(samples.value("tiersync_quarantine_unkept_changes", ["tenant": "globex"]) == 0)
        }
    }

    @Test("after a known workload, /metrics counts what the hub answered: changes ingested, duplicate and refused by reason, requests by route and status, quarantine, nodes by state, reported lag; promtool accepts it",
          arguments: StorageEngine.testable)
    func metricsAfterWorkload(engine: StorageEngine) async throws {
        try await withHubFixture(engine: engine) { f in
            // Two pushes from d1: four good changes and one of an unknown table, then the
            // same batch again (a retry), then one pull.
            let batch = PushRequest(through: 5, changes: (1...4).map { customer("d1", Int64($0), "c\($0)", ["owning_dealer": "d1", "last_name": .string("N\($0)")]) }
                                    + [Change(origin: "d1", originSeq: 5, hlc: HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: 0),
                                              table: "no_such_table", recordID: "x", op: .upsert, fields: [:])])
            var statuses: [Int: Int] = [:]
            var applied = 0, duplicates = 0
            for _ in 0..<2 {
                let reply = try await f.client.send("POST", "/v1/push", json: batch, credential: f.d1)
                statuses[reply.status, default: 0] += 1
                let response = try reply.decode(PushResponse.self)
                applied += response.applied
                duplicates += response.duplicates
            }
            #expect(applied == 4)
            let pull = try await f.client.send("GET", "/v1/pull?cursor=0", credential: f.d2)
            #expect(pull.status == 200)
            // d2 reports a backlog of 7, the oldest waiting 5 s.
            let report = try await f.client.send("POST", "/v1/status", json: StatusRequest(reports: [
                LagReport(node: "d2", pending: 7, oldestPendingMillis: 5_000, measuredMillisAgo: 1_000),
            ]), credential: f.d2)
            #expect(report.status == 200)
            #expect(try report.decode(StatusResponse.self).accepted == 1)

            // Sightings reach the catalog in batches, at most a second late.
            try await eventually(timeout: 10, "d1 and d2 count as active (with HQ)") {
                let samples = parseMetrics(try await f.client.send("GET", "/metrics", headers: Self.bearer).text)
                return samples.value("tiersync_nodes", ["tenant": "acme", "state": "active"]) == 3
            }
            let scrape = try await f.client.send("GET", "/metrics", headers: Self.bearer)
            #expect(scrape.status == 200)
            #expect(scrape.headers["content-type"]?.hasPrefix("text/plain; version=0.0.4") == true)
            let samples = parseMetrics(scrape.text)
            let acme = ["tenant": "acme"]
            #expect(samples.value("tiersync_changes_ingested_total", acme) == Double(applied))
            #expect(samples.value("tiersync_changes_duplicate_total", acme) == (duplicates == 0 ? nil : Double(duplicates)))
            let quarantined = try await f.acmeStore().quarantinedChanges(limit: 100)
            #expect(samples.value("tiersync_changes_refused_total", ["tenant": "acme", "reason": "unknown_table"]) == 2)
            #expect(samples.value("tiersync_quarantined_changes", acme) == Double(quarantined.count))
            #expect(samples.value("tiersync_quarantine_bytes", acme) == Double(quarantined.map { $0.change.utf8.count + $0.reason.utf8.count }.reduce(0, +)))
            #expect(samples.value("tiersync_quarantine_unkept_changes", acme) == 0)
            for (status, count) in statuses {
                #expect(samples.value("tiersync_requests_total", ["tenant": "acme", "route": "push", "code": String(status)]) == Double(count))
            }
            #expect(samples.value("tiersync_request_duration_seconds_count", ["tenant": "acme", "route": "push"]) == 2)
            #expect(samples.value("tiersync_request_duration_seconds_count", ["tenant": "acme", "route": "pull"]) == 1)
            #expect(samples.value("tiersync_requests_total", ["tenant": "globex"]) == nil, "globex made no request")
            // acme: d1 and d2 active, and HQ, this hub, while it answers (it counted itself never seen, for good).
            #expect(samples.value("tiersync_nodes", ["tenant": "acme", "state": "active"]) == 3)
            #expect(samples.value("tiersync_nodes", ["tenant": "acme", "state": "never_seen"]) == 0)
            #expect(samples.value("tiersync_node_pending_changes", ["tenant": "acme", "node": "d2"]) == 7)
            let oldest = try #require(samples.value("tiersync_node_oldest_pending_seconds", ["tenant": "acme", "node": "d2"]))
            #expect(oldest >= 6 && oldest < 60, "5 s when measured, 1 s before it was sent, and ageing since: \(oldest)")
            #expect(samples.value("tiersync_node_last_seen_timestamp_seconds", ["tenant": "acme", "node": "d1"]) != nil)
            #expect(samples.value("tiersync_long_poll_waiters", acme) ?? 0 == 0)
            if let problems = try promtoolCheck(scrape.text) { #expect(problems == "", "\(problems)\n\(scrape.text)") }
        }
    }

    @Test("""
        a country node's metrics count the country itself active while it answers, as HQ's count HQ (it counted itself never \
        seen, for good); its mirror of HQ's directory is not written again while HQ's answer stays the same (it was every 2 s, \
        and each node's created_at moved with it)
        """)
    func countryCountsItselfActive() async throws {
        let dir = try TempDir()
        try await withRunning { running in
            // One directory: the country's certificate from the hub's development CA, which the dealer trusts.
            let hub = try await running.hub(directory: dir.path)
            try await hub.catalogStore.createTenant("acme", levels: 3)
            let de = try await running.country(hub: hub, tenant: "acme", node: "de", directory: dir.path)
            let dealer = try await running.agent(enrolling: "de-1", parent: "de", tenant: "acme", hub: hub, parentURL: de.url, directory: dir.path)
            try dealer.store.commit([.upsert("customers", id: "c1", ["last_name": "A"])])
            try await withRawClient(baseURL: de.url, caFile: de.caFile) { client in
                try await eventually(timeout: 20, "de-1 is seen at de") {
                    parseMetrics(try await client.send("GET", "/metrics", headers: Self.bearer).text)
                        .value("tiersync_nodes", ["tenant": "acme", "state": "active"]) == 2
                }
                let samples = parseMetrics(try await client.send("GET", "/metrics", headers: Self.bearer).text)
                #expect(samples.value("tiersync_nodes", ["tenant": "acme", "state": "never_seen"]) == 0)
            }
            // The mirror at rest: refreshed every 500 ms here, written once.
            // Read by another program (Python's sqlite3), as an operator would.
            func version() throws -> (Int64, [Int64]) {
                let read = try SpawnedProcess.runToEnd(executable: "/usr/bin/env", arguments: ["python3", "-c", """
                    import sqlite3, sys
                    db = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
                    print(db.execute("SELECT version FROM catalog_version").fetchone()[0])
                    print(",".join(str(r[0]) for r in db.execute("SELECT created_at FROM nodes ORDER BY id")))
                    """, dir.path + "/de-directory/hub.sqlite"])
                let lines = String(decoding: read.output, as: UTF8.self).split(separator: "\n").map(String.init)
                guard read.status == 0, lines.count == 2, let version = Int64(lines[0]) else { throw TestFailure("cannot read the mirror: \(lines)") }
                return (version, lines[1].split(separator: ",").compactMap { Int64($0) })
            }
            let before = try version()
            try await Task.sleep(for: .seconds(2))
            let after = try version()
            #expect(before == after, "\(before) → \(after)")
            // A change at HQ is mirrored at once.
            _ = try await running.agent(enrolling: "de-2", parent: "de", tenant: "acme", hub: hub, parentURL: de.url, directory: dir.path)
            try await eventually(timeout: 20, "de-2 mirrored") { try version().1.count == after.1.count + 1 }
            #expect(try version().0 > after.0)
            #expect(Array(try version().1.prefix(after.1.count)) == after.1, "de and de-1 keep their created_at")
        }
    }

    @Test("a long-poll counts as a waiter while it waits, and no longer once answered")
    func longPollWaiters() async throws {
        try await withHubFixture { f in
            let waiting = Task { try await f.client.send("GET", "/v1/pull?cursor=0&wait=20", credential: f.d2) }
            try await eventually(timeout: 10, "the long-poll shows as a waiter") {
                let samples = parseMetrics(try await f.client.send("GET", "/metrics", headers: Self.bearer).text)
                return samples.value("tiersync_long_poll_waiters", ["tenant": "acme", "feed": "changes"]) == 1
            }
            let push = try await f.client.send("POST", "/v1/push", json: PushRequest(through: 1, changes: [customer("d1", 1, "c1", ["owning_dealer": "d1", "servicing_dealer": "d2", "last_name": .string("A")])]),
                                               credential: f.d1)
            #expect(push.status == 200)
            #expect(try await waiting.value.status == 200)
            let samples = parseMetrics(try await f.client.send("GET", "/metrics", headers: Self.bearer).text)
            #expect(samples.value("tiersync_long_poll_waiters", ["tenant": "acme", "feed": "changes"]) == 0)
        }
    }

    @Test("/metrics needs the metrics token: no header, a wrong token or a node's credential are 401 and reveal nothing")
    func metricsNeedTheToken() async throws {
        try await withHubFixture { f in
            for headers in [[], [("Authorization", "Bearer wrong-token-123456789")], [("Authorization", "Bearer \(f.d1)")]] as [[(String, String)]] {
                let reply = try await f.client.send("GET", "/metrics", headers: headers)
                #expect(reply.status == 401)
                #expect(!reply.text.contains("acme") && !reply.text.contains("tiersync_"))
            }
        }
    }

    @Test("lag reports: a node reports itself and its subtree only (403 alike for a sibling and a node that does not exist, before any number is read); numbers out of range are 422; deep nesting is 400")
    func statusReportsAreScoped() async throws {
        try await withHubFixture { f in
            let sibling = try await f.client.send("POST", "/v1/status", json: StatusRequest(reports: [LagReport(node: "d2", pending: -1, oldestPendingMillis: 0)]), credential: f.d1)
            let missing = try await f.client.send("POST", "/v1/status", json: StatusRequest(reports: [LagReport(node: "nobody", pending: -1, oldestPendingMillis: 0)]), credential: f.d1)
            #expect(sibling.status == 403 && missing.status == 403)
            #expect(sibling.error?.code == "forbidden" && missing.error?.code == "forbidden")
            #expect(sibling.error?.message.replacingOccurrences(of: "d2", with: "X") == missing.error?.message.replacingOccurrences(of: "nobody", with: "X"))
            let negative = try await f.client.send("POST", "/v1/status", json: StatusRequest(reports: [LagReport(node: "d1", pending: -1, oldestPendingMillis: 0)]), credential: f.d1)
            #expect(negative.status == 422 && negative.error?.code == "invalid_report")
            let offOffset = try await f.client.send("POST", "/v1/status", json: StatusRequest(reports: [LagReport(node: "d1", pending: 0, oldestPendingMillis: 0, clockOffsetMillis: .min)]), credential: f.d1)
            #expect(offOffset.status == 422 && offOffset.error?.code == "invalid_report")
            let huge = try await f.client.send("POST", "/v1/status", body: Data(#"{"reports":[{"node":"d1","pending":1e300,"oldestPendingMillis":0,"measuredMillisAgo":0}]}"#.utf8), credential: f.d1)
            #expect(huge.status == 400)
            let deep = String(repeating: "[", count: 100_000)
            let nested = try await f.client.send("POST", "/v1/status", body: Data(#"{"x":\#(deep)}"#.utf8), credential: f.d1)
            #expect(nested.status == 400)
            let catalogLags = try await f.hub.server.directory.lags(of: "acme")
            #expect(catalogLags.isEmpty, "nothing was stored: \(catalogLags)")
            // An older measurement than the one held does not replace it.
            _ = try await f.client.send("POST", "/v1/status", json: StatusRequest(reports: [LagReport(node: "d1", pending: 3, oldestPendingMillis: 10, measuredMillisAgo: 0)]), credential: f.d1)
            let stale = try await f.client.send("POST", "/v1/status", json: StatusRequest(reports: [LagReport(node: "d1", pending: 99, oldestPendingMillis: 10, measuredMillisAgo: 60_000)]), credential: f.d1)
            #expect(try stale.decode(StatusResponse.self).accepted == 0)
            #expect(try await f.hub.server.directory.lags(of: "acme")["d1"]?.pending == 3)
        }
    }

    @Test("a dealer's backlog reaches HQ through its country: the dealer reports to the country, the country relays it with its own", arguments: StorageEngine.testable)
    func lagReachesHQThroughTheCountry(engine: StorageEngine) async throws {
        let dir = try TempDir()
        try await withHubDatabase(engine) { postgres in
            try await withRunning { running in
                let hub = try await running.hub(directory: dir.path, postgres: postgres)
                try await hub.catalogStore.createTenant("acme", levels: 3)
                let de = try await running.country(hub: hub, tenant: "acme", node: "de", directory: dir.path)
                // The dealer enrolls but its agent does not run: its writes wait, unsent.
                let store = try NodeStore(path: "\(dir.path)/de-1.sqlite")
                let configuration = AgentConfiguration(parentURL: de.url, caFile: hub.caFile)
                try await SyncAgent.enroll(store: store, configuration: configuration,
                                           token: try await hub.catalogStore.issueEnrollmentToken(tenant: "acme", node: "de-1", parent: "de"))
                try store.commit((0..<12).map { .upsert("customers", id: "c\($0)", ["last_name": .string("N\($0)")]) })
                // The dealer measured its clock 12.3 s ahead of the country's (a clock_skew refusal).
                try store.recordClockOffset(ClockOffset(offsetMillis: 12_345, measuredAtMillis: WallClock.nowMillis()))
                let agent = try SyncAgent(store: store, configuration: configuration)
                try await withSyncAgents(agent) {
                    #expect(try await agent.reportStatus() == 1)
                    try await eventually(timeout: 30, "HQ holds the dealer's backlog and clock offset, relayed by its country") {
                        let lag = try await hub.server.directory.lags(of: "acme")["de-1"]
                        return lag?.pending == 12 && lag?.clockOffsetMillis == 12_345
                    }
                    let lags = try await hub.server.directory.lags(of: "acme")
                    #expect(lags["de"]?.pending == 0, "the country reports its own (empty) backlog too: \(lags)")
                    // HQ never sees the dealer; its report, relayed, is a sighting (it was counted never seen).
                    let dealer = try #require(try await hub.catalogStore.node("de-1", of: "acme"))
                    #expect(NodeState(dealer, now: WallClock.nowMillis()) == .active, "\(dealer)")
                    #expect(lags["de"]?.clockOffsetMillis == nil, "the country measured no offset: \(lags)")
                    // An offset measured more than an hour ago is no longer reported (the clock may have been set right since).
                    try store.recordClockOffset(ClockOffset(offsetMillis: 12_345, measuredAtMillis: WallClock.nowMillis() - 2 * 3_600_000))
                    #expect(try await agent.lagReports().first?.clockOffsetMillis == nil)
                    #expect(try await hub.server.directory.lags(of: "acme")["de-1"]!.oldestPendingMillis(at: WallClock.nowMillis()) >= 0)
                }
            }
        }
    }

    @Test("ops/prometheus: the scrape config is valid, the alert rules load, and their unit tests pass (a silent node, a lagging node, a growing quarantine, a hub down)")
    func prometheusOpsFiles() throws {
        let dir = repositoryRoot() + "/ops/prometheus"
        for arguments in [["check", "config", "--syntax-only", "prometheus.yml"], ["check", "rules", "tiersync-alerts.yml"],
                          ["test", "rules", "tiersync-alerts.test.yml"]] {
            if let problems = try promtool(arguments, in: dir) { #expect(problems == "", "promtool \(arguments.joined(separator: " ")): \(problems)") }
        }
    }

    @Test("""
        /healthz answers while the process runs; /readyz is 503 while the catalog cannot be written and 200 again after (one \
        check a second serves every probe); no probe is rate limited: not after failed logins from the same address, nor in a \
        burst (a load balancer sharing its address with bad credentials got 429 and took the hub out; helper 108)
        """)
    func probes() async throws {
        try await withHubFixture { f in
            #expect(try await f.client.send("GET", "/healthz").status == 200)
            #expect(try await f.client.send("GET", "/readyz").status == 200)
            // Another process holds the catalog's write lock (as a stuck admin command would).
            let blocker = try DatabaseLock(path: f.hub.catalog.directory + "/hub.sqlite")
            var blocked = try await f.client.send("GET", "/readyz")
            try await eventually(timeout: 15, "/readyz says the stores cannot be written") {
                blocked = try await f.client.send("GET", "/readyz")
                return blocked.status == 503
            }
            #expect(blocked.text.contains("stores_writable") && !blocked.text.contains("acme"))
            blocker.release()
            try await eventually(timeout: 15, "/readyz ready again") { try await f.client.send("GET", "/readyz").status == 200 }

            // This address spends its public requests' budget on bad credentials.
            for _ in 0..<30 { _ = try await f.client.send("GET", "/v1/whoami", credential: "tsc_not_a_credential") }
            #expect(try await f.client.send("POST", "/v1/enroll", json: ["token": "tse_nothing", "node": "x"]).status == 429,
                    "the address's budget is spent")
            let probes = try await withThrowingTaskGroup(of: Int.self) { group in
                for i in 0..<90 { group.addTask { try await f.client.send("GET", ["/healthz", "/readyz", "/v1/health"][i % 3]).status } }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(probes.count == 90 && probes.allSatisfy { $0 == 200 }, "\(Dictionary(grouping: probes, by: { $0 }).mapValues(\.count))")
        }
    }

    @Test("--log-format json: one JSON object per line, and every line a request writes carries its request_id, the one answered in X-Request-Id")
    func jsonLogsCarryTheRequestID() async throws {
        let lines = Mutex<[String]>([])
        let logger = Logger(label: "tiersync.hub") { label in
            var handler = JSONLogHandler(label: label) { line in lines.withLock { $0.append(line) } }
            handler.logLevel = .info
            return handler
        }
        let dir = try TempDir()
        try await withRunning { running in
            let hub = try await running.hub(directory: dir.path, logger: logger)
            let client = running.client(hub)
            let d1 = try await hub.enroll(tenant: "acme", node: "d1", client: client)
            let bad = Change(origin: "d1", originSeq: 1, hlc: HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: 0),
                             table: "no_such_table", recordID: "x", op: .upsert, fields: [:])
            let reply = try await client.send("POST", "/v1/push", json: PushRequest(through: 1, changes: [bad]), credential: d1)
            #expect(reply.status == 422)
            let id = try #require(reply.headers["x-request-id"])
            let logged = lines.withLock { $0 }
            let objects = try logged.map { try #require(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: String], "not a JSON object: \($0)") }
            #expect(logged.allSatisfy { $0.hasSuffix("}\n") && $0.filter { $0 == "\n" }.count == 1 })
            let quarantined = try #require(objects.first { $0["message"] == "changes quarantined" })
            #expect(quarantined["request_id"] == id)
            #expect(quarantined["level"] == "warning" && quarantined["tenant"] == "acme")
            #expect(quarantined["ts"]?.hasSuffix("Z") == true)
        }
    }
}

/// Holds SQLite's write lock on a database from another connection until released.
final class DatabaseLock: Sendable {
    private let process: SpawnedProcess
    /// The child's stdin: closing it lets the lock go.
    private let input: FileHandle

    /// Runs Python's `sqlite3` in a child process, as another program on the machine would.
    init(path: String) throws {
        let stdin = try SpawnedProcess.pipe(), stdout = try SpawnedProcess.pipe()
        do {
            defer {
                close(stdin.read)
                close(stdout.write)
            }
            process = try SpawnedProcess(executable: "/usr/bin/python3", arguments: ["-c", """
                import sqlite3, sys
                db = sqlite3.connect(sys.argv[1], isolation_level=None)
                db.execute('BEGIN IMMEDIATE')
                print('locked', flush=True)
                sys.stdin.read()
                db.execute('ROLLBACK')
                """, path], stdin: stdin.read, stdout: stdout.write, stderr: 2)
        } catch {
            close(stdin.write)
            close(stdout.read)
            throw error
        }
        input = FileHandle(fileDescriptor: stdin.write, closeOnDealloc: true)
        guard SpawnedProcess.readFirstLine(closing: stdout.read).contains("locked") else {
            try? input.close()
            process.waitUntilExit()
            throw TestFailure("could not lock \(path)")
        }
    }

    func release() {
        try? input.close()
        process.waitUntilExit()
    }
}

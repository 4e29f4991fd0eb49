import Foundation
import Logging
import Testing
import TiersyncAgent
import TiersyncCore
import TiersyncPostgres
import TiersyncStore
import TiersyncTestSupport

/// A hub restored from an older backup while its agents keep going: they notice, re-send
/// what the hub lost and pull again, so nothing is lost and nothing is held twice.
@Suite("Restored hub", .serialized)
struct RestoredHubTests {
    static let dealers: [NodeID] = ["d1", "d2"]

    @Test("""
    Hub restored from a backup taken mid-way: agents re-send what it lost (their log entries, and those folded into their \
    records since the hub acknowledged them) and pull again; every dealer equals HQ, HQ holds no change twice and every \
    record as its dealer last wrote it
    """,
          arguments: StorageEngine.testable)
    func restoredHub(engine: StorageEngine) async throws {
        let dir = try TempDir()
        try await Self.withRestorableHub(engine, dir: dir) { start, backup, restore in
            try await scenario(dir: dir, start: start, backup: backup, restore: restore)
        }
    }

    /// Runs `body` with how a hub of `engine` in `dir` is started on a port (0: any), backed
    /// up and restored, each as docs/OPERATIONS.md says.
    static func withRestorableHub(_ engine: StorageEngine, dir: TempDir,
                                  _ body: (_ start: @escaping (Int) async throws -> RunningHub, _ backup: () async throws -> Void,
                                           _ restore: () async throws -> Void) async throws -> Void) async throws {
        switch engine {
        case .sqlite:
            try await body({ port in try await RunningHub(directory: dir.path, port: port) },
                           { try StoreBackup.backupHub(dataDirectory: dir.path + "/hub", to: dir.path + "/backup") },
                           { try Self.restoreSQLite(backup: dir.path + "/backup", data: dir.path + "/hub") })
        case .postgres:
            try await TestPostgres.withFreshDatabase { endpoint in
                let dump = dir.path + "/hub.dump"
                try await body({ port in try await RunningHub(directory: dir.path, port: port, postgres: endpoint) },
                               { try await Self.postgresTool("pg_dump", ["-Fc", "-f", dump, "-d", endpoint.url]) },
                               {
                                   // --clean drops what the dump holds before recreating it: the
                                   // database as of the dump, rows written since gone.
                                   try await Self.postgresTool("pg_restore", ["--clean", "--if-exists", "--no-owner", "--single-transaction",
                                                                              "-d", endpoint.url, dump])
                               })
            }
        }
    }

    /// Two dealers write and sync; `backup` runs mid-way; they write and sync on; the hub is
    /// stopped, `restore`d and started again on its port while they keep writing.
    private func scenario(dir: TempDir, start: @escaping (Int) async throws -> RunningHub,
                          backup: () async throws -> Void, restore: () async throws -> Void) async throws {
        var hub = try await start(0)
        let port = hub.port
        var stopped = false
        try await withTeardown({ if !stopped { await hub.stop() } }) {
            _ = try await hub.catalogStore.createTenant("acme")
            // Each compacts its store often: what HQ acknowledged is folded into the records
            // (gone from the log) by the time of the restore, and must be re-sent from there.
            let (stores, configurations) = try await Self.enrollDealers(at: hub, dir: dir,
                                                                        retention: RetentionPolicy(horizon: .seconds(30 * 86_400), interval: .milliseconds(200)))
            var agents: [NodeID: SyncAgent] = [:]
            for node in Self.dealers {
                agents[node] = try SyncAgent(store: stores[node]!, configuration: configurations[node]!, logger: Logger(label: "tiersync.agent.\(node)"))
            }
            let running = agents.values.map { agent in Task { try await agent.run() } }
            try await withTeardown({ for task in running { task.cancel(); _ = await task.result } }) {
                let base = try await hub.tenantStore(for: "acme").feedHead()
                // Each dealer's customers are serviced by the other: both directions of sync matter.
                func write(_ range: Range<Int>) throws {
                    for (i, node) in Self.dealers.enumerated() {
                        let other = Self.dealers[(i + 1) % Self.dealers.count]
                        for k in range {
                            try stores[node]!.commit([.upsert("customers", id: "\(node)-c\(k % 60)",
                                                              ["last_name": .string("\(node) \(k)"), "servicing_dealer": .string(other.rawValue)])])
                        }
                    }
                }
                /// The dealers' own changes: each numbers its changes 1, 2, 3, … (its log no longer
                /// holds those folded into records).
                func ownChanges() async throws -> Int {
                    var total: Int64 = 0
                    for node in Self.dealers { total += try await stores[node]!.highestSeq(of: node) }
                    return Int(total)
                }
                /// Every dealer's changes at HQ at most once (all of them until the restore; after
                /// it, those a dealer purged as superseded before re-sending are not re-sent: no
                /// replica holds their values), HQ holding each dealer's latest, and every dealer
                /// holding what HQ routes to it, as HQ has it.
                func converged(_ what: String, everyChange: Bool, routedCount: Int = 120) async throws {
                    let store = try await hub.tenantStore(for: "acme")
                    try await eventually(timeout: 60, "\(what): HQ holds every dealer change once") {
                        let held = try await store.feedHead() - base, own = Int64(try await ownChanges())
                        var latest = true
                        for node in Self.dealers where try await store.highestSeq(of: node) < stores[node]!.highestSeq(of: node) { latest = false }
                        return everyChange ? held == own : held <= own && latest
                    }
                    for node in Self.dealers {
                        let own = try await stores[node]!.highestSeq(of: node)
                        #expect(try await store.highestSeq(of: node) >= own, "\(what): \(node)'s changes at HQ")
                    }
                    let held = try await store.liveRecords(inTable: "customers")
                    for node in Self.dealers {
                        let routed = held.filter { $0.values["owning_dealer"]?.stringValue == node.rawValue || $0.values["servicing_dealer"]?.stringValue == node.rawValue }
                        let want = Dictionary(uniqueKeysWithValues: routed.map { ($0.id, $0.values) })
                        #expect(want.count == routedCount, "\(what): HQ routes both dealers' customers to \(node)")
                        try await eventually(timeout: 60, "\(what): \(node) holds the \(want.count) records HQ routes to it, as HQ has them") {
                            let have = try stores[node]!.liveRecords(table: "customers")
                            return Dictionary(uniqueKeysWithValues: have.map { ($0.id, $0.values) }) == want
                        }
                    }
                }

                try write(0..<60)
                try await converged("before the backup", everyChange: true)
                try await backup()
                // After the backup: what the restored hub will have lost.
                try write(60..<120)
                // Customers written once, after the backup, and never again: the restored hub
                // has none of them, and by then their dealers hold them only folded.
                for node in Self.dealers {
                    try stores[node]!.commit((0..<10).map { .upsert("customers", id: "\(node)-late\($0)", ["last_name": .string("Late \($0)")]) })
                }
                try await converged("after the backup", everyChange: true, routedCount: 130)
                // HQ writes too after the backup (a car for each dealer): the restored hub loses
                // these, which the dealers hold, numbered as HQ's changes.
                @discardableResult
                func hqWrites(_ name: String) async throws -> [Int64] {
                    let made = try await hub.tenantStore(for: "acme").writeAsHub(Self.dealers.map {
                        .upsert("vehicles", id: "\(name)-\($0)", ["kind": "vehicle", "model": .string(name), "owning_dealer": .string($0.rawValue)])
                    })
                    try await eventually(timeout: 60, "every dealer holds HQ's \(name) car") {
                        try Self.dealers.allSatisfy { try stores[$0]!.record(table: "vehicles", id: "\(name)-\($0)") != nil }
                    }
                    return made.map(\.originSeq)
                }
                let lostHQWrites = try await hqWrites("hq-lost")
                let lost = try await hub.tenantStore(for: "acme").feedHead()
                try await eventually(timeout: 20, "the dealers fold what HQ acknowledged") {
                    try Self.dealers.allSatisfy { try stores[$0]!.foldedCounts().entries >= 30 }
                }

                await hub.stop()
                stopped = true
                try write(120..<140)
                try await restore()
                hub = try await start(port)
                stopped = false
                let restoredHead = try await hub.tenantStore(for: "acme").feedHead()
                #expect(restoredHead < lost, "the restored hub lost the changes written after the backup (head \(restoredHead), was \(lost))")
                try write(140..<180)
                try await converged("after the restore", everyChange: false, routedCount: 130)
                for (node, agent) in agents {
                    #expect(agent.status.parentRestores >= 1, "\(node)'s agent noticed the restore")
                    // One restore, counted once (the pull side and the push side each found it,
                    // and it counted twice when the first side's recovery was over first: helper 99).
                    #expect(try stores[node]!.parentRestores()?.count == 1, "\(node)'s store keeps it for status, once")
                }
                let shown = try await tiersync(["status", "--db", stores[Self.dealers[0]]!.path], cwd: dir.path)
                #expect(shown.status == 0 && shown.out.contains("restores:    the parent was found restored from an older backup"), "\(shown)")
                // HQ's next writes are numbered after those the dealers hold (their agents told it
                // when they reached it again), not like them: a dealer holding hq#1 refuses
                // another hq#1 as a reused identity (here compaction had folded it away).
                let newHQWrites = try await hqWrites("hq-new")
                #expect(newHQWrites.min() ?? 0 > lostHQWrites.max() ?? 0, "HQ numbered \(newHQWrites) after losing \(lostHQWrites)")
            }
        }
    }

    @Test("""
    A dealer away across a restore, whose pull cursor the restored hub's log grew past again, has that cursor refused \
    (its log history was lost) and pulls again: it gets every record numbered at positions it had passed; a plain \
    restart of the hub refuses no one's cursor
    """,
          arguments: StorageEngine.testable)
    func awayAcrossRestore(engine: StorageEngine) async throws {
        let dir = try TempDir()
        try await Self.withRestorableHub(engine, dir: dir) { start, backup, restore in
            try await awayScenario(dir: dir, start: start, backup: backup, restore: restore)
        }
    }

    /// d1 writes customers serviced by d2; the hub restarts once (nothing lost); a backup is
    /// taken; d1 writes on and d2 pulls it all; both go away; the hub is restored, answers a
    /// pull naming the backup's newest history first, HQ writes cars for d2 (which take the
    /// positions d2 had pulled through) and d1 re-sends what the hub lost, so the log's head
    /// passes d2's cursor again before d2 comes back.
    private func awayScenario(dir: TempDir, start: @escaping (Int) async throws -> RunningHub,
                              backup: () async throws -> Void, restore: () async throws -> Void) async throws {
        var hub = try await start(0)
        let port = hub.port
        var stopped = false
        try await withTeardown({ if !stopped { await hub.stop() } }) {
            _ = try await hub.catalogStore.createTenant("acme")
            let (stores, configurations) = try await Self.enrollDealers(at: hub, dir: dir, retention: nil)
            var running: [NodeID: (agent: SyncAgent, task: Task<Void, any Error>)] = [:]
            func run(_ node: NodeID) throws {
                let agent = try SyncAgent(store: stores[node]!, configuration: configurations[node]!, logger: Logger(label: "tiersync.agent.\(node)"))
                running[node] = (agent, Task { try await agent.run() })
            }
            func halt(_ node: NodeID) async {
                guard let (_, task) = running.removeValue(forKey: node) else { return }
                task.cancel()
                _ = await task.result
            }
            try await withTeardown({ for node in Self.dealers { await halt(node) } }) {
                func write(_ range: Range<Int>) throws {
                    for k in range {
                        try stores["d1"]!.commit([.upsert("customers", id: "c\(k)", ["last_name": .string("Customer \(k)"), "servicing_dealer": "d2"])])
                    }
                }
                func d2Holds(customers: Int, cars: Int = 0, _ what: String) async throws {
                    try await eventually(timeout: 60, "\(what): d2 holds \(customers) customers and \(cars) cars") {
                        try stores["d2"]!.liveRecords(table: "customers").count == customers && stores["d2"]!.liveRecords(table: "vehicles").count == cars
                    }
                }
                for node in Self.dealers { try run(node) }
                try write(0..<20)
                try await d2Holds(customers: 20, "first sync")

                // A restart begins a new log history; every cursor handed out before stays good.
                await hub.stop()
                hub = try await start(port)
                try write(20..<30)
                try await d2Holds(customers: 30, "after a plain restart")
                for (node, (agent, _)) in running {
                    #expect(agent.status.parentRestores == 0, "\(node)'s agent took a plain restart for a restore")
                    #expect(try agent.store.parentRestores() == nil)
                }

                try await backup()
                try write(30..<50)
                try await d2Holds(customers: 50, "after the backup")
                let cursor = try stores["d2"]!.cursor("pull.parent")
                for node in Self.dealers { await halt(node) }

                await hub.stop()
                stopped = true
                try await restore()
                hub = try await start(port)
                stopped = false
                let restoredHead = try await hub.tenantStore(for: "acme").feedHead()
                #expect(restoredHead < cursor, "the restored hub's log is behind d2's cursor (head \(restoredHead), cursor \(cursor))")
                // Before anything is numbered again, a pull with d2's cursor and history (as a node
                // still online would send first): the restored hub must not take the backup's
                // newest history for its own, then or later.
                let credential = try #require(try stores["d2"]!.meta(.credential))
                let history = try #require(try stores["d2"]!.meta("pull.history"))
                try await withRawClient(hub) { client in
                    let early = try await client.send("GET", "/v1/pull?cursor=\(cursor)&history=\(history)", credential: credential)
                    #expect(early.status == 409 && early.error?.code == LogHistoryLost.code,
                            "the first pull after the restore, with the backup's newest history: \(early.status) \(early.text.prefix(200))")
                }
                // HQ's cars for d2 take the positions after the backup's head, which d2 had pulled
                // through; d1 comes back and re-sends what the hub lost.
                _ = try await hub.tenantStore(for: "acme").writeAsHub((0..<40).map {
                    .upsert("vehicles", id: "car\($0)", ["kind": "vehicle", "model": .string("Car \($0)"), "owning_dealer": "d2"])
                })
                try run("d1")
                try await eventually(timeout: 60, "d1 re-sends what the restored hub lost") {
                    try await hub.tenantStore(for: "acme").highestSeq(of: "d1") >= stores["d1"]!.highestSeq(of: "d1")
                }
                let head = try await hub.tenantStore(for: "acme").feedHead()
                #expect(head > cursor, "the log grew past d2's cursor again (head \(head), cursor \(cursor)): the head cannot show the restore")
                try run("d2")
                try await d2Holds(customers: 50, cars: 40, "d2 back")
                #expect(running["d2"]!.agent.status.parentRestores >= 1, "d2's agent noticed the restore")
            }
        }
    }

    /// Enrolls `dealers` at `hub` (tenant acme), each with its store in `dir` and an agent
    /// configuration that retries fast and writes only the dealers' changes into HQ's log (no
    /// rules, governance or KPIs).
    static func enrollDealers(at hub: RunningHub, dir: TempDir, retention: RetentionPolicy?) async throws
        -> (stores: [NodeID: NodeStore], configurations: [NodeID: AgentConfiguration]) {
        var stores: [NodeID: NodeStore] = [:]
        var configurations: [NodeID: AgentConfiguration] = [:]
        for node in dealers {
            let store = try NodeStore(path: "\(dir.path)/\(node).sqlite")
            var configuration = AgentConfiguration(parentURL: hub.url, caFile: hub.caFile)
            configuration.localPollInterval = .milliseconds(50)
            configuration.pullWaitSeconds = 2
            configuration.retryInitial = .milliseconds(100)
            configuration.retryMax = .milliseconds(500)
            configuration.rulesInterval = nil
            configuration.followGovernance = false
            configuration.retention = retention
            try await SyncAgent.enroll(store: store, configuration: configuration,
                                       token: try await hub.catalogStore.issueEnrollmentToken(tenant: "acme", node: node))
            stores[node] = store
            configurations[node] = configuration
        }
        return (stores, configurations)
    }

    /// Restore as documented: the hub stopped, its databases replaced by the backup's (and
    /// the old write-ahead logs removed, which belong to the replaced files).
    static func restoreSQLite(backup: String, data: String) throws {
        let files = FileManager.default
        let tenants = try files.contentsOfDirectory(atPath: data + "/tenants")
        for file in tenants where file.contains(".sqlite") { try files.removeItem(atPath: "\(data)/tenants/\(file)") }
        for suffix in ["", "-wal", "-shm"] where files.fileExists(atPath: data + "/hub.sqlite" + suffix) {
            try files.removeItem(atPath: data + "/hub.sqlite" + suffix)
        }
        try files.copyItem(atPath: backup + "/hub.sqlite", toPath: data + "/hub.sqlite")
        for file in try files.contentsOfDirectory(atPath: backup + "/tenants") {
            try files.copyItem(atPath: "\(backup)/tenants/\(file)", toPath: "\(data)/tenants/\(file)")
        }
    }

    /// Runs a PostgreSQL client program (pg_dump, pg_restore) from Debian's packages.
    static func postgresTool(_ name: String, _ arguments: [String]) async throws {
        let binaries = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        guard let version = binaries.sorted(by: { (Int($0) ?? 0) > (Int($1) ?? 0) }).first(where: {
            FileManager.default.isExecutableFile(atPath: "/usr/lib/postgresql/\($0)/bin/\(name)")
        }) else { throw TestFailure("\(name) not found under /usr/lib/postgresql/*/bin") }
        // On a thread of its own, not blocking a cooperative thread.
        let run = try await SpawnedProcess.runToEndAsync(executable: "/usr/lib/postgresql/\(version)/bin/\(name)", arguments: arguments)
        let status = run.status, message = String(decoding: run.output, as: UTF8.self)
        guard status == 0 else { throw TestFailure("\(name) failed (\(status)): \(message)") }
    }
}

/// The wire fields a restore is noticed by, as the OpenAPI document describes them.
@Suite("Restored hub wire")
struct RestoredHubWireTests {
    @Test("whoami?held=true answers what the hub holds of the caller; a push answers what it held before the batch; a cursor past the head answers at once; a cursor of a log history the hub lost is refused; openapi.yaml documents them",
          arguments: StorageEngine.testable)
    func heldFields(engine: StorageEngine) async throws {
        let dir = try TempDir()
        try await withRunningHub(engine: engine, directory: dir.path) { hub in
            try await withRawClient(hub) { client in
                let d1 = try await hub.enroll(tenant: "acme", node: "d1", client: client)
                let plain = try await client.send("GET", "/v1/whoami", credential: d1).decode(WhoAmIResponse.self)
                #expect(plain.held == nil, "only when asked")
                #expect(try await client.send("GET", "/v1/whoami?held=true", credential: d1).decode(WhoAmIResponse.self).held == ["d1": 0])
                let store = try NodeStore(path: dir.path + "/d1.sqlite")
                try store.completeEnrollment(NodeIdentity(tenant: "acme", node: "d1", parent: "hq"), credential: d1, parentURL: hub.url, highestKnownSeq: 0)
                try store.commit((0..<3).map { .upsert("customers", id: "c\($0)", ["last_name": "x"]) })
                let batch = try store.upstreamBatch(after: 0, limit: 10)
                let first = try await client.send("POST", "/v1/push", json: PushRequest(through: batch[1].seq, changes: batch[0...1].map(\.change)),
                                                  credential: d1).decode(PushResponse.self)
                #expect(first.held == ["d1": 0], "held before the batch")
                let second = try await client.send("POST", "/v1/push", json: PushRequest(through: batch[2].seq, changes: [batch[2].change]),
                                                   credential: d1).decode(PushResponse.self)
                #expect(second.held == ["d1": 2])
                #expect(try await client.send("GET", "/v1/whoami?held=true", credential: d1).decode(WhoAmIResponse.self).held == ["d1": 3])
                // What the agent does with them: nothing lost here, so nothing to re-send…
                #expect(try store.pushRewind(held: ["d1": 3], acknowledgedThrough: batch[2].seq) == nil)
                // …and after a restore that kept only the first change, everything after it.
                #expect(try store.pushRewind(held: ["d1": 1], acknowledgedThrough: batch[2].seq) == batch[0].seq)

                let started = ContinuousClock.now
                // The longest wait a node may ask for, so "at once" stays far from it even when the
                // machine is busy with other suites (a 10 s wait and a 5 s bound were too close).
                let page = try await client.send("GET", "/v1/pull?cursor=1000&wait=60", credential: d1).decode(PullResponse.self)
                #expect(page.head.map { $0 < 1000 } == true && page.changes.isEmpty)
                #expect(ContinuousClock.now - started < .seconds(30), "answered at once, not after the wait")

                // The log's history: named by every page once the hub serves its log, sent back
                // with the cursor; one this hub never had loses every position but 0.
                let served = try await client.send("GET", "/v1/pull?cursor=0", credential: d1).decode(PullResponse.self)
                let history = try #require(served.history, "a page names the log's history")
                #expect(PullResponse.isValidHistory(history))
                let again = try await client.send("GET", "/v1/pull?cursor=\(served.nextCursor)&history=\(history)", credential: d1)
                #expect(again.status == 200)
                #expect(try again.decode(PullResponse.self).history == history, "its own history: served")
                let other = history == "abc" ? "abd" : "abc"
                let lost = try await client.send("GET", "/v1/pull?cursor=\(served.nextCursor)&history=\(other)", credential: d1)
                #expect(lost.status == 409 && lost.error?.code == LogHistoryLost.code, "a history this hub never had: \(lost.status) \(lost.text)")
                #expect(try await client.send("GET", "/v1/pull?cursor=0&history=\(other)", credential: d1).status == 200, "from 0 nothing is lost")
                for bad in ["ABC", "x1", String(repeating: "a", count: 33), "%00"] {
                    let refused = try await client.send("GET", "/v1/pull?cursor=1&history=\(bad)", credential: d1)
                    #expect(refused.status == 400 && refused.error?.code == "invalid_parameter", "history=\(bad): \(refused.status)")
                }
            }
        }
        let text = try String(contentsOfFile: repositoryRoot() + "/openapi.yaml", encoding: .utf8)
        #expect(text.contains("- name: held") && text.components(separatedBy: "        held:\n          type: object").count == 3,
                "openapi.yaml documents the held parameter and both held fields")
        #expect(text.contains("- name: history") && text.contains(LogHistoryLost.code) && text.contains("        history:\n          type: string"),
                "openapi.yaml documents the history parameter, the page's history and the 409")
    }
}

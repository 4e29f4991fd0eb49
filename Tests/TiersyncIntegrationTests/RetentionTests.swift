import Foundation
import Testing
import TiersyncAgent
import TiersyncCore
import TiersyncPostgres
import TiersyncStore
import TiersyncTestSupport

/// Bounded storage through the running system (docs/PRIVACY.md, "Bounded storage"): the
/// hub purges what every replica acknowledged, and a dealer away past the horizon is told
/// to re-bootstrap and does, losing nothing it had not sent. The horizon is scaled down to
/// seconds.
@Suite("Retention")
struct RetentionTests {
    /// Four seconds: long enough that a dealer's pull lagging on a loaded machine (the whole
    /// suite runs at once) is not taken for a dealer away past the horizon.
    static let policy = RetentionPolicy(horizon: .seconds(4), interval: .milliseconds(300))

    @Test("""
    HQ's log keeps no entry its dealers pulled (superseded ones go, current ones fold into their records); a dealer away past the horizon is answered 410 rebootstrap_required, \
    re-bootstraps by itself, drops the record deleted meanwhile (whose tombstone HQ purged) and sends its offline edit and record
    """)
    func awayPastTheHorizon() async throws {
        let dir = try TempDir()
        try await withRunning { running in
            let hub = try await running.hub(directory: dir.path, retention: Self.policy)
            try hub.catalog.createTenant("acme")
            let d1 = try await running.agent(enrolling: "d1", parent: "hq", tenant: "acme", hub: hub, parentURL: hub.url, directory: dir.path,
                                                retention: Self.policy)
            let d2 = try await running.agent(enrolling: "d2", parent: "hq", tenant: "acme", hub: hub, parentURL: hub.url, directory: dir.path,
                                                retention: Self.policy)
            let hq = try hub.stores.store(for: "acme")
            try hq.commit([
                .upsert("customers", id: "c-1", ["last_name": "Doomed", "owning_dealer": "d1"]),
                .upsert("customers", id: "c-2", ["last_name": "Kept", "owning_dealer": "d1"]),
            ])
            try await eventually(timeout: 20, "d1 holds both") {
                try d1.store.record(table: "customers", id: "c-1") != nil && d1.store.record(table: "customers", id: "c-2") != nil
            }

            // Churn on a record of d2's: once every replica has it, HQ and d2 keep one entry of
            // it, the last (their log's head, which always stays); the first, which set
            // owning_dealer (never written again), is folded into the record.
            for round in 1...30 {
                try d2.store.commit([.upsert("customers", id: "c-churn", ["last_name": .string("Round \(round)"), "phone": .string("+49 \(round)")])])
            }
            try await eventuallyAsync(timeout: 20, "HQ compacts the churn") {
                let entries = try await Self.entries(hq, "c-churn")
                return try hq.record(table: "customers", id: "c-churn")?.state.liveValues["last_name"] == "Round 30" && entries == 1
                    && hq.foldedCounts().entries == 3 // c-churn's first, c-1's and c-2's (d1 has them)
            }
            try await eventuallyAsync(timeout: 20, "d2 compacts its own log once HQ acknowledged") {
                try await Self.entries(d2.store, "c-churn") == 1
            }

            // d1 goes away. Offline it edits c-2 and creates c-3; meanwhile HQ deletes c-1.
            // (Caught up first: a re-bootstrap under way would leave its cursor at 0.)
            try await eventually(timeout: 20, "d1 is caught up") { try !d1.store.isRebootstrapping() && d1.store.cursor("pull.parent") > 0 }
            await d1.stop()
            let credential = try #require(try d1.store.meta("credential"))
            try d1.store.commit([.upsert("customers", id: "c-2", ["first_name": "Offline edit"])])
            try d1.store.commit([.upsert("customers", id: "c-3", ["last_name": "Made offline"])])
            try hq.commit([.delete("customers", id: "c-1")])
            try hq.commit([.upsert("customers", id: "c-head", ["last_name": "After the delete", "owning_dealer": "d2"])])
            try await eventuallyAsync(timeout: 20, "HQ purges c-1's tombstone past the horizon") {
                let floor = try await hq.retentionFloor()
                return try hq.record(table: "customers", id: "c-1") == nil && floor > 0
            }

            // What d1's agent will be told.
            let cursor = try d1.store.cursor("pull.parent")
            let gone = try await running.client(hub).send("GET", "/v1/pull?cursor=\(cursor)", credential: credential)
            #expect(gone.status == 410 && gone.error?.code == "rebootstrap_required", "\(gone.status) \(gone.text)")
            #expect(gone.error?.message.contains("keeping its unsent changes") == true, "\(gone.text)")
            let fresh = try await running.client(hub).send("GET", "/v1/pull?cursor=0", credential: credential)
            #expect(fresh.status == 200, "a fresh bootstrap is always served")

            // Back: it re-bootstraps by itself and loses nothing it had not sent.
            let back = try running.agent(store: d1.store, parentURL: hub.url, caFile: hub.caFile, retention: Self.policy)
            try await eventually(timeout: 30, "d1 drops c-1 and HQ gets its offline work") {
                try back.store.record(table: "customers", id: "c-1") == nil
                    && hq.record(table: "customers", id: "c-3")?.state.liveValues["last_name"] == "Made offline"
                    && hq.record(table: "customers", id: "c-2")?.state.liveValues["first_name"] == "Offline edit"
            }
            #expect(try !back.store.isRebootstrapping())
            #expect(try back.store.record(table: "customers", id: "c-2")?.state.liveValues["last_name"] == "Kept")
            #expect(try back.store.record(table: "customers", id: "c-3") != nil)
            try await eventually(timeout: 20, "d1 equals HQ in its scope") {
                try back.store.digest(scope: Scope(nodes: ["d1"])) == hq.digest(scope: Scope(nodes: ["d1"]))
            }
        }
    }

    @Test("""
    The hub purges on either engine: superseded entries its dealer pulled go (a redelivery of one is still a duplicate), \
    a tombstone past the horizon goes with its log and raises the floor, a dealer away past it is answered 410 and re-bootstraps, \
    and nothing of its offline work is lost
    """, arguments: StorageEngine.testable)
    func purgesOnEitherEngine(engine: StorageEngine) async throws {
        let dir = try TempDir()
        try await engine.withDatabase { postgres in
            try await withRunning { running in
                let hub = try await running.hub(directory: dir.path, postgres: postgres, retention: Self.policy)
                _ = try await hub.catalogStore.createTenant("acme")
                let d1 = try await running.agent(enrolling: "d1", parent: "hq", tenant: "acme", hub: hub, parentURL: hub.url, directory: dir.path,
                                                    retention: Self.policy)
                // d2 keeps its own log whole: the test re-sends one of its changes by hand.
                let d2 = try await running.agent(enrolling: "d2", parent: "hq", tenant: "acme", hub: hub, parentURL: hub.url, directory: dir.path,
                                                    retention: nil)
                let hq = try await hub.tenantStore(for: "acme")
                func entries(_ id: String) async throws -> Int {
                    try await hq.trace(recordID: id, table: "customers", after: 0, limit: 1_000).changes.count
                }
                _ = try await hq.writeAsHub([.upsert("customers", id: "c-1", ["last_name": "Doomed", "owning_dealer": "d1"]),
                                             .upsert("customers", id: "c-2", ["last_name": "Kept", "owning_dealer": "d1"])])
                // Churn: 30 changes of one record of d2's, numbered 1…30 at d2.
                try d2.store.commit([.upsert("customers", id: "c-churn", ["last_name": "Round 1", "phone": "+49 1", "owning_dealer": "d2"])])
                for round in 2...30 {
                    try d2.store.commit([.upsert("customers", id: "c-churn", ["last_name": .string("Round \(round)"), "phone": .string("+49 \(round)")])])
                }
                // Once d2 pulled past them, the 28 superseded entries go; the first (which set
                // owning_dealer) and the last hold current values and stay in the log (SQLite
                // folds the first into the record).
                try await eventuallyAsync(timeout: 30, "the hub purges the superseded churn") {
                    let live = try await hq.liveRecords(inTable: "customers").first { $0.id == "c-churn" }?.values["last_name"]
                    let kept = try await entries("c-churn")
                    return live == "Round 30" && kept <= 2
                }
                #expect(try await hq.highestSeq(of: "d2") == 30, "a purged sequence still counts as held")
                // d2's change 2, re-sent as a restored or confused agent would: a duplicate,
                // not a new write (without the purged identities it would be applied again).
                let credential2 = try #require(try d2.store.meta("credential"))
                let resent = Change(origin: "d2", originSeq: 2, hlc: HLCTimestamp(wallMillis: 1_000, counter: 0), table: "customers",
                                    recordID: "c-churn", op: .upsert, fields: ["last_name": "Stale"], prior: [:])
                let reply = try await running.client(hub).send("POST", "/v1/push", json: PushRequest(through: 30, changes: [resent]), credential: credential2)
                #expect(reply.status == 200, "\(reply.text)")
                let pushed = try reply.decode(PushResponse.self)
                #expect(pushed.duplicates == 1 && pushed.applied == 0, "\(reply.text)")
                #expect(try await entries("c-churn") <= 2)

                // d1 goes away; offline it edits c-2 and creates c-3; meanwhile the hub deletes c-1.
                try await eventually(timeout: 20, "d1 holds its records") {
                    try d1.store.record(table: "customers", id: "c-2") != nil && !d1.store.isRebootstrapping() && d1.store.cursor("pull.parent") > 0
                }
                await d1.stop()
                let credential1 = try #require(try d1.store.meta("credential"))
                try d1.store.commit([.upsert("customers", id: "c-2", ["first_name": "Offline edit"])])
                try d1.store.commit([.upsert("customers", id: "c-3", ["last_name": "Made offline"])])
                _ = try await hq.writeAsHub([.delete("customers", id: "c-1")])
                _ = try await hq.writeAsHub([.upsert("customers", id: "c-head", ["last_name": "After the delete", "owning_dealer": "d2"])])
                try await eventuallyAsync(timeout: 30, "the hub purges c-1's tombstone past the horizon") {
                    let floor = try await hq.retentionFloor()
                    let left = try await entries("c-1")
                    return floor > 0 && left == 0
                }
                let cursor = try d1.store.cursor("pull.parent")
                let gone = try await running.client(hub).send("GET", "/v1/pull?cursor=\(cursor)", credential: credential1)
                #expect(gone.status == 410 && gone.error?.code == "rebootstrap_required", "\(gone.status) \(gone.text)")
                #expect(try await running.client(hub).send("GET", "/v1/pull?cursor=0", credential: credential1).status == 200)

                // Back: it re-bootstraps by itself and loses nothing it had not sent.
                let back = try running.agent(store: d1.store, parentURL: hub.url, caFile: hub.caFile, retention: Self.policy)
                try await eventuallyAsync(timeout: 30, "d1 drops c-1 and the hub gets its offline work") {
                    let records = try await hq.liveRecords(inTable: "customers")
                    let dropped = try back.store.record(table: "customers", id: "c-1") == nil
                    return dropped && records.first { $0.id == "c-3" }?.values["last_name"] == "Made offline"
                        && records.first { $0.id == "c-2" }?.values["first_name"] == "Offline edit"
                }
                #expect(try back.store.record(table: "customers", id: "c-2")?.state.liveValues["last_name"] == "Kept")
            }
        }
    }

    @Test("""
    hub processes on one PostgreSQL: after another process purged a delete, this one (which has not seen the floor) answers a dealer's \
    stale cursor 410 rebootstrap_required, read with the feed page; a pull from 0 is still served
    """, .enabled(if: TestPostgres.isAvailable, "needs TIERSYNC_TEST_POSTGRES_URL (ops/postgres/test-cluster.sh)"))
    func floorRaisedByAnotherProcess() async throws {
        let dir = try TempDir()
        try await TestPostgres.withFreshDatabase { endpoint in
            try await withRunning { running in
                // This process does not compact: the other one below does.
                let hub = try await running.hub(directory: dir.path, postgres: endpoint, retention: nil)
                _ = try await hub.catalogStore.createTenant("acme")
                let d1 = try await running.agent(enrolling: "d1", parent: "hq", tenant: "acme", hub: hub, parentURL: hub.url, directory: dir.path,
                                                    retention: nil)
                let hq = try await hub.tenantStore(for: "acme")
                _ = try await hq.writeAsHub([.upsert("customers", id: "c-1", ["last_name": "Doomed", "owning_dealer": "d1"]),
                                             .upsert("customers", id: "c-2", ["last_name": "Kept", "owning_dealer": "d1"])])
                try await eventually(timeout: 20, "d1 holds both") {
                    try d1.store.record(table: "customers", id: "c-2") != nil && d1.store.cursor("pull.parent") > 0
                }
                await d1.stop()
                let credential = try #require(try d1.store.meta("credential"))
                let cursor = try d1.store.cursor("pull.parent")
                _ = try await hq.writeAsHub([.delete("customers", id: "c-1")])
                _ = try await hq.writeAsHub([.upsert("customers", id: "c-head", ["last_name": "After the delete", "owning_dealer": "d1"])])
                // Another hub process compacts, a minute later than the delete's horizon.
                try await withPostgresClient(endpoint) { client in
                    let other = PostgresTenantStore(client: client, tenant: "acme", rootOf: { _ in "hq" })
                    let report = try await other.compact(policy: RetentionPolicy(horizon: .seconds(1)), tree: nil,
                                                         nowMillis: WallClock.nowMillis() + 60_000, batch: 2_000)
                    #expect(report.tombstones == 1 && report.floor > cursor, "\(report)")
                }
                #expect(try await hq.retentionFloor() == 0, "this process has not seen the floor")
                let gone = try await running.client(hub).send("GET", "/v1/pull?cursor=\(cursor)", credential: credential)
                #expect(gone.status == 410 && gone.error?.code == "rebootstrap_required", "\(gone.status) \(gone.text)")
                #expect(try await running.client(hub).send("GET", "/v1/pull?cursor=0", credential: credential).status == 200)
            }
        }
    }

    @Test("a hub compacting every 10 minutes stops at once: its compaction ends at graceful shutdown, not after its sleep")
    func stopsPromptly() async throws {
        let dir = try TempDir()
        let hub = try await RunningHub(directory: dir.path, retention: RetentionPolicy(interval: .seconds(600)))
        try hub.catalog.createTenant("acme")
        _ = try hub.stores.store(for: "acme")
        let started = ContinuousClock.now
        await hub.stop()
        let took = ContinuousClock.now - started
        // Before the fix the server kept serving, long-polls closed, until the 10-minute sleep
        // ended. (Alone it stops in under a second; a loaded machine running the whole suite
        // has taken half a minute.)
        #expect(took < .seconds(120), "stopped after \(took)")
    }

    /// The log entries of customer `id` in `store`.
    static func entries(_ store: NodeStore, _ id: String) async throws -> Int {
        try await store.trace(recordID: id, table: "customers", after: 0, limit: 1_000).changes.count
    }
}

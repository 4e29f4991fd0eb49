import Foundation
import Testing
import TiersyncAgent
import TiersyncCore
import TiersyncPostgres
import TiersyncStore
import TiersyncTestSupport

// MARK: - The hub's data on either engine, as the hub integration tests read it

/// HQ's store of one tenant as the hub integration tests read it, on either engine
/// (`@Test(arguments: StorageEngine.testable)`). On SQLite every reading is the hub's own
/// `NodeStore`'s, as these tests always read it. PostgreSQL's store has no such readers, so
/// there the same readings are computed from what both engines export (`TenantDataExport`:
/// the change log, kept conflicts, records with their routes) and from `HubTenantStore`.
/// ``exported`` computes them that way on SQLite too, so a test can check the computation
/// against the SQLite engine's own answers.
struct HQView: Sendable {
    let store: any HubTenantStore
    /// HQ's SQLite store (with its local write path); nil on PostgreSQL.
    let sqlite: NodeStore?

    init(_ store: any HubTenantStore) {
        self.store = store
        sqlite = store as? NodeStore
    }

    private init(exportOnly store: any HubTenantStore) {
        self.store = store
        sqlite = nil
    }

    /// The same store, read only through the engine-neutral export (as on PostgreSQL).
    var exported: HQView { HQView(exportOnly: store) }

    private var export: any TenantDataExport {
        get throws {
            guard let export = store as? any TenantDataExport else { throw TestFailure("\(type(of: store)) does not export its data") }
            return export
        }
    }

    private func rows(_ table: MigrationTable) async throws -> [[MigrationValue]] {
        let export = try export
        var all: [[MigrationValue]] = []
        while true {
            let page = try await export.exportRows(table, offset: all.count, limit: 5_000)
            all += page
            if page.count < 5_000 { return all }
        }
    }

    private func records() async throws -> [StoredRecord] { try await Self.exportedRecords(of: export) }

    private static func exportedRecords(of export: any TenantDataExport) async throws -> [StoredRecord] {
        var all: [StoredRecord] = []
        while true {
            let page = try await export.exportRecords(offset: all.count, limit: 5_000)
            all += page
            if page.count < 5_000 { return all }
        }
    }

    private static func text(_ value: MigrationValue) -> String? {
        if case .text(let s) = value { return s }
        return nil
    }

    private static func integer(_ value: MigrationValue) -> Int64? {
        if case .integer(let n) = value { return n }
        return nil
    }

    /// How many logged changes each origin node made (`NodeStore.changeCountsByOrigin`).
    func changeCountsByOrigin() async throws -> [NodeID: Int] {
        if let sqlite { return try sqlite.changeCountsByOrigin() }
        let origin = MigrationTable.changes.columns.firstIndex(of: .text("origin"))!
        var counts: [NodeID: Int] = [:]
        for row in try await rows(.changes) { counts[NodeID(unchecked: Self.text(row[origin]) ?? ""), default: 0] += 1 }
        return counts
    }

    /// Whether `node` holds what HQ holds in `scope`: on SQLite their digests
    /// (`NodeStore.digest(scope:)`); on PostgreSQL, whose store has no digest, the same
    /// content (live records routed into the scope, their non-null values) read from both
    /// engines' export.
    func holdsSame(as node: NodeStore, scope: Scope = .everything) async throws -> Bool {
        if let sqlite { return try node.digest(scope: scope) == sqlite.digest(scope: scope) }
        return try await Self.content(of: node, scope: scope) == Self.content(of: export, scope: scope)
    }

    /// The live content of `store` routed into `scope`, as `NodeStore.digest(scope:)` hashes
    /// it: tables by name, records by id, each `table \t id \t canonical JSON of its non-null values`.
    static func content(of store: any TenantDataExport, scope: Scope) async throws -> String {
        var lines: [(table: String, id: String, line: String)] = []
        for record in try await exportedRecords(of: store) where record.state.isLive && scope.contains(route: record.route) {
            let values = record.state.liveValues.filter { !$0.value.isNull }
            lines.append((record.table, record.id, "\(record.table)\t\(record.id)\t\(CanonicalJSON.object(values))\n"))
        }
        lines.sort { $0.table != $1.table ? $0.table < $1.table : $0.id.utf8.lexicographicallyPrecedes($1.id.utf8) }
        return lines.map(\.line).joined()
    }

    /// Live records of a table, ordered by id.
    func liveRecords(table: String) async throws -> [(id: String, values: [String: FieldValue])] {
        if let sqlite { return try sqlite.liveRecords(table: table) }
        return try await store.liveRecords(inTable: table)
    }

    /// One record (live or deleted) with its replication state, if HQ holds it.
    func record(table: String, id: String) async throws -> StoredRecord? {
        if let sqlite { return try sqlite.record(table: table, id: id) }
        return try await records().first { $0.table == table && $0.id == id }
    }

    /// Records of `table` HQ holds, by id, for these `ids` (`record(table:id:)` of each).
    func records(table: String, ids: [String]) async throws -> [String: StoredRecord] {
        var found: [String: StoredRecord] = [:]
        if let sqlite {
            for id in ids { found[id] = try sqlite.record(table: table, id: id) }
        } else {
            let wanted = Set(ids)
            for record in try await records() where record.table == table && wanted.contains(record.id) { found[record.id] = record }
        }
        return found
    }

    /// The changes refused on arrival and kept with their reasons.
    func quarantined() async throws -> [QuarantinedChange] {
        if let sqlite { return try sqlite.quarantined() }
        return try await store.quarantinedChanges(limit: 1000)
    }

    /// Kept conflicts (`NodeStore.conflicts(limit:)`).
    func conflicts(limit: Int = 1000) async throws -> [ConflictRecord] {
        if let sqlite { return try sqlite.conflicts(limit: limit) }
        let columns = MigrationTable.conflicts.columns
        func at(_ row: [MigrationValue], _ name: String) -> MigrationValue { row[columns.firstIndex { $0.name == name }!] }
        func value(_ v: MigrationValue) -> FieldValue { Self.text(v).flatMap { try? JSONDecoder().decode(FieldValue.self, from: Data($0.utf8)) } ?? .null }
        func version(_ v: MigrationValue) throws -> FieldVersion {
            guard let parsed = Self.text(v).flatMap(FieldVersion.init(parsing:)) else { throw TestFailure("unreadable version \(v)") }
            return parsed
        }
        return try await rows(.conflicts).prefix(limit).enumerated().map { i, row in
            ConflictRecord(id: Int64(i + 1), table: Self.text(at(row, "tbl")) ?? "", recordID: Self.text(at(row, "record_id")) ?? "",
                           conflict: FieldConflict(field: Self.text(at(row, "field")) ?? "",
                                                   winner: value(at(row, "winner_value")), winnerVersion: try version(at(row, "winner_version")),
                                                   loser: value(at(row, "loser_value")), loserVersion: try version(at(row, "loser_version"))),
                           detectedAtMillis: UInt64(Self.integer(at(row, "detected_at")) ?? 0))
        }
    }

    /// The nodes the first change HQ logged for record `id` passed through
    /// (`NodeStore.lineage(recordID:).first?.change.trail`).
    func firstTrail(recordID id: String) async throws -> [NodeID]? {
        if let sqlite { return try sqlite.lineage(recordID: id).first?.change.trail.map(\.node) }
        let columns = MigrationTable.changes.columns
        let recordID = columns.firstIndex(of: .text("record_id"))!, trail = columns.firstIndex(of: .text("trail"))!
        guard let row = try await rows(.changes).first(where: { Self.text($0[recordID]) == id }) else { return nil }
        guard let text = Self.text(row[trail]) else { return [] }
        let hops = try WireDecoding.trail(text) ?? JSONDecoder().decode([Hop].self, from: Data(text.utf8))
        return hops.map(\.node)
    }

    /// For a failure message: what HQ holds.
    func summary() async -> String {
        if let sqlite { return (try? "\(sqlite.counts().records)") ?? "?" }
        guard let held = try? await records() else { return "?" }
        return "\(Dictionary(grouping: held.filter(\.state.isLive), by: \.table).mapValues(\.count))"
    }
}

/// Runs `body` with where a hub of `engine` keeps its data: nil on SQLite (files under the
/// hub's directory), a fresh PostgreSQL database on PostgreSQL (dropped afterwards). For
/// tests that restart a hub on the same data, or run it as a process.
func withHubDatabase<T: Sendable>(_ engine: StorageEngine, _ body: (PostgresEndpoint?) async throws -> T) async throws -> T {
    switch engine {
    case .sqlite: try await body(nil)
    case .postgres: try await TestPostgres.withFreshDatabase { try await body($0) }
    }
}

extension Running {
    /// A hub keeping its data in `postgres` (nil: SQLite files in `directory`), stopped with the scope.
    func hub(directory: String, port: Int = 0, postgres: PostgresEndpoint?) async throws -> RunningHub {
        let hub = try await RunningHub(directory: directory, port: port, postgres: postgres)
        add { await hub.stop() }
        return hub
    }
}

extension RunningHub {
    /// HQ's store of `tenant`, on whichever engine the hub runs.
    func hq(_ tenant: TenantID) async throws -> HQView { HQView(try await tenantStore(for: tenant)) }
}

// MARK: - Three tiers

/// Waits until every node's digest of its own scope equals HQ's digest of that scope.
func convergedByScope(_ stores: [NodeID: NodeStore], hq: HQView, tree: NodeTree, timeout: Double = 90) async throws {
    func lagging() async throws -> [NodeID] {
        var lagging: [NodeID] = []
        for (node, store) in stores {
            if try await !hq.holdsSame(as: store, scope: Scope(tree: tree, node: node)) { lagging.append(node) }
        }
        return lagging.sorted()
    }
    do {
        try await eventually(timeout: timeout, "every node converges on its scope") { try await lagging().isEmpty }
    } catch {
        let detail = try await lagging().map { node in
            "\(node): holds \(try stores[node]!.counts().records) head \(try stores[node]!.headSeq()), quarantined \(try stores[node]!.quarantined().count)"
        }
        throw TestFailure("\(error)\nHQ: \(await hq.summary())\n" + detail.joined(separator: "\n"))
    }
}

@Suite("Three tiers", .serialized)
struct ThreeTierTests {
    @Test("HQ, two countries with three dealers each, and a two-level tenant on the same hub: writes everywhere converge by scope; a routed lead reaches only its dealer, its country and HQ",
          arguments: StorageEngine.testable)
    func threeTiers(engine: StorageEngine) async throws {
        let dir = try TempDir()
        try await withHubDatabase(engine) { postgres in
            try await withRunning { running in
                // No compaction (the test library's default): the lineage checks at the end read
                // HQ's log entries, which compaction folds into their records once every replica
                // holds them. A loaded CI run outlasted a 60 s interval and found none for de-esc-1.
                let hub = try await running.hub(directory: dir.path, postgres: postgres)
                try await hub.catalogStore.createTenant("acme", levels: 3)
                try await hub.catalogStore.createTenant("insura", levels: 2)
                var countries: [NodeID: RunningCountry] = [:]
                var agents: [NodeID: RunningAgent] = [:]
                let layout: [NodeID: [NodeID]] = ["de": ["de-1", "de-2", "de-3"], "fr": ["fr-1", "fr-2", "fr-3"]]
                for (country, dealers) in layout {
                    countries[country] = try await running.country(hub: hub, tenant: "acme", node: country, directory: dir.path)
                    for dealer in dealers {
                        agents[dealer] = try await running.agent(enrolling: dealer, parent: country, tenant: "acme", hub: hub,
                                                                 parentURL: countries[country]!.url, directory: dir.path)
                    }
                }
                // The insurer: HQ and two agents, no middle level.
                for agent in ["ins-a", "ins-b"] as [NodeID] {
                    agents[agent] = try await running.agent(enrolling: agent, parent: nil, tenant: "insura", hub: hub, parentURL: hub.url, directory: dir.path)
                }
                let hq = try await hub.hq("acme"), insuraHQ = try await hub.hq("insura")

                // Each dealer creates its 40 customers; HQ sees them.
                for (_, dealers) in layout {
                    for dealer in dealers {
                        try agents[dealer]!.store.commit((0..<40).map { .upsert("customers", id: "\(dealer)-c\($0)", ["last_name": .string("\(dealer) \($0)")]) })
                    }
                }
                try await eventually(timeout: 60, "HQ sees the dealers' customers") { try await hq.liveRecords(table: "customers").count == 240 }

                // Then concurrent writes at every level, including edits of the same fields.
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for (_, dealers) in layout {
                        for dealer in dealers {
                            let store = agents[dealer]!.store
                            group.addTask {
                                for i in 40..<60 {
                                    try store.commit([.upsert("customers", id: "\(dealer)-c\(i % 40)", ["last_name": .string("\(dealer) \(i)")])])
                                    if i % 5 == 0 { try await Task.sleep(for: .milliseconds(5)) }
                                }
                            }
                        }
                    }
                    for (country, dealers) in layout {
                        let store = countries[country]!.store
                        group.addTask {
                            for i in 0..<20 {
                                // Country staff escalate contacts for their dealers' customers.
                                try store.commit([.upsert("interactions", id: "\(country)-esc-\(i)", [
                                    "customer_id": .string("\(dealers[i % 3])-c\(i)"), "handling_level": "country",
                                    "handling_node": .string(dealers[i % 3].rawValue), "urgency": "high",
                                ])])
                            }
                        }
                    }
                    // HQ's own edits and the lead it routes: SQLite only (PostgreSQL has no HQ-local write path).
                    if let local = hq.sqlite {
                        group.addTask {
                            for i in 0..<20 {
                                try local.commit([.upsert("customers", id: "de-1-c\(i)", ["segment_value": "A", "last_name": .string("hq \(i)")])])
                            }
                            try local.commit([.upsert("leads", id: "lead-1", ["source_node": "hq", "fulfilling_node": "fr-2", "value": 9_500.0,
                                                                              "status": "new", "source_channel": "phone"])])
                        }
                    }
                    for agent in ["ins-a", "ins-b"] as [NodeID] {
                        let store = agents[agent]!.store
                        group.addTask {
                            for i in 0..<30 { try store.commit([.upsert("customers", id: "\(agent)-p\(i)", ["last_name": "Policyholder"])]) }
                        }
                    }
                    try await group.waitForAll()
                }

                var stores: [NodeID: NodeStore] = [:]
                for (country, dealers) in layout {
                    stores[country] = countries[country]!.store
                    for dealer in dealers { stores[dealer] = agents[dealer]!.store }
                }
                let tree = try await hub.catalogStore.tree(of: "acme")
                try await convergedByScope(stores, hq: hq, tree: tree)
                try await convergedByScope(["ins-a": agents["ins-a"]!.store, "ins-b": agents["ins-b"]!.store],
                                           hq: insuraHQ, tree: try await hub.catalogStore.tree(of: "insura"))
                if hq.sqlite != nil {
                    // What PostgreSQL's variant relies on: the readings computed from the export agree with SQLite's own.
                    for (node, store) in stores {
                        let scope = Scope(tree: tree, node: node)
                        let (held, atHQ) = (try await HQView.content(of: store, scope: scope), try await HQView.content(of: hq.sqlite!, scope: scope))
                        #expect(!held.isEmpty && held == atHQ, "\(node)")
                    }
                    #expect(try await hq.exported.changeCountsByOrigin() == hq.changeCountsByOrigin())
                    #expect(try await hq.exported.firstTrail(recordID: "de-2-c5") == hq.firstTrail(recordID: "de-2-c5"))
                    #expect(try await hq.exported.record(table: "leads", id: "lead-1") == hq.record(table: "leads", id: "lead-1"))
                }

                // HQ holds every change exactly once (identities are unique; each node numbers
                // its changes 1, 2, 3, …): 6 dealers × 60, 2 countries × 20, its own 21 (none on
                // PostgreSQL). Counted by the highest sequence held, not by log rows: the hub's
                // compaction folds entries every replica has into their records.
                for (_, dealers) in layout {
                    for dealer in dealers {
                        let held = try await hq.store.highestSeq(of: dealer)
                        #expect(held == 60, "\(dealer)")
                    }
                }
                let (de, fr, own) = (try await hq.store.highestSeq(of: "de"), try await hq.store.highestSeq(of: "fr"), try await hq.store.highestSeq(of: "hq"))
                #expect(de == 20 && fr == 20 && own == (hq.sqlite == nil ? 0 : 21))
                #expect(try await hq.quarantined().isEmpty)

                // HQ's lead and edits (SQLite only, as above).
                if hq.sqlite != nil {
                    // The lead: at fr-2, its country fr, and HQ; nowhere else.
                    #expect(try await hq.record(table: "leads", id: "lead-1") != nil, "lead-1 at hq")
                    for (node, store) in stores {
                        let has = try store.record(table: "leads", id: "lead-1") != nil
                        #expect(has == ["fr", "fr-2"].contains(node), "lead-1 at \(node): \(has)")
                    }
                    // HQ's edits of de-1's customers reached de-1, through de.
                    #expect(try stores["de-1"]!.record(table: "customers", id: "de-1-c3")?.state.liveValues["segment_value"] == "A")
                    // Lineage: the lead went hq → fr → fr-2.
                    let trail = try #require(try stores["fr-2"]!.lineage(recordID: "lead-1").first?.change.trail.map(\.node))
                    #expect(trail == ["fr", "fr-2"])
                }
                // A dealer holds only its own records; a country its subtree's.
                #expect(try stores["de-2"]!.liveRecords(table: "customers").allSatisfy { $0.id.hasPrefix("de-2-") })
                #expect(try stores["de"]!.liveRecords(table: "customers").allSatisfy { $0.id.hasPrefix("de-") })
                #expect(try stores["fr"]!.liveRecords(table: "customers").count == 120)
                // The escalations written at de reached the dealers they name.
                #expect(try stores["de-2"]!.record(table: "interactions", id: "de-esc-1") != nil)
                #expect(try stores["de-1"]!.record(table: "interactions", id: "de-esc-1") == nil)
                // The tenants never mix.
                #expect(try await insuraHQ.liveRecords(table: "customers").count == 60)
                #expect(try await hq.liveRecords(table: "customers").allSatisfy { !$0.id.hasPrefix("ins-") })
                // Lineage: a country's own change, and a dealer's relayed by its country.
                let upward = try #require(try await hq.firstTrail(recordID: "de-esc-1"))
                #expect(upward == ["hq"], "a country's own change arrives at HQ directly")
                let relayed = try #require(try await hq.firstTrail(recordID: "de-2-c5"))
                #expect(relayed == ["de", "hq"])
            }
        }
    }

    @Test("a dealer moved to another country mid-stream loses nothing and duplicates nothing", arguments: StorageEngine.testable)
    func reparent(engine: StorageEngine) async throws {
        let dir = try TempDir()
        try await withHubDatabase(engine) { postgres in
            try await withRunning { running in
                let hub = try await running.hub(directory: dir.path, postgres: postgres)
                try await hub.catalogStore.createTenant("acme", levels: 3)
                let de = try await running.country(hub: hub, tenant: "acme", node: "de", directory: dir.path)
                let fr = try await running.country(hub: hub, tenant: "acme", node: "fr", directory: dir.path)
                let hq = try await hub.hq("acme")
                var mover = try await running.agent(enrolling: "mover", parent: "de", tenant: "acme", hub: hub, parentURL: de.url, directory: dir.path)
                let stay = try await running.agent(enrolling: "fr-stay", parent: "fr", tenant: "acme", hub: hub, parentURL: fr.url, directory: dir.path)
                let store = mover.store

                // HQ routes a lead to the mover while it is in de: SQLite only (PostgreSQL has no HQ-local write path).
                try hq.sqlite?.commit([.upsert("leads", id: "lead-for-mover", ["source_node": "hq", "fulfilling_node": "mover", "status": "new"])])
                for i in 0..<150 { try store.commit([.upsert("customers", id: "m-\(i % 100)", ["last_name": .string("v\(i)")])]) }
                try await Task.sleep(for: .milliseconds(200))

                // Mid-stream: moved at HQ; its agent is pointed at fr while writes continue.
                try await hub.catalogStore.moveNode("mover", of: "acme", to: "fr")
                await mover.stop()
                for i in 150..<200 { try store.commit([.upsert("customers", id: "m-\(i % 100)", ["last_name": .string("v\(i)")])]) }
                #expect(try SyncAgent.adoptParent(store: store, url: fr.url))
                mover = try running.agent(store: store, parentURL: fr.url, caFile: hub.caFile)
                for i in 200..<300 { try store.commit([.upsert("customers", id: "m-\(i % 100)", ["last_name": .string("v\(i)")])]) }

                let tree = try await hub.catalogStore.tree(of: "acme")
                #expect(tree.path(of: "mover") == "hq/fr/mover")
                try await convergedByScope(["mover": store, "fr": fr.store, "fr-stay": stay.store], hq: hq, tree: tree)
                try await eventually(timeout: 30, "HQ holds each of the mover's 300 changes once") {
                    try await hq.changeCountsByOrigin()["mover"] == 300
                }
                // fr now holds the mover's records, including the lead HQ routed to it before the move (SQLite: see above).
                if hq.sqlite != nil { #expect(try fr.store.record(table: "leads", id: "lead-for-mover") != nil) }
                #expect(try fr.store.liveRecords(table: "customers").filter { $0.id.hasPrefix("m-") }.count == 100)
                #expect(try await hq.liveRecords(table: "customers").first { $0.id == "m-99" }?.values["last_name"] == "v299")
                #expect(try fr.store.changeCountsByOrigin()["mover"] == 300)
                try await eventually(timeout: 30, "nothing left in HQ's quarantine") { try await hq.quarantined().isEmpty }
            }
        }
    }

    @Test("while HQ is down a country keeps accepting its dealers' changes, and forwards them when HQ returns", arguments: StorageEngine.testable)
    func hqOutage(engine: StorageEngine) async throws {
        let dir = try TempDir()
        try await withHubDatabase(engine) { postgres in
            try await withRunning { running in
                var hub = try await running.hub(directory: dir.path, postgres: postgres)
                try await hub.catalogStore.createTenant("acme", levels: 3)
                let de = try await running.country(hub: hub, tenant: "acme", node: "de", directory: dir.path)
                let dealer = try await running.agent(enrolling: "d1", parent: "de", tenant: "acme", hub: hub, parentURL: de.url, directory: dir.path)
                try dealer.store.commit([.upsert("customers", id: "before", ["last_name": "Online"])])
                let firstHub = hub
                try await eventually(timeout: 30, "HQ has the first change") { try await firstHub.hq("acme").changeCountsByOrigin()["d1"] == 1 }

                let port = hub.port
                await hub.stop()
                for i in 0..<50 { try dealer.store.commit([.upsert("customers", id: "offline-\(i)", ["last_name": "HQ down"])]) }
                try await eventually(timeout: 30, "the country accepted all of the dealer's changes") {
                    try de.store.changeCountsByOrigin()["d1"] == 51 && dealer.store.upstreamBacklog(after: dealer.store.cursor("push.parent")) == 0
                }
                #expect(try de.store.upstreamBacklog(after: de.store.cursor("push.parent")) == 50, "held for HQ")

                hub = try await running.hub(directory: dir.path, port: port, postgres: postgres)
                let hq = try await hub.hq("acme")
                try await eventually(timeout: 60, "the country forwarded everything once HQ came back") {
                    try await hq.changeCountsByOrigin()["d1"] == 51
                }
                #expect(try await hq.liveRecords(table: "customers").count == 51)
                // Children before their parents (the scope would stop the restarted hub first).
                await dealer.stop()
                await de.stop()
                await hub.stop()
            }
        }
    }

    /// Shows in the output that the PostgreSQL variants above were skipped, and why.
    @Test("PostgreSQL variants of the three-tier tests run", .enabled(if: TestPostgres.isAvailable, Comment(rawValue: StorageEngine.postgresSkipNote)))
    func postgresVariantsRun() {
        #expect(StorageEngine.testable.contains(.postgres))
    }

    @Test("a dealer enrolling through the wrong country is refused, and its token stays usable", arguments: StorageEngine.testable)
    func enrollThroughWrongCountry(engine: StorageEngine) async throws {
        let dir = try TempDir()
        try await withRunningHub(engine: engine, directory: dir.path) { hub in
            try await withRunning { running in
                try await hub.catalogStore.createTenant("acme", levels: 3)
                let de = try await running.country(hub: hub, tenant: "acme", node: "de", directory: dir.path)
                let fr = try await running.country(hub: hub, tenant: "acme", node: "fr", directory: dir.path)
                let token = try await hub.catalogStore.issueEnrollmentToken(tenant: "acme", node: "de-9", parent: "de")
                let store = try NodeStore(path: dir.path + "/de-9.sqlite")
                do {
                    try await SyncAgent.enroll(store: store, configuration: AgentConfiguration(parentURL: fr.url, caFile: hub.caFile), token: token)
                    Issue.record("enrolling through fr should fail")
                } catch AgentError.http(let status, let code, let message) {
                    #expect(status == 409 && code == "wrong_parent")
                    #expect(message.contains("under 'de', not under 'fr'"))
                }
                let identity = try await SyncAgent.enroll(store: store, configuration: AgentConfiguration(parentURL: de.url, caFile: hub.caFile), token: token)
                #expect(identity.parent == "de")
            }
        }
    }
}

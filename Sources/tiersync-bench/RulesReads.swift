import ArgumentParser
import Foundation
import TiersyncAgent
import TiersyncCore
import TiersyncKPI
import TiersyncPostgres
import TiersyncStorage
import TiersyncStore

/// What a run of the rules reads at a node holding many dialogues (HQ holds every one of its
/// tenant): the open, allocated dialogues escalation looks at, and the vehicles a proactive
/// rule's window selects. Every node runs them every `--rules-interval` (30 s); neither
/// engine indexes the fields asked about, so each is a pass over the table. SQLite tests
/// columns; PostgreSQL the records' canonical JSON.
struct RulesReads: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rules-reads",
                                                    abstract: "The reads of one rules run over a large store, on SQLite and PostgreSQL.")
    @Option(help: "Dialogues held, 2 % of them open and allocated.") var interactions = 200_000
    @Option(help: "Vehicles held, sale dates spread over two years.") var vehicles = 50_000
    @Option(help: "A PostgreSQL server (postgres://USER@HOST:PORT/DATABASE; a fresh database on it, dropped afterwards). Default: $TIERSYNC_TEST_POSTGRES_URL; none: SQLite only.")
    var postgres: String?
    @OptionGroup var common: CommonOptions

    func run() async throws {
        quietLogs()
        let (dir, cleanup) = try common.workingDirectory("rules-reads")
        defer { cleanup() }
        let url = postgres ?? ProcessInfo.processInfo.environment["TIERSYNC_TEST_POSTGRES_URL"]
        header("rules-reads", [("interactions", "\(interactions), 2 % open"), ("vehicles", "\(vehicles)"),
                               ("engines", url == nil ? "SQLite" : "SQLite, PostgreSQL")])
        let dealer = try NodeStore(path: dir + "/dealer.sqlite")
        try dealer.setIdentity(NodeIdentity(tenant: "acme", node: "d1", parent: "hq"))
        var changes: [[Change]] = []
        for start in stride(from: 0, to: interactions, by: 2_000) {
            changes.append(try dealer.commit((start..<min(start + 2_000, interactions)).map { .upsert("interactions", id: "i-\($0)", Self.dialogue($0)) }))
        }
        for start in stride(from: 0, to: vehicles, by: 2_000) {
            changes.append(try dealer.commit((start..<min(start + 2_000, vehicles)).map { i in
                let day = i % 730
                return .upsert("vehicles", id: "v-\(i)", ["customer_id": .string("c-\(i % 20_000)"), "model": "A", "owning_dealer": "d1",
                                                          "sale_date": .string(KPIDay.label(Int64(20_089 + day)))])
            }))
        }
        let window = ("2026-03-01", "2026-03-08")
        try await measure("SQLite", dealer, window: window)
        guard let url else { return }
        try await withFreshDatabase(try PostgresEndpoint(url: url)) { endpoint in
            try await withPostgresClient(endpoint) { client in
                let hq = PostgresTenantStore(client: client, tenant: "acme", rootOf: { _ in "hq" })
                for batch in changes {
                    _ = try await hq.applyIncoming(batch, from: "d1", source: .child, checkSkew: false, gate: nil, cursor: nil, wallMillis: WallClock.nowMillis())
                }
                try await measure("PostgreSQL", hq, window: window)
            }
        }
    }

    private func measure(_ engine: String, _ store: any RulesStore, window: (String, String)) async throws {
        var open = (best: Double.infinity, found: 0), dated = (best: Double.infinity, found: 0)
        for _ in 0..<3 {
            var started = ContinuousClock.now
            open.found = try await store.rulesLiveRecords(table: "interactions", where: RulesRunner.openDialogues).count
            open.best = min(open.best, elapsedSeconds(since: started))
            started = ContinuousClock.now
            dated.found = try await store.rulesLiveRecords(table: "vehicles", where: [.between("sale_date", .string(window.0), .string(window.1))]).count
            dated.best = min(dated.best, elapsedSeconds(since: started))
        }
        result("\(engine): open dialogues", "\(format(open.best * 1000, 1)) ms, best of 3 (\(open.found) of \(format(Double(interactions))))")
        result("\(engine): vehicles in a week's window", "\(format(dated.best * 1000, 1)) ms, best of 3 (\(dated.found) of \(format(Double(vehicles))))")
    }

    /// A dialogue as allocation leaves it; 98 % since answered (most resolved), 2 % open.
    static func dialogue(_ i: Int) -> [String: FieldValue] {
        let created = Int64(1_790_000_000_000) + Int64(i % (90 * 86_400)) * 1000
        var f: [String: FieldValue] = [
            "customer_id": .string("c-\(i % 20_000)"), "channel": "phone", "direction": "inbound", "topic": .string("topic-\(i % 12)"),
            "knowledge_kind": "specification", "urgency": "normal", "created_at": .string(KPIBench.iso(created)),
            "handling_level": "dealer", "queue": "dealer-service", "priority": .int(3), "handling_node": "d1",
            "sla_due": .string(KPIBench.iso(created + 4 * 3_600_000)), "decision_rule": "dealer-specification", "decision_release": .int(1),
            "decided_by": "d1", "decided_at": .string(KPIBench.iso(created)), "originating_node": "d1",
        ]
        if i % 50 == 0 {
            f["status"] = "open"
        } else {
            f["answered_at"] = .string(KPIBench.iso(created + 30_000))
            f["status"] = i % 4 == 0 ? "answered" : "resolved"
            if i % 4 != 0 { f["resolved_at"] = .string(KPIBench.iso(created + 600_000)) }
        }
        return f
    }
}

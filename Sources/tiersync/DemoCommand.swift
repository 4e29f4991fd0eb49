import ArgumentParser
import Foundation
import Logging
import TiersyncAgent
import TiersyncCore
import TiersyncPKI
import TiersyncServer
import TiersyncStore

/// The README's first command: a whole deployment on loopback, in one process but over
/// real HTTPS and real SQLite files.
struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run an HQ hub and two dealer agents on loopback over HTTPS, sync contacts, and show the converged state.")

    @Option(help: "Directory for the demo's databases and certificates (default: a fresh temporary directory).")
    var dir: String?
    @Option(help: "Seconds to wait for convergence before failing.")
    var timeout = 60.0
    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        var logging = logging
        if logging.logLevel == "info" { logging.logLevel = "warning" }
        try logging.bootstrap()
        let base = dir ?? NSTemporaryDirectory() + "tiersync-demo-\(ProcessInfo.processInfo.processIdentifier)"
        try? FileManager.default.removeItem(atPath: base)
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        say("Tiersync demo in \(base)")

        // 1. PKI and hub.
        let pki = try DevelopmentPKI.ensure(in: base + "/pki")
        say("created a development CA and a loopback server certificate (\(pki.caCertificate))")
        let hubStores = TenantStores(catalog: try HubCatalog(directory: base + "/hub"))
        let hub = HubServer(configuration: HubConfiguration(
            host: "127.0.0.1", port: 0, dataDirectory: base + "/hub",
            transport: .tls(certificatePath: pki.serverCertificate, privateKeyPath: pki.serverKey)),
            directory: CatalogDirectory(stores: hubStores))
        let ready = AsyncStream<Int>.makeStream()
        let hubTask = Task { try await hub.run { port in ready.continuation.yield(port) } }
        var portIterator = ready.stream.makeAsyncIterator()
        guard let port = await portIterator.next() else { throw CLIError("the hub did not start") }
        let url = "https://127.0.0.1:\(port)"
        say("HQ hub listening on \(url) (TLS), data in \(base)/hub")

        // 2. Tenant and dealers.
        let tenant: TenantID = "acme"
        let catalog = hubStores.catalog
        try catalog.createTenant(tenant, root: "hq")
        let hq = try hubStores.store(for: tenant)
        let dealers: [NodeID] = ["dealer-north", "dealer-south"]
        var stores: [NodeID: NodeStore] = [:]
        for dealer in dealers {
            let token = try catalog.issueEnrollmentToken(tenant: tenant, node: dealer)
            let store = try NodeStore(path: "\(base)/\(dealer).sqlite")
            try await SyncAgent.enroll(store: store, configuration: AgentConfiguration(parentURL: url, caFile: pki.caCertificate), token: token)
            stores[dealer] = store
            say("\(dealer) enrolled with a one-time token; its store is \(store.path)")
        }
        let north = stores["dealer-north"]!, south = stores["dealer-south"]!

        var agentTasks = startAgents(stores, url: url, ca: pki.caCertificate)

        // 3. Contacts written at both dealers while online.
        let now = ISO8601DateFormatter().string(from: Date())
        let people = [("Anna", "Schmidt", "+49 30 1234567"), ("Jonas", "Weber", "+49 40 7654321"), ("Lena", "Fischer", "+49 89 5551234")]
        for (i, p) in people.enumerated() {
            try north.commit([
                .upsert("customers", id: "cust-\(i + 1)", [
                    "kind": "person", "first_name": .string(p.0), "last_name": .string(p.1), "phone": .string(p.2),
                    "owning_dealer": "dealer-north", "servicing_dealer": "dealer-south", "consent_service_phone": .bool(true),
                ]),
                .upsert("interactions", id: "int-n\(i + 1)", [
                    "customer_id": .string("cust-\(i + 1)"), "channel": "visit", "direction": "inbound", "topic": "test drive",
                    "knowledge_kind": "specification", "urgency": "normal", "status": "open", "created_at": .string(now),
                    "handling_node": "dealer-south",
                ]),
            ])
        }
        try south.commit([
            .upsert("customers", id: "cust-4", ["kind": "company", "company_name": "Hanse Logistik GmbH", "key_account": .bool(true),
                                                 "owning_dealer": "dealer-south", "servicing_dealer": "dealer-north"]),
            .upsert("interactions", id: "int-s1", ["customer_id": "cust-4", "channel": "phone", "direction": "inbound",
                                                   "topic": "fleet service contract", "knowledge_kind": "scheme", "urgency": "high",
                                                   "status": "new", "created_at": .string(now), "handling_node": "dealer-north"]),
        ])
        say("wrote 4 customers and 4 contacts at the two dealers; agents push them within a second")
        try await waitForConvergence([hq, north, south], timeout: timeout)
        say("converged: HQ and both dealers hold the same \(try hq.counts().records["customers"] ?? 0) customers")

        // 4. Both dealers go offline and edit the same customer.
        for t in agentTasks { t.cancel() }
        for t in agentTasks { _ = await t.result }
        say("both dealers offline: each edits customer cust-1 without seeing the other")
        try north.commit([.upsert("customers", id: "cust-1", ["phone": "+49 30 9990001", "email": "anna.schmidt@example.com"])])
        try south.commit([.upsert("customers", id: "cust-1", ["phone": "+49 30 8880002", "city": "Berlin"])])
        try south.commit([.upsert("interactions", id: "int-n1", ["status": "resolved", "resolved_at": .string(ISO8601DateFormatter().string(from: Date()))])])
        agentTasks = startAgents(stores, url: url, ca: pki.caCertificate)
        say("back online: syncing")
        try await waitForConvergence([hq, north, south], timeout: timeout)

        // 5. The summary.
        print("")
        print("Records at HQ (tenant acme):")
        var rows = [["customer", "name", "phone", "email", "city", "owning", "servicing"]]
        for c in try hq.liveRecords(table: "customers") {
            let v = c.values
            rows.append([c.id, v["company_name"]?.description ?? "\(v["first_name"]?.description ?? "") \(v["last_name"]?.description ?? "")",
                         v["phone"]?.description ?? "", v["email"]?.description ?? "", v["city"]?.description ?? "",
                         v["owning_dealer"]?.description ?? "", v["servicing_dealer"]?.description ?? ""])
        }
        printTable(rows)
        print("")
        rows = [["contact", "customer", "topic", "status", "from", "handled by"]]
        for c in try hq.liveRecords(table: "interactions") {
            let v = c.values
            rows.append([c.id, v["customer_id"]?.description ?? "", v["topic"]?.description ?? "", v["status"]?.description ?? "",
                         v["originating_node"]?.description ?? "", v["handling_node"]?.description ?? ""])
        }
        printTable(rows)
        print("")
        print("Concurrent edits kept as conflicts at HQ (per-field last-writer-wins by hybrid clock, node):")
        for c in try hq.conflicts() {
            print("  \(c.table)/\(c.recordID).\(c.conflict.field): kept '\(c.conflict.winner)' from \(c.conflict.winnerVersion.node), lost '\(c.conflict.loser)' from \(c.conflict.loserVersion.node)")
        }
        print("")
        print("Replicas:")
        rows = [["node", "customers", "contacts", "log entries", "conflicts", "digest"]]
        for (name, store) in [("hq", hq), ("dealer-north", north), ("dealer-south", south)] {
            let counts = try store.counts()
            rows.append([name, "\(counts.records["customers"] ?? 0)", "\(counts.records["interactions"] ?? 0)", "\(counts.changes)",
                         "\(counts.conflicts)", String(try store.digest().prefix(16))])
        }
        printTable(rows)
        print("")
        say("every replica converged to the same content. Try: tiersync contact list --db \(base)/dealer-south.sqlite")

        for t in agentTasks { t.cancel() }
        for t in agentTasks { _ = await t.result }
        hubTask.cancel()
        _ = await hubTask.result
    }

    private func startAgents(_ stores: [NodeID: NodeStore], url: String, ca: String) -> [Task<Void, any Error>] {
        stores.values.map { store in
            Task {
                var configuration = AgentConfiguration(parentURL: url, caFile: ca)
                configuration.pullWaitSeconds = 10
                try await SyncAgent(store: store, configuration: configuration).run()
            }
        }
    }

    private func waitForConvergence(_ stores: [NodeStore], timeout: Double) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let digests = Set(try stores.map { try $0.digest() })
            if digests.count == 1 { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw CLIError("replicas did not converge within \(timeout) s; see the log above")
    }

    private func say(_ line: String) {
        print("• \(line)")
        flushOutput()
    }
}

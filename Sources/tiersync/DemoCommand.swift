import ArgumentParser
import Foundation
import Logging
import TiersyncAgent
import TiersyncCore
import TiersyncGovernance
import TiersyncKPI
import TiersyncNode
import TiersyncPKI
import TiersyncRules
import TiersyncServer
import TiersyncStore

/// The README's first command: a whole three-level deployment on loopback, in one process
/// but over real HTTPS listeners and real SQLite files.
struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run HQ, two country nodes and four dealers on loopback over HTTPS, sync contacts and a routed lead, and show the result.")

    @Option(help: "Directory for the demo's databases and certificates (default: a fresh temporary directory).")
    var dir: String?
    @Option(help: "Seconds to wait for convergence before failing.")
    var timeout = 60.0
    @Option(help: "Governance sources HQ publishes (skipped when the directory does not exist).")
    var governance = "fixtures/governance/automaker"
    @Option(help: "The country overlay de publishes on top.")
    var overlay = "fixtures/governance/overlays/de.yaml"
    @Flag(help: "Keep HQ, the countries and the dealers running after the demo (for the console) until Ctrl-C.")
    var keepRunning = false
    @OptionGroup var logging: LoggingOptions

    static let tenant: TenantID = "automaker"
    static let layout: [(country: NodeID, dealers: [NodeID])] = [("de", ["de-berlin", "de-munich"]), ("fr", ["fr-paris", "fr-lyon"])]

    func validate() throws {
        // Found before anything starts, not after HQ published (a --governance given from
        // outside the repository leaves the default overlay's relative path behind).
        if FileManager.default.fileExists(atPath: governance), !FileManager.default.fileExists(atPath: overlay) {
            throw ValidationError("--overlay \(overlay) does not exist: pass --overlay FILE with --governance, or run the demo from the repository root")
        }
    }

    func run() async throws {
        var logging = logging
        if logging.logLevel == "info" { logging.logLevel = "warning" }
        try logging.bootstrap()
        let base = dir ?? NSTemporaryDirectory() + "tiersync-demo-\(ProcessInfo.processInfo.processIdentifier)"
        try? FileManager.default.removeItem(atPath: base)
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        say("Tiersync demo in \(base)")
        var tasks: [Task<Void, any Error>] = []

        // HQ hub.
        let pki = try DevelopmentPKI.ensure(in: base + "/pki")
        let transport = HubConfiguration.Transport.tls(certificatePath: pki.serverCertificate, privateKeyPath: pki.serverKey)
        let hubStores = TenantStores(catalog: try HubCatalog(directory: base + "/hq"), checkpointing: .byOwner, writePolicy: AllocationPolicy())
        let hub = HubServer(configuration: HubConfiguration(port: 0, dataDirectory: base + "/hq", transport: transport),
                            directory: CatalogDirectory(stores: hubStores))
        let (hqURL, hqTask) = try await start { ready in try await hub.run(onReady: ready) }
        tasks.append(hqTask)
        // HQ's rules run in the hub process (`tiersync hub serve` does the same).
        tasks.append(Task { await HubRulesRunner(stores: hubStores).run(every: .seconds(30)) { await hub.notifyChanges(for: $0) } })
        let catalog = hubStores.catalog
        try catalog.createTenant(Self.tenant, root: "hq", levels: 3)
        let hq = try hubStores.store(for: Self.tenant)
        // HQ's governance release key: nodes receive its public half at enrollment.
        let releaseKey = GovernanceSigningKey()
        try catalog.setReleaseKey(releaseKey.publicKey.base64, for: Self.tenant)
        say("HQ hub on \(hqURL) (TLS, local CA \(pki.caCertificate)); tenant \(Self.tenant) has 3 levels, release key \(releaseKey.publicKey)")
        // An HQ administrator for the console, with a password made for this run only.
        let password = Secrets.random(bytes: 12)
        try await SQLiteCatalog(catalog).createAdminUser(AdminUser(tenant: Self.tenant, name: "admin", roles: [.operator, .publisher, .reviewer],
                                                                   scope: "hq", createdAtMillis: WallClock.nowMillis()),
                                                         passwordHash: try await PasswordHash.makeAsync(password))
        let consoleLogin = "console \(hqURL)/console — tenant \(Self.tenant), user admin, password \(password) (one-time: made for this run)"
        say(consoleLogin)

        // Country nodes: each enrolls at HQ, then serves its dealers.
        var countryURLs: [NodeID: String] = [:]
        var stores: [NodeID: NodeStore] = ["hq": hq]
        for (country, _) in Self.layout {
            let store = try NodeStore(path: "\(base)/\(country).sqlite", checkpointing: .byOwner)
            let agentConfiguration = fast(AgentConfiguration(parentURL: hqURL, caFile: pki.caCertificate))
            try await SyncAgent.enroll(store: store, configuration: agentConfiguration,
                                       token: try catalog.issueEnrollmentToken(tenant: Self.tenant, node: country))
            let node = CountryNode(store: store, agentConfiguration: agentConfiguration,
                                   hubConfiguration: HubConfiguration(port: 0, dataDirectory: "\(base)/\(country)-directory", transport: transport))
            let (url, task) = try await start { ready in try await node.run(onReady: ready) }
            tasks.append(task)
            countryURLs[country] = url
            stores[country] = store
            say("country node \(country) on \(url), syncing with HQ")
        }

        // Dealers enroll through their country with tokens issued by HQ.
        var dealerAgents: [NodeID: Task<Void, any Error>] = [:]
        for (country, dealers) in Self.layout {
            for dealer in dealers {
                let store = try NodeStore(path: "\(base)/\(dealer).sqlite")
                let configuration = fast(AgentConfiguration(parentURL: countryURLs[country]!, caFile: pki.caCertificate))
                try await SyncAgent.enroll(store: store, configuration: configuration,
                                           token: try catalog.issueEnrollmentToken(tenant: Self.tenant, node: dealer, parent: country))
                stores[dealer] = store
                dealerAgents[dealer] = Task { try await SyncAgent(store: store, configuration: configuration).run() }
            }
        }
        say("4 dealers enrolled through their countries: " + Self.layout.flatMap(\.dealers).map(\.rawValue).joined(separator: ", "))
        let tree = try await catalog.tree(of: Self.tenant)

        // Writes at every level.
        let now = ISO8601DateFormatter().string(from: Date())
        var n = 0
        for (_, dealers) in Self.layout {
            for dealer in dealers {
                for name in [("Anna", "Schmidt"), ("Luc", "Martin")] {
                    n += 1
                    try stores[dealer]!.commit([
                        .upsert("customers", id: "cust-\(n)", ["kind": "person", "first_name": .string(name.0), "last_name": .string(name.1)]),
                        .upsert("interactions", id: "int-\(n)", [
                            "customer_id": .string("cust-\(n)"), "channel": "visit", "direction": "inbound", "topic": "test drive",
                            "knowledge_kind": "specification", "urgency": "normal", "status": "open", "created_at": .string(now),
                        ]),
                    ])
                }
            }
        }
        try stores["de"]!.commit([.upsert("interactions", id: "int-de-escalated", [
            "customer_id": "cust-1", "channel": "phone", "topic": "warranty dispute", "knowledge_kind": "specification",
            "urgency": "critical", "status": "open", "handling_level": "country", "handling_node": "de-berlin", "created_at": .string(now),
        ])])
        try hq.commit([.upsert("leads", id: "lead-hotline-1", [
            "customer_id": "cust-3", "source_channel": "phone", "source_node": "hq", "fulfilling_node": "de-munich",
            "value": 42_000.0, "currency": "EUR", "status": "new", "created_at": .string(now),
        ])])
        say("wrote 8 customers and contacts at the dealers, an escalated contact at de, and an HQ hotline lead for de-munich")
        try await waitForConvergence(stores, tree: tree, hq: hq)

        // A concurrent edit: de-berlin offline while HQ edits the same customer.
        dealerAgents["de-berlin"]!.cancel()
        _ = await dealerAgents["de-berlin"]!.result
        try stores["de-berlin"]!.commit([.upsert("customers", id: "cust-1", ["phone": "+49 30 1111"])])
        try hq.commit([.upsert("customers", id: "cust-1", ["phone": "+49 30 2222", "segment_value": "A"])])
        let berlinConfiguration = fast(AgentConfiguration(parentURL: countryURLs["de"]!, caFile: pki.caCertificate))
        let berlin = stores["de-berlin"]!
        dealerAgents["de-berlin"] = Task { try await SyncAgent(store: berlin, configuration: berlinConfiguration).run() }
        say("de-berlin went offline and edited cust-1 while HQ edited it too; back online")
        try await waitForConvergence(stores, tree: tree, hq: hq)

        // The summary.
        print("")
        print("What each node holds (its scope: itself and everything below it):")
        var rows = [["node", "path", "customers", "contacts", "leads", "has lead-hotline-1", "digest of scope", "= HQ's"]]
        for node in ["hq", "de", "fr"] + Self.layout.flatMap(\.dealers).map(\.rawValue) {
            let id = NodeID(unchecked: node)
            let store = stores[id]!
            let counts = try store.counts()
            let scope = Scope(tree: tree, node: id)
            let digest = try store.digest(scope: scope)
            rows.append([node, tree.path(of: id), "\(counts.records["customers"] ?? 0)", "\(counts.records["interactions"] ?? 0)",
                         "\(counts.records["leads"] ?? 0)", try store.record(table: "leads", id: "lead-hotline-1") != nil ? "yes" : "-",
                         String(digest.prefix(12)), digest == (try hq.digest(scope: scope)) ? "yes" : "NO"])
        }
        printTable(rows)
        print("")
        print("Conflicts kept at HQ (per-field last-writer-wins; the loser is kept):")
        for c in try hq.conflicts() {
            print("  \(c.table)/\(c.recordID).\(c.conflict.field): kept '\(c.conflict.winner)' from \(c.conflict.winnerVersion.node), lost '\(c.conflict.loser)' from \(c.conflict.loserVersion.node)")
        }
        print("")
        print("How the HQ lead reached de-munich (tiersync trace --db \(base)/de-munich.sqlite lead-hotline-1):")
        for entry in try stores["de-munich"]!.lineage(recordID: "lead-hotline-1") {
            let c = entry.change
            let hops = c.trail.map { "\($0.node) (+\(Int64($0.atMillis) - Int64(c.hlc.wallMillis)) ms)" }
            print("  \(c.origin)#\(c.originSeq): written at \(c.origin) → " + hops.joined(separator: " → "))
        }
        print("")
        say("every node converged on exactly the records in its scope; the lead reached de-munich, de and HQ only")

        try await demonstrateGovernance(stores: stores, catalog: catalog, hq: hq, key: releaseKey)

        if keepRunning {
            say(consoleLogin + "; the browser will warn about the demo's own CA (\(pki.caCertificate)). Ctrl-C ends the demo.")
            try? await runUntilSignal { while !Task.isCancelled { try await Task.sleep(for: .seconds(3600)) } }
        } else {
            say("the \(consoleLogin) lives as long as the demo: `tiersync demo --keep-running` keeps it open")
        }

        for task in dealerAgents.values { task.cancel() }
        for task in dealerAgents.values { _ = await task.result }
        for task in tasks.reversed() { task.cancel(); _ = await task.result }
    }

    /// HQ publishes a signed release; it cascades to every node; de adds an overlay within
    /// HQ's bounds; the rollout-status table shows who runs what.
    private func demonstrateGovernance(stores: [NodeID: NodeStore], catalog: HubCatalog, hq: NodeStore, key: GovernanceSigningKey) async throws {
        guard FileManager.default.fileExists(atPath: governance) else {
            say("governance part skipped: no \(governance) here (run the demo from the repository root, or pass --governance DIR)")
            return
        }
        print("")
        let compiled: CompiledGovernance
        do { compiled = try GovernanceCompiler.compile(directory: governance) } catch {
            throw CLIError("\(governance) does not validate:\n\(error)")
        }
        let publisher = GovernancePublisher(store: hq, tenant: Self.tenant, key: key, tree: try await catalog.tree(of: Self.tenant))
        let started = Date()
        let (release, _) = try await publisher.publish(compiled, notes: "demo")
        say("HQ published release v\(release.version) from \(governance) (\(compiled.config[path: "allocation"]?.objectValue?.count ?? 0) allocation rules, \(compiled.overrides.count) override limits), signed \(key.publicKey)")
        let nodes = stores.keys.filter { $0 != "hq" }
        try await wait("every node applies v\(release.version)") {
            try nodes.allSatisfy { try stores[$0]!.appliedGovernance()?.release == release.version }
        }
        say(String(format: "v\(release.version) verified and applied at all \(nodes.count) nodes in %.2f s", Date().timeIntervalSince(started)))

        // de's overlay: its key certified by HQ, checked against HQ's limits, signed by de.
        let deKey = GovernanceSigningKey()
        let keyFile = OverlayKeyFile(tenant: Self.tenant.rawValue, node: "de", privateKey: deKey.base64,
                                     certificate: try key.certify(OverlayCertificate(tenant: Self.tenant.rawValue, node: "de",
                                                                                     publicKey: deKey.publicKey.base64, issuedAtMillis: WallClock.nowMillis())))
        let source = try OverlaySource.parse(yaml: try readOptionFile(overlay, what: "overlay file (--overlay)"), file: overlay)
        let published = try OverlayPublisher.publish(source, keyFile: keyFile, store: stores["de"]!)
        say("de published overlay \(published.label): " + published.set.keys.sorted().map { "\($0) = \(published.set[$0]!)" }.joined(separator: ", "))
        try await wait("de's dealers apply the overlay") {
            try ["de-berlin", "de-munich"].allSatisfy { try stores[NodeID(unchecked: $0)]!.appliedGovernance()?.overlay == published.label }
        }
        let field = "allocation.warranty-specification.then.sla"
        let effective = { (node: NodeID) throws -> String in
            guard let json = try stores[node]!.appliedGovernance()?.effective else { return "-" }
            return try JSONDecoder().decode(ConfigValue.self, from: Data(json.utf8))[path: field]?.description ?? "-"
        }
        say("effective \(field): de-munich \(try effective("de-munich")) (release ⊕ de's overlay), fr-paris \(try effective("fr-paris")) (release)")
        try await demonstrateAllocation(stores: stores, hq: hq)
        try await demonstrateRules(stores: stores, hq: hq)
        try await demonstratePrivacy(stores: stores, hq: hq)
        // The nodes report what they applied as records that sync upward to HQ.
        let all = try await catalog.nodes(of: Self.tenant)
        try await wait("HQ hears from every node") {
            let rows = try await GovernanceStatusReport.rows(nodes: all, store: hq)
            return rows.filter { $0.parent != nil }.allSatisfy {
                $0.release == release.version && ($0.node.hasPrefix("de") ? $0.overlay == published.label : true)
            }
        }
        print("")
        print("Rollout status at HQ (tiersync admin rollout-status; GET /v1/governance/status):")
        printRolloutStatus(try await GovernanceStatusReport.response(tenant: Self.tenant, nodes: all, store: hq))
        try await demonstrateKPIs(stores: stores, hq: hq, tree: try await catalog.tree(of: Self.tenant))
    }

    /// KPIs: phone calls answered at the dealers; each node counts what it handles and sends
    /// its values up; HQ adds them up by country, against each country's target (de's
    /// overlay asks 85 % for the phone service level, the release 80 %).
    private func demonstrateKPIs(stores: [NodeID: NodeStore], hq: NodeStore, tree: NodeTree) async throws {
        let now = Date()
        let answerSeconds: [(NodeID, [Double])] = [("de-berlin", [8, 15, 25, 40]), ("de-munich", [5, 12]), ("fr-paris", [10, 18, 30]), ("fr-lyon", [22, 60])]
        let iso = ISO8601DateFormatter()
        for (dealer, waits) in answerSeconds {
            try stores[dealer]!.commit(waits.enumerated().map { i, wait in
                let created = now.addingTimeInterval(-600 + Double(i) * 60)
                return .upsert("interactions", id: "call-\(dealer)-\(i)", [
                    "channel": "phone", "direction": "inbound", "topic": "service-appointment", "knowledge_kind": "specification",
                    "urgency": "normal", "status": "resolved", "handling_node": .string(dealer.rawValue),
                    "created_at": .string(iso.string(from: created)), "answered_at": .string(iso.string(from: created.addingTimeInterval(wait))),
                    "resolved_at": .string(iso.string(from: created.addingTimeInterval(wait + 240))),
                ])
            })
        }
        say("11 phone calls answered at the dealers (de-berlin in 8, 15, 25, 40 s; de-munich 5, 12 s; fr-paris 10, 18, 30 s; fr-lyon 22, 60 s)")
        var paths: [String: [String]] = [:]
        for node in tree.parents.keys { paths[node.rawValue] = tree.path(of: node).split(separator: "/").map(String.init) }
        var report = KPIResponse(node: "hq", period: .month, byNode: true, rows: [])
        try await wait("every node's KPI snapshots reach HQ") {
            report = try await KPIViews.response(store: hq, viewer: "hq", tree: tree, period: .month, byNode: true)
            // Done when HQ's roll-ups equal a recount of the raw dialogues HQ holds.
            guard let adoption = try hq.kpiAdoption() else { return false }
            var tally = KPITally(evaluator: KPIEvaluator(catalog: adoption.catalog))
            for r in try hq.liveRecords(table: "interactions") { tally.add(DialogueFacts(id: r.id, fields: r.values)) }
            for r in try hq.liveRecords(table: "leads") { tally.add(LeadFacts(id: r.id, fields: r.values)) }
            let recount = KPIReport.rows(viewer: "hq", catalog: adoption.catalog, period: .month,
                                         observations: KPIObservation.periods(of: tally.totals(), kind: .month) { _ in nil }, paths: paths, byNode: true)
            func sums(_ rows: [KPIRow]) -> Set<String> { Set(rows.map { "\($0.kpi) \($0.periodStart) \($0.node) \($0.scope) \($0.numerator)/\($0.denominator)" }) }
            return !report.rows.isEmpty && sums(report.rows) == sums(recount)
        }
        let shown = ["service-level-phone", "average-speed-of-answer-phone", "average-handle-time"]
        let rows = report.rows.filter { shown.contains($0.kpi) && ["hq", "de", "fr"].contains($0.node) && $0.scope == .subtree }
        print("")
        print("HQ's KPIs by country this month (tiersync kpi --db <hub>/tenants/automaker.sqlite --by node; GET /v1/kpis),")
        print("each country's sum of its nodes' numerators and denominators, against its target:")
        print(KPIReport.table(rows, byNode: true), terminator: "")
        say("HQ's table equals a recount of the raw dialogues it holds; de's phone service level is judged against de's overlay (85 %), fr's against the release (80 %)")
    }

    /// A dialogue allocated where it is created: de-munich records a general question by
    /// phone; the rules in force there (v1 ⊕ de's overlay) send it to de's dialogue centre,
    /// which receives it, and HQ learns which rule decided.
    private func demonstrateAllocation(stores: [NodeID: NodeStore], hq: NodeStore) async throws {
        let id = "int-financing-question"
        try stores["de-munich"]!.commit([.upsert("interactions", id: id, [
            "customer_id": "cust-3", "channel": "phone", "direction": "inbound", "topic": "financing conditions",
            "knowledge_kind": "scheme", "urgency": "normal", "status": "new", "created_at": .string(ISO8601DateFormatter().string(from: Date())),
        ])])
        let v = try stores["de-munich"]!.record(table: "interactions", id: id)?.state.liveValues ?? [:]
        func show(_ field: String) -> String { v[field]?.description ?? "-" }
        say("de-munich recorded \(id) (a scheme question by phone): allocated by rule \(show("decision_rule")) of v\(show("decision_release")) ⊕ \(show("decision_overlay")) "
            + "→ level \(show("handling_level")), queue \(show("queue")), priority \(show("priority")), SLA due \(show("sla_due")), handled at \(show("handling_node"))")
        try await wait("de's centre and HQ receive the allocated dialogue") {
            try stores["de"]!.record(table: "interactions", id: id)?.state.liveValues["queue"] == v["queue"]
                && hq.record(table: "interactions", id: id)?.state.liveValues["decision_rule"] == v["decision_rule"]
        }
        say("de holds it in its \(show("queue")) queue (tiersync contact list --db de.sqlite); HQ sees rule \(show("decision_rule")), release v\(show("decision_release")), decided by \(show("decided_by"))")
    }

    /// Rules that act over time, with time compressed (`tiersync rules run --now`): a dealer's
    /// dialogue still unanswered after its SLA escalates to the country; a car sold two days
    /// ago gets a handover call for the customer who consents, none for the one who does not.
    private func demonstrateRules(stores: [NodeID: NodeStore], hq: NodeStore) async throws {
        let munich = stores["de-munich"]!, berlin = stores["de-berlin"]!
        let id = "int-warranty-late"
        try munich.commit([.upsert("interactions", id: id, [
            "customer_id": "cust-3", "channel": "phone", "direction": "inbound", "topic": "warranty", "knowledge_kind": "specification",
            "urgency": "normal", "status": "open", "created_at": .string(ISO8601DateFormatter().string(from: Date())),
        ])])
        let v = try munich.record(table: "interactions", id: id)?.state.liveValues ?? [:]
        guard let due = v["sla_due"]?.stringValue.flatMap(Timestamp.parse) else {
            say("rules part skipped: \(id) got no SLA")
            return
        }
        // Nobody answers; its dealer's rules run 1 minute after the SLA (time compressed).
        let later = due + 60_000
        let report = try await RulesRunner(store: munich, clock: { later }).runOnce()
        let step = report.escalated.first { $0.interactionID == id }
        say("de-munich's \(id) (allocated to \(v["queue"]?.description ?? "-"), SLA due \(Timestamp.format(due)) under v\(report.release ?? 0) ⊕ \(report.overlay ?? "-")) "
            + "still unanswered at \(Timestamp.format(later)) (tiersync rules run --now): "
            + (step.map { "escalated by rule \($0.rule) to \($0.toLevel)/\($0.toQueue) at \($0.toNode), entry escalations/\($0.recordID)" } ?? "not escalated"))
        if let step {
            try await wait("de and HQ hold the escalation") {
                try [stores["de"]!, hq].allSatisfy {
                    try $0.record(table: "escalations", id: step.recordID)?.state.isLive == true
                        && $0.record(table: "interactions", id: id)?.state.liveValues["handling_node"] == .string(step.toNode.rawValue)
                }
            }
            say("de and HQ hold one escalation of \(id) (step 1), and de has it in its \(step.toQueue) queue; every node that finds it due writes that same record")
        }

        // Two cars de-berlin sold two days ago: the handover call (3 days after the sale) is due tomorrow.
        let sold = TiersyncRules.CivilDate.format(days: TiersyncRules.CivilDate.day(ofMillis: WallClock.nowMillis()) - 2)
        try berlin.commit([
            .upsert("customers", id: "cust-consents", ["kind": "person", "last_name": "Weber", "consent_service_phone": true]),
            .upsert("customers", id: "cust-declines", ["kind": "person", "last_name": "Wolf", "consent_service_phone": false]),
            .upsert("vehicles", id: "veh-weber", ["kind": "vehicle", "customer_id": "cust-consents", "model": "ID.7", "sale_date": .string(sold)]),
            .upsert("vehicles", id: "veh-wolf", ["kind": "vehicle", "customer_id": "cust-declines", "model": "ID.7", "sale_date": .string(sold)]),
        ])
        try await RulesRunner(store: berlin).runOnce()
        let tasks = try berlin.liveRecords(table: "tasks").filter { $0.values["rule_id"] == "handover-call" }
        for vehicle in ["veh-weber", "veh-wolf"] {
            let task = tasks.first { $0.values["vehicle_id"] == .string(vehicle) }
            say("car \(vehicle) sold \(sold): " + (task.map {
                "task \($0.id) (rule handover-call, \($0.values["channel"]?.description ?? "-"), due \($0.values["due_at"]?.description ?? "-"), queue \($0.values["queue"]?.description ?? "-") at \($0.values["assigned_node"]?.description ?? "-"))"
            } ?? "no task: its customer does not consent to service calls"))
        }
    }

    /// Consent and erasure (docs/PRIVACY.md): Weber withdraws the consent to service calls on
    /// the phone to HQ's hotline; at de-berlin the open handover task is cancelled. Wolf asks
    /// to be erased at de-berlin; every replica erases and acknowledges in HQ's ledger.
    private func demonstratePrivacy(stores: [NodeID: NodeStore], hq: NodeStore) async throws {
        let berlin = stores["de-berlin"]!
        print("")
        guard let task = try berlin.liveRecords(table: "tasks").first(where: { $0.values["vehicle_id"] == "veh-weber" && $0.values["status"] == "open" }) else {
            say("privacy part skipped: no open handover task for cust-consents")
            return
        }
        try await wait("HQ holds the handover task") { try hq.record(table: "tasks", id: task.id) != nil }
        let event = try hq.recordConsent(customer: "cust-consents", purpose: .service, channel: .phone, granted: false, source: .hotline)
        say("cust-consents withdraws the consent to service calls on the phone to HQ's hotline (tiersync consent set --withdraw): recorded by \(event.recordedBy) at \(event.recordedAt)")
        try await wait("the withdrawal reaches de-berlin") {
            try berlin.record(table: "customers", id: "cust-consents")?.state.liveValues["consent_service_phone"] == .bool(false)
        }
        try await RulesRunner(store: berlin).runOnce()
        let cancelled = try berlin.record(table: "tasks", id: task.id)?.state.liveValues ?? [:]
        say("at de-berlin, task \(task.id) is now \(cancelled["status"]?.description ?? "-") (\(cancelled["cancel_reason"]?.description ?? "-")); "
            + "its consent history there: " + (try berlin.consentHistory(customer: "cust-consents").map { "\($0.purpose)/\($0.channel) \($0.granted ? "given" : "withdrawn") via \($0.source) at \($0.recordedBy)" }.joined(separator: "; ")))

        let erased = try berlin.erase(.customers, id: "cust-declines")
        say("cust-declines asks de-berlin to erase them (tiersync erase): \(erased.records) record(s) and the values of \(erased.logEntries) change-log entries gone there, write-ahead log truncated")
        try await wait("HQ's ledger shows de-berlin, de and HQ acknowledged") {
            let acked = Set(try await hq.erasureLedger().first { $0.erasureID == erased.erasureID }?.acknowledgements.map(\.node) ?? [])
            return acked.isSuperset(of: ["de-berlin", "de", "hq"])
        }
        let entry = try await hq.erasureLedger().first { $0.erasureID == erased.erasureID }
        say("HQ's ledger (tiersync admin erasures): " + (entry?.acknowledgements.map { "\($0.node) acknowledged at \($0.acknowledgedAt)" }.joined(separator: ", ") ?? "-")
            + "; a late change of cust-declines from any node is refused 'erased'")
    }

    private func wait(_ what: String, _ condition: () async throws -> Bool) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw CLIError("timed out after \(timeout) s waiting until \(what)")
    }

    /// Quick sync settings so the demo finishes in seconds.
    private func fast(_ configuration: AgentConfiguration) -> AgentConfiguration {
        var c = configuration
        c.pullWaitSeconds = 10
        c.localPollInterval = .milliseconds(50)
        return c
    }

    /// Starts a server task and returns its URL once it listens.
    private func start(_ body: @escaping @Sendable (@escaping @Sendable (Int) async -> Void) async throws -> Void) async throws -> (String, Task<Void, any Error>) {
        let (stream, continuation) = AsyncStream<Int>.makeStream()
        let task = Task { try await body { port in continuation.yield(port) } }
        var iterator = stream.makeAsyncIterator()
        guard let port = await iterator.next() else { throw CLIError("a server did not start") }
        return ("https://127.0.0.1:\(port)", task)
    }

    /// Waits until every node's digest of its scope equals HQ's digest of that scope.
    private func waitForConvergence(_ stores: [NodeID: NodeStore], tree: NodeTree, hq: NodeStore) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let converged = try stores.allSatisfy { node, store in
                let scope = Scope(tree: tree, node: node)
                return try store.digest(scope: scope) == hq.digest(scope: scope)
            }
            if converged { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw CLIError("the nodes did not converge within \(timeout) s; see the log above")
    }

    private func say(_ line: String) {
        print("• \(line)")
        flushOutput()
    }
}

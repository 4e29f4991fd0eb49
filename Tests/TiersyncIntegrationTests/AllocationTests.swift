import Foundation
import Testing
import TiersyncAgent
import TiersyncCore
import TiersyncGovernance
import TiersyncPostgres
import TiersyncRules
import TiersyncServer
import TiersyncStore
import TiersyncTestSupport

private func governanceFixture(_ path: String) -> String { repositoryRoot() + "/fixtures/governance/" + path }

/// A fixture directory copied with one text replaced in one file: a distinguishable release.
/// A hub serving the two-level insurer tenant, with a release key registered for it.
private func insurerHub(_ running: Running, directory: String, postgres: PostgresEndpoint? = nil) async throws -> (hub: RunningHub, key: GovernanceSigningKey) {
    let hub = try await running.hub(directory: directory, postgres: postgres)
    try await hub.catalogStore.createTenant("insurer", levels: 2)
    let key = GovernanceSigningKey()
    try await hub.catalogStore.setReleaseKey(key.publicKey.base64, for: "insurer")
    return (hub, key)
}

private func edited(_ fixture: String, file: String, replacing old: String, with new: String, in dir: TempDir, name: String) throws -> CompiledGovernance {
    let copy = dir.path + "/" + name
    try FileManager.default.copyItem(atPath: governanceFixture(fixture), toPath: copy)
    let path = copy + "/" + file
    let text = try String(contentsOfFile: path, encoding: .utf8)
    #expect(text.contains(old), "\(file) holds '\(old)'")
    try text.replacingOccurrences(of: old, with: new).write(toFile: path, atomically: true, encoding: .utf8)
    return try GovernanceCompiler.compile(directory: copy)
}

private func values(_ store: NodeStore, _ id: String, table: String = "interactions") throws -> [String: FieldValue]? {
    guard let record = try store.record(table: table, id: id), record.state.isLive else { return nil }
    return record.state.liveValues
}

/// The whole-second ISO time a row is created at, so its SLA due is known exactly.
private func createdNow() -> (text: String, millis: UInt64) {
    let millis = WallClock.nowMillis() / 1000 * 1000
    return (Timestamp.format(millis), millis)
}

/// One decision-table row run at a dealer: the interaction (and its new customer's fields)
/// → the rule, level, queue, priority and SLA the release in force gives it, and the node
/// it is handled at.
struct AllocationRow: Sendable, CustomTestStringConvertible {
    var interaction: [String: FieldValue]
    var customer: [String: FieldValue] = [:]
    var rule: String
    var level: String
    var queue: String
    var priority: Int
    var sla: String
    var node: NodeID
    var testDescription: String { rule }
}

@Suite("Allocation at the node", .serialized)
struct AllocationTests {
    /// Every rule of fixtures/governance/automaker, with de's overlay (warranty SLA 3h) in
    /// force, at dealer de-berlin of a real HQ + de + dealer tree over TLS.
    static let automakerRows: [AllocationRow] = [
        AllocationRow(interaction: ["urgency": "critical", "topic": "recall", "knowledge_kind": "specification", "channel": "phone"],
                      rule: "critical-product-safety", level: "hq", queue: "hq-product-safety", priority: 1, sla: "15m", node: "hq"),
        AllocationRow(interaction: ["urgency": "critical", "topic": "breakdown", "channel": "phone"],
                      rule: "critical-urgency", level: "country", queue: "country-priority-line", priority: 1, sla: "30m", node: "de"),
        AllocationRow(interaction: ["urgency": "normal", "topic": "fleet offer", "knowledge_kind": "specification", "channel": "email"],
                      customer: ["key_account": true],
                      rule: "key-accounts", level: "country", queue: "country-key-accounts", priority: 1, sla: "2h", node: "de"),
        AllocationRow(interaction: ["urgency": "high", "topic": "charging", "knowledge_kind": "specification", "channel": "phone"],
                      rule: "ev-expert-topics", level: "hq", queue: "hq-ev-experts", priority: 2, sla: "4h", node: "hq"),
        AllocationRow(interaction: ["urgency": "normal", "topic": "infotainment", "knowledge_kind": "scheme", "channel": "chat"],
                      rule: "connected-expert-topics", level: "hq", queue: "hq-connected-experts", priority: 3, sla: "8h", node: "hq"),
        AllocationRow(interaction: ["urgency": "high", "topic": "gearbox noise", "knowledge_kind": "specification", "channel": "visit"],
                      rule: "high-urgency-specification", level: "country", queue: "country-service", priority: 2, sla: "2h", node: "de"),
        AllocationRow(interaction: ["urgency": "normal", "topic": "financing conditions", "knowledge_kind": "scheme", "channel": "web"],
                      rule: "scheme-digital", level: "hq", queue: "hq-dialogue-centre", priority: 3, sla: "4h", node: "hq"),
        AllocationRow(interaction: ["urgency": "normal", "topic": "financing conditions", "knowledge_kind": "scheme", "channel": "fax"],
                      rule: "scheme-country", level: "country", queue: "country-dialogue-centre", priority: 3, sla: "1h", node: "de"),
        AllocationRow(interaction: ["urgency": "normal", "topic": "maintenance", "knowledge_kind": "specification", "channel": "phone"],
                      customer: ["segment_value": "A"],
                      rule: "warranty-specification", level: "dealer", queue: "dealer-service", priority: 3, sla: "3h", node: "de-berlin"),
        AllocationRow(interaction: ["urgency": "normal", "topic": "test drive", "knowledge_kind": "specification", "channel": "visit"],
                      customer: ["segment_value": "A"],
                      rule: "specification-top-segments", level: "dealer", queue: "dealer-sales", priority: 2, sla: "2h", node: "de-berlin"),
        AllocationRow(interaction: ["urgency": "low", "topic": "trade-in", "knowledge_kind": "specification", "channel": "phone"],
                      customer: ["segment_value": "D"],
                      rule: "specification-dealer", level: "dealer", queue: "dealer-sales", priority: 3, sla: "8h", node: "de-berlin"),
        AllocationRow(interaction: ["urgency": "normal", "topic": "opening hours", "channel": "phone"],
                      rule: "catch-all", level: "country", queue: "country-dialogue-centre", priority: 4, sla: "8h", node: "de"),
    ]

    /// Checks one allocated interaction as held by `store`.
    static func expectAllocated(_ v: [String: FieldValue], _ row: AllocationRow, created: UInt64, release: Int, overlay: String?,
                                by node: NodeID, at where_: String) {
        let due = Timestamp.format(created + UInt64(GovernanceDuration(row.sla)!.seconds) * 1000)
        #expect(v["decision_rule"] == .string(row.rule), "\(row.rule) at \(where_)")
        #expect(v["handling_level"] == .string(row.level) && v["queue"] == .string(row.queue), "\(row.rule) at \(where_): \(v)")
        #expect(v["priority"] == .int(Int64(row.priority)) && v["sla_due"] == .string(due), "\(row.rule) at \(where_): \(v)")
        #expect(v["handling_node"] == .string(row.node.rawValue), "\(row.rule) at \(where_): \(v)")
        #expect(v["decision_release"] == .int(Int64(release)) && v["decision_overlay"] == (overlay.map(FieldValue.string) ?? nil)
                && v["decided_by"] == .string(node.rawValue) && v["decided_at"] != nil, "\(row.rule) at \(where_): \(v)")
    }

    @Test("""
    Decision table over a real three-tier tree: every automaker rule, decided at dealer de-berlin from release v1 ⊕ \
    de's overlay; each interaction lands on its level's node (HQ, de, or stays at the dealer), HQ sees the rule, \
    release and overlay; the CLI's contact add and record put allocate too, and contact list at de shows the queue
    """, .timeLimit(.minutes(5)))
    func automakerDecisionTable() async throws {
        let dir = try TempDir()
        try await withRunning { running in
            let hub = try await running.hub(directory: dir.path)
            try hub.catalog.createTenant("automaker", levels: 3)
            let hqKey = GovernanceSigningKey()
            try hub.catalog.setReleaseKey(hqKey.publicKey.base64, for: "automaker")
            let de = try await running.country(hub: hub, tenant: "automaker", node: "de", directory: dir.path)
            let berlin = try await running.agent(enrolling: "de-berlin", parent: "de", tenant: "automaker", hub: hub, parentURL: de.url,
                                                 directory: dir.path)
            let hq = try hub.stores.store(for: "automaker")
            let publisher = GovernancePublisher(store: hq, tenant: "automaker", key: hqKey, tree: try await hub.catalog.tree(of: "automaker"))
            try await publisher.publish(try GovernanceCompiler.compile(directory: governanceFixture("automaker")))
            try await eventually(timeout: 30, "de applies v1") { try de.store.appliedGovernance()?.release == 1 }
            let deKey = GovernanceSigningKey()
            let keyFile = OverlayKeyFile(tenant: "automaker", node: "de", privateKey: deKey.base64,
                                         certificate: try hqKey.certify(OverlayCertificate(tenant: "automaker", node: "de", publicKey: deKey.publicKey.base64, issuedAtMillis: 0)))
            let source = try OverlaySource.parse(yaml: try String(contentsOfFile: governanceFixture("overlays/de.yaml"), encoding: .utf8), file: "de.yaml")
            try OverlayPublisher.publish(source, keyFile: keyFile, store: de.store)
            try await eventually(timeout: 30, "de-berlin applies v1 ⊕ de#1") { try berlin.store.appliedGovernance()?.overlay == "de#1" }
            #expect(try berlin.store.meta(AllocationPolicy.pathMeta) == "hq/de/de-berlin", "the dealer learned its path from de's whoami")

            // Every rule, written at the dealer through its store (the application's write path).
            var created: [String: UInt64] = [:]
            for (n, row) in Self.automakerRows.enumerated() {
                let now = createdNow()
                var interaction = row.interaction
                interaction["customer_id"] = .string("cust-\(n)")
                interaction["direction"] = "inbound"
                interaction["created_at"] = .string(now.text)
                var customer = row.customer
                customer["last_name"] = .string("Row \(n)")
                try berlin.store.commit([.upsert("customers", id: "cust-\(n)", customer), .upsert("interactions", id: "int-\(n)", interaction)])
                created["int-\(n)"] = now.millis
                let v = try #require(try values(berlin.store, "int-\(n)"))
                Self.expectAllocated(v, row, created: now.millis, release: 1, overlay: "de#1", by: "de-berlin", at: "de-berlin")
                #expect(v["originating_node"] == "de-berlin", "the creating dealer still holds it")
            }
            // Where each lands: the handling node's store holds it, with the decision; HQ sees every one.
            try await eventually(timeout: 30, "every interaction reaches HQ") {
                try Self.automakerRows.indices.allSatisfy { try values(hq, "int-\($0)")?["decision_rule"] != nil }
            }
            for (n, row) in Self.automakerRows.enumerated() {
                let atHQ = try #require(try values(hq, "int-\(n)"))
                Self.expectAllocated(atHQ, row, created: created["int-\(n)"]!, release: 1, overlay: "de#1", by: "de-berlin", at: "HQ")
                let holder: NodeStore = switch row.node { case "hq": hq; case "de": de.store; default: berlin.store }
                #expect(try values(holder, "int-\(n)")?["queue"] == .string(row.queue), "\(row.rule) is in \(row.node)'s queue")
                let route = try #require(try hq.record(table: "interactions", id: "int-\(n)")).route
                #expect(route == Set([NodeID("de-berlin"), row.node]), "\(row.rule) is routed to its creator and its handler: \(route)")
            }

            // A dialogue created at the country (its own store, as a country centre application
            // writes it): a warranty question about a de-berlin customer's car goes to that dealer,
            // decided by de with its own overlay; a vague one stays in de's centre.
            try de.store.commit([.upsert("interactions", id: "int-de-1", ["customer_id": "cust-8", "topic": "warranty", "channel": "phone",
                                                                          "knowledge_kind": "specification", "created_at": .string(createdNow().text)]),
                                 .upsert("interactions", id: "int-de-2", ["customer_id": "cust-8", "topic": "opening hours", "channel": "phone"])])
            let fromCountry = try #require(try values(de.store, "int-de-1"))
            #expect(fromCountry["decision_rule"] == "warranty-specification" && fromCountry["handling_level"] == "dealer"
                    && fromCountry["handling_node"] == "de-berlin" && fromCountry["decided_by"] == "de" && fromCountry["decision_overlay"] == "de#1",
                    "\(fromCountry)")
            #expect(try values(de.store, "int-de-2")?["handling_node"] == "de" && values(de.store, "int-de-2")?["queue"] == "country-dialogue-centre")
            try await eventually(timeout: 30, "the country's dealer-level dialogue reaches de-berlin") {
                try values(berlin.store, "int-de-1")?["queue"] == "dealer-service"
            }
            #expect(try values(berlin.store, "int-de-2") == nil, "de's own dialogue stays with de")

            // The CLI at the dealer, while its agent runs: contact add for a new key-account customer…
            let dealerDB = dir.path + "/de-berlin.sqlite"
            let added = try Child.run(["contact", "add", "--db", dealerDB, "--company", "Fleet GmbH", "--key-account", "--channel", "phone",
                                       "--topic", "fleet renewal", "--knowledge-kind", "specification", "--urgency", "normal", "--id", "int-cli"])
            #expect(added.contains("recorded contact int-cli") && added.contains("allocated by rule key-accounts of release v1 ⊕ de#1: level country, queue country-key-accounts, priority 1")
                    && added.contains("handled at de"), "\(added)")
            // …and record put of a critical recall question: HQ product safety.
            let put = try Child.run(["record", "put", "--db", dealerDB, "interactions", "int-put", "urgency=critical", "topic=airbag",
                                     "channel=phone", "summary=airbag warning light"])
            #expect(put.contains("allocated by rule critical-product-safety of release v1 ⊕ de#1: level hq, queue hq-product-safety, priority 1")
                    && put.contains("handled at hq"), "\(put)")
            // An explicit value is the writer's: the queue given stays, the rest is decided.
            let explicit = try Child.run(["record", "put", "--db", dealerDB, "interactions", "int-own", "topic=warranty", "knowledge_kind=specification",
                                          "queue=dealer-sales"])
            #expect(explicit.contains("allocated by rule warranty-specification") && explicit.contains("queue dealer-sales"), "\(explicit)")
            // The country's centre sees the key-account dialogue in its queue.
            try await eventually(timeout: 30, "int-cli reaches de") { try values(de.store, "int-cli") != nil }
            let listed = try Child.run(["contact", "list", "--db", dir.path + "/de.sqlite"])
            let line = try #require(listed.split(separator: "\n").first { $0.hasPrefix("int-cli") }, "\(listed)")
            #expect(line.contains("country-key-accounts") && line.contains(" country ") && line.contains(" de ") && line.contains("de-berlin"), "\(line)")
            try await eventually(timeout: 30, "int-put reaches HQ with its decision") {
                try values(hq, "int-put")?["decision_rule"] == "critical-product-safety"
            }
            // Received changes are not allocated again: HQ and de hold the dealer's decision as made.
            #expect(try values(de.store, "int-cli")?["decided_by"] == "de-berlin" && values(hq, "int-put")?["decided_by"] == "de-berlin")
            // A later edit at the dealer is no new dialogue: nothing is decided again.
            try berlin.store.commit([.upsert("interactions", id: "int-0", ["status": "answered"])])
            #expect(try values(berlin.store, "int-0")?["decided_at"] == values(hq, "int-0")?["decided_at"])
        }
    }

    @Test("""
    Insurer (two levels) over TLS: an agency's dialogues allocated to its own `agent` level or to HQ's queues; HQ's \
    own contact add allocates a specification question to the customer's agency, which receives it
    """, .timeLimit(.minutes(5)))
    func insurerTwoLevels() async throws {
        let dir = try TempDir()
        try await withRunning { running in
            let (hub, hqKey) = try await insurerHub(running, directory: dir.path)
            let agency = try await running.agent(enrolling: "agency-7", parent: nil, tenant: "insurer", hub: hub, parentURL: hub.url, directory: dir.path)
            let hq = try hub.stores.store(for: "insurer")
            let publisher = GovernancePublisher(store: hq, tenant: "insurer", key: hqKey, tree: try await hub.catalog.tree(of: "insurer"))
            try await publisher.publish(try GovernanceCompiler.compile(directory: governanceFixture("insurer")))
            try await eventually(timeout: 30, "agency-7 applies v1") { try agency.store.appliedGovernance()?.release == 1 }
            let rows: [AllocationRow] = [
                AllocationRow(interaction: ["urgency": "critical", "topic": "burglary", "channel": "phone"],
                              rule: "critical-claims", level: "hq", queue: "hq-claims-line", priority: 1, sla: "15m", node: "hq"),
                AllocationRow(interaction: ["urgency": "normal", "topic": "cover-change", "knowledge_kind": "specification", "channel": "email"],
                              customer: ["key_account": true],
                              rule: "commercial-clients", level: "hq", queue: "hq-commercial-clients", priority: 1, sla: "2h", node: "hq"),
                AllocationRow(interaction: ["urgency": "normal", "topic": "total-loss", "channel": "phone"],
                              rule: "claims-expert-topics", level: "hq", queue: "hq-claims-experts", priority: 2, sla: "4h", node: "hq"),
                AllocationRow(interaction: ["urgency": "normal", "topic": "address-change", "knowledge_kind": "specification", "channel": "visit"],
                              rule: "policy-service-specification", level: "agent", queue: "agent-service", priority: 3, sla: "1d", node: "agency-7"),
                AllocationRow(interaction: ["urgency": "normal", "topic": "quote", "knowledge_kind": "specification", "channel": "phone"],
                              customer: ["segment_value": "B"],
                              rule: "offer-top-segments", level: "agent", queue: "agent-sales", priority: 2, sla: "4h", node: "agency-7"),
            ]
            var created: [String: UInt64] = [:]
            for (n, row) in rows.enumerated() {
                let now = createdNow()
                var interaction = row.interaction
                interaction["customer_id"] = .string("cust-\(n)")
                interaction["created_at"] = .string(now.text)
                var customer = row.customer
                customer["last_name"] = .string("Row \(n)")
                try agency.store.commit([.upsert("customers", id: "cust-\(n)", customer), .upsert("interactions", id: "int-\(n)", interaction)])
                created["int-\(n)"] = now.millis
            }
            try await eventually(timeout: 30, "every interaction reaches HQ") { try rows.indices.allSatisfy { try values(hq, "int-\($0)") != nil } }
            for (n, row) in rows.enumerated() {
                for (store, name) in [(agency.store, "agency-7"), (hq, "HQ")] {
                    Self.expectAllocated(try #require(try values(store, "int-\(n)")), row, created: created["int-\(n)"]!, release: 1, overlay: nil,
                                         by: "agency-7", at: name)
                }
            }
            // HQ's service centre records a quote request of the agency's customer (cust-4, owned by agency-7).
            let hqDB = dir.path + "/hub/tenants/insurer.sqlite"
            let added = try Child.run(["contact", "add", "--db", hqDB, "--customer", "cust-4", "--channel", "email", "--topic", "renewal",
                                       "--knowledge-kind", "specification", "--id", "int-hq"])
            #expect(added.contains("allocated by rule offer-specification of release v1: level agent, queue agent-sales, priority 3")
                    && added.contains("handled at agency-7"), "\(added)")
            try await eventually(timeout: 30, "HQ's dialogue reaches the customer's agency") { try values(agency.store, "int-hq") != nil }
            let v = try #require(try values(agency.store, "int-hq"))
            #expect(v["handling_node"] == "agency-7" && v["originating_node"] == "hq" && v["decided_by"] == "hq" && v["decision_release"] == .int(1))
            // A program serving HQ that opens the tenant databases with the policy allocates its own writes the same way.
            let hqProgram = try TenantStores(catalog: hub.catalog, writePolicy: AllocationPolicy()).store(for: "insurer")
            try hqProgram.commit([.upsert("interactions", id: "int-hq-2", ["urgency": "critical", "topic": "storm-damage", "channel": "phone"])])
            let claim = try #require(try values(hqProgram, "int-hq-2"))
            #expect(claim["queue"] == "hq-claims-line" && claim["handling_node"] == "hq" && claim["decided_by"] == "hq", "\(claim)")
        }
    }

    @Test("two publishers at once (two administrators, two processes) each get their own release and rollout number: neither signed document replaces the other", arguments: StorageEngine.testable)
    func concurrentPublishers(engine: StorageEngine) async throws {
        let dir = try TempDir()
        try await withHubDatabase(engine) { postgres in
        try await withRunning { running in
            let (hub, hqKey) = try await insurerHub(running, directory: dir.path, postgres: postgres)
            let store = try await hub.tenantStore(for: "insurer")
            let tree = try await hub.catalogStore.tree(of: "insurer")
            let compiled = try GovernanceCompiler.compile(directory: governanceFixture("insurer"))
            let notes = (0..<4).map { "publisher \($0)" }
            // A publisher is either rolled out, or overtaken: a newer release was rolled out
            // while its own was being published, so its release is published but not put in
            // force over the newer one (the refusal names its version).
            let outcomes = try await withThrowingTaskGroup(of: (version: Int, rollout: Int?).self) { group in
                for note in notes {
                    group.addTask {
                        do {
                            let (release, rollout) = try await GovernancePublisher(store: store, tenant: "insurer", key: hqKey, tree: tree).publish(compiled, notes: note)
                            return (release.version, rollout.sequence)
                        } catch let overtaken as GovernancePublishError where overtaken.publishedVersion != nil {
                            return (overtaken.publishedVersion!, nil)
                        }
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            // Before: two of them could both take v(n+1) and the second's document replaced the first's.
            let rolledOut = outcomes.compactMap(\.rollout)
            #expect(Set(outcomes.map(\.version)) == Set(1...4) && Set(rolledOut).count == rolledOut.count && !rolledOut.isEmpty, "\(outcomes)")
            // Only an older release is ever overtaken: the newest is rolled out, and the newest rollout puts it in force.
            #expect(outcomes.first { $0.version == 4 }?.rollout == rolledOut.max(), "\(outcomes)")
            let rollouts = try await GovernancePublisher(store: store, tenant: "insurer", key: hqKey, tree: tree).rollouts()
            #expect(Set(rollouts.map(\.sequence)) == Set(rolledOut) && rollouts.last?.stages.map(\.release) == [4], "\(rollouts.map { ($0.sequence, $0.stages.map(\.release)) })")
            let stored = try await GovernancePublisher(store: store, tenant: "insurer", key: hqKey, tree: tree).releases()
            #expect(Set(stored.compactMap(\.notes)) == Set(notes), "every publisher's release is kept as signed")
        }
        }
    }

    @Test("an agent whose node id is a number (\"2\") stores and applies release 2 and rollout 2 like any other: only its own overlay's key is kept from its parent's bundle", .timeLimit(.minutes(5)))
    func numericNodeID() async throws {
        let dir = try TempDir()
        try await withRunning { running in
            let (hub, hqKey) = try await insurerHub(running, directory: dir.path)
            let two = try await running.agent(enrolling: "2", parent: nil, tenant: "insurer", hub: hub, parentURL: hub.url, directory: dir.path)
            let named = try await running.agent(enrolling: "a1", parent: nil, tenant: "insurer", hub: hub, parentURL: hub.url, directory: dir.path)
            let publisher = GovernancePublisher(store: try hub.stores.store(for: "insurer"), tenant: "insurer", key: hqKey,
                                                tree: try await hub.catalog.tree(of: "insurer"))
            try await publisher.publish(try GovernanceCompiler.compile(directory: governanceFixture("insurer")))
            try await eventually(timeout: 30, "both apply v1") { try [two, named].allSatisfy { try $0.store.appliedGovernance()?.release == 1 } }
            let v2 = try edited("insurer", file: "rules.yaml", replacing: "      queue: agent-sales\n      priority: 3\n      sla: 1d",
                                with: "      queue: agent-sales\n      priority: 3\n      sla: 12h", in: dir, name: "insurer-v2")
            try await publisher.publish(v2)
            // Before: node "2" deleted release 1 and rollout 1 and never stored release 2 or rollout 2, staying on v1.
            try await eventually(timeout: 30, "both apply v2") { try [two, named].allSatisfy { try $0.store.appliedGovernance()?.release == 2 } }
            #expect(try two.store.governanceDocuments(kind: "release").map(\.key).contains("2"))
            #expect(try two.store.governanceDocuments(kind: "rollout").map(\.key).contains("2"))
        }
    }

    @Test("""
    Release changes: without a release nothing is decided (and the CLI says so); a release governs dialogues created \
    from its effective-from on, a pending one does not yet, and earlier decisions keep the version that made them
    """, .timeLimit(.minutes(5)))
    func releaseChanges() async throws {
        let dir = try TempDir()
        try await withRunning { running in
            let (hub, hqKey) = try await insurerHub(running, directory: dir.path)
            let agency = try await running.agent(enrolling: "agency-1", parent: nil, tenant: "insurer", hub: hub, parentURL: hub.url, directory: dir.path)
            let hq = try hub.stores.store(for: "insurer")
            let db = dir.path + "/agency-1.sqlite"
            let catchAll: [String] = ["--channel", "phone", "--topic", "opening hours", "--knowledge-kind", "specification", "--urgency", "low"]
            // No release yet: written as given, no decision fields.
            let none = try Child.run(["contact", "add", "--db", db, "--last-name", "Early", "--id", "int-before"] + catchAll)
            #expect(none.contains("not allocated: no governance release in force at this node"), "\(none)")
            #expect(try values(agency.store, "int-before")?["decision_rule"] == nil && values(agency.store, "int-before")?["queue"] == nil)

            let publisher = GovernancePublisher(store: hq, tenant: "insurer", key: hqKey, tree: try await hub.catalog.tree(of: "insurer"))
            try await publisher.publish(try GovernanceCompiler.compile(directory: governanceFixture("insurer")))
            try await eventually(timeout: 30, "agency-1 applies v1") { try agency.store.appliedGovernance()?.release == 1 }
            let first = try Child.run(["contact", "add", "--db", db, "--last-name", "One", "--id", "int-v1"] + catchAll)
            #expect(first.contains("allocated by rule offer-specification of release v1"), "\(first)")
            // A level the writer names is one of the release's (helper 90: `bogus` was stored and shown allocated).
            for id in ["int-bogus", "int-v1"] {
                let bogus = try Child.capture(["record", "put", "--db", db, "interactions", id, "topic=quote", "handling_level=bogus"])
                #expect(bogus.status != 0 && bogus.output.contains("handling_level 'bogus' is not a level of release v1 in force here (hq, agent)"),
                        "\(bogus.output)")
            }
            #expect(try values(agency.store, "int-v1")?["handling_level"] == "agent")
            _ = try Child.run(["record", "put", "--db", db, "interactions", "int-v1", "handling_level=hq"])
            _ = try Child.run(["record", "put", "--db", db, "interactions", "int-v1", "handling_level=agent"])

            // v2 makes agency sales answer within 12 h instead of a day, from 4 s from now on.
            let v2 = try edited("insurer", file: "rules.yaml", replacing: "      queue: agent-sales\n      priority: 3\n      sla: 1d",
                                with: "      queue: agent-sales\n      priority: 3\n      sla: 12h", in: dir, name: "insurer-v2")
            let effective = WallClock.nowMillis() + 4_000
            try await publisher.publish(v2, effectiveFromMillis: effective)
            try await eventually(timeout: 30, "agency-1 holds v2, pending") { try agency.store.currentGovernance()?.state == "pending" }
            let pending = try Child.run(["contact", "add", "--db", db, "--last-name", "Two", "--id", "int-pending"] + catchAll)
            #expect(pending.contains("of release v1"), "before v2's effective-from, v1 decides: \(pending)")
            // A long-lived program at HQ (the policy caches its answer) decides under v1 now…
            let hqProgram = try TenantStores(catalog: hub.catalog, writePolicy: AllocationPolicy()).store(for: "insurer")
            let claim: [String: FieldValue] = ["urgency": "critical", "topic": "storm-damage", "channel": "phone"]
            try hqProgram.commit([.upsert("interactions", id: "int-hq-pending", claim)])
            #expect(try values(hqProgram, "int-hq-pending")?["decision_release"] == .int(1))
            while WallClock.nowMillis() < effective + 50 { try await Task.sleep(for: .milliseconds(100)) }
            // …and under v2 from its effective-from on, with no governance written since (it
            // held v1's answer for ever before).
            try hqProgram.commit([.upsert("interactions", id: "int-hq-v2", claim)])
            #expect(try values(hqProgram, "int-hq-v2")?["decision_release"] == .int(2))
            // From its effective-from on, v2 decides — whether or not the agent has switched yet.
            try agency.store.commit([.upsert("interactions", id: "int-v2", ["topic": "quote", "knowledge_kind": "specification", "channel": "email"])])
            let v = try #require(try values(agency.store, "int-v2"))
            #expect(v["decision_release"] == .int(2) && v["decision_rule"] == "offer-specification")
            let decidedAt = try #require(v["decided_at"]?.stringValue.flatMap(Timestamp.parse))
            #expect(Timestamp.parse(v["sla_due"]!.stringValue!)! - Timestamp.parse(v["created_at"]!.stringValue!)! == 12 * 3600 * 1000 && decidedAt >= effective)
            try await eventually(timeout: 30, "agency-1 applies v2") { try agency.store.appliedGovernance()?.release == 2 }
            try await eventually(timeout: 30, "everything reaches HQ") {
                try ["int-before", "int-v1", "int-pending", "int-v2"].allSatisfy { try values(hq, $0) != nil }
            }
            // Earlier decisions keep the version that made them, everywhere; none is re-allocated.
            for store in [agency.store, hq] {
                #expect(try values(store, "int-v1")?["decision_release"] == .int(1) && values(store, "int-pending")?["decision_release"] == .int(1))
                #expect(try values(store, "int-v2")?["decision_release"] == .int(2) && values(store, "int-before")?["decision_rule"] == nil)
            }
        }
    }

    @Test("""
    Changing a record's route delivers the whole record to the new holder: re-routed from dealer A to dealer B at \
    the country (interaction and customer), and across countries by HQ (through HQ's feed and fr's), B ends with \
    every field, not only those written since
    """, .timeLimit(.minutes(5)))
    func routeChangeDeliversTheWholeRecord() async throws {
        let dir = try TempDir()
        try await withRunning { running in
            let hub = try await running.hub(directory: dir.path)
            try hub.catalog.createTenant("automaker", levels: 3)
            let de = try await running.country(hub: hub, tenant: "automaker", node: "de", directory: dir.path)
            let fr = try await running.country(hub: hub, tenant: "automaker", node: "fr", directory: dir.path)
            let a = try await running.agent(enrolling: "de-a", parent: "de", tenant: "automaker", hub: hub, parentURL: de.url, directory: dir.path)
            let b = try await running.agent(enrolling: "de-b", parent: "de", tenant: "automaker", hub: hub, parentURL: de.url, directory: dir.path)
            let c = try await running.agent(enrolling: "fr-c", parent: "fr", tenant: "automaker", hub: hub, parentURL: fr.url, directory: dir.path)
            let hq = try hub.stores.store(for: "automaker")
            // Dealer A's customer and two dialogues, written over several changes.
            try a.store.commit([.upsert("customers", id: "c-1", ["kind": "person", "first_name": "Anna", "last_name": "Schmidt", "city": "Berlin",
                                                                 "phone": "+49 30 1", "segment_value": "B", "consent_service_phone": true])])
            for id in ["i-1", "i-2"] {
                try a.store.commit([.upsert("interactions", id: id, ["customer_id": "c-1", "channel": "phone", "direction": "inbound",
                                                                     "topic": "warranty", "knowledge_kind": "specification", "urgency": "normal",
                                                                     "created_at": "2026-11-22T10:00:00Z"])])
                try a.store.commit([.upsert("interactions", id: id, ["summary": "rattle at 80 km/h", "status": "open", "owner": "Jonas"])])
            }
            try await eventually(timeout: 30, "A's records reach HQ") {
                try values(hq, "i-2")?["owner"] != nil && values(hq, "c-1", table: "customers") != nil && values(de.store, "i-1")?["owner"] != nil
            }
            #expect(try values(b.store, "i-1") == nil && values(c.store, "i-2") == nil)

            // The country hands i-1 and the customer to dealer B (a change of route fields only).
            try de.store.commit([.upsert("interactions", id: "i-1", ["handling_node": "de-b"]),
                                 .upsert("customers", id: "c-1", ["owning_dealer": "de-b"])])
            // HQ hands i-2 to fr-c, in another country: through HQ's feed to fr, and fr's to fr-c.
            try hq.commit([.upsert("interactions", id: "i-2", ["handling_node": "fr-c", "queue": "dealer-service"])])

            try await eventually(timeout: 30, "B holds i-1 and c-1 whole") {
                try values(b.store, "i-1") == values(de.store, "i-1") && values(b.store, "c-1", table: "customers") == values(de.store, "c-1", table: "customers")
            }
            let i1 = try #require(try values(b.store, "i-1"))
            #expect(i1["summary"] == "rattle at 80 km/h" && i1["topic"] == "warranty" && i1["created_at"] == "2026-11-22T10:00:00Z" && i1["handling_node"] == "de-b")
            #expect(try values(b.store, "c-1", table: "customers")?["city"] == "Berlin")
            try await eventually(timeout: 30, "fr and fr-c hold i-2 whole") {
                try values(c.store, "i-2") == values(hq, "i-2") && values(fr.store, "i-2") == values(hq, "i-2")
            }
            #expect(try values(c.store, "i-2")?["owner"] == "Jonas" && values(c.store, "i-2")?["queue"] == "dealer-service")
            // A keeps its copies (no eviction); nothing else of A's reached B or C.
            #expect(try values(a.store, "i-1") != nil && values(b.store, "i-2") == nil && values(c.store, "i-1") == nil)
        }
    }
}

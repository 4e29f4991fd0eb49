import Foundation
import Testing
import TiersyncAgent
import TiersyncCore
import TiersyncGovernance
import TiersyncRules
import TiersyncServer
import TiersyncStore
import TiersyncTestSupport

/// `tiersync generate` run as a process on small scales: counts, the mix, allocation on
/// every inbound interaction, determinism by seed; at HQ's tenant database (automaker and
/// insurer) and at a dealer of a running three-tier tree.
@Suite("tiersync generate", .serialized)
struct GenerateCommandTests {
    static let now = "2026-11-30T17:00:00Z"
    static let nowMillis = Timestamp.parse(now)!

    /// A hub data directory with `tenant`, its dealers (node, parent) registered in the
    /// catalog, and the fixture published as release v1 through the CLI; returns the path of
    /// HQ's tenant database.
    static func hubData(_ data: String, tenant: String, levels: Int, fixture: String, dealers: [(NodeID, NodeID?)]) async throws -> String {
        _ = try Child.run(["admin", "create-tenant", "--data", data, "--tenant", tenant, "--levels", "\(levels)"])
        do {
            let catalog = try HubCatalog(directory: data)
            for (node, parent) in dealers {
                _ = try await catalog.redeem(token: try catalog.issueEnrollmentToken(tenant: try TenantID(validating: tenant), node: node, parent: parent))
            }
        }
        _ = try Child.run(["admin", "release-key", "--data", data, "--tenant", tenant])
        let published = try Child.run(["admin", "publish", repositoryRoot() + "/fixtures/governance/" + fixture, "--data", data])
        #expect(published.contains("published release v1 of \(tenant)"), "\(published)")
        return data + "/tenants/\(tenant).sqlite"
    }

    static func records(_ store: NodeStore, _ table: String) throws -> [String: [String: FieldValue]] {
        Dictionary(uniqueKeysWithValues: try store.liveRecords(table: table).map { ($0.id, $0.values) })
    }

    static func string(_ v: [String: FieldValue], _ field: String) -> String? { v[field]?.stringValue }

    /// Everything but `decided_at` (the time the write ran), by table and id.
    static func content(_ store: NodeStore) throws -> [String: [String: [String: FieldValue]]] {
        var out: [String: [String: [String: FieldValue]]] = [:]
        for table in ["customers", "vehicles", "interactions", "leads"] {
            out[table] = try records(store, table).mapValues { $0.filter { $0.key != "decided_at" } }
        }
        return out
    }

    /// Checks interactions as generated and allocated at `decidedBy`; returns them.
    static func expectInteractions(_ interactions: [String: [String: FieldValue]], decidedBy: String, handlers: Set<String>,
                                   levels: Set<String>) {
        let values = Array(interactions.values)
        let inbound = values.filter { string($0, "direction") == "inbound" }
        let outbound = values.filter { string($0, "direction") == "outbound" }
        #expect(!outbound.isEmpty && inbound.count > outbound.count * 5, "mostly inbound, some outbound")
        #expect(Set(values.compactMap { string($0, "channel") }).count >= 5, "channels: \(Set(values.compactMap { string($0, "channel") }))")
        #expect(Set(values.compactMap { string($0, "urgency") }) == ["low", "normal", "high", "critical"])
        #expect(Set(values.compactMap { string($0, "knowledge_kind") }) == ["scheme", "specification"])
        #expect(values.contains { $0["knowledge_kind"] == nil }, "some without a knowledge kind (the catch-all's)")
        #expect(Set(values.compactMap { string($0, "topic") }).count >= 15)
        // Allocation: every inbound interaction, none outbound.
        for v in inbound {
            #expect(v["decision_rule"] != nil && v["decision_release"] == .int(1) && string(v, "decided_by") == decidedBy, "\(v)")
            let created = Timestamp.parse(string(v, "created_at") ?? "")!, due = Timestamp.parse(string(v, "sla_due") ?? "")
            #expect(due.map { $0 > created && $0 <= created + 86_400_000 } == true, "SLA due after creation: \(v)")
        }
        #expect(outbound.allSatisfy { $0["decision_rule"] == nil && $0["handling_level"] == nil })
        #expect(Set(inbound.compactMap { string($0, "decision_rule") }).count >= 8, "many rules decided")
        let handledAt = Set(inbound.compactMap { string($0, "handling_node") })
        #expect(handledAt.isSubset(of: handlers) && handledAt.count >= 2, "handled at \(handledAt)")
        #expect(Set(inbound.compactMap { string($0, "handling_level") }) == levels)
        // Times and outcomes.
        for v in values {
            let created = Timestamp.parse(string(v, "created_at")!)!
            #expect(created <= nowMillis && created >= nowMillis - 62 * 86_400_000, "within the period: \(v)")
            if let answered = string(v, "answered_at").flatMap(Timestamp.parse) {
                #expect(answered >= created && answered <= nowMillis && v["owner"] != nil, "\(v)")
                if let resolved = string(v, "resolved_at").flatMap(Timestamp.parse) { #expect(resolved >= answered && resolved <= nowMillis) }
            } else {
                #expect(v["resolved_at"] == nil, "nothing resolved before an answer: \(v)")
            }
        }
        let abandoned = values.filter { v in
            v["answered_at"] == nil && string(v, "status") == "closed" && (DomainSchema.interactions.field("abandoned_at") == nil || v["abandoned_at"] != nil)
        }
        #expect(!abandoned.isEmpty, "some abandoned")
        #expect(values.filter { $0["resolved_at"] != nil }.count > values.count / 2, "most resolved")
        let pastDue = inbound.filter { v in
            v["resolved_at"] == nil && string(v, "status") != "closed" && (string(v, "sla_due").flatMap(Timestamp.parse) ?? .max) < nowMillis
        }
        #expect(!pastDue.isEmpty, "some unresolved past their SLA")
        // A follow-up: the same customer and topic again.
        let pairs = values.map { "\(string($0, "customer_id") ?? "")/\(string($0, "topic") ?? "")" }
        #expect(Set(pairs).count < pairs.count, "some customers come back about the same topic")
    }

    @Test("""
    generate at HQ's tenant database (automaker): counts, customers of the catalog's dealers with segments, key accounts \
    and consent refused or never given, vehicles with sale and leasing-end dates, interactions allocated by release v1, \
    leads won and lost; the same seed gives the same records, another seed others
    """, .timeLimit(.minutes(5)))
    func automakerAtHQ() async throws {
        let dir = try TempDir()
        let dealers: [(NodeID, NodeID?)] = [("de", nil), ("de-berlin", "de"), ("de-munich", "de")]
        let db = try await Self.hubData(dir.path + "/hq", tenant: "automaker", levels: 3, fixture: "automaker", dealers: dealers)
        let arguments = ["generate", "--db", db, "--months", "2", "--seed", "7", "--now", Self.now, "--scale", "0.5", "--batch", "97"]
        let out = try Child.run(arguments)
        #expect(out.contains("generating 2 month(s) of automaker data at node hq (tenant automaker)"), "\(out)")
        #expect(out.contains("customers owned by 2 node(s): de-berlin, de-munich"), "\(out)")
        #expect(out.contains("allocated (release v1)"), "\(out)")

        let store = try NodeStore(path: db)
        let customers = try Self.records(store, "customers"), vehicles = try Self.records(store, "vehicles")
        let interactions = try Self.records(store, "interactions"), leads = try Self.records(store, "leads")
        // (120 + 30 × 2 months) × 0.5 customers, 500 × 2 × 0.5 interactions, 60 × 2 × 0.5 leads.
        #expect(customers.count == 90 && interactions.count == 500 && leads.count == 60, "\(customers.count) \(interactions.count) \(leads.count)")
        #expect(customers.keys.allSatisfy { $0.hasPrefix("g7-hq-cust-") })
        #expect(out.contains("customers:    90 ") && out.contains("interactions: 500 ") && out.contains("leads:        60 "), "\(out)")

        let c = Array(customers.values)
        #expect(Set(c.compactMap { Self.string($0, "owning_dealer") }) == ["de-berlin", "de-munich"])
        #expect(Set(c.compactMap { Self.string($0, "segment_value") }) == ["A", "B", "C", "D"])
        #expect(c.contains { $0["key_account"] == .bool(true) } && c.contains { Self.string($0, "kind") == "company" })
        #expect(c.allSatisfy { Self.string($0, "country") == "DE" && $0["city"] != nil && $0["last_name"] != nil })
        for field in ["consent_service_phone", "consent_service_email", "consent_marketing_phone", "consent_marketing_email", "consent_marketing_sms"] {
            #expect(c.contains { $0[field] == .bool(true) } && c.contains { $0[field] == .bool(false) }, "\(field): some yes, some no")
        }
        #expect(c.contains { $0["consent_marketing_sms"] == nil }, "some never asked")
        #expect(c.filter { $0["consent_marketing_phone"] == .bool(false) }.count > c.filter { $0["consent_service_phone"] == .bool(false) }.count,
                "marketing refused more often than service")

        let v = Array(vehicles.values)
        #expect(v.count >= 60 && v.allSatisfy { Self.string($0, "kind") == "vehicle" && Self.string($0, "vin")?.count == 17 && $0["sale_date"] != nil })
        #expect(v.contains { $0["contract_end_date"] != nil } && v.contains { $0["contract_end_date"] == nil }, "some leased, some bought")
        #expect(v.contains { (Self.string($0, "sale_date") ?? "") >= "2026-10-01" }, "some sold within the period")
        #expect(v.allSatisfy { customers[Self.string($0, "customer_id") ?? ""] != nil })

        Self.expectInteractions(interactions, decidedBy: "hq", handlers: ["hq", "de-berlin", "de-munich"], levels: ["hq", "country", "dealer"])
        #expect(interactions.values.allSatisfy { customers[Self.string($0, "customer_id") ?? ""] != nil })

        let l = Array(leads.values)
        #expect(l.contains { Self.string($0, "status") == "won" } && l.contains { Self.string($0, "status") == "lost" })
        #expect(l.allSatisfy { Self.string($0, "source_node") == "hq" && ["de-berlin", "de-munich"].contains(Self.string($0, "fulfilling_node") ?? "") })
        #expect(Set(l.compactMap { Self.string($0, "source_channel") }).count >= 4)
        if DomainSchema.leads.field("won_at") != nil {
            #expect(l.allSatisfy { (Self.string($0, "status") == "won") == ($0["won_at"] != nil) }, "won_at exactly on won leads")
        }

        // The same arguments on another hub: the same records; another seed: others.
        let db2 = try await Self.hubData(dir.path + "/hq2", tenant: "automaker", levels: 3, fixture: "automaker", dealers: dealers)
        _ = try Child.run(arguments)
        _ = try Child.run(["generate", "--db", db2, "--months", "2", "--seed", "7", "--now", Self.now, "--scale", "0.5"])
        let store2 = try NodeStore(path: db2)
        #expect(try Self.content(store2) == (try Self.content(store)), "deterministic by seed (and the batch size does not matter; a rerun rewrites the same)")
        _ = try Child.run(["generate", "--db", db2, "--months", "2", "--seed", "8", "--now", Self.now, "--scale", "0.5"])
        let other = try Self.records(store2, "customers").filter { $0.key.hasPrefix("g8-") }
        #expect(other.count == 90)
        let first7 = customers["g7-hq-cust-000001"], first8 = other["g8-hq-cust-000001"]
        #expect(first7 != nil && first8 != nil && first7 != first8, "another seed, other customers")
        // A --now it cannot write a history for: a clear error, nothing written (at the start
        // of 1970 it trapped on an overflow; near 9999 it failed half-way).
        let before = try Self.records(store2, "customers").count
        for now in ["1970-01-01T00:00:00Z", "9999-06-01T00:00:00Z"] {
            let refused = try Child.capture(["generate", "--db", db2, "--months", "1", "--seed", "9", "--now", now, "--scale", "0.1"])
            #expect(refused.status == 1 && refused.output.contains("is outside what generate can write a history for: 1990-01-01"), "\(refused.output)")
        }
        #expect(try Self.records(store2, "customers").count == before)
    }

    @Test("""
    generate outlasts another process holding the store's write lock past its 15 s wait (a node's agent writing beside \
    it), when it opens the store and between its batches: it waits, tries again, says so, and writes every record \
    (helper 71: "database is locked" half-way)
    """, .timeLimit(.minutes(5)))
    func busyStore() async throws {
        let dir = try TempDir()
        let db = try await Self.hubData(dir.path + "/hq", tenant: "insurer", levels: 2, fixture: "insurer", dealers: [("agent-001", nil)])
        /// Another writer: SQLite's own write lock, taken and held for 20 s by a process of its own.
        func holdLock() throws -> SpawnedProcess {
            let out = try SpawnedProcess.pipe()
            let holder: SpawnedProcess
            do {
                defer { close(out.write) }
                holder = try SpawnedProcess(executable: "/usr/bin/env", arguments: ["python3", "-c", """
                import sqlite3, sys, time
                # Tried every millisecond: SQLite's own wait sleeps up to 100 ms between tries,
                # and generate's back-to-back commits could starve it (what the test is about).
                c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0)
                deadline = time.monotonic() + 60
                while True:
                    try:
                        c.execute("BEGIN IMMEDIATE")
                        break
                    except sqlite3.OperationalError:
                        if time.monotonic() > deadline: raise
                        time.sleep(0.001)
                print("locked", flush=True)
                time.sleep(20)
                c.execute("COMMIT")
                """, db], stdout: out.write, stderr: 2)
            } catch {
                close(out.read)
                throw error
            }
            let first = SpawnedProcess.readFirstLine(closing: out.read)
            #expect(first.hasPrefix("locked"), "\(first)")
            return holder
        }
        // Held before the command starts: opening the store (its schema check writes) waits it out.
        let before = try holdLock()
        defer { before.terminateAndWait() }
        let run = try Child.capture(["generate", "--db", db, "--months", "1", "--seed", "3", "--now", Self.now, "--scale", "0.2"])
        #expect(run.status == 0, "\(run.output)")
        #expect(try Self.records(try NodeStore(path: db), "interactions").count == 100)

        // Taken while it writes (a run of several seconds): the batch it was writing is tried again.
        let log = dir.path + "/generate.log"
        let generate = try Child(["generate", "--db", db, "--months", "12", "--seed", "4", "--now", Self.now, "--scale", "4", "--batch", "5"], log: log)
        _ = try await generate.waitForOutput(containing: "generating ")
        let during = try holdLock()
        defer { during.terminateAndWait() }
        try await eventually(timeout: 120, "generate ends") { !generate.process.isRunning }
        #expect(generate.process.terminationStatus == 0, "\(generate.output)")
        #expect(generate.output.contains("the store is busy (another process writes to it); trying the batch again"), "\(generate.output)")
        #expect(try Self.records(try NodeStore(path: db), "interactions").count == 100 + 24_000, "every record written once the lock was let go")
    }

    @Test("""
    generate at an insurer's HQ (two levels, the tenant kind read from the release): contracts with policy numbers and \
    end dates, interactions allocated to HQ's centres or the customer's agent
    """, .timeLimit(.minutes(5)))
    func insurerAtHQ() async throws {
        let dir = try TempDir()
        let db = try await Self.hubData(dir.path + "/hq", tenant: "insurer", levels: 2, fixture: "insurer",
                                        dealers: [("agent-001", nil), ("agent-002", nil), ("agent-003", nil)])
        let out = try Child.run(["generate", "--db", db, "--months", "2", "--seed", "3", "--now", Self.now, "--scale", "0.5"])
        #expect(out.contains("of insurer data at node hq"), "\(out)")
        let store = try NodeStore(path: db)
        let contracts = Array(try Self.records(store, "vehicles").values)
        #expect(contracts.count >= 90 && contracts.allSatisfy {
            Self.string($0, "kind") == "contract" && $0["policy_number"] != nil && $0["vin"] == nil && $0["contract_end_date"] != nil
        })
        #expect(contracts.contains { (Self.string($0, "contract_end_date") ?? "") <= "2027-01-29" && (Self.string($0, "contract_end_date") ?? "") >= "2026-11-30" },
                "some renew within 60 days")
        let interactions = try Self.records(store, "interactions")
        #expect(interactions.count == 500)
        Self.expectInteractions(interactions, decidedBy: "hq", handlers: ["hq", "agent-001", "agent-002", "agent-003"], levels: ["hq", "agent"])
        #expect(interactions.values.contains { Self.string($0, "topic") == "storm-damage" })
    }

    @Test("""
    generate at a dealer of a running tree: the dealer's own customers, interactions decided at the dealer and handled at \
    HQ, de or the dealer; the agent syncs them, and HQ holds those allocated to it
    """, .timeLimit(.minutes(5)))
    func dealerStore() async throws {
        let dir = try TempDir()
        try await withRunning { running in
            let hub = try await running.hub(directory: dir.path)
            try hub.catalog.createTenant("automaker", levels: 3)
            let hqKey = GovernanceSigningKey()
            try hub.catalog.setReleaseKey(hqKey.publicKey.base64, for: "automaker")
            // de's and the dealer's rules would escalate the generated dialogues whose SLA passed (on the real
            // clock) while they sync, changing them at HQ after the dealer's copy was read: they
            // run once at start (nothing to do) and not again within the test.
            let quiet = RulesSchedule(every: .seconds(3600), clock: ManualClock(Self.now))
            let de = try await running.country(hub: hub, tenant: "automaker", node: "de", directory: dir.path, rules: quiet)
            let berlin = try await running.agent(enrolling: "de-berlin", parent: "de", tenant: "automaker", hub: hub, parentURL: de.url,
                                                 directory: dir.path, rules: quiet)
            let hq = try hub.stores.store(for: "automaker")
            let publisher = GovernancePublisher(store: hq, tenant: "automaker", key: hqKey, tree: try await hub.catalog.tree(of: "automaker"))
            try await publisher.publish(try GovernanceCompiler.compile(directory: repositoryRoot() + "/fixtures/governance/automaker"))
            try await eventually(timeout: 30, "de-berlin applies v1 and knows its path") {
                try berlin.store.appliedGovernance()?.release == 1 && berlin.store.meta(AllocationPolicy.pathMeta) == "hq/de/de-berlin"
            }

            // A dealer owns what it writes: a sibling, an unknown node or its country named as
            // owners are refused before anything is written (its parent refused those
            // customers as forbidden, helper 95).
            for (others, expected) in [("de-munich", "'de-munich' in --dealers is not de-berlin"), ("de-berlin,nowhere", "'nowhere' in --dealers is not de-berlin"),
                                       ("de", "'de' in --dealers is above de-berlin (hq/de/de-berlin)")] {
                let refused = try Child.capture(["generate", "--db", dir.path + "/de-berlin.sqlite", "--months", "1", "--now", Self.now, "--dealers", others])
                #expect(refused.status != 0 && refused.output.contains(expected), "\(refused.output)")
            }
            #expect(try berlin.store.liveRecords(table: "customers").isEmpty)
            // So is a record written by hand for another dealer (helper 100: written, then
            // refused by de for good); one the dealer shares with its country is its own.
            let vehicle = try Child.capture(["record", "put", "--db", dir.path + "/de-berlin.sqlite", "vehicles", "v-munich", "kind=vehicle",
                                             "owning_dealer=de-munich"])
            #expect(vehicle.status != 0 && vehicle.output.contains("vehicles/v-munich would be routed to de-munich only: 'de-berlin' is at the last level"),
                    "\(vehicle.output)")
            #expect(try berlin.store.record(table: "vehicles", id: "v-munich") == nil)
            _ = try Child.run(["record", "put", "--db", dir.path + "/de-berlin.sqlite", "customers", "c-shared", "last_name=Shared",
                               "owning_dealer=de", "servicing_dealer=de-berlin"])
            let out = try Child.run(["generate", "--db", dir.path + "/de-berlin.sqlite", "--months", "1", "--seed", "5", "--now", Self.now,
                                     "--scale", "0.5"])
            #expect(out.contains("of automaker data at node de-berlin") && out.contains("customers owned by de-berlin"), "\(out)")
            let customers = try Self.records(berlin.store, "customers"), interactions = try Self.records(berlin.store, "interactions")
            #expect(customers.count == 76 && interactions.count == 250)
            #expect(customers.filter { $0.key != "c-shared" }.values.allSatisfy { Self.string($0, "owning_dealer") == "de-berlin" && Self.string($0, "country") == "DE" })
            Self.expectInteractions(interactions, decidedBy: "de-berlin", handlers: ["hq", "de", "de-berlin"], levels: ["hq", "country", "dealer"])
            #expect(try Self.records(berlin.store, "leads").values.allSatisfy {
                Self.string($0, "source_node") == "de-berlin" && Self.string($0, "fulfilling_node") == "de-berlin"
            })

            // Synced upward like any write: HQ ends with every interaction the dealer made
            // (each is routed to the dealer and to its handler, both under HQ).
            try await eventually(timeout: 60, "HQ holds the dealer's interactions") {
                try hq.liveRecords(table: "interactions").count == interactions.count
            }
            // de's store, which has served its log to de-berlin, is refused to a plain agent: run so
            // (a restored country store started the wrong way), it evicted what it held for its
            // dealers (helper 99).
            let asAgent = try Child.capture(["agent", "run", "--db", dir.path + "/de.sqlite"], timeout: 60)
            #expect(asAgent.status != 0 && asAgent.output.contains("is the store of de, a node that serves its log to nodes below it"), "\(asAgent.output)")
            // The check PRIVACY.md names, through the CLI: HQ's digest of the dealer's scope
            // equals the dealer's own (there was no command for HQ's side, helper 102).
            func digest(_ output: String, _ prefix: String) -> String? {
                output.split(separator: "\n").first { $0.hasPrefix(prefix) }?.split(separator: " ").last.map(String.init)
            }
            try await eventually(timeout: 60, "HQ's digest of de-berlin's scope equals de-berlin's own") {
                let own = digest(try Child.run(["status", "--db", dir.path + "/de-berlin.sqlite"]), "digest:")
                let atHQ = digest(try Child.run(["status", "--db", dir.path + "/hub/tenants/automaker.sqlite", "--scope-of", "de-berlin",
                                                 "--data", dir.path + "/hub"]), "digest of de-berlin's scope here:")
                return own != nil && own == atHQ
            }
            let atHQ = try Self.records(hq, "interactions")
            #expect(atHQ.values.filter { Self.string($0, "handling_node") == "hq" }.count
                    == interactions.values.filter { Self.string($0, "handling_node") == "hq" }.count)
            #expect(atHQ.allSatisfy { id, v in v == interactions[id] }, "HQ holds them as the dealer wrote them, decision included")
        }
    }
}

import Foundation
import Testing
import TiersyncAgent
import TiersyncCore
import TiersyncGovernance
import TiersyncRules
import TiersyncServer
import TiersyncStore
import TiersyncTestSupport

private func governanceFixture(_ path: String) -> String { repositoryRoot() + "/fixtures/governance/" + path }

private func values(_ store: NodeStore, _ id: String, table: String = "interactions") throws -> [String: FieldValue]? {
    guard let record = try store.record(table: table, id: id), record.state.isLive else { return nil }
    return record.state.liveValues.filter { !$0.value.isNull }
}

/// A table's live records by id, as a node holds them.
private func table(_ store: NodeStore, _ name: String) throws -> [String: [String: FieldValue]] {
    Dictionary(uniqueKeysWithValues: try store.liveRecords(table: name).map { ($0.id, $0.values) })
}

/// HQ (hub) + country de + dealer de-berlin over TLS, every node running its rules every
/// 100 ms on `clock`; the automaker release published and applied. Returns HQ's store.
private func automakerTree(_ running: Running, dir: TempDir, clock: ManualClock, dealers: [NodeID] = ["de-berlin"],
                           hqKey: GovernanceSigningKey = GovernanceSigningKey()) async throws
    -> (hub: RunningHub, hq: NodeStore, de: RunningCountry, dealers: [RunningAgent]) {
    let rules = RulesSchedule(every: .milliseconds(100), clock: clock)
    // Compaction off at HQ: the tests read who wrote a record from HQ's log (several nodes
    // writing one escalation step), which compaction rightly prunes once every node has it;
    // a loaded machine reaches the first pass, a minute in, before those reads.
    let hub = try await running.hub(directory: dir.path, rules: rules, retention: nil)
    try hub.catalog.createTenant("automaker", levels: 3)
    try hub.catalog.setReleaseKey(hqKey.publicKey.base64, for: "automaker")
    let de = try await running.country(hub: hub, tenant: "automaker", node: "de", directory: dir.path, rules: rules)
    var agents: [RunningAgent] = []
    for dealer in dealers {
        agents.append(try await running.agent(enrolling: dealer, parent: "de", tenant: "automaker", hub: hub, parentURL: de.url,
                                              directory: dir.path, rules: rules))
    }
    let hq = try hub.stores.store(for: "automaker")
    let publisher = GovernancePublisher(store: hq, tenant: "automaker", key: hqKey, tree: try await hub.catalog.tree(of: "automaker"))
    try await publisher.publish(try GovernanceCompiler.compile(directory: governanceFixture("automaker")))
    try await eventually(timeout: 30, "de and its dealers apply v1 and know their place") {
        try de.store.appliedGovernance()?.release == 1
            && agents.allSatisfy { try $0.store.appliedGovernance()?.release == 1 && $0.store.meta(AllocationPolicy.pathMeta) != nil }
    }
    return (hub, hq, de, agents)
}

@Suite("Escalation and proactive contacts at every node", .serialized)
struct RulesTests {
    @Test("""
    A dealer moved from de (whose overlay makes the satisfaction call 45 days after a sale) to fr: its customer's \
    open call goes to fr. Without an fr overlay fr's own call (60 days) stays and de's is cancelled as superseded \
    (fr's was cancelled, as de#1 outranked no overlay, and de kept the calls of a dealer it no longer has), or de's is \
    handed to fr when the dealer knew its place before fr's governance reached it; with an fr overlay timing it \
    alike, the one task is handed to fr
    """, .timeLimit(.minutes(5)), arguments: [false, true])
    func movedDealersTasksFollowIt(frOverlay: Bool) async throws {
        let dir = try TempDir()
        // The rules run at the real time (stamps stay within every node's clock-skew bound), on a
        // car sold 47 days ago: de's call (45 days) and fr's (60 days) are both in their windows.
        let clock = ManualClock("2026-11-01T09:00:00Z")
        clock.set(WallClock.nowMillis())
        let today = CivilDate.day(ofMillis: WallClock.nowMillis())
        let (sold, deDue, frDue) = (CivilDate.format(days: today - 47), CivilDate.format(days: today - 2), CivilDate.format(days: today + 13))
        try await withRunning { running in
            let hqKey = GovernanceSigningKey()
            let (hub, hq, de, agents) = try await automakerTree(running, dir: dir, clock: clock, hqKey: hqKey)
            let rules = RulesSchedule(every: .milliseconds(100), clock: clock)
            let fr = try await running.country(hub: hub, tenant: "automaker", node: "fr", directory: dir.path, rules: rules)
            func overlay(_ country: String, days: Int, on store: NodeStore) throws {
                let key = GovernanceSigningKey()
                let keyFile = OverlayKeyFile(tenant: "automaker", node: country, privateKey: key.base64,
                                             certificate: try hqKey.certify(OverlayCertificate(tenant: "automaker", node: country,
                                                                                               publicKey: key.publicKey.base64, issuedAtMillis: 0)))
                let yaml = "overlay:\n  country: \(country)\n  based_on: 1\n  set:\n    proactive.satisfaction-call.trigger.days_after: \(days)\n"
                try OverlayPublisher.publish(try OverlaySource.parse(yaml: yaml, file: "\(country).yaml"), keyFile: keyFile, store: store)
            }
            try overlay("de", days: 45, on: de.store)
            if frOverlay {
                try await eventually(timeout: 30, "fr applies v1") { try fr.store.appliedGovernance()?.release == 1 }
                try overlay("fr", days: 45, on: fr.store)
            }
            var berlin = agents[0]
            try await eventually(timeout: 30, "de-berlin applies v1 ⊕ de#1") { try berlin.store.appliedGovernance()?.overlay == "de#1" }
            try berlin.store.commit([
                .upsert("customers", id: "c-1", ["last_name": "Moves", "consent_marketing_phone": true]),
                .upsert("vehicles", id: "v-1", ["kind": "vehicle", "customer_id": "c-1", "model": "ID.7", "sale_date": .string(sold)]),
            ])
            let deCall = RuleRecordID.proactiveTask(rule: "satisfaction-call", vehicleID: "v-1", dueDate: deDue)
            try await eventually(timeout: 30, "HQ holds de's call") { try values(hq, deCall, table: "tasks")?["assigned_node"] == "de" }

            try await hub.catalogStore.moveNode("de-berlin", of: "automaker", to: "fr")
            await berlin.stop()
            #expect(try SyncAgent.adoptParent(store: berlin.store, url: fr.url))
            berlin = try running.agent(store: berlin.store, parentURL: fr.url, caFile: hub.caFile, rules: rules)
            try await eventually(timeout: 30, "de-berlin applies fr's governance") {
                try berlin.store.appliedGovernance()?.overlay == (frOverlay ? "fr#1" : nil) && berlin.store.meta(AllocationPolicy.pathMeta) == "hq/fr/de-berlin"
            }
            let nodes: [(String, NodeStore)] = [("hq", hq), ("fr", fr.store), ("de-berlin", berlin.store)]
            if frOverlay {
                do {
                    try await eventually(timeout: 30, "the one call is fr's everywhere") {
                        try nodes.allSatisfy { _, s in
                            let task = try values(s, deCall, table: "tasks")
                            return task?["assigned_node"] == "fr" && task?["status"] == "open"
                        }
                    }
                } catch {
                    for (name, s) in nodes + [("de", de.store)] { Issue.record("\(name): \(try table(s, "tasks"))") }
                    Issue.record("berlin lineage: \(try berlin.store.lineage(recordID: deCall).map { "\($0.change.origin) \($0.change.hlc.wallMillis) \($0.change.fields)" })")
                    Issue.record("fr lineage: \(try fr.store.lineage(recordID: deCall).map { "\($0.change.origin) \($0.change.hlc.wallMillis) \($0.change.fields)" })")
                    throw error
                }
            } else {
                let frCall = RuleRecordID.proactiveTask(rule: "satisfaction-call", vehicleID: "v-1", dueDate: frDue)
                do {
                    try await eventually(timeout: 30, "one call is open, fr's, everywhere; de's is cancelled or handed to fr") {
                        try nodes.allSatisfy { _, s in
                            let (fr, de) = (try values(s, frCall, table: "tasks"), try values(s, deCall, table: "tasks"))
                            return (fr?["status"] == "open" && fr?["assigned_node"] == "fr" && de?["status"] == "cancelled")
                                || (de?["status"] == "open" && de?["assigned_node"] == "fr" && fr?["status"] != "open")
                        }
                    }
                } catch {
                    for (name, s) in nodes { Issue.record("\(name): \(try table(s, "tasks"))") }
                    throw error
                }
                if try values(hq, deCall, table: "tasks")?["status"] == "cancelled" {
                    let reason = try values(hq, deCall, table: "tasks")?["cancel_reason"]?.stringValue ?? ""
                    #expect(reason.contains("superseded by task \(frCall): its dealer moved (de is off its path; that task is at fr)"), "\(reason)")
                }
            }
            try await Task.sleep(for: .milliseconds(500))
            for (name, s) in nodes {
                let open = try s.liveRecords(table: "tasks").filter { $0.values["status"] == "open" }
                let log = try s.lineage(recordID: open.first?.id ?? "").suffix(4).map { "\($0.change.origin) \($0.change.hlc) \($0.change.fields)" }
                #expect(open.count == 1 && open[0].values["assigned_node"] == "fr", "\(name): one open call, fr's: \(open.map(\.values)); \(log)")
            }
        }
    }

    @Test("""
    a dialogue the country takes for a dealer's customer is handled at the dealer; the dealer, offline past two SLA steps, \
    writes both (dealer → country → HQ) and sends them: its country accepts the step-2 entry (it is routed to the dealer \
    the dialogue was allocated to), and every node holds both entries
    """, .timeLimit(.minutes(5)))
    func lateDealerWritesEveryStepOfATakenDialogue() async throws {
        let dir = try TempDir()
        let clock = ManualClock("2026-12-03T10:00:00Z")
        try await withRunning { running in
            let (hub, hq, de, agents) = try await automakerTree(running, dir: dir, clock: clock)
            var berlin = agents[0]
            try berlin.store.commit([.upsert("customers", id: "c-7", ["last_name": "Weber", "segment_value": "A"])])
            try await eventually(timeout: 30, "de holds de-berlin's customer") { try values(de.store, "c-7", table: "customers") != nil }
            // The country's hotline takes a warranty question for the dealer's customer: the dealer's service desk handles it.
            try de.store.commit([.upsert("interactions", id: "i-taken", [
                "customer_id": "c-7", "direction": "inbound", "channel": "phone", "topic": "warranty", "knowledge_kind": "specification",
                "urgency": "normal", "status": "open", "created_at": "2026-12-03T10:00:00Z"])])
            let taken = try #require(try values(de.store, "i-taken"))
            #expect(taken["handling_node"] == "de-berlin" && taken["originating_node"] == "de" && taken["sla_due"] == "2026-12-03T14:00:00Z", "\(taken)")
            try await eventually(timeout: 30, "de-berlin holds the dialogue") { try values(berlin.store, "i-taken") != nil }

            // Offline until both steps are due (14:00 to de, 18:00 to HQ); nobody else evaluates meanwhile (the clock stays at 10:00).
            await berlin.stop()
            let offline = try Child.run(["rules", "run", "--db", dir.path + "/de-berlin.sqlite", "--now", "2026-12-03T18:05:00Z"])
            #expect(offline.contains("2 escalation step(s)"), "\(offline)")
            let (step1, step2) = (RuleRecordID.escalation(interactionID: "i-taken", step: 1), RuleRecordID.escalation(interactionID: "i-taken", step: 2))
            let second = try #require(try values(berlin.store, step2, table: "escalations"))
            #expect(second["from_node"] == "de" && second["to_node"] == "hq" && second["originating_node"] == "de"
                    && second["allocated_node"] == "de-berlin", "\(second)")

            berlin = try running.agent(store: berlin.store, parentURL: de.url, caFile: hub.caFile)
            // Before: de refused step 2 as outside de-berlin's scope, and de-berlin retried it for ever.
            try await eventually(timeout: 30, "HQ and de hold both steps as de-berlin wrote them") {
                try [hq, de.store].allSatisfy { s in
                    try values(s, step1, table: "escalations") == values(berlin.store, step1, table: "escalations")
                        && values(s, step2, table: "escalations") == second && values(s, "i-taken")?["handling_node"] == "hq"
                }
            }
            #expect(try de.store.quarantined().isEmpty && hq.quarantined().isEmpty)
        }
    }

    @Test("""
    SLA escalation exactly once over TLS, three tiers, on a test clock: HQ's and de's runners escalate a dealer's \
    dialogue at its SLA on their own, the dealer offline until after the due time escalates it too (`rules run --now`); \
    one entry per step everywhere, the same values, no conflict; a dialogue resolved first never escalates; one \
    answered offline before its due has its escalation withdrawn; the next step takes it to HQ, whole
    """, .timeLimit(.minutes(5)))
    func escalationExactlyOnce() async throws {
        let dir = try TempDir()
        let clock = ManualClock("2026-12-03T10:00:00Z")
        try await withRunning { running in
            let (hub, hq, de, agents) = try await automakerTree(running, dir: dir, clock: clock)
            var berlin = agents[0]
            // Three warranty questions at the dealer at 10:00: allocated to its service desk, due at 14:00.
            let dialogue: [String: FieldValue] = ["customer_id": "c-1", "direction": "inbound", "channel": "phone", "topic": "warranty",
                                                  "knowledge_kind": "specification", "urgency": "normal", "status": "open",
                                                  "created_at": "2026-12-03T10:00:00Z"]
            try berlin.store.commit([.upsert("customers", id: "c-1", ["last_name": "Schmidt", "segment_value": "A"])]
                                    + ["i-late", "i-resolved", "i-crossed"].map { .upsert("interactions", id: $0, dialogue) })
            for id in ["i-late", "i-resolved", "i-crossed"] {
                let v = try #require(try values(berlin.store, id))
                #expect(v["decision_rule"] == "warranty-specification" && v["handling_node"] == "de-berlin" && v["queue"] == "dealer-service"
                        && v["sla_due"] == "2026-12-03T14:00:00Z", "\(v)")
            }
            // i-resolved is resolved at 11:00, before its due, and every node learns it.
            try berlin.store.commit([.upsert("interactions", id: "i-resolved", ["status": "resolved", "answered_at": "2026-12-03T10:30:00Z",
                                                                                 "resolved_at": "2026-12-03T11:00:00Z"])])
            try await eventually(timeout: 30, "HQ and de hold the dialogues, i-resolved resolved") {
                try [hq, de.store].allSatisfy { s in
                    try values(s, "i-resolved")?["status"] == "resolved" && values(s, "i-late") != nil && values(s, "i-crossed") != nil
                }
            }

            // de-berlin goes offline. There i-crossed is answered at 13:30, before its due; nobody else learns it yet.
            await berlin.stop()
            try berlin.store.commit([.upsert("interactions", id: "i-crossed", ["status": "answered", "answered_at": "2026-12-03T13:30:00Z"])])

            // 14:00 passes. HQ's runner (in the hub process) and de's (in the country node), each from its own
            // store, escalate the two dialogues they see unanswered.
            clock.set("2026-12-03T14:00:01Z")
            let late1 = RuleRecordID.escalation(interactionID: "i-late", step: 1)
            let crossed1 = RuleRecordID.escalation(interactionID: "i-crossed", step: 1)
            try await eventually(timeout: 30, "HQ and de hold step 1 of i-late and of i-crossed") {
                try [hq, de.store].allSatisfy { s in
                    try values(s, late1, table: "escalations") != nil && values(s, crossed1, table: "escalations") != nil
                        && values(s, "i-late")?["handling_node"] == "de"
                }
            }
            let entry = try #require(try values(hq, late1, table: "escalations"))
            #expect(entry["interaction_id"] == "i-late" && entry["step"] == .int(1) && entry["rule"] == "dealer-sla-breach"
                    && entry["condition"] == "sla_breached_by 0s" && entry["due_at"] == "2026-12-03T14:00:00Z"
                    && entry["from_node"] == "de-berlin" && entry["from_queue"] == "dealer-service" && entry["to_level"] == "country"
                    && entry["to_queue"] == "country-service" && entry["to_node"] == "de" && entry["status"] == "escalated"
                    && entry["notify"] == "country-service-manager,dealer-general-manager" && entry["release"] == .int(1), "\(entry)")

            // The dealer, still offline after the due time, evaluates its own copy: it escalates i-late too
            // (the same record), and nothing it knows to be answered or resolved.
            let offline = try Child.run(["rules", "run", "--db", dir.path + "/de-berlin.sqlite", "--now", "2026-12-03T14:05:00Z"])
            #expect(offline.contains("rules of release v1 at de-berlin, evaluated at 2026-12-03T14:05:00Z")
                    && offline.contains("escalated i-late step 1 by rule dealer-sla-breach (sla_breached_by 0s, due 2026-12-03T14:00:00Z): "
                                        + "dealer/dealer-service at de-berlin → country/country-service at de")
                    && offline.contains("[escalations/\(late1)]") && offline.contains("1 escalation step(s)"), "\(offline)")
            #expect(!offline.contains("i-crossed") && !offline.contains("i-resolved"), "\(offline)")
            #expect(try values(berlin.store, late1, table: "escalations") == entry, "the dealer wrote the same entry as HQ and de")

            // Back online: everything converges, one record per step.
            berlin = try running.agent(store: berlin.store, parentURL: de.url, caFile: hub.caFile,
                                       rules: RulesSchedule(every: .milliseconds(100), clock: clock))
            let nodes: [(String, NodeStore)] = [("hq", hq), ("de", de.store), ("de-berlin", berlin.store)]
            try await eventually(timeout: 30, "every node holds the same escalations and dialogues; i-crossed's step withdrawn") {
                let reference = try table(hq, "escalations")
                return try nodes.allSatisfy { _, s in
                    try table(s, "escalations") == reference && values(s, crossed1, table: "escalations")?["status"] == "withdrawn"
                        && ["i-late", "i-crossed", "i-resolved"].allSatisfy { try values(s, $0) == values(hq, $0) }
                        && values(s, "i-crossed")?["handling_node"] == "de-berlin"
                }
            }
            for (name, s) in nodes {
                let entries = try s.liveRecords(table: "escalations")
                #expect(entries.filter { $0.values["interaction_id"] == "i-late" }.map(\.id) == [late1], "\(name): one step-1 entry")
                #expect(!entries.contains { $0.values["interaction_id"] == "i-resolved" }, "\(name): resolved first, never escalated")
                let late = try #require(try values(s, "i-late"))
                #expect(late["handling_level"] == "country" && late["queue"] == "country-service" && late["handling_node"] == "de"
                        && late["escalation_step"] == .int(1) && late["escalated_at"] == "2026-12-03T14:00:00Z"
                        && late["sla_due"] == "2026-12-03T14:00:00Z", "\(name): \(late)")
                let crossed = try #require(try values(s, "i-crossed"))
                #expect(crossed["handling_level"] == "dealer" && crossed["queue"] == "dealer-service" && crossed["escalation_step"] == .int(0)
                        && crossed["escalated_at"] == nil && crossed["status"] == "answered", "\(name): \(crossed)")
                #expect(try values(s, crossed1, table: "escalations")?["withdrawn_reason"] == "answered at 2026-12-03T13:30:00Z, before this escalation was due")
                #expect(try s.conflicts(table: "escalations").isEmpty, "\(name): writers of one step agree")
            }
            // Several nodes wrote step 1 of i-late independently, the offline dealer among them: one record.
            let writers = Set(try hq.lineage(recordID: late1).map(\.change.origin))
            #expect(writers.contains("de-berlin") && writers.count >= 2, "\(writers)")

            // 18:00: i-late is still unanswered at de, 4 h past its SLA: step 2 takes it to HQ customer relations.
            clock.set("2026-12-03T18:00:01Z")
            let late2 = RuleRecordID.escalation(interactionID: "i-late", step: 2)
            try await eventually(timeout: 30, "every node holds step 2 and i-late at HQ, the same everywhere") {
                try nodes.allSatisfy { _, s in
                    try values(s, late2, table: "escalations")?["to_node"] == "hq" && values(s, "i-late")?["handling_node"] == "hq"
                        && values(s, "i-late") == values(berlin.store, "i-late") && table(s, "escalations") == table(hq, "escalations")
                }
            }
            let atHQ = try #require(try values(hq, "i-late"))
            #expect(atHQ["queue"] == "hq-customer-relations" && atHQ["escalation_step"] == .int(2) && atHQ["topic"] == "warranty"
                    && atHQ["created_at"] == "2026-12-03T10:00:00Z" && atHQ["decision_rule"] == "warranty-specification",
                    "HQ, the new holder, has the whole record: \(atHQ)")
            #expect(try hq.record(table: "interactions", id: "i-late")?.route == ["de-berlin", "hq"])
            // Days later nothing more escalates: HQ is the top.
            clock.set("2026-12-10T00:00:00Z")
            try await Task.sleep(for: .milliseconds(600))
            for (name, s) in nodes {
                #expect(try s.liveRecords(table: "escalations", where: [.equals("interaction_id", "i-late")]).count == 2, "\(name)")
            }
        }
    }

    @Test("""
    Proactive contacts in a three-tier tree on a test clock: the dealer and de create a consenting customer's handover \
    call, one task per rule and vehicle everywhere, none for customers without consent, none at HQ's hand or at \
    another dealer; withdrawn consent cancels it everywhere; the country's satisfaction call goes to de and is seen at \
    the dealer
    """, .timeLimit(.minutes(5)))
    func proactiveTasks() async throws {
        let dir = try TempDir()
        let clock = ManualClock("2026-11-01T09:00:00Z")
        try await withRunning { running in
            let (_, hq, de, agents) = try await automakerTree(running, dir: dir, clock: clock, dealers: ["de-berlin", "de-munich"])
            let (berlin, munich) = (agents[0], agents[1])
            // Three cars sold by de-berlin on 1 December; only c-yes consents to service and marketing calls.
            try berlin.store.commit([
                .upsert("customers", id: "c-yes", ["last_name": "Yes", "consent_service_phone": true, "consent_marketing_phone": true]),
                .upsert("customers", id: "c-no", ["last_name": "No", "consent_service_phone": false, "consent_marketing_email": true]),
                .upsert("customers", id: "c-none", ["last_name": "Unknown"]),
                .upsert("vehicles", id: "v-yes", ["kind": "vehicle", "customer_id": "c-yes", "model": "ID.7", "sale_date": "2026-12-01"]),
                .upsert("vehicles", id: "v-no", ["kind": "vehicle", "customer_id": "c-no", "model": "ID.3", "sale_date": "2026-12-01"]),
                .upsert("vehicles", id: "v-none", ["kind": "vehicle", "customer_id": "c-none", "model": "ID.4", "sale_date": "2026-12-01"]),
                // A car whose customer the dealer does not hold: its consent is unknown here, not refused.
                .upsert("vehicles", id: "v-orphan", ["kind": "vehicle", "customer_id": "c-elsewhere", "model": "ID.5", "sale_date": "2026-12-01"]),
            ])
            try await eventually(timeout: 30, "de and HQ hold the cars and customers") {
                try [hq, de.store].allSatisfy { s in try values(s, "v-none", table: "vehicles") != nil && values(s, "c-none", table: "customers") != nil }
            }
            #expect(try berlin.store.liveRecords(table: "tasks").isEmpty, "a month before the due date: no task yet")

            // 3 December: the handover calls (due 4 December) are in their window. The dealer's and de's
            // runners each create what they find; HQ's does not (HQ does not run de's overlay timing).
            clock.set("2026-12-03T10:00:00Z")
            let handover = RuleRecordID.proactiveTask(rule: "handover-call", vehicleID: "v-yes", dueDate: "2026-12-04")
            let nodes: [(String, NodeStore)] = [("hq", hq), ("de", de.store), ("de-berlin", berlin.store)]
            try await eventually(timeout: 30, "every node holds the handover task") {
                try nodes.allSatisfy { _, s in try values(s, handover, table: "tasks") != nil }
            }
            try await Task.sleep(for: .milliseconds(500))
            try await eventually(timeout: 30, "every node holds the same tasks") {
                try nodes.allSatisfy { _, s in try table(s, "tasks") == table(hq, "tasks") }
            }
            for (name, s) in nodes {
                let tasks = try table(s, "tasks")
                #expect(Array(tasks.keys) == [handover], "\(name): exactly one task, for the consenting customer: \(tasks)")
                let task = try #require(tasks[handover])
                #expect(task["rule_id"] == "handover-call" && task["vehicle_id"] == "v-yes" && task["customer_id"] == "c-yes"
                        && task["assigned_node"] == "de-berlin" && task["owning_dealer"] == "de-berlin" && task["status"] == "open"
                        && task["due_at"] == "2026-12-04T00:00:00Z" && task["channel"] == "phone" && task["queue"] == "dealer-sales"
                        && task["requires_consent"] == "service_phone" && task["kind"] == "proactive", "\(name): \(task)")
            }
            #expect(try munich.store.liveRecords(table: "tasks").isEmpty, "another dealer's customers are not de-munich's")
            let writers = Set(try hq.lineage(recordID: handover).map(\.change.origin))
            #expect(!writers.isEmpty && writers.isSubset(of: ["de-berlin", "de"]), "created by the dealer and/or de, never HQ: \(writers)")
            // The CLI says why the others got none, and creates nothing twice.
            let cli = try Child.run(["rules", "run", "--db", dir.path + "/de-berlin.sqlite", "--now", "2026-12-03T10:00:00Z"])
            #expect(cli.contains("no task: rule handover-call for vehicle v-no: the customer's consent is not given")
                    && cli.contains("no task: rule handover-call for vehicle v-none") && cli.contains("0 task(s) created"), "\(cli)")
            #expect(cli.contains("no task: rule handover-call for vehicle v-orphan: its customer, as the vehicle's dealer holds it, is not held here, so its consent is unknown"), "\(cli)")

            // No node writes an outbound contact without consent: a task for c-no, a marketing call to c-none.
            let berlinDB = dir.path + "/de-berlin.sqlite"
            let refusedTask = try Child.capture(["record", "put", "--db", berlinDB, "tasks", "t-manual", "customer_id=c-no",
                                                 "requires_consent=service_phone", "status=open", "channel=phone"])
            #expect(refusedTask.status != 0 && refusedTask.output.contains("customer c-no has not given consent_service_phone"), "\(refusedTask.output)")
            // The consent is the one of the channel the task is made by: c-no's e-mail consent is no call's.
            let otherChannel = try Child.capture(["record", "put", "--db", berlinDB, "tasks", "t-manual", "customer_id=c-no",
                                                  "requires_consent=marketing_email", "status=open", "channel=phone"])
            #expect(otherChannel.status != 0 && otherChannel.output.contains("customer c-no has not given consent_marketing_phone"), "\(otherChannel.output)")
            #expect(throws: StoreError.self) {
                try berlin.store.commit([.upsert("interactions", id: "call-1", ["customer_id": "c-none", "direction": "outbound",
                                                                               "purpose": "marketing", "channel": "phone"])])
            }
            #expect(try berlin.store.record(table: "tasks", id: "t-manual") == nil)

            // c-yes withdraws the consent before the due date, on the phone to HQ's hotline: recorded at HQ with
            // its history, the dealer's open task is cancelled everywhere, once.
            let hqDB = dir.path + "/hub/tenants/automaker.sqlite"
            let withdrawn = try Child.run(["consent", "set", "--db", hqDB, "--customer", "c-yes", "--purpose", "service", "--channel", "phone",
                                           "--withdraw", "--source", "hotline"])
            #expect(withdrawn.contains("c-yes: consent service by phone withdrawn (hotline, recorded by hq"), "\(withdrawn)")
            try await eventually(timeout: 30, "every node holds the task cancelled") {
                try nodes.allSatisfy { _, s in
                    try values(s, handover, table: "tasks")?["status"] == "cancelled" && table(s, "tasks") == table(hq, "tasks")
                }
            }
            let cancelled = try #require(try values(hq, handover, table: "tasks"))
            #expect(cancelled["cancel_reason"] == "consent service_phone withdrawn" && cancelled["cancelled_at"] != nil, "\(cancelled)")
            // The history reaches the customer's dealer: who recorded it, when, from where.
            try await eventually(timeout: 30, "the dealer holds the consent history") { try !berlin.store.consentHistory(customer: "c-yes").isEmpty }
            let history = try berlin.store.consentHistory(customer: "c-yes")
            #expect(history.map { "\($0.purpose)_\($0.channel)=\($0.granted) \($0.source) by \($0.recordedBy)" } == ["service_phone=false hotline by hq"]
                    && history[0].recordedAt.hasPrefix("20"), "\(history)")
            let shown = try Child.run(["consent", "show", "--db", berlinDB, "--customer", "c-yes"])
            #expect(shown.contains("withdrawn") && shown.contains("hotline") && shown.contains("hq"), "\(shown)")

            // 20 January: the satisfaction call, 60 days after the sale, is de's dialogue centre's (country level);
            // c-yes still consents to marketing calls, c-no never did.
            clock.set("2027-01-20T09:00:00Z")
            let satisfaction = RuleRecordID.proactiveTask(rule: "satisfaction-call", vehicleID: "v-yes", dueDate: "2027-01-30")
            try await eventually(timeout: 30, "de, the dealer and HQ hold the satisfaction call") {
                try nodes.allSatisfy { _, s in try values(s, satisfaction, table: "tasks")?["assigned_node"] == "de" && table(s, "tasks") == table(hq, "tasks") }
            }
            for (name, s) in nodes {
                let tasks = try s.liveRecords(table: "tasks").map(\.values)
                let perRuleAndVehicle = Dictionary(grouping: tasks) { "\($0["rule_id"]!.description)/\($0["vehicle_id"]!.description)" }
                #expect(perRuleAndVehicle.count == 2 && perRuleAndVehicle.values.allSatisfy { $0.count == 1 }, "\(name): \(perRuleAndVehicle.keys.sorted())")
                #expect(!tasks.contains { $0["vehicle_id"] != "v-yes" }, "\(name): none without consent")
            }
            #expect(try values(berlin.store, satisfaction, table: "tasks")?["queue"] == "country-dialogue-centre", "the dealer sees its customer's call")
        }
    }

    @Test("""
    A sale date corrected to an earlier day: the handover call planned from the date as it is now stays, though due \
    earlier, and the one planned from the wrong date is cancelled at every node (the later due date kept the wrong one \
    and cancelled the right one, "the rule's timing changed")
    """, .timeLimit(.minutes(5)))
    func correctedSaleDate() async throws {
        let dir = try TempDir()
        // The rules' clock is the real one: every write's version comes from it, so the
        // correction's is the newer (a test clock months ahead stamps rule writes in the
        // future, and a node's versions with them).
        let now = WallClock.nowMillis()
        let clock = ManualClock(now)
        let day = { (offset: Int) in CivilDate.format(days: CivilDate.day(ofMillis: now) + offset) }
        try await withRunning { running in
            let (_, hq, de, agents) = try await automakerTree(running, dir: dir, clock: clock)
            let berlin = agents[0]
            let nodes: [(String, NodeStore)] = [("hq", hq), ("de", de.store), ("de-berlin", berlin.store)]
            try berlin.store.commit([
                .upsert("customers", id: "c-fix", ["last_name": "Fix", "consent_service_phone": true]),
                .upsert("vehicles", id: "v-fix", ["kind": "vehicle", "customer_id": "c-fix", "model": "ID.7", "sale_date": .string(day(1))]),
            ])
            // The handover call is due 3 days after the sale.
            let wrong = RuleRecordID.proactiveTask(rule: "handover-call", vehicleID: "v-fix", dueDate: day(4))
            try await eventually(timeout: 30, "every node holds the call of the first date") {
                try nodes.allSatisfy { _, s in try values(s, wrong, table: "tasks")?["status"] == "open" }
            }
            try berlin.store.commit([.upsert("vehicles", id: "v-fix", ["sale_date": .string(day(-1))])])
            let right = RuleRecordID.proactiveTask(rule: "handover-call", vehicleID: "v-fix", dueDate: day(2))
            try await eventually(timeout: 30, "every node holds the corrected date's call open and the other cancelled") {
                try nodes.allSatisfy { _, s in
                    try values(s, right, table: "tasks")?["status"] == "open" && values(s, wrong, table: "tasks")?["status"] == "cancelled"
                        && table(s, "tasks") == table(hq, "tasks")
                }
            }
            #expect(try values(hq, wrong, table: "tasks")?["cancel_reason"]
                    == .string("superseded by task \(right): the vehicle's date it was planned from changed (that task is due \(day(2)))"))
        }
    }

    @Test("""
    A proactive task the dealer created and closed while offline stays closed when its country, not knowing, \
    creates it later: every creation is stamped when the task's window opened (the country's, stamped now, \
    reopened it everywhere)
    """, .timeLimit(.minutes(5)))
    func proactiveTaskClosedOffline() async throws {
        let dir = try TempDir()
        let clock = ManualClock("2026-11-01T09:00:00Z")
        try await withRunning { running in
            let (hub, hq, de, agents) = try await automakerTree(running, dir: dir, clock: clock)
            var berlin = agents[0]
            try berlin.store.commit([
                .upsert("customers", id: "c-yes", ["last_name": "Yes", "consent_service_phone": true]),
                .upsert("vehicles", id: "v-yes", ["kind": "vehicle", "customer_id": "c-yes", "model": "ID.7", "sale_date": "2026-12-01"]),
            ])
            try await eventually(timeout: 30, "de holds the car") { try values(de.store, "v-yes", table: "vehicles") != nil }
            // The dealer goes offline; on 20 November (the handover call, due 4 December, is in its window)
            // its own rules create the task, and its staff make the call and close it.
            await berlin.stop()
            let berlinDB = dir.path + "/de-berlin.sqlite"
            let handover = RuleRecordID.proactiveTask(rule: "handover-call", vehicleID: "v-yes", dueDate: "2026-12-04")
            let offline = try Child.run(["rules", "run", "--db", berlinDB, "--now", "2026-11-20T10:00:00Z"])
            #expect(offline.contains("1 task(s) created"), "\(offline)")
            _ = try Child.run(["record", "put", "--db", berlinDB, "tasks", handover, "status=done"])
            #expect(try values(berlin.store, handover, table: "tasks")?["status"] == "done")
            // de's rules, a day later, do not know: they create the task (open) themselves.
            clock.set("2026-11-21T10:00:00Z")
            try await eventually(timeout: 30, "de creates the task") { try values(de.store, handover, table: "tasks")?["status"] == "open" }
            // Back online: the call made stays made, at every node.
            berlin = try running.agent(store: berlin.store, parentURL: de.url, caFile: hub.caFile,
                                       rules: RulesSchedule(every: .milliseconds(100), clock: clock))
            let nodes: [(String, NodeStore)] = [("hq", hq), ("de", de.store), ("de-berlin", berlin.store)]
            try await eventually(timeout: 30, "every node holds the task") {
                try nodes.allSatisfy { _, s in try values(s, handover, table: "tasks") != nil && table(s, "tasks") == table(hq, "tasks") }
            }
            try await Task.sleep(for: .milliseconds(500))
            try await eventually(timeout: 30, "every node holds the same task") {
                try nodes.allSatisfy { _, s in try table(s, "tasks") == table(hq, "tasks") }
            }
            for (name, s) in nodes {
                let task = try values(s, handover, table: "tasks")
                #expect(task?["status"] == "done", "\(name): \(String(describing: task))")
                #expect(try s.liveRecords(table: "tasks").count == 1, "\(name)")
            }
        }
    }

    @Test("""
    A vehicle a dealer writes naming a sibling dealer's customer gets no task: the country's rules combine a vehicle \
    only with a customer routed to its dealer (they planned a call to the sibling's customer and told the writer it \
    consents)
    """, .timeLimit(.minutes(5)))
    func vehicleNamingSiblingsCustomer() async throws {
        let dir = try TempDir()
        let clock = ManualClock("2026-12-03T10:00:00Z")
        try await withRunning { running in
            let (_, hq, de, agents) = try await automakerTree(running, dir: dir, clock: clock, dealers: ["de-berlin", "de-munich"])
            let (berlin, munich) = (agents[0], agents[1])
            try berlin.store.commit([
                .upsert("customers", id: "c-yes", ["last_name": "Yes", "consent_service_phone": true]),
                .upsert("vehicles", id: "v-yes", ["kind": "vehicle", "customer_id": "c-yes", "model": "ID.7", "sale_date": "2026-12-01"]),
            ])
            // de-munich writes a car of its own naming de-berlin's customer.
            try munich.store.commit([.upsert("vehicles", id: "v-probe", ["kind": "vehicle", "customer_id": "c-yes", "model": "ID.3",
                                                                          "sale_date": "2026-12-01"])])
            let real = RuleRecordID.proactiveTask(rule: "handover-call", vehicleID: "v-yes", dueDate: "2026-12-04")
            let probe = RuleRecordID.proactiveTask(rule: "handover-call", vehicleID: "v-probe", dueDate: "2026-12-04")
            try await eventually(timeout: 30, "de holds both cars and the real task") {
                try values(de.store, "v-probe", table: "vehicles") != nil && values(de.store, real, table: "tasks") != nil
            }
            // Rule runs at de (every 100 ms) have seen the probe: still no task for it, anywhere.
            try await Task.sleep(for: .seconds(2))
            for (name, s) in [("hq", hq), ("de", de.store), ("de-munich", munich.store), ("de-berlin", berlin.store)] {
                #expect(try values(s, probe, table: "tasks") == nil, "\(name)")
            }
            #expect(try munich.store.record(table: "customers", id: "c-yes") == nil)
        }
    }
}

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

/// HQ's own rules runner on either engine: the hub evaluates escalation from its tenant store,
/// whether that is a SQLite file or a PostgreSQL schema served by several processes.
@Suite("HQ's rules on either engine", .serialized)
struct HQRulesEngineTests {
    /// A record as HQ's tenant store holds it (live, nulls left out), on either engine.
    static func held(_ store: any HubTenantStore, _ table: String, _ id: String) async throws -> [String: FieldValue]? {
        try await store.liveRecords(inTable: table).first { $0.id == id }?.values.filter { !$0.value.isNull }
    }

    @Test("""
    HQ escalates on either engine while the dealer is offline and the country's clock stands still: a dealer's \
    dialogue unanswered at its SLA is escalated by HQ's runner alone (on PostgreSQL two hub processes run it, one at a time), once; one resolved first \
    is not; the dealer back online receives the step, and its answer given offline before the due withdraws the \
    step HQ wrote
    """, .timeLimit(.minutes(5)), arguments: StorageEngine.testable)
    func hqEscalatesOnEitherEngine(engine: StorageEngine) async throws {
        let dir = try TempDir()
        // After the release's effective-from (its publication, now): HQ runs the release it
        // published from then on.
        let clock = ManualClock("2027-01-04T10:00:00Z")
        try await withHubDatabase(engine) { postgres in
            try await withRunning { running in
                let rules = RulesSchedule(every: .milliseconds(100), clock: clock)
                // Compaction off: the test reads who wrote the step from HQ's log.
                let hub = try await running.hub(directory: dir.path, rules: rules, postgres: postgres, retention: nil)
                if let postgres {
                    // A second process on the same database, running HQ's rules too.
                    _ = try await running.hub(directory: dir.path + "/second", rules: rules, postgres: postgres, retention: nil)
                }
                try await hub.catalogStore.createTenant("automaker", levels: 3)
                let hqKey = GovernanceSigningKey()
                try await hub.catalogStore.setReleaseKey(hqKey.publicKey.base64, for: "automaker")
                // The country relays, and its runner and the dealer's evaluate at 10:00 forever: only HQ's
                // clock passes the SLA, so only HQ escalates.
                let frozen = RulesSchedule(every: .milliseconds(100), clock: ManualClock("2027-01-04T10:00:00Z"))
                let de = try await running.country(hub: hub, tenant: "automaker", node: "de", directory: dir.path, rules: frozen)
                var berlin = try await running.agent(enrolling: "de-berlin", parent: "de", tenant: "automaker", hub: hub, parentURL: de.url,
                                                     directory: dir.path, rules: frozen)
                let hq = try await hub.tenantStore(for: "automaker")
                let publisher = GovernancePublisher(store: hq, tenant: "automaker", key: hqKey, tree: try await hub.catalogStore.tree(of: "automaker"))
                try await publisher.publish(try GovernanceCompiler.compile(directory: repositoryRoot() + "/fixtures/governance/automaker"))
                try await eventually(timeout: 30, "de-berlin applies v1 and knows its place") {
                    try berlin.store.appliedGovernance()?.release == 1 && berlin.store.meta(AllocationPolicy.pathMeta) == "hq/de/de-berlin"
                }

                // Warranty questions at the dealer at 10:00: its service desk, due at 14:00.
                let dialogue: [String: FieldValue] = ["customer_id": "c-1", "direction": "inbound", "channel": "phone", "topic": "warranty",
                                                      "knowledge_kind": "specification", "urgency": "normal", "status": "open",
                                                      "created_at": "2027-01-04T10:00:00Z"]
                try berlin.store.commit([.upsert("customers", id: "c-1", ["last_name": "Schmidt", "segment_value": "A"])]
                                        + ["i-late", "i-resolved", "i-crossed"].map { .upsert("interactions", id: $0, dialogue) })
                try berlin.store.commit([.upsert("interactions", id: "i-resolved", ["status": "resolved", "answered_at": "2027-01-04T10:30:00Z",
                                                                                     "resolved_at": "2027-01-04T11:00:00Z"])])
                try await eventually(timeout: 30, "HQ holds the three dialogues as allocated, i-resolved resolved") {
                    let late = try await Self.held(hq, "interactions", "i-late")
                    let resolved = try await Self.held(hq, "interactions", "i-resolved")
                    let crossed = try await Self.held(hq, "interactions", "i-crossed")
                    return resolved?["status"] == "resolved" && late?["sla_due"] == "2027-01-04T14:00:00Z"
                        && late?["handling_node"] == "de-berlin" && crossed != nil
                }

                // The dealer goes offline; there i-crossed is answered at 13:30, before its due. HQ does not learn it.
                await berlin.stop()
                try berlin.store.commit([.upsert("interactions", id: "i-crossed", ["status": "answered", "answered_at": "2027-01-04T13:30:00Z"])])

                // 14:00 passes: HQ alone escalates what it sees unanswered.
                clock.set(ManualClock("2027-01-04T14:00:01Z").now)
                let late1 = RuleRecordID.escalation(interactionID: "i-late", step: 1)
                let crossed1 = RuleRecordID.escalation(interactionID: "i-crossed", step: 1)
                try await eventually(timeout: 30, "HQ holds step 1 of i-late and of i-crossed, i-late handled at de") {
                    let late = try await Self.held(hq, "interactions", "i-late")
                    let lateStep = try await Self.held(hq, "escalations", late1)
                    let crossedStep = try await Self.held(hq, "escalations", crossed1)
                    return lateStep != nil && crossedStep != nil && late?["handling_node"] == "de" && late?["queue"] == "country-service" && late?["escalation_step"] == .int(1)
                }
                let entry = try #require(try await Self.held(hq, "escalations", late1))
                #expect(entry["interaction_id"] == "i-late" && entry["step"] == .int(1) && entry["rule"] == "dealer-sla-breach"
                        && entry["due_at"] == "2027-01-04T14:00:00Z" && entry["from_node"] == "de-berlin" && entry["to_node"] == "de"
                        && entry["to_queue"] == "country-service" && entry["status"] == "escalated" && entry["release"] == .int(1), "\(entry)")
                #expect(try await Self.held(hq, "escalations", RuleRecordID.escalation(interactionID: "i-resolved", step: 1)) == nil,
                        "resolved first: never escalated")
                // Several runs later (of both processes, on PostgreSQL), each record was written once, by HQ.
                try await Task.sleep(for: .milliseconds(600))
                for (table, id) in [("escalations", late1), ("escalations", crossed1)] {
                    let trace = try await hq.trace(recordID: id, table: table, after: 0, limit: 100)
                    #expect(trace.changes.count == 1, "\(table)/\(id) was written \(trace.changes.count) times")
                    #expect(trace.changes.allSatisfy { $0.change.origin == "hq" }, "\(trace.changes.map(\.change.origin))")
                }

                // Back online: the dealer receives the steps; its offline answer reaches HQ, which withdraws
                // i-crossed's step (answered before it was due) and hands the dialogue back to the dealer.
                berlin = try running.agent(store: berlin.store, parentURL: de.url, caFile: hub.caFile, rules: frozen)
                try await eventually(timeout: 30, "the dealer holds i-late's step; i-crossed's step withdrawn everywhere") {
                    let atHQ = try await Self.held(hq, "escalations", crossed1)
                    let atDealer = try berlin.store.record(table: "escalations", id: crossed1)?.state.liveValues
                    let crossed = try await Self.held(hq, "interactions", "i-crossed")
                    return try berlin.store.record(table: "escalations", id: late1)?.state.liveValues["status"] == "escalated"
                        && atHQ?["status"] == "withdrawn" && atDealer?["status"] == "withdrawn"
                        && crossed?["handling_node"] == "de-berlin"
                }
                #expect(try berlin.store.record(table: "interactions", id: "i-late")?.state.liveValues["handling_node"] == "de")
            }
        }
    }

    @Test("""
    HQ's rules read only the records meeting their conditions, and PostgreSQL's engine answers the same conditions \
    with the same records as SQLite's: null and absent alike, values in and not in a list (none: nothing), dates between bounds \
    compared bytewise, numbers as numbers, any of several fields set
    """, arguments: StorageEngine.testable)
    func conditionsMeanTheSameOnEitherEngine(engine: StorageEngine) async throws {
        let dir = try TempDir()
        // The reference: a dealer's SQLite store holding the records.
        let reference = try NodeStore(path: dir.path + "/reference.sqlite")
        try reference.setIdentity(NodeIdentity(tenant: "acme", node: "d1", parent: "hq"))
        let vehicles: [(String, [String: FieldValue])] = [
            ("v-1", ["sale_date": "2026-01-05", "customer_id": "c-1", "model": "A"]),
            ("v-2", ["sale_date": "2026-01-31", "customer_id": "c-2"]),
            ("v-3", ["sale_date": "2026-02-01", "model": "B"]),
            ("v-4", ["model": "A", "contract_end_date": "2026-03-01"]),
            ("v-5", ["sale_date": "2025-12-31", "model": "Ä"]),
            // Quotes, a backslash and a control character in values: PostgreSQL's engine first
            // tests their JSON text (escaped), which must still find them, and must not find
            // `"model":"A"` inside another field's value.
            ("v-6", ["model": "Q\"\\x\u{1}", "customer_id": "c\",\"model\":\"A"]),
        ]
        let changes = try reference.commit(vehicles.map { .upsert("vehicles", id: $0.0, $0.1) }
                                           + [.upsert("vehicles", id: "v-gone", ["model": "A"]), .delete("vehicles", id: "v-gone")]
                                           + [.upsert("escalations", id: "e-2", ["interaction_id": "i-1", "step": .int(2)]),
                                              .upsert("escalations", id: "e-10", ["interaction_id": "i-1", "step": .int(10)])])
        let conditions: [[FieldCondition]] = [
            [.isNull("customer_id")],
            [.isNotNull("customer_id")],
            [.equals("model", "A")],
            [.isNullOrNotIn("model", ["A", "B"])],
            [.between("sale_date", "2026-01-01", "2026-01-31")],
            [.anyNotNull(["customer_id", "contract_end_date"])],
            [.equals("model", "A"), .isNull("sale_date")],
            [.isNullOrNotIn("model", [])],
            [.isIn("model", ["A", "Ä"])],
            [.isIn("customer_id", ["c-2", "c-9"]), .isNotNull("sale_date")],
            [.isIn("model", [])],
            [.equals("customer_id", .null)],
            [.equals("model", "Q\"\\x\u{1}")],
            [.isIn("model", ["Q\"\\x\u{1}", "Ä"])],
            // Bounds sharing a first byte, not a first character (Ä is C3 84, Å C3 85).
            [.between("model", "Ä", "Å")],
        ]
        try await engine.withTenantStore(root: "hq") { hq in
            _ = try await hq.applyIncoming(changes, from: "d1", source: .child, checkSkew: false, gate: nil, cursor: nil, wallMillis: WallClock.nowMillis())
            let store = try #require(hq as? any RulesStore)
            for condition in conditions {
                let expected = try reference.liveRecords(table: "vehicles", where: condition).map(\.id)
                let found = try await store.rulesLiveRecords(table: "vehicles", where: condition)
                #expect(found.map(\.id) == expected, "\(condition)")
                #expect(found.map(\.values) == (try reference.liveRecords(table: "vehicles", where: condition).map(\.values)))
            }
            #expect(try await store.rulesLiveRecords(table: "vehicles", where: [.isNotNull("sale_date")]).map(\.id) == ["v-1", "v-2", "v-3", "v-5"])
            // Numbers compare as numbers (as text, 10 would sort before 9).
            let steps = try await store.rulesLiveRecords(table: "escalations", where: [.between("step", .int(9), .int(10))]).map(\.id)
            #expect(steps == ["e-10"] && steps == (try reference.liveRecords(table: "escalations", where: [.between("step", .int(9), .int(10))]).map(\.id)))
            await #expect(throws: StoreError.self) { try await store.rulesLiveRecords(table: "vehicles", where: [.isNull("no_such_field")]) }
        }
    }
}

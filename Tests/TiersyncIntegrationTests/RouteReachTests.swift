import Foundation
import Testing
import TiersyncAgent
import TiersyncCore
import TiersyncServer
import TiersyncStorage
import TiersyncStore
import TiersyncTestSupport

/// A node routes records within its country's subtree and to the nodes above it, and takes
/// a record away only from nodes of its own subtree (``RouteReach``), at HQ and at a country.
@Suite("Route reach", .serialized)
struct RouteReachTests {
    static func change(_ origin: NodeID, _ seq: Int64, _ table: String, _ id: String, _ fields: [String: FieldValue]) -> Change {
        Change(origin: origin, originSeq: seq, hlc: HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: UInt16(seq)),
               table: table, recordID: id, op: .upsert, fields: fields)
    }

    static func push(_ client: RawClient, _ changes: [Change], as credential: String) async throws -> RawClient.Reply {
        try await client.send("POST", "/v1/push", json: PushRequest(tenant: nil, through: changes.last!.originSeq, changes: changes), credential: credential)
    }

    /// The pushes a dealer below a country may and may not make, `d1` and `d2` being dealers
    /// of one country and `f1` of another. Returns the ids the sibling `d2` should now hold.
    static func judge(push: (_ changes: [Change], _ as: NodeID) async throws -> RawClient.Reply, where place: String) async throws {
        func refused(_ reply: RawClient.Reply, naming text: String, _ what: String) throws {
            let answer = try reply.decode(PushResponse.self)
            #expect(reply.status == 422 && answer.applied == 0 && answer.rejected.map(\.code) == [.forbidden], "\(place), \(what): \(reply.text)")
            #expect(answer.rejected.first?.message.contains(text) == true, "\(place), \(what): \(reply.text)")
        }
        // d2's customer, serviced by its sibling d1: the country's dealers share customers.
        let shared = try await push([change("d2", 1, "customers", "shared-1", ["last_name": "SharedD2", "owning_dealer": "d2", "servicing_dealer": "d1"])], "d2")
        #expect(shared.status == 200, "\(place): \(shared.text)")
        // d1 moves it to another country's dealer: the owner's customer would go there, and d2 lose it.
        try refused(try await push([change("d1", 1, "customers", "shared-1", ["owning_dealer": "f1", "servicing_dealer": "f1"])], "d1"),
                    naming: "routes record customers/shared-1 to node 'f1', which node 'd1' cannot route to", "moved abroad")
        // d1 takes it from its owner, keeping it for itself.
        try refused(try await push([change("d1", 2, "customers", "shared-1", ["owning_dealer": "d1"])], "d1"),
                    naming: "takes record customers/shared-1 away from a node outside the scope of node 'd1'", "taken from its owner")
        // New records routed out of reach: a dialogue "handled" by another country's dealer,
        // a lead for a node that does not exist.
        try refused(try await push([change("d1", 3, "interactions", "inj-1", ["originating_node": "d1", "handling_node": "f1", "summary": "spam"])], "d1"),
                    naming: "to node 'f1'", "a dialogue for another country")
        try refused(try await push([change("d1", 4, "leads", "inj-2", ["source_node": "d1", "fulfilling_node": "nosuchnode"])], "d1"),
                    naming: "to node 'nosuchnode'", "a lead for no node")
        // Within reach: a dialogue its sibling handles, one for the country centre, one for HQ.
        let fine = try await push([change("d1", 5, "interactions", "ok-1", ["originating_node": "d1", "handling_node": "d2"]),
                                   change("d1", 6, "interactions", "ok-2", ["originating_node": "d1", "handling_node": "de"]),
                                   change("d1", 7, "interactions", "ok-3", ["originating_node": "d1", "handling_node": "hq"])], "d1")
        #expect(fine.status == 200 && (try? fine.decode(PushResponse.self).applied) == 3, "\(place): \(fine.text)")
        // An escalation passed on by the dealer: the country's centre to HQ, the dialogue still
        // routed to the dealer (the country keeps it through the dealer).
        let onward = try await push([change("d1", 8, "interactions", "ok-2", ["handling_node": "hq", "allocated_node": "d1"])], "d1")
        #expect(onward.status == 200 && (try? onward.decode(PushResponse.self).applied) == 1, "\(place): \(onward.text)")
    }

    /// Fields copying another record's route (a consent event's owner, an escalation entry's
    /// origin) name a node out of the maker's reach only as a record the maker holds does:
    /// d1 records the consent of a customer fr gave it to service, owned by f1, and escalates
    /// a dialogue of f1's that fr handed it; it cannot write f1's own customer's consent
    /// history, or an escalation of f1's own dialogue, into f1 (before, both were applied).
    static func copiedRoutes(_ client: RawClient, _ credentials: [NodeID: String], _ store: any HubTenantStore) async throws {
        func consent(_ seq: Int64, _ id: String, customer: String) -> Change {
            change("d1", seq, "consent_events", id, ["customer_id": .string(customer), "purpose": "marketing", "channel": "email", "granted": false,
                                                     "source": "phone", "recorded_by": "d1", "owning_dealer": "f1"])
        }
        func escalation(_ seq: Int64, _ id: String, interaction: String) -> Change {
            change("d1", seq, "escalations", id, ["interaction_id": .string(interaction), "step": 1, "to_node": "de", "from_node": "d1",
                                                  "originating_node": "f1", "status": "escalated"])
        }
        let setUp = try await push(client, [change("fr", 3, "customers", "abroad-1", ["last_name": "Abroad", "owning_dealer": "f1", "servicing_dealer": "d1"]),
                                            change("fr", 4, "interactions", "handed-1", ["originating_node": "f1", "handling_node": "d1"])],
                                   as: credentials["fr"]!)
        let own = try await push(client, [change("f1", 1, "customers", "own-1", ["last_name": "OwnF1", "owning_dealer": "f1"]),
                                          change("f1", 2, "interactions", "own-i1", ["originating_node": "f1", "handling_node": "f1"])],
                                 as: credentials["f1"]!)
        #expect(setUp.status == 200 && own.status == 200, "\(setUp.text) \(own.text)")
        let fine = try await push(client, [consent(20, "ce-ok", customer: "abroad-1"), escalation(21, "esc-ok", interaction: "handed-1")],
                                  as: credentials["d1"]!)
        #expect(fine.status == 200 && (try? fine.decode(PushResponse.self).applied) == 2, "\(fine.text)")
        for (forged, what) in [(consent(22, "ce-forged", customer: "own-1"), "f1's own customer"), (escalation(23, "esc-forged", interaction: "own-i1"), "f1's own dialogue"),
                               (consent(24, "ce-nowhere", customer: "no-such-customer"), "a customer not held")] {
            let reply = try await push(client, [forged], as: credentials["d1"]!)
            let answer = try reply.decode(PushResponse.self)
            #expect(reply.status == 422 && answer.rejected.map(\.code) == [.forbidden] && answer.rejected.first?.message.contains("to node 'f1'") == true,
                    "\(what): \(reply.text)")
        }
        let events = Set(try await store.liveRecords(inTable: "consent_events").map(\.id))
        let entries = Set(try await store.liveRecords(inTable: "escalations").map(\.id))
        #expect(events == ["ce-ok"] && entries == ["esc-ok"], "\(events) \(entries)")
    }

    @Test("""
        at a country: a dealer cannot route a record it shares to another country (its owner's data went there, and its \
        owner lost it), take it from its owner, or create records for another country's dealer or for no node; siblings, \
        the country and HQ stay in reach, and what the country accepted HQ accepts
        """)
    func atACountry() async throws {
        let dir = try TempDir()
        try await withRunning { running in
            let hub = try await running.hub(directory: dir.path)
            try hub.catalog.createTenant("acme", levels: 3)
            let de = try await running.country(hub: hub, tenant: "acme", node: "de", directory: dir.path)
            let fr = try await running.country(hub: hub, tenant: "acme", node: "fr", directory: dir.path)
            var credentials: [NodeID: String] = [:]
            for (node, parent) in [("d1", de), ("d2", de), ("f1", fr)] as [(NodeID, RunningCountry)] {
                let store = try NodeStore(path: "\(dir.path)/\(node).sqlite")
                try await SyncAgent.enroll(store: store, configuration: AgentConfiguration(parentURL: parent.url, caFile: hub.caFile),
                                           token: try hub.catalog.issueEnrollmentToken(tenant: "acme", node: node, parent: parent === de ? "de" : "fr"))
                credentials[node] = try #require(try store.meta("credential"))
            }
            // The country knows HQ as its parent once its agent has asked whoami.
            try await eventually(timeout: 30, "de knows its path") { try de.store.meta(MetaKey.treePath.rawValue) == "hq/de" }
            let atDE = running.client(baseURL: de.url, caFile: hub.caFile)
            try await Self.judge(push: { changes, node in try await Self.push(atDE, changes, as: credentials[node]!) }, where: "at de")
            let hq = try hub.stores.store(for: "acme")
            try await eventually(timeout: 30, "HQ holds what de accepted") {
                try ["ok-1", "ok-2", "ok-3"].allSatisfy { try hq.record(table: "interactions", id: $0) != nil }
                    && hq.record(table: "interactions", id: "ok-2")?.state.liveValues["handling_node"] == "hq"
            }
            #expect(try hq.record(table: "customers", id: "shared-1")?.state.liveValues["owning_dealer"] == "d2")
            #expect(try hq.record(table: "interactions", id: "inj-1") == nil && hq.record(table: "leads", id: "inj-2") == nil)
            #expect(try de.store.pendingRetries() == 0, "HQ refused nothing de relayed")
            #expect(try fr.store.record(table: "customers", id: "shared-1") == nil && fr.store.record(table: "interactions", id: "inj-1") == nil)
        }
    }

    @Test("at HQ (dealers syncing directly): the same pushes judged by the tenant's tree", arguments: StorageEngine.testable)
    func atHQ(engine: StorageEngine) async throws {
        let dir = try TempDir()
        try await withRunningHub(engine: engine, directory: dir.path) { hub in
            try await withRawClient(hub) { client in
                _ = try await hub.catalogStore.createTenant("acme", root: "hq", levels: 3, allowDirectSync: true)
                var credentials: [NodeID: String] = [:]
                for (node, parent) in [("de", nil), ("fr", nil), ("d1", "de"), ("d2", "de"), ("f1", "fr")] as [(NodeID, NodeID?)] {
                    let token = try await hub.catalogStore.issueEnrollmentToken(tenant: "acme", node: node, parent: parent)
                    credentials[node] = try await client.send("POST", "/v1/enroll", json: EnrollRequest(token: token)).decode(EnrollResponse.self).credential
                }
                try await Self.judge(push: { changes, node in try await Self.push(client, changes, as: credentials[node]!) }, where: "at HQ")
                let store = try await hub.tenantStore(for: "acme")
                let customers = try await store.liveRecords(inTable: "customers")
                #expect(customers.first { $0.id == "shared-1" }?.values["owning_dealer"] == "d2")
                // A country routes to any node: it hands dialogues across countries…
                let handed = try await Self.push(client, [Self.change("de", 1, "interactions", "ok-1", ["handling_node": "f1"])], as: credentials["de"]!)
                #expect(handed.status == 200, "\(handed.text)")
                // …but only to a node the tenant has (helper 82: a dialogue handled by "ghost" was taken).
                let ghost = try await Self.push(client, [Self.change("de", 2, "interactions", "inj-ghost", ["originating_node": "de", "handling_node": "ghost"])],
                                                as: credentials["de"]!)
                #expect(ghost.status == 422 && (try? ghost.decode(PushResponse.self).rejected.first?.message.contains("to node 'ghost'")) == true, "\(ghost.text)")
                try await Self.copiedRoutes(client, credentials, store)
                // A KPI snapshot placing d1 under fr (its values and targets moved into fr's
                // subtree rows wherever the stored snapshots were read): refused, final.
                func snapshot(_ seq: Int64, _ path: String) -> Change {
                    Self.change("d1", seq, "kpi_snapshots", "d1:sla-compliance:day:2026-11-1\(seq % 10)",
                                ["node": "d1", "path": .string(path), "kpi": "sla-compliance", "period": "day", "period_start": .string("2026-11-1\(seq % 10)"),
                                 "numerator": 1, "denominator": 1])
                }
                let forged = try await Self.push(client, [snapshot(31, "hq/fr/d1")], as: credentials["d1"]!)
                #expect(forged.status == 422 && (try? forged.decode(PushResponse.self).rejected.map(\.code)) == [.invalidChange], "\(forged.text)")
                let honest = try await Self.push(client, [snapshot(32, "hq/de/d1"), snapshot(33, "de/d1")], as: credentials["d1"]!)
                #expect(honest.status == 200 && (try? honest.decode(PushResponse.self).applied) == 2, "\(honest.text)")
            }
        }
    }
}

import Foundation
import Testing
import TiersyncCore
import TiersyncStore
import TiersyncTestSupport

/// The store's two seams for governance that acts: the local write policy, and the
/// snapshot a node's feed delivers when a record's route gains it.
@Suite("Route entry and write policy")
struct RouteEntryTests {
    /// A record created for d1 and later routed to d2: d2's feed after the re-route carries
    /// the record's earlier changes too, so d2 ends with every field; a subtree that already
    /// had the record gets no snapshot, and the encoded feed (what a hub serves) matches.
    @Test("a record newly routed to a node reaches it whole, in either feed; a subtree that had it gets no copy")
    func snapshotOnRouteEntry() async throws {
        let dir = try TempDir()
        let hub = try makeStore(dir, "hq", parent: nil)
        try hub.commit([.upsert("interactions", id: "i-1", ["topic": "warranty", "summary": "rattle at 80 km/h",
                                                            "urgency": "normal", "originating_node": "d1"])])
        try hub.commit([.upsert("interactions", id: "i-1", ["status": "open"])])
        try hub.commit([.upsert("customers", id: "c-1", ["last_name": "Meyer", "owning_dealer": "d3"])])
        let before = try hub.headSeq()
        try hub.commit([.upsert("interactions", id: "i-1", ["handling_node": "d2"])])

        let page = try await hub.feed(after: before, scope: Scope(nodes: ["d2"]), excluding: nil, limit: 100)
        #expect(page.changes.map(\.originSeq) == [1, 2, 4], "the earlier changes of i-1, then the re-route, in log order")
        #expect(page.nextCursor == before + 1 && !page.more)
        var state = RecordState()
        for change in page.changes { _ = state.apply(change) }
        #expect(state.liveValues["summary"] == "rattle at 80 km/h" && state.liveValues["status"] == "open"
                && state.liveValues["handling_node"] == "d2")

        // The subtree of a country holding d1 and d2 had i-1 already (routed to d1): no snapshot.
        let country = try await hub.feed(after: before, scope: Scope(nodes: ["de", "d1", "d2"]), excluding: nil, limit: 100)
        #expect(country.changes.map(\.originSeq) == [4])
        // A country holding d2 but not d1 gets the snapshot.
        let other = try await hub.feed(after: before, scope: Scope(nodes: ["fr", "d2"]), excluding: nil, limit: 100)
        #expect(other.changes.map(\.originSeq) == [1, 2, 4])
        // The hub's encoded page says the same.
        let encoded = try await hub.encodedFeed(after: before, scope: Scope(nodes: ["d2"]), excluding: nil, limit: 100)
        let decoded = try JSONDecoder().decode(PullResponse.self, from: Data(encoded.json))
        #expect(decoded.changes == page.changes && encoded.count == 3)
        // Before the re-route, d2's feed had nothing of i-1; a later page owes nothing more.
        #expect(try await hub.feed(after: 0, scope: Scope(nodes: ["d2"]), excluding: nil, limit: 100).changes.map(\.originSeq) == [1, 2, 4])
        #expect(try await hub.feed(after: before + 1, scope: Scope(nodes: ["d2"]), excluding: nil, limit: 100).changes.isEmpty)

        // Applied at a receiver that never had it, through its own feed to its node: d2's store ends whole.
        let d2 = try makeStore(dir, "d2", parent: "hq")
        let report = try await d2.applyIncoming(page.changes, from: "hq", source: .parent, checkSkew: false)
        #expect(report.applied == 3)
        #expect(try d2.record(table: "interactions", id: "i-1")?.state.liveValues == hub.record(table: "interactions", id: "i-1")?.state.liveValues)
        // Delivered again (a later snapshot, or a redelivery): duplicates, nothing changes.
        #expect(try await d2.applyIncoming(page.changes, from: "hq", source: .parent, checkSkew: false).duplicates == 3)
    }

    /// A country relays a record that moved into its subtree from elsewhere: it gets the
    /// snapshot from HQ, and its own feed then owes its dealer one too.
    @Test("a relay that receives a snapshot passes the record on whole to the node it is now routed to")
    func snapshotThroughARelay() async throws {
        let dir = try TempDir()
        let hub = try makeStore(dir, "hq", parent: nil)
        try hub.commit([.upsert("customers", id: "c-1", ["last_name": "Meyer", "city": "Lyon", "owning_dealer": "fr-1"])])
        let mark = try hub.headSeq()
        try hub.commit([.upsert("customers", id: "c-1", ["owning_dealer": "de-1"])])
        let toDE = try await hub.feed(after: mark, scope: Scope(nodes: ["de", "de-1"]), excluding: nil, limit: 100)
        #expect(toDE.changes.count == 2)
        let de = try makeStore(dir, "de", parent: "hq")
        _ = try await de.applyIncoming(toDE.changes, from: "hq", source: .parent, checkSkew: false)
        let toDealer = try await de.feed(after: 0, scope: Scope(nodes: ["de-1"]), excluding: nil, limit: 100)
        var state = RecordState()
        for change in toDealer.changes { _ = state.apply(change) }
        #expect(state.liveValues["city"] == "Lyon" && state.liveValues["owning_dealer"] == "de-1")
    }

    /// A store written before interactions had `priority` and the decision fields opens with
    /// them added (DomainTables.ensure widens tables), keeps its rows, and takes the new fields.
    @Test("a store from before the decision fields opens, keeps its rows and takes the new fields")
    func storesWidenForTheDecisionFields() throws {
        let dir = try TempDir()
        let added: Set<String> = ["priority", "decision_rule", "decision_release", "decision_overlay", "decided_by", "decided_at"]
        var old = DomainSchema.interactions
        old.fields.removeAll { added.contains($0.name) }
        let tables = DomainSchema.schema.tables.map { $0.name == old.name ? old : $0 }
        do {
            let before = try NodeStore(path: dir.path + "/d1.sqlite", schema: Schema(tables: tables))
            try before.setIdentity(NodeIdentity(tenant: "acme", node: "d1", parent: "hq"))
            try before.commit([.upsert("interactions", id: "i-old", ["topic": "warranty", "handling_level": "dealer"])])
        }
        let after = try NodeStore(path: dir.path + "/d1.sqlite")
        #expect(try after.record(table: "interactions", id: "i-old")?.state.liveValues["topic"] == "warranty")
        try after.commit([.upsert("interactions", id: "i-new", ["topic": "quote", "handling_level": "agent", "priority": 2,
                                                                "decision_rule": "offer-specification", "decision_release": 3,
                                                                "decided_by": "d1", "decided_at": "2026-11-22T10:00:00Z"])])
        #expect(try after.record(table: "interactions", id: "i-new")?.state.liveValues["priority"] == .int(2))
    }

    /// The seam every local write passes: the policy sees the record as held and earlier
    /// writes of the batch, adds fields; received changes never pass through it.
    @Test("a write policy completes local writes, sees the batch so far, and never touches received changes")
    func writePolicy() async throws {
        struct Stamp: LocalWritePolicy {
            func amend(_ write: RecordWrite, in context: LocalWriteContext) throws -> RecordWrite {
                guard write.table == "interactions", context.createsRecord else { return write }
                var w = write
                let customer = try write.fields["customer_id"]?.stringValue.flatMap { try context.record(table: "customers", id: $0) }
                w.fields["queue"] = .string("seen-\(customer?.state.liveValues["last_name"]?.stringValue ?? "none")")
                if w.fields["priority"] == nil { w.fields["priority"] = .int(Int64(context.wallMillis % 5 + 1)) }
                return w
            }
        }
        let dir = try TempDir()
        let store = try makeStore(dir, "d1")
        store.writePolicy = Stamp()
        try store.commit([.upsert("customers", id: "c-1", ["last_name": "Meyer"]),
                          .upsert("interactions", id: "i-1", ["customer_id": "c-1", "priority": 2])], wallMillis: 1_000)
        #expect(try store.record(table: "interactions", id: "i-1")?.state.liveValues["queue"] == "seen-Meyer")
        #expect(try store.record(table: "interactions", id: "i-1")?.state.liveValues["priority"] == .int(2))
        try store.commit([.upsert("interactions", id: "i-1", ["topic": "later"])])
        #expect(try store.record(table: "interactions", id: "i-1")?.state.liveValues["topic"] == "later")
        let other = try makeStore(dir, "d2")
        other.writePolicy = Stamp()
        let received = Change(origin: "d1", originSeq: 9, hlc: HLCTimestamp(wallMillis: 2_000, counter: 0), table: "interactions",
                              recordID: "i-9", op: .upsert, fields: ["topic": "from d1", "originating_node": "d1"], prior: [:])
        _ = try await other.applyIncoming([received], from: "d1", source: .child, checkSkew: false)
        #expect(try other.record(table: "interactions", id: "i-9")?.state.liveValues["queue"] == nil)

        struct Renamer: LocalWritePolicy {
            func amend(_ write: RecordWrite, in context: LocalWriteContext) throws -> RecordWrite {
                var renamed = write
                renamed.id += "-x"
                return renamed
            }
        }
        store.writePolicy = Renamer()
        #expect(throws: StoreError.self) { try store.commit([.upsert("customers", id: "c-2", ["last_name": "K"])]) }
    }
}

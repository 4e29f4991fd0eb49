import Foundation
import GRDB
import Testing
import TiersyncCore
import TiersyncStore
import TiersyncTestSupport

/// Erasure on one store (docs/PRIVACY.md): what is reached, what is refused afterwards, and
/// what the digest proves.
@Suite("Erasure in a store")
struct ErasureStoreTests {
    @Test("""
    erasing a customer reaches its vehicles, dialogues (a deleted one found through the log), their escalations, conflicts \
    and quarantined changes; later writes of it or linking to it are refused; other records stay
    """)
    func erasesWhatLinks() async throws {
        let dir = try TempDir()
        let hq = try makeStore(dir, "hq", parent: nil)
        try hq.commit([
            .upsert("customers", id: "c-1", ["last_name": "Meyer", "owning_dealer": "d1"]),
            .upsert("vehicles", id: "v-1", ["customer_id": "c-1", "owning_dealer": "d1"]),
            .upsert("interactions", id: "i-1", ["customer_id": "c-1", "summary": "Meyer called", "originating_node": "d1"]),
            .upsert("interactions", id: "i-2", ["customer_id": "c-1", "summary": "Meyer wrote", "originating_node": "d2"]),
            .upsert("escalations", id: "e-1", ["interaction_id": "i-1", "to_node": "de", "step": 1]),
            .upsert("customers", id: "c-2", ["last_name": "Keeps", "owning_dealer": "d1"]),
        ])
        try hq.commit([.delete("interactions", id: "i-2")])
        // A concurrent edit from d1 that loses (a kept conflict), and a change quarantined for its sender.
        let stale = Change(origin: "d1", originSeq: 1, hlc: HLCTimestamp(wallMillis: 1_000, counter: 0), table: "customers",
                           recordID: "c-1", op: .upsert, fields: ["last_name": "Meier"])
        _ = try await hq.applyIncoming([stale], from: "d1", source: .child, checkSkew: false)
        #expect(try hq.conflicts(table: "customers", recordID: "c-1").count == 1)
        let foreign = Change(origin: "d9", originSeq: 1, hlc: HLCTimestamp(wallMillis: 2_000, counter: 0), table: "interactions",
                             recordID: "i-9", op: .upsert, fields: ["customer_id": "c-1", "summary": "Meyer again"])
        _ = try await hq.applyIncoming([foreign], from: "d1", source: .child, checkSkew: false,
                                       gate: { _ in ChangeRejection(.forbidden, "test gate") })
        #expect(try hq.quarantined(limit: 10).count == 1)

        let done = try hq.erase(.customers, id: "c-1")
        #expect(done.records == 5, "c-1, v-1, i-1, the deleted i-2 and e-1: \(done)")
        #expect(done.logEntries == 7 && done.unsentDropped == 0 && done.filesCleanAtMillis != nil, "\(done)")
        for (table, id) in [("customers", "c-1"), ("vehicles", "v-1"), ("interactions", "i-1"), ("interactions", "i-2"), ("escalations", "e-1")] {
            #expect(try hq.record(table: table, id: id) == nil, "\(table)/\(id) is gone")
        }
        #expect(try hq.conflicts(table: "customers", recordID: "c-1").isEmpty && hq.quarantined(limit: 10).isEmpty)
        #expect(try hq.record(table: "customers", id: "c-2") != nil)
        #expect(try hq.verifyErasure(done.erasureID))
        // Nothing of the erased values is left in the log the feed serves.
        let feed = try await hq.feed(after: 0, scope: Scope(nodes: ["d1", "d2", "de"]), excluding: nil, limit: 100)
        #expect(!feed.changes.contains { CanonicalJSON.object($0.fields).contains("Meyer") }, "\(feed.changes)")
        #expect(feed.changes.contains { $0.table == "erasures" }, "the marker goes to the nodes that held the data")
        #expect(try await hq.erasureLedger().first?.routedTo == ["d1", "d2", "de", "hq"], "where the data was routed, and HQ, which asked")

        // Later writes cannot bring it back, locally or received; a new dialogue of the customer neither.
        #expect(throws: StoreError.self) { try hq.commit([.upsert("customers", id: "c-1", ["last_name": "Meyer"])]) }
        #expect(throws: StoreError.self) { try hq.commit([.upsert("interactions", id: "i-3", ["customer_id": "c-1"])]) }
        let late = Change(origin: "d1", originSeq: 2, hlc: HLCTimestamp(wallMillis: 3_000, counter: 0), table: "interactions",
                          recordID: "i-4", op: .upsert, fields: ["customer_id": "c-1", "summary": "Meyer, late"])
        let report = try await hq.applyIncoming([late], from: "d1", source: .child, checkSkew: false)
        #expect(report.applied == 0 && report.rejected.map(\.code) == [.erased])
        #expect(try hq.erasures().first?.refused == 1 && hq.quarantined(limit: 10).isEmpty, "counted, never kept")

        // A second request for the same customer is acknowledged holding nothing.
        let again = try await hq.applyIncoming([Change(origin: "d1", originSeq: 3, hlc: HLCTimestamp(wallMillis: 4_000, counter: 0),
                                                       table: "erasures", recordID: "era-second", op: .upsert,
                                                       fields: Erasure.markerFields(table: .customers, id: "c-1", requestedBy: "d1", at: "2026-12-03T00:00:00Z"))],
                                               from: "d1", source: .child, checkSkew: false)
        #expect(again.applied == 1)
        #expect(try hq.erasures().first { $0.erasureID == "era-second" }?.records == 0)

        // Data put back around the store (plain SQL) makes the digest fail.
        let raw = try DatabaseQueue(path: hq.path)
        try raw.inDatabase { db in try db.execute(sql: "INSERT INTO customers (id, last_name) VALUES ('c-1', 'Meyer')") }
        try raw.close()
        #expect(try !hq.verifyErasure(done.erasureID))
    }

    @Test("a customer whose log entries compaction folded into its record (only the row left) is still erased, with its folded dialogue")
    func erasesFoldedRecords() async throws {
        let dir = try TempDir()
        let hq = try makeStore(dir, "hq", parent: nil)
        try hq.commit([
            .upsert("customers", id: "c-1", ["last_name": "Meyer", "owning_dealer": "d1"]),
            .upsert("interactions", id: "i-1", ["customer_id": "c-1", "summary": "Meyer called", "originating_node": "d1"]),
        ])
        try hq.commit([.upsert("customers", id: "c-9", ["last_name": "Head", "owning_dealer": "d1"])])
        let report = try await hq.compact(policy: .default, tree: nil)
        #expect(report.foldedEntries >= 2, "c-1's and i-1's entries are folded into their rows: \(report)")
        let raw = try DatabaseQueue(path: hq.path)
        let logged = try await raw.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM ts_changes WHERE record_id IN ('c-1', 'i-1')") }
        try raw.close()
        #expect(logged == 0, "nothing of c-1 left in the log: only its row holds it")
        #expect(try hq.record(table: "customers", id: "c-1")?.state.liveValues["last_name"] == "Meyer")

        // Through the CLI: it says no log entry held the values (it said "values of 0 change-log
        // entries gone", read as nothing erased from the log; helper 80).
        let out = try Child.run(["erase", "--db", hq.path, "customers", "c-1"])
        #expect(out.contains(": 2 record(s), no change-log entry held their values (compaction folds old entries into the records); files clean: yes"), "\(out)")
        // Asked again (here in the library): the first erasure is the answer.
        let done = try hq.erase(.customers, id: "c-1")
        #expect(done.records == 2, "c-1 and its dialogue i-1: \(done)")
        #expect(try hq.record(table: "customers", id: "c-1") == nil && hq.record(table: "interactions", id: "i-1") == nil)
        #expect(try hq.record(table: "customers", id: "c-9") != nil)
        #expect(try hq.verifyErasure(done.erasureID))
        // Something never held is still refused, naming it.
        #expect(throws: StoreError.self) { try hq.erase(.customers, id: "c-nobody") }
        // Asked again: the first erasure is the answer, no second request is made.
        #expect(try hq.erase(.customers, id: "c-1").erasureID == done.erasureID)
        #expect(out.contains("erased customers/c-1 as \(done.erasureID)"), "\(out)")
        let ledger = try await hq.erasureLedger()
        #expect(try hq.erasures().count == 1 && ledger.count == 1)
    }

    @Test("""
    a request first taken from a child, holding none of its subject, is acknowledged when the parent's copy comes (a \
    dealer that moved here re-sent its own request before this node fetched it from the parent: the ledger waited); \
    one whose subject is held here is not judged again
    """)
    func requestFromChildThenParent() async throws {
        let dir = try TempDir()
        let fr = try makeStore(dir, "fr")
        let marker = Change(origin: "d1", originSeq: 5, hlc: HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: 0), table: "erasures",
                            recordID: "era-moved", op: .upsert,
                            fields: Erasure.markerFields(table: .customers, id: "cust-1", requestedBy: "d1", at: "2026-12-07T00:00:00Z"))
        #expect(try await fr.applyIncoming([marker], from: "d1", source: .child, checkSkew: false).applied == 1)
        #expect(try fr.erasures().isEmpty, "from the child, holding none of it: not acknowledged")
        let again = try await fr.applyIncoming([marker], from: "hq", source: .parent, checkSkew: false)
        #expect(again.duplicates == 1)
        let done = try fr.erasures()
        #expect(done.map(\.erasureID) == ["era-moved"] && done.first?.records == 0, "\(done)")
        #expect(try fr.record(table: "erasure_acks", id: "era-moved@fr") != nil, "its acknowledgement is written, to go up")
        // A third copy changes nothing.
        _ = try await fr.applyIncoming([marker], from: "hq", source: .parent, checkSkew: false)
        #expect(try fr.erasures().count == 1)

        // Only acknowledged: a child's request for a customer held here outside its scope (d3's)
        // is not judged again when the parent's copy comes after the customer was handed to it.
        let now = WallClock.nowMillis()
        let held = Change(origin: "hq", originSeq: 1, hlc: HLCTimestamp(wallMillis: now, counter: 0), table: "customers", recordID: "c-7",
                          op: .upsert, fields: ["last_name": "Kept", "owning_dealer": "d3"])
        _ = try await fr.applyIncoming([held], from: "hq", source: .parent, checkSkew: false)
        let outside = Change(origin: "d1", originSeq: 6, hlc: HLCTimestamp(wallMillis: now + 1, counter: 0), table: "erasures",
                             recordID: "era-outside", op: .upsert,
                             fields: Erasure.markerFields(table: .customers, id: "c-7", requestedBy: "d1", at: "2026-12-07T00:00:01Z"))
        let d1Scope: ChangeGate = { context in
            PushScope.refusal(for: context.change, pusher: "d1", scope: Scope(nodes: ["d1"]), routeBefore: context.routeBefore, routeAfter: context.routeAfter)
        }
        _ = try await fr.applyIncoming([outside], from: "d1", source: .child, checkSkew: false, gate: d1Scope)
        #expect(try fr.record(table: "customers", id: "c-7") != nil, "outside d1's scope: not erased")
        let handed = Change(origin: "hq", originSeq: 2, hlc: HLCTimestamp(wallMillis: now + 2, counter: 0), table: "customers", recordID: "c-7",
                            op: .upsert, fields: ["owning_dealer": "d1"])
        _ = try await fr.applyIncoming([handed, outside], from: "hq", source: .parent, checkSkew: false)
        #expect(try fr.record(table: "customers", id: "c-7")?.state.liveValues["last_name"] == "Kept",
                "the request was judged when it came; the parent's copy does not erase the customer handed to d1 since")
        #expect(try fr.erasures().map(\.erasureID) == ["era-moved"])
    }

    @Test("a replica holding records that name the customer but not the customer itself erases them, acknowledges, and refuses the customer's data afterwards")
    func erasesLinkedRecordsWithoutTheCustomer() async throws {
        let dir = try TempDir()
        let munich = try makeStore(dir, "de-munich", parent: "de")
        // A lead fulfilled here and a dialogue handled here, of a customer routed to another dealer.
        let held = [
            Change(origin: "de-berlin", originSeq: 1, hlc: HLCTimestamp(wallMillis: 1_000, counter: 0), table: "leads", recordID: "lead-zz",
                   op: .upsert, fields: ["customer_id": "cust-1", "source_node": "de-berlin", "fulfilling_node": "de-munich"]),
            Change(origin: "de-berlin", originSeq: 2, hlc: HLCTimestamp(wallMillis: 1_001, counter: 0), table: "interactions", recordID: "int-zz",
                   op: .upsert, fields: ["customer_id": "cust-1", "summary": "zzsecretsummary", "handling_node": "de-munich", "originating_node": "de-berlin"]),
        ]
        #expect(try await munich.applyIncoming(held, from: "de", source: .parent, checkSkew: false).applied == 2)
        #expect(try munich.record(table: "customers", id: "cust-1") == nil)
        let marker = Change(origin: "de-berlin", originSeq: 3, hlc: HLCTimestamp(wallMillis: 2_000, counter: 0), table: "erasures", recordID: "era-1",
                            op: .upsert, fields: Erasure.markerFields(table: .customers, id: "cust-1", requestedBy: "de-berlin", at: "2026-12-03T00:00:00Z"))
        #expect(try await munich.applyIncoming([marker], from: "de", source: .parent, checkSkew: false).applied == 1)
        // Before: nothing erased (the customer was not held), no acknowledgement, the summary kept.
        #expect(try munich.record(table: "leads", id: "lead-zz") == nil && munich.record(table: "interactions", id: "int-zz") == nil)
        let done = try #require(try munich.erasures().first, "an erasure recorded here")
        #expect(done.records == 2 && done.filesCleanAtMillis != nil, "\(done)")
        #expect(try munich.verifyErasure(done.erasureID))
        #expect(try munich.liveRecords(table: "erasure_acks", limit: 10).count == 1, "acknowledged, for HQ's ledger")
        #expect(throws: StoreError.self) { try munich.commit([.upsert("interactions", id: "int-late", ["customer_id": "cust-1", "summary": "late"])]) }
    }

    @Test("a child that once held a customer (its old routes are in the log) cannot erase it once it is routed to another country")
    func formerHolderCannotErase() async throws {
        let dir = try TempDir()
        let hq = try makeStore(dir, "hq", parent: nil)
        try hq.commit([.upsert("customers", id: "c-2", ["last_name": "Moved", "owning_dealer": "d1"])])
        try hq.commit([.upsert("customers", id: "c-2", ["owning_dealer": "fr-1"])])
        let marker = Change(origin: "d1", originSeq: 1, hlc: HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: 0), table: "erasures", recordID: "era-scope",
                            op: .upsert, fields: Erasure.markerFields(table: .customers, id: "c-2", requestedBy: "d1", at: "2026-12-03T00:00:00Z"))
        let gate: ChangeGate = { context in
            PushScope.refusal(for: context.change, pusher: "d1", scope: Scope(nodes: ["d1"]), routeBefore: context.routeBefore, routeAfter: context.routeAfter)
        }
        _ = try await hq.applyIncoming([marker], from: "d1", source: .child, checkSkew: false, gate: gate)
        #expect(try hq.record(table: "customers", id: "c-2")?.state.liveValues["last_name"] == "Moved", "fr-1's customer stays")
        #expect(try hq.erasures().isEmpty)
    }

    @Test("a marker from a child for a customer outside its scope erases nothing and leaves no acknowledgement")
    func outsideScope() async throws {
        let dir = try TempDir()
        let hq = try makeStore(dir, "hq", parent: nil)
        try hq.commit([.upsert("customers", id: "c-1", ["last_name": "Meyer", "owning_dealer": "d1"])])
        let marker = Change(origin: "d2", originSeq: 1, hlc: HLCTimestamp(wallMillis: 1_000, counter: 0), table: "erasures", recordID: "era-x",
                            op: .upsert, fields: Erasure.markerFields(table: .customers, id: "c-1", requestedBy: "d2", at: "2026-12-03T00:00:00Z"))
        let gate: ChangeGate = { context in
            PushScope.refusal(for: context.change, pusher: "d2", scope: Scope(nodes: ["d2"]), routeBefore: context.routeBefore, routeAfter: context.routeAfter)
        }
        let report = try await hq.applyIncoming([marker], from: "d2", source: .child, checkSkew: false, gate: gate)
        #expect(report.applied == 1, "accepted like a marker of a customer that does not exist: nothing is revealed")
        #expect(try hq.record(table: "customers", id: "c-1") != nil && hq.erasures().isEmpty)
        let acks = try hq.liveRecords(table: "erasure_acks", limit: 10)
        #expect(acks.isEmpty)
    }

    @Test("""
    a refusal as erased is checked against the change it refuses before anything is erased: a reference that is neither the \
    change's record nor one its link names erases nothing; a dialogue the parent took before is kept when a later change \
    naming an erased customer is refused; a dialogue made by the refused change alone is erased, with the customer noted
    """)
    func erasesRefusedOnlyAsTheyWereSent() throws {
        let dir = try TempDir()
        let d1 = try makeStore(dir, "d1", parent: "de")
        let made = try d1.commit([
            .upsert("customers", id: "c-mine", ["last_name": "Mine"]),
            .upsert("interactions", id: "i-old", ["customer_id": "c-mine", "summary": "accepted upstream"]),
        ])
        try d1.setCursor(NodeStore.parentPushCursor, made.last!.originSeq)
        // Compaction folds what the parent took: its log entries go, the record's versions stay.
        try DatabaseQueue(path: d1.path).write { db in try db.execute(sql: "DELETE FROM ts_changes WHERE record_id = 'i-old'") }
        let late = try d1.commit([.upsert("interactions", id: "i-old", ["customer_id": "c-gone"])])[0]
        let fresh = try d1.commit([.upsert("interactions", id: "i-new", ["customer_id": "c-gone", "summary": "about the erased one"])])[0]
        func refusal(_ change: Change, _ erased: ErasedReference) -> (refusal: RejectedChange, change: Change) {
            var r = RejectedChange(change: change, rejection: ChangeRejection(.erased, "erased", erased: erased))
            r.erased = erased
            return (r, change)
        }
        // A hostile or broken answer naming a record the change does not name: nothing happens.
        #expect(try d1.eraseRefused([refusal(fresh, ErasedReference(erasure: "era-x", table: "customers", id: "c-mine"))]) == 0)
        #expect(try d1.record(table: "customers", id: "c-mine") != nil && d1.erasures().isEmpty)
        // i-old was taken by the parent before: its link to c-gone is refused, the dialogue stays.
        #expect(try d1.eraseRefused([refusal(late, ErasedReference(erasure: "era-1", table: "customers", id: "c-gone"))]) == 0)
        #expect(try d1.record(table: "interactions", id: "i-old") != nil)
        // i-new exists only through the refused change: erased, and c-gone noted.
        #expect(try d1.eraseRefused([refusal(fresh, ErasedReference(erasure: "era-1", table: "customers", id: "c-gone"))]) == 1)
        #expect(try d1.record(table: "interactions", id: "i-new") == nil)
        let done = try #require(try d1.erasures().first)
        #expect(done.erasureID == "era-1/interactions/i-new")
        #expect(try d1.verifyErasure(done.erasureID))
        #expect(throws: StoreError.self) { try d1.commit([.upsert("interactions", id: "i-3", ["customer_id": "c-gone"])]) }
    }
}

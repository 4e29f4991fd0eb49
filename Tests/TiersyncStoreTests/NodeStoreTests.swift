import Foundation
import Testing
import TiersyncCore
@testable import TiersyncStore
import GRDB
import TiersyncTestSupport

func makeStore(_ dir: TempDir, _ node: NodeID, parent: NodeID? = "hq") throws -> NodeStore {
    let store = try NodeStore(path: "\(dir.path)/\(node).sqlite")
    try store.setIdentity(NodeIdentity(tenant: "acme", node: node, parent: parent))
    return store
}

@Suite("Node store")
struct NodeStoreTests {
    @Test("a parent's restore found twice within minutes (its pull side and its push side) is one restore; one found later is another (helper 99: one restore, \"restored 2 time(s)\")")
    func parentRestoresCountedOnce() throws {
        let dir = try TempDir()
        let store = try makeStore(dir, "d1")
        #expect(try store.parentRestores() == nil)
        #expect(try store.recordParentRestore(atMillis: 1_000_000))
        #expect(try !store.recordParentRestore(atMillis: 1_000_000 + 90_000))
        #expect(try store.parentRestores()?.count == 1 && store.parentRestores()?.lastAtMillis == 1_000_000)
        #expect(try store.recordParentRestore(atMillis: 1_000_000 + NodeStore.sameRestoreMillis))
        #expect(try store.parentRestores()?.count == 2)
    }

    @Test("""
    a push's acknowledgement moves the cursor only from where the push read it: one a send-again notice moved back \
    meanwhile stays back (helper 88: overwritten, those changes were lost if the process stopped before the agent acted)
    """)
    func acknowledgementDoesNotOverwriteARewind() throws {

        let dir = try TempDir()
        let store = try makeStore(dir, "d1")
        try store.setCursor(NodeStore.parentPushCursor, 5)
        // A push read 5 and sent through 9; a notice moved the cursor back to 2 meanwhile.
        try store.setCursor(NodeStore.parentPushCursor, 2)
        #expect(try !store.advanceCursor(NodeStore.parentPushCursor, from: 5, to: 9))
        #expect(try store.cursor(NodeStore.parentPushCursor) == 2)
        // The next round reads 2, and its acknowledgement moves it.
        #expect(try store.advanceCursor(NodeStore.parentPushCursor, from: 2, to: 9))
        #expect(try store.cursor(NodeStore.parentPushCursor) == 9)
        // A cursor never written reads 0, and moves from there.
        #expect(try store.advanceCursor("push.other", from: 0, to: 3) && store.cursor("push.other") == 3)
    }

    @Test("every local write commits with its change-log entry; a refused batch writes nothing")
    func writesAreLogged() async throws {
        let dir = try TempDir()
        let store = try makeStore(dir, "d1")
        let made = try store.commit([.upsert("customers", id: "c-1", ["last_name": "Meyer"]),
                                     .upsert("customers", id: "c-2", ["last_name": "Kraus"])])
        #expect(made.map(\.originSeq) == [1, 2])
        #expect(made[0].fields["owning_dealer"] == "d1", "a new record is routed to its writer by default")
        #expect(try store.headSeq() == 2)
        #expect(throws: StoreError.self) {
            try store.commit([.upsert("customers", id: "c-3", ["last_name": "Ok"]), .upsert("customers", id: "c-4", ["shoe": "44"])])
        }
        #expect(try store.headSeq() == 2)
        #expect(try store.record(table: "customers", id: "c-3") == nil)
        #expect(try store.counts().records["customers"] == 2)
    }

    @Test("many async feed reads mixed with synchronous reads from tasks all finish (no reader held by a suspended task)",
          .timeLimit(.minutes(1)))
    func asyncAndSyncReadsDoNotDeadlock() async throws {
        let dir = try TempDir()
        let hub = try makeStore(dir, "hq", parent: nil)
        try hub.commit((0..<50).map { .upsert("customers", id: "c-\($0)", ["last_name": .string("N\($0)"), "owning_dealer": "d1"]) })
        // Far more concurrent reads than the pool has connections (5) and than there are
        // cooperative threads: async reads (feeds) and synchronous ones (cursor, meta) at
        // once, as a hub's handlers and an agent's loops issue them. With GRDB's own async
        // read in `feed`, this hung (checked): the time limit cannot fire either, since the
        // deadlock takes every cooperative thread.
        let pages = try await withThrowingTaskGroup(of: Int.self) { group in
            for i in 0..<200 {
                group.addTask {
                    if i.isMultiple(of: 2) {
                        return try await hub.feed(after: 0, scope: Scope(nodes: ["d1"]), excluding: nil, limit: 100).changes.count
                    }
                    _ = try hub.cursor("pull.parent")
                    _ = try hub.meta("node")
                    return 50
                }
            }
            return try await group.reduce(0, +)
        }
        #expect(pages == 200 * 50)
    }

    @Test("an outbound contact with a purpose by a channel no customer can consent to (fax, chat, web, visit) is refused; by phone it needs the customer's consent (fax marketing went through)")
    func outboundByUnconsentableChannel() throws {
        let dir = try TempDir()
        let store = try makeStore(dir, "d1")
        var consents: [String: FieldValue] = ["last_name": "Meyer"]
        for field in Consent.fieldSuffixes { consents["consent_" + field] = .bool(true) }
        try store.commit([.upsert("customers", id: "c-1", consents)])
        for channel in ["fax", "chat", "web", "visit"] {
            let write = RecordWrite.upsert("interactions", id: "out-\(channel)", ["customer_id": "c-1", "direction": "outbound",
                                                                               "purpose": "marketing", "channel": .string(channel)])
            #expect(throws: StoreError.self, "\(channel)") { try store.commit([write]) }
            #expect(try store.record(table: "interactions", id: "out-\(channel)") == nil)
        }
        // The same customer, consenting to everything that can be consented to: a call goes out;
        // a fax it sent in is answered (no purpose: the customer's own dialogue).
        try store.commit([.upsert("interactions", id: "out-phone", ["customer_id": "c-1", "direction": "outbound", "purpose": "marketing", "channel": "phone"]),
                          .upsert("interactions", id: "in-fax", ["customer_id": "c-1", "direction": "outbound", "channel": "fax"])])
        #expect(try store.record(table: "interactions", id: "out-phone") != nil && store.record(table: "interactions", id: "in-fax") != nil)
        // With a purpose but no channel named, none the customer consented to either.
        #expect(throws: StoreError.self) {
            try store.commit([.upsert("interactions", id: "out-none", ["customer_id": "c-1", "direction": "outbound", "purpose": "marketing"])])
        }
        // The refusal names the channel.
        do {
            try store.commit([.upsert("interactions", id: "out-fax", ["customer_id": "c-1", "direction": "outbound", "purpose": "service", "channel": "fax"])])
            Issue.record("an outbound service fax was written")
        } catch {
            #expect("\(error)".contains("outbound contact by fax, a channel no customer can consent to"), "\(error)")
        }
    }

    @Test("a store adopts what others hold of its own changes as its numbering floor, at most 1,000,000 above the numbers it used, and repeated reports cannot ratchet it up")
    func adoptedSequenceIsBounded() throws {
        let dir = try TempDir()
        let store = try makeStore(dir, "d1")
        try store.commit((1...3).map { .upsert("customers", id: "c-\($0)", ["last_name": "N"]) })
        #expect(try store.adoptOwnSequenceHeldByParent(2, resettingPull: "pull.parent", bootstrappedKey: "pull.bootstrapped") == nil, "below what it used")
        try store.setCursor("pull.parent", 40)
        try store.setMeta("pull.bootstrapped", "1")
        #expect(try store.adoptOwnSequenceHeldByParent(9, resettingPull: "pull.parent", bootstrappedKey: "pull.bootstrapped") == 3)
        #expect(try store.commit([.upsert("customers", id: "c-4", ["last_name": "N"])]).first?.originSeq == 10)
        #expect(try store.cursor("pull.parent") == 0 && store.meta("pull.bootstrapped") == nil, "the pull starts again, in the same transaction")
        for _ in 0..<3 {
            _ = try store.adoptOwnSequenceHeldByParent(Change.sequenceRange.upperBound, resettingPull: "pull.parent", bootstrappedKey: "pull.bootstrapped")
        }
        #expect(try store.commit([.upsert("customers", id: "c-5", ["last_name": "N"])]).first?.originSeq == 10 + 1_000_000 + 1,
                "bounded by the numbers used (10), not by the floor an earlier report set")
    }

    @Test("two handles on one file (an agent and a CLI) never stamp alike")
    func sharedFileClock() async throws {
        let dir = try TempDir()
        let a = try makeStore(dir, "d1")
        let b = try NodeStore(path: a.path)
        var changes: [Change] = []
        for i in 0..<50 {
            changes += try (i % 2 == 0 ? a : b).commit([.upsert("customers", id: "c-\(i % 5)", ["phone": .string("\(i)")])], wallMillis: 1_000)
        }
        #expect(Set(changes.map(\.hlc)).count == 50)
        #expect(Set(changes.map(\.originSeq)).count == 50)
        #expect(changes.map(\.hlc) == changes.map(\.hlc).sorted())
    }

    @Test("received changes apply once; bad ones are quarantined with a reason and block nothing")
    func incoming() async throws {
        let dir = try TempDir()
        let dealer = try makeStore(dir, "d1")
        let hub = try makeStore(dir, "hq", parent: nil)
        var batch = try dealer.commit([.upsert("customers", id: "c-1", ["last_name": "Meyer"]),
                                       .upsert("customers", id: "c-2", ["last_name": "Kraus"])])
        var bad = batch[1]
        bad.originSeq = 3
        bad.fields = ["no_such_field": "x"]
        batch.insert(bad, at: 1)
        let report = try await hub.applyIncoming(batch, from: "d1", source: .child, checkSkew: true, cursor: ("x", 42))
        #expect(report.applied == 2)
        #expect(report.rejected.map(\.code) == [.unknownField])
        #expect(try hub.cursor("x") == 42)
        let again = try await hub.applyIncoming(batch, from: "d1", source: .child, checkSkew: true)
        #expect(again.applied == 0)
        #expect(again.duplicates == 2, "applied changes are recognised on redelivery")
        #expect(again.rejected.map(\.code) == [.unknownField], "a schema refusal is judged again (a newer schema may accept it)")
        let q = try hub.quarantined()
        #expect(q.count == 1)
        #expect(q[0].reason.contains("no_such_field"))
        #expect(try hub.liveRecords(table: "customers").map(\.id) == ["c-1", "c-2"])
    }

    @Test("a change stamped beyond the skew bound is quarantined as clock_skew")
    func skew() async throws {
        let dir = try TempDir()
        let hub = try makeStore(dir, "hq", parent: nil)
        let now = WallClock.nowMillis()
        let future = Change(origin: "d1", originSeq: 1, hlc: HLCTimestamp(wallMillis: now + 3_600_000, counter: 0),
                            table: "customers", recordID: "c-1", op: .upsert, fields: ["last_name": "Future"])
        let report = try await hub.applyIncoming([future], from: "d1", source: .child, checkSkew: true, wallMillis: now)
        #expect(report.rejected.first?.code == .clockSkew)
        #expect(report.rejected.first?.message.contains("3600 s ahead") == true)
        #expect(try hub.quarantined().count == 1)
        #expect(report.rejected.first?.restampAtMillis == now)
        // Sent again by its origin with the same stamp, even once the clocks agree, it is
        // refused again: it would win over every write accepted since the refusal. The
        // refusal keeps the first refusal time.
        let later = try await hub.applyIncoming([future], from: "d1", source: .child, checkSkew: true, wallMillis: now + 3_600_000)
        #expect(later.applied == 0)
        #expect(later.rejected.map(\.code) == [.clockSkew])
        #expect(later.rejected.first?.restampAtMillis == now)
        // Re-stamped to no later than the first refusal, it is applied exactly once and
        // leaves the quarantine; refused for context, the identity was never final.
        var restamped = future
        restamped.hlc = HLCTimestamp(wallMillis: now, counter: 0)
        #expect(try await hub.applyIncoming([restamped], from: "d1", source: .child, checkSkew: true, wallMillis: now + 5).applied == 1)
        #expect(try hub.quarantined().isEmpty)
        #expect(try await hub.applyIncoming([restamped], from: "d1", source: .child, checkSkew: true).duplicates == 1)
    }

    @Test("the feed pages a node's scope and its cursor skips what is out of scope")
    func scopedFeed() async throws {
        let dir = try TempDir()
        let hub = try makeStore(dir, "hq", parent: nil)
        try hub.commit([.upsert("customers", id: "c-1", ["owning_dealer": "d1"]),
                        .upsert("customers", id: "c-2", ["owning_dealer": "d2"]),
                        .upsert("customers", id: "c-3", ["owning_dealer": "d2", "servicing_dealer": "d1"])])
        let page = try await hub.feed(after: 0, scope: Scope(nodes: ["d1"]), excluding: "d1", limit: 10)
        #expect(page.changes.map(\.recordID) == ["c-1", "c-3"])
        #expect(page.nextCursor == 3)
        #expect(!page.more)
        let first = try await hub.feed(after: 0, scope: .everything, excluding: nil, limit: 2)
        #expect(first.more && first.nextCursor == 2)
    }

    @Test("replicas that exchange their changes have equal digests, and keep the concurrent loser")
    func convergence() async throws {
        let dir = try TempDir()
        let a = try makeStore(dir, "d1"), b = try makeStore(dir, "d2"), hub = try makeStore(dir, "hq", parent: nil)
        let fromA = try a.commit([.upsert("customers", id: "c-1", ["phone": "111", "owning_dealer": "d1", "servicing_dealer": "d2"])], wallMillis: 1_000)
        let fromB = try b.commit([.upsert("customers", id: "c-1", ["phone": "222", "owning_dealer": "d1", "servicing_dealer": "d2"])], wallMillis: 2_000)
        for (store, changes) in [(hub, fromA + fromB), (a, fromB), (b, fromA)] {
            _ = try await store.applyIncoming(changes, from: "x", source: .parent, checkSkew: false)
        }
        #expect(try a.digest() == b.digest())
        #expect(try a.digest() == hub.digest())
        #expect(try hub.record(table: "customers", id: "c-1")?.state.liveValues["phone"] == "222")
        let conflicts = try hub.conflicts()
        #expect(conflicts.count == 1)
        #expect(conflicts.first?.conflict.loser == "111")
        #expect(conflicts.first?.conflict.loserVersion.node == "d1")
    }

    @Test("a kept conflict settles on every replica once a newer edit of its field arrives (a resolution), not for an older edit or another field's")
    func conflictSettles() async throws {
        let dir = try TempDir()
        let a = try makeStore(dir, "d1"), b = try makeStore(dir, "d2"), hub = try makeStore(dir, "hq", parent: nil)
        let fromA = try a.commit([.upsert("customers", id: "c-1", ["phone": "111", "owning_dealer": "d1", "servicing_dealer": "d2"])], wallMillis: 1_000)
        let fromB = try b.commit([.upsert("customers", id: "c-1", ["phone": "222", "owning_dealer": "d1", "servicing_dealer": "d2"])], wallMillis: 2_000)
        for (store, changes) in [(hub, fromA + fromB), (a, fromB), (b, fromA)] {
            _ = try await store.applyIncoming(changes, from: "x", source: .parent, checkSkew: false)
        }
        #expect(try hub.conflicts().count == 1 && a.conflicts().count == 1)
        // Another field's edit, and an edit older than the conflict's winner, settle nothing.
        let other = try hub.commit([.upsert("customers", id: "c-1", ["last_name": "Meyer"])])
        let stale = Change(origin: "d9", originSeq: 1, hlc: HLCTimestamp(wallMillis: 1_500, counter: 0), table: "customers", recordID: "c-1",
                           op: .upsert, fields: ["phone": "333"])
        _ = try await hub.applyIncoming([stale], from: "x", source: .parent, checkSkew: false)
        #expect(try hub.conflicts().count == 2, "the stale edit lost: one more conflict, the first one kept")
        // HQ writes the loser's value again: its edit is newer than both, so the conflicts settle
        // at HQ, and at each replica that applies it.
        let resolution = try hub.commit([.upsert("customers", id: "c-1", ["phone": "111"])])
        #expect(try hub.conflicts().isEmpty)
        for store in [a, b] {
            _ = try await store.applyIncoming(other + resolution, from: "hq", source: .parent, checkSkew: false)
            #expect(try store.conflicts().isEmpty)
            #expect(try store.record(table: "customers", id: "c-1")?.state.liveValues["phone"] == "111")
        }
    }

    @Test("a store rebuilt for an enrolled node numbers its changes above what the parent holds")
    func sequenceFloor() async throws {
        let dir = try TempDir()
        let store = try NodeStore(path: dir.path + "/rebuilt.sqlite")
        try store.completeEnrollment(NodeIdentity(tenant: "acme", node: "d1", parent: "hq"), credential: "tsc_x",
                                     parentURL: "https://hub", highestKnownSeq: 40)
        #expect(try store.commit([.upsert("customers", id: "c-1", ["last_name": "New"])]).first?.originSeq == 41)
        #expect(try store.meta("credential") == "tsc_x")
    }

    @Test("within one batch a repeated change counts once and a record created earlier in the batch is merged into; scattered sequences of one origin are still recognised")
    func batchLookups() async throws {
        let dir = try TempDir()
        let hub = try makeStore(dir, "hq", parent: nil)
        let create = Change(origin: "d1", originSeq: 1, hlc: HLCTimestamp(wallMillis: 1_000, counter: 0), table: "customers",
                            recordID: "c-1", op: .upsert, fields: ["owning_dealer": "d1", "last_name": "Meyer"])
        // Far apart from seq 1: looked up change by change rather than as one range.
        let edit = Change(origin: "d1", originSeq: 5_000, hlc: HLCTimestamp(wallMillis: 2_000, counter: 0), table: "customers",
                          recordID: "c-1", op: .upsert, fields: ["phone": "+49 1"])
        let first = try await hub.applyIncoming([create, create, edit], from: "d1", source: .child, checkSkew: false)
        #expect(first.applied == 2 && first.duplicates == 1)
        let record = try #require(try hub.record(table: "customers", id: "c-1"))
        #expect(record.state.liveValues["last_name"] == "Meyer" && record.state.liveValues["phone"] == "+49 1",
                "the edit merged into the record the same batch created")
        let again = try await hub.applyIncoming([edit, create], from: "d1", source: .child, checkSkew: false)
        #expect(again.applied == 0 && again.duplicates == 2)
        var reused = edit
        reused.hlc = HLCTimestamp(wallMillis: 3_000, counter: 0)
        #expect(try await hub.applyIncoming([reused], from: "d1", source: .child, checkSkew: false).rejected.map(\.code) == [.identityReused])
        #expect(try hub.changeCountsByOrigin()["d1"] == 2)
    }

    @Test("two different changes under one identity are refused, not taken as a duplicate")
    func identityReuse() async throws {
        let dir = try TempDir()
        let hub = try makeStore(dir, "hq", parent: nil)
        let first = Change(origin: "d1", originSeq: 1, hlc: HLCTimestamp(wallMillis: 1_000, counter: 0), table: "customers",
                           recordID: "c-1", op: .upsert, fields: ["owning_dealer": "d1", "last_name": "First"])
        var second = first
        second.hlc = HLCTimestamp(wallMillis: 2_000, counter: 0)
        second.fields["last_name"] = "Second"
        _ = try await hub.applyIncoming([first], from: "d1", source: .child, checkSkew: false)
        let report = try await hub.applyIncoming([second], from: "d1", source: .child, checkSkew: false)
        #expect(report.rejected.map(\.code) == [.identityReused])
        #expect(report.rejected.first?.message.contains("re-enroll") == true)
        #expect(try hub.record(table: "customers", id: "c-1")?.state.liveValues["last_name"] == "First")
    }

    @Test("a far-future stamp from the parent is applied but not adopted by the local clock")
    func clockNotDragged() async throws {
        let dir = try TempDir()
        let dealer = try makeStore(dir, "d1")
        let now = WallClock.nowMillis()
        let future = Change(origin: "hq", originSeq: 1, hlc: HLCTimestamp(wallMillis: now + 7_200_000, counter: 0), table: "customers",
                            recordID: "c-1", op: .upsert, fields: ["owning_dealer": "d1", "last_name": "From a fast clock"])
        #expect(try await dealer.applyIncoming([future], from: "hq", source: .parent, checkSkew: false, wallMillis: now).applied == 1)
        let local = try dealer.commit([.upsert("customers", id: "c-2", ["last_name": "Local"])], wallMillis: now)
        #expect(local[0].hlc.wallMillis < now + 60_000, "local writes stay near real time")
    }

    @Test("a record re-created after a delete is routed to its writer again")
    func recreateAfterDelete() async throws {
        let dir = try TempDir()
        let store = try makeStore(dir, "d1")
        try store.commit([.upsert("customers", id: "c-1", ["last_name": "A"])])
        try store.commit([.delete("customers", id: "c-1")])
        let again = try store.commit([.upsert("customers", id: "c-1", ["city": "Berlin"])])
        #expect(again[0].fields["owning_dealer"] == "d1")
        #expect(try store.record(table: "customers", id: "c-1")?.route == ["d1"])
    }

    @Test("a store written before v5 (replication rows in ts_records) opens converted: live records keep versions and route, a deleted one its tombstone")
    func convertsStoresOfTheFourTableLayout() async throws {
        let dir = try TempDir()
        // Made by the v4 code (1,000 local contacts of dealer-1), plus one delete; see fixtures/stores/README.md.
        let path = dir.path + "/dealer.sqlite"
        try FileManager.default.copyItem(atPath: repositoryRoot() + "/fixtures/stores/v4-dealer.sqlite", toPath: path)
        let store = try NodeStore(path: path)
        #expect(try store.counts().records["customers"] == 999)
        #expect(try store.headSeq() == 1_001)
        let c0 = try #require(try store.record(table: "customers", id: "c-0"))
        #expect(c0.route == ["dealer-1"])
        #expect(c0.state.isLive && c0.state.tombstone == nil)
        #expect(c0.state.liveValues["last_name"] == "Schmidt")
        #expect(c0.state.versions["phone"]?.description == "117714097426989056@dealer-1")
        let gone = try #require(try store.record(table: "customers", id: "c-999"), "the tombstone survives")
        #expect(!gone.state.isLive)
        #expect(gone.state.tombstone?.description == "117714097426990056@dealer-1")
        #expect(gone.route == ["dealer-1"])
        // Writing on: an edit merges into the converted versions; the deleted record comes back.
        let edit = try store.commit([.upsert("customers", id: "c-0", ["city": "Bonn"]), .upsert("customers", id: "c-999", ["city": "Kiel"])])
        #expect(edit.map(\.originSeq) == [1_001 + 1, 1_001 + 2])
        #expect(edit[0].prior.isEmpty, "city was never written")
        #expect(edit[1].prior["owning_dealer"]?.description == "117714097426990055@dealer-1", "the revived record's owner is written over its converted version")
        #expect(try store.record(table: "customers", id: "c-0")?.state.liveValues == ["last_name": "Schmidt", "city": "Bonn", "owning_dealer": "dealer-1",
                                                                                        "phone": "+49 30 1000000", "email": "schmidt.0@example.com"])
        let back = try #require(try store.record(table: "customers", id: "c-999"))
        #expect(back.state.isLive && back.state.liveValues == ["city": "Kiel", "owning_dealer": "dealer-1"])
        #expect(back.state.tombstone?.description == "117714097426990056@dealer-1", "the delete's version is kept in the live row")
        #expect(try store.counts().records["customers"] == 1_000)
        // Opening again changes nothing.
        let again = try NodeStore(path: path)
        #expect(try again.digest() == store.digest())
    }

    @Test("a domain row written around the store (plain SQL, no versions) is not a held record: it is left out of reads and the next change replaces it")
    func rowsWrittenAroundTheStore() async throws {
        let dir = try TempDir()
        let store = try makeStore(dir, "d1")
        try await store.writer.write { db in
            try db.execute(sql: "INSERT INTO customers (id, last_name, owning_dealer) VALUES ('c-x', 'Foreign', 'd1')")
        }
        #expect(try store.record(table: "customers", id: "c-x") == nil)
        #expect(try store.liveRecords(table: "customers").isEmpty)
        let empty = try makeStore(dir, "d2")
        #expect(try store.digest() == empty.digest(), "the foreign row is not part of the replica")
        let applied = try await store.applyIncoming([Change(origin: "d9", originSeq: 1, hlc: HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: 0),
                                                            table: "customers", recordID: "c-x", op: .upsert, fields: ["city": "Kiel"])],
                                                    from: "hq", source: .parent, checkSkew: false)
        #expect(applied.applied == 1)
        #expect(try store.liveRecords(table: "customers").map(\.values) == [["city": "Kiel"]], "the change replaced the foreign row")
    }

    @Test("a float out of range in an integer field's column (written around the store) is read as a float, by the next write and by reads, without a trap")
    func outOfRangeFloatInIntegerColumn() async throws {
        let dir = try TempDir()
        let store = try makeStore(dir, "d1")
        try store.commit([.upsert("interactions", id: "i-1", ["channel": "phone", "priority": 3])])
        try await store.writer.write { db in
            try db.execute(sql: "UPDATE interactions SET priority = 1e300 WHERE id = 'i-1'")
        }
        // The write loads the record first (its merge), then reads show the stored value.
        try store.commit([.upsert("interactions", id: "i-1", ["summary": "Called back"])])
        let held = try #require(try store.record(table: "interactions", id: "i-1"))
        #expect(held.state.liveValues["priority"] == .double(1e300))
        #expect(held.state.liveValues["summary"] == "Called back")
        #expect(try store.liveRecords(table: "interactions").first?.values["priority"] == .double(1e300))
    }

    @Test("a schema field may not take an engine column's name")
    func reservedColumns() throws {
        let schema = Schema(tables: [TableSchema(name: "things", fields: [FieldSchema("ts_route", .node)], routeFields: ["ts_route"])])
        #expect(throws: StoreError.self) { try NodeStore(path: ":memory:", schema: schema) }
    }

    @Test("a feed page written from the log's stored JSON is byte for byte the page the wire encoder writes")
    func encodedFeedMatchesEncoder() async throws {
        let dir = try TempDir()
        let dealer = try makeStore(dir, "d1"), hub = try makeStore(dir, "hq", parent: nil)
        let made = try dealer.commit([
            .upsert("customers", id: "c-1", ["last_name": "Müller \"der Ältere\"\\ \n\t😀", "key_account": true, "phone": .null]),
            .upsert("customers", id: "c-2", ["last_name": "Weber", "consent_marketing_sms": false]),
            .upsert("leads", id: "l-1", ["value": 1_234.5, "source_node": "d1", "status": "new", "currency": "EUR"]),
            .upsert("leads", id: "l-2", ["value": 1e-7, "source_node": "d1"]),
            .upsert("customers", id: "c-1", ["city": "Köln", "last_name": "Müller"]),
            .delete("customers", id: "c-2"),
            .upsert("governance_status", id: "d1", ["node": "d1", "release": 42]),
        ])
        // Received at the hub: each change gains the hub's hop; edits carry prior versions.
        _ = try await hub.applyIncoming(made, from: "d1", source: .child, checkSkew: false)
        try hub.commit([.upsert("customers", id: "c-9", ["last_name": "HQ", "owning_dealer": "d2"])])
        for scope in [Scope.everything, Scope(nodes: ["d1"]), Scope(nodes: ["d1", "d2"])] {
            for excluding: NodeID? in [nil, "d1"] {
                var cursor: Int64 = 0
                while true {
                    let typed = try await hub.feed(after: cursor, scope: scope, excluding: excluding, limit: 3)
                    let encoded = try await hub.encodedFeed(after: cursor, scope: scope, excluding: excluding, limit: 3)
                    #expect(encoded.json == WireEncoding.pullResponse(typed), "\(String(decoding: encoded.json, as: UTF8.self))")
                    #expect(encoded.count == typed.changes.count && encoded.more == typed.more && encoded.nextCursor == typed.nextCursor)
                    guard typed.more else { break }
                    cursor = typed.nextCursor
                }
            }
        }
        let all = try await hub.feed(after: 0, scope: .everything, excluding: nil, limit: 100)
        #expect(all.changes.count == 8)
        #expect(all.changes.contains { !$0.prior.isEmpty } && all.changes.allSatisfy { $0.origin != "d1" || !$0.trail.isEmpty })
    }

    @Test("a log that starts over and grows back to the length last copied still has pages to copy (read as none, a push stayed in the log until the next write)")
    func restartedLogIsPending() {
        let progress = WALProgress(backstopFrames: 1_000)
        // The owner copied a log of 113 frames; nothing committed since.
        progress.logFrames.store(113, ordering: .relaxed)
        progress.copiedFrames.store(113, ordering: .relaxed)
        #expect(progress.pending == 0)
        // The log starts over and a commit writes 113 frames again: the hook sees the same length.
        progress.commits.add(1, ordering: .relaxed)
        #expect(progress.pending == 1)
        // Growing past it, or starting over shorter, counts as before.
        progress.logFrames.store(150, ordering: .relaxed)
        #expect(progress.pending == 37)
        progress.logFrames.store(40, ordering: .relaxed)
        #expect(progress.pending == 40)
    }

    @Test("a store checkpointed by its owner keeps its commits out of the database file until checkpoint() copies them; one checkpointed by its writer copies them itself")
    func ownerCheckpoints() async throws {
        let dir = try TempDir()
        func size(_ path: String) throws -> Int { try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int }
        func commitBatch(_ store: NodeStore, _ batch: Int) throws {
            // ~960 bytes of names, in the domain row and the log entry.
            try store.commit((0..<100).map { i in .upsert("customers", id: "c-\(batch)-\(i)", longNames(i)) })
        }
        let owned = try NodeStore(path: dir.path + "/owned.sqlite", checkpointing: .byOwner)
        try owned.setIdentity(NodeIdentity(tenant: "acme", node: "d1", parent: "hq"))
        // Past SQLite's own threshold (1,000 pages), under the owner's backstop.
        var batches = 0
        while try #require(owned.uncheckpointedPages) < 1_200, batches < 100 {
            try commitBatch(owned, batches)
            batches += 1
        }
        let pending = try #require(owned.uncheckpointedPages)
        #expect(pending >= 1_200 && pending < WALCheckpointing.writerBackstopPages, "the writer reports its log: \(pending) pages")
        let unchecked = try size(owned.path)
        let result = try #require(try await owned.checkpoint())
        #expect(result.logPages == pending, "nothing was copied before: the log is as long as reported")
        #expect(result.copiedPages == result.logPages, "no reader holds frames back: all copied")
        #expect(owned.uncheckpointedPages == 0)
        // At least the names of every record, once in its row and once in its log entry
        // (a fixed figure failed once the store's own tables took a few more log pages at
        // creation: 1,200 pages were then reached one batch sooner).
        #expect(try size(owned.path) >= unchecked + batches * 100 * 2 * 960, "the database file received them")
        #expect(try NodeStore(path: owned.path).counts().records["customers"] == batches * 100)

        let plain = try makeStore(dir, "d2")
        for batch in 0..<batches { try commitBatch(plain, batch) }
        #expect(plain.uncheckpointedPages == nil)
        #expect(try await plain.checkpoint() == nil, "checkpointed by its writer: nothing for the owner to do")
        let copiedByWriter = try size(plain.path)
        #expect(copiedByWriter > unchecked + 2_000_000, "the writer copied the log in its commits: \(copiedByWriter) bytes (owner's store before its checkpoint: \(unchecked))")
    }

    @Test("a delete replicates to the nodes that held the record")
    func deleteRouting() async throws {
        let dir = try TempDir()
        let hub = try makeStore(dir, "hq", parent: nil)
        try hub.commit([.upsert("customers", id: "c-1", ["owning_dealer": "d1", "last_name": "Gone"])])
        try hub.commit([.delete("customers", id: "c-1")])
        let page = try await hub.feed(after: 1, scope: Scope(nodes: ["d1"]), excluding: nil, limit: 10)
        #expect(page.changes.map(\.op) == [.delete])
        #expect(try hub.liveRecords(table: "customers").isEmpty)
    }
}

@Suite("Hub catalog")
struct HubCatalogTests {
    @Test("enrollment tokens are one-time and expire; credentials are stored hashed and revocable by re-enrolling")
    func enrollment() async throws {
        let dir = try TempDir()
        let catalog = try HubCatalog(directory: dir.path)
        try catalog.createTenant("acme")
        let token = try catalog.issueEnrollmentToken(tenant: "acme", node: "d1", ttlSeconds: 60, nowMillis: 1_000)
        let enrolled = try await catalog.redeem(token: token, nowMillis: 2_000)
        #expect(enrolled.node == "d1" && enrolled.parent == "hq")
        #expect(try await catalog.authenticate(credential: enrolled.credential) == Principal(tenant: "acme", node: "d1"))
        await #expect(throws: EnrollmentError.alreadyUsed) { try await catalog.redeem(token: token, nowMillis: 3_000) }
        let late = try catalog.issueEnrollmentToken(tenant: "acme", node: "d2", ttlSeconds: 1, nowMillis: 1_000)
        await #expect(throws: EnrollmentError.self) { try await catalog.redeem(token: late, nowMillis: 5_000) }
        await #expect(throws: EnrollmentError.unknownToken) { try await catalog.redeem(token: "tse_nope") }
        let again = try await catalog.redeem(token: try catalog.issueEnrollmentToken(tenant: "acme", node: "d1"))
        #expect(try await catalog.authenticate(credential: enrolled.credential) == nil, "re-enrolling revokes the old credential")
        #expect(try await catalog.authenticate(credential: again.credential) != nil)
        let raw = try String(contentsOfFile: dir.path + "/hub.sqlite", encoding: .isoLatin1)
        #expect(!raw.contains(again.credential), "credentials are never stored in clear")
    }

    @Test("a tenant's levels decide roles and refuse trees that are too deep; moves keep within them")
    func levels() async throws {
        let dir = try TempDir()
        let catalog = try HubCatalog(directory: dir.path)
        try catalog.createTenant("insura", levels: 2)
        try catalog.createTenant("acme", levels: 3)
        _ = try await catalog.redeem(token: try catalog.issueEnrollmentToken(tenant: "insura", node: "agent-1"))
        #expect(try await catalog.node("agent-1", of: "insura")?.role == "dealer")
        #expect(throws: StoreError.self) { try catalog.issueEnrollmentToken(tenant: "insura", node: "x", parent: "agent-1") }
        #expect(throws: StoreError.self) { try catalog.issueEnrollmentToken(tenant: "acme", node: "de", role: "dealer") }
        _ = try await catalog.redeem(token: try catalog.issueEnrollmentToken(tenant: "acme", node: "de"))
        _ = try await catalog.redeem(token: try catalog.issueEnrollmentToken(tenant: "acme", node: "fr"))
        _ = try await catalog.redeem(token: try catalog.issueEnrollmentToken(tenant: "acme", node: "d1", parent: "de"))
        #expect(try await catalog.node("de", of: "acme")?.role == "country")
        #expect(try await catalog.node("d1", of: "acme")?.role == "dealer")
        // Checked up the parent chain: an unknown parent, a level too deep, a node that exists elsewhere.
        let unknown = #expect(throws: StoreError.self) { try catalog.issueEnrollmentToken(tenant: "acme", node: "d9", parent: "nowhere") }
        #expect(unknown.map { "\($0)" } == "parent node 'nowhere' in tenant 'acme' not found")
        let deep = #expect(throws: StoreError.self) { try catalog.issueEnrollmentToken(tenant: "acme", node: "d9", parent: "d1") }
        #expect(deep.map { "\($0)" } == "tenant 'acme' has 3 levels; 'd9' under 'd1' would be level 4")
        let elsewhere = #expect(throws: StoreError.self) { try catalog.issueEnrollmentToken(tenant: "acme", node: "d1", parent: "fr") }
        #expect(elsewhere.map { "\($0)" }?.hasPrefix("node 'd1' already exists under 'de'") == true)
        try catalog.moveNode("d1", of: "acme", to: "fr")
        #expect(try await catalog.tree(of: "acme").path(of: "d1") == "hq/fr/d1")
        try catalog.moveNode("d1", of: "acme", to: "de")
        #expect(try await catalog.tree(of: "acme").path(of: "d1") == "hq/de/d1")
        #expect(throws: StoreError.self) { try catalog.moveNode("de", of: "acme", to: "fr") }
        // A token issued before a move would put the node back: the move revokes it.
        let stale = try catalog.issueEnrollmentToken(tenant: "acme", node: "d1", parent: "de")
        try catalog.moveNode("d1", of: "acme", to: "fr")
        await #expect(throws: EnrollmentError.unknownToken) { try await catalog.redeem(token: stale) }
        try catalog.moveNode("d1", of: "acme", to: "de")
        #expect(throws: StoreError.self) { try catalog.moveNode("hq", of: "acme", to: "fr") }
        try catalog.moveNode("d1", of: "acme", to: "fr")
        let directory = try await catalog.directory(for: Principal(tenant: "acme", node: "fr"))
        #expect(Set(directory.nodes.map(\.id)) == ["fr", "d1"])
        #expect(directory.credentials.map(\.node) == ["d1"], "digests only for nodes below the caller")
    }
}

/// Names near their length limits: ~960 bytes of field values.
func longNames(_ i: Int) -> [String: FieldValue] {
    ["first_name": .string(String(repeating: "f", count: 190) + "\(i)"), "last_name": .string(String(repeating: "l", count: 190) + "\(i)"),
     "company_name": .string(String(repeating: "c", count: 290) + "\(i)"), "street": .string(String(repeating: "s", count: 290) + "\(i)")]
}

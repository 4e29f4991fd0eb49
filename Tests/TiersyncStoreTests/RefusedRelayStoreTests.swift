import Foundation
import GRDB
import Testing
import TiersyncCore
@testable import TiersyncStore
import TiersyncTestSupport

/// A country's changes of its children that its parent refused as outside the scope of
/// the node that made them (`NodeStore.dropRefusedRelays`; docs/PRIVACY.md, "Re-scoping").
@Suite("Refused relays in a store")
struct RefusedRelayStoreTests {
    /// `changes` as the parent refuses them: each record outside the scope of the node that made the change.
    func refusedOutside(_ changes: Change...) -> [(change: Change, refusal: RejectedChange)] {
        changes.map { change in
            (change, RejectedChange(change: change, rejection: ChangeRejection(
                .forbidden, "record \(change.table)/\(change.recordID) is outside the scope of node '\(change.origin)'", outsideScopeOf: change.origin)))
        }
    }

    @Test("""
    a child's changes the parent refused after HQ moved their maker away are withdrawn at the country, whatever their \
    records' routes (a dialogue also routed to the country, a customer shared with a sibling), and the maker is told to \
    send them again, one notice per origin: its push goes back to the first; they are new at the country when they come back (helpers 80, 84, 86)
    """)
    func makerMovedAway() async throws {
        let dir = try TempDir()
        let de = try makeStore(dir, "de")
        let d1 = try makeStore(dir, "d1", parent: "de")
        try d1.commit([.upsert("customers", id: "c-shared", ["last_name": "Shared", "owning_dealer": "d1", "servicing_dealer": "d2"])])
        try d1.commit([.upsert("interactions", id: "i-up", ["summary": "escalated", "originating_node": "d1", "handling_node": "de"])])
        try d1.commit([.upsert("customers", id: "c-own", ["last_name": "Own"])])
        let made = try ["c-shared", "i-up", "c-own"].flatMap { try d1.lineage(recordID: $0).map(\.change) }
        #expect(try await de.applyIncoming(made, from: "d1", source: .child, checkSkew: false).applied == 3)
        // de pushed them; HQ, which has moved d1 to fr, refused each (a reason that may pass: retried).
        try de.setCursor(NodeStore.parentPushCursor, 3)
        try de.scheduleRetries(made.map { RejectedChange(change: $0, rejection: ChangeRejection(
            .forbidden, "change \($0.origin)#\($0.originSeq) claims origin 'd1', which is not node 'de' or below it")) })
        // A fourth, refused for another reason (clock skew, which passes): not the move's to settle.
        try d1.commit([.upsert("customers", id: "c-skew", ["last_name": "Skewed"])])
        let skewed = try #require(try d1.lineage(recordID: "c-skew").first?.change)
        #expect(try await de.applyIncoming([skewed], from: "d1", source: .child, checkSkew: false).applied == 1)
        try de.setCursor(NodeStore.parentPushCursor, 4)
        try de.scheduleRetries([RejectedChange(change: skewed, rejection: ChangeRejection(.clockSkew, "ahead"))])
        #expect(try de.pendingRetries() == 4)

        // While d1 is still de's (its mirror not refreshed yet), nothing is let go.
        let before = NodeTree(parents: ["hq": nil, "de": "hq", "fr": "hq", "d1": "de", "d2": "de"])
        #expect(try de.releaseChangesOfMakersGone(outside: Scope(tree: before, node: "de")) == 0)
        // Once the mirror has d1 under fr, the sweep lets every one go, the records still in
        // de's scope too (helper 84: only records wholly outside it were looked at).
        let after = NodeTree(parents: ["hq": nil, "de": "hq", "fr": "hq", "d1": "fr", "d2": "de"])
        let swept = try de.evict(outside: Scope(tree: after, node: "de"), records: nil)
        #expect(swept.sendAgainNotices == 3, "\(swept)")
        #expect(try de.pendingRetries() == 1, "the skewed one still waits to be sent again")
        for id in ["c-shared", "c-own"] { #expect(try de.record(table: "customers", id: id) == nil, "\(id)") }
        #expect(try de.record(table: "interactions", id: "i-up") == nil)
        // One notice for d1's changes, naming the lowest let go (helper 86: one each, and the
        // per-child bound kept only the newest 1,000 of 2,800).
        let notices = try de.refusalsKept(for: "d1", after: 0, limit: 10).refusals
        #expect(notices.map(\.refusal.originSeq) == [1] && notices.allSatisfy { $0.refusal.outsideScopeOf == "de" }, "\(notices)")

        // d1 takes it from de, the parent that let them go: its push goes back to d1#1, so all
        // three are sent again (and any later one, which de takes for a duplicate).
        try d1.setCursor(NodeStore.parentPushCursor, 4)
        let taken = try d1.takeUpstreamRefusals(notices, from: "de")
        #expect(taken.sendAgain.map(\.originSeq) == [1] && taken.setAside.isEmpty && taken.ignored.isEmpty, "\(taken)")
        #expect(taken.sendAgainHeld == ["d1": 0] && taken.sendAgainFrom == 0)
        #expect(try d1.cursor(NodeStore.parentPushCursor) == 0, "the push went back in the same transaction")
        #expect(try d1.record(table: "customers", id: "c-own") != nil, "the maker keeps its writes")
        // From another parent (fr), such a notice is not one: ignored.
        #expect(try d1.takeUpstreamRefusals([notices[0]], from: "fr").ignored.count == 1)
        // Sent again, they are new at de, not duplicates of what it let go.
        let again = try await de.applyIncoming(made, from: "d1", source: .child, checkSkew: false)
        #expect(again.applied == 3 && again.duplicates == 0, "\(again)")
    }

    @Test("""
    a dropped relay is passed down to the child it came from, and to no other: the maker withdraws its write, sets it \
    aside in its quarantine and never numbers a change with its sequence again; a node that only relayed it drops it \
    and passes it on; taking a notice twice changes nothing
    """)
    func passedDown() async throws {
        let dir = try TempDir()
        let de = try makeStore(dir, "de")
        let mid = try makeStore(dir, "mid", parent: "de")
        let d1 = try makeStore(dir, "d1", parent: "mid")
        try d1.commit([.upsert("customers", id: "c-1", ["last_name": "Mine"])])
        try d1.commit([.upsert("customers", id: "c-x", ["last_name": "Collides", "phone": "+49 1"])])
        let made = try d1.lineage(recordID: "c-1").map(\.change) + d1.lineage(recordID: "c-x").map(\.change)
        let collision = try #require(made.last)
        #expect(collision.originSeq == 2)
        // d1 → mid → de, each a relay; de's parent refuses the collision.
        #expect(try await mid.applyIncoming(made, from: "d1", source: .child, checkSkew: false).applied == 2)
        #expect(try await de.applyIncoming(made, from: "mid", source: .child, checkSkew: false).applied == 2)
        // d1 edits c-x again before it learns (mid, which drops c-x, refuses the edit itself).
        try d1.commit([.upsert("customers", id: "c-x", ["phone": "+49 2"])])
        #expect(try de.newestRefusalKept(for: "mid") == nil)
        #expect(try de.dropRefusedRelays(refusedOutside(collision)) == 1)

        // de keeps the notice for mid, the child it came from, and for no one else.
        let newest = try #require(try de.newestRefusalKept(for: "mid"))
        #expect(try de.newestRefusalKept(for: "d1") == nil && de.refusalsKept(for: "d1", after: 0, limit: 10).refusals.isEmpty)
        let atDE = try de.refusalsKept(for: "mid", after: 0, limit: 10)
        #expect(atDE.refusals.map(\.id) == [newest] && !atDE.more)
        #expect(atDE.refusals.first?.refusal.origin == "d1" && atDE.refusals.first?.refusal.originSeq == 2
                && atDE.refusals.first?.refusal.recordID == "c-x" && atDE.refusals.first?.refusal.code == .forbidden)
        #expect(try de.refusalsKept(for: "mid", after: newest, limit: 10).refusals.isEmpty)

        // mid only relayed it: dropped there, and passed on to d1.
        let atMid = try mid.takeUpstreamRefusals(atDE.refusals, from: "de")
        #expect(atMid.passedOn.map(\.originSeq) == [2] && atMid.setAside.isEmpty)
        #expect(try mid.record(table: "customers", id: "c-x") == nil && mid.record(table: "customers", id: "c-1") != nil)
        #expect(try mid.upstreamRefusalsTaken(from: "de") == newest && mid.upstreamRefusalsTaken(from: "fr") == 0)
        let toD1 = try mid.refusalsKept(for: "d1", after: 0, limit: 10).refusals
        #expect(toD1.map(\.refusal.originSeq) == [2])

        // d1 made it: withdrawn, set aside with the reason, its number never given again.
        let atD1 = try d1.takeUpstreamRefusals(toD1, from: "mid")
        #expect(atD1.setAside.map(\.originSeq) == [2, 3] && atD1.passedOn.isEmpty, "the later edit of a record d1 alone made goes with it")
        #expect(try d1.record(table: "customers", id: "c-x") == nil, "the write that can never land is not d1's copy of the record any more")
        #expect(try d1.record(table: "customers", id: "c-1")?.state.liveValues["last_name"] == "Mine")
        #expect(try d1.ownChangesSetAside() == 2 && mid.ownChangesSetAside() == 0)
        #expect(try d1.pendingRetries() == 0)
        let aside = try d1.quarantined()
        #expect(aside.count == 2 && aside.allSatisfy { $0.code == "forbidden" && $0.receivedFrom == "mid" }, "\(aside)")
        #expect(aside.first?.reason.contains("refused above 'mid'") == true && aside.first?.change.contains("+49 1") == true)
        #expect(aside.last?.reason.contains("made after d1#2") == true && aside.last?.change.contains("+49 2") == true, "\(aside)")
        let next = try d1.commit([.upsert("customers", id: "c-2", ["last_name": "After"])])
        #expect(next.first?.originSeq == 4, "a number the parent holds as dropped is never given to a new change")

        #expect(try d1.takeUpstreamRefusals(toD1, from: "mid") == UpstreamRefusalsTaken(), "taken twice, a notice changes nothing")
        #expect(try d1.quarantined().count == 2)
        // A notice naming a change d1 never made changes nothing either.
        var stranger = toD1[0]
        stranger.refusal.originSeq = 99
        #expect(try d1.takeUpstreamRefusals([stranger], from: "mid") == UpstreamRefusalsTaken())
    }

    @Test("""
    an `erased` notice erases only a change this node sent up (its own taken by the parent, or one it relayed from a \
    child), in the take's transaction and under a local id (never acknowledged as the request); one naming a change \
    that came from above, or one not sent yet, erases nothing (a hostile parent had the node erase whatever it named)
    """)
    func erasedNotices() async throws {
        let dir = try TempDir()
        let d1 = try makeStore(dir, "d1", parent: "mid")
        let fromAbove = Change(origin: "hq", originSeq: 1, hlc: HLCTimestamp(wallMillis: WallClock.nowMillis() - 1_000, counter: 0), table: "customers",
                               recordID: "c-hq", op: .upsert, fields: ["last_name": "From HQ", "owning_dealer": "d1"])
        #expect(try await d1.applyIncoming([fromAbove], from: "mid", source: .parent, checkSkew: false).applied == 1)
        try d1.commit([.upsert("interactions", id: "i-sent", ["customer_id": "c-gone", "summary": "sent"])])
        let sent = try #require(try d1.lineage(recordID: "i-sent").first)
        try d1.setCursor(NodeStore.parentPushCursor, sent.seq)
        try d1.commit([.upsert("interactions", id: "i-unsent", ["customer_id": "c-gone", "summary": "not yet"])])
        let unsent = try #require(try d1.lineage(recordID: "i-unsent").first).change
        func erased(_ id: Int64, _ change: Change) -> UpstreamRefusal {
            UpstreamRefusal(id: id, refusal: RejectedChange(change: change, rejection: ErasureRefusal.rejection(table: change.table, id: change.recordID, erasureID: "era-abc")))
        }
        let taken = try d1.takeUpstreamRefusals([erased(1, fromAbove), erased(2, unsent), erased(3, sent.change)], from: "mid")
        #expect(taken.ignored.map(\.recordID) == ["c-hq", "i-unsent"] && taken.toErase.map(\.change) == [sent.change] && taken.erasedRecords == 1, "\(taken)")
        #expect(try d1.record(table: "customers", id: "c-hq") != nil && d1.record(table: "interactions", id: "i-unsent") != nil)
        #expect(try d1.record(table: "interactions", id: "i-sent") == nil)
        #expect(try d1.erasures().map(\.erasureID) == ["era-abc/interactions/i-sent"], "a local id: not one of the request's replicas")
        #expect(try d1.upstreamRefusalsTaken(from: "mid") == 3)
        // Taken again (numbers reset): nothing more, nothing ignored.
        let again = try d1.takeUpstreamRefusals([erased(4, sent.change)], from: "mid")
        #expect(again.ignored.isEmpty && again.toErase.isEmpty, "\(again)")
    }

    @Test("""
    a notice withdraws nothing that is not what a parent passes down (another refusal, another record), nor an \
    erased record's entry (the erasure's proof stays whole); a relaying node drops the change even behind a retry of \
    its record (the parent dropped it already); a country keeps the newest notices per child only
    """)
    func noticesJudged() async throws {
        let dir = try TempDir()
        let mid = try makeStore(dir, "mid", parent: "de")
        let d1 = try makeStore(dir, "d1", parent: "mid")
        try d1.commit([.upsert("customers", id: "c-1", ["last_name": "One"])])
        try d1.commit([.upsert("customers", id: "c-2", ["last_name": "Two"])])
        let one = try #require(try d1.lineage(recordID: "c-1").first).change
        let two = try #require(try d1.lineage(recordID: "c-2").first).change
        func notice(_ id: Int64, _ change: Change, code: ChangeRejection.Code = .forbidden, recordID: String? = nil) -> UpstreamRefusal {
            var refusal = RejectedChange(change: change, rejection: ChangeRejection(code, "outside", outsideScopeOf: code == .forbidden ? change.origin : nil))
            if let recordID { refusal.recordID = recordID }
            return UpstreamRefusal(id: id, refusal: refusal)
        }
        let judged = try d1.takeUpstreamRefusals([notice(1, one, code: .tooLarge), notice(2, one, recordID: "c-2")], from: "mid")
        #expect(judged.ignored.count == 2 && judged.setAside.isEmpty, "\(judged)")
        #expect(try d1.record(table: "customers", id: "c-1") != nil)

        // A record d1 had from above: only the refused edit goes, not d1's later one.
        let fromAbove = Change(origin: "hq", originSeq: 1, hlc: HLCTimestamp(wallMillis: one.hlc.wallMillis - 10, counter: 0), table: "customers",
                               recordID: "c-p", op: .upsert, fields: ["last_name": "From HQ", "owning_dealer": "d1"])
        #expect(try await d1.applyIncoming([fromAbove], from: "mid", source: .parent, checkSkew: false).applied == 1)
        try d1.commit([.upsert("customers", id: "c-p", ["phone": "1"])])
        try d1.commit([.upsert("customers", id: "c-p", ["first_name": "Later"])])
        let edits = try d1.lineage(recordID: "c-p").map(\.change).filter { $0.origin == "d1" }
        let refusedEdit = try #require(edits.first)
        let partly = try d1.takeUpstreamRefusals([notice(5, refusedEdit)], from: "mid")
        #expect(partly.setAside.map(\.originSeq) == [refusedEdit.originSeq], "\(partly)")
        #expect(try d1.record(table: "customers", id: "c-p")?.state.liveValues == ["last_name": "From HQ", "owning_dealer": "d1", "first_name": "Later"])
        try await d1.writer.write { db in try db.execute(sql: "DELETE FROM ts_quarantine") }

        // A record d1 alone made: a later change the parent took (acknowledged) stays, one not
        // sent yet goes with the refused one.
        try d1.commit([.upsert("customers", id: "c-a", ["last_name": "Alone"])])
        try d1.commit([.upsert("customers", id: "c-a", ["phone": "taken"])])
        let alone = try d1.lineage(recordID: "c-a")
        try d1.setCursor(NodeStore.parentPushCursor, try #require(alone.last).seq)
        try d1.commit([.upsert("customers", id: "c-a", ["email": "refused@example.com"])])
        let retried = try #require(try d1.lineage(recordID: "c-a").last)
        try d1.setCursor(NodeStore.parentPushCursor, retried.seq)
        try d1.scheduleRetries([RejectedChange(change: retried.change, rejection: ChangeRejection(.forbidden, "outside"))])
        try d1.commit([.upsert("customers", id: "c-a", ["first_name": "Unsent"])])
        let created = try #require(alone.first).change
        let withLater = try d1.takeUpstreamRefusals([notice(6, created)], from: "mid")
        #expect(withLater.setAside.map(\.originSeq) == [created.originSeq, created.originSeq + 2, created.originSeq + 3],
                "the one waiting for a retry and the unsent one go; the one the parent took stays: \(withLater)")
        #expect(try d1.record(table: "customers", id: "c-a")?.state.liveValues == ["phone": "taken"])
        try await d1.writer.write { db in try db.execute(sql: "DELETE FROM ts_quarantine") }

        let erasure = try d1.erase(.customers, id: "c-2")
        #expect(try d1.verifyErasure(erasure.erasureID))
        let afterErasure = try d1.takeUpstreamRefusals([notice(3, two)], from: "mid")
        #expect(afterErasure == UpstreamRefusalsTaken(), "\(afterErasure)")
        #expect(try d1.verifyErasure(erasure.erasureID), "an erased record's entry stays, and nothing of it enters the quarantine")
        #expect(try d1.quarantined().isEmpty)

        // mid relayed two changes of c-r and retries the first: the notice drops the second all the same.
        func relayed(_ seq: Int64, _ fields: [String: FieldValue]) -> Change {
            Change(origin: "d1", originSeq: seq, hlc: HLCTimestamp(wallMillis: one.hlc.wallMillis + UInt64(seq), counter: 0), table: "customers",
                   recordID: "c-r", op: .upsert, fields: fields)
        }
        let (first, second) = (relayed(10, ["last_name": "First", "owning_dealer": "d1"]), relayed(11, ["phone": "2"]))
        #expect(try await mid.applyIncoming([first, second], from: "d1", source: .child, checkSkew: false).applied == 2)
        try mid.scheduleRetries([RejectedChange(change: first, rejection: ChangeRejection(.unknownField, "older schema"))])
        #expect(try mid.dropRefusedRelays(refusedOutside(second)) == 0, "refused in a push, it waits behind the retry")
        let passed = try mid.takeUpstreamRefusals([notice(4, second)], from: "de")
        #expect(passed.passedOn.map(\.originSeq) == [11], "\(passed)")
        #expect(try mid.record(table: "customers", id: "c-r")?.state.liveValues["phone"] == nil)
        let earlier = first

        // The newest notices per child only.
        let cap = NodeStore.maxUpstreamRefusalsPerChild
        try await mid.writer.write { db in
            for seq in 1...Int64(cap + 5) {
                let change = Change(origin: "d1", originSeq: 100 + seq, hlc: HLCTimestamp(wallMillis: 1_000, counter: 0), table: "customers",
                                    recordID: "c-\(seq)", op: .upsert, fields: [:])
                try NodeStore.keepUpstreamRefusal(db, via: "d1", refusal: RejectedChange(change: change, rejection: ChangeRejection(.forbidden, "x")), nowMillis: 0)
            }
            try NodeStore.keepUpstreamRefusal(db, via: "d2", refusal: RejectedChange(change: earlier, rejection: ChangeRejection(.forbidden, "x")), nowMillis: 0)
        }
        let kept = try await mid.writer.read { db in
            try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM ts_upstream_refusals WHERE via = 'd1'") ?? 0
        }
        #expect(kept == cap)
        let oldest = try mid.refusalsKept(for: "d1", after: 0, limit: 1).refusals.first?.refusal.originSeq
        #expect(oldest == 106, "the oldest notices went: \(String(describing: oldest))")
        #expect(try mid.refusalsKept(for: "d2", after: 0, limit: 10).refusals.map(\.id) == [1],
                "another child's notices stay, numbered for it alone")
    }

    @Test("""
    a relayed change the parent refused as outside its maker's scope is dropped: its record gets back what the other \
    logged changes wrote (a refused delete undone), a record left with nothing goes with its log entries, the change \
    still counts as held and the child's copy of it is a duplicate; the node's own changes are never dropped
    """)
    func dropped() async throws {
        let dir = try TempDir()
        let de = try makeStore(dir, "de")
        let now = WallClock.nowMillis()
        func change(_ seq: Int64, _ id: String, _ fields: [String: FieldValue], op: Change.Operation = .upsert) -> Change {
            Change(origin: "d1", originSeq: seq, hlc: HLCTimestamp(wallMillis: now + UInt64(seq), counter: 0), table: "customers",
                   recordID: id, op: op, fields: fields)
        }
        let first = change(1, "c-1", ["last_name": "Mine", "phone": "1", "owning_dealer": "d1"])
        let edit = change(2, "c-1", ["phone": "2", "owning_dealer": "d2"])
        let collision = change(3, "c-x", ["last_name": "Collides", "owning_dealer": "d1"])
        let delete = change(4, "c-1", [:], op: .delete)
        #expect(try await de.applyIncoming([first, edit, collision], from: "d1", source: .child, checkSkew: false).applied == 3)
        try await de.writer.write { db in
            try db.execute(sql: "INSERT INTO ts_push_retries (origin, origin_seq, code, reason, attempts, next_at) VALUES ('d1', 3, 'forbidden', 'x', 1, 0)")
        }

        #expect(try de.dropRefusedRelays(refusedOutside(edit, collision)) == 2)
        let record = try #require(try de.record(table: "customers", id: "c-1"))
        #expect(record.state.liveValues == ["last_name": "Mine", "phone": "1", "owning_dealer": "d1"], "the edit's fields come back from the first change")
        #expect(record.route == ["d1"], "routed as the first change made it")
        #expect(try de.record(table: "customers", id: "c-x") == nil, "a record left with nothing goes")
        #expect(try de.lineage(recordID: "c-x").isEmpty && de.lineage(recordID: "c-1").map(\.change.originSeq) == [1])
        #expect(try de.pendingRetries() == 0, "its retry goes with it")

        _ = try await de.applyIncoming([delete], from: "d1", source: .child, checkSkew: false)
        #expect(try de.record(table: "customers", id: "c-1")?.state.isLive == false)
        #expect(try de.dropRefusedRelays(refusedOutside(delete)) == 1)
        #expect(try de.record(table: "customers", id: "c-1")?.state.liveValues == ["last_name": "Mine", "phone": "1", "owning_dealer": "d1"],
                "a refused delete undone: the fields it hid come back from the changes that wrote them")

        // Dropped, the changes still count as held (d1 would take de for one restored from
        // a backup), and d1's copy of one is a duplicate.
        #expect(try await de.writer.read { try NodeStore.highestSeqs($0, of: ["d1"]) } == ["d1": 4])
        let again = try await de.applyIncoming([edit], from: "d1", source: .child, checkSkew: false)
        #expect(again.duplicates == 1 && again.applied == 0, "\(again)")
        #expect(try de.record(table: "customers", id: "c-1")?.state.liveValues["phone"] == "1")

        try de.commit([.upsert("customers", id: "c-own", ["last_name": "Country's"])])
        let own = try #require(try de.lineage(recordID: "c-own").first).change
        #expect(try de.dropRefusedRelays(refusedOutside(own)) == 0)
        #expect(try de.record(table: "customers", id: "c-own") != nil, "its own change is never dropped")
    }

    @Test("a retry whose change left the log is neither due nor counted (an agent woken for it found nothing to send, and woke again at once)")
    func retryWithoutItsEntry() async throws {
        let dir = try TempDir()
        let d1 = try makeStore(dir, "d1")
        try d1.commit([.upsert("customers", id: "c-1", ["last_name": "Kept"])])
        let logged = try #require(try d1.lineage(recordID: "c-1").first).change
        try d1.scheduleRetries([RejectedChange(change: logged, rejection: ChangeRejection(.forbidden, "outside"))], nowMillis: 0)
        #expect(try d1.pendingRetries() == 1 && d1.nextRetryMillis() != nil)
        try await d1.writer.write { db in
            try db.execute(sql: "INSERT INTO ts_push_retries (origin, origin_seq, code, reason, attempts, next_at) VALUES ('d9', 7, 'forbidden', 'x', 1, 0)")
            try db.execute(sql: "DELETE FROM ts_changes")
        }
        #expect(try d1.pendingRetries() == 0 && d1.retriesByCode().isEmpty)
        #expect(try d1.nextRetryMillis() == nil)
        #expect(try d1.dueRetries(limit: 10).isEmpty)
        // Refused again once its entry left (withdrawn while its push was on the wire): no retry is kept for it.
        try d1.scheduleRetries([RejectedChange(change: logged, rejection: ChangeRejection(.forbidden, "outside"))], nowMillis: 0)
        let attempts = try await d1.writer.read { db in
            try Int.fetchOne(db, sql: "SELECT attempts FROM ts_push_retries WHERE origin = 'd1'")
        }
        #expect(attempts == 1, "the row is not scheduled again")
        let fresh = Change(origin: "d1", originSeq: 50, hlc: HLCTimestamp(wallMillis: 1_000, counter: 0), table: "customers", recordID: "c-9",
                           op: .upsert, fields: ["last_name": "Never logged"])
        try d1.scheduleRetries([RejectedChange(change: fresh, rejection: ChangeRejection(.forbidden, "outside"))], nowMillis: 0)
        #expect(try await d1.writer.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM ts_push_retries WHERE origin_seq = 50") } == 0)
    }

    @Test("""
    a change is kept, not dropped, while an earlier change of its record waits to be sent again (the parent judged \
    it without that one)
    """)
    func keptBehindAnEarlierRetry() async throws {
        let dir = try TempDir()
        let de = try makeStore(dir, "de")
        let now = WallClock.nowMillis()
        let create = Change(origin: "d1", originSeq: 1, hlc: HLCTimestamp(wallMillis: now, counter: 0), table: "customers", recordID: "c-1",
                            op: .upsert, fields: ["last_name": "New", "owning_dealer": "d1"])
        let edit = Change(origin: "d1", originSeq: 2, hlc: HLCTimestamp(wallMillis: now + 1, counter: 0), table: "customers", recordID: "c-1",
                          op: .upsert, fields: ["phone": "1"])
        _ = try await de.applyIncoming([create, edit], from: "d1", source: .child, checkSkew: false)
        try de.scheduleRetries([RejectedChange(change: create, rejection: ChangeRejection(.unknownField, "the parent's schema is older")),
                                RejectedChange(change: edit, rejection: ChangeRejection(.forbidden, "outside", outsideScopeOf: "d1"))])
        #expect(try de.dropRefusedRelays(refusedOutside(edit)) == 0)
        #expect(try de.record(table: "customers", id: "c-1")?.state.liveValues["phone"] == "1")
        #expect(try de.pendingRetries() == 2, "both are sent again")
    }

    @Test("""
    the scope rule names the node a record lies outside only for a record the receiver holds: one new there is judged \
    by the change's own fields, and an earlier change creating it may be on its way
    """)
    func outsideScopeNamedForHeldRecords() {
        let tree = NodeTree(parents: ["hq": nil, "de": "hq", "fr": "hq", "d1": "de", "f1": "fr"])
        let change = Change(origin: "d1", originSeq: 1, hlc: HLCTimestamp(wallMillis: 1_000, counter: 0), table: "customers", recordID: "c-x",
                            op: .upsert, fields: ["phone": "1"])
        let origins = PushScope.originScopes(of: [change], pusher: "de", tree: tree)
        let scope = Scope(tree: tree, node: "de")
        let held = PushScope.relayedRefusal(for: change, origins: origins, pusher: "de", scope: scope, routeBefore: ["f1"], routeAfter: ["f1"])
        #expect(held?.code == .forbidden && held?.outsideScopeOf == "d1", "\(String(describing: held))")
        let new = PushScope.relayedRefusal(for: change, origins: origins, pusher: "de", scope: scope, routeBefore: nil, routeAfter: [])
        #expect(new?.code == .forbidden && new?.outsideScopeOf == nil, "\(String(describing: new))")
        // Judged by the country's scope, a record of its other dealer would pass; by d1's it does not.
        let sibling = PushScope.relayedRefusal(for: change, origins: ["d1": Scope(tree: NodeTree(parents: ["hq": nil, "de": "hq", "d1": "de", "d2": "de"]), node: "d1")],
                                               pusher: "de", scope: Scope(nodes: ["de", "d1", "d2"]), routeBefore: ["d2"], routeAfter: ["d2"])
        #expect(sibling?.outsideScopeOf == "d1")
        #expect(PushScope.relayedRefusal(for: change, origins: origins, pusher: "de", scope: scope, routeBefore: ["d1"], routeAfter: ["d1"]) == nil)
        #expect(PushScope.relayedRefusal(for: change, origins: [:], pusher: "de", scope: scope, routeBefore: ["d1"], routeAfter: ["d1"])?.code == .forbidden,
                "an origin whose scope was not given is never judged by the wider one")
    }
}

import Foundation
import GRDB
import Testing
import TiersyncCore
@testable import TiersyncStore
import TiersyncTestSupport

/// Bounded storage on one store (docs/PRIVACY.md, "Bounded storage"): what compaction
/// purges and when, what it keeps, and a re-bootstrap's bookkeeping.
@Suite("Retention in a store")
struct RetentionStoreTests {
    static let day: UInt64 = 86_400_000
    static let tree = NodeTree(parents: ["hq": nil, "de": "hq", "d1": "de"])

    func hq(_ dir: TempDir) throws -> NodeStore { try makeStore(dir, "hq", parent: nil) }

    func change(_ origin: NodeID, _ seq: Int64, at millis: UInt64, _ id: String, _ fields: [String: FieldValue],
                op: Change.Operation = .upsert) -> Change {
        Change(origin: origin, originSeq: seq, hlc: HLCTimestamp(wallMillis: millis, counter: 0), table: "customers",
               recordID: id, op: op, fields: fields)
    }

    @Test("""
    a push resumed below records folded from the parent's changes alone scans past them to what goes upward (helper 83: \
    a country's batch came back empty below 20,000 back-filled records, and its push stalled for good)
    """)
    func pushScansPastFoldedParentRecords() async throws {
        let dir = try TempDir()
        let d1 = try makeStore(dir, "d1")
        let now = WallClock.nowMillis()
        let fromParent = (1...12).map { n in change("hq", Int64(n), at: now + UInt64(n), "c-p\(n)", ["last_name": "From HQ", "owning_dealer": "d1"]) }
        _ = try await d1.applyIncoming(fromParent, from: "hq", source: .parent, checkSkew: false)
        try d1.commit([.upsert("customers", id: "c-own", ["last_name": "Mine"])])
        try d1.commit([.upsert("customers", id: "c-head", ["last_name": "Head"])])
        let report = try await d1.compact(policy: .default, tree: nil)
        #expect(report.foldedEntries >= 12, "the parent's changes fold at once: \(report)")
        // The push cursor below all of them (a moved dealer's history re-sent, say).
        for limit in [1, 3, 500] {
            let batch = try d1.upstreamBatch(after: 0, limit: limit).map(\.change.recordID)
            #expect(batch.first == "c-own", "limit \(limit): \(batch)")
        }
    }

    @Test("""
    a superseded entry goes once the parent acknowledged it, one holding a current value is folded into its record, \
    the head stays; a redelivered purged change is a duplicate and the highest sequence held does not go back
    """)
    func supersededEntries() async throws {
        let dir = try TempDir()
        let d1 = try makeStore(dir, "d1")
        try d1.commit([.upsert("customers", id: "c-1", ["last_name": "A", "first_name": "X"])])
        try d1.commit([.upsert("customers", id: "c-1", ["last_name": "B"])])
        try d1.commit([.upsert("customers", id: "c-1", ["last_name": "C"])])
        try d1.commit([.upsert("customers", id: "c-2", ["last_name": "Z"])])
        // What HQ receives of c-1 (d1's second change is lost on the way).
        let sent = try d1.upstreamBatch(after: 0, limit: 10).map(\.change).filter { $0.recordID == "c-1" && $0.originSeq != 2 }
        var report = try await d1.compact(policy: .default, tree: nil)
        #expect(report.purgedEntries == 0, "nothing is acknowledged upward yet: \(report)")
        try d1.setCursor(NodeStore.parentPushCursor, 4)
        report = try await d1.compact(policy: .default, tree: nil)
        #expect(try report.supersededEntries == 1 && report.foldedEntries == 2 && d1.counts().changes == 1,
                "'B' is superseded, the two entries holding c-1's values are folded, the head stays: \(report)")
        #expect(try d1.record(table: "customers", id: "c-1")?.state.liveValues == ["last_name": "C", "first_name": "X", "owning_dealer": "d1"])
        // Own sequence numbers never go back after a purge.
        #expect(try d1.commit([.upsert("customers", id: "c-3", ["last_name": "N"])]).first?.originSeq == 5)

        let hq = try hq(dir)
        _ = try await hq.applyIncoming(sent, from: "d1", source: .child, checkSkew: false)
        try hq.commit([.upsert("customers", id: "c-1", ["last_name": "HQ"])])
        try hq.commit([.upsert("customers", id: "c-9", ["last_name": "Head"])])
        let held = try await hq.highestSeq(of: "d1")
        report = try await hq.compact(policy: .default, tree: nil)
        #expect(report.supersededEntries == 1 && report.foldedEntries == 2, "d1's 'C' lost to HQ's edit; d1's first entry holds first_name: \(report)")
        #expect(try await hq.highestSeq(of: "d1") == held)
        let again = try await hq.applyIncoming(sent, from: "d1", source: .child, checkSkew: false)
        #expect(again.applied == 0 && again.duplicates == sent.count, "\(again)")
        #expect(try hq.counts().changes == 1 && hq.foldedCounts() == (1, 2), "the head; d1's first entry and HQ's edit are folded into c-1")
        // Whatever the store would say of it now (here: out of scope), a redelivery from a
        // child at or below the purged sequence is a duplicate (found by the fuzzer).
        let gated = try await hq.applyIncoming(sent, from: "d1", source: .child, checkSkew: false,
                                               gate: { _ in ChangeRejection(.forbidden, "test gate") })
        #expect(gated.duplicates == sent.count && gated.rejected.isEmpty, "\(gated)")
        // A sequence outside the valid range is still refused for what it is, never a duplicate.
        let absurd = change("d1", -1, at: WallClock.nowMillis(), "c-1", ["last_name": "Negative"])
        let refused = try await hq.applyIncoming([absurd], from: "d1", source: .child, checkSkew: false)
        #expect(refused.duplicates == 0 && refused.rejected.count == 1, "\(refused)")
    }

    @Test("""
    only the sequences actually purged are duplicates: a child's change numbered below them that never arrived \
    (held back in a country's quarantine and released later, or sent out of order) is applied, not dropped
    """)
    func gapBelowPurgedIsNew() async throws {
        let dir = try TempDir()
        let hq = try hq(dir)
        let now = WallClock.nowMillis()
        // d1's changes 1, 2, 4 and 5 arrive (3 is held back on the way); 1 and 2 set the
        // same field of c-1, 4 and 5 the same field of c-2.
        let first = [change("d1", 1, at: now, "c-1", ["last_name": "A"]), change("d1", 2, at: now + 1, "c-1", ["last_name": "B"]),
                     change("d1", 4, at: now + 3, "c-2", ["last_name": "Four"]), change("d1", 5, at: now + 4, "c-2", ["last_name": "Five"])]
        #expect(try await hq.applyIncoming(first, from: "d1", source: .child, checkSkew: false).applied == 4)
        try hq.commit([.upsert("customers", id: "c-9", ["last_name": "Head"])])
        let report = try await hq.compact(policy: .default, tree: nil)
        #expect(report.supersededEntries == 2, "d1#1 and d1#4 are superseded: \(report)")
        // Change 3 arrives now: below the highest purged sequence (4), but never applied here.
        let late = change("d1", 3, at: now + 2, "c-3", ["last_name": "Three"])
        let applied = try await hq.applyIncoming([late], from: "d1", source: .child, checkSkew: false)
        #expect(applied.applied == 1 && applied.duplicates == 0, "\(applied)")
        #expect(try hq.record(table: "customers", id: "c-3")?.state.liveValues["last_name"] == "Three")
        // A far-out sequence purged first (a node numbering out of order) makes no lower one a duplicate.
        let far = [change("d1", 1_000_000, at: now + 10, "c-far", ["last_name": "X"]), change("d1", 1_000_001, at: now + 11, "c-far", ["last_name": "Y"])]
        _ = try await hq.applyIncoming(far, from: "d1", source: .child, checkSkew: false)
        try hq.commit([.upsert("customers", id: "c-9", ["last_name": "Head again"])])
        #expect(try await hq.compact(policy: .default, tree: nil).supersededEntries == 1)
        let next = change("d1", 6, at: now + 12, "c-6", ["last_name": "Six"])
        #expect(try await hq.applyIncoming([next], from: "d1", source: .child, checkSkew: false).applied == 1)
        // The purged ones stay duplicates when redelivered, and the resume point does not go back.
        let again = try await hq.applyIncoming([first[0], first[2], far[0]], from: "d1", source: .child, checkSkew: false)
        #expect(again.duplicates == 3 && again.applied == 0, "\(again)")
        #expect(try await hq.highestSeq(of: "d1") == 1_000_001)
    }

    @Test("purged sequences are kept as ranges for children's origins only: a node's parent sends it sparse sequences, whose purge leaves no rows; a redelivery of one that changes nothing is still a duplicate")
    func parentPurgesLeaveNoRanges() async throws {
        let dir = try TempDir()
        let d1 = try makeStore(dir, "d1")
        let now = WallClock.nowMillis()
        // HQ's changes routed to d1 (the ones between went to other dealers).
        let fromParent = [change("hq", 10, at: now, "c-1", ["last_name": "A", "owning_dealer": "d1"]),
                          change("hq", 20, at: now + 1, "c-1", ["last_name": "B", "owning_dealer": "d1"]),
                          change("hq", 30, at: now + 2, "c-2", ["last_name": "Z", "owning_dealer": "d1"])]
        #expect(try await d1.applyIncoming(fromParent, from: "hq", source: .parent, checkSkew: false).applied == 3)
        let report = try await d1.compact(policy: .default, tree: nil)
        #expect(report.supersededEntries == 1, "\(report)")
        let rows = try await d1.writer.read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM ts_purged_ranges") }
        #expect(rows == 0)
        let again = try await d1.applyIncoming([fromParent[0]], from: "hq", source: .parent, checkSkew: false)
        #expect(again.duplicates == 1 && again.applied == 0, "\(again)")
        // From a child, the ranges join as the origin's entries go: one row for a run of purges.
        let hq = try hq(dir)
        let run = (1...6).map { change("d1", Int64($0), at: now + UInt64($0), "c-run", ["last_name": .string("V\($0)")]) }
        _ = try await hq.applyIncoming(run, from: "d1", source: .child, checkSkew: false)
        try hq.commit([.upsert("customers", id: "c-9", ["last_name": "Head"])])
        let runReport = try await hq.compact(policy: .default, tree: nil)
        #expect(runReport.supersededEntries == 5 && runReport.foldedEntries == 1, "\(runReport)")
        let ranges = try await hq.writer.read { try Row.fetchAll($0, sql: "SELECT origin, lo, hi FROM ts_purged_ranges").map { "\($0[0] as String) \($0[1] as Int64)-\($0[2] as Int64)" } }
        #expect(ranges == ["d1 1-6"])
    }

    /// What a fresh node fed `store`'s whole feed from 0 ends with, as sorted lines.
    func bootstrapped(from store: NodeStore, _ dir: TempDir, _ name: String) async throws -> [String] {
        let fresh = try makeStore(dir, NodeID(unchecked: name), parent: "hq")
        var cursor: Int64 = 0
        while true {
            let page = try await store.feed(after: cursor, scope: .everything, excluding: nil, limit: 100)
            _ = try await fresh.applyIncoming(page.changes, from: "hq", source: .parent, checkSkew: false)
            cursor = page.nextCursor
            if !page.more { break }
        }
        return try ["customers", "erasures"].flatMap { table in
            try fresh.liveRecords(table: table, where: []).map { "\(table)/\($0.id) \(CanonicalJSON.object($0.values))" }
        }.sorted()
    }

    @Test("""
    an erasure request folded by compaction keeps its subject on a node that bootstraps afterwards: the change naming \
    the subject is served first, though a change of the request stamped earlier arrived after it (found by tiersync-fuzz)
    """)
    func foldedErasureRequestKeepsItsSubject() async throws {
        let dir = try TempDir()
        let hq = try hq(dir)
        let now = WallClock.nowMillis()
        // d1 names the subject (stamped later), then sends a change of the same request
        // stamped earlier, which arrives second and only adds `requested_at`.
        let naming = Change(origin: "d1", originSeq: 1, hlc: HLCTimestamp(wallMillis: now, counter: 0), table: "erasures", recordID: "era-1",
                            op: .upsert, fields: ["subject_table": "customers", "subject_id": "c-7"])
        let earlier = Change(origin: "d1", originSeq: 2, hlc: HLCTimestamp(wallMillis: now - 60_000, counter: 0), table: "erasures",
                             recordID: "era-1", op: .upsert, fields: ["requested_at": "2026-12-05T10:00:00Z"])
        // And a change of another record: the log's head stays, so it must not be the request's.
        let head = change("d1", 3, at: now, "c-9", ["last_name": "Head", "owning_dealer": "d1"])
        let report = try await hq.applyIncoming([naming, earlier, head], from: "d1", source: .child, checkSkew: false)
        #expect(report.applied == 3, "\(report)")
        let before = try await bootstrapped(from: hq, dir, "fresh-1")
        #expect(before.contains { $0.hasPrefix("erasures/era-1 ") && $0.contains("\"subject_id\":\"c-7\"") }, "\(before)")
        for child: NodeID in ["de", "d1"] { await hq.notePulled(by: child, through: Int64.max / 2) }
        let compacted = try await hq.compact(policy: .default, tree: Self.tree)
        #expect(compacted.foldedEntries == 2, "both entries hold current values: \(compacted)")
        let after = try await bootstrapped(from: hq, dir, "fresh-2")
        #expect(after == before, "a node bootstrapping after compaction holds what one before it held")
    }

    @Test("""
    an erasure request naming its subject again with a newer stamp is refused, at the hub and at the node writing it: \
    restamped, the subject's two fields would fold into different changes and a node bootstrapping after compaction \
    would refuse the subject (the fuzzer's erasure-request-fold-order); an older-stamped one still applies its other fields
    """)
    func erasureSubjectNotRestamped() async throws {
        let dir = try TempDir()
        let hq = try hq(dir)
        let now = WallClock.nowMillis()
        let naming = Change(origin: "d1", originSeq: 1, hlc: HLCTimestamp(wallMillis: now - 60_000, counter: 0), table: "erasures",
                            recordID: "era-2", op: .upsert, fields: ["subject_table": "customers", "subject_id": "c-7", "requested_by": "d1"])
        // The same subject again, stamped later: before the fix it applied, restamping `subject_id` alone.
        let again = Change(origin: "d1", originSeq: 2, hlc: HLCTimestamp(wallMillis: now, counter: 0), table: "erasures",
                           recordID: "era-2", op: .upsert, fields: ["subject_id": "c-7", "requested_at": "2026-12-05T10:00:00Z"])
        // Stamped earlier than the request: its subject field loses to the stored one, its other field applies.
        let older = Change(origin: "d1", originSeq: 3, hlc: HLCTimestamp(wallMillis: now - 120_000, counter: 0), table: "erasures",
                           recordID: "era-2", op: .upsert, fields: ["subject_table": "customers", "requested_at": "2026-12-05T09:00:00Z"])
        let head = change("d1", 4, at: now, "c-9", ["last_name": "Head", "owning_dealer": "d1"])
        let report = try await hq.applyIncoming([naming, again, older, head], from: "d1", source: .child, checkSkew: false)
        #expect(report.applied == 3 && report.rejected.map(\.originSeq) == [2], "\(report)")
        #expect(report.rejected.first?.code == .invalidChange)

        // At the node writing it: the local write is refused the same way.
        let d1 = try makeStore(dir, "d1", parent: "de")
        try d1.commit([.upsert("erasures", id: "era-3", ["subject_table": "customers", "subject_id": "c-8", "requested_by": "d1"])])
        #expect(throws: StoreError.self) { try d1.commit([.upsert("erasures", id: "era-3", ["subject_id": "c-8"])]) }

        let before = try await bootstrapped(from: hq, dir, "fresh-1")
        #expect(before.contains { $0.hasPrefix("erasures/era-2 ") && $0.contains("\"subject_id\":\"c-7\"") }, "\(before)")
        for child: NodeID in ["de", "d1"] { await hq.notePulled(by: child, through: Int64.max / 2) }
        let compacted = try await hq.compact(policy: .default, tree: Self.tree)
        #expect(compacted.foldedEntries >= 1, "\(compacted)")
        let after = try await bootstrapped(from: hq, dir, "fresh-2")
        #expect(after == before, "a node bootstrapping after compaction holds what one before it held")
    }

    @Test("""
    an entry routed to a child waits until that child pulled past it, or until it has been away longer than the horizon; \
    a current value it never pulled then raises the floor, so it re-bootstraps
    """)
    func childrenHoldEntries() async throws {
        let dir = try TempDir()
        let hq = try hq(dir)
        try hq.commit([.upsert("customers", id: "c-1", ["last_name": "A", "owning_dealer": "d1"])])
        try hq.commit([.upsert("customers", id: "c-1", ["last_name": "B", "owning_dealer": "d1"])])
        try hq.commit([.upsert("customers", id: "c-2", ["last_name": "Head", "owning_dealer": "d1"])])
        var report = try await hq.compact(policy: .default, tree: Self.tree)
        #expect(report.purgedEntries == 0 && report.heldForChildren == 2, "de has not pulled: \(report)")
        // d1's copy comes through de: de's pull is what counts.
        await hq.notePulled(by: "d1", through: 3)
        report = try await hq.compact(policy: .default, tree: Self.tree)
        #expect(report.supersededEntries == 0, "\(report)")
        await hq.notePulled(by: "de", through: 1)
        report = try await hq.compact(policy: .default, tree: Self.tree)
        #expect(try report.supersededEntries == 1 && hq.acknowledgements()["de"] == 1, "\(report)")

        try hq.commit([.upsert("customers", id: "c-2", ["last_name": "Later", "owning_dealer": "d1"])])
        try hq.commit([.upsert("customers", id: "c-3", ["last_name": "Head", "owning_dealer": "d1"])])
        report = try await hq.compact(policy: .default, tree: Self.tree)
        #expect(report.supersededEntries == 0, "\(report)")
        report = try await hq.compact(policy: .default, tree: Self.tree, nowMillis: WallClock.nowMillis() + 31 * Self.day)
        #expect(report.supersededEntries == 1 && report.foldedEntries == 2, "de is away past the horizon: \(report)")
        #expect(report.floor == 4, "de never pulled c-1's 'B' (2) nor c-2's 'Later' (4): a cursor below 4 must re-bootstrap")
    }

    @Test("a child away costs a pass only the records it holds back: later passes look at those and at what was written since, not at every record written after the held entry")
    func awayChildCostsLittle() async throws {
        let dir = try TempDir()
        let hq = try hq(dir)
        // c-held is routed to d1 (fed through de), which does not pull.
        try hq.commit([.upsert("customers", id: "c-held", ["last_name": "A", "owning_dealer": "d1"])])
        try hq.commit([.upsert("customers", id: "c-held", ["last_name": "B", "owning_dealer": "d1"])])
        // 200 records routed to no child, written after it.
        // (One commit: 200 synchronous ones would hold a thread of the shared pool for seconds.)
        try hq.commit((0..<200).map { .upsert("customers", id: "c-\($0)", ["last_name": "N"]) })
        var report = try await hq.compact(policy: .default, tree: Self.tree)
        #expect(report.heldForChildren == 2 && report.examinedRecords == 201 && report.foldedEntries == 199, "\(report)")
        // Nothing written since: the held record and the head's, not the 200.
        report = try await hq.compact(policy: .default, tree: Self.tree)
        #expect(report.examinedRecords <= 2 && report.heldForChildren == 2, "\(report)")
        // de pulls past it: the held entry goes at the next pass.
        await hq.notePulled(by: "de", through: 2)
        report = try await hq.compact(policy: .default, tree: Self.tree)
        #expect(report.supersededEntries == 1 && report.foldedEntries == 1 && report.heldForChildren == 0, "\(report)")
        report = try await hq.compact(policy: .default, tree: Self.tree)
        #expect(report.examinedRecords <= 1, "nothing is pending any more: \(report)")
    }

    /// Pulls `scope` from `parent` into `child` from its cursor until caught up, as an agent
    /// does, through the page the hub serves (the wire's JSON) or the decoded one.
    func pull(_ child: NodeStore, node: NodeID, from parent: NodeStore, scope: Scope, encoded: Bool, limit: Int = 3) async throws -> Int {
        var pages = 0
        while true {
            let cursor = try child.cursor("pull.parent")
            await parent.notePulled(by: node, through: cursor)
            let page: PullResponse
            if encoded {
                let bytes = try await parent.encodedFeed(after: cursor, scope: scope, excluding: node, limit: limit).json
                page = try #require(WireDecoding.pullResponse(bytes))
            } else {
                page = try await parent.feed(after: cursor, scope: scope, excluding: node, limit: limit)
            }
            let report = try await child.applyIncoming(page.changes, from: "hq", source: .parent, checkSkew: false, cursor: ("pull.parent", page.nextCursor))
            #expect(report.rejected.isEmpty, "\(report.rejected)")
            pages += 1
            if !page.more { return pages }
        }
    }

    @Test("""
    folded entries reach every node that needs them: a country and a dealer bootstrapping after the fold receive \
    every field of their scope with the identity and version that wrote it, in pages interleaving folded records with \
    the log; a record entering a dealer's scope arrives whole; unfolding writes the entries back and changes no feed
    """)
    func foldedRecordsAreServed() async throws {
        let dir = try TempDir()
        let hq = try hq(dir)
        let tree = NodeTree(parents: ["hq": nil, "de": "hq", "d1": "de", "d2": "de"])
        try hq.commit([.upsert("customers", id: "c-1", ["last_name": "One", "first_name": "A", "owning_dealer": "d1"])])
        try hq.commit([.upsert("customers", id: "c-2", ["last_name": "Two", "owning_dealer": "d1"])])
        try hq.commit([.upsert("customers", id: "c-1", ["phone": "+49 1"])])
        try hq.commit([.upsert("customers", id: "c-3", ["last_name": "Three", "email": "t@example.com", "owning_dealer": "d2"])])
        try hq.commit((4..<12).map { .upsert("customers", id: "c-\($0)", ["last_name": .string("N\($0)"), "owning_dealer": .string($0 % 2 == 0 ? "d1" : "d2")]) })
        try hq.commit([.upsert("customers", id: "c-2", ["first_name": "B"])])
        try hq.commit([.upsert("customers", id: "c-head", ["last_name": "Head"])])
        // The country has pulled everything: every entry but the head can go.
        await hq.notePulled(by: "de", through: try hq.headSeq())
        let report = try await hq.compact(policy: .default, tree: tree)
        #expect(report.foldedEntries == 13 && report.supersededEntries == 0, "\(report)")
        #expect(try hq.counts().changes == 1 && hq.foldedCounts() == (11, 13))

        // A new country and a new dealer bootstrap from HQ: pages of 3 interleave folded
        // records (at their positions) with the log's head.
        let de = try makeStore(dir, "de")
        let deScope = Scope(tree: tree, node: "de")
        let pages = try await pull(de, node: "de", from: hq, scope: deScope, encoded: true)
        #expect(pages == 4, "12 positions (11 folded records and the head) in pages of 3: \(pages)")
        #expect(try de.digest(scope: deScope) == hq.digest(scope: deScope))
        #expect(try de.record(table: "customers", id: "c-1")?.state.liveValues == ["last_name": "One", "first_name": "A", "phone": "+49 1", "owning_dealer": "d1"])
        #expect(try de.record(table: "customers", id: "c-1")?.state.versions == hq.record(table: "customers", id: "c-1")?.state.versions)
        // Each change keeps its identity: HQ's own changes 1 and 3 wrote c-1.
        let origins = try await de.writer.read { try Int64.fetchAll($0, sql: "SELECT origin_seq FROM ts_changes WHERE record_id = 'c-1' ORDER BY origin_seq") }
        #expect(origins == [1, 3])
        let d1 = try makeStore(dir, "d1", parent: "de")
        _ = try await pull(d1, node: "d1", from: hq, scope: Scope(nodes: ["d1"]), encoded: false)
        #expect(try d1.digest(scope: Scope(nodes: ["d1"])) == hq.digest(scope: Scope(nodes: ["d1"])))
        #expect(try d1.record(table: "customers", id: "c-3") == nil, "d2's customer is not in d1's scope")

        // c-3 (folded, d2's) moves to d1: d1 receives all of it, not only the owner.
        try hq.commit([.upsert("customers", id: "c-3", ["owning_dealer": "d1"])])
        _ = try await pull(d1, node: "d1", from: hq, scope: Scope(nodes: ["d1"]), encoded: true)
        #expect(try d1.record(table: "customers", id: "c-3")?.state.liveValues == ["last_name": "Three", "email": "t@example.com", "owning_dealer": "d1"])
        #expect(try d1.digest(scope: Scope(nodes: ["d1"])) == hq.digest(scope: Scope(nodes: ["d1"])))

        // Unfolded, the log again holds the entries, and a bootstrap ends the same.
        let before = try hq.digest()
        #expect(try hq.unfoldState() == 13)
        #expect(try hq.counts().changes == 15 && hq.foldedCounts() == (0, 0) && hq.digest() == before)
        let fresh = try makeStore(dir, "de-again")
        _ = try await pull(fresh, node: "de", from: hq, scope: deScope, encoded: true, limit: 100)
        #expect(try fresh.digest(scope: deScope) == hq.digest(scope: deScope))
    }

    @Test("a tombstone goes with its record's log once the delete is older than the horizon, and its position becomes the floor")
    func tombstones() async throws {
        let dir = try TempDir()
        let hq = try hq(dir)
        try hq.commit([.upsert("customers", id: "c-1", ["last_name": "Gone"])])
        let deleted = try hq.commit([.delete("customers", id: "c-1")])
        try hq.commit([.upsert("customers", id: "c-2", ["last_name": "Head"])])
        var report = try await hq.compact(policy: .default, tree: Self.tree)
        #expect(try report.tombstones == 0 && hq.record(table: "customers", id: "c-1") != nil, "a fresh delete stays: \(report)")
        report = try await hq.compact(policy: .default, tree: Self.tree, nowMillis: WallClock.nowMillis() + 31 * Self.day)
        #expect(report.tombstones == 1 && report.tombstoneEntries >= 1, "\(report)")
        #expect(try hq.record(table: "customers", id: "c-1") == nil)
        #expect(try hq.counts().changes == 1)
        let floor = try await hq.retentionFloor()
        #expect(floor == 2 && report.floor == floor, "the delete's position (\(deleted)): \(report)")
        // A short horizon purges at once (the tests' and the benchmark's setting).
        try hq.commit([.upsert("customers", id: "c-3", ["last_name": "Gone too"])])
        try hq.commit([.delete("customers", id: "c-3")])
        try hq.commit([.upsert("customers", id: "c-4", ["last_name": "Head"])])
        report = try await hq.compact(policy: RetentionPolicy(horizon: .zero), tree: Self.tree, nowMillis: WallClock.nowMillis() + 1)
        let newFloor = try await hq.retentionFloor()
        #expect(report.tombstones == 1 && newFloor == 5, "\(report)")
    }

    @Test("a re-bootstrap drops the records the parent did not deliver again and keeps those with unsent changes")
    func rebootstrap() async throws {
        let dir = try TempDir()
        let d1 = try makeStore(dir, "d1")
        let now = WallClock.nowMillis()
        let fromHQ = [change("hq", 1, at: now, "c-1", ["last_name": "Kept"]), change("hq", 2, at: now, "c-2", ["last_name": "Deleted upstream"])]
        _ = try await d1.applyIncoming(fromHQ, from: "hq", source: .parent, checkSkew: false)
        let sent = try d1.commit([.upsert("customers", id: "c-4", ["last_name": "Sent, deleted upstream"])])
        try d1.setCursor(NodeStore.parentPushCursor, try d1.headSeq())
        try d1.commit([.upsert("customers", id: "c-3", ["last_name": "Unsent"])])
        try d1.setCursor("pull.parent", 40)
        try d1.setMeta("pull.bootstrapped", "1")

        try d1.beginRebootstrap(pullCursor: "pull.parent", bootstrappedKey: "pull.bootstrapped")
        #expect(try d1.cursor("pull.parent") == 0 && d1.meta("pull.bootstrapped") == nil && d1.isRebootstrapping())
        let again = try await d1.applyIncoming([fromHQ[0]], from: "hq", source: .parent, checkSkew: false)
        #expect(again.duplicates == 1)
        let finished = try d1.finishRebootstrap()
        #expect(finished.dropped == 2 && finished.keptUnsent == 1, "\(finished)")
        #expect(try d1.record(table: "customers", id: "c-1") != nil && d1.record(table: "customers", id: "c-3") != nil)
        #expect(try d1.record(table: "customers", id: "c-2") == nil && d1.record(table: "customers", id: "c-4") == nil)
        #expect(try !d1.isRebootstrapping())
        #expect(try d1.upstreamBatch(after: d1.cursor(NodeStore.parentPushCursor), limit: 10).map(\.change.recordID) == ["c-3"], "the unsent change still goes")
        #expect(try d1.commit([.upsert("customers", id: "c-5", ["last_name": "N"])]).first!.originSeq > sent[0].originSeq + 1)
    }
}

import Foundation
import GRDB
import Testing
import TiersyncCore
import TiersyncKPI
@testable import TiersyncStore
import TiersyncTestSupport

/// The store's KPI accumulators on real SQLite files: kept by every write in its
/// transaction, equal to a recount after creates, updates, deletes and received changes;
/// recounted when the formulas change; snapshots written only for what changed.
@Suite("KPI accumulators in the store")
struct KPIStoreTests {
    static func adoption(overlayTarget: Double? = nil, answeredWithin: String? = nil) throws -> KPIAdoption {
        var catalog = try KPICatalog(effectiveConfigJSON: try KPIFixture.effectiveConfigJSON())
        if let overlayTarget, let i = catalog.definitions.firstIndex(where: { $0.id == "service-level-phone" }) {
            catalog.definitions[i].target = KPITarget(.atLeast, overlayTarget)
        }
        if let answeredWithin, let i = catalog.definitions.firstIndex(where: { $0.id == "service-level-phone" }) {
            catalog.definitions[i].formula.answeredWithinSeconds = KPIFormat.durationSeconds(answeredWithin)
        }
        return KPIAdoption(release: 1, overlay: overlayTarget == nil ? nil : "de#1", catalog: catalog)
    }

    /// The store's accumulators equal a recount from its records, and the recount is not empty.
    static func expectConsistent(_ store: NodeStore, _ step: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let totals = try store.kpiTotals().filter { $0.numerator != 0 || $0.denominator != 0 }
        let recount = try store.recountKPIs()
        #expect(totals == recount, "\(step): accumulators differ from a recount", sourceLocation: sourceLocation)
        #expect(!recount.isEmpty, sourceLocation: sourceLocation)
    }

    static func month(_ store: NodeStore, _ kpi: String, _ node: String) throws -> (Int64, Int64) {
        let t = try store.kpiTotals(node: node).filter { $0.kpi == kpi }
        return (t.map(\.numerator).reduce(0, +), t.map(\.denominator).reduce(0, +))
    }

    @Test("An erased customer's dialogues are uncounted as deleted ones are: the accumulators still equal a recount (kept counted, `kpi --verify` failed for good)")
    func erasureUncounts() throws {
        let dir = try TempDir()
        let store = try makeStore(dir, "de-1", parent: "de")
        #expect(try store.adoptKPIs(try Self.adoption()))
        try store.commit([.upsert("customers", id: "c1", ["last_name": "One"])])
        for r in KPIFixture.records { try store.commit([.upsert(r.table, id: r.id, r.fields)]) }
        try Self.expectConsistent(store, "fixture written")
        let before = try store.kpiTotals()
        let erasure = try store.erase(.customers, id: "c1")
        #expect(erasure.records > 0)
        try Self.expectConsistent(store, "c1 erased")
        #expect(try store.kpiTotals() != before, "c1's dialogues counted before")
    }

    @Test("Every write keeps the accumulators: the fixture's hand-computed values, then updates, deletes and received changes, each equal to a recount")
    func incrementalWrites() async throws {
        let dir = try TempDir()
        let store = try makeStore(dir, "de-1", parent: "de")
        // Records written before any KPI was adopted are counted when the KPIs are adopted.
        try store.commit([.upsert("interactions", id: "p1", KPIFixture.records[0].fields)])
        #expect(try store.adoptKPIs(try Self.adoption()), "a first adoption recounts")
        #expect(try Self.month(store, "service-level-phone", "de-1") == (1, 1))
        for r in KPIFixture.records.dropFirst() { try store.commit([.upsert(r.table, id: r.id, r.fields)]) }
        try Self.expectConsistent(store, "fixture written")
        for (kpi, nodes) in KPIFixture.expectedNovember {
            for (node, want) in nodes { #expect(try Self.month(store, kpi, node) == want, "\(kpi) at \(node)") }
        }

        // p4 becomes customer c2's service call: p1 is now resolved at first contact, p2 is not
        // (p4 came 1 h 50 min after p2's resolution) — de-1's FCR stays 3/5 with other members.
        try store.commit([.upsert("interactions", id: "p4", ["customer_id": "c2", "topic": "service"])])
        #expect(try Self.month(store, "first-contact-resolution", "de-1") == (3, 5))
        try Self.expectConsistent(store, "p4 moved to c2/service")
        // p4 resolved within 20 s of its answer: handle time 20 s more, one more resolved dialogue.
        try store.commit([.upsert("interactions", id: "p4", ["resolved_at": "2026-11-02T12:00:40Z", "status": "resolved"])])
        #expect(try Self.month(store, "average-handle-time", "de-1") == (3_520_000, 6))
        #expect(try Self.month(store, "first-contact-resolution", "de-1") == (4, 6))
        try Self.expectConsistent(store, "p4 resolved")
        // e2 deleted: e1 is resolved at first contact after all; e-mail service level 1/1.
        try store.commit([.delete("interactions", id: "e2")])
        #expect(try Self.month(store, "service-level-email", "de-1") == (1, 1))
        #expect(try Self.month(store, "first-contact-resolution", "de-1") == (4, 5))
        try Self.expectConsistent(store, "e2 deleted")
        // p3 answered after all (no longer abandoned); a lead won late moves into the window.
        try store.commit([.upsert("interactions", id: "p3", ["answered_at": "2026-11-02T11:00:15Z", "status": "answered"]),
                          .upsert("leads", id: "l3", ["won_at": "2026-12-10T10:00:00Z"])])
        #expect(try Self.month(store, "abandonment-rate-phone", "de-1") == (0, 4))
        #expect(try Self.month(store, "service-level-phone", "de-1") == (3, 4))
        #expect(try Self.month(store, "lead-conversion", "de-1") == (2, 3))
        try Self.expectConsistent(store, "p3 answered, l3 won in time")
        // An update that touches no counted field changes nothing.
        let before = try store.kpiTotals()
        try store.commit([.upsert("interactions", id: "p1", ["summary": "called back"])])
        #expect(try store.kpiTotals() == before)

        // Changes received from another node (its dialogues and a later edit of p2) are counted as applied.
        let other = try makeStore(dir, "de-2", parent: "de")
        let made = try other.commit([.upsert("interactions", id: "x1", ["channel": "phone", "direction": "inbound", "created_at": "2026-11-05T09:00:00Z",
                                                                         "answered_at": "2026-11-05T09:00:03Z", "customer_id": "c2", "topic": "service"]),
                                     .upsert("interactions", id: "p2", ["answered_at": "2026-11-02T10:00:05Z"])])
        let report = try await store.applyIncoming(made, from: "de-2", source: .child, checkSkew: false)
        #expect(report.applied == 2)
        #expect(try Self.month(store, "service-level-phone", "de-2") == (1, 1))
        try Self.expectConsistent(store, "received changes")
        // A rebuild from the log (what a clock-skew re-stamp does) keeps them too.
        try store.rebuildKPIs()
        try Self.expectConsistent(store, "rebuilt")
    }

    @Test("First-contact resolution groups customers by their bytes, as SQL selects a group: \"José\" precomposed and decomposed are two customers in the accumulators and in a recount, and rewriting one form to the other moves the dialogue")
    func followUpGroupsAreByteExact() throws {
        let dir = try TempDir()
        let store = try makeStore(dir, "de-1", parent: "de")
        #expect(try store.adoptKPIs(try Self.adoption()))
        let composed = "Jos\u{E9}", decomposed = "Jose\u{301}"
        // The trap: Swift's `String ==` finds the two canonically equivalent, SQLite's `=` does not.
        #expect(composed == decomposed && !composed.utf8.elementsEqual(decomposed.utf8))
        func dialogue(created: String, resolved: String, customer: String) -> [String: FieldValue] {
            ["channel": "phone", "direction": "inbound", "created_at": .string(created), "answered_at": .string(created),
             "resolved_at": .string(resolved), "status": "resolved", "handling_node": "de-1",
             "customer_id": .string(customer), "topic": "warranty"]
        }
        // u2 comes an hour after u1 was resolved: within the 7 days that make u1 a repeat
        // contact, if (and only if) both are of one customer.
        try store.commit([.upsert("interactions", id: "u1", dialogue(created: "2026-11-02T09:00:00Z", resolved: "2026-11-02T09:05:00Z", customer: composed))])
        try store.commit([.upsert("interactions", id: "u2", dialogue(created: "2026-11-02T10:05:00Z", resolved: "2026-11-02T10:10:00Z", customer: decomposed))])
        #expect(try Self.month(store, "first-contact-resolution", "de-1") == (2, 2), "two customers: both resolved at first contact")
        try Self.expectConsistent(store, "two byte-different customers")
        // u2 rewritten to the precomposed form: one customer now, u1 was followed up.
        try store.commit([.upsert("interactions", id: "u2", ["customer_id": .string(composed)])])
        #expect(try Self.month(store, "first-contact-resolution", "de-1") == (1, 2), "one customer: u1 was not resolved at first contact")
        try Self.expectConsistent(store, "u2 rewritten to the precomposed form")
        // And back: two customers again.
        try store.commit([.upsert("interactions", id: "u2", ["customer_id": .string(decomposed)])])
        #expect(try Self.month(store, "first-contact-resolution", "de-1") == (2, 2), "two customers again")
        try Self.expectConsistent(store, "u2 rewritten to the decomposed form")
    }

    @Test("""
    A store counted by an earlier version's rules (a lead won before it was created counted as converted) recounts at its next \
    adoption of the same applied release, and writes again the snapshot that counted it: 1/1 becomes 0/0 (helper 109: \
    the shortcut for an adopted decision skipped the recount, and the old snapshot stayed at HQ)
    """)
    func upgradedCountingRules() throws {
        let dir = try TempDir()
        let path: String
        do {
            let store = try makeStore(dir, "de-1", parent: "de")
            path = store.path
            try store.recordGovernanceApplication(GovernanceApplication(release: 1, overlay: nil, rollout: 1, state: "applied", message: nil,
                                                                        effective: try KPIFixture.effectiveConfigJSON(), appliedAtMillis: 1))
            #expect(try store.adoptKPIsOfAppliedGovernance())
            try store.commit([.upsert("leads", id: "early", ["source_channel": "web", "status": "won", "created_at": "2026-10-20T10:00:00Z",
                                                               "won_at": "2026-10-10T10:00:00Z", "source_node": "de-1"])])
            #expect(try store.kpiTotals().isEmpty, "counted nowhere by rules 2")
            #expect(try !store.adoptKPIsOfAppliedGovernance(), "adopted already")
        }
        // As the version before rules 2 left it: the lead counted 1/1 on its day, published, and
        // the adoption's source and the publish stamp without the rules' version.
        let queue = try GRDB.DatabaseQueue(path: path)
        try queue.write { db in
            let day = KPIDay.parse("2026-10-20")!
            try db.execute(sql: "INSERT INTO ts_kpi_totals (kpi, node, day, numerator, denominator, dirty) VALUES ('lead-conversion', 'de-1', ?, 1, 1, 1)",
                           arguments: [day])
            try db.execute(sql: "DELETE FROM ts_meta WHERE key = 'kpi.counting_rules'")
        }
        try queue.close()
        let store = try NodeStore(path: path)
        #expect(try store.publishKPISnapshots() > 0)
        let id = "de-1:lead-conversion:month:2026-10-01"
        #expect(try store.record(table: "kpi_snapshots", id: id)?.state.liveValues["numerator"] == .int(1))
        let stamp = try #require(try store.meta(.kpiPublished))
        try store.setMeta(.kpiPublished, String(stamp[..<stamp.range(of: "|r", options: .backwards)!.lowerBound]))
        try store.setMeta(.kpiSource, String(try store.meta(.kpiSource)!.split(separator: ":").prefix(2).joined(separator: ":")))

        #expect(try store.adoptKPIsOfAppliedGovernance(), "adopted again, and recounted")
        #expect(try store.kpiTotals().isEmpty)
        #expect(try store.kpiSnapshotsDue() || store.kpiTotals().isEmpty)
        try store.publishKPISnapshots()
        let snapshot = try #require(try store.record(table: "kpi_snapshots", id: id)?.state.liveValues)
        #expect(snapshot["numerator"] == .int(0) && snapshot["denominator"] == .int(0), "\(snapshot)")
        #expect(try !store.adoptKPIsOfAppliedGovernance())
    }

    @Test("A store with an earlier accumulator layout opens: the derived table is dropped and recounted at the next adoption")
    func firstLayout() throws {
        let dir = try TempDir()
        let path: String
        do {
            let store = try makeStore(dir, "de-1", parent: "de")
            path = store.path
            for r in KPIFixture.records { try store.commit([.upsert(r.table, id: r.id, r.fields)]) }
            try store.adoptKPIs(try Self.adoption())
        }
        // Rewrite it in the first layout (keyed by KPI, an index of dirty rows, no `kpi.layout`), as stores of that version hold it.
        let queue = try GRDB.DatabaseQueue(path: path)
        try queue.write { db in
            try db.execute(sql: """
                DROP TABLE ts_kpi_totals;
                CREATE TABLE ts_kpi_totals (kpi TEXT NOT NULL, node TEXT NOT NULL, day INTEGER NOT NULL, numerator INTEGER NOT NULL,
                    denominator INTEGER NOT NULL, dirty INTEGER NOT NULL DEFAULT 1, PRIMARY KEY (kpi, node, day)) WITHOUT ROWID;
                CREATE INDEX ts_kpi_totals_dirty ON ts_kpi_totals (node) WHERE dirty = 1;
                INSERT INTO ts_kpi_totals VALUES ('service-level-phone', 'de-1', 20759, 99, 99, 1);
                DELETE FROM ts_meta WHERE key = 'kpi.layout';
                """)
        }
        try queue.close()
        let reopened = try NodeStore(path: path)
        #expect(try reopened.kpiTotals().isEmpty && reopened.kpiAdoption() == nil, "dropped, and nothing counted until adopted again")
        #expect(try reopened.adoptKPIs(try Self.adoption()))
        try Self.expectConsistent(reopened, "recounted after the layout change")
        #expect(try Self.month(reopened, "service-level-phone", "de-1") == (2, 4))
    }

    @Test("A new formula recounts everything in the adopting transaction; a new target only marks the node's snapshots for rewriting")
    func adoption() throws {
        let dir = try TempDir()
        let store = try makeStore(dir, "de-1", parent: "de")
        try store.adoptKPIs(try Self.adoption())
        for r in KPIFixture.records { try store.commit([.upsert(r.table, id: r.id, r.fields)]) }
        #expect(try Self.month(store, "service-level-phone", "de-1") == (2, 4))
        // 30 s instead of 20 s: p2 (30 s) now counts → 3/4.
        #expect(try store.adoptKPIs(try Self.adoption(answeredWithin: "30s")))
        #expect(try Self.month(store, "service-level-phone", "de-1") == (3, 4))
        try Self.expectConsistent(store, "new formula")
        // Accumulators counted by an earlier version's rules (no kpi.counting_rules, as
        // before version 2): the same adoption recounts once, then not again.
        try store.setMeta(.kpiCountingRules, nil)
        #expect(try store.adoptKPIs(try Self.adoption(answeredWithin: "30s")), "counted by other rules: recounted")
        #expect(try store.meta(.kpiCountingRules) == String(KPIEvaluator.countingRules))
        #expect(try !store.adoptKPIs(try Self.adoption(answeredWithin: "30s")))
        // A stricter target (an overlay): no recount, but snapshots are rewritten with it.
        try store.publishKPISnapshots()
        #expect(try !store.kpiSnapshotsDue())
        #expect(try !store.adoptKPIs(try Self.adoption(overlayTarget: 85, answeredWithin: "30s")))
        #expect(try store.kpiSnapshotsDue())
        #expect(try store.publishKPISnapshots() > 0)
        let snapshot = try #require(try store.record(table: "kpi_snapshots", id: "de-1:service-level-phone:month:2026-11-01"))
        #expect(snapshot.state.liveValues["target"] == .double(85) && snapshot.state.liveValues["overlay"] == "de#1")
        // No KPIs at all: nothing counted.
        try store.adoptKPIs(nil)
        #expect(try store.kpiTotals().isEmpty)
        try store.commit([.upsert("interactions", id: "late", ["channel": "phone", "direction": "inbound", "created_at": "2026-11-02T09:00:00Z"])])
        #expect(try store.kpiTotals().isEmpty)
    }

    @Test("A new release whose formulas count nothing in a period the node published rewrites that snapshot as 0/0; one that drops a KPI deletes its snapshots")
    func staleSnapshotsRewritten() throws {
        let dir = try TempDir()
        let store = try makeStore(dir, "de-1", parent: "de")
        try store.adoptKPIs(try Self.adoption())
        for r in KPIFixture.records { try store.commit([.upsert(r.table, id: r.id, r.fields)]) }
        try store.publishKPISnapshots()
        let id = "de-1:service-level-phone:month:2026-11-01"
        #expect(try store.record(table: "kpi_snapshots", id: id)?.state.liveValues["numerator"] == .int(2))
        // v2: the service level counts chat (the fixture has none), abandonment is dropped.
        var catalog = try KPICatalog(effectiveConfigJSON: try KPIFixture.effectiveConfigJSON())
        let i = try #require(catalog.definitions.firstIndex { $0.id == "service-level-phone" })
        catalog.definitions[i].formula.channel = "chat"
        catalog.definitions.removeAll { $0.id == "abandonment-rate-phone" }
        #expect(try store.record(table: "kpi_snapshots", id: "de-1:abandonment-rate-phone:month:2026-11-01") != nil)
        #expect(try store.adoptKPIs(KPIAdoption(release: 2, overlay: nil, catalog: catalog)))
        try store.publishKPISnapshots()
        // Before: no accumulator counted the month any more, so v1's 2/4 stayed at HQ for good.
        let rewritten = try #require(try store.record(table: "kpi_snapshots", id: id)?.state.liveValues)
        #expect(rewritten["numerator"] == .int(0) && rewritten["denominator"] == .int(0) && rewritten["value"] == .null
                && rewritten["release"] == .int(2), "\(rewritten)")
        #expect(try store.liveRecords(table: "kpi_snapshots").allSatisfy { $0.values["kpi"] != "abandonment-rate-phone" })
        #expect(try store.publishKPISnapshots() == 0, "written once")
    }

    @Test("Snapshots: one record per KPI, period and the node's own values; a change rewrites only its day, week and month; the table and roll-ups")
    func snapshots() throws {
        let dir = try TempDir()
        let store = try makeStore(dir, "de-1", parent: "de")
        try store.setMeta("tree.path", "hq/de/de-1")
        try store.adoptKPIs(try Self.adoption(overlayTarget: 85))
        for r in KPIFixture.records { try store.commit([.upsert(r.table, id: r.id, r.fields)]) }
        let written = try store.publishKPISnapshots(nowMillis: 1_800_000_000_000)
        // de-1's own accumulators: its KPIs × (days + weeks + months) with values.
        let own = try store.kpiTotals(node: "de-1")
        var expected = 0
        for kpi in Set(own.map(\.kpi)) {
            let days = own.filter { $0.kpi == kpi }.map(\.day)
            for kind in KPIPeriodKind.allCases { expected += Set(days.map { kind.start(ofDay: $0) }).count }
        }
        #expect(written == expected && written > 20)
        let snapshots = try store.liveRecords(table: "kpi_snapshots")
        #expect(snapshots.count == written && snapshots.allSatisfy { $0.values["node"] == "de-1" && $0.values["path"] == "hq/de/de-1" },
                "a node writes only its own values (de's and de-2's dialogues it holds are theirs to report)")
        let sl = try #require(snapshots.first { $0.id == "de-1:service-level-phone:month:2026-11-01" }?.values)
        #expect(sl["numerator"] == .int(2) && sl["denominator"] == .int(4) && sl["value"] == .double(50))
        #expect(sl["target_kind"] == "at_least" && sl["target"] == .double(85) && sl["met"] == .bool(false) && sl["release"] == .int(1))
        #expect(try store.publishKPISnapshots() == 0, "nothing changed, nothing written")

        // One new phone dialogue on 2026-11-03 changes 4 phone KPIs' day, week and month (… of de-1).
        try store.commit([.upsert("interactions", id: "p9", ["channel": "phone", "direction": "inbound", "created_at": "2026-11-03T09:00:00Z",
                                                              "answered_at": "2026-11-03T09:00:04Z", "resolved_at": "2026-11-03T09:01:04Z",
                                                              "handling_node": "de-1", "sla_due": .null])])
        // service level, speed of answer, abandonment (3 phone KPIs) + handle time + FCR: 5 KPIs × 3 periods.
        #expect(try store.publishKPISnapshots() == 15)
        #expect(try store.record(table: "kpi_snapshots", id: "de-1:service-level-phone:month:2026-11-01")?.state.liveValues["numerator"] == .int(3))

        // The table at de-1: its own values only; by node, with the snapshot's target.
        let report = try store.kpiReport(period: .month, byNode: true)
        #expect(report.node == "de-1" && report.rows.allSatisfy { $0.node == "de-1" })
        let row = try #require(report.rows.first { $0.kpi == "service-level-phone" })
        #expect(row.numerator == 3 && row.denominator == 5 && row.level == "dealer" && row.target == nil,
                "a dealer is not measured on service level (levels: hq, country)")
        #expect(report.rows.first { $0.kpi == "average-handle-time" }?.target == KPITarget(.atMost, 600))
    }
}

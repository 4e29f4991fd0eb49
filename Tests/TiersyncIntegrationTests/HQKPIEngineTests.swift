import Foundation
import Testing
import TiersyncCore
import TiersyncGovernance
import TiersyncKPI
import TiersyncPostgres
import TiersyncServer
import TiersyncStorage
import TiersyncStore
import TiersyncTestSupport

/// HQ's KPI table from its tenant store on either engine: SQLite keeps accumulators,
/// PostgreSQL counts the root's own dialogues afresh per report (selecting them, and their
/// customers' and topics' other dialogues, in the database). Both must give the same table.
@Suite("HQ's KPI table on either engine")
struct HQKPIEngineTests {
    static func dialogue(handledBy node: String, customer: String, topic: String, created: String, answeredAfter seconds: Int? = nil,
                         resolved: String? = nil) -> [String: FieldValue] {
        var f: [String: FieldValue] = ["customer_id": .string(customer), "topic": .string(topic), "channel": "phone", "direction": "inbound",
                                       "created_at": .string(created), "handling_node": .string(node), "originating_node": "d1",
                                       "status": resolved == nil ? (seconds == nil ? "closed" : "answered") : "resolved"]
        if let seconds, let at = KPITime.millis(created) {
            f["answered_at"] = .string(KPIDay.label(KPIDay.of(millis: at)) + "T" + Self.clock(at + Int64(seconds) * 1000) + "Z")
        }
        if let resolved { f["resolved_at"] = .string(resolved) }
        return f
    }

    static func clock(_ millis: Int64) -> String {
        let s = (millis / 1000) % 86_400
        return String(format: "%02d:%02d:%02d", s / 3600, s / 60 % 60, s % 60)
    }

    @Test("""
    HQ's own KPIs count only the dialogues HQ handles, with first-contact resolution judged against the next dialogue \
    of the customer and topic wherever it is handled; other nodes' values come from their snapshots of the period asked; \
    the same table on SQLite (accumulators) and PostgreSQL (counted per report)
    """, arguments: StorageEngine.testable)
    func hqTableOnEitherEngine(engine: StorageEngine) async throws {
        let dir = try TempDir()
        let compiled = try GovernanceCompiler.compile(directory: repositoryRoot() + "/fixtures/governance/automaker")
        let catalog = try KPICatalog(effectiveConfigJSON: String(decoding: try JSONEncoder().encode(compiled.config), as: UTF8.self))
        let dealer = try NodeStore(path: dir.path + "/d1.sqlite")
        try dealer.setIdentity(NodeIdentity(tenant: "acme", node: "d1", parent: "hq"))
        var writes: [RecordWrite] = [
            // Handled at HQ: h1 followed up at the dealer 3 days later (within 7 days of its
            // resolution: not resolved at first contact); h2 followed up after 14 days; h3 never
            // (its customer's other dialogue is on another topic); h4 abandoned.
            .upsert("interactions", id: "h1", Self.dialogue(handledBy: "hq", customer: "c1", topic: "recall", created: "2027-01-05T10:00:00Z",
                                                          answeredAfter: 10, resolved: "2027-01-05T11:00:00Z")),
            .upsert("interactions", id: "h2", Self.dialogue(handledBy: "hq", customer: "c2", topic: "recall", created: "2027-01-06T10:00:00Z",
                                                          answeredAfter: 30, resolved: "2027-01-06T12:00:00Z")),
            .upsert("interactions", id: "h3", Self.dialogue(handledBy: "hq", customer: "c3", topic: "recall", created: "2027-01-07T10:00:00Z",
                                                          answeredAfter: 5, resolved: "2027-01-07T10:30:00Z")),
            .upsert("interactions", id: "h4", Self.dialogue(handledBy: "hq", customer: "c4", topic: "recall", created: "2027-01-07T11:00:00Z")),
            // h5 and h6: customers "José" precomposed and decomposed, two customers as SQL
            // compares them (h6 an hour after h5's resolution would otherwise make h5 a repeat).
            .upsert("interactions", id: "h5", Self.dialogue(handledBy: "hq", customer: "Jos\u{E9}", topic: "recall", created: "2027-01-09T10:00:00Z",
                                                          answeredAfter: 10, resolved: "2027-01-09T10:20:00Z")),
            .upsert("interactions", id: "h6", Self.dialogue(handledBy: "hq", customer: "Jose\u{301}", topic: "recall", created: "2027-01-09T11:20:00Z",
                                                          answeredAfter: 15, resolved: "2027-01-09T11:30:00Z")),
            .upsert("interactions", id: "x1", Self.dialogue(handledBy: "d1", customer: "c1", topic: "recall", created: "2027-01-08T09:00:00Z",
                                                          answeredAfter: 3, resolved: "2027-01-08T09:10:00Z")),
            .upsert("interactions", id: "x2", Self.dialogue(handledBy: "d1", customer: "c2", topic: "recall", created: "2027-01-20T09:00:00Z",
                                                          answeredAfter: 3)),
            .upsert("interactions", id: "x3", Self.dialogue(handledBy: "d1", customer: "c3", topic: "brochure", created: "2027-01-08T09:00:00Z",
                                                          answeredAfter: 3)),
        ]
        // The dealer's own many dialogues, none of HQ's.
        for i in 0..<40 {
            writes.append(.upsert("interactions", id: "d1-\(i)", Self.dialogue(handledBy: "d1", customer: "c\(10 + i % 7)", topic: "service",
                                                                              created: "2027-01-\(10 + i % 9)T08:00:00Z", answeredAfter: i % 40,
                                                                              resolved: i % 2 == 0 ? "2027-01-\(10 + i % 9)T09:00:00Z" : nil)))
        }
        // The dealer's snapshots: its month and one of its weeks.
        for (period, start, n, d) in [("month", "2027-01-01", 3, 4), ("week", "2027-01-04", 1, 1)] {
            writes.append(.upsert("kpi_snapshots", id: "d1:service-level-phone:\(period):\(start)", [
                "node": "d1", "path": "hq/d1", "kpi": "service-level-phone", "period": .string(period), "period_start": .string(start),
                "numerator": .int(Int64(n)), "denominator": .int(Int64(d)), "target_kind": "at_least", "target": .int(80)]))
        }
        let changes = try dealer.commit(writes)

        let report = try await engine.withTenantStore(root: "hq") { hq in
            _ = try await hq.adoptKPIs(KPIAdoption(release: 1, overlay: nil, catalog: catalog), source: "test")
            _ = try await hq.applyIncoming(changes, from: "d1", source: .child, checkSkew: false, gate: nil, cursor: nil, wallMillis: WallClock.nowMillis())
            return try await hq.kpiReport(period: .month, byNode: true, viewer: "hq", paths: ["hq": ["hq"], "d1": ["hq", "d1"]])
        }
        func row(_ kpi: String, _ node: String, _ scope: KPIRow.Scope) -> String? {
            report.rows.first { $0.kpi == kpi && $0.node == node && $0.scope == scope && $0.periodStart == "2027-01-01" }
                .map { "\($0.numerator)/\($0.denominator)" }
        }
        // HQ's own: service level 4/6 (h1 10 s, h3 5 s, h5 10 s and h6 15 s within 20 s; h2 30 s;
        // h4 never answered); first-contact resolution 4/5 (h1 followed up by x1 on the 8th, before
        // 5 Jan 11:00 + 7 days; h2's next on the 20th is after 6 Jan 12:00 + 7 days; h3 has none;
        // h5 and h6 are of two customers, so neither has a next); abandonment 1/6 (h4).
        #expect(row("service-level-phone", "hq", .node) == "4/6", "\(report.rows.filter { $0.node == "hq" })")
        #expect(row("first-contact-resolution", "hq", .node) == "4/5")
        #expect(row("abandonment-rate-phone", "hq", .node) == "1/6")
        // The dealer's, from its month snapshot (not its week's): 3/4; the subtree adds them: 7/10.
        #expect(row("service-level-phone", "d1", .node) == "3/4")
        #expect(row("service-level-phone", "hq", .subtree) == "7/10")
        #expect(!report.rows.contains { $0.periodStart == "2027-01-04" })
    }

    @Test("""
    on PostgreSQL, HQ's own values are counted once while the log has not moved, once per interval after it moved (a report \
    in between is the last count's), and once for reports asking together
    """, .enabled(if: TestPostgres.isAvailable, Comment(rawValue: StorageEngine.postgresSkipNote)))
    func rootCountsBounded() async throws {
        let compiled = try GovernanceCompiler.compile(directory: repositoryRoot() + "/fixtures/governance/automaker")
        let catalog = try KPICatalog(effectiveConfigJSON: String(decoding: try JSONEncoder().encode(compiled.config), as: UTF8.self))
        let dir = try TempDir()
        let dealer = try NodeStore(path: dir.path + "/d1.sqlite")
        try dealer.setIdentity(NodeIdentity(tenant: "acme", node: "d1", parent: "hq"))
        // Abandoned dialogues handled at HQ, one more per push.
        var n = 0
        func abandoned() throws -> [Change] {
            n += 1
            return try dealer.commit([.upsert("interactions", id: "h\(n)", Self.dialogue(handledBy: "hq", customer: "c\(n)", topic: "recall",
                                                                                      created: "2027-01-05T10:00:00Z"))])
        }
        try await StorageEngine.postgres.withTenantStore(root: "hq") { store in
            let hq = try #require(store as? PostgresTenantStore)
            _ = try await hq.adoptKPIs(KPIAdoption(release: 1, overlay: nil, catalog: catalog), source: "test")
            func push() async throws {
                _ = try await hq.applyIncoming(try abandoned(), from: "d1", source: .child, checkSkew: false, gate: nil, cursor: nil,
                                               wallMillis: WallClock.nowMillis())
            }
            func abandonment() async throws -> String? {
                try await hq.kpiReport(period: .month, byNode: true, viewer: "hq", paths: ["hq": ["hq"], "d1": ["hq", "d1"]]).rows
                    .first { $0.kpi == "abandonment-rate-phone" && $0.node == "hq" && $0.scope == .node }.map { "\($0.numerator)/\($0.denominator)" }
            }
            hq.rootKPIRecountInterval = .zero
            try await push()
            #expect(try await abandonment() == "1/1")
            #expect(try await abandonment() == "1/1")
            #expect(hq.rootKPICountsMade == 1, "the log did not move: the count serves")

            // The log moved: counted again (the interval is zero).
            try await push()
            #expect(try await abandonment() == "2/2")
            #expect(hq.rootKPICountsMade == 2)

            // Within the interval, a report is the last count's, though the log moved.
            hq.rootKPIRecountInterval = .seconds(3_600)
            try await push()
            #expect(try await abandonment() == "2/2")
            #expect(hq.rootKPICountsMade == 2)

            // Past it, twelve reports asking together share one count.
            hq.rootKPIRecountInterval = .zero
            let reports = try await withThrowingTaskGroup(of: String?.self) { group in
                for _ in 0..<12 { group.addTask { try await abandonment() } }
                return try await group.reduce(into: [String?]()) { $0.append($1) }
            }
            #expect(reports == Array(repeating: "3/3", count: 12))
            #expect(hq.rootKPICountsMade == 3, "one count for twelve reports")
        }
    }

    @Test("""
    the root counts the KPIs of the newest rollout's release in effect: v1 while v2 is not yet in effect, v2 from its \
    effective-from on, nothing again while the same release governs
    """, arguments: StorageEngine.testable)
    func rootAdoptsReleaseInEffect(engine: StorageEngine) async throws {
        let compiled = try GovernanceCompiler.compile(directory: repositoryRoot() + "/fixtures/governance/automaker")
        let now = WallClock.nowMillis(), day: UInt64 = 86_400_000
        try await engine.withTenantStore(tenant: "automaker", root: "hq") { hq in
            let publisher = GovernancePublisher(store: hq, tenant: "automaker", key: GovernanceSigningKey(), tree: NodeTree(parents: ["hq": nil]))
            _ = try await publisher.publish(compiled, nowMillis: now)
            #expect(try await KPIViews.adopt(hq, nowMillis: now))
            #expect(try await hq.setting("kpi.source") == "root:1:1:r\(KPIEvaluator.countingRules)")
            #expect(try await !KPIViews.adopt(hq, nowMillis: now), "the same release: nothing to adopt")

            _ = try await publisher.publish(compiled, effectiveFromMillis: now + day, nowMillis: now)
            #expect(try await !KPIViews.adopt(hq, nowMillis: now + 1))
            #expect(try await hq.setting("kpi.source") == "root:1:1:r\(KPIEvaluator.countingRules)", "v2 is not in effect yet")
            _ = try await KPIViews.adopt(hq, nowMillis: now + day)
            #expect(try await hq.setting("kpi.source") == "root:2:2:r\(KPIEvaluator.countingRules)")
            // Adopted and counted by a version counting by other rules (its source without them,
            // no kpi.counting_rules): adopted again, once, and recounted (SQLite keeps the
            // root's accumulators; PostgreSQL counts the root afresh in each process).
            if let store = hq as? NodeStore {
                try store.setMeta("kpi.source", "root:2:2")
                try store.setMeta(.kpiCountingRules, nil)
                #expect(try await KPIViews.adopt(hq, nowMillis: now + day), "recounted")
                #expect(try await hq.setting("kpi.source") == "root:2:2:r\(KPIEvaluator.countingRules)")
                #expect(try await !KPIViews.adopt(hq, nowMillis: now + day))
            }
        }
    }
}

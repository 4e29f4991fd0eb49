import Foundation
import Testing
import TiersyncKPI
import TiersyncTestSupport

/// The KPI table as `tiersync kpi`, `GET /v1/kpis`, the admin API and the console show it.
@Suite("KPI table")
struct KPIReportTests {
    static let paths = ["hq": ["hq"], "de": ["hq", "de"], "de-1": ["hq", "de", "de-1"]]

    static func catalog() throws -> KPICatalog { try KPICatalog(effectiveConfigJSON: try KPIFixture.effectiveConfigJSON()) }

    @Test("by node, a country with values of its own only in a period (its dealers quiet) still has a subtree row, as do its ancestors; a leaf has none (helper 72)")
    func quietSubtreeStillHasItsRow() throws {
        let day = try #require(KPIDay.parse("2026-12-01"))
        let nextDay = day + 1
        let observations = [
            // Day 1: the country alone. Day 2: its dealer alone.
            KPIObservation(kpi: "service-level-phone", node: "de", periodStart: day, numerator: 1, denominator: 2, target: nil),
            KPIObservation(kpi: "service-level-phone", node: "de-1", periodStart: nextDay, numerator: 3, denominator: 4, target: nil),
        ]
        let rows = KPIReport.rows(viewer: "hq", catalog: try Self.catalog(), period: .day, observations: observations,
                                  paths: Self.paths, byNode: true)
        func row(_ node: String, _ scope: KPIRow.Scope, _ start: Int64) -> KPIRow? {
            rows.first { $0.node == node && $0.scope == scope && $0.periodStart == KPIDay.label(start) }
        }
        let deSubtree = try #require(row("de", .subtree, day), "\(rows)")
        #expect(deSubtree.numerator == 1 && deSubtree.denominator == 2 && deSubtree.nodes == 1)
        #expect(row("hq", .subtree, day)?.denominator == 2, "HQ's subtree takes in the country's own values")
        #expect(row("de", .node, day)?.denominator == 2)
        #expect(row("de", .subtree, nextDay)?.denominator == 4 && row("de", .node, nextDay) == nil)
        #expect(row("de-1", .subtree, nextDay) == nil, "a leaf has no subtree row")
        // Without paths below the country (its dealers never reported: a store's KPI paths name
        // only nodes that did, helper 80), its level says it has nodes below it.
        let alone = KPIReport.rows(viewer: "hq", catalog: try Self.catalog(), period: .day, observations: [observations[0]],
                                   paths: ["hq": ["hq"], "de": ["hq", "de"]], byNode: true)
        #expect(alone.contains { $0.node == "de" && $0.scope == .subtree && $0.denominator == 2 }, "\(alone)")
        #expect(alone.contains { $0.node == "hq" && $0.scope == .subtree && $0.denominator == 2 })
        // A dealer (the last level) reporting alone has no subtree row.
        let dealerAlone = KPIReport.rows(viewer: "hq", catalog: try Self.catalog(), period: .day, observations: [observations[1]],
                                         paths: ["hq": ["hq"], "de": ["hq", "de"], "de-1": ["hq", "de", "de-1"]], byNode: true)
        #expect(!dealerAlone.contains { $0.node == "de-1" && $0.scope == .subtree } && dealerAlone.contains { $0.node == "de" && $0.scope == .subtree })
    }

    @Test("a country's table answered by HQ judges the country's rows by the target it reported (its overlay's 90 %), not HQ's release's 80 % (met and MISSED flipped)")
    func countryViewedAtHQ() throws {
        let day = try #require(KPIDay.parse("2026-12-01"))
        let overlay = KPITarget(.atLeast, 90)
        let observations = [
            KPIObservation(kpi: "service-level-phone", node: "de", periodStart: day, numerator: 0, denominator: 1, target: overlay),
            KPIObservation(kpi: "service-level-phone", node: "de-1", periodStart: day, numerator: 5, denominator: 5, target: overlay),
        ]
        // 5 of 6 answered within 20 s: 83.33 %, below de's 90 %, above HQ's 80 %.
        let atHQ = KPIReport.rows(viewer: "de", catalog: try Self.catalog(), catalogIsViewers: false, period: .month,
                                  observations: observations, paths: Self.paths, byNode: true)
        let subtree = try #require(atHQ.first { $0.node == "de" && $0.scope == .subtree && $0.kpi == "service-level-phone" })
        #expect(subtree.numerator == 5 && subtree.denominator == 6)
        #expect(subtree.target == overlay && subtree.met == false, "\(subtree)")
        let own = try #require(atHQ.first { $0.node == "de" && $0.scope == .node && $0.kpi == "service-level-phone" })
        #expect(own.target == overlay && own.met == false, "\(own)")
        // The country's own store, whose catalog is its effective config (overlay included), keeps reading its catalog.
        var countryCatalog = try Self.catalog()
        let i = try #require(countryCatalog.definitions.firstIndex { $0.id == "service-level-phone" })
        countryCatalog.definitions[i].target = KPITarget(.atLeast, 85)
        let atCountry = KPIReport.rows(viewer: "de", catalog: countryCatalog, period: .month, observations: observations, paths: Self.paths, byNode: true)
        #expect(atCountry.first { $0.node == "de" && $0.scope == .node && $0.kpi == "service-level-phone" }?.target == KPITarget(.atLeast, 85))
    }

    @Test("a seconds KPI the viewer's release does not define (a trial release's) is shown in the unit its nodes reported (it was dropped as an impossible percentage)")
    func trialKPIInSeconds() throws {
        let day = try #require(KPIDay.parse("2026-11-01"))
        let observations = [KPIObservation(kpi: "average-handle-time-trial", node: "de-1", periodStart: day, numerator: 300_000, denominator: 1,
                                           target: KPITarget(.atMost, 300), unit: .seconds)]
        let rows = KPIReport.rows(viewer: "hq", catalog: try Self.catalog(), period: .month, observations: observations, paths: Self.paths, byNode: true)
        let row = try #require(rows.first { $0.node == "de-1" && $0.kpi == "average-handle-time-trial" })
        #expect(row.unit == .seconds && row.value == 300, "\(row)")
        #expect(KPIReport.table(rows, byNode: true).contains("300 s"))
        // A subtree row is labelled so with or without --by node (helper 107: "hq" meant both).
        for byNode in [true, false] {
            let subtree = rows.filter { $0.scope == .subtree }
            #expect(!subtree.isEmpty && subtree.allSatisfy { KPIReport.table([$0], byNode: byNode).contains("\($0.node) (subtree)") })
        }
        // Without a reported unit, an unknown KPI is a percentage, and a count no percentage can have stays out.
        let unknown = [KPIObservation(kpi: "mystery", node: "de-1", periodStart: day, numerator: 300_000, denominator: 1, target: nil)]
        #expect(KPIReport.rows(viewer: "hq", catalog: try Self.catalog(), period: .month, observations: unknown, paths: Self.paths, byNode: true).isEmpty)
    }

    @Test("a value shown beside its verdict stands on the same side of the target: 79.9975 % reads 79.998 %, not 80 % beside MISSED")
    func roundingNeverContradictsTheVerdict() {
        #expect(KPIReport.format(100.0 * 31_999 / 40_000, .percent, against: KPITarget(.atLeast, 80)) == "79.998 %")
        #expect(KPIReport.format(100.0 * 2_001 / 40_000, .percent, against: KPITarget(.atMost, 5)) == "5.003 %")
        #expect(KPIReport.format(100.0 * 5 / 6, .percent, against: KPITarget(.atLeast, 80)) == "83.33 %")
        #expect(KPIReport.format(80, .percent, against: KPITarget(.atLeast, 80)) == "80 %")
        #expect(KPIReport.format(300.0004, .seconds, against: KPITarget(.atMost, 300)) == "300.0004 s")
        #expect(KPIReport.format(100.0 * 31_999 / 40_000, .percent) == "80 %", "without a target, two decimals")
    }
}

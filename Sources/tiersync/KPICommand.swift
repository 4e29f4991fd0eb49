import ArgumentParser
import Foundation
import TiersyncAgentCLI
import TiersyncCore
import TiersyncKPI
import TiersyncServer
import TiersyncStore

/// `tiersync kpi`: a node's KPI table from its database — its own values from its
/// accumulators, every node below it from the KPI snapshots they sent up, rolled up by
/// adding numerators and denominators, against each node's target.
struct KPICommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kpi", abstract: "Print a node's KPIs per day, week or month, against targets (docs/GOVERNANCE.md, KPIs).",
        discussion: """
        At HQ give the tenant's database (--db DATA/tenants/T.sqlite); at a country or dealer its node database. \
        Without --by the table has one row per KPI and period for the node's whole subtree; with --by node, a row \
        per node of the subtree (its own dialogues and leads) and per node with nodes below it (its subtree). \
        A percentage is 100 × numerator / denominator; a mean in seconds is numerator / denominator, the table \
        showing the numerator in seconds (the JSON in milliseconds). Periods are UTC days, ISO weeks and months.
        """)
    @Option(help: "The node's database (HQ: DATA/tenants/TENANT.sqlite).") var db: String
    @Option(help: "day, week (ISO, Monday first) or month; UTC.") var period: String = "month"
    @Option(help: "node: a row per node and per subtree instead of the whole subtree only.") var by: String?
    @Option(help: "Only periods starting on or after this date (YYYY-MM-DD).") var since: String?
    @Option(help: "Only this KPI (its id).") var only: String?
    @Flag(help: "Print the API's JSON (GET /v1/kpis) instead of a table.") var json = false
    @Flag(help: "Recount every accumulator from the dialogues and leads held and compare; exit 1 when they differ.") var verify = false
    @Flag(help: "Replace the accumulators with a recount.") var recount = false

    func run() async throws {
        guard let kind = KPIPeriodKind(rawValue: period) else { throw CLIError("--period must be day, week or month, not '\(period)'") }
        guard by == nil || by == "node" else { throw CLIError("--by takes 'node'") }
        let since = try self.since.map { text -> Int64 in
            guard let day = KPIDay.parse(text) else { throw CLIError("--since takes a date YYYY-MM-DD, not '\(text)'") }
            return day
        }
        let store = try openEnrolledStore(db)
        try await KPIViews.adopt(store)
        if recount { try store.rebuildKPIs() }
        if verify {
            let kept = try store.kpiTotals().filter { $0.numerator != 0 || $0.denominator != 0 }
            let fresh = try store.recountKPIs()
            guard kept == fresh else {
                let differing = Set(kept.map { "\($0.kpi) \($0.node) \(KPIDay.label($0.day)): \($0.numerator)/\($0.denominator)" })
                    .symmetricDifference(fresh.map { "\($0.kpi) \($0.node) \(KPIDay.label($0.day)): \($0.numerator)/\($0.denominator)" })
                FileHandle.standardError.write(Data("accumulators differ from a recount:\n\(differing.sorted().prefix(20).map { "  " + $0 }.joined(separator: "\n"))\n".utf8))
                throw ExitCode(1)
            }
            print("accumulators equal a recount: \(fresh.count) (KPI, node, day) totals")
        }
        if let only, let adoption = try store.kpiAdoption(), !adoption.definitions.contains(where: { $0.id == only }) {
            throw CLIError("--only \(only): no such KPI in the release in force (\(adoption.definitions.map(\.id).joined(separator: ", ")))")
        }
        var report = try store.kpiReport(period: kind, byNode: by == "node")
        report.rows = report.rows.filter { row in
            if let since, let start = KPIDay.parse(row.periodStart), start < since { return false }
            if let only, row.kpi != only { return false }
            return true
        }
        if json {
            print(try jsonText(report))
            return
        }
        let adoption = try store.kpiAdoption()
        let governance = adoption.map { "release v\($0.release.map(String.init) ?? "?")" + ($0.overlay.map { " ⊕ overlay \($0)" } ?? "") } ?? "no release in force"
        print("KPIs of \(report.node) by \(kind.rawValue) (\(governance))")
        print(KPIReport.table(report.rows, byNode: report.byNode), terminator: "")
    }
}

import PostgresNIO
import Synchronization
import TiersyncKPI

/// The root's own KPI totals on this engine, which keeps no accumulators: counted afresh
/// from the dialogues and leads the root handles (``PostgresTenantStore/forEachRootRecord(_:me:_:)``),
/// an O(tenant) pass, and kept for the next report.
///
/// A report reuses the last count while the tenant's log has not moved (its `head`: the last
/// sequence and the erasures done), so it is exact. Once the log has moved, a count younger
/// than ``PostgresTenantStore/rootKPIRecountInterval`` still serves: however many consoles
/// and API clients ask, a process counts a tenant at most once per interval, and reports
/// asking together wait for one count (single-flight), as the store's schema preparation
/// does. The root's values then lag the log by at most the interval; other nodes' values
/// come from their snapshots, which lag by their publishing period anyway.
struct RootKPICounts: Sendable {
    /// Where the tenant's log stood: a count made at the same mark is current.
    struct LogMark: Equatable, Sendable {
        var seq: Int64
        var erasures: Int64
    }

    struct Count: Sendable {
        var basis: String
        var mark: LogMark
        var at: ContinuousClock.Instant
        var totals: [KPITotal]
    }

    var last: Count?
    /// The count running, for the formulas in `basis`.
    var running: (basis: String, task: Task<Count, any Error>)?
    var interval: Duration = .seconds(10)
    /// Counts made (observability and tests).
    var made = 0
}

extension PostgresTenantStore {
    /// How long a count of the root's own KPI values serves reports after the tenant's log
    /// moved (default 10 s; zero: count again whenever it moved). See ``RootKPICounts``.
    public var rootKPIRecountInterval: Duration {
        get { rootKPIs.withLock { $0.interval } }
        set { rootKPIs.withLock { $0.interval = newValue } }
    }

    /// How many times this process counted the root's own KPI values for this tenant.
    public var rootKPICountsMade: Int { rootKPIs.withLock { $0.made } }

    /// The root's own totals (every node the tally saw; the caller keeps the root's), from
    /// the last count if it still serves, else from one count shared by every caller
    /// waiting for it.
    func rootKPITotals(catalog: KPICatalog, me: String) async throws -> [KPITotal] {
        let basis = catalog.formulaBasis
        let mark = try await logMark()
        enum Step { case done([KPITotal]), wait(Task<RootKPICounts.Count, any Error>) }
        let step: Step = rootKPIs.withLock { state in
            if let last = state.last, last.basis == basis, last.mark == mark || ContinuousClock.now - last.at < state.interval {
                return .done(last.totals)
            }
            if let running = state.running, running.basis == basis { return .wait(running.task) }
            // Its age counts from now: it sees the log as it is from here on.
            let started = ContinuousClock.now
            let task = Task { () throws -> RootKPICounts.Count in
                var tally = KPITally(evaluator: KPIEvaluator(catalog: catalog))
                if tally.evaluator.measuresDialogues {
                    try await self.forEachRootRecord(.dialogues(followUps: tally.evaluator.needsFollowUps), me: me) { tally.add(DialogueFacts(id: $0, fields: $1)) }
                }
                if tally.evaluator.measuresLeads {
                    try await self.forEachRootRecord(.leads, me: me) { tally.add(LeadFacts(id: $0, fields: $1)) }
                }
                return RootKPICounts.Count(basis: basis, mark: mark, at: started, totals: tally.totals())
            }
            state.running = (basis, task)
            state.made += 1
            return .wait(task)
        }
        switch step {
        case .done(let totals):
            return totals
        case .wait(let task):
            let result = await task.result
            rootKPIs.withLock { state in
                guard let running = state.running, running.task == task else { return }
                state.running = nil
                // A failed count is not kept: the next report counts again.
                if case .success(let count) = result { state.last = count }
            }
            return try result.get().totals
        }
    }

    /// The tenant's log head: changes are numbered from it and erasures counted in it.
    private func logMark() async throws -> RootKPICounts.LogMark {
        let rows = try await client.query("SELECT seq, erasures FROM \(unescaped: table(.head)) WHERE id = 1", logger: logger)
        for try await (seq, erasures) in rows.decode((Int64, Int64).self) { return .init(seq: seq, erasures: erasures) }
        return .init(seq: 0, erasures: 0)
    }
}

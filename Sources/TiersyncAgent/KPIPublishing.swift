import Foundation
import Logging
import TiersyncStore

extension SyncAgent {
    /// Brings the node's KPI snapshots up to date: adopts the KPIs of the governance the
    /// node applied last (a new formula recounts the store's accumulators, a new target marks
    /// the snapshots) and writes the node's own `kpi_snapshots` records for every day, week
    /// and month whose values changed. The push loop sends them up like any local write.
    /// Returns how many records it wrote.
    @discardableResult
    public func publishKPIs() throws -> Int {
        try store.adoptKPIsOfAppliedGovernance()
        guard try store.kpiSnapshotsDue() else { return 0 }
        return try store.publishKPISnapshots()
    }

    /// Runs ``publishKPIs()`` every `kpiInterval` until cancelled. The accumulators are kept
    /// by the writes themselves; this only turns what changed into records.
    func kpiLoop() async {
        while !Task.isCancelled {
            do {
                let written = try publishKPIs()
                if written > 0 { logger.debug("KPI snapshots written", metadata: ["records": "\(written)"]) }
            } catch {
                logger.warning("KPI snapshots not written", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: configuration.kpiInterval)
        }
    }
}

import Logging
import ServiceLifecycle
import TiersyncCore
import TiersyncStorage

/// Compacts each open tenant store every ``RetentionPolicy/interval`` (docs/PRIVACY.md,
/// "Bounded storage"): superseded change-log entries the children fed here have pulled, and
/// tombstones older than the horizon, on either engine (on PostgreSQL one process of the hub
/// compacts a tenant at a time; every process writes the pulls it noted). Work runs in
/// short transactions, so pushes and pulls interleave with it.
struct CompactionService: Service {
    let directory: any NodeDirectory
    let policy: RetentionPolicy?
    let logger: Logger

    func run() async throws {
        guard let policy else {
            // Nothing to compact, but a service that returns ends its group: the hub stopped
            // at once when configured without retention. Wait for the shutdown instead.
            try? await gracefulShutdown()
            return
        }
        // Ends at once on graceful shutdown: the server stops only after every service has,
        // and one still asleep kept it serving with its long-polls closed (answered at once,
        // so every node polled in a tight loop) for up to an interval.
        try? await cancelWhenGracefulShutdown {
            try await compactEvery(policy)
        }
    }

    private func compactEvery(_ policy: RetentionPolicy) async throws {
        while !Task.isCancelled {
            try await Task.sleep(for: policy.interval)
            for tenant in directory.openTenants() {
                try Task.checkCancellation()
                guard let store = try? await directory.store(for: tenant) else { continue }
                do {
                    let tree = try await directory.tree(of: tenant)
                    let report = try await store.compact(policy: policy, tree: tree, nowMillis: WallClock.nowMillis(), batch: 2_000)
                    if report.purgedEntries > 0 {
                        logger.info("compacted the change log", metadata: [
                            "tenant": "\(tenant)", "superseded": "\(report.supersededEntries)", "folded": "\(report.foldedEntries)", "tombstones": "\(report.tombstones)",
                            "tombstone_entries": "\(report.tombstoneEntries)", "held_for_children": "\(report.heldForChildren)",
                            "released_pages": "\(report.releasedPages)",
                        ])
                    }
                } catch is CancellationError {
                    throw CancellationError()
                } catch {
                    logger.warning("compaction failed; retrying at the next interval", metadata: ["tenant": "\(tenant)", "error": "\(error)"])
                }
            }
        }
    }
}

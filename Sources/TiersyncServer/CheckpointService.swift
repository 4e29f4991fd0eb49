import Logging
import ServiceLifecycle
import TiersyncCore
import TiersyncStore

/// Copies each open tenant database's write-ahead log back into its file, beside the
/// writer instead of inside its commits.
///
/// A tenant's writer serializes every push to it; with SQLite's default, the commit that
/// takes the log past 1,000 pages also copies them. Stores opened with
/// ``WALCheckpointing/byOwner`` leave the copying to this service: it looks at each store's
/// ``NodeStore/uncheckpointedPages`` (an atomic read) every 25 ms and, once
/// ``WALCheckpointing/ownerThresholdPages`` have been committed — or any at all a second
/// after its last copy — runs a passive checkpoint on the store's own checkpoint connection (GRDB's
/// queue, so on the other core), which never waits for the writer or readers. The writer's
/// own checkpoint, at ``WALCheckpointing/writerBackstopPages``, then finds little left to
/// copy, and the log starts over from its beginning. Stores checkpointed by their writer
/// report no pages and are skipped.
struct CheckpointService: Service {
    let directory: any NodeDirectory
    let logger: Logger
    var interval: Duration = .milliseconds(25)
    /// How long after a store's last copy a few committed pages wait for theirs.
    var maximumDelay: Duration = .seconds(1)

    func run() async throws {
        var lastCopy: [TenantID: ContinuousClock.Instant] = [:]
        var failing: Set<TenantID> = []
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            try? await Task.sleep(for: interval)
            for tenant in directory.openTenants() {
                // Write-ahead-log checkpoints are the SQLite engine's concern.
                guard let store = (try? await directory.store(for: tenant)) as? NodeStore, let pending = store.uncheckpointedPages, pending > 0 else { continue }
                // A store first seen with pages pending waits from now.
                let last = lastCopy[tenant] ?? ContinuousClock.now
                lastCopy[tenant] = last
                guard pending >= WALCheckpointing.ownerThresholdPages || ContinuousClock.now - last >= maximumDelay else { continue }
                do {
                    try await store.checkpoint()
                    lastCopy[tenant] = ContinuousClock.now
                    failing.remove(tenant)
                } catch where NodeStore.isCheckpointBusy(error) {
                    // Another connection is checkpointing this file (the writer at its
                    // backstop, a CLI's writer): nothing lost, try on the next pass.
                } catch {
                    // Reported once per failing stretch; the writer's own backstop keeps the
                    // log bounded meanwhile.
                    if failing.insert(tenant).inserted {
                        logger.warning("checkpoint failed", metadata: ["tenant": "\(tenant)", "error": "\(error)"])
                    }
                }
            }
        }
    }
}

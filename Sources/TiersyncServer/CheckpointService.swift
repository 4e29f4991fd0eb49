import Logging
import ServiceLifecycle
import TiersyncCore
import TiersyncStore

/// Copies each open tenant database's write-ahead log back into its file, beside the
/// writer instead of inside its commits.
///
/// A tenant's writer serializes every push to it; with SQLite's default, the commit that
/// takes the log past 1,000 pages also copies them. Stores opened with
/// ``WALCheckpointing/byOwner`` leave the copying to this service, whose passive
/// checkpoints run on a connection of their own (on GRDB's queue, so on the other core)
/// and never wait for the writer or readers. The writer's own checkpoint, at
/// ``WALCheckpointing/writerBackstopPages``, then finds little left to copy, and the log
/// starts over from its beginning. Stores checkpointed by their writer are skipped
/// (``NodeStore/checkpoint()`` does nothing for them).
struct CheckpointService: Service {
    let directory: any NodeDirectory
    let logger: Logger
    /// The pause between passes while some log grows: at 50,000 changes/s about 200 pages.
    var busyInterval: Duration = .milliseconds(25)
    /// The pause while no log grew in the last pass (an idle hub wakes twice a second).
    var idleInterval: Duration = .milliseconds(500)

    func run() async throws {
        var lastLength: [TenantID: Int] = [:]
        var failing: Set<TenantID> = []
        var busy = false
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            try? await Task.sleep(for: busy ? busyInterval : idleInterval)
            busy = false
            for tenant in directory.openTenants() {
                guard let store = try? directory.store(for: tenant) else { continue }
                do {
                    guard let result = try await store.checkpoint() else { continue }
                    if lastLength.updateValue(result.logPages, forKey: tenant) != result.logPages { busy = true }
                    failing.remove(tenant)
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

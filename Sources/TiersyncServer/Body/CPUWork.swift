import NIOCore
import NIOPosix

/// Threads of the hub's own for CPU-bound work a request brings: inflating and decoding a
/// large body, hashing a password, compiling governance sources.
///
/// Neither the cooperative pool (its few threads serve every request) nor Dispatch (its
/// workers run every SQLite wait of the stores, ``NodeStore/blockingQueue``): work there
/// held other tenants' requests. On a Dispatch queue, four 63 MiB pushes of one tenant
/// held another tenant's 10 ms request for 3 s; on these threads it took 20 ms. Each lane
/// has threads of its own, so large bodies never hold a login or a compilation.
public enum CPUWork: Sendable {
    /// Request bodies too large to read inline (``BodyCodec``).
    case bodies
    /// Password hashes and governance compilations (admission-gated where they are called).
    case admin

    /// As many threads as cores (at least two), as the cooperative pool has.
    private static let threads = max(2, System.coreCount)
    private static let bodyThreads = started(NIOThreadPool(numberOfThreads: threads))
    private static let adminThreads = started(NIOThreadPool(numberOfThreads: threads))

    private static func started(_ pool: NIOThreadPool) -> NIOThreadPool {
        pool.start()
        return pool
    }

    /// Runs `body` on this lane's threads and resumes with its result.
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        switch self {
        case .bodies: try await Self.bodyThreads.runIfActive(body)
        case .admin: try await Self.adminThreads.runIfActive(body)
        }
    }
}

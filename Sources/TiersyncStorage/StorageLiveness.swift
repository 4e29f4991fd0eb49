/// Whether a hub's storage can be reached at all, as a process watching it sees it: the
/// hub answers 503 `storage_unavailable` at once while it cannot, and stops waiting for it in
/// the requests it was serving when it went.
///
/// Without it, a request reaching a hub on PostgreSQL just after the server went away waited
/// in the connection pool until the pool gave up, over a minute (its circuit breaker), and
/// every request arriving meanwhile waited with it.
public protocol StorageLiveness: Sendable {
    /// True while the storage is known unreachable.
    var isDown: Bool { get }
    /// Returns when the storage becomes unreachable (at once if it is); throws
    /// `CancellationError` when the calling task is cancelled first.
    func untilDown() async throws
}

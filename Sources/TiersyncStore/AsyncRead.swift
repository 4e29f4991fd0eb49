import GRDB

extension DatabaseReader {
    /// Reads from an async context without holding a connection while suspended.
    ///
    /// GRDB's `async` read takes a reader connection, then awaits its execution; the
    /// connection returns to the pool only once the awaiting task resumes on the
    /// cooperative thread pool. A synchronous read made on those same threads (the agent
    /// and handlers call the store's synchronous API) waits for a free connection. With
    /// every pool connection taken by suspended async reads and every cooperative thread
    /// (two, on two cores) waiting in a synchronous read, neither can move: a deadlock seen
    /// in the governance tests. Here the connection is taken, used and given back on
    /// GRDB's own dispatch queues, and only the result crosses back to the task.
    func readReleasingConnection<T: Sendable>(_ value: @escaping @Sendable (Database) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            asyncRead { database in
                continuation.resume(with: Result { try value(database.get()) })
            }
        }
    }
}

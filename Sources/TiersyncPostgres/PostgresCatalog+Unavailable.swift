import _ConnectionPoolModule
import PostgresNIO
import TiersyncStorage

extension PostgresCatalog {
    /// PostgreSQL down, restarting or out of reach: the pool cannot connect (its circuit
    /// breaker tripped, a connect timed out) or the connection went away mid-request. The
    /// hub answers 503 with Retry-After; a request it refused for any other reason stays 500.
    public func isUnavailable(_ error: any Error) -> Bool {
        if error is ConnectionPoolError { return true }
        guard let error = error as? PSQLError else { return false }
        if let underlying = error.underlying, underlying is ConnectionPoolError { return true }
        if [.connectionError, .serverClosedConnection, .clientClosedConnection, .uncleanShutdown, .poolClosed].contains(error.code) { return true }
        // The server ending the connection itself: shutting down (57P01 on a fast or smart
        // stop, 57P02 after a crash of another backend), starting (57P03), or a connection
        // exception (class 08). A request in flight when PostgreSQL stopped got a 500.
        guard error.code == .server, let state = error.serverInfo?[.sqlState] else { return false }
        return Self.unavailableStates.contains(state) || state.hasPrefix("08")
    }

    /// SQLSTATEs of a server going away or not yet there: admin_shutdown, crash_shutdown,
    /// cannot_connect_now.
    static let unavailableStates: Set<String> = ["57P01", "57P02", "57P03"]

    /// What PostgreSQL said of a failure, for the hub's log: its SQLSTATE and message
    /// (postgres-nio's own description of its errors hides both). Nil for other errors.
    public func failureDetail(_ error: any Error) -> String? {
        guard let error = error as? PSQLError else { return nil }
        if let state = error.serverInfo?[.sqlState] {
            return "PostgreSQL \(state): \(error.serverInfo?[.message] ?? "")"
        }
        return "PostgreSQL \(error.code)" + (error.underlying.map { ": \($0)" } ?? "")
    }
}

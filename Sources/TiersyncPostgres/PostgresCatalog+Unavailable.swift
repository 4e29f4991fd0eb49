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
        return [.connectionError, .serverClosedConnection, .clientClosedConnection, .uncleanShutdown, .poolClosed].contains(error.code)
    }
}

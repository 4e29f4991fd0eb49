import Foundation
import Logging
import PostgresNIO

extension PostgresEndpoint {
    /// Runs `body` on one connection of its own, opened and closed here: a command's first
    /// contact with the server. postgres-nio's pooled client retries a connection that fails
    /// (wrong port, unknown database, refused login) for as long as a query waits, without
    /// saying why; a connection of its own fails at once with the reason. A failure is tried
    /// again every second until `waiting` has passed (the server may be starting beside the
    /// caller), each logged as a warning; then ``PostgresUnreachable`` says why. Only the
    /// connection is tried again: an error of `body` is rethrown as it is, since a statement
    /// the server refused (a missing privilege, say) is not cured by waiting, and is not a
    /// failure to connect.
    public func firstContact<T: Sendable>(waiting: Duration, logger: Logger,
                                          _ body: (PostgresConnection) async throws -> T) async throws -> T {
        let connection = try await firstConnection(waiting: waiting, logger: logger)
        let outcome: Result<T, any Error>
        do { outcome = .success(try await body(connection)) } catch { outcome = .failure(error) }
        try? await connection.close()
        return try outcome.get()
    }

    private func firstConnection(waiting: Duration, logger: Logger) async throws -> PostgresConnection {
        let deadline = ContinuousClock.now + waiting
        var attempt = 0
        while true {
            attempt += 1
            do {
                return try await PostgresConnection.connect(configuration: try connectionConfiguration(), id: attempt, logger: logger)
            } catch {
                let reason = PostgresUnreachable.reason(error)
                guard ContinuousClock.now + .seconds(1) < deadline, !Task.isCancelled else {
                    throw PostgresUnreachable(endpoint: description, waited: waiting, reason: reason)
                }
                logger.warning("no connection to PostgreSQL yet; trying again in 1 s", metadata: [
                    "server": "\(description)", "attempt": "\(attempt)", "error": "\(reason)",
                ])
                try await Task.sleep(for: .seconds(1))
            }
        }
    }
}

/// No connection to PostgreSQL within the time given: it did not answer, or refused the
/// caller (`reason` says which).
public struct PostgresUnreachable: Error, CustomStringConvertible {
    /// The URL without its password.
    public let endpoint: String
    public let waited: Duration
    public let reason: String

    /// `no connection to PostgreSQL at URL within N s: reason`; `option` names what sets N.
    public func message(option: String? = nil) -> String {
        let seconds = Double(waited.components.seconds) + Double(waited.components.attoseconds) / 1e18
        let shown = seconds == seconds.rounded() ? "\(Int(seconds))" : "\(seconds)"
        return "no connection to PostgreSQL at \(endpoint) within \(shown) s\(option.map { " (\($0))" } ?? ""): \(reason)"
    }

    public var description: String { message() }

    /// Why a connection failed, in words an operator can act on: PostgreSQL's own message
    /// (a wrong password, a missing database), else the network's (refused, unreachable).
    /// postgres-nio's own description of its errors hides both.
    static func reason(_ error: any Error) -> String {
        guard let error = error as? PSQLError else { return "\(error)" }
        if let message = error.serverInfo?[.message] { return message }
        if let underlying = error.underlying { return "\(underlying)" }
        return "\(error.code)"
    }
}

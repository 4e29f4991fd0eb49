import Logging
import PostgresNIO
import TiersyncCore

/// Tells every process on one PostgreSQL database that a tenant's data changed, through
/// PostgreSQL's LISTEN/NOTIFY: the cross-process counterpart of the hub's in-process change
/// notifier, so that a long-poll waiting on one hub process can wake for a push that landed on
/// another (issue 14). So far only the mechanism: nothing in the hub uses it yet.
///
/// One channel carries all tenants; each notification's payload is a tenant id. PostgreSQL
/// delivers a notification to the listeners of the same database only, once the sending
/// transaction commits (at once outside a transaction), and drops it when nobody listens:
/// a listener must still re-read what it waits for after (re)connecting.
public struct PostgresNotifier: Sendable {
    /// The channel tenants' changes are announced on unless another is given.
    public static let defaultChannel = "tiersync_changes"

    public let client: PostgresClient
    public let channel: String
    private let logger: Logger

    /// `channel`: 1 to 63 bytes (PostgreSQL's identifier length), no `"` or NUL (postgres-nio
    /// sends `LISTEN "channel"` as is).
    public init(client: PostgresClient, channel: String = PostgresNotifier.defaultChannel,
                logger: Logger = Logger(label: "tiersync.postgres.notifier")) throws(PostgresNotifierError) {
        guard !channel.isEmpty, channel.utf8.count <= 63, !channel.contains("\""), !channel.contains("\0") else {
            throw PostgresNotifierError(description: "invalid notification channel '\(channel)': 1 to 63 bytes, no '\"' or NUL")
        }
        self.client = client
        self.channel = channel
        self.logger = logger
    }

    /// Announces that `tenant` changed, to every listener on the channel in this database.
    public func signal(_ tenant: TenantID) async throws {
        _ = try await client.query("SELECT pg_notify(\(channel), \(tenant.rawValue))", logger: logger).collect()
    }

    /// Calls `onSignal` with each tenant announced on the channel for as long as `body` runs,
    /// listening on a connection leased from the client for that time. `onSignal` runs on the
    /// connection's event loop as each notification arrives, whatever the tasks of the process
    /// are doing: keep it short and non-blocking (hand the tenant on). Payloads that are not
    /// tenant ids are skipped. LISTEN is in force when `body` starts, so nothing announced
    /// after that is missed; the listener is removed (and UNLISTEN sent) when `body` returns or throws.
    public func listen<T: Sendable>(onSignal: @escaping @Sendable (TenantID) -> Void,
                                    while body: () async throws -> T) async throws -> T {
        try await client.withConnection { connection in
            let listening = connection.addListener(channel: channel) { _, notification in
                if let tenant = try? TenantID(validating: notification.payload) { onSignal(tenant) }
            }
            defer { listening.stop() }
            // Adding the listener queued postgres-nio's own LISTEN on this connection; a query
            // queued after it returns once that one is done, so LISTEN is in force.
            _ = try await connection.query(PostgresQuery(unsafeSQL: "LISTEN \"\(channel)\""), logger: logger).collect()
            return try await body()
        }
    }
}

public struct PostgresNotifierError: Error, CustomStringConvertible {
    public let description: String
}

extension PostgresNotifier {
    /// Listens on the channel until the task is cancelled, handing each announced tenant to
    /// `onSignal`, and listens again after a lost connection (with a growing pause, at most
    /// `maxPause`). After every (re)connection `onSignal` gets nil: what was announced while
    /// nobody listened is lost, so the caller must look again at everything it waits for.
    public func relay(maxPause: Duration = .seconds(5), onSignal: @escaping @Sendable (TenantID?) -> Void) async {
        var pause = Duration.milliseconds(100)
        while !Task.isCancelled {
            do {
                try await client.withConnection { connection in
                    // The sequence ends (or throws) when the connection is lost.
                    try await connection.listen(on: channel) { notifications in
                        onSignal(nil)
                        pause = .milliseconds(100)
                        for try await notification in notifications {
                            if let tenant = try? TenantID(validating: notification.payload) { onSignal(tenant) }
                        }
                    }
                }
            } catch {
                if Task.isCancelled { return }
                logger.warning("listening for other hub processes' changes failed; listening again in \(pause)", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: pause)
            pause = min(pause * 2, maxPause)
        }
    }
}

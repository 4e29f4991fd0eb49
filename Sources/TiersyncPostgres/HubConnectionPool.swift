import Foundation
import Logging
import PostgresNIO

/// How many PostgreSQL connections one hub process opens (`tiersync hub serve
/// --postgres-connections`).
///
/// A hub process holds one connection for as long as it runs (the LISTEN relay that wakes its
/// long-polls for pushes through other processes) and, while HQ's rules run for a tenant,
/// one more (the run's lease, an advisory lock in an open transaction, whose statements lease
/// others). Every other connection serves requests, whose statements are short and spend
/// their time on CPU, not waiting. More of them than the cores can run at once only queue
/// inside PostgreSQL, where they contend for the tenant's head lock, and every new one
/// starts a backend that plans the tenant's functions again: under a connect storm of
/// 5,000 agents on two processes (2 cores) a pool of 20 per process (postgres-nio's default)
/// gave p99 446–509 ms, pools of 4–8 113–391 ms (BENCHMARKS.md, 2026-12-05, afternoon).
/// Requests beyond the pool wait in the process for a connection instead, which costs nothing.
/// The pool has no minimum: connections open as requests need them and close after 10 idle
/// minutes (with a minimum, postgres-nio 1.33's pool trapped while PostgreSQL was
/// unreachable). Opening them all before serving was measured and made no difference to a
/// connect storm's p99 (BENCHMARKS.md, 2026-12-07, "fan-in on PostgreSQL again").
public enum HubConnectionPool {
    /// The fewest a process can run with: the relay's, the rules lease's, and one for the
    /// statements of requests and of the rules run. Fewer would leave a rules run, holding
    /// its lease, waiting for a connection that never comes free.
    public static let minimum = 3

    /// The most this option takes; PostgreSQL's own `max_connections` (default 100) bounds
    /// the sum over every hub process first.
    public static let maximum = 1_000

    /// The default: two per core of this machine for requests, plus the relay's and the rules
    /// lease's. Set `--postgres-connections` for PostgreSQL's machine when it is another,
    /// keeping the sum over every hub process under its `max_connections`.
    public static func defaultConnections(cores: Int = ProcessInfo.processInfo.activeProcessorCount) -> Int {
        max(minimum, 2 * max(1, cores) + 2)
    }

    /// What the server lets this user open at all: `max_connections`, less the slots kept
    /// for superusers (and, from PostgreSQL 16, `reserved_connections`) unless the user is
    /// one, capped by the role's and the database's own connection limits.
    public struct ServerLimit: Sendable, Equatable {
        public var maxConnections: Int
        public var reservedForSuperusers: Int
        public var reserved: Int
        public var isSuperuser: Bool
        /// -1: none (as PostgreSQL writes it).
        public var roleLimit: Int
        public var databaseLimit: Int
        /// Connections open on the server now, every user's (the one reading this left out).
        public var inUse: Int

        public init(maxConnections: Int, reservedForSuperusers: Int, reserved: Int, isSuperuser: Bool, roleLimit: Int, databaseLimit: Int, inUse: Int) {
            self.maxConnections = maxConnections
            self.reservedForSuperusers = reservedForSuperusers
            self.reserved = reserved
            self.isSuperuser = isSuperuser
            self.roleLimit = roleLimit
            self.databaseLimit = databaseLimit
            self.inUse = inUse
        }

        public var allowed: Int {
            var allowed = isSuperuser ? maxConnections : maxConnections - reservedForSuperusers - reserved
            if roleLimit >= 0 { allowed = min(allowed, roleLimit) }
            if databaseLimit >= 0 { allowed = min(allowed, databaseLimit) }
            return max(0, allowed)
        }

        /// Why `connections` cannot be had from this server, if they cannot.
        public func refusal(connections: Int) -> String? {
            guard connections > allowed else { return nil }
            var terms = ["max_connections \(maxConnections)"]
            if !isSuperuser, reservedForSuperusers > 0 { terms.append("less superuser_reserved_connections \(reservedForSuperusers)") }
            if !isSuperuser, reserved > 0 { terms.append("less reserved_connections \(reserved)") }
            if roleLimit >= 0 { terms.append("the role's CONNECTION LIMIT \(roleLimit)") }
            if databaseLimit >= 0 { terms.append("the database's CONNECTION LIMIT \(databaseLimit)") }
            return "--postgres-connections \(connections) is more than PostgreSQL lets this user open at all (\(allowed): "
                + terms.joined(separator: ", ") + "); lower it, or raise the server's limit"
        }
    }

    /// Reads the server's limits on one connection of its own (``PostgresEndpoint/firstContact(waiting:logger:_:)``:
    /// tried every second for up to `waiting`, each failure logged), so a pool that can never
    /// be filled is refused before it opens anything.
    public static func serverLimit(of endpoint: PostgresEndpoint, waiting: Duration, logger: Logger) async throws -> ServerLimit {
        try await endpoint.firstContact(waiting: waiting, logger: logger) { connection in
            let rows: [PostgresRow]
            do {
                rows = try await connection.query("""
                SELECT current_setting('max_connections')::int8, current_setting('superuser_reserved_connections')::int8,
                  COALESCE(current_setting('reserved_connections', true), '0')::int8,
                  r.rolsuper, r.rolconnlimit::int8, d.datconnlimit::int8,
                  (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid())
                FROM pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = current_database()
                """, logger: logger).collect()
            } catch {
                // postgres-nio's description of the error hides PostgreSQL's message.
                throw PostgresStoreError("PostgreSQL refused to say what connections it allows: \(PostgresUnreachable.reason(error))")
            }
            guard let row = rows.first else { throw PostgresStoreError("PostgreSQL did not say what connections it allows") }
            let (max, superuserSlots, reserved, superuser, role, database, inUse) = try row.decode((Int64, Int64, Int64, Bool, Int64, Int64, Int64).self)
            return ServerLimit(maxConnections: Int(max), reservedForSuperusers: Int(superuserSlots), reserved: Int(reserved), isSuperuser: superuser,
                               roleLimit: Int(role), databaseLimit: Int(database), inUse: Int(inUse))
        }
    }
}

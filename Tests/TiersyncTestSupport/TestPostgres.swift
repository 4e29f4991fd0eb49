import Foundation
import PostgresNIO
import TiersyncCore
import TiersyncPostgres

/// The PostgreSQL server tests run against: the cluster named by `TIERSYNC_TEST_POSTGRES_URL`
/// (`.ci/run` starts one with `ops/postgres/test-cluster.sh`; README, "Tests against
/// PostgreSQL"). Without it, tests that need it are skipped, visibly:
///
///     // Skipped, with this reason in the output, when TIERSYNC_TEST_POSTGRES_URL is unset.
///     @Test(.enabled(if: TestPostgres.isAvailable, "TIERSYNC_TEST_POSTGRES_URL is not set"))
///     func f() async throws {
///         try await TestPostgres.withFreshDatabase { database in … }
///     }
public enum TestPostgres {
    public static let environmentVariable = "TIERSYNC_TEST_POSTGRES_URL"

    /// The URL from the environment, if set and not empty.
    public static var url: String? {
        guard let value = ProcessInfo.processInfo.environment[environmentVariable], !value.isEmpty else { return nil }
        return value
    }

    public static var isAvailable: Bool { url != nil }

    /// The server's endpoint (its database is the one tests create theirs from, `tiersync_test`).
    public static func endpoint() throws -> PostgresEndpoint {
        guard let url else {
            throw TestFailure("\(environmentVariable) is not set: start a cluster (ops/postgres/test-cluster.sh start DIR) and export the URL it prints")
        }
        return try PostgresEndpoint(url: url)
    }

    /// Runs `body` with a database of its own, created empty for it (`tiersync_t_<random>`) and
    /// dropped when `body` returns or throws — connections still open to it are ended. A body
    /// that throws keeps its error; a drop that fails after a body that succeeded is an error.
    /// (A database rather than a schema: LISTEN/NOTIFY is scoped to a database, so tests
    /// running in parallel never hear each other's notifications.)
    public static func withFreshDatabase<T: Sendable>(_ body: (PostgresEndpoint) async throws -> T) async throws -> T {
        let server = try endpoint()
        let name = "tiersync_t_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(16).lowercased()
        return try await withPostgresClient(server) { admin in
            // A name we made (letters, digits, underscore): safe as an identifier.
            try await admin.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \"\(name)\""))
            let outcome: Result<T, any Error>
            do {
                outcome = .success(try await body(server.with(database: name)))
            } catch {
                outcome = .failure(error)
            }
            do {
                try await admin.query(PostgresQuery(unsafeSQL: "DROP DATABASE IF EXISTS \"\(name)\" WITH (FORCE)"))
            } catch {
                if case .success = outcome { throw TestFailure("could not drop test database \(name): \(String(reflecting: error))") }
            }
            return try outcome.get()
        }
    }

    /// Creates `tenant` straight in `endpoint`'s catalog and issues a one-time enrollment
    /// token for each of `nodes` (each under the tenant's root): what a test's hub processes
    /// then serve.
    public static func createTenant(_ tenant: TenantID, enrolling nodes: [NodeID], in endpoint: PostgresEndpoint) async throws -> [NodeID: String] {
        try await withPostgresClient(endpoint) { client in
            let catalog = try await PostgresCatalog(client: client)
            try await catalog.createTenant(tenant)
            var tokens: [NodeID: String] = [:]
            for node in nodes { tokens[node] = try await catalog.issueEnrollmentToken(tenant: tenant, node: node) }
            return tokens
        }
    }
}

import Foundation
import Logging
import PostgresNIO
import Testing
@testable import TiersyncPostgres
import TiersyncTestSupport

/// The hot statements of a sync request run as prepared statements (PostgresPreparedCall):
/// prepared once per connection under a name derived from their text, and prepared again on
/// a fresh connection when what they call was replaced by something of another shape.
@Suite("PostgreSQL: statements prepared once per connection")
struct PreparedStatementTests {
    /// A client with one connection, so every call below meets the statements the calls
    /// before it prepared.
    private func withOneConnection<T: Sendable>(_ endpoint: PostgresEndpoint, _ body: (PostgresClient) async throws -> T) async throws -> T {
        var configuration = endpoint.clientConfiguration()
        configuration.options.minimumConnections = 0
        configuration.options.maximumConnections = 1
        let client = PostgresClient(configuration: configuration)
        let running = Task { await client.run() }
        let outcome: Result<T, any Error>
        do { outcome = .success(try await body(client)) } catch { outcome = .failure(error) }
        running.cancel()
        await awaitEnd(of: running, within: .seconds(5))
        return try outcome.get()
    }

    private let logger = Logger(label: "tiersync.test")

    @Test("a statement's text is prepared once, under one name, and serves every later call with its own values",
          .enabled(if: TestPostgres.isAvailable, "TIERSYNC_TEST_POSTGRES_URL is not set"))
    func preparedOnce() async throws {
        try await TestPostgres.withFreshDatabase { endpoint in
            try await withOneConnection(endpoint) { client in
                var sums: [Int64] = []
                for value in [Int64(1), 41, -7] {
                    for row in try await client.preparedRows("SELECT \(value)::int8 + 1", logger: logger) {
                        sums.append(try row.decode(Int64.self))
                    }
                }
                #expect(sums == [2, 42, -6])
                let prepared = try await client.query("SELECT name, statement FROM pg_prepared_statements ORDER BY name", logger: logger)
                    .collect().map { try $0.decode((String, String).self) }
                #expect(prepared.count == 1)
                #expect(prepared.first?.0 == PreparedNames.name(for: "SELECT $1::int8 + 1"))
                #expect(prepared.first?.1 == "SELECT $1::int8 + 1")
            }
        }
    }

    @Test("a statement prepared before its function was replaced by one of another result type is prepared again on a fresh connection, not failed",
          .enabled(if: TestPostgres.isAvailable, "TIERSYNC_TEST_POSTGRES_URL is not set"))
    func preparedAgainAfterReplacement() async throws {
        try await TestPostgres.withFreshDatabase { endpoint in
            try await withOneConnection(endpoint) { client in
                _ = try await client.query("CREATE FUNCTION f() RETURNS TABLE (a int8) LANGUAGE sql AS $$ SELECT 7::int8 $$", logger: logger).collect()
                var first: [Int64] = []
                for row in try await client.preparedRows("SELECT * FROM f()", logger: logger) { first.append(try row.decode(Int64.self)) }
                #expect(first == [7])
                let backend = try await client.query("SELECT pg_backend_pid()", logger: logger).collect().first?.decode(Int32.self)
                // As reinstalling a tenant's functions does: dropped, then created again.
                _ = try await client.query("DROP FUNCTION f()", logger: logger).collect()
                _ = try await client.query("CREATE FUNCTION f() RETURNS TABLE (a text, b text) LANGUAGE sql AS $$ SELECT 'x', 'y' $$", logger: logger).collect()
                var second: [(String, String)] = []
                for row in try await client.preparedRows("SELECT * FROM f()", logger: logger) { second.append(try row.decode((String, String).self)) }
                #expect(second.count == 1)
                #expect(second.first?.0 == "x" && second.first?.1 == "y")
                // The connection that held the unusable statement was closed: its statements went with it.
                let after = try await client.query("SELECT pg_backend_pid()", logger: logger).collect().first?.decode(Int32.self)
                #expect(backend != nil && after != nil && backend != after)
            }
        }
    }
}

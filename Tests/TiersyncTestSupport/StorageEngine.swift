import Foundation
import Logging
import PostgresNIO
import TiersyncCore
import TiersyncPostgres
import TiersyncStore
import TiersyncStorage

/// The hub's storage engines, for tests written once and run on each (`@Test(arguments:
/// StorageEngine.testable)`). PostgreSQL is testable when `TIERSYNC_TEST_POSTGRES_URL` is
/// set (`ops/postgres/test-cluster.sh`, README "Tests against PostgreSQL"); without it the
/// PostgreSQL variants are left out, and ``StorageEngine/postgresSkipNote`` says so.
public enum StorageEngine: String, Sendable, CaseIterable {
    case sqlite, postgres

    /// The engines this run can test: SQLite always, PostgreSQL when a server is given.
    public static var testable: [StorageEngine] { TestPostgres.isAvailable ? [.sqlite, .postgres] : [.sqlite] }

    public static let postgresSkipNote = "\(TestPostgres.environmentVariable) is not set: the PostgreSQL variants are skipped (ops/postgres/test-cluster.sh; README)"

    /// How a test's arguments name it (`CustomTestStringConvertible`, in the test targets).
    public var testDescription: String { rawValue }

    /// Runs `body` with the PostgreSQL database a hub of this engine keeps its data in (a
    /// fresh one, dropped afterwards), or nil for SQLite (files in the hub's directory).
    public func withDatabase<T: Sendable>(_ body: (PostgresEndpoint?) async throws -> T) async throws -> T {
        switch self {
        case .sqlite: try await body(nil)
        case .postgres: try await TestPostgres.withFreshDatabase { try await body($0) }
        }
    }

    /// Runs `body` with a fresh, empty hub tenant store of this engine for `tenant`, whose
    /// root is `root`, and removes it afterwards.
    public func withTenantStore<T: Sendable>(tenant: TenantID = "acme", root: NodeID = "hq", clock: HybridLogicalClock = HybridLogicalClock(),
                                             quarantineQuota: QuarantineQuota? = nil,
                                             _ body: (any HubTenantStore) async throws -> T) async throws -> T {
        switch self {
        case .sqlite:
            let dir = try TempDir()
            let catalog = try HubCatalog(directory: dir.path + "/hub")
            _ = try catalog.createTenant(tenant, root: root)
            return try await body(try TenantStores(catalog: catalog, clock: clock, quarantineQuota: quarantineQuota).store(for: tenant))
        case .postgres:
            return try await TestPostgres.withFreshDatabase { endpoint in
                try await withPostgresClient(endpoint) { client in
                    try await body(PostgresTenantStore(client: client, tenant: tenant, clock: clock, quarantineQuota: quarantineQuota, rootOf: { _ in root }))
                }
            }
        }
    }
}

import Logging
import PostgresNIO
import Synchronization
import TiersyncCore
import TiersyncStorage

/// The tenants' stores of a hub on PostgreSQL: one ``PostgresTenantStore`` per tenant,
/// made on first use (no I/O: the tenant's schema is created when the store is first used)
/// and kept. Every process of the hub makes its own; they share nothing but the database.
public final class PostgresTenantStores: Sendable {
    public let client: PostgresClient
    public let catalog: PostgresCatalog
    public let schema: Schema
    public let clock: HybridLogicalClock
    private let logger: Logger
    /// The quarantine's bounds each store writes into its schema (``PostgresTenantStore``).
    private let quarantineQuota: QuarantineQuota?
    private let open = Mutex<[TenantID: PostgresTenantStore]>([:])

    public init(client: PostgresClient, catalog: PostgresCatalog, schema: Schema = DomainSchema.schema,
                clock: HybridLogicalClock = HybridLogicalClock(), logger: Logger = Logger(label: "tiersync.postgres.store"),
                quarantineQuota: QuarantineQuota? = nil) {
        self.client = client
        self.quarantineQuota = quarantineQuota
        self.catalog = catalog
        self.schema = schema
        self.clock = clock
        self.logger = logger
    }

    /// The store of `tenant`. A tenant the catalog does not know fails at first use.
    public func store(for tenant: TenantID) -> PostgresTenantStore {
        open.withLock { cache in
            if let store = cache[tenant] { return store }
            let catalog = self.catalog
            let store = PostgresTenantStore(client: client, tenant: tenant, schema: schema, clock: clock, logger: logger,
                                            quarantineQuota: quarantineQuota, rootOf: { try await catalog.root(of: $0) })
            cache[tenant] = store
            return store
        }
    }

    /// The tenants whose stores this process made.
    public func openTenants() -> [TenantID] {
        open.withLock { Array($0.keys) }
    }

    /// The catalog's tenants whose schema exists (a tenant that never received anything
    /// holds nothing to evaluate: HQ's rules runner skips it rather than create its schema).
    public func tenantsWithData() async throws -> [TenantID] {
        let tenants = try await catalog.tenants().map(\.tenant)
        let names = tenants.map { PostgresTenantSchema(tenant: $0).name }
        var existing: Set<String> = []
        for try await name in try await client.query("SELECT nspname::text FROM pg_namespace WHERE nspname = ANY(\(names)::text[])",
                                                     logger: logger).decode(String.self) {
            existing.insert(name)
        }
        return tenants.filter { existing.contains(PostgresTenantSchema(tenant: $0).name) }
    }
}

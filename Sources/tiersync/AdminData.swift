import Foundation
import Logging
import TiersyncCore
import TiersyncPostgres
import TiersyncStore

/// Where `tiersync node serve` notes its store (`--db`) in its `--data` directory, so that
/// admin commands given a country's `--data` find the country's records: its quarantine,
/// and its dealers' governance status. The directory itself holds only the directory of
/// nodes the country mirrors from HQ (`hub.sqlite`), never records.
enum CountryStorePointer {
    static let fileName = "country-store.path"

    static func write(data: String, db: String) throws {
        let absolute = URL(fileURLWithPath: db).standardizedFileURL.path
        try (absolute + "\n").write(toFile: data + "/" + fileName, atomically: true, encoding: .utf8)
    }

    static func read(data: String) -> String? {
        (try? String(contentsOfFile: data + "/" + fileName, encoding: .utf8))
            .map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }.flatMap { $0.isEmpty ? nil : $0 }
    }
}

/// A tenant as an admin command that only reads sees it: in a hub's `--data` directory or
/// `--postgres` database, or in a country node's `--data` directory. Opened without
/// creating anything (on PostgreSQL the catalog's schema is made if missing, as
/// `hub serve --postgres` would; it holds no tenant then, which is what the command reports).
struct TenantView {
    enum Place: Equatable {
        case hub
        /// A country node's directory: its mirror of HQ's directory, rooted at the country.
        case country(NodeID)
    }

    let catalog: any HubCatalogStore
    let tenant: TenantID
    let place: Place
    /// Where the tenant's records are: the hub's tenant store, or the country's own
    /// store. Nil when a SQLite hub has not opened the tenant's database yet (it has
    /// received nothing), or when records were not asked for.
    let store: (any HubTenantStore)?
    /// The store's file, on SQLite.
    let storePath: String?
}

/// Where a hub keeps its data, as an admin command was told: `--data DIR` (the embedded
/// SQLite engine) or `--postgres URL`. ``Admin/HubData`` gives one; `admin quarantine`, with
/// its own `--db`, builds one from its options.
enum HubLocation: Sendable, CustomStringConvertible {
    case sqlite(directory: String)
    case postgres(url: String)

    /// For messages: the directory, or the URL with its password masked.
    var description: String {
        switch self {
        case .sqlite(let directory): directory
        case .postgres(let url): (try? PostgresEndpoint(url: url))?.description ?? "the PostgreSQL database given"
        }
    }

    /// Opens the hub and runs `body` with it; on PostgreSQL the connection pool lives exactly
    /// as long as `body`. `existing`: the SQLite directory must already hold a hub (a read
    /// command creates nothing); without it, the directory and its catalog are created if
    /// missing, as `hub serve` would. On PostgreSQL the catalog's schema is created or
    /// upgraded either way (``PostgresCatalog``), which is what `hub serve --postgres` does
    /// at start: an admin command may run before the hub ever did.
    func open<T: Sendable>(existing: Bool, _ body: (OpenedHub) async throws -> T) async throws -> T {
        switch self {
        case .sqlite(let directory):
            let catalog = existing ? try ExistingData(data: directory).existingCatalog() : try HubCatalog(directory: directory)
            let stores = TenantStores(catalog: catalog)
            return try await body(OpenedHub(catalog: SQLiteCatalog(catalog), store: { try stores.store(for: $0) }, sqlite: catalog, location: self))
        case .postgres(let url):
            let endpoint: PostgresEndpoint
            do { endpoint = try PostgresEndpoint(url: url) } catch { throw CLIError(error.description) }
            // The first contact on a connection of its own, which says why it fails at once,
            // rather than the pool's, which retries for as long as a query waits.
            do {
                try await endpoint.firstContact(waiting: Self.connectTimeout, logger: Logger(label: "tiersync.postgres")) { _ in }
            } catch let error as PostgresUnreachable {
                throw CLIError(error.message())
            }
            return try await withPostgresClient(endpoint) { client in
                let catalog = try await PostgresCatalog(client: client)
                let stores = PostgresTenantStores(client: client, catalog: catalog)
                return try await body(OpenedHub(catalog: catalog, store: { stores.store(for: $0) }, sqlite: nil, location: self))
            }
        }
    }

    /// How long an admin command waits for a first connection to PostgreSQL.
    static let connectTimeout: Duration = .seconds(15)

    /// Runs `body` with `tenant` as a read command sees it (``TenantView``), creating nothing
    /// on SQLite. A tenant that is not there is an error naming those that are; `hint` ends
    /// the error for a country whose store cannot be found: what to run instead.
    func withView<T: Sendable>(of tenant: String, records: Bool, hint: String = "",
                               _ body: (TenantView) async throws -> T) async throws -> T {
        switch self {
        case .sqlite(let directory):
            return try await body(try await ExistingData(data: directory).view(of: tenant, records: records, hint: hint))
        case .postgres:
            return try await open(existing: true) { hub in
                let tenantID = try await hub.hqTenant(tenant)
                // A tenant's schema is made at its store's first use, which `hub serve` makes
                // anyway at its first request for the tenant: there is no "not opened yet" here.
                return try await body(TenantView(catalog: hub.catalog, tenant: tenantID, place: .hub,
                                                 store: records ? try hub.store(tenantID) : nil, storePath: nil))
            }
        }
    }
}

/// A hub as an admin command opened it, on either engine: its catalog and its tenants'
/// stores, behind the storage seam.
struct OpenedHub {
    let catalog: any HubCatalogStore
    /// The store of a tenant (on SQLite, its database is opened, and created if missing).
    let store: (TenantID) throws -> any HubTenantStore
    /// The SQLite catalog itself, when the hub is on SQLite: what only that engine has.
    let sqlite: HubCatalog?
    let location: HubLocation

    /// `tenant`, which must be a tenant of this hub whose root is HQ: a country's `--data`
    /// holds a mirror of HQ's directory, rooted at the country, where `action` would be
    /// overwritten within seconds (or, for governance, is not the publisher's place).
    /// An unknown tenant is an error naming those that are.
    func hqTenant(_ tenant: String, action: String = "run this at HQ, on the hub's --data directory") async throws -> TenantID {
        let tenantID = try TenantID(validating: tenant)
        if let move = catalog.movedAway(tenantID) { throw CLIError(move.refusal(tenantID) + " (with --postgres URL, if it moved to PostgreSQL)") }
        guard let root = try await catalog.root(of: tenantID) else {
            let known = try await catalog.tenants().map(\.tenant.rawValue).sorted()
            throw CLIError("no tenant '\(tenant)' in \(location) (\(known.isEmpty ? "it has no tenants" : "tenants there: " + known.joined(separator: ", ")))")
        }
        guard let rootNode = try await catalog.node(root, of: tenantID), rootNode.parent == nil else {
            throw CLIError("\(location) is the --data directory of country node '\(root)', a mirror of HQ's directory: \(action)")
        }
        return tenantID
    }
}

extension Admin.HubData {
    /// Opens the hub (on SQLite, creating the directory and its catalog if missing, as
    /// `hub serve` would) and runs `body` with its catalog and its tenants' stores.
    func withHub<T: Sendable>(_ body: (any HubCatalogStore, (TenantID) throws -> any HubTenantStore) async throws -> T) async throws -> T {
        try await location.open(existing: false) { hub in try await body(hub.catalog, hub.store) }
    }

    /// Opens an existing hub (created nothing: a SQLite `--data` must hold `hub.sqlite`) and
    /// runs `body` with it and `tenant`, which must be one of its tenants with HQ as root
    /// (``OpenedHub/hqTenant(_:action:)``): where access and governance are decided.
    func withHQ<T: Sendable>(tenant: String, action: String = "run this at HQ, on the hub's --data directory",
                             _ body: (OpenedHub, TenantID) async throws -> T) async throws -> T {
        if case .sqlite(let directory) = location, !FileManager.default.fileExists(atPath: directory + "/hub.sqlite") {
            throw CLIError("\(directory) holds no hub data (no hub.sqlite): give the --data directory of `tiersync hub serve`")
        }
        return try await location.open(existing: true) { hub in
            try await body(hub, try await hub.hqTenant(tenant, action: action))
        }
    }

    /// The release key's file: `given`, or `DATA/keys/TENANT.release.key` on SQLite. A hub on
    /// PostgreSQL has no data directory to hold it (its processes never read it), so the
    /// file must be named.
    func releaseKeyPath(_ given: String?, tenant: TenantID, option: String = "--key") throws -> String {
        if let given { return given }
        guard let data else {
            throw CLIError("with --postgres there is no data directory to keep the release key in: give \(option) FILE")
        }
        return Admin.defaultReleaseKeyPath(data: data, tenant: tenant)
    }
}

/// A hub's or country node's data directory, for commands that only read: nothing is
/// created (``HubLocation/open(existing:_:)`` without `existing` creates the directory and its catalog).
struct ExistingData {
    let data: String

    /// The catalog of an existing hub's (or country node's) data directory.
    func existingCatalog() throws -> HubCatalog {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: data, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw CLIError("no directory \(data): give the --data directory of `tiersync hub serve` (or of `tiersync node serve`, for a country)")
        }
        guard FileManager.default.fileExists(atPath: data + "/hub.sqlite") else {
            throw CLIError("\(data) holds no hub data (no hub.sqlite): give the --data directory of `tiersync hub serve` (or of `tiersync node serve`, for a country)")
        }
        return try HubCatalog(directory: data)
    }

    /// Finds `tenant` in the data directory, and with `records`, the store holding its
    /// records there. Creates nothing; a tenant that is not there is an error naming those
    /// that are. `hint` ends the error for a country whose store cannot be found: what to
    /// run instead.
    func view(of tenant: String, records: Bool, hint: String = "") async throws -> TenantView {
        let catalog = try existingCatalog()
        let tenantID = try TenantID(validating: tenant)
        guard let root = try catalog.root(of: tenantID) else {
            let known = try catalog.tenants().map(\.tenant.rawValue).sorted()
            throw CLIError("no tenant '\(tenant)' in \(data) (\(known.isEmpty ? "it has no tenants" : "tenants there: " + known.joined(separator: ", ")))")
        }
        // A hub created the tenant with its root; a country's mirror is rooted at the
        // country, whose parent is HQ (and which is missing from a mirror HQ emptied).
        if let rootNode = try await catalog.node(root, of: tenantID), rootNode.parent == nil {
            let path = catalog.tenantDatabasePath(tenantID)
            let store = records && FileManager.default.fileExists(atPath: path) ? try NodeStore(path: path) : nil
            return TenantView(catalog: SQLiteCatalog(catalog), tenant: tenantID, place: .hub, store: store, storePath: path)
        }
        guard records else { return TenantView(catalog: SQLiteCatalog(catalog), tenant: tenantID, place: .country(root), store: nil, storePath: nil) }
        guard let path = CountryStorePointer.read(data: data), FileManager.default.fileExists(atPath: path) else {
            throw CLIError("""
                \(data) is the --data directory of country node '\(root)': it holds only the directory the country mirrors \
                from HQ; the country's records are in its own store, the --db file of its `tiersync node serve`\(Self.pointerHint(data))\(hint)
                """)
        }
        let store = try NodeStore(path: path)
        guard let identity = try store.identity(), identity.tenant == tenantID, identity.node == root else {
            throw CLIError("\(path), named in \(data)/\(CountryStorePointer.fileName), is not the store of node '\(root)' of tenant '\(tenant)'")
        }
        return TenantView(catalog: SQLiteCatalog(catalog), tenant: tenantID, place: .country(root), store: store, storePath: path)
    }

    private static func pointerHint(_ data: String) -> String {
        CountryStorePointer.read(data: data).map { " (\(data)/\(CountryStorePointer.fileName) names \($0), which does not exist)" }
            ?? " (a country started by this version notes it in \(data)/\(CountryStorePointer.fileName))"
    }
}

import Foundation
import TiersyncCore
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

/// A tenant as an admin command that only reads sees it in a `--data` directory: a hub's,
/// or a country node's. Opened without creating anything.
struct TenantView {
    enum Place: Equatable {
        case hub
        /// A country node's directory: its mirror of HQ's directory, rooted at the country.
        case country(NodeID)
    }

    let catalog: HubCatalog
    let tenant: TenantID
    let place: Place
    /// Where the tenant's records are: the hub's tenant database, or the country's own
    /// store. Nil when the hub has not opened the tenant's database yet (it has received
    /// nothing), or when records were not asked for.
    let store: NodeStore?
    let storePath: String?
}

extension Admin.HubData {
    /// The data directory as read-only commands use it.
    var existing: ExistingData { ExistingData(data: data) }
}

/// A hub's or country node's data directory, for commands that only read: nothing is
/// created (``Admin/HubData/catalog()`` creates the directory and its catalog).
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
            return TenantView(catalog: catalog, tenant: tenantID, place: .hub, store: store, storePath: path)
        }
        guard records else { return TenantView(catalog: catalog, tenant: tenantID, place: .country(root), store: nil, storePath: nil) }
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
        return TenantView(catalog: catalog, tenant: tenantID, place: .country(root), store: store, storePath: path)
    }

    private static func pointerHint(_ data: String) -> String {
        CountryStorePointer.read(data: data).map { " (\(data)/\(CountryStorePointer.fileName) names \($0), which does not exist)" }
            ?? " (a country started by this version notes it in \(data)/\(CountryStorePointer.fileName))"
    }
}

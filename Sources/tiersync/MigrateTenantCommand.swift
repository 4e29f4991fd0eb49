import ArgumentParser
import Foundation
import Logging
import PostgresNIO
import TiersyncCore
import TiersyncPostgres
import TiersyncStorage
import TiersyncStore

extension Admin {
    struct MigrateTenant: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "migrate-tenant",
            abstract: "Move a tenant from a SQLite hub (--data) into PostgreSQL (--to-postgres), with digests before and after.",
            discussion: """
            Stop the SQLite hub first: the tenant is read as it stands. Everything moves as it is \
            stored: the change log with its positions (so every node's cursors stay valid and its \
            agent continues without a resync), records, conflicts, quarantine, governance \
            documents, KPI settings, and the catalog entries (nodes, tokens and credential \
            digests, so every node keeps its credential), and the tenant's administration \
            (administrators, their tokens, the audit log, four-eyes and its release requests). \
            The nodes' last lag reports do not move: they report again within minutes. The tenant's data is written first and \
            compared by digest; only when the digests are equal is the tenant added to the \
            PostgreSQL catalog, so a hub on PostgreSQL serves it only complete. The target must \
            not hold the tenant yet. Then start the hub with --postgres and point the nodes (or \
            the load balancer) at it.
            """)

        @Option(help: "The SQLite hub's data directory.") var data: String
        @Option(help: "The tenant to move.") var tenant: String
        @Option(name: .customLong("to-postgres"), help: "postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE to move it to.")
        var postgres: String
        @Option(help: "Rows per page read and written.") var pageSize = 5_000

        func validate() throws {
            guard pageSize > 0, pageSize <= 100_000 else { throw ValidationError("--page-size must be 1…100000") }
        }

        func run() async throws {
            let tenantID = try TenantID(validating: tenant)
            let endpoint = try PostgresEndpoint(url: postgres)
            // Both ends checked before the source is read (its digest takes a while): a hub
            // directory that is there, a PostgreSQL that answers (its first contact says why not).
            // Nothing may change the tenant while it is read: a hub serving the directory
            // would go on accepting pushes the move leaves behind.
            guard FileManager.default.fileExists(atPath: data + "/hub.sqlite") else { throw CLIError("\(data) holds no hub data (no hub.sqlite)") }
            guard let lock = try HubDirectoryLock.acquire(directory: data) else {
                throw CLIError("a hub is serving \(data) (it holds \(data)/hub.lock): stop it first; migrate-tenant moves the tenant as it stands")
            }
            defer { withExtendedLifetime(lock) {} }
            let catalog = try ExistingData(data: data).existingCatalog()
            do {
                try await endpoint.firstContact(waiting: HubLocation.connectTimeout, logger: Logger(label: "tiersync.postgres")) { _ in }
            } catch let error as PostgresUnreachable {
                throw CLIError(error.message())
            }
            guard let entries = try catalog.exportTenant(tenantID) else { throw CLIError("no tenant '\(tenant)' in \(data)") }
            if let move = catalog.movedAway(tenantID) {
                throw CLIError("\(move.refusal(tenantID)); it was moved from \(data) before")
            }
            let path = catalog.tenantDatabasePath(tenantID)
            // A tenant whose nodes enrolled has a database; missing, it was lost (a directory
            // restored without it), and moving it would serve its nodes an empty tenant
            // (helper 99: "digests equal", 0 records, 4 nodes moved).
            if !FileManager.default.fileExists(atPath: path), !entries.credentials.isEmpty {
                throw CLIError("no database for tenant '\(tenant)' at \(path), though \(entries.credentials.count) node credential(s) were issued for it: restore that file first; migrate-tenant moves the tenant as it stands")
            }
            // A tenant no node has reached yet has no database: made here as the hub makes it
            // at its first request (empty, the root's identity), so its administration moves.
            // The target first: refused there, the source is left as it was (helper 89: a refusal
            // for a tenant PostgreSQL held already came after the folded entries were written
            // back into the source's log).
            try await withPostgresClient(endpoint) { client in try await Self.checkTarget(client, tenantID, root: entries.tenant.root, endpoint) }
            let source = try TenantStores(catalog: catalog).store(for: tenantID)
            // A hub on PostgreSQL serves its feed from the log alone: entries compaction
            // folded into their records go back into the log first.
            let unfolded = try source.unfoldState()
            if unfolded > 0 { print("\(unfolded) folded log entries written back into the log of \(path)") }
            let before = try await TenantDigest.of(source, pageSize: pageSize)
            print("source (SQLite \(path)): \(before)")

            // No background logger: the pool's warning that a lease came before its run()
            // started (harmless, the lease waits) was printed by every migration.
            try await withPostgresClient(endpoint) { client in
                let (target, store) = try await Self.checkTarget(client, tenantID, root: entries.tenant.root, endpoint)
                for table in MigrationTable.allCases {
                    var offset = 0
                    while true {
                        let rows = try await source.exportRows(table, offset: offset, limit: pageSize)
                        try await store.importRows(table, rows)
                        offset += rows.count
                        if rows.count < pageSize { break }
                    }
                    print("  \(table.rawValue): \(offset) rows")
                }
                var offset = 0
                while true {
                    let records = try await source.exportRecords(offset: offset, limit: pageSize)
                    try await store.importRecords(records)
                    offset += records.count
                    if records.count < pageSize { break }
                }
                print("  records: \(offset)")
                try await store.finishImport(settings: try await source.exportSettings(), head: try await source.feedHead())
                // The log's histories: the agents' cursors name one, and one PostgreSQL did not
                // know would send every agent back to the start of the log.
                let histories = try source.logHistories()
                try await store.importLogHistories(histories)
                print("  log histories: \(histories.count)")

                let after = try await TenantDigest.of(store, pageSize: pageSize)
                print("target (PostgreSQL \(endpoint), schema \(store.tenantSchema.name)): \(after)")
                guard after == before else {
                    throw CLIError("the digests differ: the tenant was NOT added to the PostgreSQL catalog; drop schema \(store.tenantSchema.name) and report this")
                }
                try await target.importTenant(entries)
                guard try await target.exportTenant(tenantID) == entries else {
                    throw CLIError("the catalog entries read back differ from those moved")
                }
                // The old directory keeps the tenant's files, and its hub refuses the tenant from
                // now on (410 tenant_moved), naming where it went.
                // Named without the database's address: the answer reaches the tenant's nodes,
                // which need the new hub's URL from their operator, not PostgreSQL's.
                try catalog.markMoved(tenantID, to: "a hub on PostgreSQL")
                let admin = entries.administration
                print("moved tenant \(tenant): digests equal; \(entries.nodes.count) nodes and \(entries.credentials.count) credentials in the catalog; "
                      + "\(admin.users.count) administrators, \(admin.tokens.count) of their tokens, \(admin.audit.count) audit entries, "
                      + "\(admin.releaseRequests.count) release requests (numbered anew), settings: \(admin.settings.isEmpty ? "none" : admin.settings.keys.sorted().joined(separator: ", "))")
                print("\(data) keeps the tenant's files as they were; a hub serving it answers the tenant's nodes and administrators 410 tenant_moved from now on")
            }
        }
    
        /// The PostgreSQL catalog and the tenant's store there, once it is known that the
        /// tenant can move in: no such tenant in the catalog, and its schema empty.
        static func checkTarget(_ client: PostgresClient, _ tenantID: TenantID, root: NodeID, _ endpoint: PostgresEndpoint) async throws
            -> (catalog: PostgresCatalog, store: PostgresTenantStore) {
            let target = try await PostgresCatalog(client: client)
            guard try await target.root(of: tenantID) == nil else {
                throw CLIError("tenant '\(tenantID)' exists in \(endpoint) already; migrate-tenant moves a tenant only into a database without it")
            }
            let store = PostgresTenantStore(client: client, tenant: tenantID, rootOf: { _ in root })
            guard try await store.isEmpty() else {
                throw CLIError("schema \(store.tenantSchema.name) in \(endpoint) holds data already (a migration that stopped half-way?): drop it (DROP SCHEMA \"\(store.tenantSchema.name)\" CASCADE) and run again")
            }
            return (target, store)
        }
    }
}

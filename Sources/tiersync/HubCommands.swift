import ArgumentParser
import Foundation
import Logging
import TiersyncAgent
import PostgresNIO
import TiersyncCore
import TiersyncPostgres
import TiersyncServer
import TiersyncStore
import TiersyncStorage

struct Hub: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the HQ hub.", subcommands: [Serve.self])

    struct Serve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Serve every tenant's nodes over HTTPS until SIGTERM or SIGINT.",
            discussion: """
            TLS is always on: give --cert and --key, or --dev-certs DIR to create a local CA and a \
            loopback certificate there (clients then trust DIR/ca.pem).

            Storage: --data DIR keeps the catalog and one SQLite database per tenant in DIR (one \
            process). --postgres URL keeps everything in that PostgreSQL database instead; any \
            number of hub processes may then serve it at once behind a load balancer (see \
            docs/OPERATIONS.md, "The hub on PostgreSQL").
            """)

        @Option(help: "Directory holding hub.sqlite and one database per tenant (the embedded engine).")
        var data: String?
        @Option(help: "postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE: keep the hub in PostgreSQL instead of --data.")
        var postgres: String?
        @OptionGroup var listener: ListenerOptions
        @Option(help: "Seconds a change may be stamped ahead of the hub's clock.")
        var maxSkew: UInt64 = 60
        @Option(help: "Seconds between evaluations of HQ's escalation and proactive-contact rules over every tenant (0: never).")
        var rulesInterval = 30.0
        @Option(help: "Directory of TENANT.release.key files, so administrators can publish and approve releases in the console and the admin API (default with --data: DATA/keys).")
        var releaseKeys: String?
        @Option(help: "Days the tenant stores keep superseded log entries and tombstones; a node away longer must re-bootstrap (docs/PRIVACY.md, \"Bounded storage\"; SQLite only).")
        var retentionDays = 30.0
        @Option(help: ArgumentHelp("PostgreSQL connections this process keeps open (default: two per core of this machine plus two, \(HubConnectionPool.defaultConnections()) here; at least \(HubConnectionPool.minimum)), and one more that watches whether the database can be reached.",
                                   valueName: "n"))
        var postgresConnections: Int?
        @Option(help: ArgumentHelp("Seconds to wait at start for PostgreSQL to answer (asking every second, each failure logged) before giving up.",
                                   valueName: "seconds"))
        var postgresWait = 60.0
        @Option(help: ArgumentHelp("MiB of refused changes each tenant keeps per sending node (past it a refusal is answered, not kept; docs/OPERATIONS.md, \"Quarantine\").",
                                   valueName: "MiB"))
        var quarantineMibPerNode = Double(QuarantineQuota.default.maxBytesPerSender >> 20)
        @Option(help: ArgumentHelp("MiB of refused changes each tenant keeps in all.", valueName: "MiB"))
        var quarantineMib = Double(QuarantineQuota.default.maxBytes >> 20)
        @OptionGroup var logging: LoggingOptions

        /// The quarantine's bounds the options give.
        var quarantineQuota: QuarantineQuota {
            QuarantineQuota(maxBytesPerSender: Int64(quarantineMibPerNode * 1_048_576), maxBytes: Int64(quarantineMib * 1_048_576))
        }

        func validate() throws {
            guard (data == nil) != (postgres == nil) else {
                throw ValidationError("give exactly one of --data DIR (SQLite) and --postgres URL (PostgreSQL)")
            }
            if let postgresConnections {
                guard postgres != nil else { throw ValidationError("--postgres-connections applies to a hub on PostgreSQL (--postgres URL)") }
                guard (HubConnectionPool.minimum...HubConnectionPool.maximum).contains(postgresConnections) else {
                    throw ValidationError("""
                        --postgres-connections must be from \(HubConnectionPool.minimum) to \(HubConnectionPool.maximum), got \(postgresConnections) \
                        (one connection listens for other processes' pushes and one holds the rules run's lease, so fewer could stall the rules run)
                        """)
                }
            }
            guard (0...3_600).contains(postgresWait) else {
                throw ValidationError("--postgres-wait must be a number of seconds from 0 to 3600, got \(postgresWait)")
            }
            for (name, value) in [("--quarantine-mib-per-node", quarantineMibPerNode), ("--quarantine-mib", quarantineMib)] {
                guard value.isFinite, (0...1_048_576).contains(value) else {
                    throw ValidationError("\(name) must be a number of MiB from 0 to 1048576, got \(value)")
                }
            }
            guard RetentionPolicy(days: retentionDays) != nil else {
                throw ValidationError("--retention-days must be a number of days above 0 and at most \(Int(RetentionPolicy.maximumDays)), got \(retentionDays)")
            }
            // Said, not silently ignored: a hub on PostgreSQL keeps the default horizon for now.
            if postgres != nil, retentionDays != 30 {
                throw ValidationError("--retention-days applies to a hub on SQLite (--data); a hub on PostgreSQL keeps 30 days for now")
            }
        }

        func run() async throws {
            try logging.bootstrap()
            if let postgres {
                try await runOnPostgres(try PostgresEndpoint(url: postgres))
                return
            }
            // A mistyped --data starts an empty hub that refuses every node's credential
            // (helper 71): said at start, where the operator looks. (Serving a new directory
            // and creating tenants beside it with `admin create-tenant` is a way to start.)
            var isDirectory: ObjCBool = false
            let isNew = !FileManager.default.fileExists(atPath: data! + "/hub.sqlite")
            if FileManager.default.fileExists(atPath: data!, isDirectory: &isDirectory), !isDirectory.boolValue {
                throw CLIError("--data \(data!) is a file, not a hub's directory")
            }
            var configuration = try listener.configuration(dataDirectory: data!)
            configuration.maxClockSkewMillis = maxSkew * 1000
            configuration.releaseKeyDirectory = releaseKeys ?? data! + "/keys"
            configuration.retention = RetentionPolicy(days: retentionDays)
            configuration.limits.quarantine = quarantineQuota
            // Held while this process serves the directory (the kernel lets go when it ends);
            // taken before the catalog is opened, which may migrate it.
            guard let lock = try HubDirectoryLock.acquire(directory: configuration.dataDirectory) else {
                throw CLIError("another hub serves \(configuration.dataDirectory) already (it holds \(configuration.dataDirectory)/hub.lock; or a country node, whose directory it is): one process serves a SQLite hub's data; several hub processes need PostgreSQL (--postgres)")
            }
            defer { withExtendedLifetime(lock) {} }
            if isNew {
                Logger(label: "tiersync.hub").warning("""
                    no hub at \(data!) yet: serving a new, empty one (no tenants; its nodes' credentials are refused). \
                    If this is not the directory meant, stop and check --data; else create tenants with `tiersync admin create-tenant --data \(data!)`
                    """)
            }
            let catalog = try HubCatalog(directory: configuration.dataDirectory)
            // The stores the hub serves, shared with HQ's rules runner (HQ has no agent: its
            // escalation and proactive rules run in this process).
            let stores = TenantStores(catalog: catalog,
                                      clock: HybridLogicalClock(maxSkewMillis: configuration.maxClockSkewMillis), checkpointing: .byOwner,
                                      quarantineQuota: configuration.limits.quarantine)
            let hub = HubServer(configuration: configuration, directory: CatalogDirectory(stores: stores))
            let rules = rulesInterval > 0 ? Duration.milliseconds(Int64(rulesInterval * 1000)) : nil
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await hub.run(handleSignals: true) { port in listener.announce("hub", port: port) } }
                if let rules {
                    group.addTask { await HubRulesRunner(stores: stores).run(every: rules) { await hub.notifyChanges(for: $0) } }
                }
                // The hub ends on SIGTERM/SIGINT; the rules runner with it.
                try await group.next()
                group.cancelAll()
                try await group.waitForAll()
            }
        }

        /// One hub process over PostgreSQL: stateless, so several may serve one database.
        /// Long-polls wake for pushes that land on other processes through LISTEN/NOTIFY.
        /// HQ's escalation and proactive rules run in every process, each tenant's in one
        /// process at a time (an advisory lock).
        private func runOnPostgres(_ endpoint: PostgresEndpoint) async throws {
            var configuration = try listener.configuration(dataDirectory: "")
            configuration.maxClockSkewMillis = maxSkew * 1000
            configuration.releaseKeyDirectory = releaseKeys
            configuration.limits.quarantine = quarantineQuota
            // A fixed pool the server can never fill would retry for good; refused before it opens.
            let connections = postgresConnections ?? HubConnectionPool.defaultConnections()
            let logger = Logger(label: "tiersync.postgres")
            let limit: HubConnectionPool.ServerLimit
            do {
                limit = try await HubConnectionPool.serverLimit(of: endpoint, waiting: .milliseconds(Int64(postgresWait * 1000)), logger: logger)
            } catch let error as PostgresUnreachable {
                throw CLIError(error.message(option: "--postgres-wait"))
            }
            if let refusal = limit.refusal(connections: connections) { throw CLIError(refusal) }
            if connections > limit.allowed - limit.inUse {
                logger.warning("PostgreSQL has fewer free connections than this process keeps open: it waits for the rest", metadata: [
                    "connections": "\(connections)", "allowed": "\(limit.allowed)", "in_use": "\(limit.inUse)",
                ])
            }
            try await withPostgresClient(endpoint, connections: connections, backgroundLogger: logger) { client in
                let catalog = try await PostgresCatalog(client: client)
                let stores = PostgresTenantStores(client: client, catalog: catalog,
                                                  clock: HybridLogicalClock(maxSkewMillis: configuration.maxClockSkewMillis),
                                                  quarantineQuota: configuration.limits.quarantine)
                let liveness = PostgresLiveness(endpoint: endpoint)
                let hub = HubServer(configuration: configuration,
                                    directory: CatalogDirectory(catalog: catalog, stores: { stores.store(for: $0) }, openTenants: { stores.openTenants() }),
                                    storageLiveness: liveness)
                let notifier = try PostgresNotifier(client: client)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await hub.run(handleSignals: true) { port in listener.announce("hub", port: port) } }
                    if rulesInterval > 0 {
                        let rules = HubRulesRunner(tenants: { try await stores.tenantsWithData() }, store: { stores.store(for: $0) },
                                                   tree: { try? await catalog.tree(of: $0) })
                        group.addTask {
                            await rules.run(every: .milliseconds(Int64(rulesInterval * 1000))) { await hub.notifyChanges(for: $0) }
                        }
                    }
                    group.addTask { await liveness.run() }
                    group.addTask {
                        await notifier.relay { tenant in
                            Task {
                                for tenant in tenant.map({ [$0] }) ?? stores.openTenants() {
                                    await hub.notifyChanges(for: tenant)
                                    await hub.notifyGovernance(for: tenant)
                                }
                            }
                        }
                    }
                    // The hub ends on SIGTERM/SIGINT; the listener with it.
                    try await group.next()
                    group.cancelAll()
                    try await group.waitForAll()
                }
            }
        }
    }
}

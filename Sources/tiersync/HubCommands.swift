import ArgumentParser
import Foundation
import Logging
import TiersyncAgent
import TiersyncCore
import TiersyncServer
import TiersyncStore

struct Hub: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the HQ hub.", subcommands: [Serve.self])

    struct Serve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Serve every tenant's nodes over HTTPS until SIGTERM or SIGINT.",
            discussion: """
            TLS is always on: give --cert and --key, or --dev-certs DIR to create a local CA and a
            loopback certificate there (clients then trust DIR/ca.pem).
            """)

        @Option(help: "Directory holding hub.sqlite and one database per tenant.")
        var data: String
        @OptionGroup var listener: ListenerOptions
        @Option(help: "Seconds a change may be stamped ahead of the hub's clock.")
        var maxSkew: UInt64 = 60
        @Option(help: "Seconds between evaluations of HQ's escalation and proactive-contact rules over every tenant (0: never).")
        var rulesInterval = 30.0
        @OptionGroup var logging: LoggingOptions

        func run() async throws {
            try logging.bootstrap()
            var configuration = try listener.configuration(dataDirectory: data)
            configuration.maxClockSkewMillis = maxSkew * 1000
            // The stores the hub serves, shared with HQ's rules runner (HQ has no agent: its
            // escalation and proactive rules run in this process).
            let stores = TenantStores(catalog: try HubCatalog(directory: configuration.dataDirectory),
                                      clock: HybridLogicalClock(maxSkewMillis: configuration.maxClockSkewMillis), checkpointing: .byOwner)
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
    }
}

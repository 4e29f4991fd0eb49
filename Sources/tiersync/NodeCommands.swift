import ArgumentParser
import Foundation
import Logging
import TiersyncNode
import TiersyncStore

struct Node: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run a country node.", subcommands: [Serve.self])

    struct Serve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Serve a country's dealers over HTTPS and sync with HQ, until SIGTERM or SIGINT.",
            discussion: """
            A country node keeps its own SQLite store (--db), serves its dealers with the same API \
            as HQ, and relays their changes to HQ with origin, sequence and clock intact. Dealers \
            enroll through it with tokens from HQ (`tiersync admin enroll-token --parent <country>`); \
            it authenticates them against a directory it mirrors from HQ (kept in --data), so it \
            keeps serving them while HQ is down. Country staff write to --db with the record commands.
            """)

        @Option(help: "The node's role. Only 'country' (a hub for dealers that syncs with HQ).")
        var role = "country"
        @OptionGroup var parent: ParentOptions
        @Option(help: "Directory for the mirrored directory of dealers (and development certificates); it also notes where --db is, for admin commands.")
        var data: String
        @OptionGroup var listener: ListenerOptions
        @Option(help: "Seconds a dealer's change may be stamped ahead of this node's clock.")
        var maxSkew: UInt64 = 60
        @OptionGroup var logging: LoggingOptions

        func validate() throws {
            guard role == "country" else { throw ValidationError("--role must be 'country' (dealers run `tiersync agent run`)") }
        }

        func run() async throws {
            try logging.bootstrap()
            // The country's directory is served by one process, as a hub's is: a `hub serve`
            // (or a second country node) on it started beside this one (helper 80).
            guard let lock = try HubDirectoryLock.acquire(directory: data) else {
                throw CLIError("another process serves \(data) already (it holds \(data)/hub.lock): a country node's directory is served by that node alone")
            }
            defer { withExtendedLifetime(lock) {} }
            let (store, agentConfiguration) = try await parent.prepare(allowInsecureHTTP: listener.insecureDevHttp, maxSkewSeconds: maxSkew,
                                                                       checkpointing: .byOwner, servesChildren: true)
            var hubConfiguration = try listener.configuration(dataDirectory: data)
            hubConfiguration.maxClockSkewMillis = maxSkew * 1000
            // The country's hub compacts the store it shares with its agent.
            hubConfiguration.retention = agentConfiguration.retention
            let node = CountryNode(store: store, agentConfiguration: agentConfiguration, hubConfiguration: hubConfiguration)
            let listener = self.listener
            let (data, db) = (self.data, parent.db)
            try await runUntilSignal {
                try await node.run { port in
                    // The directory is the country's (checked by now): note where its records are, for
                    // `tiersync admin quarantine|rollout-status --data <this directory>`.
                    do { try CountryStorePointer.write(data: data, db: db) } catch {
                        FileHandle.standardError.write(Data("cannot write \(data)/\(CountryStorePointer.fileName): \(error)\n".utf8))
                    }
                    listener.announce("country node", port: port)
                }
            }
        }
    }
}

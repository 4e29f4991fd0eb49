import ArgumentParser
import Foundation
import Logging
import TiersyncServer

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
        @OptionGroup var logging: LoggingOptions

        func run() async throws {
            try logging.bootstrap()
            var configuration = try listener.configuration(dataDirectory: data)
            configuration.maxClockSkewMillis = maxSkew * 1000
            let hub = try HubServer(configuration: configuration)
            try await hub.run(handleSignals: true) { port in listener.announce("hub", port: port) }
        }
    }
}

import ArgumentParser
import Foundation
import Logging
import TiersyncPKI
import TiersyncServer

struct Hub: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the HQ hub.", subcommands: [Serve.self])

    struct Serve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Serve every tenant's nodes over HTTPS until SIGTERM or SIGINT.",
            discussion: """
            TLS is always on: give --cert and --key, or --dev-certs to create a local CA and a
            loopback certificate under <data>/pki (agents then trust <data>/pki/ca.pem).
            """)

        @Option(help: "Directory holding hub.sqlite and one database per tenant.")
        var data: String
        @Option(help: "Address to listen on.")
        var host = "127.0.0.1"
        @Option(help: "Port to listen on (0 picks a free one and prints it).")
        var port = 8443
        @Option(help: "PEM certificate chain of the hub.")
        var cert: String?
        @Option(help: "PEM private key of the hub.")
        var key: String?
        @Flag(help: "Create (or reuse) a development CA and loopback certificate under <data>/pki.")
        var devCerts = false
        @Flag(help: "Serve plain HTTP. Development only; never on a network.")
        var insecureDevHttp = false
        @Option(help: "Seconds a change may be stamped ahead of the hub's clock.")
        var maxSkew: UInt64 = 60
        @OptionGroup var logging: LoggingOptions

        func validate() throws {
            let modes = [cert != nil || key != nil, devCerts, insecureDevHttp].filter { $0 }.count
            if modes != 1 { throw ValidationError("choose exactly one of --cert/--key, --dev-certs or --insecure-dev-http") }
            if (cert == nil) != (key == nil) { throw ValidationError("--cert and --key go together") }
        }

        func run() async throws {
            try logging.bootstrap()
            let transport: HubConfiguration.Transport
            if insecureDevHttp {
                transport = .insecureDevelopmentHTTP
            } else if devCerts {
                let files = try DevelopmentPKI.ensure(in: data + "/pki")
                transport = .tls(certificatePath: files.serverCertificate, privateKeyPath: files.serverKey)
                print("development CA: \(files.caCertificate) (agents: --ca \(files.caCertificate))")
            } else {
                transport = .tls(certificatePath: cert!, privateKeyPath: key!)
            }
            var configuration = HubConfiguration(host: host, port: port, dataDirectory: data, transport: transport)
            configuration.maxClockSkewMillis = maxSkew * 1000
            let hub = try HubServer(configuration: configuration)
            let scheme = insecureDevHttp ? "http" : "https"
            try await hub.run(handleSignals: true) { port in
                print("hub listening on \(scheme)://\(host):\(port)")
                flushOutput()
            }
        }
    }
}

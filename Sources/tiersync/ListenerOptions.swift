import ArgumentParser
import Foundation
import TiersyncPKI
import TiersyncServer

/// How a hub or country node listens: TLS with given files, a development CA, or (for
/// development only) plain HTTP.
struct ListenerOptions: ParsableArguments {
    @Option(help: "Address to listen on.")
    var host = "127.0.0.1"
    @Option(help: "Port to listen on (0 picks a free one and prints it).")
    var port = 8443
    @Option(help: "PEM certificate chain.")
    var cert: String?
    @Option(help: "PEM private key.")
    var key: String?
    @Option(help: "Create (or reuse) a development CA and loopback certificate in this directory.")
    var devCerts: String?
    @Flag(help: "Plain HTTP, to listen and to reach the parent. Development only; never on a network.")
    var insecureDevHttp = false
    @Option(help: "File holding the bearer token Prometheus presents at GET /metrics (without it, /metrics is off).")
    var metricsTokenFile: String?
    @Option(help: "Connections one client address may hold open; past it a new one is closed at once (0: no limit).")
    var maxConnectionsPerAddress = HubConfiguration.Limits().maxConnectionsPerAddress ?? 0
    @Option(help: "Connections the process may hold open in all (default: its open-file limit less a tenth, at least 256, for its databases).")
    var maxConnections: Int?
    @Option(help: "Comma-separated addresses held to --max-connections alone, not per address: a load balancer or proxy in front (default: 127.0.0.1,::1).")
    var unlimitedAddresses: String?
    @Option(help: "MiB of large push bodies (once inflated) decoded at once, one tenant at most half; past it a push waits, then is answered 503 (at least 128).")
    var pushMemoryMib = HubConfiguration.Limits().pushMemoryBytes >> 20

    func validate() throws {
        let modes = [cert != nil || key != nil, devCerts != nil, insecureDevHttp].filter { $0 }.count
        if modes != 1 { throw ValidationError("choose exactly one of --cert/--key, --dev-certs DIR or --insecure-dev-http") }
        if (cert == nil) != (key == nil) { throw ValidationError("--cert and --key go together") }
        // 0 picks a free port; anything above 65535 was taken modulo 65536 (99999 listened on 34463).
        guard (0...65535).contains(port) else { throw ValidationError("--port \(port) is not a port: expected 0…65535 (0 picks a free one)") }
        guard maxConnectionsPerAddress >= 0 else { throw ValidationError("--max-connections-per-address must be 0 (no limit) or more, got \(maxConnectionsPerAddress)") }
        if let maxConnections, maxConnections < 1 { throw ValidationError("--max-connections must be 1 or more, got \(maxConnections)") }
        // Twice the largest push: one tenant's half always holds the largest it may send.
        let least = 2 * HubConfiguration.Limits().maxDecompressedBytes >> 20
        guard (least...1 << 20).contains(pushMemoryMib) else {
            throw ValidationError("--push-memory-mib must be from \(least) (twice the largest push, once inflated) to \(1 << 20), got \(pushMemoryMib)")
        }
        _ = try unlimitedAddressSet()
    }

    /// `--unlimited-addresses` as addresses, each checked to be an IP address as a
    /// connection's remote address is written (`10.0.0.5`, `::1`).
    func unlimitedAddressSet() throws -> Set<String>? {
        guard let unlimitedAddresses else { return nil }
        let addresses = unlimitedAddresses.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        return Set(try addresses.map { address in
            guard let read = ConnectionLimiter.address(address) else {
                throw ValidationError("--unlimited-addresses: '\(address)' is not an IP address (give addresses, such as 10.0.0.5 or ::1, separated by commas)")
            }
            return read
        })
    }

    var scheme: String { insecureDevHttp ? "http" : "https" }

    func transport() throws -> HubConfiguration.Transport {
        if insecureDevHttp { return .insecureDevelopmentHTTP }
        if let devCerts {
            let files = try DevelopmentPKI.ensure(in: devCerts)
            print("development CA: \(files.caCertificate) (clients: --ca \(files.caCertificate))")
            return .tls(certificatePath: files.serverCertificate, privateKeyPath: files.serverKey)
        }
        // Checked here, when the listener is made, not in validate(): documented command
        // lines are parsed without the files they name.
        for (option, path) in [("--cert", cert!), ("--key", key!)] where !FileManager.default.fileExists(atPath: path) {
            throw ValidationError("\(option) \(path) does not exist")
        }
        return .tls(certificatePath: cert!, privateKeyPath: key!)
    }

    /// The listener's configuration; first raises the process's open-file limit to what the
    /// system allows, which the default total of connections follows.
    func configuration(dataDirectory: String) throws -> HubConfiguration {
        ConnectionLimiter.raiseOpenFileLimit()
        var configuration = HubConfiguration(host: host, port: port, dataDirectory: dataDirectory, transport: try transport())
        configuration.limits.maxConnectionsPerAddress = maxConnectionsPerAddress > 0 ? maxConnectionsPerAddress : nil
        configuration.limits.maxConnections = maxConnections
        configuration.limits.pushMemoryBytes = pushMemoryMib << 20
        if let unlimited = try unlimitedAddressSet() { configuration.limits.unlimitedAddresses = unlimited }
        if let metricsTokenFile {
            let token = try readOptionFile(metricsTokenFile, what: "metrics token file").trimmingCharacters(in: .whitespacesAndNewlines)
            guard token.count >= 16 else { throw ValidationError("\(metricsTokenFile): a metrics token has at least 16 characters") }
            configuration.metricsToken = token
        }
        return configuration
    }

    /// Prints the URL once the listener is up (a parent process may be reading it).
    func announce(_ what: String, port: Int) {
        print("\(what) listening on \(scheme)://\(host):\(port)")
        flushOutput()
    }
}

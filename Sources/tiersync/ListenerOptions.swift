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

    func validate() throws {
        let modes = [cert != nil || key != nil, devCerts != nil, insecureDevHttp].filter { $0 }.count
        if modes != 1 { throw ValidationError("choose exactly one of --cert/--key, --dev-certs DIR or --insecure-dev-http") }
        if (cert == nil) != (key == nil) { throw ValidationError("--cert and --key go together") }
        // 0 picks a free port; anything above 65535 was taken modulo 65536 (99999 listened on 34463).
        guard (0...65535).contains(port) else { throw ValidationError("--port \(port) is not a port: expected 0…65535 (0 picks a free one)") }
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

    func configuration(dataDirectory: String) throws -> HubConfiguration {
        var configuration = HubConfiguration(host: host, port: port, dataDirectory: dataDirectory, transport: try transport())
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

import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOSSL
import TiersyncCore
import TiersyncServer
import TiersyncStorage
import TiersyncStore

/// The console and the admin API at a tenant's full size: N nodes (countries of 100), an HQ
/// administrator's session, and the latency and size of the node tree's pages: the first,
/// a filtered one, and one deep in the tree. Pages page: their size must not grow with N.
struct ConsoleBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "console",
                                                    abstract: "The node tree's pages (console and admin API) at N nodes: latency and bytes.")
    @Option(help: "Nodes in the tenant (countries of 100: one country node and 99 dealers).") var nodes = 10_000
    @Option(help: "Requests per page measured.") var requests = 40
    @OptionGroup var common: CommonOptions

    func run() async throws {
        quietLogs()
        let (dir, cleanup) = try common.workingDirectory("console")
        defer { cleanup() }
        header("console", [("nodes", "\(nodes)"), ("requests per page", "\(requests)"), ("page size", "100 nodes")])
        let hub = try await BenchHub.start(in: dir)
        let catalog = hub.stores.catalog
        _ = try catalog.createTenant("acme", levels: 3)
        let started = ContinuousClock.now
        let countries = max(1, nodes / 100)
        for c in 0..<countries {
            let country = NodeID(unchecked: "c\(c)")
            _ = try await catalog.redeem(token: try catalog.issueEnrollmentToken(tenant: "acme", node: country))
            for d in 0..<max(0, nodes / countries - 1) {
                _ = try await catalog.redeem(token: try catalog.issueEnrollmentToken(tenant: "acme", node: NodeID(unchecked: "c\(c)-d\(d)"), parent: country))
            }
        }
        let total = try await catalog.tree(of: "acme").parents.count
        result("tenant", "\(format(Double(total))) nodes, registered in \(format(elapsedSeconds(since: started), 1)) s")

        try await SQLiteCatalog(catalog).createAdminUser(AdminUser(tenant: "acme", name: "hq-admin", roles: [.operator], scope: "hq", createdAtMillis: WallClock.nowMillis()),
                                          passwordHash: try PasswordHash.make("benchmark password"))
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .file(hub.caFile)
        let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tls))
        // The client is shut down however the measurement ends (a client left running traps).
        let outcome: Result<Void, any Error>
        do {
            try await measure(hub: hub, http: http, countries: countries)
            outcome = .success(())
        } catch {
            outcome = .failure(error)
        }
        try? await http.shutdown()
        await hub.stop()
        try outcome.get()
    }

    func measure(hub: BenchHub, http: HTTPClient, countries: Int) async throws {
        var login = HTTPClientRequest(url: hub.url + "/admin/v1/login")
        login.method = .POST
        login.headers.add(name: "Content-Type", value: "application/json")
        login.body = .bytes(ByteBuffer(string: #"{"tenant":"acme","user":"hq-admin","password":"benchmark password"}"#))
        let loggedIn = try await http.execute(login, timeout: .seconds(30))
        guard loggedIn.status == .ok, let cookie = loggedIn.headers.first(name: "set-cookie")?.split(separator: ";").first else {
            throw BenchError("login failed: \(loggedIn.status)")
        }
        let last = countries - 1
        let pages: [(String, String)] = [
            ("api: first page", "/admin/v1/nodes?limit=100"),
            ("api: filter (1 match)", "/admin/v1/nodes?q=c\(last)-d7"),
            ("api: deep page", "/admin/v1/nodes?limit=100&after=hq/c\(last)"),
            ("console: first page", "/console/nodes"),
            ("console: filter", "/console/nodes?q=c\(last)-d7"),
            ("console: deep page", "/console/nodes?after=hq/c\(last)"),
        ]
        for (name, path) in pages {
            var latencies: [Double] = []
            var bytes = 0
            for _ in 0..<requests {
                var request = HTTPClientRequest(url: hub.url + path)
                request.headers.add(name: "Cookie", value: String(cookie))
                let start = ContinuousClock.now
                let response = try await http.execute(request, timeout: .seconds(60))
                let body = try await response.body.collect(upTo: 64 * 1024 * 1024)
                latencies.append(elapsedSeconds(since: start) * 1000)
                guard response.status == .ok else { throw BenchError("\(path): \(response.status)") }
                bytes = body.readableBytes
            }
            latencies.sort()
            result(name, "p50 \(format(percentile(latencies, 0.5), 1)) ms, p95 \(format(percentile(latencies, 0.95), 1)) ms, \(format(Double(bytes) / 1024, 1)) KiB")
        }
    }
}

import ArgumentParser
import Foundation
import TiersyncAgent
import TiersyncCore
import TiersyncNode
import TiersyncServer
import TiersyncStore

/// Time from a dealer's local write to its visibility at HQ, through a country node, with
/// the agents' default settings.
struct Propagation: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Dealer write → visible at HQ through a country node: p50/p95.")
    @Option(help: "Writes to time.") var samples = 100
    @Option(help: "Milliseconds between writes.") var spacing = 150
    @OptionGroup var common: CommonOptions

    func run() async throws {
        quietLogs()
        let (dir, cleanup) = try common.workingDirectory("propagation")
        defer { cleanup() }
        header("propagation", [("samples", "\(samples)"), ("spacing", "\(spacing) ms"), ("path", "dealer → country → HQ"),
                               ("agent settings", "defaults (poll \(AgentConfiguration(parentURL: "").localPollInterval))")])
        let hub = try await BenchHub.start(in: dir)
        try hub.stores.catalog.createTenant("acme", levels: 3)
        let country = try NodeStore(path: dir + "/de.sqlite")
        let toHQ = AgentConfiguration(parentURL: hub.url, caFile: hub.caFile)
        try await SyncAgent.enroll(store: country, configuration: toHQ, token: try hub.stores.catalog.issueEnrollmentToken(tenant: "acme", node: "de"))
        let node = CountryNode(store: country, agentConfiguration: toHQ,
                               hubConfiguration: HubConfiguration(port: 0, dataDirectory: dir + "/de-directory",
                                                                  transport: .tls(certificatePath: dir + "/pki/server.pem", privateKeyPath: dir + "/pki/server-key.pem")))
        let (stream, continuation) = AsyncStream<Int>.makeStream()
        let countryTask = Task { try await node.run { continuation.yield($0) } }
        var iterator = stream.makeAsyncIterator()
        guard let port = await iterator.next() else { throw BenchError("country node did not start") }

        let dealer = try NodeStore(path: dir + "/dealer.sqlite")
        let toCountry = AgentConfiguration(parentURL: "https://127.0.0.1:\(port)", caFile: hub.caFile)
        try await SyncAgent.enroll(store: dealer, configuration: toCountry,
                                   token: try hub.stores.catalog.issueEnrollmentToken(tenant: "acme", node: "dealer-1", parent: "de"))
        let agent = try SyncAgent(store: dealer, configuration: toCountry)
        let agentTask = Task { try await agent.run() }
        let hq = try hub.stores.store(for: "acme")

        var latencies: [Double] = []
        for i in 0..<samples {
            let id = "p-\(i)"
            let start = ContinuousClock.now
            try dealer.commit([.upsert("customers", id: id, ["last_name": "Propagation", "phone": .string("+49 \(i)")])])
            while try hq.record(table: "customers", id: id) == nil {
                if elapsedSeconds(since: start) > 30 { throw BenchError("write \(id) did not reach HQ within 30 s") }
                try await Task.sleep(for: .milliseconds(1))
            }
            latencies.append(elapsedSeconds(since: start) * 1000)
            try await Task.sleep(for: .milliseconds(spacing))
        }
        agentTask.cancel(); _ = await agentTask.result
        countryTask.cancel(); _ = await countryTask.result
        await hub.stop()
        let sorted = latencies.sorted()
        let p95 = percentile(sorted, 0.95)
        result("p50", "\(format(percentile(sorted, 0.5))) ms")
        result("p95", "\(format(p95)) ms", target: "< 1,000 ms", met: p95 < 1_000)
        result("max", "\(format(sorted.last ?? .nan)) ms")
    }
}

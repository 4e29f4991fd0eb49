import ArgumentParser
import Foundation
import TiersyncAgent
import TiersyncCore
import TiersyncStore

/// A newly enrolled dealer with M records in its scope, pulled to a ready local store.
struct Bootstrap: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Rows/s for a new dealer pulling M records in its scope.")
    @Option(help: "Records routed to the new dealer.") var records = 200_000
    @Option(help: "Changes per pull page.") var page = 1_000
    @OptionGroup var common: CommonOptions

    func run() async throws {
        quietLogs()
        let (dir, cleanup) = try common.workingDirectory("bootstrap")
        defer { cleanup() }
        header("bootstrap", [("records", "\(records)"), ("page", "\(page)"), ("fields/record", "4")])
        let hub = try await BenchHub.start(in: dir)
        _ = try hub.stores.catalog.createTenant("acme")
        let hq = try hub.stores.store(for: "acme")
        for chunk in stride(from: 0, to: records, by: 10_000) {
            try hq.commit((chunk..<min(chunk + 10_000, records)).map { .upsert("customers", id: "c-\($0)", contactFields($0, owner: "new-dealer")) })
        }
        let store = try NodeStore(path: dir + "/new-dealer.sqlite")
        var configuration = AgentConfiguration(parentURL: hub.url, caFile: hub.caFile)
        configuration.pullPageSize = page
        try await SyncAgent.enroll(store: store, configuration: configuration,
                                   token: try hub.stores.catalog.issueEnrollmentToken(tenant: "acme", node: "new-dealer"))
        let agent = try SyncAgent(store: store, configuration: configuration)
        let start = ContinuousClock.now
        var lastReport = ContinuousClock.now
        // What `agent run` does when behind: pages fetched while the previous one is applied.
        try await agent.catchUp { received in
            if ContinuousClock.now - lastReport > .seconds(1) {
                lastReport = ContinuousClock.now
                print("  … \(received) of \(records) records", terminator: "\r")
                fflush(nil)
            }
        }
        let elapsed = elapsedSeconds(since: start)
        await agent.shutdown()
        await hub.stop()
        let held = try store.counts().records["customers"] ?? 0
        guard held == records else { throw BenchError("the dealer holds \(held) of \(records) records") }
        let rate = Double(records) / elapsed
        result("bootstrap", "\(format(rate)) rows/s (\(format(elapsed, 2)) s)", target: "≥ 50,000 rows/s", met: rate >= 50_000)
    }
}

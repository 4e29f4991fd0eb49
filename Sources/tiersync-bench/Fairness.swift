import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOSSL
import Synchronization
import TiersyncCore
import TiersyncPostgres

/// What one tenant's heaviest legal load does to another tenant of the same hub: a light
/// tenant's node pushes small batches at a steady pace, first alone, then while a heavy
/// tenant's nodes push the largest batches the hub takes, back to back. The light pushes'
/// latency alone and beside the load, and their ratio, per engine. The hub is a `tiersync
/// hub serve` child process with the production limits; the heavy nodes stay within them
/// (each push at `maxChangesPerPush`, one push in flight per node).
struct Fairness: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A light tenant's push latency alone and beside another tenant's heaviest pushes, on SQLite and on PostgreSQL.")
    @Option(help: "A PostgreSQL server for the pg1 set-up (default: $TIERSYNC_TEST_POSTGRES_URL; without one, SQLite only).")
    var postgres: String?
    @Option(help: "Which set-ups, comma-separated, of sqlite1 and pg1 (default: both, pg1 only with a server).") var setups = "sqlite1,pg1"
    @Option(help: "Nodes of the heavy tenant pushing at once.") var heavyNodes = 3
    @Option(help: "Changes per heavy push (the hub's production maximum is 10,000).") var heavyBatch = 10_000
    @Option(help: "Pushes each heavy node sends, one after another.") var heavyPushes = 8
    @Option(help: "Changes per light push.") var lightBatch = 10
    @Option(help: "Seconds between the starts of the light node's pushes.") var lightInterval = 0.1
    @Option(help: "Seconds the light node pushes alone before the load starts.") var quietSeconds = 10.0
    @Option(help: "The tiersync executable the hub runs (default: beside this one).") var tiersync: String?
    @OptionGroup var common: CommonOptions

    func run() async throws {
        quietLogs()
        let url = postgres ?? ProcessInfo.processInfo.environment["TIERSYNC_TEST_POSTGRES_URL"]
        var chosen = setups.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard !chosen.isEmpty, Set(chosen).isSubset(of: ["sqlite1", "pg1"]) else { throw ValidationError("--setups takes sqlite1 and pg1, comma-separated") }
        guard heavyNodes > 0, heavyBatch > 0, heavyPushes > 0, lightBatch > 0, lightInterval > 0, quietSeconds > 0 else {
            throw ValidationError("every count and duration must be positive")
        }
        if url == nil {
            chosen.removeAll { $0 == "pg1" }
            print("no PostgreSQL server given (--postgres or TIERSYNC_TEST_POSTGRES_URL): SQLite only")
        }
        let server = try PostgresEndpoint(url: url ?? "postgres://unused@127.0.0.1:1/unused")
        let binary = try tiersyncExecutable(tiersync)
        let (dir, cleanup) = try common.workingDirectory("fairness")
        defer { cleanup() }
        header("fairness", [("heavy tenant", "\(heavyNodes) nodes × \(heavyPushes) pushes of \(format(Double(heavyBatch))) changes, one in flight per node"),
                            ("light tenant", "1 node, \(lightBatch) changes per push every \(format(lightInterval * 1000)) ms"),
                            ("alone", "\(format(quietSeconds)) s"), ("hub", "one tiersync hub serve process, production limits")])
        // Enough light bodies for the quiet phase and a loaded phase of up to ten minutes.
        let lightCount = Int(((quietSeconds + 600) / lightInterval).rounded(.up))
        let light = try Ingest.pushBodies(node: "light-0", count: lightCount * lightBatch, batch: lightBatch)
        var heavy: [[ByteBuffer]] = []
        for n in 0..<heavyNodes {
            heavy.append(try Ingest.pushBodies(node: NodeID(unchecked: "heavy-\(n)"), count: heavyBatch * heavyPushes, batch: heavyBatch))
        }
        for setup in chosen {
            let engine: HubEngine = setup == "pg1" ? .postgres : .sqlite
            let figures = try await withHubs(engine, count: 1, binary: binary, server: server, dir: dir + "/" + setup, tenants: ["acme", "heavy"]) { hubs in
                let lightCredential = try await hubs.credentialIn("acme", "light-0")
                var heavyPosts: [(url: String, credential: String, bodies: [ByteBuffer])] = []
                for (n, bodies) in heavy.enumerated() {
                    heavyPosts.append((hubs.urls[0], try await hubs.credentialIn("heavy", NodeID(unchecked: "heavy-\(n)")), bodies))
                }
                return try await measure(url: hubs.urls[0], caFile: hubs.caFile, lightCredential: lightCredential, light: light, heavy: heavyPosts)
            }
            let label = engine == .sqlite ? "SQLite" : "PostgreSQL"
            func ms(_ sorted: [Double], _ p: Double) -> String { format(percentile(sorted, p) * 1000, 1) }
            result("\(label): light alone", "p50 \(ms(figures.alone, 0.5)) / p99 \(ms(figures.alone, 0.99)) / max \(ms(figures.alone, 1)) ms (\(figures.alone.count) pushes)")
            result("\(label): light beside load", "p50 \(ms(figures.loaded, 0.5)) / p99 \(ms(figures.loaded, 0.99)) / max \(ms(figures.loaded, 1)) ms (\(figures.loaded.count) pushes)")
            result("\(label): beside ÷ alone", "p50 \(format(percentile(figures.loaded, 0.5) / percentile(figures.alone, 0.5), 1))× / p99 \(format(percentile(figures.loaded, 0.99) / percentile(figures.alone, 0.99), 1))×")
            result("\(label): heavy tenant", "\(format(figures.heavyRate)) changes/s over \(format(figures.heavySeconds, 1)) s")
        }
    }

    /// The light pushes' latencies in seconds (sorted), alone and beside the load, and the
    /// heavy tenant's rate.
    private func measure(url: String, caFile: String, lightCredential: String, light: [ByteBuffer],
                         heavy: [(url: String, credential: String, bodies: [ByteBuffer])]) async throws
        -> (alone: [Double], loaded: [Double], heavyRate: Double, heavySeconds: Double) {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .file(caFile)
        let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tls))
        defer { _ = http.shutdown() }
        let interval = Duration.nanoseconds(Int64(lightInterval * 1e9))
        let next = Mutex(0)
        /// Pushes the light node's next bodies on the beat until `until` says stop.
        @Sendable func lightPushes(until done: @Sendable () -> Bool) async throws -> [Double] {
            var latencies: [Double] = []
            var beat = ContinuousClock.now
            while !done() {
                let index = next.withLock { n in defer { n += 1 }; return n }
                guard index < light.count else { throw BenchError("the light node ran out of bodies: the loaded phase outlasted ten minutes") }
                let start = ContinuousClock.now
                try await Ingest.pushBody(http, url: url, credential: lightCredential, body: light[index], timeout: .seconds(300))
                latencies.append(elapsedSeconds(since: start))
                beat += interval
                if beat > ContinuousClock.now { try await Task.sleep(until: beat) } else { beat = ContinuousClock.now }
            }
            return latencies.sorted()
        }
        // The light node's first push opens its connection and makes its tenant's store
        // (on PostgreSQL, the tenant's schema): not timed. Then it pushes alone.
        try await Ingest.pushBody(http, url: url, credential: lightCredential, body: light[next.withLock { n in defer { n += 1 }; return n }], timeout: .seconds(300))
        let quietEnd = ContinuousClock.now + .nanoseconds(Int64(quietSeconds * 1e9))
        let alone = try await lightPushes(until: { ContinuousClock.now >= quietEnd })
        // Then beside the heavy tenant's pushes, for as long as they take.
        let heavyDone = Atomic(false)
        let heavyStart = ContinuousClock.now
        async let loaded = lightPushes(until: { heavyDone.load(ordering: .acquiring) })
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for post in heavy {
                    group.addTask {
                        for body in post.bodies { try await Ingest.pushBody(http, url: post.url, credential: post.credential, body: body, timeout: .seconds(300)) }
                    }
                }
                try await group.waitForAll()
            }
        } catch {
            heavyDone.store(true, ordering: .releasing)
            _ = try? await loaded
            throw error
        }
        let heavySeconds = elapsedSeconds(since: heavyStart)
        heavyDone.store(true, ordering: .releasing)
        let changes = Double(heavy.count * heavyPushes * heavyBatch)
        return (alone, try await loaded, changes / heavySeconds, heavySeconds)
    }
}

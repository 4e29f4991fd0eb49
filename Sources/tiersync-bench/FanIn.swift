import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOSSL
import Synchronization
import TiersyncAgent
import TiersyncCore

/// K simulated dealer agents, each with its own credential and cursor, syncing with one
/// hub at once: every `interval` seconds each pushes one change and pulls its scope.
struct FanIn: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Sync requests/s and latency with K agents syncing concurrently.")
    @Option(help: "Simulated agents.") var agents = 500
    @Option(help: "Seconds to run.") var seconds = 20.0
    @Option(help: "Seconds between one agent's syncs (push + pull).") var interval = 2.0
    @Option(help: "The simulated agents' HTTP side: lean (one TLS connection each on NIO, one TLS context for all) or agent (each its own ParentClient, as tiersync-agent).")
    var client: FanInClient = .lean
    @OptionGroup var common: CommonOptions

    func run() async throws {
        quietLogs()
        let (dir, cleanup) = try common.workingDirectory("fan-in")
        defer { cleanup() }
        header("fan-in", [("agents", "\(agents)"), ("seconds", "\(seconds)"), ("sync interval", "\(interval) s"), ("per sync", "push 1 change + pull"), ("agents' client", client.rawValue)])
        let hub = try await BenchHub.start(in: dir)
        var credentials: [(NodeID, String)] = []
        for a in 0..<agents {
            let node = NodeID(unchecked: "a-\(a)")
            credentials.append((node, try await hub.credential(tenant: "acme", node: node)))
        }
        let figures = await Self.measure(targets: credentials.map { (hub.url, $0.0, $0.1) }, caFile: hub.caFile, seconds: seconds, interval: interval,
                                         client: client)
        await hub.stop()
        figures.report(agents: agents, seconds: seconds, interval: interval)
    }

    /// The figures of one fan-in run.
    struct Figures {
        let latencies: [Double]
        let connected: [Double]
        let failures: [String]
        /// Per interval of the run (each agent syncs once in each): the p99 of the requests
        /// that started in it, so a queue built at the start and its draining show.
        let timeline: [Double]
        /// The same for pushes and for pulls alone: which of the two waits.
        let pushTimeline: [Double]
        let pullTimeline: [Double]
        /// Where the CPU went after the first interval (``CPUAccount``); nil without `/proc`.
        var cpu: String?
        /// The same in the first interval: every agent's first sync, TLS handshake included.
        var stormCPU: String?

        func report(agents: Int, seconds: Double, interval: Double, label: String = "") {
            let p99 = percentile(latencies, 0.99)
            result(label + "sync requests", "\(format(Double(latencies.count) / seconds)) requests/s (\(latencies.count) in \(format(seconds, 0)) s; offered \(format(Double(agents) * 2 / interval)) /s)")
            result(label + "latency p50", "\(format(percentile(latencies, 0.5), 1)) ms")
            result(label + "latency p99", "\(format(p99, 1)) ms", target: "< 250 ms at 5,000 agents", met: agents >= 5_000 ? p99 < 250 : nil)
            // Every agent connects (TLS handshake) within the first interval: a reconnect storm
            // on top of the load. The same figures without each agent's first sync:
            result(label + "connected: p50 / p99", "\(format(percentile(connected, 0.5), 1)) / \(format(percentile(connected, 0.99), 1)) ms (\(connected.count) requests after each agent's first sync)")
            result(label + "p99 per interval", timeline.map { "\(format($0, 0))" }.joined(separator: " / ") + " ms (the requests started in each \(format(interval, 0)) s)")
            result(label + "… pushes / pulls", pushTimeline.map { "\(format($0, 0))" }.joined(separator: " / ") + " ms; "
                   + pullTimeline.map { "\(format($0, 0))" }.joined(separator: " / ") + " ms")
            if let stormCPU { result(label + "CPU, connect storm", stormCPU) }
            if let cpu { result(label + "CPU, storm over", cpu) }
            result(label + "errors", "\(failures.count)", target: "0", met: failures.isEmpty)
            if let first = failures.first { print("  first error: \(first)") }
        }
    }

    /// Runs one simulated agent per target (hub URL, node, credential) for `seconds`: every
    /// `interval` each pushes one change and pulls its scope.
    /// `hubPIDs`: the hub processes, for the CPU account (empty for a hub in this process).
    static func measure(targets: [(url: String, node: NodeID, credential: String)], caFile: String, seconds: Double, interval: Double,
                        hubPIDs: [Int32] = [], client: FanInClient = .lean) async -> Figures {
        let recorder = Recorder()
        // Made before the clock starts, once for every agent (``FanInClient/lean``).
        var leanContext: NIOSSLContext?
        if client == .lean {
            do { leanContext = try LeanAgent.tlsContext(caFile: caFile) } catch { recorder.errors.withLock { $0.append("TLS context: \(error)") } }
        }
        let started = ContinuousClock.now
        // Where the CPU went once every agent has made its first sync (the connect storm of
        // the first interval is over), to the end of the run.
        let account = CPUAccount(hubPIDs: hubPIDs)
        let atStart = account.read()
        let afterStorm = Task { () -> CPUAccount.Reading? in
            try? await Task.sleep(until: started + .milliseconds(Int64(interval * 1000)))
            return account.read()
        }
        let deadline = started + .milliseconds(Int64(seconds * 1000))
        let count = Double(targets.count)
        await withTaskGroup(of: Void.self) { group in
            for (index, (url, node, credential)) in targets.enumerated() {
                // Spread the agents' first syncs over one interval.
                let offsetMillis = Int64(Double(index) / count * interval * 1000)
                if client == .lean {
                    guard let context = leanContext else { continue }
                    group.addTask {
                        await LeanAgent.run(url: url, node: node, credential: credential, context: context, offset: .milliseconds(offsetMillis),
                                            started: started, deadline: deadline, interval: interval, recorder: recorder)
                    }
                    continue
                }
                group.addTask {
                    guard let client = try? ParentClient(configuration: AgentConfiguration(parentURL: url, caFile: caFile), credential: credential) else { return }
                    try? await Task.sleep(for: .milliseconds(offsetMillis))
                    var seq: Int64 = 0, cursor: Int64 = 0
                    while ContinuousClock.now < deadline {
                        let begin = ContinuousClock.now
                        seq += 1
                        do {
                            let change = makeChanges(origin: node, count: 1, firstSeq: seq, ids: { _ in "\(node)-c\(seq % 20)" },
                                                     fields: { _ in contactFields(Int(seq), owner: node) })
                            let t0 = ContinuousClock.now
                            _ = try await client.push(PushRequest(through: seq, changes: change))
                            let t1 = ContinuousClock.now
                            cursor = try await client.pull(cursor: cursor, limit: 1_000, waitSeconds: 0, excludeOwn: true).nextCursor
                            let t2 = ContinuousClock.now
                            // An agent's first sync also opens its TLS connection.
                            recorder.record(started: started, t0: t0, push: t1 - t0, pull: t2 - t1, interval: interval, connected: seq > 1)
                        } catch {
                            recorder.errors.withLock { $0.append("\(error)") }
                        }
                        let next = begin + .milliseconds(Int64(interval * 1000))
                        if next > ContinuousClock.now { try? await Task.sleep(until: next) }
                    }
                    try? await client.shutdown()
                }
            }
        }
        let end = account.read()
        let stormOver = await afterStorm.value
        let cpu = stormOver.flatMap { from in end.flatMap { CPUAccount.summary(from: from, to: $0) } }
        let stormCPU = atStart.flatMap { from in stormOver.flatMap { CPUAccount.summary(from: from, to: $0) } }
        let windows = recorder.windows.withLock { $0 }, pushes = recorder.pushes.withLock { $0 }, pulls = recorder.pulls.withLock { $0 }
        let indices = windows.keys.max().map { Array(0...$0) } ?? []
        let timeline = indices.map { percentile((windows[$0] ?? []).sorted(), 0.99) }
        let pushTimeline = indices.map { percentile((pushes[$0] ?? []).sorted(), 0.99) }
        let pullTimeline = indices.map { percentile((pulls[$0] ?? []).sorted(), 0.99) }
        // Every latency is in the window its sync started in.
        return Figures(latencies: windows.values.flatMap { $0 }.sorted(), connected: recorder.connected.withLock { $0.sorted() },
                       failures: recorder.errors.withLock { $0 }, timeline: timeline, pushTimeline: pushTimeline, pullTimeline: pullTimeline,
                       cpu: cpu, stormCPU: stormCPU)
    }
}


func millis(_ d: Duration) -> Double {
    Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
}

/// What the simulated agents measured, shared between their tasks.
final class Recorder: Sendable {
    /// Latencies of syncs after an agent's first (its connection open).
    let connected = Mutex<[Double]>([])
    let errors = Mutex<[String]>([])
    /// Latencies by the interval their sync started in.
    let windows = Mutex<[Int: [Double]]>([:])
    /// The pushes' and the pulls' latencies alone, by interval.
    let pushes = Mutex<[Int: [Double]]>([:])
    let pulls = Mutex<[Int: [Double]]>([:])

    /// One sync that started at `t0`; `connected`: on a connection opened before it.
    func record(started: ContinuousClock.Instant, t0: ContinuousClock.Instant, push: Duration, pull: Duration, interval: Double, connected: Bool) {
        let pushMillis = millis(push), pullMillis = millis(pull)
        let window = Int(millis(t0 - started) / (interval * 1000))
        windows.withLock { $0[window, default: []] += [pushMillis, pullMillis] }
        pushes.withLock { $0[window, default: []].append(pushMillis) }
        pulls.withLock { $0[window, default: []].append(pullMillis) }
        if connected { self.connected.withLock { $0 += [pushMillis, pullMillis] } }
    }
}

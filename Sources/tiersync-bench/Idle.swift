import ArgumentParser
import Foundation
import TiersyncAgent
import TiersyncCore
import TiersyncStore

/// An agent process with nothing to sync: resident memory and CPU over a period.
struct Idle: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "An idle agent's resident memory and CPU.")
    @Option(help: "Seconds to measure (after a 5 s warm-up).") var seconds = 60.0
    @Option(help: "The agent executable: tiersync-agent (the lean one) or tiersync (`agent run`).") var binary = "tiersync-agent"
    @Flag(help: "Run the agent with --no-trim-startup-memory (keeps its start-up pages resident).") var noTrim = false
    @OptionGroup var common: CommonOptions

    func run() async throws {
        quietLogs()
        let (dir, cleanup) = try common.workingDirectory("idle")
        defer { cleanup() }
        header("idle", [("seconds", "\(seconds)"), ("agent", "\(binary == "tiersync" ? "tiersync agent run" : binary), \(noTrim ? "--no-trim-startup-memory" : "default settings"), 1,000 records synced")])
        let hub = try await BenchHub.start(in: dir)
        _ = try hub.stores.catalog.createTenant("acme")
        let store = try NodeStore(path: dir + "/dealer.sqlite")
        try await SyncAgent.enroll(store: store, configuration: AgentConfiguration(parentURL: hub.url, caFile: hub.caFile),
                                   token: try hub.stores.catalog.issueEnrollmentToken(tenant: "acme", node: "dealer-1"))
        try store.commit((0..<1_000).map { .upsert("customers", id: "c-\($0)", contactFields($0, owner: "dealer-1")) })

        // The lean agent executable a dealer runs (`tiersync agent run` is the same command
        // inside the full binary; `--binary tiersync` measures that instead).
        let exe = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        let path = URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent(binary).path
        guard FileManager.default.isExecutableFile(atPath: path) else { throw BenchError("build the \(binary) executable first (\(path))") }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = (binary == "tiersync" ? ["agent", "run"] : []) + ["--db", store.path, "--ca", hub.caFile, "--log-level", "warning"]
            + (noTrim ? ["--no-trim-startup-memory"] : [])
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        defer { process.terminate(); process.waitUntilExit() }
        try await Task.sleep(for: .seconds(5))
        guard try store.upstreamBacklog(after: store.cursor("push.parent")) == 0 else { throw BenchError("the agent did not sync during warm-up") }
        let pid = process.processIdentifier
        let (cpu0, t0) = (try cpuTicks(pid), ContinuousClock.now)
        var peak = 0.0
        let end = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
        while ContinuousClock.now < end {
            peak = max(peak, try residentMB(pid))
            try await Task.sleep(for: .milliseconds(500))
        }
        let cpu = Double(try cpuTicks(pid) - cpu0) / Double(sysconf(Int32(_SC_CLK_TCK))) / elapsedSeconds(since: t0) * 100
        await hub.stop()
        result("resident memory (peak)", "\(format(peak, 1)) MB", target: "< 30 MB", met: peak < 30)
        result("CPU", "\(format(cpu, 2)) % of a core", target: "< 1 %", met: cpu < 1)
    }

    private func residentMB(_ pid: Int32) throws -> Double {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        let kb = status.split(separator: "\n").first { $0.hasPrefix("VmRSS") }?.split(separator: " ").compactMap { Double($0) }.first ?? 0
        return kb / 1024
    }

    private func cpuTicks(_ pid: Int32) throws -> Int {
        let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        // Fields after the command name (which may contain spaces): utime is 14th, stime 15th.
        let fields = stat[stat.index(after: stat.lastIndex(of: ")")!)...].split(separator: " ")
        return (Int(fields[11]) ?? 0) + (Int(fields[12]) ?? 0)
    }
}

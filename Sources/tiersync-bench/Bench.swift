import ArgumentParser
import Foundation
import Logging

/// Benchmarks over real HTTPS and real SQLite files. Each scenario prints its
/// configuration, the machine, and its figures; `all --tiny` runs every scenario at a
/// size small enough for CI (where figures mean nothing, but the suite keeps working).
@main
struct TiersyncBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tiersync-bench",
        abstract: "Measure Tiersync: ingest, ingest with allocation rules, fan-in, propagation, bootstrap, wire, idle, KPIs, the console at N nodes, store size under churn; hostile load.",
        discussion: "Build in release mode for figures: swift run -c release tiersync-bench <scenario>.",
        subcommands: [Ingest.self, Rules.self, FanIn.self, PostgresBench.self, Propagation.self, Bootstrap.self, Wire.self, Idle.self, Hostile.self, Fairness.self, KPIBench.self, RulesReads.self, ConsoleBench.self, RetentionBench.self, All.self])
}

struct CommonOptions: ParsableArguments {
    @Option(help: "Working directory (default: a fresh temporary directory, removed afterwards).")
    var dir: String?

    func workingDirectory(_ scenario: String) throws -> (path: String, cleanup: @Sendable () -> Void) {
        if let dir {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            return (dir, {})
        }
        let path = NSTemporaryDirectory() + "tiersync-bench-\(scenario)-\(ProcessInfo.processInfo.processIdentifier)"
        try? FileManager.default.removeItem(atPath: path)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return (path, { try? FileManager.default.removeItem(atPath: path) })
    }
}

/// Runs every scenario once; `--tiny` for CI.
struct All: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run every scenario (use --tiny in CI).")
    @Flag(help: "Smallest sizes: checks the scenarios work, measures nothing.") var tiny = false

    func run() async throws {
        quietLogs()
        let t = tiny
        try await Ingest.parse(t ? ["--changes", "2000", "--batch", "500"] : []).run()
        try await Rules.parse(t ? ["--interactions", "1000", "--single", "100", "--rounds", "2", "--customers", "200", "--hub-interactions", "2000"] : []).run()
        try await FanIn.parse(t ? ["--agents", "20", "--seconds", "2"] : []).run()
        try await Propagation.parse(t ? ["--samples", "5"] : []).run()
        try await Bootstrap.parse(t ? ["--records", "2000"] : []).run()
        try await Wire.parse(t ? ["--changes", "500"] : []).run()
        try await Idle.parse(t ? ["--seconds", "3"] : []).run()
        try await Hostile.parse(t ? ["--requests", "2000"] : []).run()
        try await Fairness.parse(t ? ["--heavy-nodes", "2", "--heavy-batch", "1000", "--heavy-pushes", "2", "--quiet-seconds", "1"] : []).run()
        try await KPIBench.parse(t ? ["--writes", "500", "--interactions", "5000"] : []).run()
        try await RulesReads.parse(t ? ["--interactions", "2000", "--vehicles", "500"] : []).run()
        try await ConsoleBench.parse(t ? ["--nodes", "300", "--requests", "3"] : []).run()
        try await RetentionBench.parse(t ? ["--updates", "20000", "--records", "400", "--rounds", "10", "--samples", "2"] : []).run()
        print("all scenarios ran")
    }
}

/// Benchmarks report their own figures; library logs below warnings would only add noise.
func quietLogs() {
    struct Once { nonisolated(unsafe) static var done = false }
    if Once.done { return }
    Once.done = true
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = .error
        return handler
    }
}

import Foundation

/// Where a run's CPU went, read from Linux's `/proc`: this process (the load generator, and
/// an in-process hub), the hub processes the bench started, PostgreSQL's processes, and what
/// the machine left idle. On these two-core machines the database, the hubs and thousands of
/// simulated agents share the cores, so a latency figure means little without it: a p99 of
/// seconds with no idle time left is a saturated machine, not a slow request.
///
/// Elsewhere than Linux (no `/proc`) every reading is nil and nothing is reported.
struct CPUAccount: Sendable {
    /// Clock ticks of CPU time by who used them, and the machine's idle and total ticks.
    struct Reading: Sendable {
        var loadGenerator: UInt64
        var hubs: UInt64
        var postgres: UInt64
        var idle: UInt64
        var total: UInt64
    }

    /// The hub processes' ids (empty when the hub runs in this process).
    let hubPIDs: [Int32]

    /// A reading now, or nil without `/proc`.
    func read() -> Reading? {
        guard let machine = Self.machineTicks(), let me = Self.processTicks(getpid()) else { return nil }
        let hubs = hubPIDs.compactMap(Self.processTicks).reduce(0, +)
        return Reading(loadGenerator: me, hubs: hubs, postgres: Self.postgresTicks(), idle: machine.idle, total: machine.total)
    }

    /// Between two readings, as cores used by each (of `cores` in all) and the idle share;
    /// nil when `b` is not later than `a` (a run that ended before its first interval did).
    /// A process that ended between the readings is not counted (its ticks left with it), so
    /// a sum that fell counts as none rather than wrapping around.
    static func summary(from a: Reading, to b: Reading) -> String? {
        let cores = Double(ProcessInfo.processInfo.activeProcessorCount)
        guard b.total > a.total, cores > 0 else { return nil }
        // /proc/stat's total counts every core's ticks: ticks per core-second = total / cores / seconds.
        let perCore = Double(b.total - a.total) / cores
        func c(_ x: UInt64, _ y: UInt64) -> String { format(Double(y > x ? y - x : 0) / perCore, 2) }
        var parts = ["this process (load generator\(b.hubs == 0 ? " and hub" : "")) \(c(a.loadGenerator, b.loadGenerator))"]
        if b.hubs > 0 { parts.append("hub processes \(c(a.hubs, b.hubs))") }
        if b.postgres > a.postgres { parts.append("PostgreSQL \(c(a.postgres, b.postgres))") }
        parts.append("idle \(c(a.idle, b.idle))")
        return parts.joined(separator: ", ") + " of \(Int(cores)) cores"
    }

    /// utime + stime of a process, in clock ticks.
    static func processTicks(_ pid: Int32) -> UInt64? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = text.lastIndex(of: ")") else { return nil }
        // Fields after the command's closing parenthesis: state is field 3, utime 14, stime 15.
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = UInt64(fields[11]), let system = UInt64(fields[12]) else { return nil }
        return user + system
    }

    /// Every process named `postgres` (the postmaster and its backends): the bench's database
    /// is a cluster of its own on these machines.
    static func postgresTicks() -> UInt64 {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return 0 }
        var sum: UInt64 = 0
        for entry in entries {
            guard let pid = Int32(entry),
                  let comm = try? String(contentsOfFile: "/proc/\(entry)/comm", encoding: .utf8),
                  comm.trimmingCharacters(in: .whitespacesAndNewlines) == "postgres" else { continue }
            sum += processTicks(pid) ?? 0
        }
        return sum
    }

    /// The machine's idle (idle + iowait) and total ticks, from `/proc/stat`'s first line.
    static func machineTicks() -> (idle: UInt64, total: UInt64)? {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
              let line = text.split(separator: "\n").first, line.hasPrefix("cpu ") else { return nil }
        let values = line.split(separator: " ").dropFirst().compactMap { UInt64($0) }
        guard values.count >= 5 else { return nil }
        return (values[3] + values[4], values.reduce(0, +))
    }
}

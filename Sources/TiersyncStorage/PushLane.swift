import Foundation

/// Threads of their own for the CPU work of a large push, on either engine: validating and
/// encoding its changes and, on PostgreSQL, judging them and encoding the call that writes
/// them.
///
/// A push of 10,000 changes is a quarter of a second of one core. On the cooperative pool
/// (as many threads as cores, serving every request of every tenant) a few such pushes held
/// all its threads, and another tenant's ten-change push waited behind them: its p99 went
/// from 7 ms to over a second (BENCHMARKS.md, "tenant fairness"). On these threads the
/// kernel shares the cores among the work, and the pool stays free for small requests.
/// Small pushes stay inline: the hop would cost more than their work.
public enum PushLane {
    /// Pushes with fewer changes run inline.
    public static let inlineBelow = 256

    private static let threads = WorkerThreads(count: max(2, ProcessInfo.processInfo.activeProcessorCount), name: "tiersync.push")

    /// Runs `body` inline for a push of fewer than ``inlineBelow`` changes, on the lane's
    /// threads for a larger one.
    public static func run<T: Sendable>(changes: Int, _ body: @escaping @Sendable () throws -> T) async throws -> T {
        guard changes >= inlineBelow else { return try body() }
        return try await withCheckedThrowingContinuation { continuation in
            threads.submit { continuation.resume(with: Result { try body() }) }
        }
    }
}

/// A fixed set of threads taking jobs in arrival order. Every mutable member is guarded by
/// `condition`'s lock, hence `@unchecked Sendable`.
final class WorkerThreads: @unchecked Sendable {
    private let condition = NSCondition()
    private var jobs: [@Sendable () -> Void] = []

    init(count: Int, name: String) {
        for n in 0..<count {
            let thread = Thread { [self] in work() }
            thread.name = "\(name)-\(n)"
            thread.start()
        }
    }

    func submit(_ job: @escaping @Sendable () -> Void) {
        condition.lock()
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    private func work() -> Never {
        while true {
            condition.lock()
            while jobs.isEmpty { condition.wait() }
            let job = jobs.removeFirst()
            condition.unlock()
            job()
        }
    }
}

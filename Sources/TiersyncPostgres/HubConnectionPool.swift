import Foundation

/// How many PostgreSQL connections one hub process opens (`tiersync hub serve
/// --postgres-connections`).
///
/// A hub process holds one connection for as long as it runs (the LISTEN relay that wakes its
/// long-polls for pushes through other processes) and, while HQ's rules run for a tenant,
/// one more (the run's lease, an advisory lock in an open transaction, whose statements lease
/// others). Every other connection serves requests, whose statements are short and spend
/// their time on CPU, not waiting. More of them than the cores can run at once only queue
/// inside PostgreSQL, where they contend for the tenant's head lock, and every new one
/// starts a backend that plans the tenant's functions again: under a connect storm of
/// 5,000 agents on two processes (2 cores) a pool of 20 per process (postgres-nio's default)
/// gave p99 446–503 ms, a pool of 6 113–216 ms (BENCHMARKS.md, 2026-12-05, afternoon).
/// Requests beyond the pool wait in the process for a connection instead, which costs nothing.
/// The pool is fixed: its connections open when the process starts and stay open, so no
/// backend starts (and plans its functions) in the middle of a storm.
public enum HubConnectionPool {
    /// The fewest a process can run with: the relay's, the rules lease's, and one for the
    /// statements of requests and of the rules run. Fewer would leave a rules run, holding
    /// its lease, waiting for a connection that never comes free.
    public static let minimum = 3

    /// The most this option takes; PostgreSQL's own `max_connections` (default 100) bounds
    /// the sum over every hub process first.
    public static let maximum = 1_000

    /// The default: two per core of this machine for requests, plus the relay's and the rules
    /// lease's. Set `--postgres-connections` for PostgreSQL's machine when it is another,
    /// keeping the sum over every hub process under its `max_connections`.
    public static func defaultConnections(cores: Int = ProcessInfo.processInfo.activeProcessorCount) -> Int {
        max(minimum, 2 * max(1, cores) + 2)
    }
}

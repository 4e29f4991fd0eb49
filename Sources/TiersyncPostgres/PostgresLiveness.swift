import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import Synchronization
import TiersyncStorage

/// Watches whether PostgreSQL can be reached, on one connection of its own (outside the
/// pool, whose waits are what it bounds), held open and opened again at once when lost.
/// Only a connection that cannot be opened (refused, reset, timed out, or nothing answered
/// within the connect timeout) makes the database count as down; a lost connection alone
/// does not (a backend terminated by an administrator, a proxy's idle limit), nor does a
/// refusal PostgreSQL itself answers (too many clients, a failed login: the server is there,
/// and the pool may still hold connections). It counts as up again once a connection opens
/// and answers.
///
/// The connection held is pinged (`SELECT 1`) every ``pingInterval``: a network that went
/// silent (packets dropped, a peer or a proxy frozen) closes nothing, and only a question
/// left unanswered tells it. An unanswered ping drops the connection, and opening another
/// then decides: a silent network does not answer that either.
public final class PostgresLiveness: StorageLiveness {
    private struct State {
        var down = false
        var waiters: [UInt64: CheckedContinuation<Void, any Error>] = [:]
        var nextWaiter: UInt64 = 0
    }

    private let state = Mutex(State())
    private let endpoint: PostgresEndpoint
    private let logger: Logger
    /// How long opening the watching connection (TCP, TLS, startup and login) may take
    /// before the database counts as down; and how long a ping may go unanswered.
    private let connectTimeout: Duration
    /// How often the connection held is asked whether it still answers.
    public let pingInterval: Duration

    public init(endpoint: PostgresEndpoint, connectTimeout: Duration = .seconds(5), pingInterval: Duration = .seconds(5),
                logger: Logger = Logger(label: "tiersync.postgres.liveness")) {
        self.endpoint = endpoint
        self.connectTimeout = connectTimeout
        self.pingInterval = pingInterval
        self.logger = logger
    }

    public var isDown: Bool { state.withLock { $0.down } }

    public func untilDown() async throws {
        let id = state.withLock { s -> UInt64 in
            s.nextWaiter += 1
            return s.nextWaiter
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let resumeNow: (any Error)?? = state.withLock { s in
                    if Task.isCancelled { return .some(CancellationError()) }
                    if s.down { return .some(nil) }
                    s.waiters[id] = continuation
                    return .none
                }
                switch resumeNow {
                case .some(.some(let error)): continuation.resume(throwing: error)
                case .some(.none): continuation.resume()
                case .none: break
                }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.resume(throwing: CancellationError())
        }
    }

    /// Watches until the task is cancelled (never returns before).
    public func run() async {
        var configuration: PostgresConnection.Configuration
        do {
            configuration = try endpoint.connectionConfiguration()
        } catch {
            // The pool uses the same configuration, so this does not happen; should it, the
            // hub serves on unwatched (its requests wait as the pool waits).
            logger.error("cannot watch PostgreSQL's reachability", metadata: ["error": "\(error)"])
            while !Task.isCancelled { try? await Task.sleep(for: .seconds(3_600)) }
            return
        }
        let timeout = connectTimeout.components
        configuration.options.connectTimeout = .nanoseconds(timeout.seconds * 1_000_000_000 + timeout.attoseconds / 1_000_000_000)
        var connectionID = 0
        while !Task.isCancelled {
            connectionID += 1
            let connection: PostgresConnection
            do {
                connection = try await connect(configuration, id: connectionID)
            } catch {
                if Task.isCancelled { return }
                if Self.isUnreachable(error) { mark(down: true, error) }
                try? await Task.sleep(for: .seconds(1))
                continue
            }
            mark(down: false, nil)
            // Held open until the server ends it (stopped, restarting, crashed, the backend
            // terminated), a ping goes unanswered, or this task is cancelled; then opened again
            // at once, and only that failing counts.
            await withTaskCancellationHandler {
                await hold(connection)
            } onCancel: {
                connection.close().whenComplete { _ in }
            }
        }
    }

    /// Opens the watching connection, giving up after ``connectTimeout`` however far it got
    /// (TCP, TLS, startup, login). postgres-nio 1.33 bounds the same with the option set
    /// above; this bound holds whatever the library's version does, since the watch is what
    /// bounds every other wait. A connection opened too late is closed.
    private func connect(_ configuration: PostgresConnection.Configuration, id: Int) async throws -> PostgresConnection {
        let logger = self.logger
        let opening = Task { try await PostgresConnection.connect(configuration: configuration, id: id, logger: logger) }
        guard let outcome = await Self.first(within: connectTimeout, { await opening.result }) else {
            opening.cancel()
            Task { try? await opening.value.close() }
            throw ChannelError.connectTimeout(.seconds(Int64(connectTimeout.components.seconds)))
        }
        return try outcome.get()
    }

    /// Waits until `connection` closes, pinging it every ``pingInterval``; closes it when a
    /// ping fails or goes unanswered for ``connectTimeout``.
    private func hold(_ connection: PostgresConnection) async {
        let (logger, interval, timeout) = (self.logger, pingInterval, connectTimeout)
        await withTaskGroup(of: Void.self) { group in
            // Ends the moment the server closes the connection (stopped, restarting).
            group.addTask { try? await connection.closeFuture.get() }
            group.addTask {
                while !Task.isCancelled {
                    do { try await Task.sleep(for: interval) } catch { return }
                    let ping = Task { try await connection.query("SELECT 1", logger: logger).collect() }
                    if case .success? = await Self.first(within: timeout, { await ping.result }) { continue }
                    if !Task.isCancelled && !connection.isClosed {
                        logger.info("the watching connection to PostgreSQL did not answer a ping: opening another")
                    }
                    return
                }
            }
            await group.next()
            // Closing ends the other child: the close future completes, and an unanswered
            // ping fails; the ping loop's sleep ends by cancellation.
            group.cancelAll()
            try? await connection.close().get()
        }
    }

    /// `body`'s result, or nil if it takes longer than `limit` (then left to finish on its own:
    /// what it awaits must end by other means, which every caller here arranges).
    private static func first<T: Sendable>(within limit: Duration, _ body: @escaping @Sendable () async -> T) async -> T? {
        await withCheckedContinuation { (continuation: CheckedContinuation<T?, Never>) in
            let once = ResumeOnce(continuation)
            Task { once.resume(returning: await body()) }
            Task {
                try? await Task.sleep(for: limit)
                once.resume(returning: nil)
            }
        }
    }

    /// A continuation resumed by whichever comes first.
    private final class ResumeOnce<T: Sendable>: Sendable {
        private let continuation: Mutex<CheckedContinuation<T?, Never>?>
        init(_ continuation: CheckedContinuation<T?, Never>) { self.continuation = Mutex(continuation) }
        func resume(returning value: T?) { continuation.withLock { $0.take() }?.resume(returning: value) }
    }

    /// A connection that could not be opened because nothing answered at the address: refused,
    /// reset or timed out. Not a refusal the server itself sent, nor a failure of this side
    /// (TLS, out of file descriptors): the pool's open connections may still serve, and the
    /// whole hub answering 503 for it would be worse than the waits this bounds.
    static func isUnreachable(_ error: any Error) -> Bool {
        if let psql = error as? PSQLError {
            guard psql.serverInfo == nil, let underlying = psql.underlying else { return false }
            return isNetworkFailure(underlying)
        }
        return isNetworkFailure(error)
    }

    private static func isNetworkFailure(_ error: any Error) -> Bool {
        if error is NIOConnectionError { return true }
        if let error = error as? ChannelError {
            switch error {
            case .connectTimeout, .ioOnClosedChannel, .eof, .alreadyClosed: return true
            default: return false
            }
        }
        if let error = error as? IOError { return [ECONNREFUSED, ECONNRESET, EHOSTUNREACH, ENETUNREACH, ETIMEDOUT].contains(error.errnoCode) }
        return false
    }

    private func mark(down: Bool, _ error: (any Error)?) {
        let (changed, waiters) = state.withLock { s -> (Bool, [CheckedContinuation<Void, any Error>]) in
            guard s.down != down else { return (false, []) }
            s.down = down
            guard down else { return (true, []) }
            let waiting = Array(s.waiters.values)
            s.waiters = [:]
            return (true, waiting)
        }
        guard changed else { return }
        if down {
            logger.warning("PostgreSQL cannot be reached: requests are answered 503 storage_unavailable until it can",
                           metadata: ["error": "\(error.map { String(reflecting: $0) } ?? "")", "waiting_requests": "\(waiters.count)"])
        } else {
            logger.notice("PostgreSQL can be reached again")
        }
        for waiter in waiters { waiter.resume() }
    }
}

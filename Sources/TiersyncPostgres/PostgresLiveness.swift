import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import Synchronization
import TiersyncStorage

/// Watches whether PostgreSQL can be reached, on one connection of its own (outside the
/// pool, whose waits are what it bounds), held open and opened again at once when lost. Only a connection that cannot be opened (refused, reset, timed out) makes the
/// database count as down; a lost connection alone does not (a backend terminated by an
/// administrator, a proxy's idle limit), nor does a refusal PostgreSQL itself answers (too
/// many clients, a failed login: the server is there, and the pool may still hold
/// connections). It counts as up again once a connection opens and answers.
public final class PostgresLiveness: StorageLiveness {
    private struct State {
        var down = false
        var waiters: [UInt64: CheckedContinuation<Void, any Error>] = [:]
        var nextWaiter: UInt64 = 0
    }

    private let state = Mutex(State())
    private let endpoint: PostgresEndpoint
    private let logger: Logger
    /// How long opening the watching connection may take before the database counts as down.
    private let connectTimeout: TimeAmount

    public init(endpoint: PostgresEndpoint, connectTimeout: TimeAmount = .seconds(5),
                logger: Logger = Logger(label: "tiersync.postgres.liveness")) {
        self.endpoint = endpoint
        self.connectTimeout = connectTimeout
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
        configuration.options.connectTimeout = connectTimeout
        var connectionID = 0
        while !Task.isCancelled {
            connectionID += 1
            let connection: PostgresConnection
            do {
                connection = try await PostgresConnection.connect(configuration: configuration, id: connectionID, logger: logger)
            } catch {
                if Task.isCancelled { return }
                if Self.isUnreachable(error) { mark(down: true, error) }
                try? await Task.sleep(for: .seconds(1))
                continue
            }
            mark(down: false, nil)
            // Held open, idle, until the server ends it (stopped, restarting, crashed, the
            // backend terminated) or this task is cancelled; then opened again at once, and
            // only that failing counts. Not pinged: a query sent on a connection the server
            // has just closed can go unanswered for good.
            await withTaskCancellationHandler {
                try? await connection.closeFuture.get()
            } onCancel: {
                connection.close().whenComplete { _ in }
            }
        }
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

import Synchronization

/// At most `limit` of one tenant's pushes judged and written at once in this process; the
/// others wait here, in arrival order, without holding a PostgreSQL connection.
///
/// A tenant's pushes take its `head` lock to write, one at a time, so a third push running
/// beside two only waits inside PostgreSQL for the lock, holding one of the process's few
/// connections (``HubConnectionPool``) while it does. Six heavy pushes of one tenant (three
/// nodes, two in flight each, which the per-node limits allow) held every request connection
/// of a two-core process, and another tenant's ten-change push waited for one behind them.
/// Two at once keep the lock busy: one writes while the next reads and judges.
final class PushAdmission: Sendable {
    private struct State {
        var running = 0
        var waiting: [(id: UInt64, continuation: CheckedContinuation<Void, any Error>)] = []
        var nextID: UInt64 = 0
    }

    let limit: Int
    private let state = Mutex(State())

    init(limit: Int) {
        precondition(limit > 0)
        self.limit = limit
    }

    /// The admissions the current task holds. A push admitted here writes the hub's own
    /// records (erasure acknowledgements) through the same path, which must not wait for a
    /// place it already has: two pushes of erasure requests at once each waited for the
    /// other's place, for ever (helper 112).
    @TaskLocal private static var held: Set<ObjectIdentifier> = []

    /// Runs `body` once admitted (at once when this task already is); a task cancelled while
    /// it waits leaves the line.
    func run<T>(_ body: () async throws -> T) async throws -> T {
        let me = ObjectIdentifier(self)
        let held = Self.held
        if held.contains(me) { return try await body() }
        try await admit()
        defer { leave() }
        return try await Self.$held.withValue(held.union([me])) { try await body() }
    }

    private func admit() async throws {
        let id: UInt64? = state.withLock { s in
            if s.running < limit, s.waiting.isEmpty {
                s.running += 1
                return nil
            }
            s.nextID &+= 1
            return s.nextID
        }
        guard let id else { return }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                enum Outcome { case admitted, cancelled, waiting }
                // Checked again: every place may have come free since the first look.
                let outcome = state.withLock { s -> Outcome in
                    if Task.isCancelled { return .cancelled }
                    if s.running < limit, s.waiting.isEmpty {
                        s.running += 1
                        return .admitted
                    }
                    s.waiting.append((id, continuation))
                    return .waiting
                }
                switch outcome {
                case .admitted: continuation.resume()
                case .cancelled: continuation.resume(throwing: CancellationError())
                case .waiting: break
                }
            }
        } onCancel: {
            let waiter = state.withLock { s -> CheckedContinuation<Void, any Error>? in
                guard let index = s.waiting.firstIndex(where: { $0.id == id }) else { return nil }
                return s.waiting.remove(at: index).continuation
            }
            waiter?.resume(throwing: CancellationError())
        }
    }

    /// Hands the place to the first waiter, or frees it.
    private func leave() {
        let next = state.withLock { s -> CheckedContinuation<Void, any Error>? in
            if s.waiting.isEmpty {
                s.running -= 1
                return nil
            }
            return s.waiting.removeFirst().continuation
        }
        next?.resume()
    }
}

import Synchronization

/// A check whose answer serves every caller for a while, and which never keeps a caller
/// longer than its time limit. A readiness probe is not rate limited (a load balancer's
/// must never be refused), so a flood of them must not become a flood of store writes.
///
/// - Callers arriving while a run is under way wait for that run; callers within
///   `validFor` of its end take its answer.
/// - A run not done within `timeout` answers false. It is not waited for (a store's write
///   probe queued behind a long write cannot be cancelled), and while it still hangs every
///   caller is answered false at once and no second run starts: at most one hangs.
final class SharedCheck: Sendable {
    private struct State {
        var last: (answer: Bool, at: ContinuousClock.Instant)?
        /// The run callers wait for: its answer, or false at its time limit.
        var waiting: Task<Bool, Never>?
        /// The check itself, until it ends (after its time limit, too).
        var hung: Task<Void, Never>?
    }
    private let state = Mutex(State())
    private let validFor: Duration
    private let timeout: Duration

    init(validFor: Duration, timeout: Duration) {
        self.validFor = validFor
        self.timeout = timeout
    }

    /// The answer as described above. `onTimeout` runs once for a run that outlived its
    /// limit (to log it). A caller's cancellation does not cancel a run others share.
    func run(_ check: @escaping @Sendable () async -> Bool, onTimeout: @escaping @Sendable () -> Void = {}) async -> Bool {
        enum Step { case answered(Bool), wait(Task<Bool, Never>) }
        let now = ContinuousClock.now
        let step: Step = state.withLock { s in
            if let last = s.last, now - last.at < validFor { return .answered(last.answer) }
            if let waiting = s.waiting { return .wait(waiting) }
            // The last run outlived its limit and still has not ended: not again.
            if s.hung != nil { return .answered(false) }
            let answer = Answer()
            s.hung = Task { [weak self] in
                answer.give(await check())
                self?.state.withLock { $0.hung = nil }
            }
            let limit = timeout
            let waiting = Task { [weak self] () -> Bool in
                let outcome = await answer.value(within: limit)
                if outcome == nil { onTimeout() }
                let result = outcome ?? false
                self?.state.withLock { s in
                    s.last = (result, ContinuousClock.now)
                    s.waiting = nil
                }
                return result
            }
            s.waiting = waiting
            return .wait(waiting)
        }
        switch step {
        case .answered(let answer): return answer
        case .wait(let task): return await task.value
        }
    }

    /// One run's answer, given once, and waited for at most a time limit.
    private final class Answer: Sendable {
        private struct State {
            var value: Bool?
            var expired = false
            var waiter: CheckedContinuation<Bool?, Never>?
        }
        private let state = Mutex(State())

        func give(_ value: Bool) {
            let waiter = state.withLock { s -> CheckedContinuation<Bool?, Never>? in
                guard s.value == nil else { return nil }
                s.value = value
                defer { s.waiter = nil }
                return s.waiter
            }
            waiter?.resume(returning: value)
        }

        /// The answer, or nil when `limit` passes first.
        func value(within limit: Duration) async -> Bool? {
            let timer = Task { [weak self] in
                try? await Task.sleep(for: limit)
                self?.expire()
            }
            defer { timer.cancel() }
            return await withCheckedContinuation { (continuation: CheckedContinuation<Bool?, Never>) in
                let now: Bool?? = state.withLock { s in
                    if let value = s.value { return .some(value) }
                    if s.expired { return .some(nil) }
                    s.waiter = continuation
                    return .none
                }
                if case .some(let value) = now { continuation.resume(returning: value) }
            }
        }

        private func expire() {
            let waiter = state.withLock { s -> CheckedContinuation<Bool?, Never>? in
                s.expired = true
                defer { s.waiter = nil }
                return s.waiter
            }
            waiter?.resume(returning: nil)
        }
    }
}

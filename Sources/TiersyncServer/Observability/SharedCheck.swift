import Synchronization

/// A check whose answer serves every caller for a while: callers arriving while it runs
/// wait for that run, and callers within `validFor` of its end take its answer. A
/// readiness probe is not rate limited (a load balancer's must never be refused), so a
/// flood of them must not become a flood of store writes.
final class SharedCheck: Sendable {
    private struct State {
        var last: (answer: Bool, at: ContinuousClock.Instant)?
        var running: Task<Bool, Never>?
    }
    private let state = Mutex(State())
    private let validFor: Duration

    init(validFor: Duration) {
        self.validFor = validFor
    }

    /// The answer of a run of `check` that ended less than `validFor` ago, of the run under
    /// way, or of a new run. A caller's cancellation does not cancel a run others share.
    func run(_ check: @escaping @Sendable () async -> Bool) async -> Bool {
        enum Step { case answered(Bool), wait(Task<Bool, Never>) }
        let now = ContinuousClock.now
        let step: Step = state.withLock { s in
            if let last = s.last, now - last.at < validFor { return .answered(last.answer) }
            if let running = s.running { return .wait(running) }
            let task = Task { [weak self] in
                let answer = await check()
                self?.state.withLock { s in
                    s.last = (answer, ContinuousClock.now)
                    s.running = nil
                }
                return answer
            }
            s.running = task
            return .wait(task)
        }
        switch step {
        case .answered(let answer): return answer
        case .wait(let task): return await task.value
        }
    }
}

import Synchronization

/// At most `running` holders at a time and `waiting` more in line, first come first
/// served; past that, ``enter()`` says no at once (the caller refuses the work rather than
/// queueing it without bound).
final class AdmissionGate: Sendable {
    private struct State {
        var running = 0
        var waiting: [CheckedContinuation<Bool, Never>] = []
    }

    private let state = Mutex(State())
    let maxRunning: Int
    let maxWaiting: Int

    init(running: Int, waiting: Int) {
        maxRunning = max(1, running)
        maxWaiting = max(0, waiting)
    }

    /// True once admitted (then ``leave()`` exactly once); false when the line is full.
    func enter() async -> Bool {
        await withCheckedContinuation { continuation in
            enum Decision { case now, wait, full }
            let decision = state.withLock { s -> Decision in
                if s.running < maxRunning {
                    s.running += 1
                    return .now
                }
                guard s.waiting.count < maxWaiting else { return .full }
                s.waiting.append(continuation)
                return .wait
            }
            switch decision {
            case .now: continuation.resume(returning: true)
            case .full: continuation.resume(returning: false)
            case .wait: break
            }
        }
    }

    /// Hands the place to the first in line, or frees it.
    func leave() {
        let next = state.withLock { s -> CheckedContinuation<Bool, Never>? in
            guard !s.waiting.isEmpty else {
                s.running -= 1
                return nil
            }
            return s.waiting.removeFirst()
        }
        next?.resume(returning: true)
    }
}

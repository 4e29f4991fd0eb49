import Synchronization

/// At most `running` holders at a time and `waiting` more in line; past that, ``enter(for:)``
/// says no at once (the caller refuses the work rather than queueing it without bound).
///
/// Fair between keys (tenants): one key may hold at most `waitingPerKey` places in line; the
/// last `waitingPerKey` places are kept for keys with nobody in line; and a freed place goes
/// to the keys in turn, each key's own callers first come first served. A flood of one or a
/// few tenants' logins or compilations therefore fills their shares of the line, not the
/// line: another tenant's caller still gets a place, and waits at most one holder per key
/// ahead of it (the gate was shared, and one tenant's flood answered every other tenant's
/// logins 429). A flood naming many keys still fills it.
final class AdmissionGate: Sendable {
    private struct State {
        var running = 0
        /// Each key's callers in line, oldest first.
        var waiting: [String: [CheckedContinuation<Bool, Never>]] = [:]
        /// The keys with callers in line, in the order they get the next free place.
        var turns: [String] = []
        var waitingCount = 0
    }

    private let state = Mutex(State())
    let maxRunning: Int
    let maxWaiting: Int
    let maxWaitingPerKey: Int

    /// `waitingPerKey` defaults to a quarter of the line (at least one).
    init(running: Int, waiting: Int, waitingPerKey: Int? = nil) {
        maxRunning = max(1, running)
        maxWaiting = max(0, waiting)
        maxWaitingPerKey = min(maxWaiting, max(1, waitingPerKey ?? waiting / 4))
    }

    /// True once admitted (then ``leave()`` exactly once); false when the line, or the
    /// key's share of it, is full.
    func enter(for key: String) async -> Bool {
        await withCheckedContinuation { continuation in
            enum Decision { case now, wait, full }
            let decision = state.withLock { s -> Decision in
                if s.running < maxRunning, s.waitingCount == 0 {
                    s.running += 1
                    return .now
                }
                let queued = s.waiting[key]?.count ?? 0
                // Keys already in line leave the last places to keys that are not.
                let room = queued == 0 ? maxWaiting : maxWaiting - maxWaitingPerKey
                guard s.waitingCount < room, queued < maxWaitingPerKey else { return .full }
                if queued == 0 { s.turns.append(key) }
                s.waiting[key, default: []].append(continuation)
                s.waitingCount += 1
                return .wait
            }
            switch decision {
            case .now: continuation.resume(returning: true)
            case .full: continuation.resume(returning: false)
            case .wait: break
            }
        }
    }

    /// Hands the place to the next key in turn (which goes to the back of the turns if more
    /// of its callers wait), or frees it.
    func leave() {
        let next = state.withLock { s -> CheckedContinuation<Bool, Never>? in
            guard !s.turns.isEmpty else {
                s.running -= 1
                return nil
            }
            let key = s.turns.removeFirst()
            var line = s.waiting[key] ?? []
            let first = line.removeFirst()
            if line.isEmpty {
                s.waiting[key] = nil
            } else {
                s.waiting[key] = line
                s.turns.append(key)
            }
            s.waitingCount -= 1
            return first
        }
        next?.resume(returning: true)
    }
}

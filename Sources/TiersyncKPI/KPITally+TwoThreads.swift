import Foundation
import Synchronization

extension KPITally {
    /// A recount on two threads. `produce` runs on the calling thread (a store's reader, on
    /// its connection's thread) and hands every dialogue it reads to the closure it is given.
    /// Dialogues are gathered in batches; a full batch goes to a second thread when that
    /// thread has at most one batch waiting, and is counted on the calling thread otherwise,
    /// so both threads stay busy whatever reading and counting cost each. The two tallies
    /// are merged at the end, the smaller into the larger: the totals equal those of one
    /// tally that added every dialogue (sums add in any order; first-contact resolution
    /// orders each group when ``totals()`` runs).
    ///
    /// The calling thread never depends on the second one making progress it has not begun:
    /// at the end it takes back the batches still waiting and counts them itself, and if the
    /// second thread never started (one could not be made), counts everything itself. If
    /// `produce` throws, the error is rethrown once the second thread has finished the batch
    /// it holds; the batches not taken are dropped.
    public static func counted(evaluator: KPIEvaluator, batchSize: Int = 2_048,
                               _ produce: (_ add: (DialogueFacts) -> Void) throws -> Void) throws -> KPITally {
        let handoff = BatchHandoff()
        let worker = Thread {
            guard handoff.begin() else { return }
            var tally = KPITally(evaluator: evaluator)
            while let batch = handoff.next() {
                for d in batch { tally.add(d) }
            }
            handoff.finish(with: tally)
        }
        worker.start()

        var tally = KPITally(evaluator: evaluator)
        var batch: [DialogueFacts] = []
        batch.reserveCapacity(batchSize)
        let outcome = Result {
            try produce { d in
                batch.append(d)
                guard batch.count >= batchSize else { return }
                if !handoff.offer(batch) {
                    for d in batch { tally.add(d) }
                }
                batch.removeAll(keepingCapacity: true)
            }
        }
        let (left, other) = handoff.close()
        try outcome.get()
        for d in batch { tally.add(d) }
        for b in left {
            for d in b { tally.add(d) }
        }
        guard var other else { return tally }
        // Merging re-keys the merged tally's groups and nodes into the other's: the cost
        // follows the smaller one, which is usually the reader's (it counts only the batches
        // the second thread had no room for).
        if other.followUpCount < tally.followUpCount { swap(&tally, &other) }
        other.merge(tally)
        return other
    }
}

/// Batches from the reading thread to the counting thread: at most two waiting, so the
/// reader counts the rest itself instead of queueing without bound.
private final class BatchHandoff: Sendable {
    private struct State {
        var waiting: [[DialogueFacts]] = []
        var started = false
        /// The reader finished before the counting thread began: it must count nothing.
        var abandoned = false
        var result: KPITally?
    }

    private let state = Mutex(State())
    /// One signal per batch offered, and one when closed.
    private let available = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)

    /// The counting thread's first call: false when the reader has already finished without it.
    func begin() -> Bool {
        state.withLock { s in
            guard !s.abandoned else { return false }
            s.started = true
            return true
        }
    }

    /// Queues `batch` for the counting thread unless two are already waiting.
    func offer(_ batch: [DialogueFacts]) -> Bool {
        let taken = state.withLock { s in
            guard s.waiting.count < 2 else { return false }
            s.waiting.append(batch)
            return true
        }
        if taken { available.signal() }
        return taken
    }

    /// The counting thread's next batch; nil once the reader has closed and none waits.
    func next() -> [DialogueFacts]? {
        available.wait()
        return state.withLock { s in s.waiting.isEmpty ? nil : s.waiting.removeFirst() }
    }

    func finish(with tally: KPITally) {
        state.withLock { $0.result = tally }
        finished.signal()
    }

    /// No more batches: returns those the counting thread has not taken (for the reader to
    /// count) and its tally, once it has counted what it took; no tally if it never started.
    func close() -> (left: [[DialogueFacts]], tally: KPITally?) {
        let (left, started) = state.withLock { s in
            let left = s.waiting
            s.waiting = []
            if !s.started { s.abandoned = true }
            return (left, s.started)
        }
        guard started else { return (left, nil) }
        available.signal()
        finished.wait()
        return (left, state.withLock { $0.result })
    }
}

import Foundation
import Synchronization

extension KPITally {
    /// A recount on two threads. `produce` runs on the calling thread (a store's reader, on
    /// its connection's thread) and hands every dialogue it reads to the closure it is given.
    /// Dialogues are gathered in batches; a full batch goes to a second thread when that
    /// thread has at most one batch waiting, and is counted on the calling thread otherwise,
    /// so both threads stay busy whatever reading and counting cost each. The second
    /// thread's tally is merged at the end: the totals equal those of one tally that added
    /// every dialogue (sums add in any order; first-contact resolution orders each group
    /// when ``totals()`` runs).
    ///
    /// If `produce` throws, the second thread is stopped before the error is rethrown.
    public static func counted(evaluator: KPIEvaluator, batchSize: Int = 2_048,
                               _ produce: (_ add: (DialogueFacts) -> Void) throws -> Void) throws -> KPITally {
        let handoff = BatchHandoff()
        let worker = Thread {
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
        func flush() {
            if !handoff.offer(batch) {
                for d in batch { tally.add(d) }
            }
            batch.removeAll(keepingCapacity: true)
        }
        let outcome = Result {
            try produce { d in
                batch.append(d)
                if batch.count >= batchSize { flush() }
            }
        }
        for d in batch { tally.add(d) }
        let other = handoff.close()
        try outcome.get()
        tally.merge(other)
        return tally
    }
}

/// Batches from the reading thread to the counting thread: at most two waiting, so the
/// reader counts the rest itself instead of queueing without bound.
private final class BatchHandoff: Sendable {
    private struct State {
        var waiting: [[DialogueFacts]] = []
        var closed = false
        var result: KPITally?
    }

    private let state = Mutex(State())
    /// One signal per batch offered, and one when closed.
    private let available = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)

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

    /// The counting thread's next batch; nil once closed and drained.
    func next() -> [DialogueFacts]? {
        available.wait()
        return state.withLock { s in s.waiting.isEmpty ? nil : s.waiting.removeFirst() }
    }

    func finish(with tally: KPITally) {
        state.withLock { $0.result = tally }
        finished.signal()
    }

    /// No more batches: waits for the counting thread to count those queued and returns its tally.
    func close() -> KPITally {
        state.withLock { $0.closed = true }
        available.signal()
        finished.wait()
        return state.withLock { $0.result! }
    }
}

import Foundation
import TiersyncCore

/// Wakes long-polling pulls when a tenant's change log grows. A generation counter per
/// tenant avoids lost wake-ups: a waiter states the generation it last saw and returns at
/// once if the log has moved on since.
actor ChangeNotifier {
    private var generations: [TenantID: UInt64] = [:]
    private var waiters: [TenantID: [UUID: CheckedContinuation<Void, Never>]] = [:]
    private var closed = false

    func generation(_ tenant: TenantID) -> UInt64 { generations[tenant] ?? 0 }

    func signal(_ tenant: TenantID) {
        generations[tenant, default: 0] += 1
        if let list = waiters.removeValue(forKey: tenant) {
            for c in list.values { c.resume() }
        }
    }

    /// Returns when `tenant`'s generation moves past `seen`, after `timeout`, or when the
    /// calling task is cancelled (a request stopped because its storage went away).
    func wait(_ tenant: TenantID, after seen: UInt64, timeout: Duration) async {
        if generation(tenant) != seen || closed { return }
        let id = UUID()
        // The timer resumes the waiter if no signal did; whichever comes second finds
        // nothing to resume, so nothing leaks.
        let timer = Task {
            try? await Task.sleep(for: timeout)
            self.expire(id, tenant)
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                // Cancelled before it waited: the handler below found nothing to end.
                if Task.isCancelled { c.resume() } else { waiters[tenant, default: [:]][id] = c }
            }
        } onCancel: {
            Task { await self.expire(id, tenant) }
        }
        timer.cancel()
    }

    /// Ends every wait, now and later: the hub is shutting down and open long-polls
    /// answer at once instead of holding the shutdown up.
    func close() {
        closed = true
        for list in waiters.values { for c in list.values { c.resume() } }
        waiters = [:]
    }

    var isClosed: Bool { closed }

    private func expire(_ id: UUID, _ tenant: TenantID) {
        waiters[tenant]?.removeValue(forKey: id)?.resume()
    }
}

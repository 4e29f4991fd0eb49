import Synchronization

/// Bytes of large push bodies, once inflated, that the hub decodes and applies at once,
/// across every tenant, and the share of them one tenant may hold.
///
/// Each node may have only a couple of pushes in flight, but nothing bounded the nodes: a
/// 64 MiB push decoded into changes takes about four and a half times its size, and four
/// of them at once took the hub to 1.15 GB, so a tenant's dealers pushing their largest
/// batches together could exhaust the machine and stop every tenant. A push whose body is
/// large (``BodyCodec/offPoolBytes``, as sent or inflated) reserves its inflated size here
/// before it is inflated, and holds it until its answer is written. Past the budget it
/// waits its turn, in order of arrival, at most ``waitLimit``; then it is answered 503 with
/// `Retry-After`, and the agent retries. One tenant never holds more than ``tenantShare``,
/// so the rest of the budget stays open to the others. The agents' everyday pushes are
/// small and never wait here.
public final class PushMemoryBudget: Sendable {
    /// What a granted reservation holds; ``release()`` gives it back (once).
    public final class Reservation: Sendable {
        fileprivate let budget: PushMemoryBudget
        fileprivate let tenant: String
        public let bytes: Int
        private let released = Atomic<Bool>(false)

        fileprivate init(budget: PushMemoryBudget, tenant: String, bytes: Int) {
            (self.budget, self.tenant, self.bytes) = (budget, tenant, bytes)
        }

        public func release() {
            guard !released.exchange(true, ordering: .acquiringAndReleasing) else { return }
            budget.give(back: self)
        }

        deinit { release() }
    }

    public let capacity: Int
    public let tenantShare: Int
    public let waitLimit: Duration

    private struct Waiter {
        let id: UInt64
        let tenant: String
        let bytes: Int
        let continuation: CheckedContinuation<Bool, Never>
    }

    private struct State {
        var used = 0
        var byTenant: [String: Int] = [:]
        var waiting: [Waiter] = []
        var nextID: UInt64 = 0

        func fits(_ bytes: Int, tenant: String, capacity: Int, share: Int) -> (global: Bool, tenant: Bool) {
            (used + bytes <= capacity, byTenant[tenant, default: 0] + bytes <= share)
        }

        mutating func take(_ bytes: Int, tenant: String) {
            used += bytes
            byTenant[tenant, default: 0] += bytes
        }

        /// Waiters that may go now, in order of arrival: each that fits both bounds; a waiter
        /// held only by its tenant's share is passed over (the others are not held behind a
        /// tenant at its share), and the first held by the budget itself stops the pass, so a
        /// large push is not overtaken for ever by smaller ones.
        mutating func admitWaiting(capacity: Int, share: Int) -> [CheckedContinuation<Bool, Never>] {
            var admitted: [CheckedContinuation<Bool, Never>] = []
            var index = 0
            while index < waiting.count {
                let waiter = waiting[index]
                let fit = fits(waiter.bytes, tenant: waiter.tenant, capacity: capacity, share: share)
                if !fit.tenant { index += 1; continue }
                if !fit.global { break }
                take(waiter.bytes, tenant: waiter.tenant)
                admitted.append(waiter.continuation)
                waiting.remove(at: index)
            }
            return admitted
        }
    }

    private let state = Mutex(State())

    /// `capacity` bytes in all (at least `largestBody`), one tenant at most half of them (at
    /// least `largestBody`, so the largest push a node may send always fits).
    public init(capacity: Int, largestBody: Int, waitLimit: Duration) {
        self.capacity = max(capacity, largestBody)
        tenantShare = max(self.capacity / 2, largestBody)
        self.waitLimit = waitLimit
    }

    /// The bytes held now, in all and by `tenant`, and the pushes waiting.
    public func usage(of tenant: String? = nil) -> (used: Int, tenant: Int, waiting: Int) {
        state.withLock { s in (s.used, tenant.map { s.byTenant[$0, default: 0] } ?? 0, s.waiting.count) }
    }

    /// Reserves `bytes` for `tenant`: at once when they fit and nobody waits ahead, else after
    /// waiting at most ``waitLimit``; nil when the wait ran out or the task was cancelled.
    public func reserve(_ bytes: Int, tenant: String) async -> Reservation? {
        let bytes = max(bytes, 0)
        let (capacity, share) = (self.capacity, tenantShare)
        let immediate: Bool? = state.withLock { s in
            let fit = s.fits(bytes, tenant: tenant, capacity: capacity, share: share)
            guard fit.global, fit.tenant else { return nil }
            // Behind a waiter held by the budget, a newcomer queues too (it would overtake it).
            if s.waiting.contains(where: { s.fits($0.bytes, tenant: $0.tenant, capacity: capacity, share: share).tenant }) { return nil }
            s.take(bytes, tenant: tenant)
            return true
        }
        if immediate == true { return Reservation(budget: self, tenant: tenant, bytes: bytes) }
        let id = state.withLock { s -> UInt64 in
            s.nextID += 1
            return s.nextID
        }
        let granted = await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                let admitted = state.withLock { s -> [CheckedContinuation<Bool, Never>] in
                    s.waiting.append(Waiter(id: id, tenant: tenant, bytes: bytes, continuation: continuation))
                    // Anything given back since the check above.
                    return s.admitWaiting(capacity: capacity, share: share)
                }
                for waiter in admitted { waiter.resume(returning: true) }
                // Cancelled before it queued: the handler below found nothing to end.
                if Task.isCancelled { abandon(id) }
                let limit = waitLimit
                Task { [weak self] in
                    try? await Task.sleep(for: limit)
                    self?.abandon(id)
                }
            }
        } onCancel: {
            abandon(id)
        }
        return granted ? Reservation(budget: self, tenant: tenant, bytes: bytes) : nil
    }

    /// Ends a wait that was not granted (its time ran out, or its request went away).
    private func abandon(_ id: UInt64) {
        let (capacity, share) = (self.capacity, tenantShare)
        let (gone, admitted) = state.withLock { s -> (CheckedContinuation<Bool, Never>?, [CheckedContinuation<Bool, Never>]) in
            guard let index = s.waiting.firstIndex(where: { $0.id == id }) else { return (nil, []) }
            let waiter = s.waiting.remove(at: index)
            // A large waiter leaving may let smaller ones behind it go.
            return (waiter.continuation, s.admitWaiting(capacity: capacity, share: share))
        }
        gone?.resume(returning: false)
        for waiter in admitted { waiter.resume(returning: true) }
    }

    fileprivate func give(back reservation: Reservation) {
        let (capacity, share) = (self.capacity, tenantShare)
        let admitted = state.withLock { s -> [CheckedContinuation<Bool, Never>] in
            s.used -= reservation.bytes
            let left = s.byTenant[reservation.tenant, default: 0] - reservation.bytes
            s.byTenant[reservation.tenant] = left > 0 ? left : nil
            return s.admitWaiting(capacity: capacity, share: share)
        }
        for waiter in admitted { waiter.resume(returning: true) }
    }
}

import Synchronization
import TiersyncCore
import TiersyncStore

/// Per-node admission: a token bucket for the request rate and a cap on requests in
/// flight, so one credential (a runaway agent, a hostile node) cannot monopolise a hub
/// that serves every tenant. Keys are authenticated nodes only, so the table is bounded by
/// the nodes enrolled.
public final class RequestRateLimiter: Sendable {
    public struct Settings: Sendable {
        public var requestsPerSecond: Double
        public var burst: Double
        public var maxConcurrent: Int
    }

    /// Why a request was not admitted, and when to come back.
    public enum Refusal: Sendable, Equatable {
        case rate(retryAfterSeconds: Int)
        case concurrency(retryAfterSeconds: Int)
    }

    private struct Bucket {
        var tokens: Double
        var refilledAt: ContinuousClock.Instant
        var inFlight = 0
    }

    private struct Key: Hashable {
        let tenant: TenantID
        let node: NodeID
        init(_ p: Principal) { (tenant, node) = (p.tenant, p.node) }
    }

    private let settings: Settings
    private let buckets = Mutex<[Key: Bucket]>([:])

    public init(_ settings: Settings) {
        self.settings = settings
    }

    /// Admits one request of `principal` (and counts it in flight until ``finish(_:)``),
    /// or says why not.
    public func admit(_ principal: Principal, now: ContinuousClock.Instant = .now) -> Refusal? {
        let s = settings
        return buckets.withLock { table in
            var bucket = table[Key(principal)] ?? Bucket(tokens: s.burst, refilledAt: now)
            let elapsed = now - bucket.refilledAt
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            bucket.tokens = min(s.burst, bucket.tokens + max(0, seconds) * s.requestsPerSecond)
            bucket.refilledAt = now
            defer { table[Key(principal)] = bucket }
            guard bucket.inFlight < s.maxConcurrent else { return .concurrency(retryAfterSeconds: 1) }
            guard bucket.tokens >= 1 else {
                let wait = (1 - bucket.tokens) / max(s.requestsPerSecond, 0.001)
                return .rate(retryAfterSeconds: max(1, Int(min(wait.rounded(.up), 3600))))
            }
            bucket.tokens -= 1
            bucket.inFlight += 1
            return nil
        }
    }

    /// Ends a request admitted by ``admit(_:now:)``.
    public func finish(_ principal: Principal) {
        buckets.withLock { table in
            if var bucket = table[Key(principal)] {
                bucket.inFlight = max(0, bucket.inFlight - 1)
                table[Key(principal)] = bucket
            }
        }
    }
}

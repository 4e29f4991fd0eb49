import Synchronization
import TiersyncCore
import TiersyncStore

/// Admission per caller: a token bucket for the request rate and a cap on requests in
/// flight, so one caller (a runaway agent, a hostile node, an address flooding the public
/// routes) cannot monopolise a hub that serves every tenant.
///
/// The hub keys authenticated requests by node (``NodeKey``; bounded by the nodes
/// enrolled) and unauthenticated ones by remote address. The table never holds more than
/// `maxKeys` callers: past that, idle callers whose bucket has refilled are forgotten
/// (they would start full anyway), and if none is, a new caller is refused.
public final class RequestRateLimiter<Key: Hashable & Sendable>: Sendable {
    public struct Settings: Sendable {
        public var requestsPerSecond: Double
        public var burst: Double
        public var maxConcurrent: Int
        public var maxKeys = 100_000

        public init(requestsPerSecond: Double, burst: Double, maxConcurrent: Int) {
            self.requestsPerSecond = requestsPerSecond
            self.burst = burst
            self.maxConcurrent = maxConcurrent
        }
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

    private let settings: Settings
    private let buckets = Mutex<[Key: Bucket]>([:])

    public init(_ settings: Settings) {
        self.settings = settings
    }

    /// Admits one request of `key` (and counts it in flight until ``finish(_:)``), or says
    /// why not. `cost` tokens are taken (a failed authentication may cost more).
    public func admit(_ key: Key, cost: Double = 1, now: ContinuousClock.Instant = .now) -> Refusal? {
        let s = settings
        return buckets.withLock { table in
            if table[key] == nil, table.count >= s.maxKeys {
                table = table.filter { $0.value.inFlight > 0 || Self.refill($0.value, s, now).tokens < s.burst }
                guard table.count < s.maxKeys else { return .rate(retryAfterSeconds: 1) }
            }
            var bucket = Self.refill(table[key] ?? Bucket(tokens: s.burst, refilledAt: now), s, now)
            defer { table[key] = bucket }
            guard bucket.inFlight < s.maxConcurrent else { return .concurrency(retryAfterSeconds: 1) }
            guard bucket.tokens >= cost else {
                let wait = (cost - bucket.tokens) / max(s.requestsPerSecond, 0.001)
                return .rate(retryAfterSeconds: max(1, Int(min(wait.rounded(.up), 3600))))
            }
            bucket.tokens -= cost
            bucket.inFlight += 1
            return nil
        }
    }

    /// Takes `cost` tokens from `key` (into debt if need be), without admitting anything.
    public func charge(_ key: Key, _ cost: Double, now: ContinuousClock.Instant = .now) {
        let s = settings
        buckets.withLock { table in
            if table[key] == nil, table.count >= s.maxKeys {
                table = table.filter { $0.value.inFlight > 0 || Self.refill($0.value, s, now).tokens < s.burst }
                guard table.count < s.maxKeys else { return }
            }
            var bucket = Self.refill(table[key] ?? Bucket(tokens: s.burst, refilledAt: now), s, now)
            bucket.tokens = max(-s.burst, bucket.tokens - cost)
            table[key] = bucket
        }
    }

    /// Ends a request admitted by ``admit(_:cost:now:)``.
    public func finish(_ key: Key) {
        buckets.withLock { table in
            if var bucket = table[key] {
                bucket.inFlight = max(0, bucket.inFlight - 1)
                table[key] = bucket
            }
        }
    }

    private static func refill(_ bucket: Bucket, _ s: Settings, _ now: ContinuousClock.Instant) -> Bucket {
        var bucket = bucket
        let elapsed = now - bucket.refilledAt
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        bucket.tokens = min(s.burst, bucket.tokens + max(0, seconds) * s.requestsPerSecond)
        bucket.refilledAt = now
        return bucket
    }
}

/// An authenticated node, as the per-node limiter keys it.
public struct NodeKey: Hashable, Sendable {
    public let tenant: TenantID
    public let node: NodeID

    public init(_ principal: Principal) { (tenant, node) = (principal.tenant, principal.node) }
}

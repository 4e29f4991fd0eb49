// What the parent's pulls said of its notices of changes refused above it
// (`SyncAgent.takeUpstreamRefusals()`), and when a take that came to nothing is tried again.

/// The parent's offer of notices, as the last pull named it, and the last fruitless take.
///
/// A fruitless offer (a take that failed, or fell short of the newest notice the pull named)
/// is not named as newer to the parent's pulls for a while, else each long-poll would be
/// answered at once, for ever. How long depends on why:
/// - a take that **failed** (the parent out of reach, or refusing the request: a dealer whose
///   move was just undone gets 401 until its country has learned of it) is tried again after
///   2 s, doubling with each failure in a row up to a minute (helper 87: a flat minute held a
///   moved dealer's writes back 75 s while every `status` said nothing was waiting);
/// - a take that **fell short** (the parent has nothing behind the notice it named: an
///   unreadable notice) waits a minute, since asking sooner changes nothing.
struct RefusalOffer: Sendable {
    /// The newest notice the last pull named.
    var newest: Int64?
    /// The newest notice of the last fruitless take, and when it came to nothing.
    private(set) var fruitless: Int64?
    private(set) var fruitlessAt: ContinuousClock.Instant?
    /// How long the last fruitless take is not tried again.
    private(set) var pause: Duration = .seconds(60)
    /// Failed takes in a row.
    private(set) var failures = 0

    static let longestPause: Duration = .seconds(60)
    static let firstRetryAfterFailure: Duration = .seconds(2)

    /// The fruitless notice, while its pause lasts at `now`.
    func recentlyFruitless(now: ContinuousClock.Instant = .now) -> Int64? {
        guard let at = fruitlessAt, now - at < pause else { return nil }
        return fruitless
    }

    /// What is left of the pause at `now`, if one is running: a long-poll waits no longer,
    /// so the take is tried again when the pause ends rather than when the poll does.
    func remainingPause(now: ContinuousClock.Instant = .now) -> Duration? {
        guard let at = fruitlessAt, now - at < pause else { return nil }
        return pause - (now - at)
    }

    /// A take of `offered` failed.
    mutating func failed(_ offered: Int64, now: ContinuousClock.Instant = .now) {
        failures = min(failures + 1, 16)
        var pause = Self.firstRetryAfterFailure
        for _ in 1..<failures where pause < Self.longestPause { pause = pause * 2 }
        self.pause = min(pause, Self.longestPause)
        (fruitless, fruitlessAt) = (offered, now)
    }

    /// A take of `offered` came back with nothing new behind it.
    mutating func fellShort(_ offered: Int64, now: ContinuousClock.Instant = .now) {
        failures = 0
        pause = Self.longestPause
        (fruitless, fruitlessAt) = (offered, now)
    }

    /// A take reached what it was offered.
    mutating func succeeded() {
        failures = 0
    }
}

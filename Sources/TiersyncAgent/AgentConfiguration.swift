import Foundation
import TiersyncCore
import TiersyncStore

/// How an agent talks to its parent. Defaults are the production defaults.
public struct AgentConfiguration: Sendable {
    /// The parent's base URL, e.g. `https://hub.example.com:8443`.
    public var parentURL: String
    /// A PEM file with the CA to trust for the parent's certificate; nil trusts the
    /// system's roots.
    public var caFile: String?
    /// Allow `http://` parents (development only).
    public var allowInsecureHTTP = false
    /// Changes per push request.
    public var pushBatchSize = 500
    /// Changes per pull page.
    public var pullPageSize = 1_000
    /// How often the agent looks for new local writes (written by this or another process).
    public var localPollInterval: Duration = .milliseconds(200)
    /// Seconds a pull may wait at the hub for new changes (long-poll).
    public var pullWaitSeconds = 25.0
    /// The longest one exchange with the parent may take, from sending the request to the
    /// last byte of the answer, on top of a long-poll's wait; a push gets four times it.
    /// A parent that sends its answer's head and then nothing (or trickles it) cannot hold
    /// a loop for longer.
    public var requestTimeout: Duration = .seconds(30)
    /// Retry delays while the parent is unreachable: exponential from `retryInitial` up to
    /// `retryMax`, with jitter.
    public var retryInitial: Duration = .milliseconds(250)
    public var retryMax: Duration = .seconds(30)
    /// Gzip request bodies larger than this many bytes.
    public var compressAboveBytes = 1_024
    /// Follow HQ's governance releases (long-polling the parent like pulls do).
    public var followGovernance = true
    /// How often the node turns changed KPI accumulators into snapshot records (while it
    /// follows governance, which says what its KPIs are).
    public var kpiInterval: Duration = .seconds(2)
    /// This node's wall clock (ms since the epoch), compared with the parent's on every
    /// push. Tests give a clock that is off.
    public var wallClock: @Sendable () -> UInt64 = { WallClock.nowMillis() }
    /// How often the node evaluates its escalation and proactive-contact rules
    /// (``RulesRunner``); nil: never. A country node runs them itself, with its directory.
    public var rulesInterval: Duration? = .seconds(30)
    /// The time those rules are evaluated at (what they write is stamped with the real
    /// clock). Tests compress time with a clock of their own.
    public var rulesClock: @Sendable () -> UInt64 = { WallClock.nowMillis() }

    /// How often the node measures its lag (``LagReport``: changes waiting to go upward and
    /// the oldest one's age); nil: it never reports. It reports when what waits changed
    /// since its last report, and at least every ``statusHeartbeat``.
    public var statusInterval: Duration? = .seconds(5)
    public var statusHeartbeat: Duration = .seconds(300)
    /// Lag reports of the nodes below, sent upward with the node's own (a country node
    /// relays its dealers'); nil for a dealer.
    public var relayedLag: (@Sendable () async -> [LagReport])?
    /// The node's scope, for evicting records whose route leaves it after a pulled page
    /// (``NodeStore/evict(outside:touchedBy:)``): nil answers "unknown, evict nothing". A
    /// country node gives its subtree from the directory it mirrors; the default is the node
    /// alone, right for a dealer (or an insurer's agent), which has no node below it.
    public var scope: (@Sendable (NodeID) async -> Scope?) = { Scope(nodes: [$0]) }
    /// The scope of a node below this one, by which an erasure request it made is judged
    /// when the request comes from the parent (``ParentGate``: a request erases only what is
    /// routed into the scope of the node that asked); nil from it: not known here, the
    /// parent's judgement stands. This node's own requests are judged by ``scope``. A dealer
    /// has no node below it (the default); a country node gives its subtree's from the
    /// directory it mirrors.
    public var scopeBelow: (@Sendable (NodeID) async -> Scope?) = { _ in nil }
    /// How long the node's store keeps superseded log entries and tombstones, and how often
    /// the agent compacts it (docs/PRIVACY.md, "Bounded storage"); nil: the agent does not
    /// compact (a country node's hub compacts the store it shares with its agent).
    public var retention: RetentionPolicy? = .default

    public init(parentURL: String, caFile: String? = nil) {
        self.parentURL = parentURL
        self.caFile = caFile
    }
}

/// Exponential backoff with jitter: spreads reconnecting agents so a restarted hub is not
/// hit by all of them in the same instant.
struct Backoff {
    let initial: Duration
    let maximum: Duration
    private(set) var attempt = 0

    init(initial: Duration, maximum: Duration) {
        self.initial = initial
        self.maximum = maximum
    }

    mutating func next() -> Duration {
        let exponent = min(attempt, 20)
        attempt += 1
        let ceiling = min(initial * (1 << exponent), maximum)
        let millis = Double(ceiling.components.seconds) * 1000 + Double(ceiling.components.attoseconds) / 1e15
        return .milliseconds(Int64(millis * Double.random(in: 0.5...1.0)))
    }

    mutating func reset() { attempt = 0 }
}

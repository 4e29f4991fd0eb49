import CoreMetrics
import Metrics
import Foundation
import Prometheus
import Synchronization
import TiersyncCore

/// A hub's metrics, in the Prometheus text format at `GET /metrics`.
///
/// What happens (requests, ingested and refused changes, long-poll waiters) is recorded
/// through swift-metrics instruments made by a ``PrometheusMetricsFactory`` of this hub's
/// own registry, not the process-wide `MetricsSystem`: one process may run several hubs (a
/// country node runs one beside its agent; the tests run dozens), and each answers for
/// its own. What is (quarantine size, open conflicts, nodes by state, each node's lag and
/// last sighting) is read from the stores at every scrape (``ScrapeGauges``).
///
/// Every series is labelled with its tenant. A label's value never comes from a request's
/// bytes unchecked: tenants and nodes are the authenticated caller's, routes come from
/// ``HubRoutes``, refusal reasons from the store's fixed codes.
public final class HubMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    let factory: PrometheusMetricsFactory
    let scraped: ScrapeGauges

    public init() {
        var factory = PrometheusMetricsFactory(registry: registry)
        // Pushes and pulls take milliseconds; long-polls up to a minute.
        factory.durationHistogramBuckets[Name.requestDuration.rawValue] = [
            .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
            .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30), .seconds(60),
        ]
        self.factory = factory
        scraped = ScrapeGauges(registry: registry)
    }

    /// Every metric's name, with the help text a scrape prints for it.
    enum Name: String, CaseIterable {
        case changesIngested = "tiersync_changes_ingested_total"
        case changesDuplicate = "tiersync_changes_duplicate_total"
        case changesRefused = "tiersync_changes_refused_total"
        case requests = "tiersync_requests_total"
        case requestDuration = "tiersync_request_duration_seconds"
        case longPollWaiters = "tiersync_long_poll_waiters"
        case quarantined = "tiersync_quarantined_changes"
        case quarantineBytes = "tiersync_quarantine_bytes"
        case quarantineUnkept = "tiersync_quarantine_unkept_changes"
        case conflicts = "tiersync_open_conflicts"
        case nodes = "tiersync_nodes"
        case nodeLastSeen = "tiersync_node_last_seen_timestamp_seconds"
        case nodePending = "tiersync_node_pending_changes"
        case nodeOldestPending = "tiersync_node_oldest_pending_seconds"
        case nodeLagReported = "tiersync_node_lag_reported_timestamp_seconds"
        case nodeClockOffset = "tiersync_node_clock_offset_seconds"
        case storageReachable = "tiersync_storage_reachable"
        case storageUnavailable = "tiersync_storage_unavailable_responses_total"
        case connectionsRefused = "tiersync_connections_refused_total"

        var help: String {
            switch self {
            case .changesIngested: "Changes stored for the first time from pushes (a tenant's log grew by them)."
            case .changesDuplicate: "Changes pushed again that were already stored (a retry), acknowledged without effect."
            case .changesRefused: "Changes refused on push and quarantined, by reason code."
            case .requests: "Requests of authenticated nodes, by route and HTTP status."
            case .requestDuration: "Time to answer a node's request, by route (long-polls include their wait)."
            case .longPollWaiters: "Long-polls waiting for news right now, by feed (changes or governance)."
            case .quarantined: "Changes held in quarantine (refused, kept with their reason)."
            case .quarantineBytes: "Bytes the quarantine keeps (the measure of its quota: each kept change's JSON and reason)."
            case .quarantineUnkept: "Refusals answered but not kept since the tenant's store began: the quarantine's quota was full."
            case .conflicts: "Concurrent edits that lost, kept for review."
            case .nodes: "Nodes by state: active (seen in the last 15 minutes), silent, never_seen, decommissioned."
            case .nodeLastSeen: "When the node last made an authenticated request (Unix seconds)."
            case .nodePending: "Changes waiting at the node to go upward, as it last reported."
            case .nodeOldestPending: "Age of the oldest change waiting at the node to go upward, as it last reported."
            case .nodeLagReported: "When the node measured the lag it last reported (Unix seconds)."
            case .nodeClockOffset: "How far the node's clock runs ahead of its parent's (negative: behind), measured at its last push in the last hour; absent when none."
            case .storageReachable: "1 while the hub's storage answers, 0 while its PostgreSQL watch finds the database gone (the store-read gauges then keep their last values)."
            case .storageUnavailable: "Requests answered 503 storage_unavailable because the hub's PostgreSQL was gone (before authentication: not counted by tenant)."
            case .connectionsRefused: "Connections closed as soon as they were accepted: their address held its limit of connections (per_address), or the hub held its total (before authentication: not counted by tenant)."
            }
        }
    }

    /// The route labels: one per route of ``HubRoutes`` (never a raw path, which a caller
    /// could vary without bound).
    static func routeLabel(method: String, path: String) -> String? {
        HubRoutes.all.first { $0.method == method && $0.path == path }?.name
    }

    // MARK: Recording

    func recordRequest(tenant: TenantID, route: String, status: Int, nanoseconds: Int64) {
        CoreMetrics.Counter(label: Name.requests.rawValue, dimensions: [("tenant", tenant.rawValue), ("route", route), ("code", String(status))],
                factory: factory).increment()
        CoreMetrics.Timer(label: Name.requestDuration.rawValue, dimensions: [("tenant", tenant.rawValue), ("route", route)],
                      factory: factory).recordNanoseconds(nanoseconds)
    }

    func recordPush(tenant: TenantID, applied: Int, duplicates: Int, refusedByCode: [String: Int]) {
        let dimensions = [("tenant", tenant.rawValue)]
        if applied > 0 { CoreMetrics.Counter(label: Name.changesIngested.rawValue, dimensions: dimensions, factory: factory).increment(by: applied) }
        if duplicates > 0 { CoreMetrics.Counter(label: Name.changesDuplicate.rawValue, dimensions: dimensions, factory: factory).increment(by: duplicates) }
        for (code, count) in refusedByCode {
            CoreMetrics.Counter(label: Name.changesRefused.rawValue, dimensions: dimensions + [("reason", code)], factory: factory).increment(by: count)
        }
    }

    /// Counts a request answered 503 because the storage was gone (``StorageLivenessMiddleware``):
    /// it never reached authentication, so ``recordRequest(tenant:route:status:nanoseconds:)``
    /// could not count it.
    func recordConnectionRefused(_ reason: ConnectionLimiter.Refusal) {
        CoreMetrics.Counter(label: Name.connectionsRefused.rawValue, dimensions: [("reason", reason.rawValue)], factory: factory).increment()
    }

    func recordStorageUnavailable() {
        CoreMetrics.Counter(label: Name.storageUnavailable.rawValue, dimensions: [], factory: factory).increment()
    }

    /// Counts a long-poll as waiting while `body` runs.
    func waiting<T>(tenant: TenantID, feed: String, _ body: () async throws -> T) async rethrows -> T {
        let meter = CoreMetrics.Meter(label: Name.longPollWaiters.rawValue, dimensions: [("tenant", tenant.rawValue), ("feed", feed)], factory: factory)
        meter.increment()
        defer { meter.decrement() }
        return try await body()
    }

    // MARK: Exposition

    /// The registry in the Prometheus text format, with a `# HELP` line before each
    /// metric's `# TYPE` (swift-metrics instruments carry no help text of their own, and
    /// `promtool check metrics` wants one for every metric).
    func exposition() -> String {
        let text = registry.emitToString()
        var out = ""
        out.reserveCapacity(text.utf8.count + 2048)
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("# TYPE ") {
                let name = line.dropFirst(7).prefix { $0 != " " }
                if let metric = Name(rawValue: String(name)) { out += "# HELP \(name) \(metric.help)\n" }
            }
            if line.hasPrefix("# HELP ") { continue }
            out += line
            out += "\n"
        }
        while out.hasSuffix("\n\n") { out.removeLast() }
        return out
    }
}

/// Gauges set from the stores at each scrape. A series whose subject is gone (a node
/// decommissioned and removed, a tenant no longer open) is unregistered, not left at its
/// last value.
final class ScrapeGauges: Sendable {
    private let registry: PrometheusCollectorRegistry
    private let current = Mutex<[String: [String: Prometheus.Gauge]]>([:])

    init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
    }

    /// Sets every series of `name` to `values` (labels → value) and unregisters the others.
    /// Scrapes may overlap: each replaces a metric's series under one lock (in memory only),
    /// so one cannot unregister a series the other has just set.
    func set(_ name: HubMetrics.Name, _ values: [(labels: [(String, String)], value: Double)]) {
        current.withLock { all in
            var next: [String: Prometheus.Gauge] = [:]
            for (labels, value) in values {
                let key = labels.map { "\($0.0)=\($0.1)" }.joined(separator: ",")
                // No help text here: `HubMetrics.exposition()` adds it, the same for every metric.
                let gauge = registry.makeGauge(descriptor: MetricNameDescriptor(metricName: name.rawValue, unitName: "", helpText: ""), labels: labels)
                gauge.set(value)
                next[key] = gauge
            }
            for (key, gauge) in all[name.rawValue] ?? [:] where next[key] == nil {
                registry.unregisterGauge(gauge)
            }
            all[name.rawValue] = next
        }
    }
}

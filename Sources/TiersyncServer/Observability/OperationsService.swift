import Crypto
import Foundation
import Hummingbird
import Logging
import TiersyncCore
import TiersyncStorage
import TiersyncStore

/// The operations routes: `/healthz` (liveness), `/readyz` (readiness) and `/metrics`
/// (Prometheus). None takes a node's credential. The probes say nothing about tenants or
/// nodes; `/metrics` does, so it wants the hub's metrics token
/// (``HubConfiguration/metricsToken``) as a bearer token and is off without one.
struct OperationsService: Sendable {
    let directory: any NodeDirectory
    let metrics: HubMetrics
    let notifiers: [ChangeNotifier]
    let codec: BodyCodec
    /// SHA-256 of the metrics token, or nil when `/metrics` is off.
    let metricsTokenDigest: [UInt8]?
    /// The watch of the hub's database (PostgreSQL), if any: while it finds the database
    /// gone, `/metrics` reads no store.
    let storageLiveness: (any StorageLiveness)?
    /// Longest a readiness probe waits for the stores.
    static let probeTimeout: Duration = .seconds(3)
    /// The stores' check, shared by the readiness probes of a second (they are not rate
    /// limited: each running its own write probe, a flood of them would load every store).
    let storesCheck = SharedCheck(validFor: .seconds(1), timeout: probeTimeout)
    /// A node not seen for this long counts as silent.
    static let silentAfterMillis: UInt64 = 15 * 60_000

    init(directory: any NodeDirectory, metrics: HubMetrics, notifiers: [ChangeNotifier], codec: BodyCodec, metricsToken: String?,
         storageLiveness: (any StorageLiveness)? = nil) {
        self.directory = directory
        self.storageLiveness = storageLiveness
        self.metrics = metrics
        self.notifiers = notifiers
        self.codec = codec
        metricsTokenDigest = metricsToken.map { Array(SHA256.hash(data: Data($0.utf8))) }
    }

    /// `GET /healthz`: the process is up and answering.
    func liveness(_ request: Request, _ context: HubRequestContext) async throws -> Response {
        try codec.encode(["status": "ok"], for: request)
    }

    /// `GET /readyz`: the listener answers (this is it), the hub is not shutting down, and
    /// its catalog and open stores take a write lock within ``probeTimeout``. 503 otherwise,
    /// with which check failed (the details go to the log, not to an anonymous caller).
    func readiness(_ request: Request, _ context: HubRequestContext) async throws -> Response {
        for notifier in notifiers where await notifier.isClosed {
            return try codec.encode(["status": "not_ready", "failed": "shutting_down"], status: .serviceUnavailable, for: request)
        }
        let directory = self.directory
        let logger = context.logger
        let writable = await storesCheck.run({
            do {
                try await directory.probeWritable()
                return true
            } catch {
                logger.warning("not ready: stores not writable", metadata: ["error": "\(error)"])
                return false
            }
        }, onTimeout: {
            logger.warning("not ready: stores not writable", metadata: ["error": "\(ProbeTimedOut())"])
        })
        // A stop that began while the check ran says so (the check may have said ready).
        for notifier in notifiers where await notifier.isClosed {
            return try codec.encode(["status": "not_ready", "failed": "shutting_down"], status: .serviceUnavailable, for: request)
        }
        guard writable else {
            return try codec.encode(["status": "not_ready", "failed": "stores_writable"], status: .serviceUnavailable, for: request)
        }
        return try codec.encode(["status": "ready"], for: request)
    }

    /// `GET /metrics`: the Prometheus text format (version 0.0.4), every tenant this hub
    /// serves. Needs `Authorization: Bearer <metrics token>`.
    func metrics(_ request: Request, _ context: HubRequestContext) async throws -> Response {
        guard let expected = metricsTokenDigest else {
            throw APIError(.forbidden, "metrics_disabled", "this hub serves no metrics: start it with --metrics-token-file")
        }
        guard let credential = BearerCredential.of(request),
              Array(SHA256.hash(data: Data(credential.utf8))) == expected else {
            // Digests compared, so the comparison takes as long whatever the guess.
            throw APIError(.unauthorized, "unauthenticated", "/metrics needs 'Authorization: Bearer <metrics token>'")
        }
        // With the database gone the stores cannot be read: the gauges read from them keep the
        // last scrape's values, and the outage itself is what this scrape reports (the alert
        // on nodes' last-seen times, frozen meanwhile, holds off while it lasts).
        let reachable = storageLiveness?.isDown != true
        if reachable { try await refreshScrapedGauges() }
        metrics.scraped.set(.storageReachable, [([], reachable ? 1 : 0)])
        var headers: HTTPFields = [:]
        headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: metrics.exposition())))
    }

    /// Reads what the stores hold now into the scrape-time gauges.
    private func refreshScrapedGauges() async throws {
        let now = WallClock.nowMillis()
        var quarantined: [([(String, String)], Double)] = [], conflicts: [([(String, String)], Double)] = []
        var quarantineBytes: [([(String, String)], Double)] = [], quarantineUnkept: [([(String, String)], Double)] = []
        var nodesByState: [([(String, String)], Double)] = [], lastSeen: [([(String, String)], Double)] = []
        var pending: [([(String, String)], Double)] = [], oldest: [([(String, String)], Double)] = []
        var reported: [([(String, String)], Double)] = []
        var clockOffsets: [([(String, String)], Double)] = []
        for tenant in try await directory.tenants() {
            let t = ("tenant", tenant.rawValue)
            let counts = try await directory.store(for: tenant).attentionCounts()
            quarantined.append(([t], Double(counts.quarantined)))
            conflicts.append(([t], Double(counts.conflicts)))
            quarantineBytes.append(([t], Double(counts.quarantineBytes)))
            quarantineUnkept.append(([t], Double(counts.quarantineUnkept)))
            var states: [NodeState: Int] = [:]
            let serving = try await directory.servingNode(of: tenant)
            for node in try await directory.nodes(of: tenant) {
                let state = NodeState(node, now: now, serving: serving)
                states[state, default: 0] += 1
                if let seen = node.lastSeenMillis, state != .decommissioned {
                    lastSeen.append(([t, ("node", node.node.rawValue)], Double(seen) / 1000))
                }
            }
            for state in NodeState.allCases { nodesByState.append(([t, ("state", state.rawValue)], Double(states[state] ?? 0))) }
            for (node, lag) in try await directory.lags(of: tenant) {
                let labels = [t, ("node", node.rawValue)]
                pending.append((labels, Double(lag.pending)))
                oldest.append((labels, Double(lag.oldestPendingMillis(at: now)) / 1000))
                reported.append((labels, Double(lag.measuredAtMillis) / 1000))
                if let offset = lag.clockOffsetMillis { clockOffsets.append((labels, Double(offset) / 1000)) }
            }
        }
        metrics.scraped.set(.quarantined, quarantined.map { ($0.0, $0.1) })
        metrics.scraped.set(.conflicts, conflicts.map { ($0.0, $0.1) })
        metrics.scraped.set(.quarantineBytes, quarantineBytes.map { ($0.0, $0.1) })
        metrics.scraped.set(.quarantineUnkept, quarantineUnkept.map { ($0.0, $0.1) })
        metrics.scraped.set(.nodes, nodesByState.map { ($0.0, $0.1) })
        metrics.scraped.set(.nodeLastSeen, lastSeen.map { ($0.0, $0.1) })
        metrics.scraped.set(.nodePending, pending.map { ($0.0, $0.1) })
        metrics.scraped.set(.nodeOldestPending, oldest.map { ($0.0, $0.1) })
        metrics.scraped.set(.nodeLagReported, reported.map { ($0.0, $0.1) })
        metrics.scraped.set(.nodeClockOffset, clockOffsets.map { ($0.0, $0.1) })
    }

    struct ProbeTimedOut: Error, CustomStringConvertible {
        var description: String { "the stores did not answer within \(OperationsService.probeTimeout)" }
    }
}

/// A node's state as operators see it.
public enum NodeState: String, CaseIterable, Sendable {
    /// Made a request in the last 15 minutes.
    case active
    /// Seen before, but not in the last 15 minutes.
    case silent
    /// Enrolled or expected (a token was issued), never seen.
    case neverSeen = "never_seen"
    /// Retired: no credentials, never enrolls again.
    case decommissioned

    /// `serving`: the node this hub is (``NodeDirectory/servingNode(of:)``), active while it
    /// answers: it makes no requests to itself, and HQ counted itself never seen, for good,
    /// in every tenant's `tiersync_nodes{state="never_seen"}` (helper 89).
    public init(_ node: NodeRecord, now: UInt64, serving: NodeID? = nil) {
        if node.decommissionedAtMillis != nil {
            self = .decommissioned
        } else if node.node == serving {
            self = .active
        } else if let seen = node.lastSeenMillis {
            self = now &- min(now, seen) <= OperationsService.silentAfterMillis ? .active : .silent
        } else {
            self = .neverSeen
        }
    }
}

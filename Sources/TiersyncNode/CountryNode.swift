import Foundation
import Logging
import TiersyncAgent
import TiersyncCore
import TiersyncServer
import TiersyncStore

/// A country node: at once a hub for its dealers (HTTPS, same routes as HQ) and a spoke
/// of HQ. Dealers' changes are applied to the country's store and forwarded upward with
/// their origin, sequence and clock intact; changes routed into the country's subtree
/// come down from HQ and are served to the dealers they are routed to.
public struct CountryNode: Sendable {
    public let store: NodeStore
    public let agentConfiguration: AgentConfiguration
    public let hubConfiguration: HubConfiguration
    /// How often the mirrored directory is refreshed from HQ.
    public var directoryRefreshInterval: Duration = .seconds(2)
    let logger: Logger

    /// `hubConfiguration.dataDirectory` holds the mirrored directory (`hub.sqlite`).
    public init(store: NodeStore, agentConfiguration: AgentConfiguration, hubConfiguration: HubConfiguration,
                logger: Logger = Logger(label: "tiersync.country")) {
        self.store = store
        self.agentConfiguration = agentConfiguration
        self.hubConfiguration = hubConfiguration
        self.logger = logger
    }

    /// Serves dealers and syncs with HQ until cancelled. `onReady` gets the bound port.
    public func run(onReady: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        guard let identity = try store.identity() else {
            throw AgentError.notEnrolled(StoreError.notEnrolled(path: store.path).description)
        }
        try FileManager.default.createDirectory(atPath: hubConfiguration.dataDirectory, withIntermediateDirectories: true)
        let mirror = try HubCatalog(directory: hubConfiguration.dataDirectory)
        if let root = try mirror.root(of: identity.tenant), root != identity.node {
            throw AgentError.invalidConfiguration("\(hubConfiguration.dataDirectory) holds the directory of '\(root)', not of '\(identity.node)': give this node a --data directory of its own")
        }
        let hubBox = HubBox()
        // The country's rules run here rather than in its agent: they place dialogues of its
        // dealers with the directory it mirrors.
        var upward = agentConfiguration
        upward.rulesInterval = nil
        // The country's hub compacts the store it shares with this agent, knowing its dealers' pulls.
        upward.retention = nil
        let relay = RelayBox()
        upward.relayedLag = { await relay.directory?.relayedLag() ?? [] }
        // The country's scope is its subtree as mirrored from HQ (unknown until it is: no eviction).
        upward.scope = { node in
            guard let directory = await relay.directory, let tree = try? await directory.tree(of: identity.tenant),
                  tree.parents[node] != nil else { return nil }
            return Scope(tree: tree, node: node)
        }
        // Its dealers' erasure requests, fetched again from HQ, are judged by their scopes. A
        // requester the mirror does not know yet (a country restored onto an empty --data,
        // whose first pages come before the first refresh) is looked up at HQ first: judged
        // by the parent alone, a dealer's request for a sibling's customer erased it here.
        upward.scopeBelow = { node in
            guard let directory = await relay.directory else { return nil }
            if let tree = try? await directory.tree(of: identity.tenant), tree.parents[node] != nil { return Scope(tree: tree, node: node) }
            // At most once a second, and never for HQ's own requests (the parent is in no
            // mirror): every page of an erasure-heavy catch-up fetched the directory again,
            // each waiting for HQ.
            guard node != identity.parent, await relay.lookupDue() else { return nil }
            try? await directory.refresh()
            guard let tree = try? await directory.tree(of: identity.tenant), tree.parents[node] != nil else { return nil }
            return Scope(tree: tree, node: node)
        }
        let agent = try SyncAgent(store: store, configuration: upward, logger: logger, onPulled: {
            await hubBox.hub?.notifyChanges(for: identity.tenant)
        }, onGovernance: {
            await hubBox.hub?.notifyGovernance(for: identity.tenant)
        })
        let directory = RelayDirectory(store: store, identity: identity, mirror: mirror, parent: agent.parent, logger: logger)
        await relay.set(directory)
        let hub = HubServer(configuration: hubConfiguration, directory: directory, logger: logger)
        await hubBox.set(hub)
        let interval = directoryRefreshInterval
        let logger = self.logger
        let store = self.store
        let rules = agentConfiguration.rulesInterval.map { interval in
            (interval, RulesRunner(store: store, clock: agentConfiguration.rulesClock,
                                   tree: { try? await directory.tree(of: identity.tenant) }, logger: logger))
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await hub.run(onReady: onReady) }
            group.addTask { try await agent.run() }
            if let (every, runner) = rules {
                group.addTask { await runner.run(every: every) { await hub.notifyChanges(for: identity.tenant) } }
            }
            // The directory refresh runs on its own: a revocation must reach the mirror within
            // one interval however long a backfill or an eviction sweep takes. Those follow
            // successful refreshes, skipping any that came while they ran.
            let (refreshed, announce) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
            group.addTask {
                defer { announce.finish() }
                while !Task.isCancelled {
                    do {
                        try await directory.refresh()
                        announce.yield()
                    } catch is CancellationError {
                        return
                    } catch {
                        logger.notice("directory refresh failed; serving the last mirror", metadata: ["error": "\(error)"])
                    }
                    try? await Task.sleep(for: interval)
                }
            }
            group.addTask {
                for await _ in refreshed {
                    // The sweep runs even when the backfill failed: a dealer moved in and out
                    // again within seconds failed its backfill (403, no longer below), which
                    // skipped the sweep, and the records fetched for it stayed (helper 87).
                    do {
                        try await Self.backfillNewcomers(directory: directory, agent: agent, store: store, logger: logger)
                    } catch is CancellationError {
                        return
                    } catch {
                        logger.notice("backfill failed; retrying after the next refresh", metadata: ["error": "\(error)"])
                    }
                    do {
                        try await Self.evictLeavers(directory: directory, store: store, identity: identity, logger: logger) {
                            await hub.notifyChanges(for: identity.tenant)
                        }
                    } catch is CancellationError {
                        return
                    } catch {
                        logger.notice("eviction failed; retrying after the next refresh", metadata: ["error": "\(error)"])
                    }
                }
            }
            try await group.next()
            group.cancelAll()
            try await group.waitForAll()
        }
    }

    /// Evicts the records of nodes that left this subtree (moved to another country; a
    /// decommissioned node stays in the directory), once its node set differs from the one
    /// last swept, and at the first refresh (a move while the country was down). Which set was
    /// swept is kept in the node's store, so a sweep cut short is redone.
    static func evictLeavers(directory: RelayDirectory, store: NodeStore, identity: NodeIdentity, logger: Logger,
                             noticesKept: @Sendable () async -> Void) async throws {
        let present = try await directory.descendants()
        let key = present.map(\.rawValue).sorted().joined(separator: ",")
        // A node whose backfill began and never completed, gone again: the records fetched for
        // it are swept though the node set may read as the one last swept.
        let gone = try backfillsBegun(store).subtracting(present)
        guard try store.meta("evicted.for") != key || !gone.isEmpty, let tree = try? await directory.tree(of: identity.tenant),
              tree.parents[identity.node] != nil else { return }
        let report = try store.evict(outside: Scope(tree: tree, node: identity.node))
        if report.records > 0 { await SyncAgent.truncateLogAfterEviction(store, logger: logger) }
        if report.records > 0 || report.keptUnsent > 0 {
            logger.info("evicted records routed outside this subtree", metadata: [
                "records": "\(report.records)", "log_entries": "\(report.logEntries)", "kept_unsent": "\(report.keptUnsent)"])
        }
        if report.sendAgainNotices > 0 {
            logger.notice("let go of changes of dealers that moved away, refused above as no longer relayed for them; their makers are told to send them again",
                          metadata: ["changes": "\(report.sendAgainNotices)"])
            // The dealers' waiting pulls answer at once with the notice.
            await noticesKept()
        }
        // Records still waiting to go upward are swept again at the next refresh.
        if report.keptUnsent == 0 {
            try store.setMeta("evicted.for", key)
            for node in gone { try noteBackfillBegun(node, store: store, done: true) }
        }
    }

    /// Fetches from HQ the records routed to nodes that joined this subtree (moved in from
    /// another country). Which nodes are covered is kept in the node's store, so a backfill
    /// cut short by a crash or a failure is redone on the next round. On the first round
    /// every node present counts as covered: the node's own pull from the start covers them.
    static func backfillNewcomers(directory: RelayDirectory, agent: SyncAgent, store: NodeStore, logger: Logger) async throws {
        // A mirror without this node (HQ revoked it) says nothing about who left: taken as
        // such, every dealer would count as gone and, once the country is enrolled again,
        // all their records would be fetched again. Eviction skips it the same way.
        guard let tree = try? await directory.tree(of: directory.identity.tenant), tree.parents[directory.identity.node] != nil else { return }
        let present = tree.subtree(of: directory.identity.node).subtracting([directory.identity.node])
        guard let saved = try store.meta("backfilled") else {
            try store.setMeta("backfilled", present.map(\.rawValue).sorted().joined(separator: ","))
            return
        }
        var covered = Set(saved.split(separator: ",").map { NodeID(unchecked: String($0)) })
        // A node that left is covered no more: its records were evicted here and this node's
        // pull went on past what HQ wrote for it meanwhile, so if it comes back they must be
        // fetched again (kept as covered, it was never backfilled, and its records stayed
        // missing here).
        if !covered.isSubset(of: present) {
            covered.formIntersection(present)
            try store.setMeta("backfilled", covered.map(\.rawValue).sorted().joined(separator: ","))
        }
        let newcomers = present.subtracting(covered).sorted()
        for node in newcomers {
            // Noted before it starts: records fetched for a newcomer that leaves again before its
            // backfill completes (moved in and straight back out: the fetch fails, 403) are swept
            // once it is gone (``evictLeavers``; helper 87: they stayed for good).
            try noteBackfillBegun(node, store: store)
            let applied = try await agent.backfill(node)
            logger.info("backfilled a node that joined this subtree", metadata: ["node": "\(node)", "changes": "\(applied)"])
            covered.insert(node)
            try store.setMeta("backfilled", covered.intersection(present).map(\.rawValue).sorted().joined(separator: ","))
            try noteBackfillBegun(node, store: store, done: true)
        }
    }

    /// The nodes whose backfill began and did not complete (`backfill.begun`), comma-separated.
    static func backfillsBegun(_ store: NodeStore) throws -> Set<NodeID> {
        Set((try store.meta("backfill.begun") ?? "").split(separator: ",").map { NodeID(unchecked: String($0)) })
    }

    static func noteBackfillBegun(_ node: NodeID, store: NodeStore, done: Bool = false) throws {
        var begun = try backfillsBegun(store)
        if done { begun.remove(node) } else { begun.insert(node) }
        try store.setMeta("backfill.begun", begun.isEmpty ? nil : begun.map(\.rawValue).sorted().joined(separator: ","))
    }
}

/// Lets the agent reach the directory created after it (for its dealers' lag reports).
private actor RelayBox {
    var directory: RelayDirectory?
    private var lastLookup: ContinuousClock.Instant?
    func set(_ directory: RelayDirectory) { self.directory = directory }

    /// Whether a directory fetch for an unknown requester may run now (one a second).
    func lookupDue() -> Bool {
        let now = ContinuousClock.now
        if let lastLookup, now - lastLookup < .seconds(1) { return false }
        lastLookup = now
        return true
    }
}

/// Lets the agent's callback reach the hub created after it.
private actor HubBox {
    var hub: HubServer?
    func set(_ hub: HubServer) { self.hub = hub }
}

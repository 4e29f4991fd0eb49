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
        let hubBox = HubBox()
        let agent = try SyncAgent(store: store, configuration: agentConfiguration, logger: logger) {
            await hubBox.hub?.notifyChanges(for: identity.tenant)
        }
        let directory = RelayDirectory(store: store, identity: identity, mirror: mirror, parent: agent.parent, logger: logger)
        directory.onNewNodes { nodes in
            for node in nodes {
                do {
                    let applied = try await agent.backfill(node)
                    logger.info("backfilled a node that moved in", metadata: ["node": "\(node)", "changes": "\(applied)"])
                } catch {
                    logger.warning("backfill failed; will retry on the next refresh", metadata: ["node": "\(node)", "error": "\(error)"])
                }
            }
        }
        let hub = HubServer(configuration: hubConfiguration, directory: directory, logger: logger)
        await hubBox.set(hub)
        let interval = directoryRefreshInterval
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await hub.run(onReady: onReady) }
            group.addTask { try await agent.run() }
            group.addTask {
                while !Task.isCancelled {
                    do { try await directory.refresh() } catch is CancellationError { return } catch {
                        logger.notice("directory refresh from HQ failed; serving the last mirror", metadata: ["error": "\(error)"])
                    }
                    try? await Task.sleep(for: interval)
                }
            }
            try await group.next()
            group.cancelAll()
            try await group.waitForAll()
        }
    }
}

/// Lets the agent's callback reach the hub created after it.
private actor HubBox {
    var hub: HubServer?
    func set(_ hub: HubServer) { self.hub = hub }
}

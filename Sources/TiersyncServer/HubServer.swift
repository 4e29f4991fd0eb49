import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import ServiceLifecycle
import Synchronization
import NIOCore
import NIOSSL
import TiersyncCore
import TiersyncStorage
import TiersyncStore

/// The HQ hub: serves every tenant's nodes over HTTPS from one process.
public struct HubServer: Sendable {
    public let configuration: HubConfiguration
    public let directory: any NodeDirectory
    /// Whether the storage can be reached, where a process watches it (a hub on PostgreSQL):
    /// requests do not wait for storage known gone (``StorageLivenessMiddleware``).
    public let storageLiveness: (any StorageLiveness)?
    let logger: Logger
    let notifier = ChangeNotifier()
    /// Governance long-polls wait on their own notifier: a push wakes change pulls only,
    /// not every node's governance poll.
    let governanceNotifier = ChangeNotifier()
    /// This hub's metrics (`GET /metrics`).
    public let metrics = HubMetrics()
    /// This hub's open connections, bounded per address and in all.
    public let connections: ConnectionLimiter
    /// What large pushes being decoded and applied hold, across every tenant (``PushMemoryBudget``).
    public let pushMemory: PushMemoryBudget

    /// The HQ hub: its catalog and tenant databases live in `configuration.dataDirectory`.
    public init(configuration: HubConfiguration, logger: Logger = Logger(label: "tiersync.hub")) throws {
        let catalog = try HubCatalog(directory: configuration.dataDirectory)
        self.init(configuration: configuration,
                  directory: CatalogDirectory(stores: TenantStores(catalog: catalog, clock: HybridLogicalClock(maxSkewMillis: configuration.maxClockSkewMillis),
                                                               checkpointing: .byOwner, quarantineQuota: configuration.limits.quarantine)),
                  logger: logger)
    }

    /// A hub over any directory (a country node passes the one it mirrors from HQ).
    public init(configuration: HubConfiguration, directory: any NodeDirectory, storageLiveness: (any StorageLiveness)? = nil,
                logger: Logger = Logger(label: "tiersync.hub")) {
        self.configuration = configuration
        self.directory = directory
        self.storageLiveness = storageLiveness
        self.logger = logger
        let limits = configuration.limits
        connections = ConnectionLimiter(perAddress: limits.maxConnectionsPerAddress, total: limits.maxConnections ?? ConnectionLimiter.defaultTotal(),
                                        unlimited: limits.unlimitedAddresses)
        pushMemory = PushMemoryBudget(capacity: limits.pushMemoryBytes, largestBody: limits.maxDecompressedBytes,
                                      waitLimit: .seconds(limits.pushMemoryWaitSeconds))
    }

    /// Wakes long-polls waiting on `tenant`: for changes written into the hub's store by
    /// another component of this process (a country node's upward agent).
    public func notifyChanges(for tenant: TenantID) async {
        await notifier.signal(tenant)
    }

    /// Wakes governance long-polls on `tenant` (a country node received new documents).
    public func notifyGovernance(for tenant: TenantID) async {
        await governanceNotifier.signal(tenant)
    }

    /// Builds the router from ``HubRoutes``.
    func makeRouter(notifier: ChangeNotifier) -> Router<HubRequestContext> {
        let codec = BodyCodec(limits: configuration.limits, pushMemory: pushMemory)
        let service = SyncService(directory: directory, notifier: notifier, governanceNotifier: governanceNotifier,
                                  codec: codec, configuration: configuration, metrics: metrics)
        let operations = OperationsService(directory: directory, metrics: metrics, notifiers: [notifier, governanceNotifier],
                                           codec: codec, metricsToken: configuration.metricsToken, storageLiveness: storageLiveness)
        let router = Router(context: HubRequestContext.self)
        router.add(middleware: UnreadBodyMiddleware(maxBodyBytes: configuration.limits.maxRequestBytes))
        router.add(middleware: ErrorBodyMiddleware(directory: directory))
        if let storageLiveness { router.add(middleware: StorageLivenessMiddleware(liveness: storageLiveness, metrics: metrics)) }
        let limits = configuration.limits
        router.add(middleware: AddressRateLimitMiddleware(
            limiter: RequestRateLimiter(.init(requestsPerSecond: limits.anonymousRequestsPerSecond, burst: limits.anonymousRequestBurst,
                                              maxConcurrent: limits.maxConcurrentAnonymousRequests)),
            relays: RequestRateLimiter(.init(requestsPerSecond: limits.requestsPerSecond, burst: limits.requestBurst,
                                             maxConcurrent: limits.maxConcurrentAnonymousRequests)),
            directory: directory))
        let perNode = RequestRateLimiter<NodeKey>(.init(requestsPerSecond: limits.requestsPerSecond, burst: limits.requestBurst,
                                                        maxConcurrent: limits.maxConcurrentRequestsPerNode))
        router.add(middleware: AuthenticationMiddleware(directory: directory, refusedNodes: perNode))
        router.add(middleware: MetricsMiddleware(metrics: metrics))
        router.add(middleware: RateLimitMiddleware(
            limiter: perNode,
            bodies: RequestRateLimiter(.init(requestsPerSecond: 1e12, burst: 1e12, maxConcurrent: limits.maxConcurrentPushesPerNode))))
        let handlers: [HubRoutes.Route: @Sendable (Request, HubRequestContext) async throws -> Response] = [
            HubRoutes.health: service.health,
            HubRoutes.enroll: service.enroll,
            HubRoutes.whoami: service.whoami,
            HubRoutes.push: service.push,
            HubRoutes.pull: service.pull,
            HubRoutes.refusals: service.refusals,
            HubRoutes.directory: service.directory,
            HubRoutes.governance: service.governance,
            HubRoutes.governanceStatus: service.governanceStatus,
            HubRoutes.kpis: service.kpis,
            HubRoutes.status: service.status,
            HubRoutes.liveness: operations.liveness,
            HubRoutes.readiness: operations.readiness,
            HubRoutes.metrics: operations.metrics,
        ]
        for route in HubRoutes.all {
            guard let handler = handlers[route] else { preconditionFailure("no handler for \(route.method) \(route.path)") }
            router.on(RouterPath(route.path), method: HTTPRequest.Method(route.method)!, use: handler)
        }
        // The admin API, where this hub has administrators (HQ's catalog, either engine).
        if let administration = directory.administration {
            let (catalog, accounts) = (administration.catalog, administration.accounts)
            let notifier = notifier
            let governanceNotifier = governanceNotifier
            var admin = AdminService(accounts: accounts, catalog: catalog, directory: directory, codec: codec,
                                     signal: { await notifier.signal($0) }, governanceSignal: { await governanceNotifier.signal($0) },
                                     releaseKeyDirectory: configuration.releaseKeyDirectory, isRelay: administration.isRelay,
                                     loginChecks: AdmissionGate(running: limits.loginChecksAtOnce ?? ProcessInfo.processInfo.activeProcessorCount / 2,
                                                                waiting: limits.loginChecksWaiting))
            admin.tokenLimit = limits.adminTokens
            admin.sessionLimit = limits.adminSessions
            let adminHandlers = admin.handlers()
            for route in AdminRoutes.all {
                guard let handler = adminHandlers[route] else { preconditionFailure("no handler for \(route.method) \(route.path)") }
                router.on(RouterPath(route.path), method: HTTPRequest.Method(route.method)!, use: handler)
            }
            for route in ConsoleService(admin: admin).routes() {
                router.on(RouterPath(route.path), method: route.method, use: route.handler)
            }
        }
        return router
    }

    /// Every connection is counted by ``connections`` (ahead of TLS), then HTTP/1 (in TLS
    /// unless serving plain HTTP for development).
    private func makeServerBuilder(tls: TLSConfiguration?) -> HTTPServerBuilder {
        // Silence while a request (or the rest of its body) is awaited closes the
        // connection: a client that stalls cannot hold it and its task forever.
        let http1 = HTTP1Channel.Configuration(idleTimeout: .seconds(Int64(configuration.limits.idleTimeoutSeconds)))
        let (limiter, metrics, logger) = (connections, metrics, logger)
        let refusals = Mutex<(last: ContinuousClock.Instant?, count: Int)>((nil, 0))
        let onRefused: @Sendable (ConnectionLimiter.Refusal, String?) -> Void = { reason, address in
            metrics.recordConnectionRefused(reason)
            // One line per 10 s at most: a flood would otherwise write one per connection.
            let (log, count) = refusals.withLock { state -> (Bool, Int) in
                state.count += 1
                if let last = state.last, ContinuousClock.now - last < .seconds(10) { return (false, 0) }
                defer { state = (.now, 0) }
                return (true, state.count)
            }
            guard log else { return }
            let open = limiter.open(from: address)
            logger.warning(reason == .perAddress
                           ? "refused connections from an address holding its limit of open connections (--max-connections-per-address)"
                           : "refused connections: the hub holds its limit of open connections (--max-connections)",
                           metadata: ["address": "\(address ?? "-")", "refused": "\(count)", "open": "\(open.total)",
                                      "open_from_address": "\(open.fromAddress)"])
        }
        return HTTPServerBuilder { responder in
            let http = HTTP1Channel(responder: responder, configuration: http1)
            if let tls {
                return ConnectionLimitedChannel(base: try TLSChannel(http, tlsConfiguration: tls), limiter: limiter, onRefused: onRefused)
            }
            return ConnectionLimitedChannel(base: http, limiter: limiter, onRefused: onRefused)
        }
    }

    /// Runs until the task is cancelled (or SIGTERM/SIGINT when `handleSignals`), then
    /// shuts down gracefully: open long-polls answer at once, in-flight pushes finish.
    /// `onReady` receives the bound port once the listener accepts connections.
    public func run(handleSignals: Bool = false, onReady: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        var tlsConfiguration: TLSConfiguration?
        switch configuration.transport {
        case .tls(let certificatePath, let keyPath):
            let chain: [NIOSSLCertificateSource]
            do {
                chain = try NIOSSLCertificate.fromPEMFile(certificatePath).map { NIOSSLCertificateSource.certificate($0) }
            } catch {
                throw HubStartError("cannot use the certificate \(certificatePath): expected a PEM certificate chain, the server's certificate first")
            }
            guard !chain.isEmpty else { throw HubStartError("the certificate file \(certificatePath) holds no PEM certificate") }
            let key: NIOSSLPrivateKey
            do {
                key = try NIOSSLPrivateKey(file: keyPath, format: .pem)
            } catch {
                throw HubStartError("cannot use the private key \(keyPath): expected an unencrypted PEM private key")
            }
            var tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
            tls.shutdownTimeout = .seconds(1)
            do {
                // Building the context checks that the key is the certificate's.
                _ = try NIOSSLContext(configuration: tls)
            } catch {
                throw HubStartError("the private key \(keyPath) does not belong to the certificate \(certificatePath)")
            }
            tlsConfiguration = tls
        case .insecureDevelopmentHTTP:
            logger.warning("serving plain HTTP: development only")
        }
        let server = makeServerBuilder(tls: tlsConfiguration)
        let logger = self.logger
        let app = Application(
            router: makeRouter(notifier: notifier),
            server: server,
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "tiersync"),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? 0
                logger.info("hub listening", metadata: ["port": "\(port)"])
                await onReady(port)
            },
            logger: logger)
        // Services shut down in reverse order, each after the one before has ended: first the
        // notifier (ending long-polls), then the foreign-write watcher, then the HTTP server
        // (no new connection; open ones end after their request), then the checkpoints and
        // compaction. The server once came after compaction, and a
        // hub told to stop went on serving and taking writes until a long pass ended.
        var groupConfiguration = ServiceGroupConfiguration(
            services: [CompactionService(directory: directory, policy: configuration.retention, logger: logger),
                       CheckpointService(directory: directory, logger: logger), app,
                       ForeignWriteWatcher(directory: directory, notifier: notifier, governanceNotifier: governanceNotifier),
                       NotifierService(notifiers: [notifier, governanceNotifier], logger: logger)],
            gracefulShutdownSignals: handleSignals ? [.sigterm, .sigint] : [],
            logger: logger)
        // Past this, whatever still runs is cancelled: a stop always ends.
        groupConfiguration.maximumGracefulShutdownDuration = .seconds(configuration.limits.shutdownGraceSeconds)
        let group = ServiceGroup(configuration: groupConfiguration)
        // Cancelling the caller means "shut down gracefully": the group runs in its own
        // task so cancellation reaches it only as a graceful-shutdown trigger.
        let (host, port) = (configuration.host, configuration.port)
        let running = Task {
            do {
                try await group.run()
                logger.info("hub stopped")
            } catch let error as IOError where error.errnoCode == EADDRINUSE {
                throw HubStartError("port \(port) on \(host) is in use: another process listens there (another hub or node?); choose another --port")
            } catch let error as IOError where error.errnoCode == EADDRNOTAVAIL {
                throw HubStartError("cannot listen on \(host): no network interface of this machine has that address")
            }
        }
        try await withTaskCancellationHandler {
            try await running.value
        } onCancel: {
            Task { await group.triggerGracefulShutdown() }
        }
    }
}

/// Ends open long-polls when the hub shuts down.
struct NotifierService: Service {
    let notifiers: [ChangeNotifier]
    let logger: Logger

    func run() async throws {
        do {
            try await gracefulShutdown()
            // The first service to hear of a stop: an operator's log says it began (a hub told
            // to stop logged nothing until it had gone). Not when the group was cancelled
            // instead (a failed start, the port in use: no hub had been running).
            logger.info("hub stopping: open long-polls are answered, the listener closes, requests under way finish")
        } catch {}
        for notifier in notifiers { await notifier.close() }
    }
}

/// Wakes long-polls for changes written to a tenant database by another process (an
/// admin's CLI on the hub machine), which the in-process notifier cannot see.
struct ForeignWriteWatcher: Service {
    let directory: any NodeDirectory
    let notifier: ChangeNotifier
    let governanceNotifier: ChangeNotifier

    /// Cancelled at the graceful shutdown, not only checked between rounds: a round's reads
    /// wait as long as the database does, and with PostgreSQL out of reach a SIGTERM left
    /// the process serving (and running HQ's rules) until the database came back.
    func run() async throws {
        try? await cancelWhenGracefulShutdown { await watch() }
    }

    private func watch() async {
        var heads: [TenantID: Int64] = [:]
        var governance: [TenantID: String] = [:]
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(500))
            for tenant in directory.openTenants() {
                guard let store = try? await directory.store(for: tenant), let head = try? await store.feedHead(),
                      let stamp = try? await store.governanceDocumentsStamp() else { continue }
                // First sight counts as a change: a write made before this tenant was first
                // watched would otherwise never wake anyone (waking needlessly is harmless).
                if heads[tenant] != head { await notifier.signal(tenant) }
                heads[tenant] = head
                // Governance documents published by another process (admin CLI, a
                // country's `overlay publish`).
                if governance[tenant] != stamp { await governanceNotifier.signal(tenant) }
                governance[tenant] = stamp
            }
        }
    }
}

import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOSSL
import PostgresNIO
import Synchronization
import TiersyncAgent
import TiersyncCore
import TiersyncNode
import TiersyncPKI
import TiersyncPostgres
import TiersyncGovernance
import TiersyncServer
import TiersyncStore

/// A fresh directory per test, removed afterwards.
public final class TempDir: Sendable {
    public let path: String

    public init() throws {
        path = NSTemporaryDirectory() + "tiersync-test-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// A hub running in this process on a loopback port it picked, over real TLS, on either
/// storage engine: SQLite files in `directory` (the default), or a PostgreSQL database.
public final class RunningHub: Sendable {
    public let url: String
    public let caFile: String
    public let server: HubServer
    public let port: Int
    /// The hub's catalog, on whichever engine it runs.
    public let catalogStore: any HubCatalogStore
    /// `nil` on PostgreSQL.
    private let sqliteStores: TenantStores?
    private let task: Task<Void, any Error>
    private let postgresClient: Task<Void, Never>?

    /// The SQLite engine's stores. Tests meant for both engines use ``catalogStore`` and
    /// ``tenantStore(for:)`` instead; this one stops a test that runs on PostgreSQL.
    public var stores: TenantStores {
        guard let sqliteStores else { preconditionFailure("this hub runs on PostgreSQL: use catalogStore / tenantStore(for:)") }
        return sqliteStores
    }

    /// The SQLite catalog (see ``stores``).
    public var catalog: HubCatalog { stores.catalog }

    /// The bearer token every test hub's `/metrics` takes.
    public static let metricsToken = "test-metrics-token-4f1c2a9b"

    /// The store holding `tenant`'s records, on whichever engine the hub runs.
    public func tenantStore(for tenant: TenantID) async throws -> any HubTenantStore {
        try await server.directory.store(for: tenant)
    }

    /// `port` 0 picks a free port; give the old one to restart a stopped hub at its address.
    /// `rules`: run HQ's rules (``HubRulesRunner``) as `tiersync hub serve` does, every
    /// `interval`, at the times `clock` gives. `postgres`: keep the hub in that
    /// database instead of files in `directory` (which then holds only the certificates).
    /// `retention`: compact as `hub serve` does with that policy. None by default, here and
    /// for every node this library starts: compaction folds log entries into their records
    /// at an interval of the real clock, so a test reading a log (lineage, trails, counts)
    /// would pass or fail by how long a loaded machine took to reach its checks. Tests of
    /// compaction ask for it.
    public init(directory: String, port: Int = 0, limits: HubConfiguration.Limits = .init(),
                maxClockSkewMillis: UInt64 = 60_000, rules: RulesSchedule? = nil, postgres: PostgresEndpoint? = nil,
                retention: RetentionPolicy? = nil, watchingPostgresAt watched: PostgresEndpoint? = nil,
                logger: Logger = Logger(label: "tiersync.hub")) async throws {
        let pki = try DevelopmentPKI.ensure(in: directory + "/pki")
        var configuration = HubConfiguration(host: "127.0.0.1", port: port, dataDirectory: directory + "/hub",
                                             transport: .tls(certificatePath: pki.serverCertificate, privateKeyPath: pki.serverKey))
        configuration.limits = limits
        configuration.maxClockSkewMillis = maxClockSkewMillis
        configuration.metricsToken = Self.metricsToken
        configuration.retention = retention
        configuration.releaseKeyDirectory = directory + "/release-keys"
        let clock = HybridLogicalClock(maxSkewMillis: maxClockSkewMillis)
        let server: HubServer
        var listener: PostgresNotifier?
        var postgresStores: PostgresTenantStores?
        var liveness: PostgresLiveness?
        if let postgres {
            let client = PostgresClient(configuration: postgres.clientConfiguration(), backgroundLogger: Logger(label: "tiersync.postgres"))
            let running = Task { await client.run() }
            postgresClient = running
            do {
                let catalog = try await PostgresCatalog(client: client)
                let stores = PostgresTenantStores(client: client, catalog: catalog, clock: clock, quarantineQuota: configuration.limits.quarantine)
                postgresStores = stores
                // As `tiersync hub serve --postgres`: requests do not wait for a database known gone.
                // `watched`: another address to watch (a test's unreachable one), else the database's.
                let watching = PostgresLiveness(endpoint: watched ?? postgres)
                liveness = watching
                server = HubServer(configuration: configuration,
                                   directory: CatalogDirectory(catalog: catalog, stores: { stores.store(for: $0) }, openTenants: { stores.openTenants() }),
                                   storageLiveness: watching, logger: logger)
                listener = try PostgresNotifier(client: client)
                catalogStore = catalog
                sqliteStores = nil
            } catch {
                running.cancel()
                throw error
            }
        } else {
            let stores = TenantStores(catalog: try HubCatalog(directory: configuration.dataDirectory), clock: clock, checkpointing: .byOwner,
                                      quarantineQuota: configuration.limits.quarantine)
            server = HubServer(configuration: configuration, directory: CatalogDirectory(stores: stores), logger: logger)
            catalogStore = SQLiteCatalog(stores.catalog)
            sqliteStores = stores
            postgresClient = nil
        }
        let (stream, continuation) = AsyncStream<Int>.makeStream()
        let (sqlite, notifier, pgStores, watching) = (sqliteStores, listener, postgresStores, liveness)
        task = Task {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await server.run { port in continuation.yield(port) } }
                if let rules, let sqlite {
                    group.addTask {
                        await HubRulesRunner(stores: sqlite, clock: rules.clock).run(every: rules.interval) { await server.notifyChanges(for: $0) }
                    }
                }
                if let rules, let pgStores {
                    let catalog = pgStores.catalog
                    let runner = HubRulesRunner(tenants: { try await pgStores.tenantsWithData() }, store: { pgStores.store(for: $0) },
                                                tree: { try? await catalog.tree(of: $0) }, clock: rules.clock)
                    group.addTask { await runner.run(every: rules.interval) { await server.notifyChanges(for: $0) } }
                }
                if let watching { group.addTask { await watching.run() } }
                if let notifier, let pgStores {
                    // As `tiersync hub serve --postgres`: other processes' pushes wake this one's long-polls.
                    group.addTask {
                        await notifier.relay { tenant in
                            Task {
                                for tenant in tenant.map({ [$0] }) ?? pgStores.openTenants() {
                                    await server.notifyChanges(for: tenant)
                                    await server.notifyGovernance(for: tenant)
                                }
                            }
                        }
                    }
                }
                try await group.next()
                group.cancelAll()
                try await group.waitForAll()
            }
        }
        var iterator = stream.makeAsyncIterator()
        guard let port = await iterator.next() else {
            postgresClient?.cancel()
            throw TestFailure("hub did not start")
        }
        self.server = server
        self.port = port
        url = "https://127.0.0.1:\(port)"
        caFile = pki.caCertificate
    }

    /// Enrolls a node through the HTTP API and returns its credential.
    public func enroll(tenant: TenantID, node: NodeID, client: RawClient) async throws -> String {
        _ = try await catalogStore.createTenant(tenant)
        let token = try await catalogStore.issueEnrollmentToken(tenant: tenant, node: node)
        let reply = try await client.send("POST", "/v1/enroll", json: EnrollRequest(token: token))
        guard reply.status == 201 else { throw TestFailure("enroll failed: \(reply.status) \(reply.text)") }
        return try reply.decode(EnrollResponse.self).credential
    }

    public func stop() async {
        task.cancel()
        _ = await task.result
        if let postgresClient {
            postgresClient.cancel()
            // At most a few seconds: see `withPostgresClient` (a client's run() once never returned).
            await awaitEnd(of: postgresClient, within: .seconds(5))
        }
    }
}

/// Runs `body` with a hub started for it, and stops the hub when `body` returns or throws
/// (the error is rethrown), so a failing test never leaves a server behind.
public func withRunningHub<T>(directory: String, port: Int = 0, limits: HubConfiguration.Limits = .init(),
                              maxClockSkewMillis: UInt64 = 60_000,
                              _ body: (RunningHub) async throws -> T) async throws -> T {
    let hub = try await RunningHub(directory: directory, port: port, limits: limits, maxClockSkewMillis: maxClockSkewMillis)
    return try await withTeardown({ await hub.stop() }) { try await body(hub) }
}

/// Runs `body` with a hub on `engine` (PostgreSQL: in a fresh database, dropped afterwards),
/// stopped when `body` returns or throws: what a test written once for both engines uses.
public func withRunningHub<T: Sendable>(engine: StorageEngine, directory: String, port: Int = 0, limits: HubConfiguration.Limits = .init(),
                                        maxClockSkewMillis: UInt64 = 60_000,
                                        _ body: (RunningHub) async throws -> T) async throws -> T {
    switch engine {
    case .sqlite:
        return try await withRunningHub(directory: directory, port: port, limits: limits, maxClockSkewMillis: maxClockSkewMillis, body)
    case .postgres:
        return try await TestPostgres.withFreshDatabase { endpoint in
            let hub = try await RunningHub(directory: directory, port: port, limits: limits, maxClockSkewMillis: maxClockSkewMillis, postgres: endpoint)
            return try await withTeardown({ await hub.stop() }) { try await body(hub) }
        }
    }
}

/// Runs `body`, then awaits `teardown` whether `body` returned or threw (rethrowing its error).
/// The building block of the `with…` helpers (a `Task` started from a `defer` is never awaited).
public func withTeardown<T>(_ teardown: () async -> Void, _ body: () async throws -> T) async throws -> T {
    let result: T
    do {
        result = try await body()
    } catch {
        await teardown()
        throw error
    }
    await teardown()
    return result
}

/// A plain HTTPS client for poking the API with exact bytes, trusting only the test CA.
public final class RawClient: Sendable {
    let http: HTTPClient
    public let baseURL: String

    public struct Reply: Sendable {
        public let status: Int
        public let body: Data
        /// Response headers by lowercased name (the last of repeated ones).
        public var headers: [String: String] = [:]
        public var text: String { String(decoding: body, as: UTF8.self) }

        public func decode<T: Decodable>(_ type: T.Type) throws -> T { try JSONDecoder().decode(T.self, from: body) }

        /// The `error.code` and `error.message` of an error body.
        public var error: (code: String, message: String)? {
            (try? JSONDecoder().decode(ErrorResponse.self, from: body)).map { ($0.error.code, $0.error.message) }
        }
    }

    public init(baseURL: String, caFile: String) {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .file(caFile)
        tls.shutdownTimeout = .seconds(1)
        http = HTTPClient(eventLoopGroupProvider: .singleton,
                          configuration: .init(tlsConfiguration: tls, decompression: .enabled(limit: .none)))
        self.baseURL = baseURL
    }

    public func send(_ method: String, _ path: String, body: Data? = nil, credential: String? = nil,
                     headers: [(String, String)] = []) async throws -> Reply {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = .init(rawValue: method)
        if let credential { request.headers.add(name: "Authorization", value: "Bearer \(credential)") }
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        let response = try await http.execute(request, timeout: .seconds(60))
        let bytes = try await response.body.collect(upTo: 256 * 1024 * 1024)
        var headers: [String: String] = [:]
        for header in response.headers { headers[header.name.lowercased()] = header.value }
        return Reply(status: Int(response.status.code), body: Data(bytes.readableBytesView), headers: headers)
    }

    public func send(_ method: String, _ path: String, json: some Encodable, credential: String? = nil) async throws -> Reply {
        try await send(method, path, body: try JSONEncoder().encode(json), credential: credential)
    }

    public func shutdown() async {
        try? await http.shutdown()
    }
}

/// Runs `body` with a `RawClient` for `hub`, shut down when `body` returns or throws.
public func withRawClient<T>(_ hub: RunningHub, _ body: (RawClient) async throws -> T) async throws -> T {
    try await withRawClient(baseURL: hub.url, caFile: hub.caFile, body)
}

/// Runs `body` with a `RawClient` for `baseURL`, shut down when `body` returns or throws.
public func withRawClient<T>(baseURL: String, caFile: String, _ body: (RawClient) async throws -> T) async throws -> T {
    let client = RawClient(baseURL: baseURL, caFile: caFile)
    return try await withTeardown({ await client.shutdown() }) { try await body(client) }
}

public struct TestFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Polls `condition` until it holds or `timeout` passes.
public func eventually(timeout: Double, _ what: String, _ condition: () throws -> Bool) async throws {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try condition() { return }
        try await Task.sleep(for: .milliseconds(50))
    }
    throw TestFailure("timed out after \(timeout) s waiting for: \(what)")
}

/// Polls an async `condition` (a store read through the storage seam, say) until it holds
/// or `timeout` passes.
@_disfavoredOverload
public func eventually(timeout: Double, _ what: String, _ condition: () async throws -> Bool) async throws {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(50))
    }
    throw TestFailure("timed out after \(timeout) s waiting for: \(what)")
}

/// Runs `operation` and returns its result, or fails once `limit` has passed (cancelling it).
public func within<T: Sendable>(_ limit: Duration, _ what: String,
                                _ operation: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask(operation: operation)
        group.addTask {
            try await Task.sleep(for: limit)
            throw TestFailure("timed out after \(limit) waiting for: \(what)")
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}

/// The repository's root, for files such as openapi.yaml.
public func repositoryRoot(from file: String = #filePath) -> String {
    var url = URL(fileURLWithPath: file)
    while url.path != "/" {
        url.deleteLastPathComponent()
        if FileManager.default.fileExists(atPath: url.path + "/Package.swift") { return url.path }
    }
    return FileManager.default.currentDirectoryPath
}

/// A country node running in this process over real TLS, enrolled at `hub`.
public final class RunningCountry: Sendable {
    public let url: String
    public let store: NodeStore
    /// The CA its listener's certificate is signed by.
    public let caFile: String
    private let task: Task<Void, any Error>

    /// `rules`: when and at which times its rules run (default: as an agent's, every 30 s of the real clock).
    /// `retention`: compact its store (as an agent and as its children's hub); none by
    /// default, as ``RunningHub/init(directory:port:limits:maxClockSkewMillis:rules:postgres:retention:logger:)`` explains.
    public convenience init(hub: RunningHub, tenant: TenantID, node: NodeID, directory: String, rules: RulesSchedule? = nil,
                            retention: RetentionPolicy? = nil) async throws {
        let store = try NodeStore(path: "\(directory)/\(node).sqlite", checkpointing: .byOwner)
        let agent = Self.agentConfiguration(hub: hub, rules: rules, retention: retention)
        try await SyncAgent.enroll(store: store, configuration: agent, token: try await hub.catalogStore.issueEnrollmentToken(tenant: tenant, node: node))
        try await self.init(hub: hub, store: store, node: node, directory: directory, rules: rules, retention: retention)
    }

    /// A country node on a store enrolled before (a restored backup, say), with the directory
    /// it mirrored in `directory` when it ran there.
    public init(hub: RunningHub, store: NodeStore, node: NodeID, directory: String, rules: RulesSchedule? = nil,
                retention: RetentionPolicy? = nil) async throws {
        let agent = Self.agentConfiguration(hub: hub, rules: rules, retention: retention)
        let pki = try DevelopmentPKI.ensure(in: directory + "/pki")
        var hubConfiguration = HubConfiguration(port: 0, dataDirectory: "\(directory)/\(node)-directory",
                                                transport: .tls(certificatePath: pki.serverCertificate, privateKeyPath: pki.serverKey))
        hubConfiguration.retention = retention
        hubConfiguration.metricsToken = RunningHub.metricsToken
        var country = CountryNode(store: store, agentConfiguration: agent, hubConfiguration: hubConfiguration)
        country.directoryRefreshInterval = .milliseconds(500)
        let (stream, continuation) = AsyncStream<Int>.makeStream()
        let node = country
        task = Task { try await node.run { port in continuation.yield(port) } }
        var iterator = stream.makeAsyncIterator()
        guard let port = await iterator.next() else { throw TestFailure("country node did not start") }
        url = "https://127.0.0.1:\(port)"
        self.store = store
        caFile = pki.caCertificate
    }

    public func stop() async {
        task.cancel()
        _ = await task.result
    }

    private static func agentConfiguration(hub: RunningHub, rules: RulesSchedule?, retention: RetentionPolicy?) -> AgentConfiguration {
        var agent = AgentConfiguration(parentURL: hub.url, caFile: hub.caFile)
        agent.localPollInterval = .milliseconds(50)
        agent.pullWaitSeconds = 5
        agent.statusInterval = .milliseconds(200)
        agent.retention = retention
        rules?.apply(to: &agent)
        return agent
    }
}

/// Runs `body` with a country node started for it, stopped when `body` returns or throws.
public func withCountryNode<T>(hub: RunningHub, tenant: TenantID, node: NodeID, directory: String,
                               _ body: (RunningCountry) async throws -> T) async throws -> T {
    let country = try await RunningCountry(hub: hub, tenant: tenant, node: node, directory: directory)
    return try await withTeardown({ await country.stop() }) { try await body(country) }
}

/// A dealer's agent running in this process until stopped.
public final class RunningAgent: Sendable {
    public let store: NodeStore
    /// The agent itself (its ``SyncAgent/status``).
    public let agent: SyncAgent
    private let task: Task<Void, any Error>

    public init(store: NodeStore, parentURL: String, caFile: String, rules: RulesSchedule? = nil,
                retention: RetentionPolicy? = nil) throws {
        self.store = store
        var configuration = AgentConfiguration(parentURL: parentURL, caFile: caFile)
        configuration.retention = retention
        configuration.localPollInterval = .milliseconds(50)
        configuration.pullWaitSeconds = 5
        configuration.statusInterval = .milliseconds(200)
        rules?.apply(to: &configuration)
        let agent = try SyncAgent(store: store, configuration: configuration)
        self.agent = agent
        task = Task { try await agent.run() }
    }

    /// Enrolls a new store at `parentURL` with a token from `hub`, then runs its agent.
    public static func enroll(_ node: NodeID, parent: NodeID?, tenant: TenantID, hub: RunningHub, parentURL: String,
                              directory: String, rules: RulesSchedule? = nil, retention: RetentionPolicy? = nil) async throws -> RunningAgent {
        let store = try NodeStore(path: "\(directory)/\(node).sqlite")
        try await SyncAgent.enroll(store: store, configuration: AgentConfiguration(parentURL: parentURL, caFile: hub.caFile),
                                   token: try await hub.catalogStore.issueEnrollmentToken(tenant: tenant, node: node, parent: parent))
        return try RunningAgent(store: store, parentURL: parentURL, caFile: hub.caFile, rules: rules, retention: retention)
    }

    public func stop() async {
        task.cancel()
        _ = await task.result
    }
}

/// Runs `body` with an agent running on `store`, stopped when `body` returns or throws.
public func withRunningAgent<T>(store: NodeStore, parentURL: String, caFile: String,
                                _ body: (RunningAgent) async throws -> T) async throws -> T {
    let agent = try RunningAgent(store: store, parentURL: parentURL, caFile: caFile)
    return try await withTeardown({ await agent.stop() }) { try await body(agent) }
}

/// Enrolls `node` (as `RunningAgent.enroll`) and runs `body` with its agent, stopped when
/// `body` returns or throws.
public func withRunningAgent<T>(enrolling node: NodeID, parent: NodeID?, tenant: TenantID, hub: RunningHub,
                                parentURL: String, directory: String,
                                _ body: (RunningAgent) async throws -> T) async throws -> T {
    let agent = try await RunningAgent.enroll(node, parent: parent, tenant: tenant, hub: hub, parentURL: parentURL, directory: directory)
    return try await withTeardown({ await agent.stop() }) { try await body(agent) }
}

/// Runs `body` with the given `SyncAgent`s (not running loops: `pushPending`, `pullOnce`…), and
/// shuts their HTTP clients down when `body` returns or throws.
public func withSyncAgents<T>(_ agents: SyncAgent..., body: () async throws -> T) async throws -> T {
    try await withTeardown({ for a in agents { await a.shutdown() } }, body)
}

/// Everything one test started, stopped in reverse order when the scope of `withRunning` ends,
/// however it ends. For tests that start a varying number of hubs, country nodes, agents and
/// child processes, or restart them: what `stop()` was already called on is stopped again
/// harmlessly.
///
///     try await withRunning { running in
///         let hub = try await running.hub(directory: dir.path)
///         let de = try await running.country(hub: hub, tenant: "acme", node: "de", directory: dir.path)
///         …
///     }
public final class Running {
    private var stops: [() async -> Void] = []

    init() {}

    /// Registers a teardown of something started elsewhere; run in reverse order of registration.
    public func add(_ stop: @escaping () async -> Void) { stops.append(stop) }

    public func hub(directory: String, port: Int = 0, limits: HubConfiguration.Limits = .init(),
                    maxClockSkewMillis: UInt64 = 60_000, rules: RulesSchedule? = nil, postgres: PostgresEndpoint? = nil,
                    retention: RetentionPolicy? = nil, logger: Logger = Logger(label: "tiersync.hub")) async throws -> RunningHub {
        let hub = try await RunningHub(directory: directory, port: port, limits: limits, maxClockSkewMillis: maxClockSkewMillis,
                                       rules: rules, postgres: postgres, retention: retention, logger: logger)
        add { await hub.stop() }
        return hub
    }

    public func country(hub: RunningHub, tenant: TenantID, node: NodeID, directory: String,
                        rules: RulesSchedule? = nil, retention: RetentionPolicy? = nil) async throws -> RunningCountry {
        let country = try await RunningCountry(hub: hub, tenant: tenant, node: node, directory: directory, rules: rules, retention: retention)
        add { await country.stop() }
        return country
    }

    /// A country node on a store enrolled before (``RunningCountry/init(hub:store:node:directory:rules:retention:)``).
    public func country(hub: RunningHub, store: NodeStore, node: NodeID, directory: String) async throws -> RunningCountry {
        let country = try await RunningCountry(hub: hub, store: store, node: node, directory: directory)
        add { await country.stop() }
        return country
    }

    public func agent(store: NodeStore, parentURL: String, caFile: String, rules: RulesSchedule? = nil,
                      retention: RetentionPolicy? = nil) throws -> RunningAgent {
        let agent = try RunningAgent(store: store, parentURL: parentURL, caFile: caFile, rules: rules, retention: retention)
        add { await agent.stop() }
        return agent
    }

    public func agent(enrolling node: NodeID, parent: NodeID?, tenant: TenantID, hub: RunningHub, parentURL: String,
                      directory: String, rules: RulesSchedule? = nil, retention: RetentionPolicy? = nil) async throws -> RunningAgent {
        let agent = try await RunningAgent.enroll(node, parent: parent, tenant: tenant, hub: hub, parentURL: parentURL,
                                                  directory: directory, rules: rules, retention: retention)
        add { await agent.stop() }
        return agent
    }

    public func client(_ hub: RunningHub) -> RawClient { client(baseURL: hub.url, caFile: hub.caFile) }

    public func client(baseURL: String, caFile: String) -> RawClient {
        let client = RawClient(baseURL: baseURL, caFile: caFile)
        add { await client.shutdown() }
        return client
    }

    /// Starts a `tiersync` child process, stopped (SIGTERM, then SIGKILL) and waited for at the end.
    public func child(_ arguments: [String], log: String, environment: [String: String] = [:]) throws -> Child {
        let child = try Child(arguments, log: log, environment: environment)
        add { await child.stop() }
        return child
    }

    func stopAll() async {
        while let stop = stops.popLast() { await stop() }
    }
}

/// Runs `body` with a `Running` scope and stops everything started through it when `body`
/// returns or throws (rethrowing).
public func withRunning<T>(_ body: (Running) async throws -> T) async throws -> T {
    let running = Running()
    return try await withTeardown({ await running.stopAll() }) { try await body(running) }
}

/// A `tiersync` child process (or another program's) with its output in a log file. Prefer
/// `withChild` or `Running.child`, which stop it however the test ends; as a last resort it is
/// killed when the object goes away.
public final class Child {
    /// Started with `posix_spawn`, not Foundation's `Process` (``SpawnedProcess``).
    public let process: SpawnedProcess
    public let log: String

    public convenience init(_ arguments: [String], log: String, environment: [String: String] = [:]) throws {
        try self.init(executable: try Child.binary(), arguments, log: log, environment: environment)
    }

    /// Runs `executable` (a path) instead of `tiersync`.
    public init(executable: String, _ arguments: [String], log: String, environment: [String: String] = [:]) throws {
        self.log = log
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let output = try SpawnedProcess.outputFile(log)
        defer { close(output) }
        process = try SpawnedProcess(executable: executable, arguments: arguments,
                                     environment: environment.isEmpty ? nil : ProcessInfo.processInfo.environment.merging(environment) { _, new in new },
                                     stdout: output, stderr: output)
    }

    deinit {
        if process.isRunning {
            Foundation.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    /// The `tiersync` executable built next to this test bundle.
    public static func binary() throws -> String {
        let exe = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        let path = URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("tiersync").path
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw TestFailure("no tiersync executable at \(path): build it first (swift build --build-tests)")
        }
        return path
    }

    public var output: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }

    public func waitForOutput(containing text: String, timeout: Double = 30) async throws -> String {
        try await eventually(timeout: timeout, "'\(text)' in \(log):\n\(output)") { output.contains(text) || !process.isRunning }
        guard output.contains(text) else { throw TestFailure("process exited (\(process.terminationStatus)) before printing '\(text)':\n\(output)") }
        return output
    }

    /// Sends `signal` and returns at once (SIGSTOP freezes the process, SIGCONT thaws it).
    public func send(signal: Int32) {
        guard process.isRunning else { return }
        Foundation.kill(process.processIdentifier, signal)
    }

    /// Sends `signal` and waits for the process to exit.
    public func kill(_ signal: Int32 = SIGKILL) {
        guard process.isRunning else { return }
        Foundation.kill(process.processIdentifier, signal)
        process.waitUntilExit()
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace` seconds; returns once it has exited.
    public func stop(grace: Double = 10) async {
        guard process.isRunning else { return }
        Foundation.kill(process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(grace)
        while process.isRunning, Date() < deadline {
            // Not `Task.sleep`: a cancelled test must still wait for its children.
            await withCheckedContinuation { continuation in
                DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(20)) { continuation.resume() }
            }
        }
        kill(SIGKILL)
    }

    /// Runs a short command to completion and returns its standard output.
    public static func run(_ arguments: [String], timeout: Double = 300) throws -> String {
        let (status, output) = try capture(arguments, includingErrors: false, timeout: timeout)
        guard status == 0 else { throw TestFailure("tiersync \(arguments.joined(separator: " ")) exited \(status)") }
        return output
    }

    /// Runs a short command to completion; returns its exit status and its output
    /// (standard output, and standard error too when `includingErrors`). A command still
    /// running after `timeout` seconds is killed, and that is an error.
    public static func capture(_ arguments: [String], includingErrors: Bool = true,
                               timeout: Double = 300) throws -> (status: Int32, output: String) {
        let ends = try SpawnedProcess.pipe()
        let p: SpawnedProcess
        do {
            defer { close(ends.write) }
            p = try SpawnedProcess(executable: try binary(), arguments: arguments, stdout: ends.write, stderr: includingErrors ? ends.write : 2)
        } catch {
            close(ends.read)
            throw error
        }
        let out = FileHandle(fileDescriptor: ends.read, closeOnDealloc: true)
        let pid = p.processIdentifier
        let timedOut = Flag()
        let watchdog = DispatchWorkItem {
            timedOut.set()
            Foundation.kill(pid, SIGKILL)
        }
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: watchdog)
        let data = out.readDataToEndOfFile()
        p.waitUntilExit()
        watchdog.cancel()
        let output = String(decoding: data, as: UTF8.self)
        if timedOut.isSet {
            throw TestFailure("tiersync \(arguments.joined(separator: " ")) still running after \(timeout) s, killed:\n\(output)")
        }
        return (p.terminationStatus, output)
    }
}

private final class Flag: Sendable {
    private let value = Mutex(false)
    func set() { value.withLock { $0 = true } }
    var isSet: Bool { value.withLock { $0 } }
}

/// Runs `body` with a `tiersync` child process, stopped (SIGTERM, then SIGKILL) and waited for
/// when `body` returns or throws.
public func withChild<T>(_ arguments: [String], log: String, environment: [String: String] = [:],
                         _ body: (Child) async throws -> T) async throws -> T {
    let child = try Child(arguments, log: log, environment: environment)
    return try await withTeardown({ await child.stop() }) { try await body(child) }
}

/// What one leaf of an effective config must be: the overlay's value where an overlay
/// entry covers the leaf (a target `{at_least: n}` is one entry over the leaf
/// `….target.at_least`), else the release's. Written independently of `Overlay.apply`.
public func expectedLeaf(_ path: String, base: ConfigValue, overlay: Overlay) -> ConfigValue? {
    for (entry, value) in overlay.set {
        if path == entry { return value }
        if path.hasPrefix(entry + ".") { return value[path: String(path.dropFirst(entry.count + 1))] }
    }
    return base
}

/// A clock a test sets: what rules runners evaluate at (`RulesSchedule`), so hours and days
/// pass in a moment.
public final class ManualClock: Sendable {
    private let millis: Mutex<UInt64>

    public init(_ start: UInt64) { millis = Mutex(start) }

    /// An ISO 8601 time (`2026-12-03T10:00:00Z`).
    public convenience init(_ iso: String) {
        self.init(UInt64(ISO8601DateFormatter().date(from: iso)!.timeIntervalSince1970 * 1000))
    }

    public var now: UInt64 { millis.withLock { $0 } }

    public func set(_ value: UInt64) { millis.withLock { $0 = value } }

    public func set(_ iso: String) { set(UInt64(ISO8601DateFormatter().date(from: iso)!.timeIntervalSince1970 * 1000)) }

    /// The clock as the runners take it.
    public var read: @Sendable () -> UInt64 { { [self] in now } }
}

/// How often a node's rules run (escalation, proactive contacts) and on which clock.
public struct RulesSchedule: Sendable {
    public var interval: Duration
    public var clock: @Sendable () -> UInt64

    public init(every interval: Duration = .milliseconds(100), clock: ManualClock) {
        self.interval = interval
        self.clock = clock.read
    }

    func apply(to configuration: inout AgentConfiguration) {
        configuration.rulesInterval = interval
        configuration.rulesClock = clock
    }
}

/// Runs `script` with `python3 -c` and `arguments`, returning its standard output, on a
/// thread of its own (it blocks while the child runs, which must not hold one of the few
/// cooperative threads). For bytes an HTTP client library will not send: a TCP FIN without
/// close_notify, a body that stalls or never ends.
public func python(_ script: String, _ arguments: [String]) async throws -> Data {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread {
            continuation.resume(with: Result {
                let ends = try SpawnedProcess.pipe()
                let process: SpawnedProcess
                do {
                    defer { close(ends.write) }
                    process = try SpawnedProcess(executable: "/usr/bin/env", arguments: ["python3", "-c", script] + arguments, stdout: ends.write, stderr: 2)
                } catch {
                    close(ends.read)
                    throw error
                }
                let data = FileHandle(fileDescriptor: ends.read, closeOnDealloc: true).readDataToEndOfFile()
                process.waitUntilExit()
                guard process.terminationStatus == 0 else { throw TestFailure("python3 failed: \(String(decoding: data, as: UTF8.self))") }
                return data
            })
        }
    }
}

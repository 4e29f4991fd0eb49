import ArgumentParser
import Foundation
import Logging
import Synchronization
import TiersyncAgent
import TiersyncCore
import TiersyncGovernance
import TiersyncStore

/// Where a node's store is and how it reaches its parent.
public struct ParentOptions: ParsableArguments, Sendable {
    public init() {}

    @Option(help: "The node's SQLite file (created if missing).")
    public var db: String
    @Option(name: [.customLong("parent"), .customLong("hub")],
            help: "The parent's URL, e.g. https://hub.example.com:8443 (default: the URL used last). A different URL re-parents the node.")
    public var parentURL: String?
    @Option(help: "PEM file of the CA that signed the parent's certificate.")
    public var ca: String?
    @Option(help: "One-time enrollment token, for the first run.")
    public var enrollToken: String?
    @Option(help: "Changes per push request.")
    public var batchSize = 500
    @Option(help: "Milliseconds between checks for new local writes.")
    public var pollMs = 200
    @Option(help: "Seconds a pull long-polls the parent.")
    public var pullWait = 25.0
    @Option(help: "HQ's governance release key (base64, from `tiersync admin release-key`), pinned instead of trusting the one received at enrollment.")
    public var releaseKey: String?
    @Option(help: "Seconds between evaluations of the node's escalation and proactive-contact rules (0: never).")
    public var rulesInterval = 30.0
    @Option(help: "Days this node's store keeps superseded log entries and tombstones; a child away longer must re-bootstrap (docs/PRIVACY.md, \"Bounded storage\").")
    public var retentionDays = 30.0

    /// Opens the store, enrolls it on its first run, adopts a changed parent URL, and
    /// returns the agent configuration. A country node, whose hub checkpoints its store,
    /// passes ``WALCheckpointing/byOwner``.
    ///
    /// `servesChildren`: the caller serves the node's children too (a country node). A store
    /// that has served its log to children is refused otherwise: run as a plain agent, a
    /// restored country store evicted every record it held for its dealers (helper 99: 427 of
    /// 460 customers).
    /// The store locks this process holds (``prepare(allowInsecureHTTP:maxSkewSeconds:checkpointing:servesChildren:)``).
    private static let held = Mutex<[HubDirectoryLock]>([])

    public func prepare(allowInsecureHTTP: Bool, maxSkewSeconds: UInt64 = 60,
                        checkpointing: WALCheckpointing = .byWriter, servesChildren: Bool = false) async throws -> (NodeStore, AgentConfiguration) {
        // One process syncs a store: two agents on one ran side by side, unnoticed (helper 103).
        // Held until the process ends; the kernel frees it however it ends.
        // The store's own path, through any symlink: a store named by a link had a lock file
        // of its own beside the link, and two agents ran. (A hard link still has its own.)
        let lockFile = URL(fileURLWithPath: db).resolvingSymlinksInPath().standardizedFileURL.path + ".lock"
        guard let lock = try HubDirectoryLock.acquire(file: lockFile) else {
            throw CLIError("another agent or country node is syncing \(db) (it holds \(lockFile)): one process syncs a store; the record commands may run beside it")
        }
        Self.held.withLock { $0.append(lock) }
        let store = try NodeStore(path: db, clock: HybridLogicalClock(maxSkewMillis: maxSkewSeconds * 1000), checkpointing: checkpointing)
        if !servesChildren, try store.meta(MetaKey.logHistories.rawValue) != nil {
            let node = (try? store.identity())?.node.rawValue ?? "a country"
            throw CLIError("\(db) is the store of \(node), a node that serves its log to nodes below it: run it with `tiersync node serve --role country --db \(db) --data <its directory>`; as a plain agent it would evict the records it holds for them")
        }
        guard let url = try parentURL ?? store.meta("parent_url") else {
            throw CLIError("--parent is required until the node has enrolled")
        }
        // Kept absolute (the next run may start in another directory, as a service does),
        // and only a file that exists (a mistyped one must not stick for later runs).
        let ca = try self.ca.map { given in
            let absolute = URL(fileURLWithPath: given).standardizedFileURL.path
            guard FileManager.default.fileExists(atPath: absolute) else { throw CLIError("--ca \(given) does not exist") }
            return absolute
        }
        var configuration = AgentConfiguration(parentURL: url, caFile: try ca ?? store.meta("ca_file"))
        configuration.allowInsecureHTTP = allowInsecureHTTP
        configuration.pushBatchSize = batchSize
        configuration.localPollInterval = .milliseconds(pollMs)
        configuration.pullWaitSeconds = pullWait
        configuration.rulesInterval = rulesInterval > 0 ? .milliseconds(Int64(rulesInterval * 1000)) : nil
        guard let retention = RetentionPolicy(days: retentionDays) else {
            throw CLIError("--retention-days must be a number of days above 0 and at most \(Int(RetentionPolicy.maximumDays)), got \(retentionDays)")
        }
        configuration.retention = retention
        // Under a new parent URL the CA is kept with it, once that parent is adopted: kept
        // now, a refused move left the old parent with the new parent's CA (helper 79).
        let enrolled = try store.meta(MetaKey.credential.rawValue) != nil
        let parentChanging = try enrolled && store.meta(MetaKey.parentURL.rawValue).map { !SyncAgent.sameParent($0, url) } ?? false
        if let ca, !parentChanging { try store.setMeta("ca_file", ca) }
        if let releaseKey {
            guard GovernancePublicKey(base64: releaseKey) != nil else { throw CLIError("--release-key is not a base64 Ed25519 public key") }
            if let held = try store.meta(GovernanceFollower.keyMeta), held != releaseKey {
                throw CLIError("\(db) already holds a different release key (\(held.prefix(16))…); nodes never switch keys silently: use a fresh store, or remove the key with `sqlite3 \(db) \"DELETE FROM ts_meta WHERE key='governance.key'\"` if HQ really changed it")
            }
            try store.setMeta(GovernanceFollower.keyMeta, releaseKey)
        }
        let held = try store.meta("credential") == nil ? nil : store.identity()
        if held == nil {
            guard let enrollToken else {
                throw CLIError("\(db) is not enrolled yet: pass --enroll-token (from `tiersync admin enroll-token`)")
            }
            let identity = try await SyncAgent.enroll(store: store, configuration: configuration, token: enrollToken)
            print("enrolled as node \(identity.node) of tenant \(identity.tenant)")
            flushOutput()
        } else if let enrollToken, try await enrollAgain(store, configuration, token: enrollToken) {
            // Enrolled again as the node it is: a new credential, and the store keeps its data.
        } else if try await adoptParentIfItAnswers(store, configuration, url: url) {
            print("parent changed to \(url): re-syncing with it from the start (nothing is applied twice)")
            flushOutput()
        }
        return (store, configuration)
    }

    /// An enrolled store given a token enrolls again as the node it is (after a revoke, or a
    /// lost credential), keeping its data and its place in the log. Only when the parent
    /// refuses the credential the store holds (401): the token of a service's command line,
    /// used up long ago, is not tried at every start, and a parent out of reach leaves the node
    /// running offline on its credential. A token the hub refuses stops the start (for another
    /// node, used, expired, unknown), saying why; one it could not judge (busy, unreachable)
    /// leaves the store as it was.
    private func enrollAgain(_ store: NodeStore, _ configuration: AgentConfiguration, token: String) async throws -> Bool {
        guard try await Self.credentialRefused(store, configuration) else {
            print("\(db) is enrolled already and its parent does not refuse its credential: --enroll-token was not used; running with the credential the store holds")
            flushOutput()
            return false
        }
        do {
            let identity = try await SyncAgent.enroll(store: store, configuration: configuration, token: token)
            print("enrolled again as node \(identity.node) of tenant \(identity.tenant), with a new credential; the store keeps what it holds")
            flushOutput()
            return true
        } catch AgentError.http(let status, let code, let message) where status < 500 && status != 429 {
            throw CLIError("the parent refuses this node's credential, and --enroll-token: \(message) (HTTP \(status) \(code))")
        } catch {
            print("\(db): the parent refuses this node's credential, and --enroll-token could not be used now (\(error)); running with the credential the store holds")
            flushOutput()
            return false
        }
    }

    /// True when the parent answers the store's credential 401 (revoked, or a hub that never
    /// knew it). Asked for at most 5 s: a parent out of reach is not a refusal.
    static func credentialRefused(_ store: NodeStore, _ configuration: AgentConfiguration) async throws -> Bool {
        if case .refused(401, _) = try await probe(store, configuration) { return true }
        return false
    }

    /// What a parent answers the store's credential (`whoami`), asked for at most 5 s.
    enum ParentAnswer: Sendable {
        case accepted
        /// 401 or 403: revoked, a hub (or country) that does not know it, or one it may not
        /// sync with (a dealer at HQ's URL); what the parent said, when it said why.
        case refused(status: Int, said: String?)
        /// No answer that says either (out of reach, too slow, another error).
        case unknown(String)
    }

    static func probe(_ store: NodeStore, _ configuration: AgentConfiguration) async throws -> ParentAnswer {
        guard let credential = try store.meta(MetaKey.credential.rawValue) else { return .refused(status: 401, said: nil) }
        let client = try ParentClient(configuration: configuration, credential: credential)
        let answer = await withTaskGroup(of: ParentAnswer?.self) { group in
            group.addTask {
                do {
                    _ = try await client.whoami()
                    return .accepted
                } catch AgentError.http(let status, _, let message) where status == 401 || status == 403 {
                    return .refused(status: status, said: message.isEmpty ? nil : "HTTP \(status): \(message)")
                } catch {
                    return .unknown("\(error)")
                }
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(5))
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            // The client keeps trying to connect, so a refused connection, an unknown host and a
            // certificate the CA does not vouch for all end here (helper 80).
            return first ?? .unknown("no answer within 5 s: nothing listening there, an unknown host, or a certificate --ca does not vouch for")
        }
        try? await client.shutdown()
        return answer
    }

    /// A new --parent for an enrolled store is adopted (its positions start over, and it is
    /// kept for later runs) only once that parent accepts the store's credential: a mistyped
    /// URL was kept, and the node's cursors reset, by the first start that named it (helper 71).
    private func adoptParentIfItAnswers(_ store: NodeStore, _ configuration: AgentConfiguration, url: String) async throws -> Bool {
        guard let current = try store.meta(MetaKey.parentURL.rawValue), !SyncAgent.sameParent(current, url) else { return false }
        switch try await Self.probe(store, configuration) {
        case .accepted:
            let adopted = try SyncAgent.adoptParent(store: store, url: url)
            if let ca = configuration.caFile { try store.setMeta("ca_file", ca) }
            return adopted
        case .refused(_, let said):
            throw CLIError("the parent at \(url) refuses this node's credential\(said.map { " (\($0))" } ?? ""): a mistyped --parent, a parent the node "
                           + "was not moved under with `tiersync admin move-node`, or a country that has not learned of the move yet (try again in a "
                           + "minute); the store keeps its parent \(current)")
        case .unknown(let reason):
            throw CLIError("the new parent \(url) could not be asked whether it knows this node (\(reason)); the store keeps its parent \(current). "
                           + "Check --parent and --ca, or start again once it answers")
        }
    }
}

/// `tiersync agent run` and the lean `tiersync-agent` executable: one command, two homes.
public struct AgentRunCommand: AsyncParsableCommand, Sendable {
    public static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Sync a node's SQLite store with its parent until SIGTERM or SIGINT.",
        discussion: """
        The first run needs --enroll-token (from `tiersync admin enroll-token`); the node's \
        identity and credential are then kept in its database. Local writes are pushed within \
        a fraction of a second; the agent long-polls for changes routed to the node and HQ's \
        governance releases, retries with backoff while the parent is down, and resumes where \
        it stopped after a crash.
        """)

    @OptionGroup public var parent: ParentOptions
    @Flag(help: "Allow a plain-HTTP parent URL. Development only.")
    public var insecureDevHttp = false
    @Flag(inversion: .prefixedNo,
          help: "Once synced, let the kernel drop start-up code (the executable's and libraries' read-only pages) from memory; it is re-read from the files if needed.")
    public var trimStartupMemory = true
    @OptionGroup public var logging: LoggingOptions

    public init() {}

    public func run() async throws {
        try logging.bootstrap()
        let (store, configuration) = try await parent.prepare(allowInsecureHTTP: insecureDevHttp)
        let agent = try SyncAgent(store: store, configuration: configuration)
        let trim = trimStartupMemory
        try await runUntilSignal {
            let trimming = trim ? Task { await Self.trimAfterFirstSync(agent) } : nil
            defer { trimming?.cancel() }
            try await agent.run()
        }
    }

    /// Waits until the agent's first pull has been applied or has failed (its start-up,
    /// including a catch-up, is over), or a minute at most, then releases the start-up
    /// pages.
    static func trimAfterFirstSync(_ agent: SyncAgent) async {
        let logger = Logger(label: "tiersync.agent")
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline, !Task.isCancelled {
            let status = agent.status
            if status.lastPullMillis != nil || status.consecutiveFailures > 0 { break }
            try? await Task.sleep(for: .milliseconds(200))
        }
        // The first push runs beside the first pull: let it finish too.
        guard (try? await Task.sleep(for: .seconds(2))) != nil else { return }
        let bytes = StartupPages.release()
        logger.notice("start-up pages released", metadata: ["advised_bytes": "\(bytes)"])
    }
}

/// Runs `body` until it returns or SIGTERM/SIGINT arrives, then cancels it and waits for it
/// to wind down (so in-flight transactions finish).
public func runUntilSignal(_ body: @escaping @Sendable () async throws -> Void) async throws {
    let task = Task { try await body() }
    var sources: [any DispatchSourceSignal] = []
    for sig in [SIGTERM, SIGINT] {
        signal(sig, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
        source.setEventHandler { task.cancel() }
        source.resume()
        sources.append(source)
    }
    defer { sources.forEach { $0.cancel() } }
    try await task.value
}

/// Options every long-running command shares.
public struct LoggingOptions: ParsableArguments, Sendable {
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    public var logLevel: String = "info"
    @Option(help: "Log lines as text (for people) or json (one object per line, with request_id on a request's lines).")
    public var logFormat: LogFormat = .text

    public enum LogFormat: String, ExpressibleByArgument, Sendable {
        case text, json
    }

    public init() {}

    public func bootstrap() throws {
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw ValidationError("unknown log level '\(logLevel)'")
        }
        switch logFormat {
        case .text:
            LoggingSystem.bootstrap { label in
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            }
        case .json:
            LoggingSystem.bootstrap { label in
                var handler = JSONLogHandler(label: label)
                handler.logLevel = level
                return handler
            }
        }
    }
}

/// Flushes standard output, so that a parent process reading a pipe sees lines at once.
public func flushOutput() {
    fflush(nil)
}

/// A failure of a command's work (not of its arguments): printed as one line, without usage.
public struct CLIError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

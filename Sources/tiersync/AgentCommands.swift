import ArgumentParser
import Foundation
import Logging
import TiersyncAgent
import TiersyncCore
import TiersyncGovernance
import TiersyncStore

/// Where a node's store is and how it reaches its parent.
struct ParentOptions: ParsableArguments {
    @Option(help: "The node's SQLite file (created if missing).")
    var db: String
    @Option(name: [.customLong("parent"), .customLong("hub")],
            help: "The parent's URL, e.g. https://hub.example.com:8443 (default: the URL used last). A different URL re-parents the node.")
    var parentURL: String?
    @Option(help: "PEM file of the CA that signed the parent's certificate.")
    var ca: String?
    @Option(help: "One-time enrollment token, for the first run.")
    var enrollToken: String?
    @Option(help: "Changes per push request.")
    var batchSize = 500
    @Option(help: "Milliseconds between checks for new local writes.")
    var pollMs = 200
    @Option(help: "Seconds a pull long-polls the parent.")
    var pullWait = 25.0
    @Option(help: "HQ's governance release key (base64, from `tiersync admin release-key`), pinned instead of trusting the one received at enrollment.")
    var releaseKey: String?

    /// Opens the store, enrolls it on its first run, adopts a changed parent URL, and
    /// returns the agent configuration.
    func prepare(allowInsecureHTTP: Bool, maxSkewSeconds: UInt64 = 60) async throws -> (NodeStore, AgentConfiguration) {
        let store = try NodeStore(path: db, clock: HybridLogicalClock(maxSkewMillis: maxSkewSeconds * 1000))
        guard let url = try parentURL ?? store.meta("parent_url") else {
            throw CLIError("--parent is required until the node has enrolled")
        }
        var configuration = AgentConfiguration(parentURL: url, caFile: try ca ?? store.meta("ca_file"))
        configuration.allowInsecureHTTP = allowInsecureHTTP
        configuration.pushBatchSize = batchSize
        configuration.localPollInterval = .milliseconds(pollMs)
        configuration.pullWaitSeconds = pullWait
        if let ca { try store.setMeta("ca_file", ca) }
        if let releaseKey {
            guard GovernancePublicKey(base64: releaseKey) != nil else { throw CLIError("--release-key is not a base64 Ed25519 public key") }
            if let held = try store.meta(GovernanceFollower.keyMeta), held != releaseKey {
                throw CLIError("\(db) already holds a different release key (\(held.prefix(16))…); nodes never switch keys silently: use a fresh store, or remove the key with `sqlite3 \(db) \"DELETE FROM ts_meta WHERE key='governance.key'\"` if HQ really changed it")
            }
            try store.setMeta(GovernanceFollower.keyMeta, releaseKey)
        }
        if try store.identity() == nil || store.meta("credential") == nil {
            guard let enrollToken else {
                throw CLIError("\(db) is not enrolled yet: pass --enroll-token (from `tiersync admin enroll-token`)")
            }
            let identity = try await SyncAgent.enroll(store: store, configuration: configuration, token: enrollToken)
            print("enrolled as node \(identity.node) of tenant \(identity.tenant)")
            flushOutput()
        } else if try SyncAgent.adoptParent(store: store, url: url) {
            print("parent changed to \(url): re-syncing with it from the start (nothing is applied twice)")
            flushOutput()
        }
        return (store, configuration)
    }
}

struct Agent: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run a node's sync agent.", subcommands: [Run.self])

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Sync a node's SQLite store with its parent until SIGTERM or SIGINT.",
            discussion: """
            The first run needs --enroll-token (from `tiersync admin enroll-token`); the node's
            identity and credential are then kept in its database. Local writes are pushed within
            a fraction of a second; the agent long-polls for changes routed to the node, retries
            with backoff while the parent is down, and resumes where it stopped after a crash.
            """)

        @OptionGroup var parent: ParentOptions
        @Flag(help: "Allow a plain-HTTP parent URL. Development only.")
        var insecureDevHttp = false
        @OptionGroup var logging: LoggingOptions

        func run() async throws {
            try logging.bootstrap()
            let (store, configuration) = try await parent.prepare(allowInsecureHTTP: insecureDevHttp)
            let agent = try SyncAgent(store: store, configuration: configuration)
            try await runUntilSignal { try await agent.run() }
        }
    }
}

/// Runs `body` until it returns or SIGTERM/SIGINT arrives, then cancels it and waits for it
/// to wind down (so in-flight transactions finish).
func runUntilSignal(_ body: @escaping @Sendable () async throws -> Void) async throws {
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

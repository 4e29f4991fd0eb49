import Foundation
import Synchronization
import Testing
import TiersyncAgent
import TiersyncCore
import TiersyncServer
import TiersyncStore
import TiersyncTestSupport

/// Runs `body`, then shuts the agents down whatever happened (`withSyncAgents`).
func using(_ agents: SyncAgent..., body: () async throws -> Void) async throws {
    try await withTeardown({ for a in agents { await a.shutdown() } }, body)
}

/// A hub over TLS and real `SyncAgent`s in this process.
@Suite("Sync agent", .serialized)
struct AgentTests {
    func enrolledAgent(_ hub: RunningHub, _ dir: TempDir, _ node: NodeID, configure: (inout AgentConfiguration) -> Void = { _ in }) async throws -> SyncAgent {
        _ = try hub.catalog.createTenant("acme")
        let store = try NodeStore(path: "\(dir.path)/\(node).sqlite")
        var configuration = AgentConfiguration(parentURL: hub.url, caFile: hub.caFile)
        configure(&configuration)
        try await SyncAgent.enroll(store: store, configuration: configuration,
                                   token: try hub.catalog.issueEnrollmentToken(tenant: "acme", node: node))
        return try SyncAgent(store: store, configuration: configuration)
    }

    @Test("a change refused for its scope is retried and lands once the scope allows it")
    func refusedChangesAreRetried() async throws {
        let dir = try TempDir()
        try await withRunningHub(directory: dir.path) { hub in
            let d1 = try await enrolledAgent(hub, dir, "d1")
            try await withSyncAgents(d1) {
                let d2 = try await enrolledAgent(hub, dir, "d2")
                try await withSyncAgents(d2) {
                    let hq = try hub.stores.store(for: "acme")
                    try d2.store.commit([.upsert("customers", id: "c-x", ["last_name": "Owned by d2"])])
                    try await d2.pushPending()
                    // d1 writes the same customer without being routed to it: refused, set aside.
                    // (It names d2 as the owner: written without one, the customer would be
                    // d1's, and taking it from d2 is refused for good, RouteReachTests.)
                    try d1.store.commit([.upsert("customers", id: "c-x", ["phone": "+49 1", "owning_dealer": "d2"])])
                    try await d1.pushPending()
                    #expect(try d1.store.pendingRetries() == 1)
                    #expect(d1.status.rejectedChanges == 1)

                    // HQ routes the customer to d1 as well; the next retry is accepted.
                    try hq.commit([.upsert("customers", id: "c-x", ["servicing_dealer": "d1"])])
                    try await Task.sleep(for: .milliseconds(1_100))
                    #expect(try await d1.retryRefused() == 1)
                    #expect(try d1.store.pendingRetries() == 0)
                    #expect(try hq.record(table: "customers", id: "c-x")?.state.liveValues["phone"] == "+49 1")
                    #expect(try hq.quarantined().isEmpty, "accepted on retry, it leaves the quarantine")
                }
            }
        }
    }

    @Test("one change too large to send is set aside; the changes after it still go")
    func oversizedChangeDoesNotBlock() async throws {
        let dir = try TempDir()
        var limits = HubConfiguration.Limits()
        limits.maxRequestBytes = 2_000
        try await withRunningHub(directory: dir.path, limits: limits) { hub in
            let agent = try await enrolledAgent(hub, dir, "d1") { $0.compressAboveBytes = .max }
            try await withSyncAgents(agent) {
                try agent.store.commit([.upsert("interactions", id: "i-big", ["summary": .string(String(repeating: "x", count: 3_000))]),
                                        .upsert("interactions", id: "i-small", ["topic": "brochure"])])
                try await agent.pushPending()
                let hq = try hub.stores.store(for: "acme")
                #expect(try hq.liveRecords(table: "interactions").map(\.id) == ["i-small"])
                #expect(try agent.store.pendingRetries() == 1)
                #expect(try agent.store.upstreamBacklog(after: agent.store.cursor("push.parent")) == 0)
                // When it is due again and still too large, it is set aside again, not an error.
                try await Task.sleep(for: .milliseconds(1_100))
                #expect(try await agent.retryRefused() == 0)
                #expect(try agent.store.pendingRetries() == 1)
            }
        }
    }

    @Test("a node re-enrolled with an empty store gets its old changes back and numbers new ones above them")
    func rebuiltNode() async throws {
        let dir = try TempDir()
        try await withRunningHub(directory: dir.path) { hub in
            let first = try await enrolledAgent(hub, dir, "d1")
            try await withSyncAgents(first) {
                try first.store.commit((1...5).map { .upsert("customers", id: "c-\($0)", ["last_name": "Before the crash"]) })
                try await first.pushPending()
            }

            // The disk is lost: a new, empty store enrolls as the same node.
            let rebuiltDir = try TempDir()
            let rebuilt = try await enrolledAgent(hub, rebuiltDir, "d1")
            try await withSyncAgents(rebuilt) {
                let fresh = try rebuilt.store.commit([.upsert("customers", id: "c-6", ["last_name": "After"])])
                #expect(fresh[0].originSeq == 6)
                try await rebuilt.pushPending()
                while try await rebuilt.pullOnce().more {}
                #expect(try rebuilt.store.liveRecords(table: "customers").count == 6)
                let hq = try hub.stores.store(for: "acme")
                #expect(try hq.changeCountsByOrigin()["d1"] == 6)
                #expect(try hq.quarantined().isEmpty)
            }
        }
    }
}

@Suite("Catch-up pipeline")
struct PagePipelineTests {
    /// What the stages did, in the order they did it.
    final class Events: Sendable {
        let list = Mutex<[String]>([])
        func add(_ e: String) { list.withLock { $0.append(e) } }
        var all: [String] { list.withLock { $0 } }
    }
    struct Failure: Error, Equatable { let stage: String }

    @Test("pages are applied in order, once each, while later pages are pulled and prepared")
    func orderAndOverlap() async throws {
        let events = Events()
        var applied: [Int64] = []
        try await PagePipeline.run(
            from: 0,
            pull: { cursor in events.add("pull \(cursor)"); return cursor },
            next: { page in page < 5 ? page + 1 : nil },
            prepare: { page in events.add("prepare \(page)"); return page * 10 },
            apply: { page, plan in
                #expect(plan == page * 10)
                try await Task.sleep(for: .milliseconds(50))
                events.add("applied \(page)")
            },
            applied: { applied.append($0) })
        #expect(applied == [0, 1, 2, 3, 4, 5])
        let log = events.all
        for k in 0..<4 {
            // Page k+2 was requested before page k finished being written.
            #expect(try #require(log.firstIndex(of: "pull \(k + 2)")) < (try #require(log.firstIndex(of: "applied \(k)"))), "\(log)")
        }
        #expect(log.filter { $0.hasPrefix("applied") } == (0...5).map { "applied \($0)" })
    }

    @Test("a failed pull is thrown after the page in hand is applied; a failed apply stops at once")
    func failures() async throws {
        var applied: [Int64] = []
        await #expect(throws: Failure(stage: "pull")) {
            try await PagePipeline.run(
                from: 0,
                pull: { cursor in if cursor == 3 { throw Failure(stage: "pull") }; return cursor },
                next: { $0 + 1 },
                prepare: { $0 },
                apply: { _, _ in try await Task.sleep(for: .milliseconds(20)) },
                applied: { applied.append($0) })
        }
        #expect(applied == [0, 1, 2], "page 2 had arrived before the pull of page 3 failed")

        applied = []
        await #expect(throws: Failure(stage: "apply")) {
            try await PagePipeline.run(
                from: 0,
                pull: { $0 },
                next: { $0 < 9 ? $0 + 1 : nil },
                prepare: { $0 },
                apply: { page, _ in if page == 1 { throw Failure(stage: "apply") } },
                applied: { applied.append($0) })
        }
        #expect(applied == [0])
    }
}

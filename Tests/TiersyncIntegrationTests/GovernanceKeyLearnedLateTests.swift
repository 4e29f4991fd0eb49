import Foundation
import Testing
@testable import TiersyncAgent
import TiersyncCore
import TiersyncGovernance
import TiersyncServer
import TiersyncStore
import TiersyncTestSupport

/// Issue 12, item 7: "Release key learned after a bundle". A node enrolled before HQ had a
/// release key learns it from its parent later (`whoami`). If the governance bundle came
/// first, it was dropped unverified — and its token remembered, so the agent long-polled
/// for a *different* bundle and never applied the release in force until the next rollout.
@Suite("Governance: release key learned after a bundle")
struct GovernanceKeyLearnedLateTests {
    @Test("a node that receives a bundle before it knows HQ's key applies the release once it learns the key, without a new rollout")
    func releaseAppliedAfterKeyLearned() async throws {
        let dir = try TempDir()
        try await withRunningHub(directory: dir.path) { hub in
            try hub.catalog.createTenant("automaker", levels: 3)
            // The node enrolls while the tenant has no release key: it learns none.
            let store = try NodeStore(path: dir.path + "/de.sqlite")
            var configuration = AgentConfiguration(parentURL: hub.url, caFile: hub.caFile)
            configuration.pullWaitSeconds = 1
            try await SyncAgent.enroll(store: store, configuration: configuration,
                                       token: try hub.catalog.issueEnrollmentToken(tenant: "automaker", node: "de"))
            #expect(try store.meta(GovernanceFollower.keyMeta) == nil)

            // HQ then gets its key and publishes v1.
            let hqKey = GovernanceSigningKey()
            try hub.catalog.setReleaseKey(hqKey.publicKey.base64, for: "automaker")
            let publisher = GovernancePublisher(store: try hub.stores.store(for: "automaker"), tenant: "automaker", key: hqKey,
                                                tree: try await hub.catalog.tree(of: "automaker"))
            try await publisher.publish(try GovernanceCompiler.compile(directory: repositoryRoot() + "/fixtures/governance/automaker"))

            let agent = try SyncAgent(store: store, configuration: configuration)
            try await withSyncAgents(agent) {
                // The bundle arrives before the key: it cannot be verified, nothing is kept.
                await #expect(throws: GovernanceFollower.NoReleaseKey.self) { try await agent.syncGovernanceOnce() }
                #expect(try store.governanceDocuments().isEmpty)
                #expect(try store.appliedGovernance() == nil)

                // The agent learns the key from its parent, as its governance loop does.
                let announced = try #require(try await agent.parent.whoami().releaseKey)
                agent.learnReleaseKey(announced)
                #expect(try store.meta(GovernanceFollower.keyMeta) == hqKey.publicKey.base64)

                // The next round fetches the bundle again (nothing new was published) and applies v1.
                try await agent.syncGovernanceOnce()
                let applied = try #require(try store.appliedGovernance(), "v1 applied without waiting for another rollout")
                #expect(applied.release == 1)
                #expect(try store.currentGovernance()?.state == "applied")
                // And the bundle is now remembered: the next round has nothing new.
                #expect(try await agent.syncGovernanceOnce() == false)
            }
        }
    }
}

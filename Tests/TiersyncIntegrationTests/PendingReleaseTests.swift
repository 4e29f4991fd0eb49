import Foundation
import Testing
import TiersyncAgent
import TiersyncCore
import TiersyncGovernance
import TiersyncStore
import TiersyncTestSupport

private func fixture(_ path: String) -> String { repositoryRoot() + "/fixtures/governance/" + path }

private func inForce(_ store: NodeStore) throws -> (release: Int?, overlay: String?) {
    let applied = try store.appliedGovernance()
    return (applied?.release, applied?.overlay)
}

/// While a release waits for its effective-from, what the tenant runs stays in force for
/// every node: those running it, those enrolled meanwhile, and a country's overlay.
@Suite("A release published for later")
struct PendingReleaseTests {
    @Test("""
        while v2 waits an hour, a country publishes an overlay against v1 (refused: "release 1 is in force but not stored \
        here"), and a dealer and a country enrolled meanwhile run v1 (with the overlay) and allocate with it (they ran no \
        governance at all, and their dialogues were never allocated)
        """, .timeLimit(.minutes(4)))
    func enrolledWhileAReleaseWaits() async throws {
        let dir = try TempDir()
        let data = dir.path + "/hub"
        try await withRunning { running in
            let hub = try await running.hub(directory: dir.path)
            try hub.catalog.createTenant("automaker", levels: 3)
            _ = try Child.run(["admin", "release-key", "--data", data, "--tenant", "automaker"])
            let de = try await running.country(hub: hub, tenant: "automaker", node: "de", directory: dir.path)
            let first = try await running.agent(enrolling: "de-1", parent: "de", tenant: "automaker", hub: hub, parentURL: de.url, directory: dir.path)
            _ = try Child.run(["admin", "publish", fixture("automaker"), "--data", data])
            try await eventually(timeout: 30, "de-1 applies v1") { try inForce(first.store).release == 1 }

            _ = try Child.run(["admin", "publish", fixture("automaker"), "--data", data, "--effective-from", "+1h"])
            try await eventually(timeout: 30, "de holds v2 as pending") { try de.store.currentGovernance()?.state == "pending" }
            #expect(try inForce(de.store).release == 1)

            _ = try Child.run(["admin", "overlay-key", "--data", data, "--tenant", "automaker", "--node", "de", "--out", dir.path + "/de.key"])
            let published = try Child.run(["overlay", "publish", fixture("overlays/de.yaml"), "--store", dir.path + "/de.sqlite", "--key", dir.path + "/de.key"])
            #expect(published.contains("de#1"), "\(published)")
            try await eventually(timeout: 30, "de-1 applies de#1 over v1") { try inForce(first.store) == (1, "de#1") }

            // Enrolled while v2 waits: they run v1, as everyone else does, and say what waits.
            let late = try await running.agent(enrolling: "de-2", parent: "de", tenant: "automaker", hub: hub, parentURL: de.url, directory: dir.path)
            let fr = try await running.country(hub: hub, tenant: "automaker", node: "fr", directory: dir.path)
            try await eventually(timeout: 30, "de-2 runs v1 with de#1") { try inForce(late.store) == (1, "de#1") }
            try await eventually(timeout: 30, "fr runs v1") { try inForce(fr.store).release == 1 }
            for store in [late.store, fr.store] {
                let current = try #require(try store.currentGovernance())
                #expect(current.state == "pending" && (current.message ?? "").contains("release 2 takes effect at"), "\(current)")
            }
            let added = try Child.run(["contact", "add", "--db", dir.path + "/de-2.sqlite", "--last-name", "Late", "--channel", "phone",
                                "--topic", "opening hours", "--knowledge-kind", "specification", "--urgency", "low"])
            #expect(added.contains("of release v1") && !added.contains("not allocated"), "\(added)")
            let shown = try Child.run(["governance", "--store", dir.path + "/de-2.sqlite"])
            #expect(shown.hasPrefix("release v1 ⊕ overlay de#1"), "\(shown)")
        }
    }
}

import Foundation
import Testing
import TiersyncAgent
import TiersyncCore
import TiersyncGovernance
import TiersyncStore
import TiersyncTestSupport

/// Runs `tiersync`; expects exit 0 and returns the output (errors included).
private func ok(_ arguments: [String]) throws -> String {
    let (status, output) = try Child.capture(arguments)
    guard status == 0 else { throw TestFailure("tiersync \(arguments.joined(separator: " ")) exited \(status):\n\(output)") }
    return output
}

private func fixture(_ path: String) -> String { repositoryRoot() + "/fixtures/governance/" + path }

/// A copy of the automaker fixture whose warranty-specification SLA is `sla` (a new release).
private func automaker(sla: String, in dir: String) throws -> String {
    let copy = dir + "/automaker-" + sla
    try FileManager.default.copyItem(atPath: fixture("automaker"), toPath: copy)
    let file = copy + "/allocation.yaml"
    let parts = try String(contentsOfFile: file, encoding: .utf8).components(separatedBy: "  - id: warranty-specification")
    guard parts.count == 2, let range = parts[1].range(of: "sla: 4h") else { throw TestFailure("fixture layout changed") }
    try (parts[0] + "  - id: warranty-specification" + parts[1].replacingCharacters(in: range, with: "sla: \(sla)"))
        .write(toFile: file, atomically: true, encoding: .utf8)
    return copy
}

private func inForce(_ store: NodeStore) throws -> (release: Int?, overlay: String?, effective: ConfigValue?) {
    guard let a = try store.appliedGovernance() else { return (nil, nil, nil) }
    return (a.release, a.overlay, try a.effective.map { try JSONDecoder().decode(ConfigValue.self, from: Data($0.utf8)) })
}

/// Issue 12, item 8: HQ's release key is rotated with no gap, a forged announcement is
/// refused; a country's overlay key is revoked and a new one issued.
@Suite("Release-key rotation and overlay-key revocation", .serialized)
struct KeyRotationTests {
    @Test("""
    admin rotate-release-key: the new key, announced by the old one, reaches the dealer through its country; \
    the release signed before stays in force, a dealer enrolled afterwards accepts it too, the next release is \
    signed by the new key and applied; a forged announcement is refused and reported up to HQ
    """)
    func rotation() async throws {
        let dir = try TempDir()
        let data = dir.path + "/hub"
        try await withRunning { running in
            let hub = try await running.hub(directory: dir.path)
            try hub.catalog.createTenant("automaker", levels: 3)
            _ = try ok(["admin", "release-key", "--data", data, "--tenant", "automaker"])
            let k0 = try #require(try hub.catalog.releaseKey(of: "automaker"))
            let de = try await running.country(hub: hub, tenant: "automaker", node: "de", directory: dir.path)
            let dealer = try await running.agent(enrolling: "de-1", parent: "de", tenant: "automaker", hub: hub, parentURL: de.url, directory: dir.path)
            #expect(try dealer.store.meta(GovernanceFollower.keyMeta) == k0)
            _ = try ok(["admin", "publish", fixture("automaker"), "--data", data])
            try await eventually(timeout: 30, "de-1 applies v1") { try inForce(dealer.store).release == 1 }

            // Rotate.
            let rotated = try ok(["admin", "rotate-release-key", "--data", data, "--tenant", "automaker"])
            let k1 = try #require(try hub.catalog.releaseKey(of: "automaker"))
            let old = try #require(GovernancePublicKey(base64: k0)), new = try #require(GovernancePublicKey(base64: k1))
            #expect(k1 != k0)
            #expect(rotated.contains("key-rotation 1 of automaker: \(old) → \(new)"), "\(rotated)")
            #expect(FileManager.default.fileExists(atPath: "\(data)/keys/automaker.release.key.\(old.keyID).retired"))
            #expect(try GovernanceSigningKey(base64: String(contentsOfFile: data + "/keys/automaker.release.key", encoding: .utf8)).publicKey == new)
            try await eventually(timeout: 30, "de and de-1 adopt the new key") {
                try de.store.meta(GovernanceFollower.keyMeta) == k1 && dealer.store.meta(GovernanceFollower.keyMeta) == k1
            }
            // No gap: v1, signed by the old key before the rotation, stays in force.
            for store in [de.store, dealer.store] {
                let current = try #require(try store.currentGovernance())
                #expect(current.state == "applied" && current.release == 1 && current.message == nil, "\(current)")
            }
            // A dealer enrolled now learns only the new key, and still accepts v1.
            let late = try await running.agent(enrolling: "de-2", parent: "de", tenant: "automaker", hub: hub, parentURL: de.url, directory: dir.path)
            #expect(try late.store.meta(GovernanceFollower.keyMeta) == k1)
            try await eventually(timeout: 30, "de-2 applies v1") { try inForce(late.store).release == 1 }

            // de publishes an overlay while v1 (signed by the old key) is in force, with an
            // overlay key HQ certified with the new key: the country checks both through
            // the keys it follows, and de-1 applies it.
            _ = try ok(["admin", "overlay-key", "--data", data, "--tenant", "automaker", "--node", "de", "--out", dir.path + "/de-after-rotation.key"])
            _ = try ok(["overlay", "publish", fixture("overlays/de.yaml"), "--store", dir.path + "/de.sqlite", "--key", dir.path + "/de-after-rotation.key"])
            try await eventually(timeout: 30, "de-1 applies de#1 over v1") { try inForce(dealer.store).overlay == "de#1" && inForce(dealer.store).release == 1 }

            // Whoever kept the retired key re-signs v1 with notes of their own, served by the
            // country: de-1 holds v1 and keeps it (it took the forgery, still reporting v1).
            let thief = try GovernanceSigningKey(base64: String(contentsOfFile: "\(data)/keys/automaker.release.key.\(old.keyID).retired", encoding: .utf8))
            let heldV1 = try #require(try dealer.store.governanceDocuments(kind: "release").first)
            var release = try old.open(try #require(SignedDocument(json: heldV1.body)), as: .release, Release.self)
            release.notes = "forged with the retired key"
            let forgedV1 = try thief.sign(release, as: .release)
            try de.store.putGovernanceDocument(StoredGovernanceDocument(kind: "release", key: heldV1.key, seq: heldV1.seq, body: forgedV1.json))
            try await eventually(timeout: 30, "de-1 refuses the re-signed v1") {
                try (dealer.store.currentGovernance()?.message ?? "").contains("signed by retired key \(old.keyID) with content other than the one held here")
            }
            #expect(try dealer.store.governanceDocuments(kind: "release").first?.body == heldV1.body, "v1 as HQ signed it stays")
            #expect(try inForce(dealer.store).release == 1 && dealer.store.currentGovernance()?.state == "applied")

            // The next release is signed by the new key, and applied.
            _ = try ok(["admin", "publish", try automaker(sla: "3h", in: dir.path), "--data", data])
            let v2 = try #require(try hub.stores.store(for: "automaker").governanceDocuments(kind: "release", keys: ["2"]).first.flatMap { SignedDocument(json: $0.body) })
            #expect(v2.keyID == new.keyID)
            try await eventually(timeout: 30, "de-1 and de-2 apply v2") {
                try inForce(dealer.store).release == 2 && inForce(late.store).release == 2
            }
            #expect(try inForce(dealer.store).effective?[path: "allocation.warranty-specification.then.sla"] == .string("3h"))

            // A forged announcement (signed by another key) served by the country: refused, reported, not adopted.
            let forger = GovernanceSigningKey()
            let forged = try forger.sign(KeyRotation(tenant: "automaker", sequence: 2, previousKey: k1, newKey: forger.publicKey.base64,
                                                     rotatedAtMillis: WallClock.nowMillis(), releasesThrough: 2, rolloutsThrough: 2), as: .keyRotation)
            try de.store.putGovernanceDocument(StoredGovernanceDocument(kind: "key-rotation", key: "2", seq: 2, body: forged.json))
            try await eventually(timeout: 30, "de-1 refuses the forged announcement") {
                try (dealer.store.currentGovernance()?.message ?? "").contains("key-rotation 2 refused")
            }
            let message = try #require(try dealer.store.currentGovernance()?.message)
            #expect(message.contains("signature does not match \(new)") && message.contains("signed by key \(forger.publicKey.keyID)"), "\(message)")
            #expect(try dealer.store.meta(GovernanceFollower.keyMeta) == k1, "the held key stays")
            #expect(try dealer.store.currentGovernance()?.state == "applied" && inForce(dealer.store).release == 2)
            #expect(try dealer.store.governanceDocuments(kind: "key-rotation").map(\.key) == ["1"], "the forgery is not kept")
            // HQ sees the refusal in the rollout status.
            try await eventually(timeout: 30, "HQ's rollout status shows de-1's refusal") {
                let status = try Child.capture(["admin", "rollout-status", "--data", data, "--tenant", "automaker"]).output
                return status.contains("de-1: ") && status.contains("key-rotation 2 refused")
            }
        }
    }

    @Test("""
    admin revoke-overlay-key: dealers and the country refuse overlays signed with the revoked key and apply the \
    release alone, reported in the rollout status; an overlay key issued afterwards is accepted
    """)
    func overlayKeyRevocation() async throws {
        let dir = try TempDir()
        let data = dir.path + "/hub"
        try await withRunning { running in
            let hub = try await running.hub(directory: dir.path)
            try hub.catalog.createTenant("automaker", levels: 3)
            _ = try ok(["admin", "release-key", "--data", data, "--tenant", "automaker"])
            let de = try await running.country(hub: hub, tenant: "automaker", node: "de", directory: dir.path)
            let dealer = try await running.agent(enrolling: "de-1", parent: "de", tenant: "automaker", hub: hub, parentURL: de.url, directory: dir.path)
            _ = try ok(["admin", "publish", fixture("automaker"), "--data", data])
            try await eventually(timeout: 30, "de and de-1 apply v1") { try inForce(de.store).release == 1 && inForce(dealer.store).release == 1 }
            let v1 = try GovernanceCompiler.compile(directory: fixture("automaker")).config

            // de gets a key and publishes its overlay; de-1 applies it.
            _ = try ok(["admin", "overlay-key", "--data", data, "--tenant", "automaker", "--node", "de", "--out", dir.path + "/de-first.key"])
            _ = try ok(["overlay", "publish", fixture("overlays/de.yaml"), "--store", dir.path + "/de.sqlite", "--key", dir.path + "/de-first.key"])
            try await eventually(timeout: 30, "de-1 applies de#1") { try inForce(dealer.store).overlay == "de#1" }

            // HQ revokes it: the release alone, with the reason.
            let revoked = try ok(["admin", "revoke-overlay-key", "--data", data, "--tenant", "automaker", "--node", "de", "--reason", "key file lost"])
            #expect(revoked.contains("revoked the overlay keys of automaker/de"), "\(revoked)")
            try await eventually(timeout: 30, "de-1 and de drop the overlay") {
                try inForce(dealer.store).overlay == nil && inForce(de.store).overlay == nil
            }
            for store in [dealer.store, de.store] {
                #expect(try inForce(store).effective == v1, "the release alone")
                let message = try #require(try store.currentGovernance()?.message)
                #expect(message.contains("overlay of de: overlay refused: HQ revoked de's overlay key") && message.contains("key file lost"), "\(message)")
            }
            try await eventually(timeout: 30, "HQ's rollout status shows the refusal") {
                let status = try Child.capture(["admin", "rollout-status", "--data", data, "--tenant", "automaker"]).output
                return status.contains("de-1: ") && status.contains("HQ revoked de's overlay key")
            }
            // Not a country: refused.
            let notCountry = try Child.capture(["admin", "revoke-overlay-key", "--data", data, "--tenant", "automaker", "--node", "de-1"])
            #expect(notCountry.status != 0 && notCountry.output.contains("not a country"), "\(notCountry)")

            // Publishing with the revoked key is refused at the country, naming why (it was
            // reported published, and every node refused it).
            let withRevoked = try Child.capture(["overlay", "publish", fixture("overlays/de.yaml"), "--store", dir.path + "/de.sqlite", "--key", dir.path + "/de-first.key"])
            #expect(withRevoked.status != 0 && withRevoked.output.contains("HQ revoked de's overlay key"), "\(withRevoked)")
            #expect(try de.store.governanceDocuments(kind: "overlay").map(\.seq) == [1], "nothing new is kept")

            // A new key, certified after the revocation: its overlay is applied again.
            _ = try ok(["admin", "overlay-key", "--data", data, "--tenant", "automaker", "--node", "de", "--out", dir.path + "/de-second.key"])
            _ = try ok(["overlay", "publish", fixture("overlays/de.yaml"), "--store", dir.path + "/de.sqlite", "--key", dir.path + "/de-second.key"])
            try await eventually(timeout: 30, "de-1 applies de#2") { try inForce(dealer.store).overlay == "de#2" }
            #expect(try dealer.store.currentGovernance()?.message == nil)
            #expect(try inForce(dealer.store).effective != v1)
        }
    }
}

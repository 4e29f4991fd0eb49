import Foundation
import Testing
import TiersyncCore
import TiersyncGovernance
import TiersyncStore
import TiersyncTestSupport

/// The README's "Access and keys" lines, run as written (with `D` the hub's data directory)
/// against a hub's catalog holding the nodes they name.
@Suite("README: access and keys")
struct ReadmeAccessTests {
    @Test("every tiersync line of README's Access and keys section runs and does what its comment says")
    func accessAndKeysLines() async throws {
        let dir = try TempDir()
        let data = dir.path + "/hub"
        let lines = try Readme().commands(in: "Access and keys")
        #expect(lines.count == 7, "\(lines)")

        // The nodes they name: acme's de and dealer-042, automaker's de with a release key.
        let catalog = try HubCatalog(directory: data)
        try catalog.createTenant("acme", levels: 3)
        try catalog.createTenant("automaker", levels: 3)
        _ = try await catalog.redeem(token: try catalog.issueEnrollmentToken(tenant: "acme", node: "de"))
        let dealer = try await catalog.redeem(token: try catalog.issueEnrollmentToken(tenant: "acme", node: "dealer-042", parent: "de"), via: Principal(tenant: "acme", node: "de"))
        _ = try await catalog.redeem(token: try catalog.issueEnrollmentToken(tenant: "automaker", node: "de"))
        let releaseKey = try await tiersync(["admin", "release-key", "--data", data, "--tenant", "automaker"], cwd: dir.path)
        #expect(releaseKey.status == 0, "\(releaseKey)")
        let k0 = try catalog.releaseKey(of: "automaker")

        var outputs: [String] = []
        for line in lines {
            #expect(line.first == "tiersync")
            let ran = try await tiersync(Array(line.dropFirst()).map { $0 == "D" ? data : $0 }, cwd: dir.path)
            #expect(ran.status == 0, "\(ran)")
            outputs.append(ran.out)
        }
        #expect(outputs[0].contains("revoked dealer-042 of acme: 1 credential(s)"), "\(outputs[0])")
        #expect(try await catalog.authenticate(credential: dealer.credential) == nil)
        #expect(outputs[1].contains("decommissioned dealer-042 of acme"), "\(outputs[1])")
        #expect(try await catalog.node("dealer-042", of: "acme")?.role == "dealer (decommissioned)")
        #expect(outputs[2].contains("not allowed (dealers sync through their country)"), "\(outputs[2])")
        #expect(try catalog.settings(of: "acme")?.allowDirectSync == true)
        #expect(outputs[4].contains("four-eyes releases: on"), "\(outputs[4])")
        #expect(try await SQLiteCatalog(catalog).requiresReleaseApproval(of: "acme"))
        #expect(outputs[5].contains("key-rotation 1 of automaker"), "\(outputs[5])")
        #expect(try catalog.releaseKey(of: "automaker") != k0)
        #expect(outputs[6].contains("revoked the overlay keys of automaker/de"), "\(outputs[6])")
        let hq = try NodeStore(path: catalog.tenantDatabasePath("automaker"))
        #expect(try hq.governanceDocuments(kind: "overlay-key-revocation").map(\.key) == ["de"])
        #expect(try hq.governanceDocuments(kind: "key-rotation").map(\.key) == ["1"])
    }
}

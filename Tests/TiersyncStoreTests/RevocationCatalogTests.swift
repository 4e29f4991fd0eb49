import Foundation
import GRDB
import Testing
import TiersyncCore
@testable import TiersyncStore
import TiersyncTestSupport

@Suite("Catalog: revocation, decommissioning, direct sync")
struct RevocationCatalogTests {
    @Test("revoke takes credentials and unused tokens; decommission also bars every later enrollment and shows in listings")
    func revokeAndDecommission() async throws {
        let dir = try TempDir()
        let catalog = try HubCatalog(directory: dir.path)
        try catalog.createTenant("acme", levels: 3)
        _ = try await catalog.redeem(token: try catalog.issueEnrollmentToken(tenant: "acme", node: "de"))
        let d1 = try await catalog.redeem(token: try catalog.issueEnrollmentToken(tenant: "acme", node: "d1", parent: "de"), via: Principal(tenant: "acme", node: "de"))
        _ = try catalog.issueEnrollmentToken(tenant: "acme", node: "d1", parent: "de")
        #expect(try await catalog.authenticate(credential: d1.credential) == Principal(tenant: "acme", node: "d1"))

        let revocation = try catalog.revoke(node: "d1", of: "acme")
        #expect(revocation == Revocation(node: "d1", credentials: 1, tokens: 1, decommissionedAtMillis: nil))
        #expect(try await catalog.authenticate(credential: d1.credential) == nil)
        #expect(try await catalog.node("d1", of: "acme")?.role == "dealer", "a revoked node keeps its place")
        // Revoked, not retired: a new token enrolls it again.
        let again = try await catalog.redeem(token: try catalog.issueEnrollmentToken(tenant: "acme", node: "d1", parent: "de"), via: Principal(tenant: "acme", node: "de"))
        #expect(try await catalog.authenticate(credential: again.credential) != nil)

        // Only tokens: revoke deletes them; nothing at all is an error, as is the root.
        _ = try catalog.issueEnrollmentToken(tenant: "acme", node: "d9", parent: "de")
        #expect(try catalog.revoke(node: "d9", of: "acme").tokens == 1)
        #expect(throws: StoreError.self) { try catalog.revoke(node: "d9", of: "acme") }
        #expect(throws: StoreError.self) { try catalog.revoke(node: "hq", of: "acme") }

        // Decommission.
        let leftover = "tse_leftover"
        try await catalog.writer.write { db in
            try db.execute(sql: "INSERT INTO enrollment_tokens (hash, tenant, node, parent, role, expires_at) VALUES (?, 'acme', 'd1', 'de', 'dealer', ?)",
                           arguments: [Secrets.digest(leftover), Int64(WallClock.nowMillis() + 60_000)])
        }
        let version = try await catalog.snapshot(of: "acme").version
        let retired = try catalog.decommission(node: "d1", of: "acme", nowMillis: 42_000)
        #expect(retired.credentials == 1 && retired.tokens == 1 && retired.decommissionedAtMillis == 42_000)
        #expect(try await catalog.snapshot(of: "acme").version > version, "listings and caches see it")
        let record = try #require(try await catalog.node("d1", of: "acme"))
        #expect(record.role == "dealer (decommissioned)" && record.decommissionedAtMillis == 42_000)
        #expect(throws: StoreError.self) { try catalog.issueEnrollmentToken(tenant: "acme", node: "d1", parent: "de") }
        // A token that escaped deletion (written directly here) is refused too.
        try await catalog.writer.write { db in
            try db.execute(sql: "INSERT INTO enrollment_tokens (hash, tenant, node, parent, role, expires_at) VALUES (?, 'acme', 'd1', 'de', 'dealer', ?)",
                           arguments: [Secrets.digest(leftover), Int64(WallClock.nowMillis() + 60_000)])
        }
        await #expect(throws: NodeDecommissioned.self) { try await catalog.redeem(token: leftover, via: Principal(tenant: "acme", node: "de")) }
        // Its parent cannot be decommissioned while another node is enrolled below it…
        _ = try await catalog.redeem(token: try catalog.issueEnrollmentToken(tenant: "acme", node: "d2", parent: "de"), via: Principal(tenant: "acme", node: "de"))
        let busy = #expect(throws: StoreError.self) { try catalog.decommission(node: "de", of: "acme") }
        #expect("\(busy.map { "\($0)" } ?? "")".contains("still has 1 node(s) below it (d2)"))
        // …but once they are retired too it can, and nothing enrolls under it any more.
        _ = try catalog.decommission(node: "d2", of: "acme")
        _ = try catalog.decommission(node: "de", of: "acme")
        #expect(throws: StoreError.self) { try catalog.issueEnrollmentToken(tenant: "acme", node: "d3", parent: "de") }
        #expect(try await catalog.tree(of: "acme").path(of: "d1") == "hq/de/d1", "the tree keeps decommissioned nodes")
    }

    @Test("HQ serves the root's children; deeper nodes only when the tenant allows direct sync (re-read after a change)")
    func requiredParent() async throws {
        let dir = try TempDir()
        let catalog = try HubCatalog(directory: dir.path)
        try catalog.createTenant("acme", levels: 3)
        try catalog.createTenant("insura", levels: 2)
        _ = try await catalog.redeem(token: try catalog.issueEnrollmentToken(tenant: "acme", node: "de"))
        _ = try await catalog.redeem(token: try catalog.issueEnrollmentToken(tenant: "acme", node: "d1", parent: "de"), via: Principal(tenant: "acme", node: "de"))
        _ = try await catalog.redeem(token: try catalog.issueEnrollmentToken(tenant: "insura", node: "a1"))
        #expect(try await catalog.requiredParent(of: Principal(tenant: "acme", node: "de")) == nil)
        #expect(try await catalog.requiredParent(of: Principal(tenant: "acme", node: "d1")) == "de")
        #expect(try await catalog.requiredParent(of: Principal(tenant: "insura", node: "a1")) == nil)
        #expect(try catalog.settings(of: "acme")?.allowDirectSync == false)
        // Changed by another process (another catalog on the same file): seen at once.
        try HubCatalog(directory: dir.path).setAllowDirectSync(true, for: "acme")
        #expect(try await catalog.requiredParent(of: Principal(tenant: "acme", node: "d1")) == nil)
        try HubCatalog(directory: dir.path).setAllowDirectSync(false, for: "acme")
        #expect(try await catalog.requiredParent(of: Principal(tenant: "acme", node: "d1")) == "de")
        #expect(throws: StoreError.self) { try catalog.setAllowDirectSync(true, for: "nobody") }
    }
}

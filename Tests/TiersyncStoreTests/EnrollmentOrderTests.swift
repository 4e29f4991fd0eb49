import Foundation
import Testing
import TiersyncCore
import GRDB
@testable import TiersyncStore
import TiersyncTestSupport

/// The README issues a country's token and its dealers' tokens in one go, before the
/// country has enrolled (issue 12, item 7).
@Suite("Enrollment tokens under a parent that has not enrolled yet")
struct EnrollmentOrderTests {
    @Test("a dealer's token can be issued while its country holds only a token; the dealer enrolls only once the country has")
    func dealerTokenBeforeCountryEnrolls() async throws {
        let dir = try TempDir()
        let catalog = try HubCatalog(directory: dir.path)
        try catalog.createTenant("acme", levels: 3)
        let deToken = try catalog.issueEnrollmentToken(tenant: "acme", node: "de", nowMillis: 1_000)
        let dealerToken = try catalog.issueEnrollmentToken(tenant: "acme", node: "dealer-042", parent: "de", role: "dealer", nowMillis: 2_000)

        // Redeemed before its country enrolled (there is nothing to enroll through yet):
        // refused, and the token is not used up.
        let early = await #expect(throws: EnrollmentError.self) { try await catalog.redeem(token: dealerToken, nowMillis: 3_000) }
        #expect(early == .wrongParent(node: "dealer-042", parent: "de", via: "hq"))
        #expect(early.map { "\($0)" } == "this token enrolls 'dealer-042' under 'de', not under 'hq': enroll through that node's URL")
        #expect(try await catalog.node("dealer-042", of: "acme") == nil, "no node with a dangling parent")
        #expect(try await catalog.tree(of: "acme").parents.keys.sorted() == ["hq"])

        // The country enrolls; then the dealer, through it, with the same token.
        _ = try await catalog.redeem(token: deToken, nowMillis: 4_000)
        let dealer = try await catalog.redeem(token: dealerToken, via: Principal(tenant: "acme", node: "de"), nowMillis: 5_000)
        #expect(dealer.node == "dealer-042" && dealer.parent == "de")
        #expect(try await catalog.node("dealer-042", of: "acme")?.role == "dealer")
        #expect(try await catalog.tree(of: "acme").path(of: "dealer-042") == "hq/de/dealer-042")
    }

    @Test("a pending parent counts at its token's level; without a usable token it is unknown, as before")
    func pendingParentLevels() async throws {
        let dir = try TempDir()
        let catalog = try HubCatalog(directory: dir.path)
        try catalog.createTenant("acme", levels: 3)
        try catalog.createTenant("insura", levels: 2)

        // A pending dealer cannot have nodes below it (the level check, as for an enrolled one).
        _ = try catalog.issueEnrollmentToken(tenant: "acme", node: "de", nowMillis: 1_000)
        _ = try catalog.issueEnrollmentToken(tenant: "acme", node: "d1", parent: "de", nowMillis: 1_000)
        let deep = #expect(throws: StoreError.self) { try catalog.issueEnrollmentToken(tenant: "acme", node: "d9", parent: "d1", nowMillis: 1_000) }
        #expect(deep.map { "\($0)" } == "tenant 'acme' has 3 levels; 'd9' under 'd1' would be level 4")
        _ = try catalog.issueEnrollmentToken(tenant: "insura", node: "agent-1", nowMillis: 1_000)
        let flat = #expect(throws: StoreError.self) { try catalog.issueEnrollmentToken(tenant: "insura", node: "x", parent: "agent-1", nowMillis: 1_000) }
        #expect(flat.map { "\($0)" } == "tenant 'insura' has 2 levels; 'x' under 'agent-1' would be level 3")
        // The role follows from the pending parent's level.
        #expect(throws: StoreError.self) { try catalog.issueEnrollmentToken(tenant: "acme", node: "d2", parent: "de", role: "country", nowMillis: 1_000) }

        // A country with dealers' tokens under it cannot be re-issued as a dealer.
        _ = try catalog.issueEnrollmentToken(tenant: "acme", node: "fr", nowMillis: 1_000)
        // (de's own pending token under the root is found first: the name is promised there.)
        let promised = #expect(throws: EnrollmentClaimConflict.self) { try catalog.issueEnrollmentToken(tenant: "acme", node: "de", parent: "fr", nowMillis: 1_000) }
        #expect(promised.map { "\($0)" } == "node 'de' has a pending enrollment token under 'hq'; revoke it or let it expire first")
        _ = try catalog.issueEnrollmentToken(tenant: "acme", node: "es", ttlSeconds: 5, nowMillis: 1_000)
        _ = try catalog.issueEnrollmentToken(tenant: "acme", node: "es-1", parent: "es", nowMillis: 1_000)
        let demoted = #expect(throws: EnrollmentClaimConflict.self) { try catalog.issueEnrollmentToken(tenant: "acme", node: "es", parent: "fr", nowMillis: 10_000) }
        #expect(demoted.map { "\($0)" } == "'es' under 'fr' would be a dealer, but 'es-1' has a pending enrollment token under it")

        // An expired or used token does not make a parent: the message is the one for an unknown parent.
        _ = try catalog.issueEnrollmentToken(tenant: "acme", node: "it", ttlSeconds: 1, nowMillis: 1_000)
        let expired = #expect(throws: StoreError.self) { try catalog.issueEnrollmentToken(tenant: "acme", node: "it-1", parent: "it", nowMillis: 10_000) }
        #expect(expired.map { "\($0)" } == "parent node 'it' in tenant 'acme' not found")
        let unknown = #expect(throws: StoreError.self) { try catalog.issueEnrollmentToken(tenant: "acme", node: "d9", parent: "nowhere") }
        #expect(unknown.map { "\($0)" } == "parent node 'nowhere' in tenant 'acme' not found")

        // Issuing a dealer's token looks up pending tokens by index, not by scanning every token.
        let plans = try await catalog.writer.read { db in
            try ["node = ?", "parent = ?"].map { column in
                try Row.fetchAll(db, sql: """
                    EXPLAIN QUERY PLAN SELECT node FROM enrollment_tokens WHERE tenant = ? AND \(column) AND used_at IS NULL AND expires_at >= ?
                    """, arguments: ["acme", "de", 0]).map { $0["detail"] as String }.joined(separator: "; ")
            }
        }
        #expect(plans[0].contains("USING INDEX enrollment_tokens_node"), "\(plans[0])")
        #expect(plans[1].contains("USING INDEX enrollment_tokens_parent"), "\(plans[1])")
    }
}

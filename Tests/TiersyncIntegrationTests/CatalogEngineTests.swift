import Foundation
import PostgresNIO
import Testing
import TiersyncCore
import TiersyncPostgres
import TiersyncStore
import TiersyncTestSupport

/// The hub catalog's behaviour, written once and run on both engines (issue 14): the SQLite
/// catalog behind the seam (`SQLiteCatalog`) and `PostgresCatalog`. Without
/// `TIERSYNC_TEST_POSTGRES_URL` the tests run on SQLite only, and the test "PostgreSQL
/// variants" (with the PostgreSQL-only tests) is reported skipped with the reason; a cluster
/// for them: ops/postgres/test-cluster.sh (README, "Tests against PostgreSQL").
///
/// "Two processes" are two catalogs on one store: two `HubCatalog`s on one `hub.sqlite`, or
/// two `PostgresCatalog`s with a client each on one database — what a hub and an admin's
/// CLI, or two hub processes, are to each other.
@Suite("Hub catalog on both engines")
struct CatalogEngineTests {
    enum Engine: String, CaseIterable, CustomTestStringConvertible {
        case sqlite, postgres
        var testDescription: String { rawValue }

        /// The engines the parameterised tests run on: PostgreSQL only when a cluster is named.
        /// (Not `allCases` with the PostgreSQL case cancelled inside: swift-testing 6.3 reports a
        /// cancelled case as passed, so the skip would not show.)
        static var available: [Engine] { TestPostgres.isAvailable ? [.sqlite, .postgres] : [.sqlite] }
    }

    static let postgresSkipReason = "PostgreSQL variant skipped: \(TestPostgres.environmentVariable) is not set (ops/postgres/test-cluster.sh; README)"

    /// Runs `body` with two catalogs over one fresh store of `engine`.
    func withCatalogs<T: Sendable>(_ engine: Engine,
                                   _ body: (any HubCatalogStore, any HubCatalogStore) async throws -> T) async throws -> T {
        switch engine {
        case .sqlite:
            let directory = try TempDir()
            return try await body(SQLiteCatalog(try HubCatalog(directory: directory.path)),
                                  SQLiteCatalog(try HubCatalog(directory: directory.path)))
        case .postgres:
            guard TestPostgres.isAvailable else { throw TestFailure(Self.postgresSkipReason) }
            return try await TestPostgres.withFreshDatabase { endpoint in
                try await withPostgresClient(endpoint) { first in
                    try await withPostgresClient(endpoint) { second in
                        try await body(try await PostgresCatalog(client: first), try await PostgresCatalog(client: second))
                    }
                }
            }
        }
    }

    func withCatalog<T: Sendable>(_ engine: Engine, _ body: (any HubCatalogStore) async throws -> T) async throws -> T {
        try await withCatalogs(engine) { catalog, _ in try await body(catalog) }
    }

    /// A three-level tenant `acme` (created unless `creatingTenant` is false): hq → de, fr →
    /// dealer-1 (under de), each enrolled.
    /// Returns the credentials by node.
    func enrollAcme(_ catalog: any HubCatalogStore, creatingTenant: Bool = true) async throws -> [NodeID: String] {
        if creatingTenant { #expect(try await catalog.createTenant("acme", root: "hq", levels: 3, allowDirectSync: false)) }
        var credentials: [NodeID: String] = [:]
        for (node, parent) in [("de", nil), ("fr", nil), ("dealer-1", "de")] as [(NodeID, NodeID?)] {
            let token = try await catalog.issueEnrollmentToken(tenant: "acme", node: node, parent: parent)
            credentials[node] = try await catalog.redeem(token: token, via: parent.map { Principal(tenant: "acme", node: $0) }).credential
        }
        return credentials
    }

    /// Says, in every run, whether the tests above ran on PostgreSQL too.
    @Test("PostgreSQL variants of the catalog tests run", .enabled(if: TestPostgres.isAvailable, Comment(rawValue: postgresSkipReason)))
    func postgresVariantsRun() {
        #expect(Engine.available == Engine.allCases)
    }

    // MARK: Tenants and trees

    @Test("tenants are created once, with their levels and root; trees hold the enrolled nodes", arguments: Engine.available)
    func tenantsAndTrees(engine: Engine) async throws {
        try await withCatalogs(engine) { catalog, other in
            #expect(try await catalog.tree(of: "acme").parents.isEmpty)
            #expect(try await catalog.settings(of: "acme") == nil)
            #expect(try await catalog.root(of: "acme") == nil)
            #expect(try await catalog.createTenant("acme", root: "hq", levels: 3, allowDirectSync: false))
            #expect(try await !other.createTenant("acme", root: "hq", levels: 2, allowDirectSync: true), "a tenant is created once")
            #expect(try await catalog.createTenant("beta", root: "central", levels: 2, allowDirectSync: true))
            await #expect(throws: StoreError.invalidArgument("a tenant has 2 or 3 levels, not 4")) {
                try await catalog.createTenant("gamma", root: "hq", levels: 4, allowDirectSync: false)
            }
            #expect(try await catalog.tenants().map(\.tenant) == ["acme", "beta"])
            #expect(try await catalog.tenants().map(\.root) == ["hq", "central"])
            #expect(try await other.settings(of: "acme") == TenantSettings(tenant: "acme", root: "hq", levels: 3, allowDirectSync: false, releaseKey: nil))
            #expect(try await other.settings(of: "beta")?.allowDirectSync == true)
            #expect(try await catalog.root(of: "beta") == "central")

            let fresh = try await catalog.tree(of: "acme")
            #expect(fresh == NodeTree(parents: ["hq": nil]), "\(fresh.parents)")
            _ = try await enrollAcme(catalog, creatingTenant: false)
            // The other process sees the enrollments (its cached tree is re-validated per call).
            #expect(try await other.tree(of: "acme") == NodeTree(parents: ["hq": nil, "de": "hq", "fr": "hq", "dealer-1": "de"]))
            let nodes = try await other.nodes(of: "acme")
            #expect(nodes.map(\.node) == ["de", "dealer-1", "fr", "hq"])
            #expect(nodes.map(\.role) == ["country", "dealer", "country", "hq"])
            let dealer = try #require(try await catalog.node("dealer-1", of: "acme"))
            #expect(dealer.parent == "de" && dealer.tenant == "acme" && dealer.lastSeenMillis == nil && dealer.decommissionedAtMillis == nil)
            #expect(try await catalog.node("nobody", of: "acme") == nil)

            // Levels are checked when a token is issued.
            await #expect(throws: StoreError.invalidArgument("tenant 'acme' has 3 levels; 'sub' under 'dealer-1' would be level 4")) {
                try await catalog.issueEnrollmentToken(tenant: "acme", node: "sub", parent: "dealer-1")
            }
            await #expect(throws: StoreError.invalidArgument("'x' at level 2 of a 3-level tenant is a country, not a dealer")) {
                try await catalog.issueEnrollmentToken(tenant: "acme", node: "x", role: "dealer")
            }
            await #expect(throws: StoreError.notFound("parent node 'nowhere' in tenant 'acme'")) {
                try await catalog.issueEnrollmentToken(tenant: "acme", node: "x", parent: "nowhere")
            }
            await #expect(throws: StoreError.notFound("tenant 'nope'")) {
                try await catalog.issueEnrollmentToken(tenant: "nope", node: "x")
            }
            await #expect(throws: StoreError.invalidArgument("node 'dealer-1' already exists under 'de'; move it with `tiersync admin move-node`")) {
                try await catalog.issueEnrollmentToken(tenant: "acme", node: "dealer-1", parent: "fr")
            }
        }
    }

    // MARK: Enrollment

    @Test("an enrollment token is redeemed once; a second redeem is refused; an unknown one too", arguments: Engine.available)
    func tokenRedeemedOnce(engine: Engine) async throws {
        try await withCatalogs(engine) { catalog, other in
            #expect(try await catalog.createTenant("acme", root: "hq", levels: 2, allowDirectSync: false))
            let token = try await catalog.issueEnrollmentToken(tenant: "acme", node: "agent-1")
            #expect(token.hasPrefix(Secrets.Kind.enrollmentToken.rawValue))
            let enrolled = try await catalog.redeem(token: token, via: nil)
            #expect(enrolled.tenant == "acme" && enrolled.node == "agent-1" && enrolled.parent == "hq")
            #expect(enrolled.credential.hasPrefix(Secrets.Kind.credential.rawValue))
            await #expect(throws: EnrollmentError.alreadyUsed) { try await catalog.redeem(token: token, via: nil) }
            await #expect(throws: EnrollmentError.alreadyUsed) { try await other.redeem(token: token, via: nil) }
            await #expect(throws: EnrollmentError.unknownToken) { try await other.redeem(token: "tse_nothing", via: nil) }
            #expect(try await other.node("agent-1", of: "acme")?.role == NodeRole.dealer.rawValue)

            // Re-enrolling with a new token replaces the credential.
            let again = try await other.redeem(token: try await other.issueEnrollmentToken(tenant: "acme", node: "agent-1"), via: nil)
            #expect(try await catalog.authenticate(credential: enrolled.credential) == nil)
            #expect(try await catalog.authenticate(credential: again.credential) == Principal(tenant: "acme", node: "agent-1"))
        }
    }

    @Test("an expired token is refused with its expiry, and stays unused", arguments: Engine.available)
    func expiredToken(engine: Engine) async throws {
        try await withCatalog(engine) { catalog in
            let issued: UInt64 = 1_800_000_000_000
            #expect(try await catalog.createTenant("acme", root: "hq", levels: 2, allowDirectSync: false, nowMillis: issued))
            let token = try await catalog.issueEnrollmentToken(tenant: "acme", node: "agent-1", parent: nil, role: nil,
                                                               ttlSeconds: 60, nowMillis: issued)
            await #expect(throws: EnrollmentError.expired(atMillis: issued + 60_000)) {
                try await catalog.redeem(token: token, via: nil, nowMillis: issued + 60_001)
            }
            // Still valid at its last millisecond: the refusal above did not use it.
            let enrolled = try await catalog.redeem(token: token, via: nil, nowMillis: issued + 60_000)
            #expect(enrolled.node == "agent-1")
            #expect(try await catalog.node("agent-1", of: "acme")?.createdAtMillis == issued + 60_000)
        }
    }

    @Test("a token redeemed through the wrong parent, or through another tenant's country of its parent's name, is refused and kept; through its parent it enrolls", arguments: Engine.available)
    func wrongParent(engine: Engine) async throws {
        try await withCatalog(engine) { catalog in
            _ = try await enrollAcme(catalog)
            let token = try await catalog.issueEnrollmentToken(tenant: "acme", node: "dealer-2", parent: "de")
            await #expect(throws: EnrollmentError.wrongParent(node: "dealer-2", parent: "de", via: "fr")) {
                try await catalog.redeem(token: token, via: Principal(tenant: "acme", node: "fr"))
            }
            // A token whose parent has not enrolled yet is refused until it has.
            let pendingCountry = try await catalog.issueEnrollmentToken(tenant: "acme", node: "it")
            let underPending = try await catalog.issueEnrollmentToken(tenant: "acme", node: "dealer-it", parent: "it")
            await #expect(throws: EnrollmentError.wrongParent(node: "dealer-it", parent: "it", via: "hq")) {
                try await catalog.redeem(token: underPending, via: nil)
            }
            // A country of another tenant with the same name: the token is unknown to it, and kept
            // (it was redeemed, and its credential passed through the other tenant's country).
            #expect(try await catalog.createTenant("beta", root: "beta-hq", levels: 3, allowDirectSync: false))
            await #expect(throws: EnrollmentError.unknownToken) {
                try await catalog.redeem(token: token, via: Principal(tenant: "beta", node: "de"))
            }
            #expect(try await catalog.redeem(token: token, via: Principal(tenant: "acme", node: "de")).parent == "de")
            _ = try await catalog.redeem(token: pendingCountry, via: nil)
            #expect(try await catalog.redeem(token: underPending, via: Principal(tenant: "acme", node: "it")).parent == "it")
            #expect(try await catalog.tree(of: "acme").depth(of: "dealer-it") == 3)
        }
    }

    // MARK: Credentials

    @Test("a credential authenticates its node; revoked, it is refused at once by every process", arguments: Engine.available)
    func authenticateAndRevoke(engine: Engine) async throws {
        try await withCatalogs(engine) { catalog, other in
            let credentials = try await enrollAcme(catalog)
            let dealer = try #require(credentials["dealer-1"])
            #expect(try await other.authenticate(credential: dealer) == Principal(tenant: "acme", node: "dealer-1"))
            #expect(try await other.authenticate(credential: dealer + "x") == nil)
            #expect(try await other.authenticate(credential: "") == nil)

            // A pending token of the node goes too.
            _ = try await catalog.issueEnrollmentToken(tenant: "acme", node: "dealer-1", parent: "de")
            let revocation = try await catalog.revoke(node: "dealer-1", of: "acme", nowMillis: 5)
            #expect(revocation == Revocation(node: "dealer-1", credentials: 1, tokens: 1, decommissionedAtMillis: nil))
            #expect(try await other.authenticate(credential: dealer) == nil)
            #expect(try await catalog.authenticate(credential: dealer) == nil)
            // It keeps its place in the tree, and may enroll again with a new token.
            #expect(try await other.tree(of: "acme").parents["dealer-1"] == .some("de"))
            let again = try await other.redeem(token: try await other.issueEnrollmentToken(tenant: "acme", node: "dealer-1", parent: "de"), via: Principal(tenant: "acme", node: "de"))
            #expect(try await catalog.authenticate(credential: again.credential) == Principal(tenant: "acme", node: "dealer-1"))
            #expect(try await catalog.authenticate(credential: dealer) == nil)

            await #expect(throws: StoreError.notFound("node 'ghost' in tenant 'acme'")) { try await catalog.revoke(node: "ghost", of: "acme") }
            await #expect(throws: StoreError.notFound("tenant 'nope'")) { try await catalog.revoke(node: "de", of: "nope") }
            await #expect(throws: StoreError.invalidArgument("'hq' is the root of tenant 'acme'; it has no credentials to revoke")) {
                try await catalog.revoke(node: "hq", of: "acme")
            }
            // A node that only has a token: revoking deletes the token.
            let pending = try await catalog.issueEnrollmentToken(tenant: "acme", node: "pl")
            #expect(try await catalog.revoke(node: "pl", of: "acme") == Revocation(node: "pl", credentials: 0, tokens: 1, decommissionedAtMillis: nil))
            await #expect(throws: EnrollmentError.unknownToken) { try await catalog.redeem(token: pending, via: nil) }
        }
    }

    @Test("decommission: refused while nodes are below; then no credential, no token, never enrolls again", arguments: Engine.available)
    func decommission(engine: Engine) async throws {
        try await withCatalogs(engine) { catalog, other in
            let credentials = try await enrollAcme(catalog)
            await #expect(throws: StoreError.invalidArgument("'de' still has 1 node(s) below it (dealer-1): move them with `tiersync admin move-node` or decommission them first")) {
                try await catalog.decommission(node: "de", of: "acme")
            }
            await #expect(throws: StoreError.notFound("node 'ghost' in tenant 'acme' (a node that never enrolled has nothing to decommission; `admin revoke` deletes its tokens)")) {
                try await catalog.decommission(node: "ghost", of: "acme")
            }
            let revocation = try await catalog.decommission(node: "dealer-1", of: "acme", nowMillis: 1_234)
            #expect(revocation == Revocation(node: "dealer-1", credentials: 1, tokens: 0, decommissionedAtMillis: 1_234))
            #expect(try await other.authenticate(credential: try #require(credentials["dealer-1"])) == nil)
            let record = try #require(try await other.node("dealer-1", of: "acme"))
            #expect(record.role == "dealer (decommissioned)" && record.decommissionedAtMillis == 1_234 && record.parent == "de")
            await #expect(throws: StoreError.invalidArgument("node 'dealer-1' was decommissioned and cannot enroll again; give a new node a new identifier")) {
                try await other.issueEnrollmentToken(tenant: "acme", node: "dealer-1", parent: "de")
            }
            // Decommissioning again keeps the first time.
            #expect(try await catalog.decommission(node: "dealer-1", of: "acme", nowMillis: 9_999).decommissionedAtMillis == 1_234)
            // Nor does it move (helper 83: accepted without a word).
            await #expect(throws: StoreError.invalidArgument("'dealer-1' was decommissioned; it does not move")) {
                try await catalog.moveNode("dealer-1", of: "acme", to: "de")
            }

            // Now de has no live node below it; tokens of nodes waiting under it go with it.
            let waiting = try await catalog.issueEnrollmentToken(tenant: "acme", node: "dealer-2", parent: "de")
            let country = try await catalog.decommission(node: "de", of: "acme", nowMillis: 2_000)
            #expect(country == Revocation(node: "de", credentials: 1, tokens: 1, decommissionedAtMillis: 2_000))
            await #expect(throws: EnrollmentError.unknownToken) { try await catalog.redeem(token: waiting, via: Principal(tenant: "acme", node: "de")) }
            await #expect(throws: StoreError.invalidArgument("parent node 'de' was decommissioned")) {
                try await catalog.issueEnrollmentToken(tenant: "acme", node: "dealer-3", parent: "de")
            }
        }
    }

    // MARK: Who syncs where

    @Test("requiredParent: a dealer syncs through its country unless the tenant allows direct sync", arguments: Engine.available)
    func requiredParent(engine: Engine) async throws {
        try await withCatalogs(engine) { catalog, other in
            _ = try await enrollAcme(catalog)
            let dealer = Principal(tenant: "acme", node: "dealer-1")
            #expect(try await other.requiredParent(of: dealer) == "de")
            #expect(try await other.requiredParent(of: Principal(tenant: "acme", node: "de")) == nil)
            #expect(try await other.requiredParent(of: Principal(tenant: "acme", node: "hq")) == nil)
            #expect(try await other.requiredParent(of: Principal(tenant: "acme", node: "ghost")) == nil)

            try await catalog.setAllowDirectSync(true, for: "acme")
            #expect(try await other.requiredParent(of: dealer) == nil, "the other process sees the setting at its next call")
            #expect(try await other.settings(of: "acme")?.allowDirectSync == true)
            try await other.setAllowDirectSync(false, for: "acme")
            #expect(try await catalog.requiredParent(of: dealer) == "de")
            await #expect(throws: StoreError.notFound("tenant 'nope'")) { try await catalog.setAllowDirectSync(true, for: "nope") }
        }
    }

    @Test("moveNode: a dealer moves between countries, seen by every process; levels and cycles are refused", arguments: Engine.available)
    func moveNode(engine: Engine) async throws {
        try await withCatalogs(engine) { catalog, other in
            _ = try await enrollAcme(catalog)
            #expect(try await other.tree(of: "acme").parents["dealer-1"] == .some("de")) // cached in `other` now
            let stale = try await catalog.issueEnrollmentToken(tenant: "acme", node: "dealer-1", parent: "de")
            try await catalog.moveNode("dealer-1", of: "acme", to: "fr")
            #expect(try await other.tree(of: "acme").parents["dealer-1"] == .some("fr"))
            #expect(try await other.requiredParent(of: Principal(tenant: "acme", node: "dealer-1")) == "fr")
            #expect(try await other.node("dealer-1", of: "acme")?.parent == "fr")
            await #expect(throws: EnrollmentError.unknownToken, "a token issued before the move is gone") {
                try await catalog.redeem(token: stale, via: Principal(tenant: "acme", node: "de"))
            }

            await #expect(throws: StoreError.invalidArgument("moving 'dealer-1' under 'hq' would change its level from 3 to 2; a node moves only to a parent on the level above it")) {
                try await catalog.moveNode("dealer-1", of: "acme", to: "hq")
            }
            await #expect(throws: StoreError.invalidArgument("cannot move 'fr' under 'dealer-1', which is inside its own subtree")) {
                try await catalog.moveNode("fr", of: "acme", to: "dealer-1")
            }
            await #expect(throws: StoreError.invalidArgument("'hq' is the root of tenant 'acme' and cannot move")) {
                try await catalog.moveNode("hq", of: "acme", to: "de")
            }
            await #expect(throws: StoreError.notFound("node 'ghost' in tenant 'acme'")) { try await catalog.moveNode("ghost", of: "acme", to: "de") }
            await #expect(throws: StoreError.notFound("node 'ghost' in tenant 'acme'")) { try await catalog.moveNode("dealer-1", of: "acme", to: "ghost") }
        }
    }

    @Test("directory(for:): the caller's subtree with the credential digests of the nodes below it", arguments: Engine.available)
    func directory(engine: Engine) async throws {
        try await withCatalog(engine) { catalog in
            _ = try await enrollAcme(catalog)
            _ = try await catalog.redeem(token: try await catalog.issueEnrollmentToken(tenant: "acme", node: "dealer-2", parent: "de"), via: Principal(tenant: "acme", node: "de"))
            _ = try await catalog.redeem(token: try await catalog.issueEnrollmentToken(tenant: "acme", node: "dealer-fr", parent: "fr"), via: Principal(tenant: "acme", node: "fr"))
            let directory = try await catalog.directory(for: Principal(tenant: "acme", node: "de"))
            #expect(directory.tenant == "acme" && directory.root == "de")
            #expect(directory.nodes == [.init(id: "de", parent: "hq", role: "country"), .init(id: "dealer-1", parent: "de", role: "dealer"),
                                        .init(id: "dealer-2", parent: "de", role: "dealer")])
            #expect(directory.credentials.map(\.node) == ["dealer-1", "dealer-2"], "the dealers' digests, not de's own, not fr's dealer's")
            #expect(directory.credentials.allSatisfy { $0.sha256.count == 64 && $0.sha256.allSatisfy { "0123456789abcdef".contains($0) } })

            _ = try await catalog.revoke(node: "dealer-2", of: "acme")
            #expect(try await catalog.directory(for: Principal(tenant: "acme", node: "de")).credentials.map(\.node) == ["dealer-1"])
            #expect(try await catalog.directory(for: Principal(tenant: "acme", node: "hq")).nodes.count == 6)
        }
    }

    // MARK: Release key, sightings

    @Test("the release key is registered, read back and handed out at enrollment", arguments: Engine.available)
    func releaseKey(engine: Engine) async throws {
        try await withCatalogs(engine) { catalog, other in
            #expect(try await catalog.createTenant("acme", root: "hq", levels: 2, allowDirectSync: false))
            #expect(try await catalog.releaseKey(of: "acme") == nil)
            #expect(try await catalog.releaseKey(of: "nope") == nil)
            try await catalog.setReleaseKey("a2V5LTE=", for: "acme")
            #expect(try await other.releaseKey(of: "acme") == "a2V5LTE=")
            #expect(try await other.settings(of: "acme")?.releaseKey == "a2V5LTE=")
            let enrolled = try await other.redeem(token: try await catalog.issueEnrollmentToken(tenant: "acme", node: "agent-1"), via: nil)
            #expect(enrolled.releaseKey == "a2V5LTE=")
            await #expect(throws: StoreError.notFound("tenant 'nope'")) { try await catalog.setReleaseKey("x", for: "nope") }
        }
    }

    @Test("touch records when nodes were last seen; an older sighting changes nothing", arguments: Engine.available)
    func touch(engine: Engine) async throws {
        try await withCatalogs(engine) { catalog, other in
            _ = try await enrollAcme(catalog)
            let de = Principal(tenant: "acme", node: "de"), dealer = Principal(tenant: "acme", node: "dealer-1")
            try await catalog.touch([])
            try await catalog.touch([(de, 1_000), (dealer, 2_000), (dealer, 3_000), (Principal(tenant: "acme", node: "ghost"), 5)])
            #expect(try await other.node("de", of: "acme")?.lastSeenMillis == 1_000)
            #expect(try await other.node("dealer-1", of: "acme")?.lastSeenMillis == 3_000)
            #expect(try await other.node("fr", of: "acme")?.lastSeenMillis == nil)
            try await other.touch([(de, 500), (dealer, 4_000)])
            #expect(try await catalog.node("de", of: "acme")?.lastSeenMillis == 1_000)
            #expect(try await catalog.node("dealer-1", of: "acme")?.lastSeenMillis == 4_000)
        }
    }

    // MARK: PostgreSQL only: several processes

    @Test("two processes redeeming the same tokens at once: exactly one success per token",
          .enabled(if: TestPostgres.isAvailable, Comment(rawValue: postgresSkipReason)))
    func concurrentRedeem() async throws {
        try await withCatalogs(.postgres) { first, second in
            #expect(try await first.createTenant("acme", root: "hq", levels: 2, allowDirectSync: false))
            var tokens: [String] = []
            for n in 0..<20 { tokens.append(try await first.issueEnrollmentToken(tenant: "acme", node: NodeID(unchecked: "agent-\(n)"))) }
            let outcomes = try await withThrowingTaskGroup(of: (String, Bool).self) { group in
                for token in tokens {
                    for catalog in [first, second] {
                        group.addTask {
                            do {
                                _ = try await catalog.redeem(token: token, via: nil)
                                return (token, true)
                            } catch EnrollmentError.alreadyUsed {
                                return (token, false)
                            }
                        }
                    }
                }
                return try await group.reduce(into: [String: [Bool]]()) { $0[$1.0, default: []].append($1.1) }
            }
            #expect(outcomes.count == tokens.count)
            for (token, results) in outcomes {
                #expect(results.count == 2 && results.filter { $0 }.count == 1, "token \(token.prefix(10))…: one success, one refusal")
            }
            // Each node holds exactly one live credential.
            let directory = try await second.directory(for: Principal(tenant: "acme", node: "hq"))
            #expect(directory.credentials.count == tokens.count)
            #expect(Set(directory.credentials.map(\.node)).count == tokens.count)
        }
    }

    @Test("several processes opening an empty database at once all succeed, and find one schema",
          .enabled(if: TestPostgres.isAvailable, Comment(rawValue: postgresSkipReason)))
    func concurrentFirstStart() async throws {
        try await TestPostgres.withFreshDatabase { endpoint in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<4 {
                    group.addTask {
                        try await withPostgresClient(endpoint) { client in
                            let catalog = try await PostgresCatalog(client: client)
                            _ = try await catalog.tenants()
                        }
                    }
                }
                try await group.waitForAll()
            }
            try await withPostgresClient(endpoint) { client in
                var version = 0
                for try await v in try await client.query("SELECT version FROM tiersync_catalog.schema_version").decode(Int.self) { version = v }
                #expect(version == PostgresCatalogSchema.currentVersion)
            }
        }
    }

    @Test("a country's SQLite mirror of a PostgreSQL hub's directory authenticates the same credentials (one digest)",
          .enabled(if: TestPostgres.isAvailable, Comment(rawValue: postgresSkipReason)))
    func digestsAgreeAcrossEngines() async throws {
        try await withCatalog(.postgres) { hub in
            let credentials = try await enrollAcme(hub)
            let directory = try await hub.directory(for: Principal(tenant: "acme", node: "de"))
            let countryDirectory = try TempDir()
            let mirror = try HubCatalog(directory: countryDirectory.path)
            try mirror.replaceDirectory(directory)
            #expect(try await mirror.authenticate(credential: try #require(credentials["dealer-1"])) == Principal(tenant: "acme", node: "dealer-1"))
        }
    }
}

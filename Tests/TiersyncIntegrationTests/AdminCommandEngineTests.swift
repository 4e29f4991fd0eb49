import Foundation
import Testing
import TiersyncCore
import TiersyncGovernance
import TiersyncPostgres
import TiersyncServer
import TiersyncStore
import TiersyncTestSupport

// The admin commands as real `tiersync` processes (as in CLICommandTests), once per storage
// engine: `--data DIR` for a hub on SQLite, `--postgres URL` for a hub on PostgreSQL (issue
// 14: "the admin commands take the same option"). One sequence, run on each, so the two
// cannot drift apart.

@Suite("Admin commands on either engine (--data, --postgres)")
struct AdminCommandEngineTests {
    /// The hub an admin command is pointed at: the arguments naming it, and an in-process view
    /// of the same storage to check what the commands wrote.
    struct Hub {
        let arguments: [String]
        let catalog: any HubCatalogStore
        let store: (TenantID) throws -> any HubTenantStore
    }

    /// Runs `body` with a fresh, empty hub of `engine` under `dir`.
    static func withHub<T: Sendable>(_ engine: StorageEngine, in dir: TempDir, _ body: (Hub) async throws -> T) async throws -> T {
        switch engine {
        case .sqlite:
            let data = dir.path + "/hub"
            // The test's own view of the directory; the commands open it as their own processes.
            let catalog = try HubCatalog(directory: data)
            let stores = TenantStores(catalog: catalog)
            return try await body(Hub(arguments: ["--data", data], catalog: SQLiteCatalog(catalog), store: { try stores.store(for: $0) }))
        case .postgres:
            return try await TestPostgres.withFreshDatabase { endpoint in
                try await withPostgresClient(endpoint) { client in
                    let catalog = try await PostgresCatalog(client: client)
                    let stores = PostgresTenantStores(client: client, catalog: catalog)
                    return try await body(Hub(arguments: ["--postgres", endpoint.url], catalog: catalog, store: { stores.store(for: $0) }))
                }
            }
        }
    }

    @Test("""
        create-tenant, enroll-token, nodes, release-key, publish (to everyone, then a trial), rollout, rollback, \
        rollout-status, quarantine, tenant-settings and revoke work on the engine given, and write what the hub serves
        """, arguments: StorageEngine.testable)
    func adminCommands(engine: StorageEngine) async throws {
        let dir = try TempDir()
        let fixture = repositoryRoot() + "/fixtures/governance/automaker"
        let key = dir.path + "/automaker.release.key"
        try await Self.withHub(engine, in: dir) { hub in
            func ok(_ command: String, _ arguments: [String]) async throws -> String {
                let ran = try await tiersync(["admin", command] + hub.arguments + arguments, cwd: dir.path)
                #expect(ran.status == 0, "\(ran)")
                return ran.out
            }
            let created = try await ok("create-tenant", ["--tenant", "automaker", "--levels", "3"])
            #expect(created.contains("created tenant automaker with 3 levels (root node hq)"), "\(created)")
            #expect(try await ok("create-tenant", ["--tenant", "automaker", "--levels", "3"]).contains("tenant automaker already exists"))
            // Asked again for another shape: refused, naming what the tenant has; nothing changed.
            let reshaped = try await tiersync(["admin", "create-tenant"] + hub.arguments + ["--tenant", "automaker", "--levels", "2", "--root", "central"], cwd: dir.path)
            #expect(reshaped.status != 0 && reshaped.err.contains("tenant automaker already exists with 3 levels, root node hq: nothing changed"), "\(reshaped)")
            let held = try await hub.catalog.settings(of: "automaker")
            #expect(held?.levels == 3 && held?.root == "hq")

            // Tokens from the command, redeemed as the hub would (de first: it is de-1's parent).
            let deToken = try await ok("enroll-token", ["--tenant", "automaker", "--node", "de"])
            _ = try await hub.catalog.redeem(token: deToken.trimmingCharacters(in: .whitespacesAndNewlines))
            let dealerToken = try await ok("enroll-token", ["--tenant", "automaker", "--node", "de-1", "--parent", "de"])
            _ = try await hub.catalog.redeem(token: dealerToken.trimmingCharacters(in: .whitespacesAndNewlines), via: Principal(tenant: "automaker", node: "de"))
            let nodes = try await ok("nodes", ["--tenant", "automaker"])
            #expect(nodes.contains("hq/de/de-1") && nodes.split(separator: "\n").contains { $0.hasPrefix("de ") && $0.contains("country") }, "\(nodes)")

            #expect(try await ok("release-key", ["--tenant", "automaker", "--out", key]).contains("release key of automaker"))
            let v1 = try await ok("publish", [fixture, "--key", key])
            #expect(v1.contains("published release v1 of automaker") && v1.contains("rollout 1: v1 → everyone"), "\(v1)")
            let v2 = try await ok("publish", [fixture, "--key", key, "--targets", "de"])
            #expect(v2.contains("published release v2 of automaker") && v2.contains("rollout 2: v2 → de; v1 → everyone else"), "\(v2)")
            let trial = try await ok("rollout-status", ["--tenant", "automaker"])
            #expect(trial.contains("tenant automaker: rollout 2 (v2 → de; v1 → everyone else)") && trial.contains("de-1"), "\(trial)")
            #expect(try await ok("rollout", ["--tenant", "automaker", "--release", "2", "--key", key]).contains("rollout 3: v2 → everyone"))
            let rollback = try await ok("rollback", ["--tenant", "automaker", "--key", key])
            #expect(rollback.contains("rollout 4 (rollback to v1): v1 → everyone"), "\(rollback)")
            let status = try await ok("rollout-status", ["--tenant", "automaker", "--json"])
            let response = try JSONDecoder().decode(RolloutStatusResponse.self, from: Data(status.utf8))
            #expect(response.rollout == 4 && response.stages == "v1 → everyone" && Set(response.nodes.map(\.node)) == ["hq", "de", "de-1"], "\(status)")

            // What the commands wrote is what the hub serves, read through the seam.
            let publisher = GovernancePublisher(store: try hub.store("automaker"), tenant: "automaker",
                                                key: try loadKey(key), tree: try await hub.catalog.tree(of: "automaker"))
            #expect(try await publisher.releases().map(\.version) == [1, 2])
            #expect(try await publisher.rollouts().map(\.sequence) == [1, 2, 3, 4])

            #expect(try await ok("quarantine", ["--tenant", "automaker"]).contains("no quarantined changes"))
            let settings = try await ok("tenant-settings", ["--tenant", "automaker", "--allow-direct-sync", "true"])
            #expect(settings.contains("direct sync with HQ below the root's children: allowed"), "\(settings)")
            #expect(try await hub.catalog.settings(of: "automaker")?.allowDirectSync == true)
            let revoked = try await ok("revoke", ["--tenant", "automaker", "--node", "de-1"])
            #expect(revoked.contains("revoked de-1 of automaker: 1 credential(s)"), "\(revoked)")

            // Refusals: an unknown tenant names those there; a publish without --key on
            // PostgreSQL (no data directory to find the key in) says what to give.
            let unknown = try await tiersync(["admin", "nodes"] + hub.arguments + ["--tenant", "other"], cwd: dir.path)
            #expect(unknown.status != 0 && unknown.err.contains("no tenant 'other' in") && unknown.err.contains("(tenants there: automaker)"), "\(unknown)")
            if engine == .postgres {
                let keyless = try await tiersync(["admin", "publish", fixture] + hub.arguments, cwd: dir.path)
                #expect(keyless.status != 0 && keyless.err.contains("with --postgres there is no data directory to keep the release key in: give --key FILE"), "\(keyless)")
            }
        }
    }

    @Test("--data and --postgres: exactly one is given, or the command says so")
    func exactlyOneEngine() async throws {
        let dir = try TempDir()
        for command in [["create-tenant"], ["enroll-token", "--node", "de"], ["nodes"], ["publish", "sources"], ["rollout-status"], ["revoke", "--node", "de"]] {
            for hub in [[], ["--data", dir.path + "/hub", "--postgres", "postgres://u@127.0.0.1/db"]] {
                let ran = try await tiersync(["admin"] + command + hub + ["--tenant", "acme"], cwd: dir.path)
                #expect(ran.status != 0 && ran.err.contains("give exactly one of --data DIR (a hub on SQLite) and --postgres URL (a hub on PostgreSQL)"), "\(ran)")
            }
        }
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/hub"), "a refused command created nothing")
    }

    /// Says, in every run, whether the test above ran on PostgreSQL too.
    @Test("PostgreSQL variant of the admin commands runs", .enabled(if: TestPostgres.isAvailable, Comment(rawValue: StorageEngine.postgresSkipNote)))
    func postgresVariantRuns() {
        #expect(StorageEngine.testable.contains(.postgres))
    }
}

/// The release key file `admin release-key` wrote.
private func loadKey(_ path: String) throws -> GovernanceSigningKey {
    try GovernanceSigningKey(base64: try String(contentsOfFile: path, encoding: .utf8))
}

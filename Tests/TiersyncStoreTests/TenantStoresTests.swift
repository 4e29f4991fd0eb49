import Dispatch
import Foundation
import GRDB
import Testing
import TiersyncCore
import TiersyncStore
import TiersyncTestSupport

@Suite("A hub's tenant stores")
struct TenantStoresTests {
    @Test("first requests for tenants racing each other all get the one store of their tenant, with the root's identity")
    func racingFirstOpens() async throws {
        let dir = try TempDir()
        let catalog = try HubCatalog(directory: dir.path)
        for tenant in ["acme", "globex", "initech"] as [TenantID] { _ = try catalog.createTenant(tenant) }
        let stores = TenantStores(catalog: catalog)
        let opened = try await withThrowingTaskGroup(of: (TenantID, ObjectIdentifier).self) { group in
            for i in 0..<24 {
                let tenant: TenantID = ["acme", "globex", "initech"][i % 3]
                group.addTask { (tenant, ObjectIdentifier(try stores.store(for: tenant))) }
            }
            return try await group.reduce(into: [TenantID: Set<ObjectIdentifier>]()) { $0[$1.0, default: []].insert($1.1) }
        }
        #expect(opened.mapValues(\.count) == ["acme": 1, "globex": 1, "initech": 1])
        for tenant in ["acme", "globex", "initech"] as [TenantID] {
            #expect(try stores.store(for: tenant).identity() == NodeIdentity(tenant: tenant, node: "hq", parent: nil))
        }
        #expect(throws: StoreError.self) { try stores.store(for: "nobody") }
    }

    @Test("a tenant whose database is slow to open does not hold up lookups of the tenants already open")
    func slowOpenDoesNotBlockOthers() async throws {
        let dir = try TempDir()
        let catalog = try HubCatalog(directory: dir.path)
        for tenant in ["acme", "slow"] as [TenantID] { _ = try catalog.createTenant(tenant) }
        let stores = TenantStores(catalog: catalog)
        _ = try stores.store(for: "acme")
        // Another connection holds the slow tenant's file locked: opening it waits.
        var held = Configuration()
        held.allowsUnsafeTransactions = true
        let blocker = try DatabaseQueue(path: catalog.tenantDatabasePath("slow"), configuration: held)
        try await blocker.writeWithoutTransaction { try $0.execute(sql: "BEGIN EXCLUSIVE") }
        let opening = DispatchQueue(label: "opening slow")
        opening.async { _ = try? stores.store(for: "slow") }
        try await Task.sleep(for: .milliseconds(300))
        // Looked up while "slow" is being opened (off the cooperative pool: it is blocking).
        let took = await withCheckedContinuation { (continuation: CheckedContinuation<Duration, Never>) in
            DispatchQueue.global().async {
                let start = ContinuousClock.now
                _ = try? stores.store(for: "acme")
                continuation.resume(returning: ContinuousClock.now - start)
            }
        }
        try await Task.sleep(for: .seconds(1))
        try await blocker.writeWithoutTransaction { try $0.execute(sql: "ROLLBACK") }
        opening.sync {}
        // Waiting on the open would take until it gives up, the store's 15 s busy timeout
        // (the blocker is let go only after this look-up): 5 s leaves a loaded machine room.
        #expect(took < .seconds(5), "acme's store took \(took) while slow's database was being opened")
    }
}

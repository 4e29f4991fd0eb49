import Foundation
import Synchronization
import Testing
import TiersyncCore
import TiersyncGovernance
import TiersyncPostgres
import TiersyncServer
import TiersyncStore
import TiersyncTestSupport

/// `tiersync admin migrate-tenant`: a three-tier tenant served from SQLite moves to
/// PostgreSQL; the digests agree, and the country and its dealer carry on against the hub
/// on PostgreSQL (same port, same credentials, same cursors) without a resync.
@Suite("Moving a tenant from SQLite to PostgreSQL", .serialized)
struct MigrateTenantTests {
    @Test("migrate-tenant moves a tenant no node has reached yet (no database: it was refused, its administration left behind); a tenant already there is refused without a usage text",
          .enabled(if: TestPostgres.isAvailable, Comment(rawValue: StorageEngine.postgresSkipNote)), .timeLimit(.minutes(3)))
    func migrateUntouchedTenant() async throws {
        let dir = try TempDir()
        let data = dir.path + "/hub"
        _ = try Child.run(["admin", "create-tenant", "--data", data, "--tenant", "gamma", "--levels", "3"])
        let passwordFile = dir.path + "/pw"
        try "a long enough password\n".write(toFile: passwordFile, atomically: true, encoding: .utf8)
        _ = try Child.run(["admin", "user", "add", "--data", data, "--tenant", "gamma", "--name", "ops@gamma", "--role", "viewer", "--password-file", passwordFile])
        let token = try Child.run(["admin", "enroll-token", "--data", data, "--tenant", "gamma", "--node", "fr"]).trimmingCharacters(in: .whitespacesAndNewlines)
        // An enrolled country, with the database its first request would have made.
        let deToken = try Child.run(["admin", "enroll-token", "--data", data, "--tenant", "gamma", "--node", "de"]).trimmingCharacters(in: .whitespacesAndNewlines)
        let de = try await HubCatalog(directory: data).redeem(token: deToken)
        _ = try TenantStores(catalog: HubCatalog(directory: data)).store(for: "gamma")
        // A tenant whose node enrolled but whose database is missing (a directory restored
        // without it) is refused: moved, its nodes met an empty tenant (helper 99).
        _ = try Child.run(["admin", "create-tenant", "--data", data, "--tenant", "delta", "--levels", "3"])
        let deltaToken = try Child.run(["admin", "enroll-token", "--data", data, "--tenant", "delta", "--node", "de"]).trimmingCharacters(in: .whitespacesAndNewlines)
        _ = try await HubCatalog(directory: data).redeem(token: deltaToken)
        try await TestPostgres.withFreshDatabase { endpoint in
            let lost = try Child.capture(["admin", "migrate-tenant", "--data", data, "--tenant", "delta", "--to-postgres", endpoint.url])
            #expect(lost.status == 1 && lost.output.contains("no database for tenant 'delta' at") && lost.output.contains("1 node credential(s)"), "\(lost.output)")
            #expect(!FileManager.default.fileExists(atPath: data + "/tenants/delta.sqlite"), "the source is left as it was")
            let moved = try Child.capture(["admin", "migrate-tenant", "--data", data, "--tenant", "gamma", "--to-postgres", endpoint.url])
            #expect(moved.status == 0 && moved.output.contains("moved tenant gamma: digests equal") && moved.output.contains("1 administrators"),
                    "\(moved.output)")
            #expect(!moved.output.contains("hasn't been called yet"), "the pool's start-up warning: \(moved.output)")
            let again = try Child.capture(["admin", "migrate-tenant", "--data", data, "--tenant", "gamma", "--to-postgres", endpoint.url])
            #expect(again.status == 1 && again.output.contains("tenant 'gamma' moved to a hub on PostgreSQL") && !again.output.contains("Usage:"), "\(again.output)")
            // The old directory no longer serves the moved tenant: a hub started on it again (a
            // stale URL, a restart script) served it beside its new hub, and a one-time token
            // enrolled a node at both (helper 99). Its administration is refused too.
            let enrollToken = try Child.capture(["admin", "enroll-token", "--data", data, "--tenant", "gamma", "--node", "it"])
            #expect(enrollToken.status != 0 && enrollToken.output.contains("tenant 'gamma' moved to a hub on PostgreSQL"), "\(enrollToken.output)")
            // Nor do the catalog's other changes go through (they reached no hub serving it).
            let move = try Child.capture(["admin", "revoke", "--data", data, "--tenant", "gamma", "--node", "de"])
            #expect(move.status != 0 && move.output.contains("moved to a hub on PostgreSQL"), "\(move.output)")
            let stale = try await RunningHub(directory: dir.path)
            try await withRawClient(stale) { client in
                let login = try await client.send("POST", "/admin/v1/login",
                                                  json: AdminMessages.LoginRequest(tenant: "gamma", user: "ops@gamma", password: "a long enough password"))
                #expect(login.status == 410 && login.error?.code == "tenant_moved" && login.text.contains("moved to a hub on PostgreSQL")
                        && !login.text.contains("postgres://"), "\(login.status) \(login.text)")
                // Told only to whoever knows a password: a wrong one is the plain 401 (the 410 told
                // anyone that the tenant exists, with the database's address, helper 104).
                let guess = try await client.send("POST", "/admin/v1/login", json: AdminMessages.LoginRequest(tenant: "gamma", user: "ops@gamma", password: "wrong"))
                #expect(guess.status == 401, "\(guess.status) \(guess.text)")
                // The country's own requests are answered 410 too, naming no database.
                let whoami = try await client.send("GET", "/v1/whoami", credential: de.credential)
                #expect(whoami.status == 410 && whoami.error?.code == "tenant_moved", "\(whoami.status) \(whoami.text)")
                let enroll = try await client.send("POST", "/v1/enroll", json: EnrollRequest(token: token))
                #expect(enroll.status == 410 && enroll.error?.code == "tenant_moved", "\(enroll.status) \(enroll.text)")
            }
            await stale.stop()
        }
    }

    @Test("migrate-tenant: digests equal before and after, credentials and cursors keep working, nothing re-sent or lost",
          .enabled(if: TestPostgres.isAvailable, Comment(rawValue: StorageEngine.postgresSkipNote)), .timeLimit(.minutes(5)))
    func migrateTenant() async throws {
        let dir = try TempDir()
        try await withRunning { running in
            // Phase 1: HQ on SQLite, a country and a dealer below it, a release in force.
            let sqliteHub = try await RunningHub(directory: dir.path)
            let port = sqliteHub.port
            try sqliteHub.catalog.createTenant("automaker", levels: 3)
            let key = GovernanceSigningKey()
            try sqliteHub.catalog.setReleaseKey(key.publicKey.base64, for: "automaker")
            let de = try await running.country(hub: sqliteHub, tenant: "automaker", node: "de", directory: dir.path)
            let berlin = try await running.agent(enrolling: "de-berlin", parent: "de", tenant: "automaker", hub: sqliteHub, parentURL: de.url,
                                                 directory: dir.path)
            let hq = try sqliteHub.stores.store(for: "automaker")
            let publisher = GovernancePublisher(store: hq, tenant: "automaker", key: key, tree: try await sqliteHub.catalog.tree(of: "automaker"))
            try await publisher.publish(try GovernanceCompiler.compile(directory: repositoryRoot() + "/fixtures/governance/automaker"))
            func write(_ range: Range<Int>) throws {
                try berlin.store.commit(range.map { .upsert("customers", id: "c-\($0)", ["last_name": .string("Customer \($0)")]) })
            }
            try write(0..<40)
            try await eventually(timeout: 30, "HQ holds berlin's 40 customers") { try hq.liveRecords(table: "customers").count == 40 }
            // HQ edits one (it flows down), and the dealer deletes another.
            try hq.commit([.upsert("customers", id: "c-1", ["first_name": "Edited at HQ"])])
            try berlin.store.commit([.delete("customers", id: "c-2")])
            try await eventually(timeout: 30, "the edit reached berlin and the delete HQ") {
                try berlin.store.record(table: "customers", id: "c-1")?.state.liveValues["first_name"] == "Edited at HQ"
                    && hq.liveRecords(table: "customers").count == 39
            }
            // HQ erases a customer: what it erased must stay refused after the move.
            try hq.erase(.customers, id: "c-3")
            try await eventually(timeout: 30, "the erasure reached berlin") {
                try berlin.store.record(table: "customers", id: "c-3") == nil && hq.liveRecords(table: "customers").count == 38
            }
            // HQ's last own write, superseded by berlin's edit: compaction purges it, so HQ's
            // highest number is in no log entry that moves.
            try hq.commit([.upsert("customers", id: "c-5", ["first_name": "HQ's draft"])])
            try await eventually(timeout: 30, "HQ's draft reached berlin") {
                try berlin.store.record(table: "customers", id: "c-5")?.state.liveValues["first_name"] == "HQ's draft"
            }
            try berlin.store.commit([.upsert("customers", id: "c-5", ["first_name": "Berlin's"])])
            try await eventually(timeout: 30, "berlin's edit reached HQ and de") {
                try hq.record(table: "customers", id: "c-5")?.state.liveValues["first_name"] == "Berlin's"
                    && de.store.record(table: "customers", id: "c-5")?.state.liveValues["first_name"] == "Berlin's"
            }
            let pulledBefore = try de.store.cursor("pull.parent")
            #expect(pulledBefore > 0)
            await sqliteHub.stop()
            let headBefore = try hq.headSeq()
            // What the country pulled is folded into HQ's records (gone from its log): the move
            // writes it back into the log, since a hub on PostgreSQL feeds from the log alone.
            await hq.notePulled(by: "de", through: pulledBefore)
            let compaction = try await hq.compact(policy: .default, tree: try await sqliteHub.catalog.tree(of: "automaker"))
            #expect(compaction.foldedEntries > 30, "\(compaction)")
            let logRows = try hq.counts().changes + hq.foldedCounts().entries
            // The tenant's administration: an administrator with an API token, four-eyes releases.
            let data = dir.path + "/hub"
            let passwordFile = dir.path + "/pw"
            try "a long enough password\n".write(toFile: passwordFile, atomically: true, encoding: .utf8)
            _ = try Child.run(["admin", "user", "add", "--data", data, "--tenant", "automaker", "--name", "ops@automaker", "--role", "viewer",
                               "--password-file", passwordFile])
            let apiToken = try Child.run(["admin", "user", "token", "--data", data, "--tenant", "automaker", "--name", "ops@automaker", "--days", "1"])
                .trimmingCharacters(in: .whitespacesAndNewlines)
            _ = try Child.run(["admin", "tenant-settings", "--data", data, "--tenant", "automaker", "--four-eyes", "true"])

            try await TestPostgres.withFreshDatabase { endpoint in
                // The move, through the CLI.
                let output = try Child.run(["admin", "migrate-tenant", "--data", dir.path + "/hub", "--tenant", "automaker",
                                            "--to-postgres", endpoint.url, "--page-size", "7"])
                func digest(_ prefix: String) -> String? {
                    output.split(separator: "\n").first { $0.hasPrefix(prefix) }.flatMap { line in
                        line.split(separator: " ").first { $0.count == 64 && $0.allSatisfy(\.isHexDigit) }.map(String.init)
                    }
                }
                let (source, target) = (digest("source"), digest("target"))
                #expect(source != nil && source == target, "digests before and after:\n\(output)")
                #expect(output.contains("moved tenant automaker: digests equal"), "\(output)")
                #expect(output.contains("changes: \(logRows) rows"), "\(logRows) log entries, folded ones written back:\n\(output)")
                #expect(output.contains("folded log entries written back"), "\(output)")
                #expect(output.contains("1 administrators, 1 of their tokens"), "\(output)")

                // HQ's first own write on PostgreSQL, before any node tells the hub what it holds,
                // is numbered after every one it made on SQLite, purged ones included: numbered
                // from the log alone, it reused an identity and every node refused it (an
                // erasure requested there reached no one).
                let hqNode = try #require(try hq.identity()?.node)
                let hqMadeOnSQLite = try await hq.highestSeq(of: hqNode)
                let written = try await withPostgresClient(endpoint) { client in
                    try await PostgresTenantStore(client: client, tenant: "automaker", rootOf: { _ in hqNode })
                        .writeAsHub([.upsert("customers", id: "c-4", ["first_name": "Written on PostgreSQL"])])
                }
                #expect((written.first?.originSeq ?? 0) > hqMadeOnSQLite, "HQ made \(hqMadeOnSQLite) on SQLite; wrote \(written.map(\.originSeq))")

                // Phase 2: HQ on PostgreSQL at the same address; the nodes keep their credentials and cursors.
                let pgHub = try await RunningHub(directory: dir.path, port: port, postgres: endpoint)
                let lowest = Mutex(Int64.max)
                let watching = Task {
                    while !Task.isCancelled {
                        if let c = try? de.store.cursor("pull.parent") { lowest.withLock { $0 = min($0, c) } }
                        try? await Task.sleep(for: .milliseconds(20))
                    }
                }
                try write(40..<60)
                let pg = try await pgHub.tenantStore(for: "automaker")
                try await eventually(timeout: 60, "HQ on PostgreSQL holds the 20 new customers") {
                    try await pg.liveRecords(inTable: "customers").count == 58
                }
                // Every change berlin made is at HQ (once: the log's identities are unique).
                // (Its highest sequence, not its log's rows: its agent compacts its own log.)
                let berlinMade = try await berlin.store.highestSeq(of: "de-berlin")
                try await eventually(timeout: 30, "HQ holds all \(berlinMade) of berlin's changes") {
                    try await pg.highestSeq(of: "de-berlin") == berlinMade
                }
                // HQ's first own write on PostgreSQL reached berlin.
                try await eventually(timeout: 30, "HQ's write on PostgreSQL reached berlin") {
                    try berlin.store.record(table: "customers", id: "c-4")?.state.liveValues["first_name"] == "Written on PostgreSQL"
                }
                let atHQ = try await pg.liveRecords(inTable: "customers").map { "\($0.id) \(CanonicalJSON.object($0.values))" }
                let atBerlin = try berlin.store.liveRecords(table: "customers").map { "\($0.id) \(CanonicalJSON.object($0.values))" }
                #expect(atHQ == atBerlin, "berlin and HQ hold the same customers")
                // A node bootstrapping from the new hub receives every customer, folded ones included.
                var fed: Set<String> = []
                var cursor: Int64 = 0
                while true {
                    let page = try #require(WireDecoding.pullResponse(try await pg.encodedFeed(after: cursor, scope: .everything, excluding: nil, limit: 25).json))
                    fed.formUnion(page.changes.filter { $0.table == "customers" }.map(\.recordID))
                    cursor = page.nextCursor
                    if !page.more { break }
                }
                #expect(Set(try await pg.liveRecords(inTable: "customers").map(\.id)).isSubset(of: fed), "the feed from 0 names every live customer")
                #expect(try await pg.feedHead() > headBefore, "new changes continue the log's numbering")
                watching.cancel()
                _ = await watching.value
                #expect(lowest.withLock { $0 } >= pulledBefore, "the country's pull cursor never went back (no resync)")
                #expect(try await pg.latestGovernanceDocument(ofKind: "release")?.seq == 1, "the release moved with the tenant")
                // The erasure moved too: a late change of the erased customer is refused at the new hub.
                let deCredential = try #require(try de.store.meta(MetaKey.credential.rawValue))
                let late = Change(origin: "de", originSeq: 9_000, hlc: HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: 0),
                                  table: "customers", recordID: "c-3", op: .upsert, fields: ["last_name": "Back again"])
                let refused = try await running.client(pgHub).send("POST", "/v1/push", json: PushRequest(through: 9_000, changes: [late]), credential: deCredential)
                #expect(try refused.decode(PushResponse.self).rejected.map(\.code) == [.erased], "\(refused.text)")
                #expect(try await pg.erasureLedger().first?.acknowledgements.contains { $0.node == "hq" } == true)
                // The administration moved: the API token works at the new hub, four-eyes is still on,
                // and the audit log kept what was done (it was left behind: four-eyes silently off).
                let me = try await running.client(pgHub).send("GET", "/admin/v1/me", headers: [("Authorization", "Bearer \(apiToken)")])
                #expect(me.status == 200, "\(me.text)")
                let settings = try Child.run(["admin", "tenant-settings", "--postgres", endpoint.url, "--tenant", "automaker"])
                #expect(settings.contains("four-eyes releases: on"), "\(settings)")
                let audit = try Child.run(["admin", "user", "audit", "--postgres", endpoint.url, "--tenant", "automaker", "--csv"])
                #expect(audit.contains("user.add") && audit.contains("token.create"), "\(audit)")
                await pgHub.stop()
            }
        }
    }
}

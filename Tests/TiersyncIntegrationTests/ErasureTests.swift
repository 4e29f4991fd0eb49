import Foundation
import PostgresNIO
import Testing
import TiersyncAgent
import TiersyncCore
import TiersyncPostgres
import TiersyncServer
import TiersyncStore
import TiersyncTestSupport

/// Issue 16's erasure, end to end over TLS: HQ, a country and two dealers holding one
/// customer, one dealer offline while the erasure is requested at the other.
@Suite("Erasure")
struct ErasureTests {
    /// Personal data written for the customer: none of it may survive in any file.
    static let secrets = ["Quixotabella", "Erasmussen-Vogt", "+49 5550 199 777", "Erasmussen-Stale"]

    /// Every SQLite file under `directory` (databases, write-ahead logs, shared memory) and
    /// the secrets each still holds, by byte search.
    static func leaks(under directory: String) throws -> [String] {
        var found: [String] = []
        let files = FileManager.default.enumerator(atPath: directory)!.compactMap { $0 as? String }
            .filter { $0.hasSuffix(".sqlite") || $0.hasSuffix(".sqlite-wal") || $0.hasSuffix(".sqlite-shm") }
        #expect(files.count >= 6, "the tree's stores and logs are found: \(files)")
        for file in files {
            // A log or shared-memory file goes when its last connection closes.
            guard let bytes = try? Data(contentsOf: URL(fileURLWithPath: directory + "/" + file)) else { continue }
            for secret in secrets where bytes.range(of: Data(secret.utf8)) != nil { found.append("\(file): \(secret)") }
        }
        return found
    }

    /// Whether `store` holds a live record, on either engine.
    static func holds(_ store: any HubTenantStore, _ table: String, _ id: String) async throws -> Bool {
        try await store.liveRecords(inTable: table).contains { $0.id == id }
    }

    /// HQ (on `postgres`, or SQLite files in `dir`), country `de` and its dealers `de-d1`, `de-d2`.
    static func tree(_ running: Running, dir: TempDir, postgres: PostgresEndpoint?) async throws
        -> (hub: RunningHub, de: RunningCountry, d1: RunningAgent, d2: RunningAgent, hq: any HubTenantStore) {
        let hub = try await running.hub(directory: dir.path, postgres: postgres)
        try await hub.catalogStore.createTenant("acme", levels: 3)
        let de = try await running.country(hub: hub, tenant: "acme", node: "de", directory: dir.path)
        let d1 = try await running.agent(enrolling: "de-d1", parent: "de", tenant: "acme", hub: hub, parentURL: de.url, directory: dir.path)
        let d2 = try await running.agent(enrolling: "de-d2", parent: "de", tenant: "acme", hub: hub, parentURL: de.url, directory: dir.path)
        return (hub, de, d1, d2, try await hub.tenantStore(for: "acme"))
    }

    @Test("""
    Erasure requested at a dealer reaches HQ, the country and the other dealer; each acknowledges in HQ's ledger; \
    the dealer that was offline erases on reconnect before pushing its stale edit, which is dropped and counted; a late \
    change pushed afterwards is refused `erased` and counted; no byte of the customer's name or phone is left in any \
    SQLite file or write-ahead log (and, with the hub on PostgreSQL, in no row of the tenant's schema)
    """, .timeLimit(.minutes(5)), arguments: StorageEngine.testable)
    func erasureEverywhere(engine: StorageEngine) async throws {
        let dir = try TempDir()
        try await withHubDatabase(engine) { postgres in
        try await withRunning { running in
            let (hub, de, d1, d2, hq) = try await Self.tree(running, dir: dir, postgres: postgres)
            func atHQ(_ table: String, _ id: String) async throws -> Bool { try await Self.holds(hq, table, id) }

            // The customer, sold by d1 and serviced by d2, with a vehicle and a dialogue.
            try d1.store.commit([
                .upsert("customers", id: "cust-1", ["first_name": .string(Self.secrets[0]), "last_name": .string(Self.secrets[1]),
                                                    "phone": .string(Self.secrets[2]), "servicing_dealer": "de-d2"]),
                .upsert("vehicles", id: "veh-1", ["customer_id": "cust-1", "vin": "WVWZZZ1JZXW000001", "kind": "vehicle"]),
                .upsert("interactions", id: "int-1", ["customer_id": "cust-1", "topic": "brakes", "channel": "phone", "urgency": "normal"]),
                .upsert("customers", id: "cust-2", ["last_name": "Keeps"]),
            ])
            try await eventually(timeout: 30, "cust-1 reaches HQ and d2") {
                let atD2 = try d2.store.record(table: "customers", id: "cust-1") != nil
                let c1 = try await atHQ("customers", "cust-1"), i1 = try await atHQ("interactions", "int-1"), c2 = try await atHQ("customers", "cust-2")
                return atD2 && c1 && i1 && c2
            }
            #expect(try Self.leaks(under: dir.path).count >= 8, "the byte search finds the customer before the erasure")
            // d2 goes offline and edits the customer there.
            await d2.stop()
            try d2.store.commit([.upsert("customers", id: "cust-1", ["last_name": .string(Self.secrets[3])])])

            // The erasure, requested at d1 through the CLI while d1's agent runs.
            let d1Path = dir.path + "/de-d1.sqlite"
            let out = try Child.run(["erase", "--db", d1Path, "customers", "cust-1"])
            #expect(out.contains("erased customers/cust-1 as era-") && out.contains("3 record(s)") && out.contains("files clean: yes"), "\(out)")
            #expect(try d1.store.record(table: "customers", id: "cust-1") == nil)
            #expect(try d1.store.record(table: "customers", id: "cust-2") != nil, "other customers stay")

            // Every online replica acknowledges; the offline dealer stays outstanding.
            func ledger() async throws -> ErasureLedgerEntry? { try await hub.tenantStore(for: "acme").erasureLedger().first }
            try await eventually(timeout: 30, "HQ, de and d1 acknowledge") {
                let acked = Set(try await ledger()?.acknowledgements.map(\.node) ?? [])
                return acked.isSuperset(of: ["hq", "de", "de-d1"])
            }
            let tree = try await hub.catalogStore.tree(of: "acme")
            let entry = try #require(try await ledger())
            #expect(entry.replicas(in: tree) == ["de", "de-d1", "de-d2", "hq"])
            #expect(entry.outstanding(in: tree) == ["de-d2"])
            #expect(entry.subjectTable == "customers" && entry.subjectID == "cust-1" && entry.requestedBy == "de-d1")
            let erasedAtHQ = try await (atHQ("customers", "cust-1"), atHQ("interactions", "int-1"), atHQ("vehicles", "veh-1"))
            #expect(erasedAtHQ == (false, false, false))
            #expect(try await atHQ("customers", "cust-2"), "other customers stay at HQ")
            #expect(try de.store.record(table: "customers", id: "cust-1") == nil)
            #expect(entry.acknowledgements.allSatisfy { $0.records == 3 && $0.digest.count == 64 }, "\(entry.acknowledgements)")

            // The offline dealer reconnects: it erases first, so its stale edit is dropped, never pushed.
            let d2Back = try running.agent(store: d2.store, parentURL: de.url, caFile: hub.caFile)
            try await eventually(timeout: 30, "d2 acknowledges") {
                try await ledger()?.acknowledgements.contains { $0.node == "de-d2" } == true
            }
            let d2Done = try #require(try d2Back.store.erasures().first)
            #expect(d2Done.unsentDropped == 1 && d2Done.records == 1, "d2 held the customer only (the vehicle and dialogue are d1's): \(d2Done)")
            #expect(try await ledger()?.outstanding(in: tree) == [])
            #expect(try await ledger()?.acknowledgements.first { $0.node == "de-d2" }?.unsentDropped == 1)
            #expect(try de.store.erasures().first?.refused == 0, "the stale edit never reached de")

            // A late change of the erased customer (a node that kept a copy) is refused and counted.
            let credential = try #require(try d2Back.store.meta(MetaKey.credential.rawValue))
            let client = running.client(baseURL: de.url, caFile: hub.caFile)
            let late = Change(origin: "de-d2", originSeq: 9_000, hlc: HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: 0),
                              table: "customers", recordID: "cust-1", op: .upsert, fields: ["last_name": .string(Self.secrets[1])])
            let lateDialogue = Change(origin: "de-d2", originSeq: 9_001, hlc: HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: 1),
                                      table: "interactions", recordID: "int-late", op: .upsert,
                                      fields: ["customer_id": "cust-1", "topic": .string(Self.secrets[0]), "handling_node": "de-d2"])
            let reply = try await client.send("POST", "/v1/push", json: PushRequest(through: 9_001, changes: [late, lateDialogue]), credential: credential)
            let answer = try reply.decode(PushResponse.self)
            #expect(answer.applied == 0 && answer.rejected.map(\.code) == [.erased, .erased], "\(answer)")
            #expect(try de.store.erasures().first?.refused == 2)
            try await eventually(timeout: 30, "de's refusals reach HQ's ledger") {
                try await ledger()?.acknowledgements.first { $0.node == "de" }?.refused == 2
            }
            #expect(try de.store.record(table: "interactions", id: "int-late") == nil)
            // At HQ too: the country's own late change of the customer is refused there and counted in HQ's acknowledgement.
            let deCredential = try #require(try de.store.meta(MetaKey.credential.rawValue))
            let fromCountry = Change(origin: "de", originSeq: 9_000, hlc: HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: 0),
                                     table: "customers", recordID: "cust-1", op: .upsert, fields: ["last_name": .string(Self.secrets[1])])
            let atHub = try await running.client(hub).send("POST", "/v1/push", json: PushRequest(through: 9_000, changes: [fromCountry]), credential: deCredential)
            #expect(try atHub.decode(PushResponse.self).rejected.map(\.code) == [.erased], "\(atHub.text)")
            try await eventually(timeout: 10, "HQ's acknowledgement counts the refusal") {
                try await ledger()?.acknowledgements.first { $0.node == "hq" }?.refused == 1
            }
            let again = try await running.client(hub).send("POST", "/v1/push", json: PushRequest(through: 9_000, changes: [fromCountry]), credential: deCredential)
            #expect(try again.decode(PushResponse.self).duplicates == 1, "a refusal for erased data is final: \(again.text)")

            // Every store still verifies; no byte of the customer is left, with everything running and once stopped.
            var stores = [de.store, d1.store, d2Back.store]
            if let sqliteHQ = hq as? NodeStore { stores.append(sqliteHQ) }
            for store in stores {
                let done = try #require(try store.erasures().first)
                #expect(try store.verifyErasure(done.erasureID))
            }
            #expect(try Self.leaks(under: dir.path) == [])
            if let postgres { #expect(try await Self.rowsHolding(Self.secrets, tenant: "acme", in: postgres) == []) }
        }
        }
        #expect(try Self.leaks(under: dir.path) == [])
    }

    @Test("""
    A dealer's dialogue naming a customer erased elsewhere, accepted by its country (which never held the customer) and \
    refused `erased` at HQ: the country erases its copy and passes the refusal down, and the dealer erases its dialogue \
    too and refuses new writes naming the customer (it kept the dialogue for good, acknowledged); the country's own \
    ledger waits for the replicas of its subtree only (HQ stood outstanding there for good)
    """, .timeLimit(.minutes(3)))
    func erasedRefusalPassedDown() async throws {
        let dir = try TempDir()
        try await withRunning { running in
            let hub = try await running.hub(directory: dir.path)
            try await hub.catalogStore.createTenant("acme", levels: 3)
            let de = try await running.country(hub: hub, tenant: "acme", node: "de", directory: dir.path)
            let fr = try await running.country(hub: hub, tenant: "acme", node: "fr", directory: dir.path)
            let d1 = try await running.agent(enrolling: "de-d1", parent: "de", tenant: "acme", hub: hub, parentURL: de.url, directory: dir.path)
            let f1 = try await running.agent(enrolling: "fr-f1", parent: "fr", tenant: "acme", hub: hub, parentURL: fr.url, directory: dir.path)
            let hq = try await hub.tenantStore(for: "acme")
            try d1.store.commit([.upsert("customers", id: "cust-x", ["last_name": .string(Self.secrets[1])])])
            try await eventually(timeout: 30, "cust-x reaches HQ") { try await Self.holds(hq, "customers", "cust-x") }
            let out = try Child.run(["erase", "--db", dir.path + "/de-d1.sqlite", "customers", "cust-x"])
            #expect(out.contains("erased customers/cust-x"), "\(out)")
            // Asked again: said to be done before, not done again (it read as a new erasure).
            let again = try Child.run(["erase", "--db", dir.path + "/de-d1.sqlite", "customers", "cust-x"])
            #expect(again.contains("customers/cust-x was erased here before, as era-") && again.contains("nothing more to erase") && !again.contains("syncs with the next push"),
                    "\(again)")
            try await eventually(timeout: 30, "HQ erased cust-x") { try await !Self.holds(hq, "customers", "cust-x") }
            // f1 never held cust-x, nor did fr: both take the dialogue; HQ refuses it.
            try f1.store.commit([.upsert("interactions", id: "int-f", ["customer_id": "cust-x", "topic": "brakes", "channel": "phone",
                                                                       "summary": .string(Self.secrets[0])])])
            try await eventually(timeout: 30, "fr erases its copy") {
                try fr.store.record(table: "interactions", id: "int-f") == nil && fr.store.erasures().isEmpty == false
            }
            try await eventually(timeout: 30, "f1 erases its dialogue, told by fr") { try f1.store.record(table: "interactions", id: "int-f") == nil }
            #expect(try !f1.store.erasures().isEmpty)
            #expect(throws: (any Error).self, "a new dialogue naming the erased customer is refused at f1") {
                try f1.store.commit([.upsert("interactions", id: "int-f2", ["customer_id": "cust-x", "topic": "brakes"])])
            }
            #expect(try await !Self.holds(hq, "interactions", "int-f"))

            // de's own ledger (its administrator, at de) waits for its subtree's replicas only:
            // HQ's acknowledgement never comes down, and HQ stood outstanding there for good.
            let accounts = try #require(hub.catalogStore as? any AdminAccountStore)
            try await accounts.createAdminUser(AdminUser(tenant: "acme", name: "de-admin", roles: [.operator], scope: "de", createdAtMillis: WallClock.nowMillis()),
                                               passwordHash: try PasswordHash.make("correct horse battery staple"))
            let atDE = running.client(baseURL: de.url, caFile: hub.caFile)
            var session = ""
            try await eventuallyAsync(timeout: 30, "de-admin logs in at de") {
                let login = try await atDE.send("POST", "/admin/v1/login", json: AdminMessages.LoginRequest(tenant: "acme", user: "de-admin", password: "correct horse battery staple"))
                session = login.headers["set-cookie"].map { String($0.split(separator: ";")[0]) } ?? ""
                return login.status == 200
            }
            try await eventuallyAsync(timeout: 30, "de's ledger: every replica of its subtree acknowledged") {
                let ledger = try await atDE.send("GET", "/admin/v1/erasures", headers: [("Cookie", session)]).decode(AdminMessages.ErasuresResponse.self)
                guard let line = ledger.erasures.first(where: { $0.id == "cust-x" }) else { return false }
                #expect(!line.replicas.contains("hq") && line.replicas.contains("de"), "\(line)")
                return line.outstanding.isEmpty
            }
        }
    }

    @Test("""
    A dealer's erasure request for a sibling's customer, relayed by its country, erases nothing anywhere: HQ judges \
    what it may erase by the dealer's scope, not the country's (it erased the customer at HQ and everything linked); \
    the country restored from a backup, fetching it all again from HQ, judges the request alike (it erased the \
    customer HQ kept)
    """, .timeLimit(.minutes(5)), arguments: StorageEngine.testable)
    func relayedErasureOfSiblingsCustomer(engine: StorageEngine) async throws {
        let dir = try TempDir()
        try await withHubDatabase(engine) { postgres in
        try await withRunning { running in
            let (hub, de, d1, d2, hq) = try await Self.tree(running, dir: dir, postgres: postgres)
            func atHQ(_ table: String, _ id: String) async throws -> Bool { try await Self.holds(hq, table, id) }
            // The country's backup, from before anything below happened.
            let backup = dir.path + "/de-backup.sqlite"
            _ = try Child.run(["backup", "--db", de.store.path, "--out", backup])
            try de.store.commit([.upsert("customers", id: "cust-de", ["last_name": "Landes"])])
            try d2.store.commit([
                .upsert("customers", id: "cust-d2", ["last_name": "Schulz"]),
                .upsert("interactions", id: "int-d2", ["customer_id": "cust-d2", "topic": "brakes", "channel": "phone", "urgency": "normal"]),
            ])
            try await eventually(timeout: 30, "d2's customer reaches HQ") {
                let (customer, dialogue) = try await (atHQ("customers", "cust-d2"), atHQ("interactions", "int-d2"))
                return customer && dialogue
            }
            // d1 asks for it to be erased (its CLI refuses a customer it does not hold: sent raw).
            let credential = try #require(try d1.store.meta(MetaKey.credential.rawValue))
            let request = Change(origin: "de-d1", originSeq: 9_000, hlc: HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: 0),
                                 table: "erasures", recordID: "era-sibling", op: .upsert,
                                 fields: ["subject_table": "customers", "subject_id": "cust-d2", "requested_by": "de-d1",
                                          "requested_at": "2026-12-05T20:00:00Z"])
            let reply = try await running.client(baseURL: de.url, caFile: hub.caFile)
                .send("POST", "/v1/push", json: PushRequest(through: 9_000, changes: [request]), credential: credential)
            #expect(reply.status == 200, "\(reply.text)")
            // The request travels up like any record of d1's; what it names stays everywhere.
            try await eventually(timeout: 30, "the request reaches HQ") { try await atHQ("erasures", "era-sibling") }
            try await Task.sleep(for: .milliseconds(500))
            let heldAtHQ = try await (atHQ("customers", "cust-d2"), atHQ("interactions", "int-d2"))
            #expect(heldAtHQ == (true, true), "HQ erased a customer of d2's on d1's word")
            #expect(try de.store.record(table: "customers", id: "cust-d2") != nil && d2.store.record(table: "customers", id: "cust-d2") != nil)
            // d2 goes on editing its customer: accepted at HQ, not refused as erased.
            try d2.store.commit([.upsert("customers", id: "cust-d2", ["phone": "+49 30 1"])])
            try await eventually(timeout: 30, "d2's edit reaches HQ") {
                try await hq.liveRecords(inTable: "customers").first { $0.id == "cust-d2" }?.values["phone"] == "+49 30 1"
            }

            // The country's disk is lost and its backup put in place: HQ holds more of its own
            // changes (cust-de), so it fetches its scope again from the start, d1's request after
            // d2's customer. It judges the request by d1's scope, as HQ did.
            try await eventually(timeout: 30, "HQ holds the country's own customer") { try await atHQ("customers", "cust-de") }
            await de.stop()
            // Its --data directory (the directory it mirrored from HQ) went with the disk.
            let fresh = dir.path + "/restored"
            try FileManager.default.createDirectory(atPath: fresh, withIntermediateDirectories: true)
            let restored = try await running.country(hub: hub, store: try NodeStore(path: backup, checkpointing: .byOwner), node: "de",
                                                     directory: fresh)
            try await eventually(timeout: 30, "the restored country fetches the request and its own customer again") {
                try restored.store.record(table: "erasures", id: "era-sibling") != nil && restored.store.record(table: "customers", id: "cust-de") != nil
            }
            #expect(try restored.store.liveRecords(table: "customers").first { $0.id == "cust-d2" }?.values["phone"] == "+49 30 1",
                    "the restored country erased what HQ kept, on d1's word")
            #expect(try restored.store.liveRecords(table: "interactions").contains { $0.id == "int-d2" })
        }
        }
    }

    @Test("""
    An erasure HQ's ledger shows complete stays complete when a replica's dealer moves to another country: the new \
    country, which never held the data, receives the request with the dealer's records and acknowledges it holding \
    none (it stayed outstanding for good); the old country's acknowledgement is kept
    """, .timeLimit(.minutes(5)), arguments: StorageEngine.testable)
    func completedErasureSurvivesAMove(engine: StorageEngine) async throws {
        let dir = try TempDir()
        try await withHubDatabase(engine) { postgres in
        try await withRunning { running in
            let (hub, de, d1, d2, hq) = try await Self.tree(running, dir: dir, postgres: postgres)
            let fr = try await running.country(hub: hub, tenant: "acme", node: "fr", directory: dir.path)
            try d1.store.commit([
                .upsert("customers", id: "cust-1", ["last_name": .string(Self.secrets[1]), "phone": .string(Self.secrets[2])]),
                .upsert("customers", id: "cust-2", ["last_name": "Keeps"]),
            ])
            try await eventually(timeout: 30, "d1's customers reach HQ") {
                let c1 = try await Self.holds(hq, "customers", "cust-1"), c2 = try await Self.holds(hq, "customers", "cust-2")
                return c1 && c2
            }
            _ = try d1.store.erase(.customers, id: "cust-1")
            func ledger() async throws -> ErasureLedgerEntry? { try await hub.tenantStore(for: "acme").erasureLedger().first }
            let before = try await hub.catalogStore.tree(of: "acme")
            try await eventually(timeout: 30, "the erasure is complete") { try await ledger()?.outstanding(in: before) == [] }
            #expect(try await ledger()?.replicas(in: before) == ["de", "de-d1", "hq"])

            // d1 moves to fr: fr fetches d1's records (the request among them) from HQ.
            try await hub.catalogStore.moveNode("de-d1", of: "acme", to: "fr")
            await d1.stop()
            #expect(try SyncAgent.adoptParent(store: d1.store, url: fr.url))
            let moved = try running.agent(store: d1.store, parentURL: fr.url, caFile: hub.caFile)
            let after = try await hub.catalogStore.tree(of: "acme")
            try await eventually(timeout: 30, "fr holds d1's other customer") { try fr.store.record(table: "customers", id: "cust-2") != nil }
            do {
                try await eventually(timeout: 30, "fr acknowledges the erasure, holding none of it") {
                    try await ledger()?.outstanding(in: after) == []
                }
            } catch {
                let entry = try await ledger()
                Issue.record("ledger \(String(describing: entry)); fr holds the request: \(try fr.store.record(table: "erasures", id: entry?.erasureID ?? "") != nil)")
                throw error
            }
            let entry = try #require(try await ledger())
            #expect(entry.replicas(in: after) == ["de-d1", "fr", "hq"])
            #expect(entry.acknowledgements.first { $0.node == "fr" }?.records == 0, "\(entry.acknowledgements)")
            #expect(entry.acknowledgements.map(\.node) == ["de", "de-d1", "fr", "hq"], "de's acknowledgement is kept")
            #expect(try fr.store.erasures().map(\.records) == [0])
            #expect(try fr.store.verifyErasure(entry.erasureID))
            #expect(try moved.store.erasures().count == 1, "d1 did not erase again")
            _ = d2
        }
        }
    }

    @Test("""
    HQ erases a customer right after its dealer moved to another country, before the dealer reconnects: the new \
    country, holding none of it, acknowledges the request and notes the customer as erased, so the history the dealer \
    re-sends there is refused as erased rather than kept; the dealer erases its copy on that refusal and acknowledges \
    the request. Before, the new country stored the customer and its dialogue, HQ took them as duplicates, the data \
    stayed at the country and the dealer, and HQ's ledger waited for the dealer for good
    """, .timeLimit(.minutes(5)), arguments: StorageEngine.testable)
    func erasureJustAfterAMove(engine: StorageEngine) async throws {
        let dir = try TempDir()
        try await withHubDatabase(engine) { postgres in
        try await withRunning { running in
            let (hub, de, d1, d2, hq) = try await Self.tree(running, dir: dir, postgres: postgres)
            let fr = try await running.country(hub: hub, tenant: "acme", node: "fr", directory: dir.path)
            try d1.store.commit([
                .upsert("customers", id: "cust-1", ["last_name": .string(Self.secrets[1]), "phone": .string(Self.secrets[2])]),
                .upsert("interactions", id: "int-1", ["customer_id": "cust-1", "topic": .string(Self.secrets[0]), "channel": "phone", "urgency": "normal"]),
            ])
            try await eventually(timeout: 30, "d1's customer and dialogue reach HQ") {
                let customer = try await Self.holds(hq, "customers", "cust-1"), dialogue = try await Self.holds(hq, "interactions", "int-1")
                return customer && dialogue
            }
            // d1 is moved to fr while it is away; HQ erases the customer at once.
            await d1.stop()
            try await hub.catalogStore.moveNode("de-d1", of: "acme", to: "fr")
            let erasureID = RecordID.random(prefix: "era")
            _ = try await hq.writeAsHub([RecordWrite(table: DomainSchema.erasures.name, id: erasureID, op: .upsert,
                                                     fields: Erasure.markerFields(table: .customers, id: "cust-1", requestedBy: "hq", at: Date().ISO8601Format()))])
            try await eventually(timeout: 30, "fr acknowledges the request, holding none of it") {
                try fr.store.erasures().contains { $0.erasureID == erasureID }
            }
            // d1 comes back under fr, re-sending its history there.
            #expect(try SyncAgent.adoptParent(store: d1.store, url: fr.url))
            let moved = try running.agent(store: d1.store, parentURL: fr.url, caFile: hub.caFile)
            func ledger() async throws -> ErasureLedgerEntry? { try await hub.tenantStore(for: "acme").erasureLedger().first { $0.erasureID == erasureID } }
            let after = try await hub.catalogStore.tree(of: "acme")
            do {
                try await eventually(timeout: 60, "every replica acknowledges, d1 among them") { try await ledger()?.outstanding(in: after) == [] }
            } catch {
                Issue.record("ledger \(String(describing: try await ledger())); d1's erasures \(try moved.store.erasures())")
                throw error
            }
            #expect(try moved.store.record(table: "customers", id: "cust-1") == nil && moved.store.record(table: "interactions", id: "int-1") == nil)
            #expect(try fr.store.record(table: "customers", id: "cust-1") == nil && fr.store.record(table: "interactions", id: "int-1") == nil)
            #expect(try fr.store.verifyErasure(erasureID))
            let mine = try #require(try moved.store.erasures().first { $0.erasureID == erasureID }, "d1 erased under the request's id")
            #expect(mine.records == 2, "\(mine)")
            // Started again, d1 asks fr what it holds of its changes: the two refused as erased
            // count as held (they were not, and d1 took fr for restored from an older backup).
            await moved.stop()
            let again = try running.agent(store: d1.store, parentURL: fr.url, caFile: hub.caFile)
            try await eventually(timeout: 30, "d1 syncs with fr again") { again.agent.status.lastPullMillis != nil }
            #expect(again.agent.status.parentRestores == 0, "\(again.agent.status)")
            do {
                try await eventually(timeout: 30, "no byte of the customer or the dialogue is left in any file") { try Self.leaks(under: dir.path).isEmpty }
            } catch {
                Issue.record("left: \(try Self.leaks(under: dir.path)); de holds \(try de.store.record(table: "customers", id: "cust-1") != nil) \(try de.store.lineage(recordID: "cust-1").count); ledger \(String(describing: try await ledger()))")
                throw error
            }
            _ = d2
        }
        }
    }

    @Test("""
    A dealer that never held an erased customer writes a dialogue naming it: its country refuses the change as erased, \
    and the dealer erases the dialogue with its log entries and notes the customer, so no byte of it stays in the \
    dealer's files and a later local write naming the customer is refused there; HQ's ledger gets no acknowledgement \
    from it (it is not a replica of the request); started again, the dealer does not take its country for one restored \
    from an older backup (the refused change counts as held there)
    """, .timeLimit(.minutes(5)))
    func refusedAsErasedIsErasedAtTheWriter() async throws {
        let dir = try TempDir()
        try await withRunning { running in
            let (hub, de, d1, d2, _) = try await Self.tree(running, dir: dir, postgres: nil)
            try d1.store.commit([.upsert("customers", id: "cust-1", ["last_name": "Erased", "phone": "+49 30 1"])])
            try await eventually(timeout: 30, "de holds d1's customer") { try de.store.record(table: "customers", id: "cust-1") != nil }
            _ = try d1.store.erase(.customers, id: "cust-1")
            func ledger() async throws -> ErasureLedgerEntry? { try await hub.tenantStore(for: "acme").erasureLedger().first }
            try await eventually(timeout: 30, "de erased it") { try await ledger()?.acknowledgements.map(\.node) == ["de", "de-d1", "hq"] }

            // d2 never held cust-1: it writes a dialogue about it, with a secret in it.
            try d2.store.commit([.upsert("interactions", id: "int-9", ["customer_id": "cust-1", "topic": .string(Self.secrets[0]),
                                                                       "channel": "phone", "urgency": "normal"])])
            try await eventually(timeout: 30, "d2 erases its refused dialogue") {
                try d2.store.record(table: "interactions", id: "int-9") == nil && d2.store.lineage(recordID: "int-9").allSatisfy { $0.change.fields.isEmpty }
            }
            let done = try #require(try d2.store.erasures().first)
            #expect(done.records == 1 && done.subjectID == "int-9", "\(done)")
            #expect(try d2.store.verifyErasure(done.erasureID))
            try await eventually(timeout: 30, "no byte of the dialogue is left in d2's files") {
                try Self.leaks(under: dir.path).isEmpty
            }
            #expect(try de.store.record(table: "interactions", id: "int-9") == nil)
            // A later local write naming the customer is refused at d2 itself, as erased.
            #expect {
                try d2.store.commit([.upsert("interactions", id: "int-10", ["customer_id": "cust-1", "topic": "again", "channel": "phone"])])
            } throws: { error in
                guard case StoreError.rejected(let rejection) = error else { return false }
                return rejection.code == .erased
            }
            try await Task.sleep(for: .seconds(1))
            #expect(try await ledger()?.acknowledgements.map(\.node) == ["de", "de-d1", "hq"], "d2 acknowledged a request it is no replica of")
            // Started again, d2 asks de what it holds of its changes: the one refused as erased
            // counts as held (it did not, and d2 took de for restored from an older backup and
            // re-sent).
            await d2.stop()
            let again = try running.agent(store: d2.store, parentURL: de.url, caFile: hub.caFile)
            try await eventually(timeout: 30, "d2 syncs with de again") { again.agent.status.lastPullMillis != nil }
            #expect(again.agent.status.parentRestores == 0, "\(again.agent.status)")
        }
    }

    /// The rows of a tenant's PostgreSQL schema whose text holds any of `secrets` (every
    /// column of every table, as PostgreSQL renders the row): what a byte search of the
    /// SQLite files is for the hub on PostgreSQL, at the level of rows.
    static func rowsHolding(_ secrets: [String], tenant: TenantID, in endpoint: PostgresEndpoint) async throws -> [String] {
        let schema = PostgresTenantSchema(tenant: tenant).name
        return try await withPostgresClient(endpoint) { client in
            var found: [String] = []
            let tables = try await client.query("SELECT table_name FROM information_schema.tables WHERE table_schema = \(schema) ORDER BY 1").collect()
                .map { try $0.decode(String.self) }
            #expect(tables.count >= 10, "the tenant's tables are found: \(tables)")
            for table in tables {
                for secret in secrets {
                    let rows = try await client.query(PostgresQuery(unsafeSQL: "SELECT count(*) FROM \"\(schema)\".\"\(table)\" t WHERE t::text LIKE $1",
                                                                    binds: { var b = PostgresBindings(); b.append("%\(secret)%"); return b }()))
                        .collect().first.map { try $0.decode(Int64.self) } ?? 0
                    if rows > 0 { found.append("\(table): \(secret) (\(rows) rows)") }
                }
            }
            return found
        }
    }
}

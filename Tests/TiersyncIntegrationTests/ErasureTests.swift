import Foundation
import Testing
import TiersyncAgent
import TiersyncCore
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

    @Test("""
    Erasure requested at a dealer reaches HQ, the country and the other dealer; each acknowledges in HQ's ledger; \
    the dealer that was offline erases on reconnect before pushing its stale edit, which is dropped and counted; a late \
    change pushed afterwards is refused `erased` and counted; no byte of the customer's name or phone is left in any \
    SQLite file or write-ahead log
    """, .timeLimit(.minutes(5)))
    func erasureEverywhere() async throws {
        let dir = try TempDir()
        try await withRunning { running in
            let hub = try await running.hub(directory: dir.path)
            try hub.catalog.createTenant("acme", levels: 3)
            let de = try await running.country(hub: hub, tenant: "acme", node: "de", directory: dir.path)
            let d1 = try await running.agent(enrolling: "de-d1", parent: "de", tenant: "acme", hub: hub, parentURL: de.url, directory: dir.path)
            let d2 = try await running.agent(enrolling: "de-d2", parent: "de", tenant: "acme", hub: hub, parentURL: de.url, directory: dir.path)
            let hq = try hub.stores.store(for: "acme")

            // The customer, sold by d1 and serviced by d2, with a vehicle and a dialogue.
            try d1.store.commit([
                .upsert("customers", id: "cust-1", ["first_name": .string(Self.secrets[0]), "last_name": .string(Self.secrets[1]),
                                                    "phone": .string(Self.secrets[2]), "servicing_dealer": "de-d2"]),
                .upsert("vehicles", id: "veh-1", ["customer_id": "cust-1", "vin": "WVWZZZ1JZXW000001", "kind": "vehicle"]),
                .upsert("interactions", id: "int-1", ["customer_id": "cust-1", "topic": "brakes", "channel": "phone", "urgency": "normal"]),
                .upsert("customers", id: "cust-2", ["last_name": "Keeps"]),
            ])
            try await eventually(timeout: 30, "cust-1 reaches HQ and d2") {
                try hq.record(table: "customers", id: "cust-1") != nil && d2.store.record(table: "customers", id: "cust-1") != nil
                    && hq.record(table: "interactions", id: "int-1") != nil && hq.record(table: "customers", id: "cust-2") != nil
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
            let tree = try await hub.catalog.tree(of: "acme")
            let entry = try #require(try await ledger())
            #expect(entry.replicas(in: tree) == ["de", "de-d1", "de-d2", "hq"])
            #expect(entry.outstanding(in: tree) == ["de-d2"])
            #expect(entry.subjectTable == "customers" && entry.subjectID == "cust-1" && entry.requestedBy == "de-d1")
            #expect(try hq.record(table: "customers", id: "cust-1") == nil && hq.record(table: "interactions", id: "int-1") == nil
                    && hq.record(table: "vehicles", id: "veh-1") == nil)
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

            // Every store still verifies; no byte of the customer is left, with everything running and once stopped.
            for store in [hq, de.store, d1.store, d2Back.store] {
                let done = try #require(try store.erasures().first)
                #expect(try store.verifyErasure(done.erasureID))
            }
            #expect(try Self.leaks(under: dir.path) == [])
        }
        #expect(try Self.leaks(under: dir.path) == [])
    }
}

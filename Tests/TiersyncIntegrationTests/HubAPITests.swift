import Synchronization
import CompressNIO
import Foundation
import NIOCore
import Testing
import Yams
import TiersyncCore
import TiersyncServer
import TiersyncStore
import TiersyncTestSupport

/// A hub over real TLS on a loopback port, with two dealers of one tenant and one node of
/// another, and a raw client to send exact bytes.
struct HubFixture {
    let dir: TempDir
    let hub: RunningHub
    let client: RawClient
    let d1: String, d2: String, other: String

    /// Starts a fixture the caller must `stop()` on every path; prefer `withHubFixture`.
    static func start(limits: HubConfiguration.Limits = .init()) async throws -> HubFixture {
        let dir = try TempDir()
        let hub = try await RunningHub(directory: dir.path, limits: limits)
        let client = RawClient(baseURL: hub.url, caFile: hub.caFile)
        do {
            return try await enrolled(dir: dir, hub: hub, client: client)
        } catch {
            await client.shutdown()
            await hub.stop()
            throw error
        }
    }

    fileprivate static func enrolled(dir: TempDir, hub: RunningHub, client: RawClient) async throws -> HubFixture {
        HubFixture(dir: dir, hub: hub, client: client,
                   d1: try await hub.enroll(tenant: "acme", node: "d1", client: client),
                   d2: try await hub.enroll(tenant: "acme", node: "d2", client: client),
                   other: try await hub.enroll(tenant: "globex", node: "g1", client: client))
    }

    func stop() async {
        await client.shutdown()
        await hub.stop()
    }

    /// The SQLite tenant store (tests of that engine only).
    func acme() throws -> NodeStore { try hub.stores.store(for: "acme") }

    /// The tenant's store on whichever engine the hub runs.
    func acmeStore() async throws -> any HubTenantStore { try await hub.tenantStore(for: "acme") }

    /// Ids of acme's live records of `table`, in order.
    func liveIDs(_ table: String) async throws -> [String] { try await acmeStore().liveRecords(inTable: table).map(\.id) }

    /// A field of one of acme's live records.
    func value(_ table: String, _ id: String, _ field: String) async throws -> FieldValue? {
        try await acmeStore().liveRecords(inTable: table).first { $0.id == id }?.values[field]
    }

    func push(_ changes: [Change], as credential: String, tenant: TenantID? = nil) async throws -> RawClient.Reply {
        try await client.send("POST", "/v1/push", json: PushRequest(tenant: tenant, through: changes.last.map(\.originSeq) ?? 0, changes: changes),
                              credential: credential)
    }
}

/// Runs `body` with a fresh `HubFixture`; its client is shut down and its hub stopped when
/// `body` returns or throws.
func withHubFixture<T: Sendable>(engine: StorageEngine = .sqlite, limits: HubConfiguration.Limits = .init(),
                                 _ body: (HubFixture) async throws -> T) async throws -> T {
    let dir = try TempDir()
    return try await withRunningHub(engine: engine, directory: dir.path, limits: limits) { hub in
        try await withRawClient(hub) { client in
            try await body(try await HubFixture.enrolled(dir: dir, hub: hub, client: client))
        }
    }
}

func customer(_ origin: NodeID, _ seq: Int64, _ id: String, _ fields: [String: FieldValue]) -> Change {
    Change(origin: origin, originSeq: seq, hlc: HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: UInt16(seq)),
           table: "customers", recordID: id, op: .upsert, fields: fields)
}

@Suite("Hub API over TLS", .serialized)
struct HubAPITests {
    enum TenantFileDamage: String, CaseIterable, Sendable { case garbage, empty, missing, otherTenants, nodesStore }

    @Test("a tenant whose database file cannot be used gets 503 tenant_store_unusable with Retry-After, not 500 (garbage), nor an empty tenant made afresh (an empty or missing file), nor another tenant's data (its file copied in), nor a node's store; the file is named in the log, not to the caller; the other tenants and /readyz go on",
          arguments: TenantFileDamage.allCases)
    func unusableTenantStore(damage: TenantFileDamage) async throws {
        let logs = CapturedLogs()
        let dir = try TempDir()
        let (acme, globex, path, acmePath) = try await withRunningHub(directory: dir.path) { hub in
            try await withRawClient(hub) { client in
                (try await hub.enroll(tenant: "acme", node: "d1", client: client), try await hub.enroll(tenant: "globex", node: "g1", client: client),
                 hub.catalog.tenantDatabasePath("globex"), hub.catalog.tenantDatabasePath("acme"))
            }
        }
        // Damaged while the hub was down; the hub starts again on the directory.
        for suffix in ["-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
        switch damage {
        case .garbage: try Data(repeating: 0x5A, count: 8_192).write(to: URL(fileURLWithPath: path))
        case .empty: try Data().write(to: URL(fileURLWithPath: path))
        case .missing: try FileManager.default.removeItem(atPath: path)
        case .otherTenants:
            try FileManager.default.removeItem(atPath: path)
            try FileManager.default.copyItem(atPath: acmePath, toPath: path)
        case .nodesStore:
            // A backup of the tenant's own dealer, restored in the hub's place.
            try FileManager.default.removeItem(atPath: path)
            try NodeStore(path: path).setIdentity(NodeIdentity(tenant: "globex", node: "g1", parent: "hq"))
        }
        try await withRunning { r in
            let hub = try await r.hub(directory: dir.path, logger: logs.logger(label: "tiersync.hub"))
            let client = r.client(hub)
            func push(_ change: Change, as credential: String) async throws -> RawClient.Reply {
                try await client.send("POST", "/v1/push", json: PushRequest(through: change.originSeq, changes: [change]), credential: credential)
            }
            let refused = try await push(customer("g1", 1, "g-c1", ["owning_dealer": "g1", "last_name": "Gale"]), as: globex)
            #expect(refused.status == 503, "\(refused.text)")
            #expect(refused.text.contains("tenant_store_unusable"), "\(refused.text)")
            #expect(refused.headers["retry-after"] == "60")
            #expect(!refused.text.contains(path) && !refused.text.contains(dir.path), "the answer names the hub's files: \(refused.text)")
            #expect(logs.all.contains { $0.message == "tenant store unusable" && $0.metadata.contains(path) }, "the log does not name the file")
            #expect(try await client.send("GET", "/v1/pull?cursor=0", credential: globex).status == 503)
            let applied = try await push(customer("d1", 1, "a-c1", ["owning_dealer": "d1", "last_name": "Ames"]), as: acme)
            #expect(applied.status == 200, "\(applied.text)")
            #expect(try await client.send("GET", "/readyz").status == 200)
        }
    }

    @Test("an erasure request without its subject, and an acknowledgement without its time or with a digest that is not one, are refused invalid_change (they stood in HQ's ledger as outstanding requests and as proof)",
          arguments: StorageEngine.testable)
    func malformedErasureRecords(engine: StorageEngine) async throws {
        try await withHubFixture(engine: engine) { f in
            let now = WallClock.nowMillis()
            func change(_ seq: Int64, _ table: String, _ id: String, _ fields: [String: FieldValue]) -> Change {
                Change(origin: "d1", originSeq: seq, hlc: HLCTimestamp(wallMillis: now, counter: UInt16(seq)), table: table, recordID: id, op: .upsert, fields: fields)
            }
            let digest = String(repeating: "0a", count: 32)
            let reply = try await f.push([
                change(1, "erasures", "era-bad", ["requested_by": "d1"]),
                change(2, "erasure_acks", "era-x@d1", ["erasure_id": "era-x", "node": "d1", "records": 0, "digest": "x"]),
                change(3, "erasure_acks", "era-y@d1", ["erasure_id": "era-y", "node": "d1", "digest": .string(digest)]),
                change(4, "erasure_acks", "era-z@d1", ["erasure_id": "era-z", "node": "d1", "acknowledged_at": "2026-12-07T10:00:00Z",
                                                       "digest": .string(digest.uppercased())]),
                change(5, "erasure_acks", "era-ok@d1", ["erasure_id": "era-ok", "node": "d1", "acknowledged_at": "2026-12-07T10:00:00Z",
                                                        "digest": .string(digest)]),
            ], as: f.d1)
            let answer = try reply.decode(PushResponse.self)
            #expect(reply.status == 422 && answer.applied == 1 && answer.rejected.map(\.code) == Array(repeating: .invalidChange, count: 4), "\(reply.text)")
            #expect(answer.rejected.first?.message.contains("names no subject") == true, "\(reply.text)")
            let requests = try await f.liveIDs("erasures"), acks = try await f.liveIDs("erasure_acks")
            #expect(requests.isEmpty && acks == ["era-ok@d1"])
        }
    }

    @Test("""
        a dealer's new dialogue naming a customer erased at the hub, whom it never held (its sibling's), is refused `erased`, \
        final and counted: its scope is judged on the dialogue it writes, not on the erased customer (refused `forbidden`, \
        it was retried for ever and its personal data kept)
        """, arguments: StorageEngine.testable)
    func linkToErasedRecordJudgedOnItsOwnRecord(engine: StorageEngine) async throws {
        try await withHubFixture(engine: engine) { f in
            let now = WallClock.nowMillis()
            #expect(try await f.push([customer("d1", 1, "c-9", ["owning_dealer": "d1", "last_name": "Gone"])], as: f.d1).status == 200)
            let marker = Change(origin: "d1", originSeq: 2, hlc: HLCTimestamp(wallMillis: now, counter: 5), table: "erasures", recordID: "era-c9",
                                op: .upsert, fields: ["subject_table": "customers", "subject_id": "c-9", "requested_by": "d1",
                                                      "requested_at": .string(ISO8601DateFormatter().string(from: Date()))])
            let erased = try await f.push([marker], as: f.d1)
            #expect(try erased.decode(PushResponse.self).applied == 1, "\(erased.text)")
            #expect(try await f.liveIDs("customers").contains("c-9") == false)

            let dialogue = Change(origin: "d2", originSeq: 1, hlc: HLCTimestamp(wallMillis: now, counter: 9), table: "interactions", recordID: "int-d2",
                                  op: .upsert, fields: ["customer_id": "c-9", "summary": "about the erased customer", "originating_node": "d2"])
            let reply = try await f.push([dialogue], as: f.d2)
            let answer = try reply.decode(PushResponse.self)
            #expect(answer.applied == 0 && answer.rejected.map(\.code) == [.erased], "\(reply.text)")
            #expect(answer.rejected.first?.message.contains("interactions/int-d2 names customers/c-9, which was erased") == true, "\(reply.text)")
            let again = try await f.push([dialogue], as: f.d2)
            #expect(try again.decode(PushResponse.self).duplicates == 1, "final: \(again.text)")
            #expect(try await f.liveIDs("interactions").isEmpty)
            // A dialogue of another node's record linking to it is still judged by that record's scope.
            let foreign = Change(origin: "d2", originSeq: 2, hlc: HLCTimestamp(wallMillis: now, counter: 10), table: "interactions", recordID: "int-d1",
                                 op: .upsert, fields: ["customer_id": "c-9", "originating_node": "d1"])
            let refused = try await f.push([foreign], as: f.d2)
            #expect(try refused.decode(PushResponse.self).rejected.map(\.code) == [.forbidden], "\(refused.text)")
        }
    }

    @Test("push, then pull at the other dealer; bad input in a batch is quarantined and blocks nothing", arguments: StorageEngine.testable)
    func pushPullAndPartialBatch(engine: StorageEngine) async throws {
        try await withHubFixture(engine: engine) { f in
            let shared: [String: FieldValue] = ["owning_dealer": "d1", "servicing_dealer": "d2"]
            let ok = try await f.push([customer("d1", 1, "c-1", shared.merging(["last_name": "Meyer"]) { a, _ in a })], as: f.d1)
            #expect(ok.status == 200)
            #expect(try ok.decode(PushResponse.self).applied == 1)

            // One batch: valid, unknown table, unknown field, wrong type, another node's change, valid.
            var cars = customer("d1", 3, "x-1", ["model": "A"]); cars.table = "cars"
            let batch = [
                customer("d1", 2, "c-2", shared),
                cars,
                customer("d1", 4, "c-3", ["shoe_size": 44]),
                customer("d1", 5, "c-4", ["key_account": "yes"]),
                customer("d2", 1, "c-5", ["owning_dealer": "d2"]),
                customer("d1", 6, "c-6", shared),
            ]
            let mixed = try await f.push(batch, as: f.d1)
            #expect(mixed.status == 422)
            let report = try mixed.decode(PushResponse.self)
            #expect(report.applied == 2)
            #expect(report.acknowledgedThrough == 6)
            #expect(report.rejected.map(\.code) == [.unknownTable, .unknownField, .wrongType, .forbidden])
            #expect(report.rejected[0].message.contains("unknown table 'cars'"))
            #expect(report.rejected[1].message.contains("unknown field 'shoe_size'"))
            #expect(report.rejected[2].message.contains("'customers.key_account'") && report.rejected[2].message.contains("boolean"))
            #expect(report.rejected[3].message.contains("claims origin 'd2', which is not node 'd1' or below it"))

            // Quarantined with reasons, visible to an admin; the valid ones are stored.
            let quarantined = try await f.acmeStore().quarantinedChanges(limit: 100)
            // Another node's change is refused before the store sees it: nothing of it is kept
            // (it could otherwise shadow d2's real change 1).
            #expect(quarantined.map(\.originSeq) == [3, 4, 5])
            #expect(try await f.liveIDs("customers") == ["c-1", "c-2", "c-6"])

            // The next batch goes through, and a retried batch is not applied twice.
            #expect(try await f.push([customer("d1", 7, "c-7", shared)], as: f.d1).status == 200)
            // A retried batch is not applied twice; refused changes are judged again (a newer
            // schema or a granted scope may accept them) and refused again, not duplicated.
            let retry = try await f.push(batch, as: f.d1)
            let retried = try retry.decode(PushResponse.self)
            #expect(retried.duplicates == 2)
            #expect(retried.applied == 0)
            #expect(retried.rejected.map(\.code) == [.unknownTable, .unknownField, .wrongType, .forbidden])
            #expect(try await f.acmeStore().quarantinedChanges(limit: 100).count == 3)

            // d2 sees the records routed to it, and only those.
            let pull = try await f.client.send("GET", "/v1/pull?cursor=0", credential: f.d2)
            #expect(pull.status == 200)
            #expect(Set(try pull.decode(PullResponse.self).changes.map(\.recordID)) == ["c-1", "c-2", "c-6", "c-7"])
        }
    }

    @Test("malformed bodies get 400 naming the problem; nothing accepted before is lost", arguments: StorageEngine.testable)
    func malformed(engine: StorageEngine) async throws {
        try await withHubFixture(engine: engine) { f in
            #expect(try await f.push([customer("d1", 1, "c-1", ["last_name": "Kept", "owning_dealer": "d1"])], as: f.d1).status == 200)

            let notJSON = try await f.client.send("POST", "/v1/push", body: Data("{not json".utf8), credential: f.d1)
            #expect(notJSON.status == 400)
            #expect(notJSON.error?.code == "malformed_json")
            #expect(notJSON.error?.message == "request body is not valid JSON")

            let missing = try await f.client.send("POST", "/v1/push",
                                                  body: Data(#"{"through": 1, "changes": [{"origin": "d1", "seq": 2, "table": "customers", "id": "c-2", "op": "upsert"}]}"#.utf8),
                                                  credential: f.d1)
            #expect(missing.status == 400)
            #expect(missing.error?.message == "missing field 'hlc' in 'changes[0]'")

            let badType = try await f.client.send("POST", "/v1/push", body: Data(#"{"through": "one", "changes": []}"#.utf8), credential: f.d1)
            #expect(badType.status == 400)
            #expect(badType.error?.message.contains("'through' has the wrong type") == true)

            let badQuery = try await f.client.send("GET", "/v1/pull?cursor=-5", credential: f.d1)
            #expect(badQuery.status == 400)
            #expect(badQuery.error?.message.contains("'cursor' must be an integer") == true)

            #expect(try await f.liveIDs("customers") == ["c-1"])
        }
    }

    @Test("oversized requests get 413 with the limit; compressed bodies are checked after decompression", arguments: StorageEngine.testable)
    func sizeLimits(engine: StorageEngine) async throws {
        var limits = HubConfiguration.Limits()
        limits.maxChangesPerPush = 20
        limits.maxRequestBytes = 64 * 1024
        limits.maxDecompressedBytes = 256 * 1024
        try await withHubFixture(engine: engine, limits: limits) { f in
            #expect(try await f.push([customer("d1", 1, "c-1", ["last_name": "Kept", "owning_dealer": "d1"])], as: f.d1).status == 200)

            let many = (2...22).map { customer("d1", Int64($0), "c-\($0)", ["last_name": "x"]) }
            let tooMany = try await f.push(many, as: f.d1)
            #expect(tooMany.status == 413)
            #expect(tooMany.error?.message == "push carries 21 changes; the limit is 20 per request")

            let big = try await f.push([customer("d1", 2, "c-2", ["street": .string(String(repeating: "a", count: 300)), "owning_dealer": "d1"])] +
                                           (3...15).map { customer("d1", Int64($0), "c-\($0)", ["street": .string(String(repeating: "b", count: 300)), "city": .string(String(repeating: "z", count: 190)), "owning_dealer": "d1"]) }, as: f.d1)
            #expect(big.status == 200, "a batch within the limits passes")

            let huge = Data(repeating: UInt8(ascii: " "), count: 100 * 1024)
            let tooBig = try await f.client.send("POST", "/v1/push", body: huge, credential: f.d1)
            #expect(tooBig.status == 413)
            #expect(tooBig.error?.message.contains("exceeds 65536 bytes") == true)

            var bomb = ByteBuffer(bytes: Array(repeating: UInt8(ascii: " "), count: 1024 * 1024))
            let gz = try bomb.compress(with: .gzip)
            let bombed = try await f.client.send("POST", "/v1/push", body: Data(gz.readableBytesView), credential: f.d1,
                                                 headers: [("Content-Encoding", "gzip")])
            #expect(bombed.status == 413)
            #expect(bombed.error?.message.contains("once decompressed") == true)

            #expect(try await f.liveIDs("customers").count == 15)
        }
    }

    @Test("tenants and nodes stay in their scope", arguments: StorageEngine.testable)
    func isolation(engine: StorageEngine) async throws {
        try await withHubFixture(engine: engine) { f in
            #expect(try await f.push([customer("d1", 1, "c-1", ["last_name": "Private", "owning_dealer": "d1"])], as: f.d1).status == 200)
            #expect(try await f.push([customer("d2", 1, "c-9", ["last_name": "Other dealer", "owning_dealer": "d2"])], as: f.d2).status == 200)

            // A dealer cannot edit a record routed to another dealer, nor see it.
            let poach = try await f.push([customer("d2", 2, "c-1", ["last_name": "Mine now"])], as: f.d2)
            #expect(poach.status == 422)
            #expect(try poach.decode(PushResponse.self).rejected.first?.message == "record customers/c-1 is outside the scope of node 'd2'")
            let d2pull = try await f.client.send("GET", "/v1/pull", credential: f.d2)
            #expect(try d2pull.decode(PullResponse.self).changes.isEmpty)

            // Another tenant's credential names the wrong tenant: refused whole.
            let wrongTenant = try await f.push([customer("d1", 2, "c-2", [:])], as: f.d1, tenant: "globex")
            #expect(wrongTenant.status == 403)
            #expect(wrongTenant.error?.message == "this credential belongs to tenant 'acme', not 'globex'")

            // The other tenant writes the same record id into its own space and sees nothing of acme.
            #expect(try await f.push([customer("g1", 1, "c-1", ["last_name": "Globex", "owning_dealer": "g1"])], as: f.other).status == 200)
            let otherPull = try await f.client.send("GET", "/v1/pull?exclude_own=false", credential: f.other)
            #expect(try otherPull.decode(PullResponse.self).changes.map(\.fields["last_name"]) == ["Globex"])
            #expect(try await f.value("customers", "c-1", "last_name") == "Private")

            // No or unknown credentials.
            let anonymous = try await f.client.send("GET", "/v1/pull")
            #expect(anonymous.status == 401)
            #expect(anonymous.error?.message.contains("missing 'Authorization: Bearer") == true)
            #expect(try await f.client.send("GET", "/v1/pull", credential: "tsc_forged").status == 401)
            // An empty Bearer credential is said to be empty (it was told to use the Bearer scheme, which it had);
            // the scheme's case does not matter, another scheme is refused.
            let empty = try await f.client.send("GET", "/v1/pull", headers: [("Authorization", "Bearer ")])
            #expect(empty.status == 401 && empty.error?.message.contains("the Bearer credential is empty") == true, "\(empty.text)")
            let d1 = try await f.client.send("GET", "/v1/pull", headers: [("Authorization", "bearer \(f.d1)")])
            #expect(d1.status == 200, "\(d1.text)")
            let basic = try await f.client.send("GET", "/v1/pull", headers: [("Authorization", "Basic \(f.d1)")])
            #expect(basic.status == 401 && basic.error?.message.contains("must use the Bearer scheme") == true, "\(basic.text)")
        }
    }

    @Test("""
        a node's reports on itself (governance status, KPI values, erasure proof) are written only by that node, under \
        the id naming it: another dealer taking the id over about itself, or writing about the node, is refused
        """, arguments: StorageEngine.testable)
    func selfReportsBelongToTheirNode(engine: StorageEngine) async throws {
        try await withHubFixture(engine: engine) { f in
            func change(_ origin: NodeID, _ seq: Int64, _ table: String, _ id: String, _ fields: [String: FieldValue]) -> Change {
                Change(origin: origin, originSeq: seq, hlc: HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: UInt16(seq)),
                       table: table, recordID: id, op: .upsert, fields: fields)
            }
            let forged: [(table: String, id: String, fields: [String: FieldValue])] = [
                // d2's id, about d1 (its own route): the takeover the review found.
                ("governance_status", "d2", ["node": "d1", "release": 999, "state": "refused", "message": "forged by d1"]),
                ("kpi_snapshots", "d2:service-level-phone:month:2026-12-01", ["node": "d1", "kpi": "service-level-phone", "numerator": 1, "denominator": 1]),
                ("erasure_acks", "era-1@d2", ["node": "d1", "erasure_id": "era-1", "records": 0]),
            ]
            for (seq, forgery) in forged.enumerated() {
                let reply = try await f.push([change("d1", Int64(seq + 1), forgery.table, forgery.id, forgery.fields)], as: f.d1)
                #expect(reply.status == 422, "\(forgery.table)/\(forgery.id)")
                let message = try reply.decode(PushResponse.self).rejected.first?.message ?? ""
                #expect(message.contains("is a node's report on itself") && message.contains("node 'd1''s own"), "\(message)")
                #expect(try await f.value(forgery.table, forgery.id, "node") == nil, "nothing stored")
            }
            // Its own id, but about d2 (routed to d2: outside d1's scope).
            let about = try await f.push([change("d1", 4, "governance_status", "d1", ["node": "d2", "release": 999, "state": "refused"])], as: f.d1)
            let aboutStored = try await f.value("governance_status", "d1", "node")
            #expect(about.status == 422 && aboutStored == nil)
            // Each writes its own, about itself: stored.
            for (node, credential) in [(NodeID("d1"), f.d1), (NodeID("d2"), f.d2)] {
                let own = try await f.push([change(node, 10, "governance_status", node.rawValue, ["node": .string(node.rawValue), "release": 1, "state": "applied"]),
                                            change(node, 11, "kpi_snapshots", "\(node):service-level-phone:month:2026-12-01",
                                                   ["node": .string(node.rawValue), "kpi": "service-level-phone", "numerator": 1, "denominator": 2]),
                                            change(node, 12, "erasure_acks", "era-1@\(node)", ["node": .string(node.rawValue), "erasure_id": "era-1", "records": 0,
                                                                                              "acknowledged_at": "2026-12-07T10:00:00Z",
                                                                                              "digest": .string(String(repeating: "0a", count: 32))])],
                                           as: credential)
                #expect(own.status == 200, "\(node): \(own)")
                #expect(try await f.value("governance_status", node.rawValue, "state") == "applied")
            }
        }
    }

    @Test("""
        a push whose changes name tables, records and fields longer than any, or carry more than a change can, is refused \
        with an answer, quarantine rows and log lines no larger than a valid change's: nothing it sent is repeated whole
        """, arguments: StorageEngine.testable)
    func hostileStringsNotAmplified(engine: StorageEngine) async throws {
        try await withHubFixture(engine: engine) { f in
            let long = String(repeating: "t", count: 6_300)
            var changes: [Change] = []
            for seq in 1...200 {
                changes.append(Change(origin: "d1", originSeq: Int64(seq), hlc: HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: UInt16(seq)),
                                      table: long, recordID: "r-\(seq)", op: .upsert, fields: ["x": .string(long)]))
            }
            let bigValue = String(repeating: "v", count: 300_000)
            changes.append(Change(origin: "d1", originSeq: 201, hlc: HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: 0),
                                  table: "no_such_table", recordID: "big", op: .upsert, fields: ["x": .string(bigValue)]))
            changes.append(Change(origin: "d1", originSeq: 202, hlc: HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: 1),
                                  table: "customers", recordID: "c-1", op: .upsert, fields: [.init(long): "x", "owning_dealer": "d1"]))
            let sent = try JSONEncoder().encode(PushRequest(through: 202, changes: changes)).count
            let reply = try await f.push(changes, as: f.d1)
            #expect(reply.status == 422)
            // Before: each refusal repeated the table name twice (~2.5 MB for these 200).
            #expect(reply.body.count < 200 * 600 + 10_000, "\(reply.body.count) bytes answered for \(sent) sent")
            let rejected = try reply.decode(PushResponse.self).rejected
            #expect(rejected.count == 202)
            let first = try #require(rejected.first)
            #expect(first.code == .invalidChange && first.message.contains("is longer than any table's (at most 64 bytes)")
                    && first.table.hasSuffix("…(6300 bytes)") && first.table.utf8.count < 100, "\(first)")
            #expect(rejected.last?.code == .unknownField && rejected.last!.message.contains("…(6300 bytes)"), "\(String(describing: rejected.last))")
            let kept = try await f.acmeStore().quarantinedChanges(limit: 1_000)
            #expect(kept.count == 202)
            // Kept as identities with clipped names, not what they carried: 64 MB a request before.
            let stored = kept.reduce(0) { $0 + $1.change.utf8.count + $1.reason.utf8.count }
            #expect(stored < 202 * 1_500 + 300_000, "\(stored) bytes kept")
            let big = try #require(kept.first { $0.originSeq == 201 })
            #expect(big.change.utf8.count < 1_000 && big.change.contains("no_such_table"), "\(big.change.prefix(300))")
        }
    }

    @Test("the README's example batch (fixtures/) stores the good change and names the bad one", arguments: StorageEngine.testable)
    func fixtureBatch(engine: StorageEngine) async throws {
        try await withHubFixture(engine: engine) { f in
            let credential = try await f.hub.enroll(tenant: "acme", node: "dealer-1", client: f.client)
            let body = try Data(contentsOf: URL(fileURLWithPath: repositoryRoot() + "/fixtures/push-with-one-bad-change.json"))
            let reply = try await f.client.send("POST", "/v1/push", body: body, credential: credential)
            #expect(reply.status == 422)
            let report = try reply.decode(PushResponse.self)
            #expect(report.applied == 1)
            #expect(report.rejected.map(\.recordID) == ["cust-1002"])
            #expect(report.rejected.first?.message == "field 'customers.key_account' of record 'cust-1002' must be boolean, got string \"yes\"")
            #expect(try await f.value("customers", "cust-1001", "last_name") == "Schmidt")
        }
    }

    @Test("enrollment tokens work once", arguments: StorageEngine.testable)
    func enrollment(engine: StorageEngine) async throws {
        try await withHubFixture(engine: engine) { f in
            let token = try await f.hub.catalogStore.issueEnrollmentToken(tenant: "acme", node: "d3")
            let first = try await f.client.send("POST", "/v1/enroll", json: EnrollRequest(token: token))
            #expect(first.status == 201)
            let credential = try first.decode(EnrollResponse.self).credential
            let whoami = try await f.client.send("GET", "/v1/whoami", credential: credential)
            #expect(try whoami.decode(WhoAmIResponse.self).node == "d3")
            let reused = try await f.client.send("POST", "/v1/enroll", json: EnrollRequest(token: token))
            #expect(reused.status == 409)
            #expect(reused.error?.code == "token_used")
            #expect(try await f.client.send("POST", "/v1/enroll", json: EnrollRequest(token: "tse_guess")).status == 401)
        }
    }

    @Test("""
    changes a node sent that were refused above this hub and dropped here are offered to that node alone: named by its \
    pulls' Tiersync-Refusals header and listed by GET /v1/refusals after the number it took; bad numbers get 400
    """)
    func refusalsPassedDownToTheirSenderOnly() async throws {
        try await withHubFixture { f in
            let refused = customer("d1", 1, "c-x", ["last_name": "Collides", "owning_dealer": "d1"])
            #expect(try await f.push([refused, customer("d1", 2, "c-1", ["last_name": "Fine", "owning_dealer": "d1"])], as: f.d1).status == 200)
            let before = try await f.client.send("GET", "/v1/pull", credential: f.d1)
            #expect(before.status == 200 && before.headers["tiersync-refusals"] == nil, "\(before.headers)")
            let head = try before.decode(PullResponse.self).nextCursor
            // d1 waits for news; the notice kept meanwhile answers it at once.
            let started = ContinuousClock.now
            async let waiting = f.client.send("GET", "/v1/pull?cursor=\(head)&wait=20", credential: f.d1)
            try await Task.sleep(for: .milliseconds(300))
            // As a country's store does when its parent refuses a change it relayed (a hub at
            // the root has no parent: its store is driven by hand here), then wakes its pulls.
            #expect(try f.acme().dropRefusedRelays([(refused, RejectedChange(change: refused, rejection: ChangeRejection(
                .forbidden, "record customers/c-x is outside the scope of node 'd1'", outsideScopeOf: "d1")))]) == 1)
            await f.hub.server.notifyChanges(for: "acme")
            let woken = try await waiting
            #expect(ContinuousClock.now - started < .seconds(10), "the pull answered for the notice, not at its 20 s timeout")
            #expect(woken.headers["tiersync-refusals"] == "1", "\(woken.headers)")
            #expect(try woken.decode(PullResponse.self).changes.isEmpty)

            let pull = try await f.client.send("GET", "/v1/pull", credential: f.d1)
            let newest = try #require(pull.headers["tiersync-refusals"].flatMap { Int64($0) }, "\(pull.headers)")
            let listed = try await f.client.send("GET", "/v1/refusals", credential: f.d1)
            #expect(listed.status == 200, "\(listed.text)")
            let notices = try listed.decode(UpstreamRefusalsResponse.self)
            #expect(notices.refusals.map(\.id) == [newest] && !notices.more)
            #expect(notices.refusals.first?.refusal.origin == "d1" && notices.refusals.first?.refusal.originSeq == 1
                    && notices.refusals.first?.refusal.recordID == "c-x" && notices.refusals.first?.refusal.code == .forbidden)
            #expect(try await f.client.send("GET", "/v1/refusals?after=\(newest)", credential: f.d1).decode(UpstreamRefusalsResponse.self).refusals.isEmpty)

            // Another node, of this tenant or another, is offered nothing.
            let sibling = try await f.client.send("GET", "/v1/pull", credential: f.d2)
            #expect(sibling.headers["tiersync-refusals"] == nil)
            #expect(try await f.client.send("GET", "/v1/refusals", credential: f.d2).decode(UpstreamRefusalsResponse.self).refusals.isEmpty)
            #expect(try await f.client.send("GET", "/v1/refusals", credential: f.other).decode(UpstreamRefusalsResponse.self).refusals.isEmpty)

            // A caller that says what it took is answered at once only for a newer notice.
            let newer = try await f.client.send("GET", "/v1/pull?cursor=\(head)&wait=20&refusals_after=0", credential: f.d1)
            #expect(newer.status == 200 && newer.headers["tiersync-refusals"] == "\(newest)")
            let waited = ContinuousClock.now
            let none = try await f.client.send("GET", "/v1/pull?cursor=\(head)&wait=1&refusals_after=\(newest)", credential: f.d1)
            #expect(none.status == 200 && ContinuousClock.now - waited >= .milliseconds(900), "nothing newer: it waits")
            #expect(try await f.client.send("GET", "/v1/pull?refusals_after=-1", credential: f.d1).error?.code == "invalid_parameter")

            for query in ["after=-1", "after=x", "limit=0", "limit=501", "after=99999999999999999999"] {
                let bad = try await f.client.send("GET", "/v1/refusals?\(query)", credential: f.d1)
                #expect(bad.status == 400 && bad.error?.code == "invalid_parameter", "\(query): \(bad.status) \(bad.text)")
            }
            #expect(try await f.client.send("GET", "/v1/refusals").status == 401)
        }
    }

    @Test("a long-polling pull wakes as soon as a change for it arrives", arguments: StorageEngine.testable)
    func longPoll(engine: StorageEngine) async throws {
        try await withHubFixture(engine: engine) { f in
            let started = ContinuousClock.now
            async let waiting = f.client.send("GET", "/v1/pull?cursor=0&wait=20", credential: f.d2)
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await f.push([customer("d1", 1, "lead-1", ["owning_dealer": "d1", "servicing_dealer": "d2"])], as: f.d1).status == 200)
            let reply = try await waiting
            let elapsed = ContinuousClock.now - started
            #expect(try reply.decode(PullResponse.self).changes.map(\.recordID) == ["lead-1"])
            #expect(elapsed < .seconds(10), "the pull returned because of the push, not its 20 s timeout")
        }
    }

    @Test("a long-poll moves past a full page of the caller's own changes and wakes for the next change for it")
    func longPollPastOwnChanges() async throws {
        try await withHubFixture { f in
            let own = (1...1_200).map { customer("d1", Int64($0), "c-\($0)", ["owning_dealer": "d1"]) }
            for chunk in stride(from: 0, to: own.count, by: 400) {
                #expect(try await f.push(Array(own[chunk..<chunk + 400]), as: f.d1).status == 200)
            }
            let started = ContinuousClock.now
            async let waiting = f.client.send("GET", "/v1/pull?cursor=0&limit=1000&wait=20", credential: f.d1)
            try await Task.sleep(for: .milliseconds(300))
            try f.acme().commit([.upsert("leads", id: "lead-1", ["source_node": "hq", "fulfilling_node": "d1"])])
            let page = try await waiting.decode(PullResponse.self)
            #expect(page.changes.map(\.recordID) == ["lead-1"])
            #expect(ContinuousClock.now - started < .seconds(10), "woken by the lead, not by the 20 s timeout")
        }
    }

    @Test("the OpenAPI document lists exactly the routes the hub serves")
    func openAPIMatchesRoutes() async throws {
        let text = try String(contentsOfFile: repositoryRoot() + "/openapi.yaml", encoding: .utf8)
        var documented: Set<String> = []
        var inPaths = false, path = ""
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if !line.hasPrefix(" ") && !line.isEmpty { inPaths = line == "paths:" ; continue }
            guard inPaths else { continue }
            if line.hasPrefix("  /"), line.hasSuffix(":"), !line.hasPrefix("   ") {
                path = String(line.dropFirst(2).dropLast())
            } else if line.hasPrefix("    "), !line.hasPrefix("     "), line.hasSuffix(":") {
                let method = line.trimmingCharacters(in: .whitespaces).dropLast().uppercased()
                if ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(method) { documented.insert("\(method) \(path)") }
            }
        }
        let served = Set(HubRoutes.all.map { "\($0.method) \($0.path)" } + AdminRoutes.all.map { "\($0.method) \($0.path)" })
        #expect(documented == served)

        // Read as YAML, as a client generator reads it: every operation has responses, and
        // every `$ref` names something that is there (two components indented under a path
        // left /v1/health without responses and 61 references dangling; helper 108).
        let document = try #require(try Yams.load(yaml: text) as? [String: Any])
        let paths = try #require(document["paths"] as? [String: Any])
        var operations = 0
        for (path, item) in paths {
            let methods = try #require(item as? [String: Any], "\(path)")
            for (method, operation) in methods where ["get", "post", "put", "patch", "delete"].contains(method) {
                let responses = (operation as? [String: Any])?["responses"] as? [String: Any]
                #expect(responses?.isEmpty == false, "\(method.uppercased()) \(path) has no responses")
                operations += 1
            }
        }
        #expect(operations == served.count)
        func resolve(_ reference: String) -> Any? {
            guard reference.hasPrefix("#/") else { return nil }
            var node: Any? = document
            for key in reference.dropFirst(2).split(separator: "/") { node = (node as? [String: Any])?[String(key).replacingOccurrences(of: "~1", with: "/")] }
            return node
        }
        var references: [String] = []
        func collect(_ node: Any) {
            if let map = node as? [String: Any] {
                if let reference = map["$ref"] as? String { references.append(reference) }
                for value in map.values { collect(value) }
            } else if let list = node as? [Any] {
                for value in list { collect(value) }
            }
        }
        collect(document)
        #expect(!references.isEmpty)
        for reference in Set(references) { #expect(resolve(reference) != nil, "\(reference) names nothing") }

        // And each documented route answers on a live hub (not 404 / 405).
        try await withHubFixture { f in
            for route in HubRoutes.all {
                let reply = try await f.client.send(route.method, route.path, body: route.method == "POST" ? Data("{}".utf8) : nil, credential: f.d1)
                #expect(![404, 405].contains(reply.status), "\(route.method) \(route.path) answered \(reply.status)")
            }
            // The admin routes answer too; a node's credential is not an administrator's.
            for route in AdminRoutes.all {
                let path = route.path.replacingOccurrences(of: "{node}", with: "d1").replacingOccurrences(of: "{id}", with: "1")
                    .replacingOccurrences(of: "{name}", with: "someone")
                let reply = try await f.client.send(route.method, path, body: route.method == "POST" ? Data("{}".utf8) : nil, credential: f.d1)
                #expect(![404, 405].contains(reply.status), "\(route.method) \(path) answered \(reply.status)")
                if route.role != nil { #expect(reply.status == 401, "\(route.method) \(path) with a node's credential: \(reply.status)") }
            }
        }
    }
}

@Suite("Checkpoints")
struct CheckpointTests {
    @Test("a serving hub copies a tenant's write-ahead log into its database file by itself, well before the writer's backstop")
    func hubCheckpoints() async throws {
        try await withHubFixture { f in
            let path = try f.acme().path
            func size() throws -> Int { try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int }
            try await Task.sleep(for: .milliseconds(700))  // what enrolling wrote is copied
            let before = try size()
            let changes = (1...300).map { customer("d1", Int64($0), "c-\($0)", ["owning_dealer": "d1", "last_name": .string(String(repeating: "m", count: 190)),
                                                                                "street": .string(String(repeating: "s", count: 290))]) }
            let reply = try await f.push(changes, as: f.d1)
            #expect(reply.status == 200, "\(reply.text)")
            // 300 changes are ~100 pages of log: far below the writer's own threshold, so the
            // file grows only if the service copies them (within a second; the bound is for a
            // loaded machine). This push's log is as long as the one the store's creation and
            // enrollment wrote and the service had copied: it starts over at the same length,
            // which the service once took for nothing new and never copied.
            var grown = false
            let pushedAt = ContinuousClock.now
            let deadline = pushedAt + .seconds(10)
            while !grown, ContinuousClock.now < deadline {
                grown = try size() > before + 200_000
                if !grown { try await Task.sleep(for: .milliseconds(50)) }
            }
            let after = try size()
            #expect(grown, "the database file went from \(before) to \(after) bytes in \(ContinuousClock.now - pushedAt)")
        }
    }
}

@Suite("Last seen")
struct LastSeenTests {
    @Test("sightings are written at once when none was written for a second, else by one delayed write, each with its own time; a node is noted at most every 10 s")
    func batchedSightings() async throws {
        let dir = try TempDir()
        let catalog = try HubCatalog(directory: dir.path)
        _ = try catalog.createTenant("acme")
        for node: NodeID in ["d1", "d2"] {
            _ = try await catalog.redeem(token: try catalog.issueEnrollmentToken(tenant: "acme", node: node))
        }
        func seen() async throws -> [NodeID: UInt64] {
            Dictionary(uniqueKeysWithValues: try await catalog.nodes(of: "acme").compactMap { n in n.lastSeenMillis.map { (n.node, $0) } })
        }
        // A clock moved by hand: "within the second" must not depend on the machine's load.
        let clock = Mutex<UInt64>(1_800_000_000_000)
        // The delayed write waits until the test lets it go, not for a real second.
        let (released, release) = AsyncStream<Void>.makeStream()
        let recorder = LastSeenRecorder(now: { clock.withLock { $0 } }, sleep: { _ in for await _ in released { return } })
        let d1 = Principal(tenant: "acme", node: "d1"), d2 = Principal(tenant: "acme", node: "d2")
        await recorder.record(d1, in: SQLiteCatalog(catalog))
        #expect(try await seen().keys.sorted() == ["d1"], "the first sighting is written at once")
        let d2At = clock.withLock { $0 += 200; return $0 }
        await recorder.record(d2, in: SQLiteCatalog(catalog))
        #expect(try await seen()["d2"] == nil, "within the second: held for the delayed write")
        clock.withLock { $0 += 800 }
        release.yield()
        var written: UInt64?
        let deadline = ContinuousClock.now + .seconds(10)
        while written == nil, ContinuousClock.now < deadline {
            written = try await seen()["d2"]
            if written == nil { try await Task.sleep(for: .milliseconds(50)) }
        }
        let d2Seen = try #require(written, "the delayed write lands without another request")
        #expect(d2Seen == d2At, "written with the time it was seen, not the time of the write")
        let first = try await seen()["d1"]
        clock.withLock { $0 += 5_000 }
        await recorder.record(d1, in: SQLiteCatalog(catalog))
        try await Task.sleep(for: .milliseconds(1_300))
        #expect(try await seen()["d1"] == first, "d1 was noted less than 10 s ago: not rewritten")
    }
}

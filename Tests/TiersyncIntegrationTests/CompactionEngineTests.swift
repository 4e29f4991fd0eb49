import Foundation
import Logging
import PostgresNIO
import Testing
import TiersyncCore
import TiersyncPostgres
import TiersyncStorage
import TiersyncStore
import TiersyncTestSupport

/// Bounded storage at the hub's tenant store, the same tests on each engine
/// (docs/PRIVACY.md, "Bounded storage"): what compaction purges and when, and that a purged
/// change stays a duplicate.
@Suite("Compaction on each engine")
struct CompactionEngineTests {
    static let tree = NodeTree(parents: ["hq": nil, "d1": "hq", "d2": "hq"])

    /// `d1`'s changes as its agent would push them: a customer written five times (the first
    /// sets its owner, the others only its name), then another customer (the log's head).
    static func churn(at base: UInt64) throws -> [Change] {
        let dir = try TempDir()
        let d1 = try NodeStore(path: "\(dir.path)/d1.sqlite")
        try d1.setIdentity(NodeIdentity(tenant: "acme", node: "d1", parent: "hq"))
        var changes = try d1.commit([.upsert("customers", id: "c-1", ["last_name": "V1", "owning_dealer": "d1"])], wallMillis: base)
        for n in 2...5 {
            changes += try d1.commit([.upsert("customers", id: "c-1", ["last_name": .string("V\(n)")])], wallMillis: base + UInt64(n))
        }
        changes += try d1.commit([.upsert("customers", id: "c-head", ["last_name": "Head", "owning_dealer": "d1"])], wallMillis: base + 10)
        return changes
    }

    @Test("""
    superseded entries wait until the child they are routed to has pulled past them, then go; a redelivery of a purged change is a \
    duplicate and the origin's highest sequence stays; a bootstrap still gets the record as it is
    """, arguments: StorageEngine.testable)
    func supersededWaitForTheChild(engine: StorageEngine) async throws {
        let now: UInt64 = 1_800_000_000_000
        let changes = try Self.churn(at: now - 1_000)
        try await engine.withTenantStore { store in
            let first = try await store.applyIncoming(changes, from: "d1", source: .child, checkSkew: false, gate: nil, cursor: nil, wallMillis: now)
            #expect(first.applied == 6)
            let policy = RetentionPolicy()

            // d1 has pulled nothing yet: its entries wait (and a child it is not routed to
            // pulling everything changes nothing).
            await store.notePulled(by: "d2", through: 1_000)
            let early = try await store.compact(policy: policy, tree: Self.tree, nowMillis: now, batch: 2_000)
            #expect(early.supersededEntries == 0 && early.heldForChildren >= 3, "\(early)")
            #expect(try await store.trace(recordID: "c-1", table: "customers", after: 0, limit: 100).changes.count == 5)

            // Once d1 has pulled past them, V2…V4 go; V1 (the owner) and V5 hold current values.
            await store.notePulled(by: "d1", through: 6)
            let later = try await store.compact(policy: policy, tree: Self.tree, nowMillis: now, batch: 2_000)
            #expect(later.supersededEntries == 3, "\(later)")
            let left = try await store.trace(recordID: "c-1", table: "customers", after: 0, limit: 100).changes.map(\.change.originSeq)
            #expect(left.allSatisfy { [1, 5].contains($0) }, "\(left)")

            let again = try await store.applyIncoming(changes, from: "d1", source: .child, checkSkew: false, gate: nil, cursor: nil, wallMillis: now + 1)
            #expect(again.applied == 0 && again.duplicates == 6, "\(again)")
            #expect(try await store.highestSeq(of: "d1") == 6)

            // A bootstrap of the whole tenant gets c-1 as it is: owner and last name.
            let page = try await store.encodedFeed(after: 0, scope: .everything, excluding: nil, limit: 100)
            let pulled = try JSONDecoder().decode(PullResponse.self, from: Data(page.json))
            var state: [String: FieldValue] = [:]
            for change in pulled.changes where change.recordID == "c-1" { state.merge(change.fields) { _, new in new } }
            #expect(state["last_name"] == "V5" && state["owning_dealer"] == "d1", "\(state)")
            #expect(!pulled.changes.contains { $0.fields["last_name"] == "V3" })
        }
    }

    @Test("""
    an erasure request naming its subject again with a newer stamp is refused; folded, the request still reaches a node \
    bootstrapping afterwards with its whole subject (the fuzzer's erasure-request-fold-order)
    """, arguments: StorageEngine.testable)
    func erasureSubjectFoldsWhole(engine: StorageEngine) async throws {
        let now: UInt64 = 1_800_000_000_000
        let naming = Change(origin: "d1", originSeq: 1, hlc: HLCTimestamp(wallMillis: now - 60_000, counter: 0), table: "erasures",
                            recordID: "era-1", op: .upsert, fields: ["subject_table": "customers", "subject_id": "c-7", "requested_by": "d1"])
        let again = Change(origin: "d1", originSeq: 2, hlc: HLCTimestamp(wallMillis: now - 50_000, counter: 0), table: "erasures",
                           recordID: "era-1", op: .upsert, fields: ["subject_id": "c-7", "requested_at": "2026-12-05T10:00:00Z"])
        let later = Change(origin: "d1", originSeq: 3, hlc: HLCTimestamp(wallMillis: now - 40_000, counter: 0), table: "erasures",
                           recordID: "era-1", op: .upsert, fields: ["requested_at": "2026-12-05T11:00:00Z"])
        let head = Change(origin: "d1", originSeq: 4, hlc: HLCTimestamp(wallMillis: now - 30_000, counter: 0), table: "customers",
                          recordID: "c-head", op: .upsert, fields: ["last_name": "Head", "owning_dealer": "d1"])
        try await engine.withTenantStore { store in
            let report = try await store.applyIncoming([naming, again, later, head], from: "d1", source: .child, checkSkew: false, gate: nil,
                                                       cursor: nil, wallMillis: now)
            #expect(report.applied == 3 && report.rejected.map(\.originSeq) == [2] && report.rejected.first?.code == .invalidChange, "\(report)")
            await store.notePulled(by: "d1", through: 100)
            await store.notePulled(by: "d2", through: 100)
            let pass = try await store.compact(policy: RetentionPolicy(), tree: Self.tree, nowMillis: now, batch: 2_000)
            #expect(pass.foldedEntries >= 2, "\(pass)")

            let dir = try TempDir()
            let fresh = try NodeStore(path: "\(dir.path)/fresh.sqlite")
            try fresh.setIdentity(NodeIdentity(tenant: "acme", node: "d2", parent: "hq"))
            let page = try await store.encodedFeed(after: 0, scope: .everything, excluding: nil, limit: 100)
            let pulled = try JSONDecoder().decode(PullResponse.self, from: Data(page.json))
            let applied = try await fresh.applyIncoming(pulled.changes, from: "hq", source: .parent, checkSkew: false)
            #expect(applied.rejected.isEmpty, "\(applied)")
            let request = try fresh.liveRecords(table: "erasures", where: []).first { $0.id == "era-1" }
            #expect(request?.values["subject_table"] == "customers" && request?.values["subject_id"] == "c-7"
                    && request?.values["requested_at"] == "2026-12-05T11:00:00Z", "\(String(describing: request))")
        }
    }

    @Test("""
    a tombstone past the horizon goes with its log and raises the floor; on PostgreSQL another hub process, which has not seen the \
    floor, reads it with its next feed page; one pass at a time across processes
    """, arguments: StorageEngine.testable)
    func tombstonesRaiseTheFloor(engine: StorageEngine) async throws {
        let now: UInt64 = 1_800_000_000_000
        let churned = try Self.churn(at: now - 1_000).dropLast()
        let delete = Change(origin: "d1", originSeq: 6, hlc: HLCTimestamp(wallMillis: now - 500, counter: 0), table: "customers", recordID: "c-1",
                            op: .delete, fields: [:], prior: [:])
        let head = Change(origin: "d1", originSeq: 7, hlc: HLCTimestamp(wallMillis: now - 400, counter: 0), table: "customers", recordID: "c-head",
                          op: .upsert, fields: ["last_name": "Head", "owning_dealer": "d1"], prior: [:])
        let policy = RetentionPolicy(horizon: .seconds(60))
        let changes = Array(churned) + [delete, head]
        let check = { (store: any HubTenantStore) async throws in
            _ = try await store.applyIncoming(changes, from: "d1", source: .child, checkSkew: false, gate: nil, cursor: nil, wallMillis: now)
            await store.notePulled(by: "d1", through: 7)
            // Inside the horizon: the tombstone stays.
            let inside = try await store.compact(policy: policy, tree: Self.tree, nowMillis: now + 1_000, batch: 2_000)
            #expect(inside.tombstones == 0 && inside.floor == 0, "\(inside)")
            let past = try await store.compact(policy: policy, tree: Self.tree, nowMillis: now + 120_000, batch: 2_000)
            #expect(past.tombstones == 1 && past.floor == 6, "\(past)")
            #expect(try await store.trace(recordID: "c-1", table: "customers", after: 0, limit: 100).changes.isEmpty)
            #expect(try await store.retentionFloor() == 6)
            let again = try await store.applyIncoming([delete], from: "d1", source: .child, checkSkew: false, gate: nil, cursor: nil, wallMillis: now + 120_001)
            #expect(again.applied == 0 && again.duplicates == 1, "\(again)")
        }
        switch engine {
        case .sqlite:
            try await engine.withTenantStore { try await check($0) }
        case .postgres:
            try await TestPostgres.withFreshDatabase { endpoint in
                try await withPostgresClient(endpoint) { a in
                    try await withPostgresClient(endpoint) { b in
                        let first = PostgresTenantStore(client: a, tenant: "acme", rootOf: { _ in "hq" })
                        let second = PostgresTenantStore(client: b, tenant: "acme", rootOf: { _ in "hq" })
                        try await check(first)
                        // The second process never compacted or read the floor.
                        #expect(try await second.retentionFloor() == 0)
                        // Its feed reads the floor with the page: what the pull route holds a
                        // caller's cursor against.
                        let stale = try await second.encodedFeed(after: 3, scope: Scope(nodes: ["d1"]), excluding: nil, limit: 10)
                        #expect(stale.floor == 6)
                        #expect(try await second.retentionFloor() == 6)
                        let fresh = try await second.encodedFeed(after: 0, scope: Scope(nodes: ["d1"]), excluding: nil, limit: 10)
                        #expect(fresh.count == 1, "only c-head is left")
                        // One pass at a time: a pass while another process holds the lease
                        // does nothing.
                        func setLease(_ value: UInt64) async throws {
                            _ = try await a.query(PostgresQuery(unsafeSQL: "UPDATE \"t_acme\".meta SET value = '\(value)' WHERE key = 'compact.taken_at'"),
                                                  logger: Logger(label: "test")).collect()
                        }
                        try await setLease(now + 200_000)
                        let skipped = try await second.compact(policy: policy, tree: Self.tree, nowMillis: now + 200_001, batch: 2_000)
                        #expect(skipped.examinedRecords == 0 && skipped.floor == 6, "\(skipped)")
                        try await setLease(0)
                        let taken = try await second.compact(policy: policy, tree: Self.tree, nowMillis: now + 200_002, batch: 2_000)
                        #expect(taken.examinedRecords == 1, "the head's record, looked at again: \(taken)")
                    }
                }
            }
        }
    }

    @Test("""
    entries holding current values fold into their records once every child fed them has pulled them, and the log keeps its \
    head; a country and a dealer bootstrapping afterwards receive every field of their scope with the identity that wrote it, \
    in pages interleaving folded records with the log; a folded record entering a dealer's scope arrives whole; a redelivery \
    of a folded change is still a duplicate
    """, arguments: StorageEngine.testable)
    func currentEntriesFold(engine: StorageEngine) async throws {
        let tree = NodeTree(parents: ["hq": nil, "de": "hq", "d1": "de", "d2": "de"])
        let dir = try TempDir()
        try await engine.withTenantStore { store in
            _ = try await store.writeAsHub([.upsert("customers", id: "c-1", ["last_name": "One", "first_name": "A", "owning_dealer": "d1"])])
            _ = try await store.writeAsHub([.upsert("customers", id: "c-2", ["last_name": "Two", "owning_dealer": "d1"])])
            _ = try await store.writeAsHub([.upsert("customers", id: "c-1", ["phone": "+49 1"])])
            _ = try await store.writeAsHub([.upsert("customers", id: "c-3", ["last_name": "Three", "email": "t@example.com", "owning_dealer": "d2"])])
            _ = try await store.writeAsHub((4..<12).map { .upsert("customers", id: "c-\($0)", ["last_name": .string("N\($0)"), "owning_dealer": .string($0 % 2 == 0 ? "d1" : "d2")]) })
            _ = try await store.writeAsHub([.upsert("customers", id: "c-2", ["first_name": "B"])])
            // d1's own customer, pushed through de.
            let pushed = Change(origin: "d1", originSeq: 1, hlc: HLCTimestamp(wallMillis: WallClock.nowMillis() - 1_000, counter: 0), table: "customers",
                                recordID: "c-d1", op: .upsert, fields: ["last_name": "Pushed", "owning_dealer": "d1"], prior: [:])
            let first = try await store.applyIncoming([pushed], from: "de", source: .child, checkSkew: false, gate: nil, cursor: nil, wallMillis: WallClock.nowMillis())
            #expect(first.applied == 1)
            _ = try await store.writeAsHub([.upsert("customers", id: "c-head", ["last_name": "Head"])])
            let head = try await store.feedHead()

            // Nothing folds before the country has pulled; then every entry but the head does.
            let early = try await store.compact(policy: RetentionPolicy(), tree: tree, nowMillis: WallClock.nowMillis(), batch: 2_000)
            #expect(early.foldedEntries == 0 && early.heldForChildren > 0, "\(early)")
            await store.notePulled(by: "de", through: head)
            let report = try await store.compact(policy: RetentionPolicy(), tree: tree, nowMillis: WallClock.nowMillis(), batch: 2_000)
            #expect(report.foldedEntries == 14 && report.supersededEntries == 0, "\(report)")
            #expect(try await store.trace(recordID: "c-1", table: "customers", after: 0, limit: 100).changes.isEmpty, "c-1's entries left the log")
            #expect(try await store.trace(recordID: "c-head", table: "customers", after: 0, limit: 100).changes.count == 1, "the head stays")

            // A redelivery of the folded push is a duplicate, and d1's highest sequence stays.
            let again = try await store.applyIncoming([pushed], from: "de", source: .child, checkSkew: false, gate: nil, cursor: nil, wallMillis: WallClock.nowMillis())
            #expect(again.applied == 0 && again.duplicates == 1, "\(again)")
            #expect(try await store.highestSeq(of: "d1") == 1)

            let held = Dictionary(uniqueKeysWithValues: try await store.liveRecords(inTable: "customers").map { ($0.id, $0.values) })
            func bootstrap(_ node: NodeID, parent: NodeID, scope: Scope, limit: Int = 3) async throws -> (NodeStore, pages: Int) {
                let child = try NodeStore(path: "\(dir.path)/\(node)-\(UUID().uuidString).sqlite")
                try child.setIdentity(NodeIdentity(tenant: "acme", node: node, parent: parent))
                var pages = 0
                while true {
                    let cursor = try child.cursor("pull.parent")
                    let bytes = try await store.encodedFeed(after: cursor, scope: scope, excluding: node, limit: limit).json
                    let page = try #require(WireDecoding.pullResponse(bytes))
                    let applied = try await child.applyIncoming(page.changes, from: parent, source: .parent, checkSkew: false, cursor: ("pull.parent", page.nextCursor))
                    #expect(applied.rejected.isEmpty, "\(applied.rejected)")
                    pages += 1
                    if !page.more { return (child, pages) }
                }
            }
            func scopeValues(_ owners: Set<String>) -> [String: [String: FieldValue]] {
                held.filter { owners.contains($0.value["owning_dealer"]?.stringValue ?? "") }
            }
            func values(_ child: NodeStore) throws -> [String: [String: FieldValue]] {
                Dictionary(uniqueKeysWithValues: try child.liveRecords(table: "customers").map { ($0.id, $0.values) })
            }

            // The country: 12 records, from folded state, in pages of 3.
            let (de, dePages) = try await bootstrap("de", parent: "hq", scope: Scope(tree: tree, node: "de"))
            #expect(dePages >= 4, "\(dePages)")
            #expect(try values(de) == scopeValues(["d1", "d2"]))
            #expect(try de.record(table: "customers", id: "c-1")?.state.liveValues == ["last_name": "One", "first_name": "A", "phone": "+49 1", "owning_dealer": "d1"])
            // Each folded change keeps its identity: the hub's own changes 1 and 3 wrote c-1.
            let origins = try await de.trace(recordID: "c-1", table: "customers", after: 0, limit: 100).changes.map(\.change.originSeq)
            #expect(origins.sorted() == [1, 3], "\(origins)")

            // A dealer: only its own records.
            let (d1, _) = try await bootstrap("d1", parent: "de", scope: Scope(nodes: ["d1"]))
            // (Its own c-d1 comes back too, folded: a folded entry no longer says who sent it,
            // and a node holding it takes it as a duplicate.)
            #expect(try values(d1) == scopeValues(["d1"]))
            #expect(try d1.record(table: "customers", id: "c-3") == nil, "d2's customer is not in d1's scope")

            // c-3, folded and d2's, moves to d1: d1 receives all of it, not only the new owner.
            _ = try await store.writeAsHub([.upsert("customers", id: "c-3", ["owning_dealer": "d1"])])
            var cursor = try d1.cursor("pull.parent")
            while true {
                let page = try #require(WireDecoding.pullResponse(try await store.encodedFeed(after: cursor, scope: Scope(nodes: ["d1"]), excluding: "d1", limit: 3).json))
                _ = try await d1.applyIncoming(page.changes, from: "de", source: .parent, checkSkew: false, cursor: ("pull.parent", page.nextCursor))
                cursor = page.nextCursor
                if !page.more { break }
            }
            #expect(try d1.record(table: "customers", id: "c-3")?.state.liveValues == ["last_name": "Three", "email": "t@example.com", "owning_dealer": "d1"])
        }
    }

    @Test("""
    a current value that a child away past the horizon never pulled is folded all the same, and the floor rises to its position, \
    so that child re-bootstraps; inside the horizon it waits
    """, arguments: StorageEngine.testable)
    func foldingPastTheHorizonRaisesTheFloor(engine: StorageEngine) async throws {
        let now: UInt64 = 1_800_000_000_000
        let changes = try Self.churn(at: now - 1_000)
        let policy = RetentionPolicy(horizon: .seconds(60))
        try await engine.withTenantStore { store in
            _ = try await store.applyIncoming(changes, from: "d1", source: .child, checkSkew: false, gate: nil, cursor: nil, wallMillis: now)
            // d1, which every entry is routed to, never pulls.
            let inside = try await store.compact(policy: policy, tree: Self.tree, nowMillis: now + 1_000, batch: 2_000)
            #expect(inside.foldedEntries == 0 && inside.supersededEntries == 0 && inside.floor == 0, "\(inside)")
            let past = try await store.compact(policy: policy, tree: Self.tree, nowMillis: now + 120_000, batch: 2_000)
            // V2…V4 superseded; V1 (the owner) and V5 (the name) folded; V5's position, 5, is the floor.
            #expect(past.supersededEntries == 3 && past.foldedEntries == 2 && past.floor == 5, "\(past)")
            #expect(try await store.retentionFloor() == 5)
        }
    }

    @Test("""
    an erasure request names its subject once: a later change naming another subject is refused, so a node bootstrapping after \
    compaction (which folds the request's entries into one record) erases what every other replica erased, and nothing more
    """, arguments: StorageEngine.testable)
    func erasureSubjectNeverChanges(engine: StorageEngine) async throws {
        let now = WallClock.nowMillis()
        func marker(_ seq: Int64, subject: String) -> Change {
            Change(origin: "d1", originSeq: seq, hlc: HLCTimestamp(wallMillis: now - 1_000 + UInt64(seq), counter: 0), table: "erasures", recordID: "era-1",
                   op: .upsert, fields: ["requested_at": "2026-12-03T00:00:00Z", "requested_by": "d1", "subject_table": "customers", "subject_id": .string(subject)],
                   prior: [:])
        }
        try await engine.withTenantStore { store in
            _ = try await store.writeAsHub([.upsert("customers", id: "c-1", ["last_name": "Erased", "owning_dealer": "d1"]),
                                            .upsert("customers", id: "c-2", ["last_name": "Kept", "owning_dealer": "d1"])])
            let first = try await store.applyIncoming([marker(1, subject: "c-1")], from: "d1", source: .child, checkSkew: false, gate: nil, cursor: nil, wallMillis: now)
            #expect(first.applied == 1, "\(first)")
            let second = try await store.applyIncoming([marker(2, subject: "c-2")], from: "d1", source: .child, checkSkew: false, gate: nil, cursor: nil, wallMillis: now)
            #expect(second.applied == 0 && second.rejected.first?.code == .invalidChange, "\(second)")
            let kept = try await store.liveRecords(inTable: "customers").map(\.id)
            #expect(kept == ["c-2"], "c-1 erased, c-2 kept: \(kept)")
            let requests = try await store.liveRecords(inTable: "erasures")
            #expect(requests.first?.values["subject_id"] == "c-1", "\(requests)")
        }
    }

    @Test("on PostgreSQL, a pass that purged 1,000 entries or more vacuums the log's tables, so pushes reuse their space at once",
          .enabled(if: TestPostgres.isAvailable, "needs PostgreSQL (TIERSYNC_TEST_POSTGRES_URL)"))
    func largePassVacuums() async throws {
        let base = WallClock.nowMillis() - 10_000
        let changes = (1...1_101).map { n in
            Change(origin: "d1", originSeq: Int64(n), hlc: HLCTimestamp(wallMillis: base + UInt64(n), counter: 0), table: "customers",
                   recordID: n == 1_101 ? "c-head" : "c-1", op: .upsert, fields: ["last_name": .string("V\(n)"), "owning_dealer": "d1"], prior: [:])
        }
        try await TestPostgres.withFreshDatabase { endpoint in
            try await withPostgresClient(endpoint) { client in
                let store = PostgresTenantStore(client: client, tenant: "acme", rootOf: { _ in "hq" })
                func lastVacuum() async throws -> Bool {
                    try await client.query("SELECT last_vacuum IS NOT NULL FROM pg_stat_user_tables WHERE schemaname = 't_acme' AND relname = 'changes'",
                                           logger: Logger(label: "test")).collect().first.map { try $0.decode(Bool.self) } ?? false
                }
                _ = try await store.applyIncoming(Array(changes[..<100]), from: "d1", source: .child, checkSkew: false, gate: nil, cursor: nil, wallMillis: base + 5_000)
                await store.notePulled(by: "d1", through: 1_000_000)
                let small = try await store.compact(policy: RetentionPolicy(), tree: Self.tree, nowMillis: WallClock.nowMillis(), batch: 2_000)
                #expect(small.supersededEntries + small.foldedEntries < 1_000, "\(small)")
                #expect(try await lastVacuum() == false, "a small pass leaves vacuuming to autovacuum")
                _ = try await store.applyIncoming(Array(changes[100...]), from: "d1", source: .child, checkSkew: false, gate: nil, cursor: nil, wallMillis: base + 5_000)
                await store.notePulled(by: "d1", through: 1_000_000)
                let large = try await store.compact(policy: RetentionPolicy(), tree: Self.tree, nowMillis: WallClock.nowMillis(), batch: 2_000)
                #expect(large.supersededEntries + large.foldedEntries >= 1_000, "\(large)")
                #expect(try await lastVacuum(), "the pass vacuumed the log")
            }
        }
    }

    @Test("on PostgreSQL, a pass that purged much rewrites the tables it left bloated, giving their pages back, unless a table's lock does not come at once",
          .enabled(if: TestPostgres.isAvailable, "needs PostgreSQL (TIERSYNC_TEST_POSTGRES_URL)"))
    func bloatedTablesAreRewritten() async throws {
        let base = WallClock.nowMillis() - 10_000
        func changes(_ range: ClosedRange<Int>) -> [Change] {
            range.map { n in
                Change(origin: "d1", originSeq: Int64(n), hlc: HLCTimestamp(wallMillis: base + UInt64(n), counter: 0), table: "customers",
                       recordID: "c-\(n % 50)", op: .upsert, fields: ["last_name": .string("Name \(n)"), "street": .string(String(repeating: "x", count: 250)), "owning_dealer": "d1"],
                       prior: [:])
            }
        }
        try await TestPostgres.withFreshDatabase { endpoint in
            try await withPostgresClient(endpoint) { client in
                let logger = Logger(label: "test")
                let store = PostgresTenantStore(client: client, tenant: "acme", rootOf: { _ in "hq" })
                func heapBytes(_ table: String) async throws -> Int64 {
                    try await client.query(PostgresQuery(unsafeSQL: "SELECT pg_relation_size('t_acme.\(table)')::int8"), logger: logger)
                        .collect().first.map { try $0.decode(Int64.self) } ?? -1
                }
                func push(_ range: ClosedRange<Int>) async throws {
                    for chunk in stride(from: range.lowerBound, through: range.upperBound, by: 500) {
                        let report = try await store.applyIncoming(changes(chunk...min(chunk + 499, range.upperBound)), from: "d1", source: .child,
                                                                   checkSkew: false, gate: nil, cursor: nil, wallMillis: base + 5_000)
                        #expect(report.applied == min(500, range.upperBound - chunk + 1), "\(report)")
                    }
                    await store.notePulled(by: "d1", through: 1_000_000)
                }
                func pass() async throws -> CompactionReport {
                    try await store.compact(policy: RetentionPolicy(), tree: Self.tree, nowMillis: WallClock.nowMillis(), batch: 2_000)
                }

                // While another session reads the log (a lock a rewrite must wait for), the
                // pass purges and vacuums but leaves the log's pages; it does not wait long.
                try await push(1...3_000)
                let heldBefore = try await heapBytes("changes")
                let held = try await client.withTransaction(logger: logger) { connection in
                    _ = try await connection.query("LOCK TABLE t_acme.changes IN ACCESS SHARE MODE", logger: logger).collect()
                    let started = ContinuousClock.now
                    let report = try await pass()
                    return (report: report, after: try await heapBytes("changes"), took: ContinuousClock.now - started)
                }
                #expect(held.report.purgedEntries >= 2_900, "\(held.report)")
                #expect(heldBefore > 512 << 10, "the log's heap before the pass: \(heldBefore) B")
                #expect(held.after == heldBefore, "a busy table is not rewritten: \(heldBefore) → \(held.after) B")
                #expect(held.took < .seconds(30), "\(held.took)")

                // Unlocked, the next such pass gives the log's pages back: a few live rows
                // (the newest entry of each record) in a page or two.
                try await push(3_001...6_000)
                let before = try await heapBytes("changes")
                let report = try await pass()
                let after = try await heapBytes("changes")
                #expect(report.purgedEntries >= 2_900, "\(report)")
                #expect(report.releasedPages > 0, "\(report)")
                #expect(after < before / 8 && after <= 64 << 10, "the log's heap: \(before) → \(after) B")
                let kept = try await store.liveRecords(inTable: "customers")
                #expect(kept.count == 50, "\(kept.count)")
                #expect(kept.first { $0.id == "c-0" }?.values["last_name"] == .string("Name 6000"), "the newest value stays")
            }
        }
    }
}

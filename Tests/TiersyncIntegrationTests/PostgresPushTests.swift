import Foundation
import PostgresNIO
import Synchronization
import Testing
import TiersyncCore
import TiersyncPostgres
import TiersyncStorage
import TiersyncStore
import TiersyncTestSupport

/// How a push is written on PostgreSQL: read without the tenant's lock, written by
/// `ts_apply_push` under it after checking that the reading still holds.
@Suite("PostgreSQL push writes", .enabled(if: TestPostgres.isAvailable, Comment(rawValue: StorageEngine.postgresSkipNote)))
struct PostgresPushTests {
    /// Batches of real dealer stores' changes, all on the same few customers.
    static func contendedBatches(origins: [NodeID], batches: Int, perBatch: Int, records: Int) throws -> [NodeID: [[Change]]] {
        let dir = try TempDir()
        var out: [NodeID: [[Change]]] = [:]
        for (o, origin) in origins.enumerated() {
            let store = try NodeStore(path: "\(dir.path)/\(origin).sqlite")
            try store.setIdentity(NodeIdentity(tenant: "acme", node: origin, parent: "hq"))
            out[origin] = try (0..<batches).map { b in
                try store.commit((0..<perBatch).map { i in
                    .upsert("customers", id: "c-\((b + i) % records)", ["last_name": .string("\(origin)-\(b)-\(i)"), "first_name": .string("F\(o)")])
                }, wallMillis: 1_800_000_000_000 + UInt64(b * 10 + o))
            }
        }
        return out
    }

    /// Two stores on one tenant's schema, each through a client of its own (two processes'
    /// pools), both prepared.
    static func withTwoProcessStores(logs: CapturedLogs, _ body: (PostgresTenantStore, PostgresTenantStore) async throws -> Void) async throws {
        try await TestPostgres.withFreshDatabase { endpoint in
            try await withPostgresClient(endpoint) { clientA in
                try await withPostgresClient(endpoint) { clientB in
                    let a = PostgresTenantStore(client: clientA, tenant: "acme", logger: logs.logger(label: "a"), rootOf: { _ in "hq" })
                    let b = PostgresTenantStore(client: clientB, tenant: "acme", logger: logs.logger(label: "b"), rootOf: { _ in "hq" })
                    _ = try await a.feedHead()
                    _ = try await b.feedHead()
                    try await body(a, b)
                }
            }
        }
    }

    /// A tenant store on a fresh database, with its client, and dealer `d1`'s own store
    /// (enrolled under `hq`), whose commits make the changes a test pushes.
    static func withStoreAndDealer(logs: CapturedLogs? = nil,
                                   _ body: (PostgresTenantStore, NodeStore, PostgresClient) async throws -> Void) async throws {
        try await TestPostgres.withFreshDatabase { endpoint in
            try await withPostgresClient(endpoint) { client in
                let store = logs.map { PostgresTenantStore(client: client, tenant: "acme", logger: $0.logger(label: "a"), rootOf: { _ in "hq" }) }
                    ?? PostgresTenantStore(client: client, tenant: "acme", rootOf: { _ in "hq" })
                let dir = try TempDir()
                let dealer = try NodeStore(path: "\(dir.path)/d1.sqlite")
                try dealer.setIdentity(NodeIdentity(tenant: "acme", node: "d1", parent: "hq"))
                try await body(store, dealer, client)
            }
        }
    }

    /// A call of `ts_apply_push` that only checks a reading (`verify`, nothing to write), in
    /// the function's parameter order: `singles` its identities probed one by one and how
    /// many were held, `ranges` its ranges with what each held, `all` every identity.
    static func checkOnly(schema: String, singles: String = "'{}', '{}', 0", ranges: String = "'{}', '{}', '{}', '{}'", all: String) -> String {
        let expectedReads = Array(repeating: "'{}'", count: 12), writes = Array(repeating: "'{}'", count: 50)
        let arguments = ["true", singles] + expectedReads + ["0"] + writes + ["0"] + Array(repeating: "'{}'", count: 4)
            + ["'unused'", "'unused'", "NULL", "NULL", ranges, all]
        return "SELECT \"\(schema)\".ts_apply_push(\(arguments.joined(separator: ", ")))"
    }

    @Test("two tenants never share a schema: a long tenant id's shortened schema name is no shorter id's (a 57-byte id spelled as a 61-byte id's shortened name shared its schema, and each tenant read the other's records)")
    func longTenantIDsKeepTheirOwnSchema() async throws {
        let long = try TenantID(validating: "big-" + String(repeating: "x", count: 57))
        // What the old naming shortened `long` to (its first 40 bytes, `_`, 16 hex digits of
        // its SHA-256), itself a valid tenant id.
        let lookalike = try TenantID(validating: "big-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx_c77eb6fcc6c2c9af")
        #expect(PostgresTenantSchema(tenant: long).name != PostgresTenantSchema(tenant: lookalike).name)
        #expect(PostgresTenantSchema(tenant: long).name.utf8.count <= 63)
        try await TestPostgres.withFreshDatabase { endpoint in
            try await withPostgresClient(endpoint) { client in
                let x = PostgresTenantStore(client: client, tenant: long, rootOf: { _ in "hq" })
                let y = PostgresTenantStore(client: client, tenant: lookalike, rootOf: { _ in "hq" })
                let batch = try Self.contendedBatches(origins: ["d1"], batches: 1, perBatch: 2, records: 2)["d1"]!
                let applied = try await x.applyIncoming(batch[0], from: "d1", source: .child, checkSkew: false, gate: nil, cursor: nil,
                                                        wallMillis: WallClock.nowMillis())
                #expect(applied.applied == 2)
                #expect(try await x.feedHead() == 2)
                #expect(try await y.feedHead() == 0, "the other tenant's log is not this one's")
                #expect(try await y.liveRecords(inTable: "customers").isEmpty)
            }
        }
        // A long id's schema made under the old name takes the new one at its store's first
        // use: its data is found again, not left in a schema nothing reads.
        try await TestPostgres.withFreshDatabase { endpoint in
            let batch = try Self.contendedBatches(origins: ["d1"], batches: 1, perBatch: 2, records: 2)["d1"]!
            try await withPostgresClient(endpoint) { client in
                let x = PostgresTenantStore(client: client, tenant: long, rootOf: { _ in "hq" })
                _ = try await x.applyIncoming(batch[0], from: "d1", source: .child, checkSkew: false, gate: nil, cursor: nil, wallMillis: WallClock.nowMillis())
                let current = PostgresTenantSchema(tenant: long).name
                _ = try await client.query(PostgresQuery(unsafeSQL: "ALTER SCHEMA \"\(current)\" RENAME TO \"t_\(lookalike)\"")).collect()
            }
            let (head, customers) = try await withPostgresClient(endpoint) { client in
                let upgraded = PostgresTenantStore(client: client, tenant: long, rootOf: { _ in "hq" })
                return (try await upgraded.feedHead(), try await upgraded.liveRecords(inTable: "customers").count)
            }
            #expect(head == 2 && customers == 2, "the old schema's log and records are read: head \(head), \(customers) customers")
        }
    }

    @Test("a write PostgreSQL fails while running it is never acknowledged: the push throws, nothing is kept, and the same push applies once the cause is gone")
    func failedWriteIsNotAcknowledged() async throws {
        try await TestPostgres.withFreshDatabase { endpoint in
            try await withPostgresClient(endpoint) { client in
                let store = PostgresTenantStore(client: client, tenant: "acme", rootOf: { _ in "hq" })
                let batches = try Self.contendedBatches(origins: ["d1"], batches: 2, perBatch: 3, records: 10)["d1"]!
                let first = try await store.applyIncoming(batches[0], from: "d1", source: .child, checkSkew: false, gate: nil, cursor: nil,
                                                          wallMillis: WallClock.nowMillis())
                #expect(first.applied == 3)
                // Every insert into the log now fails inside PostgreSQL, after the statement began.
                let schema = PostgresTenantSchema(tenant: "acme").name
                _ = try await client.query(PostgresQuery(unsafeSQL: """
                    CREATE FUNCTION "\(schema)".refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk full (simulated)'; END $$;
                    """)).collect()
                _ = try await client.query(PostgresQuery(unsafeSQL: """
                    CREATE TRIGGER refuse BEFORE INSERT ON "\(schema)".changes FOR EACH ROW EXECUTE FUNCTION "\(schema)".refuse()
                    """)).collect()
                await #expect(throws: (any Error).self, "a push whose write failed must not be reported applied") {
                    try await store.applyIncoming(batches[1], from: "d1", source: .child, checkSkew: false, gate: nil, cursor: nil,
                                                  wallMillis: WallClock.nowMillis())
                }
                #expect(try await store.highestSeq(of: "d1") == 3)
                #expect(try await store.feedHead() == 3)
                _ = try await client.query(PostgresQuery(unsafeSQL: "DROP TRIGGER refuse ON \"\(schema)\".changes")).collect()
                let again = try await store.applyIncoming(batches[1], from: "d1", source: .child, checkSkew: false, gate: nil, cursor: nil,
                                                          wallMillis: WallClock.nowMillis())
                #expect(again.applied == 3 && again.duplicates == 0)
                #expect(try await store.feedHead() == 6)
            }
        }
    }

    @Test("pushes racing on the same records from two processes' stores lose no update: each change once, positions 1…n, records as SQLite merges them one push at a time")
    func racingPushesOnSameRecords() async throws {
        let origins: [NodeID] = ["d1", "d2", "d3", "d4"]
        let (batchCount, perBatch, recordCount) = (25, 4, 6)
        let batches = try Self.contendedBatches(origins: origins, batches: batchCount, perBatch: perBatch, records: recordCount)
        let total = origins.count * batchCount * perBatch
        let now = WallClock.nowMillis()
        // The reference: one push after another.
        let expected = try await StorageEngine.sqlite.withTenantStore { store in
            for origin in origins {
                for batch in batches[origin]! {
                    _ = try await store.applyIncoming(batch, from: origin, source: .child, checkSkew: false, gate: nil, cursor: nil, wallMillis: now)
                }
            }
            return try await store.liveRecords(inTable: "customers").map { "\($0.id) \(CanonicalJSON.object($0.values))" }
        }
        let logs = CapturedLogs()
        try await Self.withTwoProcessStores(logs: logs) { a, b in
            var applied = 0
            try await withThrowingTaskGroup(of: Int.self) { group in
                for (i, origin) in origins.enumerated() {
                    let store = i.isMultiple(of: 2) ? a : b
                    group.addTask {
                        var applied = 0
                        for batch in batches[origin]! {
                            let r = try await store.applyIncoming(batch, from: origin, source: .child, checkSkew: false, gate: nil,
                                                                  cursor: nil, wallMillis: now)
                            #expect(r.rejected.isEmpty && r.duplicates == 0)
                            applied += r.applied
                        }
                        return applied
                    }
                }
                for try await n in group { applied += n }
            }
            #expect(applied == total)
            #expect(try await a.feedHead() == Int64(total))
            for origin in origins { #expect(try await a.highestSeq(of: origin) == Int64(batchCount * perBatch)) }
            // Positions are dense: every one of 1…total holds exactly one change.
            let page = try await a.encodedFeed(after: 0, scope: Scope(nodes: nil), excluding: nil, limit: total + 10)
            #expect(page.count == total && page.nextCursor == Int64(total))
            let records = try await b.liveRecords(inTable: "customers").map { "\($0.id) \(CanonicalJSON.object($0.values))" }
            #expect(records == expected)
        }
        // The race happened: some pushes found their reading changed and were judged again.
        let retried = logs.all.filter { $0.message.contains("judging it again") }.count
        #expect(retried > 0, "no push met another's write between its read and its write; the test did not race")
    }

    @Test("the same push arriving at two processes at once (a retry landing elsewhere) is applied once, even where it changes no record: its identities, read as one range of the log, are found logged by the other under the lock and counted as duplicates")
    func samePushOnTwoProcesses() async throws {
        let rounds = 12, perBatch = 40, recordCount = 5
        let batches = try Self.contendedBatches(origins: ["d1"], batches: rounds, perBatch: perBatch, records: recordCount)["d1"]!
        // Every record written first with a later stamp, so d1's changes lose every field and
        // change no record: only the log's identities tell the two pushes apart.
        let dir = try TempDir()
        let newer = try NodeStore(path: "\(dir.path)/d2.sqlite")
        try newer.setIdentity(NodeIdentity(tenant: "acme", node: "d2", parent: "hq"))
        let later = try newer.commit((0..<recordCount).map { .upsert("customers", id: "c-\($0)", ["last_name": .string("Later"), "first_name": .string("L")]) },
                                     wallMillis: 1_900_000_000_000)
        let logs = CapturedLogs()
        try await Self.withTwoProcessStores(logs: logs) { a, b in
            let now = WallClock.nowMillis()
            _ = try await a.applyIncoming(later, from: "d2", source: .child, checkSkew: false, gate: nil, cursor: nil, wallMillis: now)
            let recordsBefore = try await a.liveRecords(inTable: "customers").map { "\($0.id) \(CanonicalJSON.object($0.values))" }
            for batch in batches {
                async let first = a.applyIncoming(batch, from: "d1", source: .child, checkSkew: false, gate: nil, cursor: nil, wallMillis: now)
                async let second = b.applyIncoming(batch, from: "d1", source: .child, checkSkew: false, gate: nil, cursor: nil, wallMillis: now)
                let (x, y) = try await (first, second)
                #expect(x.applied + y.applied == perBatch && x.duplicates + y.duplicates == perBatch)
                #expect(x.rejected.isEmpty && y.rejected.isEmpty)
            }
            #expect(try await a.feedHead() == Int64(recordCount + rounds * perBatch))
            #expect(try await b.highestSeq(of: "d1") == Int64(rounds * perBatch))
            #expect(try await b.liveRecords(inTable: "customers").map { "\($0.id) \(CanonicalJSON.object($0.values))" } == recordsBefore)
        }
        let retried = logs.all.filter { $0.message.contains("judging it again") }.count
        #expect(retried > 0, "no push met the other's write between its read and its write; the test did not race")
    }

    @Test("a retry mixing logged and new changes of one origin, with gaps (read as one range of the log, which also holds changes it does not carry): the logged ones are duplicates, the new ones applied, nothing else counted")
    func retryWithGapsReadAsRange() async throws {
        try await Self.withStoreAndDealer { store, dealer, _ in
            let all = try dealer.commit((1...8).map { .upsert("customers", id: "c-\($0)", ["last_name": .string("N\($0)")]) })
            #expect(all.map(\.originSeq) == Array(1...8))
            let now = WallClock.nowMillis()
            let first = try await store.applyIncoming(Array(all[0..<6]), from: "d1", source: .child, checkSkew: false, gate: nil, cursor: nil, wallMillis: now)
            #expect(first.applied == 6)
            // Sequences 2, 4, 7, 8: one range 2…8, which holds 3, 5 and 6 too.
            let retry = try await store.applyIncoming([all[1], all[3], all[6], all[7]], from: "d1", source: .child, checkSkew: false, gate: nil,
                                                      cursor: nil, wallMillis: now)
            #expect(retry.duplicates == 2 && retry.applied == 2 && retry.rejected.isEmpty)
            #expect(try await store.feedHead() == 8)
            #expect(try await store.liveRecords(inTable: "customers").count == 8)
        }
    }

    @Test("the check under the lock counts a range's identities logged or purged: compaction moving one from the log to the purged ranges passes it, an identity applied and purged since the read fails it")
    func rangeCheckCountsPurgedIdentities() async throws {
        let logs = CapturedLogs()
        try await Self.withStoreAndDealer(logs: logs) { store, dealer, client in
            let all = try dealer.commit((1...4).map { .upsert("customers", id: "c-\($0)", ["last_name": .string("N\($0)")]) })
            _ = try await store.applyIncoming(all, from: "d1", source: .child, checkSkew: false, gate: nil, cursor: nil, wallMillis: WallClock.nowMillis())
            let schema = PostgresTenantSchema(tenant: "acme").name
            // The check alone, as a push of d1's sequences 1…6 that read `held` of them held
            // (logged or purged): no identity on its own, one range, nothing written.
            func holds(readHeld held: Int) async throws -> Bool {
                let check = Self.checkOnly(schema: schema, ranges: "'{d1}', '{1}', '{6}', '{\(held)}'", all: "'{d1,d1,d1,d1,d1,d1}', '{1,2,3,4,5,6}'")
                do {
                    _ = try await client.query(PostgresQuery(unsafeSQL: check)).collect()
                    return true
                } catch let error as PSQLError where error.serverInfo?[.sqlState] == "40001" {
                    return false
                }
            }
            #expect(try await holds(readHeld: 4))
            // Sequence 5 applied by another push and purged since: the log holds as many
            // of the range as the read saw, but 5 was not held then.
            _ = try await client.query(PostgresQuery(unsafeSQL: "SELECT \"\(schema)\".ts_note_purged('{d1}', '{5}')")).collect()
            #expect(try await holds(readHeld: 4) == false, "an identity applied since the read went unnoticed: it would be applied twice")
            // Compaction purges sequence 2 after a read that saw 1…5 held: the log holds 3
            // of them, the purged ranges 2, and the reading still holds.
            _ = try await client.query(PostgresQuery(unsafeSQL: "DELETE FROM \"\(schema)\".changes WHERE origin = 'd1' AND origin_seq = 2")).collect()
            _ = try await client.query(PostgresQuery(unsafeSQL: "SELECT \"\(schema)\".ts_note_purged('{d1}', '{2}')")).collect()
            #expect(try await holds(readHeld: 5), "compaction made a push judge again what it read right")
            // A push of 1…6 reads the same: 1…5 held (3 logged, 2 purged), 6 new, and its
            // check agrees with its read the first time.
            let more = try dealer.commit((5...6).map { .upsert("customers", id: "c-\($0)", ["last_name": .string("N\($0)")]) })
            let report = try await store.applyIncoming(all + more, from: "d1", source: .child, checkSkew: false, gate: nil, cursor: nil,
                                                       wallMillis: WallClock.nowMillis())
            #expect(report.duplicates == 5 && report.applied == 1 && report.rejected.isEmpty)
            #expect(logs.all.filter { $0.message.contains("judging it again") }.isEmpty, "the read and the check counted the range differently")
        }
    }

    @Test("the hub's own writes from two processes at once (administrators resolving conflicts): each numbered once, 1…n, none lost, each newer than the value it overwrites")
    func racingHubWrites() async throws {
        try await TestPostgres.withFreshDatabase { endpoint in
            try await withPostgresClient(endpoint) { clientA in
                try await withPostgresClient(endpoint) { clientB in
                    let a = PostgresTenantStore(client: clientA, tenant: "acme", rootOf: { _ in "hq" })
                    let b = PostgresTenantStore(client: clientB, tenant: "acme", rootOf: { _ in "hq" })
                    // A dealer's value stamped 20 s ahead of the hub's clock.
                    let ahead = HLCTimestamp(wallMillis: WallClock.nowMillis() + 20_000, counter: 3)
                    let dealer = Change(origin: "d1", originSeq: 1, hlc: ahead, table: "customers", recordID: "shared", op: .upsert, fields: ["last_name": "Dealer"])
                    _ = try await a.applyIncoming([dealer], from: "d1", source: .child, checkSkew: false, gate: nil, cursor: nil, wallMillis: WallClock.nowMillis())
                    let perStore = 15
                    let written = try await withThrowingTaskGroup(of: [Change].self) { group in
                        for (name, store) in [("a", a), ("b", b)] {
                            group.addTask {
                                var out: [Change] = []
                                for i in 0..<perStore {
                                    out += try await store.writeAsHub([RecordWrite(table: "customers", id: i.isMultiple(of: 3) ? "shared" : "\(name)-\(i)",
                                                                                   op: .upsert, fields: ["last_name": .string("\(name)\(i)")])])
                                }
                                return out
                            }
                        }
                        return try await group.reduce(into: [Change]()) { $0 += $1 }
                    }
                    #expect(written.count == 2 * perStore && written.allSatisfy { $0.origin == "hq" })
                    #expect(written.map(\.originSeq).sorted() == Array(1...Int64(2 * perStore)), "\(written.map(\.originSeq).sorted())")
                    #expect(try await a.highestSeq(of: "hq") == Int64(2 * perStore))
                    let shared = written.filter { $0.recordID == "shared" }
                    #expect(shared.allSatisfy { $0.hlc > ahead }, "every write of 'shared' beats the dealer's value from the future")
                    // The record holds the newest of the hub's writes.
                    let newest = try #require(shared.max { $0.hlc < $1.hlc })
                    let record = try await b.liveRecords(inTable: "customers").first { $0.id == "shared" }
                    #expect(record?.values["last_name"] == newest.fields["last_name"])
                    // An invalid write is refused, and nothing is quarantined for it.
                    await #expect(throws: StoreError.self) {
                        _ = try await a.writeAsHub([RecordWrite(table: "no_such_table", id: "x", op: .upsert, fields: ["a": 1])])
                    }
                    #expect(try await a.quarantinedChanges(limit: 10).isEmpty)
                }
            }
        }
    }
}

extension PostgresPushTests {
    /// Index entries a statement read in this connection's open transaction, per index.
    private static func indexReads(_ connection: PostgresConnection, schema: String) async throws -> [String: Int64] {
        var out: [String: Int64] = [:]
        let rows = try await connection.query(PostgresQuery(unsafeSQL: """
            SELECT c.relname::text, pg_stat_get_xact_tuples_returned(c.oid) FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = '\(schema)' AND c.relkind = 'i'
            """), logger: .init(label: "test")).collect()
        for row in rows {
            let (name, read) = try row.decode((String, Int64).self)
            out[name] = read
        }
        return out
    }

    @Test("requests arriving together at a process that has not used the tenant yet wait for one schema preparation: the burst creates each of the tenant's functions once")
    func concurrentFirstUsesPrepareOnce() async throws {
        try await TestPostgres.withFreshDatabase { endpoint in
            try await withPostgresClient(endpoint) { client in
                let made = try await Self.countingFunctionsMade(client)
                // One process's first use by 40 requests at once.
                let store = PostgresTenantStore(client: client, tenant: "acme", rootOf: { _ in "hq" })
                let heads = try await withThrowingTaskGroup(of: Int64.self) { group in
                    for _ in 0..<40 { group.addTask { try await store.feedHead() } }
                    return try await group.reduce(into: [Int64]()) { $0.append($1) }
                }
                #expect(heads == Array(repeating: 0, count: 40))
                let burst = try await made()
                let functions = try await Self.tenantFunctions(client, tenant: "acme").count
                #expect(functions > 0)
                #expect(burst == functions, "40 concurrent first uses created \(burst) functions; the schema has \(functions)")
                // Still ready: later uses migrate no more.
                _ = try await store.feedHead()
                #expect(try await made() == burst)
            }
        }
    }

    @Test("a hub process starting on a tenant whose functions are this version's replaces none, so the other processes' connections keep their plans; another version's functions are replaced whole, even where their result columns or parameters differ, and a missing one is installed again")
    func functionsReplacedOnlyWhenTheyDiffer() async throws {
        try await TestPostgres.withFreshDatabase { endpoint in
            try await withPostgresClient(endpoint) { client in
                let made = try await Self.countingFunctionsMade(client)
                _ = try await PostgresTenantStore(client: client, tenant: "acme", rootOf: { _ in "hq" }).feedHead()
                let installed = try await Self.tenantFunctions(client, tenant: "acme")
                #expect(try await made() == installed.count)
                // Another process starts (or this one restarts): nothing replaced.
                _ = try await PostgresTenantStore(client: client, tenant: "acme", rootOf: { _ in "hq" }).feedHead()
                #expect(try await made() == installed.count)

                // What an older version would have left: `ts_read_push` with other result
                // columns (which `CREATE OR REPLACE` cannot change) and a second
                // `ts_apply_push` with another parameter list.
                let schema = PostgresTenantSchema(tenant: "acme").name
                for sql in [
                    """
                    DO $do$ DECLARE f regprocedure; BEGIN
                      FOR f IN SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                               WHERE n.nspname = '\(schema)' AND p.proname = 'ts_read_push' LOOP
                        EXECUTE 'DROP FUNCTION ' || f;
                      END LOOP;
                    END $do$
                    """,
                    """
                    CREATE FUNCTION "\(schema)".ts_read_push(p_origins text[], p_seqs int8[], p_tables text[], p_ids text[], p_batch_origins text[],
                      p_erased_tables text[], p_erased_ids text[], p_lo int8, p_hi int8) RETURNS TABLE (old_kind int4) LANGUAGE sql AS 'SELECT 1'
                    """,
                    "CREATE FUNCTION \"\(schema)\".ts_apply_push(verify boolean) RETURNS int8 LANGUAGE sql AS 'SELECT 0::int8'",
                    "UPDATE \"\(schema)\".meta SET value = 'an older version' WHERE key = 'functions.digest'",
                ] { _ = try await client.query(PostgresQuery(unsafeSQL: sql)).collect() }
                let before = try await made()
                let store = PostgresTenantStore(client: client, tenant: "acme", rootOf: { _ in "hq" })
                _ = try await store.feedHead()
                #expect(try await made() - before == installed.count)
                #expect(try await Self.tenantFunctions(client, tenant: "acme") == installed, "exactly this version's functions, no leftover overload")
                // And a push goes through them.
                let batch = try Self.contendedBatches(origins: ["d1"], batches: 1, perBatch: 2, records: 5)["d1"]![0]
                let report = try await store.applyIncoming(batch, from: "d1", source: .child, checkSkew: false, gate: nil, cursor: nil, wallMillis: WallClock.nowMillis())
                #expect(report.applied == 2)
                #expect(try await store.feedHead() == 2)

                // A function missing under a current digest (a schema restored or edited without
                // it): the next process installs them again.
                _ = try await client.query(PostgresQuery(unsafeSQL: "DROP FUNCTION \"\(schema)\".ts_note_purged(text[], int8[])")).collect()
                let beforeRestart = try await made()
                _ = try await PostgresTenantStore(client: client, tenant: "acme", rootOf: { _ in "hq" }).feedHead()
                #expect(try await made() - beforeRestart == installed.count)
                #expect(try await Self.tenantFunctions(client, tenant: "acme") == installed)
            }
        }
    }

    /// Counts every function created in the database from now on, as PostgreSQL reports it
    /// (an event trigger: the migration's DDL as run, whichever connection ran it).
    static func countingFunctionsMade(_ client: PostgresClient) async throws -> @Sendable () async throws -> Int {
        for sql in [
            "CREATE TABLE public.functions_made (name TEXT NOT NULL)",
            """
            CREATE FUNCTION public.note_functions() RETURNS event_trigger LANGUAGE plpgsql AS $$
            DECLARE r record;
            BEGIN
              FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() WHERE command_tag = 'CREATE FUNCTION' LOOP
                INSERT INTO public.functions_made VALUES (r.object_identity);
              END LOOP;
            END $$
            """,
            "CREATE EVENT TRIGGER note_functions ON ddl_command_end EXECUTE FUNCTION public.note_functions()",
        ] { _ = try await client.query(PostgresQuery(unsafeSQL: sql)).collect() }
        return {
            try await client.query("SELECT count(*)::int8 FROM public.functions_made").collect().first.map { Int(try $0.decode(Int64.self)) } ?? -1
        }
    }

    /// The functions of a tenant's schema, with their parameter types, sorted.
    static func tenantFunctions(_ client: PostgresClient, tenant: TenantID) async throws -> [String] {
        let schema = PostgresTenantSchema(tenant: tenant).name
        return try await client.query("""
            SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ') -> ' || pg_get_function_result(p.oid)
            FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = \(schema) ORDER BY 1
            """).collect().map { try $0.decode(String.self) }
    }

    @Test("a push's read and its check under the lock keep looking up by key after the tables grow from the one row their plans were made with (as after compaction): no plan reads a whole index")
    func pushPlansStayKeyedAsTablesGrow() async throws {
        try await Self.withStoreAndDealer { store, dealer, client in
            let first = try dealer.commit([.upsert("customers", id: "c-0", ["last_name": .string("First")])])
            _ = try await store.applyIncoming(first, from: "d1", source: .child, checkSkew: false, gate: nil, cursor: nil, wallMillis: WallClock.nowMillis())
            let schema = PostgresTenantSchema(tenant: "acme").name
            // Statistics as a compaction pass leaves them (one row), kept so: no autovacuum
            // refreshes them (which would make PostgreSQL plan the functions again).
            for table in ["changes", "records", "quarantine"] {
                _ = try await client.query(PostgresQuery(unsafeSQL: "ALTER TABLE \"\(schema)\".\(table) SET (autovacuum_enabled = false)")).collect()
                _ = try await client.query(PostgresQuery(unsafeSQL: "VACUUM ANALYZE \"\(schema)\".\(table)")).collect()
            }
            let maxSeq = Change.sequenceRange.upperBound
            // One identity on its own, two more as a range of the log (as a push of several does).
            let read = "SELECT count(*) FROM \"\(schema)\".ts_read_push('{d1}', '{1}', '{customers}', '{c-0}', '{d1}', '{}', '{}', 1, \(maxSeq), "
                + "'{d1}', '{2}', '{3}', '{d1,d1,d1}', '{1,2,3}')"
            // The check alone: the identity held, nothing else read, nothing written.
            let check = Self.checkOnly(schema: schema, singles: "'{d1}', '{1}', 1", all: "'{d1}', '{1}'")
            try await client.withConnection { probe in
                let logger = Logger(label: "test")
                // Planned now, on this connection, with tables of one row.
                for sql in [read, check] { _ = try await probe.query(PostgresQuery(unsafeSQL: sql), logger: logger).collect() }
                // The tables grow, through the store's other connections.
                for chunk in 0..<4 {
                    let writes = try dealer.commit((1...500).map { i in
                        .upsert("customers", id: "c-\(chunk * 500 + i)", ["last_name": .string("Grown \(i)")])
                    })
                    let report = try await store.applyIncoming(writes, from: "d1", source: .child, checkSkew: false, gate: nil, cursor: nil,
                                                               wallMillis: WallClock.nowMillis())
                    #expect(report.applied == 500)
                }
                for (name, sql) in [("read", read), ("check", check)] {
                    _ = try await probe.query("BEGIN", logger: logger).collect()
                    _ = try await probe.query(PostgresQuery(unsafeSQL: sql), logger: logger).collect()
                    let reads = try await Self.indexReads(probe, schema: schema)
                    _ = try await probe.query("ROLLBACK", logger: logger).collect()
                    // The counters count: the held identity was found through the log's index.
                    #expect((reads["changes_origin_origin_seq_key"] ?? 0) >= 1, "the \(name) found its identity through no index")
                    // One identity and one record asked: a few index entries, not the 2,001 held.
                    for index in ["changes_origin_origin_seq_key", "records_pkey"] {
                        #expect((reads[index] ?? 0) <= 20, "the \(name) read \(reads[index] ?? 0) entries of \(index)")
                    }
                }
            }
        }
    }

    @Test("a tenant's pushes waiting for its lock leave the process's connections to other tenants (six pushes of one tenant, held behind its lock, took every connection of a pool of four, and another tenant's push waited for them)")
    func waitingPushesLeaveConnections() async throws {
        let dir = try TempDir()
        func changes(_ tenant: TenantID, _ node: NodeID, _ count: Int) throws -> [Change] {
            let store = try NodeStore(path: "\(dir.path)/\(tenant)-\(node).sqlite")
            try store.setIdentity(NodeIdentity(tenant: tenant, node: node, parent: "hq"))
            return try store.commit((0..<count).map { i in .upsert("customers", id: "\(node)-c\(i)", ["last_name": .string("L\(i)")]) })
        }
        let logger = Logger(label: "test")
        try await TestPostgres.withFreshDatabase { endpoint in
            try await withPostgresClient(endpoint, connections: 4) { client in
                let acme = PostgresTenantStore(client: client, tenant: "acme", rootOf: { _ in "hq" })
                let globex = PostgresTenantStore(client: client, tenant: "globex", rootOf: { _ in "hq" })
                // Each store's first push begins its log history, under the tenant's lock.
                for (store, tenant) in [(acme, "acme"), (globex, "globex")] as [(PostgresTenantStore, TenantID)] {
                    let first = try await store.applyIncoming(try changes(tenant, "w1", 1), from: "w1", source: .child, checkSkew: false, gate: nil,
                                                              cursor: nil, wallMillis: WallClock.nowMillis())
                    #expect(first.applied == 1)
                }
                let batches = try (1...6).map { d in (node: NodeID(unchecked: "d\(d)"), changes: try changes("acme", NodeID(unchecked: "d\(d)"), 20)) }
                let globexBatch = try changes("globex", "g1", 5)
                final class Flags: Sendable {
                    let locked = Mutex(false), release = Mutex(false), acmeDone = Mutex(0)
                }
                let flags = Flags()
                try await withPostgresClient(endpoint) { outside in
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        // acme's lock, held from outside the store until the check below is done.
                        group.addTask {
                            try await outside.withTransaction(logger: logger) { connection in
                                _ = try await connection.query(PostgresQuery(unsafeSQL: "SELECT seq FROM \(PostgresTenantSchema(tenant: "acme").qualified(.head)) WHERE id = 1 FOR UPDATE"),
                                                               logger: logger).collect()
                                flags.locked.withLock { $0 = true }
                                while !flags.release.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(20)) }
                            }
                        }
                        while !flags.locked.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(20)) }
                        for batch in batches {
                            group.addTask {
                                let report = try await acme.applyIncoming(batch.changes, from: batch.node, source: .child, checkSkew: false, gate: nil,
                                                                          cursor: nil, wallMillis: WallClock.nowMillis())
                                #expect(report.applied == 20)
                                flags.acmeDone.withLock { $0 += 1 }
                            }
                        }
                        // Until acme's pushes wait for its lock inside PostgreSQL, and a while
                        // longer for any others to take a connection.
                        let deadline = ContinuousClock.now + .seconds(30)
                        while ContinuousClock.now < deadline {
                            let rows = try await outside.query("""
                                SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'
                                """, logger: logger).collect()
                            if try rows.first?.decode(Int64.self) ?? 0 >= 2 { break }
                            try await Task.sleep(for: .milliseconds(50))
                        }
                        try await Task.sleep(for: .milliseconds(500))
                        let globexFirst = try await withThrowingTaskGroup(of: Bool.self) { race in
                            race.addTask {
                                let report = try await globex.applyIncoming(globexBatch, from: "g1", source: .child, checkSkew: false, gate: nil,
                                                                            cursor: nil, wallMillis: WallClock.nowMillis())
                                #expect(report.applied == 5)
                                return true
                            }
                            race.addTask {
                                try await Task.sleep(for: .seconds(20))
                                return false
                            }
                            let first = try await race.next() ?? false
                            flags.release.withLock { $0 = true }
                            race.cancelAll()
                            return first
                        }
                        #expect(globexFirst, "globex's push waited behind acme's lock")
                        flags.release.withLock { $0 = true }
                        try await group.waitForAll()
                    }
                }
                #expect(flags.acmeDone.withLock { $0 } == 6)
                #expect(try await acme.feedHead() == 1 + 6 * 20)
            }
        }
    }

    @Test("erasure requests of several nodes pushed at once all complete (a push writes the hub's acknowledgement through the tenant's admission while it holds a place in it: two at once waited for each other for ever)")
    func concurrentErasuresComplete() async throws {
        let dir = try TempDir()
        try await TestPostgres.withFreshDatabase { endpoint in
            try await withPostgresClient(endpoint) { client in
                let store = PostgresTenantStore(client: client, tenant: "acme", rootOf: { _ in "hq" })
                var markers: [(node: NodeID, changes: [Change])] = []
                for d in 1...4 {
                    let node = NodeID(unchecked: "d\(d)")
                    let dealer = try NodeStore(path: "\(dir.path)/\(node).sqlite")
                    try dealer.setIdentity(NodeIdentity(tenant: "acme", node: node, parent: "hq"))
                    let written = try dealer.commit([.upsert("customers", id: "\(node)-c1", ["last_name": .string("Lund")])])
                    let report = try await store.applyIncoming(written, from: node, source: .child, checkSkew: false, gate: nil, cursor: nil,
                                                               wallMillis: WallClock.nowMillis())
                    #expect(report.applied == 1)
                    try dealer.erase(.customers, id: "\(node)-c1")
                    let erasure = try dealer.upstreamBatch(after: 0, limit: 100).map(\.change).filter { $0.originSeq > written.last!.originSeq }
                    try #require(erasure.contains { $0.table == DomainSchema.erasures.name })
                    markers.append((node, erasure))
                }
                let markersToPush = markers
                let applied = try await within(.seconds(60), "four nodes' erasure requests pushed at once") {
                    try await withThrowingTaskGroup(of: Int.self) { group in
                        for marker in markersToPush {
                            group.addTask {
                                try await store.applyIncoming(marker.changes, from: marker.node, source: .child, checkSkew: false, gate: nil, cursor: nil,
                                                              wallMillis: WallClock.nowMillis()).applied
                            }
                        }
                        return try await group.reduce(0, +)
                    }
                }
                #expect(applied == markersToPush.reduce(0) { $0 + $1.changes.count })
                // Each erasure acknowledged by the hub.
                let acks = try await store.liveRecords(inTable: DomainSchema.erasureAcks.name)
                #expect(acks.filter { $0.id.hasSuffix("@hq") }.count == 4, "\(acks.map(\.id))")
            }
        }
    }
}

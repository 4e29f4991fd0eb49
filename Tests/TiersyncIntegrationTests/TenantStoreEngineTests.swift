import Foundation
import Testing
import TiersyncCore
import TiersyncPostgres
import TiersyncStore
import TiersyncStorage
import TiersyncTestSupport

extension StorageEngine: CustomTestStringConvertible {}

/// The hub's tenant store, the same tests on each engine (SQLite's `NodeStore`,
/// PostgreSQL's `PostgresTenantStore`), and the two engines' answers compared.
@Suite("Hub tenant store on each engine")
struct TenantStoreEngineTests {
    /// Pushes made by two dealers' real stores: creates, a concurrent edit of one customer
    /// (a conflict), a delete, and a re-route (a customer moved from d1 to d2, which owes d2
    /// the record's earlier changes), each as the batch its agent would push.
    static func dealerPushes() throws -> [(sender: NodeID, changes: [Change])] {
        let dir = try TempDir()
        func dealer(_ node: NodeID) throws -> NodeStore {
            let store = try NodeStore(path: "\(dir.path)/\(node).sqlite")
            try store.setIdentity(NodeIdentity(tenant: "acme", node: node, parent: "hq"))
            return store
        }
        let d1 = try dealer("d1"), d2 = try dealer("d2")
        var pushes: [(NodeID, [Change])] = []
        let base: UInt64 = 1_800_000_000_000
        pushes.append(("d1", try d1.commit((0..<6).map { .upsert("customers", id: "c-\($0)", ["last_name": .string("N\($0)")]) }, wallMillis: base)))
        pushes.append(("d2", try d2.commit([.upsert("customers", id: "c-shared", ["last_name": "Two", "owning_dealer": "d1"])], wallMillis: base + 10)))
        pushes.append(("d1", try d1.commit([.upsert("customers", id: "c-shared", ["last_name": "One"]),
                                            .upsert("customers", id: "c-1", ["first_name": "Ann"]),
                                            .delete("customers", id: "c-2")], wallMillis: base + 20)))
        pushes.append(("d1", try d1.commit([.upsert("customers", id: "c-3", ["owning_dealer": "d2"]),
                                            .upsert("interactions", id: "i-1", ["customer_id": "c-3", "channel": "phone", "direction": "inbound"])],
                                           wallMillis: base + 30)))
        return pushes.map { (sender: $0.0, changes: $0.1) }
    }

    /// Everything observable of a store after the pushes: reports, feeds by scope and page,
    /// head, resume points and records.
    static func observe(_ store: any HubTenantStore, pushes: [(sender: NodeID, changes: [Change])]) async throws -> [String] {
        var seen: [String] = []
        let now: UInt64 = 1_800_000_000_100
        for (i, push) in pushes.enumerated() {
            let r = try await store.applyIncoming(push.changes, from: push.sender, source: .child, checkSkew: true, gate: nil, cursor: nil, wallMillis: now + UInt64(i))
            seen.append("push \(i): applied \(r.applied) duplicates \(r.duplicates) conflicts \(r.conflicts) rejected \(r.rejected.map { $0.code.rawValue })")
        }
        // Again: every change a duplicate.
        for push in pushes {
            let r = try await store.applyIncoming(push.changes, from: push.sender, source: .child, checkSkew: true, gate: nil, cursor: nil, wallMillis: now + 50)
            seen.append("again: applied \(r.applied) duplicates \(r.duplicates) rejected \(r.rejected.count)")
        }
        // A reused identity, a change the schema refuses (final: a duplicate when sent
        // again), and one from too far in the future (clock skew).
        var reused = pushes[0].changes[0]
        reused.hlc = HLCTimestamp(wallMillis: reused.hlc.wallMillis + 1, counter: 0)
        let unknown = Change(origin: "d1", originSeq: 900, hlc: HLCTimestamp(wallMillis: now, counter: 0), table: "shoes", recordID: "s-1",
                             op: .upsert, fields: ["size": .int(44)], prior: [:])
        let future = Change(origin: "d1", originSeq: 901, hlc: HLCTimestamp(wallMillis: now + 3_600_000, counter: 0), table: "customers",
                            recordID: "c-9", op: .upsert, fields: ["last_name": "Late"], prior: [:])
        for attempt in 0..<2 {
            let r = try await store.applyIncoming([reused, unknown, future], from: "d1", source: .child, checkSkew: true, gate: nil, cursor: nil, wallMillis: now + 60)
            seen.append("refused \(attempt): applied \(r.applied) duplicates \(r.duplicates) rejected \(r.rejected.map { "\($0.code.rawValue):\($0.restampAtMillis ?? 0)" })")
        }
        seen.append("head \(try await store.feedHead())")
        seen.append("highest d1 \(try await store.highestSeq(of: "d1")) d2 \(try await store.highestSeq(of: "d2")) d3 \(try await store.highestSeq(of: "d3"))")
        let scopes: [(String, Scope)] = [("all", .everything), ("d1", Scope(nodes: ["d1"])), ("d2", Scope(nodes: ["d2"])),
                                         ("d1+d2", Scope(nodes: ["d1", "d2"])), ("d9", Scope(nodes: ["d9"]))]
        for (name, scope) in scopes {
            for excluding in [nil, "d1"] as [NodeID?] {
                for limit in [1000, 3] {
                    var cursor: Int64 = 0
                    var pages = 0
                    while true {
                        let page = try await store.encodedFeed(after: cursor, scope: scope, excluding: excluding, limit: limit)
                        // The log's history is random: present, and the same on every page.
                        let json = String(decoding: page.json, as: UTF8.self).replacing(/,"history":"[0-9a-f]{16}"}$/, with: ",\"history\":\"H\"}")
                        seen.append("feed \(name) excluding \(excluding?.rawValue ?? "-") limit \(limit) page \(pages): \(json)")
                        cursor = page.nextCursor
                        pages += 1
                        if !page.more || pages > 20 { break }
                    }
                }
            }
        }
        for table in ["customers", "interactions"] {
            for record in try await store.liveRecords(inTable: table) {
                seen.append("\(table)/\(record.id): \(CanonicalJSON.object(record.values))")
            }
        }
        return seen
    }

    @Test("pushes apply once, refusals are quarantined and judged alike, and the feed serves each scope", arguments: StorageEngine.testable)
    func pushesAndFeed(engine: StorageEngine) async throws {
        let pushes = try Self.dealerPushes()
        let seen = try await engine.withTenantStore { store in try await Self.observe(store, pushes: pushes) }
        let total = pushes.map(\.changes.count).reduce(0, +)
        func expectLine(_ line: String, _ why: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(seen.contains(line), why ?? "", sourceLocation: sourceLocation)
        }
        func line(_ prefix: String) -> String { seen.first { $0.hasPrefix(prefix) } ?? "" }
        expectLine("push 1: applied 1 duplicates 0 conflicts 0 rejected []")
        expectLine("push 2: applied 3 duplicates 0 conflicts 1 rejected []", "d1's edit of c-shared was concurrent with d2's")
        #expect(seen.filter { $0.hasPrefix("again:") } == pushes.map { "again: applied 0 duplicates \($0.changes.count) rejected 0" })
        expectLine("refused 0: applied 0 duplicates 0 rejected [\"identity_reused:0\", \"unknown_table:0\", \"clock_skew:1800000000160\"]")
        expectLine("refused 1: applied 0 duplicates 0 rejected [\"identity_reused:0\", \"unknown_table:0\", \"clock_skew:1800000000160\"]",
                   "refusals are judged again on every delivery; a skew refusal keeps its first time")
        expectLine("head \(total)")
        expectLine("highest d1 901 d2 1 d3 0", "an enrolling node resumes after its quarantined changes too")
        #expect(line("feed d2 excluding - limit 1000 page 0:").contains("\"id\":\"c-3\",\"op\":\"upsert\",\"fields\":{\"last_name\":\"N3\""),
                "d2 is owed c-3's creation when the record is routed to it")
        #expect(line("feed d2 excluding - limit 1000 page 0:").components(separatedBy: "\"origin\"").count == 3, "d2 gets c-3's two changes, nothing else")
        #expect(line("feed d9 excluding - limit 1000 page 0:").hasSuffix("{\"changes\":[],\"nextCursor\":\(total),\"more\":false,\"head\":\(total),\"history\":\"H\"}"))
        #expect(line("feed all excluding d1 limit 1000 page 0:").components(separatedBy: "\"origin\"").count == 2, "only d2's change, not d1's own")
        #expect(line("customers/c-shared: ").contains("\"last_name\":\"One\""))
        #expect(line("customers/c-2:").isEmpty, "c-2 was deleted")
    }

    @Test("""
        the quarantine keeps at most its quota per sender and in all: past it a refusal is answered but not kept, and counted; \
        a kept entry replaced may not grow past it; discarding frees room; the bytes counted are the entries' own
        """, arguments: StorageEngine.testable)
    func quarantineQuota(engine: StorageEngine) async throws {
        let quota = QuarantineQuota(maxBytesPerSender: 40_000, maxBytes: 60_000)
        try await engine.withTenantStore(quarantineQuota: quota) { store in
            let now: UInt64 = 1_800_000_000_000
            // A change the schema refuses (a table it does not know), about 9 KB kept.
            func unknown(_ origin: NodeID, _ seq: Int64) -> Change {
                Change(origin: origin, originSeq: seq, hlc: HLCTimestamp(wallMillis: now, counter: 0), table: "shoes", recordID: "s-\(seq)",
                       op: .upsert, fields: ["note": .string(String(repeating: "x", count: 9_000))], prior: [:])
            }
            // One stamped an hour ahead: refused for clock skew, and replaced when it comes again.
            func future(_ note: String) -> Change {
                Change(origin: "d1", originSeq: 100, hlc: HLCTimestamp(wallMillis: now + 3_600_000, counter: 0), table: "customers",
                       recordID: "c-9", op: .upsert, fields: ["last_name": .string(note)], prior: [:])
            }
            func push(_ changes: [Change], from sender: NodeID) async throws -> IncomingReport {
                try await store.applyIncoming(changes, from: sender, source: .child, checkSkew: true, gate: nil, cursor: nil, wallMillis: now)
            }
            func kept() async throws -> [QuarantinedChange] { try await store.quarantinedChanges(afterID: 0, limit: 1_000) }
            // What the store counts must be what it keeps: each entry's JSON and reason, in UTF-8 bytes.
            func expectCountedAsKept(sourceLocation: SourceLocation = #_sourceLocation) async throws {
                let entries = try await kept()
                let counts = try await store.attentionCounts()
                #expect(counts.quarantined == entries.count, sourceLocation: sourceLocation)
                #expect(counts.quarantineBytes == Int64(entries.map { $0.change.utf8.count + $0.reason.utf8.count }.reduce(0, +)), sourceLocation: sourceLocation)
                #expect(counts.quarantineBytes <= quota.maxBytes, sourceLocation: sourceLocation)
                for sender in Set(entries.map(\.receivedFrom)) {
                    let bytes = entries.filter { $0.receivedFrom == sender }.map { $0.change.utf8.count + $0.reason.utf8.count }.reduce(0, +)
                    #expect(bytes <= quota.maxBytesPerSender, "\(sender) keeps \(bytes) bytes", sourceLocation: sourceLocation)
                }
            }

            let skewed = try await push([future("Small")], from: "d1")
            #expect(skewed.rejected.map(\.code) == [.clockSkew])
            // d1 floods: every refusal is answered, four of ten fit its 40,000 bytes.
            let flood = try await push((1...10).map { unknown("d1", $0) }, from: "d1")
            #expect(flood.applied == 0 && flood.rejected.count == 10 && flood.rejected.allSatisfy { $0.code == .unknownTable })
            var counts = try await store.attentionCounts()
            #expect(counts.quarantined == 5, "the skew refusal and four of d1's ten")
            #expect(counts.quarantineUnkept == 6)
            try await expectCountedAsKept()

            // The kept skew refusal comes again, now carrying 9 KB: answered, still fenced, and the entry stays as it was.
            let grown = try await push([future(String(repeating: "y", count: 9_000))], from: "d1")
            #expect(grown.rejected.map(\.code) == [.clockSkew])
            let skewEntry = try await kept().first { $0.origin == "d1" && $0.originSeq == 100 }
            #expect(skewEntry?.change.contains("Small") == true, "a kept entry may not grow past the sender's quota")
            counts = try await store.attentionCounts()
            #expect(counts.quarantineUnkept == 7)
            try await expectCountedAsKept()

            // d2 has its own 40,000 bytes, but the store has 60,000 in all: two fit.
            let second = try await push((1...10).map { unknown("d2", $0) }, from: "d2")
            #expect(second.rejected.count == 10)
            #expect(try await kept().filter { $0.receivedFrom == "d2" }.count == 2)
            try await expectCountedAsKept()
            // Refused and not kept still counts as held: d2 is not told its parent lost #10 (it
            // would send it again at every push).
            #expect(try await store.highestSeq(of: "d2") == 10)
            let again = try await push([unknown("d2", 10)], from: "d2")
            #expect(again.heldBefore["d2"] == 10)

            // The operator discards d1's entries: its refusals are kept again.
            for entry in try await kept() where entry.receivedFrom == "d1" { _ = try await store.discardQuarantined(id: entry.id) }
            try await expectCountedAsKept()
            let after = try await push((11...12).map { unknown("d1", $0) }, from: "d1")
            #expect(after.rejected.count == 2)
            #expect(try await kept().filter { $0.receivedFrom == "d1" }.map(\.originSeq) == [11, 12])
            try await expectCountedAsKept()
            #expect(try await store.attentionCounts().quarantineUnkept == 16, "d2's eight and #10 again; nothing more once room was made")
        }
    }

    @Test("""
        a tenant moved to PostgreSQL keeps its whole quarantine, past the bounds the schema enforces (a source kept more, with larger \
        bounds or from before them: migrate-tenant's digests differed), and counts it, so the next refusal is not kept
        """, .enabled(if: TestPostgres.isAvailable, Comment(rawValue: StorageEngine.postgresSkipNote)))
    func migratedQuarantinePastTheBounds() async throws {
        try await StorageEngine.postgres.withTenantStore(quarantineQuota: QuarantineQuota(maxBytesPerSender: 1_000, maxBytes: 2_000)) { store in
            let pg = try #require(store as? PostgresTenantStore)
            let rows: [[MigrationValue]] = (1...5).map { seq in
                [.text("d1"), .integer(seq), .text("d1"), .integer(1_800_000_000_000), .text("unknown_table"), .text("unknown table"),
                 .text(String(repeating: "x", count: 500))]
            }
            try await pg.importRows(.quarantine, rows)
            let counts = try await store.attentionCounts()
            #expect(counts.quarantined == 5)
            #expect(counts.quarantineBytes == 5 * (500 + "unknown table".utf8.count))
            #expect(counts.quarantineUnkept == 0)
            let later = Change(origin: "d1", originSeq: 6, hlc: HLCTimestamp(wallMillis: 1_800_000_000_000, counter: 0), table: "shoes",
                               recordID: "s-6", op: .upsert, fields: ["size": .int(44)], prior: [:])
            let report = try await store.applyIncoming([later], from: "d1", source: .child, checkSkew: true, gate: nil, cursor: nil,
                                                       wallMillis: 1_800_000_000_000)
            #expect(report.rejected.count == 1)
            #expect(try await store.attentionCounts().quarantineUnkept == 1, "the quota holds again after the import")
        }
    }

    @Test("PostgreSQL answers exactly as SQLite: the same reports, feed pages byte for byte, head and records",
          .enabled(if: TestPostgres.isAvailable, Comment(rawValue: StorageEngine.postgresSkipNote)))
    func enginesAgree() async throws {
        let pushes = try Self.dealerPushes()
        let sqlite = try await StorageEngine.sqlite.withTenantStore { try await Self.observe($0, pushes: pushes) }
        let postgres = try await StorageEngine.postgres.withTenantStore { try await Self.observe($0, pushes: pushes) }
        #expect(sqlite.count == postgres.count)
        for (a, b) in zip(sqlite, postgres) where a != b {
            Issue.record("SQLite: \(a)\nPostgreSQL: \(b)")
        }
    }
}

import Foundation
import Testing
import TiersyncAgent
import TiersyncCore
import TiersyncServer
import TiersyncStore
import TiersyncTestSupport

/// Issue 16's re-scoping over TLS: a record whose owner changes arrives whole at its new
/// dealer and country and leaves the old ones; a dealer moved to another country leaves
/// nothing of its records at the old country; every node's scope digest equals HQ's.
@Suite("Re-scoping", .serialized)
struct RescopingTests {
    @Test("""
    an owner change delivers the whole record to the new dealer and its country and evicts it, with its log entries, \
    from the old dealer and country (a dialogue still routed there stays); a dealer moved de → fr leaves none of its \
    records at de; scope digests equal HQ's
    """, .timeLimit(.minutes(5)))
    func ownerChangeAndMove() async throws {
        let dir = try TempDir()
        try await withRunning { running in
            let (hub, de, fr, hq) = try await Self.countries(running, dir: dir)
            let d1 = try await running.agent(enrolling: "d1", parent: "de", tenant: "acme", hub: hub, parentURL: de.url, directory: dir.path)
            var d2 = try await running.agent(enrolling: "d2", parent: "de", tenant: "acme", hub: hub, parentURL: de.url, directory: dir.path)
            let f1 = try await running.agent(enrolling: "f1", parent: "fr", tenant: "acme", hub: hub, parentURL: fr.url, directory: dir.path)

            try d1.store.commit([
                .upsert("customers", id: "c-1", ["last_name": "Moves", "phone": "+49 30 1"]),
                .upsert("interactions", id: "i-1", ["customer_id": "c-1", "topic": "test drive", "originating_node": "d1"]),
            ])
            try d2.store.commit([.upsert("customers", id: "c-2", ["last_name": "Travels"])])
            try await eventually(timeout: 30, "HQ and de hold everything") {
                try [hq, de.store].allSatisfy { s in
                    try s.record(table: "customers", id: "c-1") != nil && s.record(table: "customers", id: "c-2") != nil
                        && s.record(table: "interactions", id: "i-1") != nil
                }
            }

            // HQ gives c-1 to f1 (in fr): the whole record arrives there; d1 and de let it go.
            try hq.commit([.upsert("customers", id: "c-1", ["owning_dealer": "f1"])])
            try await eventually(timeout: 30, "f1 and fr hold c-1 whole") {
                try [f1.store, fr.store].allSatisfy { s in
                    try s.record(table: "customers", id: "c-1")?.state.liveValues["last_name"] == "Moves"
                        && s.record(table: "customers", id: "c-1")?.state.liveValues["phone"] == "+49 30 1"
                }
            }
            do {
                try await eventually(timeout: 30, "d1 and de evict c-1") {
                    // de keeps only the change that moved c-1 away (its dealers learn from it to let go).
                    try d1.store.record(table: "customers", id: "c-1") == nil && d1.store.lineage(recordID: "c-1").isEmpty
                        && de.store.record(table: "customers", id: "c-1") == nil
                        && de.store.lineage(recordID: "c-1").map { CanonicalJSON.object($0.change.fields) } == [#"{"owning_dealer":"f1"}"#]
                }
            } catch {
                for (name, s) in [("d1", d1.store), ("de", de.store)] {
                    Issue.record("\(name): \(String(describing: try s.record(table: "customers", id: "c-1"))) log \(try s.lineage(recordID: "c-1").map { "\($0.seq) \($0.change.origin)#\($0.change.originSeq) \($0.source)" }) pushed \(try s.cursor("push.parent"))")
                }
                throw error
            }
            #expect(try d1.store.record(table: "interactions", id: "i-1") != nil && de.store.record(table: "interactions", id: "i-1") != nil,
                    "the dialogue is still routed to d1")

            // d1 itself gives its customer c-3 to its sibling d2: once the parent took the change, d1 lets it go
            // (its own change never came back down, and the record stayed at d1 for good).
            try d1.store.commit([.upsert("customers", id: "c-3", ["last_name": "Handed over", "phone": "+49 30 3"])])
            try await eventually(timeout: 30, "de holds c-3") { try de.store.record(table: "customers", id: "c-3") != nil }
            try d1.store.commit([.upsert("customers", id: "c-3", ["owning_dealer": "d2"])])
            try await eventually(timeout: 30, "d2 holds c-3 whole and d1 evicts it with its log entries") {
                try d2.store.record(table: "customers", id: "c-3")?.state.liveValues["phone"] == "+49 30 3"
                    && d1.store.record(table: "customers", id: "c-3") == nil && d1.store.lineage(recordID: "c-3").isEmpty
            }
            #expect(try de.store.record(table: "customers", id: "c-3")?.state.liveValues["owning_dealer"] == "d2", "de, above both, keeps it")
            // HQ has the hand-over before d2 moves: judged after the move, d1 could no longer
            // route c-3 to d2, now in another country, and the hand-over would be refused.
            try await eventually(timeout: 30, "HQ holds the hand-over") { try hq.record(table: "customers", id: "c-3")?.state.liveValues["owning_dealer"] == "d2" }

            // d2 moves from de to fr: fr receives its records, de keeps none of them.
            d2 = try await Self.move(d2, "d2", to: fr, "fr", hub: hub, running)
            try await eventually(timeout: 30, "fr holds c-2 and de evicts it") {
                try fr.store.record(table: "customers", id: "c-2") != nil
                    && de.store.record(table: "customers", id: "c-2") == nil && de.store.lineage(recordID: "c-2").isEmpty
            }
            #expect(try d2.store.record(table: "customers", id: "c-2") != nil, "the moved dealer keeps its own records")

            // de's status reports still reach HQ: d2's last report, kept in de's mirror, was relayed
            // on, and HQ refused every later report of de whole (403: a node outside its subtree).
            let moved = WallClock.nowMillis()
            try de.store.commit([.upsert("customers", id: "c-de", ["last_name": "Country's own"])])
            // A report of d1 to de changes what de relays, so de reports after the move whatever the
            // timing (its own backlog of c-de may come and go between two of its measurements).
            let d1Credential = try #require(try d1.store.meta(MetaKey.credential.rawValue))
            let relayed = try await running.client(baseURL: de.url, caFile: hub.caFile).send(
                "POST", "/v1/status", json: StatusRequest(reports: [LagReport(node: "d1", pending: 7, oldestPendingMillis: 1_000)]), credential: d1Credential)
            #expect(relayed.status == 200, "\(relayed.text)")
            try await eventually(timeout: 30, "HQ takes de's status after d2 left it") {
                let lags = try await hub.catalogStore.lags(of: "acme")
                return (lags["de"]?.measuredAtMillis ?? 0) > moved && lags["d1"]?.pending == 7
            }
            // While d2 is in fr, HQ gives it a customer: de's pull goes past it (not de's then).
            try hq.commit([.upsert("customers", id: "c-9", ["last_name": "Given at HQ", "owning_dealer": "d2"])])
            try await eventually(timeout: 30, "d2 holds c-9 through fr") { try d2.store.record(table: "customers", id: "c-9") != nil }
            try de.store.commit([.upsert("customers", id: "c-de2", ["last_name": "Moves de's cursor on"])])
            try await eventually(timeout: 30, "de's write is at HQ") { try hq.record(table: "customers", id: "c-de2") != nil }

            // d2 moves back to de: de fetches its records again. It had evicted them, and its pull
            // from HQ is past them; still counted as backfilled, d2 was never fetched again (its
            // own changes it sends again, HQ's c-9 it does not).
            d2 = try await Self.move(d2, "d2", to: de, "de", hub: hub, running)
            try await eventually(timeout: 30, "de holds c-2 and HQ's c-9 again, and fr lets them go") {
                try de.store.record(table: "customers", id: "c-2")?.state.liveValues["last_name"] == "Travels"
                    && de.store.record(table: "customers", id: "c-9")?.state.liveValues["last_name"] == "Given at HQ"
                    && fr.store.record(table: "customers", id: "c-2") == nil && fr.store.record(table: "customers", id: "c-9") == nil
            }

            let tree = try await hub.catalogStore.tree(of: "acme")
            let stores: [(NodeID, NodeStore)] = [("de", de.store), ("fr", fr.store), ("d1", d1.store), ("d2", d2.store), ("f1", f1.store)]
            try await eventually(timeout: 30, "every node's scope digest equals HQ's") {
                try stores.allSatisfy { node, store in
                    let scope = Scope(tree: tree, node: node)
                    return try store.digest(scope: scope) == hq.digest(scope: scope)
                }
            }
            // c-3, handed from d1 to d2 before d2 left and came back: de fetched it again with d1's later change
            // kept in its log (a duplicate); it was owned by d1 again at de and sent back to d1.
            #expect(try de.store.record(table: "customers", id: "c-3")?.state.liveValues["owning_dealer"] == "d2")
            // d1 may take d1's own first change of c-3 back from de's backfill before the hand-over
            // de logs again after it: it then holds c-3, owned by d2, until its eviction right
            // after (a transaction of its own; its scope digest already equals HQ's by then).
            try await eventually(timeout: 30, "d1 holds no c-3") { try d1.store.record(table: "customers", id: "c-3") == nil }
        }
    }

    @Test("""
    a dealer writing the id of a customer held in another country: HQ refuses it by the dealer's scope, not the \
    country's, and the country drops the write and tells the dealer, which withdraws it and sets it aside with the \
    reason; once the other country's dealer moves in, the country holds the customer as HQ does and sends none of it \
    to the writer, nor sends the write again
    """, .timeLimit(.minutes(5)))
    func collidingIDAcrossCountries() async throws {
        let dir = try TempDir()
        try await withRunning { running in
            let (hub, de, fr, hq) = try await Self.countries(running, dir: dir)
            let d1 = try await running.agent(enrolling: "d1", parent: "de", tenant: "acme", hub: hub, parentURL: de.url, directory: dir.path)
            var f1 = try await running.agent(enrolling: "f1", parent: "fr", tenant: "acme", hub: hub, parentURL: fr.url, directory: dir.path)
            let secret = "Secret-of-f1-\(UUID().uuidString)"

            try f1.store.commit([.upsert("customers", id: "c-x", ["last_name": .string(secret), "phone": "+33 1 99", "owning_dealer": "f1"])])
            try await eventually(timeout: 30, "HQ holds f1's customer") { try hq.record(table: "customers", id: "c-x") != nil }
            // d1, which cannot know of it, writes a customer under the same id.
            try d1.store.commit([.upsert("customers", id: "c-x", ["last_name": "Written at d1", "owning_dealer": "d1"])])
            // …and edits it before it learns (de, which drops the record, refuses the edit itself).
            try d1.store.commit([.upsert("customers", id: "c-x", ["phone": "+49 30 1"])])
            try await eventually(timeout: 30, "HQ refuses d1's write, and de drops it") {
                try hq.quarantined().contains { $0.origin == "d1" && $0.code == ChangeRejection.Code.forbidden.rawValue }
                    && de.store.record(table: "customers", id: "c-x") == nil && de.store.lineage(recordID: "c-x").isEmpty
            }
            #expect(try de.store.pendingRetries() == 0, "de does not send it again")
            // de tells d1, which withdraws its write and sets it aside, with the reason.
            try await eventually(timeout: 30, "d1 learns its write was refused above de") {
                try d1.store.record(table: "customers", id: "c-x") == nil && !d1.store.quarantined().isEmpty
            }
            let aside = try d1.store.quarantined()
            #expect(aside.count == 2 && aside.allSatisfy { $0.origin == "d1" && $0.code == ChangeRejection.Code.forbidden.rawValue }
                    && aside.first?.reason.contains("refused above 'de'") == true && aside.first?.change.contains("Written at d1") == true
                    && aside.last?.change.contains("+49 30 1") == true, "\(aside)")
            // The agent counts them once the take's transaction is back from the store's
            // thread (it runs off the cooperative pool): a moment after the store shows them.
            try await eventually(timeout: 10, "d1's status counts them") { d1.agent.status.refusedAbove == 2 }
            #expect(try d1.store.pendingRetries() == 0, "nothing of c-x is sent again")
            let trace = try Child.run(["trace", "--db", d1.store.path, "c-x"])
            #expect(trace.contains("Refused and kept in the quarantine at d1") && trace.contains("[forbidden] refused above 'de'"), "\(trace)")
            // Dealt with, the dealer's operator discards one; the listing shows the ids.
            let listed = try Child.run(["admin", "quarantine", "--db", d1.store.path])
            let first = try #require(aside.first)
            #expect(listed.contains("id \(first.id)  d1#\(first.originSeq) from de"), "\(listed)")
            let discarded = try Child.run(["admin", "quarantine", "--db", d1.store.path, "--discard", "\(first.id)"])
            #expect(discarded.hasPrefix("discarded id \(first.id): d1#\(first.originSeq)"), "\(discarded)")
            #expect(try d1.store.quarantined().map(\.id) == aside.dropFirst().map(\.id))
            let unknown = try Child.capture(["admin", "quarantine", "--db", d1.store.path, "--discard", "\(first.id)"])
            #expect(unknown.status != 0 && unknown.output.contains("holds no quarantined change with id \(first.id)"), "\(unknown)")

            // f1 moves to de: de fetches its records from HQ, c-x among them.
            f1 = try await Self.move(f1, "f1", to: de, "de", hub: hub, running)
            try await eventually(timeout: 30, "de holds c-x as HQ does") {
                try de.store.record(table: "customers", id: "c-x")?.state.liveValues["phone"] == "+33 1 99"
            }
            // A marker HQ gives d1 after everything above: once d1 holds it, it has pulled past c-x.
            try hq.commit([.upsert("customers", id: "c-mark", ["last_name": "Marker", "owning_dealer": "d1"])])
            try await eventually(timeout: 30, "d1 pulls the marker") { try d1.store.record(table: "customers", id: "c-mark") != nil }

            let atHQ = try #require(try hq.record(table: "customers", id: "c-x")).state.liveValues
            #expect(atHQ["last_name"] == .string(secret) && atHQ["owning_dealer"] == "f1", "\(atHQ)")
            let atDe = try #require(try de.store.record(table: "customers", id: "c-x")).state.liveValues
            #expect(atDe["last_name"] == .string(secret) && atDe["owning_dealer"] == "f1", "de holds c-x as HQ does: \(atDe)")
            #expect(try d1.store.record(table: "customers", id: "c-x") == nil, "d1 holds a copy of c-x that is not f1's customer")
            #expect(try f1.store.record(table: "customers", id: "c-x")?.state.liveValues["last_name"] == .string(secret))
            #expect(try Self.filesHolding(secret, under: dir.path).allSatisfy { !$0.hasPrefix("d1") }, "a file of d1 holds f1's customer")
            // The write, and the edit when de relayed it before dropping c-x (else de refused it itself).
            #expect(try (1...2).contains(hq.quarantined().filter { $0.origin == "d1" }.count))
            // de's newest entry went when it dropped d1's write: its log's head never goes back
            // below where d1 pulled to (d1 took de for one restored from an older backup).
            #expect(d1.agent.status.parentRestores == 0, "\(d1.agent.status)")
            // Started again, d1 asks de what it holds of its changes: the dropped one counts as
            // held (else d1 took de for one restored from an older backup and sent it again).
            await d1.stop()
            let again = try running.agent(store: d1.store, parentURL: de.url, caFile: hub.caFile)
            try await eventually(timeout: 30, "d1 syncs with de again") { again.agent.status.lastPullMillis != nil }
            #expect(again.agent.status.parentRestores == 0, "\(again.agent.status)")
        }
    }

    @Test("""
    a dealer's write made after HQ moved it to another country, still through its old country, is not lost: HQ \
    refuses it from the old country, which lets it go with the dealer's records once it learns of the move and tells \
    the dealer to send it again; the move undone, HQ takes it; restarted towards its new country, the dealer's writes \
    reach HQ through that one
    """, .timeLimit(.minutes(5)))
    func writesThroughTheOldCountryAfterAMove() async throws {
        let dir = try TempDir()
        try await withRunning { running in
            let (hub, de, fr, hq) = try await Self.countries(running, dir: dir)
            var d1 = try await running.agent(enrolling: "d1", parent: "de", tenant: "acme", hub: hub, parentURL: de.url, directory: dir.path)
            try d1.store.commit([.upsert("customers", id: "c-1", ["last_name": "Before"])])
            try await eventually(timeout: 30, "HQ holds c-1") { try hq.record(table: "customers", id: "c-1") != nil }
            // de's mirror has d1 (it swept its records with d1 in its subtree).
            try await eventually(timeout: 30, "de's mirror holds d1") { try de.store.meta("evicted.for") == "d1" }

            // HQ moves d1 to fr; its agent still runs towards de, which has not heard yet.
            try await hub.catalogStore.moveNode("d1", of: "acme", to: "fr")
            try d1.store.commit([.upsert("customers", id: "c-late", ["last_name": "Written after the move"])])
            // Most often de takes it before it learns of the move (its mirror refreshes every
            // 500 ms here); else it refuses d1 at once and d1 keeps it unsent.
            try await eventually(timeout: 30, "d1 has sent c-late to de, or de refuses d1") {
                try de.store.record(table: "customers", id: "c-late") != nil || d1.agent.status.failingSinceMillis != nil
            }
            // de pushes it; HQ refuses it (d1 is no longer in de's subtree). de then learns of the
            // move and lets d1's records go, c-late among them.
            try await eventually(timeout: 30, "de swept after d1 left") { try de.store.meta("evicted.for") == "" }
            // de no longer knows d1, and says why that may be (helper 83: "revoked" sent the
            // operator for an enrollment token d1 did not need).
            let credential = try #require(try d1.store.meta(MetaKey.credential.rawValue))
            let asked = try await running.client(baseURL: de.url, caFile: hub.caFile).send("GET", "/v1/whoami", credential: credential)
            #expect(asked.status == 401 && asked.text.contains("a dealer HQ moved to another country syncs through that one"), "\(asked.text)")
            try await Task.sleep(for: .seconds(1))
            #expect(try hq.record(table: "customers", id: "c-late") == nil)

            #expect(try de.store.record(table: "customers", id: "c-late") == nil && d1.store.record(table: "customers", id: "c-late") != nil)
            // Taken by de and refused by HQ (most often): de kept a notice asking d1 to send it again.
            let lateSeq = try #require(try d1.store.lineage(recordID: "c-late").first?.seq)
            let deTookIt = try d1.store.cursor(NodeStore.parentPushCursor) >= lateSeq
            let notices = try de.store.refusalsKept(for: "d1", after: 0, limit: 10).refusals.map(\.refusal)
            #expect(notices.contains { $0.recordID == "c-late" && $0.outsideScopeOf == "de" } == deTookIt, "\(notices)")
            // The move undone at once: HQ takes c-late through de. d1 may not have noticed a thing
            // (its pull waiting at de all along, it took c-late for delivered: it was lost); de's
            // notice asks it to send c-late again. Had de refused it meanwhile, d1 finds de
            // lacking what it acknowledged when it reaches it again, and sends it again too.
            try await hub.catalogStore.moveNode("d1", of: "acme", to: "de")
            try await eventually(timeout: 60, "HQ holds c-late once d1 is de's again") { try hq.record(table: "customers", id: "c-late") != nil }
            #expect(d1.agent.status.parentRestores <= (deTookIt ? 1 : 0), "\(d1.agent.status)")
            #expect(try hq.quarantined().isEmpty, "HQ's quarantine lets go of the refusal once the change landed")

            // Moved again, and restarted towards fr: a later write reaches HQ through fr.
            d1 = try await Self.move(d1, "d1", to: fr, "fr", hub: hub, running)
            try d1.store.commit([.upsert("customers", id: "c-fr", ["last_name": "Through fr"])])
            try await eventually(timeout: 30, "HQ holds c-fr") { try hq.record(table: "customers", id: "c-fr") != nil }
        }
    }

    @Test("""
    a dealer moved into a country and straight back out while the country fetches its records leaves none of them \
    there: the fetch fails (the dealer is no longer below it) and the sweep still runs (helper 87: they stayed for good)
    """, .timeLimit(.minutes(5)))
    func movedInAndOutDuringTheBackfill() async throws {
        let dir = try TempDir()
        try await withRunning { running in
            let (hub, de, fr, hq) = try await Self.countries(running, dir: dir)
            _ = try await hub.catalog.redeem(token: try hub.catalog.issueEnrollmentToken(tenant: "acme", node: "d5", parent: "de"),
                                             via: Principal(tenant: "acme", node: "de"))
            // Several pages of d5's customers, written at HQ.
            for batch in 0..<5 {
                try hq.commit((0..<1_000).map { n in .upsert("customers", id: "c5-\(batch)-\(n)", ["last_name": "Of d5", "owning_dealer": "d5"]) })
            }
            try await eventually(timeout: 60, "de holds d5's customers") { try de.store.counts().records["customers"] == 5_000 }
            func atFR() throws -> Int { try fr.store.counts().records["customers"] ?? 0 }
            try await hub.catalogStore.moveNode("d5", of: "acme", to: "fr")
            // Back as soon as fr has fetched some: most often before the last page.
            try await eventually(timeout: 60, "fr fetches d5's customers") { try atFR() > 0 }
            try await hub.catalogStore.moveNode("d5", of: "acme", to: "de")
            try await eventually(timeout: 60, "fr lets every one go") { try atFR() == 0 }
            // de, which may have let them go and fetch them again, holds them all.
            try await eventually(timeout: 60, "de holds d5's customers again") { try de.store.counts().records["customers"] == 5_000 }
        }
    }

    /// A hub (SQLite) with tenant acme in three levels, and its countries de and fr running.
    static func countries(_ running: Running, dir: TempDir) async throws -> (hub: RunningHub, de: RunningCountry, fr: RunningCountry, hq: NodeStore) {
        let hub = try await running.hub(directory: dir.path)
        try hub.catalog.createTenant("acme", levels: 3)
        let de = try await running.country(hub: hub, tenant: "acme", node: "de", directory: dir.path)
        let fr = try await running.country(hub: hub, tenant: "acme", node: "fr", directory: dir.path)
        return (hub, de, fr, try hub.stores.store(for: "acme"))
    }

    /// Moves dealer `node` under `country` at HQ, and starts its agent again towards it (as an
    /// operator does: stop, adopt the new parent, start).
    static func move(_ agent: RunningAgent, _ node: NodeID, to country: RunningCountry, _ countryNode: NodeID,
                     hub: RunningHub, _ running: Running) async throws -> RunningAgent {
        try await hub.catalogStore.moveNode(node, of: "acme", to: countryNode)
        await agent.stop()
        #expect(try SyncAgent.adoptParent(store: agent.store, url: country.url))
        return try running.agent(store: agent.store, parentURL: country.url, caFile: hub.caFile)
    }

    /// The names of the files under `directory` whose bytes hold `text`.
    static func filesHolding(_ text: String, under directory: String) throws -> [String] {
        let needle = Data(text.utf8)
        let names = try FileManager.default.subpathsOfDirectory(atPath: directory)
        return names.filter { name in
            guard let data = FileManager.default.contents(atPath: "\(directory)/\(name)") else { return false }
            return data.range(of: needle) != nil
        }
    }
}

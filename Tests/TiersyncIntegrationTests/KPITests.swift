import Foundation
import Testing
import TiersyncAgent
import TiersyncCore
import TiersyncGovernance
import TiersyncKPI
import TiersyncServer
import TiersyncStore
import TiersyncTestSupport

/// The KPI table a node's raw records give when recounted from scratch: every dialogue and
/// lead it holds, through the formulas it counts with, rolled up along `paths`.
private func recomputed(_ store: NodeStore, viewer: String, paths: [String: [String]], period: KPIPeriodKind = .month) throws -> [KPIRow] {
    let adoption = try #require(try store.kpiAdoption())
    var tally = KPITally(evaluator: KPIEvaluator(catalog: adoption.catalog))
    for r in try store.liveRecords(table: "interactions") { tally.add(DialogueFacts(id: r.id, fields: r.values)) }
    for r in try store.liveRecords(table: "leads") { tally.add(LeadFacts(id: r.id, fields: r.values)) }
    let observations = KPIObservation.periods(of: tally.totals(), kind: period) { _ in nil }
    return KPIReport.rows(viewer: viewer, catalog: adoption.catalog, period: period, observations: observations, paths: paths, byNode: true)
}

/// What a row says, without targets (a recount knows none): (KPI, period, node, scope) → n/d.
private func sums(_ rows: [KPIRow]) -> [String: String] {
    Dictionary(uniqueKeysWithValues: rows.map { ("\($0.kpi) \($0.periodStart) \($0.node) \($0.scope.rawValue)", "\($0.numerator)/\($0.denominator)") })
}

@Suite("KPIs over a three-tier tree", .serialized)
struct KPITests {
    @Test("""
    HQ + de + fr + dealers over TLS: the fixture's KPIs, computed where each dialogue is handled, sync up as \
    snapshots; HQ's and de's tables (CLI and GET /v1/kpis) equal a recount from the raw interactions they hold, \
    carry de's overlay target, and follow an update within seconds
    """, .timeLimit(.minutes(3)))
    func threeTier() async throws {
        let dir = try TempDir()
        try await withRunning { running in
            let hub = try await running.hub(directory: dir.path)
            try hub.catalog.createTenant("automaker", levels: 3)
            let hqKey = GovernanceSigningKey()
            try hub.catalog.setReleaseKey(hqKey.publicKey.base64, for: "automaker")
            let de = try await running.country(hub: hub, tenant: "automaker", node: "de", directory: dir.path)
            let fr = try await running.country(hub: hub, tenant: "automaker", node: "fr", directory: dir.path)
            var stores: [NodeID: NodeStore] = ["de": de.store, "fr": fr.store]
            for (dealer, country) in [("de-1", de), ("de-2", de), ("fr-1", fr)] as [(NodeID, RunningCountry)] {
                stores[dealer] = try await running.agent(enrolling: dealer, parent: dealer.rawValue.hasPrefix("de") ? "de" : "fr", tenant: "automaker",
                                                         hub: hub, parentURL: country.url, directory: dir.path).store
            }
            let hq = try hub.stores.store(for: "automaker")

            // The automaker release to everyone; de's overlay raises its phone service level target to 85 %.
            let publisher = GovernancePublisher(store: hq, tenant: "automaker", key: hqKey, tree: try await hub.catalog.tree(of: "automaker"))
            try await publisher.publish(try GovernanceCompiler.compile(directory: repositoryRoot() + "/fixtures/governance/automaker"))
            try await eventually(timeout: 30, "de runs v1") { try de.store.appliedGovernance()?.release == 1 }
            let deKey = GovernanceSigningKey()
            let deKeyFile = OverlayKeyFile(tenant: "automaker", node: "de", privateKey: deKey.base64,
                                           certificate: try hqKey.certify(OverlayCertificate(tenant: "automaker", node: "de", publicKey: deKey.publicKey.base64, issuedAtMillis: 0)))
            let overlay = try OverlaySource.parse(yaml: try String(contentsOfFile: repositoryRoot() + "/fixtures/governance/overlays/de.yaml", encoding: .utf8), file: "de.yaml")
            try OverlayPublisher.publish(overlay, keyFile: deKeyFile, store: de.store)
            try await eventually(timeout: 30, "every node runs v1, de's branch with de#1") {
                try stores.allSatisfy { node, store in
                    let applied = try store.appliedGovernance()
                    return applied?.release == 1 && (applied?.overlay == "de#1") == node.rawValue.hasPrefix("de")
                }
            }

            // The dataset, each record written where it is created.
            for r in KPIFixture.records { try stores[r.at]!.commit([.upsert(r.table, id: r.id, r.fields)]) }

            let hqDB = hq.path
            func hqView(_ period: String = "month") throws -> KPIResponse {
                let (status, output) = try Child.capture(["kpi", "--db", hqDB, "--period", period, "--by", "node", "--json"], includingErrors: false)
                guard status == 0 else { throw TestFailure("tiersync kpi exited \(status): \(try Child.capture(["kpi", "--db", hqDB]).output)") }
                return try JSONDecoder().decode(KPIResponse.self, from: Data(output.utf8))
            }
            func row(_ rows: [KPIRow], _ kpi: String, _ node: String, _ scope: KPIRow.Scope) -> KPIRow? {
                rows.first { $0.kpi == kpi && $0.node == node && $0.scope == scope }
            }
            // Every node's snapshots reach HQ: its table then equals a recount of the raw
            // dialogues and leads HQ holds (all of them), rolled up over the same tree.
            let tree = try await hub.catalog.tree(of: "automaker")
            var paths: [String: [String]] = [:]
            for node in tree.parents.keys { paths[node.rawValue] = tree.path(of: node).split(separator: "/").map(String.init) }
            // All of the dataset first: a table and a recount can agree on part of it while
            // the rest is still on its way (seen on a loaded machine).
            let fixtureIDs = Dictionary(grouping: KPIFixture.records, by: \.table).mapValues { Set($0.map(\.id)) }
            try await eventually(timeout: 60, "HQ holds every record of the dataset, and its KPI table equals a recount of them") {
                for (table, ids) in fixtureIDs where !ids.isSubset(of: Set(try hq.liveRecords(table: table).map(\.id))) { return false }
                let view = try hqView()
                return try !view.rows.isEmpty && sums(view.rows) == sums(recomputed(hq, viewer: "hq", paths: paths))
            }
            let hqRows = try hqView().rows
            // Every node's own values are those worked out by hand (KPIFixture.expectedNovember).
            for (kpi, nodes) in KPIFixture.expectedNovember {
                for (node, want) in nodes {
                    let r = row(hqRows, kpi, node, .node)
                    #expect(r?.numerator == want.0 && r?.denominator == want.1, "\(kpi) at \(node): \(String(describing: r))")
                }
            }
            // Roll-ups add numerators and denominators: de's phone service level (de-1 2/4, de 0/1) is
            // 2/5 = 40 %, against de's overlay target of 85 %; fr's (fr-1 1/1) against the release's 80 %.
            let deSL = try #require(row(hqRows, "service-level-phone", "de", .subtree))
            #expect(deSL.numerator == 2 && deSL.denominator == 5 && deSL.value == 40 && deSL.level == "country")
            #expect(deSL.target == KPITarget(.atLeast, 85) && deSL.met == false)
            let frSL = try #require(row(hqRows, "service-level-phone", "fr", .subtree))
            #expect(frSL.value == 100 && frSL.target == KPITarget(.atLeast, 80) && frSL.met == true)
            // The whole tenant: (2 + 0 + 1)/(4 + 1 + 1) = 50 %, against HQ's release (80 %).
            let tenantSL = try #require(row(hqRows, "service-level-phone", "hq", .subtree))
            #expect(tenantSL.numerator == 3 && tenantSL.denominator == 6 && tenantSL.target == KPITarget(.atLeast, 80))
            // Handle time: (3,500 s + 600 s)/(5 + 1) = 683.33 s for de; (3,500 + 600 + 240)/7 = 620 s for the tenant.
            #expect(row(hqRows, "average-handle-time", "de", .subtree)?.numerator == 4_100_000)
            #expect(row(hqRows, "average-handle-time", "hq", .subtree)?.value == 620)
            // A dealer is not measured on phone service level (levels: hq, country): no target on its row.
            #expect(row(hqRows, "service-level-phone", "de-1", .node)?.target == nil)
            // Days: de-1's e-mail service level is 1/1 on 2026-11-02 and 0/1 on 2026-11-03.
            let days = try hqView("day").rows.filter { $0.kpi == "service-level-email" && $0.node == "de-1" }
            #expect(days.map { "\($0.periodStart) \($0.numerator)/\($0.denominator)" } == ["2026-11-02 1/1", "2026-11-03 0/1"])

            // The table as printed, and the accumulators at HQ equal to a recount.
            let table = try Child.run(["kpi", "--db", hqDB, "--by", "node", "--verify"])
            #expect(table.contains("accumulators equal a recount") && table.contains("release v1"), "\(table)")
            let deLine = try #require(table.split(separator: "\n").first { $0.contains("service-level-phone") && $0.contains("de (subtree)") })
            #expect(deLine.contains("40 %") && deLine.contains("≥ 85 %") && deLine.contains("MISSED") && deLine.contains("2/5"), "\(deLine)")

            // The API: de asking HQ sees its subtree only; de-1 asking de sees itself only; de's own
            // table (from de's store) equals a recount of what de holds.
            let deCredential = try #require(try de.store.meta("credential"))
            let atHQ = try await running.client(hub).send("GET", "/v1/kpis?period=month&by=node", credential: deCredential)
            #expect(atHQ.status == 200, "\(atHQ.text)")
            let deView = try atHQ.decode(KPIResponse.self)
            #expect(deView.node == "de" && !deView.rows.isEmpty && deView.rows.allSatisfy { $0.node.hasPrefix("de") })
            #expect(row(deView.rows, "service-level-phone", "de", .subtree)?.value == 40)
            // de's own table, from its store (the CLI on the country machine).
            let deOwn = try JSONDecoder().decode(KPIResponse.self, from: Data(try Child.run(["kpi", "--db", de.store.path, "--by", "node", "--json"]).utf8))
            #expect(try deOwn.node == "de" && sums(deOwn.rows) == sums(recomputed(de.store, viewer: "de", paths: paths)))
            #expect(row(deOwn.rows, "service-level-phone", "de", .subtree)?.target == KPITarget(.atLeast, 85))
            let deClient = running.client(baseURL: de.url, caFile: hub.caFile)
            let de1Credential: String = try #require(try stores["de-1"]!.meta("credential"))
            let de1 = try await deClient.send("GET", "/v1/kpis?period=week", credential: de1Credential)
            let de1View = try de1.decode(KPIResponse.self)
            #expect(de1View.node == "de-1" && !de1View.rows.isEmpty && de1View.rows.allSatisfy { $0.node == "de-1" && $0.scope == .subtree })
            // Only de-1's own values, by node too (helper 92: de answered de-1 with de-2's rows, and de-1's
            // subtree summed both): each row equals the one HQ shows for de-1 alone.
            let de1ByNode = try await deClient.send("GET", "/v1/kpis?period=month&by=node", credential: de1Credential).decode(KPIResponse.self)
            #expect(!de1ByNode.rows.isEmpty && de1ByNode.rows.allSatisfy { $0.node == "de-1" }, "\(de1ByNode.rows.map(\.node))")
            let hqMonth = try hqView("month").rows
            for r in de1ByNode.rows {
                let atHQ = try #require(hqMonth.first { $0.kpi == r.kpi && $0.node == "de-1" && $0.scope == .node && $0.periodStart == r.periodStart })
                #expect((r.numerator, r.denominator) == (atHQ.numerator, atHQ.denominator), "\(r.kpi): \(r.numerator)/\(r.denominator)")
            }
            #expect(try await deClient.send("GET", "/v1/kpis?period=year", credential: de1Credential).status == 400)

            // An update at a dealer: p2 answered in 15 s instead of 30 s. de's service level
            // becomes 3/5 = 60 % at HQ within seconds, still equal to a recount.
            try stores["de-1"]!.commit([.upsert("interactions", id: "p2", ["answered_at": "2026-11-02T10:00:15Z"])])
            try await eventually(timeout: 30, "the update reaches HQ's table") {
                let view = try hqView()
                return try row(view.rows, "service-level-phone", "de", .subtree)?.numerator == 3
                    && sums(view.rows) == sums(recomputed(hq, viewer: "hq", paths: paths))
            }
        }
    }
}

import Foundation
import Testing
import TiersyncAgent
import TiersyncCore
import TiersyncStore
import TiersyncTestSupport

/// Waits until every node's digest of its own scope equals HQ's digest of that scope.
func convergedByScope(_ stores: [NodeID: NodeStore], hq: NodeStore, tree: NodeTree, timeout: Double = 90) async throws {
    func lagging() throws -> [NodeID] {
        try stores.filter { node, store in
            let scope = Scope(tree: tree, node: node)
            return try store.digest(scope: scope) != hq.digest(scope: scope)
        }.map(\.key).sorted()
    }
    do {
        try await eventually(timeout: timeout, "every node converges on its scope") { try lagging().isEmpty }
    } catch {
        let detail = try lagging().map { node in
            "\(node): holds \(try stores[node]!.counts().records) head \(try stores[node]!.headSeq()), quarantined \(try stores[node]!.quarantined().count)"
        }
        throw TestFailure("\(error)\nHQ: \(try hq.counts().records)\n" + detail.joined(separator: "\n"))
    }
}

@Suite("Three tiers", .serialized)
struct ThreeTierTests {
    @Test("HQ, two countries with three dealers each, and a two-level tenant on the same hub: writes everywhere converge by scope; a routed lead reaches only its dealer, its country and HQ")
    func threeTiers() async throws {
        let dir = try TempDir()
        try await withRunning { running in
            let hub = try await running.hub(directory: dir.path)
            try hub.catalog.createTenant("acme", levels: 3)
            try hub.catalog.createTenant("insura", levels: 2)
            var countries: [NodeID: RunningCountry] = [:]
            var agents: [NodeID: RunningAgent] = [:]
            let layout: [NodeID: [NodeID]] = ["de": ["de-1", "de-2", "de-3"], "fr": ["fr-1", "fr-2", "fr-3"]]
            for (country, dealers) in layout {
                countries[country] = try await running.country(hub: hub, tenant: "acme", node: country, directory: dir.path)
                for dealer in dealers {
                    agents[dealer] = try await running.agent(enrolling: dealer, parent: country, tenant: "acme", hub: hub,
                                                             parentURL: countries[country]!.url, directory: dir.path)
                }
            }
            // The insurer: HQ and two agents, no middle level.
            for agent in ["ins-a", "ins-b"] as [NodeID] {
                agents[agent] = try await running.agent(enrolling: agent, parent: nil, tenant: "insura", hub: hub, parentURL: hub.url, directory: dir.path)
            }
            let hq = try hub.stores.store(for: "acme"), insuraHQ = try hub.stores.store(for: "insura")

            // Each dealer creates its 40 customers; HQ sees them.
            for (_, dealers) in layout {
                for dealer in dealers {
                    try agents[dealer]!.store.commit((0..<40).map { .upsert("customers", id: "\(dealer)-c\($0)", ["last_name": .string("\(dealer) \($0)")]) })
                }
            }
            try await eventually(timeout: 60, "HQ sees the dealers' customers") { try hq.liveRecords(table: "customers").count == 240 }

            // Then concurrent writes at every level, including edits of the same fields.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (_, dealers) in layout {
                    for dealer in dealers {
                        let store = agents[dealer]!.store
                        group.addTask {
                            for i in 40..<60 {
                                try store.commit([.upsert("customers", id: "\(dealer)-c\(i % 40)", ["last_name": .string("\(dealer) \(i)")])])
                                if i % 5 == 0 { try await Task.sleep(for: .milliseconds(5)) }
                            }
                        }
                    }
                }
                for (country, dealers) in layout {
                    let store = countries[country]!.store
                    group.addTask {
                        for i in 0..<20 {
                            // Country staff escalate contacts for their dealers' customers.
                            try store.commit([.upsert("interactions", id: "\(country)-esc-\(i)", [
                                "customer_id": .string("\(dealers[i % 3])-c\(i)"), "handling_level": "country",
                                "handling_node": .string(dealers[i % 3].rawValue), "urgency": "high",
                            ])])
                        }
                    }
                }
                group.addTask {
                    for i in 0..<20 {
                        try hq.commit([.upsert("customers", id: "de-1-c\(i)", ["segment_value": "A", "last_name": .string("hq \(i)")])])
                    }
                    try hq.commit([.upsert("leads", id: "lead-1", ["source_node": "hq", "fulfilling_node": "fr-2", "value": 9_500.0,
                                                                   "status": "new", "source_channel": "phone"])])
                }
                for agent in ["ins-a", "ins-b"] as [NodeID] {
                    let store = agents[agent]!.store
                    group.addTask {
                        for i in 0..<30 { try store.commit([.upsert("customers", id: "\(agent)-p\(i)", ["last_name": "Policyholder"])]) }
                    }
                }
                try await group.waitForAll()
            }

            var stores: [NodeID: NodeStore] = ["hq": hq]
            for (country, dealers) in layout {
                stores[country] = countries[country]!.store
                for dealer in dealers { stores[dealer] = agents[dealer]!.store }
            }
            let tree = try await hub.catalog.tree(of: "acme")
            try await convergedByScope(stores, hq: hq, tree: tree)
            try await convergedByScope(["ins-a": agents["ins-a"]!.store, "ins-b": agents["ins-b"]!.store],
                                       hq: insuraHQ, tree: try await hub.catalog.tree(of: "insura"))

            // HQ holds every change exactly once: 6 dealers × 60, 2 countries × 20, its own 21.
            let counts = try hq.changeCountsByOrigin()
            for (_, dealers) in layout { for dealer in dealers { #expect(counts[dealer] == 60) } }
            #expect(counts["de"] == 20 && counts["fr"] == 20 && counts["hq"] == 21)
            #expect(try hq.quarantined().isEmpty)

            // The lead: at fr-2, its country fr, and HQ; nowhere else.
            for (node, store) in stores {
                let has = try store.record(table: "leads", id: "lead-1") != nil
                #expect(has == ["hq", "fr", "fr-2"].contains(node), "lead-1 at \(node): \(has)")
            }
            // A dealer holds only its own records; a country its subtree's.
            #expect(try stores["de-2"]!.liveRecords(table: "customers").allSatisfy { $0.id.hasPrefix("de-2-") })
            #expect(try stores["de"]!.liveRecords(table: "customers").allSatisfy { $0.id.hasPrefix("de-") })
            #expect(try stores["fr"]!.liveRecords(table: "customers").count == 120)
            // HQ's edits of de-1's customers reached de-1, through de.
            #expect(try stores["de-1"]!.record(table: "customers", id: "de-1-c3")?.state.liveValues["segment_value"] == "A")
            // The escalations written at de reached the dealers they name.
            #expect(try stores["de-2"]!.record(table: "interactions", id: "de-esc-1") != nil)
            #expect(try stores["de-1"]!.record(table: "interactions", id: "de-esc-1") == nil)
            // The tenants never mix.
            #expect(try insuraHQ.liveRecords(table: "customers").count == 60)
            #expect(try hq.liveRecords(table: "customers").allSatisfy { !$0.id.hasPrefix("ins-") })
            // Lineage: the lead went hq → fr → fr-2.
            let trail = try #require(try stores["fr-2"]!.lineage(recordID: "lead-1").first?.change.trail.map(\.node))
            #expect(trail == ["fr", "fr-2"])
            let upward = try #require(try hq.lineage(recordID: "de-esc-1").first?.change.trail.map(\.node))
            #expect(upward == ["hq"], "a country's own change arrives at HQ directly")
            let relayed = try #require(try hq.lineage(recordID: "de-2-c5").first?.change.trail.map(\.node))
            #expect(relayed == ["de", "hq"])
        }
    }

    @Test("a dealer moved to another country mid-stream loses nothing and duplicates nothing")
    func reparent() async throws {
        let dir = try TempDir()
        try await withRunning { running in
            let hub = try await running.hub(directory: dir.path)
            try hub.catalog.createTenant("acme", levels: 3)
            let de = try await running.country(hub: hub, tenant: "acme", node: "de", directory: dir.path)
            let fr = try await running.country(hub: hub, tenant: "acme", node: "fr", directory: dir.path)
            let hq = try hub.stores.store(for: "acme")
            var mover = try await running.agent(enrolling: "mover", parent: "de", tenant: "acme", hub: hub, parentURL: de.url, directory: dir.path)
            let stay = try await running.agent(enrolling: "fr-stay", parent: "fr", tenant: "acme", hub: hub, parentURL: fr.url, directory: dir.path)
            let store = mover.store

            // HQ routes a lead to the mover while it is in de.
            try hq.commit([.upsert("leads", id: "lead-for-mover", ["source_node": "hq", "fulfilling_node": "mover", "status": "new"])])
            for i in 0..<150 { try store.commit([.upsert("customers", id: "m-\(i % 100)", ["last_name": .string("v\(i)")])]) }
            try await Task.sleep(for: .milliseconds(200))

            // Mid-stream: moved at HQ; its agent is pointed at fr while writes continue.
            try hub.catalog.moveNode("mover", of: "acme", to: "fr")
            await mover.stop()
            for i in 150..<200 { try store.commit([.upsert("customers", id: "m-\(i % 100)", ["last_name": .string("v\(i)")])]) }
            #expect(try SyncAgent.adoptParent(store: store, url: fr.url))
            mover = try running.agent(store: store, parentURL: fr.url, caFile: hub.caFile)
            for i in 200..<300 { try store.commit([.upsert("customers", id: "m-\(i % 100)", ["last_name": .string("v\(i)")])]) }

            let tree = try await hub.catalog.tree(of: "acme")
            #expect(tree.path(of: "mover") == "hq/fr/mover")
            try await convergedByScope(["mover": store, "fr": fr.store, "fr-stay": stay.store], hq: hq, tree: tree)
            try await eventually(timeout: 30, "HQ holds each of the mover's 300 changes once") {
                try hq.changeCountsByOrigin()["mover"] == 300
            }
            // fr now holds the mover's records, including the lead HQ routed to it before the move.
            #expect(try fr.store.record(table: "leads", id: "lead-for-mover") != nil)
            #expect(try fr.store.liveRecords(table: "customers").filter { $0.id.hasPrefix("m-") }.count == 100)
            #expect(try hq.liveRecords(table: "customers").first { $0.id == "m-99" }?.values["last_name"] == "v299")
            #expect(try fr.store.changeCountsByOrigin()["mover"] == 300)
            try await eventually(timeout: 30, "nothing left in HQ's quarantine") { try hq.quarantined().isEmpty }
        }
    }

    @Test("while HQ is down a country keeps accepting its dealers' changes, and forwards them when HQ returns")
    func hqOutage() async throws {
        let dir = try TempDir()
        try await withRunning { running in
            var hub = try await running.hub(directory: dir.path)
            try hub.catalog.createTenant("acme", levels: 3)
            let de = try await running.country(hub: hub, tenant: "acme", node: "de", directory: dir.path)
            let dealer = try await running.agent(enrolling: "d1", parent: "de", tenant: "acme", hub: hub, parentURL: de.url, directory: dir.path)
            try dealer.store.commit([.upsert("customers", id: "before", ["last_name": "Online"])])
            try await eventually(timeout: 30, "HQ has the first change") { try hub.stores.store(for: "acme").changeCountsByOrigin()["d1"] == 1 }

            let port = hub.port
            await hub.stop()
            for i in 0..<50 { try dealer.store.commit([.upsert("customers", id: "offline-\(i)", ["last_name": "HQ down"])]) }
            try await eventually(timeout: 30, "the country accepted all of the dealer's changes") {
                try de.store.changeCountsByOrigin()["d1"] == 51 && dealer.store.upstreamBacklog(after: dealer.store.cursor("push.parent")) == 0
            }
            #expect(try de.store.upstreamBacklog(after: de.store.cursor("push.parent")) == 50, "held for HQ")

            hub = try await running.hub(directory: dir.path, port: port)
            let hq = try hub.stores.store(for: "acme")
            try await eventually(timeout: 60, "the country forwarded everything once HQ came back") {
                try hq.changeCountsByOrigin()["d1"] == 51
            }
            #expect(try hq.liveRecords(table: "customers").count == 51)
            // Children before their parents (the scope would stop the restarted hub first).
            await dealer.stop()
            await de.stop()
            await hub.stop()
        }
    }

    @Test("a dealer enrolling through the wrong country is refused, and its token stays usable")
    func enrollThroughWrongCountry() async throws {
        let dir = try TempDir()
        try await withRunning { running in
            let hub = try await running.hub(directory: dir.path)
            try hub.catalog.createTenant("acme", levels: 3)
            let de = try await running.country(hub: hub, tenant: "acme", node: "de", directory: dir.path)
            let fr = try await running.country(hub: hub, tenant: "acme", node: "fr", directory: dir.path)
            let token = try hub.catalog.issueEnrollmentToken(tenant: "acme", node: "de-9", parent: "de")
            let store = try NodeStore(path: dir.path + "/de-9.sqlite")
            do {
                try await SyncAgent.enroll(store: store, configuration: AgentConfiguration(parentURL: fr.url, caFile: hub.caFile), token: token)
                Issue.record("enrolling through fr should fail")
            } catch AgentError.http(let status, let code, let message) {
                #expect(status == 409 && code == "wrong_parent")
                #expect(message.contains("under 'de', not under 'fr'"))
            }
            let identity = try await SyncAgent.enroll(store: store, configuration: AgentConfiguration(parentURL: de.url, caFile: hub.caFile), token: token)
            #expect(identity.parent == "de")
        }
    }
}

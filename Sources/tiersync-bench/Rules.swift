import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOSSL
import TiersyncAgent
import TiersyncCore
import TiersyncGovernance
import TiersyncServer
import TiersyncStore

/// Local ingest of new interactions at a dealer, with the node's rules on (release v1 of the
/// automaker fixtures in force, received and verified over the real protocol, and the
/// agent's `AllocationPolicy` installed on the store) and off (no policy), in the same run,
/// on the same store: rounds alternate off/on and on/off so the store's growth and the
/// machine's drift weigh on both alike. The ratio on ÷ off is the price of the rules.
struct Rules: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rules",
        abstract: "Local ingest of interactions at a dealer with allocation rules on vs off, as a ratio (target ≥ 0.9).")
    @Option(help: "Interactions written per round and mode, in batched commits.") var interactions = 20_000
    @Option(help: "Interactions per commit for the batched figure (a bulk import, `tiersync generate`).") var batch = 500
    @Option(help: "Interactions written one per commit per round and mode (a person's `contact add`).") var single = 2_000
    @Option(help: "Rounds; each writes in both modes, alternating which goes first.") var rounds = 4
    @Option(help: "Customers the interactions belong to (allocation reads each one's key-account flag and segment).") var customers = 2_000
    @Option(help: "The governance sources HQ publishes (default: the automaker fixtures of this checkout).") var governance: String?
    @Option(help: "Interactions pushed to HQ per round and mode for the hub ingest figure (0: skip it).") var hubInteractions = 40_000
    @Option(help: "Changes per push request for the hub ingest figure.") var hubBatch = 1_000
    @OptionGroup var common: CommonOptions

    func run() async throws {
        quietLogs()
        let (dir, cleanup) = try common.workingDirectory("rules")
        defer { cleanup() }
        let sources = governance ?? Self.repositoryRoot() + "/fixtures/governance/automaker"
        header("rules", [("interactions", "\(interactions)/round/mode"), ("batch", "\(batch)"), ("single", "\(single)/round/mode"),
                         ("rounds", "\(rounds)"), ("customers", "\(customers)"), ("node", "dealer de-berlin (hq/de/de-berlin)"),
                         ("governance", URL(fileURLWithPath: sources).lastPathComponent + " v1")])
        let store = try await dealerWithReleaseInForce(dir: dir, sources: sources)
        guard let policy = store.writePolicy else { throw BenchError("the agent installed no allocation policy") }

        // The customers, written before the clock starts (without the policy: they are not interactions).
        store.writePolicy = nil
        let segments = ["A", "B", "C", "D"]
        for chunk in stride(from: 0, to: customers, by: 1_000) {
            try store.commit((chunk..<min(chunk + 1_000, customers)).map { i in
                .upsert("customers", id: "cust-\(i)", ["last_name": .string("Customer \(i)"), "segment_value": .string(segments[i % 4]),
                                                      "key_account": .bool(i % 37 == 0)])
            })
        }

        var seconds: [Mode: (batched: Double, single: Double)] = [.off: (0, 0), .on: (0, 0), .given: (0, 0)]
        var ratios: [Double] = []
        var singleRatios: [Double] = []
        // What the rules added to each interaction, kept from the first round with them on:
        // the `given` mode writes the same fields without the policy (the decision's storage
        // alone, without deciding).
        var decided: [[String: FieldValue]] = []
        var givenRounds = 0.0
        for round in 0..<rounds {
            let order: [Mode] = round % 2 == 0 ? [.off, .on, .given] : [.given, .on, .off]
            var took: [Mode: (batched: Double, single: Double)] = [:]
            for mode in order where mode != .given || !decided.isEmpty {
                store.writePolicy = mode == .on ? policy : nil
                var writes = makeInteractions(prefix: "r\(round)-\(mode)", count: interactions + single)
                if mode == .given { for i in writes.indices { writes[i].fields = decided[i] } }
                let batched = Array(writes[..<interactions]), singles = Array(writes[interactions...])
                var start = ContinuousClock.now
                var made: [Change] = []
                made.reserveCapacity(writes.count)
                for chunk in stride(from: 0, to: batched.count, by: batch) {
                    made += try store.commit(Array(batched[chunk..<min(chunk + batch, batched.count)]))
                }
                let b = elapsedSeconds(since: start)
                start = ContinuousClock.now
                for write in singles { made += try store.commit([write]) }
                let s = elapsedSeconds(since: start)
                // The rules were really on (or off): the changes say.
                let allocated = made.first?.fields["decision_rule"] != nil
                guard allocated == (mode != .off) else { throw BenchError("rules \(mode) but the interactions were \(allocated ? "" : "not ")allocated") }
                if mode == .on, decided.isEmpty { decided = made.map(\.fields) }
                took[mode] = (b, s)
                if mode == .given { givenRounds += 1 }
                seconds[mode]!.batched += b
                seconds[mode]!.single += s
            }
            ratios.append(took[.off]!.batched / took[.on]!.batched)
            if single > 0 { singleRatios.append(took[.off]!.single / took[.on]!.single) }
        }
        store.writePolicy = policy

        let written = Double(interactions * rounds), writtenSingle = Double(single * rounds)
        let off = written / seconds[.off]!.batched, on = written / seconds[.on]!.batched
        let ratio = on / off
        func spread(_ r: [Double]) -> String { "rounds \(format(r.min() ?? .nan, 3))–\(format(r.max() ?? .nan, 3))" }
        result("rules off, batch \(batch)", "\(format(off)) interactions/s")
        result("rules on, batch \(batch)", "\(format(on)) interactions/s")
        result("ratio on ÷ off, batch \(batch)", "\(format(ratio, 3)) (\(spread(ratios)))", target: "≥ 0.9", met: ratio >= 0.9)
        if givenRounds > 0 {
            let given = Double(interactions) * givenRounds / seconds[.given]!.batched
            result("decision given, no rules", "\(format(given)) interactions/s (\(format(given / off, 3)) of off: storing the decision's fields; on ÷ given \(format(on / given, 3)): deciding)")
        }
        if single > 0 {
            let sOff = writtenSingle / seconds[.off]!.single, sOn = writtenSingle / seconds[.on]!.single
            result("rules off, one per commit", "\(format(sOff)) interactions/s")
            result("rules on, one per commit", "\(format(sOn)) interactions/s")
            result("ratio on ÷ off, one per commit", "\(format(sOn / sOff, 3)) (\(spread(singleRatios)))", target: "≥ 0.9", met: sOn / sOff >= 0.9)
            if givenRounds > 0 {
                let given = Double(single) * givenRounds / seconds[.given]!.single
                result("decision given, one per commit", "\(format(given)) interactions/s (\(format(given / sOff, 3)) of off; on ÷ given \(format(sOn / given, 3)))")
            }
        }
        let rules = try Set(store.liveRecords(table: "interactions").compactMap { $0.values["decision_rule"]?.stringValue })
        result("rules that decided", "\(rules.count) of the release's allocation rules")

        if hubInteractions > 0 {
            let hub = try await hubIngest(dir: dir + "/hub", sources: sources, decided: decided)
            result("hub ingest, rules off", "\(format(hub.off)) interactions/s (no release at HQ; interactions as written without rules)")
            result("hub ingest, rules on", "\(format(hub.on)) interactions/s (release v1 in force at HQ, KPIs counted; interactions carrying their decisions)")
            result("ratio on ÷ off, hub ingest", "\(format(hub.on / hub.off, 3)) (\(spread(hub.ratios)))", target: "≥ 0.9", met: hub.on / hub.off >= 0.9)
        }
    }

    /// Ingest at HQ, as the `ingest` scenario measures it (pre-encoded gzip push bodies over
    /// HTTPS, so only the hub's work is timed), of a dealer's new interactions, in two tenants
    /// of one hub: **off** has no release, and its dealer wrote without rules; **on** has
    /// release v1 published and in force at HQ (so HQ's store counts the release's KPIs on
    /// every received dialogue) and its dealer's interactions carry the decisions the rules
    /// made (the fields of `decided`, cycled). Rounds alternate which tenant goes first.
    private func hubIngest(dir: String, sources: String, decided: [[String: FieldValue]]) async throws -> (off: Double, on: Double, ratios: [Double]) {
        guard !decided.isEmpty else { throw BenchError("no decided interactions to push") }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let hub = try await BenchHub.start(in: dir)
        var credentials: [Mode: String] = [:]
        for mode in [Mode.off, .on] {
            let tenant: TenantID = mode == .on ? "automaker" : "plain"  // the sources name their tenant
            _ = try hub.stores.catalog.createTenant(tenant, levels: 3, allowDirectSync: true)
            _ = try await hub.credential(tenant: tenant, node: "de")
            credentials[mode] = try await hub.stores.catalog.redeem(
                token: try hub.stores.catalog.issueEnrollmentToken(tenant: tenant, node: "de-berlin", parent: "de")).credential
            guard mode == .on else { continue }
            let key = GovernanceSigningKey()
            try hub.stores.catalog.setReleaseKey(key.publicKey.base64, for: tenant)
            let store = try hub.stores.store(for: tenant)
            let publisher = GovernancePublisher(store: store, tenant: tenant, key: key, tree: try await hub.stores.catalog.tree(of: tenant))
            try await publisher.publish(try GovernanceCompiler.compile(directory: sources))
            try await KPIViews.adopt(store)
            guard try store.kpiAdoption() != nil else { throw BenchError("HQ adopted no KPIs from release v1") }
        }
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .file(hub.caFile)
        let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tls))
        var seconds: [Mode: Double] = [.off: 0, .on: 0]
        var ratios: [Double] = []
        var nextSeq: [Mode: Int64] = [.off: 1, .on: 1]
        do {
            for round in 0..<rounds {
                var took: [Mode: Double] = [:]
                for mode in round % 2 == 0 ? [Mode.off, .on] : [.on, .off] {
                    // Encoded before the clock starts: agents encode on their own machines.
                    let plain = makeInteractions(prefix: "hub-r\(round)", count: hubInteractions)
                    let start = WallClock.nowMillis() - 5_000
                    let first = nextSeq[mode]!
                    // As the dealer's store logs them: made there (`originating_node`, which the
                    // store fills in), with or without the decision. Each customer with a few dialogues (four in a row, so different topics),
                    // as a market's contacts spread: first-contact resolution re-judges a
                    // customer's dialogues on a topic, and the local rounds' few thousand
                    // customers cycled over this many would pile dozens on each.
                    let changes = plain.enumerated().map { i, write in
                        var fields = mode == .on ? decided[i % decided.count] : write.fields.merging(["originating_node": "de-berlin"]) { a, _ in a }
                        fields["customer_id"] = .string("hub-r\(round)-cust-\(i / 4)")
                        return Change(origin: "de-berlin", originSeq: first + Int64(i),
                                      hlc: HLCTimestamp(wallMillis: start + UInt64(i / 1_000), counter: UInt16(i % 1_000)),
                                      table: "interactions", recordID: write.id, op: .upsert, fields: fields)
                    }
                    nextSeq[mode]! += Int64(changes.count)
                    let bodies = try stride(from: 0, to: changes.count, by: hubBatch).map { chunk in
                        let slice = Array(changes[chunk..<min(chunk + hubBatch, changes.count)])
                        return try ParentClient.encodeBody(PushRequest(through: slice.last!.originSeq, changes: slice), compressAboveBytes: 1_024).bytes
                    }
                    let clock = ContinuousClock.now
                    for body in bodies {
                        var request = HTTPClientRequest(url: hub.url + "/v1/push")
                        request.method = .POST
                        request.headers.add(name: "Authorization", value: "Bearer \(credentials[mode]!)")
                        request.headers.add(name: "Content-Encoding", value: "gzip")
                        request.body = .bytes(body)
                        let response = try await http.execute(request, timeout: .seconds(120))
                        let body = try await response.body.collect(upTo: 1 << 22)
                        guard response.status == .ok, let reply = try? JSONDecoder().decode(PushResponse.self, from: Data(buffer: body)),
                              reply.rejected.isEmpty, reply.applied == hubBatch || reply.applied == changes.count % hubBatch else {
                            throw BenchError("hub answered \(response.status): \(String(buffer: body).prefix(300))")
                        }
                    }
                    took[mode] = elapsedSeconds(since: clock)
                    seconds[mode]! += took[mode]!
                }
                ratios.append(took[.off]! / took[.on]!)
            }
            let held = try hub.stores.store(for: "automaker").liveRecords(table: "interactions", limit: 1)
            guard held.first?.values["decision_rule"] != nil else { throw BenchError("HQ holds no decided interaction") }
        } catch {
            try? await http.shutdown()
            await hub.stop()
            throw error
        }
        try await http.shutdown()
        await hub.stop()
        let total = Double(hubInteractions * rounds)
        return (total / seconds[.off]!, total / seconds[.on]!, ratios)
    }

    /// off: no policy; on: the allocation policy decides; given: no policy, the writer gives
    /// the very fields the policy added (its decision) — what storing them costs alone.
    enum Mode: String, CustomStringConvertible {
        case off, on, given
        var description: String { rawValue }
    }

    /// New inbound interactions as a dealer's application writes them: channel, topic,
    /// knowledge kind, urgency and customer varied so every kind of rule decides.
    func makeInteractions(prefix: String, count: Int) -> [RecordWrite] {
        let kinds: [(topic: String, knowledge: String?, urgency: String, channel: String)] = [
            ("service-appointment", "specification", "normal", "phone"), ("test-drive", "specification", "normal", "visit"),
            ("offer", "specification", "low", "email"), ("financing", "scheme", "normal", "web"),
            ("financing", "scheme", "normal", "phone"), ("repair", "specification", "high", "phone"),
            ("charging", "scheme", "normal", "chat"), ("infotainment", "specification", "normal", "email"),
            ("breakdown", "specification", "critical", "phone"), ("recall", "specification", "critical", "phone"),
            ("opening-hours", nil, "low", "phone"), ("warranty", "specification", "normal", "visit"),
        ]
        let created = ISO8601DateFormatter().string(from: Date())
        return (0..<count).map { i in
            let k = kinds[i % kinds.count]
            var fields: [String: FieldValue] = [
                "customer_id": .string("cust-\((i * 7919) % customers)"), "channel": .string(k.channel), "direction": "inbound",
                "topic": .string(k.topic), "urgency": .string(k.urgency), "status": "new", "created_at": .string(created),
                "summary": .string("Asks about \(k.topic)"),
            ]
            if let knowledge = k.knowledge { fields["knowledge_kind"] = .string(knowledge) }
            return .upsert("interactions", id: "\(prefix)-\(i)", fields)
        }
    }

    /// A dealer store (de-berlin under de, under HQ) enrolled at a hub in this process, with
    /// release v1 published by HQ, received, verified and applied by its agent, and its path
    /// from whoami: what a dealer in the field holds. The hub is stopped afterwards; the
    /// store keeps the policy the agent installed.
    private func dealerWithReleaseInForce(dir: String, sources: String) async throws -> NodeStore {
        let hub = try await BenchHub.start(in: dir)
        let tenant: TenantID = "automaker"
        _ = try hub.stores.catalog.createTenant(tenant, levels: 3, allowDirectSync: true)
        let key = GovernanceSigningKey()
        try hub.stores.catalog.setReleaseKey(key.publicKey.base64, for: tenant)
        _ = try await hub.credential(tenant: tenant, node: "de")
        let store = try NodeStore(path: dir + "/de-berlin.sqlite")
        let configuration = AgentConfiguration(parentURL: hub.url, caFile: hub.caFile)
        try await SyncAgent.enroll(store: store, configuration: configuration,
                                   token: try hub.stores.catalog.issueEnrollmentToken(tenant: tenant, node: "de-berlin", parent: "de"))
        let publisher = GovernancePublisher(store: try hub.stores.store(for: tenant), tenant: tenant, key: key,
                                            tree: try await hub.stores.catalog.tree(of: tenant))
        try await publisher.publish(try GovernanceCompiler.compile(directory: sources))
        let agent = try SyncAgent(store: store, configuration: configuration)
        do {
            try await agent.syncGovernanceOnce()
            let me = try await agent.parent.whoami()
            guard let path = me.path else { throw BenchError("whoami answered no path") }
            try store.setMeta(AllocationPolicy.pathMeta, path.map(\.rawValue).joined(separator: "/"))
        } catch {
            await agent.shutdown()
            await hub.stop()
            throw error
        }
        await agent.shutdown()
        await hub.stop()
        guard try store.appliedGovernance()?.release == 1 else { throw BenchError("the dealer did not apply release v1") }
        return store
    }

    /// The checkout this program was built from (for the fixtures).
    static func repositoryRoot(from file: String = #filePath) -> String {
        URL(fileURLWithPath: file).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }
}

import ArgumentParser
import Foundation
import Logging
import PostgresNIO
import TiersyncCore
import TiersyncPostgres
import TiersyncStorage
import TiersyncStore

/// Bounded storage under churn (docs/PRIVACY.md, "Bounded storage"): N updates over R
/// records owned by D dealers under two countries, HQ editing some of them too. Every round
/// each dealer commits its share, pushes to its country, the country to HQ, and each pulls
/// its scope back down — the agents' and hubs' store calls, in process and without HTTPS, so
/// a million updates take minutes. Each store is compacted every few rounds (what the hub's
/// and agents' retention interval does); footprints are sampled between compactions.
/// Reports per tier the largest database file against the live data it holds (a copy with
/// only the domain tables), during the run and after it.
struct RetentionBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "retention",
        abstract: "Store size under churn: each store (the hub's included) against its live data, during and after N updates.")
    @Option(help: "Updates in all (dealers' and HQ's).") var updates = 1_000_000
    @Option(help: "Records (customers), spread over the dealers.") var records = 10_000
    @Option(help: "Dealers (half under each of two countries).") var dealers = 20
    @Option(help: "Sync rounds.") var rounds = 100
    @Option(help: "Rounds between compactions.") var compactEvery = 5
    @Option(help: "Footprint samples during the run.") var samples = 8
    @Option(help: "Percent of the updates made at HQ (they flow down to the dealers).") var hqPercent = 5
    @Option(help: "HQ on PostgreSQL (postgres://USER@HOST:PORT/DATABASE; a fresh database on it, dropped afterwards): the hub's store is measured there. HQ then makes no updates of its own, and the fresh nodes bootstrapping after the run are compared with the country HQ fed.")
    var postgres: String?
    @OptionGroup var common: CommonOptions

    func validate() throws {
        guard updates > 0, records >= dealers, dealers >= 2, rounds > 0, compactEvery > 0, samples >= 0, (0...100).contains(hqPercent) else {
            throw ValidationError("need updates > 0, records ≥ dealers ≥ 2, rounds > 0, compact-every > 0, samples ≥ 0, 0 ≤ hq-percent ≤ 100")
        }
    }

    func run() async throws {
        quietLogs()
        let (dir, cleanup) = try common.workingDirectory("retention")
        defer { cleanup() }
        guard let postgres else { return try await measure(dir: dir, postgresHQ: nil) }
        try await withFreshDatabase(try PostgresEndpoint(url: postgres)) { endpoint in
            try await withPostgresClient(endpoint) { client in
                try await measure(dir: dir, postgresHQ: PostgresTenantStore(client: client, tenant: "acme", rootOf: { _ in "hq" }))
            }
        }
    }

    private func measure(dir: String, postgresHQ: PostgresTenantStore?) async throws {
        let hqPercent = postgresHQ == nil ? self.hqPercent : 0
        header("retention", [("updates", "\(updates)"), ("records", "\(records)"), ("dealers", "\(dealers)"), ("rounds", "\(rounds)"),
                             ("compact-every", "\(compactEvery) rounds"), ("hq", "\(hqPercent)%"), ("hq store", postgresHQ == nil ? "SQLite" : "PostgreSQL")])
        var net = try ChurnNetwork(dir: dir, dealers: dealers, postgresHQ: postgresHQ)
        try await net.seed(records: records)
        let perRound = max(1, updates / rounds)
        let sampleRounds = samples == 0 ? Set<Int>() : Set((1...samples).map { $0 * rounds / (samples + 1) })
        var worst: [ChurnNetwork.Tier: (ratio: Double, footprint: StorageFootprint)] = [:]
        var made = 0
        var hqCompaction = Duration.zero, passes = 0
        let start = ContinuousClock.now
        var lastReport = ContinuousClock.now
        for round in 1...rounds {
            let count = round == rounds ? updates - made : min(perRound, updates - made)
            try await net.churn(updates: count, hqShare: Double(hqPercent) / 100, records: records, round: round)
            made += count
            try await net.sync()
            if round % compactEvery == 0 {
                hqCompaction += try await net.compact()
                passes += 1
            }
            if sampleRounds.contains(round) {
                for (tier, footprint) in try await net.footprints() { worst[tier] = Self.worse(worst[tier], footprint) }
            }
            if ContinuousClock.now - lastReport > .seconds(2) {
                lastReport = ContinuousClock.now
                print("  … \(made) of \(updates) updates, round \(round) of \(rounds)", terminator: "\r")
                fflush(nil)
            }
        }
        let elapsed = elapsedSeconds(since: start)
        try await net.sync()
        try await net.compact()
        guard try net.converged() else { throw BenchError("the dealers' stores differ from HQ's in their scopes") }
        // Most of what the stores hold now is folded into records: a node joining after the
        // run must still receive its whole scope.
        let joined = try await net.bootstrapFresh(in: dir)
        result("fresh bootstrap after the run", "a new country: \(joined.countryRecords) records; a new dealer: \(joined.dealerRecords) records; "
               + (postgresHQ == nil ? "digests equal HQ's" : "digests equal those of the country HQ fed"))
        var after: [ChurnNetwork.Tier: (ratio: Double, footprint: StorageFootprint)] = [:]
        for (tier, footprint) in try await net.footprints() { after[tier] = Self.worse(after[tier], footprint) }
        result("updates", "\(made) in \(format(elapsed, 1)) s (\(format(Double(made) / elapsed)) updates/s, each applied at its dealer, country and HQ)")
        let compactSeconds = Double(hqCompaction.components.seconds) + Double(hqCompaction.components.attoseconds) / 1e18
        result("HQ's compaction", "\(format(compactSeconds, 1)) s of the run in \(passes) passes (\(format(compactSeconds * 1_000 / Double(max(passes, 1)), 1)) ms each)")
        for tier in ChurnNetwork.Tier.allCases {
            if let during = worst[tier] { Self.report("\(tier.rawValue), during", during) }
            if let final = after[tier] { Self.report("\(tier.rawValue), after", final) }
        }
        let ratios = (Array(worst.values) + Array(after.values)).map(\.ratio)
        let highest = ratios.max() ?? 0
        result("largest file ÷ live data", format(highest, 2), target: "≤ 2.0 for every store, during and after", met: highest <= 2.0)
    }

    static func worse(_ a: (ratio: Double, footprint: StorageFootprint)?, _ b: StorageFootprint) -> (ratio: Double, footprint: StorageFootprint) {
        guard let a, a.ratio >= b.fileRatio else { return (b.fileRatio, b) }
        return a
    }

    static func report(_ name: String, _ worst: (ratio: Double, footprint: StorageFootprint)) {
        let f = worst.footprint
        let mib = { (bytes: Int64) in format(Double(bytes) / 1_048_576, 2) }
        result(name, "file \(mib(f.fileBytes)) MiB ÷ live \(mib(f.liveBytes)) MiB = \(format(worst.ratio, 2))× (in use \(mib(f.usedBytes)) MiB, WAL \(mib(f.walBytes)) MiB; folded identities \(mib(f.liveWithFoldedBytes - f.liveBytes)) MiB of the file)")
    }
}

/// HQ, two countries and their dealers as stores, synced by the calls agents and hubs make.
struct ChurnNetwork {
    enum Tier: String, CaseIterable { case hq = "HQ", country = "country (largest)", dealer = "dealer (largest)" }

    let hq: NodeStore
    /// HQ on PostgreSQL instead (`hq` is then unused): the countries push to it and pull from
    /// it through the hub's store interface.
    let postgresHQ: PostgresTenantStore?
    let countries: [NodeID: NodeStore]
    let dealers: [NodeID: (store: NodeStore, country: NodeID)]
    let tree: NodeTree
    let policy = RetentionPolicy(horizon: .seconds(30 * 86_400), interval: .seconds(60))
    var rng = SystemRandomNumberGenerator()

    init(dir: String, dealers count: Int, postgresHQ: PostgresTenantStore? = nil) throws {
        self.postgresHQ = postgresHQ
        func store(_ node: NodeID, parent: NodeID?) throws -> NodeStore {
            let store = try NodeStore(path: "\(dir)/\(node).sqlite")
            try store.setIdentity(NodeIdentity(tenant: "acme", node: node, parent: parent))
            return store
        }
        hq = try store("hq", parent: nil)
        countries = try Dictionary(uniqueKeysWithValues: ["de", "fr"].map { ($0, try store($0, parent: "hq")) })
        var parents: [NodeID: NodeID?] = ["hq": nil, "de": "hq", "fr": "hq"]
        var dealers: [NodeID: (NodeStore, NodeID)] = [:]
        for i in 0..<count {
            let node = NodeID(unchecked: String(format: "d%02d", i))
            let country: NodeID = i % 2 == 0 ? "de" : "fr"
            dealers[node] = (try store(node, parent: country), country)
            parents[node] = country
        }
        self.dealers = dealers
        tree = NodeTree(parents: parents)
    }

    var sortedDealers: [NodeID] { dealers.keys.sorted() }

    func owner(of record: Int) -> NodeID { sortedDealers[record % dealers.count] }

    /// Each dealer creates its records (record i belongs to dealer i mod D).
    mutating func seed(records: Int) async throws {
        for dealer in sortedDealers {
            let mine = stride(from: sortedDealers.firstIndex(of: dealer)!, to: records, by: dealers.count)
            for chunk in Array(mine).chunked(500) {
                try dealers[dealer]!.store.commit(chunk.map { .upsert("customers", id: "c-\($0)", contactFields($0, owner: dealer)) })
            }
        }
        try await sync()
    }

    /// `updates` edits of one or two fields of random records, at their dealers and (a
    /// share) at HQ, in commits of 50.
    mutating func churn(updates: Int, hqShare: Double, records: Int, round: Int) async throws {
        var writes: [NodeID: [RecordWrite]] = [:]
        for n in 0..<updates {
            let record = Int.random(in: 0..<records, using: &rng)
            let at: NodeID = Double.random(in: 0..<1, using: &rng) < hqShare ? "hq" : owner(of: record)
            var fields: [String: FieldValue] = ["phone": .string("+49 30 \(round)\(n)")]
            if n % 3 == 0 { fields["email"] = .string("r\(round).u\(n)@example.com") }
            writes[at, default: []].append(.upsert("customers", id: "c-\(record)", fields))
        }
        for (node, list) in writes {
            let store = node == "hq" ? hq : dealers[node]!.store
            for chunk in list.chunked(50) { try store.commit(Array(chunk)) }
        }
    }

    /// Dealers push to their countries, countries to HQ; then HQ feeds the countries and the
    /// countries their dealers, each pull noted in the parent's acknowledgement ledger.
    func sync() async throws {
        for (node, dealer) in dealers { try await Self.push(from: dealer.store, node: node, to: countries[dealer.country]!) }
        for (node, country) in countries { try await Self.push(from: country, node: node, to: postgresHQ ?? hq) }
        for (node, country) in countries {
            if let postgresHQ {
                try await Self.pull(into: country, node: node, from: postgresHQ, scope: Scope(tree: tree, node: node))
            } else {
                try await Self.pull(into: country, node: node, from: hq, parent: "hq", scope: Scope(tree: tree, node: node))
            }
        }
        for (node, dealer) in dealers {
            try await Self.pull(into: dealer.store, node: node, from: countries[dealer.country]!, parent: dealer.country, scope: Scope(nodes: [node]))
        }
    }

    static func push(from child: NodeStore, node: NodeID, to parent: any HubTenantStore) async throws {
        while true {
            let batch = try child.upstreamBatch(after: child.cursor(NodeStore.parentPushCursor), limit: 2_000)
            guard let last = batch.last else { return }
            let report = try await parent.applyIncoming(batch.map(\.change), from: node, source: .child, checkSkew: false, gate: nil, cursor: nil,
                                                        wallMillis: WallClock.nowMillis())
            guard report.rejected.isEmpty else { throw BenchError("\(node)'s push was refused: \(report.rejected[0].message)") }
            try child.setCursor(NodeStore.parentPushCursor, last.seq)
        }
    }

    static func pull(into child: NodeStore, node: NodeID, from parent: NodeStore, parent parentNode: NodeID, scope: Scope) async throws {
        while true {
            let cursor = try child.cursor("pull.parent")
            await parent.notePulled(by: node, through: cursor)
            let page = try await parent.feed(after: cursor, scope: scope, excluding: node, limit: 2_000)
            _ = try await child.applyIncoming(page.changes, from: parentNode, source: .parent, checkSkew: false,
                                              cursor: ("pull.parent", page.nextCursor))
            if !page.more {
                // An agent's next request, a long-poll, leaves at once with this cursor: the
                // parent's ledger has it before the next compaction.
                await parent.notePulled(by: node, through: page.nextCursor)
                return
            }
        }
    }

    /// A country's pull from HQ on PostgreSQL: the feed as the pull route serves it.
    static func pull(into child: NodeStore, node: NodeID, from parent: PostgresTenantStore, scope: Scope) async throws {
        while true {
            let cursor = try child.cursor("pull.parent")
            await parent.notePulled(by: node, through: cursor)
            let encoded = try await parent.encodedFeed(after: cursor, scope: scope, excluding: node, limit: 2_000)
            let page = try JSONDecoder().decode(PullResponse.self, from: Data(encoded.json))
            _ = try await child.applyIncoming(page.changes, from: "hq", source: .parent, checkSkew: false, cursor: ("pull.parent", page.nextCursor))
            if !page.more {
                await parent.notePulled(by: node, through: page.nextCursor)
                return
            }
        }
    }

    /// Compacts every store; returns how long HQ's pass took.
    @discardableResult
    func compact() async throws -> Duration {
        let started = ContinuousClock.now
        if let postgresHQ {
            _ = try await postgresHQ.compact(policy: policy, tree: tree, nowMillis: WallClock.nowMillis(), batch: 2_000)
        } else {
            _ = try await hq.compact(policy: policy, tree: tree)
        }
        let hqTook = ContinuousClock.now - started
        for country in countries.values { _ = try await country.compact(policy: policy, tree: tree) }
        for dealer in dealers.values { _ = try await dealer.store.compact(policy: policy, tree: nil) }
        return hqTook
    }

    /// The largest ratio per tier.
    func footprints() async throws -> [(Tier, StorageFootprint)] {
        var out: [(Tier, StorageFootprint)] = [(.hq, try await postgresHQ?.footprint() ?? hq.footprint())]
        out += try countries.values.map { (.country, try $0.footprint()) }
        out += try dealers.values.map { (.dealer, try $0.store.footprint()) }
        return out
    }

    /// A new country (`de`'s scope) and a new dealer (the first dealer's scope) fetch their
    /// scopes from HQ from cursor 0; throws unless each ends with HQ's digest of its scope
    /// (HQ on PostgreSQL: the digest of the country HQ fed, which holds both scopes).
    func bootstrapFresh(in dir: String) async throws -> (countryRecords: Int, dealerRecords: Int) {
        var counts: [Int] = []
        let firstDealer = sortedDealers[0]
        for (node, scope) in [("de", Scope(tree: tree, node: "de")), (firstDealer.rawValue, Scope(nodes: [firstDealer]))] {
            let store = try NodeStore(path: "\(dir)/fresh-\(node).sqlite")
            try store.setIdentity(NodeIdentity(tenant: "acme", node: NodeID(unchecked: "fresh-\(node)"), parent: "hq"))
            let reference: NodeStore
            if let postgresHQ {
                try await Self.pull(into: store, node: NodeID(unchecked: "fresh-\(node)"), from: postgresHQ, scope: scope)
                reference = countries[node == "de" ? "de" : dealers[firstDealer]!.country]!
            } else {
                try await Self.pull(into: store, node: NodeID(unchecked: "fresh-\(node)"), from: hq, parent: "hq", scope: scope)
                reference = hq
            }
            guard try store.digest(scope: scope) == reference.digest(scope: scope) else {
                throw BenchError("a fresh node with \(node)'s scope does not hold what HQ holds of it")
            }
            counts.append(try store.counts().records.values.reduce(0, +))
        }
        return (counts[0], counts[1])
    }

    /// Every dealer holds what HQ holds of its scope (HQ on PostgreSQL: what its country,
    /// fed by HQ, holds of it).
    func converged() throws -> Bool {
        for (node, dealer) in dealers {
            let reference = postgresHQ == nil ? hq : countries[dealer.country]!
            if try dealer.store.digest(scope: Scope(nodes: [node])) != reference.digest(scope: Scope(nodes: [node])) { return false }
        }
        return true
    }
}

extension Array {
    func chunked(_ size: Int) -> [ArraySlice<Element>] {
        stride(from: 0, to: count, by: size).map { self[$0..<Swift.min($0 + size, count)] }
    }
}

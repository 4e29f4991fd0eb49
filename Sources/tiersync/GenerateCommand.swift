import ArgumentParser
import Foundation
import TiersyncAgent
import TiersyncCore
import TiersyncGovernance
import TiersyncRules
import TiersyncStore

extension TenantKind: ExpressibleByArgument {}

/// `tiersync generate`: months of realistic, seeded data written into a node's store through
/// its local write path (so every new inbound interaction is allocated by the release in
/// force, as `contact add` is). What is generated is `GenerateData.swift`; this command
/// picks the tenant, the period and who owns the customers, writes in batches and reports.
struct Generate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write months of realistic, seeded customers, vehicles or contracts, interactions and leads into a node's store.",
        discussion: """
        For the automaker or the insurer of fixtures/governance: customers with value segments, key accounts and \
        consent per purpose and channel (some refusing, some never asked); vehicles with sale dates and leasing ends \
        (automaker) or contracts with start and end dates (insurer); inbound and outbound interactions across channels, \
        topics, knowledge kinds and urgencies with created, answered, abandoned and resolved times (some abandoned, some \
        still unresolved past their SLA); leads with source and fulfilling nodes, won or lost, the recent ones open.

        Written through the node's local write path in batches, so each new inbound interaction is allocated from the \
        governance release in force now, as `contact add` is (sla_due counts from its created_at). The same seed, --now, \
        --scale, --months and node give the same records, ids and values; only decided_at (when the write ran) differs.

        At HQ's tenant database (DATA/tenants/TENANT.sqlite) the customers belong to the tenant's dealers (or agents) \
        from the hub's catalog beside it; elsewhere to this node, unless --dealers names them.
        """)

    @Option(help: "The node's SQLite file (a dealer's or country's store, or HQ's DATA/tenants/TENANT.sqlite).") var db: String
    @Option(help: "automaker or insurer (default: from the governance the node runs — two levels: insurer).") var tenantKind: TenantKind?
    @Option(help: "Months of history, ending at --now.") var months = 6
    @Option(help: "Random seed: the same seed gives the same data.") var seed: UInt64 = 1
    @Option(parsing: .unconditional, help: "The end of the period: ISO 8601 (2026-12-01T18:00:00Z), now, +DURATION or -DURATION (default: now).") var now: String?
    @Option(help: "Volume: 1 is about 300 customers, 500 interactions and 60 leads a month over 6 months; 0.1 for a taste, 100 for a load test.")
    var scale = 1.0
    @Option(help: "Comma-separated dealers (or agents) owning the customers (default: at HQ the tenant's dealers from the catalog; elsewhere this node).")
    var dealers: String?
    @Option(help: "Records written per commit.") var batch = 1_000

    /// The --now values generate accepts: 1990-01-01 to 8999-12-31 (UTC).
    static let nowRange: ClosedRange<UInt64> = 631_152_000_000...221_845_391_999_000

    func validate() throws {
        guard (1...120).contains(months) else { throw ValidationError("--months must be 1…120") }
        guard scale > 0, scale <= 10_000 else { throw ValidationError("--scale must be above 0 (and at most 10,000)") }
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1") }
    }

    func run() async throws {
        let store = try openEnrolledStore(db)
        guard let identity = try store.identity() else { throw CLIError("\(db) is not enrolled: enroll the node first (tiersync agent run --enroll-token …)") }
        let nowMillis = (try now.map(Admin.parseTime) ?? WallClock.nowMillis()) / 1000 * 1000
        // The history runs back --months from --now, sales and contracts a few years further
        // back, their follow-ups and contract ends years ahead: within these years every date
        // the generator makes can be written (at the start of 1970 its arithmetic trapped, and
        // near 9999 it made dates past the year 9999 and failed half-way).
        guard Self.nowRange.contains(nowMillis) else {
            throw CLIError("--now \(now ?? "") is outside what generate can write a history for: \(Timestamp.format(Self.nowRange.lowerBound)) to \(Timestamp.format(Self.nowRange.upperBound))")
        }
        let kind = try tenantKind ?? Self.inferredKind(store, identity: identity)
        let path = try store.meta(AllocationPolicy.pathMeta)?.split(separator: "/").map(String.init)
        let ownCountry = Self.countryOf(identity.parent == nil ? "" : identity.node.rawValue, path: path) ?? "DE"
        let owners = try await resolveOwners(identity: identity, ownCountry: ownCountry)
        try Self.checkOwners(owners.map(\.node), identity: identity, path: path, levels: try Self.levels(store, identity: identity))
        let generator = DataGenerator(catalogue: .of(kind), seed: seed, node: identity.node.rawValue, isRoot: identity.parent == nil,
                                      owners: owners, country: ownCountry, nowMillis: nowMillis, months: months, scale: scale)
        let interactionsTable = store.schema.table(DomainSchema.interactions.name)
        let hasAbandoned = interactionsTable?.field("abandoned_at") != nil
        let hasWon = store.schema.table(DomainSchema.leads.name)?.field("won_at") != nil

        print("generating \(months) month(s) of \(kind.rawValue) data at node \(identity.node) (tenant \(identity.tenant)), "
              + "\(CivilDate.format(CivilDate.day(ofMillis: generator.startMillis))) … \(Timestamp.format(nowMillis)), seed \(seed), scale \(scale)")
        print(owners.isEmpty ? "customers owned by \(identity.node)"
              : "customers owned by \(owners.count) node(s): \(owners.prefix(8).map(\.node).joined(separator: ", "))\(owners.count > 8 ? ", …" : "")")

        var writer = BatchWriter(store: store, batch: batch)
        let customers = generator.customers()
        try writer.write("customers", count: customers.count) { .upsert(DomainSchema.customers.name, id: customers[$0].id, customers[$0].fields) }
        let holdings = generator.holdings(of: customers)
        let holdingName = kind == .automaker ? "vehicles" : "contracts"
        try writer.write(holdingName, count: holdings.count) { holdings[$0] }

        let interactions = generator.interactions(customers: customers)
        var outcome = InteractionTally(nowMillis: nowMillis)
        try writer.write("interactions", count: interactions.count, {
            .upsert(DomainSchema.interactions.name, id: generator.id("int", $0 + 1),
                    generator.fields(of: interactions[$0], customers: customers, abandonedField: hasAbandoned))
        }, made: { outcome.count($0) })

        let leads = generator.leads(customers: customers)
        try writer.write("leads", count: leads.count) {
            .upsert(DomainSchema.leads.name, id: generator.id("lead", $0 + 1), generator.fields(of: leads[$0], customers: customers, wonField: hasWon))
        }

        Self.report(customers: customers, holdings: holdings, holdingName: holdingName, interactions: interactions, tally: outcome,
                    leads: leads, generator: generator)
        let seconds = writer.elapsed
        print("wrote \(grouped(writer.written)) records in \(String(format: "%.1f", seconds)) s (\(grouped(Int(Double(writer.written) / max(seconds, 0.001)))) records/s) to \(db)")
    }

    /// Who owns the customers: --dealers; at HQ's tenant database, the tenant's dealers from
    /// the hub catalog beside it (DATA/hub.sqlite); else nobody (the writer owns them).
    func resolveOwners(identity: NodeIdentity, ownCountry: String) async throws -> [(node: String, country: String)] {
        if let dealers {
            let ids = dealers.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            for id in ids where !NodeID.isValid(id) { throw CLIError("'\(id)' in --dealers is not a node identifier") }
            return ids.map { ($0, Self.countryOf($0, path: nil) ?? ownCountry) }
        }
        guard identity.parent == nil else { return [] }
        let data = URL(fileURLWithPath: db).deletingLastPathComponent().deletingLastPathComponent().path
        guard FileManager.default.fileExists(atPath: data + "/hub.sqlite") else { return [] }
        let catalog = try HubCatalog(directory: data)
        let nodes = try await catalog.nodes(of: identity.tenant).filter { $0.role == "dealer" && $0.decommissionedAtMillis == nil }
        return nodes.map { node in
            // A dealer's parent is its country (three levels); an agent's is the root, which says nothing.
            let parent = node.parent.flatMap { $0 == identity.node ? nil : $0.rawValue }
            return (node.node.rawValue, parent.flatMap { Self.countryCode($0) } ?? Self.countryOf(node.node.rawValue, path: nil) ?? ownCountry)
        }
    }

    /// Refuses owners the node's parent would refuse as out of its reach (helper 95: at a
    /// dealer, `--dealers` named a sibling and an unknown node; the parent refused those
    /// customers as `forbidden` and the agent retried them for good): a dealer (or an agent),
    /// the last level of the tenant's tree, owns what it writes itself; no node hands its
    /// customers to an ancestor. A country's own dealers are known to its hub, not to its
    /// store, so below a country the parent judges.
    static func checkOwners(_ owners: [String], identity: NodeIdentity, path: [String]?, levels: Int?) throws {
        guard identity.parent != nil, let path else { return }
        let ancestors = Set(path.dropLast())
        if let above = owners.first(where: ancestors.contains) {
            throw CLIError("'\(above)' in --dealers is above \(identity.node) (\(path.joined(separator: "/"))): customers written here belong to \(identity.node) or nodes below it")
        }
        if let levels, path.count >= levels, let other = owners.first(where: { $0 != identity.node.rawValue }) {
            throw CLIError("'\(other)' in --dealers is not \(identity.node): \(identity.node) is at the last level of its tree (\(path.joined(separator: "/"))) and writes customers it owns itself; its parent would refuse others as forbidden")
        }
    }

    /// How many levels the tenant's tree has, from the governance in force (nil: none yet).
    static func levels(_ store: NodeStore, identity: NodeIdentity) throws -> Int? {
        guard let json = try store.appliedGovernance()?.effective,
              let config = try? JSONDecoder().decode(ConfigValue.self, from: Data(json.utf8)) else { return nil }
        return config[path: "governance.levels"]?.listValue?.count
    }

    /// A node id that reads as a country (`de`, `fr`).
    static func countryCode(_ id: String) -> String? {
        id.count == 2 && id.allSatisfy(\.isLetter) ? id.uppercased() : nil
    }

    /// The country a node is in: a two-letter node below the root on its path
    /// (`hq/de/de-berlin`), or its id's prefix (`de-berlin`); "" for the root.
    static func countryOf(_ node: String, path: [String]?) -> String? {
        if let code = path?.dropFirst().compactMap(countryCode).first { return code }
        if let code = countryCode(node) { return code }
        return node.split(separator: "-").first.flatMap { countryCode(String($0)) }
    }

    /// The tenant the node's governance describes: two levels (HQ and agents) is the insurer.
    static func inferredKind(_ store: NodeStore, identity: NodeIdentity) throws -> TenantKind {
        var config: ConfigValue?
        if let json = try store.appliedGovernance()?.effective {
            config = try? JSONDecoder().decode(ConfigValue.self, from: Data(json.utf8))
        } else if identity.parent == nil, let document = try store.latestGovernanceDocument(kind: SignedDocument.Kind.release.rawValue) {
            config = SignedDocument(json: document.body)?.unverifiedPayload(Release.self)?.config
        }
        if let levels = config?[path: "governance.levels"]?.listValue?.compactMap(\.stringValue) {
            return levels.count == 2 ? .insurer : .automaker
        }
        return identity.tenant.rawValue.lowercased().contains("insur") ? .insurer : .automaker
    }

    static func report(customers: [CustomerSpec], holdings: [RecordWrite], holdingName: String, interactions: [InteractionSpec],
                       tally: InteractionTally, leads: [LeadSpec], generator: DataGenerator) {
        let companies = customers.filter(\.company).count, keyAccounts = customers.filter(\.keyAccount).count
        let segments = ["A", "B", "C", "D"].map { s in "\(s) \(customers.filter { $0.segment == s }.count)" }.joined(separator: ", ")
        print("customers:    \(grouped(customers.count)) (\(companies) compan\(companies == 1 ? "y" : "ies"), \(keyAccounts) key account\(keyAccounts == 1 ? "" : "s"); segments \(segments))")
        let consent = consentFields.map { c -> String in
            let values = customers.map { $0.fields[c.field] }
            let yes = values.filter { $0 == .bool(true) }.count, no = values.filter { $0 == .bool(false) }.count
            let name = c.field.dropFirst("consent_".count).replacingOccurrences(of: "_", with: " ")
            return "\(name) \(yes) yes/\(no) no/\(values.count - yes - no) not given"
        }
        print("consent:      " + consent.joined(separator: "; "))
        let startDay = CivilDate.format(CivilDate.day(ofMillis: generator.startMillis))
        let soon = CivilDate.format(generator.nowDay + 120), today = CivilDate.format(generator.nowDay)
        let sold = holdings.filter { ($0.fields["sale_date"]?.stringValue ?? "") >= startDay }.count
        let ending = holdings.filter { ($0.fields["contract_end_date"]?.stringValue).map { $0 >= today && $0 <= soon } ?? false }.count
        print("\(holdingName + ":")".padding(toLength: 14, withPad: " ", startingAt: 0)
              + "\(grouped(holdings.count)) (sold in the period \(sold); contracts ending within 120 days \(ending))")
        let inbound = interactions.filter { !$0.outbound }.count
        let byChannel = DataGenerator.channels.enumerated().map { i, name in "\(name) \(interactions.filter { $0.channel == i }.count)" }
        print("interactions: \(grouped(interactions.count)) (\(inbound) inbound, \(interactions.count - inbound) outbound; \(byChannel.joined(separator: ", ")))")
        if tally.allocated == 0 {
            print("allocation:   none: no governance release in force at this node (interactions written as generated)")
        } else {
            let releases = tally.releases.sorted().joined(separator: ", ")
            let nodes = tally.handlers.sorted { ($1.value, $0.key) < ($0.value, $1.key) }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            print("allocation:   \(tally.allocated) of \(inbound) inbound allocated (release \(releases)) by \(tally.rules.count) rules; handled at \(nodes)")
        }
        let abandoned = interactions.filter { $0.abandoned != nil }.count
        let resolved = interactions.filter { $0.resolved != nil }.count
        print("outcomes:     abandoned \(abandoned), resolved \(resolved), unresolved \(interactions.count - abandoned - resolved) "
              + "(\(tally.pastDue) past their SLA due), follow-ups within 10 days \(interactions.filter(\.followUp).count)")
        let won = leads.filter { $0.status == "won" }.count, lost = leads.filter { $0.status == "lost" }.count
        print("leads:        \(grouped(leads.count)) (won \(won), lost \(lost), open \(leads.count - won - lost))")
    }
}

/// Writes records in batches through `NodeStore.commit`, printing progress on long runs.
struct BatchWriter {
    /// How many times a batch is tried again when the store stayed busy through its wait:
    /// up to two minutes when each try waits SQLite's 15 s, a few seconds when SQLite refuses
    /// at once (a snapshot another process's write made stale); then the failure is reported.
    static let busyRetries = 8
    let store: NodeStore
    let batch: Int
    let start = ContinuousClock.now
    var lastReport = ContinuousClock.now
    var written = 0

    var elapsed: Double {
        let d = ContinuousClock.now - start
        return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    mutating func write(_ what: String, count: Int, _ make: (Int) -> RecordWrite, made: (Change) -> Void = { _ in }) throws {
        var next = 0
        while next < count {
            let end = min(next + batch, count)
            let writes = (next..<end).map(make)
            var busyFor = 0
            while true {
                do {
                    for change in try store.commit(writes) { made(change) }
                    break
                } catch let error as StoreError {
                    throw CLIError("writing \(what): \(error.description)")
                } catch where NodeStore.isBusy(error) {
                    guard busyFor < Self.busyRetries else {
                        throw CLIError("writing \(what): the store stayed busy (another process kept writing to it); \(grouped(written)) records "
                                       + "were written before this batch. Run generate again with the same --seed, --now, --scale and --months to finish: it writes the same ids")
                    }
                    // The node's agent (its rules, compaction, a checkpoint) kept the store's
                    // write lock past the store's wait, several short writes in a row starving
                    // this one (helper 71: a long run failed half-way, its first batches
                    // queued). The batch was rolled back whole: write it again, saying so.
                    busyFor += 1
                    print("  \(what): the store is busy (another process writes to it); trying the batch again (\(busyFor) of \(Self.busyRetries))")
                    fflush(nil)
                    Thread.sleep(forTimeInterval: 0.2 * Double(busyFor))
                }
            }
            written += end - next
            next = end
            if ContinuousClock.now - lastReport >= .seconds(2), next < count {
                lastReport = ContinuousClock.now
                print("  \(what) \(grouped(next)) of \(grouped(count)) (\(next * 100 / count) %), \(grouped(Int(Double(written) / max(elapsed, 0.001)))) records/s")
                fflush(nil)
            }
        }
    }
}

/// What the allocation made of the interactions written, read from the changes committed.
struct InteractionTally {
    let nowMillis: UInt64
    var allocated = 0
    var rules: [String: Int] = [:]
    var handlers: [String: Int] = [:]
    var releases: Set<String> = []
    /// Neither resolved nor abandoned, and the SLA due has passed.
    var pastDue = 0

    mutating func count(_ change: Change) {
        let f = change.fields
        if let rule = f[InteractionField.decisionRule.rawValue]?.stringValue {
            allocated += 1
            rules[rule, default: 0] += 1
            handlers[f[InteractionField.handlingNode.rawValue]?.stringValue ?? "(unplaced)", default: 0] += 1
            let release = f[InteractionField.decisionRelease.rawValue].map { "v\($0)" } ?? "?"
            releases.insert(release + (f[InteractionField.decisionOverlay.rawValue]?.stringValue.map { " ⊕ \($0)" } ?? ""))
        }
        if f["resolved_at"] == nil, f["abandoned_at"] == nil, f["status"] != .string("closed"),
           let due = f[InteractionField.slaDue.rawValue]?.stringValue.flatMap(Timestamp.parse), due < nowMillis {
            pastDue += 1
        }
    }
}

/// 12,345
func grouped(_ n: Int) -> String {
    var digits = String(n.magnitude), out = ""
    while digits.count > 3 {
        out = "," + digits.suffix(3) + out
        digits = String(digits.dropLast(3))
    }
    return (n < 0 ? "-" : "") + digits + out
}

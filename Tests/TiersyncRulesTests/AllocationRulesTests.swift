import Foundation
import Testing
import TiersyncCore
import TiersyncGovernance
import TiersyncRules
import TiersyncTestSupport

/// The rules as plain values: every automaker rule and a few insurer rules, decided from
/// facts with no store, no clock and no network.
@Suite("Allocation rules, pure")
struct AllocationRulesTests {
    static func table(_ fixture: String) throws -> AllocationTable {
        let compiled = try GovernanceCompiler.compile(directory: repositoryRoot() + "/fixtures/governance/" + fixture)
        return try AllocationTable(config: compiled.config)
    }

    /// One row: what a dialogue (and its customer) look like → the rule, level, queue,
    /// priority and SLA the automaker release gives it, and the node it is handled at when
    /// dealer `de-berlin` of country `de` creates it.
    struct Row: Sendable, CustomTestStringConvertible {
        var interaction: [String: FieldValue]
        var customer: [String: FieldValue] = [:]
        var rule: String
        var level: String
        var queue: String
        var priority: Int
        var sla: String
        var node: NodeID
        var testDescription: String { rule }
    }

    static let automakerRows: [Row] = [
        Row(interaction: ["urgency": "critical", "topic": "recall", "knowledge_kind": "specification", "channel": "phone"],
            rule: "critical-product-safety", level: "hq", queue: "hq-product-safety", priority: 1, sla: "15m", node: "hq"),
        Row(interaction: ["urgency": "critical", "topic": "breakdown", "channel": "phone"],
            rule: "critical-urgency", level: "country", queue: "country-priority-line", priority: 1, sla: "30m", node: "de"),
        Row(interaction: ["urgency": "normal", "topic": "fleet offer", "knowledge_kind": "specification", "channel": "email"],
            customer: ["key_account": true],
            rule: "key-accounts", level: "country", queue: "country-key-accounts", priority: 1, sla: "2h", node: "de"),
        Row(interaction: ["urgency": "high", "topic": "battery", "knowledge_kind": "specification", "channel": "phone"],
            rule: "ev-expert-topics", level: "hq", queue: "hq-ev-experts", priority: 2, sla: "4h", node: "hq"),
        Row(interaction: ["urgency": "normal", "topic": "software-update", "knowledge_kind": "scheme", "channel": "web"],
            rule: "connected-expert-topics", level: "hq", queue: "hq-connected-experts", priority: 3, sla: "8h", node: "hq"),
        Row(interaction: ["urgency": "high", "topic": "gearbox noise", "knowledge_kind": "specification", "channel": "visit"],
            rule: "high-urgency-specification", level: "country", queue: "country-service", priority: 2, sla: "2h", node: "de"),
        Row(interaction: ["urgency": "normal", "topic": "financing conditions", "knowledge_kind": "scheme", "channel": "email"],
            rule: "scheme-digital", level: "hq", queue: "hq-dialogue-centre", priority: 3, sla: "4h", node: "hq"),
        Row(interaction: ["urgency": "high", "topic": "financing conditions", "knowledge_kind": "scheme", "channel": "phone"],
            rule: "scheme-country", level: "country", queue: "country-dialogue-centre", priority: 3, sla: "1h", node: "de"),
        Row(interaction: ["urgency": "normal", "topic": "warranty", "knowledge_kind": "specification", "channel": "phone"],
            customer: ["segment_value": "A"],
            rule: "warranty-specification", level: "dealer", queue: "dealer-service", priority: 3, sla: "4h", node: "de-berlin"),
        Row(interaction: ["urgency": "normal", "topic": "test drive", "knowledge_kind": "specification", "channel": "visit"],
            customer: ["segment_value": "B"],
            rule: "specification-top-segments", level: "dealer", queue: "dealer-sales", priority: 2, sla: "2h", node: "de-berlin"),
        Row(interaction: ["urgency": "low", "topic": "test drive", "knowledge_kind": "specification", "channel": "visit"],
            customer: ["segment_value": "C"],
            rule: "specification-dealer", level: "dealer", queue: "dealer-sales", priority: 3, sla: "8h", node: "de-berlin"),
        Row(interaction: ["urgency": "normal", "topic": "opening hours", "channel": "phone"],
            rule: "catch-all", level: "country", queue: "country-dialogue-centre", priority: 4, sla: "8h", node: "de"),
    ]

    static let created = "2026-11-22T10:00:00Z"
    static let createdMillis: UInt64 = 1_795_341_600_000

    @Test("every automaker rule decides its row: level, queue, priority, SLA due, node", arguments: automakerRows)
    func automakerRow(_ row: Row) throws {
        let table = try Self.table("automaker")
        let placement = NodePlacement(node: "de-berlin", path: ["hq", "de", "de-berlin"])
        var fields = row.interaction
        fields["created_at"] = .string(Self.created)
        let decision = try Allocator.decide(interaction: fields, customer: row.customer,
                                            governance: GovernanceInForce(release: 3, overlay: "de#2", table: table),
                                            placement: placement, nowMillis: Self.createdMillis + 5_000).get()
        #expect(decision.rule == row.rule)
        #expect(decision.level == row.level)
        #expect(decision.queue == row.queue)
        #expect(decision.priority == row.priority)
        #expect(decision.slaSeconds == GovernanceDuration(row.sla)!.seconds)
        #expect(decision.slaDueMillis == Self.createdMillis + UInt64(GovernanceDuration(row.sla)!.seconds) * 1000)
        #expect(decision.handlingNode == row.node)
        #expect(decision.release == 3 && decision.overlay == "de#2" && decision.decidedBy == "de-berlin")
        let written = decision.applied(to: fields)
        #expect(written["sla_due"] == .string(Timestamp.format(decision.slaDueMillis)))
        #expect(written["decision_rule"] == .string(row.rule) && written["decision_release"] == .int(3))
        #expect(written["handling_node"] == .string(row.node.rawValue) && written["priority"] == .int(Int64(row.priority)))
    }

    @Test("every automaker rule has a row, and each row's rule is the first that matches it")
    func automakerRowsCoverEveryRule() throws {
        let table = try Self.table("automaker")
        #expect(Set(table.rules.map(\.id)) == Set(Self.automakerRows.map(\.rule)))
        #expect(table.rules.map(\.id).first == "critical-product-safety" && table.rules.map(\.id).last == "catch-all")
    }

    @Test("insurer: the agent level, claims line, commercial clients, expert pool")
    func insurerRows() throws {
        let table = try Self.table("insurer")
        #expect(table.levels == ["hq", "agent"])
        let agency = NodePlacement(node: "agency-7", parent: "hq", path: nil, levels: 2)
        #expect(agency.path == ["hq", "agency-7"], "a two-level tenant's parent is its root")
        let rows: [(interaction: [String: FieldValue], customer: [String: FieldValue], rule: String, level: String, queue: String, priority: Int, sla: Int, node: NodeID)] = [
            (["urgency": "critical", "topic": "storm-damage", "channel": "phone"], [:], "critical-claims", "hq", "hq-claims-line", 1, 900, "hq"),
            (["urgency": "normal", "topic": "cover-change", "channel": "email"], ["key_account": true], "commercial-clients", "hq", "hq-commercial-clients", 1, 7200, "hq"),
            (["urgency": "normal", "topic": "pension", "knowledge_kind": "scheme", "channel": "phone"], [:], "pension-expert-topics", "hq", "hq-pension-experts", 3, 86400, "hq"),
            (["urgency": "normal", "topic": "address-change", "knowledge_kind": "specification", "channel": "email"], [:], "policy-service-specification", "agent", "agent-service", 3, 86400, "agency-7"),
            (["urgency": "normal", "topic": "quote", "knowledge_kind": "specification", "channel": "visit"], ["segment_value": "A"], "offer-top-segments", "agent", "agent-sales", 2, 14400, "agency-7"),
            (["urgency": "normal", "topic": "quote", "knowledge_kind": "specification", "channel": "email"], ["segment_value": "A"], "offer-specification", "agent", "agent-sales", 3, 86400, "agency-7"),
        ]
        for row in rows {
            let d = try Allocator.decide(interaction: row.interaction, customer: row.customer,
                                         governance: GovernanceInForce(release: 1, overlay: nil, table: table), placement: agency,
                                         nowMillis: Self.createdMillis).get()
            #expect([d.rule, d.level, d.queue] == [row.rule, row.level, row.queue], "\(row.rule)")
            #expect(d.priority == row.priority && d.slaSeconds == row.sla && d.handlingNode == row.node, "\(row.rule)")
            #expect(d.slaDueMillis == Self.createdMillis + UInt64(row.sla) * 1000, "no created_at: due from the decision time")
        }
    }

    @Test("where a level lands depends on who creates the dialogue")
    func placementByCreator() throws {
        let levels = ["hq", "country", "dealer"]
        let plain = AllocationQueue(id: "q", level: "dealer", expertPool: false)
        let pool = AllocationQueue(id: "p", level: "country", expertPool: true)
        let dealer = NodePlacement(node: "de-1", path: ["hq", "de", "de-1"])
        let country = NodePlacement(node: "de", path: ["hq", "de"])
        let hq = NodePlacement(node: "root", parent: nil, path: nil, levels: 3)
        #expect(hq.path == ["root"], "the root knows its place from its identity alone")
        #expect(dealer.handlingNode(level: "hq", queue: plain, levels: levels, customerOwner: nil) == "hq")
        #expect(dealer.handlingNode(level: "country", queue: plain, levels: levels, customerOwner: nil) == "de")
        #expect(dealer.handlingNode(level: "dealer", queue: plain, levels: levels, customerOwner: "de-2") == "de-1",
                "a dealer keeps its own dealer-level dialogues")
        #expect(dealer.handlingNode(level: "country", queue: pool, levels: levels, customerOwner: nil) == "hq", "an expert pool is at the root")
        #expect(country.handlingNode(level: "dealer", queue: plain, levels: levels, customerOwner: "de-2") == "de-2",
                "a country allocating to the dealer level: the customer's owning dealer")
        #expect(country.handlingNode(level: "dealer", queue: plain, levels: levels, customerOwner: nil) == "de",
                "no owning dealer known: the country keeps it")
        #expect(hq.handlingNode(level: "country", queue: plain, levels: levels, customerOwner: "de-2") == "root",
                "HQ cannot name a country it does not know: it keeps it")
        #expect(hq.handlingNode(level: "dealer", queue: plain, levels: levels, customerOwner: "de-2") == "de-2")
        let unknown = NodePlacement(node: "de-1", parent: "de", path: nil, levels: 3)
        #expect(unknown.path == nil && unknown.handlingNode(level: "hq", queue: plain, levels: levels, customerOwner: nil) == nil,
                "a dealer that has not learned its path names no handling node")
        #expect(NodePlacement(node: "de-1", parent: "de", path: ["hq", "de", "de-1"], levels: 3).path == ["hq", "de", "de-1"])
    }

    @Test("the writer's values win; the decision record is always written; outbound and no release give no decision")
    func writerWinsAndNoDecision() throws {
        let table = try Self.table("automaker")
        let governance = GovernanceInForce(release: 1, overlay: nil, table: table)
        let placement = NodePlacement(node: "de-1", path: ["hq", "de", "de-1"])
        let fields: [String: FieldValue] = ["urgency": "critical", "topic": "brakes", "queue": "my-queue", "handling_node": .null]
        let decision = try Allocator.decide(interaction: fields, customer: nil, governance: governance, placement: placement,
                                            nowMillis: Self.createdMillis).get()
        let written = decision.applied(to: fields)
        #expect(written["queue"] == "my-queue" && written["handling_node"] == .null, "explicit values, null included, win")
        #expect(written["handling_level"] == "hq" && written["priority"] == .int(1))
        #expect(written["decision_rule"] == "critical-product-safety" && written["decided_by"] == "de-1")
        #expect(written["created_at"] == .string(Timestamp.format(Self.createdMillis)) && written["decision_overlay"] == nil)
        #expect(written["sla_due"] == .string(Timestamp.format(Self.createdMillis + 900_000)))

        var outbound = fields
        outbound["direction"] = "outbound"
        #expect(Allocator.decide(interaction: outbound, customer: nil, governance: governance, placement: placement,
                                 nowMillis: 0) == .failure(.outbound))
        #expect(Allocator.decide(interaction: fields, customer: nil, governance: nil, placement: placement, nowMillis: 0) == .failure(.noReleaseInForce))
        let empty = AllocationTable(levels: ["hq", "agent"], rules: [], queues: [:])
        #expect(Allocator.decide(interaction: fields, customer: nil, governance: GovernanceInForce(release: 1, overlay: nil, table: empty),
                                 placement: placement, nowMillis: 0) == .failure(.noRuleMatched))
    }

    @Test("conditions: lists are any-of, all given must hold, a missing fact fails, key_account absent is false")
    func conditions() {
        let rule = AllocationRule(id: "r", order: 0, conditions: [.urgency: ["high", "critical"], .keyAccount: ["false"]],
                                  level: "hq", queue: "q", priority: 1, slaSeconds: 60)
        #expect(rule.matches(InteractionFacts(urgency: "high")))
        #expect(rule.matches(InteractionFacts(urgency: "critical", keyAccount: false)))
        #expect(!rule.matches(InteractionFacts(urgency: "critical", keyAccount: true)))
        #expect(!rule.matches(InteractionFacts(urgency: "low")))
        #expect(!rule.matches(InteractionFacts()))
        #expect(AllocationRule(id: "all", order: 1, conditions: [:], level: "hq", queue: "q", priority: 1, slaSeconds: 1).matches(InteractionFacts()))
    }

    @Test("topics match without regard to case or surrounding spaces, on either side (helper 72: 'Recall' went to the catch-all)")
    func topicsIgnoreCase() throws {
        let table = try Self.table("automaker")
        for typed in ["Recall", " recall ", "RECALL", "recall", "recall\n", "\trecall"] {
            let facts = InteractionFacts(interaction: ["urgency": "critical", "topic": .string(typed)], customer: nil)
            #expect(table.firstMatch(facts)?.id == "critical-product-safety", "\(typed)")
        }
        #expect(table.firstMatch(InteractionFacts(topic: "recalls", urgency: "critical"))?.id != "critical-product-safety")
        let named = AllocationRule(id: "r", order: 0, conditions: [.topic: ["Brakes "]], level: "hq", queue: "q", priority: 1, slaSeconds: 60)
        #expect(named.matches(InteractionFacts(topic: "brakes")) && named.matches(InteractionFacts(topic: "BRAKES")))
        #expect(InteractionFacts.normalizedTopic("Rückruf") == "rückruf" && InteractionFacts.normalizedTopic("recall") == "recall")
    }

    @Test("an overlay's shorter SLA is what decides")
    func overlayChangesTheSLA() throws {
        let compiled = try GovernanceCompiler.compile(directory: repositoryRoot() + "/fixtures/governance/automaker")
        var config = compiled.config
        let replaced = config.replace(path: "allocation.warranty-specification.then.sla", with: "3h")
        #expect(replaced)
        let table = try AllocationTable(config: config)
        let d = try Allocator.decide(interaction: ["knowledge_kind": "specification", "topic": "warranty", "created_at": .string(Self.created)],
                                     customer: nil, governance: GovernanceInForce(release: 1, overlay: "de#1", table: table),
                                     placement: NodePlacement(node: "de-1", path: ["hq", "de", "de-1"]), nowMillis: Self.createdMillis).get()
        #expect(d.slaSeconds == 3 * 3600 && d.overlay == "de#1")
    }

    @Test("a config without what allocation needs is an error naming the path")
    func malformedConfig() {
        #expect(throws: AllocationConfigError.self) { try AllocationTable(config: .object([:])) }
        let config: ConfigValue = .object(["governance": .object(["levels": .list(["hq", "agent"])]),
                                           "allocation": .object(["r": .object(["order": 0, "then": .object(["level": "nowhere"])])])])
        do { _ = try AllocationTable(config: config); Issue.record("accepted") } catch {
            #expect(error.path == "allocation.r.then.level")
        }
    }

    @Test("the fields the rules name are the interactions table's")
    func fieldsExist() {
        for field in InteractionField.allCases { #expect(DomainSchema.interactions.field(field.rawValue) != nil, "\(field.rawValue)") }
        for field in CustomerField.allCases { #expect(DomainSchema.customers.field(field.rawValue) != nil, "\(field.rawValue)") }
        #expect(DomainSchema.interactions.field("handling_level")?.type.coerce("agent") != nil, "an insurer's level is a handling level")
    }

    @Test("timestamps: parsed with or without fractions, written in UTC")
    func timestamps() {
        #expect(Timestamp.parse("2026-11-22T10:00:00Z") == Self.createdMillis)
        #expect(Timestamp.parse("2026-11-22T10:00:00.250Z") == Self.createdMillis + 250)
        #expect(Timestamp.parse("2026-11-22T11:00:00+01:00") == Self.createdMillis)
        // Only the times a timestamp field holds: `rules run --now 99999-…` evaluated at year 99999.
        #expect(Timestamp.parse("99999-12-07T09:00:00Z") == nil && Timestamp.parse("10000-01-01T00:00:00Z") == nil
                && Timestamp.parse("9999-12-31T23:00:00-02:00") == nil && Timestamp.parse("1969-12-31T23:59:59Z") == nil)
        #expect(Timestamp.parse("yesterday") == nil)
        #expect(Timestamp.format(Self.createdMillis) == "2026-11-22T10:00:00Z")
        #expect(Timestamp.format(Self.createdMillis + 250) == "2026-11-22T10:00:00.250Z")
    }
}

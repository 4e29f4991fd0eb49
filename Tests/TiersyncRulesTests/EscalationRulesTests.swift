import Foundation
import Testing
import TiersyncCore
import TiersyncGovernance
import TiersyncRules
import TiersyncTestSupport

/// Escalation as plain values: the automaker and insurer rules evaluated from an
/// interaction's fields, a node's knowledge of the tree and a time — no store, no clock.
@Suite("Escalation rules, pure")
struct EscalationRulesTests {
    static func rules(_ fixture: String, release: Int = 1) throws -> RulesInForce {
        let compiled = try GovernanceCompiler.compile(directory: repositoryRoot() + "/fixtures/governance/" + fixture)
        return try RulesInForce(release: release, overlay: nil, config: compiled.config)
    }

    static func t(_ text: String) -> UInt64 { Timestamp.parse(text)! }

    /// The automaker tree as each kind of holder knows it: the dealer and its country their
    /// own path, HQ its catalog's tree.
    static let tree = NodeTree(parents: ["hq": nil, "de": "hq", "fr": "hq", "de-berlin": "de", "fr-paris": "fr"])
    static let atDealer = NodeLocator(path: ["hq", "de", "de-berlin"])
    static let atCountry = NodeLocator(path: ["hq", "de"], tree: NodeTree(parents: ["hq": nil, "de": "hq", "de-berlin": "de"]))
    static let atHQ = NodeLocator(path: ["hq"], tree: tree)

    /// A warranty question at dealer de-berlin, allocated there at 10:00 with a 4 h SLA.
    static let dealerDialogue: [String: FieldValue] = [
        "customer_id": "c-1", "direction": "inbound", "channel": "phone", "topic": "warranty", "status": "open",
        "created_at": "2026-12-03T10:00:00Z", "sla_due": "2026-12-03T14:00:00Z",
        "handling_level": "dealer", "queue": "dealer-service", "handling_node": "de-berlin", "originating_node": "de-berlin",
    ]

    @Test("The automaker's escalation rules are read with their level, condition, target and roles to notify")
    func table() throws {
        let table = try Self.rules("automaker").escalation
        #expect(table.rules.map(\.id) == ["dealer-sla-breach", "dealer-unanswered", "country-sla-breach", "country-unanswered"])
        let first = table.rules[0]
        #expect(first.level == "dealer" && first.condition == .slaBreachedBy(seconds: 0) && first.toLevel == "country"
                && first.toQueue == "country-service" && first.notify == ["country-service-manager", "dealer-general-manager"])
        #expect(table.rules[1].condition == .unansweredFor(seconds: 2 * 86_400) && table.rules[1].condition.description == "unanswered_for 2d")
        #expect(table.rules[2].condition.description == "sla_breached_by 4h")
    }

    @Test("Not due before the SLA; at the due time one step to the country service desk at the dealer's country, with every value derived from the record")
    func firstStep() throws {
        let rules = try Self.rules("automaker")
        #expect(Escalator.evaluate(interactionID: "i-1", fields: Self.dealerDialogue, rules: rules, locator: Self.atDealer,
                                   nowMillis: Self.t("2026-12-03T13:59:59Z")) == .notDue(nextMillis: Self.t("2026-12-03T14:00:00Z")))
        guard case .escalate(let steps) = Escalator.evaluate(interactionID: "i-1", fields: Self.dealerDialogue, rules: rules,
                                                             locator: Self.atDealer, nowMillis: Self.t("2026-12-03T14:00:00Z")) else {
            Issue.record("expected an escalation"); return
        }
        #expect(steps.count == 1)
        let step = steps[0]
        #expect(step.step == 1 && step.rule == "dealer-sla-breach" && step.dueMillis == Self.t("2026-12-03T14:00:00Z"))
        #expect(step.fromLevel == "dealer" && step.fromQueue == "dealer-service" && step.fromNode == "de-berlin"
                && step.fromSinceMillis == Self.t("2026-12-03T10:00:00Z"))
        #expect(step.toLevel == "country" && step.toQueue == "country-service" && step.toNode == "de" && step.originatingNode == "de-berlin")
        #expect(step.recordID == RuleRecordID.escalation(interactionID: "i-1", step: 1) && step.recordID.hasPrefix("esc-")
                && step.recordID != RuleRecordID.escalation(interactionID: "i-1", step: 2))
        // allocated_node: the dealer that missed its SLA keeps it (routed, and in its KPIs).
        #expect(step.interactionFields == ["handling_level": "country", "queue": "country-service", "handling_node": "de",
                                           "escalation_step": .int(1), "escalated_at": "2026-12-03T14:00:00Z", "allocated_node": "de-berlin"])
        let entry = step.entryFields
        #expect(entry["condition"] == "sla_breached_by 0s" && entry["status"] == "escalated" && entry["release"] == .int(1)
                && entry["notify"] == "country-service-manager,dealer-general-manager" && entry["withdrawn_reason"] == .null)
        // The schema takes every field written.
        for name in entry.keys { #expect(DomainSchema.escalations.field(name) != nil, "\(name)") }
        for name in step.interactionFields.keys { #expect(DomainSchema.interactions.field(name) != nil, "\(name)") }
    }

    @Test("Every holder computes the same steps: the dealer (its path), the country (its subtree) and HQ (the tree), at any time after the due")
    func sameEverywhere() throws {
        let rules = try Self.rules("automaker")
        var outcomes: [EscalationOutcome] = []
        for locator in [Self.atDealer, Self.atCountry, Self.atHQ] {
            for now in ["2026-12-03T14:00:00Z", "2026-12-03T15:30:00Z", "2026-12-03T17:59:59Z"] {
                outcomes.append(Escalator.evaluate(interactionID: "i-1", fields: Self.dealerDialogue, rules: rules, locator: locator,
                                                   nowMillis: Self.t(now)))
            }
        }
        #expect(Set(outcomes).count == 1, "\(outcomes)")
    }

    @Test("A node evaluating late writes every step it missed: dealer → de at the SLA, de → HQ customer relations 4 h later")
    func cascade() throws {
        let rules = try Self.rules("automaker")
        guard case .escalate(let steps) = Escalator.evaluate(interactionID: "i-1", fields: Self.dealerDialogue, rules: rules,
                                                             locator: Self.atHQ, nowMillis: Self.t("2026-12-04T09:00:00Z")) else {
            Issue.record("expected escalations"); return
        }
        #expect(steps.map(\.step) == [1, 2] && steps.map(\.rule) == ["dealer-sla-breach", "country-sla-breach"])
        #expect(steps[1].fromNode == "de" && steps[1].fromSinceMillis == Self.t("2026-12-03T14:00:00Z")
                && steps[1].toNode == "hq" && steps[1].toQueue == "hq-customer-relations" && steps[1].dueMillis == Self.t("2026-12-03T18:00:00Z"))
        // Evaluating the interaction as step 1 left it gives step 2 alone, the same.
        var afterFirst = Self.dealerDialogue
        for (k, v) in steps[0].interactionFields { afterFirst[k] = v }
        #expect(Escalator.evaluate(interactionID: "i-1", fields: afterFirst, rules: rules, locator: Self.atDealer,
                                   nowMillis: Self.t("2026-12-04T09:00:00Z")) == .escalate([steps[1]]))
        // At HQ's level nothing escalates further.
        var atHQ = afterFirst
        for (k, v) in steps[1].interactionFields { atHQ[k] = v }
        #expect(Escalator.evaluate(interactionID: "i-1", fields: atHQ, rules: rules, locator: Self.atHQ,
                                   nowMillis: Self.t("2027-01-01T00:00:00Z")) == .notApplicable("no escalation rule for level hq"))
    }

    @Test("Answered, resolved, closed or abandoned: nothing escalates; outbound and unallocated dialogues are not for rules")
    func settledAndNotApplicable() throws {
        let rules = try Self.rules("automaker")
        let late = Self.t("2026-12-05T00:00:00Z")
        for change: [String: FieldValue] in [["status": "resolved"], ["status": "answered"], ["status": "closed"],
                                             ["answered_at": "2026-12-03T11:00:00Z"], ["resolved_at": "2026-12-03T12:00:00Z"],
                                             ["abandoned_at": "2026-12-03T10:01:00Z"]] {
            let fields = Self.dealerDialogue.merging(change) { $1 }
            #expect(Escalator.evaluate(interactionID: "i-1", fields: fields, rules: rules, locator: Self.atDealer, nowMillis: late) == .settled)
        }
        #expect(Escalator.evaluate(interactionID: "i-1", fields: Self.dealerDialogue.merging(["direction": "outbound"]) { $1 }, rules: rules,
                                   locator: Self.atDealer, nowMillis: late) == .notApplicable("outbound"))
        var unallocated = Self.dealerDialogue
        unallocated["handling_level"] = nil
        #expect(Escalator.evaluate(interactionID: "i-1", fields: unallocated, rules: rules, locator: Self.atDealer, nowMillis: late)
                == .notApplicable("not allocated (no handling level)"))
    }

    @Test("Without an SLA due the unanswered rule decides (2 days at the dealer → HQ); a node that cannot place the country does not write")
    func unansweredAndPlacement() throws {
        let rules = try Self.rules("automaker")
        var noSLA = Self.dealerDialogue
        noSLA["sla_due"] = nil
        guard case .escalate(let steps) = Escalator.evaluate(interactionID: "i-2", fields: noSLA, rules: rules, locator: Self.atDealer,
                                                             nowMillis: Self.t("2026-12-05T10:00:00Z")) else {
            Issue.record("expected an escalation"); return
        }
        #expect(steps.count == 1 && steps[0].rule == "dealer-unanswered" && steps[0].toNode == "hq" && steps[0].dueMillis == Self.t("2026-12-05T10:00:00Z"))
        // fr knows its own path only: it holds a de dealer's dialogue (created by its dealer, handled at
        // de-berlin) but cannot name de-berlin's country, so it leaves the step to the nodes that can.
        let atFrance = NodeLocator(path: ["hq", "fr"])
        #expect(Escalator.evaluate(interactionID: "i-1", fields: Self.dealerDialogue, rules: rules, locator: atFrance,
                                   nowMillis: Self.t("2026-12-03T14:00:00Z")) == .cannotPlace(level: "country", from: "de-berlin"))
    }

    @Test("A rule of the new level never falls due before the dialogue arrived there")
    func neverBeforeArrival() throws {
        let rules = try Self.rules("automaker")
        // 8 h SLA, nothing at the dealer: dealer-sla-breach at 18:00 → de; country-sla-breach would be
        // 22:00, and country-unanswered a day after arriving.
        var fields = Self.dealerDialogue
        fields["sla_due"] = "2026-12-03T18:00:00Z"
        guard case .escalate(let steps) = Escalator.evaluate(interactionID: "i-3", fields: fields, rules: rules, locator: Self.atHQ,
                                                             nowMillis: Self.t("2026-12-03T22:00:00Z")) else {
            Issue.record("expected escalations"); return
        }
        #expect(steps.map(\.dueMillis) == [Self.t("2026-12-03T18:00:00Z"), Self.t("2026-12-03T22:00:00Z")])
        // A hand-made table whose country rule would be due before the arrival: it fires at the arrival.
        let table = EscalationTable(levels: ["hq", "country", "dealer"], rules: [
            EscalationRule(id: "slow", order: 0, level: "dealer", condition: .unansweredFor(seconds: 86_400), toLevel: "country", toQueue: "cq"),
            EscalationRule(id: "fast", order: 1, level: "country", condition: .slaBreachedBy(seconds: 0), toLevel: "hq", toQueue: "hq-q"),
        ], queues: [:])
        let custom = RulesInForce(release: 7, overlay: "de#2", escalation: table, proactive: ProactiveTable(levels: table.levels, rules: [], queues: [:]))
        guard case .escalate(let fast) = Escalator.evaluate(interactionID: "i-3", fields: Self.dealerDialogue, rules: custom, locator: Self.atHQ,
                                                            nowMillis: Self.t("2026-12-05T00:00:00Z")) else {
            Issue.record("expected escalations"); return
        }
        #expect(fast.map(\.dueMillis) == [Self.t("2026-12-04T10:00:00Z"), Self.t("2026-12-04T10:00:00Z")] && fast[1].release == 7)
    }

    @Test("Insurer (two levels): an agency's dialogue breaching its SLA goes to HQ's service centre; unanswered 3 days, to complaints")
    func insurer() throws {
        let rules = try Self.rules("insurer")
        let fields: [String: FieldValue] = ["handling_level": "agent", "queue": "agent-sales", "handling_node": "agency-7",
                                            "originating_node": "agency-7", "created_at": "2026-12-01T09:00:00Z", "sla_due": "2026-12-01T13:00:00Z"]
        for locator in [NodeLocator(path: ["hq", "agency-7"]), NodeLocator(path: ["hq"])] {
            guard case .escalate(let steps) = Escalator.evaluate(interactionID: "p-1", fields: fields, rules: rules, locator: locator,
                                                                 nowMillis: Self.t("2026-12-01T13:00:00Z")) else {
                Issue.record("expected an escalation"); return
            }
            #expect(steps.count == 1 && steps[0].rule == "agent-sla-breach" && steps[0].toNode == "hq" && steps[0].toQueue == "hq-service-centre")
        }
    }

    @Test("A dialogue HQ allocated to the dealer level without a dealer to give it to (no owning dealer) escalates where it is: to the country level and queue at HQ (no node took it, and it never escalated)")
    func escalatesInPlaceAtHQ() throws {
        let rules = try Self.rules("automaker")
        var atHQ = Self.dealerDialogue
        atHQ["handling_node"] = "hq"
        atHQ["originating_node"] = "hq"
        guard case .escalate(let steps) = Escalator.evaluate(interactionID: "i-hq", fields: atHQ, rules: rules, locator: Self.atHQ,
                                                             nowMillis: Self.t("2026-12-03T14:00:00Z")) else {
            Issue.record("expected an escalation"); return
        }
        let step = try #require(steps.first)
        #expect(step.step == 1 && step.fromNode == "hq" && step.toLevel == "country" && step.toNode == "hq" && step.allocatedNode == "hq")
        #expect(step.interactionFields["handling_level"] == "country" && step.interactionFields["handling_node"] == "hq")
    }

    @Test("Withdrawal: an escalation due after the dialogue was answered is withdrawn and the dialogue goes back; due before, it stands")
    func withdrawal() throws {
        let rules = try Self.rules("automaker")
        guard case .escalate(let steps) = Escalator.evaluate(interactionID: "i-1", fields: Self.dealerDialogue, rules: rules,
                                                             locator: Self.atHQ, nowMillis: Self.t("2026-12-04T00:00:00Z")) else {
            Issue.record("expected escalations"); return
        }
        var escalated = Self.dealerDialogue
        for step in steps { for (k, v) in step.interactionFields { escalated[k] = v } }
        let entries = steps.map { (id: $0.recordID, fields: $0.entryFields) }
        // Answered at 13:30 at the dealer, offline: both steps (14:00, 18:00) came too late.
        var answered = escalated
        answered["answered_at"] = "2026-12-03T13:30:00Z"
        let w = try #require(Escalator.withdrawal(interactionID: "i-1", fields: answered, entries: entries))
        #expect(w.reason == "answered at 2026-12-03T13:30:00Z, before this escalation was due")
        #expect(Set(w.entries.keys) == Set(steps.map(\.recordID)) && w.entries.values.allSatisfy { $0["status"] == "withdrawn" })
        #expect(w.interactionFields == ["handling_level": "dealer", "queue": "dealer-service", "handling_node": "de-berlin",
                                        "escalation_step": .int(0), "escalated_at": .null, "allocated_node": .null])
        // Once written (by any node), nothing more to do.
        var done = answered
        for (k, v) in w.interactionFields { done[k] = v }
        let withdrawnEntries = entries.map { e in (id: e.id, fields: e.fields.merging(w.entries[e.id]!) { $1 }) }
        #expect(Escalator.withdrawal(interactionID: "i-1", fields: done, entries: withdrawnEntries) == nil)
        // Resolved at 16:00: the first step (14:00) stands, the second (18:00) is withdrawn, back at de.
        var resolved = escalated
        resolved["resolved_at"] = "2026-12-03T16:00:00Z"
        let second = try #require(Escalator.withdrawal(interactionID: "i-1", fields: resolved, entries: entries))
        #expect(Array(second.entries.keys) == [steps[1].recordID] && second.interactionFields["handling_node"] == "de"
                && second.interactionFields["escalation_step"] == .int(1) && second.interactionFields["escalated_at"] == "2026-12-03T14:00:00Z")
        // Answered after both were due: nothing is withdrawn.
        var late = escalated
        late["answered_at"] = "2026-12-03T18:00:00Z"
        #expect(Escalator.withdrawal(interactionID: "i-1", fields: late, entries: entries) == nil)
        #expect(Escalator.withdrawal(interactionID: "i-1", fields: escalated, entries: entries) == nil, "not answered: nothing to withdraw")
    }

    @Test("Steps any node wrote out of range (Int64.max, negative, Int64.min) are not counted on from: no trap, nothing escalated or withdrawn")
    func stepsOutOfRange() throws {
        let rules = try Self.rules("automaker")
        let due = Self.t("2026-12-04T00:00:00Z")
        for held in [Int64.max, Int64(Escalator.maxStep) + 1, -1, Int64.min] {
            var fields = Self.dealerDialogue
            fields["escalation_step"] = .int(held)
            fields["escalated_at"] = "2026-12-03T12:00:00Z"
            #expect(Escalator.evaluate(interactionID: "i-1", fields: fields, rules: rules, locator: Self.atHQ, nowMillis: due)
                    == .notApplicable("escalation_step \(held) is outside 0…\(Escalator.maxStep)"))
        }
        // The highest step rules write is still counted on from.
        var top = Self.dealerDialogue
        top["escalation_step"] = .int(Int64(Escalator.maxStep) - 1)
        top["escalated_at"] = "2026-12-03T12:00:00Z"
        guard case .escalate(let steps) = Escalator.evaluate(interactionID: "i-1", fields: top, rules: rules, locator: Self.atHQ, nowMillis: due) else {
            Issue.record("expected an escalation from the last step in range"); return
        }
        #expect(steps.first?.step == Escalator.maxStep)
        // An entry claiming step Int64.min (or 0, or beyond the range), due after the answer:
        // not withdrawn, and the dialogue not moved back to step Int64.min − 1.
        var answered = Self.dealerDialogue
        answered["answered_at"] = "2026-12-03T13:30:00Z"
        for bogus in [Int64.min, 0, Int64(Escalator.maxStep) + 1, Int64.max] {
            let entry: [String: FieldValue] = ["interaction_id": "i-1", "step": .int(bogus), "due_at": "2026-12-03T14:00:00Z", "status": "escalated",
                                               "from_level": "dealer", "from_node": "de-berlin"]
            #expect(Escalator.withdrawal(interactionID: "i-1", fields: answered, entries: [(id: "e-1", fields: entry)]) == nil)
        }
    }

    @Test("Calendar days: round trips, leap years, invalid dates")
    func civilDates() {
        for text in ["1970-01-01", "2024-02-29", "2026-12-31", "2027-03-01", "2100-02-28"] {
            #expect(CivilDate.days(text).map(CivilDate.format(days:)) == text)
        }
        #expect(CivilDate.days("1970-01-02") == 1 && CivilDate.days("2026-12-03") == Int(Timestamp.parse("2026-12-03T00:00:00Z")! / 86_400_000))
        for bad in ["2026-02-29", "2026-13-01", "2026-1-01", "26-01-01", "2026-04-31", ""] { #expect(CivilDate.days(bad) == nil, "\(bad)") }
    }
}

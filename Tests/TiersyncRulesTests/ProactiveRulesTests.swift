import Foundation
import Testing
import TiersyncCore
import TiersyncGovernance
import TiersyncRules
import TiersyncTestSupport

/// Proactive contacts as plain values: the automaker and insurer rules over a vehicle, its
/// customer's consents, the evaluating node and a time.
@Suite("Proactive rules, pure")
struct ProactiveRulesTests {
    static func rules(_ fixture: String, overlay: String? = nil) throws -> RulesInForce {
        let root = repositoryRoot() + "/fixtures/governance/"
        var config = try GovernanceCompiler.compile(directory: root + fixture).config
        if let overlay {
            let source = try OverlaySource.parse(yaml: try String(contentsOfFile: root + overlay, encoding: .utf8), file: overlay)
            for (path, value) in source.set {
                let replaced = config.replace(path: path, with: value)
                #expect(replaced, "\(path)")
            }
        }
        return try RulesInForce(release: 1, overlay: overlay == nil ? nil : "de#1", config: config)
    }

    static func t(_ text: String) -> UInt64 { Timestamp.parse(text)! }

    static let dealerPath = NodeLocator(path: ["hq", "de", "de-berlin"])
    /// de's own path, and its dealer (a country knows its children).
    static var countryPath: NodeLocator {
        var l = NodeLocator(path: ["hq", "de"])
        l.learn(path: ["hq", "de", "de-berlin"])
        return l
    }
    static let hqTree = NodeLocator(path: ["hq"], tree: NodeTree(parents: ["hq": nil, "de": "hq", "de-berlin": "de"]))

    /// A car sold by de-berlin on 1 December 2026, its leasing ending on 30 June 2027.
    static let car: [String: FieldValue] = ["kind": "vehicle", "customer_id": "c-1", "owning_dealer": "de-berlin",
                                            "sale_date": "2026-12-01", "contract_end_date": "2027-06-30"]
    static let consenting: [String: FieldValue] = ["consent_service_phone": true, "consent_marketing_phone": true, "consent_marketing_email": true]

    static func created(_ outcomes: [ProactiveOutcome]) -> [ProactiveTask] {
        outcomes.compactMap { if case .create(let task) = $0 { task } else { nil } }
    }

    @Test("The automaker's proactive rules are read; de's overlay moves the satisfaction call to 45 days")
    func table() throws {
        let table = try Self.rules("automaker").proactive
        #expect(table.rules.map(\.id) == ["handover-call", "satisfaction-call", "lease-end-call", "lease-end-email"])
        #expect(table.rules[0] == ProactiveRule(id: "handover-call", order: 0, event: .sale, days: 3, level: "dealer", queue: "dealer-sales",
                                                channel: "phone", consent: "service_phone", priority: 3))
        #expect(table.rules[2].event == .contractEnd && table.rules[2].days == 90 && table.rules[2].consentField == "consent_marketing_phone")
        #expect(try Self.rules("automaker", overlay: "overlays/de.yaml").proactive.rules[1].days == 45)
    }

    @Test("A consenting customer's handover call: one task at the dealer, due 3 days after the sale, created from 14 days before to 7 days after")
    func handoverCall() throws {
        let rules = try Self.rules("automaker")
        let outcomes = ProactivePlanner.evaluate(vehicleID: "v-1", vehicle: Self.car, customer: Self.consenting, rules: rules,
                                                 evaluator: "de-berlin", locator: Self.dealerPath, nowMillis: Self.t("2026-12-03T10:00:00Z"))
        #expect(outcomes.count == 4)
        let tasks = Self.created(outcomes)
        #expect(tasks.count == 1)
        let task = try #require(tasks.first)
        #expect(task.rule == "handover-call" && task.dueDate == "2026-12-04" && task.dueMillis == Self.t("2026-12-04T00:00:00Z")
                && task.assignedNode == "de-berlin" && task.owningDealer == "de-berlin" && task.queue == "dealer-sales" && task.priority == 3)
        #expect(task.recordID == RuleRecordID.proactiveTask(rule: "handover-call", vehicleID: "v-1", dueDate: "2026-12-04") && task.recordID.hasPrefix("task-"))
        #expect(task.recordID != RuleRecordID.proactiveTask(rule: "handover-call", vehicleID: "v-1", dueDate: "2026-12-05"))
        #expect(task.fields["status"] == "open" && task.fields["kind"] == "proactive" && task.fields["requires_consent"] == "service_phone"
                && task.fields["due_at"] == "2026-12-04T00:00:00Z" && task.fields["release"] == .int(1))
        for name in task.fields.keys { #expect(DomainSchema.tasks.field(name) != nil, "\(name)") }
        #expect(outcomes.contains(.notDue(rule: "satisfaction-call")) && outcomes.contains(.notDue(rule: "lease-end-call")))
        // The window: 14 days before the due date on, until 7 days after it.
        for (now, expected) in [("2026-11-19T23:59:59Z", 0), ("2026-11-20T00:00:00Z", 1), ("2026-12-10T23:59:59Z", 1), ("2026-12-11T00:00:00Z", 0)] {
            let n = Self.created(ProactivePlanner.evaluate(vehicleID: "v-1", vehicle: Self.car, customer: Self.consenting, rules: rules,
                                                           evaluator: "de-berlin", locator: Self.dealerPath, nowMillis: Self.t(now))).count
            #expect(n == expected, "\(now)")
        }
    }

    @Test("No consent, no task: consent absent or false for the rule's purpose and channel, or the customer not held")
    func consentFirst() throws {
        let rules = try Self.rules("automaker")
        for customer: [String: FieldValue]? in [[:], ["consent_service_phone": false], ["consent_service_email": true], nil] {
            let outcomes = ProactivePlanner.evaluate(vehicleID: "v-1", vehicle: Self.car, customer: customer, rules: rules,
                                                     evaluator: "de-berlin", locator: Self.dealerPath, nowMillis: Self.t("2026-12-03T10:00:00Z"))
            #expect(Self.created(outcomes).isEmpty && outcomes.contains(.noConsent(rule: "handover-call", consent: "service_phone")), "\(String(describing: customer))")
        }
    }

    @Test("The dealer and its country create the same task; HQ of a three-level tenant leaves it to them; a country-level rule goes to de")
    func whoCreates() throws {
        let rules = try Self.rules("automaker")
        let now = Self.t("2026-12-03T10:00:00Z")
        let atDealer = ProactivePlanner.evaluate(vehicleID: "v-1", vehicle: Self.car, customer: Self.consenting, rules: rules,
                                                 evaluator: "de-berlin", locator: Self.dealerPath, nowMillis: now)
        let atCountry = ProactivePlanner.evaluate(vehicleID: "v-1", vehicle: Self.car, customer: Self.consenting, rules: rules,
                                                  evaluator: "de", locator: Self.countryPath, nowMillis: now)
        #expect(atDealer == atCountry)
        let atHQ = ProactivePlanner.evaluate(vehicleID: "v-1", vehicle: Self.car, customer: Self.consenting, rules: rules,
                                             evaluator: "hq", locator: Self.hqTree, nowMillis: now)
        #expect(atHQ.allSatisfy { if case .notHere = $0 { true } else { false } })
        // Six weeks after the sale (de's overlay: 45 days): the satisfaction call, by de's dialogue centre.
        let overlaid = try Self.rules("automaker", overlay: "overlays/de.yaml")
        let calls = Self.created(ProactivePlanner.evaluate(vehicleID: "v-1", vehicle: Self.car, customer: Self.consenting, rules: overlaid,
                                                           evaluator: "de-berlin", locator: Self.dealerPath, nowMillis: Self.t("2027-01-10T00:00:00Z")))
        #expect(calls.map(\.rule) == ["satisfaction-call"] && calls[0].assignedNode == "de" && calls[0].dueDate == "2027-01-15"
                && calls[0].owningDealer == "de-berlin" && calls[0].queue == "country-dialogue-centre")
        // The lease end: de's e-mail 120 days before 30 June, the dealer's call 90 days before.
        for (now, expected) in [("2027-02-20T00:00:00Z", "lease-end-email 2027-03-02 de"), ("2027-03-25T00:00:00Z", "lease-end-call 2027-04-01 de-berlin")] {
            let lease = Self.created(ProactivePlanner.evaluate(vehicleID: "v-1", vehicle: Self.car, customer: Self.consenting, rules: rules,
                                                               evaluator: "de", locator: Self.countryPath, nowMillis: Self.t(now)))
            #expect(lease.map { "\($0.rule) \($0.dueDate) \($0.assignedNode)" } == [expected], "\(now)")
        }
    }

    @Test("The event dates a store reads for a rule cover every vehicle whose task is in its window")
    func eventDates() throws {
        let rules = try Self.rules("automaker")
        let now = Self.t("2026-12-03T10:00:00Z")
        for rule in rules.proactive.rules {
            let range = ProactivePlanner.eventDates(for: rule, nowMillis: now)
            for offset in -400...400 {
                let eventDay = CivilDate.day(ofMillis: now) + offset
                let inWindow = ProactivePlanner.isInWindow(dueDay: rule.dueDay(eventDay: eventDay), nowMillis: now)
                if inWindow { #expect(range.contains(CivilDate.format(days: eventDay)), "\(rule.id) \(offset)") }
            }
        }
    }

    @Test("The event dates of a time near year 9999 (tiersync rules run --now 9999-12-31T00:00:00Z) are a range, not a trap: past 9999 the year sorted before 9999 as text")
    func eventDatesNearYear9999() throws {
        let rules = try Self.rules("automaker")
        for time in ["9999-10-01T00:00:00Z", "9999-12-31T00:00:00Z"] {
            for rule in rules.proactive.rules {
                let now = Self.t(time)
                let range = ProactivePlanner.eventDates(for: rule, nowMillis: now)
                // Every event date of a four-digit year whose task is in the window is in it.
                for offset in -400...400 {
                    let eventDay = CivilDate.day(ofMillis: now) + offset
                    let date = CivilDate.format(days: eventDay)
                    guard date.count == 10, ProactivePlanner.isInWindow(dueDay: rule.dueDay(eventDay: eventDay), nowMillis: now) else { continue }
                    #expect(range.contains(date), "\(rule.id) \(time) \(date)")
                }
            }
        }
    }

    @Test("Cancellation: an open task whose customer withdrew the consent, with the time of the withdrawal; nothing otherwise")
    func cancellation() throws {
        let rules = try Self.rules("automaker")
        let task = try #require(Self.created(ProactivePlanner.evaluate(vehicleID: "v-1", vehicle: Self.car, customer: Self.consenting, rules: rules,
                                                                        evaluator: "de-berlin", locator: Self.dealerPath,
                                                                        nowMillis: Self.t("2026-12-03T10:00:00Z"))).first).fields
        let withdrawnAt = Self.t("2026-12-03T11:15:00Z")
        #expect(ProactivePlanner.cancellation(task: task, customer: ["consent_service_phone": false], consentChangedAtMillis: withdrawnAt)
                == ["status": "cancelled", "cancel_reason": "consent service_phone withdrawn", "cancelled_at": "2026-12-03T11:15:00Z"])
        #expect(ProactivePlanner.cancellation(task: task, customer: [:], consentChangedAtMillis: nil)?["cancel_reason"] == "consent service_phone not given")
        #expect(ProactivePlanner.cancellation(task: task, customer: Self.consenting, consentChangedAtMillis: withdrawnAt) == nil)
        #expect(ProactivePlanner.cancellation(task: task, customer: nil, consentChangedAtMillis: nil) == nil, "customer not held: cannot judge")
        #expect(ProactivePlanner.cancellation(task: task.merging(["status": "done"]) { $1 }, customer: [:], consentChangedAtMillis: nil) == nil)
        #expect(ProactivePlanner.cancellation(task: ["status": "open", "kind": "callback"], customer: [:], consentChangedAtMillis: nil) == nil)
    }

    @Test("""
    a moved dealer's task: of one rule and vehicle's open tasks, one assigned on the dealer's path now stays, whatever governance \
    made the other (de#1 outranked no overlay); a node that does not know the dealer's place orders by governance alone
    """)
    func supersededAfterAMove() throws {
        let rules = try Self.rules("automaker")
        let deTask = try #require(Self.created(ProactivePlanner.evaluate(vehicleID: "v-1", vehicle: Self.car, customer: Self.consenting, rules: rules,
                                                                          evaluator: "de-berlin", locator: Self.dealerPath,
                                                                          nowMillis: Self.t("2026-12-03T10:00:00Z"))).first)
        var de = deTask.fields, fr = deTask.fields
        de["assigned_node"] = "de"
        de["overlay"] = "de#1"
        fr["assigned_node"] = "fr"
        fr["due_at"] = "2026-12-20T00:00:00Z"
        fr["overlay"] = .null
        let tasks: [(id: String, fields: [String: FieldValue])] = [("task-de", de), ("task-fr", fr)]
        let moved = ProactivePlanner.superseded(tasks, pathOf: { $0 == "de-berlin" ? ["hq", "fr", "de-berlin"] : nil })
        #expect(Set(moved.keys) == ["task-de"])
        #expect(moved["task-de"]?["cancel_reason"] == "superseded by task task-fr: its dealer moved (de is off its path; that task is at fr)")
        // The same held in the other order; a task assigned anywhere on the path counts as placed (HQ for an expert pool).
        #expect(ProactivePlanner.superseded(Array(tasks.reversed()), pathOf: { _ in ["hq", "fr", "de-berlin"] }) == moved)
        var atHQ = de
        atHQ["assigned_node"] = "hq"
        #expect(Set(ProactivePlanner.superseded([("task-hq", atHQ), ("task-fr", fr)], pathOf: { _ in ["hq", "fr", "de-berlin"] }).keys) == ["task-fr"],
                "both placed: the newest governance (an overlay over none)")
        // Not knowing the place: governance alone, as before.
        #expect(Set(ProactivePlanner.superseded(tasks, pathOf: { _ in nil }).keys) == ["task-fr"])
        #expect(Set(ProactivePlanner.superseded(tasks).keys) == ["task-fr"])
    }

    @Test("""
    One open task per rule and vehicle: a release or overlay that moves the rule's timing plans the contact for another day, and the \
    older governance's task is cancelled (both stayed open: the customer was called twice), the same at every node whatever rules it runs
    """)
    func supersededTasks() throws {
        let rules = try Self.rules("automaker")
        let first = try #require(Self.created(ProactivePlanner.evaluate(vehicleID: "v-1", vehicle: Self.car, customer: Self.consenting, rules: rules,
                                                                         evaluator: "de-berlin", locator: Self.dealerPath,
                                                                         nowMillis: Self.t("2026-12-03T10:00:00Z"))).first)
        #expect(ProactivePlanner.superseded([(first.recordID, first.fields)]).isEmpty)
        // Release 2 calls a day earlier: a second task, id of its own due date.
        var moved = first
        moved.dueDate = "2026-12-03"
        moved.release = 2
        var movedFields = moved.fields
        movedFields["due_at"] = "2026-12-03T00:00:00Z"
        #expect(moved.recordID != first.recordID)
        let cancel = ProactivePlanner.superseded([(first.recordID, first.fields), (moved.recordID, movedFields)])
        #expect(Set(cancel.keys) == [first.recordID], "the older release's task goes, whichever day it is due")
        #expect(cancel[first.recordID]?["status"] == "cancelled"
                && cancel[first.recordID]?["cancel_reason"] == .string("superseded by task \(moved.recordID): the rule's timing changed (release 2)"))
        // Held in the other order by another node: the same.
        #expect(ProactivePlanner.superseded([(moved.recordID, movedFields), (first.recordID, first.fields)]) == cancel)
        // Same release, a newer overlay of the country (de#3 over de#2), and an overlay over none.
        var overlaid = first, newer = moved
        overlaid.overlay = "de#2"
        newer.release = 1
        newer.overlay = "de#3"
        var newerFields = newer.fields
        newerFields["due_at"] = "2026-12-03T00:00:00Z"
        #expect(Set(ProactivePlanner.superseded([(overlaid.recordID, overlaid.fields), (newer.recordID, newerFields)]).keys) == [overlaid.recordID])
        #expect(Set(ProactivePlanner.superseded([(first.recordID, first.fields), (newer.recordID, newerFields)]).keys) == [first.recordID])
        // Done or cancelled tasks, other vehicles, other rules and other kinds are left alone.
        var done = first.fields
        done["status"] = "done"
        var otherVehicle = movedFields
        otherVehicle["vehicle_id"] = "v-2"
        var otherRule = movedFields
        otherRule["rule_id"] = "satisfaction-call"
        var callback = movedFields
        callback["kind"] = "callback"
        #expect(ProactivePlanner.superseded([(first.recordID, done), (moved.recordID, movedFields)]).isEmpty)
        #expect(ProactivePlanner.superseded([(first.recordID, first.fields), ("b", otherVehicle), ("c", otherRule), ("d", callback)]).isEmpty)
    }

    @Test("""
    A sale date corrected to an earlier day plans a task due earlier, under the same governance: the task planned from the \
    newer version of the date stays and the other is cancelled, saying why (the later due date kept the stale task and \
    cancelled the right one as "the rule's timing changed"); a task without the field is judged as before
    """)
    func dateCorrectedEarlier() throws {
        let rules = try Self.rules("automaker")
        var stale = try #require(Self.created(ProactivePlanner.evaluate(vehicleID: "v-1", vehicle: Self.car, customer: Self.consenting, rules: rules,
                                                                         evaluator: "de-berlin", locator: Self.dealerPath,
                                                                         nowMillis: Self.t("2026-12-03T10:00:00Z"))).first)
        stale.plannedFrom = FieldVersion(hlc: HLCTimestamp(wallMillis: 1_000, counter: 0), node: "de-berlin")
        var corrected = stale
        corrected.dueDate = "2026-12-02"
        corrected.dueMillis -= 2 * 86_400_000
        corrected.plannedFrom = FieldVersion(hlc: HLCTimestamp(wallMillis: 2_000, counter: 0), node: "hq")
        #expect(corrected.recordID != stale.recordID && corrected.dueMillis < stale.dueMillis)
        let cancel = ProactivePlanner.superseded([(stale.recordID, stale.fields), (corrected.recordID, corrected.fields)])
        #expect(Set(cancel.keys) == [stale.recordID], "the task of the date as it is now stays, though it is due earlier")
        #expect(cancel[stale.recordID]?["cancel_reason"] == .string("superseded by task \(corrected.recordID): the vehicle's date it was planned from changed (that task is due 2026-12-02)"))
        #expect(ProactivePlanner.superseded([(corrected.recordID, corrected.fields), (stale.recordID, stale.fields)]) == cancel)
        // A task written by a node of the previous version (no planned_from) is judged as that node judges it,
        // by the later due date, so the two versions keep the same task rather than each cancelling the other's.
        var unknown = stale.fields
        unknown["planned_from"] = nil
        #expect(Set(ProactivePlanner.superseded([(stale.recordID, unknown), (corrected.recordID, corrected.fields)]).keys) == [corrected.recordID])
        // A newer release still outranks a newer date (its timing is the one in force).
        var released = stale
        released.release = 2
        #expect(Set(ProactivePlanner.superseded([(released.recordID, released.fields), (corrected.recordID, corrected.fields)]).keys) == [corrected.recordID])
    }

    @Test("Insurer (two levels): the agency and HQ (its parent) create the welcome call; the renewal e-mail is HQ's")
    func insurer() throws {
        let rules = try Self.rules("insurer")
        let policy: [String: FieldValue] = ["kind": "contract", "customer_id": "c-9", "owning_dealer": "agency-7",
                                            "sale_date": "2026-12-01", "contract_end_date": "2027-01-25"]
        let customer: [String: FieldValue] = ["consent_service_phone": true, "consent_service_email": true]
        let now = Self.t("2026-12-14T00:00:00Z")
        let atAgency = ProactivePlanner.evaluate(vehicleID: "p-1", vehicle: policy, customer: customer, rules: rules, evaluator: "agency-7",
                                                 locator: NodeLocator(path: ["hq", "agency-7"]), nowMillis: now)
        var hq = NodeLocator(path: ["hq"])
        hq.learn(path: ["hq", "agency-7"])
        let atHQ = ProactivePlanner.evaluate(vehicleID: "p-1", vehicle: policy, customer: customer, rules: rules, evaluator: "hq", locator: hq, nowMillis: now)
        #expect(atAgency == atHQ)
        #expect(Set(Self.created(atAgency).map { "\($0.rule) \($0.dueDate) \($0.assignedNode)" })
                == ["welcome-call-after-sale 2026-12-15 agency-7", "renewal-reminder-email 2026-12-26 hq"])
        #expect(atAgency.contains(.notDue(rule: "renewal-call")), "due 2026-11-26: more than 7 days ago")
        let phoneOnly = ProactivePlanner.evaluate(vehicleID: "p-1", vehicle: policy, customer: ["consent_service_phone": true], rules: rules,
                                                  evaluator: "agency-7", locator: NodeLocator(path: ["hq", "agency-7"]), nowMillis: now)
        #expect(phoneOnly.contains(.noConsent(rule: "renewal-reminder-email", consent: "service_email")) && Self.created(phoneOnly).count == 1)
    }
}

import Foundation
import TiersyncCore
import TiersyncGovernance

/// What starts a proactive contact.
public enum ProactiveEvent: String, Sendable, Hashable {
    /// `days_after` the vehicle's `sale_date`.
    case sale
    /// `days_before` the vehicle's (or contract's) `contract_end_date`.
    case contractEnd = "contract_end"

    /// The `vehicles` field the event is read from.
    public var dateField: String {
        switch self {
        case .sale: "sale_date"
        case .contractEnd: "contract_end_date"
        }
    }
}

/// One proactive-contact rule of a release, as plain values.
public struct ProactiveRule: Sendable, Hashable {
    public var id: String
    public var order: Int
    public var event: ProactiveEvent
    /// `days_after` a sale, or `days_before` a contract ends.
    public var days: Int
    public var level: String
    public var queue: String
    public var channel: String
    /// The consent the contact needs (`customers.consent_<value>`).
    public var consent: String
    public var priority: Int

    public init(id: String, order: Int, event: ProactiveEvent, days: Int, level: String, queue: String, channel: String,
                consent: String, priority: Int) {
        self.id = id
        self.order = order
        self.event = event
        self.days = days
        self.level = level
        self.queue = queue
        self.channel = channel
        self.consent = consent
        self.priority = priority
    }

    /// The day a contact is due, for the day of its event.
    public func dueDay(eventDay: Int) -> Int {
        event == .sale ? eventDay + days : eventDay - days
    }

    /// The `customers` field holding the consent.
    public var consentField: String { "consent_" + consent }
}

/// The proactive part of an effective config.
public struct ProactiveTable: Sendable, Hashable {
    public let levels: [String]
    public let rules: [ProactiveRule]
    public let queues: [String: AllocationQueue]

    public init(levels: [String], rules: [ProactiveRule], queues: [String: AllocationQueue]) {
        self.levels = levels
        self.rules = rules.sorted { ($0.order, $0.id) < ($1.order, $1.id) }
        self.queues = queues
    }

    public init(config: ConfigValue) throws(AllocationConfigError) {
        func fail(_ path: String, _ message: String) -> AllocationConfigError { AllocationConfigError(path: path, message: message) }
        let levels = try ConfigBasics.levels(config)
        var rules: [ProactiveRule] = []
        for (id, value) in config[path: "proactive"]?.objectValue ?? [:] {
            let path = "proactive.\(id)"
            guard let rule = value.objectValue, let trigger = rule["trigger"]?.objectValue else { throw fail(path, "expected a mapping with a trigger") }
            guard let order = ConfigBasics.integer(rule["order"]) else { throw fail(path + ".order", "missing") }
            guard let event = trigger["event"]?.stringValue.flatMap(ProactiveEvent.init(rawValue:)) else {
                throw fail(path + ".trigger.event", "missing or not sale or contract_end")
            }
            let daysKey = event == .sale ? "days_after" : "days_before"
            guard let days = ConfigBasics.integer(trigger[daysKey]), days >= 0 else { throw fail("\(path).trigger.\(daysKey)", "missing") }
            guard let level = rule["level"]?.stringValue, levels.contains(level) else { throw fail(path + ".level", "missing or not one of \(levels)") }
            guard let queue = rule["queue"]?.stringValue, let channel = rule["channel"]?.stringValue,
                  let consent = rule["requires_consent"]?.stringValue, let priority = ConfigBasics.integer(rule["priority"]) else {
                throw fail(path, "needs queue, channel, requires_consent and priority")
            }
            rules.append(ProactiveRule(id: id, order: order, event: event, days: days, level: level, queue: queue, channel: channel,
                                       consent: consent, priority: priority))
        }
        self.init(levels: levels, rules: rules, queues: try ConfigBasics.queues(config))
    }
}

/// A proactive contact to create: one per rule, vehicle and due date, with an id derived
/// from the three, and every value derived from the vehicle, the rule and the release, so
/// every node that creates it writes the same record.
public struct ProactiveTask: Sendable, Hashable {
    public var rule: String
    public var vehicleID: String
    public var customerID: String
    /// `YYYY-MM-DD`.
    public var dueDate: String
    /// The start of the due day, UTC.
    public var dueMillis: UInt64
    public var channel: String
    public var queue: String
    public var level: String
    public var priority: Int
    public var consent: String
    /// The node of the rule's level for the vehicle's dealer.
    public var assignedNode: NodeID
    public var owningDealer: NodeID
    public var release: Int
    /// The country overlay applied on top of the release (`de#2`), if any: its timing may
    /// differ from HQ's.
    public var overlay: String? = nil
    /// The version of the vehicle's event date the task is planned from (set by whoever
    /// reads the vehicle's versions): of two open tasks of one rule and vehicle under the
    /// same governance, the one planned from the newer date stays (``ProactivePlanner/superseded(_:pathOf:)``).
    public var plannedFrom: FieldVersion? = nil

    public var recordID: String { RuleRecordID.proactiveTask(rule: rule, vehicleID: vehicleID, dueDate: dueDate) }

    /// When the task's creation window opens (``ProactivePlanner/leadDays`` before the due
    /// day): every node creating it stamps its creation so, whenever it runs.
    public var createdFromMillis: UInt64 {
        dueMillis - min(dueMillis, UInt64(ProactivePlanner.leadDays) * CivilDate.dayMillis)
    }

    /// The new task, status open.
    public var fields: [String: FieldValue] {
        [
            TaskField.customerID.rawValue: .string(customerID), TaskField.vehicleID.rawValue: .string(vehicleID),
            TaskField.kind.rawValue: .string(ProactivePlanner.kind), TaskField.ruleID.rawValue: .string(rule),
            TaskField.channel.rawValue: .string(channel), TaskField.queue.rawValue: .string(queue),
            TaskField.level.rawValue: .string(level), TaskField.priority.rawValue: .int(Int64(priority)),
            TaskField.requiresConsent.rawValue: .string(consent), TaskField.dueAt.rawValue: .string(Timestamp.format(dueMillis)),
            TaskField.status.rawValue: .string(TaskStatus.open.rawValue), TaskField.assignedNode.rawValue: .string(assignedNode.rawValue),
            TaskField.owningDealer.rawValue: .string(owningDealer.rawValue), TaskField.release.rawValue: .int(Int64(release)),
        ].merging(overlay.map { [TaskField.overlay.rawValue: FieldValue.string($0)] } ?? [:]) { a, _ in a }
            .merging(plannedFrom.map { [TaskField.plannedFrom.rawValue: FieldValue.string($0.description)] } ?? [:]) { a, _ in a }
    }
}

/// The fields of a `tasks` record rules read and write.
public enum TaskField: String, CaseIterable, Sendable {
    case customerID = "customer_id"
    case vehicleID = "vehicle_id"
    case kind
    case ruleID = "rule_id"
    case channel, queue, level, priority
    case requiresConsent = "requires_consent"
    case dueAt = "due_at"
    case status
    case assignedNode = "assigned_node"
    case owningDealer = "owning_dealer"
    case release, overlay
    case plannedFrom = "planned_from"
    case cancelReason = "cancel_reason"
    case cancelledAt = "cancelled_at"
}

public enum TaskStatus: String, Sendable {
    case open, done, cancelled
}

/// What one proactive rule says about one vehicle now.
public enum ProactiveOutcome: Sendable, Hashable {
    /// Create this task (if the node does not hold it yet).
    case create(ProactiveTask)
    /// The customer did not give the consent the rule needs (or the node does not hold the customer).
    case noConsent(rule: String, consent: String)
    /// The vehicle lacks the event's date, or the contact is not due within the window.
    case notDue(rule: String)
    /// The evaluating node neither is the vehicle's dealer nor its parent: they create it.
    case notHere(rule: String)
    /// The node of the rule's level is not known here.
    case cannotPlace(rule: String, level: String)
}

/// Proactive contacts as a function of plain values: a vehicle (or contract), its customer,
/// the rules in force, where nodes are, and the time. No store, no clock, no I/O.
public enum ProactivePlanner {
    /// `tasks.kind` of a task a proactive rule created.
    public static let kind = "proactive"
    /// A task is created from this many days before its due date…
    public static let leadDays = 14
    /// …until this many days after it (a node offline for a few days still creates it; an
    /// imported history of old sales creates none).
    public static let graceDays = 7

    /// The tasks the rules in force give `vehicle` at `nowMillis`, evaluated at `evaluator`.
    ///
    /// For each rule: the due date is the vehicle's `sale_date` + `days_after`, or its
    /// `contract_end_date` − `days_before`; the task is created from ``leadDays`` before it
    /// until ``graceDays`` after it, only if the customer's `consent_<requires_consent>`
    /// is `true`, only at the vehicle's `owning_dealer` or that dealer's parent (the nodes
    /// that run the dealer's effective config, country overlay included — whose timing can
    /// differ from HQ's), assigned to the node of the rule's level for that dealer.
    public static func evaluate(vehicleID: String, vehicle: [String: FieldValue], customer: [String: FieldValue]?,
                                rules: RulesInForce, evaluator: NodeID, locator: NodeLocator, nowMillis: UInt64) -> [ProactiveOutcome] {
        let table = rules.proactive
        guard !table.rules.isEmpty else { return [] }
        let dealer = Escalator.node(vehicle[TaskField.owningDealer.rawValue])
        let customerID = vehicle[TaskField.customerID.rawValue]?.stringValue
        let dealerPath = dealer.flatMap { locator.path(of: $0) }
        let creates = dealer == evaluator || (dealerPath.map { $0.count >= 2 && $0[$0.count - 2] == evaluator } ?? false)
        return table.rules.map { rule in
            guard creates, let dealer else { return .notHere(rule: rule.id) }
            guard let eventDay = vehicle[rule.event.dateField]?.stringValue.flatMap(CivilDate.days), let customerID else {
                return .notDue(rule: rule.id)
            }
            let dueDay = rule.dueDay(eventDay: eventDay)
            guard dueDay >= 0, isInWindow(dueDay: dueDay, nowMillis: nowMillis) else { return .notDue(rule: rule.id) }
            guard customer?[rule.consentField] == .bool(true) else { return .noConsent(rule: rule.id, consent: rule.consent) }
            let assigned: NodeID? = rule.level == table.levels.last ? dealer
                : locator.node(at: rule.level, queue: table.queues[rule.queue], levels: table.levels, for: dealer)
            guard let assigned else { return .cannotPlace(rule: rule.id, level: rule.level) }
            return .create(ProactiveTask(
                rule: rule.id, vehicleID: vehicleID, customerID: customerID, dueDate: CivilDate.format(days: dueDay),
                dueMillis: UInt64(dueDay) * CivilDate.dayMillis, channel: rule.channel, queue: rule.queue, level: rule.level,
                priority: rule.priority, consent: rule.consent, assignedNode: assigned, owningDealer: dealer, release: rules.release,
                overlay: rules.overlay))
        }
    }

    /// True while a task due on `dueDay` is to be created: from ``leadDays`` before the day
    /// until ``graceDays`` after it.
    public static func isInWindow(dueDay: Int, nowMillis: UInt64) -> Bool {
        let due = Int64(dueDay) * Int64(CivilDate.dayMillis), now = Int64(clamping: nowMillis)
        let day = Int64(CivilDate.dayMillis)
        return now >= due - Int64(leadDays) * day && now < due + Int64(graceDays) * day
    }

    /// The event dates (`YYYY-MM-DD`, inclusive) of vehicles whose task for `rule` may be in
    /// its window at `nowMillis`: what a store needs to read, instead of every vehicle.
    public static func eventDates(for rule: ProactiveRule, nowMillis: UInt64) -> ClosedRange<String> {
        let today = CivilDate.day(ofMillis: nowMillis)
        let (firstDue, lastDue) = (today - graceDays, today + leadDays)
        let (a, b) = rule.event == .sale ? (firstDue - rule.days, lastDue - rule.days) : (firstDue + rule.days, lastDue + rule.days)
        // As text, a year past 9999 sorts before 9999: the range would be reversed (a trap).
        // The last date a four-digit year holds ends it.
        let (first, last) = (CivilDate.format(days: max(a, 0)), CivilDate.format(days: max(b, 0)))
        let end = last.count == first.count ? last : "9999-12-31"
        return first <= end ? first...end : end...end
    }

    /// The open proactive tasks to cancel because another was planned for the same contact:
    /// one rule and vehicle has one task per due date, so a release or overlay that moved
    /// the rule's timing, or a dealer moved to another country (whose overlay times it
    /// otherwise), made a second open task, and the customer was contacted twice. Of the
    /// open tasks of one rule and vehicle, one stays:
    /// - first, one assigned on its dealer's path now (`pathOf`: root first, down to the
    ///   dealer; nil where not known here): a moved dealer's contacts go to its new country,
    ///   not the one it left;
    /// - then the newest governance: highest release, then overlay sequence (`de#3` over
    ///   `de#2`, any over none);
    /// - then the task planned from the newer version of the vehicle's event date
    ///   (`planned_from`, when both have one): under one governance, two due dates of one rule
    ///   and vehicle mean the date was changed, and the later due date had kept the task of
    ///   a sale date corrected to an earlier day, and cancelled the right one (helper 90);
    /// - then the later due date, then id.
    ///
    /// The others are cancelled. Without `pathOf` the choice reads only the tasks, so every
    /// node holding them cancels the same ones, whichever rules it runs; with it, the nodes
    /// that know the dealer's place for certain agree (a node that does not know it treats
    /// every task as placed right). Whether a task is placed does not depend on the rules a
    /// node runs (a node on another release may name another node of the path for it).
    /// `tasks`: open or not, as held; task id → the fields to write.
    public static func superseded(_ tasks: [(id: String, fields: [String: FieldValue])],
                                  pathOf: ((_ dealer: NodeID) -> [NodeID]?)? = nil) -> [String: [String: FieldValue]] {
        struct Candidate {
            var id: String; var placed: Bool; var release: Int64; var overlay: Int64; var plannedFrom: FieldVersion?; var due: String; var assigned: String
            static func ranks(_ a: Candidate, below b: Candidate) -> Bool {
                if (a.placed ? 1 : 0, a.release, a.overlay) != (b.placed ? 1 : 0, b.release, b.overlay) {
                    return (a.placed ? 1 : 0, a.release, a.overlay) < (b.placed ? 1 : 0, b.release, b.overlay)
                }
                // Only when both say (a task written by a node of the previous version does
                // not): such a node keeps the later due date, and so does this one then, rather
                // than each cancelling the task the other keeps.
                if let x = a.plannedFrom, let y = b.plannedFrom, x != y { return x < y }
                return (a.due, a.id) < (b.due, b.id)
            }
        }
        var groups: [String: [Candidate]] = [:]
        for (id, task) in tasks {
            guard task[TaskField.status.rawValue]?.stringValue == TaskStatus.open.rawValue,
                  task[TaskField.kind.rawValue]?.stringValue == kind,
                  let rule = task[TaskField.ruleID.rawValue]?.stringValue,
                  let vehicle = task[TaskField.vehicleID.rawValue]?.stringValue else { continue }
            let release: Int64 = if case .int(let r)? = task[TaskField.release.rawValue] { r } else { 0 }
            let overlay = task[TaskField.overlay.rawValue]?.stringValue
                .flatMap { $0.split(separator: "#").last.flatMap { Int64($0) } } ?? 0
            let assigned = task[TaskField.assignedNode.rawValue]?.stringValue ?? ""
            var placed = true
            if let pathOf, let dealer = task[TaskField.owningDealer.rawValue]?.stringValue, let path = pathOf(NodeID(unchecked: dealer)) {
                placed = path.contains(NodeID(unchecked: assigned))
            }
            // A key no rule id or vehicle id can forge into another's: lengths first.
            groups["\(rule.utf8.count):\(rule)\(vehicle)", default: []].append(
                Candidate(id: id, placed: placed, release: release, overlay: overlay,
                          plannedFrom: task[TaskField.plannedFrom.rawValue]?.stringValue.flatMap(FieldVersion.init(parsing:)),
                          due: task[TaskField.dueAt.rawValue]?.stringValue ?? "", assigned: assigned))
        }
        var cancel: [String: [String: FieldValue]] = [:]
        for group in groups.values where group.count > 1 {
            let keep = group.max(by: Candidate.ranks(_:below:))!
            for task in group where task.id != keep.id {
                let sameGovernance = (task.release, task.overlay) == (keep.release, keep.overlay)
                let why = !task.placed && keep.placed ? "its dealer moved (\(task.assigned) is off its path; that task is at \(keep.assigned))"
                    : sameGovernance && task.plannedFrom != nil && keep.plannedFrom != nil && task.plannedFrom != keep.plannedFrom ? "the vehicle's date it was planned from changed (that task is due \(keep.due.prefix(10)))"
                    : "the rule's timing changed (release \(keep.release))"
                cancel[task.id] = [
                    TaskField.status.rawValue: .string(TaskStatus.cancelled.rawValue),
                    TaskField.cancelReason.rawValue: .string("superseded by task \(keep.id): \(why)"),
                    TaskField.cancelledAt.rawValue: .null,
                ]
            }
        }
        return cancel
    }

    /// The fields that cancel an open proactive task whose customer no longer gives the
    /// consent it needs — consent first: withdrawn before the due date (or while the task is
    /// still open after it), the contact is not made. `cancelled_at` is when the consent was
    /// withdrawn (its field's version), so every node writes the same. Nil when the task
    /// stays: not open, not a proactive task, consent still given, or the customer not held
    /// here (`customer` nil).
    public static func cancellation(task: [String: FieldValue], customer: [String: FieldValue]?,
                                    consentChangedAtMillis: UInt64?) -> [String: FieldValue]? {
        guard task[TaskField.status.rawValue]?.stringValue == TaskStatus.open.rawValue,
              task[TaskField.kind.rawValue]?.stringValue == kind,
              let consent = task[TaskField.requiresConsent.rawValue]?.stringValue, let customer else { return nil }
        let given = customer["consent_" + consent].flatMap { $0.isNull ? nil : $0 }
        if given == .bool(true) { return nil }
        return [
            TaskField.status.rawValue: .string(TaskStatus.cancelled.rawValue),
            TaskField.cancelReason.rawValue: .string(given == nil ? "consent \(consent) not given" : "consent \(consent) withdrawn"),
            TaskField.cancelledAt.rawValue: given == nil ? .null : consentChangedAtMillis.map { .string(Timestamp.format($0)) } ?? .null,
        ]
    }
}

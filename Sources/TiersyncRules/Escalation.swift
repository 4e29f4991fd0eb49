import Foundation
import TiersyncCore
import TiersyncGovernance

/// What makes an escalation rule fire, measured on the dialogue at its current level.
public enum EscalationCondition: Sendable, Hashable, CustomStringConvertible {
    /// Still unanswered this long after its `sla_due` (`0s`: as soon as it is due).
    case slaBreachedBy(seconds: Int)
    /// Still unanswered this long after it arrived at its level (created there, or escalated there).
    case unansweredFor(seconds: Int)

    /// As the release spells it: `sla_breached_by 0s`, `unanswered_for 2d`.
    public var description: String {
        switch self {
        case .slaBreachedBy(let s): "sla_breached_by \(GovernanceDuration(seconds: s))"
        case .unansweredFor(let s): "unanswered_for \(GovernanceDuration(seconds: s))"
        }
    }
}

/// One escalation rule of a release, as plain values.
public struct EscalationRule: Sendable, Hashable {
    public var id: String
    /// Its position in HQ's list: breaks ties between rules falling due at the same time.
    public var order: Int
    /// The level it applies to (`when.level`).
    public var level: String
    public var condition: EscalationCondition
    public var toLevel: String
    public var toQueue: String
    /// Roles to notify (`then.notify`).
    public var notify: [String]

    public init(id: String, order: Int, level: String, condition: EscalationCondition, toLevel: String, toQueue: String, notify: [String] = []) {
        self.id = id
        self.order = order
        self.level = level
        self.condition = condition
        self.toLevel = toLevel
        self.toQueue = toQueue
        self.notify = notify
    }
}

/// The escalation part of an effective config: levels, rules in HQ's order, queues.
public struct EscalationTable: Sendable, Hashable {
    public let levels: [String]
    public let rules: [EscalationRule]
    public let queues: [String: AllocationQueue]

    public init(levels: [String], rules: [EscalationRule], queues: [String: AllocationQueue]) {
        self.levels = levels
        self.rules = rules.sorted { ($0.order, $0.id) < ($1.order, $1.id) }
        self.queues = queues
    }

    public init(config: ConfigValue) throws(AllocationConfigError) {
        func fail(_ path: String, _ message: String) -> AllocationConfigError { AllocationConfigError(path: path, message: message) }
        let levels = try ConfigBasics.levels(config)
        var rules: [EscalationRule] = []
        for (id, value) in config[path: "escalation"]?.objectValue ?? [:] {
            let path = "escalation.\(id)"
            guard let rule = value.objectValue, let when = rule["when"]?.objectValue, let then = rule["then"]?.objectValue else {
                throw fail(path, "expected a mapping with when and then")
            }
            guard let order = ConfigBasics.integer(rule["order"]) else { throw fail(path + ".order", "missing") }
            guard let level = when["level"]?.stringValue, levels.contains(level) else { throw fail(path + ".when.level", "missing or not one of \(levels)") }
            let condition: EscalationCondition
            if let text = when["sla_breached_by"]?.stringValue, let d = GovernanceDuration(text) {
                condition = .slaBreachedBy(seconds: d.seconds)
            } else if let text = when["unanswered_for"]?.stringValue, let d = GovernanceDuration(text) {
                condition = .unansweredFor(seconds: d.seconds)
            } else {
                throw fail(path + ".when", "needs sla_breached_by or unanswered_for")
            }
            guard let toLevel = then["level"]?.stringValue, levels.contains(toLevel) else { throw fail(path + ".then.level", "missing or not one of \(levels)") }
            guard let toQueue = then["queue"]?.stringValue else { throw fail(path + ".then.queue", "missing") }
            rules.append(EscalationRule(id: id, order: order, level: level, condition: condition, toLevel: toLevel, toQueue: toQueue,
                                        notify: then["notify"]?.listValue?.compactMap(\.stringValue) ?? []))
        }
        self.init(levels: levels, rules: rules, queues: try ConfigBasics.queues(config))
    }
}

/// One escalation step: the entry recorded in `escalations` and where the interaction goes.
/// Every value is a function of the interaction as held and the rule that fired — times
/// are the rule's due time, never the clock of the node that noticed — so every node that
/// finds the same step due writes the same record under the same id.
public struct Escalation: Sendable, Hashable {
    public var interactionID: String
    /// 1 for the interaction's first escalation, then 2, …
    public var step: Int
    public var rule: String
    public var condition: EscalationCondition
    /// When the rule's condition was met: the escalation's time.
    public var dueMillis: UInt64
    public var fromLevel: String
    public var fromQueue: String?
    public var fromNode: NodeID?
    /// Since when the interaction was at ``fromLevel`` (created there, or escalated there).
    public var fromSinceMillis: UInt64?
    public var toLevel: String
    public var toQueue: String
    public var toNode: NodeID
    public var notify: [String]
    /// The release whose rule fired.
    public var release: Int
    public var originatingNode: NodeID?
    /// The node that handled the interaction before its first escalation (nil when not
    /// known: a step counted on from one written before this field existed).
    public var allocatedNode: NodeID? = nil

    /// The entry's id in `escalations`: the same for this interaction and step everywhere.
    public var recordID: String { RuleRecordID.escalation(interactionID: interactionID, step: step) }

    /// The entry, every field given (an absent value as null), so concurrent writers write
    /// the same set of fields and the newest writes the whole record.
    public var entryFields: [String: FieldValue] {
        [
            EscalationField.interactionID.rawValue: .string(interactionID),
            EscalationField.step.rawValue: .int(Int64(step)),
            EscalationField.rule.rawValue: .string(rule),
            EscalationField.condition.rawValue: .string(condition.description),
            EscalationField.dueAt.rawValue: .string(Timestamp.format(dueMillis)),
            EscalationField.fromLevel.rawValue: .string(fromLevel),
            EscalationField.fromQueue.rawValue: fromQueue.map(FieldValue.string) ?? .null,
            EscalationField.fromNode.rawValue: fromNode.map { .string($0.rawValue) } ?? .null,
            EscalationField.fromSince.rawValue: fromSinceMillis.map { .string(Timestamp.format($0)) } ?? .null,
            EscalationField.toLevel.rawValue: .string(toLevel),
            EscalationField.toQueue.rawValue: .string(toQueue),
            EscalationField.toNode.rawValue: .string(toNode.rawValue),
            EscalationField.notify.rawValue: notify.isEmpty ? .null : .string(notify.joined(separator: ",")),
            EscalationField.release.rawValue: .int(Int64(release)),
            EscalationField.originatingNode.rawValue: originatingNode.map { .string($0.rawValue) } ?? .null,
            // Routes the entry where its interaction stays routed: the node allocated it may
            // write every step (an offline dealer evaluating late), and may send it upward.
            EscalationField.allocatedNode.rawValue: allocatedNode.map { .string($0.rawValue) } ?? .null,
            EscalationField.status.rawValue: .string(EscalationStatus.escalated.rawValue),
            EscalationField.withdrawnReason.rawValue: .null,
        ]
    }

    /// What the step changes in the interaction: its level, queue and handling node (which
    /// re-routes it), its step count and since when it is at its new level, and which node
    /// it was allocated to (which keeps it routed there, and its KPIs). `sla_due` stays: it
    /// is the first-response promise made when the dialogue was created.
    public var interactionFields: [String: FieldValue] {
        var fields: [String: FieldValue] = [
            InteractionField.handlingLevel.rawValue: .string(toLevel),
            InteractionField.queue.rawValue: .string(toQueue),
            InteractionField.handlingNode.rawValue: .string(toNode.rawValue),
            InteractionField.escalationStep.rawValue: .int(Int64(step)),
            InteractionField.escalatedAt.rawValue: .string(Timestamp.format(dueMillis)),
        ]
        if let allocatedNode { fields[InteractionField.allocatedNode.rawValue] = .string(allocatedNode.rawValue) }
        return fields
    }
}

/// The fields of an `escalations` entry.
public enum EscalationField: String, CaseIterable, Sendable {
    case interactionID = "interaction_id"
    case step, rule, condition
    case dueAt = "due_at"
    case fromLevel = "from_level"
    case fromQueue = "from_queue"
    case fromNode = "from_node"
    case fromSince = "from_since"
    case toLevel = "to_level"
    case toQueue = "to_queue"
    case toNode = "to_node"
    case notify, release
    case originatingNode = "originating_node"
    case allocatedNode = "allocated_node"
    case status
    case withdrawnReason = "withdrawn_reason"
}

public enum EscalationStatus: String, Sendable {
    case escalated, withdrawn
}

/// What the escalation rules say about one interaction now.
public enum EscalationOutcome: Sendable, Hashable {
    /// Steps to write, in order (more than one when several fell due while nobody evaluated).
    case escalate([Escalation])
    /// Nothing due yet; the next rule falls due then (nil: none will).
    case notDue(nextMillis: UInt64?)
    /// Answered, resolved, closed or abandoned: nothing escalates.
    case settled
    /// Not something rules escalate: outbound, never allocated, or no rule for its level.
    case notApplicable(String)
    /// A step is due but the node it goes to is not known here (the evaluating node does
    /// not know the handling node's place in the tree): a node that knows writes it.
    case cannotPlace(level: String, from: NodeID?)
}

/// Why an interaction's escalations were withdrawn, and what to write.
public struct EscalationWithdrawal: Sendable, Hashable {
    public var interactionID: String
    /// Entry id → the fields to write (status withdrawn, with the reason).
    public var entries: [String: [String: FieldValue]]
    /// The interaction back where the first withdrawn step found it.
    public var interactionFields: [String: FieldValue]
    public var reason: String
}

/// Escalation as a function of plain values: the interaction as held, the rules in force,
/// where nodes are, and the time. No store, no clock, no I/O.
public enum Escalator {
    /// The highest escalation step rules write or read: far above any tree's depth (each
    /// step moves a dialogue up a level), low enough that counting on from it cannot overflow.
    public static let maxStep = 1_000

    /// Statuses after which nothing escalates.
    public static let settledStatuses: Set<String> = ["answered", "resolved", "closed"]

    /// True when the dialogue was answered, resolved or closed, or the customer abandoned it
    /// before any answer (as held): nothing escalates then.
    public static func isSettled(_ fields: [String: FieldValue]) -> Bool {
        if let status = fields[.status]?.stringValue, settledStatuses.contains(status) { return true }
        return present(fields[.answeredAt]) || present(fields[.resolvedAt]) || present(fields[.abandonedAt])
    }

    /// The steps due at `nowMillis` for the interaction `interactionID` with `fields`.
    ///
    /// At the interaction's level (`handling_level`), each rule for that level falls due at
    /// `sla_due + sla_breached_by` or at (arrival at the level) + `unanswered_for`, never
    /// before the arrival; the earliest due rule fires (ties: HQ's order). It moves the
    /// interaction to the rule's level and queue, at the node of that level above the
    /// handling node (the root for HQ's level and expert pools), as step
    /// `escalation_step + 1`, at the rule's due time. Then the rules of the new level are
    /// tried the same way, so a node that evaluates late writes every step missed.
    public static func evaluate(interactionID: String, fields: [String: FieldValue], rules: RulesInForce,
                                locator: NodeLocator, nowMillis: UInt64) -> EscalationOutcome {
        if isSettled(fields) { return .settled }
        if fields[.direction]?.stringValue == InteractionDirection.outbound.rawValue { return .notApplicable("outbound") }
        guard var level = fields[.handlingLevel]?.stringValue else { return .notApplicable("not allocated (no handling level)") }
        let table = rules.escalation
        let origin = node(fields[.originatingNode])
        var queue = fields[.queue]?.stringValue
        var holder = node(fields[.handlingNode]) ?? origin
        // The step is any node's write: one outside 0…maxStep is not a state rules made,
        // and counting on from it would overflow (`step + 1` at Int64.max trapped every
        // holder's runner on every run).
        let heldStep: Int64 = fields[.escalationStep].flatMap { if case .int(let n) = $0 { n } else { nil } } ?? 0
        guard (0...Int64(maxStep)).contains(heldStep) else {
            return .notApplicable("escalation_step \(heldStep) is outside 0…\(maxStep)")
        }
        var step = Int(heldStep)
        var since = step > 0 ? time(fields[.escalatedAt]) : time(fields[.createdAt])
        // Every holder derives the same: the holder before step 1, as held or as step 1 wrote it.
        let allocated = step == 0 ? holder : node(fields[.allocatedNode])
        let slaDue = time(fields[.slaDue])
        var steps: [Escalation] = []
        func outcome(_ otherwise: EscalationOutcome) -> EscalationOutcome { steps.isEmpty ? otherwise : .escalate(steps) }

        for _ in 0..<max(table.levels.count, 1) {
            let due = table.rules.filter { $0.level == level }.compactMap { rule -> (rule: EscalationRule, at: UInt64)? in
                let base: UInt64?
                switch rule.condition {
                case .slaBreachedBy(let seconds): base = slaDue.map { $0 + UInt64(seconds) * 1000 }
                case .unansweredFor(let seconds): base = since.map { $0 + UInt64(seconds) * 1000 }
                }
                return base.map { (rule, max($0, since ?? $0)) }
            }.min { ($0.at, $0.rule.order, $0.rule.id) < ($1.at, $1.rule.order, $1.rule.id) }
            guard let (rule, at) = due else { return outcome(.notApplicable("no escalation rule for level \(level)")) }
            guard at <= nowMillis else { return outcome(.notDue(nextMillis: at)) }
            guard let from = holder,
                  let target = locator.node(at: rule.toLevel, queue: table.queues[rule.toQueue], levels: table.levels, for: from)
                    ?? locator.standIn(for: from, at: rule.toLevel, levels: table.levels) else {
                return outcome(.cannotPlace(level: rule.toLevel, from: holder))
            }
            let escalation = Escalation(
                interactionID: interactionID, step: step + 1, rule: rule.id, condition: rule.condition, dueMillis: at,
                fromLevel: level, fromQueue: queue, fromNode: holder, fromSinceMillis: since,
                toLevel: rule.toLevel, toQueue: rule.toQueue, toNode: target, notify: rule.notify,
                release: rules.release, originatingNode: origin, allocatedNode: allocated)
            steps.append(escalation)
            (level, queue, holder, step, since) = (rule.toLevel, rule.toQueue, target, step + 1, at)
        }
        return outcome(.notDue(nextMillis: nil))
    }

    /// The escalations of an interaction to withdraw: those due after it was answered or
    /// resolved (`answered_at`, `resolved_at`, whichever is earlier). That happens when a
    /// node escalated without having seen the answer (the answer was given offline, or
    /// had not synced yet). Each such entry becomes `withdrawn` with the reason, and the
    /// interaction goes back to the level, queue and node the first withdrawn step took it
    /// from. Every value derives from the records, so every node writes the same. Nil when
    /// there is nothing (more) to write. `entries` are the interaction's entries as held.
    public static func withdrawal(interactionID: String, fields: [String: FieldValue],
                                  entries: [(id: String, fields: [String: FieldValue])]) -> EscalationWithdrawal? {
        let answered = time(fields[.answeredAt]), resolved = time(fields[.resolvedAt])
        let settledAt: UInt64, what: String
        switch (answered, resolved) {
        case (let a?, let r?): (settledAt, what) = a <= r ? (a, "answered") : (r, "resolved")
        case (let a?, nil): (settledAt, what) = (a, "answered")
        case (nil, let r?): (settledAt, what) = (r, "resolved")
        case (nil, nil): return nil
        }
        func field(_ e: [String: FieldValue], _ f: EscalationField) -> FieldValue? { e[f.rawValue].flatMap { $0.isNull ? nil : $0 } }
        let late = entries.compactMap { entry -> (id: String, step: Int, fields: [String: FieldValue])? in
            guard field(entry.fields, .interactionID)?.stringValue == interactionID,
                  case .int(let step)? = field(entry.fields, .step), (1...Int64(maxStep)).contains(step),
                  let due = time(field(entry.fields, .dueAt)), due > settledAt else { return nil }
            return (entry.id, Int(step), entry.fields)
        }.sorted { ($0.step, $0.id) < ($1.step, $1.id) }
        guard let first = late.first else { return nil }
        let reason = "\(what) at \(Timestamp.format(settledAt)), before this escalation was due"
        var writes: [String: [String: FieldValue]] = [:]
        for entry in late where field(entry.fields, .status)?.stringValue != EscalationStatus.withdrawn.rawValue
            || field(entry.fields, .withdrawnReason)?.stringValue != reason {
            writes[entry.id] = [EscalationField.status.rawValue: .string(EscalationStatus.withdrawn.rawValue),
                                EscalationField.withdrawnReason.rawValue: .string(reason)]
        }
        let back = first.step - 1
        let restore: [String: FieldValue] = [
            InteractionField.handlingLevel.rawValue: field(first.fields, .fromLevel) ?? .null,
            InteractionField.queue.rawValue: field(first.fields, .fromQueue) ?? .null,
            InteractionField.handlingNode.rawValue: field(first.fields, .fromNode) ?? .null,
            InteractionField.escalationStep.rawValue: .int(Int64(back)),
            InteractionField.escalatedAt.rawValue: back > 0 ? field(first.fields, .fromSince) ?? .null : .null,
        ].merging(back == 0 ? [InteractionField.allocatedNode.rawValue: .null] : [:]) { a, _ in a }
        // Already back (by this node or another): nothing to write to the interaction.
        let restored = restore.allSatisfy { name, value in
            let held = fields[name].flatMap { $0.isNull ? nil : $0 }
            return name == InteractionField.escalationStep.rawValue ? (held ?? .int(0)) == value : (held ?? .null) == value
        }
        if writes.isEmpty && restored { return nil }
        return EscalationWithdrawal(interactionID: interactionID, entries: writes, interactionFields: restored ? [:] : restore, reason: reason)
    }

    static func present(_ value: FieldValue?) -> Bool { value.map { !$0.isNull } ?? false }

    static func time(_ value: FieldValue?) -> UInt64? { value?.stringValue.flatMap(Timestamp.parse) }

    static func node(_ value: FieldValue?) -> NodeID? {
        value?.stringValue.flatMap { NodeID.isValid($0) ? NodeID(unchecked: $0) : nil }
    }
}

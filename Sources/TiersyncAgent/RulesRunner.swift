import Foundation
import Logging
import Synchronization
import TiersyncCore
import TiersyncGovernance
import TiersyncRules
import TiersyncStore

/// What one run of a node's rules found and wrote.
public struct RulesRunReport: Sendable, Equatable {
    /// The time the rules were evaluated at (the runner's clock, or `--now`).
    public var nowMillis: UInt64
    /// The release (and overlay) in force at that time; nil: none, nothing was evaluated.
    public var release: Int?
    public var overlay: String?
    /// Escalation steps this node wrote (entries it did not hold as they are).
    public var escalated: [Escalation] = []
    /// Escalations this node withdrew (the dialogue was answered or resolved before they were due).
    public var withdrawn: [EscalationWithdrawal] = []
    /// Proactive tasks this node created.
    public var tasksCreated: [ProactiveTask] = []
    /// Tasks this node cancelled: id and reason.
    public var tasksCancelled: [(id: String, reason: String)] = []
    /// Open tasks this node handed to the node their level is at now (their dealer moved):
    /// id and that node.
    public var tasksReassigned: [(id: String, node: NodeID)] = []
    /// Contacts a proactive rule would have created but for the customer's consent: vehicle,
    /// rule, and whether this node holds the customer at all (a node that does not hold it
    /// cannot know the consent; its dealer, which does, decides).
    public var withoutConsent: [(vehicle: String, rule: String, customerHeld: Bool)] = []
    /// Dialogues with a step due that this node cannot place (another holder writes it).
    public var unplaced: [String] = []
    /// Dialogues the root allocated to a level below it and handed to their node now
    /// (interaction id → node): the root's allocation knows no tree.
    public var placed: [(id: String, node: NodeID)] = []

    public init(nowMillis: UInt64) { self.nowMillis = nowMillis }

    /// True when the run wrote anything.
    public var wrote: Bool {
        !escalated.isEmpty || !withdrawn.isEmpty || !tasksCreated.isEmpty || !tasksCancelled.isEmpty || !tasksReassigned.isEmpty || !placed.isEmpty
    }

    public static func == (l: Self, r: Self) -> Bool {
        l.nowMillis == r.nowMillis && l.release == r.release && l.overlay == r.overlay && l.escalated == r.escalated
            && l.withdrawn == r.withdrawn && l.tasksCreated == r.tasksCreated && l.tasksCancelled.map(\.id) == r.tasksCancelled.map(\.id)
            && l.withoutConsent.map { "\($0.vehicle)/\($0.rule)/\($0.customerHeld)" } == r.withoutConsent.map { "\($0.vehicle)/\($0.rule)/\($0.customerHeld)" } && l.unplaced == r.unplaced
            && l.placed.map { "\($0.id)@\($0.node)" } == r.placed.map { "\($0.id)@\($0.node)" }
            && l.tasksReassigned.map { "\($0.id)@\($0.node)" } == r.tasksReassigned.map { "\($0.id)@\($0.node)" }
    }
}

/// A node's rules that act over time — SLA escalation and proactive contacts — evaluated
/// from its own store and the governance in force there (so offline too), and written
/// through the store's normal local write path (``NodeStore/commit(_:wallMillis:)``), from
/// which they sync like any write.
///
/// Every node runs one: a dealer's and an agent's in its ``SyncAgent``, a country's in its
/// ``TiersyncNode`` process, HQ's in the hub process (`tiersync hub serve`, ``HubRulesRunner``),
/// and `tiersync rules run` once. The decisions are TiersyncRules' (``Escalator``,
/// ``ProactivePlanner``), pure functions of the records as held, the rules and the time; this
/// type only reads what they need and writes what they return.
///
/// **Exactly once across the tree.** Records rules write have ids derived from what makes
/// them one (interaction + step; rule + vehicle + due date) and values derived from the
/// records and the rules, never from the evaluating node or its clock. Nodes evaluating the
/// same record independently — concurrently, or one offline until long after — write the
/// same record, which the per-field merge keeps as one; the interaction's new level, queue,
/// handling node and step are the same from every writer, so its fields converge too.
public final class RulesRunner: Sendable {
    /// The node's store: its SQLite file, or HQ's tenant store on either engine.
    public let store: any RulesStore
    let clock: @Sendable () -> UInt64
    let tree: @Sendable () async -> NodeTree?
    let logger: Logger
    /// The change-log position up to which withdrawals were looked for (in this process).
    private let withdrawalsSeen = Mutex<Int64?>(nil)

    /// `clock`: the time rules are evaluated at (tests and `--now` compress time; the
    /// commits are stamped with the real clock). `tree`: the tenant's tree where the node
    /// holds it (HQ's catalog, a country's mirror); others know their own path.
    public init(store: any RulesStore, clock: @escaping @Sendable () -> UInt64 = { WallClock.nowMillis() },
                tree: @escaping @Sendable () async -> NodeTree? = { nil }, logger: Logger = Logger(label: "tiersync.rules")) {
        self.store = store
        self.clock = clock
        self.tree = tree
        self.logger = logger
    }

    /// Evaluates the rules once at the runner's clock.
    @discardableResult
    public func runOnce() async throws -> RulesRunReport {
        try await runOnce(nowMillis: clock())
    }

    /// Runs ``runOnce()`` every `interval` until cancelled; `onWrite` after a run that wrote
    /// (a hub wakes its long-polls).
    public func run(every interval: Duration, onWrite: @escaping @Sendable () async -> Void = {}) async {
        while !Task.isCancelled {
            do {
                if try await runOnce().wrote { await onWrite() }
            } catch is CancellationError {
                return
            } catch {
                logger.warning("rules run failed; retrying next round", metadata: ["store": "\(store.rulesStoreName)", "error": "\(error)"])
            }
            try? await Task.sleep(for: interval)
        }
    }

    /// Evaluates escalation, withdrawals and proactive contacts at `now` and writes what
    /// they say, each record group in a transaction of its own.
    public func runOnce(nowMillis now: UInt64) async throws -> RulesRunReport {
        guard let identity = try await store.rulesIdentity() else { throw StoreError.notEnrolled(path: store.rulesStoreName) }
        var report = RulesRunReport(nowMillis: now)
        guard let inForce = try await AllocationPolicy.basis(store, identity: identity).effective(at: now).inForce else { return report }
        report.release = inForce.release
        report.overlay = inForce.overlay
        let rules: RulesInForce
        do {
            rules = try RulesInForce(release: inForce.release, overlay: inForce.overlay, config: inForce.config)
        } catch {
            logger.error("the release in force has no usable escalation or proactive rules", metadata: ["release": "\(inForce.release)", "error": "\(error)"])
            return report
        }
        let levels = rules.escalation.levels
        let ownPath = try await Self.path(of: identity, store: store, levels: levels.count)
        let locator = NodeLocator(path: ownPath, tree: await tree())
        if identity.parent == nil { try await place(rules, root: identity.node, locator: locator, into: &report) }
        try await escalate(rules, locator: locator, now: now, into: &report)
        try await withdraw(into: &report)
        try await proactive(rules, identity: identity, ownPath: ownPath, locator: locator, now: now, into: &report)
        return report
    }

    /// The node's path from the root: as its parent's `whoami` reported it, else what its
    /// identity implies (the root; an agent of a two-level tenant).
    static func path(of identity: NodeIdentity, store: any RulesStore, levels: Int) async throws -> [NodeID]? {
        let known = try await store.rulesSetting(AllocationPolicy.pathMeta)?.split(separator: "/").map { NodeID(unchecked: String($0)) }
        return NodePlacement(node: identity.node, parent: identity.parent, path: known, levels: levels).path
    }

    // MARK: Escalation

    private static let interactions = DomainSchema.interactions.name
    private static let escalations = DomainSchema.escalations.name

    /// Open, allocated dialogues: the only ones a rule can escalate (what every run reads).
    public static let openDialogues: [FieldCondition] = [
        .isNotNull(InteractionField.handlingLevel.rawValue), .isNull(InteractionField.answeredAt.rawValue),
        .isNull(InteractionField.resolvedAt.rawValue), .isNull(InteractionField.abandonedAt.rawValue),
        .isNullOrNotIn(InteractionField.status.rawValue, Escalator.settledStatuses.sorted().map(FieldValue.string)),
    ]

    /// At the root: open dialogues allocated to a level below the root that the root still
    /// handles. A write at HQ (`contact add` on the hub's tenant file, the console) is
    /// allocated without the tree, so a dialogue of a dealer's customer for the country's
    /// dialogue centre stayed at HQ and never reached the country. With the tree, it goes to
    /// the node of its level above the customer's owning dealer. Only the root holds such
    /// dialogues, so only it writes this.
    private func place(_ rules: RulesInForce, root: NodeID, locator: NodeLocator, into report: inout RulesRunReport) async throws {
        let levels = rules.escalation.levels
        guard levels.count > 1 else { return }
        let held = try await store.rulesLiveRecords(table: Self.interactions, where: Self.openDialogues + [
            .equals(InteractionField.handlingNode.rawValue, .string(root.rawValue)),
        ])
        for (id, fields) in held {
            guard let level = fields[InteractionField.handlingLevel.rawValue]?.stringValue, let index = levels.firstIndex(of: level), index > 0,
                  let queue = fields[InteractionField.queue.rawValue]?.stringValue, rules.escalation.queues[queue]?.expertPool != true,
                  let customerID = fields[InteractionField.customerID.rawValue]?.stringValue,
                  let customer = try await store.rulesRecord(table: Self.customers, id: customerID), customer.state.isLive,
                  let owner = customer.state.liveValues[CustomerField.owningDealer.rawValue]?.stringValue.flatMap({ NodeID.isValid($0) ? NodeID(unchecked: $0) : nil }),
                  let target = locator.node(at: level, queue: rules.escalation.queues[queue], levels: levels, for: owner),
                  target != root else { continue }
            try await store.commitRuleWrites([.upsert(Self.interactions, id: id, [InteractionField.handlingNode.rawValue: .string(target.rawValue)])])
            report.placed.append((id, target))
            logger.info("dialogue handed to its level's node", metadata: ["interaction": "\(id)", "level": "\(level)", "node": "\(target)"])
        }
    }

    private func escalate(_ rules: RulesInForce, locator: NodeLocator, now: UInt64, into report: inout RulesRunReport) async throws {
        guard !rules.escalation.rules.isEmpty else { return }
        let open = try await store.rulesLiveRecords(table: Self.interactions, where: Self.openDialogues)
        for (id, fields) in open {
            switch Escalator.evaluate(interactionID: id, fields: fields, rules: rules, locator: locator, nowMillis: now) {
            case .escalate(let steps):
                var writes: [RecordWrite] = []
                for step in steps where try await !holds(Self.escalations, step.recordID, step.entryFields) {
                    writes.append(.upsert(Self.escalations, id: step.recordID, step.entryFields))
                }
                let final = steps.last!.interactionFields
                if final.contains(where: { fields[$0.key] != $0.value }) { writes.append(.upsert(Self.interactions, id: id, final)) }
                guard !writes.isEmpty else { continue }
                try await store.commitRuleWrites(writes)
                report.escalated += steps
                for step in steps {
                    logger.info("escalated", metadata: ["interaction": "\(id)", "step": "\(step.step)", "rule": "\(step.rule)",
                                                        "to": "\(step.toLevel)/\(step.toQueue)@\(step.toNode)", "due": "\(Timestamp.format(step.dueMillis))"])
                }
            case .cannotPlace:
                report.unplaced.append(id)
            case .notDue, .settled, .notApplicable:
                continue
            }
        }
    }

    /// True when the store holds `table`/`id` live with exactly these values (a null as absent).
    private func holds(_ table: String, _ id: String, _ fields: [String: FieldValue]) async throws -> Bool {
        guard let record = try await store.rulesRecord(table: table, id: id), record.state.isLive else { return false }
        let held = record.state.liveValues
        return fields.allSatisfy { name, value in (held[name].flatMap { $0.isNull ? nil : $0 } ?? .null) == value }
    }

    /// Dialogues whose escalation entries one read looks up.
    static let entriesChunk = 500

    private func withdraw(into report: inout RulesRunReport) async throws {
        // Dialogues answered or resolved that escalated, changed since the last look (all of
        // them at a process's first run): an answer given offline may have crossed an escalation.
        let since = withdrawalsSeen.withLock { $0 }
        var candidates: Set<String>
        let head: Int64
        if let since {
            let changed = try await store.rulesRecordIDs(changedIn: Self.interactions, after: since)
            let entries = try await store.rulesRecordIDs(changedIn: Self.escalations, after: since)
            candidates = changed.ids
            for entry in entries.ids {
                if let id = try await store.rulesRecord(table: Self.escalations, id: entry)?.state.liveValues[EscalationField.interactionID.rawValue]?.stringValue {
                    candidates.insert(id)
                }
            }
            head = max(changed.head, entries.head)
        } else {
            head = try await store.rulesHead()
            candidates = Set(try await store.rulesLiveRecords(table: Self.interactions, where: [
                .isNotNull(InteractionField.escalationStep.rawValue),
                .anyNotNull([InteractionField.answeredAt.rawValue, InteractionField.resolvedAt.rawValue]),
            ]).map(\.id))
        }
        // The answered or resolved among them, with their escalation entries read for many
        // dialogues at once: the entries are found by a scan (no engine indexes the field),
        // once per chunk rather than once per dialogue.
        var settled: [(id: String, fields: [String: FieldValue])] = []
        for id in candidates.sorted() {
            guard let record = try await store.rulesRecord(table: Self.interactions, id: id), record.state.isLive else { continue }
            let fields = record.state.liveValues
            guard fields[InteractionField.answeredAt.rawValue].map({ !$0.isNull }) == true
                    || fields[InteractionField.resolvedAt.rawValue].map({ !$0.isNull }) == true else { continue }
            settled.append((id, fields))
        }
        var entriesOf: [String: [(String, [String: FieldValue])]] = [:]
        for start in stride(from: 0, to: settled.count, by: Self.entriesChunk) {
            let ids = settled[start..<min(start + Self.entriesChunk, settled.count)].map { FieldValue.string($0.id) }
            for (entryID, values) in try await store.rulesLiveRecords(table: Self.escalations, where: [.isIn(EscalationField.interactionID.rawValue, ids)]) {
                if let id = values[EscalationField.interactionID.rawValue]?.stringValue { entriesOf[id, default: []].append((entryID, values)) }
            }
        }
        for (id, fields) in settled {
            guard let withdrawal = Escalator.withdrawal(interactionID: id, fields: fields, entries: entriesOf[id] ?? []) else { continue }
            var writes = withdrawal.entries.sorted { $0.key < $1.key }.map { RecordWrite.upsert(Self.escalations, id: $0.key, $0.value) }
            if !withdrawal.interactionFields.isEmpty { writes.append(.upsert(Self.interactions, id: id, withdrawal.interactionFields)) }
            try await store.commitRuleWrites(writes)
            report.withdrawn.append(withdrawal)
            logger.info("escalation withdrawn", metadata: ["interaction": "\(id)", "reason": "\(withdrawal.reason)"])
        }
        withdrawalsSeen.withLock { $0 = max($0 ?? 0, head) }
    }

    // MARK: Proactive contacts

    /// Whether `customer` is routed to `dealer`: a node above several dealers holds their
    /// customers side by side, and a vehicle (or task) any dealer writes may name any
    /// customer id. Combined with a sibling's customer, the rules would plan a contact with
    /// another dealer's customer and tell the writer, by the task they create or not,
    /// whether that customer exists and consents.
    static func isRouted(_ customer: StoredRecord, to dealer: FieldValue?) -> Bool {
        guard let dealer = dealer?.stringValue else { return false }
        return customer.route.contains { $0.rawValue == dealer }
    }

    private static let vehicles = DomainSchema.vehicles.name
    private static let customers = DomainSchema.customers.name
    private static let tasks = DomainSchema.tasks.name

    private func proactive(_ rules: RulesInForce, identity: NodeIdentity, ownPath: [NodeID]?, locator: NodeLocator, now: UInt64,
                           into report: inout RulesRunReport) async throws {
        // A node that moved (a dealer to another country) learns its new place and its new
        // country's governance at different times. Until it knows both it plans and
        // supersedes nothing: not knowing its place (its path is forgotten when it adopts a
        // new parent), or with an overlay of a country not on its path. Either way it
        // planned the old country's timing or assignment for the new one, and cancelled the
        // new country's task for it, for good.
        let overlayCountry = rules.overlay?.split(separator: "#").first.map { NodeID(unchecked: String($0)) }
        let inTransition = (identity.parent != nil && ownPath == nil)
            || overlayCountry.map { country in ownPath.map { !$0.contains(country) } ?? true } ?? false
        if !rules.proactive.rules.isEmpty, !inTransition {
            // Vehicles whose contact for some rule may be in its window now.
            var vehicles: [String: [String: FieldValue]] = [:]
            for rule in rules.proactive.rules {
                let dates = ProactivePlanner.eventDates(for: rule, nowMillis: now)
                for (id, values) in try await store.rulesLiveRecords(table: Self.vehicles, where: [
                    .between(rule.event.dateField, .string(dates.lowerBound), .string(dates.upperBound)),
                ]) { vehicles[id] = values }
            }
            for (vehicleID, vehicle) in vehicles.sorted(by: { $0.key < $1.key }) {
                var locator = locator
                // A vehicle is routed to its dealer only, so a node holding another dealer's
                // vehicle is above it; just above the deepest level, it is the dealer's parent.
                if let dealer = vehicle[TaskField.owningDealer.rawValue]?.stringValue.map(NodeID.init(unchecked:)),
                   locator.path(of: dealer) == nil, let ownPath, ownPath.count == rules.proactive.levels.count - 1, dealer != identity.node {
                    locator.learn(path: ownPath + [dealer])
                }
                var customer: [String: FieldValue]?
                if let customerID = vehicle[TaskField.customerID.rawValue]?.stringValue,
                   let record = try await store.rulesRecord(table: Self.customers, id: customerID),
                   Self.isRouted(record, to: vehicle[TaskField.owningDealer.rawValue]) {
                    customer = record.state.isLive ? record.state.liveValues : [:]
                }
                var created: [ProactiveTask] = []
                for outcome in ProactivePlanner.evaluate(vehicleID: vehicleID, vehicle: vehicle, customer: customer, rules: rules,
                                                         evaluator: identity.node, locator: locator, nowMillis: now) {
                    switch outcome {
                    case .create(var task):
                        // Created once: a task held in any state (done, cancelled, deleted) is never made again.
                        guard try await store.rulesRecord(table: Self.tasks, id: task.recordID) == nil else { continue }
                        // Which version of the event date it is planned from: a date changed
                        // later plans another task, which supersedes this one.
                        if let field = rules.proactive.rules.first(where: { $0.id == task.rule })?.event.dateField {
                            // Read again for its versions: a date that changed since the vehicle
                            // was read is planned from at the next run, with its own version.
                            guard let held = try await store.rulesRecord(table: Self.vehicles, id: vehicleID),
                                  held.state.liveValues[field] == vehicle[field] else { continue }
                            task.plannedFrom = held.state.versions[field]
                        }
                        // Stamped when its window opened, as every node creating it stamps it:
                        // an edit of the task made anywhere since wins over any creation.
                        try await store.createRuleRecord(.upsert(Self.tasks, id: task.recordID, task.fields), stampedAtMillis: task.createdFromMillis)
                        created.append(task)
                    case .noConsent(let rule, _):
                        report.withoutConsent.append((vehicleID, rule, customer != nil))
                    case .notDue, .notHere, .cannotPlace:
                        continue
                    }
                }
                report.tasksCreated += created
                for task in created {
                    logger.info("proactive task created", metadata: ["task": "\(task.recordID)", "rule": "\(task.rule)", "vehicle": "\(vehicleID)",
                                                                     "due": "\(task.dueDate)", "assigned": "\(task.assignedNode)"])
                }
            }
        }
        let open = try await store.rulesLiveRecords(table: Self.tasks, where: [
            .equals(TaskField.status.rawValue, .string(TaskStatus.open.rawValue)), .equals(TaskField.kind.rawValue, .string(ProactivePlanner.kind)),
        ])
        try await settle(open, rules: rules, identity: identity, locator: locator, superseding: !inTransition, now: now, into: &report)
    }

    /// Cancels the open proactive tasks superseded by another (unless `superseding` is off)
    /// or whose customer no longer consents.
    private func settle(_ open: [(id: String, values: [String: FieldValue])], rules: RulesInForce, identity: NodeIdentity, locator: NodeLocator,
                        superseding: Bool, now: UInt64, into report: inout RulesRunReport) async throws {
        // One open task per rule and vehicle: a governance that moved a rule's timing planned
        // the contact for another day, and the task of the older one is cancelled.
        // A task whose level is at another node now (its dealer moved) gives way to one
        // that is where its level is.
        let (levels, queues) = (rules.proactive.levels, rules.proactive.queues)
        let assignment = { (level: String, queue: String, dealer: NodeID) -> NodeID? in
            level == levels.last ? dealer : locator.node(at: level, queue: queues[queue], levels: levels, for: dealer)
        }
        // Which task stays, and where a task goes, is decided by the nodes that know the
        // dealer's place for certain: the dealer itself (its parent told it) and the root (the
        // catalog). A country may still mirror a dealer that left it, or not yet one that came
        // (it cancelled the new country's task while HQ cancelled the old one: both, for good).
        // Their cancellations and reassignments reach it like any change.
        let certain = { (dealer: String) -> Bool in
            identity.parent == nil ? locator.knowsTree : dealer == identity.node.rawValue
        }
        let decided = open.filter { certain($0.values[TaskField.owningDealer.rawValue]?.stringValue ?? "") }
        let superseded = !superseding ? [:] : ProactivePlanner.superseded(decided.map { ($0.id, $0.values) }, pathOf: { locator.path(of: $0) })
        // An open task assigned off its dealer's path (the dealer moved, and no task of its new
        // country's timing superseded it) goes to the node of its level now. A task anywhere
        // on the path stays where it is (a node on another release may name another node of
        // the path for it; an operator may have handed it up).
        if superseding {
            for (taskID, task) in decided where superseded[taskID] == nil {
                guard let level = task[TaskField.level.rawValue]?.stringValue, let queue = task[TaskField.queue.rawValue]?.stringValue,
                      let dealer = task[TaskField.owningDealer.rawValue]?.stringValue, let assigned = task[TaskField.assignedNode.rawValue]?.stringValue,
                      let path = locator.path(of: NodeID(unchecked: dealer)), !path.contains(NodeID(unchecked: assigned)),
                      let target = assignment(level, queue, NodeID(unchecked: dealer)),
                      let held = try await store.rulesRecord(table: Self.tasks, id: taskID) else { continue }
                // After the assignment held, so it wins wherever it arrives.
                let heldStamp = held.state.versions[TaskField.assignedNode.rawValue]?.hlc.wallMillis ?? 0
                try await store.createRuleRecord(.upsert(Self.tasks, id: taskID, [TaskField.assignedNode.rawValue: .string(target.rawValue)]),
                                                 stampedAtMillis: max(now, heldStamp + 1))
                report.tasksReassigned.append((taskID, target))
                logger.info("proactive task reassigned", metadata: ["task": "\(taskID)", "assigned": "\(target)"])
            }
        }
        for (taskID, cancel) in superseded.sorted(by: { $0.key < $1.key }) {
            try await store.commitRuleWrites([.upsert(Self.tasks, id: taskID, cancel)])
            let reason = cancel[TaskField.cancelReason.rawValue]?.stringValue ?? ""
            report.tasksCancelled.append((taskID, reason))
            logger.info("proactive task cancelled", metadata: ["task": "\(taskID)", "reason": "\(reason)"])
        }
        // Consent first: open proactive tasks whose customer no longer gives the consent.
        for (taskID, task) in open where superseded[taskID] == nil {
            guard let customerID = task[TaskField.customerID.rawValue]?.stringValue,
                  let consent = task[TaskField.requiresConsent.rawValue]?.stringValue,
                  let record = try await store.rulesRecord(table: Self.customers, id: customerID) else { continue }
            // Not limited to customers routed to the task's dealer, unlike creation: consent
            // first, a withdrawal cancels every open task for the customer (its dealer may
            // have changed since the task was made).
            let field = "consent_" + consent
            let customer = record.state.isLive ? record.state.liveValues : [:]
            guard let cancel = ProactivePlanner.cancellation(task: task, customer: customer,
                                                             consentChangedAtMillis: record.state.versions[field]?.hlc.wallMillis) else { continue }
            try await store.commitRuleWrites([.upsert(Self.tasks, id: taskID, cancel)])
            let reason = cancel[TaskField.cancelReason.rawValue]?.stringValue ?? ""
            report.tasksCancelled.append((taskID, reason))
            logger.info("proactive task cancelled", metadata: ["task": "\(taskID)", "reason": "\(reason)"])
        }
    }
}

/// HQ's rules runner, in the hub process (HQ runs no agent): every tenant's root store on
/// the hub, on either engine, with the catalog's tree, evaluated every `interval`. A store
/// several processes serve (``TiersyncStorage/RulesLeasing``: PostgreSQL) is evaluated by one
/// of them at a time.
public final class HubRulesRunner: Sendable {
    /// The tenants with data to evaluate.
    private let tenants: @Sendable () async throws -> [TenantID]
    private let store: @Sendable (TenantID) async throws -> any RulesStore
    private let tree: @Sendable (TenantID) async -> NodeTree?
    let clock: @Sendable () -> UInt64
    let logger: Logger
    /// One runner per tenant, kept across runs (each remembers what it has looked at).
    private let runners = Mutex<[TenantID: RulesRunner]>([:])

    public init(tenants: @escaping @Sendable () async throws -> [TenantID], store: @escaping @Sendable (TenantID) async throws -> any RulesStore,
                tree: @escaping @Sendable (TenantID) async -> NodeTree?, clock: @escaping @Sendable () -> UInt64 = { WallClock.nowMillis() },
                logger: Logger = Logger(label: "tiersync.rules")) {
        self.tenants = tenants
        self.store = store
        self.tree = tree
        self.clock = clock
        self.logger = logger
    }

    /// The SQLite hub: the tenants whose database exists (one that never received anything
    /// holds nothing to evaluate), listed and opened off the cooperative pool.
    public convenience init(stores: TenantStores, clock: @escaping @Sendable () -> UInt64 = { WallClock.nowMillis() },
                            logger: Logger = Logger(label: "tiersync.rules")) {
        let catalog = stores.catalog
        self.init(tenants: { try await stores.tenantsWithData() }, store: { try await stores.openStore(for: $0) },
                  tree: { try? await catalog.tree(of: $0) }, clock: clock, logger: logger)
    }

    /// One run over every tenant: the reports by tenant (a tenant another process was
    /// evaluating is left out).
    @discardableResult
    public func runOnce() async -> [TenantID: RulesRunReport] {
        var reports: [TenantID: RulesRunReport] = [:]
        let tenants: [TenantID]
        do {
            tenants = try await self.tenants()
        } catch {
            logger.warning("HQ rules run: the tenants could not be listed", metadata: ["error": "\(error)"])
            return reports
        }
        for tenant in tenants {
            do {
                let runner = try await runner(for: tenant)
                if let leasing = runner.store as? any RulesLeasing {
                    reports[tenant] = try await leasing.withRulesLease { try await runner.runOnce() }
                } else {
                    reports[tenant] = try await runner.runOnce()
                }
            } catch {
                logger.warning("HQ rules run failed", metadata: ["tenant": "\(tenant)", "error": "\(error)"])
            }
        }
        return reports
    }

    private func runner(for tenant: TenantID) async throws -> RulesRunner {
        if let runner = runners.withLock({ $0[tenant] }) { return runner }
        let tree = self.tree
        let runner = RulesRunner(store: try await store(tenant), clock: clock, tree: { await tree(tenant) }, logger: logger)
        return runners.withLock { $0[tenant, default: runner] }
    }

    /// Runs ``runOnce()`` every `interval` until cancelled; `onWrite(tenant)` after a run that
    /// wrote to a tenant's store (the hub wakes that tenant's long-polls).
    public func run(every interval: Duration, onWrite: @escaping @Sendable (TenantID) async -> Void = { _ in }) async {
        while !Task.isCancelled {
            for (tenant, report) in await runOnce() where report.wrote { await onWrite(tenant) }
            try? await Task.sleep(for: interval)
        }
    }
}

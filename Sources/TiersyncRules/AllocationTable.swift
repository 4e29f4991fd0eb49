import TiersyncGovernance

/// The keys of a compiled release's config the rules read (docs/GOVERNANCE.md, section 4).
enum ConfigKey: String {
    case governance, levels, allocation, queues
    case when, then, order, level, queue, priority, sla
    case expertPool = "expert_pool"
}

/// The condition names of an allocation rule's `when`.
public enum AllocationCondition: String, CaseIterable, Sendable {
    case knowledge, topic, urgency, channel
    case keyAccount = "key_account"
    case segment
}

/// One allocation rule of a release, as plain values.
public struct AllocationRule: Sendable, Hashable {
    public var id: String
    /// Its position in HQ's list: the evaluation order.
    public var order: Int
    /// For each condition given, the values any of which satisfies it (a boolean
    /// condition, `key_account`, holds one of `"true"`/`"false"`). A condition not given
    /// holds for every dialogue; `{}` matches everything. Topics are kept as
    /// ``InteractionFacts/normalizedTopic(_:)`` writes them.
    public var conditions: [AllocationCondition: Set<String>]
    public var level: String
    public var queue: String
    /// 1 (highest) … 5.
    public var priority: Int
    /// The first response is due within this many seconds of the dialogue's creation.
    public var slaSeconds: Int

    public init(id: String, order: Int, conditions: [AllocationCondition: Set<String>], level: String, queue: String,
                priority: Int, slaSeconds: Int) {
        self.id = id
        self.order = order
        var conditions = conditions
        if let topics = conditions[.topic] { conditions[.topic] = Set(topics.map(InteractionFacts.normalizedTopic)) }
        self.conditions = conditions
        self.level = level
        self.queue = queue
        self.priority = priority
        self.slaSeconds = slaSeconds
    }

    /// True when every condition the rule gives holds for `facts`. A condition on a fact
    /// the dialogue lacks does not hold (an unknown topic is no "battery" question), except
    /// that a customer not marked as key account counts as `key_account: false`.
    public func matches(_ facts: InteractionFacts) -> Bool {
        conditions.allSatisfy { condition, accepted in
            guard let value = facts.value(for: condition) else { return false }
            return accepted.contains(value)
        }
    }
}

/// A queue of a release, as far as allocation needs it.
public struct AllocationQueue: Sendable, Hashable {
    public var id: String
    public var level: String
    /// A central team covering all markets for some topics ("genius functions"): handled
    /// at the tenant's root whatever node the dialogue came from.
    public var expertPool: Bool

    public init(id: String, level: String, expertPool: Bool) {
        self.id = id
        self.level = level
        self.expertPool = expertPool
    }
}

/// What a release's config is missing for allocation. A compiled, signed release always
/// has it; this is for configs built by hand or by a future format.
public struct AllocationConfigError: Error, Sendable, Hashable, CustomStringConvertible {
    public let path: String
    public let message: String
    public var description: String { "\(path): \(message)" }
}

/// The allocation part of an effective config (release ⊕ overlay): the tenant's levels,
/// the rules in evaluation order and the queues. Built once per config and reused for
/// every dialogue created while that config is in force.
public struct AllocationTable: Sendable, Hashable {
    /// The tenant's levels, top-down (`[hq, country, dealer]`, `[hq, agent]`).
    public let levels: [String]
    /// In evaluation order (HQ's list order, `allocation.<id>.order`).
    public let rules: [AllocationRule]
    public let queues: [String: AllocationQueue]

    public init(levels: [String], rules: [AllocationRule], queues: [String: AllocationQueue]) {
        self.levels = levels
        self.rules = rules.sorted { ($0.order, $0.id) < ($1.order, $1.id) }
        self.queues = queues
    }

    /// Reads the compiled config of a release (or release ⊕ overlay).
    public init(config: ConfigValue) throws(AllocationConfigError) {
        func fail(_ path: String, _ message: String) -> AllocationConfigError { AllocationConfigError(path: path, message: message) }
        guard let levels = config[path: "\(ConfigKey.governance.rawValue).\(ConfigKey.levels.rawValue)"]?.listValue?.compactMap(\.stringValue),
              !levels.isEmpty else {
            throw fail("governance.levels", "missing")
        }
        var queues: [String: AllocationQueue] = [:]
        for (id, value) in config[path: ConfigKey.queues.rawValue]?.objectValue ?? [:] {
            guard let queue = value.objectValue, let level = queue[ConfigKey.level.rawValue]?.stringValue else {
                throw fail("queues.\(id).level", "missing")
            }
            let pool: Bool = if case .bool(let b)? = queue[ConfigKey.expertPool.rawValue] { b } else { false }
            queues[id] = AllocationQueue(id: id, level: level, expertPool: pool)
        }
        var rules: [AllocationRule] = []
        for (id, value) in config[path: ConfigKey.allocation.rawValue]?.objectValue ?? [:] {
            let path = "allocation.\(id)"
            guard let rule = value.objectValue else { throw fail(path, "expected a mapping") }
            guard let order = rule[ConfigKey.order.rawValue]?.numberValue else { throw fail(path + ".order", "missing") }
            guard let then = rule[ConfigKey.then.rawValue]?.objectValue,
                  let level = then[ConfigKey.level.rawValue]?.stringValue, levels.contains(level) else {
                throw fail(path + ".then.level", "missing or not one of \(levels)")
            }
            guard let queue = then[ConfigKey.queue.rawValue]?.stringValue else { throw fail(path + ".then.queue", "missing") }
            guard let priority = then[ConfigKey.priority.rawValue]?.numberValue, priority == priority.rounded() else {
                throw fail(path + ".then.priority", "missing")
            }
            guard let slaText = then[ConfigKey.sla.rawValue]?.stringValue, let sla = GovernanceDuration(slaText) else {
                throw fail(path + ".then.sla", "missing or not a duration")
            }
            var conditions: [AllocationCondition: Set<String>] = [:]
            for (name, accepted) in rule[ConfigKey.when.rawValue]?.objectValue ?? [:] {
                guard let condition = AllocationCondition(rawValue: name) else { throw fail("\(path).when.\(name)", "unknown condition") }
                let values: [ConfigValue] = accepted.listValue ?? [accepted]
                conditions[condition] = Set(values.map { value in
                    if case .bool(let b) = value { return b ? "true" : "false" }
                    return value.description
                })
            }
            rules.append(AllocationRule(id: id, order: Int(order), conditions: conditions, level: level, queue: queue,
                                        priority: Int(priority), slaSeconds: sla.seconds))
        }
        self.init(levels: levels, rules: rules, queues: queues)
    }

    /// The rule deciding for `facts`: the first in HQ's order whose conditions all hold.
    /// (The format defines first-match evaluation only, and the compiler makes the last rule
    /// a catch-all, so a compiled release always decides.)
    public func firstMatch(_ facts: InteractionFacts) -> AllocationRule? {
        rules.first { $0.matches(facts) }
    }
}

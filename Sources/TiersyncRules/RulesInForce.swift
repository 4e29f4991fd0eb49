import Crypto
import Foundation
import TiersyncCore
import TiersyncGovernance

/// The rules of the governance a node runs (release ⊕ its country's overlay) that act on
/// records as time passes: escalation of dialogues past their SLA and proactive contacts.
/// Built from the effective config in force when they run (docs/GOVERNANCE.md, "Release
/// changes": escalation and proactive evaluation use the rules in force when they run).
public struct RulesInForce: Sendable, Hashable {
    public var release: Int
    /// The overlay's label (`de#1`), if one applies.
    public var overlay: String?
    public var escalation: EscalationTable
    public var proactive: ProactiveTable

    public init(release: Int, overlay: String?, escalation: EscalationTable, proactive: ProactiveTable) {
        self.release = release
        self.overlay = overlay
        self.escalation = escalation
        self.proactive = proactive
    }

    /// Reads the escalation and proactive sections of a compiled config (release or release ⊕ overlay).
    public init(release: Int, overlay: String?, config: ConfigValue) throws(AllocationConfigError) {
        self.init(release: release, overlay: overlay, escalation: try EscalationTable(config: config),
                  proactive: try ProactiveTable(config: config))
    }
}

/// The config parts every rules table needs: the tenant's levels and its queues.
enum ConfigBasics {
    static func levels(_ config: ConfigValue) throws(AllocationConfigError) -> [String] {
        guard let levels = config[path: "governance.levels"]?.listValue?.compactMap(\.stringValue), !levels.isEmpty else {
            throw AllocationConfigError(path: "governance.levels", message: "missing")
        }
        return levels
    }

    static func queues(_ config: ConfigValue) throws(AllocationConfigError) -> [String: AllocationQueue] {
        var queues: [String: AllocationQueue] = [:]
        for (id, value) in config[path: "queues"]?.objectValue ?? [:] {
            guard let queue = value.objectValue, let level = queue["level"]?.stringValue else {
                throw AllocationConfigError(path: "queues.\(id).level", message: "missing")
            }
            let pool: Bool = if case .bool(let b)? = queue["expert_pool"] { b } else { false }
            queues[id] = AllocationQueue(id: id, level: level, expertPool: pool)
        }
        return queues
    }

    static func integer(_ value: ConfigValue?) -> Int? {
        guard let n = value?.numberValue, n == n.rounded(), abs(n) < 1e9 else { return nil }
        return Int(n)
    }
}

/// Which node is where in the tenant's tree, as far as the evaluating node knows: its own
/// path from the root (every node learns it from its parent's `whoami`), and the whole tree
/// where the node holds it (HQ's catalog, a country's mirrored directory). Rules that move
/// a record to the node of a level ask it for the path of the node the record is at.
public struct NodeLocator: Sendable {
    private var known: [NodeID: [NodeID]] = [:]
    private let tree: NodeTree?

    /// `path`: the evaluating node's own, from the root down to itself; `tree`: the tenant's
    /// tree where the node has it.
    public init(path: [NodeID]?, tree: NodeTree? = nil) {
        self.tree = tree
        if let path { learn(path: path) }
    }

    /// Records that `path` (root first) leads to its last node, and so to each node on it.
    public mutating func learn(path: [NodeID]) {
        for end in path.indices where known[path[end]] == nil { known[path[end]] = Array(path[...end]) }
    }

    /// The path from the root to `node` (both included), or nil when not known here.
    public func path(of node: NodeID) -> [NodeID]? {
        if let path = known[node] { return path }
        guard let tree, tree.parents[node] != nil else { return nil }
        let fromTree = tree.path(of: node).split(separator: "/").map { NodeID(unchecked: String($0)) }
        // A country's mirror is its subtree: above its top, the path is the one the node knows.
        if let top = fromTree.first, let above = known[top] { return above + fromTree.dropFirst() }
        return fromTree
    }

    /// Whether the whole tree (or a country's mirrored subtree) is known here, not only
    /// paths learned one by one.
    public var knowsTree: Bool { tree != nil }

    /// The tenant's root, when known.
    public var root: NodeID? {
        if let any = known.values.first { return any.first }
        return tree?.parents.first { $0.value == nil }?.key
    }

    /// The node handling something of `level` (in `queue`) that belongs to `node`: the root
    /// for an expert-pool queue (the pools cover every market) and for the top level, else
    /// `node`'s ancestor at that level (`node` itself at its own level). Nil when that
    /// node is not known here.
    public func node(at level: String, queue: AllocationQueue?, levels: [String], for node: NodeID) -> NodeID? {
        guard let index = levels.firstIndex(of: level) else { return nil }
        if queue?.expertPool == true || index == 0 { return root ?? path(of: node)?.first }
        guard let path = path(of: node), index < path.count else { return nil }
        return path[index]
    }

    /// `node` itself when `level` is its own or one below it: a dialogue HQ allocated to a
    /// dealer level without a dealer to give it to stays at HQ, and when it escalates to the
    /// country level there is no country above it to take it; it moves to the new level
    /// and queue where it is. Nil when `node`'s place is not known here.
    public func standIn(for node: NodeID, at level: String, levels: [String]) -> NodeID? {
        guard let index = levels.firstIndex(of: level), let path = path(of: node), index >= path.count - 1 else { return nil }
        return node
    }
}

/// Ids of the records rules create, derived from what makes them one: the same inputs give
/// the same id at every node, so records written independently by several nodes are one
/// record (merged per field) rather than several.
public enum RuleRecordID {
    /// `esc-` + 128 bits of SHA-256 over the interaction's id and the step.
    public static func escalation(interactionID: String, step: Int) -> String {
        "esc-" + digest("tiersync-escalation-v1\n\(interactionID)\n\(step)")
    }

    /// `task-` + 128 bits of SHA-256 over the rule, the vehicle (or contract) and the due date.
    public static func proactiveTask(rule: String, vehicleID: String, dueDate: String) -> String {
        "task-" + digest("tiersync-proactive-v1\n\(rule)\n\(vehicleID)\n\(dueDate)")
    }

    private static func digest(_ text: String) -> String {
        SHA256.hash(data: Data(text.utf8)).prefix(16).map { String(format: "%02x", $0) }.joined()
    }
}

/// Calendar dates (`2026-11-22`, the `date` fields) as whole days since 1970-01-01, UTC.
public enum CivilDate {
    public static let dayMillis: UInt64 = 86_400_000

    /// Days since the epoch of a `YYYY-MM-DD` date; nil for anything else.
    public static func days(_ text: String) -> Int? {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard text.utf8.count == 10, parts.count == 3, parts[0].count == 4, parts[1].count == 2, parts[2].count == 2,
              let y = Int64(parts[0]), let m = Int64(parts[1]), let d = Int64(parts[2]),
              CivilCalendar.isDate(year: y, month: m, day: d) else { return nil }
        return Int(CivilCalendar.days(year: y, month: m, day: d))
    }

    /// The `YYYY-MM-DD` date of a day number.
    public static func format(days: Int) -> String {
        let (y, m, d) = CivilCalendar.date(days: Int64(days))
        return String(format: "%04d-%02d-%02d", y, m, d)
    }

    /// The day a time falls on (UTC).
    public static func day(ofMillis millis: UInt64) -> Int { Int(millis / dayMillis) }
}

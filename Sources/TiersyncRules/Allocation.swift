import Foundation
import TiersyncCore

/// What allocation conditions look at: the dialogue's own fields plus the two customer
/// fields rules may test (`key_account`, `segment`).
public struct InteractionFacts: Sendable, Hashable {
    public var knowledge: String?
    public var topic: String?
    public var urgency: String?
    public var channel: String?
    /// The customer's key-account flag; absent counts as `false`.
    public var keyAccount: Bool?
    /// The customer's value segment (`customers.segment_value`).
    public var segment: String?

    public init(knowledge: String? = nil, topic: String? = nil, urgency: String? = nil, channel: String? = nil,
                keyAccount: Bool? = nil, segment: String? = nil) {
        self.knowledge = knowledge
        self.topic = topic.map(Self.normalizedTopic)
        self.urgency = urgency
        self.channel = channel
        self.keyAccount = keyAccount
        self.segment = segment
    }

    /// The facts of an interaction's field values and its customer's (if the node holds it).
    public init(interaction: [String: FieldValue], customer: [String: FieldValue]?) {
        self.init(knowledge: interaction[.knowledgeKind]?.stringValue, topic: interaction[.topic]?.stringValue,
                  urgency: interaction[.urgency]?.stringValue, channel: interaction[.channel]?.stringValue,
                  keyAccount: customer?[.keyAccount].flatMap { if case .bool(let b) = $0 { b } else { nil } },
                  segment: customer?[.segment]?.stringValue)
    }

    /// A topic as rules compare it: without regard to case or surrounding spaces. A topic is
    /// free text a person types at a dealer; matched exactly, `Recall` was no `recall` and a
    /// safety case went to the catch-all's queue instead of HQ's product safety (helper 72).
    /// The common form (lower-case ASCII, nothing to trim) is returned as it is.
    public static func normalizedTopic(_ topic: String) -> String {
        let bytes = topic.utf8
        func isEdgeSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D }
        let plain = bytes.allSatisfy { !(0x41...0x5A).contains($0) && $0 < 0x80 }
            && !(bytes.first.map(isEdgeSpace) ?? false) && !(bytes.last.map(isEdgeSpace) ?? false)
        return plain ? topic : topic.trimmingCharacters(in: .whitespacesAndNewlines).lowercased()
    }

    /// The fact a condition tests, in the form the rule's values are kept in.
    func value(for condition: AllocationCondition) -> String? {
        switch condition {
        case .knowledge: knowledge
        case .topic: topic
        case .urgency: urgency
        case .channel: channel
        case .keyAccount: (keyAccount ?? false) ? "true" : "false"
        case .segment: segment
        }
    }
}

/// Which release (⊕ overlay) a node runs when a dialogue is created, with its allocation
/// table: what a decision is made from and records.
public struct GovernanceInForce: Sendable, Hashable {
    public var release: Int
    /// The overlay's label (`de#1`), if one applies.
    public var overlay: String?
    public var table: AllocationTable

    public init(release: Int, overlay: String?, table: AllocationTable) {
        self.release = release
        self.overlay = overlay
        self.table = table
    }
}

/// Where the deciding node stands in its tenant's tree, which is what turns a level into
/// a node.
public struct NodePlacement: Sendable, Hashable {
    /// The deciding (creating) node.
    public var node: NodeID
    /// From the root down to ``node`` inclusive (`[hq, de, de-berlin]`), when the node
    /// knows it; nil when it knows only itself and its parent (see ``init(node:parent:path:levels:)``).
    public var path: [NodeID]?

    public init(node: NodeID, path: [NodeID]?) {
        self.node = node
        self.path = path
    }

    /// The placement a node can vouch for: `path` as learned from its parent (`GET
    /// /v1/whoami`), if it ends at `node`; else what follows from its identity alone — the
    /// root has no parent, and in a two-level tenant a node's parent is the root.
    public init(node: NodeID, parent: NodeID?, path: [NodeID]?, levels: Int) {
        if let path, path.last == node, path.count >= 1 {
            self.init(node: node, path: path)
        } else if parent == nil {
            self.init(node: node, path: [node])
        } else if levels == 2, let parent {
            self.init(node: node, path: [parent, node])
        } else {
            self.init(node: node, path: nil)
        }
    }

    /// The node handling a dialogue of `level` (in `queue`) created here:
    /// - an expert-pool queue: the tenant's root, whose pools cover every market;
    /// - the creating node's own level or one above: the creating node's ancestor at that
    ///   level (HQ → the root, country → its country, dealer → itself);
    /// - a level below the creating node (HQ or a country allocating to dealers): the
    ///   customer's owning dealer when the level is the deepest, else the creating node
    ///   itself, which cannot name a node below it that it does not know.
    /// Nil when the node does not know its place in the tree.
    public func handlingNode(level: String, queue: AllocationQueue?, levels: [String], customerOwner: NodeID?) -> NodeID? {
        guard let path, let index = levels.firstIndex(of: level) else { return nil }
        if queue?.expertPool == true { return path.first }
        if index < path.count { return path[index] }
        if index == levels.count - 1, let customerOwner { return customerOwner }
        return node
    }
}

/// One allocation decision: what the rules said for a new dialogue and what made them say it.
public struct AllocationDecision: Sendable, Hashable {
    public var rule: String
    public var level: String
    public var queue: String
    public var priority: Int
    public var slaSeconds: Int
    /// `created_at` + the rule's SLA.
    public var slaDueMillis: UInt64
    /// Nil when the deciding node does not know its place in the tree (``NodePlacement``).
    public var handlingNode: NodeID?
    public var release: Int
    public var overlay: String?
    public var decidedBy: NodeID
    public var decidedAtMillis: UInt64

    /// `fields` (a new interaction's, as its writer gave them) with the decision added: each
    /// allocated field the writer left out (an explicit value, `null` included, wins), and
    /// always the decision record (rule, release, overlay, node, time), so the audit says which
    /// rule decided even where the writer overrode part of it. `created_at` is set to the
    /// decision time when the writer gave none.
    public func applied(to fields: [String: FieldValue]) -> [String: FieldValue] {
        var out = fields
        out.reserveCapacity(fields.count + InteractionField.allocated.count + InteractionField.decisionRecord.count)
        // Each allocated field the writer left out, written straight in (no intermediate table).
        func fill(_ field: InteractionField, _ value: @autoclosure () -> FieldValue?) {
            if out[field.rawValue] == nil, let value = value() { out[field.rawValue] = value }
        }
        fill(.handlingLevel, .string(level))
        fill(.queue, .string(queue))
        fill(.priority, .int(Int64(priority)))
        fill(.slaDue, .string(Timestamp.format(slaDueMillis)))
        fill(.handlingNode, handlingNode.map { .string($0.rawValue) })
        if out[InteractionField.createdAt.rawValue] == nil {
            out[InteractionField.createdAt.rawValue] = .string(Timestamp.format(decidedAtMillis))
        }
        out[InteractionField.decisionRule.rawValue] = .string(rule)
        out[InteractionField.decisionRelease.rawValue] = .int(Int64(release))
        // No overlay: the field is left out (a decision never carries a writer's claim of one).
        out[InteractionField.decisionOverlay.rawValue] = overlay.map(FieldValue.string)
        out[InteractionField.decidedBy.rawValue] = .string(decidedBy.rawValue)
        out[InteractionField.decidedAt.rawValue] = .string(Timestamp.format(decidedAtMillis))
        return out
    }
}

/// Why a new interaction got no decision.
public enum NoAllocation: String, Error, Sendable, Hashable {
    /// The node runs no release yet (none received, none in effect, or every one refused).
    case noReleaseInForce = "no_release_in_force"
    /// A contact the node made itself (`direction: outbound`): rules allocate inbound dialogues.
    case outbound
    /// No rule matched (a compiled release's last rule matches everything, so only a
    /// hand-built table can get here).
    case noRuleMatched = "no_rule_matched"
}

/// Allocation of new dialogues, as a function of plain values: no store, no clock, no I/O.
public enum Allocator {
    /// Decides for a new interaction with `fields` (as its writer gave them) whose customer
    /// has `customer` fields (nil when the node does not hold the customer), created at
    /// `placement.node` at `nowMillis` while `governance` is in force.
    public static func decide(interaction fields: [String: FieldValue], customer: [String: FieldValue]?,
                              governance: GovernanceInForce?, placement: NodePlacement,
                              nowMillis: UInt64) -> Result<AllocationDecision, NoAllocation> {
        if fields[.direction]?.stringValue == InteractionDirection.outbound.rawValue { return .failure(.outbound) }
        guard let governance else { return .failure(.noReleaseInForce) }
        let facts = InteractionFacts(interaction: fields, customer: customer)
        guard let rule = governance.table.firstMatch(facts) else { return .failure(.noRuleMatched) }
        let created = fields[.createdAt]?.stringValue.flatMap(Timestamp.parse) ?? nowMillis
        let owner = customer?[.owningDealer]?.stringValue.flatMap { NodeID.isValid($0) ? NodeID(unchecked: $0) : nil }
        return .success(AllocationDecision(
            rule: rule.id, level: rule.level, queue: rule.queue, priority: rule.priority, slaSeconds: rule.slaSeconds,
            // At most the last time a `timestamp` field holds (a dialogue of 9999-12-31).
            slaDueMillis: min(created + UInt64(rule.slaSeconds) * 1_000, UInt64(CommonTimestamp.validMillis.upperBound - 1)),
            handlingNode: placement.handlingNode(level: rule.level, queue: governance.table.queues[rule.queue],
                                                 levels: governance.table.levels, customerOwner: owner),
            release: governance.release, overlay: governance.overlay, decidedBy: placement.node, decidedAtMillis: nowMillis))
    }
}

/// ISO 8601 times as the `timestamp` fields hold them. Allocation parses and writes them on
/// every new dialogue, so the common forms are handled here byte by byte (a tenth of the
/// cost of Foundation's format styles, `TimestampTests` holds the two side by side); any
/// other form goes to Foundation.
public enum Timestamp {
    /// Milliseconds since the epoch of an ISO 8601 date-time, with or without fractional seconds.
    /// Nil outside the times a `timestamp` field may hold (``CommonTimestamp/validMillis``):
    /// `rules run --now 99999-…` evaluated at year 99999 and wrote real escalations.
    public static func parse(_ text: String) -> UInt64? {
        if let millis = text.utf8.withContiguousStorageIfAvailable(commonMillis) ?? nil { return millis }
        guard CommonTimestamp.hasInternetDateTimeShape(text), CommonTimestamp.fieldsInRange(text) else { return nil }
        let date = (try? Date(text, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true)))
            ?? (try? Date(text, strategy: Date.ISO8601FormatStyle()))
        guard let millis = date.map({ ($0.timeIntervalSince1970 * 1000).rounded() }),
              millis >= 0, millis < Double(CommonTimestamp.validMillis.upperBound) else { return nil }
        return UInt64(millis)
    }

    /// UTC, whole seconds when the time has no milliseconds (`2026-11-22T10:15:00Z`), else
    /// with them (`2026-11-22T10:15:00.250Z`). Exact to the millisecond, so ``parse(_:)``
    /// reads back the same time (Foundation's format style, used before, wrote some times a
    /// millisecond early: 0.999 s as `.998`).
    public static func format(_ millis: UInt64) -> String {
        if millis < maxCommonMillis {
            let days = Int(millis / 86_400_000), inDay = Int(millis % 86_400_000)
            let (y, m, d) = CivilCalendar.date(days: Int64(days))
            var bytes: [UInt8] = []
            bytes.reserveCapacity(24)
            func put(_ value: Int, _ width: Int) {
                var divisor = 1
                for _ in 1..<width { divisor *= 10 }
                var v = value
                while divisor > 0 {
                    bytes.append(UInt8(0x30 + v / divisor))
                    v %= divisor
                    divisor /= 10
                }
            }
            put(Int(y), 4); bytes.append(0x2d); put(Int(m), 2); bytes.append(0x2d); put(Int(d), 2); bytes.append(0x54)
            put(inDay / 3_600_000, 2); bytes.append(0x3a); put(inDay / 60_000 % 60, 2); bytes.append(0x3a); put(inDay / 1000 % 60, 2)
            if millis % 1000 != 0 { bytes.append(0x2e); put(inDay % 1000, 3) }
            bytes.append(0x5a)
            return String(decoding: bytes, as: UTF8.self)
        }
        let date = Date(timeIntervalSince1970: Double(millis) / 1000)
        return millis % 1000 == 0 ? date.formatted(Date.ISO8601FormatStyle())
            : date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }

    /// 10000-01-01T00:00:00Z: below it, ``format(_:)`` writes the digits itself.
    static let maxCommonMillis: UInt64 = 253_402_300_800_000

    /// ``CommonTimestamp``'s form from 1970 on; nil for anything else (Foundation decides).
    static func commonMillis(_ p: UnsafeBufferPointer<UInt8>) -> UInt64? {
        guard let millis = CommonTimestamp.millis(utf8: p), CommonTimestamp.validMillis.contains(millis) else { return nil }
        return UInt64(millis)
    }
}

import TiersyncCore

/// What the KPI formulas read of an `interactions` record (a dialogue), parsed once.
///
/// A dialogue counts for the node it was **allocated** to: `allocated_node` once it
/// escalated (the node that missed the deadline), else the node handling it
/// (`handling_node`), else the node it came from (`originating_node`); in the period of its
/// `created_at`. Without `created_at` (or any of those nodes) it counts nowhere.
public struct DialogueFacts: Sendable, Hashable {
    public var id: String
    /// The node the dialogue counts for.
    public var node: String?
    public var createdAt: Int64?
    public var channel: String?
    public var inbound: Bool
    public var answeredAt: Int64?
    public var resolvedAt: Int64?
    /// Closed without an answer: no `answered_at`, and `status` is `closed` or
    /// `abandoned_at` is set (the customer hung up, left the chat, …).
    public var abandoned: Bool
    public var slaDue: Int64?
    public var customer: String?
    public var topic: String?

    public init(id: String, node: String?, createdAt: Int64?, channel: String?, inbound: Bool, answeredAt: Int64? = nil,
                resolvedAt: Int64? = nil, abandoned: Bool = false, slaDue: Int64? = nil, customer: String? = nil, topic: String? = nil) {
        self.id = id
        self.node = node
        self.createdAt = createdAt
        self.channel = channel
        self.inbound = inbound
        self.answeredAt = answeredAt
        self.resolvedAt = resolvedAt
        self.abandoned = abandoned && answeredAt == nil
        self.slaDue = slaDue
        self.customer = customer
        self.topic = topic
    }

    /// The facts of a live record's fields (as ``TiersyncCore/DomainSchema/interactions`` names them).
    public init(id: String, fields: [String: FieldValue]) {
        func text(_ name: String) -> String? {
            guard let s = fields[name]?.stringValue, !s.isEmpty else { return nil }
            return s
        }
        func time(_ name: String) -> Int64? { text(name).flatMap(KPITime.millis) }
        let answered = time(DialogueField.answeredAt)
        self.init(id: id, node: text(DialogueField.allocatedNode) ?? text(DialogueField.handlingNode) ?? text(DialogueField.originatingNode),
                  createdAt: time(DialogueField.createdAt), channel: text(DialogueField.channel),
                  inbound: text(DialogueField.direction) != "outbound", answeredAt: answered,
                  resolvedAt: time(DialogueField.resolvedAt),
                  abandoned: text(DialogueField.status) == "closed" || text(DialogueField.abandonedAt) != nil,
                  slaDue: time(DialogueField.slaDue), customer: text(DialogueField.customerID), topic: text(DialogueField.topic))
    }

    /// Equal when every fact is; the customer and topic as bytes (``FollowUpGroup``): a
    /// customer id rewritten from "é" to "e" + U+0301 moves the dialogue to another group.
    public static func == (a: DialogueFacts, b: DialogueFacts) -> Bool {
        func sameBytes(_ x: String?, _ y: String?) -> Bool {
            switch (x, y) {
            case (nil, nil): true
            case let (x?, y?): FollowUpGroup.sameUTF8(x, y)
            default: false
            }
        }
        return a.id == b.id && a.node == b.node && a.createdAt == b.createdAt && a.channel == b.channel && a.inbound == b.inbound
            && a.answeredAt == b.answeredAt && a.resolvedAt == b.resolvedAt && a.abandoned == b.abandoned && a.slaDue == b.slaDue
            && sameBytes(a.customer, b.customer) && sameBytes(a.topic, b.topic)
    }

    /// Consistent with `==`: facts with byte-equal strings are canonically equal too.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(id)
        hasher.combine(createdAt)
        hasher.combine(customer)
        hasher.combine(topic)
    }

    /// Dialogues with the same key are "of the same customer and topic" (first-contact
    /// resolution); nil without a customer or a topic (nothing can follow such a dialogue).
    public var followUpKey: FollowUpGroup? {
        guard let customer, let topic else { return nil }
        return FollowUpGroup(customer: customer, topic: topic)
    }
}

/// A customer and topic: the group first-contact resolution looks within. Two dialogues
/// are of one group when their customer ids and topics are the same **bytes**, as SQL
/// compares them (a store selects a group with `customer_id = ? AND topic = ?`, HQ's
/// PostgreSQL report by `->>` text equality), not when Swift's `String ==` finds them
/// canonically equivalent: "José" with a precomposed "é" and with "e" + U+0301 are two
/// customers everywhere, so a node's incremental counts, its recount and HQ's report agree.
public struct FollowUpGroup: Hashable, Sendable {
    public let customer: String
    public let topic: String

    public init(customer: String, topic: String) {
        self.customer = customer
        self.topic = topic
    }

    public static func == (a: FollowUpGroup, b: FollowUpGroup) -> Bool {
        sameUTF8(a.customer, b.customer) && sameUTF8(a.topic, b.topic)
    }

    /// Whether two strings hold the same UTF-8 bytes, compared as two buffers (a recount
    /// compares a million groups: `utf8.elementsEqual` walked them a byte at a time through
    /// the generic iterator, 6 % of the recount).
    static func sameUTF8(_ a: String, _ b: String) -> Bool {
        guard a.utf8.count == b.utf8.count else { return false }
        var (a, b) = (a, b)
        return a.withUTF8 { x in b.withUTF8 { y in x.elementsEqual(y) } }
    }

    public func hash(into hasher: inout Hasher) {
        Self.hashBytes(customer, into: &hasher)
        Self.hashBytes(topic, into: &hasher)
    }

    /// The string's UTF-8 bytes and their count (so ("ab", "c") and ("a", "bc") differ).
    private static func hashBytes(_ s: String, into hasher: inout Hasher) {
        var s = s
        s.withUTF8 { bytes in
            hasher.combine(bytes.count)
            hasher.combine(bytes: UnsafeRawBufferPointer(bytes))
        }
    }
}

/// What `lead_conversion` reads of a `leads` record. A lead counts for the node fulfilling
/// it (`fulfilling_node`, else `source_node`) in the period of its `created_at`; it is won
/// when its `status` is `won` and `won_at` says when.
public struct LeadFacts: Sendable, Hashable {
    public var id: String
    public var node: String?
    public var createdAt: Int64?
    /// `source_channel`.
    public var channel: String?
    /// When it was won; nil unless `status` is `won`.
    public var wonAt: Int64?

    public init(id: String, node: String?, createdAt: Int64?, channel: String?, wonAt: Int64?) {
        self.id = id
        self.node = node
        self.createdAt = createdAt
        self.channel = channel
        self.wonAt = wonAt
    }

    public init(id: String, fields: [String: FieldValue]) {
        func text(_ name: String) -> String? {
            guard let s = fields[name]?.stringValue, !s.isEmpty else { return nil }
            return s
        }
        self.init(id: id, node: text(LeadField.fulfillingNode) ?? text(LeadField.sourceNode),
                  createdAt: text(LeadField.createdAt).flatMap(KPITime.millis), channel: text(LeadField.sourceChannel),
                  wonAt: text(LeadField.status) == "won" ? text(LeadField.wonAt).flatMap(KPITime.millis) : nil)
    }
}

/// The `interactions` fields KPIs read (a test checks each is a field of the schema).
public enum DialogueField {
    public static let customerID = "customer_id"
    public static let channel = "channel"
    public static let direction = "direction"
    public static let topic = "topic"
    public static let status = "status"
    public static let createdAt = "created_at"
    public static let answeredAt = "answered_at"
    public static let resolvedAt = "resolved_at"
    public static let abandonedAt = "abandoned_at"
    public static let slaDue = "sla_due"
    public static let originatingNode = "originating_node"
    public static let handlingNode = "handling_node"
    public static let allocatedNode = "allocated_node"

    public static let all = [customerID, channel, direction, topic, status, createdAt, answeredAt, resolvedAt, abandonedAt,
                             slaDue, originatingNode, handlingNode, allocatedNode]
}

/// The `leads` fields `lead_conversion` reads.
public enum LeadField {
    public static let sourceChannel = "source_channel"
    public static let sourceNode = "source_node"
    public static let fulfillingNode = "fulfilling_node"
    public static let status = "status"
    public static let createdAt = "created_at"
    public static let wonAt = "won_at"

    public static let all = [sourceChannel, sourceNode, fulfillingNode, status, createdAt, wonAt]
}

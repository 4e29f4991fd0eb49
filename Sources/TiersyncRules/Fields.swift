import TiersyncCore

/// The `interactions` fields the rules read or write, named once. The table itself is
/// ``TiersyncCore/DomainSchema/interactions``; a test checks every case is one of its fields.
public enum InteractionField: String, CaseIterable, Sendable {
    case customerID = "customer_id"
    case channel
    case direction
    case topic
    case knowledgeKind = "knowledge_kind"
    case urgency
    case status
    case handlingLevel = "handling_level"
    case queue
    case priority
    case createdAt = "created_at"
    case slaDue = "sla_due"
    case originatingNode = "originating_node"
    case handlingNode = "handling_node"
    /// The allocation rule that decided (absent: no decision was taken).
    case decisionRule = "decision_rule"
    /// The release version whose rules decided.
    case decisionRelease = "decision_release"
    /// The country overlay applied on top of that release (`de#2`), if any.
    case decisionOverlay = "decision_overlay"
    /// The node that decided: the one the interaction was created at.
    case decidedBy = "decided_by"
    case decidedAt = "decided_at"
    /// Answered, resolved or abandoned by the customer: an escalation never falls due for it (``Escalator``).
    case answeredAt = "answered_at"
    case resolvedAt = "resolved_at"
    case abandonedAt = "abandoned_at"
    /// How many times it escalated, and when its newest escalation fell due.
    case escalationStep = "escalation_step"
    case escalatedAt = "escalated_at"
    /// The node that handled it before its first escalation (written by that escalation):
    /// the KPIs count the dialogue for it, so a missed SLA stays with the node that missed it.
    case allocatedNode = "allocated_node"

    /// What a decision sets when the writer left it out (the writer's values win).
    public static let allocated: [InteractionField] = [.handlingLevel, .queue, .priority, .slaDue, .handlingNode]
    /// What every decision records, whatever the writer gave: the audit of who decided what.
    public static let decisionRecord: [InteractionField] = [.decisionRule, .decisionRelease, .decisionOverlay, .decidedBy, .decidedAt]
}

/// The `customers` fields allocation conditions read.
public enum CustomerField: String, CaseIterable, Sendable {
    case keyAccount = "key_account"
    /// The customer's current value segment (`A`…`D`), what `when.segment` tests.
    case segment = "segment_value"
    /// The selling dealer: where a dialogue allocated to the dealer level goes when it was
    /// created above that level (HQ's hotline, a country centre).
    case owningDealer = "owning_dealer"
}

/// An interaction's direction. Allocation rules are for inbound dialogues (docs/GOVERNANCE.md:
/// "a new inbound dialogue"); a contact the node makes itself is not allocated.
public enum InteractionDirection: String, Sendable {
    case inbound, outbound
}

extension [String: FieldValue] {
    subscript(_ field: InteractionField) -> FieldValue? { self[field.rawValue] }
    subscript(_ field: CustomerField) -> FieldValue? { self[field.rawValue] }
}

/// The schema Tiersync ships: the customer-contact domain of multi-level sales
/// (see PRODUCT.md). Every table is plain data for the generic engine.
public enum DomainSchema {
    public static let customers = TableSchema(
        name: "customers",
        summary: "A person or company; routed to its selling and its servicing dealer",
        fields: [
            FieldSchema("kind", .oneOf(["person", "company"])),
            FieldSchema("first_name", .string(maxLength: 200)),
            FieldSchema("last_name", .string(maxLength: 200)),
            FieldSchema("company_name", .string(maxLength: 300)),
            FieldSchema("household_id", .string(maxLength: 128)),
            FieldSchema("email", .string(maxLength: 320)),
            FieldSchema("phone", .string(maxLength: 64)),
            FieldSchema("mobile", .string(maxLength: 64)),
            FieldSchema("street", .string(maxLength: 300)),
            FieldSchema("postal_code", .string(maxLength: 32)),
            FieldSchema("city", .string(maxLength: 200)),
            FieldSchema("country", .string(maxLength: 2), "ISO 3166 alpha-2"),
            FieldSchema("segment_value", .oneOf(["A", "B", "C", "D"]), "current value segment"),
            FieldSchema("segment_potential", .oneOf(["high", "medium", "low"])),
            FieldSchema("key_account", .bool),
            FieldSchema("consent_marketing_phone", .bool),
            FieldSchema("consent_marketing_email", .bool),
            FieldSchema("consent_marketing_sms", .bool),
            FieldSchema("consent_service_phone", .bool),
            FieldSchema("consent_service_email", .bool),
            // Consent per purpose and channel (``Consent``): each field has its own version;
            // `tiersync consent set` records the change with its history (`consent_events`).
            FieldSchema("consent_marketing_post", .bool),
            FieldSchema("consent_service_sms", .bool),
            FieldSchema("consent_service_post", .bool),
            FieldSchema("owning_dealer", .node, "the selling dealer"),
            FieldSchema("servicing_dealer", .node, "the dealer servicing the customer, if another"),
        ],
        routeFields: ["owning_dealer", "servicing_dealer"])

    public static let vehicles = TableSchema(
        name: "vehicles",
        summary: "A vehicle, or an insurance contract, held by a customer",
        fields: [
            FieldSchema("kind", .oneOf(["vehicle", "contract"])),
            FieldSchema("vin", .string(maxLength: 17)),
            FieldSchema("policy_number", .string(maxLength: 64)),
            FieldSchema("customer_id", .string(maxLength: 128)),
            FieldSchema("model", .string(maxLength: 200)),
            FieldSchema("sale_date", .date),
            FieldSchema("contract_end_date", .date),
            FieldSchema("owning_dealer", .node),
        ],
        routeFields: ["owning_dealer"])

    public static let interactions = TableSchema(
        name: "interactions",
        summary: "A customer contact; routed to the node it came from, the node handling it and, once escalated, the node it was allocated to",
        fields: [
            FieldSchema("customer_id", .string(maxLength: 128)),
            FieldSchema("channel", .oneOf(["phone", "email", "web", "chat", "visit", "fax", "sms", "post"])),
            FieldSchema("direction", .oneOf(["inbound", "outbound"])),
            FieldSchema("purpose", .oneOf(Consent.Purpose.allCases.map(\.rawValue)),
                        "for an outbound contact: marketing or service; the customer's consent for it and the channel is checked when it is written (docs/PRIVACY.md)"),
            FieldSchema("topic", .string(maxLength: 200)),
            FieldSchema("knowledge_kind", .oneOf(["scheme", "specification"]),
                        "scheme: general product questions (can be centralised); specification: a concrete car or offer"),
            FieldSchema("urgency", .oneOf(["low", "normal", "high", "critical"])),
            FieldSchema("status", .oneOf(["new", "open", "answered", "resolved", "closed"])),
            // Any of the tenant's governance levels (`governance.levels`: hq, country, dealer;
            // an insurer's agent), or expert_pool: a closed list refused the insurer's level.
            FieldSchema("handling_level", .string(maxLength: 64),
                        "a level of the tenant's governance (hq, country, dealer, agent, …) or expert_pool"),
            FieldSchema("queue", .string(maxLength: 100)),
            FieldSchema("priority", .int, "1 (highest) … 5, from the allocation rule", range: 1...5),
            FieldSchema("owner", .string(maxLength: 200), "the person handling it"),
            FieldSchema("summary", .string(maxLength: 4000)),
            FieldSchema("created_at", .timestamp),
            FieldSchema("answered_at", .timestamp),
            FieldSchema("resolved_at", .timestamp),
            FieldSchema("abandoned_at", .timestamp, "when the customer gave up before any answer (hung up, left the chat); counts as abandoned (KPIs)"),
            FieldSchema("sla_due", .timestamp),
            FieldSchema("originating_node", .node),
            FieldSchema("handling_node", .node),
            // The allocation decision, recorded where the interaction was created and
            // replicated like any field (docs/GOVERNANCE.md, "Allocation at the node").
            FieldSchema("decision_rule", .string(maxLength: 64), "the allocation rule that decided; absent: no decision (no release in force, or outbound)"),
            FieldSchema("decision_release", .int, "the release version whose rules decided"),
            FieldSchema("decision_overlay", .string(maxLength: 100), "the country overlay applied on top (country#sequence), if any"),
            FieldSchema("decided_by", .node, "the node that decided (where the interaction was created)"),
            FieldSchema("decided_at", .timestamp),
            // Escalation (docs/GOVERNANCE.md, "Escalation at every holder"): written with each
            // step, with the same values by whichever node escalates.
            FieldSchema("escalation_step", .int, "how many times it escalated (absent or 0: never); the step of its newest escalations entry"),
            FieldSchema("escalated_at", .timestamp, "when its newest escalation fell due: since then it is at its current level"),
            FieldSchema("allocated_node", .node,
                        "the node that handled it before its first escalation, written by that escalation; its KPIs count the dialogue, and it keeps receiving it"),
        ],
        routeFields: ["originating_node", "handling_node", "allocated_node"])

    public static let leads = TableSchema(
        name: "leads",
        summary: "A sales lead; keeps source and fulfilling node so value can be attributed",
        fields: [
            FieldSchema("customer_id", .string(maxLength: 128)),
            FieldSchema("source_channel", .oneOf(["phone", "email", "web", "chat", "visit", "fax", "event", "campaign"])),
            FieldSchema("source_node", .node),
            FieldSchema("fulfilling_node", .node),
            FieldSchema("value", .double),
            FieldSchema("currency", .string(maxLength: 3)),
            FieldSchema("status", .oneOf(["new", "contacted", "qualified", "won", "lost"])),
            FieldSchema("created_at", .timestamp),
            FieldSchema("won_at", .timestamp, "when the lead was won (with status won); lead_conversion counts it"),
        ],
        routeFields: ["source_node", "fulfilling_node"])

    public static let tasks = TableSchema(
        name: "tasks",
        summary: "A proactive contact created by a rule, only where consent allows; routed to the node that makes it and the vehicle's dealer",
        fields: [
            FieldSchema("customer_id", .string(maxLength: 128)),
            FieldSchema("kind", .string(maxLength: 100), "proactive: created by a proactive rule (docs/GOVERNANCE.md, \"Proactive contacts\")"),
            FieldSchema("rule_id", .string(maxLength: 100)),
            FieldSchema("channel", .oneOf(["phone", "email", "web", "chat", "visit", "fax", "sms", "post"])),
            FieldSchema("due_at", .timestamp),
            FieldSchema("status", .oneOf(["open", "done", "cancelled"])),
            FieldSchema("assigned_node", .node, "the node of the rule's level that makes the contact"),
            FieldSchema("vehicle_id", .string(maxLength: 128), "the vehicle or contract whose sale or end triggered it"),
            FieldSchema("owning_dealer", .node, "the vehicle's dealer, which sees the task whoever makes the contact"),
            FieldSchema("level", .string(maxLength: 64), "the rule's level"),
            FieldSchema("queue", .string(maxLength: 100)),
            FieldSchema("priority", .int, "1 (highest) … 5, from the rule", range: 1...5),
            FieldSchema("requires_consent", .oneOf(Consent.fieldSuffixes),
                        "the customer's consent the contact needs (customers.consent_<value>)"),
            FieldSchema("release", .int, "the release whose rule created it"),
            FieldSchema("overlay", .string(maxLength: 100), "the country overlay applied on top of that release (country#sequence), if any"),
            FieldSchema("planned_from", .string(maxLength: 200),
                        "the version (hlc@node) of the vehicle's event date the task was planned from: of two open tasks of one rule and vehicle under the same governance, the newer date's stays"),
            FieldSchema("cancel_reason", .string(maxLength: 500)),
            FieldSchema("cancelled_at", .timestamp, "for a withdrawn consent: when the customer withdrew it"),
        ],
        routeFields: ["assigned_node", "owning_dealer"])

    /// One escalation step of an interaction, with an id derived from the interaction and the
    /// step, so every node that finds the step due writes the same record
    /// (docs/GOVERNANCE.md, "Escalation at every holder").
    public static let escalations = TableSchema(
        name: "escalations",
        summary: "One escalation step of an interaction (SLA breached, or unanswered too long); one record per interaction and step",
        fields: [
            FieldSchema("interaction_id", .string(maxLength: 128)),
            FieldSchema("step", .int, "1 for the first escalation of the interaction, 2 for the next, …"),
            FieldSchema("rule", .string(maxLength: 64), "the escalation rule that fired"),
            FieldSchema("condition", .string(maxLength: 100), "the rule's condition that was met: sla_breached_by <duration> or unanswered_for <duration>"),
            FieldSchema("due_at", .timestamp, "when the condition was met: the time of the escalation"),
            FieldSchema("from_level", .string(maxLength: 64)),
            FieldSchema("from_queue", .string(maxLength: 100)),
            FieldSchema("from_node", .node),
            FieldSchema("from_since", .timestamp, "since when the interaction was at from_level (created, or escalated there)"),
            FieldSchema("to_level", .string(maxLength: 64)),
            FieldSchema("to_queue", .string(maxLength: 100)),
            FieldSchema("to_node", .node, "the node handling it from then on"),
            FieldSchema("notify", .string(maxLength: 1000), "the roles to notify, comma-separated"),
            FieldSchema("release", .int, "the release whose rule fired"),
            FieldSchema("originating_node", .node, "where the interaction was created"),
            FieldSchema("allocated_node", .node,
                        "the node that handled the interaction before its first escalation: routes every step there, as the interaction stays routed there"),
            FieldSchema("status", .oneOf(["escalated", "withdrawn"]),
                        "withdrawn: the interaction turned out answered or resolved before the escalation was due"),
            FieldSchema("withdrawn_reason", .string(maxLength: 500)),
        ],
        routeFields: ["to_node", "from_node", "originating_node", "allocated_node"])

    public static let governanceStatus = TableSchema(
        name: "governance_status",
        summary: "Which governance release and overlay a node applied; one record per node, written by that node",
        fields: [
            FieldSchema("node", .node),
            FieldSchema("release", .int),
            FieldSchema("overlay", .string(maxLength: 100), "country#sequence of the overlay applied, if any"),
            FieldSchema("rollout", .int, "the rollout sequence the decision followed"),
            FieldSchema("state", .oneOf(["applied", "pending", "refused"])),
            FieldSchema("message", .string(maxLength: 4000), "what was refused or is pending, and why"),
            FieldSchema("applied_at", .timestamp),
        ],
        routeFields: ["node"])

    /// KPI values a node computed for itself (docs/GOVERNANCE.md, "KPIs"): one record per
    /// (KPI, node, period), written by that node from its accumulators and routed to it, so
    /// it syncs upward and HQ and the country add them up.
    public static let kpiSnapshots = TableSchema(
        name: "kpi_snapshots",
        summary: "A node's value of one KPI for one period, against its target; one record per (KPI, node, period), written by that node",
        fields: [
            FieldSchema("node", .node, "the node the values are of (the dialogues and leads it handles)"),
            FieldSchema("path", .string(maxLength: 1000), "the node's path from the root (hq/de/de-berlin), for roll-ups"),
            FieldSchema("kpi", .string(maxLength: 64)),
            FieldSchema("name", .string(maxLength: 200)),
            FieldSchema("unit", .oneOf(["percent", "seconds"])),
            FieldSchema("period", .oneOf(["day", "week", "month"])),
            FieldSchema("period_start", .date, "first day of the period (UTC; weeks start on Monday)"),
            FieldSchema("numerator", .int, "a count, or milliseconds for a seconds KPI"),
            FieldSchema("denominator", .int),
            FieldSchema("value", .double, "100 × numerator / denominator (percent) or numerator / denominator / 1000 (seconds)"),
            FieldSchema("target_kind", .oneOf(["at_least", "at_most"])),
            FieldSchema("target", .double, "the node's target: its release's, or its country's overlay's"),
            FieldSchema("met", .bool),
            FieldSchema("release", .int),
            FieldSchema("overlay", .string(maxLength: 100)),
            FieldSchema("computed_at", .timestamp),
        ],
        routeFields: ["node"])

    /// An erasure request (``Erasure``): no personal data, only what is erased, who asked and
    /// when. Routed to the node that asked; each store adds every node the subject's data was
    /// routed to there, so the marker reaches every replica holding any of it.
    public static let erasures = TableSchema(
        name: "erasures",
        summary: "A request to erase a customer and everything linked to it, on every replica (docs/PRIVACY.md)",
        fields: [
            FieldSchema("subject_table", .oneOf(Erasure.SubjectTable.allCases.map(\.rawValue))),
            FieldSchema("subject_id", .string(maxLength: 128)),
            FieldSchema("requested_by", .node, "the node where the erasure was requested"),
            FieldSchema("requested_at", .timestamp),
        ],
        routeFields: ["requested_by"])

    /// One replica's acknowledgement of an erasure: written by that node once the data is gone
    /// from its files, routed to it, so it syncs upward to HQ's ledger.
    public static let erasureAcks = TableSchema(
        name: "erasure_acks",
        summary: "A replica's proof that an erasure is done there; one record per (erasure, node), written by that node",
        fields: [
            FieldSchema("erasure_id", .string(maxLength: 128)),
            FieldSchema("node", .node),
            FieldSchema("acknowledged_at", .timestamp, "when the rows were gone and the write-ahead log truncated"),
            FieldSchema("records", .int, "records erased here"),
            FieldSchema("log_entries", .int, "change-log entries whose values were erased here"),
            FieldSchema("unsent_dropped", .int, "changes made here and not yet sent, dropped by the erasure"),
            FieldSchema("refused", .int, "changes of the erased records refused here since"),
            FieldSchema("digest", .string(maxLength: 64), "SHA-256 over the erased records' ids and what remains of each (nothing)"),
        ],
        routeFields: ["node"])

    /// One recorded consent decision of a customer (docs/PRIVACY.md): the history behind the
    /// customer's `consent_<purpose>_<channel>` field, written with it by `tiersync consent set`.
    public static let consentEvents = TableSchema(
        name: "consent_events",
        summary: "A customer's consent for one purpose and channel, given or withdrawn: who recorded it, when and from which source",
        fields: [
            FieldSchema("customer_id", .string(maxLength: 128)),
            FieldSchema("purpose", .oneOf(Consent.Purpose.allCases.map(\.rawValue))),
            FieldSchema("channel", .oneOf(Consent.Channel.allCases.map(\.rawValue))),
            FieldSchema("granted", .bool),
            FieldSchema("source", .oneOf(Consent.Source.allCases.map(\.rawValue)), "where the customer said so"),
            FieldSchema("recorded_by", .node, "the node where it was recorded"),
            FieldSchema("recorded_at", .timestamp),
            FieldSchema("owning_dealer", .node, "the customer's dealer when it was recorded, which sees its history"),
        ],
        routeFields: ["recorded_by", "owning_dealer"])

    public static let schema = Schema(tables: [customers, vehicles, interactions, leads, tasks, escalations, governanceStatus, kpiSnapshots,
                                               erasures, erasureAcks, consentEvents])
}

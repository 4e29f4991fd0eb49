/// The shape a governance field must have. The validator reads every section through
/// these descriptions, so each rule of the authoring format is stated once, here and in
/// ``GovernanceCompiler``'s section table.
indirect enum Shape: Sendable {
    /// Non-empty text of at most this many characters.
    case text(maxLength: Int)
    /// An identifier: lowercase letters, digits and '-', up to 64 characters.
    case identifier
    /// One of the tenant's level names (`governance.levels`).
    case level
    /// A ``GovernanceDuration``; `0s` only where zero means something (`sla_breached_by: 0s`:
    /// at the SLA). An SLA of `0s` would be due the moment a dialogue is created.
    case duration(allowsZero: Bool)
    case integer(ClosedRange<Int>)
    case number
    case boolean
    case choice([String])
    case list(Shape, nonEmpty: Bool)
    /// A single value or a list of them; compiled as a list.
    case oneOrMany(Shape)
    case record([FieldRule])
    /// An override bound: `shorten`, `rename`, `stricter`, or `{min:, max:}`.
    case bound
}

struct FieldRule: Sendable {
    let name: String
    let shape: Shape
    let required: Bool

    static func required(_ name: String, _ shape: Shape) -> FieldRule { FieldRule(name: name, shape: shape, required: true) }
    static func optional(_ name: String, _ shape: Shape) -> FieldRule { FieldRule(name: name, shape: shape, required: false) }
}

/// Vocabulary shared with the interactions schema (``TiersyncCore/DomainSchema``).
enum Vocabulary {
    static let channels = ["phone", "email", "web", "chat", "visit", "fax"]
    static let knowledge = ["scheme", "specification"]
    static let urgency = ["low", "normal", "high", "critical"]
    static let segments = ["A", "B", "C", "D"]
    static let consents = ["marketing_phone", "marketing_email", "marketing_sms", "service_phone", "service_email"]
    /// The channels of ``channels`` a customer can consent to (proactive contacts use only these).
    static let consentChannels = channels.filter { c in consents.contains { $0.hasSuffix("_" + c) } }
    static let kpiKinds = ["service_level", "average_speed_of_answer", "abandonment_rate", "average_handle_time",
                           "first_contact_resolution", "sla_compliance", "lead_conversion"]
    static let events = ["sale", "contract_end"]
    static let boundKeywords = ["shorten", "rename", "stricter"]
}

/// The authoring format, section by section. Each list section's items carry an `id`.
enum Sections {
    static let order = ["governance", "kpis", "roles", "queues", "allocation", "escalation", "proactive", "overrides"]

    static let governance: Shape = .record([
        .required("tenant", .text(maxLength: 64)), .required("title", .text(maxLength: 200)),
        .required("levels", .list(.identifier, nonEmpty: true)), .optional("description", .text(maxLength: 4000)),
    ])

    static let items: [String: [FieldRule]] = [
        "kpis": [
            .required("id", .identifier), .required("name", .text(maxLength: 200)),
            .optional("description", .text(maxLength: 4000)),
            .required("formula", .record([
                .required("kind", .choice(Vocabulary.kpiKinds)), .optional("channel", .choice(Vocabulary.channels)),
                .optional("answered_within", .duration(allowsZero: true)), .optional("within", .duration(allowsZero: true)),
            ])),
            .required("target", .record([.optional("at_least", .number), .optional("at_most", .number)])),
            .required("unit", .choice(["percent", "seconds"])),
            .optional("levels", .list(.level, nonEmpty: true)),
        ],
        "roles": [
            .required("id", .identifier), .required("level", .level), .required("title", .text(maxLength: 200)),
            .required("responsibilities", .list(.text(maxLength: 500), nonEmpty: true)),
            .optional("queues", .list(.identifier, nonEmpty: false)),
        ],
        "queues": [
            .required("id", .identifier), .required("level", .level), .required("name", .text(maxLength: 100)),
            .optional("expert_pool", .boolean), .optional("topics", .list(.text(maxLength: 100), nonEmpty: true)),
        ],
        "allocation": [
            .required("id", .identifier), .optional("description", .text(maxLength: 4000)),
            .required("when", .record([
                .optional("knowledge", .oneOrMany(.choice(Vocabulary.knowledge))),
                .optional("topic", .oneOrMany(.text(maxLength: 100))),
                .optional("urgency", .oneOrMany(.choice(Vocabulary.urgency))),
                .optional("channel", .oneOrMany(.choice(Vocabulary.channels))),
                .optional("key_account", .boolean),
                .optional("segment", .oneOrMany(.choice(Vocabulary.segments))),
            ])),
            .required("then", .record([
                .required("level", .level), .required("queue", .identifier),
                .required("priority", .integer(1...5)), .required("sla", .duration(allowsZero: false)),
            ])),
        ],
        "escalation": [
            .required("id", .identifier), .optional("description", .text(maxLength: 4000)),
            .required("when", .record([
                .required("level", .level), .optional("sla_breached_by", .duration(allowsZero: true)), .optional("unanswered_for", .duration(allowsZero: false)),
            ])),
            .required("then", .record([
                .required("level", .level), .required("queue", .identifier),
                .optional("notify", .list(.identifier, nonEmpty: true)),
            ])),
        ],
        "proactive": [
            .required("id", .identifier), .optional("description", .text(maxLength: 4000)),
            .required("trigger", .record([
                .required("event", .choice(Vocabulary.events)),
                .optional("days_after", .integer(0...365)), .optional("days_before", .integer(1...365)),
            ])),
            .required("level", .level), .required("queue", .identifier),
            .required("channel", .choice(Vocabulary.channels)),
            .required("requires_consent", .choice(Vocabulary.consents)),
            .required("priority", .integer(1...5)),
        ],
        "overrides": [.required("path", .text(maxLength: 300)), .required("bound", .bound)],
    ]

    /// The shape of the field at a concrete path of the compiled config
    /// (`proactive.handover-call.trigger.days_after`), nil when the path names no field of
    /// a list section's item. An override's range must stay inside it.
    static func shape(at path: String) -> Shape? {
        let parts = path.split(separator: ".").map(String.init)
        guard parts.count >= 3, var rules = items[parts[0]] else { return nil }
        var shape: Shape?
        for name in parts.dropFirst(2) {
            guard let rule = rules.first(where: { $0.name == name }) else { return nil }
            shape = rule.shape
            if case .record(let inner) = rule.shape { rules = inner } else { rules = [] }
        }
        return shape
    }
}

/// A customer's consent per purpose and channel, as plain values (docs/PRIVACY.md): the
/// customer fields holding it (`consent_<purpose>_<channel>`, each with its own version, so
/// two nodes recording different channels never conflict), the history record written with
/// each change (``DomainSchema/consentEvents``), and the check every outbound contact a
/// node writes passes: an open task, or an outbound dialogue with a purpose, for a channel
/// the customer has not consented to is refused.
public enum Consent {
    public enum Purpose: String, Sendable, CaseIterable { case marketing, service }
    public enum Channel: String, Sendable, CaseIterable { case phone, email, sms, post }
    /// Where the customer gave or withdrew it.
    public enum Source: String, Sendable, CaseIterable {
        case dealerVisit = "dealer_visit"
        case web, hotline, phone, email, letter, app
        case `import`
    }

    /// Every `purpose_channel` pair, as tasks name the consent they need (`requires_consent`).
    public static let fieldSuffixes: [String] = Purpose.allCases.flatMap { p in Channel.allCases.map { "\(p.rawValue)_\($0.rawValue)" } }

    /// Whether a customer can hold `field` (`consent_<purpose>_<channel>` for one of
    /// ``Channel``'s channels).
    public static func isGivable(_ field: String) -> Bool {
        field.hasPrefix("consent_") && fieldSuffixes.contains(String(field.dropFirst("consent_".count)))
    }

    /// The customer field holding consent for `purpose` by `channel`.
    public static func field(_ purpose: Purpose, _ channel: Channel) -> String { "consent_\(purpose.rawValue)_\(channel.rawValue)" }

    /// Whether the customer's values give the consent (`true` only: absent or null is none).
    public static func isGiven(_ field: String, customer: [String: FieldValue]?) -> Bool {
        customer?[field] == .bool(true)
    }

    /// The consent field an outbound contact of `table` needs, its fields read through `value`
    /// (a write's fields over its record as held, without merging them into a dictionary
    /// first: that cost every inbound dialogue about 8 % of its commit), or nil when
    /// it needs none: an open task naming the consent it requires; an outbound dialogue with a
    /// purpose. (A dialogue without a purpose answers one the customer started.) By phone,
    /// e-mail, SMS or post that is the customer's field for it; by any other channel (fax,
    /// chat, web, visit) a field no customer holds (``isGivable(_:)``): consent to be
    /// contacted there cannot be recorded, so such a contact is never made.
    public static func requiredField(table: String, value: (String) -> FieldValue?) -> String? {
        switch table {
        case DomainSchema.tasks.name:
            guard value("status")?.stringValue ?? "open" == "open",
                  let needed = value("requires_consent")?.stringValue, fieldSuffixes.contains(needed) else { return nil }
            // The contact is made by the task's channel: a task naming another channel than
            // its consent's needs the purpose's consent by that channel (by fax or chat, one
            // no customer can give).
            if let channel = value("channel")?.stringValue, !needed.hasSuffix("_" + channel),
               let purpose = needed.split(separator: "_").first {
                return "consent_\(purpose)_\(channel)"
            }
            return "consent_" + needed
        case DomainSchema.interactions.name:
            guard value("direction")?.stringValue == "outbound",
                  let purpose = value("purpose")?.stringValue.flatMap(Purpose.init(rawValue:)) else { return nil }
            // No channel named: none the customer could have consented to.
            return "consent_\(purpose.rawValue)_\(value("channel")?.stringValue ?? "unnamed")"
        default:
            return nil
        }
    }
}

import Foundation
import TiersyncCore
import TiersyncGovernance

/// A small dataset of dialogues and leads whose KPI values under the automaker release
/// (`fixtures/governance/automaker/kpis.yaml`) are worked out by hand below. Used by the
/// pure KPI tests and by the three-tier test (each record written at the node in `at`).
///
/// Tree: hq → de → {de-1, de-2}, hq → fr → {fr-1}. Days: 2026-11-02 is a Monday (day
/// 20759), 2026-11-03 the Tuesday after, 2026-11-10 the Tuesday of the next week.
/// Every interaction names `handling_node` and `sla_due` (null where it has none), so a
/// node's allocation, which fills only what the writer left out, changes neither.
public enum KPIFixture {
    public struct Record: Sendable {
        public var table: String
        public var id: String
        /// The node that writes it.
        public var at: NodeID
        public var fields: [String: FieldValue]
    }

    static func dialogue(_ id: String, at node: NodeID, handledBy handler: NodeID? = nil, channel: String, direction: String = "inbound",
                         created: String, answered: String? = nil, resolved: String? = nil, status: String? = nil,
                         sla: String? = nil, customer: String? = nil, topic: String? = nil) -> Record {
        var f: [String: FieldValue] = [
            "channel": .string(channel), "direction": .string(direction), "created_at": .string(created),
            "handling_node": .string((handler ?? node).rawValue), "sla_due": sla.map(FieldValue.string) ?? .null,
            "status": .string(status ?? (resolved != nil ? "resolved" : answered != nil ? "answered" : "open")),
            "urgency": "normal", "knowledge_kind": "specification",
        ]
        if let answered { f["answered_at"] = .string(answered) }
        if let resolved { f["resolved_at"] = .string(resolved) }
        if let customer { f["customer_id"] = .string(customer) }
        if let topic { f["topic"] = .string(topic) }
        return Record(table: "interactions", id: id, at: node, fields: f)
    }

    static func lead(_ id: String, at node: NodeID, channel: String, created: String, won: String? = nil, status: String) -> Record {
        var f: [String: FieldValue] = ["source_channel": .string(channel), "created_at": .string(created), "status": .string(status),
                                       "fulfilling_node": .string(node.rawValue)]
        if let won { f["won_at"] = .string(won) }
        return Record(table: "leads", id: id, at: node, fields: f)
    }

    public static let records: [Record] = [
        // de-1, phone, inbound, 2026-11-02
        dialogue("p1", at: "de-1", channel: "phone", created: "2026-11-02T09:00:00Z", answered: "2026-11-02T09:00:10Z",
                 resolved: "2026-11-02T09:05:10Z", sla: "2026-11-02T09:30:00Z", customer: "c1", topic: "warranty"),
        dialogue("p2", at: "de-1", channel: "phone", created: "2026-11-02T10:00:00Z", answered: "2026-11-02T10:00:30Z",
                 resolved: "2026-11-02T10:10:30Z", sla: "2026-11-02T10:00:20Z", customer: "c2", topic: "service"),
        dialogue("p3", at: "de-1", channel: "phone", created: "2026-11-02T11:00:00Z", status: "closed", customer: "c3", topic: "service"),
        dialogue("p4", at: "de-1", channel: "phone", created: "2026-11-02T12:00:00Z", answered: "2026-11-02T12:00:20Z",
                 customer: "c1", topic: "warranty"),
        // Created at de-1, handled by the country de (allocated up).
        dialogue("p5", at: "de-1", handledBy: "de", channel: "phone", created: "2026-11-02T13:00:00Z", answered: "2026-11-02T13:00:50Z"),
        // de-1, e-mail, inbound; e2 the next day, same customer and topic as e1.
        dialogue("e1", at: "de-1", channel: "email", created: "2026-11-02T08:00:00Z", answered: "2026-11-02T15:00:00Z",
                 resolved: "2026-11-02T15:30:00Z", sla: "2026-11-02T12:00:00Z", customer: "c4", topic: "brochure"),
        dialogue("e2", at: "de-1", channel: "email", created: "2026-11-03T08:00:00Z", answered: "2026-11-03T17:00:00Z",
                 resolved: "2026-11-03T17:10:00Z", customer: "c4", topic: "brochure"),
        // de-1, an outbound call: handle time and first-contact resolution only.
        dialogue("o1", at: "de-1", channel: "phone", direction: "outbound", created: "2026-11-02T14:00:00Z",
                 answered: "2026-11-02T14:00:00Z", resolved: "2026-11-02T14:03:20Z"),
        // de-2, chat.
        dialogue("c1", at: "de-2", channel: "chat", created: "2026-11-02T09:00:00Z", answered: "2026-11-02T09:00:45Z",
                 resolved: "2026-11-02T09:10:45Z", customer: "c5", topic: "x"),
        // fr-1, phone.
        dialogue("f1", at: "fr-1", channel: "phone", created: "2026-11-02T09:00:00Z", answered: "2026-11-02T09:00:05Z",
                 resolved: "2026-11-02T09:04:05Z", customer: "c9", topic: "t"),
        // de-1's leads.
        lead("l1", at: "de-1", channel: "web", created: "2026-11-02T10:00:00Z", won: "2026-12-01T10:00:00Z", status: "won"),
        lead("l2", at: "de-1", channel: "phone", created: "2026-11-02T11:00:00Z", status: "lost"),
        lead("l3", at: "de-1", channel: "web", created: "2026-11-10T10:00:00Z", won: "2027-03-01T10:00:00Z", status: "won"),
    ]

    /// Expected (numerator, denominator) per KPI and node for the month of November 2026
    /// (every record is created in it), worked out by hand. Milliseconds for seconds KPIs.
    ///
    /// service-level-phone (inbound phone answered within 20 s):
    ///   de-1: p1 10 s ✓, p2 30 s ✗, p3 unanswered ✗, p4 20 s ✓ (≤ 20 s counts) → 2/4 = 50 %
    ///   de:   p5 50 s ✗ → 0/1 = 0 %;  fr-1: f1 5 s ✓ → 1/1 = 100 %
    ///   subtree de = (2 + 0)/(4 + 1) = 2/5 = 40 % (the mean of 50 % and 0 % would say 25 %)
    ///   tenant = (2 + 0 + 1)/(4 + 1 + 1) = 3/6 = 50 %
    /// service-level-chat (inbound chat within 60 s): de-2: c1 45 s ✓ → 1/1 = 100 %
    /// service-level-email (inbound e-mail within 8 h):
    ///   de-1: e1 7 h ✓, e2 9 h ✗ → 1/2 = 50 % (day 2026-11-02: 1/1, day 2026-11-03: 0/1)
    /// average-speed-of-answer-phone (answered inbound phone, seconds to answer):
    ///   de-1: p1 10 + p2 30 + p4 20 = 60 s over 3 → 20 s;  de: 50 s over 1;  fr-1: 5 s over 1
    ///   subtree de = (60 + 50)/(3 + 1) = 27.5 s (the mean of 20 s and 50 s would say 35 s)
    /// abandonment-rate-phone (inbound phone closed unanswered):
    ///   de-1: p3 → 1/4 = 25 %;  de: 0/1;  fr-1: 0/1;  subtree de = 1/5 = 20 %
    /// average-handle-time (answered and resolved, all channels and directions, answer → resolution):
    ///   de-1: p1 300 + p2 600 + e1 1,800 + e2 600 + o1 200 = 3,500 s over 5 → 700 s
    ///   de-2: c1 600 s over 1;  fr-1: f1 240 s over 1
    ///   subtree de = (3,500 + 600)/(5 + 1) = 683.33 s (the mean of 700 s and 600 s would say 650 s)
    ///   tenant = (3,500 + 600 + 240)/7 = 620 s
    /// first-contact-resolution (resolved, no further dialogue of the customer and topic within 7 days of the resolution):
    ///   de-1: p1 ✗ (p4, c1/warranty, the same day), p2 ✓, e1 ✗ (e2, c4/brochure, next morning), e2 ✓, o1 ✓ (no customer) → 3/5 = 60 %
    ///   de-2: c1 ✓ → 1/1;  fr-1: f1 ✓ → 1/1;  subtree de = 4/6 = 66.67 %
    /// sla-compliance (dialogues with an SLA, answered before it is due):
    ///   de-1: p1 ✓ (09:00:10 < 09:30), p2 ✗ (10:00:30 > 10:00:20), e1 ✗ (15:00 > 12:00) → 1/3 = 33.33 %
    /// lead-conversion (won within 90 days): de-1: l1 29 days ✓, l2 lost ✗, l3 111 days ✗ → 1/3 = 33.33 %
    /// lead-conversion-web (web leads won within 60 days): de-1: l1 ✓, l3 ✗ → 1/2 = 50 %
    public static let expectedNovember: [String: [String: (Int64, Int64)]] = [
        "service-level-phone": ["de-1": (2, 4), "de": (0, 1), "fr-1": (1, 1)],
        "service-level-chat": ["de-2": (1, 1)],
        "service-level-email": ["de-1": (1, 2)],
        "average-speed-of-answer-phone": ["de-1": (60_000, 3), "de": (50_000, 1), "fr-1": (5_000, 1)],
        "abandonment-rate-phone": ["de-1": (1, 4), "de": (0, 1), "fr-1": (0, 1)],
        "average-handle-time": ["de-1": (3_500_000, 5), "de-2": (600_000, 1), "fr-1": (240_000, 1)],
        "first-contact-resolution": ["de-1": (3, 5), "de-2": (1, 1), "fr-1": (1, 1)],
        "sla-compliance": ["de-1": (1, 3)],
        "lead-conversion": ["de-1": (1, 3)],
        "lead-conversion-web": ["de-1": (1, 2)],
    ]

    /// The compiled config of a governance fixture (`automaker`, `insurer`) as JSON: what a
    /// release carries and a node keeps as its effective configuration.
    public static func effectiveConfigJSON(_ fixture: String = "automaker") throws -> String {
        let compiled = try GovernanceCompiler.compile(directory: repositoryRoot() + "/fixtures/governance/" + fixture)
        return String(decoding: try JSONEncoder().encode(compiled.config), as: UTF8.self)
    }

    /// Each node's path from the root.
    public static let paths: [String: [String]] = [
        "hq": ["hq"], "de": ["hq", "de"], "fr": ["hq", "fr"],
        "de-1": ["hq", "de", "de-1"], "de-2": ["hq", "de", "de-2"], "fr-1": ["hq", "fr", "fr-1"],
    ]
}

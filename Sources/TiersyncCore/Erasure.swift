/// Erasure of a customer and everything linked to it (GDPR Art. 17), as plain values: which
/// tables hold the marker and the acknowledgements, which records an erasure reaches, and the
/// ids of the records it writes. The store does the erasing (`NodeStore+Erasure`); this
/// says what to erase, so every engine and every node erase alike.
///
/// An erasure request is a record of ``DomainSchema/erasures``: it carries no personal data
/// (the subject's table and id, who asked, when), replicates like any record and is routed,
/// at each store, to every node the subject's data was ever routed to there, so it reaches
/// every replica holding any of it. Each replica erases in the transaction that applies the
/// marker and, once the bytes are gone from its files, writes an ``DomainSchema/erasureAcks``
/// record of its own, which syncs upward to HQ's ledger.
public enum Erasure {
    /// The tables the subject of an erasure may be in.
    public enum SubjectTable: String, Sendable, CaseIterable {
        case customers
    }

    /// A table whose records are erased with the records they point to: `field` of a record
    /// of `table` holds the id of a record of `parent`.
    public struct Link: Sendable, Hashable {
        public let table: String
        public let field: String
        public let parent: String
    }

    /// Everything linked to a customer: its vehicles and contracts, dialogues, leads and
    /// tasks, and the escalations of its dialogues (each erased with what it points to).
    public static let links: [Link] = [
        Link(table: DomainSchema.vehicles.name, field: "customer_id", parent: DomainSchema.customers.name),
        Link(table: DomainSchema.interactions.name, field: "customer_id", parent: DomainSchema.customers.name),
        Link(table: DomainSchema.leads.name, field: "customer_id", parent: DomainSchema.customers.name),
        Link(table: DomainSchema.tasks.name, field: "customer_id", parent: DomainSchema.customers.name),
        Link(table: DomainSchema.consentEvents.name, field: "customer_id", parent: DomainSchema.customers.name),
        Link(table: DomainSchema.tasks.name, field: "vehicle_id", parent: DomainSchema.vehicles.name),
        Link(table: DomainSchema.escalations.name, field: "interaction_id", parent: DomainSchema.interactions.name),
    ]

    /// The links pointing at records of `table`.
    public static func links(to table: String) -> [Link] { links.filter { $0.parent == table } }

    /// The link fields of `table` (a change setting one to an erased record's id would bring
    /// data back, and is refused).
    public static func linkFields(of table: String) -> [Link] { links.filter { $0.table == table } }

    /// The fields of a marker.
    public enum MarkerField: String, Sendable, CaseIterable {
        case subjectTable = "subject_table"
        case subjectID = "subject_id"
        case requestedBy = "requested_by"
        case requestedAt = "requested_at"
    }

    /// The fields of an acknowledgement.
    public enum AckField: String, Sendable, CaseIterable {
        case erasureID = "erasure_id"
        case node
        case acknowledgedAt = "acknowledged_at"
        case records
        case logEntries = "log_entries"
        case unsentDropped = "unsent_dropped"
        case refused
        case digest
    }

    /// The id of `node`'s acknowledgement of erasure `erasureID`: one per replica and request.
    public static func ackID(erasure erasureID: String, node: NodeID) -> String { "\(erasureID)@\(node.rawValue)" }

    /// The marker's fields for erasing `subject` of `table`, asked for by `node` at `at`.
    public static func markerFields(table: SubjectTable, id: String, requestedBy node: NodeID, at timestamp: String) -> [String: FieldValue] {
        [MarkerField.subjectTable.rawValue: .string(table.rawValue), MarkerField.subjectID.rawValue: .string(id),
         MarkerField.requestedBy.rawValue: .string(node.rawValue), MarkerField.requestedAt.rawValue: .string(timestamp)]
    }

    /// The fields naming a marker's subject.
    public static let subjectFields = [MarkerField.subjectTable.rawValue, MarkerField.subjectID.rawValue]

    /// A marker's subject, from its values (nil for a value no marker holds).
    public static func subject(of values: [String: FieldValue]) -> (table: SubjectTable, id: String)? {
        guard let t = values[MarkerField.subjectTable.rawValue]?.stringValue, let table = SubjectTable(rawValue: t),
              let id = values[MarkerField.subjectID.rawValue]?.stringValue, !id.isEmpty else { return nil }
        return (table, id)
    }
}

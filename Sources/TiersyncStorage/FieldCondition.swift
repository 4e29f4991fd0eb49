import TiersyncCore

/// A condition on a field of a domain table, for reading only the records a periodic job
/// looks at (open dialogues, vehicles sold on some days) instead of a whole table. Each
/// engine translates it into its own query (``RulesStore/rulesLiveRecords(table:where:)``).
public enum FieldCondition: Sendable, Hashable {
    case isNull(String)
    case isNotNull(String)
    case equals(String, FieldValue)
    /// The field is one of the values (none: no record).
    case isIn(String, [FieldValue])
    /// The field is null or none of the values.
    case isNullOrNotIn(String, [FieldValue])
    /// Inclusive, as SQLite compares (dates `YYYY-MM-DD` compare as text in calendar order).
    case between(String, FieldValue, FieldValue)
    /// At least one of the fields is set.
    case anyNotNull([String])

    /// The fields the condition reads.
    public var fields: [String] {
        switch self {
        case .isNull(let f), .isNotNull(let f), .equals(let f, _), .isIn(let f, _), .isNullOrNotIn(let f, _), .between(let f, _, _): [f]
        case .anyNotNull(let fs): fs
        }
    }
}

import Foundation

/// The type of a replicated field, checked on every change a node accepts.
public enum FieldType: Sendable, Hashable, Codable {
    case string(maxLength: Int)
    case int
    case double
    case bool
    /// An ISO 8601 date-time string, e.g. `2026-11-22T10:15:00Z`, from 1970-01-01T00:00:00Z
    /// up to the end of year 9999 (``CommonTimestamp/validMillis``).
    case timestamp
    /// An ISO 8601 calendar date, e.g. `2026-11-22`.
    case date
    /// One of a fixed set of strings.
    case oneOf([String])
    /// A node identifier: fields of this type can route records (see ``TableSchema/routeFields``).
    case node

    public var sqlType: String {
        switch self {
        case .int, .bool: "INTEGER"
        case .double: "REAL"
        default: "TEXT"
        }
    }

    public var displayName: String {
        switch self {
        case .string(let n): "string (at most \(n) characters)"
        case .int: "integer"
        case .double: "number"
        case .bool: "boolean"
        case .timestamp: "ISO 8601 timestamp (1970–9999)"
        case .date: "ISO 8601 date (YYYY-MM-DD)"
        case .oneOf(let options): "one of \(options.joined(separator: ", "))"
        case .node: "node identifier"
        }
    }

    /// Returns the value in its canonical type (an integer written to a number field
    /// becomes a number), or nil when it does not fit. Null fits every type.
    public func coerce(_ value: FieldValue) -> FieldValue? {
        switch (self, value) {
        case (_, .null): return .null
        case (.string(let max), .string(let s)):
            // Characters ≤ UTF-8 bytes: counting characters (grapheme breaking) only when the bytes exceed the limit.
            return (s.utf8.count <= max || s.count <= max) && !s.utf8.contains(0) ? value : nil
        case (.int, .int): return value
        case (.double, .double): return value.isFiniteNumber ? value : nil
        case (.double, .int(let i)): return .double(Double(i))
        case (.bool, .bool): return value
        case (.timestamp, .string(let s)): return FieldType.isTimestamp(s) ? value : nil
        case (.date, .string(let s)): return FieldType.isDate(s) ? value : nil
        case (.oneOf(let options), .string(let s)): return options.contains(s) ? value : nil
        case (.node, .string(let s)): return NodeID.isValid(s) ? value : nil
        default: return nil
        }
    }

    static func isTimestamp(_ s: String) -> Bool {
        // The form every writer of ours produces is checked byte by byte: building the
        // formatter below costs more than the rest of a change's validation. Anything else
        // goes to the formatter, as always. Either way only a time of
        // ``CommonTimestamp/validMillis`` is one: the formatter also reads year 1 and year
        // 10000, and a dialogue dated year 1 made every KPI snapshot of its node unwritable.
        if let millis = s.utf8.withContiguousStorageIfAvailable(CommonTimestamp.millis(utf8:)) ?? nil {
            return CommonTimestamp.validMillis.contains(millis)
        }
        guard CommonTimestamp.hasInternetDateTimeShape(s), CommonTimestamp.fieldsInRange(s) else { return false }
        let f = ISO8601DateFormatter()
        var date = f.date(from: s)
        if date == nil {
            f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            date = f.date(from: s)
        }
        guard let seconds = date?.timeIntervalSince1970 else { return false }
        return seconds >= 0 && seconds * 1_000 < Double(CommonTimestamp.validMillis.upperBound)
    }

    /// True for ``CommonTimestamp``'s form in the years 1000–9999: a part of what
    /// `ISO8601DateFormatter` accepts (`SchemaTimestampTests` holds the two side by side).
    /// False says nothing: the formatter decides.
    static func isCommonTimestamp(_ s: String) -> Bool {
        s.utf8.withContiguousStorageIfAvailable { p in
            // A first digit 0 is a year below 1000, which the formatter refuses.
            CommonTimestamp.millis(utf8: p) != nil && p[0] != 0x30
        } ?? false
    }

    static func isDate(_ s: String) -> Bool {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withFullDate]
        // The formatter rolls 2026-02-30 over to March; a round trip refuses it.
        guard s.count == 10, let date = f.date(from: s) else { return false }
        return f.string(from: date) == s
    }
}

extension FieldValue {
    var isFiniteNumber: Bool {
        if case .double(let d) = self { return d.isFinite }
        return true
    }
}

/// One field of a replicated table.
public struct FieldSchema: Sendable, Hashable, Codable {
    public var name: String
    public var type: FieldType
    public var summary: String
    /// For an ``FieldType/int`` field: the values it may hold (`priority` 1…5), nil for any.
    public var range: ClosedRange<Int64>?

    public init(_ name: String, _ type: FieldType, _ summary: String = "", range: ClosedRange<Int64>? = nil) {
        self.name = name
        self.type = type
        self.summary = summary
        self.range = range
    }

    /// The value in the field's canonical type, or nil when it does not fit the type or the
    /// range (``FieldType/coerce(_:)``, then ``range``).
    public func coerce(_ value: FieldValue) -> FieldValue? {
        guard let canonical = type.coerce(value) else { return nil }
        if let range, case .int(let n) = canonical, !range.contains(n) { return nil }
        return canonical
    }

    /// What the field holds, for errors: its type, and its range if it has one.
    public var expectation: String {
        guard let range else { return type.displayName }
        return "\(type.displayName) from \(range.lowerBound) to \(range.upperBound)"
    }
}

/// A replicated table. The engine knows tables only through this description: adding a
/// table is adding a `TableSchema`, never engine code.
public struct TableSchema: Sendable, Hashable, Codable {
    public var name: String
    public var summary: String
    public var fields: [FieldSchema] { didSet { index() } }
    /// Fields (of type ``FieldType/node``) naming the nodes a record is routed to. A record
    /// flows to each routed node and that node's ancestors, and nowhere else.
    public var routeFields: [String]

    public init(name: String, summary: String = "", fields: [FieldSchema], routeFields: [String]) {
        self.name = name
        self.summary = summary
        self.fields = fields
        self.routeFields = routeFields
        index()
    }

    private var fieldIndex: [String: FieldSchema] = [:]
    private var fieldPositions: [String: Int] = [:]

    private mutating func index() {
        fieldIndex = Dictionary(uniqueKeysWithValues: fields.map { ($0.name, $0) })
        fieldPositions = Dictionary(uniqueKeysWithValues: fields.enumerated().map { ($1.name, $0) })
    }

    public func field(_ name: String) -> FieldSchema? { fieldIndex[name] }

    /// Where `name` is in ``fields``: a record's few values are placed by position rather
    /// than every field of the table looked up in the record.
    public func position(of name: String) -> Int? { fieldPositions[name] }

    /// The nodes a record with these values is routed to.
    public func route(of values: [String: FieldValue]) -> Set<NodeID> {
        Set(routeFields.compactMap { values[$0]?.stringValue }.filter(NodeID.isValid).map(NodeID.init(unchecked:)))
    }

    enum CodingKeys: String, CodingKey { case name, summary, fields, routeFields }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(name: try c.decode(String.self, forKey: .name),
                  summary: try c.decodeIfPresent(String.self, forKey: .summary) ?? "",
                  fields: try c.decode([FieldSchema].self, forKey: .fields),
                  routeFields: try c.decode([String].self, forKey: .routeFields))
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name)
        try c.encode(summary, forKey: .summary)
        try c.encode(fields, forKey: .fields)
        try c.encode(routeFields, forKey: .routeFields)
    }
}

/// The set of replicated tables a tenant uses.
public struct Schema: Sendable, Hashable {
    public let tables: [TableSchema]
    private let index: [String: TableSchema]

    public init(tables: [TableSchema]) {
        self.tables = tables
        index = Dictionary(uniqueKeysWithValues: tables.map { ($0.name, $0) })
    }

    public func table(_ name: String) -> TableSchema? { index[name] }

    /// The longest table or field name any schema version may use (identifiers are 64 bytes).
    public static let maxTableNameBytes = 64

    /// Checks a change against the schema and returns it with values in canonical types,
    /// or the reason it cannot be accepted (naming the table, record and field).
    public func validate(_ change: Change) -> Result<Change, ChangeRejection> {
        guard let table = index[change.table] else {
            // Longer than any identifier: no schema version will know it, so the refusal is
            // final, and only its start is repeated.
            guard change.table.utf8.count <= Self.maxTableNameBytes else {
                return .failure(.init(.invalidChange, "table name '\(change.table.clipped(toUTF8: Self.maxTableNameBytes))' is longer than any table's (at most \(Self.maxTableNameBytes) bytes)"))
            }
            return .failure(.init(.unknownTable, "unknown table '\(change.table)' (known: \(tables.map(\.name).joined(separator: ", ")))"))
        }
        guard RecordID.isValid(change.recordID) else {
            return .failure(.init(.invalidRecordID, "invalid record id '\(change.recordID.clipped(toUTF8: 80))' in table '\(change.table)': use 1-128 printable characters without spaces"))
        }
        guard Change.sequenceRange.contains(change.originSeq) else {
            return .failure(.init(.invalidChange, "change \(change.origin)#\(change.originSeq) has a sequence number outside \(Change.sequenceRange.lowerBound)...\(Change.sequenceRange.upperBound)"))
        }
        var normalized = change
        switch change.op {
        case .delete:
            if !change.fields.isEmpty {
                return .failure(.init(.invalidChange, "delete of \(change.table)/\(change.recordID) must not carry fields"))
            }
        case .upsert:
            if change.fields.isEmpty {
                return .failure(.init(.invalidChange, "upsert of \(change.table)/\(change.recordID) carries no fields"))
            }
            for (name, value) in change.fields {
                guard let field = table.field(name) else {
                    return .failure(.init(.unknownField, "unknown field '\(name.clipped(toUTF8: Self.maxTableNameBytes))' in table '\(change.table)'"))
                }
                guard let canonical = field.coerce(value) else {
                    return .failure(.init(.wrongType, "field '\(change.table).\(name)' of record '\(change.recordID)' must be \(field.expectation), got \(value.typeName) \(value.canonical.prefix(60))"))
                }
                // Stored only when coercing changed it (an int for a double field): writing
                // every field back copied the change's fields and hashed each name again.
                if canonical != value { normalized.fields[name] = canonical }
            }
            for name in change.prior.keys where change.fields[name] == nil {
                return .failure(.init(.invalidChange, "prior version given for field '\(name.clipped(toUTF8: Self.maxTableNameBytes))' that the change does not write"))
            }
        }
        return .success(normalized)
    }
}

/// Record identifiers: 1–128 printable ASCII characters without whitespace.
public enum RecordID {
    /// A new id for a record a node creates on its own (an erasure request, a consent
    /// event): `prefix`, a dash and 16 random hexadecimal digits.
    public static func random(prefix: String) -> String {
        prefix + "-" + (0..<8).map { _ in UInt8.random(in: .min ... .max) }.hexString
    }

    public static func isValid(_ s: String) -> Bool {
        guard !s.isEmpty, s.utf8.count <= 128 else { return false }
        return s.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7f }
    }
}

/// Why a node refused one change. Refused changes are quarantined with this reason; they
/// never block the changes around them.
public struct ChangeRejection: Error, Sendable, Hashable, Codable, CustomStringConvertible {
    public enum Code: String, Sendable, Codable, Hashable {
        case unknownTable = "unknown_table"
        case unknownField = "unknown_field"
        case wrongType = "wrong_type"
        case invalidRecordID = "invalid_record_id"
        case invalidChange = "invalid_change"
        case clockSkew = "clock_skew"
        case forbidden = "forbidden"
        /// The sender numbered two different changes alike (a restored or rebuilt store).
        case identityReused = "identity_reused"
        /// One change too large to send (the agent sets it aside).
        case tooLarge = "too_large"
        /// The record, or the record it links to, was erased (``Erasure``): a late change
        /// cannot bring the data back. Never retried; counted, never kept (its values are
        /// the data that was erased).
        case erased = "erased"
        /// The receiver cannot apply this kind of change yet (an erasure marker at a hub on
        /// PostgreSQL): kept by the sender and sent again, as for a newer schema.
        case unsupported = "unsupported"
        /// A local write of an outbound contact (an open task, an outbound dialogue with a
        /// purpose) for a customer without the consent it needs (``Consent``). Local writes
        /// only: a received change is never judged by consent (it may have been given then).
        case noConsent = "no_consent"

        /// Reasons that lie in the change itself under any schema version: every receiver
        /// refuses it the same way, so a refusal is final. All others depend on who sent
        /// it, when, or which schema version judged it, and are judged again on redelivery.
        public static let intrinsic: [Code] = [.invalidRecordID, .invalidChange]

        public var isFinal: Bool { Self.intrinsic.contains(self) || self == .erased }
    }

    public var code: Code
    public var message: String
    /// For `clock_skew`: the receiver's time when it first refused the change. The origin
    /// re-stamps the change to no later than this before sending it again; the receiver
    /// refuses it with a later stamp, so a change refused for skew never wins over writes
    /// the receiver accepted since.
    public var restampAtMillis: UInt64?
    /// For `erased`: the erasure and the erased record (the change's own, or the one it
    /// names). The sender, which never received that erasure (it held none of the data
    /// then), erases the refused record with what links to it, and notes the erased one.
    public var erased: ErasedReference?
    /// For `forbidden`: the node whose scope the record lies outside, when that is why and
    /// the receiver holds the record (not for a record new there, judged by the change's own
    /// fields, nor when the change's origin is outside the pusher's subtree). For a change the pusher
    /// relays, its origin (``PushScope/relayedRefusal(for:origins:pusher:scope:routeBefore:routeAfter:)``):
    /// the relaying node then drops the change it took (``RejectedChange/outsideScopeOf``).
    public var outsideScopeOf: NodeID?

    public init(_ code: Code, _ message: String, restampAtMillis: UInt64? = nil, erased: ErasedReference? = nil,
                outsideScopeOf: NodeID? = nil) {
        self.code = code
        self.message = message
        self.restampAtMillis = restampAtMillis
        self.erased = erased
        self.outsideScopeOf = outsideScopeOf
    }

    public var description: String { "\(code.rawValue): \(message)" }
}

/// An erased record as a refusal names it (``ChangeRejection/erased``).
public struct ErasedReference: Sendable, Hashable, Codable {
    /// The erasure request's id (an `erasures` record).
    public var erasure: String
    public var table: String
    public var id: String

    public init(erasure: String, table: String, id: String) {
        self.erasure = erasure
        self.table = table
        self.id = id
    }

    /// Whether a parent's reference is one this node can act on: a known table and ids a
    /// store accepts (a parent's answer is bounded like any input).
    public func isValid(in schema: Schema) -> Bool {
        schema.table(table) != nil && RecordID.isValid(id) && RecordID.isValid(erasure)
    }
}

// HQ's rules runner (escalation, withdrawals, proactive contacts) over a tenant on
// PostgreSQL: the reads it needs, its writes as the hub's own, and a lease so that of several
// hub processes one runs a tenant's rules at a time.

import Foundation
import PostgresNIO
import TiersyncCore
import TiersyncStorage

extension PostgresTenantStore: RulesStore, RulesLeasing {
    public var rulesStoreName: String { "postgres schema \(tenantSchema.name)" }

    public func rulesIdentity() async throws -> NodeIdentity? { try await storeIdentity() }

    public func rulesSetting(_ key: String) async throws -> String? { try await setting(key) }

    /// Every document kept; HQ applies no release (it runs what it published).
    public func rulesGovernance() async throws -> (documents: [StoredGovernanceDocument], applied: GovernanceApplication?) {
        try await prepared()
        let documents = try await client.query("""
            SELECT kind, key, seq, body FROM \(unescaped: table(.governanceDocuments)) ORDER BY kind, seq
            """, logger: logger).collect().map(Self.document)
        return (documents, nil)
    }

    /// The conditions are tested by PostgreSQL on the records' values (canonical JSON), so
    /// only the matching records travel: the table is still read whole, as SQLite's engine
    /// reads its table (neither indexes the fields a periodic job asks about).
    public func rulesLiveRecords(table name: String, where conditions: [FieldCondition]) async throws -> [(id: String, values: [String: FieldValue])] {
        try await prepared()
        guard let t = schema.table(name) else { throw StoreError.rejected(.init(.unknownTable, "unknown table '\(name)'")) }
        for field in conditions.flatMap(\.fields) where t.field(field) == nil {
            throw StoreError.invalidArgument("unknown field '\(name).\(field)'")
        }
        var sql = PostgresSQL()
        let tbl = sql.bind(name)
        // The text tests come first and need no parsing; the fenced subquery (`OFFSET 0`)
        // parses a row's JSON once, for the rows they leave, instead of once per condition.
        let prefilters = conditions.compactMap { Self.prefilter($0, &sql) }
        let predicate = (["r.tbl = \(tbl)", "r.live"] + prefilters + conditions.map { Self.predicate($0, &sql) }).joined(separator: " AND ")
        sql.append("SELECT r.id, r.fields FROM \(table(.records)) r, LATERAL (SELECT r.fields::jsonb AS j OFFSET 0) x WHERE \(predicate) ORDER BY r.id COLLATE \"C\"")
        var out: [(id: String, values: [String: FieldValue])] = []
        for try await (id, fields) in try await client.query(sql.query, logger: logger).decode((String, String).self) {
            guard let values = CanonicalJSON.parseFields(fields) else { throw PostgresStoreError("corrupt fields for \(name)/\(id)") }
            out.append((id, values.filter { !$0.value.isNull }))
        }
        return out
    }

    /// A test of `condition` on the text of `r.fields` that every record meeting it passes
    /// (nil when there is none worth making): the values are canonical JSON (sorted keys, no
    /// whitespace, quotes inside strings escaped), so `"f":"` appears exactly when `f` holds a
    /// string and `"f":` when `f` is present. Most records of a large table fail one (a
    /// dialogue long answered has `"answered_at":"`), and are never parsed.
    static func prefilter(_ condition: FieldCondition, _ sql: inout PostgresSQL) -> String? {
        func key(_ field: String) -> String { canonicalName(field) }
        func contains(_ text: String) -> String { "strpos(r.fields, \(sql.bind(text))) > 0" }
        switch condition {
        case .isNull(let f):
            return "strpos(r.fields, \(sql.bind(key(f) + "\""))) = 0"
        case .isNotNull(let f):
            return contains(key(f))
        case .equals(let f, .string(let v)):
            return contains(key(f) + FieldValue.string(v).canonical)
        case .isIn(let f, let vs):
            // Strings only (a number has several spellings), and few of them.
            let strings = vs.compactMap { if case .string(let s) = $0 { s } else { nil } }
            guard !strings.isEmpty, strings.count == vs.count, strings.count <= 16 else { return nil }
            return "(" + strings.map { contains(key(f) + FieldValue.string($0).canonical) }.joined(separator: " OR ") + ")"
        case .between(let f, .string(let lo), .string(let hi)):
            // Every string between two bytewise shares their common prefix (a window of
            // dates: its year and month, often more), whose escaped form begins the value's.
            // Whole characters only: "Ä" and "Å" share a first byte, not a first character.
            var prefix = String.UnicodeScalarView()
            prefix.append(contentsOf: zip(lo.unicodeScalars, hi.unicodeScalars).prefix { $0 == $1 }.map(\.0))
            return contains(key(f) + String(FieldValue.string(String(prefix)).canonical.dropLast()))
        case .between(let f, _, _):
            return contains(key(f))
        case .anyNotNull(let fs):
            guard !fs.isEmpty else { return nil }
            return "(" + fs.map { contains(key($0)) }.joined(separator: " OR ") + ")"
        case .equals, .isNullOrNotIn:
            return nil
        }
    }

    /// `condition` on `x.j` (the record's values as `jsonb`), as SQLite's engine tests it on
    /// its columns: absent and JSON `null` are both null; `between` compares text bytewise
    /// (dates `YYYY-MM-DD`) or numbers as numbers.
    static func predicate(_ condition: FieldCondition, _ sql: inout PostgresSQL) -> String {
        func isNull(_ field: String) -> String {
            "COALESCE(jsonb_typeof(x.j -> \(sql.bind(field))), 'null') = 'null'"
        }
        func json(_ value: FieldValue) -> String {
            "(\(sql.bind(CanonicalJSON.object(["v": value])))::jsonb -> 'v')"
        }
        func number(_ value: FieldValue) -> Double? {
            switch value {
            case .int(let i): Double(i)
            case .double(let d): d
            default: nil
            }
        }
        switch condition {
        case .isNull(let f):
            return isNull(f)
        case .isNotNull(let f):
            return "NOT " + isNull(f)
        case .equals(let f, let v):
            // As in SQL (and SQLite's engine): nothing equals null.
            guard !v.isNull else { return "false" }
            return "(x.j -> \(sql.bind(f))) = \(json(v))"
        case .isIn(let f, let vs):
            let values = vs.filter { !$0.isNull }
            guard !values.isEmpty else { return "false" }
            return "(x.j -> \(sql.bind(f))) IN (" + values.map(json).joined(separator: ", ") + ")"
        case .isNullOrNotIn(let f, let vs):
            guard vs.contains(where: { !$0.isNull }) else { return "true" }
            return "(\(isNull(f)) OR NOT \(predicate(.isIn(f, vs), &sql)))"
        case .between(let f, let lo, let hi):
            switch (lo, hi) {
            case (.string(let a), .string(let b)):
                let field = sql.bind(f)
                return "(jsonb_typeof(x.j -> \(field)) = 'string' AND (x.j ->> \(field)) COLLATE \"C\" BETWEEN \(sql.bind(a)) AND \(sql.bind(b)))"
            default:
                guard let a = number(lo), let b = number(hi) else { return "false" }
                let field = sql.bind(f)
                return "(jsonb_typeof(x.j -> \(field)) = 'number' AND (x.j ->> \(field))::numeric BETWEEN \(sql.bind(a))::numeric AND \(sql.bind(b))::numeric)"
            }
        case .anyNotNull(let fs):
            guard !fs.isEmpty else { return "false" }
            return "(" + fs.map { "NOT " + isNull($0) }.joined(separator: " OR ") + ")"
        }
    }

    public func rulesRecord(table name: String, id: String) async throws -> StoredRecord? {
        try await prepared()
        let rows = try await client.query("""
            SELECT fields, versions, tombstone, route FROM \(unescaped: table(.records)) WHERE tbl = \(name) AND id = \(id)
            """, logger: logger).collect()
        guard let row = rows.first else { return nil }
        let (fields, versions, tombstone, route) = try row.decode((String, String, String?, String).self)
        return try Self.record(table: name, id: id, fields: fields, versions: versions, tombstone: tombstone, route: route)
    }

    public func commitRuleWrites(_ writes: [RecordWrite]) async throws {
        _ = try await writeAsHub(writes)
    }

    public func createRuleRecord(_ write: RecordWrite, stampedAtMillis: UInt64) async throws {
        _ = try await writeOne(write, as: try await prepared(), stampedAt: HLCTimestamp(wallMillis: stampedAtMillis, counter: 0))
    }

    public func rulesRecordIDs(changedIn name: String, after seq: Int64) async throws -> (ids: Set<String>, head: Int64) {
        let head = try await feedHead()
        var ids: Set<String> = []
        for try await id in try await client.query("""
            SELECT DISTINCT record_id FROM \(unescaped: table(.changes)) WHERE seq > \(seq) AND seq <= \(head) AND tbl = \(name)
            """, logger: logger).decode(String.self) {
            ids.insert(id)
        }
        return (ids, head)
    }

    public func rulesHead() async throws -> Int64 { try await feedHead() }

    /// Runs `body` unless another process is running the tenant's rules; nil then. The lease
    /// is a transaction-scoped advisory lock held by a transaction left open (on one
    /// connection) for the run: a process that dies releases it with its connection.
    public func withRulesLease<T: Sendable>(_ body: () async throws -> T) async throws -> T? {
        try await prepared()
        let key = "rules:" + tenantSchema.name
        return try await client.withTransaction(logger: logger) { connection -> T? in
            let rows = try await connection.query("SELECT pg_try_advisory_xact_lock(hashtext(\(key)))", logger: logger).collect()
            guard try rows.first?.decode(Bool.self) == true else { return nil }
            return try await body()
        }
    }
}

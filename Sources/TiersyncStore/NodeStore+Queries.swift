import GRDB
import TiersyncCore

extension FieldCondition {
    func sql(_ arguments: inout StatementArguments) -> String {
        func q(_ f: String) -> String { f.quotedDatabaseIdentifier }
        switch self {
        case .isNull(let f): return "\(q(f)) IS NULL"
        case .isNotNull(let f): return "\(q(f)) IS NOT NULL"
        case .equals(let f, let v):
            arguments += [Self.databaseValue(v)]
            return "\(q(f)) = ?"
        case .isIn(let f, let vs):
            guard !vs.isEmpty else { return "0" }
            arguments += StatementArguments(vs.map(Self.databaseValue))
            return "\(q(f)) IN (\(Array(repeating: "?", count: vs.count).joined(separator: ", ")))"
        case .isNullOrNotIn(let f, let vs):
            guard !vs.isEmpty else { return "1" }
            arguments += StatementArguments(vs.map(Self.databaseValue))
            return "(\(q(f)) IS NULL OR \(q(f)) NOT IN (\(Array(repeating: "?", count: vs.count).joined(separator: ", "))))"
        case .between(let f, let lo, let hi):
            arguments += [Self.databaseValue(lo), Self.databaseValue(hi)]
            return "\(q(f)) BETWEEN ? AND ?"
        case .anyNotNull(let fs):
            guard !fs.isEmpty else { return "0" }
            return "(" + fs.map { "\(q($0)) IS NOT NULL" }.joined(separator: " OR ") + ")"
        }
    }

    /// A value as the domain tables hold it (booleans as 0/1).
    static func databaseValue(_ value: FieldValue) -> DatabaseValue {
        switch value {
        case .null: .null
        case .bool(let b): (b ? 1 : 0).databaseValue
        case .int(let i): i.databaseValue
        case .double(let d): d.databaseValue
        case .string(let s): s.databaseValue
        }
    }
}

extension NodeStore {
    /// Live records of `table` whose fields meet every condition, ordered by id.
    public func liveRecords(table: String, where conditions: [FieldCondition], limit: Int = Int.max) throws -> [(id: String, values: [String: FieldValue])] {
        guard let t = schema.table(table) else { throw StoreError.rejected(.init(.unknownTable, "unknown table '\(table)'")) }
        for name in conditions.flatMap(\.fields) where t.field(name) == nil {
            throw StoreError.invalidArgument("unknown field '\(table).\(name)'")
        }
        var arguments = StatementArguments()
        let predicate = ([DomainTables.heldByStore] + conditions.map { $0.sql(&arguments) }).joined(separator: " AND ")
        arguments += [min(limit, Int(Int32.max))]
        return try writer.read { db in
            try Row.fetchAll(db, sql: "SELECT \(tableSQL[t.name]!.columns) FROM \(t.name.quotedDatabaseIdentifier) WHERE \(predicate) ORDER BY id LIMIT ?",
                             arguments: arguments)
                .map { row in (row[0] as String, Self.values(of: row, table: t).filter { !$0.value.isNull }) }
        }
    }

    /// The ids of the records of `table` that changes logged after position `seq` touched
    /// (written here or received), and the newest position: what a periodic job looks at
    /// again instead of every record.
    public func recordIDs(changedIn table: String, after seq: Int64) throws -> (ids: Set<String>, head: Int64) {
        try writer.read { db in
            let head = try Int64.fetchOne(db, sql: "SELECT MAX(seq) FROM ts_changes") ?? 0
            let ids = try String.fetchSet(db, sql: "SELECT DISTINCT record_id FROM ts_changes WHERE seq > ? AND seq <= ? AND tbl = ?",
                                          arguments: [seq, head, table])
            return (ids, head)
        }
    }
}

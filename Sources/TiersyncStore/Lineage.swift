import Foundation
import GRDB
import TiersyncCore

extension NodeStore {
    /// Every change this node holds for records with `id` (in `table`, or in any table),
    /// oldest first, with the hops each took and whether it has gone upward yet — the
    /// answer to "why does HQ not see this yet?". Refusals of this node are included in
    /// ``quarantined(limit:)``.
    /// `after` and `limit` page through a long history (log positions, oldest first).
    public func lineage(recordID id: String, table: String? = nil, after: Int64 = 0, limit: Int = .max) throws -> [ChangeLineage] {
        let acked = try cursor("push.parent")
        let isRoot = try identity().map { $0.parent == nil } ?? false
        return try writer.read { db in
            let refused = Dictionary(uniqueKeysWithValues: try Row.fetchAll(db, sql: "SELECT * FROM ts_push_retries").map {
                ("\($0["origin"] as String)#\($0["origin_seq"] as Int64)",
                 ChangeLineage.Upstream.refused(code: $0["code"], reason: $0["reason"], nextTryMillis: UInt64($0["next_at"] as Int64)))
            })
            // `tbl IN (…)` rather than "any table", so the (tbl, record_id) index answers
            // instead of a scan of the whole log.
            let tables = table.map { [$0] } ?? schema.tables.map(\.name)
            let logged = try Self.fetchLogged(db, sql: """
                SELECT \(Self.loggedColumns) FROM ts_changes WHERE tbl IN (\(databaseQuestionMarks(count: tables.count))) AND record_id = ?
                AND seq > ? ORDER BY seq LIMIT ?
                """, arguments: StatementArguments(tables + [id]) + [after, Int64(clamping: limit)])
            return logged.map { entry in
                let upstream: ChangeLineage.Upstream
                if isRoot {
                    upstream = .atRoot
                } else if entry.source == .parent {
                    upstream = .fromParent
                } else if let refusal = refused["\(entry.change.origin)#\(entry.change.originSeq)"] {
                    upstream = refusal
                } else {
                    upstream = entry.seq <= acked ? .acknowledged : .pending
                }
                return ChangeLineage(change: entry.change, seq: entry.seq, source: entry.source, receivedFrom: entry.receivedFrom,
                                     receivedAtMillis: entry.receivedAtMillis, upstream: upstream)
            }
        }
    }
}

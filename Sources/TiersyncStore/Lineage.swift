import Foundation
import GRDB
import TiersyncCore

/// Where one change of a record came from, how it travelled, and where it stands here.
public struct ChangeLineage: Sendable, Equatable {
    /// This node's view of a change it holds.
    public enum Upstream: Sendable, Equatable {
        /// Came from the parent: nothing to send.
        case fromParent
        /// This node is its tenant's root (HQ): there is no parent.
        case atRoot
        /// Waiting to be sent to the parent.
        case pending
        /// The parent acknowledged it.
        case acknowledged
        /// The parent refused it; it is re-sent at `nextTryMillis`.
        case refused(code: String, reason: String, nextTryMillis: UInt64)
    }

    public var change: Change
    public var seq: Int64
    public var source: ChangeSource
    public var receivedFrom: NodeID?
    public var receivedAtMillis: UInt64
    public var upstream: Upstream
}

extension NodeStore {
    /// Every change this node holds for records with `id` (in `table`, or in any table),
    /// oldest first, with the hops each took and whether it has gone upward yet — the
    /// answer to "why does HQ not see this yet?". Refusals of this node are included in
    /// ``quarantined(limit:)``.
    public func lineage(recordID id: String, table: String? = nil) throws -> [ChangeLineage] {
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
                SELECT \(Self.loggedColumns) FROM ts_changes WHERE tbl IN (\(databaseQuestionMarks(count: tables.count))) AND record_id = ? ORDER BY seq
                """, arguments: StatementArguments(tables + [id]))
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

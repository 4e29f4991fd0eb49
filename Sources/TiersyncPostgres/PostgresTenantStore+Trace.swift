// A record's trace on PostgreSQL: the SQLite engine's `lineage`, read from the tenant's log.
// The hub on PostgreSQL is always its tenant's root, so every change's upstream is `atRoot`.

import Foundation
import PostgresNIO
import TiersyncCore
import TiersyncStorage

extension PostgresTenantStore {
    public func trace(recordID: String, table: String?, after: Int64, limit: Int) async throws -> RecordTrace {
        try await prepared()
        let tables = table.map { [$0] } ?? schema.tables.map(\.name)
        guard tables.allSatisfy({ schema.table($0) != nil }) else { return RecordTrace(route: [], changes: [], next: nil) }
        var routes = PostgresSQL()
        routes.append("SELECT route FROM \(self.table(.records)) WHERE tbl = ANY(\(routes.bind(tables))::text[]) AND id = \(routes.bind(recordID))")
        var route = Set<NodeID>()
        for try await text in try await client.query(routes.query, logger: logger).decode(String.self) {
            route.formUnion(text.split(separator: ",").map { NodeID(unchecked: String($0)) })
        }
        // (tbl, record_id, seq) is indexed: `tbl = ANY(…)` lets it answer, not a log scan.
        var sql = PostgresSQL()
        sql.append("""
            SELECT seq, origin, origin_seq, hlc, tbl, record_id, op, fields, prior, source, received_from, received_at, trail
            FROM \(self.table(.changes)) WHERE tbl = ANY(\(sql.bind(tables))::text[]) AND record_id = \(sql.bind(recordID))
              AND seq > \(sql.bind(after)) ORDER BY seq LIMIT \(sql.bind(Int64(limit) + 1))
            """)
        var changes: [ChangeLineage] = []
        let rows = try await client.query(sql.query, logger: logger)
        for try await (seq, origin, originSeq, hlc, tbl, id, op, fields, prior, source, from, at, trail)
            in rows.decode((Int64, String, Int64, Int64, String, String, String, String, String?, String, String?, Int64, String?).self) {
            guard let parsed = CanonicalJSON.parseFields(fields) else { throw PostgresStoreError("corrupt fields in change log entry \(seq)") }
            let hops = try trail.map { text in try WireDecoding.trail(text) ?? JSONDecoder().decode([Hop].self, from: Data(text.utf8)) } ?? []
            let change = Change(origin: NodeID(unchecked: origin), originSeq: originSeq, hlc: HLCTimestamp(rawValue: UInt64(bitPattern: hlc)),
                                table: tbl, recordID: id, op: Change.Operation(rawValue: op) ?? .upsert, fields: parsed,
                                prior: prior.flatMap(CanonicalJSON.parseVersions) ?? [:], trail: hops)
            changes.append(ChangeLineage(change: change, seq: seq, source: ChangeSource(rawValue: source) ?? .local,
                                         receivedFrom: from.map(NodeID.init(unchecked:)), receivedAtMillis: UInt64(max(0, at)), upstream: .atRoot))
        }
        return RecordTrace(route: route, changes: Array(changes.prefix(limit)), next: changes.count > limit ? changes[limit - 1].seq : nil)
    }
}

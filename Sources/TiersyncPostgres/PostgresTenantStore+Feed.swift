// The change feed on PostgreSQL: the SQLite engine's `encodedFeed` (candidates by route,
// snapshots owed on route entry, the caller's own changes left out), read in one
// REPEATABLE READ transaction so the page, its snapshots and its head agree.

import PostgresNIO
import TiersyncCore
import TiersyncStorage

extension PostgresTenantStore {
    public func encodedFeed(after cursor: Int64, scope: Scope, excluding: NodeID?, limit: Int) async throws -> EncodedPullPage {
        try await prepared()
        let logger = self.logger
        return try await client.withConnection { connection in
            try await connection.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", logger: logger)
            do {
                let page = try await self.feedPage(connection, after: cursor, scope: scope, excluding: excluding, limit: limit)
                try await connection.query("COMMIT", logger: logger)
                return page
            } catch {
                try? await connection.query("ROLLBACK", logger: logger)
                throw error
            }
        }
    }

    private func feedPage(_ connection: PostgresConnection, after cursor: Int64, scope: Scope, excluding: NodeID?, limit: Int) async throws -> EncodedPullPage {
        let (changes, routes) = (table(.changes), table(.changeRoutes))
        let head = try await connection.query("SELECT seq FROM \(unescaped: table(.head)) WHERE id = 1", logger: logger)
            .collect().first.map { try $0.decode(Int64.self) } ?? 0
        var sql = PostgresSQL()
        let after = sql.bind(cursor)
        switch scope.nodes {
        case nil:
            let n = sql.bind(Int64(limit))
            sql.append("SELECT seq FROM \(changes) WHERE seq > \(after) ORDER BY seq LIMIT \(n)")
        case let nodes? where nodes.count == 1:
            let (node, n) = (sql.bind(nodes.first!.rawValue), sql.bind(Int64(limit)))
            // One node (a dealer): walk its route index directly.
            sql.append("SELECT seq FROM \(routes) WHERE node = \(node) AND seq > \(after) ORDER BY seq LIMIT \(n)")
        case let nodes?:
            let (list, n) = (sql.bind(nodes.map(\.rawValue)), sql.bind(Int64(limit)))
            // A subtree: walk the log in order, testing membership by index.
            sql.append("""
                SELECT c.seq FROM \(changes) c WHERE c.seq > \(after)
                  AND EXISTS (SELECT 1 FROM \(routes) r WHERE r.seq = c.seq AND r.node = ANY(\(list)::text[]))
                ORDER BY c.seq LIMIT \(n)
                """)
        }
        var candidates: [Int64] = []
        for try await seq in try await connection.query(sql.query, logger: logger).decode(Int64.self) { candidates.append(seq) }
        let more = candidates.count == limit
        let next = more ? candidates.last! : max(cursor, head)
        var deliver = candidates
        if let last = candidates.last {
            let snapshots = try await routeEntrySnapshots(connection, after: cursor, through: last, scope: scope)
            if !snapshots.isEmpty { deliver = Array(snapshots.union(candidates)).sorted() }
        }
        var out = "{\"changes\":["
        var count = 0
        if !deliver.isEmpty {
            var read = PostgresSQL("""
                SELECT origin, origin_seq, hlc, tbl, record_id, op, fields, prior, trail FROM \(changes)
                WHERE seq = ANY(
                """)
            let positions = read.bind(deliver)
            read.append(positions + "::int8[])")
            // The caller's own changes (and those it relayed) are left out: it has them.
            if let excluding {
                let sender = read.bind(excluding.rawValue)
                read.append(" AND (received_from IS NULL OR received_from <> \(sender))")
            }
            read.append(" ORDER BY seq")
            let rows = try await connection.query(read.query, logger: logger)
            for try await (origin, seq, hlc, tbl, id, op, fields, prior, trail) in rows.decode((String, Int64, Int64, String, String, String, String, String?, String?).self) {
                if count > 0 { out += "," }
                WireEncoding.storedChange(origin: origin, seq: seq, hlc: UInt64(bitPattern: hlc), table: tbl, id: id, op: op,
                                          fields: fields, prior: prior, trail: trail, into: &out)
                count += 1
            }
        }
        out += "],\"nextCursor\":\(next),\"more\":\(more ? "true" : "false"),\"head\":\(head)}"
        return EncodedPullPage(count: count, nextCursor: next, more: more, head: head, json: Array(out.utf8))
    }

    /// The snapshot on route entry (as the SQLite engine's): for each change in
    /// `(cursor, through]` that routed a record to a node of `scope` that did not have it,
    /// the log positions of that record's earlier changes.
    private func routeEntrySnapshots(_ connection: PostgresConnection, after cursor: Int64, through last: Int64, scope: Scope) async throws -> Set<Int64> {
        guard let nodes = scope.nodes, !nodes.isEmpty else { return [] }
        let entries = try await connection.query("""
            SELECT DISTINCT seq, tbl, record_id, route_before FROM \(unescaped: table(.routeEntries))
            WHERE node = ANY(\(nodes.map(\.rawValue))::text[]) AND seq > \(cursor) AND seq <= \(last)
            """, logger: logger).collect()
        var seqs: Set<Int64> = []
        for entry in entries {
            let (seq, tbl, id, before) = try entry.decode((Int64, String, String, String).self)
            guard !scope.contains(route: RecordMerge.parseRoute(before)) else { continue }
            let earlier = try await connection.query("""
                SELECT seq FROM \(unescaped: table(.changes)) WHERE tbl = \(tbl) AND record_id = \(id) AND seq < \(seq)
                """, logger: logger)
            for try await s in earlier.decode(Int64.self) { seqs.insert(s) }
        }
        return seqs
    }
}

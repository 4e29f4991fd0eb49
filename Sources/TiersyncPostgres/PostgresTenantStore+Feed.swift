// The change feed on PostgreSQL: the SQLite engine's `encodedFeed` (candidates by route,
// snapshots owed on route entry, the caller's own changes left out), read in one statement,
// so one snapshot: the page, its snapshots and its head agree without a transaction, in one
// round trip (it was six: a REPEATABLE READ transaction of four reads). The same statement
// reads the purge floor, which the pull route holds the caller's cursor against, and serves
// folded records (their entries' identities kept in `records`) at their positions.

import PostgresNIO
import TiersyncCore
import TiersyncStorage

extension PostgresTenantStore {
    public func encodedFeed(after cursor: Int64, scope: Scope, excluding: NodeID?, limit: Int) async throws -> EncodedPullPage {
        try await prepared()
        // Pages name a history from the first, pushed to or not (PostgresTenantStore+LogHistory).
        try await beginLogHistoryBeforeWriting()
        // Most pulls (a node caught up, every fold behind its cursor) need no folded record:
        // a leaner statement, which PostgreSQL plans faster, says whether one could be due
        // (a record folded after the cursor, or a record entering the scope while any is
        // folded), and only then is the page read again with them.
        if let page = try await feedPage(after: cursor, scope: scope, excluding: excluding, limit: limit, folded: false) {
            return page
        }
        return try await feedPage(after: cursor, scope: scope, excluding: excluding, limit: limit, folded: true)!
    }

    /// A feed page, with folded records (`folded`), or without them: then nil when one
    /// could be due. Read by one of the tenant's `ts_feed_*` functions (below), whose plans
    /// are made once per connection.
    private func feedPage(after cursor: Int64, scope: Scope, excluding: NodeID?, limit: Int, folded withFolded: Bool) async throws -> EncodedPullPage? {
        let shape = FeedShape(scope)
        let function = "\"\(tenantSchema.name)\".\(PostgresTenantSchema.feedFunctionName(shape, folded: withFolded))"
        let nodes = (scope.nodes ?? []).map(\.rawValue)
        let query: PostgresQuery = """
            SELECT * FROM \(unescaped: function)(\(cursor)::int8, \(Int64(limit))::int8, \(nodes)::text[], \(nodes.first)::text,
              \(PostgresTenantStore.erasedOp)::text, \(excluding?.rawValue)::text, \(PostgresMetaKey.purgeFloor.rawValue)::text)
            """
        var head: Int64 = 0, candidateCount = 0, lastCandidate: Int64?, floor: Int64 = 0, foldedDue = false, history: String?
        var out = "{\"changes\":["
        var count = 0
        for row in try await client.preparedRows(query, logger: logger) {
            let (kind, seq, a, b, origin, tbl, id, op, fields, prior, trail)
                = try row.decode((Int32, Int64, Int64?, Int64?, String?, String?, String?, String?, String?, String?, String?).self)
            if kind == 0 {
                (head, candidateCount, lastCandidate) = (tbl.flatMap { Int64($0) } ?? 0, Int(a ?? 0), b)
                floor = origin.flatMap { Int64($0) } ?? 0
                history = fields.flatMap { PullResponse.isValidHistory($0) ? $0 : nil }
                if !withFolded {
                    let highestFolded = id.flatMap { Int64($0) } ?? 0, entering = op.flatMap { Int($0) } ?? 0
                    // The rest is read to the end all the same (a statement's rows are always
                    // consumed), and thrown away.
                    foldedDue = highestFolded > cursor || (entering > 0 && highestFolded > 0)
                }
                continue
            }
            if foldedDue { continue }
            if kind == 2 {
                // A folded record: a change per folded version some field still holds.
                guard let tbl, let id, let fields, let versions = prior, let identities = FoldedIdentities(parsing: origin ?? "") else {
                    throw PostgresStoreError("folded record at \(seq) read without its state")
                }
                let record = try Self.record(table: tbl, id: id, fields: fields, versions: versions, tombstone: nil, route: "")
                for change in identities.changes(table: tbl, id: id, state: record.state) {
                    if count > 0 { out += "," }
                    WireEncoding.storedChange(origin: change.origin.rawValue, seq: change.originSeq, hlc: change.hlc.rawValue, table: tbl, id: id,
                                              op: change.op.rawValue, fields: CanonicalJSON.object(change.fields), prior: nil, trail: nil, into: &out)
                    count += 1
                }
                continue
            }
            guard let originSeq = a, let hlc = b, let origin, let tbl, let id, let op, let fields else {
                throw PostgresStoreError("change \(seq) read without its columns")
            }
            if count > 0 { out += "," }
            WireEncoding.storedChange(origin: origin, seq: originSeq, hlc: UInt64(bitPattern: hlc), table: tbl, id: id, op: op,
                                      fields: fields, prior: prior, trail: trail, into: &out)
            count += 1
        }
        // Read with the page, so a floor another process raised is never missed: the pull
        // route checks the caller's cursor against it (its early check uses the floor this
        // process last saw).
        noteFloor(floor)
        if foldedDue { return nil }
        let more = candidateCount == limit
        let next = more ? lastCandidate ?? cursor : max(cursor, head)
        out += "],\"nextCursor\":\(next),\"more\":\(more ? "true" : "false"),\"head\":\(head)"
        if let history { out += ",\"history\":\"\(history)\"" }
        out += "}"
        return EncodedPullPage(count: count, nextCursor: next, more: more, head: head, json: Array(out.utf8), floor: floor)
    }
}

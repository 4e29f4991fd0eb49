// The feed's statements as functions in the tenant's schema, one per scope shape, with
// folded records or without (`PostgresTenantStore+Feed` calls them and encodes the page):
// PL/pgSQL keeps their plans per connection, under ``PostgresTenantSchema/keyedPlanSettings``.

import TiersyncCore

/// The three forms of a feed's scope, each read by its own statement.
enum FeedShape: String, CaseIterable, Sendable {
    /// The whole tenant (HQ): the log in order.
    case tenant
    /// One node (a dealer): its route index.
    case node
    /// A subtree: the log in order, tested against the nodes each entry was routed to.
    case subtree

    init(_ scope: Scope) {
        switch scope.nodes {
        case nil: self = .tenant
        case let nodes? where nodes.count == 1: self = .node
        case .some: self = .subtree
        }
    }
}

extension PostgresTenantSchema {
    /// The name of the function reading a feed page of `shape`, with folded records or not.
    static func feedFunctionName(_ shape: FeedShape, folded: Bool) -> String {
        "ts_feed_\(shape.rawValue)" + (folded ? "_folded" : "")
    }

    /// `CREATE OR REPLACE FUNCTION` of every feed function (``feedFunction(_:folded:)``).
    var feedFunctions: [String] {
        FeedShape.allCases.flatMap { shape in [false, true].map { feedFunction(shape, folded: $0) } }
    }

    /// The feed page of `shape` as a function of the cursor (`p_after`), the page size
    /// (`p_n`), the scope's nodes (`p_nodes`; `p_node` its one node), the erased entries'
    /// op, the caller to leave out (`p_excluding`, null for none) and the purge floor's
    /// meta key. Rows as `feedPage` decodes them: row 0 carries the head, the candidates'
    /// count and the last candidate (and the newest log history, in the same snapshot); the changes (kind 1) and folded records (kind 2)
    /// follow in position order. A PL/pgSQL function, so its plan is made once per
    /// connection (planning the statement cost a pull more than running it), under
    /// ``keyedPlanSettings``, with each look-up a fenced `LATERAL` subquery.
    func feedFunction(_ shape: FeedShape, folded withFolded: Bool) -> String {
        let (changes, routes, entries, records) = (qualified(.changes), qualified(.changeRoutes), qualified(.routeEntries), qualified(.records))
        let candidates: String
        switch shape {
        case .tenant:
            candidates = "SELECT c.seq FROM \(changes) c WHERE c.seq > p_after ORDER BY c.seq LIMIT p_n"
        case .node:
            // One node (a dealer): walk its route index directly.
            candidates = "SELECT r.seq FROM \(routes) r WHERE r.node = p_node AND r.seq > p_after ORDER BY r.seq LIMIT p_n"
        case .subtree:
            // A subtree: walk the log in order, testing membership by the nodes each entry was
            // routed to (`routed`, written with it; the route index for an entry from before
            // that column). Not a join to the route index: compaction empties the log and
            // vacuum then leaves PostgreSQL's row estimates near zero while pushes refill it,
            // and with such estimates the join was planned as a scan of the index per entry.
            // The route index is asked by a count, not `EXISTS`: an `EXISTS` beside `OR` may
            // be planned as a hashed subplan, which reads the whole index.
            candidates = """
                SELECT c.seq FROM \(changes) c WHERE c.seq > p_after
                  AND (string_to_array(c.routed, ',') && p_nodes
                       OR c.routed IS NULL AND (SELECT count(*) FROM \(routes) r WHERE r.node = ANY(p_nodes) AND r.seq = c.seq) > 0)
                ORDER BY c.seq LIMIT p_n
                """
        }
        // Erased entries are kept for their identity only, never sent (their route index is
        // gone, so only the whole tenant's walk meets them). The caller's own changes (and
        // those it relayed) are left out: it has them.
        let exclusion = " WHERE c.op <> p_erased_op AND (p_excluding IS NULL OR c.received_from IS NULL OR c.received_from <> p_excluding)"
        // Folded records (PostgresTenantStore+Retention) at positions after the cursor, in the
        // scope: candidates beside the log's, merged in position order and cut at `p_n`
        // (the first `p_n` of each side hold the first `p_n` of both).
        let inScope = shape == .tenant ? "" : " AND string_to_array(r.route, ',') && p_nodes"
        // The snapshot on route entry (as the SQLite engine's): for each candidate that routed
        // a record to a node of the scope whose route before held none of the scope, every
        // earlier change of that record, and the record's folded entries.
        let foldedCandidates = withFolded ? """
            fc AS (SELECT r.folded_at AS seq FROM \(records) r WHERE r.folded_at > p_after AND r.tombstone IS NULL\(inScope)
                   ORDER BY r.folded_at LIMIT p_n),
            cand AS (SELECT lc.seq, false AS folded FROM lc UNION ALL SELECT fc.seq, true FROM fc ORDER BY 1 LIMIT p_n),
            """ : "cand AS (SELECT lc.seq, false AS folded FROM lc),"
        let folds = withFolded ? """
            ,
            folds AS (
              SELECT r.tbl, r.id FROM cand, LATERAL (SELECT r.tbl, r.id FROM \(records) r
                WHERE r.folded_at = cand.seq AND r.tombstone IS NULL OFFSET 0) r WHERE cand.folded
              UNION
              SELECT r.tbl, r.id FROM entered e, LATERAL (SELECT r.tbl, r.id FROM \(records) r WHERE r.tbl = e.tbl AND r.id = e.record_id
                AND r.folded_at IS NOT NULL AND r.tombstone IS NULL\(inScope) OFFSET 0) r)
            """ : ""
        let foldedRows = withFolded ? """
            UNION ALL
            SELECT 2, r.folded_at, NULL, NULL, r.folded, r.tbl, r.id, NULL, r.fields, r.versions, NULL
            FROM folds f, LATERAL (SELECT * FROM \(records) r WHERE r.tbl = f.tbl AND r.id = f.id OFFSET 0) r
            """ : ""
        // Without folded records, row 0 also says whether one could be due: the highest
        // folded position (the partial index's last entry) and whether a record enters the
        // scope on this page.
        let check = withFolded ? "NULL::text, NULL::text" : "(SELECT max(r.folded_at) FROM \(records) r)::text, (SELECT count(*) FROM entered)::text"
        return """
            CREATE OR REPLACE FUNCTION "\(name)".\(Self.feedFunctionName(shape, folded: withFolded))(
              p_after int8, p_n int8, p_nodes text[], p_node text, p_erased_op text, p_excluding text, p_floor_key text)
            RETURNS TABLE (r_kind int4, r_seq int8, r_a int8, r_b int8, r_origin text, r_tbl text, r_id text, r_op text,
                           r_fields text, r_prior text, r_trail text)
            LANGUAGE plpgsql STABLE
              \(Self.keyedPlanSettings) AS $fn$
            BEGIN
              RETURN QUERY
              WITH lc AS (\(candidates)),
              \(foldedCandidates)
              last AS (SELECT count(*) AS n, max(cand.seq) AS m FROM cand),
              entered AS (
                SELECT DISTINCT e.seq, e.tbl, e.record_id FROM \(entries) e, last
                WHERE e.node = ANY(p_nodes) AND e.seq > p_after AND e.seq <= last.m
                  AND NOT (string_to_array(e.route_before, ',') && p_nodes)),
              deliver AS (
                SELECT cand.seq FROM cand WHERE NOT cand.folded
                UNION
                SELECT c.seq FROM entered e, LATERAL (SELECT c.seq FROM \(changes) c
                  WHERE c.tbl = e.tbl AND c.record_id = e.record_id AND c.seq < e.seq OFFSET 0) c)\(folds)
              SELECT 0 AS kind, -1::int8 AS seq, last.n, last.m,
                     (SELECT m.value FROM \(qualified(.meta)) m WHERE m.key = p_floor_key),
                     COALESCE((SELECT h.seq FROM \(qualified(.head)) h WHERE h.id = 1), 0)::text, \(check),
                     (SELECT lh.id FROM \(qualified(.logHistories)) lh ORDER BY lh.n DESC LIMIT 1), NULL::text, NULL::text FROM last
              UNION ALL
              SELECT 1, c.seq, c.origin_seq, c.hlc, c.origin, c.tbl, c.record_id, c.op, c.fields, c.prior, c.trail
              FROM deliver d, LATERAL (SELECT * FROM \(changes) c WHERE c.seq = d.seq OFFSET 0) c\(exclusion)
              \(foldedRows)
              ORDER BY 2, 1;
            END
            $fn$
            """
    }
}

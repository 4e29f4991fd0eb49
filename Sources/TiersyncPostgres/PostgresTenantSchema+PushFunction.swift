// The write half of a push as a function in the tenant's schema, so the tenant's lock is
// held only while PostgreSQL runs it: no round trip to the hub happens under the lock.
//
// A push reads what it needs (identities, quarantine entries, records) without the lock,
// judges and merges the batch in the hub, then calls `ts_apply_push`, which takes the
// tenant's `head` row lock, checks in a fresh snapshot that nothing it read has changed
// since (else it fails with SQLSTATE 40001 and the hub judges the batch again), numbers
// the changes after the head and writes every table. The hub falls back to reading under
// the lock (`verify` false) after repeated 40001s, so a hot record cannot starve a push.
// The read is a function too (`ts_read_push`). PL/pgSQL prepares a function's statements
// once per connection, and ``keyedPlanSettings`` makes it keep one plan of look-ups by key
// for them instead of planning each call (which, for the check, happened under the lock).

extension PostgresTenantSchema {
    /// The SQLSTATE `ts_apply_push` fails with when what the push read has changed.
    static let staleReadState = "40001"
    /// The SQLSTATE of a lock not obtained within `lock_timeout` (compaction's rewrites).
    static let lockNotAvailableState = "55P03"

    /// `CREATE OR REPLACE FUNCTION` of `ts_apply_push` for this schema (parameters in the
    /// order ``PushWrite`` binds them).
    var applyPushFunction: String {
        let q = { (t: Table) in self.qualified(t) }
        return """
            CREATE OR REPLACE FUNCTION "\(name)".ts_apply_push(
              verify boolean, ident_o text[], ident_s int8[], held_count int8,
              qx_o text[], qx_s int8[], qx_code text[], qx_at int8[], qx_from text[],
              rx_t text[], rx_i text[], rx_v text[], rx_d text[], rx_r text[], ax_t text[], ax_i text[],
              numbered int8,
              r_t text[], r_i text[], r_f text[], r_v text[], r_d text[], r_r text[], r_l bool[], r_n bool[],
              l_s int8[], l_o text[], l_os int8[], l_h int8[], l_t text[], l_i text[], l_op text[], l_f text[], l_p text[],
              l_src text[], l_rf text[], l_ra int8[], l_tr text[], l_rt text[],
              rt_n text[], rt_s int8[],
              e_n text[], e_s int8[], e_t text[], e_i text[], e_b text[],
              c_t text[], c_i text[], c_f text[], c_w text[], c_wv text[], c_l text[], c_lv text[], c_at int8[],
              g_o text[], g_s int8[],
              q_o text[], q_s int8[], q_from text[], q_at int8[], q_code text[], q_reason text[], q_change text[],
              s_t text[], s_i text[], s_f text[], s_v text[],
              erasure_gen int8, er_o text[], er_s int8[], er_e text[], er_at int8[],
              notify_channel text, notify_tenant text, cursor_key text, cursor_value text,
              rg_o text[], rg_lo int8[], rg_hi int8[], rg_n int8[], ident_all_o text[], ident_all_s int8[])
            RETURNS int8 LANGUAGE plpgsql
              \(Self.keyedPlanSettings) AS $fn$
            DECLARE
              base int8;
              erased int8;
            BEGIN
              -- The tenant's one lock: positions are handed out and committed in order.
              SELECT seq, erasures INTO base, erased FROM \(q(.head)) WHERE id = 1 FOR UPDATE;
              -- Each statement below sees every push committed before the lock was granted.
              IF verify AND (
                   erased <> erasure_gen
                -- Each probe is a LATERAL subquery per identity, fenced (`OFFSET 0`) so it is
                -- never flattened into a join: a look-up by key whatever the plan's estimates
                -- (see ``keyedPlanSettings``).
                -- Held: logged, or logged and purged since (compaction moves an identity from
                -- the log to the purged ranges in one transaction: never in both or neither).
                OR (SELECT count(*) FILTER (WHERE c.origin IS NOT NULL
                      OR (SELECT p.hi FROM \(q(.purgedRanges)) p WHERE p.origin = u.o AND p.lo <= u.s ORDER BY p.lo DESC LIMIT 1) >= u.s)
                    FROM unnest(ident_o, ident_s) AS u(o, s)
                    LEFT JOIN LATERAL (SELECT c.origin FROM \(q(.changes)) c WHERE c.origin = u.o AND c.origin_seq = u.s OFFSET 0) c ON true)
                   <> held_count
                -- Identities read as a range (`ts_read_push`): the range holds as many
                -- identities, logged or purged, as it did then, so none of them was applied
                -- since (compaction moving one from the log to the purged ranges keeps the sum).
                OR EXISTS (SELECT 1 FROM unnest(rg_o, rg_lo, rg_hi, rg_n) AS u(o, lo, hi, n)
                    WHERE \(rangeHeldCount) <> u.n)
                -- Quarantine holds no row of the batch it did not hold when read; an empty
                -- quarantine (the usual case) is not probed.
                OR (CASE WHEN EXISTS (SELECT 1 FROM \(q(.quarantine))) THEN
                      (SELECT count(x.origin) FROM unnest(ident_all_o, ident_all_s) AS u(o, s)
                       LEFT JOIN LATERAL (SELECT x.origin FROM \(q(.quarantine)) x WHERE x.origin = u.o AND x.origin_seq = u.s OFFSET 0) x ON true)
                    ELSE 0 END) <> cardinality(qx_o)
                OR (SELECT count(x.origin) FROM unnest(qx_o, qx_s, qx_code, qx_at, qx_from) AS u(o, s, c, a, f)
                    LEFT JOIN LATERAL (SELECT x.origin FROM \(q(.quarantine)) x WHERE x.origin = u.o AND x.origin_seq = u.s
                      AND x.code = u.c AND x.received_at = u.a AND x.received_from = u.f OFFSET 0) x ON true) <> cardinality(qx_o)
                OR (SELECT count(r.tbl) FROM unnest(rx_t, rx_i, rx_v, rx_d, rx_r) AS u(t, i, v, d, rt)
                    LEFT JOIN LATERAL (SELECT r.tbl FROM \(q(.records)) r WHERE r.tbl = u.t AND r.id = u.i AND r.versions = u.v AND r.route = u.rt
                      AND r.tombstone IS NOT DISTINCT FROM NULLIF(u.d, '') OFFSET 0) r ON true) <> cardinality(rx_t)
                OR (SELECT count(r.tbl) FROM unnest(ax_t, ax_i) AS u(t, i)
                    LEFT JOIN LATERAL (SELECT r.tbl FROM \(q(.records)) r WHERE r.tbl = u.t AND r.id = u.i OFFSET 0) r ON true) > 0)
              THEN
                RAISE EXCEPTION 'tiersync: what this push read changed before it was written' USING ERRCODE = '\(Self.staleReadState)';
              END IF;
              -- Records read as absent (`r_n`; the check above, or the lock held since the
              -- read, guarantees they still are) by a plain insert, which costs about half
              -- of the upsert's speculative insertion; the others by the upsert.
              IF true = ANY(r_n) THEN
                INSERT INTO \(q(.records)) (tbl, id, fields, versions, tombstone, route, live)
                  SELECT t, i, f, v, NULLIF(d, ''), r, l FROM unnest(r_t, r_i, r_f, r_v, r_d, r_r, r_l, r_n) AS u(t, i, f, v, d, r, l, n) WHERE n;
              END IF;
              IF false = ANY(r_n) THEN
                INSERT INTO \(q(.records)) (tbl, id, fields, versions, tombstone, route, live)
                  SELECT t, i, f, v, NULLIF(d, ''), r, l FROM unnest(r_t, r_i, r_f, r_v, r_d, r_r, r_l, r_n) AS u(t, i, f, v, d, r, l, n) WHERE NOT n
                  ON CONFLICT (tbl, id) DO UPDATE SET fields = excluded.fields, versions = excluded.versions,
                    tombstone = excluded.tombstone, route = excluded.route, live = excluded.live;
              END IF;
              INSERT INTO \(q(.changes)) (seq, origin, origin_seq, hlc, tbl, record_id, op, fields, prior, source, received_from, received_at, trail, routed)
                SELECT base + s, o, os, h, t, i, op, f, NULLIF(p, ''), src, NULLIF(rf, ''), ra, NULLIF(tr, ''), rt
                FROM unnest(l_s, l_o, l_os, l_h, l_t, l_i, l_op, l_f, l_p, l_src, l_rf, l_ra, l_tr, l_rt)
                  AS u(s, o, os, h, t, i, op, f, p, src, rf, ra, tr, rt);
              INSERT INTO \(q(.changeRoutes)) (node, seq) SELECT n, base + s FROM unnest(rt_n, rt_s) AS u(n, s);
              -- The rarer writes only when there is something to write: a statement run on
              -- empty arrays still costs its executor's start, under the lock.
              IF cardinality(e_n) > 0 THEN
                INSERT INTO \(q(.routeEntries)) (node, seq, tbl, record_id, route_before)
                  SELECT n, base + s, t, i, b FROM unnest(e_n, e_s, e_t, e_i, e_b) AS u(n, s, t, i, b) ON CONFLICT DO NOTHING;
              END IF;
              -- A kept conflict settles once a version newer than both of its values is in force
              -- for its field (someone wrote the field after it, such as a resolution); before
              -- this batch's own conflicts are recorded. Versions compare as (hlc, node).
              IF cardinality(s_t) > 0 AND EXISTS (SELECT 1 FROM \(q(.conflicts))) THEN
                -- Rare, so planned at each call (EXECUTE) with the tables' current sizes.
                EXECUTE $x$DELETE FROM \(q(.conflicts)) c USING unnest($1, $2, $3, $4) AS u(t, i, f, v)
                  WHERE c.tbl = u.t AND c.record_id = u.i AND c.field = u.f
                    AND (split_part(c.winner_version, '@', 1)::numeric, split_part(c.winner_version, '@', 2) COLLATE "C")
                      < (split_part(u.v, '@', 1)::numeric, split_part(u.v, '@', 2) COLLATE "C")$x$ USING s_t, s_i, s_f, s_v;
              END IF;
              IF cardinality(c_t) > 0 THEN
                INSERT INTO \(q(.conflicts)) (tbl, record_id, field, winner_value, winner_version, loser_value, loser_version, detected_at)
                  SELECT * FROM unnest(c_t, c_i, c_f, c_w, c_wv, c_l, c_lv, c_at) ON CONFLICT DO NOTHING;
              END IF;
              -- The refused and the applied identities are disjoint: no row is met twice.
              IF cardinality(g_o) > 0 THEN
                EXECUTE $x$DELETE FROM \(q(.quarantine)) x USING unnest($1, $2) AS u(o, s)
                  WHERE x.origin = u.o AND x.origin_seq = u.s$x$ USING g_o, g_s;
              END IF;
              IF cardinality(q_o) > 0 THEN
                INSERT INTO \(q(.quarantine)) (origin, origin_seq, received_from, received_at, code, reason, change)
                  SELECT * FROM unnest(q_o, q_s, q_from, q_at, q_code, q_reason, q_change)
                  ON CONFLICT (origin, origin_seq) DO UPDATE SET received_from = excluded.received_from, received_at = excluded.received_at,
                    code = excluded.code, reason = excluded.reason, change = excluded.change;
              END IF;
              -- Changes refused because their data was erased, counted once by identity.
              IF cardinality(er_o) > 0 THEN
                INSERT INTO \(q(.erasedRefusals)) (origin, origin_seq, erasure_id, refused_at)
                  SELECT * FROM unnest(er_o, er_s, er_e, er_at) ON CONFLICT DO NOTHING;
              END IF;
              IF numbered > 0 THEN
                UPDATE \(q(.head)) SET seq = base + numbered WHERE id = 1;
                -- Every hub process listening on this database wakes its long-polls for the
                -- tenant once the transaction commits (PostgreSQL sends it at commit).
                PERFORM pg_notify(notify_channel, notify_tenant);
              END IF;
              IF cursor_key IS NOT NULL THEN
                INSERT INTO \(q(.meta)) (key, value) VALUES (cursor_key, cursor_value) ON CONFLICT (key) DO UPDATE SET value = excluded.value;
              END IF;
              RETURN base;
            END
            $fn$
            """
    }

    /// `CREATE OR REPLACE FUNCTION` of `ts_read_push`: the read half of a push, what the
    /// store holds of the batch's identities (applied, quarantined, refused as erased), of
    /// the records it touches, of its origins' sequences and the erasure generation. Rows:
    /// kind and up to eight columns, as `PostgresTenantStore.read(for:_:)` decodes them. A
    /// function, so its plan is made once per connection rather than at every push (it cost
    /// more than running it); each table is probed per key (LATERAL, fenced with `OFFSET 0`),
    /// whatever the row estimates.
    ///
    /// Its statements see one snapshot, the calling query's (a `STABLE` function takes no
    /// snapshot of its own), so they agree as one statement would. Two shortcuts, each
    /// measured on a push of 1,000 new changes, where a probe per identity and table was most
    /// of the read:
    /// - An origin's identities that lie close together (`p_range_*`, at most twice as many
    ///   sequences as identities: a node pushes its log in order) are read as one range of the
    ///   log's index; the caller keeps the rows of its own identities. Others, one by one.
    /// - Quarantine, erased records and erased refusals are usually empty: probed only when
    ///   they hold a row.
    var readPushFunction: String {
        let q = { (t: Table) in self.qualified(t) }
        return """
            CREATE OR REPLACE FUNCTION "\(name)".ts_read_push(
              p_origins text[], p_seqs int8[], p_tables text[], p_ids text[], p_batch_origins text[],
              p_erased_tables text[], p_erased_ids text[], p_lo int8, p_hi int8,
              p_range_o text[], p_range_lo int8[], p_range_hi int8[], p_all_o text[], p_all_s int8[])
            RETURNS TABLE (r_kind int4, r_a text, r_b text, r_c text, r_d text, r_e text, r_f text, r_n1 int8, r_n2 int8)
            LANGUAGE plpgsql STABLE
              \(Self.keyedPlanSettings) AS $fn$
            BEGIN
              RETURN QUERY
              SELECT 0, c.origin, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, c.origin_seq, c.hlc FROM unnest(p_origins, p_seqs) AS u(o, s),
                LATERAL (SELECT origin, origin_seq, hlc FROM \(q(.changes)) c WHERE c.origin = u.o AND c.origin_seq = u.s OFFSET 0) c
              UNION ALL
              SELECT 0, c.origin, NULL, NULL, NULL, NULL, NULL, c.origin_seq, c.hlc FROM unnest(p_range_o, p_range_lo, p_range_hi) AS u(o, lo, hi),
                LATERAL (SELECT origin, origin_seq, hlc FROM \(q(.changes)) c WHERE c.origin = u.o AND c.origin_seq BETWEEN u.lo AND u.hi OFFSET 0) c
              UNION ALL
              SELECT 2, r.tbl, r.id, r.fields, r.versions, r.tombstone, r.route, NULL, NULL
                FROM unnest(p_tables, p_ids) AS u(t, i),
                LATERAL (SELECT tbl, id, fields, versions, tombstone, route FROM \(q(.records)) r WHERE r.tbl = u.t AND r.id = u.i OFFSET 0) r
              UNION ALL
              SELECT 3, o.o, (SELECT through_seq::text FROM \(q(.purged)) p WHERE p.origin = o.o), NULL, NULL, NULL, NULL,
                (SELECT max(c.origin_seq) FROM \(q(.changes)) c WHERE c.origin = o.o AND c.origin_seq BETWEEN p_lo AND p_hi),
                GREATEST((SELECT max(x.origin_seq) FROM \(q(.quarantine)) x WHERE x.origin = o.o AND x.origin_seq BETWEEN p_lo AND p_hi),
                         (SELECT k.max_seq FROM \(q(.quarantineUnkept)) k WHERE k.origin = o.o))
              FROM unnest(p_batch_origins) AS o(o)
              UNION ALL
              SELECT 7, u.o, NULL, NULL, NULL, NULL, NULL, \(rangePurgedCount), NULL FROM unnest(p_range_o, p_range_lo, p_range_hi) AS u(o, lo, hi)
              UNION ALL
              SELECT 6, '', NULL, NULL, NULL, NULL, NULL, h.erasures, NULL FROM \(q(.head)) h WHERE h.id = 1;
              IF EXISTS (SELECT 1 FROM \(q(.quarantine))) THEN
                RETURN QUERY
                SELECT 1, x.origin, x.code, x.received_from, NULL::text, NULL::text, NULL::text, x.origin_seq, x.received_at FROM unnest(p_all_o, p_all_s) AS u(o, s),
                  LATERAL (SELECT origin, code, received_from, origin_seq, received_at FROM \(q(.quarantine)) x
                           WHERE x.origin = u.o AND x.origin_seq = u.s OFFSET 0) x;
              END IF;
              IF EXISTS (SELECT 1 FROM \(q(.erasedRecords))) THEN
                RETURN QUERY
                SELECT 4, e.tbl, e.id, e.erasure_id, e.route, NULL::text, NULL::text, NULL::int8, NULL::int8
                  FROM unnest(p_erased_tables, p_erased_ids) AS u(t, i),
                  LATERAL (SELECT tbl, id, erasure_id, route FROM \(q(.erasedRecords)) e WHERE e.tbl = u.t AND e.id = u.i OFFSET 0) e;
              END IF;
              IF EXISTS (SELECT 1 FROM \(q(.erasedRefusals))) THEN
                RETURN QUERY
                SELECT 5, f.origin, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, f.origin_seq, NULL::int8 FROM unnest(p_all_o, p_all_s) AS u(o, s),
                  LATERAL (SELECT origin, origin_seq FROM \(q(.erasedRefusals)) f WHERE f.origin = u.o AND f.origin_seq = u.s OFFSET 0) f;
              END IF;
            END
            $fn$
            """
    }

    /// The identities of origin `u.o` from `u.lo` to `u.hi` held here: logged, or logged and
    /// purged since. The check computes it whole, the read in two parts (its log rows and
    /// ``rangePurgedCount``).
    private var rangeHeldCount: String {
        "((SELECT count(*) FROM \(qualified(.changes)) c WHERE c.origin = u.o AND c.origin_seq BETWEEN u.lo AND u.hi) + \(rangePurgedCount))"
    }

    /// The sequences of origin `u.o` from `u.lo` to `u.hi` within its purged ranges (disjoint,
    /// `ts_note_purged`): the range holding `u.lo`, if any, and those starting after it, at
    /// most as many as the sequences asked: two look-ups by key.
    private var rangePurgedCount: String {
        let p = qualified(.purgedRanges)
        return "(COALESCE((SELECT GREATEST(LEAST(p.hi, u.hi) - u.lo + 1, 0) FROM \(p) p WHERE p.origin = u.o AND p.lo <= u.lo ORDER BY p.lo DESC LIMIT 1), 0)"
            + " + COALESCE((SELECT sum(LEAST(p.hi, u.hi) - p.lo + 1) FROM \(p) p WHERE p.origin = u.o AND p.lo > u.lo AND p.lo <= u.hi), 0))::int8"
    }

    /// The settings of the functions on a push's path. Their statements are planned once
    /// per connection (a generic plan: planning them at every call cost more than running
    /// them, and the push's check was planned under the tenant's lock), so the plan must
    /// not depend on row estimates: every look-up is by key, through an index, in a nested
    /// loop from the push's own values. With a hash join or a scan of the table, a plan
    /// made while a table was small (after compaction, or in a new tenant) would read it
    /// whole at every push once it had grown. These settings alone are not enough: a
    /// `LATERAL` subquery or a join from an array is flattened into a join, and with a table
    /// estimated at one row the planner then scans the whole index once and filters
    /// (measured: 0.6 s a push after compaction). So each look-up is a `LATERAL` subquery
    /// fenced with `OFFSET 0`, which is always run per row with its keys as the index's
    /// condition.
    static let keyedPlanSettings = """
        SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off
          SET enable_hashjoin = off SET enable_mergejoin = off
        """
}

// The write half of a push as a function in the tenant's schema, so the tenant's lock is
// held only while PostgreSQL runs it: no round trip to the hub happens under the lock.
//
// A push reads what it needs (identities, quarantine entries, records) without the lock,
// judges and merges the batch in the hub, then calls `ts_apply_push`, which takes the
// tenant's `head` row lock, checks in a fresh snapshot that nothing it read has changed
// since (else it fails with SQLSTATE 40001 and the hub judges the batch again), numbers
// the changes after the head and writes every table. PL/pgSQL prepares a function's
// statements once per connection (PostgreSQL still re-plans those it judges cheaper with
// the call's values). The hub falls back to reading under the lock (`verify` false) after
// repeated 40001s, so a hot record cannot starve a push.

extension PostgresTenantSchema {
    /// The SQLSTATE `ts_apply_push` fails with when what the push read has changed.
    static let staleReadState = "40001"
    /// The SQLSTATE of a lock not obtained within `lock_timeout` (compaction's rewrites).
    static let lockNotAvailableState = "55P03"

    /// How many parameters ``applyPushFunction`` declares (its other versions are dropped).
    var applyPushParameterCount: Int {
        let text = applyPushFunction
        guard let open = text.range(of: "ts_apply_push("), let close = text.range(of: ")\n", range: open.upperBound..<text.endIndex) else { return 0 }
        return text[open.upperBound..<close.lowerBound].split(separator: ",").count
    }

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
              r_t text[], r_i text[], r_f text[], r_v text[], r_d text[], r_r text[], r_l bool[],
              l_s int8[], l_o text[], l_os int8[], l_h int8[], l_t text[], l_i text[], l_op text[], l_f text[], l_p text[],
              l_src text[], l_rf text[], l_ra int8[], l_tr text[], l_rt text[],
              rt_n text[], rt_s int8[],
              e_n text[], e_s int8[], e_t text[], e_i text[], e_b text[],
              c_t text[], c_i text[], c_f text[], c_w text[], c_wv text[], c_l text[], c_lv text[], c_at int8[],
              g_o text[], g_s int8[],
              q_o text[], q_s int8[], q_from text[], q_at int8[], q_code text[], q_reason text[], q_change text[],
              s_t text[], s_i text[], s_f text[], s_v text[],
              erasure_gen int8, er_o text[], er_s int8[], er_e text[], er_at int8[],
              notify_channel text, notify_tenant text, cursor_key text, cursor_value text)
            RETURNS int8 LANGUAGE plpgsql AS $fn$
            DECLARE
              base int8;
              erased int8;
            BEGIN
              -- The tenant's one lock: positions are handed out and committed in order.
              SELECT seq, erasures INTO base, erased FROM \(q(.head)) WHERE id = 1 FOR UPDATE;
              -- Each statement below sees every push committed before the lock was granted.
              IF verify AND (
                   erased <> erasure_gen
                -- Held: logged, or logged and purged since (compaction moves an identity from
                -- the log to the purged ranges in one transaction: never in both or neither).
                OR (SELECT count(*) FROM unnest(ident_o, ident_s) AS u(o, s)
                    WHERE EXISTS (SELECT 1 FROM \(q(.changes)) c WHERE c.origin = u.o AND c.origin_seq = u.s)
                       OR (SELECT p.hi FROM \(q(.purgedRanges)) p WHERE p.origin = u.o AND p.lo <= u.s ORDER BY p.lo DESC LIMIT 1) >= u.s)
                   <> held_count
                OR (SELECT count(*) FROM \(q(.quarantine)) x JOIN unnest(ident_o, ident_s) AS u(o, s)
                      ON x.origin = u.o AND x.origin_seq = u.s) <> cardinality(qx_o)
                OR (SELECT count(*) FROM \(q(.quarantine)) x JOIN unnest(qx_o, qx_s, qx_code, qx_at, qx_from) AS u(o, s, c, a, f)
                      ON x.origin = u.o AND x.origin_seq = u.s AND x.code = u.c AND x.received_at = u.a
                     AND x.received_from = u.f) <> cardinality(qx_o)
                OR (SELECT count(*) FROM \(q(.records)) r JOIN unnest(rx_t, rx_i, rx_v, rx_d, rx_r) AS u(t, i, v, d, rt)
                      ON r.tbl = u.t AND r.id = u.i AND r.versions = u.v AND r.route = u.rt
                     AND r.tombstone IS NOT DISTINCT FROM NULLIF(u.d, '')) <> cardinality(rx_t)
                OR EXISTS (SELECT 1 FROM \(q(.records)) r JOIN unnest(ax_t, ax_i) AS u(t, i) ON r.tbl = u.t AND r.id = u.i))
              THEN
                RAISE EXCEPTION 'tiersync: what this push read changed before it was written' USING ERRCODE = '\(Self.staleReadState)';
              END IF;
              INSERT INTO \(q(.records)) (tbl, id, fields, versions, tombstone, route, live)
                SELECT t, i, f, v, NULLIF(d, ''), r, l FROM unnest(r_t, r_i, r_f, r_v, r_d, r_r, r_l) AS u(t, i, f, v, d, r, l)
                ON CONFLICT (tbl, id) DO UPDATE SET fields = excluded.fields, versions = excluded.versions,
                  tombstone = excluded.tombstone, route = excluded.route, live = excluded.live;
              INSERT INTO \(q(.changes)) (seq, origin, origin_seq, hlc, tbl, record_id, op, fields, prior, source, received_from, received_at, trail, routed)
                SELECT base + s, o, os, h, t, i, op, f, NULLIF(p, ''), src, NULLIF(rf, ''), ra, NULLIF(tr, ''), rt
                FROM unnest(l_s, l_o, l_os, l_h, l_t, l_i, l_op, l_f, l_p, l_src, l_rf, l_ra, l_tr, l_rt)
                  AS u(s, o, os, h, t, i, op, f, p, src, rf, ra, tr, rt);
              INSERT INTO \(q(.changeRoutes)) (node, seq) SELECT n, base + s FROM unnest(rt_n, rt_s) AS u(n, s);
              INSERT INTO \(q(.routeEntries)) (node, seq, tbl, record_id, route_before)
                SELECT n, base + s, t, i, b FROM unnest(e_n, e_s, e_t, e_i, e_b) AS u(n, s, t, i, b) ON CONFLICT DO NOTHING;
              -- A kept conflict settles once a version newer than both of its values is in force
              -- for its field (someone wrote the field after it, such as a resolution); before
              -- this batch's own conflicts are recorded. Versions compare as (hlc, node).
              IF EXISTS (SELECT 1 FROM \(q(.conflicts))) THEN
                DELETE FROM \(q(.conflicts)) c USING unnest(s_t, s_i, s_f, s_v) AS u(t, i, f, v)
                  WHERE c.tbl = u.t AND c.record_id = u.i AND c.field = u.f
                    AND (split_part(c.winner_version, '@', 1)::numeric, split_part(c.winner_version, '@', 2) COLLATE "C")
                      < (split_part(u.v, '@', 1)::numeric, split_part(u.v, '@', 2) COLLATE "C");
              END IF;
              INSERT INTO \(q(.conflicts)) (tbl, record_id, field, winner_value, winner_version, loser_value, loser_version, detected_at)
                SELECT * FROM unnest(c_t, c_i, c_f, c_w, c_wv, c_l, c_lv, c_at) ON CONFLICT DO NOTHING;
              -- The refused and the applied identities are disjoint: no row is met twice.
              DELETE FROM \(q(.quarantine)) x USING unnest(g_o, g_s) AS u(o, s) WHERE x.origin = u.o AND x.origin_seq = u.s;
              INSERT INTO \(q(.quarantine)) (origin, origin_seq, received_from, received_at, code, reason, change)
                SELECT * FROM unnest(q_o, q_s, q_from, q_at, q_code, q_reason, q_change)
                ON CONFLICT (origin, origin_seq) DO UPDATE SET received_from = excluded.received_from, received_at = excluded.received_at,
                  code = excluded.code, reason = excluded.reason, change = excluded.change;
              -- Changes refused because their data was erased, counted once by identity.
              INSERT INTO \(q(.erasedRefusals)) (origin, origin_seq, erasure_id, refused_at)
                SELECT * FROM unnest(er_o, er_s, er_e, er_at) ON CONFLICT DO NOTHING;
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
}

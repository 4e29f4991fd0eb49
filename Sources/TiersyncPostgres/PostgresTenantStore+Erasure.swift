// Erasure on PostgreSQL (docs/PRIVACY.md), as the SQLite engine does it (NodeStore+Erasure):
// a new erasure marker, pushed by a node or written by the hub (the admin API), erases its
// subject and everything linked to it in the transaction that applies it, under the tenant's
// lock — rows and tombstones, the values of every change-log entry (the entry's identity
// stays, so a redelivery is a duplicate, and it is never fed again), conflicts, quarantined
// changes, the route index — keeps only the erased records' ids and last routes (later
// changes of them are refused and counted), and routes the marker on to every node the data
// was routed to here. After the commit the hub writes its own acknowledgement, with the same
// digest the SQLite engine computes for the same records.
//
// What PostgreSQL cannot promise as SQLite's `secure_delete` does: deleted tuples stay in
// their pages until VACUUM reuses the space, and in the write-ahead log until its segments
// are recycled (docs/PRIVACY.md, "Limits").

import Foundation
import PostgresNIO
import TiersyncCore
import TiersyncStorage

extension PostgresTenantStore {
    /// The op a change-log entry gets once its values are erased (as on SQLite).
    static let erasedOp = "erased"

    /// One erasure marker, in a transaction of its own under the tenant's lock: if it is a
    /// new marker the judgement would apply, its subject is erased first and the marker is
    /// routed to the nodes that held the data; otherwise it is judged as any change.
    func applyMarker(_ change: Change, from sender: NodeID, source: ChangeSource, checkSkew: Bool, gate: ChangeGate?,
                     cursor: (name: String, value: Int64)?, wallMillis: UInt64) async throws -> IncomingReport {
        let logger = self.logger
        let report = try await client.withTransaction(logger: logger) { connection -> IncomingReport in
            _ = try await connection.query("SELECT seq FROM \(unescaped: table(.head)) WHERE id = 1 FOR UPDATE", logger: logger).collect()
            guard change.op == .upsert, let subject = Erasure.subject(of: change.fields),
                  try await wouldCreate(change, from: sender, source: source, checkSkew: checkSkew, gate: gate, wallMillis: wallMillis, on: connection)
            else {
                return try await applyChanges([change], from: sender, source: source, checkSkew: checkSkew, gate: gate, cursor: cursor,
                                              wallMillis: wallMillis, on: connection)
            }
            // A child may erase only what is routed into its scope; anything else is left
            // alone and answered as for a record that does not exist.
            let allowed = { (route: Set<NodeID>) in
                gate.map { $0(GateContext(change: change, sender: sender, routeBefore: route, routeAfter: route, erasing: true)) == nil } ?? true
            }
            let holders = try await eraseSubject(connection, erasureID: change.recordID, subject: subject, allowed: allowed, nowMillis: wallMillis)
            return try await applyChanges([change], from: sender, source: source, checkSkew: checkSkew, gate: gate, cursor: cursor,
                                          wallMillis: wallMillis, on: connection, routeAdding: holders)
        }
        try await writeErasureAcknowledgements(wallMillis: wallMillis)
        return report
    }

    /// Erases the subject and everything linked to it; returns the nodes the erased data was
    /// routed to here (the marker goes on to them).
    private func eraseSubject(_ connection: PostgresConnection, erasureID: String, subject: (table: Erasure.SubjectTable, id: String),
                              allowed: (Set<NodeID>) -> Bool, nowMillis: UInt64) async throws -> Set<NodeID> {
        var records: [(table: String, id: String)] = []
        var holders: Set<NodeID> = []
        let (subjectTable, subjectID) = (subject.table.rawValue, subject.id)
        // A child may erase what is routed into its scope now: a customer that once was
        // (its old routes are in the log) and moved to another country is not its to erase.
        if try await holds(connection, table: subjectTable, id: subjectID) {
            if allowed(try await currentRoute(connection, table: subjectTable, id: subjectID)) {
                records = try await linkedRecords(connection, subject: (subjectTable, subjectID))
            }
        } else {
            // The customer is not held here, but records naming it may be (a dialogue or a
            // lead routed here of a customer routed elsewhere): they are erased, and the
            // customer is noted as erased so nothing naming it comes back.
            var linked: [(table: String, id: String)] = []
            for record in try await linkedRecords(connection, subject: (subjectTable, subjectID)).dropFirst()
            where allowed(try await currentRoute(connection, table: record.table, id: record.id)) {
                linked.append(record)
            }
            if !linked.isEmpty { records = [(subjectTable, subjectID)] + linked }
        }
        if records.isEmpty {
            // Not held here (or outside the sender's scope, answered alike): nothing to erase,
            // unless an earlier request erased it, which this hub then acknowledges too.
            let before = try await connection.query("""
                SELECT route FROM \(unescaped: table(.erasedRecords)) WHERE tbl = \(subjectTable) AND id = \(subjectID)
                """, logger: logger).collect().first.map { try $0.decode(String.self) }
            guard let before, allowed(RecordMerge.parseRoute(before)) else { return [] }
            holders = RecordMerge.parseRoute(before)
        }
        var (erasedRecords, logEntries) = (0, 0)
        for (tbl, id) in records {
            let routed = try await route(connection, table: tbl, id: id)
            holders.formUnion(routed)
            let (changes, quarantine) = (table(.changes), table(.quarantine))
            let (ofTable, ofID) = (Self.quarantinedKey("table", tbl), Self.quarantinedKey("id", id))
            for statement: PostgresQuery in [
                "DELETE FROM \(unescaped: table(.changeRoutes)) r USING \(unescaped: changes) c WHERE c.tbl = \(tbl) AND c.record_id = \(id) AND r.seq = c.seq",
                "DELETE FROM \(unescaped: table(.routeEntries)) WHERE tbl = \(tbl) AND record_id = \(id)",
                "DELETE FROM \(unescaped: table(.conflicts)) WHERE tbl = \(tbl) AND record_id = \(id)",
                "DELETE FROM \(unescaped: quarantine) WHERE strpos(change, \(ofTable)) > 0 AND strpos(change, \(ofID)) > 0",
            ] {
                _ = try await connection.query(statement, logger: logger).collect()
            }
            // Quarantined changes naming this record through a link (a dialogue of the
            // customer refused earlier) hold its data too.
            for link in Erasure.links(to: tbl) {
                let (linking, naming) = (Self.quarantinedKey("table", link.table), Self.quarantinedKey(link.field, id))
                _ = try await connection.query("""
                    DELETE FROM \(unescaped: quarantine) WHERE strpos(change, \(linking)) > 0 AND strpos(change, \(naming)) > 0
                    """, logger: logger).collect()
            }
            logEntries += try await connection.query("""
                UPDATE \(unescaped: changes) SET op = \(Self.erasedOp), fields = '{}', prior = NULL, trail = NULL
                WHERE tbl = \(tbl) AND record_id = \(id) AND op <> \(Self.erasedOp) RETURNING 1
                """, logger: logger).collect().count
            let removed = try await connection.query("DELETE FROM \(unescaped: table(.records)) WHERE tbl = \(tbl) AND id = \(id) RETURNING 1",
                                                     logger: logger).collect().count
            erasedRecords += removed > 0 ? 1 : 0
            _ = try await connection.query("""
                INSERT INTO \(unescaped: table(.erasedRecords)) (tbl, id, erasure_id, route)
                VALUES (\(tbl), \(id), \(erasureID), \(RecordMerge.encodeRoute(routed))) ON CONFLICT DO NOTHING
                """, logger: logger).collect()
        }
        let digest = try await erasureDigest(connection, erasureID: erasureID, records: records)
        _ = try await connection.query("""
            INSERT INTO \(unescaped: table(.erasures)) (erasure_id, subject_table, subject_id, erased_at, records, log_entries, digest)
            VALUES (\(erasureID), \(subjectTable), \(subjectID), \(Int64(clamping: nowMillis)), \(erasedRecords), \(logEntries), \(digest))
            ON CONFLICT DO NOTHING
            """, logger: logger).collect()
        // Pushes that read before this erasure fail their check under the lock and are judged again.
        _ = try await connection.query("UPDATE \(unescaped: table(.head)) SET erasures = erasures + 1 WHERE id = 1", logger: logger).collect()
        return holders
    }

    /// `"key":"value"` as canonical JSON writes it (records' and log entries' `fields`): a
    /// match is that key at the top level with that value, since quotes inside a JSON string
    /// are escaped. Text is matched, not parsed: a value PostgreSQL's JSON types refuse (a
    /// string holding U+0000) must not stop an erasure.
    static func canonicalKey(_ key: String, _ value: String) -> String {
        canonicalName(key) + FieldValue.string(value).canonical
    }

    /// How a field's name, with the colon, begins its entry in canonical JSON (`"model":`):
    /// followed by `"` exactly when the field holds a string.
    static func canonicalName(_ key: String) -> String {
        FieldValue.string(key).canonical + ":"
    }

    /// The same for a quarantined change (kept as `JSONEncoder` writes it, which escapes `/`).
    static func quarantinedKey(_ key: String, _ value: String) -> String {
        let encode = { (s: String) in (try? JSONEncoder().encode(s)).map { String(decoding: $0, as: UTF8.self) } ?? FieldValue.string(s).canonical }
        return encode(key) + ":" + encode(value)
    }

    /// Whether anything of a record is held: a row (live or a tombstone) or a log entry with values.
    private func holds(_ connection: PostgresConnection, table tbl: String, id: String) async throws -> Bool {
        try await connection.query("""
            SELECT EXISTS (SELECT 1 FROM \(unescaped: table(.changes)) WHERE tbl = \(tbl) AND record_id = \(id) AND op <> \(Self.erasedOp))
                OR EXISTS (SELECT 1 FROM \(unescaped: table(.records)) WHERE tbl = \(tbl) AND id = \(id))
            """, logger: logger).collect().first.map { try $0.decode(Bool.self) } ?? false
    }

    /// The nodes a record is routed to now (its row's route, live or a tombstone).
    private func currentRoute(_ connection: PostgresConnection, table tbl: String, id: String) async throws -> Set<NodeID> {
        try await connection.query("SELECT route FROM \(unescaped: table(.records)) WHERE tbl = \(tbl) AND id = \(id)", logger: logger)
            .collect().first.map { RecordMerge.parseRoute(try $0.decode(String.self)) } ?? []
    }

    /// Every node a record was routed to here: its route now and every node any of its
    /// logged changes reached or entered.
    private func route(_ connection: PostgresConnection, table tbl: String, id: String) async throws -> Set<NodeID> {
        var nodes: Set<NodeID> = []
        let rows = try await connection.query("""
            SELECT route FROM \(unescaped: table(.records)) WHERE tbl = \(tbl) AND id = \(id)
            UNION ALL
            SELECT DISTINCT r.node FROM \(unescaped: table(.changeRoutes)) r JOIN \(unescaped: table(.changes)) c ON c.seq = r.seq
              WHERE c.tbl = \(tbl) AND c.record_id = \(id)
            UNION ALL
            SELECT node FROM \(unescaped: table(.routeEntries)) WHERE tbl = \(tbl) AND record_id = \(id)
            """, logger: logger)
        for try await listed in rows.decode(String.self) { nodes.formUnion(RecordMerge.parseRoute(listed)) }
        return nodes
    }

    /// The subject and every record linking to it, transitively, through the records and
    /// through the log (a deleted dialogue's entries still name its customer). Reads each
    /// linked table's values as JSON: seconds on a very large tenant (docs/PRIVACY.md).
    private func linkedRecords(_ connection: PostgresConnection, subject: (String, String)) async throws -> [(table: String, id: String)] {
        var found: [(table: String, id: String)] = [subject]
        var seen: Set<String> = ["\(subject.0)\u{0}\(subject.1)"]
        var next = 0
        while next < found.count {
            let (tbl, id) = found[next]
            next += 1
            for link in Erasure.links(to: tbl) {
                guard let linking = schema.table(link.table), linking.field(link.field) != nil else { continue }
                let naming = Self.canonicalKey(link.field, id)
                let rows = try await connection.query("""
                    SELECT id FROM \(unescaped: table(.records)) WHERE tbl = \(link.table) AND live AND strpos(fields, \(naming)) > 0
                    UNION
                    SELECT record_id FROM \(unescaped: table(.changes))
                      WHERE tbl = \(link.table) AND op <> \(Self.erasedOp) AND strpos(fields, \(naming)) > 0
                    """, logger: logger)
                for try await linked in rows.decode(String.self) where seen.insert("\(link.table)\u{0}\(linked)").inserted {
                    found.append((link.table, linked))
                }
            }
        }
        return found
    }

    /// ``ErasureDigest`` once every place a record's data could be holds nothing of it;
    /// throws otherwise, so a digest exists only for a complete erasure.
    private func erasureDigest(_ connection: PostgresConnection, erasureID: String, records: [(table: String, id: String)]) async throws -> String {
        for (tbl, id) in records {
            let row = try await connection.query("""
                SELECT (SELECT count(*) FROM \(unescaped: table(.records)) WHERE tbl = \(tbl) AND id = \(id)),
                       (SELECT count(*) FROM \(unescaped: table(.changes)) WHERE tbl = \(tbl) AND record_id = \(id)
                          AND (op <> \(Self.erasedOp) OR fields <> '{}' OR prior IS NOT NULL OR trail IS NOT NULL)),
                       (SELECT count(*) FROM \(unescaped: table(.conflicts)) WHERE tbl = \(tbl) AND record_id = \(id)),
                       (SELECT count(*) FROM \(unescaped: table(.quarantine))
                          WHERE strpos(change, \(Self.quarantinedKey("table", tbl))) > 0 AND strpos(change, \(Self.quarantinedKey("id", id))) > 0),
                       (SELECT count(*) FROM \(unescaped: table(.changeRoutes)) r JOIN \(unescaped: table(.changes)) c ON c.seq = r.seq
                          WHERE c.tbl = \(tbl) AND c.record_id = \(id))
                """, logger: logger).collect().first
            guard let row else { throw PostgresStoreError("erasure \(erasureID): no count for \(tbl)/\(id)") }
            let counts = try row.decode((Int64, Int64, Int64, Int64, Int64).self)
            guard counts == (0, 0, 0, 0, 0) else {
                throw PostgresStoreError("erasure \(erasureID): \(tbl)/\(id) still has rows \(counts)")
            }
        }
        return ErasureDigest.digest(erasureID: erasureID, records: records)
    }

    /// Writes the hub's acknowledgement of each erasure done here whose last one is missing
    /// or carries an older refusal count (``DomainSchema/erasureAcks``, a hub write, so it
    /// is in HQ's ledger at once).
    func writeErasureAcknowledgements(wallMillis: UInt64) async throws {
        let root = try await prepared()
        let refusals = table(.erasedRefusals)
        let due = try await client.query("""
            SELECT e.erasure_id, e.records, e.log_entries, e.digest, e.erased_at, r.n
            FROM \(unescaped: table(.erasures)) e
            CROSS JOIN LATERAL (SELECT count(*)::int4 AS n FROM \(unescaped: refusals) f WHERE f.erasure_id = e.erasure_id) r
            WHERE e.acked_refused <> r.n
            """, logger: logger).collect().map { try $0.decode((String, Int32, Int32, String, Int64, Int32).self) }
        guard !due.isEmpty else { return }
        let at = Date(timeIntervalSince1970: Double(wallMillis) / 1000).ISO8601Format()
        _ = try await writeAsHub(due.map { erasureID, records, logEntries, digest, _, refused in
            RecordWrite(table: DomainSchema.erasureAcks.name, id: Erasure.ackID(erasure: erasureID, node: root), op: .upsert, fields: [
                Erasure.AckField.erasureID.rawValue: .string(erasureID), Erasure.AckField.node.rawValue: .string(root.rawValue),
                Erasure.AckField.acknowledgedAt.rawValue: .string(at), Erasure.AckField.records.rawValue: .int(Int64(records)),
                Erasure.AckField.logEntries.rawValue: .int(Int64(logEntries)), Erasure.AckField.unsentDropped.rawValue: .int(0),
                Erasure.AckField.refused.rawValue: .int(Int64(refused)), Erasure.AckField.digest.rawValue: .string(digest),
            ])
        })
        for (erasureID, _, _, _, _, refused) in due {
            _ = try await client.query("""
                UPDATE \(unescaped: table(.erasures)) SET acked_refused = GREATEST(acked_refused, \(refused)) WHERE erasure_id = \(erasureID)
                """, logger: logger).collect()
        }
    }
}

// Erasure (docs/PRIVACY.md): applying an erasure marker erases its subject and everything
// linked to it in the same transaction (rows, tombstones, the values in change-log entries,
// conflicts, quarantined changes, retries, route entries), keeps only their ids and last
// routes to refuse later changes, and routes the marker on to every node the data was
// routed to here. After the commit, `finishErasures` truncates the write-ahead log (so
// the bytes are gone from the files too) and writes this node's acknowledgement.

import Foundation
import GRDB
import TiersyncCore
import TiersyncStorage

/// What one erasure did on this store.
public struct ErasureRecord: Sendable, Equatable, Codable {
    public var erasureID: String
    public var subjectTable: String
    public var subjectID: String
    public var erasedAtMillis: UInt64
    /// Records erased here (the subject and what links to it).
    public var records: Int
    /// Change-log entries whose values were erased.
    public var logEntries: Int
    /// Changes made here and not yet sent, dropped (they would have brought the data back).
    public var unsentDropped: Int
    /// Changes of the erased records refused here since.
    public var refused: Int
    /// SHA-256 over the erased records' ids and what remains of each (nothing).
    public var digest: String
    /// When the write-ahead log was truncated after it (nil: not yet).
    public var filesCleanAtMillis: UInt64?
}

extension NodeStore {
    /// The cursor of what the parent acknowledged (the agent's push position).
    public static let parentPushCursor = "push.parent"

    /// The op a change-log entry gets once its values are erased: kept for its identity
    /// (so a redelivery stays a duplicate), never sent again.
    static let erasedOp = "erased"

    /// Requests the erasure of `id` of `table` and everything linked to it: writes the
    /// marker as a local change (which erases here in its transaction and syncs like any
    /// change), then cleans the files and writes this node's acknowledgement. Throws
    /// ``StoreError/notFound(_:)`` when this store holds nothing of the subject; returns the
    /// earlier erasure when the subject was erased here before.
    @discardableResult
    public func erase(_ table: Erasure.SubjectTable, id: String, wallMillis: UInt64 = WallClock.nowMillis()) throws -> ErasureRecord {
        // Erased here before (asked here or elsewhere): that erasure is the answer. Erased data
        // never comes back, so a second request erased nothing, and made a ledger entry whose
        // replicas all had to acknowledge again.
        if let done = try erasures().first(where: { $0.subjectTable == table.rawValue && $0.subjectID == id }) { return done }
        let held = try writer.read { db in try Self.holds(db, table: table, id: id) }
        guard held else { throw StoreError.notFound("\(table.rawValue)/\(id) is not held here") }
        guard let me = try identity() else { throw StoreError.notEnrolled(path: path) }
        let erasureID = RecordID.random(prefix: "era")
        let at = Date(timeIntervalSince1970: Double(wallMillis) / 1000).ISO8601Format()
        try commit([RecordWrite(table: DomainSchema.erasures.name, id: erasureID, op: .upsert,
                                fields: Erasure.markerFields(table: table, id: id, requestedBy: me.node, at: at))], wallMillis: wallMillis)
        try finishErasures(wallMillis: wallMillis)
        guard let done = try erasures().first(where: { $0.erasureID == erasureID }) else {
            throw StoreError.invalidArgument("erasure \(erasureID) was not recorded")
        }
        return done
    }

    /// The erasures done on this store, oldest first.
    public func erasures() throws -> [ErasureRecord] {
        try writer.read { db in
            try Row.fetchAll(db, sql: """
                SELECT e.*, (SELECT COUNT(*) FROM ts_erased_refusals r WHERE r.erasure_id = e.erasure_id) AS refused
                FROM ts_erasures e ORDER BY erased_at, erasure_id
                """).map { row in
                ErasureRecord(erasureID: row["erasure_id"], subjectTable: row["subject_table"], subjectID: row["subject_id"],
                              erasedAtMillis: UInt64(max(0, row["erased_at"] as Int64)), records: row["records"],
                              logEntries: row["log_entries"], unsentDropped: row["unsent_dropped"], refused: row["refused"],
                              digest: row["digest"], filesCleanAtMillis: (row["files_clean_at"] as Int64?).map { UInt64(max(0, $0)) })
            }
        }
    }

    /// Recomputes an erasure's digest from what the store holds now: equal to the recorded
    /// one while nothing of the erased records is back.
    public func verifyErasure(_ erasureID: String) throws -> Bool {
        try writer.read { db in
            guard let recorded = try String.fetchOne(db, sql: "SELECT digest FROM ts_erasures WHERE erasure_id = ?", arguments: [erasureID]) else {
                return false
            }
            let records = try Row.fetchAll(db, sql: "SELECT tbl, id FROM ts_erased_records WHERE erasure_id = ?", arguments: [erasureID])
                .map { (table: $0["tbl"] as String, id: $0["id"] as String) }
            // The digest exists only while nothing remains: data back makes it throw.
            return (try? Self.erasureDigest(db, erasureID: erasureID, records: records)) == recorded
        }
    }

    /// The erasure requests held here with the acknowledgements received: at HQ, the ledger.
    public func erasureLedger() throws -> [ErasureLedgerEntry] {
        try writer.read { db in
            let markers = try Row.fetchAll(db, sql: "SELECT \(tableSQL[DomainSchema.erasures.name]!.columns) FROM erasures").map { row in
                (id: row[0] as String, values: Self.values(of: row, table: DomainSchema.erasures),
                 route: Self.parseRoute(row[tableSQL[DomainSchema.erasures.name]!.routeIndex]))
            }
            let acks = try Row.fetchAll(db, sql: "SELECT \(tableSQL[DomainSchema.erasureAcks.name]!.columns) FROM erasure_acks").map { row in
                Self.values(of: row, table: DomainSchema.erasureAcks)
            }
            return ErasureLedgerEntry.build(markers: markers, acknowledgements: acks)
        }
    }

    // MARK: In the applying transaction

    /// Whether the store holds anything of a record: a row, a tombstone or a log entry. The
    /// row alone is what a record compaction folded (its log entries gone) leaves.
    static func holds(_ db: Database, table: Erasure.SubjectTable, id: String) throws -> Bool {
        try holds(db, table: table.rawValue, id: id)
    }

    /// ``holds(_:table:id:)`` for any table of the schema (the caller checked it is one).
    static func holds(_ db: Database, table: String, id: String) throws -> Bool {
        try Bool.fetchOne(db, sql: """
            SELECT EXISTS (SELECT 1 FROM \(table.quotedDatabaseIdentifier) WHERE id = ?)
                OR EXISTS (SELECT 1 FROM ts_changes WHERE tbl = ? AND record_id = ? AND op != '\(erasedOp)')
                OR EXISTS (SELECT 1 FROM ts_tombstones WHERE tbl = ? AND id = ?)
            """, arguments: [id, table, id, table, id]) ?? false
    }

    /// Erases the marker's subject and everything linked to it; returns the nodes the erased
    /// data was routed to here (the marker goes on to them). `allowed` says whether the
    /// sender may erase a record routed to the given nodes (a child's scope); a subject
    /// outside it is left alone, answered as if not held, so nothing outside is revealed.
    ///
    /// `fromParent`: the marker came down from this node's parent, so this node is one of the
    /// replicas HQ's ledger waits for (the data was routed into its scope there). Holding
    /// nothing of it (a country whose dealer moved in after the erasure, a store fetched
    /// again), it still acknowledges, with nothing erased; otherwise the ledger waited for it
    /// for good.
    ///
    /// `requestedBy`: the node that asked (the marker's `requested_by`). Asked by an ancestor
    /// of this node, a request from the parent means the subject is gone across that
    /// ancestor's scope, so holding nothing this node still notes it as erased (see below).
    func eraseSubject(_ db: Database, erasureID: String, subject: (table: Erasure.SubjectTable, id: String),
                      allowed: ((Set<NodeID>) -> Bool)?, fromParent: Bool = false, requestedBy: String? = nil,
                      nowMillis: UInt64) throws -> Set<NodeID> {
        var records: [(table: String, id: String)] = []
        var holders: Set<NodeID> = []
        // A child may erase what is routed into its scope now: a customer that once was
        // (its old routes are in the log) and moved to another country is not its to erase.
        let mayErase = { (table: String, id: String) throws -> Bool in
            try allowed?(self.currentRoute(db, table: table, id: id)) ?? true
        }
        if try Self.holds(db, table: subject.table, id: subject.id) {
            if try mayErase(subject.table.rawValue, subject.id) {
                records = try linkedRecords(db, subject: (subject.table.rawValue, subject.id))
            }
        } else {
            // The customer is not held here, but records naming it may be (a dialogue or a
            // lead routed here of a customer routed elsewhere): they are erased, and the
            // customer is noted as erased so nothing naming it comes back.
            let linked = try linkedRecords(db, subject: (subject.table.rawValue, subject.id)).dropFirst().filter { try mayErase($0.table, $0.id) }
            if !linked.isEmpty { records = [(subject.table.rawValue, subject.id)] + linked }
        }
        if records.isEmpty {
            // Not held here (or outside the sender's scope, which is answered alike): nothing
            // to erase or acknowledge, unless an earlier request erased it here, in which case
            // this replica acknowledges this request too (holding none of it).
            let erasedBefore = try Row.fetchOne(db, sql: "SELECT erasure_id, route FROM ts_erased_records WHERE tbl = ? AND id = ?",
                                                arguments: [subject.table.rawValue, subject.id])
            if let erasedBefore {
                guard allowed?(Self.parseRoute(erasedBefore[1])) ?? true else { return [] }
                holders = Self.parseRoute(erasedBefore[1])
            } else if fromParent, try !Self.holds(db, table: subject.table, id: subject.id),
                      try linkedRecords(db, subject: (subject.table.rawValue, subject.id)).count == 1 {
                // Nothing of it here at all (what is held but judged outside the asker's scope
                // is never acknowledged as erased): acknowledged with nothing erased. The
                // subject is noted as erased only when an ancestor asked: the parent then
                // erased it across that ancestor's scope, and a copy a child sends later (a
                // dealer that moved here, re-sending its history) must be refused as erased,
                // not kept (kept, it went up as a duplicate and no one erased it here). A
                // request from elsewhere is one the parent may not have acted on (a sibling
                // dealer's, outside its scope); it may come before the subject itself in a
                // fetch from the start, and noted, the subject would be refused when it came.
                records = try requestedBy.map { try Self.isAncestor(db, $0) } == true ? [(subject.table.rawValue, subject.id)] : []
            } else {
                return []
            }
        }
        holders.formUnion(try eraseRecords(db, records, erasureID: erasureID, subject: (subject.table.rawValue, subject.id),
                                           requested: true, nowMillis: nowMillis))
        return holders
    }

    /// Judges again, as coming from the parent, an erasure request this node holds but has
    /// not acted on: one it first took from a child. A dealer that moved here re-sends its
    /// history, its own request among it, before this node has fetched the dealer's records
    /// from the parent; taken from the child while holding none of its subject, the request
    /// was not acknowledged (a child's request is acknowledged only where something was
    /// erased), and the parent's copy, arriving next, was a duplicate: the ledger waited for
    /// this node for good. From the parent, holding none of it, the node acknowledges it.
    /// Acknowledging only: a request whose subject, or anything naming it, is held here was
    /// judged when it came (erased, or found outside the asker's scope) and is not judged
    /// again against today's routes (helper 65: a request refused as outside a dealer's scope
    /// erased the customer once it was handed to that dealer and the parent's copy came again).
    func judgeRequestFromParent(_ db: Database, erasureID: String, nowMillis: UInt64, allowed: ((Set<NodeID>) -> Bool)?) throws {
        guard try !(Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM ts_erasures WHERE erasure_id = ?)", arguments: [erasureID]) ?? false),
              let table = schema.table(DomainSchema.erasures.name), let marker = try load(db, table: table, id: erasureID),
              marker.state.isLive, let subject = Erasure.subject(of: marker.state.liveValues),
              try !Self.holds(db, table: subject.table, id: subject.id),
              try linkedRecords(db, subject: (subject.table.rawValue, subject.id)).count == 1 else { return }
        _ = try eraseSubject(db, erasureID: erasureID, subject: subject, allowed: allowed, fromParent: true,
                             requestedBy: marker.state.liveValues[Erasure.MarkerField.requestedBy.rawValue]?.stringValue, nowMillis: nowMillis)
    }

    /// Whether `node` is above this node in the tree: its parent, or on the path from the
    /// root it last learned.
    static func isAncestor(_ db: Database, _ node: String) throws -> Bool {
        guard let me = try identity(db) else { return false }
        if me.parent?.rawValue == node { return true }
        let path = try meta(db, .treePath)?.split(separator: "/").map(String.init) ?? []
        guard let mine = path.lastIndex(of: me.node.rawValue) else { return false }
        return path[..<mine].contains(node)
    }

    /// Erases `records` here (rows, tombstones, the values of their log entries, routes,
    /// conflicts, quarantined changes, retries), notes them as erased by `erasureID`, and
    /// records what it did; returns the nodes they were routed to here. `requested`: an
    /// erasure request this node acknowledges (false: the records of changes the parent
    /// refused as erased, erased by this node alone).
    private func eraseRecords(_ db: Database, _ records: [(table: String, id: String)], erasureID: String,
                              subject: (table: String, id: String), requested: Bool, nowMillis: UInt64) throws -> Set<NodeID> {
        var holders: Set<NodeID> = []
        let identity = try Self.identity(db)
        let pushed: Int64? = identity?.parent == nil ? nil
            : try Int64.fetchOne(db, sql: "SELECT value FROM ts_cursors WHERE name = ?", arguments: [Self.parentPushCursor]) ?? 0
        var erasedRecords = 0, logEntries = 0, unsent = 0
        var statements = LogStatements(db)
        for (table, id) in records {
            let routed = try route(db, table: table, id: id)
            // Uncounted from the KPIs as a delete would be: counted on, they were values no
            // recount could give again (`kpi --verify` failed for good, and the next
            // formula change rewrote the node's history silently).
            if let schemaTable = schema.table(table) {
                try countKPIs(db, &statements, table: schemaTable, id: id, before: try load(db, table: schemaTable, id: id), after: RecordState())
            }
            holders.formUnion(routed)
            if let pushed {
                unsent += try Int.fetchOne(db, sql: """
                    SELECT COUNT(*) FROM ts_changes WHERE tbl = ? AND record_id = ? AND source != 'parent' AND op != '\(Self.erasedOp)' AND seq > ?
                    """, arguments: [table, id, pushed]) ?? 0
            }
            try db.execute(sql: """
                DELETE FROM ts_change_routes WHERE seq IN (SELECT seq FROM ts_changes WHERE tbl = ? AND record_id = ?);
                DELETE FROM ts_push_retries WHERE EXISTS (SELECT 1 FROM ts_changes c WHERE c.tbl = ? AND c.record_id = ?
                    AND c.origin = ts_push_retries.origin AND c.origin_seq = ts_push_retries.origin_seq);
                DELETE FROM ts_route_entries WHERE tbl = ? AND record_id = ?;
                DELETE FROM ts_conflicts WHERE tbl = ? AND record_id = ?;
                DELETE FROM ts_quarantine WHERE json_extract(change, '$.table') = ? AND json_extract(change, '$.id') = ?;
                """, arguments: [table, id, table, id, table, id, table, id, table, id])
            try db.execute(sql: """
                UPDATE ts_changes SET op = '\(Self.erasedOp)', fields = '{}', prior = NULL, trail = NULL
                WHERE tbl = ? AND record_id = ? AND op != '\(Self.erasedOp)'
                """, arguments: [table, id])
            logEntries += db.changesCount
            var removed = 0
            if let sql = tableSQL[table] {
                try db.execute(sql: sql.delete, arguments: [id])
                removed += db.changesCount
            }
            try db.execute(sql: "DELETE FROM ts_tombstones WHERE tbl = ? AND id = ?", arguments: [table, id])
            removed += db.changesCount
            erasedRecords += removed > 0 ? 1 : 0
            // Quarantined changes naming this record through a link (a dialogue of the
            // customer refused earlier) hold its data too.
            for link in Erasure.links(to: table) {
                try db.execute(sql: "DELETE FROM ts_quarantine WHERE json_extract(change, '$.table') = ? AND json_extract(change, ?) = ?",
                               arguments: [link.table, "$.fields.\(link.field)", id])
            }
            try db.execute(sql: "INSERT OR IGNORE INTO ts_erased_records (tbl, id, erasure_id, route) VALUES (?, ?, ?, ?)",
                           arguments: [table, id, erasureID, RecordMerge.encodeRoute(routed)])
        }
        let digest = try Self.erasureDigest(db, erasureID: erasureID, records: records)
        try db.execute(sql: """
            INSERT OR IGNORE INTO ts_erasures (erasure_id, subject_table, subject_id, erased_at, records, log_entries, unsent_dropped, digest, requested)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, arguments: [erasureID, subject.table, subject.id, Int64(nowMillis), erasedRecords, logEntries, unsent, digest, requested])
        erasureWork.withLock { $0 = true }
        return holders
    }

    /// Erases here the records of changes the parent refused as erased (`erased`, naming the
    /// erasure): a change of a record erased elsewhere, or naming one (a dialogue of a
    /// sibling's erased customer). This node held none of the erased data, so the erasure
    /// never reached it; the refused record and what links to it are its data all the same.
    ///
    /// `refused`: each refusal with the change it refuses, as this node sent it. The parent's
    /// word is checked against that change, not taken as it stands: the erased record it
    /// names must be the change's own record, or one a link field of the change names (else
    /// any answer could have this node wipe any record it holds). A record of the change's
    /// own that this node has from anywhere but the refused changes (its parent sent it, or
    /// took earlier changes of it) is left alone when only its link names the erased one:
    /// its parent keeps it, and erased here it would be refused whenever it came again.
    ///
    /// A refused change this node relayed from a child (a country passing its dealer's
    /// dialogue on) is erased here and its refusal kept as a notice for that child
    /// (``keepUpstreamRefusal(_:via:refusal:nowMillis:)``), which takes it and erases its own
    /// copy alike (``takeUpstreamRefusals(_:from:nowMillis:)``): the country had accepted the
    /// change, so nothing else ever told the dealer, which kept the dialogue of an erased
    /// customer for good (helper 94).
    ///
    /// What is erased is noted under a local id (`<erasure>/<table>/<id>`), so a local
    /// write naming it, or the erased record, is refused here. Returns how many records were
    /// erased; ``finishErasures(wallMillis:)`` then cleans the files (no acknowledgement:
    /// this node is not a replica of the request).
    @discardableResult
    public func eraseRefused(_ refused: [(refusal: RejectedChange, change: Change)], nowMillis: UInt64 = WallClock.nowMillis()) throws -> Int {
        try writer.write { db in try eraseRefused(db, refused, fromNotice: false, nowMillis: nowMillis) }
    }

    /// ``eraseRefused(_:nowMillis:)`` in `db`'s transaction. `fromNotice`: the refusals came
    /// as notices a parent passed down (``takeUpstreamRefusals(_:from:nowMillis:)``), not in
    /// the answer to a push of this node: never taken for the request's own id (which would
    /// make this node one of its replicas, and acknowledge it), only under a local id.
    func eraseRefused(_ db: Database, _ refused: [(refusal: RejectedChange, change: Change)], fromNotice: Bool, nowMillis: UInt64) throws -> Int {
        let judged = refused.compactMap { pair -> (change: Change, erased: ErasedReference, own: Bool, refusal: RejectedChange)? in
            let (r, change) = pair
            guard r.code == .erased, let erased = r.erased, erased.isValid(in: schema), r.origin == change.origin, r.originSeq == change.originSeq,
                  schema.table(change.table) != nil else { return nil }
            if erased.table == change.table, erased.id == change.recordID { return (change, erased, true, r) }
            let named = Erasure.links(to: erased.table).contains { link in
                link.table == change.table && change.fields[link.field]?.stringValue == erased.id
            }
            return named ? (change, erased, false, r) : nil
        }
        guard !judged.isEmpty else { return 0 }
        let refusedIdentities = Set(judged.map { "\($0.change.origin)#\($0.change.originSeq)" })
        let refusedVersions = Set(judged.map { FieldVersion(hlc: $0.change.hlc, node: $0.change.origin) })
        do {
            var erased = 0
            func isNoted(_ table: String, _ id: String) throws -> Bool {
                try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM ts_erased_records WHERE tbl = ? AND id = ?)", arguments: [table, id]) ?? false
            }
            var noticesKept = false
            for (change, reference, own, refusal) in judged {
                // Relayed from a child: the child is told, whether or not the record was
                // erased here already (by an earlier refusal of another of its changes).
                if let via = try String.fetchOne(db, sql: "SELECT received_from FROM ts_changes WHERE origin = ? AND origin_seq = ? AND source = ?",
                                                 arguments: [change.origin.rawValue, change.originSeq, ChangeSource.child.rawValue]) {
                    try Self.keepUpstreamRefusal(db, via: via, refusal: refusal, nowMillis: nowMillis)
                    noticesKept = true
                }
                guard try !isNoted(change.table, change.recordID) else { continue }
                let record = (table: change.table, id: change.recordID)
                if !own {
                    // Only a record this node made with the refused changes alone: every log
                    // entry of it, and every field version it holds (compaction deletes the
                    // entries of what the parent took, the versions stay), is theirs.
                    let entries = try Row.fetchAll(db, sql: "SELECT origin, origin_seq FROM ts_changes WHERE tbl = ? AND record_id = ?",
                                                   arguments: [record.table, record.id])
                    guard entries.allSatisfy({ refusedIdentities.contains("\($0["origin"] as String)#\($0["origin_seq"] as Int64)") }) else { continue }
                    if let table = schema.table(record.table), let stored = try load(db, table: table, id: record.id) {
                        guard stored.state.versions.values.allSatisfy({ refusedVersions.contains($0) }) else { continue }
                    }
                }
                // A refusal of the change's own record naming a request (not a local id) makes
                // this node one of that request's replicas: the record is its data, erased
                // across the tree (a dealer that moved under a country which had acknowledged
                // the request holding none of it, and refused the history the dealer re-sent).
                // It is erased under the request's id and acknowledged, so HQ's ledger does
                // not wait for it for good.
                let isRequest = !fromNotice && own && !reference.erasure.contains("/") && RecordID.isValid(reference.erasure)
                    && Erasure.SubjectTable(rawValue: reference.table) != nil
                // Otherwise one local id per refused record, from the request's own id (a
                // parent's refusal may name a local id of its own: never nested further).
                let base = reference.erasure.split(separator: "/").first.map(String.init) ?? reference.erasure
                var localID = isRequest ? reference.erasure : "\(base)/\(record.table)/\(record.id)"
                // Named in this node's own refusals to its children: a valid id, at most 128
                // bytes, and with a '/', as every local id has (without, a child refused on it
                // took it for a request, and acknowledged it).
                if !RecordID.isValid(localID) { localID = RecordID.random(prefix: "era") + "/local" }
                var records = try linkedRecords(db, subject: record).filter { try !isNoted($0.table, $0.id) }
                // The erased record it names is noted with them (held here it is not: it would
                // have been erased here), under the local id too: the request's own id is the
                // digest's of a replica that later receives the request.
                if !own, try !isNoted(reference.table, reference.id), try !Self.holds(db, table: reference.table, id: reference.id) {
                    records.append((reference.table, reference.id))
                }
                _ = try eraseRecords(db, records, erasureID: localID, subject: record, requested: isRequest, nowMillis: nowMillis)
                erased += try Int.fetchOne(db, sql: "SELECT records FROM ts_erasures WHERE erasure_id = ?", arguments: [localID]) ?? 0
            }
            if noticesKept { hasUpstreamRefusals.store(true, ordering: .relaxed) }
            return erased
        }
    }

    /// ``eraseRefused(_:nowMillis:)``, then ``finishErasures(wallMillis:)``, off the
    /// cooperative pool as the store's other async calls (a first erasure vacuums the store,
    /// and the log's truncation waits for readers).
    public func eraseRefusedOffPool(_ refused: [(refusal: RejectedChange, change: Change)]) async throws -> Int {
        try await offCooperativePool {
            let erased = try self.eraseRefused(refused)
            try self.finishErasures()
            return erased
        }
    }

    /// The subject and every record linking to it, transitively (a customer's dialogues, and
    /// their escalations), found through live rows and through the log (a deleted dialogue's
    /// entries still name its customer).
    private func linkedRecords(_ db: Database, subject: (String, String)) throws -> [(table: String, id: String)] {
        var found: [(table: String, id: String)] = [subject]
        var seen: Set<String> = ["\(subject.0)\u{0}\(subject.1)"]
        var next = 0
        while next < found.count {
            let (table, id) = found[next]
            next += 1
            for link in Erasure.links(to: table) {
                guard let linking = schema.table(link.table), linking.field(link.field) != nil else { continue }
                var ids = try String.fetchAll(db, sql: "SELECT id FROM \(link.table.quotedDatabaseIdentifier) WHERE \(link.field.quotedDatabaseIdentifier) = ?",
                                              arguments: [id])
                ids += try String.fetchAll(db, sql: """
                    SELECT DISTINCT record_id FROM ts_changes WHERE tbl = ? AND op != '\(Self.erasedOp)' AND json_extract(fields, ?) = ?
                    """, arguments: [link.table, "$.\(link.field)", id])
                for linked in ids where seen.insert("\(link.table)\u{0}\(linked)").inserted {
                    found.append((link.table, linked))
                }
            }
        }
        return found
    }

    /// The nodes a record is routed to now (its row's or its tombstone's route).
    private func currentRoute(_ db: Database, table: String, id: String) throws -> Set<NodeID> {
        var nodes: Set<NodeID> = []
        if let sql = tableSQL[table], let row = try Row.fetchOne(db, sql: sql.select, arguments: [id]) {
            nodes.formUnion(Self.parseRoute(row[sql.routeIndex]))
        }
        nodes.formUnion(Self.parseRoute(try String.fetchOne(db, sql: "SELECT route FROM ts_tombstones WHERE tbl = ? AND id = ?", arguments: [table, id])))
        return nodes
    }

    /// Every node a record was routed to here: its route now (row or tombstone) and every node
    /// any of its logged changes reached or entered.
    private func route(_ db: Database, table: String, id: String) throws -> Set<NodeID> {
        var nodes = try currentRoute(db, table: table, id: id)
        nodes.formUnion(try String.fetchAll(db, sql: """
            SELECT DISTINCT r.node FROM ts_change_routes r JOIN ts_changes c ON c.seq = r.seq WHERE c.tbl = ? AND c.record_id = ?
            UNION SELECT node FROM ts_route_entries WHERE tbl = ? AND record_id = ?
            """, arguments: [table, id, table, id]).map(NodeID.init(unchecked:)))
        return nodes
    }

    /// SHA-256 over the erasure's id and, per erased record (sorted), what the store still
    /// holds of it: rows, tombstones, log entries with values, conflicts, quarantined
    /// changes, route index entries. Throws if any of it is not zero, so a digest exists
    /// only for an erasure that is complete.
    static func erasureDigest(_ db: Database, erasureID: String, records: [(table: String, id: String)]) throws -> String {
        for (table, id) in records {
            let row = try Row.fetchOne(db, sql: """
                SELECT (SELECT COUNT(*) FROM ts_tombstones WHERE tbl = ?1 AND id = ?2),
                       (SELECT COUNT(*) FROM ts_changes WHERE tbl = ?1 AND record_id = ?2 AND (op != '\(erasedOp)' OR fields != '{}' OR prior IS NOT NULL)),
                       (SELECT COUNT(*) FROM ts_conflicts WHERE tbl = ?1 AND record_id = ?2),
                       (SELECT COUNT(*) FROM ts_quarantine WHERE json_extract(change, '$.table') = ?1 AND json_extract(change, '$.id') = ?2),
                       (SELECT COUNT(*) FROM ts_change_routes r JOIN ts_changes c ON c.seq = r.seq WHERE c.tbl = ?1 AND c.record_id = ?2)
                """, arguments: [table, id])!
            var remaining = (0..<5).map { row[$0] as Int }
            if try db.tableExists(table) {
                remaining.insert(try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM \(table.quotedDatabaseIdentifier) WHERE id = ?", arguments: [id]) ?? 0, at: 0)
            } else {
                remaining.insert(0, at: 0)
            }
            guard remaining.allSatisfy({ $0 == 0 }) else {
                throw StoreError.invalidArgument("erasure \(erasureID): \(table)/\(id) still has rows \(remaining)")
            }
        }
        return ErasureDigest.digest(erasureID: erasureID, records: records)
    }

    /// The erasure that forbids a change of `table`/`id` with `fields` here, if any: the
    /// record was erased, or one of its link fields names an erased record. One look at
    /// whether anything was ever erased per transaction; nothing more on a store that never
    /// erased.
    func erasureBlocking(_ db: Database, _ statements: inout LogStatements, table: String, id: String,
                         fields: [String: FieldValue]) throws -> (erasureID: String, route: Set<NodeID>, linked: RecordKey?)? {
        // Bound and read directly (``DirectBinding``): these run at every local commit.
        if statements.anyErased == nil {
            statements.anyErased = try DirectBinding.exists(db, db.cachedStatement(sql: "SELECT 1 FROM ts_erased_records LIMIT 1")) { _ in }
        }
        guard statements.anyErased == true else { return nil }
        let lookup = try statements.statement("#erased", "SELECT erasure_id, route FROM ts_erased_records WHERE tbl = ? AND id = ?")
        func erased(_ table: String, _ id: String) throws -> (erasureID: String, route: Set<NodeID>)? {
            try DirectBinding.row(db, lookup, { b in
                b.text(table)
                b.text(id)
            }) { row in (row.text(0) ?? "", Self.parseRoute(row.text(1))) }
        }
        if let hit = try erased(table, id) { return (hit.erasureID, hit.route, nil) }
        for link in Erasure.linkFields(of: table) {
            guard let target = fields[link.field]?.stringValue, let hit = try erased(link.parent, target) else { continue }
            return (hit.erasureID, hit.route, RecordKey(table: link.parent, id: target))
        }
        return nil
    }

    /// Counts a change refused because its data was erased (by identity, once). False when
    /// it was refused before: like any final refusal, a redelivery is a duplicate.
    func countErasedRefusal(_ db: Database, _ change: Change, erasureID: String, nowMillis: UInt64) throws -> Bool {
        try db.execute(sql: "INSERT OR IGNORE INTO ts_erased_refusals (origin, origin_seq, erasure_id, refused_at) VALUES (?, ?, ?, ?)",
                       arguments: [change.origin.rawValue, change.originSeq, erasureID, Int64(nowMillis)])
        guard db.changesCount > 0 else { return false }
        erasureWork.withLock { $0 = true }
        return true
    }

    /// `linked`: the erased record the change names, when it is not the change's own.
    static func erasedRejection(table: String, id: String, erasureID: String, linked: RecordKey? = nil) -> ChangeRejection {
        ErasureRefusal.rejection(table: table, id: id, erasureID: erasureID, linked: linked.map { ($0.table, $0.id) })
    }

    // MARK: After the commit

    /// Once an erasure committed: vacuums a store that may hold deleted content from before
    /// `secure_delete` (once), truncates the write-ahead log so no earlier page image stays
    /// in it, then writes this node's acknowledgement (``DomainSchema/erasureAcks``), and
    /// rewrites it when changes were refused since. Cheap when there is nothing to do.
    public func finishErasures(wallMillis: UInt64 = WallClock.nowMillis()) throws {
        guard erasureWork.withLock({ work in defer { work = false }; return work }) else { return }
        let (pending, scrubbed) = try writer.read { db in
            (try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM ts_erasures WHERE files_clean_at IS NULL") ?? 0,
             try Self.meta(db, .scrubbed) != nil)
        }
        if pending > 0 {
            if !scrubbed, path != ":memory:" {
                try writer.vacuum()
                try writer.write { db in try Self.setMeta(db, .scrubbed, "1") }
            }
            try truncateWriteAheadLog()
            try writer.write { db in
                try db.execute(sql: "UPDATE ts_erasures SET files_clean_at = ? WHERE files_clean_at IS NULL", arguments: [Int64(wallMillis)])
            }
        }
        try writeAcknowledgements(wallMillis: wallMillis)
    }

    /// ``truncateWriteAheadLog()`` off the cooperative pool (it waits for readers): after an
    /// eviction, so the page images of records that left this node's scope leave its files
    /// too, rather than staying in the log until it is overwritten (an evicted customer HQ
    /// erased after its dealer moved stayed in the old country's log). Callers treat a
    /// failure as a warning: the eviction is done, and the next one truncates again.
    public func truncateWriteAheadLogOffPool() async throws {
        try await offCooperativePool { try self.truncateWriteAheadLog() }
    }

    /// Copies the whole write-ahead log into the file and truncates it to nothing: page
    /// images from before an erasure are gone from the disk. Waits (retrying) while a reader
    /// still uses an older snapshot.
    func truncateWriteAheadLog() throws {
        guard path != ":memory:" else { return }
        var attempt = 0
        while true {
            do {
                try writer.writeWithoutTransaction { db in _ = try db.checkpoint(.truncate) }
                return
            } catch let error as DatabaseError where error.resultCode == .SQLITE_BUSY || error.resultCode == .SQLITE_LOCKED {
                attempt += 1
                if attempt >= 100 { throw error }
                Thread.sleep(forTimeInterval: 0.05)
            }
        }
    }

    private func writeAcknowledgements(wallMillis: UInt64) throws {
        guard let me = try identity() else { return }
        let due = try writer.read { db in
            try Row.fetchAll(db, sql: """
                SELECT e.erasure_id, e.records, e.log_entries, e.unsent_dropped, e.digest, e.files_clean_at,
                       (SELECT COUNT(*) FROM ts_erased_refusals r WHERE r.erasure_id = e.erasure_id) AS refused
                FROM ts_erasures e WHERE e.files_clean_at IS NOT NULL AND e.requested
                  AND e.acked_refused != (SELECT COUNT(*) FROM ts_erased_refusals r WHERE r.erasure_id = e.erasure_id)
                """)
        }
        guard !due.isEmpty else { return }
        let writes = due.map { row -> RecordWrite in
            let clean: Int64 = row["files_clean_at"]
            let at = Date(timeIntervalSince1970: Double(clean) / 1000).ISO8601Format()
            var fields: [String: FieldValue] = [
                Erasure.AckField.erasureID.rawValue: .string(row["erasure_id"]), Erasure.AckField.node.rawValue: .string(me.node.rawValue),
                Erasure.AckField.acknowledgedAt.rawValue: .string(at), Erasure.AckField.refused.rawValue: .int(row["refused"]),
                Erasure.AckField.digest.rawValue: .string(row["digest"]),
            ]
            // Nothing erased here (held none of it): the counts are left out, so a store fetched
            // again, acknowledging once more, keeps the figures its first acknowledgement gave
            // (absent, they read as 0).
            let erased: (Int64, Int64, Int64) = (row["records"], row["log_entries"], row["unsent_dropped"])
            if erased != (0, 0, 0) {
                fields[Erasure.AckField.records.rawValue] = .int(erased.0)
                fields[Erasure.AckField.logEntries.rawValue] = .int(erased.1)
                fields[Erasure.AckField.unsentDropped.rawValue] = .int(erased.2)
            }
            return RecordWrite(table: DomainSchema.erasureAcks.name, id: Erasure.ackID(erasure: row["erasure_id"], node: me.node), op: .upsert, fields: fields)
        }
        try commit(writes, wallMillis: wallMillis)
        try writer.write { db in
            for row in due {
                try db.execute(sql: "UPDATE ts_erasures SET acked_refused = ? WHERE erasure_id = ?", arguments: [row["refused"] as Int, row["erasure_id"] as String])
            }
        }
    }
}

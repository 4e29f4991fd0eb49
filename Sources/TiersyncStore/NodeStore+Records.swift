// Applying a change to its record, shared by local writes, received changes and rebuilds:
// the merge (`Merged`) and the record's route, the statements a transaction reuses
// (`LogStatements`), loading a record's state from its domain row or tombstone and saving
// it back, reading a row's values by position, and appending the change to the log with
// its conflicts, routes and route entries.

import GRDB
import TiersyncCore

extension NodeStore {
    /// A record after a change (``TiersyncStorage/MergedRecord``).
    typealias Merged = MergedRecord

    static func merge(_ change: Change, into stored: StoredRecord?, table: TableSchema) -> MergedRecord {
        RecordMerge.merge(change, into: stored, table: table)
    }

    /// The statements every applied change runs, looked up once per transaction (looking
    /// them up by SQL text hashes that text every time).
    struct LogStatements {
        let db: Database
        /// By a short key: "#" and the statement's role, or a domain table's name (which
        /// never starts with "#") for its upsert.
        private var cache: [String: Statement] = [:]
        /// The KPI counting of the transaction, once loaded (`.some(nil)`: none adopted).
        var kpi: KPICounting??
        /// Whether the store kept any conflict when the transaction first asked: most never
        /// do, and then no change pays a look-up for conflicts to settle.
        var anyConflicts: Bool?
        /// Whether the store ever erased anything, once asked (``NodeStore/erasureBlocking(_:_:table:id:fields:)``).
        var anyErased: Bool?

        init(_ db: Database) { self.db = db }

        mutating func statement(_ key: String, _ sql: @autoclosure () -> String) throws -> Statement {
            if let s = cache[key] { return s }
            let s = try db.cachedStatement(sql: sql())
            cache[key] = s
            return s
        }
    }

    /// A kept conflict is settled once a newer version than both of its values is in force
    /// for its field: someone wrote the field after seeing the conflict (a resolution in
    /// the console is such an edit), and every replica applying that edit drops the
    /// conflict. Run before the change's own new conflicts are recorded.
    func settleConflicts(_ db: Database, _ statements: inout LogStatements, table: String, id: String, fields: [String], state: RecordState) throws {
        // Bound and read directly (``DirectBinding``): the first look runs at every commit.
        if statements.anyConflicts == nil {
            statements.anyConflicts = try DirectBinding.exists(db, db.cachedStatement(sql: "SELECT 1 FROM ts_conflicts LIMIT 1")) { _ in }
        }
        guard statements.anyConflicts == true, !fields.isEmpty else { return }
        var settled: [Int64] = []
        try DirectBinding.forEachRow(db, statements.statement("#conflicts-of", "SELECT id, field, winner_version FROM ts_conflicts WHERE tbl = ? AND record_id = ?"), { b in
            b.text(table)
            b.text(id)
        }) { row in
            guard let conflict = row.int64(0), let field = row.text(1), fields.contains(field), let current = state.versions[field],
                  let winner = row.text(2).flatMap(FieldVersion.init(parsing:)), winner < current else { return }
            settled.append(conflict)
        }
        for conflict in settled {
            try DirectBinding.execute(db, db.cachedStatement(sql: "DELETE FROM ts_conflicts WHERE id = ?")) { $0.integer(conflict) }
        }
    }

    /// Applies a valid change to its record and logs it. The caller runs the transaction.
    func apply(_ db: Database, _ statements: inout LogStatements, _ change: Change, log: EncodedLogEntry,
                       table: TableSchema, stored: StoredRecord?, merged: Merged, row: EncodedRecord? = nil,
                       source: ChangeSource, from sender: NodeID?, nowMillis: UInt64,
                       erasureAllowed: ((Set<NodeID>) -> Bool)? = nil) throws -> ApplyOutcome {
        var merged = merged, row = row
        // A new erasure marker erases its subject here, in this transaction, and goes on to
        // every node the erased data was routed to here (``eraseSubject``).
        if table.name == DomainSchema.erasures.name, stored == nil, merged.state.isLive,
           let subject = Erasure.subject(of: merged.state.liveValues) {
            let holders = try eraseSubject(db, erasureID: change.recordID, subject: subject, allowed: erasureAllowed,
                                           fromParent: source == .parent,
                                           requestedBy: merged.state.liveValues[Erasure.MarkerField.requestedBy.rawValue]?.stringValue,
                                           nowMillis: nowMillis)
            statements.anyErased = nil
            if !holders.isSubset(of: merged.route) {
                merged.route.formUnion(holders)
                row = nil
            }
        }
        let (outcome, route) = (merged.outcome, merged.route)
        if outcome.changedAnything || stored == nil {
            // Encoded here unless prepared: a change that alters nothing writes no row.
            try save(db, &statements, table: table, id: change.recordID,
                     row: row ?? EncodedRecord(merged.state, route: route, table: table), replacing: stored)
            try countKPIs(db, &statements, table: table, id: change.recordID, before: stored, after: merged.state)
        }
        if outcome.changedAnything {
            try settleConflicts(db, &statements, table: table.name, id: change.recordID, fields: outcome.changedFields, state: merged.state)
        }
        for c in outcome.conflicts {
            try db.cachedStatement(sql: """
                INSERT OR IGNORE INTO ts_conflicts (tbl, record_id, field, winner_value, winner_version, loser_value, loser_version, detected_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """).execute(arguments: [table.name, change.recordID, c.field, c.winner.canonical, c.winnerVersion.description,
                                         c.loser.canonical, c.loserVersion.description, Int64(nowMillis)])
        }
        // A log served to children begins a history in each process before its first new
        // position (NodeStore+LogHistory).
        if logHistory.withLock({ $0 == .unchecked }) { try beginLogHistoryBeforeWriting(db) }
        try DirectBinding.execute(db, statements.statement("#log", """
            INSERT INTO ts_changes (origin, origin_seq, hlc, tbl, record_id, op, fields, prior, source, received_from, received_at, trail)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """)) { b in
            b.text(change.origin.rawValue)
            b.integer(change.originSeq)
            b.integer(Int64(bitPattern: change.hlc.rawValue))
            b.text(change.table)
            b.text(change.recordID)
            b.text(change.op.rawValue)
            b.text(log.fields)
            b.text(log.prior)
            b.text(source.rawValue)
            b.text(sender?.rawValue)
            b.integer(Int64(nowMillis))
            b.text(log.trail)
        }
        let seq = db.lastInsertedRowID
        // The change reaches the nodes the record was routed to and those it is routed to
        // now: a record moving away is seen leaving.
        let routeStatement = try statements.statement("#route", "INSERT OR IGNORE INTO ts_change_routes (node, seq) VALUES (?, ?)")
        let reached = stored.map { route.union($0.route) } ?? route
        for node in reached {
            try DirectBinding.execute(db, routeStatement) { b in
                b.text(node.rawValue)
                b.integer(seq)
            }
        }
        // A record held here newly routed to a node: that node (and a subtree it is in
        // that did not have the record) is owed the record's earlier changes, which its
        // feed delivers with this one. Rare (a re-route), so the common path pays only
        // the set difference.
        if let stored, !route.isSubset(of: stored.route) {
            let entry = try statements.statement("#route-entry", """
                INSERT OR IGNORE INTO ts_route_entries (node, seq, tbl, record_id, route_before) VALUES (?, ?, ?, ?, ?)
                """)
            let before = stored.route.map(\.rawValue).sorted().joined(separator: ",")
            for node in route.subtracting(stored.route) {
                try DirectBinding.execute(db, entry) { b in
                    b.text(node.rawValue)
                    b.integer(seq)
                    b.text(change.table)
                    b.text(change.recordID)
                    b.text(before)
                }
            }
        }
        return outcome
    }

    /// The stored route of the record whose route `change`'s copied route fields copy
    /// (``RouteReach/copiedSource(of:merged:)``, `merged` the record's values with the change),
    /// for the gate; nil when it copies none or the record is not held here.
    func copiedFromRoute(_ db: Database, of change: Change, merged: [String: FieldValue]) throws -> Set<NodeID>? {
        guard let source = RouteReach.copiedSource(of: change, merged: merged), let table = schema.table(source.table) else { return nil }
        return try load(db, table: table, id: source.id)?.route
    }

    /// `gate`'s answer for a change, as merged: judged first without the record a copied route
    /// field copies, which only lets more through, and read (in the transaction) only when
    /// that first answer refuses a change copying one.
    func gateRefusal(_ db: Database, _ gate: ChangeGate, _ change: Change, sender: NodeID, before: Set<NodeID>?, merged: MergedRecord) throws -> ChangeRejection? {
        var context = GateContext(change: change, sender: sender, routeBefore: before, routeAfter: merged.route)
        guard let refusal = gate(context) else { return nil }
        guard RouteReach.copiedFrom[change.table] != nil,
              let source = try copiedFromRoute(db, of: change, merged: merged.state.liveValues) else { return refusal }
        context.copiedFromRoute = source
        return gate(context)
    }

    /// A record's stored state: from its domain row when live, else from its tombstone.
    /// Read straight from SQLite's row (``DirectBinding/row(_:_:_:_:)``), and only the
    /// columns of the fields the record has versions for: every write of a record loads it.
    func load(_ db: Database, table: TableSchema, id: String) throws -> StoredRecord? {
        let sql = tableSQL[table.name]!
        typealias Loaded = (versions: [String: FieldVersion]?, values: [String: FieldValue], tombstone: String?, route: String?)
        func versions(_ text: String) throws -> [String: FieldVersion] {
            guard let versions = CanonicalJSON.parseStoredVersions(text) else {
                throw StoreError.invalidArgument("corrupt field versions for \(table.name)/\(id)")
            }
            return versions
        }
        let live = try DirectBinding.row(db, db.cachedStatement(sql: sql.select), { $0.text(id) }) { row -> Loaded in
            // A row without versions was written around the store (plain SQL): the engine
            // holds no state for it, and the next change to the record replaces it.
            guard let text = row.text(sql.versionsIndex) else { return (nil, [:], nil, nil) }
            let versions = try versions(text)
            var values: [String: FieldValue] = [:]
            values.reserveCapacity(versions.count)
            for field in versions.keys {
                // Columns: the id, then the table's fields in order (``TableSQL``).
                values[field] = table.position(of: field).map { row.field($0 + 1, type: table.fields[$0].type) } ?? .null
            }
            return (versions, values, row.text(sql.tombstoneIndex), row.text(sql.routeIndex))
        }
        let loaded: Loaded
        if let live {
            guard live.versions != nil else { return nil }
            loaded = live
        } else if let dead = try DirectBinding.row(db, db.cachedStatement(sql: "SELECT versions, tombstone, route FROM ts_tombstones WHERE tbl = ? AND id = ?"),
                                                   { $0.text(table.name); $0.text(id) }, { row -> Loaded in
            let versions = try versions(row.text(0) ?? "")
            return (versions, versions.mapValues { _ in FieldValue.null }, row.text(1), row.text(2))
        }) {
            loaded = dead
        } else {
            return nil
        }
        return StoredRecord(table: table.name, id: id,
                            state: RecordState(values: loaded.values, versions: loaded.versions!,
                                               tombstone: loaded.tombstone.flatMap(FieldVersion.init(parsing:))),
                            route: Self.parseRoute(loaded.route))
    }

    /// Writes a record's new state over `previous`: a live record is its domain row (with
    /// its versions, tombstone and route in the row's `ts_` columns); a deleted one has no
    /// domain row, only a `ts_tombstones` entry.
    func save(_ db: Database, _ statements: inout LogStatements, table: TableSchema, id: String, row: EncodedRecord,
                      replacing previous: StoredRecord?) throws {
        let sql = tableSQL[table.name]!
        let wasLive = previous?.state.isLive ?? false
        if row.live {
            try DirectBinding.execute(db, statements.statement(table.name, sql.upsert)) { b in
                b.text(id)
                for value in row.columns { b.field(value) }
                b.text(row.versions)
                b.text(row.tombstone)
                b.text(row.route)
            }
            if previous != nil, !wasLive {
                try db.cachedStatement(sql: "DELETE FROM ts_tombstones WHERE tbl = ? AND id = ?").execute(arguments: [table.name, id])
            }
        } else {
            if wasLive { try db.cachedStatement(sql: sql.delete).execute(arguments: [id]) }
            try db.cachedStatement(sql: """
                INSERT OR REPLACE INTO ts_tombstones (tbl, id, versions, tombstone, route) VALUES (?, ?, ?, ?, ?)
                """).execute(arguments: [table.name, id, row.versions, row.tombstone, row.route])
        }
    }

    /// A domain row's field values, from a row selected as ``TableSQL/columns`` (`id`,
    /// then the fields in schema order, then the engine columns): read by position.
    static func values(of row: Row, table: TableSchema) -> [String: FieldValue] {
        var values: [String: FieldValue] = [:]
        values.reserveCapacity(table.fields.count)
        for (i, field) in table.fields.enumerated() {
            let stored: DatabaseValue = row[i + 1]
            values[field.name] = fieldValue(stored, type: field.type)
        }
        return values
    }

    /// A column's value in its field's type. (Written as one flat switch: Swift 6.3.1's
    /// optimizer crashed on a version built from `fromDatabaseValue` calls.)
    static func fieldValue(_ value: DatabaseValue, type: FieldType) -> FieldValue {
        switch value.storage {
        case .null:
            return .null
        case .int64(let i):
            return fieldValue(integer: i, type: type)
        case .double(let d):
            return fieldValue(real: d, type: type)
        case .string(let s):
            return .string(s)
        case .blob(let data):
            return .string(String(decoding: data, as: UTF8.self))
        }
    }

    /// An INTEGER column's value in its field's type (booleans and whole doubles are
    /// stored as integers). Shared by GRDB's reads and ``DirectRow``.
    static func fieldValue(integer i: Int64, type: FieldType) -> FieldValue {
        switch type {
        case .bool: return .bool(i != 0)
        case .double: return .double(Double(i))
        case .int: return .int(i)
        default: return .string(String(i))
        }
    }

    /// A REAL column's value in its field's type. A float in an integer field's column
    /// (written around the store): its whole part when it has one in range, else the float
    /// as it is (never a trap).
    static func fieldValue(real d: Double, type: FieldType) -> FieldValue {
        if case .int = type, let i = Int64(exactly: d.rounded(.towardZero)) { return .int(i) }
        return .double(d)
    }

    static func parseRoute(_ s: String?) -> Set<NodeID> { RecordMerge.parseRoute(s) }
}

import Foundation
import GRDB
import GRDBSQLite
import Synchronization
import TiersyncCore
import TiersyncKPI

/// The store's KPI accumulators (`ts_kpi_totals`): one row per (KPI, node, day) with the
/// sums of numerators and denominators of the dialogues and leads it holds, kept by every
/// write to `interactions` and `leads` in that write's transaction — local commits, received
/// changes and rebuilt records alike, in whichever process writes. The formulas counted are
/// those last adopted (``NodeStore/adoptKPIs(_:)``, kept as `ts_meta` `kpi.formulas`); a new
/// basis recounts everything in the adopting transaction.
enum KPIStorage {
    static let followUpIndex = "ts_kpi_interactions_followup"

    /// The accumulators' layout (``MetaKey/kpiLayout``); a store holding another one drops
    /// them (derived data) and recounts at its next adoption.
    /// (`-2`: a dialogue counts for its `allocated_node` once escalated, first response is
    /// the earlier of answer and resolution, impossible durations count nowhere.)
    static let layout = "node-day-kpi-2"

    static func ensure(_ db: Database) throws {
        // Keyed by node, then day, then KPI: the rows one dialogue changes (its node, its
        // day, several KPIs) are neighbours, so a write dirties one page of the table, not one
        // per KPI; a node's own rows (what it publishes, what it asks is due) are one range;
        // no second index for every counting write to maintain.
        let layout = try NodeStore.meta(db, .kpiLayout)
        if layout != Self.layout {
            if try db.tableExists("ts_kpi_totals") {
                try db.execute(sql: "DROP TABLE ts_kpi_totals")
                let derived: [MetaKey] = [.kpiFormulas, .kpiAdoption, .kpiSource, .kpiPublished]
                try db.execute(sql: "DELETE FROM ts_meta WHERE key IN (?, ?, ?, ?)", arguments: StatementArguments(derived.map(\.rawValue)))
            }
            try NodeStore.setMeta(db, .kpiLayout, Self.layout)
        }
        try db.execute(sql: """
            CREATE TABLE IF NOT EXISTS ts_kpi_totals (
                node TEXT NOT NULL,
                day INTEGER NOT NULL,
                kpi TEXT NOT NULL,
                numerator INTEGER NOT NULL,
                denominator INTEGER NOT NULL,
                dirty INTEGER NOT NULL DEFAULT 1,
                PRIMARY KEY (node, day, kpi)
            ) WITHOUT ROWID
            """)
    }

    /// The `interactions` columns the formulas read, in ``dialogue(_:)``'s order.
    static let dialogueColumns = ["id", "channel", "direction", "created_at", "answered_at", "resolved_at", "status", "abandoned_at",
                                  "sla_due", "customer_id", "topic", "handling_node", "originating_node", "allocated_node"]
    static let leadColumns = ["id", "source_channel", "status", "created_at", "won_at", "fulfilling_node", "source_node"]

    /// The facts of the row a raw statement stands on (columns as ``dialogueColumns``): read
    /// from SQLite's buffers, timestamps parsed without making strings of them.
    static func dialogue(_ h: SQLiteStatement) -> DialogueFacts {
        let answered = time(h, 4)
        return DialogueFacts(id: text(h, 0) ?? "", node: text(h, 13) ?? text(h, 11) ?? text(h, 12), createdAt: time(h, 3), channel: text(h, 1),
                             inbound: !equals(h, 2, "outbound"), answeredAt: answered, resolvedAt: time(h, 5),
                             abandoned: equals(h, 6, "closed") || length(h, 7) > 0, slaDue: time(h, 8),
                             customer: text(h, 9), topic: text(h, 10))
    }

    static func lead(_ h: SQLiteStatement) -> LeadFacts {
        LeadFacts(id: text(h, 0) ?? "", node: text(h, 5) ?? text(h, 6), createdAt: time(h, 3), channel: text(h, 1),
                  wonAt: equals(h, 2, "won") ? time(h, 4) : nil)
    }

    private static func length(_ h: SQLiteStatement, _ i: Int32) -> Int {
        sqlite3_column_type(h, i) == SQLITE_NULL ? 0 : Int(sqlite3_column_bytes(h, i))
    }

    private static func bytes(_ h: SQLiteStatement, _ i: Int32) -> UnsafeBufferPointer<UInt8>? {
        guard sqlite3_column_type(h, i) != SQLITE_NULL, let p = sqlite3_column_text(h, i) else { return nil }
        let n = Int(sqlite3_column_bytes(h, i))
        return n == 0 ? nil : UnsafeBufferPointer(start: p, count: n)
    }

    private static func text(_ h: SQLiteStatement, _ i: Int32) -> String? {
        bytes(h, i).map { String(decoding: $0, as: UTF8.self) }
    }

    private static func equals(_ h: SQLiteStatement, _ i: Int32, _ s: StaticString) -> Bool {
        guard let b = bytes(h, i), b.count == s.utf8CodeUnitCount else { return false }
        return memcmp(b.baseAddress!, s.utf8Start, b.count) == 0
    }

    private static func time(_ h: SQLiteStatement, _ i: Int32) -> Int64? {
        guard let b = bytes(h, i) else { return nil }
        return KPITime.millis(utf8: b) ?? KPITime.millis(String(decoding: b, as: UTF8.self))
    }

    /// The dialogues of one customer and topic held here (first-contact resolution's group).
    static let followUpGroupSQL = "SELECT \(dialogueColumns.joined(separator: ", ")) FROM interactions WHERE customer_id = ? AND topic = ? AND \(DomainTables.heldByStore)"

    /// Runs `sql` and hands each row's raw statement to `body`.
    static func forEachRow(_ db: Database, _ sql: String, _ arguments: [String] = [], _ body: (SQLiteStatement) -> Void) throws {
        let statement = try db.cachedStatement(sql: sql)
        let h = statement.sqliteStatement
        sqlite3_reset(h)
        sqlite3_clear_bindings(h)
        defer { sqlite3_reset(h) }
        for (i, argument) in arguments.enumerated() {
            _ = argument.withCString { sqlite3_bind_text(h, Int32(i + 1), $0, -1, unsafeBitCast(OpaquePointer(bitPattern: -1), to: sqlite3_destructor_type.self)) }
        }
        while true {
            let code = sqlite3_step(h)
            if code == SQLITE_DONE { return }
            guard code == SQLITE_ROW else { throw DatabaseError(resultCode: ResultCode(rawValue: code), message: String(cString: sqlite3_errmsg(sqlite3_db_handle(h)))) }
            body(h)
        }
    }

    /// Every counted dialogue and lead, counted afresh.
    static func recount(_ db: Database, evaluator: KPIEvaluator) throws -> [KPITotal] {
        // Read here, on the connection's thread; counted here and on a second thread.
        let readsDialogues = try evaluator.measuresDialogues && db.tableExists("interactions")
        var tally = try KPITally.counted(evaluator: evaluator) { add in
            guard readsDialogues else { return }
            try forEachRow(db, "SELECT \(dialogueColumns.joined(separator: ", ")) FROM interactions WHERE \(DomainTables.heldByStore)") {
                add(dialogue($0))
            }
        }
        if evaluator.measuresLeads, try db.tableExists("leads") {
            try forEachRow(db, "SELECT \(leadColumns.joined(separator: ", ")) FROM leads WHERE \(DomainTables.heldByStore)") {
                tally.add(lead($0))
            }
        }
        return tally.totals()
    }

    /// Replaces every accumulator with a recount (all marked for publishing).
    static func rebuild(_ db: Database, evaluator: KPIEvaluator) throws {
        if evaluator.needsFollowUps, try db.tableExists("interactions") {
            try db.execute(sql: "CREATE INDEX IF NOT EXISTS \(followUpIndex) ON interactions (customer_id, topic)")
        }
        try db.execute(sql: "DELETE FROM ts_kpi_totals")
        let insert = try db.cachedStatement(sql: "INSERT INTO ts_kpi_totals (kpi, node, day, numerator, denominator, dirty) VALUES (?, ?, ?, ?, ?, 1)")
        for t in try recount(db, evaluator: evaluator) {
            try DirectBinding.execute(db, insert) { b in
                b.text(t.kpi)
                b.text(t.node)
                b.integer(t.day)
                b.integer(t.numerator)
                b.integer(t.denominator)
            }
        }
    }

    /// Adds `delta` to the accumulators.
    static func add(_ db: Database, _ delta: [KPIContribution], ids: [String]) throws {
        guard !delta.isEmpty else { return }
        let upsert = try db.cachedStatement(sql: """
            INSERT INTO ts_kpi_totals (kpi, node, day, numerator, denominator, dirty) VALUES (?, ?, ?, ?, ?, 1)
            ON CONFLICT (node, day, kpi) DO UPDATE SET numerator = numerator + excluded.numerator,
                denominator = denominator + excluded.denominator, dirty = 1
            """)
        for c in delta {
            try DirectBinding.execute(db, upsert) { b in
                b.text(ids[c.kpi])
                b.text(c.node)
                b.integer(c.day)
                b.integer(c.numerator)
                b.integer(c.denominator)
            }
        }
    }

    /// A snapshot record's id: `node:kpi:period:start`, or a digest of it past 128 characters.
    static func snapshotID(node: String, kpi: String, period: KPIPeriodKind, start: Int64) -> String {
        let id = "\(node):\(kpi):\(period.rawValue):\(KPIDay.label(start))"
        guard id.utf8.count > 128 else { return id }
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in id.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return String(id.prefix(100)) + "~" + String(hash, radix: 16)
    }
}

/// What the store counts with, loaded once per transaction.
struct KPICounting {
    let evaluator: KPIEvaluator
    let ids: [String]
}

extension NodeStore {
    // MARK: Counting, inside every write

    /// The counting in force, from `ts_meta` (`kpi.formulas`), its evaluator made once per basis.
    func kpiCounting(_ db: Database) throws -> KPICounting? {
        guard let basis = try Self.meta(db, .kpiFormulas), !basis.isEmpty else { return nil }
        return kpiCountings.withLock { cache in
            if let cached = cache, cached.basis == basis { return cached.counting }
            guard let catalog = KPICatalog(formulaBasis: basis) else { return nil }
            let counting = KPICounting(evaluator: KPIEvaluator(catalog: catalog), ids: catalog.definitions.map(\.id))
            cache = (basis, counting)
            return counting
        }
    }

    /// Called for every record a transaction writes (after its row is written): keeps the
    /// KPI accumulators of `interactions` and `leads` in step, adding the record's new
    /// contribution and taking back its old one — and, for first-contact resolution, the
    /// change it makes to the other dialogues of its customer and topic.
    func countKPIs(_ db: Database, _ statements: inout LogStatements, table: TableSchema, id: String,
                   before: StoredRecord?, after: RecordState) throws {
        let isDialogue = table.name == DomainSchema.interactions.name
        guard isDialogue || table.name == DomainSchema.leads.name else { return }
        if statements.kpi == nil { statements.kpi = .some(try kpiCounting(db)) }
        guard let counting = statements.kpi!, counting.evaluator.catalog.definitions.isEmpty == false else { return }
        let old = before.flatMap { $0.state.isLive ? $0.state.liveValues : nil }
        let new = after.isLive ? after.liveValues : nil
        let delta: [KPIContribution]
        if isDialogue {
            guard counting.evaluator.measuresDialogues else { return }
            let b = old.map { DialogueFacts(id: id, fields: $0) }, a = new.map { DialogueFacts(id: id, fields: $0) }
            guard b != a else { return }
            var others: [DialogueFacts] = []
            if counting.evaluator.needsFollowUps {
                // Byte-exact groups (`FollowUpGroup`), as the statement selects them: a
                // customer id rewritten to a canonically equivalent one leaves one group
                // for another, and both are read.
                for key in Set([b, a].compactMap { $0?.followUpKey }) {
                    try KPIStorage.forEachRow(db, KPIStorage.followUpGroupSQL, [key.customer, key.topic]) {
                        let facts = KPIStorage.dialogue($0)
                        if facts.id != id { others.append(facts) }
                    }
                }
            }
            delta = counting.evaluator.delta(before: b, after: a, others: others)
        } else {
            guard counting.evaluator.measuresLeads else { return }
            let b = old.map { LeadFacts(id: id, fields: $0) }, a = new.map { LeadFacts(id: id, fields: $0) }
            guard b != a else { return }
            delta = counting.evaluator.delta(before: b, after: a)
        }
        try KPIStorage.add(db, delta, ids: counting.ids)
    }

    // MARK: Adopting a governance

    /// Makes the store count `adoption`'s KPIs (nil: none). When their formulas differ from
    /// those counted so far, every accumulator is recounted from the dialogues and leads
    /// held, in this transaction; when only targets, names or the release differ, the
    /// node's snapshots are marked for rewriting. Returns true when it recounted.
    @discardableResult
    public func adoptKPIs(_ adoption: KPIAdoption?, source: String? = nil) throws -> Bool {
        try writer.write { db in try adoptKPIs(db, adoption, source: source) }
    }

    func adoptKPIs(_ db: Database, _ adoption: KPIAdoption?, source: String?) throws -> Bool {
        let catalog = adoption?.catalog ?? .empty
        let basis = catalog.formulaBasis
        let current = try Self.meta(db, .kpiFormulas) ?? ""
        var recounted = false
        // Also when this version counts differently from the one that counted them.
        let rules = String(KPIEvaluator.countingRules)
        let countedWith = try Self.meta(db, .kpiCountingRules)
        if basis != current || (!basis.isEmpty && countedWith != rules) {
            if basis.isEmpty {
                try db.execute(sql: "DELETE FROM ts_kpi_totals")
            } else {
                try KPIStorage.rebuild(db, evaluator: KPIEvaluator(catalog: catalog))
            }
            try Self.setMeta(db, .kpiFormulas, basis)
            try Self.setMeta(db, .kpiCountingRules, rules)
            recounted = true
        }
        let encoded = try adoption.map { String(decoding: try Self.kpiJSON.encode($0), as: UTF8.self) } ?? ""
        let stored = try Self.meta(db, .kpiAdoption) ?? ""
        if encoded != stored {
            try Self.setMeta(db, .kpiAdoption, encoded)
            // New targets or release: every snapshot of the node is written again.
            try db.execute(sql: "UPDATE ts_kpi_totals SET dirty = 1")
        }
        if let source { try Self.setMeta(db, .kpiSource, source) }
        return recounted
    }

    /// Adopts the KPIs of the governance the node applied last (its release ⊕ overlay, as
    /// its governance follower recorded it); nothing when it applied none. Cheap when that
    /// decision was adopted already.
    @discardableResult
    public func adoptKPIsOfAppliedGovernance() throws -> Bool {
        // The decision's id first (one indexed row, no config text): an agent asks every few seconds.
        let latest = try writer.read { db -> (id: Int64, adopted: Bool)? in
            guard let id = try Int64.fetchOne(db, sql: "SELECT MAX(id) FROM ts_gov_applied WHERE effective IS NOT NULL AND release IS NOT NULL") else { return nil }
            let source = try Self.meta(db, .kpiSource)
            return (id, source == Self.appliedSource(id))
        }
        guard let latest, !latest.adopted, let applied = try appliedGovernance() else { return false }
        let catalog = try applied.effective.map { try KPICatalog(effectiveConfigJSON: $0) } ?? .empty
        return try adoptKPIs(KPIAdoption(release: applied.release, overlay: applied.overlay, catalog: catalog), source: Self.appliedSource(latest.id))
    }

    /// The adoption's source for the applied decision `id`, with the counting rules' version:
    /// an upgraded store whose rules count differently adopts (and recounts) once, though its
    /// decision is the same (helper 109: the recount never ran).
    static func appliedSource(_ id: Int64) -> String { "applied:\(id):r\(KPIEvaluator.countingRules)" }

    /// What the store counts now, if anything.
    public func kpiAdoption() throws -> KPIAdoption? {
        try writer.read { db in try Self.kpiAdoption(db) }
    }

    static func kpiAdoption(_ db: Database) throws -> KPIAdoption? {
        guard let text = try Self.meta(db, .kpiAdoption),
              !text.isEmpty else { return nil }
        return try? JSONDecoder().decode(KPIAdoption.self, from: Data(text.utf8))
    }

    private static var kpiJSON: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }

    // MARK: Reading

    /// Every accumulator (all nodes the store holds dialogues or leads of), or one node's.
    public func kpiTotals(node: String? = nil) throws -> [KPITotal] {
        try writer.read { db in
            let filter = node == nil ? "" : "WHERE node = ?"
            return try Row.fetchAll(db, sql: "SELECT kpi, node, day, numerator, denominator FROM ts_kpi_totals \(filter) ORDER BY kpi, node, day",
                                    arguments: node.map { [$0] } ?? []).map {
                KPITotal(kpi: $0[0], node: $0[1], day: $0[2], numerator: $0[3], denominator: $0[4])
            }
        }
    }

    /// A recount from the dialogues and leads held, with the formulas adopted, without
    /// touching the accumulators: what they must equal.
    public func recountKPIs() throws -> [KPITotal] {
        try writer.read { db in
            guard let counting = try kpiCounting(db) else { return [] }
            return try KPIStorage.recount(db, evaluator: counting.evaluator)
        }
    }

    /// Replaces the accumulators with a recount (the formulas adopted stay).
    public func rebuildKPIs() throws {
        try writer.write { db in
            guard let counting = try kpiCounting(db) else { return }
            try KPIStorage.rebuild(db, evaluator: counting.evaluator)
            try Self.setMeta(db, .kpiCountingRules, String(KPIEvaluator.countingRules))
        }
    }

    /// The node's view of KPIs for `period`: its own values from its accumulators (its own
    /// node, against its adopted targets) and every other node's from the KPI snapshots it
    /// holds (against the targets those nodes run), with each node's path from the root
    /// (from the snapshots; the store's own from `tree.path`).
    public func kpiObservations(period: KPIPeriodKind) throws -> (node: String?, adoption: KPIAdoption?, observations: [KPIObservation], paths: [String: [String]]) {
        try writer.read { db in
            let me = try Self.identity(db)?.node.rawValue
            let adoption = try Self.kpiAdoption(db)
            var paths: [String: [String]] = [:]
            if let me { paths[me] = try Self.kpiPath(db, node: me) }
            var observations: [KPIObservation] = []
            if let me {
                let totals = try Row.fetchAll(db, sql: "SELECT kpi, node, day, numerator, denominator FROM ts_kpi_totals WHERE node = ?", arguments: [me]).map {
                    KPITotal(kpi: $0[0], node: $0[1], day: $0[2], numerator: $0[3], denominator: $0[4])
                }
                let targets = Dictionary((adoption?.definitions ?? []).map { ($0.id, $0.target) }, uniquingKeysWith: { a, _ in a })
                observations = KPIObservation.periods(of: totals, kind: period, target: { targets[$0] })
            }
            let rows = try Row.fetchAll(db, sql: """
                SELECT node, path, kpi, period_start, numerator, denominator, target_kind, target, unit FROM kpi_snapshots
                WHERE period = ? AND \(DomainTables.heldByStore)
                """, arguments: [period.rawValue])
            for row in rows {
                guard let node: String = row[0], node != me, let kpi: String = row[2],
                      let start = (row[3] as String?).flatMap(KPIDay.parse) else { continue }
                if let path: String = row[1] { paths[node] = path.split(separator: "/").map(String.init) }
                let target = (row[6] as String?).flatMap(KPITarget.Comparison.init(rawValue:)).flatMap { c in (row[7] as Double?).map { KPITarget(c, $0) } }
                observations.append(KPIObservation(kpi: kpi, node: node, periodStart: start, numerator: row[4] ?? 0, denominator: row[5] ?? 0,
                                                   target: target, unit: (row[8] as String?).flatMap(KPIUnit.init(rawValue:))))
            }
            return (me, adoption, observations, paths)
        }
    }

    /// The KPI table of `viewer` (default: the store's node) from what this store holds
    /// (``kpiObservations(period:)``). `paths` override the nodes' paths (a hub knows the tree).
    public func kpiReport(period: KPIPeriodKind, byNode: Bool, viewer: String? = nil, paths known: [String: [String]] = [:]) throws -> KPIResponse {
        let view = try kpiObservations(period: period)
        let viewer = viewer ?? view.node ?? ""
        let paths = view.paths.merging(known) { _, new in new }
        return KPIResponse(node: viewer, period: period, byNode: byNode,
                           rows: KPIReport.rows(viewer: viewer, catalog: view.adoption?.catalog ?? .empty, catalogIsViewers: viewer == view.node, period: period,
                                                observations: view.observations, paths: paths, byNode: byNode))
    }

    static func kpiPath(_ db: Database, node: String) throws -> [String] {
        if let text = try Self.meta(db, .treePath) {
            let path = text.split(separator: "/").map(String.init)
            if path.last == node { return path }
        }
        if let parent = try Self.meta(db, .parent) { return [parent, node] }
        return [node]
    }

    // MARK: Publishing snapshots

    /// Writes the node's own KPI snapshot records (`kpi_snapshots`, routed to the node, so
    /// they sync upward) for every day, week and month whose accumulators changed since the
    /// last call, against the targets adopted; records whose content is unchanged are not
    /// written again. Returns how many records it wrote.
    @discardableResult
    public func publishKPISnapshots(nowMillis: UInt64 = WallClock.nowMillis()) throws -> Int {
        struct Dirty { var kpi: String; var day: Int64; var numerator: Int64; var denominator: Int64 }
        let plan: (writes: [RecordWrite], dirty: [Dirty], me: String)? = try writer.read { db in
            guard let me = try Self.identity(db)?.node.rawValue else { return nil }
            let dirty = try Row.fetchAll(db, sql: "SELECT kpi, day, numerator, denominator FROM ts_kpi_totals WHERE node = ? AND dirty = 1",
                                         arguments: [me]).map { Dirty(kpi: $0[0], day: $0[1], numerator: $0[2], denominator: $0[3]) }
            let adoption = try Self.kpiAdoption(db)
            let path = try Self.kpiPath(db, node: me).joined(separator: "/")
            let published = try Self.meta(db, .kpiPublished)
            let stamp = try Self.kpiPublishStamp(db, node: me)
            var periods: Set<KPIStorage.PeriodRef> = []
            var writes: [RecordWrite] = []
            let definitions = Dictionary((adoption?.definitions ?? []).map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
            if published != stamp {
                // A new path or governance: every period of the node, once.
                for row in try Row.fetchAll(db, sql: "SELECT DISTINCT kpi, day FROM ts_kpi_totals WHERE node = ?", arguments: [me]) {
                    for kind in KPIPeriodKind.allCases { periods.insert(.init(kpi: row[0], kind: kind, start: kind.start(ofDay: row[1]))) }
                }
                // And every period it published before: one that counts nothing under the new
                // formulas (a KPI moved to another channel) is written again as 0/0, and one
                // of a KPI the release no longer defines is deleted. Kept, they showed the old
                // release's values at HQ for good.
                if try db.tableExists(DomainSchema.kpiSnapshots.name) {
                    for row in try Row.fetchAll(db, sql: "SELECT id, kpi, period, period_start FROM kpi_snapshots WHERE node = ?", arguments: [me]) {
                        guard let id: String = row[0], let kpi: String = row[1] else { continue }
                        guard definitions[kpi] != nil else {
                            writes.append(.delete(DomainSchema.kpiSnapshots.name, id: id))
                            continue
                        }
                        guard let kind = (row[2] as String?).flatMap(KPIPeriodKind.init(rawValue:)),
                              let start = (row[3] as String?).flatMap(KPIDay.parse) else { continue }
                        periods.insert(.init(kpi: kpi, kind: kind, start: start))
                    }
                }
            }
            for d in dirty {
                for kind in KPIPeriodKind.allCases { periods.insert(.init(kpi: d.kpi, kind: kind, start: kind.start(ofDay: d.day))) }
            }
            let sum = try db.cachedStatement(sql: """
                SELECT COALESCE(SUM(numerator), 0), COALESCE(SUM(denominator), 0) FROM ts_kpi_totals WHERE kpi = ? AND node = ? AND day >= ? AND day < ?
                """)
            let table = DomainSchema.kpiSnapshots
            for p in periods.sorted(by: { ($0.kpi, $0.kind.rawValue, $0.start) < ($1.kpi, $1.kind.rawValue, $1.start) }) {
                guard let definition = definitions[p.kpi] else { continue }
                let row = try Row.fetchOne(sum, arguments: [p.kpi, me, p.start, p.kind.end(ofPeriodStartingAt: p.start)])
                let (n, d): (Int64, Int64) = (row?[0] ?? 0, row?[1] ?? 0)
                let value = definition.unit.value(numerator: Double(n), denominator: Double(d))
                var fields: [String: FieldValue] = [
                    "node": .string(me), "path": .string(path), "kpi": .string(p.kpi), "name": .string(definition.name),
                    "unit": .string(definition.unit.rawValue), "period": .string(p.kind.rawValue),
                    "period_start": .string(KPIDay.label(p.start)), "numerator": .int(n), "denominator": .int(d),
                    "value": value.map { .double($0) } ?? .null,
                    "target_kind": .string(definition.target.comparison.rawValue), "target": .double(definition.target.value),
                    "met": value.map { .bool(definition.target.isMet(by: $0)) } ?? .null,
                    "release": adoption?.release.map { .int(Int64($0)) } ?? .null,
                    "overlay": adoption?.overlay.map { .string($0) } ?? .null,
                ]
                let id = KPIStorage.snapshotID(node: me, kpi: p.kpi, period: p.kind, start: p.start)
                if let existing = try load(db, table: table, id: id), existing.state.isLive {
                    let values = existing.state.liveValues
                    if fields.allSatisfy({ key, value in (values[key] ?? .null) == value }) { continue }
                }
                fields["computed_at"] = .string(Self.isoTime(nowMillis))
                writes.append(.upsert(table.name, id: id, fields))
            }
            return (writes, dirty, me)
        }
        guard let plan else { return 0 }
        if !plan.writes.isEmpty { try commit(plan.writes, wallMillis: nowMillis) }
        try writer.write { db in
            let clear = try db.cachedStatement(sql: """
                UPDATE ts_kpi_totals SET dirty = 0 WHERE kpi = ? AND node = ? AND day = ? AND numerator = ? AND denominator = ?
                """)
            for d in plan.dirty { try clear.execute(arguments: [d.kpi, plan.me, d.day, d.numerator, d.denominator]) }
            try Self.setMeta(db, .kpiPublished, try Self.kpiPublishStamp(db, node: plan.me))
        }
        return plan.writes.count
    }

    /// True when some accumulator of the node changed since its snapshots were last written
    /// (one indexed lookup: what an agent asks before publishing).
    public func kpiSnapshotsDue() throws -> Bool {
        try writer.read { db in
            guard let me = try Self.identity(db)?.node.rawValue else { return false }
            if try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM ts_kpi_totals WHERE node = ? AND dirty = 1)", arguments: [me]) == true { return true }
            // Moved in the tree, or another release or overlay: every snapshot is written again.
            let published = try Self.meta(db, .kpiPublished)
            return try published != Self.kpiPublishStamp(db, node: me)
                && Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM ts_kpi_totals WHERE node = ?)", arguments: [me]) == true
        }
    }

    /// What the node's snapshots carry besides values: its path, release and overlay.
    static func kpiPublishStamp(_ db: Database, node: String) throws -> String {
        let adoption = try kpiAdoption(db)
        // With the counting rules: recounted by other rules, every period published before is
        // written again (one that counts nothing now becomes 0/0 instead of keeping its value).
        return "\(try kpiPath(db, node: node).joined(separator: "/"))|\(adoption?.release ?? 0)|\(adoption?.overlay ?? "")|r\(KPIEvaluator.countingRules)"
    }

    static func isoTime(_ millis: UInt64) -> String {
        let date = Date(timeIntervalSince1970: Double(millis) / 1000)
        return date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: millis % 1000 != 0))
    }
}

extension KPIStorage {
    struct PeriodRef: Hashable {
        var kpi: String
        var kind: KPIPeriodKind
        var start: Int64
    }
}

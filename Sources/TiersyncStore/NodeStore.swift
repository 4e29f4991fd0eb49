import Crypto
import Synchronization
import Foundation
import GRDB
import TiersyncCore

/// A node's local store: one SQLite file holding the domain tables, the change log, the
/// per-field versions, conflicts, quarantine and sync cursors.
///
/// Every write to a domain table goes through this type and appends its change-log entry
/// in the same transaction, so no write can commit without its change. The hybrid clock's
/// state is persisted in that transaction too: processes sharing the file (an agent and a
/// CLI command) never stamp two changes alike.
public final class NodeStore: Sendable {
    public let path: String
    public let schema: Schema
    public let clock: HybridLogicalClock
    let writer: any DatabaseWriter
    /// A connection of its own for ``checkpoint()``, when the store's owner copies the
    /// write-ahead log back (``WALCheckpointing/byOwner``).
    private let checkpointer: DatabaseQueue?
    /// The log's length as the writer last reported it, when the owner checkpoints.
    private let walProgress: WALProgress?
    /// Each domain table's statements, built once: building and hashing them per row was a
    /// tenth of the ingest time.
    let tableSQL: [String: TableSQL]
    /// This store's node id, once known (it never changes once set).
    private let cachedNode = Mutex<NodeID?>(nil)
    /// What every local write passes through (``LocalWritePolicy``); installed by whoever
    /// opens the store for a node's local writes (the agent, the CLI).
    private let policy = Mutex<(any LocalWritePolicy)?>(nil)
    /// The KPI counting last loaded, by its basis (`NodeStore+KPI.swift`).
    let kpiCountings = Mutex<(basis: String, counting: KPICounting)?>(nil)

    struct TableSQL: Sendable {
        let upsert: String
        let delete: String
        let select: String
        /// `id`, the fields in schema order, then the engine columns: every read of a
        /// domain row selects these, so values are read by position.
        let columns: String
        /// Positions of the engine columns in ``columns``.
        let versionsIndex: Int, tombstoneIndex: Int, routeIndex: Int

        init(_ table: TableSchema) {
            let name = table.name.quotedDatabaseIdentifier
            let columns = table.fields.map(\.name.quotedDatabaseIdentifier)
                + [DomainTables.versionsColumn, DomainTables.tombstoneColumn, DomainTables.routeColumn]
            upsert = "INSERT OR REPLACE INTO \(name) (id, \(columns.joined(separator: ", "))) VALUES (?\(String(repeating: ", ?", count: columns.count)))"
            delete = "DELETE FROM \(name) WHERE id = ?"
            self.columns = (["id"] + columns).joined(separator: ", ")
            select = "SELECT \(self.columns) FROM \(name) WHERE id = ?"
            (versionsIndex, tombstoneIndex, routeIndex) = (table.fields.count + 1, table.fields.count + 2, table.fields.count + 3)
        }
    }

    /// Opens (creating if needed) the store at `path`; `":memory:"` gives a private
    /// in-memory store for unit tests. `checkpointing` says who copies the write-ahead log
    /// back into the database file (``WALCheckpointing``).
    public init(path: String, schema: Schema = DomainSchema.schema, clock: HybridLogicalClock = HybridLogicalClock(),
                checkpointing: WALCheckpointing = .byWriter) throws {
        self.path = path
        self.schema = schema
        self.clock = clock
        tableSQL = Dictionary(uniqueKeysWithValues: schema.tables.map { ($0.name, TableSQL($0)) })
        if path == ":memory:" {
            writer = try DatabaseQueue(configuration: StoreConfiguration.make())
            (checkpointer, walProgress) = (nil, nil)
        } else {
            switch checkpointing {
            case .byWriter:
                writer = try StoreConfiguration.openPool(path: path)
                (checkpointer, walProgress) = (nil, nil)
            case .byOwner:
                let progress = WALProgress(backstopFrames: WALCheckpointing.writerBackstopPages)
                writer = try StoreConfiguration.openPool(path: path, walProgress: progress)
                checkpointer = try DatabaseQueue(path: path, configuration: StoreConfiguration.make())
                walProgress = progress
            }
        }
        try NodeStoreMigrations.migrator.migrate(writer)
        try writer.write { db in
            try DomainTables.ensure(schema, in: db)
            try KPIStorage.ensure(db)
        }
    }

    /// Copies what it can of the write-ahead log into the database file, on a connection
    /// of its own, without waiting for the writer or for readers (a passive checkpoint:
    /// frames a reader may still need stay for the next call). Runs on GRDB's queue, not
    /// on the caller's thread. A store of ``WALCheckpointing/byWriter`` does nothing and
    /// reports `nil`.
    ///
    /// - Returns: the log's length and how much of it is now in the database file, in pages.
    @discardableResult
    public func checkpoint() async throws -> (logPages: Int, copiedPages: Int)? {
        guard let checkpointer, let walProgress else { return nil }
        let (log, copied) = try await checkpointer.writeWithoutTransaction { db in try db.checkpoint(.passive) }
        walProgress.copiedFrames.store(copied, ordering: .relaxed)
        return (log, copied)
    }

    /// Pages this process's writer committed to the log since the last ``checkpoint()``
    /// (an atomic read, no SQLite call); `nil` for a store its writer checkpoints.
    public var uncheckpointedPages: Int? { walProgress?.pending }

    // MARK: Identity and settings

    public func identity() throws -> NodeIdentity? {
        try writer.read { db in try Self.identity(db) }
    }

    /// Sets who this store belongs to. A store never changes tenant or node once set.
    public func setIdentity(_ identity: NodeIdentity) throws {
        try writer.write { db in try writeIdentity(db, identity) }
    }

    private func writeIdentity(_ db: Database, _ identity: NodeIdentity) throws {
        if let existing = try Self.identity(db), existing.tenant != identity.tenant || existing.node != identity.node {
            throw StoreError.invalidArgument("the store at \(path) already belongs to node '\(existing.node)' of tenant '\(existing.tenant)'")
        }
        try Self.setMeta(db, "tenant", identity.tenant.rawValue)
        try Self.setMeta(db, "node", identity.node.rawValue)
        if let parent = identity.parent { try Self.setMeta(db, "parent", parent.rawValue) }
    }

    /// Records a completed enrollment in one transaction: identity, credential, parent
    /// URL, and the highest sequence number the parent already holds from this node (a
    /// rebuilt store must not number new changes like old ones).
    public func completeEnrollment(_ identity: NodeIdentity, credential: String, parentURL: String, highestKnownSeq: Int64) throws {
        // A floor outside the sequence range would number every later change out of range
        // (refused for good) or overflow the next number: the parent's answer is wrong.
        guard highestKnownSeq == 0 || Change.sequenceRange.contains(highestKnownSeq) else {
            throw StoreError.invalidArgument("the parent reports sequence \(highestKnownSeq) as this node's highest, outside \(Change.sequenceRange)")
        }
        try writer.write { db in
            try writeIdentity(db, identity)
            try Self.setMeta(db, "credential", credential)
            try Self.setMeta(db, "parent_url", parentURL)
            try Self.setMeta(db, "seq_floor", String(max(highestKnownSeq, try Self.seqFloor(db))))
        }
    }

    /// The highest sequence number this store holds from `node` (applied or refused),
    /// counting only numbers in ``Change/sequenceRange``: a refused absurd one (Int64.max)
    /// must not become a re-enrolling node's floor.
    public func highestSeq(of node: NodeID) async throws -> Int64 {
        try await writer.readReleasingConnection { db in
            let arguments: StatementArguments = [node.rawValue, Change.sequenceRange.lowerBound, Change.sequenceRange.upperBound]
            let applied = try Int64.fetchOne(db, sql: "SELECT MAX(origin_seq) FROM ts_changes WHERE origin = ? AND origin_seq BETWEEN ? AND ?",
                                             arguments: arguments) ?? 0
            let refused = try Int64.fetchOne(db, sql: "SELECT MAX(origin_seq) FROM ts_quarantine WHERE origin = ? AND origin_seq BETWEEN ? AND ?",
                                             arguments: arguments) ?? 0
            return max(applied, refused)
        }
    }

    public func meta(_ key: String) throws -> String? {
        try writer.read { db in try String.fetchOne(db, sql: "SELECT value FROM ts_meta WHERE key = ?", arguments: [key]) }
    }

    public func setMeta(_ key: String, _ value: String?) throws {
        try writer.write { db in
            if let value { try Self.setMeta(db, key, value) } else {
                try db.execute(sql: "DELETE FROM ts_meta WHERE key = ?", arguments: [key])
            }
        }
    }

    // MARK: Local writes

    /// The rule local writes pass through before they are stamped (``LocalWritePolicy``):
    /// nil writes them as given. Setting it affects the commits that start afterwards.
    public var writePolicy: (any LocalWritePolicy)? {
        get { policy.withLock { $0 } }
        set { policy.withLock { $0 = newValue } }
    }

    /// Commits local writes atomically, each with its change-log entry, and returns the
    /// changes made. Throws ``StoreError/rejected(_:)`` for a write the schema refuses;
    /// then nothing of the batch is written.
    @discardableResult
    public func commit(_ writes: [RecordWrite], wallMillis: UInt64 = WallClock.nowMillis()) throws -> [Change] {
        try writer.write { db in
            guard let me = try Self.identity(db) else { throw StoreError.notEnrolled(path: path) }
            var last = try Self.lastHLC(db)
            var nextSeq = max(try Self.seqFloor(db), try Int64.fetchOne(db, sql: "SELECT MAX(origin_seq) FROM ts_changes WHERE origin = ?", arguments: [me.node.rawValue]) ?? 0)
            var made: [Change] = []
            var statements = LogStatements(db)
            let policy = self.writePolicy
            let reads = CommitReads()
            for requested in writes {
                guard let table = schema.table(requested.table) else {
                    throw StoreError.rejected(.init(.unknownTable, "unknown table '\(requested.table)' (known: \(schema.tables.map(\.name).joined(separator: ", ")))"))
                }
                let stored = try load(db, table: table, id: requested.id)
                var write = requested
                if let policy {
                    write = try policy.amend(requested, in: LocalWriteContext(identity: me, wallMillis: wallMillis, stored: stored,
                                                                              storePath: path, db: db, store: self, reads: reads))
                    guard write.table == requested.table, write.id == requested.id, write.op == requested.op else {
                        throw StoreError.invalidArgument("the store's write policy changed which record \(requested.table)/\(requested.id) a write is for")
                    }
                }
                var fields = write.fields
                if write.op == .upsert, stored?.state.isLive != true, let first = table.routeFields.first, fields[first] == nil {
                    // The first route field names where a record was made or who owns it
                    // (originating node, source node, owning dealer): by default, the writer.
                    fields[first] = .string(me.node.rawValue)
                }
                last = clock.tick(last: last, wallMillis: wallMillis)
                nextSeq += 1
                var prior: [String: FieldVersion] = [:]
                for name in fields.keys { prior[name] = stored?.state.versions[name] }
                let change = Change(origin: me.node, originSeq: nextSeq, hlc: last, table: write.table, recordID: write.id,
                                    op: write.op, fields: fields, prior: prior)
                switch schema.validate(change) {
                case .failure(let rejection): throw StoreError.rejected(rejection)
                case .success(let valid):
                    let merged = Self.merge(valid, into: stored, table: table)
                    _ = try apply(db, &statements, valid, log: EncodedLogEntry(valid, trail: valid.trail), table: table, stored: stored,
                                  merged: merged, source: .local, from: nil, nowMillis: wallMillis)
                    made.append(valid)
                }
            }
            try Self.setMeta(db, "hlc", String(last.rawValue))
            return made
        }
    }

    // MARK: Received changes

    /// Applies changes received from `sender` in one transaction: each is applied once
    /// (by origin and sequence), or quarantined with its reason; none blocks another.
    /// `cursor`, when given, is stored in the same transaction, so a crash can never
    /// separate "applied" from "remembered as applied".
    public func applyIncoming(_ changes: [Change], from sender: NodeID, source: ChangeSource,
                              checkSkew: Bool, gate: ChangeGate? = nil, cursor: (name: String, value: Int64)? = nil,
                              wallMillis: UInt64 = WallClock.nowMillis()) async throws -> IncomingReport {
        let batch = try await prepareIncoming(changes, from: sender, source: source, checkSkew: checkSkew, gate: gate, wallMillis: wallMillis)
        return try await apply(batch, cursor: cursor)
    }

    /// The first half of ``applyIncoming(_:from:source:checkSkew:gate:cursor:wallMillis:)``:
    /// validation, encoding and the merge of records new here, which need no store and run
    /// on the caller's core, outside the (serialized) write transaction. A catch-up
    /// prepares the next page while the current one is written.
    public func prepareIncoming(_ changes: [Change], from sender: NodeID, source: ChangeSource,
                                checkSkew: Bool, gate: ChangeGate? = nil,
                                wallMillis: UInt64 = WallClock.nowMillis()) async throws -> IncomingBatchPlan {
        let me = try await receiverNode()
        return IncomingBatchPlan(changes: changes, sender: sender, source: source, gate: gate, wallMillis: wallMillis,
                                 prepared: PreparedChange.prepare(changes, schema: schema, clock: clock, receiver: me, sender: sender,
                                                                  checkSkew: checkSkew, gate: gate, wallMillis: wallMillis))
    }

    /// The second half: applies a prepared batch in one transaction, storing `cursor` with it.
    public func apply(_ plan: IncomingBatchPlan, cursor: (name: String, value: Int64)? = nil) async throws -> IncomingReport {
        let (changes, prepared, sender, source, gate, wallMillis) = (plan.changes, plan.prepared, plan.sender, plan.source, plan.gate, plan.wallMillis)
        // Kept alive past the transaction so freeing it happens here, not on the writer.
        defer { withExtendedLifetime(plan) {} }
        return try await writer.write { db in
            var report = IncomingReport()
            var last = try Self.lastHLC(db)
            var statements = LogStatements(db)
            var batch = try IncomingBatch(db, changes: changes, schema: self.schema)
            func refuse(_ change: Change, _ rejection: ChangeRejection) throws {
                try self.quarantine(db, change, rejection, from: sender, nowMillis: wallMillis)
                batch.quarantined()
                report.rejected.append(RejectedChange(change: change, rejection: rejection))
            }
            for (change, ready) in zip(changes, prepared) {
                switch try batch.known(db, change) {
                case .new:
                    break
                case .skewFenced(let refusedAt):
                    if change.hlc.wallMillis > refusedAt {
                        try refuse(change, ChangeRejection(.clockSkew, "change \(change.origin)#\(change.originSeq) to \(change.table)/\(change.recordID) was refused for clock skew before; re-stamp it to no later than \(refusedAt) (the receiver's clock then) and send it again",
                                                           restampAtMillis: refusedAt))
                        continue
                    }
                case .duplicate:
                    report.duplicates += 1
                    continue
                case .reused:
                    try refuse(change, ChangeRejection(.identityReused, "change \(change.origin)#\(change.originSeq) reuses a sequence number of a different earlier change from that node; its database was probably restored or rebuilt: re-enroll the node"))
                    continue
                }
                let valid: Change
                switch ready.verdict {
                case .failure(let rejection):
                    try refuse(change, rejection)
                    continue
                case .success(let v): valid = v
                }
                let table = ready.table!
                let stored: StoredRecord?
                let merged: Merged
                let row: EncodedRecord?
                if let fresh = ready.fresh, !batch.mayExist(table: valid.table, id: valid.recordID) {
                    // Nothing stored for the record: the prepared merge is the merge.
                    if let refusal = fresh.refusal { try refuse(change, refusal); continue }
                    (stored, merged, row) = (nil, fresh.merged, fresh.row)
                } else {
                    stored = try self.load(db, table: table, id: valid.recordID)
                    // Merged once: the gate judges the result, and the same result is written.
                    merged = Self.merge(valid, into: stored, table: table)
                    if let gate, let refusal = gate(GateContext(change: valid, sender: sender, routeBefore: stored?.route, routeAfter: merged.route)) {
                        try refuse(change, refusal)
                        continue
                    }
                    row = nil
                }
                let outcome = try self.apply(db, &statements, valid, log: ready.log!, table: table, stored: stored, merged: merged, row: row,
                                             source: source, from: sender, nowMillis: wallMillis)
                batch.applied(valid)
                // Refused earlier for its context, accepted now: no longer quarantined.
                if !batch.quarantineEmpty {
                    try db.cachedStatement(sql: "DELETE FROM ts_quarantine WHERE origin = ? AND origin_seq = ?")
                        .execute(arguments: [valid.origin.rawValue, valid.originSeq])
                }
                report.applied += 1
                report.conflicts += outcome.conflicts.count
                // Never adopt a time far in the future, even from a trusted parent: the
                // node would stamp its own writes there and have them refused.
                if valid.hlc.wallMillis <= wallMillis + self.clock.maxSkewMillis { last = max(last, valid.hlc) }
            }
            try Self.setMeta(db, "hlc", String(last.rawValue))
            if let cursor { try Self.setCursor(db, cursor.name, cursor.value) }
            return report
        }
    }

    /// This store's node, for the hop a received change records here. A node id never
    /// changes once set, so it is read once.
    private func receiverNode() async throws -> NodeID? {
        if let node = cachedNode.withLock({ $0 }) { return node }
        let node = try await writer.readReleasingConnection { db in try Self.identity(db)?.node }
        if let node { cachedNode.withLock { $0 = node } }
        return node
    }

    /// A record after a change, with what the change did and where the record is routed.
    struct Merged: Sendable {
        var state: RecordState
        var outcome: ApplyOutcome
        var route: Set<NodeID>
    }

    static func merge(_ change: Change, into stored: StoredRecord?, table: TableSchema) -> Merged {
        var state = stored?.state ?? RecordState()
        let outcome = state.apply(change)
        return Merged(state: state, outcome: outcome, route: route(of: state, table: table, previous: stored?.route))
    }

    // MARK: Reading the log

    /// Changes to send upward: everything not received from the parent, after `seq`.
    public func upstreamBatch(after seq: Int64, limit: Int) throws -> [LoggedChange] {
        try writer.read { db in
            try Self.fetchLogged(db, sql: """
                SELECT \(Self.loggedColumns) FROM ts_changes WHERE seq > ? AND source != 'parent' ORDER BY seq LIMIT ?
                """, arguments: [seq, limit])
        }
    }

    /// How many changes wait to go upward after `seq`.
    public func upstreamBacklog(after seq: Int64) throws -> Int {
        try writer.read { db in
            try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM ts_changes WHERE seq > ? AND source != 'parent'", arguments: [seq]) ?? 0
        }
    }

    /// The newest log position of a change that goes upward (0 when none).
    public func lastUpstreamSeq() throws -> Int64 {
        try writer.read { db in
            try Int64.fetchOne(db, sql: "SELECT MAX(seq) FROM ts_changes WHERE source != 'parent'") ?? 0
        }
    }

    /// One page of the change feed for a node with `scope`, after `cursor`, leaving out
    /// changes received from `excluding` (it has them: its own, and those it relayed).
    public func feed(after cursor: Int64, scope: Scope, excluding: NodeID?, limit: Int) async throws -> PullResponse {
        try await writer.readReleasingConnection { db in
            let page = try Self.feedPage(db, after: cursor, scope: scope, limit: limit)
            var entries: [LoggedChange] = []
            try Self.forEachChunk(of: page.deliver, excluding: excluding) { sql, arguments in
                entries += try Self.fetchLogged(db, sql: "SELECT \(Self.loggedColumns) " + sql, arguments: arguments)
            }
            return PullResponse(changes: entries.map(\.change), nextCursor: page.next, more: page.more, head: page.head)
        }
    }

    /// The same page as ``feed(after:scope:excluding:limit:)``, already written as the
    /// wire's JSON (``WireEncoding/pullResponse(_:)``, byte for byte): the log keeps each
    /// change's fields, prior versions and trail as canonical JSON, which is copied into
    /// the page instead of being parsed and written again. A hub serves pulls this way.
    public func encodedFeed(after cursor: Int64, scope: Scope, excluding: NodeID?, limit: Int) async throws -> EncodedPullPage {
        try await writer.readReleasingConnection { db in
            let page = try Self.feedPage(db, after: cursor, scope: scope, limit: limit)
            var out = "{\"changes\":["
            var count = 0
            try Self.forEachChunk(of: page.deliver, excluding: excluding) { sql, arguments in
                let rows = try Row.fetchCursor(db, sql: "SELECT origin, origin_seq, hlc, tbl, record_id, op, fields, prior, trail " + sql,
                                               arguments: arguments)
                while let row = try rows.next() {
                    if count > 0 { out += "," }
                    WireEncoding.storedChange(origin: row[0], seq: row[1], hlc: UInt64(bitPattern: row[2] as Int64), table: row[3],
                                              id: row[4], op: row[5], fields: row[6], prior: row[7], trail: row[8], into: &out)
                    count += 1
                }
            }
            out += "],\"nextCursor\":\(page.next),\"more\":\(page.more ? "true" : "false"),\"head\":\(page.head)}"
            return EncodedPullPage(count: count, nextCursor: page.next, more: page.more, head: page.head, json: Array(out.utf8))
        }
    }

    /// Which log positions a feed page covers: candidates first (the scope's changes after
    /// the cursor, up to `limit`); `more` and the next cursor follow the candidates, so
    /// leaving out the caller's own changes afterwards skips nothing. `deliver` adds the
    /// snapshots the candidates owe (``routeEntrySnapshots(_:after:through:scope:)``), in log order.
    private static func feedPage(_ db: Database, after cursor: Int64, scope: Scope, limit: Int) throws
        -> (deliver: [Int64], next: Int64, more: Bool, head: Int64) {
        let page = try feedCandidates(db, after: cursor, scope: scope, limit: limit)
        guard let last = page.deliver.last else { return page }
        let snapshots = try routeEntrySnapshots(db, after: cursor, through: last, scope: scope)
        guard !snapshots.isEmpty else { return page }
        return (Array(snapshots.union(page.deliver)).sorted(), page.next, page.more, page.head)
    }

    /// The snapshot on route entry: for each change in `(cursor, through]` that routed a
    /// record to a node of `scope` that did not have it (no node of the scope was on its
    /// route before), the log positions of that record's earlier changes. The receiver
    /// de-duplicates them by identity, so it ends with every field of the record, not only
    /// those written since. One indexed query per page, then one per record entering the
    /// scope (`ts_changes_record`); nothing per ordinary change. The root (every record)
    /// never needs one.
    private static func routeEntrySnapshots(_ db: Database, after cursor: Int64, through last: Int64, scope: Scope) throws -> Set<Int64> {
        guard let nodes = scope.nodes, !nodes.isEmpty else { return [] }
        var args: [any DatabaseValueConvertible] = nodes.map(\.rawValue)
        args += [cursor, last]
        let entries = try Row.fetchAll(db, sql: """
            SELECT DISTINCT seq, tbl, record_id, route_before FROM ts_route_entries
            WHERE node IN (\(databaseQuestionMarks(count: nodes.count))) AND seq > ? AND seq <= ?
            """, arguments: StatementArguments(args))
        var seqs: Set<Int64> = []
        for entry in entries where !scope.contains(route: parseRoute(entry[3])) {
            seqs.formUnion(try Int64.fetchAll(db.cachedStatement(sql: "SELECT seq FROM ts_changes WHERE tbl = ? AND record_id = ? AND seq < ?"),
                                              arguments: [entry[1] as String, entry[2] as String, entry[0] as Int64]))
        }
        return seqs
    }

    private static func feedCandidates(_ db: Database, after cursor: Int64, scope: Scope, limit: Int) throws
        -> (deliver: [Int64], next: Int64, more: Bool, head: Int64) {
        let head = try Int64.fetchOne(db, sql: "SELECT MAX(seq) FROM ts_changes") ?? 0
        let candidates: [Int64]
        switch scope.nodes {
        case nil:
            candidates = try Int64.fetchAll(db, sql: "SELECT seq FROM ts_changes WHERE seq > ? ORDER BY seq LIMIT ?",
                                            arguments: [cursor, limit])
        case let nodes? where nodes.count == 1:
            // One node (a dealer): walk its route index directly.
            candidates = try Int64.fetchAll(db, sql: "SELECT seq FROM ts_change_routes WHERE node = ? AND seq > ? ORDER BY seq LIMIT ?",
                                            arguments: [nodes.first!.rawValue, cursor, limit])
        case let nodes?:
            // A subtree: walk the log in order, testing membership by index.
            var args: [any DatabaseValueConvertible] = [cursor]
            args += nodes.map(\.rawValue)
            args.append(limit)
            candidates = try Int64.fetchAll(db, sql: """
                SELECT seq FROM ts_changes c WHERE seq > ?
                  AND EXISTS (SELECT 1 FROM ts_change_routes r WHERE r.seq = c.seq AND r.node IN (\(databaseQuestionMarks(count: nodes.count))))
                ORDER BY seq LIMIT ?
                """, arguments: StatementArguments(args))
        }
        let more = candidates.count == limit
        return (candidates, more ? candidates.last! : max(cursor, head), more, head)
    }

    /// The `FROM … WHERE … ORDER BY` of reading the candidate rows, in chunks of bound
    /// parameters, without the changes received from `excluding`.
    private static func forEachChunk(of candidates: [Int64], excluding: NodeID?,
                                     _ body: (String, StatementArguments) throws -> Void) throws {
        let exclusion = excluding == nil ? "" : " AND (received_from IS NULL OR received_from != ?)"
        for start in stride(from: 0, to: candidates.count, by: 500) {
            let chunk = candidates[start..<min(start + 500, candidates.count)]
            var args: [any DatabaseValueConvertible] = Array(chunk)
            if let excluding { args.append(excluding.rawValue) }
            try body("FROM ts_changes WHERE seq IN (\(databaseQuestionMarks(count: chunk.count)))\(exclusion) ORDER BY seq",
                     StatementArguments(args))
        }
    }

    /// How many logged changes each origin node made (what this node holds of each).
    public func changeCountsByOrigin() throws -> [NodeID: Int] {
        try writer.read { db in
            Dictionary(uniqueKeysWithValues: try Row.fetchAll(db, sql: "SELECT origin, COUNT(*) AS n FROM ts_changes GROUP BY origin").map {
                (NodeID(unchecked: $0["origin"]), $0["n"] as Int)
            })
        }
    }

    /// The highest log position (0 for an empty log).
    public func headSeq() throws -> Int64 {
        try writer.read { db in try Int64.fetchOne(db, sql: "SELECT MAX(seq) FROM ts_changes") ?? 0 }
    }

    // MARK: Push retries

    /// Remembers changes the parent refused for a reason that may pass (clock skew, scope,
    /// schema version, size), to re-send after a delay that doubles per attempt (1 s … 1 h).
    public func scheduleRetries(_ rejected: [RejectedChange], nowMillis: UInt64 = WallClock.nowMillis()) throws {
        guard !rejected.isEmpty else { return }
        try writer.write { db in
            for r in rejected where !r.code.isFinal {
                let attempts = (try Int.fetchOne(db, sql: "SELECT attempts FROM ts_push_retries WHERE origin = ? AND origin_seq = ?",
                                                 arguments: [r.origin.rawValue, r.originSeq]) ?? 0) + 1
                let delay = min(UInt64(1_000) << UInt64(min(attempts - 1, 12)), 3_600_000)
                try db.execute(sql: """
                    INSERT INTO ts_push_retries (origin, origin_seq, code, reason, attempts, next_at) VALUES (?, ?, ?, ?, ?, ?)
                    ON CONFLICT (origin, origin_seq) DO UPDATE SET code = excluded.code, reason = excluded.reason,
                        attempts = excluded.attempts, next_at = excluded.next_at
                    """, arguments: [r.origin.rawValue, r.originSeq, r.code.rawValue, r.message, attempts, Int64(nowMillis + delay)])
            }
        }
    }

    /// Refused changes due for another try, oldest first.
    public func dueRetries(nowMillis: UInt64 = WallClock.nowMillis(), limit: Int) throws -> [Change] {
        try writer.read { db in
            try Self.fetchLogged(db, sql: """
                SELECT \(Self.loggedColumns(of: "c")) FROM ts_push_retries p JOIN ts_changes c ON c.origin = p.origin AND c.origin_seq = p.origin_seq
                WHERE p.next_at <= ? ORDER BY c.seq LIMIT ?
                """, arguments: [Int64(nowMillis), limit]).map(\.change)
        }
    }

    /// Forgets retries for changes the parent has now accepted.
    public func clearRetries(_ changes: [Change]) throws {
        try writer.write { db in
            for c in changes {
                try db.execute(sql: "DELETE FROM ts_push_retries WHERE origin = ? AND origin_seq = ?", arguments: [c.origin.rawValue, c.originSeq])
            }
        }
    }

    /// How many refused changes wait for another try.
    public func pendingRetries() throws -> Int {
        try writer.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM ts_push_retries") ?? 0 }
    }

    /// When the next retry is due (ms since the epoch), if any.
    public func nextRetryMillis() throws -> UInt64? {
        try writer.read { db in try Int64.fetchOne(db, sql: "SELECT MIN(next_at) FROM ts_push_retries").map(UInt64.init) }
    }

    // MARK: Cursors

    public func cursor(_ name: String) throws -> Int64 {
        try writer.read { db in try Int64.fetchOne(db, sql: "SELECT value FROM ts_cursors WHERE name = ?", arguments: [name]) ?? 0 }
    }

    public func setCursor(_ name: String, _ value: Int64) throws {
        try writer.write { db in try Self.setCursor(db, name, value) }
    }

    // MARK: Reading records

    public func record(table: String, id: String) throws -> StoredRecord? {
        guard let t = schema.table(table) else { throw StoreError.rejected(.init(.unknownTable, "unknown table '\(table)'")) }
        return try writer.read { db in try load(db, table: t, id: id) }
    }

    /// Live records of a table, ordered by id.
    public func liveRecords(table: String, limit: Int = Int.max) throws -> [(id: String, values: [String: FieldValue])] {
        guard let t = schema.table(table) else { throw StoreError.rejected(.init(.unknownTable, "unknown table '\(table)'")) }
        return try writer.read { db in
            try Row.fetchAll(db, sql: "SELECT \(tableSQL[t.name]!.columns) FROM \(t.name.quotedDatabaseIdentifier) WHERE \(DomainTables.heldByStore) ORDER BY id LIMIT ?",
                             arguments: [min(limit, Int(Int32.max))])
                .map { row in (row[0] as String, Self.values(of: row, table: t).filter { !$0.value.isNull }) }
        }
    }

    /// Kept conflicts, oldest first; all of them, or those of one record.
    public func conflicts(table: String? = nil, recordID: String? = nil, limit: Int = 1000) throws -> [ConflictRecord] {
        try writer.read { db in
            let filter = table == nil ? "" : "WHERE tbl = ? AND record_id = ?"
            let args: StatementArguments = table == nil ? [limit] : [table, recordID ?? "", limit]
            return try Row.fetchAll(db, sql: "SELECT * FROM ts_conflicts \(filter) ORDER BY id LIMIT ?", arguments: args).map { row in
                let decoder = JSONDecoder()
                func value(_ s: String) -> FieldValue { (try? decoder.decode(FieldValue.self, from: Data(s.utf8))) ?? .null }
                return ConflictRecord(
                    id: row["id"], table: row["tbl"], recordID: row["record_id"],
                    conflict: FieldConflict(field: row["field"],
                                            winner: value(row["winner_value"]), winnerVersion: FieldVersion(parsing: row["winner_version"])!,
                                            loser: value(row["loser_value"]), loserVersion: FieldVersion(parsing: row["loser_version"])!),
                    detectedAtMillis: UInt64(row["detected_at"] as Int64))
            }
        }
    }

    public func quarantined(limit: Int = 1000) throws -> [QuarantinedChange] {
        try writer.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM ts_quarantine ORDER BY id LIMIT ?", arguments: [limit]).map { row in
                QuarantinedChange(id: row["id"], origin: NodeID(unchecked: row["origin"]), originSeq: row["origin_seq"],
                                  receivedFrom: NodeID(unchecked: row["received_from"]),
                                  receivedAtMillis: UInt64(row["received_at"] as Int64), code: row["code"],
                                  reason: row["reason"], change: row["change"])
            }
        }
    }

    public func counts() throws -> StoreCounts {
        try writer.read { db in
            var records: [String: Int] = [:]
            for t in schema.tables {
                records[t.name] = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM \(t.name.quotedDatabaseIdentifier)") ?? 0
            }
            return StoreCounts(records: records,
                               changes: try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM ts_changes") ?? 0,
                               conflicts: try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM ts_conflicts") ?? 0,
                               quarantined: try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM ts_quarantine") ?? 0)
        }
    }

    /// SHA-256 over the live content of every table (ids and non-null values, canonical
    /// JSON, ordered), limited to records routed into `scope`. Two replicas holding the
    /// same records in a scope have the same digest.
    public func digest(scope: Scope = .everything) throws -> String {
        try writer.read { db in
            var hasher = SHA256()
            for t in schema.tables.sorted(by: { $0.name < $1.name }) {
                let sql = tableSQL[t.name]!
                let rows = try Row.fetchCursor(db, sql: "SELECT \(sql.columns) FROM \(t.name.quotedDatabaseIdentifier) WHERE \(DomainTables.heldByStore) ORDER BY id")
                while let row = try rows.next() {
                    if scope.nodes != nil, !scope.contains(route: Self.parseRoute(row[sql.routeIndex])) { continue }
                    let values = Self.values(of: row, table: t).filter { !$0.value.isNull }
                    hasher.update(data: Data("\(t.name)\t\(row[0] as String)\t\(CanonicalJSON.object(values))\n".utf8))
                }
            }
            return hasher.finalize().hexString
        }
    }

    // MARK: Internals

    /// The statements every applied change runs, looked up once per transaction (looking
    /// them up by SQL text hashes that text every time).
    struct LogStatements {
        let db: Database
        /// By a short key: "#" and the statement's role, or a domain table's name (which
        /// never starts with "#") for its upsert.
        private var cache: [String: Statement] = [:]
        /// The KPI counting of the transaction, once loaded (`.some(nil)`: none adopted).
        var kpi: KPICounting??

        init(_ db: Database) { self.db = db }

        mutating func statement(_ key: String, _ sql: @autoclosure () -> String) throws -> Statement {
            if let s = cache[key] { return s }
            let s = try db.cachedStatement(sql: sql())
            cache[key] = s
            return s
        }
    }

    /// Applies a valid change to its record and logs it. The caller runs the transaction.
    private func apply(_ db: Database, _ statements: inout LogStatements, _ change: Change, log: EncodedLogEntry,
                       table: TableSchema, stored: StoredRecord?, merged: Merged, row: EncodedRecord? = nil,
                       source: ChangeSource, from sender: NodeID?, nowMillis: UInt64) throws -> ApplyOutcome {
        let (outcome, route) = (merged.outcome, merged.route)
        if outcome.changedAnything || stored == nil {
            // Encoded here unless prepared: a change that alters nothing writes no row.
            try save(db, &statements, table: table, id: change.recordID,
                     row: row ?? EncodedRecord(merged.state, route: route, table: table), replacing: stored)
            try countKPIs(db, &statements, table: table, id: change.recordID, before: stored, after: merged.state)
        }
        for c in outcome.conflicts {
            try db.cachedStatement(sql: """
                INSERT OR IGNORE INTO ts_conflicts (tbl, record_id, field, winner_value, winner_version, loser_value, loser_version, detected_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """).execute(arguments: [table.name, change.recordID, c.field, c.winner.canonical, c.winnerVersion.description,
                                         c.loser.canonical, c.loserVersion.description, Int64(nowMillis)])
        }
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

    private func quarantine(_ db: Database, _ change: Change, _ rejection: ChangeRejection, from sender: NodeID, nowMillis: UInt64) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json = (try? String(decoding: encoder.encode(change), as: UTF8.self)) ?? "{}"
        // A change refused for clock skew again keeps its first refusal time: the origin
        // re-stamps it to that time, so writes accepted since win over it.
        try db.execute(sql: """
            INSERT INTO ts_quarantine (origin, origin_seq, received_from, received_at, code, reason, change)
            VALUES (?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (origin, origin_seq) DO UPDATE SET received_from = excluded.received_from,
                received_at = CASE WHEN code = '\(ChangeRejection.Code.clockSkew.rawValue)' AND excluded.code = '\(ChangeRejection.Code.clockSkew.rawValue)'
                                   THEN MIN(received_at, excluded.received_at)
                                   ELSE excluded.received_at END,
                code = excluded.code, reason = excluded.reason, change = excluded.change
            """, arguments: [change.origin.rawValue, change.originSeq, sender.rawValue, Int64(nowMillis),
                             rejection.code.rawValue, rejection.message, json])
    }

    /// A live record is routed by its route fields; a deleted one keeps its last route, so
    /// the delete (and anything after it) reaches the nodes that held it.
    static func route(of state: RecordState, table: TableSchema, previous: Set<NodeID>?) -> Set<NodeID> {
        if state.isLive {
            let route = table.route(of: state.liveValues)
            return route.isEmpty ? previous ?? [] : route
        }
        return previous ?? []
    }

    /// A record's stored state: from its domain row when live, else from its tombstone.
    func load(_ db: Database, table: TableSchema, id: String) throws -> StoredRecord? {
        let versionsText: String, tombstoneText: String?, routeText: String?
        var values: [String: FieldValue] = [:]
        let sql = tableSQL[table.name]!
        if let row = try Row.fetchOne(db.cachedStatement(sql: sql.select), arguments: [id]) {
            // A row without versions was written around the store (plain SQL): the engine
            // holds no state for it, and the next change to the record replaces it.
            guard let text: String = row[sql.versionsIndex] else { return nil }
            values = Self.values(of: row, table: table)
            (versionsText, tombstoneText, routeText) = (text, row[sql.tombstoneIndex], row[sql.routeIndex])
        } else if let dead = try Row.fetchOne(db.cachedStatement(sql: "SELECT versions, tombstone, route FROM ts_tombstones WHERE tbl = ? AND id = ?"),
                                              arguments: [table.name, id]) {
            (versionsText, tombstoneText, routeText) = (dead[0], dead[1], dead[2])
        } else {
            return nil
        }
        guard let versions = CanonicalJSON.parseStoredVersions(versionsText) else {
            throw StoreError.invalidArgument("corrupt field versions for \(table.name)/\(id)")
        }
        for field in versions.keys where values[field] == nil { values[field] = .null }
        return StoredRecord(table: table.name, id: id,
                            state: RecordState(values: values.filter { versions[$0.key] != nil }, versions: versions,
                                               tombstone: tombstoneText.flatMap(FieldVersion.init(parsing:))),
                            route: Self.parseRoute(routeText))
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
            switch type {
            case .bool: return .bool(i != 0)
            case .double: return .double(Double(i))
            case .int: return .int(i)
            default: return .string(String(i))
            }
        case .double(let d):
            if case .int = type { return .int(Int64(d)) }
            return .double(d)
        case .string(let s):
            return .string(s)
        case .blob(let data):
            return .string(String(decoding: data, as: UTF8.self))
        }
    }

    static func parseRoute(_ s: String?) -> Set<NodeID> {
        guard let s, !s.isEmpty else { return [] }
        return Set(s.split(separator: ",").map { NodeID(unchecked: String($0)) })
    }

    /// The change-log columns ``fetchLogged(_:sql:arguments:)`` reads, in the order it
    /// reads them (by position: looking a column up by name lowercases the name each time,
    /// which was 3.5 % of a bootstrap).
    static let loggedColumns = loggedColumns(of: nil)

    static func loggedColumns(of alias: String?) -> String {
        ["seq", "origin", "origin_seq", "hlc", "tbl", "record_id", "op", "fields", "prior", "source", "received_from", "received_at", "trail"]
            .map { column in alias.map { "\($0).\(column)" } ?? column }.joined(separator: ", ")
    }

    /// Log entries selected as ``loggedColumns``.
    static func fetchLogged(_ db: Database, sql: String, arguments: StatementArguments) throws -> [LoggedChange] {
        var entries: [LoggedChange] = []
        let rows = try Row.fetchCursor(db, sql: sql, arguments: arguments)
        while let row = try rows.next() {
            let seq: Int64 = row[0]
            guard let fields = CanonicalJSON.parseFields(row[7]) else {
                throw StoreError.invalidArgument("corrupt fields in change log entry \(seq)")
            }
            let prior = (row[8] as String?).flatMap(CanonicalJSON.parseVersions) ?? [:]
            let trail = try (row[12] as String?).map { text in
                try WireDecoding.trail(text) ?? JSONDecoder().decode([Hop].self, from: Data(text.utf8))
            } ?? []
            let change = Change(origin: NodeID(unchecked: row[1]), originSeq: row[2],
                                hlc: HLCTimestamp(rawValue: UInt64(bitPattern: row[3] as Int64)),
                                table: row[4], recordID: row[5],
                                op: Change.Operation(rawValue: row[6]) ?? .upsert, fields: fields, prior: prior, trail: trail)
            entries.append(LoggedChange(seq: seq, change: change, source: ChangeSource(rawValue: row[9]) ?? .local,
                                        receivedFrom: (row[10] as String?).map(NodeID.init(unchecked:)),
                                        receivedAtMillis: UInt64(row[11] as Int64)))
        }
        return entries
    }

    /// True when this change was applied here already, or refused for a reason that lies
    /// in the change itself (schema errors): those answers never change. A change refused
    /// for its context (out of scope, clock skew) is judged again on every delivery, so a
    /// later valid delivery (through a new parent, after a clock fix) is not lost.
    ///
    /// `skewFenced`: refused for clock skew at `refusedAtMillis` when its origin sent it.
    /// It is new, but accepted only once re-stamped to no later than that time: with its
    /// old stamp it would win over every write accepted since.
    enum Known { case new, duplicate, reused, skewFenced(refusedAtMillis: UInt64) }

    static func identity(_ db: Database) throws -> NodeIdentity? {
        let rows = try Row.fetchAll(db, sql: "SELECT key, value FROM ts_meta WHERE key IN ('tenant', 'node', 'parent')")
        let dict = Dictionary(uniqueKeysWithValues: rows.map { ($0["key"] as String, $0["value"] as String) })
        guard let tenant = dict["tenant"], let node = dict["node"] else { return nil }
        return NodeIdentity(tenant: TenantID(stringLiteral: tenant), node: NodeID(unchecked: node),
                            parent: dict["parent"].map(NodeID.init(unchecked:)))
    }

    static func encodeTrail(_ trail: [Hop]) -> String? {
        guard !trail.isEmpty else { return nil }
        // The wire's form exactly (`WireEncoding`): a feed page copies it as it is.
        return "[" + trail.map { "{\"node\":" + FieldValue.quote($0.node.rawValue) + ",\"at\":\($0.atMillis)}" }.joined(separator: ",") + "]"
    }

    /// Sequence numbers at or below this were used by an earlier store of this node.
    static func seqFloor(_ db: Database) throws -> Int64 {
        Int64(try String.fetchOne(db, sql: "SELECT value FROM ts_meta WHERE key = 'seq_floor'") ?? "0") ?? 0
    }

    static func lastHLC(_ db: Database) throws -> HLCTimestamp {
        let s = try String.fetchOne(db, sql: "SELECT value FROM ts_meta WHERE key = 'hlc'")
        return HLCTimestamp(rawValue: s.flatMap { UInt64($0) } ?? 0)
    }

    static func setMeta(_ db: Database, _ key: String, _ value: String) throws {
        try db.execute(sql: "INSERT INTO ts_meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                       arguments: [key, value])
    }

    static func setCursor(_ db: Database, _ name: String, _ value: Int64) throws {
        try db.execute(sql: "INSERT INTO ts_cursors (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                       arguments: [name, value])
    }
}

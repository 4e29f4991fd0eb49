import Foundation
import Synchronization
import GRDB
import TiersyncCore

// The type itself: its stored properties, opening a store (migrations, domain tables, the
// write-ahead log's checkpointing) and who it belongs to (identity and enrollment). Each
// other concern is an extension file of its own, named by topic: `NodeStore+Meta` (the
// `ts_meta` settings), `+LocalWrites` (commit), `+Incoming` (received batches), `+Records`
// (merging a change into its record and logging it), `+Feed` (reading the log: upward
// and the feed), `+Retries`, `+Cursors`, `+Quarantine`, `+Reading` (records, conflicts,
// counts, digest), `+Queries`, `+KPI`, `+ClockSkew`, and `GovernanceLedger.swift`.

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
    /// The highest own sequence number last seen in ``adoptOwnSequence(heldElsewhere:)``:
    /// a report at or below it needs no write transaction.
    private let ownSequenceSeen = Mutex<Int64?>(nil)
    /// What every local write passes through (``LocalWritePolicy``); installed by whoever
    /// opens the store for a node's local writes (the agent, the CLI).
    let policy = Mutex<(any LocalWritePolicy)?>(nil)
    /// The KPI counting last loaded, by its basis (`NodeStore+KPI.swift`).
    let kpiCountings = Mutex<(basis: String, counting: KPICounting)?>(nil)
    /// Set by a transaction that erased something or refused a change of erased data: the
    /// files are cleaned and the acknowledgement written after it commits
    /// (``finishErasures(wallMillis:)``).
    let erasureWork = Mutex<Bool>(false)
    /// Whether this process has begun a log history of this store (NodeStore+LogHistory).
    let logHistory = Mutex<LogHistoryProgress>(.unchecked)
    let logHistoryStandings = LogHistoryStandings()
    /// How far each child has pulled, noted by the feed and written at the next compaction
    /// (`NodeStore+Retention.swift`).
    let pendingAcks = Mutex<[NodeID: Int64]>([:])
    /// The queries of ``LocalWriteContext/liveValues(table:id:fields:)``, by table and field
    /// list, built once per store.
    let liveValuesQueries = Mutex<[LiveValuesKey: (sql: String, known: [FieldSchema])]>([:])
    /// Whether `ts_upstream_refusals` may hold a notice (NodeStore+UpstreamRefusals): false,
    /// as at every hub and most nodes, a pull answers without reading it.
    let hasUpstreamRefusals = Atomic<Bool>(false)

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
            // An upsert, not `INSERT OR REPLACE`: the row's folded identities (written by
            // compaction, NodeStore+FoldedState) stay when the record is written.
            upsert = "INSERT INTO \(name) (id, \(columns.joined(separator: ", "))) VALUES (?\(String(repeating: ", ?", count: columns.count)))"
                + " ON CONFLICT(id) DO UPDATE SET " + columns.map { "\($0) = excluded.\($0)" }.joined(separator: ", ")
            delete = "DELETE FROM \(name) WHERE id = ?"
            self.columns = (["id"] + columns).joined(separator: ", ")
            select = "SELECT \(self.columns) FROM \(name) WHERE id = ?"
            (versionsIndex, tombstoneIndex, routeIndex) = (table.fields.count + 1, table.fields.count + 2, table.fields.count + 3)
        }
    }

    /// Opens (creating if needed) the store at `path`; `":memory:"` gives a private
    /// in-memory store for unit tests. `checkpointing` says who copies the write-ahead log
    /// back into the database file (``WALCheckpointing``).
    ///
    /// `busyAttempts`: how many waits of 15 s opening may spend on a file another process
    /// keeps busy (a CLI command beside the node's agent: ``busyAttemptsForCommands``). One
    /// by default: a hub opens a tenant's file under that tenant's lock, where minutes of
    /// waiting would hold every request for the tenant.
    public init(path: String, schema: Schema = DomainSchema.schema, clock: HybridLogicalClock = HybridLogicalClock(),
                checkpointing: WALCheckpointing = .byWriter, busyAttempts: Int = 1) throws {
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
                writer = try Self.opening(path, busyAttempts: busyAttempts) { try StoreConfiguration.openPool(path: path) }
                (checkpointer, walProgress) = (nil, nil)
            case .byOwner:
                let progress = WALProgress(backstopFrames: WALCheckpointing.writerBackstopPages)
                writer = try Self.opening(path, busyAttempts: busyAttempts) { try StoreConfiguration.openPool(path: path, walProgress: progress) }
                checkpointer = try Self.opening(path, busyAttempts: busyAttempts) { try DatabaseQueue(path: path, configuration: StoreConfiguration.make()) }
                walProgress = progress
            }
        }
        try Self.opening(path, busyAttempts: busyAttempts) { try prepareFile() }
    }

    /// What a command line passes as `busyAttempts`: up to a minute for a node's agent
    /// writing beside it (its many short writes in a row can keep one wait from ever
    /// getting the lock).
    public static let busyAttemptsForCommands = 4

    /// Prepares the file's schema: free pages given back on a new file, migrations, tables.
    private func prepareFile() throws {
        if path != ":memory:" {
            // A new file gives the pages compaction frees back to the file system
            // (``releaseFreePages()``); SQLite allows the mode to be chosen only before the
            // first table, or by rewriting the file. An older store keeps its free pages for
            // later writes.
            try writer.writeWithoutTransaction { db in
                if try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM sqlite_master") == 0, try Int.fetchOne(db, sql: "PRAGMA auto_vacuum") == 0 {
                    try db.execute(sql: "PRAGMA auto_vacuum = INCREMENTAL")
                    try db.execute(sql: "VACUUM")
                }
            }
        }
        try NodeStoreMigrations.migrator.migrate(writer)
        try writer.write { db in
            try DomainTables.ensure(schema, in: db)
            try KPIStorage.ensure(db)
            if try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM ts_upstream_refusals)") == true {
                hasUpstreamRefusals.store(true, ordering: .relaxed)
            }
        }
    }

    /// Whether the SQLite file at `path` holds a node's store (its `ts_meta` table), read
    /// without changing it: opening a ``NodeStore`` on another SQLite file (a hub's catalog, a
    /// backup of one) would add a node store's tables to it.
    public static func holdsNodeStore(at path: String) throws -> Bool {
        try opening(path) {
            var configuration = Configuration()
            configuration.readonly = true
            return try DatabaseQueue(path: path, configuration: configuration).read { db in
                try db.tableExists("ts_meta")
            }
        }
    }

    /// Runs `body`, which opens or prepares the file at `path`, turning SQLite's answer for a
    /// file that is no database, or cannot be opened, into ``StoreError/unusable(path:reason:)``
    /// (its code alone, "SQLite error 26", told an operator nothing about the path they gave).
    ///
    /// Opening takes the write lock (a pool makes sure its write-ahead log is not empty; the
    /// schema check writes, even with nothing to migrate): a file another process keeps busy
    /// past one wait (the node's agent beside a CLI command, its many short writes in a
    /// row) is waited for again, a few times, before that is reported.
    private static func opening<T>(_ path: String, busyAttempts: Int = 1, _ body: () throws -> T) throws -> T {
        var busy = 0
        while true {
            do {
                return try openingOnce(path, body)
            } catch where isBusy(error) {
                busy += 1
                guard busy < max(1, busyAttempts) else {
                    guard busyAttempts > 1 else { throw error }
                    throw StoreError.unusable(path: path, reason: "another process kept its write lock through \(busy) waits of 15 s "
                                              + "(a node's agent under heavy load?); try again, or stop that process first")
                }
                Thread.sleep(forTimeInterval: 0.2 * Double(busy))
            }
        }
    }

    private static func openingOnce<T>(_ path: String, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as DatabaseError {
            // SQLite answers a directory as "cannot open" or, read-only, as an I/O error.
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
                throw StoreError.unusable(path: path, reason: "it is a directory")
            }
            switch error.resultCode {
            case .SQLITE_NOTADB:
                throw StoreError.unusable(path: path, reason: "the file is not an SQLite database")
            case .SQLITE_CANTOPEN:
                throw StoreError.unusable(path: path, reason: "SQLite cannot open it (its directory missing, or no permission)")
            case .SQLITE_READONLY, .SQLITE_PERM, .SQLITE_AUTH:
                throw StoreError.unusable(path: path, reason: "it is read-only to this user")
            case .SQLITE_CORRUPT:
                throw StoreError.unusable(path: path, reason: "SQLite reports it corrupt (restore it from a backup: docs/OPERATIONS.md)")
            default:
                throw error
            }
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
        let seen = walProgress.commits.load(ordering: .relaxed)
        let (log, copied) = try await checkpointer.writeWithoutTransaction { db in try db.checkpoint(.passive) }
        walProgress.copiedFrames.store(copied, ordering: .relaxed)
        // Commits made while it ran stay counted (their frames may not have been copied).
        if copied >= log { walProgress.commits.subtract(seen, ordering: .relaxed) }
        return (log, copied)
    }

    /// Whether `error` (from ``checkpoint()``) only means another connection is checkpointing
    /// the same file (the writer at its backstop, a CLI's writer): nothing is lost, the next
    /// call copies what is left. Lets callers tell it apart without knowing the engine's errors.
    public static func isCheckpointBusy(_ error: any Error) -> Bool {
        (error as? DatabaseError)?.resultCode == .SQLITE_BUSY
    }

    /// Whether `error` means the file was busy: another process (a node's agent beside a CLI
    /// writing to the same store) held its write lock for longer than the store waits. The
    /// transaction was rolled back whole, so the same write may be tried again.
    public static func isBusy(_ error: any Error) -> Bool {
        guard let error = error as? DatabaseError else { return false }
        return error.resultCode == .SQLITE_BUSY || error.resultCode == .SQLITE_LOCKED
    }

    /// Pages this process's writer committed to the log since the last ``checkpoint()``
    /// (an atomic read, no SQLite call); `nil` for a store its writer checkpoints.
    public var uncheckpointedPages: Int? { walProgress?.pending }

    // MARK: Identity and enrollment

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
        try Self.setMeta(db, .tenant, identity.tenant.rawValue)
        try Self.setMeta(db, .node, identity.node.rawValue)
        if let parent = identity.parent { try Self.setMeta(db, .parent, parent.rawValue) }
    }

    /// Records a completed enrollment in one transaction: identity, credential, parent
    /// URL, and the highest sequence number the parent already holds from this node (a
    /// rebuilt store must not number new changes like old ones).
    /// `restarting`: cursors set back to 0 and meta keys cleared in the same transaction, for a
    /// store enrolling again under another parent URL (its positions are the old parent's;
    /// a crash between a separate reset and the new URL left them paired with it for good).
    public func completeEnrollment(_ identity: NodeIdentity, credential: String, parentURL: String, highestKnownSeq: Int64,
                                   restarting: (cursors: [String], meta: [String])? = nil) throws {
        // A floor outside the sequence range would number every later change out of range
        // (refused for good) or overflow the next number: the parent's answer is wrong.
        guard highestKnownSeq == 0 || Change.sequenceRange.contains(highestKnownSeq) else {
            throw StoreError.invalidArgument("the parent reports sequence \(highestKnownSeq) as this node's highest, outside \(Change.sequenceRange)")
        }
        try writer.write { db in
            try writeIdentity(db, identity)
            try Self.setMeta(db, .credential, credential)
            try Self.setMeta(db, .parentURL, parentURL)
            try Self.setMeta(db, .seqFloor, String(max(highestKnownSeq, try Self.seqFloor(db))))
            if let restarting {
                for cursor in restarting.cursors { try Self.setCursor(db, cursor, 0) }
                for key in restarting.meta { try db.execute(sql: "DELETE FROM ts_meta WHERE key = ?", arguments: [key]) }
            }
        }
    }

    /// Adopts `held`, the highest of this node's own sequence numbers its parent holds, when
    /// it is above every number this store has used: the store is older than what it sent
    /// (restored from a backup), and numbering its next change like one the parent holds
    /// would have it refused (`identity_reused`), or taken for a duplicate and dropped.
    /// Returns the store's highest before, nil when nothing changed. (A store whose
    /// acknowledgement was lost holds what it sent, so it is never taken for restored.)
    /// In the same transaction, the pull cursor `resettingPull` goes back to 0 and the meta
    /// `bootstrappedKey` is cleared, so the node pulls its own changes back: a crash between
    /// them would leave the floor raised and the lost changes never fetched.
    public func adoptOwnSequenceHeldByParent(_ held: Int64, resettingPull cursor: String, bootstrappedKey: String) throws -> Int64? {
        try adoptOwnSequence(heldElsewhere: held) { db in
            try Self.setCursor(db, cursor, 0)
            try db.execute(sql: "DELETE FROM ts_meta WHERE key = ?", arguments: [bootstrappedKey])
        }
    }

    /// ``adoptOwnSequenceHeldByParent(_:resettingPull:bootstrappedKey:)``'s floor, for `held`
    /// reported by any node (a child of a hub restored from a backup), with `also` in the
    /// same transaction. Raised by at most ``HubSequence/maximumAdoptedJump`` above the
    /// highest number the store has used — not above an earlier adoption, so reports
    /// repeated cannot ratchet it up.
    func adoptOwnSequence(heldElsewhere held: Int64, also: (Database) throws -> Void = { _ in }) throws -> Int64? {
        guard Change.sequenceRange.contains(held) else { return nil }
        if let known = ownSequenceSeen.withLock({ $0 }), held <= known { return nil }
        return try writer.write { db in
            guard let me = try Self.identity(db)?.node else { return nil }
            let used = try Self.highestSeqs(db, of: [me])[me] ?? 0
            let floor = try Self.seqFloor(db)
            let adopted = min(held, used + HubSequence.maximumAdoptedJump)
            ownSequenceSeen.withLock { $0 = max($0 ?? 0, max(used, floor, adopted)) }
            guard adopted > max(used, floor) else { return nil }
            try Self.setMeta(db, .seqFloor, String(adopted))
            try also(db)
            return max(used, floor)
        }
    }

    /// The highest sequence number this store holds from `node` (applied or refused),
    /// counting only numbers in ``Change/sequenceRange``: a refused absurd one (Int64.max)
    /// must not become a re-enrolling node's floor.
    public func highestSeq(of node: NodeID) async throws -> Int64 {
        try await writer.readReleasingConnection { db in try Self.highestSeqs(db, of: [node])[node] ?? 0 }
    }

    /// ``highestSeq(of:)`` of each of `nodes`, in `db`'s transaction: two indexed look-ups each.
    static func highestSeqs(_ db: Database, of nodes: Set<NodeID>) throws -> [NodeID: Int64] {
        var out: [NodeID: Int64] = [:]
        for node in nodes {
            let arguments: StatementArguments = [node.rawValue, Change.sequenceRange.lowerBound, Change.sequenceRange.upperBound]
            let applied = try Int64.fetchOne(db.cachedStatement(sql: "SELECT MAX(origin_seq) FROM ts_changes WHERE origin = ? AND origin_seq BETWEEN ? AND ?"),
                                             arguments: arguments) ?? 0
            let refused = try Int64.fetchOne(db.cachedStatement(sql: "SELECT MAX(origin_seq) FROM ts_quarantine WHERE origin = ? AND origin_seq BETWEEN ? AND ?"),
                                             arguments: arguments) ?? 0
            // Refused past the quarantine's quota, and not kept (NodeStoreMigrations v14).
            let unkept = try Int64.fetchOne(db.cachedStatement(sql: "SELECT max_seq FROM ts_quarantine_unkept WHERE origin = ?"),
                                            arguments: [node.rawValue]) ?? 0
            // Refused as erased (final, never logged): held as a quarantined change is. Left
            // out, a dealer whose re-sent history its new country refused as erased took the
            // country for one restored from an older backup at its next start, and re-sent.
            let erased = try Int64.fetchOne(db.cachedStatement(sql: "SELECT MAX(origin_seq) FROM ts_erased_refusals WHERE origin = ? AND origin_seq BETWEEN ? AND ?"),
                                            arguments: arguments) ?? 0
            // A purged entry was held too (`NodeStore+Retention`): the highest sequence never
            // goes back, or a child would take the purge for a restore and re-send.
            out[node] = max(applied, refused, unkept, erased, try purgedThrough(db, origin: node))
        }
        return out
    }

    /// This store's node, for the hop a received change records here. A node id never
    /// changes once set, so it is read once.
    func receiverNode() async throws -> NodeID? {
        if let node = cachedNode.withLock({ $0 }) { return node }
        let node = try await writer.readReleasingConnection { db in try Self.identity(db)?.node }
        if let node { cachedNode.withLock { $0 = node } }
        return node
    }

    /// Read at every commit and push: one cached statement, bound and read directly
    /// (``DirectBinding``). Through GRDB's arguments and rows it was a quarter of a one-write
    /// commit's time.
    static func identity(_ db: Database) throws -> NodeIdentity? {
        var tenant: String?, node: String?, parent: String?
        try DirectBinding.forEachRow(db, db.cachedStatement(sql: "SELECT key, value FROM ts_meta WHERE key IN (?, ?, ?)"), { b in
            b.text(MetaKey.tenant.rawValue)
            b.text(MetaKey.node.rawValue)
            b.text(MetaKey.parent.rawValue)
        }) { row in
            guard let key = row.text(0), let value = row.text(1) else { return }
            switch MetaKey(rawValue: key) {
            case .tenant?: tenant = value
            case .node?: node = value
            case .parent?: parent = value
            default: break
            }
        }
        guard let tenant, let node else { return nil }
        return NodeIdentity(tenant: TenantID(stringLiteral: tenant), node: NodeID(unchecked: node), parent: parent.map(NodeID.init(unchecked:)))
    }
}

import GRDB
import TiersyncCore

/// A rule every local write of a store passes through before it is stamped and logged:
/// the seam where a node's own logic (allocation of new dialogues, from its governance)
/// completes what a person or program writes, whichever program writes it — the CLI, an
/// application, the agent's process. Only local writes (``NodeStore/commit(_:wallMillis:)``)
/// see it; changes received from other nodes are applied as their origin wrote them, so a
/// decision is taken once, where the record is created, and replicates like any field.
///
/// It runs inside the committing transaction, on the store's single writer: it should be
/// quick, and it must not write to the store itself (it returns the write to commit).
public protocol LocalWritePolicy: Sendable {
    /// The write to commit in place of `write` (the same table, id and operation; only
    /// fields may be added or changed). Throwing refuses the whole commit, so a policy that
    /// cannot decide should return `write` unchanged rather than throw.
    func amend(_ write: RecordWrite, in context: LocalWriteContext) throws -> RecordWrite
}

/// What a ``LocalWritePolicy`` sees of the store, read inside the committing transaction
/// (so writes earlier in the same batch are visible: a customer created together with its
/// first contact, say).
public struct LocalWriteContext {
    /// The store's node.
    public let identity: NodeIdentity
    /// The commit's time: what the write is stamped with.
    public let wallMillis: UInt64
    /// The record as held before this write; nil when the store never held it.
    public let stored: StoredRecord?
    /// The store's file, to tell stores apart in a policy's caches.
    public let storePath: String
    /// True for the writes of the node's own rules (``RulesStore``: escalations, their
    /// withdrawal, proactive tasks), which follow the rules in force when they were decided,
    /// not what a person or an application gives.
    public var byRules = false
    let db: Database
    let store: NodeStore
    /// What this commit read already of the store's settings and governance.
    let reads: CommitReads

    /// True when the write creates the record here (never held, or deleted before).
    public var createsRecord: Bool { stored?.state.isLive != true }

    /// Another record as held now (live or deleted), or nil.
    public func record(table: String, id: String) throws -> StoredRecord? {
        guard let t = store.schema.table(table) else { return nil }
        return try store.load(db, table: t, id: id)
    }

    /// Some fields of another record, if the store holds it live; nil otherwise (never
    /// held, deleted, or an unknown table). One indexed read of those columns only, through
    /// a cached statement: what a policy testing a customer's flags on every write needs,
    /// without decoding the record's versions as ``record(table:id:)`` does. Fields the
    /// table lacks are left out.
    public func liveValues(table: String, id: String, fields: [String]) throws -> [String: FieldValue]? {
        guard let t = store.schema.table(table) else { return nil }
        // The query's text is built once per store and field list, not once per commit: a
        // one-write commit paid for building it (and for a lock-free lookup of it per commit).
        let key = LiveValuesKey(table: table, fields: fields)
        let (sql, known): (String, [FieldSchema])
        if let cached = reads.liveValues, cached.key == key {
            (sql, known) = (cached.sql, cached.known)
        } else {
            (sql, known) = store.liveValuesQueries.withLock { queries in
                if let cached = queries[key] { return cached }
                let known = fields.compactMap { name in t.field(name) }
                let columns = known.map(\.name.quotedDatabaseIdentifier) + [DomainTables.versionsColumn]
                let built = (sql: "SELECT \(columns.joined(separator: ", ")) FROM \(t.name.quotedDatabaseIdentifier) WHERE id = ?", known: known)
                queries[key] = built
                return built
            }
            reads.liveValues = (key, sql, known)
        }
        // Read straight from SQLite's row (no GRDB row, whose column-name dictionary is
        // built per read).
        let found = try DirectBinding.row(db, db.cachedStatement(sql: sql), { $0.text(id) }) { row -> [String: FieldValue]? in
            guard row.text(known.count) != nil else { return nil }
            var held: [String: FieldValue] = [:]
            for (i, field) in known.enumerated() {
                let value = row.field(i, type: field.type)
                if !value.isNull { held[field.name] = value }
            }
            return held
        }
        return found ?? nil
    }

    /// A `ts_meta` setting of the store, read once per commit (a commit changes none before it ends).
    public func meta(_ key: String) throws -> String? {
        if let known = reads.meta[key] { return known }
        let value = try String.fetchOne(db.cachedStatement(sql: "SELECT value FROM ts_meta WHERE key = ?"), arguments: [key])
        reads.meta[key] = .some(value)
        return value
    }

    /// Changes whenever the governance a decision could depend on changes: a document kept,
    /// replaced or dropped, a decision recorded, the release key or the highest rollout seen,
    /// the node's parent (whose overlay it runs).
    /// A policy caches what it derived from governance under this stamp. Read once per
    /// commit: a commit writes domain records and its log, none of what the stamp covers.
    ///
    /// The same read also fetches the node's path from the root (``MetaKey/treePath``),
    /// which every decision asks for next: ``meta(_:)`` then answers it without a statement
    /// of its own (a one-write commit's every statement counts).
    public func governanceStamp() throws -> String {
        if let stamp = reads.stamp { return stamp }
        // One row, moved on by triggers (migration v7-governance-generation).
        let statement = try db.cachedStatement(sql: "SELECT (SELECT n FROM ts_gov_generation WHERE id = 1), (SELECT value FROM ts_meta WHERE key = ?)")
        let (n, path) = try DirectBinding.row(db, statement, { $0.text(MetaKey.treePath.rawValue) }) { row in
            (row.int64(0), row.text(1))
        } ?? (nil, nil)
        let stamp = "g\(n ?? 0)"
        reads.stamp = stamp
        if reads.meta[MetaKey.treePath.rawValue] == nil { reads.meta[MetaKey.treePath.rawValue] = .some(path) }
        return stamp
    }

    /// Every governance document kept here.
    public func governanceDocuments() throws -> [StoredGovernanceDocument] {
        try Row.fetchAll(db, sql: "SELECT kind, key, seq, body FROM ts_gov_documents ORDER BY kind, seq").map {
            StoredGovernanceDocument(kind: $0[0], key: $0[1], seq: $0[2], body: $0[3])
        }
    }

    /// The newest governance decision that applied a release: what the node runs.
    public func appliedGovernance() throws -> GovernanceApplication? {
        try NodeStore.appliedGovernance(db)
    }
}

/// What one commit's policy calls have read of the store's settings and governance: the
/// commit writes none of it, so each is read at most once per commit, not once per write.
final class CommitReads {
    var stamp: String?
    /// By key; `.some(nil)`: read, not set.
    var meta: [String: String?] = [:]
    /// The last query of ``LocalWriteContext/liveValues(table:id:fields:)`` (the store keeps
    /// them all), so a batch's writes do not take the store's lock for it each time.
    var liveValues: (key: LiveValuesKey, sql: String, known: [FieldSchema])?
}

struct LiveValuesKey: Hashable, Sendable {
    var table: String
    var fields: [String]
}

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
    let db: Database
    let store: NodeStore

    /// True when the write creates the record here (never held, or deleted before).
    public var createsRecord: Bool { stored?.state.isLive != true }

    /// Another record as held now (live or deleted), or nil.
    public func record(table: String, id: String) throws -> StoredRecord? {
        guard let t = store.schema.table(table) else { return nil }
        return try store.load(db, table: t, id: id)
    }

    /// A `ts_meta` setting of the store.
    public func meta(_ key: String) throws -> String? {
        try String.fetchOne(db, sql: "SELECT value FROM ts_meta WHERE key = ?", arguments: [key])
    }

    /// Changes whenever the governance a decision could depend on changes: a document kept,
    /// replaced or dropped, a decision recorded, the release key or the highest rollout seen,
    /// the node's parent (whose overlay it runs).
    /// A policy caches what it derived from governance under this stamp.
    public func governanceStamp() throws -> String {
        let row = try Row.fetchOne(db, sql: """
            SELECT (SELECT COUNT(*) || '/' || COALESCE(MAX(stored_at), 0) || '/' || COALESCE(SUM(seq), 0) FROM ts_gov_documents),
                   (SELECT COALESCE(MAX(id), 0) FROM ts_gov_applied),
                   (SELECT GROUP_CONCAT(key || '=' || value, ';') FROM ts_meta WHERE key LIKE 'governance.%' OR key = 'parent')
            """)
        return "\(row?[0] as String? ?? "")|\(row?[1] as Int64? ?? 0)|\(row?[2] as String? ?? "")"
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

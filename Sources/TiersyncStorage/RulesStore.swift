import TiersyncCore

/// What a node's rules runner (escalation, its withdrawals, proactive contacts:
/// `TiersyncAgent.RulesRunner`) reads and writes, on either engine: a dealer's or country's
/// SQLite store, or HQ's tenant store on SQLite or PostgreSQL.
///
/// The runner writes through ``commitRuleWrites(_:)`` as the node itself (a local write on a
/// node, a hub write at HQ). Everything it writes is derived from what it read (ids and
/// values from the dialogue, the rule and its due time), so a run cut short (a process
/// killed between two writes of one step) is completed by the next run, on this node or
/// another, with the same records.
public protocol RulesStore: Sendable {
    /// How the store is named in logs (a file path, a tenant's schema).
    var rulesStoreName: String { get }
    /// The node the store belongs to; nil before it is enrolled.
    func rulesIdentity() async throws -> NodeIdentity?
    /// A setting of the store (`ts_meta` on SQLite, `meta` on PostgreSQL).
    func rulesSetting(_ key: String) async throws -> String?
    /// Every governance document the store keeps, and the newest decision that applied a
    /// release (nil at HQ, which runs what it published).
    func rulesGovernance() async throws -> (documents: [StoredGovernanceDocument], applied: GovernanceApplication?)
    /// Live records of `table` meeting every condition, ordered by id (nulls left out).
    func rulesLiveRecords(table: String, where conditions: [FieldCondition]) async throws -> [(id: String, values: [String: FieldValue])]
    /// A record as held (live or deleted), or nil.
    func rulesRecord(table: String, id: String) async throws -> StoredRecord?
    /// Writes as the store's own node, logged and routed like any of its writes.
    func commitRuleWrites(_ writes: [RecordWrite]) async throws
    /// Creates a record that every node evaluating a rule creates alike (a proactive task),
    /// stamped not now but at `stampedAtMillis`, a time every node computes the same: each
    /// node's creation is then one and the same write, and any edit made since wins over
    /// it — a task closed at its dealer while its country, not knowing, created it again
    /// stays closed (with a stamp of now, the later creation reopened it).
    func createRuleRecord(_ write: RecordWrite, stampedAtMillis: UInt64) async throws
    /// The ids of `table`'s records that changes after log position `seq` touched, and the
    /// newest position: what is looked at again instead of every record.
    func rulesRecordIDs(changedIn table: String, after seq: Int64) async throws -> (ids: Set<String>, head: Int64)
    /// The newest log position.
    func rulesHead() async throws -> Int64
}

/// A store several processes serve at once (HQ on PostgreSQL), whose rules one process runs
/// at a time: the others would only write the same records again.
public protocol RulesLeasing: Sendable {
    /// Runs `body` unless another process holds the lease; nil then.
    func withRulesLease<T: Sendable>(_ body: () async throws -> T) async throws -> T?
}

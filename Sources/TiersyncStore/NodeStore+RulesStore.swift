import TiersyncCore

/// A node's rules runner over its SQLite store (a dealer, a country, HQ on a SQLite hub).
/// Every call runs the store's synchronous API off the cooperative pool
/// (``offCooperativePool(_:)``): a run scans the node's dialogues, and in a hub or country
/// process the cooperative threads also serve every request.
extension NodeStore: RulesStore {
    public var rulesStoreName: String { path }

    public func rulesIdentity() async throws -> NodeIdentity? {
        try await offCooperativePool { try self.identity() }
    }

    public func rulesSetting(_ key: String) async throws -> String? {
        try await offCooperativePool { try self.meta(key) }
    }

    public func rulesGovernance() async throws -> (documents: [StoredGovernanceDocument], applied: GovernanceApplication?) {
        try await offCooperativePool { (try self.governanceDocuments(), try self.appliedGovernance()) }
    }

    public func rulesLiveRecords(table: String, where conditions: [FieldCondition]) async throws -> [(id: String, values: [String: FieldValue])] {
        try await offCooperativePool { try self.liveRecords(table: table, where: conditions, limit: Int.max) }
    }

    public func rulesRecord(table: String, id: String) async throws -> StoredRecord? {
        try await offCooperativePool { try self.record(table: table, id: id) }
    }

    public func commitRuleWrites(_ writes: [RecordWrite]) async throws {
        _ = try await offCooperativePool { try self.commit(writes, stampedAt: nil, byRules: true) }
    }

    public func createRuleRecord(_ write: RecordWrite, stampedAtMillis: UInt64) async throws {
        _ = try await offCooperativePool { try self.commit([write], stampedAt: HLCTimestamp(wallMillis: stampedAtMillis, counter: 0), byRules: true) }
    }

    public func rulesRecordIDs(changedIn table: String, after seq: Int64) async throws -> (ids: Set<String>, head: Int64) {
        try await offCooperativePool { try self.recordIDs(changedIn: table, after: seq) }
    }

    public func rulesHead() async throws -> Int64 {
        try await offCooperativePool { try self.headSeq() }
    }
}

import TiersyncCore

/// A node's rules runner over its SQLite store (a dealer, a country, HQ on a SQLite hub).
extension NodeStore: RulesStore {
    public var rulesStoreName: String { path }

    public func rulesIdentity() async throws -> NodeIdentity? { try identity() }

    public func rulesSetting(_ key: String) async throws -> String? { try meta(key) }

    public func rulesGovernance() async throws -> (documents: [StoredGovernanceDocument], applied: GovernanceApplication?) {
        (try governanceDocuments(), try appliedGovernance())
    }

    public func rulesLiveRecords(table: String, where conditions: [FieldCondition]) async throws -> [(id: String, values: [String: FieldValue])] {
        try liveRecords(table: table, where: conditions, limit: Int.max)
    }

    public func rulesRecord(table: String, id: String) async throws -> StoredRecord? { try record(table: table, id: id) }

    public func commitRuleWrites(_ writes: [RecordWrite]) async throws { try commit(writes) }

    public func rulesRecordIDs(changedIn table: String, after seq: Int64) async throws -> (ids: Set<String>, head: Int64) {
        try recordIDs(changedIn: table, after: seq)
    }

    public func rulesHead() async throws -> Int64 { try headSeq() }
}

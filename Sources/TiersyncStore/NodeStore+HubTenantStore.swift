import Dispatch
import GRDB
import TiersyncCore
import TiersyncKPI

/// The SQLite engine behind the hub's storage seam (``TiersyncStorage/HubTenantStore``).
/// Pushes, the feed and enrollment's resume point use the store's async paths, which run
/// on GRDB's own queues. The rest is the store's synchronous API run on a Dispatch queue
/// (``offCooperativePool(_:)``), so a request handler never blocks a cooperative thread on
/// SQLite.
extension NodeStore: HubTenantStore {
    public func adoptOwnSequence(_ held: Int64, of node: NodeID) async throws {
        guard try await receiverNode() == node else { return }
        _ = try await offCooperativePool { try self.adoptOwnSequence(heldElsewhere: held) }
    }

    // applyIncoming, encodedFeed and highestSeq(of:): the store's own async API.

    public func newestUpstreamRefusal(via child: NodeID) async throws -> Int64? {
        // Answered without a read (or a thread hop) at a store that never kept a notice.
        guard hasUpstreamRefusals.load(ordering: .relaxed) else { return nil }
        return try await offCooperativePool { try self.newestRefusalKept(for: child) }
    }

    public func upstreamRefusals(via child: NodeID, after: Int64, limit: Int) async throws -> UpstreamRefusalsResponse {
        try await offCooperativePool { try self.refusalsKept(for: child, after: after, limit: limit) }
    }

    public func quarantinedChanges(limit: Int) async throws -> [QuarantinedChange] {
        try await offCooperativePool { try self.quarantined(limit: limit) }
    }

    public func quarantinedChanges(afterID: Int64, limit: Int) async throws -> [QuarantinedChange] {
        try await offCooperativePool { try self.quarantined(afterID: afterID, limit: limit) }
    }

    public func discardQuarantined(id: Int64) async throws -> QuarantinedChange? {
        try await offCooperativePool { try self.discardQuarantined(id) }
    }

    public func conflicts(afterID: Int64, limit: Int) async throws -> [(conflict: ConflictRecord, route: Set<NodeID>)] {
        try await offCooperativePool {
            let page = try self.conflicts(afterID: afterID, limit: limit)
            return try page.map { ($0, try self.record(table: $0.table, id: $0.recordID)?.route ?? []) }
        }
    }

    public func trace(recordID: String, table: String?, after: Int64, limit: Int) async throws -> RecordTrace {
        try await offCooperativePool {
            let tables = table.map { [$0] } ?? self.schema.tables.map(\.name)
            guard tables.allSatisfy({ self.schema.table($0) != nil }) else { return RecordTrace(route: [], changes: [], next: nil) }
            let route = try tables.reduce(into: Set<NodeID>()) { route, name in
                route.formUnion(try self.record(table: name, id: recordID)?.route ?? [])
            }
            let changes = try self.lineage(recordID: recordID, table: table, after: after, limit: limit + 1)
            return RecordTrace(route: route, changes: Array(changes.prefix(limit)), next: changes.count > limit ? changes[limit - 1].seq : nil)
        }
    }

    public func writeAsHub(_ writes: [RecordWrite]) async throws -> [Change] {
        try await offCooperativePool {
            let made = try self.commit(writes)
            try self.finishErasures()
            return made
        }
    }

    public func attentionCounts() async throws -> AttentionCounts {
        try await writer.readReleasingConnection { db in
            let usage = try Self.quarantineUsage(db)
            return AttentionCounts(quarantined: try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM ts_quarantine") ?? 0,
                                   conflicts: try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM ts_conflicts") ?? 0,
                                   quarantineBytes: usage.bytes, quarantineUnkept: usage.unkept)
        }
    }

    /// Takes the write lock and lets it go (waiting at most the store's busy timeout).
    public func probeWritable() async throws {
        try await offCooperativePool {
            try self.writer.writeWithoutTransaction { db in try db.inTransaction(.immediate) { .rollback } }
        }
    }

    public func feedHead() async throws -> Int64 {
        try await offCooperativePool { try self.headSeq() }
    }

    public func latestGovernanceDocument(ofKind kind: String) async throws -> StoredGovernanceDocument? {
        try await offCooperativePool { try self.latestGovernanceDocument(kind: kind) }
    }

    public func governanceDocuments(ofKind kind: String, keys: [String]?) async throws -> [StoredGovernanceDocument] {
        try await offCooperativePool {
            if let keys { try self.governanceDocuments(kind: kind, keys: keys) } else { try self.governanceDocuments(kind: kind) }
        }
    }

    public func storeGovernanceDocument(_ document: StoredGovernanceDocument, nowMillis: UInt64) async throws {
        try await offCooperativePool { try self.putGovernanceDocument(document, nowMillis: nowMillis) }
    }

    public func storeNewGovernanceDocument(_ document: StoredGovernanceDocument, nowMillis: UInt64) async throws -> Bool {
        try await offCooperativePool { try self.insertGovernanceDocument(document, nowMillis: nowMillis) }
    }

    public func governanceDocumentsStamp() async throws -> String {
        try await offCooperativePool { try self.governanceStamp() }
    }

    public func liveRecords(inTable table: String) async throws -> [(id: String, values: [String: FieldValue])] {
        try await offCooperativePool { try self.liveRecords(table: table) }
    }

    public func storeIdentity() async throws -> NodeIdentity? {
        try await offCooperativePool { try self.identity() }
    }

    public func setting(_ key: String) async throws -> String? {
        try await offCooperativePool { try self.meta(key) }
    }

    public func adoptKPIs(_ adoption: KPIAdoption?, source: String?) async throws -> Bool {
        try await offCooperativePool { try self.adoptKPIs(adoption, source: source) as Bool }
    }

    public func adoptKPIsOfAppliedGovernance() async throws -> Bool {
        try await offCooperativePool { try self.adoptKPIsOfAppliedGovernance() as Bool }
    }

    public func kpiReport(period: KPIPeriodKind, byNode: Bool, viewer: String?, paths: [String: [String]]) async throws -> KPIResponse {
        try await offCooperativePool { try self.kpiReport(period: period, byNode: byNode, viewer: viewer, paths: paths) as KPIResponse }
    }

    public func erasureLedger() async throws -> [ErasureLedgerEntry] {
        try await offCooperativePool { try self.erasureLedger() as [ErasureLedgerEntry] }
    }

    /// Runs a synchronous store call on a Dispatch worker and resumes the task with its
    /// result: the wait for SQLite (and for a pooled connection) happens off the Swift
    /// cooperative pool, whose few threads serve every request.
    func offCooperativePool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Self.blockingQueue.async { continuation.resume(with: Result { try body() }) }
        }
    }

    static let blockingQueue = DispatchQueue(label: "tiersync.store.blocking", qos: .userInitiated, attributes: .concurrent)
}

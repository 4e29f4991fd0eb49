// Local writes: the write policy every local write passes through (``LocalWritePolicy``)
// and `commit`, which stamps each write with the hybrid clock and the node's next sequence
// number, merges it into its record and logs it, all in one transaction.

import Foundation
import GRDB
import TiersyncCore

extension NodeStore {
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
        try commit(writes, wallMillis: wallMillis, stampedAt: nil)
    }

    /// `stampedAt`: the writes are stamped from it (each the successor of the one before)
    /// instead of the clock's now; the clock still goes on past it
    /// (``RulesStore/createRuleRecord(_:stampedAtMillis:)``).
    func commit(_ writes: [RecordWrite], wallMillis: UInt64 = WallClock.nowMillis(), stampedAt fixed: HLCTimestamp?,
                byRules: Bool = false) throws -> [Change] {
        try writer.write { db in
            guard let me = try Self.identity(db) else { throw StoreError.notEnrolled(path: path) }
            var last = try Self.lastHLC(db)
            let highest = try DirectBinding.row(db, db.cachedStatement(sql: "SELECT MAX(origin_seq) FROM ts_changes WHERE origin = ?"),
                                                { $0.text(me.node.rawValue) }) { $0.int64(0) } ?? nil
            var nextSeq = max(try Self.seqFloor(db), highest ?? 0)
            var made: [Change] = []
            var statements = LogStatements(db)
            var nextFixed = fixed
            let policy = self.writePolicy
            let reads = CommitReads()
            for requested in writes {
                guard let table = schema.table(requested.table) else {
                    throw StoreError.rejected(.init(.unknownTable, "unknown table '\(requested.table)' (known: \(schema.tables.map(\.name).joined(separator: ", ")))"))
                }
                let stored = try load(db, table: table, id: requested.id)
                var write = requested
                if let policy {
                    var context = LocalWriteContext(identity: me, wallMillis: wallMillis, stored: stored, storePath: path, db: db, store: self, reads: reads)
                    context.byRules = byRules
                    write = try policy.amend(requested, in: context)
                    guard write.table == requested.table, write.id == requested.id, write.op == requested.op else {
                        throw StoreError.invalidArgument("the store's write policy changed which record \(requested.table)/\(requested.id) a write is for")
                    }
                }
                var fields = write.fields
                // Another node's report on itself (governance status, KPI values, erasure
                // proof) is that node's to write: the parent refuses it for good, and the
                // writer retried it for ever while `status` showed nothing waiting.
                if let owner = SelfReport.owner(table: write.table, recordID: write.id), owner != me.node.rawValue[...] {
                    throw StoreError.rejected(ChangeRejection(.forbidden,
                        "\(write.table)/\(write.id) is node '\(owner)''s report on itself: only that node writes it, and '\(me.node)' is not it"))
                }
                if let blocked = try erasureBlocking(db, &statements, table: write.table, id: write.id, fields: fields) {
                    throw StoreError.rejected(Self.erasedRejection(table: write.table, id: write.id, erasureID: blocked.erasureID))
                }
                if write.op == .upsert, let refusal = try consentRefusal(db, table: table, id: write.id, stored: stored, fields: fields) {
                    throw StoreError.rejected(refusal)
                }
                if write.op == .upsert, stored?.state.isLive != true, let first = table.routeFields.first, fields[first] == nil {
                    // The first route field names where a record was made or who owns it
                    // (originating node, source node, owning dealer): by default, the writer.
                    fields[first] = .string(me.node.rawValue)
                }
                let stamp: HLCTimestamp
                if let given = nextFixed {
                    stamp = given
                    nextFixed = HybridLogicalClock.successor(of: given)
                    last = max(last, given)
                } else {
                    last = clock.tick(last: last, wallMillis: wallMillis)
                    stamp = last
                }
                nextSeq += 1
                // The versions the writer saw of the fields it writes (none for a new record).
                var prior: [String: FieldVersion] = [:]
                if let versions = stored?.state.versions, !versions.isEmpty {
                    for name in fields.keys { prior[name] = versions[name] }
                }
                let change = Change(origin: me.node, originSeq: nextSeq, hlc: stamp, table: write.table, recordID: write.id,
                                    op: write.op, fields: fields, prior: prior)
                switch schema.validate(change) {
                case .failure(let rejection): throw StoreError.rejected(rejection)
                case .success(let valid):
                    let merged = Self.merge(valid, into: stored, table: table)
                    if let refusal = RecordMerge.erasureSubjectRefusal(of: valid, merged: merged, over: stored) { throw StoreError.rejected(refusal) }
                    // A new record a node at the tree's last level (a dealer, an agent) routes
                    // away from itself is outside its scope: its parent refuses it for good, and
                    // it sat here never synced (helper 100: a vehicle written at de-berlin with
                    // owning_dealer=de-munich). The rules' own records are judged by the rules.
                    if stored == nil, !byRules, !merged.route.isEmpty, !merged.route.contains(me.node), try Self.isLastLevel(db) {
                        let names = merged.route.map(\.rawValue).sorted().joined(separator: ", ")
                        throw StoreError.rejected(ChangeRejection(.forbidden,
                            "\(write.table)/\(write.id) would be routed to \(names) only: '\(me.node)' is at the last level of its tree and writes new records routed to itself (name it in \(table.routeFields.joined(separator: " or "))); its parent would refuse this one as outside its scope"))
                    }
                    _ = try apply(db, &statements, valid, log: EncodedLogEntry(valid, trail: valid.trail), table: table, stored: stored,
                                  merged: merged, source: .local, from: nil, nowMillis: wallMillis)
                    made.append(valid)
                }
            }
            try Self.setMeta(db, .hlc, String(last.rawValue))
            return made
        }
    }
}

extension NodeStore {
    /// Whether this node is at the last level of its tenant's tree (a dealer, an insurer's
    /// agent): its path from the root (learned from its parent) is as long as the levels of
    /// the governance in force. False while either is unknown.
    static func isLastLevel(_ db: Database) throws -> Bool {
        guard let path = try meta(db, .treePath), let effective = try appliedGovernance(db)?.effective,
              let config = try? JSONDecoder().decode(GovernanceLevels.self, from: Data(effective.utf8)) else { return false }
        return path.split(separator: "/").count >= config.governance.levels.count
    }

    /// The one part of an effective config ``isLastLevel(_:)`` reads.
    private struct GovernanceLevels: Decodable {
        struct Governance: Decodable { var levels: [String] }
        var governance: Governance
    }

    /// The fields whose change makes a write an outbound contact to check again.
    private static let contactFields: Set<String> = ["status", "requires_consent", "direction", "purpose", "channel", "customer_id"]

    /// Why a local write of an outbound contact may not be made (``Consent``): its customer,
    /// as held here (with the batch's earlier writes), has not given the consent it needs.
    /// Checked when a contact is created or one of ``contactFields`` changes.
    func consentRefusal(_ db: Database, table: TableSchema, id: String, stored: StoredRecord?, fields: [String: FieldValue]) throws -> ChangeRejection? {
        guard table.name == DomainSchema.tasks.name || table.name == DomainSchema.interactions.name,
              stored?.state.isLive != true || !Self.contactFields.isDisjoint(with: fields.keys) else { return nil }
        // The write's fields over the record as held.
        let held = stored?.state.isLive == true ? stored!.state.liveValues : [:]
        let value = { (name: String) in fields[name] ?? held[name] }
        guard let needed = Consent.requiredField(table: table.name, value: value) else { return nil }
        guard Consent.isGivable(needed) else {
            let channel = value("channel")?.stringValue ?? "no named channel"
            return ChangeRejection(.noConsent, "\(table.name)/\(id) is an outbound contact by \(channel), a channel no customer can consent to be contacted by (\(Consent.Channel.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        guard let customerID = value("customer_id")?.stringValue else {
            return ChangeRejection(.noConsent, "\(table.name)/\(id) is an outbound contact needing \(needed) but names no customer_id")
        }
        let customer = try schema.table(DomainSchema.customers.name).flatMap { try load(db, table: $0, id: customerID) }
        guard !Consent.isGiven(needed, customer: customer?.state.isLive == true ? customer!.state.liveValues : nil) else { return nil }
        return ChangeRejection(.noConsent, "customer \(customerID) has not given \(needed) (as held here): \(table.name)/\(id) is not written")
    }
}

import Crypto
import TiersyncCore

/// A tenant store's engine tables, as both engines keep them (same names, same columns):
/// what moves when a tenant moves from one engine to the other (`admin migrate-tenant`),
/// and what its digest covers. Records are moved apart (``TenantDataExport/exportRecords(offset:limit:)``):
/// SQLite keeps them in domain tables, PostgreSQL in one table.
public enum MigrationTable: String, CaseIterable, Sendable {
    case changes, changeRoutes = "change_routes", routeEntries = "route_entries", conflicts, quarantine
    case governanceDocuments = "gov_documents"
    /// Erasures done at the hub, the records they erased (so later changes stay refused) and
    /// the refusals counted since (docs/PRIVACY.md).
    case erasures, erasedRecords = "erased_records", erasedRefusals = "erased_refusals"
    /// The identities of purged log entries (docs/PRIVACY.md, "Bounded storage"): the highest
    /// per origin, and the exact sequences as ranges, so a redelivery stays a duplicate.
    case purged, purgedRanges = "purged_ranges"

    /// The columns moved, in this order on both engines.
    public var columns: [MigrationColumn] {
        switch self {
        case .changes:
            [.int("seq"), .text("origin"), .int("origin_seq"), .int("hlc"), .text("tbl"), .text("record_id"), .text("op"), .text("fields"),
             .text("prior"), .text("source"), .text("received_from"), .int("received_at"), .text("trail")]
        case .changeRoutes: [.text("node"), .int("seq")]
        case .routeEntries: [.text("node"), .int("seq"), .text("tbl"), .text("record_id"), .text("route_before")]
        case .conflicts:
            [.text("tbl"), .text("record_id"), .text("field"), .text("winner_value"), .text("winner_version"), .text("loser_value"),
             .text("loser_version"), .int("detected_at")]
        case .quarantine: [.text("origin"), .int("origin_seq"), .text("received_from"), .int("received_at"), .text("code"), .text("reason"), .text("change")]
        case .governanceDocuments: [.text("kind"), .text("key"), .int("seq"), .text("body"), .int("stored_at")]
        case .erasures:
            [.text("erasure_id"), .text("subject_table"), .text("subject_id"), .int("erased_at"), .int("records"), .int("log_entries"),
             .text("digest"), .int("acked_refused")]
        case .erasedRecords: [.text("tbl"), .text("id"), .text("erasure_id"), .text("route")]
        case .erasedRefusals: [.text("origin"), .int("origin_seq"), .text("erasure_id"), .int("refused_at")]
        case .purged: [.text("origin"), .int("through_seq")]
        case .purgedRanges: [.text("origin"), .int("lo"), .int("hi")]
        }
    }

    /// The order rows are read in: a unique key, text compared byte by byte on both engines.
    public var orderKey: [String] {
        switch self {
        case .changes: ["seq"]
        case .changeRoutes: ["seq", "node"]
        case .routeEntries: ["seq", "node", "tbl", "record_id"]
        case .conflicts: ["tbl", "record_id", "field", "loser_version"]
        case .quarantine: ["origin", "origin_seq"]
        case .governanceDocuments: ["kind", "key"]
        case .erasures: ["erasure_id"]
        case .erasedRecords: ["tbl", "id"]
        case .erasedRefusals: ["origin", "origin_seq"]
        case .purged: ["origin"]
        case .purgedRanges: ["origin", "lo"]
        }
    }
}

/// A column moved between engines: its name and whether it holds integers or text.
public enum MigrationColumn: Sendable, Hashable {
    case int(String), text(String)

    public var name: String {
        switch self { case .int(let n), .text(let n): n }
    }
}

/// A column's value in a moved row.
public enum MigrationValue: Sendable, Hashable {
    case null, integer(Int64), text(String)
}

/// What a tenant store gives up when its tenant moves to another engine, and what the
/// digest reads on either side. Read with the hub stopped (or the tenant otherwise quiet):
/// pages are taken by offset in key order.
public protocol TenantDataExport: Sendable {
    /// Rows of `table` in ``MigrationTable/orderKey`` order, skipping `offset`.
    func exportRows(_ table: MigrationTable, offset: Int, limit: Int) async throws -> [[MigrationValue]]
    /// Records (live and deleted) with their replication state, by table then id (bytes).
    func exportRecords(offset: Int, limit: Int) async throws -> [StoredRecord]
    /// The settings that move with the tenant (KPI adoption), by key.
    func exportSettings() async throws -> [String: String]
}

/// The settings keys that move with a tenant.
public enum MigratedSetting: String, CaseIterable, Sendable {
    case kpiAdoption = "kpi.adoption"
    case kpiSource = "kpi.source"
    /// The log position a child's cursor must have passed (the newest purged delete).
    case purgeFloor = "purge.floor"
}

/// A digest of everything a tenant store holds that a move must keep: every engine table
/// row in key order, every record's state, the moved settings. Equal digests before and
/// after `migrate-tenant` say nothing was lost, added or altered.
public struct TenantDigest: Sendable, Equatable, CustomStringConvertible {
    /// SHA-256, lower-case hex.
    public let sha256: String
    /// Rows per table (and `records`), for the report.
    public let counts: [String: Int]

    public var description: String {
        let listed = (MigrationTable.allCases.map(\.rawValue) + ["records"]).map { "\($0) \(counts[$0] ?? 0)" }.joined(separator: ", ")
        return "\(sha256) (\(listed))"
    }

    /// Reads everything `source` holds, `pageSize` rows at a time.
    public static func of(_ source: any TenantDataExport, pageSize: Int = 2_000) async throws -> TenantDigest {
        var hasher = SHA256()
        var counts: [String: Int] = [:]
        func feed(_ text: String) {
            var bytes = Array(text.utf8)
            // Length-prefixed, so no two different sequences of fields hash alike.
            withUnsafeBytes(of: UInt64(bytes.count).littleEndian) { hasher.update(bufferPointer: $0) }
            hasher.update(data: bytes)
            bytes.removeAll()
        }
        for table in MigrationTable.allCases {
            feed("table " + table.rawValue)
            var offset = 0
            while true {
                let rows = try await source.exportRows(table, offset: offset, limit: pageSize)
                for row in rows {
                    for value in row {
                        switch value {
                        case .null: feed("n")
                        case .integer(let i): feed("i\(i)")
                        case .text(let t): feed("t" + t)
                        }
                    }
                }
                offset += rows.count
                if rows.count < pageSize { break }
            }
            counts[table.rawValue] = offset
        }
        feed("records")
        var offset = 0
        while true {
            let records = try await source.exportRecords(offset: offset, limit: pageSize)
            for record in records {
                for part in Self.encoded(record) { feed(part) }
            }
            offset += records.count
            if records.count < pageSize { break }
        }
        counts["records"] = offset
        feed("settings")
        let settings = try await source.exportSettings()
        for key in MigratedSetting.allCases.map(\.rawValue) {
            feed(key)
            feed(settings[key] ?? "")
        }
        return TenantDigest(sha256: hasher.finalize().map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined(), counts: counts)
    }

    /// A record as both engines' digests read it: table, id, live values, versions,
    /// tombstone and route, each in its canonical text.
    public static func encoded(_ record: StoredRecord) -> [String] {
        [record.table, record.id, record.state.isLive ? CanonicalJSON.object(record.state.liveValues) : "{}",
         CanonicalJSON.groupedVersions(record.state.versions), record.state.tombstone?.description ?? "",
         RecordMerge.encodeRoute(record.route)]
    }
}

/// One tenant's catalog entries as a catalog stores them (secrets as digests only): what
/// moves with the tenant, so its nodes' credentials keep working on the other engine.
public struct CatalogTenantExport: Sendable, Equatable {
    public struct Tenant: Sendable, Equatable {
        public var id: TenantID, root: NodeID, levels: Int, allowDirectSync: Bool, releaseKey: String?, createdAtMillis: Int64
        public init(id: TenantID, root: NodeID, levels: Int, allowDirectSync: Bool, releaseKey: String?, createdAtMillis: Int64) {
            (self.id, self.root, self.levels, self.allowDirectSync, self.releaseKey, self.createdAtMillis) = (id, root, levels, allowDirectSync, releaseKey, createdAtMillis)
        }
    }

    public struct Node: Sendable, Equatable {
        public var id: NodeID, parent: NodeID?, role: String, createdAtMillis: Int64, lastSeenMillis: Int64?, decommissionedAtMillis: Int64?
        public init(id: NodeID, parent: NodeID?, role: String, createdAtMillis: Int64, lastSeenMillis: Int64?, decommissionedAtMillis: Int64?) {
            (self.id, self.parent, self.role, self.createdAtMillis, self.lastSeenMillis, self.decommissionedAtMillis) = (id, parent, role, createdAtMillis, lastSeenMillis, decommissionedAtMillis)
        }
    }

    public struct Token: Sendable, Equatable {
        public var hash: String, node: NodeID, parent: NodeID?, role: String, expiresAtMillis: Int64, usedAtMillis: Int64?
        public init(hash: String, node: NodeID, parent: NodeID?, role: String, expiresAtMillis: Int64, usedAtMillis: Int64?) {
            (self.hash, self.node, self.parent, self.role, self.expiresAtMillis, self.usedAtMillis) = (hash, node, parent, role, expiresAtMillis, usedAtMillis)
        }
    }

    public struct Credential: Sendable, Equatable {
        public var hash: String, node: NodeID, createdAtMillis: Int64, revokedAtMillis: Int64?
        public init(hash: String, node: NodeID, createdAtMillis: Int64, revokedAtMillis: Int64?) {
            (self.hash, self.node, self.createdAtMillis, self.revokedAtMillis) = (hash, node, createdAtMillis, revokedAtMillis)
        }
    }

    /// An administrator as stored (the password as its PBKDF2 digest).
    public struct AdminUser: Sendable, Equatable {
        public var name: String, roles: String, scope: String, passwordHash: String, createdAtMillis: Int64
        public var disabledAtMillis: Int64?, failedLogins: Int64, lockedUntilMillis: Int64
        public init(name: String, roles: String, scope: String, passwordHash: String, createdAtMillis: Int64, disabledAtMillis: Int64?,
                    failedLogins: Int64, lockedUntilMillis: Int64) {
            (self.name, self.roles, self.scope, self.passwordHash, self.createdAtMillis) = (name, roles, scope, passwordHash, createdAtMillis)
            (self.disabledAtMillis, self.failedLogins, self.lockedUntilMillis) = (disabledAtMillis, failedLogins, lockedUntilMillis)
        }
    }

    /// A session or API token of an administrator (its SHA-256 digest).
    public struct AdminToken: Sendable, Equatable {
        public var hash: String, user: String, kind: String, name: String, createdAtMillis: Int64, expiresAtMillis: Int64, revokedAtMillis: Int64?
        public init(hash: String, user: String, kind: String, name: String, createdAtMillis: Int64, expiresAtMillis: Int64, revokedAtMillis: Int64?) {
            (self.hash, self.user, self.kind, self.name) = (hash, user, kind, name)
            (self.createdAtMillis, self.expiresAtMillis, self.revokedAtMillis) = (createdAtMillis, expiresAtMillis, revokedAtMillis)
        }
    }

    /// One line of the audit log (numbered anew where it lands, in the same order).
    public struct AuditEntry: Sendable, Equatable {
        public var actor: String, action: String, target: String, detail: String, address: String, scope: String, atMillis: Int64
        public init(actor: String, action: String, target: String, detail: String, address: String, scope: String, atMillis: Int64) {
            (self.actor, self.action, self.target, self.detail, self.address, self.scope, self.atMillis) = (actor, action, target, detail, address, scope, atMillis)
        }
    }

    /// A four-eyes release request (numbered anew where it lands, in the same order).
    public struct ReleaseRequest: Sendable, Equatable {
        public var author: String, requestedAtMillis: Int64, notes: String, targets: String?, sourceDigest: String, sources: String
        public var state: String, reviewer: String?, decidedAtMillis: Int64?, reason: String?, version: Int64?
        public init(author: String, requestedAtMillis: Int64, notes: String, targets: String?, sourceDigest: String, sources: String,
                    state: String, reviewer: String?, decidedAtMillis: Int64?, reason: String?, version: Int64?) {
            (self.author, self.requestedAtMillis, self.notes, self.targets, self.sourceDigest, self.sources) = (author, requestedAtMillis, notes, targets, sourceDigest, sources)
            (self.state, self.reviewer, self.decidedAtMillis, self.reason, self.version) = (state, reviewer, decidedAtMillis, reason, version)
        }
    }

    /// The tenant's administration: who may administer it and how, and what they did.
    public struct Administration: Sendable, Equatable {
        /// Sorted by name (bytes).
        public var users: [AdminUser]
        /// Sorted by hash.
        public var tokens: [AdminToken]
        /// In the order written.
        public var audit: [AuditEntry]
        /// The tenant's settings (four-eyes releases), by key.
        public var settings: [String: String]
        /// In the order made.
        public var releaseRequests: [ReleaseRequest]

        public init(users: [AdminUser] = [], tokens: [AdminToken] = [], audit: [AuditEntry] = [], settings: [String: String] = [:],
                    releaseRequests: [ReleaseRequest] = []) {
            (self.users, self.tokens, self.audit, self.settings, self.releaseRequests) = (users, tokens, audit, settings, releaseRequests)
        }
    }

    public var tenant: Tenant
    /// Sorted by id (bytes).
    public var nodes: [Node]
    /// Sorted by hash.
    public var tokens: [Token]
    /// Sorted by hash.
    public var credentials: [Credential]
    public var administration: Administration

    public init(tenant: Tenant, nodes: [Node], tokens: [Token], credentials: [Credential], administration: Administration = .init()) {
        (self.tenant, self.nodes, self.tokens, self.credentials, self.administration) = (tenant, nodes, tokens, credentials, administration)
    }
}

// Four-eyes releases on SQLite: the tenant's setting (`admin_settings`) and the requests
// waiting for a reviewer (`release_requests`).

import Foundation
import GRDB
import TiersyncCore

extension HubCatalog {
    static func createReleaseRequestTables(_ db: Database) throws {
        try db.execute(sql: """
            CREATE TABLE admin_settings (
                tenant TEXT NOT NULL,
                key TEXT NOT NULL,
                value TEXT NOT NULL,
                PRIMARY KEY (tenant, key)
            ) WITHOUT ROWID;
            CREATE TABLE release_requests (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                tenant TEXT NOT NULL,
                author TEXT NOT NULL,
                requested_at INTEGER NOT NULL,
                notes TEXT NOT NULL,
                targets TEXT,                 -- comma-separated; NULL: every node
                source_digest TEXT NOT NULL,
                sources TEXT NOT NULL,        -- JSON [{name, text}]
                state TEXT NOT NULL,          -- pending | approved | rejected
                reviewer TEXT,
                decided_at INTEGER,
                reason TEXT,
                version INTEGER
            );
            CREATE INDEX release_requests_tenant ON release_requests (tenant, id);
            """)
    }

    static let fourEyesKey = "require_release_approval"

    static func releaseRequest(_ row: Row) -> ReleaseRequest {
        let sources = (try? JSONDecoder().decode([ReleaseRequest.Source].self, from: Data((row["sources"] as String).utf8))) ?? []
        return ReleaseRequest(id: row["id"], tenant: TenantID(stringLiteral: row["tenant"]), author: row["author"],
                              requestedAtMillis: UInt64(max(0, row["requested_at"] as Int64)), notes: row["notes"],
                              targets: (row["targets"] as String?).map { $0.split(separator: ",").map { NodeID(unchecked: String($0)) } },
                              sourceDigest: row["source_digest"], sources: sources,
                              state: ReleaseRequest.State(rawValue: row["state"]) ?? .pending, reviewer: row["reviewer"],
                              decidedAtMillis: (row["decided_at"] as Int64?).map { UInt64(max(0, $0)) }, reason: row["reason"], version: row["version"])
    }
}

extension SQLiteCatalog: ReleaseApprovalStore {
    public func requiresReleaseApproval(of tenant: TenantID) async throws -> Bool {
        try await catalog.writer.read { db in
            try String.fetchOne(db, sql: "SELECT value FROM admin_settings WHERE tenant = ? AND key = ?",
                                arguments: [tenant.rawValue, HubCatalog.fourEyesKey]) == "true"
        }
    }

    public func setRequiresReleaseApproval(_ required: Bool, for tenant: TenantID) async throws {
        try await catalog.writer.write { db in
            guard try Bool.fetchOne(db, sql: "SELECT 1 FROM tenants WHERE id = ?", arguments: [tenant.rawValue]) == true else {
                throw StoreError.notFound("tenant '\(tenant)'")
            }
            try db.execute(sql: """
                INSERT INTO admin_settings (tenant, key, value) VALUES (?, ?, ?) ON CONFLICT (tenant, key) DO UPDATE SET value = excluded.value
                """, arguments: [tenant.rawValue, HubCatalog.fourEyesKey, required ? "true" : "false"])
        }
    }

    public func createReleaseRequest(_ request: ReleaseRequest) async throws -> Int64 {
        let sources = String(decoding: try JSONEncoder().encode(request.sources), as: UTF8.self)
        return try await catalog.writer.write { db in
            try db.execute(sql: """
                INSERT INTO release_requests (tenant, author, requested_at, notes, targets, source_digest, sources, state)
                VALUES (?, ?, ?, ?, ?, ?, ?, 'pending')
                """, arguments: [request.tenant.rawValue, request.author, Int64(clamping: request.requestedAtMillis), request.notes,
                                 request.targets.map { $0.map(\.rawValue).joined(separator: ",") }, request.sourceDigest, sources])
            return db.lastInsertedRowID
        }
    }

    public func releaseRequests(of tenant: TenantID, limit: Int) async throws -> [ReleaseRequest] {
        try await catalog.writer.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM release_requests WHERE tenant = ? ORDER BY id DESC LIMIT ?",
                             arguments: [tenant.rawValue, max(0, limit)]).map(HubCatalog.releaseRequest)
        }
    }

    public func releaseRequest(_ id: Int64, of tenant: TenantID) async throws -> ReleaseRequest? {
        try await catalog.writer.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM release_requests WHERE tenant = ? AND id = ?", arguments: [tenant.rawValue, id])
                .map(HubCatalog.releaseRequest)
        }
    }

    public func decideReleaseRequest(_ id: Int64, of tenant: TenantID, state: ReleaseRequest.State, reviewer: String,
                                     reason: String?, atMillis: UInt64) async throws -> Bool {
        try await catalog.writer.write { db in
            try db.execute(sql: """
                UPDATE release_requests SET state = ?, reviewer = ?, reason = ?, decided_at = ?
                WHERE tenant = ? AND id = ? AND state = 'pending'
                """, arguments: [state.rawValue, reviewer, reason, Int64(clamping: atMillis), tenant.rawValue, id])
            return db.changesCount == 1
        }
    }

    public func recordReleaseVersion(_ id: Int64, of tenant: TenantID, version: Int?) async throws {
        try await catalog.writer.write { db in
            if let version {
                try db.execute(sql: "UPDATE release_requests SET version = ? WHERE tenant = ? AND id = ?", arguments: [version, tenant.rawValue, id])
            } else {
                try db.execute(sql: """
                    UPDATE release_requests SET state = 'pending', reviewer = NULL, decided_at = NULL, reason = NULL WHERE tenant = ? AND id = ?
                    """, arguments: [tenant.rawValue, id])
            }
        }
    }
}

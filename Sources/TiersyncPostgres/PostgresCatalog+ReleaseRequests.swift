import Foundation
import PostgresNIO
import TiersyncCore
import TiersyncStorage

/// ``ReleaseApprovalStore`` on PostgreSQL: a request is decided by one conditional update,
/// so two reviewers approving at once in two hub processes publish it once.
extension PostgresCatalog: ReleaseApprovalStore {
    private static let fourEyesKey = "require_release_approval"
    private static let requestColumns = "id, tenant, author, requested_at, notes, targets, source_digest, sources, state, reviewer, decided_at, reason, version"

    private static func request(_ row: PostgresRow) throws -> ReleaseRequest {
        let (id, tenant, author, requested, notes, targets, digest, sources, state, reviewer, decided, reason, version) =
            try row.decode((Int64, String, String, Int64, String, String?, String, String, String, String?, Int64?, String?, Int32?).self)
        return ReleaseRequest(id: id, tenant: TenantID(stringLiteral: tenant), author: author, requestedAtMillis: UInt64(clamping: requested),
                              notes: notes, targets: targets.map { $0.split(separator: ",").map { NodeID(unchecked: String($0)) } },
                              sourceDigest: digest,
                              sources: (try? JSONDecoder().decode([ReleaseRequest.Source].self, from: Data(sources.utf8))) ?? [],
                              state: ReleaseRequest.State(rawValue: state) ?? .pending, reviewer: reviewer,
                              decidedAtMillis: decided.map { UInt64(clamping: $0) }, reason: reason, version: version.map(Int.init))
    }

    public func requiresReleaseApproval(of tenant: TenantID) async throws -> Bool {
        try await read("SELECT value FROM tiersync_catalog.admin_settings WHERE tenant = \(tenant.rawValue) AND key = \(Self.fourEyesKey)")
            .first?.decode(String.self) == "true"
    }

    public func setRequiresReleaseApproval(_ required: Bool, for tenant: TenantID) async throws {
        guard try await read("SELECT 1 FROM tiersync_catalog.tenants WHERE id = \(tenant.rawValue)").first != nil else {
            throw StoreError.notFound("tenant '\(tenant)'")
        }
        try await execute("""
            INSERT INTO tiersync_catalog.admin_settings (tenant, key, value) VALUES (\(tenant.rawValue), \(Self.fourEyesKey), \(required ? "true" : "false"))
            ON CONFLICT (tenant, key) DO UPDATE SET value = excluded.value
            """)
    }

    public func createReleaseRequest(_ request: ReleaseRequest) async throws -> Int64 {
        let sources = String(decoding: try JSONEncoder().encode(request.sources), as: UTF8.self)
        let targets = request.targets.map { $0.map(\.rawValue).joined(separator: ",") }
        let row = try await read("""
            INSERT INTO tiersync_catalog.release_requests (tenant, author, requested_at, notes, targets, source_digest, sources, state)
            VALUES (\(request.tenant.rawValue), \(request.author), \(Int64(clamping: request.requestedAtMillis)), \(request.notes), \(targets),
                    \(request.sourceDigest), \(sources), 'pending')
            RETURNING id
            """).first
        return try row?.decode(Int64.self) ?? 0
    }

    public func releaseRequests(of tenant: TenantID, limit: Int) async throws -> [ReleaseRequest] {
        try await read("""
            SELECT \(unescaped: Self.requestColumns) FROM tiersync_catalog.release_requests WHERE tenant = \(tenant.rawValue)
            ORDER BY id DESC LIMIT \(max(0, limit))
            """).map(Self.request)
    }

    public func releaseRequest(_ id: Int64, of tenant: TenantID) async throws -> ReleaseRequest? {
        try await read("""
            SELECT \(unescaped: Self.requestColumns) FROM tiersync_catalog.release_requests WHERE tenant = \(tenant.rawValue) AND id = \(id)
            """).first.map(Self.request)
    }

    public func decideReleaseRequest(_ id: Int64, of tenant: TenantID, state: ReleaseRequest.State, reviewer: String,
                                     reason: String?, atMillis: UInt64) async throws -> Bool {
        try await !read("""
            UPDATE tiersync_catalog.release_requests SET state = \(state.rawValue), reviewer = \(reviewer), reason = \(reason),
                decided_at = \(Int64(clamping: atMillis))
            WHERE tenant = \(tenant.rawValue) AND id = \(id) AND state = 'pending' RETURNING 1
            """).isEmpty
    }

    public func recordReleaseVersion(_ id: Int64, of tenant: TenantID, version: Int?) async throws {
        if let version {
            try await execute("UPDATE tiersync_catalog.release_requests SET version = \(Int32(clamping: version)) WHERE tenant = \(tenant.rawValue) AND id = \(id)")
        } else {
            try await execute("""
                UPDATE tiersync_catalog.release_requests SET state = 'pending', reviewer = NULL, decided_at = NULL, reason = NULL
                WHERE tenant = \(tenant.rawValue) AND id = \(id)
                """)
        }
    }
}

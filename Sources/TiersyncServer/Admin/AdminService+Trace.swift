import Foundation
import Hummingbird
import TiersyncCore
import TiersyncStorage

/// A record's trace: where each of its changes was written, the hops it took to this node,
/// and whether it has gone upward yet ("why does HQ not see this yet?"). Scoped like the
/// conflicts inbox: a record is in a country admin's scope when it is routed into their
/// subtree. A record routed elsewhere and one that does not exist get one answer, 403
/// `out_of_scope`, as a conflict or a quarantined change outside the caller's scope do.
extension AdminService {
    static let traceNotFound = APIError(.forbidden, "out_of_scope", "no such record in your scope")

    func trace(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller) async throws -> Response {
        let query = request.uri.queryParameters
        guard let table = query.get("table"), DomainSchema.schema.table(table) != nil else {
            throw APIError(.badRequest, "invalid_parameter", "'table' names one of the replicated tables (\(DomainSchema.schema.tables.map(\.name).joined(separator: ", ")))")
        }
        guard let id = query.get("id"), RecordID.isValid(id) else {
            throw APIError(.badRequest, "invalid_parameter", "'id' is a record id: 1–128 printable ASCII characters")
        }
        let limit = Int(try SyncService.integer(query, "limit", default: 100, range: 1...Int64(Self.maxPage)))
        let after = try SyncService.integer(query, "after", default: 0, range: 0...Int64.max)
        return try codec.encode(try await tracePage(caller, table: table, id: id, after: after, limit: limit), for: request)
    }

    /// One page of a record's trace as the caller may see it.
    func tracePage(_ caller: AdminCaller, table: String, id: String, after: Int64, limit: Int) async throws -> AdminMessages.TraceResponse {
        let store = try await directory.store(for: caller.user.tenant)
        let trace = try await store.trace(recordID: id, table: table, after: after, limit: limit)
        // Nothing held, or held but routed outside the caller's subtree: one answer. Held is
        // a row (its route) or log entries: a record compaction folded has a row and no
        // entries, and asking for entries alone answered it as not held.
        guard !trace.changes.isEmpty || !trace.route.isEmpty || after > 0, inScope(route: trace.route, caller) else { throw Self.traceNotFound }
        let visible = caller.isTenantWide ? nil : caller.visibleNodes
        func shown(_ node: NodeID) -> String {
            visible.map { $0.contains(node) ? node.rawValue : AdminMessages.hiddenNode } ?? node.rawValue
        }
        let entries = trace.changes.map { entry -> AdminMessages.TraceEntry in
            let change = entry.change
            let upstream: AdminMessages.TraceEntry.Upstream
            var refusal: String?, nextTry: UInt64?
            switch entry.upstream {
            case .atRoot: upstream = .atRoot
            case .fromParent: upstream = .fromParent
            case .pending: upstream = .pending
            case .acknowledged: upstream = .acknowledged
            case .refused(let code, let reason, let next):
                upstream = .refused
                refusal = "\(code): \(reason)"
                nextTry = next
            }
            // Values written outside the caller's subtree are not theirs to read here.
            let ownValues = caller.isTenantWide || caller.subtree.contains(change.origin)
            return AdminMessages.TraceEntry(
                position: entry.seq, origin: shown(change.origin), originSeq: change.originSeq, op: change.op,
                fieldNames: change.fields.keys.sorted(), fields: ownValues ? change.fields : nil,
                writtenAtMillis: change.hlc.wallMillis,
                hops: change.trail.map { .init(node: shown($0.node), atMillis: $0.atMillis) },
                source: entry.source, receivedFrom: entry.receivedFrom.map(shown), receivedAtMillis: entry.receivedAtMillis,
                upstream: upstream, refusal: refusal, nextTryMillis: nextTry)
        }
        return AdminMessages.TraceResponse(table: table, id: id, changes: entries, next: trace.next,
                                           compacted: after == 0 && entries.isEmpty ? true : nil)
    }
}

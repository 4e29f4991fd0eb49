import Foundation
import Hummingbird
import TiersyncCore
import TiersyncStorage

/// The conflicts inbox: concurrent edits that lost, and their resolution. A resolution is
/// an ordinary edit of the field by the hub's own node (newer than both values), so it syncs
/// to every replica holding the record, and each replica drops the conflict when it applies
/// it (a kept conflict settles once a newer version of its field is in force).
extension AdminService {
    /// Whether a conflict concerns the caller: its record is routed into their subtree.
    func inScope(route: Set<NodeID>, _ caller: AdminCaller) -> Bool {
        caller.isTenantWide || !route.isDisjoint(with: caller.subtree)
    }

    func conflicts(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller) async throws -> Response {
        let query = request.uri.queryParameters
        let limit = Int(try SyncService.integer(query, "limit", default: 100, range: 1...Int64(Self.maxPage)))
        let after = try SyncService.integer(query, "after", default: 0, range: 0...Int64.max)
        return try codec.encode(try await conflictPage(caller, after: after, limit: limit), for: request)
    }

    /// One page of the conflicts the caller may see, oldest first.
    func conflictPage(_ caller: AdminCaller, after start: Int64, limit: Int) async throws -> AdminMessages.ConflictsResponse {
        let store = try await directory.store(for: caller.user.tenant)
        var after = start
        var out: [AdminMessages.Conflict] = []
        let visible = caller.isTenantWide ? nil : caller.visibleNodes
        var exhausted = false
        for _ in 0..<20 where out.count < limit {
            let page = try await store.conflicts(afterID: after, limit: Self.maxPage)
            out += page.filter { inScope(route: $0.route, caller) }.map { Self.shown($0.conflict, visible: visible) }.prefix(limit - out.count)
            guard let last = page.last, page.count == Self.maxPage else { exhausted = true; break }
            after = out.count == limit ? out.last!.id : last.conflict.id
        }
        return AdminMessages.ConflictsResponse(conflicts: out, next: exhausted && out.count < limit ? nil : out.last?.id ?? after)
    }

    /// `record` as a caller who may read `visible` (nil: everything) sees it: a value
    /// written by a node outside their subtree and not above it is hidden, with its node.
    /// A country's administrator read, in the inbox, the losing value another country's
    /// dealer had written (which the trace hid).
    static func shown(_ record: ConflictRecord, visible: Set<NodeID>?) -> AdminMessages.Conflict {
        func side(_ value: FieldValue, _ version: FieldVersion) -> (FieldValue, String) {
            guard let visible, !visible.contains(version.node) else { return (value, version.description) }
            return (.string(AdminMessages.hiddenValue), "\(version.hlc.rawValue)@\(AdminMessages.hiddenNode)")
        }
        let conflict = record.conflict
        let (winner, winnerVersion) = side(conflict.winner, conflict.winnerVersion)
        let (loser, loserVersion) = side(conflict.loser, conflict.loserVersion)
        return AdminMessages.Conflict(id: record.id, table: record.table, recordID: record.recordID,
                                      conflict: .init(field: conflict.field, winner: winner, winnerVersion: winnerVersion,
                                                      loser: loser, loserVersion: loserVersion),
                                      detectedAtMillis: record.detectedAtMillis)
    }

    /// Whether `caller` may keep `side` of a conflict: a value hidden from them is not theirs to choose.
    static func mayKeep(_ side: FieldVersion, _ caller: AdminCaller) -> Bool {
        caller.isTenantWide || caller.visibleNodes.contains(side.node)
    }

    func resolveConflict(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller) async throws -> Response {
        guard let raw = context.parameters.get("id"), let id = Int64(raw), id > 0 else {
            throw APIError(.badRequest, "invalid_parameter", "the conflict's id is a positive integer")
        }
        let body = try await codec.decode(AdminMessages.ResolveRequest.self, from: request)
        return try codec.encode(try await resolve(id, body, caller, address: context.remoteAddress ?? "unknown"), for: request)
    }

    /// Writes the chosen value as a new edit of the field at the hub.
    func resolve(_ id: Int64, _ body: AdminMessages.ResolveRequest, _ caller: AdminCaller, address: String) async throws -> AdminMessages.ResolveResponse {
        let store = try await directory.store(for: caller.user.tenant)
        guard let (conflict, route) = try await store.conflicts(afterID: id - 1, limit: 1).first, conflict.id == id,
              inScope(route: route, caller) else { throw Self.outOfScope }
        let value: FieldValue
        switch body.keep {
        case .winner, .loser:
            let (kept, version) = body.keep == .winner ? (conflict.conflict.winner, conflict.conflict.winnerVersion)
                                                       : (conflict.conflict.loser, conflict.conflict.loserVersion)
            guard Self.mayKeep(version, caller) else {
                throw APIError(.forbidden, "hidden_value", "that value was written outside your scope: keep the other, or give a value (keep=value)")
            }
            value = kept
        case .value:
            guard let given = body.value else { throw APIError(.unprocessableContent, "value_required", "keep=value needs a value") }
            value = given
        }
        let write = RecordWrite(table: conflict.table, id: conflict.recordID, op: .upsert, fields: [conflict.conflict.field: value])
        do {
            _ = try await store.writeAsHub([write])
        } catch let error as StoreError {
            if case .rejected(let rejection) = error { throw APIError(.unprocessableContent, rejection.code.rawValue, rejection.message) }
            throw APIError(.notImplemented, "unsupported", error.description)
        }
        await signal(caller.user.tenant)
        try await audit(caller, address, "conflict.resolve", target: "\(conflict.table)/\(conflict.recordID).\(conflict.conflict.field)",
                        detail: "kept \(body.keep.rawValue)")  // never the value: the audit log is not erased with a customer
        return AdminMessages.ResolveResponse(table: conflict.table, recordID: conflict.recordID, field: conflict.conflict.field, value: value)
    }
}

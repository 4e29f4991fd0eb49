import Foundation
import Hummingbird
import TiersyncCore
import TiersyncStorage

/// Erasure through the admin API (docs/PRIVACY.md): a request writes the erasure marker as
/// the hub's own change (erasing the hub's copy in its transaction; the marker then reaches
/// every replica holding any of the data), and the ledger shows each request with the
/// replicas that held the data and which have acknowledged.
extension AdminService {
    func requestErasure(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller) async throws -> Response {
        let body = try await codec.decode(AdminMessages.ErasureRequest.self, from: request)
        guard let table = Erasure.SubjectTable(rawValue: body.table) else {
            throw APIError(.unprocessableContent, "invalid_parameter",
                           "erasure starts from a customer: 'table' is one of \(Erasure.SubjectTable.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard RecordID.isValid(body.id) else {
            throw APIError(.badRequest, "invalid_parameter", "'id' is a record id: 1–128 printable ASCII characters")
        }
        let store = try await directory.store(for: caller.user.tenant)
        // Held here and routed into the caller's subtree; anything else, existing or not, is one answer.
        // Held: a row (its route) or log entries. A record compaction folded has a row and no
        // entries; asking for entries alone answered it as not held.
        let held = try await store.trace(recordID: body.id, table: table.rawValue, after: 0, limit: 1)
        // A record held has a row or a tombstone, hence a route; an erased one has neither
        // (its log entries stay, emptied).
        let holdsRecord = !held.route.isEmpty && inScope(route: held.route, caller)
        // Asked before, in the caller's view, and no longer held here: that request, not
        // another (erased data never comes back, so a second marker erases nothing; each made
        // a ledger entry whose replicas all had to acknowledge again). Answered 200, the first
        // 201. A subject still held was not erased by any earlier request (the hub erases its
        // own copy as it writes one): a dealer's request for another country's customer, or
        // one made offline after the customer moved away, erased nothing here, and answering
        // with it left the customer's data at HQ with no way to erase it from the admin API.
        guard let here = try await store.storeIdentity()?.node else { throw APIError(.internalServerError, "internal", "the tenant's store has no node") }
        if !holdsRecord {
            // Of several, the one this hub acted on (it acknowledged it): a node's own request
            // for another's customer, which erased nothing, is not the answer to HQ's.
            let asked = try await store.erasureLedger().filter {
                $0.subjectTable == table.rawValue && $0.subjectID == body.id && inScope(route: Set($0.routedTo), caller)
            }
            if let first = asked.first(where: { $0.acknowledgements.contains { $0.node == here } }) ?? asked.first {
                return try codec.encode(ledgerLine(first, caller, here: here), status: .ok, for: request)
            }
        }
        guard !held.changes.isEmpty || !held.route.isEmpty, inScope(route: held.route, caller) else { throw Self.traceNotFound }
        let erasureID = RecordID.random(prefix: "era")
        let now = Date().ISO8601Format()
        // Requested here: by the hub's own node (HQ, or the country serving the caller).
        let marker = RecordWrite(table: DomainSchema.erasures.name, id: erasureID, op: .upsert,
                                 fields: Erasure.markerFields(table: table, id: body.id, requestedBy: here, at: now))
        do {
            _ = try await store.writeAsHub([marker])
        } catch let error as StoreError {
            if case .rejected(let rejection) = error { throw APIError(.unprocessableContent, rejection.code.rawValue, rejection.message) }
            throw APIError(.notImplemented, "unsupported", error.description)
        }
        await signal(caller.user.tenant)
        try await audit(caller, context, "erasure.request", target: "\(table.rawValue)/\(body.id)", detail: erasureID)
        guard let entry = try await store.erasureLedger().first(where: { $0.erasureID == erasureID }) else {
            throw APIError(.internalServerError, "internal", "the erasure \(erasureID) was written but is not in the ledger")
        }
        return try codec.encode(ledgerLine(entry, caller, here: here), status: .created, for: request)
    }

    func erasures(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller) async throws -> Response {
        let outstanding = request.uri.queryParameters.get("outstanding")
        guard outstanding == nil || outstanding == "true" || outstanding == "false" else {
            throw APIError(.badRequest, "invalid_parameter", "'outstanding' must be true or false")
        }
        let outstandingOnly = outstanding == "true"
        let store = try await directory.store(for: caller.user.tenant)
        let ledger = try await store.erasureLedger()
        let here = try await store.storeIdentity()?.node
        let lines = ledger.filter { inScope(route: Set($0.routedTo), caller) }.map { ledgerLine($0, caller, here: here) }
            .filter { !outstandingOnly || !$0.outstanding.isEmpty }
        return try codec.encode(AdminMessages.ErasuresResponse(erasures: lines), for: request)
    }

    /// A ledger entry as the caller may see it: nodes outside their view are not named. At
    /// a country (`here`, the node this hub is), its replicas are those of its subtree: the
    /// nodes above it acknowledge at HQ, and their acknowledgements never come down, so a
    /// country's ledger waited for HQ on every request, for good (helper 94).
    func ledgerLine(_ entry: ErasureLedgerEntry, _ caller: AdminCaller, here: NodeID?) -> AdminMessages.ErasureLine {
        let visible = caller.isTenantWide ? nil : caller.visibleNodes
        let served = here.flatMap { caller.tree.isRoot($0) ? nil : caller.tree.subtree(of: $0) }
        func seen(_ nodes: [NodeID]) -> [NodeID] {
            let held = served.map { s in nodes.filter { s.contains($0) } } ?? nodes
            return visible.map { v in held.filter { v.contains($0) } } ?? held
        }
        let acknowledged = entry.acknowledgements.filter { visible?.contains($0.node) ?? true }
        return AdminMessages.ErasureLine(erasureID: entry.erasureID, table: entry.subjectTable, id: entry.subjectID,
                                         requestedBy: visible.map { $0.contains(NodeID(unchecked: entry.requestedBy)) } ?? true ? entry.requestedBy : AdminMessages.hiddenNode,
                                         requestedAt: entry.requestedAt, replicas: seen(entry.replicas(in: caller.tree)),
                                         acknowledgements: acknowledged, outstanding: seen(entry.outstanding(in: caller.tree)))
    }
}

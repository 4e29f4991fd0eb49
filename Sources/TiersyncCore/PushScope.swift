/// Which pushed changes a node may send, as plain values: the hub applies it to every push
/// (``partitionByOrigin(_:pusher:scope:)`` before anything else, ``relayedRefusal(for:origins:pusher:scope:routeBefore:routeAfter:)``
/// inside the applying transaction), and the fuzzer checks the store against the same rule.
///
/// A node may push changes made in its own subtree, to records routed into the subtree of
/// the node that made each change (before the change, or after it for a new record). Refusals name only what the pusher
/// sent and its own scope: not where a record is routed, nor whether it is routed at all.
public enum PushScope {
    /// Splits a push into the changes the pusher may send (made by itself or a node below
    /// it) and refusals for the others.
    public static func partitionByOrigin(_ changes: [Change], pusher: NodeID, scope: Scope) -> (entitled: [Change], refused: [RejectedChange]) {
        guard let nodes = scope.nodes else { return (changes, []) }
        var entitled: [Change] = []
        entitled.reserveCapacity(changes.count)
        var refused: [RejectedChange] = []
        for change in changes {
            if nodes.contains(change.origin) {
                entitled.append(change)
            } else {
                refused.append(RejectedChange(change: change, rejection: ChangeRejection(.forbidden,
                    "change \(change.origin)#\(change.originSeq) claims origin '\(change.origin)', which is not node '\(pusher)' or below it: a node may push only changes made in its own subtree")))
            }
        }
        return (entitled, refused)
    }

    /// Drops the hops of each change's trail that name a node the change cannot have
    /// crossed on its way to `pusher`: only its origin and the nodes above it, up to the
    /// pusher, receive it before the pusher sends it. A node's trail is lineage shown to
    /// operators (`tiersync trace`, the admin API); a dealer naming HQ or another country in
    /// it forged a path its change never took. Changes with honest trails are not copied.
    public static func dropForeignHops(_ changes: inout [Change], pusher: NodeID, tree: NodeTree) {
        var crossable: [NodeID: Set<NodeID>] = [:]
        for index in changes.indices where !changes[index].trail.isEmpty {
            let origin = changes[index].origin
            let allowed: Set<NodeID>
            if let known = crossable[origin] {
                allowed = known
            } else {
                // The origin and its ancestors up to the pusher (the pusher included).
                var path: Set<NodeID> = [origin]
                if origin != pusher {
                    for ancestor in tree.ancestors(of: origin) {
                        path.insert(ancestor)
                        if ancestor == pusher { break }
                    }
                }
                crossable[origin] = path
                allowed = path
            }
            if !changes[index].trail.allSatisfy({ allowed.contains($0.node) }) {
                changes[index].trail.removeAll { !allowed.contains($0.node) }
            }
        }
    }

    /// The scopes of the nodes below `pusher` that made `changes` (the changes it relays),
    /// for ``relayedRefusal(for:origins:pusher:scope:routeBefore:routeAfter:)``: one per origin.
    public static func originScopes(of changes: [Change], pusher: NodeID, tree: NodeTree) -> [NodeID: Scope] {
        var scopes: [NodeID: Scope] = [:]
        for change in changes where change.origin != pusher && scopes[change.origin] == nil {
            scopes[change.origin] = Scope(tree: tree, node: change.origin)
        }
        return scopes
    }

    /// Why `change`, pushed by `pusher`, may not be applied: a change `pusher` made is judged
    /// by its scope; one it relays from a node below it by the scope of that node, its origin
    /// (`origins`, from ``originScopes(of:pusher:tree:)``), which is narrower. The node in
    /// between judged the change so when it took it, with what it knew: a country holds only
    /// its own subtree's records, so a dealer's write under an id already used in another
    /// country was new there and kept. Judged by the country's wider scope here, that write
    /// went through as soon as the record entered the country's scope (its owner's dealer moved
    /// in), and took over another dealer's customer. An erasure request is judged so too: a
    /// country relays its dealers' requests, and judged by the country's scope, a dealer's
    /// request for a sibling's customer erased it.
    public static func relayedRefusal(for change: Change, origins: [NodeID: Scope], pusher: NodeID, scope: Scope,
                                      routeBefore: Set<NodeID>?, routeAfter: Set<NodeID>) -> ChangeRejection? {
        guard change.origin != pusher else {
            return refusal(for: change, pusher: pusher, scope: scope, routeBefore: routeBefore, routeAfter: routeAfter)
        }
        if let nodes = scope.nodes, !nodes.contains(change.origin) {
            return ChangeRejection(.forbidden, "change \(change.origin)#\(change.originSeq) was not made in the subtree of node '\(pusher)'")
        }
        // An origin missing from `origins` (a caller that did not list the push's origins)
        // is judged by nothing wider than the pusher's scope: never let through.
        guard let originScope = origins[change.origin] else {
            return ChangeRejection(.forbidden, "change \(change.origin)#\(change.originSeq) is relayed by node '\(pusher)' and its origin's scope is not known here")
        }
        return refusal(for: change, pusher: change.origin, scope: originScope, routeBefore: routeBefore, routeAfter: routeAfter)
    }

    /// Why `change` may not be applied for `pusher`, given the record's route before the
    /// change (nil for a record new here) and after it; nil when it may.
    public static func refusal(for change: Change, pusher: NodeID, scope: Scope, routeBefore: Set<NodeID>?, routeAfter: Set<NodeID>) -> ChangeRejection? {
        if let nodes = scope.nodes, !nodes.contains(change.origin) {
            return ChangeRejection(.forbidden, "change \(change.origin)#\(change.originSeq) was not made in the subtree of node '\(pusher)'")
        }
        if !scope.contains(route: routeBefore ?? routeAfter) {
            // Named only for a record held here, routed elsewhere: that lasts. A record new
            // here is judged by the change's own fields, and an earlier change creating it
            // may still be on its way (refused for a reason that passes, and retried).
            return ChangeRejection(.forbidden, "record \(change.table)/\(change.recordID) is outside the scope of node '\(pusher)'",
                                   outsideScopeOf: routeBefore == nil ? nil : pusher)
        }
        // A node's report on itself (governance status, KPI values, erasure proof) is
        // written by that node only, under the id naming it, about it. Routed by its `node`
        // field, which the writer sets, such a record passed the route check above when a
        // dealer wrote another dealer's id about itself: it took the id over, and the other
        // node's own reports were refused from then on.
        if let owner = SelfReport.owner(table: change.table, recordID: change.recordID),
           owner != change.origin.rawValue[...] || routeAfter != [change.origin] || (routeBefore.map { $0 != [change.origin] } ?? false) {
            return ChangeRejection(.forbidden, "record \(change.table)/\(change.recordID) is a node's report on itself: change \(change.origin)#\(change.originSeq) may write only node '\(change.origin)''s own, about it")
        }
        return nil
    }
}

/// Records a node writes about itself, one per subject, with an id that names the node:
/// `governance_status` (the node), `kpi_snapshots` (`node:kpi:period:start`) and
/// `erasure_acks` (`erasure@node`). Node ids hold neither `:` nor `@`.
public enum SelfReport {
    /// The node `recordID` names, for a table of self reports; nil for other tables.
    public static func owner(table: String, recordID: String) -> Substring? {
        switch table {
        case DomainSchema.governanceStatus.name: return recordID[...]
        case DomainSchema.kpiSnapshots.name: return recordID.firstIndex(of: ":").map { recordID[..<$0] } ?? ""
        case DomainSchema.erasureAcks.name: return recordID.lastIndex(of: "@").map { recordID[recordID.index(after: $0)...] } ?? ""
        default: return nil
        }
    }
}

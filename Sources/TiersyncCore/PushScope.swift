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
                                      routeBefore: Set<NodeID>?, routeAfter: Set<NodeID>, reach: RouteReach? = nil,
                                      copiedFromRoute: Set<NodeID>? = nil) -> ChangeRejection? {
        guard change.origin != pusher else {
            return refusal(for: change, pusher: pusher, scope: scope, routeBefore: routeBefore, routeAfter: routeAfter, reach: reach,
                           copiedFromRoute: copiedFromRoute)
        }
        if let nodes = scope.nodes, !nodes.contains(change.origin) {
            return ChangeRejection(.forbidden, "change \(change.origin)#\(change.originSeq) was not made in the subtree of node '\(pusher)'")
        }
        // An origin missing from `origins` (a caller that did not list the push's origins)
        // is judged by nothing wider than the pusher's scope: never let through.
        guard let originScope = origins[change.origin] else {
            return ChangeRejection(.forbidden, "change \(change.origin)#\(change.originSeq) is relayed by node '\(pusher)' and its origin's scope is not known here")
        }
        return refusal(for: change, pusher: change.origin, scope: originScope, routeBefore: routeBefore, routeAfter: routeAfter, reach: reach,
                       copiedFromRoute: copiedFromRoute)
    }

    /// Why `change` may not be applied for `pusher`, given the record's route before the
    /// change (nil for a record new here) and after it; nil when it may. With `reach` (the
    /// tenant's tree, where the judging hub knows it), the route the change makes is judged
    /// too (``RouteReach``); `copiedFromRoute` is the route held here of the record the
    /// change's copied route fields copy (``RouteReach/copiedSource(of:)``).
    public static func refusal(for change: Change, pusher: NodeID, scope: Scope, routeBefore: Set<NodeID>?, routeAfter: Set<NodeID>,
                               reach: RouteReach? = nil, copiedFromRoute: Set<NodeID>? = nil) -> ChangeRejection? {
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
        if let reach, let refusal = reach.refusal(for: change, by: pusher, scope: scope, routeBefore: routeBefore, routeAfter: routeAfter,
                                                  copiedFromRoute: copiedFromRoute) {
            return refusal
        }
        // A KPI snapshot's path places the node's values in every roll-up read from the
        // stored snapshots (`tiersync kpi` on a store): a dealer naming itself under another
        // country moved its values, and its targets, into that country's subtree rows.
        // Judged where the tree holds the node (a dealer a country's mirror does not hold yet
        // has no known path there).
        if let reach, change.table == DomainSchema.kpiSnapshots.name, let written = change.fields[KPISnapshotPath.field],
           reach.tree.parents[change.origin] != nil,
           !KPISnapshotPath.isHonest(written.stringValue, of: change.origin, known: reach.fullPath(of: change.origin)) {
            return ChangeRejection(.invalidChange,
                                   "change \(change.origin)#\(change.originSeq) writes a KPI snapshot whose path is not node '\(change.origin)''s path from the root (\(reach.fullPath(of: change.origin))), nor its end")
        }
        return nil
    }
}

/// Which nodes a change may route a record to, and take it away from, judged by the node
/// that made it. The route checks above ask only that the record is routed into the maker's
/// subtree (before the change, or after it for a new record); what else the change names
/// was not judged. A dealer could then
/// - route a record it shares to any node of the tenant, taking it from the node it shares
///   it with: `owning_dealer` and `servicing_dealer` of a customer it services set to a
///   dealer of another country delivered the owner's customer, personal data and all, to
///   that country, and locked its owner out;
/// - create records routed to any node (a dialogue "handled" by another country's dealer,
///   a lead it "fulfils", a task), filling their queues and their KPIs.
///
/// So a change made by a node below a country may newly name only nodes of its country's
/// subtree (its siblings: a customer serviced by another dealer of the country) and the
/// nodes above it (escalation, a country's or HQ's dialogue centre); and of the nodes it
/// reaches, it may take the record away only from those of its own subtree, or from one
/// still holding it through a node the record stays routed to (a country an escalation
/// passes on to HQ keeps the dialogue through its dealer). A node out of its reach above
/// its own level may be left out (a dealer that moved hands its open task from its old
/// country to its new one); a dealer of another country never. Only changes writing a route
/// field are judged so, and not deletes. The tenant's root, and the nodes directly below it
/// (countries; the agents of a two-level tenant), route to any node of the tenant: they hand
/// dialogues and leads between countries.
///
/// A field copying another record's route (``copiedRouteFields``) may also name a node out
/// of the maker's reach when the record it copies from, as held by the judging hub, is
/// routed to that node and into the maker's subtree: the maker holds what it copies.
public struct RouteReach: Sendable {
    public let tree: NodeTree
    /// The nodes above the tree's root, parent first, when the tree is a country's mirror of
    /// its own subtree (the country's ancestors, from its path); empty at HQ.
    public let above: [NodeID]

    /// Route fields that copy another record's route and that any holder writes, so the
    /// copy can name a node out of the writer's reach legitimately: an escalation entry's
    /// `originating_node` and `allocated_node` (its dialogue's; a dealer escalating a dialogue
    /// HQ handed it from another country names that country's dealer), a consent event's
    /// `owning_dealer` and `recorded_by` (a dealer recording the consent of a customer owned
    /// across a border). Judged by reach alone, those were refused for ever and the history
    /// never reached HQ (helper 75); not judged at all, a dealer wrote history lines into any
    /// node of the tenant (a consent event "withdrawn", for another country's customer, named
    /// as owned by that country's dealer, landed at that dealer). Such a field is judged
    /// against the record it copies from (``copiedFrom``). An entry's `to_node` and
    /// `from_node` are judged by reach alone: a withdrawal puts the dialogue back at
    /// `from_node` (helper 77: a forged entry routed a dialogue anywhere that way).
    public static let copiedRouteFields: [String: Set<String>] = [
        DomainSchema.escalations.name: ["originating_node", "allocated_node"],
        DomainSchema.consentEvents.name: ["owning_dealer", "recorded_by"],
    ]

    /// For each table of ``copiedRouteFields``: the field naming the record the route is
    /// copied from, and that record's table (an escalation entry's dialogue, a consent event's
    /// customer).
    public static let copiedFrom: [String: (field: String, table: String)] = [
        DomainSchema.escalations.name: ("interaction_id", DomainSchema.interactions.name),
        DomainSchema.consentEvents.name: ("customer_id", DomainSchema.customers.name),
    ]

    /// The record whose route `change`'s copied route fields copy, by the id the change
    /// itself names (writers send it with every copied field: entries and events are written
    /// whole), and, given `merged` (the record's live values once the change is applied), only
    /// when the record names that id then: an older-stamped id that loses the merge says
    /// nothing of the record the fields are copied into. nil for other tables, or when the
    /// change names none. Without it, a copied field is judged by reach alone.
    public static func copiedSource(of change: Change, merged: [String: FieldValue]? = nil) -> (table: String, id: String)? {
        guard let source = copiedFrom[change.table], let id = change.fields[source.field]?.stringValue else { return nil }
        if let merged, merged[source.field]?.stringValue != id { return nil }
        return (source.table, id)
    }

    public init(tree: NodeTree, above: [NodeID] = []) {
        self.tree = tree
        self.above = above
    }

    /// Whether a change made by `origin` may name `target` in a record's route.
    public func allows(_ target: NodeID, from origin: NodeID) -> Bool {
        if target == origin { return true }
        guard let entry = tree.parents[origin] else { return false }
        // The root of the tenant, or of a country's mirror (the country's own changes are
        // never judged by its own hub).
        guard let parent = entry else { return true }
        // Directly below the tenant's root: a country, or an agent of a two-level tenant. Any
        // node of the tenant, but one: a country's dialogues "handled" by a node that does not
        // exist were taken, and sat routed to no one (helper 82).
        if above.isEmpty, tree.isRoot(parent) { return tree.parents[target] != nil }
        if above.contains(target) { return true }
        // Its parent and everything below the parent (the node itself, its siblings and
        // their subtrees), and the parent's ancestors.
        return target == parent || tree.ancestors(of: target).contains(parent) || tree.ancestors(of: parent).contains(target)
    }

    /// `node`'s path from the tenant's root, `/`-separated: its path in the tree, below the
    /// nodes above the tree it does not name (a country's mirror holds the country under its
    /// parent; HQ is above).
    public func fullPath(of node: NodeID) -> String {
        let path = tree.path(of: node).split(separator: "/").map(String.init)
        let missing = above.reversed().map(\.rawValue).filter { !path.contains($0) }
        return (missing + path).joined(separator: "/")
    }

    /// Whether `node` holds what is routed to `below` (an ancestor of it): nodes above the
    /// mirror's root are ancestors of every node the mirror holds.
    func isAncestor(_ node: NodeID, of below: NodeID) -> Bool {
        tree.ancestors(of: below).contains(node) || (above.contains(node) && tree.parents[below] != nil)
    }

    /// The level of `node` counted from the tenant's root (1 for the root): its path in the
    /// tree and the nodes above the tree it does not already name (a country's mirror holds
    /// the country with its parent). A node the tree does not hold counts as the level just
    /// below the nodes above the tree.
    func level(of node: NodeID) -> Int {
        let path = tree.path(of: node).split(separator: "/").map { NodeID(unchecked: String($0)) }
        return path.count + above.filter { !path.contains($0) }.count
    }

    /// Why the route a change by `origin` makes may not be: a node it newly names out of its
    /// reach, or a node it takes the record from out of its scope; nil when it may.
    ///
    /// A copied route field (``copiedRouteFields``) may also name a node out of reach that
    /// `copiedFromRoute`, the route of the record it copies (``copiedSource(of:)``), holds,
    /// when that route reaches into `scope` too.
    ///
    /// Only a change writing a route field is judged: a record's stored route can hold
    /// nodes its fields no longer name (one written without route fields is routed to its
    /// maker), which any later change's route leaves out. A dealer's edit of a phone number
    /// is not what took the record from them.
    func refusal(for change: Change, by origin: NodeID, scope: Scope, routeBefore: Set<NodeID>?, routeAfter: Set<NodeID>,
                 copiedFromRoute: Set<NodeID>? = nil) -> ChangeRejection? {
        // On every push of a record's creation: no allocation beyond a refusal's (the hub's
        // ingest measured it, BENCHMARKS.md "route reach on the push path").
        guard let table = DomainSchema.schema.table(change.table) else { return nil }
        let copied = Self.copiedRouteFields[change.table]
        let before = routeBefore ?? []
        var writesJudged = false
        var outOfReach: NodeID?
        for field in table.routeFields {
            guard let value = change.fields[field] else { continue }
            writesJudged = true
            // The node the change itself names, new to the record's route (most often the
            // maker itself, its record's owner or originator).
            guard let name = value.stringValue, name != origin.rawValue else { continue }
            let target = NodeID(unchecked: name)
            guard routeAfter.contains(target), !before.contains(target), !allows(target, from: origin) else { continue }
            // A copy of the route of a record the maker holds, naming a node that holds it too.
            if copied?.contains(field) == true, let source = copiedFromRoute, Self.copiedSource(of: change) != nil, source.contains(target),
               scope.contains(route: source) { continue }
            if outOfReach == nil || name < outOfReach!.rawValue { outOfReach = target }
        }
        guard writesJudged else { return nil }
        if let target = outOfReach {
            return ChangeRejection(.forbidden, "change \(change.origin)#\(change.originSeq) routes record \(change.table)/\(change.recordID) to node '\(target.rawValue.clipped(toUTF8: 64))', which node '\(origin)' cannot route to: a node routes records within its country's subtree and to the nodes above it",
                                   outsideScopeOf: origin)
        }
        if routeBefore == nil || before == routeAfter { return nil }
        guard let nodes = scope.nodes else { return nil }
        for removed in before.subtracting(routeAfter).sorted(by: { $0.rawValue < $1.rawValue }) where !nodes.contains(removed) {
            // Still holding it through a node the record stays routed to: nothing is taken.
            if routeAfter.contains(where: { isAncestor(removed, of: $0) }) { continue }
            // A node out of reach above the maker's level is no longer on the path of the
            // record's dealer (its country, named before the dealer moved away): the dealer
            // hands its task on to its new country. A dealer of another country is never left
            // out so (a dealer servicing its customer took it from it). At a country, a node
            // its mirror does not hold counts as above: HQ, which knows, judges again.
            if !allows(removed, from: origin), level(of: removed) < level(of: origin) { continue }
            // The node taken from is not named: the stored route can hold a node the record's
            // fields no longer name, which the maker has no way to know (the fuzzer found
            // one country told of another country holding its record).
            return ChangeRejection(.forbidden, "change \(change.origin)#\(change.originSeq) takes record \(change.table)/\(change.recordID) away from a node outside the scope of node '\(origin)' that still holds it",
                                   outsideScopeOf: origin)
        }
        return nil
    }
}

/// The `path` a node writes into its KPI snapshots (where roll-ups place its values).
public enum KPISnapshotPath {
    public static let field = "path"

    /// Whether `written` is `node`'s path `known` (from the root, `/`-separated) or its end
    /// from its parent on (a node that has not learned its whole path yet writes its parent
    /// and itself). A node with a parent naming itself alone is not placed below anyone: its
    /// values left every roll-up. Null or absent places nothing.
    public static func isHonest(_ written: String?, of node: NodeID, known: String) -> Bool {
        guard let written else { return true }
        let parts = written.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.last.map(String.init) == node.rawValue else { return false }
        if parts.count == 1 { return written == known }
        return written == known || known.hasSuffix("/" + written)
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

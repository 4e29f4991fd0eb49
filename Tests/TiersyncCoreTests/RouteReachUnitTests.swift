import Testing
@testable import TiersyncCore

/// ``RouteReach`` as plain values: which nodes a change may route a record to, and take it from.
@Suite("Route reach (plain values)")
struct RouteReachUnitTests {
    static let tree = NodeTree(parents: ["hq": nil, "de": "hq", "fr": "hq", "d1": "de", "d2": "de", "f1": "fr"])
    /// de's mirror of its own subtree, as HQ's directory sends it: de with its parent, which
    /// the mirror does not hold.
    static let mirror = NodeTree(parents: ["de": "hq", "d1": "de", "d2": "de"])
    /// A four-level tenant (hq/r/c/d) at c: its mirror holds c under r, and its path names HQ above.
    static let deep = NodeTree(parents: ["c": "r", "d": "c", "d2": "c"])

    static func change(_ origin: NodeID, _ table: String, _ fields: [String: FieldValue]) -> Change {
        Change(origin: origin, originSeq: 1, hlc: HLCTimestamp(wallMillis: 1_000, counter: 0), table: table, recordID: "r-1", op: .upsert, fields: fields)
    }

    @Test("a dealer reaches its country's subtree and the nodes above it; countries reach every node of the tenant and the root any node; unknown nodes no one but the root")
    func reach() {
        let full = RouteReach(tree: Self.tree)
        for target in ["d1", "d2", "de", "hq"] as [NodeID] { #expect(full.allows(target, from: "d1"), "d1 → \(target)") }
        for target in ["f1", "fr", "nosuch"] as [NodeID] { #expect(!full.allows(target, from: "d1"), "d1 → \(target)") }
        for target in ["f1", "fr", "d2", "hq"] as [NodeID] { #expect(full.allows(target, from: "de"), "de → \(target)") }
        // …but only nodes the tenant has (helper 82: a country's dialogue handled by "ghost" was taken).
        #expect(!full.allows("nosuch", from: "de"), "de → nosuch")
        #expect(full.allows("f1", from: "hq"))
        #expect(!full.allows("d1", from: "stranger"), "an origin the tree does not know reaches nothing")
        // At the country: its mirror and its path.
        let country = RouteReach(tree: Self.mirror, above: ["hq"])
        for target in ["d2", "de", "hq"] as [NodeID] { #expect(country.allows(target, from: "d1"), "at de: d1 → \(target)") }
        for target in ["f1", "fr"] as [NodeID] { #expect(!country.allows(target, from: "d1"), "at de: d1 → \(target)") }
        // Four levels, at c: HQ above its mirror is in reach of its dealers, and holds what
        // they keep (an escalation back from HQ's pool to the dealer takes nothing from HQ).
        let deep = RouteReach(tree: Self.deep, above: ["r", "hq"])
        #expect(deep.allows("hq", from: "d") && deep.allows("r", from: "d") && !deep.allows("x", from: "d"))
        #expect(PushScope.refusal(for: Self.change("d", "interactions", ["handling_node": "d"]), pusher: "d", scope: Scope(tree: Self.deep, node: "d"),
                                  routeBefore: ["d", "hq"], routeAfter: ["d"], reach: deep) == nil)
        #expect(deep.level(of: "d") == 4 && deep.level(of: "c") == 3 && country.level(of: "d1") == 3 && country.level(of: "f1") == 2)
        // A two-level tenant's agents are directly below the root: they reach each other.
        let flat = RouteReach(tree: NodeTree(parents: ["hq": nil, "a1": "hq", "a2": "hq"]))
        #expect(flat.allows("a2", from: "a1"))
    }

    @Test("a KPI snapshot's path is the node's path from the root, or its end: never another place in the tree")
    func kpiSnapshotPaths() {
        #expect(RouteReach(tree: Self.tree).fullPath(of: "d1") == "hq/de/d1")
        #expect(RouteReach(tree: Self.mirror, above: ["hq"]).fullPath(of: "d1") == "hq/de/d1")
        #expect(RouteReach(tree: Self.deep, above: ["r", "hq"]).fullPath(of: "d") == "hq/r/c/d")
        for honest in ["hq/de/d1", "de/d1", nil] as [String?] {
            #expect(KPISnapshotPath.isHonest(honest, of: "d1", known: "hq/de/d1"), "\(String(describing: honest))")
        }
        for forged in ["hq/fr/d1", "fr/d1", "hq/de", "hq/de/d2", "e/d1", "x/hq/de/d1", "", "d1", "/d1", "hq//d1"] {
            #expect(!KPISnapshotPath.isHonest(forged, of: "d1", known: "hq/de/d1"), "\(forged)")
        }
        #expect(KPISnapshotPath.isHonest("hq", of: "hq", known: "hq"), "the root names itself alone")
        func snapshot(_ path: String) -> Change {
            Change(origin: "d1", originSeq: 1, hlc: HLCTimestamp(wallMillis: 1_000, counter: 0), table: "kpi_snapshots", recordID: "d1:sla:day:2026-11-16",
                   op: .upsert, fields: ["node": "d1", "path": .string(path)])
        }
        let judge = { (change: Change, reach: RouteReach?) in
            PushScope.refusal(for: change, pusher: "d1", scope: Scope(tree: Self.tree, node: "d1"), routeBefore: nil, routeAfter: ["d1"], reach: reach)
        }
        #expect(judge(snapshot("hq/fr/d1"), RouteReach(tree: Self.tree))?.code == .invalidChange)
        #expect(judge(snapshot("hq/de/d1"), RouteReach(tree: Self.tree)) == nil)
        #expect(judge(snapshot("hq/fr/d1"), nil) == nil, "judged where the tree is known")
        #expect(judge(snapshot("hq/fr/d1"), RouteReach(tree: NodeTree(parents: ["hq": nil, "de": "hq"]))) == nil, "not judged where the tree does not hold the node")
    }

    @Test("the route a change makes: names out of reach refused, a node taken from outside the maker's scope refused unless it keeps the record through another")
    func routeRefusals() {
        let reach = RouteReach(tree: Self.tree)
        let d1 = Scope(tree: Self.tree, node: "d1")
        func refusal(_ change: Change, before: Set<NodeID>?, after: Set<NodeID>) -> ChangeRejection? {
            PushScope.refusal(for: change, pusher: change.origin, scope: Scope(tree: Self.tree, node: change.origin), routeBefore: before, routeAfter: after, reach: reach)
        }
        // The live attack: d1 services d2's customer and names f1 owner and servicer.
        let moved = refusal(Self.change("d1", "customers", ["owning_dealer": "f1", "servicing_dealer": "f1"]), before: ["d1", "d2"], after: ["f1"])
        #expect(moved?.code == .forbidden && moved?.outsideScopeOf == "d1" && moved?.message.contains("to node 'f1'") == true, "\(String(describing: moved))")
        let taken = refusal(Self.change("d1", "customers", ["owning_dealer": "d1"]), before: ["d1", "d2"], after: ["d1"])
        // The node taken from is not named: the stored route may hold one the maker cannot know of.
        #expect(taken?.code == .forbidden && taken?.message.contains("away from a node outside the scope of node 'd1'") == true
                && taken?.message.contains("d2") == false, "\(String(describing: taken))")
        // Across a border too: d1 servicing f1's customer names itself owner.
        let abroad = refusal(Self.change("d1", "customers", ["owning_dealer": "d1"]), before: ["d1", "f1"], after: ["d1"])
        #expect(abroad?.code == .forbidden && abroad?.message.contains("away from a node outside") == true
                && abroad?.message.contains("f1") == false, "\(String(describing: abroad))")
        // A node out of reach above the maker's level may be left out: the dealer moved to fr
        // hands its open task on from de, its old country.
        let moved2 = NodeTree(parents: ["hq": nil, "de": "hq", "fr": "hq", "d1": "fr", "d2": "de", "f1": "fr"])
        #expect(PushScope.refusal(for: Self.change("d1", "tasks", ["assigned_node": "fr"]), pusher: "d1", scope: Scope(tree: moved2, node: "d1"),
                                  routeBefore: ["de", "d1"], routeAfter: ["fr", "d1"], reach: RouteReach(tree: moved2)) == nil)
        // Escalation passed on by the dealer: de leaves the route, and keeps the dialogue through d1.
        #expect(refusal(Self.change("d1", "interactions", ["handling_node": "hq", "allocated_node": "d1"]), before: ["d1", "de"], after: ["d1", "hq"]) == nil)
        // A sibling's hand-over within reach; the maker giving its own record away.
        #expect(refusal(Self.change("d1", "customers", ["servicing_dealer": "d2"]), before: ["d1"], after: ["d1", "d2"]) == nil)
        #expect(refusal(Self.change("d1", "customers", ["owning_dealer": "d2"]), before: ["d1"], after: ["d2"]) == nil)
        // A change writing no route field is not judged by the route it leaves (a stored route
        // can name a node the fields no longer do).
        #expect(refusal(Self.change("d1", "customers", ["phone": "+49"]), before: ["d1", "d2"], after: ["d1"]) == nil)
        // Without `reach`, the route is not judged (the hub passes it; nodes judging their parent do not).
        #expect(PushScope.refusal(for: Self.change("d1", "customers", ["owning_dealer": "f1", "servicing_dealer": "d1"]), pusher: "d1", scope: d1,
                                  routeBefore: nil, routeAfter: ["d1", "f1"]) == nil)
        // Fields copying another record's route (written by any holder) name a node out of
        // reach only as the record they copy holds it, and only when the maker holds that
        // record too: d1 escalating a dialogue f1 made that HQ handed it; d1 recording the
        // consent of f1's customer it services.
        func copying(_ change: Change, after: Set<NodeID>, source: Set<NodeID>?) -> ChangeRejection? {
            PushScope.refusal(for: change, pusher: change.origin, scope: Scope(tree: Self.tree, node: change.origin), routeBefore: nil, routeAfter: after,
                              reach: reach, copiedFromRoute: source)
        }
        let entry = Self.change("d1", "escalations", ["interaction_id": "i-1", "to_node": "de", "originating_node": "f1", "from_node": "d1"])
        #expect(copying(entry, after: ["de", "f1", "d1"], source: ["f1", "d1"]) == nil)
        let event = Self.change("d1", "consent_events", ["customer_id": "c-1", "owning_dealer": "f1", "recorded_by": "d1"])
        #expect(copying(event, after: ["f1", "d1"], source: ["f1", "d1"]) == nil)
        #expect(RouteReach.copiedSource(of: event).map { [$0.table, $0.id] } == ["customers", "c-1"])
        #expect(RouteReach.copiedSource(of: Self.change("d1", "consent_events", ["owning_dealer": "f1"])) == nil)
        // An id that loses the merge (older-stamped than the record's) names nothing.
        #expect(RouteReach.copiedSource(of: event, merged: ["customer_id": "c-9", "owning_dealer": "f1"]) == nil)
        #expect(RouteReach.copiedSource(of: event, merged: ["customer_id": "c-1", "owning_dealer": "f1"]).map(\.id) == "c-1")
        // Forged: the record copied is f1's alone (d1 does not hold it), is not held here, or
        // does not name f1; the change names no record it copies from.
        for source in [["f1"], nil, ["d1", "f2"]] as [Set<NodeID>?] {
            let refused = copying(event, after: ["f1", "d1"], source: source)
            #expect(refused?.code == .forbidden && refused?.message.contains("to node 'f1'") == true, "\(String(describing: source)): \(String(describing: refused))")
            #expect(copying(entry, after: ["de", "f1", "d1"], source: source)?.code == .forbidden)
        }
        #expect(copying(Self.change("d1", "consent_events", ["owning_dealer": "f1", "recorded_by": "d1"]), after: ["f1", "d1"], source: ["f1", "d1"])?.code == .forbidden)
        // Within reach, a copy needs no source: a sibling's customer, or the maker itself.
        #expect(copying(Self.change("d1", "consent_events", ["customer_id": "c-2", "owning_dealer": "d2", "recorded_by": "d1"]), after: ["d2", "d1"], source: nil) == nil)
        let forged = refusal(Self.change("d1", "escalations", ["to_node": "d1", "from_node": "f1"]), before: nil, after: ["d1", "f1"])
        #expect(forged?.message.contains("to node 'f1'") == true, "\(String(describing: forged))")
        // The country hands anywhere; the root too.
        #expect(refusal(Self.change("de", "interactions", ["handling_node": "f1"]), before: ["d1", "d2"], after: ["d1", "f1"]) == nil)
        #expect(refusal(Self.change("hq", "customers", ["owning_dealer": "f1"]), before: ["d2"], after: ["f1"]) == nil)
        // A relayed change is judged by its maker's reach.
        let relayed = PushScope.relayedRefusal(for: Self.change("d1", "leads", ["source_node": "d1", "fulfilling_node": "f1"]),
                                               origins: PushScope.originScopes(of: [Self.change("d1", "leads", [:])], pusher: "de", tree: Self.tree),
                                               pusher: "de", scope: Scope(tree: Self.tree, node: "de"), routeBefore: nil, routeAfter: ["d1", "f1"], reach: reach)
        #expect(relayed?.code == .forbidden && relayed?.outsideScopeOf == "d1", "\(String(describing: relayed))")
    }
}

/// A tenant's tree of nodes (HQ at the root, then countries, then dealers), as plain
/// values. Scope rules live here so they can be tested without a hub.
public struct NodeTree: Sendable, Equatable {
    public let parents: [NodeID: NodeID?]
    /// Derived once: every scope check walks it.
    private let children: [NodeID: [NodeID]]

    public init(parents: [NodeID: NodeID?]) {
        self.parents = parents
        var children: [NodeID: [NodeID]] = [:]
        for (child, parent) in parents {
            if let parent { children[parent, default: []].append(child) }
        }
        self.children = children
    }

    public static func == (l: NodeTree, r: NodeTree) -> Bool { l.parents == r.parents }

    /// `node` and everything below it.
    public func subtree(of node: NodeID) -> Set<NodeID> {
        var result: Set<NodeID> = [node]
        var stack = [node]
        while let next = stack.popLast() {
            for c in children[next] ?? [] where result.insert(c).inserted { stack.append(c) }
        }
        return result
    }

    /// True for the root (HQ), which sees every record of its tenant.
    public func isRoot(_ node: NodeID) -> Bool {
        parents[node].map { $0 == nil } ?? false
    }

    /// The nodes above `node`, its parent first, up to the root.
    public func ancestors(of node: NodeID) -> [NodeID] {
        var out: [NodeID] = []
        var current = node
        while let p = parents[current] ?? nil, out.count < 64 {
            out.append(p)
            current = p
        }
        return out
    }

    /// The child of `ancestor` whose subtree holds `node`: whom `ancestor` feeds `node`'s
    /// records through. Nil for `ancestor` itself and for nodes outside its subtree.
    public func child(of ancestor: NodeID, toward node: NodeID) -> NodeID? {
        guard node != ancestor else { return nil }
        var current = node
        var steps = 0
        while let parent = parents[current] ?? nil, steps < 64 {
            if parent == ancestor { return current }
            current = parent
            steps += 1
        }
        return nil
    }

    /// The level of `node`: 1 for the root, 2 for its children, …
    public func depth(of node: NodeID) -> Int {
        path(of: node).split(separator: "/").count
    }

    /// The path from the root down to `node`, e.g. `hq/de/dealer-042`.
    public func path(of node: NodeID) -> String {
        var parts = [node.rawValue]
        var current = node
        var guardCount = 0
        while let p = parents[current] ?? nil, guardCount < 64 {
            parts.append(p.rawValue)
            current = p
            guardCount += 1
        }
        return parts.reversed().joined(separator: "/")
    }
}

/// Who may see a record: a node sees a record routed to it or to any node below it.
public struct Scope: Sendable, Equatable {
    /// nil: everything (the tenant root).
    public let nodes: Set<NodeID>?

    public static let everything = Scope(nodes: nil)

    public init(nodes: Set<NodeID>?) { self.nodes = nodes }

    public init(tree: NodeTree, node: NodeID) {
        nodes = tree.isRoot(node) ? nil : tree.subtree(of: node)
    }

    public func contains(route: Set<NodeID>) -> Bool {
        guard let nodes else { return true }
        return !nodes.isDisjoint(with: route)
    }
}

import TiersyncCore
import TiersyncStorage

/// An administrator whose session or API token checked out, with their tenant's tree as of
/// the request: every admin route scopes by it.
public struct AdminCaller: Sendable {
    public var user: AdminUser
    /// The SHA-256 (hex) of the secret they presented: logging out revokes it.
    public var tokenDigest: String
    public var kind: AdminTokenKind
    /// The CSRF token of their session (nil for an API token, which is not a cookie).
    public var csrfToken: String?
    public var tree: NodeTree
    /// The nodes they administer: their scope node and everything below it.
    public var subtree: Set<NodeID>

    /// An administrator of the whole tenant (scope: its root).
    public var isTenantWide: Bool { tree.isRoot(user.scope) }

    /// The nodes whose names they may read: their subtree and the nodes above it.
    public var visibleNodes: Set<NodeID> { subtree.union(tree.ancestors(of: user.scope)) }

    /// Every role reads; the others are granted.
    public func has(_ role: AdminRole) -> Bool {
        role == .viewer || user.roles.contains(role)
    }

    /// Who they are in the audit log.
    var actor: String { user.name }
}

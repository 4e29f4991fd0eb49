// A node's role in its tenant's tree, as the hub's catalog stores it (`nodes.role`,
// `enrollment_tokens.role`) and the wire carries it (`WhoAmIResponse.role`,
// `DirectoryResponse.Node.role`, both plain strings): the root is HQ, the deepest level
// holds dealers (an insurer's agents), the level between them countries.

/// A node's role; the raw value is the stored and transmitted text. Never change one:
/// catalogs and older nodes hold these strings.
public enum NodeRole: String, Sendable, Codable, CaseIterable {
    case hq
    case country
    case dealer
}

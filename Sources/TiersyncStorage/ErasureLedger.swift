import TiersyncCore

/// One replica's acknowledgement of an erasure, as HQ received it (``DomainSchema/erasureAcks``).
public struct ErasureAcknowledgement: Sendable, Equatable, Codable {
    public var node: NodeID
    public var acknowledgedAt: String
    public var records: Int64
    public var logEntries: Int64
    public var unsentDropped: Int64
    public var refused: Int64
    public var digest: String
}

/// HQ's ledger of one erasure request: what was asked, which replicas held the data (the
/// nodes the data was routed to at HQ, with their ancestors), and which acknowledged.
public struct ErasureLedgerEntry: Sendable, Equatable, Codable {
    public var erasureID: String
    public var subjectTable: String
    public var subjectID: String
    public var requestedBy: String
    public var requestedAt: String
    /// The nodes the erased data was routed to at this store (the marker's route).
    public var routedTo: [NodeID]
    public var acknowledgements: [ErasureAcknowledgement]

    /// Every replica that held the data: the nodes it was routed to, their ancestors and the
    /// root, as `tree` places them (a node no longer in the tree stands for itself).
    public func replicas(in tree: NodeTree) -> [NodeID] {
        var nodes = Set(tree.parents.compactMap { $0.value == nil ? $0.key : nil })
        for node in routedTo {
            nodes.insert(node)
            nodes.formUnion(tree.ancestors(of: node))
        }
        return nodes.sorted()
    }

    /// The replicas that have not acknowledged yet.
    public func outstanding(in tree: NodeTree) -> [NodeID] {
        let acked = Set(acknowledgements.map(\.node))
        return replicas(in: tree).filter { !acked.contains($0) }
    }

    /// The ledger from the marker and acknowledgement records a store holds (the same for
    /// every engine): markers with their route, acknowledgements with their values.
    public static func build(markers: [(id: String, values: [String: FieldValue], route: Set<NodeID>)],
                             acknowledgements: [[String: FieldValue]]) -> [ErasureLedgerEntry] {
        var acks: [String: [ErasureAcknowledgement]] = [:]
        for values in acknowledgements {
            func int(_ f: Erasure.AckField) -> Int64 { if case .int(let i) = values[f.rawValue] { i } else { 0 } }
            func text(_ f: Erasure.AckField) -> String { values[f.rawValue]?.stringValue ?? "" }
            guard let erasure = values[Erasure.AckField.erasureID.rawValue]?.stringValue,
                  let node = values[Erasure.AckField.node.rawValue]?.stringValue else { continue }
            acks[erasure, default: []].append(ErasureAcknowledgement(
                node: NodeID(unchecked: node), acknowledgedAt: text(.acknowledgedAt), records: int(.records), logEntries: int(.logEntries),
                unsentDropped: int(.unsentDropped), refused: int(.refused), digest: text(.digest)))
        }
        return markers.map { marker in
            func text(_ f: Erasure.MarkerField) -> String { marker.values[f.rawValue]?.stringValue ?? "" }
            return ErasureLedgerEntry(erasureID: marker.id, subjectTable: text(.subjectTable), subjectID: text(.subjectID),
                                      requestedBy: text(.requestedBy), requestedAt: text(.requestedAt), routedTo: marker.route.sorted(),
                                      acknowledgements: (acks[marker.id] ?? []).sorted { $0.node < $1.node })
        }.sorted { ($0.requestedAt, $0.erasureID) < ($1.requestedAt, $1.erasureID) }
    }
}

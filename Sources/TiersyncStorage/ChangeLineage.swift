import TiersyncCore

/// Where one change of a record came from, how it travelled, and where it stands here.
public struct ChangeLineage: Sendable, Equatable {
    /// This node's view of a change it holds.
    public enum Upstream: Sendable, Equatable {
        /// Came from the parent: nothing to send.
        case fromParent
        /// This node is its tenant's root (HQ): there is no parent.
        case atRoot
        /// Waiting to be sent to the parent.
        case pending
        /// The parent acknowledged it.
        case acknowledged
        /// The parent refused it; it is re-sent at `nextTryMillis`.
        case refused(code: String, reason: String, nextTryMillis: UInt64)
    }

    public var change: Change
    public var seq: Int64
    public var source: ChangeSource
    public var receivedFrom: NodeID?
    public var receivedAtMillis: UInt64
    public var upstream: Upstream

    public init(change: Change, seq: Int64, source: ChangeSource, receivedFrom: NodeID?, receivedAtMillis: UInt64, upstream: Upstream) {
        self.change = change
        self.seq = seq
        self.source = source
        self.receivedFrom = receivedFrom
        self.receivedAtMillis = receivedAtMillis
        self.upstream = upstream
    }
}

/// A record's trace at one store: the changes it holds for the record, oldest first, one
/// page of them, and the record's route (whose subtrees may see it), for scope checks.
public struct RecordTrace: Sendable, Equatable {
    /// The nodes the record is routed to (the union over tables when the id was looked up
    /// in every table); empty when the store holds no such record.
    public var route: Set<NodeID>
    public var changes: [ChangeLineage]
    /// The log position to continue after, when more changes follow.
    public var next: Int64?

    public init(route: Set<NodeID>, changes: [ChangeLineage], next: Int64?) {
        self.route = route
        self.changes = changes
        self.next = next
    }
}

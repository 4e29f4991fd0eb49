import TiersyncCore

/// Where a logged change came from, relative to this node.
public enum ChangeSource: String, Sendable, Codable {
    /// Written here.
    case local
    /// Received from a node below (pushed to this node).
    case child
    /// Received from this node's parent (pulled).
    case parent
}

/// Who a node store belongs to: set once, when the node enrolls (or the hub creates a tenant).
public struct NodeIdentity: Sendable, Equatable, Codable {
    public var tenant: TenantID
    public var node: NodeID
    public var parent: NodeID?

    public init(tenant: TenantID, node: NodeID, parent: NodeID?) {
        self.tenant = tenant
        self.node = node
        self.parent = parent
    }
}

/// A local write requested by a person or program on this node.
public struct RecordWrite: Sendable, Equatable {
    public var table: String
    public var id: String
    public var op: Change.Operation
    public var fields: [String: FieldValue]

    public init(table: String, id: String, op: Change.Operation, fields: [String: FieldValue]) {
        self.table = table
        self.id = id
        self.op = op
        self.fields = fields
    }

    public static func upsert(_ table: String, id: String, _ fields: [String: FieldValue]) -> RecordWrite {
        RecordWrite(table: table, id: id, op: .upsert, fields: fields)
    }

    public static func delete(_ table: String, id: String) -> RecordWrite {
        RecordWrite(table: table, id: id, op: .delete, fields: [:])
    }
}

/// One entry of the change log.
public struct LoggedChange: Sendable, Equatable {
    public var seq: Int64
    public var change: Change
    public var source: ChangeSource
    public var receivedFrom: NodeID?
    public var receivedAtMillis: UInt64

    public init(seq: Int64, change: Change, source: ChangeSource, receivedFrom: NodeID?, receivedAtMillis: UInt64) {
        self.seq = seq
        self.change = change
        self.source = source
        self.receivedFrom = receivedFrom
        self.receivedAtMillis = receivedAtMillis
    }
}

/// A record as stored: its replication state and the nodes it is routed to.
public struct StoredRecord: Sendable, Equatable {
    public var table: String
    public var id: String
    public var state: RecordState
    public var route: Set<NodeID>

    public init(table: String, id: String, state: RecordState, route: Set<NodeID>) {
        self.table = table
        self.id = id
        self.state = state
        self.route = route
    }
}

/// A kept conflict: a concurrent edit that lost.
public struct ConflictRecord: Sendable, Equatable, Codable {
    public var id: Int64
    public var table: String
    public var recordID: String
    public var conflict: FieldConflict
    public var detectedAtMillis: UInt64

    public init(id: Int64, table: String, recordID: String, conflict: FieldConflict, detectedAtMillis: UInt64) {
        self.id = id
        self.table = table
        self.recordID = recordID
        self.conflict = conflict
        self.detectedAtMillis = detectedAtMillis
    }
}

/// A refused change, held for an admin with its reason.
public struct QuarantinedChange: Sendable, Equatable, Codable {
    public var id: Int64
    public var origin: NodeID
    public var originSeq: Int64
    public var receivedFrom: NodeID
    public var receivedAtMillis: UInt64
    public var code: String
    public var reason: String
    /// The change as received (JSON).
    public var change: String

    public init(id: Int64, origin: NodeID, originSeq: Int64, receivedFrom: NodeID, receivedAtMillis: UInt64, code: String, reason: String, change: String) {
        self.id = id
        self.origin = origin
        self.originSeq = originSeq
        self.receivedFrom = receivedFrom
        self.receivedAtMillis = receivedAtMillis
        self.code = code
        self.reason = reason
        self.change = change
    }
}

/// What applying a batch of received changes did.
public struct IncomingReport: Sendable, Equatable {
    public var applied = 0
    public var duplicates = 0
    public var rejected: [RejectedChange] = []
    public var conflicts = 0
    /// For changes pushed by a child (`ChangeSource.child`): the highest sequence of each of
    /// the batch's origins the store held before it (``HubTenantStore/highestSeqs(of:)`` read
    /// in the batch's transaction): a pusher whose earlier batches are missing learns the hub
    /// was restored from an older backup. Empty for other sources on SQLite.
    public var heldBefore: [NodeID: Int64] = [:]
    public init() {}
}

/// What a gate sees of one incoming change before it is committed.
public struct GateContext: Sendable {
    public var change: Change
    public var sender: NodeID
    /// The record's route before the change; nil when the record is new here.
    public var routeBefore: Set<NodeID>?
    /// The record's route once the change is applied.
    public var routeAfter: Set<NodeID>
    /// True when the question is whether `change`, an erasure request, may erase a record
    /// routed `routeAfter` (judged by the scope of the node that asked for it, not of the
    /// node relaying it).
    public var erasing: Bool
    /// The route held here of the record whose route the change's copied route fields copy
    /// (``RouteReach/copiedSource(of:)``: an escalation entry's dialogue, a consent event's
    /// customer); nil when the change copies none or the record is not held here.
    public var copiedFromRoute: Set<NodeID>?

    public init(change: Change, sender: NodeID, routeBefore: Set<NodeID>?, routeAfter: Set<NodeID>, erasing: Bool = false,
                copiedFromRoute: Set<NodeID>? = nil) {
        self.change = change
        self.sender = sender
        self.routeBefore = routeBefore
        self.routeAfter = routeAfter
        self.erasing = erasing
        self.copiedFromRoute = copiedFromRoute
    }
}

/// A check the receiver runs on each incoming change inside the applying transaction
/// (the hub uses it for scope authorization). Returning a rejection quarantines the change.
public typealias ChangeGate = @Sendable (GateContext) -> ChangeRejection?

/// The gate a node runs on changes from its parent: it trusts the parent's judgement of
/// every change but one kind. What an erasure request erases is judged by the scope of the
/// node that asked (``PushScope``), at every tier: a parent keeps a request it did not act on
/// (its subject outside the asker's scope, answered as for a subject it does not hold), and a
/// node fetching its scope again from that parent (a re-bootstrap, a restored store) would
/// otherwise erase what the parent kept.
public enum ParentGate {
    /// Judges erasure requests by `scopes`, the scopes of the nodes that asked, where this node
    /// knows them (its own, and a country's those of its subtree); for a node not in
    /// `scopes` the parent's judgement stands. nil when there is nothing to judge.
    public static func erasures(judgedBy scopes: [NodeID: Scope]) -> ChangeGate? {
        guard !scopes.isEmpty else { return nil }
        return { context in
            guard context.erasing, let scope = scopes[context.change.origin] else { return nil }
            return PushScope.refusal(for: context.change, pusher: context.change.origin, scope: scope,
                                     routeBefore: context.routeBefore, routeAfter: context.routeAfter)
        }
    }

    /// The nodes that asked for the erasures among `changes`, whose scopes
    /// ``erasures(judgedBy:)`` needs.
    public static func requesters(in changes: [Change]) -> Set<NodeID> {
        var found: Set<NodeID> = []
        for change in changes where change.table == DomainSchema.erasures.name { found.insert(change.origin) }
        return found
    }
}

/// Row counts for status displays.
public struct StoreCounts: Sendable, Equatable, Codable {
    public var records: [String: Int]
    public var changes: Int
    public var conflicts: Int
    public var quarantined: Int

    public init(records: [String: Int], changes: Int, conflicts: Int, quarantined: Int) {
        self.records = records
        self.changes = changes
        self.conflicts = conflicts
        self.quarantined = quarantined
    }
}

/// A feed page written as the wire's JSON (``NodeStore/encodedFeed(after:scope:excluding:limit:)``).
public struct EncodedPullPage: Sendable {
    /// How many changes the page carries.
    public let count: Int
    public let nextCursor: Int64
    public let more: Bool
    public let head: Int64
    /// The page as ``PullResponse`` JSON.
    public let json: [UInt8]
    /// The purge floor read with the page (``RebootstrapRequired``), by an engine that reads
    /// it there (PostgreSQL, where another hub process may have raised it); 0 otherwise.
    public let floor: Int64

    public init(count: Int, nextCursor: Int64, more: Bool, head: Int64, json: [UInt8], floor: Int64 = 0) {
        self.count = count
        self.nextCursor = nextCursor
        self.more = more
        self.head = head
        self.json = json
        self.floor = floor
    }
}

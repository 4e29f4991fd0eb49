import TiersyncCore
import TiersyncKPI

/// What a hub needs of one tenant's store to serve the sync routes: receive pushes, serve
/// the feed, hand out governance, report rollout status and KPIs. Every requirement is
/// async, and an engine must not block the caller's thread on I/O (the hub calls it from
/// request handlers on the cooperative pool).
///
/// The SQLite engine (`NodeStore`, TiersyncStore) implements it for the embedded hub and
/// for a country node's relay; a second engine implements the same protocol, and the
/// server knows only this one.
public protocol HubTenantStore: AnyObject, Sendable {
    // MARK: Changes

    /// Applies changes received from `sender` in one transaction: each once (by origin and
    /// sequence), or quarantined with its reason; none blocks another. `gate` judges each
    /// change against the record's route before and after it; `cursor` is stored in the
    /// same transaction.
    func applyIncoming(_ changes: [Change], from sender: NodeID, source: ChangeSource, checkSkew: Bool,
                       gate: ChangeGate?, cursor: (name: String, value: Int64)?, wallMillis: UInt64) async throws -> IncomingReport

    /// See the default implementation: engines that purge their log keep this ledger.
    func notePulled(by node: NodeID, through cursor: Int64) async
    /// See the default implementation.
    func retentionFloor() async throws -> Int64
    /// Purges what no replica needs any more (``RetentionPolicy``; docs/PRIVACY.md,
    /// "Bounded storage"): superseded log entries every child fed here has pulled, and
    /// tombstones older than the horizon. `tree` places the children (nil: none).
    func compact(policy: RetentionPolicy, tree: NodeTree?, nowMillis: UInt64, batch: Int) async throws -> CompactionReport

    /// The changes refused on arrival and kept with their reasons, oldest first.
    func quarantinedChanges(limit: Int) async throws -> [QuarantinedChange]

    /// Quarantined changes with ids above `afterID`, oldest first, at most `limit`: a page.
    func quarantinedChanges(afterID: Int64, limit: Int) async throws -> [QuarantinedChange]

    /// Removes one quarantined change (an operator discarded it) and returns it; nil when
    /// there is no such id. Its origin's agent keeps retrying it until refused for good.
    func discardQuarantined(id: Int64) async throws -> QuarantinedChange?

    /// Kept conflicts with ids above `afterID`, oldest first, at most `limit`, each with
    /// the route of its record now (who holds it: what scopes the conflict).
    func conflicts(afterID: Int64, limit: Int) async throws -> [(conflict: ConflictRecord, route: Set<NodeID>)]

    /// The changes held for records with `recordID` (in `table`, or in any table) after log
    /// position `after`, oldest first, at most `limit`, with the hops each took; and the
    /// record's route (what scopes the trace). An unknown table holds nothing.
    func trace(recordID: String, table: String?, after: Int64, limit: Int) async throws -> RecordTrace

    /// Writes records as the hub's own node (an ordinary edit, logged and synced like any):
    /// how an administrator's resolution of a conflict reaches every replica. Returns the
    /// changes made. An engine without a local write path throws ``StoreError/invalidArgument(_:)``.
    func writeAsHub(_ writes: [RecordWrite]) async throws -> [Change]

    /// How many changes sit in quarantine and how many lost edits are kept as conflicts:
    /// what metrics and operators watch grow. Two counts, not the rows.
    func attentionCounts() async throws -> AttentionCounts

    /// Throws unless this store can be written right now (readiness). Writes nothing.
    func probeWritable() async throws

    /// One page of the change feed after `cursor` for `scope`, pre-encoded as the pull
    /// route's JSON body, with the log's newest history (`history`, ``LogHistoryStanding``)
    /// read in the same snapshot as the page or after it: a history begun later has a floor
    /// of at least the page's head.
    func encodedFeed(after cursor: Int64, scope: Scope, excluding: NodeID?, limit: Int) async throws -> EncodedPullPage

    /// Where the log history a node names with its cursor stands in this store: the pull
    /// route refuses a cursor counting positions of a history the store lost
    /// (``LogHistoryLost``).
    func logHistoryStanding(_ history: String) async throws -> LogHistoryStanding

    /// The newest entry of the change log (0 when empty): a watcher notices writes made
    /// by other processes when it moves.
    func feedHead() async throws -> Int64

    /// The highest sequence of `node`'s own changes held here (what an enrolling node resumes after).
    func highestSeq(of node: NodeID) async throws -> Int64

    /// ``highestSeq(of:)`` of each of `nodes` (a push's origins, a subtree), at once.
    func highestSeqs(of nodes: Set<NodeID>) async throws -> [NodeID: Int64]

    /// A child holds `node`'s changes up to `held`. When `node` is this store's own node and
    /// that is above every number the store has used (it was restored from an older
    /// backup), its next own change is numbered after it, not like one the child holds and
    /// would refuse. Raised by at most ``HubSequence/maximumAdoptedJump`` above what the
    /// store holds, so a child cannot use up the store's numbers. Other nodes: ignored.
    func adoptOwnSequence(_ held: Int64, of node: NodeID) async throws

    /// The newest notice kept for `child` of a change it sent that a node above this one
    /// refused for good (``UpstreamRefusal``); nil without one. Read on every pull.
    func newestUpstreamRefusal(via child: NodeID) async throws -> Int64?

    /// The notices kept for `child` numbered after `after`, oldest first, at most `limit`.
    func upstreamRefusals(via child: NodeID, after: Int64, limit: Int) async throws -> UpstreamRefusalsResponse

    // MARK: Governance

    /// The document of `kind` with the highest sequence (the rollout in force).
    func latestGovernanceDocument(ofKind kind: String) async throws -> StoredGovernanceDocument?

    /// The documents of `kind`: all of them (`keys` nil), or those with these keys.
    func governanceDocuments(ofKind kind: String, keys: [String]?) async throws -> [StoredGovernanceDocument]

    /// Stores (or replaces) one signed document: what HQ publishes, from any hub process.
    func storeGovernanceDocument(_ document: StoredGovernanceDocument, nowMillis: UInt64) async throws

    /// Stores a document only if none of its kind and key is stored: false when one is (a
    /// release or rollout number another publisher took meanwhile). Published documents
    /// are never replaced.
    func storeNewGovernanceDocument(_ document: StoredGovernanceDocument, nowMillis: UInt64) async throws -> Bool

    /// Changes whenever a governance document is stored (long-polls wake on it).
    func governanceDocumentsStamp() async throws -> String

    /// Live records of a table, ordered by id (the `governance_status` reports).
    func liveRecords(inTable table: String) async throws -> [(id: String, values: [String: FieldValue])]

    /// The erasure requests this store holds, with the acknowledgements it received
    /// (``ErasureLedgerEntry``): HQ's ledger.
    func erasureLedger() async throws -> [ErasureLedgerEntry]

    // MARK: KPIs

    /// The store's node identity, if it is enrolled or is a tenant's root.
    func storeIdentity() async throws -> NodeIdentity?
    /// A `ts_meta`-style setting of the store.
    func setting(_ key: String) async throws -> String?
    /// Makes the store count `adoption`'s KPIs (nil: none); true when it recounted.
    func adoptKPIs(_ adoption: KPIAdoption?, source: String?) async throws -> Bool
    /// Adopts the KPIs of the governance the node applied last; true when it recounted.
    func adoptKPIsOfAppliedGovernance() async throws -> Bool
    /// The KPI table of `viewer`'s subtree, with nodes' paths from the root.
    func kpiReport(period: KPIPeriodKind, byNode: Bool, viewer: String?, paths: [String: [String]]) async throws -> KPIResponse
}

extension HubTenantStore {
    /// Notes that a child holds everything of its scope through `cursor` (the acknowledgement
    /// ledger bounded storage purges by, ``RetentionPolicy``). An engine that does not purge
    /// ignores it.
    public func notePulled(by node: NodeID, through cursor: Int64) async {}

    /// The log position a child's pull cursor must have passed to continue without
    /// re-bootstrapping (``RebootstrapRequired``); 0 for an engine that purges nothing.
    public func retentionFloor() async throws -> Int64 { 0 }

    /// None: a store that never relays its children's changes to a parent (a hub at the root).
    public func newestUpstreamRefusal(via child: NodeID) async throws -> Int64? { nil }

    /// None, as ``newestUpstreamRefusal(via:)``.
    public func upstreamRefusals(via child: NodeID, after: Int64, limit: Int) async throws -> UpstreamRefusalsResponse {
        UpstreamRefusalsResponse(refusals: [], more: false)
    }

    /// One ``highestSeq(of:)`` per node: right for a store where each is a local lookup.
    public func highestSeqs(of nodes: Set<NodeID>) async throws -> [NodeID: Int64] {
        var out: [NodeID: Int64] = [:]
        for node in nodes { out[node] = try await highestSeq(of: node) }
        return out
    }
}

/// What in a tenant's store needs an operator's attention (``HubTenantStore/attentionCounts()``).
public struct AttentionCounts: Sendable, Equatable {
    /// Changes refused on arrival and kept with their reason.
    public var quarantined: Int
    /// Concurrent edits that lost, kept for review.
    public var conflicts: Int
    /// Bytes the quarantine keeps (``QuarantineQuota``'s measure).
    public var quarantineBytes: Int64
    /// Refusals answered but not kept, the quarantine's quota being full, since the store began.
    public var quarantineUnkept: Int64

    public init(quarantined: Int, conflicts: Int, quarantineBytes: Int64 = 0, quarantineUnkept: Int64 = 0) {
        self.quarantined = quarantined
        self.conflicts = conflicts
        self.quarantineBytes = quarantineBytes
        self.quarantineUnkept = quarantineUnkept
    }
}

/// Bounds on the numbers a store adopts from what other nodes report of its own changes.
public enum HubSequence {
    /// The most a report may raise a store's own numbering above what it holds: more than a
    /// restore loses in practice, and a node reporting a made-up number cannot use up the
    /// 2^53 a store may number.
    public static let maximumAdoptedJump: Int64 = 1_000_000
}

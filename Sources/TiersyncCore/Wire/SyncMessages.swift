/// Request and response bodies of the sync protocol, shared by hub and agent. The
/// protocol version is in the path (`/v1/...`); fields are only ever added.

/// `POST /v1/push`: a node sends changes from its log, oldest first.
public struct PushRequest: Codable, Sendable {
    /// The tenant the pusher believes it belongs to; a mismatch with its credential is refused.
    public var tenant: TenantID?
    /// The pushing node's log position of the last change in `changes`; echoed back as the
    /// acknowledgement once the batch is durable.
    public var through: Int64
    public var changes: [Change]

    public init(tenant: TenantID? = nil, through: Int64, changes: [Change]) {
        self.tenant = tenant
        self.through = through
        self.changes = changes
    }
}

/// The answer to a push. Every change in the batch is accounted for: applied, already
/// known, or quarantined with its reason. The batch is durable when this is sent.
public struct PushResponse: Codable, Sendable {
    public var acknowledgedThrough: Int64
    public var applied: Int
    public var duplicates: Int
    public var rejected: [RejectedChange]
    /// The hub's wall clock (ms since the epoch), so an agent can warn about its own skew.
    public var hubTimeMillis: UInt64
    /// For each origin of the batch's changes, the highest sequence the receiver held of
    /// it before applying the batch (0 when none). Below what it acknowledged earlier, the
    /// receiver was restored from an older backup: the pusher re-sends from there.
    /// Absent from hubs older than this field.
    public var held: [String: Int64]?

    public init(acknowledgedThrough: Int64, applied: Int, duplicates: Int, rejected: [RejectedChange], hubTimeMillis: UInt64,
                held: [String: Int64]? = nil) {
        self.acknowledgedThrough = acknowledgedThrough
        self.applied = applied
        self.duplicates = duplicates
        self.rejected = rejected
        self.hubTimeMillis = hubTimeMillis
        self.held = held
    }
}

/// One change the receiver refused, and why.
public struct RejectedChange: Codable, Sendable, Hashable {
    public var origin: NodeID
    public var originSeq: Int64
    public var table: String
    public var recordID: String
    public var code: ChangeRejection.Code
    public var message: String
    /// For `clock_skew`: re-stamp the change to no later than this (the receiver's clock,
    /// ms since the epoch) before sending it again (``ChangeRejection/restampAtMillis``).
    public var restampAtMillis: UInt64?
    /// For `erased`: the erasure and the erased record (``ChangeRejection/erased``).
    public var erased: ErasedReference?
    /// For `forbidden`: the node whose scope the record lies outside
    /// (``ChangeRejection/outsideScopeOf``); absent when the change's origin is outside the
    /// pusher's subtree, and from hubs before it was added.
    public var outsideScopeOf: NodeID?

    public init(change: Change, rejection: ChangeRejection) {
        origin = change.origin
        originSeq = change.originSeq
        // The sender's own strings, repeated to it: clipped (a valid table name and record
        // id are far shorter), so a refusal is never much larger than what it refuses.
        table = change.table.clipped(toUTF8: Schema.maxTableNameBytes)
        recordID = change.recordID.clipped(toUTF8: 128)
        code = rejection.code
        message = rejection.message.clipped(toUTF8: 1_000)
        restampAtMillis = rejection.restampAtMillis
        erased = rejection.erased
        outsideScopeOf = rejection.outsideScopeOf
    }
}

/// A change the caller sent up that a node above its parent refused for good, as the parent
/// passes it down (`GET /v1/refusals`). The parent relayed the change, then dropped it when
/// its own parent refused it as outside the scope of the node that made it
/// (``RejectedChange/outsideScopeOf``): the maker's copy of the write can never land, and a
/// relaying node's copy can never be passed on. The caller drops it in turn (its maker sets
/// it aside in its quarantine), so no copy of it goes on deciding the record anywhere.
public struct UpstreamRefusal: Codable, Sendable, Hashable {
    /// The parent's number for the notice, rising: the caller asks for those after the
    /// highest it has handled (`after=`).
    public var id: Int64
    /// The change (by origin and sequence) and the refusal, as the node above gave it.
    public var refusal: RejectedChange

    public init(id: Int64, refusal: RejectedChange) {
        self.id = id
        self.refusal = refusal
    }

    /// The response header of a pull naming the newest notice for the caller, when the
    /// parent holds any: the caller asks for them when it is newer than the last it handled.
    public static let pullHeader = "Tiersync-Refusals"
}

/// `GET /v1/refusals?after=N&limit=M`: the notices for the caller after `after`, oldest first.
public struct UpstreamRefusalsResponse: Codable, Sendable {
    public var refusals: [UpstreamRefusal]
    /// True when more notices wait beyond this page.
    public var more: Bool

    /// The most notices one answer holds (`limit=`; 100 by default).
    public static let maxPage = 500

    public init(refusals: [UpstreamRefusal], more: Bool) {
        self.refusals = refusals
        self.more = more
    }
}

/// `GET /v1/pull?cursor=N&limit=M&wait=S`: changes in the caller's scope after `cursor`.
public struct PullResponse: Codable, Sendable {
    public var changes: [Change]
    /// The cursor for the next pull. It advances past changes outside the caller's scope
    /// too, so a quiet scope never rescans them.
    public var nextCursor: Int64
    /// True when more changes are waiting beyond this page.
    public var more: Bool
    /// The parent's newest log position: with `nextCursor`, how far a catch-up has come.
    public var head: Int64?
    /// The parent's log history `nextCursor` belongs to (``isValidHistory(_:)``): the node
    /// sends it back with the cursor (`history=`), and a parent restored from an older
    /// backup knows by it that the cursor counts positions of a log it lost, even once its
    /// head has grown past the cursor again (docs/OPERATIONS.md). Absent from parents older
    /// than this field, and before the parent's log has one.
    public var history: String?

    public init(changes: [Change], nextCursor: Int64, more: Bool, head: Int64? = nil, history: String? = nil) {
        self.changes = changes
        self.nextCursor = nextCursor
        self.more = more
        self.head = head
        self.history = history
    }

    /// A log history's identity as parents write it: 1 to 32 lowercase hexadecimal
    /// digits. Anything else is not one (a node ignores it; a parent refuses it), so it
    /// goes into a query string and a store as it is.
    public static func isValidHistory(_ text: some StringProtocol) -> Bool {
        (1...32).contains(text.utf8.count) && text.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
    }
}

/// `POST /v1/enroll`: exchanges a one-time enrollment token for a node credential.
public struct EnrollRequest: Codable, Sendable {
    public var token: String
    /// Set by a country node forwarding a dealer's enrollment: the token must name it as
    /// the parent, or it is refused without being used up.
    public var via: NodeID?
    /// Set by a node enrolling again with the store it has (its credential revoked or lost):
    /// the node and tenant that store belongs to. A token for another node is refused
    /// without being used up (``EnrollmentError/otherNode(token:store:)``): redeemed, it
    /// would have revoked that node's credential and handed its identity to this store.
    public var tenant: TenantID?
    public var node: NodeID?

    public init(token: String, via: NodeID? = nil, tenant: TenantID? = nil, node: NodeID? = nil) {
        self.token = token
        self.via = via
        self.tenant = tenant
        self.node = node
    }

    /// Whom the token must enroll, when the request says (both fields given).
    public var expected: EnrollmentSubject? {
        guard let tenant, let node else { return nil }
        return EnrollmentSubject(tenant: tenant, node: node)
    }
}

/// The node an enrollment must be for: a store enrolling again keeps its identity.
public struct EnrollmentSubject: Sendable, Hashable {
    public var tenant: TenantID
    public var node: NodeID

    public init(tenant: TenantID, node: NodeID) {
        self.tenant = tenant
        self.node = node
    }
}

public struct EnrollResponse: Codable, Sendable {
    public var tenant: TenantID
    public var node: NodeID
    public var parent: NodeID?
    /// The bearer credential. The hub keeps only its SHA-256; it is shown once.
    public var credential: String
    /// The highest change sequence number the hub already holds from this node: a node
    /// re-enrolling with a new store numbers its changes above it.
    public var highestSeq: Int64?
    /// The tenant's governance release key (base64 Ed25519), if HQ has one: the node
    /// verifies every release and rollout against it.
    public var releaseKey: String?

    public init(tenant: TenantID, node: NodeID, parent: NodeID?, credential: String, highestSeq: Int64? = nil, releaseKey: String? = nil) {
        self.tenant = tenant
        self.node = node
        self.parent = parent
        self.credential = credential
        self.highestSeq = highestSeq
        self.releaseKey = releaseKey
    }
}

/// `GET /v1/whoami`: the authenticated node and its place in the tree.
public struct WhoAmIResponse: Codable, Sendable {
    public var tenant: TenantID
    public var node: NodeID
    public var parent: NodeID?
    public var role: String
    /// The tenant's governance release key, for nodes enrolled before HQ created it.
    public var releaseKey: String?
    /// The node's place in the tree, from the root down to the node (`[hq, de, dealer-042]`):
    /// how a dealer, which talks only to its country, knows the root's id, so that it can
    /// route a dialogue its rules allocate to HQ. Absent from hubs older than this field.
    public var path: [NodeID]?
    /// Only when asked (`?held=true`): for the caller and every node below it, the highest
    /// change sequence the hub holds from that node (0 when none). An agent compares it
    /// with what the hub acknowledged to it: less means the hub was restored from an older
    /// backup, and the agent re-sends what the hub lost. Keyed by node id (a JSON object).
    /// Absent from hubs older than this field.
    public var held: [String: Int64]?

    public init(tenant: TenantID, node: NodeID, parent: NodeID?, role: String, releaseKey: String? = nil, path: [NodeID]? = nil,
                held: [String: Int64]? = nil) {
        self.tenant = tenant
        self.node = node
        self.parent = parent
        self.role = role
        self.releaseKey = releaseKey
        self.path = path
        self.held = held
    }
}

/// Every error body: a stable code for programs and a message for people.
public struct ErrorResponse: Codable, Sendable {
    public struct Detail: Codable, Sendable {
        public var code: String
        public var message: String
    }

    public var error: Detail

    public init(code: String, message: String) {
        error = Detail(code: code, message: message)
    }
}

/// `GET /v1/directory`: the caller's subtree as the hub knows it, for a country node that
/// serves dealers. Credentials appear as SHA-256 digests only, and only for nodes below
/// the caller.
public struct DirectoryResponse: Codable, Sendable, Equatable {
    public struct Node: Codable, Sendable, Equatable {
        public var id: NodeID
        public var parent: NodeID?
        public var role: String

        public init(id: NodeID, parent: NodeID?, role: String) {
            self.id = id
            self.parent = parent
            self.role = role
        }
    }

    public struct Credential: Codable, Sendable, Equatable {
        public var node: NodeID
        public var sha256: String

        public init(node: NodeID, sha256: String) {
            self.node = node
            self.sha256 = sha256
        }
    }

    /// An administrator of the caller's subtree, so the country serves them the admin API
    /// and the console: their password's slow hash, never the password.
    public struct Admin: Codable, Sendable, Equatable {
        public var name: String
        public var roles: [String]
        public var scope: NodeID
        public var passwordHash: String
        public var disabled: Bool

        public init(name: String, roles: [String], scope: NodeID, passwordHash: String, disabled: Bool) {
            self.name = name
            self.roles = roles
            self.scope = scope
            self.passwordHash = passwordHash
            self.disabled = disabled
        }
    }

    public var tenant: TenantID
    /// The caller, root of the returned subtree.
    public var root: NodeID
    public var nodes: [Node]
    public var credentials: [Credential]
    /// Administrators whose scope is in the subtree (absent from an older hub).
    public var admins: [Admin]?

    public init(tenant: TenantID, root: NodeID, nodes: [Node], credentials: [Credential], admins: [Admin]? = nil) {
        self.tenant = tenant
        self.root = root
        self.nodes = nodes
        self.credentials = credentials
        self.admins = admins
    }
}

/// How far behind one node is, as it measured itself: what waits there to go upward.
/// Nodes report their own with `POST /v1/status`; a country relays its dealers' reports
/// with its own, so HQ sees the lag of every tier. Ages are durations on the measuring
/// node's own clock, never timestamps compared across clocks.
public struct LagReport: Codable, Sendable, Equatable {
    public var node: NodeID
    /// Changes waiting at the node to go to its parent.
    public var pending: Int64
    /// Age of the oldest of them, in milliseconds (0 when none waits).
    public var oldestPendingMillis: Int64
    /// How long before it was sent the node measured this, in milliseconds (0 for a fresh
    /// measurement; a country relaying a dealer's report adds how long it held it).
    public var measuredMillisAgo: Int64
    /// How far the node's clock ran ahead of its parent's (negative: behind), in
    /// milliseconds, as the node last measured it: at its last push, its own clock against
    /// the parent's time in the answer (the answer's transit included, so a few ms ahead is
    /// in step), within ``clockOffsetWindowMillis``; absent when it measured none. HQ shows
    /// it beside the lag, so an operator sees which node's clock is off (issue 12, item 5).
    public var clockOffsetMillis: Int64?

    public init(node: NodeID, pending: Int64, oldestPendingMillis: Int64, measuredMillisAgo: Int64 = 0, clockOffsetMillis: Int64? = nil) {
        self.node = node
        self.pending = pending
        self.oldestPendingMillis = oldestPendingMillis
        self.measuredMillisAgo = measuredMillisAgo
        self.clockOffsetMillis = clockOffsetMillis
    }

    /// How long a measured clock offset is reported: a node that stopped pushing stops
    /// reporting one an hour after its last push.
    public static let clockOffsetWindowMillis: UInt64 = 3_600_000

    /// The largest value any field may carry: 2^53 (exact as a JSON number anywhere), far
    /// beyond any real backlog or age.
    public static let maxValue: Int64 = 1 << 53
}

/// A lag report with a count or age outside `0...LagReport.maxValue`.
public struct InvalidLagReport: Error, Sendable, Equatable {
    public var node: NodeID
}

extension LagReport {
    /// When it was measured on the receiver's clock, the receiver having it at `receivedAtMillis`.
    public func measuredAtMillis(receivedAtMillis now: UInt64) -> UInt64 {
        now - min(now, UInt64(clamping: max(0, measuredMillisAgo)))
    }

    var isInRange: Bool {
        let range: ClosedRange<Int64> = 0...Self.maxValue
        return range.contains(pending) && range.contains(oldestPendingMillis) && range.contains(measuredMillisAgo)
            && clockOffsetMillis.map { (-Self.maxValue...Self.maxValue).contains($0) } != false
    }
}

/// `POST /v1/status`: lag reports for the caller and nodes of its subtree.
public struct StatusRequest: Codable, Sendable, Equatable {
    public var reports: [LagReport]

    public init(reports: [LagReport]) {
        self.reports = reports
    }

    /// The freshest report of each node (the smallest `measuredMillisAgo`), once every
    /// report's numbers are checked (the first out of range is thrown). Scope is the
    /// caller's to check first.
    public func freshestByNode() throws(InvalidLagReport) -> [NodeID: LagReport] {
        var freshest: [NodeID: LagReport] = [:]
        for report in reports {
            guard report.isInRange else { throw InvalidLagReport(node: report.node) }
            if report.measuredMillisAgo < freshest[report.node]?.measuredMillisAgo ?? .max { freshest[report.node] = report }
        }
        return freshest
    }
}

public struct StatusResponse: Codable, Sendable, Equatable {
    /// Reports stored (an older measurement than the one held is kept out).
    public var accepted: Int

    public init(accepted: Int) {
        self.accepted = accepted
    }
}

import Foundation
import Logging
import Synchronization
import TiersyncCore
import TiersyncGovernance
import TiersyncStore

/// What an agent has done so far, for status displays and tests.
public struct AgentStatus: Sendable, Equatable {
    public var pushedChanges = 0
    public var pulledChanges = 0
    public var rejectedChanges = 0
    /// Changes this node sent up that were refused above its parent for good and dropped
    /// here after the parent said so (``UpstreamRefusal``).
    public var refusedAbove = 0
    public var lastPushMillis: UInt64?
    public var lastPullMillis: UInt64?
    public var consecutiveFailures = 0
    public var lastError: String?
    /// Since when exchanges fail (nil while they work), and when the store was last told
    /// (``SyncAgent/contactNoteInterval``).
    public var failingSinceMillis: UInt64?
    var contactNotedAtMillis: UInt64 = 0
    /// The parent's newest log position at the last pull.
    public var parentHead: Int64?
    /// How many times the parent was found restored from an older backup.
    public var parentRestores = 0
    /// How many times the parent asked this node to re-bootstrap (away past its horizon).
    public var rebootstraps = 0
}

/// The parent's log head is below a position this node reached: it was restored.
struct ParentRegressed: Error {
    let head: Int64
    let cursor: Int64
    let seen: Int64
    /// Set when the parent refused the cursor as counting positions of this log history,
    /// which it lost (409 `log_history_lost`); the head figures are then unknown (0).
    var lostHistory: String? = nil
}

/// What a detected restore still asks of each loop.
struct RestoreRecovery {
    /// Resume pushing after this log position (the push loop moves its cursor back).
    var pushFrom: Int64?
    /// Pull again from the start (the pull loop resets its cursor).
    var pullReset = false
}

/// A node's sync agent: pushes its log upward and pulls its scope downward, forever.
///
/// Pushes go out within `localPollInterval` of a local write (made by this process or any
/// other writing the same SQLite file). Pulls long-poll the parent. Both loops retry with
/// backoff while the parent is unreachable. All positions (what the parent acknowledged,
/// where pulling resumes) are stored in the node's database in the transactions that
/// justify them, so `kill -9` at any instant loses nothing and duplicates nothing: a
/// re-sent batch is recognised by its changes' (origin, sequence).
public final class SyncAgent: Sendable {
    public let store: NodeStore
    public let configuration: AgentConfiguration
    let client: ParentClient
    public let identity: NodeIdentity
    let logger: Logger
    private let state = Mutex(AgentStatus())
    /// The parent's node id, as last learned (it changes when the node is moved).
    private let parentNode: Mutex<NodeID>
    /// Called after a pull applied changes (a country node wakes its dealers' long-polls).
    let onPulled: @Sendable () async -> Void
    /// Called after new governance documents were kept (a country wakes its dealers'
    /// governance long-polls).
    let onGovernance: @Sendable () async -> Void
    /// Checks and applies governance releases; see ``GovernanceFollower``.
    public let governance: GovernanceFollower
    /// The token of the governance bundle last received.
    private let governanceToken = Mutex<String?>(nil)
    /// Recovery from a parent restored from an older backup, found by one loop and carried
    /// out by the loop owning each cursor (so a push in flight cannot overwrite a rewind).
    private let restore = Mutex(RestoreRecovery())
    /// The highest log head the parent reported to this process: the restored parent's
    /// head below it is noticed even when the pull cursor is behind it.
    private let headSeen = Mutex<Int64>(0)
    /// Pushes (or retries) on their way: a notice is taken once they are answered
    /// (``takeUpstreamRefusals()``).
    private let pushesInFlight = Mutex(0)
    /// The newest notice of a change refused above the parent that the last pull named
    /// (``takeUpstreamRefusals()``), and the last take that came to nothing (``RefusalOffer``).
    private let refusalsOffered = Mutex(RefusalOffer())
    /// Pull rounds completed (a catch-up, or one long-poll answered): the push loop waits
    /// for one after reaching the parent again, so an erasure decided while the node was
    /// away is applied before anything is pushed (docs/PRIVACY.md).
    private let pullRounds = Mutex<Int>(0)
    /// Set by one loop (push, pull) once the parent answers again after it was out of reach:
    /// the other, asleep in a backoff grown during the outage, tries at once. The push waits
    /// for a pull round first (``waitForPull(after:)``), and waited out the pull's backoff, up
    /// to 30 s (helper 103: a write went up 43 s after its country was back).
    private let parentBack = Mutex(false)
    private let parentBackToPush = Mutex(false)
    /// Records routed away from the node but kept: changes of them were not yet acknowledged.
    private let pendingEviction = Mutex<Set<RecordKey>>([])

    static let pushCursor = NodeStore.parentPushCursor
    static let pullCursor = "pull.parent"
    /// Set once the node's pull has caught up from the start; until then it asks for its own
    /// changes too.
    static let bootstrappedMeta = "pull.bootstrapped"
    /// The parent's log history the pull cursor was handed out under (``PullResponse/history``).
    static let parentHistoryMeta = "pull.history"

    /// Opens an agent for an enrolled store.
    public init(store: NodeStore, configuration: AgentConfiguration, logger: Logger = Logger(label: "tiersync.agent"),
                onPulled: @escaping @Sendable () async -> Void = {},
                onGovernance: @escaping @Sendable () async -> Void = {}) throws {
        guard let identity = try store.identity(), let credential = try store.meta("credential") else {
            throw AgentError.notEnrolled(StoreError.notEnrolled(path: store.path).description)
        }
        self.store = store
        self.configuration = configuration
        self.identity = identity
        self.logger = logger
        self.onPulled = onPulled
        self.onGovernance = onGovernance
        parentNode = Mutex(identity.parent ?? "parent")
        client = try ParentClient(configuration: configuration, credential: credential)
        governance = GovernanceFollower(store: store, identity: identity, parentNode: { [store] in
            (try? store.identity())?.parent ?? identity.parent
        }, logger: logger)
        // The node's own writes follow the governance this agent keeps: a dialogue created
        // through this store (by the application holding it, or a CLI sharing the file,
        // which installs its own) is allocated where it is created.
        if store.writePolicy == nil { store.writePolicy = AllocationPolicy() }
    }

    /// The agent's HTTP client, for node-level calls (directory, enrollment forwarding).
    public var parent: ParentClient { client }

    /// Points an enrolled store at a new parent URL (the node was moved to another
    /// country, or its parent changed address). Both sync positions restart from zero:
    /// the new parent recognises what it already has, so re-sending costs bandwidth but
    /// never duplicates, and the node receives its whole scope from the new parent.
    /// Returns true when the parent changed.
    @discardableResult
    public static func adoptParent(store: NodeStore, url: String) throws -> Bool {
        guard let current = try store.meta("parent_url"), !sameParent(current, url) else { return false }
        for cursor in startingOver.cursors { try store.setCursor(cursor, 0) }
        for key in startingOver.meta { try store.setMeta(key, nil) }
        try store.setMeta("parent_url", url)
        return true
    }

    /// Whether two parent URLs name the same parent: scheme and host without regard to case,
    /// the scheme's default port written or not, and a `/` at the end of the path or not.
    /// Spelled another way, the same parent took its node for a moved one, and its positions
    /// started over (a full pull again; helper 80). Other hosts (`localhost` for
    /// `127.0.0.1`) stay other parents: nothing here can tell they are one.
    public static func sameParent(_ a: String, _ b: String) -> Bool {
        if a == b { return true }
        func key(_ text: String) -> String? {
            guard let url = URLComponents(string: text), let scheme = url.scheme?.lowercased(), let host = url.host?.lowercased(),
                  url.query == nil, url.fragment == nil, url.user == nil, url.password == nil else { return nil }
            let port = url.port ?? (scheme == "https" ? 443 : scheme == "http" ? 80 : -1)
            // As written, not decoded: `a%2Fb` is not `a/b` to a proxy routing on the path.
            var path = url.percentEncodedPath
            while path.hasSuffix("/") { path.removeLast() }
            return "\(scheme)://\(host):\(port)\(path)"
        }
        guard let left = key(a), let right = key(b) else { return false }
        return left == right
    }

    /// What a node starts over with a new parent (``adoptParent(store:url:)``, and an
    /// enrollment under another URL): its cursors, what it learned of the old parent's log,
    /// and its place in the tree, which is the new parent's to say (whoami at start; the old
    /// one would have its rules plan its old country's contacts).
    static let startingOver = (cursors: [pushCursor, pullCursor], meta: [parentHistoryMeta, bootstrappedMeta, AllocationPolicy.pathMeta])

    /// Exchanges an enrollment token for a credential and stores both identity and
    /// credential in the node's database.
    ///
    /// A store that is enrolled already (its credential revoked or lost) enrolls again as the
    /// node it belongs to, keeping everything it holds: the hub refuses a token for another
    /// node without using it up.
    @discardableResult
    public static func enroll(store: NodeStore, configuration: AgentConfiguration, token: String) async throws -> NodeIdentity {
        let client = try ParentClient(configuration: configuration, credential: nil)
        do {
            let expecting = try store.identity().map { EnrollmentSubject(tenant: $0.tenant, node: $0.node) }
            let previousURL = try store.meta(MetaKey.parentURL.rawValue)
            let response = try await client.enroll(token: token, expecting: expecting)
            let identity = NodeIdentity(tenant: response.tenant, node: response.node, parent: response.parent)
            // Enrolling again under another parent URL starts over with it (adoptParent's reset).
            let moving = previousURL.map { !sameParent($0, configuration.parentURL) } ?? false
            try store.completeEnrollment(identity, credential: response.credential, parentURL: configuration.parentURL,
                                         highestKnownSeq: response.highestSeq ?? 0,
                                         restarting: moving ? startingOver : nil)
            if let key = response.releaseKey, try store.meta(GovernanceFollower.keyMeta) == nil {
                try store.setMeta(GovernanceFollower.keyMeta, key)
            }
            try await client.shutdown()
            return identity
        } catch {
            try? await client.shutdown()
            throw error
        }
    }

    public var status: AgentStatus { state.withLock { $0 } }

    /// Releases the HTTP client. `run()` does this itself when it ends; call it when the
    /// agent was used step by step (`pushPending`, `pullOnce`) instead.
    public func shutdown() async {
        try? await client.shutdown()
    }

    /// Runs both loops until the task is cancelled, then shuts the agent down.
    public func run() async throws {
        logger.info("agent started", metadata: ["node": "\(identity.node)", "tenant": "\(identity.tenant)", "parent": "\(configuration.parentURL)"])
        // The node may have moved: record its current parent (for lineage and status). The
        // push cursor is read before asking what the parent holds (see `verifyParent`).
        let acknowledged = try? store.cursor(Self.pushCursor)
        let me = try? await client.whoami(held: true, parentHeld: await parentChangesHeld())
        if let me, let acknowledged { try? checkHeld(me, acknowledged: acknowledged, when: "at start") }
        if let me, let parent = me.parent, parent != parentNode.withLock({ $0 }) {
            parentNode.withLock { $0 = parent }
            try? store.setIdentity(NodeIdentity(tenant: identity.tenant, node: identity.node, parent: parent))
        }
        if let key = me?.releaseKey { learnReleaseKey(key) }
        // Where the node stands (root first): allocation routes a dialogue to the node of its level.
        if let path = me?.path, path.last == identity.node {
            try? store.setMeta(AllocationPolicy.pathMeta, path.map(\.rawValue).joined(separator: "/"))
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.pushLoop() }
            group.addTask { await self.pullLoop() }
            if let interval = configuration.rulesInterval {
                group.addTask { await RulesRunner(store: self.store, clock: self.configuration.rulesClock, logger: self.logger).run(every: interval) }
            }
            if configuration.statusInterval != nil {
                group.addTask { await self.statusLoop() }
            }
            if let retention = configuration.retention {
                group.addTask { await self.compactionLoop(retention) }
            }
            if configuration.followGovernance {
                group.addTask { await self.governanceLoop() }
                group.addTask { await self.kpiLoop() }
            }
            await group.waitForAll()
        }
        await shutdown()
    }

    // MARK: Push

    /// Sends everything not yet acknowledged; returns the number of changes sent.
    @discardableResult
    public func pushPending() async throws -> Int {
        pushesInFlight.withLock { $0 += 1 }
        defer { pushesInFlight.withLock { $0 -= 1 } }
        var sent = 0
        var batchSize = configuration.pushBatchSize
        while !Task.isCancelled {
            try applyPushRewind()
            let acked = try store.cursor(Self.pushCursor)
            let batch = try store.upstreamBatch(after: acked, limit: batchSize)
            guard let last = batch.last else { break }
            let response: PushResponse
            let sentAt = configuration.wallClock()
            do {
                response = try await client.push(PushRequest(tenant: identity.tenant, through: last.seq, changes: batch.map(\.change)))
            } catch AgentError.http(413, _, let message) {
                if batchSize > 1 {
                    batchSize = max(1, batchSize / 2)
                    logger.notice("parent refused batch size; retrying smaller", metadata: ["batch": "\(batchSize)"])
                    continue
                }
                // One change alone is too large: set it aside for retries (the limit may be
                // raised) instead of blocking every change behind it.
                let change = batch[0].change
                logger.error("parent refused a single change as too large; set aside for retry",
                             metadata: ["change": "\(change.origin)#\(change.originSeq)", "reason": "\(message)"])
                try store.scheduleRetries([RejectedChange(change: change, rejection: ChangeRejection(.tooLarge, message))])
                try store.advanceCursor(Self.pushCursor, from: acked, to: last.seq)
                continue
            }
            Failpoint.hit("agent.after-push-response")
            guard response.acknowledgedThrough == last.seq else {
                throw AgentError.malformedResponse("parent acknowledged through \(response.acknowledgedThrough), expected \(last.seq)")
            }
            // Earlier batches the parent no longer holds: it was restored from an older
            // backup. This batch is durable there; the next round re-sends from the gap.
            if let held = response.held, let from = try store.pushRewind(held: held, acknowledgedThrough: acked) {
                restoreDetected(pushFrom: from, evidence: [
                    "check": "push", "acknowledged_through": "\(acked)", "resend_after": "\(from)",
                    "parent_holds": "\(held.count == 1 ? "\(held.values.first ?? 0)" : "\(held.count) nodes")",
                ])
            }
            // Unless a notice moved the cursor back meanwhile: the next round sends from there.
            try store.advanceCursor(Self.pushCursor, from: acked, to: response.acknowledgedThrough)
            let rejected = refusals(in: response, of: batch.map(\.change))
            try store.scheduleRetries(rejected)
            await releaseChangesOfMakersGone(rejected)
            await dropRefusedRelays(rejected, of: batch.map(\.change))
            await eraseRefused(rejected, of: batch.map(\.change))
            noteRoutedAway(batch.map(\.change), refused: rejected)
            try handleClockSkew(response, refused: rejected, sentAt: sentAt)
            sent += batch.count
            // Own changes refused for clock skew are re-stamped and sent again at once
            // (handleClockSkew, which warns about the clock itself).
            // One line per kind of refusal and batch, naming the first: a move's race had the
            // country log 1,234 lines at error, one per change, each healing itself (helper 86).
            var kinds: [String: (level: Logger.Level, count: Int, first: RejectedChange)] = [:]
            for rejected in rejected where !(rejected.code == .clockSkew && rejected.origin == identity.node) {
                // A child's change refused `forbidden` is handled here: dropped and passed down
                // as outside its maker's scope (dropRefusedRelays), or let go with a notice to
                // send it again once its maker moved away, or retried. Not an error of this node.
                let handled = rejected.code == .forbidden && rejected.origin != identity.node
                let key = "\(rejected.code.rawValue) \(handled)"
                kinds[key] = (handled ? .notice : .error, (kinds[key]?.count ?? 0) + 1, kinds[key]?.first ?? rejected)
            }
            for (level, count, first) in kinds.values.sorted(by: { $0.first.originSeq < $1.first.originSeq }) {
                logger.log(level: level, "parent refused changes", metadata: [
                    "count": "\(count)", "first": "\(first.origin)#\(first.originSeq)", "record": "\(first.table)/\(first.recordID)",
                    "code": "\(first.code.rawValue)", "reason": "\(first.message)",
                ])
            }
            state.withLock {
                $0.pushedChanges += batch.count
                $0.rejectedChanges += rejected.count
                $0.lastPushMillis = WallClock.nowMillis()
            }
        }
        return sent + (try await retryRefused())
    }

    /// Erases here the records of changes the parent refused as erased (data of a customer
    /// erased while this node held none of it: the erasure never came here), then cleans the
    /// files (``NodeStore/eraseRefused(_:nowMillis:)``).
    /// Off the cooperative pool (a first erasure vacuums the store; the log's truncation
    /// waits for readers), and never failing the push round: the cursor has moved already,
    /// and a failure here is logged, not retried.
    private func eraseRefused(_ rejected: [RejectedChange], of sent: [Change]) async {
        let bySeq = Dictionary(sent.map { ("\($0.origin)#\($0.originSeq)", $0) }, uniquingKeysWith: { first, _ in first })
        let refused = rejected.compactMap { r in r.code == .erased ? bySeq["\(r.origin)#\(r.originSeq)"].map { (refusal: r, change: $0) } : nil }
        guard !refused.isEmpty else { return }
        do {
            let erased = try await store.eraseRefusedOffPool(refused)
            if erased > 0 {
                logger.notice("erased records whose changes the parent refused as erased", metadata: ["records": "\(erased)"])
            }
        } catch {
            logger.error("could not erase records whose changes the parent refused as erased", metadata: ["error": "\(error)"])
        }
    }

    /// After the parent refused children's changes (`forbidden`): those whose maker is no
    /// longer below this node by the directory it mirrors are withdrawn, and their makers told
    /// to send them again (``NodeStore/releaseChangesOfMakersGone(outside:)``). The sweep that
    /// follows a move does the same, for what was refused before it. Never failing the push round.
    private func releaseChangesOfMakersGone(_ rejected: [RejectedChange]) async {
        guard rejected.contains(where: { $0.code == .forbidden && $0.origin != identity.node }),
              let scope = await configuration.scope(identity.node) else { return }
        do {
            let kept = try store.releaseChangesOfMakersGone(outside: scope)
            if kept > 0 {
                logger.notice("let go of children's changes refused above as no longer relayed for their makers (moved away); their makers are told to send them again",
                              metadata: ["changes": "\(kept)"])
                await onPulled()
            }
        } catch {
            logger.error("could not let go of changes of children that moved away", metadata: ["error": "\(error)"])
        }
    }

    /// Drops here changes this node relayed from its children that the parent refused as
    /// outside the scope of the node that made them (``NodeStore/dropRefusedRelays(_:nowMillis:)``), and tells the children they came from;
    /// its own changes are never dropped. Never failing the push round: the cursor has
    /// moved already, and what follows in the round must still run.
    private func dropRefusedRelays(_ rejected: [RejectedChange], of sent: [Change]) async {
        let outside = Dictionary(rejected.lazy.filter { $0.code == .forbidden && $0.outsideScopeOf == $0.origin && $0.origin != self.identity.node }
            .map { ("\($0.origin)#\($0.originSeq)", $0) }, uniquingKeysWith: { first, _ in first })
        guard !outside.isEmpty else { return }
        do {
            let dropped = try store.dropRefusedRelays(sent.compactMap { change in
                outside["\(change.origin)#\(change.originSeq)"].map { (change, $0) }
            })
            if dropped > 0 {
                logger.notice("dropped changes of children the parent refused as outside their scope; their records hold what is left",
                              metadata: ["changes": "\(dropped)"])
                // The children's waiting pulls answer at once with the notice (a country's hub).
                await onPulled()
            }
        } catch {
            logger.error("could not drop changes of children the parent refused as outside their scope", metadata: ["error": "\(error)"])
        }
    }

    /// Re-sends changes the parent refused for a reason that may have passed (clock skew
    /// fixed, scope granted, schema upgraded). They leave the list once accepted.
    @discardableResult
    public func retryRefused() async throws -> Int {
        pushesInFlight.withLock { $0 += 1 }
        defer { pushesInFlight.withLock { $0 -= 1 } }
        let due = try store.dueRetries(limit: configuration.pushBatchSize)
        guard !due.isEmpty else { return 0 }
        let response: PushResponse
        let sentAt = configuration.wallClock()
        do {
            response = try await client.push(PushRequest(tenant: identity.tenant, through: try store.cursor(Self.pushCursor), changes: due))
        } catch AgentError.http(413, _, let message) {
            // Still too large together (or alone): try again later, one by one.
            try store.scheduleRetries(due.map { RejectedChange(change: $0, rejection: ChangeRejection(.tooLarge, message)) })
            var accepted = 0
            if due.count > 1 {
                for change in due {
                    guard let r = try? await client.push(PushRequest(tenant: identity.tenant, through: try store.cursor(Self.pushCursor), changes: [change])),
                          r.rejected.isEmpty else { continue }
                    try store.clearRetries([change])
                    noteRoutedAway([change], refused: [])
                    accepted += 1
                }
            }
            return accepted
        }
        let rejected = refusals(in: response, of: due)
        let stillRefused = Set(rejected.map { "\($0.origin)#\($0.originSeq)" })
        let accepted = due.filter { !stillRefused.contains("\($0.origin)#\($0.originSeq)") }
        try store.clearRetries(accepted)
        try store.scheduleRetries(rejected)
        await releaseChangesOfMakersGone(rejected)
        await dropRefusedRelays(rejected, of: due)
        await eraseRefused(rejected, of: due)
        noteRoutedAway(accepted, refused: [])
        try handleClockSkew(response, refused: rejected, sentAt: sentAt)
        if !accepted.isEmpty {
            logger.notice("parent accepted changes it had refused before", metadata: ["count": "\(accepted.count)"])
        }
        return accepted.count
    }

    /// The refusals in `response` of changes the push sent. A parent naming others (an
    /// own change acknowledged long ago, say) is not believed: it would have this node
    /// re-stamp, and so rewrite, data the tree already holds, or re-send it for ever.
    private func refusals(in response: PushResponse, of sent: [Change]) -> [RejectedChange] {
        let identities = Set(sent.map { "\($0.origin)#\($0.originSeq)" })
        let answered = response.rejected.filter { identities.contains("\($0.origin)#\($0.originSeq)") }
        if answered.count < response.rejected.count {
            logger.warning("the parent refused changes this push did not send; ignored", metadata: [
                "named": "\(response.rejected.count - answered.count)"])
        }
        return answered
    }

    /// Measures this node's clock against the parent's (kept for `status`), and re-stamps
    /// own changes the parent refused as stamped too far ahead to the parent's time, so
    /// they go through at once and never win over writes the parent accepted since
    /// (``NodeStore/restampAheadOfParent(refused:parentTimeMillis:acknowledgedThrough:)``).
    private func handleClockSkew(_ response: PushResponse, refused rejected: [RejectedChange], sentAt: UInt64) throws {
        let now = configuration.wallClock()
        let offset = Self.clockOffset(sentAt: sentAt, receivedAt: now, parentTime: response.hubTimeMillis)
        try store.recordClockOffset(ClockOffset(offsetMillis: offset, measuredAtMillis: now))
        let refusals = rejected.filter { $0.code == .clockSkew && $0.origin == identity.node }
        let skewed = refusals.map(\.originSeq)
        if abs(offset) > 30_000 || !skewed.isEmpty {
            logger.warning("this node's clock differs from the parent's; fix it (changes refused for it are re-stamped to the parent's time)",
                           metadata: ["offset_ms": "\(offset)", "refused": "\(skewed.count)"])
        }
        guard !skewed.isEmpty else { return }
        // No later than the first refusal of any of them (the parent refuses a later stamp).
        let restampAt = refusals.map { min($0.restampAtMillis ?? response.hubTimeMillis, response.hubTimeMillis) }.min() ?? response.hubTimeMillis
        let restamped = try store.restampAheadOfParent(refused: skewed, parentTimeMillis: restampAt,
                                                       acknowledgedThrough: try store.cursor(Self.pushCursor))
        logger.notice("re-stamped changes to the parent's clock", metadata: ["count": "\(restamped)"])
    }

    /// How far this node's clock is at least from the parent's (positive: ahead), from one
    /// push: the parent read its clock somewhere between `sentAt` and `receivedAt` (after
    /// reading the body, before applying it), so the offset lies between the two
    /// differences, and the one nearer zero is what is known. Taken from the answer's arrival
    /// alone, a push that waited seconds at a busy parent read as this clock running seconds
    /// ahead, and `status` told the operator to fix a clock that was right.
    static func clockOffset(sentAt: UInt64, receivedAt: UInt64, parentTime: UInt64) -> Int64 {
        let early = Int64(clamping: Int128(sentAt) - Int128(parentTime))
        let late = Int64(clamping: Int128(receivedAt) - Int128(parentTime))
        if early > 0 { return min(early, late) }
        if late < 0 { return max(early, late) }
        return 0
    }

    private func pushLoop() async {
        var backoff = Backoff(initial: configuration.retryInitial, maximum: configuration.retryMax)
        var failed = false
        // At start and after the parent was unreachable: push only once a pull has come
        // back since (the pull rounds counted then).
        var pullFirst: Int? = pullRounds.withLock { $0 }
        // The last failure was the parent out of reach (not a refusal, nor a local error).
        var unreachable = false
        while !Task.isCancelled {
            do {
                // Success is recorded only for an exchange with the parent: a round with nothing
                // to push, after the wait for a pull ran out, reset the failures of a pull loop
                // the parent was answering 410 (status showed no failure).
                var exchanged = false
                // The parent was out of reach: it may be back restored from a backup.
                if failed {
                    try await verifyParent(when: "after the parent was unreachable")
                    exchanged = true
                    // Only after an outage: a parent that asked for a pause (429, 503 with
                    // Retry-After) is not hurried by the other loop (helper 105).
                    if unreachable { parentBack.withLock { $0 = true } }
                }
                if let since = pullFirst {
                    try await waitForPull(after: since)
                    pullFirst = nil
                }
                if try await pushPending() > 0 { exchanged = true }
                try await evictRoutedAway(touchedBy: nil)
                failed = false
                unreachable = false
                backoff.reset()
                // A wake left from when this loop was not asleep goes: it would cut short the
                // wait after some later failure.
                parentBackToPush.withLock { $0 = false }
                if exchanged { recordSuccess() }
                try await waitForLocalWrites()
            } catch is CancellationError {
                return
            } catch {
                failed = true
                unreachable = ParentClient.isUnreachable(error)
                if pullFirst == nil { pullFirst = pullRounds.withLock { $0 } }
                let delay = AgentError.delay(after: error, backoff: backoff.next())
                recordFailure("push", error, retryIn: delay)
                if unreachable {
                    await Self.sleep(delay) { self.parentBackToPush.withLock { back in defer { back = false }; return back } }
                } else {
                    try? await Task.sleep(for: delay)
                }
            }
        }
    }

    /// Waits until a pull round completes after `rounds` (at most ``pullFirstLimit``): what
    /// the parent decided while the node was away (an erasure above all) is applied before
    /// the node pushes. Past the limit it pushes anyway; the parent refuses a change of
    /// erased data itself.
    private func waitForPull(after rounds: Int) async throws {
        let deadline = ContinuousClock.now + Self.pullFirstLimit
        while pullRounds.withLock({ $0 }) <= rounds {
            guard ContinuousClock.now < deadline else {
                logger.notice("pushing before the first pull since the parent was reached: the pull has not completed within the limit",
                              metadata: ["limit": "\(Self.pullFirstLimit)"])
                return
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    static let pullFirstLimit: Duration = .seconds(30)

    /// Sleeps `delay`, or less once the other loop found the parent back (``parentBack``,
    /// taken when seen; one left from earlier only cuts one wait short).
    private static func sleep(_ delay: Duration, unless woken: () -> Bool) async {
        let deadline = ContinuousClock.now + delay
        while !Task.isCancelled {
            if woken() { return }
            let left = deadline - ContinuousClock.now
            guard left > .zero else { return }
            try? await Task.sleep(for: min(left, .milliseconds(100)))
        }
    }

    /// Returns once the log holds changes the parent has not acknowledged, or a refused
    /// change is due for another try.
    private func waitForLocalWrites() async throws {
        while !Task.isCancelled {
            if restore.withLock({ $0.pushFrom != nil }) { return }
            if try store.lastUpstreamSeq() > store.cursor(Self.pushCursor) { return }
            if let due = try store.nextRetryMillis(), due <= WallClock.nowMillis() { return }
            try await Task.sleep(for: configuration.localPollInterval)
        }
        throw CancellationError()
    }

    // MARK: Status

    /// What this node (and, from a country, its dealers) reports now: its own lag, freshly
    /// measured, first.
    public func lagReports() async throws -> [LagReport] {
        let (pending, oldest) = try store.upstreamLag(after: store.cursor(Self.pushCursor))
        let now = WallClock.nowMillis()
        // The clock offset the node measured at its last push (the parent's time in the
        // answer against its own clock), while recent.
        let clockNow = configuration.wallClock()
        let offset = try store.clockOffset().flatMap { o in
            o.measuredAtMillis &+ LagReport.clockOffsetWindowMillis >= clockNow ? o.offsetMillis : nil
        }
        let own = LagReport(node: identity.node, pending: pending,
                            oldestPendingMillis: oldest.map { Int64(clamping: now &- min(now, $0)) } ?? 0, clockOffsetMillis: offset)
        return [own] + (await configuration.relayedLag?() ?? [])
    }

    /// Sends ``lagReports()`` to the parent; returns how many it kept.
    @discardableResult
    public func reportStatus() async throws -> Int {
        try await client.status(StatusRequest(reports: try await lagReports())).accepted
    }

    /// Measures every `statusInterval` and reports when the backlog of any node reported
    /// changed, or a heartbeat is due. A parent without the route (an older hub: 404) is
    /// not asked again.
    private func statusLoop() async {
        guard let interval = configuration.statusInterval else { return }
        var lastSent: [NodeID: Int64]?
        var lastSentAt = ContinuousClock.now
        while !Task.isCancelled {
            do {
                let reports = try await lagReports()
                let backlog = Dictionary(reports.map { ($0.node, $0.pending) }, uniquingKeysWith: { a, _ in a })
                if backlog != lastSent || ContinuousClock.now - lastSentAt >= configuration.statusHeartbeat {
                    _ = try await client.status(StatusRequest(reports: reports))
                    lastSent = backlog
                    lastSentAt = .now
                }
            } catch is CancellationError {
                return
            } catch AgentError.http(let status, _, _) where status == 404 {
                logger.notice("the parent does not take lag reports (an older version); not reporting")
                return
            } catch {
                logger.debug("lag report failed; next try in \(interval)", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: interval)
        }
    }

    // MARK: Pull

    /// Pulls one page (waiting up to `waitSeconds` for changes) and applies it together
    /// with the new cursor. Returns the page's change count and whether more is waiting.
    @discardableResult
    public func pullOnce(waitSeconds: Double = 0) async throws -> (changes: Int, more: Bool) {
        try applyPullReset()
        let cursor = try store.cursor(Self.pullCursor)
        // Until the first full catch-up, ask for our own changes too: a node restored
        // from nothing gets back what it wrote before.
        let bootstrapped = try store.meta(Self.bootstrappedMeta) == "1"
        do {
            // A failed take of the parent's notices is tried again when its pause ends, not
            // when a long-poll started meanwhile is answered.
            let wait = refusalsOffered.withLock { $0.remainingPause() }.map { min(waitSeconds, Self.seconds($0)) } ?? waitSeconds
            let page = try await pull(cursor: cursor, excludeOwn: bootstrapped, waitSeconds: wait,
                                      history: try store.meta(Self.parentHistoryMeta))
            try checkHead(page, cursor: cursor)
            try await apply(page, bootstrapped: bootstrapped)
            await takeUpstreamRefusals()
            return (page.changes.count, page.more)
        } catch let regressed as ParentRegressed {
            try await recover(from: regressed)
            return (0, true)
        }
    }

    /// One pull, `history` sent with the cursor; a parent's refusal of the cursor as counting
    /// positions of a log history it lost is thrown as ``ParentRegressed``.
    private func pull(cursor: Int64, excludeOwn: Bool, waitSeconds: Double, history: String?) async throws -> PullResponse {
        do {
            // What it took (or found nothing new behind): a newer notice answers the pull at once.
            let taken = try store.upstreamRefusalsTaken(from: parentNode.withLock { $0 })
            let refusalsAfter = max(taken, refusalsOffered.withLock { $0.recentlyFruitless() } ?? 0)
            let (page, newestRefusal) = try await client.pullPage(cursor: cursor, limit: configuration.pullPageSize, waitSeconds: waitSeconds,
                                                                  excludeOwn: excludeOwn, history: history, refusalsAfter: refusalsAfter)
            refusalsOffered.withLock { $0.newest = newestRefusal }
            return page
        } catch AgentError.http(409, LogHistoryLost.code, _) {
            throw ParentRegressed(head: 0, cursor: cursor, seen: headSeen.withLock { $0 }, lostHistory: history)
        }
    }

    /// Pulls until the parent has nothing more, fetching the next page while the current
    /// one is applied (the parent reads and encodes while this node writes: a new node's
    /// first sync, or one back from a long outage). Returns the changes received;
    /// `progress` gets the running total after each page.
    @discardableResult
    public func catchUp(progress: (Int) -> Void = { _ in }) async throws -> Int {
        do {
            return try await catchUpOnce(progress: progress)
        } catch let regressed as ParentRegressed {
            // The parent's log went back (restored from a backup): start again from the
            // position `recover` chose. It cannot go back twice without another restore.
            try await recover(from: regressed)
            return try await catchUpOnce(progress: progress)
        }
    }

    private func catchUpOnce(progress: (Int) -> Void) async throws -> Int {
        try applyPullReset()
        let bootstrapped = try store.meta(Self.bootstrappedMeta) == "1"
        let (client, limit, store) = (self.client, configuration.pullPageSize, self.store)
        let parent = parentNode.withLock { $0 }
        // The parent serves page n+2 while this node prepares (validates, encodes) page
        // n+1 and its store writes page n. Positions only move forward through `apply`,
        // which stores each page's `nextCursor` with it: the next page starts exactly there.
        var received = 0
        // Each cursor goes with the history of the page that handed it out (pages are pulled
        // one after another: the next cursor comes from the latest page).
        let history = Mutex<String?>(try store.meta(Self.parentHistoryMeta))
        try await PagePipeline.run(
            from: try store.cursor(Self.pullCursor),
            pull: { cursor in
                let page = try await self.pull(cursor: cursor, excludeOwn: bootstrapped, waitSeconds: 0, history: history.withLock { $0 })
                try self.checkHead(page, cursor: cursor)
                history.withLock { $0 = page.history.flatMap { PullResponse.isValidHistory($0) ? $0 : nil } }
                return page
            },
            next: { page in page.more ? page.nextCursor : nil },
            prepare: { page in
                try await store.prepareIncoming(page.changes, from: parent, source: .parent, checkSkew: false,
                                                gate: await self.parentGate(for: page.changes))
            },
            apply: { page, plan in try await self.apply(page, plan: plan, bootstrapped: bootstrapped) },
            applied: { page in
                received += page.changes.count
                progress(received)
            })
        await takeUpstreamRefusals()
        return received
    }

    /// A duration in seconds, as the wire's wait takes it.
    private static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    /// Takes the notices the parent offered with a pull (``UpstreamRefusal``): changes this
    /// node sent up, refused above the parent for good, which the parent dropped. This node
    /// drops them too (``NodeStore/takeUpstreamRefusals(_:from:nowMillis:)``): its own are
    /// set aside in its quarantine, a child's are passed on to that child. Never failing the
    /// pull round: the notices are asked for again after the next pull.
    private func takeUpstreamRefusals() async {
        guard let offered = refusalsOffered.withLock({ $0.newest != $0.recentlyFruitless() ? $0.newest : nil }) else { return }
        let parent = parentNode.withLock { $0 }
        do {
            var taken = try store.upstreamRefusalsTaken(from: parent)
            var pages = 0
            // Bounded per round: a parent cannot keep the node here.
            while taken < offered, pages < 20 {
                pages += 1
                let page = try await client.refusals(after: taken)
                let fresh = page.refusals.filter { $0.id > taken }
                guard !fresh.isEmpty else { break }
                // A push on its way: its answer first, so the push cursor and the retries say
                // which of this node's changes the parent took (a later change of a refused
                // record goes with it only if the parent did not). At most 30 s; else taken
                // after a later pull. (A push starting meanwhile may still send a change the
                // take withdraws: its refusal then finds no entry to retry.)
                var waits = 0
                while pushesInFlight.withLock({ $0 }) > 0 {
                    guard waits < 1_500 else { return }
                    waits += 1
                    try await Task.sleep(for: .milliseconds(20))
                }
                let done = try await store.takeUpstreamRefusalsOffPool(fresh, from: parent)
                if !done.toErase.isEmpty {
                    logger.notice("erased records whose changes were refused above the parent as erased", metadata: [
                        "records": "\(done.erasedRecords)", "changes": "\(done.toErase.count)"])
                    await onPulled()
                }
                let outcomes: [(refusals: [RejectedChange], level: Logger.Level, message: Logger.Message)] = [
                    (done.setAside, .warning, "a change this node made was refused above its parent for good; withdrawn and set aside in the quarantine (tiersync admin quarantine)"),
                    (done.notKept, .error, "a change this node made was refused above its parent for good and withdrawn; the quarantine's quota is full, so it was not kept"),
                    (done.passedOn, .warning, "a change this node relayed was refused above its parent for good; dropped and passed on to the child it came from"),
                    (done.sendAgain, .notice, "the parent let go of changes it no longer relays for (this node, or the child they came from, was moved away after the parent took them); sending them again from the one named"),
                    (done.ignored, .error, "the parent passed down a notice that is not a refusal of a change this node sent up, as outside its maker's scope or as erased; ignored"),
                ]
                for (refusals, level, message) in outcomes {
                    for refusal in refusals {
                        logger.log(level: level, message, metadata: ["change": "\(refusal.origin)#\(refusal.originSeq)",
                            "record": "\(refusal.table)/\(refusal.recordID)", "code": "\(refusal.code.rawValue)", "reason": "\(refusal.message)"])
                    }
                }
                state.withLock { $0.refusedAbove += done.setAside.count + done.notKept.count + done.passedOn.count }
                // The push went back to the first change let go (in the take's transaction):
                // every later one is sent again too, and the parent takes those it holds for
                // duplicates. Noted here as well, so a push that raced the take moves it back again.
                if let from = done.sendAgainFrom {
                    restore.withLock { $0.pushFrom = min($0.pushFrom ?? from, from) }
                }
                if !done.passedOn.isEmpty { await onPulled() }
                taken = fresh.map(\.id).max() ?? taken
                if !page.more { break }
            }
            // Short of what the pull named (nothing new behind it, or nothing more to fetch):
            // not asked again at once.
            refusalsOffered.withLock { if taken < offered { $0.fellShort(offered) } else { $0.succeeded() } }
        } catch is CancellationError {
        } catch {
            let pause = refusalsOffered.withLock { $0.failed(offered); return $0.pause }
            logger.error("could not take the parent's notices of changes refused above it; asked again in \(pause)",
                         metadata: ["error": "\(error)"])
        }
    }

    /// Applies a pulled page together with its cursor.
    private func apply(_ page: PullResponse, plan: IncomingBatchPlan? = nil, bootstrapped: Bool) async throws {
        let ready: IncomingBatchPlan
        if let plan { ready = plan } else {
            ready = try await store.prepareIncoming(page.changes, from: parentNode.withLock { $0 }, source: .parent, checkSkew: false,
                                                    gate: await parentGate(for: page.changes))
        }
        // The history first: stored with the older cursor, it still holds that cursor's
        // positions (a newer history's floor is at least every cursor handed out before it).
        // A page naming none (a parent older than the field) leaves none to send.
        let history = page.history.flatMap { PullResponse.isValidHistory($0) ? $0 : nil }
        if try store.meta(Self.parentHistoryMeta) != history { try store.setMeta(Self.parentHistoryMeta, history) }
        let report = try await store.apply(ready, cursor: (Self.pullCursor, page.nextCursor))
        if !page.more, !bootstrapped {
            // A re-bootstrap ends here: what the parent did not deliver again was deleted
            // while this node was away (``rebootstrap()``).
            let (dropped, kept) = try store.finishRebootstrap()
            if dropped > 0 || kept > 0 {
                logger.notice("re-bootstrap complete: dropped the records deleted while this node was away", metadata: [
                    "dropped": "\(dropped)", "kept_unsent": "\(kept)"])
            }
            try store.setMeta(Self.bootstrappedMeta, "1")
        }
        // A record this page routed away from the node is evicted here (docs/PRIVACY.md).
        if report.applied > 0 { try await evictRoutedAway(touchedBy: page.changes) }
        if !report.rejected.isEmpty {
            for r in report.rejected {
                logger.error("refused a change from the parent", metadata: ["change": "\(r.origin)#\(r.originSeq)", "reason": "\(r.message)"])
            }
        }
        state.withLock {
            $0.pulledChanges += report.applied
            $0.lastPullMillis = WallClock.nowMillis()
            $0.parentHead = page.head
        }
        if report.applied > 0 { await onPulled() }
    }

    /// The gate for a page from the parent (``ParentGate``): erasure requests made by this
    /// node or a node below it are judged by the scope of the node that asked, as the parent
    /// judged them; nil when the page holds none this node can judge.
    func parentGate(for changes: [Change]) async -> ChangeGate? {
        var scopes: [NodeID: Scope] = [:]
        for requester in ParentGate.requesters(in: changes) {
            let scope = requester == identity.node ? await configuration.scope(requester) : await configuration.scopeBelow(requester)
            if let scope { scopes[requester] = scope }
        }
        return ParentGate.erasures(judgedBy: scopes)
    }

    /// Records that changes this node sent, and its parent took, may have routed away from
    /// it (a dealer giving its customer to a sibling): evicted by the push loop's next
    /// ``evictRoutedAway(touchedBy:)``, now that they are acknowledged. Its own changes never
    /// come back down, so the pull's eviction never saw them, and the record stayed here for
    /// good. Only changes setting a route field to another node are looked at (a dealer's new
    /// customer names the dealer itself).
    private func noteRoutedAway(_ sent: [Change], refused: [RejectedChange]) {
        let refusedIDs = Set(refused.map { "\($0.origin)#\($0.originSeq)" })
        let me = identity.node.rawValue
        let keys = sent.compactMap { change -> RecordKey? in
            guard let table = store.schema.table(change.table),
                  table.routeFields.contains(where: { field in change.fields[field].map { $0.stringValue != me } ?? false }),
                  !refusedIDs.contains("\(change.origin)#\(change.originSeq)") else { return nil }
            return RecordKey(table: change.table, id: change.recordID)
        }
        if !keys.isEmpty { pendingEviction.withLock { $0.formUnion(keys) } }
    }

    /// Evicts what `changes` routed away from this node (nil: retries the records kept
    /// earlier because changes of them were not yet acknowledged; the push loop calls it
    /// after each acknowledgement).
    func evictRoutedAway(touchedBy changes: [Change]?) async throws {
        let retry = pendingEviction.withLock { $0 }
        guard changes != nil || !retry.isEmpty, let scope = await configuration.scope(identity.node) else { return }
        var evicted = try changes.map { try store.evict(outside: scope, touchedBy: $0) } ?? EvictionReport()
        if !retry.isEmpty {
            let again = try store.evict(outside: scope, records: Array(retry))
            pendingEviction.withLock { $0.subtract(retry) }
            evicted.records += again.records
            evicted.logEntries += again.logEntries
            evicted.kept += again.kept
            evicted.sendAgainNotices += again.sendAgainNotices
        }
        pendingEviction.withLock { $0.formUnion(evicted.kept) }
        // What left this node's scope leaves its files too (the log's page images).
        if evicted.records > 0 { await Self.truncateLogAfterEviction(store, logger: logger) }
        if evicted.records > 0 || !evicted.kept.isEmpty {
            logger.info("evicted records routed away from this node", metadata: [
                "records": "\(evicted.records)", "log_entries": "\(evicted.logEntries)", "kept_unsent": "\(evicted.kept.count)"])
        }
        if evicted.sendAgainNotices > 0 {
            logger.notice("let go of children's changes refused above as no longer relayed for their makers (moved away); their makers are told to send them again",
                          metadata: ["changes": "\(evicted.sendAgainNotices)"])
            // The children's waiting pulls answer at once with the notice (a country's hub).
            await onPulled()
        }
    }

    /// Truncates `store`'s write-ahead log after an eviction, so the evicted records' page
    /// images leave its files too. Best effort: the eviction is done, and a failure here must
    /// not fail the pull or the sweep; the next eviction or erasure truncates again.
    public static func truncateLogAfterEviction(_ store: NodeStore, logger: Logger) async {
        do {
            try await store.truncateWriteAheadLogOffPool()
        } catch {
            logger.warning("could not truncate the write-ahead log after an eviction: the evicted records' pages stay in it until it is overwritten",
                           metadata: ["error": "\(error)"])
        }
    }

    /// Fetches every change routed to `node` from the parent, from the beginning, without
    /// moving the pull cursor: a country whose subtree gained a node (moved in from
    /// another country) gets that node's records. Returns the changes applied.
    @discardableResult
    public func backfill(_ node: NodeID) async throws -> Int {
        var cursor: Int64 = 0
        var applied = 0
        while true {
            let page = try await client.pull(cursor: cursor, limit: configuration.pullPageSize, waitSeconds: 0, excludeOwn: false, only: node)
            applied += try await store.applyIncoming(page.changes, from: parentNode.withLock { $0 }, source: .parent, checkSkew: false,
                                                     gate: await parentGate(for: page.changes)).applied
            cursor = page.nextCursor
            if !page.more { break }
        }
        if applied > 0 { await onPulled() }
        return applied
    }

    private func pullLoop() async {
        var backoff = Backoff(initial: configuration.retryInitial, maximum: configuration.retryMax)
        var more = true
        var failed = false
        // Sent away (410) again before a pull round completed: a parent cannot have purged
        // past a scope it has just begun to serve again (a pull from 0 is always served),
        // so it is broken or hostile, and the node waits before starting over.
        var goneAgain = false
        var unreachable = false
        var lastProgress = ContinuousClock.now
        while !Task.isCancelled {
            do {
                // The parent was out of reach: it may be back restored from a backup whose
                // log has grown past this node's cursor again, which its head cannot show.
                if failed {
                    try await verifyParent(when: "after the parent was unreachable")
                    if unreachable { parentBackToPush.withLock { $0 = true } }
                }
                failed = false
                unreachable = false
                if more {
                    // Behind: page after page, the next one fetched while this one is applied.
                    try await catchUp { _ in
                        if ContinuousClock.now - lastProgress > .seconds(2) {
                            lastProgress = ContinuousClock.now
                            logCatchUp()
                        }
                    }
                    more = false
                } else {
                    more = try await pullOnce(waitSeconds: configuration.pullWaitSeconds).more
                }
                pullRounds.withLock { $0 += 1 }
                goneAgain = false
                backoff.reset()
                parentBack.withLock { $0 = false }
                recordSuccess()
            } catch is CancellationError {
                return
            } catch AgentError.http(410, RebootstrapRequired.code, let message) {
                // The parent purged deletes this node has not seen: fetch the scope again.
                do {
                    if goneAgain {
                        let delay = backoff.next()
                        recordFailure("pull", AgentError.http(status: 410, code: RebootstrapRequired.code, message: message), retryIn: delay)
                        try? await Task.sleep(for: delay)
                    }
                    goneAgain = true
                    try rebootstrap(because: message)
                    more = true
                } catch {
                    recordFailure("pull", error, retryIn: configuration.retryInitial)
                    try? await Task.sleep(for: configuration.retryInitial)
                }
            } catch {
                failed = true
                unreachable = ParentClient.isUnreachable(error)
                let delay = AgentError.delay(after: error, backoff: backoff.next())
                recordFailure("pull", error, retryIn: delay)
                more = true
                if unreachable {
                    await Self.sleep(delay) { self.parentBack.withLock { back in defer { back = false }; return back } }
                } else {
                    try? await Task.sleep(for: delay)
                }
            }
        }
    }

    /// Starts a re-bootstrap (docs/PRIVACY.md, "Nodes that stay away"): the node was away
    /// longer than its parent's retention horizon, and deletes it has not seen were purged.
    /// It pulls its whole scope again from the start, its own changes included; records not
    /// delivered again are dropped once the pull catches up, except those with changes
    /// still waiting to go upward. The push side is untouched: nothing unsent is lost.
    func rebootstrap(because message: String) throws {
        logger.warning("the parent says this node was away longer than its retention horizon; fetching its scope again from the start (unsent changes are kept and sent)",
                       metadata: ["parent": "\(message)"])
        try store.beginRebootstrap(pullCursor: Self.pullCursor, bootstrappedKey: Self.bootstrappedMeta)
        try store.setMeta(Self.parentHistoryMeta, nil)
        headSeen.withLock { $0 = 0 }
        state.withLock { $0.rebootstraps += 1 }
    }

    /// Compacts the node's store every interval (``NodeStore/compact(policy:tree:nowMillis:batch:)``):
    /// a dealer feeds no children, so superseded entries go once the parent acknowledged them.
    private func compactionLoop(_ retention: RetentionPolicy) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: retention.interval)
            guard !Task.isCancelled else { return }
            do {
                let report = try await store.compact(policy: retention, tree: nil)
                if report.purgedEntries > 0 {
                    logger.debug("compacted the change log", metadata: [
                        "superseded": "\(report.supersededEntries)", "folded": "\(report.foldedEntries)", "tombstones": "\(report.tombstones)"])
                }
            } catch {
                logger.warning("compaction failed; retrying at the next interval", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Tells a person watching a long catch-up (a new node, one back from a long outage)
    /// how far it has come.
    private func logCatchUp() {
        guard let cursor = try? store.cursor(Self.pullCursor), let head = state.withLock({ $0.parentHead }), head > 0 else { return }
        let held = (try? store.counts().records.values.reduce(0, +)) ?? 0
        logger.info("catching up with the parent", metadata: [
            "progress": "\(Self.catchUpPercent(cursor: cursor, head: head))%", "position": "\(cursor)/\(head)", "records": "\(held)",
        ])
    }

    /// How far a catch-up has come, 0…100. Both numbers are the parent's: in 128 bits
    /// (a cursor of Int64.max trapped `cursor * 100`, every time the agent started).
    public static func catchUpPercent(cursor: Int64, head: Int64) -> Int64 {
        guard head > 0 else { return 0 }
        return Int64(min(100, max(0, Int128(cursor) * 100 / Int128(head))))
    }

    // MARK: A parent restored from a backup

    /// Asks the parent what it holds of this node's subtree and, if it lost changes it had
    /// acknowledged, starts the recovery (``checkHeld(_:acknowledged:when:)``). A parent
    /// that does not answer `held` (older than the field) is not checked.
    public func verifyParent(when: String) async throws {
        // Read before asking: whatever was acknowledged by now is held by the parent when it
        // answers, unless the parent lost it. (Read after, a push acknowledged in between
        // would look lost; that would only cost a re-send.)
        let acknowledged = try store.cursor(Self.pushCursor)
        try checkHeld(try await client.whoami(held: true, parentHeld: await parentChangesHeld()), acknowledged: acknowledged, when: when)
    }

    /// The parent as last learned and the highest sequence of its own changes this store
    /// holds (nil if unknown).
    func parentChangesHeld() async -> (node: NodeID, seq: Int64)? {
        let parent = parentNode.withLock { $0 }
        return (try? await store.highestSeq(of: parent)).map { (parent, $0) }
    }

    /// The parent holds more of this node's own changes than its store has numbered: the
    /// store was restored from an older backup. New changes are numbered after the
    /// parent's, and the pull starts again from the beginning with the node's own changes,
    /// so what it wrote after the backup comes back.
    func adoptOwnSequence(heldByParent held: Int64) {
        do {
            guard let before = try store.adoptOwnSequenceHeldByParent(held, resettingPull: Self.pullCursor, bootstrappedKey: Self.bootstrappedMeta)
            else { return }
            try store.setMeta(Self.parentHistoryMeta, nil)
            logger.warning("this store holds fewer of its own changes than its parent (restored from an older backup?): new changes are numbered after the parent's, and the missing ones are pulled back",
                           metadata: ["store_highest": "\(before)", "parent_holds": "\(held)"])
        } catch {
            logger.error("could not compare this store's own changes with its parent's", metadata: ["error": "\(error)"])
        }
    }

    /// Compares what the parent says it holds with what it acknowledged through
    /// `acknowledged`; a change acknowledged but not held means the parent was restored
    /// from an older backup.
    func checkHeld(_ me: WhoAmIResponse, acknowledged: Int64, when: String) throws {
        // At start and whenever the parent is reached again: the first answer may come only
        // after the parent was unreachable.
        if let held = me.held?[identity.node.rawValue] { adoptOwnSequence(heldByParent: held) }
        guard let held = me.held, let from = try store.pushRewind(held: held, acknowledgedThrough: acknowledged) else { return }
        restoreDetected(pushFrom: from, evidence: [
            "check": "\(when)", "acknowledged_through": "\(acknowledged)", "resend_after": "\(from)",
            "parent_holds": "\(held.count == 1 ? "\(held.values.first ?? 0)" : "\(held.count) nodes")",
        ])
    }

    /// Throws ``ParentRegressed`` when the parent's log head is below where this node has
    /// pulled to, or below a head it reported before: an append-only log never shrinks,
    /// so the parent was restored from an older backup.
    func checkHead(_ page: PullResponse, cursor: Int64) throws {
        guard let head = page.head else { return }
        let seen = headSeen.withLock { seen in
            defer { seen = max(seen, head) }
            return seen
        }
        if head < cursor || head < seen { throw ParentRegressed(head: head, cursor: cursor, seen: seen) }
    }

    /// Recovers from a parent whose log went back: resets the pull cursor and finds what
    /// to re-send from what the parent holds.
    private func recover(from regressed: ParentRegressed) async throws {
        headSeen.withLock { $0 = regressed.head }
        if let lost = regressed.lostHistory {
            restoreDetected(pushFrom: nil, evidence: ["check": "pull", "pull_cursor": "\(regressed.cursor)", "lost_log_history": "\(lost)"])
        } else {
            restoreDetected(pushFrom: nil, evidence: [
                "check": "pull", "parent_head": "\(regressed.head)", "pull_cursor": "\(regressed.cursor)", "head_seen": "\(regressed.seen)",
            ])
        }
        try applyPullReset()
        // The push side: what the restored parent lost of this subtree goes again.
        try await verifyParent(when: "after the parent's log went back")
    }

    /// Logs the restore and schedules both cursors' recovery. The pull cursor goes back to
    /// the start, not to the restored head: changes other nodes pushed since the restore
    /// (before this node noticed) sit at positions this node's cursor had passed, and would
    /// be skipped. Everything re-delivered is recognised by its (origin, sequence).
    private func restoreDetected(pushFrom: Int64?, evidence: Logger.Metadata) {
        let first = restore.withLock { recovery in
            defer {
                recovery.pullReset = true
                if let pushFrom { recovery.pushFrom = min(recovery.pushFrom ?? pushFrom, pushFrom) }
            }
            return !recovery.pullReset && recovery.pushFrom == nil
        }
        var metadata = evidence
        metadata["node"] = "\(identity.node)"
        metadata["parent"] = "\(configuration.parentURL)"
        logger.log(level: first ? .warning : .notice,
                   "the parent lost changes it had acknowledged or its log went back (restored from an older backup, or, for a node moved to another parent and back, it let go of them meanwhile); re-sending what it lost and pulling again from the start (duplicates are recognised)",
                   metadata: metadata)
        // Once per recovery (the pull side and the push side each find the same restore), and
        // once per restore when the store says the last one was moments ago.
        guard first else { return }
        var counted = true
        do {
            counted = try store.recordParentRestore(atMillis: configuration.wallClock())
        } catch {
            logger.error("could not record the parent's restore for status", metadata: ["error": "\(error)"])
        }
        if counted { state.withLock { $0.parentRestores += 1 } }
    }

    /// Moves the push cursor back to what the restored parent holds (push side only).
    /// Taken and cleared in one step, so a rewind found meanwhile is not lost; put back if
    /// the store refuses the write.
    private func applyPushRewind() throws {
        guard let from = restore.withLock({ recovery in
            defer { recovery.pushFrom = nil }
            return recovery.pushFrom
        }) else { return }
        do {
            if from < (try store.cursor(Self.pushCursor)) { try store.setCursor(Self.pushCursor, from) }
        } catch {
            restore.withLock { $0.pushFrom = min($0.pushFrom ?? from, from) }
            throw error
        }
    }

    /// Moves the pull cursor back to the start after a restore (pull side only), and forgets
    /// the heads seen before it (they were the lost log's).
    private func applyPullReset() throws {
        guard restore.withLock({ recovery in
            defer { recovery.pullReset = false }
            return recovery.pullReset
        }) else { return }
        do {
            try store.setCursor(Self.pullCursor, 0)
            // A cursor of 0 loses nothing; the lost history is not sent again.
            try store.setMeta(Self.parentHistoryMeta, nil)
            // A restored parent may number new notices anew; taken twice, one changes nothing.
            try store.resetUpstreamRefusalsTaken()
            refusalsOffered.withLock { $0 = RefusalOffer() }
            headSeen.withLock { $0 = 0 }
        } catch {
            restore.withLock { $0.pullReset = true }
            throw error
        }
    }

    // MARK: Governance

    /// Keeps the first release key seen (at enrollment, or from the parent for nodes
    /// enrolled before HQ had one); a different key later is reported, never adopted.
    func learnReleaseKey(_ key: String) {
        guard let stored = try? store.meta(GovernanceFollower.keyMeta) else {
            try? store.setMeta(GovernanceFollower.keyMeta, key)
            logger.notice("learned HQ's governance release key from the parent")
            return
        }
        if stored != key {
            logger.critical("the parent announces a different governance release key than the one this node holds; keeping the held one",
                            metadata: ["held": "\(stored.prefix(16))…", "announced": "\(key.prefix(16))…"])
        }
    }

    /// Fetches the governance bundle (waiting up to `waitSeconds` for a change) and applies
    /// it. Returns true when the bundle was new.
    @discardableResult
    public func syncGovernanceOnce(waitSeconds: Double = 0) async throws -> Bool {
        let known = governanceToken.withLock { $0 }
        let bundle = try await client.governance(known: known, waitSeconds: waitSeconds)
        guard bundle.token != known else {
            try governance.evaluate()
            return false
        }
        try governance.receive(bundle)
        governanceToken.withLock { $0 = bundle.token }
        // A country's dealers long-poll it for the same documents: wake them.
        await onGovernance()
        return true
    }

    private func governanceLoop() async {
        var backoff = Backoff(initial: configuration.retryInitial, maximum: configuration.retryMax)
        while !Task.isCancelled {
            do {
                var wait = configuration.pullWaitSeconds
                if let due = try governance.pendingDueMillis() {
                    let now = WallClock.nowMillis()
                    wait = due <= now ? 0 : min(wait, Double(due - now) / 1000 + 0.05)
                }
                if try governance.releaseKey() == nil, let key = try await client.whoami().releaseKey { learnReleaseKey(key) }
                try await syncGovernanceOnce(waitSeconds: wait)
                backoff.reset()
            } catch is CancellationError {
                return
            } catch AgentError.http(404, _, _) {
                logger.notice("the parent does not serve governance; checking again in a minute")
                try? await Task.sleep(for: .seconds(60))
            } catch {
                // A release that came due takes effect even while the parent is unreachable.
                _ = try? governance.evaluate()
                let delay = AgentError.delay(after: error, backoff: min(backoff.next(), .seconds(5)))
                recordFailure("governance", error, retryIn: delay)
                try? await Task.sleep(for: delay)
            }
        }
    }

    // MARK: Status

    /// How often the agent notes in the store that its exchanges work, or keep failing
    /// (``TiersyncStore/ParentContact``): at every change between the two, and at most this
    /// often while either lasts (one small write, not one per request).
    static let contactNoteInterval: UInt64 = 30_000

    private func recordSuccess() {
        let now = WallClock.nowMillis()
        let note = state.withLock { s -> Bool in
            let wasFailing = s.consecutiveFailures > 0 || s.failingSinceMillis != nil
            s.consecutiveFailures = 0
            s.lastError = nil
            s.failingSinceMillis = nil
            guard wasFailing || now >= s.contactNotedAtMillis &+ Self.contactNoteInterval else { return false }
            s.contactNotedAtMillis = now
            return true
        }
        if note { try? store.noteParentContact(atMillis: now) }
    }

    private func recordFailure(_ what: String, _ error: any Error, retryIn delay: Duration) {
        let now = WallClock.nowMillis()
        let (failures, note) = state.withLock { s -> (Int, ParentContact.Failure?) in
            s.consecutiveFailures += 1
            s.lastError = "\(what): \(ParentClient.describe(error))"
            let first = s.failingSinceMillis == nil
            if first { s.failingSinceMillis = now }
            guard first || now >= s.contactNotedAtMillis &+ Self.contactNoteInterval else { return (s.consecutiveFailures, nil) }
            s.contactNotedAtMillis = now
            return (s.consecutiveFailures, ParentContact.Failure(sinceMillis: s.failingSinceMillis!, lastAtMillis: now,
                                                                  count: s.consecutiveFailures, error: s.lastError!))
        }
        if let note { try? store.noteParentFailure(note) }
        let level: Logger.Level = failures == 1 || failures % 10 == 0 ? .warning : .debug
        logger.log(level: level, "\(what) failed; retrying", metadata: [
            "error": "\(ParentClient.describe(error))", "retry_in": "\(delay)", "failures": "\(failures)",
        ])
    }
}

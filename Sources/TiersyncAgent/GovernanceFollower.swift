import Foundation
import Logging
import Synchronization
import TiersyncCore
import TiersyncGovernance
import TiersyncStore

/// A node's side of governance: long-polls its parent for the governance bundle, checks
/// every signature against HQ's release key (following HQ's key rotations: a new key is
/// adopted only when announced by the key held), keeps what passed (a country serves it on to
/// its dealers, who check it again), decides what to run and records the decision — in its
/// own history and as its `governance_status` record, which syncs upward like any record
/// so HQ's rollout-status table shows it.
public final class GovernanceFollower: Sendable {
    /// Where the node keeps HQ's release key in force (base64): learned at enrollment, pinned,
    /// or adopted from a key rotation the previous key announced.
    public static let keyMeta = "governance.key"
    /// The highest rollout sequence this node has received.
    static let rolloutMeta = "governance.rollout_seq"

    let store: NodeStore
    let identity: NodeIdentity
    let parentNode: @Sendable () -> NodeID?
    let logger: Logger
    /// Refusals seen in the last bundle (documents not kept, so not re-verifiable later).
    private let lastRefusals = Mutex<[String]>([])

    public init(store: NodeStore, identity: NodeIdentity, parentNode: @escaping @Sendable () -> NodeID?, logger: Logger) {
        self.store = store
        self.identity = identity
        self.parentNode = parentNode
        self.logger = logger
    }

    /// Thrown by ``receive(_:nowMillis:)`` for a bundle holding documents while this node
    /// has no release key to verify them: nothing was kept, so the caller must not
    /// remember the bundle's token (or the bundle would never be asked for again once the
    /// key is learned, and the release in force would wait for the next rollout).
    public struct NoReleaseKey: Error, CustomStringConvertible {
        public var description: String {
            "governance received but this node has no release key to verify it yet; pin one with --release-key, or wait for the parent to announce it"
        }
    }

    /// Verifies and keeps `bundle`, then decides. Returns the decision when it changed
    /// what the node runs or reports. Throws ``NoReleaseKey`` when the bundle holds
    /// documents but the node has no key to check them with (the bundle is dropped).
    @discardableResult
    public func receive(_ bundle: GovernanceBundle, nowMillis: UInt64 = WallClock.nowMillis()) throws -> GovernanceDecision? {
        guard let key = try releaseKey() else {
            // An empty bundle drops nothing; its token may be remembered.
            if bundle.rollout != nil || !bundle.releases.isEmpty || !bundle.overlays.isEmpty || !bundle.keyRotations.isEmpty
                || !bundle.overlayKeyRevocations.isEmpty { throw NoReleaseKey() }
            return nil
        }
        // Key rotations first: a release signed by HQ's new key verifies only once the
        // announcement (signed by the key held here) has been followed.
        let keyring = try adoptRotations(from: key, announced: bundle.keyRotations, nowMillis: nowMillis)
        var received = bundle
        // Revocations are never forgotten: a relay that stops serving one cannot revive a key.
        received.overlayKeyRevocations += try stored(.overlayKeyRevocation)
        let verified = VerifiedGovernance.verify(received, keyring: keyring, tenant: identity.tenant.rawValue)
        // A rollout older than one already seen is a replay (a relay rolling its branch
        // back on its own): keep what is held and say so.
        let seen = try highestRollout()
        if let rollout = verified.rollout, rollout.sequence < seen {
            let refusal = Self.replayRefusal(rollout.sequence, seen: seen)
            logger.error("governance document refused", metadata: ["reason": "\(refusal)"])
            lastRefusals.withLock { $0 = [refusal] }
            return try evaluate(nowMillis: nowMillis)
        }
        if let rollout = verified.rollout, rollout.sequence > seen { try store.setMeta(Self.rolloutMeta, String(rollout.sequence)) }
        for refusal in verified.refusals {
            logger.error("governance document refused", metadata: ["reason": "\(refusal)"])
        }
        // What a key retired since signed cannot change: a release or rollout signed by such a
        // key, received under a version held here with other content, is refused and the one
        // held stays. Whoever kept the retired key re-signed v1 with their own content, and it
        // replaced the release a node ran, which still reported v1 applied. (The current key
        // may sign a version again: HQ restored from a backup publishes it anew.)
        let held = Dictionary(try store.governanceDocuments().map { ("\($0.kind)|\($0.key)|\($0.seq)", $0) }) { first, _ in first }
        let currentKey = keyring.keys.first?.keyID
        var refusals = verified.refusals
        let documents = verified.accepted.map { a -> StoredGovernanceDocument in
            let received = StoredGovernanceDocument(kind: a.kind.rawValue, key: a.key, seq: a.seq, body: a.document.json)
            guard a.kind == .release || a.kind == .rollout, a.document.keyID != currentKey,
                  let kept = held["\(received.kind)|\(received.key)|\(received.seq)"], let keptDocument = SignedDocument(json: kept.body),
                  keptDocument.payload != a.document.payload else { return received }
            refusals.append("\(a.kind.rawValue) \(a.seq): signed by retired key \(a.document.keyID) with content other than the one held here: refused, the one held is kept")
            return kept
        }
        for refusal in refusals.dropFirst(verified.refusals.count) {
            logger.error("governance document refused", metadata: ["reason": "\(refusal)"])
        }
        // Own overlay (a country's) is authored here, never received: keep it.
        try store.replaceGovernanceDocuments(kinds: ["release", "rollout", "overlay"], keeping: (kind: "overlay", key: identity.node.rawValue), with: documents,
                                             nowMillis: nowMillis)
        lastRefusals.withLock { $0 = refusals }
        return try evaluate(nowMillis: nowMillis)
    }

    /// Decides from the documents kept (after a bundle, when a pending release comes due,
    /// after the node's own overlay changed) and records the decision if it differs from
    /// the last one.
    @discardableResult
    public func evaluate(nowMillis: UInt64 = WallClock.nowMillis()) throws -> GovernanceDecision? {
        guard let key = try releaseKey() else { return nil }
        var verified = try verifiedStore(key: key)
        verified.refusals += lastRefusals.withLock { $0 }
        let decision = GovernanceResolver.decide(node: identity.node.rawValue, parent: parentNode()?.rawValue,
                                                 verified: verified, nowMillis: nowMillis)
        guard decision.state != .none || !decision.problems.isEmpty else { return nil }
        let inForce = try store.appliedGovernance()
        let application: GovernanceApplication
        switch decision.state {
        case .applied:
            let effective = decision.effective.map { String(decoding: $0.canonicalJSON(), as: UTF8.self) }
            application = GovernanceApplication(release: decision.release?.version, overlay: decision.overlay?.label, rollout: decision.rollout,
                                                state: "applied", message: decision.problems.isEmpty ? nil : decision.problems.joined(separator: "; "),
                                                effective: effective, appliedAtMillis: nowMillis)
        case .pending, .refused, .none:
            // Keep running what is in force; say what is waiting or was refused. While a
            // release waits, what the rollouts before give the node is in force: for a node
            // enrolled meanwhile, which has applied nothing, and with its country's overlay
            // published meanwhile.
            let earlier = decision.state == .pending
                ? GovernanceResolver.inEffectBefore(node: identity.node.rawValue, parent: parentNode()?.rawValue, verified: verified, nowMillis: nowMillis)
                : nil
            if let earlier, let release = earlier.release, let effective = earlier.effective {
                application = GovernanceApplication(release: release.version, overlay: earlier.overlay?.label, rollout: decision.rollout,
                                                    state: "pending", message: (decision.problems + earlier.problems).joined(separator: "; "),
                                                    effective: String(decoding: effective.canonicalJSON(), as: UTF8.self), appliedAtMillis: nowMillis)
            } else {
                application = GovernanceApplication(release: inForce?.release, overlay: inForce?.overlay, rollout: decision.rollout,
                                                    state: decision.state == .pending ? "pending" : "refused",
                                                    message: decision.problems.joined(separator: "; "), effective: inForce?.effective,
                                                    appliedAtMillis: nowMillis)
            }
        }
        let current = try store.currentGovernance()
        if let current, current.release == application.release, current.overlay == application.overlay, current.state == application.state,
           current.message == application.message, current.effective == application.effective {
            return nil
        }
        try store.recordGovernanceApplication(application)
        try report(application)
        switch decision.state {
        case .applied:
            logger.notice("governance applied", metadata: [
                "release": "\(application.release.map { "v\($0)" } ?? "-")", "overlay": "\(application.overlay ?? "-")",
                "rollout": "\(decision.rollout ?? 0)",
            ])
            if let message = application.message { logger.error("governance partly refused", metadata: ["reason": "\(message)"]) }
        case .pending:
            logger.notice("governance release pending", metadata: ["detail": "\(application.message ?? "")"])
        case .refused, .none:
            logger.error("governance release refused; keeping the one in force", metadata: ["reason": "\(application.message ?? "")"])
        }
        return decision
    }

    /// When a pending release takes effect, if one is waiting.
    func pendingDueMillis() throws -> UInt64? {
        guard let key = try releaseKey() else { return nil }
        let (verified, now) = (try verifiedStore(key: key), WallClock.nowMillis())
        let decision = GovernanceResolver.decide(node: identity.node.rawValue, parent: parentNode()?.rawValue, verified: verified, nowMillis: now)
        return GovernanceResolver.nextChange(of: decision, verified: verified, nowMillis: now)
    }

    /// Follows HQ's key rotations from `key` (the one held here): keeps every announcement
    /// that passed (they are never dropped, so the keys they retired stay known for what those
    /// signed before) and, when a rotation hands over to a new key, holds that key from now
    /// on. An announcement not signed by the key in force is refused (and reported).
    private func adoptRotations(from key: GovernancePublicKey, announced: [SignedDocument], nowMillis: UInt64) throws -> GovernanceKeyring {
        let kept = try stored(.keyRotation)
        let keyring = GovernanceKeyring(anchor: key, rotations: kept + announced, tenant: identity.tenant.rawValue)
        let keptBodies = Set(kept.map(\.json))
        for (rotation, document) in keyring.accepted where !keptBodies.contains(document.json) {
            try store.putGovernanceDocument(StoredGovernanceDocument(kind: SignedDocument.Kind.keyRotation.rawValue, key: String(rotation.sequence),
                                                                     seq: rotation.sequence, body: document.json), nowMillis: nowMillis)
        }
        if keyring.current != key {
            try store.setMeta(Self.keyMeta, keyring.current.base64)
            logger.notice("adopted HQ's new governance release key, announced and signed by the key held", metadata: [
                "previous": "\(key)", "new": "\(keyring.current)", "rotation": "\(keyring.accepted.last?.rotation.sequence ?? 0)",
            ])
        }
        for refusal in keyring.refusals { logger.error("governance key rotation refused", metadata: ["reason": "\(refusal)"]) }
        return keyring
    }

    /// HQ's keys as this node holds them: the key in force and, through the key rotations
    /// kept here, the keys it replaced (valid for what they signed before). Nil without a key.
    public func keyring() throws -> GovernanceKeyring? {
        guard let key = try releaseKey() else { return nil }
        return GovernanceKeyring(anchor: key, rotations: try stored(.keyRotation), tenant: identity.tenant.rawValue)
    }

    private func stored(_ kind: SignedDocument.Kind) throws -> [SignedDocument] {
        try store.governanceDocuments(kind: kind.rawValue).compactMap { SignedDocument(json: $0.body) }
    }

    /// The documents kept here, each checked again (a stored document is only as good as
    /// its signature); a kept rollout older than one already received is set aside.
    private func verifiedStore(key: GovernancePublicKey) throws -> VerifiedGovernance {
        Self.verify(stored: try store.governanceDocuments(), key: key, tenant: identity.tenant.rawValue, highestRollout: try highestRollout())
    }

    /// Kept documents, each checked again against `key` (and the rotations kept): what a
    /// node may decide from. A kept rollout older than `highestRollout` is set aside as a replay.
    /// Shared with ``AllocationPolicy``, which decides from the same documents.
    static func verify(stored: [StoredGovernanceDocument], key: GovernancePublicKey, tenant: String, highestRollout seen: Int) -> VerifiedGovernance {
        func documents(_ kind: SignedDocument.Kind) -> [SignedDocument] {
            stored.filter { $0.kind == kind.rawValue }.compactMap { SignedDocument(json: $0.body) }
        }
        let keyring = GovernanceKeyring(anchor: key, rotations: documents(.keyRotation), tenant: tenant)
        var verified = VerifiedGovernance.verify(rollouts: documents(.rollout), releases: documents(.release), overlays: documents(.overlay),
                                                 revocations: documents(.overlayKeyRevocation), keyring: keyring, tenant: tenant)
        if let rollout = verified.rollout, rollout.sequence < seen {
            verified.refusals.append(Self.replayRefusal(rollout.sequence, seen: seen))
            verified.rollout = nil
        }
        return verified
    }

    private func highestRollout() throws -> Int { Int(try store.meta(Self.rolloutMeta) ?? "0") ?? 0 }

    private static func replayRefusal(_ sequence: Int, seen: Int) -> String {
        "rollout \(sequence) refused: older than rollout \(seen) already received (replayed by a relay?)"
    }

    func releaseKey() throws -> GovernancePublicKey? {
        guard let text = try store.meta(Self.keyMeta) else { return nil }
        guard let key = GovernancePublicKey(base64: text) else {
            logger.error("the stored release key is not a valid Ed25519 public key", metadata: ["key": "\(text.prefix(60))"])
            return nil
        }
        return key
    }

    /// Writes the node's `governance_status` record; the push loop carries it upward.
    private func report(_ a: GovernanceApplication) throws {
        let at = ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double(a.appliedAtMillis) / 1000))
        try store.commit([.upsert(DomainSchema.governanceStatus.name, id: identity.node.rawValue, [
            "node": .string(identity.node.rawValue),
            "release": a.release.map { .int(Int64($0)) } ?? .null,
            "overlay": a.overlay.map(FieldValue.string) ?? .null,
            "rollout": a.rollout.map { .int(Int64($0)) } ?? .null,
            "state": .string(a.state),
            "message": a.message.map { .string(String($0.prefix(4000))) } ?? .null,
            "applied_at": .string(at),
        ])])
    }
}

import Foundation
import Logging
import TiersyncCore
import TiersyncGovernance
import TiersyncStore

/// A country's side of overlays: checks an authored overlay against the release the
/// country runs (the same check every dealer repeats), signs it with the country's key
/// that HQ certified, and keeps it in the country's store, from where its hub serves it.
public enum OverlayPublisher {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        public let issues: GovernanceIssues?
        init(_ description: String, issues: GovernanceIssues? = nil) {
            self.description = description
            self.issues = issues
        }
    }

    /// Publishes `source`; returns the signed overlay. Refuses (naming the field and the
    /// limit) an overlay that oversteps HQ's bounds.
    @discardableResult
    public static func publish(_ source: OverlaySource, keyFile: OverlayKeyFile, store: NodeStore,
                               nowMillis: UInt64 = WallClock.nowMillis(),
                               logger: Logger = Logger(label: "tiersync.overlay")) throws -> Overlay {
        guard let identity = try store.identity() else { throw Failure("this store is not enrolled") }
        guard source.country == identity.node.rawValue else {
            throw Failure("\(source.file): the overlay is for '\(source.country)', but this node is '\(identity.node)'")
        }
        guard keyFile.node == identity.node.rawValue, keyFile.tenant == identity.tenant.rawValue else {
            throw Failure("the overlay key is certified for \(keyFile.tenant)/\(keyFile.node), not \(identity.tenant)/\(identity.node)")
        }
        // HQ's keys as this node follows them (its release key and the rotations it took):
        // the release in force may be signed by a key HQ rotated to since enrollment.
        let follower = GovernanceFollower(store: store, identity: identity, parentNode: { identity.parent }, logger: logger)
        guard let keyring = try follower.keyring() else {
            throw Failure("this node holds no HQ release key yet (it arrives at enrollment)")
        }
        let key = try GovernanceSigningKey(base64: keyFile.privateKey)
        guard let applied = try store.appliedGovernance(), let version = applied.release else {
            throw Failure("no release is in force at \(identity.node) yet: an overlay is checked against HQ's release, so wait for one")
        }
        guard let stored = try store.governanceDocuments(kind: "release", keys: [String(version)]).first,
              let envelope = SignedDocument(json: stored.body) else {
            throw Failure("release \(version) is in force but not stored here")
        }
        let release = try keyring.openRelease(envelope)
        let previous = try store.governanceDocuments(kind: "overlay", keys: [identity.node.rawValue]).first?.seq ?? 0
        let draft = Overlay(tenant: identity.tenant.rawValue, country: identity.node.rawValue, sequence: previous + 1,
                            createdAtMillis: nowMillis, basedOn: version, set: source.set)
        let checked: Overlay
        switch draft.checked(against: release) {
        case .success(let overlay): checked = overlay
        case .failure(let refusals):
            let located = source.locate(refusals)
            throw Failure("overlay refused against release \(version):\n\(located)", issues: located)
        }
        let document = try key.sign(checked, as: .overlay, certificate: keyFile.certificate)
        // Prove now what every dealer will check: HQ certified this key for this country, and
        // has not revoked it since (an overlay signed with a revoked key was reported
        // published, and every node refused it).
        let revocation = try store.governanceDocuments(kind: SignedDocument.Kind.overlayKeyRevocation.rawValue)
            .compactMap { SignedDocument(json: $0.body).flatMap { try? keyring.openRevocation($0) } }
            .filter { $0.node == identity.node.rawValue && $0.tenant == identity.tenant.rawValue }
            .max { $0.revokedAtMillis < $1.revokedAtMillis }
        _ = try keyring.openOverlay(document, tenant: identity.tenant.rawValue, expectedCountry: identity.node.rawValue, revocation: revocation)
        try store.putGovernanceDocument(StoredGovernanceDocument(kind: "overlay", key: identity.node.rawValue, seq: checked.sequence, body: document.json),
                                        nowMillis: nowMillis)
        // The country itself runs release ⊕ its overlay: decide now rather than on the
        // agent's next round, so its status is current at once.
        try follower.evaluate(nowMillis: nowMillis)
        return checked
    }
}

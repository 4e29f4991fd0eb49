import Foundation

/// The governance documents a node holds after checking every signature: what it may
/// base a decision on, plus what it refused and why.
public struct VerifiedGovernance: Sendable {
    /// The newest rollout that passed.
    public var rollout: Rollout?
    /// Every rollout that passed, newest first (``rollout`` and those before it).
    public var rollouts: [Rollout] = []
    public var releases: [Int: Release] = [:]
    /// Overlays by country.
    public var overlays: [String: Overlay] = [:]
    /// One line per refused document ("release 4 refused: signature does not match …").
    public var refusals: [String] = []
    /// The newest overlay-key revocation of each country, with its envelope.
    public var revocations: [String: (revocation: OverlayKeyRevocation, document: SignedDocument)] = [:]
    /// The envelopes that passed, to keep and to serve on (a country's dealers verify
    /// them again: a relay is never trusted).
    public var accepted: [(kind: SignedDocument.Kind, key: String, seq: Int, document: SignedDocument)] = []

    public init() {}

    /// Checks every document of `bundle` against HQ's `key`. Overlays are checked against
    /// HQ's certificate of the country's key; whether they fit a release is decided later,
    /// against the release being applied.
    public static func verify(_ bundle: GovernanceBundle, key: GovernancePublicKey, tenant: String) -> VerifiedGovernance {
        verify(bundle, keyring: GovernanceKeyring(key: key), tenant: tenant)
    }

    /// Checks every document of `bundle` against HQ's keys (the key rotations are applied
    /// by whoever built `keyring`).
    public static func verify(_ bundle: GovernanceBundle, keyring: GovernanceKeyring, tenant: String) -> VerifiedGovernance {
        verify(rollouts: (bundle.rollout.map { [$0] } ?? []) + bundle.earlierRollouts, releases: bundle.releases, overlays: bundle.overlays,
               revocations: bundle.overlayKeyRevocations, keyring: keyring, tenant: tenant)
    }

    public static func verify(rollouts: [SignedDocument], releases: [SignedDocument], overlays: [SignedDocument],
                              key: GovernancePublicKey, tenant: String) -> VerifiedGovernance {
        verify(rollouts: rollouts, releases: releases, overlays: overlays, revocations: [], keyring: GovernanceKeyring(key: key), tenant: tenant)
    }

    /// Checks documents against `keyring`: the key in force, or a key it replaced for what
    /// that key signed before its rotation. Overlay-key revocations are checked first; an
    /// overlay whose key's certificate a revocation covers is refused.
    public static func verify(rollouts: [SignedDocument], releases: [SignedDocument], overlays: [SignedDocument],
                              revocations: [SignedDocument], keyring: GovernanceKeyring, tenant: String) -> VerifiedGovernance {
        var v = VerifiedGovernance()
        v.refusals = keyring.refusals
        for (rotation, doc) in keyring.accepted {
            v.accepted.append((.keyRotation, String(rotation.sequence), rotation.sequence, doc))
        }
        for doc in revocations {
            do {
                let revocation = try keyring.openRevocation(doc)
                guard revocation.tenant == tenant else {
                    throw GovernanceRefusal.wrongTenant(kind: SignedDocument.Kind.overlayKeyRevocation.rawValue, tenant: revocation.tenant)
                }
                // Revocations add up: the one covering the most (the latest revoked-at) stands,
                // whatever its sequence. Taken by sequence, a retired key's holder (the reason
                // keys are rotated) signed a revocation numbered Int.max revoking before 1970,
                // and every revoked certificate was valid again, for good.
                if let held = v.revocations[revocation.node]?.revocation,
                   (revocation.revokedAtMillis, revocation.sequence) <= (held.revokedAtMillis, held.sequence) {
                    continue
                }
                v.revocations[revocation.node] = (revocation, doc)
            } catch {
                v.refusals.append("overlay-key-revocation of \(Self.claimed(doc, "node")): \(error)")
            }
        }
        for (node, entry) in v.revocations.sorted(by: { $0.key < $1.key }) {
            v.accepted.append((.overlayKeyRevocation, node, entry.revocation.sequence, entry.document))
        }
        for doc in rollouts {
            do {
                let rollout = try keyring.openRollout(doc)
                guard rollout.tenant == tenant else { throw GovernanceRefusal.wrongTenant(kind: "rollout", tenant: rollout.tenant) }
                if rollout.sequence > (v.rollout?.sequence ?? 0) { v.rollout = rollout }
                if !v.rollouts.contains(where: { $0.sequence == rollout.sequence }) { v.rollouts.append(rollout) }
                v.accepted.append((.rollout, String(rollout.sequence), rollout.sequence, doc))
            } catch {
                v.refusals.append("rollout \(Self.claimed(doc, "sequence")): \(error)")
            }
        }
        v.rollouts.sort { $0.sequence > $1.sequence }
        for doc in releases {
            do {
                let release = try keyring.openRelease(doc)
                guard release.tenant == tenant else { throw GovernanceRefusal.wrongTenant(kind: "release", tenant: release.tenant) }
                v.releases[release.version] = release
                v.accepted.append((.release, String(release.version), release.version, doc))
            } catch {
                v.refusals.append("release \(Self.claimed(doc, "version")): \(error)")
            }
        }
        for doc in overlays {
            let country = Self.claimed(doc, "country")
            do {
                let overlay = try keyring.openOverlay(doc, tenant: tenant, expectedCountry: country, revocation: v.revocations[country]?.revocation)
                if overlay.sequence > (v.overlays[country]?.sequence ?? 0) { v.overlays[country] = overlay }
                v.accepted.append((.overlay, country, overlay.sequence, doc))
            } catch {
                v.refusals.append("overlay of \(country): \(error)")
            }
        }
        return v
    }

    /// A field of a document's payload read *without* trusting it: only to name the
    /// document in a refusal or to pick the key to check it with.
    static func claimed(_ doc: SignedDocument, _ field: String) -> String {
        guard let data = Data(base64Encoded: doc.payload),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let value = object[field] else { return "?" }
        // Unverified: whatever the sender wrote, so only its start goes into logs and decisions.
        let text = "\(value)"
        return text.utf8.count <= 100 ? text : String(decoding: Array(text.utf8.prefix(100)), as: UTF8.self) + "…"
    }
}

/// What a node should run, decided from verified documents.
public struct GovernanceDecision: Sendable, Equatable {
    public enum State: String, Sendable {
        /// `release` (⊕ `overlay`) is in force.
        case applied
        /// The release meant for the node takes effect later; keep the current one.
        case pending
        /// The release meant for the node was refused or never arrived; keep the current one.
        case refused
        /// No rollout covers this node yet.
        case none
    }

    public var state: State
    public var rollout: Int?
    public var release: Release?
    public var overlay: Overlay?
    /// release ⊕ overlay, when applied.
    public var effective: ConfigValue?
    /// What was refused or is pending, for the status report.
    public var problems: [String] = []
    /// When a pending release takes effect (ms since the epoch).
    public var pendingUntilMillis: UInt64?
}

public enum GovernanceResolver {
    /// Decides for `node` (whose parent is `parent`): the release the newest rollout
    /// meets it with, if verified and in effect, and its country's overlay — the node's own
    /// for a country, its parent's for a dealer — if it fits that release's limits.
    /// An overlay that oversteps is refused (with the reason) and the release applies alone.
    public static func decide(node: String, parent: String?, verified: VerifiedGovernance, nowMillis: UInt64) -> GovernanceDecision {
        guard let rollout = verified.rollout else {
            return GovernanceDecision(state: .none, problems: verified.refusals)
        }
        guard let version = rollout.release(for: node, ancestors: parent.map { [$0] } ?? []) else {
            return GovernanceDecision(state: .none, rollout: rollout.sequence, problems: verified.refusals)
        }
        guard let release = verified.releases[version] else {
            let why = verified.refusals.first { $0.hasPrefix("release \(version):") } ?? "release \(version) was not received"
            return GovernanceDecision(state: .refused, rollout: rollout.sequence, problems: [why] + keyProblems(verified))
        }
        if release.effectiveFromMillis > nowMillis {
            return GovernanceDecision(state: .pending, rollout: rollout.sequence, release: release,
                                      problems: ["release \(version) takes effect at \(Self.iso(release.effectiveFromMillis))"],
                                      pendingUntilMillis: release.effectiveFromMillis)
        }
        return applied(node: node, parent: parent, verified: verified, rollout: rollout, release: release)
    }

    /// While the release the newest rollout meets `node` with is not yet in effect: what the
    /// rollouts before it give the node, the newest release among them in effect at
    /// `nowMillis` (with its country's overlay), as an applied decision; nil when none does.
    ///
    /// A node keeps what it last applied while a release waits. One enrolled meanwhile has
    /// nothing applied, and ran no governance at all until the release came due: its
    /// dialogues were never allocated (helper 90). It runs this instead, which is what the
    /// rest of the tenant runs.
    ///
    /// Only an unbroken run of rollouts down from the newest counts (HQ numbers them one
    /// after another): a relay that left some out and sent an old one, genuinely signed,
    /// would otherwise put its subtree back on a release withdrawn since.
    public static func inEffectBefore(node: String, parent: String?, verified: VerifiedGovernance, nowMillis: UInt64) -> GovernanceDecision? {
        guard let newest = verified.rollout else { return nil }
        var expected = newest.sequence - 1
        for rollout in verified.rollouts where rollout.sequence < newest.sequence {
            guard rollout.sequence == expected else { return nil }
            expected -= 1
            guard let version = rollout.release(for: node, ancestors: parent.map { [$0] } ?? []) else { continue }
            guard let release = verified.releases[version], release.effectiveFromMillis <= nowMillis else { continue }
            return applied(node: node, parent: parent, verified: verified, rollout: rollout, release: release)
        }
        return nil
    }

    /// When what `decision` (at `nowMillis`) leaves a node running changes by the clock
    /// alone: while a release waits, the earliest effective-from of any release held, since
    /// one of an earlier rollout may come due first and take over (``inEffectBefore(node:parent:verified:nowMillis:)``).
    /// Nil when nothing waits.
    public static func nextChange(of decision: GovernanceDecision, verified: VerifiedGovernance, nowMillis: UInt64) -> UInt64? {
        guard let until = decision.pendingUntilMillis else { return nil }
        return min(until, verified.releases.values.map(\.effectiveFromMillis).filter { $0 > nowMillis }.min() ?? until)
    }

    /// `release` of `rollout` applied to `node`, with its country's overlay if it fits.
    private static func applied(node: String, parent: String?, verified: VerifiedGovernance, rollout: Rollout, release: Release) -> GovernanceDecision {
        let version = release.version
        var decision = GovernanceDecision(state: .applied, rollout: rollout.sequence, release: release, effective: release.config)
        // A refused (e.g. replayed) rollout does not change what runs, but is reported; so
        // is a refused key rotation or overlay-key revocation (a forged one, say).
        decision.problems += verified.refusals.filter { $0.hasPrefix("rollout ") } + keyProblems(verified)
        // So is another copy of the release in force that was refused (re-signed with other content).
        decision.problems += verified.refusals.filter { $0.hasPrefix("release \(version):") }
        // A country's own overlay (kept, or refused: its refusal is reported too), else its parent's.
        let ownRefused = verified.refusals.contains { $0.hasPrefix("overlay of \(node):") }
        let country = verified.overlays[node] != nil || ownRefused ? node : parent
        let overlayRefusal = verified.refusals.first { r in country.map { r.hasPrefix("overlay of \($0):") } ?? false }
        if let overlayRefusal { decision.problems.append(overlayRefusal) }
        if let country, let overlay = verified.overlays[country] {
            switch overlay.checked(against: release) {
            case .success(let checked):
                decision.overlay = checked
                decision.effective = checked.apply(to: release.config)
            case .failure(let refusals):
                decision.problems.append("overlay \(overlay.label) refused against release \(version): \(refusals)")
            }
        }
        return decision
    }

    /// Refused key rotations and overlay-key revocations: reported whatever was decided.
    static func keyProblems(_ verified: VerifiedGovernance) -> [String] {
        verified.refusals.filter { $0.hasPrefix("key-rotation ") || $0.hasPrefix("overlay-key-revocation ") }
    }

    static func iso(_ millis: UInt64) -> String {
        ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double(millis) / 1000))
    }
}

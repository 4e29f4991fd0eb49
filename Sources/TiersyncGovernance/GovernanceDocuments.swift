import Foundation

/// An immutable, versioned governance release as HQ signs it.
public struct Release: Sendable, Hashable, Codable {
    public var tenant: String
    public var version: Int
    public var publishedAtMillis: UInt64
    /// Nodes keep their current release until this time, then switch.
    public var effectiveFromMillis: UInt64
    public var notes: String?
    /// SHA-256 of the source files it was compiled from.
    public var sourceDigest: String
    public var config: ConfigValue
    /// The fields countries may override, and how far.
    public var overrides: [OverrideRule]

    public init(tenant: String, version: Int, publishedAtMillis: UInt64, effectiveFromMillis: UInt64, notes: String?,
                sourceDigest: String, config: ConfigValue, overrides: [OverrideRule]) {
        self.tenant = tenant
        self.version = version
        self.publishedAtMillis = publishedAtMillis
        self.effectiveFromMillis = effectiveFromMillis
        self.notes = notes
        self.sourceDigest = sourceDigest
        self.config = config
        self.overrides = overrides
    }
}

/// Which release each node should run, as HQ signs it. Stages are tried in order and the
/// first whose targets include the node (or its parent) decides; `targets == nil` means
/// every node. A trial is `[{v3, [de]}, {v2, nil}]`; a rollback is a new rollout that
/// points back at an older release. The highest sequence is in force.
public struct Rollout: Sendable, Hashable, Codable {
    public struct Stage: Sendable, Hashable, Codable {
        public var release: Int
        public var targets: [String]?

        public init(release: Int, targets: [String]?) {
            self.release = release
            self.targets = targets
        }

        public func includes(node: String, ancestors: [String]) -> Bool {
            guard let targets else { return true }
            return targets.contains(node) || ancestors.contains(where: targets.contains)
        }
    }

    public var tenant: String
    public var sequence: Int
    public var issuedAtMillis: UInt64
    public var stages: [Stage]
    /// Why it was issued (`publish`, `rollback to 2`, …), for the audit trail.
    public var reason: String

    public init(tenant: String, sequence: Int, issuedAtMillis: UInt64, stages: [Stage], reason: String) {
        self.tenant = tenant
        self.sequence = sequence
        self.issuedAtMillis = issuedAtMillis
        self.stages = stages
        self.reason = reason
    }

    /// The release meant for `node`, if any stage covers it.
    public func release(for node: String, ancestors: [String]) -> Int? {
        stages.first { $0.includes(node: node, ancestors: ancestors) }?.release
    }

    /// This rollout as shown to someone concerned with `concerned` (a country's subtree and
    /// the nodes above it): the stages for everyone or naming one of them, each naming only
    /// those; and whether any stage was left out. Another country's trial is not theirs to read.
    public func shown(to concerned: Set<String>) -> (rollout: Rollout, omitted: Bool) {
        var shown = self
        shown.stages = stages.compactMap { stage in
            guard let targets = stage.targets else { return stage }
            let mine = targets.filter(concerned.contains)
            return mine.isEmpty ? nil : Stage(release: stage.release, targets: mine)
        }
        return (shown, shown.stages != stages)
    }

    /// "v3 → de, fr; v2 → everyone else".
    public var summary: String {
        stages.enumerated().map { i, s in
            "v\(s.release) → " + (s.targets.map { $0.joined(separator: ", ") } ?? (i == 0 ? "everyone" : "everyone else"))
        }.joined(separator: "; ")
    }
}

/// HQ's statement that `publicKey` may sign overlays for country `node`.
public struct OverlayCertificate: Sendable, Hashable, Codable {
    public var tenant: String
    public var node: String
    public var publicKey: String
    public var issuedAtMillis: UInt64

    public init(tenant: String, node: String, publicKey: String, issuedAtMillis: UInt64) {
        self.tenant = tenant
        self.node = node
        self.publicKey = publicKey
        self.issuedAtMillis = issuedAtMillis
    }
}

/// HQ's announcement that its release key changes from `previousKey` to `newKey` (both
/// base64 Ed25519 public keys). Signed by the previous key (a node switches only to a key
/// announced by the key it holds) and countersigned by the new one (so a node that learned
/// the new key at enrollment can accept what the previous one signed before). The previous
/// key stays valid for what it signed before the rotation, and only for that: releases up
/// to `releasesThrough`, rollouts up to `rolloutsThrough`, overlay-key certificates and
/// overlay-key revocations made up to `rotatedAtMillis`.
public struct KeyRotation: Sendable, Hashable, Codable {
    public var tenant: String
    /// 1 for the tenant's first rotation, then 2, 3, …
    public var sequence: Int
    public var previousKey: String
    public var newKey: String
    public var rotatedAtMillis: UInt64
    public var releasesThrough: Int
    public var rolloutsThrough: Int

    public init(tenant: String, sequence: Int, previousKey: String, newKey: String, rotatedAtMillis: UInt64,
                releasesThrough: Int, rolloutsThrough: Int) {
        self.tenant = tenant
        self.sequence = sequence
        self.previousKey = previousKey
        self.newKey = newKey
        self.rotatedAtMillis = rotatedAtMillis
        self.releasesThrough = releasesThrough
        self.rolloutsThrough = rolloutsThrough
    }
}

/// HQ's statement that every overlay-key certificate it issued to country `node` up to
/// `revokedAtMillis` is revoked: overlays signed with those keys are refused, and nodes
/// apply the release alone. A key certified later (`admin overlay-key` after the
/// revocation) is valid. The newest revocation of a country (highest `sequence`) covers
/// every earlier one.
public struct OverlayKeyRevocation: Sendable, Hashable, Codable {
    public var tenant: String
    public var node: String
    public var sequence: Int
    public var revokedAtMillis: UInt64
    public var reason: String?

    public init(tenant: String, node: String, sequence: Int, revokedAtMillis: UInt64, reason: String? = nil) {
        self.tenant = tenant
        self.node = node
        self.sequence = sequence
        self.revokedAtMillis = revokedAtMillis
        self.reason = reason
    }
}

/// The governance documents a node receives from its parent in one long-poll answer.
/// `token` names the content: a node that states the token it holds waits for a new one.
public struct GovernanceBundle: Sendable, Equatable, Codable {
    public var token: String
    public var rollout: SignedDocument?
    public var releases: [SignedDocument]
    public var overlays: [SignedDocument]
    /// Every release-key rotation of the tenant, oldest first (absent from hubs that predate
    /// rotation: read as none).
    public var keyRotations: [SignedDocument]
    /// The overlay-key revocations of the caller's ancestors and its own (likewise).
    public var overlayKeyRevocations: [SignedDocument]
    /// While a release of ``rollout`` is not yet in effect: the rollouts before it, newest
    /// first, back to one whose releases for the caller's subtree are all in effect (their
    /// releases are in ``releases``). A node enrolled meanwhile runs what they give it
    /// (``GovernanceResolver/inEffectBefore(node:parent:verified:nowMillis:)``), and a country
    /// keeps the release it runs to check its overlay against. Absent from older hubs: none.
    public var earlierRollouts: [SignedDocument]

    public init(token: String, rollout: SignedDocument?, releases: [SignedDocument], overlays: [SignedDocument],
                keyRotations: [SignedDocument] = [], overlayKeyRevocations: [SignedDocument] = [], earlierRollouts: [SignedDocument] = []) {
        self.token = token
        self.rollout = rollout
        self.releases = releases
        self.overlays = overlays
        self.keyRotations = keyRotations
        self.overlayKeyRevocations = overlayKeyRevocations
        self.earlierRollouts = earlierRollouts
    }

    private enum CodingKeys: String, CodingKey {
        case token, rollout, releases, overlays, keyRotations, overlayKeyRevocations, earlierRollouts
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        token = try c.decode(String.self, forKey: .token)
        rollout = try c.decodeIfPresent(SignedDocument.self, forKey: .rollout)
        releases = try c.decode([SignedDocument].self, forKey: .releases)
        overlays = try c.decode([SignedDocument].self, forKey: .overlays)
        keyRotations = try c.decodeIfPresent([SignedDocument].self, forKey: .keyRotations) ?? []
        overlayKeyRevocations = try c.decodeIfPresent([SignedDocument].self, forKey: .overlayKeyRevocations) ?? []
        earlierRollouts = try c.decodeIfPresent([SignedDocument].self, forKey: .earlierRollouts) ?? []
    }
}

/// One row of the rollout-status table: what a node reports it applied.
public struct RolloutStatusRow: Sendable, Equatable, Codable {
    public var node: String
    public var parent: String?
    public var role: String
    public var release: Int?
    public var overlay: String?
    /// applied, pending (waiting for effective-from), refused, or unknown (never reported).
    public var state: String
    public var message: String?
    public var appliedAtMillis: UInt64?
    public var lastSeenMillis: UInt64?

    public init(node: String, parent: String?, role: String, release: Int?, overlay: String?, state: String, message: String?,
                appliedAtMillis: UInt64?, lastSeenMillis: UInt64?) {
        self.node = node
        self.parent = parent
        self.role = role
        self.release = release
        self.overlay = overlay
        self.state = state
        self.message = message
        self.appliedAtMillis = appliedAtMillis
        self.lastSeenMillis = lastSeenMillis
    }
}

public struct RolloutStatusResponse: Sendable, Equatable, Codable {
    public var tenant: String
    /// The rollout in force at the answering hub.
    public var rollout: Int?
    public var stages: String?
    public var nodes: [RolloutStatusRow]

    public init(tenant: String, rollout: Int?, stages: String?, nodes: [RolloutStatusRow]) {
        self.tenant = tenant
        self.rollout = rollout
        self.stages = stages
        self.nodes = nodes
    }
}

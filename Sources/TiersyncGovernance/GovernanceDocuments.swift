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

/// The governance documents a node receives from its parent in one long-poll answer.
/// `token` names the content: a node that states the token it holds waits for a new one.
public struct GovernanceBundle: Sendable, Equatable, Codable {
    public var token: String
    public var rollout: SignedDocument?
    public var releases: [SignedDocument]
    public var overlays: [SignedDocument]

    public init(token: String, rollout: SignedDocument?, releases: [SignedDocument], overlays: [SignedDocument]) {
        self.token = token
        self.rollout = rollout
        self.releases = releases
        self.overlays = overlays
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

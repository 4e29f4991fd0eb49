import Foundation
import TiersyncCore
import TiersyncGovernance
import TiersyncStore

/// HQ's side of governance: turns a compiled directory into a signed release, and says
/// which nodes run which release (rollouts: staged, promoted, rolled back). Everything is
/// written to the tenant's store, from where the hub serves it to its nodes.
public struct GovernancePublisher: Sendable {
    public let store: NodeStore
    public let tenant: TenantID
    public let key: GovernanceSigningKey
    /// The tenant's tree, to check rollout targets against.
    public let tree: NodeTree

    public init(store: NodeStore, tenant: TenantID, key: GovernanceSigningKey, tree: NodeTree) {
        self.store = store
        self.tenant = tenant
        self.key = key
        self.tree = tree
    }

    /// Every published release, oldest first.
    public func releases() throws -> [Release] {
        try store.governanceDocuments(kind: SignedDocument.Kind.release.rawValue).map { try open($0, as: .release, Release.self) }
    }

    /// Every rollout issued, oldest first; the last one is in force.
    public func rollouts() throws -> [Rollout] {
        try store.governanceDocuments(kind: SignedDocument.Kind.rollout.rawValue).map { try open($0, as: .rollout, Rollout.self) }
    }

    /// Signs `compiled` as the next release and rolls it out to `targets` (nil: every node).
    public func publish(_ compiled: CompiledGovernance, effectiveFromMillis: UInt64? = nil, notes: String? = nil,
                        targets: [NodeID]? = nil, nowMillis: UInt64 = WallClock.nowMillis()) throws -> (Release, Rollout) {
        guard compiled.tenant == tenant.rawValue else {
            throw GovernancePublishError("the sources are for tenant '\(compiled.tenant)' (governance.tenant), not '\(tenant)'")
        }
        try check(targets)
        let version = (try releases().map(\.version).max() ?? 0) + 1
        let release = Release(tenant: tenant.rawValue, version: version, publishedAtMillis: nowMillis,
                              effectiveFromMillis: effectiveFromMillis ?? nowMillis, notes: notes,
                              sourceDigest: compiled.sourceDigest, config: compiled.config, overrides: compiled.overrides)
        try put(try key.sign(release, as: .release), kind: .release, seq: version, nowMillis: nowMillis)
        let rollout = try roll(out: version, to: targets, reason: "publish v\(version)", nowMillis: nowMillis)
        return (release, rollout)
    }

    /// Rolls release `version` out to `targets` (nil: every node), keeping the other
    /// nodes on what they had.
    public func rollout(release version: Int, targets: [NodeID]?, nowMillis: UInt64 = WallClock.nowMillis()) throws -> Rollout {
        try check(targets)
        guard try releases().contains(where: { $0.version == version }) else {
            throw GovernancePublishError("no release \(version) (published: \(try releases().map { "v\($0.version)" }.joined(separator: ", ")))")
        }
        return try roll(out: version, to: targets, reason: targets == nil ? "rollout v\(version) to everyone" : "rollout v\(version) to \(targets!.map(\.rawValue).joined(separator: ", "))", nowMillis: nowMillis)
    }

    /// Puts every node back on release `version` (default: the newest release older than
    /// the newest one in force).
    public func rollback(to version: Int? = nil, nowMillis: UInt64 = WallClock.nowMillis()) throws -> Rollout {
        guard let current = try rollouts().last else { throw GovernancePublishError("nothing to roll back: no release was rolled out yet") }
        let newest = current.stages.map(\.release).max() ?? 0
        let published = try releases().map(\.version)
        guard let target = version ?? published.filter({ $0 < newest }).max() else {
            throw GovernancePublishError("nothing to roll back to: v\(newest) is the first release")
        }
        guard published.contains(target) else {
            throw GovernancePublishError("no release \(target) (published: \(published.map { "v\($0)" }.joined(separator: ", ")))")
        }
        return try issue(stages: [Rollout.Stage(release: target, targets: nil)], reason: "rollback to v\(target)", nowMillis: nowMillis)
    }

    private func roll(out version: Int, to targets: [NodeID]?, reason: String, nowMillis: UInt64) throws -> Rollout {
        guard let targets else {
            return try issue(stages: [Rollout.Stage(release: version, targets: nil)], reason: reason, nowMillis: nowMillis)
        }
        var previous = try rollouts().last?.stages ?? []
        var names = targets.map(\.rawValue)
        // Widening a trial: the nodes that already had this release keep it.
        if let i = previous.firstIndex(where: { $0.release == version && $0.targets != nil }) {
            names = Array(Set(names + previous[i].targets!)).sorted()
            previous.remove(at: i)
        }
        // A node named now leaves any narrower stage it was in.
        previous = previous.compactMap { stage in
            guard let t = stage.targets else { return stage }
            let rest = t.filter { !names.contains($0) }
            return rest.isEmpty ? nil : Rollout.Stage(release: stage.release, targets: rest)
        }
        return try issue(stages: [Rollout.Stage(release: version, targets: names)] + previous, reason: reason, nowMillis: nowMillis)
    }

    private func issue(stages: [Rollout.Stage], reason: String, nowMillis: UInt64) throws -> Rollout {
        let sequence = (try rollouts().last?.sequence ?? 0) + 1
        let rollout = Rollout(tenant: tenant.rawValue, sequence: sequence, issuedAtMillis: nowMillis, stages: stages, reason: reason)
        try put(try key.sign(rollout, as: .rollout), kind: .rollout, seq: sequence, nowMillis: nowMillis)
        return rollout
    }

    private func check(_ targets: [NodeID]?) throws {
        guard let targets else { return }
        guard !targets.isEmpty else { throw GovernancePublishError("no targets given") }
        for t in targets where tree.parents[t] == nil {
            let known = tree.parents.keys.map(\.rawValue).sorted().prefix(20).joined(separator: ", ")
            throw GovernancePublishError("unknown target node '\(t)' in tenant '\(tenant)' (nodes: \(known))")
        }
    }

    private func put(_ document: SignedDocument, kind: SignedDocument.Kind, seq: Int, nowMillis: UInt64) throws {
        try store.putGovernanceDocument(StoredGovernanceDocument(kind: kind.rawValue, key: String(seq), seq: seq, body: document.json), nowMillis: nowMillis)
    }

    private func open<T: Decodable>(_ stored: StoredGovernanceDocument, as kind: SignedDocument.Kind, _ type: T.Type) throws -> T {
        guard let document = SignedDocument(json: stored.body) else {
            throw GovernancePublishError("stored \(kind.rawValue) \(stored.key) is not a signed document; the tenant database was altered")
        }
        do { return try key.publicKey.open(document, as: kind, T.self) } catch {
            throw GovernancePublishError("stored \(kind.rawValue) \(stored.key) fails its own signature check (\(error)); the tenant database was altered or the key is not this tenant's")
        }
    }
}

public struct GovernancePublishError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

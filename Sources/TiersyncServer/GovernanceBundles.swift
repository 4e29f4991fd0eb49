import Crypto
import Foundation
import Synchronization
import TiersyncCore
import TiersyncGovernance
import TiersyncStore

/// What a hub hands a node asking for its governance: the rollout in force, the releases
/// it assigns anywhere in the node's subtree (so a country can serve its dealers, and a
/// trial release never leaves its targets' branches), the overlays of the node's
/// ancestors (its country's) and its own, every release-key rotation, and the overlay-key
/// revocations of those countries.
enum GovernanceBundles {
    /// Earlier rollouts sent at most while releases wait (``GovernanceBundle/earlierRollouts``).
    static let maxEarlierRollouts = 16

    /// Releases' effective-from times by signature (a signature names its signed content):
    /// every bundle asks whether a release waits, and decoding a release's whole config for
    /// it at each governance request (5,000 agents starting) cost more than the bundle.
    private static let effectiveFromCache = Mutex<[String: UInt64]>([:])

    /// When the release `document` holds takes effect (read unverified: only to route
    /// documents), or nil when it holds none.
    static func effectiveFrom(_ document: StoredGovernanceDocument) -> UInt64? {
        guard let envelope = SignedDocument(json: document.body) else { return nil }
        if let known = effectiveFromCache.withLock({ $0[envelope.signature] }) { return known }
        guard let millis = envelope.unverifiedPayload(Release.self)?.effectiveFromMillis else { return nil }
        effectiveFromCache.withLock { cache in
            if cache.count >= 10_000 { cache.removeAll() }
            cache[envelope.signature] = millis
        }
        return millis
    }

    static func bundle(for node: NodeID, tree: NodeTree, store: any HubTenantStore,
                       nowMillis: UInt64 = WallClock.nowMillis()) async throws -> GovernanceBundle {
        let rolloutDoc = try await store.latestGovernanceDocument(ofKind: SignedDocument.Kind.rollout.rawValue)
        let subtree = Set(tree.subtree(of: node).map(\.rawValue))
        let ancestors = Set(tree.path(of: node).split(separator: "/").map(String.init)).subtracting([node.rawValue])
        // Stages are read unverified here only to route documents; every node verifies
        // what it receives before applying anything.
        func wanted(by document: StoredGovernanceDocument?) -> Set<Int> {
            guard let rollout = document.flatMap({ SignedDocument(json: $0.body) })?.unverifiedPayload(Rollout.self) else { return [] }
            var wanted: Set<Int> = []
            for stage in rollout.stages {
                guard let targets = stage.targets else { wanted.insert(stage.release); continue }
                if targets.contains(where: { subtree.contains($0) || ancestors.contains($0) }) { wanted.insert(stage.release) }
            }
            return wanted
        }
        let releaseKind = SignedDocument.Kind.release.rawValue
        var releases = try await store.governanceDocuments(ofKind: releaseKind, keys: wanted(by: rolloutDoc).sorted().map(String.init))
        func waiting(_ documents: [StoredGovernanceDocument]) -> Bool {
            documents.contains { (effectiveFrom($0) ?? 0) > nowMillis }
        }
        // A release that waits: the rollouts before, back to one whose releases are all in
        // effect, so that a node enrolled meanwhile runs what the rest of the tenant runs and
        // a country keeps the release it runs (helper 90: such a node ran no governance, and
        // a country could not publish an overlay, until the release came due).
        var earlier: [StoredGovernanceDocument] = []
        if let rolloutDoc, waiting(releases) {
            // The run just below it (rollouts are numbered one after another; a node takes
            // only an unbroken run), not every rollout ever issued.
            let keys = (max(1, rolloutDoc.seq - maxEarlierRollouts)..<rolloutDoc.seq).map(String.init)
            let before = try await store.governanceDocuments(ofKind: SignedDocument.Kind.rollout.rawValue, keys: keys)
                .filter { $0.seq < rolloutDoc.seq }.sorted { $0.seq > $1.seq }
            for document in before {
                earlier.append(document)
                let held = Set(releases.map(\.key))
                let missing = wanted(by: document).map(String.init).filter { !held.contains($0) }
                let added = try await store.governanceDocuments(ofKind: releaseKind, keys: missing.sorted())
                releases += added
                let theirs = Set(wanted(by: document).map(String.init))
                if !waiting(releases.filter { theirs.contains($0.key) }) { break }
            }
            releases.sort { $0.seq < $1.seq }
        }
        let overlays = try await store.governanceDocuments(ofKind: SignedDocument.Kind.overlay.rawValue, keys: ancestors.sorted() + [node.rawValue])
        // Every key rotation (a node follows them from whichever key it holds), and the
        // overlay-key revocations of the countries whose overlays the caller may receive.
        let rotations = try await store.governanceDocuments(ofKind: SignedDocument.Kind.keyRotation.rawValue, keys: nil)
        let revocations = try await store.governanceDocuments(ofKind: SignedDocument.Kind.overlayKeyRevocation.rawValue,
                                                        keys: ancestors.sorted() + [node.rawValue])
        var hasher = SHA256()
        for d in [rolloutDoc].compactMap({ $0 }) + releases + overlays { hasher.update(data: Data(d.body.utf8)) }
        // Hashed after the others, and only when present: bundles without them keep their token.
        for d in rotations + revocations + earlier { hasher.update(data: Data((d.kind + "\n" + d.body).utf8)) }
        let token = hasher.finalize().prefix(12).hexString
        return GovernanceBundle(token: token, rollout: rolloutDoc.flatMap { SignedDocument(json: $0.body) },
                                releases: releases.compactMap { SignedDocument(json: $0.body) },
                                overlays: overlays.compactMap { SignedDocument(json: $0.body) },
                                keyRotations: rotations.compactMap { SignedDocument(json: $0.body) },
                                overlayKeyRevocations: revocations.compactMap { SignedDocument(json: $0.body) },
                                earlierRollouts: earlier.compactMap { SignedDocument(json: $0.body) })
    }
}

/// The rollout-status table: every node of a subtree with what it reports having applied
/// (its `governance_status` record, synced upward like any record) and when it was last seen.
public enum GovernanceStatusReport {
    public static func rows(nodes: [NodeRecord], store: any HubTenantStore) async throws -> [RolloutStatusRow] {
        let reports = Dictionary(try await store.liveRecords(inTable: DomainSchema.governanceStatus.name).map { ($0.id, $0.values) },
                                 uniquingKeysWith: { a, _ in a })
        // Level by level, then by parent and node: depths computed once from the tree.
        let tree = NodeTree(parents: Dictionary(nodes.map { ($0.node, $0.parent) }, uniquingKeysWith: { a, _ in a }))
        let depth = Dictionary(nodes.map { ($0.node, tree.depth(of: $0.node)) }, uniquingKeysWith: { a, _ in a })
        let timestamps = ISO8601Parser()
        return nodes.sorted { (depth[$0.node]!, $0.parent?.rawValue ?? "", $0.node.rawValue) < (depth[$1.node]!, $1.parent?.rawValue ?? "", $1.node.rawValue) }
            .map { n in
                let r = reports[n.node.rawValue] ?? [:]
                return RolloutStatusRow(
                    node: n.node.rawValue, parent: n.parent?.rawValue, role: n.role,
                    release: r["release"].flatMap { if case .int(let i) = $0 { Int(i) } else { nil } },
                    overlay: r["overlay"]?.stringValue, state: r["state"]?.stringValue ?? (n.parent == nil ? "publisher" : "unknown"),
                    message: r["message"]?.stringValue,
                    appliedAtMillis: r["applied_at"]?.stringValue.flatMap(timestamps.millis),
                    lastSeenMillis: n.lastSeenMillis)
            }
    }

    /// `concerned`: for a node below the root, its subtree and the nodes above it: the stages
    /// shown are those that reach it (``Rollout/shown(to:)``); nil: every stage.
    public static func response(tenant: TenantID, nodes: [NodeRecord], store: any HubTenantStore,
                                concerned: Set<String>? = nil) async throws -> RolloutStatusResponse {
        let latest = try await store.latestGovernanceDocument(ofKind: SignedDocument.Kind.rollout.rawValue)
        let rollout = latest.flatMap { SignedDocument(json: $0.body)?.unverifiedPayload(Rollout.self) }
        let stages = rollout.map { rollout in concerned.map { rollout.shown(to: $0).rollout.summary } ?? rollout.summary }
        return RolloutStatusResponse(tenant: tenant.rawValue, rollout: latest?.seq, stages: stages, nodes: try await rows(nodes: nodes, store: store))
    }

    /// ISO 8601 times with or without fractional seconds, formatters made once per table.
    private struct ISO8601Parser {
        let fractional: ISO8601DateFormatter = {
            let f = ISO8601DateFormatter()
            f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            return f
        }()
        let plain = ISO8601DateFormatter()

        func millis(_ iso: String) -> UInt64? {
            // A node reports this time: one before 1970 (or absurdly late) is no time, not a trap.
            (fractional.date(from: iso) ?? plain.date(from: iso)).flatMap { UInt64(exactly: ($0.timeIntervalSince1970 * 1000).rounded(.down)) }
        }
    }
}

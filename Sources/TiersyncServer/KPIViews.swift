import Foundation
import TiersyncCore
import TiersyncGovernance
import TiersyncKPI
import TiersyncStore

/// Which KPIs a store counts, from the governance its node runs, and the KPI table a hub
/// serves (`GET /v1/kpis`) and `tiersync kpi` prints.
public enum KPIViews {
    /// Makes `store` count the KPIs of the governance its node runs now
    /// (``TiersyncStore/NodeStore/adoptKPIs(_:source:)``): at the root (HQ's tenant store,
    /// which publishes and applies nothing) the release of the newest rollout that is for
    /// the root and in effect, from HQ's own published documents; at any other node the
    /// release ⊕ overlay it applied last. Cheap when nothing changed since the last call.
    /// Returns true when the store recounted.
    @discardableResult
    public static func adopt(_ store: any HubTenantStore, nowMillis: UInt64 = WallClock.nowMillis()) async throws -> Bool {
        guard let identity = try await store.storeIdentity() else { return false }
        guard identity.parent == nil else { return try await store.adoptKPIsOfAppliedGovernance() }
        let rollouts = try await store.governanceDocuments(ofKind: SignedDocument.Kind.rollout.rawValue, keys: nil)
            .compactMap { SignedDocument(json: $0.body)?.unverifiedPayload(Rollout.self) }.sorted { $0.sequence > $1.sequence }
        // Only the releases the rollouts name for the root are read and parsed, one at a time
        // from the newest rollout (every report adopts first: a tenant's many past releases,
        // each a whole configuration, must not be parsed at each).
        var releases: [Int: Release?] = [:]
        func releaseNamed(_ version: Int) async throws -> Release? {
            if let known = releases[version] { return known }
            let found = try await store.governanceDocuments(ofKind: SignedDocument.Kind.release.rawValue, keys: [String(version)])
                .lazy.compactMap { SignedDocument(json: $0.body)?.unverifiedPayload(Release.self) }.first { $0.version == version }
            releases[version] = .some(found)
            return found
        }
        for rollout in rollouts {
            guard let version = rollout.release(for: identity.node.rawValue, ancestors: []), let release = try await releaseNamed(version),
                  release.effectiveFromMillis <= nowMillis else { continue }
            // With the counting rules' version: a hub upgraded to rules that count differently
            // adopts (and recounts) once, though the release is the same.
            let source = "root:\(rollout.sequence):\(version):r\(KPIEvaluator.countingRules)"
            if try await store.setting("kpi.source") == source { return false }
            let catalog = try KPICatalog(effectiveConfigJSON: String(decoding: try JSONEncoder().encode(release.config), as: UTF8.self))
            return try await store.adoptKPIs(KPIAdoption(release: version, overlay: nil, catalog: catalog), source: source)
        }
        return false
    }

    /// The KPI table of `viewer`'s subtree from `store` (HQ's tenant store, or a country's),
    /// with the nodes' paths taken from `tree`.
    public static func response(store: any HubTenantStore, viewer: NodeID, tree: NodeTree, period: KPIPeriodKind, byNode: Bool) async throws -> KPIResponse {
        try await adopt(store)
        var paths: [String: [String]] = [:]
        for node in tree.parents.keys { paths[node.rawValue] = tree.path(of: node).split(separator: "/").map(String.init) }
        return try await store.kpiReport(period: period, byNode: byNode, viewer: viewer.rawValue, paths: paths)
    }
}

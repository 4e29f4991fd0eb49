import Foundation
import Synchronization
import TiersyncCore
import TiersyncGovernance
import TiersyncRules
import TiersyncStore

/// A node's allocation of new dialogues, run on every local write through the store's
/// seam (``TiersyncStore/LocalWritePolicy``): when a write creates an interaction here, the
/// rules of the governance in force at that moment (release ⊕ the country's overlay) decide
/// its handling level, queue, priority, SLA due and handling node, and the decision
/// (rule, release, overlay, node, time) is written with it, in the same change. The
/// decision then replicates like any field; nodes receiving it never decide again.
///
/// The rules are ``TiersyncRules/Allocator`` (plain values); this type only reads what
/// they need from the store: which release is in force, the customer's fields and the
/// node's place in the tree.
///
/// **Which release is in force.** At a country or dealer: decided from the governance
/// documents the node keeps, each verified against HQ's key, as its ``GovernanceFollower``
/// decides (``GovernanceResolver``), at the write's time — so a release takes over from its
/// effective-from on even if the follower has not switched yet — and, when that says
/// pending or refused, the release the node last applied (what it runs). At the root (HQ's
/// tenant store, where the releases were published): the newest rollout whose release for
/// the root is in effect, read from HQ's own published documents. With no release in force
/// the interaction is written as given, without decision fields.
public final class AllocationPolicy: LocalWritePolicy {
    /// Where a node keeps its path from the root (`hq/de/dealer-042`), as its parent's
    /// `GET /v1/whoami` reported it when its agent last started.
    public static let pathMeta = MetaKey.treePath.rawValue

    private let cache = Mutex<Cache?>(nil)
    /// The customer fields allocation reads (``TiersyncRules/Allocator``).
    static let customerFields = [CustomerField.keyAccount, .segment, .owningDealer].map(\.rawValue)

    public init() {}

    public func amend(_ write: RecordWrite, in context: LocalWriteContext) throws -> RecordWrite {
        guard write.table == DomainSchema.interactions.name, write.op == .upsert else { return write }
        let now = context.wallMillis
        // A level a person or an application names is one of the governance's (helper 90:
        // `handling_level=bogus` was stored and shown as allocated, and no escalation rule
        // ever matched it). Not the rules' own writes (an escalation withdrawn puts back a
        // level of the release that decided it), nor a level the dialogue holds already
        // (a whole dialogue written back after a release renamed its levels).
        if !context.byRules, let given = write.fields[InteractionField.handlingLevel.rawValue]?.stringValue,
           context.stored?.state.liveValues[InteractionField.handlingLevel.rawValue]?.stringValue != given,
           let (governance, _) = decisionBasis(context, at: now), !governance.table.levels.contains(given) {
            let levels = governance.table.levels.joined(separator: ", ")
            throw StoreError.rejected(ChangeRejection(.invalidChange,
                "handling_level '\(given)' is not a level of release v\(governance.release) in force here (\(levels)): interactions/\(write.id) is not written"))
        }
        guard context.createsRecord else { return write }
        // Without a release in force (or for an outbound contact) nothing is decided, and
        // nothing more is read: the write costs one small query.
        guard write.fields[InteractionField.direction.rawValue]?.stringValue != InteractionDirection.outbound.rawValue,
              let (governance, placement) = decisionBasis(context, at: now) else { return write }
        // Only the customer's fields the rules read, in one small indexed read.
        let customer = try write.fields[InteractionField.customerID.rawValue]?.stringValue.flatMap {
            try context.liveValues(table: DomainSchema.customers.name, id: $0, fields: Self.customerFields)
        }
        switch Allocator.decide(interaction: write.fields, customer: customer, governance: governance, placement: placement, nowMillis: now) {
        case .success(let decision):
            var amended = write
            amended.fields = decision.applied(to: write.fields)
            return amended
        case .failure:
            return write
        }
    }

    /// The governance in force at `now` and the node's placement in the tree, from the
    /// policy's cache (one lock, no parsing, when neither the governance stamp nor the node's
    /// path moved); nil without one. Never throws: a store that cannot say (unreadable
    /// documents, no key) allocates nothing rather than refusing the write.
    private func decisionBasis(_ context: LocalWriteContext, at now: UInt64) -> (governance: GovernanceInForce, placement: NodePlacement)? {
        guard let stamp = try? context.governanceStamp() else { return nil }
        let path = try? context.meta(Self.pathMeta)
        return cache.withLock { cache -> (GovernanceInForce, NodePlacement)? in
            if cache == nil || cache!.storePath != context.storePath || cache!.stamp != stamp {
                cache = Cache(storePath: context.storePath, stamp: stamp, basis: Self.basis(context))
            }
            guard let governance = cache!.inForce(at: now) else { return nil }
            return (governance, cache!.placement(identity: context.identity, path: path, levels: governance.table.levels.count))
        }
    }

    /// What a store's decisions are made from, read once per governance stamp.
    static func basis(_ context: LocalWriteContext) -> Basis {
        basis(identity: context.identity, applied: (try? context.appliedGovernance()).flatMap { $0 },
              documents: (try? context.governanceDocuments()) ?? [], meta: { try? context.meta($0) })
    }

    /// The same from a store, outside a commit (the rules runner: escalation and proactive
    /// contacts use the governance in force exactly as allocation decides it).
    static func basis(_ store: any RulesStore, identity: NodeIdentity) async throws -> Basis {
        let (documents, applied) = try await store.rulesGovernance()
        var settings: [String: String] = [:]
        if identity.parent != nil {
            for key in [GovernanceFollower.keyMeta, GovernanceFollower.rolloutMeta] { settings[key] = try await store.rulesSetting(key) }
        }
        return basis(identity: identity, applied: applied, documents: documents, meta: { settings[$0] })
    }

    private static func basis(identity: NodeIdentity, applied: GovernanceApplication?, documents: [StoredGovernanceDocument],
                              meta: (String) -> String?) -> Basis {
        if identity.parent == nil {
            // HQ's own published documents: written by its publisher, which signs what it stores.
            let rollouts = documents.filter { $0.kind == SignedDocument.Kind.rollout.rawValue }
                .compactMap { SignedDocument(json: $0.body)?.unverifiedPayload(Rollout.self) }.sorted { $0.sequence > $1.sequence }
            var releases: [Int: Release] = [:]
            for document in documents where document.kind == SignedDocument.Kind.release.rawValue {
                if let release = SignedDocument(json: document.body)?.unverifiedPayload(Release.self) { releases[release.version] = release }
            }
            return Basis(node: identity.node.rawValue, parent: nil, verified: nil, rootHistory: (rollouts, releases), applied: applied)
        }
        var verified: VerifiedGovernance?
        if let text = meta(GovernanceFollower.keyMeta), let key = GovernancePublicKey(base64: text) {
            let seen = meta(GovernanceFollower.rolloutMeta).flatMap { Int($0) } ?? 0
            verified = GovernanceFollower.verify(stored: documents, key: key, tenant: identity.tenant.rawValue, highestRollout: seen)
        }
        return Basis(node: identity.node.rawValue, parent: identity.parent?.rawValue, verified: verified, rootHistory: nil, applied: applied)
    }

    struct Basis: Sendable {
        var node: String
        var parent: String?
        /// A country's or dealer's verified documents.
        var verified: VerifiedGovernance?
        /// The root's rollouts (newest first) and releases.
        var rootHistory: (rollouts: [Rollout], releases: [Int: Release])?
        /// The newest decision that applied a release (country, dealer).
        var applied: GovernanceApplication?

        /// The release (⊕ overlay) in force at `now` and its effective config, or nil; and
        /// until when that answer holds (a pending release takes over at its time).
        func effective(at now: UInt64) -> (inForce: (release: Int, overlay: String?, config: ConfigValue)?, until: UInt64) {
            if let history = rootHistory {
                // Until the earliest release not yet in effect: a newer rollout's release
                // takes over at its time (held "for ever", a long-lived process allocated
                // under the old release until some governance document changed).
                let next = history.releases.values.map(\.effectiveFromMillis).filter { $0 > now }.min() ?? .max
                for rollout in history.rollouts {
                    guard let version = rollout.release(for: node, ancestors: []), let release = history.releases[version] else { continue }
                    if release.effectiveFromMillis <= now { return ((version, nil, release.config), next) }
                }
                // Nothing in effect yet; the earliest pending release may take over later.
                return (nil, next)
            }
            var until = UInt64.max
            if let verified {
                let decision = GovernanceResolver.decide(node: node, parent: parent, verified: verified, nowMillis: now)
                if decision.state == .applied, let release = decision.release, let effective = decision.effective {
                    return ((release.version, decision.overlay?.label, effective), .max)
                }
                until = GovernanceResolver.nextChange(of: decision, verified: verified, nowMillis: now) ?? .max
                // While the release waits: what the rollouts before give the node (a node
                // enrolled meanwhile has applied nothing), until the release takes over.
                if decision.state == .pending,
                   let earlier = GovernanceResolver.inEffectBefore(node: node, parent: parent, verified: verified, nowMillis: now),
                   let release = earlier.release, let effective = earlier.effective {
                    return ((release.version, earlier.overlay?.label, effective), until)
                }
            }
            // Pending, refused or unverifiable: what the node last applied, which it still runs.
            guard let applied, let version = applied.release, let json = applied.effective,
                  let config = try? JSONDecoder().decode(ConfigValue.self, from: Data(json.utf8)) else { return (nil, until) }
            return ((version, applied.overlay, config), until)
        }
    }

    struct Cache: Sendable {
        var storePath: String
        var stamp: String
        var basis: Basis
        /// Allocation tables by release and overlay: parsed once per config.
        var tables: [String: AllocationTable?] = [:]
        /// The last answer and until when it holds (a pending release takes over at its time).
        var memo: (governance: GovernanceInForce?, from: UInt64, until: UInt64)?
        /// The node's placement, parsed from its path once per path and tree depth.
        var placementMemo: (path: String?, levels: Int, placement: NodePlacement)?

        mutating func placement(identity: NodeIdentity, path: String?, levels: Int) -> NodePlacement {
            if let memo = placementMemo, memo.path == path, memo.levels == levels { return memo.placement }
            let nodes = path.map { $0.split(separator: "/").map { NodeID(unchecked: String($0)) } }
            let placement = NodePlacement(node: identity.node, parent: identity.parent, path: nodes, levels: levels)
            placementMemo = (path, levels, placement)
            return placement
        }

        mutating func inForce(at now: UInt64) -> GovernanceInForce? {
            if let memo, now >= memo.from, now < memo.until { return memo.governance }
            let (answer, until) = resolve(at: now)
            memo = (answer, now, until)
            return answer
        }

        private mutating func resolve(at now: UInt64) -> (GovernanceInForce?, until: UInt64) {
            let (inForce, until) = basis.effective(at: now)
            return (inForce.flatMap { governance(release: $0.release, overlay: $0.overlay, config: $0.config) }, until)
        }

        private mutating func governance(release: Int, overlay: String?, config: ConfigValue) -> GovernanceInForce? {
            let key = "\(release)/\(overlay ?? "")"
            if tables[key] == nil { tables[key] = .some(try? AllocationTable(config: config)) }
            return tables[key]!.map { GovernanceInForce(release: release, overlay: overlay, table: $0) }
        }
    }
}

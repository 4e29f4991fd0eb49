import Foundation
import TiersyncCore
import TiersyncGovernance
import TiersyncStorage

/// HQ's side of governance: turns a compiled directory into a signed release, and says
/// which nodes run which release (rollouts: staged, promoted, rolled back). Everything is
/// written to the tenant's store, from where the hub serves it to its nodes.
///
/// It reads and writes documents only through the storage seam (``HubTenantStore``), so it
/// publishes to a tenant on either engine (SQLite's `NodeStore`, PostgreSQL's tenant store),
/// from any process: every sequence it assigns is computed from what the store holds at the
/// call, not from state kept here.
public struct GovernancePublisher: Sendable {
    public let store: any HubTenantStore
    public let tenant: TenantID
    public let key: GovernanceSigningKey
    /// The tenant's tree, to check rollout targets against.
    public let tree: NodeTree

    public init(store: any HubTenantStore, tenant: TenantID, key: GovernanceSigningKey, tree: NodeTree) {
        self.store = store
        self.tenant = tenant
        self.key = key
        self.tree = tree
    }

    /// Every published release, oldest first.
    public func releases() async throws -> [Release] {
        let ring = try await keyring()
        return try await documents(.release).map { try open($0, as: .release) { try ring.openRelease($0) } }
    }

    /// Every rollout issued, oldest first; the last one is in force.
    public func rollouts() async throws -> [Rollout] {
        let ring = try await keyring()
        return try await documents(.rollout).map { try open($0, as: .rollout) { try ring.openRollout($0) } }
    }

    /// Signs `compiled` as the next release and rolls it out to `targets` (nil: every node).
    @discardableResult
    public func publish(_ compiled: CompiledGovernance, effectiveFromMillis: UInt64? = nil, notes: String? = nil,
                        targets: [NodeID]? = nil, nowMillis: UInt64 = WallClock.nowMillis()) async throws -> (Release, Rollout) {
        guard compiled.tenant == tenant.rawValue else {
            throw GovernancePublishError("the sources are for tenant '\(compiled.tenant)' (governance.tenant), not '\(tenant)'")
        }
        let targets = targets.map(Self.distinct)
        try check(targets)
        // The next number, taken only if no other publisher took it meanwhile (two
        // administrators publishing at once, from one process or two): a published release
        // is never replaced.
        let reported = try await highestReported().release
        for _ in 0..<Self.attempts {
            // After the nodes' reports too, as rollouts are (``issue(reason:nowMillis:refuse:stages:)``):
            // a hub restored from a backup holds fewer releases than its nodes applied, and
            // numbered from what it holds, it signed a second, different "v5" for nodes
            // that had the first.
            let version = Self.next(after: try await releases().map(\.version).max() ?? 0, reported: reported)
            let release = Release(tenant: tenant.rawValue, version: version, publishedAtMillis: nowMillis,
                                  effectiveFromMillis: effectiveFromMillis ?? nowMillis, notes: notes,
                                  sourceDigest: compiled.sourceDigest, config: compiled.config, overrides: compiled.overrides)
            guard try await putNew(try key.sign(release, as: .release), kind: .release, seq: version, nowMillis: nowMillis) else {
                try await Self.pause()
                continue
            }
            let rollout = try await roll(out: version, to: targets, reason: "publish v\(version)", nowMillis: nowMillis, publishing: true)
            return (release, rollout)
        }
        throw Self.contended("release")
    }

    /// Rolls release `version` out to `targets` (nil: every node), keeping the other
    /// nodes on what they had.
    @discardableResult
    public func rollout(release version: Int, targets: [NodeID]?, nowMillis: UInt64 = WallClock.nowMillis()) async throws -> Rollout {
        let targets = targets.map(Self.distinct)
        try check(targets)
        let published = try await releases()
        guard published.contains(where: { $0.version == version }) else {
            throw GovernancePublishError("no release \(version) (published: \(published.map { "v\($0.version)" }.joined(separator: ", ")))")
        }
        return try await roll(out: version, to: targets, reason: targets == nil ? "rollout v\(version) to everyone" : "rollout v\(version) to \(targets!.map(\.rawValue).joined(separator: ", "))", nowMillis: nowMillis)
    }

    /// Puts every node back on release `version` (default: undoes the rollout in force — with
    /// trials, the release it gives every node outside them; else the release the newest
    /// earlier rollout gave everyone that is older than the one it gives now; never a trial's
    /// release, nor one an earlier rollback withdrew).
    public func rollback(to version: Int? = nil, nowMillis: UInt64 = WallClock.nowMillis()) async throws -> Rollout {
        let history = try await rollouts()
        guard let current = history.last else { throw GovernancePublishError("nothing to roll back: no release was rolled out yet") }
        let newest = current.stages.map(\.release).max() ?? 0
        let published = try await releases().map(\.version)
        // What every node outside a trial runs now: with trials in force, rolling back withdraws
        // them; without, every node goes back to what the newest earlier rollout gave everyone,
        // older than that. "The newest older release ever given to everyone" rolled nodes
        // forward onto one an earlier rollback had withdrawn (helper 95: v2 rolled back, two
        // trials published, and a rollback put every node from v1 on v2).
        let generalNow = current.stages.first { $0.targets == nil }?.release
        let automatic: Int?
        if let generalNow, current.stages.contains(where: { $0.targets != nil }) {
            automatic = generalNow
        } else if let generalNow {
            automatic = history.dropLast().reversed().lazy.compactMap { $0.stages.first { $0.targets == nil }?.release }.first { $0 < generalNow }
        } else {
            automatic = nil
        }
        guard let target = version ?? automatic else {
            throw GovernancePublishError(published.contains { $0 < newest }
                ? "nothing to roll back to: no release older than v\(newest) was ever rolled out to every node (the older ones were trials); name one with --to"
                : "nothing to roll back to: v\(newest) is the first release" + (published.count > 1
                    ? "; to put every node on another published release, name it with --to (published: \(published.sorted().map { "v\($0)" }.joined(separator: ", ")))"
                    : ""))
        }
        guard published.contains(target) else {
            throw GovernancePublishError("no release \(target) (published: \(published.map { "v\($0)" }.joined(separator: ", ")))")
        }
        return try await issue(reason: "rollback to v\(target)", nowMillis: nowMillis) { _ in [Rollout.Stage(release: target, targets: nil)] }
    }

    /// `publishing`: the rollout of a release just published, which must not put it in force
    /// over a newer release another publisher rolled out meanwhile (two administrators
    /// publishing at once, on two processes: v5's rollout came first, v4's second, and v4
    /// was in force).
    private func roll(out version: Int, to targets: [NodeID]?, reason: String, nowMillis: UInt64, publishing: Bool = false) async throws -> Rollout {
        let refuse: (Rollout?) -> GovernancePublishError? = { last in
            guard publishing, let newer = last?.stages.map(\.release).filter({ $0 > version }).max() else { return nil }
            return GovernancePublishError("v\(newer) was published and rolled out while v\(version) was being published: v\(version) is published "
                                          + "but not rolled out (roll it out by name if it should be in force)", publishedVersion: version)
        }
        guard let targets else {
            return try await issue(reason: reason, nowMillis: nowMillis, refuse: refuse) { _ in [Rollout.Stage(release: version, targets: nil)] }
        }
        let tree = self.tree
        return try await issue(reason: reason, nowMillis: nowMillis, refuse: refuse) { last in
            Self.stages(rolling: version, to: targets, over: last?.stages ?? [], tree: tree)
        }
    }

    /// The stages of a rollout of `version` to `targets` over the rollout in force's.
    static func stages(rolling version: Int, to targets: [NodeID], over previous: [Rollout.Stage], tree: NodeTree) -> [Rollout.Stage] {
        var previous = previous
        var names = targets.map(\.rawValue)
        // Widening a trial: the nodes that already had this release keep it.
        if let i = previous.firstIndex(where: { $0.release == version && $0.targets != nil }) {
            names = Array(Set(names + previous[i].targets!)).sorted()
            previous.remove(at: i)
        }
        // A node named now leaves any narrower stage it was in, and so does every node below
        // it: the new stage comes first and covers them through their parent. Kept, a
        // dealer's own stage was shown ("v3 → de-1") but never applied.
        let named = Set(names)
        previous = previous.compactMap { stage in
            guard let t = stage.targets else { return stage }
            let rest = t.filter { !named.contains($0) && named.isDisjoint(with: tree.ancestors(of: NodeID(unchecked: $0)).map(\.rawValue)) }
            return rest.isEmpty ? nil : Rollout.Stage(release: stage.release, targets: rest)
        }
        return [Rollout.Stage(release: version, targets: names)] + previous
    }

    /// Issues the next rollout, its stages computed from the rollout in force; computed
    /// again over the newer one if another publisher issued a rollout meanwhile.
    private func issue(reason: String, nowMillis: UInt64, refuse: (Rollout?) -> GovernancePublishError? = { _ in nil },
                       stages: (Rollout?) -> [Rollout.Stage]) async throws -> Rollout {
        let reported = try await highestReported().rollout
        for _ in 0..<Self.attempts {
            let last = try await rollouts().last
            // Judged on the newest rollout each attempt: one taken meanwhile is seen here.
            if let refusal = refuse(last) { throw refusal }
            let held = last?.sequence ?? 0
            // After the nodes' reports too: a hub restored from a backup holds fewer rollouts
            // than its nodes saw, and numbered from what it holds, its next one was refused by
            // every node as older than one they had. A report far above what the hub holds is
            // no restore's (a node's forgery): not followed.
            let sequence = Self.next(after: held, reported: reported)
            let rollout = Rollout(tenant: tenant.rawValue, sequence: sequence, issuedAtMillis: nowMillis, stages: stages(last), reason: reason)
            if try await putNew(try key.sign(rollout, as: .rollout), kind: .rollout, seq: sequence, nowMillis: nowMillis) { return rollout }
            try await Self.pause()
        }
        throw Self.contended("rollout")
    }

    /// Tries to take a number this many times before giving up (each try rereads, after a
    /// short random pause, so publishers racing do not keep colliding in step).
    static let attempts = 20

    /// The most releases or rollouts a restore is taken to have lost: a node's report of
    /// one further ahead than this is not followed.
    static let maxNumbersLost = 10_000

    /// The number after `held` (the highest the hub holds), or after `reported` (the
    /// highest its nodes report) when that is ahead by no more than ``maxNumbersLost``.
    static func next(after held: Int, reported: Int) -> Int {
        (reported > held && reported - held <= maxNumbersLost ? reported : held) + 1
    }

    /// The highest release version and rollout sequence the nodes report following (their
    /// `governance_status` records), 0 where none does.
    private func highestReported() async throws -> (release: Int, rollout: Int) {
        try await store.liveRecords(inTable: DomainSchema.governanceStatus.name).reduce(into: (release: 0, rollout: 0)) { highest, record in
            func number(_ field: String) -> Int {
                guard case .int(let n)? = record.values[field], n > 0, n <= Int64(Int32.max) else { return 0 }
                return Int(n)
            }
            highest = (max(highest.release, number("release")), max(highest.rollout, number("rollout")))
        }
    }

    private static func pause() async throws {
        try await Task.sleep(for: .milliseconds(Int.random(in: 5...60)))
    }

    static func contended(_ kind: String) -> GovernancePublishError {
        GovernancePublishError("another publisher took each next \(kind) number \(attempts) times in a row; nothing of this one was published: try again")
    }

    /// `targets` without repeats, in the order given: `--targets de,de` was recorded twice in
    /// the rollout (helper 95).
    static func distinct(_ targets: [NodeID]) -> [NodeID] {
        var seen = Set<NodeID>()
        return targets.filter { seen.insert($0).inserted }
    }

    private func check(_ targets: [NodeID]?) throws {
        guard let targets else { return }
        guard !targets.isEmpty else { throw GovernancePublishError("no targets given") }
        for t in targets where tree.parents[t] == nil {
            let known = tree.parents.keys.map(\.rawValue).sorted().prefix(20).joined(separator: ", ")
            throw GovernancePublishError("unknown target node '\(t)' in tenant '\(tenant)' (nodes: \(known))")
        }
        // A target takes its children along (a country its dealers): the root's children are
        // the countries, and a rollout "to hq" put them on the release while their dealers
        // stayed behind, under a message naming hq alone (helper 82).
        for t in targets where tree.isRoot(t) {
            throw GovernancePublishError("'\(t)' is the tenant's root and is no target (a target takes its children along: the countries would follow, their dealers not); leave out --targets to roll out to every node, or name countries or dealers for a trial")
        }
    }

    // MARK: Keys

    /// Every key rotation announced, oldest first.
    public func keyRotations() async throws -> [KeyRotation] {
        try await keyring().accepted.map(\.rotation)
    }

    /// Hands the tenant's release key over to `next`: signs the announcement with the key in
    /// force (countersigned by `next`) and stores it, so every node follows it at its next
    /// governance round. What this key signed so far stays valid; from now on only `next`
    /// signs (publish with a publisher holding it). The caller registers `next` in the catalog.
    public func rotateKey(to next: GovernanceSigningKey, nowMillis: UInt64 = WallClock.nowMillis()) async throws -> KeyRotation {
        guard next.publicKey != key.publicKey else { throw GovernancePublishError("the new release key is the one in force") }
        let ring = try await keyring()
        guard ring.retired[next.publicKey.keyID] == nil else {
            throw GovernancePublishError("\(next.publicKey) was the tenant's release key before; a retired key never comes back")
        }
        let sequence = (ring.accepted.last?.rotation.sequence ?? 0) + 1
        let releasesThrough = try await releases().map(\.version).max() ?? 0
        let rolloutsThrough = try await rollouts().last?.sequence ?? 0
        let rotation = KeyRotation(tenant: tenant.rawValue, sequence: sequence, previousKey: key.publicKey.base64, newKey: next.publicKey.base64,
                                   rotatedAtMillis: nowMillis, releasesThrough: releasesThrough, rolloutsThrough: rolloutsThrough)
        guard try await putNew(try key.announce(rotation, handingOverTo: next), kind: .keyRotation, seq: sequence, nowMillis: nowMillis) else {
            throw GovernancePublishError("key rotation \(sequence) was stored meanwhile by another process; nothing was changed: try again")
        }
        return rotation
    }

    /// Revokes every overlay-key certificate issued to `country` so far (`admin overlay-key`):
    /// nodes refuse overlays signed with those keys and apply the release alone. A key
    /// certified afterwards is valid.
    public func revokeOverlayKeys(of country: NodeID, reason: String? = nil, nowMillis: UInt64 = WallClock.nowMillis()) async throws -> OverlayKeyRevocation {
        guard let link = tree.parents[country], let parent = link, tree.isRoot(parent) else {
            throw GovernancePublishError("'\(country)' is not a country of tenant '\(tenant)' (a node directly below its root); only countries hold overlay keys")
        }
        let previous = try await store.governanceDocuments(ofKind: SignedDocument.Kind.overlayKeyRevocation.rawValue, keys: [country.rawValue]).first
        let revocation = OverlayKeyRevocation(tenant: tenant.rawValue, node: country.rawValue, sequence: (previous?.seq ?? 0) + 1,
                                              revokedAtMillis: nowMillis, reason: reason)
        try await store.storeGovernanceDocument(StoredGovernanceDocument(kind: SignedDocument.Kind.overlayKeyRevocation.rawValue, key: country.rawValue,
                                                                         seq: revocation.sequence, body: try key.sign(revocation, as: .overlayKeyRevocation).json),
                                                nowMillis: nowMillis)
        return revocation
    }

    /// The tenant's keys as HQ's own documents show them: this key and, through the rotations
    /// stored, the keys it replaced.
    func keyring() async throws -> GovernanceKeyring {
        let rotations = try await documents(.keyRotation).compactMap { SignedDocument(json: $0.body) }
        let ring = GovernanceKeyring(anchor: key.publicKey, rotations: rotations, tenant: tenant.rawValue)
        guard ring.current == key.publicKey else {
            throw GovernancePublishError("\(key.publicKey) is no longer the release key of '\(tenant)': key-rotation \(ring.accepted.last?.rotation.sequence ?? 0) handed over to \(ring.current)")
        }
        return ring
    }

    /// Every stored document of `kind`, in sequence order (both engines order by `seq`).
    private func documents(_ kind: SignedDocument.Kind) async throws -> [StoredGovernanceDocument] {
        try await store.governanceDocuments(ofKind: kind.rawValue, keys: nil)
    }

    /// Stores a newly signed document under its number, unless that number is taken.
    private func putNew(_ document: SignedDocument, kind: SignedDocument.Kind, seq: Int, nowMillis: UInt64) async throws -> Bool {
        try await store.storeNewGovernanceDocument(StoredGovernanceDocument(kind: kind.rawValue, key: String(seq), seq: seq, body: document.json),
                                                   nowMillis: nowMillis)
    }

    /// A stored document opened with `verify` (the keyring's check for its kind).
    private func open<T>(_ stored: StoredGovernanceDocument, as kind: SignedDocument.Kind,
                         _ verify: (SignedDocument) throws -> T) throws -> T {
        guard let document = SignedDocument(json: stored.body) else {
            throw GovernancePublishError("stored \(kind.rawValue) \(stored.key) is not a signed document; the tenant database was altered")
        }
        do { return try verify(document) } catch {
            throw GovernancePublishError("stored \(kind.rawValue) \(stored.key) fails its own signature check (\(error)); the tenant database was altered or the key is not this tenant's")
        }
    }
}

public struct GovernancePublishError: Error, CustomStringConvertible {
    public let description: String
    /// Set when the release was published but not rolled out (a newer one was rolled out
    /// while it was being published): its version, which callers record and report.
    public var publishedVersion: Int?
    public init(_ description: String, publishedVersion: Int? = nil) {
        self.description = description
        self.publishedVersion = publishedVersion
    }
}

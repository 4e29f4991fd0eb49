/// The replicated state of one record: each field's value and version, and the delete
/// tombstone if any. States form a join-semilattice under ``merged(with:)``: merging is
/// commutative, associative and idempotent, so replicas that have seen the same changes
/// hold the same state whatever order the changes arrived in.
///
/// Visibility is derived, never stored: a field is live when its version is newer than the
/// tombstone; a record is live when it has a live field. A delete therefore beats every
/// older edit, and an edit made after a delete revives the record with just that edit.
public struct RecordState: Hashable, Sendable, Codable {
    public private(set) var values: [String: FieldValue]
    public private(set) var versions: [String: FieldVersion]
    public private(set) var tombstone: FieldVersion?

    public init() {
        values = [:]
        versions = [:]
        tombstone = nil
    }

    /// Rebuilds a state from storage (values of live fields, versions of all fields).
    public init(values: [String: FieldValue], versions: [String: FieldVersion], tombstone: FieldVersion?) {
        self.values = values
        self.versions = versions
        self.tombstone = tombstone
        normalize()
    }

    /// True when no change has touched the record.
    public var isEmpty: Bool { versions.isEmpty && tombstone == nil }

    public var isLive: Bool {
        guard let t = tombstone else { return !versions.isEmpty }
        return versions.values.contains { $0 > t }
    }

    /// Field values a reader sees: the live fields.
    public var liveValues: [String: FieldValue] {
        guard isLive else { return [:] }
        guard let t = tombstone else { return values }
        return values.filter { versions[$0.key].map { $0 > t } ?? false }
    }

    /// Applies one change and reports which fields changed and which concurrent losers were
    /// found. Applying the same change twice is a no-op the second time.
    @discardableResult
    public mutating func apply(_ change: Change) -> ApplyOutcome {
        let v = change.version
        var outcome = ApplyOutcome()
        switch change.op {
        case .delete:
            if tombstone.map({ v > $0 }) ?? true {
                tombstone = v
                outcome.deleted = true
                normalize()
            }
        case .upsert:
            if versions.isEmpty, tombstone == nil {
                // A record's first change (most of what a node writes and receives): every
                // field is new, nothing can conflict. Taken over whole, the change's own
                // table reused, instead of hashing each field three times.
                values = change.fields
                versions = change.fields.mapValues { _ in v }
                outcome.changedFields = Array(change.fields.keys)
                return outcome
            }
            // Room for every field at once: grown one insert at a time, a new record's
            // tables were rehashed several times over.
            versions.reserveCapacity(versions.count + change.fields.count)
            values.reserveCapacity(values.count + change.fields.count)
            outcome.changedFields.reserveCapacity(change.fields.count)
            // In the fields' own order (sorting them cost a tenth of applying a change);
            // conflicts are put in field order below, which is all that order was for.
            for (field, value) in change.fields {
                let current = versions[field]
                if let t = tombstone, v < t, t.node != v.node, !value.isNull, current.map({ v > $0 }) ?? true {
                    // An edit older than a concurrent delete: the delete wins; the edit is kept.
                    outcome.conflicts.append(FieldConflict(field: field, winner: .null, winnerVersion: t, loser: value, loserVersion: v))
                }
                guard let current else {
                    versions[field] = v
                    values[field] = value
                    outcome.changedFields.append(field)
                    continue
                }
                let currentValue = values[field] ?? .null
                if v > current {
                    // The writer had not seen the value it overwrites here: a concurrent
                    // edit, whose loser is kept unless both carried the same value.
                    if change.prior[field] != current, current.node != v.node, currentValue != value,
                       !isCovered(current) {
                        outcome.conflicts.append(FieldConflict(field: field, winner: value, winnerVersion: v,
                                                               loser: currentValue, loserVersion: current))
                    }
                    versions[field] = v
                    values[field] = value
                    outcome.changedFields.append(field)
                } else if v < current {
                    // The incoming write lost. Causal predecessors arrive first along the
                    // tree, so a late loser from another node was concurrent.
                    if current.node != v.node, currentValue != value, !isCovered(v) {
                        outcome.conflicts.append(FieldConflict(field: field, winner: currentValue, winnerVersion: current,
                                                               loser: value, loserVersion: v))
                    }
                }
            }
            normalize()
            if outcome.conflicts.count > 1 {
                // By field, and within a field in the order found (stably: `sort` does not promise it).
                outcome.conflicts = outcome.conflicts.enumerated()
                    .sorted { ($0.element.field, $0.offset) < ($1.element.field, $1.offset) }.map(\.element)
            }
        }
        return outcome
    }

    /// This state without what the change stamped `version` wrote (the fields it still wins
    /// and its tombstone), or nil when that change holds nothing here. Not a merge: merges
    /// only add. It is for a country whose parent refused a change the country took from a
    /// child (``NodeStore/dropRefusedRelays(_:)``), which then merges its other logged
    /// changes of the record again: a field the change won goes without the value it
    /// overwrote, which the state no longer knows; a delete's tombstone goes with every
    /// field it hid (their values were dropped), so those come back only from the changes
    /// that wrote them.
    public func withdrawing(_ version: FieldVersion) -> RecordState? {
        let deletes = tombstone == version
        let fields = versions.compactMap { $0.value == version || (deletes && $0.value < version) ? $0.key : nil }
        guard !fields.isEmpty || deletes else { return nil }
        var result = self
        for field in fields {
            result.versions[field] = nil
            result.values[field] = nil
        }
        if deletes { result.tombstone = nil }
        return result
    }

    /// The least upper bound of two states: per field the newer version, the newer tombstone.
    public func merged(with other: RecordState) -> RecordState {
        var result = self
        for (field, ov) in other.versions {
            let otherValue = other.values[field] ?? .null
            if let mine = result.versions[field] {
                if ov > mine {
                    result.versions[field] = ov
                    result.values[field] = otherValue
                } else if ov == mine, otherValue.canonical > (result.values[field] ?? .null).canonical {
                    // Same version, different value: impossible between honest nodes, but a
                    // deterministic pick keeps the merge laws even then.
                    result.values[field] = otherValue
                }
            } else {
                result.versions[field] = ov
                result.values[field] = otherValue
            }
        }
        if let ot = other.tombstone, result.tombstone.map({ ot > $0 }) ?? true {
            result.tombstone = ot
        }
        result.normalize()
        return result
    }

    /// True when a tombstone is newer than `version`: that write is already deleted.
    private func isCovered(_ version: FieldVersion) -> Bool {
        tombstone.map { version < $0 } ?? false
    }

    /// Drops the values a tombstone covers (their versions stay, so the merge still knows
    /// them): deleted data does not linger in replicas.
    private mutating func normalize() {
        guard let t = tombstone else { return }
        for (field, v) in versions where v < t && values[field] != .null {
            values[field] = .null
        }
    }
}

/// What applying one change did to a record.
public struct ApplyOutcome: Sendable, Equatable {
    public var changedFields: [String] = []
    public var deleted = false
    public var conflicts: [FieldConflict] = []
    public var changedAnything: Bool { deleted || !changedFields.isEmpty }
}

/// A concurrent edit that lost: both values with their versions (and so their origins).
public struct FieldConflict: Sendable, Equatable, Hashable, Codable {
    public var field: String
    public var winner: FieldValue
    public var winnerVersion: FieldVersion
    public var loser: FieldValue
    public var loserVersion: FieldVersion

    public init(field: String, winner: FieldValue, winnerVersion: FieldVersion, loser: FieldValue, loserVersion: FieldVersion) {
        self.field = field
        self.winner = winner
        self.winnerVersion = winnerVersion
        self.loser = loser
        self.loserVersion = loserVersion
    }
}

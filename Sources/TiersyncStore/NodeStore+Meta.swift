// The store's settings (`ts_meta`, one text value per key): the keys the store itself
// reads and writes (`MetaKey`), the public `meta`/`setMeta` other modules keep their own
// settings with, and the readers of the settings every write needs (the sequence floor and
// the hybrid clock's last stamp). Every key's spelling is what existing stores hold.

import GRDB
import TiersyncCore

/// The `ts_meta` keys this module reads and writes. A raw value is the key as stores on
/// disk hold it: never change one (a store written before would lose the setting).
///
/// Other modules keep settings of their own there through `meta(_:)` and `setMeta(_:_:)`
/// with a `String` key they name (`ca_file`, `pull.bootstrapped`, `governance.key`, …).
/// Migration `v7-governance-generation`'s triggers name `parent` and `governance.%` in
/// their SQL.
public enum MetaKey: String, Sendable, CaseIterable {
    // Who the store belongs to (``NodeIdentity``).
    case tenant, node, parent
    /// The node's credential towards its parent, from enrollment.
    case credential
    /// The parent's URL, from enrollment (or the agent's `--parent`).
    case parentURL = "parent_url"
    /// Sequence numbers at or below this were used by an earlier store of this node.
    case seqFloor = "seq_floor"
    /// The hybrid clock's last stamp, as its raw value in decimal.
    case hlc
    /// The offset between this node's clock and its parent's (``ClockOffset``), and when it was measured.
    case clockOffset = "clock_offset_ms"
    case clockOffsetMeasuredAt = "clock_offset_at"
    /// How many times the agent found its parent restored from an older backup, and when
    /// last (``ParentRestores``, shown by `status`).
    case parentRestores = "parent.restores"
    case parentRestoredAt = "parent.restored_at"
    /// The agent's last exchange with its parent that worked, and its failures since
    /// (``ParentContact``, shown by `status`).
    case parentContactOK = "parent.contact_ok"
    case parentContactFailure = "parent.contact_failure"
    /// The KPI counting (`NodeStore+KPI.swift`): the formulas counted, the adoption they
    /// came from, its source, what was last published and the accumulators' layout.
    case kpiFormulas = "kpi.formulas"
    case kpiAdoption = "kpi.adoption"
    case kpiSource = "kpi.source"
    case kpiPublished = "kpi.published"
    case kpiLayout = "kpi.layout"
    /// The counting rules' version the accumulators were counted with
    /// (``TiersyncKPI/KPIEvaluator/countingRules``).
    case kpiCountingRules = "kpi.counting_rules"
    /// The node's path from the root, as its agent learned it (``AllocationPolicy``'s `tree.path`).
    case treePath = "tree.path"
    /// The parent and the highest notice number taken from it (``NodeStore/takeUpstreamRefusals(_:from:nowMillis:)``),
    /// as `<parent> <number>`.
    case upstreamRefusalsTaken = "refusals.taken"
    /// Set when the file holds no deleted content from before `secure_delete` was on (a store
    /// created by this version, or one vacuumed once at its first erasure).
    case scrubbed = "erasure.scrubbed"
    /// Set once the store has served its log to a child: from then on every process that
    /// writes the log begins a log history first (NodeStore+LogHistory).
    case logHistories = "log.histories"
}

extension NodeStore {
    public func meta(_ key: String) throws -> String? {
        try writer.read { db in try String.fetchOne(db, sql: "SELECT value FROM ts_meta WHERE key = ?", arguments: [key]) }
    }

    public func setMeta(_ key: String, _ value: String?) throws {
        try writer.write { db in
            if let value { try Self.setMeta(db, key, value) } else {
                try db.execute(sql: "DELETE FROM ts_meta WHERE key = ?", arguments: [key])
            }
        }
    }

    public func meta(_ key: MetaKey) throws -> String? { try meta(key.rawValue) }

    public func setMeta(_ key: MetaKey, _ value: String?) throws { try setMeta(key.rawValue, value) }

    /// Sequence numbers at or below this were used by an earlier store of this node.
    static func seqFloor(_ db: Database) throws -> Int64 {
        Int64(try meta(db, .seqFloor) ?? "0") ?? 0
    }

    static func lastHLC(_ db: Database) throws -> HLCTimestamp {
        let s = try meta(db, .hlc)
        return HLCTimestamp(rawValue: s.flatMap { UInt64($0) } ?? 0)
    }

    // The settings' statements are cached per connection: every commit and push reads and
    // writes a few settings, and preparing a statement (with GRDB's authorizer) cost more than
    // running it (a tenth of a one-write commit).
    // Bound and read directly (``DirectBinding``): GRDB's arguments cost more than the look-up.
    static func meta(_ db: Database, _ key: MetaKey) throws -> String? {
        try DirectBinding.row(db, db.cachedStatement(sql: "SELECT value FROM ts_meta WHERE key = ?"), { $0.text(key.rawValue) }) { $0.text(0) } ?? nil
    }

    static func setMeta(_ db: Database, _ key: MetaKey, _ value: String) throws {
        try setMeta(db, key.rawValue, value)
    }

    static func setMeta(_ db: Database, _ key: String, _ value: String) throws {
        try DirectBinding.execute(db, db.cachedStatement(sql: "INSERT INTO ts_meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")) { b in
            b.text(key)
            b.text(value)
        }
    }
}

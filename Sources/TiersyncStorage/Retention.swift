import TiersyncCore

/// How long a store keeps what it could purge (docs/PRIVACY.md, "Bounded storage").
///
/// A change-log entry whose values were all overwritten later (superseded) goes once the
/// parent acknowledged it (when it goes upward) and every child of the store fed it has
/// pulled past it; a child away longer than `horizon` no longer holds it back. A deleted
/// record's tombstone, with its log entries, goes once the delete is older than `horizon`:
/// a child whose last pull is older than a purged delete must re-bootstrap
/// (``RebootstrapRequired``).
public struct RetentionPolicy: Sendable, Equatable {
    /// How long a node may stay away before it must re-bootstrap. Default 30 days.
    public var horizon: Duration
    /// How often a store is compacted.
    public var interval: Duration

    public init(horizon: Duration = .seconds(30 * 86_400), interval: Duration = .seconds(60)) {
        self.horizon = horizon
        self.interval = interval
    }

    public static let `default` = RetentionPolicy()

    /// The longest horizon an operator may set (100 years).
    public static let maximumDays = 36_500.0

    /// A policy with a horizon of `days` (fractions allowed, for tests and drills), or nil
    /// when `days` is not a number in (0, ``maximumDays``].
    public init?(days: Double, interval: Duration = .seconds(60)) {
        guard days.isFinite, days > 0, days <= Self.maximumDays else { return nil }
        self.init(horizon: .milliseconds(Int64(days * 86_400_000)), interval: interval)
    }

    /// The horizon in milliseconds, never negative and never trapping on absurd values.
    public var horizonMillis: UInt64 {
        let (seconds, attoseconds) = horizon.components
        guard seconds >= 0 else { return 0 }
        let (ms, overflow) = UInt64(seconds).multipliedReportingOverflow(by: 1_000)
        return overflow ? .max : ms &+ UInt64(max(0, attoseconds) / 1_000_000_000_000_000)
    }
}

/// What one compaction pass removed.
public struct CompactionReport: Sendable, Equatable {
    /// Superseded change-log entries purged.
    public var supersededEntries = 0
    /// Current change-log entries folded into their records (every replica that needs them
    /// has them; the feed serves them from the record's state).
    public var foldedEntries = 0
    /// Deleted records whose tombstone (and log entries) were purged.
    public var tombstones = 0
    /// Log entries purged with those tombstones.
    public var tombstoneEntries = 0
    /// Superseded entries kept because a child fed here has not pulled them yet.
    public var heldForChildren = 0
    /// Records the pass looked at: those written since the last pass and those with
    /// entries held back then (not the whole log).
    public var examinedRecords = 0
    /// Free pages given back to the file system after the purge: SQLite stores created with
    /// incremental auto-vacuum release theirs; a hub on PostgreSQL counts the 8 KiB pages its
    /// rewrites of bloated tables gave back.
    public var releasedPages = 0
    /// The log position a child must have pulled past to go on without re-bootstrapping.
    public var floor: Int64 = 0

    public init() {}

    public var purgedEntries: Int { supersededEntries + foldedEntries + tombstoneEntries }
}

/// The answer to a pull whose cursor is older than a purged delete: the caller may hold
/// records deleted since and must fetch its scope again (``RetentionPolicy``).
public struct RebootstrapRequired: Error, Sendable, CustomStringConvertible {
    public var cursor: Int64
    public var floor: Int64

    public init(cursor: Int64, floor: Int64) {
        self.cursor = cursor
        self.floor = floor
    }

    public static let code = "rebootstrap_required"

    public var description: String {
        "this node's last pull (position \(cursor)) is older than the retention horizon: deletes it has not seen were purged (through position \(floor)); it must fetch its scope again from the start, keeping its unsent changes"
    }
}

/// A store's size on disk against the live data it holds (``RetentionPolicy``'s bound).
public struct StorageFootprint: Sendable, Equatable {
    /// The database file as on disk (its high-water mark: freed pages are reused, not returned).
    public var fileBytes: Int64
    /// The pages in use in it (the file less its free list).
    public var usedBytes: Int64
    /// The write-ahead log as on disk.
    public var walBytes: Int64
    /// A file holding only the live data: the domain tables with each record's values,
    /// versions and route (not the identities of its folded log entries, which count
    /// against the store like the log they replace).
    public var liveBytes: Int64
    /// The same file with the folded identities (and their index) kept.
    public var liveWithFoldedBytes: Int64

    public init(fileBytes: Int64, usedBytes: Int64, walBytes: Int64, liveBytes: Int64, liveWithFoldedBytes: Int64? = nil) {
        self.fileBytes = fileBytes
        self.usedBytes = usedBytes
        self.walBytes = walBytes
        self.liveBytes = liveBytes
        self.liveWithFoldedBytes = liveWithFoldedBytes ?? liveBytes
    }

    /// The database file against the live data.
    public var fileRatio: Double { liveBytes > 0 ? Double(fileBytes) / Double(liveBytes) : 0 }
}

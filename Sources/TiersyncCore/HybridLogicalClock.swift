/// A hybrid logical clock timestamp: 48 bits of wall-clock milliseconds since the Unix
/// epoch and a 16-bit logical counter, packed into one `UInt64` so that timestamps sort
/// numerically and fit an SQLite INTEGER.
///
/// Why a hybrid clock: per-field last-writer-wins needs an order that respects causality
/// (a write made after seeing another always sorts after it) while staying close to real
/// time, so that "last" means what a person expects.
public struct HLCTimestamp: Hashable, Comparable, Sendable, Codable, CustomStringConvertible {
    public let rawValue: UInt64

    public init(rawValue: UInt64) { self.rawValue = rawValue }

    public init(wallMillis: UInt64, counter: UInt16) {
        self.rawValue = (wallMillis << 16) | UInt64(counter)
    }

    public static let zero = HLCTimestamp(rawValue: 0)

    public var wallMillis: UInt64 { rawValue >> 16 }
    public var counter: UInt16 { UInt16(truncatingIfNeeded: rawValue) }

    public static func < (lhs: HLCTimestamp, rhs: HLCTimestamp) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String { "\(wallMillis).\(counter)" }

    public init(from decoder: Decoder) throws {
        rawValue = try decoder.singleValueContainer().decode(UInt64.self)
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
}

/// The rules of the hybrid logical clock, as pure functions over the last timestamp a node
/// issued or observed. The state itself lives wherever the node keeps it (the local store
/// persists it in the same transaction as the write it stamps), so several processes
/// sharing one SQLite file never issue the same timestamp twice.
public struct HybridLogicalClock: Sendable {
    /// How far ahead of the receiver's wall clock a remote timestamp may be before it is
    /// refused. Without this bound a node with a wrong clock would win every conflict.
    public var maxSkewMillis: UInt64

    public init(maxSkewMillis: UInt64 = 60_000) {
        self.maxSkewMillis = maxSkewMillis
    }

    /// The timestamp for a local event, given the last timestamp issued or observed.
    public func tick(last: HLCTimestamp, wallMillis: UInt64) -> HLCTimestamp {
        if wallMillis > last.wallMillis {
            return HLCTimestamp(wallMillis: wallMillis, counter: 0)
        }
        return Self.successor(of: last)
    }

    /// The new "last" after observing a remote timestamp; throws when the remote timestamp
    /// is further ahead of `wallMillis` than `maxSkewMillis`.
    public func receive(last: HLCTimestamp, remote: HLCTimestamp, wallMillis: UInt64) throws(ClockSkewError) -> HLCTimestamp {
        try check(remote, wallMillis: wallMillis)
        return max(last, remote)
    }

    /// Throws when `remote` is stamped too far ahead of `wallMillis`.
    public func check(_ remote: HLCTimestamp, wallMillis: UInt64) throws(ClockSkewError) {
        if remote.wallMillis > wallMillis, remote.wallMillis - wallMillis > maxSkewMillis {
            throw ClockSkewError(remote: remote, aheadMillis: remote.wallMillis - wallMillis, maxSkewMillis: maxSkewMillis)
        }
    }

    /// The smallest timestamp after `t`.
    public static func successor(of t: HLCTimestamp) -> HLCTimestamp {
        if t.counter == UInt16.max {
            // Counter exhausted within one millisecond: borrow the next millisecond.
            return HLCTimestamp(wallMillis: t.wallMillis + 1, counter: 0)
        }
        return HLCTimestamp(wallMillis: t.wallMillis, counter: t.counter + 1)
    }
}

/// A remote timestamp too far in the receiver's future.
public struct ClockSkewError: Error, Sendable, Equatable, CustomStringConvertible {
    public let remote: HLCTimestamp
    public let aheadMillis: UInt64
    public let maxSkewMillis: UInt64

    public var description: String {
        "change stamped \(aheadMillis / 1000) s ahead of the receiver's clock (maximum skew \(maxSkewMillis / 1000) s); fix the sending node's clock"
    }
}

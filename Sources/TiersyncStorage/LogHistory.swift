// A parent's change log has positions; a node pulls through a cursor, a position of that
// log. A parent restored from an older backup numbers new changes from the backup's head
// again, so a position can name two different changes: the one the node saw before the
// restore and another after. The head alone shows the restore only while it is below the
// node's cursor; once others have pushed the restored log past it, the changes numbered
// between the backup's head and the cursor would be skipped. A log history tells the two
// logs apart: each process that writes a parent's log first begins a history (a random
// identity and the log's head at that moment, its floor), a pull answers with the newest
// history, and the node sends it back with its cursor.

import Synchronization
import TiersyncCore

/// Where a log history a node names stands in a store's log (``HubTenantStore/logHistoryStanding(_:)``).
public enum LogHistoryStanding: Sendable, Equatable {
    /// The store's newest history: every position handed out under it is still held.
    case current
    /// An older history, followed by one that began at `floor`: positions handed out under
    /// it are held through `floor`. (A cursor handed out under it is at most the head when
    /// it was handed out, and a later history's floor is at least that head, unless the log
    /// went back in between.)
    case superseded(floor: Int64)
    /// Not in the store: a history begun after the backup the store was restored from.
    case unknown

    /// Whether a cursor handed out under this history counts positions the store lost
    /// (the log's positions after the floor were numbered again). A cursor of 0 loses
    /// nothing.
    public func loses(cursor: Int64) -> Bool {
        guard cursor > 0 else { return false }
        switch self {
        case .current: return false
        case .superseded(let floor): return cursor > floor
        case .unknown: return true
        }
    }

    /// A new history's identity: 16 random hexadecimal digits (``PullResponse/isValidHistory(_:)``).
    public static func newIdentity() -> String {
        let value = UInt64.random(in: 0...UInt64.max)
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}

/// A pull whose cursor counts positions of a log history the parent lost (409
/// `log_history_lost`): the node pulls its scope again from the start, as after any
/// restore it notices (docs/OPERATIONS.md, "What agents do after a restore").
public struct LogHistoryLost: Error, Sendable, CustomStringConvertible {
    public var cursor: Int64
    public var history: String

    public init(cursor: Int64, history: String) {
        self.cursor = cursor
        self.history = history
    }

    public static let code = "log_history_lost"

    public var description: String {
        "this node's pull cursor (position \(cursor)) counts positions of a log this hub no longer has (history \(history)): it was restored from an older backup and numbered new changes at those positions; pull again from the start (cursor 0)"
    }
}

/// The standings a process has found, by history: a pull names the same few histories
/// over and over, and a standing found once holds for the process's lifetime (a restore
/// stops every process of a store first), provided it was found after the process began
/// its own history (the engines' `logHistoryStanding` begins it first): before, the
/// backup's newest history would be found current. `.current` may since have been superseded, but
/// only at a floor at least as high as every cursor handed out under it before, so it
/// judges those cursors alike. Unknown histories are not kept (a node may name any), and
/// at most `capacity` are.
public final class LogHistoryStandings: Sendable {
    private let known = Mutex<[String: LogHistoryStanding]>([:])
    private let capacity: Int

    public init(capacity: Int = 256) {
        self.capacity = capacity
    }

    /// The standing of `history`, found by `find` unless known.
    public func standing(of history: String, find: () async throws -> LogHistoryStanding) async throws -> LogHistoryStanding {
        if let standing = known.withLock({ $0[history] }) { return standing }
        let standing = try await find()
        if standing != .unknown {
            known.withLock { known in
                if known.count >= capacity { known.removeAll() }
                known[history] = standing
            }
        }
        return standing
    }
}

import TiersyncCore

/// Errors from the local store, with messages a person can act on.
public enum StoreError: Error, Sendable, CustomStringConvertible, Equatable {
    case notEnrolled(path: String)
    case rejected(ChangeRejection)
    case notFound(String)
    case invalidArgument(String)
    /// The file given as a node's database cannot be one: not SQLite, a directory, unreadable.
    case unusable(path: String, reason: String)
    /// Something holds as many of a kind as it may (an administrator's live API tokens).
    case limitReached(String)

    public var description: String {
        switch self {
        case .notEnrolled(let path):
            "the store at \(path) has no node identity yet: enroll it first with `tiersync agent run --enroll-token ...`"
        case .rejected(let r): r.message
        case .notFound(let what): "\(what) not found"
        case .invalidArgument(let m): m
        case .unusable(let path, let reason): "\(path) cannot be used as a node's database: \(reason)"
        case .limitReached(let m): m
        }
    }
}

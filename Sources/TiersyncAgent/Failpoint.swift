import Foundation
import Synchronization

/// Named crash points for crash-recovery tests. `TIERSYNC_FAILPOINT=name:N` makes the
/// process kill itself with SIGKILL the N-th time it reaches `name` — for example
/// `agent.after-push-response:3`, between the parent committing a batch and this node
/// recording the acknowledgement. Unset (always, in production), a hit costs one compare.
enum Failpoint {
    private static let armed: (name: String, count: Int)? = {
        guard let spec = ProcessInfo.processInfo.environment["TIERSYNC_FAILPOINT"] else { return nil }
        let parts = spec.split(separator: ":")
        guard let name = parts.first else { return nil }
        return (String(name), parts.count > 1 ? Int(parts[1]) ?? 1 : 1)
    }()

    private static let hits = Mutex(0)

    static func hit(_ name: String) {
        guard let armed, armed.name == name else { return }
        let n = hits.withLock { count in
            count += 1
            return count
        }
        if n >= armed.count {
            FileHandle.standardError.write(Data("failpoint \(name) reached (\(n)): killing the process\n".utf8))
            kill(getpid(), SIGKILL)
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// The advisory lock (`flock`) on `DATA/hub.lock` that the process serving a SQLite hub's data
/// directory holds while it runs. The kernel releases it when the process ends, however it
/// ends (a SIGKILL included), so a lock found held means a hub is running. Commands that must
/// not run beside a serving hub (`admin migrate-tenant`, which reads the tenant as it stands)
/// take it too; a second `hub serve` on the same directory is refused.
public final class HubDirectoryLock: Sendable {
    private let descriptor: Int32
    /// The lock file's path.
    public let path: String

    private init(descriptor: Int32, path: String) {
        self.descriptor = descriptor
        self.path = path
    }

    /// Takes the lock of `directory` (created if missing, with the lock file) without waiting;
    /// nil when another process holds it. The file is opened read-only (flock needs no more):
    /// one left by an administrator's command run as root does not stop the service's own
    /// user from taking it.
    public static func acquire(directory: String) throws -> HubDirectoryLock? {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return try acquire(file: directory + "/hub.lock")
    }

    /// Takes the lock of the file at `path` (created if missing) without waiting; nil when
    /// another process holds it. A node's store is locked so (`STORE.lock`) by the process
    /// syncing it: one agent per store.
    public static func acquire(file path: String) throws -> HubDirectoryLock? {
        let descriptor = open(path, O_RDONLY | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw StoreError.invalidArgument("cannot open \(path): \(String(cString: strerror(errno)))")
        }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            let busy = errno == EWOULDBLOCK
            let reason = String(cString: strerror(errno))
            close(descriptor)
            if busy { return nil }
            throw StoreError.invalidArgument("cannot lock \(path): \(reason)")
        }
        return HubDirectoryLock(descriptor: descriptor, path: path)
    }

    deinit { close(descriptor) }
}

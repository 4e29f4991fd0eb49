import Synchronization
import TiersyncCore
import TiersyncStorage

/// Failed logins of names no account has, counted and locked exactly as an account's
/// (``AdminLogin/lockMillis(afterFailures:)``): otherwise the sixth failure in a row was
/// answered `429 login_locked` for an account that exists and `401` for one that does not,
/// and anyone could tell which administrators a tenant has without logging in.
///
/// Kept in memory, per hub process, for at most ``capacity`` names (those whose lock ended go
/// first). Behind a load balancer each process counts its own: a name no account has may
/// take a few more failures before it is answered as locked.
final class UnknownLoginLedger: Sendable {
    struct Entry {
        var failures: Int
        var lockedUntilMillis: UInt64
    }

    static let capacity = 10_000
    private let entries = Mutex<[String: Entry]>([:])

    private static func key(_ tenant: TenantID, _ name: String) -> String { "\(tenant.rawValue)\u{0}\(name)" }

    /// Counts an attempt of `name` as failed before its (decoy) check, locking it as an account
    /// would be; or, when it is locked now, counts nothing and says until when: as
    /// ``AdminAccountStore/countLoginAttempt(_:of:nowMillis:)`` does for an account.
    func countAttempt(_ name: String, of tenant: TenantID, nowMillis: UInt64) -> LoginAttempt {
        entries.withLock { entries in
            let key = Self.key(tenant, name)
            if let held = entries[key], held.lockedUntilMillis > nowMillis { return .locked(untilMillis: held.lockedUntilMillis) }
            if entries[key] == nil, entries.count >= Self.capacity {
                entries = entries.filter { $0.value.lockedUntilMillis > nowMillis }
                if entries.count >= Self.capacity, let any = entries.keys.first { entries[any] = nil }
            }
            var entry = entries[key] ?? Entry(failures: 0, lockedUntilMillis: 0)
            entry.failures += 1
            let lock = AdminLogin.lockMillis(afterFailures: entry.failures)
            if lock > 0 { entry.lockedUntilMillis = nowMillis &+ lock }
            entries[key] = entry
            return .counted(failures: entry.failures)
        }
    }
}

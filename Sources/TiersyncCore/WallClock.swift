import Foundation

/// The system's wall clock in milliseconds since the Unix epoch.
public enum WallClock {
    public static func nowMillis() -> UInt64 {
        UInt64(max(0, Date().timeIntervalSince1970 * 1000))
    }
}

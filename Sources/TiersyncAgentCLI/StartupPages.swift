import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An agent is a long-running daemon whose start-up (argument parsing, runtime and
/// Foundation initialisation, TLS set-up, migrations) touches most of its executable's
/// code once: the kernel maps 64 KiB around each page fault, so ~23 MB of the executable
/// stays resident while the idle loop needs about a third of that (BENCHMARKS.md, idle).
///
/// Once the agent has synced, it asks the kernel to drop its executable's clean,
/// read-only pages (`madvise(MADV_PAGEOUT)`); the ones the sync loops use come straight
/// back on their next touch, the rest stay out. Nothing is lost: these pages are the file's
/// own and are re-read from it when needed. Writable and anonymous memory is left alone,
/// and the kernel skips pages other processes also map.
enum StartupPages {
    /// `MADV_PAGEOUT` (Linux 5.4+); older kernels refuse it, which only means no trim.
    static let pageOut: Int32 = 21

    /// Advises the kernel to page out this process's executable's read-only mappings.
    /// Returns the bytes of the mappings advised (0 where unsupported).
    @discardableResult
    static func release() -> Int {
        #if os(Linux)
        guard let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"),
              let maps = try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8) else { return 0 }
        var advised = 0
        for line in maps.split(separator: "\n") {
            // address perms offset dev inode path
            let parts = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
            guard parts.count == 6, parts[1].hasPrefix("r"), !parts[1].contains("w"),
                  parts[5].trimmingCharacters(in: .whitespaces) == exe else { continue }
            let bounds = parts[0].split(separator: "-")
            guard bounds.count == 2, let low = UInt(bounds[0], radix: 16), let high = UInt(bounds[1], radix: 16), high > low,
                  let start = UnsafeMutableRawPointer(bitPattern: low) else { continue }
            if madvise(start, Int(high - low), pageOut) == 0 { advised += Int(high - low) }
        }
        return advised
        #else
        return 0
        #endif
    }
}

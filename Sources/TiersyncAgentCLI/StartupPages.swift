import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An agent is a long-running daemon whose start-up (argument parsing, runtime and
/// Foundation initialisation, TLS set-up, migrations) touches most of its executable's
/// code once: the kernel maps 64 KiB around each page fault, so ~23 MB of the executable
/// stays resident while the idle loop needs about a third of that (BENCHMARKS.md, idle).
///
/// Once the agent has synced, it asks the kernel to drop the clean, read-only pages of its
/// executable and libraries (`madvise(MADV_PAGEOUT)`); the ones the sync loops use come straight
/// back on their next touch, the rest stay out. Nothing is lost: these pages are the file's
/// own and are re-read from it when needed. Only mappings holding no private (anonymous)
/// pages are advised, so writable data and the relocated read-only part (RELRO: the GOT,
/// Swift metadata fixed up at load) stay resident; the kernel also skips pages other
/// processes map.
enum StartupPages {
    /// `MADV_PAGEOUT` (Linux 5.4+); older kernels refuse it, which only means no trim.
    static let pageOut: Int32 = 21

    /// Advises the kernel to page out this process's read-only file mappings (executable
    /// and libraries) that hold no private pages.
    /// Returns the bytes of the mappings advised (0 where unsupported).
    @discardableResult
    static func release() -> Int {
        #if os(Linux)
        guard let smaps = try? String(contentsOfFile: "/proc/self/smaps", encoding: .utf8) else { return 0 }
        // Each mapping: a header line (address perms offset dev inode path), then fields.
        var candidate: (start: UnsafeMutableRawPointer, length: Int)?
        var advised = 0
        for line in smaps.split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
            if parts.count >= 5, parts[0].contains("-"), !parts[0].hasSuffix(":") {
                candidate = nil
                guard parts.count == 6, parts[1].hasPrefix("r"), !parts[1].contains("w"),
                      parts[5].trimmingCharacters(in: .whitespaces).hasPrefix("/") else { continue }
                let bounds = parts[0].split(separator: "-")
                guard bounds.count == 2, let low = UInt(bounds[0], radix: 16), let high = UInt(bounds[1], radix: 16), high > low,
                      let start = UnsafeMutableRawPointer(bitPattern: low) else { continue }
                candidate = (start, Int(high - low))
            } else if parts.first == "Anonymous:", let mapping = candidate {
                candidate = nil
                // Private copies (relocated pages) would go to swap, not back to the file.
                guard parts.count >= 2, parts[1] == "0" else { continue }
                if madvise(mapping.start, mapping.length, pageOut) == 0 { advised += mapping.length }
            }
        }
        return advised
        #else
        return 0
        #endif
    }
}

import Crypto
import Foundation
import TiersyncCore

/// The proof one replica gives that an erasure is complete (docs/PRIVACY.md): SHA-256 over
/// the erasure's id and, per erased record (sorted), the statement that nothing of it
/// remains. Each engine computes it only after counting every place the record's data could
/// be (row, tombstone, log values, conflicts, quarantine, route index) and finding zero, so
/// a digest exists only for a complete erasure, and every engine's is the same for the same
/// records.
public enum ErasureDigest {
    /// What remained of each record when the digest was made: all zero.
    public static let remains = "row=0 tombstone=0 log=0 conflicts=0 quarantine=0 routes=0"

    public static func digest(erasureID: String, records: [(table: String, id: String)]) -> String {
        var text = "tiersync-erasure-v1\n\(erasureID)\n"
        for (table, id) in records.sorted(by: { ($0.table, $0.id) < ($1.table, $1.id) }) {
            text += "\(table)/\(id) \(remains)\n"
        }
        return SHA256.hash(data: Data(text.utf8)).hexString
    }
}

import Foundation
import TiersyncStorage

extension AuditEntry {
    /// The audit log as CSV (the admin API's `format=csv` and `tiersync admin user audit --csv`):
    /// a header, then one line per entry, every field quoted; a field starting with `=`, `+`,
    /// `-` or `@` is prefixed with `'`, so a spreadsheet never runs it as a formula.
    public static func csv(_ entries: [AuditEntry]) -> String {
        var out = "id,at,actor,action,target,detail,address,scope\n"
        for e in entries {
            let at = Date(timeIntervalSince1970: Double(e.atMillis) / 1000).formatted(.iso8601)
            out += [String(e.id), at, e.actor, e.action, e.target, e.detail, e.address, e.scope.rawValue]
                .map(csvField).joined(separator: ",") + "\n"
        }
        return out
    }

    static func csvField(_ s: String) -> String {
        var value = s
        // OWASP's list: a spreadsheet reads a leading tab or carriage return as nothing and
        // runs the formula after it, so those are neutralised too.
        if let first = value.first, "=+-@\t\r".contains(first) { value = "'" + value }
        return "\"" + value.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}

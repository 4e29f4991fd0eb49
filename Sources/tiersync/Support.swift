import ArgumentParser
import Foundation
import TiersyncAgent
import TiersyncCore
import TiersyncStore

/// Prints rows as an aligned text table; the first row is the header.
func printTable(_ rows: [[String]]) {
    guard let header = rows.first else { return }
    var widths = header.map(\.count)
    for row in rows { for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) } }
    for (n, row) in rows.enumerated() {
        print(row.enumerated().map { i, cell in cell.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
            .joined(separator: "  ").trimmingCharacters(in: .whitespaces))
        if n == 0 { print(widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")) }
    }
}

func formatMillis(_ millis: UInt64) -> String {
    let f = ISO8601DateFormatter()
    return f.string(from: Date(timeIntervalSince1970: Double(millis) / 1000))
}

/// Parses `field=value` arguments into typed values using the table's schema. An empty
/// value (`field=`) sets the field to null.
func parseAssignments(_ assignments: [String], table: TableSchema) throws -> [String: FieldValue] {
    var fields: [String: FieldValue] = [:]
    for assignment in assignments {
        guard let eq = assignment.firstIndex(of: "=") else {
            throw CLIError("'\(assignment)' is not field=value")
        }
        let name = String(assignment[..<eq]), raw = String(assignment[assignment.index(after: eq)...])
        guard let field = table.field(name) else {
            throw CLIError("unknown field '\(name)' in table '\(table.name)' (fields: \(table.fields.map(\.name).joined(separator: ", ")))")
        }
        fields[name] = try parseValue(raw, for: field, table: table.name)
    }
    return fields
}

func parseValue(_ raw: String, for field: FieldSchema, table: String) throws -> FieldValue {
    if raw.isEmpty { return .null }
    let value: FieldValue?
    switch field.type {
    case .int: value = Int64(raw).map(FieldValue.int)
    case .double: value = Double(raw).map(FieldValue.double)
    case .bool: value = ["true": true, "yes": true, "1": true, "false": false, "no": false, "0": false][raw.lowercased()].map(FieldValue.bool)
    default: value = .string(raw)
    }
    guard let value, let checked = field.coerce(value) else {
        throw CLIError("field '\(table).\(field.name)' must be \(field.expectation), got '\(raw)'")
    }
    return checked
}

/// The text of a file an option names, or an error naming the option's file and why it
/// cannot be read (Foundation's own says "NSCocoaErrorDomain Code=260" without the path).
func readOptionFile(_ path: String, what: String) throws -> String {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { throw CLIError("\(what) \(path) does not exist") }
    guard !isDirectory.boolValue else { throw CLIError("\(what) \(path) is a directory, not a file") }
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
        throw CLIError("cannot read \(what) \(path): \(FileManager.default.isReadableFile(atPath: path) ? "not UTF-8 text" : "permission denied")")
    }
    return text
}

/// Opens a node's database for the CLI's reads and local writes. Local writes pass through
/// the node's allocation (``AllocationPolicy``), as they do in the agent's process: a
/// dialogue created with `contact add` or `record put interactions …` is allocated here.
func openEnrolledStore(_ path: String) throws -> NodeStore {
    guard FileManager.default.fileExists(atPath: path) else {
        throw CLIError("no node database at \(path): a node's database is made when it enrolls (`tiersync agent run --db \(path) --parent URL --enroll-token …`); a hub's tenant database when the hub first serves that tenant")
    }
    // An empty file would become a new, unenrolled store: most likely a wrong path, and
    // then the commands below would report an empty node instead of the mistake.
    if let size = (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int, size == 0 {
        throw CLIError("\(path) is an empty file, not a node database (a node's database is made by `tiersync agent run --enroll-token …`)")
    }
    // Another SQLite file (a hub's catalog, a backup of one) would gain a node store's tables.
    guard try NodeStore.holdsNodeStore(at: path) else {
        throw CLIError("\(path) is an SQLite database but not a node's (a hub's catalog? A tenant's data at HQ is DATA/tenants/TENANT.sqlite); nothing was changed")
    }
    let store = try NodeStore(path: path, busyAttempts: NodeStore.busyAttemptsForCommands)
    store.writePolicy = AllocationPolicy()
    return store
}


/// A listing's `--limit`: at least 1 (a negative one trapped taking a prefix).
func validateLimit(_ limit: Int) throws {
    guard limit >= 1 else { throw ValidationError("--limit must be at least 1, got \(limit)") }
}

/// Text an administrator gives that others read (a token's label, release notes, a reason):
/// at most `most` characters, without control characters (``DisplayText``), as the admin API
/// refuses them; a NUL failed the write on PostgreSQL.
func validateText(_ text: String, option: String, most: Int, lineBreaks: Bool) throws {
    guard text.count <= most, text.utf8.count <= most * 4 else { throw ValidationError("\(option) has at most \(most) characters") }
    guard !DisplayText.hasUnsafeCharacters(text, allowingLineBreaks: lineBreaks) else {
        throw ValidationError("\(option) may not hold control characters\(lineBreaks ? " (line breaks and tabs are allowed)" : " or line breaks")")
    }
}

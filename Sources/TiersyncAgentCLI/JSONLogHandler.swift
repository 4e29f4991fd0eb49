import Foundation
import Logging
import TiersyncCore

/// Writes each log entry as one line of JSON to standard error (`--log-format json`), for
/// log shippers: `ts` (RFC 3339, UTC, milliseconds), `level`, `logger`, `message`, then the
/// entry's metadata as string fields. Hummingbird's request id (`hb.request.id`) becomes
/// `request_id`, present in every line a request writes, and answered to the caller in its
/// `X-Request-Id` header.
public struct JSONLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    private let write: @Sendable (String) -> Void

    /// `write` receives each line with its newline (tests collect them).
    public init(label: String, write: @escaping @Sendable (String) -> Void = JSONLogHandler.standardError) {
        self.label = label
        self.write = write
    }

    /// One `write(2)` per line, so lines of concurrent tasks never interleave.
    public static let standardError: @Sendable (String) -> Void = { line in
        var line = line
        line.withUTF8 { bytes in
            var written = 0
            while written < bytes.count {
                let n = Foundation.write(STDERR_FILENO, bytes.baseAddress! + written, bytes.count - written)
                if n <= 0 { return }
                written += n
            }
        }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var fields: [(String, String)] = [
            ("ts", Self.timestamp(Date())), ("level", event.level.rawValue), ("logger", label), ("message", "\(event.message)"),
        ]
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        for key in merged.keys.sorted() {
            let name = key == "hb.request.id" ? "request_id" : key
            guard !["ts", "level", "logger", "message"].contains(name) else { continue }
            fields.append((name, "\(merged[key]!)"))
        }
        var line = "{"
        for (i, (key, value)) in fields.enumerated() {
            if i > 0 { line += "," }
            line += Self.quoted(key) + ":" + Self.quoted(value)
        }
        line += "}\n"
        write(line)
    }

    /// A JSON string literal (the escaping canonical JSON uses).
    static func quoted(_ s: String) -> String {
        FieldValue.quote(s)
    }

    static func timestamp(_ date: Date) -> String {
        date.formatted(.iso8601.year().month().day().dateSeparator(.dash).time(includingFractionalSeconds: true).timeSeparator(.colon).timeZone(separator: .omitted))
    }
}

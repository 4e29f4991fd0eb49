import Foundation
import TiersyncCore

/// The periods KPIs are reported per: a UTC calendar day, an ISO week (Monday to Sunday,
/// UTC) or a UTC calendar month. A dialogue or lead belongs to the period of its
/// `created_at`. Accumulators are kept per day; a week or month is the sum of its days
/// (numerators and denominators added, never values averaged).
public enum KPIPeriodKind: String, Sendable, Codable, CaseIterable, Hashable {
    case day, week, month

    /// The first day (days since 1970-01-01) of the period holding `day`.
    public func start(ofDay day: Int64) -> Int64 {
        switch self {
        case .day: return day
        case .week:
            // 1970-01-01 was a Thursday: (day + 3) mod 7 is 0 on Mondays.
            let weekday = ((day + 3) % 7 + 7) % 7
            return day - weekday
        case .month:
            let (y, m, _) = CivilCalendar.date(days: day)
            return CivilCalendar.days(year: y, month: m, day: 1)
        }
    }

    /// The first day of the next period after the one starting at `start`.
    public func end(ofPeriodStartingAt start: Int64) -> Int64 {
        switch self {
        case .day: return start + 1
        case .week: return start + 7
        case .month:
            let (y, m, _) = CivilCalendar.date(days: start)
            return m == 12 ? CivilCalendar.days(year: y + 1, month: 1, day: 1) : CivilCalendar.days(year: y, month: m + 1, day: 1)
        }
    }
}

/// Days since 1970-01-01 (UTC) and their calendar dates (proleptic Gregorian), without
/// Foundation's calendars: a recomputation converts millions of times.
public enum KPIDay {
    public static let millisPerDay: Int64 = 86_400_000

    /// The UTC day of a time in milliseconds since the epoch.
    public static func of(millis: Int64) -> Int64 {
        millis >= 0 ? millis / millisPerDay : -((-millis + millisPerDay - 1) / millisPerDay)
    }

    /// `YYYY-MM-DD`, the year padded to four digits as a `date` field holds it (year 1 was
    /// `1-01-01`, which no snapshot's `period_start` can hold).
    public static func label(_ days: Int64) -> String {
        let (y, m, d) = CivilCalendar.date(days: days)
        func two(_ n: Int64) -> String { n < 10 ? "0\(n)" : "\(n)" }
        let year = y >= 0 && y < 1000 ? String(repeating: "0", count: 4 - "\(y)".count) + "\(y)" : "\(y)"
        return "\(year)-\(two(m))-\(two(d))"
    }

    /// The day number of a `YYYY-MM-DD` date, nil for anything else.
    public static func parse(_ text: String) -> Int64? {
        let parts = text.split(separator: "-")
        guard text.utf8.count == 10, parts.count == 3, let y = Int64(parts[0]), let m = Int64(parts[1]), let d = Int64(parts[2]),
              CivilCalendar.isDate(year: y, month: m, day: d) else { return nil }
        return CivilCalendar.days(year: y, month: m, day: d)
    }
}

/// ISO 8601 date-times as `timestamp` fields hold them, in milliseconds since the epoch.
public enum KPITime {
    /// Reads ``CommonTimestamp``'s form directly from its bytes (a full recomputation parses
    /// millions); any other form the schema accepts goes through Foundation's ISO 8601 parser.
    public static func millis(_ text: String) -> Int64? {
        var copy = text
        if let fast = copy.withUTF8({ millis(utf8: $0) }) { return fast }
        return slow(text)
    }

    /// The fast path over UTF-8 bytes; nil when the text is not in the common form.
    /// Only times a `timestamp` field may hold (``CommonTimestamp/validMillis``) count: a row
    /// stored before the schema refused year 1 counts in no period.
    @inlinable
    public static func millis(utf8 p: UnsafeBufferPointer<UInt8>) -> Int64? {
        guard let millis = CommonTimestamp.millis(utf8: p), CommonTimestamp.validMillis.contains(millis) else { return nil }
        return millis
    }

    private static func slow(_ text: String) -> Int64? {
        // What Foundation rolls over into another time (November 31) counts nowhere, as the
        // schema now refuses it (rows stored before were counted in the next month).
        guard CommonTimestamp.fieldsInRange(text) else { return nil }
        let date = (try? Date(text, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true)))
            ?? (try? Date(text, strategy: Date.ISO8601FormatStyle()))
        guard let millis = date.map({ ($0.timeIntervalSince1970 * 1000).rounded() }),
              millis >= 0, millis < Double(CommonTimestamp.validMillis.upperBound) else { return nil }
        return Int64(millis)
    }
}

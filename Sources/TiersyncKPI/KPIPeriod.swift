import Foundation

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
            let (y, m, _) = KPIDay.civil(day)
            return KPIDay.days(year: y, month: m, day: 1)
        }
    }

    /// The first day of the next period after the one starting at `start`.
    public func end(ofPeriodStartingAt start: Int64) -> Int64 {
        switch self {
        case .day: return start + 1
        case .week: return start + 7
        case .month:
            let (y, m, _) = KPIDay.civil(start)
            return m == 12 ? KPIDay.days(year: y + 1, month: 1, day: 1) : KPIDay.days(year: y, month: m + 1, day: 1)
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

    /// `(year, month, day)` of a day number (Howard Hinnant's civil_from_days).
    public static func civil(_ days: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let y = yoe + era * 400
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (m <= 2 ? y + 1 : y, m, d)
    }

    /// The day number of a calendar date (days_from_civil).
    public static func days(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = month > 2 ? month - 3 : month + 9
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    /// Whether `year-month-day` is a calendar date (proleptic Gregorian): what converting it
    /// to a day number and back would tell, without the round trip.
    public static func isDate(year: Int64, month: Int64, day: Int64) -> Bool {
        guard (1...12).contains(month), day >= 1 else { return false }
        switch month {
        case 2:
            let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
            return day <= (leap ? 29 : 28)
        case 4, 6, 9, 11:
            return day <= 30
        default:
            return day <= 31
        }
    }

    /// `YYYY-MM-DD`.
    public static func label(_ days: Int64) -> String {
        let (y, m, d) = civil(days)
        func two(_ n: Int64) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(y)-\(two(m))-\(two(d))"
    }

    /// The day number of a `YYYY-MM-DD` date, nil for anything else.
    public static func parse(_ text: String) -> Int64? {
        let parts = text.split(separator: "-")
        guard text.utf8.count == 10, parts.count == 3, let y = Int64(parts[0]), let m = Int64(parts[1]), let d = Int64(parts[2]),
              isDate(year: y, month: m, day: d) else { return nil }
        return days(year: y, month: m, day: d)
    }
}

/// ISO 8601 date-times as `timestamp` fields hold them, in milliseconds since the epoch.
public enum KPITime {
    /// Parses `YYYY-MM-DDTHH:MM:SS[.fff…](Z|±HH:MM|±HHMM)` directly from its bytes (a full
    /// recomputation parses millions); any other form the schema accepts goes through
    /// Foundation's ISO 8601 parser.
    public static func millis(_ text: String) -> Int64? {
        var copy = text
        if let fast = copy.withUTF8({ millis(utf8: $0) }) { return fast }
        return slow(text)
    }

    /// The fast path over UTF-8 bytes; nil when the text is not in the common form.
    public static func millis(utf8 p: UnsafeBufferPointer<UInt8>) -> Int64? {
        let n = p.count
        guard n >= 20 else { return nil }
        @inline(__always) func digit(_ i: Int) -> Int64? {
            let c = p[i]
            return c >= 48 && c <= 57 ? Int64(c - 48) : nil
        }
        @inline(__always) func number(_ from: Int, _ count: Int) -> Int64? {
            var v: Int64 = 0
            for i in from..<(from + count) {
                guard let d = digit(i) else { return nil }
                v = v * 10 + d
            }
            return v
        }
        guard p[4] == 45, p[7] == 45, p[10] == 84 || p[10] == 116, p[13] == 58, p[16] == 58,
              let year = number(0, 4), let month = number(5, 2), let day = number(8, 2),
              let hour = number(11, 2), let minute = number(14, 2), let second = number(17, 2),
              (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 61 else { return nil }
        var i = 19
        var fraction: Int64 = 0
        if i < n, p[i] == 46 {
            i += 1
            var digits = 0
            while i < n, let d = digit(i) {
                if digits < 3 { fraction = fraction * 10 + d }
                digits += 1
                i += 1
            }
            guard digits > 0 else { return nil }
            if digits < 3 { for _ in digits..<3 { fraction *= 10 } }
        }
        guard i < n else { return nil }
        var offset: Int64 = 0
        switch p[i] {
        case 90, 122:
            guard i + 1 == n else { return nil }
        case 43, 45:
            let sign: Int64 = p[i] == 45 ? -1 : 1
            let rest = n - i - 1
            guard let oh = number(i + 1, 2) else { return nil }
            let om: Int64?
            if rest == 5, p[i + 3] == 58 { om = number(i + 4, 2) }
            else if rest == 4 { om = number(i + 3, 2) }
            else { return nil }
            guard let om, oh < 24, om < 60 else { return nil }
            offset = sign * (oh * 3600 + om * 60)
        default:
            return nil
        }
        // Every timestamp of a recount passes here: the date is checked directly, not by a
        // round trip through day numbers.
        guard KPIDay.isDate(year: year, month: month, day: day) else { return nil }
        let days = KPIDay.days(year: year, month: month, day: day)
        let seconds = days * 86_400 + hour * 3600 + minute * 60 + min(second, 59) - offset
        return seconds * 1000 + fraction
    }

    private static func slow(_ text: String) -> Int64? {
        let date = (try? Date(text, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true)))
            ?? (try? Date(text, strategy: Date.ISO8601FormatStyle()))
        return date.map { Int64(($0.timeIntervalSince1970 * 1000).rounded()) }
    }
}

/// The ISO 8601 date-time form every writer of ours produces,
/// `YYYY-MM-DDTHH:MM:SS[.mmm](Z|±HH:MM)`, read byte by byte: the schema's check of a
/// `timestamp` field, the rules and the KPI recount read it here, at a tenth of the cost of
/// Foundation's parsers, and each leaves any other form to Foundation. One reader, so the
/// three cannot come to disagree about which times are common or what they mean.
public enum CommonTimestamp {
    /// The times a `timestamp` field may hold, in milliseconds since the epoch: from
    /// 1970-01-01T00:00:00Z up to, not including, 10000-01-01T00:00:00Z. Every event the
    /// schema times (a dialogue, a lead, a task, a consent, a KPI's computation) lies there;
    /// before, Foundation's parser let year 1 and year 10000 in, and the rules and KPIs, which
    /// read times as milliseconds since the epoch, placed them nowhere or in a year their
    /// own records could not name.
    public static let validMillis: Range<Int64> = 0..<253_402_300_800_000

    /// Milliseconds since 1970-01-01T00:00:00Z (negative before it) of `p` in the common
    /// form, on a calendar day of a four-digit year, hours 00–23, minutes and seconds 00–59,
    /// offsets up to ±14:59; nil for anything else (nil says nothing about other forms).
    @inlinable
    public static func millis(utf8 p: UnsafeBufferPointer<UInt8>) -> Int64? {
        let n = p.count
        guard n == 20 || n == 24 || n == 25 || n == 29 else { return nil }
        @inline(__always) func number(_ from: Int, _ count: Int) -> Int64? {
            var v: Int64 = 0
            for i in from..<(from + count) {
                let c = p[i]
                guard c >= 0x30, c <= 0x39 else { return nil }
                v = v * 10 + Int64(c - 0x30)
            }
            return v
        }
        guard p[4] == 0x2d, p[7] == 0x2d, p[10] == 0x54, p[13] == 0x3a, p[16] == 0x3a,
              let year = number(0, 4), let month = number(5, 2), let day = number(8, 2),
              let hour = number(11, 2), let minute = number(14, 2), let second = number(17, 2),
              hour < 24, minute < 60, second < 60, CivilCalendar.isDate(year: year, month: month, day: day) else { return nil }
        var i = 19
        var fraction: Int64 = 0
        if n == 24 || n == 29 {
            guard p[i] == 0x2e, let f = number(i + 1, 3) else { return nil }
            fraction = f
            i += 4
        }
        var offset: Int64 = 0
        if p[i] == 0x5a {
            guard i + 1 == n else { return nil }
        } else {
            guard p[i] == 0x2b || p[i] == 0x2d, i + 6 == n, p[i + 3] == 0x3a,
                  let oh = number(i + 1, 2), let om = number(i + 4, 2), oh <= 14, om < 60 else { return nil }
            offset = (p[i] == 0x2d ? -1 : 1) * (oh * 3_600 + om * 60)
        }
        let seconds = CivilCalendar.days(year: year, month: month, day: day) * 86_400 + hour * 3_600 + minute * 60 + second - offset
        return seconds * 1_000 + fraction
    }

    /// False when `s` is laid out as ISO 8601's extended date-time (`YYYY-MM-DDTHH:MM:SS`,
    /// then a fraction and an offset) with a field out of range — 2026-11-31, hour 24, an
    /// offset of +25:00 — which Foundation's parsers take and roll over into another time (a
    /// dialogue of "November 31" counted in December's KPIs); true otherwise (other layouts
    /// are left to those parsers).
    /// Whether `s` is an internet date-time and nothing else: `YYYY-MM-DDThh:mm:ss`, an
    /// optional fraction of a second, then `Z` or an offset (`+01:00`, `+0100`). Foundation's
    /// `ISO8601DateFormatter` on Linux reads the time and ignores whatever follows it
    /// (`2026-12-03T10:00:00Zjunk` was a valid timestamp field, and a valid `--now`).
    public static func hasInternetDateTimeShape(_ s: String) -> Bool {
        let b = Array(s.utf8)
        let n = b.count
        func digits(_ from: Int, _ count: Int) -> Bool {
            from + count <= n && b[from..<(from + count)].allSatisfy { $0 >= 0x30 && $0 <= 0x39 }
        }
        guard n >= 20, digits(0, 4), b[4] == 0x2d, digits(5, 2), b[7] == 0x2d, digits(8, 2), b[10] == 0x54 || b[10] == 0x74,
              digits(11, 2), b[13] == 0x3a, digits(14, 2), b[16] == 0x3a, digits(17, 2) else { return false }
        var i = 19
        if b[i] == 0x2e {
            i += 1
            let start = i
            while i < n, b[i] >= 0x30, b[i] <= 0x39 { i += 1 }
            guard i > start else { return false }
        }
        guard i < n else { return false }
        if b[i] == 0x5a || b[i] == 0x7a { return i + 1 == n }
        guard b[i] == 0x2b || b[i] == 0x2d, digits(i + 1, 2) else { return false }
        if i + 3 < n, b[i + 3] == 0x3a { return digits(i + 4, 2) && i + 6 == n }
        return digits(i + 3, 2) && i + 5 == n
    }

    public static func fieldsInRange(_ s: String) -> Bool {
        let b = Array(s.utf8)
        let n = b.count
        guard n >= 19, b[4] == 0x2d, b[7] == 0x2d, b[10] == 0x54 || b[10] == 0x74, b[13] == 0x3a, b[16] == 0x3a else { return true }
        func number(_ from: Int, _ count: Int) -> Int64? {
            guard from + count <= n else { return nil }
            var v: Int64 = 0
            for i in from..<(from + count) {
                guard b[i] >= 0x30, b[i] <= 0x39 else { return nil }
                v = v * 10 + Int64(b[i] - 0x30)
            }
            return v
        }
        guard let year = number(0, 4), let month = number(5, 2), let day = number(8, 2),
              let hour = number(11, 2), let minute = number(14, 2), let second = number(17, 2) else { return true }
        guard hour < 24, minute < 60, second < 60, CivilCalendar.isDate(year: year, month: month, day: day) else { return false }
        var i = 19
        if i < n, b[i] == 0x2e {
            i += 1
            while i < n, b[i] >= 0x30, b[i] <= 0x39 { i += 1 }
        }
        if i < n, b[i] == 0x2b || b[i] == 0x2d {
            let colon = i + 3 < n && b[i + 3] == 0x3a
            if let oh = number(i + 1, 2), let om = number(colon ? i + 4 : i + 3, 2), oh > 14 || om > 59 { return false }
        }
        return true
    }
}

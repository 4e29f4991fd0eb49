import Foundation
import Testing
@testable import TiersyncCore

/// `timestamp` fields are validated on every change: the common form is checked byte by
/// byte (`FieldType.isCommonTimestamp`), the rest by `ISO8601DateFormatter` as before. The
/// byte check must never accept what the formatter refuses, so the schema accepts exactly
/// what it accepted before.
@Suite("Timestamp validation")
struct SchemaTimestampTests {
    /// What the schema accepted before the byte check: the formatter, without and with fractional seconds.
    static func formatterAccepts(_ s: String) -> Bool {
        let f = ISO8601DateFormatter()
        if f.date(from: s) != nil { return true }
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.date(from: s) != nil
    }

    @Test("what writers produce takes the byte check: UTC, milliseconds, offsets")
    func commonForms() {
        for s in ["2026-11-22T10:15:00Z", "2026-11-22T10:15:00.250Z", "2026-11-22T10:15:00+02:00", "2024-02-29T23:59:59.999-05:30",
                  "1999-12-31T00:00:00Z", ISO8601DateFormatter().string(from: Date())] {
            #expect(FieldType.isCommonTimestamp(s), "\(s)")
            #expect(Self.formatterAccepts(s), "\(s)")
        }
        for s in ["2026-02-29T10:15:00Z", "2026-11-22T24:00:00Z", "2026-11-22t10:15:00Z", "2026-11-22T10:15:00z", "2026-11-22T10:15:00.25Z",
                  "2026-11-22T10:15:00+0200", "2026-11-22T10:15:60Z", "2026-11-22 10:15:00Z", "2026-11-22T10:15:00", "0999-01-01T00:00:00Z"] {
            #expect(!FieldType.isCommonTimestamp(s), "\(s) is left to the formatter")
        }
    }

    @Test("the byte check accepts only what the formatter accepts, and the schema accepts exactly what the formatter does (20,000 strings)")
    func agreesWithTheFormatter() {
        var state: UInt64 = 0x2545_f491_4f6c_dd1d
        func next(_ n: Int) -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((state >> 33) % UInt64(n))
        }
        func two(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }
        let years = [1000, 1582, 1900, 1969, 1970, 2000, 2023, 2024, 2026, 2100, 2400, 9999]
        let fractions = ["", ".", ".2", ".25", ".250", ".2500", ".123456"]
        let zones = ["Z", "z", "+00:00", "-00:00", "+02:00", "-05:30", "+14:59", "+15:00", "-23:59", "+24:00", "+0200", "+02", "", "+02:60"]
        var common = 0
        for _ in 0..<20_000 {
            let year = next(3) == 0 ? 1000 + next(9000) : years[next(years.count)]
            let text = String(format: "%04d", year) + "-" + two(next(14)) + "-" + two(next(33)) + (next(40) == 0 ? "t" : "T")
                + two(next(26)) + ":" + two(next(62)) + ":" + two(next(62)) + fractions[next(fractions.count)] + zones[next(zones.count)]
            let reference = Self.formatterAccepts(text)
            if FieldType.isCommonTimestamp(text) {
                common += 1
                #expect(reference, "the byte check accepted \(text), which the formatter refuses")
            }
            // The formatter's answer, less what it rolls over into another time.
            #expect((FieldType.timestamp.coerce(.string(text)) != nil) == (reference && CommonTimestamp.fieldsInRange(text)), "\(text)")
        }
        #expect(common > 1_000, "the byte check took \(common) of the strings")
    }

    @Test("times the formatter rolls over into another (November 31, hour 24, offset +25:00) are refused: a dialogue of November 31 was counted in December's KPIs, one at +25:00 in none")
    func rolledOverTimes() {
        for s in ["2026-11-31T10:00:00Z", "2026-11-20T10:00:00+25:00", "2026-02-30T00:00:00Z", "2026-11-20T24:00:00Z", "2026-11-20T10:00:00.5+15:00",
                  "2026-11-20T10:00:00+0160"] {
            #expect(!CommonTimestamp.fieldsInRange(s), "\(s)")
            #expect(FieldType.timestamp.coerce(.string(s)) == nil, "\(s)")
        }
        for s in ["2026-11-20T10:00:00+14:00", "2026-11-20T10:00:00.123456Z", "2026-11-20T10:00:00+0200", "not a time"] {
            #expect(CommonTimestamp.fieldsInRange(s), "\(s)")
        }
        #expect(FieldType.timestamp.coerce(.string("2026-11-20T10:00:00.123456Z")) != nil)
    }
}

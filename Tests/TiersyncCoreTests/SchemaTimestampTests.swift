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
    static func formatterAccepts(_ s: String) -> Bool { formatterDate(s) != nil }

    static func formatterDate(_ s: String) -> Date? {
        let f = ISO8601DateFormatter()
        if let date = f.date(from: s) { return date }
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.date(from: s)
    }

    /// The formatter's time lies in the years 1970–9999 (UTC).
    static func inSchemaRange(_ s: String) -> Bool {
        guard let seconds = formatterDate(s)?.timeIntervalSince1970 else { return false }
        return seconds >= 0 && seconds < 253_402_300_800
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
            // The formatter's answer, less what it rolls over into another time, times
            // outside 1970–9999, and what is not an internet date-time and nothing else.
            #expect((FieldType.timestamp.coerce(.string(text)) != nil)
                    == (reference && CommonTimestamp.fieldsInRange(text) && Self.inSchemaRange(text) && CommonTimestamp.hasInternetDateTimeShape(text)),
                    "\(text)")
        }
        #expect(common > 1_000, "the byte check took \(common) of the strings")
    }

    @Test("""
        a timestamp is an internet date-time and nothing else: Foundation's formatter on Linux reads the time and ignores what \
        follows it, so "2026-12-03T10:00:00Zjunk" was a valid timestamp field (found through rules run --now, helper 85)
        """)
    func nothingAfterTheTime() {
        for s in ["2026-12-03T10:00:00Zjunk", "2026-12-03T10:00:00.5Zjunk", "2026-12-03T10:00:00+01:00x", "2026-12-03T10:00:00+0100 ",
                  "2026-12-03T10:00:00.Z", "2026-12-03T10:00:00", "2026-12-03T10:00:00+01", " 2026-12-03T10:00:00Z"] {
            #expect(!CommonTimestamp.hasInternetDateTimeShape(s), "\(s)")
            #expect(FieldType.timestamp.coerce(.string(s)) == nil, "\(s)")
        }
        for s in ["2026-12-03T10:00:00Z", "2026-12-03T10:00:00.5Z", "2026-12-03t10:00:00z", "2026-12-03T10:00:00+01:00",
                  "2026-12-03T10:00:00-0530", "2026-12-03T10:00:00.123456789+14:00"] {
            #expect(CommonTimestamp.hasInternetDateTimeShape(s), "\(s)")
        }
        #expect(FieldType.timestamp.coerce(.string("2026-12-03T10:00:00.5Z")) != nil)
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

    @Test("""
        a timestamp field holds times from 1970 to the end of 9999 only: a dialogue dated year 1 (which the formatter reads) \
        made every KPI snapshot of its node unwritable, and one before 1970 got an SLA due counted from now
        """)
    func yearsOutsideTheRange() {
        for s in ["0001-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "1000-01-01T00:00:00Z", "10000-01-01T00:00:00Z", "99999-12-07T09:00:00Z",
                  "9999-12-31T23:00:00-02:00", "1970-01-01T00:30:00+01:00", "0500-06-01T00:00:00.250Z"] {
            #expect(FieldType.timestamp.coerce(.string(s)) == nil, "\(s)")
        }
        for s in ["1970-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59+01:00", "1970-01-01T01:00:00+01:00"] {
            #expect(FieldType.timestamp.coerce(.string(s)) != nil, "\(s)")
        }
        let change = Change(origin: "d1", originSeq: 1, hlc: HLCTimestamp(wallMillis: 1_000, counter: 0), table: "interactions", recordID: "x6",
                            op: .upsert, fields: ["created_at": "0001-01-01T00:00:00Z"])
        guard case .failure(let refusal) = DomainSchema.schema.validate(change) else {
            Issue.record("a dialogue of year 1 was accepted")
            return
        }
        #expect(refusal.code == .wrongType && refusal.message.contains("interactions.created_at") && refusal.message.contains("1970–9999"), "\(refusal)")
    }

    @Test("priority holds 1…5 (the rules' range): 0 and 9 are refused, naming the range")
    func priorityRange() {
        func change(_ table: String, _ value: FieldValue) -> Change {
            Change(origin: "d1", originSeq: 1, hlc: HLCTimestamp(wallMillis: 1_000, counter: 0), table: table, recordID: "r-1", op: .upsert,
                   fields: ["priority": value])
        }
        for table in ["interactions", "tasks"] {
            for bad: FieldValue in [.int(0), .int(9), .int(-1), .int(.max)] {
                guard case .failure(let refusal) = DomainSchema.schema.validate(change(table, bad)) else {
                    Issue.record("\(table).priority \(bad) was accepted")
                    continue
                }
                #expect(refusal.code == .wrongType && refusal.message.contains("integer from 1 to 5"), "\(refusal)")
            }
            for good: FieldValue in [.int(1), .int(5), .null] {
                guard case .success = DomainSchema.schema.validate(change(table, good)) else {
                    Issue.record("\(table).priority \(good) was refused")
                    continue
                }
            }
        }
    }
}

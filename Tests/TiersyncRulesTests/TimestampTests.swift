import Foundation
import Testing
import TiersyncCore
@testable import TiersyncRules

/// `Timestamp` writes and reads the common forms byte by byte; Foundation's ISO 8601 format
/// styles, which it used before, are the reference.
@Suite("Timestamp")
struct TimestampTests {
    static func foundationParse(_ text: String) -> UInt64? {
        let date = (try? Date(text, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true)))
            ?? (try? Date(text, strategy: Date.ISO8601FormatStyle()))
        guard let date, date.timeIntervalSince1970 >= 0 else { return nil }
        return UInt64((date.timeIntervalSince1970 * 1000).rounded())
    }

    static func foundationFormat(_ millis: UInt64) -> String {
        let date = Date(timeIntervalSince1970: Double(millis) / 1000)
        return millis % 1000 == 0 ? date.formatted(Date.ISO8601FormatStyle())
            : date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }

    struct Numbers {
        var state: UInt64 = 0x9e37_79b9_7f4a_7c15
        mutating func next(_ n: UInt64) -> UInt64 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return (state >> 11) % n
        }
    }

    @Test("""
    format writes what Foundation wrote, to the millisecond where Foundation lost one (it wrote 0.999 s as .998): \
    whole seconds, milliseconds, leap days, 1970 to 9999 (20,000 times); it reads back exactly
    """)
    func formatAgrees() {
        var numbers = Numbers()
        let edges: [UInt64] = [0, 999, 1000, 951_782_400_000, 951_868_799_999, 1_764_000_000_000, 253_402_300_799_999]
        for millis in edges + (0..<20_000).map({ i in
            let t = numbers.next(253_402_300_800_000)
            return i % 3 == 0 ? t / 1000 * 1000 : t
        }) {
            let text = Timestamp.format(millis), foundation = Self.foundationFormat(millis)
            #expect(text == foundation || Self.foundationParse(foundation) == millis - 1, "\(millis): \(text), Foundation \(foundation)")
            #expect(Timestamp.parse(text) == millis && Self.foundationParse(text) == millis, "\(text) reads back as \(millis)")
            if millis % 1000 == 0 { #expect(text == foundation) }
        }
    }

    @Test("parse reads what Foundation read, and leaves other forms to it (20,000 strings)")
    func parseAgrees() {
        var numbers = Numbers()
        var common = 0
        func two(_ v: UInt64) -> String { v < 10 ? "0\(v)" : "\(v)" }
        let fractions = ["", ".250", ".001", ".999", ".5", ".12345"]
        let zones = ["Z", "+00:00", "+02:00", "-05:30", "+14:59", "-03:00", "z", "+0200"]
        for _ in 0..<20_000 {
            let year = [1969, 1970, 2000, 2024, 2026, 2100, 9999][Int(numbers.next(7))]
            let text = "\(year)-\(two(1 + numbers.next(12)))-\(two(1 + numbers.next(31)))T\(two(numbers.next(25))):\(two(numbers.next(61))):"
                + two(numbers.next(61)) + fractions[Int(numbers.next(UInt64(fractions.count)))] + zones[Int(numbers.next(UInt64(zones.count)))]
            if text.utf8.withContiguousStorageIfAvailable(Timestamp.commonMillis) ?? nil != nil { common += 1 }
            // Foundation's reading, less the times it rolls over into another (November 31).
            #expect(Timestamp.parse(text) == (CommonTimestamp.fieldsInRange(text) ? Self.foundationParse(text) : nil), "\(text)")
        }
        #expect(common > 5_000, "the byte path read \(common)")
        for millis: UInt64 in [0, 1_764_000_000_250, 1_764_000_000_000] { #expect(Timestamp.parse(Timestamp.format(millis)) == millis) }
    }
}

/// A duration as governance authors write it: a positive integer and a unit
/// (`20s`, `15m`, `4h`, `2d`, `1w`). Compiled releases hold the canonical spelling (the
/// largest unit that divides it exactly), so `120m` and `2h` are the same SLA.
public struct GovernanceDuration: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let seconds: Int

    static let units: [(suffix: Character, seconds: Int)] = [("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)]

    public init(seconds: Int) { self.seconds = seconds }

    /// The longest duration a release may name (``GovernanceCompiler`` refuses longer ones):
    /// 3660 days (ten years and then some). An SLA of 9999999w put a dialogue's `sla_due` in
    /// year 193680, which no `timestamp` holds. Parsing takes longer ones: releases signed
    /// before the bound keep working (allocation holds `sla_due` within the timestamps' range).
    public static let maxSeconds = 3_660 * 86_400

    /// Parses `"<n><unit>"`; nil for anything else (no spaces, no fractions, no zero-padding tricks).
    public init?(_ text: String) {
        guard let unit = text.last, let factor = Self.units.first(where: { $0.suffix == unit })?.seconds else { return nil }
        let digits = text.dropLast()
        guard !digits.isEmpty, digits.count <= 7, digits.allSatisfy(\.isASCII), let n = Int(digits), n >= 0 else { return nil }
        seconds = n * factor
    }

    public var description: String {
        guard seconds > 0 else { return "0s" }
        for unit in Self.units where seconds % unit.seconds == 0 {
            return "\(seconds / unit.seconds)\(unit.suffix)"
        }
        return "\(seconds)s"
    }

    public static func < (l: Self, r: Self) -> Bool { l.seconds < r.seconds }
}

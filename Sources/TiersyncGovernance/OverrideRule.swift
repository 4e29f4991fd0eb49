/// How far a country overlay may move one field away from HQ's value.
public enum OverrideBound: Sendable, Hashable, Codable, CustomStringConvertible {
    /// A duration may be shortened, never lengthened (SLAs).
    case shorten
    /// Any non-empty text of at most 100 characters (queue names).
    case rename
    /// A target `{at_least: n}` may only rise, `{at_most: n}` only fall.
    case stricter
    /// A number within `[min, max]`.
    case range(min: Double, max: Double)

    init?(_ value: ConfigValue) {
        switch value {
        case .string("shorten"): self = .shorten
        case .string("rename"): self = .rename
        case .string("stricter"): self = .stricter
        case .object(let o):
            guard let lo = o["min"]?.numberValue, let hi = o["max"]?.numberValue else { return nil }
            self = .range(min: lo, max: hi)
        default: return nil
        }
    }

    public var description: String {
        switch self {
        case .shorten: "shorten only"
        case .rename: "rename only"
        case .stricter: "stricter only"
        case .range(let lo, let hi): "between \(ConfigValue.number(lo)) and \(ConfigValue.number(hi))"
        }
    }

    /// Why HQ's own value cannot carry this bound (nil when it can).
    func fits(base: ConfigValue) -> String? {
        switch self {
        case .shorten:
            return base.stringValue.flatMap(GovernanceDuration.init) == nil ? "shorten applies to durations, this is \(base.kindName)" : nil
        case .rename:
            return base.stringValue == nil ? "rename applies to text, this is \(base.kindName)" : nil
        case .stricter:
            guard let o = base.objectValue, o.count == 1, o["at_least"] ?? o["at_most"] != nil else {
                return "stricter applies to targets ({at_least: n} or {at_most: n})"
            }
            return nil
        case .range(let lo, let hi):
            guard let d = base.numberValue else { return "a range applies to numbers, this is \(base.kindName)" }
            return (lo...hi).contains(d) ? nil : "HQ's own value \(base) lies outside \(self)"
        }
    }

    /// Checks `proposed` against HQ's `base`; returns the normalised value, or why it is
    /// refused (the message names the limit).
    func admit(_ proposed: ConfigValue, base: ConfigValue) -> Result<ConfigValue, OverlayRefusal.Reason> {
        switch self {
        case .shorten:
            guard let b = base.stringValue.flatMap(GovernanceDuration.init) else { return .failure(.notApplicable) }
            guard let p = proposed.stringValue.flatMap(GovernanceDuration.init) else {
                return .failure(.wrongType("a duration like 2h"))
            }
            guard p.seconds > 0 || b.seconds == 0 else { return .failure(.outOfBounds("0s would fall due the moment a dialogue is created")) }
            return p <= b ? .success(.string(p.description)) : .failure(.outOfBounds("\(p) is longer than HQ's \(b)"))
        case .rename:
            // Counted in bytes too: 100 "characters" of combining marks can be megabytes, and
            // a name of blanks or line breaks names nothing.
            guard case .string(let s) = proposed, !s.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, s.count <= 100, s.utf8.count <= 400,
                  // Line and paragraph separators break a line too; bidirectional controls
                  // (U+202E) make a queue's name read backwards on every dealer's screen.
                  !s.unicodeScalars.contains(where: {
                      [.control, .lineSeparator, .paragraphSeparator].contains($0.properties.generalCategory) || $0.properties.isBidiControl
                  }) else {
                return .failure(.wrongType("text of 1 to 100 characters, without line breaks or control characters"))
            }
            return .success(proposed)
        case .stricter:
            guard let b = base.objectValue, let (key, bv) = b.first.map({ ($0.key, $0.value.numberValue ?? 0) }) else {
                return .failure(.notApplicable)
            }
            guard let p = proposed.objectValue, p.count == 1, let pv = p[key]?.numberValue else {
                return .failure(.wrongType("{\(key): <a finite number>} (the same comparison as HQ's)"))
            }
            let stricter = key == "at_least" ? pv >= bv : pv <= bv
            return stricter ? .success(proposed)
                : .failure(.outOfBounds("\(key) \(ConfigValue.number(pv)) is looser than HQ's \(key) \(ConfigValue.number(bv))"))
        case .range(let lo, let hi):
            guard let p = proposed.numberValue else { return .failure(.wrongType("a number")) }
            if base.numberValue.map({ $0 == $0.rounded() }) == true, p != p.rounded() {
                return .failure(.wrongType("a whole number"))
            }
            return (lo...hi).contains(p) ? .success(proposed) : .failure(.outOfBounds("\(proposed) is outside \(ConfigValue.number(lo))…\(ConfigValue.number(hi))"))
        }
    }
}

/// One field pattern HQ lets countries override, e.g. `allocation.*.then.sla` (shorten).
public struct OverrideRule: Sendable, Hashable, Codable {
    /// Dotted path into the compiled config; `*` stands for any one key (an item's id).
    public let path: String
    public let bound: OverrideBound

    public init(path: String, bound: OverrideBound) {
        self.path = path
        self.bound = bound
    }

    public func matches(_ concrete: String) -> Bool {
        let p = path.split(separator: ".", omittingEmptySubsequences: false)
        let c = concrete.split(separator: ".", omittingEmptySubsequences: false)
        return p.count == c.count && zip(p, c).allSatisfy { $0 == "*" || $0 == $1 }
    }

    /// The concrete paths of `config` this pattern names.
    public func matchingPaths(in config: ConfigValue) -> [String] {
        var results: [String] = []
        func walk(_ value: ConfigValue, _ rest: ArraySlice<Substring>, _ prefix: String) {
            guard let key = rest.first else { results.append(prefix); return }
            guard let o = value.objectValue else { return }
            let keys = key == "*" ? o.keys.sorted() : (o[String(key)] != nil ? [String(key)] : [])
            for k in keys { walk(o[k]!, rest.dropFirst(), prefix.isEmpty ? k : prefix + "." + k) }
        }
        walk(config, path.split(separator: ".", omittingEmptySubsequences: false)[...], "")
        return results
    }
}

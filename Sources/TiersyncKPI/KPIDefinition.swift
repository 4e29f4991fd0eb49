import Foundation

/// The formula kinds a governance release may use (docs/GOVERNANCE.md, section 1). Each
/// is fixed: a release chooses the kind and its parameters, never the arithmetic.
public enum KPIKind: String, Sendable, Codable, CaseIterable, Hashable {
    case serviceLevel = "service_level"
    case averageSpeedOfAnswer = "average_speed_of_answer"
    case abandonmentRate = "abandonment_rate"
    case averageHandleTime = "average_handle_time"
    case firstContactResolution = "first_contact_resolution"
    case slaCompliance = "sla_compliance"
    case leadConversion = "lead_conversion"

    /// The unit its values are in: a share in percent, or a mean in seconds.
    public var unit: KPIUnit {
        switch self {
        case .averageSpeedOfAnswer, .averageHandleTime: .seconds
        default: .percent
        }
    }

    /// True for the one kind measured over leads; every other kind is measured over interactions.
    public var measuresLeads: Bool { self == .leadConversion }
}

/// What a KPI value is expressed in. The numerator of a `percent` KPI is a count (value =
/// 100 × numerator / denominator); that of a `seconds` KPI is a total in milliseconds
/// (value = numerator / denominator / 1000), so sums stay exact integers.
public enum KPIUnit: String, Sendable, Codable, Hashable {
    case percent
    case seconds

    /// The value of a numerator/denominator pair, nil when nothing was counted.
    public func value(numerator: Double, denominator: Double) -> Double? {
        guard denominator > 0 else { return nil }
        switch self {
        case .percent: return 100 * numerator / denominator
        case .seconds: return numerator / denominator / 1000
        }
    }
}

/// A KPI's formula as a release defines it: the kind and its parameters. Only this decides
/// what is counted; names and targets do not (see ``KPICatalog/formulaBasis``).
public struct KPIFormula: Sendable, Hashable, Codable {
    public var kind: KPIKind
    /// Only dialogues (for `lead_conversion`, leads: `source_channel`) of this channel count.
    public var channel: String?
    /// `service_level`: answered within this many seconds of creation.
    public var answeredWithinSeconds: Int?
    /// `first_contact_resolution`: no further dialogue within this many seconds of the
    /// resolution; `lead_conversion`: won within this many seconds of creation.
    public var withinSeconds: Int?

    public init(kind: KPIKind, channel: String? = nil, answeredWithinSeconds: Int? = nil, withinSeconds: Int? = nil) {
        self.kind = kind
        self.channel = channel
        self.answeredWithinSeconds = answeredWithinSeconds
        self.withinSeconds = withinSeconds
    }
}

/// A KPI's target: `at_least` or `at_most` a number, in the KPI's unit.
public struct KPITarget: Sendable, Hashable, Codable, CustomStringConvertible {
    public enum Comparison: String, Sendable, Hashable, Codable {
        case atLeast = "at_least"
        case atMost = "at_most"
    }

    public var comparison: Comparison
    public var value: Double

    public init(_ comparison: Comparison, _ value: Double) {
        self.comparison = comparison
        self.value = value
    }

    /// True when `value` meets the target (equal meets both kinds).
    public func isMet(by value: Double) -> Bool {
        switch comparison {
        case .atLeast: value >= self.value
        case .atMost: value <= self.value
        }
    }

    /// `≥ 80` / `≤ 30`.
    public var description: String {
        (comparison == .atLeast ? "≥ " : "≤ ") + KPIFormat.number(value)
    }
}

/// One KPI of a release (⊕ overlay): what it is called, how it is computed, its target and
/// the levels it is measured at.
public struct KPIDefinition: Sendable, Hashable, Codable {
    public var id: String
    public var name: String
    public var formula: KPIFormula
    public var target: KPITarget
    public var unit: KPIUnit
    /// The governance levels it is measured at; nil: all.
    public var levels: [String]?

    public init(id: String, name: String, formula: KPIFormula, target: KPITarget, unit: KPIUnit? = nil, levels: [String]? = nil) {
        self.id = id
        self.name = name
        self.formula = formula
        self.target = target
        self.unit = unit ?? formula.kind.unit
        self.levels = levels
    }

    /// True when the KPI is measured at `level` (a node's level in the tenant's governance).
    public func isMeasured(atLevel level: String?) -> Bool {
        guard let levels else { return true }
        return level.map(levels.contains) ?? false
    }
}

/// The KPIs of one effective configuration (release ⊕ overlay), in the release's order,
/// and the tenant's governance levels (top-down), which say at what level a node is.
public struct KPICatalog: Sendable, Hashable {
    public var definitions: [KPIDefinition]
    public var levels: [String]

    public init(definitions: [KPIDefinition], levels: [String] = []) {
        self.definitions = definitions
        self.levels = levels
    }

    public static let empty = KPICatalog(definitions: [])

    public func definition(_ id: String) -> KPIDefinition? { definitions.first { $0.id == id } }

    /// The level of a node `depth` levels down (1: the root), if the governance names one.
    public func level(atDepth depth: Int) -> String? {
        depth >= 1 && depth <= levels.count ? levels[depth - 1] : nil
    }

    /// What the accumulators depend on: each KPI's id and formula, canonically written. Two
    /// configurations with the same basis count the same things (targets, names and levels
    /// only change how values are judged and shown), so only a change of basis rebuilds them.
    public var formulaBasis: String {
        definitions.sorted { $0.id < $1.id }.map { d in
            let f = d.formula
            return [d.id, f.kind.rawValue, f.channel ?? "", f.answeredWithinSeconds.map(String.init) ?? "", f.withinSeconds.map(String.init) ?? ""]
                .joined(separator: ",")
        }.joined(separator: ";")
    }

    /// Everything of the catalog, canonically written: it changes with any target, name or level.
    public var fullBasis: String {
        formulaBasis + "|" + levels.joined(separator: ",") + "|" + definitions.sorted { $0.id < $1.id }.map { d in
            "\(d.id)=\(d.name)\u{1}\(d.target.comparison.rawValue)\(d.target.value)\u{1}\(d.unit.rawValue)\u{1}\(d.levels?.joined(separator: ",") ?? "*")"
        }.joined(separator: ";")
    }

    /// A catalog holding only the formulas of a basis (``formulaBasis``), for counting: the
    /// store keeps the basis it counts with and rebuilds the catalog from it in any process.
    public init?(formulaBasis: String) {
        var definitions: [KPIDefinition] = []
        for entry in formulaBasis.split(separator: ";", omittingEmptySubsequences: true) {
            let parts = entry.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 5, let kind = KPIKind(rawValue: parts[1]) else { return nil }
            let formula = KPIFormula(kind: kind, channel: parts[2].isEmpty ? nil : parts[2],
                                     answeredWithinSeconds: Int(parts[3]), withinSeconds: Int(parts[4]))
            definitions.append(KPIDefinition(id: parts[0], name: parts[0], formula: formula, target: KPITarget(.atLeast, 0)))
        }
        self.init(definitions: definitions)
    }

    public enum ParseError: Error, Sendable, CustomStringConvertible {
        case notJSON
        case invalid(String)
        public var description: String {
            switch self {
            case .notJSON: "the effective configuration is not a JSON object"
            case .invalid(let message): message
            }
        }
    }

    /// The KPIs of a compiled effective configuration as JSON (what a release carries and
    /// a node keeps as its effective config): `kpis.<id>.{name, formula, target, unit,
    /// levels, order}` and `governance.levels`. A configuration without KPIs has none.
    public init(effectiveConfigJSON json: String) throws {
        guard let root = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any] else { throw ParseError.notJSON }
        let levels = ((root["governance"] as? [String: Any])?["levels"] as? [Any])?.compactMap { $0 as? String } ?? []
        var items: [(order: Double, definition: KPIDefinition)] = []
        for (id, value) in (root["kpis"] as? [String: Any]) ?? [:] {
            guard let kpi = value as? [String: Any], let formula = kpi["formula"] as? [String: Any],
                  let kindName = formula["kind"] as? String, let kind = KPIKind(rawValue: kindName) else {
                throw ParseError.invalid("kpis.\(id): no formula of a known kind")
            }
            func duration(_ key: String) throws -> Int? {
                guard let raw = formula[key] else { return nil }
                guard let text = raw as? String, let seconds = KPIFormat.durationSeconds(text) else {
                    throw ParseError.invalid("kpis.\(id).formula.\(key): not a duration")
                }
                return seconds
            }
            let target = kpi["target"] as? [String: Any] ?? [:]
            let comparison: KPITarget
            if let n = (target["at_least"] as? NSNumber)?.doubleValue { comparison = KPITarget(.atLeast, n) }
            else if let n = (target["at_most"] as? NSNumber)?.doubleValue { comparison = KPITarget(.atMost, n) }
            else { throw ParseError.invalid("kpis.\(id).target: neither at_least nor at_most") }
            let definition = KPIDefinition(
                id: id, name: kpi["name"] as? String ?? id,
                formula: KPIFormula(kind: kind, channel: formula["channel"] as? String,
                                    answeredWithinSeconds: try duration("answered_within"), withinSeconds: try duration("within")),
                target: comparison, unit: (kpi["unit"] as? String).flatMap(KPIUnit.init(rawValue:)),
                levels: (kpi["levels"] as? [Any])?.compactMap { $0 as? String })
            items.append(((kpi["order"] as? NSNumber)?.doubleValue ?? 0, definition))
        }
        self.init(definitions: items.sorted { ($0.order, $0.definition.id) < ($1.order, $1.definition.id) }.map(\.definition), levels: levels)
    }
}

/// Small formatting and parsing helpers shared by the KPI table's producers.
public enum KPIFormat {
    /// `20s`, `15m`, `4h`, `2d`, `1w` (the governance duration syntax) in seconds.
    public static func durationSeconds(_ text: String) -> Int? {
        let units: [Character: Int] = ["s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800]
        guard let unit = text.last, let factor = units[unit], let n = Int(text.dropLast()), n >= 0 else { return nil }
        let (seconds, overflow) = n.multipliedReportingOverflow(by: factor)
        return overflow ? nil : seconds
    }

    /// A number as a table shows it: whole numbers without decimals, others with one or two.
    public static func number(_ value: Double) -> String {
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        let text = String(format: "%.2f", value)
        return text.hasSuffix("0") ? String(text.dropLast()) : text
    }
}

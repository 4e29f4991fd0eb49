import Foundation

/// One node's numerator and denominator of one KPI for one period, with the target that
/// node runs (its release ⊕ its country's overlay): a KPI snapshot record as it synced up,
/// or the viewing node's own accumulators.
public struct KPIObservation: Sendable, Hashable {
    public var kpi: String
    public var node: String
    /// First day of the period (days since 1970-01-01).
    public var periodStart: Int64
    public var numerator: Int64
    public var denominator: Int64
    public var target: KPITarget?
    /// The unit the node reported (its snapshot's): what a KPI the viewer's release does
    /// not define (a trial release's, below) is read in.
    public var unit: KPIUnit?

    public init(kpi: String, node: String, periodStart: Int64, numerator: Int64, denominator: Int64, target: KPITarget?,
                unit: KPIUnit? = nil) {
        self.kpi = kpi
        self.node = node
        self.periodStart = periodStart
        self.numerator = numerator
        self.denominator = denominator
        self.target = target
        self.unit = unit
    }

    /// Daily accumulators summed into periods of `kind`, per (KPI, node, period).
    public static func periods(of totals: [KPITotal], kind: KPIPeriodKind, target: (String) -> KPITarget?) -> [KPIObservation] {
        var sums: [PeriodKey: (Int64, Int64)] = [:]
        for t in totals {
            let key = PeriodKey(kpi: t.kpi, node: t.node, start: kind.start(ofDay: t.day))
            let s = sums[key] ?? (0, 0)
            sums[key] = (s.0.addingSaturated(t.numerator), s.1.addingSaturated(t.denominator))
        }
        return sums.map { key, s in
            KPIObservation(kpi: key.kpi, node: key.node, periodStart: key.start, numerator: s.0, denominator: s.1, target: target(key.kpi))
        }.sorted { ($0.kpi, $0.node, $0.periodStart) < ($1.kpi, $1.node, $1.periodStart) }
    }

    struct PeriodKey: Hashable {
        var kpi: String
        var node: String
        var start: Int64
    }
}

/// One line of the KPI table: a node's own value, or its subtree's (itself and every node
/// below it), for one KPI and period, against the target that node runs.
public struct KPIRow: Sendable, Hashable, Codable {
    public enum Scope: String, Sendable, Hashable, Codable {
        /// The dialogues and leads the node handles itself.
        case node
        /// The node and every node below it: numerators and denominators added.
        case subtree
    }

    public var kpi: String
    public var name: String
    public var unit: KPIUnit
    public var period: KPIPeriodKind
    /// `YYYY-MM-DD`, the period's first day.
    public var periodStart: String
    public var node: String
    public var scope: Scope
    /// The node's governance level (`hq`, `country`, `dealer`, `agent`, …), if known.
    public var level: String?
    /// A count, or milliseconds for a `seconds` KPI.
    public var numerator: Int64
    public var denominator: Int64
    /// `100 × n / d` (percent) or `n / d / 1000` (seconds); absent when `d` is 0.
    public var value: Double?
    /// The node's target; absent where the KPI is not measured at the node's level
    /// (its `levels`) or no node of the subtree reported one.
    public var target: KPITarget?
    public var met: Bool?
    /// How many nodes' values the row adds up.
    public var nodes: Int

    public init(kpi: String, name: String, unit: KPIUnit, period: KPIPeriodKind, periodStart: String, node: String, scope: Scope,
                level: String?, numerator: Int64, denominator: Int64, target: KPITarget?, nodes: Int) {
        self.kpi = kpi
        self.name = name
        self.unit = unit
        self.period = period
        self.periodStart = periodStart
        self.node = node
        self.scope = scope
        self.level = level
        self.numerator = numerator
        self.denominator = denominator
        self.value = unit.value(numerator: Double(numerator), denominator: Double(denominator))
        self.target = target
        self.met = value.flatMap { v in target.map { $0.isMet(by: v) } }
        self.nodes = nodes
    }
}

/// What `GET /v1/kpis` answers and `tiersync kpi --json` prints.
public struct KPIResponse: Sendable, Hashable, Codable {
    /// The node whose view this is (the caller, at a hub).
    public var node: String
    public var period: KPIPeriodKind
    public var byNode: Bool
    public var rows: [KPIRow]

    public init(node: String, period: KPIPeriodKind, byNode: Bool, rows: [KPIRow]) {
        self.node = node
        self.period = period
        self.byNode = byNode
        self.rows = rows
    }
}

/// The KPI table of a node: its subtree's values per KPI and period, or (by node) every
/// node's own and subtree values. Roll-ups add numerators and denominators of the nodes
/// below; a percentage is never averaged.
public enum KPIReport {
    /// - Parameters:
    ///   - viewer: the node whose subtree is shown.
    ///   - catalog: the store's KPIs (names, units, levels).
    ///   - catalogIsViewers: the catalog is the viewer's own effective config, so its targets
    ///     are the viewer's. False where a hub answers a country: the country's own target
    ///     (its overlay's) is the one it reported with its values.
    ///   - observations: per (KPI, node, period); only nodes of the viewer's subtree are shown.
    ///   - paths: each node's path from the root (`["hq", "de", "de-1"]`); a node missing
    ///     here is taken to sit directly below the viewer when `catalogIsViewers` (the viewer
    ///     is the store's own node), and to be out of view otherwise.
    public static func rows(viewer: String, catalog: KPICatalog, catalogIsViewers: Bool = true, period: KPIPeriodKind,
                            observations: [KPIObservation], paths: [String: [String]], byNode: Bool) -> [KPIRow] {
        func path(_ node: String) -> [String] {
            var p = paths[node].flatMap { $0.last == node ? $0 : nil } ?? [node]
            // A path known only from the node's parent on (its agent never learned the whole
            // path) is completed with the path of its first node, as far as known.
            var steps = 0
            while let first = p.first, let above = paths[first], above.count > 1, above.last == first, steps < 64 {
                p = above + p.dropFirst()
                steps += 1
            }
            // A path from the root that misses the viewer: a node outside its subtree.
            if p.contains(viewer) || paths[p[0]] == [p[0]] { return p }
            // A path not known up to the root: below the viewer only when the viewer is the
            // store's own node (a store holds only its subtree's values). Another viewer (a
            // dealer asking its country) sees only what its path is known to hold: de answered
            // de-1 with de-2's values, whose path de knew only from de on (helper 92).
            if node == viewer { return [viewer] }
            return catalogIsViewers ? (paths[viewer] ?? [viewer]) + p : p
        }
        // Other nodes' values are their writes (KPI snapshots): a pair no count can give —
        // a negative count, or more of a percentage's events than it counted — is left out
        // rather than shown as 1.8e20 % or summed into a subtree.
        // A KPI the catalog does not define (a node on a trial release) is read in the unit
        // its nodes reported.
        // (The first node in id order that reported one, whatever order the store read them
        // in: one pass, no sort of every observation.)
        var reported: [String: (node: String, unit: KPIUnit)] = [:]
        for o in observations where catalog.definition(o.kpi) == nil {
            guard let unit = o.unit else { continue }
            if let first = reported[o.kpi], first.node <= o.node { continue }
            reported[o.kpi] = (o.node, unit)
        }
        let reportedUnits = reported.mapValues(\.unit)
        func unit(_ kpi: String) -> KPIUnit { catalog.definition(kpi)?.unit ?? reportedUnits[kpi] ?? .percent }
        let inView = observations.filter { o in
            // 0/0 measures nothing: what a node's snapshot says once the dialogues it counted
            // were deleted or moved away. Shown, it read as "no data" beside the node and
            // kept a period nobody has data for as the console's latest (helper 107).
            guard o.denominator > 0 || o.numerator != 0 else { return false }
            guard o.denominator >= 0, path(o.node).contains(viewer) else { return false }
            // A node's negative total of seconds is no measurement (its writer's, not ours).
            return unit(o.kpi) == .seconds ? o.numerator >= 0 : (0...o.denominator).contains(o.numerator)
        }
        let viewerDepth = path(viewer).count
        // Rows are keyed by (KPI, period, node, scope).
        struct Key: Hashable { var kpi: String; var start: Int64; var node: String; var scope: KPIRow.Scope }
        struct Sum { var n: Int64 = 0; var d: Int64 = 0; var nodes: Set<String> = []; var targets: [String: KPITarget] = [:] }
        var sums: [Key: Sum] = [:]
        for o in inView {
            let p = path(o.node)
            guard let at = p.firstIndex(of: viewer) else { continue }
            var owners: [(String, KPIRow.Scope)] = []
            if byNode {
                owners.append((o.node, .node))
                for ancestor in p[at...] where ancestor != o.node { owners.append((ancestor, .subtree)) }
                // A leaf's subtree is itself: only nodes with something below them get a subtree row.
            } else {
                owners.append((viewer, .subtree))
            }
            for (owner, scope) in owners {
                var s = sums[Key(kpi: o.kpi, start: o.periodStart, node: owner, scope: scope)] ?? Sum()
                s.n = s.n.addingSaturated(o.numerator)
                s.d = s.d.addingSaturated(o.denominator)
                s.nodes.insert(o.node)
                if let t = o.target { s.targets[o.node] = t }
                sums[Key(kpi: o.kpi, start: o.periodStart, node: owner, scope: scope)] = s
            }
        }
        if byNode {
            // A node with something below it: its subtree row includes its own values too —
            // also in a period where only the node itself has values (a country whose dealers
            // were quiet that day still has a subtree row beside the other countries').
            // "Below it": a level above the tenant's last (a country, whether or not its
            // dealers ever reported; a store's KPI paths name only the nodes that did), or a
            // node the known paths put something below.
            var inner: Set<String> = []
            for node in paths.keys { inner.formUnion(path(node).dropLast()) }
            func hasNodesBelow(_ node: String) -> Bool { inner.contains(node) || path(node).count < catalog.levels.count }
            for (key, own) in sums where key.scope == .node {
                let subtree = Key(kpi: key.kpi, start: key.start, node: key.node, scope: .subtree)
                guard var s = sums[subtree] ?? (hasNodesBelow(key.node) ? Sum() : nil) else { continue }
                s.n = s.n.addingSaturated(own.n)
                s.d = s.d.addingSaturated(own.d)
                s.nodes.formUnion(own.nodes)
                s.targets.merge(own.targets) { a, _ in a }
                sums[subtree] = s
            }
        }
        let order = Dictionary(catalog.definitions.enumerated().map { ($1.id, $0) }, uniquingKeysWith: { a, _ in a })
        var rows: [(sort: [String], row: KPIRow)] = []
        for (key, s) in sums {
            let definition = catalog.definition(key.kpi)
            let depth = path(key.node).count
            let level = catalog.level(atDepth: depth)
            let measured = definition?.isMeasured(atLevel: level) ?? true
            // The viewer's own target is its catalog's; another node's is the one it reported
            // with its values, or, for a subtree without values of the node itself, the one
            // its nodes report (they run the same release ⊕ overlay).
            let own = key.node == viewer && catalogIsViewers ? definition?.target : s.targets[key.node]
            let target = measured ? (own ?? Self.commonTarget(s.targets.values)) : nil
            let row = KPIRow(kpi: key.kpi, name: definition?.name ?? key.kpi, unit: unit(key.kpi), period: period,
                             periodStart: KPIDay.label(key.start), node: key.node, scope: key.scope, level: level,
                             numerator: s.n, denominator: s.d, target: target, nodes: s.nodes.count)
            let kpiOrder = String(format: "%06d", order[key.kpi] ?? 999_999) + key.kpi
            // Depth-first by path: a node's subtree row, then its own, then the nodes below it.
            let nodeOrder = path(key.node).dropFirst(viewerDepth - 1).joined(separator: "/") + (key.scope == .subtree ? "/" : "/!")
            rows.append(([KPIDay.label(key.start), kpiOrder, nodeOrder], row))
        }
        return rows.sorted { $0.sort.lexicographicallyPrecedes($1.sort) }.map(\.row)
    }

    /// The target most nodes report (ties: the strictest), nil when none does.
    static func commonTarget(_ targets: some Sequence<KPITarget>) -> KPITarget? {
        var counts: [KPITarget: Int] = [:]
        for t in targets { counts[t, default: 0] += 1 }
        return counts.max { a, b in
            if a.value != b.value { return a.value < b.value }
            return a.key.comparison == .atLeast ? a.key.value < b.key.value : a.key.value > b.key.value
        }?.key
    }

    /// The rows as a text table.
    public static func table(_ rows: [KPIRow], byNode: Bool) -> String {
        guard !rows.isEmpty else { return "no KPI values yet\n" }
        var lines: [[String]] = [["period", "kpi", "node", "level", "value", "target", "verdict", "numerator/denominator"]]
        for r in rows {
            // A subtree's row says so in both forms: "hq" alone meant the whole tenant without
            // --by and HQ's own dialogues with it (helper 107).
            let node = r.node + (r.scope == .subtree ? " (subtree)" : "")
            let value = r.value.map { format($0, r.unit, against: r.target) } ?? "-"
            let target = r.target.map { ($0.comparison == .atLeast ? "≥ " : "≤ ") + format($0.value, r.unit) } ?? "-"
            let met = r.met.map { $0 ? "met" : "MISSED" } ?? ""
            let numerator = r.unit == .seconds ? KPIFormat.number(Double(r.numerator) / 1000) + " s" : String(r.numerator)
            lines.append([r.periodStart, r.kpi, node, r.level ?? "-", value, target, met, "\(numerator)/\(r.denominator)"])
        }
        var widths = Array(repeating: 0, count: lines[0].count)
        for line in lines { for (i, cell) in line.enumerated() { widths[i] = max(widths[i], cell.count) } }
        var out = ""
        for (n, line) in lines.enumerated() {
            out += line.enumerated().map { i, cell in cell.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
                .joined(separator: "  ").replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression) + "\n"
            if n == 0 { out += widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ") + "\n" }
        }
        return out
    }

    /// `83.33 %`, `24.5 s`. With `target`, as many more decimals (up to six) as it takes
    /// for the shown value to stand on the same side of the target as the value itself:
    /// 79.9975 % against "≥ 80 %" reads 79.998 %, not 80 % beside MISSED.
    public static func format(_ value: Double, _ unit: KPIUnit, against target: KPITarget? = nil) -> String {
        let suffix = unit == .percent ? " %" : " s"
        let shown = (value * 100).rounded() / 100
        guard let target, target.isMet(by: shown) != target.isMet(by: value) else { return KPIFormat.number(shown) + suffix }
        // Past six decimals, every digit the value has.
        var text = String(value)
        for decimals in 3...6 {
            let candidate = String(format: "%.\(decimals)f", value)
            if let read = Double(candidate), target.isMet(by: read) == target.isMet(by: value) {
                text = candidate
                break
            }
        }
        while text.hasSuffix("0") { text.removeLast() }
        if text.hasSuffix(".") { text.removeLast() }
        return text + suffix
    }
}

/// One record's part of one KPI: numerator and denominator it adds to a (KPI, node, day)
/// accumulator. Negative in a delta (a record's old contribution taken back).
public struct KPIContribution: Sendable, Hashable {
    /// The KPI's position in ``KPIEvaluator/catalog``'s definitions.
    public var kpi: Int
    public var node: String
    /// Days since 1970-01-01 (UTC) of the record's `created_at`.
    public var day: Int64
    public var numerator: Int64
    public var denominator: Int64

    public init(kpi: Int, node: String, day: Int64, numerator: Int64, denominator: Int64) {
        self.kpi = kpi
        self.node = node
        self.day = day
        self.numerator = numerator
        self.denominator = denominator
    }
}

/// The KPI formulas of a catalog as functions of plain values: what each dialogue and lead
/// adds to the (KPI, node, day) accumulators, what a change of a record changes in them,
/// and a full recount (``KPITally``). No store, no clock.
///
/// Per dialogue `d` of the KPI's channel (if it names one), counted for `d`'s node on
/// `d.created_at`'s day ("inbound": any direction but `outbound`, as allocation reads it) (times in milliseconds; a `seconds` KPI's numerator is milliseconds):
///
/// | kind | denominator += 1 when | numerator += |
/// |---|---|---|
/// | `service_level` (W) | `d` inbound | 1 if `answered_at − created_at ≤ W` |
/// | `average_speed_of_answer` | `d` inbound and answered | `answered_at − created_at` (at most a year either way) |
/// | `abandonment_rate` | `d` inbound | 1 if closed with no `answered_at` |
/// | `average_handle_time` | `d` answered and resolved | `resolved_at − answered_at` (at most a year either way) |
/// | `first_contact_resolution` (W) | `d` resolved | 1 unless another dialogue of the same customer and topic was created after `d` and no later than `resolved_at + W` |
/// | `sla_compliance` | `d` has an `sla_due` | 1 if `answered_at < sla_due` |
/// | `lead_conversion` (W), per lead | not won before it was created | 1 if won and `won_at − created_at ≤ W` |
public struct KPIEvaluator: Sendable {
    public let catalog: KPICatalog
    /// Interaction KPIs a dialogue decides alone (every kind but first-contact resolution).
    private let single: [(index: Int, formula: KPIFormula)]
    /// First-contact resolution KPIs: a dialogue's outcome depends on the dialogues after it.
    private let followUp: [(index: Int, formula: KPIFormula)]
    private let lead: [(index: Int, formula: KPIFormula)]

    public init(catalog: KPICatalog) {
        self.catalog = catalog
        let indexed = catalog.definitions.enumerated().map { (index: $0.offset, formula: $0.element.formula) }
        single = indexed.filter { !$0.formula.kind.measuresLeads && $0.formula.kind != .firstContactResolution }
        followUp = indexed.filter { $0.formula.kind == .firstContactResolution }
        lead = indexed.filter { $0.formula.kind.measuresLeads }
    }

    /// The version of the counting rules above. Raised when this code counts the same
    /// records differently (2: a dialogue without a direction is inbound; a lead won before
    /// it was created counts nowhere); a node's store recounts once when it differs from
    /// the version its accumulators were counted with.
    public static let countingRules = 2

    /// True when some KPI counts interactions.
    public var measuresDialogues: Bool { !single.isEmpty || !followUp.isEmpty }
    /// True when some KPI counts leads.
    public var measuresLeads: Bool { !lead.isEmpty }
    /// True when a dialogue's contribution depends on other dialogues of its customer and topic.
    public var needsFollowUps: Bool { !followUp.isEmpty }

    // MARK: One record

    /// What `d` adds to every interaction KPI but first-contact resolution.
    public func contributions(of d: DialogueFacts, sign: Int64 = 1, into out: inout [KPIContribution]) {
        guard let created = d.createdAt, let node = d.node else { return }
        let day = KPIDay.of(millis: created)
        forEachSingle(of: d, created: created) { index, num in
            out.append(KPIContribution(kpi: index, node: node, day: day, numerator: sign * num, denominator: sign))
        }
    }

    /// Calls `body` with the KPI's index and the numerator `d` adds to it (its denominator
    /// adds 1), for every interaction KPI but first-contact resolution that counts `d`.
    /// The one place the table above is written as code; a recount calls it directly, so a
    /// dialogue costs no intermediate contributions.
    @inline(__always)
    func forEachSingle(of d: DialogueFacts, created: Int64, _ body: (Int, Int64) -> Void) {
        for (index, f) in single {
            if let channel = f.channel, d.channel != channel { continue }
            var num: Int64 = 0
            switch f.kind {
            // A dialogue answered before it was created, or resolved before it was answered,
            // counts nowhere its times are subtracted: such times are not the dialogue's, and
            // counted they made negative averages that met any `at_most` target.
            case .serviceLevel:
                guard d.inbound else { continue }
                if let answered = d.answeredAt {
                    guard answered >= created else { continue }
                    if answered - created <= Int64(f.answeredWithinSeconds ?? 0) * 1000 { num = 1 }
                }
            case .averageSpeedOfAnswer:
                guard d.inbound, let answered = d.answeredAt, answered >= created else { continue }
                num = Self.duration(answered - created)
            case .abandonmentRate:
                guard d.inbound else { continue }
                num = d.abandoned ? 1 : 0
            case .averageHandleTime:
                guard let answered = d.answeredAt, let resolved = d.resolvedAt, resolved >= answered else { continue }
                num = Self.duration(resolved - answered)
            case .slaCompliance:
                // The first response: the answer, or a resolution without one (a web form
                // settled by mail), whichever came first — what stops escalation too.
                guard let due = d.slaDue else { continue }
                // A first response before the dialogue was created is no response of its own.
                let first = [d.answeredAt, d.resolvedAt].compactMap { $0 }.filter { $0 >= created }.min()
                if let first, first < due { num = 1 }
            case .firstContactResolution, .leadConversion:
                continue
            }
            body(index, num)
        }
    }

    /// The longest duration one dialogue adds to a `seconds` KPI: a year. Timestamps are the
    /// writers' (any date of years 0–9999); held to this, the ~290 million dialogues it would
    /// take to overflow one node's day of a store's accumulators cannot be written.
    public static let maxDurationMillis: Int64 = 366 * 86_400_000

    static func duration(_ millis: Int64) -> Int64 {
        Swift.min(Swift.max(millis, -maxDurationMillis), maxDurationMillis)
    }

    /// The first-contact resolution KPIs: their indexes, channels and windows (ms).
    var followUpFormulas: [(index: Int, channel: String?, withinMillis: Int64)] {
        followUp.map { ($0.index, $0.formula.channel, Int64($0.formula.withinSeconds ?? 0) * 1000) }
    }

    /// First-contact resolution over dialogues of one customer and topic (`group`, any
    /// order; or a single dialogue without either): each resolved one counts, and is
    /// resolved at first contact when the next dialogue of the group (by `created_at`, then
    /// id) was created later than `resolved_at + W`, or there is none.
    public func followUpContributions(of group: [DialogueFacts], sign: Int64 = 1, into out: inout [KPIContribution]) {
        guard !followUp.isEmpty else { return }
        let ordered = group.filter { $0.createdAt != nil }.sorted { ($0.createdAt!, $0.id) < ($1.createdAt!, $1.id) }
        for (i, d) in ordered.enumerated() {
            guard let resolved = d.resolvedAt, let node = d.node else { continue }
            let next = i + 1 < ordered.count ? ordered[i + 1].createdAt : nil
            let day = KPIDay.of(millis: d.createdAt!)
            for (index, f) in followUp {
                if let channel = f.channel, d.channel != channel { continue }
                let repeated = next.map { $0 <= resolved + Int64(f.withinSeconds ?? 0) * 1000 } ?? false
                out.append(KPIContribution(kpi: index, node: node, day: day, numerator: repeated ? 0 : sign, denominator: sign))
            }
        }
    }

    /// What a lead adds to the lead KPIs.
    public func contributions(of l: LeadFacts, sign: Int64 = 1, into out: inout [KPIContribution]) {
        guard let created = l.createdAt, let node = l.node else { return }
        let day = KPIDay.of(millis: created)
        for (index, f) in lead {
            if let channel = f.channel, l.channel != channel { continue }
            // Won before it was created: times out of order count nowhere they are subtracted,
            // as a dialogue's (helper 107: such a lead counted as converted).
            if let wonAt = l.wonAt, wonAt < created { continue }
            let won = l.wonAt.map { $0 - created <= Int64(f.withinSeconds ?? 0) * 1000 } ?? false
            out.append(KPIContribution(kpi: index, node: node, day: day, numerator: won ? sign : 0, denominator: sign))
        }
    }

    // MARK: A change

    /// How the accumulators change when a dialogue goes from `before` to `after` (nil:
    /// not held, or deleted). `others` holds every other dialogue of the customer and
    /// topic of `before` and of `after` (needed only when ``needsFollowUps``): their
    /// first-contact outcome may change too. Entries are combined per (KPI, node, day);
    /// those that cancel out are left out.
    public func delta(before: DialogueFacts?, after: DialogueFacts?, others: [DialogueFacts] = []) -> [KPIContribution] {
        var out: [KPIContribution] = []
        if let before { contributions(of: before, sign: -1, into: &out) }
        if let after { contributions(of: after, sign: 1, into: &out) }
        if needsFollowUps {
            let me = (after ?? before)?.id
            let keys = Set([before?.followUpKey, after?.followUpKey].compactMap { $0 })
            for key in keys {
                let group = Self.neighbours(in: others, key: key, excluding: me, of: [before, after].compactMap { $0 })
                followUpContributions(of: group + [before].compactMap { $0 }.filter { $0.followUpKey == key }, sign: -1, into: &out)
                followUpContributions(of: group + [after].compactMap { $0 }.filter { $0.followUpKey == key }, sign: 1, into: &out)
            }
            if let before, before.followUpKey == nil { followUpContributions(of: [before], sign: -1, into: &out) }
            if let after, after.followUpKey == nil { followUpContributions(of: [after], sign: 1, into: &out) }
        }
        return Self.combined(out)
    }

    /// The dialogues of `others` in group `key` (other than `excluding`) that can change the
    /// delta when `moved` (the dialogue before and after the change) leaves or takes its place
    /// in the group: for each, the one just before it (whose next dialogue it becomes or stops
    /// being) and the one just after (which decides its own outcome), by `created_at`, then id.
    /// Every other member keeps its successor within these few, so its outcome is the same in
    /// the before- and after-sets and cancels out of the delta: a change costs a pass over
    /// the group instead of sorting it twice (a customer with many dialogues on one topic).
    static func neighbours(in others: [DialogueFacts], key: FollowUpGroup, excluding me: String?,
                           of moved: [DialogueFacts]) -> [DialogueFacts] {
        var picked: [Int] = []
        for m in moved where m.followUpKey == key {
            guard let at = m.createdAt else { continue }
            var previous: Int?, next: Int?
            for (i, d) in others.enumerated() where d.id != me && d.followUpKey == key {
                guard let c = d.createdAt else { continue }
                if (c, d.id) < (at, m.id) {
                    if previous.map({ (c, d.id) > (others[$0].createdAt!, others[$0].id) }) ?? true { previous = i }
                } else if next.map({ (c, d.id) < (others[$0].createdAt!, others[$0].id) }) ?? true {
                    next = i
                }
            }
            for i in [previous, next].compactMap({ $0 }) where !picked.contains(i) { picked.append(i) }
        }
        return picked.map { others[$0] }
    }

    /// How the accumulators change when a lead goes from `before` to `after`.
    public func delta(before: LeadFacts?, after: LeadFacts?) -> [KPIContribution] {
        var out: [KPIContribution] = []
        if let before { contributions(of: before, sign: -1, into: &out) }
        if let after { contributions(of: after, sign: 1, into: &out) }
        return Self.combined(out)
    }

    /// Entries summed per (KPI, node, day), zeros dropped, in a stable order.
    public static func combined(_ entries: [KPIContribution]) -> [KPIContribution] {
        guard entries.count > 1 else { return entries.filter { $0.numerator != 0 || $0.denominator != 0 } }
        var sums: [Key: (Int64, Int64)] = [:]
        var order: [Key] = []
        for e in entries {
            let key = Key(kpi: e.kpi, node: e.node, day: e.day)
            if let s = sums[key] { sums[key] = (s.0 + e.numerator, s.1 + e.denominator) } else {
                sums[key] = (e.numerator, e.denominator)
                order.append(key)
            }
        }
        return order.compactMap { key in
            let (n, d) = sums[key]!
            return n == 0 && d == 0 ? nil : KPIContribution(kpi: key.kpi, node: key.node, day: key.day, numerator: n, denominator: d)
        }
    }

    private struct Key: Hashable {
        var kpi: Int
        var node: String
        var day: Int64
    }
}

/// One accumulator: a (KPI, node, day) with the sums of its numerators and denominators.
public struct KPITotal: Sendable, Hashable, Codable {
    public var kpi: String
    public var node: String
    public var day: Int64
    public var numerator: Int64
    public var denominator: Int64

    public init(kpi: String, node: String, day: Int64, numerator: Int64, denominator: Int64) {
        self.kpi = kpi
        self.node = node
        self.day = day
        self.numerator = numerator
        self.denominator = denominator
    }
}

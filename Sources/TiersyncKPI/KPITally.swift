/// A full count: every dialogue and lead added once, then ``totals()``. The recomputation
/// a release change runs, and the check of the incremental accumulators.
///
/// Built for a million dialogues in one pass: nodes are numbered as they come; a dialogue's
/// KPIs share its node and day, so one look-up finds the row of sums they all add to; and
/// first-contact resolution orders the dialogues with a customer and topic by bucketing
/// them per group (linear) and sorting only within each group, which holds a few.
public struct KPITally: Sendable {
    public let evaluator: KPIEvaluator
    private let kpiCount: Int
    private let followUpFormulas: [(index: Int, channel: String?, withinMillis: Int64)]
    private var nodeIndex: [String: Int] = [:]
    private var nodes: [String] = []
    private var lastNode: (name: String, index: Int)?
    /// (node, day) → the position of its row in `sums`.
    private var rows: [UInt64: Int] = [:]
    /// The (node, day) of each row, in the order rows were made.
    private var rowKeys: [UInt64] = []
    /// Per row, per KPI: the numerator's sum, then the denominator's.
    private var sums: [Int64] = []
    private var groups: [FollowUpGroup: Int] = [:]
    /// Dialogues first-contact resolution has to see in order within their group.
    private var followUps: [FollowUpEntry] = []
    private var leadBuffer: [KPIContribution] = []

    private struct FollowUpEntry {
        var group: Int
        var created: Int64
        var id: String
        var resolved: Int64?
        var node: Int?
        var channel: String?
    }

    public init(evaluator: KPIEvaluator) {
        self.evaluator = evaluator
        kpiCount = evaluator.catalog.definitions.count
        followUpFormulas = evaluator.followUpFormulas
    }

    /// Counts a dialogue.
    public mutating func add(_ d: DialogueFacts) {
        if let created = d.createdAt, let node = d.node {
            let base = row(node: index(of: node), day: KPIDay.of(millis: created))
            sums.withUnsafeMutableBufferPointer { sums in
                evaluator.forEachSingle(of: d, created: created) { kpi, numerator in
                    sums[base + 2 * kpi] = sums[base + 2 * kpi].addingSaturated(numerator)
                    sums[base + 2 * kpi + 1] = sums[base + 2 * kpi + 1].addingSaturated(1)
                }
            }
        }
        guard !followUpFormulas.isEmpty, let created = d.createdAt else { return }
        if let customer = d.customer, let topic = d.topic {
            let key = FollowUpGroup(customer: customer, topic: topic)
            let group: Int
            if let g = groups[key] { group = g } else {
                group = groups.count
                groups[key] = group
            }
            // A dialogue counting for no node still follows up the ones before it.
            followUps.append(FollowUpEntry(group: group, created: created, id: d.id, resolved: d.resolvedAt,
                                           node: d.node.map { index(of: $0) }, channel: d.channel))
        } else if let resolved = d.resolvedAt, let node = d.node {
            // No group: nothing can follow it up.
            addFollowUp(node: index(of: node), created: created, resolved: resolved, channel: d.channel, next: nil)
        }
    }

    /// Counts a lead.
    public mutating func add(_ l: LeadFacts) {
        leadBuffer.removeAll(keepingCapacity: true)
        evaluator.contributions(of: l, into: &leadBuffer)
        for c in leadBuffer {
            let base = row(node: index(of: c.node), day: c.day)
            sums[base + 2 * c.kpi] = sums[base + 2 * c.kpi].addingSaturated(c.numerator)
            sums[base + 2 * c.kpi + 1] = sums[base + 2 * c.kpi + 1].addingSaturated(c.denominator)
        }
    }

    /// Every accumulator with anything counted, ordered by KPI, node and day.
    public mutating func totals() -> [KPITotal] {
        finishFollowUps()
        let ids = evaluator.catalog.definitions.map(\.id)
        var out: [KPITotal] = []
        for (r, key) in rowKeys.enumerated() {
            let (node, day) = Self.unpack(key)
            for kpi in 0..<kpiCount {
                let numerator = sums[r * 2 * kpiCount + 2 * kpi], denominator = sums[r * 2 * kpiCount + 2 * kpi + 1]
                // Every count adds 1 to a denominator: an accumulator never counted is (0, 0).
                guard numerator != 0 || denominator != 0 else { continue }
                out.append(KPITotal(kpi: ids[kpi], node: nodes[node], day: day, numerator: numerator, denominator: denominator))
            }
        }
        return out.sorted { ($0.kpi, $0.node, $0.day) < ($1.kpi, $1.node, $1.day) }
    }

    /// Dialogues waiting to be ordered for first-contact resolution.
    var followUpCount: Int { followUps.count }

    /// Adds what `other` counted: its accumulators, and its dialogues still to be ordered
    /// for first-contact resolution (their groups and nodes renumbered as this tally's).
    mutating func merge(_ other: KPITally) {
        precondition(other.kpiCount == kpiCount, "tallies of different catalogs")
        let nodeMap = other.nodes.map { index(of: $0) }
        let width = 2 * kpiCount
        for (r, key) in other.rowKeys.enumerated() {
            let (node, day) = Self.unpack(key)
            let base = row(node: nodeMap[node], day: day)
            for j in 0..<width { sums[base + j] = sums[base + j].addingSaturated(other.sums[r * width + j]) }
        }
        var groupMap = [Int](repeating: 0, count: other.groups.count)
        for (key, g) in other.groups {
            if let mine = groups[key] { groupMap[g] = mine } else {
                groupMap[g] = groups.count
                groups[key] = groups.count
            }
        }
        followUps.reserveCapacity(followUps.count + other.followUps.count)
        for var e in other.followUps {
            e.group = groupMap[e.group]
            e.node = e.node.map { nodeMap[$0] }
            followUps.append(e)
        }
    }

    /// First-contact resolution of every grouped dialogue: each group's dialogues ordered by
    /// `created_at`, then id, and each resolved one judged by the one after it.
    private mutating func finishFollowUps() {
        guard !followUps.isEmpty else { return }
        // Bucket the entries by group (counting sort): `start[g] ..< start[g + 1]` of `order`.
        var start = [Int](repeating: 0, count: groups.count + 1)
        for e in followUps { start[e.group + 1] += 1 }
        for g in 0..<groups.count { start[g + 1] += start[g] }
        var order = [Int32](repeating: 0, count: followUps.count)
        var fill = start
        for (i, e) in followUps.enumerated() {
            order[fill[e.group]] = Int32(i)
            fill[e.group] += 1
        }
        let entries = followUps
        func before(_ a: Int32, _ b: Int32) -> Bool {
            let x = entries[Int(a)], y = entries[Int(b)]
            return x.created != y.created ? x.created < y.created : x.id < y.id
        }
        for g in 0..<groups.count {
            let range = start[g]..<start[g + 1]
            if range.count < 2 { continue }
            if range.count <= 16 {
                // Insertion sort: a group holds a customer's dialogues on one topic.
                for i in range.dropFirst() {
                    let moving = order[i]
                    var j = i
                    while j > range.lowerBound, before(moving, order[j - 1]) {
                        order[j] = order[j - 1]
                        j -= 1
                    }
                    order[j] = moving
                }
            } else {
                order[range].sort(by: before)
            }
        }
        for g in 0..<groups.count {
            for i in start[g]..<start[g + 1] {
                let d = entries[Int(order[i])]
                guard let resolved = d.resolved, let node = d.node else { continue }
                let next = i + 1 < start[g + 1] ? entries[Int(order[i + 1])].created : nil
                addFollowUp(node: node, created: d.created, resolved: resolved, channel: d.channel, next: next)
            }
        }
        followUps = []
        groups = [:]
    }

    /// A resolved dialogue's first-contact outcome for each such KPI of its channel: at first
    /// contact unless `next` (the group's following dialogue) came within the window.
    private mutating func addFollowUp(node: Int, created: Int64, resolved: Int64, channel: String?, next: Int64?) {
        let base = row(node: node, day: KPIDay.of(millis: created))
        for f in followUpFormulas {
            if let wanted = f.channel, channel != wanted { continue }
            let repeated = next.map { $0 <= resolved + f.withinMillis } ?? false
            sums[base + 2 * f.index] = sums[base + 2 * f.index].addingSaturated(repeated ? 0 : 1)
            sums[base + 2 * f.index + 1] = sums[base + 2 * f.index + 1].addingSaturated(1)
        }
    }

    private mutating func index(of node: String) -> Int {
        if let last = lastNode, last.name == node { return last.index }
        let i: Int
        if let known = nodeIndex[node] { i = known } else {
            i = nodes.count
            nodes.append(node)
            nodeIndex[node] = i
        }
        lastNode = (node, i)
        return i
    }

    /// The position in `sums` of the row of (node, day), made on first use.
    private mutating func row(node: Int, day: Int64) -> Int {
        let key = Self.pack(node: node, day: day)
        if let r = rows[key] { return r }
        let base = sums.count
        rows[key] = base
        rowKeys.append(key)
        sums.append(contentsOf: repeatElement(0, count: 2 * kpiCount))
        return base
    }

    // 32 bits of node, 32 of day (days since 1970, signed: ±5.8 million years).
    private static func pack(node: Int, day: Int64) -> UInt64 {
        UInt64(UInt32(truncatingIfNeeded: node)) << 32 | UInt64(UInt32(truncatingIfNeeded: day))
    }

    private static func unpack(_ key: UInt64) -> (node: Int, day: Int64) {
        (Int(key >> 32), Int64(Int32(bitPattern: UInt32(truncatingIfNeeded: key))))
    }
}

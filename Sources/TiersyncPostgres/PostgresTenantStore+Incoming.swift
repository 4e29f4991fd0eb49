// Received changes on PostgreSQL: the same judgement as the SQLite engine's `applyIncoming`
// (identity, validation, clock skew, the gate, the merge, quarantine), in two statements per
// push whatever its size: one read of the identities, quarantine entries and records the
// batch touches and of what is held of its origins, the judgement and merge in memory, and
// one call of `ts_apply_push` (PostgresTenantSchema+PushFunction), which takes the tenant's
// lock, checks that the reading still holds and writes every table from arrays.

import Logging
import PostgresNIO
import TiersyncCore
import TiersyncStorage

extension PostgresTenantStore {
    public func applyIncoming(_ changes: [Change], from sender: NodeID, source: ChangeSource, checkSkew: Bool,
                              gate: ChangeGate?, cursor: (name: String, value: Int64)?, wallMillis: UInt64) async throws -> IncomingReport {
        try await prepared()
        return try await pushAdmission.run {
            // In the line too: it waits for the tenant's lock on this process's first push.
            try await beginLogHistoryBeforeWriting()
            return try await applyAdmitted(changes, from: sender, source: source, checkSkew: checkSkew, gate: gate, cursor: cursor, wallMillis: wallMillis)
        }
    }

    /// ``applyIncoming(_:from:source:checkSkew:gate:cursor:wallMillis:)`` once the tenant's
    /// ``PushAdmission`` let it in.
    private func applyAdmitted(_ changes: [Change], from sender: NodeID, source: ChangeSource, checkSkew: Bool,
                               gate: ChangeGate?, cursor: (name: String, value: Int64)?, wallMillis: UInt64) async throws -> IncomingReport {
        // An erasure marker erases in a transaction of its own (PostgresTenantStore+Erasure);
        // the changes around it are applied before and after it, in the batch's order. What
        // was held of the batch's origins is read once, before the first part.
        let isMarker = { (change: Change) in change.table == DomainSchema.erasures.name }
        guard changes.contains(where: isMarker) else {
            let report = try await applyChanges(changes, from: sender, source: source, checkSkew: checkSkew, gate: gate, cursor: cursor, wallMillis: wallMillis)
            // Refusals of erased data are counted in the hub's acknowledgement.
            if report.rejected.contains(where: { $0.code == .erased }) { try await writeErasureAcknowledgements(wallMillis: wallMillis) }
            return report
        }
        var parts: [ArraySlice<Change>] = []
        var start = changes.startIndex
        for (i, change) in changes.enumerated() where isMarker(change) {
            if start < i { parts.append(changes[start..<i]) }
            parts.append(changes[i...i])
            start = i + 1
        }
        if start < changes.endIndex { parts.append(changes[start...]) }
        var report = IncomingReport()
        report.heldBefore = source == .child ? try await highestSeqs(of: Set(changes.map(\.origin))) : [:]
        for (n, part) in parts.enumerated() {
            let partCursor = n == parts.count - 1 ? cursor : nil
            let done = part.count == 1 && isMarker(part.first!)
                ? try await applyMarker(part.first!, from: sender, source: source, checkSkew: checkSkew, gate: gate, cursor: partCursor, wallMillis: wallMillis)
                : try await applyChanges(Array(part), from: sender, source: source, checkSkew: checkSkew, gate: gate, cursor: partCursor, wallMillis: wallMillis)
            report.applied += done.applied
            report.duplicates += done.duplicates
            report.conflicts += done.conflicts
            report.rejected += done.rejected
        }
        // Also after a marker seen before (a retry after a failed acknowledgement).
        try await writeErasureAcknowledgements(wallMillis: wallMillis)
        return report
    }

    /// A batch without erasure markers (or one marker with `routeAdding`, the nodes its
    /// erasure found holding the data), judged in memory and written by `ts_apply_push`.
    func applyChanges(_ changes: [Change], from sender: NodeID, source: ChangeSource, checkSkew: Bool,
                      gate: ChangeGate?, cursor: (name: String, value: Int64)?, wallMillis: UInt64,
                      on connection: PostgresConnection? = nil, routeAdding: Set<NodeID> = []) async throws -> IncomingReport {
        let root = try await prepared()
        let hop = Hop(node: root, atMillis: wallMillis)
        let batch = try await PushLane.run(changes: changes.count) { [schema, clock] in
            let ready: [Ready] = changes.map { change in
                let valid: Change
                switch schema.validate(change) {
                case .failure(let r): return Ready(verdict: .failure(r), table: nil, log: nil)
                case .success(let v): valid = v
                }
                if checkSkew {
                    do throws(ClockSkewError) { try clock.check(valid.hlc, wallMillis: wallMillis) } catch {
                        let r = ChangeRejection(.clockSkew, "change \(valid.origin)#\(valid.originSeq) to \(valid.table)/\(valid.recordID): \(error.description)",
                                                restampAtMillis: wallMillis)
                        return Ready(verdict: .failure(r), table: nil, log: nil)
                    }
                }
                return Ready(verdict: .success(valid), table: schema.table(valid.table), log: EncodedLogEntry(valid, trail: valid.trail(receivedAt: hop)))
            }
            return Batch(changes: changes, ready: ready, sender: sender, source: source, gate: gate, wallMillis: wallMillis, routeAdding: routeAdding)
        }
        let cursorSetting = cursor.map { (key: "cursor." + $0.name, value: String($0.value)) }
        let logger = self.logger
        /// The judgement and the call writing it: on the push lane when the batch is large and
        /// no lock is held; inline under the tenant's lock, which must not wait for the lane's
        /// other jobs.
        func judged(_ state: StoreState, verify: Bool, underLock: Bool) async throws -> (report: IncomingReport, call: PostgresQuery) {
            try await PushLane.run(changes: underLock ? 0 : batch.changes.count) {
                let plan = self.judge(batch, state)
                return (plan.report, self.call(plan, state, verify: verify, cursor: cursorSetting))
            }
        }
        if let connection {
            // Inside the caller's transaction, which holds the tenant's lock (an erasure).
            let state = try await read(for: batch) { try await connection.query($0, logger: logger).collect() }
            let plan = try await judged(state, verify: false, underLock: true)
            _ = try await connection.query(plan.call, logger: logger).collect()
            return plan.report
        }
        // Read without the tenant's lock and write through `ts_apply_push`, which checks
        // under the lock that the reading still holds; twice, then read under the lock.
        for _ in 0..<Self.optimisticAttempts {
            do {
                let state = try await read(for: batch) { try await self.client.preparedRows($0, logger: logger) }
                let plan = try await judged(state, verify: true, underLock: false)
                _ = try await client.preparedRows(plan.call, logger: logger)
                return plan.report
            } catch let error as PSQLError where error.serverInfo?[.sqlState] == PostgresTenantSchema.staleReadState {
                logger.debug("push read changed before its write; judging it again", metadata: ["tenant": "\(tenant)"])
            }
        }
        return try await client.withTransaction(logger: logger) { connection in
            _ = try await connection.query("SELECT seq FROM \(unescaped: table(.head)) WHERE id = 1 FOR UPDATE", logger: logger).collect()
            // A fresh snapshot, taken now that the lock is held: nothing can change it.
            let state = try await read(for: batch) { try await connection.query($0, logger: logger).collect() }
            let plan = try await judged(state, verify: false, underLock: true)
            _ = try await connection.query(plan.call, logger: logger).collect()
            return plan.report
        }
    }

    /// Whether `change` would be applied as a new record (read and judged as
    /// ``applyChanges`` would, writing nothing): how an erasure marker is told to erase.
    func wouldCreate(_ change: Change, from sender: NodeID, source: ChangeSource, checkSkew: Bool, gate: ChangeGate?,
                     wallMillis: UInt64, on connection: PostgresConnection) async throws -> Bool {
        let root = try await prepared()
        let valid: Change
        switch schema.validate(change) {
        case .failure: return false
        case .success(let v): valid = v
        }
        if checkSkew {
            do throws(ClockSkewError) { try clock.check(valid.hlc, wallMillis: wallMillis) } catch { return false }
        }
        let ready = [Ready(verdict: .success(valid), table: schema.table(valid.table),
                           log: EncodedLogEntry(valid, trail: valid.trail(receivedAt: Hop(node: root, atMillis: wallMillis))))]
        let batch = Batch(changes: [change], ready: ready, sender: sender, source: source, gate: gate, wallMillis: wallMillis, routeAdding: [])
        let logger = self.logger
        let state = try await read(for: batch) { try await connection.query($0, logger: logger).collect() }
        return judge(batch, state).report.applied == 1 && state.records.isEmpty
    }

    /// The erasure forbidding `change` here, if any: its record was erased, or one of its
    /// link fields names an erased record.
    private static func erasureBlocking(_ change: Change, _ erased: [RecordKey: (erasureID: String, route: Set<NodeID>)]) -> (erasureID: String, route: Set<NodeID>, linked: RecordKey?)? {
        guard !erased.isEmpty else { return nil }
        if let hit = erased[RecordKey(table: change.table, id: change.recordID)] { return (hit.erasureID, hit.route, nil) }
        for link in Erasure.linkFields(of: change.table) {
            if let target = change.fields[link.field]?.stringValue, let hit = erased[RecordKey(table: link.parent, id: target)] {
                return (hit.erasureID, hit.route, RecordKey(table: link.parent, id: target))
            }
        }
        return nil
    }

    /// Optimistic tries of a push before it reads under the tenant's lock.
    static var optimisticAttempts: Int { 2 }

    /// What the store holds of the batch's identities (applied, quarantined), of the records
    /// it touches and of its origins' sequences, in one statement (so one snapshot): a call
    /// of `ts_read_push` (PostgresTenantSchema+PushFunction), planned once per connection.
    /// Each table is probed per key (LATERAL), whatever the row estimates: compaction empties
    /// the log and vacuum leaves the estimates near zero while pushes refill it, and a join
    /// was then planned as the whole table against each key.
    private func read(for batch: Batch, _ run: (PostgresQuery) async throws -> [PostgresRow]) async throws -> StoreState {
        let changesTable = table(.changes)
        let (origins, seqs) = (batch.identities.map(\.origin), batch.identities.map(\.seq))
        let (lo, hi) = (Change.sequenceRange.lowerBound, Change.sequenceRange.upperBound)
        let lookups = IdentityLookups(batch.identities)
        let rows = try await run("""
            SELECT * FROM \(unescaped: "\"\(tenantSchema.name)\".ts_read_push")(\(lookups.single.map(\.origin))::text[], \(lookups.single.map(\.seq))::int8[],
              \(batch.keys.map(\.table))::text[], \(batch.keys.map(\.id))::text[], \(batch.origins)::text[],
              \(batch.erasureKeys.map(\.table))::text[], \(batch.erasureKeys.map(\.id))::text[], \(lo)::int8, \(hi)::int8,
              \(lookups.ranges.map(\.origin))::text[], \(lookups.ranges.map(\.lo))::int8[], \(lookups.ranges.map(\.hi))::int8[],
              \(origins)::text[], \(seqs)::int8[])
            """)
        // A range read of the log returns the origin's other entries in it too: kept only
        // for the batch's own identities.
        let asked = lookups.ranges.isEmpty ? [] : Set(batch.identities)
        var state = StoreState(identities: batch.identities, keysAsked: batch.keys)
        state.lookups = lookups
        let rangeOrigins = Set(lookups.ranges.map(\.origin))
        var purgedThrough: [String: Int64] = [:]
        for row in rows {
            let (kind, a, b, c, d, e, f, n1, n2) = try row.decode((Int32, String, String?, String?, String?, String?, String?, Int64?, Int64?).self)
            switch kind {
            case 0:
                let id = Identity(origin: a, seq: n1 ?? 0)
                if rangeOrigins.contains(a) { state.rangeEntries[a, default: 0] += 1 }
                if lookups.ranges.isEmpty || asked.contains(id) { state.held[id] = UInt64(bitPattern: n2 ?? 0) }
            case 1:
                state.quarantined[Identity(origin: a, seq: n1 ?? 0)] = .init(code: b ?? "", receivedAtMillis: n2 ?? 0, receivedFrom: c ?? "")
            case 3:
                // What the store held of the origin before this batch (as highestSeqs), a
                // purged entry included.
                let purged = b.flatMap { Int64($0) } ?? 0
                state.heldBefore[NodeID(unchecked: a)] = max(n1 ?? 0, n2 ?? 0, purged)
                if purged > 0 { purgedThrough[a] = purged }
            case 4:
                state.erased[RecordKey(table: a, id: b ?? "")] = (erasureID: c ?? "", route: RecordMerge.parseRoute(d ?? ""))
            case 5:
                state.erasedRefusals.insert(Identity(origin: a, seq: n1 ?? 0))
            case 6:
                state.erasureGeneration = n1 ?? 0
            case 7:
                // A range's identities purged here (`ts_apply_push` checks logged + purged).
                state.rangeEntries[a, default: 0] += n1 ?? 0
            default:
                guard let id = b, let fields = c, let versions = d, let route = f else { throw PostgresStoreError("a record of \(a) read without its state") }
                let key = RecordKey(table: a, id: id)
                state.records[key] = try Self.record(table: a, id: id, fields: fields, versions: versions, tombstone: e, route: route)
                state.recordsAsRead[key] = RecordAsRead(versions: versions, tombstone: e ?? "", route: route)
            }
        }
        // Identities neither logged nor quarantined, at or below their origin's highest
        // purged sequence, may have been applied and purged: asked in a second statement,
        // which a push of new changes (above it) never needs. Purged identities stay purged,
        // and `ts_apply_push` counts them as held, so reading them apart is safe.
        let maybePurged = batch.identities.filter { id in
            state.held[id] == nil && state.quarantined[id] == nil && id.seq <= (purgedThrough[id.origin] ?? 0)
        }
        if !maybePurged.isEmpty {
            let rows = try await run("""
                SELECT u.o, u.s FROM unnest(\(maybePurged.map(\.origin))::text[], \(maybePurged.map(\.seq))::int8[]) AS u(o, s)
                WHERE (SELECT p.hi FROM \(unescaped: table(.purgedRanges)) p WHERE p.origin = u.o AND p.lo <= u.s ORDER BY p.lo DESC LIMIT 1) >= u.s
                  AND NOT EXISTS (SELECT 1 FROM \(unescaped: changesTable) c WHERE c.origin = u.o AND c.origin_seq = u.s)
                """)
            for row in rows {
                let (origin, seq) = try row.decode((String, Int64).self)
                state.purged.insert(Identity(origin: origin, seq: seq))
            }
        }
        return state
    }

    /// The batch judged in order against `state`, in memory: the report and every row to write.
    private func judge(_ batch: Batch, _ state: StoreState) -> PushPlan {
        let (sender, wallMillis) = (batch.sender, batch.wallMillis)
        var plan = PushPlan()
        plan.report.heldBefore = state.heldBefore
        var held = state.held
        var current = state.records
        var quarantine: [Identity: QuarantineRow] = [:]
        // Refusals in the batch's order: the order an admin lists them in (ids follow it).
        var refusalOrder: [Identity] = []
        var unquarantine: Set<Identity> = []
        var dirty: [RecordKey] = []
        var dirtySet: Set<RecordKey> = []
        var erasedRefused: Set<Identity> = []
        func refuse(_ change: Change, _ rejection: ChangeRejection) {
            let id = Identity(origin: change.origin.rawValue, seq: change.originSeq)
            var at = Int64(wallMillis)
            // A change refused for clock skew again keeps its first refusal time: the
            // origin re-stamps it to that time, so writes accepted since win over it.
            if let earlier = quarantine[id]?.entry ?? state.quarantined[id], earlier.code == ChangeRejection.Code.clockSkew.rawValue,
               rejection.code == .clockSkew {
                at = min(at, earlier.receivedAtMillis)
            }
            if quarantine[id] == nil { refusalOrder.append(id) }
            quarantine[id] = QuarantineRow(entry: .init(code: rejection.code.rawValue, receivedAtMillis: at, receivedFrom: sender.rawValue),
                                           reason: rejection.message.clipped(toUTF8: 1_000).replacingOccurrences(of: "\0", with: "\u{FFFD}"),
                                           change: QuarantineEncoding.json(change))
            unquarantine.remove(id)
            plan.report.rejected.append(RejectedChange(change: change, rejection: rejection))
        }
        // Positions relative to the head, which `ts_apply_push` adds under the lock.
        var position: Int64 = 0
        for (change, prepared) in zip(batch.changes, batch.ready) {
            let id = Identity(origin: change.origin.rawValue, seq: change.originSeq)
            let entry = unquarantine.contains(id) ? nil : quarantine[id]?.entry ?? state.quarantined[id]
            let identity = ChangeIdentityVerdict.judge(change, heldStamp: held[id], quarantined: entry)
            // Applied here and purged since (superseded, or its record's tombstone purged):
            // a redelivery, whatever the store would say of it now.
            if identity == .duplicate || (identity == .new && state.purged.contains(id)) {
                plan.report.duplicates += 1
                continue
            }
            if let refusal = identity.refusal(for: change) {
                refuse(change, refusal)
                continue
            }
            // Data erased here never comes back: a change of an erased record, or one linking
            // to it, is refused (after the sender's scope) and counted, never kept.
            if let blocked = Self.erasureBlocking(change, state.erased) {
                // The sender's scope is judged on the record it writes: the erased record's
                // route when that is the record, its own when it only links to one (judged on
                // the linked record's route, a dealer's new dialogue naming an erased
                // customer of its sibling was refused as outside its scope, retried for ever).
                var (before, after) = (Optional(blocked.route), blocked.route)
                if blocked.linked != nil, let table = schema.table(change.table) {
                    let stored = current[RecordKey(table: change.table, id: change.recordID)]
                    (before, after) = (stored?.route, RecordMerge.merge(change, into: stored, table: table).route)
                }
                // A copied route field copies an erased record's route: not judged (as at SQLite).
                if let gate = batch.gate, let refusal = gate(GateContext(change: change, sender: sender, routeBefore: before, routeAfter: after,
                                                                         copiedFromRoute: RouteReach.copiedFrom[change.table] == nil ? nil : after)) {
                    // Refused for its sender's scope, and not quarantined: its values are those of an erased record.
                    plan.report.rejected.append(RejectedChange(change: change, rejection: refusal))
                    continue
                }
                guard !state.erasedRefusals.contains(id), erasedRefused.insert(id).inserted else {
                    plan.report.duplicates += 1
                    continue
                }
                plan.erasedRefusals.append((id, blocked.erasureID, Int64(wallMillis)))
                plan.report.rejected.append(RejectedChange(change: change, rejection: ErasureRefusal.rejection(
                    table: change.table, id: change.recordID, erasureID: blocked.erasureID, linked: blocked.linked.map { ($0.table, $0.id) })))
                continue
            }
            let valid: Change
            switch prepared.verdict {
            case .failure(let rejection):
                refuse(change, rejection)
                continue
            case .success(let v): valid = v
            }
            let table = prepared.table!
            let key = RecordKey(table: valid.table, id: valid.recordID)
            let stored = current[key]
            var merged = RecordMerge.merge(valid, into: stored, table: table)
            let copiedFromRoute = RouteReach.copiedSource(of: valid, merged: merged.state.liveValues).flatMap { current[RecordKey(table: $0.table, id: $0.id)]?.route }
            if let gate = batch.gate, let refusal = gate(GateContext(change: valid, sender: sender, routeBefore: stored?.route, routeAfter: merged.route,
                                                                     copiedFromRoute: copiedFromRoute)) {
                refuse(change, refusal)
                continue
            }
            if let refusal = RecordMerge.erasureSubjectRefusal(of: valid, merged: merged, over: stored) {
                refuse(change, refusal)
                continue
            }
            // An erasure marker goes on to every node the erased data was routed to here.
            merged.route.formUnion(batch.routeAdding)
            position += 1
            if merged.outcome.changedAnything || stored == nil {
                current[key] = StoredRecord(table: valid.table, id: valid.recordID, state: merged.state, route: merged.route)
                if dirtySet.insert(key).inserted { dirty.append(key) }
            }
            for field in merged.outcome.changedFields {
                guard let version = merged.state.versions[field] else { continue }
                plan.settled.tables.append(valid.table)
                plan.settled.ids.append(valid.recordID)
                plan.settled.fields.append(field)
                plan.settled.versions.append(version.description)
            }
            for c in merged.outcome.conflicts {
                plan.conflicts.append(table: valid.table, id: valid.recordID, c, at: Int64(wallMillis))
            }
            let reached = stored.map { merged.route.union($0.route) } ?? merged.route
            plan.log.append(seq: position, valid, prepared.log!, source: batch.source, sender: sender, at: Int64(wallMillis), routed: reached)
            for node in reached {
                plan.routes.nodes.append(node.rawValue)
                plan.routes.seqs.append(position)
            }
            if let stored, !merged.route.isSubset(of: stored.route) {
                let before = stored.route.map(\.rawValue).sorted().joined(separator: ",")
                for node in merged.route.subtracting(stored.route) {
                    plan.entries.append(node: node.rawValue, seq: position, table: valid.table, id: valid.recordID, before: before)
                }
            }
            held[id] = valid.hlc.rawValue
            if entry != nil || quarantine[id] != nil {
                quarantine[id] = nil
                unquarantine.insert(id)
            }
            plan.report.applied += 1
            plan.report.conflicts += merged.outcome.conflicts.count
        }
        plan.numbered = position
        // A record is written as new only where the push asked for it and found none: what
        // `ts_apply_push` checks is still absent (anything else takes the upsert).
        let asked = Set(state.keysAsked)
        for key in dirty { plan.records.append(current[key]!, new: state.records[key] == nil && asked.contains(key)) }
        plan.released = Array(unquarantine)
        plan.refused = refusalOrder.compactMap { id in quarantine[id].map { (key: id, value: $0) } }
        return plan
    }

    /// The call of `ts_apply_push` writing `plan`; with `verify`, it first checks that what
    /// `state` read still holds.
    private func call(_ plan: PushPlan, _ state: StoreState, verify: Bool, cursor: (key: String, value: String)?) -> PostgresQuery {
        let expectedQuarantine = Array(state.quarantined)
        let read = Array(state.recordsAsRead)
        let absent = Array(Set(state.keysAsked).subtracting(state.records.keys))
        let (records, log, conflicts, entries) = (plan.records, plan.log, plan.conflicts, plan.entries)
        let (singles, ranges) = (state.lookups.single, state.lookups.ranges)
        return """
            SELECT \(unescaped: "\"\(tenantSchema.name)\".ts_apply_push")(\(verify), \(singles.map(\.origin))::text[], \(singles.map(\.seq))::int8[],
              \(Int64(singles.count { state.held[$0] != nil || state.purged.contains($0) })),
              \(expectedQuarantine.map(\.key.origin))::text[], \(expectedQuarantine.map(\.key.seq))::int8[], \(expectedQuarantine.map(\.value.code))::text[],
              \(expectedQuarantine.map(\.value.receivedAtMillis))::int8[], \(expectedQuarantine.map(\.value.receivedFrom))::text[],
              \(read.map(\.key.table))::text[], \(read.map(\.key.id))::text[], \(read.map(\.value.versions))::text[], \(read.map(\.value.tombstone))::text[],
              \(read.map(\.value.route))::text[], \(absent.map(\.table))::text[], \(absent.map(\.id))::text[],
              \(plan.numbered),
              \(records.tables)::text[], \(records.ids)::text[], \(records.fields)::text[], \(records.versions)::text[], \(records.tombstones)::text[],
              \(records.routes)::text[], \(records.live)::bool[], \(records.new)::bool[],
              \(log.seqs)::int8[], \(log.origins)::text[], \(log.originSeqs)::int8[], \(log.hlcs)::int8[], \(log.tables)::text[], \(log.ids)::text[],
              \(log.ops)::text[], \(log.fields)::text[], \(log.priors)::text[], \(log.sources)::text[], \(log.senders)::text[], \(log.receivedAt)::int8[],
              \(log.trails)::text[], \(log.routed)::text[],
              \(plan.routes.nodes)::text[], \(plan.routes.seqs)::int8[],
              \(entries.nodes)::text[], \(entries.seqs)::int8[], \(entries.tables)::text[], \(entries.ids)::text[], \(entries.before)::text[],
              \(conflicts.tables)::text[], \(conflicts.ids)::text[], \(conflicts.fields)::text[], \(conflicts.winners)::text[],
              \(conflicts.winnerVersions)::text[], \(conflicts.losers)::text[], \(conflicts.loserVersions)::text[], \(conflicts.at)::int8[],
              \(plan.released.map(\.origin))::text[], \(plan.released.map(\.seq))::int8[],
              \(plan.refused.map(\.key.origin))::text[], \(plan.refused.map(\.key.seq))::int8[], \(plan.refused.map(\.value.entry.receivedFrom))::text[],
              \(plan.refused.map(\.value.entry.receivedAtMillis))::int8[], \(plan.refused.map(\.value.entry.code))::text[],
              \(plan.refused.map(\.value.reason))::text[], \(plan.refused.map(\.value.change))::text[],
              \(plan.settled.tables)::text[], \(plan.settled.ids)::text[], \(plan.settled.fields)::text[], \(plan.settled.versions)::text[],
              \(state.erasureGeneration), \(plan.erasedRefusals.map(\.0.origin))::text[], \(plan.erasedRefusals.map(\.0.seq))::int8[],
              \(plan.erasedRefusals.map(\.1))::text[], \(plan.erasedRefusals.map(\.2))::int8[],
              \(PostgresNotifier.defaultChannel), \(tenant.rawValue), \(cursor?.key)::text, \(cursor?.value)::text,
              \(ranges.map(\.origin))::text[], \(ranges.map(\.lo))::int8[], \(ranges.map(\.hi))::int8[],
              \(ranges.map { state.rangeEntries[$0.origin] ?? 0 })::int8[],
              \(state.identities.map(\.origin))::text[], \(state.identities.map(\.seq))::int8[])
            """
    }
}

/// A push as received, with what was made ready of it outside any transaction.
private struct Batch: Sendable {
    let changes: [Change]
    let ready: [Ready]
    let sender: NodeID
    let source: ChangeSource
    let gate: ChangeGate?
    let wallMillis: UInt64
    /// The identities in the sequence range (others are refused unread), each once.
    let identities: [Identity]
    /// The records the batch touches, each once, and those whose route a change's copied
    /// route fields copy (``RouteReach/copiedSource(of:)``), which its gate judges them by.
    let keys: [RecordKey]
    /// The batch's origins, each once.
    let origins: [String]
    /// The records an erasure may forbid the batch to touch: those it writes and those its
    /// link fields name (``Erasure/linkFields(of:)``).
    let erasureKeys: [RecordKey]
    /// Nodes an erasure marker's route gains (the holders of the data it erased).
    let routeAdding: Set<NodeID>

    init(changes: [Change], ready: [Ready], sender: NodeID, source: ChangeSource, gate: ChangeGate?, wallMillis: UInt64, routeAdding: Set<NodeID>) {
        (self.changes, self.ready, self.sender, self.source, self.gate, self.wallMillis) = (changes, ready, sender, source, gate, wallMillis)
        self.routeAdding = routeAdding
        identities = Array(Set(changes.filter { Change.sequenceRange.contains($0.originSeq) }.map { Identity(origin: $0.origin.rawValue, seq: $0.originSeq) }))
        // Only valid changes touch records: an invalid one's table or id may be text PostgreSQL
        // cannot even take as a parameter (a NUL failed the whole push, 500, for ever).
        let valid = zip(changes, ready).compactMap { change, prepared -> Change? in
            if case .success = prepared.verdict { return change }
            return nil
        }
        var keys = Set(valid.map { RecordKey(table: $0.table, id: $0.recordID) })
        if gate != nil {
            for change in valid { if let source = RouteReach.copiedSource(of: change) { keys.insert(RecordKey(table: source.table, id: source.id)) } }
        }
        self.keys = Array(keys)
        origins = Array(Set(changes.map(\.origin.rawValue)))
        var erasureKeys = Set(keys)
        for change in valid {
            for link in Erasure.linkFields(of: change.table) {
                if let target = change.fields[link.field]?.stringValue { erasureKeys.insert(RecordKey(table: link.parent, id: target)) }
            }
        }
        self.erasureKeys = Array(erasureKeys)
    }
}

private struct Identity: Hashable, Sendable {
    let origin: String
    let seq: Int64
}

/// How a push's read finds its identities in the log: an origin's identities lying close
/// together (the span of their sequences at most twice their count, as when a node pushes
/// its log in order) as one range of the log's index; the others one by one. The span bound
/// keeps what a range reads within twice what the batch holds, whatever the sequences a
/// node sends.
private struct IdentityLookups: Sendable {
    var single: [Identity] = []
    var ranges: [(origin: String, lo: Int64, hi: Int64)] = []

    init(_ identities: [Identity]) {
        var byOrigin: [String: [Int64]] = [:]
        for id in identities { byOrigin[id.origin, default: []].append(id.seq) }
        for (origin, seqs) in byOrigin {
            // Sequences are within `Change.sequenceRange` (non-negative), so the span cannot
            // overflow.
            let (lo, hi) = (seqs.min()!, seqs.max()!)
            if seqs.count > 1, hi - lo < 2 * Int64(seqs.count) {
                ranges.append((origin, lo, hi))
            } else {
                single += seqs.map { Identity(origin: origin, seq: $0) }
            }
        }
    }
}

private struct RecordKey: Hashable, Sendable {
    let table: String
    let id: String
}

/// A change made ready outside the transaction: its verdict and its log entry.
private struct Ready: Sendable {
    let verdict: Result<Change, ChangeRejection>
    let table: TableSchema?
    let log: EncodedLogEntry?
}

private struct QuarantineRow: Sendable {
    var entry: ChangeIdentityVerdict.Quarantined
    var reason: String
    var change: String
}

/// A record's columns as read, which `ts_apply_push` compares with the row under the lock.
private struct RecordAsRead: Sendable {
    let versions: String
    /// Empty for none (the function reads it as NULL).
    let tombstone: String
    let route: String
}

/// What the store held when a push read it.
private struct StoreState: Sendable {
    var identities: [Identity] = []
    var keysAsked: [RecordKey] = []
    var held: [Identity: UInt64] = [:]
    var quarantined: [Identity: ChangeIdentityVerdict.Quarantined] = [:]
    var records: [RecordKey: StoredRecord] = [:]
    var recordsAsRead: [RecordKey: RecordAsRead] = [:]
    var heldBefore: [NodeID: Int64] = [:]
    /// Erased records among the batch's erasure keys, with the erasure and their last route.
    var erased: [RecordKey: (erasureID: String, route: Set<NodeID>)] = [:]
    /// Identities of the batch refused earlier as erased (a redelivery is a duplicate).
    var erasedRefusals: Set<Identity> = []
    /// Erasures done so far (`head.erasures`), which `ts_apply_push` checks under the lock.
    var erasureGeneration: Int64 = 0
    /// Identities of the batch applied here and purged since (PostgresTenantStore+Retention).
    var purged: Set<Identity> = []
    /// How the read looked the identities up (``IdentityLookups``).
    var lookups = IdentityLookups([])
    /// Per origin read as a range: the identities the range held (logged, or purged since
    /// they were), the batch's or not.
    var rangeEntries: [String: Int64] = [:]
}

/// What a judged push writes, and what it reports.
private struct PushPlan {
    var report = IncomingReport()
    /// Log positions used (1…numbered after the head).
    var numbered: Int64 = 0
    var log = LogRows()
    var routes = (nodes: [String](), seqs: [Int64]())
    var entries = EntryRows()
    var conflicts = ConflictRows()
    /// Fields written, with the version now in force: kept conflicts older than it settle.
    var settled = (tables: [String](), ids: [String](), fields: [String](), versions: [String]())
    var records = RecordRows()
    var released: [Identity] = []
    var refused: [(key: Identity, value: QuarantineRow)] = []
    /// Changes refused as erased: identity, erasure, when.
    var erasedRefusals: [(Identity, String, Int64)] = []
}

/// Change-log rows of one push, column by column (what `unnest` takes).
private struct LogRows {
    var seqs: [Int64] = [], origins: [String] = [], originSeqs: [Int64] = [], hlcs: [Int64] = []
    var tables: [String] = [], ids: [String] = [], ops: [String] = [], fields: [String] = [], priors: [String] = []
    var sources: [String] = [], senders: [String] = [], receivedAt: [Int64] = [], trails: [String] = []
    /// The nodes each entry is routed to, comma-separated (what compaction waits for).
    var routed: [String] = []

    mutating func append(seq: Int64, _ change: Change, _ log: EncodedLogEntry, source: ChangeSource, sender: NodeID, at: Int64, routed: Set<NodeID>) {
        seqs.append(seq)
        self.routed.append(routed.map(\.rawValue).sorted().joined(separator: ","))
        origins.append(change.origin.rawValue)
        originSeqs.append(change.originSeq)
        hlcs.append(Int64(bitPattern: change.hlc.rawValue))
        tables.append(change.table)
        ids.append(change.recordID)
        ops.append(change.op.rawValue)
        fields.append(log.fields)
        // Empty stands for NULL (NULLIF in the statement): prior and trail are JSON, a
        // sender is a node id, so none of them is ever empty.
        priors.append(log.prior ?? "")
        sources.append(source.rawValue)
        senders.append(sender.rawValue)
        receivedAt.append(at)
        trails.append(log.trail ?? "")
    }
}

/// Records' new states, column by column.
private struct RecordRows {
    var tables: [String] = [], ids: [String] = [], fields: [String] = [], versions: [String] = []
    var tombstones: [String] = [], routes: [String] = [], live: [Bool] = []
    /// Whether the record was absent when the push read the store: written by a plain insert.
    var new: [Bool] = []

    mutating func append(_ record: StoredRecord, new isNew: Bool) {
        new.append(isNew)
        tables.append(record.table)
        ids.append(record.id)
        fields.append(record.state.isLive ? CanonicalJSON.object(record.state.liveValues) : "{}")
        versions.append(CanonicalJSON.groupedVersions(record.state.versions))
        // Empty stands for NULL, as in the log's rows.
        tombstones.append(record.state.tombstone?.description ?? "")
        routes.append(RecordMerge.encodeRoute(record.route))
        live.append(record.state.isLive)
    }
}

private struct EntryRows {
    var nodes: [String] = [], seqs: [Int64] = [], tables: [String] = [], ids: [String] = [], before: [String] = []

    mutating func append(node: String, seq: Int64, table: String, id: String, before: String) {
        nodes.append(node)
        seqs.append(seq)
        tables.append(table)
        ids.append(id)
        self.before.append(before)
    }
}

private struct ConflictRows {
    var tables: [String] = [], ids: [String] = [], fields: [String] = [], winners: [String] = [], winnerVersions: [String] = []
    var losers: [String] = [], loserVersions: [String] = [], at: [Int64] = []

    mutating func append(table: String, id: String, _ c: FieldConflict, at: Int64) {
        tables.append(table)
        ids.append(id)
        fields.append(c.field)
        winners.append(c.winner.canonical)
        winnerVersions.append(c.winnerVersion.description)
        losers.append(c.loser.canonical)
        loserVersions.append(c.loserVersion.description)
        self.at.append(at)
    }
}

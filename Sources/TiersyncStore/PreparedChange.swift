import TiersyncCore

/// A received batch made ready for ``NodeStore/apply(_:cursor:)`` by
/// ``NodeStore/prepareIncoming(_:from:source:checkSkew:gate:wallMillis:)``.
public struct IncomingBatchPlan: Sendable {
    let changes: [Change]
    let sender: NodeID
    let source: ChangeSource
    let gate: ChangeGate?
    let wallMillis: UInt64
    let prepared: [PreparedChange]
}

/// What a received change needs that does not depend on the store, worked out before the
/// write transaction opens: its validation and skew verdict, the log entry's JSON, and —
/// speculatively — the record it makes if the record does not exist here yet (merged from
/// nothing, routed, gated, encoded).
///
/// A store has one writer; everything done inside its transaction is serialized across
/// every push of a tenant. Preparing outside lets concurrent pushes (and the pull page
/// being applied while the next is fetched) do this work on other cores. Inside the
/// transaction, the speculative record is used only when the batch's reads confirm the
/// record is absent (``IncomingBatch/mayExist(table:id:)``); otherwise the record is loaded
/// and merged there as before, so the outcome is the same either way.
struct PreparedChange: Sendable {
    /// The validated change, or why it is refused (schema or clock skew).
    let verdict: Result<Change, ChangeRejection>
    let table: TableSchema?
    /// The log entry's text columns, with the receiver's hop appended to the trail.
    let log: EncodedLogEntry?
    /// The record this change makes when nothing is stored for it yet.
    let fresh: FreshRecord?

    struct FreshRecord: Sendable {
        let merged: MergedRecord
        let row: EncodedRecord
        /// The gate's answer for the record as new here (route before: none).
        let refusal: ChangeRejection?
    }

    /// Prepares `changes` received from `sender`, as `applyIncoming` judges them.
    static func prepare(_ changes: [Change], schema: Schema, clock: HybridLogicalClock, receiver: NodeID?, sender: NodeID,
                        checkSkew: Bool, gate: ChangeGate?, wallMillis: UInt64) -> [PreparedChange] {
        let hop = receiver.map { Hop(node: $0, atMillis: wallMillis) }
        return changes.map { change in
            let valid: Change
            switch schema.validate(change) {
            case .failure(let r): return PreparedChange(verdict: .failure(r), table: nil, log: nil, fresh: nil)
            case .success(let v): valid = v
            }
            if checkSkew {
                do throws(ClockSkewError) { try clock.check(valid.hlc, wallMillis: wallMillis) } catch {
                    let r = ChangeRejection(.clockSkew, "change \(valid.origin)#\(valid.originSeq) to \(valid.table)/\(valid.recordID): \(error.description)",
                                            restampAtMillis: wallMillis)
                    return PreparedChange(verdict: .failure(r), table: nil, log: nil, fresh: nil)
                }
            }
            let table = schema.table(valid.table)!
            let trail = valid.trail(receivedAt: hop)
            let merged = RecordMerge.merge(valid, into: nil, table: table)
            let refusal = gate?(GateContext(change: valid, sender: sender, routeBefore: nil, routeAfter: merged.route))
                ?? RecordMerge.erasureSubjectRefusal(of: valid, merged: merged, over: nil)
            return PreparedChange(verdict: .success(valid), table: table, log: EncodedLogEntry(valid, trail: trail),
                                  fresh: FreshRecord(merged: merged, row: EncodedRecord(merged.state, route: merged.route, table: table),
                                                     refusal: refusal))
        }
    }
}

/// A record's state as stored: its domain row's column values and the replication state
/// kept beside them (in the row's `ts_` columns, or in `ts_tombstones` when deleted), encoded.
struct EncodedRecord: Sendable {
    let versions: String
    let tombstone: String?
    let route: String
    let live: Bool
    /// The domain row's values in the table's field order (empty when not live).
    let columns: [FieldValue]

    init(_ state: RecordState, route: Set<NodeID>, table: TableSchema) {
        versions = CanonicalJSON.groupedVersions(state.versions)
        tombstone = state.tombstone?.description
        self.route = RecordMerge.encodeRoute(route)
        live = state.isLive
        if live {
            // A record sets a few of its table's fields (4 of 30 for a typical contact):
            // placing those by position hashes 4 names instead of looking up 30.
            var columns = [FieldValue](repeating: .null, count: table.fields.count)
            for (name, value) in state.liveValues {
                if let position = table.position(of: name) { columns[position] = value }
            }
            self.columns = columns
        } else {
            columns = []
        }
    }
}

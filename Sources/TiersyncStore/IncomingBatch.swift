import GRDB
import TiersyncCore

/// What applying one received batch needs to know about the store, read with one query per
/// origin and per table instead of one per change: which changes are already held (and
/// their stamps), whether anything is quarantined at all, and which records exist. The
/// batch's own writes are tracked, so a change or record that appears twice in a batch is
/// judged against the first.
struct IncomingBatch {
    private struct Identity: Hashable {
        let origin: String
        let seq: Int64
    }

    /// Stamps of held changes, for the origins and sequence ranges of the batch.
    private var held: [Identity: UInt64] = [:]
    /// Origins whose sequences were too scattered to read as one range: asked per change.
    private var askPerChange: Set<String> = []
    /// Records stored (live or deleted), by table, among those the batch touches.
    private var existing: [String: Set<String>] = [:]
    private struct RecordKey: Hashable {
        let table: String
        let id: String
    }

    /// Records written by this batch so far.
    private var written: Set<RecordKey> = []
    /// False once anything is quarantined: only then can a final refusal exist.
    private(set) var quarantineEmpty: Bool

    init(_ db: Database, changes: [Change], schema: Schema) throws {
        quarantineEmpty = !(try Bool.fetchOne(db.cachedStatement(sql: "SELECT EXISTS (SELECT 1 FROM ts_quarantine)")) ?? false)
        var byOrigin: [String: [Int64]] = [:]
        var byTable: [String: Set<String>] = [:]
        for c in changes {
            // A sequence outside the valid range is refused by validation; it must not
            // stretch (or overflow) the range read here.
            if Change.sequenceRange.contains(c.originSeq) { byOrigin[c.origin.rawValue, default: []].append(c.originSeq) }
            byTable[c.table, default: []].insert(c.recordID)
        }
        for (origin, seqs) in byOrigin {
            let (lo, hi) = (seqs.min()!, seqs.max()!)
            // A range read costs what it covers: fine for a node's consecutive changes, not
            // for a handful scattered over a long history.
            let (span, overflow) = hi.subtractingReportingOverflow(lo)
            guard !overflow, span < Int64(4 * seqs.count + 64) else { askPerChange.insert(origin); continue }
            let rows = try Row.fetchCursor(db.cachedStatement(sql: "SELECT origin_seq, hlc FROM ts_changes WHERE origin = ? AND origin_seq BETWEEN ? AND ?"),
                                           arguments: [origin, lo, hi])
            while let row = try rows.next() {
                held[Identity(origin: origin, seq: row[0])] = UInt64(bitPattern: row[1] as Int64)
            }
        }
        let anyTombstone = try Bool.fetchOne(db.cachedStatement(sql: "SELECT EXISTS (SELECT 1 FROM ts_tombstones)")) ?? false
        for (table, ids) in byTable {
            // A table the schema does not know has no records (its changes are refused).
            guard schema.table(table) != nil else { existing[table] = []; continue }
            // One cached point lookup per id: an `IN (…)` list of 500 was compiled afresh per
            // chunk, its placeholders and boxed arguments built each time, and sorted by SQLite
            // before use (10 % of the hub writer's time under a push load).
            var present: Set<String> = []
            let live = try db.cachedStatement(sql: "SELECT 1 FROM \(table.quotedDatabaseIdentifier) WHERE id = ? AND \(DomainTables.heldByStore)")
            let dead = anyTombstone ? try db.cachedStatement(sql: "SELECT 1 FROM ts_tombstones WHERE tbl = ? AND id = ?") : nil
            for id in ids {
                if try DirectBinding.exists(db, live, { $0.text(id) }) {
                    present.insert(id)
                } else if let dead, try DirectBinding.exists(db, dead, { $0.text(table); $0.text(id) }) {
                    present.insert(id)
                }
            }
            existing[table] = present
        }
    }

    /// Whether `change` is new, held already (a duplicate), or reuses a held identity.
    func known(_ db: Database, _ change: Change) throws -> ChangeIdentityVerdict {
        let stamp: UInt64?
        if askPerChange.contains(change.origin.rawValue) {
            stamp = try Int64.fetchOne(db.cachedStatement(sql: "SELECT hlc FROM ts_changes WHERE origin = ? AND origin_seq = ?"),
                                       arguments: [change.origin.rawValue, change.originSeq]).map { UInt64(bitPattern: $0) }
        } else {
            stamp = held[Identity(origin: change.origin.rawValue, seq: change.originSeq)]
        }
        guard stamp == nil, !quarantineEmpty else { return .judge(change, heldStamp: stamp, quarantined: nil) }
        let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT code, received_at, received_from FROM ts_quarantine WHERE origin = ? AND origin_seq = ?"),
                                   arguments: [change.origin.rawValue, change.originSeq])
        return .judge(change, heldStamp: nil, quarantined: row.map { .init(code: $0[0], receivedAtMillis: $0[1], receivedFrom: $0[2]) })
    }

    /// Whether the record may already have state: false skips reading it.
    func mayExist(table: String, id: String) -> Bool {
        existing[table]?.contains(id) ?? true || (!written.isEmpty && written.contains(RecordKey(table: table, id: id)))
    }

    mutating func applied(_ change: Change) {
        held[Identity(origin: change.origin.rawValue, seq: change.originSeq)] = change.hlc.rawValue
        written.insert(RecordKey(table: change.table, id: change.recordID))
    }

    mutating func quarantined() { quarantineEmpty = false }
}

// Reading the change log: what goes upward to the parent (`upstreamBatch` and its
// backlog), the feed a node with a scope pulls (`feed`, `encodedFeed`: candidates by route,
// snapshots owed on route entry, the caller's own changes left out), counts and the head,
// and how log entries are read back (`fetchLogged`) and their trail written (`encodeTrail`).

import Foundation
import GRDB
import TiersyncCore

extension NodeStore {
    /// Changes to send upward: everything not received from the parent, after `seq`.
    /// Folded changes (NodeStore+FoldedState) come too when `seq` is below their positions:
    /// only after a parent restored from an older backup moved the push cursor back, since
    /// an entry is folded only once the parent acknowledged it.
    public func upstreamBatch(after seq: Int64, limit: Int) throws -> [LoggedChange] {
        try writer.read { db in
            var logged = try Self.fetchLogged(db, sql: """
                SELECT \(Self.loggedColumns) FROM ts_changes WHERE seq > ? AND source != 'parent' AND op != '\(Self.erasedOp)' ORDER BY seq LIMIT ?
                """, arguments: [seq, limit])
            guard try seq < highestFolded(db) else { return logged }
            // Folded records that send nothing upward (all their changes came from the
            // parent: a country's back-filled dealers) are scanned past, `limit` at a time,
            // up to the first logged change: a scan that stopped short with nothing to send
            // bounded the batch below every logged change, the batch came back empty, and
            // the push stalled there for good, spinning (helper 83: a country's cursor stuck
            // below 20,000 back-filled records, the dealer's re-sent write never sent).
            var folded = try foldedUpward(db, after: seq, limit: limit)
            while folded.entries.isEmpty, let through = folded.scannedThrough, through < (logged.first?.seq ?? .max) {
                folded = try foldedUpward(db, after: through, limit: limit)
            }
            // Both in position order up to where each is complete, then cut at `limit`
            // positions (a folded record's changes share its position: kept together).
            var bound = logged.count == limit ? logged.last!.seq : Int64.max
            if let through = folded.scannedThrough { bound = min(bound, through) }
            logged = (logged + folded.entries).filter { $0.seq <= bound }.sorted { $0.seq < $1.seq }
            var positions = 0, previous: Int64?
            return Array(logged.prefix { entry in
                if entry.seq != previous { positions += 1; previous = entry.seq }
                return positions <= limit
            })
        }
    }

    /// How many changes wait to go upward after `seq`.
    public func upstreamBacklog(after seq: Int64) throws -> Int {
        try writer.read { db in
            try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM ts_changes WHERE seq > ? AND source != 'parent' AND op != '\(Self.erasedOp)'", arguments: [seq]) ?? 0
        }
    }

    /// How many changes wait to go upward after `seq`, and when the oldest of them was
    /// written here (ms since the epoch, this node's clock), nil when none waits.
    public func upstreamLag(after seq: Int64) throws -> (pending: Int64, oldestReceivedMillis: UInt64?) {
        try writer.read { db in
            let pending = try Int64.fetchOne(db, sql: "SELECT COUNT(*) FROM ts_changes WHERE seq > ? AND source != 'parent' AND op != '\(Self.erasedOp)'", arguments: [seq]) ?? 0
            let oldest = try Int64.fetchOne(db, sql: """
                SELECT received_at FROM ts_changes WHERE seq > ? AND source != 'parent' AND op != '\(Self.erasedOp)' ORDER BY seq LIMIT 1
                """, arguments: [seq])
            return (pending, oldest.map { UInt64(max(0, $0)) })
        }
    }

    /// The newest log position of a change that goes upward (0 when none).
    public func lastUpstreamSeq() throws -> Int64 {
        try writer.read { db in
            try Int64.fetchOne(db, sql: "SELECT MAX(seq) FROM ts_changes WHERE source != 'parent' AND op != '\(Self.erasedOp)'") ?? 0
        }
    }

    /// One page of the change feed for a node with `scope`, after `cursor`, leaving out
    /// changes received from `excluding` (it has them: its own, and those it relayed).
    public func feed(after cursor: Int64, scope: Scope, excluding: NodeID?, limit: Int) async throws -> PullResponse {
        try await beginServingLogHistory()
        return try await writer.readReleasingConnection { db in
            let page = try self.feedPage(db, after: cursor, scope: scope, limit: limit)
            var entries: [(Int64, [Change])] = []
            try Self.forEachChunk(of: page.logged, excluding: excluding) { sql, _, arguments in
                entries += try Self.fetchLogged(db, sql: "SELECT \(Self.loggedColumns) " + sql, arguments: arguments).map { ($0.seq, [$0.change]) }
            }
            for (seq, key) in page.folded {
                entries.append((seq, try self.foldedChanges(db, key, scope: scope)))
            }
            let changes = entries.sorted { $0.0 < $1.0 }.flatMap(\.1)
            return PullResponse(changes: changes, nextCursor: page.next, more: page.more, head: page.head, history: try Self.newestLogHistory(db))
        }
    }

    /// The same page as ``feed(after:scope:excluding:limit:)``, already written as the
    /// wire's JSON (``WireEncoding/pullResponse(_:)``, byte for byte): the log keeps each
    /// change's fields, prior versions and trail as canonical JSON, which is copied into
    /// the page instead of being parsed and written again. A hub serves pulls this way.
    public func encodedFeed(after cursor: Int64, scope: Scope, excluding: NodeID?, limit: Int) async throws -> EncodedPullPage {
        // A log served to children records its histories from now on (NodeStore+LogHistory).
        try await beginServingLogHistory()
        return try await writer.readReleasingConnection { db in
            let page = try self.feedPage(db, after: cursor, scope: scope, limit: limit)
            var pieces: [(seq: Int64, json: String, count: Int)] = []
            try Self.forEachChunk(of: page.logged, excluding: excluding) { sql, placeholders, arguments in
                let rows = try Row.fetchCursor(Self.statement(db, "SELECT seq, origin, origin_seq, hlc, tbl, record_id, op, fields, prior, trail " + sql,
                                                              placeholders: placeholders), arguments: arguments)
                while let row = try rows.next() {
                    var json = ""
                    WireEncoding.storedChange(origin: row[1], seq: row[2], hlc: UInt64(bitPattern: row[3] as Int64), table: row[4],
                                              id: row[5], op: row[6], fields: row[7], prior: row[8], trail: row[9], into: &json)
                    pieces.append((row[0], json, 1))
                }
            }
            for (seq, key) in page.folded {
                let changes = try self.foldedChanges(db, key, scope: scope)
                guard !changes.isEmpty else { continue }
                var json = ""
                for (i, change) in changes.enumerated() {
                    if i > 0 { json += "," }
                    WireEncoding.storedChange(origin: change.origin.rawValue, seq: change.originSeq, hlc: change.hlc.rawValue, table: change.table,
                                              id: change.recordID, op: change.op.rawValue, fields: CanonicalJSON.object(change.fields),
                                              prior: nil, trail: nil, into: &json)
                }
                pieces.append((seq, json, changes.count))
            }
            if !page.folded.isEmpty { pieces.sort { $0.seq < $1.seq } }
            var out = "{\"changes\":["
            var count = 0
            for piece in pieces {
                if count > 0 { out += "," }
                out += piece.json
                count += piece.count
            }
            out += "],\"nextCursor\":\(page.next),\"more\":\(page.more ? "true" : "false"),\"head\":\(page.head)"
            // In the page's snapshot: a history begun later has a floor of at least its head.
            if let history = try Self.newestLogHistory(db), PullResponse.isValidHistory(history) { out += ",\"history\":\"\(history)\"" }
            out += "}"
            return EncodedPullPage(count: count, nextCursor: page.next, more: page.more, head: page.head, json: Array(out.utf8))
        }
    }

    /// Which positions a feed page covers: candidates first (the scope's log entries and
    /// folded records after the cursor, up to `limit`); `more` and the next cursor follow
    /// the candidates, so leaving out the caller's own changes afterwards skips nothing.
    /// `logged` adds the snapshots the candidates owe (``routeEntrySnapshots(_:after:through:scope:)``);
    /// `folded` are the positions of folded records (NodeStore+FoldedState), served from
    /// their state. A cursor past every folded position (any node that was fed before they
    /// were folded) costs one look-up more than the log alone.
    private func feedPage(_ db: Database, after cursor: Int64, scope: Scope, limit: Int) throws
        -> (logged: [Int64], folded: [(Int64, RecordKey)], next: Int64, more: Bool, head: Int64) {
        let log = try Self.feedCandidates(db, after: cursor, scope: scope, limit: limit)
        var logged = log.deliver
        var folded: [Int64: RecordKey] = [:]
        var (next, more) = (log.next, log.more)
        if try cursor < highestFolded(db) {
            // Folded records between the cursor and the end of the log's candidates, merged
            // with them in position order and cut at `limit`.
            let scan = try foldedCandidates(db, after: cursor, scope: scope, scan: max(limit, 1) * 4)
            var bound = log.more ? log.next : Int64.max
            if let through = scan.scannedThrough { bound = min(bound, through) }
            var merged = (logged.map { ($0, false) } + scan.records.keys.map { ($0, true) }).filter { $0.0 <= bound }.sorted { $0.0 < $1.0 }
            if merged.count > limit {
                merged = Array(merged.prefix(limit))
                bound = merged.last!.0
            }
            logged = merged.filter { !$0.1 }.map(\.0)
            for (seq, isFolded) in merged where isFolded { folded[seq] = scan.records[seq] }
            more = bound != .max
            next = more ? bound : max(cursor, log.head)
        }
        if let last = (logged + folded.keys).max() {
            let snapshots = try routeEntrySnapshots(db, after: cursor, through: last, scope: scope)
            if !snapshots.logged.isEmpty { logged = Array(snapshots.logged.union(logged)).sorted() }
            folded.merge(snapshots.folded) { a, _ in a }
        }
        return (logged, folded.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }, next, more, log.head)
    }

    /// The snapshot on route entry: for each change in `(cursor, through]` that routed a
    /// record to a node of `scope` that did not have it (no node of the scope was on its
    /// route before), the log positions of that record's earlier changes, and its folded
    /// position if entries of it were folded. The receiver de-duplicates them by identity,
    /// so it ends with every field of the record, not only those written since. One
    /// indexed query per page, then one per record entering the scope
    /// (`ts_changes_record`); nothing per ordinary change. The root (every record) never
    /// needs one.
    private func routeEntrySnapshots(_ db: Database, after cursor: Int64, through last: Int64, scope: Scope) throws
        -> (logged: Set<Int64>, folded: [Int64: RecordKey]) {
        guard let nodes = scope.nodes, !nodes.isEmpty else { return ([], [:]) }
        var args: [any DatabaseValueConvertible] = nodes.map(\.rawValue)
        args += [cursor, last]
        let entries = try Row.fetchAll(Self.statement(db, """
            SELECT DISTINCT seq, tbl, record_id, route_before FROM ts_route_entries
            WHERE node IN (\(databaseQuestionMarks(count: nodes.count))) AND seq > ? AND seq <= ?
            """, placeholders: nodes.count), arguments: StatementArguments(args))
        var logged: Set<Int64> = []
        var folded: [Int64: RecordKey] = [:]
        for entry in entries where !scope.contains(route: Self.parseRoute(entry[3])) {
            let (tbl, id): (String, String) = (entry[1], entry[2])
            logged.formUnion(try Int64.fetchAll(db.cachedStatement(sql: "SELECT seq FROM ts_changes WHERE tbl = ? AND record_id = ? AND seq < ?"),
                                                arguments: [tbl, id, entry[0] as Int64]))
            if let state = try self.folded(db, table: tbl, id: id) { folded[state.seq] = RecordKey(table: tbl, id: id) }
        }
        return (logged, folded)
    }

    private static func feedCandidates(_ db: Database, after cursor: Int64, scope: Scope, limit: Int) throws
        -> (deliver: [Int64], next: Int64, more: Bool, head: Int64) {
        // The highest position ever numbered, not the newest entry's: entries leave the log
        // (an eviction when a dealer moves away, a child's change its parent refused), and a
        // head gone back below a child's cursor read there as a parent restored from an older
        // backup (the child pulled everything again).
        let head = try Self.highestLogPosition(db)
        let candidates: [Int64]
        switch scope.nodes {
        case nil:
            candidates = try Int64.fetchAll(db.cachedStatement(sql: "SELECT seq FROM ts_changes WHERE seq > ? AND op != '\(erasedOp)' ORDER BY seq LIMIT ?"),
                                            arguments: [cursor, limit])
        case let nodes? where nodes.count == 1:
            // One node (a dealer): walk its route index directly.
            candidates = try Int64.fetchAll(db.cachedStatement(sql: "SELECT seq FROM ts_change_routes WHERE node = ? AND seq > ? ORDER BY seq LIMIT ?"),
                                            arguments: [nodes.first!.rawValue, cursor, limit])
        case let nodes?:
            // A subtree: walk the log in order, testing membership by index.
            var args: [any DatabaseValueConvertible] = [cursor]
            args += nodes.map(\.rawValue)
            args.append(limit)
            candidates = try Int64.fetchAll(statement(db, """
                SELECT seq FROM ts_changes c WHERE seq > ?
                  AND EXISTS (SELECT 1 FROM ts_change_routes r WHERE r.seq = c.seq AND r.node IN (\(databaseQuestionMarks(count: nodes.count))))
                ORDER BY seq LIMIT ?
                """, placeholders: nodes.count), arguments: StatementArguments(args))
        }
        let more = candidates.count == limit
        return (candidates, more ? candidates.last! : max(cursor, head), more, head)
    }

    /// A statement whose text has `placeholders` bound values in an `IN (…)` list: cached
    /// while the list is short (a dealer's scope is one node, and a pull of a running node
    /// reads a few changes), so the common pull prepares nothing. A fan-in profile at 1,000
    /// requests/s put ~4 % of the hub's CPU in preparing such statements (GRDB's authorizer
    /// alone). Longer lists are prepared per use: their texts vary with the count, and a
    /// connection's cache keeps every text it is given.
    static func statement(_ db: Database, _ sql: String, placeholders: Int) throws -> Statement {
        placeholders <= maxCachedPlaceholders ? try db.cachedStatement(sql: sql) : try db.makeStatement(sql: sql)
    }

    /// At most this many `IN (…)` values make a cached statement (``statement(_:_:placeholders:)``):
    /// each reading connection keeps at most this many texts per query shape.
    static let maxCachedPlaceholders = 8

    /// The `FROM … WHERE … ORDER BY` of reading the candidate rows, in chunks of bound
    /// parameters, without the changes received from `excluding`; with the chunk's count of
    /// `IN (…)` values.
    private static func forEachChunk(of candidates: [Int64], excluding: NodeID?,
                                     _ body: (String, Int, StatementArguments) throws -> Void) throws {
        let exclusion = excluding == nil ? "" : " AND (received_from IS NULL OR received_from != ?)"
        for start in stride(from: 0, to: candidates.count, by: 500) {
            let chunk = candidates[start..<min(start + 500, candidates.count)]
            var args: [any DatabaseValueConvertible] = Array(chunk)
            if let excluding { args.append(excluding.rawValue) }
            try body("FROM ts_changes WHERE seq IN (\(databaseQuestionMarks(count: chunk.count)))\(exclusion) ORDER BY seq",
                     chunk.count, StatementArguments(args))
        }
    }

    /// How many logged changes each origin node made (what this node holds of each).
    public func changeCountsByOrigin() throws -> [NodeID: Int] {
        try writer.read { db in
            Dictionary(uniqueKeysWithValues: try Row.fetchAll(db, sql: "SELECT origin, COUNT(*) AS n FROM ts_changes GROUP BY origin").map {
                (NodeID(unchecked: $0["origin"]), $0["n"] as Int)
            })
        }
    }

    /// The highest log position ever numbered (0 for a new log), what a pull reports as the
    /// head: it never goes back while entries leave the log, only with a store restored
    /// from a backup.
    public func headSeq() throws -> Int64 {
        try writer.read { db in try Self.highestLogPosition(db) }
    }

    /// The change-log columns ``fetchLogged(_:sql:arguments:)`` reads, in the order it
    /// reads them (by position: looking a column up by name lowercases the name each time,
    /// which was 3.5 % of a bootstrap).
    static let loggedColumns = loggedColumns(of: nil)

    static func loggedColumns(of alias: String?) -> String {
        ["seq", "origin", "origin_seq", "hlc", "tbl", "record_id", "op", "fields", "prior", "source", "received_from", "received_at", "trail"]
            .map { column in alias.map { "\($0).\(column)" } ?? column }.joined(separator: ", ")
    }

    /// Log entries selected as ``loggedColumns``.
    static func fetchLogged(_ db: Database, sql: String, arguments: StatementArguments) throws -> [LoggedChange] {
        var entries: [LoggedChange] = []
        let rows = try Row.fetchCursor(db, sql: sql, arguments: arguments)
        while let row = try rows.next() {
            let seq: Int64 = row[0]
            guard let fields = CanonicalJSON.parseFields(row[7]) else {
                throw StoreError.invalidArgument("corrupt fields in change log entry \(seq)")
            }
            let prior = (row[8] as String?).flatMap(CanonicalJSON.parseVersions) ?? [:]
            let trail = try (row[12] as String?).map { text in
                try WireDecoding.trail(text) ?? JSONDecoder().decode([Hop].self, from: Data(text.utf8))
            } ?? []
            let change = Change(origin: NodeID(unchecked: row[1]), originSeq: row[2],
                                hlc: HLCTimestamp(rawValue: UInt64(bitPattern: row[3] as Int64)),
                                table: row[4], recordID: row[5],
                                op: Change.Operation(rawValue: row[6]) ?? .upsert, fields: fields, prior: prior, trail: trail)
            entries.append(LoggedChange(seq: seq, change: change, source: ChangeSource(rawValue: row[9]) ?? .local,
                                        receivedFrom: (row[10] as String?).map(NodeID.init(unchecked:)),
                                        receivedAtMillis: UInt64(row[11] as Int64)))
        }
        return entries
    }

    static func encodeTrail(_ trail: [Hop]) -> String? { EncodedLogEntry.encodeTrail(trail) }
}

import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOSSL
import GRDB
import TiersyncAgent
import TiersyncCore
import TiersyncStore

/// N changes pushed in batches to one hub, end to end (HTTPS, gzip, validation, merge,
/// change log, route index), against a raw SQLite bulk insert of the same rows measured
/// in the same run: the ceiling.
struct Ingest: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Changes/s pushed to one hub, against the raw SQLite insert ceiling.")
    @Option(help: "Changes to push.") var changes = 200_000
    @Option(help: "Changes per push request.") var batch = 1_000
    @Option(help: "Dealers pushing at once (each its own node and log).") var dealers = 2
    @Flag(help: "The hub's writer checkpoints the log itself, inside its commits (SQLite's default; before 2026-12-02 the hub's too).")
    var writerCheckpoints = false
    @OptionGroup var common: CommonOptions

    private var checkpointing: WALCheckpointing { writerCheckpoints ? .byWriter : .byOwner }

    func run() async throws {
        quietLogs()
        let (dir, cleanup) = try common.workingDirectory("ingest")
        defer { cleanup() }
        header("ingest", [("changes", "\(changes)"), ("batch", "\(batch)"), ("dealers", "\(dealers)"), ("fields/change", "4"),
                            ("checkpoints", writerCheckpoints ? "by the writer" : "by the hub, beside the writer")])

        let hub = try await BenchHub.start(in: dir, checkpointing: checkpointing)
        var clients: [(NodeID, ParentClient)] = []
        for d in 0..<dealers {
            let node = NodeID(unchecked: "dealer-\(d)")
            clients.append((node, try hub.client(credential: try await hub.credential(tenant: "acme", node: node))))
        }
        let perDealer = changes / dealers
        let workloads = clients.map { node, _ in
            makeChanges(origin: node, count: perDealer, ids: { "\(node)-c\($0)" }, fields: { contactFields($0, owner: node) })
        }
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, (_, client)) in clients.enumerated() {
                let work = workloads[index]
                let batch = self.batch
                group.addTask {
                    for chunk in stride(from: 0, to: work.count, by: batch) {
                        let slice = Array(work[chunk..<min(chunk + batch, work.count)])
                        let response = try await client.push(PushRequest(through: slice.last!.originSeq, changes: slice))
                        guard response.rejected.isEmpty else { throw BenchError("hub refused: \(response.rejected[0].message)") }
                    }
                }
            }
            try await group.waitForAll()
        }
        let elapsed = elapsedSeconds(since: start)
        let total = perDealer * dealers
        let hq = try hub.stores.store(for: "acme")
        guard try hq.changeCountsByOrigin().values.reduce(0, +) == total else { throw BenchError("hub did not store every change") }
        for (_, client) in clients { try await client.shutdown() }
        await hub.stop()

        // The hub alone: the same kind of batches, encoded before the clock starts (agents
        // encode on their own machines), posted by a second set of dealers.
        let hubOnly = try await hubIngest(dir: dir + "/hub-only", perDealer: perDealer)

        let raw = try rawCeiling(rows: workloads.flatMap { $0 }, batch: batch, path: dir + "/raw.sqlite")
        let layout = try layoutCeiling(rows: workloads.flatMap { $0 }, batch: batch, path: dir + "/layout.sqlite")
        let rate = Double(total) / elapsed
        result("end to end (agents encode)", "\(format(rate)) changes/s (\(format(elapsed, 2)) s)", target: "≥ 50,000/s", met: rate >= 50_000)
        result("hub ingest (pre-encoded)", "\(format(hubOnly)) changes/s", target: "≥ 50,000/s", met: hubOnly >= 50_000)
        result("raw SQLite insert (ceiling)", "\(format(raw)) rows/s")
        result("ratio to ceiling", "\(format(rate / raw, 3)) end to end, \(format(hubOnly / raw, 3)) hub ingest", target: "≥ 0.5", met: hubOnly / raw >= 0.5)
        result("raw SQLite, the store's writes", "\(format(layout)) changes/s (\(format(layout / raw, 3)) of the ceiling)")
        result("ratio to the store's writes", "\(format(rate / layout, 3)) end to end, \(format(hubOnly / layout, 3)) hub ingest")
    }

    /// The rows a hub writes for each new record's change — log entry, route index entry,
    /// domain row with its versions and route — inserted raw into a store's own tables and indexes,
    /// with every value computed before the clock starts: what SQLite alone costs for the
    /// store's layout, without validation, merging, encoding, HTTP or TLS.
    private func layoutCeiling(rows: [Change], batch: Int, path: String) throws -> Double {
        do { _ = try NodeStore(path: path) }  // creates the tables, indexes and pragmas of a store
        struct Prepared { let change: Change; let fields: String; let versions: String; let owner: String }
        let prepared = rows.map { c in
            Prepared(change: c, fields: CanonicalJSON.object(c.fields),
                     versions: CanonicalJSON.groupedVersions(c.fields.mapValues { _ in c.version }),
                     owner: c.fields["owning_dealer"]?.stringValue ?? "")
        }
        var config = Configuration()
        config.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = NORMAL") }
        let pool = try DatabasePool(path: path, configuration: config)
        let now = Int64(WallClock.nowMillis())
        let start = ContinuousClock.now
        for chunk in stride(from: 0, to: prepared.count, by: batch) {
            try pool.write { db in
                let log = try db.cachedStatement(sql: """
                    INSERT INTO ts_changes (origin, origin_seq, hlc, tbl, record_id, op, fields, prior, source, received_from, received_at, trail)
                    VALUES (?, ?, ?, 'customers', ?, 'upsert', ?, NULL, 'child', ?, ?, ?)
                    """)
                let route = try db.cachedStatement(sql: "INSERT INTO ts_change_routes (node, seq) VALUES (?, ?)")
                let domain = try db.cachedStatement(sql: """
                    INSERT INTO customers (id, owning_dealer, last_name, phone, email, ts_versions, ts_route) VALUES (?, ?, ?, ?, ?, ?, ?)
                    """)
                for p in prepared[chunk..<min(chunk + batch, prepared.count)] {
                    let c = p.change, f = c.fields
                    try log.execute(arguments: [c.origin.rawValue, c.originSeq, Int64(bitPattern: c.hlc.rawValue), c.recordID, p.fields,
                                                c.origin.rawValue, now, "[{\"node\":\"hq\",\"at\":\(now)}]"])
                    try route.execute(arguments: [p.owner, db.lastInsertedRowID])
                    try domain.execute(arguments: [c.recordID, p.owner, f["last_name"]?.stringValue, f["phone"]?.stringValue, f["email"]?.stringValue,
                                                   p.versions, p.owner])
                }
            }
        }
        return Double(rows.count) / elapsedSeconds(since: start)
    }

    /// Changes/s the hub applies when request bodies arrive ready-made (gzip JSON exactly as
    /// agents send them).
    private func hubIngest(dir: String, perDealer: Int) async throws -> Double {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let hub = try await BenchHub.start(in: dir, checkpointing: checkpointing)
        var posts: [(url: String, credential: String, bodies: [ByteBuffer])] = []
        for d in 0..<dealers {
            let node = NodeID(unchecked: "dealer-\(d)")
            posts.append((hub.url, try await hub.credential(tenant: "acme", node: node), try Self.pushBodies(node: node, count: perDealer, batch: batch)))
        }
        let elapsed = try await Self.post(posts, caFile: hub.caFile)
        await hub.stop()
        return Double(perDealer * dealers) / elapsed
    }

    /// A dealer's `count` new contacts as the gzip push bodies its agent would send, `batch` per request.
    static func pushBodies(node: NodeID, count: Int, batch: Int) throws -> [ByteBuffer] {
        let work = makeChanges(origin: node, count: count, ids: { "\(node)-c\($0)" }, fields: { contactFields($0, owner: node) })
        return try stride(from: 0, to: work.count, by: batch).map { chunk in
            let slice = Array(work[chunk..<min(chunk + batch, work.count)])
            return try ParentClient.encodeBody(PushRequest(through: slice.last!.originSeq, changes: slice), compressAboveBytes: 1_024).bytes
        }
    }

    /// One gzipped push body to `url`; any answer but 200 fails the run.
    static func pushBody(_ http: HTTPClient, url: String, credential: String, body: ByteBuffer, timeout: TimeAmount) async throws {
        var request = HTTPClientRequest(url: url + "/v1/push")
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(credential)")
        request.headers.add(name: "Content-Encoding", value: "gzip")
        request.body = .bytes(body)
        let response = try await http.execute(request, timeout: timeout)
        let answer = try await response.body.collect(upTo: 1 << 20)
        guard response.status == .ok else { throw BenchError("hub answered \(response.status): \(String(buffer: answer).prefix(300))") }
    }

    /// Posts every node's bodies in order (the nodes at once), each to its hub URL; returns
    /// the seconds it took. Any answer but 200 fails the run.
    static func post(_ posts: [(url: String, credential: String, bodies: [ByteBuffer])], caFile: String) async throws -> Double {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .file(caFile)
        let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tls))
        let start = ContinuousClock.now
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (url, credential, bodies) in posts {
                    group.addTask {
                        for body in bodies { try await pushBody(http, url: url, credential: credential, body: body, timeout: .seconds(120)) }
                    }
                }
                try await group.waitForAll()
            }
        } catch {
            try? await http.shutdown()
            throw error
        }
        let elapsed = elapsedSeconds(since: start)
        try await http.shutdown()
        return elapsed
    }

    /// The same rows (id and field values) inserted into a plain table in WAL mode, in
    /// transactions of `batch` rows with one prepared statement: what SQLite alone does.
    private func rawCeiling(rows: [Change], batch: Int, path: String) throws -> Double {
        var config = Configuration()
        config.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = NORMAL") }
        let pool = try DatabasePool(path: path, configuration: config)
        try pool.write { db in
            try db.execute(sql: "CREATE TABLE customers (id TEXT PRIMARY KEY NOT NULL, owning_dealer TEXT, last_name TEXT, phone TEXT, email TEXT)")
        }
        let start = ContinuousClock.now
        for chunk in stride(from: 0, to: rows.count, by: batch) {
            try pool.write { db in
                let statement = try db.cachedStatement(sql: "INSERT INTO customers (id, owning_dealer, last_name, phone, email) VALUES (?, ?, ?, ?, ?)")
                for change in rows[chunk..<min(chunk + batch, rows.count)] {
                    let f = change.fields
                    try statement.execute(arguments: [change.recordID, f["owning_dealer"]?.stringValue, f["last_name"]?.stringValue,
                                                      f["phone"]?.stringValue, f["email"]?.stringValue])
                }
            }
        }
        return Double(rows.count) / elapsedSeconds(since: start)
    }
}

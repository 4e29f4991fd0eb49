import ArgumentParser
import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOSSL
import PostgresNIO
import TiersyncAgent
import TiersyncCore
import TiersyncPostgres
import TiersyncStore

/// The hub on PostgreSQL beside SQLite, in one run: ingest (pre-encoded pushes) and fan-in
/// (K agents syncing) against `tiersync hub serve` processes — SQLite, PostgreSQL with one
/// process, PostgreSQL with two — and PostgreSQL's own ceiling (a raw multi-row insert of
/// the same rows). Every hub is a child process (`tiersync` beside this executable), so the
/// engines are compared alike; with two processes the nodes are split between them, as a
/// round-robin balancer would.
struct PostgresBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "postgres",
                                                    abstract: "Ingest and fan-in with the hub on PostgreSQL (one and two processes) beside SQLite, and PostgreSQL's raw insert ceiling.")
    @Option(help: "A PostgreSQL server (postgres://USER@HOST:PORT/DATABASE); each measurement uses a fresh database on it, dropped afterwards. Default: $TIERSYNC_TEST_POSTGRES_URL.")
    var postgres: String?
    @Option(help: "Changes pushed per ingest measurement.") var changes = 100_000
    @Option(help: "Changes per push request.") var batch = 1_000
    @Option(help: "Dealers pushing at once.") var dealers = 4
    @Option(help: "Simulated agents for fan-in (0: skip fan-in).") var agents = 1_000
    @Option(help: "Seconds of each fan-in run.") var seconds = 20.0
    @Option(help: "Seconds between one agent's syncs.") var interval = 2.0
    @Option(help: "The tiersync executable the hubs run (default: beside this one).") var tiersync: String?
    @Option(help: "Which hub set-ups fan-in measures, comma-separated, of sqlite1, pg1, pg2 (default: all three).") var setups = "sqlite1,pg1,pg2"
    @Flag(help: "Measure fan-in only (no ingest, no raw ceiling).") var fanInOnly = false
    @Option(help: "The simulated agents' HTTP side in fan-in: lean or agent (see `fan-in --help`).") var client: FanInClient = .lean
    @OptionGroup var common: CommonOptions

    func run() async throws {
        quietLogs()
        guard let url = postgres ?? ProcessInfo.processInfo.environment["TIERSYNC_TEST_POSTGRES_URL"] else {
            throw ValidationError("give --postgres URL (or set TIERSYNC_TEST_POSTGRES_URL): ops/postgres/test-cluster.sh start DIR prints one")
        }
        let server = try PostgresEndpoint(url: url)
        let binary = try tiersyncExecutable(tiersync)
        let (dir, cleanup) = try common.workingDirectory("postgres")
        defer { cleanup() }
        // "×N": N hub processes.
        header("postgres", [("changes", "\(changes)"), ("batch", "\(batch)"), ("dealers", "\(dealers)"), ("fan-in agents", "\(agents)"), ("agents' client", client.rawValue),
                            ("hubs", "tiersync hub serve processes"), ("server", server.description)])
        let perDealer = changes / dealers
        var bodies: [[ByteBuffer]] = []
        for d in 0..<dealers { bodies.append(try Ingest.pushBodies(node: NodeID(unchecked: "dealer-\(d)"), count: perDealer, batch: batch)) }
        let total = Double(perDealer * dealers)

        let chosen = Set(setups.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
        guard !chosen.isEmpty, chosen.isSubset(of: ["sqlite1", "pg1", "pg2"]) else { throw ValidationError("--setups takes sqlite1, pg1 and pg2, comma-separated") }
        if !fanInOnly { try await measureIngest(binary: binary, server: server, dir: dir, bodies: bodies, total: total, perDealer: perDealer) }

        // Fan-in.
        guard agents > 0 else { return }
        for (engine, count) in [(HubEngine.sqlite, 1), (.postgres, 1), (.postgres, 2)] where chosen.contains((engine == .sqlite ? "sqlite" : "pg") + "\(count)") {
            let label = "\(engine == .sqlite ? "SQLite" : "PG") ×\(count) "
            let figures = try await withHubs(engine, count: count, binary: binary, server: server, dir: dir + "/fan-in-\(engine)-\(count)") { hubs in
                var targets: [(url: String, node: NodeID, credential: String)] = []
                for a in 0..<agents {
                    let node = NodeID(unchecked: "a-\(a)")
                    targets.append((hubs.urls[a % hubs.urls.count], node, try await hubs.credential(node)))
                }
                return await FanIn.measure(targets: targets, caFile: hubs.caFile, seconds: seconds, interval: interval, hubPIDs: hubs.pids,
                                           client: client)
            }
            figures.report(agents: agents, seconds: seconds, interval: interval, label: label)
        }
    }

    /// Ingest on every set-up and the raw ceiling; the ratios printed.
    private func measureIngest(binary: String, server: PostgresEndpoint, dir: String, bodies: [[ByteBuffer]], total: Double, perDealer: Int) async throws {
        // The ceiling moved by up to half between runs when measured once, after the
        // ingests: measured before them too, and the ratio taken against the higher.
        let rawBefore = try await rawCeiling(server: server, perDealer: perDealer)
        let sqlite = try await withHubs(.sqlite, count: 1, binary: binary, server: server, dir: dir + "/ingest-sqlite") { hubs in
            try await ingest(hubs, bodies: bodies)
        }
        result("ingest SQLite ×1", "\(format(total / sqlite)) changes/s")
        let pg1 = try await withHubs(.postgres, count: 1, binary: binary, server: server, dir: dir + "/ingest-pg1") { hubs in
            try await ingest(hubs, bodies: bodies)
        }
        result("ingest PostgreSQL ×1", "\(format(total / pg1)) changes/s")
        let pg2 = try await withHubs(.postgres, count: 2, binary: binary, server: server, dir: dir + "/ingest-pg2") { hubs in
            try await ingest(hubs, bodies: bodies)
        }
        result("ingest PostgreSQL ×2", "\(format(total / pg2)) changes/s (\(format(pg1 / pg2, 2))× one process)")
        let rawAfter = try await rawCeiling(server: server, perDealer: perDealer)
        let raw = max(rawBefore, rawAfter)
        result("PostgreSQL raw insert", "\(format(raw)) rows/s (the same rows, \(batch) per multi-row INSERT, one transaction each; the higher of \(format(rawBefore)) before the ingests and \(format(rawAfter)) after)")
        let ratio = (total / pg1) / raw
        result("PostgreSQL ×1 ÷ raw", format(ratio, 3), target: "≥ 0.3", met: ratio >= 0.3)
        result("PostgreSQL ×1 ÷ SQLite ×1", format((total / pg1) / (total / sqlite), 3))
        let rawHub = try await rawCeilingInHubTables(server: server, perDealer: perDealer)
        result("raw insert, hub's tables", "\(format(rawHub)) changes/s (per change its log row, route row and record row, into a tenant schema's tables and indexes, \(batch) per statement)")
        result("PostgreSQL ×1 ÷ that", format((total / pg1) / rawHub, 3))
    }

    /// Seconds to post every dealer's bodies, dealers split over the hubs.
    private func ingest(_ hubs: Hubs, bodies: [[ByteBuffer]]) async throws -> Double {
        var posts: [(url: String, credential: String, bodies: [ByteBuffer])] = []
        for (d, dealerBodies) in bodies.enumerated() {
            posts.append((hubs.urls[d % hubs.urls.count], try await hubs.credential(NodeID(unchecked: "dealer-\(d)")), dealerBodies))
        }
        return try await Ingest.post(posts, caFile: hubs.caFile)
    }

    /// Rows/s of PostgreSQL alone: the same rows as the change log keeps them (identity,
    /// stamp, record, fields as canonical JSON), `batch` per multi-row insert, each its own
    /// transaction, into a table with the log's unique identity.
    private func rawCeiling(server: PostgresEndpoint, perDealer: Int) async throws -> Double {
        try await withFreshDatabase(server) { endpoint in
            try await withPostgresClient(endpoint) { client in
                let logger = Logger(label: "tiersync.bench")
                try await client.query("""
                    CREATE TABLE raw (origin TEXT NOT NULL, origin_seq BIGINT NOT NULL, hlc BIGINT NOT NULL, tbl TEXT NOT NULL,
                                      record_id TEXT NOT NULL, fields TEXT NOT NULL, PRIMARY KEY (origin, origin_seq))
                    """, logger: logger)
                var rows: [Change] = []
                for d in 0..<dealers {
                    let node = NodeID(unchecked: "dealer-\(d)")
                    rows += makeChanges(origin: node, count: perDealer, ids: { "\(node)-c\($0)" }, fields: { contactFields($0, owner: node) })
                }
                let start = ContinuousClock.now
                for chunk in stride(from: 0, to: rows.count, by: batch) {
                    let slice = rows[chunk..<min(chunk + batch, rows.count)]
                    try await client.query("""
                        INSERT INTO raw SELECT * FROM unnest(\(slice.map(\.origin.rawValue))::text[], \(slice.map(\.originSeq))::int8[],
                          \(slice.map { Int64(bitPattern: $0.hlc.rawValue) })::int8[], \(slice.map(\.table))::text[], \(slice.map(\.recordID))::text[],
                          \(slice.map { CanonicalJSON.object($0.fields) })::text[])
                        """, logger: logger)
                }
                return Double(rows.count) / elapsedSeconds(since: start)
            }
        }
    }
}

extension PostgresBench {
    /// Changes/s of PostgreSQL alone storing what the hub stores of each change — its log
    /// row, its route row (the owning dealer) and its record row — into a tenant schema's own
    /// tables, with their indexes and constraints, `batch` changes per statement (three
    /// inserts through data-modifying CTEs), each its own transaction: the cost that is
    /// PostgreSQL's whatever the hub does.
    private func rawCeilingInHubTables(server: PostgresEndpoint, perDealer: Int) async throws -> Double {
        try await withFreshDatabase(server) { endpoint in
            try await withPostgresClient(endpoint) { client in
                let logger = Logger(label: "tiersync.bench")
                // The tenant's schema, made as the hub makes it.
                _ = try await PostgresTenantStore(client: client, tenant: "acme", rootOf: { _ in "hq" }).feedHead()
                let schema = PostgresTenantSchema(tenant: "acme")
                var rows: [Change] = []
                for d in 0..<dealers {
                    let node = NodeID(unchecked: "dealer-\(d)")
                    rows += makeChanges(origin: node, count: perDealer, ids: { "\(node)-c\($0)" }, fields: { contactFields($0, owner: node) })
                }
                var next: Int64 = 0
                let start = ContinuousClock.now
                for chunk in stride(from: 0, to: rows.count, by: batch) {
                    let slice = Array(rows[chunk..<min(chunk + batch, rows.count)])
                    let seqs = slice.indices.map { next + Int64($0) + 1 }
                    next += Int64(slice.count)
                    let origins = slice.map(\.origin.rawValue)
                    let fields = slice.map { CanonicalJSON.object($0.fields) }
                    let versions = slice.map { c in "{\"\(c.hlc)\":[" + c.fields.keys.sorted().map { "\"\($0)\"" }.joined(separator: ",") + "]}" }
                    let at = Int64(WallClock.nowMillis())
                    _ = try await client.query("""
                        WITH log AS (
                          INSERT INTO \(unescaped: schema.qualified(.changes)) (seq, origin, origin_seq, hlc, tbl, record_id, op, fields, source, received_from, received_at)
                          SELECT s, o, os, h, t, i, 'upsert', f, 'child', o, \(at) FROM unnest(\(seqs)::int8[], \(origins)::text[], \(slice.map(\.originSeq))::int8[],
                            \(slice.map { Int64(bitPattern: $0.hlc.rawValue) })::int8[], \(slice.map(\.table))::text[], \(slice.map(\.recordID))::text[],
                            \(fields)::text[]) AS u(s, o, os, h, t, i, f)),
                        routes AS (
                          INSERT INTO \(unescaped: schema.qualified(.changeRoutes)) (node, seq) SELECT * FROM unnest(\(origins)::text[], \(seqs)::int8[])),
                        rec AS (
                          INSERT INTO \(unescaped: schema.qualified(.records)) (tbl, id, fields, versions, route, live)
                          SELECT *, true FROM unnest(\(slice.map(\.table))::text[], \(slice.map(\.recordID))::text[], \(fields)::text[],
                            \(versions)::text[], \(origins)::text[]))
                        SELECT 1
                        """, logger: logger).collect()
                }
                return Double(rows.count) / elapsedSeconds(since: start)
            }
        }
    }
}

enum HubEngine: Equatable { case sqlite, postgres }

/// Hub processes serving one store, with the means to register nodes in its catalog.
struct Hubs: Sendable {
    let urls: [String]
    let caFile: String
    let credential: @Sendable (NodeID) async throws -> String
    /// A credential for `node` of another tenant of the catalog (made on first use).
    var credentialIn: @Sendable (_ tenant: TenantID, NodeID) async throws -> String = { _, _ in throw BenchError("no catalog") }
    /// The `tiersync hub serve` processes' ids (for the CPU account).
    var pids: [Int32] = []
}

/// The `tiersync` executable hub processes run: `given`, or the one beside this bench.
func tiersyncExecutable(_ given: String?) throws -> String {
    let binary = given ?? URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("tiersync").path
    guard FileManager.default.isExecutableFile(atPath: binary) else {
        throw ValidationError("no tiersync executable at \(binary): build it in the same configuration (swift build -c release --product tiersync)")
    }
    return binary
}

/// Runs `body` with `count` `tiersync hub serve` processes on `engine` (PostgreSQL: a fresh
/// database on `server`), stopped (and the database dropped) afterwards.
func withHubs<T: Sendable>(_ engine: HubEngine, count: Int, binary: String, server: PostgresEndpoint, dir: String, tenants: [TenantID] = ["acme"],
                           _ body: (Hubs) async throws -> T) async throws -> T {
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    func serve(_ store: [String]) async throws -> T {
        var processes: [Process] = []
        defer {
            for p in processes where p.isRunning { p.terminate() }
            for p in processes { p.waitUntilExit() }
        }
        var urls: [String] = []
        for i in 0..<count {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = ["hub", "serve"] + store + ["--dev-certs", dir + "/pki", "--port", "0", "--log-level", "error"]
            let log = dir + "/hub-\(i).log"
            _ = FileManager.default.createFile(atPath: log, contents: nil)
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
            process.standardOutput = handle
            process.standardError = handle
            try process.run()
            processes.append(process)
            // One at a time: the first creates the development CA the others serve from.
            urls.append(try await announcedURL(log: log, process: process))
        }
        let maker = credentialMaker
        var hubs = Hubs(urls: urls, caFile: dir + "/pki/ca.pem", credential: { try await maker("acme", $0) }, pids: processes.map(\.processIdentifier))
        hubs.credentialIn = maker
        return try await body(hubs)
    }
    var credentialMaker: @Sendable (TenantID, NodeID) async throws -> String = { _, _ in throw BenchError("no catalog") }
    switch engine {
    case .sqlite:
        let catalog = try HubCatalog(directory: dir + "/hub")
        for tenant in tenants { _ = try catalog.createTenant(tenant) }
        credentialMaker = { tenant, node in try await catalog.redeem(token: try catalog.issueEnrollmentToken(tenant: tenant, node: node)).credential }
        return try await serve(["--data", dir + "/hub"])
    case .postgres:
        return try await withFreshDatabase(server) { endpoint in
            try await withPostgresClient(endpoint) { client in
                let catalog = try await PostgresCatalog(client: client)
                for tenant in tenants { _ = try await catalog.createTenant(tenant) }
                credentialMaker = { tenant, node in try await catalog.redeem(token: try await catalog.issueEnrollmentToken(tenant: tenant, node: node)).credential }
                return try await serve(["--postgres", endpoint.url])
            }
        }
    }
}

/// The URL a `hub serve` process announces once it listens.
private func announcedURL(log: String, process: Process) async throws -> String {
    let deadline = ContinuousClock.now + .seconds(60)
    while ContinuousClock.now < deadline {
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        if let line = text.split(separator: "\n").first(where: { $0.contains("https://127.0.0.1:") }),
           let range = line.range(of: #"https://127\.0\.0\.1:[0-9]+"#, options: .regularExpression) {
            return String(line[range])
        }
        guard process.isRunning else { throw BenchError("hub exited: \(text)") }
        try await Task.sleep(for: .milliseconds(50))
    }
    throw BenchError("hub did not announce its URL within 60 s (\(log))")
}

/// A fresh database on `server` for `body`, dropped afterwards.
func withFreshDatabase<T: Sendable>(_ server: PostgresEndpoint, _ body: (PostgresEndpoint) async throws -> T) async throws -> T {
    let name = "tiersync_bench_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(12).lowercased()
    return try await withPostgresClient(server) { admin in
        try await admin.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \"\(name)\""))
        let outcome: Result<T, any Error>
        do { outcome = .success(try await body(server.with(database: name))) } catch { outcome = .failure(error) }
        _ = try? await admin.query(PostgresQuery(unsafeSQL: "DROP DATABASE IF EXISTS \"\(name)\" WITH (FORCE)"))
        return try outcome.get()
    }
}

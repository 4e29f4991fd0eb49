import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOSSL
import Synchronization
import TiersyncAgent
import TiersyncCore
import TiersyncServer
import TiersyncStore

/// N generated and mutated requests against a real hub over TLS on loopback, from several
/// concurrent clients with valid (and some wrong or missing) credentials: valid pushes
/// interleaved with mutated, garbage, oversized, deeply nested, gzip-broken,
/// foreign-origin and absurd-sequence bodies, bad query strings on pull, other tenants,
/// other methods. It reports the answers by status and by kind of request, and fails on
/// any 5xx, on the hub going down (health checks during and after), and on data lost:
/// every valid change the hub acknowledged as applied must be in the tenant's store with
/// the values sent, and the other tenant's data must be untouched.
struct Hostile: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "N generated and mutated requests against a hub: 0 5xx, the hub stays up, no data lost.")
    @Option(help: "Requests to send.") var requests = 100_000
    @Option(help: "Concurrent clients (each its own HTTPS connections).") var clients = 8
    @Option(help: "Dealers of tenant acme whose credentials send the load.") var dealers = 8
    @Option(help: "Seed for the generated requests (default: random, printed).") var seed: UInt64?
    @OptionGroup var common: CommonOptions

    func run() async throws {
        quietLogs()
        let seed = self.seed ?? UInt64.random(in: 0...UInt64.max)
        let (dir, cleanup) = try common.workingDirectory("hostile")
        defer { cleanup() }
        header("hostile", [("requests", format(Double(requests))), ("clients", "\(clients)"), ("dealers", "\(dealers) of acme + 2 of globex"),
                           ("seed", "\(seed)")])
        // One credential per dealer sends what thousands of nodes would: the per-node
        // admission limits are lifted, the body limits are the production ones.
        let limits = HubConfiguration.Limits.unthrottled
        print("limits:  RAISED for this load: \(format(limits.requestsPerSecond)) requests/s per node (production \(format(HubConfiguration.Limits().requestsPerSecond))), "
              + "burst \(format(limits.requestBurst)), \(limits.maxConcurrentRequestsPerNode) requests and \(limits.maxConcurrentPushesPerNode) pushes in flight per node, "
              + "anonymous \(format(limits.anonymousRequestsPerSecond))/s per address; body limits as in production: "
              + "\(limits.maxRequestBytes) bytes sent, \(limits.maxDecompressedBytes) decompressed, \(limits.maxChangesPerPush) changes per push")
        print("compaction: every second (production: every minute)")

        // Compaction every second, so even a short run purges while it pushes: a redelivery
        // of a purged change must stay a duplicate, and nothing acknowledged may be dropped
        // as one (a watermark did that once: 202,524 changes of a 100,000-request run).
        let hub = try await BenchHub.start(in: dir, limits: limits, retention: RetentionPolicy(interval: .seconds(1)))
        var acme: [(node: NodeID, credential: String)] = []
        for d in 0..<dealers {
            let node = NodeID(unchecked: "d\(d)")
            acme.append((node, try await hub.credential(tenant: "acme", node: node)))
        }
        var globex: [(node: NodeID, credential: String)] = []
        for node in ["g1", "g2"] as [NodeID] {
            globex.append((node, try await hub.credential(tenant: "globex", node: node)))
        }
        let fixed = try FixedBodies.make()
        let http = HostileHTTP(baseURL: hub.url, caFile: hub.caFile)

        // The other tenant's data, before the load.
        let g1 = globex[0]
        for batch in 0..<4 {
            let changes = makeChanges(origin: g1.node, count: 50, firstSeq: Int64(batch * 50 + 1), ids: { "g-\(batch)-\($0)" },
                                      fields: { contactFields($0, owner: g1.node) })
            let reply = await http.send(HostileRequest(kind: "setup", method: "POST", path: "/v1/push",
                                                       body: WireEncoding.pushRequest(PushRequest(through: changes.last!.originSeq, changes: changes)),
                                                       credential: g1.credential))
            guard reply.status == 200 else { throw BenchError("could not seed tenant globex: \(reply.status.map(String.init) ?? reply.error ?? "?")") }
        }
        let globexStore = try hub.stores.store(for: "globex")
        let globexBefore = (digest: try globexStore.digest(), counts: try globexStore.counts())

        let plan = HostilePlan(seed: seed, acme: acme, globex: globex, fixed: fixed)
        let recorder = HostileRecorder()
        let next = HostileFlags()
        let total = requests
        let loadDone = next
        let start = ContinuousClock.now

        // Health checks while the load runs.
        let health = HostileHTTP(baseURL: hub.url, caFile: hub.caFile)
        let monitor = Task {
            var ok = 0, failed = 0
            while !loadDone.done.load(ordering: .relaxed) {
                let reply = await health.send(HostileRequest(kind: "health", method: "GET", path: "/v1/health"))
                if reply.status == 200 { ok += 1 } else { failed += 1 }
                try? await Task.sleep(for: .milliseconds(250))
            }
            return (ok, failed)
        }

        await withTaskGroup(of: Void.self) { group in
            for worker in 0..<clients {
                group.addTask {
                    let client = HostileHTTP(baseURL: hub.url, caFile: hub.caFile)
                    var lastAcked: HostileRequest?
                    while true {
                        let index = next.index.add(1, ordering: .relaxed).oldValue
                        if index >= total { break }
                        var request = plan.request(index, worker: worker)
                        if request.kind == "redelivery" {
                            // This client's last acknowledged push, again: all duplicates.
                            if let again = lastAcked {
                                request = again
                                request.kind = "redelivery"
                            } else {
                                request = plan.request(index, worker: worker, forceValid: true)
                            }
                        }
                        let reply = await client.send(request)
                        recorder.record(request, reply)
                        if request.kind == "valid push", reply.status == 200 { lastAcked = request }
                        if index > 0, index % max(1, total / 10) == 0 {
                            print("  … \(format(Double(index))) requests (\(format(Double(index) / elapsedSeconds(since: start))) /s)")
                        }
                    }
                    await client.shutdown()
                }
            }
        }
        let elapsed = elapsedSeconds(since: start)
        loadDone.done.store(true, ordering: .relaxed)
        let (healthOK, healthFailed) = await monitor.value

        // After the load: the hub still answers, and nothing acknowledged was lost.
        var healthAfter = 0
        for _ in 0..<3 {
            if await health.send(HostileRequest(kind: "health", method: "GET", path: "/v1/health")).status == 200 { healthAfter += 1 }
        }
        let probe = makeChanges(origin: acme[0].node, count: 1, firstSeq: 900_000_000, ids: { _ in "after-load" }, fields: { contactFields($0, owner: acme[0].node) })
        let afterPush = await health.send(HostileRequest(kind: "after", method: "POST", path: "/v1/push",
                                                         body: WireEncoding.pushRequest(PushRequest(through: 900_000_000, changes: probe)),
                                                         credential: acme[0].credential))
        await health.shutdown()
        await http.shutdown()

        let acmeStore = try hub.stores.store(for: "acme")
        let live = Dictionary(try acmeStore.liveRecords(table: "customers").map { ($0.id, $0.values) }) { a, _ in a }
        let acked = recorder.acked.withLock { $0 }
        var missing: [String] = [], altered: [String] = []
        for change in acked {
            guard let values = live[change.recordID] else { missing.append("\(change.origin)#\(change.originSeq) \(change.recordID)"); continue }
            for (name, value) in change.fields where values[name] != value { altered.append("\(change.recordID).\(name)"); break }
        }
        // A refused change is quarantined under its pusher only: a dealer's subtree is itself.
        let poisoned = try acmeStore.quarantined(limit: 1_000_000).filter { $0.origin != $0.receivedFrom }.map { "\($0.origin)#\($0.originSeq) quarantined from \($0.receivedFrom): \($0.code)" }
            + (try acmeStore.changeCountsByOrigin()).filter { !acme.map(\.node).contains($0.key) }.map { "\($0.value) changes of \($0.key) in acme's log" }
        let globexAfter = (digest: try globexStore.digest(), counts: try globexStore.counts())
        await hub.stop()

        // The report.
        let stats = recorder.snapshot()
        let answered = stats.byStatus.values.reduce(0, +)
        result("requests", "\(format(Double(total))) in \(format(elapsed, 1)) s = \(format(Double(total) / elapsed)) requests/s (\(clients) clients)")
        result("answered", "\(format(Double(answered))); no answer (connection error/timeout): \(format(Double(stats.errors.values.reduce(0, +))))")
        result("by status", stats.byStatus.sorted { $0.key < $1.key }.map { "\($0.key): \(format(Double($0.value)))" }.joined(separator: ", "))
        let fiveXX = stats.byStatus.filter { $0.key >= 500 }.values.reduce(0, +)
        result("5xx", "\(fiveXX)", target: "0", met: fiveXX == 0)
        let up = healthFailed == 0 && healthAfter == 3 && afterPush.status == 200
        result("hub stayed up", up ? "yes" : "NO", target: "yes", met: up)
        result("  health during the load", "\(healthOK) ok, \(healthFailed) failed (every 250 ms)")
        result("  after the load", "health \(healthAfter)/3 ok, a valid push answered \(afterPush.status.map(String.init) ?? afterPush.error ?? "nothing")")
        let lost = missing.count + altered.count
        result("valid changes acknowledged", "\(format(Double(acked.count))) applied in \(format(Double(stats.validAcked))) pushes answered 200 (\(stats.validNotAcked) valid pushes not acknowledged"
               + (stats.validNotAckedReasons.isEmpty ? "" : ": " + stats.validNotAckedReasons.map { "\($0.value) × \($0.key)" }.joined(separator: ", ")) + ")")
        result("no data lost", lost == 0 ? "all \(format(Double(acked.count))) acknowledged changes present with their values" : "\(missing.count) missing, \(altered.count) altered",
               target: "0 lost", met: lost == 0)
        result("redelivered pushes", "\(stats.redeliveries), all answered 200 with every change a duplicate: "
               + (stats.redeliveryMismatches == 0 ? "yes" : "NO (\(stats.redeliveryMismatches); e.g. \(stats.redeliveryExample ?? ""))"),
               target: "yes", met: stats.redeliveryMismatches == 0)
        let untouched = globexAfter.digest == globexBefore.digest && globexAfter.counts == globexBefore.counts
        result("other tenant untouched", untouched ? "yes (globex: \(globexAfter.counts.records["customers"] ?? 0) records, \(globexAfter.counts.changes) changes, digest unchanged)"
                                                 : "NO: before \(globexBefore.counts) \(globexBefore.digest.prefix(12)), after \(globexAfter.counts) \(globexAfter.digest.prefix(12))",
               target: "yes", met: untouched)
        result("no foreign trace", poisoned.isEmpty ? "acme's log and quarantine hold changes of the pushing dealer only" : "\(poisoned.count) traces",
               target: "0", met: poisoned.isEmpty)
        print("  by kind of request (status: count):")
        for (kind, statuses) in stats.byKind.sorted(by: { $0.key < $1.key }) {
            let errors = stats.errorsByKind[kind].map { ", no answer: \($0)" } ?? ""
            print("    \(kind.padding(toLength: 26, withPad: " ", startingAt: 0)) "
                  + statuses.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ") + errors)
        }
        for (error, count) in stats.errors.sorted(by: { $0.value > $1.value }).prefix(5) { print("  no answer: \(count) × \(error)") }
        for example in stats.fiveXXExamples { print("  5xx: \(example)") }
        for m in missing.prefix(5) { print("  missing: \(m)") }
        for a in altered.prefix(5) { print("  altered: \(a)") }
        for p in poisoned.prefix(5) { print("  foreign trace: \(p)") }
        if fiveXX > 0 || !up || lost > 0 || !untouched || !poisoned.isEmpty || stats.redeliveryMismatches > 0 {
            throw BenchError("hostile: \(fiveXX) 5xx, hub up: \(up), \(lost) changes lost, other tenant untouched: \(untouched), \(poisoned.count) foreign traces, \(stats.redeliveryMismatches) redeliveries not all duplicates")
        }
    }
}

// MARK: Requests

/// The next request's index, and whether the load is over, shared by the clients.
final class HostileFlags: Sendable {
    let index = Atomic<Int>(0)
    let done = Atomic<Bool>(false)
}

struct HostileRequest: Sendable {
    var kind: String
    var method: String
    var path: String
    var body: [UInt8]? = nil
    var headers: [(String, String)] = []
    var credential: String? = nil
    /// For a valid push: its changes, to find them in the store afterwards.
    var tracked: [Change] = []
}

struct HostileReply: Sendable {
    var status: Int?
    var body: [UInt8] = []
    var error: String?
}

/// A raw HTTPS client trusting the hub's CA: exact bytes, exact headers.
final class HostileHTTP: Sendable {
    let http: HTTPClient
    let baseURL: String

    init(baseURL: String, caFile: String) {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .file(caFile)
        tls.shutdownTimeout = .seconds(1)
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tls))
        self.baseURL = baseURL
    }

    func send(_ r: HostileRequest) async -> HostileReply {
        var request = HTTPClientRequest(url: baseURL + r.path)
        request.method = .init(rawValue: r.method)
        if let credential = r.credential { request.headers.add(name: "Authorization", value: credential.hasPrefix("raw:") ? String(credential.dropFirst(4)) : "Bearer \(credential)") }
        for (name, value) in r.headers { request.headers.add(name: name, value: value) }
        if let body = r.body {
            if !r.headers.contains(where: { $0.0.lowercased() == "content-type" }) { request.headers.add(name: "Content-Type", value: "application/json") }
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        do {
            let response = try await http.execute(request, timeout: .seconds(120))
            let bytes = try await response.body.collect(upTo: 64 * 1024 * 1024)
            return HostileReply(status: Int(response.status.code), body: Array(bytes.readableBytesView))
        } catch {
            return HostileReply(status: nil, error: "\(type(of: error)): \(String(describing: error).prefix(120))")
        }
    }

    func shutdown() async { try? await http.shutdown() }
}

/// Counts of what came back, shared by the clients.
final class HostileRecorder: Sendable {
    struct Stats {
        var byStatus: [Int: Int] = [:]
        var byKind: [String: [Int: Int]] = [:]
        var errors: [String: Int] = [:]
        var errorsByKind: [String: Int] = [:]
        var fiveXXExamples: [String] = []
        var validAcked = 0
        var validNotAcked = 0
        var validNotAckedReasons: [String: Int] = [:]
        var redeliveries = 0
        var redeliveryMismatches = 0
        var redeliveryExample: String?
    }

    private let stats = Mutex(Stats())
    /// Valid changes the hub acknowledged as applied (in a push answered 200 or 422, not
    /// listed among its refusals).
    let acked = Mutex<[Change]>([])

    func record(_ request: HostileRequest, _ reply: HostileReply) {
        var applied: [Change] = []
        let response = request.tracked.isEmpty ? nil : try? JSONDecoder().decode(PushResponse.self, from: Data(reply.body))
        if request.kind == "valid push", let response, let status = reply.status, status == 200 || status == 422 {
            let refused = Set(response.rejected.map { "\($0.origin)#\($0.originSeq)" })
            applied = request.tracked.filter { !refused.contains("\($0.origin)#\($0.originSeq)") }
        }
        var redeliveryMismatch: String?
        if request.kind == "redelivery" {
            if reply.status != 200 || response?.duplicates != request.tracked.count || response?.applied != 0 {
                redeliveryMismatch = "status \(reply.status.map(String.init) ?? "none"), applied \(response?.applied ?? -1), duplicates \(response?.duplicates ?? -1) of \(request.tracked.count)"
            }
        }
        if !applied.isEmpty { acked.withLock { $0 += applied } }
        stats.withLock { s in
            if let status = reply.status {
                s.byStatus[status, default: 0] += 1
                s.byKind[request.kind, default: [:]][status, default: 0] += 1
                if status >= 500, s.fiveXXExamples.count < 10 {
                    s.fiveXXExamples.append("\(request.kind) \(request.method) \(request.path.prefix(80)) → \(status) \(String(decoding: reply.body.prefix(200), as: UTF8.self))")
                }
            } else {
                s.errors[reply.error ?? "?", default: 0] += 1
                s.errorsByKind[request.kind, default: 0] += 1
            }
            if request.kind == "valid push" {
                if reply.status == 200 {
                    s.validAcked += 1
                } else {
                    s.validNotAcked += 1
                    let why = response.map { r in Set(r.rejected.map(\.code.rawValue)).sorted().joined(separator: ", ") } ?? "HTTP \(reply.status.map(String.init) ?? "none")"
                    s.validNotAckedReasons[why, default: 0] += 1
                }
            }
            if request.kind == "redelivery" {
                s.redeliveries += 1
                if let redeliveryMismatch {
                    s.redeliveryMismatches += 1
                    if s.redeliveryExample == nil { s.redeliveryExample = redeliveryMismatch }
                }
            }
        }
    }

    func snapshot() -> Stats { stats.withLock { $0 } }
}

/// Bodies too big to make per request: made once.
struct FixedBodies: Sendable {
    /// One byte over the 8 MiB limit on bytes sent.
    let oversized: [UInt8]
    /// 10,001 changes: one over the per-push limit.
    let tooManyChanges: [UInt8]
    /// Gzip inflating to 65 MiB (the limit is 64).
    let gzipBomb: [UInt8]

    static func make() throws -> FixedBodies {
        let limits = HubConfiguration.Limits()
        var oversized = Array(#"{"through":0,"changes":[],"pad":""#.utf8)
        oversized += [UInt8](repeating: UInt8(ascii: "x"), count: limits.maxRequestBytes + 1 - oversized.count - 2)
        oversized += Array(#""}"#.utf8)
        let many = (0..<(limits.maxChangesPerPush + 1)).map { i in
            Change(origin: "d0", originSeq: Int64(2_000_000_000 + i), hlc: HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: 0),
                   table: "customers", recordID: "fz-many-\(i)", op: .delete)
        }
        let tooMany = WireEncoding.pushRequest(PushRequest(through: 0, changes: many))
        let bomb = Change(origin: "d0", originSeq: 3_000_000_000, hlc: HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: 0),
                          table: "customers", recordID: "fz-bomb", op: .upsert,
                          fields: ["last_name": .string(String(repeating: "x", count: 65 * 1024 * 1024))])
        let gz = try ParentClient.encodeBody(PushRequest(through: 0, changes: [bomb]), compressAboveBytes: 0)
        return FixedBodies(oversized: oversized, tooManyChanges: tooMany, gzipBomb: Array(gz.bytes.readableBytesView))
    }
}

/// Which request comes at each index: the same for a seed, whatever the timing (only the
/// sequence numbers of valid pushes depend on the order they are sent in).
final class HostilePlan: Sendable {
    let seed: UInt64
    let acme: [(node: NodeID, credential: String)]
    let globex: [(node: NodeID, credential: String)]
    let fixed: FixedBodies
    /// The next sequence number of each acme dealer's valid pushes.
    private let sequences: Mutex<[NodeID: Int64]>

    init(seed: UInt64, acme: [(node: NodeID, credential: String)], globex: [(node: NodeID, credential: String)], fixed: FixedBodies) {
        self.seed = seed
        self.acme = acme
        self.globex = globex
        self.fixed = fixed
        sequences = Mutex(Dictionary(uniqueKeysWithValues: acme.map { ($0.node, 1) }))
    }

    /// Kinds and their weights (per 1,000). The first requests go through every kind once,
    /// so even a tiny run sends each.
    static let kinds: [(String, Int)] = [
        ("valid push", 250), ("redelivery", 30), ("mutated bytes", 110), ("structural", 120), ("garbage", 40), ("deep nesting", 30),
        ("gzip broken", 50), ("foreign origin", 50), ("absurd sequence", 40), ("wrong tenant", 15), ("pull", 25), ("bad pull query", 70),
        ("bad credential", 30), ("unsupported encoding", 10), ("enroll garbage", 20), ("other tenant", 30), ("odd method or path", 10),
        ("oversized", 1), ("too many changes", 1), ("gzip bomb", 1),
    ]
    static let totalWeight = kinds.reduce(0) { $0 + $1.1 }

    func request(_ index: Int, worker: Int, forceValid: Bool = false) -> HostileRequest {
        var rng = BenchRandom(seed: seed, index: UInt64(index))
        let kind: String
        if forceValid {
            kind = "valid push"
        } else if index < Self.kinds.count {
            kind = Self.kinds[index].0
        } else {
            var roll = rng.below(Self.totalWeight)
            kind = Self.kinds.first { roll -= $0.1; return roll < 0 }!.0
        }
        let (node, credential) = acme[rng.below(acme.count)]
        func push(_ body: [UInt8], as credential: String = credential, headers: [(String, String)] = []) -> HostileRequest {
            HostileRequest(kind: kind, method: "POST", path: "/v1/push", body: body, headers: headers, credential: credential)
        }
        switch kind {
        case "valid push":
            let me = acme[worker % acme.count]
            let count = rng.int(1...20)
            let first = sequences.withLock { s -> Int64 in
                let first = s[me.node]!
                s[me.node] = first + Int64(count)
                return first
            }
            let changes = makeChanges(origin: me.node, count: count, firstSeq: first, ids: { "keep-\(me.node)-\(first + Int64($0))" },
                                      fields: { contactFields(Int(first) + $0, owner: me.node) })
            let request = PushRequest(tenant: rng.chance(0.5) ? "acme" : nil, through: changes.last!.originSeq, changes: changes)
            var r = HostileRequest(kind: kind, method: "POST", path: "/v1/push", credential: me.credential, tracked: changes)
            if rng.chance(0.2), let gz = try? ParentClient.encodeBody(request, compressAboveBytes: 0) {
                r.body = Array(gz.bytes.readableBytesView)
                r.headers = [("Content-Encoding", "gzip")]
            } else {
                r.body = WireEncoding.pushRequest(request)
            }
            return r
        case "redelivery":
            return HostileRequest(kind: kind, method: "POST", path: "/v1/push")  // replaced by the client's last acknowledged push
        case "mutated bytes":
            return push(mutateBytes(noise(node, &rng), &rng))
        case "structural":
            return push(structural(node, &rng))
        case "garbage":
            let n = rng.below(rng.chance(0.9) ? 512 : 65_536)
            return push((0..<n).map { _ in rng.chance(0.5) ? rng.byte() : Array(#"{}[]":,0123456789-.e tfnul\"#.utf8)[rng.below(27)] })
        case "deep nesting":
            let depth = rng.chance(0.8) ? [33, 100, 513, 2_000][rng.below(4)] : 100_000
            let objects = rng.chance(0.4)
            var nested = [UInt8]()
            for _ in 0..<depth { nested += objects ? Array(#"{"a":"#.utf8) : [UInt8(ascii: "[")] }
            nested += [UInt8(ascii: "1")]
            if rng.chance(0.8) { nested += [UInt8](repeating: objects ? UInt8(ascii: "}") : UInt8(ascii: "]"), count: depth) }
            let body = rng.chance(0.5) ? Array(#"{"through":1,"changes":[],"x":"#.utf8) + nested + [UInt8(ascii: "}")]
                                       : Array(#"{"through":1,"changes":[{"origin":"\#(node)","seq":5,"x":"#.utf8) + nested + Array(#","hlc":1,"table":"customers","id":"fz-1","op":"upsert","fields":{}}]}"#.utf8)
            return rng.chance(0.3) ? push(StoredGzip.wrap(body), headers: [("Content-Encoding", "gzip")]) : push(body)
        case "gzip broken":
            let valid = noise(node, &rng)
            var gz = (try? ParentClient.encodeBody(PushRequest(through: 1, changes: noiseChanges(node, &rng)), compressAboveBytes: 0)).map { Array($0.bytes.readableBytesView) } ?? []
            if gz.count < 32 { gz = StoredGzip.wrap(valid) }
            switch rng.below(8) {
            case 0: gz.removeLast(8)                                        // no trailer
            case 1: gz += Array("garbage".utf8)                             // bytes after the trailer
            case 2: gz[gz.count / 2] ^= 0x5A                                 // corrupt data
            case 3: gz = Array(gz.prefix(rng.below(gz.count)))              // cut anywhere
            case 4: gz = StoredGzip.wrap(valid, corruptCRC: true)           // wrong checksum
            case 5: gz = StoredGzip.wrap(mutateBytes(valid, &rng))         // valid gzip of a mutated body
            case 6: gz = []                                                 // empty
            default: gz = Array(valid)                                      // not gzip at all
            }
            return push(gz, headers: [("Content-Encoding", rng.chance(0.9) ? "gzip" : "GZIP")])
        case "foreign origin":
            // Another dealer's or another tenant's node, as origin; sometimes the next real sequence of a sibling.
            let siblings = acme.map(\.node).filter { $0 != node }
            let origin = rng.chance(0.7) && !siblings.isEmpty ? siblings[rng.below(siblings.count)] : globex[rng.below(globex.count)].node
            let seq = rng.chance(0.5) ? sequences.withLock { $0[origin] ?? 1 } : Int64(rng.int(1...1_000_000))
            var changes = noiseChanges(origin, &rng)
            changes[0].originSeq = seq
            if rng.chance(0.5) { changes[0].recordID = rng.chance(0.5) ? "bad id with spaces" : "keep-\(origin)-\(max(1, seq - 1))" }
            return push(WireEncoding.pushRequest(PushRequest(through: seq, changes: changes)))
        case "absurd sequence":
            let seqs = ["-1", "0", "9223372036854775807", "-9223372036854775808", "9007199254740993", "99999999999999999999", "1e15", "\"7\""]
            let body = #"{"through":\#(seqs[rng.below(seqs.count)]),"changes":[{"origin":"\#(node)","seq":\#(seqs[rng.below(seqs.count)]),"hlc":\#(HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: 0).rawValue),"table":"customers","id":"fz-seq","op":"upsert","fields":{"last_name":"X","owning_dealer":"\#(node)"}}]}"#
            return push(Array(body.utf8))
        case "wrong tenant":
            return push(WireEncoding.pushRequest(PushRequest(tenant: rng.chance(0.5) ? "globex" : "nobody", through: 1, changes: noiseChanges(node, &rng))))
        case "pull":
            return HostileRequest(kind: kind, method: "GET", path: "/v1/pull?cursor=\(rng.below(100_000))&limit=\(rng.int(1...1_000))&wait=0", credential: credential)
        case "bad pull query":
            let queries = ["cursor=-1", "limit=0", "limit=99999999999999999999", "wait=1e308", "wait=nan", "wait=-1", "wait=inf", "cursor=9223372036854775808",
                           "cursor=abc", "limit=", "only=g1", "only=d1%00", "only=" + String(repeating: "n", count: 300), "cursor=1&cursor=2",
                           "exclude_own=maybe&wait=0", "wait=61", "%ZZ", "cursor=0x10", "limit=10001", "wait=0.0001"]
            return HostileRequest(kind: kind, method: "GET", path: "/v1/pull?" + queries[rng.below(queries.count)], credential: credential)
        case "bad credential":
            let wrong = ["raw:", "raw:Bearer", "raw:Bearer ", "raw:Basic Zm9vOmJhcg==", "not-a-credential", String(repeating: "A", count: 4_096), "raw:Bearer " + String(repeating: "z", count: 43), "raw:bearer x y"]
            let request = rng.chance(0.5) ? push(noise(node, &rng)) : HostileRequest(kind: kind, method: "GET", path: "/v1/pull?wait=0")
            var r = request
            r.credential = rng.chance(0.2) ? nil : wrong[rng.below(wrong.count)]
            return r
        case "unsupported encoding":
            return push(noise(node, &rng), headers: [("Content-Encoding", ["br", "deflate", "compress", "gzip, gzip", "x"][rng.below(5)])])
        case "enroll garbage":
            let bodies = [#"{"token":"nope"}"#, #"{"token":12}"#, #"{"token":""#, "", #"{"token":"x","via":"not a node"}"#,
                          #"{"token":"#  + String(repeating: "[", count: 10_000)]
            return HostileRequest(kind: kind, method: "POST", path: "/v1/enroll", body: Array(bodies[rng.below(bodies.count)].utf8))
        case "other tenant":
            // globex's credentials: reads, and pushes that must change nothing of globex.
            let (gNode, gCredential) = globex[rng.below(globex.count)]
            switch rng.below(4) {
            case 0: return HostileRequest(kind: kind, method: "GET", path: "/v1/pull?wait=0", credential: gCredential)
            case 1: return push(WireEncoding.pushRequest(PushRequest(tenant: "acme", through: 1, changes: noiseChanges(gNode, &rng))), as: gCredential)
            case 2: return push(WireEncoding.pushRequest(PushRequest(through: 1, changes: noiseChanges(node, &rng))), as: gCredential)
            default: return HostileRequest(kind: kind, method: "GET", path: "/v1/pull?only=\(node)", credential: gCredential)
            }
        case "odd method or path":
            let odd: [(String, String)] = [("GET", "/v1/push"), ("POST", "/v1/pull"), ("GET", "/v1/nope"), ("DELETE", "/v1/push"),
                                               ("POST", "/v1/../v1/push"), ("GET", "/v1/pull/"), ("PUT", "/v1/enroll"), ("GET", "//v1/health")]
            let (method, path) = odd[rng.below(odd.count)]
            return HostileRequest(kind: kind, method: method, path: path, body: method == "GET" ? nil : noise(node, &rng), credential: credential)
        case "oversized":
            return push(fixed.oversized)
        case "too many changes":
            return push(fixed.tooManyChanges, as: acme[0].credential)
        default:  // "gzip bomb"
            return push(fixed.gzipBomb, as: acme[0].credential, headers: [("Content-Encoding", "gzip")])
        }
    }

    /// Changes of `origin` on records of their own (`fz-…`, never a tracked `keep-…` one),
    /// with sequence numbers far above the valid pushes'.
    func noiseChanges(_ origin: NodeID, _ rng: inout BenchRandom) -> [Change] {
        (0..<rng.int(1...5)).map { i in
            let op: Change.Operation = rng.chance(0.1) ? .delete : .upsert
            let ahead = rng.chance(0.1) ? UInt64(rng.int(61_000...86_400_000)) : 0
            return Change(origin: origin, originSeq: Int64(1_000_000_000 + rng.below(1_000_000_000)),
                          hlc: HLCTimestamp(wallMillis: WallClock.nowMillis() + ahead, counter: UInt16(i)),
                          table: rng.chance(0.9) ? "customers" : ["leads", "nope", "ts_changes"][rng.below(3)],
                          recordID: "fz-\(rng.below(200))", op: op,
                          fields: op == .delete ? [:] : ["last_name": .string("Noise \(rng.below(1_000))"),
                                                         "owning_dealer": .string(rng.chance(0.8) ? origin.rawValue : "d\(rng.below(acme.count))")])
        }
    }

    func noise(_ origin: NodeID, _ rng: inout BenchRandom) -> [UInt8] {
        WireEncoding.pushRequest(PushRequest(through: 1, changes: noiseChanges(origin, &rng)))
    }

    /// A push shaped wrong: hostile numbers, wrong types, unknown and repeated keys, odd
    /// strings, long strings.
    func structural(_ node: NodeID, _ rng: inout BenchRandom) -> [UInt8] {
        let numbers = ["-1", "0", "1e999", "-1e999", "1.5", "01", "+1", "18446744073709551616", "9223372036854775808", "NaN", "\"1\"", "null", "[]", "{}", "true"]
        let strings = ["\"\"", "\" \"", "\"a b\"", "\"\(String(repeating: "i", count: 129))\"", "\"\\ud800\"", "\"\\u0000\"", "1", "null", "[\"customers\"]",
                       "\"\(String(repeating: "ü", count: rng.chance(0.9) ? 300 : 300_000))\"", "\"customers\\u0000\"", "\"sqlite_master\""]
        func n() -> String { numbers[rng.below(numbers.count)] }
        func s() -> String { strings[rng.below(strings.count)] }
        let hlc = HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: 0).rawValue
        var fields = [#""last_name":"Struct""#, #""owning_dealer":"\#(node)""#]
        switch rng.below(6) {
        case 0: fields.append(#""last_name":\#(rng.chance(0.5) ? n() : s())"#)          // repeated key, odd value
        case 1: fields.append(#""\#(["nope", "id", "ts_route", "Last_Name", ""][rng.below(5)])":"x""#)
        case 2: fields[1] = #""owning_dealer":\#(s())"#
        case 3: fields.append(#""key_account":\#(n())"#)
        case 4: fields.append(#""x":{"nested":[1,2,3]}"#)
        default: break
        }
        var change = [#""origin":"\#(node)""#, #""seq":\#(1_000_000_000 + rng.below(1_000_000_000))"#, #""hlc":\#(hlc)"#,
                      #""table":"customers""#, #""id":"fz-\#(rng.below(200))""#, #""op":"upsert""#, #""fields":{\#(fields.joined(separator: ","))}"#]
        let k = rng.below(change.count)
        switch rng.below(6) {
        case 0: change[k] = change[k].split(separator: ":", maxSplits: 1)[0] + ":" + (rng.chance(0.5) ? n() : s())   // a value of the wrong shape
        case 1: change.append(change[k].split(separator: ":", maxSplits: 1)[0] + ":" + s())                          // a key twice
        case 2: change.remove(at: k)                                                                                 // a key missing
        case 3: change.insert(#""\#(["x", "Seq", "", "__proto__"][rng.below(4)])":\#(rng.chance(0.5) ? n() : s())"#, at: k)
        case 4: change.append(#""prior":{"last_name":\#(["\"1@d0\"", "\"@\"", "\"x@y\"", "\"18446744073709551616@d0\"", "1"][rng.below(5)])}"#)
        default: change.append(#""trail":[\#(Array(repeating: #"{"node":"hq","at":1}"#, count: rng.int(1...20)).joined(separator: ","))]"#)
        }
        change.shuffle(using: &rng)
        let top = [#""through":\#(rng.chance(0.8) ? "1" : n())"#, #""changes":[{\#(change.joined(separator: ","))}]"#]
            + (rng.chance(0.2) ? [#""tenant":\#(["\"acme\"", "null", "1", "\"ACME\"", "\"a b\""][rng.below(5)])"#] : [])
        return Array("{\(top.shuffled(using: &rng).joined(separator: ","))}".utf8)
    }

    func mutateBytes(_ input: [UInt8], _ rng: inout BenchRandom) -> [UInt8] {
        var b = input
        for _ in 0..<rng.int(1...4) where !b.isEmpty {
            let at = rng.below(b.count)
            switch rng.below(6) {
            case 0: b[at] ^= UInt8(1 << rng.below(8))
            case 1: b[at] = rng.byte()
            case 2: b.insert(contentsOf: (0..<rng.int(1...8)).map { _ in rng.byte() }, at: at)
            case 3: b.removeSubrange(at..<min(b.count, at + rng.int(1...16)))
            case 4: b = Array(b.prefix(at))
            default: b.insert(contentsOf: Array(["{", "[", "\"", "\\", "1e999", "null", ",", "}"][rng.below(8)].utf8), at: at)
            }
        }
        return b
    }
}

/// SplitMix64: each request's randomness follows from the run's seed and its index.
struct BenchRandom: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64, index: UInt64) {
        state = seed ^ (index &* 0xD1B5_4A32_D192_ED03)
        _ = next()
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func below(_ n: Int) -> Int { n <= 0 ? 0 : Int(next() % UInt64(n)) }
    mutating func int(_ range: ClosedRange<Int>) -> Int { range.lowerBound + below(range.count) }
    mutating func chance(_ p: Double) -> Bool { Double(next() >> 11) / Double(1 << 53) < p }
    mutating func byte() -> UInt8 { UInt8(truncatingIfNeeded: next()) }
}

/// Gzip of any bytes without a compressor: one deflate "stored" block per 64 KiB, then the
/// CRC-32 and length trailer (which can be made wrong on purpose).
enum StoredGzip {
    static func wrap(_ data: [UInt8], corruptCRC: Bool = false) -> [UInt8] {
        var out: [UInt8] = [0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 255]
        var i = 0
        repeat {
            let n = min(65_535, data.count - i)
            out.append(i + n >= data.count ? 1 : 0)
            out += [UInt8(n & 0xFF), UInt8(n >> 8), UInt8(~n & 0xFF), UInt8((~n >> 8) & 0xFF)]
            out += data[i..<(i + n)]
            i += n
        } while i < data.count
        let crc = crc32(data) ^ (corruptCRC ? 1 : 0)
        for shift in stride(from: 0, to: 32, by: 8) { out.append(UInt8((crc >> UInt32(shift)) & 0xFF)) }
        let size = UInt32(truncatingIfNeeded: data.count)
        for shift in stride(from: 0, to: 32, by: 8) { out.append(UInt8((size >> UInt32(shift)) & 0xFF)) }
        return out
    }

    static let table: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func crc32(_ data: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in data { c = table[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }
}

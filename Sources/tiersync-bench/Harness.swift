import Foundation
import TiersyncAgent
import TiersyncCore
import TiersyncPKI
import TiersyncServer
import TiersyncStore

/// An HQ hub in this process on a free loopback port, over TLS.
struct BenchHub {
    let url: String
    let caFile: String
    let stores: TenantStores
    let task: Task<Void, any Error>

    /// `checkpointing` as a serving hub does (``WALCheckpointing/byOwner``) unless a
    /// scenario compares.
    static func start(in dir: String, limits: HubConfiguration.Limits = .unthrottled,
                      checkpointing: WALCheckpointing = .byOwner, retention: RetentionPolicy? = .default) async throws -> BenchHub {
        let pki = try DevelopmentPKI.ensure(in: dir + "/pki")
        var configuration = HubConfiguration(port: 0, dataDirectory: dir + "/hq",
                                             transport: .tls(certificatePath: pki.serverCertificate, privateKeyPath: pki.serverKey))
        configuration.limits = limits
        configuration.retention = retention
        let stores = TenantStores(catalog: try HubCatalog(directory: dir + "/hq"), checkpointing: checkpointing)
        let hub = HubServer(configuration: configuration, directory: CatalogDirectory(stores: stores))
        let (stream, continuation) = AsyncStream<Int>.makeStream()
        let task = Task { try await hub.run { continuation.yield($0) } }
        var iterator = stream.makeAsyncIterator()
        guard let port = await iterator.next() else { throw BenchError("the hub did not start") }
        return BenchHub(url: "https://127.0.0.1:\(port)", caFile: pki.caCertificate, stores: stores, task: task)
    }

    /// Registers a node and returns its credential (directly in the catalog: enrollment
    /// is not what is measured).
    func credential(tenant: TenantID, node: NodeID, parent: NodeID? = nil) async throws -> String {
        _ = try stores.catalog.createTenant(tenant, levels: parent == nil ? 2 : 3)
        return try await stores.catalog.redeem(token: try stores.catalog.issueEnrollmentToken(tenant: tenant, node: node, parent: parent)).credential
    }

    func client(credential: String, configure: (inout AgentConfiguration) -> Void = { _ in }) throws -> ParentClient {
        var configuration = AgentConfiguration(parentURL: url, caFile: caFile)
        configure(&configuration)
        return try ParentClient(configuration: configuration, credential: credential)
    }

    func stop() async {
        task.cancel()
        _ = await task.result
    }
}

extension HubConfiguration.Limits {
    /// The production limits without per-node admission: a benchmark's few credentials
    /// send what many nodes would, and throughput, not the rate limit, is measured.
    static var unthrottled: Self {
        var limits = Self()
        limits.requestsPerSecond = 1e9
        limits.requestBurst = 1e9
        limits.maxConcurrentRequestsPerNode = 1 << 30
        limits.maxConcurrentPushesPerNode = 1 << 30
        limits.anonymousRequestsPerSecond = 1e9
        limits.anonymousRequestBurst = 1e9
        limits.maxConcurrentAnonymousRequests = 1 << 30
        return limits
    }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A typical contact edit: a customer's name, phone and email, as a dealer types them.
func contactFields(_ i: Int, owner: NodeID) -> [String: FieldValue] {
    let names = ["Schmidt", "Müller", "Weber", "Fischer", "Meyer", "Wagner", "Becker", "Hoffmann", "Dubois", "Martin"]
    return [
        "owning_dealer": .string(owner.rawValue),
        "last_name": .string(names[i % names.count]),
        "phone": .string("+49 30 \(1_000_000 + (i * 7919) % 9_000_000)"),
        "email": .string("\(names[i % names.count].lowercased()).\(i)@example.com"),
    ]
}

/// Changes as an agent sends them: one origin, consecutive sequence numbers, increasing
/// hybrid timestamps close to now (within any clock-skew bound).
func makeChanges(origin: NodeID, count: Int, firstSeq: Int64 = 1, ids: (Int) -> String = { "c-\($0)" },
                 fields: (Int) -> [String: FieldValue]) -> [Change] {
    let start = WallClock.nowMillis() - 5_000
    return (0..<count).map { i in
        Change(origin: origin, originSeq: firstSeq + Int64(i), hlc: HLCTimestamp(wallMillis: start + UInt64(i / 1_000), counter: UInt16(i % 1_000)),
               table: "customers", recordID: ids(i), op: .upsert, fields: fields(i))
    }
}

func percentile(_ sorted: [Double], _ p: Double) -> Double {
    guard !sorted.isEmpty else { return .nan }
    return sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * p).rounded()))]
}

func elapsedSeconds(since start: ContinuousClock.Instant) -> Double {
    let d = ContinuousClock.now - start
    return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
}

/// `value` with `digits` decimals and thousands separators: 12,345.6
func format(_ value: Double, _ digits: Int = 0) -> String {
    guard value.isFinite else { return "n/a" }
    let text = String(format: "%.\(digits)f", abs(value))
    let parts = text.split(separator: ".", maxSplits: 1)
    var whole = String(parts[0])
    var grouped = ""
    while whole.count > 3 {
        grouped = "," + whole.suffix(3) + grouped
        whole = String(whole.dropLast(3))
    }
    let fraction = parts.count > 1 ? "." + parts[1] : ""
    return (value < 0 ? "-" : "") + whole + grouped + fraction
}

/// Prints a scenario's heading, the machine and its configuration.
func header(_ scenario: String, _ configuration: [(String, String)]) {
    print("")
    print("== \(scenario)")
    print("machine: \(Machine.description)")
    #if DEBUG
    print("build:   DEBUG (figures are not meaningful; use swift run -c release)")
    #else
    print("build:   release")
    #endif
    print("config:  " + configuration.map { "\($0.0)=\($0.1)" }.joined(separator: " "))
}

func result(_ name: String, _ value: String, target: String? = nil, met: Bool? = nil) {
    var line = "  \(name.padding(toLength: 30, withPad: " ", startingAt: 0)) \(value)"
    if let target { line += "   (target \(target)\(met.map { $0 ? ": met" : ": MISSED" } ?? ""))" }
    print(line)
}

enum Machine {
    static let description: String = {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let model = cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }?.split(separator: ":").last?
            .trimmingCharacters(in: .whitespaces) ?? "unknown CPU"
        let meminfo = (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)) ?? ""
        let kb = meminfo.split(separator: "\n").first { $0.hasPrefix("MemTotal") }.flatMap { line in
            line.split(separator: " ").compactMap { Double($0) }.first
        } ?? 0
        return "\(ProcessInfo.processInfo.activeProcessorCount) cores, \(model), \(format(kb / 1_048_576, 0)) GiB RAM, Linux"
    }()
}

import ArgumentParser
import Foundation
import Logging
import TiersyncAgent
import TiersyncCore
import TiersyncGovernance
import TiersyncServer
import TiersyncStore
import TiersyncStorage

/// `tiersync admin validate|release-key|publish|rollout|rollback|overlay-key|rollout-status`:
/// HQ's governance commands, run on the hub machine like the other admin commands.
extension Admin {
    struct Validate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a governance directory; print every error as file:line: field: message.",
            discussion: "Exits 0 when the directory compiles, 1 when it does not. See docs/GOVERNANCE.md for the format.")
        @Argument(help: "Directory of governance YAML files.") var directory: String

        func run() throws {
            do {
                let compiled = try GovernanceCompiler.compile(directory: directory)
                print("\(directory): valid governance for tenant '\(compiled.tenant)' (levels: \(compiled.levels.joined(separator: " → ")))")
                for section in ["kpis", "roles", "queues", "allocation", "escalation", "proactive"] {
                    print("  \(section): \(compiled.config[path: section]?.objectValue?.count ?? 0)")
                }
                print("  overrides: \(compiled.overrides.count)")
            } catch {
                for issue in error.issues { print(issue) }
                FileHandle.standardError.write(Data("\(error.issues.count) error(s) in \(directory)\n".utf8))
                throw ExitCode(1)
            }
        }
    }

    struct ReleaseKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create the tenant's governance release key (Ed25519) and register its public half.",
            discussion: """
            The private key is written to --out (default DATA/keys/TENANT.release.key with --data; \
            required with --postgres, whose hub has no data directory; mode 0600) and \
            signs every release and rollout; nodes enrolled from now on receive the public key and \
            verify everything against it. Keep a copy of the private key offline. Running it again \
            keeps an existing key.
            """)
        @OptionGroup var hub: HubData
        @Option(help: "Tenant identifier.") var tenant: String
        @Option(help: "Where to write the private key.") var out: String?
        @Flag(help: "Register this key even though the tenant has another one (every enrolled node keeps the old one and will refuse what the new one signs).") var replace = false

        func run() async throws {
            let tenantID = try TenantID(validating: tenant)
            let path = try hub.releaseKeyPath(out, tenant: tenantID, option: "--out")
            // Checked before a key file is written for a tenant that is not there (a typo).
            guard try await hub.withHub({ catalog, _ in try await catalog.root(of: tenantID) != nil }) else {
                throw CLIError("tenant '\(tenant)' not found: create it first (`tiersync admin create-tenant`); no key written")
            }
            let registered = try await hub.withHub { catalog, _ in try await catalog.releaseKey(of: tenantID) }
            let key: GovernanceSigningKey
            if FileManager.default.fileExists(atPath: path) {
                key = try Admin.loadSigningKey(path)
                print("keeping the existing key \(path)")
            } else {
                // Refused before the file is written: a new key the tenant cannot register was
                // left behind as a private key file that signs nothing any node accepts.
                if let registered, !replace {
                    throw CLIError("tenant \(tenantID) already has a release key (\(GovernancePublicKey(base64: registered).map(\.description) ?? "?")); no key written. Publish with its file (--key FILE), or change keys with `tiersync admin rotate-release-key` (nodes switch over with no gap; docs/GOVERNANCE.md). Only if that key's file is lost: --replace registers a new one, and every enrolled node then refuses what it signs until it is enrolled again")
                }
                key = GovernanceSigningKey()
                try Admin.writeSecret(key.base64 + "\n", to: path)
                print("wrote \(path)")
            }
            let replace = self.replace
            try await hub.withHub { catalog, _ in
                if let registered = try await catalog.releaseKey(of: tenantID), registered != key.publicKey.base64, !replace {
                    throw CLIError("tenant \(tenantID) already has another release key (\(GovernancePublicKey(base64: registered).map(\.description) ?? "?")); enrolled nodes keep it and would refuse releases signed by \(key.publicKey). Use --replace only if you mean that.")
                }
                if registered != key.publicKey.base64 {
                    try await catalog.setReleaseKey(key.publicKey.base64, for: tenantID)
                    try await Admin.User.audit(catalog, tenantID, "release_key.register", tenantID.rawValue, "\(key.publicKey)")
                }
            }
            print("release key of \(tenant): \(key.publicKey) (public: \(key.publicKey.base64))")
        }
    }

    struct Publish: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate, sign and publish a governance directory as the tenant's next release.",
            discussion: """
            Without --targets every node moves to the new release; with --targets (trial countries or \
            dealers) only they and the nodes below them do, the rest keep what they had. Widen a \
            trial with `admin rollout`, undo with `admin rollback`. Nodes receive it within seconds.
            """)
        @Argument(help: "Directory of governance YAML files.") var directory: String
        @OptionGroup var hub: HubData
        @Option(help: "Tenant identifier (default: governance.tenant of the sources).") var tenant: String?
        @Option(help: "The release key (default with --data: DATA/keys/TENANT.release.key; required with --postgres).") var key: String?
        @Option(help: "Comma-separated trial nodes (default: every node).") var targets: String?
        // Unconditional: `-5m` is a value here, not an option (helper 72: it read as a missing value).
        @Option(parsing: .unconditional, help: "When nodes switch to it: an ISO 8601 time, +DURATION like +10m, or -DURATION like -5m (default: now).")
        var effectiveFrom: String?
        @Option(help: "A note kept with the release.") var notes: String?

        func validate() throws {
            if let notes { try validateText(notes, option: "--notes", most: 1_000, lineBreaks: true) }
        }

        func run() async throws {
            let compiled: CompiledGovernance
            do { compiled = try GovernanceCompiler.compile(directory: directory) } catch {
                for issue in error.issues { print(issue) }
                throw CLIError("\(error.issues.count) error(s) in \(directory); nothing published")
            }
            let effectiveFromMillis = try effectiveFrom.map(Admin.parseTime)
            let targets = try Admin.parseTargets(targets)
            try await hub.withHQ(tenant: tenant ?? compiled.tenant, action: Admin.governanceAtHQ) { opened, tenantID in
                if try await (opened.catalog as? any ReleaseApprovalStore)?.requiresReleaseApproval(of: tenantID) == true {
                    throw CLIError("\(tenantID) has four-eyes releases: request it with POST /admin/v1/releases (or the console) and have a reviewer approve it")
                }
                let publisher = try await Admin.publisher(opened, options: hub, tenant: tenantID, key: key)
                let (release, rollout) = try await publisher.publish(compiled, effectiveFromMillis: effectiveFromMillis, notes: notes, targets: targets)
                try await Admin.User.audit(opened, tenantID, "release.publish", "v\(release.version)", rollout.summary)
                print("published release v\(release.version) of \(publisher.tenant), effective from \(formatMillis(release.effectiveFromMillis)), signed by \(publisher.key.publicKey)")
                print("rollout \(rollout.sequence): \(rollout.summary)")
            }
        }
    }

    struct Rollout: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Roll a published release out to more nodes (or to every node).")
        @OptionGroup var hub: HubData
        @Option(help: "Tenant identifier.") var tenant: String
        @Option(help: "The release version.") var release: Int
        @Option(help: "Comma-separated nodes (default: every node).") var targets: String?
        @Option(help: "The release key (default with --data: DATA/keys/TENANT.release.key; required with --postgres).") var key: String?

        func run() async throws {
            let targets = try Admin.parseTargets(targets)
            try await hub.withHQ(tenant: tenant, action: Admin.governanceAtHQ) { opened, tenantID in
                let publisher = try await Admin.publisher(opened, options: hub, tenant: tenantID, key: key)
                let rollout = try await publisher.rollout(release: release, targets: targets)
                try await Admin.User.audit(opened, tenantID, "release.rollout", "v\(release)", rollout.summary)
                print("rollout \(rollout.sequence): \(rollout.summary)")
                // A release published for later governs nothing yet (helper 82: the rollout
                // said nothing of it); its nodes keep the one in force until then.
                if let published = try await publisher.releases().first(where: { $0.version == release }),
                   published.effectiveFromMillis > WallClock.nowMillis() {
                    print("v\(release) takes effect at \(formatMillis(published.effectiveFromMillis)): until then its nodes keep the release in force")
                }
            }
        }
    }

    struct Rollback: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Put every node back on an earlier release (default: the one before the newest in force).")
        @OptionGroup var hub: HubData
        @Option(help: "Tenant identifier.") var tenant: String
        @Option(help: "The release to return to.") var to: Int?
        @Option(help: "The release key (default with --data: DATA/keys/TENANT.release.key; required with --postgres).") var key: String?

        func run() async throws {
            try await hub.withHQ(tenant: tenant, action: Admin.governanceAtHQ) { opened, tenantID in
                let publisher = try await Admin.publisher(opened, options: hub, tenant: tenantID, key: key)
                let rollout = try await publisher.rollback(to: to)
                try await Admin.User.audit(opened, tenantID, "release.rollback", rollout.stages.first.map { "v\($0.release)" } ?? "previous", rollout.summary)
                print("rollout \(rollout.sequence) (\(rollout.reason)): \(rollout.summary)")
            }
        }
    }

    struct OverlayKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Issue a country its overlay signing key, certified by the tenant's release key.",
            discussion: "Hand the file to the country's administrator; `tiersync overlay publish` signs with it.")
        @OptionGroup var hub: HubData
        @Option(help: "Tenant identifier.") var tenant: String
        @Option(help: "The country node.") var node: String
        @Option(help: "Where to write the country's key file (mode 0600).") var out: String
        @Option(help: "The release key (default with --data: DATA/keys/TENANT.release.key; required with --postgres).") var key: String?

        func run() async throws {
            let nodeID = try NodeID(validating: node)
            let hqKey = try await hub.withHQ(tenant: tenant, action: "issue overlay keys at HQ, on the hub's --data directory") { opened, tenantID in
                guard let record = try await opened.catalog.node(nodeID, of: tenantID) else {
                    throw CLIError("no node '\(node)' in tenant '\(tenant)' (enroll it first)")
                }
                guard record.role == "country" else { throw CLIError("'\(node)' is \(record.role == "hq" ? "the tenant's root" : "a \(record.role)"); only countries publish overlays") }
                let hqKey = try Admin.loadSigningKey(try hub.releaseKeyPath(key, tenant: tenantID))
                guard try await opened.catalog.releaseKey(of: tenantID) == hqKey.publicKey.base64 else {
                    throw CLIError("this key (\(hqKey.publicKey)) is not the release key registered for \(tenant); nodes would refuse its certificates")
                }
                try await Admin.User.audit(opened, tenantID, "overlay_key.issue", nodeID.rawValue, "certified by \(hqKey.publicKey)")
                return hqKey
            }
            let countryKey = GovernanceSigningKey()
            let certificate = try hqKey.certify(OverlayCertificate(tenant: tenant, node: node, publicKey: countryKey.publicKey.base64,
                                                                   issuedAtMillis: WallClock.nowMillis()))
            let file = OverlayKeyFile(tenant: tenant, node: node, privateKey: countryKey.base64, certificate: certificate)
            try Admin.writeSecret(try jsonText(file) + "\n", to: out)
            print("wrote \(out): overlay key \(countryKey.publicKey) for \(tenant)/\(node), certified by \(hqKey.publicKey)")
        }
    }

    struct RolloutStatus: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Per node: the release and overlay it applied, when, and when it was last seen.")
        @OptionGroup var hub: HubData
        @Option(help: "Tenant identifier.") var tenant: String
        @Flag(help: "Print JSON (the same as GET /v1/governance/status).") var json = false

        func run() async throws {
            // On a country's --data: its subtree, from the country's store (its dealers' reports sync up to it).
            let status = try await hub.location.withView(of: tenant, records: true,
                                                         hint: ": or run rollout-status at HQ, which sees every node") { view in
                let nodes = try await view.catalog.nodes(of: view.tenant)
                guard let store = view.store else {
                    // The hub has not opened the tenant's database: nothing published, nothing reported.
                    return RolloutStatusResponse(tenant: view.tenant.rawValue, rollout: nil, stages: nil, nodes: nodes.map {
                        RolloutStatusRow(node: $0.node.rawValue, parent: $0.parent?.rawValue, role: $0.role, release: nil, overlay: nil,
                                         state: $0.parent == nil ? "publisher" : "unknown", message: nil, appliedAtMillis: nil,
                                         lastSeenMillis: $0.lastSeenMillis)
                    })
                }
                return try await GovernanceStatusReport.response(tenant: view.tenant, nodes: nodes, store: store)
            }
            if json {
                print(try jsonText(status))
            } else {
                printRolloutStatus(status)
            }
        }
    }

    static func defaultReleaseKeyPath(data: String, tenant: TenantID) -> String {
        "\(data)/keys/\(tenant.rawValue).release.key"
    }

    static func loadSigningKey(_ path: String) throws -> GovernanceSigningKey {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw CLIError("no release key at \(path): create one with `tiersync admin release-key`")
        }
        return try GovernanceSigningKey(base64: text)
    }

    static func writeSecret(_ text: String, to path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw CLIError("cannot write \(path)")
        }
    }

    /// What a country's mirror answers a governance command (``HubData/withHQ(tenant:action:_:)``).
    static let governanceAtHQ = "publish, roll out and roll back at HQ, on the hub's --data directory"

    /// The publisher of HQ's `tenant` (checked by ``HubData/withHQ(tenant:action:_:)``) on
    /// `hub`, either engine, signing with the key at `key` (default: DATA/keys/TENANT.release.key
    /// on SQLite), which must be the release key registered for the tenant.
    static func publisher(_ hub: OpenedHub, options: HubData, tenant: TenantID, key: String?) async throws -> GovernancePublisher {
        let signing = try loadSigningKey(try options.releaseKeyPath(key, tenant: tenant))
        guard try await hub.catalog.releaseKey(of: tenant) == signing.publicKey.base64 else {
            throw CLIError("this key (\(signing.publicKey)) is not the release key registered for \(tenant); nodes would refuse what it signs. Publish with the registered key's file (--key FILE), or change keys with `tiersync admin rotate-release-key` (docs/GOVERNANCE.md)")
        }
        return GovernancePublisher(store: try hub.store(tenant), tenant: tenant, key: signing, tree: try await hub.catalog.tree(of: tenant))
    }

    static func parseTargets(_ text: String?) throws -> [NodeID]? {
        guard let text else { return nil }
        return try text.split(separator: ",").map { try NodeID(validating: $0.trimmingCharacters(in: .whitespaces)) }
    }

    /// `now`, `+10m` or `-5m` (a governance duration from now) or an ISO 8601 time, from 1970
    /// to the end of 9999 (what a timestamp field holds).
    static func parseTime(_ text: String) throws -> UInt64 {
        let range = "give now, ±DURATION or a time from 1970 to the end of 9999"
        // Past 9999 is no time a record holds: `rules run --now +9999999w` wrote real
        // escalations at year 190,000, which synced (helper 84).
        func checked(_ millis: UInt64) throws -> UInt64 {
            guard millis < UInt64(CommonTimestamp.validMillis.upperBound) else { throw CLIError("'\(text)' is after 9999: \(range)") }
            return millis
        }
        if text == "now" { return WallClock.nowMillis() }
        // These options read the next word whatever it is (so that -1d is a value), so an
        // option given no value takes the next option's name (`rules run --now --data X`).
        if text.hasPrefix("--") { throw CLIError("got the option '\(text)' where a time belongs: \(range)") }
        if text.hasPrefix("+"), let d = GovernanceDuration(String(text.dropFirst())) {
            let (ahead, overflow) = UInt64(d.seconds).multipliedReportingOverflow(by: 1000)
            guard !overflow else { throw CLIError("'\(text)' is after 9999: \(range)") }
            let (at, past) = WallClock.nowMillis().addingReportingOverflow(ahead)
            return try checked(past ? .max : at)
        }
        if text.hasPrefix("-"), let d = GovernanceDuration(String(text.dropFirst())) {
            let (back, overflow) = UInt64(d.seconds).multipliedReportingOverflow(by: 1000)
            let now = WallClock.nowMillis()
            guard !overflow, back <= now else { throw CLIError("'\(text)' is before 1970: \(range)") }
            return now - back
        }
        // With or without fractional seconds, nothing after the time (the formatter reads
        // "…00Zjunk"), and no day or hour the formatter would roll over (November 31).
        var parsed: Date?
        if CommonTimestamp.hasInternetDateTimeShape(text), CommonTimestamp.fieldsInRange(text) {
            let formatter = ISO8601DateFormatter()
            parsed = formatter.date(from: text)
            if parsed == nil {
                formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
                parsed = formatter.date(from: text)
            }
        }
        if let date = parsed {
            // Before 1970 trapped the conversion (exit 132).
            guard date.timeIntervalSince1970 >= 0 else { throw CLIError("'\(text)' is before 1970: \(range)") }
            guard date.timeIntervalSince1970 < Double(CommonTimestamp.validMillis.upperBound) / 1000 else { throw CLIError("'\(text)' is after 9999: \(range)") }
            return try checked(UInt64(date.timeIntervalSince1970 * 1000))
        }
        // A duration of the right shape but too many digits is too far, not "not a time" (helper 100).
        let digits = text.dropFirst().dropLast()
        if let sign = text.first, sign == "+" || sign == "-", let unit = text.last, "smhdw".contains(unit), !digits.isEmpty,
           digits.allSatisfy({ $0.isASCII && $0.isNumber }) {
            throw CLIError("'\(text)' has more than 7 digits, the most a duration has: use a larger unit (s, m, h, d, w) or an ISO 8601 time; \(range)")
        }
        throw CLIError("'\(text)' is not a time: use now, +DURATION or -DURATION (e.g. +10m, -5m) or ISO 8601 (2026-12-01T06:00:00Z)")
    }
}

/// Prints the rollout-status table.
func printRolloutStatus(_ status: RolloutStatusResponse) {
    print("tenant \(status.tenant): rollout \(status.rollout.map(String.init) ?? "-")\(status.stages.map { " (\($0))" } ?? "")")
    var rows = [["node", "parent", "role", "release", "overlay", "state", "applied at", "last seen"]]
    let parents = Dictionary(status.nodes.map { ($0.node, $0.parent) }, uniquingKeysWith: { a, _ in a })
    for n in status.nodes {
        // Dealers behind a country talk to the country, which records when it last saw them.
        let relayed = n.parent.flatMap { parents[$0] ?? nil } != nil
        let seen = n.lastSeenMillis.map(formatMillis) ?? (n.parent == nil ? "-" : relayed ? "(at \(n.parent!))" : "never")
        rows.append([n.node, n.parent ?? "-", n.role, n.release.map { "v\($0)" } ?? "-", n.overlay ?? "-", n.state,
                     n.appliedAtMillis.map(formatMillis) ?? "-", seen])
    }
    printTable(rows)
    for n in status.nodes where n.message != nil { print("  \(n.node): \(n.message!)") }
}

/// `tiersync overlay publish`: a country's administrator publishes its overlay.
struct OverlayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "overlay", abstract: "Country overlays on HQ's governance (run on the country machine).",
        subcommands: [PublishOverlay.self])

    struct PublishOverlay: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "publish",
            abstract: "Check an overlay against HQ's limits, sign it with the country's key and serve it to the dealers.",
            discussion: "Refused, with file:line, field and HQ's limit, when it oversteps; dealers check it again.")
        @Argument(help: "The overlay YAML file.") var file: String
        @Option(help: "The country node's database.") var store: String
        @Option(help: "The overlay key file from `tiersync admin overlay-key`.") var key: String

        func run() throws {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { throw CLIError("cannot read \(file)") }
            let source: OverlaySource
            do { source = try OverlaySource.parse(yaml: text, file: file) } catch {
                for issue in error.issues { print(issue) }
                throw ExitCode(1)
            }
            guard let keyData = FileManager.default.contents(atPath: key),
                  let keyFile = try? JSONDecoder().decode(OverlayKeyFile.self, from: keyData) else {
                throw CLIError("\(key) is not an overlay key file (create one at HQ with `tiersync admin overlay-key`)")
            }
            let nodeStore = try openEnrolledStore(store)
            let overlay: Overlay
            do { overlay = try OverlayPublisher.publish(source, keyFile: keyFile, store: nodeStore) } catch let failure as OverlayPublisher.Failure {
                if let issues = failure.issues {
                    for issue in issues.issues { print(issue) }
                    throw ExitCode(1)
                }
                throw CLIError(failure.description)
            }
            print("published overlay \(overlay.label) (\(overlay.set.count) field(s)), checked against release v\(overlay.basedOn ?? 0) in force here; dealers receive it within seconds")
        }
    }
}

/// `tiersync governance --store S`: what a node runs and how it got there.
struct GovernanceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "governance", abstract: "Show the governance a node applied: effective config and history.")
    @Option(help: "The node's database.") var store: String
    @Option(help: "Print only the value at this path of the effective config (e.g. allocation.key-accounts.then.sla).") var path: String?

    func run() throws {
        let nodeStore = try openEnrolledStore(store)
        let history = try nodeStore.governanceHistory()
        guard let applied = try nodeStore.appliedGovernance(), let json = applied.effective else {
            // HQ publishes and applies nothing itself: "nothing received" read as a failed
            // publish there (helper 102).
            if history.isEmpty, try nodeStore.identity()?.parent == nil,
               let release = try nodeStore.latestGovernanceDocument(kind: SignedDocument.Kind.release.rawValue) {
                print("this is the tenant's root, which publishes releases (the newest is v\(release.seq)) and applies none itself; what the nodes run: tiersync admin rollout-status --data <the hub's --data>")
                return
            }
            print(history.last.map { "no release in force (\($0.state): \($0.message ?? ""))" } ?? "no governance received yet")
            return
        }
        let effective = try JSONDecoder().decode(ConfigValue.self, from: Data(json.utf8))
        if let path {
            guard let value = effective[path: path] else { throw CLIError("no field '\(path)' in the effective config") }
            print(value)
            return
        }
        print("release v\(applied.release ?? 0)\(applied.overlay.map { " ⊕ overlay \($0)" } ?? ""), applied \(formatMillis(applied.appliedAtMillis))")
        for (path, value) in effective.leaves() { print("  \(path) = \(value)") }
        print("history:")
        for h in history {
            print("  \(formatMillis(h.appliedAtMillis))  \(h.state.padding(toLength: 8, withPad: " ", startingAt: 0)) v\(h.release.map(String.init) ?? "-")\(h.overlay.map { " ⊕ \($0)" } ?? "")\(h.message.map { "  (\($0))" } ?? "")")
        }
    }
}

import Foundation
import Testing
import TiersyncCore
import TiersyncGovernance
import TiersyncRules
import TiersyncStore
import TiersyncTestSupport

// The README's command lines, run as a new user would: real `tiersync` processes, read from
// README.md itself (issue 12, item 7). Placeholders (paths, hosts, tokens, `acme`) are
// substituted; everything else runs as written, so README and test cannot drift.

/// The `tiersync …` command lines README.md documents.
struct Readme {
    let text: String

    init() throws { text = try String(contentsOfFile: repositoryRoot() + "/README.md", encoding: .utf8) }

    /// The text under `## title`, up to the next `## ` heading.
    func section(_ title: String) throws -> String {
        let lines = text.components(separatedBy: "\n")
        guard let start = lines.firstIndex(of: "## " + title) else { throw TestFailure("README.md has no section '## \(title)'") }
        let end = lines[(start + 1)...].firstIndex { $0.hasPrefix("## ") } ?? lines.endIndex
        return lines[(start + 1)..<end].joined(separator: "\n")
    }

    /// The commands of a section, as words: each line of its ```sh blocks that runs
    /// `tiersync` (continuations joined, comments dropped), then each `tiersync …` quoted in
    /// its prose.
    func commands(in title: String) throws -> [[String]] {
        var commands: [[String]] = [], prose: [String] = [], inBlock = false, pending = ""
        for line in try section(title).components(separatedBy: "\n") {
            if line.hasPrefix("```") {
                inBlock.toggle()
                continue
            }
            guard inBlock else {
                prose.append(line)
                continue
            }
            if line.hasSuffix("\\") {
                pending += line.dropLast() + " "
                continue
            }
            let words = Self.words(pending + line)
            pending = ""
            if words.first == "tiersync" { commands.append(words) }
        }
        // Prose names commands too (`tiersync status` shows…); whole lines are those with options.
        let quoted = try Regex(#"`(tiersync [^`]+)`"#)
        for match in prose.joined(separator: " ").matches(of: quoted) {
            let words = Self.words(String(match.output[1].substring ?? ""))
            if words.contains(where: { $0.hasPrefix("--") }) { commands.append(words) }
        }
        return commands
    }

    /// Splits a shell line into words: double and single quotes group, `#` at the start of
    /// a word begins a comment.
    static func words(_ line: String) -> [String] {
        var words: [String] = [], current = "", quote: Character?, inWord = false
        for c in line {
            if let q = quote {
                if c == q { quote = nil } else { current.append(c) }
            } else if c == "\"" || c == "'" {
                quote = c
                inWord = true
            } else if c == " " || c == "\t" {
                if inWord { words.append(current) }
                current = ""
                inWord = false
            } else if c == "#" && !inWord {
                break
            } else {
                current.append(c)
                inWord = true
            }
        }
        if inWord { words.append(current) }
        return words
    }
}

/// One short `tiersync` command, run to completion.
struct Ran: CustomStringConvertible {
    let arguments: [String]
    let status: Int32
    let out: String
    let err: String
    var description: String { "tiersync \(arguments.joined(separator: " ")) → exit \(status)\n--- stdout:\n\(out)--- stderr:\n\(err)" }
}

/// Runs `tiersync arguments` in `cwd` and waits for it (killed after `timeout` seconds).
func tiersync(_ arguments: [String], cwd: String, timeout: Double = 120) async throws -> Ran {
    let id = UUID().uuidString
    let outFile = NSTemporaryDirectory() + "tiersync-cli-\(id).out", errFile = NSTemporaryDirectory() + "tiersync-cli-\(id).err"
    _ = FileManager.default.createFile(atPath: outFile, contents: nil)
    _ = FileManager.default.createFile(atPath: errFile, contents: nil)
    defer {
        try? FileManager.default.removeItem(atPath: outFile)
        try? FileManager.default.removeItem(atPath: errFile)
    }
    // Started with posix_spawn, not Foundation's Process (``SpawnedProcess``).
    let out = try SpawnedProcess.outputFile(outFile)
    defer { close(out) }
    let err = try SpawnedProcess.outputFile(errFile)
    defer { close(err) }
    let p = try SpawnedProcess(executable: try Child.binary(), arguments: arguments, currentDirectory: cwd, stdout: out, stderr: err)
    let deadline = Date().addingTimeInterval(timeout)
    while p.isRunning && Date() < deadline {
        await withCheckedContinuation { c in DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(10)) { c.resume() } }
    }
    if p.isRunning {
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        throw TestFailure("tiersync \(arguments.joined(separator: " ")) still running after \(timeout) s")
    }
    p.waitUntilExit()
    return Ran(arguments: arguments, status: p.terminationStatus,
               out: (try? String(contentsOfFile: outFile, encoding: .utf8)) ?? "", err: (try? String(contentsOfFile: errFile, encoding: .utf8)) ?? "")
}

/// Every file and directory under `path` (what a read command must not add to). Not
/// SQLite's `-wal`/`-shm` companions of a database that is there: any process opening it
/// (the hub itself) makes them, and one that exits without closing it leaves them.
func listing(_ path: String) -> [String] {
    guard let walker = FileManager.default.enumerator(atPath: path) else { return [] }
    let all = walker.compactMap { $0 as? String }
    return all.filter { name in
        !((name.hasSuffix("-wal") || name.hasSuffix("-shm")) && all.contains(String(name.dropLast(4))))
    }.sorted()
}

/// The README's commands, run in order against a hub, a country and a dealer of their own.
final class ReadmeRun {
    let dir: String
    let hubData: String, deDir: String, dealerDir: String, adminDir: String, pki: String
    let tenant: TenantID = "automaker"
    var hubURL = "", countryURL = ""
    var tokens: [String: String] = [:]
    var contactID = ""
    /// The README's lines, and those run so far.
    var documented: [[String]] = []
    var ran: [[String]] = []

    init(dir: String) throws {
        self.dir = dir
        hubData = dir + "/hq"
        deDir = dir + "/de"
        dealerDir = dir + "/dealer"
        adminDir = dir + "/admin"
        pki = dir + "/pki"
        for d in [hubData, deDir, dealerDir, adminDir] { try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true) }
    }

    /// The README's placeholders replaced by this run's paths, addresses and tokens.
    func resolve(_ words: [String]) -> [String] {
        let kind = words.count > 1 ? words[1] : ""
        let varRoot = kind == "node" ? deDir : kind == "agent" ? dealerDir : hubData
        return words.dropFirst().map { word -> String in
            switch word {
            case "acme", "T": return tenant.rawValue
            case "DIR", "D": return hubData
            case "0.0.0.0": return "127.0.0.1"
            case "8443": return "0"
            case "https://hq.example.com:8443": return hubURL
            case "https://de.example.com:8443": return countryURL
            case "tse_...": return tokens[kind == "node" ? "de" : "dealer-042"] ?? word
            case "int-...": return contactID
            case "de.yaml": return repositoryRoot() + "/fixtures/governance/overlays/de.yaml"
            case "de.sqlite": return deDir + "/de.sqlite"
            case "dealer.sqlite": return dealerDir + "/node.sqlite"
            default: break
            }
            if word.hasPrefix("/var/lib/tiersync") { return varRoot + word.dropFirst("/var/lib/tiersync".count) }
            if word.hasPrefix("/etc/tiersync/") {
                let file = (word as NSString).lastPathComponent
                return file.hasSuffix("-key.pem") ? pki + "/server-key.pem" : file.contains("ca") ? pki + "/ca.pem" : pki + "/server.pem"
            }
            if word.hasPrefix("fixtures/") { return repositoryRoot() + "/" + word }
            return word
        }
    }

    /// The documented line that starts with `prefix` (its words, as in the README); it
    /// counts as run.
    func line(_ prefix: String, _ nth: Int = 0) throws -> [String] {
        let words = Readme.words(prefix)
        let matching = documented.filter { Array($0.prefix(words.count)) == words }
        guard nth < matching.count else { throw TestFailure("README.md documents no (\(nth + 1)th) line starting with '\(prefix)'") }
        ran.append(matching[nth])
        return matching[nth]
    }

    /// Runs the documented line starting with `prefix` (after `edit`) to completion in `cwd`;
    /// it must exit 0.
    @discardableResult
    func run(_ prefix: String, _ nth: Int = 0, cwd: String? = nil, edit: ([String]) -> [String] = { $0 }) async throws -> Ran {
        let result = try await tiersync(edit(resolve(try line(prefix, nth))), cwd: cwd ?? adminDir)
        #expect(result.status == 0, "\(result)")
        return result
    }
}

@Suite("Documented command lines run as processes")
struct CLICommandTests {
    @Test("""
    README: a hub, a country and a dealer set up, governed and used with the documented commands, each run as \
    written (placeholders substituted) and doing what it says
    """, .timeLimit(.minutes(10)))
    func readmeCommands() async throws {
        let temp = try TempDir()
        let r = try ReadmeRun(dir: temp.path)
        let readme = try Readme()
        for title in ["Running a hub and agents for real", "Working with records on a node", "Governance releases", "Operating"] {
            r.documented += try readme.commands(in: title)
        }
        // Certificates for the README's --cert/--key/--ca files (loopback names).
        #expect(try await tiersync(["admin", "gen-certs", "--out", r.pki], cwd: r.adminDir).status == 0)

        try await withRunning { running in
            // — Running a hub and agents for real: the admin sequence exactly in the README's order.
            let created = try await r.run("tiersync admin create-tenant")
            #expect(created.out.contains("created tenant automaker with 3 levels (root node hq)"), "\(created)")
            let deToken = try await r.run("tiersync admin enroll-token", 0)
            let dealerToken = try await r.run("tiersync admin enroll-token", 1)
            #expect(dealerToken.arguments.contains("--parent"), "the second enroll-token line is the dealer's, under de")
            for (node, ran) in [("de", deToken), ("dealer-042", dealerToken)] {
                let token = ran.out.trimmingCharacters(in: .whitespacesAndNewlines)
                #expect(token.hasPrefix("tse_") && !token.contains(" "), "\(ran)")
                r.tokens[node] = token
            }

            let hub = try running.child(r.resolve(try r.line("tiersync hub serve")), log: r.dir + "/hub.log")
            r.hubURL = try Self.url(try await hub.waitForOutput(containing: "hub listening on https://127.0.0.1:"), "hub")
            let country = try running.child(r.resolve(try r.line("tiersync node serve")), log: r.dir + "/de.log")
            #expect(try await country.waitForOutput(containing: "enrolled as node de of tenant automaker").contains("enrolled"))
            r.countryURL = try Self.url(try await country.waitForOutput(containing: "country node listening on https://127.0.0.1:"), "country node")

            // The dealer enrolls through its country with the token issued before the country enrolled.
            let firstRun = try running.child(r.resolve(try r.line("tiersync agent run", 0)), log: r.dir + "/dealer-1.log")
            _ = try await firstRun.waitForOutput(containing: "enrolled as node dealer-042 of tenant automaker")
            await firstRun.stop()
            // Later runs: no token, the credential is in the node's database.
            let dealer = try running.child(r.resolve(try r.line("tiersync agent run", 1)), log: r.dir + "/dealer-2.log")

            let hq = try NodeStore(path: r.hubData + "/tenants/automaker.sqlite")
            let de = try NodeStore(path: r.deDir + "/de.sqlite")
            let d42 = try NodeStore(path: r.dealerDir + "/node.sqlite")
            #expect(try d42.identity() == NodeIdentity(tenant: "automaker", node: "dealer-042", parent: "de"))
            try await Task.sleep(for: .seconds(1))
            #expect(dealer.process.isRunning, "the agent runs without a token:\n\(dealer.output)")

            try await Self.records(r, hq: hq, de: de, dealer: d42)
            try await Self.governance(r, de: de, dealer: d42, logs: [hub, country, dealer])
            try await Self.operating(r, running: running, dealer: d42)

            // The move documented in prose: de's neighbour fr enrolls (here in-process), then the dealer moves.
            let fr = try await tiersync(["admin", "enroll-token", "--data", r.hubData, "--tenant", "automaker", "--node", "fr"], cwd: r.adminDir)
            _ = try await HubCatalog(directory: r.hubData).redeem(token: fr.out.trimmingCharacters(in: .whitespacesAndNewlines))
            let moved = try await r.run("tiersync admin move-node")
            #expect(moved.out.contains("moved dealer-042 under fr"), "\(moved)")
            let nodes = try await tiersync(["admin", "nodes", "--data", r.hubData, "--tenant", "automaker"], cwd: r.adminDir)
            #expect(nodes.out.contains("hq/fr/dealer-042"), "\(nodes)")
        }

        // Every command line of those sections was run.
        let missed = r.documented.filter { !r.ran.contains($0) }
        #expect(missed.isEmpty, "README lines not run by this test: \(missed.map { $0.joined(separator: " ") })")
    }

    /// Working with records on a node: on the dealer, while its agent runs.
    static func records(_ r: ReadmeRun, hq: NodeStore, de: NodeStore, dealer: NodeStore) async throws {
        let cwd = r.dealerDir   // the README's `--db node.sqlite` is relative
        let added = try await r.run("tiersync contact add", cwd: cwd)
        let recorded = try #require(added.out.split(separator: " ").drop { $0 != "contact" }.dropFirst().first.map(String.init), "\(added)")
        #expect(recorded.hasPrefix("int-") && added.out.contains("for customer cust-"), "\(added)")
        r.contactID = recorded
        try await eventually(timeout: 30, "the contact reaches HQ through de") {
            try hq.record(table: "interactions", id: recorded) != nil && de.record(table: "interactions", id: recorded) != nil
        }
        let listed = try await r.run("tiersync contact list", cwd: cwd)
        #expect(listed.out.contains(recorded) && listed.out.contains("test drive") && listed.out.contains("1 contact(s)"), "\(listed)")
        let shown = try await r.run("tiersync contact show", cwd: cwd)
        #expect(shown.out.contains("interactions/\(recorded)") && shown.out.contains("Schmidt") && shown.out.contains("dealer-042"), "\(shown)")

        let put = try await r.run("tiersync record put", cwd: cwd)
        #expect(put.out.contains("wrote customers/cust-1 as change dealer-042#"), "\(put)")
        let got = try await r.run("tiersync record get", cwd: cwd)
        #expect(got.out.contains("customers/cust-1") && got.out.contains("Berlin") && got.out.contains("key_account"), "\(got)")
        // Each field's version shown as the time it was written (it was the clock's raw milliseconds, helper 71).
        let thisYear = String(Timestamp.format(WallClock.nowMillis()).prefix(5))
        #expect(got.out.contains("written at") && got.out.contains("  " + thisYear), "\(got)")
        try await eventually(timeout: 30, "cust-1 reaches HQ") { try hq.record(table: "customers", id: "cust-1")?.state.liveValues["city"] == .string("Berlin") }
        // Consent, recorded with its history.
        // (The README shows giving consent: its docs named only --withdraw, helper 102.)
        let given = try await r.run("tiersync consent set", cwd: cwd)
        #expect(given.out.contains("cust-1: consent service by phone given (dealer_visit, recorded by dealer-042"), "\(given)")
        let consent = try await r.run("tiersync consent show", cwd: cwd)
        #expect(consent.out.contains("given") && consent.out.contains("dealer_visit"), "\(consent)")
        let deleted = try await r.run("tiersync record delete", cwd: cwd)
        #expect(deleted.out.contains("deleted customers/cust-1"), "\(deleted)")
        // A delete of what the node never held (it went up unroutable and was quarantined) or
        // already deleted is refused, with nothing written.
        for (id, message) in [("never-held", "no record customers/never-held: nothing to delete"), ("cust-1", "customers/cust-1 is already deleted")] {
            let refused = try await tiersync(["record", "delete", "--db", "node.sqlite", "customers", id], cwd: cwd)
            #expect(refused.status != 0 && refused.err.contains(message), "\(refused)")
        }
        #expect(try dealer.record(table: "customers", id: "never-held") == nil)
        try await eventually(timeout: 30, "the delete reaches HQ") { try hq.record(table: "customers", id: "cust-1")?.state.isLive == false }
        // A delete leaves the values in the change log; the erasure empties them everywhere.
        let erased = try await r.run("tiersync erase", cwd: cwd)
        #expect(erased.out.contains("erased customers/cust-1 as era-") && erased.out.contains("files clean: yes"), "\(erased)")
        #expect(erased.out.contains("digest of what was erased (`tiersync erasures --verify` recomputes it"), "\(erased)")
        let verified = try await r.run("tiersync erasures", cwd: cwd)
        #expect(verified.out.contains("1 erasure(s)") && !verified.out.contains("NO"), "\(verified)")
        try await eventually(timeout: 30, "HQ, de and the dealer acknowledge") {
            let ledger = try await tiersync(["admin", "erasures", "--data", r.hubData, "--tenant", "automaker"], cwd: cwd)
            return ledger.out.contains("complete: every replica acknowledged")
        }
        let ledger = try await r.run("tiersync admin erasures", cwd: cwd)
        #expect(ledger.out.contains("customers/cust-1") && ledger.out.contains("acknowledged by dealer-042"), "\(ledger)")

        let tables = try await r.run("tiersync record tables", cwd: cwd)
        #expect(tables.out.contains("customers:") && tables.out.contains("leads:") && tables.out.contains("routed by"), "\(tables)")
        let status = try await r.run("tiersync status", cwd: cwd)
        #expect(status.out.contains("dealer-042 (tenant automaker, parent de)") && status.out.contains("digest:"), "\(status)")
        // At HQ, the digest of the dealer's scope: equal to the dealer's own once both hold the same.
        func digest(_ output: String, _ prefix: String) -> String? {
            output.split(separator: "\n").first { $0.hasPrefix(prefix) }?.split(separator: " ").last.map(String.init)
        }
        try await eventually(timeout: 30, "HQ's digest of dealer-042's scope equals the dealer's own") {
            let own = digest(try await r.run("tiersync status", cwd: cwd).out, "digest:")
            let atHQ = try await r.run("tiersync status", 1, cwd: cwd, edit: { $0.map { $0.replacingOccurrences(of: "/acme.sqlite", with: "/automaker.sqlite") } })
            return own != nil && own == digest(atHQ.out, "digest of dealer-042's scope here:")
        }
        let conflicts = try await r.run("tiersync conflicts", cwd: cwd)
        #expect(conflicts.out.contains("0 conflict(s)"), "\(conflicts)")
        // No release published yet: the rules have nothing to evaluate, and say so.
        let rules = try await r.run("tiersync rules run", cwd: cwd)
        #expect(rules.out.contains("no governance release in force at dealer-042 at 2026-12-03T14:05:00Z: nothing evaluated"), "\(rules)")

        // HQ's hotline writes lead-1 for the dealer on the hub's tenant database (as the README says the
        // record commands work there); trace shows where it came from.
        let lead = try await tiersync(["record", "put", "--db", r.hubData + "/tenants/automaker.sqlite", "leads", "lead-1",
                                       "fulfilling_node=dealer-042", "source_channel=phone", "status=new"], cwd: cwd)
        #expect(lead.status == 0, "\(lead)")
        try await eventually(timeout: 30, "lead-1 reaches the dealer") { try dealer.record(table: "leads", id: "lead-1") != nil }
        let trace = try await r.run("tiersync trace", cwd: cwd)
        #expect(trace.out.contains("Changes to leads/lead-1 held at dealer-042") && trace.out.contains("hq#")
                && trace.out.contains("arrived here from de"), "\(trace)")
        // Months of seeded data at the dealer, through its write path (scaled down for the test).
        let generated = try await r.run("tiersync generate", cwd: cwd) { $0 + ["--scale", "0.05"] }
        #expect(generated.out.contains("wrote ") && generated.out.contains("interactions:"), "\(generated)")
    }

    /// Governance releases: HQ's key and releases, a trial, a rollout, a rollback, de's overlay.
    static func governance(_ r: ReadmeRun, de: NodeStore, dealer: NodeStore, logs: [Child]) async throws {
        func running(_ store: NodeStore) throws -> (release: Int?, overlay: String?) {
            let a = try store.appliedGovernance()
            return (a?.release, a?.overlay)
        }
        func waitFor(_ what: String, release: Int, overlay: String? = nil) async throws {
            do {
                try await eventually(timeout: 60, what) {
                    try [de, dealer].allSatisfy { try running($0).release == release } && (overlay == nil || running(dealer).overlay == overlay)
                }
            } catch {
                Issue.record("de: \(try running(de)), dealer: \(try running(dealer))\n\(logs.map { $0.output.suffix(2000) }.joined(separator: "\n---\n"))")
                throw error
            }
        }

        let valid = try await r.run("tiersync admin validate")
        #expect(valid.out.contains("valid governance for tenant 'automaker'"), "\(valid)")
        let key = try await r.run("tiersync admin release-key")
        let keyFile = r.hubData + "/keys/automaker.release.key"
        #expect(key.out.contains("wrote \(keyFile)") && key.out.contains("release key of automaker"), "\(key)")
        #expect(try FileManager.default.attributesOfItem(atPath: keyFile)[.posixPermissions] as? Int == 0o600)

        // The README's publish is "v2 as a trial": v1 first, to everyone (the same line without --targets).
        let v1 = try await tiersync(r.resolve(try r.line("tiersync admin publish")).filter { $0 != "--targets" && $0 != "de" }, cwd: r.adminDir)
        #expect(v1.status == 0 && v1.out.contains("published release v1 of automaker"), "\(v1)")
        // de and dealer-042 enrolled before HQ had a key: they learn it from their parent and apply v1.
        try await waitFor("de and dealer-042 apply v1", release: 1)

        let trial = try await r.run("tiersync admin publish")
        #expect(trial.out.contains("published release v2 of automaker"), "\(trial)")
        try await waitFor("the trial reaches de and its dealer", release: 2)
        let rollout = try await r.run("tiersync admin rollout ")
        #expect(rollout.out.hasPrefix("rollout 3: "), "\(rollout)")
        let rollback = try await r.run("tiersync admin rollback")
        #expect(rollback.out.hasPrefix("rollout 4 (rollback"), "\(rollback)")
        try await waitFor("everyone back on v1", release: 1)

        let overlayKey = try await r.run("tiersync admin overlay-key")
        let overlayKeyFile = r.adminDir + "/de-overlay.key"
        #expect(overlayKey.out.contains("wrote de-overlay.key: overlay key") && overlayKey.out.contains("for automaker/de"), "\(overlayKey)")
        #expect(try FileManager.default.attributesOfItem(atPath: overlayKeyFile)[.posixPermissions] as? Int == 0o600)
        let keyData = try #require(FileManager.default.contents(atPath: overlayKeyFile))
        let parsed = try JSONDecoder().decode(OverlayKeyFile.self, from: keyData)
        #expect(parsed.tenant == "automaker" && parsed.node == "de")

        let overlay = try await r.run("tiersync overlay publish")
        #expect(overlay.out.contains("published overlay de#1"), "\(overlay)")
        try await waitFor("de's dealer applies v1 ⊕ de#1", release: 1, overlay: "de#1")

        // The dealer's report travels up through de to HQ: run the line until it shows it.
        var status = try await r.run("tiersync admin rollout-status")
        let deadline = Date().addingTimeInterval(30)
        while !status.out.split(separator: "\n").contains(where: { $0.hasPrefix("dealer-042") && $0.contains(" v1 ") && $0.contains("de#1") && $0.contains("applied") }) {
            guard Date() < deadline else {
                Issue.record("HQ's rollout status does not show dealer-042 on v1 ⊕ de#1: \(status)")
                break
            }
            try await Task.sleep(for: .milliseconds(200))
            status = try await r.run("tiersync admin rollout-status")
        }
        #expect(status.out.contains("tenant automaker: rollout 4"), "\(status)")
        let effective = try await r.run("tiersync governance")
        #expect(effective.out.hasPrefix("release v1 ⊕ overlay de#1, applied"), "\(effective)")
        #expect(effective.out.contains("allocation.warranty-specification.then.sla = 3h"), "\(effective)")
    }

    /// Operating: nodes and quarantine at HQ and on the country's --data directory.
    static func operating(_ r: ReadmeRun, running: Running, dealer: NodeStore) async throws {
        let nodes = try await r.run("tiersync admin nodes")
        #expect(nodes.out.contains("hq/de/dealer-042") && nodes.out.contains("hq/de "), "\(nodes)")
        // The root is the hub itself, not a node that never showed up (helper 71).
        let rootRow = try #require(nodes.out.split(separator: "\n").first { $0.hasPrefix("hq ") }, "\(nodes)")
        #expect(rootRow.hasSuffix("- (the hub)") && !rootRow.contains("never"), "\(nodes)")
        let countryData = r.deDir + "/directory"
        // For dealers behind a country: the same line on the country's --data directory, which saw the dealer.
        let atCountry = try await r.run("tiersync admin nodes") { $0.map { $0 == r.hubData ? countryData : $0 } }
        let dealerRow = try #require(atCountry.out.split(separator: "\n").first { $0.hasPrefix("dealer-042") }, "\(atCountry)")
        #expect(dealerRow.contains("hq/de/dealer-042") && !dealerRow.contains("never"), "\(atCountry)")
        // The country's directory is its node's alone: a hub served on it beside the node is refused (helper 80).
        let clash = try await tiersync(["hub", "serve", "--data", countryData, "--insecure-dev-http", "--port", "0"], cwd: r.adminDir, timeout: 60)
        #expect(clash.status == 1 && clash.err.contains("another hub serves \(countryData) already"), "\(clash)")
        // The country is the root of its own directory (its parent, HQ, is not listed there).
        let countryRow = try #require(atCountry.out.split(separator: "\n").first { $0.hasPrefix("de ") }, "\(atCountry)")
        #expect(!countryRow.contains("never"), "\(atCountry)")

        // A push with a wrong type, sent to the country with the dealer's credential: the country quarantines it.
        let credential = try #require(try dealer.meta("credential"))
        let hlc = WallClock.nowMillis() << 16
        let body = """
            {"through":900000,"changes":[{"origin":"dealer-042","seq":900000,"hlc":\(hlc),"table":"customers","id":"cust-bad",\
            "op":"upsert","fields":{"last_name":"Weber","key_account":"yes"}}]}
            """
        let client = running.client(baseURL: r.countryURL, caFile: r.pki + "/ca.pem")
        let reply = try await client.send("POST", "/v1/push", body: Data(body.utf8), credential: credential)
        #expect(reply.status == 422, "\(reply.status) \(reply.text)")

        let before = listing(countryData)
        let hqQuarantine = try await r.run("tiersync admin quarantine") { $0.filter { $0 != "[--verbose]" } }
        #expect(hqQuarantine.out == "no quarantined changes\n", "\(hqQuarantine)")
        let verbose = try await r.run("tiersync admin quarantine") { $0.map { $0 == "[--verbose]" ? "--verbose" : $0 } }
        #expect(verbose.out == "no quarantined changes\n", "\(verbose)")
        let countryQuarantine = try await tiersync(r.resolve(try r.line("tiersync admin quarantine")).filter { $0 != "[--verbose]" }
            .map { $0 == r.hubData ? countryData : $0 }, cwd: r.adminDir)
        #expect(countryQuarantine.status == 0, "\(countryQuarantine)")
        #expect(countryQuarantine.out.contains("refused by country node de (its store: \(r.deDir)/de.sqlite)"), "\(countryQuarantine)")
        #expect(countryQuarantine.out.contains("dealer-042#900000 from dealer-042")
                && countryQuarantine.out.contains("field 'customers.key_account' of record 'cust-bad' must be boolean"), "\(countryQuarantine)")
        // The same from the country's store directly.
        let byStore = try await tiersync(["admin", "quarantine", "--db", r.deDir + "/de.sqlite", "--verbose"], cwd: r.adminDir)
        #expect(byStore.status == 0 && byStore.out.contains("dealer-042#900000") && byStore.out.contains("\"key_account\""), "\(byStore)")
        // And the country's rollout status: its subtree, from its own store.
        let countryStatus = try await tiersync(["admin", "rollout-status", "--data", countryData, "--tenant", "automaker"], cwd: r.adminDir)
        #expect(countryStatus.status == 0, "\(countryStatus)")
        #expect(countryStatus.out.split(separator: "\n").contains { $0.hasPrefix("dealer-042") && $0.contains("de#1") }, "\(countryStatus)")
        #expect(listing(countryData) == before, "quarantine and rollout-status created no file in the country's --data directory")
        #expect(!FileManager.default.fileExists(atPath: countryData + "/tenants/automaker.sqlite"))

        // Backup and restore: the running hub's data, and the dealer's store, copied as documented.
        let hubCopy = r.dir + "/backup-hq", dealerCopy = r.dir + "/backup-dealer.sqlite"
        let hubBackup = try await r.run("tiersync backup --data") { $0.map { $0 == "NEW-DIR" ? hubCopy : $0 } }
        #expect(FileManager.default.fileExists(atPath: hubCopy + "/hub.sqlite") && FileManager.default.fileExists(atPath: hubCopy + "/tenants/automaker.sqlite"),
                "\(hubBackup)")
        let copiedHQ = try NodeStore(path: hubCopy + "/tenants/automaker.sqlite")
        #expect(try copiedHQ.headSeq() > 0, "the hub's copy holds its change log")
        _ = try await r.run("tiersync backup --db") { $0.map { $0 == "FILE" ? r.dealerDir + "/node.sqlite" : $0 == "NEW-FILE" ? dealerCopy : $0 } }
        #expect(try NodeStore(path: dealerCopy).identity()?.node == "dealer-042", "the dealer's copy is its store")
    }

    /// The URL in the line `<what> listening on <url>` a hub or country node prints when it is up.
    private static func url(_ output: String, _ what: String) throws -> String {
        try #require(output.split(separator: "\n").first { $0.hasPrefix(what + " listening on ") }.map { String($0.split(separator: " ").last!) })
    }

    @Test("a hub told to stop (SIGTERM) says so when it begins and when it has stopped, and exits 0 (it logged nothing)")
    func hubLogsItsStop() async throws {
        let dir = try TempDir()
        try await withRunning { running in
            let hub = try running.child(["hub", "serve", "--data", dir.path + "/hq", "--insecure-dev-http", "--port", "0"], log: dir.path + "/hub.log")
            _ = try await hub.waitForOutput(containing: "hub listening on")
            await hub.stop()
            #expect(hub.process.terminationReason == .exit && hub.process.terminationStatus == 0, "\(hub.output)")
            let stopping = try #require(hub.output.range(of: "hub stopping"), "\(hub.output)")
            let stopped = try #require(hub.output.range(of: "hub stopped"), "\(hub.output)")
            #expect(stopping.upperBound <= stopped.lowerBound)
        }
    }

    @Test("one process syncs a store, whatever name it is given: an agent run on a symlink to a store another process syncs is refused (the link had a lock file of its own)")
    func storeLockFollowsTheStore() async throws {
        let dir = try TempDir()
        let real = dir.path + "/node.sqlite"
        FileManager.default.createFile(atPath: real, contents: nil)
        try FileManager.default.createSymbolicLink(atPath: dir.path + "/link.sqlite", withDestinationPath: real)
        // Another process syncing the store holds its lock.
        let out = try SpawnedProcess.pipe()
        let holder: SpawnedProcess
        do {
            defer { close(out.write) }
            holder = try SpawnedProcess(executable: "/usr/bin/env", arguments: ["python3", "-c", """
                import fcntl, sys, time
                f = open(sys.argv[1], "a")
                fcntl.flock(f, fcntl.LOCK_EX)
                print("locked", flush=True)
                time.sleep(60)
                """, real + ".lock"], stdout: out.write, stderr: 2)
        } catch {
            close(out.read)
            throw error
        }
        defer {
            kill(holder.processIdentifier, SIGKILL)
            holder.waitUntilExit()
        }
        #expect(SpawnedProcess.readFirstLine(closing: out.read).hasPrefix("locked"))
        // The link fails without the resolved path; the other names show it still holds for them.
        for name in ["link.sqlite", "./node.sqlite", "../\(URL(fileURLWithPath: dir.path).lastPathComponent)/node.sqlite"] {
            let run = try await tiersync(["agent", "run", "--db", name, "--parent", "https://127.0.0.1:1", "--enroll-token", "tse_x"], cwd: dir.path, timeout: 60)
            #expect(run.status != 0 && run.err.contains("another agent or country node is syncing \(name)"), "\(name): \(run)")
        }
    }

    @Test("admin overlay-key runs (it printed its help and wrote nothing) and writes the country's key file")
    func overlayKeyWritesItsFile() async throws {
        let dir = try TempDir()
        let data = dir.path + "/hq"
        func ok(_ arguments: [String]) async throws -> Ran {
            let ran = try await tiersync(arguments, cwd: dir.path)
            #expect(ran.status == 0, "\(ran)")
            return ran
        }
        _ = try await ok(["admin", "create-tenant", "--data", data, "--tenant", "automaker", "--levels", "3"])
        let token = try await ok(["admin", "enroll-token", "--data", data, "--tenant", "automaker", "--node", "de"]).out
        _ = try await HubCatalog(directory: data).redeem(token: token.trimmingCharacters(in: .whitespacesAndNewlines))
        _ = try await ok(["admin", "release-key", "--data", data, "--tenant", "automaker"])
        let ran = try await ok(["admin", "overlay-key", "--data", data, "--tenant", "automaker", "--node", "de", "--out", "de-overlay.key"])
        #expect(!ran.out.contains("OVERVIEW") && ran.out.hasPrefix("wrote de-overlay.key: overlay key"), "\(ran)")
        let file = try #require(FileManager.default.contents(atPath: dir.path + "/de-overlay.key"), "the key file is written")
        let key = try JSONDecoder().decode(OverlayKeyFile.self, from: file)
        #expect(key.tenant == "automaker" && key.node == "de")
        #expect(try FileManager.default.attributesOfItem(atPath: dir.path + "/de-overlay.key")[.posixPermissions] as? Int == 0o600)
        // The root is named as the root (it said "'hq' is a hq", helper 95).
        let root = try await tiersync(["admin", "overlay-key", "--data", data, "--tenant", "automaker", "--node", "hq", "--out", "hq-overlay.key"], cwd: dir.path)
        #expect(root.status != 0 && (root.out + root.err).contains("'hq' is the tenant's root; only countries publish overlays"), "\(root)")
    }

    @Test("options naming an impossible port or a missing or unusable file are refused at once, naming the option and the file; none traps")
    func badOptionsNamed() async throws {
        let dir = try TempDir()
        let notPEM = dir.path + "/notes.txt"
        try "not a certificate\n".write(toFile: notPEM, atomically: true, encoding: .utf8)
        // The hub's directory exists: the options below are what is wrong.
        try FileManager.default.createDirectory(atPath: dir.path + "/hq", withIntermediateDirectories: true)
        let cases: [([String], String)] = [
            (["hub", "serve", "--data", "hq", "--port", "99999", "--insecure-dev-http"], "--port 99999 is not a port: expected 0…65535"),
            (["hub", "serve", "--data", "hq", "--cert", "nofile.pem", "--key", "nokey.pem"], "--cert nofile.pem does not exist"),
            (["hub", "serve", "--data", "hq", "--insecure-dev-http", "--metrics-token-file", "nosuch"], "metrics token file nosuch does not exist"),
            // Foundation takes 99999 as a port; AsyncHTTPClient trapped on it (exit 132).
            (["agent", "run", "--db", "a.sqlite", "--parent", "https://127.0.0.1:99999", "--enroll-token", "tse_x"],
             "invalid port 99999 in parent URL https://127.0.0.1:99999: expected 1…65535"),
            (["node", "serve", "--db", "de.sqlite", "--data", "de", "--port", "0", "--insecure-dev-http", "--parent", "http://127.0.0.1:70000", "--enroll-token", "tse_x"],
             "invalid port 70000"),
            (["agent", "run", "--db", "b.sqlite", "--parent", "https://127.0.0.1:1", "--ca", "nosuch.pem", "--enroll-token", "tse_x"],
             "--ca nosuch.pem does not exist"),
            (["agent", "run", "--db", "c.sqlite", "--parent", "https://127.0.0.1:1", "--ca", notPEM, "--enroll-token", "tse_x"],
             "cannot use the CA file \(notPEM) (NO_CERTIFICATE_OR_CRL_FOUND): expected a PEM certificate"),
            (["agent", "run", "--db", "d.sqlite", "--parent", "https://127.0.0.1:1", "--enroll-token", "tse_x"],
             "cannot reach the parent at https://127.0.0.1:1: nothing is listening there (connection refused)"),
            // By host name: NIO's error listing each address tried was printed raw.
            (["agent", "run", "--db", "e.sqlite", "--parent", "https://localhost:1", "--enroll-token", "tse_x"],
             "cannot reach the parent at https://localhost:1: nothing is listening there (connection refused)"),
            // Ignored before, silently.
            (["hub", "serve", "--postgres", "postgres://nobody@127.0.0.1:1/none", "--insecure-dev-http", "--retention-days", "5"],
             "--retention-days applies to a hub on SQLite (--data); a hub on PostgreSQL keeps 30 days for now"),
            // A time before 1970 trapped its conversion (exit 132).
            (["admin", "publish", "--data", "hq", "--effective-from", "1960-01-01T00:00:00Z", repositoryRoot() + "/fixtures/governance/automaker"],
             "'1960-01-01T00:00:00Z' is before 1970"),
            // A value starting with '-' is the option's value, not another option (helper 72: "missing value").
            (["admin", "publish", "--data", "hq", "--effective-from", "-5x", repositoryRoot() + "/fixtures/governance/automaker"],
             "'-5x' is not a time: use now, +DURATION or -DURATION"),
        ]
        for (arguments, message) in cases {
            let ran = try await tiersync(arguments, cwd: dir.path, timeout: 60)
            #expect(ran.status == 1 || ran.status == 64, "\(ran)")
            #expect(ran.err.contains(message) && !ran.err.contains(".build/checkouts"), "\(ran)")
        }
        // A --ca that did not exist was not kept for later runs; one that does is kept absolute.
        let later = try await tiersync(["agent", "run", "--db", "b.sqlite", "--parent", "https://127.0.0.1:1", "--enroll-token", "tse_x"], cwd: dir.path, timeout: 60)
        #expect(!later.err.contains("nosuch.pem"), "\(later)")
        #expect(try NodeStore(path: dir.path + "/c.sqlite").meta("ca_file") == URL(fileURLWithPath: notPEM).standardizedFileURL.path)

        // Admin commands that wrote or accepted what they should refuse.
        let hub = dir.path + "/hub"
        #expect(try await tiersync(["admin", "create-tenant", "--data", hub, "--tenant", "acme", "--levels", "3"], cwd: dir.path).status == 0)
        let ghost = try await tiersync(["admin", "release-key", "--data", hub, "--tenant", "ghost"], cwd: dir.path)
        #expect(ghost.status != 0 && ghost.err.contains("tenant 'ghost' not found") && !FileManager.default.fileExists(atPath: hub + "/keys/ghost.release.key"), "\(ghost)")
        // A second key for a tenant that has one is refused before its file is written (it was
        // written, then refused: a private key no node accepts), pointing at rotation.
        #expect(try await tiersync(["admin", "release-key", "--data", hub, "--tenant", "acme"], cwd: dir.path).status == 0)
        let second = try await tiersync(["admin", "release-key", "--data", hub, "--tenant", "acme", "--out", dir.path + "/another.key"], cwd: dir.path)
        #expect(second.status == 1 && second.err.contains("already has a release key") && second.err.contains("rotate-release-key")
                && !FileManager.default.fileExists(atPath: dir.path + "/another.key"), "\(second)")
        try "a long enough password\n".write(toFile: dir.path + "/pw", atomically: true, encoding: .utf8)
        let dealerScope = try await tiersync(["admin", "user", "add", "--data", hub, "--tenant", "acme", "--name", "bob", "--role", "viewer",
                                              "--scope", "dealer-043", "--password-file", dir.path + "/pw"], cwd: dir.path)
        #expect(dealerScope.status != 0 && dealerScope.err.contains("an administrator's scope is the tenant's root (hq) or a node directly below it"), "\(dealerScope)")
        // Beside a real tenant, a mistyped one is refused (it made a stray two-level tenant, helper 102);
        // on a hub with no tenant at all, the first token creates it, saying so.
        let typo = try await tiersync(["admin", "enroll-token", "--data", hub, "--tenant", "acmee", "--node", "d1"], cwd: dir.path)
        #expect(typo.status != 0 && typo.err.contains("no tenant 'acmee' here (tenants: acme)"), "\(typo)")
        let fresh = try await tiersync(["admin", "enroll-token", "--data", dir.path + "/fresh-hub", "--tenant", "acmee", "--node", "d1"], cwd: dir.path)
        #expect(fresh.status == 0 && fresh.err.contains("note: there was no tenant 'acmee': created it with 2 levels"), "\(fresh)")
    }

    /// Dealer d1's store (under hq, tenant acme) in `dir`, holding customer c-1.
    static func dealerStore(in dir: TempDir) throws -> (path: String, store: NodeStore) {
        let path = dir.path + "/n.sqlite"
        let store = try NodeStore(path: path)
        try store.setIdentity(NodeIdentity(tenant: "acme", node: "d1", parent: "hq"))
        try store.commit([.upsert("customers", id: "c-1", ["last_name": "One"])])
        return (path, store)
    }

    @Test("node commands refuse what trapped or silently rewrote: a negative --limit (a trap), `contact add --id` of an existing contact (rewrote it), a timestamp the formatter rolled over (November 31 counted in December)")
    func nodeCommandsRefuse() async throws {
        let dir = try TempDir()
        let (db, store) = try Self.dealerStore(in: dir)
        for command in [["contact", "list"], ["record", "list", "customers"], ["conflicts"]] {
            let negative = try await tiersync(command + ["--db", db, "--limit=-1"], cwd: dir.path)
            #expect(negative.status == 64 && negative.err.contains("--limit must be at least 1, got -1"), "\(negative)")
        }
        // A blank topic is no topic (helper 90: stored as given).
        for blank in ["", "   "] {
            let refused = try await tiersync(["contact", "add", "--db", db, "--customer", "c-1", "--topic", blank], cwd: dir.path)
            #expect(refused.status == 64 && refused.err.contains("--topic is what the contact is about"), "\(refused)")
        }
        let add = ["contact", "add", "--db", db, "--customer", "c-1", "--topic", "brakes", "--id", "int-1"]
        #expect(try await tiersync(add, cwd: dir.path).status == 0)
        // A list cut short says so (helper 90: "100 record(s)" of 506 read as all there were).
        try store.commit((2...4).map { .upsert("customers", id: "c-\($0)", ["last_name": .string("N\($0)")]) })
        let cut = try await tiersync(["record", "list", "--db", db, "customers", "--limit", "2"], cwd: dir.path)
        #expect(cut.out.contains("the first 2 record(s); there are more"), "\(cut)")
        #expect(try await tiersync(["record", "list", "--db", db, "customers", "--limit", "4"], cwd: dir.path).out.contains("\n4 record(s)"))
        let contacts = try await tiersync(["contact", "list", "--db", db, "--limit", "1"], cwd: dir.path)
        #expect(contacts.out.contains("1 contact(s)"), "\(contacts)")
        let again = try await tiersync(add + ["--summary", "another"], cwd: dir.path)
        #expect(again.status != 0 && again.err.contains("a contact 'int-1' exists"), "\(again)")
        #expect(try store.record(table: "interactions", id: "int-1")?.state.values["summary"] == nil)
        for time in ["2026-11-31T10:00:00Z", "2026-11-20T10:00:00+25:00"] {
            let put = try await tiersync(["record", "put", "--db", db, "interactions", "int-2", "customer_id=c-1", "created_at=\(time)"], cwd: dir.path)
            #expect(put.status != 0 && put.err.contains("created_at"), "\(put)")
        }
        // Another node's report on itself: refused here (the parent refused it for good, retried for ever).
        let forged = try await tiersync(["record", "put", "--db", db, "governance_status", "d2", "state=refused", "message=tampered"], cwd: dir.path)
        #expect(forged.status != 0 && forged.err.contains("is node 'd2''s report on itself"), "\(forged)")
        // What the parent refused and the agent retries is shown, not "0 waiting" alone.
        let written = try store.commit([.upsert("customers", id: "c-2", ["last_name": "Two"])])
        try store.scheduleRetries(written.map { RejectedChange(change: $0, rejection: ChangeRejection(.forbidden, "outside the scope")) })
        let status = try await tiersync(["status", "--db", db], cwd: dir.path)
        #expect(status.out.contains("refused:     1 forbidden change(s) refused by the parent, retried"), "\(status)")
        // HQ's store pushes nowhere: nothing "waits" there.
        let hq = try NodeStore(path: dir.path + "/hq.sqlite")
        try hq.setIdentity(NodeIdentity(tenant: "acme", node: "hq", parent: nil))
        try hq.commit([.upsert("customers", id: "c-9", ["last_name": "Nine"])])
        let hqStatus = try await tiersync(["status", "--db", dir.path + "/hq.sqlite"], cwd: dir.path)
        #expect(hqStatus.out.contains("push:        none (no parent") && !hqStatus.out.contains("waiting"), "\(hqStatus)")
    }

    @Test("hub serve names the file or port it cannot use: a certificate that is none, a key that is not the certificate's, a port another process listens on (NIO's answers named neither)")
    func hubServeNamesWhatFails() async throws {
        let dir = try TempDir()
        #expect(try await tiersync(["admin", "gen-certs", "--out", "certs"], cwd: dir.path).status == 0)
        let cases: [([String], String)] = [
            (["--cert", "certs/server-key.pem", "--key", "certs/server-key.pem"], "cannot use the certificate certs/server-key.pem"),
            (["--cert", "certs/server.pem", "--key", "certs/server.pem"], "cannot use the private key certs/server.pem"),
            (["--cert", "certs/server.pem", "--key", "certs/ca-key.pem"], "the private key certs/ca-key.pem does not belong to the certificate certs/server.pem"),
        ]
        for (options, message) in cases {
            let ran = try await tiersync(["hub", "serve", "--data", "hq", "--port", "0"] + options, cwd: dir.path, timeout: 60)
            #expect(ran.status == 1 && ran.err.contains(message) && !ran.err.contains("failedToLoad"), "\(ran)")
        }
        try await withRunning { running in
            let hub = try await running.hub(directory: dir.path + "/running")
            let taken = try await tiersync(["hub", "serve", "--data", "hq", "--port", "\(hub.port)", "--cert", "certs/server.pem", "--key", "certs/server-key.pem"],
                                           cwd: dir.path, timeout: 60)
            #expect(taken.status == 1 && taken.err.contains("port \(hub.port) on 127.0.0.1 is in use") && !taken.err.contains("errno"), "\(taken)")
        }
    }

    @Test("administrative acts done from the command line are in the audit log, as the API's are (enrollment tokens, release keys, publish, rollout, revoke were not)")
    func commandLineActsAreAudited() async throws {
        let dir = try TempDir()
        let fixtures = repositoryRoot() + "/fixtures/governance/automaker"
        for command in [["admin", "create-tenant", "--data", "hub", "--tenant", "automaker", "--levels", "3"],
                        ["admin", "enroll-token", "--data", "hub", "--tenant", "automaker", "--node", "de"],
                        ["admin", "release-key", "--data", "hub", "--tenant", "automaker"],
                        ["admin", "publish", "--data", "hub", "--effective-from", "-5m", fixtures],
                        ["admin", "rollout", "--data", "hub", "--tenant", "automaker", "--release", "1"],
                        ["admin", "revoke", "--data", "hub", "--tenant", "automaker", "--node", "de"]] {
            let ran = try await tiersync(command, cwd: dir.path)
            #expect(ran.status == 0, "\(ran)")
            if command[1] == "publish" {
                // -5m: effective five minutes ago.
                let said = try #require(ran.out.split(separator: " ").drop { $0 != "from" }.dropFirst().first, "\(ran)")
                let effective = try #require(ISO8601DateFormatter().date(from: String(said.trimmingCharacters(in: .punctuationCharacters))), "\(ran)")
                #expect(effective < Date().addingTimeInterval(-240) && effective > Date().addingTimeInterval(-400), "\(ran)")
            }
        }
        // Text others read is refused with what the API refuses (a bidirectional override here).
        let notes = try await tiersync(["admin", "publish", "--data", "hub", "--notes", "safe\u{202E}txt.exe", fixtures], cwd: dir.path)
        #expect(notes.status == 64 && notes.err.contains("--notes may not hold control characters"), "\(notes)")
        let audit = try await tiersync(["admin", "user", "audit", "--data", "hub", "--tenant", "automaker", "--csv"], cwd: dir.path)
        for action in ["enrollment_token.issue", "release_key.register", "release.publish", "release.rollout", "node.revoke"] {
            #expect(audit.out.contains(action), "\(action) missing from:\n\(audit.out)")
        }
        #expect(audit.out.contains("cli:") && !audit.out.contains("cli:unknown"), "\(audit.out)")
    }

    @Test("one process serves a SQLite hub's directory: while it runs, a second hub serve and migrate-tenant are refused (the move left the pushes the hub accepted meanwhile behind)")
    func servingHubHoldsItsDirectory() async throws {
        let dir = try TempDir()
        #expect(try await tiersync(["admin", "create-tenant", "--data", "hub", "--tenant", "acme", "--levels", "3"], cwd: dir.path).status == 0)
        try await withChild(["hub", "serve", "--data", dir.path + "/hub", "--insecure-dev-http", "--port", "0"], log: dir.path + "/hub.log") { hub in
            _ = try await hub.waitForOutput(containing: "hub listening on")
            #expect(!hub.output.contains("no hub at"), "an existing hub's directory is served without a warning: \(hub.output)")
            let second = try await tiersync(["hub", "serve", "--data", "hub", "--insecure-dev-http", "--port", "0"], cwd: dir.path, timeout: 60)
            #expect(second.status == 1 && second.err.contains("another hub serves hub already"), "\(second)")
            let move = try await tiersync(["admin", "migrate-tenant", "--data", "hub", "--tenant", "acme", "--to-postgres", "postgres://nobody@127.0.0.1:1/none"],
                                          cwd: dir.path, timeout: 60)
            #expect(move.status == 1 && move.err.contains("a hub is serving hub") && !move.err.contains("Usage:"), "\(move)")
        }
        // A directory with no hub in it (a mistyped --data) is served, as a new hub, saying so (helper 71).
        try await withChild(["hub", "serve", "--data", dir.path + "/hbu", "--insecure-dev-http", "--port", "0"], log: dir.path + "/typo.log") { hub in
            let said = try await hub.waitForOutput(containing: "hub listening on")
            #expect(said.contains("no hub at \(dir.path)/hbu yet: serving a new, empty one"), "\(said)")
        }
    }

    @Test("a file that cannot be a node's database is named as such, not as \"SQLite error 26\"; an empty one is not made a store")
    func unusableDatabaseFiles() async throws {
        let dir = try TempDir()
        try "notes, not a database\n".write(toFile: dir.path + "/notes.txt", atomically: true, encoding: .utf8)
        #expect(FileManager.default.createFile(atPath: dir.path + "/empty.sqlite", contents: nil))
        try FileManager.default.createDirectory(atPath: dir.path + "/folder.sqlite", withIntermediateDirectories: false)
        let cases = [("notes.txt", "notes.txt cannot be used as a node's database: the file is not an SQLite database"),
                     ("empty.sqlite", "empty.sqlite is an empty file, not a node database"),
                     ("folder.sqlite", "folder.sqlite cannot be used as a node's database: it is a directory")]
        for (file, message) in cases {
            for command in [["status"], ["contact", "list"]] {
                let ran = try await tiersync(command + ["--db", dir.path + "/" + file], cwd: dir.path)
                #expect(ran.status == 1 && ran.err.contains(message) && !ran.err.contains("SQLite error"), "\(ran)")
            }
        }
        #expect((try FileManager.default.attributesOfItem(atPath: dir.path + "/empty.sqlite")[.size] as? Int) == 0)
        // Another SQLite file (a hub's catalog) is named as such and left as it was: read
        // commands added a node store's tables to it.
        let hub = dir.path + "/hub"
        #expect(try await tiersync(["admin", "create-tenant", "--data", hub, "--tenant", "acme", "--levels", "3"], cwd: dir.path).status == 0)
        let catalog = try Data(contentsOf: URL(fileURLWithPath: hub + "/hub.sqlite"))
        for command in [["status"], ["conflicts"], ["record", "put", "customers", "c-1", "last_name=X"]] {
            let ran = try await tiersync(command + ["--db", hub + "/hub.sqlite"], cwd: dir.path)
            #expect(ran.status == 1 && ran.err.contains("is an SQLite database but not a node's"), "\(ran)")
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: hub + "/hub.sqlite")) == catalog, "the catalog is unchanged")
        // The agent, which makes a new store, names the file too.
        let agent = try await tiersync(["agent", "run", "--db", dir.path + "/notes.txt", "--parent", "https://127.0.0.1:1", "--enroll-token", "tse_x"], cwd: dir.path)
        #expect(agent.status != 0 && agent.err.contains("notes.txt cannot be used as a node's database"), "\(agent)")
    }

    @Test("""
    an erasure's marker and acknowledgement are not written by hand: `record put` and `record delete` refuse them, pointing to \
    `tiersync erase` (a hand-written acknowledgement was a forged proof: HQ's ledger said "erased" of data still on disk)
    """)
    func erasureRecordsAreNotWrittenByHand() async throws {
        let dir = try TempDir()
        let (db, store) = try Self.dealerStore(in: dir)
        let forged = try await tiersync(["record", "put", "--db", db, "erasure_acks", "era-x@d1", "erasure_id=era-x", "node=d1", "records=5",
                                         "log_entries=5", "digest=" + String(repeating: "0", count: 64), "acknowledged_at=2026-12-06T14:09:00Z"], cwd: dir.path)
        #expect(forged.status != 0 && forged.err.contains("the store's own proof"), "\(forged)")
        let marker = try await tiersync(["record", "put", "--db", db, "erasures", "era-x", "subject_table=customers", "subject_id=c-1"], cwd: dir.path)
        #expect(marker.status != 0 && marker.err.contains("tiersync erase --db"), "\(marker)")
        let delete = try await tiersync(["record", "delete", "--db", db, "erasures", "era-x"], cwd: dir.path)
        #expect(delete.status != 0 && delete.err.contains("tiersync erase --db"), "\(delete)")
        #expect(try store.liveRecords(table: "erasure_acks").isEmpty && store.liveRecords(table: "erasures").isEmpty)
        #expect(try store.record(table: "customers", id: "c-1")?.state.isLive == true, "nothing was erased")
    }

    @Test("consent from the CLI: an outbound contact with a purpose needs the customer's consent by its channel; a bare consent field or event is refused (no history)")
    func outboundContactNeedsConsent() async throws {
        let dir = try TempDir()
        let (db, store) = try Self.dealerStore(in: dir)
        let call = ["contact", "add", "--db", db, "--customer", "c-1", "--topic", "new model", "--direction", "outbound", "--purpose", "marketing"]
        let refused = try await tiersync(call, cwd: dir.path)
        #expect(refused.status != 0 && refused.err.contains("customer c-1 has not given consent_marketing_phone"), "\(refused)")
        #expect(try store.liveRecords(table: "interactions").isEmpty)
        for put in [["customers", "c-1", "consent_marketing_phone=true"], ["consent_events", "e-1", "customer_id=c-1", "granted=true"]] {
            let bare = try await tiersync(["record", "put", "--db", db] + put, cwd: dir.path)
            #expect(bare.status != 0 && bare.err.contains("consent is recorded with its history: use `tiersync consent set"), "\(bare)")
        }
        #expect(try store.record(table: "customers", id: "c-1")?.state.liveValues["consent_marketing_phone"] == nil)
        let given = try await tiersync(["consent", "set", "--db", db, "--customer", "c-1", "--purpose", "marketing", "--channel", "phone",
                                        "--grant", "--source", "dealer_visit"], cwd: dir.path)
        #expect(given.status == 0, "\(given)")
        let made = try await tiersync(call, cwd: dir.path)
        #expect(made.status == 0, "\(made)")
        #expect(try store.liveRecords(table: "interactions").first?.values["purpose"] == "marketing")
        // By e-mail the customer gave nothing.
        let byMail = try await tiersync(call + ["--channel", "email"], cwd: dir.path)
        #expect(byMail.status != 0 && byMail.err.contains("has not given consent_marketing_email"), "\(byMail)")
        let inbound = try await tiersync(["contact", "add", "--db", db, "--customer", "c-1", "--topic", "x", "--purpose", "service"], cwd: dir.path)
        #expect(inbound.status == 64 && inbound.err.contains("--purpose is for an outbound contact"), "\(inbound)")
    }

    @Test("backup of a country node's --data directory says the country's records are in its store, and how to copy that too")
    func countryBackupNamesTheStore() async throws {
        let dir = try TempDir()
        let countryData = dir.path + "/de-data", store = dir.path + "/de.sqlite"
        do {
            let mirror = try HubCatalog(directory: countryData)
            // With a dealer's credential: the mirror keeps no tenant database (the country's
            // records are in its store), which is no missing data (helper 102: the backup failed).
            try mirror.replaceDirectory(DirectoryResponse(tenant: "acme", root: "de", nodes: [.init(id: "de", parent: "hq", role: "country"),
                                                                                            .init(id: "de-1", parent: "de", role: "dealer")],
                                                          credentials: [.init(node: "de-1", sha256: String(repeating: "a", count: 64))]))
        }
        try (store + "\n").write(toFile: countryData + "/country-store.path", atomically: true, encoding: .utf8)
        let ran = try await tiersync(["backup", "--data", countryData, "--out", dir.path + "/copy"], cwd: dir.path)
        #expect(ran.status == 0 && ran.out.contains("backup complete: 1 database"), "\(ran)")
        #expect(ran.err.contains("is a country node's --data directory: its records are in its store \(store), not copied here")
                && ran.err.contains("tiersync backup --db \(store) --out FILE"), "\(ran)")
        // A hub's directory: no such note.
        let hub = dir.path + "/hub"
        #expect(try await tiersync(["admin", "create-tenant", "--data", hub, "--tenant", "acme"], cwd: dir.path).status == 0)
        let hubCopy = try await tiersync(["backup", "--data", hub, "--out", dir.path + "/hub-copy"], cwd: dir.path)
        #expect(hubCopy.status == 0 && !hubCopy.err.contains("note:"), "\(hubCopy)")
    }

    @Test("read commands (quarantine, nodes, rollout-status) create nothing, and say what to pass when the data is not there")
    func readCommandsCreateNothing() async throws {
        let dir = try TempDir()
        let hubData = dir.path + "/hq", countryData = dir.path + "/de-data", empty = dir.path + "/empty"
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        let created = try await tiersync(["admin", "create-tenant", "--data", hubData, "--tenant", "acme", "--levels", "3"], cwd: dir.path)
        #expect(created.status == 0, "\(created)")
        // A country's --data directory: the mirror of HQ's directory it keeps, rooted at the country.
        do {
            let mirror = try HubCatalog(directory: countryData)
            try mirror.replaceDirectory(DirectoryResponse(tenant: "acme", root: "de", nodes: [
                .init(id: "de", parent: "hq", role: "country"), .init(id: "d1", parent: "de", role: "dealer"),
            ], credentials: []))
        }
        let reads: [[String]] = [["admin", "quarantine"], ["admin", "nodes"], ["admin", "rollout-status"]]

        for read in reads {
            let before = listing(dir.path)
            func expectRefused(_ data: String, tenant: String, _ message: String) async throws {
                let ran = try await tiersync(read + ["--data", data, "--tenant", tenant], cwd: dir.path)
                #expect(ran.status != 0 && ran.err.contains(message), "\(ran)")
                #expect(listing(dir.path) == before, "\(read.joined(separator: " ")) --data \(data) created nothing")
            }
            try await expectRefused(dir.path + "/missing", tenant: "acme",
                                    "Error: no directory \(dir.path)/missing: give the --data directory of `tiersync hub serve`")
            #expect(!FileManager.default.fileExists(atPath: dir.path + "/missing"))
            try await expectRefused(empty, tenant: "acme", "Error: \(empty) holds no hub data (no hub.sqlite)")
            try await expectRefused(hubData, tenant: "other", "Error: no tenant 'other' in \(hubData) (tenants there: acme)")
            try await expectRefused(countryData, tenant: "other", "Error: no tenant 'other' in \(countryData) (tenants there: acme)")
            if read[1] != "nodes" {
                // The country's records are in its store, which this directory does not name.
                try await expectRefused(countryData, tenant: "acme",
                                        "is the --data directory of country node 'de': it holds only the directory the country mirrors from HQ")
            }
            // The hub's tenant whose database the hub never opened: answered without creating it.
            let ran = try await tiersync(read + ["--data", hubData, "--tenant", "acme"], cwd: dir.path)
            #expect(ran.status == 0, "\(ran)")
            #expect(listing(dir.path) == before, "\(read.joined(separator: " ")) created nothing")
            #expect(!FileManager.default.fileExists(atPath: hubData + "/tenants/acme.sqlite"))
        }
        let nodes = try await tiersync(["admin", "nodes", "--data", countryData, "--tenant", "acme"], cwd: dir.path)
        #expect(nodes.status == 0 && nodes.out.contains("hq/de/d1"), "\(nodes)")
        let quarantine = try await tiersync(["admin", "quarantine", "--data", countryData, "--tenant", "acme"], cwd: dir.path)
        #expect(quarantine.err.contains("run `tiersync admin quarantine --db <that file>`"), "\(quarantine)")
    }
}

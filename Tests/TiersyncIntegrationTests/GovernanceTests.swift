import Foundation
import Testing
import TiersyncAgent
import TiersyncCore
import TiersyncGovernance
import TiersyncServer
import TiersyncStore
import TiersyncTestSupport

/// What a node runs: the release version and overlay it applied, and its effective config.
private func inForce(_ store: NodeStore) throws -> (release: Int?, overlay: String?, effective: ConfigValue?) {
    guard let a = try store.appliedGovernance() else { return (nil, nil, nil) }
    return (a.release, a.overlay, try a.effective.map { try JSONDecoder().decode(ConfigValue.self, from: Data($0.utf8)) })
}

private func fixture(_ path: String) -> String { repositoryRoot() + "/fixtures/governance/" + path }

/// The automaker fixture with one allocation SLA changed: a distinguishable next release.
private func automaker(sla: String, in dir: TempDir, name: String) throws -> CompiledGovernance {
    let copy = dir.path + "/" + name
    try FileManager.default.copyItem(atPath: fixture("automaker"), toPath: copy)
    let file = copy + "/allocation.yaml"
    let text = try String(contentsOfFile: file, encoding: .utf8)
    // warranty-specification's SLA (4h in the fixture) is the one overlays shorten.
    let marker = "  - id: warranty-specification"
    let parts = text.components(separatedBy: marker)
    #expect(parts.count == 2)
    let rest = parts[1].replacingOccurrences(of: "sla: 4h", with: "sla: \(sla)", options: [], range: parts[1].range(of: "sla: 4h"))
    try (parts[0] + marker + rest).write(toFile: file, atomically: true, encoding: .utf8)
    return try GovernanceCompiler.compile(directory: copy)
}

@Suite("Governance releases", .serialized)
struct GovernanceTests {
    @Test("""
    Releases cascade HQ → country → dealer with signatures checked at every node; a country overlay applies \
    field by field within HQ's bounds, an overstepping or forged overlay and a tampered release are refused at \
    the dealer; a trial reaches only its targets; rollback restores; an offline dealer catches up to the newest \
    release only; rollout status reaches HQ
    """, arguments: StorageEngine.testable)
    func cascade(engine: StorageEngine) async throws {
        let dir = try TempDir()
        try await withHubDatabase(engine) { postgres in
            try await withRunning { running in
                let hub = try await running.hub(directory: dir.path, postgres: postgres)
                try await hub.catalogStore.createTenant("automaker", levels: 3)
                let hqKey = GovernanceSigningKey()
                try await hub.catalogStore.setReleaseKey(hqKey.publicKey.base64, for: "automaker")
                let de = try await running.country(hub: hub, tenant: "automaker", node: "de", directory: dir.path)
                let fr = try await running.country(hub: hub, tenant: "automaker", node: "fr", directory: dir.path)
                var dealers: [NodeID: RunningAgent] = [:]
                for (dealer, country) in [("de-1", de), ("de-2", de), ("fr-1", fr)] as [(NodeID, RunningCountry)] {
                    dealers[dealer] = try await running.agent(enrolling: dealer, parent: dealer.rawValue.hasPrefix("de") ? "de" : "fr", tenant: "automaker",
                                                              hub: hub, parentURL: country.url, directory: dir.path)
                }
                let stores: [NodeID: NodeStore] = ["de": de.store, "fr": fr.store, "de-1": dealers["de-1"]!.store,
                                                   "de-2": dealers["de-2"]!.store, "fr-1": dealers["fr-1"]!.store]
                // Every node learned HQ's key at enrollment (dealers through their country).
                for (node, store) in stores { #expect(try store.meta(GovernanceFollower.keyMeta) == hqKey.publicKey.base64, "\(node)") }
                let hq = try await hub.tenantStore(for: "automaker")
                let nodes = try await hub.catalogStore.nodes(of: "automaker")
                let publisher = GovernancePublisher(store: hq, tenant: "automaker", key: hqKey, tree: try await hub.catalogStore.tree(of: "automaker"))

                // 1. v1 to everyone: every node runs exactly the release.
                let v1 = try GovernanceCompiler.compile(directory: fixture("automaker"))
                let started = ContinuousClock.now
                try await publisher.publish(v1)
                try await eventually(timeout: 30, "every node applies v1") { try stores.values.allSatisfy { try inForce($0).release == 1 } }
                let spread = ContinuousClock.now - started
                // Seconds, not the long-poll's wait: a bound for a loaded run, not a measure.
                #expect(spread < .seconds(25), "v1 reached every node in \(spread)")
                for (node, store) in stores { #expect(try inForce(store).effective == v1.config, "\(node) runs v1 as published") }

                // 2. de publishes its overlay within bounds: de's dealers run v1 ⊕ overlay, field by field; fr's do not.
                let deKey = GovernanceSigningKey()
                let deKeyFile = OverlayKeyFile(tenant: "automaker", node: "de", privateKey: deKey.base64,
                                               certificate: try hqKey.certify(OverlayCertificate(tenant: "automaker", node: "de", publicKey: deKey.publicKey.base64, issuedAtMillis: 0)))
                let source = try OverlaySource.parse(yaml: try String(contentsOfFile: fixture("overlays/de.yaml"), encoding: .utf8), file: "de.yaml")
                let overlay = try OverlayPublisher.publish(source, keyFile: deKeyFile, store: de.store)
                try await eventually(timeout: 30, "de's dealers apply the overlay") {
                    try ["de-1", "de-2"].allSatisfy { try inForce(stores[$0]!).overlay == "de#1" }
                }
                let expected = overlay.apply(to: v1.config)
                #expect(overlay.set.count == 4)
                for dealer in ["de-1", "de-2"] as [NodeID] {
                    let effective = try #require(try inForce(stores[dealer]!).effective)
                    let leaves = Dictionary(uniqueKeysWithValues: effective.leaves().map { ($0.path, $0.value) })
                    for (path, value) in v1.config.leaves() {
                        let want = expectedLeaf(path, base: value, overlay: overlay)
                        #expect(leaves[path] == want, "\(dealer): \(path) is \(leaves[path].map(\.description) ?? "missing"), expected \(want)")
                    }
                    for (path, value) in overlay.set { #expect(v1.config[path: path] != value && effective[path: path] == value, "\(dealer) overrides \(path)") }
                    #expect(effective == expected)
                }
                #expect(try inForce(stores["fr-1"]!).effective == v1.config, "fr's dealer has no overlay")

                // 3. An overlay beyond HQ's bounds is refused when published, naming field and limit…
                let outOfBounds = try OverlaySource.parse(yaml: try String(contentsOfFile: fixture("overlays/de-out-of-bounds.yaml"), encoding: .utf8),
                                                          file: "de-out-of-bounds.yaml")
                let refusal = try #require(throws: OverlayPublisher.Failure.self) { try OverlayPublisher.publish(outOfBounds, keyFile: deKeyFile, store: de.store) }
                let issue = try #require(refusal.issues?.issues.first)
                #expect(issue.field == "overlay.set.allocation.warranty-specification.then.sla")
                #expect(issue.message.contains("8h is longer than HQ's 4h") && issue.message.contains("shorten only"), "\(issue)")
                #expect(issue.line > 1)
                // …and at the dealer too, when a country serves one anyway (bypassing its own check).
                var oversteps = overlay
                oversteps.sequence = 2
                oversteps.set = ["allocation.warranty-specification.then.sla": .string("8h")]
                try de.store.putGovernanceDocument(StoredGovernanceDocument(kind: "overlay", key: "de", seq: 2, body: try json(deKey.sign(oversteps, as: .overlay, certificate: deKeyFile.certificate))))
                try await eventually(timeout: 30, "de-1 refuses the overstepping overlay") {
                    try (stores["de-1"]!.currentGovernance()?.message ?? "").contains("overlay de#2 refused")
                }
                let refusedMessage = try #require(try stores["de-1"]!.currentGovernance()?.message)
                #expect(refusedMessage.contains("allocation.warranty-specification.then.sla: 8h is longer than HQ's 4h (HQ's limit: shorten only)"), "\(refusedMessage)")
                #expect(try inForce(stores["de-1"]!).effective == v1.config, "the refused overlay is not applied; the release alone is")

                // 4. A forged overlay: signed by a key HQ never certified (with a certificate HQ never signed).
                let forger = GovernanceSigningKey()
                let forgedCertificate = try forger.certify(OverlayCertificate(tenant: "automaker", node: "de", publicKey: forger.publicKey.base64, issuedAtMillis: 0))
                var forged = overlay
                forged.sequence = 3
                forged.set = ["queues.country-dialogue-centre.name": .string("Forged")]
                try de.store.putGovernanceDocument(StoredGovernanceDocument(kind: "overlay", key: "de", seq: 3, body: try json(forger.sign(forged, as: .overlay, certificate: forgedCertificate))))
                try await eventually(timeout: 30, "de-1 refuses the forged overlay") {
                    try (stores["de-1"]!.currentGovernance()?.message ?? "").contains("not signed by HQ's key")
                }
                #expect(try inForce(stores["de-1"]!).effective?[path: "queues.country-dialogue-centre.name"] == v1.config[path: "queues.country-dialogue-centre.name"])
                // The country restores its genuine overlay.
                try OverlayPublisher.publish(source, keyFile: deKeyFile, store: de.store)
                try await eventually(timeout: 30, "de-1 back on the genuine overlay") { try inForce(stores["de-1"]!).overlay == "de#4" }

                // 5. A release altered at the relaying country: the dealer refuses it and keeps what it runs.
                let genuine = try #require(try de.store.governanceDocuments(kind: "release").first { $0.seq == 1 })
                var envelope = try #require(SignedDocument(json: genuine.body))
                var tampered = try JSONDecoder().decode(Release.self, from: Data(base64Encoded: envelope.payload)!)
                tampered.config.replace(path: "allocation.key-accounts.then.sla", with: .string("1w"))
                envelope.payload = try JSONEncoder().encode(tampered).base64EncodedString()
                try de.store.putGovernanceDocument(StoredGovernanceDocument(kind: "release", key: "1", seq: 1, body: try json(envelope)))
                try await eventually(timeout: 30, "de-1 refuses the tampered release") {
                    try stores["de-1"]!.currentGovernance()?.state == "refused"
                }
                let tamperMessage = try #require(try stores["de-1"]!.currentGovernance()?.message)
                #expect(tamperMessage.contains("release 1") && tamperMessage.contains("signature does not match"), "\(tamperMessage)")
                #expect(try inForce(stores["de-1"]!).effective?[path: "allocation.key-accounts.then.sla"] == v1.config[path: "allocation.key-accounts.then.sla"])
                // HQ sees the refusal in the rollout status (the dealer's status record synced up).
                try await eventually(timeout: 30, "HQ sees de-1's refusal") {
                    try await GovernanceStatusReport.rows(nodes: nodes, store: hq).first { $0.node == "de-1" }?.state == "refused"
                }
                try de.store.putGovernanceDocument(genuine)
                try await eventually(timeout: 30, "de-1 applies the genuine release again") { try stores["de-1"]!.currentGovernance()?.state == "applied" }

                // 6. A trial: v2 to de only. de's branch runs v2; fr's branch runs v1 and never received v2.
                let v2 = try automaker(sla: "210m", in: dir, name: "v2")
                try await publisher.publish(v2, targets: ["de"])
                try await eventually(timeout: 30, "de's branch applies v2") { try ["de", "de-1", "de-2"].allSatisfy { try inForce(stores[$0]!).release == 2 } }
                try await Task.sleep(for: .seconds(1))
                for node in ["fr", "fr-1"] as [NodeID] {
                    #expect(try inForce(stores[node]!).release == 1, "\(node) stays on v1")
                    #expect(try stores[node]!.governanceDocuments(kind: "release").map(\.seq) == [1], "\(node) never received v2")
                }
                #expect(try inForce(stores["de-1"]!).effective == overlay.apply(to: v2.config), "de-1 runs v2 ⊕ de's overlay")

                // 7. Rollback: every node returns to v1 (de's dealers with de's overlay).
                let rollback = try await publisher.rollback()
                #expect(rollback.stages == [Rollout.Stage(release: 1, targets: nil)])
                try await eventually(timeout: 30, "every node back on v1") { try stores.values.allSatisfy { try inForce($0).release == 1 } }
                for (node, store) in stores {
                    let want = node.rawValue.hasPrefix("de") ? overlay.apply(to: v1.config) : v1.config
                    #expect(try inForce(store).effective == want, "\(node) runs v1 again")
                }

                // 8. fr-1 goes offline; v3 and v4 are published; back online it applies v4 only.
                await dealers["fr-1"]!.stop()
                let historyBefore = try stores["fr-1"]!.governanceHistory().count
                try await publisher.publish(try automaker(sla: "200m", in: dir, name: "v3"))
                try await eventually(timeout: 30, "fr applies v3") { try inForce(fr.store).release == 3 }
                let v4 = try automaker(sla: "190m", in: dir, name: "v4")
                try await publisher.publish(v4)
                try await eventually(timeout: 30, "the online nodes apply v4") {
                    try ["de", "fr", "de-1", "de-2"].allSatisfy { try inForce(stores[$0]!).release == 4 }
                }
                _ = try running.agent(store: stores["fr-1"]!, parentURL: fr.url, caFile: hub.caFile)
                try await eventually(timeout: 30, "fr-1 catches up") { try inForce(stores["fr-1"]!).release == 4 }
                let caughtUp = try stores["fr-1"]!.governanceHistory().dropFirst(historyBefore).map(\.release)
                #expect(caughtUp == [4], "fr-1 applied only the newest release on reconnect, got \(caughtUp)")
                #expect(try inForce(stores["fr-1"]!).effective == v4.config)

                // 9. Rollout status: every node reports v4 to HQ; a country's API shows its subtree.
                try await eventually(timeout: 30, "HQ's rollout status shows v4 everywhere") {
                    let rows = try await GovernanceStatusReport.rows(nodes: nodes, store: hq)
                    return rows.filter { $0.parent != nil }.allSatisfy { $0.release == 4 && $0.state == "applied" } && rows.count == 6
                }
                let client = running.client(hub)
                let reply = try await client.send("GET", "/v1/governance/status", credential: try de.store.meta("credential"))
                #expect(reply.status == 200, "\(reply.text)")
                let status = try reply.decode(RolloutStatusResponse.self)
                #expect(Set(status.nodes.map(\.node)) == ["de", "de-1", "de-2"])
                #expect(status.nodes.allSatisfy { $0.release == 4 })
                #expect(status.nodes.filter { $0.node != "de" }.allSatisfy { $0.overlay == "de#4" })
                #expect(status.rollout == 5 && status.stages == "v4 → everyone")
                // Bad requests get clear answers; a known token long-polls until something changes.
                #expect(try await client.send("GET", "/v1/governance").status == 401)
                let badWait = try await client.send("GET", "/v1/governance?wait=soon", credential: try de.store.meta("credential"))
                #expect(badWait.status == 400 && badWait.error?.code == "invalid_parameter", "\(badWait.text)")
                let current = try await client.send("GET", "/v1/governance", credential: try de.store.meta("credential")).decode(GovernanceBundle.self)
                #expect(current.releases.count == 1 && current.overlays.isEmpty, "HQ sends de the release in force and no overlay of its own")
                let deCredential = try de.store.meta("credential")
                async let waiting = client.send("GET", "/v1/governance?wait=20&known=\(current.token)", credential: deCredential)
                try await Task.sleep(for: .milliseconds(300))
                let asked = ContinuousClock.now
                try await publisher.rollout(release: 3, targets: ["fr"])
                let woken = try await waiting.decode(GovernanceBundle.self)
                #expect(woken.token != current.token && ContinuousClock.now - asked < .seconds(10), "the long-poll answered when the rollout changed")
                await client.shutdown()

                // 10. A relay replaying an old, genuinely signed rollout (rolling its branch back on
                // its own) is refused: nodes never go back to an older rollout.
                try await eventually(timeout: 30, "de-1 holds rollout 6") { try stores["de-1"]!.governanceDocuments(kind: "rollout").map(\.seq) == [6] }
                let newest = try #require(try de.store.governanceDocuments(kind: "rollout").first)
                let first = try #require(try await hq.governanceDocuments(ofKind: "rollout", keys: nil).first { $0.seq == 1 })
                try de.store.replaceGovernanceDocuments(kinds: ["rollout"], keeping: nil, with: [first])
                try await eventually(timeout: 30, "de-1 refuses the replayed rollout") {
                    (try stores["de-1"]!.currentGovernance()?.message ?? "").contains("rollout 1 refused: older than rollout 6")
                }
                #expect(try inForce(stores["de-1"]!).release == 4, "de-1 keeps running v4")
                try de.store.replaceGovernanceDocuments(kinds: ["rollout"], keeping: nil, with: [newest])
                try await eventually(timeout: 30, "de-1 back to normal") { try stores["de-1"]!.currentGovernance()?.message == nil }

                // 11. Effective-from: v5 takes effect in 10 s; nodes hold it as pending, then switch on
                // time even when their parent is down by then. (3 s was too short on a loaded
                // machine: v5 reached fr-1 after its effective time, so it was never pending.)
                let effectiveFrom = WallClock.nowMillis() + 10_000
                try await publisher.publish(try automaker(sla: "180m", in: dir, name: "v5"), effectiveFromMillis: effectiveFrom)
                // (fr's branch runs v3 since step 9's rollout.)
                try await eventually(timeout: 30, "fr-1 holds v5 as pending") {
                    try stores["fr-1"]!.currentGovernance()?.state == "pending" && inForce(stores["fr-1"]!).release == 3
                }
                #expect(try stores["fr-1"]!.currentGovernance()?.message?.contains("release 5 takes effect at") == true)
                await fr.stop()
                #expect(WallClock.nowMillis() < effectiveFrom, "fr stopped before v5's effective time")
                try await eventually(timeout: 30, "fr-1 applies v5 at its effective time, its parent down") { try inForce(stores["fr-1"]!).release == 5 }
            }
        }
    }

    /// Shows in the output that the PostgreSQL variants above were skipped, and why.
    @Test("PostgreSQL variants of the governance cascade run", .enabled(if: TestPostgres.isAvailable, Comment(rawValue: StorageEngine.postgresSkipNote)))
    func postgresVariantsRun() {
        #expect(StorageEngine.testable.contains(.postgres))
    }
}

private func json(_ document: SignedDocument) throws -> String { document.json }

/// Runs the `tiersync` executable; returns its exit status and output.
private func tiersync(_ arguments: [String]) throws -> (status: Int32, output: String) {
    try Child.capture(arguments)
}

@Suite("Governance command line")
struct GovernanceCLITests {
    @Test("""
    a restored hub numbers its next release and rollout after the highest ones its nodes report following (numbered from \
    what it held, "publish it again" was refused by every node as older than a rollout they had, and signed a second, \
    different release under a version they had applied); a report far ahead is not followed
    """, arguments: StorageEngine.testable)
    func rolloutNumberedAfterReports(engine: StorageEngine) async throws {
        let dir = try TempDir()
        try await withRunningHub(engine: engine, directory: dir.path) { hub in
            try await withRawClient(hub) { client in
                try await hub.catalogStore.createTenant("automaker", root: "hq", levels: 3, allowDirectSync: false)
                let de = try await hub.enroll(tenant: "automaker", node: "de", client: client)
                let publisher = GovernancePublisher(store: try await hub.tenantStore(for: "automaker"), tenant: "automaker",
                                                    key: GovernanceSigningKey(), tree: try await hub.catalogStore.tree(of: "automaker"))
                let compiled = try GovernanceCompiler.compile(directory: fixture("automaker"))
                #expect(try await publisher.publish(compiled).1.sequence == 1)
                func report(_ seq: Int64, release: Int64, rollout: Int64) async throws {
                    let status = Change(origin: "de", originSeq: seq, hlc: HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: 0),
                                        table: "governance_status", recordID: "de", op: .upsert,
                                        fields: ["node": "de", "release": .int(release), "rollout": .int(rollout), "state": "applied"])
                    let reply = try await client.send("POST", "/v1/push", json: PushRequest(through: seq, changes: [status]), credential: de)
                    let applied = try reply.decode(PushResponse.self).applied
                    #expect(reply.status == 200 && applied == 1, "\(reply.text)")
                }
                // de applied release 2 by rollout 5, which this hub (restored) does not hold.
                try await report(1, release: 2, rollout: 5)
                let (release, rollout) = try await publisher.publish(compiled)
                #expect(release.version == 3 && rollout.sequence == 6 && rollout.stages.map(\.release) == [3])
                #expect(try await publisher.rollback(to: 1).sequence == 7)
                // A report no restore explains (a forgery) is not followed.
                try await report(2, release: 9_000_000, rollout: 5_000_000)
                let (next, nextRollout) = try await publisher.publish(compiled)
                #expect(next.version == 4 && nextRollout.sequence == 8)
                #expect(try await publisher.releases().map(\.version) == [1, 3, 4])
            }
        }
    }

    @Test("""
    a dialogue HQ allocates to the country level for a dealer's customer is handed to that dealer's country by HQ's rules run \
    (HQ allocates without the tree: it stayed at HQ, never in the country's queue); one of a customer without a dealer stays
    """)
    func hqHandsDialoguesToTheirLevel() async throws {
        let dir = try TempDir()
        let data = dir.path + "/hub", db = data + "/tenants/automaker.sqlite"
        #expect(try tiersync(["admin", "create-tenant", "--data", data, "--tenant", "automaker", "--levels", "3"]).status == 0)
        #expect(try tiersync(["admin", "release-key", "--data", data, "--tenant", "automaker"]).status == 0)
        let catalog = try HubCatalog(directory: data)
        for (node, parent) in [("de", nil), ("de-berlin", "de")] as [(NodeID, NodeID?)] {
            _ = try await catalog.redeem(token: try catalog.issueEnrollmentToken(tenant: "automaker", node: node, parent: parent),
                                         via: parent.map { Principal(tenant: "automaker", node: $0) })
        }
        func run(_ arguments: [String]) throws -> String {
            let ran = try tiersync(arguments)
            #expect(ran.status == 0, "\(arguments): \(ran.output)")
            return ran.output
        }
        _ = try run(["admin", "publish", fixture("automaker"), "--data", data])
        _ = try run(["record", "put", "--db", db, "customers", "c-berlin", "last_name=Schmidt", "owning_dealer=de-berlin"])
        _ = try run(["record", "put", "--db", db, "customers", "c-none", "last_name=Nobody"])
        for (id, customer) in [("hq-1", "c-berlin"), ("hq-2", "c-none")] {
            let added = try run(["contact", "add", "--db", db, "--id", id, "--customer", customer, "--knowledge-kind", "scheme",
                                 "--channel", "phone", "--topic", "prices"])
            #expect(added.contains("level country") && added.contains("handled at hq"), "\(added)")
        }
        let ran = try run(["rules", "run", "--db", db, "--data", data])
        #expect(ran.contains("handed hq-1 to de") && !ran.contains("hq-2"), "\(ran)")
        let store = try NodeStore(path: db)
        #expect(try store.record(table: "interactions", id: "hq-1")?.state.liveValues["handling_node"] == "de")
        #expect(try store.record(table: "interactions", id: "hq-2")?.state.liveValues["handling_node"] == "hq")
        // Done once: the next run hands nothing.
        #expect(!(try run(["rules", "run", "--db", db, "--data", data])).contains("handed"))
        // --now reads as generate's and publish's (helper 82: now, +1d and -1d were refused).
        for now in ["now", "+1d", "-1d", "2026-12-03T10:00:00Z"] {
            // (Before the release was published, none was in force: nothing evaluated, said so.)
            let ran = try run(["rules", "run", "--db", db, "--data", data, "--now", now])
            #expect(ran.contains("evaluated at") || ran.contains("no governance release in force at hq"), "\(now): \(ran)")
        }
        let early = try tiersync(["rules", "run", "--db", db, "--data", data, "--now", "1960-01-01T00:00:00Z"])
        #expect(early.status != 0 && early.output.contains("before 1970"), "\(early.output)")
        // Nor past 9999 (helper 84: +9999999w evaluated at year 190,000 and wrote escalations); fractions of a second read.
        // More digits than a duration holds is too far, not "not a time" (helper 100).
        for (late, said) in [("+9999999w", "after 9999"), ("9999-12-31T23:00:00-02:00", "after 9999"), ("10000-01-01T00:00:00Z", "is not a time"),
                             ("+999999999999d", "has more than 7 digits, the most a duration has"), ("-99999999999d", "has more than 7 digits")] {
            let refused = try tiersync(["rules", "run", "--db", db, "--data", data, "--now", late])
            #expect(refused.status != 0 && refused.output.contains(said), "\(late): \(refused.output)")
        }
        #expect(try run(["rules", "run", "--db", db, "--data", data, "--now", "2026-12-03T10:00:00.500Z"]).contains("2026-12-03T10:00:00.500Z"))
        for junk in ["2026-12-03T10:00:00.5Zjunk", "2026-11-31T10:00:00Z"] {
            let refused = try tiersync(["rules", "run", "--db", db, "--data", data, "--now", junk])
            #expect(refused.status != 0 && refused.output.contains("is not a time"), "\(junk): \(refused.output)")
        }
        // An option given no value: the next option's name is not taken for a bad time (helper 84).
        let bare = try tiersync(["rules", "run", "--db", db, "--now", "--data", data])
        #expect(bare.status != 0 && bare.output.contains("--now needs a value (now, ±DURATION or an ISO 8601 time), and took the option '--data' for it"), "\(bare.output)")
        let stray = try tiersync(["rules", "run", "--db", db, "--data", data, "extra"])
        #expect(stray.status != 0 && stray.output.contains("Unexpected argument 'extra'"), "\(stray.output)")
        // Another hub's directory places nothing here: refused, not "left to another node" (helper 82).
        let other = dir.path + "/other"
        #expect(try tiersync(["admin", "create-tenant", "--data", other, "--tenant", "globex", "--levels", "3"]).status == 0)
        let foreign = try tiersync(["rules", "run", "--db", db, "--data", other])
        #expect(foreign.status != 0 && foreign.output.contains("does not hold node 'hq' of tenant 'automaker': give this node's own --data"), "\(foreign.output)")
    }

    @Test("""
    trials and rollback from the command line: a rollout to a country takes its dealers off their own narrower \
    stage (shown as kept, it never applied); a rollback without --to goes back to a release every node once ran, \
    never to a trial's (it put the nodes outside the trial on a release they never ran)
    """)
    func trialsAndRollback() async throws {
        let dir = try TempDir()
        let data = dir.path + "/hub"
        #expect(try tiersync(["admin", "create-tenant", "--data", data, "--tenant", "automaker", "--levels", "3"]).status == 0)
        #expect(try tiersync(["admin", "release-key", "--data", data, "--tenant", "automaker"]).status == 0)
        let catalog = try HubCatalog(directory: data)
        for (node, parent) in [("de", nil), ("fr", nil), ("de-1", "de")] as [(NodeID, NodeID?)] {
            let token = try catalog.issueEnrollmentToken(tenant: "automaker", node: node, parent: parent)
            _ = try await catalog.redeem(token: token)
        }
        func run(_ arguments: [String]) throws -> String {
            let ran = try tiersync(arguments + ["--data", data])
            #expect(ran.status == 0, "\(ran.output)")
            return ran.output
        }
        _ = try run(["admin", "publish", fixture("automaker")])
        _ = try run(["admin", "publish", fixture("automaker"), "--targets", "de"])
        _ = try run(["admin", "publish", fixture("automaker"), "--targets", "de-1"])
        // Named twice, recorded once (it said "v1 → de, de", helper 95).
        let country = try run(["admin", "rollout", "--tenant", "automaker", "--release", "1", "--targets", "de,de"])
        #expect(country.contains("v1 → de;") && !country.contains("de-1"), "de-1 follows de now: \(country)")
        _ = try run(["admin", "rollout", "--tenant", "automaker", "--release", "3", "--targets", "de-1"])
        // The root is no target: a rollout "to hq" put the countries on it, not their dealers (helper 82).
        for command in [["admin", "publish", fixture("automaker")], ["admin", "rollout", "--tenant", "automaker", "--release", "1"]] {
            let root = try tiersync(command + ["--targets", "hq", "--data", data])
            #expect(root.status != 0 && root.output.contains("'hq' is the tenant's root and is no target") && root.output.contains("leave out --targets to roll out to every node"), "\(root.output)")
        }
        // A release published for later says so when rolled out (helper 82: nothing said when it takes effect).
        _ = try run(["admin", "publish", fixture("automaker"), "--targets", "fr", "--effective-from", "+2d"])
        let later = try run(["admin", "rollout", "--tenant", "automaker", "--release", "4", "--targets", "fr"])
        #expect(later.contains("v4 takes effect at ") && later.contains("until then its nodes keep the release in force"), "\(later)")
        #expect(!country.contains("takes effect"), "\(country)")
        // v4, v3 and v2 were trials; v1 went to everyone.
        let rollback = try run(["admin", "rollback", "--tenant", "automaker"])
        #expect(rollback.contains("(rollback to v1): v1 → everyone"), "\(rollback)")
        // v2 to everyone, rolled back; then a trial: rolling back withdraws the trial, to v1
        // (it rolled every node forward onto v2, which the first rollback withdrew: helper 95).
        _ = try run(["admin", "rollout", "--tenant", "automaker", "--release", "2"])
        #expect(try run(["admin", "rollback", "--tenant", "automaker"]).contains("(rollback to v1): v1 → everyone"))
        _ = try run(["admin", "publish", fixture("automaker"), "--targets", "de"])
        let undo = try run(["admin", "rollback", "--tenant", "automaker"])
        #expect(undo.contains("(rollback to v1): v1 → everyone"), "\(undo)")
        // Everyone on v5, then a rollback: back to v1, what everyone ran before.
        _ = try run(["admin", "rollout", "--tenant", "automaker", "--release", "5"])
        let back = try run(["admin", "rollback", "--tenant", "automaker"])
        #expect(back.contains("(rollback to v1): v1 → everyone"), "\(back)")
    }

    @Test("admin validate on a broken copy of a fixture prints file:line: field for each error and exits 1; publish, rollback and rollout-status work on a hub's data")
    func commandLine() async throws {
        let dir = try TempDir()
        let copy = dir.path + "/automaker"
        try FileManager.default.copyItem(atPath: fixture("automaker"), toPath: copy)
        let ok = try tiersync(["admin", "validate", copy])
        #expect(ok.status == 0 && ok.output.contains("valid governance for tenant 'automaker'"), "\(ok.output)")
        // A tenant no release can be published for, refused with its line and nothing else
        // (validate passed it; publish refused it only as "not this tenant").
        let header = copy + "/governance.yaml"
        let original = try String(contentsOfFile: header, encoding: .utf8)
        try original.replacingOccurrences(of: "tenant: automaker", with: "tenant: auto_maker").write(toFile: header, atomically: true, encoding: .utf8)
        let badTenant = try tiersync(["admin", "validate", copy])
        let tenantLine = original.components(separatedBy: "\n").firstIndex { $0.contains("tenant: automaker") }! + 1
        #expect(badTenant.status == 1 && badTenant.output.contains("\(header):\(tenantLine): governance.tenant: expected a tenant identifier")
                && badTenant.output.contains("1 error(s)"), "\(badTenant.output)")
        try original.write(toFile: header, atomically: true, encoding: .utf8)

        // Break three things in two files.
        let kpis = copy + "/kpis.yaml", queues = copy + "/queues.yaml"
        var text = try String(contentsOfFile: kpis, encoding: .utf8)
        text = text.replacingOccurrences(of: "answered_within: 20s", with: "answered_within: twenty")
        try text.write(toFile: kpis, atomically: true, encoding: .utf8)
        let kpiLine = text.components(separatedBy: "\n").firstIndex { $0.contains("answered_within: twenty") }! + 1
        var q = try String(contentsOfFile: queues, encoding: .utf8)
        q = q.replacingOccurrences(of: "    level: country\n", with: "    level: region\n", options: [], range: q.range(of: "    level: country\n"))
        q += "\nextra_section: 1\n"
        try q.write(toFile: queues, atomically: true, encoding: .utf8)
        let levelLine = q.components(separatedBy: "\n").firstIndex { $0.contains("level: region") }! + 1
        let sectionLine = q.components(separatedBy: "\n").firstIndex { $0.contains("extra_section") }! + 1

        let broken = try tiersync(["admin", "validate", copy])
        #expect(broken.status == 1)
        let lines = broken.output.split(separator: "\n").map(String.init)
        #expect(lines.contains { $0.hasPrefix("\(kpis):\(kpiLine): kpis.service-level-phone.formula.answered_within: expected a duration") }, "\(broken.output)")
        #expect(lines.contains { $0.hasPrefix("\(queues):\(levelLine): queues.") && $0.contains(".level: expected a level: one of hq, country, dealer, got 'region'") }, "\(broken.output)")
        #expect(lines.contains { $0.hasPrefix("\(queues):\(sectionLine): extra_section: unknown section") }, "\(broken.output)")
        // Queues at the broken level are then referenced from rules at "country": reported too, each located.
        #expect(lines.filter { !$0.contains("error(s) in") }.allSatisfy { $0.range(of: #"^/.+\.yaml:\d+: [a-z_\-\.\[\]0-9]+: .+"#, options: .regularExpression) != nil }, "\(broken.output)")

        // Publish from the command line into a hub's data directory; roll back; read the status.
        let data = dir.path + "/hub"
        #expect(try tiersync(["admin", "create-tenant", "--data", data, "--tenant", "automaker", "--levels", "3"]).status == 0)
        let refused = try tiersync(["admin", "publish", fixture("automaker"), "--data", data])
        #expect(refused.status != 0, "publishing without a release key is refused")
        #expect(try tiersync(["admin", "release-key", "--data", data, "--tenant", "automaker"]).status == 0)
        for _ in 0..<2 {
            let published = try tiersync(["admin", "publish", fixture("automaker"), "--data", data])
            #expect(published.status == 0 && published.output.contains("rollout"), "\(published.output)")
        }
        let rollback = try tiersync(["admin", "rollback", "--data", data, "--tenant", "automaker"])
        #expect(rollback.output.contains("rollout 3 (rollback to v1): v1 → everyone"), "\(rollback.output)")
        let status = try tiersync(["admin", "rollout-status", "--data", data, "--tenant", "automaker"])
        #expect(status.status == 0 && status.output.contains("tenant automaker: rollout 3 (v1 → everyone)"), "\(status.output)")
        let unknown = try tiersync(["admin", "rollout", "--data", data, "--tenant", "automaker", "--release", "9"])
        #expect(unknown.status != 0)
        // A second, different release key is not registered silently.
        #expect(try tiersync(["admin", "release-key", "--data", data, "--tenant", "automaker", "--out", dir.path + "/other.key"]).status != 0)
        // An agent pinned to HQ's key refuses a store that holds another one, and a malformed key.
        let store = try NodeStore(path: dir.path + "/dealer.sqlite")
        try store.setMeta(GovernanceFollower.keyMeta, GovernanceSigningKey().publicKey.base64)
        let pinned = try String(contentsOfFile: data + "/keys/automaker.release.key", encoding: .utf8)
        let hqPublic = try GovernanceSigningKey(base64: pinned).publicKey.base64
        let other = try tiersync(["agent", "run", "--db", store.path, "--parent", "https://127.0.0.1:9", "--release-key", hqPublic])
        #expect(other.status != 0 && other.output.contains("already holds a different release key"), "\(other.output)")
        let malformed = try tiersync(["agent", "run", "--db", store.path, "--parent", "https://127.0.0.1:9", "--release-key", "not-a-key"])
        #expect(malformed.status != 0 && malformed.output.contains("not a base64 Ed25519 public key"), "\(malformed.output)")
    }
}

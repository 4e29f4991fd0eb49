import Foundation
import Testing
import TiersyncAgent
import TiersyncCore
import TiersyncServer
import TiersyncStorage
import TiersyncStore
import TiersyncTestSupport

/// Runs `tiersync` to completion; returns its exit status and its output (errors included).
private func cli(_ arguments: [String]) throws -> (status: Int32, output: String) {
    try Child.capture(arguments)
}

/// Issue 12, item 8: revocation and decommissioning take effect at HQ at once and at a
/// country within seconds, also while HQ is down; a dealer syncs through its country.
@Suite("Revocation, decommissioning and direct sync", .serialized)
struct RevocationTests {
    @Test("""
    admin revoke: refused at HQ at the very next request (no credential is cached); at the country within seconds; \
    during an HQ outage the country keeps refusing the revoked dealer and serves the others. admin decommission: \
    no token lets the node enroll again, admin nodes lists it as decommissioned, its data stays
    """)
    func revokeAndDecommission() async throws {
        let dir = try TempDir()
        let data = dir.path + "/hub"
        try await withRunning { running in
            let hub = try await running.hub(directory: dir.path)
            try hub.catalog.createTenant("acme", levels: 3)
            try hub.catalog.createTenant("insura", levels: 2)
            let atHQ = running.client(hub)

            // Two-level tenant: an agent talks to HQ itself.
            let agentCredential = try await hub.enroll(tenant: "insura", node: "ins-a", client: atHQ)
            #expect(try await atHQ.send("GET", "/v1/whoami", credential: agentCredential).status == 200)
            let revoked = try cli(["admin", "revoke", "--data", data, "--tenant", "insura", "--node", "ins-a"])
            #expect(revoked.status == 0 && revoked.output.contains("revoked ins-a of insura: 1 credential(s), 0 unused enrollment token(s)"), "\(revoked)")
            // The very next request is refused: nothing cached the credential.
            let refused = try await atHQ.send("GET", "/v1/whoami", credential: agentCredential)
            #expect(refused.status == 401 && refused.error?.code == "unauthenticated", "\(refused.status) \(refused.text)")
            #expect(try await atHQ.send("GET", "/v1/pull", credential: agentCredential).status == 401)

            // Three-level tenant: dealers behind de.
            let de = try await running.country(hub: hub, tenant: "acme", node: "de", directory: dir.path)
            var credentials: [NodeID: String] = [:]
            var dealers: [NodeID: RunningAgent] = [:]
            for dealer in ["d1", "d2", "d3"] as [NodeID] {
                let agent = try await running.agent(enrolling: dealer, parent: "de", tenant: "acme", hub: hub, parentURL: de.url, directory: dir.path)
                dealers[dealer] = agent
                let credential: String = try #require(try agent.store.meta("credential"))
                credentials[dealer] = credential
            }
            let atDE = running.client(baseURL: de.url, caFile: hub.caFile)
            let hq = try hub.stores.store(for: "acme")
            try dealers["d3"]!.store.commit([.upsert("customers", id: "d3-c1", ["last_name": "Kept"])])
            try await eventually(timeout: 30, "HQ holds d3's record") { try hq.record(table: "customers", id: "d3-c1") != nil }
            for dealer in ["d1", "d2", "d3"] as [NodeID] {
                #expect(try await atDE.send("GET", "/v1/whoami", credential: credentials[dealer]).status == 200, "\(dealer)")
            }

            // Revoke d1 at HQ: the country refuses it within seconds. The clock starts when the
            // revocation is in HQ's catalog (the CLI has returned), not when the CLI process
            // starts: on a loaded machine starting a process alone can take seconds.
            let revokedD1 = try cli(["admin", "revoke", "--data", data, "--tenant", "acme", "--node", "d1"])
            #expect(revokedD1.status == 0, "\(revokedD1)")
            let started = ContinuousClock.now
            var status = 0
            while ContinuousClock.now - started < .seconds(16) {
                status = try await atDE.send("GET", "/v1/whoami", credential: credentials["d1"]).status
                if status == 401 { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            let took = ContinuousClock.now - started
            // The country refreshes every 2 s; on a loaded 2-core machine running the whole suite
            // one refresh round trip has taken over 3 s (twice on CI at a 5 s bound), and 9.4 s
            // once the suite had grown (CI, and a full local run, at an 8 s bound; alone or
            // beside three other suites it took under 4 s).
            #expect(status == 401 && took < .seconds(12), "d1 refused at the country after \(took) (status \(status))")
            #expect(try await atDE.send("GET", "/v1/whoami", credential: credentials["d2"]).status == 200)

            // Decommission d3: its unused token goes, no new one is issued, it is refused everywhere.
            let spare = try hub.catalog.issueEnrollmentToken(tenant: "acme", node: "d3", parent: "de")
            let decommissioned = try cli(["admin", "decommission", "--data", data, "--tenant", "acme", "--node", "d3"])
            #expect(decommissioned.status == 0 && decommissioned.output.contains("decommissioned d3 of acme: 1 credential(s) revoked, 1 unused enrollment token(s) deleted"),
                    "\(decommissioned)")
            let reEnroll = try await atDE.send("POST", "/v1/enroll", json: EnrollRequest(token: spare))
            #expect(reEnroll.status == 401 && reEnroll.error?.code == "invalid_token", "\(reEnroll.status) \(reEnroll.text)")
            let newToken = try cli(["admin", "enroll-token", "--data", data, "--tenant", "acme", "--node", "d3", "--parent", "de"])
            #expect(newToken.status != 0 && newToken.output.contains("node 'd3' was decommissioned and cannot enroll again"), "\(newToken)")
            let nodes = try cli(["admin", "nodes", "--data", data, "--tenant", "acme"])
            let row = try #require(nodes.output.split(separator: "\n").first { $0.hasPrefix("d3 ") }, "\(nodes)")
            #expect(row.contains("dealer (decommissioned)") && row.contains("hq/de/d3"), "\(nodes)")
            #expect(try hq.record(table: "customers", id: "d3-c1") != nil, "its data stays")
            try await eventuallyAsync(timeout: 10, "the country refuses d3") {
                try await atDE.send("GET", "/v1/whoami", credential: credentials["d3"]).status == 401
            }
            let decommissionDE = try cli(["admin", "decommission", "--data", data, "--tenant", "acme", "--node", "de"])
            #expect(decommissionDE.status != 0 && decommissionDE.output.contains("'de' still has 2 node(s) below it (d1, d2)"), "\(decommissionDE)")

            // HQ goes down. The country keeps the last directory it received.
            await hub.stop()
            for _ in 0..<3 {
                try await Task.sleep(for: .milliseconds(700))   // refreshes fail meanwhile
                let asked = ContinuousClock.now
                #expect(try await atDE.send("GET", "/v1/whoami", credential: credentials["d1"]).status == 401, "revoked d1 still refused")
                // An unknown credential waits at most 2 s for HQ, then is refused from the mirror.
                #expect(ContinuousClock.now - asked < .seconds(6), "a 2 s wait for HQ, with room for a loaded machine")
                #expect(try await atDE.send("GET", "/v1/whoami", credential: credentials["d3"]).status == 401, "decommissioned d3 still refused")
                #expect(try await atDE.send("GET", "/v1/whoami", credential: credentials["d2"]).status == 200, "d2 still served")
            }
            // d2 keeps working through its country while HQ is down.
            try dealers["d2"]!.store.commit([.upsert("customers", id: "d2-offline", ["last_name": "While HQ was down"])])
            try await eventually(timeout: 30, "the country takes d2's write") { try de.store.record(table: "customers", id: "d2-offline") != nil }
        }
    }

    @Test("a revoked country: HQ refuses it and it stops serving its dealers and its administrators (their mirrored accounts went on logging in); it keeps what it fetched")
    func revokedCountry() async throws {
        let dir = try TempDir()
        try await withRunning { running in
            let hub = try await running.hub(directory: dir.path)
            try hub.catalog.createTenant("acme", levels: 3)
            let de = try await running.country(hub: hub, tenant: "acme", node: "de", directory: dir.path)
            let accounts = try #require(hub.catalogStore as? any AdminAccountStore)
            try await accounts.createAdminUser(AdminUser(tenant: "acme", name: "de-admin", roles: [.operator], scope: "de", createdAtMillis: WallClock.nowMillis()),
                                               passwordHash: try PasswordHash.make("correct horse battery staple"))
            let login = AdminMessages.LoginRequest(tenant: "acme", user: "de-admin", password: "correct horse battery staple")
            let dealer = try await running.agent(enrolling: "d1", parent: "de", tenant: "acme", hub: hub, parentURL: de.url, directory: dir.path)
            let atHQ = running.client(hub), atDE = running.client(baseURL: de.url, caFile: hub.caFile)
            let countryCredential = try #require(try de.store.meta("credential"))
            let dealerCredential = try #require(try dealer.store.meta("credential"))
            #expect(try await atHQ.send("GET", "/v1/whoami", credential: countryCredential).status == 200)
            #expect(try await atDE.send("GET", "/v1/whoami", credential: dealerCredential).status == 200)
            try await eventuallyAsync(timeout: 20, "de-admin can log in at de") {
                try await atDE.send("POST", "/admin/v1/login", json: login).status == 200
            }
            try await eventually(timeout: 20, "de counts d1 as fetched") { try de.store.meta("backfilled") == "d1" }

            let revoked = try cli(["admin", "revoke", "--data", dir.path + "/hub", "--tenant", "acme", "--node", "de"])
            #expect(revoked.status == 0, "\(revoked)")
            #expect(try await atHQ.send("GET", "/v1/whoami", credential: countryCredential).status == 401)
            try await eventuallyAsync(timeout: 10, "de stops serving its dealer") {
                try await atDE.send("GET", "/v1/whoami", credential: dealerCredential).status == 401
            }
            #expect(try await atDE.send("GET", "/v1/pull", credential: dealerCredential).status == 401)
            #expect(try await atDE.send("POST", "/admin/v1/login", json: login).status == 401, "a revoked country serves no administrator")
            // Its empty mirror does not make it forget what it fetched: enrolled again, it
            // would fetch every dealer's records again.
            try await Task.sleep(for: .seconds(2))
            #expect(try de.store.meta("backfilled") == "d1", "the revoked country still counts d1 as fetched")
        }
    }

    @Test("a node refused at this hub (a dealer bypassing its country) is refused within its node's request rate: 429 once it is spent (it got 1,680 answers of 403 a second)")
    func refusedNodeIsRateLimited() async throws {
        let dir = try TempDir()
        var limits = HubConfiguration.Limits()
        (limits.requestsPerSecond, limits.requestBurst) = (2, 20)
        try await withRunning { running in
            let hub = try await running.hub(directory: dir.path, limits: limits)
            try hub.catalog.createTenant("acme", levels: 3)
            let de = try await running.country(hub: hub, tenant: "acme", node: "de", directory: dir.path)
            let dealer = try await running.agent(enrolling: "de-1", parent: "de", tenant: "acme", hub: hub, parentURL: de.url, directory: dir.path)
            let credential = try #require(try dealer.store.meta("credential"))
            var codes: [String] = []
            let client = running.client(hub)
            let started = ContinuousClock.now
            // Enough requests that the rate (2/s) cannot give back the burst's worth while they
            // are answered, even on a loaded machine (40 were all answered within it once, in a
            // full run: 13 s at 0.3 s each).
            for _ in 0..<100 {
                codes.append(try await client.send("GET", "/v1/whoami", credential: credential).error?.code ?? "none")
            }
            // The burst, and what the rate gave back meanwhile (a loaded machine answers slowly).
            let elapsed = Double((ContinuousClock.now - started).components.seconds) + 1
            let allowed = Int(limits.requestBurst + limits.requestsPerSecond * elapsed)
            #expect(codes.first == "wrong_parent" && codes.contains("rate_limited") && codes.filter { $0 == "wrong_parent" }.count <= allowed,
                    "\(codes) within \(elapsed) s")
            // The country's own requests are its own budget.
            let countryCredential = try #require(try de.store.meta("credential"))
            #expect(try await running.client(hub).send("GET", "/v1/whoami", credential: countryCredential).status == 200)
        }
    }

    @Test("""
    a dealer cannot bypass its country: with its credential HQ answers 403 wrong_parent on every authenticated route, \
    naming the parent; the country itself and enrollment are unaffected; admin tenant-settings --allow-direct-sync \
    true lets it sync with HQ, false stops it again
    """)
    func dealerBypass() async throws {
        let dir = try TempDir()
        let data = dir.path + "/hub"
        try await withRunning { running in
            let hub = try await running.hub(directory: dir.path)
            try hub.catalog.createTenant("acme", levels: 3)
            let de = try await running.country(hub: hub, tenant: "acme", node: "de", directory: dir.path)
            let dealer = try await running.agent(enrolling: "de-1", parent: "de", tenant: "acme", hub: hub, parentURL: de.url, directory: dir.path)
            let credential = try #require(try dealer.store.meta("credential"))
            let countryCredential = try #require(try de.store.meta("credential"))
            let atHQ = running.client(hub)
            let routes: [(String, String, Data?)] = [
                ("GET", "/v1/whoami", nil), ("GET", "/v1/pull", nil), ("GET", "/v1/directory", nil), ("GET", "/v1/governance", nil),
                ("GET", "/v1/governance/status", nil), ("POST", "/v1/push", Data(#"{"through":0,"changes":[]}"#.utf8)),
            ]
            for (method, path, body) in routes {
                let reply = try await atHQ.send(method, path, body: body, credential: credential)
                #expect(reply.status == 403 && reply.error?.code == "wrong_parent", "\(method) \(path): \(reply.status) \(reply.text)")
                #expect(reply.error?.message.contains("node 'de-1' syncs through its parent 'de'") == true, "\(reply.text)")
                // The country's own requests are served.
                #expect(try await atHQ.send(method, path, body: body, credential: countryCredential).status == 200, "de: \(method) \(path)")
            }
            // Through its country the dealer syncs as before.
            try dealer.store.commit([.upsert("customers", id: "c-1", ["last_name": "Via de"])])
            let hq = try hub.stores.store(for: "acme")
            try await eventually(timeout: 30, "the dealer's write reaches HQ through de") { try hq.record(table: "customers", id: "c-1") != nil }
            // Enrollment stays public: a token is redeemed at HQ's URL too.
            let token = try hub.catalog.issueEnrollmentToken(tenant: "acme", node: "de-2", parent: "de")
            // Claiming to be relayed by de takes de's credential (the body's word was taken:
            // anyone passed the parent check, a country redeemed other tenants' tokens).
            let dealerCredential = try #require(try dealer.store.meta("credential"))
            for credential in [nil, dealerCredential] {
                let claimed = try await atHQ.send("POST", "/v1/enroll", json: EnrollRequest(token: token, via: "de"), credential: credential)
                #expect(claimed.status == 403 && claimed.error?.code == "relay_unauthenticated", "\(claimed.status) \(claimed.text)")
            }
            let enrolled = try await atHQ.send("POST", "/v1/enroll", json: EnrollRequest(token: token))
            #expect(enrolled.status == 201, "\(enrolled.text)")

            // Settings: shown without changing anything, then direct sync allowed.
            let shown = try cli(["admin", "tenant-settings", "--data", data, "--tenant", "acme"])
            #expect(shown.status == 0 && shown.output.contains("not allowed (dealers sync through their country)"), "\(shown)")
            let allowed = try cli(["admin", "tenant-settings", "--data", data, "--tenant", "acme", "--allow-direct-sync", "true"])
            #expect(allowed.status == 0 && allowed.output.contains("direct sync with HQ below the root's children: allowed"), "\(allowed)")
            for (method, path, body) in routes {
                let reply = try await atHQ.send(method, path, body: body, credential: credential)
                #expect(reply.status == 200, "allowed: \(method) \(path): \(reply.status) \(reply.text)")
            }
            let whoami = try await atHQ.send("GET", "/v1/whoami", credential: credential).decode(WhoAmIResponse.self)
            #expect(whoami.node == "de-1" && whoami.parent == "de")
            let disallowed = try cli(["admin", "tenant-settings", "--data", data, "--tenant", "acme", "--allow-direct-sync", "false"])
            #expect(disallowed.status == 0, "\(disallowed)")
            #expect(try await atHQ.send("GET", "/v1/pull", credential: credential).status == 403)

            // A tenant created with direct sync allowed serves its dealers from the start.
            let created = try cli(["admin", "create-tenant", "--data", data, "--tenant", "open", "--levels", "3", "--allow-direct-sync"])
            #expect(created.status == 0 && created.output.contains("direct sync allowed"), "\(created)")
            let openDE = try await hub.enroll(tenant: "open", node: "de", client: atHQ)
            #expect(try await atHQ.send("GET", "/v1/whoami", credential: openDE).status == 200)
            let openDealer = try hub.catalog.issueEnrollmentToken(tenant: "open", node: "de-1", parent: "de")
            let openCredential = try await atHQ.send("POST", "/v1/enroll", json: EnrollRequest(token: openDealer)).decode(EnrollResponse.self).credential
            #expect(try await atHQ.send("GET", "/v1/pull", credential: openCredential).status == 200)
        }
    }

    @Test("""
    an enrolled node given a new --parent adopts it (and starts over with it) only once that parent accepts its \
    credential: a URL out of reach or a hub that does not know the node stops the start, and the store keeps its parent \
    and positions (helper 71: a mistyped --parent was kept and the cursors reset)
    """, .timeLimit(.minutes(5)))
    func newParentAdoptedOnlyOnceItAnswers() async throws {
        let dir = try TempDir()
        try await withRunning { running in
            let hub = try await running.hub(directory: dir.path)
            try hub.catalog.createTenant("acme", levels: 3)
            let de = try await running.country(hub: hub, tenant: "acme", node: "de", directory: dir.path)
            let d1 = try await running.agent(enrolling: "d1", parent: "de", tenant: "acme", hub: hub, parentURL: de.url, directory: dir.path)
            let hq = try hub.stores.store(for: "acme")
            try d1.store.commit([.upsert("customers", id: "d1-first", ["last_name": "First"])])
            try await eventually(timeout: 30, "HQ holds d1's customer") { try hq.record(table: "customers", id: "d1-first") != nil }
            await d1.stop()
            let pushed = try d1.store.cursor(NodeStore.parentPushCursor)
            #expect(pushed > 0)
            let db = dir.path + "/d1.sqlite"
            let caBefore = try d1.store.meta("ca_file")

            let unreachable = try cli(["agent", "run", "--db", db, "--parent", "https://127.0.0.1:1", "--ca", hub.caFile])
            #expect(unreachable.status == 1 && unreachable.output.contains("the new parent https://127.0.0.1:1 could not be asked")
                    && unreachable.output.contains("Check --parent and --ca")
                    && unreachable.output.contains("the store keeps its parent \(de.url)"), "\(unreachable)")
            let stranger = try await running.hub(directory: dir.path + "/other")
            let refused = try cli(["agent", "run", "--db", db, "--parent", stranger.url, "--ca", stranger.caFile])
            #expect(refused.status == 1 && refused.output.contains("the parent at \(stranger.url) refuses this node's credential"), "\(refused)")
            // HQ itself, for a dealer of a three-level tenant: it answers, and says why (403).
            let atHQ = try cli(["agent", "run", "--db", db, "--parent", hub.url, "--ca", hub.caFile])
            #expect(atHQ.status == 1 && atHQ.output.contains("the parent at \(hub.url) refuses this node's credential (HTTP 403"), "\(atHQ)")
            #expect(try d1.store.meta("parent_url") == de.url && d1.store.cursor(NodeStore.parentPushCursor) == pushed,
                    "parent and positions as they were")
            // Nor the CA given with the refused parent (helper 79: kept, it broke the next plain start).
            #expect(try d1.store.meta("ca_file") == caBefore)

            // The same parent spelled another way (a '/' at the end, the scheme in capitals, the
            // default port) is no new parent: positions kept (helper 80: they started over).
            for same in [de.url + "/", de.url.replacingOccurrences(of: "https://", with: "HTTPS://") + "//"] {
                #expect(SyncAgent.sameParent(de.url, same), "\(same)")
            }
            #expect(SyncAgent.sameParent("https://hub.example.com:443", "https://HUB.example.com/")
                    && !SyncAgent.sameParent("https://hub.example.com:8443", "https://hub.example.com")
                    && !SyncAgent.sameParent("https://hub.example.com/a", "https://hub.example.com/b")
                    && !SyncAgent.sameParent("https://hub.example.com", "http://hub.example.com")
                    && !SyncAgent.sameParent("https://hub.example.com/a%2Fb", "https://hub.example.com/a/b")
                    && !SyncAgent.sameParent("not a url", "not a url/"))
            let respelled = try running.child(["agent", "run", "--db", db, "--parent", de.url.replacingOccurrences(of: "https://", with: "HTTPS://") + "//", "--ca", hub.caFile,
                                               "--poll-ms", "50", "--pull-wait", "2"],
                                              log: dir.path + "/respelled.log")
            try d1.store.commit([.upsert("customers", id: "d1-respelled", ["last_name": "Respelled"])])
            try await eventually(timeout: 30, "the agent syncs under the other spelling") { try hq.record(table: "customers", id: "d1-respelled") != nil }
            await respelled.stop()
            #expect(try !String(contentsOfFile: dir.path + "/respelled.log", encoding: .utf8).contains("parent changed"))
            #expect(try d1.store.meta("parent_url") == de.url && d1.store.cursor(NodeStore.parentPushCursor) > pushed,
                    "the parent kept, and its positions went on from where they were")

            // A parent that knows the node (here de under another host name, which nothing can
            // tell is the same) is adopted.
            let other = de.url.replacingOccurrences(of: "127.0.0.1", with: "localhost")
            let moved = try running.child(["agent", "run", "--db", db, "--parent", other, "--ca", hub.caFile, "--poll-ms", "50", "--pull-wait", "2"],
                                          log: dir.path + "/moved.log")
            _ = try await moved.waitForOutput(containing: "parent changed to \(other)", timeout: 60)
            try d1.store.commit([.upsert("customers", id: "d1-second", ["last_name": "Second"])])
            try await eventually(timeout: 30, "the agent syncs with the parent it adopted") { try hq.record(table: "customers", id: "d1-second") != nil }
            #expect(try d1.store.meta("parent_url") == other)
            #expect(try d1.store.meta("ca_file") == URL(fileURLWithPath: hub.caFile).standardizedFileURL.path, "the adopted parent's CA is kept with it")
            await moved.stop()
        }
    }

    @Test("""
        a revoked dealer enrolls again with the store it has (agent run --enroll-token on an enrolled store): its data and \
        its offline write stay and reach HQ; a token for another node is refused through the country and kept for that node \
        (the token was ignored and the store refused for good; redeemed, another node's token would have revoked that node)
        """)
    func revokedDealerEnrollsAgainWithItsStore() async throws {
        let dir = try TempDir()
        let data = dir.path + "/hub"
        try await withRunning { running in
            let hub = try await running.hub(directory: dir.path)
            try hub.catalog.createTenant("acme", levels: 3)
            let de = try await running.country(hub: hub, tenant: "acme", node: "de", directory: dir.path)
            let d1 = try await running.agent(enrolling: "d1", parent: "de", tenant: "acme", hub: hub, parentURL: de.url, directory: dir.path)
            let hq = try hub.stores.store(for: "acme")
            try d1.store.commit([.upsert("customers", id: "d1-before", ["last_name": "Before"])])
            try await eventually(timeout: 30, "HQ holds d1's first customer") { try hq.record(table: "customers", id: "d1-before") != nil }
            await d1.stop()
            let revoked = try cli(["admin", "revoke", "--data", data, "--tenant", "acme", "--node", "d1"])
            #expect(revoked.status == 0, "\(revoked)")
            // Written while revoked: it must not be lost by enrolling again.
            try d1.store.commit([.upsert("customers", id: "d1-offline", ["last_name": "Offline"])])
            let credentialBefore = try d1.store.meta("credential")

            func agentRun(_ token: String?, log: String) throws -> Child {
                try running.child(["agent", "run", "--db", dir.path + "/d1.sqlite", "--parent", de.url, "--ca", hub.caFile,
                                   "--poll-ms", "50", "--pull-wait", "2"] + (token.map { ["--enroll-token", $0] } ?? []), log: dir.path + "/" + log)
            }
            // Run as it was, the agent is refused for ever: `status` says so (it showed nothing).
            let refusedRun = try agentRun(nil, log: "refused.log")
            try await eventually(timeout: 30, "the agent notes that its parent refuses it") { try d1.store.parentContact().failure != nil }
            await refusedRun.stop()
            let failing = try cli(["status", "--db", dir.path + "/d1.sqlite"])
            #expect(failing.output.contains("FAILING since") && failing.output.contains("401") && failing.output.contains("last exchange that worked"), "\(failing.output)")
            // A token for d2 given to d1's store: refused, and still d2's.
            let d2Token = try hub.catalog.issueEnrollmentToken(tenant: "acme", node: "d2", parent: "de")
            let wrong = try agentRun(d2Token, log: "wrong.log")
            let said = try await wrong.waitForOutput(containing: "belongs to 'd1'", timeout: 60)
            #expect(said.contains("this token enrolls 'd2'"), "\(said)")
            await wrong.stop()
            #expect(try d1.store.identity()?.node == "d1" && d1.store.meta("credential") == credentialBefore)
            let d2 = try NodeStore(path: dir.path + "/d2.sqlite")
            try await SyncAgent.enroll(store: d2, configuration: AgentConfiguration(parentURL: de.url, caFile: hub.caFile), token: d2Token)
            #expect(try d2.identity()?.node == "d2", "the refused token still enrolled d2")

            // A new token for d1: the same store enrolls again and syncs what it wrote while revoked.
            let token = try hub.catalog.issueEnrollmentToken(tenant: "acme", node: "d1", parent: "de")
            let again = try agentRun(token, log: "again.log")
            let out = try await again.waitForOutput(containing: "enrolled again as node d1", timeout: 60)
            #expect(out.contains("the store keeps what it holds"), "\(out)")
            try await eventually(timeout: 30, "the offline write reached HQ") { try hq.record(table: "customers", id: "d1-offline") != nil }
            #expect(try d1.store.meta("credential") != credentialBefore)
            #expect(try d1.store.record(table: "customers", id: "d1-before") != nil && hq.liveRecords(table: "customers").count >= 2)
            try await eventually(timeout: 30, "the agent notes that its exchanges work again") { try d1.store.parentContact().failure == nil }
            await again.stop()
            // Started again with the same token (a service's command line keeps it): the token
            // is used up, and the node runs on the credential it holds (it exited before).
            let credentialNow = try d1.store.meta("credential")
            let restarted = try agentRun(token, log: "restart.log")
            let said2 = try await restarted.waitForOutput(containing: "running with the credential the store holds", timeout: 60)
            #expect(said2.contains("--enroll-token was not used"), "\(said2)")
            try d1.store.commit([.upsert("customers", id: "d1-after", ["last_name": "After"])])
            try await eventually(timeout: 30, "the restarted agent syncs") { try hq.record(table: "customers", id: "d1-after") != nil }
            #expect(try d1.store.meta("credential") == credentialNow)
            await restarted.stop()
            let working = try cli(["status", "--db", dir.path + "/d1.sqlite"])
            #expect(working.output.contains("last exchange that worked") && !working.output.contains("FAILING"), "\(working.output)")
        }
    }

    @Test("the new admin commands refuse a missing data directory and a country's --data, and create nothing")
    func commandsCreateNothing() async throws {
        let dir = try TempDir()
        let missing = dir.path + "/nothing-here"
        for arguments in [["admin", "revoke", "--data", missing, "--tenant", "acme", "--node", "d1"],
                          ["admin", "decommission", "--data", missing, "--tenant", "acme", "--node", "d1"],
                          ["admin", "tenant-settings", "--data", missing, "--tenant", "acme"],
                          ["admin", "rotate-release-key", "--data", missing, "--tenant", "acme"],
                          ["admin", "revoke-overlay-key", "--data", missing, "--tenant", "acme", "--node", "de"]] {
            let ran = try cli(arguments)
            #expect(ran.status != 0 && ran.output.contains("holds no hub data"), "\(arguments): \(ran)")
        }
        #expect(!FileManager.default.fileExists(atPath: missing))
        // A country's mirror is not where access is decided.
        try await withRunning { running in
            let hub = try await running.hub(directory: dir.path)
            try hub.catalog.createTenant("acme", levels: 3)
            _ = try await running.country(hub: hub, tenant: "acme", node: "de", directory: dir.path)
            // The country's first copy of HQ's directory.
            try await eventuallyAsync(timeout: 10, "de mirrors HQ's directory") {
                try await HubCatalog(directory: dir.path + "/de-directory").node("de", of: "acme") != nil
            }
            let ran = try cli(["admin", "revoke", "--data", dir.path + "/de-directory", "--tenant", "acme", "--node", "d1"])
            #expect(ran.status != 0 && ran.output.contains("country node 'de'"), "\(ran)")
            let unknown = try cli(["admin", "revoke", "--data", dir.path + "/hub", "--tenant", "acme", "--node", "nobody"])
            #expect(unknown.status != 0 && unknown.output.contains("node 'nobody'"), "\(unknown)")
        }
    }
}

/// Polls an async `condition` until it holds or `timeout` passes.
func eventuallyAsync(timeout: Double, _ what: String, _ condition: () async throws -> Bool) async throws {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(100))
    }
    throw TestFailure("timed out after \(timeout) s waiting for: \(what)")
}

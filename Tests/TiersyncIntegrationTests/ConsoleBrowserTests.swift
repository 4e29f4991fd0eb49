import Foundation
import Testing
import TiersyncCore
import TiersyncServer
import TiersyncStore
import TiersyncTestSupport

/// The console in a real browser (headless Chromium over WebDriver), against a hub on
/// loopback TLS. Set TIERSYNC_CONSOLE_SCREENSHOTS=DIR to keep screenshots of the main pages
/// there (`ops/console-screenshots.sh` refreshes docs/console/ that way).
@Suite("Console in a real browser", .serialized)
struct ConsoleBrowserTests {
    static let screenshots = ProcessInfo.processInfo.environment["TIERSYNC_CONSOLE_SCREENSHOTS"]

    func shoot(_ browser: Browser, _ name: String, scratch: TempDir) async throws {
        let dir = Self.screenshots ?? scratch.path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try await browser.screenshot(to: "\(dir)/\(name).png")
        #expect(FileManager.default.fileExists(atPath: "\(dir)/\(name).png"))
    }

    func logIn(_ browser: Browser, _ hub: RunningHub, tenant: String, user: String) async throws {
        try await browser.open(hub.url + "/console")
        #expect(try await browser.currentURL.hasSuffix("/console/login"))
        try await browser.type("#tenant", tenant)
        try await browser.type("#user", user)
        try await browser.type("#password", AdminFixture.password)
        try await browser.click("#login")
        #expect(try await browser.currentURL.hasSuffix("/console/nodes"))
        #expect(try await browser.text("#who") == user)
    }

    @Test("an HQ operator logs in with the keyboard, sees the tree with a dealer's lag, replays a quarantined change after its cause was fixed and discards another; a country admin sees neither the other country's nodes nor its quarantine; a wrong password is refused on the page")
    func console() async throws {
        try await withAdminFixture { f in
            _ = try await withBrowser { browser in
                let scratch = try TempDir()
                // A dealer of germany, enrolled through its country, with 12 changes waiting.
                let dealerToken = try await f.hub.catalogStore.issueEnrollmentToken(tenant: "acme", node: "germany-d1", parent: "germany")
                #expect(try await f.client.send("POST", "/v1/enroll", json: EnrollRequest(token: dealerToken, via: "germany"), credential: f.germany).status == 201)
                #expect(try await f.client.send("POST", "/v1/status", json: StatusRequest(reports: [
                    LagReport(node: "germany", pending: 0, oldestPendingMillis: 0),
                    LagReport(node: "germany-d1", pending: 12, oldestPendingMillis: 125_000, measuredMillisAgo: 2_000, clockOffsetMillis: 12_345),
                ]), credential: f.germany).status == 200)
                // france edits a record routed to germany only: quarantined as forbidden. And a
                // change of an unknown table.
                let owner = Change(origin: "germany", originSeq: 1, hlc: HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: 0),
                                   table: "customers", recordID: "c-shared", op: .upsert, fields: ["owning_dealer": "germany", "last_name": "Alt"])
                #expect(try await f.client.send("POST", "/v1/push", json: PushRequest(through: 1, changes: [owner]), credential: f.germany).status == 200)
                let edit = Change(origin: "france", originSeq: 1, hlc: HLCTimestamp(wallMillis: WallClock.nowMillis() + 1, counter: 0),
                                  table: "customers", recordID: "c-shared", op: .upsert, fields: ["last_name": "Neu"])
                let junk = Change(origin: "france", originSeq: 2, hlc: HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: 0),
                                  table: "no_such_table", recordID: "x", op: .upsert, fields: [:])
                #expect(try await f.client.send("POST", "/v1/push", json: PushRequest(through: 2, changes: [edit, junk]), credential: f.france).status == 422)
                let quarantined = try await f.hub.tenantStore(for: "acme").quarantinedChanges(limit: 10)
                let (editID, junkID) = (quarantined[0].id, quarantined[1].id)

                // A wrong password: the login page says so, and nothing else.
                try await browser.open(f.hub.url + "/console/login")
                try await browser.type("#tenant", "acme")
                try await browser.type("#user", "hq-op")
                try await browser.type("#password", "not the password")
                try await browser.click("#login")
                #expect(try await browser.text("#error") == "Unknown user or wrong password.")
                #expect(try await browser.currentURL.hasSuffix("/console/login"))

                // Labels and the keyboard: every field has a label; Tab moves from field to field.
                let login = try await browser.source
                for field in ["tenant", "user", "password"] { #expect(login.contains("<label for=\"\(field)\">")) }
                try await browser.type("#tenant", "acme")
                try await browser.keys("#tenant", "\u{E004}")
                #expect(try await browser.focusedID() == "user")
                try await shoot(browser, "login", scratch: scratch)

                try await logIn(browser, f.hub, tenant: "acme", user: "hq-op")
                #expect(try await browser.title == "Nodes · Tiersync console")
                #expect(try await browser.text("#node-germany-d1 .pending") == "12")
                #expect(try await browser.text("#node-germany-d1 .clock") == "12.3 s ahead")
                #expect(try await browser.text("#node-germany .clock") == "–")
                #expect(try await browser.text("#node-germany-d1 .oldest").hasSuffix("min"))
                #expect(try await browser.text("#node-france").contains("france"))
                try await shoot(browser, "nodes", scratch: scratch)

                // Quarantine: replay before the fix is refused again; after it, stored.
                try await browser.open(f.hub.url + "/console/quarantine")
                #expect(try await browser.text("#q-\(editID)").contains("forbidden"))
                try await shoot(browser, "quarantine", scratch: scratch)
                try await browser.click("#replay-\(editID)")
                #expect(try await browser.text("#flash").contains("refused again (forbidden)"))
                let reroute = Change(origin: "germany", originSeq: 2, hlc: HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: 1),
                                     table: "customers", recordID: "c-shared", op: .upsert, fields: ["servicing_dealer": "france"])
                #expect(try await f.client.send("POST", "/v1/push", json: PushRequest(through: 2, changes: [reroute]), credential: f.germany).status == 200)
                try await browser.click("#replay-\(editID)")
                #expect(try await browser.text("#flash").contains("stored and left the quarantine"))
                #expect(try await browser.element("#q-\(editID)") == nil)
                let record = try await f.hub.tenantStore(for: "acme").liveRecords(inTable: "customers").first { $0.id == "c-shared" }
                #expect(record?.values["last_name"] == .string("Neu"))

                // Four-eyes: hq-op asked for a release (through the API); in the console they
                // cannot approve their own; hq-reviewer can.
                try await f.installReleaseKey()
                try await (f.accounts as! any ReleaseApprovalStore).setRequiresReleaseApproval(true, for: "acme")
                let requested = try await f.send("POST", "/admin/v1/releases", json: AdminMessages.ReleaseSources(sources: try AdminFixture.governanceSources(), notes: "spring rules"),
                                                 token: try await f.token("acme", "hq-op"))
                let requestID = try #require(try requested.decode(AdminMessages.PublishResponse.self).request?.id)
                try await browser.open(f.hub.url + "/console/releases")
                #expect(try await browser.text("#four-eyes") == "on")
                #expect(try await browser.text("#request-\(requestID) .state") == "pending")
                try await browser.click("#approve-\(requestID)")
                #expect(try await browser.text("#main").contains("cannot approve it"))
                try await browser.open(f.hub.url + "/console/releases")
                #expect(try await browser.text("#request-\(requestID) .state") == "pending")

                // Conflicts: germany's edit won over france's older one; the operator takes
                // france's value, which HQ writes as a new edit that reaches the dealers.
                let now = WallClock.nowMillis()
                let won = Change(origin: "germany", originSeq: 3, hlc: HLCTimestamp(wallMillis: now, counter: 0), table: "customers", recordID: "c-2",
                                 op: .upsert, fields: ["owning_dealer": "germany", "servicing_dealer": "france", "phone": "0301"])
                #expect(try await f.client.send("POST", "/v1/push", json: PushRequest(through: 3, changes: [won]), credential: f.germany).status == 200)
                let lost = Change(origin: "france", originSeq: 3, hlc: HLCTimestamp(wallMillis: now - 10_000, counter: 0), table: "customers", recordID: "c-2",
                                  op: .upsert, fields: ["phone": "0699"])
                #expect(try await f.client.send("POST", "/v1/push", json: PushRequest(through: 3, changes: [lost]), credential: f.france).status == 200)
                let conflictID = try #require(try await f.hub.tenantStore(for: "acme").conflicts(afterID: 0, limit: 10).first { $0.conflict.recordID == "c-2" }?.conflict.id)
                try await browser.open(f.hub.url + "/console/conflicts")
                #expect(try await browser.text("#conflict-\(conflictID) .winner").hasPrefix("0301"))
                #expect(try await browser.text("#conflict-\(conflictID) .loser").hasPrefix("0699"))
                try await shoot(browser, "conflicts", scratch: scratch)
                try await browser.click("#keep-loser-\(conflictID)")
                #expect(try await browser.text("#flash").contains("Resolved"))
                #expect(try await browser.element("#conflict-\(conflictID)") == nil)
                let pulled = try await f.client.send("GET", "/v1/pull?cursor=0", credential: f.germany).decode(PullResponse.self)
                #expect(pulled.changes.last { $0.recordID == "c-2" && $0.fields["phone"] != nil }?.fields["phone"] == "0699",
                        "germany is sent HQ's resolution")

                // The record's trace: both edits with where they came from, and HQ's resolution.
                try await browser.open(f.hub.url + "/console/trace")
                try await browser.type("#id", "c-2")
                try await browser.click("#trace")
                let trace = try await browser.text("#trace-changes")
                #expect(trace.contains("germany#3") && trace.contains("france#3") && trace.contains("acme-hq#") && trace.contains("phone = 0699")
                        && trace.contains("written here (HQ)") && trace.contains("arrived here from france"), "\(trace)")
                try await shoot(browser, "trace", scratch: scratch)

                // The audit log shows the replays.
                try await browser.open(f.hub.url + "/console/audit")
                #expect(try await browser.text("#audit").contains("quarantine.replay"))
                try await shoot(browser, "audit", scratch: scratch)
                try await browser.open(f.hub.url + "/console/users")
                #expect(try await browser.text("#users").contains("germany-op"))
                try await browser.click("header form button")
                #expect(try await browser.currentURL.hasSuffix("/console/login"))

                // The reviewer approves it.
                try await logIn(browser, f.hub, tenant: "acme", user: "hq-reviewer")
                try await browser.open(f.hub.url + "/console/releases")
                try await browser.click("#approve-\(requestID)")
                #expect(try await browser.text("#flash").contains("release v1 is signed"))
                #expect(try await browser.text("#request-\(requestID) .state") == "approved")
                #expect(try await browser.text("#releases").contains("approved by hq-reviewer"))
                try await shoot(browser, "releases", scratch: scratch)
                try await browser.click("header form button")

                // A conflict on a record only france holds: HQ's older edit lost to france's.
                let hq = try f.hub.stores.store(for: "acme")
                _ = try hq.commit([.upsert("customers", id: "c-france", ["owning_dealer": "france", "phone": "0100"])], wallMillis: WallClock.nowMillis() - 20_000)
                let franceEdit = Change(origin: "france", originSeq: 4, hlc: HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: 0), table: "customers",
                                        recordID: "c-france", op: .upsert, fields: ["phone": "0200"])
                #expect(try await f.client.send("POST", "/v1/push", json: PushRequest(through: 4, changes: [franceEdit]), credential: f.france).status == 200)
                let franceConflict = try #require(try await f.hub.tenantStore(for: "acme").conflicts(afterID: 0, limit: 10)
                    .first { $0.conflict.recordID == "c-france" }?.conflict.id)
                try await logIn(browser, f.hub, tenant: "acme", user: "hq-reviewer")
                try await browser.open(f.hub.url + "/console/conflicts")
                #expect(try await browser.element("#conflict-\(franceConflict)") != nil, "HQ sees it")
                try await browser.click("header form button")

                // germany's admin: their subtree only.
                try await logIn(browser, f.hub, tenant: "acme", user: "germany-op")
                try await browser.open(f.hub.url + "/console/conflicts")
                #expect(try await browser.element("#conflict-\(franceConflict)") == nil)
                #expect(!(try await browser.source).contains("c-france"))
                try await browser.open(f.hub.url + "/console/nodes")
                let nodes = try await browser.text("#nodes")
                #expect(nodes.contains("germany-d1") && !nodes.contains("france"))
                try await browser.open(f.hub.url + "/console/quarantine")
                #expect(try await browser.element("#q-\(junkID)") == nil)
                #expect(!(try await browser.source).contains("france"))
                try await browser.open(f.hub.url + "/console/users")
                #expect(try await browser.text("#main").contains("only administrators of the whole tenant"))
                // A record only france holds does not trace for germany's admin: as if it did not exist.
                try await browser.open(f.hub.url + "/console/trace?table=customers&id=c-france")
                #expect(try await browser.element("#trace-none") != nil)
                let traceSource = try await browser.source
                #expect(!traceSource.contains("france#"))
                // germany's operator enrolls a dealer under germany; the token is shown once and works.
                try await browser.open(f.hub.url + "/console/nodes")
                try await browser.type("#enroll-node", "germany-d7")
                try await browser.click("#enroll")
                let enrollToken = try await browser.text("#token")
                let enrolled = try await f.client.send("POST", "/v1/enroll", json: EnrollRequest(token: enrollToken))
                #expect(enrolled.status == 201, "\(enrolled.text)")
                #expect(try await f.hub.catalogStore.tree(of: "acme").parents["germany-d7"] == .some("germany"))
                try await browser.open(f.hub.url + "/console/nodes")
                try await browser.type("#enroll-node", "france-d9")
                try await browser.type("#enroll-parent", "france")
                try await browser.click("#enroll")
                #expect(try await browser.element("#token") == nil)
                let refusedText = try await browser.text("#main")
                #expect(refusedText.contains("not in your scope"), "\(refusedText)")

                // And as HQ again: discard the other with a reason.
                try await browser.click("header form button")
                try await logIn(browser, f.hub, tenant: "acme", user: "hq-op")
                // Users: add a country viewer with the form, then disable them.
                try await browser.open(f.hub.url + "/console/users")
                try await browser.type("#new-name", "germany-viewer")
                try await browser.type("#new-password", "a long enough password")
                try await browser.type("#new-scope", "germany")
                try await browser.check("#new-role-viewer")
                try await browser.click("#add-user")
                #expect(try await browser.text("#flash").contains("added"))
                #expect(try await browser.text("#user-germany-viewer .state") == "active")
                try await browser.click("#toggle-germany-viewer")
                #expect(try await browser.text("#user-germany-viewer .state") == "disabled")
                #expect(try await f.accounts.adminUsers(of: "acme").first { $0.name == "germany-viewer" }.map { $0.isDisabled && $0.scope == "germany" } == true)
                #expect(try await browser.element("#toggle-hq-op") == nil, "no one disables themselves")
                try await browser.open(f.hub.url + "/console/quarantine")
                try await browser.type("#reason-\(junkID)", "a test client's stray write")
                try await browser.click("#discard-\(junkID)")
                #expect(try await browser.text("#flash").contains("Discarded"))
                #expect(try await f.hub.tenantStore(for: "acme").quarantinedChanges(limit: 10).isEmpty)
                let audit = try await f.accounts.audit(of: "acme", scopes: nil, before: nil, limit: 50)
                #expect(audit.contains { $0.action == "quarantine.discard" && $0.detail.contains("a test client's stray write") })
                // Logging out from the console is audited with where it came from, like every act.
                let logouts = audit.filter { $0.action == "logout" }
                #expect(!logouts.isEmpty && logouts.allSatisfy { $0.address == "127.0.0.1" }, "\(logouts)")
            }
        }
    }

    @Test("two dealers edit one customer at once; HQ's operator resolves the conflict in the console, and the chosen value reaches both running dealers through their country, where the conflict closes too")
    func resolutionReachesDealers() async throws {
        guard try Browser.available() else { return }
        let dir = try TempDir()
        try await withRunning { running in
            let hub = try await running.hub(directory: dir.path)
            try await hub.catalogStore.createTenant("acme", root: "acme-hq", levels: 3)
            let accounts = try #require(hub.catalogStore as? any AdminAccountStore)
            try await accounts.createAdminUser(AdminUser(tenant: "acme", name: "hq-op", roles: [.operator], scope: "acme-hq", createdAtMillis: WallClock.nowMillis()),
                                               passwordHash: try PasswordHash.make(AdminFixture.password))
            let de = try await running.country(hub: hub, tenant: "acme", node: "de", directory: dir.path)
            let d1 = try await running.agent(enrolling: "de-1", parent: "de", tenant: "acme", hub: hub, parentURL: de.url, directory: dir.path)
            let d2 = try await running.agent(enrolling: "de-2", parent: "de", tenant: "acme", hub: hub, parentURL: de.url, directory: dir.path)
            try d1.store.commit([.upsert("customers", id: "cust-9", ["owning_dealer": "de-1", "servicing_dealer": "de-2", "phone": "0100"])])
            try await eventually(timeout: 30, "de-2 holds the customer") { try d2.store.record(table: "customers", id: "cust-9") != nil }
            // Both change the phone before either sees the other's edit.
            try d1.store.commit([.upsert("customers", id: "cust-9", ["phone": "0111"])])
            try d2.store.commit([.upsert("customers", id: "cust-9", ["phone": "0222"])])
            let hq = try hub.stores.store(for: "acme")
            try await eventually(timeout: 30, "HQ keeps the edit that lost") { !(try hq.conflicts(recordID: "cust-9")).isEmpty }
            let conflict = try #require(try hq.conflicts(recordID: "cust-9").first)
            let chosen = conflict.conflict.loser.description
            _ = try await withBrowser { browser in
                try await logIn(browser, hub, tenant: "acme", user: "hq-op")
                try await browser.open(hub.url + "/console/conflicts")
                try await browser.click("#keep-loser-\(conflict.id)")
                #expect(try await browser.text("#flash").contains("Resolved"))
            }
            for (name, dealer) in [("de-1", d1), ("de-2", d2)] {
                try await eventually(timeout: 30, "\(name) holds the chosen value and no conflict") {
                    try dealer.store.record(table: "customers", id: "cust-9")?.state.values["phone"]?.description == chosen
                        && dealer.store.conflicts(recordID: "cust-9").isEmpty
                }
            }
            try await eventually(timeout: 30, "the country closes it too") { try de.store.conflicts(recordID: "cust-9").isEmpty }
            #expect(try hq.conflicts(recordID: "cust-9").isEmpty)
        }
    }

    @Test("console pages: without a session a page sends to the login; a form post without the CSRF token is refused; answers forbid scripts, framing and caching")
    func consoleWithoutSession() async throws {
        try await withAdminFixture { f in
            // (The client follows the 303.)
            let page = try await f.client.send("GET", "/console/nodes")
            #expect(page.status == 200 && page.text.contains("<h1>Log in</h1>") && !page.text.contains("france"))
            let login = try await f.client.send("GET", "/console/login")
            #expect(login.status == 200)
            #expect(login.headers["content-security-policy"]?.contains("default-src 'none'") == true)
            #expect(login.headers["x-frame-options"] == "DENY" && login.headers["cache-control"] == "no-store")
            // Logged in (cookie), but the form lacks the CSRF token.
            let session = try await f.client.send("POST", "/admin/v1/login", json: AdminMessages.LoginRequest(tenant: "acme", user: "hq-op", password: AdminFixture.password))
            let cookie = String(try #require(session.headers["set-cookie"]).split(separator: ";")[0])
            let forged = try await f.client.send("POST", "/console/nodes/france/revoke", body: Data("x=1".utf8),
                                                 headers: [("Cookie", cookie), ("Content-Type", "application/x-www-form-urlencoded")])
            #expect(forged.status == 403)
            #expect(try await f.client.send("GET", "/v1/whoami", credential: f.france).status == 200, "france was not revoked")
            // Every other form, with what would otherwise succeed.
            for (path, form) in [("/console/users", "name=forged&password=a+long+enough+password&scope=acme-hq&role-operator=on"),
                                 ("/console/users/hq-viewer", "disabled=true"), ("/console/enrollment-tokens", "node=forged-node&parent=germany"),
                                 ("/console/conflicts/1/resolve", "keep=winner"), ("/console/quarantine/1/replay", ""),
                                 ("/console/quarantine/1/discard", "reason=x"), ("/console/release-requests/1/approve", ""),
                                 ("/console/release-requests/1/reject", "reason=x"), ("/console/logout", "")] {
                let reply = try await f.client.send("POST", path, body: Data(form.utf8),
                                                    headers: [("Cookie", cookie), ("Content-Type", "application/x-www-form-urlencoded")])
                #expect(reply.status == 403, "\(path) without the CSRF token: \(reply.status)")
            }
            let users = try await f.accounts.adminUsers(of: "acme")
            #expect(!users.contains { $0.name == "forged" } && users.first { $0.name == "hq-viewer" }?.isDisabled == false)
            // With the token, a form that is not UTF-8 is refused, not read as empty (a conflict
            // was resolved with "" from `value=%FF%FE`, helper 98); raw bytes alike.
            let csrf = try JSONDecoder().decode(AdminMessages.Me.self, from: Data(session.text.utf8)).csrfToken
            // With the token, a form from another site's page is refused (Origin, Sec-Fetch-Site), as a login is.
            for header in [("Origin", "https://evil.example"), ("Origin", "null"), ("Sec-Fetch-Site", "cross-site")] {
                let reply = try await f.client.send("POST", "/console/enrollment-tokens", body: Data("csrf=\(csrf)&node=cross-site-node&parent=germany".utf8),
                                                    headers: [("Cookie", cookie), ("Content-Type", "application/x-www-form-urlencoded"), header])
                #expect(reply.status == 403 && reply.text.contains("another site"), "\(header): \(reply.status)")
            }
            for body in [Data("csrf=\(csrf)&keep=value&value=%FF%FE".utf8), Data("csrf=\(csrf)&keep=value&value=".utf8) + Data([0xFF, 0xFE])] {
                let reply = try await f.client.send("POST", "/console/conflicts/1/resolve", body: body,
                                                    headers: [("Cookie", cookie), ("Content-Type", "application/x-www-form-urlencoded")])
                #expect(reply.status == 400 && reply.text.contains("not valid UTF-8"), "\(reply.status) \(reply.text.prefix(300))")
            }
        }
    }

    @Test("logging in is limited per address, through the API and through the console's form alike (429 with Retry-After); a failed login costs its address more than a request there too (the console's 401 page was not charged: a way around the throttle)")
    func loginsAreLimitedPerAddress() async throws {
        var limits = HubConfiguration.Limits()
        // Ten requests, or two failed logins (each costs one, and four more once it failed).
        (limits.anonymousRequestBurst, limits.anonymousRequestsPerSecond) = (10, 0.01)
        let dir = try TempDir()
        try await withRunningHub(directory: dir.path, limits: limits) { hub in
            try await withRawClient(hub) { client in
                let form = Data("tenant=acme&user=nobody&password=guess".utf8)
                var statuses: [Int] = []
                for _ in 0..<2 {
                    statuses.append(try await client.send("POST", "/console/login", body: form, headers: [("Content-Type", "application/x-www-form-urlencoded")]).status)
                }
                #expect(statuses == [401, 401])
                let console = try await client.send("POST", "/console/login", body: form, headers: [("Content-Type", "application/x-www-form-urlencoded")])
                #expect(console.status == 429 && console.headers["retry-after"] != nil)
                let api = try await client.send("POST", "/admin/v1/login", json: AdminMessages.LoginRequest(tenant: "acme", user: "nobody", password: "guess"))
                #expect(api.status == 429)
            }
        }
    }

    @Test("tiersync demo prints the console's URL and a one-time admin login, which logs in")
    func demoPrintsAConsoleLogin() async throws {
        let dir = try TempDir()
        let root = repositoryRoot()
        try await withRunning { running in
            let demo = try running.child(["demo", "--dir", dir.path + "/demo", "--keep-running",
                                          "--governance", root + "/fixtures/governance/automaker", "--overlay", root + "/fixtures/governance/overlays/de.yaml"],
                                         log: dir.path + "/demo.log")
            let output = try await demo.waitForOutput(containing: "Ctrl-C ends the demo", timeout: 180)
            let line = try #require(output.split(separator: "\n").last { $0.contains("/console — tenant automaker, user admin, password ") })
            let words = line.split(separator: " ")
            let url = try #require(words.first { $0.hasPrefix("https://") }).replacingOccurrences(of: "/console", with: "")
            let password = try #require(words.firstIndex(of: "password").map { String(words[$0 + 1]) })
            let client = running.client(baseURL: url, caFile: dir.path + "/demo/pki/ca.pem")
            let login = try await client.send("POST", "/admin/v1/login", json: AdminMessages.LoginRequest(tenant: "automaker", user: "admin", password: password))
            #expect(login.status == 200, "\(login.text)")
            let cookie = String(try #require(login.headers["set-cookie"]).split(separator: ";")[0])
            let nodes = try await client.send("GET", "/console/nodes", headers: [("Cookie", cookie)])
            #expect(nodes.status == 200 && nodes.text.contains("de-munich"))
            // The demo's dialogues give HQ KPIs: drawn as SVG bars per country, with targets.
            // (Read once every country's dialogues are counted at HQ: on a busy machine fr's came a
            // moment after the demo's last line.)
            var kpis = try await client.send("GET", "/console/kpis", headers: [("Cookie", cookie)])
            let deadline = ContinuousClock.now + .seconds(30)
            while !["hq", "de", "fr"].allSatisfy({ kpis.text.contains("class=\"bar\" data-node=\"\($0)\"") }), ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(500))
                kpis = try await client.send("GET", "/console/kpis", headers: [("Cookie", cookie)])
            }
            #expect(kpis.status == 200)
            #expect(kpis.text.contains("data-kpi=\"service-level-phone\"") && kpis.text.contains("role=\"img\""))
            for node in ["hq", "de", "fr"] { #expect(kpis.text.contains("class=\"bar\" data-node=\"\(node)\""), "a bar for \(node)") }
            #expect(kpis.text.contains("class=\"target\""))
            let api = try await client.send("GET", "/admin/v1/kpis?by=node", headers: [("Cookie", cookie)])
            #expect(api.status == 200 && api.text.contains("service-level-phone"))
            await demo.stop()
        }
    }
}

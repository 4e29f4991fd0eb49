import Foundation
import Logging
import Synchronization
import Testing
import TiersyncAgent
import TiersyncCore
import TiersyncNode
import TiersyncServer
import TiersyncStorage
import TiersyncStore
import TiersyncTestSupport

/// What a parent answers is as untrusted as what a node pushes: a dealer's parent is a
/// country node, itself only an enrolled node. These tests put an agent in front of a
/// parent that answers what the test scripts (``FakeParent``, real TLS on loopback).
@Suite("A hostile parent")
struct HostileParentTests {
    @Test("catch-up progress from any cursor and head a parent sends: 0…100, no trap (a cursor of Int64.max trapped `* 100`)")
    func catchUpProgress() {
        #expect(SyncAgent.catchUpPercent(cursor: .max, head: 1) == 100)
        #expect(SyncAgent.catchUpPercent(cursor: 50, head: 200) == 25)
        #expect(SyncAgent.catchUpPercent(cursor: -5, head: 10) == 0)
        #expect(SyncAgent.catchUpPercent(cursor: .max, head: .max) == 100)
        #expect(SyncAgent.catchUpPercent(cursor: 5, head: 0) == 0)
    }

    /// An agent's configuration for `parent`, with the loops the test does not watch off.
    static func configuration(_ parent: FakeParent) -> AgentConfiguration {
        var configuration = AgentConfiguration(parentURL: parent.url, caFile: parent.caFile)
        configuration.requestTimeout = .seconds(1)
        configuration.compressAboveBytes = .max
        configuration.retryInitial = .milliseconds(100)
        configuration.retryMax = .seconds(1)
        configuration.followGovernance = false
        configuration.rulesInterval = nil
        configuration.statusInterval = nil
        configuration.retention = nil
        return configuration
    }

    /// A dealer's store enrolled under `parent` (no enrollment exchange: the fake parent
    /// answers only what each test scripts).
    static func enrolledStore(_ dir: TempDir, parent: FakeParent) throws -> NodeStore {
        let store = try NodeStore(path: dir.path + "/d1.sqlite")
        try store.completeEnrollment(NodeIdentity(tenant: "acme", node: "d1", parent: "de"), credential: "tsc_fake",
                                     parentURL: parent.url, highestKnownSeq: 0)
        return store
    }

    /// A parent answering every pull with one page holding `changes` (its whole feed), and
    /// anything else 404.
    static func serving(_ changes: [Change], in dir: TempDir) async throws -> FakeParent {
        try await FakeParent(directory: dir.path) { request in
            guard request.path == "/v1/pull" else {
                return .encoding(ErrorResponse(code: "not_found", message: "no such route"), status: 404)
            }
            return .encoding(PullResponse(changes: changes, nextCursor: Int64(changes.count), more: false, head: Int64(changes.count)))
        }
    }

    /// An upsert made at `origin` now.
    static func change(_ origin: NodeID, _ seq: Int64, _ table: String, _ id: String, _ fields: [String: FieldValue]) -> Change {
        Change(origin: origin, originSeq: seq, hlc: HLCTimestamp(wallMillis: WallClock.nowMillis(), counter: 0), table: table, recordID: id,
               op: .upsert, fields: fields)
    }

    @Test("an answer whose head comes and whose body never does ends at the request's timeout (AsyncHTTPClient's deadline ended with the head: the agent waited for ever)")
    func bodyNeverComes() async throws {
        let dir = try TempDir()
        let parent = try await FakeParent(directory: dir.path) { _ in .headThenSilence(status: 200, contentLength: 4_096) }
        let client = try ParentClient(configuration: Self.configuration(parent), credential: "tsc_fake")
        try await withTeardown({ try? await client.shutdown(); await parent.stop() }) {
            // whoami: the timeout (1 s); a pull without waiting: twice it.
            for call in ["whoami", "pull"] {
                // Without a deadline on the body it never ends; under a loaded test run, a
                // second or two past the timeout.
                let error = try await within(.seconds(60), "the \(call) to end") { () -> String? in
                    do {
                        if call == "whoami" { _ = try await client.whoami() }
                        else { _ = try await client.pull(cursor: 0, limit: 10, waitSeconds: 0, excludeOwn: true) }
                        return nil
                    } catch {
                        return "\(error)"
                    }
                }
                #expect(error?.contains("did not finish its answer") == true, "\(call): \(error ?? "no error")")
            }
            #expect(parent.requests.map(\.path) == ["/v1/whoami", "/v1/pull"])
        }
    }

    @Test("a refusal for clock skew naming an own change acknowledged earlier is ignored: that change is not re-stamped (it was rewritten)")
    func clockSkewRefusalOfAcknowledgedChange() async throws {
        let dir = try TempDir()
        let pushes = Mutex(0)
        let hubTime = WallClock.nowMillis() - 600_000
        let parent = try await FakeParent(directory: dir.path) { request in
            guard request.path == "/v1/push", let push = try? JSONDecoder().decode(PushRequest.self, from: request.body),
                  let sent = push.changes.first else {
                return .encoding(ErrorResponse(code: "not_found", message: "no such route"), status: 404)
            }
            let n = pushes.withLock { $0 += 1; return $0 }
            var rejected: [RejectedChange] = []
            if n == 2 {
                // The second push sends seq 2: refused for clock skew, as a hub would, and
                // seq 1, acknowledged by the first push, named with it.
                var acknowledged = sent
                acknowledged.originSeq = 1
                rejected = [sent, acknowledged].map { RejectedChange(change: $0, rejection: ChangeRejection(.clockSkew, "stamped ahead")) }
            }
            return .encoding(PushResponse(acknowledgedThrough: push.through, applied: push.changes.count - rejected.count, duplicates: 0,
                                          rejected: rejected, hubTimeMillis: hubTime))
        }
        let store = try Self.enrolledStore(dir, parent: parent)
        let agent = try SyncAgent(store: store, configuration: Self.configuration(parent))
        try await withTeardown({ await agent.shutdown(); await parent.stop() }) {
            try store.commit([.upsert("customers", id: "c-1", ["last_name": "First"])])
            try await agent.pushPending()
            try store.commit([.upsert("customers", id: "c-2", ["last_name": "Second"])])
            let before = try store.upstreamBatch(after: 0, limit: 10).map(\.change)
            try await agent.pushPending()
            let after = try store.upstreamBatch(after: 0, limit: 10).map(\.change)
            #expect(before.map(\.originSeq) == [1, 2])
            #expect(after.map(\.originSeq) == [1, 2])
            // Seq 1 keeps its stamp; seq 2, refused as sent, is re-stamped to the parent's time.
            #expect(after[0].hlc == before[0].hlc)
            #expect(after[1].hlc != before[1].hlc)
            #expect(after[1].hlc.wallMillis <= hubTime)
            // Seq 2 went again, re-stamped, and was taken.
            #expect(pushes.withLock { $0 } == 3)
        }
    }

    @Test("""
    a change the parent sends as this node's own, numbered past anything it numbered by more than a restore can \
    explain (2^53), is refused: it became the base of the node's next numbers, past the sequence range, and every \
    later write of the node was refused upward for good
    """)
    func ownChangeNumberedFarAhead() async throws {
        let dir = try TempDir()
        // One a restored store may have lost (seq 5), one no restore explains.
        let parent = try await Self.serving([Self.change("d1", 5, "customers", "c-lost", ["last_name": "From the parent"]),
                                             Self.change("d1", Change.sequenceRange.upperBound, "customers", "c-forged", ["last_name": "From the parent"])], in: dir)
        let store = try Self.enrolledStore(dir, parent: parent)
        let agent = try SyncAgent(store: store, configuration: Self.configuration(parent))
        try await withTeardown({ await agent.shutdown(); await parent.stop() }) {
            try store.commit([.upsert("customers", id: "c-1", ["last_name": "Mine"])])
            // Twice: the second time the refused change is known here, and still refused.
            _ = try await agent.catchUp()
            try store.setCursor("pull.parent", 0)
            _ = try await agent.catchUp()
            #expect(try store.record(table: "customers", id: "c-lost") != nil, "an own change a restore may have lost is taken back")
            #expect(try store.record(table: "customers", id: "c-forged") == nil)
            let made = try store.commit([.upsert("customers", id: "c-2", ["last_name": "Next"])])
            #expect(made.map(\.originSeq) == [6], "numbered after the changes it made or took back")
        }
    }

    @Test("this node's report on itself (its governance status) written by another node and sent by the parent is refused: a country's forged report, refused at HQ, was delivered down and the dealer's own status said what the country wrote")
    func ownReportWrittenByAnother() async throws {
        let dir = try TempDir()
        let parent = try await Self.serving([
            Self.change("de", 7, "governance_status", "d1", ["node": "d1", "state": "refused", "message": "tampered"]),
            Self.change("de", 8, "kpi_snapshots", "d1:sla:month:2026-12-01", ["node": "d1", "kpi": "sla"]),
            Self.change("de", 9, "erasure_acks", "era-1@d1", ["node": "d1", "erasure_id": "era-1"]),
            Self.change("de", 10, "customers", "c-9", ["owning_dealer": "d1", "last_name": "From the country"]),
        ], in: dir)
        let store = try Self.enrolledStore(dir, parent: parent)
        let agent = try SyncAgent(store: store, configuration: Self.configuration(parent))
        try await withTeardown({ await agent.shutdown(); await parent.stop() }) {
            _ = try await agent.catchUp()
            #expect(try store.record(table: "governance_status", id: "d1") == nil)
            #expect(try store.record(table: "kpi_snapshots", id: "d1:sla:month:2026-12-01") == nil)
            #expect(try store.record(table: "erasure_acks", id: "era-1@d1") == nil)
            #expect(try store.quarantined().filter { $0.code == "forbidden" }.count == 3)
            #expect(try store.record(table: "customers", id: "c-9") != nil, "the page's other change is applied")
        }
    }

    @Test("a parent answering every pull 'go away, fetch your scope again' (410) is not asked again in a tight loop")
    func rebootstrapLoop() async throws {
        let dir = try TempDir()
        let parent = try await FakeParent(directory: dir.path) { request in
            if request.path == "/v1/pull" {
                return .encoding(ErrorResponse(code: RebootstrapRequired.code, message: "purged"), status: 410)
            }
            return .encoding(ErrorResponse(code: "not_found", message: "no such route"), status: 404)
        }
        let store = try Self.enrolledStore(dir, parent: parent)
        let agent = try SyncAgent(store: store, configuration: Self.configuration(parent))
        let running = Task { try await agent.run() }
        try await withTeardown({ running.cancel(); _ = await running.result; await parent.stop() }) {
            let pulls = { parent.requests.filter { $0.path == "/v1/pull" }.count }
            try await eventually(timeout: 60, "the agent's second pull") { pulls() >= 2 }
            let before = pulls()
            try await Task.sleep(for: .seconds(3))
            // Backoff from 0.1 s up to 1 s: under ten in 3 s; the loop made over a thousand.
            #expect(pulls() - before <= 30, "pulls in 3 s: \(pulls() - before)")
            #expect(agent.status.consecutiveFailures > 0)
            #expect(agent.status.rebootstraps >= 1)
        }
    }

    @Test("a dealer's enrollment through a country whose HQ fails: HQ's own refusal reaches the dealer, a proxy's page in front of HQ does not (it was passed on verbatim), HQ's database being unavailable is a 503 with Retry-After (it was a 502)")
    func relayedEnrollmentErrors() async throws {
        let dir = try TempDir()
        let parent = try await FakeParent(directory: dir.path) { request in
            let token = String(decoding: request.body, as: UTF8.self)
            if token.contains("tst_used") {
                return .encoding(ErrorResponse(code: "token_used", message: "this enrollment token was used already"), status: 409)
            }
            if token.contains("tst_down") {
                return .encoding(ErrorResponse(code: "storage_unavailable", message: "the hub's database cannot be reached right now; nothing was applied. Retry later"), status: 503)
            }
            let status = token.contains("tst_proxy4") ? 403 : 502
            return .json(status: status, Data("<html><body>Bad Gateway: upstream 10.20.30.40:8443 (hq-internal.example) refused</body></html>".utf8))
        }
        let store = try NodeStore(path: dir.path + "/de.sqlite")
        let identity = NodeIdentity(tenant: "acme", node: "de", parent: "hq")
        try store.completeEnrollment(identity, credential: "tsc_fake", parentURL: parent.url, highestKnownSeq: 0)
        let client = try ParentClient(configuration: Self.configuration(parent), credential: "tsc_fake")
        let relay = RelayDirectory(store: store, identity: identity, mirror: try HubCatalog(directory: dir.path + "/mirror"),
                                   parent: client, logger: Logger(label: "test"))
        for token in ["tst_proxy5", "tst_proxy4"] {
            do {
                _ = try await relay.enroll(EnrollRequest(token: token), relayer: nil)
                Issue.record("enrollment through a failing HQ succeeded")
            } catch let error as APIError {
                #expect(error.status.code == 502 && error.code == "parent_unreachable", "\(error)")
                #expect(!error.message.contains("10.20.30.40") && !error.message.contains("html"), "\(error)")
            }
        }
        // HQ up, its database not: the dealer hears 503 and when to come back (it heard 502, as for a broken gateway).
        do {
            _ = try await relay.enroll(EnrollRequest(token: "tst_down"), relayer: nil)
            Issue.record("enrollment through HQ without its database succeeded")
        } catch let error as APIError {
            #expect(error.status.code == 503 && error.code == "parent_unavailable" && error.headers[.retryAfter] == "5", "\(error)")
        }
        do {
            _ = try await relay.enroll(EnrollRequest(token: "tst_used"), relayer: nil)
            Issue.record("a used token was accepted")
        } catch let error as APIError {
            #expect(error.status.code == 409 && error.code == "token_used" && error.message == "this enrollment token was used already", "\(error)")
        }
        try await client.shutdown()
        await parent.stop()
    }
}

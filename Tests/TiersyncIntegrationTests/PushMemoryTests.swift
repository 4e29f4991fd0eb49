import CompressNIO
import Foundation
import NIOCore
import Testing
import TiersyncCore
import TiersyncServer
import TiersyncTestSupport

/// Large pushes hold a bounded share of the hub's memory (``PushMemoryBudget``): past it they
/// wait their turn and then are answered 503, one tenant never holds more than half, and a
/// gzip body's declared size is judged before anything is inflated.
@Suite("Push memory budget", .serialized)
struct PushMemoryTests {
    @Test("plain values: immediate within the budget; a tenant at its share waits without holding the others; a waiter past the budget is not overtaken; a wait runs out; a dropped reservation gives its bytes back")
    func budget() async throws {
        let budget = PushMemoryBudget(capacity: 100, largestBody: 40, waitLimit: .seconds(120))
        #expect(budget.tenantShare == 50)
        let a1 = try #require(await budget.reserve(30, tenant: "a"))
        let a2 = try #require(await budget.reserve(20, tenant: "a"))
        // a is at its share: its next push waits, and b's goes past it.
        let aWaiting = Task { await budget.reserve(10, tenant: "a") }
        try await eventually(timeout: 60, "a's push waits") { budget.usage().waiting == 1 }
        let b = try #require(await budget.reserve(40, tenant: "b"))
        #expect(budget.usage(of: "b").tenant == 40 && budget.usage().used == 90)
        // c's does not fit the budget: it waits; both go when a gives bytes back.
        let cWaiting = Task { await budget.reserve(20, tenant: "c") }
        try await eventually(timeout: 60, "c's push waits") { budget.usage().waiting == 2 }
        a1.release()
        a1.release()  // once only
        let a3 = try #require(await aWaiting.value)
        let c = try #require(await cWaiting.value)
        #expect(budget.usage().used == 90 && budget.usage(of: "a").tenant == 30 && budget.usage().waiting == 0)
        a3.release()
        // d's large push waits for the budget; e's small one, which would fit, queues behind it.
        let dWaiting = Task { await budget.reserve(40, tenant: "d") }
        try await eventually(timeout: 60, "d's push waits") { budget.usage().waiting == 1 }
        let eWaiting = Task { await budget.reserve(10, tenant: "e") }
        try await eventually(timeout: 60, "e's push waits behind d's") { budget.usage().waiting == 2 }
        b.release()
        let d = try #require(await dWaiting.value)
        let e = try #require(await eWaiting.value)
        #expect(budget.usage().used == 90 && budget.usage().waiting == 0)
        // A wait runs out; a cancelled wait ends at once.
        let brief = PushMemoryBudget(capacity: 10, largestBody: 5, waitLimit: .milliseconds(300))
        let full = try #require(await brief.reserve(5, tenant: "x"))
        let full2 = try #require(await brief.reserve(5, tenant: "z"))
        #expect(await brief.reserve(1, tenant: "y") == nil && brief.usage().waiting == 0)
        full.release()
        full2.release()
        let small = PushMemoryBudget(capacity: 10, largestBody: 5, waitLimit: .seconds(60))
        let held = try #require(await small.reserve(5, tenant: "x"))
        let held2 = try #require(await small.reserve(5, tenant: "z"))
        let started = ContinuousClock.now
        let cancelled = Task { await small.reserve(1, tenant: "y") }
        cancelled.cancel()
        #expect(await cancelled.value == nil && small.usage().waiting == 0)
        #expect(ContinuousClock.now - started < .seconds(30), "not held for the wait limit (60 s)")
        held.release()
        held2.release()
        for held in [a2, c, d, e] { held.release() }
        #expect(budget.usage().used == 0)
        // A reservation nobody releases gives its bytes back when it goes.
        do { _ = await budget.reserve(30, tenant: "f") }
        #expect(budget.usage().used == 0 && budget.usage(of: "f").tenant == 0)
    }

    static func gzip(_ data: Data) throws -> Data {
        var buffer = ByteBuffer(bytes: data)
        return Data(try buffer.compress(with: .gzip).readableBytesView)
    }

    /// A gzip body with its trailer's size replaced by `size`.
    static func declaring(_ size: UInt32, _ body: Data) -> Data {
        var patched = body
        withUnsafeBytes(of: size.littleEndian) { patched.replaceSubrange(patched.count - 4..<patched.count, with: $0) }
        return patched
    }

    @Test("over TLS: a tenant's large push past its share is answered 503 with Retry-After while another tenant's goes through, and goes through once the share is free; a gzip body is inflated no further than its trailer declares (one declaring less than its data, or more than the limit and not matching it, is malformed)")
    func overTLS() async throws {
        var limits = HubConfiguration.Limits()
        limits.maxDecompressedBytes = 1 << 20
        limits.pushMemoryBytes = 2 << 20
        limits.pushMemoryWaitSeconds = 1
        try await withHubFixture(limits: limits) { f in
            let budget = f.hub.server.pushMemory
            #expect(budget.tenantShare == 1 << 20)
            // ~400 KB once inflated: past the size read inline, so it reserves.
            func large(_ origin: NodeID, _ prefix: String) throws -> Data {
                let changes = (1...800).map { customer(origin, Int64($0), "\(prefix)-\($0)", ["street": .string(String(repeating: "s", count: 300)), "owning_dealer": .string(origin.rawValue)]) }
                let json = try JSONEncoder().encode(PushRequest(tenant: nil, through: 800, changes: changes))
                #expect(json.count > 300 * 1024)
                return try Self.gzip(json)
            }
            let acmeBody = try large("d1", "big")
            // acme's share is taken (as by its other nodes' large pushes in flight).
            let held = try #require(await budget.reserve(1 << 20, tenant: "acme"))
            let started = ContinuousClock.now
            let busy = try await f.client.send("POST", "/v1/push", body: acmeBody, credential: f.d1, headers: [("Content-Encoding", "gzip")])
            #expect(busy.status == 503 && busy.error?.code == "push_memory_busy" && busy.headers["retry-after"] == "5", "\(busy.status) \(busy.text)")
            #expect(ContinuousClock.now - started >= .milliseconds(900), "it waited its turn first")
            // Another tenant is not held behind acme.
            let other = try await f.client.send("POST", "/v1/push", body: try large("g1", "globex"), credential: f.other, headers: [("Content-Encoding", "gzip")])
            #expect(other.status == 200, "\(other.text)")
            held.release()
            let served = try await f.client.send("POST", "/v1/push", body: acmeBody, credential: f.d1, headers: [("Content-Encoding", "gzip")])
            #expect(served.status == 200 && (try? served.decode(PushResponse.self).applied) == 800, "\(served.text)")
            #expect(budget.usage().used == 0, "every reservation was given back")
            // Declared past the limit: inflated up to the limit (reserving it), and its trailer
            // then found wrong.
            let huge = try await f.client.send("POST", "/v1/push", body: Self.declaring(100 << 20, acmeBody), credential: f.d1, headers: [("Content-Encoding", "gzip")])
            #expect(huge.status == 400 && huge.error?.code == "malformed_body", "\(huge.text)")
            // Declared smaller than the data: inflated no further than declared.
            let lying = try await f.client.send("POST", "/v1/push", body: Self.declaring(1_000, acmeBody), credential: f.d1, headers: [("Content-Encoding", "gzip")])
            #expect(lying.status == 400 && lying.error?.message.contains("inflates past the 1000 bytes its trailer declares") == true, "\(lying.text)")
            #expect(try await f.liveIDs("customers").count == 800)
        }
    }
}

import Foundation
import Testing
import TiersyncCore
import TiersyncStorage
import TiersyncStore
import TiersyncTestSupport

/// The log histories of a store that serves its log (NodeStore+LogHistory), each "process"
/// here a store opened anew on the same file.
@Suite("Log histories")
struct LogHistoryStoreTests {
    @Test("""
    a store that never served its log records no history; serving begins one, and each later opening begins another \
    before its first new position, floored at the highest position so far; standings follow, and only a lost one loses
    """)
    func historiesOfAServedLog() async throws {
        let dir = try TempDir()
        let path = "\(dir.path)/hq.sqlite"
        func page(_ store: NodeStore) async throws -> PullResponse {
            try await store.feed(after: 0, scope: .everything, excluding: nil, limit: 10)
        }
        do {
            let dealer = try makeStore(dir, "d1")
            try dealer.commit([.upsert("customers", id: "c1", ["last_name": "Nobody pulls from me"])])
            #expect(try dealer.logHistories().isEmpty, "a store serving no child records none")
        }
        let first = try makeStore(dir, "hq", parent: nil)
        try first.commit((0..<3).map { .upsert("customers", id: "c\($0)", ["last_name": "A"]) })
        #expect(try first.logHistories().isEmpty)
        let h1 = try #require(try await page(first).history, "serving begins a history")
        #expect(try first.logHistories().map(\.floor) == [3], "at the head when it began")
        try first.commit([.upsert("customers", id: "c9", ["last_name": "B"])])
        #expect(try first.logHistories().count == 1, "one per process")

        // Another process: it begins one before it numbers its first change.
        let second = try NodeStore(path: path)
        try second.commit([.upsert("customers", id: "c1", ["last_name": "C"])])
        let histories = try second.logHistories()
        #expect(histories.map(\.floor) == [3, 4], "begun before its first position, at the highest so far")
        let h2 = histories[1].id
        #expect(try await page(second).history == h2)

        let standing1 = try await second.logHistoryStanding(h1), standing2 = try await second.logHistoryStanding(h2)
        #expect(standing1 == .superseded(floor: 4) && standing2 == .current)
        #expect(!standing1.loses(cursor: 4), "a cursor handed out under h1 is at most 4")
        #expect(standing1.loses(cursor: 5), "position 5 was numbered under h2: a cursor 5 of h1 is of another log")
        #expect(!standing2.loses(cursor: 1_000_000))
        let unknown = try await second.logHistoryStanding("abc")
        #expect(unknown == .unknown && unknown.loses(cursor: 1) && !unknown.loses(cursor: 0))
    }
}

import Foundation
import Testing
import TiersyncAgent
import TiersyncTestSupport

/// What a parent answers is as untrusted as what a node pushes: a dealer's parent is a
/// country node, itself only an enrolled node.
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
}

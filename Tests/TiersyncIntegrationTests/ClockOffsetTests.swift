import Testing
@testable import TiersyncAgent

/// How an agent reads its clock's offset from a push's answer (`SyncAgent.clockOffset`):
/// the parent reads its clock once per push, somewhere between the request's sending and
/// the answer's arrival.
@Suite("Clock offset from a push")
struct ClockOffsetTests {
    @Test("""
        a push that waited 2.5 s at a busy parent reads as no offset when the parent's clock fell within the wait \
        (it read as 2.5 s ahead, and `status` told the operator to fix a right clock); a clock really ahead or behind \
        reads as at least the part of its offset the wait cannot explain
        """)
    func offsetWithinTheRoundTrip() {
        // Sent at 1,000, answered at 3,500; the parent read 1,050 on arrival of the body.
        #expect(SyncAgent.clockOffset(sentAt: 1_000, receivedAt: 3_500, parentTime: 1_050) == 0)
        #expect(SyncAgent.clockOffset(sentAt: 1_000, receivedAt: 3_500, parentTime: 3_400) == 0)
        // This clock 60 s ahead: the parent read 60 s less than anything seen here.
        #expect(SyncAgent.clockOffset(sentAt: 61_000, receivedAt: 63_500, parentTime: 1_050) == 59_950)
        // 60 s behind.
        #expect(SyncAgent.clockOffset(sentAt: 1_000, receivedAt: 3_500, parentTime: 63_400) == -59_900)
        // A clock stepped back between sending and the answer: still the difference nearer zero.
        #expect(SyncAgent.clockOffset(sentAt: 5_000, receivedAt: 4_000, parentTime: 1_000) == 3_000)
        // Extremes do not trap.
        #expect(SyncAgent.clockOffset(sentAt: .max, receivedAt: .max, parentTime: 0) == .max)
        #expect(SyncAgent.clockOffset(sentAt: 0, receivedAt: 0, parentTime: .max) == .min)
    }
}

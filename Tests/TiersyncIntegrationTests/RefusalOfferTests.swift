import Testing
@testable import TiersyncAgent

/// When an agent asks its parent again for notices of changes refused above it, after a
/// take that came to nothing (`RefusalOffer`).
@Suite("Notices asked for again")
struct RefusalOfferTests {
    @Test("""
        a failed take is tried again after 2 s, doubling with each failure in a row up to a minute, and a success starts \
        over (a flat minute held a moved dealer's writes back 75 s after a 401 from a country that had not yet learned \
        the move was undone); a take that fell short waits a minute
        """)
    func pausesAfterAFailure() {
        let start = ContinuousClock.now
        var offer = RefusalOffer()
        offer.newest = 7
        #expect(offer.recentlyFruitless(now: start) == nil)

        offer.failed(7, now: start)
        #expect(offer.pause == .seconds(2))
        #expect(offer.recentlyFruitless(now: start + .seconds(1)) == 7)
        #expect(offer.remainingPause(now: start + .milliseconds(500)) == .milliseconds(1_500))
        #expect(offer.recentlyFruitless(now: start + .seconds(2)) == nil)
        #expect(offer.remainingPause(now: start + .seconds(2)) == nil)

        var pauses: [Duration] = []
        for _ in 0..<8 {
            offer.failed(7, now: start)
            pauses.append(offer.pause)
        }
        #expect(pauses == [.seconds(4), .seconds(8), .seconds(16), .seconds(32), .seconds(60), .seconds(60), .seconds(60), .seconds(60)])

        offer.succeeded()
        offer.failed(9, now: start)
        #expect(offer.pause == .seconds(2))
        #expect(offer.recentlyFruitless(now: start + .seconds(1)) == 9)

        offer.fellShort(9, now: start)
        #expect(offer.pause == .seconds(60))
        #expect(offer.recentlyFruitless(now: start + .seconds(59)) == 9)
        #expect(offer.recentlyFruitless(now: start + .seconds(60)) == nil)
        // A failure after falling short starts at 2 s again.
        offer.failed(9, now: start)
        #expect(offer.pause == .seconds(2))
    }
}

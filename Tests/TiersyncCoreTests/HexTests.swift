import Foundation
import Testing
import TiersyncCore

@Suite("Hex")
struct HexTests {
    @Test("bytes become two lower-case hex digits each, as %02x writes them")
    func hexMatchesFormat() {
        #expect([UInt8]().hexString == "")
        #expect([0x00, 0x0f, 0xa5, 0xff].hexString == "000fa5ff")
        let all = (0...255).map { UInt8($0) }
        #expect(all.hexString == all.map { String(format: "%02x", $0) }.joined())
    }
}

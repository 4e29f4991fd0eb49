/// Lower-case hexadecimal text of bytes (digests, tokens). Built from a table: the
/// `String(format: "%02x")` it replaces went through Foundation's formatter per byte, which
/// was 3.7 % of the hub's CPU under 5,000 agents (credentials are digested per request).
extension Sequence<UInt8> {
    public var hexString: String {
        let digits = Array("0123456789abcdef".utf8)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(underestimatedCount * 2)
        for byte in self {
            bytes.append(digits[Int(byte >> 4)])
            bytes.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

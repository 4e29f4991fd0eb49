import TiersyncCore

/// The bearer secrets a hub's catalog hands out, whichever engine keeps the catalog: one-time
/// enrollment tokens and node credentials. Both are 32 random bytes in base64url (no padding)
/// behind a prefix saying what they are, so a secret pasted in the wrong place is recognisable.
/// Catalogs store only their SHA-256 digests, as lower-case hex (`DirectoryResponse` hands
/// those to a country's relay, so both engines must digest the same way); the digest itself
/// lives in each engine module, beside its swift-crypto import (this module does no crypto).
public enum Secrets {
    /// What a secret is for; the raw value is its prefix.
    public enum Kind: String, Sendable, CaseIterable {
        /// A one-time enrollment token (`admin token`).
        case enrollmentToken = "tse_"
        /// A node's bearer credential, returned once by enrollment.
        case credential = "tsc_"
        /// An administrator's console session (a cookie).
        case adminSession = "tss_"
        /// An administrator's API token, for scripts.
        case adminToken = "tsa_"
    }

    /// A new secret of `kind`.
    public static func new(_ kind: Kind) -> String {
        kind.rawValue + random()
    }

    /// `bytes` random bytes from the system's generator, in base64url without padding.
    public static func random(bytes: Int = 32) -> String {
        var generator = SystemRandomNumberGenerator()
        return base64URL((0..<bytes).map { _ in UInt8.random(in: .min ... .max, using: &generator) })
    }

    /// RFC 4648 §5 base64url without `=` padding (what Foundation's base64 with `+`→`-`,
    /// `/`→`_` and the padding removed gave before; written out here so this module needs
    /// no Foundation).
    static func base64URL(_ bytes: [UInt8]) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count * 4 + 2) / 3)
        var index = 0
        while index < bytes.count {
            let b0 = bytes[index], b1 = index + 1 < bytes.count ? bytes[index + 1] : 0, b2 = index + 2 < bytes.count ? bytes[index + 2] : 0
            let remaining = bytes.count - index
            out.append(alphabet[Int(b0 >> 2)])
            out.append(alphabet[Int((b0 & 0x03) << 4 | b1 >> 4)])
            if remaining > 1 { out.append(alphabet[Int((b1 & 0x0f) << 2 | b2 >> 6)]) }
            if remaining > 2 { out.append(alphabet[Int(b2 & 0x3f)]) }
            index += 3
        }
        return String(decoding: out, as: UTF8.self)
    }
}

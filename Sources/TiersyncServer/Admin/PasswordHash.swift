import _CryptoExtras
import Crypto
import Dispatch
import Foundation
import TiersyncStorage

/// Administrators' passwords as slow hashes: PBKDF2-HMAC-SHA256 with a per-user random salt
/// and OWASP's 210,000 rounds (swift-crypto's `_CryptoExtras`), written
/// `pbkdf2-sha256$<rounds>$<salt base64>$<hash base64>` so the rounds can grow later without
/// invalidating stored hashes. Hashing takes tens of milliseconds of CPU on purpose, so the
/// async forms run it on a Dispatch queue, never on the cooperative pool.
public enum PasswordHash {
    public static let defaultRounds = 210_000
    static let scheme = "pbkdf2-sha256"
    /// The shortest password an administrator may have.
    public static let minimumLength = 12
    /// At most this many bytes of a password are read (a multi-megabyte password would
    /// otherwise be a way to burn the hub's CPU).
    public static let maximumLength = 1_024

    /// Whether `password` may be set: at least ``minimumLength`` characters, at most
    /// ``maximumLength`` bytes (a login refuses longer ones: 600 × "é" could be set and never
    /// used).
    public static func isAcceptable(_ password: String) -> Bool {
        password.count >= minimumLength && password.utf8.count <= maximumLength
    }

    /// What ``isAcceptable(_:)`` asks, for messages.
    public static let rule = "a password has at least \(minimumLength) characters and at most \(maximumLength) bytes"

    /// A new hash of `password` with a fresh salt.
    public static func make(_ password: String, rounds: Int = defaultRounds) throws -> String {
        var generator = SystemRandomNumberGenerator()
        let salt = (0..<16).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        let key = try derive(password, salt: salt, rounds: rounds)
        return "\(scheme)$\(rounds)$\(Data(salt).base64EncodedString())$\(Data(key).base64EncodedString())"
    }

    /// Whether `password` hashes to `stored` (compared in constant time). A malformed
    /// stored hash never matches.
    public static func verify(_ password: String, against stored: String) -> Bool {
        let parts = stored.split(separator: "$")
        guard parts.count == 4, parts[0] == scheme, let rounds = Int(parts[1]), (1_000...10_000_000).contains(rounds),
              let salt = Data(base64Encoded: String(parts[2])), let expected = Data(base64Encoded: String(parts[3])),
              let key = try? derive(password, salt: Array(salt), rounds: rounds), key.count == expected.count else { return false }
        return zip(key, expected).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }

    /// ``make(_:rounds:)`` on the hub's own threads (``CPUWork/admin``).
    public static func makeAsync(_ password: String, rounds: Int = defaultRounds) async throws -> String {
        try await CPUWork.admin.run { try make(password, rounds: rounds) }
    }

    /// ``verify(_:against:)`` on the hub's own threads (``CPUWork/admin``); false when they
    /// cannot run it.
    public static func verifyAsync(_ password: String, against stored: String) async -> Bool {
        (try? await CPUWork.admin.run { verify(password, against: stored) }) ?? false
    }

    /// A hash no password matches, verified against for unknown users so that a login for
    /// a name that does not exist takes as long as one with a wrong password.
    static let decoy: String = (try? make("decoy-\(UUID().uuidString)")) ?? "\(scheme)$210000$AAAA$AAAA"

    private static func derive(_ password: String, salt: [UInt8], rounds: Int) throws -> [UInt8] {
        let key = try KDF.Insecure.PBKDF2.deriveKey(from: Array(password.utf8.prefix(maximumLength)), salt: salt, using: .sha256,
                                                    outputByteCount: 32, unsafeUncheckedRounds: rounds)
        return key.withUnsafeBytes { Array($0) }
    }
}

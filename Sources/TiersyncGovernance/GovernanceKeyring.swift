import Crypto
import Foundation

/// The release keys a node trusts: the one in force and the ones it replaced, each of the
/// latter valid only for what it signed before its rotation. Built from the key the node
/// holds (its anchor: learned at enrollment, pinned, or adopted from an earlier rotation)
/// and the tenant's ``KeyRotation`` announcements:
///
/// - **Forward**, an announcement signed by the key in force (and countersigned by the new
///   key) hands over to the new key. An announcement that is not signed by the key in
///   force — forged, or signed by any other key — is refused and never adopted.
/// - **Backward**, an announcement countersigned by a key already trusted vouches for the
///   key it replaced, so a node that learned the new key first still accepts what the old
///   one signed before the rotation.
public struct GovernanceKeyring: Sendable {
    /// A key HQ replaced, with the rotation that retired it.
    public struct Retired: Sendable {
        public var key: GovernancePublicKey
        public var rotation: KeyRotation
    }

    /// The key in force: everything HQ signs from now on is signed by it.
    public private(set) var current: GovernancePublicKey
    /// Replaced keys, by key id.
    public private(set) var retired: [String: Retired] = [:]
    /// The announcements that passed, oldest first (to keep and to serve on).
    public private(set) var accepted: [(rotation: KeyRotation, document: SignedDocument)] = []
    /// One line per refused announcement ("key-rotation 2 refused: …").
    public private(set) var refusals: [String] = []

    /// A keyring of one key, with no rotations.
    public init(key: GovernancePublicKey) {
        current = key
    }

    /// Walks `rotations` forward and backward from `anchor` (duplicates and the order given do
    /// not matter).
    public init(anchor: GovernancePublicKey, rotations: [SignedDocument], tenant: String) {
        current = anchor
        var pending: [(claimed: KeyRotation?, document: SignedDocument)] = []
        var seen: Set<String> = []
        for document in rotations where seen.insert(document.payload + "|" + document.signature).inserted {
            pending.append((document.unverifiedPayload(KeyRotation.self), document))
        }
        pending.sort { ($0.claimed?.sequence ?? .max) < ($1.claimed?.sequence ?? .max) }
        var failed: [String: String] = [:]
        func name(_ entry: (claimed: KeyRotation?, document: SignedDocument)) -> String {
            "key-rotation \(entry.claimed.map { String($0.sequence) } ?? "?")"
        }
        // Forward: the key in force hands over, announcement by announcement.
        while let i = pending.firstIndex(where: { $0.claimed?.previousKey == current.base64 }) {
            let entry = pending.remove(at: i)
            do {
                let (rotation, next) = try Self.open(entry.document, tenant: tenant, signer: current)
                retired[current.keyID] = Retired(key: current, rotation: rotation)
                accepted.append((rotation, entry.document))
                current = next
            } catch {
                failed[entry.document.signature] = "\(name(entry)) refused: \(error)"
            }
        }
        // Backward: a trusted key vouches for the one it replaced.
        var earliest = anchor
        while let i = pending.firstIndex(where: { $0.claimed?.newKey == earliest.base64 }) {
            let entry = pending.remove(at: i)
            do {
                guard let claimed = entry.claimed, let previous = GovernancePublicKey(base64: claimed.previousKey) else {
                    throw GovernanceRefusal.unreadable(kind: SignedDocument.Kind.keyRotation.rawValue, detail: "no previous key")
                }
                let (rotation, _) = try Self.open(entry.document, tenant: tenant, signer: previous)
                guard retired[previous.keyID] == nil, previous != current else { continue }
                retired[previous.keyID] = Retired(key: previous, rotation: rotation)
                accepted.insert((rotation, entry.document), at: 0)
                earliest = previous
            } catch {
                failed[entry.document.signature] = "\(name(entry)) refused: \(error)"
            }
        }
        // What remains hands over from a key this node never trusted.
        for entry in pending where failed[entry.document.signature] == nil {
            if let claimed = entry.claimed, let previous = GovernancePublicKey(base64: claimed.previousKey),
               retired[previous.keyID] != nil {
                // A second hand-over from a key already retired: never followed.
                failed[entry.document.signature] = "\(name(entry)) refused: key \(previous.keyID) was already replaced by an earlier rotation"
                continue
            }
            do {
                // Check it against the key in force, for the precise reason.
                _ = try Self.open(entry.document, tenant: tenant, signer: current)
                failed[entry.document.signature] = "\(name(entry)) refused: it does not follow on from the keys this node trusts"
            } catch {
                failed[entry.document.signature] = "\(name(entry)) refused: \(error)"
            }
        }
        refusals = rotations.compactMap { failed.removeValue(forKey: $0.signature) }
        accepted.sort { $0.rotation.sequence < $1.rotation.sequence }
    }

    /// Checks one announcement: signed by `signer` as a key rotation, naming `signer` as the
    /// previous key, for `tenant`, and countersigned by the new key. Returns it and the new key.
    static func open(_ document: SignedDocument, tenant: String, signer: GovernancePublicKey) throws(GovernanceRefusal) -> (KeyRotation, GovernancePublicKey) {
        let kind = SignedDocument.Kind.keyRotation.rawValue
        let bytes = try signer.verify(document, as: .keyRotation)
        guard let rotation = try? JSONDecoder().decode(KeyRotation.self, from: bytes) else {
            throw .unreadable(kind: kind, detail: "not a key rotation")
        }
        guard rotation.tenant == tenant else { throw .wrongTenant(kind: kind, tenant: rotation.tenant) }
        guard rotation.previousKey == signer.base64 else {
            throw .badSignature(kind: kind, detail: "it names key \(GovernancePublicKey(base64: rotation.previousKey)?.keyID ?? "?") as the previous one, but is signed by \(signer.keyID)")
        }
        guard let next = GovernancePublicKey(base64: rotation.newKey) else { throw .unreadable(kind: kind, detail: "the new key is not an Ed25519 public key") }
        guard next != signer else { throw .unreadable(kind: kind, detail: "the new key is the previous one") }
        guard let countersignature = document.countersignature.flatMap({ Data(base64Encoded: $0) }),
              (try? Curve25519.Signing.PublicKey(rawRepresentation: next.rawRepresentation))?
                .isValidSignature(countersignature, for: SignedDocument.countersignedMessage(payload: bytes)) == true else {
            throw .badSignature(kind: kind, detail: "not countersigned by the new key \(next.keyID)")
        }
        return (rotation, next)
    }

    /// Every key of the ring, the one in force first.
    public var keys: [GovernancePublicKey] { [current] + retired.values.map(\.key).sorted { $0.keyID < $1.keyID } }

    /// Verifies and decodes a document signed by the key in force, or by a retired key if
    /// `signedBefore` says the document falls within what that key signed before its
    /// rotation.
    public func open<T: Decodable>(_ document: SignedDocument, as kind: SignedDocument.Kind, _ type: T.Type,
                                   signedBefore: (T, KeyRotation) -> Bool) throws(GovernanceRefusal) -> T {
        guard let old = retired[document.keyID] else { return try current.open(document, as: kind, type) }
        let value = try old.key.open(document, as: kind, type)
        guard signedBefore(value, old.rotation) else {
            throw .badSignature(kind: kind.rawValue, detail: "signed by \(old.key), which HQ replaced with \(Self.describe(old.rotation)); it signs nothing issued after that")
        }
        return value
    }

    public func openRelease(_ document: SignedDocument) throws(GovernanceRefusal) -> Release {
        try open(document, as: .release, Release.self) { release, rotation in release.version <= rotation.releasesThrough }
    }

    public func openRollout(_ document: SignedDocument) throws(GovernanceRefusal) -> Rollout {
        try open(document, as: .rollout, Rollout.self) { rollout, rotation in rollout.sequence <= rotation.rolloutsThrough }
    }

    public func openRevocation(_ document: SignedDocument) throws(GovernanceRefusal) -> OverlayKeyRevocation {
        try open(document, as: .overlayKeyRevocation, OverlayKeyRevocation.self) { revocation, rotation in
            revocation.revokedAtMillis <= rotation.rotatedAtMillis
        }
    }

    /// Verifies an overlay: its key certified for `expectedCountry` by the key in force (or by
    /// a retired key before its rotation), that certificate not revoked by `revocation`, the
    /// overlay signed by that key and the country's.
    public func openOverlay(_ document: SignedDocument, tenant: String, expectedCountry: String,
                            revocation: OverlayKeyRevocation? = nil) throws(GovernanceRefusal) -> Overlay {
        try GovernancePublicKey.openOverlay(document, tenant: tenant, expectedCountry: expectedCountry) { certificate throws(GovernanceRefusal) in
            let signer = retired[certificate.keyID]
            let key = signer?.key ?? current
            let bytes: Data
            do {
                bytes = try key.verify(payload: certificate.payload, signature: certificate.signature, keyID: certificate.keyID, kind: .overlayKey)
            } catch {
                throw .badCertificate("the key certificate is not signed by HQ's key \(current.keyID)")
            }
            guard let cert = try? JSONDecoder().decode(OverlayCertificate.self, from: bytes) else {
                throw .badCertificate("the key certificate is unreadable")
            }
            if let signer, cert.issuedAtMillis > signer.rotation.rotatedAtMillis {
                throw .badCertificate("the key certificate is signed by \(signer.key), which HQ replaced with \(Self.describe(signer.rotation)) before it was issued")
            }
            if let revocation, revocation.node == cert.node, cert.issuedAtMillis <= revocation.revokedAtMillis {
                let keyID = GovernancePublicKey(base64: cert.publicKey)?.keyID ?? "?"
                throw .badCertificate("HQ revoked \(cert.node)'s overlay key \(keyID) (certified \(Self.iso(cert.issuedAtMillis))) at \(Self.iso(revocation.revokedAtMillis))\(revocation.reason.map { ": \($0)" } ?? "")")
            }
            return cert
        }
    }

    static func describe(_ rotation: KeyRotation) -> String {
        "\(GovernancePublicKey(base64: rotation.newKey)?.description ?? "another key") at \(iso(rotation.rotatedAtMillis)) (key-rotation \(rotation.sequence))"
    }

    static func iso(_ millis: UInt64) -> String {
        ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double(millis) / 1000))
    }
}

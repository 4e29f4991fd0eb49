import Crypto
import Foundation

/// A governance document as it travels: the exact payload bytes (base64 of JSON) and an
/// Ed25519 signature over them. Nodes verify the bytes they received and only then decode
/// them, so no re-encoding can ever make a signature pass or fail by accident.
public struct SignedDocument: Sendable, Hashable, Codable {
    public enum Kind: String, Sendable, Codable {
        case release, rollout, overlay
        case overlayKey = "overlay-key"
        /// HQ's announcement of its next release key, signed by the key it replaces (and
        /// countersigned by the new one): see ``KeyRotation``.
        case keyRotation = "key-rotation"
        /// HQ's revocation of the overlay-key certificates it issued to a country: see
        /// ``OverlayKeyRevocation``.
        case overlayKeyRevocation = "overlay-key-revocation"
    }

    public var kind: Kind
    public var payload: String
    public var signature: String
    /// The signing key's id (``GovernancePublicKey/keyID``), to say which key was expected.
    public var keyID: String
    /// For overlays: HQ's certificate of the country's key.
    public var certificate: SignedCertificate?
    /// For key rotations: the new key's signature over the same payload (its own domain),
    /// proving HQ holds it and vouching for the key it replaces, so a node that learned only
    /// the new key still accepts what the old one signed before the rotation.
    public var countersignature: String?

    public init(kind: Kind, payload: String, signature: String, keyID: String, certificate: SignedCertificate? = nil,
                countersignature: String? = nil) {
        self.kind = kind
        self.payload = payload
        self.signature = signature
        self.keyID = keyID
        self.certificate = certificate
        self.countersignature = countersignature
    }

    /// The envelope as stored and sent: its JSON text.
    public var json: String {
        // Encoding plain strings cannot fail.
        String(decoding: (try? JSONEncoder().encode(self)) ?? Data("{}".utf8), as: UTF8.self)
    }

    /// An envelope from its JSON text; nil when it is not one.
    public init?(json: String) {
        guard let document = try? JSONDecoder().decode(SignedDocument.self, from: Data(json.utf8)) else { return nil }
        self = document
    }

    /// The payload decoded *without* checking the signature: only to route documents (which
    /// releases a branch needs) or to show them; a node verifies before applying anything.
    public func unverifiedPayload<T: Decodable>(_ type: T.Type) -> T? {
        Data(base64Encoded: payload).flatMap { try? JSONDecoder().decode(T.self, from: $0) }
    }

    /// What the signature covers: a domain tag and the kind, then the payload, so a
    /// signature made for one kind of document cannot be replayed as another.
    static func message(kind: Kind, payload: Data) -> Data {
        Data("tiersync-governance-v1\n\(kind.rawValue)\n".utf8) + payload
    }

    /// What a key rotation's countersignature covers: its own domain, so neither signature
    /// can stand in for the other.
    static func countersignedMessage(payload: Data) -> Data {
        Data("tiersync-governance-v1\nkey-rotation-accepted\n".utf8) + payload
    }
}

/// An overlay certificate as signed by HQ (a ``SignedDocument`` of kind `overlay-key`,
/// without a certificate of its own).
public struct SignedCertificate: Sendable, Hashable, Codable {
    public var payload: String
    public var signature: String
    public var keyID: String

    public init(payload: String, signature: String, keyID: String) {
        self.payload = payload
        self.signature = signature
        self.keyID = keyID
    }
}

/// Why a governance document was not applied.
public enum GovernanceRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    case badSignature(kind: String, detail: String)
    case unreadable(kind: String, detail: String)
    case wrongTenant(kind: String, tenant: String)
    case badCertificate(String)
    case overlayOutOfBounds(String)

    public var description: String {
        switch self {
        case .badSignature(let kind, let detail): "\(kind) refused: \(detail)"
        case .unreadable(let kind, let detail): "\(kind) refused: unreadable (\(detail))"
        case .wrongTenant(let kind, let tenant): "\(kind) refused: it belongs to tenant '\(tenant)'"
        case .badCertificate(let detail): "overlay refused: \(detail)"
        case .overlayOutOfBounds(let detail): "overlay refused: \(detail)"
        }
    }
}

/// An Ed25519 public key as governance documents name it.
public struct GovernancePublicKey: Sendable, Hashable, Codable, CustomStringConvertible {
    public let rawRepresentation: Data

    public init(rawRepresentation: Data) throws(GovernanceRefusal) {
        guard (try? Curve25519.Signing.PublicKey(rawRepresentation: rawRepresentation)) != nil else {
            throw .badCertificate("not an Ed25519 public key")
        }
        self.rawRepresentation = rawRepresentation
    }

    public init?(base64: String) {
        guard let data = Data(base64Encoded: base64), (try? Curve25519.Signing.PublicKey(rawRepresentation: data)) != nil else { return nil }
        rawRepresentation = data
    }

    public var base64: String { rawRepresentation.base64EncodedString() }

    /// First 16 hex digits of the key's SHA-256: short enough for logs, unique in practice.
    public var keyID: String { SHA256.hash(data: rawRepresentation).prefix(8).map { String(format: "%02x", $0) }.joined() }

    public var description: String { "ed25519:\(keyID)" }

    /// Checks `document`'s signature and kind; returns the payload bytes.
    public func verify(_ document: SignedDocument, as kind: SignedDocument.Kind) throws(GovernanceRefusal) -> Data {
        guard document.kind == kind else {
            throw .badSignature(kind: kind.rawValue, detail: "it is a \(document.kind.rawValue), not a \(kind.rawValue)")
        }
        return try verify(payload: document.payload, signature: document.signature, keyID: document.keyID, kind: kind)
    }

    func verify(payload: String, signature: String, keyID: String, kind: SignedDocument.Kind) throws(GovernanceRefusal) -> Data {
        guard let bytes = Data(base64Encoded: payload), let sig = Data(base64Encoded: signature) else {
            throw .unreadable(kind: kind.rawValue, detail: "payload or signature is not base64")
        }
        let key = try! Curve25519.Signing.PublicKey(rawRepresentation: rawRepresentation)
        guard key.isValidSignature(sig, for: SignedDocument.message(kind: kind, payload: bytes)) else {
            let who = keyID == self.keyID ? "" : " (signed by key \(keyID), expected \(self.keyID))"
            throw .badSignature(kind: kind.rawValue, detail: "signature does not match \(self)\(who): altered or forged on the way")
        }
        return bytes
    }

    /// Verifies and decodes a document.
    public func open<T: Decodable>(_ document: SignedDocument, as kind: SignedDocument.Kind, _ type: T.Type) throws(GovernanceRefusal) -> T {
        let bytes = try verify(document, as: kind)
        do { return try JSONDecoder().decode(T.self, from: bytes) } catch {
            throw .unreadable(kind: kind.rawValue, detail: "\(error)")
        }
    }

    /// Verifies an overlay: HQ (`self`) certified the signing key for `expectedCountry`,
    /// that key signed the overlay, and the overlay is the country's.
    public func openOverlay(_ document: SignedDocument, tenant: String, expectedCountry: String) throws(GovernanceRefusal) -> Overlay {
        try Self.openOverlay(document, tenant: tenant, expectedCountry: expectedCountry) { certificate throws(GovernanceRefusal) in
            let certBytes: Data
            do {
                certBytes = try verify(payload: certificate.payload, signature: certificate.signature, keyID: certificate.keyID, kind: .overlayKey)
            } catch {
                throw .badCertificate("the key certificate is not signed by HQ's key \(keyID)")
            }
            guard let cert = try? JSONDecoder().decode(OverlayCertificate.self, from: certBytes) else {
                throw .badCertificate("the key certificate is unreadable")
            }
            return cert
        }
    }

    /// Verifies an overlay whose certificate `certify` checked (and decoded).
    static func openOverlay(_ document: SignedDocument, tenant: String, expectedCountry: String,
                            certify: (SignedCertificate) throws(GovernanceRefusal) -> OverlayCertificate) throws(GovernanceRefusal) -> Overlay {
        guard let certificate = document.certificate else { throw .badCertificate("no certificate from HQ for the signing key") }
        let cert = try certify(certificate)
        guard let countryKey = GovernancePublicKey(base64: cert.publicKey) else {
            throw .badCertificate("the key certificate is unreadable")
        }
        guard cert.tenant == tenant, cert.node == expectedCountry else {
            throw .badCertificate("the key is certified for \(cert.tenant)/\(cert.node), not \(tenant)/\(expectedCountry)")
        }
        let overlay: Overlay
        do { overlay = try countryKey.open(document, as: .overlay, Overlay.self) } catch {
            throw .badCertificate("signature does not match \(expectedCountry)'s certified key \(countryKey.keyID): altered or forged on the way")
        }
        guard overlay.tenant == tenant, overlay.country == expectedCountry else {
            throw .badCertificate("the overlay is for \(overlay.tenant)/\(overlay.country), not \(tenant)/\(expectedCountry)")
        }
        return overlay
    }
}

/// An Ed25519 private key that signs governance documents (HQ's release key, or a
/// country's overlay key). Stored as base64 in a file readable by its owner only.
public struct GovernanceSigningKey: Sendable {
    /// Raw key bytes (the Crypto type is not `Sendable`; it is rebuilt to sign).
    let raw: Data
    var key: Curve25519.Signing.PrivateKey { try! Curve25519.Signing.PrivateKey(rawRepresentation: raw) }

    public init() { raw = Curve25519.Signing.PrivateKey().rawRepresentation }

    public init(base64: String) throws(GovernanceRefusal) {
        guard let data = Data(base64Encoded: base64.trimmingCharacters(in: .whitespacesAndNewlines)),
              (try? Curve25519.Signing.PrivateKey(rawRepresentation: data)) != nil else {
            throw .unreadable(kind: "signing key", detail: "not a base64 Ed25519 private key")
        }
        raw = data
    }

    public var base64: String { raw.base64EncodedString() }

    public var publicKey: GovernancePublicKey {
        try! GovernancePublicKey(rawRepresentation: key.publicKey.rawRepresentation)
    }

    /// Signs the JSON of `value` (sorted keys) as a document of `kind`.
    public func sign(_ value: some Encodable, as kind: SignedDocument.Kind, certificate: SignedCertificate? = nil) throws -> SignedDocument {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let bytes = try encoder.encode(value)
        let signature = try key.signature(for: SignedDocument.message(kind: kind, payload: bytes))
        return SignedDocument(kind: kind, payload: bytes.base64EncodedString(), signature: signature.base64EncodedString(),
                              keyID: publicKey.keyID, certificate: certificate)
    }

    /// HQ certifies a country's overlay key.
    public func certify(_ certificate: OverlayCertificate) throws -> SignedCertificate {
        let doc = try sign(certificate, as: .overlayKey)
        return SignedCertificate(payload: doc.payload, signature: doc.signature, keyID: doc.keyID)
    }

    /// Announces `rotation` (whose `previousKey` must be this key): signed by this key,
    /// countersigned by `next`, the key it hands over to.
    public func announce(_ rotation: KeyRotation, handingOverTo next: GovernanceSigningKey) throws -> SignedDocument {
        guard rotation.previousKey == publicKey.base64, rotation.newKey == next.publicKey.base64 else {
            throw GovernanceRefusal.badSignature(kind: SignedDocument.Kind.keyRotation.rawValue,
                                                 detail: "the announcement must name this key as the previous one and the next key as the new one")
        }
        var document = try sign(rotation, as: .keyRotation)
        let bytes = Data(base64Encoded: document.payload)!
        document.countersignature = try next.key.signature(for: SignedDocument.countersignedMessage(payload: bytes)).base64EncodedString()
        return document
    }
}

/// What a country keeps to sign overlays: its private key and HQ's certificate of it.
public struct OverlayKeyFile: Sendable, Codable {
    public var tenant: String
    public var node: String
    public var privateKey: String
    public var certificate: SignedCertificate

    public init(tenant: String, node: String, privateKey: String, certificate: SignedCertificate) {
        self.tenant = tenant
        self.node = node
        self.privateKey = privateKey
        self.certificate = certificate
    }
}

import Crypto
import Foundation
import SwiftASN1
import X509

/// A small local certificate authority for development and demos: one CA, and server
/// certificates it signs for loopback names. Production hubs use certificates from the
/// organisation's own PKI; agents then trust that CA file instead.
public enum DevelopmentPKI {
    /// The files of a generated PKI.
    public struct Files: Sendable, Equatable {
        public var caCertificate: String
        public var caKey: String
        public var serverCertificate: String
        public var serverKey: String
    }

    /// Creates (or reuses) a CA and a server certificate in `directory`. The server
    /// certificate names `localhost`, `127.0.0.1` and `::1`, plus `extraHostnames`.
    public static func ensure(in directory: String, extraHostnames: [String] = []) throws -> Files {
        let fm = FileManager.default
        try fm.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let files = Files(caCertificate: directory + "/ca.pem", caKey: directory + "/ca-key.pem",
                          serverCertificate: directory + "/server.pem", serverKey: directory + "/server-key.pem")
        let caName = try DistinguishedName {
            OrganizationName("Tiersync")
            CommonName("Tiersync Development CA")
        }
        let now = Date()
        let caKey: P256.Signing.PrivateKey
        let caCertificate: Certificate
        if fm.fileExists(atPath: files.caCertificate), fm.fileExists(atPath: files.caKey) {
            caKey = try P256.Signing.PrivateKey(pemRepresentation: String(contentsOfFile: files.caKey, encoding: .utf8))
            caCertificate = try Certificate(pemEncoded: String(contentsOfFile: files.caCertificate, encoding: .utf8))
        } else {
            caKey = P256.Signing.PrivateKey()
            caCertificate = try Certificate(
                version: .v3, serialNumber: .init(), publicKey: .init(caKey.publicKey),
                notValidBefore: now - 3600, notValidAfter: now + 5 * 365 * 86_400,
                issuer: caName, subject: caName, signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                    Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                },
                issuerPrivateKey: .init(caKey))
            try write(caKey.pemRepresentation, to: files.caKey, privateKey: true)
            try write(caCertificate.serializeAsPEM().pemString, to: files.caCertificate, privateKey: false)
        }
        if !fm.fileExists(atPath: files.serverCertificate) || !fm.fileExists(atPath: files.serverKey) {
            let key = P256.Signing.PrivateKey()
            var names: [GeneralName] = [.dnsName("localhost"),
                                        .ipAddress(ASN1OctetString(contentBytes: [127, 0, 0, 1])),
                                        .ipAddress(ASN1OctetString(contentBytes: ArraySlice(Array(repeating: 0, count: 15) + [1])))]
            names += extraHostnames.map { GeneralName.dnsName($0) }
            let certificate = try Certificate(
                version: .v3, serialNumber: .init(), publicKey: .init(key.publicKey),
                notValidBefore: now - 3600, notValidAfter: now + 825 * 86_400,
                issuer: caCertificate.subject,
                subject: try DistinguishedName {
                    OrganizationName("Tiersync")
                    CommonName("localhost")
                },
                signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.notCertificateAuthority)
                    Critical(KeyUsage(digitalSignature: true))
                    try ExtendedKeyUsage([.serverAuth, .clientAuth])
                    SubjectAlternativeNames(names)
                },
                issuerPrivateKey: .init(caKey))
            try write(key.pemRepresentation, to: files.serverKey, privateKey: true)
            try write(certificate.serializeAsPEM().pemString, to: files.serverCertificate, privateKey: false)
        }
        return files
    }

    private static func write(_ text: String, to path: String, privateKey: Bool) throws {
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        if privateKey {
            try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: path)
        }
    }
}

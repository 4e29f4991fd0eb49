import Foundation
import Testing
import TiersyncGovernance
import TiersyncTestSupport

private func release(_ version: Int) throws -> Release {
    let compiled = try GovernanceCompiler.compile(directory: repositoryRoot() + "/fixtures/governance/automaker")
    return Release(tenant: "automaker", version: version, publishedAtMillis: 0, effectiveFromMillis: 0, notes: nil,
                   sourceDigest: compiled.sourceDigest, config: compiled.config, overrides: compiled.overrides)
}

private func rotation(_ sequence: Int, from old: GovernanceSigningKey, to new: GovernanceSigningKey, at millis: UInt64 = 1_000,
                      releasesThrough: Int = 1, rolloutsThrough: Int = 1) throws -> SignedDocument {
    try old.announce(KeyRotation(tenant: "automaker", sequence: sequence, previousKey: old.publicKey.base64, newKey: new.publicKey.base64,
                                 rotatedAtMillis: millis, releasesThrough: releasesThrough, rolloutsThrough: rolloutsThrough),
                     handingOverTo: new)
}

@Suite("Release-key rotation and overlay-key revocation (documents)")
struct KeyringTests {
    let k0 = GovernanceSigningKey(), k1 = GovernanceSigningKey(), k2 = GovernanceSigningKey()

    @Test("a node holding the old key follows announcements forward; one holding the new key accepts the old key's earlier documents backward")
    func forwardAndBackward() throws {
        let r1 = try rotation(1, from: k0, to: k1), r2 = try rotation(2, from: k1, to: k2, releasesThrough: 2)
        let old = try k0.sign(try release(1), as: .release)

        let fromOld = GovernanceKeyring(anchor: k0.publicKey, rotations: [r2, r1], tenant: "automaker")
        #expect(fromOld.current == k2.publicKey)
        #expect(fromOld.accepted.map(\.rotation.sequence) == [1, 2] && fromOld.refusals.isEmpty)
        #expect(try fromOld.openRelease(old).version == 1)

        for anchor in [k1, k2] {
            let fromNew = GovernanceKeyring(anchor: anchor.publicKey, rotations: [r1, r2], tenant: "automaker")
            #expect(fromNew.current == k2.publicKey, "anchor \(anchor.publicKey)")
            #expect(fromNew.refusals.isEmpty)
            #expect(try fromNew.openRelease(old).version == 1, "v1 signed by k0 before the rotation stays valid")
        }
    }

    @Test("a retired key signs nothing after its rotation; an announcement not signed by the key in force is refused")
    func boundsAndForgeries() throws {
        let r1 = try rotation(1, from: k0, to: k1, at: 5_000)
        let ring = GovernanceKeyring(anchor: k0.publicKey, rotations: [r1], tenant: "automaker")
        let late = try k0.sign(try release(2), as: .release)
        let refusal = try #require(throws: GovernanceRefusal.self) { try ring.openRelease(late) }
        #expect(refusal.description.contains("which HQ replaced with \(k1.publicKey)"), "\(refusal)")
        #expect(try ring.openRelease(try k1.sign(try release(2), as: .release)).version == 2)
        // Overlay certificates: one k0 issued before the rotation is valid, one after is not.
        let country = GovernanceSigningKey()
        let overlay = Overlay(tenant: "automaker", country: "de", sequence: 1, createdAtMillis: 0, basedOn: nil, set: [:])
        for (issued, valid) in [(4_000, true), (6_000, false)] as [(UInt64, Bool)] {
            let cert = try k0.certify(OverlayCertificate(tenant: "automaker", node: "de", publicKey: country.publicKey.base64, issuedAtMillis: issued))
            let signed = try country.sign(overlay, as: .overlay, certificate: cert)
            if valid {
                #expect(try ring.openOverlay(signed, tenant: "automaker", expectedCountry: "de") == overlay)
            } else {
                #expect(throws: GovernanceRefusal.self) { try ring.openOverlay(signed, tenant: "automaker", expectedCountry: "de") }
            }
        }

        // Forged: signed by another key, claiming to hand k1 over to it.
        let forger = GovernanceSigningKey()
        let claim = KeyRotation(tenant: "automaker", sequence: 2, previousKey: k1.publicKey.base64, newKey: forger.publicKey.base64,
                                rotatedAtMillis: 9_000, releasesThrough: 9, rolloutsThrough: 9)
        var forged = try forger.sign(claim, as: .keyRotation)
        forged.countersignature = try forger.announce(KeyRotation(tenant: "automaker", sequence: 2, previousKey: forger.publicKey.base64,
                                                                  newKey: k2.publicKey.base64, rotatedAtMillis: 0, releasesThrough: 0,
                                                                  rolloutsThrough: 0), handingOverTo: k2).countersignature
        let withForgery = GovernanceKeyring(anchor: k0.publicKey, rotations: [r1, forged], tenant: "automaker")
        #expect(withForgery.current == k1.publicKey, "the forged announcement is not followed")
        #expect(withForgery.refusals.count == 1)
        #expect(withForgery.refusals.first?.hasPrefix("key-rotation 2 refused: ") == true
                && withForgery.refusals.first?.contains("signature does not match \(k1.publicKey)") == true, "\(withForgery.refusals)")
        // Without the new key's countersignature, a genuine signature is not enough either.
        var uncountersigned = try rotation(2, from: k1, to: k2)
        uncountersigned.countersignature = nil
        let ring2 = GovernanceKeyring(anchor: k1.publicKey, rotations: [uncountersigned], tenant: "automaker")
        #expect(ring2.current == k1.publicKey && ring2.refusals.first?.contains("not countersigned") == true, "\(ring2.refusals)")
        // A rotation signed for one kind cannot pass as another, nor the countersignature as the signature.
        var asRelease = r1
        asRelease.kind = .release
        #expect(GovernanceKeyring(anchor: k0.publicKey, rotations: [asRelease], tenant: "automaker").current == k0.publicKey)
        var swapped = r1
        swapped.signature = r1.countersignature!
        #expect(GovernanceKeyring(anchor: k0.publicKey, rotations: [swapped], tenant: "automaker").current == k0.publicKey)
    }

    @Test("an overlay-key revocation covers the certificates issued up to it; a key certified later is valid")
    func overlayKeyRevocation() throws {
        let ring = GovernanceKeyring(key: k0.publicKey)
        let overlay = Overlay(tenant: "automaker", country: "de", sequence: 1, createdAtMillis: 0, basedOn: nil, set: [:])
        let revoked = GovernanceSigningKey(), renewed = GovernanceSigningKey()
        let revocationDoc = try k0.sign(OverlayKeyRevocation(tenant: "automaker", node: "de", sequence: 1, revokedAtMillis: 2_000, reason: "lost"),
                                        as: .overlayKeyRevocation)
        let revocation = try ring.openRevocation(revocationDoc)
        let old = try revoked.sign(overlay, as: .overlay, certificate: try k0.certify(OverlayCertificate(
            tenant: "automaker", node: "de", publicKey: revoked.publicKey.base64, issuedAtMillis: 1_000)))
        let new = try renewed.sign(overlay, as: .overlay, certificate: try k0.certify(OverlayCertificate(
            tenant: "automaker", node: "de", publicKey: renewed.publicKey.base64, issuedAtMillis: 3_000)))
        let refusal = try #require(throws: GovernanceRefusal.self) {
            try ring.openOverlay(old, tenant: "automaker", expectedCountry: "de", revocation: revocation)
        }
        #expect(refusal.description.contains("HQ revoked de's overlay key \(revoked.publicKey.keyID)") && refusal.description.contains(": lost"), "\(refusal)")
        #expect(try ring.openOverlay(new, tenant: "automaker", expectedCountry: "de", revocation: revocation) == overlay)
        // Through the verifier: the overlay is refused and reported, the release applies alone.
        let v = VerifiedGovernance.verify(rollouts: [try k0.sign(Rollout(tenant: "automaker", sequence: 1, issuedAtMillis: 0,
                                                                         stages: [.init(release: 1, targets: nil)], reason: ""), as: .rollout)],
                                          releases: [try k0.sign(try release(1), as: .release)], overlays: [old],
                                          revocations: [revocationDoc], keyring: ring, tenant: "automaker")
        let decision = GovernanceResolver.decide(node: "de-1", parent: "de", verified: v, nowMillis: 10_000)
        #expect(decision.state == .applied && decision.overlay == nil)
        #expect(decision.problems.contains { $0.hasPrefix("overlay of de: ") && $0.contains("HQ revoked") }, "\(decision.problems)")
        // A revocation signed by another key is refused.
        let forged = try GovernanceSigningKey().sign(OverlayKeyRevocation(tenant: "automaker", node: "de", sequence: 2, revokedAtMillis: 9_000),
                                                     as: .overlayKeyRevocation)
        #expect(throws: GovernanceRefusal.self) { try ring.openRevocation(forged) }
    }

    @Test("revocations add up: a retired key's revocation numbered Int.max that revokes almost nothing does not undo the one in force")
    func revocationsAddUp() throws {
        let r1 = try rotation(1, from: k0, to: k1, at: 5_000)
        let ring = GovernanceKeyring(anchor: k0.publicKey, rotations: [r1], tenant: "automaker")
        let real = try k1.sign(OverlayKeyRevocation(tenant: "automaker", node: "de", sequence: 1, revokedAtMillis: 6_000, reason: "lost"), as: .overlayKeyRevocation)
        // Signed by the retired k0 (its revoked-at is before the rotation, so it verifies).
        let undo = try k0.sign(OverlayKeyRevocation(tenant: "automaker", node: "de", sequence: Int.max, revokedAtMillis: 1), as: .overlayKeyRevocation)
        #expect(try ring.openRevocation(undo).sequence == Int.max, "a document the retired key may still sign")
        let revokedKey = GovernanceSigningKey()
        let overlay = Overlay(tenant: "automaker", country: "de", sequence: 1, createdAtMillis: 0, basedOn: nil, set: [:])
        let old = try revokedKey.sign(overlay, as: .overlay, certificate: try k1.certify(OverlayCertificate(
            tenant: "automaker", node: "de", publicKey: revokedKey.publicKey.base64, issuedAtMillis: 5_500)))
        for order in [[real, undo], [undo, real]] {
            let v = VerifiedGovernance.verify(rollouts: [try k1.sign(Rollout(tenant: "automaker", sequence: 1, issuedAtMillis: 0,
                                                                             stages: [.init(release: 1, targets: nil)], reason: ""), as: .rollout)],
                                              releases: [try k1.sign(try release(1), as: .release)], overlays: [old],
                                              revocations: order, keyring: ring, tenant: "automaker")
            #expect(v.revocations["de"]?.revocation.revokedAtMillis == 6_000)
            let decision = GovernanceResolver.decide(node: "de-1", parent: "de", verified: v, nowMillis: 10_000)
            #expect(decision.overlay == nil && decision.problems.contains { $0.contains("HQ revoked") }, "\(decision.problems)")
        }
    }

    @Test("bundles from hubs without rotations decode; the new fields round-trip")
    func bundleCompatibility() throws {
        let old = #"{"token":"t","releases":[],"overlays":[]}"#
        let bundle = try JSONDecoder().decode(GovernanceBundle.self, from: Data(old.utf8))
        #expect(bundle.keyRotations.isEmpty && bundle.overlayKeyRevocations.isEmpty)
        let r1 = try rotation(1, from: k0, to: k1)
        let full = GovernanceBundle(token: "t", rollout: nil, releases: [], overlays: [], keyRotations: [r1])
        #expect(try JSONDecoder().decode(GovernanceBundle.self, from: try JSONEncoder().encode(full)) == full)
        // Envelopes without a countersignature encode as before.
        #expect(!(try k0.sign(try release(1), as: .release)).json.contains("countersignature"))
    }
}

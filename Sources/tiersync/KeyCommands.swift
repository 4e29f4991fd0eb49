import ArgumentParser
import Foundation
import TiersyncCore
import TiersyncGovernance
import TiersyncServer
import TiersyncStore

/// `tiersync admin rotate-release-key|revoke-overlay-key`: HQ's governance keys over time.
extension Admin {
    struct RotateReleaseKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Replace the tenant's release key with a new one; nodes switch over with no gap.",
            discussion: """
            Creates a new Ed25519 release key and announces it in a key-rotation document signed by \
            the current key (and countersigned by the new one). Nodes receive the announcement with \
            their governance, check it with the key they hold and adopt the new key; a country \
            relays it to its dealers. What the old key signed before stays valid; releases, rollouts \
            and certificates from now on are signed by the new key, and nodes enrolling from now on \
            receive it. The new private key replaces the old one at --key (the old one is kept \
            beside it as FILE.<key id>.retired), or is written to --out.
            """)
        @OptionGroup var hub: HubData
        @Option(help: "Tenant identifier.") var tenant: String
        @Option(help: "The current release key (default with --data: DATA/keys/TENANT.release.key; required with --postgres).") var key: String?
        @Option(help: "Where to write the new private key (default: in place of --key).") var out: String?

        func run() async throws {
            try await hub.withHQ(tenant: tenant) { opened, tenantID in
                let current = try hub.releaseKeyPath(key, tenant: tenantID)
                let target = out ?? current
                if target != current, FileManager.default.fileExists(atPath: target) {
                    throw CLIError("\(target) exists; give --out a new file (or leave it out to replace \(current))")
                }
                let publisher = try await Admin.publisher(opened, options: hub, tenant: tenantID, key: current)
                let next = GovernanceSigningKey()
                // The new key is on disk before anything announces it.
                let staged = target + ".new"
                try Admin.writeSecret(next.base64 + "\n", to: staged)
                let rotation = try await publisher.rotateKey(to: next)
                try await opened.catalog.setReleaseKey(next.publicKey.base64, for: tenantID)
                try await Admin.User.audit(opened, tenantID, "release_key.rotate", tenantID.rawValue, "\(publisher.key.publicKey) → \(next.publicKey)")
                if target == current {
                    let retired = "\(current).\(publisher.key.publicKey.keyID).retired"
                    try FileManager.default.moveItem(atPath: current, toPath: retired)
                    print("kept the retired key as \(retired)")
                }
                try FileManager.default.moveItem(atPath: staged, toPath: target)
                print("wrote \(target)")
                print("key-rotation \(rotation.sequence) of \(tenant): \(publisher.key.publicKey) → \(next.publicKey) (public: \(next.publicKey.base64))")
                print("announced to every node, signed by \(publisher.key.publicKey); releases up to v\(rotation.releasesThrough) and rollouts up to \(rotation.rolloutsThrough) stay valid under it")
            }
        }
    }

    struct RevokeOverlayKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke the overlay keys HQ certified for a country so far.",
            discussion: """
            Signs and publishes a revocation of every overlay-key certificate issued to the country \
            until now (`admin overlay-key`). Nodes receive it with their governance: dealers and \
            the country itself refuse overlays signed with a revoked key and apply the release \
            alone, reporting why in the rollout status. Issue the country a new key afterwards \
            with `admin overlay-key`; overlays it signs are accepted again.
            """)
        @OptionGroup var hub: HubData
        @Option(help: "Tenant identifier.") var tenant: String
        @Option(help: "The country node.") var node: String
        @Option(help: "Why (shown with every refusal).") var reason: String?
        @Option(help: "The release key (default with --data: DATA/keys/TENANT.release.key; required with --postgres).") var key: String?

        func validate() throws {
            if let reason { try validateText(reason, option: "--reason", most: 500, lineBreaks: true) }
        }

        func run() async throws {
            let country = try NodeID(validating: node)
            let revocation = try await hub.withHQ(tenant: tenant) { opened, tenantID in
                let publisher = try await Admin.publisher(opened, options: hub, tenant: tenantID, key: key)
                let revocation = try await publisher.revokeOverlayKeys(of: country, reason: reason)
                try await Admin.User.audit(opened, tenantID, "overlay_key.revoke", country.rawValue, reason ?? "")
                return revocation
            }
            print("revoked the overlay keys of \(tenant)/\(node) certified until \(formatMillis(revocation.revokedAtMillis)) (revocation \(revocation.sequence)); nodes refuse overlays signed with them within seconds")
            // The URL is not repeated: it may hold a password.
            let hubOption = hub.data.map { "--data \($0)" } ?? "--postgres URL"
            print("issue a new one with `tiersync admin overlay-key \(hubOption) --tenant \(tenant) --node \(node) --out FILE`")
        }
    }
}

import ArgumentParser
import Foundation
import TiersyncCore
import TiersyncStore

/// `tiersync admin revoke|decommission|tenant-settings`: who may sync, decided at HQ.
extension Admin {
    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke a node's credentials and unused enrollment tokens.",
            discussion: """
            HQ refuses the node at its next request (401); a country refuses its dealer within a \
            few seconds (its copy of HQ's directory is refreshed every 2 s), and keeps refusing it \
            while HQ is unreachable. A revoked country is refused by HQ and stops serving its \
            dealers. The node keeps its place in the tree and its data; a new enrollment token \
            (`admin enroll-token`) lets it enroll again. To retire it for good, use `decommission`.
            """)
        @OptionGroup var hub: HubData
        @Option(help: "Tenant identifier.") var tenant: String
        @Option(help: "The node whose access ends.") var node: String

        func run() async throws {
            let nodeID = try NodeID(validating: node)
            let revocation = try await hub.withHQ(tenant: tenant) { opened, tenantID in
                let revocation = try await opened.catalog.revoke(node: nodeID, of: tenantID)
                try await Admin.User.audit(opened, tenantID, "node.revoke", nodeID.rawValue,
                                           "\(revocation.credentials) credential(s), \(revocation.tokens) enrollment token(s)")
                return revocation
            }
            print("revoked \(node) of \(tenant): \(revocation.credentials) credential(s), \(revocation.tokens) unused enrollment token(s)")
        }
    }

    struct Decommission: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Retire a node: revoke it and never let it enroll again.",
            discussion: """
            Revokes the node's credentials and unused enrollment tokens (as `revoke`) and marks it \
            decommissioned: no token issued before or after lets it enroll again, and `admin nodes` \
            lists it as decommissioned. Its records and its place in the tree stay. A node with \
            nodes below it is refused: move them (`admin move-node`) or decommission them first.
            """)
        @OptionGroup var hub: HubData
        @Option(help: "Tenant identifier.") var tenant: String
        @Option(help: "The node to retire.") var node: String

        func run() async throws {
            let nodeID = try NodeID(validating: node)
            let revocation = try await hub.withHQ(tenant: tenant) { opened, tenantID in
                let revocation = try await opened.catalog.decommission(node: nodeID, of: tenantID)
                try await Admin.User.audit(opened, tenantID, "node.decommission", nodeID.rawValue,
                                           "\(revocation.credentials) credential(s), \(revocation.tokens) enrollment token(s)")
                return revocation
            }
            print("decommissioned \(node) of \(tenant): \(revocation.credentials) credential(s) revoked, \(revocation.tokens) unused enrollment token(s) deleted; its data stays")
        }
    }

    struct TenantSettingsCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "tenant-settings",
            abstract: "Show a tenant's settings, or change whether its dealers may sync with HQ directly.",
            discussion: """
            HQ serves the nodes directly below the tenant's root (countries in a three-level tenant, \
            agents in a two-level one). A dealer syncs through its country: with its credential, \
            HQ answers 403 wrong_parent. `--allow-direct-sync true` lets dealers sync with HQ \
            directly as well (hub processes see the change at their next request). Without \
            options, prints the settings and changes nothing.
            """)
        @OptionGroup var hub: HubData
        @Option(help: "Tenant identifier.") var tenant: String
        @Option(help: "true: dealers may sync with HQ directly; false: only through their country.") var allowDirectSync: Bool?
        @Option(help: "true: a release waits until a second administrator with the reviewer role approves it (four-eyes); false: published at once.")
        var fourEyes: Bool?

        func run() async throws {
            let (allowDirectSync, fourEyes) = (self.allowDirectSync, self.fourEyes)
            let (settings, approval) = try await hub.withHQ(tenant: tenant) { opened, tenantID in
                if let allowDirectSync { try await opened.catalog.setAllowDirectSync(allowDirectSync, for: tenantID) }
                let approvals = opened.catalog as? any ReleaseApprovalStore
                if let fourEyes {
                    guard let approvals else { throw CLIError("this catalog keeps no release approvals") }
                    try await approvals.setRequiresReleaseApproval(fourEyes, for: tenantID)
                    try await Admin.User.audit(opened, tenantID, "tenant.settings", "four-eyes", fourEyes ? "on" : "off")
                }
                return (try await opened.catalog.settings(of: tenantID), try await approvals?.requiresReleaseApproval(of: tenantID) ?? false)
            }
            guard let settings else { throw CLIError("no tenant '\(tenant)'") }
            print("tenant \(tenant): \(settings.levels) levels, root \(settings.root)")
            print("  direct sync with HQ below the root's children: \(settings.allowDirectSync ? "allowed" : "not allowed (dealers sync through their country)")")
            print("  release key: \(settings.releaseKey ?? "none")")
            print("  four-eyes releases: \(approval ? "on (a reviewer other than the author approves each release, in the console or the admin API)" : "off")")
        }
    }
}

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
            HQ refuses the node at its next request (401); a country refuses its dealer within a
            few seconds (its copy of HQ's directory is refreshed every 2 s), and keeps refusing it
            while HQ is unreachable. A revoked country is refused by HQ and stops serving its
            dealers. The node keeps its place in the tree and its data; a new enrollment token
            (`admin enroll-token`) lets it enroll again. To retire it for good, use `decommission`.
            """)
        @OptionGroup var hub: HubData
        @Option(help: "Tenant identifier.") var tenant: String
        @Option(help: "The node whose access ends.") var node: String

        func run() async throws {
            let (catalog, tenantID) = try await Admin.hqCatalog(hub, tenant: tenant)
            let revocation = try catalog.revoke(node: try NodeID(validating: node), of: tenantID)
            print("revoked \(node) of \(tenant): \(revocation.credentials) credential(s), \(revocation.tokens) unused enrollment token(s)")
        }
    }

    struct Decommission: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Retire a node: revoke it and never let it enroll again.",
            discussion: """
            Revokes the node's credentials and unused enrollment tokens (as `revoke`) and marks it
            decommissioned: no token issued before or after lets it enroll again, and `admin nodes`
            lists it as decommissioned. Its records and its place in the tree stay. A node with
            nodes below it is refused: move them (`admin move-node`) or decommission them first.
            """)
        @OptionGroup var hub: HubData
        @Option(help: "Tenant identifier.") var tenant: String
        @Option(help: "The node to retire.") var node: String

        func run() async throws {
            let (catalog, tenantID) = try await Admin.hqCatalog(hub, tenant: tenant)
            let revocation = try catalog.decommission(node: try NodeID(validating: node), of: tenantID)
            print("decommissioned \(node) of \(tenant): \(revocation.credentials) credential(s) revoked, \(revocation.tokens) unused enrollment token(s) deleted; its data stays")
        }
    }

    struct TenantSettingsCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "tenant-settings",
            abstract: "Show a tenant's settings, or change whether its dealers may sync with HQ directly.",
            discussion: """
            HQ serves the nodes directly below the tenant's root (countries in a three-level tenant,
            agents in a two-level one). A dealer syncs through its country: with its credential,
            HQ answers 403 wrong_parent. `--allow-direct-sync true` lets dealers sync with HQ
            directly as well (hub processes see the change at their next request). Without
            options, prints the settings and changes nothing.
            """)
        @OptionGroup var hub: HubData
        @Option(help: "Tenant identifier.") var tenant: String
        @Option(help: "true: dealers may sync with HQ directly; false: only through their country.") var allowDirectSync: Bool?

        func run() async throws {
            let (catalog, tenantID) = try await Admin.hqCatalog(hub, tenant: tenant)
            if let allowDirectSync { try catalog.setAllowDirectSync(allowDirectSync, for: tenantID) }
            guard let settings = try catalog.settings(of: tenantID) else { throw CLIError("no tenant '\(tenant)'") }
            print("tenant \(tenant): \(settings.levels) levels, root \(settings.root)")
            print("  direct sync with HQ below the root's children: \(settings.allowDirectSync ? "allowed" : "not allowed (dealers sync through their country)")")
            print("  release key: \(settings.releaseKey ?? "none")")
        }
    }

    /// The catalog of HQ's `--data` directory, which must exist and hold `tenant` (nothing is
    /// created). A country's `--data` is refused: it mirrors HQ's directory, and a change
    /// there would be overwritten within seconds.
    static func hqCatalog(_ hub: HubData, tenant: String) async throws -> (HubCatalog, TenantID) {
        guard FileManager.default.fileExists(atPath: hub.data + "/hub.sqlite") else {
            throw CLIError("\(hub.data) holds no hub data (no hub.sqlite): give the --data directory of `tiersync hub serve`")
        }
        let catalog = try HubCatalog(directory: hub.data)
        let tenantID = try TenantID(validating: tenant)
        guard let root = try catalog.root(of: tenantID) else {
            let known = try catalog.tenants().map(\.tenant.rawValue).sorted()
            throw CLIError("no tenant '\(tenant)' in \(hub.data) (\(known.isEmpty ? "it has no tenants" : "tenants there: " + known.joined(separator: ", ")))")
        }
        guard let rootNode = try await catalog.node(root, of: tenantID), rootNode.parent == nil else {
            throw CLIError("\(hub.data) is the --data directory of country node '\(root)', a mirror of HQ's directory: run this at HQ, on the hub's --data directory")
        }
        return (catalog, tenantID)
    }
}

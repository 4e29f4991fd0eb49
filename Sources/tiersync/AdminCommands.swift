import ArgumentParser
import Foundation
import TiersyncCore
import TiersyncPKI
import TiersyncStore

struct Admin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Administer a hub's tenants and nodes (run on the hub machine).",
        subcommands: [CreateTenant.self, EnrollToken.self, MoveNode.self, Nodes.self, Quarantine.self, GenCerts.self,
                      Validate.self, ReleaseKey.self, Publish.self, Rollout.self, Rollback.self, OverlayKey.self, RolloutStatus.self,
                      Revoke.self, Decommission.self, User.self, TenantSettingsCommand.self, RotateReleaseKey.self, RevokeOverlayKey.self, MigrateTenant.self, ErasuresCommand.self])

    /// Where the hub keeps its data: `--data DIR` (SQLite) or `--postgres URL` (PostgreSQL),
    /// exactly one. Commands open it with ``withHub(_:)`` and its siblings (AdminData.swift),
    /// which give them the catalog and the tenants' stores behind the storage seam, so one
    /// command body serves both engines.
    struct HubData: ParsableArguments {
        @Option(help: "The hub's data directory (`tiersync hub serve --data`: hub.sqlite and one SQLite database per tenant).")
        var data: String?
        @Option(help: "postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE: the hub's PostgreSQL database (`tiersync hub serve --postgres`), instead of --data.")
        var postgres: String?

        func validate() throws {
            guard (data == nil) != (postgres == nil) else {
                throw ValidationError("give exactly one of --data DIR (a hub on SQLite) and --postgres URL (a hub on PostgreSQL)")
            }
        }

        /// The engine and place the options name (``validate()`` has checked there is one).
        var location: HubLocation {
            if let postgres { return .postgres(url: postgres) }
            return .sqlite(directory: data ?? "")
        }
    }

    struct CreateTenant: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a tenant with its root (HQ) node.")
        @OptionGroup var hub: HubData
        @Option(help: "Tenant identifier.") var tenant: String
        @Option(help: "Identifier of the tenant's root (HQ) node.") var root = "hq"
        @Option(help: "Levels of the tenant's tree: 2 (HQ → agents) or 3 (HQ → countries → dealers).") var levels = 2
        @Flag(help: "Let dealers of a three-level tenant sync with HQ directly, bypassing their country (off: HQ answers them 403 wrong_parent).")
        var allowDirectSync = false

        func run() async throws {
            let tenantID = try TenantID(validating: tenant)
            let rootID = try NodeID(validating: root)
            let (levels, allowDirectSync) = (self.levels, self.allowDirectSync)
            let (created, held) = try await hub.withHub { catalog, _ in
                let created = try await catalog.createTenant(tenantID, root: rootID, levels: levels, allowDirectSync: allowDirectSync)
                return (created, try await catalog.settings(of: tenantID))
            }
            if created {
                print("created tenant \(tenant) with \(levels) levels (root node \(root))\(allowDirectSync ? ", direct sync allowed" : "")")
                return
            }
            // Run again as asked: nothing to do. Asked for another shape: say so, and change nothing.
            guard let held, held.root != rootID || held.levels != levels || held.allowDirectSync != allowDirectSync else {
                print("tenant \(tenant) already exists")
                return
            }
            throw CLIError("tenant \(tenant) already exists with \(held.levels) levels, root node \(held.root)\(held.allowDirectSync ? ", direct sync allowed" : ""): nothing changed (`tiersync admin tenant-settings` changes what can change)")
        }
    }

    struct EnrollToken: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Issue a one-time, expiring enrollment token for a node.",
            discussion: """
            On a hub with no tenant yet, creates the tenant (with 2 levels); where other tenants exist, \
            an unknown --tenant is refused (most likely a typo: create it with `admin create-tenant`). \
            The node's role follows from \
            its level: the deepest level holds dealers, the one between countries. The token is printed \
            once; the hub keeps only its digest.
            """)
        @OptionGroup var hub: HubData
        @Option(help: "Tenant identifier.") var tenant: String
        @Option(help: "Identifier of the node that will enroll.") var node: String
        @Option(help: "Parent node (default: the tenant's root).") var parent: String?
        @Option(help: "Expected role (dealer or country); refused when the node's level implies the other.") var role: String?
        @Option(help: "Seconds until the token expires.") var ttl: UInt64 = 86_400

        func run() async throws {
            let tenantID = try TenantID(validating: tenant)
            if let role, !["dealer", "country"].contains(role) { throw CLIError("--role must be dealer or country") }
            let nodeID = try NodeID(validating: node)
            let parentID = try parent.map { try NodeID(validating: $0) }
            let (role, ttl) = (self.role, self.ttl)
            let token = try await hub.withHub { catalog, _ in
                // A mistyped --tenant beside real ones made a stray two-level tenant, and the next
                // step (a dealer under a country) failed on its levels (helper 102).
                let known = try await catalog.tenants().map(\.tenant.rawValue).sorted()
                if !known.isEmpty, !known.contains(tenantID.rawValue) {
                    throw CLIError("no tenant '\(tenant)' here (tenants: \(known.prefix(20).joined(separator: ", "))): create it first with `tiersync admin create-tenant --tenant \(tenant) --levels 2|3`")
                }
                if try await catalog.createTenant(tenantID) {
                    // Said plainly: a mistyped --tenant otherwise makes a stray tenant unnoticed.
                    FileHandle.standardError.write(Data("""
                        note: there was no tenant '\(tenant)': created it with 2 levels and root node 'hq' \
                        (for countries and dealers, create it first with `tiersync admin create-tenant --levels 3`)

                        """.utf8))
                }
                let token = try await catalog.issueEnrollmentToken(tenant: tenantID, node: nodeID, parent: parentID, role: role, ttlSeconds: ttl)
                try await Admin.User.audit(catalog, tenantID, "enrollment_token.issue", nodeID.rawValue,
                                           "parent \(parentID?.rawValue ?? "the root"), expires in \(ttl) s")
                return token
            }
            print(token)
        }
    }

    struct MoveNode: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Move a node (with its subtree) under another parent.",
            discussion: """
            Then point the node's agent at its new parent (`tiersync agent run --parent <url>`): it \
            re-syncs from the start with it, and nothing is lost or applied twice. The new parent \
            fetches the records routed to the node from HQ.
            """)
        @OptionGroup var hub: HubData
        @Option(help: "Tenant identifier.") var tenant: String
        @Option(help: "The node to move.") var node: String
        @Option(help: "Its new parent.") var parent: String

        func run() async throws {
            let (nodeID, tenantID, parentID) = (try NodeID(validating: node), try TenantID(validating: tenant), try NodeID(validating: parent))
            try await hub.withHub { catalog, _ in
                try await catalog.moveNode(nodeID, of: tenantID, to: parentID)
                try await Admin.User.audit(catalog, tenantID, "node.move", nodeID.rawValue, "under \(parentID)")
            }
            print("moved \(node) under \(parent)")
        }
    }

    struct Nodes: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a tenant's nodes and when each was last seen.")
        @OptionGroup var hub: HubData
        @Option(help: "Tenant identifier.") var tenant: String

        func run() async throws {
            let rows = try await hub.location.withView(of: tenant, records: false) { view in
                let (catalog, tenantID) = (view.catalog, view.tenant)
                let tree = try await catalog.tree(of: tenantID)
                var rows = [["node", "role", "path", "last seen"]]
                let nodes = try await catalog.nodes(of: tenantID)
                let listed = Set(nodes.map(\.node))
                for n in nodes {
                    // The root is the hub itself (at a country's directory, the country, whose parent
                    // it does not list): it never syncs with a parent, so "never" would read as a fault.
                    let isRoot = n.parent.map { !listed.contains($0) } ?? true
                    let seen = n.lastSeenMillis.map(formatMillis) ?? (isRoot ? "- (the hub)" : "never")
                    rows.append([n.node.rawValue, n.role, tree.path(of: n.node), seen])
                }
                return rows
            }
            printTable(rows)
        }
    }

    struct Quarantine: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show changes a hub or country node refused for a tenant, with reasons.",
            discussion: """
            Give the hub's --data directory (or its --postgres database), or a country node's \
            --data: the country's refusals (of its dealers' changes) are in its own store, which \
            `tiersync node serve` notes in its --data directory. Or give any node's store with --db. \
            Reads only; creates nothing (on PostgreSQL, the hub's schemas are made if missing, \
            as `hub serve` would). With --db, --discard ID removes one entry (a dealer's own \
            write set aside when HQ refused it, once dealt with); at a hub, discard in the \
            console or with POST /admin/v1/quarantine/{id}/discard, which the audit log records.
            """)
        @Option(help: "The data directory of `tiersync hub serve` or of `tiersync node serve`.") var data: String?
        @Option(help: "postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE: the database of `tiersync hub serve --postgres` (instead of --data).")
        var postgres: String?
        @Option(help: "A node's SQLite file (instead of --data), e.g. a country's --db.") var db: String?
        @Option(help: "Tenant identifier (required with --data and --postgres).") var tenant: String?
        @Option(help: "Most entries to show.") var limit = 100
        @Flag(help: "Also print each refused change as received.") var verbose = false
        @Option(help: "With --db: remove the entry with this id (as listed) from that store's quarantine.") var discard: Int64?

        func validate() throws {
            try validateLimit(limit)
            guard [data, postgres, db].compactMap({ $0 }).count == 1 else {
                throw ValidationError("give exactly one of --data DIR --tenant T, --postgres URL --tenant T, or --db FILE")
            }
            if data != nil, tenant == nil { throw ValidationError("--data needs --tenant") }
            if postgres != nil, tenant == nil { throw ValidationError("--postgres needs --tenant") }
            if discard != nil, db == nil {
                throw ValidationError("--discard needs --db; at a hub, discard in the console or with POST /admin/v1/quarantine/{id}/discard (audited)")
            }
        }

        func run() async throws {
            let entries: [QuarantinedChange]
            if let db {
                let opened = try openEnrolledStore(db)
                if let tenant, let identity = try opened.identity(), identity.tenant.rawValue != tenant {
                    throw CLIError("\(db) is a store of tenant '\(identity.tenant)', not '\(tenant)'")
                }
                if let discard {
                    guard let gone = try opened.discardQuarantined(discard) else { throw CLIError("\(db) holds no quarantined change with id \(discard)") }
                    print("discarded id \(gone.id): \(gone.origin)#\(gone.originSeq) from \(gone.receivedFrom)  [\(gone.code)] \(gone.reason)")
                    return
                }
                entries = try opened.quarantined(limit: limit)
            } else {
                let location: HubLocation = if let postgres { .postgres(url: postgres) } else { .sqlite(directory: data!) }
                let limit = self.limit
                entries = try await location.withView(of: tenant!, records: true,
                                                      hint: ": run `tiersync admin quarantine --db <that file>`") { view in
                    if case .country(let node) = view.place { print("refused by country node \(node) (its store: \(view.storePath ?? "?")):") }
                    // A hub that has not opened the tenant's database yet has refused nothing.
                    guard let store = view.store else { return [] }
                    return try await store.quarantinedChanges(limit: limit)
                }
            }
            if entries.isEmpty { print("no quarantined changes"); return }
            for e in entries {
                print("\(formatMillis(e.receivedAtMillis))  id \(e.id)  \(e.origin)#\(e.originSeq) from \(e.receivedFrom)  [\(e.code)] \(e.reason)")
                if verbose { print("    \(e.change)") }
            }
        }
    }

    struct GenCerts: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a development CA and a loopback server certificate.")
        @Option(help: "Output directory.") var out: String
        @Option(help: "Extra DNS names for the server certificate.") var hostname: [String] = []

        func run() throws {
            let files = try DevelopmentPKI.ensure(in: out, extraHostnames: hostname)
            print("CA certificate:     \(files.caCertificate)")
            print("server certificate: \(files.serverCertificate)")
            print("server key:         \(files.serverKey)")
        }
    }
}

import ArgumentParser
import Foundation
import TiersyncCore
import TiersyncServer
import TiersyncStore

/// `tiersync admin user add|list|disable|enable|set-role|set-password|token|tokens|revoke-token`: the hub's
/// administrators, on the hub machine (either engine). Every change is in the audit log, by
/// `cli:<account>`.
extension Admin {
    struct User: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Manage the administrators who use the console and the admin API.",
            discussion: """
            An administrator belongs to a tenant and administers the subtree of one node: the \
            tenant's root (an HQ admin, the default) or a country (--scope de: a country admin, \
            who sees and acts on that country and its dealers only). Roles: viewer (reads), \
            operator (resolves, replays, revokes, issues tokens, manages users when tenant-wide), \
            publisher (governance releases), reviewer (approves others' releases).
            """,
            subcommands: [Add.self, List.self, Disable.self, Enable.self, SetRole.self, SetPassword.self, Token.self, Tokens.self, RevokeToken.self, Audit.self])

        struct Target: ParsableArguments {
            @OptionGroup var hub: HubData
            @Option(help: "Tenant identifier.") var tenant: String
        }

        /// `cli:` and the operating-system user who ran the command: `$USER` or `$LOGNAME`, else
        /// the account of the process's user id (a service or container sets neither), else its
        /// number.
        static func actor() -> String {
            let environment = ProcessInfo.processInfo.environment
            if let name = environment["USER"] ?? environment["LOGNAME"], !name.isEmpty { return "cli:" + name }
            if let entry = getpwuid(getuid()), let name = entry.pointee.pw_name { return "cli:" + String(cString: name) }
            return "cli:uid-\(getuid())"
        }

        static func accounts(_ opened: OpenedHub) throws -> any AdminAccountStore {
            guard let accounts = opened.catalog as? any AdminAccountStore else { throw CLIError("this catalog keeps no administrators") }
            return accounts
        }

        static func audit(_ opened: OpenedHub, _ tenant: TenantID, _ action: String, _ target: String, _ detail: String) async throws {
            try await audit(opened.catalog, tenant, action, target, detail)
        }

        /// Records an administrative act done from the command line, as the API records its
        /// own (the same action names): README, "every administrative act is in the audit log".
        static func audit(_ catalog: any HubCatalogStore, _ tenant: TenantID, _ action: String, _ target: String, _ detail: String) async throws {
            // A catalog without administrators (a country's mirror) keeps no audit log either.
            guard let accounts = catalog as? any AdminAccountStore else { return }
            // Recorded after the act: a failure here must not report the act as failed.
            do {
                let root = try await catalog.root(of: tenant) ?? "hq"
                try await accounts.appendAudit(AuditEntry(tenant: tenant, actor: actor(), action: action, target: target, detail: detail,
                                                          address: "cli", scope: root, atMillis: WallClock.nowMillis()))
            } catch {
                FileHandle.standardError.write(Data("warning: \(action) \(target) was done, but not recorded in the audit log: \(error)\n".utf8))
            }
        }

        /// Every role of `--role` given once or more, each comma-separated (a repeated
        /// option kept only its last value, silently).
        static func roles(_ options: [String]) throws -> Set<AdminRole> {
            let joined = options.joined(separator: ",")
            guard let roles = AdminRole.parse(joined) else { throw ValidationError("unknown role in '\(joined)': use viewer, operator, publisher, reviewer") }
            return roles
        }

        /// The password from a file (first line) or standard input (first line).
        static func readPassword(file: String?) throws -> String {
            let text: String
            if let file {
                text = try readOptionFile(file, what: "password file")
            } else {
                text = readLine(strippingNewline: true) ?? ""
            }
            let password = String(text.split(separator: "\n", omittingEmptySubsequences: false).first ?? "")
            guard PasswordHash.isAcceptable(password) else { throw CLIError(PasswordHash.rule) }
            return password
        }

        struct Add: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Add an administrator (the password is read from --password-file or standard input).")
            @OptionGroup var target: Target
            @Option(help: "Login name (letters, digits, '.', '_', '-', '@').") var name: String
            @Option(help: "Roles, comma-separated or the option repeated: viewer, operator, publisher, reviewer (default: viewer).") var role: [String] = []
            @Option(help: "The node whose subtree they administer (default: the tenant's root, an HQ admin).") var scope: String?
            @Option(help: "A file whose first line is the password (default: standard input).") var passwordFile: String?

            func run() async throws {
                guard AdminUser.isValidName(name) else { throw ValidationError("'\(name)' is not a valid login name") }
                let roles = try User.roles(role.isEmpty ? ["viewer"] : role)
                let password = try User.readPassword(file: passwordFile)
                let hash = try await PasswordHash.makeAsync(password)
                let (name, scope) = (self.name, self.scope)
                let user = try await target.hub.withHQ(tenant: target.tenant) { opened, tenant in
                    let root = try await opened.catalog.root(of: tenant)!
                    let scopeNode = try scope.map { try NodeID(validating: $0) } ?? root
                    // HQ's administrators or a country's: a dealer's subtree is itself, and a
                    // node not in the tree would scope the account to nothing.
                    if scopeNode != root, try await opened.catalog.node(scopeNode, of: tenant)?.parent != root {
                        let countries = try await opened.catalog.nodes(of: tenant).filter { $0.parent == root }.map(\.node.rawValue)
                        throw CLIError("--scope \(scopeNode): an administrator's scope is the tenant's root (\(root)) or a node directly below it"
                                       + (countries.isEmpty ? " (none enrolled yet)" : " (\(countries.joined(separator: ", ")))"))
                    }
                    let user = AdminUser(tenant: tenant, name: name, roles: roles, scope: scopeNode, createdAtMillis: WallClock.nowMillis())
                    try await User.accounts(opened).createAdminUser(user, passwordHash: hash)
                    try await User.audit(opened, tenant, "user.add", name, "roles \(roles.sorted().map(\.rawValue).joined(separator: ",")), scope \(scopeNode)")
                    return user
                }
                print("added \(user.name) to \(user.tenant): roles \(user.roles.sorted().map(\.rawValue).joined(separator: ",")), scope \(user.scope)")
            }
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "List a tenant's administrators.")
            @OptionGroup var target: Target

            func run() async throws {
                let users = try await target.hub.withHQ(tenant: target.tenant) { opened, tenant in try await User.accounts(opened).adminUsers(of: tenant) }
                if users.isEmpty { print("no administrators in \(target.tenant): add one with `tiersync admin user add`"); return }
                printTable([["name", "roles", "scope", "state"]] + users.map {
                    [$0.name, $0.roles.sorted().map(\.rawValue).joined(separator: ","), $0.scope.rawValue, $0.isDisabled ? "disabled" : "active"]
                })
            }
        }

        struct Disable: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Disable an administrator: every session and API token of theirs ends at once.")
            @OptionGroup var target: Target
            @Option(help: "Login name.") var name: String

            func run() async throws {
                let name = self.name
                try await target.hub.withHQ(tenant: target.tenant) { opened, tenant in
                    try await User.accounts(opened).updateAdminUser(name, of: tenant, roles: nil, disabledAtMillis: .some(WallClock.nowMillis()), passwordHash: nil)
                    try await User.audit(opened, tenant, "user.update", name, "disabled")
                }
                print("disabled \(name); their sessions and tokens are revoked")
            }
        }

        struct Enable: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Enable a disabled administrator again.")
            @OptionGroup var target: Target
            @Option(help: "Login name.") var name: String

            func run() async throws {
                let name = self.name
                try await target.hub.withHQ(tenant: target.tenant) { opened, tenant in
                    try await User.accounts(opened).updateAdminUser(name, of: tenant, roles: nil, disabledAtMillis: .some(nil), passwordHash: nil)
                    try await User.audit(opened, tenant, "user.update", name, "enabled")
                }
                print("enabled \(name)")
            }
        }

        struct SetRole: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "set-role", abstract: "Replace an administrator's roles.")
            @OptionGroup var target: Target
            @Option(help: "Login name.") var name: String
            @Option(help: "Roles, comma-separated or the option repeated: viewer, operator, publisher, reviewer.") var role: [String] = []

            func run() async throws {
                guard !role.isEmpty else { throw ValidationError("Missing expected argument '--role <role>'") }
                let roles = try User.roles(role)
                let name = self.name
                try await target.hub.withHQ(tenant: target.tenant) { opened, tenant in
                    try await User.accounts(opened).updateAdminUser(name, of: tenant, roles: roles, disabledAtMillis: nil, passwordHash: nil)
                    try await User.audit(opened, tenant, "user.update", name, "roles \(roles.sorted().map(\.rawValue).joined(separator: ","))")
                }
                print("\(name): roles \(roles.sorted().map(\.rawValue).joined(separator: ","))")
            }
        }

        struct SetPassword: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "set-password", abstract: "Set an administrator's password (from --password-file or standard input).")
            @OptionGroup var target: Target
            @Option(help: "Login name.") var name: String
            @Option(help: "A file whose first line is the password (default: standard input).") var passwordFile: String?

            func run() async throws {
                let hash = try await PasswordHash.makeAsync(try User.readPassword(file: passwordFile))
                let name = self.name
                try await target.hub.withHQ(tenant: target.tenant) { opened, tenant in
                    try await User.accounts(opened).updateAdminUser(name, of: tenant, roles: nil, disabledAtMillis: nil, passwordHash: hash)
                    try await User.audit(opened, tenant, "user.update", name, "password set")
                }
                print("password of \(name) set")
            }
        }

        struct Token: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Issue an API token for an administrator's scripts (printed once).")
            @OptionGroup var target: Target
            @Option(help: "Login name.") var name: String
            @Option(help: "What the token is for.") var label = "script"
            @Option(help: "Days until it expires (1 to 366).") var days = 30

            func validate() throws {
                try validateText(label, option: "--label", most: 100, lineBreaks: false)
            }

            func run() async throws {
                guard (1...366).contains(days) else { throw ValidationError("--days must be from 1 to 366") }
                let (name, label, days) = (self.name, self.label, self.days)
                let token = try await target.hub.withHQ(tenant: target.tenant) { opened, tenant in
                    guard let login = try await User.accounts(opened).adminLogin(name, of: tenant), !login.user.isDisabled else {
                        throw CLIError("no active administrator '\(name)' in \(tenant)")
                    }
                    let secret = Secrets.new(.adminToken)
                    let now = WallClock.nowMillis()
                    do {
                        try await User.accounts(opened).storeAdminToken(digest: AdminAuthenticator.digest(secret),
                                                                        AdminToken(tenant: tenant, user: name, kind: .api, name: label,
                                                                                   createdAtMillis: now, expiresAtMillis: now + UInt64(days) * 86_400_000),
                                                                        limit: .apiTokens, nowMillis: now)
                    } catch StoreError.limitReached(let message) {
                        throw CLIError(message + " (`tiersync admin user tokens` lists them)")
                    }
                    try await User.audit(opened, tenant, "token.create", name, "\(label), \(days) days")
                    return secret
                }
                print(token)
            }
        }

        struct Tokens: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "List an administrator's live sessions and API tokens (never their secrets), oldest first.")
            @OptionGroup var target: Target
            @Option(help: "Login name.") var name: String

            func run() async throws {
                let name = self.name
                let entries = try await target.hub.withHQ(tenant: target.tenant) { opened, tenant in
                    guard try await User.accounts(opened).adminLogin(name, of: tenant) != nil else { throw CLIError("no administrator '\(name)' in \(tenant)") }
                    return try await User.accounts(opened).adminTokens(of: name, in: tenant, nowMillis: WallClock.nowMillis())
                }
                if entries.isEmpty { print("\(name) holds no live session or API token"); return }
                printTable([["id", "kind", "name", "created", "expires"]] + entries.map {
                    [$0.id, $0.token.kind.rawValue, $0.token.name, formatMillis($0.token.createdAtMillis), formatMillis($0.token.expiresAtMillis)]
                })
            }
        }

        struct RevokeToken: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "revoke-token",
                                                            abstract: "End one session or API token of an administrator at once (its id from `admin user tokens`).")
            @OptionGroup var target: Target
            @Option(help: "Login name.") var name: String
            @Option(help: "The token's id (16 hex digits).") var id: String

            func validate() throws {
                guard AdminTokenEntry.isValidID(id) else { throw ValidationError("--id is the 16 hex digits `tiersync admin user tokens` shows") }
            }

            func run() async throws {
                let (name, id) = (self.name, self.id)
                let revoked = try await target.hub.withHQ(tenant: target.tenant) { opened, tenant in
                    guard try await User.accounts(opened).adminLogin(name, of: tenant) != nil else { throw CLIError("no administrator '\(name)' in \(tenant)") }
                    guard let revoked = try await User.accounts(opened).revokeAdminToken(id: id, of: name, in: tenant, nowMillis: WallClock.nowMillis()) else {
                        throw CLIError("\(name) holds no live session or API token with id \(id) (`tiersync admin user tokens --name \(name)` lists them)")
                    }
                    try await User.audit(opened, tenant, "token.revoke", name, "\(revoked.token.kind.rawValue) '\(revoked.token.name)' \(revoked.id)")
                    return revoked
                }
                print("revoked \(revoked.token.kind.rawValue) '\(revoked.token.name)' (\(revoked.id)) of \(name)")
            }
        }

        struct Audit: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Show or export the audit log (newest first).")
            @OptionGroup var target: Target
            @Option(help: "Entries to show.") var limit = 100

            func validate() throws {
                try validateLimit(limit)
            }
            @Flag(help: "Write CSV instead of a table.") var csv = false

            func run() async throws {
                let limit = max(1, min(self.limit, 100_000))
                let entries = try await target.hub.withHQ(tenant: target.tenant) { opened, tenant in
                    try await User.accounts(opened).audit(of: tenant, scopes: nil, before: nil, limit: limit)
                }
                if csv {
                    print(AuditEntry.csv(entries), terminator: "")
                } else {
                    printTable([["at", "actor", "action", "target", "detail", "from"]] + entries.map {
                        [formatMillis($0.atMillis), $0.actor, $0.action, $0.target, $0.detail, $0.address]
                    })
                }
            }
        }
    }
}

import ArgumentParser
import Foundation
import TiersyncCore
import TiersyncStore

/// `tiersync consent`: record a customer's consent per purpose and channel, with its history.
struct ConsentCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "consent",
        abstract: "Record and show a customer's consent per purpose (marketing, service) and channel (phone, email, sms, post).",
        subcommands: [Set.self, Show.self])

    struct Set: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Record that a customer gave or withdrew consent; it syncs with its history.",
            discussion: """
                Withdrawing cancels the customer's open proactive tasks for that purpose and channel at \
                every node holding them (each node's rules, within a rules interval), and no node writes a \
                new task or outbound contact without it.
                """)
        @OptionGroup var node: NodeDatabase
        @Option(help: "The customer's id.") var customer: String
        @Option(help: "marketing or service.") var purpose: String
        @Option(help: "phone, email, sms or post.") var channel: String
        @Flag(help: "The customer gives consent.") var grant = false
        @Flag(help: "The customer withdraws consent.") var withdraw = false
        @Option(help: "Where the customer said so: \(Consent.Source.allCases.map(\.rawValue).joined(separator: ", ")).") var source: String

        func validate() throws {
            guard grant != withdraw else { throw ValidationError("give exactly one of --grant and --withdraw") }
            guard Consent.Purpose(rawValue: purpose) != nil else { throw ValidationError("--purpose is marketing or service") }
            guard Consent.Channel(rawValue: channel) != nil else { throw ValidationError("--channel is phone, email, sms or post") }
            guard Consent.Source(rawValue: source) != nil else {
                throw ValidationError("--source is one of \(Consent.Source.allCases.map(\.rawValue).joined(separator: ", "))")
            }
        }

        func run() throws {
            let store = try node.open()
            do {
                let event = try store.recordConsent(customer: customer, purpose: Consent.Purpose(rawValue: purpose)!, channel: Consent.Channel(rawValue: channel)!,
                                                    granted: grant, source: Consent.Source(rawValue: source)!)
                print("\(customer): consent \(purpose) by \(channel) \(grant ? "given" : "withdrawn") (\(source), recorded by \(event.recordedBy) at \(event.recordedAt))")
            } catch StoreError.notFound {
                throw CLIError("customer \(customer) is not held in \(node.db)")
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A customer's consent now, per purpose and channel, and its history.")
        @OptionGroup var node: NodeDatabase
        @Option(help: "The customer's id.") var customer: String

        func run() throws {
            let store = try node.open()
            guard let held = try store.record(table: DomainSchema.customers.name, id: customer), held.state.isLive else {
                throw CLIError("customer \(customer) is not held in \(node.db)")
            }
            var rows = [["purpose", "channel", "consent", "recorded by"]]
            for purpose in Consent.Purpose.allCases {
                for channel in Consent.Channel.allCases {
                    let field = Consent.field(purpose, channel)
                    let value = held.state.liveValues[field]
                    rows.append([purpose.rawValue, channel.rawValue, value == .bool(true) ? "given" : value == .bool(false) ? "withdrawn" : "none",
                                 held.state.versions[field]?.node.rawValue ?? ""])
                }
            }
            printTable(rows)
            let history = try store.consentHistory(customer: customer)
            print("history:")
            var lines = [["when", "purpose", "channel", "decision", "source", "recorded by"]]
            for e in history { lines.append([e.recordedAt, e.purpose, e.channel, e.granted ? "given" : "withdrawn", e.source, e.recordedBy]) }
            printTable(lines)
        }
    }
}

import ArgumentParser
import Foundation
import TiersyncCore
import TiersyncStore

struct Trace: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show where a record's changes came from and each hop they took, with times.",
        discussion: """
        Run it on any node's database: a dealer's shows whether its changes have gone upward \
        yet (or why its parent refused them); a country's or HQ's shows the hops a change \
        took to arrive, e.g. dealer-042 → de (+0.2 s) → hq (+0.4 s).
        """)

    @OptionGroup var node: NodeDatabase
    @Argument(help: "Record id.") var recordID: String
    @Option(help: "Table, when the id exists in several.") var table: String?

    func run() throws {
        let store = try node.open()
        let me = try store.identity()?.node.rawValue ?? "this node"
        let lineage = try store.lineage(recordID: recordID, table: table)
        let refused = try store.quarantined(recordID: recordID, table: table)
        guard !lineage.isEmpty || !refused.isEmpty else {
            // A record whose changes compaction folded into it is held without them.
            let tables = table.map { [$0] } ?? DomainSchema.schema.tables.map(\.name)
            if let held = try tables.first(where: { try store.record(table: $0, id: recordID) != nil }) {
                throw CLIError("\(held)/\(recordID) is held at \(me), but its changes were folded into it by compaction (docs/PRIVACY.md, \"Retention\"): no lineage is kept for them; `tiersync record get` shows it")
            }
            throw CLIError("no changes for record '\(recordID)' at \(me)")
        }
        if !lineage.isEmpty { printLineage(lineage, at: me) }
        printQuarantined(refused, at: me, afterLineage: !lineage.isEmpty)
    }

    private func printLineage(_ lineage: [ChangeLineage], at me: String) {
        print("Changes to \(lineage[0].change.table)/\(recordID) held at \(me), oldest first:")
        for entry in lineage {
            let c = entry.change
            let written = c.hlc.wallMillis
            let what = c.op == .delete ? "delete" : "set " + c.fields.keys.sorted().joined(separator: ", ")
            print("")
            print("  \(c.origin)#\(c.originSeq)  \(what)")
            print("    written at \(c.origin)  \(clock(written))")
            for hop in c.trail {
                print("    → \(hop.node.rawValue.padding(toLength: 14, withPad: " ", startingAt: 0)) \(clock(hop.atMillis))  (+\(seconds(hop.atMillis, since: written)))")
            }
            switch entry.upstream {
            case .fromParent: print("    arrived here from \(entry.receivedFrom?.rawValue ?? "the parent")")
            case .atRoot: print(entry.source == .local ? "    written here (HQ)" : "    arrived here from \(entry.receivedFrom?.rawValue ?? "a child")")
            case .acknowledged: print("    sent upward: acknowledged by the parent")
            case .pending: print("    not yet sent upward: waiting in the log (is the agent running and the parent reachable?)")
            case .refused(let code, let reason, let next):
                print("    refused by the parent [\(code)]: \(reason); next try \(clock(next))")
            }
        }
    }

    /// The record's changes this node refused, or set aside when a node above refused them
    /// (its own, withdrawn: docs/PRIVACY.md, "Re-scoping"), kept in its quarantine.
    private func printQuarantined(_ refused: [QuarantinedChange], at me: String, afterLineage: Bool) {
        guard !refused.isEmpty else { return }
        if afterLineage { print("") }
        print("Refused and kept in the quarantine at \(me) (tiersync admin quarantine --db …):")
        for entry in refused {
            print("")
            let table = (try? JSONDecoder().decode(QuarantinedName.self, from: Data(entry.change.utf8)))?.table ?? "?"
            print("  \(entry.origin)#\(entry.originSeq)  \(table)  [\(entry.code)] \(entry.reason)")
            print("    from \(entry.receivedFrom)  \(clock(entry.receivedAtMillis))")
        }
    }

    /// The table a quarantined change is for (its JSON names it).
    private struct QuarantinedName: Decodable { var table: String }

    private func clock(_ millis: UInt64) -> String {
        let f = DateFormatter()
        f.dateFormat = "yyyy-MM-dd HH:mm:ss.SSS"
        f.timeZone = TimeZone(identifier: "UTC")
        return f.string(from: Date(timeIntervalSince1970: Double(millis) / 1000)) + "Z"
    }

    private func seconds(_ millis: UInt64, since start: UInt64) -> String {
        String(format: "%.3f s", (Double(millis) - Double(start)) / 1000)
    }
}

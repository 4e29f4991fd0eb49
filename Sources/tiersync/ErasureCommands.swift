import ArgumentParser
import Foundation
import TiersyncCore
import TiersyncRules
import TiersyncStore

/// `tiersync erase`: erase a customer and everything linked to it, here and, through the
/// marker it writes, on every replica holding any of it (docs/PRIVACY.md).
struct Erase: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Erase a customer and everything linked to it, on every replica (GDPR Art. 17).",
        discussion: """
            Erases here at once (rows, change-log values, conflicts, quarantined changes), with the \
            bytes gone from the file and its write-ahead log, and writes an erasure marker (no personal \
            data) that syncs like any change: every replica that held the data erases it and \
            acknowledges; HQ's ledger (`tiersync admin erasures`) shows who has. Works at any tier: \
            a dealer's or country's --db, or HQ's tenant database (DATA/tenants/TENANT.sqlite).
            """)
    @OptionGroup var node: NodeDatabase
    @Argument(help: "The subject's table: customers.") var table: String
    @Argument(help: "The subject's record id.") var id: String
    @Flag(help: "Print the result as JSON.") var json = false

    func run() throws {
        guard let subject = Erasure.SubjectTable(rawValue: table) else {
            throw CLIError("cannot erase from '\(table)': erasure starts from a customer (tables: \(Erasure.SubjectTable.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        let store = try node.open()
        // Erased here before: said so, not as if it had just been done (helper 94).
        let before = try store.erasures().first { $0.subjectTable == subject.rawValue && $0.subjectID == id }
        let done: ErasureRecord
        do {
            done = try store.erase(subject, id: id)
        } catch StoreError.notFound {
            throw CLIError("\(table)/\(id) is not held in \(node.db): nothing to erase here (erase it where it is held, or at HQ)")
        }
        if json {
            print(try jsonText(done))
        } else {
            // "values of 0 change-log entries gone" read as nothing erased from the log (helper
            // 80): a store whose compaction folded the entries into the records holds none.
            let entries = done.logEntries == 0 && done.records > 0
                ? "no change-log entry held their values (compaction folds old entries into the records)"
                : "values of \(done.logEntries) change-log entr\(done.logEntries == 1 ? "y" : "ies") \(done.unsentDropped > 0 ? "(\(done.unsentDropped) not yet sent, dropped) " : "")gone"
            if let before {
                print("\(table)/\(id) was erased here before, as \(before.erasureID) at \(Timestamp.format(before.erasedAtMillis)): nothing more to erase")
                print("then: \(done.records) record(s), \(entries); files clean: \(done.filesCleanAtMillis != nil ? "yes" : "not yet")")
                return
            }
            print("erased \(table)/\(id) as \(done.erasureID): \(done.records) record(s), \(entries); files clean: \(done.filesCleanAtMillis != nil ? "yes" : "not yet")")
            print("digest of what was erased (`tiersync erasures --verify` recomputes it from the store): \(done.digest)")
            if try store.identity()?.parent == nil {
                // HQ pushes nowhere: the nodes holding the data pull the marker.
                print("the erasure marker reaches the nodes that held the data with their next pull; `tiersync admin erasures` shows each replica's acknowledgement")
            } else {
                print("the erasure marker syncs with the next push; `tiersync admin erasures` at HQ shows each replica's acknowledgement")
            }
        }
    }
}

/// `tiersync erasures`: the erasures done on one node's store.
struct Erasures: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the erasures done on a node's store; --verify recomputes each digest.")
    @OptionGroup var node: NodeDatabase
    @Flag(help: "Recompute each erasure's digest from what the store holds now.") var verify = false
    @Flag(help: "Print the result as JSON.") var json = false

    func run() throws {
        let store = try node.open()
        let done = try store.erasures()
        if json {
            print(try jsonText(done))
            return
        }
        var rows = [["erasure", "subject", "records", "log entries", "unsent dropped", "refused since", "files clean"] + (verify ? ["verified"] : [])]
        var failed = 0
        for e in done {
            var row = [e.erasureID, "\(e.subjectTable)/\(e.subjectID)", "\(e.records)", "\(e.logEntries)", "\(e.unsentDropped)", "\(e.refused)",
                       e.filesCleanAtMillis != nil ? "yes" : "no"]
            if verify {
                let ok = try store.verifyErasure(e.erasureID)
                if !ok { failed += 1 }
                row.append(ok ? "yes" : "NO")
            }
            rows.append(row)
        }
        printTable(rows)
        print("\(done.count) erasure(s)")
        if failed > 0 { throw CLIError("\(failed) erasure(s) no longer verify: data of an erased record is back in \(node.db)") }
    }
}

extension Admin {
    /// `tiersync admin erasures`: HQ's ledger of erasure requests.
    struct ErasuresCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "erasures",
            abstract: "HQ's erasure ledger: each request, the replicas that held the data, and which have acknowledged.")
        @OptionGroup var hub: HubData
        @Option(help: "Tenant identifier.") var tenant: String
        @Flag(help: "Only requests some replica has not acknowledged yet.") var outstanding = false
        @Flag(help: "Print the ledger as JSON.") var json = false

        func run() async throws {
            let (outstandingOnly, asJSON) = (outstanding, json)
            let text: String = try await hub.withHQ(tenant: tenant) { hub, tenantID in
                let tree = try await hub.catalog.tree(of: tenantID)
                let ledger = try await hub.store(tenantID).erasureLedger()
                let rows = ledger.map { (entry: $0, replicas: $0.replicas(in: tree), missing: $0.outstanding(in: tree)) }
                    .filter { !outstandingOnly || !$0.missing.isEmpty }
                if asJSON {
                    struct Line: Encodable {
                        let erasure: ErasureLedgerEntry
                        let replicas: [NodeID]
                        let outstanding: [NodeID]
                    }
                    return try jsonText(rows.map { Line(erasure: $0.entry, replicas: $0.replicas, outstanding: $0.missing) })
                }
                var out = ""
                for row in rows {
                    let e = row.entry
                    out += "\(e.erasureID)  \(e.subjectTable)/\(e.subjectID)  requested by \(e.requestedBy) at \(e.requestedAt)\n"
                    out += "  replicas: \(row.replicas.map(\.rawValue).joined(separator: ", "))\n"
                    for ack in e.acknowledgements {
                        out += "  acknowledged by \(ack.node) at \(ack.acknowledgedAt): \(ack.records) record(s), \(ack.logEntries) log entr\(ack.logEntries == 1 ? "y" : "ies")"
                            + (ack.unsentDropped > 0 ? ", \(ack.unsentDropped) unsent dropped" : "") + (ack.refused > 0 ? ", \(ack.refused) late change(s) refused" : "")
                            + ", digest \(ack.digest.prefix(16))…\n"
                    }
                    out += row.missing.isEmpty ? "  complete: every replica acknowledged\n" : "  outstanding: \(row.missing.map(\.rawValue).joined(separator: ", "))\n"
                }
                out += "\(rows.count) erasure request(s)"
                return out
            }
            print(text)
        }
    }
}

/// Pretty, sorted JSON of `value`: what every `--json` of the CLI prints.
func jsonText<T: Encodable>(_ value: T) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}

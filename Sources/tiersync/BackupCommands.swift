import ArgumentParser
import Foundation
import TiersyncStore

/// `tiersync backup`: an online copy of a hub's SQLite databases or of a node's store.
///
/// A synchronous command: it only copies files, with nothing else to serve meanwhile, so
/// the blocking SQLite calls run on the main thread rather than on the cooperative pool.
struct Backup: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Copy a hub's databases (--data) or a node's store (--db) consistently, while they are in use.",
        discussion: """
        Uses SQLite's online backup API: each database is copied as of one commit while the hub \
        or agent keeps serving and writing. With --data DIR (a hub's `hub serve --data`), --out \
        is a new directory receiving hub.sqlite and tenants/<tenant>.sqlite; with --db FILE (a \
        node's store), --out is the new file. Nothing is overwritten.

        Restore: stop the hub (or agent), put the files back in place (remove any -wal and -shm \
        files left beside the old ones), start it again. Agents notice a hub restored from an \
        older backup, re-send what it lost and pull again. A hub on PostgreSQL is backed up \
        with pg_dump; see docs/OPERATIONS.md, "Backup and restore".
        """)

    @Option(help: "A hub's data directory (holding hub.sqlite and tenants/).")
    var data: String?
    @Option(help: "A node's SQLite store (an agent's or a country node's --db).")
    var db: String?
    @Option(help: "Where to write: a new directory for --data, a new file for --db.")
    var out: String

    func validate() throws {
        guard (data == nil) != (db == nil) else { throw ValidationError("give exactly one of --data DIR or --db FILE") }
    }

    func run() throws {
        let copies = if let data { try StoreBackup.backupHub(dataDirectory: data, to: out) }
            else { [try StoreBackup.backupDatabase(at: db!, to: out)] }
        for copy in copies {
            print("\(copy.source) -> \(copy.destination) (\(copy.bytes) bytes)")
        }
        print("backup complete: \(copies.count) database\(copies.count == 1 ? "" : "s") in \(out)")
        // Read from the copy (the live catalog is the hub's to migrate): a tenant whose nodes
        // enrolled has a database, and the source missing one was skipped without a word
        // (helper 99). The copy is whole as the source is; the source is not.
        if data != nil {
            let missing = try HubCatalog.tenantsMissingData(directory: out)
            if !missing.isEmpty {
                let names = missing.map { $0.credentials > 0 ? "\($0.tenant) (\($0.credentials) node credential(s))" : "\($0.tenant) (its database was made)" }
                    .joined(separator: ", ")
                throw CLIError("the hub's catalog names tenants whose nodes enrolled or whose database it made, but whose database is missing from \(data!)/tenants, so from this backup too: \(names); their data is not in \(out)")
            }
        }
        // A country's --data holds only the directory it mirrors from HQ: its records are in
        // its own store, which this copy does not include.
        if let data, let store = CountryStorePointer.read(data: data) {
            FileHandle.standardError.write(Data("""
                note: \(data) is a country node's --data directory: its records are in its store \(store), not copied here; \
                back it up too: tiersync backup --db \(store) --out FILE

                """.utf8))
        }
    }
}

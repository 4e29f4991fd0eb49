// Online backups of SQLite stores (`tiersync backup`): a hub's catalog and tenant databases,
// or one node's store, copied with SQLite's online backup API while their owner keeps
// serving and writing.

import Foundation
import GRDB

/// Copies SQLite stores consistently while they are in use.
///
/// Each database is copied in one step of SQLite's backup API (GRDB's
/// `DatabaseReader.backup(to:)`), which holds one read transaction on the source: the copy
/// is the database as of one commit, never half a push. A writer in WAL mode is not
/// blocked by it (readers and the writer do not wait for each other), so a hub serves on.
/// The copies are self-contained files (rollback journal, no `-wal` beside them) written
/// under a temporary name and renamed once complete and checked, so an interrupted backup
/// never leaves a file that looks whole.
public enum StoreBackup {
    /// One database copied.
    public struct Copy: Sendable, Equatable {
        public let source: String
        public let destination: String
        /// The copy's size in bytes.
        public let bytes: Int64
    }

    /// Copies the database at `source` to `destination`, which must not exist yet.
    @discardableResult
    public static func backupDatabase(at source: String, to destination: String) throws -> Copy {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: source, isDirectory: &isDirectory) else {
            throw StoreError.invalidArgument("no database at \(source)")
        }
        guard !isDirectory.boolValue else {
            throw StoreError.invalidArgument("\(source) is a directory, not a store: give a node's store file (a hub's directory is backed up with --data)")
        }
        guard !FileManager.default.fileExists(atPath: destination) else {
            throw StoreError.invalidArgument("\(destination) already exists: a backup never overwrites one")
        }
        let folder = (destination as NSString).deletingLastPathComponent
        guard FileManager.default.fileExists(atPath: folder.isEmpty ? "." : folder, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw StoreError.invalidArgument("no directory \(folder) to write the backup \(destination) in")
        }
        let partial = destination + ".partial"
        try? FileManager.default.removeItem(atPath: partial)
        do {
            var configuration = Configuration()
            // The owner may hold the write lock or checkpoint: wait rather than fail.
            configuration.busyMode = .timeout(30)
            // Opened read-write but never written: a read-only connection to a WAL database
            // whose owner stopped (no -shm) could fail to open.
            let reader = try DatabaseQueue(path: source, configuration: configuration)
            let copy = try DatabaseQueue(path: partial)
            try reader.backup(to: copy)
            try reader.close()
            try copy.writeWithoutTransaction { db in
                // One file to keep and move around; the owner switches back to WAL on open.
                try db.execute(sql: "PRAGMA journal_mode = DELETE")
                let check = try String.fetchOne(db, sql: "PRAGMA quick_check") ?? "no answer"
                guard check == "ok" else { throw StoreError.invalidArgument("the copy of \(source) fails SQLite's check: \(check)") }
            }
            try copy.close()
            try FileManager.default.moveItem(atPath: partial, toPath: destination)
        } catch {
            try? FileManager.default.removeItem(atPath: partial)
            throw error
        }
        let size = (try? FileManager.default.attributesOfItem(atPath: destination)[.size] as? NSNumber)?.int64Value ?? 0
        return Copy(source: source, destination: destination, bytes: size)
    }

    /// Copies a hub's data directory (`tiersync hub serve --data`): the catalog
    /// (`hub.sqlite`), then every tenant database (`tenants/<tenant>.sqlite`), into `output`
    /// with the same layout, so restoring is putting the files back. `output` must not
    /// hold a hub yet.
    ///
    /// Each file is a consistent snapshot; the set is not one instant across files (a
    /// tenant may have received pushes after the catalog was copied). That is the case a
    /// restore has to handle anyway: agents re-send what the restored hub lacks and pull
    /// again (docs/OPERATIONS.md, "Backup and restore").
    @discardableResult
    public static func backupHub(dataDirectory: String, to given: String) throws -> [Copy] {
        // `DIR/` names DIR: its `.partial` sibling is `DIR.partial`, not `DIR/.partial`.
        var output = given
        while output.count > 1, output.hasSuffix("/") { output.removeLast() }
        let catalog = dataDirectory + "/hub.sqlite"
        guard FileManager.default.fileExists(atPath: catalog) else {
            throw StoreError.invalidArgument("\(dataDirectory) holds no hub (no hub.sqlite): pass the directory given to `tiersync hub serve --data`")
        }
        let files = FileManager.default
        guard !files.fileExists(atPath: output + "/hub.sqlite") else {
            throw StoreError.invalidArgument("\(output) already holds a hub backup: choose a new directory")
        }
        guard !files.fileExists(atPath: output) else {
            throw StoreError.invalidArgument("\(output) exists: a hub backup goes into a new directory")
        }
        // Written beside the destination and renamed into place once complete: a backup cut
        // short (Ctrl-C, a full disk) leaves no directory that looks like a whole one.
        let partial = output + ".partial"
        if files.fileExists(atPath: partial) { try files.removeItem(atPath: partial) }
        do {
            try files.createDirectory(atPath: partial + "/tenants", withIntermediateDirectories: true)
        } catch {
            throw StoreError.invalidArgument("cannot create the backup directory \(output): \((error as NSError).localizedDescription)")
        }
        // The catalog first: every tenant it names already has its database, which is copied after.
        var copies = [try backupDatabase(at: catalog, to: partial + "/hub.sqlite")]
        let tenants = (try? files.contentsOfDirectory(atPath: dataDirectory + "/tenants")) ?? []
        for file in tenants.filter({ $0.hasSuffix(".sqlite") }).sorted() {
            copies.append(try backupDatabase(at: "\(dataDirectory)/tenants/\(file)", to: "\(partial)/tenants/\(file)"))
        }
        try files.moveItem(atPath: partial, toPath: output)
        return copies.map { Copy(source: $0.source, destination: output + $0.destination.dropFirst(partial.count), bytes: $0.bytes) }
    }
}

import GRDB
import GRDBSQLite
import Synchronization

/// How long a store's write-ahead log is and how much of it was last copied back, for a
/// store whose owner checkpoints it (``WALCheckpointing/byOwner``).
///
/// SQLite reports the log's length to the writer connection after every commit through its
/// WAL hook; reading it here costs an atomic load, so the owner decides when to checkpoint
/// without asking SQLite (a passive checkpoint that copies anything also syncs the file).
final class WALProgress: Sendable {
    /// Frames in the log after the writer's last commit.
    let logFrames = Atomic<Int>(0)
    /// Frames of the log in the database file after the owner's last checkpoint.
    let copiedFrames = Atomic<Int>(0)
    /// Commits since the owner's last checkpoint began (the owner takes away those it saw).
    let commits = Atomic<Int>(0)
    /// The log's length at which the writer checkpoints by itself.
    let backstopFrames: Int32

    init(backstopFrames: Int) { self.backstopFrames = Int32(backstopFrames) }

    /// Frames committed since the owner's last checkpoint. The hook forgets what was copied
    /// when the log starts over shorter than it was; should a checkpoint's report land just
    /// after that, a log shorter than it counts whole. A log that starts over and reaches at
    /// least the length copied before cannot be told from one that did not grow, so any
    /// commit since the last checkpoint counts at least one frame: the owner copies it
    /// within its delay instead of never (a tenant's 300-change push of exactly as many
    /// frames as its creation stayed in the log until the next write).
    var pending: Int {
        let log = logFrames.load(ordering: .relaxed), copied = copiedFrames.load(ordering: .relaxed)
        let frames = log >= copied ? log - copied : log
        return frames > 0 ? frames : (commits.load(ordering: .relaxed) > 0 && log > 0 ? 1 : 0)
    }

    /// Installs the hook on the writer's connection. It replaces SQLite's automatic
    /// checkpoint (itself such a hook), so it checkpoints as that one does once the log
    /// passes ``backstopFrames``: finishing what the owner copied, or all of it should the
    /// owner have stopped.
    func install(on db: Database) {
        // Unretained: the configuration whose `prepareDatabase` calls this retains `self`
        // for as long as the pool and its connections exist.
        sqlite3_wal_hook(db.sqliteConnection, { context, connection, name, frames in
            let progress = Unmanaged<WALProgress>.fromOpaque(context!).takeUnretainedValue()
            progress.commits.add(1, ordering: .relaxed)
            // A log only grows until it starts over from its beginning: then what was copied
            // belongs to the previous round.
            if Int(frames) < progress.logFrames.exchange(Int(frames), ordering: .relaxed) {
                progress.copiedFrames.store(0, ordering: .relaxed)
            }
            if frames >= progress.backstopFrames {
                sqlite3_wal_checkpoint(connection, name)
            }
            return SQLITE_OK
        }, Unmanaged.passUnretained(self).toOpaque())
    }
}

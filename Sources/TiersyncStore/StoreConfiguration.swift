import GRDB

enum StoreConfiguration {
    /// One configuration for every Tiersync SQLite file: WAL (via DatabasePool), a busy
    /// timeout so that a CLI write and a running agent share the file, NORMAL sync (WAL
    /// keeps it crash-safe; only the last transactions may roll back on power loss).
    ///
    /// With `walProgress`, the writer reports its log's length there after each commit and
    /// checkpoints by itself only at the progress's backstop; without, SQLite checkpoints
    /// inside the commit that takes the log past 1,000 pages.
    static func make(readonly: Bool = false, walProgress: WALProgress? = nil) -> Configuration {
        var config = Configuration()
        config.busyMode = .timeout(15)
        config.readonly = readonly
        config.prepareDatabase { db in
            if !db.configuration.readonly {
                try db.execute(sql: "PRAGMA synchronous = NORMAL")
                // Deleted content is overwritten with zeros, in b-tree and freelist pages:
                // an erased customer's values must not stay in the file (docs/PRIVACY.md).
                try db.execute(sql: "PRAGMA secure_delete = ON")
                if let walProgress {
                    walProgress.install(on: db)
                }
            }
            try db.execute(sql: "PRAGMA foreign_keys = ON")
        }
        return config
    }

    static func openPool(path: String, walProgress: WALProgress? = nil) throws -> DatabasePool {
        try DatabasePool(path: path, configuration: make(walProgress: walProgress))
    }
}

/// Who copies a store's write-ahead log back into its database file.
///
/// SQLite's default has the writer do it inside the commit that takes the log past 1,000
/// pages, so every few batches one commit also copies ~4 MB (without checkpoints, the
/// store's raw writes ran ~20 % faster). A hub's writer is the one thread every push of a
/// tenant waits for, so the hub copies the log from a task of its own instead
/// (`CheckpointService`), on the other core (hub ingest +12–15 % in one binary,
/// BENCHMARKS.md).
public enum WALCheckpointing: Sendable {
    /// The writer checkpoints itself (SQLite's default): for agents, CLIs and tests.
    case byWriter
    /// The store's owner checkpoints it (``NodeStore/checkpoint()``) when
    /// ``NodeStore/uncheckpointedPages`` says enough has been committed; the writer
    /// checkpoints itself only once the log passes ``writerBackstopPages`` (finishing what
    /// the owner copied, or doing all of it should the owner stop).
    case byOwner

    /// How much the owner lets accumulate before it copies (1 MiB): small copies keep
    /// what the writer finds left at its backstop small (waiting for 1,000 pages, as SQLite
    /// does, measured no faster than the writer checkpointing itself), while a light,
    /// steady load is not copied and synced dozens of times a second.
    public static let ownerThresholdPages = 256

    /// 4,096 pages of 4 KiB: 16 MiB of log. The writer's checkpoint there copies only what
    /// the owner has not yet, after which the log starts over from its beginning; without
    /// it, a log under constant writing would never be wholly copied between two commits
    /// and would grow without end.
    public static let writerBackstopPages = 4_096
}

import GRDB

enum StoreConfiguration {
    /// One configuration for every Tiersync SQLite file: WAL (via DatabasePool), a busy
    /// timeout so that a CLI write and a running agent share the file, NORMAL sync (WAL
    /// keeps it crash-safe; only the last transactions may roll back on power loss).
    static func make(readonly: Bool = false) -> Configuration {
        var config = Configuration()
        config.busyMode = .timeout(15)
        config.readonly = readonly
        config.prepareDatabase { db in
            if !db.configuration.readonly {
                try db.execute(sql: "PRAGMA synchronous = NORMAL")
            }
            try db.execute(sql: "PRAGMA foreign_keys = ON")
        }
        return config
    }

    static func openPool(path: String) throws -> DatabasePool {
        try DatabasePool(path: path, configuration: make())
    }
}

// Moving a tenant into PostgreSQL (`admin migrate-tenant`), and reading it back as the
// engine-neutral pages the tenant digest compares (``TiersyncStorage/TenantDataExport``).

import PostgresNIO
import TiersyncCore
import TiersyncStorage

extension PostgresTenantStore: TenantDataExport {
    private func table(of moved: MigrationTable) -> String {
        switch moved {
        case .changes: table(.changes)
        case .changeRoutes: table(.changeRoutes)
        case .routeEntries: table(.routeEntries)
        case .conflicts: table(.conflicts)
        case .quarantine: table(.quarantine)
        case .governanceDocuments: table(.governanceDocuments)
        case .erasures: table(.erasures)
        case .erasedRecords: table(.erasedRecords)
        case .erasedRefusals: table(.erasedRefusals)
        case .purged: table(.purged)
        case .purgedRanges: table(.purgedRanges)
        }
    }

    public func exportRows(_ moved: MigrationTable, offset: Int, limit: Int) async throws -> [[MigrationValue]] {
        try await prepared()
        let columns = moved.columns
        // Text keys in byte order (COLLATE "C"), as SQLite orders them.
        let order = moved.orderKey.map { key in
            columns.contains(.text(key)) ? "\(key) COLLATE \"C\"" : key
        }.joined(separator: ", ")
        var sql = PostgresSQL()
        let (l, o) = (sql.bind(Int64(limit)), sql.bind(Int64(offset)))
        sql.append("SELECT \(columns.map(\.name).joined(separator: ", ")) FROM \(table(of: moved)) ORDER BY \(order) LIMIT \(l) OFFSET \(o)")
        return try await client.query(sql.query, logger: logger).collect().map { row in
            let cells = Array(row)
            return try columns.enumerated().map { i, column in
                switch column {
                case .int: try cells[i].decode(Int64?.self).map(MigrationValue.integer) ?? .null
                case .text: try cells[i].decode(String?.self).map(MigrationValue.text) ?? .null
                }
            }
        }
    }

    public func exportRecords(offset: Int, limit: Int) async throws -> [StoredRecord] {
        try await prepared()
        var out: [StoredRecord] = []
        let rows = try await client.query("""
            SELECT tbl, id, fields, versions, tombstone, route FROM \(unescaped: table(.records))
            ORDER BY tbl COLLATE "C", id COLLATE "C" LIMIT \(Int64(limit)) OFFSET \(Int64(offset))
            """, logger: logger)
        for try await (tbl, id, fields, versions, tombstone, route) in rows.decode((String, String, String, String, String?, String).self) {
            out.append(try Self.record(table: tbl, id: id, fields: fields, versions: versions, tombstone: tombstone, route: route))
        }
        return out
    }

    public func exportSettings() async throws -> [String: String] {
        var settings: [String: String] = [:]
        for key in MigratedSetting.allCases {
            if let value = try await setting(key.rawValue) { settings[key.rawValue] = value }
        }
        return settings
    }

    /// Whether the tenant's schema holds any change, record or governance document (a
    /// tenant is moved only into an empty one).
    public func isEmpty() async throws -> Bool {
        try await prepared()
        let row = try await client.query("""
            SELECT (SELECT COUNT(*) FROM \(unescaped: table(.changes))) + (SELECT COUNT(*) FROM \(unescaped: table(.records)))
                 + (SELECT COUNT(*) FROM \(unescaped: table(.governanceDocuments)))
            """, logger: logger).collect().first
        return try (row?.decode(Int64.self) ?? 0) == 0
    }

    /// Writes moved rows of `moved` (in one statement per 1,000 rows).
    public func importRows(_ moved: MigrationTable, _ rows: [[MigrationValue]]) async throws {
        try await prepared()
        if moved == .quarantine {
            // Moved whole, whatever this schema's bounds (the source may have kept more, with
            // larger bounds or from before them): without the quota's trigger, in one
            // transaction, and the usage counted again from what arrived.
            try await client.withTransaction(logger: logger) { connection in
                let quarantine = table(.quarantine)
                _ = try await connection.query(PostgresQuery(unsafeSQL: "ALTER TABLE \(quarantine) DISABLE TRIGGER quarantine_quota"), logger: logger).collect()
                try await insertRows(moved, rows) { _ = try await connection.query($0, logger: logger).collect() }
                _ = try await connection.query(PostgresQuery(unsafeSQL: "ALTER TABLE \(quarantine) ENABLE TRIGGER quarantine_quota"), logger: logger).collect()
                for sql in tenantSchema.recountQuarantineUsage {
                    _ = try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger).collect()
                }
            }
            return
        }
        try await insertRows(moved, rows) { _ = try await client.query($0, logger: logger).collect() }
    }

    /// The rows as multi-row INSERTs of 1,000, each run by `run`.
    private func insertRows(_ moved: MigrationTable, _ rows: [[MigrationValue]], _ run: (PostgresQuery) async throws -> Void) async throws {
        let columns = moved.columns
        for start in stride(from: 0, to: rows.count, by: 1_000) {
            var sql = PostgresSQL("INSERT INTO \(table(of: moved)) (\(columns.map(\.name).joined(separator: ", "))) VALUES ")
            for (r, row) in rows[start..<min(start + 1_000, rows.count)].enumerated() {
                guard row.count == columns.count else { throw PostgresStoreError("a \(moved.rawValue) row has \(row.count) values, not \(columns.count)") }
                let placeholders = row.map { value -> String in
                    switch value {
                    case .null: sql.bind(String?.none)
                    case .integer(let i): sql.bind(i)
                    case .text(let t): sql.bind(t)
                    }
                }
                sql.append((r > 0 ? ", " : "") + "(" + placeholders.joined(separator: ", ") + ")")
            }
            try await run(sql.query)
        }
    }

    /// Writes moved records as they are (state and route).
    public func importRecords(_ records: [StoredRecord]) async throws {
        try await prepared()
        guard !records.isEmpty else { return }
        let encoded = records.map(TenantDigest.encoded)
        _ = try await client.query("""
            INSERT INTO \(unescaped: table(.records)) (tbl, id, fields, versions, tombstone, route, live)
            SELECT t, i, f, v, NULLIF(d, ''), r, l
            FROM unnest(\(encoded.map { $0[0] })::text[], \(encoded.map { $0[1] })::text[], \(encoded.map { $0[2] })::text[],
                        \(encoded.map { $0[3] })::text[], \(encoded.map { $0[4] })::text[], \(encoded.map { $0[5] })::text[],
                        \(records.map(\.state.isLive))::bool[]) AS u(t, i, f, v, d, r, l)
            """, logger: logger).collect()
    }

    /// Writes the moved settings and sets the log's head to `head`, the highest position the
    /// source ever numbered (at least the highest moved), so new changes continue the
    /// numbering the nodes' cursors know: a source whose newest entries left its log (a
    /// tombstone purged) has a head above its newest entry, and a head set lower read, at
    /// every child past it, as a hub restored from an older backup.
    public func finishImport(settings: [String: String], head: Int64) async throws {
        try await prepared()
        try await client.withConnection { connection in
            for key in MigratedSetting.allCases {
                guard let value = settings[key.rawValue], let meta = PostgresMetaKey(rawValue: key.rawValue) else { continue }
                try await self.setSetting(meta, value, on: connection)
            }
            _ = try await connection.query("""
                UPDATE \(unescaped: self.table(.head)) SET seq = GREATEST(\(head), (SELECT COALESCE(MAX(seq), 0) FROM \(unescaped: self.table(.changes)))) WHERE id = 1
                """, logger: self.logger).collect()
            // The moved entries' routes, which compaction reads per entry.
            _ = try await connection.query(PostgresQuery(unsafeSQL: "DO $do$ BEGIN \(self.tenantSchema.backfillRouted) END $do$"), logger: self.logger).collect()
        }
    }
}

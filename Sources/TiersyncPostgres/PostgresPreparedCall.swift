// The hot statements of a sync request (a push's read and write, a pull's feed page, the
// credential look-up), run as named prepared statements, parsed and planned once per pooled
// connection rather than at every call.
//
// Why: postgres-nio's `query` sends each statement unnamed, so PostgreSQL parses, analyses
// and plans it at every call. For `ts_apply_push`, a call with 80 parameters, that was about
// as much work as running it for a small push (measured with pgbench on the test cluster:
// 297 µs a call unnamed, 158 µs prepared, empty arrays), and it is paid by every sync
// request of every node.
//
// How: postgres-nio prepares a `PostgresPreparedStatement` lazily on each connection and
// keeps it by name, but takes the name and text from the type (`static`), while ours carry
// the tenant's schema. So one type, ``RuntimePreparedStatement``, reads its name and text
// from a task-local value bound around the call (postgres-nio reads both in the calling task,
// when the call is made). The name is a digest of the text, so a text
// always has the same name and two texts never share one.
//
// A name postgres-nio failed to prepare stays failed on that connection, and a statement
// prepared before its tenant's functions were replaced by ones of another shape fails at
// every call; on either error the connection is closed (its prepared statements go with it,
// on both sides) and the call runs once more on another. Closing rather than renaming keeps
// what a connection prepares bounded by the statements it serves, whatever the errors.

import Crypto
import Logging
import PostgresNIO

/// A statement whose text is known only at run time, prepared by postgres-nio under a name
/// derived from its text. Used only through ``PostgresClient/preparedRows(_:logger:)``.
struct RuntimePreparedStatement: PostgresPreparedStatement {
    typealias Row = PostgresRow

    /// The name and text of the statement being run by this task.
    @TaskLocal static var current = (name: "", sql: "")

    static var name: String { current.name }
    static var sql: String { current.sql }

    let bindings: PostgresBindings

    func makeBindings() throws -> PostgresBindings { bindings }
    func decodeRow(_ row: PostgresRow) throws -> PostgresRow { row }
}

/// How prepared statements are named, and when one can no longer serve.
enum PreparedNames {
    /// `ts` and the first 12 bytes of the text's SHA-256 as hex: under PostgreSQL's 63 bytes
    /// for a statement's name, whatever the tenant's id.
    static func name(for sql: String) -> String {
        let hex = Array("0123456789abcdef".utf8)
        var name = Array("ts".utf8)
        for byte in SHA256.hash(data: Array(sql.utf8)).prefix(12) {
            name.append(hex[Int(byte >> 4)])
            name.append(hex[Int(byte & 0x0f)])
        }
        return String(decoding: name, as: UTF8.self)
    }

    /// Whether `error` means the statement as prepared on that connection cannot serve again:
    /// not prepared (undefined object, syntax: postgres-nio keeps the failure), or its cached
    /// plan invalid for good (a function or table replaced by one of another shape: SQLSTATE
    /// 0A000, "cached plan must not change result type"; 26000, no such prepared statement).
    static func invalidates(_ error: PSQLError) -> Bool {
        guard let state = error.serverInfo?[.sqlState] else { return false }
        return state == "0A000" || state == "26000" || state.hasPrefix("42") || state.hasPrefix("3F")
    }
}

extension PostgresClient {
    /// Runs `query` as a prepared statement named by its text (see the file's comment), on a
    /// pooled connection, and returns its rows. Only for a statement run on its own
    /// (autocommit): one that fails as prepared runs once more on another connection, which
    /// is safe because a failed statement has changed nothing.
    func preparedRows(_ query: PostgresQuery, logger: Logger) async throws -> [PostgresRow] {
        let statement = (name: PreparedNames.name(for: query.sql), sql: query.sql)
        func run() async throws -> [PostgresRow] {
            try await withConnection { connection in
                do {
                    var rows: [PostgresRow] = []
                    let stream = try await RuntimePreparedStatement.$current.withValue(statement) {
                        try await connection.execute(RuntimePreparedStatement(bindings: query.binds), logger: logger)
                    }
                    for try await row in stream { rows.append(row) }
                    return rows
                } catch let error as PSQLError where PreparedNames.invalidates(error) {
                    // A persistent error of this kind (a tenant's schema dropped under a running
                    // hub) closes a connection per call: churn, never growth.
                    logger.debug("prepared statement unusable; closing its connection", metadata: ["sqlstate": "\(error.serverInfo?[.sqlState] ?? "")"])
                    try? await connection.close()
                    throw error
                }
            }
        }
        do {
            return try await run()
        } catch let error as PSQLError where PreparedNames.invalidates(error) {
            return try await run()
        }
    }
}

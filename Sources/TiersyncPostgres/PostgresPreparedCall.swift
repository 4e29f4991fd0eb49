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
// before and after leasing the connection). The name is a digest of the text, so a text
// always has the same name and two texts never share one.
//
// A name postgres-nio failed to prepare stays failed on that connection, and a statement
// prepared before its tenant's functions were replaced with another result type fails at
// every call; on either error the names change (``PreparedNames/generation``) and the
// statements are prepared again under new ones.

import Crypto
import Logging
import PostgresNIO
import Synchronization

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

/// How prepared statements are named.
enum PreparedNames {
    /// Bumped when a prepared statement could no longer be used on some connection: every
    /// name changes, so each connection prepares its statements again.
    static let generation = Atomic<Int>(0)

    /// `ts` with the first 12 bytes of the text's SHA-256 and the generation: under
    /// PostgreSQL's 63 bytes for a statement's name, whatever the tenant's id.
    static func name(for sql: String) -> String {
        let digest = SHA256.hash(data: Array(sql.utf8))
        var name = "ts"
        for byte in digest.prefix(12) {
            name += String(byte, radix: 16).count == 1 ? "0" + String(byte, radix: 16) : String(byte, radix: 16)
        }
        return name + "_\(generation.load(ordering: .relaxed))"
    }

    /// Whether `error` means the statement as prepared cannot serve again: not prepared
    /// (undefined object, syntax), or its cached plan now invalid for good (a function or
    /// table replaced by one of another shape: SQLSTATE 0A000, "cached plan must not change
    /// result type"; 26000, no such prepared statement).
    static func invalidates(_ error: PSQLError) -> Bool {
        guard let state = error.serverInfo?[.sqlState] else { return false }
        return state == "0A000" || state == "26000" || state.hasPrefix("42") || state.hasPrefix("3F")
    }
}

extension PostgresClient {
    /// Runs `query` as a prepared statement named by its text (see the file's comment), on a
    /// pooled connection, and returns its rows as they stream. Only for a statement run on its
    /// own (autocommit): one that fails as prepared is run once more under a new name, which
    /// is safe because a failed statement has changed nothing.
    func preparedRows(_ query: PostgresQuery, logger: Logger) async throws -> AsyncThrowingMapSequence<PostgresRowSequence, PostgresRow> {
        let sql = query.sql
        func run() async throws -> AsyncThrowingMapSequence<PostgresRowSequence, PostgresRow> {
            try await RuntimePreparedStatement.$current.withValue((name: PreparedNames.name(for: sql), sql: sql)) {
                try await execute(RuntimePreparedStatement(bindings: query.binds), logger: logger)
            }
        }
        do {
            return try await run()
        } catch let error as PSQLError where PreparedNames.invalidates(error) {
            PreparedNames.generation.add(1, ordering: .relaxed)
            logger.debug("prepared statement unusable; preparing it again", metadata: ["sqlstate": "\(error.serverInfo?[.sqlState] ?? "")"])
            return try await run()
        }
    }
}

import GRDB
import GRDBSQLite
import TiersyncCore

private let transient = unsafeBitCast(OpaquePointer(bitPattern: -1), to: sqlite3_destructor_type.self)

/// Binds values straight into a prepared statement and steps it, for the few writes every
/// received change makes (log entry, routes, record metadata, domain row). GRDB's
/// `StatementArguments` box each value in an existential first; on the ingest path that
/// boxing, not SQLite, was the cost. Only for statements that return no rows (`execute`)
/// or whose rows are only counted as present (`exists`), inside a transaction GRDB opened.
struct DirectBinding {
    private let handle: SQLiteStatement
    private var index: Int32 = 0

    /// Runs `statement` with the values `bind` adds, in order.
    static func execute(_ db: Database, _ statement: Statement, _ bind: (inout DirectBinding) -> Void) throws {
        let code = step(statement, bind)
        guard code == SQLITE_DONE else { throw error(code, statement) }
    }

    /// Whether `statement`, a query, returns a row for the values `bind` adds: a point
    /// lookup without GRDB's row decoding.
    static func exists(_ db: Database, _ statement: Statement, _ bind: (inout DirectBinding) -> Void) throws -> Bool {
        switch step(statement, bind) {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        case let code: throw error(code, statement)
        }
    }

    /// Binds afresh, steps once and resets: the statement is ready for the next use
    /// whatever the outcome.
    private static func step(_ statement: Statement, _ bind: (inout DirectBinding) -> Void) -> Int32 {
        var binding = DirectBinding(handle: statement.sqliteStatement)
        sqlite3_reset(binding.handle)
        sqlite3_clear_bindings(binding.handle)
        bind(&binding)
        let code = sqlite3_step(binding.handle)
        sqlite3_reset(binding.handle)
        return code
    }

    private static func error(_ code: Int32, _ statement: Statement) -> DatabaseError {
        DatabaseError(resultCode: ResultCode(rawValue: code), message: String(cString: sqlite3_errmsg(sqlite3_db_handle(statement.sqliteStatement))),
                      sql: statement.sql)
    }

    private init(handle: SQLiteStatement) { self.handle = handle }

    mutating func text(_ value: String?) {
        index += 1
        guard var value else { sqlite3_bind_null(handle, index); return }
        // Bound from the string's own UTF-8 storage with its length: passing a Swift
        // String as `const char *` copies it into a fresh C string first.
        let (handle, index) = (handle, index)
        _ = value.withUTF8 { utf8 in
            if let base = utf8.baseAddress {
                sqlite3_bind_text(handle, index, UnsafeRawPointer(base).assumingMemoryBound(to: CChar.self), Int32(utf8.count), transient)
            } else {
                sqlite3_bind_text(handle, index, "", 0, transient)
            }
        }
    }

    mutating func integer(_ value: Int64?) {
        index += 1
        guard let value else { sqlite3_bind_null(handle, index); return }
        sqlite3_bind_int64(handle, index, value)
    }

    mutating func field(_ value: FieldValue) {
        switch value {
        case .null:
            index += 1
            sqlite3_bind_null(handle, index)
        case .bool(let b): integer(b ? 1 : 0)
        case .int(let i): integer(i)
        case .double(let d):
            index += 1
            sqlite3_bind_double(handle, index, d)
        case .string(let s): text(s)
        }
    }
}

import GRDB
import GRDBSQLite
import TiersyncCore

private let transient = unsafeBitCast(OpaquePointer(bitPattern: -1), to: sqlite3_destructor_type.self)

/// Binds values straight into a prepared statement and steps it, for the few writes every
/// received change makes (log entry, routes, record metadata, domain row). GRDB's
/// `StatementArguments` box each value in an existential first; on the ingest path that
/// boxing (and the key path GRDB maps the values through, made anew at each call), not
/// SQLite, was the cost. For statements that return no rows (`execute`), whose rows are only
/// counted as present (`exists`) or read by position (`row`, `forEachRow`), on GRDB's
/// connection (inside its transaction or read).
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

    /// The first row `statement`, a query, returns for the values `bind` adds, as `read`
    /// makes it of the row's columns; nil when there is none. A point lookup without GRDB's
    /// row: building one makes a dictionary of the statement's column names, which for a
    /// domain table's ~35 columns cost more than SQLite's lookup itself.
    static func row<T>(_ db: Database, _ statement: Statement, _ bind: (inout DirectBinding) -> Void,
                       _ read: (DirectRow) throws -> T) throws -> T? {
        var binding = DirectBinding(handle: statement.sqliteStatement)
        sqlite3_reset(binding.handle)
        sqlite3_clear_bindings(binding.handle)
        bind(&binding)
        defer { sqlite3_reset(binding.handle) }
        switch sqlite3_step(binding.handle) {
        case SQLITE_ROW: return try read(DirectRow(handle: binding.handle))
        case SQLITE_DONE: return nil
        case let code: throw error(code, statement)
        }
    }

    /// Every row `statement`, a query, returns for the values `bind` adds, each handed to
    /// `body` (valid only inside it).
    static func forEachRow(_ db: Database, _ statement: Statement, _ bind: (inout DirectBinding) -> Void,
                           _ body: (DirectRow) throws -> Void) throws {
        var binding = DirectBinding(handle: statement.sqliteStatement)
        sqlite3_reset(binding.handle)
        sqlite3_clear_bindings(binding.handle)
        bind(&binding)
        defer { sqlite3_reset(binding.handle) }
        while true {
            switch sqlite3_step(binding.handle) {
            case SQLITE_ROW: try body(DirectRow(handle: binding.handle))
            case SQLITE_DONE: return
            case let code: throw error(code, statement)
            }
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

/// The row a statement stands on (``DirectBinding/row(_:_:_:_:)``), read by column position
/// (0 is the first); valid only inside the read.
struct DirectRow {
    fileprivate let handle: SQLiteStatement

    /// A column's text; nil for NULL.
    func text(_ column: Int) -> String? {
        let index = Int32(column)
        guard sqlite3_column_type(handle, index) != SQLITE_NULL, let bytes = sqlite3_column_text(handle, index) else { return nil }
        return String(decoding: UnsafeBufferPointer(start: bytes, count: Int(sqlite3_column_bytes(handle, index))), as: UTF8.self)
    }

    /// A column's integer; nil for NULL.
    func int64(_ column: Int) -> Int64? {
        let index = Int32(column)
        return sqlite3_column_type(handle, index) == SQLITE_NULL ? nil : sqlite3_column_int64(handle, index)
    }

    /// A column's value in its field's type, as `NodeStore.fieldValue(_:type:)` reads a
    /// GRDB `DatabaseValue`.
    func field(_ column: Int, type: FieldType) -> FieldValue {
        let index = Int32(column)
        switch sqlite3_column_type(handle, index) {
        case SQLITE_NULL:
            return .null
        case SQLITE_INTEGER:
            return NodeStore.fieldValue(integer: sqlite3_column_int64(handle, index), type: type)
        case SQLITE_FLOAT:
            return NodeStore.fieldValue(real: sqlite3_column_double(handle, index), type: type)
        case SQLITE_TEXT:
            return .string(text(column) ?? "")
        default:
            let count = Int(sqlite3_column_bytes(handle, index))
            guard count > 0, let blob = sqlite3_column_blob(handle, index) else { return .string("") }
            return .string(String(decoding: UnsafeRawBufferPointer(start: blob, count: count), as: UTF8.self))
        }
    }
}

import PostgresNIO

/// A statement being built with its parameters: `bind` appends a value and returns its
/// placeholder (`$n`), so SQL assembled from parts (an optional filter, a list of nodes)
/// never puts a value into the text.
struct PostgresSQL {
    private(set) var text = ""
    private(set) var binds = PostgresBindings()

    init(_ text: String = "") { self.text = text }

    mutating func append(_ sql: String) { text += sql }

    /// Binds `value` and returns its placeholder.
    mutating func bind<Value: PostgresDynamicTypeEncodable>(_ value: Value) -> String {
        binds.append(value)
        return "$\(binds.count)"
    }

    mutating func bind<Value: PostgresDynamicTypeEncodable>(_ value: Value?) -> String {
        binds.append(value)
        return "$\(binds.count)"
    }

    var query: PostgresQuery { PostgresQuery(unsafeSQL: text, binds: binds) }
}

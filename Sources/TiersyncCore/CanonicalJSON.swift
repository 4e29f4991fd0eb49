/// Deterministic JSON for field maps: sorted keys, no whitespace. Used for the change log,
/// the wire digest and record digests, where equal content must give equal bytes.
public enum CanonicalJSON {
    public static func object(_ fields: [String: FieldValue]) -> String {
        var out = ByteWriter(capacity: 16 + fields.count * 32)
        out.byte(UInt8(ascii: "{"))
        // Sorted as pairs: looking each key up again would hash it twice.
        for (n, (key, value)) in fields.sorted(by: { $0.key < $1.key }).enumerated() {
            if n > 0 { out.byte(UInt8(ascii: ",")) }
            out.quoted(key)
            out.byte(UInt8(ascii: ":"))
            if case .string(let s) = value { out.quoted(s) } else { out.raw(value.canonical) }
        }
        out.byte(UInt8(ascii: "}"))
        return out.string
    }

    /// A record's field versions as its row keeps them: each version once, with the fields
    /// it covers — `{"<hlc>@<node>":["field",…],…}`, versions and fields sorted. A record's
    /// fields mostly share a version (they were written together), so this is well under
    /// half of one entry per field (``object(_:)-(Dictionary<String,FieldVersion>)``, the
    /// wire's form for `prior`): less for SQLite to write per change.
    public static func groupedVersions(_ versions: [String: FieldVersion]) -> String {
        // Few distinct versions per record: a short list searched in place beats hashing.
        var groups: [(version: FieldVersion, fields: [String])] = []
        for (field, version) in versions.sorted(by: { $0.key < $1.key }) {
            if let g = groups.firstIndex(where: { $0.version == version }) {
                groups[g].fields.append(field)
            } else {
                groups.append((version, [field]))
            }
        }
        var out = ByteWriter(capacity: 16 + groups.count * 32 + versions.count * 12)
        out.byte(UInt8(ascii: "{"))
        for (n, group) in groups.map({ (text: $0.version.description, fields: $0.fields) }).sorted(by: { $0.text < $1.text }).enumerated() {
            if n > 0 { out.byte(UInt8(ascii: ",")) }
            out.quoted(group.text)
            out.raw(":[")
            for (m, field) in group.fields.enumerated() {
                if m > 0 { out.byte(UInt8(ascii: ",")) }
                out.quoted(field)
            }
            out.byte(UInt8(ascii: "]"))
        }
        out.byte(UInt8(ascii: "}"))
        return out.string
    }

    public static func object(_ versions: [String: FieldVersion]) -> String {
        var out = ByteWriter(capacity: 16 + versions.count * 40)
        out.byte(UInt8(ascii: "{"))
        // The fields of a record mostly share a version (they were written together):
        // its text is made once.
        var previous: (FieldVersion, String)?
        for (n, (key, version)) in versions.sorted(by: { $0.key < $1.key }).enumerated() {
            if n > 0 { out.byte(UInt8(ascii: ",")) }
            out.quoted(key)
            out.byte(UInt8(ascii: ":"))
            out.byte(UInt8(ascii: "\""))
            let text: String
            if let previous, previous.0 == version { text = previous.1 } else {
                text = version.description
                previous = (version, text)
            }
            out.raw(text)
            out.byte(UInt8(ascii: "\""))
        }
        out.byte(UInt8(ascii: "}"))
        return out.string
    }
}

/// Builds JSON text as bytes: appending UTF-8 to a byte array is several times cheaper
/// than growing a `String` piece by piece.
struct ByteWriter {
    private(set) var bytes: [UInt8] = []

    init(capacity: Int) { bytes.reserveCapacity(capacity) }

    var string: String { String(decoding: bytes, as: UTF8.self) }

    mutating func byte(_ b: UInt8) { bytes.append(b) }

    mutating func raw(_ s: String) { bytes.append(contentsOf: s.utf8) }

    /// `s` as a JSON string, escaped exactly as ``FieldValue/quote(_:)`` does.
    mutating func quoted(_ s: String) {
        bytes.append(UInt8(ascii: "\""))
        let start = bytes.count
        bytes.append(contentsOf: s.utf8)
        for i in start..<bytes.count {
            let b = bytes[i]
            if b < 0x20 || b == 0x22 || b == 0x5C {
                // Rare: redo this string through the general path.
                bytes.removeSubrange((start - 1)...)
                bytes.append(contentsOf: FieldValue.quote(s).utf8)
                return
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}

extension CanonicalJSON {
    /// Parses a flat JSON object of field values — what ``object(_:)-(Dictionary<String,FieldValue>)``
    /// writes, or any flat JSON object of scalars — without Foundation's decoder, which
    /// dominated reading the change log. Returns nil for anything else.
    public static func parseFields(_ text: String) -> [String: FieldValue]? {
        var parser = FlatObjectParser(text)
        return parser.parse { parser in parser.value() }
    }

    /// Parses what ``groupedVersions(_:)`` writes, or the flat form of ``object(_:)-(Dictionary<String,FieldVersion>)``
    /// (`{"field": "<hlc>@<node>"}`), which rows written before grouped versions hold.
    public static func parseStoredVersions(_ text: String) -> [String: FieldVersion]? {
        var parser = FlatObjectParser(text)
        var result: [String: FieldVersion] = [:]
        let parsed = parser.object { key, p in
            if p.nextIsArray {
                guard let version = FieldVersion(parsing: key) else { return false }
                return p.array { q in
                    guard let field = q.string() else { return false }
                    result[field] = version
                    return true
                }
            }
            guard let text = p.string(), let version = FieldVersion(parsing: text) else { return false }
            result[key] = version
            return true
        }
        return parsed && parser.atEnd ? result : nil
    }

    /// Parses a flat JSON object of field versions (`{"field": "<hlc>@<node>"}`).
    public static func parseVersions(_ text: String) -> [String: FieldVersion]? {
        var parser = FlatObjectParser(text)
        return parser.parse { parser in parser.string().flatMap(FieldVersion.init(parsing:)) }
    }
}

/// A small byte-level JSON scanner: flat objects of scalars for the store, and the wire
/// messages (see ``WireDecoding``).
struct FlatObjectParser {
    /// How deep objects and arrays may nest. The wire's deepest legitimate value is three
    /// levels (`changes[].trail[]`); anything far deeper is hostile, and parsing it by
    /// recursion would exhaust the stack.
    static let maxDepth = 32

    private let bytes: [UInt8]
    private var i = 0
    private var depth = 0
    /// Set when input nested deeper than ``maxDepth``: the caller must refuse it, not try
    /// another (recursive) decoder on it.
    private(set) var tooDeep = false
    /// Set by a reader that met more members than any message it reads has (a change's
    /// fields): the caller refuses the input rather than decode it another, slower way.
    var tooWide = false
    /// Set by a reader that met a key it had read already in the same object: the caller
    /// refuses the input (decoders disagree about which of the two counts).
    var duplicateKey: String?

    /// Notes `key` as given twice and stops the reader (returns false).
    mutating func duplicate(_ key: String) -> Bool {
        if duplicateKey == nil { duplicateKey = key }
        return false
    }

    init(_ text: String) { bytes = Array(text.utf8) }
    init(bytes: [UInt8]) { self.bytes = bytes }

    var atEnd: Bool {
        mutating get {
            skipSpace()
            return i == bytes.count
        }
    }

    /// Reads `{ "key": value, ... }`, handing each key to `field`, which must consume the value.
    mutating func object(_ field: (String, inout FlatObjectParser) -> Bool) -> Bool {
        skipSpace()
        guard take(UInt8(ascii: "{")) else { return false }
        guard enter() else { return false }
        defer { depth -= 1 }
        skipSpace()
        if take(UInt8(ascii: "}")) { return true }
        while true {
            skipSpace()
            guard let key = string() else { return false }
            skipSpace()
            guard take(UInt8(ascii: ":")) else { return false }
            skipSpace()
            guard field(key, &self) else { return false }
            skipSpace()
            if take(UInt8(ascii: ",")) { continue }
            return take(UInt8(ascii: "}"))
        }
    }

    /// True when the next value is an array (nothing consumed).
    var nextIsArray: Bool {
        mutating get {
            skipSpace()
            return i < bytes.count && bytes[i] == UInt8(ascii: "[")
        }
    }

    /// Reads `[ item, ... ]`, handing each item to `item`.
    mutating func array(_ item: (inout FlatObjectParser) -> Bool) -> Bool {
        skipSpace()
        guard take(UInt8(ascii: "[")) else { return false }
        guard enter() else { return false }
        defer { depth -= 1 }
        skipSpace()
        if take(UInt8(ascii: "]")) { return true }
        while true {
            skipSpace()
            guard item(&self) else { return false }
            skipSpace()
            if take(UInt8(ascii: ",")) { continue }
            return take(UInt8(ascii: "]"))
        }
    }

    mutating func integer() -> Int64? {
        skipSpace()
        guard case .int(let n)? = value() else { return nil }
        return n
    }

    mutating func unsigned() -> UInt64? {
        skipSpace()
        let start = i
        let count = skipDigits()
        // No leading zeros, as in JSON.
        guard count == 1 || (count > 1 && bytes[start] != UInt8(ascii: "0")) else { return nil }
        return UInt64(String(decoding: bytes[start..<i], as: UTF8.self))
    }

    mutating func boolean() -> Bool? {
        skipSpace()
        guard case .bool(let b)? = value() else { return nil }
        return b
    }

    /// True (and consumed) when the next value is `null`.
    mutating func null() -> Bool {
        skipSpace()
        return literal("null")
    }

    /// Skips any value (unknown keys are ignored, as `Codable` does).
    mutating func skipValue() -> Bool {
        skipSpace()
        guard i < bytes.count else { return false }
        switch bytes[i] {
        case UInt8(ascii: "{"): return object { _, p in p.skipValue() }
        case UInt8(ascii: "["): return array { p in p.skipValue() }
        default: return value() != nil
        }
    }

    mutating func parse<V>(_ value: (inout FlatObjectParser) -> V?) -> [String: V]? {
        var result: [String: V] = [:]
        skipSpace()
        guard take(UInt8(ascii: "{")) else { return nil }
        skipSpace()
        if take(UInt8(ascii: "}")) { return result }
        while true {
            skipSpace()
            guard let key = string() else { return nil }
            skipSpace()
            guard take(UInt8(ascii: ":")) else { return nil }
            skipSpace()
            guard let v = value(&self) else { return nil }
            result[key] = v
            skipSpace()
            if take(UInt8(ascii: ",")) { continue }
            guard take(UInt8(ascii: "}")) else { return nil }
            skipSpace()
            return i == bytes.count ? result : nil
        }
    }

    mutating func value() -> FieldValue? {
        guard i < bytes.count else { return nil }
        switch bytes[i] {
        case UInt8(ascii: "\""): return string().map(FieldValue.string)
        case UInt8(ascii: "t"): return literal("true") ? .bool(true) : nil
        case UInt8(ascii: "f"): return literal("false") ? .bool(false) : nil
        case UInt8(ascii: "n"): return literal("null") ? .null : nil
        default: return number()
        }
    }

    mutating func string() -> String? {
        guard take(UInt8(ascii: "\"")) else { return nil }
        // Most strings (every key, most values) are plain ASCII without escapes: made from
        // the bytes in place, in one copy. ASCII is valid UTF-8, so nothing is repaired.
        // Anything else (an escape, a control character, a byte of a multi-byte character)
        // is read by the general path below, from the same start.
        var end = i
        while end < bytes.count {
            let b = bytes[end]
            if b == UInt8(ascii: "\"") {
                let text = bytes.withUnsafeBufferPointer { String(decoding: UnsafeBufferPointer(rebasing: $0[i..<end]), as: UTF8.self) }
                i = end + 1
                return text
            }
            if b == UInt8(ascii: "\\") || b < 0x20 || b >= 0x80 { break }
            end += 1
        }
        var out: [UInt8] = []
        while i < bytes.count {
            let b = bytes[i]
            i += 1
            switch b {
            case UInt8(ascii: "\""):
                // Invalid UTF-8 is refused, as JSONDecoder does, not repaired.
                return String(validating: out, as: UTF8.self)
            case UInt8(ascii: "\\"):
                guard i < bytes.count else { return nil }
                let e = bytes[i]
                i += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "u"):
                    guard let unit = hex4() else { return nil }
                    var scalar = unit
                    if (0xD800..<0xDC00).contains(unit) {
                        // A surrogate pair: \uD83D\uDE00.
                        guard take(UInt8(ascii: "\\")), take(UInt8(ascii: "u")), let low = hex4(), (0xDC00..<0xE000).contains(low) else { return nil }
                        scalar = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                    }
                    guard let u = Unicode.Scalar(scalar) else { return nil }
                    out.append(contentsOf: Array(String(Character(u)).utf8))
                default: return nil
                }
            case 0..<0x20:
                // JSON allows control characters in strings only escaped (as JSONDecoder does).
                return nil
            default:
                out.append(b)
            }
        }
        return nil
    }

    /// A JSON number, by JSON's grammar exactly (`-? (0 | [1-9][0-9]*) (.[0-9]+)? ([eE][+-]?[0-9]+)?`,
    /// as JSONDecoder reads them): `+6`, `06` and `1.` are not numbers.
    private mutating func number() -> FieldValue? {
        let start = i
        _ = take(UInt8(ascii: "-"))
        guard i < bytes.count else { return nil }
        if bytes[i] == UInt8(ascii: "0") { i += 1 } else if skipDigits() == 0 { return nil }
        var isDouble = false
        if take(UInt8(ascii: ".")) {
            isDouble = true
            guard skipDigits() > 0 else { return nil }
        }
        if take(UInt8(ascii: "e")) || take(UInt8(ascii: "E")) {
            isDouble = true
            if !take(UInt8(ascii: "+")) { _ = take(UInt8(ascii: "-")) }
            guard skipDigits() > 0 else { return nil }
        }
        let text = String(decoding: bytes[start..<i], as: UTF8.self)
        if !isDouble, let n = Int64(text) { return .int(n) }
        // JSON has no infinity: a number beyond Double's range (1e999) is not a number
        // here either (it would not survive re-encoding, nor JSONEncoder in the quarantine).
        guard let d = Double(text), d.isFinite else { return nil }
        return .double(d)
    }

    /// Skips decimal digits; returns how many.
    private mutating func skipDigits() -> Int {
        let start = i
        while i < bytes.count, bytes[i] >= UInt8(ascii: "0"), bytes[i] <= UInt8(ascii: "9") { i += 1 }
        return i - start
    }

    private mutating func hex4() -> UInt32? {
        guard i + 4 <= bytes.count, let v = UInt32(String(decoding: bytes[i..<i + 4], as: UTF8.self), radix: 16) else { return nil }
        i += 4
        return v
    }

    private mutating func literal(_ word: String) -> Bool {
        let w = Array(word.utf8)
        guard i + w.count <= bytes.count, Array(bytes[i..<i + w.count]) == w else { return false }
        i += w.count
        return true
    }

    /// One level deeper, or false (and ``tooDeep``) past ``maxDepth``.
    private mutating func enter() -> Bool {
        guard depth < Self.maxDepth else {
            tooDeep = true
            return false
        }
        depth += 1
        return true
    }

    private mutating func take(_ b: UInt8) -> Bool {
        guard i < bytes.count, bytes[i] == b else { return false }
        i += 1
        return true
    }

    private mutating func skipSpace() {
        while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x0A || bytes[i] == 0x0D || bytes[i] == 0x09 { i += 1 }
    }
}

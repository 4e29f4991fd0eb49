/// JSON as the fuzzer builds and mutates it: object keys keep their order and may repeat,
/// strings are raw bytes (which may be invalid UTF-8), numbers are their text (which may
/// be no number at all), and `raw` splices arbitrary bytes in place of a value.
indirect enum JSONTree {
    case null
    case bool(Bool)
    case number(String)
    case string([UInt8])
    case array([JSONTree])
    case object([(key: [UInt8], value: JSONTree)])
    case raw([UInt8])

    static func string(_ s: String) -> JSONTree { .string(Array(s.utf8)) }

    var isContainer: Bool {
        switch self {
        case .array, .object: return true
        default: return false
        }
    }

    /// Writes the tree as JSON text. Strings escape what JSON requires (`"`, `\`, control
    /// characters) and nothing else, so invalid UTF-8 goes out as it is. `spaced` puts
    /// whitespace between tokens.
    func write(into out: inout [UInt8], spaced: Bool = false) {
        switch self {
        case .null: out += Array("null".utf8)
        case .bool(let b): out += Array((b ? "true" : "false").utf8)
        case .number(let text): out += Array(text.utf8)
        case .raw(let bytes): out += bytes
        case .string(let bytes): Self.quote(bytes, into: &out)
        case .array(let items):
            out.append(UInt8(ascii: "["))
            for (i, item) in items.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                if spaced { out += [0x20, 0x0A, 0x09] }
                item.write(into: &out, spaced: spaced)
            }
            if spaced { out.append(0x0D) }
            out.append(UInt8(ascii: "]"))
        case .object(let members):
            out.append(UInt8(ascii: "{"))
            for (i, member) in members.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                if spaced { out += [0x0A, 0x20] }
                Self.quote(member.key, into: &out)
                if spaced { out.append(0x20) }
                out.append(UInt8(ascii: ":"))
                if spaced { out.append(0x09) }
                member.value.write(into: &out, spaced: spaced)
            }
            if spaced { out.append(0x0A) }
            out.append(UInt8(ascii: "}"))
        }
    }

    var bytes: [UInt8] {
        var out: [UInt8] = []
        write(into: &out)
        return out
    }

    static func quote(_ bytes: [UInt8], into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for b in bytes {
            switch b {
            case UInt8(ascii: "\""): out += [UInt8(ascii: "\\"), b]
            case UInt8(ascii: "\\"): out += [UInt8(ascii: "\\"), b]
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                out += [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"), hex[Int(b >> 4)], hex[Int(b & 15)]]
            default: out.append(b)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    /// Reads JSON text into a tree (keys in order, duplicates kept), or nil for anything
    /// that is not JSON or nests deeper than `maxDepth` (a seed like that is only mutated
    /// byte by byte).
    static func parse(_ bytes: [UInt8], maxDepth: Int = 48) -> JSONTree? {
        var reader = Reader(bytes: bytes, maxDepth: maxDepth)
        guard let value = reader.value(depth: 0) else { return nil }
        reader.space()
        return reader.i == bytes.count ? value : nil
    }

    private struct Reader {
        let bytes: [UInt8]
        let maxDepth: Int
        var i = 0

        init(bytes: [UInt8], maxDepth: Int) {
            self.bytes = bytes
            self.maxDepth = maxDepth
        }

        mutating func space() {
            while i < bytes.count, [0x20, 0x0A, 0x0D, 0x09].contains(bytes[i]) { i += 1 }
        }

        mutating func take(_ c: UInt8) -> Bool {
            space()
            guard i < bytes.count, bytes[i] == c else { return false }
            i += 1
            return true
        }

        mutating func literal(_ word: String) -> Bool {
            let w = Array(word.utf8)
            guard i + w.count <= bytes.count, Array(bytes[i..<i + w.count]) == w else { return false }
            i += w.count
            return true
        }

        mutating func value(depth: Int) -> JSONTree? {
            guard depth <= maxDepth else { return nil }
            space()
            guard i < bytes.count else { return nil }
            switch bytes[i] {
            case UInt8(ascii: "{"):
                i += 1
                var members: [(key: [UInt8], value: JSONTree)] = []
                if take(UInt8(ascii: "}")) { return .object(members) }
                repeat {
                    space()
                    guard let key = string(), take(UInt8(ascii: ":")), let v = value(depth: depth + 1) else { return nil }
                    members.append((key, v))
                } while take(UInt8(ascii: ","))
                return take(UInt8(ascii: "}")) ? .object(members) : nil
            case UInt8(ascii: "["):
                i += 1
                var items: [JSONTree] = []
                if take(UInt8(ascii: "]")) { return .array(items) }
                repeat {
                    guard let v = value(depth: depth + 1) else { return nil }
                    items.append(v)
                } while take(UInt8(ascii: ","))
                return take(UInt8(ascii: "]")) ? .array(items) : nil
            case UInt8(ascii: "\""):
                return string().map(JSONTree.string)
            case UInt8(ascii: "t"): return literal("true") ? .bool(true) : nil
            case UInt8(ascii: "f"): return literal("false") ? .bool(false) : nil
            case UInt8(ascii: "n"): return literal("null") ? .null : nil
            default:
                let start = i
                while i < bytes.count, Array("0123456789+-.eE".utf8).contains(bytes[i]) { i += 1 }
                return i > start ? .number(String(decoding: bytes[start..<i], as: UTF8.self)) : nil
            }
        }

        /// A string's content as bytes, escapes resolved (a `\u` escape as UTF-8; a lone
        /// surrogate as its three-byte encoding, which is not valid UTF-8: kept as such).
        mutating func string() -> [UInt8]? {
            guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { return nil }
            i += 1
            var out: [UInt8] = []
            while i < bytes.count {
                let b = bytes[i]
                i += 1
                if b == UInt8(ascii: "\"") { return out }
                guard b == UInt8(ascii: "\\") else { out.append(b); continue }
                guard i < bytes.count else { return nil }
                let e = bytes[i]
                i += 1
                switch e {
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "u"):
                    guard i + 4 <= bytes.count, let v = UInt32(String(decoding: bytes[i..<i + 4], as: UTF8.self), radix: 16) else { return nil }
                    i += 4
                    if let scalar = Unicode.Scalar(v) {
                        out += Array(String(Character(scalar)).utf8)
                    } else {
                        out += [UInt8(0xE0 | (v >> 12)), UInt8(0x80 | ((v >> 6) & 0x3F)), UInt8(0x80 | (v & 0x3F))]
                    }
                default: out.append(e)
                }
            }
            return nil
        }
    }
}

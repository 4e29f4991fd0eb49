import TiersyncCore

/// The tenant the fuzzer's inputs are aimed at: HQ, two countries, three dealers. Node
/// names are distinctive so a refusal that names a node outside the pusher's scope can be
/// recognised in its message.
enum World {
    static let tenant: TenantID = "acme"
    static let root: NodeID = "hq"
    static let tree = NodeTree(parents: [
        "hq": nil, "cty-de": "hq", "dlr-alpha": "cty-de", "dlr-bravo": "cty-de", "cty-fr": "hq", "dlr-fox": "cty-fr",
    ])
    static let nodes: [NodeID] = tree.parents.keys.sorted()
    /// Who pushes: a dealer, and a country relaying its dealers' changes.
    static let pushers: [NodeID] = ["dlr-alpha", "cty-de"]
    /// The receiver's clock for every judged batch (2026-01-01T00:00:00Z): a fixed time,
    /// so an input is judged alike when it is replayed.
    static let nowMillis: UInt64 = 1_767_225_600_000
    /// Records the store holds before each batch.
    static let baselineIDs = ["base-alpha", "base-bravo", "base-fox", "base-none", "base-gone"]
    static let recordIDs = ["c-1", "c-2", "c-3", "c-4"] + baselineIDs
}

/// Makes the fuzzer's inputs: arbitrary bytes, valid push batches, and valid batches (or
/// seeds) mutated structurally and byte by byte.
struct Generator {
    var rng: FuzzRandom
    let corpus: [[UInt8]]

    enum Kind: String, CaseIterable {
        case bytes, valid, structural, corpus, flat, pull
    }

    mutating func input() -> (kind: Kind, bytes: [UInt8], pusher: NodeID) {
        let pusher = rng.pick(World.pushers)
        let roll = rng.below(100)
        let kind: Kind = switch roll {
        case 0..<8: .bytes
        case 8..<38: .valid
        case 38..<70: .structural
        case 70..<88: corpus.isEmpty ? .structural : .corpus
        case 88..<95: .flat
        default: .pull
        }
        var bytes: [UInt8]
        switch kind {
        case .bytes:
            bytes = randomBytes()
        case .valid:
            bytes = pushTree(pusher: pusher).bytes
        case .structural:
            var tree = pushTree(pusher: pusher)
            for _ in 0..<rng.int(1...4) { tree = mutate(tree) }
            var out: [UInt8] = []
            tree.write(into: &out, spaced: rng.chance(0.1))
            bytes = rng.chance(0.25) ? mutateBytes(out) : out
        case .corpus:
            let seed = rng.pick(corpus)
            if rng.chance(0.6), var tree = JSONTree.parse(seed) {
                for _ in 0..<rng.int(1...3) { tree = mutate(tree) }
                bytes = tree.bytes
                if rng.chance(0.2) { bytes = mutateBytes(bytes) }
            } else {
                bytes = mutateBytes(seed)
            }
        case .flat:
            var tree = flatTree()
            if rng.chance(0.5) { tree = mutate(tree) }
            bytes = rng.chance(0.2) ? mutateBytes(tree.bytes) : tree.bytes
        case .pull:
            var tree = pullTree(pusher: pusher)
            if rng.chance(0.5) { tree = mutate(tree) }
            bytes = tree.bytes
        }
        return (kind, bytes, pusher)
    }

    // MARK: Valid messages

    /// A push batch as an agent (or a country relaying) might send it, mostly valid for
    /// the store too, with some changes from outside the pusher's subtree, out of scope,
    /// ahead of the clock, repeated or reusing a sequence number.
    mutating func pushRequest(pusher: NodeID) -> PushRequest {
        let count = rng.chance(0.05) ? rng.int(20...200) : rng.int(0...8)
        var seq: Int64 = rng.pick([1, 1, 2, 3, 4, 5, 6, Int64(rng.int(1...100)), (1 << 53) - 3])
        var changes: [Change] = []
        for _ in 0..<count {
            if !changes.isEmpty, rng.chance(0.08) {
                changes.append(rng.pick(changes))  // redelivered in the same batch
                continue
            }
            var c = change(pusher: pusher, seq: seq)
            if !changes.isEmpty, rng.chance(0.04) { c.originSeq = rng.pick(changes).originSeq }  // a reused number
            changes.append(c)
            seq += 1
        }
        let tenant: TenantID? = rng.chance(0.7) ? nil : (rng.chance(0.9) ? World.tenant : "globex")
        return PushRequest(tenant: tenant, through: changes.last?.originSeq ?? Int64(rng.int(0...10)), changes: changes)
    }

    mutating func change(pusher: NodeID, seq: Int64) -> Change {
        let subtree = World.tree.subtree(of: pusher).sorted()
        let origin = rng.chance(0.85) ? rng.pick(subtree) : rng.pick(World.nodes)
        let table = rng.chance(0.7) ? DomainSchema.customers : rng.pick(DomainSchema.schema.tables)
        let id = rng.chance(0.8) ? rng.pick(World.recordIDs) : "r-\(rng.below(40))"
        let ahead = rng.chance(0.08)
        let wall = ahead ? World.nowMillis + UInt64(rng.int(1...200_000)) : World.nowMillis - UInt64(rng.int(0...120_000))
        let hlc = HLCTimestamp(wallMillis: wall, counter: UInt16(rng.below(4)))
        if rng.chance(0.03) {
            // A well-formed erasure request for a customer the world may hold (in the pusher's
            // scope or not): it erases there, and later changes of the customer are refused.
            let fields = Erasure.markerFields(table: .customers, id: rng.pick(World.recordIDs), requestedBy: rng.pick(subtree), at: "2026-12-03T00:00:00Z")
            return Change(origin: origin, originSeq: seq, hlc: hlc, table: DomainSchema.erasures.name, recordID: "era-\(rng.below(50))",
                          op: .upsert, fields: fields)
        }
        let op: Change.Operation = rng.chance(0.12) ? .delete : .upsert
        var fields: [String: FieldValue] = [:]
        var prior: [String: FieldVersion] = [:]
        if op == .upsert {
            for _ in 0..<rng.int(1...4) {
                let field = rng.pick(table.fields)
                var generated = value(of: field.type, routeTo: subtree)
                // Mostly within a field's range (priority 1…5), sometimes outside it.
                if let range = field.range, case .int = generated, rng.chance(0.9) {
                    generated = .int(range.lowerBound + Int64(rng.below(Int(range.upperBound - range.lowerBound) + 1)))
                }
                fields[field.name] = generated
            }
            if rng.chance(0.12) {
                // A value the schema refuses: an unknown field, the wrong type, too long, a
                // NUL, a bad node id, date or timestamp, a number out of range.
                let field = rng.pick(table.fields)
                switch rng.below(7) {
                case 0: fields[rng.pick(["nope", "id", "ts_versions", "Last_Name", ""])] = .string("x")
                case 1: fields[field.name] = rng.pick([.int(1), .bool(true), .double(1.5), .string("1")])
                case 2:
                    if case .string(let max) = field.type { fields[field.name] = .string(String(repeating: "y", count: max + 1)) }
                case 3: fields[field.name] = .string("a\u{0}b")
                case 4: fields[rng.pick(table.routeFields.isEmpty ? [field.name] : table.routeFields)] = .string(rng.pick(["bad node", "", "NODE"]))
                case 5: fields[field.name] = .string(rng.pick(["2026-02-30", "2026-13-01T00:00:00Z", "yesterday"]))
                default: fields[field.name] = .double(rng.chance(0.5) ? .infinity : -.infinity)
                }
            }
            if let route = table.routeFields.first, rng.chance(0.5) {
                fields[route] = .string(rng.chance(0.8) ? rng.pick(subtree).rawValue : rng.pick(World.nodes).rawValue)
            }
            if rng.chance(0.25), let name = fields.keys.sorted().first {
                prior[name] = FieldVersion(hlc: HLCTimestamp(wallMillis: wall - UInt64(rng.int(1...1_000)), counter: 0), node: rng.pick(World.nodes))
            }
        }
        var trail: [Hop] = []
        if rng.chance(0.2) {
            // Mostly nodes of the pusher's subtree, sometimes any (a forged path through HQ).
            for _ in 0..<rng.int(1...3) {
                trail.append(Hop(node: rng.chance(0.2) ? rng.pick(World.nodes) : rng.pick(subtree), atMillis: wall + UInt64(rng.below(1_000))))
            }
        }
        return Change(origin: origin, originSeq: seq, hlc: hlc, table: table.name, recordID: id, op: op, fields: fields, prior: prior, trail: trail)
    }

    mutating func value(of type: FieldType, routeTo subtree: [NodeID]) -> FieldValue {
        if rng.chance(0.05) { return .null }
        switch type {
        case .string(let max):
            let words = ["Anna", "Müller", "Dubois", "+49 30 1234567", "kunde@example.com", "Zürich", "😀", "\"quoted\"", "back\\slash", "tab\there", "DE", ""]
            var s = rng.pick(words)
            if rng.chance(0.1) { s = String(repeating: "x", count: rng.int(1...max)) }
            return .string(String(s.prefix(max)))
        case .int: return .int(Int64(rng.int(-1_000...1_000)))
        case .double: return rng.chance(0.3) ? .int(Int64(rng.below(100_000))) : .double(Double(rng.below(10_000_000)) / 100)
        case .bool: return .bool(rng.chance(0.5))
        case .timestamp: return .string(rng.pick(["2026-11-22T10:15:00Z", "2025-12-31T23:59:59.250Z", "2026-01-01T00:00:00+02:00"]))
        case .date: return .string(rng.pick(["2026-11-22", "2024-02-29", "2025-01-01"]))
        case .oneOf(let options): return .string(rng.pick(options))
        case .node: return .string(rng.chance(0.8) ? rng.pick(subtree).rawValue : rng.pick(World.nodes).rawValue)
        }
    }

    mutating func pushTree(pusher: NodeID) -> JSONTree {
        let push = pushRequest(pusher: pusher)
        var members: [(key: [UInt8], value: JSONTree)] = []
        if let tenant = push.tenant { members.append((Array("tenant".utf8), .string(tenant.rawValue))) }
        else if rng.chance(0.1) { members.append((Array("tenant".utf8), .null)) }
        members.append((Array("through".utf8), .number(String(push.through))))
        members.append((Array("changes".utf8), .array(push.changes.map { tree(of: $0) })))
        if rng.chance(0.3) { members.shuffle(using: &rng) }
        return .object(members)
    }

    mutating func pullTree(pusher: NodeID) -> JSONTree {
        let changes = pushRequest(pusher: pusher).changes
        var members: [(key: [UInt8], value: JSONTree)] = [
            (Array("changes".utf8), .array(changes.map { tree(of: $0) })),
            (Array("nextCursor".utf8), .number(String(rng.int(0...100_000)))),
            (Array("more".utf8), .bool(rng.chance(0.5))),
        ]
        if rng.chance(0.7) { members.append((Array("head".utf8), rng.chance(0.1) ? .null : .number(String(rng.int(0...100_000))))) }
        if rng.chance(0.5) {
            // A parent's history, or something else in its place (read as none).
            let history = rng.chance(0.7) ? String(rng.int(0...Int(UInt32.max)), radix: 16) : rng.pick(["", "ABC", "zz", "0x1f", String(repeating: "a", count: 33)])
            members.append((Array("history".utf8), rng.chance(0.1) ? .null : .string(Array(history.utf8))))
        }
        if rng.chance(0.3) { members.shuffle(using: &rng) }
        return .object(members)
    }

    mutating func tree(of c: Change) -> JSONTree {
        var members: [(key: [UInt8], value: JSONTree)] = [
            (Array("origin".utf8), .string(c.origin.rawValue)),
            (Array("seq".utf8), .number(String(c.originSeq))),
            (Array("hlc".utf8), .number(String(c.hlc.rawValue))),
            (Array("table".utf8), .string(c.table)),
            (Array("id".utf8), .string(c.recordID)),
            (Array("op".utf8), .string(c.op.rawValue)),
        ]
        if !c.fields.isEmpty || rng.chance(0.05) {
            members.append((Array("fields".utf8), .object(c.fields.sorted { $0.key < $1.key }.map { (Array($0.key.utf8), Self.tree(of: $0.value)) })))
        }
        if !c.prior.isEmpty { members.append((Array("prior".utf8), .object(c.prior.map { (Array($0.key.utf8), .string($0.value.description)) }))) }
        if !c.trail.isEmpty {
            members.append((Array("trail".utf8), .array(c.trail.map {
                .object([(Array("node".utf8), .string($0.node.rawValue)), (Array("at".utf8), .number(String($0.atMillis)))])
            })))
        }
        if rng.chance(0.3) { members.shuffle(using: &rng) }
        return .object(members)
    }

    static func tree(of value: FieldValue) -> JSONTree {
        switch value {
        case .null: .null
        case .bool(let b): .bool(b)
        case .int(let i): .number(String(i))
        case .double(let d): .number(d.isFinite ? "\(d)" : (d > 0 ? "1e999" : "-1e999"))
        case .string(let s): .string(s)
        }
    }

    /// Flat objects as the store keeps them: field values, field versions (flat and
    /// grouped by version), and a change's trail.
    mutating func flatTree() -> JSONTree {
        switch rng.below(4) {
        case 0:
            let c = change(pusher: rng.pick(World.pushers), seq: 1)
            return .object(c.fields.map { (Array($0.key.utf8), Self.tree(of: $0.value)) })
        case 1:
            return .object((0..<rng.int(0...4)).map { _ in (Array(rng.pick(["last_name", "city", "phone", "owning_dealer"]).utf8), .string(version())) })
        case 2:
            return .object((0..<rng.int(0...3)).map { _ in (Array(version().utf8), .array((0..<rng.int(0...3)).map { _ in .string(rng.pick(["last_name", "city", "phone"])) })) })
        default:
            return .array((0..<rng.int(0...4)).map { _ in
                .object([(Array("node".utf8), .string(rng.pick(World.nodes).rawValue)), (Array("at".utf8), .number(String(World.nowMillis - UInt64(rng.below(10_000)))))])
            })
        }
    }

    mutating func version() -> String {
        "\(HLCTimestamp(wallMillis: World.nowMillis - UInt64(rng.below(100_000)), counter: UInt16(rng.below(3))).rawValue)@\(rng.pick(World.nodes))"
    }

    // MARK: Structural mutations

    /// The tree with one thing changed somewhere: a value replaced by a hostile one, a key
    /// added, repeated, renamed or removed, an element repeated, dropped or moved.
    mutating func mutate(_ tree: JSONTree, depth: Int = 0) -> JSONTree {
        switch tree {
        case .object(var members) where !members.isEmpty && rng.chance(0.75):
            if rng.chance(0.3) { return mutateObject(members) }
            let k = rng.below(members.count)
            members[k].value = mutate(members[k].value, depth: depth + 1)
            return .object(members)
        case .array(var items) where !items.isEmpty && rng.chance(0.75):
            if rng.chance(0.3) { return mutateArray(items) }
            let k = rng.below(items.count)
            items[k] = mutate(items[k], depth: depth + 1)
            return .array(items)
        case .object(let members) where rng.chance(0.5):
            return mutateObject(members)
        default:
            return hostileValue(replacing: tree)
        }
    }

    mutating func mutateObject(_ members: [(key: [UInt8], value: JSONTree)]) -> JSONTree {
        var members = members
        let knownKeys = ["tenant", "through", "changes", "origin", "seq", "hlc", "table", "id", "op", "fields", "prior", "trail",
                         "node", "at", "nextCursor", "more", "head", "history", "last_name", "owning_dealer", "token", "via"]
        switch rng.below(7) {
        case 0:  // an unknown (or misplaced known) key, anywhere
            let key = rng.chance(0.5) ? rng.pick(knownKeys) : rng.pick(["x", "", "__proto__", "Seq", "se\u{0}q", "ünknown", String(repeating: "k", count: 300)])
            let at = rng.below(members.count + 1)
            members.insert((Array(key.utf8), hostileValue(replacing: .null)), at: at)
        case 1:  // a key twice, with another value
            guard !members.isEmpty else { return .object(members) }
            let m = rng.pick(members)
            members.insert((m.key, rng.chance(0.5) ? hostileValue(replacing: m.value) : m.value), at: rng.below(members.count + 1))
        case 2:  // a key dropped
            guard !members.isEmpty else { return .object(members) }
            members.remove(at: rng.below(members.count))
        case 3:  // a key renamed (case, escape, whitespace)
            guard !members.isEmpty else { return .object(members) }
            let k = rng.below(members.count)
            let name = String(decoding: members[k].key, as: UTF8.self)
            members[k].key = Array(rng.pick([name.uppercased(), " " + name, name + "\u{0}", name + "\u{301}", String(name.dropLast())]).utf8)
        case 4:
            members.shuffle(using: &rng)
        case 5:  // many keys
            for i in 0..<(rng.chance(0.9) ? rng.int(2...50) : rng.int(50...2_000)) { members.append((Array("k\(i)".utf8), .number(String(i)))) }
        default:  // the object replaced by another shape
            return hostileValue(replacing: .object(members))
        }
        return .object(members)
    }

    mutating func mutateArray(_ items: [JSONTree]) -> JSONTree {
        var items = items
        switch rng.below(5) {
        case 0: items.insert(rng.pick(items), at: rng.below(items.count + 1))
        case 1: items.remove(at: rng.below(items.count))
        case 2: items.shuffle(using: &rng)
        case 3:  // one element many times (a big batch of the same change)
            let item = rng.pick(items)
            items += Array(repeating: item, count: rng.chance(0.9) ? rng.int(2...50) : rng.int(50...3_000))
        default: items.insert(hostileValue(replacing: .null), at: rng.below(items.count + 1))
        }
        return .array(items)
    }

    static let hostileNumbers = [
        "-1", "0", "-0", "1", "9223372036854775807", "9223372036854775808", "-9223372036854775808", "-9223372036854775809",
        "18446744073709551615", "18446744073709551616", "99999999999999999999", "9007199254740992", "9007199254740993",
        "1e999", "-1e999", "1e-999", "1E400", "1.5", "0.0", "1.0", "1e2", "01", "+1", "-", "--1", "1.", ".5", "1e", "1e+",
        "0x10", "NaN", "Infinity", "-Infinity", "1e+308", "2.2250738585072014e-308", "4.9e-324", "123456789012345678901234567890",
        "281474976710655", "281474976710656", "17592186044415", "1767225600000",
    ]

    /// A value an attacker (or a broken client) might put where `original` was.
    mutating func hostileValue(replacing original: JSONTree) -> JSONTree {
        switch rng.below(12) {
        case 0, 1: return .number(rng.pick(Self.hostileNumbers))
        case 2:  // the wrong type
            return rng.pick([.null, .bool(true), .bool(false), .string("1"), .string(""), .array([]), .object([]),
                             .array([.number("1")]), .object([(Array("a".utf8), .number("1"))]), .number("1")])
        case 3:  // a long string
            let n = rng.chance(0.95) ? rng.int(100...2_000) : rng.int(2_000...300_000)
            let unit: [UInt8] = rng.pick([[0x78], Array("é".utf8), [0x20], Array("😀".utf8)])
            return .string(Array([[UInt8]](repeating: unit, count: n).joined()))
        case 4:  // invalid UTF-8 and other odd bytes inside a string
            var bytes: [UInt8] = Array("d".utf8)
            for _ in 0..<rng.int(1...6) {
                bytes += rng.pick([[0xFF], [0xC0, 0xAF], [0xED, 0xA0, 0x80], [0xE2, 0x82], [0xF4, 0x90, 0x80, 0x80], [0x80], [0x00], [0x7F], [0x1B], [0xC3]])
            }
            return .string(bytes)
        case 5:  // escapes as they are written: lone surrogates, NUL, bad escapes, unterminated
            return .raw(Array(rng.pick([#""\ud800""#, #""\udc00x""#, #""\u0000""#, #""\uDBFF\uDFFF""#, #""\x41""#, #""\u12""#,
                                        #""abc"#, #""\"#, #""a\/b""#, #""\uD83D\uDE00""#, "\"tab\there\"", "\"new\nline\""]).utf8))
        case 6:  // deep nesting, closed or not, arrays or objects
            let depth = rng.chance(0.9) ? rng.pick([31, 32, 33, 34, 64, 100, 513]) : rng.pick([1_000, 10_000, 100_000])
            let objects = rng.chance(0.4)
            let open = objects ? Array(#"{"a":"#.utf8) : [UInt8(ascii: "[")]
            var out: [UInt8] = []
            out.reserveCapacity(depth * (open.count + 1) + 1)
            for _ in 0..<depth { out += open }
            out += Array("1".utf8)
            if rng.chance(0.8) { out += Array(repeating: objects ? UInt8(ascii: "}") : UInt8(ascii: "]"), count: depth) }
            return .raw(out)
        case 7:  // node ids, valid and not, inside and outside the scope
            return .string(rng.pick(["hq", "cty-fr", "dlr-fox", "dlr-bravo", "dlr-alpha", "", "HQ", "dlr alpha", "ünï", "a/b",
                                     String(repeating: "n", count: 200), "dlr-alpha\u{0}"]))
        case 8:  // record ids and tables
            return .string(rng.pick(["", " ", "a b", String(repeating: "i", count: 129), "c-1", "base-bravo", "base-fox",
                                     "nope", "ts_changes", "sqlite_master", "customers\u{0}", "\"; DROP TABLE customers; --", "Customers"]))
        case 9:  // versions and timestamps
            return .string(rng.pick(["1@dlr-alpha", "@", "x@y", "18446744073709551616@dlr-alpha", "-1@dlr-alpha", "1@", "1@bad id",
                                     "18446744073709551615@hq", "2026-02-30", "9999-99-99T99:99:99Z", "2026-11-22T10:15:00.123Z",
                                     "2026-11-22T10:15:00Z", "0000-00-00", "delete", "upsert", "UPSERT", "merge"]))
        case 10:  // a valid-looking value of another field's type
            return Self.tree(of: value(of: rng.pick(DomainSchema.customers.fields).type, routeTo: World.nodes))
        default:  // raw garbage in place of a value
            return .raw((0..<rng.int(0...8)).map { _ in rng.pick(Array(#"{}[]":,\ 0-1enulltrue"#.utf8)) })
        }
    }

    // MARK: Byte mutations

    mutating func randomBytes() -> [UInt8] {
        let n = rng.size(max: 4_096)
        if rng.chance(0.5) { return (0..<n).map { _ in rng.byte() } }
        let alphabet = Array(#"{}[]":,0123456789-+.eE tfnrulsa\/"#.utf8) + [0x0A, 0x80, 0xFF]
        return (0..<n).map { _ in rng.pick(alphabet) }
    }

    static let tokens: [[UInt8]] = [
        "{", "}", "[", "]", "\"", "\\", ":", ",", "null", "true", "1e999", "-1", "\\u0000", "\\ud800", "\u{0}",
        #""seq":"#, #""changes":[]"#, #""fields":{}"#, "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", #"{"x":"#,
    ].map { Array($0.utf8) }

    /// The bytes with one to four edits: bits flipped, bytes set, inserted, deleted or
    /// repeated, tokens inserted, cut short, or spliced with another input.
    mutating func mutateBytes(_ input: [UInt8]) -> [UInt8] {
        var b = input
        for _ in 0..<rng.int(1...4) {
            let at = rng.below(b.count + 1)
            switch rng.below(9) {
            case 0 where !b.isEmpty: b[rng.below(b.count)] ^= UInt8(1 << rng.below(8))
            case 1 where !b.isEmpty: b[rng.below(b.count)] = rng.byte()
            case 2: b.insert(contentsOf: (0..<rng.int(1...8)).map { _ in rng.byte() }, at: at)
            case 3 where !b.isEmpty:
                let n = min(b.count - min(at, b.count - 1), rng.int(1...16))
                b.removeSubrange(min(at, b.count - 1)..<min(at, b.count - 1) + n)
            case 4 where !b.isEmpty:
                let start = rng.below(b.count), n = min(b.count - start, rng.int(1...64))
                b.insert(contentsOf: b[start..<start + n], at: at)
            case 5: b.insert(contentsOf: rng.pick(Self.tokens), at: at)
            case 6: b = Array(b.prefix(at))
            case 7 where !corpus.isEmpty:
                let other = rng.pick(corpus)
                let from = rng.below(other.count + 1)
                b = Array(b.prefix(at)) + Array(other[from...])
            default:
                if !b.isEmpty { b[rng.below(b.count)] = rng.pick(Array("{}[]\":,0".utf8)) }
            }
        }
        return b
    }
}

/// Fast decoding of the two high-volume wire messages. Foundation's `JSONDecoder` was a
/// seventh of the hub's ingest time and a tenth of a bootstrap; this reads the bytes once.
/// It accepts exactly what the `Codable` conformances accept and returns nil for anything
/// else — callers then decode with `JSONDecoder`, whose errors name the problem. A push
/// with a key given twice is refused (``Outcome/duplicateKey(_:)``): `JSONDecoder` kept the
/// last `origin` given but the first of a field's values, and one body meant two things.
public enum WireDecoding {
    /// What the byte-level decoder made of a body.
    public enum Outcome<Message> {
        case decoded(Message)
        /// Objects or arrays nested deeper than any wire message does (``nestingLimit``):
        /// refuse the body; handing it to a recursive decoder could exhaust the stack.
        case tooDeep
        /// A change naming more fields (or prior versions) than ``Change/maxFields``: refuse
        /// the body before anything else reads it. Every field would be refused anyway
        /// (no table has that many), and reading them cost a country seconds of its two
        /// threads per push, which its other dealers waited for.
        case tooManyFields
        /// A key given twice in one object of the request (a change's `origin`, one of its
        /// fields): refuse the body, naming the key.
        case duplicateKey(String)
        /// Not a message this decoder reads (a type mismatch, a missing field, invalid
        /// JSON): `JSONDecoder` will name the problem.
        case unrecognised
    }

    /// How deep objects and arrays may nest in a body this decoder accepts.
    public static var nestingLimit: Int { FlatObjectParser.maxDepth }

    public static func pushRequest(_ bytes: [UInt8]) -> PushRequest? {
        if case .decoded(let push) = decodePushRequest(bytes) { return push }
        return nil
    }

    /// Decodes `POST /v1/push`'s body, telling a body nested too deeply apart from one
    /// that is merely not a push request.
    public static func decodePushRequest(_ bytes: [UInt8]) -> Outcome<PushRequest> {
        var p = FlatObjectParser(bytes: bytes)
        var tenant: TenantID?, through: Int64?, changes: [Change]?
        var sawTenant = false
        let ok = p.object { key, p in
            switch key {
            case "tenant":
                guard !sawTenant else { return p.duplicate(key) }
                sawTenant = true
                if p.null() { return true }
                guard let s = p.string(), let t = try? TenantID(validating: s) else { return false }
                tenant = t
                return true
            case "through":
                guard through == nil else { return p.duplicate(key) }
                through = p.integer()
                return through != nil
            case "changes":
                guard changes == nil else { return p.duplicate(key) }
                changes = changeList(&p)
                return changes != nil
            default:
                return p.skipValue()
            }
        }
        guard ok, p.atEnd, let through, let changes else {
            if p.tooDeep { return .tooDeep }
            if p.tooWide { return .tooManyFields }
            if let key = p.duplicateKey { return .duplicateKey(key) }
            return .unrecognised
        }
        return .decoded(PushRequest(tenant: tenant, through: through, changes: changes))
    }

    public static func pullResponse(_ bytes: [UInt8]) -> PullResponse? {
        var p = FlatObjectParser(bytes: bytes)
        var changes: [Change]?, next: Int64?, more: Bool?, head: Int64?, history: String?
        let ok = p.object { key, p in
            switch key {
            case "changes": changes = changeList(&p); return changes != nil
            case "nextCursor": next = p.integer(); return next != nil
            case "more": more = p.boolean(); return more != nil
            case "head":
                if p.null() { return true }
                head = p.integer()
                return head != nil
            case "history":
                if p.null() { return true }
                // Not one a parent writes: read as none, never sent back.
                guard let s = p.string() else { return false }
                history = PullResponse.isValidHistory(s) ? s : nil
                return true
            default: return p.skipValue()
            }
        }
        guard ok, p.atEnd, let changes, let next, let more else { return nil }
        return PullResponse(changes: changes, nextCursor: next, more: more, head: head, history: history)
    }

    static func changeList(_ p: inout FlatObjectParser) -> [Change]? {
        var list: [Change] = []
        let ok = p.array { p in
            guard let c = change(&p) else { return false }
            list.append(c)
            return true
        }
        return ok ? list : nil
    }

    static func change(_ p: inout FlatObjectParser) -> Change? {
        var origin: NodeID?, seq: Int64?, hlc: UInt64?, table: String?, id: String?, op: Change.Operation?
        var fields: [String: FieldValue] = [:], prior: [String: FieldVersion] = [:], trail: [Hop] = []
        // Which of the keys read into a collection were met already (a second `fields` would
        // add to the first); the others are nil until read.
        var sawFields = false, sawPrior = false, sawTrail = false
        let ok = p.object { key, p in
            switch key {
            case "origin":
                guard origin == nil else { return p.duplicate(key) }
                guard let s = p.string(), NodeID.isValid(s) else { return false }
                origin = NodeID(unchecked: s)
                return true
            case "seq":
                guard seq == nil else { return p.duplicate(key) }
                seq = p.integer()
                return seq != nil
            case "hlc":
                guard hlc == nil else { return p.duplicate(key) }
                hlc = p.unsigned()
                return hlc != nil
            case "table":
                guard table == nil else { return p.duplicate(key) }
                table = p.string()
                return table != nil
            case "id":
                guard id == nil else { return p.duplicate(key) }
                id = p.string()
                return id != nil
            case "op":
                guard op == nil else { return p.duplicate(key) }
                op = p.string().flatMap(Change.Operation.init(rawValue:))
                return op != nil
            case "fields":
                guard !sawFields else { return p.duplicate(key) }
                sawFields = true
                return p.object { name, p in
                    guard fields[name] == nil else { return p.duplicate(name) }
                    guard fields.count < Change.maxFields else {
                        p.tooWide = true
                        return false
                    }
                    guard let v = p.value() else { return false }
                    fields[name] = v
                    return true
                }
            case "prior":
                guard !sawPrior else { return p.duplicate(key) }
                sawPrior = true
                return p.object { name, p in
                    guard prior[name] == nil else { return p.duplicate(name) }
                    guard prior.count < Change.maxFields else {
                        p.tooWide = true
                        return false
                    }
                    guard let v = p.string().flatMap(FieldVersion.init(parsing:)) else { return false }
                    prior[name] = v
                    return true
                }
            case "trail":
                guard !sawTrail else { return p.duplicate(key) }
                sawTrail = true
                guard let hops = hopList(&p) else { return false }
                trail = hops
                return true
            default:
                return p.skipValue()
            }
        }
        guard ok, let origin, let seq, let hlc, let table, let id, let op else { return nil }
        return Change(origin: origin, originSeq: seq, hlc: HLCTimestamp(rawValue: hlc), table: table, recordID: id, op: op,
                      fields: fields, prior: prior, trail: trail)
    }

    /// A change's trail as the store keeps it (`[{"node": …, "at": …}]`), without
    /// Foundation's decoder; nil when the text is not such a list.
    public static func trail(_ text: String) -> [Hop]? {
        var p = FlatObjectParser(text)
        guard let hops = hopList(&p), p.atEnd else { return nil }
        return hops
    }

    static func hopList(_ p: inout FlatObjectParser) -> [Hop]? {
        var trail: [Hop] = []
        let ok = p.array { p in
            var node: NodeID?, at: UInt64?
            let ok = p.object { key, p in
                switch key {
                case "node":
                    guard node == nil else { return p.duplicate(key) }
                    guard let s = p.string(), NodeID.isValid(s) else { return false }
                    node = NodeID(unchecked: s)
                    return true
                case "at":
                    guard at == nil else { return p.duplicate(key) }
                    at = p.unsigned()
                    return at != nil
                default:
                    return p.skipValue()
                }
            }
            guard ok, let node, let at else { return false }
            trail.append(Hop(node: node, atMillis: at))
            return true
        }
        return ok ? trail : nil
    }
}

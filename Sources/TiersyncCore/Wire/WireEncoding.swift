/// Writes push bodies and pull pages as JSON directly, the mirror of ``WireDecoding``:
/// Foundation's `JSONEncoder` was the largest single cost of sending changes (16 % of the
/// ingest benchmark's CPU on the agents' side, 9 % of a bootstrap on the hub's). The
/// output has the `Codable` shape — the same keys, empty maps omitted — so any JSON
/// reader, including the `Codable` path, reads it (tested).
public enum WireEncoding {
    public static func pushRequest(_ request: PushRequest) -> [UInt8] {
        var out = "{"
        if let tenant = request.tenant { out += "\"tenant\":" + FieldValue.quote(tenant.rawValue) + "," }
        out += "\"through\":\(request.through),\"changes\":"
        changes(request.changes, into: &out)
        out += "}"
        return Array(out.utf8)
    }

    public static func pullResponse(_ page: PullResponse) -> [UInt8] {
        var out = "{\"changes\":"
        changes(page.changes, into: &out)
        out += ",\"nextCursor\":\(page.nextCursor),\"more\":\(page.more ? "true" : "false")"
        if let head = page.head { out += ",\"head\":\(head)" }
        if let history = page.history { out += ",\"history\":" + FieldValue.quote(history) }
        out += "}"
        return Array(out.utf8)
    }

    static func changes(_ changes: [Change], into out: inout String) {
        out += "["
        for (i, c) in changes.enumerated() {
            if i > 0 { out += "," }
            change(c, into: &out)
        }
        out += "]"
    }

    /// One change as ``change(_:into:)`` writes it, from a change log's stored columns:
    /// `fields`, `prior` and `trail` are stored as the same canonical JSON and are copied
    /// as they are (nil, empty or `{}`: left out, as for an empty map).
    public static func storedChange(origin: String, seq: Int64, hlc: UInt64, table: String, id: String, op: String,
                                    fields: String?, prior: String?, trail: String?, into out: inout String) {
        identity(origin: origin, seq: seq, hlc: hlc, table: table, id: id, op: op, into: &out)
        if let fields, !fields.isEmpty, fields != "{}" { out += ",\"fields\":" + fields }
        if let prior, !prior.isEmpty { out += ",\"prior\":" + prior }
        if let trail, !trail.isEmpty { out += ",\"trail\":" + trail }
        out += "}"
    }

    /// A change object's opening: `{` and the keys every change has, up to `op`.
    private static func identity(origin: String, seq: Int64, hlc: UInt64, table: String, id: String, op: String, into out: inout String) {
        out += "{\"origin\":"
        out += FieldValue.quote(origin)
        out += ",\"seq\":\(seq),\"hlc\":\(hlc),\"table\":"
        out += FieldValue.quote(table)
        out += ",\"id\":"
        out += FieldValue.quote(id)
        out += ",\"op\":\"" + op + "\""
    }

    static func change(_ c: Change, into out: inout String) {
        identity(origin: c.origin.rawValue, seq: c.originSeq, hlc: c.hlc.rawValue, table: c.table, id: c.recordID, op: c.op.rawValue, into: &out)
        if !c.fields.isEmpty { out += ",\"fields\":" + CanonicalJSON.object(c.fields) }
        if !c.prior.isEmpty { out += ",\"prior\":" + CanonicalJSON.object(c.prior) }
        if !c.trail.isEmpty {
            out += ",\"trail\":["
            for (i, hop) in c.trail.enumerated() {
                if i > 0 { out += "," }
                out += "{\"node\":" + FieldValue.quote(hop.node.rawValue) + ",\"at\":\(hop.atMillis)}"
            }
            out += "]"
        }
        out += "}"
    }
}

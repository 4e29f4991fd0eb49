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

    static func change(_ c: Change, into out: inout String) {
        out += "{\"origin\":"
        out += FieldValue.quote(c.origin.rawValue)
        out += ",\"seq\":\(c.originSeq),\"hlc\":\(c.hlc.rawValue),\"table\":"
        out += FieldValue.quote(c.table)
        out += ",\"id\":"
        out += FieldValue.quote(c.recordID)
        out += ",\"op\":\"" + c.op.rawValue + "\""
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

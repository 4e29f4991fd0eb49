/// Deterministic JSON for field maps: sorted keys, no whitespace. Used for the change log,
/// the wire digest and record digests, where equal content must give equal bytes.
public enum CanonicalJSON {
    public static func object(_ fields: [String: FieldValue]) -> String {
        var out = "{"
        var first = true
        for key in fields.keys.sorted() {
            if !first { out += "," }
            first = false
            out += FieldValue.quote(key)
            out += ":"
            out += fields[key]!.canonical
        }
        return out + "}"
    }

    public static func object(_ versions: [String: FieldVersion]) -> String {
        var out = "{"
        var first = true
        for key in versions.keys.sorted() {
            if !first { out += "," }
            first = false
            out += FieldValue.quote(key)
            out += ":\""
            out += versions[key]!.description
            out += "\""
        }
        return out + "}"
    }
}

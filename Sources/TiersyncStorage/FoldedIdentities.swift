// A record's folded log entries (docs/PRIVACY.md, "Bounded storage"), as both engines keep
// them beside the record: which change wrote each version still current, once the entry
// that carried it left the log, and the changes a feed serves in its place.

import TiersyncCore

/// The identities of a record's folded versions: for each version still current whose log
/// entry was folded, the change's sequence at its origin, and whether the change came from
/// this node's parent (it never goes back upward). Stored compactly, as
/// `<hlc>@<node>:<originSeq>` items (`=` instead of `:` for a change from the parent;
/// numbers in base 36) joined by `;` (node ids hold none of these characters): it is part
/// of the record's data, beside its versions.
public struct FoldedIdentities: Equatable, Sendable {
    public var originSeqs: [FieldVersion: Int64] = [:]
    public var fromParent: Set<FieldVersion> = []

    public init() {}

    public init?(parsing text: String) {
        for item in text.split(separator: ";") {
            guard let at = item.firstIndex(of: "@"), let mark = item.lastIndex(where: { $0 == ":" || $0 == "=" }), at < mark,
                  let hlc = UInt64(item[..<at], radix: 36), let seq = Int64(item[item.index(after: mark)...], radix: 36) else { return nil }
            let node = String(item[item.index(after: at)..<mark])
            guard NodeID.isValid(node) else { return nil }
            let version = FieldVersion(hlc: HLCTimestamp(rawValue: hlc), node: NodeID(unchecked: node))
            originSeqs[version] = seq
            if item[mark] == "=" { fromParent.insert(version) }
        }
    }

    public var text: String {
        originSeqs.sorted { $0.key < $1.key }.map { version, seq in
            "\(String(version.hlc.rawValue, radix: 36))@\(version.node.rawValue)\(fromParent.contains(version) ? "=" : ":")\(String(seq, radix: 36))"
        }.joined(separator: ";")
    }

    public var isEmpty: Bool { originSeqs.isEmpty }

    public mutating func add(_ version: FieldVersion, originSeq: Int64, fromParent parent: Bool) {
        originSeqs[version] = originSeq
        if parent { fromParent.insert(version) } else { fromParent.remove(version) }
    }

    /// Only the versions `state` still holds for some field.
    public mutating func keepCurrent(_ state: RecordState) {
        keep(only: Set(state.versions.values))
    }

    /// Only the versions in `current`.
    public mutating func keep(only current: Set<FieldVersion>) {
        originSeqs = originSeqs.filter { current.contains($0.key) }
        fromParent = fromParent.filter { current.contains($0) }
    }

    /// The changes a folded record stands for in a feed: one per folded version that some
    /// field of `state` still holds, with that version's identity and the fields it holds
    /// (in version order). None for a deleted record.
    ///
    /// An erasure request's change naming its subject comes first: the subject is judged by
    /// arrival (named once, when the request is created, which is when the subject is
    /// erased: `RecordMerge.erasureSubjectRefusal`), and an older-stamped change of the same
    /// request may have arrived after it. In version order a node fed the folded record
    /// created the request without its subject and then refused the subject (found by
    /// tiersync-fuzz). Both subject fields are in that change: a change restamping them is
    /// refused (`RecordMerge.erasureSubjectRefusal`). A request stored before that rule with
    /// its subject restamped still folds into two changes.
    public func changes(table: String, id: String, state: RecordState) -> [Change] {
        guard state.tombstone == nil else { return [] }
        var fields: [FieldVersion: [String: FieldValue]] = [:]
        for (field, version) in state.versions where originSeqs[version] != nil {
            fields[version, default: [:]][field] = state.values[field] ?? .null
        }
        let naming = table == DomainSchema.erasures.name ? state.versions[Erasure.MarkerField.subjectID.rawValue] : nil
        return fields.sorted { a, b in
            (a.key == naming) != (b.key == naming) ? a.key == naming : a.key < b.key
        }.map { version, values in
            Change(origin: version.node, originSeq: originSeqs[version]!, hlc: version.hlc,
                   table: table, recordID: id, op: .upsert, fields: values)
        }
    }
}

import Foundation
import TiersyncCore

/// A record after a change: its state, what the change did, and where it is routed now.
public struct MergedRecord: Sendable {
    public var state: RecordState
    public var outcome: ApplyOutcome
    public var route: Set<NodeID>

    public init(state: RecordState, outcome: ApplyOutcome, route: Set<NodeID>) {
        self.state = state
        self.outcome = outcome
        self.route = route
    }
}

/// Applying a change to a record's stored state, the same for every engine: the merge rules
/// are ``TiersyncCore/RecordState/apply(_:)``'s, and a record's route follows its route
/// fields. Engines differ only in how they load and save the state.
public enum RecordMerge {
    /// `change` merged into `stored` (nothing stored: a new record).
    /// Why `merged` may not be written over `stored`, if it may not: an erasure request
    /// (an `erasures` record) erases its subject when it first arrives, and its subject never
    /// changes afterwards. A later change naming another subject would leave every replica
    /// that received both holding the first subject erased and the second not, while a node
    /// bootstrapping after compaction folded the two (it receives only the record as it is)
    /// would erase the second.
    ///
    /// Naming the same subject again with a newer stamp is refused too: the subject's fields
    /// then keep the version of the change that created the request, so a folded request
    /// (compaction) still has one change naming its whole subject, served first
    /// (``FoldedIdentities/changes(table:id:state:)``). Were `subject_id` restamped alone, no
    /// folded change would name both fields, and a node bootstrapping from the folded record
    /// would create the request without a subject and then refuse it (found by
    /// tiersync-fuzz). An older-stamped change naming the subject changes no version and is
    /// judged on its other fields. A request is made naming its subject; an acknowledgement
    /// is judged by ``erasureAckRefusal(of:merged:)``.
    public static func erasureSubjectRefusal(of change: Change, merged: MergedRecord, over stored: StoredRecord?) -> ChangeRejection? {
        if change.table == DomainSchema.erasureAcks.name { return erasureAckRefusal(of: change, merged: merged) }
        guard change.table == DomainSchema.erasures.name else { return nil }
        guard let stored, stored.state.isLive else {
            // Made without its subject, a request stood in every ledger as outstanding for
            // ever, erasing nothing (helper 94), and blocked any later change naming one.
            guard merged.state.isLive, Erasure.subject(of: merged.state.liveValues) == nil else { return nil }
            return ChangeRejection(.invalidChange, "erasure request \(change.recordID) names no subject: it is made with subject_table (customers) and subject_id")
        }
        let before = Erasure.subject(of: stored.state.liveValues), after = merged.state.isLive ? Erasure.subject(of: merged.state.liveValues) : nil
        let restamped = Erasure.subjectFields.contains { merged.state.versions[$0] != stored.state.versions[$0] }
        guard before?.table != after?.table || before?.id != after?.id || restamped else { return nil }
        return ChangeRejection(.invalidChange, "erasure request \(change.recordID) names its subject once: a change of it is refused")
    }

    /// Why a replica's acknowledgement of an erasure is not one, as merged: it names its
    /// erasure, says when, and carries a SHA-256 digest (64 lowercase hex digits), as every
    /// replica writes it; a malformed one was shown in HQ's ledger as proof (helper 94).
    static func erasureAckRefusal(of change: Change, merged: MergedRecord) -> ChangeRejection? {
        guard merged.state.isLive else { return nil }
        let values = merged.state.liveValues
        func text(_ field: Erasure.AckField) -> String? { values[field.rawValue]?.stringValue }
        let digest = text(.digest) ?? ""
        guard text(.erasureID).map({ !$0.isEmpty }) != true || text(.acknowledgedAt) == nil || digest.utf8.count != 64
                || !digest.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }) else { return nil }
        return ChangeRejection(.invalidChange,
                               "erasure acknowledgement \(change.recordID) is not one: it names its erasure_id, its acknowledged_at and a digest of 64 lowercase hexadecimal digits")
    }

    public static func merge(_ change: Change, into stored: StoredRecord?, table: TableSchema) -> MergedRecord {
        var state = stored?.state ?? RecordState()
        let outcome = state.apply(change)
        return MergedRecord(state: state, outcome: outcome, route: route(of: state, table: table, previous: stored?.route))
    }

    /// A live record is routed by its route fields; a deleted one keeps its last route, so
    /// the delete (and anything after it) reaches the nodes that held it.
    public static func route(of state: RecordState, table: TableSchema, previous: Set<NodeID>?) -> Set<NodeID> {
        if state.isLive {
            let route = table.route(of: state.liveValues)
            return route.isEmpty ? previous ?? [] : route
        }
        return previous ?? []
    }

    /// A route as stored: node ids, sorted, comma-separated.
    public static func encodeRoute(_ route: Set<NodeID>) -> String {
        route.count == 1 ? route.first!.rawValue : route.map(\.rawValue).sorted().joined(separator: ",")
    }

    /// The inverse of ``encodeRoute(_:)`` (nil or empty: no route).
    public static func parseRoute(_ s: String?) -> Set<NodeID> {
        guard let s, !s.isEmpty else { return [] }
        return Set(s.split(separator: ",").map { NodeID(unchecked: String($0)) })
    }
}

/// The text columns of a change-log entry, encoded once, in the wire's form: a feed page
/// copies them into its JSON as they are (``TiersyncCore/WireEncoding``).
public struct EncodedLogEntry: Sendable {
    public let fields: String
    public let prior: String?
    public let trail: String?

    public init(_ change: Change, trail: [Hop]) {
        fields = CanonicalJSON.object(change.fields)
        prior = change.prior.isEmpty ? nil : CanonicalJSON.object(change.prior)
        self.trail = Self.encodeTrail(trail)
    }

    /// A trail as the wire writes it (nil when empty).
    public static func encodeTrail(_ trail: [Hop]) -> String? {
        guard !trail.isEmpty else { return nil }
        return "[" + trail.map { "{\"node\":" + FieldValue.quote($0.node.rawValue) + ",\"at\":\($0.atMillis)}" }.joined(separator: ",") + "]"
    }
}

/// What a received change's identity (origin, sequence) says about it on a store, given
/// what the store holds under that identity: the same judgement for every engine.
public enum ChangeIdentityVerdict: Sendable, Equatable {
    case new
    /// Applied already, or refused for a reason in the change itself: answered as a duplicate.
    case duplicate
    /// The origin numbered two different changes alike.
    case reused
    /// Refused for clock skew when its origin sent it: accepted only once re-stamped to no
    /// later than that time (with its old stamp it would win over every write since).
    case skewFenced(refusedAtMillis: UInt64)

    /// A quarantine entry held under the change's identity.
    public struct Quarantined: Sendable {
        public var code: String
        public var receivedAtMillis: Int64
        public var receivedFrom: String

        public init(code: String, receivedAtMillis: Int64, receivedFrom: String) {
            self.code = code
            self.receivedAtMillis = receivedAtMillis
            self.receivedFrom = receivedFrom
        }
    }

    /// Why `change` is refused for what its identity says (nil: it goes on to be judged,
    /// or it is a duplicate): the same words on every engine.
    public func refusal(for change: Change) -> ChangeRejection? {
        switch self {
        case .new, .duplicate:
            return nil
        case .skewFenced(let refusedAt):
            guard change.hlc.wallMillis > refusedAt else { return nil }
            return ChangeRejection(.clockSkew, "change \(change.origin)#\(change.originSeq) to \(change.table)/\(change.recordID) was refused for clock skew before; re-stamp it to no later than \(refusedAt) (the receiver's clock then) and send it again",
                                   restampAtMillis: refusedAt)
        case .reused:
            return ChangeRejection(.identityReused, "change \(change.origin)#\(change.originSeq) reuses a sequence number of a different earlier change from that node; its database was probably restored or rebuilt: re-enroll the node")
        }
    }

    /// `heldStamp`: the HLC of the applied change with this identity, if any.
    public static func judge(_ change: Change, heldStamp: UInt64?, quarantined: Quarantined?) -> ChangeIdentityVerdict {
        if let heldStamp { return heldStamp == change.hlc.rawValue ? .duplicate : .reused }
        guard let quarantined else { return .new }
        let code = ChangeRejection.Code(rawValue: quarantined.code)
        if code?.isFinal == true { return .duplicate }
        if code == .clockSkew, quarantined.receivedFrom == change.origin.rawValue {
            return .skewFenced(refusedAtMillis: UInt64(max(0, quarantined.receivedAtMillis)))
        }
        return .new
    }
}

/// A refused change as a quarantine entry keeps it: JSON with sorted keys.
public enum QuarantineEncoding {
    /// The most a quarantined change keeps: far above any change the schema accepts (its
    /// longest strings are 4,000 characters), far below what a hostile push can carry.
    public static let maxChangeBytes = 256 * 1024

    /// The change as the quarantine keeps it, for the operator to read and replay. One that
    /// no schema version could accept for its size (a table name or record id longer than
    /// any, or more than ``maxChangeBytes``) keeps its identity and clipped names, not its
    /// fields: a push of such changes otherwise stored what it carried, 64 MB a request.
    public static func json(_ change: Change) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var kept = change
        if change.table.utf8.count > Schema.maxTableNameBytes || change.recordID.utf8.count > 128 {
            kept = stub(change)
        }
        guard let json = try? encoder.encode(kept) else { return "{}" }
        if json.count > maxChangeBytes, let clipped = try? encoder.encode(stub(change)) {
            return String(decoding: clipped, as: UTF8.self)
        }
        return String(decoding: json, as: UTF8.self)
    }

    private static func stub(_ change: Change) -> Change {
        var stub = change
        stub.table = change.table.clipped(toUTF8: Schema.maxTableNameBytes)
        stub.recordID = change.recordID.clipped(toUTF8: 128)
        stub.fields = [:]
        stub.prior = [:]
        return stub
    }
}

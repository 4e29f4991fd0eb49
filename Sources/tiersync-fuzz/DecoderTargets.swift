import Foundation
import TiersyncCore

/// An invariant that did not hold for an input.
struct InvariantFailure: Error, CustomStringConvertible {
    let invariant: String
    let detail: String
    /// A short, stable name for a recognised cause (listed in a known-failures file, such a
    /// failure is reported but does not fail the run).
    var signature: String?

    init(invariant: String, detail: String, signature: String? = nil) {
        self.invariant = invariant
        self.detail = detail
        self.signature = signature
    }

    var description: String { "\(invariant): \(detail)" + (signature.map { " [\($0)]" } ?? "") }
}

/// The signature of failures caused by a number outside Double's range (`1e999`) being
/// read as an infinite `.double`, which canonical JSON then writes as `null`.
let nonFiniteSignature = "nonfinite-number"

func hasNonFinite(_ values: some Sequence<FieldValue>) -> Bool {
    values.contains { if case .double(let d) = $0 { !d.isFinite } else { false } }
}

func hasNonFinite(_ changes: [Change]) -> Bool {
    changes.contains { hasNonFinite($0.fields.values) }
}

/// Where the byte-level decoder and Foundation's `Codable` path disagree about an input.
/// `WireDecoding` says it "accepts exactly what the `Codable` conformances accept"; these
/// are counted (and fail the run only with `--strict-differential`).
struct Divergence: Hashable {
    let kind: String
}

/// What decoding one input gave, for the statistics and the store target.
struct DecodeOutcome {
    /// What the hub would hand to the push handler: the byte-level decoder's result, or
    /// `JSONDecoder`'s when that one did not recognise the body; nil when the hub answers 400.
    var push: PushRequest?
    var wire: String = "unrecognised"
    var divergence: Divergence?
    /// Failures of known defects (by signature): counted, and the other checks still run.
    var known: [InvariantFailure] = []
}

/// Runs every decoder that reads client input over `bytes` and checks what each promises:
/// nothing traps (a trap ends the process, and the crash handler keeps the input), and
/// what is decoded survives re-encoding.
enum DecoderTargets {
    static func run(_ bytes: [UInt8], known: Set<String> = []) throws(InvariantFailure) -> DecodeOutcome {
        var outcome = DecodeOutcome()
        let data = Data(bytes)
        /// Runs one check; a failure of a known defect is noted and the run goes on.
        func check(_ body: () throws(InvariantFailure) -> Void) throws(InvariantFailure) {
            do throws(InvariantFailure) {
                try body()
            } catch where error.signature.map(known.contains) == true {
                outcome.known.append(error)
            }
        }

        // POST /v1/push, as BodyCodec reads it.
        let codable = try? JSONDecoder().decode(PushRequest.self, from: data)
        switch WireDecoding.decodePushRequest(bytes) {
        case .decoded(let push):
            outcome.wire = "decoded"
            outcome.push = push
            try check { () throws(InvariantFailure) in try roundTrip(push) }
            if let codable {
                if !same(codable, push) { outcome.divergence = Divergence(kind: "push: both decode, values differ") }
            } else {
                outcome.divergence = Divergence(kind: "push: WireDecoding accepts, JSONDecoder refuses")
            }
        case .tooDeep:
            outcome.wire = "tooDeep"
            // Refused before any recursive decoder sees it: it must really be deep.
            let openers = bytes.reduce(0) { $0 + ($1 == UInt8(ascii: "[") || $1 == UInt8(ascii: "{") ? 1 : 0) }
            guard openers > WireDecoding.nestingLimit else {
                throw InvariantFailure(invariant: "tooDeep only for deep bodies", detail: "\(openers) brackets in all, limit \(WireDecoding.nestingLimit)")
            }
        case .tooManyFields:
            outcome.wire = "tooManyFields"
            // Refused before any other decoder sees it: some change must really name that many.
            if let codable, !codable.changes.contains(where: { $0.fields.count > Change.maxFields || $0.prior.count > Change.maxFields }) {
                throw InvariantFailure(invariant: "tooManyFields only for wide changes", detail: "JSONDecoder reads no change with more than \(Change.maxFields) fields")
            }
        case .duplicateKey(let key):
            outcome.wire = "duplicateKey"
            // Refused: the key must really be there twice, quoted as a key (followed by ':').
            let quoted = Array("\"\(key)\"".utf8)
            var found = 0, i = 0
            while i + quoted.count <= bytes.count, found < 2 {
                if bytes[i..<(i + quoted.count)].elementsEqual(quoted), bytes[(i + quoted.count)...].first(where: { $0 != 0x20 && $0 != 0x0a && $0 != 0x0d && $0 != 0x09 }) == UInt8(ascii: ":") {
                    found += 1
                    i += quoted.count
                } else {
                    i += 1
                }
            }
            // (A key written with escapes is not found as its decoded text: not checked then.)
            guard found >= 2 || bytes.contains(UInt8(ascii: "\\")) else {
                throw InvariantFailure(invariant: "duplicateKey only for keys given twice", detail: "'\(key.prefix(40))' found \(found) time(s) as a key")
            }
        case .unrecognised:
            // The hub refuses it (JSONDecoder only names the problem): nothing is applied.
            outcome.wire = codable == nil ? "unrecognised" : "refused"
            if let codable {
                // What the Codable path reads, written by WireEncoding, the byte-level decoder reads back.
                try check { () throws(InvariantFailure) in try roundTrip(codable) }
            }
        }
        _ = WireDecoding.pushRequest(bytes)

        // POST /v1/status, as BodyCodec reads it (JSONDecoder), then as the handler checks it.
        if let status = try? JSONDecoder().decode(StatusRequest.self, from: data) {
            if let freshest = try? status.freshestByNode() {
                for report in freshest.values {
                    guard (0...LagReport.maxValue).contains(report.pending), (0...LagReport.maxValue).contains(report.measuredMillisAgo) else {
                        throw InvariantFailure(invariant: "lag reports in range once checked", detail: "\(report)")
                    }
                    _ = report.measuredAtMillis(receivedAtMillis: 0)
                    _ = report.measuredAtMillis(receivedAtMillis: .max)
                }
            }
            guard let encoded = try? JSONEncoder().encode(status), (try? JSONDecoder().decode(StatusRequest.self, from: encoded)) == status else {
                throw InvariantFailure(invariant: "status request round trip", detail: "\(status.reports.prefix(3))")
            }
        }

        // Pull pages, as an agent reads them.
        if let page = WireDecoding.pullResponse(bytes) { try check { () throws(InvariantFailure) in
            let again = WireDecoding.pullResponse(WireEncoding.pullResponse(page))
            guard let again, again.changes == page.changes, again.nextCursor == page.nextCursor, again.more == page.more, again.head == page.head,
                  again.history == page.history, page.history.map(PullResponse.isValidHistory) ?? true else {
                throw InvariantFailure(invariant: "pull page round trip", detail: "decoded \(describe(page.changes)), re-encoded and decoded: \(again.map { describe($0.changes) } ?? "nil")",
                                       signature: hasNonFinite(page.changes) ? nonFiniteSignature : nil)
            }
            if let viaCodable = try? JSONDecoder().decode(PullResponse.self, from: Data(WireEncoding.pullResponse(page))) {
                guard same(PushRequest(through: 0, changes: viaCodable.changes), PushRequest(through: 0, changes: page.changes), numbersAsJSON: true) else {
                    throw InvariantFailure(invariant: "pull page readable by Codable", detail: "JSONDecoder read the re-encoded page differently",
                                           signature: hasNonFinite(page.changes) ? nonFiniteSignature : nil)
                }
            } else {
                throw InvariantFailure(invariant: "pull page readable by Codable", detail: "JSONDecoder refused WireEncoding's page of \(describe(page.changes))")
            }
        } }

        // The store's own text columns, which the hub also parses (change log, versions, trail).
        let text = String(decoding: bytes, as: UTF8.self)
        if let trail = WireDecoding.trail(text) {
            guard trail.allSatisfy({ NodeID.isValid($0.node.rawValue) }) else {
                throw InvariantFailure(invariant: "trail nodes are node ids", detail: "\(trail)")
            }
            let carrier = Change(origin: "dlr-alpha", originSeq: 1, hlc: .zero, table: "customers", recordID: "c-1", op: .delete, trail: trail)
            guard case .decoded(let back) = WireDecoding.decodePushRequest(WireEncoding.pushRequest(PushRequest(through: 1, changes: [carrier]))),
                  back.changes.first?.trail == trail else {
                throw InvariantFailure(invariant: "trail round trip", detail: "\(trail)")
            }
        }
        if let fields = CanonicalJSON.parseFields(text) { try check { () throws(InvariantFailure) in
            let again = CanonicalJSON.parseFields(CanonicalJSON.object(fields))
            guard again == fields else {
                throw InvariantFailure(invariant: "parseFields round trip", detail: "parsed \(describe(fields)), canonical \(CanonicalJSON.object(fields).prefix(300)), parsed again \(again.map(describe) ?? "nil")",
                                       signature: hasNonFinite(fields.values) ? nonFiniteSignature : nil)
            }
        } }
        if let versions = CanonicalJSON.parseVersions(text) {
            guard CanonicalJSON.parseVersions(CanonicalJSON.object(versions)) == versions else {
                throw InvariantFailure(invariant: "parseVersions round trip", detail: "\(versions)")
            }
        }
        if let stored = CanonicalJSON.parseStoredVersions(text) {
            guard CanonicalJSON.parseStoredVersions(CanonicalJSON.groupedVersions(stored)) == stored,
                  CanonicalJSON.parseStoredVersions(CanonicalJSON.object(stored)) == stored else {
                throw InvariantFailure(invariant: "parseStoredVersions round trip", detail: "\(stored), grouped \(CanonicalJSON.groupedVersions(stored))")
            }
        }

        // POST /v1/enroll decodes with JSONDecoder only.
        _ = try? JSONDecoder().decode(EnrollRequest.self, from: data)
        return outcome
    }

    /// A push re-encoded by `WireEncoding` decodes to the same value, through the byte-level
    /// decoder and through `Codable` alike.
    static func roundTrip(_ push: PushRequest) throws(InvariantFailure) {
        let encoded = WireEncoding.pushRequest(push)
        guard case .decoded(let again) = WireDecoding.decodePushRequest(encoded) else {
            throw InvariantFailure(invariant: "push round trip", detail: "WireDecoding refused WireEncoding's \(prefix(encoded))")
        }
        let signature = hasNonFinite(push.changes) ? nonFiniteSignature : nil
        guard same(push, again) else {
            throw InvariantFailure(invariant: "push round trip", detail: difference(push, again) + "; re-encoded as \(prefix(encoded))", signature: signature)
        }
        guard let viaCodable = try? JSONDecoder().decode(PushRequest.self, from: Data(encoded)) else {
            throw InvariantFailure(invariant: "push re-encoding readable by Codable", detail: "JSONDecoder refused \(prefix(encoded))")
        }
        // JSON does not tell 1 from 1.0: Codable's FieldValue reads a whole number as an integer.
        guard same(push, viaCodable, numbersAsJSON: true) else {
            throw InvariantFailure(invariant: "push re-encoding readable by Codable", detail: "JSONDecoder read it differently: " + difference(push, viaCodable), signature: signature)
        }
    }

    static func same(_ a: PushRequest, _ b: PushRequest, numbersAsJSON: Bool = false) -> Bool {
        guard a.tenant == b.tenant, a.through == b.through else { return false }
        guard numbersAsJSON else { return a.changes == b.changes }
        return a.changes.count == b.changes.count && zip(a.changes, b.changes).allSatisfy { x, y in
            var x = x, y = y
            x.fields = x.fields.mapValues(jsonNumber)
            y.fields = y.fields.mapValues(jsonNumber)
            return x == y
        }
    }

    /// A whole `.double` as the `.int` it equals (how a JSON reader without types sees it).
    static func jsonNumber(_ v: FieldValue) -> FieldValue {
        if case .double(let d) = v, d == d.rounded(), abs(d) < 9.2e18, let i = Int64(exactly: d) { return .int(i) }
        return v
    }

    static func dump(_ v: FieldValue?) -> String {
        switch v {
        case nil: "absent"
        case .null?: ".null"
        case .bool(let b)?: ".bool(\(b))"
        case .int(let i)?: ".int(\(i))"
        case .double(let d)?: ".double(\(d))"
        case .string(let s)?: ".string(\(String(reflecting: s).prefix(120)))"
        }
    }

    /// The first place two pushes differ, with the values spelled out (`debugDescription`
    /// tells `.double(inf)` from `.null`, which print alike).
    static func difference(_ a: PushRequest, _ b: PushRequest) -> String {
        if a.tenant != b.tenant { return "tenant \(String(reflecting: a.tenant)) became \(String(reflecting: b.tenant))" }
        if a.through != b.through { return "through \(a.through) became \(b.through)" }
        if a.changes.count != b.changes.count { return "\(a.changes.count) changes became \(b.changes.count)" }
        for (i, (x, y)) in zip(a.changes, b.changes).enumerated() where x != y {
            var parts: [String] = []
            if x.origin != y.origin || x.originSeq != y.originSeq { parts.append("identity \(x.origin)#\(x.originSeq) became \(y.origin)#\(y.originSeq)") }
            if x.hlc != y.hlc { parts.append("hlc \(x.hlc.rawValue) became \(y.hlc.rawValue)") }
            if x.table != y.table || x.recordID != y.recordID { parts.append("record \(String(reflecting: x.table))/\(String(reflecting: x.recordID)) became \(String(reflecting: y.table))/\(String(reflecting: y.recordID))") }
            if x.op != y.op { parts.append("op \(x.op) became \(y.op)") }
            for key in Set(x.fields.keys).union(y.fields.keys).sorted() where x.fields[key] != y.fields[key] {
                parts.append("field \(String(reflecting: key)): \(dump(x.fields[key])) became \(dump(y.fields[key]))")
            }
            if x.prior != y.prior { parts.append("prior \(x.prior) became \(y.prior)") }
            if x.trail != y.trail { parts.append("trail \(x.trail) became \(y.trail)") }
            return "change [\(i)] \(x.origin)#\(x.originSeq): " + parts.joined(separator: "; ")
        }
        return "(no difference found)"
    }

    static func describe(_ fields: [String: FieldValue]) -> String {
        "[" + fields.sorted { $0.key < $1.key }.prefix(8).map { "\(String(reflecting: $0.key)): \(dump($0.value))" }.joined(separator: ", ") + (fields.count > 8 ? ", …]" : "]")
    }

    static func prefix(_ bytes: [UInt8]) -> String {
        let text = String(decoding: bytes.prefix(400), as: UTF8.self)
        return bytes.count > 400 ? text + "… (\(bytes.count) bytes)" : text
    }

    static func describe(_ changes: [Change]) -> String {
        let shown = changes.prefix(3).map { c in
            "\(c.origin)#\(c.originSeq) hlc \(c.hlc.rawValue) \(c.table)/\(c.recordID) \(c.op.rawValue) fields \(c.fields) prior \(c.prior) trail \(c.trail.count)"
        }
        return "[" + shown.joined(separator: "; ") + (changes.count > 3 ? "; … \(changes.count) in all" : "") + "]"
    }
}
